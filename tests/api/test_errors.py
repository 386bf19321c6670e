"""Bad input gets the documented error shape and the right status, never a 500 or a stack trace."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import Server, seed_body

pytestmark = pytest.mark.anyio


def assert_error(response, status: int, type_: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["success"] is False
    assert set(body["error"]) == {"message", "code", "type", "details"}
    assert body["error"]["type"] == type_
    assert body["error"]["message"]
    assert "Traceback" not in response.text
    return body["error"]


@pytest.mark.parametrize("path", ["/stream/create", "/message/sendmessage"])
@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"apiKey": "x",}', '{"a": "\xff"}'.encode("latin-1")])
async def test_malformed_json(server: Server, path: str, raw: bytes) -> None:
    response = await server.http.post(server.url + path, content=raw, headers={"content-type": "application/json"})
    error = assert_error(response, 400, "invalid_json" if raw else "validation_error")
    assert error["code"] == 400


async def test_body_is_json_whatever_the_content_type(server: Server) -> None:
    """curl -d and FileMaker send form content types by default; the JSON they carry is what counts."""
    body = seed_body(server, stream=False)
    body["service"] = "echo"
    import json

    response = await server.http.post(
        server.url + "/stream/create",
        content=json.dumps(body),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert response.json()["object"] == "chat.completion"


async def test_missing_fields_name_their_paths(server: Server) -> None:
    response = await server.post("/stream/create", {"apiKey": server.api_key, "payload": {"stream": True}})
    error = assert_error(response, 400, "validation_error")
    assert "payload.messages" in {d["field"] for d in error["details"]}
    no_model = {"apiKey": server.api_key, "payload": {"messages": [{"role": "user", "content": "hi"}]}}
    error = assert_error(await server.post("/stream/create", no_model), 400, "validation_error")
    assert error["details"] == [{"field": "payload.model", "message": "Field required"}]


async def test_streaming_needs_channels_and_action(server: Server) -> None:
    body = seed_body(server)
    body["service"] = "echo"
    del body["actionName"]
    body["channels"] = []
    error = assert_error(await server.post("/stream/create", body), 400, "validation_error")
    assert {d["field"] for d in error["details"]} == {"channels", "actionName"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"channels": "anonymous"}, "channels"),
        ({"channels": [1]}, "channels.0"),
        ({"channels": ["ok", "bad\nname"]}, "channels.1"),
        ({"actionName": 7}, "actionName"),
        ({"payload": []}, "payload"),
        ({"apiKey": None}, "apiKey"),
        ({"unexpected": True}, "unexpected"),
    ],
)
async def test_wrong_types_and_unknown_fields(server: Server, change: dict, field: str) -> None:
    body = {**seed_body(server), **change}
    error = assert_error(await server.post("/stream/create", body), 400, "validation_error")
    assert field in {d["field"] for d in error["details"]}


@pytest.mark.parametrize("stream", ["yes", 1, "true", None])
async def test_stream_must_be_a_real_boolean(server: Server, stream: object) -> None:
    """No guessing: "yes" or 1 starting a paid stream is worse than a clear 400."""
    error = assert_error(await server.post("/stream/create", seed_body(server, stream=stream)), 400, "validation_error")
    assert "payload.stream" in {d["field"] for d in error["details"]}


async def test_payload_wrong_types(server: Server) -> None:
    body = seed_body(server, stream="sometimes", messages="hello")
    error = assert_error(await server.post("/stream/create", body), 400, "validation_error")
    assert {d["field"] for d in error["details"]} >= {"payload.stream", "payload.messages"}
    # pydantic's echo of the rejected input is not passed on: it could be a provider key.
    body = seed_body(server, apiKey=["sk-should-not-echo-1234"])
    response = await server.post("/stream/create", body)
    assert_error(response, 400, "validation_error")
    assert "sk-should-not-echo" not in response.text


@pytest.mark.parametrize("key", ["BFAPI_wrong", "", "x" * 5000])
async def test_bad_app_key(server: Server, key: str) -> None:
    body = seed_body(server)
    body["apiKey"] = key
    error = assert_error(await server.post("/stream/create", body), 401, "unauthorized")
    assert error["code"] == 401
    message = {"apiKey": key, "channels": ["a"], "message": {"actions": []}}
    assert_error(await server.post("/message/sendmessage", message), 401, "unauthorized")


async def test_unknown_service_names_the_available_ones(server: Server) -> None:
    body = seed_body(server)
    body["service"] = "skynet"
    error = assert_error(await server.post("/stream/create", body), 400, "unknown_service")
    assert "echo" in error["message"] and "openai" in error["message"]
    assert error["details"] == ["anthropic", "echo", "gemini", "openai", "openai-responses"]


async def test_huge_body_is_413(start_server) -> None:
    server = await start_server(max_body_bytes=10_000)
    body = seed_body(server, messages=[{"role": "user", "content": "x" * 20_000}])
    assert_error(await server.post("/stream/create", body), 413, "payload_too_large")

    async def chunks():  # no Content-Length: the limit must hold while reading
        for _ in range(30):
            yield b"x" * 1000

    response = await server.http.post(server.url + "/stream/create", content=chunks())
    assert_error(response, 413, "payload_too_large")
    # With the default 8 MiB limit, a 20 MB body (far more than socket buffers hold) still gets its 413.
    default = await start_server()
    response = await default.http.post(default.url + "/stream/create", content=b"x" * 20_000_000)
    assert_error(response, 413, "payload_too_large")


async def test_absurd_content_length_is_answered_at_once(server: Server) -> None:
    """A declared size far past the limit is refused without waiting for a body that will never come."""
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /stream/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 99999999999\r\n\r\n{}"
    )
    await writer.drain()
    async with asyncio.timeout(3):
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    writer.close()


async def test_unknown_route_and_method(server: Server) -> None:
    assert_error(await server.http.get(server.url + "/nope"), 404, "not_found")
    assert_error(await server.http.get(server.url + "/stream/create"), 405, "method_not_allowed")


async def test_health_and_openapi(server: Server) -> None:
    health = await server.http.get(server.url + "/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    spec = (await server.http.get(server.url + "/openapi.json")).json()
    assert set(spec["paths"]) >= {
        "/stream/create", "/stream/stop", "/llm/query/stop", "/stream/status", "/healthz", "/message/sse",
        "/message/sendmessage", "/message/token", "/message/adduser", "/message/removeuser",
        "/message/channels", "/message/users",
    }  # fmt: skip
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            responses = operation["responses"]
            # Errors are listed status by status (tests/api/test_openapi_fuzz.py holds the server to
            # them), in one shape; never FastAPI's 422 for a malformed body (that is a 400): a 422 is only
            # the creates' reused idempotency key. /healthz answers 503 in its own shape.
            assert "default" not in responses, path
            if "422" in responses:
                assert path in ("/stream/create", "/llm/query"), path
                assert "idempotency_key_reused" in responses["422"]["description"]
            errors = {status: response for status, response in responses.items() if int(status) >= 400}
            assert path == "/healthz" or "400" in errors, path
            for response in errors.values() if path != "/healthz" else ():
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, path
    created = spec["paths"]["/stream/create"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/ChatCompletion"} in created["anyOf"]  # the stream: false answer
    schema = spec["components"]["schemas"]["CreateStream"]
    assert {"apiKey", "channels", "actionName", "service", "payload"} <= set(schema["properties"])


async def test_an_empty_service_is_not_taken_for_openai(server: Server) -> None:
    body = seed_body(server)
    body["service"] = ""
    assert_error(await server.post("/stream/create", body), 400, "unknown_service")

"""HTTP hygiene: the page origins an app allows, security headers on what bfstream serves, and TLS
straight from the settings."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from bfstream.config import load_settings
from tests.conftest import Server, ServerFactory

pytestmark = pytest.mark.anyio

SHOP = "https://shop.example"


async def set_origins(server: Server, origins: list[str] | None) -> None:
    await server.change_app(lambda store: store.set_origins(server.app_id, origins))


async def ws_answer(server: Server, app_id: str, origin: str | None) -> tuple[str, int | None]:
    """The first frame's op, or "closed" and the close code."""
    async with connect(f"{server.ws_url}?app={app_id}", origin=origin) as ws:  # type: ignore[arg-type]
        try:
            return json.loads(await asyncio.wait_for(ws.recv(), 5))["op"], None
        except Exception:
            return "closed", ws.close_code


async def test_an_app_that_lists_origins_refuses_pages_from_others(server: Server) -> None:
    await set_origins(server, [SHOP, "http://localhost:3000"])
    assert await ws_answer(server, server.app_id, SHOP) == ("hello", None)
    assert await ws_answer(server, server.app_id, "HTTP://LOCALHOST:3000") == ("hello", None)  # as browsers vary
    assert await ws_answer(server, server.app_id, "https://evil.example") == ("closed", 4403)
    assert await ws_answer(server, server.app_id, None) == ("hello", None)  # a back end sends no Origin
    assert await ws_answer(server, server.other_app_id, "https://evil.example") == ("hello", None)  # lists none

    sse = await server.http.get(
        server.url + "/message/sse", params={"app": server.app_id, "channel": "x"}, headers={"Origin": "https://x.y"}
    )
    assert sse.status_code == 403 and sse.json()["error"]["type"] == "forbidden"

    body = {
        "apiKey": server.api_key,
        "channels": ["room"],
        "actionName": "onStream",
        "service": "echo",
        "payload": {"model": "echo", "messages": [{"role": "user", "content": " ".join(["word"] * 400)}]},
    }
    stream_id = (await server.post("/stream/create", body)).json()["streamId"]
    refused = await server.http.post(
        server.url + "/stream/stop", json={"streamId": stream_id}, headers={"Origin": "https://evil.example"}
    )
    assert refused.status_code == 403
    status = await server.post("/stream/status", {"apiKey": server.api_key, "streamId": stream_id})
    assert status.json()["status"] == "running"  # the refused stop did nothing
    stopped = await server.http.post(
        server.url + "/stream/stop", json={"streamId": stream_id}, headers={"Origin": SHOP}
    )
    assert stopped.json()["status"] == "stopped"

    await set_origins(server, None)  # any origin again, at once
    assert await ws_answer(server, server.app_id, "https://evil.example") == ("hello", None)


async def test_security_headers_on_every_answer_and_a_policy_on_pages(server: Server) -> None:
    health = await server.http.get(server.url + "/healthz")
    assert health.headers["X-Content-Type-Options"] == "nosniff"
    assert health.headers["X-Frame-Options"] == "DENY"
    assert health.headers["Referrer-Policy"] == "no-referrer"
    assert "Strict-Transport-Security" not in health.headers  # plain HTTP: HSTS would lock browsers out
    docs = await server.http.get(server.url + "/docs")
    policy = docs.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy and "https:" not in policy
    error = await server.http.get(server.url + "/nowhere")
    assert error.status_code == 404 and error.headers["X-Content-Type-Options"] == "nosniff"


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_from_certificate_paths_in_the_settings(
    start_server: ServerFactory, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    server = await start_server(tls_certfile=cert, tls_keyfile=key)
    https = server.url.replace("http://", "https://")
    trust = ssl.create_default_context(cafile=str(cert))
    async with httpx.AsyncClient(verify=trust) as client:
        health = await client.get(https + "/healthz")
    assert health.status_code == 200
    assert health.headers["Strict-Transport-Security"] == "max-age=31536000"
    with pytest.raises(httpx.HTTPError):  # plain HTTP is not served on a TLS port
        await server.http.get(server.url + "/healthz")
    wss = server.ws_url.replace("ws://", "wss://")
    async with connect(f"{wss}?app={server.app_id}", ssl=trust) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["op"] == "hello"


def test_tls_needs_both_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tls_certfile and tls_keyfile go together"):
        load_settings(data_dir=tmp_path, tls_certfile=tmp_path / "cert.pem")


async def test_cors_answers_are_readable_only_by_the_origins_an_app_lists(server: Server) -> None:
    await set_origins(server, [SHOP])
    params = {"app": server.app_id, "channel": "x"}
    refused = await server.http.get(server.url + "/message/sse", params=params, headers={"Origin": "https://x.y"})
    # The refusal itself stays readable, so a page learns it is refused instead of retrying blind.
    assert refused.status_code == 403 and refused.headers["access-control-allow-origin"] == "*"
    stop = {"streamId": "0" * 32}
    preflight = await server.http.options(
        server.url + "/stream/stop",
        headers={
            "Origin": SHOP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 200  # the server-wide policy answers it: no app can be known yet
    assert preflight.headers["X-Content-Type-Options"] == "nosniff"  # CORS's own answers carry them too
    async with server.http.stream("GET", server.url + "/message/sse", params=params, headers={"Origin": SHOP}) as sse:
        assert sse.status_code == 200
        assert sse.headers["access-control-allow-origin"] == SHOP and "Origin" in sse.headers["vary"]
    unknown = await server.http.post(server.url + "/stream/stop", json=stop, headers={"Origin": "https://x.y"})
    assert unknown.json()["status"] == "not_found"  # no stream, no app to narrow to
    other_app = {**params, "app": server.other_app_id}
    async with server.http.stream(
        "GET", server.url + "/message/sse", params=other_app, headers={"Origin": "https://x.y"}
    ) as other:
        assert other.headers["access-control-allow-origin"] == "*"  # an app without a list: the server-wide policy


@pytest.mark.parametrize("name", ["x\u0085y", "x\u009fy", "x\x7fy", "x\ny"])
async def test_channel_names_hold_no_control_characters_c1_included(server: Server, name: str) -> None:
    body = {"apiKey": server.api_key, "channels": [name], "message": {"actions": []}}
    answer = await server.post("/message/sendmessage", body)
    assert answer.status_code == 400 and "control characters" in answer.text

"""Idempotent creates on one instance (issue 19): a retry with the same ``Idempotency-Key`` calls no
provider and answers what the first request answered; the fleet's side is tests/fleet/test_idempotency_fleet.py."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import Server, seed_body
from tests.fakes.openai_server import FakeOpenAI, JsonReply, StreamReply, completion, text_stream

pytestmark = pytest.mark.anyio


def _headers(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def _post(server: Server, path: str, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    return await server.http.post(server.url + path, json=body, headers=_headers(key) if key else None)


async def test_two_whole_answers_at_once_make_one_provider_call(server: Server, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(JsonReply(200, completion("Only once."), delay=0.5))
    key = str(uuid.uuid4())
    body = seed_body(server, stream=False)
    first, second = await asyncio.gather(
        _post(server, "/stream/create", body, key), _post(server, "/stream/create", body, key)
    )
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.json() == second.json()
    assert first.json()["choices"][0]["message"]["content"] == "Only once."
    replayed = sorted(r.headers.get("idempotent-replayed", "") for r in (first, second))
    assert replayed == ["", "true"]  # the one that waited says so
    assert len(fake_openai.requests) == 1


async def test_a_caller_that_hangs_up_finds_the_answer_when_it_retries(server: Server, fake_openai: FakeOpenAI) -> None:
    """Insert from URL gives up on a slow answer and retries: the first call is not cancelled (its
    answer would be paid for twice), and the retry gets it."""
    fake_openai.enqueue(JsonReply(200, completion("Worth the wait."), delay=1.5))
    key = str(uuid.uuid4())
    body = seed_body(server, stream=False)
    with pytest.raises(httpx.ReadTimeout):
        await server.http.post(server.url + "/stream/create", json=body, headers=_headers(key), timeout=0.3)
    retry = await _post(server, "/stream/create", body, key)
    assert retry.status_code == 200, retry.text
    assert retry.json()["choices"][0]["message"]["content"] == "Worth the wait."
    assert retry.headers["idempotent-replayed"] == "true"
    assert len(fake_openai.requests) == 1
    # Without a key, hanging up still cancels the provider call at once.
    fake_openai.enqueue(JsonReply(200, completion("For nobody."), delay=5))
    with pytest.raises(httpx.ReadTimeout):
        await server.http.post(server.url + "/stream/create", json=body, timeout=0.3)
    await fake_openai.wait_closed()


async def test_a_streamed_create_answers_its_stream_id_again(server: Server, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(StreamReply([text_stream(["one ", "stream"])]))
    client = await server.ws(channels=("anonymous",))
    key = str(uuid.uuid4())
    body = seed_body(server)
    first = await _post(server, "/stream/create", body, key)
    events = await client.stream_events()
    again = await _post(server, "/stream/create", {**body, "idempotencyKey": key})  # the body's form
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert {e["streamId"] for e in events} == {first.json()["streamId"]}
    everything = [f["message"]["actions"][0]["options"] for f in await client.messages_so_far()]
    assert {e["streamId"] for e in everything} == {first.json()["streamId"]}  # no second stream began
    assert [e["type"] for e in everything].count("threadInfo") == 1
    assert len(fake_openai.requests) == 1


async def test_llm_query_keeps_its_own_keys(server: Server, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(JsonReply(200, completion("Queried.")))
    key = str(uuid.uuid4())
    body = {
        "apiKey": server.api_key,
        "actionName": "answer",
        "payload": {
            "provider": "openai",
            "stream": False,
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "hi"}],
        },
    }
    first = await _post(server, "/llm/query", body, key)
    again = await _post(server, "/llm/query", body, key)
    assert first.status_code == again.status_code == 200, first.text
    assert again.json() == first.json() and first.json()["data"]["choices"][0]["message"]["content"] == "Queried."
    # The same key on the other endpoint, or with another question, is another request: a 422.
    other = await _post(server, "/stream/create", seed_body(server, stream=False), key)
    assert other.status_code == 422 and other.json()["error"]["type"] == "idempotency_key_reused"
    changed = {**body, "payload": {**body["payload"], "messages": [{"role": "user", "content": "bye"}]}}
    refused = await _post(server, "/llm/query", changed, key)
    assert refused.status_code == 422, refused.text
    assert refused.json()["actionName"] == "answer"  # llm/query's errors echo it, this one too
    assert len(fake_openai.requests) == 1


async def test_what_is_not_part_of_the_question_does_not_make_it_another(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    """A default sent or left out, the keys' order, another provider key: the same request."""
    fake_openai.enqueue(JsonReply(200, completion("Same.")))
    key = str(uuid.uuid4())
    body = seed_body(server, stream=False)
    first = await _post(server, "/stream/create", body, key)
    reordered = {k: body[k] for k in reversed(list(body))}
    reordered["payload"] = {**body["payload"], "apiKey": "sk-test-another-key-0000", "includeReasoning": None}
    reordered["includeReasoning"] = False
    again = await _post(server, "/stream/create", reordered, key)
    assert again.status_code == 200 and again.json() == first.json()
    # The service in another case, as payload.provider, or left to its default (openai): found by a review.
    for named in ({"service": "OPENAI"}, {"service": None, "provider": " openai "}, {"service": None}):
        service = named.pop("service")
        body_named = {**body, "payload": {**body["payload"], **named}}
        if service is None:
            del body_named["service"]
        else:
            body_named["service"] = service
        same = await _post(server, "/stream/create", body_named, key)
        assert same.status_code == 200 and same.json() == first.json(), (named, same.text)
    assert len(fake_openai.requests) == 1


async def test_a_failed_first_request_leaves_the_key_free(server: Server, fake_openai: FakeOpenAI) -> None:
    refusal = {"error": {"message": "context too long", "type": "invalid_request_error", "code": None}}
    fake_openai.enqueue(JsonReply(400, refusal))  # not retried by bfstream itself
    fake_openai.enqueue(JsonReply(200, completion("Second time lucky.")))
    key = str(uuid.uuid4())
    body = seed_body(server, stream=False)
    failed = await _post(server, "/stream/create", body, key)
    assert failed.status_code == 502, failed.text
    retry = await _post(server, "/stream/create", body, key)
    assert retry.status_code == 200 and "idempotent-replayed" not in retry.headers
    assert retry.json()["choices"][0]["message"]["content"] == "Second time lucky."
    # A refusal before any provider call frees it too.
    bad = await _post(server, "/stream/create", seed_body(server, model=7), "refused-" + key)
    assert bad.status_code == 400
    assert len(fake_openai.requests) == 2


async def test_keys_belong_to_their_app(server: Server, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(JsonReply(200, completion("Mine.")), JsonReply(200, completion("Theirs.")))
    key = str(uuid.uuid4())
    mine = await _post(server, "/stream/create", seed_body(server, stream=False), key)
    theirs = await _post(
        server, "/stream/create", {**seed_body(server, stream=False), "apiKey": server.other_api_key}, key
    )
    assert mine.json()["choices"][0]["message"]["content"] == "Mine."
    assert theirs.json()["choices"][0]["message"]["content"] == "Theirs."
    assert len(fake_openai.requests) == 2


@pytest.mark.parametrize(
    ("header", "in_body", "field"),
    [
        ("k" * 256, None, "header Idempotency-Key"),
        (None, "", "idempotencyKey"),
        (None, " padded ", "idempotencyKey"),
        (None, "line\nbreak", "idempotencyKey"),
        (None, "ends-in-a-newline\n", "idempotencyKey"),
        (None, "caf\u00e9", "idempotencyKey"),
        ("one", "two", "idempotencyKey"),
    ],
)
async def test_a_malformed_key_is_a_400_naming_it(
    server: Server, fake_openai: FakeOpenAI, header: str | None, in_body: str | None, field: str
) -> None:
    body = seed_body(server, stream=False)
    if in_body is not None:
        body["idempotencyKey"] = in_body
    answer = await server.http.post(
        server.url + "/stream/create", json=body, headers=_headers(header) if header else None
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "validation_error"
    assert [d["field"] for d in answer.json()["error"]["details"]] == [field]
    assert fake_openai.requests == []


async def test_two_different_key_headers_are_a_400(server: Server, fake_openai: FakeOpenAI) -> None:
    headers = [("Idempotency-Key", "dup-a"), ("Idempotency-Key", "dup-b")]
    # Sent as built: a client's post() would merge the two into its own headers, keeping one.
    request = httpx.Request(
        "POST", server.url + "/stream/create", headers=headers, json=seed_body(server, stream=False)
    )
    answer = await server.http.send(request)
    assert answer.status_code == 400, answer.text
    assert [d["field"] for d in answer.json()["error"]["details"]] == ["header Idempotency-Key"]
    assert fake_openai.requests == []

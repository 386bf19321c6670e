"""``service: "openai-responses"`` end to end: a fake speaking the Responses API's documented events
(``tests/fakes/responses_events.py``), cut at random places into small TCP pieces, the real server, real
WebSocket pages. The channels see what any other provider gives them; the request the fake received is
checked field by field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import PROVIDER_KEY, Server, seed_body
from tests.fakes.openai_server import FakeOpenAI, StreamReply, invalid_key_reply, split_randomly
from tests.fakes.responses_events import ResponseStream, function_call_item, url_citation, usage
from tests.providers.test_anthropic import run_stream

pytestmark = pytest.mark.anyio

ASKED_MODEL = "gpt-5-mini"
PARTS = ["Why do ", "programmers ", "prefer dark mode? ", "Because light ", "attracts bugs. 🐛 Olé!"]
SEEDS = [1, 2, 3]


def responses_body(server: Server, asked: bool = False, **payload: Any) -> dict[str, Any]:
    """The documented example body, sent to the Responses API (Chat Completions' seed and functions: [] in it)."""
    body = seed_body(server, model=ASKED_MODEL, **payload)
    body["service"] = "openai-responses"
    if asked:
        body["includeReasoning"] = True
    return body


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def serve(fake: FakeOpenAI, body: bytes, seed: int = 7) -> None:
    """The stream in pieces of up to 48 bytes (a Responses stream is verbose: every event names its item,
    and three of them carry the whole response), cut inside lines, JSON and UTF-8 characters alike."""
    fake.enqueue(StreamReply(split_randomly(body, seed, largest=48), delay=0.0002))


# ---- streams ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
async def test_text_reaches_the_channel_like_any_stream(server: Server, fake_openai: FakeOpenAI, seed: int) -> None:
    stream = ResponseStream(seed=seed)
    stream.message(PARTS)
    serve(fake_openai, stream.completed(usage(31, 17)), seed)

    stream_id, events = await run_stream(server, responses_body(server))

    assert [e["type"] for e in events] == ["threadInfo"] + ["delta"] * len(PARTS) + ["end"]
    assert events[0]["content"] == {"streamId": stream_id, "service": "openai-responses", "model": ASKED_MODEL}
    assert [e["content"] for e in events[1:-1]] == PARTS
    end = events[-1]
    assert end["text"] == "".join(PARTS) and end["finish_reason"] == "stop"
    assert end["usage"] == {"prompt_tokens": 31, "completion_tokens": 17, "total_tokens": 48}
    assert "reasoning" not in end and "sources" not in end

    (sent,) = fake_openai.requests
    assert (sent.method, sent.path) == ("POST", "/v1/responses")
    assert sent.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert sent.headers["accept"] == "text/event-stream"
    assert sent.json() == {
        "model": ASKED_MODEL,
        "temperature": 0,
        "instructions": "You are a Chuck Norris Joke teller.",
        "input": [{"type": "message", "role": "user", "content": "create a joke about software developers"}],
        "max_output_tokens": 4000,
        "stream": True,
    }  # seed and the empty functions array are Chat Completions': the Responses API would answer 400


@pytest.mark.parametrize("seed", SEEDS)
async def test_function_calls_come_whole_once_their_fragments_are_in(
    server: Server, fake_openai: FakeOpenAI, seed: int
) -> None:
    await server.make_tool_arguments_public()  # the reassembled arguments are what is checked
    weather = json.dumps({"city": "Zürich", "userMessage": "Checking the weather in Zürich…"}, ensure_ascii=False)
    stream = ResponseStream(seed=seed)
    stream.message(["Okay", ", let me check."])
    stream.function_call("call_W1x", "get_weather", weather, size=3)
    stream.function_call("call_T2y", "get_time", "{}")
    serve(fake_openai, stream.completed(usage(472, 89)), seed)

    _, events = await run_stream(server, responses_body(server))  # no webhook: the calls end the stream

    assert [e["type"] for e in events] == ["threadInfo", "delta", "delta", "function_call", "end"]
    assert events[-2]["content"]["functions"] == [
        {
            "id": "call_W1x",
            "name": "get_weather",
            "arguments": weather,
            "userMessage": "Checking the weather in Zürich…",
        },
        {"id": "call_T2y", "name": "get_time", "arguments": "{}", "userMessage": None},
    ]
    end = events[-1]
    assert end["text"] == "Okay, let me check." and end["finish_reason"] == "tool_calls"
    assert end["usage"] == {"prompt_tokens": 472, "completion_tokens": 89, "total_tokens": 561}


def reasoning_stream(seed: int) -> bytes:
    stream = ResponseStream(seed=seed)
    stream.reasoning(
        [["**Picking** ", "a joke"], ["Keeping it ", "short 🐛"]], encrypted="gAAAAABo0Q8x-FakeEncrypted=="
    )
    stream.message(["Because light ", "attracts bugs."])
    return stream.completed(usage(20, 60, reasoning_tokens=48))


@pytest.mark.parametrize("asked", [True, False], ids=["asked", "not-asked"])
@pytest.mark.parametrize("seed", [1, 2])
async def test_reasoning_summaries_reach_a_request_that_asked(
    server: Server, fake_openai: FakeOpenAI, asked: bool, seed: int
) -> None:
    serve(fake_openai, reasoning_stream(seed), seed)
    _, events = await run_stream(server, responses_body(server, asked))

    end = events[-1]
    assert end["text"] == "Because light attracts bugs." and end["finish_reason"] == "stop"
    assert end["usage"] == {"prompt_tokens": 20, "completion_tokens": 60, "total_tokens": 80}
    sent = fake_openai.requests[0].json()
    if not asked:
        assert of_type(events, "reasoning") == [] and "reasoning" not in end
        assert "reasoning" not in sent  # never asked for: some models refuse the field
        return
    assert sent["reasoning"] == {"summary": "auto"}
    kinds = [e["type"] for e in events]
    assert kinds[: kinds.index("delta")] == ["threadInfo"] + ["reasoning"] * 5
    thought = "**Picking** a joke\n\nKeeping it short 🐛"  # summary parts are paragraphs
    assert "".join(e["content"] for e in of_type(events, "reasoning")) == thought
    assert end["reasoning"] == thought


async def test_a_chosen_summary_is_kept_and_store_false_brings_the_encrypted_reasoning(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    serve(fake_openai, reasoning_stream(4))
    body = responses_body(server, True, reasoning={"effort": "high", "summary": "detailed"}, store=False)
    await run_stream(server, body)
    sent = fake_openai.requests[0].json()
    assert sent["reasoning"] == {"effort": "high", "summary": "detailed"}
    assert sent["store"] is False and sent["include"] == ["reasoning.encrypted_content"]


@pytest.mark.parametrize("seed", SEEDS)
async def test_citations_are_sources_and_unknown_events_are_skipped(
    server: Server, fake_openai: FakeOpenAI, seed: int
) -> None:
    wiki = url_citation("https://en.wikipedia.org/wiki/Z%C3%BCrich", "Zürich - Wikipedia", 0, 16)
    weather = url_citation("https://www.meteoswiss.admin.ch/", "MeteoSwiss", 17, 30)
    stream = ResponseStream(seed=seed, tools=[{"type": "web_search"}])
    stream.web_search("Zürich weather")
    stream.event("response.future_widget.delta", item_id="wd_1", output_index=1, delta="?")  # not invented yet
    stream.message(
        ["Zürich is mild; ", "summers are warm."],
        annotations=[(0, wiki), (1, weather), (1, wiki), (1, url_citation("javascript:alert(1)", "x", 0, 1))],
    )
    serve(fake_openai, stream.completed(), seed)

    _, events = await run_stream(server, responses_body(server, tools=[{"type": "web_search"}]))

    assert [e["type"] for e in events] == ["threadInfo", "delta", "sources", "delta", "sources", "end"]
    found = [{"url": wiki["url"], "title": wiki["title"]}, {"url": weather["url"], "title": "MeteoSwiss"}]
    assert [s["sources"] for s in of_type(events, "sources")] == [found[:1], found[1:]]  # each URL once
    assert events[-1]["sources"] == found
    assert events[-1]["finish_reason"] == "stop"  # a built-in tool's call is not ours to answer
    assert fake_openai.requests[0].json()["tools"] == [{"type": "web_search"}]


async def test_a_refusal_is_text_that_finishes_content_filter(server: Server, fake_openai: FakeOpenAI) -> None:
    stream = ResponseStream()
    stream.refusal(["I'm sorry, ", "I can't help with that."])
    serve(fake_openai, stream.completed(usage(12, 9)))
    _, events = await run_stream(server, responses_body(server))
    assert [e["type"] for e in events] == ["threadInfo", "delta", "delta", "end"]
    assert events[-1]["text"] == "I'm sorry, I can't help with that."
    assert events[-1]["finish_reason"] == "content_filter"


@pytest.mark.parametrize(("reason", "finish"), [("max_output_tokens", "length"), ("content_filter", "content_filter")])
async def test_an_incomplete_response_finishes_with_its_reason(
    server: Server, fake_openai: FakeOpenAI, reason: str, finish: str
) -> None:
    stream = ResponseStream(max_output_tokens=16)
    stream.message(["Once upon ", "a time"], status="incomplete")
    serve(fake_openai, stream.incomplete(reason, usage(10, 16)))
    _, events = await run_stream(server, responses_body(server, max_tokens=16))
    end = events[-1]
    assert end["text"] == "Once upon a time" and end["finish_reason"] == finish
    assert end["usage"] == {"prompt_tokens": 10, "completion_tokens": 16, "total_tokens": 26}
    assert fake_openai.requests[0].json()["max_output_tokens"] == 16


async def test_a_failed_response_is_an_error_then_end(server: Server, fake_openai: FakeOpenAI) -> None:
    stream = ResponseStream()
    stream.message(["Partial "], status="incomplete")
    serve(fake_openai, stream.failed("server_error", f"The server had an error (key {PROVIDER_KEY})"))
    _, events = await run_stream(server, responses_body(server))
    assert [e["type"] for e in events] == ["threadInfo", "delta", "error", "end"]
    assert events[2]["error"] == {
        "message": "The server had an error (key ***)",
        "code": "server_error",
        "details": {"code": "server_error", "message": "The server had an error (key ***)"},
    }
    assert events[-1]["finish_reason"] == "error" and events[-1]["text"] == "Partial "


async def test_an_error_event_is_an_error_then_end(server: Server, fake_openai: FakeOpenAI) -> None:
    stream = ResponseStream()
    stream.message(["Half an "], status="incomplete")
    stream.error("rate_limit_exceeded", "Rate limit reached for gpt-5-mini on tokens per min (TPM).")
    serve(fake_openai, stream.failed("rate_limit_exceeded", "Rate limit reached for gpt-5-mini."))
    _, events = await run_stream(server, responses_body(server))
    assert [e["type"] for e in events] == ["threadInfo", "delta", "error", "end"]
    message = "Rate limit reached for gpt-5-mini on tokens per min (TPM)."
    assert events[2]["error"] == {
        "message": message,
        "code": "rate_limit_exceeded",
        "details": {"code": "rate_limit_exceeded", "message": message, "param": None},
    }
    assert events[-1]["finish_reason"] == "error"


async def test_a_stream_that_stops_before_its_end_event_is_an_error(server: Server, fake_openai: FakeOpenAI) -> None:
    stream = ResponseStream()
    stream.message(["Almost"])
    serve(fake_openai, stream.body())
    _, events = await run_stream(server, responses_body(server))
    assert [e["type"] for e in events] == ["threadInfo", "delta", "error", "end"]
    assert events[2]["error"]["code"] == 502
    assert events[2]["error"]["message"] == "The provider closed the stream before it was complete"
    assert events[-1]["finish_reason"] == "error" and events[-1]["text"] == "Almost"


async def test_a_refused_key_fails_the_post_and_sends_nothing(server: Server, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(invalid_key_reply(PROVIDER_KEY))
    page = await server.ws(channels=("anonymous",))
    response = await server.post("/stream/create", responses_body(server))
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "provider_error" and error["code"] == 401
    assert error["details"].startswith("Incorrect API key provided: ***") and PROVIDER_KEY not in response.text
    assert await page.messages_so_far() == []


async def test_a_call_listed_only_in_the_final_response_is_not_lost(server: Server, fake_openai: FakeOpenAI) -> None:
    """Some servers (LiteLLM's bridge to Chat Completions models) stream no event for a function call
    and list it only in ``response.completed``."""
    await server.make_tool_arguments_public()  # the reassembled arguments are what is checked
    stream = ResponseStream()
    stream.message(["Let me look."])
    stream.output.append(function_call_item("call_Q", "get_weather", '{"city": "Oslo"}', id="fc_Q"))
    serve(fake_openai, stream.completed())
    _, events = await run_stream(server, responses_body(server))
    assert [e["type"] for e in events] == ["threadInfo", "delta", "function_call", "end"]
    (call,) = events[2]["content"]["functions"]
    assert call == {"id": "call_Q", "name": "get_weather", "arguments": '{"city": "Oslo"}', "userMessage": None}
    assert events[-1]["finish_reason"] == "tool_calls"

"""The model's thinking and its sources, from each provider's own wire format to the channels.

Reasoning is opt-in (``includeReasoning``): a request that does not ask gets no ``reasoning`` event
and no ``end.reasoning``, whatever the provider sends. Sources always go out, each URL once. The
fakes speak each provider's documented format, cut at random places into small TCP pieces.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Server, ServerFactory, assert_well_formed, seed_body
from tests.fakes import anthropic_server as claude
from tests.fakes import gemini_server as gemini
from tests.fakes import openai_server as openai
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.openai_server import FakeOpenAI, JsonReply, StreamReply, split_randomly
from tests.providers.test_anthropic import run_stream

pytestmark = pytest.mark.anyio

SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl"
REDACTED = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpPkNRj2YfWXGmKDxH4mPnZ5sQ7vB5URj"


def body_for(server: Server, service: str, model: str, asked: bool, **payload: Any) -> dict[str, Any]:
    body = seed_body(server, model=model, **payload)
    body["service"] = service
    if asked:
        body["includeReasoning"] = True
    return body


async def record_of(server: Server, stream_id: str) -> dict[str, Any]:
    response = await server.post("/stream/status", {"apiKey": server.api_key, "streamId": stream_id})
    assert response.status_code == 200, response.text
    return response.json()


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


# ---- Anthropic: thinking, redacted thinking, web search results and citations ------------------------

SEARCHED = [
    {"url": "https://en.wikipedia.org/wiki/Z%C3%BCrich", "title": "Zürich - Wikipedia"},
    {"url": "https://www.zuerich.com/en/weather", "title": "Weather in Zürich"},
]
CITED_TEXT = "Zürich has a temperate climate with warm summers."


def claude_searching_stream() -> bytes:
    """Thinking, a redacted thinking block, a web search (server tool use and its results), then text
    with a web search citation: the shapes of Anthropic's extended thinking and web search pages."""
    results = [
        {"type": "web_search_result", **found, "encrypted_content": "EqgfCioIARgBIiQ3YTAw", "page_age": "2 days ago"}
        for found in SEARCHED
    ]  # fmt: skip
    citation = {
        "type": "web_search_result_location",
        "url": SEARCHED[1]["url"],
        "title": SEARCHED[1]["title"],
        "encrypted_index": "Eo8BCioIAhgBIiQyYjQ0OWJmZi1lNm",
        "cited_text": CITED_TEXT,
    }
    return b"".join(
        [
            claude.message_start(message_usage=claude.usage(2679, 3)),
            claude.block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
            claude.block_delta(0, {"type": "thinking_delta", "thinking": "The user asks about Zürich's "}),
            claude.block_delta(0, {"type": "thinking_delta", "thinking": "weather; I should search. 🌦"}),
            claude.block_delta(0, {"type": "signature_delta", "signature": SIGNATURE}),
            claude.block_stop(0),
            claude.block_start(1, {"type": "redacted_thinking", "data": REDACTED}),
            claude.block_stop(1),
            claude.block_start(
                2,
                {
                    "type": "server_tool_use",
                    "id": "srvtoolu_014hJH82Qum7Td6UV8gDXThB",
                    "name": "web_search",
                    "input": {},
                },
            ),
            claude.block_delta(2, {"type": "input_json_delta", "partial_json": ""}),
            claude.block_delta(2, {"type": "input_json_delta", "partial_json": '{"query": "Zürich weather"}'}),
            claude.block_stop(2),
            claude.block_start(
                3,
                {
                    "type": "web_search_tool_result",
                    "tool_use_id": "srvtoolu_014hJH82Qum7Td6UV8gDXThB",
                    "content": results,
                },
            ),
            claude.block_stop(3),
            claude.block_start(4, {"type": "text", "text": ""}),
            claude.text_delta(4, "It is mild: "),
            claude.block_stop(4),
            claude.block_start(5, {"type": "text", "text": "", "citations": []}),
            claude.block_delta(5, {"type": "citations_delta", "citation": citation}),
            claude.text_delta(5, "warm summers, cool winters."),
            claude.block_stop(5),
            claude.message_delta("end_turn", 510, input_tokens=2679),
            claude.message_stop(),
        ]
    )


@pytest.mark.parametrize("asked", [True, False], ids=["asked", "not-asked"])
@pytest.mark.parametrize("seed", [1, 2])
async def test_anthropic_thinking_and_web_search(
    start_server: ServerFactory, fake_anthropic: FakeAnthropic, asked: bool, seed: int
) -> None:
    server = await start_server()
    fake_anthropic.enqueue(StreamReply(split_randomly(claude_searching_stream(), seed), delay=0.0002))
    thinking = {"type": "enabled", "budget_tokens": 2048}
    body = body_for(server, "anthropic", "claude-sonnet-4-5", asked, thinking=thinking)
    stream_id, events = await run_stream(server, body)

    end = events[-1]
    assert end["text"] == "It is mild: warm summers, cool winters." and end["finish_reason"] == "stop"
    assert end["usage"] == {"prompt_tokens": 2679, "completion_tokens": 510, "total_tokens": 3189}
    (sources,) = of_type(events, "sources")  # the search results; the citation names one of them again
    assert sources["sources"] == SEARCHED
    assert end["sources"] == SEARCHED
    thought = "The user asks about Zürich's weather; I should search. 🌦"
    record = await record_of(server, stream_id)
    assert record["sources"] == SEARCHED
    if not asked:
        assert of_type(events, "reasoning") == [] and "reasoning" not in end
        assert record["reasoning"] is None
        return
    kinds = [e["type"] for e in events]
    assert kinds[: kinds.index("delta")] == ["threadInfo", "reasoning", "reasoning", "reasoning", "sources"]
    reasoning = of_type(events, "reasoning")
    assert "".join(e["content"] for e in reasoning) == thought
    assert reasoning[-1] == {**reasoning[-1], "content": "", "redacted": True}  # withheld, and says so
    assert all("redacted" not in e for e in reasoning[:-1])
    assert end["reasoning"] == thought
    assert record["reasoning"] == thought


async def test_anthropic_citation_of_a_page_not_among_the_results_is_a_source(
    start_server: ServerFactory, fake_anthropic: FakeAnthropic
) -> None:
    server = await start_server()
    elsewhere = {
        "type": "web_search_result_location",
        "url": "https://www.meteoswiss.admin.ch/",
        "title": "MeteoSwiss",
        "encrypted_index": "Eo8BCioIAhgBIiQy",
        "cited_text": "Mild.",
    }
    document = {"type": "char_location", "cited_text": "Mild.", "document_index": 0, "document_title": "Notes",
                "start_char_index": 0, "end_char_index": 5}  # fmt: skip
    body = b"".join(
        [
            claude.message_start(),
            claude.block_start(0, {"type": "text", "text": "", "citations": []}),
            claude.block_delta(0, {"type": "citations_delta", "citation": document}),
            claude.block_delta(0, {"type": "citations_delta", "citation": elsewhere}),
            claude.text_delta(0, "Mild."),
            claude.block_stop(0),
            claude.message_delta("end_turn", 2),
            claude.message_stop(),
        ]
    )
    fake_anthropic.enqueue(StreamReply(split_randomly(body, 3)))
    _, events = await run_stream(server, body_for(server, "anthropic", "claude-sonnet-4-5", False))
    source = {"url": elsewhere["url"], "title": "MeteoSwiss", "snippet": "Mild."}
    assert of_type(events, "sources") == [{**of_type(events, "sources")[0], "sources": [source]}]
    assert events[-1]["sources"] == [source]  # a document citation has no URL: not a source


async def test_anthropic_without_stream_gives_reasoning_content_only_when_asked(
    start_server: ServerFactory, fake_anthropic: FakeAnthropic
) -> None:
    server = await start_server()
    content = [
        {"type": "thinking", "thinking": "Two and two make four.", "signature": SIGNATURE},
        {"type": "redacted_thinking", "data": REDACTED},
        claude.text_block("4"),
    ]
    for asked in (True, False):
        fake_anthropic.enqueue(JsonReply(200, claude.message(content)))
        body = body_for(server, "anthropic", "claude-sonnet-4-5", asked, stream=False)
        response = await server.post("/stream/create", body)
        assert response.status_code == 200, response.text
        message = response.json()["choices"][0]["message"]
        assert message["content"] == "4"
        if asked:
            assert message["reasoning_content"] == "Two and two make four."
        else:
            assert "reasoning_content" not in message


# ---- Gemini: thought parts (asked for with includeThoughts) and grounding ---------------------------

GROUNDING = {
    "searchEntryPoint": {"renderedContent": '<style>.container{}</style><div class="container"></div>'},
    "groundingChunks": [
        {
            "web": {
                "uri": "https://vertexaisearch.cloud.google.com/grounding-api-redirect/AWhgh4y9L4oK",
                "title": "uefa.com",
            }
        },
        {
            "web": {
                "uri": "https://vertexaisearch.cloud.google.com/grounding-api-redirect/AWhgh4yh8iBQ",
                "title": "aljazeera.com",
            }
        },
    ],
    "groundingSupports": [
        {
            "segment": {"startIndex": 0, "endIndex": 36, "text": "Spain won Euro 2024, beating England."},
            "groundingChunkIndices": [0, 1],
        }
    ],
    "webSearchQueries": ["who won euro 2024"],
}


def gemini_grounded_stream() -> bytes:
    thoughts = ["**Recalling the final**\n\nThe user wants the Euro 2024 winner. ", "Let me search to be sure."]
    out = [gemini.sse(gemini.chunk([{"text": t, "thought": True}])) for t in thoughts]
    out.append(gemini.sse(gemini.chunk([{"text": "Spain won Euro 2024, "}])))
    last = gemini.chunk(
        [{"text": "beating England 2-1."}], finish_reason="STOP", usage_metadata=gemini.usage(14, thoughts=120)
    )
    last["candidates"][0]["groundingMetadata"] = GROUNDING
    out.append(gemini.sse(last))
    return b"".join(out)


@pytest.mark.parametrize("asked", [True, False], ids=["asked", "not-asked"])
async def test_gemini_thoughts_and_grounding(start_server: ServerFactory, fake_gemini: FakeGemini, asked: bool) -> None:
    server = await start_server()
    fake_gemini.enqueue(gemini.stream_reply(split_randomly(gemini_grounded_stream(), 4), delay=0.0002))
    tools = [{"google_search": {}}]
    body = body_for(server, "gemini", "gemini-2.5-flash", asked)
    body["payload"]["providerArgs"] = {"tools": tools}  # Gemini's own tool: through providerArgs
    body["payload"].pop("functions")
    body["payload"].pop("seed")
    # /stream/create has no providerArgs: send it through /llm/query, which has.
    query = {
        "apiKey": body["apiKey"], "channels": body["channels"], "actionName": body["actionName"],
        "payload": {**body["payload"], "provider": "gemini"},
    }  # fmt: skip
    if asked:
        query["includeReasoning"] = True
    page = await server.ws(channels=("anonymous",))
    response = await server.post("/llm/query", query)
    assert response.status_code == 200, response.text
    events = await page.stream_events()
    assert_well_formed(events)

    end = events[-1]
    assert end["text"] == "Spain won Euro 2024, beating England 2-1." and end["finish_reason"] == "stop"
    assert end["usage"] == {"prompt_tokens": gemini.PROMPT_TOKENS, "completion_tokens": 134,
                            "total_tokens": gemini.PROMPT_TOKENS + 134}  # fmt: skip
    sources = [{"url": c["web"]["uri"], "title": c["web"]["title"]} for c in GROUNDING["groundingChunks"]]
    assert [e["sources"] for e in of_type(events, "sources")] == [sources] and end["sources"] == sources
    sent = fake_gemini.requests[0].json()
    thought = "**Recalling the final**\n\nThe user wants the Euro 2024 winner. Let me search to be sure."
    if asked:
        assert "".join(e["content"] for e in of_type(events, "reasoning")) == thought == end["reasoning"]
        assert [e["type"] for e in events][1:3] == ["reasoning", "reasoning"]
        assert sent["generationConfig"]["thinkingConfig"] == {"includeThoughts": True}
    else:
        assert of_type(events, "reasoning") == [] and "reasoning" not in end
        assert "thinkingConfig" not in sent.get("generationConfig", {})
    assert sent["tools"] == tools


async def test_gemini_keeps_the_callers_own_thinking_config(
    start_server: ServerFactory, fake_gemini: FakeGemini
) -> None:
    server = await start_server()
    fake_gemini.enqueue(gemini.stream_reply([gemini.text_stream(["Fine."])]))
    query = {
        "apiKey": server.api_key, "channels": ["anonymous"], "actionName": "a", "includeReasoning": True,
        "payload": {
            "provider": "gemini", "model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "Hi"}],
            "providerArgs": {"thinkingConfig": {"thinkingBudget": 512, "includeThoughts": False}},
        },
    }  # fmt: skip
    page = await server.ws(channels=("anonymous",))
    assert (await server.post("/llm/query", query)).status_code == 200
    await page.stream_events()
    config = fake_gemini.requests[0].json()["generationConfig"]["thinkingConfig"]
    assert config == {"thinkingBudget": 512, "includeThoughts": False}  # the caller's word wins


async def test_gemini_without_stream_gives_reasoning_content(
    start_server: ServerFactory, fake_gemini: FakeGemini
) -> None:
    server = await start_server()
    answer = gemini.chunk([{"text": "Adding up.", "thought": True}, {"text": "4"}], finish_reason="STOP")
    fake_gemini.enqueue(gemini.json_reply(answer))
    body = body_for(server, "gemini", "gemini-2.5-flash", True, stream=False)
    body["payload"].pop("functions")
    body["payload"].pop("seed")
    response = await server.post("/stream/create", body)
    assert response.status_code == 200, response.text
    message = response.json()["choices"][0]["message"]
    assert (message["content"], message["reasoning_content"]) == ("4", "Adding up.")
    assert fake_gemini.requests[0].json()["generationConfig"]["thinkingConfig"] == {"includeThoughts": True}


# ---- OpenAI-compatible servers: reasoning_content (DeepSeek, vLLM) and reasoning (OpenRouter) -----


def compatible_stream(field: str) -> bytes:
    """DeepSeek's shape: content null while it reasons, then the answer; OpenRouter's says reasoning."""
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": None, field: ""}]
    deltas += [{"content": None, field: piece} for piece in ["9.11 is ", "smaller than 9.9, ", "since 11 < 90."]]
    deltas += [{"content": piece, field: None} for piece in ["9.9 ", "is larger."]]
    return openai._stream(deltas, "stop", "deepseek-reasoner", openai._usage("auto", 5), True)


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
@pytest.mark.parametrize("asked", [True, False], ids=["asked", "not-asked"])
async def test_compatible_reasoning_fields(
    start_server: ServerFactory, fake_openai: FakeOpenAI, field: str, asked: bool
) -> None:
    server = await start_server()
    fake_openai.enqueue(StreamReply(split_randomly(compatible_stream(field), 5)))
    _, events = await run_stream(server, body_for(server, "openai", "deepseek-reasoner", asked))
    end = events[-1]
    assert end["text"] == "9.9 is larger." and end["finish_reason"] == "stop"
    thought = "9.11 is smaller than 9.9, since 11 < 90."
    if asked:
        assert "".join(e["content"] for e in of_type(events, "reasoning")) == thought == end["reasoning"]
        kinds = [e["type"] for e in events]
        assert kinds == ["threadInfo", *["reasoning"] * 3, "delta", "delta", "end"]
    else:
        assert of_type(events, "reasoning") == [] and "reasoning" not in end
    sent = fake_openai.requests[0].json()
    assert "reasoning" not in sent and "include_reasoning" not in sent  # nothing is asked of a compatible server


async def test_reasoning_is_never_sent_back_to_a_compatible_server(
    start_server: ServerFactory, fake_openai: FakeOpenAI
) -> None:
    """DeepSeek answers 400 to messages carrying reasoning_content: a conversation's earlier answers
    go back as the caller wrote them, and bfstream adds none."""
    server = await start_server()
    fake_openai.enqueue(StreamReply([openai.text_stream(["Yes."])]))
    messages = [
        {"role": "user", "content": "Is 9.9 larger?"},
        {"role": "assistant", "content": "9.9 is larger."},
        {"role": "user", "content": "Sure?"},
    ]
    await run_stream(server, body_for(server, "openai", "deepseek-reasoner", True, messages=messages))
    assert fake_openai.requests[0].json()["messages"] == messages


async def test_openai_search_annotations_are_sources(start_server: ServerFactory, fake_openai: FakeOpenAI) -> None:
    server = await start_server()
    cite = {"type": "url_citation", "url_citation": {"url": "https://www.bbc.com/news", "title": "BBC News",
                                                     "start_index": 0, "end_index": 5}}  # fmt: skip
    deltas = [{"role": "assistant", "content": ""}, {"content": "News."}, {"annotations": [cite, cite]}]
    fake_openai.enqueue(StreamReply([openai._stream(deltas, "stop", "gpt-4o-search-preview", None, True)]))
    _, events = await run_stream(server, body_for(server, "openai", "gpt-4o-search-preview", False))
    source = {"url": "https://www.bbc.com/news", "title": "BBC News"}
    assert [e["sources"] for e in of_type(events, "sources")] == [[source]] and events[-1]["sources"] == [source]


async def test_compatible_without_stream_copies_reasoning(start_server: ServerFactory, fake_openai: FakeOpenAI) -> None:
    server = await start_server()
    answer = openai.completion("4")
    answer["choices"][0]["message"]["reasoning"] = "Two and two."
    for asked in (True, False):
        fake_openai.enqueue(JsonReply(200, answer))
        response = await server.post("/stream/create", body_for(server, "openai", "x", asked, stream=False))
        message = response.json()["choices"][0]["message"]
        assert message["reasoning"] == "Two and two."  # the server's own answer, untouched
        assert message.get("reasoning_content") == ("Two and two." if asked else None)


async def test_a_source_that_is_not_a_web_link_is_dropped(start_server: ServerFactory, fake_openai: FakeOpenAI) -> None:
    server = await start_server()
    hostile = {"type": "url_citation", "url_citation": {"url": "javascript:alert(1)", "title": "x"}}
    deltas = [{"role": "assistant", "content": "Hi."}, {"annotations": [hostile]}]
    fake_openai.enqueue(StreamReply([openai._stream(deltas, "stop", "m", None, True)]))
    _, events = await run_stream(server, body_for(server, "openai", "m", False))
    assert of_type(events, "sources") == [] and "sources" not in events[-1]


async def test_an_app_that_keeps_no_text_keeps_no_reasoning(
    start_server: ServerFactory, fake_openai: FakeOpenAI
) -> None:
    server = await start_server()
    await server.change_app(lambda store: store.set_retain_text(server.app_id, False))
    fake_openai.enqueue(StreamReply([compatible_stream("reasoning_content")]))
    stream_id, events = await run_stream(server, body_for(server, "openai", "deepseek-reasoner", True))
    assert events[-1]["reasoning"] == "9.11 is smaller than 9.9, since 11 < 90."  # the pages still get it
    record = await record_of(server, stream_id)
    assert (record["text"], record["reasoning"]) == (None, None)


@pytest.mark.parametrize("path", ["/stream/create", "/llm/query"])
async def test_include_reasoning_inside_the_payload_counts_and_is_not_sent_on(
    start_server: ServerFactory, fake_openai: FakeOpenAI, path: str
) -> None:
    """``/llm/query`` keeps ``provider``, ``stream`` and ``apiKey`` in its payload, so the flag is
    looked for there too; it is bfstream's, and never reaches the provider."""
    server = await start_server()

    def asking(flag: Any) -> dict[str, Any]:
        body = body_for(server, "openai", "deepseek-reasoner", False, includeReasoning=flag)
        if path == "/llm/query":  # the service is named in the payload there
            body["payload"]["provider"] = body.pop("service")
        return body

    fake_openai.enqueue(StreamReply([compatible_stream("reasoning_content")]))
    page = await server.ws(channels=("anonymous",))
    response = await server.post(path, asking(True))
    assert response.status_code == 200, response.text
    events = await page.stream_events()
    assert events[-1]["reasoning"] == "9.11 is smaller than 9.9, since 11 < 90."
    assert "includeReasoning" not in fake_openai.requests[0].json()
    refused = await server.post(path, asking("yes"))
    assert refused.status_code == 400 and refused.json()["error"]["details"][0]["field"] == "payload.includeReasoning"

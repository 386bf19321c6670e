"""The pages bfstream serves, driven in Chromium as a person would: the demo chat (with echo, and with
a reasoning model that searches). The dashboard's are in test_admin.py. The docs' screenshots are
taken by ``python -m tests.browser.screenshots``, not here: a test run leaves the checkout as it was."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import ServerFactory
from tests.fakes import anthropic_server as claude
from tests.fakes.anthropic_server import FakeAnthropic, StreamReply
from tests.fakes.openai_server import split_randomly

pytestmark = pytest.mark.anyio


# Counts how often the answer's text changes: an answer that arrives in one piece changes once.
WATCH_ANSWERS = """() => {
  window.answerChanges = 0;
  new MutationObserver(() => { window.answerChanges += 1; })
    .observe(document.getElementById("chat").shadowRoot, { childList: true, subtree: true, characterData: true });
}"""


async def ask(page: Any, prompt: str) -> None:
    await page.fill("#prompt", prompt)
    await page.press("#prompt", "Enter")


async def test_the_demo_streams_an_answer_progressively_and_the_stop_button_ends_one(
    start_server: ServerFactory, chromium: Any
) -> None:
    server = await start_server(demo={"enabled": True}, services={"echo": {"delay_ms": 15}})
    page = await chromium.new_page()
    failures: list[str] = []
    page.on("pageerror", lambda error: failures.append(str(error)))
    await page.goto(server.url + "/demo")
    await page.wait_for_selector("body[data-ready='true']", timeout=10_000)
    assert await page.text_content("bf-chat .status") == "open"
    await page.evaluate(WATCH_ANSWERS)

    await ask(page, "What does bfstream do?")
    assert await page.locator("bf-chat .message").all_text_contents() == ["What does bfstream do?"]
    answer = page.locator("bf-chat .turn").first
    await page.wait_for_selector("bf-chat .turn[data-status='done']", timeout=15_000)
    text = await answer.locator(".answer").text_content()
    assert text is not None and text.startswith("You wrote: What does bfstream do? This answer comes from")
    assert text.count(". ") >= 2 and text.endswith("where it was.")  # several sentences, whole
    assert await page.evaluate("() => window.answerChanges") >= 20  # it grew word by word, not at once
    # The element's stylesheet applies under the page's strict Content-Security-Policy (no inline styles).
    assert await answer.evaluate("(turn) => getComputedStyle(turn).borderTopLeftRadius") == "12px"

    await ask(page, " ".join(["long"] * 400))  # some 6 s of words: time to press Stop
    second = page.locator("bf-chat .turn").nth(1)
    await page.wait_for_function(
        "() => (document.getElementById('chat').shadowRoot.querySelectorAll('.answer')[1]?.textContent ?? '')"
        ".length > 40"
    )
    assert not await page.is_enabled("#send")  # one answer at a time
    await second.locator(".stop").click()
    await page.wait_for_selector("bf-chat .turn[data-status='stopped']", timeout=10_000)
    stopped = await second.locator(".answer").text_content()
    assert stopped is not None and stopped.count("long") < 400
    assert await second.locator(".note").text_content() == "Stopped"
    assert await page.is_enabled("#send") and await page.locator("bf-chat .stop").count() == 0
    assert failures == []


# ---- a reasoning model on the demo: its thinking, then its answer, then its sources -------------------

THOUGHT = ["The user asks about Zürich's ", "weather; ", "I should search before answering."]
SOURCES = [
    {"url": "https://en.wikipedia.org/wiki/Z%C3%BCrich", "title": "Zürich - Wikipedia"},
    {"url": "https://www.zuerich.com/en/weather", "title": "Weather in Zürich"},
]
ANSWER = ["Let me look ", "that up. ", "Zürich is mild: ", "warm summers, cool winters."]


def _claude_thinking_then_searching() -> list[bytes]:
    """Claude with extended thinking and web search, in the shapes of Anthropic's streaming, extended
    thinking and web search pages, in three parts: the thinking (and a redacted block), the first
    words of the answer, then the search, its results and the cited rest of the answer."""
    results = [
        {"type": "web_search_result", **found, "encrypted_content": "EqgfCioIARgBIiQ3YTAw", "page_age": "3 days ago"}
        for found in SOURCES
    ]  # fmt: skip
    citation = {"type": "web_search_result_location", **SOURCES[1], "cited_text": "Zürich has warm summers.",
                "encrypted_index": "Eo8BCioIAhgBIiQyYjQ0OWJmZi1lNm"}  # fmt: skip
    search = {"type": "server_tool_use", "id": "srvtoolu_01WYG3ziw53XMcoyKL4XcZmE", "name": "web_search", "input": {}}
    thinking = [claude.block_delta(0, {"type": "thinking_delta", "thinking": piece}) for piece in THOUGHT]
    return [
        b"".join([
            claude.message_start(message_usage=claude.usage(2310, 4)),
            claude.block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
            *thinking,
            claude.block_delta(0, {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxB"}),
            claude.block_stop(0),
            claude.block_start(1, {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5"}),
            claude.block_stop(1),
        ]),
        b"".join([
            claude.block_start(2, {"type": "text", "text": ""}),
            claude.text_delta(2, ANSWER[0]),
            claude.text_delta(2, ANSWER[1]),
            claude.block_stop(2),
        ]),
        b"".join([
            claude.block_start(3, search),
            claude.block_delta(3, {"type": "input_json_delta", "partial_json": '{"query": "Zürich weather"}'}),
            claude.block_stop(3),
            claude.block_start(4, {"type": "web_search_tool_result", "tool_use_id": search["id"], "content": results}),
            claude.block_stop(4),
            claude.block_start(5, {"type": "text", "text": ""}),
            claude.text_delta(5, ANSWER[2]),
            claude.block_stop(5),
            claude.block_start(6, {"type": "text", "text": "", "citations": []}),
            claude.block_delta(6, {"type": "citations_delta", "citation": citation}),
            claude.text_delta(6, ANSWER[3]),
            claude.block_stop(6),
            claude.message_delta("end_turn", 420, input_tokens=2310),
            claude.message_stop(),
        ]),
    ]  # fmt: skip


async def _paced(parts: list[bytes], gates: list[asyncio.Event]) -> AsyncIterator[bytes]:
    """Each part in small random pieces; the next part only once the test has seen this one on the page."""
    for seed, part in enumerate(parts):
        for piece in split_randomly(part, seed):
            yield piece
        if seed < len(gates):
            await gates[seed].wait()


async def test_the_demo_shows_a_reasoning_models_thinking_then_its_answer_then_its_sources(
    start_server: ServerFactory, chromium: Any
) -> None:
    from playwright.async_api import expect  # here: the chromium fixture says why when Playwright is missing

    async with FakeAnthropic() as fake:
        server = await start_server(
            demo={"enabled": True, "service": "claude", "model": "claude-sonnet-4-5"},
            services={"claude": {"kind": "anthropic", "base_url": fake.base_url}},
        )
        seen_thinking, seen_answer = asyncio.Event(), asyncio.Event()
        fake.enqueue(StreamReply(_paced(_claude_thinking_then_searching(), [seen_thinking, seen_answer]), delay=0))
        page = await chromium.new_page()
        failures: list[str] = []
        page.on("pageerror", lambda error: failures.append(str(error)))
        await page.goto(server.url + "/demo")
        await page.wait_for_selector("body[data-ready='true']", timeout=10_000)
        await ask(page, "What is the weather like in Zürich?")

        answer = page.locator("bf-chat .turn").first
        thinking = answer.get_by_role("group", name="Thinking")
        text = answer.locator(".answer")
        sources = answer.get_by_role("list", name="Sources")
        # The model thinks: its thinking shows, open, and the answer has no word yet.
        await expect(thinking.locator(".thought")).to_have_text("".join(THOUGHT), timeout=10_000)
        await expect(thinking.locator(".thought")).to_be_visible()
        await expect(thinking).to_contain_text("withheld by the provider (redacted)")
        assert await text.text_content() == "" and await sources.count() == 0
        seen_thinking.set()

        # It answers: the first words show, the thinking folds away (still there to open), no sources yet.
        await expect(text).to_have_text("".join(ANSWER[:2]).strip())
        await expect(thinking.locator(".thought")).to_be_hidden()
        assert await sources.count() == 0
        seen_answer.set()

        # It searched and cited: the sources are listed below the answer, as links, each URL once.
        await page.wait_for_selector("bf-chat .turn[data-status='done']", timeout=10_000)
        await expect(text).to_have_text("".join(ANSWER))
        links = sources.get_by_role("link")
        await expect(links).to_have_count(len(SOURCES))
        for link, source in zip(await links.all(), SOURCES, strict=True):
            assert await link.text_content() == source["title"]
            assert await link.get_attribute("href") == source["url"]
            assert await link.get_attribute("target") == "_blank"
            assert await link.get_attribute("rel") == "noopener noreferrer"
        parts = await answer.evaluate("(turn) => [...turn.children].map((part) => part.className)")
        assert parts.index("thinking") < parts.index("answer") < parts.index("sources")  # thinking above, sources below

        await thinking.locator("summary").click()  # the reader opens it again: it stays open
        await expect(thinking.locator(".thought")).to_be_visible()
        sent = (await fake.nth_request(1)).json()
        assert sent["model"] == "claude-sonnet-4-5" and sent["stream"] is True
        assert failures == []

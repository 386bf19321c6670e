"""The demo's screenshots (``python -m tests.browser.screenshots``), as the README and the docs show
them: ``demo.png``, an echo answer streamed into the demo's ``<bf-chat>``, and ``demo-reasoning.png``,
a Claude answer that thought, searched and cited, its thinking opened again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.browser.screenshots import browser_page, serving
from tests.fakes import anthropic_server as claude
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.http_server import StreamReply
from tests.fakes.openai_server import split_randomly

SOURCES = [
    {"url": "https://en.wikipedia.org/wiki/Z%C3%BCrich", "title": "Zürich - Wikipedia"},
    {"url": "https://www.zuerich.com/en/weather", "title": "Weather in Zürich"},
]


async def _ask(page: Any, prompt: str) -> None:
    await page.fill("#prompt", prompt)
    await page.press("#prompt", "Enter")


async def shoot_demo(out_dir: Path) -> None:
    async with serving(demo={"enabled": True}, services={"echo": {"delay_ms": 15}}) as served:
        async with browser_page() as page:
            await page.goto(served.url + "/demo")
            await page.wait_for_selector("body[data-ready='true']", timeout=10_000)
            await _ask(page, "What does bfstream do?")
            await page.wait_for_selector("bf-chat .turn[data-status='done']", timeout=15_000)
            await page.screenshot(path=str(out_dir / "demo.png"), full_page=True)


def _thought_searched_and_cited() -> bytes:
    """Claude with extended thinking and web search, in the shapes of Anthropic's streaming pages:
    thinking, the first words, the search and its results, then the cited rest of the answer."""
    search = {"type": "server_tool_use", "id": "srvtoolu_01WYG3ziw53XMcoyKL4XcZmE", "name": "web_search", "input": {}}
    found = [{"type": "web_search_result", **source, "encrypted_content": "EqgfCioIARgBIiQ3YTAw"} for source in SOURCES]
    cited = {"type": "web_search_result_location", **SOURCES[1], "cited_text": "Zürich has warm summers.",
             "encrypted_index": "Eo8BCioIAhgBIiQyYjQ0OWJmZi1lNm"}  # fmt: skip
    thought = ["The user asks about Zürich's ", "weather; ", "I should search before answering."]
    return b"".join([
        claude.message_start(message_usage=claude.usage(2310, 4)),
        claude.block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        *[claude.block_delta(0, {"type": "thinking_delta", "thinking": piece}) for piece in thought],
        claude.block_delta(0, {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxB"}),
        claude.block_stop(0),
        claude.block_start(1, {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5"}),
        claude.block_stop(1),
        claude.block_start(2, {"type": "text", "text": ""}),
        claude.text_delta(2, "Let me look "),
        claude.text_delta(2, "that up. "),
        claude.block_stop(2),
        claude.block_start(3, search),
        claude.block_delta(3, {"type": "input_json_delta", "partial_json": '{"query": "Zürich weather"}'}),
        claude.block_stop(3),
        claude.block_start(4, {"type": "web_search_tool_result", "tool_use_id": search["id"], "content": found}),
        claude.block_stop(4),
        claude.block_start(5, {"type": "text", "text": ""}),
        claude.text_delta(5, "Zürich is mild: "),
        claude.block_stop(5),
        claude.block_start(6, {"type": "text", "text": "", "citations": []}),
        claude.block_delta(6, {"type": "citations_delta", "citation": cited}),
        claude.text_delta(6, "warm summers, cool winters."),
        claude.block_stop(6),
        claude.message_delta("end_turn", 420, input_tokens=2310),
        claude.message_stop(),
    ])  # fmt: skip


async def shoot_demo_reasoning(out_dir: Path) -> None:
    async with FakeAnthropic() as fake:
        fake.enqueue(StreamReply(split_randomly(_thought_searched_and_cited(), 1), delay=0.002))
        demo = {"enabled": True, "service": "claude", "model": "claude-sonnet-4-5"}
        services = {"claude": {"kind": "anthropic", "base_url": fake.base_url}}
        async with serving(demo=demo, services=services) as served, browser_page() as page:
            await page.goto(served.url + "/demo")
            await page.wait_for_selector("body[data-ready='true']", timeout=10_000)
            await _ask(page, "What is the weather like in Zürich?")
            await page.wait_for_selector("bf-chat .turn[data-status='done']", timeout=15_000)
            turn = page.locator("bf-chat .turn").first
            await turn.locator(".thinking summary").click()  # folded once the answer came: open it
            await turn.locator(".thinking .thought").wait_for(state="visible")
            await page.screenshot(path=str(out_dir / "demo-reasoning.png"), full_page=True)

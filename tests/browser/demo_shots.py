"""The demo's screenshots (``python -m tests.browser.screenshots``), as the README and the docs show
them: ``demo.png``, an echo answer streamed into the demo's ``<bf-chat>``, and ``demo-reasoning.png``,
a Claude answer that thought, searched and cited, its thinking opened again."""

from __future__ import annotations

from pathlib import Path

from tests.browser.screenshots import browser_page, serving
from tests.browser.test_pages import _claude_thinking_then_searching, ask
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.http_server import StreamReply
from tests.fakes.openai_server import split_randomly


async def shoot_demo(out_dir: Path) -> None:
    async with serving(demo={"enabled": True}, services={"echo": {"delay_ms": 15}}) as served:
        async with browser_page() as page:
            await page.goto(served.url + "/demo")
            await page.wait_for_selector("body[data-ready='true']", timeout=10_000)
            await ask(page, "What does bfstream do?")
            await page.wait_for_selector("bf-chat .turn[data-status='done']", timeout=15_000)
            await page.screenshot(path=str(out_dir / "demo.png"), full_page=True)


async def shoot_demo_reasoning(out_dir: Path) -> None:
    async with FakeAnthropic() as fake:
        # The same answer the demo's reasoning test streams: thinking, a search, a cited answer.
        fake.enqueue(StreamReply(split_randomly(b"".join(_claude_thinking_then_searching()), 1), delay=0.002))
        demo = {"enabled": True, "service": "claude", "model": "claude-sonnet-4-5"}
        services = {"claude": {"kind": "anthropic", "base_url": fake.base_url}}
        async with serving(demo=demo, services=services) as served, browser_page() as page:
            await page.goto(served.url + "/demo")
            await page.wait_for_selector("body[data-ready='true']", timeout=10_000)
            await ask(page, "What is the weather like in Zürich?")
            await page.wait_for_selector("bf-chat .turn[data-status='done']", timeout=15_000)
            turn = page.locator("bf-chat .turn").first
            await turn.locator(".thinking summary").click()  # folded once the answer came: open it
            await turn.locator(".thinking .thought").wait_for(state="visible")
            await page.screenshot(path=str(out_dir / "demo-reasoning.png"), full_page=True)

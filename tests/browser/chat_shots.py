"""Screenshots of <bf-chat>, light and dark, for the docs: ``await shoot_chat(out_dir)``.

Not run by the test suite (tests write only into their own directories): the screenshots command
calls it with ``docs/screenshots``. It starts what it needs and stops it again: a bfstream server
on a free port with a data directory of its own, the fake OpenAI server answering with thinking, a
short markdown answer and its sources, a page server, and Chromium; then it writes
``bf-chat-light.png`` and ``bf-chat-dark.png`` into ``out_dir``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.browser.chat_pages import PageServer, chat_page
from tests.browser.screenshots import Served, serving
from tests.fakes.openai_server import FakeOpenAI, StreamReply, chunk, sse

THOUGHT = "The reader wants the steps in order, and a command to copy; a table for the settings."
ANSWER = """### Deploy in three steps

1. Install it: `pip install bfstream`
2. Start it with your config:

```sh
bfstream serve --config bfstream.toml
```

3. Point your page at it with **one tag**.

| setting | default |
|---|---|
| `port` | 8000 |
| `streams.max_per_app` | 20 |

See [the deployment guide](https://example.org/deployment) for more.
"""


def _answer_stream() -> bytes:
    """Thinking (``reasoning_content``), the answer in small pieces, then the end, on OpenAI's wire."""
    pieces = [ANSWER[i : i + 6] for i in range(0, len(ANSWER), 6)]
    body = sse(chunk({"role": "assistant", "content": None, "reasoning_content": THOUGHT}))
    body += b"".join(sse(chunk({"content": piece})) for piece in pieces)
    return body + sse(chunk({}, finish_reason="stop")) + sse("[DONE]")


async def _shoot(context: Any, served: Served, page_url: str, theme: str, path: Path) -> None:
    page = await context.new_page()
    await page.set_viewport_size({"width": 760, "height": 300})
    await page.goto(page_url)
    await page.wait_for_selector("bf-chat[data-ready='true']", timeout=10_000)
    await page.evaluate("(theme) => document.querySelector('bf-chat').setAttribute('theme', theme)", theme)
    await page.evaluate("() => document.querySelector('bf-chat').addMessage('How do I deploy bfstream?')")
    body = {
        "apiKey": served.api_key,
        "channels": ["shots"],
        "actionName": "assistantReceiveResultsStream",
        "service": "model",
        "includeReasoning": True,
        "payload": {"apiKey": "sk-shots", "model": "gpt-4o", "messages": [{"role": "user", "content": "Deploy?"}]},
    }
    (await served.post("/stream/create", body)).raise_for_status()
    await page.wait_for_selector("bf-chat .turn[data-status='done']", timeout=10_000)
    await page.click("bf-chat .thinking summary")  # the reader opens the folded thinking: shown too
    await page.screenshot(path=str(path), full_page=True)
    await page.close()


async def shoot_chat(out_dir: Path) -> list[Path]:
    """Write ``bf-chat-light.png`` and ``bf-chat-dark.png`` into ``out_dir``; their paths."""
    from playwright.async_api import async_playwright

    from tests.browser.conftest import ARGS, CHROMIUM

    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    shots = [out_dir / "bf-chat-light.png", out_dir / "bf-chat-dark.png"]
    async with FakeOpenAI() as fake:
        services = {"model": {"kind": "openai", "base_url": fake.base_url}}
        async with serving("shots", services=services) as served:
            fake.enqueue(StreamReply([_answer_stream()]), StreamReply([_answer_stream()]))
            page_html = chat_page(served.url, {"app": served.app_id, "channel": "shots"}, title="bf-chat")
            page_html = page_html.replace(
                "<bf-chat ",
                '<meta name="color-scheme" content="light dark"><body style="margin:0;padding:16px"><bf-chat ',
            )
            async with PageServer({"/": page_html}) as pages, async_playwright() as playwright:
                for shot, scheme in zip(shots, ["light", "dark"], strict=True):
                    browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
                    context = await browser.new_context(color_scheme=scheme)
                    try:
                        await _shoot(context, served, pages.origin + "/", scheme, shot)
                    finally:
                        await browser.close()
    return shots


if __name__ == "__main__":
    import sys

    print(*asyncio.run(shoot_chat(Path(sys.argv[1] if len(sys.argv) > 1 else "."))), sep="\n")

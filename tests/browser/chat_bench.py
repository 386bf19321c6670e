"""What rendering a long streamed answer costs <bf-chat>'s markdown renderer, per delta, in Chromium.

``python -m tests.browser.chat_bench`` prints it; tests/browser/test_chat_markdown.py runs the same
measurement (checking only that the streamed result is the whole one: timings are not asserted,
the machine is shared). A token is about four characters, so a 20,000-token answer is fed as
20,000 deltas of four characters, each followed by one ``MarkdownView.update`` with the whole
text so far, as the element does. That is the worst case: the element renders at most once per
frame, however many deltas the frame brought.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.browser.chat_pages import PageServer

STATIC = Path(__file__).resolve().parents[2] / "bfstream" / "static"
RENDERER = ["bf-markdown.js", "bf-markdown-blocks.js", "bf-markdown-inline.js"]  # the module and its two parts
BLANK = '<!doctype html><html lang="en"><meta charset="utf-8"><title>bench</title><main id="out"></main></html>'


def long_answer(tokens: int) -> str:
    """A model's long answer: sections of prose, lists, code and tables, ``tokens`` x 4 characters."""
    section = (
        "## Step {n}\n\nThe **{n}th** step reads the `config` and checks each [entry](https://example.org/{n}) "
        "before it writes anything, so a failure leaves the old state in place.\n\n"
        "- open the file\n- parse it, *strictly*\n  - refuse unknown keys\n- write it back\n\n"
        "```python\ndef step_{n}(path):\n    with open(path) as f:\n        return parse(f.read())\n```\n\n"
        "| key | value |\n|-----|-------|\n| retries | {n} |\n| timeout | 30 s |\n\n"
    )
    text, n = "", 0
    while len(text) < tokens * 4:
        n += 1
        text += section.format(n=n)
    return text[: tokens * 4]


def one_code_block(tokens: int) -> str:
    """An answer that is one long code fence: the open block never closes until the end."""
    line = "    total = total + compute(value, index)  # keep going\n"
    body = line * (tokens * 4 // len(line) + 1)
    return ("```python\n" + body)[: tokens * 4] + "\n```\n"


MEASURE = """async ({ text, size }) => {
  const md = await import("/bf-markdown.js");
  const out = document.getElementById("out");
  out.replaceChildren();
  const view = new md.MarkdownView(out);
  const times = [];
  let sofar = "";
  for (let at = 0; at < text.length; at += size) {
    sofar += text.slice(at, at + size); // as bfstream.js's client.text() grows, one delta at a time
    const started = performance.now();
    view.update(sofar);
    times.push(performance.now() - started);
  }
  view.update(text, true);
  const whole = document.createElement("div");
  md.renderMarkdown(text, whole);
  times.sort((a, b) => a - b);
  const total = times.reduce((a, b) => a + b, 0);
  return { deltas: times.length, meanMs: total / times.length, p99Ms: times[Math.floor(times.length * 0.99)],
           maxMs: times.at(-1), totalMs: total, same: out.innerHTML === whole.innerHTML };
}"""


async def measure(page: Any, origin: str, tokens: int = 20_000) -> dict[str, dict[str, Any]]:
    """The cost per delta of a ``tokens``-token answer (mixed, and one long code block) on ``page``."""
    await page.goto(origin + "/")
    results = {}
    for name, text in [("mixed markdown", long_answer(tokens)), ("one code block", one_code_block(tokens))]:
        results[name] = await page.evaluate(MEASURE, {"text": text, "size": 4})
    return results


def pages() -> PageServer:
    return PageServer({"/": BLANK} | {f"/{name}": (STATIC / name).read_text() for name in RENDERER})


async def _main() -> None:
    from playwright.async_api import async_playwright

    from tests.browser.conftest import ARGS, CHROMIUM

    async with pages() as served, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        results = await measure(await browser.new_page(), served.origin)
        await browser.close()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(_main())

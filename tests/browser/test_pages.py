"""The pages bfstream serves, driven in Chromium as a person would: the demo chat and the streams
dashboard. Each takes a screenshot: into the test's own directory, so a run leaves the checkout as it
was, or, with BFSTREAM_SCREENSHOTS=docs/screenshots, where the README shows the demo's."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, ServerFactory

pytestmark = pytest.mark.anyio


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("BFSTREAM_SCREENSHOTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where


TOKEN = "admin-token-for-the-browser-tests"

# Counts how often the answer's text changes: an answer that arrives in one piece changes once.
WATCH_ANSWERS = """() => {
  window.answerChanges = 0;
  new MutationObserver(() => { window.answerChanges += 1; })
    .observe(document.getElementById("conversation"), { childList: true, subtree: true, characterData: true });
}"""


async def ask(page: Any, prompt: str) -> None:
    await page.fill("#prompt", prompt)
    await page.press("#prompt", "Enter")


async def test_the_demo_streams_an_answer_progressively_and_the_stop_button_ends_one(
    start_server: ServerFactory, chromium: Any, screenshots: Path
) -> None:
    server = await start_server(demo={"enabled": True}, services={"echo": {"delay_ms": 15}})
    page = await chromium.new_page()
    failures: list[str] = []
    page.on("pageerror", lambda error: failures.append(str(error)))
    await page.goto(server.url + "/demo")
    await page.wait_for_selector("body[data-ready='true']", timeout=10_000)
    assert await page.text_content("#state") == "open"
    await page.evaluate(WATCH_ANSWERS)

    await ask(page, "What does bfstream do?")
    answer = page.locator("#conversation li.answer").first
    await page.wait_for_selector("#conversation li.answer[data-done='true']", timeout=15_000)
    text = await answer.text_content()
    assert text is not None and text.startswith("You wrote: What does bfstream do? This answer comes from")
    assert text.count(". ") >= 2 and text.endswith("where it was.")  # several sentences, whole
    assert await page.evaluate("() => window.answerChanges") >= 20  # it grew word by word, not at once
    await page.screenshot(path=str(screenshots / "demo.png"), full_page=True)

    await ask(page, " ".join(["long"] * 400))  # some 6 s of words: time to press Stop
    second = page.locator("#conversation li.answer").nth(1)
    await page.wait_for_function(
        "() => (document.querySelectorAll('#conversation li.answer')[1]?.textContent ?? '').length > 40"
    )
    await page.click("#stop")
    await page.wait_for_selector("#conversation li.answer:nth-of-type(4)[data-done='true']", timeout=10_000)
    stopped = await second.text_content()
    assert stopped is not None and stopped.endswith("Stopped") and stopped.count("long") < 400
    assert await page.is_enabled("#send") and not await page.is_enabled("#stop")
    assert failures == []


async def test_the_dashboard_shows_a_running_stream_and_then_its_completion(
    start_server: ServerFactory, chromium: Any, screenshots: Path
) -> None:
    server: Server = await start_server(admin_token=TOKEN, services={"echo": {"delay_ms": 30}})
    page = await chromium.new_page()
    failures: list[str] = []
    page.on("pageerror", lambda error: failures.append(str(error)))
    await page.goto(server.url + "/admin")
    await page.fill("#token", TOKEN)
    await page.click("#login button")
    await page.wait_for_selector("body[data-ready='true']", timeout=10_000)

    body = {
        "apiKey": server.api_key,
        "channels": ["room"],
        "actionName": "onStream",
        "service": "echo",
        "payload": {"model": "echo", "messages": [{"role": "user", "content": " ".join(["word"] * 80)}]},
    }
    stream_id = (await server.post("/stream/create", body)).json()["streamId"]
    row = f"tr[data-stream-id='{stream_id}']"
    await page.wait_for_selector(f"{row}[data-status='running']", timeout=10_000)
    await page.wait_for_function(  # its tokens so far: saved about once a second while it runs
        f"() => /^~[1-9]/.test(document.querySelector(\"{row} td:nth-child(5)\")?.textContent ?? '')",
        timeout=10_000,
    )
    assert await page.is_hidden("#login")  # the token was taken
    await page.screenshot(path=str(screenshots / "dashboard.png"), full_page=True)
    await page.wait_for_selector(f"{row}[data-status='completed']", timeout=15_000)
    cells = await page.locator(f"{row} td").all_text_contents()
    assert cells[1] == "echo / echo" and cells[3] == "completed" and cells[4] == "80"  # the provider's count
    assert failures == []

"""<bf-chat> changing its connection in the middle of an answer, in Chromium against the real server.

The element closes its client and opens another when `channel` (or any connection attribute)
changes. The answer it was showing must then say it is no longer followed, without a Stop that
does nothing, and come back to life should the new connection bring its events again; and an
answer's render scheduled just before the change must neither throw nor lose the text shown.
The answers come from the echo service, slow enough (25 ms a word) to change the channel mid-way.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser import test_chat
from tests.browser.chat_pages import TURNS, PageServer
from tests.browser.test_chat import answer_contains, open_chat, start_echo_stream
from tests.conftest import Server

pytestmark = pytest.mark.anyio

chat_server, pages = test_chat.chat_server, test_chat.pages  # its fixtures: the server and the page of the element

TEXT = " ".join(f"w{i}" for i in range(160))


async def set_channel(page: Any, channel: str) -> None:
    await page.evaluate("(channel) => document.querySelector('bf-chat').setAttribute('channel', channel)", channel)


async def test_an_answer_of_the_old_channel_is_marked_left_and_followed_again_on_return(
    chat_server: Server, chromium: Any, pages: PageServer
) -> None:
    page, problems = await open_chat(chromium, pages)
    stream_id = await start_echo_stream(chat_server, TEXT)
    await answer_contains(page, "w10")
    await set_channel(page, "elsewhere")

    turn = page.locator(f"bf-chat .turn[data-stream-id='{stream_id}']")
    await turn.and_(page.locator("bf-chat .turn[data-status='left']")).wait_for(timeout=10_000)
    assert await turn.get_attribute("aria-busy") is None
    assert await turn.locator(".stop").count() == 0
    assert await turn.locator(".note").all_text_contents() == ["No longer followed: the chat changed its connection"]
    await page.evaluate("() => document.querySelector('bf-chat').stop()")  # nothing running here to stop
    assert (await page.evaluate(TURNS))[0]["text"].startswith("w0 w1 w2")

    await set_channel(page, "room")  # back: the new connection's catch-up brings the answer again
    await turn.and_(page.locator("bf-chat .turn[data-status='done']")).wait_for(timeout=20_000)
    assert await page.evaluate(TURNS) == [{"status": "done", "streamId": stream_id, "text": TEXT}]
    assert await turn.locator(".note").count() == 0 and await turn.get_attribute("aria-busy") is None
    assert problems == []


# Right after a delta scheduled its render, the page changes the channel: the render then runs while
# the element has no client (or already the new one, which has never seen this stream).
SWITCH_ON_A_DELTA = """() => {
  const chat = document.querySelector("bf-chat");
  chat.addEventListener("bf-event", (event) => {
    const text = chat.client.text(event.detail.streamId);
    if (window.moved || event.detail.type !== "delta" || !text.includes("w10 ")) return;
    window.moved = { renders: chat.renderStats.renders, text };
    chat.setAttribute("channel", "elsewhere");
  });
}"""


async def test_a_render_scheduled_before_the_connection_changes_keeps_the_text_and_throws_nothing(
    chat_server: Server, chromium: Any, pages: PageServer
) -> None:
    page, problems = await open_chat(chromium, pages)
    await page.evaluate(SWITCH_ON_A_DELTA)
    await start_echo_stream(chat_server, TEXT)
    await page.wait_for_function(
        "() => window.moved && document.querySelector('bf-chat').renderStats.renders > window.moved.renders",
        timeout=10_000,
    )
    moved = await page.evaluate("() => window.moved")
    [turn] = await page.evaluate(TURNS)
    assert turn["text"] == moved["text"].strip()  # the text it had, rendered: neither thrown away nor grown
    await page.locator("bf-chat .turn[data-status='left']").wait_for(timeout=10_000)
    assert problems == []

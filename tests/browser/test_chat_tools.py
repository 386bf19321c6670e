"""<bf-chat>'s tool cards say what happened to a ui_* call as far as the page can know it, in Chromium
against the real server: "answered" only when this page's handler answered it; "timed out" once the
call's time ran out with the stream still waiting; "not answered here" when the stream went on past
a call another page (or nobody this page can see) answered. The model is the fake OpenAI server:
its first turn calls the tool, its second answers in text.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser import test_chat
from tests.browser.chat_pages import PageServer
from tests.browser.test_chat import open_chat, start_openai_stream, wait_for_end
from tests.conftest import Server
from tests.fakes.openai_server import FakeOpenAI, StreamReply, text_stream, tool_call_stream

pytestmark = pytest.mark.anyio

chat_server, pages = test_chat.chat_server, test_chat.pages  # its fixtures: the server and the page of the element

NO_HANDLER = {
    "type": "function",
    "function": {"name": "ui_nohandler", "description": "A tool no page answers", "parameters": {"type": "object"}},
}

# Every state the page's card went through, in order, read from the mutations of its data-state
# (each record holds the value before it; the card's value now is the last): a card must never pass
# through "answered".
WATCH_CARDS = """() => {
  const root = document.querySelector("bf-chat").shadowRoot;
  const before = [];
  new MutationObserver((records) => {
    for (const record of records) if (record.oldValue !== null) before.push(record.oldValue);
  }).observe(root, { subtree: true, attributes: true, attributeOldValue: true, attributeFilter: ["data-state"] });
  window.cardStates = () => [...before, root.querySelector(".tool")?.dataset.state];
}"""


async def card_of(page: Any) -> dict[str, Any]:
    card = page.locator("bf-chat .tool")
    return {"state": await card.get_attribute("data-state"), "text": await card.locator(".state").text_content()}


async def tool_message(fake_openai: FakeOpenAI) -> dict[str, Any]:
    sent = (await fake_openai.nth_request(2, timeout=15)).json()
    return json.loads(next(m for m in sent["messages"] if m["role"] == "tool")["content"])


async def test_a_call_no_page_answered_shows_timed_out_never_answered(
    chat_server: Server, fake_openai: FakeOpenAI, chromium: Any, pages: PageServer
) -> None:
    fake_openai.enqueue(
        StreamReply([tool_call_stream([("call_1", "ui_nohandler", "{}")])]),
        StreamReply([text_stream(["Nobody ", "answered."])]),
    )
    page, problems = await open_chat(chromium, pages)
    await page.evaluate(WATCH_CARDS)
    await start_openai_stream(chat_server, toolTimeout=1, payload={"tools": [NO_HANDLER]})
    await page.wait_for_selector("bf-chat .tool[data-state='waiting']", timeout=10_000)
    await wait_for_end(page)

    assert await tool_message(fake_openai) == {
        "success": False,
        "message": "The tool ui_nohandler did not respond within 1 s",
    }
    assert await card_of(page) == {"state": "timeout", "text": "timed out"}
    assert await page.evaluate("() => window.cardStates()") == ["waiting", "timeout"]
    assert await page.locator("bf-chat .answer").text_content() == "Nobody answered."
    assert problems == []


async def test_a_call_another_page_answered_is_not_shown_as_answered_here(
    chat_server: Server, fake_openai: FakeOpenAI, chromium: Any, pages: PageServer
) -> None:
    fake_openai.enqueue(
        StreamReply([tool_call_stream([("call_1", "ui_nohandler", "{}")])]),
        StreamReply([text_stream(["The other ", "page did it."])]),
    )
    bystander, seen = await open_chat(chromium, pages)
    await bystander.evaluate(WATCH_CARDS)
    answering, problems = await open_chat(chromium, pages)
    await answering.evaluate("""() => document.querySelector("bf-chat").onToolCall("nohandler",
      () => ({ success: true, message: "done by the other page" }))""")
    await start_openai_stream(chat_server, toolTimeout=30, payload={"tools": [NO_HANDLER]})
    await wait_for_end(bystander)
    await wait_for_end(answering)

    assert (await tool_message(fake_openai))["message"] == "done by the other page"
    assert await card_of(answering) == {"state": "answered", "text": "answered"}
    assert await card_of(bystander) == {"state": "unanswered", "text": "not answered here"}
    assert await bystander.evaluate("() => window.cardStates()") == ["waiting", "unanswered"]
    assert problems == [] and seen == []


async def test_a_handler_that_answers_after_the_timeout_leaves_its_card_timed_out(
    chat_server: Server, fake_openai: FakeOpenAI, chromium: Any, pages: PageServer
) -> None:
    fake_openai.enqueue(
        StreamReply([tool_call_stream([("call_1", "ui_nohandler", "{}")])]),
        StreamReply([text_stream(["Too ", "slow."])]),
    )
    page, problems = await open_chat(chromium, pages)
    await page.evaluate(WATCH_CARDS)
    # The handler answers only when the test says so: after the stream has gone on without it.
    await page.evaluate("""() => document.querySelector("bf-chat").onToolCall("nohandler",
      () => new Promise((resolve) => { window.answerNow = () => resolve({ success: true, message: "late" }); }))""")
    await start_openai_stream(chat_server, toolTimeout=1, payload={"tools": [NO_HANDLER]})
    await wait_for_end(page)
    assert (await tool_message(fake_openai))["message"] == "The tool ui_nohandler did not respond within 1 s"
    # Its answer now, and a task later, once the element has had it:
    await page.evaluate("async () => { window.answerNow(); await new Promise((done) => setTimeout(done)); }")
    assert await card_of(page) == {"state": "timeout", "text": "timed out"}
    assert await page.evaluate("() => window.cardStates()") == ["waiting", "running", "timeout"]
    assert problems == []

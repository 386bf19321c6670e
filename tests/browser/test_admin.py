"""The streams dashboard (``/admin``) in Chromium, as an operator uses it: the list of streams, a
stream opened to watch its events come, failed streams and refused calls with their errors, and the
words a wrong token gets."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import PROVIDER_KEY, Server, ServerFactory
from tests.fakes.openai_server import FakeOpenAI, StreamReply, chunk, sse, stream_error, tool_call_stream

pytestmark = pytest.mark.anyio

TOKEN = "admin-token-for-the-browser-tests"


def echo_body(server: Server, words: int) -> dict[str, Any]:
    return {
        "apiKey": server.api_key,
        "channels": ["room"],
        "actionName": "onStream",
        "service": "echo",
        "payload": {"model": "echo", "messages": [{"role": "user", "content": " ".join(["word"] * words)}]},
    }


async def open_dashboard(chromium: Any, server: Server, token: str = TOKEN) -> Any:
    """The dashboard, signed in with ``token``; page errors are collected in ``page.failures``."""
    page = await chromium.new_page()
    page.failures = []
    page.on("pageerror", lambda error: page.failures.append(str(error)))
    await page.goto(server.url + "/admin")
    await page.fill("#token", token)
    await page.click("#login button")
    return page


async def test_the_dashboard_shows_a_running_stream_and_then_its_completion(
    start_server: ServerFactory, chromium: Any
) -> None:
    server: Server = await start_server(admin_token=TOKEN, services={"echo": {"delay_ms": 30}})
    page = await open_dashboard(chromium, server)
    await page.wait_for_selector("body[data-ready='true']", timeout=10_000)

    stream_id = (await server.post("/stream/create", echo_body(server, 80))).json()["streamId"]
    row = f"tr[data-stream-id='{stream_id}']"
    await page.wait_for_selector(f"{row}[data-status='running']", timeout=10_000)
    await page.wait_for_function(  # its tokens so far: saved about once a second while it runs
        f"() => /^~[1-9]/.test(document.querySelector(\"{row} td:nth-child(6)\")?.textContent ?? '')",
        timeout=10_000,
    )
    assert await page.is_hidden("#login")  # the token was taken
    headers = await page.locator(f"section.app[data-app-id='{server.app_id}'] thead th").all_text_contents()
    assert headers == ["Stream", "Started", "Service / model", "Channels", "Status", "Tokens", "Tokens/s",
                       "Duration", "Finish"]  # fmt: skip
    await page.wait_for_selector(f"{row}[data-status='completed']", timeout=15_000)
    cells = await page.locator(f"{row} td").all_text_contents()
    assert cells[0] == stream_id[:12] and cells[2] == "echo / echo" and cells[4] == "completed"
    assert cells[5] == "80" and cells[8] == "stop"  # the provider's count, and how it finished
    assert await page.evaluate("(text) => /\\d/.test(text)", cells[1])  # its start time
    assert page.failures == []


async def test_a_stream_opened_from_the_list_shows_its_events_live_as_they_come(
    start_server: ServerFactory, chromium: Any
) -> None:
    from playwright.async_api import expect  # here: the chromium fixture says why when Playwright is missing

    server = await start_server(admin_token=TOKEN, services={"echo": {"delay_ms": 40}})
    page = await open_dashboard(chromium, server)
    stream_id = (await server.post("/stream/create", echo_body(server, 120))).json()["streamId"]
    await page.click(f"tr[data-stream-id='{stream_id}'] a")  # its id, in the list

    view = page.locator(f"#stream[data-stream-id='{stream_id}']")
    await expect(view).to_be_visible()
    await expect(view).to_have_attribute("data-status", "running", timeout=10_000)
    await page.wait_for_function("() => document.querySelector('#stream .answer-text').textContent.length > 0")
    await page.evaluate("""() => {
      window.answerChanges = 0;
      const watched = { childList: true, subtree: true, characterData: true };
      new MutationObserver(() => { window.answerChanges += 1; })
        .observe(document.querySelector("#stream .answer-text"), watched);
    }""")  # fmt: skip
    assert await page.is_hidden("#list")

    await expect(view).to_have_attribute("data-closed", "true", timeout=20_000)
    assert await view.get_attribute("data-status") == "completed"
    assert await page.evaluate("() => window.answerChanges") >= 10  # it grew while the stream ran
    text = await view.locator(".answer-text").text_content()
    ended = await server.post("/stream/status", {"apiKey": server.api_key, "streamId": stream_id})
    assert text == ended.json()["text"] and text.count("word") == 120  # whole, each word once

    kinds = await view.get_by_role("table", name="Events").locator("tbody td:nth-child(3)").all_text_contents()
    assert (
        kinds[0] == "threadInfo" and kinds[-1] == "end" and kinds[1].startswith("delta \u00d7 ")
    )  # the deltas: one line
    await expect(view.get_by_role("table", name="Tool calls").locator("tbody")).to_have_text("No tool calls")

    await page.click("#stream a.back")
    await page.wait_for_selector(f"#list tr[data-stream-id='{stream_id}'][data-status='completed']")
    assert await page.is_hidden("#stream") and page.failures == []


async def test_a_failed_stream_is_listed_with_its_error_and_its_view_shows_the_tool_call_and_error(
    start_server: ServerFactory, fake_openai: FakeOpenAI, chromium: Any
) -> None:
    """A model calls a ui_* tool no page answers (a one-second toolTimeout), then breaks off."""
    from playwright.async_api import expect

    server = await start_server(admin_token=TOKEN)
    markup = "<img src=x onerror=window.injected=1> <b>bold</b>"  # a model's text is shown, never run
    head = sse(chunk({"role": "assistant", "content": "No form came back, " + markup}))
    fake_openai.enqueue(
        StreamReply([tool_call_stream([("call_form1", "ui_show_form", '{"title":"Hi"}')])]),
        StreamReply([head, stream_error("The server had an error while processing your request.")]),
    )
    body = {
        "apiKey": server.api_key,
        "channels": ["room"],
        "actionName": "onStream",
        "service": "openai",
        "toolTimeout": 1,
        "payload": {
            "apiKey": PROVIDER_KEY,
            "stream": True,
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "Help me sign up"}],
            "tools": [{"type": "function", "function": {"name": "ui_show_form", "parameters": {"type": "object"}}}],
        },
    }
    stream_id = (await server.post("/stream/create", body)).json()["streamId"]
    page = await open_dashboard(chromium, server)

    failed = page.get_by_role("table", name="Failed streams of test").locator(f"tr[data-stream-id='{stream_id}']")
    await expect(failed).to_contain_text("The server had an error while processing your request.", timeout=15_000)
    await failed.get_by_role("link").click()

    view = page.locator(f"#stream[data-stream-id='{stream_id}']")
    await expect(view).to_have_attribute("data-closed", "true", timeout=10_000)
    await expect(view.get_by_role("alert")).to_contain_text("The server had an error while processing your request.")
    await expect(view.locator(".answer-text")).to_have_text("No form came back, " + markup)
    assert await view.locator(".answer-text *").count() == 0 and await page.evaluate("() => window.injected") is None
    call = view.get_by_role("table", name="Tool calls").locator("tbody tr")
    await expect(call).to_have_count(1)
    name, kind, round_, duration, outcome = await call.locator("td").all_text_contents()
    assert (name, kind, round_, outcome) == ("ui_show_form", "frontend", "1", "timeout")
    assert duration.endswith(" ms") and 900 <= int(duration.removesuffix(" ms")) < 5000  # the second it waited
    assert await view.get_attribute("data-status") == "failed" and page.failures == []


async def test_a_refused_call_appears_in_the_list_of_refused_calls(start_server: ServerFactory, chromium: Any) -> None:
    from playwright.async_api import expect

    server = await start_server(admin_token=TOKEN)
    page = await open_dashboard(chromium, server)
    await page.wait_for_selector("body[data-ready='true']", timeout=10_000)
    wrong_key = "sk_not_a_key_" + "x" * 24
    refused = await server.post("/stream/create", {**echo_body(server, 3), "apiKey": wrong_key})
    assert refused.status_code == 401

    listed = page.get_by_role("table", name="Refused calls").locator("tbody tr[data-path='/stream/create']")
    await expect(listed).to_have_count(1, timeout=10_000)
    cells = await listed.locator("td").all_text_contents()
    assert cells[1:] == ["/stream/create", "401", "Invalid or missing apiKey"]
    assert wrong_key not in await page.content() and page.failures == []


async def test_a_wrong_token_is_told_in_plain_words_and_the_right_one_then_opens_the_dashboard(
    start_server: ServerFactory, chromium: Any
) -> None:
    from playwright.async_api import expect

    server = await start_server(admin_token=TOKEN)
    page = await open_dashboard(chromium, server, token="not-the-token")
    problem = page.get_by_role("alert")
    await expect(problem).to_have_text(
        "That admin token is not the one this server has. Check admin_token (BFSTREAM_ADMIN_TOKEN) in its "
        "settings and type it again."
    )
    assert await page.is_visible("#login") and await page.text_content("#updated") == "not connected"
    assert await page.evaluate("() => sessionStorage.length") == 0  # a wrong token is not kept

    await page.fill("#token", TOKEN)
    await page.click("#login button")
    await page.wait_for_selector("body[data-ready='true']", timeout=10_000)
    await expect(problem).to_have_text("")
    assert await page.is_hidden("#login") and page.failures == []


async def test_refused_calls_show_their_details_as_text_whatever_their_shape(
    start_server: ServerFactory, chromium: Any
) -> None:
    from playwright.async_api import expect

    server = await start_server(admin_token=TOKEN)
    page = await open_dashboard(chromium, server)
    await page.wait_for_selector("body[data-ready='true']", timeout=10_000)
    # An unknown service: its details are the names of the services there are, as strings.
    response = await server.post("/stream/create", {**echo_body(server, 3), "service": "<b>nonesuch</b>"})
    unknown = response.json()["error"]
    assert response.status_code == 400 and all(isinstance(name, str) for name in unknown["details"])
    # A body with a field at fault: its details are [{field, message}].
    response = await server.post("/stream/create", {**echo_body(server, 3), "channels": []})
    bad_field = response.json()["error"]
    assert response.status_code == 400 and all("field" in detail for detail in bad_field["details"])

    rows = page.get_by_role("table", name="Refused calls").locator("tbody tr[data-path='/stream/create']")
    await expect(rows).to_have_count(2, timeout=10_000)
    newest, oldest = [await row.locator("td").nth(3).text_content() for row in await rows.all()]
    assert oldest == f"{unknown['message']} ({', '.join(unknown['details'])})"
    fields = "; ".join(f"{detail['field']}: {detail['message']}" for detail in bad_field["details"])
    assert newest == f"{bad_field['message']} ({fields})"
    assert "undefined" not in (newest + oldest)
    assert await page.locator("#refused b").count() == 0  # a service name is text, never markup
    assert page.failures == []


async def test_any_shape_of_details_reads_as_one_line_of_text(start_server: ServerFactory, chromium: Any) -> None:
    server = await start_server(admin_token=TOKEN)
    page = await chromium.new_page()
    await page.goto(server.url + "/admin")
    shapes = [
        ["anthropic", "echo"],
        [{"field": "channels", "message": "at least one"}, {"field": "model", "message": "required"}],
        [{"message": "no field"}, "a string", 3, None, {"code": 7}],
        {"field": ["payload", "tools", 0], "message": "not a tool"},
        {"limit": 5, "window": "1 min"},
        "just a string",
        [],
        None,
    ]
    texts = await page.evaluate(
        "async (shapes) => { const { detailsText } = await import('/static/admin-dom.js');"
        " return shapes.map(detailsText); }",
        shapes,
    )
    assert texts == [
        "anthropic, echo",
        "channels: at least one; model: required",
        'no field; a string; 3; null; {"code":7}',
        '["payload","tools",0]: not a tool',
        '{"limit":5,"window":"1 min"}',
        "just a string",
        "",
        "",
    ]

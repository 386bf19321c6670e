"""The dashboard's screenshots (``python -m tests.browser.screenshots``): ``dashboard.png``, the list
with a running, a completed and a failed stream and a refused call, and ``dashboard-stream.png``, one
stream opened: a Claude answer that thinks, calls a ``ui_*`` tool a page answers, then answers with a
source."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from tests.browser.screenshots import Served, browser_page, serving
from tests.browser.test_tools import SHOW_FORM
from tests.fakes import anthropic_server as claude
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.http_server import StreamReply
from tests.secret_scan import PROVIDER_KEY

TOKEN = "admin-token-for-the-screenshots"


def _ask(served: Served, service: str, question: str, **more: Any) -> dict[str, Any]:
    payload = {"apiKey": PROVIDER_KEY, "stream": True, "messages": [{"role": "user", "content": question}]}
    model = "echo" if service == "echo" else "claude-sonnet-4-5"
    return {
        "apiKey": served.api_key,
        "channels": ["support"],
        "actionName": "onAnswer",
        "service": service,
        "payload": {**payload, "model": model, **more.pop("payload", {})},
        **more,
    }


async def _started(served: Served, body: dict[str, Any]) -> str:
    answer = await served.post("/stream/create", body)
    answer.raise_for_status()
    return answer.json()["streamId"]


async def _events(served: Served, stream_id: str) -> list[dict[str, Any]]:
    answer = await served.http.get(
        f"{served.url}/admin/api/streams/{stream_id}/events", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    answer.raise_for_status()
    return answer.json()["events"]


async def _until_ended(served: Served, stream_id: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not any(event["type"] == "end" for event in await _events(served, stream_id)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"stream {stream_id} did not end")
        await asyncio.sleep(0.1)


async def _sign_in(page: Any, served: Served, where: str = "") -> None:
    await page.goto(f"{served.url}/admin{where}")
    await page.fill("#token", TOKEN)
    await page.click("#login button")


async def shoot_dashboard(out_dir: Path) -> None:
    async with (
        FakeAnthropic() as fake,
        serving(admin_token=TOKEN, services={"echo": {"delay_ms": 30}, "claude": _claude(fake)}) as served,
    ):
        done = await _started(served, _ask(served, "echo", "Which sizes does the jacket come in?"))
        await _until_ended(served, done)
        overloaded = [claude.message_start(), *_text(0, ["Our return ", "policy "])]
        fake.enqueue(StreamReply([*overloaded, claude.error_event("overloaded_error", "Overloaded")]))
        failed = await _started(served, _ask(served, "claude", "What is your return policy?"))
        await _until_ended(served, failed)
        await served.post("/stream/create", {**_ask(served, "echo", "Hello"), "apiKey": "sk-typo"})  # refused
        running = await _started(served, _ask(served, "echo", " ".join(["Tell me about the jacket."] * 60)))
        async with browser_page() as page:
            await _sign_in(page, served)
            row = f"tr[data-stream-id='{running}']"
            await page.wait_for_function(  # its tokens so far, saved about once a second
                f"() => /^~[1-9]/.test(document.querySelector(\"{row} td:nth-child(6)\")?.textContent ?? '')",
                timeout=15_000,
            )
            await page.screenshot(path=str(out_dir / "dashboard.png"), full_page=True)


def _text(index: int, parts: list[str]) -> list[bytes]:
    return [
        claude.block_start(index, {"type": "text", "text": ""}),
        *[claude.text_delta(index, part) for part in parts],
        claude.block_stop(index),
    ]


def _claude(fake: FakeAnthropic) -> dict[str, Any]:
    return {"kind": "anthropic", "base_url": fake.base_url}


def _thinking_then_form() -> list[bytes]:
    thought = ["The customer wants an account. ", "The sign-up form ", "asks for everything needed."]
    call = {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "ui_show_form", "input": {}}
    return [
        claude.message_start(message_usage=claude.usage(812, 4)),
        claude.block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        *[claude.block_delta(0, {"type": "thinking_delta", "thinking": piece}) for piece in thought],
        claude.block_delta(0, {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxB"}),
        claude.block_stop(0),
        *_text(1, ["I'll open ", "the sign-up form ", "for you. "]),
        claude.block_start(2, call),
        claude.block_delta(2, {"type": "input_json_delta", "partial_json": '{"title": "Create your account"}'}),
        claude.block_stop(2),
        claude.message_delta("tool_use", 61),
        claude.message_stop(),
    ]


def _answer_with_source() -> list[bytes]:
    source = {
        "type": "web_search_result_location",
        "url": "https://shop.example/help/accounts",
        "title": "Accounts - Help",
        "cited_text": "Accounts are free.",
        "encrypted_index": "Eo8BCioIAhgBIiQyYjQ0",
    }
    words = "Thanks! Your account is ready: you can track orders, save addresses and check out faster. "
    return [
        claude.message_start(message_usage=claude.usage(902, 2)),
        claude.block_start(0, {"type": "text", "text": "", "citations": []}),
        claude.block_delta(0, {"type": "citations_delta", "citation": source}),
        *[claude.text_delta(0, piece) for piece in claude.fragments(words + "Accounts are free.", 6)],
        claude.block_stop(0),
        claude.message_delta("end_turn", 38, input_tokens=902),
        claude.message_stop(),
    ]


async def _answer_the_form(served: Served, stream_id: str) -> None:
    """What the page's handler would do: answer the tool call (the stream id is the capability)."""
    deadline = time.monotonic() + 15
    while not (calls := [e for e in await _events(served, stream_id) if e["type"] == "tool_call"]):
        if time.monotonic() > deadline:
            raise TimeoutError("no tool_call came")
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.4)  # the time a person takes to fill it in, shown as the call's duration
    result = {"success": True, "message": "The customer signed up", "data": {"email": "ada@example.com"}}
    answered = await served.post(
        "/llm/tool-response", {"streamId": stream_id, "toolCallId": calls[0]["toolCallId"], "result": result}
    )
    answered.raise_for_status()


async def shoot_dashboard_stream(out_dir: Path) -> None:
    async with FakeAnthropic() as fake, serving(admin_token=TOKEN, services={"claude": _claude(fake)}) as served:
        fake.enqueue(StreamReply(_thinking_then_form(), delay=0.05), StreamReply(_answer_with_source(), delay=0.05))
        body = _ask(served, "claude", "I'd like to open an account.", includeReasoning=True)
        body["payload"]["tools"] = [SHOW_FORM]
        stream_id = await _started(served, body)
        async with browser_page() as page:
            await _sign_in(page, served, f"#stream/{stream_id}")  # open while it runs: the view follows it
            await _answer_the_form(served, stream_id)
            await page.wait_for_selector("#stream[data-closed='true']", timeout=20_000)
            await page.screenshot(path=str(out_dir / "dashboard-stream.png"), full_page=True)

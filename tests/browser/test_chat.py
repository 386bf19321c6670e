"""<bf-chat> in Chromium against the real server: a page holding only the element and its script tag.

Each test serves its page from an origin of its own (tests/browser/chat_pages.py), starts a stream
from the test as an app's back end would (POST /stream/create to the element's channel and action),
and reads the element's shadow DOM. The model is the fake OpenAI server (its wire format byte for
byte), or the echo service for answers that must last long enough to stop, reload or cut.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.browser.chat_pages import TURNS, PageServer, chat_page, watch_page
from tests.browser.test_tools import SHOW_FORM
from tests.conftest import PROVIDER_KEY, Server, ServerFactory, WSClient
from tests.fakes.openai_server import FakeOpenAI, StreamReply, chunk, sse, text_stream, tool_call_stream
from tests.services import Proxy

pytestmark = pytest.mark.anyio

ACTION = "assistantReceiveResultsStream"
CHANNEL = "room"

MARKDOWN = """## Plan for the release

Ship it **today**, with *care* and `bfstream serve`.

- write the notes
- tag the version
  - sign it

```python
def greet(name):
    return f"hello {name}"
```

| step | owner |
|------|-------|
| build | Ann |
| ship | Bo |

Read [the docs](https://example.org/docs) first.
"""


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


async def start_openai_stream(server: Server, **extra: Any) -> str:
    body = {
        "apiKey": server.api_key,
        "channels": [CHANNEL],
        "actionName": ACTION,
        "service": "openai",
        "payload": {
            "apiKey": PROVIDER_KEY,
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "Plan the release"}],
            **extra.pop("payload", {}),
        },
        **extra,
    }
    response = await server.post("/stream/create", body)
    assert response.status_code == 200, response.text
    return response.json()["streamId"]


async def start_echo_stream(server: Server, text: str) -> str:
    body = {
        "apiKey": server.api_key,
        "channels": [CHANNEL],
        "actionName": ACTION,
        "service": "echo",
        "payload": {"model": "echo", "messages": [{"role": "user", "content": text}]},
    }
    response = await server.post("/stream/create", body)
    assert response.status_code == 200, response.text
    return response.json()["streamId"]


async def open_chat(chromium: Any, pages: PageServer, path: str = "/") -> tuple[Any, list[str]]:
    page = await chromium.new_page()
    problems = watch_page(page)
    await page.goto(pages.origin + path)
    await page.wait_for_selector("bf-chat[data-ready='true']", timeout=10_000)
    return page, problems


async def turns(page: Any) -> list[dict[str, Any]]:
    return await page.evaluate(TURNS)


async def answer_contains(page: Any, words: str) -> None:
    await page.wait_for_function(
        "(words) => document.querySelector('bf-chat').shadowRoot.querySelector('.answer')?.textContent.includes(words)",
        arg=words,
    )


async def wait_for_end(page: Any, timeout: float = 15) -> None:
    await page.wait_for_selector("bf-chat .turn:not([data-status='running'])", timeout=timeout * 1000)


@pytest.fixture
async def chat_server(start_server: ServerFactory) -> Server:
    return await start_server(services={"echo": {"delay_ms": 25}})


@pytest.fixture
async def pages(chat_server: Server) -> AsyncIterator[PageServer]:
    async with PageServer({"/": chat_page(chat_server.url, {"app": chat_server.app_id, "channel": CHANNEL})}) as served:
        yield served


async def test_a_page_with_only_the_element_renders_a_streamed_markdown_answer(
    chat_server: Server, fake_openai: FakeOpenAI, chromium: Any, pages: PageServer
) -> None:
    fake_openai.enqueue(StreamReply([text_stream(pieces(MARKDOWN, 3))], delay=0.004))
    page, problems = await open_chat(chromium, pages)
    # The heading's node, kept once the text has moved past it (the list has begun): a finished
    # block is rendered once and left alone while the rest of the answer streams in.
    keep_heading = """() => new Promise((resolve) => {
      const root = document.querySelector("bf-chat").shadowRoot;
      const look = () => { const h = root.querySelector(".answer h2");
                           if (h && root.querySelector(".answer ul")) { window.firstHeading = h; resolve(); }
                           else requestAnimationFrame(look); };
      look();
    })"""
    waiting = asyncio.ensure_future(page.evaluate(keep_heading))
    await start_openai_stream(chat_server)
    await waiting
    await wait_for_end(page)

    answer = page.locator("bf-chat .answer")
    assert await answer.locator("h2").text_content() == "Plan for the release"
    assert await answer.locator("p strong").text_content() == "today"
    assert await answer.locator("p em").text_content() == "care"
    assert await answer.locator("p code").text_content() == "bfstream serve"
    assert await answer.locator(":scope > ul > li").all_text_contents() == ["write the notes", "tag the versionsign it"]
    assert await answer.locator("ul ul > li").text_content() == "sign it"
    code = answer.locator("pre code.language-python")
    assert await code.text_content() == 'def greet(name):\n    return f"hello {name}"'
    assert await answer.locator("table th").all_text_contents() == ["step", "owner"]
    assert await answer.locator("table tbody td").all_text_contents() == ["build", "Ann", "ship", "Bo"]
    link = answer.locator("a")
    assert await link.text_content() == "the docs"
    assert await link.get_attribute("href") == "https://example.org/docs"
    assert await link.get_attribute("rel") == "noopener noreferrer nofollow"
    assert await page.evaluate("() => window.firstHeading.isConnected && window.firstHeading.textContent")
    assert (await turns(page))[0]["status"] == "done"
    assert await page.locator("bf-chat .stop").count() == 0  # no stop button once it has ended
    assert await page.get_attribute("bf-chat", "state") == "open"
    assert problems == []


XSS = (
    "Look: <img src=x onerror=\"window.pwned='img'\"> and <script>window.pwned='script'</script> "
    "and [click me](javascript:window.pwned='link') and <!-- a comment --> and ![pic](javascript:alert(1)).\n\n"
    '<div onclick="window.pwned=1">raw block</div>\n'
)


async def test_html_in_an_answer_is_shown_as_text_never_run(
    chat_server: Server, fake_openai: FakeOpenAI, chromium: Any, pages: PageServer
) -> None:
    fake_openai.enqueue(StreamReply([text_stream(pieces(XSS, 5))]))
    page, problems = await open_chat(chromium, pages)
    await start_openai_stream(chat_server)
    await wait_for_end(page)

    answer = page.locator("bf-chat .answer")
    text = await answer.text_content()
    assert text is not None
    shown = ["<img src=x onerror=", "<script>window.pwned='script'</script>", "<!-- a comment -->"]
    shown += ["[click me](javascript:window.pwned='link')", '<div onclick="window.pwned=1">raw block</div>']
    for raw in shown:
        assert raw in text
    for tag in ["img", "script", "a", "div[onclick]", "iframe"]:
        assert await answer.locator(tag).count() == 0, tag
    assert await page.evaluate("() => window.pwned") is None
    assert await page.evaluate(
        "() => [...document.querySelector('bf-chat').shadowRoot.querySelectorAll('*')]"
        ".some((node) => [...node.attributes].some((a) => a.name.startsWith('on')))"
    ) is False  # fmt: skip
    assert problems == []


def reasoning_then_answer(thought: list[str], answer: list[str]) -> list[bytes]:
    """DeepSeek's shape on OpenAI's wire: ``reasoning_content`` deltas, then ``content`` ones."""
    head = sse(chunk({"role": "assistant", "content": None, "reasoning_content": ""}))
    thinking = b"".join(sse(chunk({"reasoning_content": piece})) for piece in thought)
    words = b"".join(sse(chunk({"content": piece})) for piece in answer)
    tail = sse(chunk({}, finish_reason="stop")) + sse("[DONE]")
    return [head + thinking, words + tail]


async def test_the_models_thinking_shows_in_its_block_before_the_answer(
    chat_server: Server, fake_openai: FakeOpenAI, chromium: Any, pages: PageServer
) -> None:
    from playwright.async_api import expect

    seen_thinking = asyncio.Event()

    async def paced() -> AsyncIterator[bytes]:
        first, second = reasoning_then_answer(["Weighing ", "the **options**."], ["It is ", "*fine*."])
        yield first
        await seen_thinking.wait()
        yield second

    fake_openai.enqueue(StreamReply(paced()))
    page, problems = await open_chat(chromium, pages)
    await start_openai_stream(chat_server, includeReasoning=True)

    thinking = page.locator("bf-chat details.thinking")
    await expect(thinking.locator(".thought")).to_have_text("Weighing the **options**.", timeout=10_000)
    await expect(thinking.locator(".thought")).to_be_visible()  # open while it thinks
    assert await page.locator("bf-chat .answer").text_content() == ""
    seen_thinking.set()

    await wait_for_end(page)
    assert await page.locator("bf-chat .answer em").text_content() == "fine"
    await expect(thinking.locator(".thought")).to_be_hidden()  # folded once the answer came
    order = await page.locator("bf-chat .turn").evaluate("(turn) => [...turn.children].map((part) => part.className)")
    assert order.index("thinking") < order.index("answer")
    assert problems == []


async def test_a_ui_tool_call_shows_a_card_and_the_pages_handler_answers_it(
    chat_server: Server, fake_openai: FakeOpenAI, chromium: Any, pages: PageServer
) -> None:
    fake_openai.enqueue(
        StreamReply([tool_call_stream([("call_1", "ui_show_form", '{"title":"Sign up"}')])]),
        StreamReply([text_stream(["The form ", "is shown."])]),
    )
    page, problems = await open_chat(chromium, pages)
    await page.evaluate("""() => document.querySelector("bf-chat").onToolCall("show_form", async (args) => {
      window.asked = args;
      return { success: true, message: "form shown", data: { shown: true } };
    })""")
    await start_openai_stream(chat_server, payload={"tools": [SHOW_FORM]})
    await wait_for_end(page)

    card = page.locator("bf-chat .tool")
    assert await card.count() == 1
    assert await card.locator(".name").text_content() == "ui_show_form"
    assert await card.get_attribute("data-state") == "answered"
    assert await page.evaluate("() => window.asked") == {"title": "Sign up"}
    assert await page.locator("bf-chat .answer").text_content() == "The form is shown."
    sent = (await fake_openai.nth_request(2)).json()
    tool_message = next(m for m in sent["messages"] if m["role"] == "tool")
    assert json.loads(tool_message["content"])["message"] == "form shown"
    assert problems == []


async def test_the_stop_button_ends_a_running_answer(chat_server: Server, chromium: Any, pages: PageServer) -> None:
    page, problems = await open_chat(chromium, pages)
    await start_echo_stream(chat_server, " ".join(["long"] * 400))
    await answer_contains(page, "long long long long long long long long")
    await page.click("bf-chat .stop")
    await wait_for_end(page)
    [turn] = await turns(page)
    assert turn["status"] == "stopped" and turn["text"].count("long") < 400
    assert await page.locator("bf-chat .note").text_content() == "Stopped"
    assert await page.locator("bf-chat .stop").count() == 0
    assert problems == []


async def test_a_reload_mid_answer_shows_the_whole_answer(
    chat_server: Server, chromium: Any, pages: PageServer
) -> None:
    text = " ".join(f"w{i}" for i in range(120))
    page, problems = await open_chat(chromium, pages)
    await start_echo_stream(chat_server, text)
    await answer_contains(page, "w20")
    await page.reload()
    await page.wait_for_selector("bf-chat[data-ready='true']", timeout=10_000)
    partial = (await turns(page))[0]["text"]
    assert partial.startswith("w0 w1 w2") and len(partial) < len(text)  # all so far at once, then it goes on
    await wait_for_end(page)
    assert await turns(page) == [{"status": "done", "streamId": (await turns(page))[0]["streamId"], "text": text}]
    assert problems == []


async def words_go_by(listener: WSClient, page: Any, count: int) -> None:
    """Read the stream on the server's side until it is ``count`` words past what the page shows."""
    shown = len((await turns(page))[0]["text"].split())
    seq = 0
    while seq < shown + count:  # seq 0 is threadInfo, then one delta per word
        frame = await listener.recv(timeout=10)
        if frame["op"] == "message":
            seq = max([seq] + [action["options"].get("seq", 0) for action in frame["message"]["actions"]])


async def test_a_cut_connection_shows_reconnecting_then_the_whole_answer_once(
    chat_server: Server, chromium: Any
) -> None:
    proxy = Proxy(chat_server.url)
    await proxy.start()
    relay = f"http://127.0.0.1:{proxy.port}"
    try:
        async with PageServer({"/": chat_page(relay, {"app": chat_server.app_id, "channel": CHANNEL})}) as served:
            page, problems = await open_chat(chromium, served)
            states: list[str] = []
            await page.expose_function("sawState", lambda state: states.append(state))
            await page.evaluate(
                "() => document.querySelector('bf-chat').addEventListener('bf-state', (e) => sawState(e.detail.state))"
            )
            text = " ".join(f"w{i}" for i in range(120))
            listener = await chat_server.ws(channels=(CHANNEL,))  # beside the page, on the server itself
            await start_echo_stream(chat_server, text)
            await answer_contains(page, "w10")
            await proxy.stop()
            await page.wait_for_selector("bf-chat[state='reconnecting']", timeout=10_000)
            assert (await page.locator("bf-chat .status").text_content() or "").startswith("reconnecting")
            await words_go_by(listener, page, 20)  # unseen while cut: the answer must catch up on them
            await proxy.start()
            await wait_for_end(page, timeout=20)
            [turn] = await turns(page)
            assert turn["status"] == "done" and turn["text"] == text  # whole, and each word once
            assert await page.get_attribute("bf-chat", "state") == "open"
            assert "reconnecting" in states and states[-1] == "open"
            assert [p for p in problems if "ERR_CONNECTION" not in p] == []
    finally:
        await proxy.stop()


async def test_the_element_works_in_an_iframe_whose_page_loads_it_with_a_classic_script(
    chat_server: Server, fake_openai: FakeOpenAI, chromium: Any
) -> None:
    framed = chat_page(chat_server.url, {"app": chat_server.app_id, "channel": CHANNEL, "theme": "dark"})
    outer = (
        '<!doctype html><html lang="en"><meta charset="utf-8"><title>host</title>'
        '<iframe src="/webviewer" width="600" height="400"></iframe></html>'
    )
    fake_openai.enqueue(StreamReply([text_stream(pieces("# Hello\n\n1. one\n2. two\n", 2))]))
    async with PageServer({"/": outer, "/webviewer": framed}) as served:
        page = await chromium.new_page()
        problems = watch_page(page)
        await page.goto(served.origin + "/")
        frame = page.frame_locator("iframe")
        await frame.locator("bf-chat[data-ready='true']").wait_for(timeout=10_000)
        await start_openai_stream(chat_server)
        await frame.locator("bf-chat .turn[data-status='done']").wait_for(timeout=10_000)
        assert await frame.locator("bf-chat .answer h1").text_content() == "Hello"
        assert await frame.locator("bf-chat .answer ol > li").all_text_contents() == ["one", "two"]
        background = await frame.locator("bf-chat").evaluate("(chat) => getComputedStyle(chat).backgroundColor")
        assert background == "rgb(21, 21, 23)"  # theme="dark" forces the dark palette
        assert problems == []


async def test_a_refused_join_shows_the_reason(chat_server: Server, chromium: Any) -> None:
    page_html = chat_page(chat_server.url, {"app": chat_server.app_id, "channel": "x" * 300})
    async with PageServer({"/": page_html}) as served:
        page = await chromium.new_page()
        await page.goto(served.origin + "/")
        await page.wait_for_selector("bf-chat[state='refused']", timeout=10_000)
        status = await page.locator("bf-chat .status").text_content()
        assert status is not None and status.startswith("refused: ") and "200 characters" in status


async def test_a_page_of_an_origin_the_app_does_not_list_is_refused_with_the_reason(
    chat_server: Server, chromium: Any, pages: PageServer
) -> None:
    await chat_server.change_app(lambda store: store.set_origins(chat_server.app_id, ["https://app.example"]))
    page = await chromium.new_page()
    await page.goto(pages.origin + "/")
    await page.wait_for_selector("bf-chat[state='refused']", timeout=10_000)
    status = await page.locator("bf-chat .status").text_content()
    assert status is not None and status.startswith("refused: ") and "origin" in status.lower(), status


async def test_the_palette_follows_the_readers_scheme_unless_the_theme_attribute_forces_one(
    chat_server: Server, chromium: Any, pages: PageServer
) -> None:
    page = await chromium.new_page()
    await page.goto(pages.origin + "/")
    background = "() => getComputedStyle(document.querySelector('bf-chat')).backgroundColor"
    dark, light = "rgb(21, 21, 23)", "rgb(255, 255, 255)"
    await page.emulate_media(color_scheme="dark")
    assert await page.evaluate(background) == dark
    await page.evaluate("() => document.querySelector('bf-chat').setAttribute('theme', 'light')")
    assert await page.evaluate(background) == light
    await page.emulate_media(color_scheme="light")
    await page.evaluate("() => document.querySelector('bf-chat').removeAttribute('theme')")
    assert await page.evaluate(background) == light
    await page.evaluate("() => document.querySelector('bf-chat').setAttribute('theme', 'dark')")
    assert await page.evaluate(background) == dark


async def test_a_token_provider_is_asked_on_connect_for_an_authenticated_channel(
    chat_server: Server, fake_openai: FakeOpenAI, chromium: Any
) -> None:
    users = [{"id": "ann", "channels": [{"name": "team", "mode": "receive"}]}]
    added = await chat_server.post("/message/adduser", {"apiKey": chat_server.api_key, "users": users})
    assert added.status_code == 201, added.text  # "team" is now authenticated: only its users may join
    token = await chat_server.token("ann")
    page_html = chat_page(chat_server.url, {"app": chat_server.app_id, "channel": "team"})
    async with PageServer({"/": page_html}) as served:
        page = await chromium.new_page()
        await page.goto(served.origin + "/")
        await page.evaluate(
            "(token) => { window.asked = 0; document.querySelector('bf-chat').tokenProvider = async () => "
            "{ window.asked += 1; return token; }; }",
            token,
        )
        await page.wait_for_selector("bf-chat[data-ready='true']", timeout=10_000)
        assert await page.evaluate("() => window.asked") >= 1
        assert await page.get_attribute("bf-chat", "state") == "open"

"""FileMaker Server as an app's back end (issue 19, item 5), against a fake of the Data API
(``tests/fakes/filemaker_server.py``): backend tools run as scripts named after the tool, one
session token is shared and renewed once when the server refuses it, and the events script gets
the lifecycle event's body. The account's password is checked by the suite's secret scan."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bfstream.config import load_settings
from bfstream.credentials import sealer
from bfstream.store.records import FileMakerTarget
from bfstream.store.store import FILEMAKER_PASSWORD as PASSWORD_SERVICE
from tests.conftest import Server, seed_body
from tests.fakes.filemaker_server import FakeFileMaker, ScriptFailed
from tests.fakes.openai_server import FakeOpenAI, StreamReply, text_stream, tool_call_stream
from tests.secret_scan import FILEMAKER_BASIC, FILEMAKER_PASSWORD
from tests.streams.test_tools import WEATHER, function, query, started, tool_messages

pytestmark = pytest.mark.anyio

METADATA = {"recordId": "FM-10442"}


def fake_filemaker(**scripts: Callable[[str], Any]) -> FakeFileMaker:
    return FakeFileMaker(password=FILEMAKER_PASSWORD, scripts=dict(scripts))


async def point_filemaker(server: Server, fm: FakeFileMaker, events_script: str | None = None) -> None:
    """``apps update --filemaker URL --database --layout --account``, the password sealed as the CLI does."""
    box = sealer(load_settings(data_dir=server.data_dir), create=True)
    assert box is not None
    target = FileMakerTarget(fm.url, fm.database, fm.layout, fm.account, events_script)

    async def point(store: Any) -> None:
        await store.set_filemaker(server.app_id, target, box.seal(server.app_id, PASSWORD_SERVICE, fm.password))

    await server.change_app(point)


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)


async def ask_weather(server: Server, fake_openai: FakeOpenAI, page: Any) -> str:
    """One stream whose model calls get_weather for Oslo, then says "Cold."; its final text."""
    fake_openai.enqueue(
        StreamReply([tool_call_stream([("c1", "get_weather", '{"city": "Oslo"}')])]),
        StreamReply([text_stream(["Cold."])]),
    )
    await started(server, query(server, [WEATHER]))
    return (await page.stream_events())[-1]["text"]


async def test_a_backend_tool_runs_as_its_script_and_the_result_continues_the_answer(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    def get_weather(parameter: str) -> str:
        city = json.loads(parameter)["arguments"]["city"]
        return json.dumps({"city": city, "celsius": 21})

    async with fake_filemaker(get_weather=get_weather) as fm:
        await point_filemaker(server, fm)
        fake_openai.enqueue(
            StreamReply([tool_call_stream([("call_w", "get_weather", '{"city": "Oslo"}')])]),
            StreamReply([text_stream(["It is 21 °C in Oslo."])]),
        )
        page = await server.ws(channels=("room",))
        stream_id = await started(server, query(server, [WEATHER], metadata=METADATA))
        events = await page.stream_events()

    assert [e["type"] for e in events] == ["threadInfo", "function_call", "delta", "end"]
    assert events[-1]["text"] == "It is 21 °C in Oslo."
    [ran] = fm.ran
    parameter = ran.json()
    assert ran.script == "get_weather" and parameter["name"] == "get_weather"
    assert parameter["arguments"] == {"city": "Oslo"} and parameter["streamId"] == stream_id
    assert parameter["metadata"] == METADATA and parameter["toolCallId"].startswith(f"tc_{stream_id}_")
    login, call = fm.requests
    assert login.method == "POST" and login.path == "/fmi/data/vLatest/databases/Shop/sessions"
    assert login.headers["authorization"] == f"Basic {FILEMAKER_BASIC}" and login.json() == {}
    assert call.method == "GET" and call.path == "/fmi/data/vLatest/databases/Shop/layouts/Bfstream/script/get_weather"
    assert call.headers["authorization"].startswith("Bearer ") and json.loads(call.query["script.param"]) == parameter
    (tool,) = tool_messages((await fake_openai.nth_request(2)).json())
    assert tool["tool_call_id"] == "call_w" and json.loads(tool["content"]) == {"city": "Oslo", "celsius": 21}


async def test_plain_text_results_script_errors_and_missing_scripts_are_results_the_model_reads(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    def locked(parameter: str) -> str:
        raise ScriptFailed(301)  # "Record is in use by another user"

    tools = [function("lookup_customer", id="string"), function("lock_order", id="string"), function("nope")]
    async with fake_filemaker(lookup_customer=lambda _: "Ada Lovelace, London", lock_order=locked) as fm:
        await point_filemaker(server, fm)
        calls = [("c1", "lookup_customer", '{"id": "7"}'), ("c2", "lock_order", '{"id": "9"}'), ("c3", "nope", "{}")]
        fake_openai.enqueue(StreamReply([tool_call_stream(calls)]), StreamReply([text_stream(["Done."])]))
        page = await server.ws(channels=("room",))
        await started(server, query(server, tools))
        assert (await page.stream_events())[-1]["text"] == "Done."

    text, script_error, missing = (json.loads(m["content"]) for m in tool_messages(fake_openai.requests[1].json()))
    assert text == {"result": "Ada Lovelace, London"}
    assert script_error["success"] is False and "FileMaker error 301" in script_error["message"]
    assert missing["success"] is False and "no script of that name (error 104)" in missing["message"]
    assert fm.logins == 1, "the three calls of the round shared one session"


async def test_an_expired_session_token_leads_to_one_new_login_and_one_retried_call(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    async with fake_filemaker(get_weather=lambda _: '{"celsius": 5}') as fm:
        await point_filemaker(server, fm)
        page = await server.ws(channels=("room",))
        assert await ask_weather(server, fake_openai, page) == "Cold."
        assert fm.logins == 1
        fm.expire_tokens()  # 15 minutes pass without a call
        seen = len(fm.requests)
        assert await ask_weather(server, fake_openai, page) == "Cold."

    refused, login, retried = fm.requests[seen:]
    assert refused.method == "GET" and retried.method == "GET" and refused.query == retried.query
    assert login.path.endswith("/sessions") and refused.headers["authorization"] != retried.headers["authorization"]
    assert fm.logins == 2 and len(fm.ran) == 2, "one new login, and the script ran once for the second call"
    assert json.loads(tool_messages(fake_openai.requests[3].json())[0]["content"]) == {"celsius": 5}


async def test_a_refused_password_is_a_result_the_model_reads_and_no_loop(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    async with fake_filemaker(get_weather=lambda _: "{}") as fm:
        await point_filemaker(server, fm)
        fm.password = "changed on the server"
        fake_openai.enqueue(
            StreamReply([tool_call_stream([("c1", "get_weather", '{"city": "Oslo"}')])]),
            StreamReply([text_stream(["Sorry."])]),
        )
        page = await server.ws(channels=("room",))
        await started(server, query(server, [WEATHER]))
        assert (await page.stream_events())[-1]["text"] == "Sorry."

    [login] = fm.requests
    assert login.path.endswith("/sessions") and not fm.ran
    (tool,) = tool_messages(fake_openai.requests[1].json())
    assert "account or password was refused (error 212)" in json.loads(tool["content"])["message"]


async def test_the_completion_script_receives_the_final_text_once_per_delivery_through_a_script_error(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    handled: dict[str, dict[str, Any]] = {}

    def events(parameter: str) -> None:
        """Fails the first time (a record in use), then writes the answer once per delivery id."""
        if not fm.ran[:-1]:
            raise ScriptFailed(301)
        body = json.loads(parameter)
        handled.setdefault(body["deliveryId"], body)

    words = [f"word{i} " for i in range(600)]  # far past what a GET's URI may carry
    async with fake_filemaker(**{"bfstream event": events}) as fm:
        await point_filemaker(server, fm, events_script="bfstream event")

        async def subscribe(store: Any) -> None:
            await store.set_webhook_events(server.app_id, ["stream.completed"])

        await server.change_app(subscribe)
        fake_openai.enqueue(StreamReply([text_stream(words)]))
        created = await server.post("/stream/create", {**seed_body(server), "metadata": METADATA})
        assert created.status_code == 200, created.text
        stream_id = created.json()["streamId"]
        await until(lambda: len(handled) == 1)

    delivery = f"{stream_id}.stream.completed"
    first, second = fm.ran
    assert first.script == second.script == "bfstream event" and first.parameter == second.parameter
    event = handled[delivery]
    assert event["type"] == "stream.completed" and event["streamId"] == stream_id
    assert event["text"] == "".join(words) and event["metadata"] == METADATA and event["usage"]["total_tokens"] > 0
    posts = fm.answers_to("POST", "/layouts/Bfstream/records")
    assert len(posts) == 2 and posts[0].json()["script"] == "bfstream event"
    assert json.loads(posts[0].json()["script.param"]) == event
    assert not fm.answers_to("GET", "/script/"), "a parameter this long never goes in a URI"


async def test_with_a_webhook_url_too_backend_tools_run_on_filemaker_not_the_webhook(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    from tests.fakes.webhook_server import WebhookReceiver
    from tests.streams.test_tools import point_webhook

    async with fake_filemaker(get_weather=lambda _: '{"celsius": 1}') as fm, WebhookReceiver() as hook:
        await point_webhook(server, hook)
        await point_filemaker(server, fm)
        assert await ask_weather(server, fake_openai, await server.ws(channels=("room",))) == "Cold."

    assert [r.script for r in fm.ran] == ["get_weather"] and hook.received == []


def cli(*args: str, data_dir: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BFSTREAM_TOOLS__ALLOW_PRIVATE_WEBHOOKS": "true"}
    return subprocess.run(
        [sys.executable, "-m", "bfstream.cli", *args, "--data-dir", str(data_dir)],
        input=stdin, capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip


def test_apps_update_filemaker_keeps_the_password_sealed_and_refuses_bad_input_cleanly(tmp_path: Path) -> None:
    assert cli("apps", "create", "shop", data_dir=tmp_path).returncode == 0
    target = ["--filemaker", "http://127.0.0.1:8443", "--database", "Shop", "--layout", "Bfstream"]
    typed: dict[str, Any] = {"data_dir": tmp_path, "stdin": "pw"}

    def names(host: str) -> list[str]:
        return ["--filemaker", host, "--database", "D", "--layout", "L", "--account", "a"]

    refusals = {
        "without --account": (cli("apps", "update", "shop", *target, data_dir=tmp_path, stdin="pw\n"), "--account"),
        "no password": (
            cli("apps", "update", "shop", *target, "--account", "a", data_dir=tmp_path, stdin="\n"),
            "none on standard input",
        ),
        "names alone": (cli("apps", "update", "shop", "--layout", "L", data_dir=tmp_path), "go with --filemaker"),
        "a path": (cli("apps", "update", "shop", *names("https://fms.example/fmi/data"), **typed), "server only"),
        "http to a public address": (cli("apps", "update", "shop", *names("http://8.8.8.8"), **typed), "https://"),
        # Found by a review: a name that did not resolve was taken for a private one.
        "http to a name that does not resolve": (
            cli("apps", "update", "shop", *names("http://fms.invalid"), **typed),
            "https://",
        ),
        "a control character": (
            cli("apps", "update", "shop", *target, "--account", "a\x07b", data_dir=tmp_path, stdin="pw"),
            "control characters",
        ),
        "events script without a server": (
            cli("apps", "update", "shop", "--filemaker-events-script", "Events", data_dir=tmp_path),
            "no FileMaker Server",
        ),
        "events without a receiver": (
            cli("apps", "update", "shop", "--webhook-events", "all", data_dir=tmp_path),
            "--filemaker-events-script",
        ),
    }
    for what, (result, says) in refusals.items():
        assert result.returncode == 2, what
        assert result.stdout == "" and "Traceback" not in result.stderr, what
        assert says in result.stderr.splitlines()[-1], (what, result.stderr)

    done = cli(
        "apps", "update", "shop", *target, "--account", "bfstream", "--filemaker-events-script", "bfstream event",
        data_dir=tmp_path, stdin=FILEMAKER_PASSWORD + "\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["filemaker"] == {
        "host": "http://127.0.0.1:8443",
        "database": "Shop",
        "layout": "Bfstream",
        "account": "bfstream",
        "eventsScript": "bfstream event",
    }
    subscribed = cli("apps", "update", "shop", "--webhook-events", "stream.completed", data_dir=tmp_path)
    assert json.loads(subscribed.stdout)["webhookEvents"] == ["stream.completed"]
    listed = cli("apps", "credentials", "list", "shop", "--json", data_dir=tmp_path)
    assert json.loads(listed.stdout) == [], "the FileMaker password is not a provider key"
    for path in tmp_path.glob("bfstream.sqlite3*"):  # the database and its write-ahead log
        assert FILEMAKER_PASSWORD.encode() not in path.read_bytes(), path

    removed = cli("apps", "update", "shop", "--filemaker", "none", data_dir=tmp_path)
    assert removed.returncode == 0 and json.loads(removed.stdout)["filemaker"] is None

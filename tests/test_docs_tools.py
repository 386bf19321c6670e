"""docs/tools.md's code, run: the signature checks in Python and JavaScript (fenced blocks whose first
line is ``docs-test: verify``) take a request signed by ``bfstream.webhooks.signature`` and refuse a
tampered body, a wrong secret and a stale timestamp; the whole receivers (``docs-test: receiver``)
answer a tool call that ``bfstream.webhooks.post`` sends, and refuse a forged one.

The JavaScript runs under Node. Without Node those tests skip, saying so, except under CI, which
must run them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import select
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from bfstream.errors import WebhookError
from bfstream.providers.http import provider_client
from bfstream.webhooks import post, signature

DOC = Path(__file__).resolve().parent.parent / "docs" / "tools.md"
SECRET = "whsec_" + "k" * 43
BODY = json.dumps(
    {"type": "tool_call", "toolName": "get_weather", "arguments": {"city": "Zürich"}},
    separators=(",", ":"),
    ensure_ascii=False,  # as bfstream sends it: UTF-8, so the check must run over the raw bytes
).encode()
CALL = {"type": "tool_call", "toolCallId": "tc_1", "toolName": "get_weather", "arguments": {"city": "Oslo"}}


def snippets(language: str, marker: str) -> str:
    """The docs' fenced ``language`` blocks whose first line names ``marker``, joined."""
    found = [
        code
        for code in re.findall(rf"^```{language}\n(.*?)^```$", DOC.read_text(), flags=re.M | re.S)
        if code.splitlines()[0].endswith(f"docs-test: {marker}")
    ]
    assert found, f"docs/tools.md has no {language} block marked docs-test: {marker}"
    return "\n".join(found)


def cases() -> list[tuple[str, str, str, bytes, bool]]:
    """(what, timestamp header, signature header, body, accepted?)"""
    now = int(time.time())
    signed = signature(SECRET, now, BODY)
    return [
        ("signed by bfstream", str(now), signed, BODY, True),
        ("a tampered body", str(now), signed, BODY.replace("Zürich".encode(), b"Bern"), False),
        ("a wrong secret", str(now), signature(SECRET + "x", now, BODY), BODY, False),
        ("a stale timestamp", str(now - 400), signature(SECRET, now - 400, BODY), BODY, False),
        ("a timestamp from the future", str(now + 400), signature(SECRET, now + 400, BODY), BODY, False),
        ("a timestamp changed after signing", str(now - 1), signed, BODY, False),
        ("no signature", str(now), "", BODY, False),
        ("no timestamp", "", signed, BODY, False),
        ("a signature that is not ASCII", str(now), "v1=é" + signed[4:], BODY, False),
        ("a signature without v1=", str(now), signed[3:], BODY, False),
    ]


def node() -> str:
    found = shutil.which("node")
    if found is None:
        reason = "node is not installed: the JavaScript snippets of docs/tools.md need Node 20 or later"
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI must run them")
        pytest.skip(reason)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def deliver(url: str, secret: str) -> Any:
    """A tool call as bfstream sends it: ``webhooks.post``, the function the tool loop calls."""
    async with provider_client(10) as http:
        return await post(http, url, secret, "tool_call", CALL, 5, allow_private=True)


# --- the signature checks -------------------------------------------------------------------------------


def test_the_python_check_accepts_bfstream_signatures_and_refuses_the_rest() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(snippets("python", "verify"), "docs/tools.md", "exec"), namespace)
    for what, timestamp, signed, body, accepted in cases():
        headers = {"X-Bfstream-Timestamp": timestamp, "X-Bfstream-Signature": signed}
        headers = {k: v for k, v in headers.items() if v}
        assert namespace["verified"](SECRET, headers, body) is accepted, what


def test_the_javascript_check_accepts_bfstream_signatures_and_refuses_the_rest(tmp_path: Path) -> None:
    executable = node()
    (tmp_path / "verify.mjs").write_text(snippets("js", "verify"))
    (tmp_path / "run.mjs").write_text(
        'import { readFileSync } from "node:fs";\n'
        'import { verified } from "./verify.mjs";\n'
        'const cases = JSON.parse(readFileSync(0, "utf8"));\n'
        "const results = cases.map((c) => verified(c.secret, c.headers, Buffer.from(c.body, 'base64')));\n"
        "console.log(JSON.stringify(results));\n"
    )
    table = cases()
    sent = []
    for _, timestamp, signed, body, _ in table:
        headers = {"x-bfstream-timestamp": timestamp, "x-bfstream-signature": signed}
        headers = {k: v for k, v in headers.items() if v}  # Node leaves out headers that were not sent
        sent.append({"secret": SECRET, "headers": headers, "body": base64.b64encode(body).decode()})
    result = subprocess.run(
        [executable, "run.mjs"], cwd=tmp_path, input=json.dumps(sent), capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 0, result.stderr
    for (what, *_, accepted), got in zip(table, json.loads(result.stdout), strict=True):
        assert got is accepted, what


# --- the whole receivers ----------------------------------------------------------------------------------


def test_the_node_receiver_answers_a_signed_tool_call_and_refuses_a_forged_one(tmp_path: Path) -> None:
    executable = node()
    (tmp_path / "webhook.mjs").write_text(snippets("js", "verify") + "\n" + snippets("js", "receiver"))
    port = free_port()
    env = {**os.environ, "PORT": str(port), "BFSTREAM_WEBHOOK_SECRET": SECRET}
    process = subprocess.Popen(
        [executable, "webhook.mjs"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 10)
        assert ready and process.stdout.readline().strip() == b"listening", "the receiver did not start"
        url = f"http://127.0.0.1:{port}/bfstream"
        assert asyncio.run(deliver(url, SECRET)) == {"city": "Oslo", "celsius": 21}
        with pytest.raises(WebhookError) as refused:
            asyncio.run(deliver(url, SECRET + "x"))
        assert refused.value.code == 401
    finally:
        process.terminate()
        process.wait(5)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def test_the_fastapi_receiver_answers_a_signed_tool_call_and_refuses_a_forged_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BFSTREAM_WEBHOOK_SECRET", SECRET)
    namespace: dict[str, Any] = {}
    code = snippets("python", "verify") + "\n" + snippets("python", "receiver")
    exec(compile(code, "docs/tools.md", "exec"), namespace)

    async def against_the_receiver() -> tuple[Any, WebhookError]:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(namespace["app"], port=port, log_level="warning", lifespan="off"))
        serving = asyncio.create_task(server.serve())
        try:
            async with asyncio.timeout(10):
                while not server.started:
                    await asyncio.sleep(0.005)
            url = f"http://127.0.0.1:{port}/bfstream"
            answered = await deliver(url, SECRET)
            with pytest.raises(WebhookError) as refused:
                await deliver(url, "whsec_wrong")
            return answered, refused.value
        finally:
            server.should_exit = True
            await asyncio.wait_for(serving, 10)

    answered, refused = asyncio.run(against_the_receiver())
    assert answered == {"city": "Oslo", "celsius": 21}
    assert refused.code == 401

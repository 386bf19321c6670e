"""``openai-responses`` against a Responses server that is not ours: LiteLLM's proxy, run as its users run
it (``litellm --config``), whose ``/v1/responses`` streams a model it reaches over Chat Completions. That
model is the tests' fake Chat Completions server, so neither a real model nor a GPU is needed: what is
checked is how a second, independent implementation of the Responses stream reaches a channel.

LiteLLM is installed from PyPI into a virtual environment of its own, outside the checkout and kept for
later runs: its proxy pins uvicorn and websockets older than bfstream's, so it cannot share bfstream's.
Without CI a failed install skips, with the reason; under CI it fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PROVIDER_KEY, Server, ServerFactory, assert_well_formed
from tests.fakes.openai_server import FakeOpenAI, StreamReply, split_randomly, text_stream, tool_call_stream
from tests.services import unavailable
from tests.test_docs_tools import free_port

pytestmark = pytest.mark.anyio

# Pinned: a release known to stream /v1/responses for a bridged model (and not the withdrawn 1.107.0).
LITELLM = "litellm[proxy]==1.80.17"
VENV = Path(tempfile.gettempdir()) / "bfstream-tests-litellm-1.80.17"


@pytest.fixture(scope="module")
def litellm() -> Path:
    """The ``litellm`` command, installed on first use. The environment counts as made only once its
    marker is written: one cut short by a failure or a stop is made again."""
    command, made = VENV / "bin" / "litellm", VENV / "installed"
    if made.exists():
        return command
    shutil.rmtree(VENV, ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True, timeout=120)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, LITELLM], check=True, capture_output=True, timeout=900)
        made.write_text(LITELLM)
    except (OSError, subprocess.SubprocessError) as exc:
        shutil.rmtree(VENV, ignore_errors=True)
        said = (getattr(exc, "stderr", b"") or b"").decode(errors="replace")[-500:]
        unavailable(f"LiteLLM's proxy ({LITELLM}) could not be installed: {exc} {said}")
    return command


@pytest.fixture
async def proxy(litellm: Path, fake_openai: FakeOpenAI, tmp_path: Path) -> AsyncIterator[str]:
    """LiteLLM's proxy on a free port, serving ``bridged`` from the fake Chat Completions server; its base URL."""
    config = tmp_path / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: bridged\n"
        "    litellm_params:\n"
        "      model: hosted_vllm/fake-chat-model\n"  # a provider LiteLLM reaches over Chat Completions
        f"      api_base: {fake_openai.base_url}\n"
        "      api_key: sk-upstream-fake\n"
    )
    port = free_port()
    log = (tmp_path / "litellm.log").open("wb")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # no fetch of its price list from the web
    process = await asyncio.create_subprocess_exec(
        str(litellm), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--telemetry", "False",
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client, asyncio.timeout(90):
            while True:
                if process.returncode is not None:
                    pytest.fail("LiteLLM's proxy exited:\n" + (tmp_path / "litellm.log").read_text()[-2000:])
                try:
                    if (await client.get(base + "/health/liveliness")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        yield base + "/v1"
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


async def test_litellms_responses_stream_reaches_a_channel(
    start_server: ServerFactory, fake_openai: FakeOpenAI, proxy: str
) -> None:
    server: Server = await start_server(
        services={"litellm": {"kind": "openai-responses", "base_url": proxy}, "echo": {"delay_ms": 1}}
    )
    await server.make_tool_arguments_public()  # the reassembled arguments are what is checked
    parts = ["Light ", "attracts ", "bugs. 🐛"]
    fake_openai.enqueue(
        StreamReply(split_randomly(text_stream(parts), 5)),
        StreamReply([tool_call_stream([("call_Z1", "get_weather", '{"city": "Zürich"}')])]),
    )
    page = await server.ws(channels=("anonymous",))

    async def relay(**payload: object) -> list[dict]:
        body = {
            "apiKey": server.api_key,
            "channels": ["anonymous"],
            "actionName": "onLlm",
            "service": "litellm",
            "payload": {
                "apiKey": PROVIDER_KEY,
                "model": "bridged",
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why dark mode?"}],
                "max_tokens": 50,
                **payload,
            },
        }
        response = await server.post("/stream/create", body)
        assert response.status_code == 200, response.text
        events = await page.stream_events(timeout=30)
        assert_well_formed(events, response.json()["streamId"])
        return events

    events = await relay()
    assert [e["type"] for e in events] == ["threadInfo"] + ["delta"] * len(parts) + ["end"]
    assert events[-1]["text"] == "".join(parts) and events[-1]["finish_reason"] == "stop"
    assert events[-1]["usage"]["total_tokens"] > 0
    upstream = fake_openai.requests[0].json()  # what LiteLLM made of bfstream's Responses request
    assert upstream["messages"][0] == {"role": "system", "content": "Be brief."}
    assert upstream["messages"][-1]["role"] == "user" and upstream["stream"] is True

    weather = {"type": "object", "properties": {"city": {"type": "string"}}}
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": weather}}
    events = await relay(tools=[tool])
    assert [e["type"] for e in events] == ["threadInfo", "function_call", "end"]  # no webhook to answer it
    (call,) = events[1]["content"]["functions"]
    assert call["id"] == "call_Z1" and call["name"] == "get_weather" and call["arguments"] == '{"city": "Zürich"}'
    assert events[-1]["finish_reason"] == "tool_calls"
    assert fake_openai.requests[1].json()["tools"][0]["function"]["name"] == "get_weather"

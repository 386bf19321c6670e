"""docs/python-client.md's examples, run as written against a real server (the echo service: no
provider), with ``BASE_URL`` and ``API_KEY`` those of the test's server and app."""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server

pytestmark = pytest.mark.anyio

DOC = Path(__file__).resolve().parents[2] / "docs" / "python-client.md"


def snippet(marker: str) -> str:
    blocks = re.findall(r"```python\n# docs-test: " + marker + r"\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1, f"docs/python-client.md has {len(blocks)} python blocks marked docs-test: {marker}"
    return blocks[0]


async def test_the_sync_example_reads_the_whole_answer(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, Any] = {"BASE_URL": server.url, "API_KEY": server.api_key}
    code = compile(snippet("sync"), str(DOC), "exec")
    await asyncio.wait_for(asyncio.to_thread(exec, code, namespace), 20)
    assert namespace["text"] == "tell me a joke"
    assert capsys.readouterr().out == "tell me a joke\n"


async def test_the_async_example_reads_the_whole_answer(server: Server) -> None:
    namespace: dict[str, Any] = {"BASE_URL": server.url, "API_KEY": server.api_key}
    code = compile(snippet("async"), str(DOC), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    await asyncio.wait_for(eval(code, namespace), 20)
    assert namespace["text"] == "tell me a joke"

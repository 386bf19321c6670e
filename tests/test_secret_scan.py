"""The secret scan itself can fail: a key planted where it captures is found; a log line is not a
leak because the scrubber cleans it first."""

from __future__ import annotations

import logging

import httpx
import pytest

from bfstream.scrub import install_log_scrubber
from tests.fakes.openai_server import FakeOpenAI, JsonReply, error_body
from tests.secret_scan import PROVIDER_KEY, STORED_KEY, Scan

pytestmark = pytest.mark.anyio


async def test_a_key_in_an_error_body_is_found_and_a_scrubbed_log_line_is_not(
    secret_scan: Scan, fake_openai: FakeOpenAI
) -> None:
    install_log_scrubber()
    logging.getLogger("bfstream.test").warning("calling with %s", PROVIDER_KEY)
    app_key = "BFAPI_" + "k" * 43
    logging.getLogger("bfstream.test").debug(f"key {app_key}")
    assert secret_scan.captured.leaks() == []  # both were scrubbed before any handler saw them

    fake_openai.enqueue(JsonReply(401, error_body(f"bad key {PROVIDER_KEY} for {app_key}")))
    async with httpx.AsyncClient() as http:  # not through bfstream: nothing scrubs this answer
        answer = await http.post(fake_openai.base_url + "/chat/completions", json={})
    assert answer.status_code == 401
    leaks = secret_scan.captured.leaks()
    assert len(leaks) == 3 and all(leak.startswith("HTTP 401 /v1/chat/completions") for leak in leaks)
    assert "an app key" in leaks[2]
    secret_scan.captured.parts.clear()  # planted on purpose: the teardown check must not count it


async def test_a_stored_key_in_a_successful_answer_is_found_and_the_suites_own_key_there_is_not(
    secret_scan: Scan, fake_openai: FakeOpenAI
) -> None:
    """A model may be asked to repeat the suite's provider key, so a 200 may hold it; a key the server
    keeps for an app has no business in any answer."""
    fake_openai.enqueue(JsonReply(200, {"echo": PROVIDER_KEY}), JsonReply(200, {"echo": STORED_KEY}))
    async with httpx.AsyncClient() as http:
        for _ in range(2):
            assert (await http.post(fake_openai.base_url + "/chat/completions", json={})).status_code == 200
    leaks = secret_scan.captured.leaks()  # the key whole, and its first eight characters
    assert len(leaks) == 2 and all(leak.startswith("answer 200 /v1/chat/completions") for leak in leaks)
    assert all(STORED_KEY in leak for leak in leaks) and not any(PROVIDER_KEY in leak for leak in leaks)
    secret_scan.captured.parts.clear()  # planted on purpose

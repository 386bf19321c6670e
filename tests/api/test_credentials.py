"""Provider keys kept on the server (``bfstream apps credentials``): stored with the real CLI, used by
a real server for requests that bring no key, and never let out again: not in the database file, not
in a debug log, not in any answer (the secret scan looks for ``STORED_KEY`` in all of them)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, ServerFactory, seed_body
from tests.fakes.openai_server import (
    FakeOpenAI,
    JsonReply,
    StreamReply,
    completion,
    invalid_key_reply,
    split_randomly,
    text_stream,
)
from tests.secret_scan import PROVIDER_KEY, STORED_KEY, Scan
from tests.services import throwaway_database

pytestmark = pytest.mark.anyio

ADMIN = "admin-token-for-the-tests-0123"
FLEET_KEY = "the-fleet-credentials-key-0123456789"
OLD_KEY = "an-older-credentials-key-9876543210"


async def cli(*args: str, data_dir: Path, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    """``bfstream`` as an operator runs it, beside the running server (in a thread: the server shares this loop)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bfstream.cli", *args, "--data-dir", str(data_dir)],
        input=stdin, capture_output=True, text=True, timeout=60, check=False, env={**os.environ, **env},
    )  # fmt: skip


def without_key(server: Server, **payload: Any) -> dict[str, Any]:
    body = seed_body(server, **payload)
    del body["payload"]["apiKey"]
    return body


async def test_a_stored_key_is_used_when_the_payload_has_none_and_appears_nowhere_else(
    start_server: ServerFactory, fake_openai: FakeOpenAI, secret_scan: Scan
) -> None:
    server = await start_server(admin_token=ADMIN)
    stored = await cli(
        "apps", "credentials", "set", server.app_id, "openai", data_dir=server.data_dir, stdin=STORED_KEY
    )
    assert stored.returncode == 0, stored.stderr
    assert STORED_KEY not in stored.stdout + stored.stderr and "sk-…5678" in stored.stdout

    fake_openai.enqueue(StreamReply(split_randomly(text_stream(["Kept ", "on the server."]), seed=3)))
    listener = await server.ws(channels=("anonymous",))
    created = await server.post("/stream/create", without_key(server))
    assert created.status_code == 200, created.text
    stream_id = created.json()["streamId"]
    events = await listener.stream_events()
    assert events[-1]["text"] == "Kept on the server."
    assert (await fake_openai.nth_request(1)).headers["authorization"] == f"Bearer {STORED_KEY}"

    fake_openai.enqueue(StreamReply(split_randomly(text_stream(["own"]), seed=4)))
    assert (await server.post("/stream/create", seed_body(server))).status_code == 200  # the request's own key
    assert (await fake_openai.nth_request(2)).headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    await listener.stream_events()

    # A provider that quotes the key back in its refusal (OpenAI does): the answer is scrubbed of it.
    fake_openai.enqueue(invalid_key_reply(STORED_KEY))
    refused = await server.post("/stream/create", without_key(server, stream=False))
    assert refused.status_code == 502 and STORED_KEY not in refused.text and STORED_KEY[-8:] not in refused.text
    assert (await fake_openai.nth_request(3)).headers["authorization"] == f"Bearer {STORED_KEY}"

    status = await server.post("/stream/status", {"apiKey": server.api_key, "streamId": stream_id})
    admin = await server.http.get(server.url + "/admin/api/overview", headers={"Authorization": f"Bearer {ADMIN}"})
    records = await cli("streams", "list", "--json", data_dir=server.data_dir)
    assert status.status_code == 200 and admin.status_code == 200 and records.returncode == 0
    assert stream_id in status.text and stream_id in admin.text and stream_id in records.stdout
    for shown in (status.text, admin.text, records.stdout, json.dumps(events)):
        assert STORED_KEY not in shown and STORED_KEY[-12:] not in shown

    files = [p for p in server.data_dir.iterdir() if p.name.startswith("bfstream.sqlite3")]
    assert any(p.name.endswith("-wal") for p in files)  # the write-ahead log is read too
    for path in files:
        assert STORED_KEY.encode() not in path.read_bytes(), path.name
    logged = [text for where, text in secret_scan.captured.parts if where == "log"]
    assert any("DEBUG" in line for line in logged)  # the scan did read the debug-level log
    assert not [line for line in logged if STORED_KEY in line or STORED_KEY[-12:] in line]


async def test_list_masks_the_key_and_delete_forgets_it(start_server: ServerFactory, fake_openai: FakeOpenAI) -> None:
    server = await start_server(services={"openai": {"api_key": "sk-configured-ServiceWideKey-0000"}})
    await cli("apps", "credentials", "set", "test", "OpenAI", data_dir=server.data_dir, stdin=STORED_KEY + "\n")
    listed = await cli("apps", "credentials", "list", "test", "--json", data_dir=server.data_dir)
    (entry,) = json.loads(listed.stdout)
    assert entry["service"] == "openai" and entry["key"] == "sk-…5678" and STORED_KEY not in listed.stdout
    assert (
        json.loads((await cli("apps", "credentials", "list", "other", "--json", data_dir=server.data_dir)).stdout) == []
    )

    deleted = await cli("apps", "credentials", "delete", "test", "openai", data_dir=server.data_dir)
    assert deleted.returncode == 0, deleted.stderr
    again = await cli("apps", "credentials", "delete", "test", "openai", data_dir=server.data_dir)
    assert again.returncode == 2 and "keeps no key for 'openai'" in again.stderr
    fake_openai.enqueue(JsonReply(200, completion("ok")))
    assert (await server.post("/stream/create", without_key(server, stream=False))).status_code == 200
    # Gone: the service's configured key is next in line.
    assert (await fake_openai.nth_request(1)).headers["authorization"] == "Bearer sk-configured-ServiceWideKey-0000"


async def test_a_key_stored_under_another_credentials_key_is_a_503_until_the_server_has_it(
    start_server: ServerFactory, fake_openai: FakeOpenAI
) -> None:
    server = await start_server(credentials_key=FLEET_KEY)
    sealed_elsewhere = await cli(
        "apps", "credentials", "set", "test", "openai", data_dir=server.data_dir, stdin=STORED_KEY,
        BFSTREAM_CREDENTIALS_KEY=OLD_KEY,
    )  # fmt: skip
    assert sealed_elsewhere.returncode == 0, sealed_elsewhere.stderr
    for stream in (True, False):
        answer = await server.post("/stream/create", without_key(server, stream=stream))
        assert answer.status_code == 503, answer.text
        error = answer.json()["error"]
        assert error["type"] == "credential_unavailable" and error["code"] == "credential_unreadable"
        assert "credentials_key" in error["message"]
    assert fake_openai.requests == []  # neither the provider nor the configured key instead
    fake_openai.enqueue(invalid_key_reply(PROVIDER_KEY))
    own = await server.post("/stream/create", seed_body(server, stream=False))
    assert own.status_code == 502 and own.json()["error"]["code"] == 401  # the request's own key reached OpenAI
    listed = await cli("apps", "credentials", "list", "test", data_dir=server.data_dir,
                       BFSTREAM_CREDENTIALS_KEY=FLEET_KEY)  # fmt: skip
    assert "unreadable with this credentials_key" in listed.stdout

    # Rotation: the old key among the previous ones opens what it sealed.
    await server.stop()
    rotated = await start_server(data_dir=server.data_dir, credentials_key=FLEET_KEY,
                                 credentials_previous_keys=[OLD_KEY])  # fmt: skip
    fake_openai.requests.clear()
    fake_openai.enqueue(JsonReply(200, completion("ok")))
    assert (await rotated.post("/stream/create", without_key(rotated, stream=False))).status_code == 200
    assert (await fake_openai.nth_request(1)).headers["authorization"] == f"Bearer {STORED_KEY}"


async def test_a_row_moved_to_another_app_does_not_open_there(start_server: ServerFactory) -> None:
    server = await start_server()
    await cli("apps", "credentials", "set", "test", "openai", data_dir=server.data_dir, stdin=STORED_KEY)
    db = sqlite3.connect(server.data_dir / "bfstream.sqlite3")
    with db:
        db.execute("UPDATE app_credentials SET app_id = ? WHERE app_id = ?", (server.other_app_id, server.app_id))
    db.close()
    body = without_key(server, stream=False)
    body["apiKey"] = server.other_api_key
    answer = await server.post("/stream/create", body)
    assert answer.status_code == 503 and answer.json()["error"]["type"] == "credential_unavailable"


async def test_a_fleet_on_postgresql_uses_the_kept_key_and_an_instance_with_another_key_refuses(
    start_server: ServerFactory, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    async with throwaway_database() as url:
        first = await start_server(database_url=url, credentials_key=FLEET_KEY)
        stored = await cli("apps", "credentials", "set", "test", "openai", "--database-url", url,
                           data_dir=tmp_path / "cli", stdin=STORED_KEY, BFSTREAM_CREDENTIALS_KEY=FLEET_KEY)  # fmt: skip
        assert stored.returncode == 0, stored.stderr
        fake_openai.enqueue(JsonReply(200, completion("ok")))
        assert (await first.post("/stream/create", without_key(first, stream=False))).status_code == 200
        assert (await fake_openai.nth_request(1)).headers["authorization"] == f"Bearer {STORED_KEY}"

        mismatched = await start_server(data_dir=tmp_path / "other", database_url=url, credentials_key=OLD_KEY)
        body = without_key(first, stream=False)  # the same app: the instances share the database
        answer = await mismatched.post("/stream/create", body)
        assert answer.status_code == 503 and answer.json()["error"]["type"] == "credential_unavailable"
        assert len(fake_openai.requests) == 1
        await first.stop()
        await mismatched.stop()

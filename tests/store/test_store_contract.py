"""One contract for both stores: every test runs on SQLite and on a throwaway PostgreSQL database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bfstream.credentials import CredentialSealer
from bfstream.errors import CredentialUnavailable
from bfstream.store.records import StreamRecord
from bfstream.store.store import Store, migrations, open_store
from tests.secret_scan import STORED_KEY
from tests.services import throwaway_database

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite3'}"
    else:
        async with throwaway_database() as url:
            yield url


@pytest.fixture
async def store(database_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(database_url, tmp_path)
    yield opened
    await opened.close()


GONE = {"message": "gone", "code": 503, "details": None}


def _record(app_id: str, stream_id: str, owner: str | None = "i1") -> StreamRecord:
    return StreamRecord(stream_id, app_id, "openai", "gpt-4o", ["a", "b"], "onStream", owner=owner)


async def test_apps_keys_and_settings(store: Store) -> None:
    app, key = await store.create_app("shop")
    assert key.startswith("BFAPI_") and len(key) > 40
    assert await store.app_by_key(key) == app
    assert await store.app_by_key(key + "x") is None
    assert await store.app_by_id(app.id) == app
    assert await store.find_app("shop") == app and await store.find_app(app.id) == app
    assert not app.browser_publish and app.retain_text  # browsers publish only when the app says so
    await store.set_browser_publish(app.id, True)
    assert (await store.app_by_id(app.id)).browser_publish  # type: ignore[union-attr]
    await store.set_browser_publish(app.id, False)
    await store.set_retain_text(app.id, False)
    changed = await store.app_by_id(app.id)
    assert changed is not None and not changed.browser_publish and not changed.retain_text
    # created_at keeps sub-second precision (a 4-byte REAL in PostgreSQL would not)
    assert abs(app.created_at - time.time()) < 5 and changed.created_at == app.created_at
    new_key = await store.rotate_key(app.id)
    assert await store.app_by_key(key) is None and (await store.app_by_key(new_key)) is not None
    other, _ = await store.create_app("other")
    assert [a.name for a in await store.list_apps()] == ["shop", "other"]
    assert await store.delete_app(app.id) and not await store.delete_app(app.id)
    assert [a.id for a in await store.list_apps()] == [other.id]


async def test_a_key_rotated_with_grace_keeps_working_until_the_grace_ends(store: Store) -> None:
    app, first = await store.create_app("shop")
    second = await store.rotate_key(app.id, grace=60)
    assert await store.app_by_key(first) == app and await store.app_by_key(second) == app
    third = await store.rotate_key(app.id, grace=0.3)  # only the key it replaces is kept: the first ends now
    assert await store.app_by_key(first) is None
    assert await store.app_by_key(second) == app and await store.app_by_key(third) == app
    deadline = time.monotonic() + 5
    while await store.app_by_key(second) is not None:  # the grace lapses by itself, no sweep needed
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert await store.app_by_key(third) == app
    fourth = await store.rotate_key(app.id)  # no grace: the old key stops at once
    assert await store.app_by_key(third) is None and await store.app_by_key(fourth) == app


async def test_an_app_and_its_name_are_found_by_id_first(store: Store) -> None:
    first, _ = await store.create_app("x")
    second, _ = await store.create_app(first.id)  # named like the other's id
    assert await store.find_app(first.id) == first
    assert await store.find_app("x") == first and await store.find_app(second.id) == second


async def test_user_channels_and_authenticated_channels(store: Store) -> None:
    app, _ = await store.create_app("a")
    assert await store.channel_members(app.id, "room") is None
    await store.add_user_channels(app.id, "u1", [("room", "listen"), ("news", "ignore")])
    await store.add_user_channels(app.id, "u2", [("room", "receive")])
    await store.add_user_channels(app.id, "u1", [("room", "receive")])  # a second add changes the mode
    assert await store.user_channels(app.id, "u1") == [("news", "ignore"), ("room", "receive")]
    assert await store.channel_members(app.id, "room") == {"u1", "u2"}
    await store.remove_user_channels(app.id, "u1", ["room"])
    await store.remove_user_channels(app.id, "u2", ["room"])
    # emptied, the channel stays authenticated: it must not open up to everyone
    assert await store.channel_members(app.id, "room") == set()
    assert await store.authenticated_channels(app.id) == {"room", "news"}


async def test_stream_records_through_their_life(store: Store) -> None:
    app, _ = await store.create_app("a")
    record = _record(app.id, "s1")
    await store.record_stream_start(record)
    await store.record_stream_text("s1", "Hello", 7)
    saved = await store.stream_record(app.id, "s1")
    assert saved is not None and (saved.status, saved.text, saved.seq, saved.owner) == ("running", "Hello", 7, "i1")
    assert saved.channels == ["a", "b"]
    assert await store.stream_record("app_other", "s1") is None  # records belong to their app
    record.status, record.finish_reason, record.text, record.ended_at = "completed", "stop", "Hello world", time.time()
    record.usage, record.error, record.seq = {"prompt_tokens": 1}, None, 9
    await store.record_stream_end(record)
    ended = await store.stream_by_id("s1")
    assert ended is not None and (ended.status, ended.text, ended.usage, ended.seq) == (
        "completed", "Hello world", {"prompt_tokens": 1}, 9)  # fmt: skip
    await store.record_stream_start(_record(app.id, "s2"))
    assert [r.id for r in await store.recent_streams(10, app.id)] == ["s2", "s1"]
    assert [r.id for r in await store.recent_streams(1)] == ["s2"]


async def test_recent_failures_are_an_apps_failed_and_interrupted_streams_newest_first(store: Store) -> None:
    """For the dashboard's list of failed streams (api/admin.py)."""
    app, _ = await store.create_app("a")
    other, _ = await store.create_app("b")
    endings = [("s1", app.id, "failed"), ("s2", app.id, "completed"), ("s3", other.id, "failed"),
               ("s4", app.id, "interrupted"), ("s5", app.id, "stopped"), ("s6", app.id, "running")]  # fmt: skip
    for at, (stream_id, app_id, status) in enumerate(endings):
        record = _record(app_id, stream_id)
        record.created_at = 1000.0 + at
        await store.record_stream_start(record)
        if status != "running":
            record.status, record.ended_at, record.error = status, 2000.0, GONE if status != "completed" else None
            await store.record_stream_end(record)
    failures = await store.recent_failures(10, app.id)
    assert [(r.id, r.status) for r in failures] == [("s4", "interrupted"), ("s1", "failed")]
    assert failures[1].error == GONE
    assert [r.id for r in await store.recent_failures(1, app.id)] == ["s4"]


async def test_running_streams_text_is_saved_at_once_and_an_ended_one_is_named(store: Store) -> None:
    """The saver's one statement a second for every running stream (streams/saver.py)."""
    app, _ = await store.create_app("a")
    for stream_id in ("s1", "s2", "s3"):
        await store.record_stream_start(_record(app.id, stream_id))
    assert len(await store.claim_orphans("i1", GONE)) == 3  # another instance took i1 for dead
    await store.record_stream_start(_record(app.id, "s4"))
    gone = await store.record_streams_text([("s4", "Hello", 3), ("s1", "late", 9)])
    assert gone == {"s1"}  # claimed by another instance: its owner must stop
    saved = await store.stream_by_id("s4")
    assert saved is not None and (saved.text, saved.seq) == ("Hello", 3)
    assert await store.record_streams_text([]) == set()


async def test_orphans_are_claimed_once_and_ended_records_stay_as_they_are(store: Store) -> None:
    app, _ = await store.create_app("a")
    for stream_id, owner in (("s1", "dead"), ("s2", "dead"), ("s3", "alive"), ("s4", None)):
        await store.record_stream_start(_record(app.id, stream_id, owner))
    assert await store.running_owners() == {"dead", "alive", None}
    first, second = await asyncio.gather(store.claim_orphans("dead", GONE), store.claim_orphans("dead", GONE))
    assert sorted(r.id for r in first + second) == ["s1", "s2"]  # each exactly once
    assert [r.id for r in await store.claim_orphans(None, GONE)] == ["s4"]
    claimed = await store.stream_by_id("s4")
    assert claimed is not None
    assert (claimed.status, claimed.finish_reason, claimed.error) == ("interrupted", "error", GONE)
    assert await store.running_owners() == {"alive"}
    # the dead owner, thawed, learns from its next save that the stream is no longer its own
    assert not await store.record_stream_text("s1", "late", 99)
    assert await store.record_stream_text("s1", "rebuilt", 5, status="interrupted")
    assert (await store.stream_by_id("s1")).text == "rebuilt"  # type: ignore[union-attr]
    # the dead owner finishing late does not overwrite what the claim said
    late = _record(app.id, "s1", "dead")
    late.status = "completed"
    await store.record_stream_end(late)
    assert (await store.stream_by_id("s1")).status == "interrupted"  # type: ignore[union-attr]


async def test_signing_key_is_made_once_and_shared(database_url: str, tmp_path: Path) -> None:
    one, two = await open_store(database_url, tmp_path), await open_store(database_url, tmp_path)
    try:
        assert await one.signing_key() == await two.signing_key()
    finally:
        await one.close()
        await two.close()


async def test_migrations_run_once_even_when_instances_start_together(database_url: str, tmp_path: Path) -> None:
    stores = await asyncio.gather(*(open_store(database_url, tmp_path) for _ in range(4)))
    try:
        app, _ = await stores[0].create_app("a")
        assert await stores[3].app_by_id(app.id) == app
    finally:
        for opened in stores:
            await opened.close()
    reopened = await open_store(database_url, tmp_path)  # nothing left to apply, and nothing lost
    try:
        assert [a.id for a in await reopened.list_apps()] == [app.id]
    finally:
        await reopened.close()
    assert [version for version, _ in migrations()] == list(range(1, len(migrations()) + 1))


async def test_a_database_made_before_migrations_existed_is_brought_up_to_date(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "bfstream.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(migrations()[0][1])  # the schema as it stood, with an app in it
    old.execute("INSERT INTO apps (id, name, key_hash, created_at) VALUES ('app_1', 'kept', 'h', 1.5)")
    old.commit()
    old.close()
    store = await open_store(None, tmp_path)
    try:
        assert [a.name for a in await store.list_apps()] == ["kept"]
        await store.record_stream_start(_record("app_1", "s1", "i9"))
        assert (await store.stream_by_id("s1")).owner == "i9"  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_credentials_are_kept_sealed_per_app_and_service_and_go_with_their_app(store: Store) -> None:
    shop, _ = await store.create_app("shop")
    other, _ = await store.create_app("other")
    box = CredentialSealer("a-credentials-key-for-the-contract-test")
    await store.set_credential(shop.id, "openai", box.seal(shop.id, "openai", STORED_KEY))
    await store.set_credential(shop.id, "anthropic", box.seal(shop.id, "anthropic", "sk-ant-first"))
    await store.set_credential(shop.id, "anthropic", box.seal(shop.id, "anthropic", "sk-ant-second"))  # replaced
    sealed = await store.credential(shop.id, "openai")
    assert sealed is not None and STORED_KEY not in sealed and box.open(shop.id, "openai", sealed) == STORED_KEY
    listed = await store.credentials(shop.id)
    assert [service for service, _, _ in listed] == ["anthropic", "openai"]
    assert box.open(shop.id, "anthropic", listed[0][1]) == "sk-ant-second"
    assert await store.credential(other.id, "openai") is None and await store.credentials(other.id) == []
    with pytest.raises(CredentialUnavailable):  # bound to its app and service: a copied value does not open
        box.open(other.id, "openai", sealed)
    with pytest.raises(CredentialUnavailable):
        box.open(shop.id, "anthropic", sealed)
    with pytest.raises(CredentialUnavailable):  # another server's key
        CredentialSealer("another-credentials-key-0123456789").open(shop.id, "openai", sealed)
    assert (
        CredentialSealer("a-new-key-after-rotation-0123456789", ["a-credentials-key-for-the-contract-test"]).open(
            shop.id, "openai", sealed
        )
        == STORED_KEY
    )
    rotated = CredentialSealer("a-new-key-after-rotation-0123456789", ["a-credentials-key-for-the-contract-test"])
    kept = await store.all_credentials()
    assert [(a, s) for a, s, _ in kept] == [(shop.id, "anthropic"), (shop.id, "openai")]
    await store.reseal_credentials([(a, s, rotated.seal(a, s, rotated.open(a, s, v))) for a, s, v in kept])
    resealed = await store.credential(shop.id, "openai")
    assert resealed is not None
    assert CredentialSealer("a-new-key-after-rotation-0123456789").open(shop.id, "openai", resealed) == STORED_KEY
    assert await store.delete_credential(shop.id, "anthropic") and not await store.delete_credential(
        shop.id, "anthropic"
    )
    await store.delete_app(shop.id)
    assert await store.credentials(shop.id) == []  # gone with the app

"""What a join recovers from streams' logs when the channel's history was cut short.

A channel keeps its last ``history_size`` messages, shared by every stream and message it carries;
a long answer outgrows it, and a page that joins late (or comes back after a while) would replay
only the answer's tail. So when a join with ``since`` finds the history incomplete after the
client's position, each stream that had an event on the channel after that position is made whole
from its own log (``broker.py``): one snapshot standing for the part of the stream the replay no
longer holds, then the stream's ``error``/``end`` if the replay does not hold those either. Once a
log has expired, an ended stream's record stands in for it, when it kept the text.

The recovered events go to the client before the replay, as message frames marked ``"log": true``
at the position the client already stands at (``protocol.log_frame``). Afterwards the session
drops every replayed or held event that they already stood for (``covers``), so each
``(streamId, seq)`` reaches the client once, or is stood for by one snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bfstream.errors import StoreError
from bfstream.messaging.broker import History, Publication
from bfstream.messaging.hub import Hub
from bfstream.messaging.protocol import FROM_SERVER
from bfstream.messaging.streamlog import TERMINAL, action_of, ending_of, event_data, event_of, fold
from bfstream.store.store import Store

MAX_STREAMS = 100  # streams one join recovers, the latest first: a busy channel's older ones are long over
_SERVER = '"from":' + FROM_SERVER  # in a publication's data: bfstream's own (a stream's events), worth parsing


@dataclass(slots=True)
class Recovered:
    data: list[str] = field(default_factory=list)  # publication data to send, in order
    covered: dict[str, int] = field(default_factory=dict)  # stream -> the last seq what was sent stands for

    def covers(self, publication: Publication) -> bool:
        """Whether ``publication`` is a stream event that what was recovered already stood for."""
        if not self.covered or _SERVER not in publication.data:
            return False
        event = event_of(publication.data)
        return event is not None and event["seq"] <= self.covered.get(event["streamId"], -1)


async def recover(hub: Hub, store: Store, app_id: str, channel: str, after: int) -> tuple[Recovered, History]:
    """For ``channel`` (scoped), the streams with an event after offset ``after``: what the history
    after it misses of them, and that history, which the join replays.

    The logs are read first, the history after them: whatever a log read lacks was published after
    it, so it is in that history or comes later, live, numbered past what the snapshot stands for.
    (Read the other way round, an event published between the two reads would reach the page twice.)"""
    recovered = Recovered()
    streams = (await hub.streams_after(channel, after))[-MAX_STREAMS:]
    logs = {stream: (home, await hub.read_log(stream, home)) for stream, home in streams}
    history = await hub.history(channel, after)
    replayed: dict[str, list[dict[str, Any]]] = {stream: [] for stream in logs}  # their events in the replay
    for publication in history.publications:
        if _SERVER in publication.data and (event := event_of(publication.data)) is not None:
            if (events := replayed.get(event["streamId"])) is not None:
                events.append(event)
    for stream, (home, entries) in logs.items():
        first = replayed[stream][0]["seq"] if replayed[stream] else None
        if first == 0:
            continue  # the replay holds all of it
        if entries and first is not None and entries[-1][0] < first - 1:
            entries = await hub.read_log(stream, home)  # events logged and trimmed from history in between
        if entries:
            _from_log(recovered, stream, entries, replayed[stream])
        else:
            await _from_record(recovered, store, app_id, stream, replayed[stream])
    return recovered, history


def _from_log(
    recovered: Recovered, stream: str, entries: list[tuple[int, str]], replayed: list[dict[str, Any]]
) -> None:
    """A snapshot of what comes before the stream's first replayed event; with nothing of it
    replayed, a snapshot of all of it but its error and end and its calls still awaiting a page's
    answer, then those."""
    events = [event for _, data in entries if (event := event_of(data)) is not None]
    action = action_of(entries[0][1])
    if replayed:
        first = replayed[0]["seq"]
        prefix = [event for event in events if event["seq"] < first]
        if prefix:
            _send(recovered, action, fold(prefix))
        elif events and events[0]["type"] == "snapshot":
            # Folded past ``first``: the part before it is the snapshot less what the replayed events
            # it also stands for add. Should they not add up, the whole snapshot goes, and the
            # replayed events it stands for are dropped.
            _send(recovered, action, _before(events[0], replayed) or events[0])
        return
    tail = [event for event in events if event["type"] in TERMINAL]
    body = [event for event in events if event["type"] not in TERMINAL]
    while not tail and body and body[-1]["type"] == "tool_call":
        tail.insert(0, body.pop())  # awaiting a page's answer: the page must get the call itself
    if body:
        _send(recovered, action, fold(body))
    for event in tail:
        recovered.data.append(event_data(action, event))
        recovered.covered[stream] = event["seq"]


def _before(snapshot: dict[str, Any], replayed: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``snapshot`` less the ``replayed`` events (the stream's, in order, from some seq on) that it
    also stands for: a snapshot ending right before the first of them. None when they do not match."""
    suffix = fold([event for event in replayed if event["seq"] <= snapshot["seq"]])
    before = {**snapshot, "seq": replayed[0]["seq"] - 1}
    for key in ("text", "reasoning"):  # strings the events add to
        whole, added = snapshot.get(key), suffix.get(key) or ""
        if whole is None:
            if added:
                return None
            continue
        if not whole.endswith(added):
            return None
        before[key] = whole[: len(whole) - len(added)]
    for key in ("functions", "sources"):  # lists the events add to
        items, added = list(snapshot.get(key) or []), suffix.get(key) or []
        if added and items[-len(added) :] != added:
            return None
        before.pop(key, None)
        if kept := items[: len(items) - len(added)]:
            before[key] = kept
    return before


def _send(recovered: Recovered, action: str, snapshot: dict[str, Any]) -> None:
    recovered.data.append(event_data(action, snapshot))
    recovered.covered[snapshot["streamId"]] = snapshot["seq"]


async def _from_record(
    recovered: Recovered, store: Store, app_id: str, stream: str, replayed: list[dict[str, Any]]
) -> None:
    """The log expired: an ended stream's record has its final text (when the app keeps text), from
    which the part before the replay is what the replayed events do not account for."""
    try:
        record = await store.stream_by_id(stream)
    except StoreError:
        return  # the database is away: the replay is all this join can give
    if record is None or record.app_id != app_id or record.status == "running" or record.text is None:
        return
    told = ending_of(record)
    if replayed:
        if told[0]["type"] == "snapshot" and (before := _before(told[0], replayed)) is not None:
            _send(recovered, record.action_name, before)
        return  # else the record does not agree with the replay: better the replay alone than a wrong text
    for event in told:
        recovered.data.append(event_data(record.action_name, event))
    recovered.covered[stream] = record.seq - 1

// The pure parts of bfstream.js: positions, backoff, SSE parsing, stream ordering, catch-up.
import assert from "node:assert/strict";
import test from "node:test";

import { Backoff, Core, decodePositions, encodePositions, SSEParser, StreamTracker } from "../../bfstream/static/bfstream.js";

// ---- positions ------------------------------------------------------------------------------

test("positions encode as the server's protocol.encode_positions does", () => {
  // Vectors made with bfstream.messaging.protocol.encode_positions.
  assert.equal(encodePositions({ room1: [41, "dN3kq2Xa"] }), "eyJyb29tMSI6WzQxLCJkTjNrcTJYYSJdfQ");
  assert.equal(encodePositions(new Map([["a", [1, "E1"]], ["b", [22, "E2"]]])), "eyJhIjpbMSwiRTEiXSwiYiI6WzIyLCJFMiJdfQ");
});

test("positions decode, the server's escapes of non-ASCII names included, and round-trip", () => {
  assert.deepEqual([...decodePositions("eyJzYWxsZS1cdTAwZTkvXHUyNzEzIjpbNywieCJdfQ")], [["salle-é/✓", [7, "x"]]]);
  const positions = new Map([["salle-é/✓", [7, "x"]], ["__proto__", [3, "y"]]]);
  assert.deepEqual(decodePositions(encodePositions(positions)), positions);
  assert.deepEqual(decodePositions("%%%"), new Map());
  assert.deepEqual(decodePositions(encodePositions({ a: [1, "e"] }).slice(0, 5)), new Map());
});

// ---- backoff ----------------------------------------------------------------------------------

test("backoff doubles up to its ceiling, each wait jittered within [1 - jitter, 1] of it", () => {
  const low = new Backoff({ base: 100, max: 1000, random: () => 0 });
  assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => low.next(0)), [50, 100, 200, 400, 500, 500]);
  const high = new Backoff({ base: 100, max: 1000, random: () => 0.999999 });
  const waits = [1, 2, 3, 4, 5].map(() => high.next(0));
  for (const [i, ceiling] of [100, 200, 400, 800, 1000].entries()) {
    assert.ok(waits[i] > ceiling * 0.99 && waits[i] <= ceiling, `${waits[i]} vs ${ceiling}`);
  }
  let seed = 1;
  const random = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
  const jittered = new Backoff({ base: 1000, max: 1000, random });
  const spread = new Set(Array.from({ length: 20 }, () => Math.round(jittered.next(0))));
  assert.ok(spread.size > 10, "waits are spread, so that clients dropped together do not return together");
});

test("backoff starts over after a connection that stayed open, not after one that dropped at once", () => {
  const backoff = new Backoff({ base: 100, max: 10000, jitter: 0, stableMs: 5000 });
  assert.deepEqual([backoff.next(0), backoff.next(0), backoff.next(0)], [100, 200, 400]);
  backoff.opened(10_000);
  assert.equal(backoff.next(10_100), 800, "open 100 ms only: keeps backing off");
  backoff.opened(20_000);
  assert.equal(backoff.next(26_000), 100, "open 6 s: starts over");
  assert.equal(backoff.next(26_000), 200);
  backoff.reset();
  assert.equal(backoff.next(0), 100);
});

// ---- SSE --------------------------------------------------------------------------------------

test("the SSE parser takes events split anywhere, CRLF and CR included, and skips comments", () => {
  const text = 'event: hello\r\ndata: {"op":"hello"}\r\n\r\n: keep-alive\n\nid: abc\ndata: {"a":\ndata: 1}\n\rdata: x\r\r\n';
  for (const size of [1, 2, 3, 7, text.length]) {
    const parser = new SSEParser();
    const events = [];
    for (let i = 0; i < text.length; i += size) events.push(...parser.push(text.slice(i, i + size)));
    assert.deepEqual(events, [
      { event: "hello", data: '{"op":"hello"}', id: "" },
      { event: "message", data: '{"a":\n1}', id: "abc" },
      { event: "message", data: "x", id: "abc" },
    ], `chunks of ${size}`);
  }
});

// ---- stream ordering ----------------------------------------------------------------------------

const seqs = (entries) => entries.map((e) => (e.type === "gap" ? `gap ${e.expected}-${e.got}` : e.item));

test("stream events are delivered once and in order; early ones wait for the missing", () => {
  const tracker = new StreamTracker({ gapWaitMs: 100 });
  assert.deepEqual(seqs(tracker.accept("s", 0, 0)), [0]);
  assert.deepEqual(seqs(tracker.accept("s", 0, 0)), []);
  assert.deepEqual(seqs(tracker.accept("s", 2, 2, { now: 10 })), []);
  assert.deepEqual(seqs(tracker.accept("s", 3, 3, { now: 20 })), []);
  assert.equal(tracker.nextDeadline(), 110);
  assert.deepEqual(seqs(tracker.accept("s", 1, 1, { now: 30 })), [1, 2, 3]);
  assert.equal(tracker.nextDeadline(), null);
  assert.deepEqual(seqs(tracker.accept("s", 4, 4, { last: true })), [4]);
  assert.deepEqual(seqs(tracker.accept("s", 5, 5)), [], "nothing after the end");
});

test("a gap that nothing fills is reported once its wait is over, then what follows runs", () => {
  const tracker = new StreamTracker({ gapWaitMs: 100 });
  tracker.accept("s", 0, 0);
  tracker.accept("s", 3, 3, { now: 0 });
  tracker.accept("s", 4, 4, { now: 0 });
  tracker.accept("s", 7, 7, { now: 50, last: true });
  assert.deepEqual(seqs(tracker.expire(99)), []);
  assert.deepEqual(seqs(tracker.expire(100)), ["gap 1-3", 3, 4, "gap 5-7", 7]);
  assert.deepEqual(seqs(tracker.accept("s", 1, 1)), []);
});

test("a stream first seen mid-way starts there, unless it must be seen from its start", () => {
  const tracker = new StreamTracker({ gapWaitMs: 100 });
  assert.deepEqual(seqs(tracker.accept("live", 5, 5)), [5]);
  assert.deepEqual(seqs(tracker.accept("caught-up", 5, 5, { fromStart: true, now: 0 })), []);
  assert.deepEqual(seqs(tracker.expire(100)), ["gap 0-5", 5]);
});

test("the tracker forgets ended streams first when it holds too many", () => {
  const tracker = new StreamTracker({ maxStreams: 2 });
  tracker.accept("a", 0, 0, { last: true });
  tracker.accept("b", 0, 0);
  tracker.accept("c", 0, 0);
  assert.deepEqual([...tracker.streams.keys()], ["b", "c"]);
});

// ---- Core: frames in, what the page gets out -----------------------------------------------------

const ACTION = "assistantReceiveResultsStream";
let offsets = {};

function event(streamId, seq, type = "delta", extra = {}) {
  const content = type === "delta" ? `w${seq} ` : undefined;
  return { type, streamId, seq, ...(content === undefined ? {} : { content }), ...extra };
}

function frame(channel, offset, options, { epoch = "E", kind = "server", name = ACTION } = {}) {
  return {
    op: "message",
    channel,
    offset,
    epoch,
    from: { kind },
    message: { actions: [{ action: "namedAction", name, options }] },
  };
}

function makeCore(options = {}) {
  const seen = { actions: [], messages: [], gaps: [] };
  const core = new Core(
    {
      action: (name, o) => seen.actions.push(o.streamId ? `${o.streamId}:${o.seq}` : `${name}`),
      message: (m, f) => seen.messages.push(`${f.channel}@${f.offset}`),
      gap: (info) => seen.gaps.push(info),
    },
    options,
  );
  core.onHello({ op: "hello", connectionId: "c", channels: ["tab|c"] });
  return { core, seen };
}

function joinLive(core, channel, offset = 0, epoch = "E") {
  core.add(channel, { catchUp: false });
  assert.equal(core.onJoined({ op: "joined", channel, recovered: false, offset, epoch }), "joined");
}

test("a channel's position follows the frames handled, and a reconnect resumes from it", () => {
  offsets = {};
  const { core, seen } = makeCore();
  assert.equal(core.resumeSince("room"), null);
  joinLive(core, "room", 4);
  assert.deepEqual(core.resumeSince("room"), { offset: 4, epoch: "E" });
  core.onMessage(frame("room", 5, event("s", 0, "threadInfo")));
  core.onMessage(frame("room", 6, event("s", 1)));
  assert.deepEqual(core.resumeSince("room"), { offset: 6, epoch: "E" });
  // The reconnect: join with since = (6, E); the server replays from 7, and a frame sent twice counts once.
  assert.equal(core.onJoined({ op: "joined", channel: "room", recovered: true, offset: 6, epoch: "E" }, { offset: 6, epoch: "E" }), "joined");
  core.onMessage(frame("room", 6, event("s", 1)));
  core.onMessage(frame("room", 7, event("s", 2)));
  assert.deepEqual(seen.actions, ["s:0", "s:1", "s:2"]);
  assert.deepEqual(seen.messages, ["room@5", "room@6", "room@7"]);
  assert.deepEqual(seen.gaps, []);
  assert.deepEqual([...core.positions()], [["room", [7, "E"]]]);
});

test("a position that cannot be recovered is reported, never skipped in silence", () => {
  const { core, seen } = makeCore();
  joinLive(core, "room", 10, "E1");
  core.onJoined({ op: "joined", channel: "room", recovered: false, offset: 0, epoch: "E2" }, { offset: 10, epoch: "E1" });
  core.onJoined({ op: "joined", channel: "room", recovered: false, offset: 0, epoch: "E2" }, { offset: 0, epoch: "E2" });
  assert.deepEqual(seen.gaps.map((g) => [g.channel, g.reason]), [["room", "epoch"], ["room", "history"]]);
  assert.deepEqual(core.resumeSince("room"), { offset: 0, epoch: "E2" });
});

test("a connection in two channels gets each event of a stream sent to both once, in order", () => {
  const { core, seen } = makeCore();
  joinLive(core, "a");
  joinLive(core, "b", 7);
  for (let seq = 0; seq < 3; seq++) {
    core.onMessage(frame("a", 1 + seq, event("s", seq)));
    core.onMessage(frame("b", 8 + seq, event("s", seq)));
  }
  for (let seq = 3; seq < 6; seq++) core.onMessage(frame("a", 1 + seq, event("s", seq)));
  // The connection drops; b, which was behind, resumes from 10 and replays what a delivered already.
  core.onJoined({ op: "joined", channel: "b", recovered: true, offset: 10, epoch: "E" }, { offset: 10, epoch: "E" });
  core.onMessage(frame("b", 11, event("s", 3)));
  core.onMessage(frame("b", 12, event("s", 4)));
  core.onMessage(frame("b", 13, event("s", 5)));
  core.onMessage(frame("b", 14, event("s", 6, "end", { text: "whole" })));
  core.onMessage(frame("a", 7, event("s", 6, "end", { text: "whole" })));
  assert.deepEqual(seen.actions, ["s:0", "s:1", "s:2", "s:3", "s:4", "s:5", "s:6"]);
  assert.equal(seen.messages.length, 14, "raw messages: every frame, once per channel");
  assert.equal(core.text("s"), "whole");
});

test("only bfstream's own frames carry stream events: look-alikes from browsers never run", () => {
  const { core, seen } = makeCore();
  joinLive(core, "room");
  core.onMessage(frame("room", 1, event("s", 0, "threadInfo")));
  core.onMessage(frame("room", 2, event("s", 1, "delta", { content: "FORGED" }), { kind: "browser" }));
  core.onMessage(frame("room", 3, event("s", 1, "delta", { content: "FORGED" }), { kind: "api" }));
  core.onMessage(frame("room", 4, event("s", 1)));
  core.onMessage(frame("room", 5, { note: "from a page" }, { kind: "browser", name: "refresh" }));
  core.onMessage(frame("room", 6, { note: "from the back end" }, { kind: "api", name: "refresh" }));
  core.onMessage(frame("room", 7, { note: "from the back end" }, { kind: "api", name: "other" }));
  assert.deepEqual(seen.actions, ["s:0", "s:1", "refresh", "other"]);
  assert.equal(core.text("s"), "w1 ");
  assert.deepEqual(seen.messages, ["room@1", "room@2", "room@3", "room@4", "room@5", "room@6", "room@7"]);
});

test("browserActions lets pages run each other's named actions, still never stream look-alikes", () => {
  const { core, seen } = makeCore({ browserActions: true });
  joinLive(core, "room");
  core.onMessage(frame("room", 1, event("s", 0), { kind: "browser" }));
  core.onMessage(frame("room", 2, { x: 1 }, { kind: "browser", name: "refresh" }));
  assert.deepEqual(seen.actions, ["refresh"]);
});

test("catch-up: a page joining mid-answer gets it from its first word; ended answers and old messages stay old", () => {
  const { core, seen } = makeCore();
  core.add("room");
  // The channel stands at offset 6: an ended stream (1-3), a back end's message (4), a running one (5-6).
  assert.equal(core.onJoined({ op: "joined", channel: "room", recovered: false, offset: 6, epoch: "E" }), "restart");
  assert.deepEqual(core.resumeSince("room"), { offset: 0, epoch: "E" });
  core.onMessage(frame("room", 7, event("run", 2))); // before the restart's reply: sent again after it
  core.onJoined({ op: "joined", channel: "room", recovered: true, offset: 0, epoch: "E" }, { offset: 0, epoch: "E" });
  core.onMessage(frame("room", 1, event("old", 0, "threadInfo")));
  core.onMessage(frame("room", 2, event("old", 1)));
  core.onMessage(frame("room", 3, event("old", 2, "end", { text: "old" })));
  core.onMessage(frame("room", 4, {}, { kind: "api", name: "refresh" }));
  core.onMessage(frame("room", 5, event("run", 0, "threadInfo")));
  assert.deepEqual(seen.actions, [], "held until the replay reaches where the channel stood");
  core.onMessage(frame("room", 6, event("run", 1)));
  assert.deepEqual(seen.actions, ["run:0", "run:1"]);
  core.onMessage(frame("room", 7, event("run", 2)));
  core.onMessage(frame("room", 8, event("run", 3, "end", { text: "w1 w2 " })));
  assert.deepEqual(seen.actions, ["run:0", "run:1", "run:2", "run:3"]);
  assert.deepEqual(seen.messages, ["room@5", "room@6", "room@7", "room@8"]);
  assert.equal(core.text("old"), "");
  assert.equal(core.text("run"), "w1 w2 ");
});

test("catch-up after an answer ended runs nothing of it; without catch-up, a join starts live", () => {
  const { core, seen } = makeCore();
  core.add("room");
  core.onJoined({ op: "joined", channel: "room", recovered: false, offset: 3, epoch: "E" });
  core.onJoined({ op: "joined", channel: "room", recovered: true, offset: 0, epoch: "E" }, { offset: 0, epoch: "E" });
  core.onMessage(frame("room", 1, event("old", 0, "threadInfo")));
  core.onMessage(frame("room", 2, event("old", 1)));
  core.onMessage(frame("room", 3, event("old", 2, "end")));
  core.onMessage(frame("room", 4, event("new", 0, "threadInfo")));
  assert.deepEqual(seen.actions, ["new:0"]);

  core.add("later", { catchUp: false });
  assert.equal(core.onJoined({ op: "joined", channel: "later", recovered: false, offset: 9, epoch: "E" }), "joined");
  core.onMessage(frame("later", 10, event("mid", 4)));
  assert.deepEqual(seen.actions, ["new:0", "mid:4"], "a page that wants only what comes next starts mid-answer");
});

test("catch-up whose start has left the history says what is missing", () => {
  const { core, seen } = makeCore({ gapWaitMs: 0 });
  core.add("room");
  core.onJoined({ op: "joined", channel: "room", recovered: false, offset: 50, epoch: "E" });
  core.onJoined({ op: "joined", channel: "room", recovered: false, offset: 0, epoch: "E" }, { offset: 0, epoch: "E" });
  core.onMessage(frame("room", 49, event("run", 40)));
  core.onMessage(frame("room", 50, event("run", 41)));
  core.expire();
  assert.deepEqual(seen.gaps.map((g) => g.reason), ["history", "stream"]);
  assert.deepEqual(seen.gaps[1], { reason: "stream", streamId: "run", expected: 0, got: 40 });
  assert.deepEqual(seen.actions, ["run:40", "run:41"]);
});

test("a drop during catch-up resumes the replay where it was, and a new epoch ends the catch-up", () => {
  const { core, seen } = makeCore();
  core.add("room");
  core.onJoined({ op: "joined", channel: "room", recovered: false, offset: 3, epoch: "E" });
  // Dropped before the restart's reply came: the next connection restarts from 0 again.
  assert.deepEqual(core.resumeSince("room"), { offset: 0, epoch: "E" });
  core.onJoined({ op: "joined", channel: "room", recovered: true, offset: 0, epoch: "E" }, { offset: 0, epoch: "E" });
  core.onMessage(frame("room", 1, event("run", 0, "threadInfo")));
  assert.deepEqual(core.resumeSince("room"), { offset: 1, epoch: "E" });
  core.onJoined({ op: "joined", channel: "room", recovered: true, offset: 1, epoch: "E" }, { offset: 1, epoch: "E" });
  core.onMessage(frame("room", 2, event("run", 1)));
  core.onMessage(frame("room", 3, event("run", 2)));
  assert.deepEqual(seen.actions, ["run:0", "run:1", "run:2"]);

  core.add("other");
  core.onJoined({ op: "joined", channel: "other", recovered: false, offset: 5, epoch: "E" });
  core.onJoined({ op: "joined", channel: "other", recovered: false, offset: 0, epoch: "F" }, { offset: 0, epoch: "E" });
  core.onMessage(frame("other", 1, event("x", 0, "threadInfo"), { epoch: "F" }));
  assert.deepEqual(seen.actions.slice(3), ["x:0"], "offsets of the new epoch are not held against the old one");
});

test("the private channel's messages run; a channel left stops at once", () => {
  const { core, seen } = makeCore();
  core.onMessage(frame("tab|c", 1, {}, { kind: "api", name: "toThisTab" }));
  joinLive(core, "room");
  core.remove("room");
  core.onMessage(frame("room", 1, {}, { kind: "api", name: "late" }));
  assert.deepEqual(seen.actions, ["toThisTab"]);
});

test("a stream's end numbered from the server's last save still ends it; other repeats do not run", () => {
  const tracker = new StreamTracker();
  const seqs = (entries) => entries.map((e) => e.item.seq);
  assert.deepEqual(seqs(tracker.accept("s", 0, { seq: 0 })), [0]);
  assert.deepEqual(seqs(tracker.accept("s", 1, { seq: 1 })), [1]);
  assert.deepEqual(seqs(tracker.accept("s", 2, { seq: 2 })), [2]);
  assert.deepEqual(tracker.accept("s", 1, { seq: 1 }), []); // a repeat
  assert.deepEqual(seqs(tracker.accept("s", 1, { seq: "end" }, { last: true })), ["end"]); // not a repeat: the end
  assert.deepEqual(tracker.accept("s", 3, { seq: 3 }), []); // ended
  assert.deepEqual(tracker.accept("s", 1, { seq: "end" }, { last: true }), []); // and ended once
});

test("a resume that finds a new epoch takes all of it from offset 0 before going live", () => {
  const actions = [];
  const gaps = [];
  const core = new Core({ action: (name, options) => actions.push(options), message: () => {}, gap: (g) => gaps.push(g) });
  core.add("room", { catchUp: false });
  core.onJoined({ op: "joined", channel: "room", recovered: false, offset: 2, epoch: "OLD", id: 1 });
  const streamEvent = (offset, epoch, seq, type = "delta", streamId = "t") => ({
    op: "message", channel: "room", offset, epoch, from: { kind: "server" },
    message: { actions: [{ action: "namedAction", name: "a", options: { type, streamId, seq, content: "x" } }] },
  });
  core.onMessage(streamEvent(3, "OLD", 0, "delta", "s"));
  assert.equal(core.onJoined({ op: "joined", channel: "room", recovered: false, offset: 5, epoch: "NEW", id: 2 },
    { offset: 3, epoch: "OLD" }), "restart");
  assert.deepEqual(gaps.map((g) => g.reason), ["epoch"]);
  assert.deepEqual(core.resumeSince("room"), { offset: 0, epoch: "NEW" });
  core.onMessage(streamEvent(6, "NEW", 5)); // live before the replay's reply: it comes again
  core.onJoined({ op: "joined", channel: "room", recovered: true, offset: 0, epoch: "NEW", id: 3 }, { offset: 0, epoch: "NEW" });
  for (let offset = 1; offset <= 6; offset++) core.onMessage(streamEvent(offset, "NEW", offset - 1, offset === 1 ? "threadInfo" : "delta"));
  // The stream that started in the new epoch while the page was away, whole and in order.
  assert.deepEqual(actions.map((o) => `${o.streamId}${o.seq}`), ["s0", "t0", "t1", "t2", "t3", "t4", "t5"]);
});

// Joins that the channel's history could not serve whole: frames recovered from a stream's log
// ("log": true) and the snapshot event, which stands for a stream's seq 0..m. What guards here: a
// page's handler that appends deltas, and client.text(streamId), both end with the whole answer,
// each part once, whatever mix of log frames, replay and live frames brought it; and the same of
// the model's thinking (reasoning events, client.reasoning) and its sources (client.sources).
import assert from "node:assert/strict";
import test from "node:test";

import { connect, Core, decodePositions, StreamTracker } from "../../bfstream/static/bfstream.js";
import { fakeWebSocket, sseResponse, until } from "./fakes.mjs";

const ACTION = "assistantReceiveResultsStream";
const words = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => `w${from + i} `).join("");

function event(streamId, seq, type = "delta", extra = {}) {
  const content = type === "delta" ? `w${seq} ` : undefined;
  return { type, streamId, seq, ...(content === undefined ? {} : { content }), ...extra };
}

const threadInfo = (streamId) => event(streamId, 0, "threadInfo", { content: { streamId, service: "echo", model: "e1" } });
const end = (streamId, seq, text, extra = {}) => event(streamId, seq, "end", { finish_reason: "stop", usage: null, text, ...extra });

/** The snapshot of a stream of threadInfo (0) and deltas "w1 ", "w2 ", ...: seq 0..seq folded. */
function snapshot(streamId, seq, extra = {}) {
  return { type: "snapshot", streamId, seq, text: words(1, seq), status: "running", service: "echo", model: "e1", ...extra };
}

function frame(channel, offset, options, { epoch = "E", log = false } = {}) {
  const actions = [{ action: "namedAction", name: ACTION, options }];
  return { op: "message", channel, offset, epoch, ...(log ? { log } : {}), from: { kind: "server" }, message: { actions } };
}

const logFrame = (channel, offset, options, epoch = "E") => frame(channel, offset, options, { epoch, log: true });

/** A Core and what its page saw: each action as "stream:seq[:type]", and what an appending handler built. */
function makeCore(options = {}) {
  const seen = { actions: [], events: [], messages: [], gaps: [], calls: [], appended: new Map() };
  const core = new Core(
    {
      action: (name, o) => {
        seen.events.push(o);
        seen.actions.push(`${o.streamId}:${o.seq}${o.type === "delta" ? "" : `:${o.type}`}`);
        if (o.type === "delta") seen.appended.set(o.streamId, (seen.appended.get(o.streamId) ?? "") + o.content);
      },
      message: (m, f) => seen.messages.push(`${f.channel}@${f.offset}${f.log ? " log" : ""}`),
      gap: (info) => seen.gaps.push(info),
      toolCall: (call) => seen.calls.push(call.toolCallId),
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

// ---- the tracker ---------------------------------------------------------------------------------

const order = (entries) => entries.map((e) => (e.type === "gap" ? `gap ${e.expected}-${e.got}` : e.item));

test("tracker: a snapshot starts an unknown stream at its seq, caught up from the start or not", () => {
  const tracker = new StreamTracker({ gapWaitMs: 100 });
  assert.deepEqual(order(tracker.accept("live", 7, "snap", { snapshot: true })), ["snap"]);
  assert.deepEqual(order(tracker.accept("live", 8, 8)), [8]);
  assert.deepEqual(order(tracker.accept("caught", 7, "snap", { snapshot: true, fromStart: true })), ["snap"]);
  assert.equal(tracker.nextDeadline(), null, "a snapshot from the start leaves no gap to wait for");
  assert.deepEqual(order(tracker.accept("caught", 8, 8)), [8]);
});

test("tracker: a snapshot drops what it covers, waiting or to come; one the stream is past is a repeat", () => {
  const tracker = new StreamTracker({ gapWaitMs: 100 });
  tracker.accept("s", 0, 0);
  tracker.accept("s", 2, 2, { now: 0 });
  tracker.accept("s", 3, 3, { now: 0 });
  tracker.accept("s", 6, 6, { now: 0 });
  assert.deepEqual(order(tracker.accept("s", 3, "snap3", { snapshot: true })), ["snap3"]);
  assert.deepEqual([...tracker.streams.get("s").pending.keys()], [6], "2 and 3 are covered; 6 still waits for 4 and 5");
  assert.deepEqual(order(tracker.accept("s", 3, "snap3", { snapshot: true })), [], "the same snapshot again");
  assert.deepEqual(order(tracker.accept("s", 2, "snap2", { snapshot: true })), [], "an older one");
  assert.deepEqual(order(tracker.accept("s", 1, 1)), []);
  assert.deepEqual(order(tracker.accept("s", 5, "snap5", { snapshot: true })), ["snap5", 6]);
  assert.equal(tracker.nextDeadline(), null);
  assert.deepEqual(order(tracker.accept("s", 7, 7, { last: true })), [7]);
  assert.deepEqual(order(tracker.accept("s", 9, "snap9", { snapshot: true })), [], "nothing after the end");
});

test("tracker: an end waiting within what a snapshot covers still ends the stream", () => {
  const tracker = new StreamTracker({ gapWaitMs: 100 });
  tracker.accept("s", 0, 0);
  tracker.accept("s", 3, "end", { last: true, now: 0 });
  assert.deepEqual(order(tracker.accept("s", 4, "snap4", { snapshot: true })), ["snap4", "end"]);
  assert.deepEqual(order(tracker.accept("s", 5, 5)), []);
});

// ---- snapshots reaching the page -----------------------------------------------------------------

test("a snapshot of a stream this page never saw runs as its threadInfo and one delta with the whole text", () => {
  const { core, seen } = makeCore();
  joinLive(core, "room");
  core.onMessage(frame("room", 1, snapshot("s", 5)));
  assert.deepEqual(seen.actions, ["s:5:threadInfo", "s:5"]);
  assert.deepEqual(seen.events[0], {
    type: "threadInfo", streamId: "s", seq: 5, snapshot: true, content: { streamId: "s", service: "echo", model: "e1" },
  });
  assert.deepEqual(seen.events[1], { type: "delta", streamId: "s", seq: 5, snapshot: true, content: words(1, 5) });
  core.onMessage(frame("room", 2, event("s", 6)));
  assert.equal(core.text("s"), words(1, 6));
  assert.equal(seen.appended.get("s"), words(1, 6));
});

test("a snapshot after some deltas hands out only what the page lacks; repeats and covered deltas do not run", () => {
  const { core, seen } = makeCore();
  joinLive(core, "room");
  core.onMessage(frame("room", 1, event("s", 0, "threadInfo", { content: { streamId: "s", service: "echo", model: "e1" } })));
  core.onMessage(frame("room", 2, event("s", 1)));
  core.onMessage(frame("room", 3, event("s", 2)));
  core.onMessage(frame("room", 4, snapshot("s", 5)));
  assert.deepEqual(seen.events.at(-1), { type: "delta", streamId: "s", seq: 5, snapshot: true, content: words(3, 5) });
  assert.equal(core.text("s"), words(1, 5));
  core.onMessage(frame("room", 5, snapshot("s", 5))); // the same snapshot again
  core.onMessage(frame("room", 6, snapshot("s", 4))); // an older one
  core.onMessage(frame("room", 7, event("s", 4))); // a delta it covers
  core.onMessage(frame("room", 8, event("s", 5)));
  core.onMessage(frame("room", 9, event("s", 6)));
  core.onMessage(frame("room", 10, event("s", 7, "end", { finish_reason: "stop", usage: null, text: words(1, 6) })));
  assert.deepEqual(seen.actions, ["s:0:threadInfo", "s:1", "s:2", "s:5", "s:6", "s:7:end"]);
  assert.equal(seen.appended.get("s"), words(1, 6), "an appending handler: every word once");
  assert.equal(core.text("s"), words(1, 6));
  assert.deepEqual(seen.gaps, []);
});

test("a snapshot that brings nothing new runs nothing; own text that is not its prefix is replaced", () => {
  const { core, seen } = makeCore();
  joinLive(core, "room");
  core.onMessage(frame("room", 1, event("s", 0, "threadInfo", { content: { streamId: "s", service: "echo", model: "e1" } })));
  core.onMessage(frame("room", 2, event("s", 1)));
  core.onMessage(frame("room", 3, event("s", 2, "tool_call", { toolCallId: "tc", toolName: "t", arguments: {} })));
  core.onMessage(frame("room", 4, snapshot("s", 3, { text: "w1 " })));
  assert.deepEqual(seen.actions, ["s:0:threadInfo", "s:1", "s:2:tool_call"], "a tool round folds to nothing");

  core.onMessage(frame("room", 5, event("t", 3, "delta", { content: "Hellp" })));
  core.onMessage(frame("room", 6, snapshot("t", 4, { text: "Hello, world" })));
  assert.deepEqual(seen.events.slice(-2).map((e) => [e.type, e.content]), [
    ["threadInfo", { streamId: "t", service: "echo", model: "e1" }],
    ["delta", "Hello, world"],
  ]);
  assert.equal(core.text("t"), "Hello, world");
});

test("a snapshot's function calls the page has not run come as one function_call", () => {
  const { core, seen } = makeCore();
  joinLive(core, "room");
  const call = (id) => ({ id, name: "get_weather", arguments: "{}", userMessage: null });
  core.onMessage(frame("room", 1, event("s", 3, "function_call", { content: { functions: [call("a")] } })));
  core.onMessage(frame("room", 2, snapshot("s", 6, { functions: [call("a"), call("b"), call("c")] })));
  assert.deepEqual(seen.events.at(-1), {
    type: "function_call", streamId: "s", seq: 6, snapshot: true, content: { functions: [call("b"), call("c")] },
  });
  core.onMessage(frame("room", 3, snapshot("s", 7, { functions: [call("a"), call("b"), call("c")] })));
  assert.deepEqual(seen.events.at(-1).type, "delta", "calls run once");
});

test("after a snapshot, the stream's error and end run, end.text wins, and nothing runs past the end", () => {
  const { core, seen } = makeCore();
  joinLive(core, "room");
  core.onMessage(frame("room", 1, snapshot("s", 3)));
  core.onMessage(frame("room", 2, event("s", 4, "error", { error: { message: "boom", code: 502, details: null } })));
  core.onMessage(frame("room", 3, event("s", 5, "end", { finish_reason: "error", usage: null, text: words(1, 3) })));
  core.onMessage(frame("room", 4, snapshot("s", 4)));
  core.onMessage(frame("room", 5, event("s", 6)));
  assert.deepEqual(seen.actions, ["s:3:threadInfo", "s:3", "s:4:error", "s:5:end"]);
  assert.equal(core.text("s"), words(1, 3));
  assert.equal(seen.appended.get("s"), words(1, 3));
});

// ---- the model's thinking and its sources ----------------------------------------------------------

const source = (n, extra = {}) => ({ url: `https://example.org/page${n}`, title: `Page ${n}`, ...extra });
const reasoning = (streamId, seq, content, extra = {}) => event(streamId, seq, "reasoning", { content, ...extra });
const sources = (streamId, seq, list) => event(streamId, seq, "sources", { sources: list });

test("reasoning events reach the handler like any event, and client.reasoning is their text so far", () => {
  const { core, seen } = makeCore();
  joinLive(core, "room");
  core.onMessage(frame("room", 1, threadInfo("s")));
  core.onMessage(frame("room", 2, reasoning("s", 1, "The user asks about Zürich; ")));
  assert.equal(core.reasoning("s"), "The user asks about Zürich; ");
  core.onMessage(frame("room", 3, reasoning("s", 2, "I should search. 🌦")));
  core.onMessage(frame("room", 4, event("s", 3)));
  assert.deepEqual(seen.actions, ["s:0:threadInfo", "s:1:reasoning", "s:2:reasoning", "s:3"]);
  assert.equal(core.reasoning("s"), "The user asks about Zürich; I should search. 🌦");
  assert.equal(core.text("s"), "w3 ", "thinking is not the answer");
  assert.equal(core.reasoning("nobody"), "");
  assert.deepEqual(core.sources("nobody"), []);
});

test("a redacted block reaches the handler marked so, and adds nothing to the reasoning", () => {
  const { core, seen } = makeCore();
  joinLive(core, "room");
  core.onMessage(frame("room", 1, reasoning("s", 4, "Thinking. ")));
  core.onMessage(frame("room", 2, reasoning("s", 5, "", { redacted: true })));
  core.onMessage(frame("room", 3, reasoning("s", 6, "More.")));
  assert.deepEqual(seen.events.map((e) => [e.content, e.redacted]), [["Thinking. ", undefined], ["", true], ["More.", undefined]]);
  assert.equal(core.reasoning("s"), "Thinking. More.");
});

test("a page that joined mid-thought gets the whole of it from the end, and the end's sources", () => {
  const { core } = makeCore();
  joinLive(core, "room");
  core.onMessage(frame("room", 1, reasoning("s", 7, "the second half.")));
  core.onMessage(frame("room", 2, sources("s", 8, [source(2)])));
  const whole = "The first half, the second half.";
  core.onMessage(frame("room", 3, end("s", 9, "w1 ", { reasoning: whole, sources: [source(1), source(2)] })));
  assert.equal(core.reasoning("s"), whole);
  assert.deepEqual(core.sources("s"), [source(2), source(1)], "each URL once, in the order the page got them");
});

test("a snapshot with reasoning and sources hands them out ahead of the text, then later events go on", () => {
  const { core, seen } = makeCore();
  joinLive(core, "room");
  core.onMessage(frame("room", 1, snapshot("s", 5, { reasoning: "Let me look it up.", sources: [source(1), source(2)] })));
  assert.deepEqual(seen.actions, ["s:5:threadInfo", "s:5:reasoning", "s:5", "s:5:sources"]);
  assert.deepEqual(seen.events[1], { type: "reasoning", streamId: "s", seq: 5, snapshot: true, content: "Let me look it up." });
  assert.deepEqual(seen.events[3], { type: "sources", streamId: "s", seq: 5, snapshot: true, sources: [source(1), source(2)] });
  core.onMessage(frame("room", 2, reasoning("s", 4, "covered by the snapshot")));
  core.onMessage(frame("room", 3, reasoning("s", 6, " Found it.")));
  core.onMessage(frame("room", 4, sources("s", 7, [source(3)])));
  core.onMessage(frame("room", 5, event("s", 8)));
  const all = [source(1), source(2), source(3)];
  core.onMessage(frame("room", 6, end("s", 9, `${words(1, 5)}w8 `, { reasoning: "Let me look it up. Found it.", sources: all })));
  assert.deepEqual(seen.actions.slice(4), ["s:6:reasoning", "s:7:sources", "s:8", "s:9:end"]);
  assert.equal(core.reasoning("s"), "Let me look it up. Found it.");
  assert.deepEqual(core.sources("s"), all);
  assert.equal(core.text("s"), `${words(1, 5)}w8 `);
});

test("a snapshot after part of the thinking gives only the rest; thinking that is not its prefix is replaced", () => {
  const { core, seen } = makeCore();
  joinLive(core, "room");
  core.onMessage(frame("room", 1, threadInfo("s")));
  core.onMessage(frame("room", 2, reasoning("s", 1, "Let me ")));
  core.onMessage(frame("room", 3, snapshot("s", 4, { text: "", reasoning: "Let me look it up." })));
  assert.deepEqual(seen.events.at(-1), { type: "reasoning", streamId: "s", seq: 4, snapshot: true, content: "look it up." });
  core.onMessage(frame("room", 4, snapshot("s", 5, { text: "", reasoning: "Let me look it up." })));
  assert.equal(seen.events.length, 3, "a snapshot with nothing new runs nothing");

  core.onMessage(frame("room", 5, reasoning("t", 1, "Let us")));
  core.onMessage(frame("room", 6, snapshot("t", 2, { text: "", reasoning: "Let me think." })));
  assert.deepEqual(seen.events.at(-1).content, "Let me think.");
  assert.equal(core.reasoning("t"), "Let me think.");
});

test("sources are kept once per URL: a snapshot hands out only those the page lacks, the first of each stays", () => {
  const { core, seen } = makeCore();
  joinLive(core, "room");
  core.onMessage(frame("room", 1, sources("s", 3, [source(1)])));
  const renamed = source(1, { title: "Page 1, renamed" });
  core.onMessage(frame("room", 2, snapshot("s", 4, { sources: [renamed, source(2), source(2, { snippet: "again" })] })));
  assert.deepEqual(seen.events.at(-1), { type: "sources", streamId: "s", seq: 4, snapshot: true, sources: [source(2)] });
  core.onMessage(frame("room", 3, sources("s", 5, [source(2), source(3, { snippet: "Mild." })])));
  assert.deepEqual(seen.events.at(-1).sources, [source(2), source(3, { snippet: "Mild." })], "a live event reaches the handler as it is");
  assert.deepEqual(core.sources("s"), [source(1), source(2), source(3, { snippet: "Mild." })]);
  core.sources("s")[0].url = "javascript:alert(1)";
  assert.equal(core.sources("s")[0].url, source(1).url, "the page gets copies");
  core.onMessage(frame("room", 4, snapshot("s", 6, { sources: [source(1), source(3)] })));
  assert.deepEqual(seen.events.at(-1).type, "delta", "no sources event when the page has them all");
});

test("over a WebSocket: client.reasoning and client.sources follow a thinking model's stream", async () => {
  const { FakeSocket, sockets } = fakeWebSocket();
  const client = connect({ appId: "app_1", url: "http://bf.test", transport: "websocket", WebSocket: FakeSocket });
  const seen = [];
  client.on(ACTION, (o) => seen.push([o.type, client.reasoning(o.streamId), client.sources(o.streamId).length]));
  const joined = client.join("room", { catchUp: false });
  await until(() => sockets.length === 1, "a socket");
  sockets[0].open();
  sockets[0].receive({ op: "joined", channel: "room", recovered: true, offset: 0, epoch: "E", id: sockets[0].lastJoin("room").id });
  await joined;
  const stream = [
    threadInfo("s"),
    reasoning("s", 1, "Search "),
    reasoning("s", 2, "first."),
    reasoning("s", 3, "", { redacted: true }),
    sources("s", 4, [source(1), source(2)]),
    event("s", 5),
    end("s", 6, "w5 ", { reasoning: "Search first.", sources: [source(1), source(2)] }),
  ];
  stream.forEach((options, i) => sockets[0].receive(frame("room", i + 1, options)));
  assert.deepEqual(seen, [
    ["threadInfo", "", 0],
    ["reasoning", "Search ", 0],
    ["reasoning", "Search first.", 0],
    ["reasoning", "Search first.", 0],
    ["sources", "Search first.", 2],
    ["delta", "Search first.", 2],
    ["end", "Search first.", 2],
  ]);
  assert.deepEqual(client.sources("s"), [source(1), source(2)]);
  assert.equal(client.text("s"), "w5 ");
  client.close();
});

// ---- frames from a stream's log ------------------------------------------------------------------

test("live: log frames run at the position the join answered, without moving it, before the replay", () => {
  const { core, seen } = makeCore();
  joinLive(core, "room", 4);
  core.onMessage(frame("room", 5, event("s", 0, "threadInfo", { content: { streamId: "s", service: "echo", model: "e1" } })));
  core.onMessage(frame("room", 6, event("s", 1)));
  // A reconnect from (6, E) whose history lost 7-9 (s:2, s:3 and another stream's whole answer):
  // the log gives s's snapshot at 3 and the other stream's snapshot and end; the replay goes on.
  const since = { offset: 6, epoch: "E" };
  assert.equal(core.onJoined({ op: "joined", channel: "room", recovered: false, offset: 6, epoch: "E" }, since), "joined");
  core.onMessage(logFrame("room", 6, snapshot("s", 3)));
  core.onMessage(logFrame("room", 6, snapshot("t", 1)));
  core.onMessage(logFrame("room", 6, event("t", 2, "end", { finish_reason: "stop", usage: null, text: words(1, 1) })));
  assert.deepEqual(core.resumeSince("room"), since, "a log frame does not move the position");
  core.onMessage(frame("room", 6, event("s", 1))); // an ordinary frame at that offset: handled already
  core.onMessage(frame("room", 10, event("s", 3))); // covered by the snapshot
  core.onMessage(frame("room", 11, event("s", 4)));
  assert.deepEqual(seen.actions, ["s:0:threadInfo", "s:1", "s:3", "t:1:threadInfo", "t:1", "t:2:end", "s:4"]);
  assert.equal(core.text("s"), words(1, 4));
  assert.equal(seen.appended.get("s"), words(1, 4));
  assert.equal(core.text("t"), "w1 ");
  assert.deepEqual(core.resumeSince("room"), { offset: 11, epoch: "E" });
  assert.deepEqual(seen.messages, ["room@5", "room@6", "room@6 log", "room@6 log", "room@6 log", "room@10", "room@11"]);
});

test("log frames before a joined, or of another epoch, are not of the join just answered: ignored", () => {
  const { core, seen } = makeCore();
  core.add("room", { catchUp: false });
  core.onMessage(logFrame("room", 0, snapshot("s", 3)));
  core.onJoined({ op: "joined", channel: "room", recovered: true, offset: 0, epoch: "E" });
  core.onMessage(logFrame("room", 0, snapshot("s", 3), "OLD"));
  assert.deepEqual(seen.actions, []);
});

test("catch-up: log frames wait with the replay, ahead of it; ended streams stay old", () => {
  const { core, seen } = makeCore();
  core.add("room");
  // The channel stands at 9; its history from 0 has only 7-9 left (run:3..5).
  assert.equal(core.onJoined({ op: "joined", channel: "room", recovered: false, offset: 9, epoch: "E" }), "restart");
  const since = { offset: 0, epoch: "E" };
  core.onJoined({ op: "joined", channel: "room", recovered: false, offset: 0, epoch: "E" }, since);
  core.onMessage(logFrame("room", 0, snapshot("old", 1)));
  core.onMessage(logFrame("room", 0, event("old", 2, "end", { finish_reason: "stop", usage: null, text: "w1 " })));
  core.onMessage(logFrame("room", 0, snapshot("run", 2)));
  assert.deepEqual(core.resumeSince("room"), since, "a drop now resumes the catch-up from where it was");
  core.onMessage(frame("room", 7, event("run", 3)));
  core.onMessage(frame("room", 8, event("run", 4)));
  assert.deepEqual(seen.actions, [], "held until the replay reaches where the channel stood");
  core.onMessage(frame("room", 9, event("run", 5)));
  assert.deepEqual(seen.actions, ["run:2:threadInfo", "run:2", "run:3", "run:4", "run:5"]);
  assert.equal(seen.events[1].content, words(1, 2));
  core.onMessage(frame("room", 10, event("run", 6)));
  assert.equal(core.text("run"), words(1, 6));
  assert.equal(seen.appended.get("run"), words(1, 6));
  assert.equal(core.text("old"), "");
  assert.deepEqual(seen.gaps.map((g) => g.reason), ["history"]);
});

test("catch-up: a drop mid-replay resumes it, the new join's log frames join what waits", () => {
  const { core, seen } = makeCore();
  core.add("room");
  core.onJoined({ op: "joined", channel: "room", recovered: false, offset: 9, epoch: "E" });
  core.onJoined({ op: "joined", channel: "room", recovered: false, offset: 0, epoch: "E" }, { offset: 0, epoch: "E" });
  core.onMessage(logFrame("room", 0, snapshot("run", 2)));
  core.onMessage(frame("room", 6, event("run", 3)));
  // Dropped; the resume from 6 finds 7 gone: the log stands for it.
  core.onJoined({ op: "joined", channel: "room", recovered: false, offset: 6, epoch: "E" }, { offset: 6, epoch: "E" });
  core.onMessage(logFrame("room", 6, snapshot("run", 4)));
  core.onMessage(frame("room", 9, event("run", 5)));
  assert.deepEqual(seen.actions, ["run:2:threadInfo", "run:2", "run:3", "run:4", "run:5"]);
  assert.equal(seen.appended.get("run"), words(1, 5));
});

test("a new epoch: the log frames of the join that found it run at once, the restart's replay after them", () => {
  const { core, seen } = makeCore();
  joinLive(core, "room", 10, "OLD");
  core.onMessage(frame("room", 11, event("s", 0, "threadInfo", { content: { streamId: "s", service: "echo", model: "e1" } }), { epoch: "OLD" }));
  const reply = { op: "joined", channel: "room", recovered: false, offset: 2, epoch: "NEW" };
  assert.equal(core.onJoined(reply, { offset: 11, epoch: "OLD" }), "restart");
  core.onMessage(logFrame("room", 2, snapshot("s", 3), "NEW"));
  core.onJoined({ op: "joined", channel: "room", recovered: true, offset: 0, epoch: "NEW" }, { offset: 0, epoch: "NEW" });
  core.onMessage(frame("room", 1, event("s", 3), { epoch: "NEW" }));
  core.onMessage(frame("room", 2, event("s", 4, "end", { finish_reason: "error", usage: null, text: words(1, 3) }), { epoch: "NEW" }));
  assert.deepEqual(seen.actions, ["s:0:threadInfo", "s:3", "s:4:end"]);
  assert.equal(seen.appended.get("s"), words(1, 3));
});

test("a tool call that a snapshot shows the stream went past is not offered; one still waiting is", () => {
  const { core, seen } = makeCore();
  core.add("room");
  core.onJoined({ op: "joined", channel: "room", recovered: false, offset: 5, epoch: "E" });
  core.onJoined({ op: "joined", channel: "room", recovered: false, offset: 0, epoch: "E" }, { offset: 0, epoch: "E" });
  const call = (seq) => event("s", seq, "tool_call", {
    action: "llmToolCall", toolCallId: `tc${seq}`, toolName: "show_form", arguments: {}, functions: [], timeoutMs: 9000,
  });
  core.onMessage(logFrame("room", 0, snapshot("s", 2)));
  core.onMessage(frame("room", 3, call(3)));
  core.onMessage(frame("room", 4, event("s", 4)));
  core.onMessage(frame("room", 5, call(5)));
  assert.deepEqual(seen.calls, ["tc5"]);
});

test("a snapshot past a tool call counts as going on even when it brings no new text", () => {
  const { core, seen } = makeCore();
  core.add("room");
  core.onJoined({ op: "joined", channel: "room", recovered: false, offset: 6, epoch: "E" });
  core.onJoined({ op: "joined", channel: "room", recovered: false, offset: 0, epoch: "E" }, { offset: 0, epoch: "E" });
  core.onMessage(logFrame("room", 0, snapshot("s", 2)));
  core.onMessage(frame("room", 3, event("s", 3, "tool_call", { toolCallId: "tc3", toolName: "show_form" })));
  // Dropped mid-replay; the resume from 3 finds 4 and 5 gone (the answer and a second, silent round).
  core.onJoined({ op: "joined", channel: "room", recovered: false, offset: 3, epoch: "E" }, { offset: 3, epoch: "E" });
  core.onMessage(logFrame("room", 3, snapshot("s", 5, { text: words(1, 2) })));
  const refresh = { op: "message", channel: "room", offset: 6, epoch: "E", from: { kind: "api" }, message: { actions: [] } };
  core.onMessage(refresh); // where the channel stood: the catch-up is over
  assert.deepEqual(seen.actions, ["s:2:threadInfo", "s:2", "s:3:tool_call"]);
  assert.deepEqual(seen.calls, [], "answered already: the stream went on past it");
});

// ---- through the client, over the fake transports (every frame checked against protocol.json) -----

/** A client's handler that appends deltas, and what it ran, as the page would have it. */
function watch(client) {
  const page = { text: "", seqs: [] };
  client.on(ACTION, (o) => {
    page.seqs.push(`${o.seq}${o.snapshot ? "*" : ""}`);
    if (o.type === "delta") page.text += o.content;
  });
  return page;
}

test("over a WebSocket: a resume whose history lost part of the answer gets it from the log frames, once", async () => {
  const { FakeSocket, sockets } = fakeWebSocket();
  const client = connect({ appId: "app_1", url: "http://bf.test", transport: "websocket", backoff: { base: 1, max: 2 }, WebSocket: FakeSocket });
  const page = watch(client);
  const joined = client.join("room", { catchUp: false });
  await until(() => sockets.length === 1, "a socket");
  sockets[0].open();
  sockets[0].receive({ op: "joined", channel: "room", recovered: true, offset: 0, epoch: "E", id: sockets[0].lastJoin("room").id });
  await joined;
  sockets[0].receive(frame("room", 1, threadInfo("s")));
  sockets[0].receive(frame("room", 2, event("s", 1)));
  sockets[0].drop();
  await until(() => sockets.length === 2, "a second socket");
  sockets[1].open();
  const resume = sockets[1].lastJoin("room");
  assert.deepEqual(resume.since, { offset: 2, epoch: "E" });
  // Offsets 3-1002 (s:2 to s:1001) have left the history.
  sockets[1].receive({ op: "joined", channel: "room", recovered: false, offset: 2, epoch: "E", id: resume.id });
  sockets[1].receive(logFrame("room", 2, snapshot("s", 1001)));
  sockets[1].receive(frame("room", 1003, event("s", 1001))); // at or below the snapshot: a server may still send it
  sockets[1].receive(frame("room", 1004, event("s", 1002)));
  sockets[1].receive(frame("room", 1005, end("s", 1003, words(1, 1002))));
  assert.deepEqual(page.seqs, ["0", "1", "1001*", "1002", "1003"]);
  assert.equal(page.text, words(1, 1002));
  assert.equal(client.text("s"), words(1, 1002));
  client.close();
});

test("over SSE: a catch-up whose start has left the history runs the snapshot first, then the replay", async () => {
  const requests = [];
  const fetch = async (url) => {
    const stream = sseResponse();
    requests.push({ url: new URL(url), ...stream });
    return stream.response;
  };
  const client = connect({ appId: "app_1", url: "http://bf.test", transport: "sse", fetch });
  const page = watch(client);
  const joined = client.join("room");
  await until(() => requests.length === 1, "an SSE request");
  requests[0].send({ op: "hello", connectionId: "b", channels: ["tab|b"] }, "hello");
  await until(() => requests.length === 2, "a stream with the channel");
  requests[1].send({ op: "hello", connectionId: "c", channels: ["tab|c"] }, "hello");
  requests[1].send({ op: "joined", channel: "room", recovered: false, offset: 9, epoch: "E", id: null }, "joined");
  await until(() => requests.length === 3, "the catch-up's stream");
  assert.deepEqual([...decodePositions(requests[2].url.searchParams.get("lastEventId"))], [["room", [0, "E"]]]);
  requests[2].send({ op: "hello", connectionId: "d", channels: ["tab|d"] }, "hello");
  requests[2].send({ op: "joined", channel: "room", recovered: false, offset: 0, epoch: "E", id: null }, "joined");
  await joined;
  requests[2].send(logFrame("room", 0, snapshot("old", 3)));
  requests[2].send(logFrame("room", 0, end("old", 4, words(1, 3))));
  requests[2].send(logFrame("room", 0, snapshot("s", 5)));
  for (let seq = 6; seq <= 9; seq++) requests[2].send(frame("room", seq, event("s", seq)));
  requests[2].send(frame("room", 10, end("s", 10, words(1, 9))));
  await until(() => page.seqs.length === 7, "the answer's events");
  assert.deepEqual(page.seqs, ["5*", "5*", "6", "7", "8", "9", "10"]);
  assert.equal(page.text, words(1, 9));
  assert.equal(client.text("old"), "", "an answer that ended before the join stays old");
  requests[2].end();
  await until(() => requests.length === 4, "a reconnect");
  assert.deepEqual([...decodePositions(requests[3].url.searchParams.get("lastEventId"))], [["room", [10, "E"]]]);
  client.close();
});

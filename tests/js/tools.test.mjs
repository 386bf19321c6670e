// client.onToolCall: which tool_call events reach a handler (each toolCallId once, not those a
// replay shows were answered), what the handler's outcome becomes, and how the answer travels:
// a toolResult frame on a WebSocket, POST /llm/tool-response otherwise.
import assert from "node:assert/strict";
import test from "node:test";

import { connect, Core } from "../../bfstream/static/bfstream.js";
import { fakeWebSocket, sseResponse, until } from "./fakes.mjs";

const STREAM = "s1";

function toolCall(seq, toolName = "show_form", args = { title: "Hi" }) {
  const toolCallId = `tc_${STREAM}_${seq}`;
  const functions = [{ name: toolName, arguments: args }];
  const call = { action: "llmToolCall", toolCallId, toolName, arguments: args, functions, timeoutMs: 90000 };
  return { type: "tool_call", streamId: STREAM, seq, ...call };
}

const delta = (seq) => ({ type: "delta", streamId: STREAM, seq, content: `w${seq} ` });

function frame(channel, offset, options) {
  const actions = [{ action: "namedAction", name: "assistantReceiveResultsStream", options }];
  return { op: "message", channel, offset, epoch: "E", from: { kind: "server" }, message: { actions } };
}

// ---- Core: which calls are offered --------------------------------------------------------------

function coreWith(channels) {
  const offered = [];
  const core = new Core({ action() {}, message() {}, gap() {}, toolCall: (event) => offered.push(event.toolCallId) });
  core.onHello({ op: "hello", connectionId: "c", channels: ["tab|c"] });
  for (const channel of channels) {
    core.add(channel, { catchUp: false });
    core.onJoined({ op: "joined", channel, recovered: false, offset: 0, epoch: "E" });
  }
  return { core, offered };
}

test("a call that comes through two channels, or again, is offered once; calls of one turn each", () => {
  const { core, offered } = coreWith(["a", "b"]);
  core.onMessage(frame("a", 1, delta(0)));
  core.onMessage(frame("a", 2, toolCall(1)));
  core.onMessage(frame("b", 1, delta(0)));
  core.onMessage(frame("b", 2, toolCall(1)));
  core.onMessage(frame("a", 3, toolCall(2, "pick_date")));
  assert.deepEqual(offered, ["tc_s1_1", "tc_s1_2"]);
});

test("a catch-up replay does not offer a call its stream went on past: it was answered already", () => {
  const offered = [];
  const core = new Core({ action() {}, message() {}, gap() {}, toolCall: (event) => offered.push(event.toolCallId) });
  core.onHello({ op: "hello", connectionId: "c", channels: ["tab|c"] });
  core.add("room");
  assert.equal(core.onJoined({ op: "joined", channel: "room", recovered: false, offset: 5, epoch: "E" }), "restart");
  core.onJoined({ op: "joined", channel: "room", recovered: true, offset: 0, epoch: "E" }, { offset: 0, epoch: "E" });
  const replay = [delta(0), toolCall(1), delta(2), toolCall(3), toolCall(4)];
  replay.forEach((options, i) => core.onMessage(frame("room", i + 1, options)));
  assert.deepEqual(offered, ["tc_s1_3", "tc_s1_4"], "the first call was answered (w2 followed); the last two wait");
});

// ---- the client: handler outcomes, over a WebSocket ---------------------------------------------

async function openClient(options = {}) {
  const { FakeSocket, sockets } = fakeWebSocket();
  const posts = [];
  const fetch = async (url, init) => {
    posts.push({ url, body: JSON.parse(init.body) });
    return new Response(JSON.stringify({ success: true, accepted: true }), { status: 200 });
  };
  const client = connect({
    appId: "app_1", url: "http://bf.test", transport: "websocket", WebSocket: FakeSocket, fetch, ...options,
  });
  await until(() => sockets.length === 1, "a socket");
  const socket = sockets[0];
  socket.open();
  const joined = client.join("room", { catchUp: false });
  const { id } = socket.lastJoin("room");
  socket.receive({ op: "joined", channel: "room", recovered: false, offset: 0, epoch: "E", id });
  await joined;
  const results = () => socket.sent.filter((f) => f.op === "toolResult");
  return { client, socket, posts, results };
}

test("over a WebSocket the handler's result goes back as a toolResult frame; on() still sees the event", async () => {
  const { client, socket, results } = await openClient();
  const named = [];
  const calls = [];
  client.on("assistantReceiveResultsStream", (options) => named.push(options.type));
  client.onToolCall("show_form", (args, call) => {
    calls.push({ args, toolCallId: call.toolCallId, streamId: call.streamId });
    return { success: true, message: "form shown", data: { shown: true } };
  });
  socket.receive(frame("room", 1, toolCall(0)));
  await until(() => results().length === 1, "a toolResult");
  const [sent] = results();
  assert.deepEqual(calls, [{ args: { title: "Hi" }, toolCallId: "tc_s1_0", streamId: STREAM }]);
  const result = { success: true, message: "form shown", data: { shown: true } };
  assert.deepEqual(sent, { op: "toolResult", toolCallId: "tc_s1_0", result, id: sent.id });
  assert.deepEqual(named, ["tool_call"]);
  socket.receive({ op: "answered", toolCallId: "tc_s1_0", accepted: true, id: sent.id });
  client.close();
});

test("other return values become a success carrying them; a throw or a rejection a failure", async () => {
  const { client, socket, results } = await openClient();
  const outcomes = {
    nothing: () => undefined,
    text: () => "picked 3",
    object: async () => ({ picked: [1, 2] }),
    throws: () => {
      throw new Error("no such form");
    },
    rejects: async () => Promise.reject(new Error("cancelled by the user")),
  };
  for (const [name, handler] of Object.entries(outcomes)) client.onToolCall(name, handler);
  Object.keys(outcomes).forEach((name, i) => socket.receive(frame("room", i + 1, toolCall(i, name, {}))));
  await until(() => results().length === 5, "five toolResults");
  const byCall = Object.fromEntries(results().map((f) => [f.toolCallId, f.result]));
  assert.deepEqual(byCall, {
    tc_s1_0: { success: true, message: "done" },
    tc_s1_1: { success: true, message: "picked 3", data: "picked 3" },
    tc_s1_2: { success: true, message: "done", data: { picked: [1, 2] } },
    tc_s1_3: { success: false, message: "no such form" },
    tc_s1_4: { success: false, message: "cancelled by the user" },
  });
  client.close();
});

test("a call delivered twice runs its handler once; a tool without a handler is left to other pages", async () => {
  const { client, socket, results } = await openClient();
  let runs = 0;
  const offFallback = client.onToolCall("*", () => "any");
  client.onToolCall("show_form", () => {
    runs += 1;
  });
  socket.receive(frame("room", 1, toolCall(0)));
  socket.receive(frame("room", 1, toolCall(0))); // the same frame again
  socket.receive(frame("room", 2, { ...toolCall(0), seq: 1 })); // the same call at another seq
  socket.receive(frame("room", 3, toolCall(2, "pick_date")));
  await until(() => results().length === 2, "two toolResults");
  assert.equal(runs, 1);
  assert.deepEqual(results()[1].result, { success: true, message: "any", data: "any" }, '"*" took pick_date');
  offFallback();
  socket.receive(frame("room", 4, toolCall(3, "pick_date")));
  await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(results().length, 2, "no handler: nothing sent");
  client.close();
});

test("an answer the socket dropped before the server acknowledged it goes over HTTP", async () => {
  const { client, socket, posts, results } = await openClient({ backoff: { base: 1000, max: 1000 } });
  client.onToolCall("show_form", () => ({ success: true, message: "form shown" }));
  socket.receive(frame("room", 1, toolCall(0)));
  socket.receive(frame("room", 2, toolCall(1)));
  await until(() => results().length === 2, "two toolResults");
  socket.receive({ op: "answered", toolCallId: "tc_s1_0", accepted: true, id: results()[0].id });
  socket.drop();
  await until(() => posts.length === 1, "a POST");
  assert.equal(posts[0].url, "http://bf.test/llm/tool-response");
  const result = { success: true, message: "form shown" };
  assert.deepEqual(posts[0].body, { streamId: STREAM, toolCallId: "tc_s1_1", result });
  client.close();
});

// ---- over SSE: POST /llm/tool-response ------------------------------------------------------------

test("over SSE the answer is a POST to /llm/tool-response; a 404 is no error, other refusals are", async () => {
  const streams = [];
  const posts = [];
  const statuses = [200, 404, 500];
  const fetch = async (url, init = {}) => {
    if (init.method !== "POST") {
      const stream = sseResponse();
      streams.push(stream);
      return stream.response;
    }
    posts.push({ url, headers: init.headers, body: JSON.parse(init.body) });
    const status = statuses[posts.length - 1];
    const refused = { success: false, error: { message: `refused ${status}` } };
    const body = status === 200 ? { success: true, toolCallId: "x", accepted: true } : refused;
    return new Response(JSON.stringify(body), { status });
  };
  const client = connect({ appId: "app_1", url: "http://bf.test/", transport: "sse", fetch });
  const errors = [];
  client.onError((error) => errors.push([error.code, error.message, error.toolCallId]));
  client.onToolCall("show_form", async (args) => ({ success: true, message: `shown ${args.title}` }));
  const joined = client.join("room", { catchUp: false });
  await until(() => streams.length === 1, "an event stream");
  streams[0].send({ op: "hello", connectionId: "c", channels: ["tab|c"] }, "hello");
  await until(() => streams.length === 2, "a stream with the channel");
  streams[1].send({ op: "hello", connectionId: "d", channels: ["tab|d"] }, "hello");
  streams[1].send({ op: "joined", channel: "room", recovered: false, offset: 0, epoch: "E", id: null }, "joined");
  await joined;
  for (let seq = 0; seq < 3; seq++) streams[1].send(frame("room", seq + 1, toolCall(seq)));
  await until(() => posts.length === 3 && errors.length === 1, "three POSTs, one refused");
  assert.deepEqual(posts[0], {
    url: "http://bf.test/llm/tool-response",
    headers: { "content-type": "application/json" },
    body: { streamId: STREAM, toolCallId: "tc_s1_0", result: { success: true, message: "shown Hi" } },
  });
  assert.deepEqual(errors, [[500, "refused 500", "tc_s1_2"]]);
  client.close();
});

// The client end to end over fake transports: what it sends on (re)connect, state changes,
// resumes, the SSE fallback. The real server and browser are in tests/browser/.
import assert from "node:assert/strict";
import test from "node:test";

import { connect, decodePositions } from "../../bfstream/static/bfstream.js";
import { fakeWebSocket, sseResponse, until } from "./fakes.mjs";

// Events as the server sends them (bfstream/static/protocol.json), each type with its own fields.
const FIELDS = {
  threadInfo: () => ({ content: { streamId: "s", service: "echo", model: "echo" } }),
  delta: (seq) => ({ content: `w${seq} ` }),
  end: (seq) => ({ finish_reason: "stop", usage: null, text: Array.from({ length: seq }, (_, i) => `w${i} `).join("") }),
};
const FROM = { server: { kind: "server" }, browser: { kind: "browser", connectionId: "x", user: null } };
const message = (channel, offset, seq, type = "delta", kind = "server") => ({
  op: "message",
  channel,
  offset,
  epoch: "E",
  from: FROM[kind],
  message: {
    actions: [{ action: "namedAction", name: "answer", options: { type, streamId: "s", seq, ...FIELDS[type](seq) } }],
  },
});

test("over a WebSocket: joins, resumes each channel from its last position after a drop, once each", async () => {
  const { FakeSocket, sockets } = fakeWebSocket();
  let tokens = 0;
  const client = connect({
    appId: "app_1",
    url: "http://bf.test",
    transport: "websocket",
    token: async () => `t${++tokens}`,
    backoff: { base: 1, max: 2 },
    WebSocket: FakeSocket,
  });
  const states = [];
  const seen = [];
  client.onState((state) => states.push(state));
  client.on("answer", (options) => seen.push(options.seq));
  assert.equal(client.state, "connecting");
  const joined = client.join("room", { catchUp: false });
  await until(() => sockets.length === 1, "a socket");
  assert.equal(sockets[0].url.href, "ws://bf.test/message/ws?app=app_1&token=t1");
  sockets[0].open();
  const join = sockets[0].lastJoin("room");
  assert.equal(join.since, undefined);
  sockets[0].receive({ op: "joined", channel: "room", recovered: false, offset: 2, epoch: "E", id: join.id });
  await joined;
  for (let seq = 0; seq < 3; seq++) sockets[0].receive(message("room", 3 + seq, seq));
  sockets[0].drop();
  assert.equal(client.state, "reconnecting");
  await until(() => sockets.length === 2, "a second socket");
  assert.equal(sockets[1].url.searchParams.get("token"), "t2", "the token callback runs on each connect");
  sockets[1].open();
  const resume = sockets[1].lastJoin("room");
  assert.deepEqual(resume.since, { offset: 5, epoch: "E" });
  sockets[1].receive({ op: "joined", channel: "room", recovered: true, offset: 5, epoch: "E", id: resume.id });
  sockets[1].receive(message("room", 5, 2)); // the last one again: not handled twice
  sockets[1].receive(message("room", 6, 3));
  sockets[1].receive(message("room", 7, 4, "end"));
  assert.deepEqual(seen, [0, 1, 2, 3, 4]);
  assert.deepEqual(states, ["open", "reconnecting", "open"]);
  assert.equal(client.text("s"), "w0 w1 w2 w3 ");
  client.close();
  assert.equal(client.state, "closed");
});

test("a join refused by the server rejects; a close code that will not change ends the client", async () => {
  const { FakeSocket, sockets } = fakeWebSocket();
  const client = connect({ appId: "app_1", url: "http://bf.test", transport: "websocket", WebSocket: FakeSocket });
  const errors = [];
  client.onError((error) => errors.push(error.code));
  await until(() => sockets.length === 1, "a socket");
  sockets[0].open();
  const refused = client.join("private");
  const join = sockets[0].lastJoin("private");
  sockets[0].receive({ op: "error", error: { message: "for its added users only", code: 403 }, id: join.id });
  await assert.rejects(refused, (error) => error.code === 403 && error.channel === "private");
  assert.deepEqual(errors, [403]);
  sockets[0].drop(4404);
  assert.equal(client.state, "closed");
  await assert.rejects(client.join("room"));
});

test("catch-up over a WebSocket: a second join from offset 0 once the first says where the channel stands", async () => {
  const { FakeSocket, sockets } = fakeWebSocket();
  const client = connect({ appId: "app_1", url: "http://bf.test", transport: "websocket", WebSocket: FakeSocket });
  const seen = [];
  client.on("answer", (options) => seen.push(options.seq));
  await until(() => sockets.length === 1, "a socket");
  sockets[0].open();
  const joined = client.join("room");
  const first = sockets[0].lastJoin("room");
  sockets[0].receive({ op: "joined", channel: "room", recovered: false, offset: 2, epoch: "E", id: first.id });
  const second = sockets[0].lastJoin("room");
  assert.deepEqual(second.since, { offset: 0, epoch: "E" });
  sockets[0].receive({ op: "joined", channel: "room", recovered: true, offset: 0, epoch: "E", id: second.id });
  await joined;
  sockets[0].receive(message("room", 1, 0, "threadInfo"));
  sockets[0].receive(message("room", 2, 1));
  sockets[0].receive(message("room", 3, 2));
  assert.deepEqual(seen, [0, 1, 2]);
  client.close();
});

test("auto: a WebSocket that cannot open falls back to SSE, which resumes with lastEventId", async () => {
  const { FakeSocket, sockets } = fakeWebSocket({ opens: false });
  const requests = [];
  const fetch = async (url) => {
    const stream = sseResponse();
    requests.push({ url: new URL(url), ...stream });
    return stream.response;
  };
  const client = connect({ appId: "app_1", url: "http://bf.test", backoff: { base: 1, max: 2 }, WebSocket: FakeSocket, fetch });
  const seen = [];
  const states = [];
  client.on("answer", (options) => seen.push(options.seq));
  client.onState((state) => states.push(state));
  await until(() => requests.length === 1, "an SSE request");
  assert.equal(sockets.length, 1);
  requests[0].send({ op: "hello", connectionId: "c", channels: ["tab|c"] }, "hello");
  await until(() => client.state === "open", "open");
  const joined = client.join("room", { catchUp: false });
  await until(() => requests.length === 2, "a new stream with the channel");
  assert.deepEqual(requests[1].url.searchParams.getAll("channel"), ["room"]);
  assert.equal(requests[1].url.searchParams.get("lastEventId"), null);
  requests[1].send({ op: "hello", connectionId: "d", channels: ["tab|d"] }, "hello");
  requests[1].send({ op: "joined", channel: "room", recovered: false, offset: 0, epoch: "E", id: null }, "joined");
  await joined;
  requests[1].send(message("room", 1, 0, "threadInfo"));
  requests[1].send(message("room", 2, 1));
  requests[1].send(message("room", 3, 1, "delta", "browser"));
  await until(() => seen.length === 2, "two events");
  requests[1].end();
  await until(() => requests.length === 3, "a reconnect");
  assert.equal(sockets.length, 1, "SSE worked: no WebSocket tried again");
  assert.deepEqual([...decodePositions(requests[2].url.searchParams.get("lastEventId"))], [["room", [3, "E"]]]);
  requests[2].send({ op: "hello", connectionId: "e", channels: ["tab|e"] }, "hello");
  requests[2].send({ op: "joined", channel: "room", recovered: true, offset: 3, epoch: "E", id: null }, "joined");
  requests[2].send(message("room", 4, 2, "end"));
  await until(() => seen.length === 3, "the end");
  assert.deepEqual(seen, [0, 1, 2]);
  assert.deepEqual(states, ["open", "reconnecting", "open"]);
  client.close();
});

test("SSE: a channel joined while the stream was opening gets a stream that carries it", async () => {
  const requests = [];
  const fetch = async (url) => {
    const stream = sseResponse();
    requests.push({ url: new URL(url), ...stream });
    return stream.response;
  };
  const client = connect({ appId: "app_1", url: "http://bf.test", transport: "sse", token: "static", fetch });
  const joined = client.join("room", { catchUp: false }); // before the first stream has even answered
  await until(() => requests.length === 1, "an SSE request");
  requests[0].send({ op: "hello", connectionId: "c", channels: ["tab|c"] }, "hello");
  await until(() => requests.length === 2, "a stream with the channel");
  const channels = requests.map((r) => r.url.searchParams.getAll("channel"));
  assert.ok(channels[1].includes("room"), JSON.stringify(channels));
  assert.equal(requests[1].url.searchParams.get("token"), "static");
  requests[1].send({ op: "hello", connectionId: "d", channels: ["tab|d"] }, "hello");
  requests[1].send({ op: "joined", channel: "room", recovered: false, offset: 0, epoch: "E", id: null }, "joined");
  await joined;
  await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(requests.length, 2, "no further stream once the list is right");
  client.close();
});

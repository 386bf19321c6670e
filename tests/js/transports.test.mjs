// The client over each transport against one fake server (./server.mjs): the same scenarios run
// over a WebSocket and over Server-Sent Events, so what the page sees cannot depend on which one it
// got. Refusals reach onError and leave no unhandled rejection; publish resolves when the server
// accepts, and is refused over SSE; the actions of a message run in order, named or not.
import assert from "node:assert/strict";
import test from "node:test";

import { channelProblem, connect } from "../../bfstream/static/bfstream.js";
import { until } from "./fakes.mjs";
import { FakeServer } from "./server.mjs";

const TRANSPORTS = ["websocket", "sse"];
const ACTION = "answer";

function clientOf(server, options = {}) {
  return connect({
    appId: "app_1",
    url: "http://bf.test",
    backoff: { base: 1, max: 2 },
    WebSocket: server.WebSocket,
    fetch: server.fetch,
    ...options,
  });
}

/** A stream event of bfstream's own, as the server publishes it. */
function event(seq, type = "delta") {
  const fields = {
    threadInfo: { content: { streamId: "s", service: "echo", model: "echo" } },
    delta: { content: `w${seq} ` },
    end: { finish_reason: "stop", usage: null, text: null },
  }[type];
  return { actions: [{ action: "namedAction", name: ACTION, options: { type, streamId: "s", seq, ...fields } }] };
}

/** Rejections nobody handled while `body` ran (and one task after, when Node reports them). */
async function unhandledDuring(body) {
  const seen = [];
  const listener = (reason) => seen.push(reason);
  process.on("unhandledRejection", listener);
  try {
    await body();
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    process.off("unhandledRejection", listener);
  }
  return seen;
}

for (const transport of TRANSPORTS) {
  test(`${transport}: a stream reaches the page whole, once, across a cut connection`, async () => {
    const server = new FakeServer();
    const client = clientOf(server, { transport });
    const seen = [];
    const states = [];
    client.on(ACTION, (options) => seen.push(options.seq));
    client.onState((state) => states.push(state));
    await client.join("room");
    server.publish("room", event(0, "threadInfo"), { kind: "server" });
    server.publish("room", event(1), { kind: "server" });
    await until(() => seen.length === 2, "two events");
    server.cut();
    await until(() => client.state === "reconnecting", "reconnecting");
    server.publish("room", event(2), { kind: "server" }); // while the page is away
    await until(() => client.state === "open", "open again");
    server.publish("room", event(3, "end"), { kind: "server" });
    await until(() => seen.length === 4, "the end");
    assert.deepEqual(seen, [0, 1, 2, 3]);
    assert.equal(client.text("s"), "w1 w2 ");
    assert.deepEqual(states, ["open", "reconnecting", "open"]);
    client.close();
  });

  test(`${transport}: an origin refusal reaches onError once, closes the client, and an uncaught join stays quiet`, async () => {
    const server = new FakeServer();
    server.refusal = { code: 4403, status: 403, message: "This page's origin may not connect to this app" };
    const errors = [];
    let client;
    let awaited;
    const unhandled = await unhandledDuring(async () => {
      client = clientOf(server, { transport });
      client.onError((error) => errors.push(error));
      client.join("room"); // not caught by the page
      awaited = client.join("other").then(() => null, (error) => error);
      await until(() => client.state === "closed", "closed");
    });
    assert.deepEqual(unhandled, []);
    // Over SSE a 403 may be about a channel asked for; this one's body says it is about the
    // origin, which no channel can change: one refusal, as a WebSocket's 4403, and no retry.
    assert.equal(errors.length, 1);
    const [error] = errors;
    assert.equal(error.channel, undefined);
    assert.equal(error.code, transport === "websocket" ? 4403 : 403);
    assert.equal(error.message, "This page's origin may not connect to this app");
    assert.equal(error.transport, transport);
    assert.equal(error.retry, false);
    assert.equal(server.sockets.length + server.sseRequests.length, 1, "asked once");
    const rejected = await awaited;
    assert.equal(rejected, error, "a page that awaits the join gets the refusal");
  });

  test(`${transport}: a bad name among joins made together rejects alone; the good ones join`, async () => {
    const server = new FakeServer();
    const client = clientOf(server, { transport });
    const errors = [];
    client.onError((error) => errors.push([error.code, error.channel ?? null]));
    const long = "x".repeat(201);
    const names = ["news", long, "", "sport", "private-1", "weather", "bell\u0007", "private-2", "market"];
    const outcomes = await Promise.all(names.map((name) => client.join(name).then(() => "joined", (error) => error.code)));
    assert.deepEqual(outcomes, ["joined", 400, 400, "joined", 403, "joined", 400, 403, "joined"]);
    await until(() => errors.length === 5, "each refusal reported");
    const refusals = [[400, long], [400, ""], [400, "bell\u0007"], [403, "private-1"], [403, "private-2"]];
    assert.deepEqual(errors.sort(), refusals.sort(), "each refused join once, and no other");
    // Later messages reach the channels that joined; no bad name ever went to the server.
    const seen = [];
    client.onMessage((message, frame) => seen.push(frame.channel));
    for (const name of ["news", "sport", "weather", "market"]) server.publish(name, { actions: [] });
    await until(() => seen.length === 4, "a message from each joined channel");
    assert.deepEqual(seen.sort(), ["market", "news", "sport", "weather"]);
    const asked = [...server.sseRequests.flatMap((url) => url.searchParams.getAll("channel")), ...server.sent("websocket", "join").map((f) => f.channel)];
    assert.ok(asked.every((name) => channelProblem(name) === null), "bad names are refused by the client itself");
    assert.equal(client.state, "open");
    client.close();
  });

  test(`${transport}: a refused string token ends the client; a token callback is asked again`, async () => {
    const fixed = new FakeServer({ token: "good" });
    const errors = [];
    const once = clientOf(fixed, { transport, token: "stale" });
    once.onError((error) => errors.push(error.code));
    await until(() => once.state === "closed", "closed");
    assert.deepEqual(errors, [transport === "websocket" ? 4401 : 401]);

    const fresh = new FakeServer({ token: "good" });
    const tokens = ["stale", "good"];
    const client = clientOf(fresh, { transport, token: () => tokens.shift() ?? "good" });
    const retried = [];
    client.onError((error) => retried.push(error.retry));
    await client.join("room");
    assert.equal(client.state, "open");
    assert.deepEqual(retried, [true]);
    client.close();
  });

  test(`${transport}: a refused channel rejects its join and reaches onError; the others go on`, async () => {
    const server = new FakeServer();
    const client = clientOf(server, { transport });
    const errors = [];
    client.onError((error) => errors.push([error.code, error.channel]));
    await client.join("room", { catchUp: false });
    const unhandled = await unhandledDuring(async () => {
      client.join("private-1", { catchUp: false }); // not caught
      await until(() => errors.length === 1, "the refusal");
    });
    assert.deepEqual(unhandled, []);
    assert.deepEqual(errors, [[403, "private-1"]]);
    await until(() => client.state === "open" && [...server.connections].some((c) => c.channels.has("room")), "still in room");
    const seen = [];
    client.on(ACTION, (options) => seen.push(options.seq));
    server.publish("room", event(0, "threadInfo"), { kind: "server" });
    await until(() => seen.length === 1, "room's events");
    client.close();
  });

  test(`${transport}: a message's actions run in order, named ones by name and the others through onAction`, async () => {
    const server = new FakeServer();
    const client = clientOf(server, { transport });
    const ran = [];
    client.on("refreshList", (options, message) => ran.push(`named refreshList ${options.id} ${message.model.n}`));
    client.onAction((action, message, frame) => ran.push(`${action.action} ${frame.channel} ${message.model.n}`));
    const alert = { action: "showAlert", options: { title: "Hi", text: "there", type: "information" } };
    server.publish("room", { actions: [alert], model: { n: 0 } }); // before the join: a catch-up does not run it again
    await client.join("room");
    const actions = [alert, { action: "namedAction", name: "refreshList", options: { id: 7 } }, { action: "path", options: { path: "/a" } }];
    server.publish("room", { actions, model: { n: 1 } });
    server.publish("room", { actions: [alert], model: { n: 2 } }, { kind: "browser", connectionId: "x", user: null });
    server.publish("room", { actions: [{ action: "path", options: { path: "/b" } }], model: { n: 3 } });
    await until(() => ran.length === 4, "four actions");
    assert.deepEqual(ran, ["showAlert room 1", "named refreshList 7 1", "path room 1", "path room 3"], "a browser's message runs nothing");
    client.close();
  });
}

test("websocket: publish resolves when the server accepts, and a page over SSE in the channel gets it", async () => {
  const server = new FakeServer();
  const writer = clientOf(server, { transport: "websocket" });
  const reader = clientOf(server, { transport: "sse", browserActions: true });
  const alerts = [];
  reader.onAction((action) => alerts.push(action.options.text));
  await reader.join("room", { catchUp: false });
  const message = { actions: [{ action: "showAlert", options: { text: "Hello from Message" } }], model: { a: 1 } };
  const published = writer.publish("room", message); // before the connection is open: sent once it is
  assert.deepEqual(await published, { channel: "room", offset: 1, epoch: "E" });
  assert.deepEqual(server.sent("websocket", "publish").map((f) => [f.channel, f.message]), [["room", message]]);
  await until(() => alerts.length === 1, "the reader's alert");
  assert.deepEqual(alerts, ["Hello from Message"]);
  server.publishing = "forward";
  assert.deepEqual(await writer.publish("room", message), { channel: "room", forwarded: true });
  writer.close();
  reader.close();
});

test("websocket: a refused publish rejects with the server's code and reaches onError; uncaught it stays quiet", async () => {
  const server = new FakeServer();
  server.publishing = "refuse";
  const client = clientOf(server, { transport: "websocket" });
  const errors = [];
  client.onError((error) => errors.push([error.code, error.channel]));
  await assert.rejects(client.publish("room", { actions: [] }), (error) => error.code === 403 && error.channel === "room");
  const unhandled = await unhandledDuring(async () => {
    client.publish("room", { actions: [] });
    await until(() => errors.length === 2, "the second refusal");
  });
  assert.deepEqual(unhandled, []);
  assert.deepEqual(errors, [[403, "room"], [403, "room"]]);
  client.close();
});

test("sse: publish is refused with a clear error, at once and without a frame", async () => {
  const server = new FakeServer();
  const client = clientOf(server, { transport: "sse" });
  const errors = [];
  client.onError((error) => errors.push(error.code));
  await assert.rejects(client.publish("room", { actions: [] }), (error) => {
    assert.equal(error.code, "sse_cannot_publish");
    assert.match(error.message, /WebSocket/);
    return true;
  });
  assert.deepEqual(errors, ["sse_cannot_publish"]);
  assert.deepEqual(server.received, []);
  client.close();
});

test("auto: a publish waiting for the connection is refused once the WebSocket falls back to SSE", async () => {
  const server = new FakeServer();
  server.webSocketsBlocked = true;
  const client = clientOf(server);
  const published = client.publish("room", { actions: [] });
  await assert.rejects(published, (error) => error.code === "sse_cannot_publish");
  assert.equal(client.state, "open");
  assert.equal(server.sockets.length, 1);
  assert.equal(server.sseRequests.length, 1);
  client.close();
});

test("websocket: a publish the connection drops before its answer is rejected as such, not sent again", async () => {
  const server = new FakeServer();
  server.publishing = "hold";
  const client = clientOf(server, { transport: "websocket" });
  await until(() => client.state === "open", "open");
  const published = client.publish("room", { actions: [] });
  await until(() => server.sent("websocket", "publish").length === 1, "the publish sent");
  server.cut();
  await assert.rejects(published, (error) => error.code === "disconnected");
  await until(() => client.state === "open", "open again");
  assert.equal(server.sent("websocket", "publish").length, 1);
  client.close();
  await assert.rejects(client.publish("room", { actions: [] }), (error) => error.code === "closed");
});

test("publish checks its arguments before anything goes out", () => {
  const server = new FakeServer();
  const client = clientOf(server, { transport: "websocket" });
  assert.throws(() => client.publish("", { actions: [] }), TypeError);
  assert.throws(() => client.publish("room", { model: {} }), TypeError);
  client.close();
});

test("sse: past the server's channels per connection, the channels that fit join and the rest reject", async () => {
  const server = new FakeServer({ maxChannels: 3 });
  const client = clientOf(server, { transport: "sse" });
  const errors = [];
  client.onError((error) => errors.push(error.channel));
  const names = ["a", "b", "c", "d", "e"];
  const outcomes = await Promise.all(names.map((name) => client.join(name).then(() => "joined", (error) => error.message)));
  assert.deepEqual(outcomes.filter((o) => o === "joined").length, 3);
  assert.deepEqual(outcomes.filter((o) => o !== "joined"), ["At most 3 channels per connection", "At most 3 channels per connection"]);
  assert.deepEqual(errors.sort(), names.filter((_, i) => outcomes[i] !== "joined").sort());
  await until(() => [...server.connections].some((c) => c.channels.size === 3), "three channels carried");
  client.close();
});

test("sse: a 403 about no channel asked for, a token of another app, closes as a WebSocket's 4403 does", async () => {
  const server = new FakeServer();
  server.refusal = { code: 4403, status: 403, message: "Connection token belongs to another app" };
  const client = clientOf(server, { transport: "sse" });
  const errors = [];
  client.onError((error) => errors.push([error.code, error.channel, error.retry]));
  const joined = client.join("room").then(() => null, (error) => error);
  await until(() => client.state === "closed", "closed");
  assert.deepEqual(errors, [[403, undefined, false]]);
  assert.equal((await joined)?.message, "Connection token belongs to another app");
  assert.equal(server.sseRequests.length, 1);
});

test("sse: a 429 waits at least the Retry-After it was given before trying again", async () => {
  const server = new FakeServer();
  server.refusal = { code: 4429, status: 429, message: "too many connections" };
  const client = clientOf(server, { transport: "sse" });
  const errors = [];
  client.onError((error) => errors.push([error.code, error.retry]));
  await until(() => client.state === "reconnecting", "reconnecting");
  const refusedAt = Date.now();
  server.refusal = null;
  await until(() => client.state === "open", "open", 3000);
  assert.ok(Date.now() - refusedAt >= 900, "Retry-After: 1 second");
  assert.deepEqual(errors, [[429, true]]);
  client.close();
});

// The Node tests' validator agrees with the schema's intent: real frames pass, wrong ones do not.
import assert from "node:assert/strict";
import test from "node:test";

import { checkClientFrame, checkServerFrame } from "./schema.mjs";

const delta = { type: "delta", streamId: "s", seq: 1, content: "Hi" };
const streamMessage = (options, from = { kind: "server" }) => ({
  op: "message", channel: "room", offset: 3, epoch: "E", from,
  message: { actions: [{ action: "namedAction", name: "answer", options }] },
});

test("frames the server sends hold to the schema", () => {
  checkServerFrame({ op: "hello", connectionId: "c", channels: ["tab|c"] });
  checkServerFrame({ op: "joined", channel: "room", recovered: true, offset: 0, epoch: "E", id: 1 });
  checkServerFrame(streamMessage(delta));
  checkServerFrame(streamMessage({ type: "end", streamId: "s", seq: 2, finish_reason: "stop", usage: null, text: "Hi" }));
  checkServerFrame({ op: "error", error: { message: "slow down", code: 429, retryAfter: 2 }, id: null });
  checkClientFrame({ op: "join", channel: "room", since: { offset: 4, epoch: "E" }, id: 7 });
});

test("frames the server never sends do not", () => {
  assert.throws(() => checkServerFrame(streamMessage({ ...delta, seq: -1 })), /matches 0/);
  assert.throws(() => checkServerFrame(streamMessage({ type: "end", streamId: "s", seq: 2 })), /matches 0/);
  assert.throws(() => checkServerFrame({ op: "pong" }), /matches 0/);
  assert.throws(() => checkServerFrame(streamMessage(delta, { kind: "browser" })), /matches 0/);
  assert.throws(() => checkServerFrame({ ...streamMessage(delta), channel: "a\u0085b" }), /matches 0/);
  assert.throws(() => checkClientFrame({ op: "join" }), /matches 0/);
});

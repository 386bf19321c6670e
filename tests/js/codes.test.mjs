// The one table of how a connection ends (CLOSE_CODES in bfstream.js) against the wire schema's
// (closeCode and sseRefusal in bfstream/static/protocol.json): a code added or changed in one and
// not the other fails here. And the channel-name rule the client checks joins against, the schema's.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import test from "node:test";

import { CLOSE_CODES, channelProblem, verdictOn } from "../../bfstream/static/bfstream.js";

const SCHEMA = JSON.parse(readFileSync(new URL("../../bfstream/static/protocol.json", import.meta.url), "utf8"));

/** {code: verdict} of one of the schema's tables. */
function schemaTable(name) {
  return Object.fromEntries(SCHEMA.$defs[name].oneOf.map((entry) => [String(entry.const), entry["x-client"]]));
}

test("the client's WebSocket close codes are the schema's, each with the same verdict", () => {
  assert.deepEqual({ ...CLOSE_CODES.websocket }, schemaTable("closeCode"));
});

test("the client's SSE refusals are the schema's, each with the same verdict", () => {
  assert.deepEqual({ ...CLOSE_CODES.sse }, schemaTable("sseRefusal"));
});

test("every verdict is one the client knows, and a code not listed is retried", () => {
  const known = new Set(["retry", "token", "channel", "close"]);
  for (const table of Object.values(CLOSE_CODES)) for (const verdict of Object.values(table)) assert.ok(known.has(verdict), verdict);
  assert.equal(verdictOn("websocket", 4999), "retry");
  assert.equal(verdictOn("websocket", undefined), "retry");
  assert.equal(verdictOn("sse", 500), "retry");
  assert.equal(verdictOn("websocket", 4404), "close");
  assert.equal(verdictOn("sse", 401), "token");
});

test("the names the client refuses to join are exactly those the schema's channel rule refuses", () => {
  const rule = SCHEMA.$defs.channel;
  const pattern = new RegExp(rule.pattern, "u");
  const valid = (name) => typeof name === "string" && [...name].length >= rule.minLength && [...name].length <= rule.maxLength && pattern.test(name);
  const names = ["", "a", "x".repeat(rule.maxLength), "x".repeat(rule.maxLength + 1), "😀".repeat(rule.maxLength), "😀".repeat(rule.maxLength + 1)];
  for (let code = 0; code <= 0xa0; code += 1) names.push(`room${String.fromCharCode(code)}`);
  names.push("tab|private", "café", "a b");
  for (const name of names) assert.equal(channelProblem(name) === null, valid(name), JSON.stringify(name));
  for (const notAName of [null, undefined, 7, ["a"]]) assert.equal(channelProblem(notAName), "channel must be a non-empty string");
  assert.equal(channelProblem("x".repeat(201)), "channel names are at most 200 characters", "the server's words");
});

// The fake transports the client tests run on: a WebSocket class and SSE responses that check
// every frame, both ways, against the wire schema (./schema.mjs).
import { checkClientFrame, checkServerFrame } from "./schema.mjs";

/** Polls `condition` every millisecond; throws, naming `what`, past `timeout`. */
export async function until(condition, what, timeout = 2000) {
  const deadline = Date.now() + timeout;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`not within ${timeout} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/** A WebSocket class the test drives (open, receive, drop) and the sockets it made. */
export function fakeWebSocket({ opens = true } = {}) {
  const sockets = [];
  class FakeSocket {
    constructor(url) {
      this.url = new URL(url);
      this.sent = [];
      sockets.push(this);
      if (!opens) setTimeout(() => this.onclose?.({ code: 1006, reason: "" }));
    }
    send(text) {
      this.sent.push(checkClientFrame(JSON.parse(text)));
    }
    close() {
      this.closed = true;
    }
    open(channels = []) {
      this.onopen?.({});
      this.receive({ op: "hello", connectionId: "c", channels: ["tab|c", ...channels] });
    }
    receive(frame) {
      this.onmessage?.({ data: JSON.stringify(checkServerFrame(frame)) });
    }
    drop(code = 1006) {
      this.onclose?.({ code, reason: "" });
    }
    lastJoin(channel) {
      return this.sent.filter((f) => f.op === "join" && f.channel === channel).at(-1);
    }
  }
  return { FakeSocket, sockets };
}

/** A 200 event stream the test writes frames into (send) and ends. */
export function sseResponse() {
  let controller;
  const body = new ReadableStream({
    start(c) {
      controller = c;
    },
  });
  const encoder = new TextEncoder();
  return {
    response: new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } }),
    send: (frame, name) => checkServerFrame(frame) && controller.enqueue(encoder.encode(`${name ? `event: ${name}\n` : ""}data: ${JSON.stringify(frame)}\n\n`)),
    end: () => controller.close(),
  };
}

// One fake bfstream server that both transports reach: a WebSocket class and a fetch() for
// /message/sse, over the same channels, history and refusals, so that one scenario runs unchanged
// over either. It follows docs/messaging.md: hello first; joined before a channel's messages; a
// join with `since` (or an SSE lastEventId) replays what came after it; refusals as close codes
// after the handshake, or HTTP errors before an event stream starts. Every frame, both ways, is
// checked against the wire schema (./schema.mjs).
import { channelProblem, encodePositions, decodePositions } from "../../bfstream/static/bfstream.js";
import { checkClientFrame, checkServerFrame } from "./schema.mjs";

export class FakeServer {
  /**
   * `apps`: the app ids it knows; `token`: the one token it takes (others are refused), or null
   * for none needed; `maxChannels`: the channels one SSE request may ask for.
   */
  constructor({ apps = ["app_1"], token = null, maxChannels = 100 } = {}) {
    this.apps = new Set(apps);
    this.maxChannels = maxChannels; // per SSE request, as the server's limits.max_channels
    this.token = token;
    this.epoch = "E";
    this.channels = new Map(); // name -> [{offset, message, from}]
    this.connections = new Set();
    this.refusal = null; // {code, status, message}: every new connection is refused so
    this.webSocketsBlocked = false; // a proxy that refuses upgrades: a WebSocket never opens
    this.publishing = "accept"; // or "refuse", "forward", "hold" (no answer until the connection drops)
    this.received = []; // every client frame, with the transport it came over
    this.sseRequests = [];
    this.sockets = [];
    const server = this;
    this.WebSocket = class FakeServerSocket {
      constructor(url) {
        server.sockets.push(this);
        server._acceptSocket(this, new URL(url));
      }
      send(text) {
        this._peer?.receive(checkClientFrame(JSON.parse(text)));
      }
      close() {
        this._peer?.drop(false);
      }
    };
    this.fetch = (url, init = {}) => server._acceptSSE(new URL(url), init);
  }

  /** Publish to a channel as the server would, to everyone in it; returns the offset. */
  publish(channel, message, from = { kind: "api" }) {
    const list = this._channel(channel);
    const offset = list.length + 1;
    list.push({ offset, message, from });
    for (const connection of this.connections) {
      if (connection.channels.has(channel)) connection.deliver(this._message(channel, list.at(-1), connection));
    }
    return offset;
  }

  /** The connection cut: every open connection drops at once (WebSocket 1006, SSE a broken stream). */
  cut() {
    for (const connection of [...this.connections]) connection.drop(true);
  }

  /** The client frames that came over one transport, of one op. */
  sent(transport, op) {
    return this.received.filter((r) => r.transport === transport && r.frame.op === op).map((r) => r.frame);
  }

  // -- connections --

  _refusalOf(url) {
    if (this.refusal !== null) return this.refusal;
    if (!url.searchParams.get("app")) return { code: 4400, status: 400, message: "app is required" };
    if (!this.apps.has(url.searchParams.get("app"))) return { code: 4404, status: 404, message: "unknown app" };
    if (this.token !== null && url.searchParams.get("token") !== this.token) {
      return { code: 4401, status: 401, message: "the token is invalid or expired" };
    }
    return null;
  }

  _acceptSocket(socket, url) {
    setTimeout(() => {
      if (this.webSocketsBlocked) {
        socket.onclose?.({ code: 1006, reason: "" });
        return;
      }
      socket.onopen?.({});
      const refusal = this._refusalOf(url);
      if (refusal !== null) {
        socket.onclose?.({ code: refusal.code, reason: refusal.message });
        return;
      }
      const connection = new Connection(this, "websocket", {
        write: (frame) => socket.onmessage?.({ data: JSON.stringify(checkServerFrame(frame)) }),
        end: (cut) => socket.onclose?.({ code: cut ? 1006 : 1000, reason: "" }),
      });
      socket._peer = connection;
      const since = url.searchParams.get("since");
      connection.hello(since ? decodePositions(since) : new Map());
    });
  }

  async _acceptSSE(url, init) {
    this.sseRequests.push(url);
    // As the real server: the app, origin and token first, then each channel in turn, the whole
    // request refused for the first bad one, its body the one JSON error shape.
    const refusal = this._refusalOf(url) ?? this._channelRefusal(url.searchParams.getAll("channel"));
    if (refusal !== null) {
      const error = { message: refusal.message, code: refusal.status, type: ERROR_TYPES[refusal.status], details: refusal.details ?? null };
      const body = { success: false, error };
      const headers = { "content-type": "application/json", ...(refusal.status === 429 ? { "retry-after": "1" } : {}) };
      return new Response(JSON.stringify(body), { status: refusal.status, headers });
    }
    let controller;
    const body = new ReadableStream({
      start(c) {
        controller = c;
      },
    });
    const encoder = new TextEncoder();
    const connection = new Connection(this, "sse", {
      write: (frame, id) => {
        checkServerFrame(frame);
        const event = frame.op === "message" ? "" : `event: ${frame.op}\n`;
        controller.enqueue(encoder.encode(`${id ? `id: ${id}\n` : ""}${event}data: ${JSON.stringify(frame)}\n\n`));
      },
      end: (cut) => (cut ? controller.error(new TypeError("network error")) : controller.close()),
    });
    init.signal?.addEventListener("abort", () => {
      connection.drop(false, { quiet: true });
      controller.error(new DOMException("The operation was aborted", "AbortError"));
    });
    const positions = decodePositions(url.searchParams.get("lastEventId") ?? "");
    queueMicrotask(() => {
      connection.hello(new Map());
      for (const channel of url.searchParams.getAll("channel")) {
        const [offset, epoch] = positions.get(channel) ?? [];
        connection.join(channel, offset === undefined ? null : { offset, epoch }, null);
      }
    });
    return new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } });
  }

  _channelRefusal(names) {
    if (names.length > this.maxChannels) return { status: 400, message: `At most ${this.maxChannels} channels per connection` };
    for (const name of names) {
      const problem = channelProblem(name);
      if (problem !== null) return { status: 400, message: problem, details: [{ field: "channel", message: problem }] };
      if (name.startsWith("private")) return { status: 403, message: forbidden(name) };
    }
    return null;
  }

  _channel(name) {
    if (!this.channels.has(name)) this.channels.set(name, []);
    return this.channels.get(name);
  }

  _message(channel, { offset, message, from }) {
    return { op: "message", channel, offset, epoch: this.epoch, from, message };
  }
}

const ERROR_TYPES = { 400: "validation_error", 401: "unauthorized", 403: "forbidden", 404: "not_found", 429: "rate_limited" };

/** The server's refusal of a channel for its added users only (bfstream/messaging/session.py). */
function forbidden(channel) {
  return `Channel '${channel}' is for its added users only`;
}

/** One client's connection on the server, whichever transport carries it. */
class Connection {
  constructor(server, transport, { write, end }) {
    Object.assign(this, { server, transport, write, end });
    this.channels = new Set();
    this.held = new Map(); // publish id -> frame, when publishing is "hold"
    this.open = true;
    server.connections.add(this);
  }

  /** Frames go out in order, each in its own task, as a network would hand them over. */
  deliver(frame) {
    if (!this.open) return;
    const positions = new Map([...this.channels].map((name) => [name, [this.server._channel(name).length, this.server.epoch]]));
    if (frame.op === "message") positions.set(frame.channel, [frame.offset, frame.epoch]);
    const id = ["joined", "message"].includes(frame.op) && this.transport === "sse" ? encodePositions(positions) : "";
    queueMicrotask(() => this.open && this.write(frame, id));
  }

  hello(autoPositions) {
    this.deliver({ op: "hello", connectionId: `c${this.server.connections.size}`, channels: ["tab|c"] });
    for (const [channel, [offset, epoch]] of autoPositions) this.join(channel, { offset, epoch }, null);
  }

  join(channel, since, id) {
    const list = this.server._channel(channel);
    this.channels.add(channel);
    const offset = since === null ? list.length : Math.min(since.offset, list.length);
    const recovered = since !== null && since.epoch === this.server.epoch;
    this.deliver({ op: "joined", channel, recovered, offset: recovered ? offset : list.length, epoch: this.server.epoch, id });
    if (recovered) for (const entry of list.slice(offset)) this.deliver(this.server._message(channel, entry));
  }

  receive(frame) {
    this.server.received.push({ transport: this.transport, frame });
    if (frame.op === "join") {
      if (frame.channel.startsWith("private")) {
        this.deliver({ op: "error", error: { message: forbidden(frame.channel), code: 403 }, id: frame.id });
      } else {
        this.join(frame.channel, frame.since ?? null, frame.id ?? null);
      }
    } else if (frame.op === "leave") {
      this.channels.delete(frame.channel);
      this.deliver({ op: "left", channel: frame.channel, id: frame.id ?? null });
    } else if (frame.op === "publish") {
      this._publish(frame);
    }
  }

  _publish(frame) {
    const id = frame.id ?? null;
    const mode = this.server.publishing;
    if (mode === "hold") this.held.set(id, frame);
    else if (mode === "refuse") this.deliver({ op: "error", error: { message: "this channel does not take publishes", code: 403 }, id });
    else if (mode === "forward") this.deliver({ op: "forwarded", channel: frame.channel, id });
    else {
      const from = { kind: "browser", connectionId: "c", user: null };
      const offset = this.server.publish(frame.channel, frame.message, from);
      this.deliver({ op: "published", channel: frame.channel, offset, epoch: this.server.epoch, id });
    }
  }

  /** `cut`: the network failed (not a close); `quiet`: the client itself closed it. */
  drop(cut, { quiet = false } = {}) {
    if (!this.open) return;
    this.open = false;
    this.server.connections.delete(this);
    if (!quiet) queueMicrotask(() => this.end(cut));
  }
}

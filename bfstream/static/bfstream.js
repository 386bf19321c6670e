// bfstream.js: the browser client of bfstream's messaging layer (docs/client.md).
//
// A plain ES module without dependencies or a build step. It speaks the wire protocol of
// docs/messaging.md over a WebSocket, or Server-Sent Events read with fetch(), and gives a page
// named actions to run: each stream event (streamId, seq) exactly once and in order, across
// reconnects and across channels that receive the same stream.
//
//   import { connect } from "/static/bfstream.js";
//   const client = connect({ appId: "app_..." });
//   client.on("assistantReceiveResultsStream", (event) => { ... });
//   await client.join("anonymous");
//
// The logic that decides what reaches the page (positions, catch-up, dedupe, backoff, SSE
// parsing) lives in the pure classes exported below, which tests/js/ runs under Node.

export const STATES = Object.freeze(["connecting", "open", "reconnecting", "closed"]);

// ---- positions: the encoding of SSE event ids and of a WebSocket's ?since= -------------------

/** base64url (unpadded) of the UTF-8 JSON `{"<channel>": [offset, epoch], ...}`. */
export function encodePositions(positions) {
  const object = Object.create(null);
  for (const [name, [offset, epoch]] of entriesOf(positions)) object[name] = [offset, epoch];
  const bytes = new TextEncoder().encode(JSON.stringify(object));
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** The inverse of encodePositions, as a Map; anything unreadable gives an empty Map. */
export function decodePositions(id) {
  const positions = new Map();
  try {
    const binary = atob(id.replace(/-/g, "+").replace(/_/g, "/"));
    const raw = JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
    for (const [name, pos] of Object.entries(raw)) {
      if (Array.isArray(pos) && pos.length === 2 && Number.isInteger(pos[0]) && typeof pos[1] === "string") {
        positions.set(name, [pos[0], pos[1]]);
      }
    }
  } catch {
    positions.clear();
  }
  return positions;
}

function entriesOf(value) {
  return value instanceof Map ? value.entries() : Object.entries(value);
}

// ---- backoff ---------------------------------------------------------------------------------

/**
 * Jittered exponential backoff: the n-th retry waits between (1 - jitter) and 1 times
 * min(max, base * factor^n) milliseconds. A connection that stayed open `stableMs` starts the
 * sequence over; one that drops at once (a server refusing right after the handshake) does not.
 */
export class Backoff {
  constructor({ base = 500, max = 10000, factor = 2, jitter = 0.5, stableMs = 5000, random = Math.random } = {}) {
    Object.assign(this, { base, max, factor, jitter, stableMs, random });
    this.attempt = 0;
    this.openedAt = null;
  }

  opened(now) {
    this.openedAt = now;
  }

  next(now) {
    if (this.openedAt !== null && now - this.openedAt >= this.stableMs) this.attempt = 0;
    this.openedAt = null;
    const ceiling = Math.min(this.max, this.base * this.factor ** Math.min(this.attempt, 64));
    this.attempt += 1;
    return ceiling * (1 - this.jitter) + ceiling * this.jitter * this.random();
  }

  reset() {
    this.attempt = 0;
  }
}

// ---- Server-Sent Events, parsed as the HTML standard says -----------------------------------

export class SSEParser {
  constructor() {
    this.buffer = "";
    this.data = [];
    this.event = "";
    this.lastEventId = "";
  }

  /** Feed decoded text; returns the events it completes, each `{event, data, id}`. */
  push(text) {
    this.buffer += text;
    const events = [];
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const c = this.buffer[i];
      if (c !== "\n" && c !== "\r") continue;
      if (c === "\r" && i + 1 === this.buffer.length) break; // a CR whose LF may come in the next chunk
      this._line(this.buffer.slice(start, i), events);
      if (c === "\r" && this.buffer[i + 1] === "\n") i++;
      start = i + 1;
    }
    this.buffer = this.buffer.slice(start);
    return events;
  }

  _line(line, events) {
    if (line === "") {
      if (this.data.length) events.push({ event: this.event || "message", data: this.data.join("\n"), id: this.lastEventId });
      this.data = [];
      this.event = "";
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
  }
}

// ---- stream events: each (streamId, seq) once, in order --------------------------------------

/** A stream's event, as bfstream sends it in a namedAction's options. */
export function isStreamEvent(options) {
  return (
    options !== null &&
    typeof options === "object" &&
    typeof options.streamId === "string" &&
    Number.isInteger(options.seq) &&
    options.seq >= 0 &&
    typeof options.type === "string"
  );
}

/**
 * Orders the events of each stream by seq and drops duplicates. An event past the next expected
 * one waits (another channel, or a replay, may still bring the missing ones) for `gapWaitMs`;
 * then `expire` gives up on the gap, says so, and delivers what it held. A snapshot at seq m
 * stands for seq 0..m: it runs unless the stream is past m already, and what it covers is done.
 *
 * `accept` and `expire` return entries in delivery order: `{type: "event", item}` or
 * `{type: "gap", streamId, expected, got}`.
 */
export class StreamTracker {
  constructor({ gapWaitMs = 1000, maxStreams = 1000 } = {}) {
    this.gapWaitMs = gapWaitMs;
    this.maxStreams = maxStreams;
    this.streams = new Map(); // streamId -> {next, pending: Map<seq, {item, last}>, deadline, done}
  }

  /**
   * `fromStart`: this stream must be seen from seq 0 (a catch-up); otherwise a stream first seen
   * at seq n (a page that joined live, mid-answer) starts there. `last`: the stream's end.
   * `snapshot`: the event stands for every seq up to its own.
   */
  accept(streamId, seq, item, { fromStart = false, last = false, snapshot = false, now = 0 } = {}) {
    let stream = this.streams.get(streamId);
    if (stream === undefined) {
      stream = { next: fromStart ? 0 : seq, pending: new Map(), deadline: null, done: false };
      this.streams.set(streamId, stream);
      this._evict();
    }
    if (stream.done) return [];
    if (snapshot) return this._fold(stream, seq, item);
    if (seq < stream.next || stream.pending.has(seq)) {
      // A repeat, unless it is the end of a stream that has none yet: a server that restarted
      // ends a stream it lost numbering from its last save, which this page may be past.
      if (!last) return [];
      stream.pending.clear();
      const out = [];
      this._deliver(stream, { item, last }, out);
      return out;
    }
    if (seq > stream.next) {
      stream.pending.set(seq, { item, last });
      if (stream.deadline === null) stream.deadline = now + this.gapWaitMs;
      return [];
    }
    const out = [];
    this._deliver(stream, { item, last }, out);
    this._drain(stream, out);
    return out;
  }

  /** Gives up on the gaps whose wait is over: reports each and delivers what follows it. */
  expire(now) {
    const out = [];
    for (const [streamId, stream] of this.streams) {
      if (stream.deadline === null || stream.deadline > now) continue;
      while (stream.pending.size && !stream.done) {
        const got = Math.min(...stream.pending.keys());
        out.push({ type: "gap", streamId, expected: stream.next, got });
        stream.next = got;
        this._drain(stream, out);
      }
      stream.deadline = null;
    }
    return out;
  }

  nextDeadline() {
    let soonest = null;
    for (const stream of this.streams.values()) {
      if (stream.deadline !== null && (soonest === null || stream.deadline < soonest)) soonest = stream.deadline;
    }
    return soonest;
  }

  /** A snapshot at `seq`: the events it covers, delivered or waiting, are done with. */
  _fold(stream, seq, item) {
    if (seq < stream.next) return []; // the page is past it
    let end = null; // an end never folds into a snapshot; one numbered from a server's save might look so
    for (const [held, entry] of stream.pending) {
      if (held > seq) continue;
      stream.pending.delete(held);
      if (entry.last) end = entry;
    }
    const out = [];
    stream.next = seq;
    this._deliver(stream, { item, last: false }, out);
    if (end !== null) this._deliver(stream, end, out);
    this._drain(stream, out);
    return out;
  }

  _deliver(stream, { item, last }, out) {
    out.push({ type: "event", item });
    stream.next += 1;
    if (last) {
      stream.done = true;
      stream.pending.clear();
    }
  }

  _drain(stream, out) {
    while (!stream.done && stream.pending.has(stream.next)) {
      const held = stream.pending.get(stream.next);
      stream.pending.delete(stream.next);
      this._deliver(stream, held, out);
    }
    if (stream.pending.size === 0) stream.deadline = null;
  }

  _evict() {
    while (this.streams.size > this.maxStreams) {
      let victim = null;
      for (const [id, stream] of this.streams) {
        if (stream.done) {
          victim = id;
          break;
        }
      }
      this.streams.delete(victim ?? this.streams.keys().next().value);
    }
  }
}

// ---- the channels of one client: positions, catch-up, what reaches the page ------------------

const TRUSTED = new Set(["server", "api"]); // bfstream's own stream events; a back end with the app key

/**
 * Everything a client decides, fed the frames it receives; transport-free, so Node can test it.
 *
 * `sink` receives `action(name, options, message, frame)`, `message(message, frame)`, `gap(info)`
 * and `toolCall(event)`: a tool_call event for the page to answer, once per toolCallId, after the
 * named actions of the frames that brought it. A channel is in one of three phases:
 * - `joining`: a plain join is on its way (no position yet);
 * - `restarting`: joined, and catching up: a join with `since: {offset: 0}` is on its way, and
 *   the frames before its reply are dropped (the server sends them again after it);
 * - `live`: it has a position, the (offset, epoch) of the last frame handled, to resume from.
 *
 * Catch-up: the first join says where the channel stood (offset L). The replay from offset 0 is
 * held until L; then the streams that had not ended by L run from their first event, and what had
 * ended (or was not a stream) is not run again.
 *
 * Log frames (`"log": true`) are what a join recovered from streams' logs because the channel's
 * history no longer had it: they come right after `joined`, stand at its position, and go ahead of
 * the replay. A snapshot event among them reaches the page unfolded (see `_unfold`).
 */
export class Core {
  constructor(sink, { gapWaitMs = 1000, maxStreams = 1000, browserActions = false, now = () => Date.now() } = {}) {
    this.sink = sink;
    this.now = now;
    this.browserActions = browserActions;
    this.tracker = new StreamTracker({ gapWaitMs, maxStreams });
    this.maxStreams = maxStreams;
    this.channels = new Map();
    // streamId -> {text, reasoning, sources: Map<url, source>, past: the seq of its latest event
    // other than a tool_call, info: its threadInfo ran, functions: how many function_call entries ran}
    this.seen = new Map();
    this.calls = []; // tool_call events of the frames being handled, offered once they all are
    this.offered = new Set(); // toolCallIds
    this.privateChannel = null;
  }

  /** A channel the page joins; `catchUp` as in client.join. */
  add(name, { catchUp = true } = {}) {
    let channel = this.channels.get(name);
    if (channel === undefined) {
      channel = { phase: "joining", offset: 0, epoch: null, catchUp: null, wantCatchUp: catchUp, auto: false };
      this.channels.set(name, channel);
    }
    return channel;
  }

  remove(name) {
    this.channels.delete(name);
  }

  /** The `since` to (re)join a channel with: null for a plain join. */
  resumeSince(name) {
    const channel = this.channels.get(name);
    if (channel === undefined || channel.phase === "joining") return null;
    if (channel.phase === "restarting") return { offset: 0, epoch: channel.epoch };
    return { offset: channel.offset, epoch: channel.epoch };
  }

  /** Positions of the channels the server joins by itself (a user's), for ?since= / lastEventId. */
  positions({ auto } = {}) {
    const out = new Map();
    for (const name of this.channels.keys()) {
      const channel = this.channels.get(name);
      const since = this.resumeSince(name);
      if (since !== null && (auto === undefined || channel.auto === auto)) out.set(name, [since.offset, since.epoch]);
    }
    return out;
  }

  onHello(frame) {
    this.privateChannel = (frame.channels || []).find((c) => typeof c === "string" && c.startsWith("tab|")) ?? null;
    const listed = new Set(frame.channels || []);
    for (const [name, channel] of this.channels) if (channel.auto && !listed.has(name)) this.channels.delete(name);
  }

  /**
   * A `joined` frame; `since` is what the join that it answers asked for (null: none). Returns
   * "restart" when the caller must join again with `resumeSince(channel)` to catch up.
   */
  onJoined(frame, since = null) {
    let channel = this.channels.get(frame.channel);
    if (channel === undefined) {
      // Joined by the server itself: a user's channel, on connect or when added live.
      channel = { phase: "live", offset: 0, epoch: null, catchUp: null, wantCatchUp: false, auto: true };
      this.channels.set(frame.channel, channel);
    }
    if (since !== null && frame.recovered === false) {
      const epochChanged = since.epoch !== null && since.epoch !== undefined && since.epoch !== frame.epoch;
      this.sink.gap({ channel: frame.channel, reason: epochChanged ? "epoch" : "history", since, epoch: frame.epoch });
      if (epochChanged && frame.offset > 0) {
        // A new epoch (the server restarted): everything it holds is new to this page, so take
        // all of it, from offset 0, before going on live; the frames until that reply come again.
        Object.assign(channel, { phase: "restarting", catchUp: null, offset: 0, epoch: frame.epoch });
        return "restart";
      }
    }
    if (channel.epoch !== null && channel.epoch !== frame.epoch) channel.catchUp = null; // offsets of another epoch
    channel.offset = frame.offset;
    channel.epoch = frame.epoch;
    if (channel.catchUp) channel.catchUp.held = channel.catchUp.held.filter((f) => f.offset <= frame.offset);
    if (channel.phase === "joining" && channel.wantCatchUp && since === null && frame.offset > 0) {
      channel.phase = "restarting";
      channel.catchUp = { until: frame.offset, held: [] };
      return "restart";
    }
    channel.phase = "live";
    return "joined";
  }

  onLeft(frame) {
    this.channels.delete(frame.channel);
  }

  onMessage(frame) {
    this._onMessage(frame);
    this._offerCalls();
  }

  _onMessage(frame) {
    const channel = this.channels.get(frame.channel);
    if (channel === undefined) {
      if (frame.channel === this.privateChannel) this._dispatch(frame, "live");
      return; // left already
    }
    if (frame.log === true) {
      this._onLogFrame(channel, frame);
      return;
    }
    if (channel.phase !== "live") return; // restarting: the replay brings it again
    if (channel.epoch === frame.epoch && frame.offset <= channel.offset) return; // handled already
    if (channel.epoch !== frame.epoch) channel.catchUp = null;
    channel.offset = frame.offset;
    channel.epoch = frame.epoch;
    const catchUp = channel.catchUp;
    if (catchUp) {
      if (frame.offset <= catchUp.until) {
        catchUp.held.push(frame);
        if (frame.offset === catchUp.until) this._finishCatchUp(channel);
        return;
      }
      this._finishCatchUp(channel);
    }
    this._dispatch(frame, "live");
  }

  /**
   * A frame from a stream's log: its offset is the position the join answered, which it does not
   * move. During a catch-up it waits with the replay, ahead of it; otherwise it runs now, even
   * while a restart is on its way (a new epoch's replay does not bring it again).
   */
  _onLogFrame(channel, frame) {
    if (channel.phase === "joining" || channel.epoch !== frame.epoch) return; // not of the join just answered
    if (channel.catchUp) channel.catchUp.held.push(frame);
    else this._dispatch(frame, "live");
  }

  /** Gives up on stream gaps whose wait is over; see StreamTracker. */
  expire() {
    this._emit(this.tracker.expire(this.now()));
    this._offerCalls();
  }

  nextDeadline() {
    return this.tracker.nextDeadline();
  }

  text(streamId) {
    return this.seen.get(streamId)?.text ?? "";
  }

  reasoning(streamId) {
    return this.seen.get(streamId)?.reasoning ?? "";
  }

  sources(streamId) {
    return [...(this.seen.get(streamId)?.sources.values() ?? [])].map((source) => ({ ...source }));
  }

  _finishCatchUp(channel) {
    const held = channel.catchUp.held;
    channel.catchUp = null;
    const ended = new Set();
    for (const frame of held) {
      if (frame.from?.kind !== "server") continue;
      for (const action of actionsOf(frame.message)) {
        if (isStreamEvent(action.options) && action.options.type === "end") ended.add(action.options.streamId);
      }
    }
    for (const frame of held) this._dispatch(frame, "catchup", ended);
  }

  _dispatch(frame, mode, ended = null) {
    const message = frame.message;
    const kind = frame.from?.kind;
    const entries = [];
    let ofStream = false;
    for (const action of actionsOf(message)) {
      if (action.action !== "namedAction" || typeof action.name !== "string") continue;
      const options = action.options;
      const item = { name: action.name, options, message, frame };
      if (isStreamEvent(options)) {
        // Only bfstream itself publishes stream events; look-alikes from anyone else never run.
        if (kind !== "server") continue;
        if (mode === "catchup" && ended.has(options.streamId)) continue;
        ofStream = true;
        const { type } = options;
        const flags = { fromStart: mode === "catchup", last: type === "end", snapshot: type === "snapshot" };
        flags.now = this.now();
        entries.push(...this.tracker.accept(options.streamId, options.seq, item, flags));
      } else {
        if (mode === "catchup") continue; // an old message: not run again
        if (!TRUSTED.has(kind) && !(kind === "browser" && this.browserActions)) continue;
        entries.push({ type: "event", item });
      }
    }
    if (mode === "live" || ofStream) this.sink.message(message, frame);
    this._emit(entries);
  }

  _emit(entries) {
    for (const entry of entries) {
      if (entry.type === "gap") {
        const { streamId, expected, got } = entry;
        this.sink.gap({ reason: "stream", streamId, expected, got });
        continue;
      }
      const { name, options, message, frame } = entry.item;
      const unfold = isStreamEvent(options) && options.type === "snapshot";
      for (const event of unfold ? this._unfold(options) : [options]) {
        if (isStreamEvent(event)) this._record(event);
        this.sink.action(name, event, message, frame);
      }
    }
  }

  _stream(streamId) {
    let stream = this.seen.get(streamId);
    if (stream === undefined) {
      stream = { text: "", reasoning: "", sources: new Map(), past: -1, info: false, functions: 0 };
      this.seen.set(streamId, stream);
      if (this.seen.size > this.maxStreams) this.seen.delete(this.seen.keys().next().value);
    }
    return stream;
  }

  _record(event) {
    const stream = this._stream(event.streamId);
    if (event.type === "tool_call") {
      if (typeof event.toolCallId === "string" && typeof event.toolName === "string") this.calls.push(event);
      return;
    }
    stream.past = Math.max(stream.past, event.seq);
    if (event.type === "delta" && typeof event.content === "string") stream.text += event.content;
    else if (event.type === "reasoning" && typeof event.content === "string") stream.reasoning += event.content;
    else if (event.type === "sources") addSources(stream.sources, event.sources);
    else if (event.type === "threadInfo") stream.info = true;
    else if (event.type === "function_call") stream.functions += listOf(event.content?.functions).length;
    else if (event.type === "end") {
      // The end says it all: a page that joined mid-answer gets the whole of it here.
      if (typeof event.text === "string") stream.text = event.text;
      if (typeof event.reasoning === "string") stream.reasoning = event.reasoning;
      addSources(stream.sources, event.sources);
    }
  }

  /**
   * A snapshot at seq m as the events a page's handler knows, each `snapshot: true` at seq m, for
   * what of it this page has not had yet: threadInfo (if none ran), one reasoning with the rest of
   * the thinking, one delta with the rest of the text, one sources with the sources not had, one
   * function_call with the calls not run. Own text (or thinking) that is not a prefix of the
   * snapshot's (it should be) is replaced: the delta (or reasoning) then carries the whole of it.
   */
  _unfold(snapshot) {
    const { streamId, seq } = snapshot;
    const stream = this._stream(streamId);
    stream.past = Math.max(stream.past, seq);
    const marks = { streamId, seq, snapshot: true };
    const events = [];
    if (!stream.info) {
      const [service, model] = [snapshot.service, snapshot.model].map((v) => (typeof v === "string" ? v : ""));
      events.push({ type: "threadInfo", ...marks, content: { streamId, service, model } });
    }
    const reasoning = rest(stream, "reasoning", snapshot.reasoning);
    if (reasoning !== null) events.push({ type: "reasoning", ...marks, content: reasoning });
    const text = rest(stream, "text", snapshot.text);
    if (text !== null) events.push({ type: "delta", ...marks, content: text });
    const sources = [...addSources(new Map(), snapshot.sources).values()].filter((s) => !stream.sources.has(s.url));
    if (sources.length) events.push({ type: "sources", ...marks, sources });
    const functions = listOf(snapshot.functions).slice(stream.functions);
    if (functions.length) events.push({ type: "function_call", ...marks, content: { functions } });
    return events;
  }

  /**
   * The tool calls the frames just handled brought, each toolCallId once (the tracker runs each
   * event once; this also holds for a stream it has forgotten and sees again). A call that its
   * stream went on past in the same frames, as in a catch-up replay, was answered or timed out
   * already: the page is not asked again. The calls of one turn come one after the other, so a
   * call followed only by calls still waits.
   */
  _offerCalls() {
    const calls = this.calls;
    this.calls = [];
    for (const event of calls) {
      if (this.offered.has(event.toolCallId) || (this.seen.get(event.streamId)?.past ?? -1) > event.seq) continue;
      this.offered.add(event.toolCallId);
      if (this.offered.size > this.maxStreams) this.offered.delete(this.offered.values().next().value);
      this.sink.toolCall?.(event);
    }
  }
}

function listOf(value) {
  return Array.isArray(value) ? value : [];
}

/**
 * What of a snapshot's `whole` (its text, or its thinking) the stream's own `key` lacks: the rest
 * after it, or null when nothing is missing. Own text that is not a prefix of it is dropped first.
 */
function rest(stream, key, whole) {
  const full = typeof whole === "string" ? whole : "";
  if (stream[key].startsWith(full)) return null;
  if (!full.startsWith(stream[key])) stream[key] = "";
  return full.slice(stream[key].length);
}

/** Sources into a stream's Map by URL: the first of each URL stays, in the order they came. */
function addSources(known, sources) {
  for (const source of listOf(sources)) {
    if (typeof source?.url === "string" && !known.has(source.url)) known.set(source.url, source);
  }
  return known;
}

function actionsOf(message) {
  const actions = message !== null && typeof message === "object" ? message.actions : null;
  return Array.isArray(actions) ? actions.filter((a) => a !== null && typeof a === "object") : [];
}

// ---- the client --------------------------------------------------------------------------------

const FATAL_CLOSES = new Set([4400, 4403, 4404]); // no ?app=, a token of another app, an unknown app

/** Open a client; see docs/client.md. */
export function connect(options) {
  return new Client(options);
}

export class Client {
  constructor({
    appId,
    url,
    token,
    transport = "auto",
    backoff,
    gapWaitMs = 1000,
    browserActions = false,
    WebSocket: WebSocketClass = globalThis.WebSocket,
    fetch: fetchFunction = globalThis.fetch?.bind(globalThis),
  } = {}) {
    if (typeof appId !== "string" || appId === "") throw new TypeError("connect: appId is required");
    if (!["auto", "websocket", "sse"].includes(transport)) {
      throw new TypeError('connect: transport is "auto", "websocket" or "sse"');
    }
    this.appId = appId;
    this.url = String(url ?? globalThis.location?.origin ?? "").replace(/\/+$/, "");
    this.transport = transport;
    this.state = "connecting";
    this._token = token;
    this._WebSocket = WebSocketClass;
    this._fetch = fetchFunction;
    this._backoff = backoff instanceof Backoff ? backoff : new Backoff(backoff);
    this._handlers = { state: new Set(), message: new Set(), gap: new Set(), error: new Set(), actions: new Map() };
    this._tools = new Map(); // toolName or "*" -> the handler that answers its calls
    this._core = new Core(
      {
        action: (name, options, message, frame) => {
          for (const handler of this._handlers.actions.get(name) ?? []) call(handler, options, message, frame);
        },
        message: (message, frame) => this._emit("message", message, frame),
        gap: (info) => this._emit("gap", info),
        toolCall: (event) => this._answerToolCall(event),
      },
      { gapWaitMs, browserActions },
    );
    this._mode = transport === "sse" ? "sse" : "websocket";
    this._everOpened = false;
    this._conn = null; // {kind, close(), send?}
    this._requests = new Map(); // WebSocket request id -> channel
    this._sent = new Map(); // channel -> the since its pending join asked for
    this._waiters = new Map(); // channel -> [{resolve, reject}]
    this._nextId = 0;
    this._retryTimer = null;
    this._gapTimer = null;
    this._reopenQueued = false;
    this._open();
  }

  // -- the page's API --

  /** Resolves once the channel is joined (and, with catchUp, its catch-up replay has started). */
  join(channel, { catchUp = true } = {}) {
    if (this.state === "closed") return Promise.reject(new Error("bfstream: the client is closed"));
    const known = this._core.channels.get(channel);
    if (known !== undefined && known.phase === "live") return Promise.resolve();
    this._core.add(channel, { catchUp });
    const joined = new Promise((resolve, reject) => {
      const list = this._waiters.get(channel) ?? [];
      list.push({ resolve, reject });
      this._waiters.set(channel, list);
    });
    if (known === undefined && this._conn?.ready) {
      if (this._conn.kind === "websocket") this._sendJoin(channel, null);
      else this._reopen();
    }
    return joined;
  }

  leave(channel) {
    const known = this._core.channels.has(channel);
    this._core.remove(channel);
    this._settle(channel, new Error(`bfstream: left ${channel} before it was joined`));
    if (known && this._conn?.ready) {
      if (this._conn.kind === "websocket") this._conn.send({ op: "leave", channel, id: this._id() });
      else this._reopen();
    }
    return Promise.resolve();
  }

  /** handler(options, message, frame) for each namedAction of that name. Returns an unsubscribe. */
  on(actionName, handler) {
    const set = this._handlers.actions.get(actionName) ?? new Set();
    set.add(handler);
    this._handlers.actions.set(actionName, set);
    return () => set.delete(handler);
  }

  /**
   * handler(args, call) answers the model's calls of the frontend tool ui_<name> ("*": of any
   * tool without a handler of its own), each toolCallId once; `call` is the tool_call event.
   * What it returns, or resolves to, is the result the model reads; see toolResult. One handler
   * per name: a second replaces the first. A call of a tool without a handler is left alone, as
   * another page in the channel may answer it; unanswered, it times out. Returns an unsubscribe.
   */
  onToolCall(name, handler) {
    if (typeof name !== "string" || typeof handler !== "function") {
      throw new TypeError("onToolCall: a tool name (or \"*\") and a function");
    }
    this._tools.set(name, handler);
    return () => {
      if (this._tools.get(name) === handler) this._tools.delete(name);
    };
  }

  /** handler(message, frame): every BetterForms message, raw, once per channel it came through. */
  onMessage(handler) {
    return this._subscribe("message", handler);
  }

  /** handler(state, detail): "connecting", "open", "reconnecting", "closed". */
  onState(handler) {
    return this._subscribe("state", handler);
  }

  /** handler(info): a position that could not be recovered, or a stream's events that are missing. */
  onGap(handler) {
    return this._subscribe("gap", handler);
  }

  /** handler(error): refused joins, refused tokens, frames the server answered with an error. */
  onError(handler) {
    return this._subscribe("error", handler);
  }

  /** A stream's text so far, from its deltas ("" for a stream not seen); its end's text once ended. */
  text(streamId) {
    return this._core.text(streamId);
  }

  /** A stream's thinking so far, from its reasoning events ("" if none); its end's reasoning once ended. */
  reasoning(streamId) {
    return this._core.reasoning(streamId);
  }

  /** The sources a stream cited so far, [{url, title?, snippet?}], each URL once, in the order they came. */
  sources(streamId) {
    return this._core.sources(streamId);
  }

  /** POST /stream/stop: the stream id is the capability. Resolves to the server's answer. */
  async stop(streamId) {
    const response = await this._fetch(`${this.url}/stream/stop`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ streamId }),
    });
    return response.json();
  }

  close() {
    if (this.state === "closed") return;
    this._shutdown("closed", { reason: "closed by the page" });
  }

  // -- tool calls --

  async _answerToolCall(call) {
    const handler = this._tools.get(call.toolName) ?? this._tools.get("*");
    if (handler === undefined) return;
    let result;
    try {
      result = toolResult(await handler(call.arguments, call));
      JSON.stringify(result); // a cycle or a BigInt fails here, as the page's failure, not on the way out
    } catch (error) {
      result = { success: false, message: error instanceof Error ? error.message : String(error) };
    }
    if (this.state === "closed") return; // the page is done: the call times out
    const conn = this._conn;
    if (conn?.kind === "websocket" && conn.ready) {
      // Kept until the server's `answered`: if the socket drops first, the answer goes over HTTP
      // (the first answer wins, so one that did arrive is not taken twice).
      const id = this._id();
      conn.answers.set(id, { call, result });
      conn.send({ op: "toolResult", toolCallId: call.toolCallId, result, id });
    } else {
      this._postToolResult(call, result);
    }
  }

  /** POST /llm/tool-response: the stream id is the capability, as for stop. */
  async _postToolResult(call, result) {
    if (this.state === "closed") return;
    let response;
    try {
      response = await this._fetch(`${this.url}/llm/tool-response`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ streamId: call.streamId, toolCallId: call.toolCallId, result }),
      });
    } catch (error) {
      const failure = error instanceof Error ? error : new Error(String(error));
      this._emit("error", Object.assign(failure, { toolCallId: call.toolCallId }));
      return;
    }
    if (response.ok || response.status === 404) return; // 404: no answer awaited (answered already, timed out)
    const body = await response.json().catch(() => null);
    const message = body?.error?.message ?? `HTTP ${response.status}`;
    this._emit("error", Object.assign(new Error(message), { code: response.status, toolCallId: call.toolCallId }));
  }

  // -- connections --

  async _open() {
    this._retryTimer = null;
    if (this.state === "closed") return;
    if (this.transport === "auto" && !this._everOpened) this._mode = "websocket";
    let token;
    try {
      token = typeof this._token === "function" ? await this._token() : this._token;
    } catch (error) {
      this._emit("error", error);
      this._lost({ reason: "the token callback failed" });
      return;
    }
    if (this.state === "closed") return;
    if (this._mode === "websocket") this._openWebSocket(token);
    else this._openSSE(token);
  }

  _query(token, extra) {
    const params = new URLSearchParams({ app: this.appId });
    if (token) params.set("token", token);
    for (const [key, value] of extra) params.append(key, value);
    return params.toString();
  }

  _openWebSocket(token) {
    const auto = this._core.positions({ auto: true });
    const extra = auto.size ? [["since", encodePositions(auto)]] : [];
    const base = this.url.replace(/^http/, "ws");
    let ws;
    try {
      ws = new this._WebSocket(`${base}/message/ws?${this._query(token, extra)}`);
    } catch (error) {
      this._webSocketFailed(token, { reason: String(error) });
      return;
    }
    let opened = false;
    const conn = {
      kind: "websocket",
      ready: false,
      answers: new Map(), // request id -> a tool result not yet acknowledged
      send: (frame) => ws.send(JSON.stringify(frame)),
      close: () => ws.close(1000),
    };
    this._conn = conn;
    this._sent = new Map(auto.size ? [...auto].map(([name, [offset, epoch]]) => [name, { offset, epoch }]) : []);
    ws.onopen = () => {
      opened = true;
    };
    ws.onmessage = (event) => {
      if (this._conn !== conn || typeof event.data !== "string") return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this._frame(frame, conn);
    };
    ws.onerror = () => {};
    ws.onclose = (event) => {
      for (const { call, result } of conn.answers.values()) this._postToolResult(call, result);
      conn.answers.clear();
      if (this._conn !== conn) return;
      this._conn = null;
      if (!opened) this._webSocketFailed(token, { code: event.code, reason: "the WebSocket could not open" });
      else this._closedWith(event.code, event.reason);
    };
  }

  _webSocketFailed(token, detail) {
    this._conn = null;
    if (this.transport === "auto" && !this._everOpened) {
      this._mode = "sse"; // a WebSocket that cannot open: Server-Sent Events, in the same attempt
      this._openSSE(token);
    } else {
      this._lost(detail);
    }
  }

  async _openSSE(token) {
    const extra = [];
    for (const [name, channel] of this._core.channels) if (!channel.auto) extra.push(["channel", name]);
    const positions = this._core.positions();
    if (positions.size) extra.push(["lastEventId", encodePositions(positions)]);
    const controller = new AbortController();
    const names = extra.filter(([key]) => key === "channel").map(([, name]) => name);
    const conn = { kind: "sse", ready: false, channels: names, close: () => controller.abort() };
    this._conn = conn;
    this._sent = new Map([...positions].map(([name, [offset, epoch]]) => [name, { offset, epoch }]));
    const gone = (detail) => {
      if (this._conn !== conn) return;
      this._conn = null;
      this._lost(detail);
    };
    let response;
    try {
      response = await this._fetch(`${this.url}/message/sse?${this._query(token, extra)}`, {
        headers: { accept: "text/event-stream" },
        cache: "no-store",
        signal: controller.signal,
      });
    } catch (error) {
      gone({ reason: String(error) });
      return;
    }
    if (this._conn !== conn) {
      controller.abort();
      return;
    }
    if (!response.ok) {
      let body = null;
      try {
        body = await response.json();
      } catch {
        body = null;
      }
      if (this._conn === conn) this._sseRefused(conn, response.status, body);
      return;
    }
    const parser = new SSEParser();
    const decoder = new TextDecoder();
    try {
      const reader = response.body.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this._conn !== conn) break;
        for (const event of parser.push(decoder.decode(value, { stream: true }))) {
          let frame;
          try {
            frame = JSON.parse(event.data);
          } catch {
            continue;
          }
          this._frame(frame, conn);
          if (this._conn !== conn) break;
        }
      }
    } catch (error) {
      gone({ reason: String(error) });
      return;
    }
    gone({ reason: "the event stream ended" });
  }

  _sseRefused(conn, status, body) {
    this._conn = null;
    const error = body?.error ?? { message: `HTTP ${status}`, code: status };
    const joining = [...this._core.channels].filter(([, c]) => c.phase === "joining").map(([name]) => name);
    if ((status === 400 || status === 403) && joining.length) {
      // A channel just asked for was refused: give it up and keep the others.
      for (const name of joining) {
        this._core.remove(name);
        this._settle(name, Object.assign(new Error(error.message), { code: status, channel: name }));
      }
      this._open();
    } else if (status === 404 || status === 400 || status === 403 || (status === 401 && typeof this._token !== "function")) {
      this._shutdown("closed", { code: status, reason: error.message });
    } else {
      this._lost({ code: status, reason: error.message });
    }
  }

  _frame(frame, conn) {
    switch (frame.op) {
      case "hello":
        conn.ready = true;
        this._everOpened = true;
        this._backoff.opened(Date.now());
        this._core.onHello(frame);
        this._setState("open");
        if (conn.kind === "websocket") {
          for (const [name, channel] of this._core.channels) {
            if (!channel.auto) this._sendJoin(name, this._core.resumeSince(name));
          }
        } else {
          // Joined or left while this stream was opening: open one with the list as it is now.
          const wanted = [...this._core.channels].filter(([, c]) => !c.auto).map(([name]) => name);
          if (wanted.length !== conn.channels.length || wanted.some((name) => !conn.channels.includes(name))) {
            this._reopen();
          }
        }
        break;
      case "joined": {
        if (!this._core.channels.has(frame.channel) && frame.id !== null && conn.kind === "websocket") {
          return; // left while the join was on its way
        }
        const since = this._sent.get(frame.channel) ?? null;
        this._sent.delete(frame.channel);
        this._requests.delete(frame.id);
        if (this._core.onJoined(frame, since) === "restart") {
          if (conn.kind === "websocket") this._sendJoin(frame.channel, this._core.resumeSince(frame.channel));
          else this._reopen();
        } else {
          this._settle(frame.channel, null);
        }
        break;
      }
      case "left":
        if (frame.id === null) this._core.onLeft(frame); // removed by the server (a user taken out)
        break;
      case "answered":
        conn.answers?.delete(frame.id); // accepted or not: another page's answer may have come first
        break;
      case "message":
        this._core.onMessage(frame);
        this._scheduleGaps();
        break;
      case "error": {
        const channel = this._requests.get(frame.id);
        const error = Object.assign(new Error(frame.error?.message ?? "error"), frame.error ?? {});
        conn.answers?.delete(frame.id); // a toolResult refused: sending it again would be refused too
        if (channel !== undefined) {
          this._requests.delete(frame.id);
          this._sent.delete(channel);
          this._core.remove(channel);
          this._settle(channel, Object.assign(error, { channel }));
        }
        this._emit("error", error);
        break;
      }
      default:
        break;
    }
  }

  _sendJoin(channel, since) {
    const id = this._id();
    this._requests.set(id, channel);
    this._sent.set(channel, since);
    this._conn.send(since === null ? { op: "join", channel, id } : { op: "join", channel, since, id });
  }

  _id() {
    this._nextId += 1;
    return `bf${this._nextId}`;
  }

  /** SSE joins and leaves open a new stream with the new list, resuming the others. */
  _reopen() {
    if (this._reopenQueued) return;
    this._reopenQueued = true;
    queueMicrotask(() => {
      this._reopenQueued = false;
      if (this.state === "closed" || this._conn?.kind !== "sse") return;
      const conn = this._conn;
      this._conn = null;
      conn.close();
      this._open();
    });
  }

  _closedWith(code, reason) {
    if (FATAL_CLOSES.has(code) || (code === 4401 && typeof this._token !== "function")) {
      this._shutdown("closed", { code, reason });
      return;
    }
    this._lost({ code, reason });
  }

  _lost(detail) {
    if (this.state === "closed") return;
    this._requests.clear();
    this._setState("reconnecting", detail);
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => this._open(), this._backoff.next(Date.now()));
  }

  _shutdown(state, detail) {
    clearTimeout(this._retryTimer);
    clearTimeout(this._gapTimer);
    const conn = this._conn;
    this._conn = null;
    conn?.close();
    this._setState(state, detail);
    for (const name of [...this._waiters.keys()]) this._settle(name, new Error(`bfstream: ${detail.reason}`));
  }

  _settle(channel, error) {
    const list = this._waiters.get(channel);
    if (list === undefined) return;
    this._waiters.delete(channel);
    for (const { resolve, reject } of list) {
      if (error === null) resolve();
      else reject(error);
    }
  }

  _scheduleGaps() {
    clearTimeout(this._gapTimer);
    const deadline = this._core.nextDeadline();
    if (deadline === null) return;
    this._gapTimer = setTimeout(() => {
      this._core.expire();
      this._scheduleGaps();
    }, Math.max(0, deadline - Date.now()));
  }

  _setState(state, detail = {}) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", state, detail);
  }

  _subscribe(kind, handler) {
    this._handlers[kind].add(handler);
    return () => this._handlers[kind].delete(handler);
  }

  _emit(kind, ...args) {
    for (const handler of this._handlers[kind]) call(handler, ...args);
  }
}

/**
 * A tool handler's return value as the result the model reads, {success, message, data?}: such an
 * object as it is; anything else a success carrying it (undefined and null: "done", nothing more).
 */
function toolResult(value) {
  const isResult = typeof value?.success === "boolean" && typeof value.message === "string";
  if (isResult && typeof value === "object") return value;
  if (value === undefined || value === null) return { success: true, message: "done" };
  return { success: true, message: typeof value === "object" ? "done" : String(value), data: value };
}

/** A page's handler that throws must not stop the others, nor the client. */
function call(handler, ...args) {
  try {
    handler(...args);
  } catch (error) {
    if (typeof globalThis.reportError === "function") globalThis.reportError(error);
    else setTimeout(() => {
      throw error;
    });
  }
}

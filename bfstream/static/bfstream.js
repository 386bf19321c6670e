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
// parsing) lives in the pure classes exported below, which tests/js/ runs under Node. Each
// transport (WebSocketTransport, SSETransport) is a small object of one shape, so the Client never
// asks which one it has; CLOSE_CODES is the one table of how a connection may end.

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
 * `sink` receives `action(name, options, message, frame)` for a namedAction, `other(action, message,
 * frame)` for any other action form (in the message's order among them), `message(message, frame)`,
 * `gap(info)` and `toolCall(event)`: a tool_call event for the page to answer, once per toolCallId,
 * after the named actions of the frames that brought it. A channel is in one of three phases:
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
    const trusted = TRUSTED.has(kind) || (kind === "browser" && this.browserActions);
    for (const action of actionsOf(message)) {
      if (action.action !== "namedAction") {
        // The reference's other action forms (showAlert, path, messageSend, ...): the page's onAction.
        if (mode !== "catchup" && trusted && typeof action.action === "string") entries.push({ type: "event", item: { other: action, message, frame } });
        continue;
      }
      if (typeof action.name !== "string") continue;
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
        if (mode === "catchup" || !trusted) continue; // an old message is not run again
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
      const { name, options, message, frame, other } = entry.item;
      if (other !== undefined) {
        this.sink.other?.(other, message, frame);
        continue;
      }
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

// ---- channel names: the protocol's rule, checked before a join goes out ------------------------

const MAX_CHANNEL_LENGTH = 200; // protocol.json's $defs.channel; tests/js/codes.test.mjs holds them together

/**
 * Why `name` cannot be a channel, in the server's words, or null when it can: a non-empty string
 * of at most 200 characters (code points, as the server counts them), without C0, DEL or C1
 * control characters. The client refuses such a join itself: over SSE every channel rides in one
 * request, which the server refuses whole, so one bad name must never reach it beside good ones.
 */
export function channelProblem(name) {
  if (typeof name !== "string" || name === "") return "channel must be a non-empty string";
  if ([...name].length > MAX_CHANNEL_LENGTH) return `channel names are at most ${MAX_CHANNEL_LENGTH} characters`;
  if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) return "channel names cannot contain control characters";
  return null;
}

// ---- close codes and HTTP refusals: the one table ---------------------------------------------

/**
 * What the client does when a connection ends with a code: WebSocket close codes, and the HTTP
 * statuses /message/sse refuses with. protocol.json's `closeCode` and `sseRefusal` say the same
 * (tests/js/codes.test.mjs fails when they disagree), and docs/messaging.md what each one means.
 * - `retry`: reconnect after the backoff and resume;
 * - `token`: the token was refused: retry with a fresh one when `token` is a function, else give up;
 * - `channel`: a channel asked for may have been refused: the client finds which (see
 *   Client._ended), gives it up, and reconnects with the others (none being joined: give up). A
 *   400 or 403 whose body is not about a channel (a refused origin, another app's token) gives up,
 *   as the WebSocket's 4400 and 4403 do;
 * - `close`: retrying cannot change it: the client closes.
 * A code not listed (1006, a connection lost without a close frame) is retried. A WebSocket code
 * from 4000 up, and any HTTP status, is a refusal: the page hears of it through onError.
 */
export const CLOSE_CODES = Object.freeze({
  websocket: Object.freeze({
    1002: "retry",
    1006: "retry",
    1007: "retry",
    1009: "retry",
    1011: "retry",
    1012: "retry",
    4400: "close",
    4401: "token",
    4403: "close",
    4404: "close",
    4408: "retry",
    4429: "retry",
    4503: "retry",
  }),
  sse: Object.freeze({ 400: "channel", 401: "token", 403: "channel", 404: "close", 429: "retry", 503: "retry" }),
});

/** The verdict on a connection of `transport` that ended with `code` (undefined: none). */
export function verdictOn(transport, code) {
  if (code === undefined || code === null) return "retry";
  return CLOSE_CODES[transport]?.[code] ?? "retry";
}

/**
 * Whether an SSE refusal is about the channels the request asked for. The server's body says what
 * it refused: a bad name or too many channels (400, `details` naming the field `channel`, or a
 * message about channels), a channel for its added users only or another connection's tab|
 * channel (403, a message naming the channel). Anything else, a refused origin or a token of
 * another app, is refused whatever the channels: asking again without some of them cannot help.
 */
function refusesChannel(error) {
  if (error === null || typeof error !== "object") return false;
  if (Array.isArray(error.details) && error.details.some((d) => d?.field === "channel")) return true;
  return typeof error.message === "string" && /\bchannels?\b/i.test(error.message);
}

function isRefusal(transport, code) {
  if (!Number.isInteger(code)) return false;
  return transport === "websocket" ? code >= 4000 && code < 5000 : code >= 400;
}

// ---- transports: one per way of reaching the server, behind one shape ------------------------

/**
 * A transport is one connection attempt; the client makes a new one for each. The shape:
 *
 * - `new Transport({WebSocket, fetch}, {frame(frame), end(detail)})`;
 * - `open({url, appId, token, channels, positions, autoPositions})`: `channels` the names the page
 *   joined, `positions` (Map name -> [offset, epoch]) where each channel is to resume, and
 *   `autoPositions` those of the channels the server joins by itself;
 * - `carries`: the channels the connection joins by its URL, and `resumed` (Map name -> since) the
 *   positions its URL resumes, so the client knows what the joined frames that come answer;
 * - `send(frame)`: true once sent, false when this transport cannot send frames on an open
 *   connection (the client then opens a new one, or refuses what needed the frame);
 * - `close()`: the client is done with it; no `end` follows.
 * - `end(detail)` is called once when the connection ends by itself: `{code?, reason, reached}`,
 *   `code` a WebSocket close code or an HTTP status, `reached` false when the server was never
 *   reached (then another transport may be tried), `retryAfter` seconds when the server said so,
 *   and `error`, the refusal's JSON error (`{message, code, type, details}`) when it had one.
 *
 * Frames are passed on parsed; what is not JSON is dropped.
 */
class WebSocketTransport {
  static sends = true;

  constructor({ WebSocket }, events) {
    this._WebSocket = WebSocket;
    this._events = events;
    this._ws = null;
    this._done = false;
    this.carries = [];
    this.resumed = new Map();
  }

  open({ url, appId, token, autoPositions }) {
    // A user's channels, which the server joins by itself, resume through ?since=; the others by join frames.
    const extra = autoPositions.size ? [["since", encodePositions(autoPositions)]] : [];
    this.resumed = sinceOf(autoPositions);
    try {
      this._ws = new this._WebSocket(`${url.replace(/^http/, "ws")}/message/ws?${queryOf(appId, token, extra)}`);
    } catch (error) {
      queueMicrotask(() => this._end({ reason: String(error), reached: false }));
      return;
    }
    let opened = false;
    this._ws.onopen = () => {
      opened = true;
    };
    this._ws.onmessage = (event) => {
      const frame = typeof event.data === "string" ? parseFrame(event.data) : null;
      if (frame !== null && !this._done) this._events.frame(frame);
    };
    this._ws.onerror = () => {};
    this._ws.onclose = (event) => {
      if (opened) this._end({ code: event.code, reason: event.reason });
      else this._end({ code: event.code, reason: "the WebSocket could not open", reached: false });
    };
  }

  send(frame) {
    this._ws.send(JSON.stringify(frame));
    return true;
  }

  close() {
    this._done = true;
    this._ws?.close(1000);
  }

  _end(detail) {
    if (this._done) return;
    this._done = true;
    this._events.end(detail);
  }
}

/** Server-Sent Events read with fetch(): it only receives, so its channels are in its URL. */
class SSETransport {
  static sends = false;

  constructor({ fetch }, events) {
    this._fetch = fetch;
    this._events = events;
    this._controller = new AbortController();
    this._done = false;
    this.carries = [];
    this.resumed = new Map();
  }

  open({ url, appId, token, channels, positions }) {
    const extra = channels.map((name) => ["channel", name]);
    // lastEventId, not the Last-Event-ID header: a header would cost a preflight.
    if (positions.size) extra.push(["lastEventId", encodePositions(positions)]);
    this.carries = [...channels];
    this.resumed = sinceOf(positions);
    this._read(`${url}/message/sse?${queryOf(appId, token, extra)}`);
  }

  send() {
    return false;
  }

  close() {
    this._done = true;
    this._controller.abort();
  }

  async _read(href) {
    let response;
    try {
      const init = { headers: { accept: "text/event-stream" }, cache: "no-store", signal: this._controller.signal };
      response = await this._fetch(href, init);
    } catch (error) {
      this._end({ reason: String(error), reached: false });
      return;
    }
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      const retryAfter = Number.parseInt(response.headers?.get("retry-after") ?? "", 10);
      const detail = { code: response.status, reason: body?.error?.message ?? `HTTP ${response.status}`, error: body?.error ?? null };
      this._end(Number.isInteger(retryAfter) && retryAfter > 0 ? { ...detail, retryAfter } : detail);
      return;
    }
    const parser = new SSEParser();
    const decoder = new TextDecoder();
    try {
      const reader = response.body.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this._done) break;
        for (const event of parser.push(decoder.decode(value, { stream: true }))) {
          const frame = parseFrame(event.data);
          if (frame !== null && !this._done) this._events.frame(frame);
        }
      }
    } catch (error) {
      this._end({ reason: String(error) });
      return;
    }
    this._end({ reason: "the event stream ended" });
  }

  _end(detail) {
    if (this._done) return;
    this._done = true;
    this._controller.abort();
    this._events.end(detail);
  }
}

const TRANSPORTS = Object.freeze({ websocket: WebSocketTransport, sse: SSETransport });

function queryOf(appId, token, extra) {
  const params = new URLSearchParams({ app: appId });
  if (token) params.set("token", token);
  for (const [key, value] of extra) params.append(key, value);
  return params.toString();
}

function sinceOf(positions) {
  return new Map([...positions].map(([name, [offset, epoch]]) => [name, { offset, epoch }]));
}

function parseFrame(text) {
  try {
    const frame = JSON.parse(text);
    return frame !== null && typeof frame === "object" ? frame : null;
  } catch {
    return null;
  }
}

// ---- the client --------------------------------------------------------------------------------

const CLOSED = "bfstream: the client is closed";
const DROPPED = "bfstream: the connection dropped before the server answered; the message may or may not have been published";
const SSE_PUBLISH = ["sse_cannot_publish", "bfstream: publish needs a WebSocket; Server-Sent Events only receive"];

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
    this._ways = { WebSocket: WebSocketClass, fetch: fetchFunction };
    this._fetch = fetchFunction;
    this._backoff = backoff instanceof Backoff ? backoff : new Backoff(backoff);
    this._handlers = {
      state: new Set(),
      message: new Set(),
      gap: new Set(),
      error: new Set(),
      action: new Set(),
      actions: new Map(),
    };
    this._tools = new Map(); // toolName or "*" -> the handler that answers its calls
    this._core = new Core(
      {
        action: (name, options, message, frame) => {
          for (const handler of this._handlers.actions.get(name) ?? []) call(handler, options, message, frame);
        },
        other: (action, message, frame) => this._emit("action", action, message, frame),
        message: (message, frame) => this._emit("message", message, frame),
        gap: (info) => this._emit("gap", info),
        toolCall: (event) => this._answerToolCall(event),
      },
      { gapWaitMs, browserActions },
    );
    // The transports to try, in order; "auto" falls back to SSE when a WebSocket cannot open.
    this._ladder = transport === "auto" ? ["websocket", "sse"] : [transport];
    this._rung = 0;
    this._everOpened = false;
    this._conn = null; // {name, transport, ready, answers, publishes}
    this._requests = new Map(); // join request id -> channel
    this._sent = new Map(); // channel -> the since its pending join asked for
    // Channels being joined that the next SSE request leaves out, while the client finds which
    // channel of a refused request the server refuses (see _ended).
    this._held = new Set();
    this._waiters = new Map(); // channel -> [{resolve, reject}]
    this._outbox = []; // publishes waiting for a connection: {frame, resolve, reject}
    this._nextId = 0;
    this._retryTimer = null;
    this._gapTimer = null;
    this._reopenQueued = false;
    this._open();
  }

  // -- the page's API --

  /**
   * Resolves once the channel is joined (and, with catchUp, its catch-up replay has started).
   * A refusal rejects it and reaches onError; a page that does not catch it stays quiet.
   */
  join(channel, { catchUp = true } = {}) {
    if (this.state === "closed") return quiet(Promise.reject(new Error(CLOSED)));
    const problem = channelProblem(channel);
    if (problem !== null) {
      // Refused here, as the server would (400): never sent beside good channels, see channelProblem.
      const error = Object.assign(new Error(problem), { code: 400, channel });
      queueMicrotask(() => this._emit("error", error));
      return quiet(Promise.reject(error));
    }
    const known = this._core.channels.get(channel);
    if (known !== undefined && known.phase === "live") return Promise.resolve();
    this._core.add(channel, { catchUp });
    const joined = new Promise((resolve, reject) => {
      const list = this._waiters.get(channel) ?? [];
      list.push({ resolve, reject });
      this._waiters.set(channel, list);
    });
    if (known === undefined && this._conn?.ready && !this._sendJoin(channel, null)) this._reopen();
    return quiet(joined);
  }

  leave(channel) {
    const known = this._core.channels.has(channel);
    this._core.remove(channel);
    this._held.delete(channel);
    this._settle(channel, new Error(`bfstream: left ${channel} before it was joined`));
    if (known && this._conn?.ready && !this._conn.transport.send({ op: "leave", channel, id: this._id() })) {
      this._reopen();
    }
    return Promise.resolve();
  }

  /**
   * The reference's messageSend for one channel: publishes a BetterForms message `{actions,
   * model?, app?}`. Resolves when the server accepts it, to `{channel, offset, epoch}`, or to
   * `{channel, forwarded: true}` when it went to the app's webhook (a user in receive mode).
   * Rejects, and tells onError, when the server refuses it (`code`: 403, 413, 429 with
   * `retryAfter`, ...), over SSE (which only receives: `code` "sse_cannot_publish"), when the
   * connection drops before the answer ("disconnected": it may or may not have gone out), and
   * once the client is closed. Sent as soon as the connection is open.
   */
  publish(channel, message) {
    if (typeof channel !== "string" || channel === "") throw new TypeError("publish: a channel name");
    if (message === null || typeof message !== "object" || !Array.isArray(message.actions)) {
      throw new TypeError("publish: a message {actions: [...], model?, app?}");
    }
    const frame = { op: "publish", channel, message, id: this._id() };
    const published = new Promise((resolve, reject) => {
      const entry = { frame, resolve, reject };
      if (this.state === "closed") this._refusePublish(entry, "closed", CLOSED);
      else if (!this._ladder.some((name) => TRANSPORTS[name].sends)) this._refusePublish(entry, ...SSE_PUBLISH);
      else if (this._conn?.ready) this._sendPublish(this._conn, entry);
      else this._outbox.push(entry);
    });
    return quiet(published);
  }

  /** handler(options, message, frame) for each namedAction of that name. Returns an unsubscribe. */
  on(actionName, handler) {
    const set = this._handlers.actions.get(actionName) ?? new Set();
    set.add(handler);
    this._handlers.actions.set(actionName, set);
    return () => set.delete(handler);
  }

  /**
   * handler(action, message, frame) for each action of a message that is not a namedAction
   * (showAlert, path, messageSend, ...; docs/client.md maps them), in the message's order among
   * its named actions, under the same trust rules. Returns an unsubscribe.
   */
  onAction(handler) {
    return this._subscribe("action", handler);
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
    const id = this._id();
    if (conn?.ready && conn.transport.send({ op: "toolResult", toolCallId: call.toolCallId, result, id })) {
      // Kept until the server's `answered`: if the connection drops first, the answer goes over
      // HTTP (the first answer wins, so one that did arrive is not taken twice).
      conn.answers.set(id, { call, result });
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


  // -- publishing --

  _sendPublish(conn, entry) {
    if (!conn.transport.send(entry.frame)) {
      this._refusePublish(entry, ...SSE_PUBLISH);
      return;
    }
    conn.publishes.set(entry.frame.id, entry);
  }

  _refusePublish(entry, code, message, fields = {}) {
    const error = Object.assign(new Error(message), fields, { code, channel: entry.frame.channel });
    entry.reject(error);
    this._emit("error", error);
  }

  // -- connections --

  async _open() {
    this._retryTimer = null;
    if (this.state === "closed") return;
    if (!this._everOpened) this._rung = 0; // until one has worked, each attempt starts with the first
    let token;
    try {
      token = typeof this._token === "function" ? await this._token() : this._token;
    } catch (error) {
      this._emit("error", error);
      this._lost({ reason: "the token callback failed" });
      return;
    }
    if (this.state === "closed") return;
    this._connect(token);
  }

  _connect(token) {
    const name = this._ladder[this._rung];
    const conn = { name, transport: null, ready: false, answers: new Map(), publishes: new Map() };
    conn.transport = new TRANSPORTS[name](this._ways, {
      frame: (frame) => {
        if (this._conn === conn) this._frame(frame, conn);
      },
      end: (detail) => this._ended(conn, detail, token),
    });
    this._conn = conn;
    let channels = this._joinedByPage().filter((channel) => !this._held.has(channel));
    if (!channels.some((channel) => this._core.channels.get(channel).phase === "joining")) {
      this._held.clear(); // nothing left to try apart: the held ones go together again
      channels = this._joinedByPage();
    }
    const positions = this._core.positions();
    conn.transport.open({ url: this.url, appId: this.appId, token, channels, positions, autoPositions: this._core.positions({ auto: true }) });
    this._sent = new Map(conn.transport.resumed);
  }

  /** The channels the page joined, not those the server joins by itself. */
  _joinedByPage() {
    return [...this._core.channels].filter(([, c]) => !c.auto).map(([channel]) => channel);
  }

  /**
   * A connection ended by itself: try the next transport, or decide by the codes table.
   *
   * SSE asks for all its channels in one request, and a refusal (400, 403) does not say for sure
   * which of them was refused. So the client asks again with half of the channels it was joining
   * held back, halving until one is left, which is the refused one: that join rejects. A request
   * that passes joins its channels; the held ones are then asked for again (see _release). One bad
   * channel among n costs about log2(n) more requests; the good ones all join.
   */
  _ended(conn, detail, token) {
    this._retire(conn);
    if (this._conn !== conn) return;
    this._conn = null;
    if (detail.reached === false && !this._everOpened && this._rung + 1 < this._ladder.length) {
      this._rung += 1; // this transport cannot reach the server: the next one, in the same attempt
      this._connect(token);
      return;
    }
    const { code, reason } = detail;
    let verdict = verdictOn(conn.name, code);
    if (verdict === "token") verdict = typeof this._token === "function" ? "retry" : "close";
    // Only what this connection asked for can be what it was refused for.
    const joining = conn.transport.carries.filter((n) => this._core.channels.get(n)?.phase === "joining");
    if (verdict === "channel") verdict = joining.length && refusesChannel(detail.error) ? "channel" : "close";
    if (isRefusal(conn.name, code)) {
      const refusal = () => Object.assign(new Error(reason || `bfstream: refused (${code})`), { code, transport: conn.name, retry: verdict !== "close" });
      if (verdict === "channel" && joining.length > 1) {
        for (const channel of joining.slice(Math.ceil(joining.length / 2))) this._held.add(channel);
        this._open();
        return;
      }
      if (verdict === "channel") {
        // The one channel just asked for was refused: give it up, and keep the others.
        for (const channel of joining) {
          const error = Object.assign(refusal(), { channel });
          this._core.remove(channel);
          this._settle(channel, error);
          this._emit("error", error);
        }
        this._open();
        return;
      }
      const error = refusal();
      this._emit("error", error);
      if (verdict === "close") {
        this._shutdown("closed", { code, reason }, error);
        return;
      }
    }
    this._lost(detail);
  }

  /** What a connection held that the server did not answer: tool results go over HTTP, publishes fail. */
  _retire(conn, code = "disconnected", why = DROPPED) {
    for (const { call, result } of conn.answers.values()) this._postToolResult(call, result);
    conn.answers.clear();
    for (const entry of conn.publishes.values()) this._refusePublish(entry, code, why);
    conn.publishes.clear();
  }

  _frame(frame, conn) {
    switch (frame.op) {
      case "hello":
        conn.ready = true;
        this._everOpened = true;
        this._backoff.opened(Date.now());
        this._core.onHello(frame);
        this._setState("open");
        this._syncChannels(conn);
        for (const entry of this._outbox.splice(0)) this._sendPublish(conn, entry);
        break;
      case "joined": {
        if (!this._core.channels.has(frame.channel) && frame.id !== null) return; // left while the join was on its way
        const since = this._sent.get(frame.channel) ?? null;
        this._sent.delete(frame.channel);
        this._requests.delete(frame.id);
        if (this._core.onJoined(frame, since) === "restart") {
          if (!this._sendJoin(frame.channel, this._core.resumeSince(frame.channel))) this._reopen();
        } else {
          this._settle(frame.channel, null);
        }
        this._release(conn);
        break;
      }
      case "left":
        if (frame.id === null) this._core.onLeft(frame); // removed by the server (a user taken out)
        break;
      case "answered":
        conn.answers.delete(frame.id); // accepted or not: another page's answer may have come first
        break;
      case "published":
      case "forwarded": {
        const entry = conn.publishes.get(frame.id);
        conn.publishes.delete(frame.id);
        const { channel, offset, epoch } = frame;
        entry?.resolve(frame.op === "published" ? { channel, offset, epoch } : { channel, forwarded: true });
        break;
      }
      case "message":
        this._core.onMessage(frame);
        this._scheduleGaps();
        break;
      case "error":
        this._errorFrame(frame, conn);
        break;
      default:
        break;
    }
  }

  _errorFrame(frame, conn) {
    const error = Object.assign(new Error(frame.error?.message ?? "error"), frame.error ?? {});
    conn.answers.delete(frame.id); // a toolResult refused: sending it again would be refused too
    const published = conn.publishes.get(frame.id);
    if (published !== undefined) {
      conn.publishes.delete(frame.id);
      published.reject(Object.assign(error, { channel: published.frame.channel }));
    }
    const channel = this._requests.get(frame.id);
    if (channel !== undefined) {
      this._requests.delete(frame.id);
      this._sent.delete(channel);
      this._core.remove(channel);
      this._settle(channel, Object.assign(error, { channel }));
    }
    this._emit("error", error);
  }

  /**
   * On a new connection: join the channels it does not carry already, and leave the ones it
   * carries that the page left meanwhile. A transport that cannot send frames needs a connection
   * with the list as it is now.
   */
  _syncChannels(conn) {
    if (TRANSPORTS[conn.name].sends) this._held.clear(); // each join is answered on its own
    const carried = new Set(conn.transport.carries);
    let reopen = false;
    for (const [name, channel] of this._core.channels) {
      if (channel.auto || carried.has(name) || this._held.has(name)) continue;
      if (!this._sendJoin(name, this._core.resumeSince(name))) reopen = true;
    }
    for (const name of carried) {
      if (!this._core.channels.has(name) && !conn.transport.send({ op: "leave", channel: name, id: this._id() })) reopen = true;
    }
    if (reopen) this._reopen();
    else this._release(conn); // the page may have left all it asked for
  }

  /**
   * Once the channels a connection asked for are joined, the ones held back are asked for again,
   * beside them: a new SSE request (see _ended). Waiting for the joins, not only the hello, lets
   * those channels resume from a position instead of being suspects again.
   */
  _release(conn) {
    if (this._held.size === 0) return;
    if (conn.transport.carries.some((n) => this._core.channels.get(n)?.phase === "joining")) return;
    this._held.clear();
    this._reopen();
  }

  /** Sends a join; false when the transport cannot (its channels are in its URL). */
  _sendJoin(channel, since) {
    const id = this._id();
    const frame = since === null ? { op: "join", channel, id } : { op: "join", channel, since, id };
    if (!this._conn.transport.send(frame)) return false;
    this._requests.set(id, channel);
    this._sent.set(channel, since);
    return true;
  }

  _id() {
    this._nextId += 1;
    return `bf${this._nextId}`;
  }

  /** A connection with the channel list as it is now, resuming the others; one per burst of changes. */
  _reopen() {
    if (this._reopenQueued) return;
    this._reopenQueued = true;
    queueMicrotask(() => {
      this._reopenQueued = false;
      const conn = this._conn;
      if (this.state === "closed" || conn === null) return;
      this._conn = null;
      conn.transport.close();
      this._retire(conn);
      this._open();
    });
  }

  _lost(detail) {
    if (this.state === "closed") return;
    this._requests.clear();
    this._setState("reconnecting", { code: detail.code, reason: detail.reason });
    clearTimeout(this._retryTimer);
    const wait = Math.max(this._backoff.next(Date.now()), (detail.retryAfter ?? 0) * 1000);
    this._retryTimer = setTimeout(() => this._open(), wait);
  }

  _shutdown(state, detail, error = new Error(`bfstream: ${detail.reason}`)) {
    clearTimeout(this._retryTimer);
    clearTimeout(this._gapTimer);
    this._held.clear();
    const conn = this._conn;
    this._conn = null;
    conn?.transport.close();
    this._setState(state, detail);
    if (conn) this._retire(conn, "closed", CLOSED);
    for (const entry of this._outbox.splice(0)) this._refusePublish(entry, "closed", CLOSED);
    for (const name of [...this._waiters.keys()]) this._settle(name, error);
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

/**
 * The promise as it is, marked as handled: a page that awaits it still gets its rejection, and a
 * page that does not is not told of it as an unhandled error (onError already was).
 */
function quiet(promise) {
  promise.catch(() => {});
  return promise;
}

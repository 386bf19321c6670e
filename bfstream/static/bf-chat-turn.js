// bf-chat-turn.js: one answer in a <bf-chat> (bf-chat.js), from its first event to its end: the
// "Thinking" block, tool-call cards, the answer rendered by bf-markdown.js, its sources, and a foot
// with the Stop button while it runs, then how it ended. Everything the model wrote goes in as
// text nodes or through the markdown renderer, never as HTML.
//
// A turn reads its text from the bfstream.js client that brought its events (`client`), never from
// whatever client the element has now: when the element changes its connection, the old client is
// closed (its text stays readable) and the element may have no client at all for a moment.

import { MarkdownView, safeUrl } from "./bf-markdown.js";

export function make(tag, className, text, part) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (part) node.setAttribute("part", part);
  if (text !== undefined) node.textContent = text;
  return node;
}

// What a tool card says in each state; `data-state` on the card is the key.
const CARD_WORDS = {
  waiting: "waiting for the page",
  running: "running",
  answered: "answered",
  failed: "failed",
  called: "called",
  timeout: "timed out",
  unanswered: "not answered here",
};

/** A card still waiting for an answer: the stream has not gone on past its call. */
const open = (card) => card.dataset.state === "waiting" || card.dataset.state === "running";

/** One streamed answer: its thinking, tool cards, text, sources, and a foot with Stop or how it ended. */
export class Turn {
  constructor(chat, streamId, client) {
    this.chat = chat;
    this.streamId = streamId;
    this.client = client;
    this.node = make("article", "turn", undefined, "turn");
    this.node.dataset.streamId = streamId;
    this.node.dataset.status = "running";
    this.node.setAttribute("aria-busy", "true");
    this.tools = make("div", "tools", undefined, "tools");
    this.answer = make("div", "answer", undefined, "answer");
    this.foot = make("div", "foot", undefined, "foot");
    this.stopButton = make("button", "stop", "Stop", "stop");
    this.stopButton.type = "button";
    this.stopButton.addEventListener("click", () => this.stop());
    this.foot.append(this.stopButton);
    this.node.append(this.tools, this.answer, this.foot);
    this.view = new MarkdownView(this.answer);
    this.cards = new Map(); // toolCallId or function call id -> card
    this.deadlines = new Map(); // toolCallId -> {due, timer}: when its timeoutMs runs out, counted here
    this.answering = false;
    this.pending = false;
  }

  async stop() {
    if (this.node.dataset.status !== "running") return; // ended, or no longer followed: nothing to stop here
    this.stopButton.disabled = true;
    try {
      await this.client.stop(this.streamId);
    } catch {
      this.stopButton.disabled = false; // the server cannot be reached: the button stays usable
    }
  }

  thinking() {
    if (this.details === undefined) {
      this.details = make("details", "thinking", undefined, "thinking");
      this.details.setAttribute("aria-label", "Thinking");
      const summary = make("summary", "", "Thinking", "thinking-summary");
      summary.addEventListener("click", () => (this.details.dataset.touched = "true"));
      this.thought = make("div", "thought", undefined, "thought");
      this.thought.append(document.createTextNode(""));
      this.details.append(summary, this.thought);
      this.details.open = !this.answering;
      this.node.prepend(this.details);
    }
    return this.details;
  }

  showThinking(text, redacted) {
    if (!text && !redacted) return;
    const details = this.thinking();
    const data = this.thought.firstChild;
    if (text.startsWith(data.data)) data.appendData(text.slice(data.data.length));
    else data.data = text; // plain text: thinking is shown as the model wrote it
    if (redacted && !details.querySelector(".redacted")) {
      details.append(make("p", "redacted", "Part of the thinking was withheld by the provider (redacted)."));
    }
  }

  startAnswering() {
    if (this.answering) return;
    this.answering = true;
    if (this.details && this.details.dataset.touched !== "true") this.details.open = false;
  }

  /** Render the text at the next frame: many deltas in one frame cost one render. */
  schedule() {
    if (this.pending) return;
    this.pending = true;
    const run = () => {
      if (!this.pending) return;
      this.pending = false;
      this.render();
    };
    requestAnimationFrame(run);
    setTimeout(run, 100); // a hidden page gets no frames: it still keeps up, more slowly
  }

  render(done = false) {
    const started = performance.now();
    const stick = this.chat._atBottom();
    this.view.update(done ? this.finalText : this.client.text(this.streamId), done);
    this.chat._measure(performance.now() - started);
    if (stick) this.chat._scrollDown();
  }

  card(id, name, state) {
    let card = this.cards.get(id);
    if (card === undefined) {
      card = make("div", "tool", undefined, "tool");
      card.dataset.toolCallId = id;
      card.dataset.name = name;
      card.append(make("span", "name", name), make("span", "state", "", "tool-state"));
      this.cards.set(id, card);
      this.tools.append(card);
    }
    if (state) this.setCard(card, state);
    return card;
  }

  setCard(card, state, detail) {
    card.dataset.state = state;
    card.querySelector(".state").textContent = (CARD_WORDS[state] ?? state) + (detail ? `: ${detail}` : "");
  }

  /** Whether the card still waits for an answer, so that this page's handler may still settle it. */
  isOpen(card) {
    return open(card);
  }

  /**
   * A ui_* call this page got, which the server waits `timeoutMs` for. Counted from when this page
   * got it, which is after the server sent it: once that time is out with the stream still
   * waiting, the server has given up on the call, and the model reads a failure. No event says so;
   * see settleCards for the one case this reading gets wrong.
   */
  expectAnswer(card, timeoutMs) {
    const id = card.dataset.toolCallId;
    if (!(timeoutMs > 0) || this.deadlines.has(id) || !open(card)) return;
    const timer = setTimeout(() => open(card) && this.setCard(card, "timeout"), timeoutMs);
    this.deadlines.set(id, { due: performance.now() + timeoutMs, timer, timeoutMs });
  }

  /**
   * The stream went on past its calls: each was answered or timed out. A card this page did not
   * answer is never shown as answered: another page may have answered it, or nobody did, and the
   * server does not say which. It reads "timed out" when the stream went on only about when the
   * call's time ran out (the call reached this page a little after the server started counting,
   * hence the margin: a quarter of the time, at most half a second), else "not answered here".
   * An answer from another page in that last margin reads "timed out" too. A late answer of this
   * page's own handler does not count: the first answer won, and the model went on without it.
   */
  settleCards() {
    const now = performance.now();
    for (const card of this.cards.values()) {
      if (!open(card)) continue;
      const deadline = this.deadlines.get(card.dataset.toolCallId);
      const late = deadline && now >= deadline.due - Math.min(500, deadline.timeoutMs / 4);
      this.setCard(card, late ? "timeout" : "unanswered");
    }
    for (const { timer } of this.deadlines.values()) clearTimeout(timer);
    this.deadlines.clear();
  }

  showSources(sources) {
    if (!sources.length) return;
    if (this.sources === undefined) {
      this.sources = make("ol", "sources", undefined, "sources");
      this.sources.setAttribute("aria-label", "Sources");
      this.answer.after(this.sources);
    }
    this.sources.replaceChildren(...sources.map((source) => this.sourceItem(source)));
  }

  sourceItem({ url, title }) {
    const item = make("li");
    const href = safeUrl(url);
    if (href === null || href.startsWith("mailto:")) {
      item.textContent = title || url;
      return item;
    }
    const link = make("a", "", title || url);
    Object.assign(link, { href, target: "_blank", rel: "noopener noreferrer" });
    item.append(link);
    return item;
  }

  note(text) {
    if ([...this.foot.querySelectorAll(".note")].some((note) => note.textContent === text)) return;
    this.foot.append(make("span", "note", text, "note"));
  }

  /**
   * The element changed its connection (channel, app, action, server or token): this answer's
   * events no longer reach it. It stays as it was, marked `left`, without a Stop that would look
   * as if it worked; should the new connection bring its events again, `follow` takes it back.
   */
  leave() {
    if (this.node.dataset.status !== "running") return;
    this.node.dataset.status = "left";
    this.node.removeAttribute("aria-busy");
    this.stopButton.remove();
    this.note("No longer followed: the chat changed its connection");
  }

  /** Events of this answer came from `client`: read its text from there, and follow it again if it was left. */
  follow(client) {
    this.client = client;
    if (this.node.dataset.status !== "left") return;
    this.node.dataset.status = "running";
    this.node.setAttribute("aria-busy", "true");
    for (const note of this.foot.querySelectorAll(".note")) note.remove();
    this.stopButton.disabled = false;
    this.foot.prepend(this.stopButton);
  }

  end(event) {
    this.finalText = typeof event.text === "string" ? event.text : this.client.text(this.streamId);
    this.pending = false;
    this.startAnswering();
    this.render(true);
    this.settleCards();
    const failed = event.finish_reason === "error";
    this.node.dataset.status = failed ? "error" : event.finish_reason === "stopped" ? "stopped" : "done";
    this.node.dataset.finish = event.finish_reason ?? "";
    this.node.removeAttribute("aria-busy");
    this.stopButton.remove();
    const note = failed ? `Failed: ${this.error ?? "error"}` : event.finish_reason === "stopped" ? "Stopped" : "";
    if (note) this.note(note);
  }
}

// bf-chat-turn.js: one answer in a <bf-chat> (bf-chat.js), from its first event to its end: the
// "Thinking" block, tool-call cards, the answer rendered by bf-markdown.js, its sources, and a foot
// with the Stop button while it runs, then how it ended. Everything the model wrote goes in as
// text nodes or through the markdown renderer, never as HTML.

import { MarkdownView, safeUrl } from "./bf-markdown.js";

export function make(tag, className, text, part) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (part) node.setAttribute("part", part);
  if (text !== undefined) node.textContent = text;
  return node;
}

/** One streamed answer: its thinking, tool cards, text, sources, and a foot with Stop or how it ended. */
export class Turn {
  constructor(chat, streamId) {
    this.chat = chat;
    this.streamId = streamId;
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
    this.answering = false;
    this.pending = false;
  }

  async stop() {
    this.stopButton.disabled = true;
    try {
      await this.chat._client.stop(this.streamId);
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
    this.view.update(done ? this.finalText : this.chat._client.text(this.streamId), done);
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
    const words = { waiting: "waiting for the page", running: "running", answered: "answered", failed: "failed", called: "called" };
    card.dataset.state = state;
    card.querySelector(".state").textContent = (words[state] ?? state) + (detail ? `: ${detail}` : "");
  }

  /** The stream went on: the calls it waited for were answered (here, elsewhere, or timed out). */
  settleCards() {
    for (const card of this.cards.values()) if (card.dataset.state === "waiting") this.setCard(card, "answered");
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

  end(event) {
    this.finalText = typeof event.text === "string" ? event.text : this.chat._client.text(this.streamId);
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

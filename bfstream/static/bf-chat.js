// <bf-chat>: a chat of streamed answers in one tag, built only on bfstream.js's documented API.
//
//   <bf-chat app="app_..." channel="anonymous" action="assistantReceiveResultsStream"></bf-chat>
//   <script src="https://bfstream.example/static/bf-chat.js"></script>
//
// A classic script on purpose: a page (a FileMaker WebViewer's data: page among them) loads it with a
// plain <script src>, no type="module", and it can tell its own URL. It then imports bfstream.js and
// bf-chat-turn.js (one answer, with its markdown renderer, bf-markdown.js) with import(), from the
// URL it was itself loaded from, so they always come from the same server and version; the browser
// must support import() all the same (every one that supports modules does). Loaded as a module instead (no document.currentScript), it takes them from the
// element's `server` attribute, else the page's origin. See docs/chat.md.
(() => {
  "use strict";
  if (globalThis.customElements === undefined || customElements.get("bf-chat")) return;

  const ownScript = document.currentScript?.src || null;
  const STATIC = ownScript ? new URL(".", ownScript).href : null;
  const DEFAULT_ACTION = "assistantReceiveResultsStream";

  function modulesFrom(server) {
    const base = STATIC ?? new URL("/static/", server || location.href).href;
    return Promise.all([import(base + "bfstream.js"), import(base + "bf-chat-turn.js")]);
  }

  const STYLE = `
:host {
  --bf-chat-bg: #ffffff; --bf-chat-fg: #1d1d1f; --bf-chat-muted: #5f6368; --bf-chat-border: #dcdcdc;
  --bf-chat-accent: #2357d8; --bf-chat-accent-fg: #ffffff; --bf-chat-answer-bg: #f3f5f9;
  --bf-chat-code-bg: #eceff4; --bf-chat-ok: #177a3c; --bf-chat-warn: #9a5b00; --bf-chat-bad: #b3261e;
  display: flex; flex-direction: column; gap: 0.6rem; color: var(--bf-chat-fg); background: var(--bf-chat-bg);
  font-family: var(--bf-chat-font, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif);
  font-size: var(--bf-chat-font-size, 1rem); line-height: 1.5; border-radius: var(--bf-chat-radius, 12px);
  padding: var(--bf-chat-padding, 0.75rem); color-scheme: light;
}
:host([theme="dark"]) {
  --bf-chat-bg: #151517; --bf-chat-fg: #ececec; --bf-chat-muted: #a3a3a8; --bf-chat-border: #34343a;
  --bf-chat-accent: #7aa2ff; --bf-chat-accent-fg: #0b0b0c; --bf-chat-answer-bg: #202128;
  --bf-chat-code-bg: #2a2b33; --bf-chat-ok: #5fd08a; --bf-chat-warn: #f0b35a; --bf-chat-bad: #ff8a80;
  color-scheme: dark;
}
@media (prefers-color-scheme: dark) {
  :host(:not([theme="light"])) {
    --bf-chat-bg: #151517; --bf-chat-fg: #ececec; --bf-chat-muted: #a3a3a8; --bf-chat-border: #34343a;
    --bf-chat-accent: #7aa2ff; --bf-chat-accent-fg: #0b0b0c; --bf-chat-answer-bg: #202128;
    --bf-chat-code-bg: #2a2b33; --bf-chat-ok: #5fd08a; --bf-chat-warn: #f0b35a; --bf-chat-bad: #ff8a80;
    color-scheme: dark;
  }
}
[hidden] { display: none !important; }
.status { align-self: flex-end; font-size: 0.8rem; padding: 0.1rem 0.6rem; border-radius: 999px;
  border: 1px solid currentColor; color: var(--bf-chat-warn); }
.status[data-state="open"] { color: var(--bf-chat-ok); }
.status[data-state="closed"], .status[data-state="refused"] { color: var(--bf-chat-bad); }
.log { display: flex; flex-direction: column; gap: 0.75rem; overflow-y: auto;
  max-height: var(--bf-chat-max-height, none); overscroll-behavior: contain; }
.message { align-self: flex-end; max-width: 85%; padding: 0.6rem 0.9rem; border-radius: 12px;
  background: var(--bf-chat-accent); color: var(--bf-chat-accent-fg); white-space: pre-wrap; overflow-wrap: anywhere; }
.message.note { align-self: stretch; max-width: none; background: none; color: var(--bf-chat-bad);
  border: 1px solid var(--bf-chat-bad); }
.turn { align-self: stretch; padding: 0.7rem 0.95rem; border-radius: 12px; background: var(--bf-chat-answer-bg);
  overflow-wrap: anywhere; }
.turn[data-status="error"] { border: 1px solid var(--bf-chat-bad); }
.thinking { margin: 0 0 0.6rem; padding-left: 0.7rem; border-left: 3px solid var(--bf-chat-border);
  color: var(--bf-chat-muted); font-size: 0.92em; }
.thinking summary { cursor: pointer; font-weight: 600; }
.thought { white-space: pre-wrap; margin: 0.3rem 0 0; }
.answer > :first-child { margin-top: 0; }
.answer > :last-child { margin-bottom: 0; }
.answer h1, .answer h2, .answer h3, .answer h4, .answer h5, .answer h6 { line-height: 1.25; margin: 1em 0 0.4em; }
.answer h1 { font-size: 1.4em; } .answer h2 { font-size: 1.25em; } .answer h3 { font-size: 1.1em; }
.answer h4, .answer h5, .answer h6 { font-size: 1em; }
.answer p, .answer ul, .answer ol, .answer pre, .answer blockquote, .answer .table { margin: 0.5em 0; }
.answer ul, .answer ol { padding-left: 1.4em; }
.answer a { color: var(--bf-chat-accent); }
.answer code { font-family: var(--bf-chat-code-font, ui-monospace, SFMono-Regular, Menlo, Consolas, monospace);
  font-size: 0.9em; background: var(--bf-chat-code-bg); padding: 0.1em 0.3em; border-radius: 4px; }
.answer pre { background: var(--bf-chat-code-bg); padding: 0.75rem 0.9rem; border-radius: 8px; overflow-x: auto; }
.answer pre code { background: none; padding: 0; white-space: pre; }
.answer blockquote { border-left: 3px solid var(--bf-chat-border); padding-left: 0.8em; color: var(--bf-chat-muted); margin-left: 0; }
.answer .table { overflow-x: auto; }
.answer table { border-collapse: collapse; }
.answer th, .answer td { border: 1px solid var(--bf-chat-border); padding: 0.3em 0.6em; text-align: left; }
.answer img { max-width: 100%; }
.answer hr { border: 0; border-top: 1px solid var(--bf-chat-border); }
.tools:empty { display: none; }
.tools { display: flex; flex-direction: column; gap: 0.4rem; margin: 0.4rem 0; }
.tool { border: 1px solid var(--bf-chat-border); border-radius: 8px; padding: 0.35rem 0.6rem; font-size: 0.9em;
  display: flex; gap: 0.6rem; align-items: baseline; flex-wrap: wrap; }
.tool .name { font-family: var(--bf-chat-code-font, ui-monospace, Menlo, Consolas, monospace); font-weight: 600; }
.tool .state { color: var(--bf-chat-muted); }
.tool[data-state="answered"] .state { color: var(--bf-chat-ok); }
.tool[data-state="failed"] .state { color: var(--bf-chat-bad); }
.tool[data-state="timeout"] .state { color: var(--bf-chat-warn); }
.sources { margin: 0.6rem 0 0; padding: 0.4rem 0 0 1.4em; border-top: 1px solid var(--bf-chat-border); font-size: 0.9em; }
.sources a { color: var(--bf-chat-accent); }
.foot { display: flex; align-items: center; gap: 0.6rem; margin-top: 0.4rem; font-size: 0.85em; color: var(--bf-chat-muted); }
.foot:empty { display: none; }
.turn[data-status="error"] .note { color: var(--bf-chat-bad); }
button.stop { font: inherit; font-size: 0.9em; padding: 0.2rem 0.8rem; border-radius: 999px; cursor: pointer;
  border: 1px solid var(--bf-chat-border); background: var(--bf-chat-bg); color: var(--bf-chat-fg); }
button:focus-visible, summary:focus-visible, a:focus-visible { outline: 3px solid var(--bf-chat-accent); outline-offset: 2px; }
`;

  /**
   * The element's stylesheet, as a constructed sheet where the browser has them: a page's
   * Content-Security-Policy without 'unsafe-inline' (bfstream's own pages have one) blocks a
   * <style> element, not a constructed sheet. Older WebViews get the <style> element.
   */
  let sheet = null;
  function adoptStyle(root) {
    if ("adoptedStyleSheets" in Document.prototype && "replaceSync" in CSSStyleSheet.prototype) {
      if (sheet === null) {
        sheet = new CSSStyleSheet();
        sheet.replaceSync(STYLE);
      }
      root.adoptedStyleSheets = [sheet];
    } else {
      const style = document.createElement("style");
      style.textContent = STYLE;
      root.append(style);
    }
  }

  function make(tag, className, text, part) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (part) node.setAttribute("part", part);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  class BfChat extends HTMLElement {
    static get observedAttributes() {
      return ["app", "channel", "action", "server", "token"];
    }

    constructor() {
      super();
      const root = this.attachShadow({ mode: "open" });
      this._status = make("span", "status", "connecting", "status");
      this._status.setAttribute("role", "status");
      this._status.dataset.state = "connecting";
      this._log = make("div", "log", undefined, "log");
      this._log.setAttribute("role", "log");
      this._log.setAttribute("aria-label", "Conversation");
      const composer = document.createElement("slot");
      composer.name = "composer";
      adoptStyle(root);
      root.append(this._status, this._log, composer);
      this._turns = new Map();
      this._tools = new Map(); // name -> the page's handler, kept across reconnects and restarts
      this._client = null;
      this._config = null;
      this._generation = 0;
      this.renderStats = { renders: 0, totalMs: 0, maxMs: 0 };
      this.ready = new Promise((resolve) => (this._resolveReady = resolve));
    }

    /**
     * A function (possibly async) returning a connection token, called on every connect and
     * reconnect, as bfstream.js's `token` option: for tokens that expire. Wins over the attribute.
     */
    set tokenProvider(provider) {
      if (provider !== null && typeof provider !== "function") throw new TypeError("tokenProvider: a function or null");
      this._tokenProvider = provider;
      this._config = undefined; // connect again, with it
      this._restartSoon();
    }

    get tokenProvider() {
      return this._tokenProvider ?? null;
    }

    /** The bfstream.js client, once the element has connected (null before). */
    get client() {
      return this._client;
    }

    connectedCallback() {
      this._restartSoon();
    }

    disconnectedCallback() {
      this._restartSoon(); // moved in the page: reconnects; removed: closes
    }

    attributeChangedCallback() {
      this._restartSoon();
    }

    /**
     * Answer the model's calls of the `ui_<name>` tool (`"*"`: any without a handler of its own), as
     * client.onToolCall does; the call shows as a card in its answer with its state.
     */
    onToolCall(name, handler) {
      if (typeof name !== "string" || typeof handler !== "function") {
        throw new TypeError('onToolCall: a tool name (or "*") and a function');
      }
      const entry = { handler, off: null };
      this._tools.get(name)?.off?.();
      this._tools.set(name, entry);
      if (this._client) entry.off = this._register(this._client, name, handler);
      return () => {
        if (this._tools.get(name) !== entry) return;
        entry.off?.();
        this._tools.delete(name);
      };
    }

    /** Show a message in the conversation: the reader's prompt (`role` "user") or a note ("note"). */
    addMessage(text, role = "user") {
      const stick = this._atBottom();
      const node = make("div", role === "note" ? "message note" : "message", String(text), role === "note" ? "note" : "message");
      node.dataset.role = role;
      this._log.append(node);
      if (stick || role === "user") this._scrollDown();
      return node;
    }

    /** Stop a running answer (the newest, when no id is given). */
    stop(streamId) {
      const running = [...this._turns.values()].filter((turn) => turn.node.dataset.status === "running");
      const turn = streamId ? this._turns.get(streamId) : running.at(-1);
      return turn ? turn.stop() : Promise.resolve();
    }

    _restartSoon() {
      if (this._restartQueued) return;
      this._restartQueued = true;
      queueMicrotask(() => {
        this._restartQueued = false;
        this._restart().catch((error) => this._refused(error));
      });
    }

    async _restart() {
      const config = this.isConnected && this.getAttribute("app")
        ? JSON.stringify(BfChat.observedAttributes.map((name) => this.getAttribute(name)))
        : null;
      if (config === this._config) return;
      this._config = config;
      const generation = ++this._generation;
      this._client?.close();
      this._client = null;
      for (const turn of this._turns.values()) turn.leave(); // the closed client brings no more of them
      if (config === null) return;
      const server = this.getAttribute("server") || (ownScript ? new URL(ownScript).origin : location.origin);
      const [bfstream, { Turn }] = await modulesFrom(server);
      if (generation !== this._generation) return; // changed while loading: the newer start wins
      this._Turn = Turn;
      const token = this._tokenProvider ?? (this.getAttribute("token") || undefined);
      const client = bfstream.connect({ appId: this.getAttribute("app"), url: server, token });
      this._client = client;
      const action = this.getAttribute("action") || DEFAULT_ACTION;
      const current = () => client === this._client; // a replaced client's last words are not shown
      client.onState((state, detail) => current() && this._state(state, detail));
      client.onError((error) => current() && this._refused(error));
      client.on(action, (event) => current() && this._event(event));
      client.onGap((gap) => current() && this._gap(gap));
      for (const [name, entry] of this._tools) entry.off = this._register(client, name, entry.handler);
      try {
        await client.join(this.getAttribute("channel") || "anonymous");
      } catch (error) {
        if (generation === this._generation) this._refused(error);
        return;
      }
      if (generation !== this._generation) return;
      this.dataset.ready = "true";
      this._resolveReady(client);
      this.dispatchEvent(new CustomEvent("bf-ready", { detail: { client } }));
    }

    _register(client, name, handler) {
      return client.onToolCall(name, async (args, call) => {
        const turn = this._turn(call.streamId, client);
        const card = turn.card(call.toolCallId, `ui_${call.toolName}`, "running");
        turn.expectAnswer(card, call.timeoutMs);
        // Only an answer given while the call still waits is the one the model reads: one that
        // comes after the stream went on, or after the call timed out, leaves the card as it is.
        try {
          const result = await handler(args, call);
          if (turn.isOpen(card)) turn.setCard(card, result && result.success === false ? "failed" : "answered");
          return result;
        } catch (error) {
          if (turn.isOpen(card)) turn.setCard(card, "failed", error?.message);
          throw error;
        }
      });
    }

    _state(state, detail) {
      // A refusal that trying again cannot mend (a channel refused, maybe before the connection was
      // even open) stays on show whatever the connection does next, until the element is set anew;
      // and a closing keeps the reason that closed it on show.
      const kept = this._refusedIn === this._generation || (this._status.dataset.state === "refused" && state === "closed");
      if (!kept && state === "closed" && detail?.reason) {
        this._show("refused", `refused: ${detail.reason}`); // the server said no, and why: trying again cannot help
      } else if (!kept) {
        const reason = state === "reconnecting" && detail?.reason ? ` (${detail.reason})` : "";
        this._show(state, state + reason);
      }
      this.dispatchEvent(new CustomEvent("bf-state", { detail: { state, ...detail } }));
    }

    _refused(error) {
      if (error?.retry !== true) this._refusedIn = this._generation;
      const message = error?.message || String(error);
      this._show("refused", `refused: ${message}`);
      this.dispatchEvent(new CustomEvent("bf-error", { detail: { code: error?.code, message } }));
    }

    _show(state, text) {
      this._status.dataset.state = state;
      this._status.textContent = text;
      this.setAttribute("state", state);
    }

    /** A position the server could not give back: say so on the answers it may have cut short. */
    _gap(gap) {
      if (gap.reason === "epoch") {
        for (const turn of this._turns.values()) {
          if (turn.node.dataset.status === "running") turn.note("The server restarted while answering");
        }
      }
      this.dispatchEvent(new CustomEvent("bf-gap", { detail: gap }));
    }

    /** The answer of `streamId`, made when new; `client` brought its latest event. */
    _turn(streamId, client) {
      let turn = this._turns.get(streamId);
      if (turn !== undefined) {
        if (turn.client !== client) turn.follow(client);
      } else {
        turn = new this._Turn(this, streamId, client);
        this._turns.set(streamId, turn);
        const stick = this._atBottom();
        this._log.append(turn.node);
        if (stick) this._scrollDown();
      }
      return turn;
    }

    _event(event) {
      if (!event || typeof event.streamId !== "string") return;
      const client = this._client;
      const turn = this._turn(event.streamId, client);
      switch (event.type) {
        case "reasoning":
          turn.showThinking(client.reasoning(event.streamId), event.redacted);
          break;
        case "delta":
          turn.startAnswering();
          turn.settleCards();
          turn.schedule();
          break;
        case "sources":
          turn.showSources(client.sources(event.streamId));
          break;
        case "function_call":
          // A ui_* call has its own card, from its tool_call event; these are the back end's calls.
          for (const call of event.content?.functions ?? []) {
            if (!String(call.name).startsWith("ui_")) turn.card(call.id ?? call.name, call.name, "called");
          }
          break;
        case "tool_call": {
          // The same call again (a reconnect's replay) keeps the state its card reached.
          const card = turn.card(event.toolCallId, `ui_${event.toolName}`);
          if (!card.dataset.state) turn.setCard(card, "waiting");
          turn.expectAnswer(card, event.timeoutMs);
          break;
        }
        case "error":
          turn.error = event.error?.message;
          break;
        case "end":
          turn.showThinking(client.reasoning(event.streamId), false);
          turn.showSources(client.sources(event.streamId));
          turn.end(event);
          break;
      }
      this.dispatchEvent(new CustomEvent("bf-event", { detail: event }));
    }

    _measure(ms) {
      const stats = this.renderStats;
      stats.renders += 1;
      stats.totalMs += ms;
      stats.maxMs = Math.max(stats.maxMs, ms);
    }

    /** Follow the conversation only when the reader is at its end: never pull them away from what they read. */
    _atBottom() {
      const log = this._log;
      return log.scrollHeight - log.scrollTop - log.clientHeight < 24;
    }

    _scrollDown() {
      this._log.scrollTop = this._log.scrollHeight;
    }
  }

  customElements.define("bf-chat", BfChat);
})();

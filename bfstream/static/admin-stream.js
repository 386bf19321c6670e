// The dashboard's stream view: one stream's events as they come, read with the admin token from
// /admin/api/streams/{id}/events (a long-poll: each answer holds the events after the last seq the
// page has, and the stream's record). The answer and the reasoning are put together from the events;
// the tool calls' durations and outcomes, and the usage, from the record, which has them once saved.
import { clock, element, plainWords, seconds } from "./admin-dom.js";

const GROUPED = new Set(["delta", "reasoning"]); // runs of these are one line in the event list
const LINKABLE = new Set(["http:", "https:"]);

function safeLink(url, title) {
  let parsed = null;
  try {
    parsed = new URL(url);
  } catch {
    return element("span", {}, title || url);
  }
  if (!LINKABLE.has(parsed.protocol)) return element("span", {}, title || url);
  return element("a", { href: parsed.href, target: "_blank", rel: "noopener noreferrer" }, title || url);
}

function tableOf(caption, columns) {
  const body = element("tbody");
  const table = element(
    "table",
    { "aria-label": caption },
    element("thead", {}, element("tr", {}, ...columns.map((name) => element("th", { scope: "col" }, name)))),
    body,
  );
  return { table, body };
}

export class StreamView {
  constructor(api, root, { onUnauthorized, onProblem, onState }) {
    this.api = api;
    this.root = root;
    this.onUnauthorized = onUnauthorized;
    this.onProblem = onProblem;
    this.onState = onState;
    this.controller = null;
  }

  open(streamId) {
    this.close();
    this.streamId = streamId;
    this.after = -1;
    this.announced = []; // tool calls the events told of, until the record has them with outcomes
    this.lastRow = null;
    this.build();
    this.controller = new AbortController();
    this.follow(this.controller.signal);
  }

  close() {
    this.controller?.abort();
    this.controller = null;
  }

  build() {
    const root = this.root;
    delete root.dataset.closed;
    root.dataset.streamId = this.streamId;
    root.dataset.status = "";
    this.status = element("span", { class: "state" }, "…");
    this.facts = element("dl", { class: "facts" });
    this.error = element("div", { class: "stream-error", role: "alert", hidden: true });
    this.thought = document.createTextNode("");
    this.reasoning = element(
      "details",
      { class: "reasoning", open: true, hidden: true },
      element("summary", {}, "Reasoning"),
      element("div", { class: "thought" }, this.thought),
    );
    this.text = document.createTextNode("");
    this.sources = element("ol", { class: "sources", "aria-label": "Sources" });
    this.tools = tableOf("Tool calls", ["Tool", "Kind", "Round", "Duration", "Outcome"]);
    this.events = tableOf("Events", ["Seq", "Received", "Event", "What"]);
    root.replaceChildren(
      element("p", {}, element("a", { href: "#", class: "back" }, "← All streams")),
      element("h2", { tabIndex: -1 }, "Stream ", element("code", {}, this.streamId), " ", this.status),
      this.facts,
      this.error,
      this.reasoning,
      element("h3", {}, "Answer"),
      element("div", { class: "answer-text" }, this.text),
      element("h3", {}, "Sources"),
      this.sources,
      element("h3", {}, "Tool calls"),
      element("div", { class: "scroll" }, this.tools.table),
      element("h3", {}, "Events"),
      element("div", { class: "scroll" }, this.events.table),
    );
    this.renderTools([]);
    root.querySelector("h2").focus(); // a keyboard or screen reader lands on what just opened
  }

  async follow(signal) {
    let failures = 0;
    let settling = 0;
    while (!signal.aborted) {
      try {
        const path = `/admin/api/streams/${encodeURIComponent(this.streamId)}/events?after=${this.after}`;
        const got = await this.api.call(path, { signal });
        failures = 0;
        this.onProblem("");
        this.onState(got.closed ? "stream ended" : `following · ${new Date().toLocaleTimeString()}`);
        for (const event of got.events) this.apply(event);
        this.showRecord(got.stream);
        // The end reaches the log a moment before the record is saved: ask again, briefly, for the
        // record with the tool calls' outcomes and the usage.
        if (got.closed && got.stream.status === "running" && settling < 20) {
          settling += 1;
          await new Promise((done) => setTimeout(done, 250));
          continue;
        }
        if (got.closed) {
          this.root.dataset.closed = "true";
          return;
        }
      } catch (error) {
        if (signal.aborted) return;
        if (error.status === 401) return this.onUnauthorized(error);
        this.onProblem(plainWords(error));
        this.onState("not connected");
        if (error.status === 400 || error.status === 404) return; // asking again would not help
        failures += 1; // the network or the server: again, later and later, up to 8 s apart
        await new Promise((done) => setTimeout(done, Math.min(8000, 250 * 2 ** failures)));
      }
    }
  }

  apply(event) {
    this.after = event.seq;
    let what = "";
    switch (event.type) {
      case "threadInfo":
        what = `${event.content?.service ?? ""} / ${event.content?.model ?? ""}`;
        break;
      case "delta":
        this.text.appendData(event.content ?? "");
        what = event.content ?? "";
        break;
      case "reasoning":
        this.reasoning.hidden = false;
        this.thought.appendData(event.redacted ? "[withheld by the provider] " : (event.content ?? ""));
        what = event.redacted ? "(redacted)" : (event.content ?? "");
        break;
      case "snapshot":
        this.text.data = event.text ?? "";
        this.thought.data = event.reasoning ?? "";
        this.reasoning.hidden = !event.reasoning;
        for (const source of event.sources ?? []) this.addSource(source);
        for (const call of event.functions ?? []) this.announced.push({ name: call.name });
        what = `stands for events 0 to ${event.seq}: ${(event.text ?? "").length} characters of answer`;
        break;
      case "sources":
        for (const source of event.sources ?? []) this.addSource(source);
        what = `${(event.sources ?? []).length} cited`;
        break;
      case "function_call": {
        const calls = event.content?.functions ?? [];
        for (const call of calls) this.announced.push({ name: call.name });
        what = calls.map((call) => call.name).join(", ");
        break;
      }
      case "tool_call":
        what = `${event.toolName}: waiting for a page's answer (up to ${seconds((event.timeoutMs ?? 0) / 1000)})`;
        break;
      case "error":
        this.showError(event.error);
        what = event.error?.message ?? "";
        break;
      case "end":
        if (typeof event.text === "string") this.text.data = event.text; // the whole answer, once more
        what = `finish: ${event.finish_reason ?? "?"}`;
        break;
      default:
        what = "";
    }
    this.log(event, what);
  }

  log(event, what) {
    const row = this.lastRow;
    if (row && GROUPED.has(event.type) && row.dataset.type === event.type) {
      row.count += 1;
      row.cells[0].textContent = `${row.first}–${event.seq}`;
      row.cells[2].textContent = `${event.type} × ${row.count}`;
      row.cells[3].textContent = `${row.cells[3].textContent}${what}`.slice(-120); // the latest words
      return;
    }
    const cells = [String(event.seq), new Date().toLocaleTimeString(), event.type, what.slice(0, 240)];
    this.lastRow = element("tr", { "data-type": event.type }, ...cells.map((cell) => element("td", {}, cell)));
    Object.assign(this.lastRow, { first: event.seq, count: 1 });
    this.events.body.append(this.lastRow);
  }

  addSource(source) {
    if ([...this.sources.querySelectorAll("a, span")].some((node) => node.dataset.url === source.url)) return;
    const link = safeLink(source.url, source.title);
    link.dataset.url = source.url;
    this.sources.append(element("li", {}, link));
  }

  showError(error) {
    if (!error) return;
    this.error.hidden = false;
    this.error.replaceChildren(
      element("strong", {}, "Error: "),
      error.message ?? "",
      error.code == null ? "" : element("span", { class: "hint" }, ` (code ${error.code})`),
    );
  }

  showRecord(stream) {
    this.root.dataset.status = stream.status;
    this.status.textContent = stream.status;
    this.status.dataset.state = stream.status === "running" ? "open" : stream.status === "completed" ? "" : "closed";
    const tokens = stream.tokensEstimated ? `~${stream.tokens}` : String(stream.tokens);
    const facts = [
      ["Service / model", `${stream.service} / ${stream.model}`],
      ["Channels", stream.channels.join(", ")],
      ["Action", stream.actionName],
      ["Started", clock(stream.createdAt)],
      ["Duration", seconds(stream.duration)],
      ["Tokens", `${tokens}${stream.tokensPerSecond ? ` (${stream.tokensPerSecond}/s)` : ""}`],
      ["Finish", stream.finishReason ?? "–"],
    ];
    const pairs = facts.flatMap(([name, value]) => [element("dt", {}, name), element("dd", {}, value)]);
    this.facts.replaceChildren(...pairs);
    if (stream.error) this.showError(stream.error);
    this.renderTools(stream.tools ?? []);
  }

  renderTools(saved) {
    const rows = saved.length
      ? saved.map((call) => [
          call.name,
          call.kind,
          call.round,
          call.durationMs === undefined ? "–" : `${call.durationMs} ms`,
          call.outcome,
        ])
      : this.announced.map((call) => [call.name, "–", "–", "–", "called, not saved yet"]);
    this.tools.body.replaceChildren(
      ...(rows.length
        ? rows.map((cells, index) =>
            element(
              "tr",
              { "data-outcome": saved.length ? String(saved[index].outcome) : "pending" },
              ...cells.map((cell) => element("td", {}, cell ?? "–")),
            ),
          )
        : [element("tr", {}, element("td", { colSpan: 5, class: "hint" }, "No tool calls"))]),
    );
  }
}

// The demo chat page: built only on bfstream.js, as any app's page would be. It never holds an
// app key: it joins a channel of its own (random, so no other visitor can guess it) and asks the
// demo's endpoint to stream an answer there.
//
// An answer is its <li>: a "Thinking" block (a reasoning model's thinking, open while it thinks and
// closed once the answer starts, unless the reader opened or closed it), the answer's text, and
// the sources it cites, as links. Everything the model wrote goes in as text, never as HTML.
import { connect } from "/static/bfstream.js";

const $ = (id) => document.getElementById(id);
const conversation = $("conversation");
const form = $("ask");
const prompt = $("prompt");
const send = $("send");
const stop = $("stop");
const state = $("state");

const answers = new Map(); // streamId -> its <li>
let running = null; // the streamId being answered
let labels = 0; // for the ids that label each answer's Thinking block and sources

function randomChannel() {
  const bytes = crypto.getRandomValues(new Uint8Array(18));
  return "demo-" + btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_");
}

function bubble(kind, text) {
  const item = document.createElement("li");
  item.className = kind;
  item.textContent = text;
  conversation.append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

function answerFor(streamId) {
  let item = answers.get(streamId);
  if (item === undefined) {
    item = bubble("answer", "");
    item.dataset.streamId = streamId;
    item.setAttribute("aria-busy", "true");
    item.append(element("div", "text"));
    answers.set(streamId, item);
  }
  return item;
}

function element(tag, className, text) {
  const made = document.createElement(tag);
  if (className) made.className = className;
  if (text !== undefined) made.textContent = text;
  return made;
}

/** The answer's Thinking block, made (open) on its first use: a <details> above the text. */
function thinkingOf(item) {
  let details = item.querySelector(".thinking");
  if (details === null) {
    details = element("details", "thinking");
    const summary = element("summary", "", "Thinking");
    summary.id = `thinking-${++labels}`;
    details.setAttribute("aria-labelledby", summary.id);
    // The reader's own choice wins: once they open or close it, the page leaves it so.
    summary.addEventListener("click", () => (details.dataset.touched = "true"));
    details.append(summary, element("div", "thought"));
    details.open = item.dataset.answering !== "true";
    item.prepend(details);
  }
  return details;
}

function showThinking(item, event) {
  const thought = client.reasoning(event.streamId);
  if (!thought && !event.redacted) return;
  const details = thinkingOf(item);
  details.querySelector(".thought").textContent = thought;
  if (event.redacted && details.querySelector(".redacted") === null) {
    details.append(element("p", "redacted", "Part of the thinking was withheld by the provider (redacted)."));
  }
}

/** The answer has started (or ended): its thinking folds away, unless the reader chose otherwise. */
function answering(item) {
  item.dataset.answering = "true";
  const details = item.querySelector(".thinking");
  if (details !== null && details.dataset.touched !== "true") details.open = false;
}

/** An http(s) URL as a link target; anything else (javascript:, data:, ...) is no link. */
function linkTarget(url) {
  try {
    const parsed = new URL(url);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

function sourceItem({ url, title }) {
  const item = document.createElement("li");
  const target = linkTarget(url);
  const name = title || url;
  if (target === null) {
    item.append(element("span", "", name));
    return item;
  }
  const link = element("a", "", name);
  link.href = target;
  link.target = "_blank";
  link.rel = "noopener noreferrer";
  item.append(link, element("span", "host", new URL(target).host));
  return item;
}

/** The sources the answer cites, each URL once (client.sources), as a list below its text. */
function showSources(item, streamId) {
  const sources = client.sources(streamId);
  if (!sources.length) return;
  let list = item.querySelector(".sources ol");
  if (list === null) {
    const box = element("div", "sources");
    const title = element("p", "sources-title", "Sources");
    title.id = `sources-${++labels}`;
    list = document.createElement("ol");
    list.setAttribute("aria-labelledby", title.id);
    box.append(title, list);
    item.querySelector(".text").after(box);
  }
  list.replaceChildren(...sources.map(sourceItem));
}

function finished(streamId, note, failed = false) {
  const item = answerFor(streamId);
  item.removeAttribute("aria-busy");
  item.classList.toggle("failed", failed);
  item.dataset.done = "true";
  if (note) item.append(element("span", "meta", note));
  if (running === streamId) running = null;
  stop.disabled = running === null;
  send.disabled = false;
}

const config = await (await fetch("/demo/config")).json();
if (config.service !== "echo") $("service").textContent = `Answers come from ${config.service}.`;

const client = connect({ appId: config.appId });
client.onState((now) => {
  state.dataset.state = now;
  state.textContent = now;
});
client.on(config.action, (event) => {
  const item = answerFor(event.streamId);
  if (event.type === "delta") {
    answering(item);
    item.querySelector(".text").append(event.content);
    item.scrollIntoView({ block: "end" });
  } else if (event.type === "reasoning") {
    showThinking(item, event);
    item.scrollIntoView({ block: "end" });
  } else if (event.type === "sources") {
    showSources(item, event.streamId);
  } else if (event.type === "error") {
    item.dataset.error = event.error.message;
  } else if (event.type === "end") {
    answering(item);
    showThinking(item, event); // a page that came in mid-thought gets all of it here
    showSources(item, event.streamId);
    const failed = event.finish_reason === "error";
    const note = failed ? `Failed: ${item.dataset.error ?? "error"}` : event.finish_reason === "stopped" ? "Stopped" : "";
    finished(event.streamId, note, failed);
  }
});
const channel = randomChannel();
await client.join(channel);

form.addEventListener("submit", async (submitted) => {
  submitted.preventDefault();
  const text = prompt.value.trim();
  if (!text || running !== null) return;
  bubble("you", text);
  prompt.value = "";
  send.disabled = true;
  let response;
  let answer;
  try {
    response = await fetch("/demo/ask", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ channel, prompt: text }),
    });
    answer = await response.json();
  } catch {
    answer = { error: { message: "The server cannot be reached: try again once the state says open" } };
  }
  if (!response?.ok) {
    bubble("answer failed", answer.error?.message ?? "The demo could not start an answer");
    prompt.value = text; // not lost: send it again when the connection is back
    send.disabled = false;
    return;
  }
  running = answer.streamId;
  if (answers.get(running)?.dataset.done !== "true") stop.disabled = false;
  else running = null;
  answerFor(answer.streamId);
});

prompt.addEventListener("keydown", (key) => {
  if (key.key === "Enter" && !key.shiftKey && !key.isComposing) {
    key.preventDefault();
    form.requestSubmit();
  }
});

stop.addEventListener("click", async () => {
  if (running === null) return;
  stop.disabled = true;
  try {
    await client.stop(running);
  } catch {
    stop.disabled = false; // the server cannot be reached: the button stays usable
  }
});

// A position the server could not give back (it restarted, say): whatever it still holds is
// replayed, an interrupted answer included, and the page says what happened.
client.onGap((gap) => {
  if (running === null) return;
  const item = answerFor(running);
  if (gap.reason === "epoch" && !item.querySelector(".meta")) {
    item.append(element("span", "meta", "The server restarted while answering"));
  }
});

document.body.dataset.ready = "true"; // for the tests: the page is connected and joined

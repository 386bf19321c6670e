// The demo chat page: built only on bfstream.js, as any app's page would be. It never holds an
// app key: it joins a channel of its own (random, so no other visitor can guess it) and asks the
// demo's endpoint to stream an answer there.
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
    answers.set(streamId, item);
  }
  return item;
}

function finished(streamId, note, failed = false) {
  const item = answerFor(streamId);
  item.removeAttribute("aria-busy");
  item.classList.toggle("failed", failed);
  item.dataset.done = "true";
  if (note) {
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = note;
    item.append(meta);
  }
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
    item.insertBefore(document.createTextNode(event.content), item.querySelector(".meta"));
    item.scrollIntoView({ block: "end" });
  } else if (event.type === "error") {
    item.dataset.error = event.error.message;
  } else if (event.type === "end") {
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
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = "The server restarted while answering";
    item.append(meta);
  }
});

document.body.dataset.ready = "true"; // for the tests: the page is connected and joined

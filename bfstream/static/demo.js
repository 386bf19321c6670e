// The demo chat page: the live example of <bf-chat> (bf-chat.js, loaded by the page's own script
// tag). It never holds an app key: the element joins a channel of the page's own (random, so no
// other visitor can guess it), and the form asks the demo's endpoint to stream an answer there,
// as an app's back end would. Everything else (markdown, thinking, sources, Stop, the connection's
// state) is the element's.

const $ = (id) => document.getElementById(id);
const chat = $("chat");
const form = $("ask");
const prompt = $("prompt");
const send = $("send");

let running = false; // one answer at a time

function randomChannel() {
  const bytes = crypto.getRandomValues(new Uint8Array(18));
  return "demo-" + btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_");
}

const config = await (await fetch("/demo/config")).json();
if (config.service !== "echo") $("service").textContent = `Answers come from ${config.service}.`;
chat.setAttribute("action", config.action);
chat.setAttribute("channel", randomChannel());
chat.setAttribute("app", config.appId); // last: with an app, the element connects

chat.addEventListener("bf-event", ({ detail: event }) => {
  if (event.type === "end") {
    running = false;
    send.disabled = false;
  }
});

form.addEventListener("submit", async (submitted) => {
  submitted.preventDefault();
  const text = prompt.value.trim();
  if (!text || running) return;
  chat.addMessage(text);
  prompt.value = "";
  send.disabled = true;
  running = true;
  let response;
  let answer;
  try {
    response = await fetch("/demo/ask", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ channel: chat.getAttribute("channel"), prompt: text }),
    });
    answer = await response.json();
  } catch {
    answer = { error: { message: "The server cannot be reached: try again once the state says open" } };
  }
  if (!response?.ok) {
    chat.addMessage(answer.error?.message ?? "The demo could not start an answer", "note");
    prompt.value = text; // not lost: send it again when the connection is back
    running = false;
    send.disabled = false;
  }
});

prompt.addEventListener("keydown", (key) => {
  if (key.key === "Enter" && !key.shiftKey && !key.isComposing) {
    key.preventDefault();
    form.requestSubmit();
  }
});

await chat.ready;
document.body.dataset.ready = "true"; // for the tests: the element is connected and joined

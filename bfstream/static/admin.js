// The streams dashboard: polls /admin/api/overview with the admin token the operator types in
// (kept for this tab only, in sessionStorage), and renders every app's streams, its failed ones, and
// the calls this instance refused. A stream's id opens its view (#stream/<id>, admin-stream.js).
import { $, Api, clock, detailsText, element, plainWords, seconds } from "./admin-dom.js";
import { StreamView } from "./admin-stream.js";

const KEY = "bfstream-admin-token";
const api = new Api(sessionStorage.getItem(KEY));
const COLUMNS = [
  "Stream", "Started", "Service / model", "Channels", "Status", "Tokens", "Tokens/s", "Duration", "Finish",
];
let timer = null;

function problem(text) {
  $("problem").textContent = text;
}

function streamLink(streamId) {
  return element("a", { href: `#stream/${encodeURIComponent(streamId)}`, title: `Open stream ${streamId}` },
    element("code", {}, streamId.slice(0, 12)));
}

function table(caption, columns, rows, empty) {
  const head = element("tr", {}, ...columns.map((title) => element("th", { scope: "col" }, title)));
  const none = element("tr", {}, element("td", { colSpan: columns.length, class: "hint" }, empty));
  const body = rows.length ? rows : [none];
  return element("div", { class: "scroll" },
    element("table", { "aria-label": caption }, element("thead", {}, head), element("tbody", {}, ...body)));
}

function stopButton(stream) {
  const stop = element("button", { type: "button", class: "secondary", textContent: "Stop" });
  stop.addEventListener("click", async () => {
    stop.disabled = true;
    try {
      await api.call("/admin/api/stop", { body: { streamId: stream.streamId } });
    } catch (error) {
      problem(plainWords(error));
      stop.disabled = false;
    }
    refresh();
  });
  return stop;
}

function streamRow(stream) {
  const tokens = stream.tokensEstimated ? `~${stream.tokens}` : String(stream.tokens);
  return element(
    "tr",
    { "data-stream-id": stream.streamId, "data-status": stream.status },
    element("td", {}, streamLink(stream.streamId)),
    element("td", {}, clock(stream.createdAt)),
    element("td", {}, `${stream.service} / ${stream.model}`),
    element("td", {}, stream.channels.join(", ")),
    element("td", { class: "status" }, stream.status),
    element("td", { class: "number" }, tokens),
    element("td", { class: "number" }, stream.tokensPerSecond ?? "–"),
    element("td", { class: "number" }, seconds(stream.duration)),
    element("td", {}, stream.status === "running" ? stopButton(stream) : stream.finishReason ?? ""),
  );
}

function failureRow(stream) {
  const error = stream.error ?? {};
  return element(
    "tr",
    { "data-stream-id": stream.streamId, "data-status": stream.status },
    element("td", {}, streamLink(stream.streamId)),
    element("td", {}, clock(stream.createdAt)),
    element("td", {}, `${stream.service} / ${stream.model}`),
    element("td", { class: "status" }, stream.status),
    element("td", {}, error.message ?? "",
      error.code == null ? "" : element("span", { class: "hint" }, ` (${error.code})`)),
  );
}

function appSection(app) {
  const parts = [
    element("h2", {}, app.name, " ", element("code", { class: "hint" }, app.id)),
    element("p", { class: "hint" },
      `${app.running} running · ${app.connections} connections · ${app.channels} channels · ` +
        `${app.listeners} listeners`),
    table(`Streams of ${app.name}`, COLUMNS, app.streams.map(streamRow), "No streams yet"),
  ];
  if (app.failures.length) {
    parts.push(element("h3", {}, "Failed streams"),
      table(`Failed streams of ${app.name}`, ["Stream", "Started", "Service / model", "Status", "Error"],
        app.failures.map(failureRow), ""));
  }
  return element("section", { class: "app", "data-app-id": app.id }, ...parts);
}

function refusedRow(call) {
  const fields = detailsText(call.details);
  return element(
    "tr",
    { "data-path": call.path, "data-status": String(call.status) },
    element("td", {}, clock(call.at)),
    element("td", {}, element("code", {}, call.path)),
    element("td", { class: "number" }, call.status),
    element("td", {}, call.message ?? "", fields ? element("span", { class: "hint" }, ` (${fields})`) : ""),
  );
}

function refusedSection(overview) {
  const section = $("refused");
  section.hidden = false;
  section.replaceChildren(
    element("h2", {}, "Refused calls"),
    element("p", { class: "hint" },
      "The last create and query calls answered with an error by instance ",
      element("code", {}, overview.instance),
      ", newest first. Each instance of a fleet keeps its own."),
    table("Refused calls", ["Time", "Call", "Status", "Error"], overview.refusedCalls.map(refusedRow), "None"),
  );
}

async function refresh() {
  try {
    const overview = await api.call("/admin/api/overview");
    if (!$("stream").hidden) return; // a stream was opened while this poll was on its way
    // Re-rendered each second: keep the keyboard's place on the row it was on.
    const focused = document.activeElement?.closest?.("tr[data-stream-id]")?.dataset.streamId;
    $("apps").replaceChildren(...overview.apps.map(appSection));
    refusedSection(overview);
    if (focused) document.querySelector(`tr[data-stream-id="${CSS.escape(focused)}"] :is(a, button)`)?.focus();
    problem("");
    $("login").hidden = true;
    $("updated").textContent = `live · ${new Date(overview.generatedAt * 1000).toLocaleTimeString()}`;
    document.body.dataset.ready = "true";
  } catch (error) {
    if (error.status === 401) return signedOut(error);
    problem(plainWords(error));
    $("updated").textContent = "not connected";
  }
}

const view = new StreamView(api, $("stream"), {
  onUnauthorized: signedOut,
  onProblem: problem,
  onState: (text) => {
    $("updated").textContent = text;
  },
});

function signedOut(error) {
  sessionStorage.removeItem(KEY);
  api.token = null;
  clearInterval(timer);
  timer = null;
  view.close();
  problem(plainWords(error));
  $("updated").textContent = "not connected";
  $("login").hidden = false;
  delete document.body.dataset.ready;
  $("token").select();
}

// #stream/<id> shows that stream; anything else, the list, polled each second while it shows.
function route() {
  if (!api.token) return;
  const match = /^#stream\/(.+)$/.exec(location.hash);
  $("stream").hidden = !match;
  $("list").hidden = Boolean(match);
  if (match) {
    $("login").hidden = true; // shown again if the token is refused
    clearInterval(timer);
    timer = null;
    view.open(decodeURIComponent(match[1]));
  } else {
    view.close();
    refresh();
    if (timer === null) timer = setInterval(refresh, 1000);
  }
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  api.token = $("token").value;
  sessionStorage.setItem(KEY, api.token);
  problem("");
  route();
});
window.addEventListener("hashchange", route);
route();

// The streams dashboard: polls /admin/api/overview with the admin token the operator types in
// (kept for this tab only, in sessionStorage), and renders every app's streams and connections.
const $ = (id) => document.getElementById(id);
const KEY = "bfstream-admin-token";
let token = sessionStorage.getItem(KEY);
let timer = null;

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function seconds(value) {
  return value < 60 ? `${value.toFixed(1)} s` : `${Math.floor(value / 60)} min ${Math.round(value % 60)} s`;
}

async function api(path, body) {
  const response = await fetch(path, {
    method: body === undefined ? "GET" : "POST",
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) throw Object.assign(new Error(answer.error?.message ?? `HTTP ${response.status}`), { status: response.status });
  return answer;
}

function streamRow(stream) {
  const stop = element("button", { type: "button", class: "secondary", textContent: "Stop" });
  stop.addEventListener("click", async () => {
    stop.disabled = true;
    try {
      await api("/admin/api/stop", { streamId: stream.streamId });
    } catch (error) {
      $("problem").textContent = error.message;
      stop.disabled = false;
    }
    refresh();
  });
  const tokens = stream.tokensEstimated ? `~${stream.tokens}` : String(stream.tokens);
  return element(
    "tr",
    { "data-stream-id": stream.streamId, "data-status": stream.status },
    element("td", {}, element("code", {}, stream.streamId.slice(0, 12))),
    element("td", {}, `${stream.service} / ${stream.model}`),
    element("td", {}, stream.channels.join(", ")),
    element("td", { class: "status" }, stream.status),
    element("td", { class: "number" }, tokens),
    element("td", { class: "number" }, stream.tokensPerSecond ?? "–"),
    element("td", { class: "number" }, seconds(stream.duration)),
    element("td", {}, stream.status === "running" ? stop : stream.finishReason ?? ""),
  );
}

function appSection(app) {
  const head = element(
    "tr",
    {},
    ...["Stream", "Service / model", "Channels", "Status", "Tokens", "Tokens/s", "Duration", ""].map((title) =>
      element("th", { scope: "col" }, title),
    ),
  );
  const rows = app.streams.length
    ? app.streams.map(streamRow)
    : [element("tr", {}, element("td", { colSpan: 8, class: "hint" }, "No streams yet"))];
  return element(
    "section",
    { class: "app", "data-app-id": app.id },
    element("h2", {}, app.name, " ", element("code", { class: "hint" }, app.id)),
    element(
      "p",
      { class: "hint" },
      `${app.running} running · ${app.connections} connections · ${app.channels} channels · ${app.listeners} listeners`,
    ),
    element("div", { class: "scroll" }, element("table", {}, element("thead", {}, head), element("tbody", {}, ...rows))),
  );
}

async function refresh() {
  try {
    const overview = await api("/admin/api/overview");
    // Re-rendered each second: keep the keyboard's place on the stop button it was on.
    const focused = document.activeElement?.closest?.("tr[data-stream-id]")?.dataset.streamId;
    $("apps").replaceChildren(...overview.apps.map(appSection));
    if (focused) document.querySelector(`tr[data-stream-id="${CSS.escape(focused)}"] button`)?.focus();
    $("problem").textContent = "";
    $("login").hidden = true;
    $("updated").textContent = `live · ${new Date(overview.generatedAt * 1000).toLocaleTimeString()}`;
    document.body.dataset.ready = "true";
  } catch (error) {
    $("problem").textContent = error.message;
    $("updated").textContent = "not connected";
    if (error.status === 401) {
      sessionStorage.removeItem(KEY);
      token = null;
      $("login").hidden = false;
      clearInterval(timer);
      timer = null;
    }
  }
}

function start() {
  refresh();
  if (timer === null) timer = setInterval(refresh, 1000);
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value;
  sessionStorage.setItem(KEY, token);
  start();
});
if (token) start();

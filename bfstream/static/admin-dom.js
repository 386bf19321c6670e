// What the dashboard's two views share: building elements (text always as text nodes, never as
// HTML: stream ids, errors and answers come from apps and models), times, and its calls to the API.

export const $ = (id) => document.getElementById(id);

export function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("data-") || name.startsWith("aria-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

export function seconds(value) {
  return value < 60 ? `${value.toFixed(1)} s` : `${Math.floor(value / 60)} min ${Math.round(value % 60)} s`;
}

// A start time as an operator reads it: the time of day today, the date too before.
export function clock(epochSeconds) {
  const when = new Date(epochSeconds * 1000);
  const time = when.toLocaleTimeString();
  return when.toDateString() === new Date().toDateString() ? time : `${when.toLocaleDateString()} ${time}`;
}

// One part of an error's details as text. Its shape is the error's own: field problems are
// [{field, message}], an unknown service lists the service names as strings, and any other JSON
// may come. It is put in the page as text, never as HTML.
function detailText(detail) {
  if (typeof detail === "string") return detail;
  if (detail && typeof detail === "object" && typeof detail.message === "string") {
    if (detail.field === undefined) return detail.message;
    const field = typeof detail.field === "string" ? detail.field : JSON.stringify(detail.field);
    return `${field}: ${detail.message}`;
  }
  return JSON.stringify(detail) ?? String(detail);
}

/** An error's details, whatever their shape, as one line of text ("" for none). */
export function detailsText(details) {
  if (details === undefined || details === null) return "";
  if (!Array.isArray(details)) return detailText(details);
  const parts = details.map(detailText);
  return parts.join(details.every((detail) => typeof detail === "string") ? ", " : "; ");
}

// An error answer in plain words for the person at the page; the server's own message stays for the rest.
export function plainWords(error) {
  if (error.status === 401) {
    return (
      "That admin token is not the one this server has. " +
      "Check admin_token (BFSTREAM_ADMIN_TOKEN) in its settings and type it again."
    );
  }
  if (error.status === 404 && error.path?.endsWith("/overview")) {
    return "The dashboard is turned off on this server (no admin_token).";
  }
  if (error.status === undefined) return `The server cannot be reached (${error.message}). Retrying.`;
  return error.message;
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  async call(path, { body, signal } = {}) {
    let response;
    try {
      response = await fetch(path, {
        method: body === undefined ? "GET" : "POST",
        headers: {
          authorization: `Bearer ${this.token}`,
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
      });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw Object.assign(new Error(error.message), { path }); // no status: the network, not the server
    }
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      const message = answer.error?.message ?? `HTTP ${response.status}`;
      throw Object.assign(new Error(message), { status: response.status, path });
    }
    return answer;
  }
}

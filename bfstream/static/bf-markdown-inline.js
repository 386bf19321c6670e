// bf-markdown-inline.js: the spans inside a block of <bf-chat>'s markdown (emphasis, code, links,
// images), as DOM nodes. Part of bf-markdown.js, which says why it is our own.
//
// Model text only ever becomes text nodes; a link or an image is made only for an http:, https: or
// mailto: address (safeUrl), and anything else stays as the text the model wrote.

const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);
const PUNCTUATION = /[!-/:-@[-`{-~]/;
const BARE_URL = /^(?:https?:\/\/|mailto:)[^\s<>"]*[^\s<>".,:;!?'")\]*_~]/i;
const FLANK_PUNCTUATION = /[\p{P}\p{S}]/u; // CommonMark's "Unicode punctuation character"
const SPACE = /\s/;

/** The URL as a link or image target, or null when it is not http(s) or mailto (or not a URL). */
export function safeUrl(raw) {
  try {
    const url = new URL(String(raw).trim());
    return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
  } catch {
    return null; // relative, or not a URL at all
  }
}

function el(tag, parent, text) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (parent) parent.append(node);
  return node;
}

/** The index of the `]` that closes the `[` at `open`, brackets nested, or -1. */
function closingBracket(text, open) {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    if (text[i] === "\\") i++;
    else if (text[i] === "[") depth++;
    else if (text[i] === "]" && --depth === 0) return i;
  }
  return -1;
}

/** `(url "title")` at `at`: {url, end} (end past the `)`), or {pending} when it is cut off, or null. */
function destination(text, at) {
  if (text[at] !== "(") return null;
  let i = at + 1;
  while (text[i] === " ") i++;
  let url = "";
  if (text[i] === "<") {
    const close = text.indexOf(">", i);
    if (close < 0) return { pending: true };
    url = text.slice(i + 1, close);
    i = close + 1;
  } else {
    let depth = 0;
    for (; i < text.length && !/\s/.test(text[i]); i++) {
      if (text[i] === "(") depth++;
      else if (text[i] === ")" && depth-- === 0) break;
      url += text[i];
    }
  }
  const rest = /^\s*(?:"[^"]*"|'[^']*')?\s*\)/.exec(text.slice(i));
  if (rest === null) return i >= text.length || /^\s*(?:"[^"]*|'[^']*)?$/.test(text.slice(i)) ? { pending: true } : null;
  return { url, end: i + rest[0].length };
}

/**
 * Whether the emphasis marker run `text[at, at + length)` may open and may close a span, by
 * CommonMark's flanking rules; the text's start and end count as whitespace. Left-flanking: not
 * followed by whitespace, and not followed by punctuation unless preceded by whitespace or
 * punctuation (right-flanking is the mirror). `*` and `~` open when left-flanking, close when
 * right-flanking; `_` also must not sit inside a word: `snake_case`, and `window.__pwn=1`, where
 * the run is left-flanking only, after punctuation, so that a second such run cannot close it.
 */
function flanking(text, at, length) {
  const before = text[at - 1] ?? " ";
  const after = text[at + length] ?? " ";
  const punctuationBefore = FLANK_PUNCTUATION.test(before);
  const punctuationAfter = FLANK_PUNCTUATION.test(after);
  const left = !SPACE.test(after) && (!punctuationAfter || SPACE.test(before) || punctuationBefore);
  const right = !SPACE.test(before) && (!punctuationBefore || SPACE.test(after) || punctuationAfter);
  if (text[at] !== "_") return { opens: left, closes: right };
  return { opens: left && (!right || punctuationBefore), closes: right && (!left || punctuationAfter) };
}

/** Where the emphasis opened at `from` by `marker` closes, or -1. */
function closingDelimiter(text, from, marker) {
  for (let i = from; i < text.length; i++) {
    if (text[i] === "\\") {
      i++;
      continue;
    }
    if (text[i] === "`") {
      const run = /^`+/.exec(text.slice(i))[0];
      const end = text.indexOf(run, i + run.length);
      if (end > 0) i = end + run.length - 1;
      continue;
    }
    if (text.startsWith(marker, i) && i > from && flanking(text, i, marker.length).closes) {
      if (marker.length === 1 && text[i + 1] === marker) {
        i++; // part of a double run: not this single marker's closer
        continue;
      }
      return i;
    }
  }
  return -1;
}

/**
 * Render inline markdown into `parent`. `streaming`: the text is the end of an answer still
 * coming, so an opened span (`**bold`, `` `code ``, `[label](http://ha`) is shown as what it will
 * most likely be, instead of its raw markers for a moment.
 */
export function renderInline(text, parent, streaming = false, inLink = false) {
  let plain = "";
  const flush = () => {
    if (plain) parent.append(plain);
    plain = "";
  };
  const tail = (end) => streaming && end >= text.length;
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "\\" && PUNCTUATION.test(text[i + 1] ?? "")) {
      plain += text[i + 1];
      i += 2;
    } else if (c === "\n") {
      flush();
      el("br", parent);
      i++;
    } else if (c === "`") {
      const run = /^`+/.exec(text.slice(i))[0];
      const end = text.indexOf(run, i + run.length);
      const closes = end >= 0 && text[end + run.length] !== "`";
      if (!closes && !streaming) {
        plain += run;
        i += run.length;
        continue;
      }
      flush();
      let code = text.slice(i + run.length, closes ? end : text.length);
      if (code.length > 2 && code.startsWith(" ") && code.endsWith(" ")) code = code.slice(1, -1);
      el("code", parent, code.replace(/\n/g, " "));
      i = closes ? end + run.length : text.length;
    } else if ((c === "[" || (c === "!" && text[i + 1] === "[")) && !inLink) {
      const image = c === "!";
      const open = image ? i + 1 : i;
      const close = closingBracket(text, open);
      const target = close < 0 ? null : destination(text, close + 1);
      if (target === null) {
        plain += c;
        i++;
        continue;
      }
      const label = text.slice(open + 1, close);
      if (target.pending) {
        if (!tail(text.length)) {
          plain += c;
          i++;
          continue;
        }
        flush(); // the URL is still coming: show the label alone until it has
        renderInline(label, el("span", parent), false, true);
        i = text.length;
        continue;
      }
      const href = safeUrl(target.url);
      if (href === null) {
        plain += text.slice(i, target.end); // refused: the reader sees what the model wrote
        i = target.end;
        continue;
      }
      flush();
      if (image && !href.startsWith("mailto:")) {
        const img = el("img", parent);
        img.alt = label;
        img.loading = "lazy";
        img.referrerPolicy = "no-referrer";
        img.src = href;
      } else {
        const link = el("a", parent);
        link.href = href;
        link.target = "_blank";
        link.rel = "noopener noreferrer nofollow";
        renderInline(image ? label || href : label, link, false, true);
      }
      i = target.end;
    } else if (c === "<" && !inLink) {
      const auto = /^<((?:https?:\/\/|mailto:)[^\s<>]*)>/i.exec(text.slice(i));
      const href = auto && safeUrl(auto[1]);
      if (href) {
        flush();
        link(parent, href, auto[1]);
        i += auto[0].length;
      } else {
        plain += c;
        i++;
      }
    } else if ((c === "h" || c === "H" || c === "m") && !inLink && !/[\p{L}\p{N}]/u.test(text[i - 1] ?? "")) {
      const bare = BARE_URL.exec(text.slice(i));
      const href = bare && safeUrl(bare[0]);
      if (href && bare[0].length > 8) {
        flush();
        link(parent, href, bare[0]);
        i += bare[0].length;
      } else {
        plain += c;
        i++;
      }
    } else if (c === "*" || c === "_" || (c === "~" && text[i + 1] === "~")) {
      const double = text[i + 1] === c;
      const marker = double ? c + c : c;
      const after = text[i + marker.length] ?? "";
      const opens = flanking(text, i, marker.length).opens;
      const end = opens ? closingDelimiter(text, i + marker.length, marker) : -1;
      if (end < 0 && !(opens && streaming && after !== c)) {
        plain += marker;
        i += marker.length;
        continue;
      }
      flush();
      const tag = c === "~" ? "del" : double ? "strong" : "em";
      renderInline(text.slice(i + marker.length, end < 0 ? text.length : end), el(tag, parent), end < 0, inLink);
      i = end < 0 ? text.length : end + marker.length;
    } else {
      plain += c;
      i++;
    }
  }
  flush();
}

function link(parent, href, text) {
  const anchor = el("a", parent, text);
  anchor.href = href;
  anchor.target = "_blank";
  anchor.rel = "noopener noreferrer nofollow";
  return anchor;
}

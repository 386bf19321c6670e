// bf-markdown.js: the markdown of a streamed answer, rendered safely while it streams.
//
// Why our own and not a library: the ones that render while text streams either put HTML strings
// through innerHTML (marked sanitizes nothing; deep-chat re-renders the whole message per token) or
// keep links unchecked (streaming-markdown lets `javascript:` through). This one is small, builds
// DOM nodes only (createElement, text nodes: model text never becomes markup), and keeps the work
// per delta small: blocks the text has moved past are rendered once and never touched again; only
// the last, still open block is rendered anew, and an open code fence is only appended to.
//
// The subset is what models write: paragraphs, ATX headings, lists (nested), block quotes, fenced
// code, GFM tables, thematic breaks; emphasis, strong, strike-through, inline code, links,
// autolinks, bare URLs, images. Raw HTML is text. Links and images only to http:, https: or mailto:
// (anything else, `javascript:` included, stays as the text the model wrote). A single newline in
// a paragraph is a line break, as chat answers mean it.

const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);

const FENCE = /^( {0,3})(`{3,}|~{3,})(.*)$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const ITEM = /^( {0,3})(?:([-*+])|(\d{1,9})([.)]))(?:([ \t]+)(.*)|$)/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const DELIMITER_ROW = /^ {0,3}\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;
const PARTIAL_DELIMITER_ROW = /^ {0,3}\|?[ \t]*:?-*:?[ \t]*(?:\|[ \t]*:?-*:?[ \t]*)*\|?[ \t]*$/;
const BLANK = /^[ \t]*$/;
const PUNCTUATION = /[!-/:-@[-`{-~]/;
const BARE_URL = /^(?:https?:\/\/|mailto:)[^\s<>"]*[^\s<>".,:;!?'")\]*_~]/i;

/** The URL as a link or image target, or null when it is not http(s) or mailto (or not a URL). */
export function safeUrl(raw) {
  try {
    const url = new URL(String(raw).trim());
    return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
  } catch {
    return null; // relative, or not a URL at all
  }
}

function indentOf(line) {
  return line.length - line.replace(/^ +/, "").length;
}

function isTableRow(line) {
  return line.includes("|") && !BLANK.test(line);
}

function cells(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  const out = [];
  let cell = "";
  for (let i = 0; i < row.length; i++) {
    if (row[i] === "\\" && row[i + 1] === "|") {
      cell += "|";
      i++;
    } else if (row[i] === "|") {
      out.push(cell.trim());
      cell = "";
    } else cell += row[i];
  }
  out.push(cell.trim());
  return out;
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
}

function itemOf(line) {
  const match = ITEM.exec(line);
  if (match === null || RULE.test(line)) return null;
  const [, indent, bullet, number, delimiter, spacing = " ", rest = ""] = match;
  const marker = bullet ?? number + delimiter;
  const gap = spacing.length > 4 ? 1 : spacing.length; // a wide gap starts indented code: count one space
  return {
    ordered: bullet === undefined,
    kind: bullet ?? delimiter,
    start: number === undefined ? 1 : Number(number),
    contentIndent: indent.length + marker.length + gap,
    first: (spacing.length > 4 ? spacing.slice(1) : "") + rest,
  };
}

/**
 * Split lines into blocks: {kind, from, to} (line indexes, `to` exclusive) plus what each kind
 * needs. `streaming` says the text may go on: a lone table header (or a header and a half-written
 * delimiter row) at the end is taken for the table it is becoming, so it does not show as a
 * paragraph first and then jump.
 */
export function parseBlocks(lines, streaming = false) {
  const blocks = [];
  let i = 0;
  const n = lines.length;
  while (i < n) {
    const line = lines[i];
    if (BLANK.test(line)) {
      i++;
      continue;
    }
    let match;
    if ((match = FENCE.exec(line)) && !(match[2][0] === "`" && match[3].includes("`"))) {
      const [, indent, fence, info] = match;
      let j = i + 1;
      let closed = false;
      for (; j < n; j++) {
        if (closesFence(lines[j], fence)) {
          closed = true;
          break;
        }
      }
      blocks.push({ kind: "code", from: i, to: closed ? j + 1 : n, closed, indent: indent.length, fence, info: info.trim() });
      i = closed ? j + 1 : n;
    } else if ((match = HEADING.exec(line))) {
      blocks.push({ kind: "heading", from: i, to: i + 1, level: match[1].length, text: match[2] ?? "" });
      i++;
    } else if (RULE.test(line)) {
      blocks.push({ kind: "rule", from: i, to: i + 1 });
      i++;
    } else if (QUOTE.test(line)) {
      let j = i;
      const inner = [];
      while (j < n && !BLANK.test(lines[j]) && (QUOTE.test(lines[j]) || (j > i && !startsBlock(lines[j])))) {
        const quoted = QUOTE.exec(lines[j]);
        inner.push(quoted ? quoted[1] : lines[j]);
        j++;
      }
      blocks.push({ kind: "quote", from: i, to: j, lines: inner });
      i = j;
    } else if (itemOf(line)) {
      const list = parseList(lines, i);
      blocks.push(list);
      i = list.to;
    } else if (isTableRow(line) && i + 1 < n && DELIMITER_ROW.test(lines[i + 1]) && lines[i + 1].includes("-") &&
               cells(lines[i + 1]).length === cells(line).length) {
      let j = i + 2;
      while (j < n && isTableRow(lines[j]) && !startsBlock(lines[j])) j++;
      blocks.push({ kind: "table", from: i, to: j, header: line, delimiter: lines[i + 1], rows: lines.slice(i + 2, j) });
      i = j;
    } else if (streaming && line.trimStart().startsWith("|") &&
               (i === n - 1 || (i === n - 2 && PARTIAL_DELIMITER_ROW.test(lines[i + 1])))) {
      blocks.push({ kind: "table", from: i, to: n, header: line, delimiter: "", rows: [], provisional: true });
      i = n;
    } else {
      let j = i + 1;
      while (j < n && !BLANK.test(lines[j]) && !startsParagraphBreak(lines, j)) j++;
      blocks.push({ kind: "paragraph", from: i, to: j, text: lines.slice(i, j).map((l) => l.trim()).join("\n") });
      i = j;
    }
  }
  return blocks;
}

/** What may interrupt a paragraph: any block start but an ordered list not starting at 1 (as CommonMark). */
function startsParagraphBreak(lines, j) {
  const line = lines[j];
  if (FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line)) return true;
  const item = itemOf(line);
  if (item && item.first.trim() !== "" && (!item.ordered || item.start === 1)) return true;
  return isTableRow(line) && line.trimStart().startsWith("|") && j + 1 < lines.length && DELIMITER_ROW.test(lines[j + 1]) &&
    lines[j + 1].includes("-");
}

function parseList(lines, from) {
  const head = itemOf(lines[from]);
  const items = [];
  let loose = false;
  let i = from;
  const n = lines.length;
  while (i < n) {
    const item = itemOf(lines[i]);
    if (item === null || item.ordered !== head.ordered || item.kind !== head.kind) break;
    const body = [item.first];
    let j = i + 1;
    let sawBlank = false;
    while (j < n) {
      const line = lines[j];
      if (BLANK.test(line)) {
        let k = j;
        while (k < n && BLANK.test(lines[k])) k++;
        if (k < n && indentOf(lines[k]) >= item.contentIndent) {
          for (; j < k; j++) body.push("");
          sawBlank = true;
          continue;
        }
        break;
      }
      if (indentOf(line) >= item.contentIndent) body.push(line.slice(item.contentIndent));
      else if (itemOf(line) || startsBlock(line)) break;
      else body.push(line.trim()); // a lazy continuation of the item's paragraph
      j++;
    }
    if (sawBlank && body.some((l, index) => index > 0 && l !== "")) loose = true;
    items.push({ from: i, to: j, lines: body });
    let k = j;
    while (k < n && BLANK.test(lines[k])) k++;
    const next = k < n ? itemOf(lines[k]) : null;
    if (next && next.ordered === head.ordered && next.kind === head.kind && indentOf(lines[k]) < item.contentIndent) {
      if (k > j) loose = true;
      i = k;
    } else {
      i = j;
      break;
    }
  }
  return { kind: "list", from, to: i, ordered: head.ordered, start: head.start, loose, items };
}

// ---- inline ------------------------------------------------------------------------------------

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
    if (text.startsWith(marker, i) && i > from && !/\s/.test(text[i - 1])) {
      if (marker.length === 1 && text[i + 1] === marker) {
        i++; // part of a double run: not this single marker's closer
        continue;
      }
      if (marker === "_" && /[\p{L}\p{N}]/u.test(text[i + 1] ?? "")) continue;
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
      const before = text[i - 1] ?? "";
      const opens = after !== "" && !/\s/.test(after) && !(c === "_" && /[\p{L}\p{N}]/u.test(before));
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

// ---- blocks to DOM -----------------------------------------------------------------------------

function closesFence(line, fence) {
  const close = /^ {0,3}(`{3,}|~{3,})[ \t]*$/.exec(line);
  return close !== null && close[1][0] === fence[0] && close[1].length >= fence.length;
}

function codeText(block, lines, streaming) {
  const body = lines.slice(block.from + 1, block.closed ? block.to - 1 : block.to);
  // A last line that may yet become the closing fence is held back, so it never shows and vanishes.
  if (streaming && !block.closed && body.length && new RegExp(`^ {0,3}\\${block.fence[0]}*$`).test(body.at(-1))) body.pop();
  const strip = new RegExp(`^ {0,${block.indent}}`);
  return body.map((line) => line.replace(strip, "")).join("\n");
}

function renderBlock(block, lines, streaming) {
  switch (block.kind) {
    case "heading": {
      const heading = document.createElement(`h${block.level}`);
      renderInline(block.text, heading, streaming);
      return heading;
    }
    case "rule":
      return document.createElement("hr");
    case "code": {
      const pre = document.createElement("pre");
      pre.setAttribute("part", "code-block");
      const code = el("code", pre);
      const language = /^[\w+#.-]+/.exec(block.info)?.[0];
      if (language) {
        code.className = `language-${language}`;
        pre.dataset.language = language;
      }
      code.append(document.createTextNode(codeText(block, lines, streaming)));
      return pre;
    }
    case "quote": {
      const quote = document.createElement("blockquote");
      renderBlocks(parseBlocks(block.lines, streaming), block.lines, quote, streaming);
      return quote;
    }
    case "list": {
      const list = document.createElement(block.ordered ? "ol" : "ul");
      if (block.ordered && block.start !== 1) list.start = block.start;
      block.items.forEach((item, index) => {
        const li = el("li", list);
        const inner = parseBlocks(item.lines, streaming);
        const last = streaming && index === block.items.length - 1;
        if (!block.loose && inner.length && inner[0].kind === "paragraph") {
          renderInline(inner[0].text, li, last && inner.length === 1);
          renderBlocks(inner.slice(1), item.lines, li, last);
        } else renderBlocks(inner, item.lines, li, last);
      });
      return list;
    }
    case "table":
      return renderTable(block, streaming);
    default: {
      const paragraph = document.createElement("p");
      renderInline(block.text, paragraph, streaming);
      return paragraph;
    }
  }
}

function renderTable(block, streaming) {
  const wrap = document.createElement("div");
  wrap.className = "table";
  wrap.setAttribute("part", "table");
  const table = el("table", wrap);
  const heads = cells(block.header);
  const aligns = block.delimiter
    ? cells(block.delimiter).map((d) => (d.startsWith(":") && d.endsWith(":") ? "center" : d.endsWith(":") ? "right" : d.startsWith(":") ? "left" : ""))
    : [];
  const headRow = el("tr", el("thead", table));
  heads.forEach((text, index) => {
    if (block.provisional && index === heads.length - 1 && text === "") return; // the row's closing pipe
    const th = el("th", headRow);
    if (aligns[index]) th.style.textAlign = aligns[index];
    renderInline(text, th, streaming && block.provisional);
  });
  if (block.rows.length) {
    const body = el("tbody", table);
    block.rows.forEach((line, rowIndex) => {
      const tr = el("tr", body);
      const row = cells(line);
      const last = streaming && rowIndex === block.rows.length - 1;
      heads.forEach((_, index) => {
        const td = el("td", tr);
        if (aligns[index]) td.style.textAlign = aligns[index];
        renderInline(row[index] ?? "", td, last);
      });
    });
  }
  return wrap;
}

function renderBlocks(blocks, lines, parent, streaming) {
  blocks.forEach((block, index) => parent.append(renderBlock(block, lines, streaming && index === blocks.length - 1)));
}

/** Render a whole, finished text at once (for text that does not stream). */
export function renderMarkdown(text, parent) {
  const lines = String(text).split("\n");
  renderBlocks(parseBlocks(lines), lines, parent, false);
}

/**
 * Whether `next` is `previous` with more text after it. Compared at its two ends only: a full
 * startsWith costs time in proportion to the answer on every delta (0.4 ms per delta at 20,000
 * tokens in Chromium). The text a stream's client gives only ever grows, or is replaced by a
 * snapshot's whole text, which differs at its start or where the old one ended.
 */
function grows(previous, next) {
  const n = previous.length;
  if (next.length < n) return false;
  const k = Math.min(n, 256);
  return next.slice(0, k) === previous.slice(0, k) && next.slice(n - k, n) === previous.slice(n - k);
}

// ---- the streaming view ------------------------------------------------------------------------

/**
 * The rendered answer in `root`, kept up to date with `update(text)` as the text grows.
 *
 * The text is split where it is certain: blocks that a later complete line has closed are
 * committed (rendered once, left alone from then on); the rest, normally one block, is rendered
 * anew on each update, except an open code fence, which is only appended to. A text that is not
 * the previous one grown (a snapshot replaced it) starts the view over.
 */
export class MarkdownView {
  constructor(root) {
    this.root = root;
    this.reset();
  }

  reset() {
    this.root.replaceChildren();
    this.text = "";
    this.committed = 0; // characters of the text covered by committed blocks
    this.open = []; // the nodes of the open part
    this.fence = null; // {at, node, shown}: the open part's first block, a code fence, kept across updates
    this.done = false;
  }

  /** Show `text`, the whole answer so far; `done` once it is complete (everything is committed). */
  update(text, done = false) {
    text = String(text);
    if (!grows(this.text, text) || this.done) this.reset();
    if (text === this.text && !done) return;
    this.text = text;
    const tail = text.slice(this.committed);
    if (done) {
      this._commitAll(tail);
      this.done = true;
      return;
    }
    if (this._growFence(text)) return;
    const cut = tail.lastIndexOf("\n");
    if (cut >= 0) {
      const complete = tail.slice(0, cut).split("\n");
      const blocks = parseBlocks(complete, true);
      if (blocks.length > 1) this._commit(blocks.slice(0, -1), complete, blocks.at(-1).from);
    }
    this._renderOpen(text.slice(this.committed));
  }

  /**
   * The open part is a code fence that this text does not close: append what is new to it, reading
   * only the text added since the last update (a long code block costs the same per delta as a
   * short one). False when the slow path must decide (the fence may close, or is indented).
   */
  _growFence(text) {
    const fence = this.fence;
    if (fence === null || fence.at !== this.committed || fence.contentStart === null || fence.indent > 0) return false;
    const cut = text.lastIndexOf("\n");
    if (cut >= fence.checked) {
      const fresh = text.slice(fence.checked, cut).split("\n");
      if (fresh.some((line) => closesFence(line, fence.fence))) return false;
      fence.checked = cut + 1;
    }
    const partial = text.slice(fence.checked);
    const held = new RegExp(`^ {0,3}\\${fence.fence[0]}*$`).test(partial); // may become the closing fence
    const content = held ? text.slice(fence.contentStart, Math.max(fence.contentStart, fence.checked - 1)) : text.slice(fence.contentStart);
    const data = fence.node.firstChild.firstChild;
    if (content.length >= data.length) data.appendData(content.slice(data.length));
    else data.data = content;
    return true;
  }

  _commitAll(tail) {
    const lines = tail.split("\n");
    const blocks = parseBlocks(lines, false);
    this._commit(blocks, lines, lines.length);
    this._clearOpen();
  }

  _commit(blocks, lines, untilLine) {
    const nodes = blocks.map((block, index) => {
      const whole = this.fence?.contentStart !== null; // made once its opening line (and language) was whole
      if (index === 0 && block.kind === "code" && this.fence?.at === this.committed && whole) {
        const node = this.fence.node; // the open fence, now closed: the same node, its text made exact
        const text = codeText(block, lines, false);
        if (node.firstChild.firstChild.data !== text) node.firstChild.firstChild.data = text;
        this.open = this.open.filter((open) => open !== node);
        this.fence = null;
        return node;
      }
      return renderBlock(block, lines, false);
    });
    const first = this.open[0] ?? null;
    for (const node of nodes) this.root.insertBefore(node, first);
    this.committed += lines.slice(0, untilLine).reduce((sum, line) => sum + line.length + 1, 0);
  }

  _clearOpen() {
    for (const node of this.open) node.remove();
    this.open = [];
    this.fence = null;
  }

  /** Keep what _growFence needs of the open part's code fence, as this tail shows it. */
  _trackFence(block, tail, node) {
    const opened = tail.indexOf("\n"); // its text starts once its opening line is whole
    this.fence = {
      at: this.committed,
      node,
      fence: block.fence,
      indent: block.indent,
      contentStart: !block.closed && opened >= 0 ? this.committed + opened + 1 : null,
      checked: this.committed + tail.lastIndexOf("\n") + 1, // the lines before it do not close the fence
    };
  }

  _renderOpen(tail) {
    const lines = tail.split("\n");
    const blocks = parseBlocks(lines, true);
    const first = blocks[0];
    const reuse = this.fence?.at === this.committed && this.fence.contentStart !== null; // its opening line was whole
    if (first?.kind === "code" && !first.closed && blocks.length === 1 && reuse) {
      const text = codeText(first, lines, true); // the fence grows: append what is new, nothing else moves
      const data = this.fence.node.firstChild.firstChild;
      if (text.startsWith(data.data)) data.appendData(text.slice(data.data.length));
      else data.data = text;
      this._trackFence(first, tail, this.fence.node);
      return;
    }
    this._clearOpen();
    blocks.forEach((block, index) => {
      const node = renderBlock(block, lines, index === blocks.length - 1);
      this.root.append(node);
      this.open.push(node);
      if (index === 0 && block.kind === "code") this._trackFence(block, tail, node);
    });
  }
}

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
//
// Three modules: bf-markdown-blocks.js finds the blocks, bf-markdown-inline.js renders the spans in
// them, this one renders blocks and keeps the streaming view.

import { cells, closesFence, parseBlocks } from "./bf-markdown-blocks.js";
import { renderInline, safeUrl } from "./bf-markdown-inline.js";

export { parseBlocks, renderInline, safeUrl };

function el(tag, parent, text) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (parent) parent.append(node);
  return node;
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

// bf-markdown-blocks.js: the blocks of <bf-chat>'s markdown (paragraphs, headings, lists, quotes,
// code fences, tables, rules), found line by line. Part of bf-markdown.js, which renders them.

const FENCE = /^( {0,3})(`{3,}|~{3,})(.*)$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const ITEM = /^( {0,3})(?:([-*+])|(\d{1,9})([.)]))(?:([ \t]+)(.*)|$)/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const DELIMITER_ROW = /^ {0,3}\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;
const PARTIAL_DELIMITER_ROW = /^ {0,3}\|?[ \t]*:?-*:?[ \t]*(?:\|[ \t]*:?-*:?[ \t]*)*\|?[ \t]*$/;
const BLANK = /^[ \t]*$/;

export function closesFence(line, fence) {
  const close = /^ {0,3}(`{3,}|~{3,})[ \t]*$/.exec(line);
  return close !== null && close[1][0] === fence[0] && close[1].length >= fence.length;
}

function indentOf(line) {
  return line.length - line.replace(/^ +/, "").length;
}

function isTableRow(line) {
  return line.includes("|") && !BLANK.test(line);
}

export function cells(line) {
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

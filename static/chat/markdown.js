/* A small, safe Markdown renderer: block parsing straight into DOM nodes (inline parsing is in
 * markdown-inline.js).
 *
 * Supports paragraphs, headings, **bold**, *italic*, ~~strike~~, `code`, fenced code blocks
 * (highlighted once complete, highlight.js), bullet and numbered lists (nested), block quotes,
 * rules, simple tables and links (http/https only, rel=noopener). Images are shown as links, never
 * loaded. No HTML from the source is ever parsed.
 *
 * The top-level parse is memoryless: from the start of a block, what follows renders the same
 * whatever came before. renderGrowing() uses that for text that is still being written: it says
 * which leading blocks can no longer change, so a caller keeps them and renders only the rest.
 */
import { highlightInto } from "./highlight.js";
import { MAX_DEPTH, el, inline, inlineLines, safeUrl } from "./markdown-inline.js";

export { safeUrl };
export { highlightsSettled } from "./highlight.js";

const FENCE = /^( {0,3})(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const FENCE_CLOSE = /^ {0,3}(`{3,}|~{3,})\s*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const ITEM = /^( *)([-*+]|\d{1,9}[.)])(?:[ \t]+(.*))?$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const TABLE_SEP = /^ *\|? *:?-+:? *(\| *:?-+:? *)*\|? *$/;

function indentOf(line) {
  return /^ */.exec(line)[0].length;
}

function isBlank(line) {
  return !line || /^\s*$/.test(line);
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
}

function splitRow(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  const cells = [];
  let cur = "";
  for (let i = 0; i < row.length; i++) {
    if (row[i] === "\\" && row[i + 1] === "|") { cur += "|"; i++; continue; }
    if (row[i] === "|") { cells.push(cur.trim()); cur = ""; continue; }
    cur += row[i];
  }
  cells.push(cur.trim());
  return cells;
}

/* `complete`: its closing fence has arrived (or the text is finished): then it is highlighted. */
function codeBlock(lang, text, complete) {
  const wrap = el("div", "code-block");
  const head = el("div", "code-head");
  const label = el("span", "code-lang");
  label.textContent = lang || "code";
  head.appendChild(label);
  const copy = el("button", "code-copy");
  copy.type = "button";
  copy.dataset.copy = "code";
  copy.textContent = "Copy";
  head.appendChild(copy);
  const pre = el("pre");
  pre.tabIndex = 0; // a long line scrolls sideways: keyboard users can reach and scroll it
  const code = el("code");
  if (lang) code.dataset.lang = lang;
  code.textContent = text;
  if (complete) highlightInto(code, lang, text);
  pre.appendChild(code);
  wrap.appendChild(head);
  wrap.appendChild(pre);
  return wrap;
}

/* One table row; `aligns` are classes from the separator line (the page allows no inline styles). */
function tableRow(tag, cells, aligns, depth) {
  const row = el("tr");
  cells.forEach(function (cell, n) {
    const node = el(tag, aligns[n] ? "align-" + aligns[n] : "");
    inline(cell, node, depth);
    row.appendChild(node);
  });
  return row;
}

/* A table starting at `start` (header, separator, rows); returns the index after it. */
function parseTable(lines, start, parent, depth) {
  const header = splitRow(lines[start]);
  const aligns = splitRow(lines[start + 1]).map(function (c) {
    return c.endsWith(":") ? (c.startsWith(":") ? "center" : "right") : (c.startsWith(":") ? "left" : "");
  });
  const wrap = el("div", "table-wrap");
  const table = el("table");
  const thead = el("thead");
  thead.appendChild(tableRow("th", header, aligns, depth));
  table.appendChild(thead);
  const tbody = el("tbody");
  let i = start + 2;
  while (i < lines.length && !isBlank(lines[i]) && lines[i].includes("|")) {
    tbody.appendChild(tableRow("td", splitRow(lines[i]).slice(0, Math.max(header.length, 1)), aligns, depth));
    i++;
  }
  table.appendChild(tbody);
  wrap.appendChild(table);
  parent.appendChild(wrap);
  return i;
}

function parseList(lines, start, parent, depth, atEnd) {
  const first = ITEM.exec(lines[start]);
  const baseIndent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const list = el(ordered ? "ol" : "ul");
  if (ordered) {
    const n = parseInt(first[2], 10);
    if (n !== 1) list.start = n;
  }
  let i = start;
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || Math.abs(m[1].length - baseIndent) > 1 || /\d/.test(m[2]) !== ordered || RULE.test(lines[i])) break;
    const contentIndent = m[1].length + m[2].length + 1;
    const body = [m[3] || ""];
    i++;
    let lastBlank = false;
    while (i < lines.length) {
      const line = lines[i];
      if (isBlank(line)) {
        let j = i + 1;
        while (j < lines.length && isBlank(lines[j])) j++;
        if (j < lines.length && indentOf(lines[j]) > baseIndent + 1) {
          body.push("");
          i++;
          lastBlank = true;
          continue;
        }
        break;
      }
      const ind = indentOf(line);
      if (ind > baseIndent + 1) {
        body.push(line.slice(Math.min(ind, contentIndent)));
        i++;
        lastBlank = false;
        continue;
      }
      if (lastBlank || startsBlock(line)) break;
      body.push(line.trim()); // lazy continuation of the item's paragraph
      i++;
    }
    const li = el("li");
    blocks(body, li, depth + 1, atEnd && i === lines.length);
    list.appendChild(li);
    // blank lines between items of the same list
    let j = i;
    while (j < lines.length && isBlank(lines[j])) j++;
    if (j > i) {
      const next = j < lines.length ? ITEM.exec(lines[j]) : null;
      if (next && Math.abs(next[1].length - baseIndent) <= 1 && /\d/.test(next[2]) === ordered) {
        list.classList.add("loose");
        i = j;
      } else {
        break;
      }
    }
  }
  parent.appendChild(list);
  return i;
}

function startsList(lines, i) {
  const m = ITEM.exec(lines[i]);
  if (!m) return false;
  return (m[3] || "").trim() !== "" || (i + 1 < lines.length && indentOf(lines[i + 1]) > indentOf(lines[i]));
}

function startsTable(lines, i) {
  return lines[i].includes("|") && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1]) && lines[i + 1].includes("-");
}

function settle(marks, end) {
  const mark = marks[marks.length - 1];
  mark.settled = true;
  mark.end = end;
}

/* Render `lines` into `parent`. `atEnd`: these lines reach the end of a text that may still grow
 * (a block running to their end may be unfinished). `marks`, at the top level only, receives one
 * {start, end, nodes, settled} per block: its first line, the parent's child count before it, and
 * whether it is settled by itself, `end` then being the line after it (a closed fence, a heading,
 * a rule: once that line exists, nothing that follows can change the block). */
function blocks(lines, parent, depth, atEnd, marks) {
  if (depth > MAX_DEPTH) {
    const p = el("p");
    p.textContent = lines.join("\n");
    parent.appendChild(p);
    return;
  }
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (isBlank(line)) { i++; continue; }
    if (marks) marks.push({ start: i, end: lines.length, nodes: parent.childNodes.length, settled: false });
    let m;
    if ((m = FENCE.exec(line))) {
      const indent = m[1].length;
      const marker = m[2];
      const body = [];
      let closed = false;
      i++;
      while (i < lines.length) {
        const close = FENCE_CLOSE.exec(lines[i]);
        if (close && close[1][0] === marker[0] && close[1].length >= marker.length) { i++; closed = true; break; }
        body.push(lines[i].slice(Math.min(indent, indentOf(lines[i]))));
        i++;
      }
      // complete unless it runs to the end of a text still being written (a closing fence on the
      // last, unfinished line may yet become "```x", which does not close)
      parent.appendChild(codeBlock(m[3], body.join("\n"), !(atEnd && i === lines.length)));
      if (marks && closed) settle(marks, i);
      continue;
    }
    if ((m = HEADING.exec(line))) {
      const h = el("h" + m[1].length);
      inline(m[2] || "", h, depth);
      parent.appendChild(h);
      i++;
      if (marks) settle(marks, i);
      continue;
    }
    if (RULE.test(line)) {
      parent.appendChild(el("hr"));
      i++;
      if (marks) settle(marks, i);
      continue;
    }
    if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && !isBlank(lines[i])) {
        const q = QUOTE.exec(lines[i]);
        body.push(q ? q[1] : lines[i]);
        i++;
      }
      const bq = el("blockquote");
      blocks(body, bq, depth + 1, atEnd && i === lines.length);
      parent.appendChild(bq);
      continue;
    }
    if (startsList(lines, i)) {
      i = parseList(lines, i, parent, depth, atEnd);
      continue;
    }
    if (startsTable(lines, i)) {
      i = parseTable(lines, i, parent, depth);
      continue;
    }
    // paragraph
    const para = [line];
    i++;
    while (i < lines.length && !isBlank(lines[i]) && !startsBlock(lines[i])) {
      if (lines[i].includes("|") && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1])) break;
      para.push(lines[i]);
      i++;
    }
    const p = el("p");
    inlineLines(para, p, depth);
    parent.appendChild(p);
  }
}

function splitLines(source) {
  return String(source || "").replace(/\r\n?/g, "\n").replace(/\t/g, "    ").split("\n");
}

/* Render finished Markdown source into a DocumentFragment (no HTML is ever parsed). */
export function render(source) {
  const frag = document.createDocumentFragment();
  blocks(splitLines(source), frag, 0, false);
  return frag;
}

/* Render Markdown that is still being written. Returns {frag, settledNodes, settledChars}: the
 * first `settledNodes` nodes of `frag` come from the first `settledChars` characters of `source`
 * and are exactly what render() gives for them whatever text is appended later, so a caller may
 * keep them and next time render only source.slice(settledChars). Code blocks still open are
 * not highlighted.
 *
 * A block is settled once the parser's decision where it ends can no longer change: lines before
 * the last (unfinished) one never change, and a block's end is decided by at most the first line
 * of the next block and the one after it (lists look across blank lines to the next one, a
 * paragraph line followed by a table separator starts a table). A closed fence, a heading or a
 * rule is settled as soon as its last line is finished. */
export function renderGrowing(source) {
  const frag = document.createDocumentFragment();
  const lines = splitLines(source);
  const marks = [];
  blocks(lines, frag, 0, true, marks);
  const last = lines.length - 1; // the unfinished line
  let n = 0;
  let line = 0;
  while (n < marks.length) {
    const mark = marks[n];
    const next = marks[n + 1];
    const settled = mark.settled ? mark.end <= last : next !== undefined && next.start + 1 < last;
    if (!settled) break;
    line = next ? next.start : mark.end;
    n++;
  }
  const settledNodes = n < marks.length ? marks[n].nodes : frag.childNodes.length;
  return { frag, settledNodes, settledChars: offsetOfLine(source, line) };
}

/* The index in `source` where line `n` starts (breaks: \r\n, \r or \n, as splitLines reads them). */
function offsetOfLine(source, n) {
  let at = 0;
  for (let k = 0; k < n; k++) {
    const lf = source.indexOf("\n", at);
    const cr = source.indexOf("\r", at);
    if (cr !== -1 && (lf === -1 || cr < lf)) at = source[cr + 1] === "\n" ? cr + 2 : cr + 1;
    else at = lf + 1;
  }
  return at;
}

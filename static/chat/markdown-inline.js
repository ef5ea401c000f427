/* Inline Markdown: **bold**, *italic*, ~~strike~~, `code`, links and bare http(s) URLs.
 *
 * Text is parsed straight into DOM nodes; it only ever reaches the page through
 * createTextNode / textContent, so no HTML in the source is ever interpreted.
 */
export const MAX_DEPTH = 12;
const PUNCT = /[!"#$%&'()*+,\-./:;<=>?@[\\\]^_`{|}~]/;

export function el(tag, cls) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  return node;
}

/* An absolute http(s) URL, normalised, or null for anything else (javascript:, relative, ...). */
export function safeUrl(raw) {
  const href = (raw || "").trim().replace(/^<|>$/g, "");
  if (!/^https?:\/\//i.test(href)) return null;
  try {
    const url = new URL(href);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch (e) {
    return null;
  }
}

function link(href, parent) {
  const a = el("a");
  a.href = href;
  a.target = "_blank";
  a.rel = "noopener noreferrer nofollow";
  parent.appendChild(a);
  return a;
}

function isSpace(ch) {
  return ch === undefined || ch === "" || /\s/.test(ch);
}

function isWordChar(ch) {
  return ch !== undefined && /[\p{L}\p{N}]/u.test(ch);
}

/* Index of the closing delimiter for emphasis opened at `from`, or -1. */
function findCloser(text, delim, from) {
  let idx = from;
  while ((idx = text.indexOf(delim, idx)) !== -1) {
    const before = text[idx - 1];
    const after = text[idx + delim.length];
    if (delim.length === 1 && after === delim) {
      idx += 2; // part of a ** / __ run: not ours
      continue;
    }
    if (idx > from && !isSpace(before) && !(delim[0] === "_" && isWordChar(after))) return idx;
    idx += delim.length;
  }
  return -1;
}

/* The index that closes the bracket at `open` (`[`...`]` or `(`...`)`), honouring nesting and
 * escapes, or -1. A link target (parentheses) may not span lines. */
function findClosing(text, open) {
  const opener = text[open];
  const closer = opener === "[" ? "]" : ")";
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    const ch = text[i];
    if (ch === "\\") { i++; continue; }
    if (ch === "\n" && opener === "(") return -1;
    if (ch === opener) depth++;
    else if (ch === closer && --depth === 0) return i;
  }
  return -1;
}

export function inline(text, parent, depth) {
  depth = depth || 0;
  let buf = "";
  const flush = function () {
    if (buf) { parent.appendChild(document.createTextNode(buf)); buf = ""; }
  };
  if (depth > MAX_DEPTH) { parent.appendChild(document.createTextNode(text)); return; }
  let i = 0;
  while (i < text.length) {
    const ch = text[i];
    const rest = text.slice(i);
    // backslash escapes
    if (ch === "\\" && i + 1 < text.length && PUNCT.test(text[i + 1])) {
      buf += text[i + 1]; i += 2; continue;
    }
    // code spans
    if (ch === "`") {
      const run = /^`+/.exec(rest)[0];
      let close = text.indexOf(run, i + run.length);
      while (close !== -1 && text[close + run.length] === "`") close = text.indexOf(run, close + run.length + 1);
      if (close !== -1) {
        flush();
        let code = text.slice(i + run.length, close);
        if (code.length > 2 && code[0] === " " && code[code.length - 1] === " ") code = code.slice(1, -1);
        const c = el("code");
        c.textContent = code;
        parent.appendChild(c);
        i = close + run.length;
        continue;
      }
      buf += run; i += run.length; continue;
    }
    // links and images: [label](url) / ![alt](url)
    if (ch === "[" || (ch === "!" && text[i + 1] === "[")) {
      const open = ch === "!" ? i + 1 : i;
      const close = findClosing(text, open);
      if (close !== -1 && text[close + 1] === "(") {
        const end = findClosing(text, close + 1);
        if (end !== -1) {
          const target = text.slice(close + 2, end).trim().split(/\s+/)[0];
          const href = safeUrl(target);
          const label = text.slice(open + 1, close);
          flush();
          if (href) {
            const a = link(href, parent);
            if (ch === "!") a.textContent = label || href; else inline(label, a, depth + 1);
          } else {
            inline(label, parent, depth + 1); // unsafe or relative target: keep the words only
          }
          i = end + 1;
          continue;
        }
      }
    }
    // bare http(s) links
    if ((ch === "h" || ch === "H") && /^https?:\/\//i.test(rest) && !isWordChar(text[i - 1])) {
      const m = /^https?:\/\/[^\s<>"'`]+/i.exec(rest);
      let url = m ? m[0] : "";
      while (/[.,;:!?*_~)\]]$/.test(url)) {
        if (url.endsWith(")") && (url.match(/\(/g) || []).length >= (url.match(/\)/g) || []).length) break;
        url = url.slice(0, -1);
      }
      const href = safeUrl(url);
      if (href && /^https?:\/\/[^/]/i.test(url)) {
        flush();
        link(href, parent).textContent = url;
        i += url.length;
        continue;
      }
    }
    // strong / em / strike
    const double = rest.slice(0, 2);
    if (double === "**" || double === "__" || double === "~~") {
      const leftOk = !isSpace(text[i + 2]) && !(double === "__" && isWordChar(text[i - 1]));
      const close = leftOk ? findCloser(text, double, i + 2) : -1;
      if (close !== -1) {
        flush();
        const node = el(double === "~~" ? "del" : "strong");
        inline(text.slice(i + 2, close), node, depth + 1);
        parent.appendChild(node);
        i = close + 2;
        continue;
      }
      buf += double; i += 2; continue;
    }
    if (ch === "*" || ch === "_") {
      const leftOk = !isSpace(text[i + 1]) && !(ch === "_" && isWordChar(text[i - 1]));
      const close = leftOk ? findCloser(text, ch, i + 1) : -1;
      if (close !== -1) {
        flush();
        const node = el("em");
        inline(text.slice(i + 1, close), node, depth + 1);
        parent.appendChild(node);
        i = close + 1;
        continue;
      }
    }
    buf += ch;
    i++;
  }
  flush();
}

/* Inline text of several lines: single newlines become <br>. */
export function inlineLines(lines, parent, depth) {
  lines.forEach(function (line, n) {
    if (n > 0) parent.appendChild(el("br"));
    let text = line.replace(/^\s+/, "").replace(/\s+$/, "");
    if (n < lines.length - 1 && text.endsWith("\\")) text = text.slice(0, -1); // hard break marker
    inline(text, parent, depth);
  });
}

/* The chat page: conversations, streaming answers (EventSource), a small safe Markdown renderer.
 *
 * Safety rule for the whole file: text from users and models only ever reaches the page through
 * textContent / createTextNode. Elements are built with createElement; innerHTML is never used.
 */
(function () {
  "use strict";

  /* ================================================================================
   * Markdown: block and inline parsing straight into DOM nodes.
   * Supports paragraphs, headings, **bold**, *italic*, ~~strike~~, `code`, fenced code
   * blocks, bullet and numbered lists (nested), block quotes, rules, simple tables and
   * links (http/https only, rel=noopener). Images are shown as links, never loaded.
   * ============================================================================== */
  const Markdown = (function () {
    const MAX_DEPTH = 12;
    const FENCE = /^( {0,3})(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
    const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
    const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
    const ITEM = /^( *)([-*+]|\d{1,9}[.)])(?:[ \t]+(.*))?$/;
    const QUOTE = /^ {0,3}> ?(.*)$/;
    const TABLE_SEP = /^ *\|? *:?-+:? *(\| *:?-+:? *)*\|? *$/;
    const PUNCT = /[!"#$%&'()*+,\-./:;<=>?@[\\\]^_`{|}~]/;

    function el(tag, cls) {
      const node = document.createElement(tag);
      if (cls) node.className = cls;
      return node;
    }

    function safeUrl(raw) {
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

    /* Matching `]` for a `[` at `open`, honouring nesting and escapes. */
    function findBracket(text, open) {
      let depth = 0;
      for (let i = open; i < text.length; i++) {
        const ch = text[i];
        if (ch === "\\") { i++; continue; }
        if (ch === "[") depth++;
        else if (ch === "]" && --depth === 0) return i;
      }
      return -1;
    }

    /* Matching `)` for a `(` at `open` (URLs may contain balanced parentheses). */
    function findParen(text, open) {
      let depth = 0;
      for (let i = open; i < text.length; i++) {
        const ch = text[i];
        if (ch === "\\") { i++; continue; }
        if (ch === "\n") return -1;
        if (ch === "(") depth++;
        else if (ch === ")" && --depth === 0) return i;
      }
      return -1;
    }

    function inline(text, parent, depth) {
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
          const close = findBracket(text, open);
          if (close !== -1 && text[close + 1] === "(") {
            const end = findParen(text, close + 1);
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
    function inlineLines(lines, parent, depth) {
      lines.forEach(function (line, n) {
        if (n > 0) parent.appendChild(el("br"));
        let text = line.replace(/^\s+/, "").replace(/\s+$/, "");
        if (n < lines.length - 1 && text.endsWith("\\")) text = text.slice(0, -1); // hard break marker
        inline(text, parent, depth);
      });
    }

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

    function codeBlock(lang, text) {
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
      const code = el("code");
      if (lang) code.dataset.lang = lang;
      code.textContent = text;
      pre.appendChild(code);
      wrap.appendChild(head);
      wrap.appendChild(pre);
      return wrap;
    }

    function parseList(lines, start, parent, depth) {
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
        blocks(body, li, depth + 1);
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

    function blocks(lines, parent, depth) {
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
        let m;
        if ((m = FENCE.exec(line))) {
          const indent = m[1].length;
          const marker = m[2];
          const body = [];
          i++;
          while (i < lines.length) {
            const close = /^ {0,3}(`{3,}|~{3,})\s*$/.exec(lines[i]);
            if (close && close[1][0] === marker[0] && close[1].length >= marker.length) { i++; break; }
            body.push(lines[i].slice(Math.min(indent, indentOf(lines[i]))));
            i++;
          }
          parent.appendChild(codeBlock(m[3], body.join("\n")));
          continue;
        }
        if ((m = HEADING.exec(line))) {
          const h = el("h" + m[1].length);
          inline(m[2] || "", h, depth);
          parent.appendChild(h);
          i++;
          continue;
        }
        if (RULE.test(line)) {
          parent.appendChild(el("hr"));
          i++;
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
          blocks(body, bq, depth + 1);
          parent.appendChild(bq);
          continue;
        }
        if (ITEM.test(line) && (ITEM.exec(line)[3] || "").trim() !== "" || (ITEM.test(line) && i + 1 < lines.length && indentOf(lines[i + 1]) > indentOf(line))) {
          i = parseList(lines, i, parent, depth);
          continue;
        }
        if (line.includes("|") && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1]) && lines[i + 1].includes("-")) {
          const header = splitRow(line);
          const aligns = splitRow(lines[i + 1]).map(function (c) {
            return c.endsWith(":") ? (c.startsWith(":") ? "center" : "right") : (c.startsWith(":") ? "left" : "");
          });
          const wrap = el("div", "table-wrap");
          const table = el("table");
          const thead = el("thead");
          const tr = el("tr");
          header.forEach(function (cell, n) {
            const th = el("th");
            if (aligns[n]) th.style.textAlign = aligns[n];
            inline(cell, th, depth);
            tr.appendChild(th);
          });
          thead.appendChild(tr);
          table.appendChild(thead);
          const tbody = el("tbody");
          i += 2;
          while (i < lines.length && !isBlank(lines[i]) && lines[i].includes("|")) {
            const row = el("tr");
            splitRow(lines[i]).slice(0, Math.max(header.length, 1)).forEach(function (cell, n) {
              const td = el("td");
              if (aligns[n]) td.style.textAlign = aligns[n];
              inline(cell, td, depth);
              row.appendChild(td);
            });
            tbody.appendChild(row);
            i++;
          }
          table.appendChild(tbody);
          wrap.appendChild(table);
          parent.appendChild(wrap);
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

    /* Render Markdown source into a DocumentFragment (no HTML is ever parsed). */
    function render(source) {
      const frag = document.createDocumentFragment();
      const lines = String(source || "").replace(/\r\n?/g, "\n").replace(/\t/g, "    ").split("\n");
      blocks(lines, frag, 0);
      return frag;
    }

    return { render: render, safeUrl: safeUrl };
  })();

  window.ChatMarkdown = Markdown; // for tests and the curious

  /* ================================================================================
   * Small helpers
   * ============================================================================== */
  const $ = function (id) { return document.getElementById(id); };

  function h(tag, attrs) {
    const node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      const value = attrs[key];
      if (value === null || value === undefined || value === false) return;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    });
    for (let n = 2; n < arguments.length; n++) {
      const child = arguments[n];
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  const ICONS = {
    copy: "M8 8h10a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2H10a2 2 0 0 1-2-2zM16 8V6a2 2 0 0 0-2-2H6a2 2 0 0 0-2 2v8a2 2 0 0 0 2 2h2",
    check: "M5 12.5l4.5 4.5L19 7.5",
    bot: "M6 8h12M6 12h8M6 16h5",
    trash: "M4 7h16M10 11v6M14 11v6M6 7l1 12a2 2 0 0 0 2 2h6a2 2 0 0 0 2-2l1-12M9 7V4h6v3",
    alert: "M12 8v5M12 16.5v.5M10.3 3.9L2.4 18a2 2 0 0 0 1.7 3h15.8a2 2 0 0 0 1.7-3L13.7 3.9a2 2 0 0 0-3.4 0z",
  };

  function icon(name, size) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", String(size || 16));
    svg.setAttribute("height", String(size || 16));
    svg.setAttribute("aria-hidden", "true");
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", ICONS[name]);
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", "currentColor");
    path.setAttribute("stroke-width", name === "bot" ? "2.4" : "1.8");
    path.setAttribute("stroke-linecap", "round");
    path.setAttribute("stroke-linejoin", "round");
    svg.appendChild(path);
    return svg;
  }

  function csrfToken() {
    const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  /* Python counts characters in code points; JavaScript strings in UTF-16 units. */
  function codePoints(text) {
    let n = 0;
    for (const _ of text) n++; // eslint-disable-line no-unused-vars
    return n;
  }

  function formatNumber(n) {
    return Number(n).toLocaleString("en-US");
  }

  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      try { await navigator.clipboard.writeText(text); return true; } catch (e) { /* fall back */ }
    }
    const area = h("textarea", { class: "sr-only", readonly: true });
    area.value = text;
    document.body.appendChild(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    area.remove();
    return ok;
  }

  /* Brief feedback on a copy button: "Copied" (or the failure), then back to normal. */
  function flash(button, label) {
    const isText = button.classList.contains("code-copy");
    button.classList.add("copied");
    button.setAttribute("title", label);
    if (isText) button.textContent = label;
    else button.replaceChildren(icon(label === "Copied" ? "check" : "alert", 16));
    clearTimeout(button._flash);
    button._flash = setTimeout(function () {
      button.classList.remove("copied");
      button.setAttribute("title", "Copy");
      if (isText) button.textContent = "Copy";
      else button.replaceChildren(icon("copy", 16));
    }, 1500);
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, url, body) {
    const options = { method: method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    if (method !== "GET") options.headers["X-CSRFToken"] = csrfToken();
    let response;
    try {
      response = await fetch(url, options);
    } catch (e) {
      throw new ApiError(0, 0, "The server could not be reached. Check your connection and try again.");
    }
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (response.status === 401) {
      window.location.assign(loginUrl + "?next=" + encodeURIComponent(window.location.pathname));
    }
    if (!response.ok || !data || data.success === false) {
      const first = data && data.errors && data.errors[0];
      const message = first && first.message ? first.message : "Request failed (HTTP " + response.status + ").";
      throw new ApiError(response.status, first ? first.code : 0, message);
    }
    return data.result;
  }

  function describeError(err) {
    const hints = {
      409: "Wait for the current answer or stop it, then send again.",
      413: "Shorten the message, start a new chat, or lower max tokens.",
      429: "The server is busy. Try again in a moment.",
      503: "This model cannot answer right now.",
    };
    return { message: err.message, hint: hints[err.status] || "", status: err.status, code: err.code };
  }

  /* ================================================================================
   * State and elements
   * ============================================================================== */
  const body = document.body;
  const loginUrl = body.dataset.loginUrl || "/accounts/login/";
  const els = {
    sidebar: $("sidebar"), backdrop: $("backdrop"), menu: $("menu-btn"), sidebarClose: $("sidebar-close"),
    convList: $("conv-list"), convEmpty: $("conv-empty"), newChat: $("new-chat"), newChatMini: $("new-chat-mini"),
    brand: $("brand-link"), model: $("model-select"), title: $("topbar-title"),
    settingsBtn: $("settings-btn"), settings: $("settings"), systemPrompt: $("system-prompt"),
    maxTokens: $("max-tokens"), temperature: $("temperature"), limits: $("model-limits"),
    scroller: $("messages"), thread: $("thread"), empty: $("empty-state"), suggestions: $("suggestions"),
    jump: $("jump"), composer: $("composer"), prompt: $("prompt"), send: $("send"), stop: $("stop"),
    hintModel: $("hint-model"),
  };

  const state = {
    models: [],
    conversations: [],
    current: null, // the open conversation (JSON from the API) or null for a new chat
    views: new Map(), // message id -> MessageView
    stream: null, // {view, source, conversationId}
    sending: false,
    stick: true, // autoscroll while the reader is at the bottom
    loadToken: 0,
    activeId: null, // the conversation shown (or being opened) in the sidebar
  };

  const mobile = window.matchMedia("(max-width: 768px)");
  const finePointer = window.matchMedia("(pointer: fine)");

  /* ================================================================================
   * Messages
   * ============================================================================== */
  class MessageView {
    constructor(msg) {
      this.role = msg.role;
      this.id = msg.id || null;
      this.content = "";
      this.renderQueued = false;
      this.el = h("article", { class: "msg msg-" + msg.role, "data-testid": "message", "data-role": msg.role });
      this.contextNote = h("div", { class: "context-note", text: "Outside the model's context", hidden: true,
        title: "Older than what fits in the model's context window: the model no longer sees this message." });
      this.body = h("div", { class: "msg-body" }, this.contextNote);
      if (msg.role === "user") {
        this.contentEl = h("div", { class: "bubble", "data-testid": "message-content" });
        this.body.appendChild(this.contentEl);
        this.el.appendChild(this.body);
      } else {
        this.avatar = h("div", { class: "msg-avatar", "aria-hidden": "true" }, icon("bot", 16));
        this.contentEl = h("div", { class: "md", "data-testid": "message-content" });
        this.typing = h("div", { class: "typing", "aria-label": "Writing" }, h("span"), h("span"), h("span"));
        this.statusEl = h("div", { class: "msg-status", hidden: true });
        this.copyBtn = h("button", { type: "button", class: "msg-action", "data-testid": "copy", title: "Copy",
          "aria-label": "Copy answer" }, icon("copy", 16));
        this.statsEl = h("span", { class: "msg-stats", "data-testid": "stats" });
        this.badge = h("span", { class: "msg-badge", hidden: true });
        this.foot = h("div", { class: "msg-foot" }, this.copyBtn, this.badge, this.statsEl);
        this.body.append(this.contentEl, this.typing, this.statusEl, this.foot);
        this.el.append(this.avatar, this.body);
        this.copyBtn.addEventListener("click", () => {
          copyText(this.content).then((ok) => flash(this.copyBtn, ok ? "Copied" : "Copy failed"));
        });
      }
      this.update(msg);
    }

    update(msg) {
      if (msg.id) {
        this.id = msg.id;
        this.el.dataset.id = String(msg.id);
      }
      this.setInContext(msg.in_context !== false);
      this.content = msg.content || "";
      if (this.role === "assistant") {
        this.streamUrl = msg.stream_url || this.streamUrl;
        this.setStats(msg.completion_tokens, msg.time_to_first_token_ms, msg.tokens_per_second, msg.prompt_tokens);
        this.setState(msg.state || "done", msg.error);
      }
      this.render(); // saved text shows at once; streamed pieces are batched per frame
    }

    setInContext(inContext) {
      this.el.classList.toggle("out-of-context", !inContext);
      this.contextNote.hidden = inContext;
    }

    setContent(text) {
      this.content = text;
      this.queueRender();
    }

    append(piece) {
      this.content += piece;
      this.queueRender();
    }

    queueRender() {
      if (this.renderQueued) return;
      this.renderQueued = true;
      requestAnimationFrame(() => {
        this.renderQueued = false;
        this.render();
        autoscroll();
      });
    }

    render() {
      if (this.role === "user") {
        this.contentEl.textContent = this.content;
        return;
      }
      this.contentEl.replaceChildren(Markdown.render(this.content));
      this.typing.hidden = !(this.state === "streaming" && this.content === "");
      if (this.state === "streaming") this.placeCaret();
    }

    /* A pulsing dot after the last words while the answer is being written. */
    placeCaret() {
      let node = this.contentEl;
      while (node.lastElementChild && /^(OL|UL|LI|BLOCKQUOTE)$/.test(node.lastElementChild.tagName)) {
        node = node.lastElementChild;
      }
      const last = node.tagName === "LI" && !node.lastElementChild ? node : node.lastElementChild;
      if (last && /^(P|LI|H[1-6])$/.test(last.tagName)) last.appendChild(h("span", { class: "caret", "aria-hidden": "true" }));
    }

    setState(value, error) {
      const finished = this.state === "streaming" && value !== "streaming";
      this.state = value;
      if (finished) this.render(); // the final text and the final state appear together
      this.el.dataset.state = value;
      this.el.classList.toggle("streaming", value === "streaming");
      this.typing.hidden = !(value === "streaming" && this.content === "");
      this.foot.hidden = value === "streaming";
      if (value === "error") {
        this.showStatus("error", error || "Something went wrong while generating this answer.");
      } else {
        this.statusEl.hidden = true;
      }
      this.badge.hidden = value !== "stopped";
      this.badge.textContent = this.content ? "Stopped" : "Stopped before any text was written";
      this.copyBtn.hidden = !this.content;
    }

    showStatus(kind, text, hint) {
      const s = this.statusEl;
      s.replaceChildren();
      s.className = "msg-status msg-status-" + kind;
      s.setAttribute("role", kind === "error" ? "alert" : "status");
      if (kind === "error") s.dataset.testid = "message-error";
      else delete s.dataset.testid;
      if (kind === "error") s.appendChild(icon("alert", 16));
      const textBox = h("div", { class: "status-text" }, h("span", { text: text }));
      if (hint) textBox.appendChild(h("span", { class: "status-hint", text: hint }));
      s.appendChild(textBox);
      s.hidden = false;
    }

    setStats(completion, ttft, tps, prompt) {
      if (this.role !== "assistant") return;
      const parts = [];
      if (completion !== null && completion !== undefined) parts.push(formatNumber(completion) + " tokens");
      if (ttft !== null && ttft !== undefined) parts.push((ttft / 1000).toFixed(2) + " s to first token");
      if (tps) parts.push(Number(tps).toFixed(1) + " tokens/s");
      this.statsEl.textContent = parts.join(" · ");
      this.statsEl.title = prompt ? formatNumber(prompt) + " prompt tokens" : "";
    }
  }

  /* A user message that the server refused: shown with the reason, text back in the box. */
  function showRejected(view, err) {
    const info = describeError(err);
    const note = h("div", { class: "msg-status msg-status-error", role: "alert", "data-testid": "message-error" },
      icon("alert", 16),
      h("div", { class: "status-text" },
        h("span", { text: "Not sent: " + info.message }),
        info.hint ? h("span", { class: "status-hint", text: info.hint }) : null));
    view.body.appendChild(note);
    view.el.classList.add("rejected");
  }

  function clearThread() {
    detachStream();
    state.views.clear();
    els.thread.replaceChildren();
  }

  function addView(msg) {
    const view = new MessageView(msg);
    if (view.id) state.views.set(view.id, view);
    els.thread.appendChild(view.el);
    updateEmpty();
    return view;
  }

  function updateEmpty() {
    const empty = els.thread.children.length === 0;
    els.empty.hidden = !empty;
    els.scroller.classList.toggle("is-empty", empty);
  }

  /* ================================================================================
   * Scrolling
   * ============================================================================== */
  function atBottom() {
    const s = els.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 48;
  }

  function scrollToBottom() {
    els.scroller.scrollTop = els.scroller.scrollHeight;
    state.stick = true;
    els.jump.hidden = true;
  }

  function autoscroll() {
    if (state.stick) {
      els.scroller.scrollTop = els.scroller.scrollHeight;
    } else {
      els.jump.hidden = atBottom();
    }
  }

  els.scroller.addEventListener("scroll", function () {
    state.stick = atBottom();
    els.jump.hidden = state.stick;
  }, { passive: true });
  els.jump.addEventListener("click", scrollToBottom);

  /* ================================================================================
   * Streaming
   * ============================================================================== */
  function detachStream() {
    if (state.stream) {
      state.stream.source.close();
      state.stream = null;
    }
    updateComposer();
  }

  /* Follow an answer's SSE stream from character `offset` until [DONE] or an error. */
  function attach(view, offset, attempt) {
    detachStream();
    attempt = attempt || 0;
    const conversationId = state.current && state.current.id;
    const url = view.streamUrl + (offset ? "?offset=" + offset : "");
    const source = new EventSource(url);
    const stream = { view: view, source: source, conversationId: conversationId, stopping: false };
    state.stream = stream;
    view.setState("streaming");
    updateComposer();

    const finish = function () {
      source.close();
      if (state.stream === stream) state.stream = null;
      updateComposer();
    };

    source.onmessage = function (event) {
      if (event.data === "[DONE]") {
        finish();
        if (view.state === "streaming") view.setState("done");
        refreshConversations();
        return;
      }
      let data;
      try { data = JSON.parse(event.data); } catch (e) { return; }
      if (data.response) view.append(data.response);
      if (data.state) { // the final event: everything has arrived ([DONE] follows)
        const usage = data.usage || {};
        finish();
        view.setStats(usage.completion_tokens, data.time_to_first_token_ms, data.tokens_per_second, usage.prompt_tokens);
        view.setState(data.state);
        refreshConversations();
      }
    };

    source.addEventListener("error", function (event) {
      if (event.data) { // `event: error` sent by the server: the answer failed
        let message = "Generation failed.";
        try {
          const data = JSON.parse(event.data);
          if (data.errors && data.errors[0]) message = data.errors[0].message;
        } catch (e) { /* keep the generic message */ }
        finish();
        view.setState("error", message);
        return;
      }
      if (source.readyState === EventSource.CLOSED) { // refused (e.g. 404): ask the API what happened
        finish();
        recoverStream(view, conversationId, attempt);
      }
      // CONNECTING: the browser reconnects by itself and resumes with Last-Event-ID
    });
  }

  async function recoverStream(view, conversationId, attempt) {
    try {
      const conv = await api("GET", "/api/conversations/" + conversationId);
      if (!state.current || state.current.id !== conversationId) return;
      const msg = (conv.messages || []).find(function (m) { return m.id === view.id; });
      if (!msg) return;
      view.update(msg);
      if (msg.state === "streaming" && attempt < 5) {
        setTimeout(function () {
          if (state.current && state.current.id === conversationId) attach(view, codePoints(view.content), attempt + 1);
        }, 1000 * (attempt + 1));
      } else if (msg.state === "streaming") {
        view.showStatus("error", "Lost the connection to this answer.", "Reload the page to try again.");
      }
    } catch (err) {
      view.showStatus("error", "Lost the connection to this answer: " + err.message, "Reload the page to try again.");
    }
  }

  async function stopStreaming() {
    const stream = state.stream;
    if (!stream || stream.stopping || !state.current) return;
    stream.stopping = true;
    updateComposer();
    try {
      await api("POST", "/api/conversations/" + state.current.id + "/messages/" + stream.view.id + "/stop");
    } catch (err) {
      stream.stopping = false;
      updateComposer();
      stream.view.showStatus("error", "Could not stop: " + err.message);
    }
    // the stream itself ends with state "stopped" and [DONE]
  }

  /* ================================================================================
   * Composer
   * ============================================================================== */
  function updateComposer() {
    const streaming = !!state.stream;
    els.send.hidden = streaming;
    els.stop.hidden = !streaming;
    els.stop.disabled = !streaming || state.stream.stopping;
    els.send.disabled = state.sending || !els.prompt.value.trim();
    els.composer.classList.toggle("is-busy", streaming || state.sending);
  }

  function autosize() {
    const p = els.prompt;
    p.style.height = "auto";
    p.style.height = Math.min(p.scrollHeight, 240) + "px";
  }

  function readNumber(input, parse) {
    const raw = input.value.trim();
    if (!raw) return undefined;
    const value = parse(raw);
    return Number.isFinite(value) ? value : undefined;
  }

  async function send() {
    const content = els.prompt.value;
    if (!content.trim() || state.sending || state.stream) return;
    state.sending = true;
    els.thread.querySelectorAll(".notice").forEach(function (n) { n.remove(); });
    els.prompt.value = "";
    autosize();
    updateComposer();
    const userView = addView({ role: "user", content: content });
    userView.el.classList.add("pending");
    scrollToBottom();
    let created = null;
    try {
      if (!state.current) {
        created = await api("POST", "/api/conversations", {
          model: els.model.value || undefined,
          system_prompt: els.systemPrompt.value,
        });
        setCurrent(created, "replace");
        upsertConversation(created);
      }
      const payload = { content: content, model: els.model.value || undefined, system_prompt: els.systemPrompt.value };
      const maxTokens = readNumber(els.maxTokens, function (v) { return parseInt(v, 10); });
      const temperature = readNumber(els.temperature, parseFloat);
      if (maxTokens !== undefined) payload.max_tokens = maxTokens;
      if (temperature !== undefined) payload.temperature = temperature;
      const conversationId = state.current.id;
      const result = await api("POST", "/api/conversations/" + conversationId + "/messages", payload);
      if (!state.current || state.current.id !== conversationId) return; // navigated away meanwhile
      userView.el.classList.remove("pending");
      userView.update(result.user_message);
      state.views.set(userView.id, userView);
      state.current = result.conversation;
      upsertConversation(result.conversation);
      setTitle(result.conversation.title);
      const view = addView(result.assistant_message);
      scrollToBottom();
      attach(view, 0);
      syncContextMarks(conversationId);
    } catch (err) {
      userView.el.classList.remove("pending");
      showRejected(userView, err);
      if (created && state.current && state.current.id === created.id) forgetEmpty(created);
      if (!els.prompt.value) {
        els.prompt.value = content;
        autosize();
      }
      scrollToBottom();
    } finally {
      state.sending = false;
      updateComposer();
    }
  }

  /* The first message of a new chat was refused: the chat it would have started goes too. */
  function forgetEmpty(conv) {
    state.conversations = state.conversations.filter(function (c) { return c.id !== conv.id; });
    renderSidebar();
    setCurrent(null, "replace");
    api("DELETE", "/api/conversations/" + conv.id).catch(function () { /* stays as an empty chat */ });
  }

  /* Older messages may have left the model's context with this turn. */
  async function syncContextMarks(conversationId) {
    try {
      const conv = await api("GET", "/api/conversations/" + conversationId);
      if (!state.current || state.current.id !== conversationId) return;
      (conv.messages || []).forEach(function (m) {
        const view = state.views.get(m.id);
        if (view) view.setInContext(m.in_context !== false);
      });
    } catch (e) { /* cosmetic only */ }
  }

  els.prompt.addEventListener("input", function () { autosize(); updateComposer(); });
  els.prompt.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      send();
    }
  });
  els.composer.addEventListener("submit", function (event) { event.preventDefault(); send(); });
  els.stop.addEventListener("click", stopStreaming);
  els.suggestions.addEventListener("click", function (event) {
    const button = event.target.closest(".suggestion");
    if (!button) return;
    els.prompt.value = button.dataset.prompt;
    autosize();
    updateComposer();
    els.prompt.focus();
  });

  /* Copy buttons of code blocks (rendered by Markdown, so delegated). */
  els.thread.addEventListener("click", function (event) {
    const button = event.target.closest("button[data-copy='code']");
    if (!button) return;
    const code = button.closest(".code-block").querySelector("code");
    copyText(code.textContent).then(function (ok) { flash(button, ok ? "Copied" : "Copy failed"); });
  });

  /* ================================================================================
   * Conversations
   * ============================================================================== */
  function setTitle(title) {
    els.title.textContent = title || "";
    document.title = (title ? title + " · " : "") + "Workers AI";
  }

  function setCurrent(conv, history) {
    state.current = conv;
    state.activeId = conv ? conv.id : null;
    const path = conv ? "/c/" + conv.id : "/";
    if (history && window.location.pathname !== path) {
      if (history === "push") window.history.pushState({ id: conv ? conv.id : null }, "", path);
      else window.history.replaceState({ id: conv ? conv.id : null }, "", path);
    }
    setTitle(conv ? conv.title : "");
    if (conv) {
      els.systemPrompt.value = conv.system_prompt || "";
      selectModel(conv.model);
    }
    markSystemPrompt();
    highlightActive();
  }

  function upsertConversation(conv) {
    state.conversations = [conv].concat(state.conversations.filter(function (c) { return c.id !== conv.id; }));
    state.conversations.sort(function (a, b) { return (b.updated_at || "").localeCompare(a.updated_at || ""); });
    renderSidebar();
  }

  async function refreshConversations() {
    try {
      state.conversations = await api("GET", "/api/conversations");
      renderSidebar();
    } catch (err) {
      /* the list stays as it was */
    }
  }

  function dayGroup(iso) {
    const date = new Date(iso);
    const now = new Date();
    const startOfToday = new Date(now.getFullYear(), now.getMonth(), now.getDate()).getTime();
    const day = 86400000;
    const t = date.getTime();
    if (t >= startOfToday) return "Today";
    if (t >= startOfToday - day) return "Yesterday";
    if (t >= startOfToday - 7 * day) return "Previous 7 days";
    if (t >= startOfToday - 30 * day) return "Previous 30 days";
    return "Older";
  }

  function renderSidebar() {
    const nodes = [];
    let group = null;
    state.conversations.forEach(function (conv) {
      const label = dayGroup(conv.updated_at || conv.created_at);
      if (label !== group) {
        group = label;
        nodes.push(h("h2", { class: "conv-group", text: label }));
      }
      const item = h("a", {
        class: "conv-item", href: "/c/" + conv.id, "data-testid": "conversation", "data-id": String(conv.id),
        title: conv.title || "New chat",
      }, h("span", { class: "conv-title", text: conv.title || "New chat" }));
      const del = h("button", { type: "button", class: "conv-delete", "aria-label": "Delete conversation",
        title: "Delete conversation", "data-delete": String(conv.id) }, icon("trash", 15));
      nodes.push(h("div", { class: "conv-row" }, item, del));
    });
    els.convEmpty.hidden = state.conversations.length > 0;
    nodes.unshift(els.convEmpty);
    els.convList.replaceChildren.apply(els.convList, nodes);
    highlightActive();
  }

  function highlightActive() {
    const id = state.activeId === null ? null : String(state.activeId);
    els.convList.querySelectorAll(".conv-item").forEach(function (a) {
      const active = a.dataset.id === id;
      a.classList.toggle("active", active);
      if (active) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    });
  }

  async function openConversation(id, history) {
    const token = ++state.loadToken;
    state.activeId = id;
    highlightActive();
    closeSidebarOnMobile();
    let conv;
    try {
      conv = await api("GET", "/api/conversations/" + id);
    } catch (err) {
      if (token !== state.loadToken) return;
      newChat(history ? "replace" : null);
      els.thread.appendChild(h("div", { class: "msg-status msg-status-error notice", role: "alert" }, icon("alert", 16),
        h("div", { class: "status-text", text: err.status === 404
          ? "This conversation does not exist, or it is not yours." : "Could not open the conversation: " + err.message })));
      updateEmpty();
      return;
    }
    if (token !== state.loadToken) return; // a later click won
    clearThread();
    setCurrent(conv, history);
    let last = null;
    (conv.messages || []).forEach(function (m) {
      const view = addView(m);
      if (m.role === "assistant") last = view;
    });
    updateEmpty();
    scrollToBottom();
    requestAnimationFrame(scrollToBottom);
    if (last && last.state === "streaming") attach(last, codePoints(last.content));
    focusPrompt();
  }

  function newChat(history) {
    state.loadToken++;
    clearThread();
    setCurrent(null, history);
    els.systemPrompt.value = "";
    markSystemPrompt();
    const def = state.models.find(function (m) { return m.default && m.available; });
    if (def) selectModel(def.name);
    updateEmpty();
    closeSidebarOnMobile();
    focusPrompt();
  }

  async function deleteConversation(id) {
    const conv = state.conversations.find(function (c) { return c.id === id; });
    if (!window.confirm("Delete \u201c" + ((conv && conv.title) || "New chat") + "\u201d? This cannot be undone.")) return;
    try {
      await api("DELETE", "/api/conversations/" + id);
    } catch (err) {
      window.alert("Could not delete the conversation: " + err.message);
      return;
    }
    state.conversations = state.conversations.filter(function (c) { return c.id !== id; });
    renderSidebar();
    if (state.current && state.current.id === id) newChat("push");
  }

  function focusPrompt() {
    if (finePointer.matches) els.prompt.focus({ preventScroll: true });
  }

  els.convList.addEventListener("click", function (event) {
    const del = event.target.closest("button[data-delete]");
    if (del) {
      event.preventDefault();
      deleteConversation(parseInt(del.dataset.delete, 10));
      return;
    }
    const item = event.target.closest("a.conv-item");
    if (!item || event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    const id = parseInt(item.dataset.id, 10);
    if (state.current && state.current.id === id) { closeSidebarOnMobile(); return; }
    openConversation(id, "push");
  });

  function startNewChat(event) {
    if (event) event.preventDefault();
    newChat("push");
  }
  els.newChat.addEventListener("click", startNewChat);
  els.newChatMini.addEventListener("click", startNewChat);
  els.brand.addEventListener("click", function (event) {
    if (event.metaKey || event.ctrlKey || event.shiftKey) return;
    startNewChat(event);
  });

  window.addEventListener("popstate", function () {
    const m = /^\/c\/(\d+)$/.exec(window.location.pathname);
    if (m) openConversation(parseInt(m[1], 10), null);
    else newChat(null);
  });

  /* ================================================================================
   * Models and settings
   * ============================================================================== */
  function propertyOf(model, id) {
    const prop = (model.properties || []).find(function (p) { return p.property_id === id; });
    return prop ? prop.value : null;
  }

  function shortName(name) {
    const parts = name.split("/");
    return parts[parts.length - 1];
  }

  function renderModels() {
    const groups = new Map();
    state.models.forEach(function (m) {
      const parts = m.name.split("/");
      const publisher = parts.length > 2 ? parts[parts.length - 2] : "models";
      if (!groups.has(publisher)) groups.set(publisher, []);
      groups.get(publisher).push(m);
    });
    const nodes = [];
    groups.forEach(function (models, publisher) {
      const group = h("optgroup", { label: publisher });
      models.forEach(function (m) {
        const option = h("option", { value: m.name, disabled: !m.available,
          title: m.available ? (m.description || m.name) : (m.unavailable_reason || "unavailable") },
          shortName(m.name) + (m.available ? "" : " (unavailable)"));
        group.appendChild(option);
      });
      nodes.push(group);
    });
    els.model.replaceChildren.apply(els.model, nodes);
  }

  function selectModel(name) {
    if (!name) return;
    let option = Array.prototype.find.call(els.model.options, function (o) { return o.value === name; });
    if (!option) {
      option = h("option", { value: name, disabled: true, title: "Not in the catalog any more" }, shortName(name) + " (removed)");
      els.model.appendChild(option);
    }
    els.model.value = name;
    showModelInfo();
  }

  function showModelInfo() {
    const model = state.models.find(function (m) { return m.name === els.model.value; });
    if (!model) {
      els.limits.textContent = "";
      els.hintModel.textContent = "";
      return;
    }
    const context = propertyOf(model, "context_length_limit");
    const out = propertyOf(model, "sequence_length_limit");
    els.model.title = model.description || model.name;
    els.limits.textContent = (context ? formatNumber(context) + " tokens of context" : "") +
      (out ? " · up to " + formatNumber(out) + " tokens per answer" : "");
    if (out) els.maxTokens.max = out;
    els.hintModel.textContent = shortName(model.name) + (context ? " · " + formatNumber(context) + "-token context" : "");
  }

  async function loadModels() {
    try {
      state.models = await api("GET", "/ai/models/search");
    } catch (err) {
      state.models = [];
    }
    renderModels();
    const def = state.models.find(function (m) { return m.default && m.available; }) ||
      state.models.find(function (m) { return m.available; });
    if (state.current) selectModel(state.current.model);
    else if (def) selectModel(def.name);
  }

  els.model.addEventListener("change", async function () {
    showModelInfo();
    if (!state.current) return;
    const id = state.current.id;
    try {
      const conv = await api("PATCH", "/api/conversations/" + id, { model: els.model.value });
      if (state.current && state.current.id === id) state.current = conv;
    } catch (err) {
      window.alert("Could not switch the model: " + err.message);
      selectModel(state.current.model);
    }
  });

  function markSystemPrompt() {
    els.settingsBtn.classList.toggle("has-value", !!els.systemPrompt.value.trim());
  }

  function toggleSettings(open) {
    const show = open === undefined ? els.settings.hidden : open;
    els.settings.hidden = !show;
    els.settingsBtn.setAttribute("aria-expanded", String(show));
    if (show) els.systemPrompt.focus();
  }

  els.settingsBtn.addEventListener("click", function () { toggleSettings(); });
  els.systemPrompt.addEventListener("input", markSystemPrompt);
  els.systemPrompt.addEventListener("change", async function () {
    if (!state.current) return; // saved when the conversation is created
    const id = state.current.id;
    try {
      const conv = await api("PATCH", "/api/conversations/" + id, { system_prompt: els.systemPrompt.value });
      if (state.current && state.current.id === id) state.current = conv;
    } catch (err) {
      window.alert("Could not save the system prompt: " + err.message);
    }
  });

  /* max tokens and temperature are per browser, not per conversation */
  [["maxTokens", "wai.max_tokens"], ["temperature", "wai.temperature"]].forEach(function (pair) {
    const input = els[pair[0]];
    try { input.value = window.localStorage.getItem(pair[1]) || ""; } catch (e) { /* storage disabled */ }
    input.addEventListener("change", function () {
      try { window.localStorage.setItem(pair[1], input.value); } catch (e) { /* storage disabled */ }
    });
  });

  /* ================================================================================
   * Sidebar (a drawer on narrow screens, collapsible on wide ones)
   * ============================================================================== */
  function toggleSidebar(open) {
    if (mobile.matches) {
      body.classList.toggle("sidebar-open", open);
    } else {
      body.classList.toggle("sidebar-collapsed", !open);
      try { window.localStorage.setItem("wai.sidebar", open ? "open" : "collapsed"); } catch (e) { /* ignore */ }
    }
  }

  function closeSidebarOnMobile() {
    if (mobile.matches) body.classList.remove("sidebar-open");
  }

  els.menu.addEventListener("click", function () { toggleSidebar(true); });
  els.sidebarClose.addEventListener("click", function () { toggleSidebar(false); });
  els.backdrop.addEventListener("click", function () { toggleSidebar(false); });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      if (body.classList.contains("sidebar-open")) toggleSidebar(false);
      else if (!els.settings.hidden && els.settings.contains(document.activeElement)) toggleSettings(false);
    }
  });
  try {
    if (window.localStorage.getItem("wai.sidebar") === "collapsed") body.classList.add("sidebar-collapsed");
  } catch (e) { /* ignore */ }

  /* ================================================================================
   * Start
   * ============================================================================== */
  async function start() {
    updateEmpty();
    updateComposer();
    const initial = parseInt(body.dataset.conversationId || "", 10);
    const models = loadModels();
    const list = refreshConversations();
    if (initial) {
      await models;
      await openConversation(initial, null);
    } else {
      await models;
      newChat(null);
    }
    await list;
    highlightActive();
  }

  start();
})();

/* Syntax highlighting of finished code blocks. highlight.js (vendored, static/vendor/highlight)
 * runs in a worker (highlight-worker.js): the page's main thread only sends code and builds the
 * result, so a long block or a language guess never blocks scrolling or the streaming answer.
 * Code blocks show as plain text until their colours arrive, usually a frame or two later.
 *
 * highlight.js answers with HTML: the code escaped (&amp; &lt; &gt; &quot; &#x27;) inside
 * <span class="…"> tags. The page never parses HTML (no innerHTML, see dom.js), so that string is
 * read by a strict tokenizer that knows exactly those pieces and builds the spans and text nodes
 * itself; anything else, or a text that is not exactly the code, leaves the block plain. So no HTML
 * from the model ever becomes markup, whatever the highlighter does.
 *
 * Results are cached by (language, code): a block inside a growing list is rendered again each
 * frame, but highlighted once, and once cached it is highlighted as it is rendered.
 */

/* Longest code guessed at without a language (the guess tries every grammar). */
export const AUTO_MAX_CHARS = 5000;
const MAX_CHARS = 20_000; // longer blocks stay plain: building their spans would block a frame
const CACHE_SIZE = 64;
const cache = new Map(); // "lang\0code" -> DocumentFragment to clone, or null (plain)
const waiting = new Map(); // "lang\0code" -> <code> elements to highlight when the worker answers
const jobs = new Map(); // job id -> its key
const settled = []; // resolvers of highlightsSettled()
const PIECE = /<span class="([\w-]+(?: [\w-]+)*)">|<\/span>|&(amp|lt|gt|quot|#x27);|[^<&]+/y;
const ENTITY = { amp: "&", lt: "<", gt: ">", quot: "\"", "#x27": "'" };
let worker = null; // the Worker once started; false when it cannot run (blocks stay plain)
let nextJob = 1;

/* Highlight `codeEl` (a <code> whose text is `code`) as `lang` ("" or unknown: a guess for short
 * code, else plain): now if the result is cached, else when the worker answers. The same input
 * always ends as the same DOM. */
export function highlightInto(codeEl, lang, code) {
  if (!code || code.length > MAX_CHARS) return;
  lang = (lang || "").toLowerCase();
  if (!lang && code.length >= AUTO_MAX_CHARS) return;
  const key = lang + "\0" + code;
  const frag = cache.get(key);
  if (frag !== undefined) {
    cache.delete(key); // most recently used goes last
    cache.set(key, frag);
    if (frag) apply(codeEl, frag);
    return;
  }
  let list = waiting.get(key);
  if (!list) {
    const w = startWorker();
    if (!w) return;
    list = [];
    waiting.set(key, list);
    const id = nextJob++;
    jobs.set(id, key);
    w.postMessage({ id: id, lang: lang, code: code });
  }
  list.push(codeEl);
}

/* Resolves once every block sent to the worker so far has its colours (for tests). */
export function highlightsSettled() {
  return new Promise(function (resolve) {
    if (waiting.size === 0) resolve();
    else settled.push(resolve);
  });
}

function startWorker() {
  if (worker === null) {
    try {
      worker = new Worker(new URL("./highlight-worker.js", import.meta.url), { type: "module" });
      worker.onmessage = onResult;
      worker.onerror = function (event) {
        event.preventDefault();
        worker = false; // no colours, but the page goes on
        jobs.clear();
        waiting.clear();
        settle();
      };
    } catch (e) {
      worker = false;
    }
  }
  return worker;
}

function onResult(event) {
  const key = jobs.get(event.data.id);
  if (key === undefined) return;
  jobs.delete(event.data.id);
  const code = key.slice(key.indexOf("\0") + 1);
  const frag = typeof event.data.html === "string" ? build(event.data.html, code) : null;
  if (cache.size >= CACHE_SIZE) cache.delete(cache.keys().next().value);
  cache.set(key, frag);
  const list = waiting.get(key) || [];
  waiting.delete(key);
  if (frag) {
    for (const el of list) {
      // on the page (a block rendered again since then has a new element) and still this code, plain
      if (el.isConnected && !el.classList.contains("hljs") && el.childElementCount === 0 && el.textContent === code) {
        apply(el, frag);
      }
    }
  }
  if (waiting.size === 0) settle();
}

function settle() {
  settled.splice(0).forEach(function (resolve) { resolve(); });
}

function apply(codeEl, frag) {
  codeEl.replaceChildren(frag.cloneNode(true));
  codeEl.classList.add("hljs");
}

/* hljs's output as DOM, or null unless it is only well-nested <span class="…"> and escaped text
 * that spells exactly `code`. */
function build(html, code) {
  const frag = document.createDocumentFragment();
  const stack = [frag];
  let text = "";
  let pending = "";
  const flush = function () {
    if (pending) { stack[stack.length - 1].appendChild(document.createTextNode(pending)); pending = ""; }
  };
  PIECE.lastIndex = 0;
  while (PIECE.lastIndex < html.length) {
    const m = PIECE.exec(html);
    if (!m) return null;
    if (m[1] !== undefined) {
      flush();
      const span = document.createElement("span");
      span.className = m[1];
      stack[stack.length - 1].appendChild(span);
      stack.push(span);
    } else if (m[0] === "</span>") {
      flush();
      if (stack.length === 1) return null;
      stack.pop();
    } else {
      const piece = m[2] !== undefined ? ENTITY[m[2]] : m[0];
      pending += piece;
      text += piece;
    }
  }
  flush();
  return stack.length === 1 && text === code ? frag : null;
}

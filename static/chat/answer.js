/* An assistant answer as the page shows it: Markdown, except that a whole answer in JSON (the
 * "JSON output" setting) is shown pretty-printed in a code block, and tool calls and tool results
 * (<tool_call>…</tool_call>, <tool_response>…</tool_response>, the format the server prompts
 * with) are collapsible blocks. Nothing is ever executed. */
import { h } from "./dom.js";
import { highlightInto } from "./highlight.js";
import { render } from "./markdown.js";

export const TOOL = /<(tool_call|tool_response)>([\s\S]*?)(?:<\/\1>|$)/g;

export function renderAnswer(source) {
  const text = String(source || "");
  const json = wholeJson(text);
  if (json !== null) return render("```json\n" + json + "\n```");
  const frag = document.createDocumentFragment();
  let last = 0;
  for (const m of text.matchAll(TOOL)) {
    if (m.index > last) frag.appendChild(render(text.slice(last, m.index)));
    frag.appendChild(toolBlock(m[1], m[2], true));
    last = m.index + m[0].length;
  }
  if (last < text.length || last === 0) frag.appendChild(render(text.slice(last)));
  return frag;
}

/* The answer pretty-printed when all of it is one JSON object or array, else null. */
export function wholeJson(text) {
  const trimmed = text.trim();
  if (!/^[[{]/.test(trimmed) || !/[\]}]$/.test(trimmed)) return null;
  try {
    return JSON.stringify(JSON.parse(trimmed), null, 2);
  } catch (e) {
    return null;
  }
}

/* A collapsible tool call or result; `complete` (its closing tag arrived, or the answer is
 * finished): JSON in it is highlighted. */
export function toolBlock(kind, body, complete) {
  let text = body.trim();
  let name = "";
  let json = false;
  try {
    const value = JSON.parse(text);
    if (kind === "tool_call" && value && typeof value.name === "string") name = value.name;
    text = JSON.stringify(value, null, 2);
    json = true;
  } catch (e) { /* shown as written (unfinished while it streams) */ }
  const summary = kind === "tool_call" ? "Tool call" + (name ? " · " + name : "") : "Tool result";
  const code = h("code", { text: text });
  if (json && complete) highlightInto(code, "json", text);
  return h("details", { class: "tool-block", "data-testid": "tool-block", "data-kind": kind },
    h("summary", { text: summary }), h("pre", {}, code));
}

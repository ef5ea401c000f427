/* The context meter: how much of the model's context the next turn would use, counted by the
 * server with the model's own tokenizer (POST /api/context), and which older messages would fall
 * out of the prompt. Counted again, debounced, as the draft, the settings or the branch change. */
import { api } from "./api.js";
import { readNumber } from "./composer.js";
import { formatNumber } from "./dom.js";
import { els, state } from "./state.js";

let timer = null;
let latest = 0; // the newest count asked for; older answers are ignored
let inFlight = null; // its AbortController: a newer draft cancels the count of an older one

export function scheduleContextCount(delay) {
  clearTimeout(timer);
  timer = setTimeout(count, delay === undefined ? 300 : delay);
}

function request() {
  const body = { content: els.prompt.value, system_prompt: els.systemPrompt.value };
  if (els.model.value) body.model = els.model.value;
  if (state.current) body.conversation_id = state.current.id;
  const maxTokens = readNumber(els.maxTokens, function (v) { return parseInt(v, 10); });
  if (maxTokens !== undefined) body.max_tokens = maxTokens;
  const editing = state.editing;
  if (editing && editing.editing) { // an edit is counted after the answer it follows
    body.content = editing.editing.value;
    body.parent_id = editing.parentId === undefined ? null : editing.parentId;
  }
  return body;
}

async function count() {
  const mine = ++latest;
  if (inFlight) inFlight.abort();
  const controller = new AbortController();
  inFlight = controller;
  let result;
  try {
    result = await api("POST", "/api/context", request(), controller.signal);
  } catch (err) {
    if (mine === latest && !controller.signal.aborted) show(null);
    return;
  } finally {
    if (inFlight === controller) inFlight = null;
  }
  if (mine === latest) show(result);
}

function show(result) {
  const meter = els.contextMeter;
  if (!result) {
    meter.hidden = true;
    state.views.forEach(function (view) { view.setWillDrop(false); });
    return;
  }
  const dropped = new Set(result.dropped_ids || []);
  const budget = Math.max(result.context_length - result.max_tokens, 1);
  meter.hidden = false;
  meter.dataset.tokens = String(result.tokens);
  meter.classList.toggle("is-full", !result.fits);
  meter.classList.toggle("is-high", result.fits && result.tokens > 0.8 * budget);
  els.contextCount.textContent = (result.estimated ? "≈ " : "") + formatNumber(result.tokens) + " / " +
    formatNumber(result.context_length) + " tokens";
  let note = "";
  if (!result.fits) note = "too long for this model";
  else if (dropped.size) note = dropped.size === 1 ? "1 earlier message falls out" : dropped.size + " earlier messages fall out";
  els.contextDrop.textContent = note;
  els.contextDrop.hidden = !note;
  meter.title = formatNumber(result.tokens) + " tokens of " + formatNumber(result.context_length) +
    " in the model's context, with " + formatNumber(result.max_tokens) + " kept for the answer" +
    (dropped.size ? ". Messages marked 'Will fall out' are not sent." : ".");
  state.views.forEach(function (view) { view.setWillDrop(dropped.has(view.id)); });
}

/* The model picker (from the catalog, grouped by publisher) and the settings panel: the system
 * prompt (saved with the conversation), max tokens and temperature (kept per browser). */
import { api, conversationUrl } from "./api.js";
import { formatNumber, h } from "./dom.js";
import { els, isCurrent, state } from "./state.js";

function propertyOf(model, id) {
  const prop = (model.properties || []).find(function (p) { return p.property_id === id; });
  return prop ? prop.value : null;
}

function shortName(name) {
  const parts = name.split("/");
  return parts[parts.length - 1];
}

/* The catalog's default model, if it can answer. */
export function defaultModel() {
  return state.models.find(function (m) { return m.default && m.available; });
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
      group.appendChild(h("option", { value: m.name, disabled: !m.available,
        title: m.available ? (m.description || m.name) : (m.unavailable_reason || "unavailable") },
        shortName(m.name) + (m.available ? "" : " (unavailable)")));
    });
    nodes.push(group);
  });
  els.model.replaceChildren(...nodes);
}

export function selectModel(name) {
  if (!name) return;
  if (!Array.prototype.some.call(els.model.options, function (o) { return o.value === name; })) {
    els.model.appendChild(h("option", { value: name, disabled: true, title: "Not in the catalog any more" },
      shortName(name) + " (removed)"));
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
    (out ? " · up to " + formatNumber(out) + " tokens per answer" : "") +
    (model.state && model.state !== "loaded" ? " · " + model.state : "");
  if (out) els.maxTokens.max = out;
  els.hintModel.textContent = shortName(model.name) + (context ? " · " + formatNumber(context) + "-token context" : "");
}

export async function loadModels() {
  try {
    state.models = await api("GET", "/ai/models/search");
  } catch (err) {
    state.models = [];
  }
  renderModels();
  const def = defaultModel() || state.models.find(function (m) { return m.available; });
  if (state.current) selectModel(state.current.model);
  else if (def) selectModel(def.name);
}

/* The settings button shows a dot while a system prompt is set. */
export function markSystemPrompt() {
  els.settingsBtn.classList.toggle("has-value", !!els.systemPrompt.value.trim());
}

export function toggleSettings(open) {
  const show = open === undefined ? els.settings.hidden : open;
  els.settings.hidden = !show;
  els.settingsBtn.setAttribute("aria-expanded", String(show));
  if (show) els.systemPrompt.focus();
}

/* Save a change to the open conversation; `what` names it in the alert if that fails. */
async function patchConversation(changes, what, onError) {
  if (!state.current) return; // a new chat: saved when the conversation is created
  const id = state.current.id;
  try {
    const conv = await api("PATCH", conversationUrl(id), changes);
    if (isCurrent(id)) state.current = conv;
  } catch (err) {
    window.alert("Could not " + what + ": " + err.message);
    if (onError) onError();
  }
}

export function initSettings() {
  els.model.addEventListener("change", function () {
    showModelInfo();
    patchConversation({ model: els.model.value }, "switch the model", function () {
      if (state.current) selectModel(state.current.model);
    });
  });
  els.settingsBtn.addEventListener("click", function () { toggleSettings(); });
  els.systemPrompt.addEventListener("input", markSystemPrompt);
  els.systemPrompt.addEventListener("change", function () {
    patchConversation({ system_prompt: els.systemPrompt.value }, "save the system prompt");
  });

  /* max tokens, temperature and JSON output are per browser, not per conversation */
  [[els.maxTokens, "wai.max_tokens"], [els.temperature, "wai.temperature"],
    [els.jsonSchema, "wai.json_schema"]].forEach(function (pair) {
    const input = pair[0];
    try { input.value = window.localStorage.getItem(pair[1]) || ""; } catch (e) { /* storage disabled */ }
    input.addEventListener("change", function () {
      try { window.localStorage.setItem(pair[1], input.value); } catch (e) { /* storage disabled */ }
    });
  });
  try { els.jsonOutput.checked = window.localStorage.getItem("wai.json_output") === "1"; } catch (e) { /* disabled */ }
  els.jsonSchemaField.hidden = !els.jsonOutput.checked;
  els.jsonOutput.addEventListener("change", function () {
    els.jsonSchemaField.hidden = !els.jsonOutput.checked;
    try { window.localStorage.setItem("wai.json_output", els.jsonOutput.checked ? "1" : "0"); } catch (e) { /* disabled */ }
  });
  els.jsonSchema.addEventListener("input", function () { els.jsonSchemaError.hidden = true; });
}

/* The response_format for the settings: null (text), JSON of any shape, or JSON valid for the
 * schema typed in; throws when that schema is not a JSON object. */
export function responseFormat() {
  if (!els.jsonOutput.checked) return null;
  const text = els.jsonSchema.value.trim();
  if (!text) return { type: "json_object" };
  let schema;
  try { schema = JSON.parse(text); } catch (e) { schema = null; }
  if (!schema || typeof schema !== "object" || Array.isArray(schema)) {
    throw new Error("The JSON Schema is not a JSON object.");
  }
  return { type: "json_schema", json_schema: schema };
}

/* The selected model is not in memory yet: its first answer waits for it to load. */
export function selectedModelLoads() {
  const model = state.models.find(function (m) { return m.name === els.model.value; });
  return !!model && model.available && !!model.state && /^(not loaded|loading|unloaded)/.test(model.state);
}

export function markSelectedLoaded() {
  const model = state.models.find(function (m) { return m.name === els.model.value; });
  if (model && selectedModelLoads()) model.state = "loaded";
  showModelInfo();
}

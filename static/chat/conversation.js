/* Conversations: open one (its URL is /c/<id>), start a new one, delete one, and send a message
 * (the first message of a new chat creates the conversation). */
import { api, conversationUrl, hintFor } from "./api.js";
import { scheduleContextCount } from "./context.js";
import { autosize, fillPrompt, readNumber, updateComposer } from "./composer.js";
import { codePoints, h, icon, statusText } from "./dom.js";
import { defaultModel, markSelectedLoaded, markSystemPrompt, responseFormat, selectedModelLoads, selectModel } from "./models.js";
import { scrollToBottom } from "./scroll.js";
import { closeSidebarOnMobile, highlightActive, removeConversation, upsertConversation } from "./sidebar.js";
import { els, finePointer, isCurrent, state } from "./state.js";
import { attach } from "./stream.js";
import { addView, clearThread, updateEmpty } from "./thread.js";

function setTitle(title) {
  els.title.textContent = title || "";
  document.title = (title ? title + " · " : "") + "Workers AI";
}

/* Show `conv` (or a new chat for null) as the open conversation; `history` is "push", "replace"
 * or null (the URL already says so). */
function setCurrent(conv, history) {
  state.current = conv;
  state.activeId = conv ? conv.id : null;
  const path = conv ? "/c/" + conv.id : "/";
  if (history && window.location.pathname !== path) {
    const method = history === "push" ? "pushState" : "replaceState";
    window.history[method]({ id: state.activeId }, "", path);
  }
  setTitle(conv ? conv.title : "");
  els.exportBtn.hidden = !conv;
  if (conv) {
    els.systemPrompt.value = conv.system_prompt || "";
    selectModel(conv.model);
  }
  markSystemPrompt();
  highlightActive();
}

function focusPrompt() {
  if (finePointer.matches) els.prompt.focus({ preventScroll: true });
}

export async function openConversation(id, history) {
  const token = ++state.loadToken;
  state.activeId = id;
  highlightActive();
  closeSidebarOnMobile();
  let conv;
  try {
    conv = await api("GET", conversationUrl(id));
  } catch (err) {
    if (token !== state.loadToken) return;
    newChat(history ? "replace" : null);
    els.thread.appendChild(h("div", { class: "msg-status msg-status-error notice", role: "alert" }, icon("alert", 16),
      statusText(err.status === 404
        ? "This conversation does not exist, or it is not yours." : "Could not open the conversation: " + err.message)));
    updateEmpty();
    return;
  }
  if (token !== state.loadToken) return; // a later click won
  showConversation(conv, history);
  focusPrompt();
}

/* Render the branch `conv` shows; with `anchor` ({from: a view shown now, to: a message id}), the
 * message `to` takes the place on the screen that `from` had, instead of scrolling to the end
 * (paging through alternatives above the last turn). */
function showConversation(conv, history, anchor) {
  const before = anchor && anchor.from;
  const top = before && before.el.isConnected ? before.el.getBoundingClientRect().top : null;
  clearThread();
  setCurrent(conv, history);
  let last = null;
  (conv.messages || []).forEach(function (m) {
    const view = addView(m);
    if (m.role === "assistant") last = view;
  });
  updateEmpty();
  const after = anchor && state.views.get(anchor.to);
  if (after && top !== null) {
    els.scroller.scrollTop += after.el.getBoundingClientRect().top - top;
  } else {
    scrollToBottom();
    requestAnimationFrame(scrollToBottom);
  }
  if (last && last.state === "streaming") attach(last, codePoints(last.content));
  scheduleContextCount();
}

/* Show the branch through message `id` (one of the alternatives of `view`). */
export async function selectAlternative(view, id) {
  if (!state.current || state.busy) return;
  const conversationId = state.current.id;
  const wasPrev = document.activeElement === view.altNav.prev;
  const token = ++state.selectToken;
  try {
    const conv = await api("POST", conversationUrl(conversationId) + "/messages/" + id + "/select");
    // a later choice, a message sent or another conversation meanwhile: this answer is out of date
    if (!isCurrent(conversationId) || token !== state.selectToken || state.busy) return;
    showConversation(conv, null, { from: view, to: id });
    const shown = state.views.get(id);
    if (shown && !shown.altNav.el.hidden) { // keyboard users keep their place
      const nav = shown.altNav;
      const target = wasPrev ? (nav.prev.disabled ? nav.next : nav.prev) : (nav.next.disabled ? nav.prev : nav.next);
      target.focus({ preventScroll: true });
    }
  } catch (err) {
    view.showStatus("error", "Could not show that version: " + err.message);
  }
}

/* A new answer to the question `view` answered; the old one stays as an alternative. */
export async function regenerate(view) {
  if (!state.current || state.busy || !view.id) return;
  await startBranch(view, "/messages/" + view.id + "/regenerate", settingsPayload(null));
}

/* The edited text of user message `view`, sent as a new branch after the same answer. */
export async function saveEdit(view) {
  const content = view.editing ? view.editing.value : "";
  if (!content.trim() || !state.current || state.busy) return;
  const payload = settingsPayload(null);
  payload.content = content;
  payload.parent_id = view.parentId === undefined ? null : view.parentId;
  const ok = await startBranch(view, "/messages", payload);
  if (ok) state.editing = null;
}

export function startEdit(view) {
  if (state.editing && state.editing !== view) state.editing.endEdit();
  state.editing = view;
  view.startEdit();
}

export function cancelEdit(view) {
  view.endEdit();
  if (state.editing === view) state.editing = null;
  view.editBtn.focus();
}

/* Post a turn that starts a new branch, then show that branch and follow its answer. */
async function startBranch(view, path, payload) {
  const conversationId = state.current.id;
  state.sending = true;
  state.selectToken++; // an alternative being fetched is out of date now
  updateComposer();
  try {
    let result;
    try {
      result = await api("POST", conversationUrl(conversationId) + path, payload);
    } catch (err) {
      if (view.role === "assistant") view.showStatus("error", "Could not regenerate: " + err.message, hintFor(err));
      else showEditError(view, err);
      return false;
    }
    if (!isCurrent(conversationId)) return true;
    upsertConversation(result.conversation);
    let conv;
    try {
      conv = await api("GET", conversationUrl(conversationId));
    } catch (err) { // the turn runs anyway: show it as far as the answers are known
      conv = null;
    }
    if (!isCurrent(conversationId)) return true;
    if (conv) showConversation(conv, null);
    focusPrompt(); // the pressed button is gone with the old branch; Escape or Stop from here
    return true;
  } finally {
    state.sending = false; // only now: the new answer's stream is attached, so Send stays disabled
    updateComposer();
  }
}

function showEditError(view, err) {
  const old = view.body.querySelector(".edit-error");
  if (old) old.remove();
  view.editForm.appendChild(h("div", { class: "msg-status msg-status-error edit-error", role: "alert",
    "data-testid": "message-error" }, icon("alert", 16), statusText("Not sent: " + err.message, hintFor(err))));
}

/* Send the text of a refused message again. */
export function resend(view) {
  const content = view.content;
  view.el.remove();
  fillPrompt(content);
  send();
}

export function newChat(history) {
  state.loadToken++;
  clearThread();
  setCurrent(null, history);
  els.systemPrompt.value = "";
  markSystemPrompt();
  const def = defaultModel();
  if (def) selectModel(def.name);
  updateEmpty();
  closeSidebarOnMobile();
  focusPrompt();
  scheduleContextCount(0);
}

export async function deleteConversation(id) {
  const conv = state.conversations.find(function (c) { return c.id === id; });
  if (!window.confirm("Delete \u201c" + ((conv && conv.title) || "New chat") + "\u201d? This cannot be undone.")) return;
  try {
    await api("DELETE", conversationUrl(id));
  } catch (err) {
    window.alert("Could not delete the conversation: " + err.message);
    return;
  }
  removeConversation(id);
  if (isCurrent(id)) newChat("push");
}

/* The settings filled in, for a turn (the JSON output setting when `format` is given). */
function settingsPayload(format) {
  const payload = { model: els.model.value || undefined, system_prompt: els.systemPrompt.value };
  if (format === null) {
    try { format = responseFormat(); } catch (e) { format = undefined; }
  }
  if (format) payload.response_format = format;
  const maxTokens = readNumber(els.maxTokens, function (v) { return parseInt(v, 10); });
  const temperature = readNumber(els.temperature, parseFloat);
  if (maxTokens !== undefined) payload.max_tokens = maxTokens;
  if (temperature !== undefined) payload.temperature = temperature;
  return payload;
}

/* The message body for the box's text and the settings filled in. The question follows the last
 * answer shown (not whatever branch the server last stored: another tab may have moved it). */
function messagePayload(content, format) {
  const payload = settingsPayload(format || undefined);
  payload.content = content;
  const shown = Array.from(state.views.values()).filter(function (v) { return v.id && v.el.isConnected; });
  const last = shown[shown.length - 1];
  if (last && last.role === "assistant") payload.parent_id = last.id;
  return payload;
}

export async function send() {
  const content = els.prompt.value;
  if (!content.trim() || state.sending || state.stream) return;
  let format;
  try {
    format = responseFormat();
  } catch (err) {
    els.jsonSchemaError.textContent = err.message;
    els.jsonSchemaError.hidden = false;
    if (els.settings.hidden) els.settingsBtn.click();
    els.jsonSchema.focus();
    return;
  }
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
    const conversationId = state.current.id;
    const loading = selectedModelLoads() ? h("div", { class: "msg-status notice", role: "status",
      "data-testid": "model-loading",
      text: "Loading " + els.model.value + "… the first answer takes a few seconds longer." }) : null;
    if (loading) els.thread.appendChild(loading);
    let result;
    try {
      result = await api("POST", conversationUrl(conversationId) + "/messages", messagePayload(content, format));
    } finally {
      if (loading) loading.remove();
    }
    markSelectedLoaded();
    if (!isCurrent(conversationId)) return; // navigated away meanwhile
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
    userView.showRejected(err);
    if (created && isCurrent(created.id)) forgetEmpty(created);
    if (!els.prompt.value) fillPrompt(content);
    scrollToBottom();
  } finally {
    state.sending = false;
    updateComposer();
  }
}

/* The first message of a new chat was refused: the chat it would have started goes too. */
function forgetEmpty(conv) {
  removeConversation(conv.id);
  setCurrent(null, "replace");
  api("DELETE", conversationUrl(conv.id)).catch(function () { /* stays as an empty chat */ });
}

/* Older messages may have left the model's context with this turn. */
async function syncContextMarks(conversationId) {
  try {
    const conv = await api("GET", conversationUrl(conversationId));
    if (!isCurrent(conversationId)) return;
    (conv.messages || []).forEach(function (m) {
      const view = state.views.get(m.id);
      if (view) view.setInContext(m.in_context !== false);
    });
  } catch (e) { /* cosmetic only */ }
}

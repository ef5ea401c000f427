/* The chat page's entry point (<script type="module">): wires the views together and starts. */
import { copyText, flash } from "./dom.js";
import { autosize, fillPrompt, updateComposer } from "./composer.js";
import { cancelEdit, deleteConversation, newChat, openConversation, regenerate, resend, saveEdit, selectAlternative,
  send, startEdit } from "./conversation.js";
import { scheduleContextCount } from "./context.js";
import { renderAnswer } from "./answer.js";
import * as Markdown from "./markdown.js";
import { initSettings, loadModels, toggleSettings } from "./models.js";
import { initScroll } from "./scroll.js";
import { closeSidebarOnMobile, highlightActive, initSidebar, refreshConversations, startRename, toggleSidebar } from "./sidebar.js";
import { body, els, isCurrent, state } from "./state.js";
import { stopStreaming } from "./stream.js";
import { initTheme } from "./theme.js";
import { updateEmpty } from "./thread.js";

window.ChatMarkdown = { ...Markdown, renderAnswer }; // for tests and the curious

function isPlainClick(event) {
  return !(event.metaKey || event.ctrlKey || event.shiftKey);
}

function startNewChat(event) {
  if (event) event.preventDefault();
  newChat("push");
}

function initComposer() {
  els.prompt.addEventListener("input", function () { autosize(); updateComposer(); scheduleContextCount(); });
  [els.model, els.systemPrompt, els.maxTokens].forEach(function (input) {
    input.addEventListener("change", function () { scheduleContextCount(0); });
  });
  els.systemPrompt.addEventListener("input", function () { scheduleContextCount(); });
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
    fillPrompt(button.dataset.prompt);
    els.prompt.focus();
  });
  // copy buttons of code blocks (rendered by Markdown, so delegated)
  els.thread.addEventListener("click", function (event) {
    const button = event.target.closest("button[data-copy='code']");
    if (!button) return;
    const code = button.closest(".code-block").querySelector("code");
    copyText(code.textContent).then(function (ok) { flash(button, ok ? "Copied" : "Copy failed"); });
  });
  initMessageActions();
}

/* Regenerate, alternatives, edit, retry: buttons of the messages, delegated. */
function initMessageActions() {
  els.thread.addEventListener("click", function (event) {
    const button = event.target.closest("button[data-action]");
    if (!button || button.disabled) return;
    const article = button.closest("[data-testid=message]");
    const view = article && state.views.get(parseInt(article.dataset.id || "", 10));
    const action = button.dataset.action;
    if (action === "resend") {
      resend({ el: article, content: article.querySelector("[data-testid=message-content]").textContent });
      return;
    }
    if (!view) return;
    if (action === "regenerate" || action === "retry") regenerate(view);
    else if (action === "alternative" && button.dataset.target) selectAlternative(view, parseInt(button.dataset.target, 10));
    else if (action === "edit") { startEdit(view); scheduleContextCount(0); }
    else if (action === "edit-cancel") { cancelEdit(view); scheduleContextCount(0); }
    else if (action === "edit-save") saveEdit(view);
  });
  els.thread.addEventListener("keydown", function (event) {
    if (!event.target.classList || !event.target.classList.contains("edit-input")) return;
    const view = state.editing;
    if (!view) return;
    if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      cancelEdit(view);
      scheduleContextCount(0);
    } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      saveEdit(view);
    }
  });
  els.thread.addEventListener("input", function (event) {
    if (event.target.classList && event.target.classList.contains("edit-input")) scheduleContextCount();
  });
}

/* The export button: a small menu of two downloads of the conversation shown. */
function initExport() {
  const toggle = function (open) {
    els.exportMenu.hidden = !open;
    els.exportBtn.setAttribute("aria-expanded", open ? "true" : "false");
  };
  els.exportBtn.addEventListener("click", function () {
    if (!state.current) return;
    const base = "/api/conversations/" + state.current.id + "/export?format=";
    els.exportMarkdown.href = base + "markdown";
    els.exportJson.href = base + "json";
    toggle(els.exportMenu.hidden);
    if (!els.exportMenu.hidden) els.exportMarkdown.focus();
  });
  els.exportMenu.addEventListener("click", function () { setTimeout(function () { toggle(false); }, 0); });
  els.exportMenu.addEventListener("keydown", function (event) {
    if (event.key === "Escape") { event.stopPropagation(); toggle(false); els.exportBtn.focus(); }
  });
  document.addEventListener("click", function (event) {
    if (!els.exportMenu.hidden && !event.target.closest("#export")) toggle(false);
  });
}

function initNavigation() {
  els.convList.addEventListener("click", function (event) {
    const rename = event.target.closest("button[data-rename]");
    if (rename) {
      event.preventDefault();
      startRename(parseInt(rename.dataset.rename, 10));
      return;
    }
    const del = event.target.closest("button[data-delete]");
    if (del) {
      event.preventDefault();
      deleteConversation(parseInt(del.dataset.delete, 10));
      return;
    }
    const item = event.target.closest("a.conv-item");
    if (!item || !isPlainClick(event) || event.button !== 0) return;
    event.preventDefault();
    const id = parseInt(item.dataset.id, 10);
    if (isCurrent(id)) closeSidebarOnMobile();
    else openConversation(id, "push");
  });
  els.newChat.addEventListener("click", startNewChat);
  els.newChatMini.addEventListener("click", startNewChat);
  els.brand.addEventListener("click", function (event) {
    if (isPlainClick(event)) startNewChat(event);
  });
  window.addEventListener("popstate", function () {
    const m = /^\/c\/(\d+)$/.exec(window.location.pathname);
    if (m) openConversation(parseInt(m[1], 10), null);
    else newChat(null);
  });
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    if (body.classList.contains("sidebar-open")) toggleSidebar(false);
    else if (!els.settings.hidden && els.settings.contains(document.activeElement)) toggleSettings(false);
  });
}

async function start() {
  initTheme();
  initScroll();
  initSidebar();
  initSettings();
  initComposer();
  initNavigation();
  initExport();
  updateEmpty();
  updateComposer();
  const initial = parseInt(body.dataset.conversationId || "", 10);
  const models = loadModels();
  const list = refreshConversations();
  await models;
  if (initial) await openConversation(initial, null);
  else newChat(null);
  await list;
  highlightActive();
}

start();

/* The chat page's entry point (<script type="module">): wires the views together and starts. */
import { copyText, flash } from "./dom.js";
import { autosize, fillPrompt, updateComposer } from "./composer.js";
import { deleteConversation, newChat, openConversation, send } from "./conversation.js";
import { renderAnswer } from "./answer.js";
import * as Markdown from "./markdown.js";
import { initSettings, loadModels, toggleSettings } from "./models.js";
import { initScroll } from "./scroll.js";
import { closeSidebarOnMobile, highlightActive, initSidebar, refreshConversations, toggleSidebar } from "./sidebar.js";
import { body, els, isCurrent } from "./state.js";
import { stopStreaming } from "./stream.js";
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
}

function initNavigation() {
  els.convList.addEventListener("click", function (event) {
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
  initScroll();
  initSidebar();
  initSettings();
  initComposer();
  initNavigation();
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

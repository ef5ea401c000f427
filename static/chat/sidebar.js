/* The conversation list, newest first and grouped by day; a drawer on narrow screens and
 * collapsible on wide ones. */
import { api } from "./api.js";
import { h, icon } from "./dom.js";
import { body, els, mobile, state } from "./state.js";

const DAY = 86400000;

function dayGroup(iso) {
  const now = new Date();
  const startOfToday = new Date(now.getFullYear(), now.getMonth(), now.getDate()).getTime();
  const t = new Date(iso).getTime();
  if (t >= startOfToday) return "Today";
  if (t >= startOfToday - DAY) return "Yesterday";
  if (t >= startOfToday - 7 * DAY) return "Previous 7 days";
  if (t >= startOfToday - 30 * DAY) return "Previous 30 days";
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
  els.convList.replaceChildren(els.convEmpty, ...nodes);
  highlightActive();
}

/* Mark the conversation shown (state.activeId) as the current page. */
export function highlightActive() {
  const id = state.activeId === null ? null : String(state.activeId);
  els.convList.querySelectorAll(".conv-item").forEach(function (a) {
    const active = a.dataset.id === id;
    a.classList.toggle("active", active);
    if (active) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  });
}

/* Add or move `conv` to its place in the list (it was just created or changed). */
export function upsertConversation(conv) {
  state.conversations = [conv].concat(state.conversations.filter(function (c) { return c.id !== conv.id; }));
  state.conversations.sort(function (a, b) { return (b.updated_at || "").localeCompare(a.updated_at || ""); });
  renderSidebar();
}

export function removeConversation(id) {
  state.conversations = state.conversations.filter(function (c) { return c.id !== id; });
  renderSidebar();
}

export async function refreshConversations() {
  try {
    state.conversations = await api("GET", "/api/conversations");
    renderSidebar();
  } catch (err) {
    /* the list stays as it was */
  }
}

export function toggleSidebar(open) {
  if (mobile.matches) {
    body.classList.toggle("sidebar-open", open);
  } else {
    body.classList.toggle("sidebar-collapsed", !open);
    try { window.localStorage.setItem("wai.sidebar", open ? "open" : "collapsed"); } catch (e) { /* ignore */ }
  }
}

export function closeSidebarOnMobile() {
  if (mobile.matches) body.classList.remove("sidebar-open");
}

export function initSidebar() {
  els.menu.addEventListener("click", function () { toggleSidebar(true); });
  els.sidebarClose.addEventListener("click", function () { toggleSidebar(false); });
  els.backdrop.addEventListener("click", function () { toggleSidebar(false); });
  try {
    if (window.localStorage.getItem("wai.sidebar") === "collapsed") body.classList.add("sidebar-collapsed");
  } catch (e) { /* ignore */ }
}

/* The conversation list, most recently active first and grouped by day, a page at a time (more
 * load as its end scrolls into view); searched on the server by title and content; renamed in
 * place. A drawer on narrow screens and collapsible on wide ones. */
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

const PAGE = 50;
let renderPending = false; // a rename is in progress: the list is redrawn when it ends
let loadingMore = false;
let searchTimer = null;

function renderSidebar() {
  if (state.renaming) {
    renderPending = true;
    return;
  }
  const nodes = [];
  let group = null;
  state.conversations.forEach(function (conv) {
    const label = state.query ? "Results" : dayGroup(conv.updated_at || conv.created_at);
    if (label !== group) {
      group = label;
      nodes.push(h("h2", { class: "conv-group", text: label }));
    }
    const item = h("a", {
      class: "conv-item", href: "/c/" + conv.id, "data-testid": "conversation", "data-id": String(conv.id),
      title: conv.title || "New chat",
    }, h("span", { class: "conv-title", text: conv.title || "New chat" }),
    state.query && conv.match ? h("span", { class: "conv-match", "data-testid": "search-match", text: conv.match }) : null);
    const rename = h("button", { type: "button", class: "conv-action conv-rename", "aria-label": "Rename conversation",
      title: "Rename", "data-rename": String(conv.id), "data-testid": "rename" }, icon("rename", 15));
    const del = h("button", { type: "button", class: "conv-action conv-delete", "aria-label": "Delete conversation",
      title: "Delete conversation", "data-delete": String(conv.id) }, icon("trash", 15));
    nodes.push(h("div", { class: "conv-row" }, item, rename, del));
  });
  els.convEmpty.hidden = state.conversations.length > 0;
  els.convEmpty.textContent = state.query ? "No conversations match \u201c" + state.query + "\u201d." : "No conversations yet.";
  els.convMore.hidden = !state.cursor;
  els.convList.replaceChildren(els.convEmpty, ...nodes, els.convMore);
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

function byActivity(a, b) {
  return (b.updated_at || "").localeCompare(a.updated_at || "") || b.id - a.id;
}

/* Add or move `conv` to its place in the list (it was just created or changed). */
export function upsertConversation(conv) {
  if (state.query && !state.conversations.some(function (c) { return c.id === conv.id; })) return;
  const old = state.conversations.find(function (c) { return c.id === conv.id; });
  const merged = Object.assign({}, old || {}, conv);
  state.conversations = [merged].concat(state.conversations.filter(function (c) { return c.id !== conv.id; }));
  state.conversations.sort(byActivity);
  renderSidebar();
}

export function removeConversation(id) {
  state.conversations = state.conversations.filter(function (c) { return c.id !== id; });
  renderSidebar();
}

async function fetchPage(cursor) {
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (state.query) params.set("q", state.query);
  if (cursor) params.set("cursor", cursor);
  const response = await fetch("/api/conversations?" + params.toString(), {
    headers: { Accept: "application/json" }, credentials: "same-origin",
  });
  const data = await response.json();
  if (!response.ok || !data.success) throw new Error("the list could not be loaded");
  return data;
}

/* The first page again (after an answer, or a new search); pages loaded further down stay. */
export async function refreshConversations() {
  const query = state.query;
  try {
    const data = await fetchPage(null);
    if (query !== state.query) return; // the search changed meanwhile
    const fresh = data.result;
    const ids = new Set(fresh.map(function (c) { return c.id; }));
    const firstLoad = state.conversations.length === 0 || state.listQuery !== query;
    const rest = firstLoad ? [] : state.conversations.filter(function (c) { return !ids.has(c.id); });
    state.conversations = fresh.concat(rest).sort(byActivity);
    if (firstLoad) state.cursor = data.result_info ? data.result_info.cursor : null;
    state.listQuery = query;
    renderSidebar();
  } catch (err) {
    if (!query || query !== state.query) return; // the list stays as it was
    state.conversations = []; // a search that failed says so, rather than showing the old list
    state.cursor = null;
    renderSidebar();
    els.convEmpty.textContent = "Search failed. Edit the search to try again.";
  }
}

/* The next page, when the end of the list scrolls into view. */
async function loadMore() {
  if (loadingMore || !state.cursor) return;
  loadingMore = true;
  const query = state.query;
  try {
    const data = await fetchPage(state.cursor);
    if (query !== state.query) return;
    const known = new Set(state.conversations.map(function (c) { return c.id; }));
    state.conversations = state.conversations.concat(data.result.filter(function (c) { return !known.has(c.id); }));
    state.cursor = data.result_info ? data.result_info.cursor : null;
    renderSidebar();
  } catch (err) {
    /* tried again when the end scrolls into view again */
  } finally {
    loadingMore = false;
  }
  if (state.cursor && isNearEnd()) loadMore();
}

function isNearEnd() {
  const list = els.convList;
  return list.scrollHeight - list.scrollTop - list.clientHeight < 200;
}

function search() {
  const query = els.search.value.trim();
  if (query === state.query) return;
  state.query = query;
  state.cursor = null;
  state.conversations = [];
  state.listQuery = null;
  refreshConversations();
}

/* Rename in place: Enter (or leaving the field) saves, Escape cancels. */
export function startRename(id) {
  const row = els.convList.querySelector(".conv-item[data-id='" + id + "']");
  const conv = state.conversations.find(function (c) { return c.id === id; });
  if (!row || !conv || state.renaming) return;
  state.renaming = id;
  const input = h("input", { type: "text", class: "conv-rename-input", "data-testid": "rename-input", maxlength: "200",
    "aria-label": "Conversation title" });
  input.value = conv.title || "";
  const parent = row.parentNode;
  row.hidden = true;
  parent.insertBefore(input, row);
  input.focus();
  input.select();
  let done = false;
  const finish = async function (save) {
    if (done) return;
    done = true;
    const title = input.value.trim();
    input.remove();
    row.hidden = false;
    state.renaming = null;
    if (save && title && title !== conv.title) {
      try {
        const updated = await api("PATCH", "/api/conversations/" + id, { title: title });
        conv.title = updated.title;
        if (state.current && state.current.id === id) {
          state.current.title = updated.title;
          els.title.textContent = updated.title;
          document.title = updated.title + " \u00b7 Workers AI";
        }
      } catch (err) {
        window.alert("Could not rename the conversation: " + err.message);
      }
    }
    renderPending = false;
    renderSidebar();
    const again = els.convList.querySelector("button[data-rename='" + id + "']");
    if (again) again.focus();
  };
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter") { event.preventDefault(); finish(true); }
    else if (event.key === "Escape") { event.preventDefault(); event.stopPropagation(); finish(false); }
  });
  input.addEventListener("blur", function () { finish(true); });
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
  els.search.addEventListener("input", function () {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(search, 250);
  });
  els.search.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && els.search.value) {
      event.stopPropagation();
      els.search.value = "";
      search();
    }
  });
  els.convList.addEventListener("scroll", function () { if (isNearEnd()) loadMore(); }, { passive: true });
  if ("IntersectionObserver" in window) {
    new IntersectionObserver(function (entries) {
      if (entries.some(function (e) { return e.isIntersecting; })) loadMore();
    }, { root: els.convList, rootMargin: "200px" }).observe(els.convMore);
  }
  els.menu.addEventListener("click", function () { toggleSidebar(true); });
  els.sidebarClose.addEventListener("click", function () { toggleSidebar(false); });
  els.backdrop.addEventListener("click", function () { toggleSidebar(false); });
  try {
    if (window.localStorage.getItem("wai.sidebar") === "collapsed") body.classList.add("sidebar-collapsed");
  } catch (e) { /* ignore */ }
}

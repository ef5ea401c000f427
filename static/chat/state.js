/* The page's elements and its one mutable state object, shared by the view modules. */
import { $ } from "./dom.js";

export const body = document.body;

export const els = {
  sidebar: $("sidebar"), backdrop: $("backdrop"), menu: $("menu-btn"), sidebarClose: $("sidebar-close"),
  convList: $("conv-list"), convEmpty: $("conv-empty"), newChat: $("new-chat"), newChatMini: $("new-chat-mini"),
  brand: $("brand-link"), model: $("model-select"), title: $("topbar-title"),
  settingsBtn: $("settings-btn"), settings: $("settings"), systemPrompt: $("system-prompt"),
  maxTokens: $("max-tokens"), temperature: $("temperature"), limits: $("model-limits"),
  jsonOutput: $("json-output"), jsonSchema: $("json-schema"), jsonSchemaField: $("json-schema-field"),
  jsonSchemaError: $("json-schema-error"),
  scroller: $("messages"), thread: $("thread"), empty: $("empty-state"), suggestions: $("suggestions"),
  jump: $("jump"), composer: $("composer"), prompt: $("prompt"), send: $("send"), stop: $("stop"),
  hintModel: $("hint-model"), contextMeter: $("context-meter"), contextCount: $("context-count"),
  contextDrop: $("context-drop"), search: $("conv-search"), convMore: $("conv-more"), exportBtn: $("export-btn"),
  exportMenu: $("export-menu"), exportMarkdown: $("export-markdown"), exportJson: $("export-json"),
};

export const state = {
  models: [],
  conversations: [],
  current: null, // the open conversation (JSON from the API) or null for a new chat
  views: new Map(), // message id -> MessageView
  stream: null, // {view, source, conversationId, stopping}
  sending: false,
  stick: true, // autoscroll while the reader is at the bottom
  loadToken: 0,
  activeId: null, // the conversation shown (or being opened) in the sidebar
  busy: false, // an answer is being sent or written: branch actions wait
  editing: null, // the user message view being edited
  selectToken: 0, // the newest alternative asked for (older answers are dropped)
  query: "", // the sidebar's search
  cursor: null, // the next page of the sidebar (null: no more)
};

export const mobile = window.matchMedia("(max-width: 768px)");
export const finePointer = window.matchMedia("(pointer: fine)");

/* The conversation open now is still `id` (the user may have moved on while a request ran). */
export function isCurrent(id) {
  return !!state.current && state.current.id === id;
}

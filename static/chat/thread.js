/* The thread of messages of the conversation shown, and the welcome screen when it is empty. */
import { MessageView } from "./message.js";
import { els, state } from "./state.js";
import { detachStream } from "./stream.js";

export function clearThread() {
  detachStream();
  state.views.clear();
  state.editing = null;
  els.thread.replaceChildren();
}

export function addView(msg) {
  const view = new MessageView(msg);
  view.setBusy(state.busy);
  if (view.id) state.views.set(view.id, view);
  els.thread.appendChild(view.el);
  updateEmpty();
  return view;
}

export function updateEmpty() {
  const empty = els.thread.children.length === 0;
  els.empty.hidden = !empty;
  els.scroller.classList.toggle("is-empty", empty);
}

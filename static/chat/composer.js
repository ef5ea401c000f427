/* The message box: its height follows the text, and Send and Stop follow the page's state. */
import { els, state } from "./state.js";

export function updateComposer() {
  const streaming = !!state.stream;
  els.send.hidden = streaming;
  els.stop.hidden = !streaming;
  els.stop.disabled = !streaming || state.stream.stopping;
  els.send.disabled = state.sending || !els.prompt.value.trim();
  els.composer.classList.toggle("is-busy", streaming || state.sending);
  const busy = streaming || state.sending;
  if (busy !== state.busy) { // regenerate, edit and alternatives wait for the answer being written
    state.busy = busy;
    state.views.forEach(function (view) { view.setBusy(busy); });
  }
}

/* Grow with the text up to 240px (style properties set from script are allowed by the CSP). */
export function autosize() {
  const p = els.prompt;
  p.style.height = "auto";
  p.style.height = Math.min(p.scrollHeight, 240) + "px";
}

/* Put `text` in the box, ready to edit or send. */
export function fillPrompt(text) {
  els.prompt.value = text;
  autosize();
  updateComposer();
}

/* The value of a number field, or undefined when it is empty or not a number. */
export function readNumber(input, parse) {
  const raw = input.value.trim();
  if (!raw) return undefined;
  const value = parse(raw);
  return Number.isFinite(value) ? value : undefined;
}

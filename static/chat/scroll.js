/* The message list follows a growing answer while the reader stays at the bottom; scrolled up,
 * it stays put and a "jump to the latest" button appears. */
import { els, state } from "./state.js";

function atBottom() {
  const s = els.scroller;
  return s.scrollHeight - s.scrollTop - s.clientHeight < 48;
}

export function scrollToBottom() {
  els.scroller.scrollTop = els.scroller.scrollHeight;
  state.stick = true;
  els.jump.hidden = true;
}

/* After the thread grew: follow it, or offer the jump button. */
export function autoscroll() {
  if (state.stick) {
    els.scroller.scrollTop = els.scroller.scrollHeight;
  } else {
    els.jump.hidden = atBottom();
  }
}

export function initScroll() {
  els.scroller.addEventListener("scroll", function () {
    state.stick = atBottom();
    els.jump.hidden = state.stick;
  }, { passive: true });
  els.jump.addEventListener("click", scrollToBottom);
}

/* One message in the thread: a user's bubble, or an assistant's answer rendered as Markdown with
 * its state (streaming, done, stopped, error), statistics and a copy button. */
import { hintFor } from "./api.js";
import { copyText, flash, formatNumber, h, icon, statusText } from "./dom.js";
import { AnswerRenderer } from "./render.js";
import { autoscroll } from "./scroll.js";

export class MessageView {
  constructor(msg) {
    this.role = msg.role;
    this.id = msg.id || null;
    this.content = "";
    this.renderQueued = false;
    this.el = h("article", { class: "msg msg-" + msg.role, "data-testid": "message", "data-role": msg.role });
    this.contextNote = h("div", { class: "context-note", text: "Outside the model's context", hidden: true,
      title: "Older than what fits in the model's context window: the model no longer sees this message." });
    this.body = h("div", { class: "msg-body" }, this.contextNote);
    this.altNav = alternativesNav();
    if (msg.role === "user") {
      this.contentEl = h("div", { class: "bubble", "data-testid": "message-content" });
      this.editBtn = actionButton("edit", "edit", "Edit and resend");
      this.foot = h("div", { class: "msg-foot msg-foot-user" }, this.altNav.el, this.editBtn);
      this.body.append(this.contentEl, this.foot);
      this.el.appendChild(this.body);
    } else {
      this.avatar = h("div", { class: "msg-avatar", "aria-hidden": "true" }, icon("bot", 16));
      this.contentEl = h("div", { class: "md", "data-testid": "message-content" });
      this.typing = h("div", { class: "typing", role: "img", "aria-label": "Writing" }, h("span"), h("span"), h("span"));
      this.statusEl = h("div", { class: "msg-status", hidden: true });
      this.copyBtn = h("button", { type: "button", class: "msg-action", "data-testid": "copy", title: "Copy",
        "aria-label": "Copy answer" }, icon("copy", 16));
      this.statsEl = h("span", { class: "msg-stats", "data-testid": "stats" });
      this.badge = h("span", { class: "msg-badge", hidden: true });
      this.regenerateBtn = actionButton("regenerate", "regenerate", "Regenerate answer");
      this.retryBtn = h("button", { type: "button", class: "msg-retry", "data-action": "retry", "data-testid": "retry",
        hidden: true }, icon("regenerate", 15), h("span", { text: "Retry" }));
      this.foot = h("div", { class: "msg-foot" }, this.altNav.el, this.copyBtn, this.regenerateBtn, this.badge,
        this.statsEl);
      this.statusEl.after(this.retryBtn);
      this.body.append(this.contentEl, this.typing, this.statusEl, this.foot);
      this.el.append(this.avatar, this.body);
      this.copyBtn.addEventListener("click", () => {
        copyText(this.content).then((ok) => flash(this.copyBtn, ok ? "Copied" : "Copy failed"));
      });
    }
    this.update(msg);
  }

  update(msg) {
    if (msg.id) {
      this.id = msg.id;
      this.el.dataset.id = String(msg.id);
    }
    if (this.role === "user") this.foot.hidden = !this.id || !!this.editing;
    if (msg.parent_id !== undefined) this.parentId = msg.parent_id;
    if (msg.sibling_ids) this.siblings = msg.sibling_ids;
    this.setAlternatives();
    this.setInContext(msg.in_context !== false);
    this.content = msg.content || "";
    if (this.role === "assistant") {
      this.streamUrl = msg.stream_url || this.streamUrl;
      this.setStats(msg.completion_tokens, msg.time_to_first_token_ms, msg.tokens_per_second, msg.prompt_tokens);
      this.setState(msg.state || "done", msg.error);
    }
    this.render(); // saved text shows at once; streamed pieces are batched per frame
  }

  /* "2 / 3" with previous/next buttons when this message has alternatives (same parent). */
  setAlternatives() {
    const ids = this.siblings || [];
    const at = ids.indexOf(this.id);
    const nav = this.altNav;
    nav.el.hidden = ids.length < 2 || at < 0;
    if (nav.el.hidden) return;
    nav.index.textContent = (at + 1) + " / " + ids.length;
    nav.index.setAttribute("aria-label", (this.role === "user" ? "Version " : "Answer ") + (at + 1) + " of " + ids.length);
    nav.atFirst = at === 0;
    nav.atLast = at === ids.length - 1;
    nav.prev.disabled = nav.atFirst || !!this.busy;
    nav.next.disabled = nav.atLast || !!this.busy;
    nav.prev.dataset.target = at > 0 ? String(ids[at - 1]) : "";
    nav.next.dataset.target = at < ids.length - 1 ? String(ids[at + 1]) : "";
  }

  /* The message's text in a box, to change and send again as a new branch. */
  startEdit() {
    if (this.editing) return;
    this.editing = h("textarea", { class: "edit-input", "data-testid": "edit-input", rows: "3",
      "aria-label": "Edit your message" });
    this.editing.value = this.content;
    const save = h("button", { type: "button", class: "btn btn-primary", "data-action": "edit-save",
      "data-testid": "edit-save", text: "Save and send" });
    const cancel = h("button", { type: "button", class: "btn", "data-action": "edit-cancel",
      "data-testid": "edit-cancel", text: "Cancel" });
    this.editForm = h("div", { class: "edit-form" }, this.editing, h("div", { class: "edit-actions" }, cancel, save));
    this.contentEl.hidden = true;
    this.foot.hidden = true;
    this.contentEl.after(this.editForm);
    this.editing.style.height = Math.min(this.editing.scrollHeight + 2, 320) + "px";
    this.editing.focus();
    this.editing.setSelectionRange(this.editing.value.length, this.editing.value.length);
  }

  endEdit() {
    if (!this.editing) return;
    this.editForm.remove();
    this.editing = null;
    this.editForm = null;
    this.contentEl.hidden = false;
    this.foot.hidden = false;
  }

  /* Regenerate, edit and alternatives wait while an answer is being written. */
  setBusy(busy) {
    if (this.regenerateBtn) this.regenerateBtn.disabled = busy;
    if (this.retryBtn) this.retryBtn.disabled = busy;
    if (this.editBtn) this.editBtn.disabled = busy;
    this.busy = busy;
    this.altNav.prev.disabled = busy || !!this.altNav.atFirst;
    this.altNav.next.disabled = busy || !!this.altNav.atLast;
  }

  /* Marked while the draft is typed: this message will not fit in the next prompt. */
  setWillDrop(drop) {
    this.el.classList.toggle("will-drop", drop);
    this.contextNote.textContent = drop ? "Will fall out of the model's context" : "Outside the model's context";
    this.contextNote.hidden = !drop && !this.el.classList.contains("out-of-context");
  }

  setInContext(inContext) {
    this.el.classList.toggle("out-of-context", !inContext);
    this.contextNote.hidden = inContext;
  }

  append(piece) {
    this.content += piece;
    this.queueRender();
  }

  queueRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => {
      this.renderQueued = false;
      this.render();
      autoscroll();
    });
  }

  render() {
    if (this.role === "user") {
      this.contentEl.textContent = this.content;
      return;
    }
    if (this.caret) this.caret.remove(); // it may sit in a block that is kept
    if (!this.answer) this.answer = new AnswerRenderer(this.contentEl); // finished blocks are rendered once
    this.answer.update(this.content, this.state !== "streaming");
    this.typing.hidden = !(this.state === "streaming" && this.content === "");
    if (this.state === "streaming") this.placeCaret();
  }

  /* A pulsing dot after the last words while the answer is being written. */
  placeCaret() {
    let node = this.contentEl;
    while (node.lastElementChild && /^(OL|UL|LI|BLOCKQUOTE)$/.test(node.lastElementChild.tagName)) {
      node = node.lastElementChild;
    }
    const last = node.tagName === "LI" && !node.lastElementChild ? node : node.lastElementChild;
    if (!last || !/^(P|LI|H[1-6])$/.test(last.tagName)) return;
    this.caret = this.caret || h("span", { class: "caret", "aria-hidden": "true" });
    last.appendChild(this.caret);
  }

  setState(value, error) {
    const finished = this.state === "streaming" && value !== "streaming";
    this.state = value;
    if (finished) this.render(); // the final text and the final state appear together
    this.el.dataset.state = value;
    this.el.classList.toggle("streaming", value === "streaming");
    this.typing.hidden = !(value === "streaming" && this.content === "");
    this.foot.hidden = value === "streaming";
    if (value === "error") {
      this.showStatus("error", error || "Something went wrong while generating this answer.");
    } else {
      this.statusEl.hidden = true;
    }
    this.retryBtn.hidden = value !== "error";
    this.badge.hidden = value !== "stopped";
    this.badge.textContent = this.content ? "Stopped" : "Stopped before any text was written";
    this.copyBtn.hidden = !this.content;
  }

  showStatus(kind, text, hint) {
    const s = this.statusEl;
    s.replaceChildren();
    s.className = "msg-status msg-status-" + kind;
    s.setAttribute("role", kind === "error" ? "alert" : "status");
    if (kind === "error") s.dataset.testid = "message-error";
    else delete s.dataset.testid;
    if (kind === "error") s.appendChild(icon("alert", 16));
    s.appendChild(statusText(text, hint));
    s.hidden = false;
  }

  setStats(completion, ttft, tps, prompt) {
    if (this.role !== "assistant") return;
    const parts = [];
    if (completion !== null && completion !== undefined) parts.push(formatNumber(completion) + " tokens");
    if (ttft !== null && ttft !== undefined) parts.push((ttft / 1000).toFixed(2) + " s to first token");
    if (tps) parts.push(Number(tps).toFixed(1) + " tokens/s");
    this.statsEl.textContent = parts.join(" · ");
    this.statsEl.title = prompt ? formatNumber(prompt) + " prompt tokens" : "";
  }

  /* A user message that the server refused: shown with the reason (the text goes back in the box). */
  showRejected(err) {
    this.body.appendChild(h("div", { class: "msg-status msg-status-error", role: "alert", "data-testid": "message-error" },
      icon("alert", 16), statusText("Not sent: " + err.message, hintFor(err))));
    this.body.appendChild(h("button", { type: "button", class: "msg-retry", "data-action": "resend", "data-testid": "retry" },
      icon("regenerate", 15), h("span", { text: "Retry" })));
    if (this.foot) this.foot.hidden = true;
    this.el.classList.add("rejected");
  }
}

function actionButton(action, iconName, label) {
  return h("button", { type: "button", class: "msg-action", "data-action": action, "data-testid": action, title: label,
    "aria-label": label }, icon(iconName, 16));
}

function alternativesNav() {
  const prev = h("button", { type: "button", class: "msg-action", "data-action": "alternative", "data-testid": "alt-prev",
    title: "Previous version", "aria-label": "Previous version" }, icon("prev", 16));
  const next = h("button", { type: "button", class: "msg-action", "data-action": "alternative", "data-testid": "alt-next",
    title: "Next version", "aria-label": "Next version" }, icon("next", 16));
  const index = h("span", { class: "alt-index", "data-testid": "alt-index" });
  return { el: h("div", { class: "alt-nav", hidden: true }, prev, index, next), prev: prev, next: next, index: index };
}

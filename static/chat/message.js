/* One message in the thread: a user's bubble, or an assistant's answer rendered as Markdown with
 * its state (streaming, done, stopped, error), statistics and a copy button. */
import { hintFor } from "./api.js";
import { copyText, flash, formatNumber, h, icon, statusText } from "./dom.js";
import { renderAnswer } from "./answer.js";
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
    if (msg.role === "user") {
      this.contentEl = h("div", { class: "bubble", "data-testid": "message-content" });
      this.body.appendChild(this.contentEl);
      this.el.appendChild(this.body);
    } else {
      this.avatar = h("div", { class: "msg-avatar", "aria-hidden": "true" }, icon("bot", 16));
      this.contentEl = h("div", { class: "md", "data-testid": "message-content" });
      this.typing = h("div", { class: "typing", "aria-label": "Writing" }, h("span"), h("span"), h("span"));
      this.statusEl = h("div", { class: "msg-status", hidden: true });
      this.copyBtn = h("button", { type: "button", class: "msg-action", "data-testid": "copy", title: "Copy",
        "aria-label": "Copy answer" }, icon("copy", 16));
      this.statsEl = h("span", { class: "msg-stats", "data-testid": "stats" });
      this.badge = h("span", { class: "msg-badge", hidden: true });
      this.foot = h("div", { class: "msg-foot" }, this.copyBtn, this.badge, this.statsEl);
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
    this.setInContext(msg.in_context !== false);
    this.content = msg.content || "";
    if (this.role === "assistant") {
      this.streamUrl = msg.stream_url || this.streamUrl;
      this.setStats(msg.completion_tokens, msg.time_to_first_token_ms, msg.tokens_per_second, msg.prompt_tokens);
      this.setState(msg.state || "done", msg.error);
    }
    this.render(); // saved text shows at once; streamed pieces are batched per frame
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
    this.contentEl.replaceChildren(renderAnswer(this.content));
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
    if (last && /^(P|LI|H[1-6])$/.test(last.tagName)) last.appendChild(h("span", { class: "caret", "aria-hidden": "true" }));
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
    this.el.classList.add("rejected");
  }
}

/* An answer rendered while it is written, without starting over on every token: the blocks that
 * can no longer change (markdown.js renderGrowing says which) and finished tool blocks are rendered
 * once and kept; only the growing end is rendered again on each update. Once the answer is
 * finished, the container holds exactly what renderAnswer(text) gives (answer.js); a whole-JSON
 * answer is rendered in full, as it only becomes one when its last character arrives. */
import { TOOL, renderAnswer, toolBlock, wholeJson } from "./answer.js";
import { render, renderGrowing } from "./markdown.js";

export class AnswerRenderer {
  constructor(container) {
    this.container = container;
    this.reset();
  }

  reset() {
    this.container.replaceChildren();
    this.settled = ""; // the text that the kept nodes show: a prefix of every later text
    this.kept = 0; // the container's first nodes, kept
    this.tail = []; // the nodes after them, rendered again on each update
    this.text = null;
    this.final = false;
    this.whole = false; // the container holds a full render (a whole-JSON answer)
  }

  /* Show `text`, which extends the previous one while the answer streams (anything else starts
   * over). `final`: the answer is finished (code blocks still open are highlighted too). */
  update(text, final) {
    text = String(text || "");
    final = Boolean(final);
    if (text === this.text && final === this.final) return;
    const lost = this.container.childNodes.length !== this.kept + this.tail.length; // emptied by someone else
    if (this.whole || lost || !text.startsWith(this.settled)) this.reset();
    this.text = text;
    this.final = final;
    if (wholeJson(text) !== null) {
      this.container.replaceChildren(renderAnswer(text));
      this.whole = true;
      this.kept = this.container.childNodes.length;
      return;
    }
    for (const node of this.tail) node.remove();
    this.tail = [];
    let pos = this.settled.length;
    const tool = new RegExp(TOOL.source, "g");
    for (;;) {
      tool.lastIndex = pos;
      const m = tool.exec(text);
      if (m) {
        // the Markdown before a tool block is finished; so is the block once its closing tag is here
        this.keep(render(text.slice(pos, m.index)));
        if (m[0].endsWith("</" + m[1] + ">")) {
          this.keep(toolBlock(m[1], m[2], true));
          pos = m.index + m[0].length;
          this.settled = text.slice(0, pos);
          continue;
        }
        this.settled = text.slice(0, m.index);
        this.show(toolBlock(m[1], m[2], final));
      } else if (final) {
        this.show(render(text.slice(pos)));
      } else {
        const growing = renderGrowing(text.slice(pos));
        const nodes = Array.from(growing.frag.childNodes);
        nodes.slice(0, growing.settledNodes).forEach((node) => this.keep(node));
        this.settled = text.slice(0, pos + growing.settledChars);
        nodes.slice(growing.settledNodes).forEach((node) => this.show(node));
      }
      return;
    }
  }

  keep(node) {
    this.kept += node.nodeType === Node.DOCUMENT_FRAGMENT_NODE ? node.childNodes.length : 1;
    this.container.appendChild(node);
  }

  show(node) {
    this.tail.push(...(node.nodeType === Node.DOCUMENT_FRAGMENT_NODE ? node.childNodes : [node]));
    this.container.appendChild(node);
  }
}

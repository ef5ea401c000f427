/* Finished answers, read out by screen readers: a short text put in the page's polite live region
 * (#announcer in chat.html) when an answer ends. stream.js calls announceAnswer. */
const MAX_CHARS = 300;

/* The answer's words as a reader hears them: rendered text without the code blocks' buttons. */
function plainText(view) {
  const copy = view.contentEl.cloneNode(true);
  copy.querySelectorAll("button, .code-head, .caret").forEach(function (node) { node.remove(); });
  return copy.textContent.replace(/\s+/g, " ").trim();
}

function say(text) {
  const region = document.getElementById("announcer");
  if (!region) return;
  // emptied first, then filled a moment later, so the same words twice are still announced
  region.textContent = "";
  clearTimeout(region._announce);
  region._announce = setTimeout(function () { region.textContent = text; }, 100);
}

/* Announce how the answer shown by `view` ended (done, stopped or failed). */
export function announceAnswer(view, error) {
  const text = plainText(view);
  const excerpt = text.length > MAX_CHARS ? text.slice(0, MAX_CHARS) + "…" : text;
  if (view.state === "error") say("Answer failed: " + (error || "something went wrong while generating it."));
  else if (view.state === "stopped") say(excerpt ? "Answer stopped: " + excerpt : "Answer stopped before any text was written.");
  else if (view.state === "done") say("Answer finished: " + (excerpt || "(empty)"));
}

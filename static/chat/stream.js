/* Following an answer while it is written: attach to its SSE stream (from a character offset, so a
 * reload resumes without gaps or repeats), recover when the stream is refused, and stop it. */
import { announceAnswer } from "./announce.js";
import { api, conversationUrl, followStream } from "./api.js";
import { updateComposer } from "./composer.js";
import { codePoints } from "./dom.js";
import { scheduleContextCount } from "./context.js";
import { refreshConversations } from "./sidebar.js";
import { isCurrent, state } from "./state.js";

const MAX_RETRIES = 5;

export function detachStream() {
  if (state.stream) {
    state.stream.source.close();
    state.stream = null;
  }
  updateComposer();
}

/* Follow `view`'s stream from character `offset` until [DONE] or an error. */
export function attach(view, offset, attempt) {
  detachStream();
  attempt = attempt || 0;
  const conversationId = state.current && state.current.id;
  const stream = { view: view, source: null, conversationId: conversationId, stopping: false };
  const finish = function () {
    stream.source.close();
    if (state.stream === stream) state.stream = null;
    updateComposer();
    scheduleContextCount(); // the answer is part of the next prompt now
  };
  stream.source = followStream(view.streamUrl + (offset ? "?offset=" + offset : ""), {
    event(data) {
      if (data.response) view.append(data.response);
      if (data.state) { // the final event: everything has arrived ([DONE] follows)
        const usage = data.usage || {};
        finish();
        view.setStats(usage.completion_tokens, data.time_to_first_token_ms, data.tokens_per_second, usage.prompt_tokens);
        view.setState(data.state);
        announceAnswer(view, data.error);
        refreshConversations();
      }
    },
    done() {
      finish();
      if (view.state === "streaming") { view.setState("done"); announceAnswer(view); }
      refreshConversations();
    },
    failed(message) {
      finish();
      view.setState("error", message);
      announceAnswer(view, message);
    },
    lost() { // refused (e.g. 404): ask the API what happened
      finish();
      recoverStream(view, conversationId, attempt);
    },
  });
  state.stream = stream;
  view.setState("streaming");
  updateComposer();
}

async function recoverStream(view, conversationId, attempt) {
  try {
    const conv = await api("GET", conversationUrl(conversationId));
    if (!isCurrent(conversationId)) return;
    const msg = (conv.messages || []).find(function (m) { return m.id === view.id; });
    if (!msg) return;
    view.update(msg);
    if (msg.state !== "streaming") announceAnswer(view, msg.error);
    if (msg.state === "streaming" && attempt < MAX_RETRIES) {
      setTimeout(function () {
        if (isCurrent(conversationId)) attach(view, codePoints(view.content), attempt + 1);
      }, 1000 * (attempt + 1));
    } else if (msg.state === "streaming") {
      view.showStatus("error", "Lost the connection to this answer.", "Reload the page to try again.");
    }
  } catch (err) {
    view.showStatus("error", "Lost the connection to this answer: " + err.message, "Reload the page to try again.");
  }
}

/* Ask the server to stop; the stream itself then ends with state "stopped" and [DONE]. */
export async function stopStreaming() {
  const stream = state.stream;
  if (!stream || stream.stopping || !state.current) return;
  stream.stopping = true;
  updateComposer();
  try {
    await api("POST", conversationUrl(state.current.id) + "/messages/" + stream.view.id + "/stop");
  } catch (err) {
    stream.stopping = false;
    updateComposer();
    stream.view.showStatus("error", "Could not stop: " + err.message);
  }
}

/* The page's API client: JSON calls to the conversation endpoints and the SSE stream follower. */

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function csrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : "";
}

export function conversationUrl(id) {
  return "/api/conversations/" + id;
}

/* One call; resolves with the envelope's `result`, rejects with an ApiError. A 401 (the session
 * ended) sends the browser to the sign-in page. `signal` (an AbortSignal) cancels it. */
export async function api(method, url, body, signal) {
  const options = { method: method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (signal) options.signal = signal;
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  if (method !== "GET") options.headers["X-CSRFToken"] = csrfToken();
  let response;
  try {
    response = await fetch(url, options);
  } catch (e) {
    if (signal && signal.aborted) throw new ApiError(0, 0, "cancelled");
    throw new ApiError(0, 0, "The server could not be reached. Check your connection and try again.");
  }
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (response.status === 401) {
    const loginUrl = document.body.dataset.loginUrl || "/accounts/login/";
    window.location.assign(loginUrl + "?next=" + encodeURIComponent(window.location.pathname));
  }
  if (!response.ok || !data || data.success === false) {
    const first = data && data.errors && data.errors[0];
    const message = first && first.message ? first.message : "Request failed (HTTP " + response.status + ").";
    throw new ApiError(response.status, first ? first.code : 0, message);
  }
  return data.result;
}

const HINTS = {
  409: "Wait for the current answer or stop it, then send again.",
  413: "Shorten the message, start a new chat, or lower max tokens.",
  429: "The server is busy. Try again in a moment.",
  503: "This model cannot answer right now.",
};

/* What the user can do about a refused request ("" when nothing in particular). */
export function hintFor(err) {
  return HINTS[err.status] || "";
}

/* Follow an answer's SSE stream: `data: {...}` events (on.event), `data: [DONE]` (on.done),
 * `event: error` sent by the server when the answer failed (on.failed with its message), and a
 * connection the server refused (on.lost, e.g. 404). While the connection merely drops, the browser
 * reconnects by itself and resumes with Last-Event-ID. Returns the EventSource (close() to stop). */
export function followStream(url, on) {
  const source = new EventSource(url);
  source.onmessage = function (event) {
    if (event.data === "[DONE]") {
      source.close();
      on.done();
      return;
    }
    let data;
    try { data = JSON.parse(event.data); } catch (e) { return; }
    on.event(data);
  };
  source.addEventListener("error", function (event) {
    if (event.data) {
      let message = "Generation failed.";
      try {
        const data = JSON.parse(event.data);
        if (data.errors && data.errors[0]) message = data.errors[0].message;
      } catch (e) { /* keep the generic message */ }
      source.close();
      on.failed(message);
    } else if (source.readyState === EventSource.CLOSED) {
      on.lost();
    }
  });
  return source;
}

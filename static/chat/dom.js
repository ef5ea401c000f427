/* Small DOM helpers shared by the page's views.
 *
 * Safety rule for the whole page: text from users and models only ever reaches the page through
 * textContent / createTextNode. Elements are built with createElement; innerHTML is never used,
 * and no inline style attribute is ever set (the Content-Security-Policy forbids them).
 */

export const $ = function (id) { return document.getElementById(id); };

/* h("a", {class, text, ...attributes}, ...children): an element; children may be strings. */
export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  Object.keys(attrs || {}).forEach(function (key) {
    const value = attrs[key];
    if (value === null || value === undefined || value === false) return;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  });
  children.forEach(function (child) {
    if (child === null || child === undefined) return;
    node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
  });
  return node;
}

const ICONS = {
  copy: "M8 8h10a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2H10a2 2 0 0 1-2-2zM16 8V6a2 2 0 0 0-2-2H6a2 2 0 0 0-2 2v8a2 2 0 0 0 2 2h2",
  check: "M5 12.5l4.5 4.5L19 7.5",
  bot: "M6 8h12M6 12h8M6 16h5",
  trash: "M4 7h16M10 11v6M14 11v6M6 7l1 12a2 2 0 0 0 2 2h6a2 2 0 0 0 2-2l1-12M9 7V4h6v3",
  alert: "M12 8v5M12 16.5v.5M10.3 3.9L2.4 18a2 2 0 0 0 1.7 3h15.8a2 2 0 0 0 1.7-3L13.7 3.9a2 2 0 0 0-3.4 0z",
  regenerate: "M20 11a8 8 0 1 0-2.3 5.7M20 5v6h-6",
  edit: "M12 20h8M16.5 3.5a2.1 2.1 0 0 1 3 3L7 19l-4 1 1-4z",
  prev: "M15 6l-6 6 6 6",
  next: "M9 6l6 6-6 6",
  rename: "M4 20h4L19 9l-4-4L4 16zM13.5 6.5l4 4",
  download: "M12 4v11M7 10l5 5 5-5M5 20h14",
};

export function icon(name, size) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", String(size || 16));
  svg.setAttribute("height", String(size || 16));
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", ICONS[name]);
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", "currentColor");
  path.setAttribute("stroke-width", name === "bot" ? "2.4" : "1.8");
  path.setAttribute("stroke-linecap", "round");
  path.setAttribute("stroke-linejoin", "round");
  svg.appendChild(path);
  return svg;
}

/* An error notice: the alert icon, the message and an optional hint under it. */
export function statusText(text, hint) {
  return h("div", { class: "status-text" }, h("span", { text: text }),
    hint ? h("span", { class: "status-hint", text: hint }) : null);
}

/* Python counts characters in code points; JavaScript strings in UTF-16 units. */
export function codePoints(text) {
  return Array.from(text).length;
}

export function formatNumber(n) {
  return Number(n).toLocaleString("en-US");
}

export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try { await navigator.clipboard.writeText(text); return true; } catch (e) { /* fall back */ }
  }
  const area = h("textarea", { class: "sr-only", readonly: true });
  area.value = text;
  document.body.appendChild(area);
  area.select();
  let ok = false;
  try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
  area.remove();
  return ok;
}

/* Brief feedback on a copy button: "Copied" (or the failure), then back to normal. */
export function flash(button, label) {
  const isText = button.classList.contains("code-copy");
  button.classList.add("copied");
  button.setAttribute("title", label);
  if (isText) button.textContent = label;
  else button.replaceChildren(icon(label === "Copied" ? "check" : "alert", 16));
  clearTimeout(button._flash);
  button._flash = setTimeout(function () {
    button.classList.remove("copied");
    button.setAttribute("title", "Copy");
    if (isText) button.textContent = "Copy";
    else button.replaceChildren(icon("copy", 16));
  }, 1500);
}

/* The dark/light toggle in the top bar. A choice overrides the system's prefers-color-scheme and is
 * remembered in localStorage ("wai.theme"); choosing the system's own theme again drops the
 * override, so the page follows the system once more. The choice is on <html data-theme>
 * (absent = follow the system), which static/theme-init.js applies before first paint. */
const KEY = "wai.theme";
const THEME_COLORS = { light: "#ffffff", dark: "#17181c" }; // as the theme-color metas in base.html
const systemDark = window.matchMedia("(prefers-color-scheme: dark)");

function systemTheme() {
  return systemDark.matches ? "dark" : "light";
}

/* The stored override ("dark" or "light"), or null to follow the system. */
export function storedTheme() {
  let value = null;
  try { value = window.localStorage.getItem(KEY); } catch (e) { /* storage refused */ }
  return value === "dark" || value === "light" ? value : null;
}

/* The theme the page shows now. */
export function currentTheme() {
  return document.documentElement.dataset.theme || systemTheme();
}

function applyTheme(choice) {
  const root = document.documentElement;
  if (choice) root.dataset.theme = choice;
  else delete root.dataset.theme;
  document.querySelectorAll('meta[name="color-scheme"]').forEach(function (meta) {
    meta.content = choice || "light dark";
  });
  document.querySelectorAll('meta[name="theme-color"]').forEach(function (meta) {
    meta.content = THEME_COLORS[choice || (meta.media.indexOf("dark") >= 0 ? "dark" : "light")];
  });
}

function saveTheme(choice) {
  try {
    if (choice) window.localStorage.setItem(KEY, choice);
    else window.localStorage.removeItem(KEY);
  } catch (e) { /* not remembered, still applied */ }
}

/* The button says what a press will do; its description says what is shown now. */
function label(button) {
  const now = currentTheme();
  const next = now === "dark" ? "light" : "dark";
  const why = document.documentElement.dataset.theme ? "your choice" : "as the system";
  button.setAttribute("aria-label", "Switch to " + next + " theme");
  button.title = "Switch to " + next + " theme (now " + now + ", " + why + ")";
  button.dataset.current = now;
}

export function toggleTheme() {
  const next = currentTheme() === "dark" ? "light" : "dark";
  const choice = next === systemTheme() ? null : next;
  applyTheme(choice);
  saveTheme(choice);
}

export function initTheme() {
  const button = document.getElementById("theme-toggle");
  applyTheme(storedTheme());
  if (!button) return;
  label(button);
  button.addEventListener("click", function () { toggleTheme(); label(button); });
  systemDark.addEventListener("change", function () { label(button); });
  window.addEventListener("storage", function (event) { // chosen in another tab
    if (event.key !== KEY && event.key !== null) return;
    applyTheme(storedTheme());
    label(button);
  });
}

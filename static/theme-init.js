/* Before first paint: apply the theme chosen with the page's toggle (localStorage "wai.theme") as
 * <html data-theme="dark|light">; without a choice the attribute stays absent and the system's
 * prefers-color-scheme decides. A classic script in <head> (the policy allows no inline script);
 * static/chat/theme.js owns the toggle and keeps this in step. */
(function () {
  var theme = null;
  try { theme = window.localStorage.getItem("wai.theme"); } catch (e) { /* storage refused */ }
  if (theme !== "dark" && theme !== "light") return;
  document.documentElement.setAttribute("data-theme", theme);
  var colors = { light: "#ffffff", dark: "#17181c" };
  var metas = document.querySelectorAll('meta[name="color-scheme"], meta[name="theme-color"]');
  for (var i = 0; i < metas.length; i++) {
    metas[i].setAttribute("content", metas[i].name === "color-scheme" ? theme : colors[theme]);
  }
})();

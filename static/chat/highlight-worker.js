/* The highlighter's own thread (a module worker started by highlight.js): highlight.js (vendored,
 * static/vendor/highlight) with the grammars the page knows. Highlighting a few kilobytes takes
 * tens of milliseconds, and guessing a language (every grammar in turn) over a hundred, so none of
 * it runs on the page's main thread. Receives {id, lang, code}; answers {id, html}, html being
 * highlight.js's markup or null when the code stays plain (unknown language, a guess too weak). */
import hljs from "../vendor/highlight/es/core.min.js";
import bash from "../vendor/highlight/es/languages/bash.min.js";
import c from "../vendor/highlight/es/languages/c.min.js";
import cpp from "../vendor/highlight/es/languages/cpp.min.js";
import css from "../vendor/highlight/es/languages/css.min.js";
import diff from "../vendor/highlight/es/languages/diff.min.js";
import go from "../vendor/highlight/es/languages/go.min.js";
import java from "../vendor/highlight/es/languages/java.min.js";
import javascript from "../vendor/highlight/es/languages/javascript.min.js";
import json from "../vendor/highlight/es/languages/json.min.js";
import markdown from "../vendor/highlight/es/languages/markdown.min.js";
import python from "../vendor/highlight/es/languages/python.min.js";
import rust from "../vendor/highlight/es/languages/rust.min.js";
import shell from "../vendor/highlight/es/languages/shell.min.js";
import sql from "../vendor/highlight/es/languages/sql.min.js";
import typescript from "../vendor/highlight/es/languages/typescript.min.js";
import xml from "../vendor/highlight/es/languages/xml.min.js";
import yaml from "../vendor/highlight/es/languages/yaml.min.js";

const GRAMMARS = { bash, c, cpp, css, diff, go, java, javascript, json, markdown, python, rust, shell, sql,
  typescript, xml, yaml };
for (const [name, grammar] of Object.entries(GRAMMARS)) hljs.registerLanguage(name, grammar);
hljs.registerAliases(["console", "terminal"], { languageName: "shell" });
hljs.registerAliases(["jsonc", "json5"], { languageName: "json" });
hljs.registerAliases(["py3", "python3"], { languageName: "python" });

const AUTO_MIN_RELEVANCE = 5; // below this a guess is noise (prose, program output): stays plain

function highlight(lang, code) {
  if (lang) {
    if (!hljs.getLanguage(lang)) return null;
    return hljs.highlight(code, { language: lang, ignoreIllegals: true }).value;
  }
  const guess = hljs.highlightAuto(code);
  return guess.language && guess.relevance >= AUTO_MIN_RELEVANCE ? guess.value : null;
}

self.onmessage = function (event) {
  const { id, lang, code } = event.data;
  let html = null;
  try {
    html = highlight(lang, code);
  } catch (e) {
    html = null; // a grammar that fails leaves the block plain
  }
  self.postMessage({ id: id, html: html });
};

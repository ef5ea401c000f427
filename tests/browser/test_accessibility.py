"""The chat page for people who do not use a mouse or do not see the screen, in real Chromium.

An axe-core audit (vendored under ``vendor/axe-core``, injected by the test only) finds no serious
or critical violation on the pages people see; the theme toggle overrides the system's setting
and is remembered; a finished answer is read out by screen readers; and the keyboard alone
reaches and works every control, each showing where the focus is.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import LiveServer

from .conftest import Tab
from .test_chat_page import ANSWER_TIMEOUT, api_get, conversation_id, send, set_max_tokens, wait_answer

expect = pytest.importorskip("playwright.sync_api").expect

pytestmark = pytest.mark.browser

AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
CODE_PROMPT = "Show a one-line Python example that prints hello, in a code block."
SHORT_PROMPT = "Name three colours."

AXE_JS = """async () => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map((n) => ({target: n.target.join(' '), summary: n.failureSummary})),
  }));
}"""


def audit(tab: Tab, where: str) -> list[dict[str, Any]]:
    """Run axe-core on the page as it is now; print every violation, fail on serious or critical."""
    page = tab.page
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    violations = page.evaluate(AXE_JS)
    print(f"\naxe on {where}: {len(violations)} violation(s)")
    for v in violations:
        print(f"  [{v['impact']}] {v['id']}: {v['help']}")
        for node in v["nodes"][:5]:
            print(f"      {node['target']}: {node['summary']}".replace("\n", " "))
    grave = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert grave == [], f"axe on {where}:\n" + json.dumps(grave, indent=1)
    return violations


def wait_finished_answers(page: Any, count: int) -> None:
    page.wait_for_function(
        """(n) => [...document.querySelectorAll('[data-testid=message][data-role=assistant]')]
                    .filter((m) => m.dataset.state && m.dataset.state !== 'streaming').length >= n""",
        arg=count, timeout=ANSWER_TIMEOUT * 1000)


@pytest.fixture(scope="module")
def conversation(browser: Any, live_server_proc: LiveServer, sessions: dict[str, Any]) -> Iterator[int]:
    """Alice's conversation with two finished answers (the first asked for a code block)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, storage_state=sessions["alice"])
    context.set_default_timeout(30_000)
    tab = Tab(context.new_page(), live_server_proc.url)
    tab.page.goto(tab.url("/"))
    set_max_tokens(tab, 80, temperature=0)
    send(tab, CODE_PROMPT)
    wait_finished_answers(tab.page, 1)
    send(tab, SHORT_PROMPT)
    wait_finished_answers(tab.page, 2)
    states = tab.page.eval_on_selector_all("[data-testid=message][data-role=assistant]",
                                           "ms => ms.map(m => m.dataset.state)")
    assert states == ["done", "done"], states
    cid = conversation_id(tab)
    context.close()
    yield cid


def open_conversation(tab: Tab, cid: int) -> None:
    tab.page.goto(tab.url(f"/c/{cid}"))
    wait_finished_answers(tab.page, 2)
    tab.page.wait_for_selector("[data-testid=conversation]")


def background(tab: Tab, selector: str = "body") -> tuple[int, ...]:
    css = tab.page.evaluate(f"() => getComputedStyle(document.querySelector('{selector}')).backgroundColor")
    return tuple(int(v) for v in re.findall(r"\d+", css)[:3])


def is_dark(rgb: tuple[int, ...]) -> bool:
    return max(rgb) < 80


def theme_attribute(tab: Tab) -> str | None:
    return tab.page.evaluate("() => document.documentElement.getAttribute('data-theme')")


# ---------- axe-core ----------

@pytest.mark.parametrize("theme", ["light", "dark", "dark-by-toggle"])
def test_axe_finds_no_serious_violation_on_the_chat_page(open_tab: Any, conversation: int, theme: str) -> None:
    tab = open_tab(color_scheme="dark" if theme == "dark" else "light", bypass_csp=True)
    page = tab.page
    page.goto(tab.url("/"))
    page.wait_for_selector("#empty-state:not([hidden])")
    if theme == "dark-by-toggle":
        page.click("[data-testid=theme-toggle]")
        assert theme_attribute(tab) == "dark"
    assert is_dark(background(tab)) == theme.startswith("dark")
    audit(tab, f"the empty chat page ({theme})")

    open_conversation(tab, conversation)
    if page.locator("[data-testid=message] pre code").count() == 0:
        print("note: the model wrote no code block this time")
    audit(tab, f"a conversation with two answers ({theme})")

    page.click("[data-testid=settings-toggle]")
    expect(page.locator("#settings")).to_be_visible()
    audit(tab, f"the settings panel ({theme})")
    tab.assert_clean()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_axe_finds_no_serious_violation_on_the_login_page(open_tab: Any, theme: str) -> None:
    tab = open_tab(user=None, color_scheme=theme, bypass_csp=True)
    tab.page.goto(tab.url("/accounts/login/"))
    tab.page.wait_for_selector("#id_username")
    audit(tab, f"the login page ({theme})")
    tab.page.fill("#id_username", "nobody")
    tab.page.fill("#id_password", "wrong-password")
    tab.page.click("[data-testid=login-submit]")
    tab.page.wait_for_selector("[data-testid=login-error]")
    audit(tab, f"the login page with an error ({theme})")
    # Chromium logs the refused sign-in's status itself; nothing else may appear
    assert tab.foreign_requests() == []


# ---------- theme ----------

@pytest.mark.parametrize("system", ["light", "dark"])
def test_the_theme_toggle_overrides_the_system_and_is_remembered(open_tab: Any, system: str) -> None:
    other = "dark" if system == "light" else "light"
    tab = open_tab(color_scheme=system)
    page = tab.page
    page.goto(tab.url("/"))
    toggle = page.locator("[data-testid=theme-toggle]")
    expect(toggle).to_have_attribute("aria-label", f"Switch to {other} theme")
    assert theme_attribute(tab) is None, "without a choice the page follows the system"
    assert is_dark(background(tab)) == (system == "dark")

    toggle.click()
    assert theme_attribute(tab) == other
    expect(toggle).to_have_attribute("aria-label", f"Switch to {system} theme")
    assert is_dark(background(tab)) == (other == "dark"), "the background really changes"
    assert is_dark(background(tab, ".main")) == (other == "dark")
    assert page.get_attribute("meta[name=color-scheme]", "content") == other

    page.reload()
    page.wait_for_selector("[data-testid=prompt]")
    assert theme_attribute(tab) == other, "the choice survives a reload"
    assert is_dark(background(tab)) == (other == "dark")
    expect(toggle).to_have_attribute("aria-label", f"Switch to {system} theme")

    # the sign-in page honours the choice too
    page.goto(tab.url("/accounts/login/"))
    page.wait_for_selector("#id_username")
    assert theme_attribute(tab) == other
    assert is_dark(background(tab)) == (other == "dark")

    # choosing the system's theme again follows the system once more
    page.goto(tab.url("/"))
    toggle.click()
    assert theme_attribute(tab) is None
    assert is_dark(background(tab)) == (system == "dark")
    page.reload()
    page.wait_for_selector("[data-testid=prompt]")
    assert theme_attribute(tab) is None
    expect(toggle).to_have_attribute("aria-label", f"Switch to {other} theme")
    tab.assert_clean()


# ---------- screen readers ----------

def test_a_finished_answer_is_announced_in_a_polite_live_region(open_tab: Any) -> None:
    tab = open_tab()
    page = tab.page
    page.goto(tab.url("/"))
    announcer = page.locator("[data-testid=announcer]")
    expect(announcer).to_have_attribute("aria-live", "polite")
    assert announcer.text_content() == ""
    set_max_tokens(tab, 24)
    send(tab, SHORT_PROMPT)
    answer = wait_answer(tab, lambda a: a["state"] != "streaming")
    assert answer["state"] == "done"
    expect(announcer).to_contain_text("Answer finished: ")
    words = " ".join(answer["text"].split())
    heard = announcer.text_content() or ""
    assert words[:40] in heard, (words, heard)
    assert len(heard) <= len("Answer finished: ") + 301
    box = announcer.bounding_box()
    assert box is not None and box["width"] <= 1 and box["height"] <= 1, "visually hidden"
    tab.assert_clean()


# ---------- keyboard ----------

# What the focused element is, and whether a sighted keyboard user can see it and its focus.
FOCUSED_JS = """() => {
  const el = document.activeElement;
  if (!el || el === document.body || el === document.documentElement) return null;
  const ring = (node) => {
    const s = getComputedStyle(node);
    return (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0) || s.boxShadow !== 'none';
  };
  // the prompt draws no ring of its own: the composer around it does
  const composer = el.matches('.composer textarea') ? el.closest('.composer') : null;
  let opacity = 1;
  for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
    opacity *= parseFloat(getComputedStyle(node).opacity);
  }
  const rect = el.getBoundingClientRect();
  const again = el.dataset.a11yVisited === '1';
  el.dataset.a11yVisited = '1';
  return {
    again,
    key: el.dataset.a11yKey || el.dataset.testid || el.id
      || (el.tagName + ' ' + (el.getAttribute('aria-label') || el.textContent.trim().slice(0, 30))),
    ring: ring(el) || (composer !== null && ring(composer)),
    width: rect.width, height: rect.height, opacity,
    visibility: getComputedStyle(el).visibility,
  };
}"""

# Every button shown inside a message (copy today; regenerate, edit, alternatives... as they come).
MARK_MESSAGE_BUTTONS_JS = """() => {
  const shown = (el) => el.getClientRects().length > 0 && !el.closest('[hidden]')
    && getComputedStyle(el).visibility !== 'hidden';
  return [...document.querySelectorAll('[data-testid=message] button')].filter(shown).map((b, i) => {
    const name = b.dataset.testid || b.getAttribute('aria-label') || b.textContent.trim();
    b.dataset.a11yKey = 'message-button-' + i + ' ' + name;
    return b.dataset.a11yKey;
  });
}"""


def test_the_keyboard_reaches_every_control_with_a_visible_focus(open_tab: Any, conversation: int) -> None:
    tab = open_tab()
    page = tab.page
    open_conversation(tab, conversation)
    message_buttons = page.evaluate(MARK_MESSAGE_BUTTONS_JS)
    assert any("copy" in key for key in message_buttons), message_buttons
    page.fill("[data-testid=prompt]", "a draft")  # Send is enabled only with a draft
    expect(page.locator("[data-testid=send]")).to_be_enabled()
    page.evaluate("() => document.activeElement.blur()")

    required = {"prompt", "send", "model-select", "settings-toggle", "theme-toggle", *message_buttons}
    visits: list[dict[str, Any]] = []
    for _ in range(400):  # round the whole page once, back to where Tab started
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUSED_JS)
        if focused is None:
            continue
        if focused["again"] and required <= {v["key"] for v in visits}:
            break
        if not focused["again"]:
            visits.append(focused)
    seen = {v["key"] for v in visits}
    print(f"\nTab visited {len(visits)} controls: {sorted(seen)}")
    assert sorted(required - seen) == [], "not reachable with Tab"
    hidden = [v for v in visits if v["width"] == 0 or v["height"] == 0 or v["opacity"] <= 0.01
              or v["visibility"] != "visible"]
    assert hidden == [], "focused but not visible"
    ringless = [v["key"] for v in visits if not v["ring"]]
    assert ringless == [], "focused without a visible focus indicator"
    tab.assert_clean()


def test_enter_and_space_work_the_buttons(open_tab: Any, conversation: int) -> None:
    tab = open_tab()
    page = tab.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=tab.base_url)
    open_conversation(tab, conversation)
    copy = page.locator("[data-testid=message][data-role=assistant] [data-testid=copy]").last
    for key in ("Enter", " "):
        copy.focus()
        page.keyboard.press(key)
        expect(copy).to_have_attribute("title", "Copied")
        expect(copy).to_have_attribute("title", "Copy", timeout=5000)  # the flash ends
    copied = page.evaluate("() => navigator.clipboard.readText()")
    assert copied == api_get(tab, f"/api/conversations/{conversation}")["messages"][-1]["content"]

    toggle = page.locator("[data-testid=theme-toggle]")
    toggle.focus()
    page.keyboard.press("Enter")
    assert theme_attribute(tab) == "dark"
    page.keyboard.press(" ")
    assert theme_attribute(tab) is None

    settings = page.locator("[data-testid=settings-toggle]")
    settings.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#settings")).to_be_visible()
    expect(settings).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("Tab")  # into the panel, then Escape closes it
    page.keyboard.press("Escape")
    expect(page.locator("#settings")).to_be_hidden()
    tab.assert_clean()


def test_branch_controls_are_accessible_and_work_from_the_keyboard(open_tab: Any) -> None:
    """Alternatives, the edit form, the rename box and the export menu, open: axe passes, and
    paging alternatives with the keyboard keeps the focus on them."""
    tab = open_tab(bypass_csp=True)
    page = tab.page
    page.goto(tab.url("/"))
    set_max_tokens(tab, 8, temperature=1.0)
    send(tab, SHORT_PROMPT)
    wait_finished_answers(page, 1)
    answer = page.locator("[data-testid=message][data-role=assistant]").last
    first_id = answer.get_attribute("data-id")
    answer.locator("[data-testid=regenerate]").click()
    page.wait_for_function(
        """(old) => { const a = [...document.querySelectorAll('[data-testid=message][data-role=assistant]')].pop();
                      return a && a.dataset.id !== old && a.dataset.state === 'done'; }""",
        arg=first_id, timeout=ANSWER_TIMEOUT * 1000)
    answer = page.locator("[data-testid=message][data-role=assistant]").last
    expect(answer.locator("[data-testid=alt-index]")).to_have_text("2 / 2")
    audit(tab, "an answer with alternatives")

    # keyboard: Tab to "previous version", Enter pages back, the focus stays on the alternatives
    page.locator("[data-testid=prompt]").focus()
    for _ in range(60):
        page.keyboard.press("Shift+Tab")
        if page.evaluate("() => document.activeElement.dataset.testid") == "alt-prev":
            break
    assert page.evaluate("() => document.activeElement.dataset.testid") == "alt-prev"
    page.keyboard.press("Enter")
    expect(page.locator("[data-testid=message][data-role=assistant] [data-testid=alt-index]")).to_have_text("1 / 2")
    assert page.evaluate("() => document.activeElement.dataset.testid") in ("alt-next", "alt-prev")

    question = page.locator("[data-testid=message][data-role=user]").last
    question.locator("[data-testid=edit]").click()
    expect(question.locator("[data-testid=edit-input]")).to_be_focused()
    audit(tab, "the edit form")
    page.keyboard.press("Escape")
    expect(question.locator("[data-testid=edit]")).to_be_focused()

    page.click("[data-testid=export]")
    expect(page.locator("[data-testid=export-markdown]")).to_be_focused()
    audit(tab, "the export menu")
    page.keyboard.press("Escape")
    expect(page.locator("[data-testid=export]")).to_be_focused()

    page.locator("[data-testid=rename]").first.click()
    expect(page.locator("[data-testid=rename-input]")).to_be_focused()
    audit(tab, "the rename box")
    page.keyboard.press("Escape")
    tab.assert_clean()

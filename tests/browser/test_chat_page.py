"""The chat page in real Chromium against a real server and the real small model.

Each test reads as what a person at the keyboard would notice: answers grow while they are
written, survive reloads and stops, user text is never markup, other people's conversations
are invisible, and the page talks to nobody but its own server.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import Tab, login

expect = pytest.importorskip("playwright.sync_api").expect

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
from tests.support import MODEL as DEFAULT_MODEL  # noqa: E402

LIST_PROMPT = "Give me three tips for writing clean Python code, as a list."
LONG_PROMPT = "Write a long story about a lighthouse keeper."
SCREENSHOT_PROMPT = "What is the difference between a list and a tuple in Python? Show a short example."
ANSWER_TIMEOUT = 180.0  # seconds; the CPU may be shared with other work

LAST_ANSWER_JS = """() => {
  const all = document.querySelectorAll('[data-testid=message][data-role=assistant]');
  const m = all[all.length - 1];
  if (!m) return null;
  const c = m.querySelector('[data-testid=message-content]');
  return {state: m.dataset.state, text: c ? c.textContent : '', id: m.dataset.id || null};
}"""


def last_answer(tab: Tab) -> dict[str, Any] | None:
    return tab.page.evaluate(LAST_ANSWER_JS)


def wait_answer(tab: Tab, predicate: Any, timeout: float = ANSWER_TIMEOUT, every: float = 0.05) -> dict[str, Any]:
    """Poll the newest answer until ``predicate(answer)``; returns that answer."""
    deadline = time.monotonic() + timeout
    answer = None
    while time.monotonic() < deadline:
        answer = last_answer(tab)
        if answer is not None and predicate(answer):
            return answer
        time.sleep(every)
    raise AssertionError(f"answer did not reach the expected state in {timeout}s: {answer}")


def set_max_tokens(tab: Tab, value: int | str, temperature: float | None = None) -> None:
    page = tab.page
    page.click("[data-testid=settings-toggle]")
    page.fill("[data-testid=max-tokens]", str(value))
    page.dispatch_event("[data-testid=max-tokens]", "change")
    if temperature is not None:
        page.fill("[data-testid=temperature]", str(temperature))
        page.dispatch_event("[data-testid=temperature]", "change")
    page.click("[data-testid=settings-toggle]")


def send(tab: Tab, text: str) -> None:
    tab.page.fill("[data-testid=prompt]", text)
    tab.page.press("[data-testid=prompt]", "Enter")


def conversation_id(tab: Tab) -> int:
    match = re.search(r"/c/(\d+)$", tab.page.url)
    assert match, f"the URL does not name the conversation: {tab.page.url}"
    return int(match.group(1))


def api_get(tab: Tab, path: str) -> Any:
    response = tab.page.request.get(tab.url(path))
    assert response.status == 200, response.text()
    return response.json()["result"]


def test_it_signs_in_and_streams_an_answer_in_steps_until_done(open_tab: Any, users: dict[str, str]) -> None:
    tab = open_tab(user=None)
    page = tab.page
    login(page, tab.base_url, "alice", users["alice"])

    expect(page.locator("[data-testid=model-select]")).to_have_value(DEFAULT_MODEL)  # the catalog's default
    assert page.locator(f"[data-testid=model-select] option[value='{DEFAULT_MODEL}']").is_enabled()

    set_max_tokens(tab, 64)
    send(tab, LIST_PROMPT)

    lengths: list[int] = []
    deadline = time.monotonic() + ANSWER_TIMEOUT
    answer = wait_answer(tab, lambda a: a["state"] is not None)
    while answer["state"] == "streaming" and time.monotonic() < deadline:
        if answer["text"]:
            lengths.append(len(answer["text"]))
        page.wait_for_timeout(40)
        answer = last_answer(tab) or answer
    assert page.locator("[data-testid=stop]").is_hidden()
    assert answer["state"] == "done", answer
    assert answer["text"].strip()
    distinct = sorted(set(lengths))
    assert len(distinct) >= 3, f"the answer should grow in several steps, saw lengths {distinct}"
    assert lengths[-1] > lengths[0]
    stats = page.locator("[data-testid=message][data-role=assistant] [data-testid=stats]").last.inner_text()
    assert re.search(r"\d+ tokens · [\d.]+ s to first token · [\d.]+ tokens/s", stats), stats

    # the URL names the conversation, so a reload finds it: in the sidebar and with its messages
    cid = conversation_id(tab)
    page.reload()
    item = page.locator(f"[data-testid=conversation][data-id='{cid}']")
    item.wait_for()
    assert item.inner_text().strip() == LIST_PROMPT
    expect(item).to_have_attribute("aria-current", "page")
    messages = page.locator("[data-testid=message]")
    expect(messages).to_have_count(2)
    assert messages.nth(0).get_attribute("data-role") == "user"
    assert messages.nth(0).inner_text().strip() == LIST_PROMPT
    reloaded = last_answer(tab)
    assert (reloaded["state"], reloaded["text"]) == ("done", answer["text"])
    tab.assert_clean()


SCROLL_JS = """() => {
  const s = document.getElementById('messages');
  const overflow = s.scrollHeight - s.clientHeight;
  return {top: s.scrollTop, gap: overflow - s.scrollTop, overflow};
}"""


def test_autoscroll_pauses_when_scrolled_up_and_stop_keeps_the_partial_answer(open_tab: Any) -> None:
    tab = open_tab(width=700, height=360)  # a short window, so the answer soon overflows it
    page = tab.page
    page.goto(tab.url("/"))
    send(tab, LONG_PROMPT)
    wait_answer(tab, lambda a: a["state"] == "streaming" and len(a["text"]) > 40)
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while page.evaluate(SCROLL_JS)["overflow"] < 100 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    page.wait_for_timeout(100)
    assert page.evaluate(SCROLL_JS)["gap"] < 5, "while the reader stays at the bottom, the page follows the answer"

    page.hover("#messages")
    page.mouse.wheel(0, -100)
    page.wait_for_timeout(300)
    scrolled = page.evaluate(SCROLL_JS)
    grown = wait_answer(tab, lambda a: True)
    page.wait_for_timeout(1500)
    assert last_answer(tab)["state"] == "streaming", "use a longer answer: it ended before the check"
    assert len(last_answer(tab)["text"]) > len(grown["text"])
    assert page.evaluate(SCROLL_JS)["top"] == scrolled["top"], "autoscroll pauses while the reader is scrolled up"
    page.locator("#jump").click()
    page.wait_for_timeout(200)
    assert page.evaluate(SCROLL_JS)["gap"] < 5

    page.click("[data-testid=stop]")
    stopped = wait_answer(tab, lambda a: a["state"] != "streaming", timeout=30)
    assert stopped["state"] == "stopped"
    assert stopped["text"].strip()
    assert page.locator("[data-testid=send]").is_visible()
    assert page.locator("[data-testid=stop]").is_hidden()

    cid = conversation_id(tab)
    page.reload()
    page.wait_for_selector("[data-testid=message][data-role=assistant]")
    after = last_answer(tab)
    assert after["state"] == "stopped"
    assert after["text"] == stopped["text"], "the page shows exactly the partial answer the server kept"
    # newest first: the conversation just used is at the top of the sidebar
    first = page.locator("[data-testid=conversation]").first
    assert first.get_attribute("data-id") == str(cid)
    saved = api_get(tab, f"/api/conversations/{cid}")["messages"][-1]
    assert saved["state"] == "stopped" and saved["content"]
    tab.assert_clean()


def test_a_reload_mid_answer_reattaches_and_continues_to_done(open_tab: Any) -> None:
    tab = open_tab()
    page = tab.page
    page.goto(tab.url("/"))
    set_max_tokens(tab, 160)  # enough left after the reload to see it continue
    system_prompt = "You are a storyteller who writes in short sentences."
    page.click("[data-testid=settings-toggle]")
    page.fill("[data-testid=system-prompt]", system_prompt)
    page.click("[data-testid=settings-toggle]")
    send(tab, LONG_PROMPT)
    before = wait_answer(tab, lambda a: a["state"] == "streaming" and len(a["text"]) > 30)

    page.reload()
    page.wait_for_selector("[data-testid=message][data-role=assistant]")
    resumed = last_answer(tab)
    assert resumed["state"] == "streaming", "the reloaded page shows the answer still being written"
    assert page.locator("[data-testid=system-prompt]").input_value() == system_prompt, "saved with the conversation"
    done = wait_answer(tab, lambda a: a["state"] != "streaming")
    assert done["state"] == "done"
    assert len(done["text"]) >= len(before["text"])

    # what streamed after re-attaching is exactly what the server saved (no gap, no repeat)
    page.reload()
    page.wait_for_selector("[data-testid=message][data-role=assistant][data-state=done]")
    assert last_answer(tab)["text"] == done["text"]
    tab.assert_clean()


def test_screenshots_desktop_phone_and_dark(open_tab: Any, tmp_path: Path) -> None:
    desktop = open_tab(width=1280, height=800)
    desktop.page.goto(desktop.url("/"))
    set_max_tokens(desktop, 300, temperature=0)  # greedy: a complete answer with a code block
    send(desktop, SCREENSHOT_PROMPT)
    wait_answer(desktop, lambda a: a["state"] == "done")
    cid = conversation_id(desktop)
    desktop.page.mouse.move(0, 0)
    desktop.page.locator("[data-testid=prompt]").blur()
    desktop.page.wait_for_timeout(300)
    (ROOT / "docs").mkdir(exist_ok=True)
    desktop.page.screenshot(path=str(ROOT / "docs" / "screenshot.png"))
    assert desktop.page.locator("#sidebar").is_visible()
    # the copy button puts the answer's Markdown source on the clipboard
    desktop.page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=desktop.base_url)
    answer = desktop.page.locator("[data-testid=message][data-role=assistant]").last
    answer.locator("[data-testid=copy]").click()
    copied = desktop.page.evaluate("() => navigator.clipboard.readText()")
    assert "```" in copied and copied == api_get(desktop, f"/api/conversations/{cid}")["messages"][-1]["content"]
    desktop.assert_clean()

    # phone width: the sidebar is a drawer, closed until asked for
    phone = open_tab(width=390, height=844)
    page = phone.page
    page.goto(phone.url(f"/c/{cid}"))
    page.wait_for_selector("[data-testid=message][data-role=assistant][data-state=done]")
    page.wait_for_timeout(300)
    box = page.locator("#sidebar").bounding_box()
    assert box is not None and box["x"] + box["width"] <= 0, "the sidebar is off screen"
    composer = page.locator("[data-testid=prompt]").bounding_box()
    assert composer is not None and composer["x"] >= 0 and composer["x"] + composer["width"] <= 390
    page.screenshot(path=str(ROOT / "docs" / "screenshot-mobile.png"))
    page.click("#menu-btn")
    page.wait_for_timeout(400)
    box = page.locator("#sidebar").bounding_box()
    assert box is not None and box["x"] >= 0
    other = page.locator(f"[data-testid=conversation]:not([data-id='{cid}'])").first
    other_id = other.get_attribute("data-id")
    other.click()
    page.wait_for_url(phone.url(f"/c/{other_id}"))
    page.wait_for_selector("[data-testid=message]")
    expect(page.locator(f"[data-testid=conversation][data-id='{other_id}']")).to_have_attribute("aria-current", "page")
    page.wait_for_timeout(400)
    box = page.locator("#sidebar").bounding_box()
    assert box is not None and box["x"] + box["width"] <= 0, "choosing a conversation closes the drawer"
    page.go_back()
    page.wait_for_url(phone.url(f"/c/{cid}"))
    page.wait_for_selector("[data-testid=message][data-role=assistant][data-state=done]")
    phone.assert_clean()

    # dark mode follows the system
    dark = open_tab(width=1280, height=800, color_scheme="dark")
    dark.page.goto(dark.url(f"/c/{cid}"))
    dark.page.wait_for_selector("[data-testid=message][data-role=assistant][data-state=done]")
    background = dark.page.evaluate("() => getComputedStyle(document.querySelector('.main')).backgroundColor")
    channels = [int(v) for v in re.findall(r"\d+", background)[:3]]
    assert max(channels) < 80, f"dark background expected, got {background}"
    dark.page.screenshot(path=str(tmp_path / "screenshot-dark.png"))
    dark.assert_clean()


def test_html_typed_by_the_user_is_shown_as_text(open_tab: Any) -> None:
    tab = open_tab()
    page = tab.page
    page.goto(tab.url("/"))
    set_max_tokens(tab, 12)
    evil = "<b>bold</b><img src=x onerror=window.__xss=1>"
    send(tab, evil)
    user = page.locator("[data-testid=message][data-role=user]").last
    assert user.locator("[data-testid=message-content]").text_content() == evil
    wait_answer(tab, lambda a: a["state"] != "streaming")
    for _ in range(2):  # as sent, then as loaded from the server
        assert page.evaluate("() => window.__xss") is None
        assert page.locator("#thread img, #thread b, #thread script").count() == 0
        user = page.locator("[data-testid=message][data-role=user]").last
        assert user.locator("[data-testid=message-content]").text_content() == evil
        page.reload()
        page.wait_for_selector("[data-testid=message][data-role=user]")
    tab.assert_clean()


def test_refused_messages_are_explained_inline_and_shift_enter_adds_a_line(open_tab: Any) -> None:
    tab = open_tab()
    page = tab.page
    page.goto(tab.url("/"))
    prompt = page.locator("[data-testid=prompt]")
    prompt.click()
    prompt.type("first line")
    prompt.press("Shift+Enter")
    prompt.type("second line")
    assert prompt.input_value() == "first line\nsecond line"
    assert page.locator("[data-testid=message]").count() == 0

    set_max_tokens(tab, 999_999)  # more than the model may write: the server answers 400
    prompt.press("Enter")
    error = page.locator("[data-testid=message][data-role=user] [data-testid=message-error]")
    error.wait_for()
    assert "max_tokens" in error.inner_text()
    assert prompt.input_value() == "first line\nsecond line", "the text is handed back for another try"
    # console errors: Chromium logs the 400 response itself; nothing else may appear
    assert [e for e in tab.console_errors if "400" not in e] == []
    assert tab.foreign_requests() == []


def test_another_user_cannot_see_the_conversation(open_tab: Any) -> None:
    alice = open_tab("alice")
    alice.page.goto(alice.url("/"))
    conversations = api_get(alice, "/api/conversations")
    assert conversations, "earlier tests left alice some conversations"
    cid = conversations[0]["id"]

    bob = open_tab("bob")
    response = bob.page.goto(bob.url(f"/c/{cid}"))
    assert response is not None and response.status == 404
    api = bob.page.request.get(bob.url(f"/api/conversations/{cid}"))
    assert api.status == 404
    assert api.json()["success"] is False
    bob.page.goto(bob.url("/"))
    bob.page.wait_for_selector("[data-testid=prompt]")
    bob.page.wait_for_timeout(300)
    assert bob.page.locator(f"[data-testid=conversation][data-id='{cid}']").count() == 0
    assert bob.foreign_requests() == []


def test_markdown_is_rendered_safely(open_tab: Any) -> None:
    tab = open_tab()
    page = tab.page
    page.goto(tab.url("/"))
    page.wait_for_selector("[data-testid=prompt]")
    source = "\n".join([
        "# Title",
        "Some **bold**, *italic* and `x < y` code with <script>window.__md=1</script>.",
        "",
        "- one",
        "- two",
        "  1. nested",
        "",
        "```python",
        "print('<hi>')",
        "```",
        "[good](https://example.com/a) [bad](javascript:void(window.__md=1)) ![img](https://example.com/i.png)",
    ])
    result = page.evaluate("""(src) => {
      const box = document.createElement('div');
      box.appendChild(window.ChatMarkdown.render(src));
      const links = [...box.querySelectorAll('a')].map(a => ({href: a.href, rel: a.rel, text: a.textContent}));
      return {
        h1: box.querySelector('h1')?.textContent, strong: box.querySelector('strong')?.textContent,
        em: box.querySelector('em')?.textContent, code: box.querySelector('p code')?.textContent,
        items: box.querySelectorAll('ul > li').length, nested: box.querySelector('ul li ol li')?.textContent,
        block: box.querySelector('pre code')?.textContent, lang: box.querySelector('.code-lang')?.textContent,
        scripts: box.querySelectorAll('script, img').length, text: box.textContent, links,
      };
    }""", source)
    assert result["h1"] == "Title"
    assert result["strong"] == "bold" and result["em"] == "italic" and result["code"] == "x < y"
    assert result["items"] == 2 and result["nested"] == "nested"
    assert result["block"] == "print('<hi>')" and result["lang"] == "python"
    assert result["scripts"] == 0 and "<script>window.__md=1</script>" in result["text"]
    assert [link["href"] for link in result["links"]] == ["https://example.com/a", "https://example.com/i.png"]
    assert all("noopener" in link["rel"] for link in result["links"])
    assert page.evaluate("() => window.__md") is None
    tab.assert_clean()


def test_messages_outside_the_models_context_are_marked(open_tab: Any) -> None:
    """Filling 6k tokens of context takes minutes on a CPU, so the server's answer is edited in
    flight: the page must show whatever ``in_context`` says."""
    tab = open_tab()
    page = tab.page
    page.goto(tab.url("/"))
    set_max_tokens(tab, 4)
    send(tab, "Hi")
    wait_answer(tab, lambda a: a["state"] != "streaming" and a["id"])
    cid = conversation_id(tab)

    def drop_first_from_context(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        body["result"]["messages"][0]["in_context"] = False
        route.fulfill(response=response, json=body)

    page.route(re.compile(rf".*/api/conversations/{cid}$"), drop_first_from_context)
    page.goto(tab.url(f"/c/{cid}"))
    messages = page.locator("[data-testid=message]")
    messages.first.wait_for()
    assert messages.count() >= 2
    note = messages.first.get_by_text("Outside the model's context")
    assert note.is_visible()
    assert "out-of-context" in (messages.first.get_attribute("class") or "")
    assert messages.nth(1).get_by_text("Outside the model's context").is_hidden()
    tab.assert_clean()


def test_json_output_with_a_schema_gives_a_matching_answer_shown_as_json(open_tab: Any) -> None:
    tab = open_tab()
    page = tab.page
    page.goto(tab.url("/"))
    page.click("[data-testid=settings-toggle]")
    page.check("[data-testid=json-output]")
    page.fill("[data-testid=json-schema]", "{not a schema")
    page.click("[data-testid=settings-toggle]")
    send(tab, "Describe a city.")
    error = page.locator("[data-testid=json-schema-error]")
    expect(error).to_be_visible()  # refused on the page, nothing sent
    assert page.locator("[data-testid=message]").count() == 0
    schema = ('{"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}, '
              '"population": {"type": "integer", "minimum": 0, "maximum": 99999999}}, '
              '"required": ["city", "population"]}')
    page.fill("[data-testid=json-schema]", schema)
    page.dispatch_event("[data-testid=json-schema]", "change")
    page.press("[data-testid=prompt]", "Enter")
    answer = wait_answer(tab, lambda a: a["state"] != "streaming")
    assert answer["state"] == "done"
    import json

    shown = page.locator("[data-testid=message][data-role=assistant]").last
    assert shown.locator(".code-lang").text_content() == "json"  # pretty-printed in a code block
    value = json.loads(shown.locator("pre code").text_content() or "")
    assert set(value) == {"city", "population"} and isinstance(value["population"], int)
    page.reload()  # the setting is remembered by this browser
    page.click("[data-testid=settings-toggle]")
    assert page.is_checked("[data-testid=json-output]")
    page.uncheck("[data-testid=json-output]")
    tab.assert_clean()


def test_tool_calls_and_results_in_an_answer_are_collapsible_blocks(open_tab: Any) -> None:
    tab = open_tab()
    page = tab.page
    page.goto(tab.url("/"))
    page.wait_for_selector("[data-testid=prompt]")
    source = ('Let me check.\n<tool_call>{"name": "get_weather", "arguments": {"city": "<b>Paris</b>"}}</tool_call>'
              '\n<tool_response>{"temperature": 21}</tool_response>\nIt is **21** degrees.')
    result = page.evaluate("""(src) => {
      const box = document.createElement('div');
      box.appendChild(window.ChatMarkdown.renderAnswer(src));
      const blocks = [...box.querySelectorAll('[data-testid=tool-block]')];
      return {summaries: blocks.map(b => b.querySelector('summary').textContent),
              open: blocks.map(b => b.open), code: blocks.map(b => b.querySelector('code').textContent),
              strong: box.querySelector('strong')?.textContent, bold: box.querySelectorAll('b').length,
              first: box.querySelector('p')?.textContent};
    }""", source)
    assert result["summaries"] == ["Tool call · get_weather", "Tool result"]
    assert result["open"] == [False, False]
    assert '"city": "<b>Paris</b>"' in result["code"][0] and result["bold"] == 0
    assert result["first"] == "Let me check." and result["strong"] == "21"
    tab.assert_clean()


def test_gemma_3_can_be_picked_and_answers(open_tab: Any) -> None:
    """The second built-in model: picked in the model menu, it answers a message in the page."""
    gemma = "@cf/google/gemma-3-270m"
    tab = open_tab()
    page = tab.page
    page.goto(tab.url("/"))
    option = page.locator(f"[data-testid=model-select] option[value='{gemma}']")
    assert option.is_enabled()
    page.select_option("[data-testid=model-select]", gemma)
    set_max_tokens(tab, 16)
    send(tab, "The capital of France is")
    done = wait_answer(tab, lambda a: a["state"] not in (None, "streaming"))
    assert done["state"] == "done" and done["text"].strip()
    cid = conversation_id(tab)
    assert api_get(tab, f"/api/conversations/{cid}")["model"] == gemma
    tab.assert_clean()

"""The chat page after the first answer, in real Chromium with the real model: regenerate and
page through alternatives, edit a question into a new branch, retry, rename, search, load more
of a long sidebar, export, and the context meter."""
from __future__ import annotations

import json
import re
from typing import Any

import pytest

from .conftest import Tab
from .test_chat_page import ANSWER_TIMEOUT, api_get, conversation_id, send, set_max_tokens, wait_answer

expect = pytest.importorskip("playwright.sync_api").expect

pytestmark = pytest.mark.browser


def finished(tab: Tab) -> dict[str, Any]:
    return wait_answer(tab, lambda a: a["state"] in ("done", "stopped", "error") and a["id"])


def answers(tab: Tab) -> Any:
    return tab.page.locator("[data-testid=message][data-role=assistant]")


def questions(tab: Tab) -> Any:
    return tab.page.locator("[data-testid=message][data-role=user]")


def csrf_post(tab: Tab, path: str, body: dict[str, Any]) -> Any:
    token = next(c["value"] for c in tab.page.context.cookies() if c["name"] == "csrftoken")
    response = tab.page.request.post(tab.url(path), data=json.dumps(body),
                                     headers={"Content-Type": "application/json", "X-CSRFToken": token})
    assert response.ok, response.text()
    return response.json()["result"]


def test_regenerate_twice_page_through_three_answers_and_continue_from_the_second(open_tab: Any) -> None:
    tab = open_tab()
    page = tab.page
    page.goto(tab.url("/"))
    set_max_tokens(tab, 12, temperature=1.0)
    send(tab, "Name a fruit.")
    first = finished(tab)
    for _ in range(2):
        answers(tab).last.hover()
        answers(tab).last.locator("[data-testid=regenerate]").click()
        wait_answer(tab, lambda a, old=first["id"]: a["id"] != old and a["state"] == "done", timeout=ANSWER_TIMEOUT)
        first = finished(tab)
    answer = answers(tab).last
    expect(answer.locator("[data-testid=alt-index]")).to_have_text("3 / 3")
    expect(answers(tab)).to_have_count(1)  # alternatives replace each other in place

    cid = conversation_id(tab)
    alternatives = api_get(tab, f"/api/conversations/{cid}")["messages"][1]["sibling_ids"]
    assert len(alternatives) == 3
    texts = {}
    for expected_index, button in ((2, "alt-prev"), (1, "alt-prev"), (2, "alt-next")):
        answers(tab).last.locator(f"[data-testid={button}]").click()
        expect(answers(tab).last.locator("[data-testid=alt-index]")).to_have_text(f"{expected_index} / 3")
        shown = finished(tab)
        assert int(shown["id"]) == alternatives[expected_index - 1]
        texts[expected_index] = shown["text"]
    # the page shows the saved text of each alternative
    saved = api_get(tab, f"/api/conversations/{cid}")["messages"][1]
    assert saved["id"] == alternatives[1] and saved["content"].strip()

    send(tab, "Another one, please.")
    wait_answer(tab, lambda a: a["id"] not in [str(x) for x in alternatives] and a["state"] == "done")
    path = api_get(tab, f"/api/conversations/{cid}")["messages"]
    assert [m["role"] for m in path] == ["user", "assistant", "user", "assistant"]
    assert path[1]["id"] == alternatives[1] and path[2]["parent_id"] == alternatives[1]

    page.reload()
    expect(page.locator("[data-testid=message]")).to_have_count(4)
    expect(answers(tab).first.locator("[data-testid=alt-index]")).to_have_text("2 / 3")
    assert answers(tab).last.locator("[data-testid=alt-index]").is_hidden()
    # paging the first answer leaves the later turns behind (they belong to the second answer)
    answers(tab).first.locator("[data-testid=alt-next]").click()
    expect(page.locator("[data-testid=message]")).to_have_count(2)
    expect(answers(tab).first.locator("[data-testid=alt-index]")).to_have_text("3 / 3")
    answers(tab).first.locator("[data-testid=alt-prev]").click()
    expect(page.locator("[data-testid=message]")).to_have_count(4)
    tab.assert_clean()


def test_an_edited_question_is_a_branch_and_both_survive_a_reload(open_tab: Any) -> None:
    tab = open_tab()
    page = tab.page
    page.goto(tab.url("/"))
    set_max_tokens(tab, 10)
    send(tab, "What is the capital of France?")
    finished(tab)
    send(tab, "And of Spain?")
    wait_answer(tab, lambda a: a["state"] == "done" and len(page.locator("[data-testid=message]").all()) == 4)

    second = questions(tab).last
    second.hover()
    second.locator("[data-testid=edit]").click()
    edit = second.locator("[data-testid=edit-input]")
    expect(edit).to_have_value("And of Spain?")
    edit.fill("nothing to see")
    edit.press("Escape")  # cancel keeps the question as it was
    expect(second.locator("[data-testid=edit-input]")).to_have_count(0)
    expect(second.locator("[data-testid=message-content]")).to_have_text("And of Spain?")

    second.hover()
    second.locator("[data-testid=edit]").click()
    second.locator("[data-testid=edit-input]").fill("And of Italy?")
    second.locator("[data-testid=edit-save]").click()
    expect(questions(tab).last.locator("[data-testid=message-content]")).to_have_text("And of Italy?")
    finished(tab)
    expect(page.locator("[data-testid=message]")).to_have_count(4)

    page.reload()
    edited = questions(tab).last
    expect(edited.locator("[data-testid=message-content]")).to_have_text("And of Italy?")
    expect(edited.locator("[data-testid=alt-index]")).to_have_text("2 / 2")
    edited.locator("[data-testid=alt-prev]").click()
    expect(questions(tab).last.locator("[data-testid=message-content]")).to_have_text("And of Spain?")
    expect(page.locator("[data-testid=message]")).to_have_count(4)  # with its own answer
    page.reload()
    expect(questions(tab).last.locator("[data-testid=message-content]")).to_have_text("And of Spain?")
    tab.assert_clean()


def test_a_refused_message_can_be_retried(open_tab: Any) -> None:
    tab = open_tab()
    page = tab.page
    page.goto(tab.url("/"))
    set_max_tokens(tab, 10**7)  # more than the model may write: refused before anything is saved
    send(tab, "Say hello.")
    retry = page.locator("[data-testid=message][data-role=user] [data-testid=retry]")
    expect(retry).to_be_visible()
    expect(page.locator("[data-testid=message-error]")).to_contain_text("max_tokens")
    set_max_tokens(tab, 10)
    retry.click()
    answer = finished(tab)
    assert answer["state"] == "done"
    expect(questions(tab)).to_have_count(1)
    expect(page.locator("[data-testid=message-error]")).to_have_count(0)
    saved = api_get(tab, f"/api/conversations/{conversation_id(tab)}")["messages"]
    assert saved[0]["content"] == "Say hello."
    assert tab.foreign_requests() == []
    assert len(tab.console_errors) == 1 and "400" in tab.console_errors[0]  # Chromium logs the refused post


def test_rename_search_and_export(open_tab: Any, tmp_path: Any) -> None:
    tab = open_tab()
    page = tab.page
    page.goto(tab.url("/"))
    set_max_tokens(tab, 40)
    send(tab, "Describe the ocean in two sentences.")
    answer = finished(tab)
    cid = conversation_id(tab)
    row = page.locator(f"[data-testid=conversation][data-id='{cid}']")

    # rename: Escape cancels, Enter saves, and the title is kept
    page.locator(f"button[data-rename='{cid}']").click()
    page.locator("[data-testid=rename-input]").fill("zzz")
    page.locator("[data-testid=rename-input]").press("Escape")
    expect(row).to_have_text("Describe the ocean in two sentences.")
    page.locator(f"button[data-rename='{cid}']").click()
    page.locator("[data-testid=rename-input]").fill("Ocean notes")
    page.locator("[data-testid=rename-input]").press("Enter")
    expect(row).to_have_text("Ocean notes")
    expect(page.locator("#topbar-title")).to_have_text("Ocean notes")
    page.reload()
    expect(page.locator(f"[data-testid=conversation][data-id='{cid}']")).to_have_text("Ocean notes")

    # search: a word that is only in the answer finds it; a word nowhere finds nothing
    question_words = {"describe", "the", "ocean", "in", "two", "sentences", "notes"}
    word = next(w for w in re.findall(r"[A-Za-z]{5,}", answer["text"]) if w.lower() not in question_words)
    searched = 30_000  # ms; the CPU may be shared with other work
    page.fill("[data-testid=search]", word.upper())
    expect(page.locator(".conv-group").first).to_have_text("Results", timeout=searched)  # the search applied
    expect(page.locator(f"[data-testid=conversation][data-id='{cid}']")).to_be_visible()
    expect(page.locator("[data-testid=search-match]").first).to_contain_text(word, ignore_case=True)
    page.fill("[data-testid=search]", "qqxqqxnotaword")
    expect(page.locator("[data-testid=conversation]")).to_have_count(0, timeout=searched)
    expect(page.locator("#conv-empty")).to_have_text(re.compile("No conversations match"))
    page.fill("[data-testid=search]", "")
    expect(page.locator(f"[data-testid=conversation][data-id='{cid}']")).to_be_visible(timeout=searched)

    # export: both files hold every message of the conversation shown
    path = api_get(tab, f"/api/conversations/{cid}")["messages"]
    files = {}
    for kind in ("markdown", "json"):
        page.click("[data-testid=export]")
        with page.expect_download() as download:
            page.click(f"[data-testid=export-{kind}]")
        target = tmp_path / download.value.suggested_filename
        download.value.save_as(target)
        files[kind] = target.read_text()
    data = json.loads(files["json"])
    assert [m["content"] for m in data["messages"]] == [m["content"] for m in path]
    assert data["title"] == "Ocean notes"
    assert files["markdown"].startswith("# Ocean notes")
    for m in path:
        assert m["content"].strip() in files["markdown"]
    tab.assert_clean()


def test_a_long_sidebar_loads_more_as_it_scrolls(open_tab: Any) -> None:
    tab = open_tab()
    page = tab.page
    page.goto(tab.url("/"))
    made = [csrf_post(tab, "/api/conversations", {"title": f"Bulk chat {i:03d}"})["id"] for i in range(60)]
    page.reload()
    items = page.locator("[data-testid=conversation]")
    expect(items.first).to_be_visible()
    first_page = items.count()
    assert 50 <= first_page < 60 + 50  # a page, not everything the user has
    shown = set()
    for _ in range(20):
        page.locator("#conv-list").evaluate("list => { list.scrollTop = list.scrollHeight; }")
        page.wait_for_timeout(300)
        shown = {int(x) for x in items.evaluate_all("els => els.map(e => e.dataset.id)")}
        if set(made) <= shown:
            break
    assert set(made) <= shown, f"{len(set(made) - shown)} conversations never loaded"
    assert len(shown) == items.count()  # no duplicates
    tab.assert_clean()


def test_the_context_meter_counts_the_draft_with_the_models_tokenizer(open_tab: Any) -> None:
    tab = open_tab()
    page = tab.page
    page.goto(tab.url("/"))
    meter = page.locator("[data-testid=context-meter]")
    page.fill("[data-testid=prompt]", "Hi")
    expect(meter).to_have_text(re.compile(r"^[\d,]+ / [\d,]+ tokens"))

    def tokens() -> int:
        return int(meter.inner_text().split("/")[0].replace(",", "").strip())

    short = tokens()
    page.fill("[data-testid=prompt]", "Hi " + "there " * 60)
    expect(meter).not_to_have_text(re.compile(rf"^{short:,} /"))
    longer = tokens()
    assert longer >= short + 55
    counted = csrf_post(tab, "/api/context", {"content": "Hi " + "there " * 60, "system_prompt": ""})
    assert counted["tokens"] == longer  # the server's tokenizer, not a guess
    tab.assert_clean()

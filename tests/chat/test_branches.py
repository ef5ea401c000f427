"""Conversations as trees: regenerated answers and edited questions are kept as alternatives,
the conversation shows one branch and continues it; search, pages, export, rename and the
context meter's count."""
from __future__ import annotations

import base64
import importlib
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.apps import apps as django_apps
from django.contrib.auth import get_user_model

from chat.models import CatalogEntry, Conversation, Message
from tests.support import MODEL
from tests.support.api import BearerClient, native_error, new_conversation, post_json, send

from .test_conversations import wait_state

pytestmark = [pytest.mark.django_db(transaction=True)]


async def turn(client: Any, cid: int, content: str, **fields: Any) -> dict[str, Any]:
    r = await send(client, cid, content, max_tokens=fields.pop("max_tokens", 12), **fields)
    assert r.status_code == 201, r.content
    result = r.json()["result"]
    await wait_state(result["assistant_message"]["id"])
    return result


async def regenerate(client: Any, cid: int, answer_id: int, **fields: Any) -> dict[str, Any]:
    r = await post_json(client, f"/api/conversations/{cid}/messages/{answer_id}/regenerate",
                        {"max_tokens": 12, "temperature": 1.0, **fields})
    assert r.status_code == 201, r.content
    result = r.json()["result"]
    await wait_state(result["assistant_message"]["id"])
    return result


async def shown(client: Any, cid: int) -> dict[str, Any]:
    r = await client.get(f"/api/conversations/{cid}")
    assert r.status_code == 200
    return r.json()["result"]


@pytest.mark.model
@pytest.mark.usefixtures("loaded")
async def test_regenerated_answers_are_alternatives_and_the_chat_continues_from_the_one_chosen(client) -> None:  # type: ignore[no-untyped-def]
    cid = await new_conversation(client)
    first = await turn(client, cid, "Name a colour.")
    question_id, a1 = first["user_message"]["id"], first["assistant_message"]["id"]
    a2 = (await regenerate(client, cid, a1))["assistant_message"]["id"]
    third = await regenerate(client, cid, a1)
    a3 = third["assistant_message"]["id"]
    assert third["user_message"]["id"] == question_id  # the same question, answered again
    assert third["assistant_message"]["sibling_ids"] == [a1, a2, a3]
    conv = await shown(client, cid)
    assert [m["id"] for m in conv["messages"]] == [question_id, a3]  # the newest is shown
    assert conv["messages"][1]["sibling_ids"] == [a1, a2, a3]

    r = await client.post(f"/api/conversations/{cid}/messages/{a2}/select")
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["result"]["messages"]] == [question_id, a2]
    assert [m["id"] for m in (await shown(client, cid))["messages"]] == [question_id, a2]  # remembered

    follow_up = await turn(client, cid, "And another one?")
    assert follow_up["user_message"]["parent_id"] == a2
    path = [m["id"] for m in (await shown(client, cid))["messages"]]
    assert path == [question_id, a2, follow_up["user_message"]["id"], follow_up["assistant_message"]["id"]]
    # the follow-up's prompt held the chosen alternative, and not the others
    a2_text = (await Message.objects.aget(pk=a2)).content
    assert a2_text
    engine_prompt = await prompt_of(follow_up["assistant_message"]["id"])
    assert a2_text.strip() in engine_prompt

    # going back to the third alternative shows its branch, where it was left (no follow-up)
    r = await client.post(f"/api/conversations/{cid}/messages/{a3}/select")
    assert [m["id"] for m in r.json()["result"]["messages"]] == [question_id, a3]
    # and selecting the second again continues down to its follow-up
    r = await client.post(f"/api/conversations/{cid}/messages/{a2}/select")
    assert len(r.json()["result"]["messages"]) == 4


async def prompt_of(answer_id: int) -> str:
    """The text the model was given for this answer, rebuilt as the server builds it."""
    from chat.tree import Tree, dialogue
    from inference import Engine, pool

    def build() -> str:
        answer = Message.objects.select_related("conversation").get(pk=answer_id)
        tree = Tree.of(answer.conversation)
        history = [{"role": m.role, "content": m.content} for m in dialogue(tree.path(answer.parent_id))]
        engine = pool.get(CatalogEntry.objects.get(name=MODEL).to_spec())
        assert isinstance(engine, Engine)
        fitted = engine.fit_history(answer.conversation.system_prompt, history, 10_000)
        assert len(fitted.token_ids) == answer.prompt_tokens  # what was really sent
        return engine.tokenizer.decode(fitted.token_ids)
    return await sync_to_async(build)()


@pytest.mark.model
@pytest.mark.usefixtures("loaded")
async def test_an_edited_question_is_a_new_branch_and_the_old_one_stays(client) -> None:  # type: ignore[no-untyped-def]
    cid = await new_conversation(client)
    first = await turn(client, cid, "What is the capital of France?")
    second = await turn(client, cid, "And of Spain?")
    # edit the second question: a sibling of it, after the same answer
    edited = await turn(client, cid, "And of Italy?", parent_id=first["assistant_message"]["id"])
    assert edited["user_message"]["sibling_ids"] == [second["user_message"]["id"], edited["user_message"]["id"]]
    conv = await shown(client, cid)
    assert [m["content"] for m in conv["messages"] if m["role"] == "user"] == [
        "What is the capital of France?", "And of Italy?"]
    # edit the first question: a new root
    root = await turn(client, cid, "What is the capital of Peru?", parent_id=None)
    assert root["user_message"]["parent_id"] is None
    assert root["user_message"]["sibling_ids"] == [first["user_message"]["id"], root["user_message"]["id"]]
    assert len((await shown(client, cid))["messages"]) == 2
    # the old branches are all reachable
    r = await client.post(f"/api/conversations/{cid}/messages/{second['user_message']['id']}/select")
    assert [m["content"] for m in r.json()["result"]["messages"] if m["role"] == "user"] == [
        "What is the capital of France?", "And of Spain?"]
    assert await Message.objects.filter(conversation_id=cid).acount() == 8


@pytest.mark.usefixtures("no_engine")
async def test_bad_branch_requests_are_refused_and_change_nothing(client) -> None:  # type: ignore[no-untyped-def]
    cid = await new_conversation(client)
    other = await new_conversation(client)
    conversation = await Conversation.objects.aget(pk=cid)
    question = await Message.objects.acreate(conversation=conversation, role="user", content="hi")
    answer = await Message.objects.acreate(conversation=conversation, role="assistant", content="hello",
                                           parent=question)
    for parent in (question.pk, 10**9, "7", True, -1):
        r = await send(client, cid, "again", parent_id=parent)
        assert native_error(r) == (400, 5004), (parent, r.content)
        assert "parent_id" in r.json()["errors"][0]["message"]
    r = await send(client, other, "again", parent_id=answer.pk)  # another conversation's answer
    assert native_error(r) == (400, 5004)
    # regenerate a question, or an unknown message: 404
    for target in (question.pk, 10**9):
        r = await post_json(client, f"/api/conversations/{cid}/messages/{target}/regenerate", {})
        assert native_error(r) == (404, 7000)
    r = await client.post(f"/api/conversations/{cid}/messages/{10**9}/select")
    assert native_error(r) == (404, 7000)
    r = await client.post(f"/api/conversations/{other}/messages/{answer.pk}/select")
    assert native_error(r) == (404, 7000)
    r = await post_json(client, "/api/context", {"conversation_id": cid, "content": "x", "parent_id": 10**9})
    assert native_error(r) == (400, 5004)
    assert await Message.objects.filter(conversation_id=cid).acount() == 2
    # while an answer streams, the branch shown stays (the answer would vanish from the page)
    await Message.objects.acreate(conversation=conversation, role="assistant", parent=question,
                                  state=Message.State.STREAMING)
    r = await client.post(f"/api/conversations/{cid}/messages/{answer.pk}/select")
    assert native_error(r) == (409, 5004)


async def test_another_users_branches_are_not_found(client) -> None:  # type: ignore[no-untyped-def]
    cid = await new_conversation(client)
    conversation = await Conversation.objects.aget(pk=cid)
    question = await Message.objects.acreate(conversation=conversation, role="user", content="hi")
    answer = await Message.objects.acreate(conversation=conversation, role="assistant", content="hello",
                                           parent=question)
    await sync_to_async(get_user_model().objects.create_user)("mallory", password="pw-mallory-1")
    mallory = BearerClient()
    await mallory.alogin(username="mallory", password="pw-mallory-1")
    for path in (f"/api/conversations/{cid}/messages/{answer.pk}/select",
                 f"/api/conversations/{cid}/messages/{answer.pk}/regenerate"):
        assert (await mallory.post(path)).status_code == 404
    assert (await mallory.get(f"/api/conversations/{cid}/export")).status_code == 404
    r = await post_json(mallory, "/api/context", {"conversation_id": cid, "content": "x"})
    assert r.status_code == 404


async def test_search_finds_words_in_titles_and_answers_and_pages_through_everything(client) -> None:  # type: ignore[no-untyped-def]
    user = await get_user_model().objects.aget(username="alice")
    ids = []
    for i in range(7):
        c = await Conversation.objects.acreate(owner=user, model=MODEL, title=f"Chat {i}")
        q = await Message.objects.acreate(conversation=c, role="user", content=f"question {i}")
        await Message.objects.acreate(conversation=c, role="assistant", parent=q,
                                      content="the word zanzibar appears here" if i % 3 == 0 else "nothing")
        ids.append(c.pk)
    await Conversation.objects.acreate(owner=user, model=MODEL, title="Zanzibar trip")
    r = await client.get("/api/conversations", {"q": "ZANZIBAR"})
    rows = r.json()["result"]
    titles = {row["title"] for row in rows}
    assert titles == {"Chat 0", "Chat 3", "Chat 6", "Zanzibar trip"}
    assert all("zanzibar" in row["match"].lower() for row in rows if row["title"].startswith("Chat"))
    # pages of 3, newest first, with a cursor, cover all 8 exactly once
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/api/conversations", params)).json()
        seen += [row["id"] for row in body["result"]]
        cursor = body["result_info"]["cursor"]
        if cursor is None:
            break
    assert len(seen) == 8 and len(set(seen)) == 8
    huge = base64.urlsafe_b64encode(b"2026-01-01T00:00:00+00:00|99999999999999999999999").decode()
    naive = base64.urlsafe_b64encode(b"2026-01-01T00:00:00|5").decode()
    for bad in ({"limit": "0"}, {"limit": "201"}, {"limit": "x"}, {"cursor": "garbage"}, {"q": "x" * 201},
                {"cursor": huge}, {"cursor": naive}):
        assert native_error(await client.get("/api/conversations", bad)) == (400, 5004), bad


async def test_search_ignores_case_beyond_ascii_on_every_database(client) -> None:  # type: ignore[no-untyped-def]
    user = await get_user_model().objects.aget(username="alice")
    c = await Conversation.objects.acreate(owner=user, model=MODEL, title="Reiseplanung")
    q = await Message.objects.acreate(conversation=c, role="user", content="Привет! Eine ÜBERRASCHUNG für Élodie?")
    await Message.objects.acreate(conversation=c, role="assistant", parent=q, content="Gern.")
    await Conversation.objects.acreate(owner=user, model=MODEL, title="Ärger im Büro")
    other = await Conversation.objects.acreate(owner=user, model=MODEL, title="unrelated")
    await Message.objects.acreate(conversation=other, role="user", content="100% sure_thing")

    async def titles(query: str) -> set[str]:
        return {row["title"] for row in (await client.get("/api/conversations", {"q": query})).json()["result"]}

    assert await titles("привет") == {"Reiseplanung"}
    assert await titles("überraschung FÜR élodie") == {"Reiseplanung"}
    assert await titles("ärger") == {"Ärger im Büro"}
    rows = (await client.get("/api/conversations", {"q": "ПРИВЕТ"})).json()["result"]
    assert rows[0]["match"].startswith("Привет!")
    # LIKE's wildcards in a query are plain characters
    assert await titles("100%") == {"unrelated"} and await titles("0% s") == {"unrelated"}
    assert await titles("i_e") == set() and await titles("%") == {"unrelated"}  # as a wildcard, "Reise" matches


async def test_export_holds_every_message_of_the_branch_shown(client) -> None:  # type: ignore[no-untyped-def]
    user = await get_user_model().objects.aget(username="alice")
    c = await Conversation.objects.acreate(owner=user, model=MODEL, title="Ships & sails", system_prompt="Be brief.")
    q1 = await Message.objects.acreate(conversation=c, role="user", content="What is a sloop?")
    old = await Message.objects.acreate(conversation=c, role="assistant", parent=q1, content="OLD ANSWER")
    a1 = await Message.objects.acreate(conversation=c, role="assistant", parent=q1, content="A boat with **one** mast.")
    q2 = await Message.objects.acreate(conversation=c, role="user", parent=a1, content="And a ketch?")
    a2 = await Message.objects.acreate(conversation=c, role="assistant", parent=q2, content="Two masts.\n\n```\nx\n```")
    c.current_leaf = a2
    await c.asave()
    r = await client.get(f"/api/conversations/{c.pk}/export", {"format": "json"})
    assert r.status_code == 200 and "attachment" in r["Content-Disposition"] and ".json" in r["Content-Disposition"]
    assert 'filename="ships-sails.json"' in r["Content-Disposition"]
    data = json.loads(r.content)
    assert [m["content"] for m in data["messages"]] == [q1.content, a1.content, q2.content, a2.content]
    assert data["title"] == "Ships & sails" and data["system_prompt"] == "Be brief."
    r = await client.get(f"/api/conversations/{c.pk}/export", {"format": "markdown"})
    text = r.content.decode()
    assert r["Content-Type"].startswith("text/markdown") and ".md" in r["Content-Disposition"]
    assert text.startswith("# Ships & sails")
    for m in (q1, a1, q2, a2):
        assert m.content in text
    assert old.content not in text
    assert native_error(await client.get(f"/api/conversations/{c.pk}/export", {"format": "pdf"})) == (400, 5004)


@pytest.mark.usefixtures("no_engine")
async def test_rename_trims_and_is_kept(client) -> None:  # type: ignore[no-untyped-def]
    cid = await new_conversation(client)
    r = await client.patch(f"/api/conversations/{cid}", json.dumps({"title": "  Trip   to\nLima "}),
                           content_type="application/json")
    assert r.json()["result"]["title"] == "Trip to Lima"
    assert (await shown(client, cid))["title"] == "Trip to Lima"
    r = await client.patch(f"/api/conversations/{cid}", json.dumps({"title": "x" * 201}),
                           content_type="application/json")
    assert native_error(r) == (400, 5004)


@pytest.mark.model
@pytest.mark.usefixtures("loaded")
async def test_the_context_count_grows_with_the_draft_and_names_what_falls_out(client) -> None:  # type: ignore[no-untyped-def]
    user = await get_user_model().objects.aget(username="alice")
    c = await Conversation.objects.acreate(owner=user, model=MODEL)
    parent = None
    made = []
    for i in range(6):
        q = await Message.objects.acreate(conversation=c, role="user", parent=parent,
                                          content=f"Question {i}: tell me about ships number {i}.")
        parent = await Message.objects.acreate(conversation=c, role="assistant", parent=q,
                                               content=f"Answer {i}: ship {i} sails the sea.")
        made += [q.pk, parent.pk]

    async def count(content: str, **fields: Any) -> dict[str, Any]:
        r = await post_json(client, "/api/context", {"conversation_id": c.pk, "content": content, **fields})
        assert r.status_code == 200, r.content
        return r.json()["result"]

    short, longer = await count("Hi"), await count("Hi " + "there " * 40)
    entry = await CatalogEntry.objects.aget(name=MODEL)
    assert short["context_length"] == entry.context_length and short["fits"] and short["dropped_ids"] == []
    assert longer["tokens"] > short["tokens"] + 30
    # a new chat counts too
    r = await post_json(client, "/api/context", {"content": "Hi", "system_prompt": "Be brief."})
    assert 0 < r.json()["result"]["tokens"] < short["tokens"]
    # with a small context, the oldest messages fall out, oldest first
    await CatalogEntry.objects.filter(name=MODEL).aupdate(context_length=160)
    tight = await count("What is your name?", max_tokens=32)
    assert tight["tokens"] <= 160 - 32 and tight["dropped_ids"] == made[: len(tight["dropped_ids"])]
    assert tight["dropped_ids"]
    huge = await count("word " * 400, max_tokens=32)
    assert huge["fits"] is False and huge["tokens"] > 128 and huge["dropped_ids"] == made
    assert native_error(await post_json(client, "/api/context", {"content": 5})) == (400, 5004)


def test_the_migration_chains_existing_messages_into_one_branch(transactional_db) -> None:  # type: ignore[no-untyped-def]
    user = get_user_model().objects.create_user("carol", password="pw-carol-1")
    c = Conversation.objects.create(owner=user, model=MODEL)
    rows = [Message.objects.create(conversation=c, role=("user", "assistant")[i % 2], content=str(i))
            for i in range(4)]
    importlib.import_module("chat.migrations.0007_message_tree").chain(django_apps, None)
    rows = [Message.objects.get(pk=m.pk) for m in rows]
    assert [m.parent_id for m in rows] == [None, rows[0].pk, rows[1].pk, rows[2].pk]
    assert Conversation.objects.get(pk=c.pk).current_leaf_id == rows[-1].pk


def test_admin_shows_a_conversations_tree(transactional_db) -> None:  # type: ignore[no-untyped-def]
    from django.test import Client
    admin = get_user_model().objects.create_superuser("root", password="pw-root-123")
    c = Conversation.objects.create(owner=admin, model=MODEL, title="Tree")
    q = Message.objects.create(conversation=c, role="user", content="hi")
    a = Message.objects.create(conversation=c, role="assistant", parent=q, content="hello")
    c.current_leaf = a
    c.save()
    client = Client()
    client.force_login(admin)
    for url in (f"/admin/chat/conversation/{c.pk}/change/", f"/admin/chat/message/{a.pk}/change/"):
        r = client.get(url)
        assert r.status_code == 200 and "hello" in r.content.decode()

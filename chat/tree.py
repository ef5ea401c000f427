"""A conversation's messages as a tree.

Each message has a parent (none for the first). Regenerating an answer adds a sibling to it
(same parent: the question); editing a question adds a sibling to the question. The
conversation remembers the leaf it shows (``current_leaf``); the page shows, and the next turn
sends to the model, the path from the root to that leaf. Conversations hold hundreds of
messages at most, so a branch is found by loading the conversation's ``(id, parent)`` pairs.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from .models import Conversation, Message


@dataclass
class Tree:
    messages: dict[int, Message]
    children: dict[int | None, list[int]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def of(cls, conversation: Conversation) -> Tree:
        rows = list(Message.objects.filter(conversation=conversation).order_by("created_at", "id"))
        tree = cls({m.pk: m for m in rows})
        for m in rows:
            tree.children[m.parent_id].append(m.pk)
        return tree

    def leaf(self, conversation: Conversation) -> int | None:
        """The leaf shown: the remembered one, else the newest message's branch."""
        if conversation.current_leaf_id in self.messages:
            return conversation.current_leaf_id
        return max(self.messages, key=lambda pk: (self.messages[pk].created_at, pk)) if self.messages else None

    def path(self, leaf: int | None) -> list[Message]:
        """Root to ``leaf``, in order."""
        out: list[Message] = []
        seen: set[int] = set()
        while leaf is not None and leaf in self.messages and leaf not in seen:
            seen.add(leaf)
            out.append(self.messages[leaf])
            leaf = self.messages[leaf].parent_id
        out.reverse()
        return out

    def newest_leaf_under(self, pk: int) -> int:
        """Follow the newest child from ``pk`` down to a leaf: where a branch was left off."""
        while self.children.get(pk):
            pk = self.children[pk][-1]
        return pk

    def siblings(self, message: Message) -> list[int]:
        """``message`` and its alternatives (the same parent), oldest first."""
        return list(self.children.get(message.parent_id, [message.pk]))


def dialogue(path: list[Message]) -> list[Message]:
    """The messages of a branch that the model sees: questions, and answers with text that
    finished or were stopped (failed or empty answers are not part of the dialogue)."""
    return [
        m for m in path
        if m.role == Message.Role.USER or (m.content and m.state in (Message.State.DONE, Message.State.STOPPED))
    ]

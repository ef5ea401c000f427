"""Prompts as the model sees them: chat templates, raw text, and fitting a conversation
into the context window. Owned by the engine (``Engine.encode`` / ``Engine.fit_history``).

The engine's worker thread detokenizes with the model's tokenizer; fast tokenizers must
not be used from two threads at once, so prompts are encoded with a private copy under
a lock. All of this blocks (tokenizing): call it in a thread from async code.
"""
from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Any

from .errors import ContextWindowExceeded


@dataclass(frozen=True)
class FittedPrompt:
    token_ids: list[int]
    first_included: int  # index into the history of the oldest message sent


class PromptEncoder:
    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = copy.deepcopy(tokenizer)
        self.lock = threading.Lock()

    def chat(self, messages: list[dict[str, str]]) -> list[int]:
        """The chat template applied to ``messages``, ready for the assistant's turn."""
        with self.lock:
            tok = self.tokenizer
            if getattr(tok, "chat_template", None):
                out = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
                ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
                return list(ids)
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
            return list(tok(text)["input_ids"])

    def decode(self, token_ids: list[int]) -> str:
        """The text of ``token_ids``; raises ``ValueError`` for an id outside the vocabulary."""
        with self.lock:
            size = len(self.tokenizer)
            bad = next((t for t in token_ids if not 0 <= t < size), None)
            if bad is not None:
                raise ValueError(f"token id {bad} is outside the vocabulary (0 to {size - 1})")
            return str(self.tokenizer.decode(token_ids))

    def raw(self, prompt: str) -> list[int]:
        with self.lock:
            return list(self.tokenizer(prompt)["input_ids"])

    def encode(self, *, prompt: str | None = None, messages: list[dict[str, str]] | None = None,
               raw: bool = False) -> list[int]:
        """Token ids of a prompt (chat template unless ``raw``) or of ``messages``."""
        if prompt is not None and raw:
            return self.raw(prompt)
        return self.chat(messages if messages is not None else [{"role": "user", "content": prompt or ""}])

    def fit_history(self, system_prompt: str, history: list[dict[str, str]], budget: int) -> FittedPrompt:
        """The system prompt plus the newest messages of ``history`` whose encoding fits
        ``budget`` tokens (the context length less the answer's ``max_tokens``).

        Raises ``ContextWindowExceeded`` when even the newest message alone does not fit.
        """
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []

        def ids_from(start: int) -> list[int]:
            return self.chat(system + history[start:])

        last = len(history) - 1
        newest = ids_from(last)
        if len(newest) > budget:
            raise ContextWindowExceeded(len(newest), budget)
        lo, hi = 0, last  # the smallest start that fits (fewer messages, fewer tokens)
        best = newest
        while lo < hi:
            mid = (lo + hi) // 2
            ids = ids_from(mid)
            if len(ids) <= budget:
                hi, best = mid, ids
            else:
                lo = mid + 1
        start = hi
        if start < last and history[start]["role"] == "assistant":  # templates want a user turn first
            start += 1
        ids = newest if start == last else best if start == hi else ids_from(start)
        return FittedPrompt(ids, start)


def check_context(num_tokens: int, context_length: int) -> None:
    if num_tokens > context_length:
        raise ContextWindowExceeded(num_tokens, context_length)

"""Incremental detokenization and stop strings.

``IncrementalDetokenizer`` yields text pieces whose concatenation equals the decoded
output: it decodes a small window with the previous tokens as context (so a leading
space of a SentencePiece token is kept) and holds back a piece while it ends in an
incomplete UTF-8 sequence (U+FFFD). ``StopMatcher`` holds back text that may be the
start of a stop string, so a stop that spans tokens is cut cleanly.
"""
from __future__ import annotations

from typing import Any

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any, prompt_token_ids: list[int]) -> None:
        self.tokenizer = tokenizer
        self.token_ids: list[int] = list(prompt_token_ids[-6:])
        # prefix_offset..read_offset: context already emitted; read_offset..: new tokens
        self.prefix_offset = max(len(self.token_ids) - 5, 0)
        self.read_offset = len(self.token_ids)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def add(self, token_id: int) -> str:
        """Append a token; return the new text it completes ("" if none yet)."""
        self.token_ids.append(token_id)
        prefix = self._decode(self.token_ids[self.prefix_offset : self.read_offset])
        full = self._decode(self.token_ids[self.prefix_offset :])
        if len(full) > len(prefix) and not full.endswith(_REPLACEMENT):
            piece = full[len(prefix) :]
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.token_ids)
            # keep the window short: drop context no longer needed
            if self.prefix_offset > 64:
                drop = self.prefix_offset - 8
                self.token_ids = self.token_ids[drop:]
                self.prefix_offset -= drop
                self.read_offset -= drop
            return piece
        return ""

    def flush(self) -> str:
        """Text still held back at the end (an incomplete byte sequence), as decoded."""
        full = self._decode(self.token_ids[self.prefix_offset :])
        prefix = self._decode(self.token_ids[self.prefix_offset : self.read_offset])
        self.read_offset = self.prefix_offset = len(self.token_ids)
        return full[len(prefix) :] if len(full) > len(prefix) else ""


class StopMatcher:
    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Add ``text``; return (text safe to emit, whether a stop string was reached)."""
        if not self.stops:
            return text, False
        self.pending += text
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self.pending = self.pending[:cut], ""
            return out, True
        hold = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(s[:n]):
                    hold = max(hold, n)
                    break
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(self.pending) - hold :]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out

"""Incremental detokenization and stop strings."""
from __future__ import annotations

import pytest

from inference.detokenizer import IncrementalDetokenizer, StopMatcher


@pytest.mark.model
@pytest.mark.parametrize("text", [
    "Hello, world! How are you?",
    "Ünïcödé: 日本語のテキスト, emoji 🎉🚀 and  double  spaces",
    "  leading spaces and\nnewlines\n\n",
])
def test_pieces_concatenate_to_the_full_decoded_text(engine, text: str) -> None:  # type: ignore[no-untyped-def]
    tok = engine.tokenizer
    prompt = tok("Say:")["input_ids"]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tok, prompt)
    pieces = [detok.add(i) for i in ids] + [detok.flush()]
    assert "".join(pieces) == tok.decode(ids)
    assert all("\ufffd" not in p for p in pieces)


def test_stop_string_across_pieces_is_cut_and_not_emitted() -> None:
    m = StopMatcher(("END",))
    out = []
    for piece in ["Hello E", "N", "D and more"]:
        text, hit = m.feed(piece)
        out.append(text)
        if hit:
            break
    assert "".join(out) == "Hello " and hit


def test_text_that_only_looks_like_a_stop_start_is_released() -> None:
    m = StopMatcher(("STOP",))
    a, _ = m.feed("ST")
    b, hit = m.feed("AR")
    assert a + b + m.flush() == "STAR" and not hit

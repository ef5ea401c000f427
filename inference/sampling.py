"""Turn logits into next tokens, each row with its own settings and random generator."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .sequence import Sequence


def make_generator(seed: int, device: str) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def apply_penalties(logits: torch.Tensor, seq: Sequence) -> torch.Tensor:
    """Repetition penalty (HF/CTRL style, over prompt and output), then OpenAI-style
    frequency and presence penalties over the output. ``logits`` is ``[V]``."""
    p = seq.params
    if p.repetition_penalty != 1.0:
        seen = torch.tensor(seq.all_token_ids, device=logits.device).unique()
        scores = logits[seen]
        logits[seen] = torch.where(scores > 0, scores / p.repetition_penalty, scores * p.repetition_penalty)
    if (p.frequency_penalty or p.presence_penalty) and seq.num_output_tokens:
        out = torch.tensor(seq.output_token_ids, device=logits.device)
        counts = torch.bincount(out, minlength=logits.shape[-1])[: logits.shape[-1]].to(logits.dtype)
        logits -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(logits.dtype)
    return logits


def sample_row(logits: torch.Tensor, seq: Sequence, generator: torch.Generator | None) -> int:
    """Sample one token from ``logits`` ``[V]`` (float32) for ``seq``."""
    p = seq.params
    if p.has_penalties:
        logits = apply_penalties(logits.clone(), seq)
    if p.is_greedy:
        return int(torch.argmax(logits))
    logits = logits / p.temperature
    if p.top_k and p.top_k < logits.shape[-1]:
        kth = torch.topk(logits, p.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if p.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # drop a token once the mass before it already reaches top_p (keeps at least one)
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= p.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.empty_like(logits).scatter_(0, order, sorted_logits)
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


class TokenMasks:
    """Masks the logits of constrained rows to the tokens their grammars allow now
    (``inference.guided``). One llguidance executor computes every row's bitmask at once,
    in parallel and without the GIL."""

    def __init__(self) -> None:
        from llguidance import LLExecutor

        self.executor = LLExecutor()

    @torch.inference_mode()
    def apply(self, logits: torch.Tensor, matchers: list[Any]) -> None:
        """In place on ``logits`` ``[N, V]``; ``matchers[i]`` is row i's matcher or None."""
        rows = [i for i, m in enumerate(matchers) if m is not None]
        if not rows:
            return
        vocab = logits.shape[-1]
        words = (vocab + 31) // 32
        bitmask = torch.zeros((len(rows), words), dtype=torch.int32)
        # llguidance.torch's helper does this too, but importing it imports torch.compile (1 s)
        self.executor.unsafe_compute_mask_ptr([(matchers[i], j) for j, i in enumerate(rows)], bitmask.data_ptr(),
                                              words * 4, len(rows))
        # one byte per token, 1 where forbidden (numpy unpacks bits several times faster than torch's shifts)
        forbidden = np.unpackbits((~bitmask).numpy().view(np.uint8), axis=1, bitorder="little")[:, :vocab]
        mask = torch.from_numpy(forbidden).view(torch.bool).to(logits.device)
        if len(rows) == logits.shape[0]:
            logits.masked_fill_(mask, float("-inf"))
        else:
            index = torch.tensor(rows, device=logits.device)
            logits[index] = logits[index].masked_fill(mask, float("-inf"))


@torch.inference_mode()
def forbid_ending(logits: torch.Tensor, rows: list[tuple[int, list[int], bool]]) -> None:
    """``min_tokens``: in place on ``logits`` ``[N, V]``, each ``(i, end_ids, guided)`` row gets
    -inf for its end-of-sequence and stop token ids, so it cannot end yet. A guided row whose
    grammar allows nothing else (it is complete) keeps them: the grammar has the last word."""
    for i, end_ids, guided in rows:
        if not end_ids:
            continue
        index = torch.tensor(end_ids, device=logits.device)
        row = logits[i]  # [V], a view
        saved = row[index].clone() if guided else None
        row.index_fill_(0, index, float("-inf"))
        if saved is not None and not bool(torch.isfinite(row).any()):
            row[index] = saved


def top_logprobs(logits: torch.Tensor, token: int, k: int) -> tuple[float, list[tuple[int, float]]]:
    """The log-probability of ``token`` under ``logits`` ``[V]`` and the ``k`` likeliest tokens."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    top: list[tuple[int, float]] = []
    if k:
        values, ids = logprobs.topk(k)
        top = list(zip(ids.tolist(), values.tolist()))
    return float(logprobs[token]), top


def sample(logits: torch.Tensor, seqs: list[Sequence],
           generators: list[torch.Generator | None]) -> list[int | Exception]:
    """Next token for each row of ``logits`` ``[N, V]``; greedy rows share one argmax.

    Rows are independent: a row whose sampling fails gets its exception in place of a
    token, and every other row still gets its token.
    """
    simple = [i for i, s in enumerate(seqs) if s.params.is_greedy and not s.params.has_penalties]
    tokens: list[int | Exception] = [0] * len(seqs)
    if simple:
        rows = logits if len(simple) == len(seqs) else logits[simple]
        for i, t in zip(simple, torch.argmax(rows, dim=-1).tolist()):
            tokens[i] = t
    if len(simple) == len(seqs):
        return tokens
    simple_set = set(simple)
    for i, seq in enumerate(seqs):
        if i not in simple_set:
            try:
                tokens[i] = sample_row(logits[i], seq, generators[i])
            except Exception as exc:  # noqa: BLE001 - fails this row only
                tokens[i] = exc
    return tokens

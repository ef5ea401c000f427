"""Paged KV bookkeeping and prefix caching, without torch or a model."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from inference.block_manager import BlockManager
from inference.sequence import SamplingParams, Sequence

ROOT = Path(__file__).resolve().parents[2]


def seq(tokens: list[int], rid: str = "r") -> Sequence:
    return Sequence(rid, list(tokens), SamplingParams(), max_model_len=8192)


def admit(bm: BlockManager, s: Sequence) -> None:
    hits, _ = bm.num_blocks_to_admit(s)
    bm.admit(s, hits)
    bm.grow(s, s.num_tokens)


def compute_all(bm: BlockManager, s: Sequence) -> None:
    s.num_computed_tokens = s.num_tokens
    bm.register_computed(s)


def test_the_bookkeeping_runs_without_torch() -> None:
    code = "import sys, inference.block_manager, inference.scheduler; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_blocks_are_taken_per_block_size_and_returned() -> None:
    bm = BlockManager(num_blocks=9, block_size=4)
    s = seq(list(range(10)))
    admit(bm, s)
    assert len(s.block_table) == 3 and 0 not in s.block_table  # block 0 is padding
    assert bm.num_free_blocks == 8 - 3
    bm.free(s)
    assert bm.num_free_blocks == 8 and s.block_table == []


def test_a_shared_prefix_is_computed_once() -> None:
    bm = BlockManager(num_blocks=17, block_size=4)
    system = list(range(100, 112))  # three full blocks
    a = seq(system + [1, 2, 3], "a")
    admit(bm, a)
    compute_all(bm, a)
    b = seq(system + [7, 8], "b")
    hits, _ = bm.num_blocks_to_admit(b)
    bm.admit(b, hits)
    assert b.num_computed_tokens == 12 and b.num_cached_tokens == 12
    assert b.block_table == a.block_table[:3]
    assert bm.stats.hit_tokens == 12


def test_a_block_is_only_shared_with_the_same_prefix_before_it() -> None:
    bm = BlockManager(num_blocks=17, block_size=4)
    a = seq([1, 2, 3, 4, 5, 6, 7, 8, 9], "a")
    admit(bm, a)
    compute_all(bm, a)
    b = seq([0, 2, 3, 4, 5, 6, 7, 8, 9], "b")  # second block equal, first not
    hits, _ = bm.num_blocks_to_admit(b)
    assert hits == []


def test_the_block_holding_the_last_token_is_always_computed() -> None:
    bm = BlockManager(num_blocks=17, block_size=4)
    a = seq(list(range(8)), "a")
    admit(bm, a)
    compute_all(bm, a)
    again = seq(list(range(8)), "b")  # same prompt, two full blocks
    hits, _ = bm.num_blocks_to_admit(again)
    assert len(hits) == 1  # the second block holds the last token: its logits are needed


def test_a_conversations_history_including_the_answer_is_reused_next_turn() -> None:
    bm = BlockManager(num_blocks=33, block_size=4)
    turn1 = seq(list(range(10)), "t1")
    admit(bm, turn1)
    turn1.num_computed_tokens = 10
    for token in range(50, 57):  # the answer, decoded token by token
        turn1.append_token(token)
        bm.grow(turn1, turn1.num_tokens)
        turn1.num_computed_tokens = turn1.num_tokens - 1
        bm.register_computed(turn1)
    history = turn1.all_token_ids[:16]
    bm.free(turn1)  # the request ended; its blocks stay cached
    turn2 = seq(history + [90, 91, 92], "t2")
    hits, _ = bm.num_blocks_to_admit(turn2)
    assert len(hits) == 4  # 16 tokens of prompt + answer


def test_least_recently_freed_cached_blocks_are_evicted_first() -> None:
    bm = BlockManager(num_blocks=5, block_size=2)  # 4 usable blocks
    old = seq([1, 2, 3, 4, 5], "old")
    admit(bm, old)  # 3 blocks
    compute_all(bm, old)
    bm.free(old)
    newer = seq([7, 8, 9, 10, 11], "new")
    admit(bm, newer)  # 3 blocks: the two never cached first, then one cached block
    probe = seq([1, 2, 3, 4, 0], "probe")
    hits, _ = bm.num_blocks_to_admit(probe)
    assert len(hits) == 1  # the head of the old prefix survived; its tail went first
    assert bm.stats.evicted_blocks == 1


def test_reviving_cached_blocks_counts_against_free_memory() -> None:
    bm = BlockManager(num_blocks=5, block_size=2)
    a = seq([1, 2, 3, 4, 5], "a")
    admit(bm, a)
    compute_all(bm, a)
    bm.free(a)
    b = seq([1, 2, 3, 4, 6, 7], "b")
    hits, needed = bm.num_blocks_to_admit(b)
    assert len(hits) == 2 and needed == 1 + 2  # one new block, two revived from the free list
    bm.admit(b, hits)
    bm.grow(b, 6)
    assert bm.num_free_blocks == 4 - 3


def test_usage_and_capacity() -> None:
    bm = BlockManager(num_blocks=11, block_size=16)
    assert bm.capacity_tokens == 160 and bm.usage == 0.0
    s = seq(list(range(40)))
    admit(bm, s)
    assert bm.usage == pytest.approx(0.3)


def test_prefix_caching_can_be_turned_off() -> None:
    bm = BlockManager(num_blocks=17, block_size=4, enable_prefix_caching=False)
    a = seq(list(range(12)) + [1], "a")
    admit(bm, a)
    compute_all(bm, a)
    hits, _ = bm.num_blocks_to_admit(seq(list(range(12)) + [2], "b"))
    assert hits == []

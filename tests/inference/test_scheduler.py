"""The scheduler's policy over paged memory, without torch or a model."""
from __future__ import annotations

import pytest

from inference.block_manager import BlockManager
from inference.errors import QueueFull
from inference.scheduler import Scheduler, SchedulerOutput
from inference.sequence import RequestStatus, SamplingParams, Sequence


def seq(rid: str, prompt_len: int = 10, first: int = 0) -> Sequence:
    return Sequence(rid, list(range(first, first + prompt_len)), SamplingParams(), max_model_len=4096)


def scheduler(max_num_seqs: int = 4, max_queue: int = 4, chunk: int = 1000, blocks: int = 257,
              block_size: int = 16, prefix_caching: bool = False) -> Scheduler:
    return Scheduler(BlockManager(blocks, block_size, prefix_caching), max_num_seqs, max_queue, chunk)


def run(sch: Scheduler, budget: int | None = None) -> SchedulerOutput:
    """Schedule a step and pretend it ran: progress advances, last rows get a token."""
    out = sch.schedule(budget)
    sch.update(out)
    for s in out.scheduled:
        if s.is_last:
            s.seq.append_token(7)
    return out


def rows(out: SchedulerOutput) -> list[tuple[str, int, int]]:
    return [(s.seq.request_id, s.start, s.end) for s in out.scheduled]


def test_it_admits_up_to_the_batch_size_and_queues_the_rest() -> None:
    sch = scheduler(max_num_seqs=2, max_queue=10)
    seqs = [seq(str(i)) for i in range(3)]
    for s in seqs:
        sch.add(s)
    out = sch.schedule()
    assert [s.seq for s in out.scheduled] == seqs[:2]
    assert len(sch.running) == 2 and len(sch.waiting) == 1
    assert seqs[2].status is RequestStatus.WAITING


def test_it_refuses_work_when_batch_and_queue_are_full() -> None:
    sch = scheduler(max_num_seqs=2, max_queue=2)
    for i in range(4):
        sch.add(seq(str(i)))
    with pytest.raises(QueueFull):
        sch.add(seq("late"))


def test_new_requests_join_between_decode_steps() -> None:
    sch = scheduler()
    a = seq("a")
    sch.add(a)
    assert rows(run(sch)) == [("a", 0, 10)]
    sch.add(seq("b"))
    assert rows(run(sch)) == [("a", 10, 11), ("b", 0, 10)]


def test_long_prompts_are_chunked_while_others_decode() -> None:
    sch = scheduler(chunk=64)
    sch.add(seq("a", 10))
    run(sch)
    sch.add(seq("long", 150, first=100))
    steps = [rows(run(sch)) for _ in range(3)]
    assert [r[0][0] for r in steps] == ["a", "a", "a"]  # the running stream is never stalled
    assert [r[1][1:] for r in steps] == [(0, 64), (64, 128), (128, 150)]


def test_the_engine_can_shrink_chunks_next_to_decodes() -> None:
    sch = scheduler(chunk=512)
    sch.add(seq("a", 10))
    run(sch)
    sch.add(seq("long", 100, first=100))
    assert rows(run(sch, budget=32))[1] == ("long", 0, 32)


def test_a_prompt_alone_uses_the_whole_chunk() -> None:
    sch = scheduler(chunk=512)
    sch.add(seq("long", 600))
    assert rows(run(sch, budget=32)) == [("long", 0, 512)]


def test_a_cached_prefix_is_skipped() -> None:
    sch = scheduler(prefix_caching=True)
    sch.add(seq("a", 40))
    run(sch)
    sch.finish(sch.running[0], RequestStatus.FINISHED_STOPPED)
    sch.add(seq("b", 40))  # same tokens
    out = run(sch)
    assert rows(out) == [("b", 32, 40)]  # two full blocks from the cache, the last one computed


def test_with_prefix_caching_a_prompt_is_split_where_a_cache_hit_would_end() -> None:
    """So the tail is computed the same way whether the prefix came from the cache or
    not: the same request twice gives the same answer."""
    sch = scheduler(prefix_caching=True)
    sch.add(seq("a", 40))
    assert rows(run(sch)) == [("a", 0, 32)]
    assert rows(run(sch)) == [("a", 32, 40)]


def test_a_request_waits_until_its_prompt_fits_in_memory() -> None:
    sch = scheduler(blocks=5, block_size=4)  # 16 token positions
    sch.add(seq("a", 10))
    run(sch)
    sch.add(seq("b", 10, first=50))
    out = run(sch)
    assert rows(out) == [("a", 10, 11)] and len(sch.waiting) == 1
    sch.finish(sch.running[0], RequestStatus.FINISHED_STOPPED)
    assert rows(run(sch)) == [("b", 0, 10)]


def test_when_memory_runs_out_the_newest_sequence_is_preempted_and_resumed() -> None:
    sch = scheduler(blocks=5, block_size=4, prefix_caching=True)  # 4 usable blocks
    a, b = seq("a", 7), seq("b", 7, first=50)
    sch.add(a)
    run(sch)
    run(sch)  # a's prompt in two chunks (split at its last block), then its first token
    sch.add(b)
    assert rows(run(sch)) == [("a", 7, 8), ("b", 0, 4)]  # a: 2 blocks, b: 1 of the 2 it needs
    out = run(sch)  # a takes the last free block for position 8: b must give its memory back
    assert out.preempted == [b] and b.status is RequestStatus.WAITING
    assert rows(out) == [("a", 8, 9)]
    assert b.num_computed_tokens == 0 and b.block_table == [] and b.num_preemptions == 1
    sch.finish(a, RequestStatus.FINISHED_STOPPED)
    out = run(sch)  # recomputed, its first block from the prefix cache
    assert rows(out) == [("b", 4, 7)]
    assert rows(run(sch)) == [("b", 7, 8)]  # then it decodes on


def test_abort_frees_memory_and_the_slot_for_a_waiting_request() -> None:
    sch = scheduler(max_num_seqs=1, max_queue=1)
    a, b = seq("a"), seq("b")
    sch.add(a)
    sch.add(b)
    sch.schedule()
    free_before = sch.block_manager.num_free_blocks
    assert sch.abort("a") is a
    assert a.status is RequestStatus.FINISHED_ABORTED
    assert sch.block_manager.num_free_blocks == free_before + 1
    out = sch.schedule()
    assert [s.seq for s in out.scheduled] == [b]


def test_abort_of_a_waiting_request_removes_it_from_the_queue() -> None:
    sch = scheduler(max_num_seqs=1, max_queue=1)
    a, b = seq("a"), seq("b")
    sch.add(a)
    sch.add(b)
    sch.abort("b")
    assert len(sch.waiting) == 1 and sch.abort("unknown") is None


def test_a_burst_of_waiting_requests_gets_a_larger_chunk_beside_decodes() -> None:
    sch = scheduler(max_num_seqs=8, chunk=2048)
    sch.add(seq("a", 10))
    run(sch)
    for i in range(4):
        sch.add(seq(f"b{i}", 40, first=100 * (i + 1)))
    out = run(sch, budget=16)
    assert sum(r.num_tokens for r in out.scheduled if r.seq.request_id != "a") == 4 * 40


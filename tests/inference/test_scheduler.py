"""The scheduler's policy, without torch or a model."""
from __future__ import annotations

import pytest

from inference.errors import QueueFull
from inference.scheduler import Scheduler
from inference.sequence import RequestStatus, SamplingParams, Sequence


def seq(rid: str, prompt_len: int = 10) -> Sequence:
    return Sequence(rid, list(range(prompt_len)), SamplingParams(), max_model_len=4096)


def finish_prefill(s: Sequence) -> None:
    s.num_computed_tokens = s.num_prompt_tokens
    s.output_token_ids.append(1)


def test_it_admits_up_to_the_batch_size_and_queues_the_rest() -> None:
    sch = Scheduler(max_num_seqs=2, max_queue=10, prefill_chunk_tokens=1000)
    seqs = [seq(str(i)) for i in range(3)]
    for s in seqs:
        sch.add(s)
    out = sch.schedule()
    assert [c.seq for c in out.prefills] == seqs[:2]
    assert sch.num_running == 2 and sch.num_waiting == 1
    assert seqs[2].status is RequestStatus.WAITING


def test_it_refuses_work_when_batch_and_queue_are_full() -> None:
    sch = Scheduler(max_num_seqs=2, max_queue=2, prefill_chunk_tokens=1000)
    for i in range(4):
        sch.add(seq(str(i)))
    with pytest.raises(QueueFull):
        sch.add(seq("late"))


def test_new_requests_join_between_decode_steps() -> None:
    sch = Scheduler(max_num_seqs=4, max_queue=4, prefill_chunk_tokens=1000)
    a = seq("a")
    sch.add(a)
    sch.schedule()
    finish_prefill(a)
    b = seq("b")
    sch.add(b)
    out = sch.schedule()
    assert out.decodes == [a]
    assert [c.seq for c in out.prefills] == [b]


def test_long_prompts_are_prefilled_in_chunks_while_others_decode() -> None:
    sch = Scheduler(max_num_seqs=4, max_queue=4, prefill_chunk_tokens=64)
    a, long = seq("a", 10), seq("long", 150)
    sch.add(a)
    sch.schedule()
    finish_prefill(a)
    sch.add(long)
    chunks = []
    for _ in range(3):
        out = sch.schedule()
        assert out.decodes == [a]  # the running stream is never stalled
        (chunk,) = out.prefills
        chunks.append((chunk.start, chunk.end))
        long.num_computed_tokens = chunk.end
    assert chunks == [(0, 64), (64, 128), (128, 150)]


def test_abort_frees_the_slot_for_a_waiting_request() -> None:
    sch = Scheduler(max_num_seqs=1, max_queue=1, prefill_chunk_tokens=1000)
    a, b = seq("a"), seq("b")
    sch.add(a)
    sch.add(b)
    sch.schedule()
    assert sch.abort("a") is a
    assert a.status is RequestStatus.FINISHED_ABORTED
    out = sch.schedule()
    assert [c.seq for c in out.prefills] == [b]


def test_abort_of_a_waiting_request_removes_it_from_the_queue() -> None:
    sch = Scheduler(max_num_seqs=1, max_queue=1, prefill_chunk_tokens=1000)
    a, b = seq("a"), seq("b")
    sch.add(a)
    sch.add(b)
    sch.abort("b")
    assert sch.num_waiting == 1 and sch.abort("unknown") is None

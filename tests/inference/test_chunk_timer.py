"""The prompt chunk computed beside running decodes is steered by their step times
(inference.engine._StepTimer), so a long prompt never freezes the streams."""
from __future__ import annotations

from inference.engine import CHUNK_STEP_FACTOR, _StepTimer
from inference.scheduler import ScheduledSeq, SchedulerOutput
from inference.sequence import SamplingParams, Sequence


def seq(rid: str, prompt_len: int = 10) -> Sequence:
    return Sequence(rid, list(range(prompt_len)), SamplingParams(), max_model_len=8192)


def _step(decodes: int, chunk: int, depth: int = 0) -> SchedulerOutput:
    out = SchedulerOutput()
    for i in range(decodes):  # one token past a 10-token prompt
        s = seq(f"d{i}")
        s.append_token(1)
        out.scheduled.append(ScheduledSeq(s, 10, 11))
    if chunk:
        long = seq("long", prompt_len=8000)
        out.scheduled.append(ScheduledSeq(long, depth, depth + chunk))
    return out


def test_the_chunk_beside_decodes_shrinks_until_their_steps_hold_and_grows_back() -> None:
    """Step times are made up: a chunk step costs a fixed 20 ms (dense weights) plus 1 ms a
    token; decodes alone 10 ms. The chunk settles where a step stays under 2.2x a decode step."""
    timer = _StepTimer()
    for _ in range(20):
        timer.observe(_step(4, 0), 0.010)
    assert abs(timer.decode_step - 0.010) < 1e-3
    for _ in range(30):
        n = timer.prefill_budget()
        timer.observe(_step(4, n), 0.020 + 0.001 * n)
    settled = timer.prefill_budget()
    assert 0.020 + 0.001 * settled <= CHUNK_STEP_FACTOR * 0.010 * 1.05
    assert settled >= 1
    # a step that runs long (deep into a long prompt) shrinks it at once, never below one token
    timer.observe(_step(4, settled, depth=4000), 1.0)
    assert timer.prefill_budget() == max(1, settled // 2)
    for _ in range(20):
        timer.observe(_step(4, timer.prefill_budget(), depth=4000), 1.0)
    assert timer.prefill_budget() == 1
    # cheap again (decodes finished, say): it grows back
    for _ in range(30):
        n = timer.prefill_budget()
        timer.observe(_step(4, n), 0.005 + 0.0001 * n)
    assert timer.prefill_budget() > 16
    # prompts alone leave it alone (they run at full size)
    before = timer.prefill_budget()
    timer.observe(_step(0, 2048), 3.0)
    assert timer.prefill_budget() == before

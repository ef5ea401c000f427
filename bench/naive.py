"""The naive baseline: the model loaded with plain transformers, one ``model.generate`` per
request in its own thread with a ``TextIteratorStreamer`` (the usual way such servers are
written), the same prompts, greedy decoding, and the same metrics as over HTTP.

It runs in this process, after the servers are stopped, so nothing else shares the CPU.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .client import Messages, RequestResult
from .scenarios import BenchConfig, LevelResult, level_line, streams_conversations


class NaiveBaseline:
    """The model loaded with transformers; one ``generate`` per request, each in its own thread."""

    def __init__(self, spec: Any, settings: Any) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from inference import checkpoint_dir, resolve_device

        hf_logging.disable_progress_bar()
        if settings.num_threads:
            torch.set_num_threads(settings.num_threads)
        self.device = resolve_device(settings.device)
        directory = checkpoint_dir(spec, settings)  # the engine's converted checkpoint: same weights
        self.tokenizer: Any = AutoTokenizer.from_pretrained(directory)
        if settings.dtype != "auto":
            dtype = getattr(torch, settings.dtype)
        else:
            dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        model: Any = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
        self.model: Any = model.to(self.device).eval()
        self.quantization = "none"
        if spec.precision == "int8" and self.device == "cpu" and hasattr(self.model, "model"):
            from torch import nn
            from torch.ao.quantization import quantize_dynamic

            self.model.model.layers = quantize_dynamic(self.model.model.layers, {nn.Linear}, dtype=torch.qint8)
            self.quantization = "torch-dynamic-int8"
        eos: set[int] = set()
        for value in (self.tokenizer.eos_token_id, getattr(self.model.config, "eos_token_id", None)):
            if isinstance(value, int):
                eos.add(value)
            elif isinstance(value, list):
                eos.update(value)
        self.eos_token_ids = eos

    def encode(self, messages: Messages) -> dict[str, Any]:
        """The conversation under the chat template, as tensors on the model's device."""
        enc = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
        )
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def _request(self, inputs: dict[str, Any], max_tokens: int, result: RequestResult) -> None:
        """One request the usual way: ``generate`` in a thread, this thread reads the streamer."""
        from transformers import TextIteratorStreamer

        eos = self.eos_token_ids
        token_times: list[float] = []

        class TimedStreamer(TextIteratorStreamer):
            """Also notes when each generated token arrives (the text pieces come per word)."""

            def put(self, value: Any) -> None:
                if not self.next_tokens_are_prompt:
                    now = time.perf_counter()
                    token_times.extend(now for t in value.reshape(-1).tolist() if t not in eos)
                super().put(value)

        streamer = TimedStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        errors: list[str] = []

        def generate() -> None:
            try:
                self.model.generate(
                    **inputs, streamer=streamer, do_sample=False, max_new_tokens=max_tokens,
                    eos_token_id=sorted(eos) or None, pad_token_id=self.tokenizer.pad_token_id,
                )
            except Exception as exc:  # noqa: BLE001 - reported in the results
                errors.append(f"{type(exc).__name__}: {exc}")
                streamer.end()

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        for _piece in streamer:  # what a handler would write to its client
            pass
        worker.join()
        result.finished = time.perf_counter()
        result.piece_times = token_times
        result.completion_tokens = len(token_times)
        result.prompt_tokens = int(inputs["input_ids"].shape[-1])
        result.error = errors[0] if errors else None

    def run_level(self, conversations: Sequence[Messages], max_tokens: int, timeout: float) -> list[RequestResult]:
        """Every conversation at once, one thread each."""
        inputs = [self.encode(messages) for messages in conversations]
        results: list[RequestResult] = []
        threads: list[threading.Thread] = []
        for i, enc in enumerate(inputs):
            result = RequestResult(index=i, started=time.perf_counter())
            results.append(result)
            thread = threading.Thread(target=self._request, args=(enc, max_tokens, result), daemon=True)
            threads.append(thread)
            thread.start()
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for result in results:
            if not result.finished:
                result.finished = time.perf_counter()
                result.error = f"timed out after {timeout:.0f}s"
        return results


def run_naive(spec: Any, settings: Any, cfg: BenchConfig, levels: list[int],
              progress: Callable[[str], None]) -> tuple[list[LevelResult], str | None]:
    """The streams scenario with the naive baseline; a note says why it was skipped, or how
    it quantized."""
    from .machine import CpuMeter

    progress(f"loading {spec.name} with transformers for the naive baseline ...")
    try:
        naive = NaiveBaseline(spec, settings)
    except Exception as exc:  # noqa: BLE001 - the server numbers are still worth printing
        return [], f"naive baseline skipped: loading failed: {type(exc).__name__}: {exc}"
    for k in range(cfg.warmup):
        naive.run_level(streams_conversations(cfg, 1, f"naive-warmup{k}"), min(cfg.max_tokens, 8), cfg.timeout)
    out: list[LevelResult] = []
    for level in levels:
        meter = CpuMeter([os.getpid()])  # only this process runs the model
        meter.start()
        rounds = [naive.run_level(streams_conversations(cfg, level, k), cfg.max_tokens, cfg.timeout)
                  for k in range(cfg.rounds)]
        result = LevelResult.from_rounds("naive", level, rounds)
        result.other_cpu_cores = meter.stop()
        progress(level_line(result))
        out.append(result)
    note = None if naive.quantization == "none" else f"naive baseline quantization: {naive.quantization}"
    return out, note

"""Prometheus series the engines update (exposed by the Django side at /metrics)."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1, 2, 4, 8)
_TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8, 15, 30, 60)

REQUESTS_RUNNING = Gauge("inference_requests_running", "Requests in the running batch", ["model"])
REQUESTS_WAITING = Gauge("inference_requests_waiting", "Requests waiting for a batch slot", ["model"])
TIME_TO_FIRST_TOKEN = Histogram(
    "inference_time_to_first_token_seconds", "Arrival to first token", ["model"], buckets=_TTFT_BUCKETS
)
INTER_TOKEN_LATENCY = Histogram(
    "inference_inter_token_latency_seconds", "Time between tokens of one request", ["model"],
    buckets=_LATENCY_BUCKETS,
)
REQUEST_DURATION = Histogram(
    "inference_request_duration_seconds", "Arrival to finish", ["model"], buckets=_TTFT_BUCKETS
)
GENERATED_TOKENS = Counter("inference_generated_tokens", "Completion tokens generated", ["model"])
PROMPT_TOKENS = Counter("inference_prompt_tokens", "Prompt tokens processed", ["model"])
REQUESTS = Counter("inference_requests", "Finished requests by outcome", ["model", "outcome"])
PREFIX_CACHE_HIT_TOKENS = Counter(
    "inference_prefix_cache_hit_tokens", "Prompt tokens whose keys/values came from the prefix cache", ["model"]
)
KV_CACHE_USAGE = Gauge("inference_kv_cache_usage_ratio", "Fraction of KV cache blocks held by requests", ["model"])
PREEMPTIONS = Counter("inference_preemptions", "Sequences preempted for KV memory (recomputed later)", ["model"])
GUIDED_STEPS = Counter("inference_guided_steps", "Steps with grammar-constrained rows", ["model"])
GUIDED_ROWS = Counter("inference_guided_rows", "Constrained rows masked (one per row per step)", ["model"])
GUIDED_MASK_SECONDS = Counter(
    "inference_guided_mask_seconds", "Time computing and applying grammar token masks", ["model"]
)
GUIDED_STEP_SECONDS = Counter(
    "inference_guided_step_seconds", "Whole duration of the steps with constrained rows", ["model"]
)
UPSTREAM_REQUESTS = Counter("inference_upstream_requests", "Requests sent to a remote engine's upstream",
                            ["model", "upstream"])
UPSTREAM_ERRORS = Counter("inference_upstream_errors", "Upstream failures (unreachable, 5xx, 429, mid-stream)",
                          ["model", "upstream"])
UPSTREAM_TTFT = Histogram("inference_upstream_time_to_first_token_seconds", "Request sent to first text, per upstream",
                          ["model", "upstream"], buckets=_TTFT_BUCKETS)
UPSTREAM_UP = Gauge("inference_upstream_up", "1 when the upstream is in rotation, 0 during its back-off",
                    ["model", "upstream"])
UPSTREAM_IN_FLIGHT = Gauge("inference_upstream_in_flight", "Requests open at the upstream", ["model", "upstream"])

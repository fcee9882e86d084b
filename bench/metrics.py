"""What the gateway's metrics calls cost, in nanoseconds per call, against a no-op call.

Each function of dosportal.metrics that the /v1 path calls is timed in a tight loop
(multi-process mode, writing to the memory-mapped files in a temporary
PROMETHEUS_MULTIPROC_DIR, as in production) next to a baseline: a Python function
with the same keyword arguments that does nothing. It prints the median of a few
rounds for each, and the cost above the baseline.

    .venv/bin/python bench/metrics.py [--calls 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dosportal.settings")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-metrics-")

import django  # noqa: E402

django.setup()

from dosportal import metrics  # noqa: E402


def noop(**fields: object) -> None:
    return None


def call_finished() -> None:
    metrics.call_finished(
        endpoint="chat/completions", model="dos-ai", status=200, code="", latency_s=0.42, ttft_s=0.05,
        prompt_tokens=120, completion_tokens=300, charged_micros=510,
    )  # fmt: skip


def baseline() -> None:
    noop(
        endpoint="chat/completions", model="dos-ai", status=200, code="", latency_s=0.42, ttft_s=0.05,
        prompt_tokens=120, completion_tokens=300, charged_micros=510,
    )  # fmt: skip


def in_flight() -> None:
    with metrics.in_flight("chat/completions", stream=True):
        pass


CASES: dict[str, Callable[[], None]] = {
    "baseline (no-op call)": baseline,
    "call_finished": call_finished,
    "refused": lambda: metrics.refused(reason="rate_limit_exceeded"),
    "in_flight (stream)": in_flight,
    "upstream_result": lambda: metrics.upstream_result("http://vllm-1:8000/v1", True, 0.3),
    "limiter_fail_open": metrics.limiter_fail_open,
    "settlement_retry": metrics.settlement_retry,
}


def ns_per_call(function: Callable[[], None], calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        function()
    return (time.perf_counter_ns() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.rounds):
        for name, function in CASES.items():
            results[name].append(ns_per_call(function, args.calls))
    base = statistics.median(results["baseline (no-op call)"])
    print(f"{'call':<24}{'ns/call':>10}{'above baseline':>16}")
    for name, samples in results.items():
        median = statistics.median(samples)
        print(f"{name:<24}{median:>10.0f}{median - base:>13.0f} ns")
    exposition = metrics.exposition()
    print(f"(/metrics body after the run: {len(exposition):,} bytes)")


if __name__ == "__main__":
    main()

"""Workers that add up: the metered /v1 path and the floor, with 1 and 2 uvicorn workers, at c=64.

Starts the fake upstream, then for each worker count the portal (production settings on the
bench database and Redis db 8, as bench/gateway.py) and the floor (bench/floor.py), each under
uvicorn `--workers N`, and drives them with wrk, targets interleaved round by round. Prints rps,
p50, p99 and non-2xx per (target, workers), then the verdicts:

- portal with 2 workers ÷ portal with 1 worker (target ≥ 1.7 on a 2-core machine);
- the floor's own ratio, the ceiling this machine allows with wrk, PostgreSQL and Redis on the
  same cores;
- portal ÷ floor at each worker count.

    .venv/bin/python bench/scaling.py [--duration 5] [--rounds 3] [--concurrency 64]

It exits non-zero if any answer was not 2xx. Needs what bench/gateway.py needs
(BENCH_DATABASE names the database; BENCH_REDIS_URL, if set, replaces Redis db 8).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gateway import (
    PYTHON,
    ROOT,
    WRK_POST,
    Result,
    free_port,
    median,
    prepare_portal,
    production_env,
    wait_for,
    wrk,
)

WORKERS = (1, 2)


def uvicorn_workers(app: str, port: int, env: dict[str, str], workers: int) -> subprocess.Popen:
    command = [PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
               "--log-level", "warning", "--loop", "uvloop", "--http", "httptools", "--backlog", "4096",
               "--no-proxy-headers", "--workers", str(workers)]  # fmt: skip
    process = subprocess.Popen(command, env=env, cwd=ROOT)
    wait_for(port, process, f"{app} ×{workers}")
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")

    upstream_port = free_port()
    spool = tempfile.mkdtemp(prefix="bench-spool-")
    metrics_dirs = {n: tempfile.mkdtemp(prefix=f"bench-metrics-{n}-") for n in WORKERS}
    base_env = {**os.environ, **production_env(upstream_port, spool), "PYTHONPATH": str(ROOT)}
    if os.environ.get("BENCH_REDIS_URL"):  # another Redis database than bench/gateway.py's db 8
        base_env["REDIS_URL"] = os.environ["BENCH_REDIS_URL"]
    key = prepare_portal(base_env)
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(WRK_POST)
    processes = [subprocess.Popen([PYTHON, str(ROOT / "bench" / "fake_upstream.py"), str(upstream_port)])]
    try:
        wait_for(upstream_port, processes[0], "fake upstream")
        targets: dict[tuple[str, int], tuple[str, str]] = {}
        for workers in WORKERS:
            # Several workers share their metrics through one directory (dosportal.metrics).
            portal_env = {**base_env, "PROMETHEUS_MULTIPROC_DIR": metrics_dirs[workers]}
            floor_port, portal_port = free_port(), free_port()
            processes.append(uvicorn_workers("bench.floor:application", floor_port, base_env, workers))
            processes.append(uvicorn_workers("dosportal.asgi:application", portal_port, portal_env, workers))
            targets[("floor", workers)] = (f"http://127.0.0.1:{floor_port}/v1/chat/completions", "")
            targets[("portal", workers)] = (f"http://127.0.0.1:{portal_port}/v1/chat/completions", key)
        for url, token in targets.values():  # warm up every worker's pools
            wrk(url, args.concurrency, 1.0, str(script), token)
        results: dict[tuple[str, int], list[Result]] = {}
        for _ in range(args.rounds):
            for target, (url, token) in targets.items():
                results.setdefault(target, []).append(wrk(url, args.concurrency, args.duration, str(script), token))

        print(f"\n{'target':10} {'workers':>7} {'c':>3} {'rps':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
        summary = {target: median(runs) for target, runs in results.items()}
        for (name, workers), result in summary.items():
            print(f"{name:10} {workers:>7} {args.concurrency:>3} {result.rps:>9.0f} {result.p50_ms:>8.2f} "
                  f"{result.p99_ms:>8.2f} {result.non_2xx:>8}")  # fmt: skip
        rps = {target: result.rps for target, result in summary.items()}
        print(f"\nverdicts (medians of {args.rounds} rounds, c={args.concurrency}, {os.cpu_count()} cores):")
        print(f"  portal 2 workers ÷ 1 worker:   {rps[('portal', 2)] / rps[('portal', 1)]:.2f}×  (target ≥ 1.7)")
        print(
            f"  floor  2 workers ÷ 1 worker:   {rps[('floor', 2)] / rps[('floor', 1)]:.2f}×  (this machine's ceiling)"
        )
        for workers in WORKERS:
            print(f"  portal ÷ floor, {workers} worker(s):   {rps[('portal', workers)] / rps[('floor', workers)]:.2f}×")
        if any(result.non_2xx for result in summary.values()):
            raise SystemExit("FAILED: some answers were not 2xx (see non-2xx above)")
    finally:
        for process in reversed(processes):  # the servers before their upstream
            process.terminate()
            process.wait(timeout=15)
        script.unlink(missing_ok=True)
        shutil.rmtree(spool, ignore_errors=True)
        for directory in metrics_dirs.values():
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()

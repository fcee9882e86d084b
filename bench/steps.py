"""Where one /v1 call's time goes, step by step, at concurrency 1 (wall clock, in process).

Runs the production ASGI application in this process (no sockets on the client side) against
PostgreSQL, Redis and bench/fake_upstream.py, `--calls` non-streaming chat completions one
after another, and prints each step's p50 and mean: the key lookup, the Redis window, the
reservation, the upstream call, the settlement, and the whole call. The difference between
the whole and the sum of the steps is the gateway's own Python and Django's request cycle.
The steps are timed by wrapping the store's, the limiter's and the upstream client's methods
for this run only.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/steps.py
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gateway import CHAT_BODY, free_port, prepare_portal, production_env, wait_for  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    upstream_port = free_port()
    os.environ.update(production_env(upstream_port, tempfile.mkdtemp(prefix="bench-spool-")))
    key = prepare_portal({**os.environ, "PYTHONPATH": str(ROOT)})
    upstream = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fake_upstream.py"), str(upstream_port)])
    try:
        wait_for(upstream_port, upstream, "fake upstream")
        import uvloop

        uvloop.install()
        asyncio.run(run(key, args.calls))
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)


async def run(key: str, calls: int) -> None:
    from dosportal.asgi import application
    from dosportal.v1 import pool, ratelimit, store, upstream

    times: dict[str, list[float]] = collections.defaultdict(list)

    def timed(owner: object, name: str, label: str) -> None:
        original = getattr(owner, name)

        async def wrapper(*args: object, **kwargs: object) -> object:
            started = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                times[label].append(time.perf_counter() - started)

        setattr(owner, name, wrapper)

    for owner, name, label in [
        (store.PgStore, "lookup", "1 lookup (PostgreSQL)"),
        (ratelimit, "admit", "2 window (Redis)"),
        (store.PgStore, "reserve", "3 reservation (PostgreSQL)"),
        (upstream.HttpUpstream, "request", "4 upstream"),
        (store.PgStore, "settle", "5 settlement (PostgreSQL)"),
    ]:
        timed(owner, name, label)
    body = CHAT_BODY.encode()
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
               (b"authorization", f"Bearer {key}".encode()), (b"content-length", str(len(body)).encode())]  # fmt: skip
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "root_path": "", "query_string": b"",
             "headers": headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80)}  # fmt: skip

    async def call() -> None:
        sent: list[dict] = []
        delivered = False

        async def receive() -> dict:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client never leaves
            return {}

        async def send(message: dict) -> None:
            sent.append(message)

        started = time.perf_counter()
        await application(scope, receive, send)
        times["whole call"].append(time.perf_counter() - started)
        if sent[0]["status"] != 200:
            raise SystemExit(f"FAILED: answered {sent[0]['status']}: {sent[1:]}")

    for _ in range(min(200, calls)):  # warm up: pools, prepared statements
        await call()
    times.clear()
    for _ in range(calls):
        await call()
    await pool.close_clients()
    await store.close_store()
    print(f"\n{calls} calls, one at a time, in process\n{'step':30} {'p50 ms':>8} {'mean ms':>8}")
    for label in sorted(times, key=lambda name: (name == "whole call", name)):
        values = sorted(times[label])
        print(f"{label:30} {values[len(values) // 2] * 1000:>8.3f} {sum(values) / len(values) * 1000:>8.3f}")


if __name__ == "__main__":
    main()

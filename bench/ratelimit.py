"""What one rate-limit decision costs, against the cheapest Redis round trip.

In one process and one event loop (uvloop when installed, as uvicorn uses),
with `--concurrency` calls in flight, the script measures calls per second of:

- baseline: a plain Redis PING through the same kind of client and pool;
- redis admit: RedisLimiter.admit on keys under their limits (every call admitted);
- redis refuse: RedisLimiter.admit on a key whose window is full (every call refused,
  which also computes Retry-After);
- memory admit: MemoryLimiter.admit (the embedded default, no I/O).

Rounds alternate between them; it prints the median calls per second and each
ratio to the PING baseline of the same run (redis admit ≈ 1 means the limiter
costs about one round trip; memory > 1 means faster than any Redis call).
Keys are `dosportal:rl:{<id>}` with ids no portal uses; they are deleted at the end.

    .venv/bin/python bench/ratelimit.py [--redis-url URL] [--calls 5000] [--concurrency 50] [--rounds 3]

The Redis URL defaults to $REDIS_URL, else redis://127.0.0.1:6379/0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dosportal.settings")

import redis.asyncio as aioredis  # noqa: E402

from dosportal.v1.ratelimit import REDIS_POOL_SIZE, MemoryLimiter, RedisLimiter  # noqa: E402

KEY_BASE = 9_000_000_000  # far above any real ApiKey id
PRO = {"rpm": 300, "tpm": 2_000_000}


async def rate(calls: int, concurrency: int, make_call: Callable[[int], Awaitable[object]]) -> float:
    """Calls per second with `concurrency` workers sharing `calls` calls."""
    counter = iter(range(calls))

    async def worker() -> None:
        for index in counter:
            await make_call(index)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return calls / (time.perf_counter() - started)


async def main(args: argparse.Namespace) -> None:
    url = args.redis_url
    ping_client = aioredis.Redis.from_pool(
        aioredis.BlockingConnectionPool.from_url(url, max_connections=REDIS_POOL_SIZE, socket_timeout=5)
    )
    limiter = RedisLimiter(url, 60)
    memory = MemoryLimiter(60)
    await ping_client.ping()
    used_keys: set[int] = set()
    # Fill one key's window so that every call on it is refused.
    full_key = KEY_BASE
    used_keys.add(full_key)
    for _ in range(PRO["rpm"]):
        await limiter.admit(full_key, **PRO, cost=100)

    round_no = 0

    def admitted_key(index: int) -> int:
        # 200 calls per key, under the plan's 300 RPM: each call is admitted.
        key = KEY_BASE + 1 + round_no * 1_000_000 + index // 200
        used_keys.add(key)
        return key

    cases: dict[str, Callable[[int], Awaitable[object]]] = {
        "baseline: redis PING": lambda i: ping_client.ping(),
        "redis admit": lambda i: limiter.admit(admitted_key(i), **PRO, cost=100),
        "redis refuse": lambda i: limiter.admit(full_key, **PRO, cost=100),
        "memory admit": lambda i: memory.admit(admitted_key(i), **PRO, cost=100),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for round_no in range(args.rounds):  # noqa: B007 - admitted_key reads it
        for name, call in cases.items():
            results[name].append(await rate(args.calls, args.concurrency, call))

    # Sanity: the refusing case really refused, the admitting one really admitted.
    assert not (await limiter.admit(full_key, **PRO, cost=100)).admitted
    assert (await limiter.admit(KEY_BASE + 1, rpm=10**6, tpm=10**9, cost=1)).admitted

    baseline = statistics.median(results["baseline: redis PING"])
    print(f"{args.calls} calls x {args.rounds} rounds, {args.concurrency} in flight, one process ({loop_name()})")
    print(f"{'case':<24}{'calls/s':>12}{'vs PING':>10}")
    for name, rates in results.items():
        median = statistics.median(rates)
        print(f"{name:<24}{median:>12,.0f}{median / baseline:>10.2f}")

    for start in range(0, len(used_keys), 500):
        batch = sorted(used_keys)[start : start + 500]
        await ping_client.delete(*(f"dosportal:rl:{{{key}}}:{part}" for key in batch for part in ("req", "tok", "sum")))
    await limiter.redis.aclose()
    await ping_client.aclose()


def loop_name() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(arguments))
    else:
        uvloop.run(main(arguments))

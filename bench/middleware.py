"""What WhiteNoise's sync-only middleware costs every /v1 request, and what ours saves.

Starts two uvicorn servers (one worker each): the portal as configured
(AsyncWhiteNoiseMiddleware) and the same portal with WhiteNoise's stock
middleware, which makes Django run the whole async chain through a thread hop.
Both answer an async /v1 view that needs no database (an unknown path → 404
JSON), and a static file. Rounds alternate between the servers; the script
prints requests per second and the ratio ours / stock (> 1 means faster).

    .venv/bin/python bench/middleware.py [--requests 1000] [--concurrency 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(settings_module: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": settings_module, "DEBUG": "1", "LOG_LEVEL": "ERROR",
           "PYTHONPATH": str(ROOT), "DATABASE_URL": "sqlite:////tmp/dosportal-bench.sqlite3"}  # fmt: skip
    env.pop("REDIS_URL", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "dosportal.asgi:application",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "error",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{url}/static/css/app.css", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"server with {settings_module} did not start")


async def throughput(url: str, path: str, requests: int, concurrency: int) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        queue = iter(range(requests))

        async def worker() -> None:
            for _ in queue:
                response = await client.get(path)
                assert response.status_code in (200, 404), response.status_code

        await asyncio.gather(*(worker() for _ in range(min(concurrency, 50))))  # warm-up pass
        queue = iter(range(requests))
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    ours, ours_url = start("dosportal.settings")
    stock, stock_url = start("bench.stock_whitenoise_settings")
    try:
        for label, path in (
            ("/v1 (async view, no DB)", "/v1/bench-unknown-path"),
            ("static file", "/static/css/app.css"),
        ):
            ours_rps, stock_rps = [], []
            for _ in range(args.rounds):
                stock_rps.append(asyncio.run(throughput(stock_url, path, args.requests, args.concurrency)))
                ours_rps.append(asyncio.run(throughput(ours_url, path, args.requests, args.concurrency)))
            a, b = statistics.median(ours_rps), statistics.median(stock_rps)
            print(f"{label:26} stock WhiteNoise {b:8.0f} req/s   AsyncWhiteNoise {a:8.0f} req/s   ratio {a / b:5.2f}x")
    finally:
        for process in (ours, stock):
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()

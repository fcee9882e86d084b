"""The same comparison as bench/middleware.py without sockets or uvicorn: the ASGI app called directly.

Two Django ASGI handlers are built in one process, one with the portal's
middleware (AsyncWhiteNoiseMiddleware) and one with WhiteNoise's stock, sync-only
middleware; rounds alternate between them. Without network and server
overhead, what is left is Django's own per-request cost, so the middleware's
thread hop shows up as clearly as it ever will.

    .venv/bin/python bench/asgi_inprocess.py [--requests 2000] [--concurrency 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dosportal.settings")
os.environ["DATABASE_URL"] = "sqlite:////tmp/dosportal-bench.sqlite3"
os.environ.pop("REDIS_URL", None)

import django

django.setup()
logging.disable(logging.CRITICAL)

from django.conf import settings  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.test import override_settings  # noqa: E402


def scope(path: str) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}  # fmt: skip


async def one(handler: ASGIHandler, path: str) -> None:
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # no disconnect: Django cancels this when the response is done
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] in (200, 404), message["status"]

    await handler(scope(path), receive, send)


async def throughput(handler: ASGIHandler, path: str, requests: int, concurrency: int) -> float:
    pending = iter(range(requests))

    async def worker() -> None:
        for _ in pending:
            await one(handler, path)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests / (time.perf_counter() - started)


async def main(args: argparse.Namespace) -> None:
    ours = ASGIHandler()
    stock_middleware = [
        "whitenoise.middleware.WhiteNoiseMiddleware" if name.endswith("AsyncWhiteNoiseMiddleware") else name
        for name in settings.MIDDLEWARE
    ]
    with override_settings(MIDDLEWARE=stock_middleware):
        stock = ASGIHandler()
    for label, path in (("/v1 (async view, no DB)", "/v1/bench-unknown-path"), ("static file", "/static/css/app.css")):
        await throughput(ours, path, 200, args.concurrency)  # warm-up
        await throughput(stock, path, 200, args.concurrency)
        ours_rps, stock_rps = [], []
        for _ in range(args.rounds):
            stock_rps.append(await throughput(stock, path, args.requests, args.concurrency))
            ours_rps.append(await throughput(ours, path, args.requests, args.concurrency))
        a, b = statistics.median(ours_rps), statistics.median(stock_rps)
        print(f"{label:26} stock WhiteNoise {b:8.0f} req/s   AsyncWhiteNoise {a:8.0f} req/s   ratio {a / b:5.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args()))

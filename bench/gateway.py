"""The /v1 hot path against the framework's floor, in one run, on this machine.

Starts on 127.0.0.1: a fast fake upstream (bench/fake_upstream.py); the portal under uvicorn
with production settings (DEBUG=0) on PostgreSQL and Redis, with a funded key whose limits
are overridden high; and the floor — a bare Django async view with no middleware
(bench/floor.py) on the same uvicorn settings (one worker, uvloop, httptools, no access log).
Drives each with wrk, targets interleaved round by round, at concurrency 1 and 32, and prints
rps, p50, p99 and non-2xx per target, then the verdicts:

- portal /v1/chat/completions throughput ÷ floor throughput at c=32 (target ≥ 0.5);
- portal p50 − upstream p50 at c=1, the latency the gateway adds (target ≤ 3 ms);
- /healthz and a static file ÷ floor at c=32 (target ≥ 0.8).

Then streaming: N concurrent streams (default 1,000) from an upstream sending 50 chunks 20 ms
apart: straight from the upstream, through the floor (the same bare view relaying the
upstream's bytes with aiohttp), and through the portal; prints errors, the added
time-to-first-token (p50, p99), each server's CPU per stream and the portal's peak RSS.

It exits non-zero if any answer of the portal or the floor was not 2xx.

    .venv/bin/python bench/gateway.py [--duration 5] [--rounds 3] [--streams 1000]

Needs wrk (`apt-get install wrk`), PostgreSQL (DATABASE_URL's server, default
127.0.0.1:5432, database dosportal_bench is created) and Redis (db 8 of REDIS_URL's server).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BENCH_DB = os.environ.get("BENCH_DATABASE", "dosportal_bench")
CHAT_BODY = '{"model":"dos-ai","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(port: int, process: subprocess.Popen, name: str) -> None:
    for _ in range(300):
        if process.poll() is not None:
            raise SystemExit(f"{name} exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"{name} did not start")


def uvicorn(app: str, port: int, env: dict[str, str]) -> subprocess.Popen:
    command = [PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
               "--log-level", "warning", "--loop", "uvloop", "--http", "httptools", "--backlog", "4096",
               "--no-proxy-headers"]  # fmt: skip
    process = subprocess.Popen(command, env=env, cwd=ROOT)
    wait_for(port, process, app)
    return process


def database_urls() -> tuple[str, str]:
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    server = base.rsplit("/", 1)[0]
    return f"{server}/postgres", f"{server}/{BENCH_DB}"


def production_env(upstream_port: int, spool: str) -> dict[str, str]:
    """The portal's settings in every benchmark: production (DEBUG=0) on the bench database and
    Redis db 8 of REDIS_URL's server, pointed at the fake upstream on `upstream_port`."""
    redis_server = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0]
    return {"DEBUG": "0", "SECRET_KEY": "bench-secret-key-" + "x" * 40, "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "0", "DATABASE_URL": database_urls()[1], "REDIS_URL": f"{redis_server}/8",
            "DOS_AI_UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}/v1", "LOG_LEVEL": "WARNING",
            "DOS_AI_SPOOL_DIR": spool}  # fmt: skip


def prepare_portal(env: dict[str, str]) -> str:
    """Migrate the bench database and make a funded key with limits far above the load."""
    admin_url, _ = database_urls()
    import psycopg

    with psycopg.connect(admin_url.replace("postgres://", "postgresql://"), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DB]).fetchone():
            conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v0"], env=env, cwd=ROOT, check=True)
    subprocess.run([PYTHON, "manage.py", "collectstatic", "--noinput", "-v0"], env=env, cwd=ROOT, check=True)
    script = (
        "from accounts.models import User\n"
        "from apikeys.services import api_key_create\n"
        "from billing.services import credits_grant\n"
        "user = User.objects.filter(email='bench@example.com').first()\n"
        "user = user or User.objects.create_user('bench@example.com', 'bench-password-123')\n"
        "User.objects.filter(pk=user.pk).update(requests_per_minute_override=2_000_000_000,"
        " tokens_per_minute_override=2_000_000_000)\n"
        "credits_grant(user=user, amount_micros=1_000_000_000_000, note='bench')\n"
        "print(api_key_create(owner=user, name=f'bench {user.api_keys.count()}')[1])\n"
    )
    result = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", script], env=env, cwd=ROOT, check=True, capture_output=True, text=True
    )
    return result.stdout.strip().splitlines()[-1]


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        return float("nan")
    number, unit = match.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def wrk(url: str, concurrency: int, duration: float, script: str | None, key: str = "") -> Result:
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--latency", "--timeout", "10s"]
    if script:
        command += ["-s", script]
    env = {**os.environ, "BENCH_KEY": key, "BENCH_BODY": CHAT_BODY}
    output = subprocess.run([*command, url], capture_output=True, text=True, env=env, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1])
    # Anchored: a "+/- Stdev" column such as 87.50% must not be read as the 50th percentile.
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", output, re.M)[1])
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", output, re.M)[1])
    non_2xx = int(m[1]) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", output)) else 0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if errors and any(int(n) for n in errors.groups()):
        non_2xx += sum(int(n) for n in errors.groups())
    return Result(rps, p50, p99, non_2xx)


WRK_POST = """
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_KEY")
if key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end
"""


def median(results: list[Result]) -> Result:
    return Result(
        statistics.median(r.rps for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.non_2xx for r in results),
    )


async def first_token_times(port: int, path: str, key: str, count: int, ramp: float = 0.0) -> tuple[list[float], int]:
    """Open `count` streams, all at once or spread evenly over `ramp` seconds; the seconds from
    sending each to its first `data:` line."""
    body = CHAT_BODY.replace('"max_tokens":16', '"stream":true,"max_tokens":64').encode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    errors = 0

    async def one(index: int) -> float | None:
        nonlocal errors
        if ramp:
            await asyncio.sleep(ramp * index / count)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = time.perf_counter()
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
            if b" 200 " not in head.split(b"\r\n")[0]:
                errors += 1
                writer.close()
                return None
            first = None
            data = b""
            while True:
                piece = await asyncio.wait_for(reader.read(65536), 60)
                if not piece:
                    break
                if first is None and b"data:" in piece:
                    first = time.perf_counter() - started
                data += piece
                if b"[DONE]" in data[-200:]:
                    break
            writer.close()
            if first is None or b"[DONE]" not in data:
                errors += 1
            return first
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            errors += 1
            return None

    results = await asyncio.gather(*(one(index) for index in range(count)))
    return [r for r in results if r is not None], errors


def run_client(coroutine: Any) -> Any:
    """The load generator's own event loop is uvloop's, as the servers' are: on a 2-core machine
    the default loop's cost of reading 50,000 chunks a second would be measured as the portal's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status)[1]) / 1024


@dataclass
class StreamRun:
    first_tokens: list[float]  # milliseconds, of the streams that got one
    errors: int
    cpu_ms_per_stream: float | None = None
    peak_rss_mb: float = 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stream_run(port: int, key: str, count: int, ramp: float, server: subprocess.Popen | None = None) -> StreamRun:
    """`count` streams through the server on `port` (warmed up first), and that server's CPU."""
    if server is not None:
        run_client(first_token_times(port, "/v1/chat/completions", key, 20))
        before = cpu_seconds(server.pid)
    first, errors = run_client(first_token_times(port, "/v1/chat/completions", key, count, ramp))
    result = StreamRun(sorted(t * 1000 for t in first), errors)
    if server is not None:
        result.cpu_ms_per_stream = (cpu_seconds(server.pid) - before) * 1000 / count
        result.peak_rss_mb = peak_rss_mb(server.pid)
    return result


def measure_streams(
    count: int, ramp: float, stream_port: int, floor: subprocess.Popen, floor_port: int, portal_env: dict[str, str],
    key: str, processes: list[subprocess.Popen],
) -> dict[str, StreamRun]:  # fmt: skip
    """The same streams straight from the streaming upstream, through the floor (a bare Django
    view that relays the upstream's bytes: bench/floor.py), and through a portal worker of its own."""
    portal_port = free_port()
    portal = uvicorn("dosportal.asgi:application", portal_port,
                     {**portal_env, "DOS_AI_UPSTREAM_URL": f"http://127.0.0.1:{stream_port}/v1"})  # fmt: skip
    processes.append(portal)
    return {
        "upstream direct": stream_run(stream_port, "", count, ramp),
        "floor (relay)": stream_run(floor_port, "", count, ramp, floor),
        "portal": stream_run(portal_port, key, count, ramp, portal),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--ramp", type=float, default=1.0, help="seconds over which the streams are opened")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")

    upstream_port, stream_port, floor_port, portal_port = (free_port() for _ in range(4))
    spool = tempfile.mkdtemp(prefix="bench-spool-")
    portal_env = {**os.environ, **production_env(upstream_port, spool), "PYTHONPATH": str(ROOT)}
    floor_env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_UPSTREAM_URL": f"http://127.0.0.1:{stream_port}/v1"}
    key = prepare_portal(portal_env)
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(WRK_POST)
    processes = [
        subprocess.Popen([PYTHON, str(ROOT / "bench" / "fake_upstream.py"), str(upstream_port)]),
        subprocess.Popen(
            [PYTHON, str(ROOT / "bench" / "fake_upstream.py"), str(stream_port), "--chunks", "50", "--interval", "0.02"]
        ),
    ]
    try:
        wait_for(upstream_port, processes[0], "fake upstream")
        wait_for(stream_port, processes[1], "streaming fake upstream")
        floor = uvicorn("bench.floor:application", floor_port, floor_env)
        portal = uvicorn("dosportal.asgi:application", portal_port, portal_env)
        processes += [floor, portal]
        targets = {
            "upstream": (f"http://127.0.0.1:{upstream_port}/v1/chat/completions", str(script), ""),
            "floor": (f"http://127.0.0.1:{floor_port}/v1/chat/completions", str(script), ""),
            "portal /v1/chat/completions": (f"http://127.0.0.1:{portal_port}/v1/chat/completions", str(script), key),
            "portal /healthz": (f"http://127.0.0.1:{portal_port}/healthz", None, ""),
            "portal static file": (f"http://127.0.0.1:{portal_port}/static/img/logo.svg", None, ""),
        }
        for url, lua, token in targets.values():  # warm up every path (pools, prepared statements)
            wrk(url, 4, 1.0, lua, token)
        results: dict[tuple[str, int], list[Result]] = {}
        for _ in range(args.rounds):
            for concurrency in (1, 32):
                for name, (url, lua, token) in targets.items():
                    results.setdefault((name, concurrency), []).append(wrk(url, concurrency, args.duration, lua, token))

        print(f"\n{'target':32} {'c':>3} {'rps':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
        summary = {}
        for (name, concurrency), runs in results.items():
            result = summary[(name, concurrency)] = median(runs)
            print(f"{name:32} {concurrency:>3} {result.rps:>9.0f} {result.p50_ms:>8.2f} {result.p99_ms:>8.2f} "
                  f"{result.non_2xx:>8}")  # fmt: skip
        floor32 = summary[("floor", 32)].rps
        portal = "portal /v1/chat/completions"
        print("\nverdicts (medians of the rounds):")
        print(f"  /v1 throughput ÷ floor at c=32:          {summary[(portal, 32)].rps / floor32:.2f}×  (target ≥ 0.5)")
        added = summary[(portal, 1)].p50_ms - summary[("upstream", 1)].p50_ms
        print(f"  /v1 added latency at c=1 (p50):          {added:.2f} ms  (target ≤ 3)")
        for name in ("portal /healthz", "portal static file"):
            print(
                f"  {name[7:]:14} throughput ÷ floor at c=32: {summary[(name, 32)].rps / floor32:.2f}×  (target ≥ 0.8)"
            )

        streamed = measure_streams(args.streams, args.ramp, stream_port, floor, floor_port, portal_env, key, processes)
        print(f"\nstreaming: {args.streams} streams opened over {args.ramp:g} s, 50 chunks 20 ms apart")
        print(f"  {'':18} {'errors':>6} {'TTFT p50':>9} {'added p50':>10} {'added p99':>10} {'CPU/stream':>11}")
        direct_p50 = statistics.median(streamed["upstream direct"].first_tokens or [float("nan")])
        for name, run in streamed.items():
            times = sorted(run.first_tokens) or [float("nan")]
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
            added = "" if name == "upstream direct" else f"{statistics.median(times) - direct_p50:>8.1f}ms"
            added99 = "" if name == "upstream direct" else f"{p99 - direct_p50:>8.1f}ms"
            cpu = f"{run.cpu_ms_per_stream:>9.2f}ms" if run.cpu_ms_per_stream is not None else ""
            print(f"  {name:18} {run.errors:>6} {statistics.median(times):>7.1f}ms {added:>10} {added99:>10} {cpu:>11}")
        print("  (added: the p50 time to first token minus the upstream's own; target for the portal ≤ 10 ms;")
        print("   CPU/stream: the server's CPU time over the run ÷ streams, from /proc)")
        print(f"  portal worker peak RSS: {streamed['portal'].peak_rss_mb:.0f} MB  (target < 500)")
        through = streamed["portal"]
        failed = any(summary[(name, c)].non_2xx for name in targets if name != "upstream" for c in (1, 32))
        if failed or through.errors:
            raise SystemExit("FAILED: some answers were not 2xx (see non-2xx / errors above)")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)
        script.unlink(missing_ok=True)
        shutil.rmtree(spool, ignore_errors=True)


if __name__ == "__main__":
    main()

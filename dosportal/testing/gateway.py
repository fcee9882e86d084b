"""Live ASGI servers for /v1 tests: uvicorn subprocesses on 127.0.0.1, on the test database.

`gateway_factory(**env)` starts (once per distinct env) a uvicorn process whose
settings come from the environment like production's, pointed at the test
PostgreSQL database, the test Redis and the fake upstream. Tests that use it
need committed rows: request `transactional_db`.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from accounts.models import User
from apikeys.services import api_key_create
from billing.models import ServedModel
from billing.seed import SEED, ensure

BASE_DIR = Path(__file__).resolve().parents[2]


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM if pytest dies without tearing down (killed, Ctrl-C twice)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(lookup: Callable[[], Any], timeout: float = 5.0, what: str = "the row") -> Any:
    """Poll `lookup` until it returns something (a settlement written after the response ends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = lookup()
        if found is not None:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{what} never appeared")


def test_database_url() -> str:
    """The URL of this run's test database (pytest-django's), for processes the tests start."""
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.fail("live /v1 tests need PostgreSQL: set DATABASE_URL (make test does)")
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def gateway_env(database_url: str, upstream_url: str, **overrides: str) -> dict[str, str]:
    """A live gateway's environment: production-like settings on the test database and Redis."""
    env = {
        **os.environ,
        "DEBUG": "1",
        "DATABASE_URL": database_url,
        "DOS_AI_UPSTREAM_URL": upstream_url,
        "DOS_AI_UPSTREAM_TIMEOUT": "10",
        "DOS_AI_DEV_MODEL_DELAY": "0",
        "LOG_LEVEL": "WARNING",
        # Many gateways run during a session: keep each one's idle connections few and short-lived.
        "DATABASE_POOL_MAX_SIZE": "8",
        "DOS_AI_DB_POOL_SIZE": "8",
        "DATABASE_POOL_MAX_IDLE": "2",
        # Webhook delivery polls the outbox every 2 s: only the tests of it turn it on.
        "DOS_AI_WEBHOOKS_WORKER": "0",
        **overrides,
    }
    return {name: value for name, value in env.items() if value is not None}


class Gateway:
    def __init__(
        self,
        env: dict[str, str],
        workers: int = 1,
        *,
        access_log: bool = False,
        uvicorn_args: tuple[str, ...] = (),
        ready_path: str = "/healthz",  # answers 200 once the server is up (/healthz opens /v1's pool)
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = BASE_DIR / "test-artifacts" / f"uvicorn-{self.port}.log"
        self.log_path.parent.mkdir(exist_ok=True)
        self.log = self.log_path.open("w")
        command = [sys.executable, "-m", "uvicorn", "dosportal.asgi:application", "--host", "127.0.0.1",
                   "--port", str(self.port), "--workers", str(workers)]  # fmt: skip
        if not access_log:
            command.append("--no-access-log")
        command.extend(uvicorn_args)
        self.process = subprocess.Popen(
            command, env=env, cwd=BASE_DIR, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}{ready_path}", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"uvicorn did not start in 60 s: {self.log_path.read_text()[-2000:]}")

    def logs(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


MAX_LIVE_GATEWAYS = 6


@pytest.fixture(scope="session")
def gateway_factory(
    django_db_setup: None, django_db_blocker: Any, _upstream_server: Any
) -> Iterator[Callable[..., Gateway]]:
    # Least recently used last out: a session starts dozens of differently configured gateways,
    # and each keeps PostgreSQL connections (its pools, its heartbeat, its webhook sender) — all
    # of them alive at once would pass max_connections (100 by default).
    started: collections.OrderedDict[tuple[tuple[str, str], ...], Gateway] = collections.OrderedDict()

    def start(
        workers: int = 1, access_log: bool = False, uvicorn_args: tuple[str, ...] = (), **overrides: str
    ) -> Gateway:
        signature = (
            ("workers", str(workers)), ("access_log", str(access_log)), ("uvicorn_args", " ".join(uvicorn_args)),
            *sorted(overrides.items()),
        )  # fmt: skip
        if signature in started:
            started.move_to_end(signature)
        else:
            while len(started) >= MAX_LIVE_GATEWAYS:
                started.popitem(last=False)[1].stop()
            with django_db_blocker.unblock():
                database_url = test_database_url()
            started[signature] = Gateway(
                gateway_env(database_url, _upstream_server.url, **overrides),
                workers=workers,
                access_log=access_log,
                uvicorn_args=uvicorn_args,
            )
        return started[signature]

    yield start
    for gateway in started.values():
        gateway.stop()


@pytest.fixture
def gateway(gateway_factory: Callable[..., Gateway], transactional_db: None) -> Gateway:
    return gateway_factory()


@pytest.fixture
def served_models(transactional_db: None) -> dict[str, ServedModel]:
    """The seeded models (a transactional test's flush removes data-migration rows)."""
    return {row[0]: ensure(ServedModel, row) for row in SEED}


@pytest.fixture
def api_user(transactional_db: None) -> User:
    return User.objects.create_user("api@example.com", "x-password-123456")


@pytest.fixture
def api_key(api_user: User, served_models: dict[str, ServedModel]) -> str:
    """A raw key of `api_user` (the only place a raw key exists is a test's variable)."""
    return api_key_create(owner=api_user, name="test key")[1]

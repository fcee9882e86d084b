"""Throwaway PostgreSQL and Redis servers that a test may stop and start at will.

The shared servers (PostgreSQL on 5432, Redis on 6379) are never touched: each fixture
starts its own instance on a free port in a temporary directory and removes it afterwards.

- `throwaway_postgres` (one per test module): `initdb` as the `postgres` OS user, trust
  auth, fsync off; a database migrated with `manage.py migrate`. `stop()` / `start()`.
- `throwaway_redis` (one per test): `redis-server --port N`, no persistence.
- `fault_env`: the environment of a gateway or a `manage.py` run against them.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dosportal.testing.gateway import BASE_DIR, free_port

_emails = itertools.count(1)


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.skip(f"PostgreSQL server binaries ({name}) are not installed")
    return found[-1]


def _as_postgres(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True, text=True, timeout=120
    )


class ThrowawayPostgres:
    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="dos-faults-pg-"))
        shutil.chown(self.directory, "postgres", "postgres")
        self.data = self.directory / "data"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/dosfaults"
        _as_postgres(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()
        _as_postgres(_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "dosfaults")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        _as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.directory / "log"), "-o", options,
                     "-w", "-t", "60", "start")  # fmt: skip

    def stop(self) -> None:
        """A fast shutdown: open connections are cut, as when the server goes away."""
        _as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def is_running(self) -> bool:
        return subprocess.run(["runuser", "-u", "postgres", "--", _pg_bin("pg_ctl"), "-D", str(self.data), "status"],
                              capture_output=True).returncode == 0  # fmt: skip

    def destroy(self) -> None:
        if self.is_running():
            with contextlib.suppress(subprocess.CalledProcessError):
                _as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)

    def query(self, sql: str, params: dict[str, Any] | tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as connection:
            return connection.execute(sql, params).fetchall()


class ThrowawayRedis:
    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url, socket_timeout=1).ping()
                return
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


def fault_env(postgres: ThrowawayPostgres, upstream_url: str, **overrides: str) -> dict[str, str]:
    """The environment of a gateway or a command on the throwaway database."""
    env = {
        **os.environ,
        "DEBUG": "1",
        "DATABASE_URL": postgres.url,
        "DOS_AI_UPSTREAM_URL": upstream_url,
        "DOS_AI_UPSTREAM_TIMEOUT": "20",
        "LOG_LEVEL": "WARNING",
        "DATABASE_POOL_MAX_SIZE": "4",
        "DATABASE_POOL_MAX_IDLE": "2",
        **overrides,
    }
    return {name: value for name, value in env.items() if value is not None}


def manage(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], env=env, cwd=BASE_DIR, capture_output=True, text=True, check=check,
        timeout=300,
    )  # fmt: skip


_SEED = """
import os
from accounts.models import User
from accounts.services import account_set_limits
from apikeys.services import api_key_create
user = User.objects.create_user(os.environ["SEED_EMAIL"], "x-password-123456")
account_set_limits(
    user=user, requests_per_minute=int(os.environ["SEED_RPM"]), tokens_per_minute=int(os.environ["SEED_TPM"])
)
print(user.pk, api_key_create(owner=user, name="fault test")[1])
"""


def seed_account(env: dict[str, str], *, rpm: int = 10_000, tpm: int = 10_000_000) -> tuple[str, int, str]:
    """A new user with the sign-up credit and one key: (email, user id, raw key)."""
    email = f"fault{next(_emails)}-{os.getpid()}@example.com"
    seed_env = {**env, "SEED_EMAIL": email, "SEED_RPM": str(rpm), "SEED_TPM": str(tpm)}
    done = manage(seed_env, "shell", "-c", _SEED, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    user_id, raw_key = done.stdout.split()[-2:]
    return email, int(user_id), raw_key


@pytest.fixture(scope="module")
def throwaway_postgres(_upstream_server: Any) -> Iterator[ThrowawayPostgres]:
    if os.geteuid() != 0:
        pytest.skip("the fault suite runs initdb as the postgres OS user: it needs root")
    postgres = ThrowawayPostgres()
    try:
        migrated = manage(fault_env(postgres, _upstream_server.url), "migrate", "--noinput", check=False)
        if migrated.returncode != 0:
            raise RuntimeError(migrated.stderr[-3000:])
        yield postgres
    finally:
        postgres.destroy()


@pytest.fixture
def throwaway_redis(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    server = ThrowawayRedis(redis_dir)
    yield server
    server.stop()

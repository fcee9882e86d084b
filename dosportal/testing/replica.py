"""A PostgreSQL streaming replica of the throwaway primary (dosportal.testing.faults).

`streaming_replica` (one per test module) copies the migrated throwaway primary with
`pg_basebackup -R` (which writes the standby's connection to the primary) and starts it as a hot
standby on its own free port, so it replays the primary's WAL as it is written. `pause()` and
`resume()` stop and restart that replay, which is how a test makes the replica fall behind.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dosportal.testing.faults import ThrowawayPostgres, _as_postgres, _pg_bin
from dosportal.testing.gateway import free_port


class StreamingReplica:
    def __init__(self, primary: ThrowawayPostgres):
        self.directory = Path(tempfile.mkdtemp(prefix="dos-replica-pg-"))
        shutil.chown(self.directory, "postgres", "postgres")
        self.data = self.directory / "data"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/dosfaults"
        _as_postgres(_pg_bin("pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                     "-D", str(self.data), "-R", "-X", "stream", "-c", "fast", "--no-sync")  # fmt: skip
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        _as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.directory / "log"), "-o", options,
                     "-w", "-t", "60", "start")  # fmt: skip
        assert self.query("SELECT pg_is_in_recovery()") == [(True,)]

    def query(self, sql: str, params: dict[str, Any] | tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as connection:
            return connection.execute(sql, params).fetchall()

    def pause(self) -> None:
        self.query("SELECT pg_wal_replay_pause()")

    def resume(self) -> None:
        self.query("SELECT pg_wal_replay_resume()")

    def wait_until(self, sql: str, params: dict[str, Any], expected: Any, timeout: float = 15.0) -> None:
        """Until the replica answers `sql` with `expected` (it has replayed that far)."""
        deadline = time.monotonic() + timeout
        while self.query(sql, params) != expected:
            if time.monotonic() > deadline:
                raise AssertionError(f"the replica never answered {expected!r} to {sql!r}")
            time.sleep(0.05)

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            _as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="module")
def streaming_replica(throwaway_postgres: ThrowawayPostgres) -> Iterator[StreamingReplica]:
    replica = StreamingReplica(throwaway_postgres)
    try:
        yield replica
    finally:
        replica.destroy()

"""Debian's PgBouncer, in transaction mode, in front of the test PostgreSQL.

`pgbouncer` (one per session) starts `pgbouncer` on a free 127.0.0.1 port with
`pool_mode = transaction` and a wildcard database entry, so `postgres://…@127.0.0.1:<port>/<any
database>` reaches that database on the test server. Its server pool is kept smaller than the
clients' pools on purpose: consecutive transactions of one client connection then run on
different server connections, which is what breaks anything that keeps session state (prepared
statements, server-side cursors, `SET`). `SHOW` on its admin console tells the tests it was used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings

from dosportal.testing.gateway import free_port

SERVER_POOL_SIZE = 3  # server connections per (database, user): fewer than any client pool in the tests

_CONFIG = """
[databases]
* = host={host} port={port} user={user}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = any
admin_users = {user}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 500
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
server_reset_query =
ignore_startup_parameters = extra_float_digits
"""


class PgBouncer:
    def __init__(self, host: str, port: int, user: str):
        if shutil.which("pgbouncer") is None:
            pytest.skip("pgbouncer is not installed (apt-get install -y pgbouncer)")
        self.directory = Path(tempfile.mkdtemp(prefix="dos-pgbouncer-"))
        self.user = user
        self.port = free_port()
        config = self.directory / "pgbouncer.ini"
        config.write_text(
            _CONFIG.format(
                host=host,
                port=port,
                user=user,
                listen_port=self.port,
                pool_size=SERVER_POOL_SIZE,
                directory=self.directory,
            )
        )
        command = ["pgbouncer", str(config)]
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root; -u makes it drop to the postgres user itself.
            shutil.chown(self.directory, "postgres", "postgres")
            shutil.chown(config, "postgres", "postgres")
            command = ["pgbouncer", "-u", "postgres", str(config)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.show("VERSION")
                return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not start: {self.log()[-2000:]}") from None
                time.sleep(0.05)

    def url(self, database: str) -> str:
        return f"postgres://{self.user}@127.0.0.1:{self.port}/{database}"

    def show(self, what: str) -> list[dict[str, Any]]:
        """`SHOW <what>` on the admin console (which speaks only the simple query protocol)."""
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname="pgbouncer", autocommit=True, connect_timeout=2,
            cursor_factory=psycopg.ClientCursor,
        ) as connection:  # fmt: skip
            cursor = connection.execute(f"SHOW {what}")
            names = [column.name for column in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def transactions(self, database: str) -> int:
        """How many transactions PgBouncer has passed to `database` so far."""
        return sum(int(row["total_xact_count"]) for row in self.show("STATS") if row["database"] == database)

    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def pgbouncer(django_db_setup: None) -> Iterator[PgBouncer]:
    """Stopped before the test database is dropped (it holds server connections to it)."""
    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("PgBouncer tests need PostgreSQL: set DATABASE_URL")
    bouncer = PgBouncer(database["HOST"] or "127.0.0.1", int(database["PORT"] or 5432), database["USER"] or "postgres")
    yield bouncer
    bouncer.stop()

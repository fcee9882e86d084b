"""Heavy reads on a read replica (DATABASE_REPLICA_URL), everything else on the primary.

`ReplicaRouter` sends a read to the `replica` alias only inside `replica_reads()`, which the
views open around the reads that may be a few seconds stale: the usage page's aggregates and
the usage CSV export. Everything else stays on the primary by default: money (balances, holds,
the ledger and its export, which must show the charge just made), keys, sessions, sign-in, and
every read that follows its own write. Opting in, rather than sending all reads of some models
to the replica, means a forgotten case errs on the side of the primary.

Without DATABASE_REPLICA_URL there is no `replica` alias, `replica_reads()` changes nothing, and
no lag is ever shown.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

from django.conf import settings
from django.db import DatabaseError, connections

REPLICA = "replica"
T = TypeVar("T")

_replica_reads: ContextVar[bool] = ContextVar("dosportal_replica_reads", default=False)


def has_replica() -> bool:
    return REPLICA in settings.DATABASES


@contextlib.contextmanager
def replica_reads() -> Iterator[None]:
    """Reads in this block go to the replica, if there is one."""
    token = _replica_reads.set(True)
    try:
        yield
    finally:
        _replica_reads.reset(token)


def on_replica(rows: Iterator[T]) -> Iterator[T]:
    """An iterator whose every step reads from the replica: for a streamed export, whose rows
    are read after the view has returned (and left any `with` it opened)."""
    while True:
        with replica_reads():
            try:
                row = next(rows)
            except StopIteration:
                return
        yield row


class ReplicaRouter:
    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        if _replica_reads.get() and has_replica():
            return REPLICA
        return None  # the primary

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return None  # the primary, always (a replica refuses writes anyway)

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        return True  # the replica holds the primary's rows: an object from either relates to the other

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        return db != REPLICA  # the replica gets its schema by replication


# The replica is as current as the primary when it has replayed all the WAL the primary has
# written; otherwise it is behind by the time since the last transaction it replayed. (Only
# `now() - pg_last_xact_replay_timestamp()` would count an idle primary as lag.)
_PRIMARY_LSN_SQL = "SELECT pg_current_wal_lsn()::text"
_REPLICA_LAG_SQL = """
SELECT CASE WHEN NOT pg_is_in_recovery() OR pg_last_wal_replay_lsn() >= %s::pg_lsn THEN 0.0
            ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0.0)::float8 END
"""


def replica_lag_seconds() -> float | None:
    """How far behind the primary the replica is, in seconds; None without a replica, or when
    it cannot be told (the page then says nothing rather than fail)."""
    if not has_replica():
        return None
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute(_PRIMARY_LSN_SQL)
            primary_lsn = cursor.fetchone()[0]
        with connections[REPLICA].cursor() as cursor:
            cursor.execute(_REPLICA_LAG_SQL, [primary_lsn])
            return max(0.0, float(cursor.fetchone()[0]))
    except DatabaseError:
        return None


def replica_lag_notice() -> float | None:
    """The lag to show on a page that read from the replica: only past the notice threshold."""
    lag = replica_lag_seconds()
    if lag is None or lag <= settings.DOS_AI_REPLICA_LAG_NOTICE_SECONDS:
        return None
    return lag

"""Pooled PostgreSQL connections that a server restart left behind are discarded before use.

When PostgreSQL stops (a restart, a fail-over), every idle connection in a pool is dead: the
server sent "terminating connection" and closed its end. Nothing tells the pool until the
next statement on that connection fails — which, without a check, is a 500 on the dashboard
and a tripped breaker on /v1 for each stale connection in turn (issue 21: 22 s of 503s and
27 dashboard 500s after a 6-second restart).

/v1's pool (dosportal.v1.store) is given the `check` callback from here. (Django's pool is
checked by Django's CONN_HEALTH_CHECKS — dosportal.settings — since Django passes its pool a
`check` of its own.) This check does not send anything: an idle connection has
nothing to read, so a socket that is readable (the server's goodbye, or end-of-file) means the
server closed it — one poll(2) with a zero timeout, about 2 µs, instead of the round trip of
psycopg_pool's `check_connection` on every checkout of the hot path (three per /v1 call).
What it cannot see — a server that vanished without closing the socket — fails the statement
as before (an outage: 503, and on /v1 the breaker).

When one stale connection is found, the others of the pool are of the same age and almost
surely stale too, so the pool is drained at once: otherwise psycopg_pool's check loop would
sleep between failed checks (1 s, 2 s, ...), one more for each stale connection.

No statement is ever retried on a fresh connection after it failed: from the client there is
no telling whether a statement that failed reached the server, and a second reservation or
ledger entry must never happen. The check runs before anything is sent, so nothing can have run.
"""

from __future__ import annotations

import select
import time
from typing import Any

import psycopg

# One drain per this interval per pool: the connections that a drain creates are new and
# good, and a second stale connection found by a concurrent checkout must not discard them.
DRAIN_INTERVAL_SECONDS = 1.0


class StaleConnection(psycopg.OperationalError):
    """The server closed this pooled connection while it was idle."""


def closed_by_server(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """True when the idle connection `conn` is closed, or its server has said goodbye."""
    if conn.closed:
        return True
    poller = select.poll()  # not select(): a busy worker's descriptors may be above FD_SETSIZE
    poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


class _Drains:
    def __init__(self) -> None:
        self.last = -1e9

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last < DRAIN_INTERVAL_SECONDS:
            return False
        self.last = now
        return True


class AsyncCheck:
    """`check` for psycopg_pool.AsyncConnectionPool (/v1's): `pool` returns the pool."""

    def __init__(self, pool: Any):
        self.pool = pool
        self.drains = _Drains()

    async def __call__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if not closed_by_server(conn):
            return
        await conn.close()
        if self.drains.due():
            await self.pool().drain()
        raise StaleConnection("the server closed this pooled connection (PostgreSQL restarted?)")

"""Pooled PostgreSQL connections that a server restart left behind are discarded before use.

When PostgreSQL stops (a restart, a fail-over), every idle connection in a pool is dead: the
server sent "terminating connection" and closed its end. Nothing tells the pool until the
next statement on that connection fails — which, without a check, is a 500 on the dashboard
and a tripped breaker on /v1 for each stale connection in turn (issue 21: 22 s of 503s and
27 dashboard 500s after a 6-second restart).

/v1's store (dosportal.v1.store, `_with_connection`) checks each connection it takes from
its pool with `closed_by_server`. (Django's pool is checked by Django's CONN_HEALTH_CHECKS —
dosportal.settings — since Django passes its pool a `check` of its own.) This check does not
send anything: an idle connection has nothing to read, so a socket that is readable (the
server's goodbye, or end-of-file) means the server closed it — one poll(2) with a zero
timeout, about 2 µs (measured), instead of the round trip of psycopg_pool's
`check_connection` on every checkout of the hot path (three per /v1 call). What it cannot see
— a server that vanished without closing the socket — fails the statement as before (an
outage: 503, and on /v1 the breaker).

When one stale connection is found, the others of the pool are of the same age and almost
surely stale too, so the pool is drained at once (`Drains`), and the store probes with a
connection of its own before waiting for the pool's next one: after a restart that succeeds
at once, while the server is down it is refused at once and the call gets its 503. (psycopg_pool's own
`check=` hook would not do: its loop waits the whole pool timeout for a replacement, and
sleeps 1 s, 2 s, ... between connections that fail their check.)

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


def closed_by_server(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """True when the idle connection `conn` is closed, or its server has said goodbye."""
    if conn.closed:
        return True
    poller = select.poll()  # not select(): a busy worker's descriptors may be above FD_SETSIZE
    poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


class Drains:
    """At most one drain of a pool per DRAIN_INTERVAL_SECONDS."""

    def __init__(self) -> None:
        self.last = -1e9

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last < DRAIN_INTERVAL_SECONDS:
            return False
        self.last = now
        return True

"""Database steps of the /v1 path, each of which gives its connection back when done.

Django keeps a thread's connection until the request ends. For /v1 that would
mean a stream holds a PostgreSQL connection (idle) for as long as it runs, and
500 concurrent streams would need 500 connections. Each step here runs in the
request's thread and then closes the connection — with the psycopg pool that
returns it to the pool, so connections are held only while a query runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

P = ParamSpec("P")
R = TypeVar("R")


def _then_release(function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    try:
        return function(*args, **kwargs)
    finally:
        # With CONN_MAX_AGE = 0 (required by the pool, and the default) every connection
        # is "obsolete" once used, so this closes it: back to the pool, or really closed.
        close_old_connections()


async def db_step(function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    return await sync_to_async(_then_release)(function, *args, **kwargs)

"""The database work of one /v1 call, and nothing else.

What a metered call costs on PostgreSQL (`PgStore`: psycopg's async pool, autocommit, no ORM,
no thread hop), each step one awaited round trip and at most one commit:

  1. lookup  — one SELECT: the key by its SHA-256 (or a rolled key's old one, within its grace
               period) with its settings, its owner's limits, and the requested served model
               with its prices (or the whole catalogue for /v1/models).
  2. reserve — one statement: hold the worst-case cost against the account's credit and the
               key's spend limit, write the hold (billing.hotpath).
  3. settle  — one statement: release the hold, charge (the account, and the key's period
               spend), usage record, ledger entry. Under load the settlements that arrive
               while one batch is written share the next transaction (`_SettleBatches`).

Nothing here is cached: revocation, limits and prices are read fresh on every call, and the
served-model row comes with the key in the same round trip, so there is no catalogue cache to
invalidate. On SQLite (the embedded default) `OrmStore` runs the same three steps through the
ORM services in a worker thread.

A database that cannot be reached raises `StoreUnavailable` (the gateway answers 503 in the
API's error shape). After a failure the store refuses at once for `BREAKER_SECONDS`, so a
PostgreSQL outage costs clients a fast 503, not a pool time-out each.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import psycopg
import psycopg_pool
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections
from psycopg.rows import tuple_row

from accounts.models import User, effective_limits
from apikeys.limits import period_start
from apikeys.models import ApiKey
from billing import hotpath
from billing.models import ServedModel, UpstreamEndpoint
from billing.money import PricedPerMillion
from billing.services import Refusal, Refused
from billing.settlement import Settlement
from dosportal.dbpool import Drains, closed_by_server
from dosportal.v1.loops import PerEventLoop

logger = logging.getLogger(__name__)

T = TypeVar("T")

# After a failed probe, calls are refused at once for this long (then the next one probes).
BREAKER_SECONDS = 0.25
PROBE_TIMEOUT = 1.0
# last_used_at is accurate to this interval: at most one write a minute per key.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


class StoreUnavailable(Exception):
    """The database cannot be reached (or just could not be): answer 503, write nothing.

    `maybe_ran`: the statement was sent before the connection failed, so it may have been
    committed (a lost acknowledgement) — a reservation then has to be looked for and released."""

    def __init__(self, message: str = "", *, maybe_ran: bool = False):
        super().__init__(message)
        self.maybe_ran = maybe_ran


@dataclass(frozen=True, slots=True)
class ModelRow(PricedPerMillion):
    id: int
    name: str
    upstream_name: str
    kind: str
    input_price_micros_per_million: int
    output_price_micros_per_million: int
    created_at: dt.datetime

    @classmethod
    def of(cls, model: ServedModel) -> ModelRow:
        return cls(
            model.pk,
            model.name,
            model.upstream_name,
            model.kind,
            model.input_price_micros_per_million,
            model.output_price_micros_per_million,
            model.created_at,
        )


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: an active key of an active account, that account's limits, and the
    key's own settings (apikeys.models.ApiKey: None means "no such setting")."""

    key_id: int
    key_hint: str
    owner_id: int
    requests_per_minute: int
    tokens_per_minute: int
    last_used_at: dt.datetime | None
    expires_at: dt.datetime | None = None
    allowed_ips: list[str] | None = None
    allowed_models: list[str] | None = None
    max_concurrency: int | None = None
    spend_limit_micros: int | None = None
    spend_period: str = ""

    @classmethod
    def of(cls, api_key: ApiKey) -> Caller:
        """From the ORM (the key with its owner), as the PostgreSQL lookup builds it from its row."""
        owner = api_key.owner
        return cls(
            api_key.pk,
            api_key.hint,
            owner.pk,
            owner.requests_per_minute,
            owner.tokens_per_minute,
            api_key.last_used_at,
            api_key.expires_at,
            api_key.allowed_ips,
            api_key.allowed_models,
            api_key.max_concurrency,
            api_key.spend_limit_micros,
            api_key.spend_period,
        )

    def last_used_is_stale(self, now: dt.datetime) -> bool:
        return self.last_used_at is None or now - self.last_used_at >= LAST_USED_RESOLUTION

    def spend_period_start(self, at: dt.datetime) -> dt.datetime | None:
        """The start of the spend period a call started at `at` counts in; None without a limit."""
        if self.spend_limit_micros is None or not self.spend_period:
            return None
        return period_start(self.spend_period, at)


@dataclass(frozen=True, slots=True)
class Lookup:
    caller: Caller | None  # None: unknown, revoked, or its owner is deactivated
    model: ModelRow | None  # the requested model, if it exists and is active
    catalogue: list[ModelRow]  # every active model, only when asked for


EndpointCatalogue = dict[int, list[tuple[str, str, int]]]  # model id → [(base URL, API key, weight)]


@dataclass(frozen=True, slots=True)
class StaleHold:
    """A hold whose worker stopped renewing it: what its call had delivered by then."""

    hold_id: int
    call: dict[str, Any] | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int


class Store(Protocol):
    async def lookup(self, hashed_key: str, *, model: str | None = None, catalogue: bool = False) -> Lookup: ...

    async def reserve(
        self, caller: Caller, *, amount_micros: int, request_id: str, started_at: dt.datetime, call: dict | None = None
    ) -> int | Refused: ...

    async def touch(self, caller: Caller) -> None: ...

    async def hold_for(self, request_id: str) -> int | None: ...

    async def heartbeat(self, progress: list[tuple[int, int, int]]) -> None: ...

    async def stale_holds(self, stale_seconds: float, limit: int) -> list[StaleHold]: ...

    async def settle(self, settlement: Settlement) -> None: ...

    async def endpoints(self) -> EndpointCatalogue: ...

    async def ping(self) -> bool: ...


class _CatalogueCache:
    """The upstream endpoints of every model, read at most once per
    `DOS_AI_UPSTREAM_CATALOGUE_SECONDS` per worker: they change when an admin edits them."""

    def __init__(self) -> None:
        self.value: EndpointCatalogue = {}
        self.read_at = -1e9

    async def get(self, load: Any) -> EndpointCatalogue:
        if time.monotonic() - self.read_at >= settings.DOS_AI_UPSTREAM_CATALOGUE_SECONDS:
            self.value = await load()
            self.read_at = time.monotonic()
        return self.value


def _catalogue(rows: Any) -> EndpointCatalogue:
    catalogue: EndpointCatalogue = {}
    for model_id, base_url, api_key, weight in rows:
        catalogue.setdefault(model_id, []).append((base_url.rstrip("/"), api_key, weight))
    return catalogue


# --- PostgreSQL: psycopg's async pool ------------------------------------------------------

_MODEL_COLUMNS = (
    "m.id, m.name, COALESCE(NULLIF(m.upstream_model, ''), m.name), m.kind, "
    "m.input_price_micros_per_million, m.output_price_micros_per_million, m.created_at"
)
# A rolled key is found by its new secret, or by its old one until the grace period ends
# (both columns are uniquely indexed: PostgreSQL answers the OR with two index probes).
_LOOKUP_SQL = f"""
SELECT k.id, k.hint, k.owner_id, k.last_used_at,
       u.plan, u.requests_per_minute_override, u.tokens_per_minute_override,
       k.expires_at, k.allowed_ips, k.allowed_models, k.max_concurrency, k.spend_limit_micros, k.spend_period,
       {_MODEL_COLUMNS}
FROM {ApiKey._meta.db_table} k
JOIN {User._meta.db_table} u ON u.id = k.owner_id AND u.is_active
LEFT JOIN {ServedModel._meta.db_table} m ON m.name = %(model)s AND m.is_active
WHERE (k.hashed_key = %(hashed_key)s
       OR (k.previous_hashed_key = %(hashed_key)s AND k.previous_key_expires_at > %(now)s))
  AND k.revoked_at IS NULL AND k.suspended_at IS NULL
"""
_KEY_COLUMNS = 13
_CATALOGUE_SQL = f"""
SELECT {_MODEL_COLUMNS} FROM {ServedModel._meta.db_table} m WHERE m.is_active ORDER BY m.name
"""
_ENDPOINTS_SQL = f"""
SELECT e.served_model_id, e.base_url, e.api_key, e.weight FROM {UpstreamEndpoint._meta.db_table} e
WHERE e.is_active ORDER BY e.id
"""
_TOUCH_SQL = f"""
UPDATE {ApiKey._meta.db_table} SET last_used_at = now()
WHERE id = %(key_id)s AND (last_used_at IS NULL OR last_used_at < now() - interval '60 seconds')
"""


class _SettleBatches:
    """Settlements that arrive while a batch is being written wait for the next one, so under
    load a worker writes one transaction (one commit, one WAL flush, one pass over the hot
    account row's lock) for many calls, and a lone call is written at once, alone, in its
    caller's own task.

    Each caller still waits until its own settlement is committed: a served answer is not
    sent before its charge is durable. A batch is ordered by account, then hold: every
    transaction takes account locks in ascending order, so two workers' batches cannot
    deadlock. A batch the database refuses (not an outage) is retried one settlement at a
    time, so one bad settlement cannot take the others down with it.
    """

    MAX_BATCH = 64

    def __init__(self, write: Callable[[list[Settlement]], Awaitable[None]]):
        self.write = write
        self.waiting: list[tuple[Settlement, asyncio.Future[None]]] = []
        self.busy = False  # a write is in flight: newcomers wait for the next batch
        self.writer: asyncio.Task[None] | None = None  # held: the loop keeps only weak references

    async def settle(self, settlement: Settlement) -> None:
        if self.busy:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.waiting.append((settlement, done))
            await done
            return
        # Nothing in flight: this one is written now, alone, in its caller's own task.
        self.busy = True
        try:
            await self.write([settlement])
        finally:
            self._hand_over()

    def _hand_over(self) -> None:
        """After a write: what queued behind it goes to a writer task, or nothing is in flight."""
        if self.waiting:
            self.writer = asyncio.get_running_loop().create_task(self._write_batches())
        else:
            self.busy = False

    async def _write_batches(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting[: self.MAX_BATCH], self.waiting[self.MAX_BATCH :]
                batch.sort(key=lambda item: (item[0].user_id, item[0].hold_id))
                await self._write_batch(batch)
        finally:
            self.busy = False

    async def _write_batch(self, batch: list[tuple[Settlement, asyncio.Future[None]]]) -> None:
        try:
            await self.write([settlement for settlement, _ in batch])
        except StoreUnavailable as error:
            _fail(batch, error)
        except Exception:  # noqa: BLE001 - refused by the database: find the one at fault
            for item in batch:
                try:
                    await self.write([item[0]])
                except Exception as error:  # noqa: BLE001 - handed to its caller
                    _fail([item], error)
                else:
                    _succeed([item])
        except BaseException as error:  # cancelled (shutdown): nobody may wait for good
            _fail(batch + self.waiting, error)
            self.waiting = []
            raise
        else:
            _succeed(batch)


def _succeed(items: list[tuple[Settlement, asyncio.Future[None]]]) -> None:
    for _, done in items:
        if not done.done():
            done.set_result(None)


def _fail(items: list[tuple[Settlement, asyncio.Future[None]]], error: BaseException) -> None:
    for _, done in items:
        if not done.done():
            done.set_exception(error)


def conninfo_from_settings() -> str:
    database = settings.DATABASES["default"]
    params = {
        "dbname": database.get("NAME") or "",
        "user": database.get("USER") or "",
        "password": database.get("PASSWORD") or "",
        "host": database.get("HOST") or "",
        "port": str(database.get("PORT") or ""),
        "connect_timeout": str(max(1, round(settings.DOS_AI_DB_CONNECT_TIMEOUT))),
        "application_name": "dosportal-v1",
    }
    return psycopg.conninfo.make_conninfo(**{name: value for name, value in params.items() if value})


def pool_kwargs() -> dict[str, Any]:
    """The pool's connection arguments beyond autocommit and the row factory.

    psycopg prepares a statement on the server after `prepare_threshold` (5) executions on a
    connection, which speeds the three hot statements up on PostgreSQL itself. Behind PgBouncer
    in transaction mode (DATABASE_POOLER=pgbouncer) the statement would be prepared on whichever
    server connection ran that transaction, and the next execution may land on another one
    ("prepared statement _pg3_0 does not exist"), so preparing is off there.

    PgBouncer 1.21+ can carry protocol-level prepared statements across server connections
    (`max_prepared_statements`), which psycopg's are. We still turn them off: Debian 12's
    PgBouncer (1.18, what the tests run) has no such setting, a pooler run by someone else may
    not set it, and the gateway's statements are planned in well under a millisecond, so the
    saving is not worth a set-up that fails only under load.
    """
    if settings.DATABASE_POOLER == "pgbouncer":
        return {"prepare_threshold": None}
    return {}


class PgStore:
    def __init__(self, conninfo: str, *, max_size: int, timeout: float):
        self.timeout = timeout
        self.pool = psycopg_pool.AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True, "row_factory": tuple_row, **pool_kwargs()},
            timeout=timeout,
            max_idle=settings.DOS_AI_DB_POOL_MAX_IDLE,
            reconnect_timeout=0,  # keep trying to reconnect for as long as PostgreSQL is away
            open=False,
        )
        self.opened = False
        self.open_lock = asyncio.Lock()
        # The breaker: open while down_until is set. Then one call at a time probes with a
        # new connection of its own (refused at once while the server is down, so the probe
        # is fast); calls that arrive during a probe, or within BREAKER_SECONDS of a failed
        # one, are refused at once.
        self.down_until = 0.0
        self.probing = False
        self.drains = Drains()
        self.connected_once = False
        self.catalogue = _CatalogueCache()
        self.batches = _SettleBatches(self._settle_batch)

    async def _execute(self, sql: str, params: dict[str, Any], *, fetch: str = "one") -> Any:
        async def run(conn: psycopg.AsyncConnection[Any]) -> Any:
            cursor = await conn.execute(sql, params)
            if fetch == "one":
                return await cursor.fetchone()
            if fetch == "all":
                return await cursor.fetchall()
            return None

        return await self._with_connection(run)

    async def _with_connection(self, run: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        """`run` on a pooled connection, behind the breaker: an outage is `StoreUnavailable`."""
        timeout, probe = self.timeout, False
        if self.down_until:
            if self.probing or time.monotonic() < self.down_until:
                raise StoreUnavailable("database unavailable (recent failure)")
            await self._probe()
            probe, timeout = True, min(self.timeout, PROBE_TIMEOUT)
        elif not self.connected_once:
            # A pool that has never had a connection is no busier than empty: if the first
            # one cannot be made quickly, PostgreSQL is away — do not wait the whole DOS_AI_DB_TIMEOUT.
            probe, timeout = True, min(self.timeout, PROBE_TIMEOUT)
        if not self.opened:
            async with self.open_lock:
                if not self.opened:
                    await self.pool.open(wait=False)
                    self.opened = True
        try:
            for _ in range(self.pool.max_size + 1):
                async with self.pool.connection(timeout=timeout) as conn:
                    stale = closed_by_server(conn)
                    if stale:
                        await self._discard_stale(conn)
                    else:
                        result = await run(conn)
                if not stale:
                    break
                # PostgreSQL closed the pool's connections: it restarted, or it is down. A probe
                # tells which in a millisecond when it refuses (StoreUnavailable, breaker open);
                # then the pool's new connection is waited for no longer than a probe would.
                await self._probe()
                probe, timeout = True, min(self.timeout, PROBE_TIMEOUT)
            else:
                raise psycopg_pool.PoolTimeout("every pooled connection was closed by the server")
        except psycopg_pool.PoolTimeout as error:
            if probe or self.pool.get_stats().get("pool_size", 0) == 0:
                self._trip(error)  # no connection could be made at all: the server is away
            raise StoreUnavailable(str(error)) from error  # busy, not down: only this call fails
        except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as error:
            self._trip(error)
            raise StoreUnavailable(str(error), maybe_ran=True) from error
        if self.down_until:
            logger.warning("database available again on /v1")
        self.down_until, self.connected_once = 0.0, True
        return result

    async def _discard_stale(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """A connection the server closed goes (given back closed, the pool replaces it), and so
        do the other idle ones, which are as old (dosportal.dbpool) — nothing was sent on it."""
        await conn.close()
        if self.drains.due():
            logger.warning("pooled /v1 connections were closed by PostgreSQL (restarted?): replacing them")
            await self.pool.drain()

    async def _probe(self) -> None:
        """While the breaker is open: can a new connection be made now? One call at a time
        asks, on a connection of its own rather than the pool's (whose attempts go on in the
        background and only time out), so a server that refuses answers in a millisecond and
        the first call after PostgreSQL is back is served."""
        self.probing = True
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                conn = await psycopg.AsyncConnection.connect(self.pool.conninfo, **self.pool.kwargs)
            await conn.close()
        except (psycopg.Error, OSError, TimeoutError) as error:
            self._trip(error)
            raise StoreUnavailable(str(error)) from error
        finally:
            self.probing = False

    def _trip(self, error: BaseException) -> None:
        if not self.down_until:
            logger.error("database unavailable on /v1, answering 503 until it is back: %r", error)
        self.down_until = time.monotonic() + BREAKER_SECONDS

    async def lookup(self, hashed_key: str, *, model: str | None = None, catalogue: bool = False) -> Lookup:
        now = dt.datetime.now(dt.UTC)
        row = await self._execute(_LOOKUP_SQL, {"hashed_key": hashed_key, "model": model, "now": now})
        if row is None:
            return Lookup(None, None, [])
        key_id, hint, owner_id, last_used_at, plan, rpm_override, tpm_override = row[:7]
        rpm, tpm = effective_limits(plan, rpm_override, tpm_override)
        caller = Caller(key_id, hint, owner_id, rpm, tpm, last_used_at, *row[7:_KEY_COLUMNS])
        found = ModelRow(*row[_KEY_COLUMNS:]) if row[_KEY_COLUMNS] is not None else None
        rows = await self._execute(_CATALOGUE_SQL, {}, fetch="all") if catalogue else []
        return Lookup(caller, found, [ModelRow(*model_row) for model_row in rows])

    async def reserve(
        self, caller: Caller, *, amount_micros: int, request_id: str, started_at: dt.datetime, call: dict | None = None
    ) -> int | Refused:
        params = hotpath.reserve_params(
            user_id=caller.owner_id,
            key_id=caller.key_id,
            amount_micros=amount_micros,
            request_id=request_id,
            touch=caller.last_used_is_stale(dt.datetime.now(dt.UTC)),
            spend_period_start=caller.spend_period_start(started_at),
            call=json.dumps(call, separators=(",", ":")) if call is not None else None,
        )
        hold_id, key_ok, key_left, available = await self._execute(hotpath.RESERVE_SQL, params)
        if hold_id is not None:
            return hold_id
        if key_ok:
            return Refused(Refusal.BALANCE, available or 0)
        return Refused(Refusal.KEY_SPEND_LIMIT, key_left or 0)

    async def touch(self, caller: Caller) -> None:
        if caller.last_used_is_stale(dt.datetime.now(dt.UTC)):
            await self._execute(_TOUCH_SQL, {"key_id": caller.key_id}, fetch="none")

    async def hold_for(self, request_id: str) -> int | None:
        row = await self._execute(hotpath.HOLD_BY_REQUEST_SQL, {"request_id": request_id})
        return row[0] if row else None

    async def heartbeat(self, progress: list[tuple[int, int, int]]) -> None:
        ids, prompt, completion = (list(column) for column in zip(*progress, strict=True))
        await self._execute(
            hotpath.HEARTBEAT_SQL, {"ids": ids, "prompt": prompt, "completion": completion}, fetch="none"
        )

    async def stale_holds(self, stale_seconds: float, limit: int) -> list[StaleHold]:
        rows = await self._execute(
            hotpath.STALE_HOLDS_SQL, {"stale_seconds": stale_seconds, "limit": limit}, fetch="all"
        )
        return [StaleHold(*row) for row in rows]

    async def settle(self, settlement: Settlement) -> None:
        """Written with whatever other settlements arrive while one batch is being written
        (`_SettleBatches`): at one call in flight, alone and at once."""
        await self.batches.settle(settlement)

    async def _settle_batch(self, batch: list[Settlement]) -> None:
        """A lone settlement is one autocommitted statement. Several are one transaction in one
        round trip, pipelined between BEGIN and COMMIT: all written, or none (the caller then
        tries them one by one)."""
        if len(batch) == 1:
            await self._execute(hotpath.SETTLE_SQL, hotpath.settle_params(batch[0]))
            return

        async def run(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.pipeline(), conn.transaction():
                for settlement in batch:
                    await conn.execute(hotpath.SETTLE_SQL, hotpath.settle_params(settlement))

        await self._with_connection(run)

    async def endpoints(self) -> EndpointCatalogue:
        async def load() -> EndpointCatalogue:
            return _catalogue(await self._execute(_ENDPOINTS_SQL, {}, fetch="all"))

        return await self.catalogue.get(load)

    async def ping(self) -> bool:
        """The database answers `SELECT 1` (for /healthz; the breaker's verdict counts too)."""
        try:
            await self._execute("SELECT 1", {})
        except Exception:  # noqa: BLE001 - any failure means "not healthy"
            return False
        return True

    async def close(self) -> None:
        if self.opened:
            await self.pool.close()


# --- Any other database (the embedded SQLite default): the ORM in a worker thread ----------


def _in_thread(function: Any) -> Any:
    """Run an ORM function in a worker thread and give its connection back when done, so a
    stream does not pin a connection for its whole life."""

    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (OperationalError, InterfaceError) as error:  # unreachable, or SQLite's "locked"
            raise StoreUnavailable(str(error)) from error
        finally:
            close_old_connections()

    return sync_to_async(run)


class OrmStore:
    def __init__(self) -> None:
        self.catalogue = _CatalogueCache()

    @staticmethod
    @_in_thread
    def _endpoints() -> EndpointCatalogue:
        rows = UpstreamEndpoint.objects.filter(is_active=True).order_by("id")
        return _catalogue(rows.values_list("served_model_id", "base_url", "api_key", "weight"))

    async def endpoints(self) -> EndpointCatalogue:
        return await self.catalogue.get(self._endpoints)

    @staticmethod
    @_in_thread
    def _lookup(hashed_key: str, model: str | None, catalogue: bool) -> Lookup:
        from apikeys.services import api_key_by_hash
        from billing.selectors import served_models_active

        api_key = api_key_by_hash(hashed_key)
        if api_key is None:
            return Lookup(None, None, [])
        caller = Caller.of(api_key)
        found = served_models_active().filter(name=model).first() if model else None
        rows = [ModelRow.of(row) for row in served_models_active()] if catalogue else []
        return Lookup(caller, ModelRow.of(found) if found else None, rows)

    async def lookup(self, hashed_key: str, *, model: str | None = None, catalogue: bool = False) -> Lookup:
        return await self._lookup(hashed_key, model, catalogue)

    @staticmethod
    @_in_thread
    def _reserve(
        caller: Caller, amount_micros: int, request_id: str, started_at: dt.datetime, call: dict | None
    ) -> int | Refused:
        from apikeys.services import api_key_mark_used
        from billing.services import credit_left, credit_reserve_for_key

        period_start = caller.spend_period_start(started_at)
        hold_id = credit_reserve_for_key(
            user_id=caller.owner_id,
            amount_micros=amount_micros,
            request_id=request_id,
            api_key_id=caller.key_id,
            spend_period_start=period_start,
            call=call,
        )
        if isinstance(hold_id, Refusal):
            left = credit_left(
                why=hold_id, user_id=caller.owner_id, api_key_id=caller.key_id, spend_period_start=period_start
            )
            return Refused(hold_id, left)
        # The hold is committed: a failure of the last-used write after it (SQLite's "database is
        # locked") must not turn the call into a 503 that leaves its hold behind.
        try:
            api_key_mark_used(api_key_id=caller.key_id, last_used_at=caller.last_used_at)
        except (OperationalError, InterfaceError) as error:
            logger.warning("could not record that key %s was used: %r", caller.key_id, error)
        return hold_id

    async def reserve(
        self, caller: Caller, *, amount_micros: int, request_id: str, started_at: dt.datetime, call: dict | None = None
    ) -> int | Refused:
        return await self._reserve(caller, amount_micros, request_id, started_at, call)

    @staticmethod
    @_in_thread
    def _hold_for(request_id: str) -> int | None:
        from billing.models import CreditHold

        return CreditHold.objects.filter(request_id=request_id).values_list("pk", flat=True).first()

    async def hold_for(self, request_id: str) -> int | None:
        return await self._hold_for(request_id)

    @staticmethod
    @_in_thread
    def _heartbeat(progress: list[tuple[int, int, int]]) -> None:
        from billing.services import credit_holds_heartbeat

        credit_holds_heartbeat(progress=progress)

    async def heartbeat(self, progress: list[tuple[int, int, int]]) -> None:
        await self._heartbeat(progress)

    @staticmethod
    @_in_thread
    def _stale_holds(stale_seconds: float, limit: int) -> list[StaleHold]:
        from billing.selectors import stale_holds

        holds = stale_holds(older_than=dt.timedelta(seconds=stale_seconds))
        return [
            StaleHold(
                hold.pk,
                hold.call,
                hold.delivered_prompt_tokens,
                hold.delivered_completion_tokens,
                int((hold.seen - hold.created_at).total_seconds() * 1000),
            )
            for hold in holds[:limit]
        ]

    async def stale_holds(self, stale_seconds: float, limit: int) -> list[StaleHold]:
        return await self._stale_holds(stale_seconds, limit)

    @staticmethod
    @_in_thread
    def _touch(caller: Caller) -> None:
        from apikeys.services import api_key_mark_used

        api_key_mark_used(api_key_id=caller.key_id, last_used_at=caller.last_used_at)

    async def touch(self, caller: Caller) -> None:
        await self._touch(caller)

    @staticmethod
    @_in_thread
    def _settle(settlement: Settlement) -> None:
        from billing.services import usage_settle

        usage_settle(settlement=settlement)

    async def settle(self, settlement: Settlement) -> None:
        await self._settle(settlement)

    @staticmethod
    @_in_thread
    def _ping() -> bool:
        from dosportal.health import database_answers

        return database_answers()

    async def ping(self) -> bool:
        return await self._ping()


def _pg_store() -> PgStore:
    return PgStore(conninfo_from_settings(), max_size=settings.DOS_AI_DB_POOL_SIZE, timeout=settings.DOS_AI_DB_TIMEOUT)


_pg_stores = PerEventLoop(_pg_store)
_orm_store = OrmStore()


def get_store() -> Store:
    """PostgreSQL through the async pool (one per event loop: see dosportal.v1.loops), else the ORM."""
    if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        return _pg_stores.get()
    return _orm_store


async def close_store() -> None:
    store = _pg_stores.existing()
    if store is not None:
        await store.close()

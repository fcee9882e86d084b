"""Per-key sliding-window limits on requests and tokens per minute.

Each admitted request is an entry (time, token cost) in the key's window. A
request is admitted when, counting only the entries of the last
`DOS_AI_RATE_WINDOW_SECONDS`, one more request fits the RPM limit and its token
cost fits the TPM limit. Both limits are decided and consumed together, in one
step, so a request refused by either consumes nothing from the other.

Why not the `limits` library: its token-capable strategy (sliding-window
counter) is an approximation that weighs the previous fixed window, so right
after a burst it refuses for longer than the window (a 3-per-2s limit stays
shut for up to 4 s) and cannot say exactly when a request would be admitted;
its exact strategy (moving window) stores one list element per unit of cost,
i.e. up to 2,000,000 elements per key for TPM. And it checks one limit at a
time, so an RPM slot would be spent by a request that TPM then refuses. This
module keeps a sorted set of entries per key plus a running token sum, updated
by one Lua script (atomic on the Redis server, one round trip, Redis's own
clock so hosts need not agree on the time), and computes Retry-After exactly.

Without REDIS_URL or REDIS_SENTINELS (the embedded single-process default) the same algorithm runs
in process memory.

Redis unreachable: fail open. The request is admitted without limit headers and
an ERROR is logged for every such request. Rationale: rate limits protect the
fleet from bursts; credit (in PostgreSQL) still protects money, so an outage of
the limiter must not take the whole API down.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import threading
import time
import uuid
import weakref
from collections import deque
from dataclasses import dataclass

import redis.exceptions
from django.conf import settings

from dosportal import metrics, redisclient
from dosportal.v1.loops import PerEventLoop

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    admitted: bool
    limit_requests: int
    limit_tokens: int
    remaining_requests: int
    remaining_tokens: int
    reset_requests_ms: int  # until the request window is back to its full limit
    reset_tokens_ms: int
    retry_after_ms: int = 0  # when refused: until a request of this size would be admitted
    refused_by: str = ""  # "concurrency" | "requests" | "tokens" | "tokens_exceed_limit"
    entry: str = ""  # handle for release()
    slot: bool = False  # a concurrency slot was taken: give it back with finish()
    limit_concurrency: int = 0

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.retry_after_ms / 1000))

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(self.limit_requests),
            "x-ratelimit-limit-tokens": str(self.limit_tokens),
            "x-ratelimit-remaining-requests": str(max(0, self.remaining_requests)),
            "x-ratelimit-remaining-tokens": str(max(0, self.remaining_tokens)),
            "x-ratelimit-reset-requests": format_duration(self.reset_requests_ms),
            "x-ratelimit-reset-tokens": format_duration(self.reset_tokens_ms),
        }


def format_duration(ms: int) -> str:
    """OpenAI's style: `120ms`, `1s`, `6.5s`, `6m0s`, `1h2m3s`."""
    ms = max(0, int(ms))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    if seconds < 60:
        text = f"{seconds:.3f}".rstrip("0").rstrip(".")
        return f"{text}s"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes}m{secs}s" if hours else f"{minutes}m{secs}s"


# KEYS: requests zset, tokens zset, token-sum string, in-flight zset.
# ARGV: window_ms, rpm, tpm, cost, member, peek, max_concurrency (0: no cap), lease_ms.
# With peek = "1" nothing is consumed: the state is only read (for headers on early errors).
# The in-flight set holds one member per request in flight, scored with the time its lease
# ends: a worker renews the leases of its calls (refresh) and removes them when they end
# (finish); a killed worker's members simply expire. The cap is checked first, and a
# request refused by any limit consumes nothing from the others.
# Returns {admitted, count, token_sum, reset_req_ms, reset_tok_ms, retry_ms, refused_by}.
_ADMIT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local member = ARGV[5]
local peek = ARGV[6] == '1'
local cap = tonumber(ARGV[7])
local lease = tonumber(ARGV[8])
local cutoff = now - window
local in_flight = 0
if cap > 0 and not peek then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  in_flight = redis.call('ZCARD', KEYS[4])
end

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)
local sum = tonumber(redis.call('GET', KEYS[3]) or '0')
for _, m in ipairs(expired) do
  sum = sum - tonumber(string.match(m, ':(%d+)$'))
end
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
  if sum <= 0 then sum = 0; redis.call('DEL', KEYS[3]) else redis.call('SET', KEYS[3], sum) end
end
local count = redis.call('ZCARD', KEYS[1])

local function reset_of(key)
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if #newest == 0 then return 0 end
  return tonumber(newest[2]) + window - now
end

local refused_by = ''
local retry = 0
if count + 1 > rpm then
  refused_by = 'requests'
  local idx = count - rpm
  local entry = redis.call('ZRANGE', KEYS[1], idx, idx, 'WITHSCORES')
  retry = tonumber(entry[2]) + window - now
end
if cost > tpm then
  refused_by = 'tokens_exceed_limit'
  retry = window
elseif sum + cost > tpm then
  local need = sum + cost - tpm
  local freed = 0
  local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  local token_retry = window
  for i = 1, #entries, 2 do
    freed = freed + tonumber(string.match(entries[i], ':(%d+)$'))
    if freed >= need then token_retry = tonumber(entries[i + 1]) + window - now; break end
  end
  if refused_by == '' or token_retry > retry then retry = token_retry end
  if refused_by == '' then refused_by = 'tokens' end
end
if peek then
  return {1, count, sum, reset_of(KEYS[1]), reset_of(KEYS[2]), 0, ''}
end
if cap > 0 and in_flight >= cap then
  refused_by = 'concurrency'
  retry = 1000
end
if refused_by ~= '' then
  return {0, count, sum, reset_of(KEYS[1]), reset_of(KEYS[2]), retry, refused_by}
end

redis.call('ZADD', KEYS[1], now, member)
redis.call('PEXPIRE', KEYS[1], window)
if cost > 0 then
  -- A call that costs no tokens (/v1/models) leaves the token window as it was.
  redis.call('ZADD', KEYS[2], now, member .. ':' .. cost)
  sum = sum + cost
  redis.call('SET', KEYS[3], sum)
  redis.call('PEXPIRE', KEYS[2], window)
  redis.call('PEXPIRE', KEYS[3], window)
end
if cap > 0 then
  redis.call('ZADD', KEYS[4], now + lease, member)
  if redis.call('PTTL', KEYS[4]) < lease then redis.call('PEXPIRE', KEYS[4], lease) end
end
return {1, count + 1, sum, window, reset_of(KEYS[2]), 0, ''}
"""

# KEYS: the client address's failure counter. ARGV: window_ms. Returns {failures, ms until the count resets}.
_AUTH_FAILURE_SCRIPT = """
local failures = redis.call('INCR', KEYS[1])
if failures == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {failures, redis.call('PTTL', KEYS[1])}
"""

# KEYS as above. ARGV: member, cost. Undo an admission (only if still in the window).
_RELEASE_SCRIPT = """
redis.call('ZREM', KEYS[4], ARGV[1])
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
local removed_tokens = redis.call('ZREM', KEYS[2], ARGV[1] .. ':' .. ARGV[2])
if removed_tokens == 1 then
  local sum = redis.call('DECRBY', KEYS[3], tonumber(ARGV[2]))
  if sum <= 0 then redis.call('DEL', KEYS[3]) end
end
return removed
"""


# KEYS as above. ARGV: member, admitted cost, used tokens. A call has ended: its entry in the
# token window keeps what it used instead of the worst case it was admitted at (never more),
# and its concurrency slot is freed, in one round trip.
_FINISH_SCRIPT = """
redis.call('ZREM', KEYS[4], ARGV[1])
local admitted = tonumber(ARGV[2])
local used = tonumber(ARGV[3])
if used >= admitted then return 0 end
local old = ARGV[1] .. ':' .. ARGV[2]
local score = redis.call('ZSCORE', KEYS[2], old)
if not score then return 0 end
redis.call('ZREM', KEYS[2], old)
if used > 0 then redis.call('ZADD', KEYS[2], score, ARGV[1] .. ':' .. used) end
local sum = redis.call('DECRBY', KEYS[3], admitted - used)
if sum <= 0 then redis.call('DEL', KEYS[3]) end
return admitted - used
"""


# KEYS: the in-flight zset. ARGV: member, lease_ms. Renew a call's lease, if it still has one.
_REFRESH_SLOT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local renewed = redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return renewed
"""


REDIS_POOL_SIZE = 64  # connections per process (per event loop)


class RedisLimiter:
    def __init__(self, url: str, window_seconds: float):
        self.window_ms = int(window_seconds * 1000)
        # A bounded pool that makes a burst wait for a free connection, with no time limit on
        # that wait: fail-open is for Redis being down (a refused or timed-out connection, a
        # socket time-out), never for our own pool being busy — a burst is exactly when limits
        # matter. redis-py's default pool raises past 100 connections in use, and a wait with a
        # time-out raised under 800 concurrent requests; both failed open. One script call
        # holds a connection about a millisecond.
        # `url`'s server, or the primary REDIS_SENTINELS name (dosportal.redisclient).
        self.redis = redisclient.async_client(
            url, max_connections=REDIS_POOL_SIZE, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        self.admit_script = self.redis.register_script(_ADMIT_SCRIPT)
        self.release_script = self.redis.register_script(_RELEASE_SCRIPT)
        self.auth_failure_script = self.redis.register_script(_AUTH_FAILURE_SCRIPT)
        self.refresh_slot_script = self.redis.register_script(_REFRESH_SLOT_SCRIPT)
        self.finish_script = self.redis.register_script(_FINISH_SCRIPT)
        self.lease_ms = int(settings.DOS_AI_CONCURRENCY_LEASE_SECONDS * 1000)

    @staticmethod
    def _keys(key_id: int) -> list[str]:
        # One hash tag per key keeps the four keys in one slot on Redis Cluster.
        base = f"dosportal:rl:{{{key_id}}}"
        return [f"{base}:req", f"{base}:tok", f"{base}:sum", f"{base}:inflight"]

    async def admit(
        self, key_id: int, *, rpm: int, tpm: int, cost: int, peek: bool = False, max_concurrency: int = 0
    ) -> Decision:
        member = uuid.uuid4().hex
        args = [self.window_ms, rpm, tpm, cost, member, "1" if peek else "0", max_concurrency, self.lease_ms]
        admitted, count, token_sum, reset_req, reset_tok, retry, refused_by = await self.admit_script(
            keys=self._keys(key_id), args=args
        )
        return Decision(
            admitted=bool(admitted),
            limit_requests=rpm,
            limit_tokens=tpm,
            remaining_requests=rpm - int(count),
            remaining_tokens=tpm - int(token_sum),
            reset_requests_ms=int(reset_req),
            reset_tokens_ms=int(reset_tok),
            retry_after_ms=int(retry),
            refused_by=refused_by.decode() if isinstance(refused_by, bytes) else str(refused_by),
            entry=f"{member}|{cost}" if admitted and not peek else "",
            slot=bool(admitted) and not peek and max_concurrency > 0,
            limit_concurrency=max_concurrency,
        )

    async def release(self, key_id: int, entry: str) -> None:
        member, cost = entry.split("|")
        await self.release_script(keys=self._keys(key_id), args=[member, cost])

    async def finish(self, key_id: int, entry: str, used: int) -> None:
        member, cost = entry.split("|")
        await self.finish_script(keys=self._keys(key_id), args=[member, cost, used])

    def slot_location(self, key_id: int, entry: str) -> tuple[str, str]:
        """(Redis key, member) of a call's concurrency slot, for whoever settles it if its worker dies."""
        return self._keys(key_id)[3], entry.split("|")[0]

    async def refresh_slot(self, key_id: int, entry: str) -> None:
        await self.refresh_slot_script(keys=[self._keys(key_id)[3]], args=[entry.split("|")[0], self.lease_ms])

    async def count_auth_failure(self, client: str) -> tuple[int, int]:
        failures, reset_ms = await self.auth_failure_script(
            keys=[f"dosportal:authfail:{client}"], args=[self.window_ms]
        )
        return int(failures), int(reset_ms)


class MemoryLimiter:
    """The same algorithm for one process (the embedded default)."""

    def __init__(self, window_seconds: float):
        self.window_ms = int(window_seconds * 1000)
        self.windows: dict[int, deque[tuple[int, str, int]]] = {}
        self.in_flight: dict[int, dict[str, int]] = {}  # key → member → lease end (ms)
        self.auth_failures: dict[str, tuple[int, int]] = {}
        self.lock = threading.Lock()
        self.lease_ms = int(settings.DOS_AI_CONCURRENCY_LEASE_SECONDS * 1000)

    async def admit(
        self, key_id: int, *, rpm: int, tpm: int, cost: int, peek: bool = False, max_concurrency: int = 0
    ) -> Decision:
        now = int(time.monotonic() * 1000)
        with self.lock:
            slots = self.in_flight.setdefault(key_id, {})
            for member in [member for member, until in slots.items() if until <= now]:
                del slots[member]
            entries = self.windows.setdefault(key_id, deque())
            while entries and entries[0][0] <= now - self.window_ms:
                entries.popleft()
            count = len(entries)
            token_sum = sum(entry[2] for entry in entries)
            reset = (entries[-1][0] + self.window_ms - now) if entries else 0
            costly = [entry[0] for entry in entries if entry[2]]
            token_reset = (costly[-1] + self.window_ms - now) if costly else 0
            if peek:
                return Decision(True, rpm, tpm, rpm - count, tpm - token_sum, reset, token_reset)
            refused_by, retry = "", 0
            if count + 1 > rpm:
                refused_by, retry = "requests", entries[count - rpm][0] + self.window_ms - now
            if cost > tpm:
                refused_by, retry = "tokens_exceed_limit", self.window_ms
            elif token_sum + cost > tpm:
                need, freed, token_retry = token_sum + cost - tpm, 0, self.window_ms
                for at, _, entry_cost in entries:
                    freed += entry_cost
                    if freed >= need:
                        token_retry = at + self.window_ms - now
                        break
                retry = max(retry, token_retry)
                refused_by = refused_by or "tokens"
            if max_concurrency and len(slots) >= max_concurrency:
                refused_by, retry = "concurrency", 1000
            if refused_by:
                return Decision(False, rpm, tpm, rpm - count, tpm - token_sum, reset, token_reset, retry, refused_by)
            member = uuid.uuid4().hex
            entries.append((now, member, cost))
            if max_concurrency:
                slots[member] = now + self.lease_ms
            return Decision(
                True,
                rpm,
                tpm,
                rpm - count - 1,
                tpm - token_sum - cost,
                self.window_ms,
                self.window_ms if cost else token_reset,
                entry=member,
                slot=bool(max_concurrency),
                limit_concurrency=max_concurrency,
            )

    async def count_auth_failure(self, client: str) -> tuple[int, int]:
        now = int(time.monotonic() * 1000)
        with self.lock:
            started, failures = self.auth_failures.get(client, (now, 0))
            if now - started >= self.window_ms:
                started, failures = now, 0
            self.auth_failures[client] = (started, failures + 1)
            if len(self.auth_failures) > 100_000:  # bounded: forget the oldest windows
                for stale in [c for c, (at, _) in self.auth_failures.items() if now - at >= self.window_ms]:
                    del self.auth_failures[stale]
            return failures + 1, started + self.window_ms - now

    async def refresh_slot(self, key_id: int, entry: str) -> None:
        with self.lock:
            slots = self.in_flight.get(key_id, {})
            if entry in slots:
                slots[entry] = int(time.monotonic() * 1000) + self.lease_ms

    async def finish(self, key_id: int, entry: str, used: int) -> None:
        with self.lock:
            self.in_flight.get(key_id, {}).pop(entry, None)
            entries = self.windows.get(key_id) or deque()
            for index, (at, member, cost) in enumerate(entries):
                if member == entry:
                    entries[index] = (at, member, min(cost, used))
                    break

    async def release(self, key_id: int, entry: str) -> None:
        with self.lock:
            self.in_flight.get(key_id, {}).pop(entry, None)
            entries = self.windows.get(key_id)
            if entries:
                for item in list(entries):
                    if item[1] == entry:
                        entries.remove(item)
                        break


_redis_limiters = PerEventLoop(lambda: RedisLimiter(settings.REDIS_URL, settings.DOS_AI_RATE_WINDOW_SECONDS))
_memory_limiter: MemoryLimiter | None = None


def get_limiter() -> RedisLimiter | MemoryLimiter:
    """Redis when configured (one limiter per event loop: see dosportal.v1.loops), else process memory."""
    global _memory_limiter
    if redisclient.configured():
        return _redis_limiters.get()
    if _memory_limiter is None:
        _memory_limiter = MemoryLimiter(settings.DOS_AI_RATE_WINDOW_SECONDS)
    return _memory_limiter


async def admit(
    key_id: int, *, rpm: int, tpm: int, cost: int, peek: bool = False, max_concurrency: int = 0
) -> Decision | None:
    """Admit or refuse (with `peek`, only read the window); None when the limiter's store is
    unreachable: fail open, logged. With `max_concurrency`, the call also takes one of the
    key's slots for requests in flight, in the same round trip."""
    try:
        return await get_limiter().admit(
            key_id, rpm=rpm, tpm=tpm, cost=cost, peek=peek, max_concurrency=max_concurrency
        )
    except (redis.exceptions.RedisError, OSError) as error:
        logger.error("rate limiter unavailable, admitting without limits (fail-open): %r", error)
        metrics.limiter_fail_open()
        return None


async def peek(key_id: int, *, rpm: int, tpm: int) -> Decision | None:
    """The current state of a key's window, consuming nothing."""
    return await admit(key_id, rpm=rpm, tpm=tpm, cost=0, peek=True)


async def release(key_id: int, decision: Decision | None) -> None:
    if decision is None or not decision.entry:
        return
    try:
        await get_limiter().release(key_id, decision.entry)
    except Exception as error:  # noqa: BLE001 - a failed release only errs towards stricter limits
        logger.warning("could not release a rate-limit entry: %r", error)


async def finish(key_id: int, decision: Decision | None, used_tokens: int) -> None:
    """A call has ended: its window entry keeps the tokens it used instead of the worst case it
    was admitted at (admission counts the prompt's upper bound and the whole completion budget;
    the window should then show what was spent), and its concurrency slot is freed — one round
    trip for both."""
    if decision is None or not decision.entry:
        return
    try:
        await get_limiter().finish(key_id, decision.entry, max(0, used_tokens))
    except Exception as error:  # noqa: BLE001 - only errs towards stricter limits; a slot's lease ends it
        logger.warning("could not record a call's use in its rate-limit window: %r", error)


def slot_location(key_id: int, decision: Decision | None) -> tuple[str, str]:
    """Where the call's concurrency slot lives in Redis; ("", "") with no slot, or without Redis
    (an in-memory slot dies with its worker)."""
    limiter = get_limiter()
    if decision is None or not decision.slot or not isinstance(limiter, RedisLimiter):
        return "", ""
    return limiter.slot_location(key_id, decision.entry)


async def free_slot(slot_key: str, member: str) -> None:
    """Free the slot of a call whose worker died (see dosportal.v1.holds)."""
    limiter = get_limiter()
    if not slot_key or not isinstance(limiter, RedisLimiter):
        return
    try:
        await limiter.redis.zrem(slot_key, member)
    except (redis.exceptions.RedisError, OSError) as error:  # its lease ends it anyway
        logger.warning("could not free a dead call's concurrency slot: %r", error)


def keep_slot(key_id: int, decision: Decision | None, owner: object) -> asyncio.Task | None:
    """Renew the call's lease on its slot a few times per lease while `owner` (the call's
    object) is alive and the task is not cancelled: a call longer than the lease keeps its
    slot, and only a dead worker's slots expire. Holding `owner` weakly means a call that
    is dropped without ending (a stream never started) stops renewing by itself."""
    if decision is None or not decision.slot:
        return None
    alive = weakref.ref(owner)

    async def renew() -> None:
        interval = settings.DOS_AI_CONCURRENCY_LEASE_SECONDS / 3
        while True:
            await asyncio.sleep(interval)
            if alive() is None:
                return
            try:
                await get_limiter().refresh_slot(key_id, decision.entry)
            except Exception as error:  # noqa: BLE001 - try again at the next interval
                logger.warning("could not renew a concurrency slot: %r", error)

    return asyncio.ensure_future(renew())


def counted_address(client: str) -> str:
    """The client address as the failed-key guard counts it: IPv4 whole, IPv6 by its /64.

    One host (or one customer's network) is usually given a whole IPv6 /64, so counting single
    IPv6 addresses would let one client make 2^64 fresh guesses; the dashboard's throttles
    (accounts.throttle) count the same way."""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client  # "" (peer unknown) or something unparsable: counted as itself
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class AuthFailureGuard:
    """Failed authentications per client address, so wrong keys cannot be tried without limit.

    Each 401 for a missing, malformed, unknown or revoked key counts against the client address
    (IPv4 per address, IPv6 per /64: `counted_address`) in the limiter's store (Redis: shared by
    every worker). Past `DOS_AI_AUTH_FAILURES_PER_MINUTE` in one window the address is blocked
    until the window ends; the block is remembered in process memory.

    The rule while an address is blocked (so one client behind an office NAT cannot lock its
    neighbours out, and a guess still costs nothing):
    - a missing or malformed key, or one with a wrong checksum, is refused with 429 at once —
      no Redis, no database;
    - a well-formed key is looked up as usual (the one SELECT a valid call pays anyway): a key
      that is found is served (or gets its own answer: expired, address not allowed), and one
      that is not found (unknown, revoked) is refused with 429 without counting it again.
    A valid key therefore costs no extra round trip for this guard, from any address, blocked
    or not. What a blocked guesser can still cost is one indexed SELECT per well-formed guess
    (a checksum can be computed by anyone), the same as an unblocked one: a key's 155 random
    bits make guessing hopeless, and the guard is there to keep 401 floods cheap and visible.
    """

    def __init__(self) -> None:
        self.blocked_until: dict[str, float] = {}

    def retry_after(self, client: str) -> int | None:
        """Seconds until a blocked address may try again; None when it is not blocked."""
        client = counted_address(client)
        until = self.blocked_until.get(client)
        if until is None:
            return None
        remaining = until - time.monotonic()
        if remaining <= 0:
            del self.blocked_until[client]
            return None
        return max(1, math.ceil(remaining))

    async def failed(self, client: str) -> int | None:
        """Count a failure; the seconds to wait when the address is now over its limit."""
        client = counted_address(client)
        try:
            failures, reset_ms = await get_limiter().count_auth_failure(client)
        except (redis.exceptions.RedisError, OSError) as error:
            logger.error("rate limiter unavailable, not counting a failed authentication (fail-open): %r", error)
            return None
        if failures <= settings.DOS_AI_AUTH_FAILURES_PER_MINUTE:
            return None
        if len(self.blocked_until) > 100_000:
            self.blocked_until.clear()  # bounded memory; the shared counter still holds the limit
        self.blocked_until[client] = time.monotonic() + max(reset_ms, 0) / 1000
        return max(1, math.ceil(reset_ms / 1000))


auth_failures = AuthFailureGuard()

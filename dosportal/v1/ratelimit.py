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

Without REDIS_URL (the embedded single-process default) the same algorithm runs
in process memory.

Redis unreachable: fail open. The request is admitted without limit headers and
an ERROR is logged for every such request. Rationale: rate limits protect the
fleet from bursts; credit (in PostgreSQL) still protects money, so an outage of
the limiter must not take the whole API down.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass

import redis.asyncio as aioredis
import redis.exceptions
from django.conf import settings

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
    refused_by: str = ""  # "requests" | "tokens" | "tokens_exceed_limit"
    entry: str = ""  # handle for release()

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


# KEYS: requests zset, tokens zset, token-sum string. ARGV: window_ms, rpm, tpm, cost, member, peek.
# With peek = "1" nothing is consumed: the state is only read (for headers on early errors).
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
local cutoff = now - window

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
if refused_by ~= '' then
  return {0, count, sum, reset_of(KEYS[1]), reset_of(KEYS[2]), retry, refused_by}
end

redis.call('ZADD', KEYS[1], now, member)
redis.call('ZADD', KEYS[2], now, member .. ':' .. cost)
sum = sum + cost
redis.call('SET', KEYS[3], sum)
redis.call('PEXPIRE', KEYS[1], window)
redis.call('PEXPIRE', KEYS[2], window)
redis.call('PEXPIRE', KEYS[3], window)
return {1, count + 1, sum, window, window, 0, ''}
"""

# KEYS as above. ARGV: member, cost. Undo an admission (only if still in the window).
_RELEASE_SCRIPT = """
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
local removed_tokens = redis.call('ZREM', KEYS[2], ARGV[1] .. ':' .. ARGV[2])
if removed_tokens == 1 then
  local sum = redis.call('DECRBY', KEYS[3], tonumber(ARGV[2]))
  if sum <= 0 then redis.call('DEL', KEYS[3]) end
end
return removed
"""


REDIS_POOL_SIZE = 32  # connections per process (per event loop)
REDIS_POOL_WAIT = 2.0  # seconds a call may wait for one before failing open


class RedisLimiter:
    def __init__(self, url: str, window_seconds: float):
        self.window_ms = int(window_seconds * 1000)
        # A bounded pool that makes a burst wait for a free connection: redis-py's default pool
        # raises MaxConnectionsError past 100 connections in use, which would fail open (admit
        # without limits) exactly when a burst needs limiting, and a burst of new connections
        # is what times out first on a busy host. One script call holds a connection ~1 ms.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=REDIS_POOL_SIZE,
            timeout=REDIS_POOL_WAIT,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
        )
        self.redis = aioredis.Redis.from_pool(pool)
        self.admit_script = self.redis.register_script(_ADMIT_SCRIPT)
        self.release_script = self.redis.register_script(_RELEASE_SCRIPT)

    @staticmethod
    def _keys(key_id: int) -> list[str]:
        # One hash tag per key keeps the three keys in one slot on Redis Cluster.
        base = f"dosportal:rl:{{{key_id}}}"
        return [f"{base}:req", f"{base}:tok", f"{base}:sum"]

    async def admit(self, key_id: int, *, rpm: int, tpm: int, cost: int, peek: bool = False) -> Decision:
        member = uuid.uuid4().hex
        admitted, count, token_sum, reset_req, reset_tok, retry, refused_by = await self.admit_script(
            keys=self._keys(key_id), args=[self.window_ms, rpm, tpm, cost, member, "1" if peek else "0"]
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
        )

    async def release(self, key_id: int, entry: str) -> None:
        member, cost = entry.split("|")
        await self.release_script(keys=self._keys(key_id), args=[member, cost])


class MemoryLimiter:
    """The same algorithm for one process (the embedded default)."""

    def __init__(self, window_seconds: float):
        self.window_ms = int(window_seconds * 1000)
        self.windows: dict[int, deque[tuple[int, str, int]]] = {}
        self.lock = threading.Lock()

    async def admit(self, key_id: int, *, rpm: int, tpm: int, cost: int, peek: bool = False) -> Decision:
        now = int(time.monotonic() * 1000)
        with self.lock:
            entries = self.windows.setdefault(key_id, deque())
            while entries and entries[0][0] <= now - self.window_ms:
                entries.popleft()
            count = len(entries)
            token_sum = sum(entry[2] for entry in entries)
            reset = (entries[-1][0] + self.window_ms - now) if entries else 0
            if peek:
                return Decision(True, rpm, tpm, rpm - count, tpm - token_sum, reset, reset)
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
            if refused_by:
                return Decision(False, rpm, tpm, rpm - count, tpm - token_sum, reset, reset, retry, refused_by)
            member = uuid.uuid4().hex
            entries.append((now, member, cost))
            return Decision(
                True,
                rpm,
                tpm,
                rpm - count - 1,
                tpm - token_sum - cost,
                self.window_ms,
                self.window_ms,
                entry=member,
            )

    async def release(self, key_id: int, entry: str) -> None:
        with self.lock:
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
    if settings.REDIS_URL:
        return _redis_limiters.get()
    if _memory_limiter is None:
        _memory_limiter = MemoryLimiter(settings.DOS_AI_RATE_WINDOW_SECONDS)
    return _memory_limiter


async def admit(key_id: int, *, rpm: int, tpm: int, cost: int, peek: bool = False) -> Decision | None:
    """Admit or refuse (with `peek`, only read the window); None when the limiter's store is
    unreachable: fail open, logged."""
    try:
        return await get_limiter().admit(key_id, rpm=rpm, tpm=tpm, cost=cost, peek=peek)
    except (redis.exceptions.RedisError, OSError) as error:
        logger.error("rate limiter unavailable, admitting without limits (fail-open): %r", error)
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

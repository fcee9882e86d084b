"""Our keys in our own traffic: a /v1 call whose body holds a key (someone pasted one into a prompt).

The call is served as usual; its log line says `key_in_prompt` (never the key nor its hash),
`dos_ai_keys_seen_in_prompts_total` counts the keys, and each key's owner — whoever sent the
call — is told at most once a day (apikeys.leaks.key_seen_in_prompt: security log, webhook
`api_key.seen_in_prompt`, email).

What it costs an ordinary call: one `b"dos_sk_" in body` on the bytes the gateway already
read (a memchr-speed substring search, a few microseconds on 100 kB; no decoding, no copy).
Only a body that contains the prefix is matched against the key pattern, and only a match
whose checksum is right (apikeys.keys: a typo or an invented key is no key) counts. None of
that does I/O: the metric is a local counter, and the sighting — the key's SHA-256 — is put
in a queue that a background task of the process drains in a worker thread (the ORM is
synchronous), so the lookup, the security log, the webhook's outbox row and the SMTP
exchange never delay an answer.

Bounds: at most MAX_KEYS_PER_BODY keys per body and MAX_PENDING sightings waiting (more are
dropped, with a warning: the metric and the log line still count them); a key dealt with is
remembered per process for a day (RECENT_MAX entries), so a key pasted into every prompt costs
the database nothing after its first sighting, even when Redis (which makes the once-a-day
rule hold across processes) is down. Sightings still queued when a process stops are lost:
the notice is advice, and the next sighting brings it back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
from collections import OrderedDict

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from apikeys.keys import PREFIX, hash_key, is_well_formed
from apikeys.leaks import SEEN_IN_PROMPT_NOTICE_INTERVAL, PromptSighting, key_seen_in_prompt
from dosportal import metrics
from dosportal.v1.store import Caller

logger = logging.getLogger(__name__)

_PREFIX = PREFIX.encode("ascii")
# apikeys.keys.KEY_IN_TEXT on bytes: a key not part of a longer run of key characters.
_KEY_IN_BODY = re.compile(rb"(?<![A-Za-z0-9_])dos_sk_[A-Za-z0-9]{32}(?![A-Za-z0-9])")
MAX_KEYS_PER_BODY = 10
MAX_PENDING = 1000
RECENT_MAX = 10_000
_REMEMBER_SECONDS = SEEN_IN_PROMPT_NOTICE_INTERVAL.total_seconds()

_pending: dict[str, PromptSighting] = {}  # by the key's hash: the first sighting not yet handled
_recent: OrderedDict[str, float] = OrderedDict()  # key hash -> when handled (monotonic), oldest first
_drainer: asyncio.Task[None] | None = None
_dropping = False


def keys_in(body: bytes) -> list[str]:
    """The distinct well-formed keys in `body`, at most MAX_KEYS_PER_BODY."""
    if _PREFIX not in body:  # all an ordinary call ever pays
        return []
    found: list[str] = []
    for match in _KEY_IN_BODY.finditer(body):
        key = match.group().decode("ascii")
        if key not in found and is_well_formed(key):
            found.append(key)
            if len(found) == MAX_KEYS_PER_BODY:
                break
    return found


def scan(body: bytes, caller: Caller, client_ip: str) -> bool:
    """True when `body` holds one of our keys; the owners' notices are queued, not awaited.
    Called from the event loop (dosportal.v1.gateway.proxy) once the caller is known."""
    keys = keys_in(body)
    if not keys:
        return False
    metrics.keys_seen_in_prompt(len(keys))
    now, seen_at = time.monotonic(), dt.datetime.now(dt.UTC)
    for key in keys:
        hashed = hash_key(key)
        if hashed in _pending or _handled_recently(hashed, now):
            continue
        if len(_pending) >= MAX_PENDING:
            _warn_dropping()
            break
        _pending[hashed] = PromptSighting(hashed, caller.owner_id, caller.key_hint, client_ip, seen_at)
    _start_drainer()
    return True


def _handled_recently(hashed: str, now: float) -> bool:
    handled = _recent.get(hashed)
    if handled is None:
        return False
    if now - handled < _REMEMBER_SECONDS:
        return True
    del _recent[hashed]
    return False


def _remember(hashed: str) -> None:
    _recent[hashed] = time.monotonic()
    _recent.move_to_end(hashed)
    while len(_recent) > RECENT_MAX:
        _recent.popitem(last=False)


def _warn_dropping() -> None:
    global _dropping
    if not _dropping:  # once per backlog, not once per call
        logger.warning("keys seen in prompts: %d sightings already queued, dropping more", MAX_PENDING)
    _dropping = True


def _start_drainer() -> None:
    global _drainer
    if _pending and (_drainer is None or _drainer.done()):
        _drainer = asyncio.get_running_loop().create_task(_drain(), name="keys-seen-in-prompts")


async def _drain() -> None:
    """Hand the queued sightings to a worker thread, batch by batch, until none is left."""
    global _dropping
    while _pending:
        batch = list(_pending.values())
        _pending.clear()
        _dropping = False
        handled = await sync_to_async(_notify, thread_sensitive=False)(batch)
        for hashed in handled:
            _remember(hashed)


def _notify(batch: list[PromptSighting]) -> list[str]:
    """The hashes dealt with (notified, or nothing to notify); a sighting that failed (the
    database down) is not remembered, so the key's next sighting tries again."""
    handled = []
    try:
        for sighting in batch:
            try:
                key_seen_in_prompt(sighting)
            except Exception:
                logger.warning("could not report a key seen in a prompt", exc_info=True)
            else:
                handled.append(sighting.hashed_key)
    finally:
        close_old_connections()
    return handled

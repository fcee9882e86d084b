"""Why the gateway's lookup found no usable key: leaked, suspended, or simply unknown.

The gateway asks only after its lookup found no active key (the 401 path), so a valid key's
request never pays for this second query; one indexed probe by hash answers it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.db import DatabaseError, close_old_connections
from django.db.models import Q
from django.utils import timezone

from apikeys.models import ApiKey, RevokedReason

logger = logging.getLogger("apikeys.refusals")


@dataclass(frozen=True, slots=True)
class KeyRefusal:
    leaked_url: str = ""  # revoked because it was found published there
    suspended_reason: str = ""  # suspended (unusual spend) and not revoked: 403, not 401

    @property
    def suspended(self) -> bool:
        return bool(self.suspended_reason)


def _why(hashed_key: str) -> KeyRefusal | None:
    try:
        row = (
            ApiKey.objects.filter(
                Q(hashed_key=hashed_key) | Q(previous_hashed_key=hashed_key, previous_key_expires_at__gt=timezone.now())
            )
            .values_list(
                "revoked_at", "revoked_reason", "leaked_url", "suspended_at", "suspended_reason", "owner__is_active"
            )
            .first()
        )
    except DatabaseError:  # only a better message is lost: the key is refused either way
        logger.warning("could not tell why a key was refused", exc_info=True)
        return None
    finally:
        close_old_connections()
    if row is None:
        return None
    revoked_at, reason, leaked_url, suspended_at, suspended_reason, owner_active = row
    if revoked_at is not None:
        return KeyRefusal(leaked_url=leaked_url) if reason == RevokedReason.LEAKED and leaked_url else None
    if suspended_at is not None and owner_active:
        return KeyRefusal(suspended_reason=suspended_reason or "unusual spend")
    return None


async def why_refused(hashed_key: str) -> KeyRefusal | None:
    return await sync_to_async(_why, thread_sensitive=False)(hashed_key)

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import redis
from django.core.management.base import CommandParser

from accounts.cli import OperatorCommand, checked_int
from billing.services import credit_holds_release_stale
from dosportal import redisclient

logger = logging.getLogger(__name__)

MAX_MINUTES = 10 * 366 * 24 * 60  # ten years


def free_concurrency_slots(calls: list[dict]) -> None:
    """The dead calls' slots under their keys' concurrency caps go with their holds, not when
    their leases run out (only a Redis-backed limiter outlives a worker)."""
    slots = [(call["slot_key"], call["slot_member"]) for call in calls if call.get("slot_key")]
    if not slots or not redisclient.configured():
        return
    client = redisclient.sync_client(socket_timeout=2, socket_connect_timeout=2)
    try:
        for key, member in slots:
            client.zrem(key, member)
    except redis.RedisError as error:  # the leases end them anyway
        logger.warning("could not free the concurrency slots of stale holds: %r", error)
    finally:
        client.close()


class Command(OperatorCommand):
    help = (
        "Settle the holds of calls whose worker died (their heartbeat stopped): each is charged for what "
        "it had delivered by its last heartbeat, and its concurrency slot is freed (run from cron)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than-minutes",
            type=int,
            default=60,
            help="Only holds whose heartbeat stopped this long ago (default 60; a live call renews its "
            "hold every few seconds, so any value of 1 or more never takes a hold in use).",
        )

    def handle(self, *args: Any, older_than_minutes: int, **options: Any) -> None:
        # A hold younger than any request may last belongs to a request still in flight.
        checked_int(older_than_minutes, what="age (--older-than-minutes)", minimum=1, maximum=MAX_MINUTES)
        calls = credit_holds_release_stale(older_than=dt.timedelta(minutes=older_than_minutes))
        free_concurrency_slots(calls)
        released = len(calls)
        self.stdout.write(f"Released {released} stale hold{'s' if released != 1 else ''}.")

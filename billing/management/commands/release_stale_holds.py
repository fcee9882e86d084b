from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import CommandParser

from accounts.cli import OperatorCommand, checked_int
from billing.services import credit_holds_release_stale

MAX_MINUTES = 10 * 366 * 24 * 60  # ten years


class Command(OperatorCommand):
    help = "Release credit held by requests whose worker died before settling (run from cron)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than-minutes",
            type=int,
            default=60,
            help="Only holds older than this (default 60: longer than any request the gateway serves).",
        )

    def handle(self, *args: Any, older_than_minutes: int, **options: Any) -> None:
        # A hold younger than any request may last belongs to a request still in flight.
        checked_int(older_than_minutes, what="age (--older-than-minutes)", minimum=1, maximum=MAX_MINUTES)
        released = credit_holds_release_stale(older_than=dt.timedelta(minutes=older_than_minutes))
        self.stdout.write(f"Released {released} stale hold{'s' if released != 1 else ''}.")

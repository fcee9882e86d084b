"""`manage.py deliver_webhooks`: send every webhook that is due now, then exit (cron catch-up).

The server sends webhooks itself (webhooks.worker); run this from cron every minute where
that is turned off, or as a safety net. It claims deliveries the same way, so it never sends
one that a server process is sending.
"""

from __future__ import annotations

from typing import Any

from accounts.cli import OperatorCommand
from webhooks.delivery import deliver_due


class Command(OperatorCommand):
    help = "Send the webhooks that are due (the server does this itself; this is the cron catch-up)."

    def handle(self, *args: Any, **options: Any) -> None:
        run = deliver_due()
        self.stdout.write(f"Delivered {run.delivered}; {run.failed_attempts} failed attempts will be retried.")

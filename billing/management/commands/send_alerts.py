"""`send_alerts`: e-mail every alert that is due (low credit, keys near their spend limit, weekly summaries), each once.

Run it from cron, e.g. every 5 minutes: `*/5 * * * * cd /srv/dosportal && .venv/bin/python
manage.py send_alerts`. Exits non-zero when an e-mail could not be sent (it is retried on
the next run)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from billing.alerts import alerts_send


class Command(BaseCommand):
    help = "E-mail the alerts that are due: low available credit (once per crossing) and weekly summaries."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            run = alerts_send()
        except OSError as error:  # the mail server cannot be reached at all
            raise CommandError(f"cannot reach the mail server: {error}") from None
        self.stdout.write(
            f"Low-balance alerts sent: {run.low_balance_sent}, re-armed: {run.low_balance_rearmed}; "
            f"key spend alerts sent: {run.key_spend_sent}; weekly summaries sent: {run.weekly_sent}."
        )
        if run.failed:
            raise CommandError(f"{run.failed} alert(s) could not be sent; they are retried on the next run")

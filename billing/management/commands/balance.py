"""`balance EMAIL`: the balance, the credit held by requests in flight, the ledger sum, and
whether they agree. Exits with an error when they do not, so monitoring can run it.

Settlements that wait in this host's settlement spool (`DOS_AI_SPOOL_DIR`, dosportal.v1.settler)
are listed: those kept while PostgreSQL was away are written within seconds of its return; one
the database refused waits until an operator looks (its error is in the workers' log), and
fails the command."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError
from django.db import transaction
from django.db.models import Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.cli import AccountCommand
from accounts.models import User
from billing.models import CreditAccount, CreditHold
from billing.money import format_usd
from billing.selectors import ledger_sum_micros

# No request holds credit this long (streams included, see DOS_AI_UPSTREAM_TIMEOUT); an older
# hold is a settlement that has not reached the database yet, or a dead worker's.
STUCK_AFTER = dt.timedelta(minutes=15)


class Command(AccountCommand):
    help = "Print an account's balance, credit held by requests in flight and ledger sum (USD, 6 decimals)."

    def handle_account(self, user: User, **options: Any) -> None:
        # Every balance change and hold locks the account row, so holding that lock while
        # summing gives one consistent picture even while requests are being settled.
        with transaction.atomic():
            account = CreditAccount.objects.select_for_update().filter(user=user).first()
            ledger_micros = ledger_sum_micros(user=user)
            holds_micros = CreditHold.objects.filter(user=user).aggregate(total=Coalesce(Sum("amount_micros"), 0))[
                "total"
            ]
            stuck = CreditHold.objects.filter(user=user, created_at__lt=timezone.now() - STUCK_AFTER).count()
        waiting, refused = _spooled_for(user)
        balance_micros = account.balance_micros if account else 0
        held_micros = account.held_micros if account else 0

        def usd(micros: int) -> str:
            return f"{format_usd(micros, 6):>16}"

        self.stdout.write(f"Account:     {user.email}{'' if account else ' (no credit account opened yet)'}")
        self.stdout.write(f"Balance:     {usd(balance_micros)}")
        self.stdout.write(f"Held:        {usd(held_micros)}  (requests in flight)")
        self.stdout.write(f"Available:   {usd(balance_micros - held_micros)}")
        self.stdout.write(f"Ledger sum:  {usd(ledger_micros)}")
        if waiting:
            holds = ", ".join(str(settlement.hold_id) for settlement in waiting)
            self.stdout.write(
                f"Spooled:     {usd(sum(settlement.cost_micros for settlement in waiting))}  "
                f"({len(waiting)} settlement{'s' if len(waiting) != 1 else ''} waiting for the database: "
                f"hold{'s' if len(waiting) != 1 else ''} {holds})"
            )

        problems = []
        if balance_micros != ledger_micros:
            problems.append(
                f"the balance differs from the ledger sum by {format_usd(balance_micros - ledger_micros, 6)}"
            )
        if held_micros != holds_micros:
            problems.append(
                f"the held credit differs from the open holds ({format_usd(holds_micros, 6)}) "
                f"by {format_usd(held_micros - holds_micros, 6)}"
            )
        if stuck:
            problems.append(
                f"{stuck} hold{'s' if stuck != 1 else ''} older than {STUCK_AFTER.seconds // 60} minutes "
                "(a settlement waiting for the database, or a worker that died: see release_stale_holds)"
            )
        if refused:
            problems.append(
                f"the database refused the settlement of hold{'s' if len(refused) != 1 else ''} "
                f"{', '.join(str(hold_id) for hold_id in sorted(refused))}, which waits in the spool "
                "(see the workers' log for the error)"
            )
        if problems:
            self.stdout.write(self.style.ERROR("MISMATCH: " + "; ".join(problems) + "."))
            raise CommandError(
                "The balance does not agree with the ledger, credit is stuck in old holds, "
                "or the database refused a settlement."
            )
        self.stdout.write(self.style.SUCCESS("OK: the balance equals the ledger sum."))


def _spooled_for(user: User) -> tuple[list[Any], set[int]]:
    """This account's settlements waiting in this host's spool, and the refused ones among them."""
    from dosportal.v1.settler import spooled

    waiting, refused = spooled(Path(settings.DOS_AI_SPOOL_DIR))
    mine = [settlement for settlement in waiting if settlement.user_id == user.pk]
    return mine, refused & {settlement.hold_id for settlement in mine}

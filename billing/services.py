"""Every write to credit: grants, reservations at admission, settlement of usage.

Invariants, under any concurrency and any number of processes (PostgreSQL row
locks and conditional UPDATEs, never read-then-write in Python without a lock):

- the balance never goes below zero (a CHECK constraint backs this up);
- the balance equals the sum of the ledger: each change is one LedgerEntry
  written in the same transaction as the balance update;
- each admitted request settles exactly once (its CreditHold row is deleted in
  the settling transaction; a second settle finds no hold and does nothing);
- a request that failed upstream is not charged (settled with cost 0).
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import transaction
from django.db.models import F

from accounts.models import User
from billing.models import CreditAccount, CreditHold, LedgerEntry, UsageRecord
from billing.money import usd_to_micros
from billing.settlement import Settlement


class CreditError(ValueError):
    """A credit change that would break an invariant; the message is for people."""


def credit_account_open(*, user: User) -> CreditAccount:
    """Open the account's credit with the starting grant (idempotent)."""
    with transaction.atomic():
        account, created = CreditAccount.objects.get_or_create(user=user)
        grant = usd_to_micros(settings.DOS_AI_SIGNUP_CREDIT_USD)
        if created and grant > 0:
            account = CreditAccount.objects.select_for_update().get(pk=account.pk)
            _apply(account, amount_micros=grant, kind=LedgerEntry.Kind.GRANT, note="Sign-up credit")
    return account


def credits_grant(
    *,
    user: User,
    amount_micros: int,
    kind: str = LedgerEntry.Kind.GRANT,
    note: str = "",
    created_by: User | None = None,
) -> LedgerEntry:
    """Add (or, negative, remove) credit. Refused if the balance would drop below zero
    or below the credit held by requests in flight."""
    if amount_micros == 0:
        raise CreditError("The amount must not be zero.")
    with transaction.atomic():
        CreditAccount.objects.get_or_create(user=user)
        account = CreditAccount.objects.select_for_update().get(user=user)
        if account.balance_micros + amount_micros < account.held_micros:
            raise CreditError(
                "This adjustment would take the balance below zero"
                + (" (or below the credit held by requests in flight)." if account.held_micros else ".")
            )
        return _apply(account, amount_micros=amount_micros, kind=kind, note=note, created_by=created_by)


def _apply(
    account: CreditAccount,
    *,
    amount_micros: int,
    kind: str,
    note: str,
    created_by: User | None = None,
    usage: UsageRecord | None = None,
) -> LedgerEntry:
    """Caller holds the row lock on `account` inside a transaction."""
    account.balance_micros += amount_micros
    account.save(update_fields=["balance_micros", "updated_at"])
    return LedgerEntry.objects.create(
        user_id=account.user_id,
        kind=kind,
        amount_micros=amount_micros,
        balance_after_micros=account.balance_micros,
        note=note[:255],
        usage=usage,
        created_by=created_by,
    )


def credit_reserve(*, user_id: int, amount_micros: int, request_id: str) -> int | None:
    """Hold `amount_micros` for a request; None when the available credit cannot cover it.

    One conditional UPDATE decides atomically, so concurrent requests on any
    number of processes can never hold more than the balance.
    """
    with transaction.atomic():
        reserved = CreditAccount.objects.filter(
            user_id=user_id, balance_micros__gte=F("held_micros") + amount_micros
        ).update(held_micros=F("held_micros") + amount_micros)
        if not reserved:
            return None
        hold = CreditHold.objects.create(user_id=user_id, amount_micros=amount_micros, request_id=request_id)
    return hold.pk


def usage_settle(*, settlement: Settlement) -> UsageRecord | None:
    """Release the hold, charge the call's cost, write the usage record and its ledger entry.

    The ORM form of the one-statement settlement in `billing.hotpath` (used on
    SQLite, by tests and by tools; both are tested against the same cases).
    The charge is capped at the credit this request may use (its own hold plus
    whatever is not held by others): if the upstream used more tokens than
    admission estimated and the account cannot cover it, the balance stops at
    zero and the difference is written off, never taken from other requests' holds.
    Returns None if the hold was already settled (exactly-once).
    """
    with transaction.atomic():
        hold = CreditHold.objects.select_for_update().filter(pk=settlement.hold_id).first()
        if hold is None:
            return None
        account = CreditAccount.objects.select_for_update().get(user_id=hold.user_id)
        spendable = account.balance_micros - (account.held_micros - hold.amount_micros)
        charge = max(0, min(settlement.cost_micros, spendable))
        account.held_micros -= hold.amount_micros
        account.save(update_fields=["held_micros", "updated_at"])
        hold.delete()
        record = UsageRecord.objects.create(
            request_id=settlement.request_id,
            client_request_id=settlement.client_request_id,
            user_id=hold.user_id,
            api_key_id=settlement.api_key_id,
            endpoint=settlement.endpoint,
            model=settlement.model,
            prompt_tokens=settlement.prompt_tokens,
            completion_tokens=settlement.completion_tokens,
            cost_micros=charge,
            status_code=settlement.status_code,
            streamed=settlement.streamed,
            latency_ms=settlement.latency_ms,
            created_at=settlement.started_at,
        )
        if charge:
            _apply(account, amount_micros=-charge, kind=LedgerEntry.Kind.USAGE, note=settlement.note, usage=record)
    return record


def credit_holds_release_stale(*, older_than: dt.timedelta) -> int:
    """Release holds left by requests whose worker died before settling; returns how many.

    A request settles its own hold when it ends, however it ends, so a hold older
    than the longest request the deployment allows belongs to a process that
    crashed or was killed. Its credit is released without a charge (what the dead
    request delivered is unknown). Run `manage.py release_stale_holds` from cron.
    """
    from django.utils import timezone

    released = 0
    cutoff = timezone.now() - older_than
    for hold_id in CreditHold.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True):
        with transaction.atomic():
            hold = CreditHold.objects.select_for_update().filter(pk=hold_id).first()
            if hold is None:  # settled meanwhile
                continue
            CreditAccount.objects.filter(user_id=hold.user_id).update(held_micros=F("held_micros") - hold.amount_micros)
            hold.delete()
            released += 1
    return released

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
import enum
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from accounts.models import User
from billing.models import CreditAccount, CreditHold, LedgerEntry, UsageRecord
from billing.money import usd_to_micros
from billing.selectors import stale_holds
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
        entry = _apply(account, amount_micros=amount_micros, kind=kind, note=note, created_by=created_by)
        if amount_micros > 0:
            from webhooks.services import webhook_event_emit

            webhook_event_emit(
                owner_id=user.pk,
                event_type="credit.granted",
                data={"amount_micros": amount_micros, "balance_micros": entry.balance_after_micros, "kind": kind},
            )
        return entry


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


class Refusal(enum.Enum):
    """Why a reservation was refused: the key's own spend limit, or the account's credit."""

    KEY_SPEND_LIMIT = "key_spend_limit"
    BALANCE = "balance"


@dataclass(frozen=True, slots=True)
class Refused:
    """A refused reservation, with what is left of the limit that refused it (the key's spend
    limit this period, or the account's available credit), for the 402's message."""

    why: Refusal
    left_micros: int


def credit_left(*, why: Refusal, user_id: int, api_key_id: int, spend_period_start: dt.datetime | None) -> int:
    """What is left of the limit that refused a reservation (the ORM path's twin of the figures
    RESERVE_SQL answers with)."""
    from apikeys.models import ApiKey

    if why is Refusal.KEY_SPEND_LIMIT:
        key = ApiKey.objects.filter(pk=api_key_id).first()
        if key is None or key.spend_limit_micros is None:
            return 0
        current = spend_period_start is not None and key.spend_period_start == spend_period_start
        return key.spend_limit_micros - (key.spend_spent_micros if current else 0) - key.spend_held_micros
    account = CreditAccount.objects.filter(user_id=user_id).first()
    return account.available_micros if account is not None else 0


def credit_reserve(*, user_id: int, amount_micros: int, request_id: str) -> int | None:
    """Hold `amount_micros` for a request (no key limit involved); None when the available
    credit cannot cover it."""
    reserved = credit_reserve_for_key(user_id=user_id, amount_micros=amount_micros, request_id=request_id)
    return None if isinstance(reserved, Refusal) else reserved


def credit_reserve_for_key(
    *,
    user_id: int,
    amount_micros: int,
    request_id: str,
    api_key_id: int | None = None,
    spend_period_start: dt.datetime | None = None,
    call: dict | None = None,
) -> int | Refusal:
    """Hold `amount_micros` for a request: the hold's id, or why it was refused.

    The ORM form of `billing.hotpath.RESERVE_SQL`, with the same rules: the account row is
    locked, then (for a key with a spend limit, `spend_period_start` given) the key row; the
    key's limit is checked first (its spend this period plus what its calls in flight hold),
    then the available credit; both are held together or nothing is written. Concurrent
    requests on any number of processes can never hold more than the balance, nor take a key
    past its limit.
    """
    from apikeys.models import ApiKey

    with transaction.atomic():
        account = CreditAccount.objects.select_for_update().filter(user_id=user_id).first()
        if account is None:
            return Refusal.BALANCE
        key = None
        if spend_period_start is not None and api_key_id is not None:
            key = (
                ApiKey.objects.select_for_update()
                .filter(pk=api_key_id, spend_limit_micros__isnull=False)
                .only("spend_limit_micros", "spend_period_start", "spend_spent_micros", "spend_held_micros")
                .first()
            )
        if key is not None:
            current = key.spend_period_start is not None and key.spend_period_start >= spend_period_start
            stale = key.spend_period_start is not None and key.spend_period_start > spend_period_start
            used = (key.spend_spent_micros if current else 0) + key.spend_held_micros
            if stale or used + amount_micros > key.spend_limit_micros:
                return Refusal.KEY_SPEND_LIMIT
        if account.balance_micros - account.held_micros < amount_micros:
            return Refusal.BALANCE
        CreditAccount.objects.filter(user_id=user_id).update(held_micros=F("held_micros") + amount_micros)
        if key is not None:
            ApiKey.objects.filter(pk=key.pk).update(
                spend_spent_micros=key.spend_spent_micros if current else 0,
                spend_period_start=spend_period_start,
                spend_held_micros=F("spend_held_micros") + amount_micros,
            )
        hold = CreditHold.objects.create(
            user_id=user_id,
            amount_micros=amount_micros,
            request_id=request_id,
            limited_key_id=key.pk if key is not None else None,
            call=call,
            heartbeat_at=timezone.now(),
        )
    return hold.pk


def usage_settle(*, settlement: Settlement) -> UsageRecord | None:
    """Release the hold, charge the call's cost, write the usage record and its ledger entry.

    The ORM form of the one-statement settlement in `billing.hotpath` (used on
    SQLite, by tests and by tools; both are tested against the same cases).
    The charge is capped at the hold: admission checked the key's spend limit and the
    account's credit against it, so no report of the upstream's can take either past its
    limit (the hold is an upper bound of the call's cost: dosportal.v1.tokens). Returns
    None if the hold was already settled (exactly-once).
    """
    with transaction.atomic():
        hold = CreditHold.objects.select_for_update().filter(pk=settlement.hold_id).first()
        if hold is None:
            return None
        account = CreditAccount.objects.select_for_update().get(user_id=hold.user_id)
        spendable = account.balance_micros - (account.held_micros - hold.amount_micros)
        charge = max(0, min(settlement.cost_micros, hold.amount_micros, spendable))
        account.held_micros -= hold.amount_micros
        account.save(update_fields=["held_micros", "updated_at"])
        _key_spend_settle(
            api_key_id=settlement.api_key_id,
            released=hold.amount_micros,
            limited=hold.limited_key_id is not None,
            charge=charge,
            started_at=settlement.started_at,
        )
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


def _key_spend_settle(*, api_key_id: int, released: int, limited: bool, charge: int, started_at: dt.datetime) -> None:
    """The key's side of a settlement (the account row is already locked, as in SETTLE_SQL):
    release what the call held against the key's limit and count its charge in the key's
    current period, if the call started in it."""
    from apikeys.models import ApiKey

    key = (
        ApiKey.objects.select_for_update()
        .filter(pk=api_key_id)
        .only("spend_limit_micros", "spend_period_start", "spend_held_micros")
        .first()
    )
    if key is None or (not limited and key.spend_limit_micros is None):
        return
    counted = key.spend_period_start is not None and key.spend_period_start <= started_at
    ApiKey.objects.filter(pk=api_key_id).update(
        spend_held_micros=Greatest(Value(0), F("spend_held_micros") - released),
        spend_spent_micros=F("spend_spent_micros") + (charge if counted else 0),
    )


def credit_holds_heartbeat(*, progress: list[tuple[int, int, int]]) -> None:
    """The ORM form of `billing.hotpath.HEARTBEAT_SQL`: (hold id, delivered prompt, completion)."""
    now = timezone.now()
    with transaction.atomic():
        for hold_id, prompt_tokens, completion_tokens in progress:
            CreditHold.objects.filter(pk=hold_id).update(
                heartbeat_at=now,
                delivered_prompt_tokens=prompt_tokens,
                delivered_completion_tokens=completion_tokens,
            )


def stale_hold_settlement(
    *, hold_id: int, call: dict | None, prompt_tokens: int, completion_tokens: int, latency_ms: int
) -> Settlement | None:
    """How a hold whose worker died is settled: charged for what its last heartbeat reported;
    a hold from before heartbeats (no `call`) has nothing to charge."""
    if not call:
        return None
    return Settlement.recovered(
        hold_id=hold_id,
        call=call,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        latency_ms=latency_ms,
    )


def credit_holds_release_stale(*, older_than: dt.timedelta) -> list[dict]:
    """Settle the holds whose worker stopped renewing them `older_than` ago; returns their
    `call` records (each names the concurrency slot the dead call still occupies).

    A call's worker renews its hold every few seconds (dosportal.v1.holds), so a hold in use
    is never taken, however long its call runs. A hold whose heartbeat stopped belongs to a
    worker that was killed or a host that was lost: it is charged for what the call had
    delivered by its last heartbeat (never more than the hold), written exactly once (the
    settlement deletes the hold; a late settlement by a worker that was only slow is then a
    no-op). A hold from before heartbeats existed is released without a charge.
    """
    released: list[dict] = []
    for hold in stale_holds(older_than=older_than):
        latency_ms = int((hold.seen - hold.created_at).total_seconds() * 1000)
        settlement = stale_hold_settlement(
            hold_id=hold.pk,
            call=hold.call,
            prompt_tokens=hold.delivered_prompt_tokens,
            completion_tokens=hold.delivered_completion_tokens,
            latency_ms=latency_ms,
        )
        if settlement is not None:
            if usage_settle(settlement=settlement) is not None:
                released.append(hold.call)
            continue
        with transaction.atomic():
            locked = CreditHold.objects.select_for_update().filter(pk=hold.pk).first()
            if locked is None:  # settled meanwhile
                continue
            CreditAccount.objects.filter(user_id=locked.user_id).update(
                held_micros=F("held_micros") - locked.amount_micros
            )
            if locked.limited_key_id:
                from apikeys.models import ApiKey

                ApiKey.objects.filter(pk=locked.limited_key_id).update(
                    spend_held_micros=Greatest(Value(0), F("spend_held_micros") - locked.amount_micros)
                )
            locked.delete()
            released.append({})
    return released

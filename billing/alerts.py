"""E-mail alerts: low available credit and a key at 80% / 100% of its spend limit (once per
crossing), and an opt-in weekly usage summary.

Sent by `manage.py send_alerts`, run from cron (every 5 minutes is plenty), not in-line after
settlement: settlement is on the /v1 hot path, where an SMTP round trip (or an SMTP outage)
must never add latency or fail a served call, and the crossing is a property of the balance,
not of one request — a batch reads it once per account and cannot flood anyone.

Exactly once per crossing, even with two cron runs at once: the AlertState row is inserted in
the same transaction that sends the mail. A second run waits on the unique index and then sees
the row; a failed send rolls the row back, so the next run tries again.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.db import transaction
from django.db.models import Count, F, QuerySet, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import User
from apikeys.models import ApiKey
from billing.models import AlertSettings, AlertState, CreditAccount
from billing.money import format_usd
from billing.selectors import UsageWindow, usage_records, usage_totals_in

logger = logging.getLogger(__name__)

# Re-arm the low-balance alert only once the credit is 10% above the threshold again, so a
# hold that comes and goes between two runs cannot make the alert flap: available × 10 must
# reach threshold × 11 (integers, like all money here).
REARM_TENTHS = 11
SUMMARY_TOP_KEYS = 5


@dataclass(frozen=True)
class AlertRun:
    """What one run did: alerts sent of each kind, low-balance alerts re-armed, sends that failed."""

    low_balance_sent: int
    low_balance_rearmed: int
    key_spend_sent: int
    weekly_sent: int
    failed: int
    unusual_spend_sent: int = 0  # apikeys.unusual: crossings alerted (and keys suspended) this run


@dataclass(frozen=True)
class Due:
    """An alert that is due: to whom, its kind and subject (once per user, kind and subject), the
    mail, and how the log names it should it fail."""

    user: User
    kind: str
    subject: str
    message: EmailMessage
    about: str
    webhook: tuple[str, dict[str, object]] | None = None  # (event type, data), emitted with the record


def _accounts_with_thresholds() -> QuerySet[CreditAccount]:
    """Every active account's credit, with `available`, `threshold` and `enabled` annotated."""
    return CreditAccount.objects.filter(user__is_active=True).annotate(
        available=F("balance_micros") - F("held_micros"),
        threshold=Coalesce(
            "user__alert_settings__low_balance_threshold_micros", Value(AlertSettings.DEFAULT_LOW_BALANCE_MICROS)
        ),
        enabled=Coalesce("user__alert_settings__low_balance_enabled", Value(True)),
    )


def _site_link(path: str) -> str:
    return f"{settings.DOS_AI_SITE_URL}{path}" if settings.DOS_AI_SITE_URL else ""


def low_balance_message(*, user: User, available_micros: int, threshold_micros: int) -> EmailMessage:
    link = _site_link("/billing/")
    body = "\n".join(
        [
            "Hello,",
            "",
            f"the available credit of your DOS AI account {user.email} is {format_usd(available_micros, 6)},",
            f"below the {format_usd(threshold_micros)} you asked to be warned at.",
            "",
            "When it cannot cover a request, the API answers 402 insufficient_balance.",
            f"To add credit, see Billing in your dashboard{': ' + link if link else ''}.",
            "",
            "You get this e-mail once each time your credit falls below the threshold.",
            f"Change or turn off alerts in Settings{': ' + _site_link('/settings/') if link else ''}.",
        ]
    )
    return EmailMessage(
        subject=f"DOS AI: your available credit is below {format_usd(threshold_micros)}",
        body=body,
        to=[user.email],
    )


def _send_once(
    *,
    user: User,
    kind: str,
    subject: str,
    message: EmailMessage,
    connection: BaseEmailBackend,
    webhook: tuple[str, dict[str, object]] | None = None,
) -> bool:
    """Record the alert and send it in one transaction; False when it was already recorded
    (another run got there first). A failed send raises and leaves nothing recorded (nor the
    alert's webhook event, queued in the same transaction)."""
    with transaction.atomic():
        _state, created = AlertState.objects.get_or_create(user=user, kind=kind, subject=subject)
        if not created:
            return False
        if webhook is not None:
            from webhooks.services import webhook_event_emit

            webhook_event_emit(owner_id=user.pk, event_type=webhook[0], data=webhook[1])
        message.connection = connection
        message.send()
    return True


def _send_all(due: Iterable[Due], *, connection: BaseEmailBackend) -> tuple[int, int]:
    """Send each due alert once: how many were sent and how many failed. A failure is logged and
    left for the next run, and does not stop the others."""
    sent = failed = 0
    for alert in due:
        try:
            sent += _send_once(
                user=alert.user,
                kind=alert.kind,
                subject=alert.subject,
                message=alert.message,
                connection=connection,
                webhook=alert.webhook,
            )
        except Exception:  # one alert's failure must not stop the others (logged, retried)
            logger.exception("%s not sent; the next run retries", alert.about)
            failed += 1
    return sent, failed


def low_balance_rearm() -> int:
    """Re-arm, in one statement, the low-balance alert of every account back above its threshold
    (with the margin) or that turned it off; how many were re-armed."""
    still_low = (
        _accounts_with_thresholds()
        .annotate(available_tenths=F("available") * 10)
        .filter(enabled=True, available_tenths__lt=F("threshold") * REARM_TENTHS)
    )
    rearmed, _ = (
        AlertState.objects.filter(kind=AlertState.Kind.LOW_BALANCE)
        .exclude(user_id__in=still_low.values("user_id"))
        .delete()
    )
    return rearmed


def low_balance_due() -> Iterator[Due]:
    already = AlertState.objects.filter(kind=AlertState.Kind.LOW_BALANCE).values("user_id")
    below = _accounts_with_thresholds().filter(enabled=True, available__lt=F("threshold")).exclude(user_id__in=already)
    for account in below.select_related("user"):
        message = low_balance_message(
            user=account.user, available_micros=account.available, threshold_micros=account.threshold
        )
        data = {"available_micros": account.available, "threshold_micros": account.threshold}
        yield Due(
            account.user,
            AlertState.Kind.LOW_BALANCE,
            "",
            message,
            f"low-balance alert for user {account.user_id}",
            ("balance.low", data),
        )


def _last_week(today: dt.date) -> tuple[dt.date, dt.date, str]:
    """Monday and Sunday of the ISO week before `today`'s, and its name ("2026-W47")."""
    monday = today - dt.timedelta(days=today.weekday() + 7)
    year, week, _ = monday.isocalendar()
    return monday, monday + dt.timedelta(days=6), f"{year}-W{week:02d}"


def weekly_summary_message(*, user: User, first: dt.date, last: dt.date) -> EmailMessage:
    window = UsageWindow(first_day=first, last_day=last)
    totals = usage_totals_in(user=user, window=window)
    by_key = (
        usage_records(user=user, window=window)
        .values("api_key__name", "api_key__hint")
        .annotate(requests=Count("id"), cost=Coalesce(Sum("cost_micros"), 0))
        .order_by("-cost", "-requests", "api_key__name")[:SUMMARY_TOP_KEYS]
    )
    account = CreditAccount.objects.filter(user=user).first()
    lines = [
        "Hello,",
        "",
        f"your DOS AI usage from {first:%a %b} {first.day} to {last:%a %b} {last.day}, {last.year} (UTC):",
        "",
        f"  Requests: {totals.requests:,}" + (f" ({totals.failed:,} failed)" if totals.failed else ""),
        f"  Tokens:   {totals.tokens:,}",
        f"  Cost:     {format_usd(totals.cost_micros, 6)}",
    ]
    if by_key:
        lines += ["", "By API key:"]
        for row in by_key:
            key = f"{row['api_key__name']} ({row['api_key__hint']})"
            lines.append(f"  {key}: {row['requests']:,} requests, {format_usd(row['cost'], 6)}")
    if account is not None:
        lines += ["", f"Available credit now: {format_usd(account.available_micros, 6)}"]
    link = _site_link("/usage/")
    lines += ["", f"Details on the usage page{': ' + link if link else ''}. Turn this summary off in Settings."]
    return EmailMessage(
        subject=f"DOS AI: your usage for the week of {first:%b} {first.day}",
        body="\n".join(lines),
        to=[user.email],
    )


def weekly_summaries_due(*, today: dt.date) -> Iterator[Due]:
    first, last, week = _last_week(today)
    done = AlertState.objects.filter(kind=AlertState.Kind.WEEKLY_SUMMARY, subject=week).values("user_id")
    users = User.objects.filter(is_active=True, alert_settings__weekly_summary_enabled=True).exclude(pk__in=done)
    for user in users:
        message = weekly_summary_message(user=user, first=first, last=last)
        yield Due(user, AlertState.Kind.WEEKLY_SUMMARY, week, message, f"weekly summary for user {user.pk}")


def key_spend_message(*, api_key: ApiKey, spent_micros: int, limit_micros: int, reached: bool) -> EmailMessage:
    period = "in total" if api_key.spend_period == "total" else f"this {api_key.spend_period} (UTC)"
    if reached:
        subject = f"DOS AI: key “{api_key.name}” reached its spend limit"
        what = (
            "Its requests are now refused with 402 (key_spend_limit_exceeded) until the limit resets or you raise it."
        )
    else:
        subject = f"DOS AI: key “{api_key.name}” is at 80% of its spend limit"
        what = "When it reaches the limit, its requests are refused with 402 until the limit resets or you raise it."
    link = _site_link("/keys/")
    body = (
        f"Your API key “{api_key.name}” ({api_key.hint}) has spent {format_usd(spent_micros, 2)} of its "
        f"{format_usd(limit_micros, 2)} limit {period}.\n\n{what}\n\n"
        f"Change the key's settings on the API keys page{f': {link}' if link else ''}.\n"
        "You get this once per key and period; turn these e-mails off in your settings."
    )
    return EmailMessage(subject, body, to=[api_key.owner.email])


def key_spend_due(*, now: dt.datetime) -> Iterator[Due]:
    """80% and 100% of a key's spend limit, once per key, threshold and period."""
    from apikeys.limits import period_start

    keys = (
        ApiKey.objects.active()
        .filter(spend_limit_micros__gt=0, owner__is_active=True, spend_spent_micros__gt=0)
        .exclude(owner__alert_settings__key_spend_enabled=False)
        .select_related("owner")
    )
    for api_key in keys:
        limit, spent = api_key.spend_limit_micros, api_key.spent_this_period_micros(now)
        if spent * 10 < limit * 8:
            continue
        reached = spent >= limit
        kind = AlertState.Kind.KEY_SPEND_100 if reached else AlertState.Kind.KEY_SPEND_80
        subject = f"{api_key.pk}@{period_start(api_key.spend_period, now).date().isoformat()}"
        if api_key.spend_period == "total":
            subject = f"{api_key.pk}@total"
        if AlertState.objects.filter(user=api_key.owner, kind=kind, subject=subject).exists():
            continue
        message = key_spend_message(api_key=api_key, spent_micros=spent, limit_micros=limit, reached=reached)
        webhook = None
        if reached:
            webhook = (
                "api_key.spend_limit_reached",
                {"id": api_key.pk, "name": api_key.name, "hint": api_key.hint, "limit_micros": limit,
                 "spent_micros": spent, "period": api_key.spend_period},
            )  # fmt: skip
        yield Due(api_key.owner, kind, subject, message, f"spend alert for key {api_key.pk}", webhook)


def alerts_send(*, today: dt.date | None = None, now: dt.datetime | None = None) -> AlertRun:
    """Send every alert that is due, each once. Safe to run as often as you like."""
    from apikeys.unusual import unusual_spend_check

    now = now or timezone.now()
    today = today or now.astimezone(dt.UTC).date()
    unusual = unusual_spend_check(now=now)
    with get_connection() as connection:
        rearmed = low_balance_rearm()
        low_balance_sent, low_balance_failed = _send_all(low_balance_due(), connection=connection)
        key_spend_sent, key_spend_failed = _send_all(key_spend_due(now=timezone.now()), connection=connection)
        weekly_sent, weekly_failed = _send_all(weekly_summaries_due(today=today), connection=connection)
    return AlertRun(
        low_balance_sent=low_balance_sent,
        low_balance_rearmed=rearmed,
        key_spend_sent=key_spend_sent,
        weekly_sent=weekly_sent,
        failed=low_balance_failed + key_spend_failed + weekly_failed,
        unusual_spend_sent=unusual.alerted,
    )

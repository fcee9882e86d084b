"""Read queries for the usage and billing pages.

Every function takes the user explicitly and filters by it first, so a page can
only ever aggregate the signed-in account's own rows. Aggregation happens in
PostgreSQL (one GROUP BY per table); Python only fills in the days without usage.

Days are UTC calendar days (TIME_ZONE is UTC): "the last 30 days" is today and
the 29 days before it.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from django.core.paginator import Page, Paginator
from django.db.models import Count, F, Max, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from accounts.models import User
from apikeys.models import ApiKey
from billing.models import AlertSettings, CreditAccount, CreditHold, LedgerEntry, ServedModel, UsageRecord

WINDOW_DAYS = 30
LEDGER_PAGE_SIZE = 25
# A day is a spike when it is at least SPIKE_FACTOR times the typical day (the
# median of the other days with usage). Needs MIN_BASELINE_DAYS such days: with
# less history there is no "typical" to compare against, and flagging a user's
# second day ever would be noise, not a warning.
SPIKE_FACTOR = 3
MIN_BASELINE_DAYS = 3

METRICS = ("requests", "tokens", "cost_micros")


@dataclass(frozen=True)
class UsageWindow:
    first_day: dt.date
    last_day: dt.date

    @property
    def starts_at(self) -> dt.datetime:
        return dt.datetime.combine(self.first_day, dt.time.min, tzinfo=dt.UTC)

    @property
    def ends_at(self) -> dt.datetime:
        return dt.datetime.combine(self.last_day + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)

    @property
    def days(self) -> list[dt.date]:
        return [
            self.first_day + dt.timedelta(days=offset) for offset in range((self.last_day - self.first_day).days + 1)
        ]


@dataclass
class DayUsage:
    day: dt.date
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micros: int = 0
    failed: int = 0
    # Metric names ("requests", "tokens", "cost_micros") on which this day is a spike.
    spikes: set[str] = field(default_factory=set)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def is_spike(self) -> bool:
        return bool(self.spikes)

    def value(self, metric: str) -> int:
        return getattr(self, metric)


@dataclass
class UsageTotals:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micros: int = 0
    failed: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class KeyUsage:
    api_key: ApiKey
    totals: UsageTotals
    daily: list[DayUsage]
    share_of_cost: float  # 0..1, for a proportion bar only; money stays integer
    peak: DayUsage | None

    @property
    def has_spike(self) -> bool:
        return any(day.is_spike for day in self.daily)


@dataclass
class ModelUsage:
    model: str
    totals: UsageTotals


def usage_window(*, today: dt.date | None = None, days: int = WINDOW_DAYS) -> UsageWindow:
    today = today or timezone.now().astimezone(dt.UTC).date()
    return UsageWindow(first_day=today - dt.timedelta(days=days - 1), last_day=today)


def usage_records(*, user: User, window: UsageWindow, api_key: ApiKey | None = None) -> QuerySet[UsageRecord]:
    """The user's usage records in the window (of one of its keys, if given), unordered."""
    records = UsageRecord.objects.filter(
        user=user, created_at__gte=window.starts_at, created_at__lt=window.ends_at
    ).order_by()
    if api_key is not None:
        records = records.filter(api_key=api_key)
    return records


_SUMS = {
    "requests": Count("id"),
    "prompt_tokens": Coalesce(Sum("prompt_tokens"), 0),
    "completion_tokens": Coalesce(Sum("completion_tokens"), 0),
    "cost_micros": Coalesce(Sum("cost_micros"), 0),
    "failed": Count("id", filter=Q(status_code__gte=400)),
}


def mark_spikes(days: Iterable[DayUsage]) -> None:
    """Flag, per metric, the days at least SPIKE_FACTOR× the median of the other active days."""
    days = list(days)
    for metric in METRICS:
        values = [day.value(metric) for day in days]
        for index, day in enumerate(days):
            value = values[index]
            if value <= 0:
                continue
            baseline = [other for position, other in enumerate(values) if position != index and other > 0]
            if len(baseline) < MIN_BASELINE_DAYS:
                continue
            if value >= SPIKE_FACTOR * statistics.median(baseline):
                day.spikes.add(metric)


def usage_daily(*, user: User, window: UsageWindow, api_key: ApiKey | None = None) -> list[DayUsage]:
    """One DayUsage per day of the window, oldest first, zeros where there was no usage."""
    rows = (
        usage_records(user=user, window=window, api_key=api_key)
        .annotate(day=TruncDate("created_at", tzinfo=dt.UTC))
        .values("day")
        .annotate(**_SUMS)
    )
    by_day = {row.pop("day"): row for row in rows}
    series = [DayUsage(day=day, **by_day.get(day, {})) for day in window.days]
    mark_spikes(series)
    return series


def usage_totals(series: Iterable[DayUsage]) -> UsageTotals:
    totals = UsageTotals()
    for day in series:
        totals.requests += day.requests
        totals.prompt_tokens += day.prompt_tokens
        totals.completion_tokens += day.completion_tokens
        totals.cost_micros += day.cost_micros
        totals.failed += day.failed
    return totals


def usage_totals_in(*, user: User, window: UsageWindow) -> UsageTotals:
    """The user's usage in the window, added up in one query."""
    return UsageTotals(**usage_records(user=user, window=window).aggregate(**_SUMS))


def usage_by_key(*, user: User, window: UsageWindow) -> list[KeyUsage]:
    """Every key of the user with usage in the window, biggest spender first, each with its
    own daily series so a leaked key's spike shows on its own row."""
    rows = (
        usage_records(user=user, window=window)
        .annotate(day=TruncDate("created_at", tzinfo=dt.UTC))
        .values("api_key_id", "day")
        .annotate(**_SUMS)
    )
    per_key: dict[int, dict[dt.date, dict[str, int]]] = defaultdict(dict)
    for row in rows:
        per_key[row.pop("api_key_id")][row.pop("day")] = row
    # The ids come from the user's own usage records, so these are the user's keys.
    keys = ApiKey.objects.in_bulk(list(per_key))
    grand_cost = sum(row["cost_micros"] for days in per_key.values() for row in days.values())

    breakdown = []
    for key_id, days in per_key.items():
        daily = [DayUsage(day=day, **days.get(day, {})) for day in window.days]
        mark_spikes(daily)
        totals = usage_totals(daily)
        active = [day for day in daily if day.requests]
        breakdown.append(
            KeyUsage(
                api_key=keys[key_id],
                totals=totals,
                daily=daily,
                share_of_cost=(totals.cost_micros / grand_cost) if grand_cost else 0.0,
                peak=max(active, key=lambda day: (day.requests, day.day)) if active else None,
            )
        )
    breakdown.sort(key=lambda item: (-item.totals.cost_micros, -item.totals.requests, item.api_key.name))
    return breakdown


def usage_by_model(*, user: User, window: UsageWindow, api_key: ApiKey | None = None) -> list[ModelUsage]:
    rows = usage_records(user=user, window=window, api_key=api_key).values("model").annotate(**_SUMS)
    breakdown = [ModelUsage(model=row.pop("model"), totals=UsageTotals(**row)) for row in rows]
    breakdown.sort(key=lambda item: (-item.totals.cost_micros, -item.totals.requests, item.model))
    return breakdown


def usage_filter_keys(*, user: User, window: UsageWindow) -> QuerySet[ApiKey]:
    """Keys offered in the filter: active ones, and revoked ones that still have usage to show."""
    with_usage = usage_records(user=user, window=window).values("api_key_id")
    return ApiKey.objects.filter(owner=user).filter(Q(revoked_at__isnull=True) | Q(pk__in=with_usage))


def usage_key_for_user(*, user: User, key_id: str) -> ApiKey | None:
    """The user's own key (revoked included) by id; None for anything else, malformed or not."""
    if not key_id.isdigit():
        return None
    return ApiKey.objects.filter(owner=user, pk=int(key_id)).first()


def usage_last_request_at(*, user: User) -> dt.datetime | None:
    return UsageRecord.objects.filter(user=user).aggregate(last=Max("created_at"))["last"]


def credit_account_for(*, user: User) -> CreditAccount:
    """The account's credit; an unsaved zero account when none was ever opened (read-only pages
    must not create rows)."""
    return CreditAccount.objects.filter(user=user).first() or CreditAccount(user=user)


@dataclass(frozen=True)
class LedgerLine:
    """One line of the ledger as people read it: a grant, top-up, refund or adjustment as it
    was written, or the usage charges of one key on one UTC day added up.

    Display only: the rows stay as written (the ledger is append-only). `entry` is the line's
    last ledger row, so `balance_after_micros` is the balance right after the line.
    """

    entry: LedgerEntry
    amount_micros: int
    entries: int

    @property
    def is_usage(self) -> bool:
        return self.entry.kind == LedgerEntry.Kind.USAGE and self.entry.usage_id is not None

    @property
    def api_key(self) -> ApiKey | None:
        return self.entry.usage.api_key if self.is_usage else None

    @property
    def day(self) -> dt.date:
        return self.entry.created_at.astimezone(dt.UTC).date()

    @property
    def balance_after_micros(self) -> int:
        return self.entry.balance_after_micros

    @property
    def description(self) -> str:
        if self.is_usage:
            noun = "request" if self.entries == 1 else "requests"
            return f"{self.entries:,} {noun} with {self.api_key.name} ({self.api_key.hint})"
        return self.entry.note


def _ledger_lines(*, user: User) -> QuerySet[LedgerEntry]:
    """Line id (the last row of the line), time, amount and row count of every ledger line,
    newest first: usage rows grouped per key per UTC day, every other row on its own."""
    usage_groups = (
        LedgerEntry.objects.filter(user=user, kind=LedgerEntry.Kind.USAGE, usage__isnull=False)
        .annotate(day=TruncDate("created_at", tzinfo=dt.UTC))
        .values("day", "usage__api_key_id")
        .annotate(line_id=Max("id"), line_at=Max("created_at"), amount=Sum("amount_micros"), entries=Count("id"))
        .values("line_id", "line_at", "amount", "entries")
        .order_by()
    )
    singles = (
        LedgerEntry.objects.filter(user=user)
        .exclude(kind=LedgerEntry.Kind.USAGE, usage__isnull=False)
        .annotate(line_id=F("id"), line_at=F("created_at"), amount=F("amount_micros"), entries=Value(1))
        .values("line_id", "line_at", "amount", "entries")
        .order_by()
    )
    return usage_groups.union(singles, all=True).order_by("-line_at", "-line_id")


def _hydrate(rows: Iterable[dict[str, object]]) -> list[LedgerLine]:
    rows = list(rows)
    entries = LedgerEntry.objects.select_related("usage__api_key").in_bulk([row["line_id"] for row in rows])
    return [
        LedgerLine(entry=entries[row["line_id"]], amount_micros=row["amount"], entries=row["entries"]) for row in rows
    ]


def ledger_page(*, user: User, page_number: str | int | None) -> Page:
    """A page of ledger lines (see LedgerLine); two queries and a count."""
    page = Paginator(_ledger_lines(user=user), LEDGER_PAGE_SIZE).get_page(page_number)
    page.object_list = _hydrate(page.object_list)
    return page


def ledger_lines_all(*, user: User, batch_size: int = 500) -> Iterator[LedgerLine]:
    """Every ledger line, newest first, fetched in batches (for the CSV export)."""
    lines = _ledger_lines(user=user)
    offset = 0
    while True:
        batch = list(lines[offset : offset + batch_size])
        if not batch:
            return
        yield from _hydrate(batch)
        offset += batch_size


def alert_settings_for(*, user: User) -> AlertSettings:
    """The account's alert settings; an unsaved row with the defaults when never changed."""
    return AlertSettings.objects.filter(user=user).first() or AlertSettings(user=user)


def ledger_sum_micros(*, user: User) -> int:
    return LedgerEntry.objects.filter(user=user).aggregate(total=Coalesce(Sum("amount_micros"), 0))["total"]


def stale_holds(*, older_than: dt.timedelta) -> QuerySet[CreditHold]:
    """Holds nobody renewed for `older_than` (their worker died), oldest first, each with `seen`:
    its last heartbeat (or its creation, for a hold from before heartbeats). The ORM twin of
    billing.hotpath.STALE_HOLDS_SQL."""
    holds = CreditHold.objects.annotate(seen=Coalesce("heartbeat_at", "created_at"))
    return holds.filter(seen__lt=timezone.now() - older_than).order_by("pk")


def served_models_active() -> QuerySet[ServedModel]:
    return ServedModel.objects.filter(is_active=True).order_by("name")


# --- The overview's numbers --------------------------------------------------------------

OVERVIEW_DAYS = 7
# Warn when the available credit would not last this many days at the last week's pace.
LOW_BALANCE_DAYS = 3


@dataclass(frozen=True)
class SpendSummary:
    """What the overview shows once there is usage: today, this month, the last 7 days."""

    today: DayUsage
    month_cost_micros: int
    week: list[DayUsage]
    available_micros: int

    @property
    def has_usage(self) -> bool:
        return any(day.requests for day in self.week) or self.month_cost_micros > 0

    @property
    def week_requests(self) -> int:
        return sum(day.requests for day in self.week)

    @property
    def average_daily_cost_micros(self) -> int:
        """The last 7 days' spend per day (today included), rounded up: never optimistic."""
        total = sum(day.cost_micros for day in self.week)
        return -(-total // len(self.week)) if self.week else 0

    @property
    def days_left(self) -> int | None:
        """Whole days the available credit lasts at that pace; None when nothing is spent."""
        average = self.average_daily_cost_micros
        if average <= 0:
            return None
        return max(self.available_micros, 0) // average

    @property
    def is_low(self) -> bool:
        """Available credit below LOW_BALANCE_DAYS days of the last week's average spend."""
        average = self.average_daily_cost_micros
        return average > 0 and self.available_micros < LOW_BALANCE_DAYS * average


def spend_summary(*, user: User, today: dt.date | None = None) -> SpendSummary:
    """Two aggregate queries: the last 7 days per day, and this month's cost."""
    window = usage_window(today=today, days=OVERVIEW_DAYS)
    week = usage_daily(user=user, window=window)
    month_start = dt.datetime.combine(window.last_day.replace(day=1), dt.time.min, tzinfo=dt.UTC)
    month_cost = UsageRecord.objects.filter(
        user=user, created_at__gte=month_start, created_at__lt=window.ends_at
    ).aggregate(total=Coalesce(Sum("cost_micros"), 0))["total"]
    return SpendSummary(
        today=week[-1],
        month_cost_micros=month_cost,
        week=week,
        available_micros=credit_account_for(user=user).available_micros,
    )

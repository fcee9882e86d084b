"""Unusual spend: an hour far above a key's own usual, caught by `send_alerts`.

Per key with usage in the last hour, that hour's spend and requests are compared with the
key's baseline: the 95th percentile of its hourly figures (UTC clock hours, hours without use
counting as zero) over the 14 days before that hour. The hour is unusual when, for spend or
for requests, it is above both FACTOR × the baseline and a floor (DOS_AI_UNUSUAL_SPEND_*:
5×, $1.00, 1,000 requests); a key with less than 3 days of history is judged by the floor
alone. A small key's noise never alerts (the floor), and a big key's normal peak neither (its
own baseline).

Once per crossing: `ApiKey.unusual_spend_since` is set by a conditional UPDATE when a key
crosses — only the run that sets it alerts (email, webhook `usage.anomaly`, security log) —
and cleared by the first run that finds the key back within its baseline, so staying above
alerts once and falling then crossing again alerts twice. A key set to pause on unusual spend
is suspended in the same step (`suspended_at`): the gateway's lookup skips a suspended key
and its 401 path answers 403 key_suspended instead (apikeys.refusals), until the owner resumes
it on the keys page.

The cost for a run: one aggregate over the last hour of usage (the created_at index), then per
key active in that hour one MIN and one GROUP BY hour over its 14 days (the (key, time) index,
at most 336 groups) — proportional to the keys active in the hour, not to all keys or requests.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Min, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from accounts.models import SecurityEvent
from accounts.notices import notice_send
from accounts.security import SecurityContext, security_event_record
from apikeys.models import ApiKey
from billing.models import UsageRecord
from billing.money import format_usd
from webhooks.services import api_key_data, webhook_event_emit

BASELINE_DAYS = 14
MIN_HISTORY = dt.timedelta(days=3)
PERCENTILE = 95


@dataclass(frozen=True)
class HourFigures:
    spend_micros: int
    requests: int


@dataclass(frozen=True)
class Verdict:
    hour: HourFigures
    baseline: HourFigures | None  # None: under 3 days of history, judged by the floor alone
    unusual: bool

    def describe(self) -> str:
        spend = format_usd(self.hour.spend_micros, 2)
        said = f"{spend} and {self.hour.requests:,} requests in the last hour"
        if self.baseline is None:
            return said + " (a new key, judged by the floor alone)"
        return said + (
            f", against a usual hour of at most {format_usd(self.baseline.spend_micros, 2)}"
            f" and {self.baseline.requests:,} requests"
        )


def _percentile(values: list[int], percent: int) -> int:
    """Nearest-rank percentile of `values` (not empty)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]


def _floors() -> HourFigures:
    floor_usd = Decimal(str(settings.DOS_AI_UNUSUAL_SPEND_FLOOR_USD))
    return HourFigures(int(floor_usd * 1_000_000), settings.DOS_AI_UNUSUAL_SPEND_FLOOR_REQUESTS)


def judge(*, api_key_id: int, hour: HourFigures, now: dt.datetime) -> Verdict:
    """Whether `hour` (the key's figures for the hour before `now`) is unusual for this key."""
    floor, factor = _floors(), settings.DOS_AI_UNUSUAL_SPEND_FACTOR
    window_end = now - dt.timedelta(hours=1)
    window_start = window_end - dt.timedelta(days=BASELINE_DAYS)
    usage = UsageRecord.objects.filter(api_key_id=api_key_id)
    first = usage.aggregate(first=Min("created_at"))["first"]
    if first is None or first > now - MIN_HISTORY:
        unusual = hour.spend_micros >= floor.spend_micros or hour.requests >= floor.requests
        return Verdict(hour, None, unusual)
    hourly = (
        usage.filter(created_at__gte=window_start, created_at__lt=window_end)
        .annotate(hour=TruncHour("created_at"))
        .values("hour")
        .annotate(spend=Sum("cost_micros"), requests=Count("id"))
        .values_list("spend", "requests")
    )
    hours = BASELINE_DAYS * 24
    spends = [int(spend or 0) for spend, _ in hourly]
    counts = [requests for _, requests in hourly]
    padding = [0] * max(0, hours - len(spends))
    baseline = HourFigures(_percentile(spends + padding, PERCENTILE), _percentile(counts + padding, PERCENTILE))
    unusual = (hour.spend_micros >= floor.spend_micros and hour.spend_micros > factor * baseline.spend_micros) or (
        hour.requests >= floor.requests and hour.requests > factor * baseline.requests
    )
    return Verdict(hour, baseline, unusual)


@dataclass(frozen=True)
class UnusualRun:
    alerted: int
    suspended: int
    rearmed: int


def unusual_spend_check(*, now: dt.datetime | None = None) -> UnusualRun:
    """Judge every key used in the hour before `now`; alert (and suspend) each new crossing."""
    now = now or timezone.now()
    last_hour = (
        UsageRecord.objects.filter(created_at__gte=now - dt.timedelta(hours=1), created_at__lt=now)
        .values("api_key_id")
        .annotate(spend=Sum("cost_micros"), requests=Count("id"))
    )
    unusual_ids, alerted, suspended = [], 0, 0
    for row in last_hour:
        verdict = judge(
            api_key_id=row["api_key_id"], hour=HourFigures(int(row["spend"] or 0), row["requests"]), now=now
        )
        if not verdict.unusual:
            continue
        unusual_ids.append(row["api_key_id"])
        crossed, paused = _on_crossing(api_key_id=row["api_key_id"], verdict=verdict, now=now)
        alerted += crossed
        suspended += paused
    rearmed = (
        ApiKey.objects.filter(unusual_spend_since__isnull=False)
        .exclude(pk__in=unusual_ids)
        .update(unusual_spend_since=None)
    )
    return UnusualRun(alerted, suspended, rearmed)


def _on_crossing(*, api_key_id: int, verdict: Verdict, now: dt.datetime) -> tuple[bool, bool]:
    """(alerted, suspended): only the run whose UPDATE marks the crossing acts on it."""
    with transaction.atomic():
        marked = ApiKey.objects.active().filter(pk=api_key_id, unusual_spend_since__isnull=True)
        if not marked.update(unusual_spend_since=now):
            return False, False
        api_key = ApiKey.objects.select_related("owner").get(pk=api_key_id)
        described = verdict.describe()
        context = SecurityContext()
        security_event_record(
            user=api_key.owner, kind=SecurityEvent.Kind.USAGE_ANOMALY, context=context, detail=f"{api_key}: {described}"
        )
        figures = {
            "spend_micros": verdict.hour.spend_micros,
            "requests": verdict.hour.requests,
            "baseline_spend_micros": verdict.baseline.spend_micros if verdict.baseline else None,
            "baseline_requests": verdict.baseline.requests if verdict.baseline else None,
            "hour_ending": now,
        }
        webhook_event_emit(
            owner_id=api_key.owner_id, event_type="usage.anomaly", data={**api_key_data(api_key), **figures}
        )
        suspend = api_key.pause_on_unusual_spend and api_key.suspended_at is None
        if suspend:
            reason = f"unusual spend: {described}"[:300]
            ApiKey.objects.filter(pk=api_key.pk).update(suspended_at=now, suspended_reason=reason)
            security_event_record(
                user=api_key.owner, kind=SecurityEvent.Kind.KEY_SUSPENDED, context=context, detail=f"{api_key}"
            )
            webhook_event_emit(
                owner_id=api_key.owner_id, event_type="api_key.suspended", data={**api_key_data(api_key), **figures}
            )
    notice_send(
        user=api_key.owner,
        template="unusual_spend",
        context=SecurityContext(),
        extra={
            "key_name": api_key.name,
            "key_hint": api_key.hint,
            "described": described,
            "suspended": suspend,
            "keys_link": f"{settings.DOS_AI_SITE_URL}/keys/" if settings.DOS_AI_SITE_URL else "",
        },
    )
    return True, suspend


def api_key_resume(*, api_key: ApiKey, context: SecurityContext | None = None) -> bool:
    """Lift a suspension; True when the key was suspended. The crossing stays marked, so the
    same unusual hour does not suspend it again — only a new crossing would."""
    with transaction.atomic():
        resumed = ApiKey.objects.filter(pk=api_key.pk, suspended_at__isnull=False).update(
            suspended_at=None, suspended_reason=""
        )
        if resumed:
            security_event_record(
                user=api_key.owner, kind=SecurityEvent.Kind.KEY_RESUMED, context=context, detail=str(api_key)
            )
    api_key.suspended_at, api_key.suspended_reason = None, ""
    return bool(resumed)

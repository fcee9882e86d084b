"""Date ranges of the usage page and the usage export: the presets, and the rule every range obeys.

Days are UTC calendar days, both ends included. A range must start on or after EARLIEST_DAY,
end no later than today (UTC), and span at most MAX_DAYS: a date the database could not hold
(`9999-12-31`, whose next midnight overflows) or a range no one could mean is refused with a
sentence that says what to fix, before a query runs or a byte of an export is sent.

`utc_today()` is the one place "today" is read, so tests can set it.
"""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from billing.selectors import UsageWindow

# Ordered as the page offers them; the default is the one the page has always shown.
PRESETS: dict[str, str] = {
    "today": "Today",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "month": "This month",
    "last-month": "Last month",
}
DEFAULT_PRESET = "30d"
CUSTOM = "custom"
EARLIEST_DAY = dt.date(2000, 1, 1)
MAX_DAYS = 366


class RangeError(ValueError):
    """A range that cannot be used; the message is for people."""


def utc_today() -> dt.date:
    return timezone.now().astimezone(dt.UTC).date()


def preset_window(preset: str, *, today: dt.date) -> UsageWindow:
    """The days of a preset ending today (or last month's, which ends before this month)."""
    if preset == "today":
        return UsageWindow(first_day=today, last_day=today)
    if preset == "7d":
        return UsageWindow(first_day=today - dt.timedelta(days=6), last_day=today)
    if preset == "30d":
        return UsageWindow(first_day=today - dt.timedelta(days=29), last_day=today)
    if preset == "month":
        return UsageWindow(first_day=today.replace(day=1), last_day=today)
    if preset == "last-month":
        last_day = today.replace(day=1) - dt.timedelta(days=1)
        return UsageWindow(first_day=last_day.replace(day=1), last_day=last_day)
    raise RangeError(f"Choose one of: {', '.join(PRESETS)}, or give `from` and `to`.")


def checked_window(first_day: dt.date, last_day: dt.date, *, today: dt.date) -> UsageWindow:
    """A custom range, if it obeys the module's rule."""
    if first_day > last_day:
        raise RangeError(f"The start ({first_day}) is after the end ({last_day}).")
    if last_day > today:
        raise RangeError(f"The end ({last_day}) is in the future: today is {today} (UTC).")
    if first_day < EARLIEST_DAY:
        raise RangeError(f"The start ({first_day}) is before {EARLIEST_DAY}: there is no usage that old.")
    if (last_day - first_day).days + 1 > MAX_DAYS:
        raise RangeError(f"Choose at most {MAX_DAYS} days at a time.")
    return UsageWindow(first_day=first_day, last_day=last_day)


def span_text(window: UsageWindow) -> str:
    """`Jan 31 – Feb 1, 2026`, or `Mar 10, 2026` for one day (the usage page's custom range)."""
    last = f"{window.last_day:%b} {window.last_day.day}, {window.last_day.year}"
    if window.first_day == window.last_day:
        return last
    same_year = window.first_day.year == window.last_day.year
    first = f"{window.first_day:%b} {window.first_day.day}" + ("" if same_year else f", {window.first_day.year}")
    return f"{first} – {last}"

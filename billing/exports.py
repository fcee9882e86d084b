"""CSV exports of the signed-in account's own usage and ledger, streamed row by row.

Money is exact: micro-dollars written as dollars with 6 decimals (`0.001250`), never a float.
Rows come from PostgreSQL in batches and go out as they are written, so an export of a year
of usage never sits in memory whole. Under ASGI (production) that takes an async iterator:
given a synchronous one, Django's ASGI handler would collect the whole export in a list before
sending a byte. `async_chunks` fetches a batch of lines at a time in the request's own
database thread and hands it to the event loop; under WSGI (the test client) the plain
generator streams as it is.

Text cells are people's text (key names, notes): `_neutralise` keeps a spreadsheet from
running any of them as a formula, whatever separator it splits on.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import re
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from decimal import Decimal

from asgiref.sync import sync_to_async
from django.db.models import Count, Sum
from django.db.models.functions import TruncDate

from accounts.models import User
from apikeys.models import ApiKey
from billing import ranges
from billing.models import UsageRecord
from billing.money import micros_to_usd
from billing.ranges import MAX_DAYS, RangeError, checked_window
from billing.selectors import WINDOW_DAYS, LedgerLine, UsageWindow, usage_window

USAGE_COLUMNS = [
    "date",
    "key_name",
    "key_hint",
    "model",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
]
LEDGER_COLUMNS = [
    "date",
    "type",
    "description",
    "key_name",
    "key_hint",
    "entries",
    "amount_usd",
    "balance_after_usd",
]
MAX_EXPORT_DAYS = MAX_DAYS
# Rows fetched from PostgreSQL at a time: with one chunk of lines, what an export holds in memory.
BATCH_SIZE = 500
# Lines handed to the event loop at a time under ASGI: one thread hop and one body message each.
ASYNC_CHUNK_LINES = 500


class ExportRangeError(ValueError):
    """A `from`/`to` the export cannot use; the message is for people."""


def _parse_day(name: str, text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ExportRangeError(f"`{name}` must be a date written YYYY-MM-DD, e.g. 2026-11-01; got {text!r}.") from None


def export_range(params: Mapping[str, str], *, today: dt.date | None = None) -> UsageWindow:
    """`from` and `to` (UTC days, both included); both absent means the usage page's 30 days.
    The range obeys billing.ranges' rule (nothing after today, nothing absurd)."""
    today = today or ranges.utc_today()  # read through the module: tests set it
    first, last = params.get("from", "").strip(), params.get("to", "").strip()
    if not first and not last:
        return usage_window(today=today, days=WINDOW_DAYS)
    if not first or not last:
        raise ExportRangeError("Give both `from` and `to` (YYYY-MM-DD), or neither for the last 30 days.")
    if len(first) != 10 or len(last) != 10:  # fromisoformat also takes 20261101 and week dates
        raise ExportRangeError(
            f"`from` and `to` must be dates written YYYY-MM-DD, e.g. 2026-11-01; got {first!r} and {last!r}."
        )
    first_day, last_day = _parse_day("from", first), _parse_day("to", last)
    if first_day > last_day:
        raise ExportRangeError(f"`from` ({first_day}) is after `to` ({last_day}).")
    if (last_day - first_day).days + 1 > MAX_EXPORT_DAYS:
        raise ExportRangeError(f"Export at most {MAX_EXPORT_DAYS} days at a time.")
    try:
        return checked_window(first_day, last_day, today=today)
    except RangeError as error:
        raise ExportRangeError(str(error)) from None


def usd_exact(micros: int) -> Decimal:
    """A Decimal with 6 places (`-0.001250`): written as is, and not text to neutralise."""
    return micros_to_usd(micros)


def usage_rows(*, user: User, span: UsageWindow, api_key: ApiKey | None = None) -> Iterator[list[object]]:
    """One row per UTC day × key × model, oldest day first; counts every request, failed ones
    too (they cost nothing), like the usage page."""
    records = UsageRecord.objects.filter(user=user, created_at__gte=span.starts_at, created_at__lt=span.ends_at)
    if api_key is not None:
        records = records.filter(api_key=api_key)
    rows = (
        records.annotate(day=TruncDate("created_at", tzinfo=dt.UTC))
        .values("day", "api_key_id", "api_key__name", "api_key__hint", "model")
        .annotate(
            requests=Count("id"),
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
            cost=Sum("cost_micros"),
        )
        .order_by("day", "api_key__name", "api_key_id", "model")
    )
    for row in rows.iterator(chunk_size=BATCH_SIZE):
        yield [
            row["day"].isoformat(),
            row["api_key__name"],
            row["api_key__hint"],
            row["model"],
            row["requests"],
            row["prompt"],
            row["completion"],
            usd_exact(row["cost"]),
        ]


def ledger_rows(lines: Iterable[LedgerLine]) -> Iterator[list[object]]:
    """The ledger as the billing page shows it: usage one line per key per day."""
    for line in lines:
        api_key = line.api_key
        yield [
            line.day.isoformat() if line.is_usage else line.entry.created_at.astimezone(dt.UTC).isoformat(),
            line.entry.kind,
            line.description,
            api_key.name if api_key else "",
            api_key.hint if api_key else "",
            line.entries,
            usd_exact(line.amount_micros),
            usd_exact(line.balance_after_micros),
        ]


class _Echo:
    """csv.writer writes into this and gets the line back, for a streaming response."""

    def write(self, value: str) -> str:
        return value


def csv_lines(header: list[str], rows: Iterable[list[object]]) -> Iterator[str]:
    # Every text cell quoted: a spreadsheet that splits on `;` or a tab still reads `";=1+1"`
    # as one cell. Numbers (counts, Decimal amounts) stay bare, so they stay numbers.
    writer = csv.writer(_Echo(), lineterminator="\r\n", quoting=csv.QUOTE_NONNUMERIC)
    yield writer.writerow(header)
    for row in rows:
        yield writer.writerow(_neutralise(row))


# OWASP's CSV-injection rule: a cell starting with one of these may be run as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# A separator a spreadsheet might split on, then (after spaces) a formula start: `;=1+1`,
# `a,@SUM(1)`. A spreadsheet that ignored the quotes would start a new cell there.
_FORMULA_AFTER_SEPARATOR = re.compile(r"[,;|\t\r\n][ ]*[=+\-@\t\r]")


def _is_formula_like(text: str) -> bool:
    return text.lstrip(" ").startswith(_FORMULA_START) or bool(_FORMULA_AFTER_SEPARATOR.search(text))


def _neutralise(row: list[object]) -> list[object]:
    """Key names and notes are people's text: prefix any that a spreadsheet could read as a
    formula with an apostrophe (shown as text, never run). Numbers stay numbers."""
    return [f"'{cell}" if isinstance(cell, str) and _is_formula_like(cell) else cell for cell in row]


async def async_chunks(lines: Iterator[str], *, size: int = ASYNC_CHUNK_LINES) -> AsyncIterator[str]:
    """`lines` for an ASGI response, `size` lines per chunk. Each batch is read in the
    request's database thread (thread_sensitive: the one its connection and any cursor live
    in), so memory holds one chunk at a time, never the export."""
    next_chunk = sync_to_async(lambda: "".join(itertools.islice(lines, size)), thread_sensitive=True)
    try:
        while chunk := await next_chunk():
            yield chunk
    finally:
        # A client that left mid-export: close the generator (and its cursor) in that thread too.
        close = getattr(lines, "close", None)
        if close is not None:
            await sync_to_async(close, thread_sensitive=True)()

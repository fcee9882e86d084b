"""/usage/export.csv and /billing/ledger.csv: streamed, exact to the micro-dollar, the signed-in
account's own rows only, reconciled with the usage page and the ledger; bad input is a 400
that says what to fix, another account's key a 404."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import re
import tracemalloc
import warnings
from decimal import Decimal
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.http import StreamingHttpResponse
from django.test import Client

from accounts.models import User
from billing.models import CreditAccount, LedgerEntry, UsageRecord
from billing.selectors import ledger_sum_micros
from billing.services import credits_grant
from billing.tests.conftest import History, add_usage, settle_usage
from dosportal.testing.keys import key_for

pytestmark = pytest.mark.django_db

USAGE_HEADER = ["date", "key_name", "key_hint", "model", "requests", "prompt_tokens", "completion_tokens", "cost_usd"]
SIX_DECIMALS = re.compile(r"-?\d+\.\d{6}")


def csv_of(response) -> list[dict[str, str]]:
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def header_of(response) -> list[str]:
    body = b"".join(response.streaming_content).decode()
    return next(csv.reader(io.StringIO(body)))


# --- Usage ---------------------------------------------------------------------------


def test_the_usage_export_requires_login(db: None) -> None:
    response = Client().get("/usage/export.csv")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/usage/export.csv"


def test_the_usage_export_has_the_documented_columns(history: History, owner: User, client_for) -> None:
    response = client_for(owner).get("/usage/export.csv")

    assert header_of(response) == USAGE_HEADER


def test_without_dates_it_exports_the_usage_pages_30_days_and_adds_up_to_its_totals(
    history: History, owner: User, client_for
) -> None:
    response = client_for(owner).get("/usage/export.csv")
    rows = csv_of(response)

    first, last = history.day(29), history.today
    assert response["Content-Disposition"] == f'attachment; filename="dos-ai-usage-{first}-to-{last}.csv"'
    # The usage page's totals for the same history: 262 requests, 394,000 tokens, $0.320200.
    assert sum(int(row["requests"]) for row in rows) == 262
    assert sum(int(row["prompt_tokens"]) + int(row["completion_tokens"]) for row in rows) == 394_000
    assert sum(Decimal(row["cost_usd"]) for row in rows) == Decimal("0.320200")
    assert all(SIX_DECIMALS.fullmatch(row["cost_usd"]) for row in rows)
    # One row per day × key × model, oldest first; the outsider's usage is not there.
    assert [(row["date"], row["key_name"], row["model"]) for row in rows] == sorted(
        {(row["date"], row["key_name"], row["model"]) for row in rows}
    )
    assert {row["key_name"] for row in rows} == {"Production backend", "CI runner"}
    assert "Outsider app" not in str(rows)


def test_a_day_with_two_models_has_a_row_for_each(history: History, owner: User, client_for) -> None:
    day = history.day(4).isoformat()

    rows = [row for row in csv_of(client_for(owner).get("/usage/export.csv")) if row["date"] == day]

    assert rows == [
        {
            "date": day,
            "key_name": "Production backend",
            "key_hint": history.production.hint,
            "model": "dos-ai",
            "requests": "10",
            "prompt_tokens": "10000",
            "completion_tokens": "5000",
            "cost_usd": "0.012500",
        },
        {
            "date": day,
            "key_name": "Production backend",
            "key_hint": history.production.hint,
            "model": "dos-ai-embed",
            "requests": "5",
            "prompt_tokens": "10000",
            "completion_tokens": "0",
            "cost_usd": "0.000200",
        },
    ]


def test_from_and_to_choose_the_days_both_included(history: History, owner: User, client_for) -> None:
    first, last = history.day(5), history.day(3)

    response = client_for(owner).get(f"/usage/export.csv?from={first}&to={last}")
    rows = csv_of(response)

    assert response["Content-Disposition"] == f'attachment; filename="dos-ai-usage-{first}-to-{last}.csv"'
    assert [(row["date"], row["key_name"], row["requests"]) for row in rows] == [
        (history.day(5).isoformat(), "CI runner", "2"),
        (history.day(4).isoformat(), "Production backend", "10"),
        (history.day(4).isoformat(), "Production backend", "5"),
        (history.day(3).isoformat(), "CI runner", "200"),
    ]


def test_a_range_can_reach_back_past_the_usage_pages_window(history: History, owner: User, client_for) -> None:
    rows = csv_of(client_for(owner).get(f"/usage/export.csv?from={history.day(30)}&to={history.day(30)}"))

    assert [(row["date"], row["requests"], row["cost_usd"]) for row in rows] == [
        (history.day(30).isoformat(), "7", "0.008750")
    ]


def test_key_narrows_the_export_to_one_of_the_users_keys(history: History, owner: User, client_for) -> None:
    response = client_for(owner).get(f"/usage/export.csv?key={history.leaked.pk}")
    rows = csv_of(response)

    assert {row["key_name"] for row in rows} == {"CI runner"}
    assert sum(int(row["requests"]) for row in rows) == 206
    assert response["Content-Disposition"].endswith(f'-key-{history.leaked.pk}.csv"')


@pytest.mark.parametrize("key", ["outsider", "missing", "abc", "-1"])
def test_any_key_but_the_users_own_is_a_404(history: History, owner: User, client_for, key: str) -> None:
    key_id = {"outsider": history.outsider_key.pk, "missing": history.outsider_key.pk + 1000}.get(key, key)

    response = client_for(owner).get(f"/usage/export.csv?key={key_id}")

    assert response.status_code == 404


FORMAT = "must be a date written YYYY-MM-DD, e.g. 2026-11-01"
BOTH_FORMAT = "`from` and `to` must be dates written YYYY-MM-DD, e.g. 2026-11-01"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("from=2026-13-01&to=2026-12-01", f"`from` {FORMAT}; got '2026-13-01'."),
        ("from=yesterday&to=today", f"{BOTH_FORMAT}; got 'yesterday' and 'today'."),
        ("from=20261101&to=20261102", f"{BOTH_FORMAT}; got '20261101' and '20261102'."),
        ("from=2026-11-01", "Give both `from` and `to` (YYYY-MM-DD), or neither for the last 30 days."),
        ("to=2026-11-01", "Give both `from` and `to` (YYYY-MM-DD), or neither for the last 30 days."),
        ("from=2026-11-02&to=2026-11-01", "`from` (2026-11-02) is after `to` (2026-11-01)."),
        ("from=2025-01-01&to=2026-01-02", "Export at most 366 days at a time."),
        ("from=2026-11-01%00&to=2026-11-02", f"{BOTH_FORMAT}; got '2026-11-01\\x00' and '2026-11-02'."),
    ],
)  # fmt: skip
def test_bad_dates_are_a_400_that_says_what_to_fix(owner: User, client_for, query: str, message: str) -> None:
    response = client_for(owner).get(f"/usage/export.csv?{query}")

    assert response.status_code == 400
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content.decode() == message


def test_366_days_is_allowed(owner: User, client_for) -> None:
    response = client_for(owner).get("/usage/export.csv?from=2024-01-01&to=2024-12-31")

    assert csv_of(response) == []


def test_an_outsider_exports_only_their_own_usage(history: History, outsider: User, client_for) -> None:
    rows = csv_of(client_for(outsider).get("/usage/export.csv"))

    assert [(row["key_name"], row["requests"]) for row in rows] == [("Outsider app", "1000")]


def test_text_a_spreadsheet_would_run_as_a_formula_is_neutralised(owner: User, client_for) -> None:
    api_key = key_for(owner, '=HYPERLINK("http://evil.example","click")')
    add_usage(api_key, days_ago=0)

    (row,) = csv_of(client_for(owner).get("/usage/export.csv"))

    assert row["key_name"] == '\'=HYPERLINK("http://evil.example","click")'
    assert row["cost_usd"] == "0.001250"


def test_the_usage_page_links_to_the_export_of_what_it_shows(history: History, owner: User, client_for) -> None:
    client = client_for(owner)
    first, last = history.day(29), history.today

    everything = client.get("/usage/").content.decode()
    one_key = client.get(f"/usage/?key={history.leaked.pk}").content.decode()

    assert f'href="/usage/export.csv?from={first}&amp;to={last}">Export CSV</a>' in everything
    assert f'href="/usage/export.csv?from={first}&amp;to={last}&amp;key={history.leaked.pk}">Export CSV</a>' in one_key


# --- The ledger, rolled up for reading -------------------------------------------------


def charge(api_key, request_id: str, *, completion_tokens: int = 100) -> None:
    # 10 × $0.50/M + 100 × $1.50/M = 155 µUSD each.
    settle_usage(api_key, request_id, prompt_tokens=10, completion_tokens=completion_tokens)


@pytest.fixture
def charged(owner: User) -> dict[str, object]:
    """The sign-up credit; 3 charges of one key yesterday, 2 today; 4 of another key today; a top-up today."""
    production, batch = key_for(owner, "Production backend"), key_for(owner, "Batch jobs")
    for index in range(3):
        charge(production, f"req_y{index}")
    yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    LedgerEntry.objects.filter(user=owner, kind="usage").update(created_at=yesterday)
    LedgerEntry.objects.filter(user=owner, kind="grant").update(created_at=yesterday - dt.timedelta(days=1))
    for index in range(2):
        charge(production, f"req_t{index}")
    credits_grant(user=owner, amount_micros=10_000_000, kind=LedgerEntry.Kind.TOPUP, note="Invoice 7")
    for index in range(4):
        charge(batch, f"req_b{index}")
    return {"production": production, "batch": batch}


def test_usage_charges_are_one_ledger_line_per_key_per_day_and_the_rows_stay_as_written(
    owner: User, client_for, charged
) -> None:
    rows_before = list(LedgerEntry.objects.filter(user=owner).order_by("id").values())

    rows = csv_of(client_for(owner).get("/billing/ledger.csv"))

    production, batch = charged["production"], charged["batch"]
    assert [(row["type"], row["key_name"], row["entries"], row["amount_usd"]) for row in rows] == [
        ("usage", "Batch jobs", "4", "-0.000620"),
        ("topup", "", "1", "10.000000"),
        ("usage", "Production backend", "2", "-0.000310"),
        ("usage", "Production backend", "3", "-0.000465"),
        ("grant", "", "1", "5.000000"),
    ]
    assert rows[0]["description"] == f"4 requests with Batch jobs ({batch.hint})"
    assert rows[0]["key_hint"] == batch.hint
    assert rows[3]["date"] == (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).date().isoformat()
    assert rows[1]["description"] == "Invoice 7"
    assert production.hint in rows[2]["description"]
    # Display only: nine usage rows, as written, and nothing else touched.
    assert list(LedgerEntry.objects.filter(user=owner).order_by("id").values()) == rows_before
    assert LedgerEntry.objects.filter(user=owner, kind="usage").count() == UsageRecord.objects.count() == 9


def test_the_lines_add_up_to_the_balance_to_the_micro_dollar(owner: User, client_for, charged) -> None:
    rows = csv_of(client_for(owner).get("/billing/ledger.csv"))

    balance = CreditAccount.objects.get(user=owner).balance_micros
    assert sum(Decimal(row["amount_usd"]) for row in rows) * 1_000_000 == balance == ledger_sum_micros(user=owner)
    # Each line's balance is the balance right after its last row: the newest is the balance.
    assert Decimal(rows[0]["balance_after_usd"]) * 1_000_000 == balance
    assert all(
        SIX_DECIMALS.fullmatch(row["amount_usd"]) and SIX_DECIMALS.fullmatch(row["balance_after_usd"]) for row in rows
    )
    out = StringIO()
    call_command("balance", owner.email, stdout=out)
    assert out.getvalue().splitlines()[-1] == "OK: the balance equals the ledger sum."


def test_the_ledger_export_is_the_ledger_as_the_billing_page_shows_it(owner: User, client_for, charged) -> None:
    client = client_for(owner)

    rows = csv_of(client.get("/billing/ledger.csv"))
    html = client.get("/billing/").content.decode()

    shown = re.findall(r'<tr data-entry="(\d+)" data-entries="(\d+)">', html)
    assert [entries for _entry, entries in shown] == [row["entries"] for row in rows]
    assert 'href="/billing/ledger.csv" download>Download CSV</a>' in html
    assert f">4 requests with Batch jobs ({charged['batch'].hint})</a>" in html


def test_the_ledger_export_requires_login_and_shows_only_the_users_own(
    owner: User, outsider: User, client_for, charged
) -> None:
    assert Client().get("/billing/ledger.csv").status_code == 302

    rows = csv_of(client_for(outsider).get("/billing/ledger.csv"))

    assert [(row["type"], row["amount_usd"], row["balance_after_usd"]) for row in rows] == [
        ("grant", "5.000000", "5.000000")
    ]


def test_a_long_ledger_streams_in_batches_and_loses_no_line(owner: User, client_for, monkeypatch) -> None:
    from billing import selectors

    for dollars in range(1, 12):
        credits_grant(user=owner, amount_micros=dollars * 1_000_000, note=f"Grant #{dollars}")
    original = selectors.ledger_lines_all
    monkeypatch.setattr(selectors, "ledger_lines_all", lambda *, user: original(user=user, batch_size=5))

    rows = csv_of(client_for(owner).get("/billing/ledger.csv"))

    assert [row["description"] for row in rows] == [f"Grant #{n}" for n in range(11, 0, -1)] + ["Sign-up credit"]


# --- Absurd dates, formulas, and streaming under ASGI --------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        # Once a 200 that died mid-answer: the day after 9999-12-31 overflows.
        ("from=9999-12-31&to=9999-12-31", "The end (9999-12-31) is in the future: today is {today} (UTC)."),
        ("from={today}&to={tomorrow}", "The end ({tomorrow}) is in the future: today is {today} (UTC)."),
        ("from=0001-01-01&to=0001-01-01", "The start (0001-01-01) is before 2000-01-01: there is no usage that old."),
    ],
)  # fmt: skip
def test_absurd_dates_are_a_400_before_anything_is_sent(owner: User, client_for, query: str, message: str) -> None:
    today = dt.datetime.now(dt.UTC).date()
    dates = {"today": today, "tomorrow": today + dt.timedelta(days=1)}

    response = client_for(owner).get(f"/usage/export.csv?{query.format(**dates)}")

    assert response.status_code == 400
    assert not response.streaming
    assert response.content.decode() == message.format(**dates)


@pytest.mark.parametrize(
    "name",
    ["=1+1", "+1", "-1", "@SUM(1)", "\t=1", "\r=1", "  =1", ";=1+1", "a,=1+1", "x|@SUM(1)", "x;\t-1"],
)
def test_every_cell_a_spreadsheet_could_run_is_neutralised_whatever_the_separator(
    owner: User, client_for, name: str
) -> None:
    add_usage(key_for(owner, name), days_ago=0)
    credits_grant(user=owner, amount_micros=1_000_000, note=name)

    usage = b"".join(client_for(owner).get("/usage/export.csv").streaming_content).decode()
    (row,) = list(csv.DictReader(io.StringIO(usage)))
    ledger = csv_of(client_for(owner).get("/billing/ledger.csv"))

    assert row["key_name"] == f"'{name}"
    assert ledger[0]["description"] == f"'{name}"
    # Every text cell is quoted, so a spreadsheet splitting on `;` or `|` keeps it one cell;
    # numbers stay bare, so they stay numbers.
    quoted = '"' + f"'{name}" + '"'
    assert f'"{row["date"]}",{quoted},"{row["key_hint"]}","dos-ai",1,1000,500,0.001250\r\n' in usage


@pytest.mark.parametrize("name", ["Production backend", "ci-runner", "a+b", "user@example.com", "Q1; staging"])
def test_ordinary_text_is_left_as_it_is(owner: User, client_for, name: str) -> None:
    add_usage(key_for(owner, name), days_ago=0)

    (row,) = csv_of(client_for(owner).get("/usage/export.csv"))

    assert row["key_name"] == name


def asgi_get(path: str, query: str, cookie: str) -> dict[str, object]:
    """GET through the production ASGI application in-process, keeping of the body only its
    size, its chunks, its line count, its first and last lines, and the peak of the memory
    Python allocated while answering (tracemalloc, from the request's start to its end)."""
    from dosportal.asgi import application

    seen: dict[str, object] = {"chunks": 0, "bytes": 0, "lines": 0, "head": b"", "tail": b""}

    async def receive() -> dict[str, object]:
        if not seen.get("asked"):
            seen["asked"] = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays: no disconnect until the answer ends
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            seen["status"] = message["status"]
            seen["headers"] = {name.lower(): value for name, value in message["headers"]}
            return
        body = message.get("body", b"")
        if not body:
            return
        if not seen["chunks"]:
            seen["head"] = body[:200]
        seen["chunks"] += 1
        seen["bytes"] += len(body)
        seen["lines"] += body.count(b"\r\n")
        seen["tail"] = body[-200:]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"cookie", cookie.encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    tracemalloc.start()
    try:
        held_before = tracemalloc.get_traced_memory()[0]
        with warnings.catch_warnings():
            # Django warns when it must collect a synchronous iterator whole under ASGI.
            warnings.simplefilter("error")
            asyncio.run(application(scope, receive, send))
        seen["peak_growth"] = tracemalloc.get_traced_memory()[1] - held_before
    finally:
        tracemalloc.stop()
    return seen


@pytest.mark.django_db(transaction=True)
def test_a_large_export_streams_under_asgi_in_flat_memory(owner: User, client_for) -> None:
    """36,600 rows (366 days × 100 models, ~5.9 MB) sent in chunks while Python holds a fraction
    of the body, no more than for a third of the rows. Collected whole (as the synchronous
    iterator was under ASGI), the peak was larger than the body."""
    from django.db import connection

    api_key = key_for(owner, "Batch " + "x" * 60)
    last_day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    first_day = last_day - dt.timedelta(days=365)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {UsageRecord._meta.db_table}
                (request_id, client_request_id, user_id, api_key_id, endpoint, model, prompt_tokens,
                 completion_tokens, cost_micros, status_code, streamed, latency_ms, created_at)
            SELECT 'req_big_' || day || '_' || model, '', %s, %s, 'chat/completions',
                   'a-rather-long-model-name-for-size-' || model, 1000, 500, 1250, 200, false, 120,
                   %s::timestamptz + day * interval '1 day' + interval '12 hours'
            FROM generate_series(0, 365) AS day, generate_series(1, 100) AS model
            """,  # noqa: S608 - the table name is the model's own, the values are parameters
            [owner.pk, api_key.pk, dt.datetime.combine(first_day, dt.time(), tzinfo=dt.UTC)],
        )
    cookie = client_for(owner).cookies[settings.SESSION_COOKIE_NAME]
    session = f"{cookie.key}={cookie.value}"
    # A first, one-day export: what the first request ever allocates for good (lazy imports,
    # compiled templates and URL patterns) is not the export's memory.
    assert asgi_get("/usage/export.csv", f"from={last_day}&to={last_day}", session)["lines"] == 1 + 100

    shorter = asgi_get("/usage/export.csv", f"from={last_day - dt.timedelta(days=29)}&to={last_day}", session)
    seen = asgi_get("/usage/export.csv", f"from={first_day}&to={last_day}", session)

    assert seen["status"] == 200
    assert seen["headers"][b"content-type"] == b"text/csv; charset=utf-8"
    assert seen["lines"] == 1 + 366 * 100
    assert seen["head"].startswith(b'"date","key_name","key_hint","model","requests"')
    assert seen["tail"].endswith(b',"a-rather-long-model-name-for-size-99",1,1000,500,0.001250\r\n')
    body_bytes = seen["bytes"]
    assert body_bytes > 5_000_000
    # Sent as it is read, 500 lines a time (which Django's ASGI handler sends in 64 KiB body
    # messages): 74 × 2 − 1, never one line at a time, nor the whole body at once.
    assert seen["chunks"] == 147
    # Flat: one fetched batch and one chunk at a time (~1.1 MB here), never the export (which,
    # collected whole, peaked at 9.6 MB): 12 times the rows of a 30-day export, no more memory.
    assert shorter["lines"] == 1 + 30 * 100
    assert seen["peak_growth"] < body_bytes // 4, (seen["peak_growth"], body_bytes)
    assert seen["peak_growth"] <= shorter["peak_growth"] * 1.1, (seen["peak_growth"], shorter["peak_growth"])


@pytest.mark.django_db(transaction=True)
def test_the_ledger_streams_under_asgi_too(owner: User, client_for) -> None:
    for dollars in range(1, 4):
        credits_grant(user=owner, amount_micros=dollars * 1_000_000, note=f"Grant #{dollars}")
    cookie = client_for(owner).cookies[settings.SESSION_COOKIE_NAME]

    seen = asgi_get("/billing/ledger.csv", "", f"{cookie.key}={cookie.value}")

    assert seen["status"] == 200
    assert seen["headers"][b"content-disposition"] == b'attachment; filename="dos-ai-ledger.csv"'
    assert seen["lines"] == 1 + 4  # the header, three grants, the sign-up credit
    assert seen["tail"].endswith(b'"grant","Sign-up credit","","",1,5.000000,5.000000\r\n')

"""/usage/ over any range: the presets, a custom from/to, kept in the URL and in every link that
keeps the page's state (the key filter, the per-key links, the export), and a range that
cannot be used shown as a form error, never a 500. "Today" is set (billing.ranges.utc_today)
to Tuesday 2026-03-10, so "last month" is February and its 28 days."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from accounts.models import User
from apikeys.models import ApiKey
from billing import ranges
from billing.tests.conftest import add_usage
from dosportal.testing.html import text_of
from dosportal.testing.keys import key_for

pytestmark = pytest.mark.django_db

TODAY = dt.date(2026, 3, 10)
# Requests per day, powers of two so every range's total names its days.
SEEDED = {
    dt.date(2026, 3, 10): 1,
    dt.date(2026, 3, 5): 2,
    dt.date(2026, 3, 1): 4,
    dt.date(2026, 2, 20): 8,
    dt.date(2026, 2, 1): 16,
    dt.date(2026, 1, 31): 32,
}


@pytest.fixture
def today(monkeypatch: pytest.MonkeyPatch) -> dt.date:
    monkeypatch.setattr(ranges, "utc_today", lambda: TODAY)
    return TODAY


@pytest.fixture
def seeded(owner: User, today: dt.date) -> ApiKey:
    api_key = key_for(owner, "Production backend")
    real_today = dt.datetime.now(dt.UTC).date()
    for day, count in SEEDED.items():
        add_usage(api_key, days_ago=(real_today - day).days, count=count)
    return api_key


def requests_total(html: str) -> str:
    return text_of(re.search(r'data-total="requests">(.+?)</div>', html).group(1))


def export_href(html: str) -> str:
    return re.search(r'id="usage-export" download\s+href="([^"]+)"', html).group(1)


def summary(html: str) -> str:
    return text_of(re.search(r'id="usage-range-summary">(.+?)</p>', html, re.S).group(1))


@pytest.mark.parametrize(
    ("query", "requests", "label", "first", "last"),
    [
        ("range=today", "1", "Today", "2026-03-10", "2026-03-10"),
        ("range=7d", "3", "Last 7 days", "2026-03-04", "2026-03-10"),
        ("range=30d", "15", "Last 30 days", "2026-02-09", "2026-03-10"),
        ("", "15", "Last 30 days", "2026-02-09", "2026-03-10"),
        ("range=month", "7", "This month", "2026-03-01", "2026-03-10"),
        ("range=last-month", "24", "Last month", "2026-02-01", "2026-02-28"),
        ("range=custom&from=2026-01-31&to=2026-02-01", "48", "Custom range", "2026-01-31", "2026-02-01"),
        ("from=2026-01-31&to=2026-02-20", "56", "Custom range", "2026-01-31", "2026-02-20"),
    ],
)  # fmt: skip
def test_each_range_shows_its_days_and_the_export_link_carries_them(
    seeded: ApiKey, owner: User, client_for, query: str, requests: str, label: str, first: str, last: str
) -> None:
    response = client_for(owner).get(f"/usage/?{query}")
    html = response.content.decode()

    assert response.status_code == 200
    assert requests_total(html) == requests
    window = response.context["window"]
    assert (window.first_day.isoformat(), window.last_day.isoformat()) == (first, last)
    assert summary(html).startswith(f"{label}: ")
    assert export_href(html) == f"/usage/export.csv?from={first}&amp;to={last}"
    chosen = re.findall(r'class="range-chip" aria-current="true">([^<]+)</a>', html)
    assert chosen == ([] if label == "Custom range" else [label])
    assert 'id="range-errors"' not in html


def test_the_export_of_a_range_has_the_pages_requests(seeded: ApiKey, owner: User, client_for) -> None:
    client = client_for(owner)
    html = client.get("/usage/?range=last-month").content.decode()

    body = b"".join(client.get(export_href(html).replace("&amp;", "&")).streaming_content).decode()

    assert [line.split(",")[0] for line in body.splitlines()[1:]] == ['"2026-02-01"', '"2026-02-20"']


def test_the_key_filter_and_the_per_key_links_keep_the_range(seeded: ApiKey, owner: User, client_for) -> None:
    client = client_for(owner)

    preset = client.get("/usage/?range=7d").content.decode()
    custom = client.get(f"/usage/?range=custom&from=2026-02-01&to=2026-02-20&key={seeded.pk}").content.decode()

    # The key select posts the range with it; the per-key link keeps it; the chips keep the key.
    assert '<input type="hidden" name="range" value="7d">' in preset
    assert f'href="?range=7d&amp;key={seeded.pk}" class="key-name"' in preset
    for name, value in (("range", "custom"), ("from", "2026-02-01"), ("to", "2026-02-20")):
        assert f'<input type="hidden" name="{name}" value="{value}">' in custom
    assert f'href="/usage/?range=today&amp;key={seeded.pk}" class="range-chip"' in custom
    assert requests_total(custom) == "24"
    assert export_href(custom) == f"/usage/export.csv?from=2026-02-01&amp;to=2026-02-20&amp;key={seeded.pk}"
    # The default range stays out of the URL.
    default = client.get("/usage/").content.decode()
    key_filter = re.search(r'<form [^>]*class="usage-filter".*?</form>', default, re.S).group(0)
    assert 'type="hidden"' not in key_filter
    assert f'href="?key={seeded.pk}" class="key-name"' in default


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("range=custom&from=2026-03-05&to=2026-03-01", "The start (2026-03-05) is after the end (2026-03-01)."),
        ("from=2026-03-10&to=2026-03-11", "The end (2026-03-11) is in the future: today is 2026-03-10 (UTC)."),
        ("from=9999-12-31&to=9999-12-31", "The end (9999-12-31) is in the future: today is 2026-03-10 (UTC)."),
        ("from=1999-12-31&to=2000-01-01", "The start (1999-12-31) is before 2000-01-01: there is no usage that old."),
        ("from=2025-01-01&to=2026-03-01", "Choose at most 366 days at a time."),
        ("range=custom&from=2026-13-01&to=2026-03-01", "From: Enter a day as YYYY-MM-DD, e.g. 2026-11-01."),
        ("range=custom&from=10000-01-01&to=2026-03-01", "From: Enter a day as YYYY-MM-DD, e.g. 2026-11-01."),
        ("range=custom&from=2026-03-01", "Choose both a start and an end day."),
        ("range=custom", "Choose both a start and an end day."),
        ("range=forever", "Choose one of the ranges offered."),
    ],
)  # fmt: skip
def test_a_bad_range_is_a_form_error_on_the_page_which_then_shows_the_last_30_days(
    seeded: ApiKey, owner: User, client_for, query: str, error: str
) -> None:
    response = client_for(owner).get(f"/usage/?{query}")
    html = response.content.decode()

    assert response.status_code == 200
    errors = re.search(
        r'<div class="alert alert-spike" role="alert" id="range-errors">(.+?)</div>\s*</div>', html, re.S
    )
    assert errors, html
    assert [text_of(found) for found in re.findall(r'<p class="range-error">(.+?)</p>', html)] == [error]
    assert "Showing the last 30 days instead." in text_of(errors.group(1))
    assert requests_total(html) == "15"
    assert export_href(html) == "/usage/export.csv?from=2026-02-09&amp;to=2026-03-10"
    # The custom form is open with what was typed, so it can be fixed.
    assert '<details class="usage-range-custom" open>' in html


def test_the_export_refuses_tomorrow_by_the_same_today(today: dt.date, owner: User, client_for) -> None:
    response = client_for(owner).get("/usage/export.csv?from=2026-03-11&to=2026-03-11")

    assert response.status_code == 400
    assert response.content.decode() == "The end (2026-03-11) is in the future: today is 2026-03-10 (UTC)."


def test_an_empty_range_says_so_in_its_own_words(seeded: ApiKey, owner: User, client_for) -> None:
    other = key_for(owner, "Quiet")

    html = client_for(owner).get(f"/usage/?range=today&key={other.pk}").content.decode()

    assert "No usage for this key in this range" in html


@pytest.mark.parametrize(
    ("query", "phrase"),
    [
        ("range=7d", "last 7 days"),
        ("range=last-month", "last month"),
        ("range=custom&from=2026-01-31&to=2026-02-01", "Jan 31 – Feb 1, 2026"),
        ("range=custom&from=2025-12-31&to=2026-02-01", "Dec 31, 2025 – Feb 1, 2026"),
    ],
)
def test_the_breakdowns_name_the_range_they_cover(
    seeded: ApiKey, owner: User, client_for, query: str, phrase: str
) -> None:
    html = client_for(owner).get(f"/usage/?{query}").content.decode()

    assert f"All your keys, {phrase}. A key whose bars jump" in html
    assert f"All keys, {phrase}." in html  # by model
    assert "per day, last 30 days" not in html


def test_a_years_chart_has_as_few_day_labels_as_a_months(seeded: ApiKey, owner: User, client_for) -> None:
    from billing.templatetags.billing_tags import bar_chart

    client = client_for(owner)
    year = client.get("/usage/?range=custom&from=2025-03-11&to=2026-03-10").context["daily"]
    month = client.get("/usage/").context["daily"]

    assert len(year) == 365
    for size, most in (("wide", 6), ("narrow", 5)):
        assert len(bar_chart(year, "requests", "Requests", size)["x_labels"]) <= most
        assert len(bar_chart(month, "requests", "Requests", size)["x_labels"]) <= most
    # The month keeps its label every 5 days, the last one on today; the year one every 65.
    assert [label["label"] for label in bar_chart(month, "requests", "Requests")["x_labels"]] == [
        "Feb 13",
        "Feb 18",
        "Feb 23",
        "Feb 28",
        "Mar 5",
        "Mar 10",
    ]
    assert [label["label"] for label in bar_chart(year, "requests", "Requests")["x_labels"]] == [
        "Apr 19",
        "Jun 23",
        "Aug 27",
        "Oct 31",
        "Jan 4",
        "Mar 10",
    ]

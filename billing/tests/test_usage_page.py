"""/usage/: exact totals of a seeded history, the spike, per-key and per-model breakdowns,
the key filter, and an outsider who never sees any of it. See conftest.py for the history."""

from __future__ import annotations

import re

from django.test import Client

from accounts.models import User
from billing.tests.conftest import History, add_usage
from dosportal.testing.html import text_of
from dosportal.testing.keys import key_for


def html_of(response) -> str:
    assert response.status_code == 200
    return response.content.decode()


def total(html: str, name: str) -> str:
    return text_of(re.search(rf'data-total="{name}">(.+?)</div>', html).group(1))


def row(html: str, attribute: str, value: object) -> list[str]:
    """The text of each cell of the table row carrying `attribute="value"`."""
    match = re.search(rf'<tr {attribute}="{value}"[^>]*>(.*?)</tr>', html, re.S)
    assert match, f"no row with {attribute}={value}"
    return cells(match.group(1))


def cells(fragment: str) -> list[str]:
    found = re.findall(r"<td[^>]*>(.*?)</td>", fragment, re.S)
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", cell)).strip() for cell in found]


def test_the_usage_page_requires_login(db: None) -> None:
    response = Client().get("/usage/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/usage/"


def test_it_shows_an_empty_state_when_there_is_no_usage(owner: User, client_for) -> None:
    html = html_of(client_for(owner).get("/usage/"))
    assert "No usage yet" in html
    assert "Create an API key" in html
    assert '<svg class="chart usage-chart"' not in html


def test_usage_older_than_the_window_is_not_shown_but_mentioned(owner: User, client_for) -> None:
    add_usage(key_for(owner, "Last quarter"), days_ago=45, count=3)

    html = html_of(client_for(owner).get("/usage/"))

    assert "No usage in the last 30 days" in html
    assert "Your most recent request was on" in html
    assert "data-total" not in html


def test_it_totals_the_last_30_days_exactly(history: History, owner: User, client_for) -> None:
    response = client_for(owner).get("/usage/")
    html = html_of(response)

    assert total(html, "requests") == "262"
    assert total(html, "tokens") == "394,000"
    assert total(html, "cost") == "$0.32"
    assert 'data-total="cost"><span class="money" title="$0.320200" data-micros="320200">' in html
    assert "266,000 input · 128,000 output" in html
    assert "1 failed · 9 active days" in html
    totals = response.context["totals"]
    assert (totals.requests, totals.prompt_tokens, totals.completion_tokens, totals.cost_micros, totals.failed) == (
        262,
        266_000,
        128_000,
        320_200,
        1,
    )


def test_the_daily_table_lists_each_day_with_usage_newest_first(history: History, owner: User, client_for) -> None:
    html = html_of(client_for(owner).get("/usage/"))

    days = re.findall(r'<tr data-day="(\d{4}-\d{2}-\d{2})"', html.split('id="usage-daily"')[1])
    assert days == [history.day(days_ago).isoformat() for days_ago in range(2, 11)]
    assert "the other 21 days had none" in html
    spike = history.day(3)
    # One precision for the whole column (4 decimals here) so the amounts line up on the point.
    assert row(html, "data-day", spike.isoformat()) == [
        f"{spike:%a}, {spike:%b} {spike.day} Spike",
        "200",
        "0",
        "200,000",
        "100,000",
        "$0.2500",
    ]
    assert row(html, "data-day", history.day(2).isoformat())[1:] == ["11", "1", "10,000", "5,000", "$0.0125"]
    assert row(html, "data-day", history.day(4).isoformat())[1:] == ["15", "0", "20,000", "5,000", "$0.0127"]
    assert row(html, "data-day", history.day(9).isoformat())[1:] == ["2", "0", "2,000", "1,000", "$0.0025"]
    footer = re.search(r"<tfoot>(.*?)</tfoot>", html, re.S).group(1)
    assert cells(footer) == ["Total", "262", "1", "266,000", "128,000", "$0.3202"]


def test_the_spike_day_is_marked_in_every_chart_and_only_that_day(history: History, owner: User, client_for) -> None:
    html = html_of(client_for(owner).get("/usage/"))

    charts = re.findall(
        r'<svg class="chart usage-chart usage-chart-(\w+)"[^>]*data-metric="(\w+)"(.*?)</svg>', html, re.S
    )
    # Each metric drawn twice: for a desktop's width and for a phone's.
    assert [(size, metric) for size, metric, _ in charts] == [
        (size, metric) for metric in ("requests", "tokens", "cost_micros") for size in ("wide", "narrow")
    ]
    charts = [(metric, svg) for _size, metric, svg in charts]
    spike_day = history.day(3).isoformat()
    expected_spike_values = {"requests": "200", "tokens": "300000", "cost_micros": "250000"}
    for metric, svg in charts:
        spikes = re.findall(r'<rect class="bar bar-spike"[^>]*data-day="([\d-]+)" data-value="(\d+)"', svg)
        assert spikes == [(spike_day, expected_spike_values[metric])], metric
        assert len(re.findall(r'<rect class="bar', svg)) == 9  # nine days with usage, one bar each
        # Every day of the window can be tapped for its value, quiet days included.
        assert len(re.findall(r'<rect class="hit"', svg)) == 30


def test_the_spike_alert_names_the_key_that_caused_it(history: History, owner: User, client_for) -> None:
    html = html_of(client_for(owner).get("/usage/"))

    alerts = re.findall(r'<div class="alert alert-spike".*?</div>\s*</div>', html, re.S)
    assert len(alerts) == 1
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", alerts[0]))
    spike = history.day(3)
    assert f"Unusual activity on {spike:%a}, {spike:%b} {spike.day}:" in text
    assert "200 requests, 300,000 tokens, $0.25" in text
    assert f"the key CI runner {history.leaked.hint} (200 requests)" in text


def test_usage_is_broken_down_per_key_with_each_keys_share(history: History, owner: User, client_for) -> None:
    html = html_of(client_for(owner).get("/usage/"))

    keys = re.findall(r'<tr data-key="(\d+)"', html)
    assert keys == [str(history.leaked.pk), str(history.production.pk)]  # biggest spender first
    leaked = row(html, "data-key", history.leaked.pk)
    assert leaked[0] == f"CI runner Revoked Spike {history.leaked.hint}"
    spike = history.day(3)
    assert leaked[2:] == ["206", "309,000", "$0.2575", "80%", f"{spike:%b} {spike.day} · 200 req"]
    production = row(html, "data-key", history.production.pk)
    assert production[0] == f"Production backend {history.production.hint}"
    assert production[2:6] == ["56", "85,000", "$0.0627", "20%"]
    # Each key has its own 30-day sparkline; only the leaked key's shows a spike bar.
    sparklines = re.findall(r'<svg class="chart sparkline".*?</svg>', html, re.S)
    assert len(sparklines) == 2
    assert sparklines[0].count("bar-spike") == 1
    assert sparklines[1].count("bar-spike") == 0


def test_usage_is_broken_down_per_model(history: History, owner: User, client_for) -> None:
    html = html_of(client_for(owner).get("/usage/"))

    assert row(html, "data-model", "dos-ai") == ["dos-ai", "257", "256,000", "128,000", "$0.3200"]
    assert row(html, "data-model", "dos-ai-embed") == ["dos-ai-embed", "5", "10,000", "0", "$0.0002"]


def test_filtering_by_a_key_shows_only_that_keys_usage(history: History, owner: User, client_for) -> None:
    response = client_for(owner).get(f"/usage/?key={history.leaked.pk}")
    html = html_of(response)

    assert response.context["selected_key"] == history.leaked
    assert total(html, "requests") == "206"
    assert total(html, "tokens") == "309,000"
    assert total(html, "cost") == "$0.25"
    assert 'title="$0.257500"' in html
    assert f'<option value="{history.leaked.pk}" selected>' in html
    assert row(html, "data-model", "dos-ai") == ["dos-ai", "206", "206,000", "103,000", "$0.2575"]
    assert 'data-model="dos-ai-embed"' not in html
    # The per-key table still compares every key, with the selected one highlighted.
    assert f'<tr data-key="{history.leaked.pk}" class="is-selected">' in html
    assert f'<tr data-key="{history.production.pk}">' in html


def test_the_key_filter_offers_active_keys_and_revoked_keys_that_have_usage(
    history: History, owner: User, client_for
) -> None:
    response = client_for(owner).get("/usage/")
    html = html_of(response)

    assert list(response.context["filter_keys"].order_by("name")) == [history.leaked, history.production]
    assert f"CI runner · {history.leaked.hint} (revoked)" in html
    assert "Old laptop" not in html  # revoked and never used
    assert "Outsider app" not in html


def test_an_own_revoked_key_without_usage_can_still_be_selected(history: History, owner: User, client_for) -> None:
    html = html_of(client_for(owner).get(f"/usage/?key={history.unused_revoked.pk}"))

    assert total(html, "requests") == "0"
    assert "No usage for this key in the last 30 days" in html


def test_another_accounts_key_id_is_a_404(history: History, owner: User, client_for) -> None:
    response = client_for(owner).get(f"/usage/?key={history.outsider_key.pk}")
    assert response.status_code == 404


def test_a_malformed_or_unknown_key_id_is_a_404(history: History, owner: User, client_for) -> None:
    client = client_for(owner)
    assert client.get("/usage/?key=abc").status_code == 404
    assert client.get("/usage/?key=-1").status_code == 404
    assert client.get("/usage/?key=999999").status_code == 404


def test_an_empty_key_parameter_means_all_keys(history: History, owner: User, client_for) -> None:
    html = html_of(client_for(owner).get("/usage/?key="))
    assert total(html, "requests") == "262"


def test_an_outsider_never_sees_the_owners_usage(history: History, outsider: User, client_for) -> None:
    html = html_of(client_for(outsider).get("/usage/"))

    assert total(html, "requests") == "1,000"
    assert total(html, "cost") == "$1.25"
    assert "Production backend" not in html
    assert "CI runner" not in html
    assert history.production.hint not in html


def test_an_htmx_request_gets_only_the_usage_body(history: History, owner: User, client_for) -> None:
    response = client_for(owner).get(f"/usage/?key={history.production.pk}", headers={"HX-Request": "true"})
    html = html_of(response)

    assert html.lstrip().startswith('<div id="usage-body">')
    assert "<html" not in html
    assert total(html, "requests") == "56"
    assert "HX-Request" in response["Vary"]


def test_a_second_user_key_with_a_burst_is_flagged_on_its_own_row(owner: User, client_for) -> None:
    steady = key_for(owner, "Steady")
    for days_ago in range(1, 8):
        add_usage(steady, days_ago=days_ago, count=4)
    add_usage(steady, days_ago=0, count=40)

    html = html_of(client_for(owner).get("/usage/"))

    assert row(html, "data-key", steady.pk)[0] == f"Steady Spike {steady.hint}"
    assert total(html, "requests") == "68"


def test_only_get_is_allowed(owner: User, client_for) -> None:
    assert client_for(owner).post("/usage/").status_code == 405


def test_the_page_costs_a_fixed_number_of_queries_however_many_keys_and_days(
    history: History, owner: User, client_for, django_assert_max_num_queries
) -> None:
    client = client_for(owner)
    for index in range(10):
        add_usage(key_for(owner, f"extra {index}"), days_ago=index, count=3)

    # session, user, daily, per key, their keys, per model, filter keys
    with django_assert_max_num_queries(8):
        html = html_of(client.get("/usage/"))
    assert len(re.findall(r'<tr data-key="', html)) == 12


def test_the_filter_gets_the_fragment_and_a_history_restore_the_whole_page(
    history: History, owner: User, client_for
) -> None:
    client = client_for(owner)

    fragment = client.get(f"/usage/?key={history.leaked.pk}", HTTP_HX_REQUEST="true")
    # Back after htmx's history cache missed: the whole page, or the fragment would become the page.
    restored = client.get(
        f"/usage/?key={history.leaked.pk}", HTTP_HX_REQUEST="true", HTTP_HX_HISTORY_RESTORE_REQUEST="true"
    )

    assert html_of(fragment).lstrip().startswith('<div id="usage-body">')
    assert html_of(restored).startswith("<!doctype html>")
    for response in (fragment, restored):
        assert "HX-Request" in response["Vary"]
        assert "no-store" in response["Cache-Control"]

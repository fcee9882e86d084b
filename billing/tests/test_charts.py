"""The server-rendered SVG chart: axis steps, labels, bar heights and the spike rule."""

from __future__ import annotations

import datetime as dt

from billing.selectors import DayUsage, mark_spikes, usage_window
from billing.templatetags.billing_tags import axis_label, bar_chart, nice_step


def series(*requests: int) -> list[DayUsage]:
    start = dt.date(2026, 3, 1)
    return [DayUsage(day=start + dt.timedelta(days=i), requests=n) for i, n in enumerate(requests)]


def test_the_window_is_today_and_the_29_days_before_in_utc() -> None:
    window = usage_window(today=dt.date(2026, 3, 30))
    assert (window.first_day, window.last_day, len(window.days)) == (dt.date(2026, 3, 1), dt.date(2026, 3, 30), 30)
    assert window.starts_at == dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    assert window.ends_at == dt.datetime(2026, 3, 31, tzinfo=dt.UTC)


def test_axis_steps_are_one_two_or_five_times_a_power_of_ten() -> None:
    assert [nice_step(raw) for raw in (0.3, 1, 1.1, 3, 7, 12, 45, 51, 180, 2_600)] == [
        1, 1, 2, 5, 10, 20, 50, 100, 200, 5_000,
    ]  # fmt: skip


def test_cost_axis_labels_have_as_many_decimals_as_the_step_needs() -> None:
    assert axis_label("cost_micros", 0, 100_000) == "$0"
    assert axis_label("cost_micros", 1_000_000, 500_000) == "$1.00"
    assert axis_label("cost_micros", 300, 100) == "$0.0003"
    assert axis_label("tokens", 1_500_000, 500_000) == "1.5M"


def test_a_day_three_times_the_median_of_the_other_active_days_is_a_spike() -> None:
    days = series(0, 10, 12, 8, 0, 36, 11, 33)
    mark_spikes(days)
    # The median of the other active days is 11 for both: 36 ≥ 33, and 33 ≥ 33 (inclusive); 12 < 3 × 11.
    assert [day.day.day for day in days if "requests" in day.spikes] == [6, 8]


def test_without_three_other_active_days_nothing_is_a_spike() -> None:
    days = series(1, 0, 500, 2)
    mark_spikes(days)
    assert not any(day.spikes for day in days)


def test_bars_scale_to_the_top_tick_and_tiny_days_stay_visible() -> None:
    days = series(1, 0, 1_000)
    chart = bar_chart(days, "requests", "Requests")

    assert [tick["label"] for tick in chart["ticks"]] == ["0", "500", "1k"]
    tallest, empty, smallest = chart["bars"][2], chart["bars"][1], chart["bars"][0]
    geometry = chart["geometry"]
    assert tallest["height"] == geometry.plot_height
    assert empty["height"] == 0
    assert smallest["height"] == 2.0  # 1/1000 of the plot would be invisible
    assert tallest["title"] == "Tue, Mar 3: 1,000 requests"


def test_an_empty_series_draws_an_axis_without_bars() -> None:
    chart = bar_chart(series(0, 0, 0), "cost_micros", "Cost")
    assert [tick["label"] for tick in chart["ticks"]] == ["$0"]
    assert all(bar["height"] == 0 for bar in chart["bars"])

"""Money filters and the server-rendered SVG charts of the usage page.

Charts are plain SVG computed here, not a JavaScript library: the page works
offline, with JavaScript off, and tests can read every bar's value.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

from django import template
from django.contrib.humanize.templatetags.humanize import intcomma
from django.utils.html import format_html

from billing.forms import AlertSettingsForm
from billing.money import exact_places, format_usd
from billing.selectors import DayUsage, alert_settings_for

register = template.Library()


@register.filter
def usd(micros: int | None, places: int | None = None) -> str:
    """`{{ micros|usd }}` is exact with at least 2 decimals ($5.00, $0.00015, $4.99985);
    `{{ micros|usd:2 }}` rounds for display."""
    if micros is None:
        return ""
    micros = int(micros)
    if places is None:
        places = exact_places(micros)
    return format_usd(micros, int(places))


@register.filter
def usd_exact(micros: int | None) -> str:
    """Six decimals, as the ledger stores it: `$4.999850`."""
    return "" if micros is None else format_usd(int(micros), 6)


CENT_MICROS = 10_000


@register.filter
def usd_headline(micros: int | None) -> str:
    """One money format for headlines everywhere: cents (`$14.99`), the exact micro-dollars in
    the tooltip (`$14.998956`), as in the ledger. Cut to the cent, never rounded up, so a
    balance never looks bigger than it is; a non-zero amount under a cent is `<$0.01`, never
    `$0.00`, which would read as nothing."""
    if micros is None:
        return ""
    micros = int(micros)
    if 0 < abs(micros) < CENT_MICROS:
        text = "<$0.01" if micros > 0 else "-<$0.01"
    else:
        sign = -1 if micros < 0 else 1
        text = format_usd(sign * (abs(micros) // CENT_MICROS) * CENT_MICROS, 2)
    return format_html('<span class="money" title="{}" data-micros="{}">{}</span>', format_usd(micros, 6), micros, text)


@register.filter
def compact(number: int | None) -> str:
    """1234 → 1.2k, 2000000 → 2M: axis labels only; tables show the full number."""
    if number is None:
        return ""
    value = float(number)
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            scaled = value / threshold
            text = f"{scaled:.1f}".rstrip("0").rstrip(".") if scaled < 10 else f"{scaled:.0f}"
            return f"{text}{suffix}"
    return f"{int(value)}"


@register.filter
def percent(fraction: float | None) -> str:
    if not fraction:
        return "0%"
    if fraction < 0.01:
        return "<1%"
    return f"{round(fraction * 100)}%"


@register.filter
def percent_width(fraction: float | None) -> str:
    """An SVG width for proportion bars (an attribute, not a style: the CSP allows no inline
    styles); at least a sliver when there is any share."""
    if not fraction:
        return "0%"
    return f"{max(fraction * 100, 1.5):.1f}%"


@register.inclusion_tag("billing/_alert_settings_card.html", takes_context=True)
def alert_settings_card(context: template.Context) -> dict[str, object]:
    """The alerts card on /settings/ (a page of the accounts app, which knows nothing of billing)."""
    form = AlertSettingsForm(instance=alert_settings_for(user=context["request"].user))
    return {"alert_form": form, "csrf_token": context["csrf_token"]}


# --- Charts -----------------------------------------------------------------

METRIC_NOUNS = {"requests": ("request", "requests"), "tokens": ("token", "tokens"), "cost_micros": ("", "")}


def metric_value_text(metric: str, value: int) -> str:
    if metric == "cost_micros":
        return usd(value)
    singular, plural = METRIC_NOUNS[metric]
    return f"{intcomma(value)} {singular if value == 1 else plural}"


def nice_step(raw: float) -> int:
    """The smallest 1, 2 or 5 × 10^k that is at least `raw` (an integer, at least 1)."""
    if raw <= 1:
        return 1
    exponent = math.floor(math.log10(raw))
    for multiple in (1, 2, 5, 10):
        step = multiple * 10**exponent
        if step >= raw:
            return int(step)
    return int(10 ** (exponent + 1))  # pragma: no cover - the loop always returns


def axis_label(metric: str, value: int, step: int) -> str:
    if metric == "cost_micros":
        # Enough decimals to tell the ticks apart: a $0.0005 step needs four.
        if not value:
            return "$0"
        exponent = math.floor(math.log10(step))
        return format_usd(value, max(2, min(6, 6 - exponent)))
    return compact(value)


@dataclass(frozen=True)
class ChartGeometry:
    # About the card's width on a desktop, so 11px labels render near 11px.
    width: int = 1000
    height: int = 250
    left: int = 64
    right: int = 24  # room for the last day's label, centred under the last bar
    top: int = 26
    bottom: int = 30
    ticks: int = 4
    label_every: int = 5  # an x label every this many days, counted back from today

    @property
    def plot_width(self) -> int:
        return self.width - self.left - self.right

    @property
    def plot_height(self) -> int:
        return self.height - self.top - self.bottom

    @property
    def baseline(self) -> int:
        return self.height - self.bottom


# The phone's chart: about a 390 px screen's card, so its labels too render near their CSS size
# and the whole month fits the width (no sideways scrolling); a label every week.
NARROW = ChartGeometry(width=340, height=220, left=46, right=14, top=22, bottom=26, label_every=7)
GEOMETRIES = {"wide": ChartGeometry(), "narrow": NARROW}


def day_label(day: dt.date) -> str:
    return f"{day:%b} {day.day}"


@register.inclusion_tag("billing/_bar_chart.html")
def bar_chart(series: Sequence[DayUsage], metric: str, label: str, size: str = "wide") -> dict[str, object]:
    """Bars for one metric over the window; spike days in the alarm colour, with their value.
    `size` "narrow" draws the same bars for a phone's width."""
    geometry = GEOMETRIES[size]
    values = [day.value(metric) for day in series]
    peak = max(values, default=0)
    step = nice_step(peak / geometry.ticks) if peak else 1
    top = step * max(1, math.ceil(peak / step)) if peak else geometry.ticks
    count = max(len(series), 1)
    slot = geometry.plot_width / count
    bar_width = max(2.0, slot * 0.7)

    bars = []
    for index, day in enumerate(series):
        value = values[index]
        height = value / top * geometry.plot_height if value else 0.0
        if value and height < 2:
            height = 2.0  # a day with any usage stays visible next to a huge spike
        x = geometry.left + index * slot + (slot - bar_width) / 2
        spike = metric in day.spikes
        bars.append(
            {
                "x": round(x, 2),
                "y": round(geometry.baseline - height, 2),
                "width": round(bar_width, 2),
                "height": round(height, 2),
                "spike": spike,
                "value": value,
                "day": day.day,
                "title": f"{day.day:%a}, {day_label(day.day)}: {metric_value_text(metric, value)}"
                + (" — spike" if spike else ""),
                "label_x": round(x + bar_width / 2, 2),
                # The whole day's column, for a tap or a hover anywhere above the day.
                "slot_x": round(geometry.left + index * slot, 2),
                "slot_width": round(slot, 2),
                "label_y": round(geometry.baseline - height - 6, 2),
                "label": axis_label(metric, value, step),
            }
        )

    tick_values = [step * index for index in range(int(top // step) + 1)] if peak else [0]
    ticks = [
        {
            "y": round(geometry.baseline - tick / top * geometry.plot_height, 2),
            "label": axis_label(metric, tick, step),
        }
        for tick in tick_values
    ]
    # Label every fifth day counted back from today, so today always has a label.
    # Any range (billing.ranges): past 30 days, a label every so many more days, so a year
    # has as few labels as a month and they never overlap.
    label_every = geometry.label_every * math.ceil(count / 30)
    x_labels = [
        {"x": bar["label_x"], "label": day_label(bar["day"])}
        for index, bar in enumerate(bars)
        if (len(bars) - 1 - index) % label_every == 0
    ]
    return {
        "geometry": geometry,
        "bars": bars,
        "ticks": ticks,
        "x_labels": x_labels,
        "metric": metric,
        "label": label,
        "has_spike": any(bar["spike"] for bar in bars),
        "right_edge": geometry.width - geometry.right,
        "size": size,
    }


@register.inclusion_tag("billing/_sparkline.html")
def sparkline(series: Sequence[DayUsage], metric: str = "requests") -> dict[str, object]:
    width, height, gap = 120, 28, 1
    values = [day.value(metric) for day in series]
    peak = max(values, default=0) or 1
    count = max(len(series), 1)
    slot = width / count
    bars = []
    for index, day in enumerate(series):
        value = values[index]
        bar_height = max(1.5, value / peak * (height - 2)) if value else 0
        bars.append(
            {
                "x": round(index * slot, 2),
                "y": round(height - bar_height, 2),
                "width": round(slot - gap, 2),
                "height": round(bar_height, 2),
                "spike": metric in day.spikes,
            }
        )
    return {"bars": bars, "width": width, "height": height}

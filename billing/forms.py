"""Forms: granting credit and editing model prices in dollars (admin), alert settings, and the usage page's range."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from django import forms

from billing.models import AlertSettings, LedgerEntry, ServedModel
from billing.money import AmountTooLarge, InvalidAmount, exact_places, format_usd, micros_to_usd, usd_to_micros
from billing.ranges import CUSTOM, DEFAULT_PRESET, PRESETS, RangeError, checked_window, preset_window
from billing.selectors import UsageWindow


def _clean_usd(value: str | Decimal, *, field: str = "amount") -> int:
    try:
        return usd_to_micros(value)
    except InvalidAmount:
        raise forms.ValidationError(
            f"Enter the {field} in US dollars with at most 6 decimals, e.g. 10 or 2.50.", code="invalid"
        ) from None


class GrantCreditsForm(forms.Form):
    """One form for every manual ledger entry an administrator may write."""

    KIND_CHOICES = [
        (LedgerEntry.Kind.GRANT, "Grant (free credit)"),
        (LedgerEntry.Kind.TOPUP, "Top-up (paid for outside the portal)"),
        (LedgerEntry.Kind.REFUND, "Refund (credit returned for a bad request)"),
        (LedgerEntry.Kind.ADJUSTMENT, "Adjustment (may be negative)"),
    ]

    amount_usd = forms.CharField(
        label="Amount (USD)",
        max_length=32,
        help_text="Exact, up to 6 decimals. Negative only for an adjustment; it may not take a balance below zero.",
        widget=forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off", "placeholder": "10.00"}),
    )
    kind = forms.ChoiceField(choices=KIND_CHOICES, initial=LedgerEntry.Kind.GRANT)
    note = forms.CharField(
        max_length=255, required=False, help_text="Shown to the user in their ledger, e.g. “Invoice 2024-118”."
    )

    def clean_amount_usd(self) -> int:
        micros = _clean_usd(self.cleaned_data["amount_usd"])
        if micros == 0:
            raise forms.ValidationError("The amount must not be zero.", code="zero")
        return micros

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        micros, kind = cleaned.get("amount_usd"), cleaned.get("kind")
        if micros is not None and micros < 0 and kind != LedgerEntry.Kind.ADJUSTMENT:
            self.add_error("amount_usd", "Only an adjustment can be negative.")
        return cleaned

    @property
    def amount_micros(self) -> int:
        return self.cleaned_data["amount_usd"]


def _price_field(direction: str, help_text: str) -> forms.DecimalField:
    return forms.DecimalField(
        label=f"{direction} price (USD per 1M tokens)",
        min_value=0,
        max_digits=18,
        decimal_places=6,
        help_text=help_text,
    )


class ServedModelAdminForm(forms.ModelForm):
    """Prices are stored as integer micro-USD per million tokens; admins type dollars."""

    input_price_usd = _price_field("Input", "e.g. 0.50 — charged per million prompt tokens.")
    output_price_usd = _price_field("Output", "e.g. 1.50 — charged per million completion tokens.")

    class Meta:
        model = ServedModel
        fields = ["name", "upstream_model", "kind", "is_active"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial.setdefault("input_price_usd", micros_to_usd(self.instance.input_price_micros_per_million))
            self.initial.setdefault("output_price_usd", micros_to_usd(self.instance.output_price_micros_per_million))

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        # Set on the instance before model validation runs, so the price constraints are checked.
        if cleaned.get("input_price_usd") is not None:
            self.instance.input_price_micros_per_million = _clean_usd(cleaned["input_price_usd"], field="price")
        if cleaned.get("output_price_usd") is not None:
            self.instance.output_price_micros_per_million = _clean_usd(cleaned["output_price_usd"], field="price")
        return cleaned


class AlertSettingsForm(forms.ModelForm):
    """/settings/: which e-mails an account wants; the threshold typed in dollars."""

    low_balance_threshold_usd = forms.CharField(
        label="Warn me below (USD)",
        max_length=32,
        help_text="Of available credit. Sent once each time the credit falls below it; default $1.00.",
        widget=forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off", "placeholder": "1.00"}),
    )

    class Meta:
        model = AlertSettings
        fields = ["low_balance_enabled", "key_spend_enabled", "weekly_summary_enabled"]
        labels = {
            "low_balance_enabled": "E-mail me when my available credit runs low",
            "key_spend_enabled": "E-mail me when a key reaches 80% and 100% of its spend limit",
            "weekly_summary_enabled": "E-mail me a weekly usage summary",
        }
        help_texts = {"weekly_summary_enabled": "Requests, tokens and cost of the past week (Monday to Sunday, UTC)."}

    field_order = ["low_balance_enabled", "low_balance_threshold_usd", "key_spend_enabled", "weekly_summary_enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "alerts-%s")
        super().__init__(*args, **kwargs)
        threshold = self.instance.low_balance_threshold_micros
        self.initial.setdefault("low_balance_threshold_usd", format_usd(threshold, exact_places(threshold))[1:])

    def clean_low_balance_threshold_usd(self) -> int:
        typed = self.cleaned_data["low_balance_threshold_usd"].strip().removeprefix("$").replace(",", "")
        out_of_range = forms.ValidationError("Choose a threshold from $0.01 to $1,000,000.", code="range")
        try:
            micros = usd_to_micros(typed)
        except AmountTooLarge:
            raise out_of_range from None
        except InvalidAmount:
            micros = _clean_usd(typed, field="threshold")  # raises the form's wording
        if not MIN_ALERT_MICROS <= micros <= MAX_ALERT_MICROS:
            raise out_of_range
        return micros

    def save(self, commit: bool = True) -> AlertSettings:
        self.instance.low_balance_threshold_micros = self.cleaned_data["low_balance_threshold_usd"]
        return super().save(commit=commit)


MIN_ALERT_MICROS = 10_000
MAX_ALERT_MICROS = 1_000_000 * 1_000_000


class UsageRangeForm(forms.Form):
    """The usage page's days, from the query string: a preset (`?range=7d`) or a custom range
    (`?range=custom&from=2026-11-01&to=2026-11-15`; `range` may be left out when both dates are
    given). Nothing at all is the last 30 days. `window` is the range once the form is valid."""

    range = forms.ChoiceField(
        choices=[*PRESETS.items(), (CUSTOM, "Custom")],
        required=False,
        error_messages={"invalid_choice": "Choose one of the ranges offered."},
    )

    def __init__(self, data: Mapping[str, str], *, today: dt.date) -> None:
        super().__init__(data)
        self.today = today
        # `from` is a Python keyword: these two are added here rather than declared above.
        for name, label in (("from", "From"), ("to", "To")):
            self.fields[name] = forms.DateField(
                label=label,
                required=False,
                input_formats=["%Y-%m-%d"],
                error_messages={"invalid": "Enter a day as YYYY-MM-DD, e.g. 2026-11-01."},
                widget=forms.DateInput(attrs={"type": "date", "max": today.isoformat()}, format="%Y-%m-%d"),
            )

    @property
    def preset(self) -> str:
        """The preset chosen, CUSTOM, or the default when nothing (or nothing valid) is."""
        chosen = (self.cleaned_data.get("range") if hasattr(self, "cleaned_data") else "") or ""
        if chosen:
            return chosen
        if self.data.get("from") or self.data.get("to"):
            return CUSTOM
        return DEFAULT_PRESET

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        preset = self.preset
        try:
            if preset != CUSTOM:
                cleaned["window"] = preset_window(preset, today=self.today)
            elif not cleaned.get("from") or not cleaned.get("to"):
                raise forms.ValidationError("Choose both a start and an end day.", code="incomplete")
            else:
                cleaned["window"] = checked_window(cleaned["from"], cleaned["to"], today=self.today)
        except RangeError as error:
            raise forms.ValidationError(str(error), code="range") from None
        return cleaned

    @property
    def window(self) -> UsageWindow:
        """The chosen days; the default preset's when the form is not valid (its errors say why)."""
        if self.is_valid():
            return self.cleaned_data["window"]
        return preset_window(DEFAULT_PRESET, today=self.today)

    def query_params(self) -> list[tuple[str, str]]:
        """The query parameters that show this range again (for links and forms that keep it);
        none for the default, so the plain `/usage/` stays the plain URL."""
        if not self.is_valid() or self.preset == DEFAULT_PRESET:
            return []
        if self.preset == CUSTOM:
            window = self.cleaned_data["window"]
            return [("range", CUSTOM), ("from", window.first_day.isoformat()), ("to", window.last_day.isoformat())]
        return [("range", self.preset)]

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts.models import User
from apikeys.keys import KEY_IN_TEXT
from apikeys.limits import PERIODS
from apikeys.models import LEAKED_URL_MAX_LENGTH, NAME_MAX_LENGTH, ApiKey, SpendPeriod
from apikeys.services import UNSET, KeySettings, check_key_name_free, clean_key_settings
from billing.models import ServedModel
from billing.money import InvalidAmount, micros_to_usd, usd_to_micros
from dosportal.clientip import parse_networks

EXPIRY_CHOICES = [
    ("never", "No expiry"),
    ("7", "In 7 days"),
    ("30", "In 30 days"),
    ("90", "In 90 days"),
    ("date", "On a date"),
]
KEEP = "keep"


def key_name_field(**kwargs: Any) -> forms.CharField:
    """A key's name as the dashboard, the admin and the commands take it: trimmed, required, at
    most the model's length, in the same words everywhere."""
    return forms.CharField(
        max_length=NAME_MAX_LENGTH,
        error_messages={
            "required": "Give the key a name, e.g. “Production backend”.",
            "max_length": f"Keep the name to {NAME_MAX_LENGTH} characters or fewer.",
        },
        **kwargs,
    )


def clean_key_name(name: str) -> str:
    """A name given outside a form (a command's argument), cleaned as the forms clean it."""
    return key_name_field().clean(name)


class ApiKeySettingsForm(forms.Form):
    """A key's optional settings, for the create form's "advanced" section and the edit dialog.

    Blank means "none" for each (never expires, no limit, no cap, any address); models are
    "all models" by an explicit checkbox, never by an empty selection.
    """

    expiry = forms.ChoiceField(label="Expires", choices=EXPIRY_CHOICES, initial="never", required=False)
    expires_on = forms.DateField(
        label="Expiry date (UTC)",
        required=False,
        help_text="With “On a date”: the key works through this day and stops at the next midnight UTC.",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    spend_limit = forms.DecimalField(
        label="Spend limit (USD)",
        required=False,
        min_value=Decimal(0),
        max_digits=16,
        decimal_places=6,
        help_text=(
            "Blank for no limit. Periods are UTC; weeks start on Monday. Past the limit, calls get 402 until it resets."
        ),
        widget=forms.NumberInput(attrs={"step": "0.01", "min": "0", "placeholder": "No limit", "inputmode": "decimal"}),
    )
    spend_period = forms.ChoiceField(label="Per", choices=SpendPeriod.choices, initial="month", required=False)
    # A choice, not a checkbox: a form posted without it (only a name) makes a key for all models,
    # and "some models" with none ticked is an error, never "all".
    model_scope = forms.ChoiceField(
        label="Models this key may use",
        choices=[("all", "All models, including ones added later"), ("some", "Only the models ticked below")],
        initial="all",
        required=False,
        widget=forms.RadioSelect,
    )
    allowed_models = forms.MultipleChoiceField(
        label="Only these models", required=False, widget=forms.CheckboxSelectMultiple, choices=[]
    )
    max_concurrency = forms.IntegerField(
        label="Max concurrent requests",
        required=False,
        min_value=1,
        max_value=10_000,
        help_text="Blank for no cap. Requests past it get 429 until one in flight finishes.",
        widget=forms.NumberInput(attrs={"placeholder": "No cap", "inputmode": "numeric"}),
    )
    allowed_ips = forms.CharField(
        label="Allowed IP addresses",
        required=False,
        help_text="Addresses or CIDR ranges (IPv4 or IPv6), separated by commas or new lines. Blank for any address.",
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "e.g. 203.0.113.0/24, 2001:db8::/32"}),
    )

    pause_on_unusual_spend = forms.BooleanField(
        label="Pause on unusual spend",
        required=False,
        help_text=(
            "Suspend the key when an hour's spend is far above its usual (see Settings › E-mail alerts); "
            "calls then get 403 until you resume it here."
        ),
    )

    def __init__(self, *args: Any, api_key: ApiKey | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "key-%s")
        self.api_key = api_key
        if api_key is not None and not args and "initial" not in kwargs:
            kwargs["initial"] = initial_for(api_key)
        super().__init__(*args, **kwargs)
        self.fields["allowed_models"].choices = [
            (name, name) for name in ServedModel.objects.filter(is_active=True).values_list("name", flat=True)
        ]
        if api_key is not None and api_key.expires_at is not None:
            when = api_key.expires_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
            self.fields["expiry"].choices = [(KEEP, f"Keep: {when}"), *EXPIRY_CHOICES]

    def _expires_at(self) -> Any:
        choice = self.cleaned_data.get("expiry") or "never"
        now = timezone.now()
        if choice == KEEP:
            return UNSET
        if choice == "never":
            return None
        if choice == "date":
            day = self.cleaned_data.get("expires_on")
            if day is None:
                self.add_error("expires_on", "Choose the date, or another expiry.")
                return UNSET
            return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC) + dt.timedelta(days=1)
        return now + dt.timedelta(days=int(choice))

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        changes: dict[str, Any] = {"expires_at": self._expires_at()}
        limit = cleaned.get("spend_limit")
        if limit is None:
            changes["spend_limit_micros"], changes["spend_period"] = None, ""
        else:
            try:
                changes["spend_limit_micros"] = usd_to_micros(limit)
            except InvalidAmount:
                self.add_error("spend_limit", "Use at most 6 decimal places.")
            period = cleaned.get("spend_period")
            if period not in PERIODS:
                self.add_error("spend_period", "Choose the period.")
            changes["spend_period"] = period
        if (cleaned.get("model_scope") or "all") == "all":
            changes["allowed_models"] = None
        else:
            models = cleaned.get("allowed_models") or []
            if not models and "allowed_models" not in self.errors:
                self.add_error("allowed_models", "Tick at least one model, or choose “All models”.")
            changes["allowed_models"] = list(models)
        changes["max_concurrency"] = cleaned.get("max_concurrency")
        ips = [part.strip() for part in (cleaned.get("allowed_ips") or "").replace("\n", ",").split(",")]
        ips = [part for part in ips if part]
        changes["allowed_ips"] = ips or None
        changes["pause_on_unusual_spend"] = bool(cleaned.get("pause_on_unusual_spend"))
        if not self.errors:
            expires_at = changes["expires_at"]
            check = KeySettings(
                expires_at=None if expires_at is UNSET else expires_at,
                **{field: value for field, value in changes.items() if field != "expires_at"},
            )
            try:
                clean_key_settings(check)
            except ValidationError as error:
                expiry_field = "expires_on" if cleaned.get("expiry") == "date" else "expiry"
                for field, messages in error.message_dict.items():
                    field = expiry_field if field == "expires_at" else field
                    self.add_error(field if field in self.fields else None, messages)
        self.changes = changes
        return cleaned

    @property
    def settings_have_errors(self) -> bool:
        """An error among the optional settings (not the name): their section opens to show it."""
        return any(field != "name" for field in self.errors)

    def key_settings(self) -> KeySettings:
        """For a new key (where "keep" cannot occur)."""
        changes = dict(self.changes)
        if changes.get("expires_at") is UNSET:
            changes["expires_at"] = None
        return KeySettings(**changes)


def initial_for(api_key: ApiKey) -> dict[str, Any]:
    limit = api_key.spend_limit_micros
    return {
        "expiry": KEEP if api_key.expires_at else "never",
        "spend_limit": micros_to_usd(limit).normalize() if limit is not None else None,
        "spend_period": api_key.spend_period or "month",
        "model_scope": "all" if api_key.allowed_models is None else "some",
        "allowed_models": api_key.allowed_models or [],
        "max_concurrency": api_key.max_concurrency,
        "allowed_ips": ", ".join(api_key.allowed_ips or []),
        "pause_on_unusual_spend": api_key.pause_on_unusual_spend,
    }


class ApiKeyCreateForm(ApiKeySettingsForm):
    name = key_name_field(
        label="Key name",
        help_text="Something to tell your keys apart later, such as the app or environment using it.",
        widget=forms.TextInput(attrs={"placeholder": "e.g. Production backend", "autocomplete": "off"}),
    )
    field_order = ["name"]

    def __init__(self, *args: Any, owner: User | None = None, **kwargs: Any) -> None:
        self.owner = owner
        super().__init__(*args, **kwargs)

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if self.owner is not None:
            check_key_name_free(owner=self.owner, name=name)
        return name


class ApiKeyEditForm(ApiKeySettingsForm):
    """A key's name and settings. Loosening a fence (`loosened_fences`) needs a fresh sign-in,
    as creating a key does (apikeys.settings_views.key_edit); tightening or renaming does not."""

    name = key_name_field(label="Name")
    field_order = ["name"]

    def __init__(self, *args: Any, api_key: ApiKey, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "edit-%s")  # its dialog shares the page with the create form
        if not args and "initial" not in kwargs:
            kwargs["initial"] = {**initial_for(api_key), "name": api_key.name}
        super().__init__(*args, api_key=api_key, **kwargs)

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        assert self.api_key is not None
        check_key_name_free(owner=self.api_key.owner, name=name, exclude_id=self.api_key.pk)
        return name

    def loosened_fences(self) -> list[str]:
        """The settings this valid form would remove or widen on the key, by field name.

        Loosening: an expiry removed or moved later; allowed addresses removed or any new range
        not inside an old one; allowed models removed or a model added; the concurrency cap
        removed or raised; the spend limit removed or raised, or its period changed at all
        (a longer period is what a stolen session would use to lift a daily cap, and a shorter
        one resets more often: comparing limits across periods is not worth a mistake).
        Adding a fence where there was none, lowering or narrowing one is tightening."""
        assert self.api_key is not None
        key, changes = self.api_key, self.changes
        loosened = []
        expires_at = changes["expires_at"]
        if (
            key.expires_at is not None
            and expires_at is not UNSET
            and (expires_at is None or expires_at > key.expires_at)
        ):
            loosened.append("expires_at")
        if key.allowed_ips is not None and not _networks_within(changes["allowed_ips"], key.allowed_ips):
            loosened.append("allowed_ips")
        wanted_models = changes["allowed_models"]
        if key.allowed_models is not None and (wanted_models is None or set(wanted_models) - set(key.allowed_models)):
            loosened.append("allowed_models")
        cap = changes["max_concurrency"]
        if key.max_concurrency is not None and (cap is None or cap > key.max_concurrency):
            loosened.append("max_concurrency")
        limit = changes["spend_limit_micros"]
        if key.spend_limit_micros is not None and (
            limit is None or limit > key.spend_limit_micros or changes["spend_period"] != key.spend_period
        ):
            loosened.append("spend_limit")
        return loosened


def _networks_within(wanted: list[str] | None, allowed: list[str]) -> bool:
    """Every network of `wanted` lies inside one of `allowed` (None: any address, so no)."""
    if wanted is None:
        return False
    fences = parse_networks(allowed)
    return all(
        any(network.version == fence.version and network.subnet_of(fence) for fence in fences)  # type: ignore[arg-type]
        for network in parse_networks(wanted)
    )


class ApiKeyRollForm(forms.Form):
    grace = forms.TypedChoiceField(
        label="The old secret keeps working",
        choices=[("0", "Not at all: stop it now"), ("1", "For 1 hour"), ("24", "For 24 hours"), ("168", "For 7 days")],
        coerce=int,
        initial="24",
        widget=forms.RadioSelect,
    )


LEAK_REPORT_MAX_KEYS = 20


class LeakReportForm(forms.Form):
    """The public /report-leaked-key/ form: text holding one or more keys, and where it was found.

    The text may be a whole log line or paste: every `dos_sk_…` in it is reported. A text with
    nothing shaped like a key is an error (that reveals nothing: the format is public); whether
    a key was real and active is never said."""

    text = forms.CharField(
        label="The key",
        max_length=10_000,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "autocomplete": "off"}),
        help_text="Paste the key, or the text around it: every key starting with dos_sk_ is reported.",
        error_messages={"required": "Paste the key you found."},
    )
    found_at = forms.CharField(
        label="Where you found it",
        max_length=LEAKED_URL_MAX_LENGTH,
        help_text="A link (https://…) or a few words, e.g. “a public paste site”. The key's owner is told.",
        error_messages={"required": "Say where you found the key, so its owner can remove it."},
    )

    def clean_text(self) -> list[str]:
        tokens = list(dict.fromkeys(KEY_IN_TEXT.findall(self.cleaned_data["text"])))
        if not tokens:
            raise ValidationError("No DOS AI key in this text: keys start with dos_sk_ and have 32 more characters.")
        if len(tokens) > LEAK_REPORT_MAX_KEYS:
            raise ValidationError(f"Report at most {LEAK_REPORT_MAX_KEYS} keys at a time.")
        return tokens

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from accounts.security import SecurityContext
from apikeys.forms import key_name_field
from apikeys.models import ApiKey
from apikeys.services import (
    KeySettings,
    api_key_revoke,
    api_key_update,
    clean_key_settings,
    describe_key_settings,
)
from billing.money import InvalidAmount, micros_to_usd, usd_to_micros


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


class ApiKeyAdminForm(forms.ModelForm):
    """The same settings as the dashboard, saved through `api_key_update` (the same rules)."""

    spend_limit_usd = forms.DecimalField(
        label="Spend limit (USD)", required=False, min_value=Decimal(0), decimal_places=6, max_digits=16,
        help_text="Blank for no limit; give the period too.",
    )  # fmt: skip
    models_text = forms.CharField(
        label="Allowed models",
        required=False,
        help_text="Served-model names, comma-separated. Blank means ALL models (explicitly, including later ones).",
    )
    name = key_name_field()
    ips_text = forms.CharField(
        label="Allowed IPs",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Addresses or CIDR ranges, comma- or line-separated. Blank means any address.",
    )

    class Meta:
        model = ApiKey
        fields = ["name", "expires_at", "spend_period", "max_concurrency"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        key = self.instance
        if not self.is_bound and key.pk:
            if key.spend_limit_micros is not None:
                self.initial["spend_limit_usd"] = micros_to_usd(key.spend_limit_micros).normalize()
            self.initial["models_text"] = ", ".join(key.allowed_models or [])
            self.initial["ips_text"] = ", ".join(key.allowed_ips or [])

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        limit = cleaned.get("spend_limit_usd")
        changes: dict[str, Any] = {
            "expires_at": cleaned.get("expires_at"),
            "max_concurrency": cleaned.get("max_concurrency"),
            "allowed_models": _split(cleaned.get("models_text") or "") or None,
            "allowed_ips": _split(cleaned.get("ips_text") or "") or None,
            "spend_limit_micros": None,
            "spend_period": "",
        }
        if limit is not None:
            try:
                changes["spend_limit_micros"] = usd_to_micros(limit)
            except InvalidAmount:
                self.add_error("spend_limit_usd", "Use at most 6 decimal places.")
            if not cleaned.get("spend_period"):
                self.add_error("spend_period", "Choose the period of the spend limit.")
            changes["spend_period"] = cleaned.get("spend_period") or ""
        if not self.errors:
            unchanged_expiry = changes["expires_at"] == self.instance.expires_at
            check = {**changes, "expires_at": None if unchanged_expiry else changes["expires_at"]}
            try:
                clean_key_settings(KeySettings(**check))
            except ValidationError as error:
                fields = {"spend_limit": "spend_limit_usd", "allowed_models": "models_text", "allowed_ips": "ips_text"}
                for field, problems in error.message_dict.items():
                    self.add_error(fields.get(field, field if field in self.fields else None), problems)
        self.changes = changes
        return cleaned

    def _post_clean(self) -> None:
        # The model's own validation would run the constraints on a half-updated instance;
        # api_key_update validates the whole change in save_model instead.
        pass


class _Refused(Exception):
    """api_key_update refused a change the admin form let through."""


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("active", "Active"), ("revoked", "Revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["status", "name", "owner", "hint", "last_used_at", "created_at", "revoked_at"]
    list_display_links = ["name"]
    list_filter = [StatusFilter, "created_at"]
    date_hierarchy = "created_at"
    search_fields = ["owner__email", "name", "hint"]
    list_select_related = ["owner"]
    # hashed_key is deliberately absent: it identifies the key to anyone with the database.
    form = ApiKeyAdminForm
    fieldsets = [
        (None, {"fields": ["owner", "name", "hint", "created_at", "last_used_at", "revoked_at"]}),
        (
            "Settings",
            {
                "fields": [
                    "expires_at",
                    ("spend_limit_usd", "spend_period"),
                    "models_text",
                    "max_concurrency",
                    "ips_text",
                    "settings_summary",
                    "rolled_at",
                    "previous_key_expires_at",
                ]
            },
        ),
    ]
    readonly_fields = [
        "owner",
        "hint",
        "created_at",
        "last_used_at",
        "revoked_at",
        "settings_summary",
        "rolled_at",
        "previous_key_expires_at",
    ]
    actions = ["revoke_selected"]
    change_form_template = "admin/apikeys/apikey/change_form.html"

    @admin.display(description="In effect")
    def settings_summary(self, obj: ApiKey) -> str:
        return "; ".join(describe_key_settings(obj)) if obj.pk else ""

    def get_fieldsets(self, request: HttpRequest, obj: ApiKey | None = None) -> list[Any]:
        if obj is not None and obj.revoked_at is not None:  # a revoked key's settings no longer change
            return [(None, {"fields": ["owner", "name", "hint", "created_at", "last_used_at", "revoked_at"]}),
                    ("Settings", {"fields": ["settings_summary"]})]  # fmt: skip
        return super().get_fieldsets(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None and obj.revoked_at is not None:
            readonly.append("name")
        return readonly

    def save_model(self, request: HttpRequest, obj: ApiKey, form: ApiKeyAdminForm, change: bool) -> None:
        try:
            api_key_update(api_key=obj, name=form.cleaned_data["name"], **form.changes)
        except ValidationError as error:
            # Raised after the form validated (e.g. a model name that does not exist): say so, keep the key.
            self.message_user(request, " ".join(error.messages), messages.ERROR)
            raise _Refused from None

    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return super().changeform_view(request, *args, **kwargs)
        except _Refused:
            return HttpResponseRedirect(request.get_full_path())

    def get_urls(self) -> list[Any]:
        revoke = self.admin_site.admin_view(require_POST(self.revoke_view))
        return [path("<int:key_id>/revoke/", revoke, name="apikeys_apikey_revoke"), *super().get_urls()]

    def revoke_view(self, request: HttpRequest, key_id: int) -> HttpResponse:
        api_key = get_object_or_404(ApiKey, pk=key_id)
        if not self.has_change_permission(request, api_key):
            raise PermissionDenied
        if api_key.revoked_at is None:
            api_key_revoke(api_key=api_key)
            self.message_user(request, f"Revoked “{api_key.name}”. Requests using it now fail.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:apikeys_apikey_change", args=[api_key.pk]))

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A key made here would have to show its raw value in the admin; use the
        # dashboard or `manage.py create_api_key` instead.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        # Revoke instead: the row stays so past usage remains attributable to it.
        return False

    @admin.display(description="status", ordering="revoked_at")
    def status(self, obj: ApiKey) -> str:
        return "Active" if obj.is_active else "Revoked"

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = 0
        for api_key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(api_key=api_key, context=SecurityContext.from_request(request))
            revoked += 1
        noun = "key" if revoked == 1 else "keys"
        self.message_user(request, f"Revoked {revoked} {noun}.", messages.SUCCESS)

"""Admin for prices, credit, the ledger and usage.

The ledger and usage records are append-only evidence: the admin shows them but
cannot add, edit or delete them. Credit changes go through `credits_grant` (the
grant form and the changelist action), which writes the ledger entry and the
balance in one transaction, exactly as the command does.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from accounts.models import SecurityEvent
from accounts.security import security_event_record
from billing.forms import GrantCreditsForm, ServedModelAdminForm
from billing.models import (
    AlertSettings,
    AlertState,
    CreditAccount,
    CreditHold,
    LedgerEntry,
    ServedModel,
    UpstreamEndpoint,
    UsageRecord,
)
from billing.money import format_usd
from billing.selectors import ledger_sum_micros
from billing.services import CreditError, credits_grant
from billing.templatetags.billing_tags import usd


def _usd(micros: int) -> str:
    return format_usd(micros, 6)


class ReadOnlyAdmin(admin.ModelAdmin):
    """View-only: rows are written by services, never by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class UpstreamEndpointInline(admin.TabularInline):
    """The model's inference servers; the state column is what the workers last reported."""

    model = UpstreamEndpoint
    extra = 0
    fields = ["base_url", "api_key", "weight", "is_active", "health"]
    readonly_fields = ["health"]
    formfield_overrides = {models.URLField: {"assume_scheme": "http"}}  # inference servers are often plain http
    verbose_name = "upstream endpoint"
    verbose_name_plural = "Upstream endpoints (none: every URL of DOS_AI_UPSTREAM_URL)"

    @admin.display(description="state")
    def health(self, obj: UpstreamEndpoint) -> str:
        from dosportal.v1.pool import health_of

        if obj.pk is None:
            return "—"
        reported = health_of(obj.base_url.rstrip("/"))
        if not reported:
            return "healthy (no failure reported)"
        if reported["state"] == "healthy":
            return "healthy"
        return f"{reported['state']} ({reported['failures']} failures in a row, {reported['cooldown']:.0f} s cooldown)"


@admin.register(ServedModel)
class ServedModelAdmin(admin.ModelAdmin):
    form = ServedModelAdminForm
    inlines = [UpstreamEndpointInline]
    list_display = ["name", "kind", "upstream", "input_price", "output_price", "is_active"]
    list_filter = ["kind", "is_active"]
    search_fields = ["name", "upstream_model"]
    readonly_fields = ["stored_prices", "created_at"]
    fieldsets = (
        (None, {"fields": ("name", "upstream_model", "kind", "is_active")}),
        (
            "Prices",
            {
                "fields": ("input_price_usd", "output_price_usd", "stored_prices"),
                "description": "In US dollars per million tokens, exact to the micro-dollar. "
                "A change applies to the next request; past usage keeps the price it was charged at.",
            },
        ),
        (None, {"fields": ("created_at",)}),
    )

    @admin.display(description="upstream model")
    def upstream(self, obj: ServedModel) -> str:
        return obj.upstream_name

    @admin.display(description="input / 1M tokens", ordering="input_price_micros_per_million")
    def input_price(self, obj: ServedModel) -> str:
        return usd(obj.input_price_micros_per_million)

    @admin.display(description="output / 1M tokens", ordering="output_price_micros_per_million")
    def output_price(self, obj: ServedModel) -> str:
        return usd(obj.output_price_micros_per_million)

    @admin.display(description="stored as (micro-USD per 1M tokens)")
    def stored_prices(self, obj: ServedModel) -> str:
        if obj.pk is None:
            return "—"
        return f"input {obj.input_price_micros_per_million:,} · output {obj.output_price_micros_per_million:,}"


@admin.register(CreditAccount)
class CreditAccountAdmin(ReadOnlyAdmin):
    list_display = ["user", "balance", "held", "available", "updated_at"]
    list_select_related = ["user"]
    search_fields = ["user__email"]
    ordering = ["user__email"]
    fields = ["user", "balance", "held", "available", "ledger_check", "ledger_link", "updated_at"]
    readonly_fields = fields
    actions = ["grant_credits"]
    change_form_template = "billing/admin/creditaccount_change_form.html"

    def has_grant_permission(self, request: HttpRequest) -> bool:
        # Writing credit is a change of the account, even though its fields are read-only here.
        return request.user.has_perm("billing.change_creditaccount")

    @admin.display(description="balance", ordering="balance_micros")
    def balance(self, obj: CreditAccount) -> str:
        return _usd(obj.balance_micros)

    @admin.display(description="held by requests in flight", ordering="held_micros")
    def held(self, obj: CreditAccount) -> str:
        return _usd(obj.held_micros)

    @admin.display(description="available")
    def available(self, obj: CreditAccount) -> str:
        return _usd(obj.available_micros)

    @admin.display(description="ledger sum")
    def ledger_check(self, obj: CreditAccount) -> str:
        total = ledger_sum_micros(user=obj.user)
        if total == obj.balance_micros:
            return f"{_usd(total)} — equals the balance"
        return f"{_usd(total)} — DOES NOT equal the balance (difference {_usd(obj.balance_micros - total)})"

    @admin.display(description="ledger")
    def ledger_link(self, obj: CreditAccount) -> str:
        url = reverse("admin:billing_ledgerentry_changelist") + f"?user__id__exact={obj.user_id}"
        count = obj.user.ledger_entries.count()
        return format_html('<a href="{}">{} {}</a>', url, count, "entry" if count == 1 else "entries")

    def get_urls(self) -> list[URLPattern]:
        grant = path(
            "<path:object_id>/grant/",
            self.admin_site.admin_view(self.grant_view),
            name="billing_creditaccount_grant",
        )
        return [grant, *super().get_urls()]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_grant": self.has_grant_permission(request)}
        return super().change_view(request, object_id, form_url, extra_context)

    def grant_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_grant_permission(request):
            raise PermissionDenied
        account = get_object_or_404(CreditAccount.objects.select_related("user"), pk=object_id)
        form = GrantCreditsForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                entry = self._grant(request, account, form)
            except CreditError as error:
                form.add_error(None, str(error))
            else:
                self.message_user(
                    request,
                    f"{entry.get_kind_display()} of {_usd(entry.amount_micros)} recorded for {account.user}. "
                    f"New balance: {_usd(entry.balance_after_micros)}.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:billing_creditaccount_change", args=[account.pk]))
        return self._grant_form_response(request, form, [account], title=f"Grant credits to {account.user}")

    @admin.action(description="Grant credits to the selected accounts", permissions=["grant"])
    def grant_credits(self, request: HttpRequest, queryset: QuerySet[CreditAccount]) -> HttpResponse | None:
        accounts = list(queryset.select_related("user"))
        form = GrantCreditsForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            granted, refused = 0, []
            for account in accounts:
                try:
                    self._grant(request, account, form)
                except CreditError as error:
                    refused.append(f"{account.user}: {error}")
                else:
                    granted += 1
            if granted:
                self.message_user(
                    request,
                    f"{_usd(form.amount_micros)} recorded for {granted} account{'s' if granted != 1 else ''}.",
                    messages.SUCCESS,
                )
            for problem in refused:
                self.message_user(request, f"Refused for {problem}", messages.ERROR)
            return None  # back to the changelist
        return self._grant_form_response(
            request, form, accounts, title=f"Grant credits to {len(accounts)} account(s)", action="grant_credits"
        )

    def _grant(self, request: HttpRequest, account: CreditAccount, form: GrantCreditsForm) -> LedgerEntry:
        entry = credits_grant(
            user=account.user,
            amount_micros=form.amount_micros,
            kind=form.cleaned_data["kind"],
            note=form.cleaned_data["note"],
            created_by=request.user,
        )
        self.log_change(
            request, account, f"{entry.get_kind_display()} {_usd(entry.amount_micros)} (ledger entry {entry.pk})"
        )
        security_event_record(
            user=account.user,
            kind=SecurityEvent.Kind.CREDIT_GRANTED,
            request=request,
            detail=f"{entry.get_kind_display()} {format_usd(entry.amount_micros)}",
        )
        return entry

    def _grant_form_response(
        self,
        request: HttpRequest,
        form: GrantCreditsForm,
        accounts: list[CreditAccount],
        *,
        title: str,
        action: str = "",
    ) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "form": form,
            "accounts": accounts,
            "action": action,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "billing/admin/grant_credits.html", context)


@admin.register(CreditHold)
class CreditHoldAdmin(ReadOnlyAdmin):
    """Credit reserved by requests in flight. A hold that stays for long points at a crashed worker."""

    list_display = ["request_id", "user", "amount", "created_at"]
    list_select_related = ["user"]
    search_fields = ["request_id", "user__email"]
    date_hierarchy = "created_at"

    @admin.display(description="amount", ordering="amount_micros")
    def amount(self, obj: CreditHold) -> str:
        return _usd(obj.amount_micros)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "user", "kind", "amount", "balance_after", "note", "usage_request", "created_by"]
    list_filter = ["kind", "created_at"]
    list_select_related = ["user", "usage", "created_by"]
    search_fields = ["user__email", "note", "usage__request_id"]
    date_hierarchy = "created_at"
    fields = ["user", "kind", "amount", "balance_after", "note", "usage", "created_by", "created_at"]
    readonly_fields = fields

    @admin.display(description="amount", ordering="amount_micros")
    def amount(self, obj: LedgerEntry) -> str:
        return _usd(obj.amount_micros)

    @admin.display(description="balance after", ordering="balance_after_micros")
    def balance_after(self, obj: LedgerEntry) -> str:
        return _usd(obj.balance_after_micros)

    @admin.display(description="request")
    def usage_request(self, obj: LedgerEntry) -> str:
        return obj.usage.request_id if obj.usage else ""


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    RANGES = {"ok": (200, 299), "client": (400, 499), "server": (500, 599)}

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [
            ("ok", "Succeeded (2xx)"),
            ("client", "Client error (4xx)"),
            ("server", "Upstream / server error (5xx)"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[UsageRecord]) -> QuerySet[UsageRecord]:
        if self.value() in self.RANGES:
            low, high = self.RANGES[self.value()]
            return queryset.filter(status_code__gte=low, status_code__lte=high)
        return queryset


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    # What an operator scans for first, in a width that fits 1280 px beside the filters; the
    # request id is searchable and on the detail page.
    list_display = ["status_code", "model", "cost", "tokens", "key", "user", "created_at", "latency_ms"]
    list_display_links = ["created_at"]
    list_filter = [StatusFilter, "model", "endpoint", "streamed", "created_at"]
    list_select_related = ["user", "api_key"]
    search_fields = ["request_id", "user__email", "api_key__name"]
    date_hierarchy = "created_at"
    fields = [
        "request_id",
        "user",
        "api_key",
        "endpoint",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "cost",
        "status_code",
        "streamed",
        "latency_ms",
        "created_at",
    ]
    readonly_fields = fields

    @admin.display(description="cost", ordering="cost_micros")
    def cost(self, obj: UsageRecord) -> str:
        return _usd(obj.cost_micros)

    @admin.display(description="API key", ordering="api_key__name")
    def key(self, obj: UsageRecord) -> str:
        return obj.api_key.name  # the hint is on the detail page; the name is what fits a column

    @admin.display(description="tokens (in / out)")
    def tokens(self, obj: UsageRecord) -> str:
        return f"{obj.prompt_tokens:,} / {obj.completion_tokens:,}"


@admin.register(AlertSettings)
class AlertSettingsAdmin(admin.ModelAdmin):
    list_display = ["user", "low_balance_enabled", "threshold", "weekly_summary_enabled", "updated_at"]
    list_filter = ["low_balance_enabled", "weekly_summary_enabled"]
    search_fields = ["user__email"]
    list_select_related = ["user"]
    raw_id_fields = ["user"]

    @admin.display(description="warn below", ordering="low_balance_threshold_micros")
    def threshold(self, obj: AlertSettings) -> str:
        return _usd(obj.low_balance_threshold_micros)


@admin.register(AlertState)
class AlertStateAdmin(ReadOnlyAdmin):
    """Alerts sent and not due again. Deleting a low-balance row re-arms that alert."""

    list_display = ["kind", "user", "subject", "sent_at"]
    list_filter = ["kind"]
    search_fields = ["user__email"]
    date_hierarchy = "sent_at"

    def has_delete_permission(self, request: HttpRequest, obj: AlertState | None = None) -> bool:
        return request.user.is_superuser

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.security import SecurityContext
from apikeys.models import ApiKey
from apikeys.services import api_key_revoke


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
    fields = ["owner", "name", "hint", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["owner", "hint", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke_selected"]

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

from __future__ import annotations

from allauth.mfa import admin as allauth_mfa_admin
from allauth.mfa.models import Authenticator
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import UserChangeForm, UserCreationForm
from django.db.models import Model
from django.forms import ModelForm
from django.http import HttpRequest

from accounts.models import SecurityEvent, User
from accounts.security import SecurityContext, security_event_record
from accounts.services import (
    account_mark_email_verified,
    account_open_verified,
    account_set_limits,
    account_set_plan,
)


class PortalUserCreationForm(UserCreationForm):
    class Meta:
        model = User
        fields = ("email",)


class PortalUserChangeForm(UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    form = PortalUserChangeForm
    add_form = PortalUserCreationForm
    list_display = ["email", "plan", "date_joined", "last_login", "is_staff", "is_active"]
    list_filter = ["plan", "is_staff", "is_active"]
    search_fields = ["email"]
    ordering = ["email"]
    readonly_fields = ["date_joined", "last_login"]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        (
            "Plan and limits",
            {
                "fields": ("plan", "requests_per_minute_override", "tokens_per_minute_override"),
                "description": "Overrides win over the plan's limits for this account (leave blank to use the plan).",
            },
        ),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)

    def save_model(self, request: HttpRequest, obj: User, form: ModelForm, change: bool) -> None:
        """The plan and the limits change through their services (which validate and log them);
        the form saves the rest."""
        before = User.objects.filter(pk=obj.pk).values(*_LOGGED_FIELDS).first() if change else None
        if not change:
            super().save_model(request, obj, form, change)
            # Made by an operator: verified and credited at once, like create_user.
            account_open_verified(user=obj)
            return
        wanted_plan = obj.plan
        wanted_limits = (obj.requests_per_minute_override, obj.tokens_per_minute_override)
        obj.plan = before["plan"]
        obj.requests_per_minute_override = before["requests_per_minute_override"]
        obj.tokens_per_minute_override = before["tokens_per_minute_override"]
        super().save_model(request, obj, form, change)
        context = SecurityContext.from_request(request)
        if before["email"] != obj.email:
            account_mark_email_verified(user=obj)
            security_event_record(
                user=obj, kind=SecurityEvent.Kind.EMAIL_CHANGED, context=context, detail=f"now {obj.email}"
            )
        if wanted_plan != before["plan"]:
            account_set_plan(user=obj, plan=wanted_plan, context=context)
        if wanted_limits != (before["requests_per_minute_override"], before["tokens_per_minute_override"]):
            account_set_limits(
                user=obj, requests_per_minute=wanted_limits[0], tokens_per_minute=wanted_limits[1], context=context
            )


_LOGGED_FIELDS = ("email", "plan", "requests_per_minute_override", "tokens_per_minute_override")


@admin.register(SecurityEvent)
class SecurityEventAdmin(admin.ModelAdmin):
    """Read-only: the log is append-only, here as everywhere."""

    list_display = ["created_at", "user", "kind", "actor_label", "ip_address", "detail"]
    list_filter = ["kind", "by_administrator", "created_at"]
    search_fields = ["user__email", "ip_address", "detail"]
    list_select_related = ["user"]
    date_hierarchy = "created_at"
    fields = ["created_at", "user", "kind", "actor", "by_administrator", "ip_address", "user_agent", "detail"]
    readonly_fields = fields

    @admin.display(description="actor")
    def actor_label(self, event: SecurityEvent) -> str:
        return event.actor_label

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


# allauth registers its Authenticator admin with every field editable, `data` (the TOTP secret,
# the recovery codes' seed) included. Import it first so it is registered, then replace it.
admin.site.unregister(Authenticator)


@admin.register(Authenticator)
class AuthenticatorAdmin(allauth_mfa_admin.AuthenticatorAdmin):
    """Which second factors an account has, never their secrets: `data` is neither shown nor editable.
    An administrator may delete one (a lost phone), not add or change one."""

    fields = ["user", "type", "created_at", "last_used_at"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

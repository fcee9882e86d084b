from __future__ import annotations

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class AccountsConfig(AppConfig):
    default = True
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from accounts import checks, receivers  # noqa: F401 - the security log and notices listen to allauth


class PortalAdminConfig(admin_apps.AdminConfig):
    default = False
    default_site = "accounts.admin_site.PortalAdminSite"

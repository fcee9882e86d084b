from __future__ import annotations

from django.apps import AppConfig


class DeploymentChecksConfig(AppConfig):
    """Registers the deployment's own system checks; no models, no URLs."""

    name = "dosportal.checks"
    label = "dosportal_checks"

    def ready(self) -> None:
        from dosportal.checks import database, redis  # noqa: F401 - they register their checks

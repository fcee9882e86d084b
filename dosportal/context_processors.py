from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from dosportal.v1.upstream import is_development_model


def public_api_url(request: HttpRequest) -> str:
    """The base URL clients use: DOS_AI_PUBLIC_API_URL, or this site's own origin + /v1."""
    return settings.DOS_AI_PUBLIC_API_URL or request.build_absolute_uri("/v1")


def portal(request: HttpRequest) -> dict[str, object]:
    return {"public_api_url": public_api_url(request), "uses_dev_model": is_development_model()}

"""WSGI entry point, for tools that want one. The /v1 gateway is async: serve it with ASGI."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dosportal.settings")

application = get_wsgi_application()

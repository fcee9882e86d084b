"""ASGI entry point, the production one: `gunicorn dosportal.asgi:application -k uvicorn_worker...`."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dosportal.settings")

application = get_asgi_application()

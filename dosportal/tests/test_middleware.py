"""/v1 runs through an all-async middleware chain; static files still come from WhiteNoise."""

from __future__ import annotations

import logging

import httpx
import pytest
from django.core.handlers.asgi import ASGIHandler
from django.test import override_settings


def adaptations(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Django's own account (it logs each adaptation when DEBUG is on) of sync middleware in the async chain."""
    with override_settings(DEBUG=True), caplog.at_level(logging.DEBUG, logger="django.request"):
        ASGIHandler()  # loads the middleware chain in async mode
    return [record.getMessage() for record in caplog.records if "handler adapted for" in record.getMessage()]


def test_no_middleware_forces_an_async_request_through_a_thread(caplog):
    assert adaptations(caplog) == []


def test_stock_whitenoise_would_force_one(caplog, settings):
    stock = [
        "whitenoise.middleware.WhiteNoiseMiddleware" if name.endswith("AsyncWhiteNoiseMiddleware") else name
        for name in settings.MIDDLEWARE
    ]
    with override_settings(MIDDLEWARE=stock):
        found = adaptations(caplog)

    assert any("WhiteNoiseMiddleware" in message for message in found)


@pytest.mark.django_db(transaction=True)
def test_static_files_are_served_whole_under_asgi_with_conditional_requests(gateway):
    from pathlib import Path

    css = (Path(__file__).resolve().parents[2] / "static" / "css" / "app.css").read_bytes()

    full = httpx.get(f"{gateway.url}/static/css/app.css")
    again = httpx.get(f"{gateway.url}/static/css/app.css", headers={"If-None-Match": full.headers["etag"]})
    part = httpx.get(f"{gateway.url}/static/css/app.css", headers={"Range": "bytes=0-9"})

    assert (full.status_code, full.content) == (200, css)
    assert full.headers["content-type"].startswith("text/css")
    assert again.status_code == 304
    assert (part.status_code, part.content) == (206, css[:10])

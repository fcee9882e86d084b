"""dosportal.middleware.StaticFiles: production's static files, answered as bare ASGI from
WhiteNoise's index (the live test servers run with DEBUG=1, where WhiteNoise autorefreshes and
this path steps aside)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from django.test import override_settings

from dosportal.middleware import StaticFiles

CSS = (Path(__file__).resolve().parents[2] / "static" / "css" / "app.css").read_bytes()


@pytest.fixture
def static_files() -> StaticFiles:
    # The files from the finders (static/), as collectstatic would gather them into STATIC_ROOT.
    with override_settings(WHITENOISE_AUTOREFRESH=False, WHITENOISE_USE_FINDERS=True, STATIC_ROOT=None):
        served = StaticFiles()
    assert served.enabled
    return served


def fetch(served: StaticFiles, path: str, method: str = "GET", **headers: str) -> tuple[bool, int, dict, bytes]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()],
    }
    answered = asyncio.run(served.serve(scope, send))
    if not answered:
        return False, 0, {}, b""
    start, body = sent
    return True, start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body["body"]


def test_a_file_is_served_whole_with_its_type_length_and_etag(static_files):
    answered, status, headers, body = fetch(static_files, "/static/css/app.css")

    assert (answered, status, body) == (True, 200, CSS)
    assert headers["content-type"].startswith("text/css")
    assert headers["content-length"] == str(len(CSS))
    assert headers["etag"]


def test_conditional_range_and_head_requests_are_honoured(static_files):
    etag = fetch(static_files, "/static/css/app.css")[2]["etag"]

    assert fetch(static_files, "/static/css/app.css", if_none_match=etag)[1:4:2] == (304, b"")
    assert fetch(static_files, "/static/css/app.css", range="bytes=0-9")[1:4:2] == (206, CSS[:10])
    head = fetch(static_files, "/static/css/app.css", method="HEAD")
    assert (head[1], head[2]["content-length"], head[3]) == (200, str(len(CSS)), b"")


def test_other_methods_are_refused_and_unknown_paths_are_left_to_django(static_files):
    refused = fetch(static_files, "/static/css/app.css", method="POST")

    assert (refused[1], refused[2]["allow"], refused[3]) == (405, "GET, HEAD", b"")
    assert fetch(static_files, "/static/css/nope.css") == (False, 0, {}, b"")
    assert fetch(static_files, "/static/../manage.py") == (False, 0, {}, b"")


def test_with_autorefresh_it_steps_aside(settings):
    settings.WHITENOISE_AUTOREFRESH = True

    assert fetch(StaticFiles(), "/static/css/app.css") == (False, 0, {}, b"")

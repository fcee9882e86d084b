"""Every dashboard response carries a Content-Security-Policy that allows only our own files and
a Permissions-Policy; pages are never stored by the browser; /v1 is left alone."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from accounts.models import User
from dosportal.middleware import CONTENT_SECURITY_POLICY, PERMISSIONS_POLICY

pytestmark = pytest.mark.django_db

SIGNED_IN_PAGES = ["/", "/keys/", "/usage/", "/billing/", "/settings/", "/settings/alerts/"]
PUBLIC_PAGES = ["/login/", "/signup/", "/accounts/password/reset/"]


def test_the_policy_allows_only_our_own_files_and_no_inline_code() -> None:
    directives = dict(part.strip().split(" ", 1) for part in CONTENT_SECURITY_POLICY.split(";"))

    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert "unsafe-eval" not in CONTENT_SECURITY_POLICY
    assert "http" not in CONTENT_SECURITY_POLICY


@pytest.mark.parametrize("path", SIGNED_IN_PAGES)
def test_signed_in_pages_carry_the_policies_and_are_never_stored(client_for, owner: User, path: str) -> None:
    response = client_for(owner).get(path)

    assert response.status_code == 200
    assert response["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert response["Permissions-Policy"] == PERMISSIONS_POLICY
    assert "no-store" in response["Cache-Control"]
    assert "private" in response["Cache-Control"]


@pytest.mark.parametrize("path", PUBLIC_PAGES)
def test_public_pages_carry_the_policies_too(db: None, path: str) -> None:
    response = Client().get(path)

    assert response.status_code == 200
    assert response["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "no-store" in response["Cache-Control"]


@pytest.mark.parametrize("path", [*SIGNED_IN_PAGES, *PUBLIC_PAGES])
def test_no_page_has_inline_script_style_or_event_handlers(client_for, owner: User, path: str) -> None:
    html = (
        client_for(owner).get(path).content.decode() if path in SIGNED_IN_PAGES else Client().get(path).content.decode()
    )

    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    assert re.findall(r"<style\b", html) == []
    assert re.findall(r"\sstyle=", html) == []
    assert re.findall(r"\son[a-z]+=", html) == []
    assert "hx-on" not in html
    assert '"allowEval": false' in html
    assert '"includeIndicatorStyles": false' in html


def test_v1_responses_are_left_alone(db: None) -> None:
    response = Client().get("/v1/models")

    assert response.status_code == 401
    assert "Content-Security-Policy" not in response


def test_static_files_keep_their_own_caching(db: None) -> None:
    response = Client().get("/static/css/app.css")

    assert response.status_code == 200
    assert "no-store" not in response.get("Cache-Control", "")

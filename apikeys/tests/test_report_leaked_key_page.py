"""/report-leaked-key/: anyone can report a found key; the same answer whether it was active or not."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.test import Client

from accounts.models import SecurityEvent, User
from apikeys.keys import generate_key
from apikeys.models import RevokedReason
from apikeys.services import api_key_authenticate, api_key_revoke
from apikeys.tests.conftest import MadeKey
from dosportal.testing.html import text_of

pytestmark = pytest.mark.django_db

URL = "/report-leaked-key/"
SENT = "/report-leaked-key/?sent=1"
THANKS = "Thank you. If that was an active DOS AI key, it has been revoked and its owner told where it was found."
WHERE = "https://paste.example.com/raw/abc123"


def report(client: Client, text: str, found_at: str = WHERE, **extra: str):
    return client.post(URL, {"text": text, "found_at": found_at}, **extra)


def test_anyone_gets_the_form_without_signing_in(client: Client) -> None:
    response = client.get(URL)

    assert response.status_code == 200
    page = response.content.decode()
    assert 'name="csrfmiddlewaretoken"' in page
    assert '<textarea name="text"' in page
    assert 'name="found_at"' in page


def test_an_active_key_in_pasted_text_is_revoked_and_its_owner_told(
    client: Client, owner: User, make_key: Callable[..., MadeKey], mailoutbox
) -> None:
    api_key, raw_key = make_key(owner, "Laptop")
    paste = f"2026-12-01 INFO calling api with OPENAI_API_KEY={raw_key}, model dos-ai"

    response = report(client, paste, REMOTE_ADDR="203.0.113.9")

    assert response.status_code == 302
    assert response["Location"] == SENT
    api_key.refresh_from_db()
    assert (api_key.revoked_reason, api_key.leaked_url) == (RevokedReason.LEAKED, WHERE)
    assert api_key_authenticate(raw_key) is None
    [event] = SecurityEvent.objects.filter(user=owner, kind=SecurityEvent.Kind.KEY_LEAKED)
    assert event.ip_address == "203.0.113.9"
    [mail] = [m for m in mailoutbox if "published" in m.subject]
    assert mail.to == [owner.email]
    assert f"- Found at: {WHERE}" in mail.body
    assert "- Reported by: someone using the report form on this site" in mail.body
    assert raw_key not in mail.body


def test_the_answer_is_the_same_for_an_unknown_a_revoked_and_an_active_key(
    client: Client, owner: User, make_key: Callable[..., MadeKey], mailoutbox
) -> None:
    revoked, revoked_raw = make_key(owner, "Old")
    api_key_revoke(api_key=revoked)
    _, active_raw = make_key(owner, "New")
    answers = [report(client, text) for text in (generate_key(), revoked_raw, active_raw)]

    assert {(answer.status_code, answer["Location"]) for answer in answers} == {(302, SENT)}
    page = client.get(SENT)
    assert THANKS in text_of(page.content.decode())
    assert not re.search(r"dos_sk_[A-Za-z0-9]{32}", page.content.decode())
    revoked.refresh_from_db()
    assert revoked.revoked_reason == ""  # revoked by its owner before: left as it was
    assert len([m for m in mailoutbox if "published" in m.subject]) == 1


def test_text_without_a_key_is_an_inline_error(client: Client) -> None:
    response = report(client, "sk-proj-this-is-not-ours")

    assert response.status_code == 200
    assert "No DOS AI key in this text: keys start with dos_sk_ and have 32 more characters." in text_of(
        response.content.decode()
    )


def test_where_it_was_found_is_required(client: Client, owner: User, make_key: Callable[..., MadeKey]) -> None:
    api_key, raw_key = make_key(owner)

    response = report(client, raw_key, found_at="")

    assert response.status_code == 200
    assert "Say where you found the key, so its owner can remove it." in response.content.decode()
    assert api_key_authenticate(raw_key) == api_key


def test_a_post_without_the_csrf_token_is_refused(owner: User, make_key: Callable[..., MadeKey]) -> None:
    api_key, raw_key = make_key(owner)

    response = report(Client(enforce_csrf_checks=True), raw_key)

    assert response.status_code == 403
    assert api_key_authenticate(raw_key) == api_key


def test_reports_are_throttled_per_address(
    client: Client, owner: User, make_key: Callable[..., MadeKey], settings
) -> None:
    settings.DOS_AI_LEAK_REPORT_RATE = "2/h"
    api_key, raw_key = make_key(owner)
    for _ in range(2):
        assert report(client, generate_key(), REMOTE_ADDR="198.51.100.7").status_code == 302

    refused = report(client, raw_key, REMOTE_ADDR="198.51.100.7")
    elsewhere = report(client, generate_key(), REMOTE_ADDR="198.51.100.8")

    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert api_key_authenticate(raw_key) == api_key
    assert elsewhere.status_code == 302


def test_the_keys_list_says_a_key_was_revoked_automatically_and_where(
    client: Client, client_for: Callable[..., Client], owner: User, make_key: Callable[..., MadeKey]
) -> None:
    _, linked = make_key(owner, "Linked")
    _, unlinked = make_key(owner, "Unlinked")
    report(client, linked)
    report(client, unlinked, found_at="javascript:alert(1)")

    page = client_for(owner).get("/keys/?status=revoked").content.decode()

    assert f'revoked automatically: found at <a href="{WHERE}" rel="noopener noreferrer nofollow">{WHERE}</a>' in page
    assert "revoked automatically: found at javascript:alert(1)</span>" in page
    assert 'href="javascript:' not in page

"""Sign-up, password reset and sign-in answer an address with an account exactly as one without.

Each test sends the same form for a taken and a fresh (or unknown) address and compares what a
client sees: the status, the redirect, the cookies set, and the page it leads to with the address
replaced. Whoever owns a taken address is told by email instead.

Time is not asserted (no timed assertions here: a loaded CI machine would make them flaky, and
the test settings use the fast MD5 hasher). What made the answers' times differ was work done in
one path only — hashing the password, 254 ms against 14 ms with the production hasher — so the
tests count the password hasher's work in both paths and require the same count.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.contrib.auth.hashers import MD5PasswordHasher
from django.http import HttpResponse
from django.test import Client

from accounts.models import User

pytestmark = pytest.mark.django_db

PASSWORD = "violet-harbour-lantern-93"


class CountingHasher(MD5PasswordHasher):
    """The test settings' hasher, counting every hash it computes (making or checking one)."""

    calls = 0

    def encode(self, password: str, salt: str) -> str:
        CountingHasher.calls += 1
        return super().encode(password, salt)


@pytest.fixture
def hashes(settings) -> Iterator[type[CountingHasher]]:
    settings.PASSWORD_HASHERS = [f"{__name__}.CountingHasher"]
    CountingHasher.calls = 0
    yield CountingHasher


def seen(client: Client, response: HttpResponse, email: str) -> tuple[int, str | None, list[str], str]:
    """What the client sees: status, redirect, cookies set, and the page it is led to (the address
    and the per-render CSRF token blanked)."""
    page = client.get(response["Location"]) if response.status_code == 302 else response
    body = page.content.decode().replace(email, "EMAIL")
    body = re.sub(r'"x-csrftoken": "[^"]+"|name="csrfmiddlewaretoken" value="[^"]+"', "", body)
    return response.status_code, response.get("Location"), sorted(response.cookies), body


def sign_up(email: str) -> tuple[int, str | None, list[str], str]:
    client = Client()
    return seen(client, client.post("/signup/", {"email": email, "password1": PASSWORD}), email)


def test_sign_up_answers_a_taken_address_as_a_fresh_one_also_when_asked_again(owner: User, mailoutbox) -> None:
    # The second round comes within allauth's 3-minute cooldown on mail to one address: the owner
    # gets no second mail, and the answer must not show that either (it lost its flash before).
    for round_ in (1, 2):
        fresh = sign_up(f"fresh{round_}@example.com")
        taken = sign_up("owner@example.com")

        assert taken == fresh
        assert taken[:3] == (302, "/accounts/confirm-email/", ["sessionid"])
        assert "<h1>Check your inbox</h1>" in taken[3]

    assert [mail.to for mail in mailoutbox] == [["fresh1@example.com"], ["owner@example.com"], ["fresh2@example.com"]]
    assert mailoutbox[1].subject == "DOS AI: Account Already Exists"
    assert User.objects.filter(email__startswith="fresh").count() == 2


def test_sign_up_hashes_the_password_for_a_taken_address_as_for_a_fresh_one(owner: User, hashes) -> None:
    sign_up("fresh@example.com")
    for_fresh, hashes.calls = hashes.calls, 0
    sign_up("owner@example.com")

    assert for_fresh == 1
    assert hashes.calls == for_fresh


def test_password_reset_answers_an_unknown_address_as_a_known_one(owner: User, hashes, mailoutbox) -> None:
    def reset(email: str) -> tuple[int, str | None, list[str], str]:
        client = Client()
        return seen(client, client.post("/accounts/password/reset/", {"email": email}), email)

    known = reset("owner@example.com")
    unknown = reset("nobody@example.com")

    assert unknown == known
    assert known[:3] == (302, "/accounts/password/reset/done/", [])
    assert [mail.to for mail in mailoutbox] == [["owner@example.com"]]  # no mail to addresses we do not know
    assert hashes.calls == 0


def test_sign_in_answers_a_wrong_password_as_an_unknown_address_with_the_same_hashing(owner: User, hashes) -> None:
    def sign_in(email: str) -> tuple[tuple[int, str | None, list[str], str], int]:
        hashes.calls = 0
        client = Client()
        response = client.post("/login/", {"login": email, "password": "not-the-password-1"})
        assert response.context["form"].errors == {
            "__all__": ["The email address and/or password you specified are not correct."]
        }
        return seen(client, response, email), hashes.calls

    known, known_hashes = sign_in("owner@example.com")
    unknown, unknown_hashes = sign_in("nobody@example.com")

    assert unknown == known
    assert known[0] == 200
    assert known_hashes == unknown_hashes == 2  # Django's backend, then allauth's: one hash each

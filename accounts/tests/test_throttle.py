"""Brute-force protection on sign-in, sign-up and password reset: per IP, per (email, IP), per email."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.test import Client
from django_ratelimit.core import _get_window

from accounts.models import User
from accounts.tests.conftest import FROZEN_NOW

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen_ratelimit_clock")]


@dataclass(frozen=True)
class ThrottledForm:
    path: str
    rate_setting: str
    email_field: str
    extra_fields: dict[str, str]
    status_under_limit: int  # what a refused-but-not-throttled attempt answers
    email_limit: int  # attempts for one email, from anywhere, before 429


LOGIN = ThrottledForm("/login/", "DOS_AI_LOGIN_RATE", "login", {"password": "not the password"}, 200, 6)
SIGNUP = ThrottledForm("/signup/", "DOS_AI_SIGNUP_RATE", "email", {"password1": "short"}, 200, 3)
PASSWORD_RESET = ThrottledForm("/accounts/password/reset/", "DOS_AI_PASSWORD_RESET_RATE", "email", {}, 302, 3)
FORMS = pytest.mark.parametrize("form", [LOGIN, SIGNUP, PASSWORD_RESET], ids=["login", "signup", "password_reset"])


@pytest.fixture(autouse=True)
def _three_attempts_per_minute(settings) -> None:
    settings.DOS_AI_LOGIN_RATE = "3/m"
    settings.DOS_AI_LOGIN_EMAIL_RATE = "6/m"  # looser, as in production (10/5m against 100/h)
    settings.DOS_AI_SIGNUP_RATE = "3/m"
    settings.DOS_AI_PASSWORD_RESET_RATE = "3/m"


def submit(client: Client, form: ThrottledForm, email: str, ip: str):
    return client.post(form.path, {form.email_field: email, **form.extra_fields}, REMOTE_ADDR=ip)


def seconds_left_in_window(value: str) -> int:
    """When the throttle's counter for `value` resets, seen from the frozen clock."""
    return max(1, _get_window(value, 60) - int(FROZEN_NOW))


def assert_throttled(response, *, retry_after: int) -> None:
    assert response.status_code == 429
    assert response["Retry-After"] == str(retry_after)
    assert 1 <= retry_after <= 60
    content = response.content.decode()
    assert "<h1>Too many attempts</h1>" in content
    assert f"Try again in {retry_after} second" in content


@FORMS
def test_it_answers_429_with_retry_after_once_one_ip_passes_the_limit(client: Client, form: ThrottledForm) -> None:
    for attempt in range(3):
        response = submit(client, form, f"person{attempt}@example.com", "203.0.113.7")
        assert response.status_code == form.status_under_limit

    response = submit(client, form, "person3@example.com", "203.0.113.7")

    assert_throttled(response, retry_after=seconds_left_in_window("203.0.113.7"))


@FORMS
def test_it_answers_429_once_one_email_passes_the_limit_from_many_ips(client: Client, form: ThrottledForm) -> None:
    for attempt in range(form.email_limit):
        response = submit(client, form, "target@example.com", f"198.51.100.{attempt}")
        assert response.status_code == form.status_under_limit

    response = submit(client, form, "Target@Example.com", "198.51.100.99")

    assert_throttled(response, retry_after=seconds_left_in_window("email:target@example.com"))


@FORMS
def test_other_ips_and_other_emails_are_not_held_back(client: Client, form: ThrottledForm) -> None:
    for attempt in range(4):
        submit(client, form, f"person{attempt}@example.com", "203.0.113.7")

    response = submit(client, form, "someone.else@example.com", "192.0.2.44")

    assert response.status_code == form.status_under_limit


@FORMS
def test_the_form_still_opens_while_throttled(client: Client, form: ThrottledForm) -> None:
    for attempt in range(4):
        submit(client, form, f"person{attempt}@example.com", "203.0.113.7")

    response = client.get(form.path, REMOTE_ADDR="203.0.113.7")

    assert response.status_code == 200


@FORMS
def test_the_form_accepts_attempts_again_in_the_next_window(
    client: Client, form: ThrottledForm, frozen_ratelimit_clock
) -> None:
    for attempt in range(4):
        submit(client, form, f"person{attempt}@example.com", "203.0.113.7")

    frozen_ratelimit_clock(FROZEN_NOW + 61)
    response = submit(client, form, "person9@example.com", "203.0.113.7")

    assert response.status_code == form.status_under_limit


@FORMS
def test_blank_emails_do_not_share_one_counter(client: Client, form: ThrottledForm) -> None:
    for attempt in range(5):
        response = submit(client, form, "", f"198.51.100.{attempt}")
        assert response.status_code == 200  # the form's own "required" error, never 429


def test_an_email_that_looks_like_an_ip_does_not_spend_that_ips_attempts(client: Client) -> None:
    for attempt in range(3):
        submit(client, LOGIN, "203.0.113.7", f"198.51.100.{attempt}")

    response = submit(client, LOGIN, "person@example.com", "203.0.113.7")

    assert response.status_code == 200


def test_the_right_password_is_refused_while_the_ip_is_throttled(client: Client, owner: User, password: str) -> None:
    for attempt in range(3):
        submit(client, LOGIN, f"person{attempt}@example.com", "203.0.113.7")

    response = client.post("/login/", {"username": owner.email, "password": password}, REMOTE_ADDR="203.0.113.7")

    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_no_reset_mail_is_sent_while_the_email_is_throttled(client: Client, owner: User, mailoutbox) -> None:
    for attempt in range(3):
        submit(client, PASSWORD_RESET, owner.email, f"198.51.100.{attempt}")
    assert len(mailoutbox) == 3

    response = submit(client, PASSWORD_RESET, owner.email, "198.51.100.99")

    assert response.status_code == 429
    assert len(mailoutbox) == 3


def test_no_account_is_created_while_the_ip_is_throttled(client: Client) -> None:
    for attempt in range(3):
        submit(client, SIGNUP, f"person{attempt}@example.com", "203.0.113.7")

    response = client.post(
        "/signup/", {"email": "real@example.com", "password": "violet-harbour-lantern-93"}, REMOTE_ADDR="203.0.113.7"
    )

    assert response.status_code == 429
    assert not User.objects.filter(email="real@example.com").exists()


def test_the_throttled_page_links_back_to_the_form(client: Client) -> None:
    for attempt in range(4):
        response = submit(client, LOGIN, f"person{attempt}@example.com", "203.0.113.7")

    assert response.status_code == 429
    assert b'href="/login/"' in response.content


# --- issue 9: the per-email throttle cannot be side-stepped, nor used to lock an owner out ---------


def test_posting_other_email_fields_does_not_dodge_the_email_throttle(client: Client) -> None:
    """The throttle counts the field the form signs in with, whatever else is posted beside it."""
    for attempt in range(6):
        client.post(
            "/login/",
            {
                "login": "target@example.com",
                "password": "guess",
                "email": f"decoy{attempt}@example.com",
                "username": f"decoy{attempt}@example.com",
            },
            REMOTE_ADDR=f"198.51.100.{attempt}",
        )

    response = submit(client, LOGIN, "target@example.com", "198.51.100.99")

    assert_throttled(response, retry_after=seconds_left_in_window("email:target@example.com"))


def test_one_email_from_one_ip_is_held_to_the_tight_rate(client: Client) -> None:
    for _attempt in range(3):
        assert submit(client, LOGIN, "target@example.com", "203.0.113.7").status_code == 200

    response = submit(client, LOGIN, "target@example.com", "203.0.113.7")

    assert response.status_code == 429


def test_a_stranger_cannot_lock_the_owner_out(client: Client, owner: User, password: str) -> None:
    """Wrong passwords for the owner's email from one address throttle that address, not the owner."""
    for _attempt in range(10):
        submit(client, LOGIN, owner.email, "203.0.113.66")

    response = Client().post("/login/", {"login": owner.email, "password": password}, REMOTE_ADDR="192.0.2.10")

    assert response.status_code == 302
    assert response["Location"] == "/"


def test_many_strangers_cannot_lock_the_owner_out_of_an_address_it_used_before(
    client: Client, owner: User, password: str
) -> None:
    assert (
        Client().post("/login/", {"login": owner.email, "password": password}, REMOTE_ADDR="192.0.2.10").status_code
        == 302
    )
    for attempt in range(8):  # past the per-email rate (6), from many addresses
        submit(client, LOGIN, owner.email, f"198.51.100.{attempt}")
    assert submit(client, LOGIN, owner.email, "198.51.100.200").status_code == 429

    response = Client().post("/login/", {"login": owner.email, "password": password}, REMOTE_ADDR="192.0.2.10")

    assert response.status_code == 302
    assert response["Location"] == "/"

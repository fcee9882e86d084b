"""The two-factor code step is throttled per account and per address (accounts/mfa_throttle.py),
whatever allauth's own "login_failed" limit says; with Redis down it fails open and logs it.

Every test signs in through the real forms (password, then the code) with the Django test client
on the real PostgreSQL and Redis; codes are computed with allauth's own HOTP helpers."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

import pytest
from allauth.mfa.models import Authenticator
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, generate_totp_secret, hotp_value
from django.core.cache import caches
from django.test import Client

from accounts import mfa_throttle
from accounts.models import SecurityEvent, User
from dosportal.testing.faults import ThrowawayRedis

pytestmark = pytest.mark.django_db

# A multiple of 900 s, so a 15-minute window starts exactly here.
WINDOW_START = 1_800_000_000.0
AUTHENTICATE = "/accounts/2fa/authenticate/"
REFUSAL = b"For your security we paused two-factor codes. Try again in 900 seconds (about 15 minutes)."


@pytest.fixture
def mfa_clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Freeze the throttle's clock at the start of a window (a test never straddles its edge)."""
    monkeypatch.setattr(mfa_throttle, "_now", lambda: WINDOW_START)

    def move_to(timestamp: float) -> None:
        monkeypatch.setattr(mfa_throttle, "_now", lambda: timestamp)

    return move_to


@pytest.fixture(autouse=True)
def _allauth_limit_off(settings, mfa_clock) -> None:
    # allauth's own limit on the code step is off: what is refused here is refused by ours.
    settings.ACCOUNT_RATE_LIMITS = {**settings.ACCOUNT_RATE_LIMITS, "login_failed": False}


def with_totp(user: User) -> str:
    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    RecoveryCodes.activate(user)
    return secret


def right_code(secret: str) -> str:
    return format_hotp_value(hotp_value(secret, int(time.time() // 30)))


def wrong_code(secret: str, n: int = 0) -> str:
    """A code that none of the accepted time steps (now, one before, one after) gives."""
    step = int(time.time() // 30)
    accepted = {format_hotp_value(hotp_value(secret, step + offset)) for offset in (-2, -1, 0, 1, 2)}
    return next(code for code in (f"{(n * 7919 + i) % 1_000_000:06d}" for i in range(100)) if code not in accepted)


def password_step(user: User, password: str, ip: str) -> Client:
    client = Client(REMOTE_ADDR=ip)
    response = client.post("/login/", {"login": user.email, "password": password})
    assert response.status_code == 302
    assert response["Location"] == AUTHENTICATE
    return client


def test_wrong_codes_then_every_code_is_refused_even_the_right_one(
    owner: User, password: str, settings, mfa_clock
) -> None:
    settings.DOS_AI_MFA_RATE = "3/15m"
    secret = with_totp(owner)
    recovery_code = RecoveryCodes(Authenticator.objects.get(user=owner, type="recovery_codes")).get_unused_codes()[0]
    client = password_step(owner, password, "198.51.100.20")

    for n in range(3):
        wrong = client.post(AUTHENTICATE, {"code": wrong_code(secret, n)})
        assert wrong.status_code == 200
        assert wrong.context["form"].errors == {"code": ["Incorrect code."]}
    refused = [client.post(AUTHENTICATE, {"code": code}) for code in (wrong_code(secret, 9), right_code(secret))]
    refused_recovery = client.post(AUTHENTICATE, {"code": recovery_code})

    for response in [*refused, refused_recovery]:
        assert response.status_code == 429
        assert response["Retry-After"] == "900"
        assert REFUSAL in response.content
    assert "_auth_user_id" not in client.session
    assert (
        recovery_code in RecoveryCodes(Authenticator.objects.get(user=owner, type="recovery_codes")).get_unused_codes()
    )
    events = SecurityEvent.objects.filter(user=owner).order_by("id")
    assert [(e.kind, e.ip_address, e.actor_label) for e in events] == [
        *[("second_factor_failed", "198.51.100.20", "Someone")] * 3,
        ("second_factor_throttled", "198.51.100.20", "Someone"),  # once per window, not per refusal
    ]
    assert events.last().detail == "too many codes for this account"

    mfa_clock(WINDOW_START + 900)  # the next window
    accepted = client.post(AUTHENTICATE, {"code": right_code(secret)})
    assert accepted.status_code == 302
    assert accepted["Location"] == "/"
    assert int(client.session["_auth_user_id"]) == owner.pk


def test_the_account_limit_holds_across_addresses_and_sessions(owner: User, password: str, settings) -> None:
    settings.DOS_AI_MFA_RATE = "2/15m"
    secret = with_totp(owner)

    first = password_step(owner, password, "198.51.100.1")
    second = password_step(owner, password, "203.0.113.2")
    assert first.post(AUTHENTICATE, {"code": wrong_code(secret, 1)}).status_code == 200
    assert second.post(AUTHENTICATE, {"code": wrong_code(secret, 2)}).status_code == 200
    third = password_step(owner, password, "192.0.2.3").post(AUTHENTICATE, {"code": right_code(secret)})

    assert third.status_code == 429


def test_an_address_is_limited_across_accounts_and_ipv6_counts_per_64(
    owner: User, outsider: User, superuser: User, password: str, settings
) -> None:
    settings.DOS_AI_MFA_IP_RATE = "2/15m"
    owner_secret, outsider_secret, admin_secret = with_totp(owner), with_totp(outsider), with_totp(superuser)

    guesser = password_step(owner, password, "2001:db8:7:7::10")
    assert guesser.post(AUTHENTICATE, {"code": wrong_code(owner_secret, 1)}).status_code == 200
    assert guesser.post(AUTHENTICATE, {"code": wrong_code(owner_secret, 2)}).status_code == 200
    same_64 = password_step(outsider, password, "2001:db8:7:7::99").post(
        AUTHENTICATE, {"code": right_code(outsider_secret)}
    )
    elsewhere = password_step(superuser, password, "2001:db8:7:8::10")
    signed_in = elsewhere.post(AUTHENTICATE, {"code": right_code(admin_secret)})

    assert same_64.status_code == 429
    assert same_64["Retry-After"] == "900"
    assert SecurityEvent.objects.get(user=outsider, kind="second_factor_throttled").detail == (
        "too many codes from this address"
    )
    assert signed_in.status_code == 302
    assert signed_in["Location"] == "/"
    assert int(elsewhere.session["_auth_user_id"]) == superuser.pk


def test_a_right_code_uses_no_allowance(owner: User, password: str, settings) -> None:
    settings.DOS_AI_MFA_RATE = "1/15m"
    settings.DOS_AI_MFA_IP_RATE = "1/15m"
    secret = with_totp(owner)
    assert (
        password_step(owner, password, "198.51.100.5").post(AUTHENTICATE, {"code": right_code(secret)}).status_code
        == 302
    )

    wrong = password_step(owner, password, "198.51.100.5").post(AUTHENTICATE, {"code": wrong_code(secret)})

    assert wrong.status_code == 200
    assert wrong.context["form"].errors == {"code": ["Incorrect code."]}


def test_confirming_its_you_with_a_code_is_throttled_too(client_for, owner: User, settings) -> None:
    settings.DOS_AI_MFA_RATE = "2/15m"
    secret = with_totp(owner)
    client = client_for(owner, REMOTE_ADDR="198.51.100.30")

    statuses = [
        client.post("/accounts/2fa/reauthenticate/", {"code": wrong_code(secret, n)}).status_code for n in (1, 2)
    ]
    refused = client.post("/accounts/2fa/reauthenticate/", {"code": right_code(secret)})

    assert statuses == [200, 200]
    assert refused.status_code == 429
    assert REFUSAL in refused.content


def test_with_redis_down_the_code_step_fails_open_and_logs_it(
    owner: User, password: str, settings, throwaway_redis: ThrowawayRedis, caplog
) -> None:
    settings.CACHES = {
        "default": {
            "BACKEND": "dosportal.cache.FailOpenRedisCache",
            "LOCATION": throwaway_redis.url,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    settings.DOS_AI_MFA_RATE = "1/15m"
    secret = with_totp(owner)
    client = password_step(owner, password, "198.51.100.40")
    assert client.post(AUTHENTICATE, {"code": wrong_code(secret, 1)}).status_code == 200
    assert any(key.startswith(b":1:mfa-code:user:") for key in _keys(throwaway_redis))  # counted there while up

    throwaway_redis.stop()
    caches["default"].close()  # drop pooled connections: the next operation must reconnect
    with caplog.at_level(logging.ERROR, logger="dosportal.cache"):
        wrong = [client.post(AUTHENTICATE, {"code": wrong_code(secret, n)}).status_code for n in (2, 3)]
        right = client.post(AUTHENTICATE, {"code": right_code(secret)})

    assert wrong == [200, 200]  # over the 1/15m limit, but nothing can be counted
    assert right.status_code == 302
    assert int(client.session["_auth_user_id"]) == owner.pk
    errors = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert any(message.startswith("cache fail-open: Redis unavailable during add") for message in errors)
    assert all(message.startswith("cache fail-open: Redis unavailable") for message in errors)


def _keys(server: ThrowawayRedis) -> list[bytes]:
    import redis

    return redis.Redis.from_url(server.url).keys("*")


def test_the_code_field_brings_up_a_keypad_autofills_and_has_the_focus(owner: User, password: str) -> None:
    with_totp(owner)
    client = password_step(owner, password, "198.51.100.30")

    html = client.get(AUTHENTICATE).content.decode()

    field = re.search(r'<input[^>]*name="code"[^>]*>', html).group(0)
    for attribute in ('inputmode="numeric"', 'autocomplete="one-time-code"', "autofocus", 'type="text"'):
        assert attribute in field, field
    assert "or one of your 8-digit recovery codes (each works once)." in html
    assert "<h1>Two-factor authentication</h1>" in html and "<title>Sign in" in html


def test_a_reused_recovery_code_says_so(owner: User, password: str) -> None:
    secret = with_totp(owner)
    recovery_code = RecoveryCodes(Authenticator.objects.get(user=owner, type="recovery_codes")).get_unused_codes()[0]
    first = password_step(owner, password, "198.51.100.31")
    assert first.post(AUTHENTICATE, {"code": recovery_code}).status_code == 302  # signed in with it

    again = password_step(owner, password, "198.51.100.32")
    reused = again.post(AUTHENTICATE, {"code": recovery_code})
    wrong = again.post(AUTHENTICATE, {"code": wrong_code(secret)})

    assert reused.status_code == 200
    assert reused.context["form"].errors == {
        "code": [
            "This recovery code has already been used: each one works once. "
            "Use another one, or a code from your authenticator app."
        ]
    }
    assert wrong.context["form"].errors == {"code": ["Incorrect code."]}
    # Still a failed code: logged, and counted by the throttle like any wrong code.
    assert SecurityEvent.objects.filter(user=owner, kind="second_factor_failed").count() == 2

"""The two-factor code step against a real uvicorn process, over HTTP, on the real PostgreSQL and
Redis: wrong codes are counted in Redis, then even the right code is refused with 429 while
another account signs in; the secret the server checks codes with is stored encrypted, and a
pg_dump of the database holds no secret, seed or recovery code."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable

import httpx
import pytest
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, generate_totp_secret, hotp_value
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connection

from accounts import mfa_encryption
from accounts.models import User
from dosportal.testing.gateway import Gateway
from dosportal.testing.gateway import test_database_url as database_url_of_this_run

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("pg_dump") is None, reason="pg_dump is not installed"),
]

PASSWORD = "correct horse battery staple 42"
AUTHENTICATE = "/accounts/2fa/authenticate/"


def codes(secret: str) -> tuple[str, list[str]]:
    """The code of now, and wrong codes (none of the accepted time steps gives them)."""
    step = int(time.time() // 30)
    accepted = {format_hotp_value(hotp_value(secret, step + offset)) for offset in (-2, -1, 0, 1, 2)}
    wrong = [code for code in (f"{i * 111_111 + 7:06d}" for i in range(9)) if code not in accepted]
    return format_hotp_value(hotp_value(secret, step)), wrong


class QuickPBKDF2(PBKDF2PasswordHasher):
    """Django's PBKDF2 with few iterations: the server checks a hash with the iterations written in
    it, so it reads these (the test settings' MD5 is not among its hashers) without a second's work."""

    iterations = 1000


@pytest.fixture(autouse=True)
def _server_hasher(settings) -> None:
    settings.PASSWORD_HASHERS = [f"{__name__}.QuickPBKDF2"]


def post(client: httpx.Client, path: str, form: dict[str, str]) -> httpx.Response:
    return client.post(path, data=form, headers={"X-CSRFToken": client.cookies["csrftoken"]})


def test_a_live_server_throttles_the_code_step_per_account_and_checks_codes_against_the_encrypted_secret(
    gateway_factory: Callable[..., Gateway],
) -> None:
    # A week-long window (aligned to the epoch): the test cannot straddle its edge.
    server = gateway_factory(DOS_AI_MFA_RATE="3/7d")
    user = User.objects.create_user("totp-live@example.com", PASSWORD)
    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    recovery = RecoveryCodes.activate(user)
    with connection.cursor() as cursor:
        cursor.execute("SELECT data->>'secret' FROM mfa_authenticator WHERE user_id = %s", [user.pk])
        (stored,) = cursor.fetchone()
    assert stored.startswith("dosenc1:")
    assert secret not in stored

    with httpx.Client(base_url=server.url, timeout=10) as client:
        client.get("/login/")
        signed_in = post(client, "/login/", {"login": user.email, "password": PASSWORD})
        assert (signed_in.status_code, signed_in.headers["location"]) == (302, AUTHENTICATE)
        right, wrong = codes(secret)

        answers = [post(client, AUTHENTICATE, {"code": code}) for code in wrong[:4]]
        refused_right = post(client, AUTHENTICATE, {"code": right})

    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    assert all("Incorrect code." in answer.text for answer in answers[:3])
    assert refused_right.status_code == 429
    assert 0 < int(refused_right.headers["retry-after"]) <= 7 * 86400
    assert "For your security we paused two-factor codes." in refused_right.text
    assert "sessionid" in client.cookies  # the pending sign-in, never completed
    assert list(user.security_events.order_by("id").values_list("kind", flat=True)) == [
        *["second_factor_failed"] * 3,
        "second_factor_throttled",
    ]

    # Another account is not held back by the first one's count, and its right code signs it in.
    other = User.objects.create_user("totp-live-other@example.com", PASSWORD)
    other_secret = generate_totp_secret()
    TOTP.activate(other, other_secret)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        client.get("/login/")
        post(client, "/login/", {"login": other.email, "password": PASSWORD})
        accepted = post(client, AUTHENTICATE, {"code": codes(other_secret)[0]})
        overview = client.get("/")

    assert (accepted.status_code, accepted.headers["location"]) == (302, "/")
    assert overview.status_code == 200

    # What a backup of the database holds: no secret, no seed, no recovery code.
    dump = subprocess.run(
        ["pg_dump", "--data-only", "--dbname", database_url_of_this_run()], capture_output=True, text=True, check=True
    ).stdout
    seed = mfa_encryption.decrypt(recovery.instance.data["seed"])
    assert "dosenc1:" in dump
    for clear in (secret, other_secret, seed, *recovery.get_unused_codes()):
        assert clear not in dump

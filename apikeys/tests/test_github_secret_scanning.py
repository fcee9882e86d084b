"""POST /hooks/github/secret-scanning/: GitHub's signed reports of published keys.

The tests play GitHub: they make their own ECDSA P-256 key pair, publish its public half in
a keys file in GitHub's format, and sign reports with the private half. Nothing reaches the
internet."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.test import Client

from accounts.models import SecurityEvent, User
from apikeys.keys import generate_key
from apikeys.leaks import LeakReport, leaked_keys_report
from apikeys.models import ApiKey, RevokedReason
from apikeys.services import api_key_authenticate, api_key_roll, describe_key_settings
from apikeys.tests.conftest import MadeKey, SmtpServer

URL = "/hooks/github/secret-scanning/"
FOUND_AT = "https://github.com/octocat/Hello-World/blob/1234567/config.py"
KEY_ID = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a"


class GitHub:
    """What GitHub holds: a signing key, and the public-keys document it publishes."""

    def __init__(self, key_identifier: str = KEY_ID) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.key_identifier = key_identifier

    def document(self) -> bytes:
        pem = self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        entry = {"key_identifier": self.key_identifier, "key": pem.decode(), "is_current": True}
        return json.dumps({"public_keys": [entry]}).encode()

    def sign(self, body: bytes) -> str:
        return base64.b64encode(self.private_key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()

    def headers(self, body: bytes) -> dict[str, str]:
        return {"Github-Public-Key-Identifier": self.key_identifier, "Github-Public-Key-Signature": self.sign(body)}


def report_body(*tokens: str, url: str = FOUND_AT) -> bytes:
    return json.dumps(
        [{"token": t, "type": "dos_ai_api_key", "url": url, "source": "content"} for t in tokens]
    ).encode()


def feedback(token: str, label: str) -> dict[str, str]:
    return {"token_hash": hashlib.sha256(token.encode()).hexdigest(), "token_type": "dos_ai_api_key", "label": label}


@pytest.fixture
def github(tmp_path: Path, settings) -> GitHub:
    github = GitHub()
    keys_file = tmp_path / "github_keys.json"
    keys_file.write_bytes(github.document())
    settings.DOS_AI_GITHUB_SECRET_SCANNING_KEYS = str(keys_file)
    return github


def post(body: bytes, headers: dict[str, str]) -> object:
    return Client().post(URL, body, content_type="application/json", headers=headers)


def test_a_signed_report_revokes_the_key_mails_the_owner_and_logs_it(
    github: GitHub, owner: User, make_key: Callable[..., MadeKey], mailoutbox
) -> None:
    api_key, raw_key = make_key(owner, "CI deploys")
    body = report_body(raw_key)

    response = post(body, github.headers(body))

    assert response.status_code == 200
    assert response.json() == [feedback(raw_key, "true_positive")]
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    assert (api_key.revoked_reason, api_key.leaked_url) == (RevokedReason.LEAKED, FOUND_AT)
    assert api_key_authenticate(raw_key) is None
    assert describe_key_settings(api_key)[-1] == f"revoked automatically: found at {FOUND_AT}"  # the admin's summary
    [event] = SecurityEvent.objects.filter(user=owner, kind=SecurityEvent.Kind.KEY_LEAKED)
    assert event.detail == f"CI deploys ({api_key.hint}), found at {FOUND_AT}"
    assert event.actor_label == "Automatic"
    [mail] = [m for m in mailoutbox if "published" in m.subject]
    assert mail.to == [owner.email]
    assert mail.subject == 'DOS AI: Your API key "CI deploys" was published and has been revoked'
    assert f"- Found at: {FOUND_AT}" in mail.body
    assert "- Reported by: GitHub secret scanning" in mail.body
    assert raw_key not in mail.body + mail.subject


def test_a_repeated_report_is_harmless(
    github: GitHub, owner: User, make_key: Callable[..., MadeKey], mailoutbox
) -> None:
    api_key, raw_key = make_key(owner)
    body = report_body(raw_key)
    post(body, github.headers(body))
    api_key.refresh_from_db()
    revoked_at, mails = api_key.revoked_at, len(mailoutbox)

    response = post(body, github.headers(body))

    assert response.status_code == 200
    assert response.json() == [feedback(raw_key, "true_positive")]
    api_key.refresh_from_db()
    assert api_key.revoked_at == revoked_at
    assert len(mailoutbox) == mails
    assert SecurityEvent.objects.filter(user=owner, kind=SecurityEvent.Kind.KEY_LEAKED).count() == 1


def test_tokens_that_are_not_our_keys_are_false_positives_and_others_are_untouched(
    github: GitHub, owner: User, make_key: Callable[..., MadeKey], django_assert_num_queries
) -> None:
    api_key, raw_key = make_key(owner)
    wrong_checksum = raw_key[:-1] + ("A" if raw_key[-1] != "A" else "B")
    unknown = generate_key()
    body = report_body(wrong_checksum, unknown, "not even a key")

    with django_assert_num_queries(0):  # a wrong checksum is decided without the database
        leaked_keys_report(reports=[LeakReport(wrong_checksum, "t", FOUND_AT)], reporter="test")
    response = post(body, github.headers(body))

    assert response.status_code == 200
    assert response.json() == [
        feedback(wrong_checksum, "false_positive"),
        feedback(unknown, "false_positive"),
        feedback("not even a key", "false_positive"),
    ]
    assert api_key_authenticate(raw_key) == api_key


def test_a_published_old_secret_of_a_rolled_key_stops_working_and_the_new_one_does_not(
    github: GitHub, owner: User, make_key: Callable[..., MadeKey], mailoutbox
) -> None:
    import datetime as dt

    api_key, old_raw = make_key(owner, "Rolled")
    api_key, new_raw = api_key_roll(api_key=api_key, grace=dt.timedelta(hours=24))
    assert api_key_authenticate(old_raw) == api_key
    body = report_body(old_raw)

    response = post(body, github.headers(body))

    assert response.json() == [feedback(old_raw, "true_positive")]
    assert api_key_authenticate(old_raw) is None
    assert api_key_authenticate(new_raw) == api_key
    assert [m.subject for m in mailoutbox if "published" in m.subject] == [
        'DOS AI: The old secret of your API key "Rolled" was published and no longer works'
    ]


def _refused_and_nothing_revoked(response: object, status: int, code: str, api_key: ApiKey, mailoutbox) -> None:
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code
    api_key.refresh_from_db()
    assert api_key.revoked_at is None
    assert not [m for m in mailoutbox if "published" in m.subject]
    assert not SecurityEvent.objects.filter(kind=SecurityEvent.Kind.KEY_LEAKED).exists()


@pytest.fixture
def victim(owner: User, make_key: Callable[..., MadeKey]) -> MadeKey:
    return make_key(owner, "Victim")


def test_a_tampered_body_is_refused(github: GitHub, victim: MadeKey, mailoutbox) -> None:
    api_key, raw_key = victim
    signed = report_body(raw_key, url="https://example.com/a")
    tampered = report_body(raw_key, url="https://example.com/b")

    _refused_and_nothing_revoked(post(tampered, github.headers(signed)), 401, "invalid_signature", api_key, mailoutbox)


def test_an_unknown_key_identifier_is_refused(github: GitHub, victim: MadeKey, mailoutbox) -> None:
    api_key, raw_key = victim
    body = report_body(raw_key)
    headers = {**github.headers(body), "Github-Public-Key-Identifier": "f" * 64}

    _refused_and_nothing_revoked(post(body, headers), 401, "invalid_signature", api_key, mailoutbox)


def test_a_signature_by_another_key_is_refused(github: GitHub, victim: MadeKey, mailoutbox) -> None:
    api_key, raw_key = victim
    body = report_body(raw_key)
    impostor = GitHub(key_identifier=github.key_identifier)  # the right name, the wrong key

    _refused_and_nothing_revoked(post(body, impostor.headers(body)), 401, "invalid_signature", api_key, mailoutbox)


@pytest.mark.parametrize(
    "headers", [{}, {"Github-Public-Key-Identifier": KEY_ID}, {"Github-Public-Key-Signature": "x"}]
)
def test_an_unsigned_report_is_refused(github: GitHub, victim: MadeKey, mailoutbox, headers) -> None:
    api_key, raw_key = victim

    _refused_and_nothing_revoked(post(report_body(raw_key), headers), 401, "invalid_signature", api_key, mailoutbox)


def test_a_signature_that_is_not_base64_is_refused(github: GitHub, victim: MadeKey, mailoutbox) -> None:
    api_key, raw_key = victim
    body = report_body(raw_key)
    headers = {**github.headers(body), "Github-Public-Key-Signature": "%%%not base64"}

    _refused_and_nothing_revoked(post(body, headers), 401, "invalid_signature", api_key, mailoutbox)


def test_an_oversized_report_is_refused_even_when_signed(github: GitHub, victim: MadeKey, mailoutbox, settings) -> None:
    api_key, raw_key = victim
    settings.DOS_AI_SECRET_SCANNING_MAX_BYTES = 2048
    body = report_body(raw_key, url="https://example.com/" + "a" * 2048)

    _refused_and_nothing_revoked(post(body, github.headers(body)), 413, "request_too_large", api_key, mailoutbox)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"token": "x"}', "invalid_value"),
        (b"[]", "invalid_value"),
        (b"[1, 2]", "invalid_value"),
        (b'[{"token": 5, "type": "t", "url": "u"}]', "invalid_value"),
        (b'[{"type": "t", "url": "u"}]', "missing_field"),
        (b"not json", "invalid_json"),
    ],
)
def test_a_signed_body_that_is_not_an_array_of_reports_is_refused(
    github: GitHub, victim: MadeKey, mailoutbox, body: bytes, code: str
) -> None:
    api_key, _ = victim

    _refused_and_nothing_revoked(post(body, github.headers(body)), 400, code, api_key, mailoutbox)


def test_one_bad_entry_refuses_the_whole_report(github: GitHub, victim: MadeKey, mailoutbox) -> None:
    api_key, raw_key = victim
    body = json.dumps([{"token": raw_key, "type": "t", "url": FOUND_AT}, {"token": ["x"]}]).encode()

    _refused_and_nothing_revoked(post(body, github.headers(body)), 400, "invalid_value", api_key, mailoutbox)


def test_without_the_keys_file_reports_wait_with_503(github: GitHub, victim: MadeKey, mailoutbox, settings) -> None:
    api_key, raw_key = victim
    settings.DOS_AI_GITHUB_SECRET_SCANNING_KEYS = "/nonexistent/keys.json"
    body = report_body(raw_key)

    _refused_and_nothing_revoked(post(body, github.headers(body)), 503, "service_unavailable", api_key, mailoutbox)


def test_only_post_is_allowed(github: GitHub) -> None:
    assert Client().get(URL).status_code == 405


@pytest.mark.django_db(transaction=True)
def test_a_reported_key_is_refused_at_once_by_two_server_processes_and_its_owner_is_mailed(
    gateway_factory, api_key: str, api_user: User, tmp_path: Path, smtp_server: SmtpServer
) -> None:
    github = GitHub()
    keys_file = tmp_path / "github_keys.json"
    keys_file.write_bytes(github.document())
    receiving = gateway_factory(
        DOS_AI_GITHUB_SECRET_SCANNING_KEYS=str(keys_file),
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=str(smtp_server.port),
        EMAIL_USE_TLS="0",
    )
    other = gateway_factory()
    clients = [openai.OpenAI(base_url=f"{g.url}/v1", api_key=api_key, max_retries=0) for g in (receiving, other)]
    assert [[m.id for m in client.models.list()][:1] for client in clients] == [["dos-ai"], ["dos-ai"]]
    body = report_body(api_key)

    response = httpx.post(f"{receiving.url}{URL}", content=body, headers=github.headers(body))

    assert response.status_code == 200
    assert response.json() == [feedback(api_key, "true_positive")]
    for client in clients:
        with pytest.raises(openai.AuthenticationError) as refused:
            client.models.list()
        assert refused.value.body == {
            "message": f"This key was revoked because it was published at {FOUND_AT}; create a new key.",
            "type": "authentication_error",
            "code": "invalid_api_key",
        }
    [mail] = smtp_server.received
    assert mail["X-Envelope-To"] == api_user.email
    assert mail["Subject"] == 'DOS AI: Your API key "test key" was published and has been revoked'
    text = mail.get_payload(decode=True).decode()
    assert f"- Found at: {FOUND_AT}" in text
    assert api_key not in text
    assert api_key not in receiving.logs() + other.logs()

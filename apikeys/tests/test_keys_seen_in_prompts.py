"""A /v1 call whose body holds one of our keys is served; the log line and a metric say so, and
the key's owner is told once a day at most (dosportal.v1.keyscan, apikeys.leaks.key_seen_in_prompt).

Live: a uvicorn gateway, the openai SDK, a real SMTP server on 127.0.0.1. The owners' notices
are sent by a background task after the call, in the order the keys were seen, so each test
ends with a call carrying a "last" key and waits for that key's email: every notice the earlier
calls could cause has been sent by then."""

from __future__ import annotations

import json
from collections.abc import Callable
from email.message import Message

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from accounts.models import SecurityEvent, User
from apikeys.keys import generate_key, hash_key
from apikeys.services import api_key_revoke
from apikeys.tests.conftest import MadeKey, SmtpServer
from dosportal.testing.gateway import Gateway, wait_for
from dosportal.v1.keyscan import MAX_KEYS_PER_BODY, keys_in
from webhooks.models import Delivery, Endpoint
from webhooks.services import new_secret

TOKEN = "metrics-token-for-key-scan-tests"
SEEN = "dos_ai_keys_seen_in_prompts_total"


@pytest.fixture(scope="module")
def metrics_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("keyscan-metrics"))


@pytest.fixture
def scanning(gateway_factory: Callable[..., Gateway], module_smtp_server: SmtpServer, metrics_dir: str) -> Gateway:
    """One gateway for the module (the same environment each time: gateway_factory reuses it)."""
    module_smtp_server.received.clear()
    return gateway_factory(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=str(module_smtp_server.port),
        EMAIL_USE_TLS="0",
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        DOS_AI_METRICS_TOKEN=TOKEN,
        DOS_AI_WEBHOOKS_WORKER="0",  # the outbox row is what is checked; nothing is sent
        PROMETHEUS_MULTIPROC_DIR=metrics_dir,
    )


def chat(client: openai.OpenAI, text: str) -> str:
    """One chat call; its request id (the log line's)."""
    raw = client.chat.completions.with_raw_response.create(
        model="dos-ai", max_tokens=4, messages=[{"role": "user", "content": text}]
    )
    assert raw.http_response.status_code == 200
    assert raw.parse().choices[0].message.content
    return raw.headers["x-request-id"]


def seen_count(gateway: Gateway) -> float:
    text = httpx.get(f"{gateway.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == SEEN
    )


def call_lines(gateway: Gateway) -> dict[str, dict]:
    lines = [json.loads(line) for line in gateway.logs().splitlines() if line.startswith("{")]
    return {line["request_id"]: line for line in lines if line["message"].startswith("api call")}


def text_of(mail: Message) -> str:
    return mail.get_payload(decode=True).decode().replace("\r\n", "\n")


def mails_to(smtp: SmtpServer, user: User) -> list[Message]:
    return [mail for mail in smtp.received if mail["X-Envelope-To"] == user.email]


def wait_for_mail(smtp: SmtpServer, user: User) -> None:
    wait_for(lambda: mails_to(smtp, user) or None, timeout=15, what=f"the notice to {user.email}")


def test_keys_in_finds_well_formed_keys_only() -> None:
    key, other = generate_key(), generate_key()
    wrong_checksum = key[:-1] + ("A" if key[-1] != "A" else "B")
    body = json.dumps({"messages": [{"content": f"use {key}, or {other}; again {key}"}]}).encode()

    assert keys_in(body) == [key, other]
    assert keys_in(f'"{wrong_checksum}"'.encode()) == []
    assert keys_in(f"x{key}".encode() + b" " + f"{key}9".encode()) == []  # inside a longer run: no key
    assert keys_in(b'{"content": "dos_sk_ is our prefix"}') == []
    many = " ".join(generate_key() for _ in range(MAX_KEYS_PER_BODY + 5)).encode()
    assert len(keys_in(many)) == MAX_KEYS_PER_BODY


@pytest.mark.django_db(transaction=True)
def test_another_accounts_key_in_a_prompt_is_served_logged_counted_and_its_owner_told_once(
    scanning: Gateway,
    module_smtp_server: SmtpServer,
    api_key: str,
    api_user: User,
    make_key: Callable[..., MadeKey],
    fake_upstream: object,
) -> None:
    smtp = module_smtp_server
    victim = User.objects.create_user("victim@example.com", "x-password-123456")
    victim_key, victim_raw = make_key(victim, "CI deploy")
    hook = Endpoint.objects.create(
        owner=victim, url="https://hooks.example.com/dos", event_types=["api_key.seen_in_prompt"], secret=new_secret()
    )
    last_user = User.objects.create_user("last@example.com", "x-password-123456")
    _, last_raw = make_key(last_user, "last")
    client = openai.OpenAI(base_url=f"{scanning.url}/v1", api_key=api_key, max_retries=0)
    before = seen_count(scanning)

    plain = chat(client, "Hello, nothing secret here")
    pasted = [chat(client, f"Why does this key fail? {victim_raw} (attempt {n})") for n in range(3)]

    assert seen_count(scanning) == before + 3
    chat(client, f"And this one: {last_raw}")
    wait_for_mail(smtp, last_user)
    [mail] = mails_to(smtp, victim)
    assert mail["Subject"] == 'DOS AI: Your API key "CI deploy" was seen in a prompt'
    text = text_of(mail)
    assert f'Your DOS AI API key "CI deploy" ({victim_key.hint}) was in the text of a request' in text
    assert "- Sent with: another account's key" in text
    assert "From:" not in text  # another account's address is not the owner's to see
    assert victim_raw not in text and api_key not in text
    [event] = SecurityEvent.objects.filter(user=victim, kind="key_seen_in_prompt")
    assert (event.actor_label, event.ip_address) == ("Automatic", None)
    assert event.detail == f"key of {victim_key}, in a /v1 request sent with another account's key"
    [delivery] = Delivery.objects.filter(endpoint=hook)
    payload = json.loads(delivery.payload)
    assert (delivery.event_type, payload["type"]) == ("api_key.seen_in_prompt", "api_key.seen_in_prompt")
    assert {k: payload["data"][k] for k in ("id", "name", "hint", "old_secret", "own_account")} == {
        "id": victim_key.pk,
        "name": "CI deploy",
        "hint": victim_key.hint,
        "old_secret": False,
        "own_account": False,
    }
    assert victim_raw not in delivery.payload
    victim_key.refresh_from_db()
    assert victim_key.revoked_at is None  # seen in a prompt is not published: the key still works

    lines = call_lines(scanning)
    assert [lines[request_id]["status"] for request_id in pasted] == [200, 200, 200]
    assert [lines[request_id].get("key_in_prompt") for request_id in pasted] == [True, True, True]
    assert "key_in_prompt" not in lines[plain]
    logs = scanning.logs()
    for secret in (victim_raw, hash_key(victim_raw), last_raw, hash_key(last_raw), api_key):
        assert secret not in logs


@pytest.mark.django_db(transaction=True)
def test_a_revoked_or_mistyped_key_tells_nobody_and_the_callers_own_key_tells_its_owner(
    scanning: Gateway,
    module_smtp_server: SmtpServer,
    api_key: str,
    api_user: User,
    make_key: Callable[..., MadeKey],
    fake_upstream: object,
) -> None:
    smtp = module_smtp_server
    other = User.objects.create_user("other@example.com", "x-password-123456")
    revoked_key, revoked_raw = make_key(other, "old")
    api_key_revoke(api_key=revoked_key)
    _, active_raw = make_key(other, "active")
    mistyped = active_raw[:-1] + ("A" if active_raw[-1] != "A" else "B")  # a wrong checksum: no key
    client = openai.OpenAI(base_url=f"{scanning.url}/v1", api_key=api_key, max_retries=0)
    before = seen_count(scanning)

    revoked_call = chat(client, f"Old config: {revoked_raw}")
    mistyped_call = chat(client, f"Typo: {mistyped}")
    own_call = chat(client, f"My own key is {api_key}, is that a problem?")

    assert seen_count(scanning) == before + 2  # the revoked key is one of ours; the typo is not
    wait_for_mail(smtp, api_user)
    assert [mail["X-Envelope-To"] for mail in smtp.received] == [api_user.email]
    text = text_of(smtp.received[0])
    own_key = api_user.api_keys.get()
    assert f"- Sent with: your key {own_key.hint}\n- From: 127.0.0.1\n" in text
    assert api_key not in text
    [event] = SecurityEvent.objects.filter(user=api_user, kind="key_seen_in_prompt")
    assert (event.ip_address, event.detail) == (
        "127.0.0.1",
        f"key of {own_key}, in a /v1 request sent with your key {own_key.hint}",
    )
    assert not SecurityEvent.objects.filter(user=other, kind="key_seen_in_prompt").exists()

    lines = call_lines(scanning)
    assert (lines[revoked_call].get("key_in_prompt"), lines[own_call].get("key_in_prompt")) == (True, True)
    assert "key_in_prompt" not in lines[mistyped_call]
    assert api_key not in scanning.logs() and hash_key(api_key) not in scanning.logs()

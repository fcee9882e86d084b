"""Faults with real servers: a PostgreSQL of the test's own that is stopped and started, a
gateway worker killed with settlements in its spool, a Redis of the test's own that goes away.

Every scenario ends the same way: each delivered call is charged exactly once, no credit
hold is left, and `manage.py balance EMAIL` (against the throwaway database) prints OK.
The shared PostgreSQL (5432) and Redis (6379) are never stopped: see dosportal.testing.faults.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import psycopg
import pytest

from billing.models import CreditAccount, CreditHold, LedgerEntry, UsageRecord
from dosportal.health import UPSTREAM_HEALTH_SECONDS
from dosportal.testing.faults import ThrowawayPostgres, fault_env, manage, seed_account
from dosportal.testing.gateway import Gateway
from dosportal.testing.upstream import COMPLETION_TOKENS, PROMPT_TOKENS, REPLY_WORDS
from dosportal.v1.settler import read_waiting
from dosportal.v1.store import BREAKER_SECONDS

SIGNUP_MICROS = 5_000_000
# The fake upstream reports 11 prompt and 6 completion tokens: 11 × $0.50/M + 6 × $1.50/M = 14.5 → 15 micro-USD.
CALL_MICROS = 15
CHAT = {"model": "dos-ai", "max_tokens": 20, "messages": [{"role": "user", "content": "Hello, world!!"}]}
SERVICE_UNAVAILABLE = {
    "error": {
        "message": "The service is temporarily unavailable. Try again shortly.",
        "type": "service_unavailable",
        "code": "service_unavailable",
    }
}


# Table names come from the models, never from input: S608 does not apply.
ROWS_SQL = {
    "usage": f"SELECT request_id, client_request_id, status_code, streamed, prompt_tokens, completion_tokens, "  # noqa: S608
    f"cost_micros FROM {UsageRecord._meta.db_table} WHERE user_id = %(user)s ORDER BY id",
    "ledger": f"SELECT kind, amount_micros FROM {LedgerEntry._meta.db_table} WHERE user_id = %(user)s ORDER BY id",  # noqa: S608
    "holds": f"SELECT id FROM {CreditHold._meta.db_table} WHERE user_id = %(user)s",  # noqa: S608
    "account": f"SELECT balance_micros, held_micros FROM {CreditAccount._meta.db_table} WHERE user_id = %(user)s",  # noqa: S608
}


@dataclass
class Account:
    email: str
    user_id: int
    key: str


@dataclass
class Faults:
    postgres: ThrowawayPostgres
    upstream_url: str
    spool: Path
    gateways: list[Gateway] = field(default_factory=list)

    def env(self, **overrides: str) -> dict[str, str]:
        return fault_env(self.postgres, self.upstream_url, **{"DOS_AI_SPOOL_DIR": str(self.spool), **overrides})

    def gateway(self, ready_path: str = "/healthz", **overrides: str) -> Gateway:
        gateway = Gateway(self.env(**overrides), ready_path=ready_path)
        self.gateways.append(gateway)
        return gateway

    def account(self, **limits: int) -> Account:
        return Account(*seed_account(self.env(), **limits))

    def rows(self, account: Account) -> dict[str, list[tuple]]:
        """What the throwaway database holds for `account`."""
        return {name: self.postgres.query(sql, {"user": account.user_id}) for name, sql in ROWS_SQL.items()}

    def session(self, account: Account, **overrides: str) -> str:
        """A signed-in dashboard session of `account` (for a gateway started with `overrides`:
        the same SECRET_KEY): the value of its session cookie."""
        done = manage({**self.env(**overrides), "SEED_EMAIL": account.email}, "shell", "-c", _SIGN_IN)
        return done.stdout.split()[-1]

    def wait_for(self, condition: Callable[[], bool], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(psycopg.OperationalError):  # the database may still be starting
                if condition():
                    return True
            time.sleep(0.25)
        return False

    def assert_charged_exactly_once(self, account: Account, request_ids: list[str], *, streamed: bool = True) -> None:
        rows = self.rows(account)
        assert sorted(row[0] for row in rows["usage"]) == sorted(request_ids)
        assert {row[2:] for row in rows["usage"]} == {(200, streamed, PROMPT_TOKENS, COMPLETION_TOKENS, CALL_MICROS)}
        assert rows["ledger"] == [("grant", SIGNUP_MICROS)] + [("usage", -CALL_MICROS)] * len(request_ids)
        assert rows["holds"] == []
        assert rows["account"] == [(SIGNUP_MICROS - CALL_MICROS * len(request_ids), 0)]
        balance = manage(self.env(), "balance", account.email, check=False)
        assert balance.returncode == 0, balance.stdout + balance.stderr
        assert "OK: the balance equals the ledger sum." in balance.stdout


_SIGN_IN = """
import os
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from accounts.models import User
user = User.objects.get(email=os.environ["SEED_EMAIL"])
session = SessionStore()
session[SESSION_KEY] = str(user.pk)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = user.get_session_auth_hash()
session.create()
print(session.session_key)
"""


@pytest.fixture
def faults(throwaway_postgres: ThrowawayPostgres, fake_upstream, tmp_path: Path) -> Iterator[Faults]:
    spool = tmp_path / "spool"
    spool.mkdir()
    harness = Faults(throwaway_postgres, fake_upstream.url, spool)
    try:
        yield harness
    finally:
        if not throwaway_postgres.is_running():
            throwaway_postgres.start()
        for gateway in harness.gateways:
            gateway.stop()


class Stream(threading.Thread):
    """One streaming chat completion read in a thread: its request id, its events, how it ended."""

    def __init__(self, url: str, key: str, client_request_id: str = ""):
        super().__init__(daemon=True)
        self.url, self.key = url, key
        self.headers = {"Authorization": f"Bearer {key}"} | (
            {"X-Request-Id": client_request_id} if client_request_id else {}
        )
        self.started = threading.Event()
        self.events: list[str] = []
        self.request_id = ""
        self.status = 0
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.stream(
                "POST",
                f"{self.url}/v1/chat/completions",
                json={**CHAT, "stream": True},
                headers=self.headers,
                timeout=60,
            ) as response:
                self.status = response.status_code
                self.request_id = response.headers.get("x-request-id", "")
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        self.events.append(line[6:])
                        self.started.set()
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.failure = error
        finally:
            self.started.set()

    def text(self) -> str:
        words = []
        for event in self.events[:-1]:
            for choice in json.loads(event).get("choices", []):
                words.append(choice.get("delta", {}).get("content") or "")
        return "".join(words)


def streams_cut_by_a_database_outage(faults: Faults, gateway: Gateway, account: Account, count: int) -> list[Stream]:
    """`count` streams that start with PostgreSQL up and end after it was stopped."""
    streams = [Stream(gateway.url, account.key) for _ in range(count)]
    for stream in streams:
        stream.start()
    for stream in streams:
        assert stream.started.wait(30)
    faults.postgres.stop()
    for stream in streams:
        stream.join(60)
    return streams


def assert_delivered_in_full(streams: list[Stream]) -> None:
    for stream in streams:
        assert stream.failure is None, stream.failure
        assert stream.status == 200
        assert stream.events[-1] == "[DONE]", stream.events[-3:]
        assert stream.text() == "".join(REPLY_WORDS)


def spool_lines(spool: Path) -> list[str]:
    return [line for path in sorted(spool.glob("settle-*.jsonl")) for line in path.read_text().splitlines()]


def spooled(spool: Path) -> list[dict]:
    return [json.loads(line) for line in spool_lines(spool)]


def test_streams_in_flight_when_postgresql_stops_are_delivered_and_charged_once_it_is_back(faults, fake_upstream):
    account = faults.account()
    gateway = faults.gateway()
    fake_upstream.chunk_delay = 0.5  # eight events: about 3.5 seconds per stream

    streams = streams_cut_by_a_database_outage(faults, gateway, account, count=6)

    assert_delivered_in_full(streams)
    assert [entry["keep"]["request_id"] for entry in spooled(faults.spool)].count(streams[0].request_id) == 1
    faults.postgres.start()
    assert faults.wait_for(lambda: not faults.rows(account)["holds"], 45), faults.rows(account)
    faults.assert_charged_exactly_once(account, [stream.request_id for stream in streams])
    # Nothing is left waiting in the spool (a settlement written again would be charged again).
    assert read_waiting(spool_lines(faults.spool)) == []
    time.sleep(1.0)
    faults.assert_charged_exactly_once(account, [stream.request_id for stream in streams])


def test_plain_calls_in_flight_when_postgresql_stops_are_answered_and_charged_once_it_is_back(faults, fake_upstream):
    account = faults.account()
    gateway = faults.gateway()
    fake_upstream.response_delay = 2.0  # the upstream answers after PostgreSQL has gone
    answers: list[httpx.Response] = []

    def call() -> None:
        answers.append(httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT,
                                  headers={"Authorization": f"Bearer {account.key}"}, timeout=60))  # fmt: skip

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    assert faults.wait_for(lambda: len(faults.rows(account)["holds"]) == 4, 20)  # all four reserved
    faults.postgres.stop()
    for thread in threads:
        thread.join(60)

    assert [response.status_code for response in answers] == [200] * 4
    assert all(response.json()["choices"][0]["message"]["content"] == "".join(REPLY_WORDS) for response in answers)
    faults.postgres.start()
    assert faults.wait_for(lambda: not faults.rows(account)["holds"], 45), faults.rows(account)
    faults.assert_charged_exactly_once(account, [r.headers["x-request-id"] for r in answers], streamed=False)


def test_a_client_that_leaves_a_stream_while_postgresql_is_down_is_charged_for_what_it_received(faults, fake_upstream):
    account = faults.account()
    gateway = faults.gateway()
    fake_upstream.chunk_delay = 0.5
    received: list[str] = []
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions", json={**CHAT, "stream": True},
        headers={"Authorization": f"Bearer {account.key}"}, timeout=30,
    ) as response:  # fmt: skip
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            if line.startswith("data: "):
                received.append(json.loads(line[6:])["choices"][0]["delta"]["content"])
            if len(received) == 2:
                faults.postgres.stop()
                break  # the client hangs up after two words, with PostgreSQL down

    assert received == REPLY_WORDS[:2]
    assert faults.wait_for(lambda: bool(spool_lines(faults.spool)), 15)  # kept on disk for later
    faults.postgres.start()
    assert faults.wait_for(lambda: not faults.rows(account)["holds"], 45), faults.rows(account)
    rows = faults.rows(account)
    [usage] = rows["usage"]
    # Charged for the prompt ("Hello, world!!" in one message: 13, estimated) and the text delivered
    # before the gateway saw the disconnect: at least the two words received ("Hello from": 3 tokens),
    # at most the whole reply (29 characters: 8).
    assert (usage[0], usage[2], usage[3], usage[4]) == (request_id, 499, True, 13)
    assert 3 <= usage[5] <= 8
    assert usage[6] == math.ceil(13 * 0.5 + usage[5] * 1.5)
    assert rows["ledger"] == [("grant", SIGNUP_MICROS), ("usage", -usage[6])]
    assert rows["account"] == [(SIGNUP_MICROS - usage[6], 0)]
    assert manage(faults.env(), "balance", account.email, check=False).returncode == 0


@pytest.mark.parametrize(
    ("method", "path", "body"), [("POST", "/v1/chat/completions", CHAT), ("GET", "/v1/models", None)]
)
def test_while_postgresql_is_down_v1_answers_503_service_unavailable_within_two_seconds(faults, method, path, body):
    account = faults.account()
    gateway = faults.gateway()
    headers = {"Authorization": f"Bearer {account.key}"}
    assert httpx.get(f"{gateway.url}/v1/models", headers=headers, timeout=10).status_code == 200  # a warm pool

    faults.postgres.stop()
    answers = []
    for _ in range(3):
        started = time.monotonic()
        response = httpx.request(method, f"{gateway.url}{path}", json=body, headers=headers, timeout=30)
        answers.append((response, time.monotonic() - started))
        time.sleep(1.2)  # past the breaker's second: each call tries the database again

    for response, elapsed in answers:
        assert response.status_code == 503
        assert response.json() == SERVICE_UNAVAILABLE
        assert response.headers["retry-after"] == "1"
        assert response.headers["x-request-id"].startswith("req_")
        assert elapsed < 2.0, elapsed
    faults.postgres.start()
    rows = faults.rows(account)
    assert (rows["usage"], rows["holds"], rows["ledger"]) == ([], [], [("grant", SIGNUP_MICROS)])
    # The same worker recovers on its own once PostgreSQL is back.
    assert faults.wait_for(
        lambda: (
            httpx.request(method, f"{gateway.url}{path}", json=body, headers=headers, timeout=10).status_code == 200
        ),
        15,
    )


def test_a_503_comes_within_two_seconds_even_on_a_cold_pool(faults):
    account = faults.account()
    # Checked on a static file, not /healthz (which pings on /v1's pool): the pool is not open yet.
    gateway = faults.gateway(ready_path="/static/css/app.css")

    faults.postgres.stop()
    started = time.monotonic()
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {account.key}"}, timeout=30
    )
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response.json() == SERVICE_UNAVAILABLE
    assert elapsed < 2.0, elapsed


def killed_with_a_full_spool(faults: Faults, fake_upstream) -> tuple[Account, list[Stream]]:
    """Streams delivered while PostgreSQL was down, then their worker SIGKILLed; PostgreSQL is back."""
    account = faults.account()
    gateway = faults.gateway()
    fake_upstream.chunk_delay = 0.5
    streams = streams_cut_by_a_database_outage(faults, gateway, account, count=4)
    assert_delivered_in_full(streams)
    time.sleep(0.5)
    os.kill(gateway.process.pid, signal.SIGKILL)
    gateway.process.wait(10)
    kept = [entry["keep"]["request_id"] for entry in spooled(faults.spool) if "keep" in entry]
    assert sorted(kept) == sorted(stream.request_id for stream in streams)
    faults.postgres.start()
    assert len(faults.rows(account)["holds"]) == len(streams)  # nobody has written them yet
    return account, streams


def test_a_new_worker_adopts_a_killed_worker_s_spool_and_charges_it_once(faults, fake_upstream):
    account, streams = killed_with_a_full_spool(faults, fake_upstream)

    successor = faults.gateway(DOS_AI_TEST_INSTANCE="successor")
    follow_up = httpx.post(
        f"{successor.url}/v1/chat/completions",
        json=CHAT,
        headers={"Authorization": f"Bearer {account.key}"},
        timeout=30,
    )

    assert follow_up.status_code == 200
    request_ids = [stream.request_id for stream in streams] + [follow_up.headers["x-request-id"]]
    assert faults.wait_for(lambda: not faults.rows(account)["holds"], 30), faults.rows(account)
    usage = faults.rows(account)["usage"]
    assert [row[3] for row in usage].count(False) == 1  # the follow-up; the four adopted ones were streamed
    assert sorted(row[0] for row in usage) == sorted(request_ids)
    # Another restart replays nothing twice.
    successor.stop()
    faults.gateways.remove(successor)
    third = faults.gateway(DOS_AI_TEST_INSTANCE="third")
    assert httpx.get(f"{third.url}/v1/models", headers={"Authorization": f"Bearer {account.key}"}).status_code == 200
    time.sleep(1.0)
    rows = faults.rows(account)
    assert sorted(row[0] for row in rows["usage"]) == sorted(request_ids)
    assert rows["ledger"] == [("grant", SIGNUP_MICROS)] + [("usage", -CALL_MICROS)] * 5
    assert rows["account"] == [(SIGNUP_MICROS - 5 * CALL_MICROS, 0)]
    assert manage(faults.env(), "balance", account.email, check=False).returncode == 0


def test_a_new_worker_adopts_a_killed_worker_s_spool_without_waiting_for_traffic(faults, fake_upstream):
    account, streams = killed_with_a_full_spool(faults, fake_upstream)

    faults.gateway(DOS_AI_TEST_INSTANCE="successor")  # no /v1 call reaches it

    assert faults.wait_for(lambda: not faults.rows(account)["holds"], 20), faults.rows(account)
    faults.assert_charged_exactly_once(account, [stream.request_id for stream in streams])


def test_with_its_redis_stopped_calls_are_admitted_and_charged_and_limits_return_with_it(faults, throwaway_redis):
    account = faults.account(rpm=3)
    gateway = faults.gateway(REDIS_URL=throwaway_redis.url)
    headers = {"Authorization": f"Bearer {account.key}"}

    def call() -> httpx.Response:
        return httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=headers, timeout=30)

    before = [call() for _ in range(4)]
    throwaway_redis.stop()
    during = [call() for _ in range(5)]
    throwaway_redis.start()  # empty: its windows start afresh
    after: list[httpx.Response] = []
    while len(after) < 8 and (not after or after[-1].status_code != 429):
        after.append(call())

    assert [response.status_code for response in before] == [200, 200, 200, 429]
    assert [response.status_code for response in during] == [200] * 5
    assert all("x-ratelimit-remaining-requests" not in response.headers for response in during)
    # At most one call may still fail open while the worker reconnects; then the limit holds exactly.
    reconnecting, limited = after[:-4], after[-4:]
    assert len(reconnecting) <= 1
    assert all("x-ratelimit-remaining-requests" not in response.headers for response in reconnecting)
    assert [response.status_code for response in limited] == [200, 200, 200, 429]
    assert [response.headers["x-ratelimit-remaining-requests"] for response in limited] == ["2", "1", "0", "0"]
    assert limited[3].json()["error"]["code"] == "rate_limit_exceeded"
    charged = [r.headers["x-request-id"] for r in before[:3] + during + after[:-1]]
    faults.assert_charged_exactly_once(account, charged, streamed=False)


def test_healthz_says_503_while_postgresql_is_down_and_200_once_it_is_back(faults):
    gateway = faults.gateway()

    faults.postgres.stop()
    down = httpx.get(f"{gateway.url}/healthz", timeout=10)
    time.sleep(UPSTREAM_HEALTH_SECONDS + 0.2)  # past the upstreams' memo, which is read from the database
    still_down = httpx.get(f"{gateway.url}/healthz", timeout=10)
    faults.postgres.start()

    assert (down.status_code, down.json()) == (503, {"status": "error", "database": "unavailable"})
    assert (still_down.status_code, still_down.json()) == (503, {"status": "error", "database": "unavailable"})
    assert "no-store" in down.headers["cache-control"]
    assert faults.wait_for(lambda: httpx.get(f"{gateway.url}/healthz", timeout=10).status_code == 200, 15)


# --- After a PostgreSQL restart, and with a spool that cannot be written (issue 21) ------------------

DASHBOARD_PAGES = ("/", "/keys/", "/usage/")
PRODUCTION = {  # DEBUG=0 (Django's 500 handler, not the debug page) over plain HTTP on 127.0.0.1
    "DEBUG": "0", "SECRET_KEY": "fault-tests-" + "x" * 50, "ALLOWED_HOSTS": "127.0.0.1",
    "SECURE_SSL_REDIRECT": "0", "SECURE_HSTS_SECONDS": "0", "SESSION_COOKIE_SECURE": "0", "CSRF_COOKIE_SECURE": "0",
}  # fmt: skip


def sdk(gateway: Gateway, account: Account) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=account.key, max_retries=0)  # a 503 must show


def load_pages(gateway: Gateway, session: str, times: int = 1) -> list[int]:
    """Dashboard pages, `times` each at once (so the pool holds that many connections): their statuses."""
    statuses: list[int] = []

    def load(path: str) -> None:
        statuses.append(httpx.get(f"{gateway.url}{path}", cookies={"sessionid": session}, timeout=30).status_code)

    threads = [threading.Thread(target=load, args=(path,)) for path in DASHBOARD_PAGES * times]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return statuses


def assert_charged_once_each(faults: Faults, account: Account, request_ids: list[str]) -> None:
    rows = faults.rows(account)
    assert sorted(row[0] for row in rows["usage"]) == sorted(request_ids)
    assert {(row[2], row[4], row[5], row[6]) for row in rows["usage"]} == {
        (200, PROMPT_TOKENS, COMPLETION_TOKENS, CALL_MICROS)
    }
    assert rows["ledger"] == [("grant", SIGNUP_MICROS)] + [("usage", -CALL_MICROS)] * len(request_ids)
    assert rows["holds"] == []
    assert rows["account"] == [(SIGNUP_MICROS - CALL_MICROS * len(request_ids), 0)]
    balance = manage(faults.env(), "balance", account.email, check=False)
    assert balance.returncode == 0, balance.stdout + balance.stderr
    assert "OK: the balance equals the ledger sum." in balance.stdout


def test_after_postgresql_restarts_the_next_call_is_served_the_spool_is_written_and_the_dashboard_answers(
    faults, fake_upstream
):
    account = faults.account()
    # Idle connections kept as in production (the fault suite's default closes them after 2 s).
    gateway = faults.gateway(DATABASE_POOL_MAX_IDLE="300")
    session = faults.session(account)
    client = sdk(gateway, account)
    assert load_pages(gateway, session, times=2) == [200] * 6  # Django's pool holds connections
    warm = [client.chat.completions.with_raw_response.create(**CHAT) for _ in range(2)]
    fake_upstream.chunk_delay = 0.5

    streams = streams_cut_by_a_database_outage(faults, gateway, account, count=6)  # /v1's pool: connections too
    assert_delivered_in_full(streams)
    time.sleep(2.0)  # down for a few seconds, streams kept in the spool
    faults.postgres.start()
    time.sleep(BREAKER_SECONDS)  # a retry that failed just before the start holds calls back this long at most
    first = client.chat.completions.with_raw_response.create(**CHAT)
    pages = load_pages(gateway, session)

    assert first.http_response.status_code == 200
    assert first.parse().choices[0].message.content == "".join(REPLY_WORDS)
    assert pages == [200] * len(DASHBOARD_PAGES)
    # Written within a few seconds (a retry every LAST_RETRY_SECONDS at most); the deadline is generous.
    assert faults.wait_for(lambda: not faults.rows(account)["holds"], 15), faults.rows(account)
    calls = [stream.request_id for stream in streams] + [r.headers["x-request-id"] for r in [*warm, first]]
    assert_charged_once_each(faults, account, calls)
    assert read_waiting(spool_lines(faults.spool)) == []


def test_while_postgresql_is_down_the_dashboard_answers_a_503_page_not_a_500(faults):
    account = faults.account()
    # A request waits DATABASE_POOL_TIMEOUT for a connection before its 503 (10 s by default).
    gateway = faults.gateway(**PRODUCTION, DATABASE_POOL_TIMEOUT="1")
    session = faults.session(account, **PRODUCTION)

    faults.postgres.stop()
    down = httpx.get(f"{gateway.url}/keys/", cookies={"sessionid": session}, timeout=30)
    faults.postgres.start()

    assert down.status_code == 503
    assert down.headers["retry-after"] == "5"
    assert down.headers["content-type"] == "text/html; charset=utf-8"
    assert "<h1>Temporarily unavailable</h1>" in down.text
    assert 'href="/static/css/app.css"' in down.text
    assert "no-store" in down.headers["cache-control"]
    assert "OperationalError" in gateway.logs()  # the cause is logged, with its traceback
    # Once it is back the page is rendered again (here without collectstatic's manifest, which
    # DEBUG=0 needs for every other page: so not a 200, but no longer the database's 503).
    assert faults.wait_for(
        lambda: httpx.get(f"{gateway.url}/keys/", cookies={"sessionid": session}, timeout=30).status_code != 503, 15
    )


def test_with_a_spool_that_cannot_be_written_and_postgresql_down_calls_are_served_and_charged_once_it_is_back(
    faults, fake_upstream, tmp_path
):
    # Tests run as root, for whom every directory is writable: this spool's parent is a regular
    # file, so it cannot be made (ENOTDIR) — as a read-only or someone else's directory could not.
    (tmp_path / "a-file").write_text("")
    account = faults.account()
    gateway = faults.gateway(DOS_AI_SPOOL_DIR=str(tmp_path / "a-file" / "spool"))
    fake_upstream.chunk_delay = 0.5
    health = httpx.get(f"{gateway.url}/healthz", timeout=10)

    streams = streams_cut_by_a_database_outage(faults, gateway, account, count=4)
    assert_delivered_in_full(streams)
    time.sleep(1.0)  # settlements waiting in memory, retried
    faults.postgres.start()

    assert (health.status_code, health.json()) == (
        200,
        {"status": "degraded", "database": "ok", "spool": "not writable"},
    )
    assert faults.wait_for(lambda: not faults.rows(account)["holds"], 15), faults.rows(account)
    assert_charged_once_each(faults, account, [stream.request_id for stream in streams])
    logs = gateway.logs()
    assert "settlement spool" in logs and "failed" in logs
    time.sleep(1.0)  # nothing is written twice
    assert len(faults.rows(account)["ledger"]) == 1 + len(streams)


def alter(faults: Faults, change: str) -> None:
    """ALTER TABLE on the usage records of the throwaway database (names from the model, not input)."""
    with psycopg.connect(faults.postgres.url, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f"ALTER TABLE {UsageRecord._meta.db_table} {change}")


def test_a_settlement_the_database_refuses_waits_and_is_reported_while_the_others_are_written(faults, fake_upstream):
    account = faults.account()
    gateway = faults.gateway()
    # Not an outage: PostgreSQL refuses this one call's settlement (a check on what it writes).
    alter(faults, "ADD CONSTRAINT fault_refuse CHECK (client_request_id <> 'refuse-me') NOT VALID")
    fake_upstream.chunk_delay = 0.5
    refused = Stream(gateway.url, account.key, client_request_id="refuse-me")
    refused.start()  # first, so its settlement is first in the retry queue
    assert refused.started.wait(30)
    streams = [refused, *streams_cut_by_a_database_outage(faults, gateway, account, count=4)]
    refused.join(60)
    assert_delivered_in_full(streams)

    faults.postgres.start()
    others = [stream.request_id for stream in streams[1:]]
    assert faults.wait_for(lambda: len(faults.rows(account)["usage"]) == len(others), 15), faults.rows(account)
    waiting = manage(faults.env(), "balance", account.email, check=False)
    [hold] = faults.rows(account)["holds"]
    alter(faults, "DROP CONSTRAINT fault_refuse")

    assert sorted(row[0] for row in faults.rows(account)["usage"]) == sorted(others)
    assert waiting.returncode == 1
    assert (
        f"MISMATCH: the database refused the settlement of hold {hold[0]}, which waits in the spool" in waiting.stdout
    )
    assert "refused by the database; kept for retry, the others are written" in gateway.logs()
    # Once the database takes it, it is written like the others, once.
    assert faults.wait_for(lambda: not faults.rows(account)["holds"], 15), faults.rows(account)
    assert_charged_once_each(faults, account, [stream.request_id for stream in streams])

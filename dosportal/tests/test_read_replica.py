"""DATABASE_REPLICA_URL: the usage page and its export read a real streaming replica.

The throwaway primary (dosportal.testing.faults) has a hot standby kept by streaming
replication (dosportal.testing.replica). With the standby's replay paused, the primary has a
call the standby has not: the usage page and the usage export (replica) do not count it yet and
say how far behind they are, while the ledger export (primary: money) does; once replay resumes
the page counts it and says nothing.
"""

from __future__ import annotations

import csv
import re
import time

import httpx
import openai
import pytest

from dosportal.testing.faults import fault_env, manage, seed_account
from dosportal.testing.gateway import Gateway
from dosportal.testing.html import sign_in_over_http
from dosportal.tests.test_settings import print_settings, run_django

CHAT = {"model": "dos-ai", "max_tokens": 6, "messages": [{"role": "user", "content": "Hello, world!!"}]}
USAGE_ROWS = "SELECT count(*) FROM billing_usagerecord WHERE user_id = %(user)s"
LAG_NOTICE_SECONDS = 1.0
LAG_NOTICE = (
    r"These figures are about \d+ seconds? behind: the most recent requests may not be counted yet\. "
    r'Your balance on the <a href="/billing/">billing page</a> is up to date\.'
)


@pytest.fixture
def replicated_gateway(throwaway_postgres, streaming_replica, fake_upstream):
    env = fault_env(
        throwaway_postgres,
        fake_upstream.url,
        DATABASE_REPLICA_URL=streaming_replica.url,
        DOS_AI_REPLICA_LAG_NOTICE_SECONDS=str(LAG_NOTICE_SECONDS),
    )
    gateway = Gateway(env)
    yield gateway, env
    gateway.stop()


def requests_on_usage_page(browser: httpx.Client) -> tuple[int, str | None]:
    """(the page's request total, its lag notice's text or None)."""
    page = browser.get("/usage/")
    assert page.status_code == 200
    total = re.search(r'data-total="requests">([\d,]+)<', page.text)
    notice = re.search(r'id="replica-lag">.*?<div>(.*?)</div>', page.text, re.S)
    return int(total.group(1)) if total else 0, notice.group(1).strip() if notice else None


def test_usage_reads_the_replica_and_says_when_it_is_behind_while_money_reads_the_primary(
    replicated_gateway, throwaway_postgres, streaming_replica
):
    gateway, env = replicated_gateway
    email, user_id, raw_key = seed_account(env)
    verified = manage(env, "shell", "-c", "from accounts.models import User; from accounts.services import "
                      f"account_mark_email_verified as v; v(user=User.objects.get(pk={user_id}))")  # fmt: skip
    assert verified.returncode == 0
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=raw_key, max_retries=0)
    rows = {"user": user_id}

    with httpx.Client(base_url=gateway.url, timeout=30) as browser:
        assert sign_in_over_http(browser, email, "x-password-123456")[1].status_code == 302
        assert client.chat.completions.create(**CHAT).usage.total_tokens == 17
        streaming_replica.wait_until(USAGE_ROWS, rows, [(1,)])
        caught_up = requests_on_usage_page(browser)

        streaming_replica.pause()
        assert client.chat.completions.create(**CHAT).usage.total_tokens == 17
        time.sleep(LAG_NOTICE_SECONDS + 0.5)  # let the paused replica fall past the notice threshold
        on_primary, on_replica = throwaway_postgres.query(USAGE_ROWS, rows), streaming_replica.query(USAGE_ROWS, rows)
        behind = requests_on_usage_page(browser)
        usage_csv = browser.get("/usage/export.csv").text.splitlines()
        ledger_csv = browser.get("/billing/ledger.csv").text.splitlines()

        streaming_replica.resume()
        streaming_replica.wait_until(USAGE_ROWS, rows, [(2,)])
        resumed = requests_on_usage_page(browser)

    assert caught_up == (1, None)
    assert (on_primary, on_replica) == ([(2,)], [(1,)])
    assert behind[0] == 1
    assert re.fullmatch(LAG_NOTICE, behind[1]), behind[1]
    assert [row[4] for row in list(csv.reader(usage_csv))[1:]] == ["1"]  # requests, from the replica
    assert [row[1:2] + row[5:6] for row in list(csv.reader(ledger_csv))[1:]] == [["usage", "2"], ["grant", "1"]]
    assert resumed == (2, None)


def test_a_replica_adds_an_alias_and_the_router_and_without_one_nothing_changes():
    base = {"DEBUG": "1", "DOS_AI_ALLOW_DEV_MODEL": "1", "DATABASE_URL": "postgres://u@db:5432/dos"}

    alone = print_settings(base, "DATABASES", "DATABASE_ROUTERS")
    replicated = print_settings({**base, "DATABASE_REPLICA_URL": "postgres://u@replica:5432/dos"}, "DATABASES",
                                "DATABASE_ROUTERS")  # fmt: skip
    other_kind = run_django({**base, "DATABASE_REPLICA_URL": "sqlite:///replica.sqlite3"}, "check")

    assert list(alone["DATABASES"]) == ["default"]
    assert alone["DATABASE_ROUTERS"] == []  # a single host pays nothing for the router
    assert replicated["DATABASE_ROUTERS"] == ["dosportal.dbrouter.ReplicaRouter"]
    assert replicated["DATABASES"]["replica"]["HOST"] == "replica"
    assert (
        replicated["DATABASES"]["replica"]["OPTIONS"]["pool"] == replicated["DATABASES"]["default"]["OPTIONS"]["pool"]
    )
    assert other_kind.returncode == 1
    assert "DATABASE_REPLICA_URL must be the same kind of database as DATABASE_URL" in other_kind.stderr

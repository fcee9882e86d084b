"""The portal behind PgBouncer in transaction mode (DATABASE_POOLER=pgbouncer).

PgBouncer (dosportal.testing.pgbouncer) has fewer server connections than the gateway's and the
dashboard's pools, so one client connection's transactions move between server connections: a
prepared statement or a server-side cursor left on one of them breaks the next call. `migrate`,
the /v1 money invariants (with the official SDK) and the dashboard all run through it.
"""

from __future__ import annotations

import base64
import csv
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import psycopg
import pytest
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connection
from django.db.models import Sum

from accounts.models import User
from accounts.services import account_mark_email_verified, account_set_limits
from billing.models import CreditAccount, CreditHold, LedgerEntry, UsageRecord
from billing.selectors import ledger_sum_micros
from dosportal.checks.database import pooler_warnings
from dosportal.testing.costs import hold_micros, parsed
from dosportal.testing.faults import manage
from dosportal.testing.gateway import wait_for
from dosportal.testing.html import sign_in_over_http
from dosportal.tests.test_settings import run_django

# "Hello, world!!": 11 prompt tokens, 6 completion tokens at $0.50 / $1.50 per million = 15 micro-USD
# (see dosportal/v1/tests/test_billing_gateway.py).
CHAT = {"model": "dos-ai", "max_tokens": 6, "messages": [{"role": "user", "content": "Hello, world!!"}]}
CALL_COST = 15


@pytest.fixture
def behind_pgbouncer(pgbouncer, gateway_factory, transactional_db):
    """A live gateway whose every connection (the /v1 pool and Django's) goes through PgBouncer."""
    database = connection.settings_dict["NAME"]
    gateway = gateway_factory(DATABASE_URL=pgbouncer.url(database), DATABASE_POOLER="pgbouncer")
    before = pgbouncer.transactions(database)
    yield gateway
    assert pgbouncer.transactions(database) > before, "the gateway did not go through PgBouncer"
    assert "does not exist" not in gateway.logs(), gateway.logs()[-3000:]


def sdk(gateway, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=0)


def outcomes(gateway, api_key: str, count: int) -> list[int]:
    """`count` chat calls started together; the status of each (200 or the SDK error's)."""
    start = threading.Barrier(count)
    client = sdk(gateway, api_key)

    def call(_: int) -> int:
        start.wait()
        try:
            client.chat.completions.create(**CHAT)
        except openai.APIStatusError as error:
            return error.status_code
        return 200

    with ThreadPoolExecutor(max_workers=count) as pool:
        return sorted(pool.map(call, range(count)))


def set_balance(user: User, micros: int) -> None:
    LedgerEntry.objects.filter(user=user).delete()
    LedgerEntry.objects.create(user=user, kind="grant", amount_micros=micros, balance_after_micros=micros)
    CreditAccount.objects.filter(user=user).update(balance_micros=micros, held_micros=0)


def test_migrate_runs_through_pgbouncer(pgbouncer, _upstream_server):
    database = f"{connection.settings_dict['NAME']}_pgbouncer"
    server = {"host": "127.0.0.1", "port": settings.DATABASES["default"]["PORT"] or 5432, "user": pgbouncer.user}
    # The environment of a manage.py run whose only database is the new one, through PgBouncer.
    env = {name: value for name, value in os.environ.items() if not name.startswith(("DATABASE_", "REDIS_"))}
    env |= {"DEBUG": "1", "DATABASE_URL": pgbouncer.url(database), "DATABASE_POOLER": "pgbouncer",
            "DOS_AI_UPSTREAM_URL": _upstream_server.url, "LOG_LEVEL": "WARNING"}  # fmt: skip
    with psycopg.connect(**server, dbname="postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{database}"')
        try:
            migrated = manage(env, "migrate", "--noinput", check=False)
            pending = manage(env, "migrate", "--check", check=False)
            with psycopg.connect(**server, dbname=database) as direct:
                models = direct.execute("SELECT count(*) FROM billing_servedmodel").fetchone()[0]
            through_pgbouncer = pgbouncer.transactions(database)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    assert migrated.returncode == 0, migrated.stderr[-3000:]
    assert pending.returncode == 0, pending.stdout + pending.stderr
    assert models > 0  # the seed migration's rows
    assert through_pgbouncer > 0


def test_the_requests_per_minute_limit_is_exact(behind_pgbouncer, api_key, api_user, fake_upstream):
    account_set_limits(user=api_user, requests_per_minute=10, tokens_per_minute=1_000_000)

    statuses = outcomes(behind_pgbouncer, api_key, 30)

    assert statuses == [200] * 10 + [429] * 20
    assert UsageRecord.objects.count() == 10


def test_concurrent_calls_never_spend_more_than_the_balance(behind_pgbouncer, api_key, api_user, fake_upstream):
    hold = hold_micros(CHAT)  # each call holds its worst case and is charged CALL_COST
    set_balance(api_user, 5 * hold)

    statuses = outcomes(behind_pgbouncer, api_key, 20)

    served = statuses.count(200)  # five holds fit at once; each settled call frees the rest of its hold
    assert 5 <= served <= (5 * hold) // CALL_COST
    assert sorted(statuses) == [200] * served + [402] * (20 - served)
    account = CreditAccount.objects.get(user=api_user)
    assert (account.balance_micros, account.held_micros) == (5 * hold - served * CALL_COST, 0)
    assert ledger_sum_micros(user=api_user) == account.balance_micros
    assert not CreditHold.objects.exists()


def test_each_of_many_concurrent_calls_is_charged_exactly_once(behind_pgbouncer, api_key, api_user, fake_upstream):
    before = CreditAccount.objects.get(user=api_user).balance_micros

    statuses = outcomes(behind_pgbouncer, api_key, 40)

    assert statuses == [200] * 40
    usage = UsageRecord.objects.all()
    assert usage.count() == usage.values("request_id").distinct().count() == 40
    charged = LedgerEntry.objects.filter(user=api_user, kind="usage")
    assert charged.count() == 40
    assert charged.aggregate(total=Sum("amount_micros"))["total"] == -40 * CALL_COST
    account = CreditAccount.objects.get(user=api_user)
    assert (account.balance_micros, account.held_micros) == (before - 40 * CALL_COST, 0)
    assert ledger_sum_micros(user=api_user) == account.balance_micros


def test_a_stream_cut_off_by_the_client_is_charged_for_what_was_delivered(
    behind_pgbouncer, api_key, api_user, fake_upstream
):
    fake_upstream.chunk_delay = 0.3
    before = CreditAccount.objects.get(user=api_user).balance_micros

    stream = sdk(behind_pgbouncer, api_key).chat.completions.create(**CHAT, stream=True)
    first = next(iter(stream))
    stream.close()

    assert first.choices[0].delta.content
    record = wait_for(UsageRecord.objects.first, what="the settlement")
    assert record.status_code == 499
    assert record.prompt_tokens == parsed(CHAT).prompt_estimate  # no usage came: the prompt's estimate
    assert 1 <= record.completion_tokens < 6
    account = CreditAccount.objects.get(user=api_user)
    assert (account.balance_micros, account.held_micros) == (before - record.cost_micros, 0)
    assert record.cost_micros > 0
    assert ledger_sum_micros(user=api_user) == account.balance_micros


def test_the_dashboard_signs_in_lists_keys_and_exports_usage(
    behind_pgbouncer, api_key, api_user, password, fake_upstream
):
    assert sdk(behind_pgbouncer, api_key).chat.completions.create(**CHAT).usage.total_tokens == 17
    # The tests' own hasher (MD5, conftest.py) is not one the server knows: hash as the server does.
    api_user.password = PBKDF2PasswordHasher().encode(password, PBKDF2PasswordHasher().salt())
    api_user.save()
    account_mark_email_verified(user=api_user)
    with httpx.Client(base_url=behind_pgbouncer.url, timeout=30) as browser:
        form, signed_in = sign_in_over_http(browser, api_user.email, password)
        keys = browser.get("/keys/")
        # QuerySet.iterator(): a server-side cursor unless DATABASE_POOLER turns them off.
        export = browser.get("/usage/export.csv")

    assert form.status_code == 200
    assert (signed_in.status_code, signed_in.headers["location"]) == (302, "/")
    assert keys.status_code == 200
    assert "test key" in keys.text
    assert export.status_code == 200
    assert list(csv.reader(export.text.splitlines()))[1][3:] == ["dos-ai", "1", "11", "6", "0.000015"]


# --- the deploy check -----------------------------------------------------------------------


def test_a_database_on_pgbouncers_port_without_the_pooler_setting_is_warned_about():
    database = {"ENGINE": "django.db.backends.postgresql", "PORT": "6432", "OPTIONS": {}}

    assert [message.id for message in pooler_warnings(database, "")] == ["dosportal.W102"]
    assert pooler_warnings({**database, "DISABLE_SERVER_SIDE_CURSORS": True}, "pgbouncer") == []
    assert pooler_warnings({**database, "PORT": "5432"}, "") == []


def test_the_pooler_with_server_side_cursors_or_prepared_statements_is_warned_about():
    database = {"ENGINE": "django.db.backends.postgresql", "PORT": "5432", "OPTIONS": {}}
    prepared = {**database, "DISABLE_SERVER_SIDE_CURSORS": True, "OPTIONS": {"prepare_threshold": 5}}
    sqlite = {"ENGINE": "django.db.backends.sqlite3"}

    assert [message.id for message in pooler_warnings(database, "pgbouncer")] == ["dosportal.W103"]
    assert [message.id for message in pooler_warnings(prepared, "pgbouncer")] == ["dosportal.W104"]
    assert [message.id for message in pooler_warnings(sqlite, "pgbouncer")] == ["dosportal.W101"]


def test_the_deploy_check_names_the_pgbouncer_port_and_pooler_settings_switch_cursors_off(db):
    production = {
        "DEBUG": "0", "SECRET_KEY": "x" * 60 + "Aa1!", "ALLOWED_HOSTS": "portal.example.com",
        "REDIS_URL": "redis://127.0.0.1:6379/0", "DOS_AI_UPSTREAM_URL": "http://127.0.0.1:9/v1",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:6432/dos",
        "DOS_AI_MFA_ENCRYPTION_KEYS": base64.urlsafe_b64encode(b"k" * 32).decode(),  # else W001 warns
    }  # fmt: skip

    unpooled = run_django(production, "check", "--deploy")
    pooled = run_django({**production, "DATABASE_POOLER": "pgbouncer"}, "check", "--deploy", "--fail-level", "WARNING")
    cursors = run_django(
        {**production, "DATABASE_POOLER": "PgBouncer"},
        "-c",
        "import os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'dosportal.settings'); import django; "
        "django.setup(); from django.conf import settings; "
        "print(settings.DATABASE_POOLER, settings.DATABASES['default']['DISABLE_SERVER_SIDE_CURSORS'])",
    )
    wrong = run_django({**production, "DATABASE_POOLER": "pgpool"}, "check")

    assert "dosportal.W102" in unpooled.stderr, unpooled.stdout + unpooled.stderr
    assert pooled.returncode == 0, pooled.stdout + pooled.stderr
    assert cursors.stdout.split() == ["pgbouncer", "True"]
    assert "DATABASE_POOLER must be one of pgbouncer; got 'pgpool'" in wrong.stderr

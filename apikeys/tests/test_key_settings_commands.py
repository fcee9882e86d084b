"""`update_api_key` and `roll_api_key`: each setting and its "none" form, the one-line errors."""

from __future__ import annotations

import datetime as dt
import io
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apikeys.keys import hash_key, is_well_formed
from apikeys.models import ApiKey
from apikeys.services import api_key_authenticate
from billing.models import ServedModel
from billing.seed import SEED, ensure


@pytest.fixture(autouse=True)
def _models(db: None) -> None:
    for row in SEED:
        ensure(ServedModel, row)


def update(*args: str) -> str:
    out = io.StringIO()
    call_command("update_api_key", *args, stdout=out)
    return out.getvalue()


def test_every_setting_is_set_and_then_removed(owner, make_key):
    api_key, _ = make_key(owner, "ci")

    printed = update(
        owner.email,
        "ci",
        "--expires-at",
        "2099-01-02T03:04:05Z",
        "--spend-limit",
        "2.50",
        "--spend-period",
        "week",
        "--models",
        "dos-ai,dos-ai-embed",
        "--max-concurrency",
        "4",
        "--allow-ips",
        "10.1.2.3/8, 2001:db8::1",
        "--rename",
        "CI runner",
    )
    api_key.refresh_from_db()

    assert api_key.name == "CI runner"
    assert api_key.expires_at == dt.datetime(2099, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert (api_key.spend_limit_micros, api_key.spend_period) == (2_500_000, "week")
    assert api_key.allowed_models == ["dos-ai", "dos-ai-embed"]
    assert api_key.max_concurrency == 4
    assert api_key.allowed_ips == ["10.0.0.0/8", "2001:db8::1"]
    assert printed.splitlines() == [
        f"Updated key 'CI runner' ({api_key.hint}) of owner@example.com:",
        "  expires: 2099-01-02 03:04:05 UTC",
        "  spend limit: $2.50 per week (UTC), spent $0.00",
        "  models: dos-ai, dos-ai-embed",
        "  max concurrent requests: 4",
        "  allowed IPs: 10.0.0.0/8, 2001:db8::1",
    ]

    update(
        owner.email, "CI runner", "--no-expiry", "--no-spend-limit", "--all-models", "--no-max-concurrency", "--any-ip"
    )
    api_key.refresh_from_db()
    assert (api_key.expires_at, api_key.spend_limit_micros, api_key.spend_period) == (None, None, "")
    assert (api_key.allowed_models, api_key.max_concurrency, api_key.allowed_ips) == (None, None, None)


def test_expires_in_counts_days_from_now(owner, make_key):
    api_key, _ = make_key(owner, "ci")
    before = dt.datetime.now(dt.UTC)
    update(owner.email, "ci", "--expires-in", "7")
    api_key.refresh_from_db()
    assert before + dt.timedelta(days=7) <= api_key.expires_at <= dt.datetime.now(dt.UTC) + dt.timedelta(days=7)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nobody@example.com", "ci", "--no-expiry"], "No account with the email 'nobody@example.com'."),
        (["owner@example.com", "nope", "--no-expiry"], "owner@example.com has no active key named 'nope'."),
        (["owner@example.com", "ci"], "Nothing to change: give at least one setting (see --help)."),
        (["owner@example.com", "ci", "--spend-limit", "5"], "--spend-limit needs --spend-period day|week|month|total."),
        (["owner@example.com", "ci", "--spend-period", "day"], "--spend-period goes with --spend-limit USD."),
        (
            ["owner@example.com", "ci", "--models", ","],
            "--models needs at least one model name; use --all-models for every model.",
        ),
        (["owner@example.com", "ci", "--models", "gpt-9"], "No such model: gpt-9."),
        (["owner@example.com", "ci", "--allow-ips", "10.0.0.300"], "Not an IP address or CIDR range: '10.0.0.300'."),
        (
            ["owner@example.com", "ci", "--rename", "other"],
            "You already have an active key named “other”. Choose another name.",
        ),
        (["owner@example.com", "ci", "--rename", "  "], "Give the key a name, e.g. “Production backend”."),
        (["owner@example.com", "ci", "--rename", "x" * 101], "Keep the name to 100 characters or fewer."),
        (["owner@example.com", "ci", "--expires-at", "2001-01-01"], "Choose an expiry time in the future."),
        (
            ["owner@example.com", "ci", "--spend-limit", "0.0000001", "--spend-period", "day"],
            "--spend-limit: use at most 6 decimal places (one micro-dollar).",
        ),
    ],
)
def test_a_bad_argument_or_unknown_key_is_one_line(owner, make_key, args, message):
    make_key(owner, "ci")
    make_key(owner, "other")
    with pytest.raises(CommandError) as raised:
        update(*args)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    "args",
    [
        ["--expires-at", "tomorrow"],
        ["--max-concurrency", "0"],
        ["--spend-limit", "-1", "--spend-period", "day"],
        ["--spend-limit", "5", "--spend-period", "year"],
        ["--no-expiry", "--expires-in", "3"],
    ],
)
def test_argument_errors_are_refused_by_the_parser(owner, make_key, args):
    make_key(owner, "ci")
    with pytest.raises(CommandError):
        update(owner.email, "ci", *args)


def test_roll_prints_only_the_new_key_and_the_old_one_works_for_the_grace(owner, make_key):
    api_key, old_raw = make_key(owner, "ci")
    out, err = io.StringIO(), io.StringIO()

    call_command("roll_api_key", owner.email, "ci", "--grace-hours", "24", stdout=out, stderr=err)

    new_raw = out.getvalue().strip()
    assert is_well_formed(new_raw)
    assert api_key_authenticate(new_raw) == api_key
    assert api_key_authenticate(old_raw) == api_key
    rolled = ApiKey.objects.get(pk=api_key.pk)
    assert rolled.hashed_key == hash_key(new_raw)
    assert rolled.previous_hashed_key == hash_key(old_raw)
    assert "the old secret keeps working until" in err.getvalue()
    assert old_raw not in err.getvalue() and new_raw not in err.getvalue()
    ApiKey.objects.filter(pk=api_key.pk).update(previous_key_expires_at=dt.datetime.now(dt.UTC))
    assert api_key_authenticate(old_raw) is None


def test_roll_without_grace_ends_the_old_secret_and_errors_are_one_line(owner, make_key):
    _, old_raw = make_key(owner, "ci")
    out = io.StringIO()
    call_command("roll_api_key", owner.email, "ci", stdout=out, stderr=io.StringIO())
    assert api_key_authenticate(old_raw) is None
    with pytest.raises(CommandError, match=r"^owner@example.com has no active key named 'nope'\.$"):
        call_command("roll_api_key", owner.email, "nope")
    with pytest.raises(CommandError):
        call_command("roll_api_key", owner.email, "ci", "--grace-hours", "-1")
    with pytest.raises(CommandError, match=r"^The grace period must be between 0 and 30 days\.$"):
        call_command("roll_api_key", owner.email, "ci", "--grace-hours", "10000")


def test_a_bad_argument_exits_non_zero_with_one_line_and_no_traceback():
    result = subprocess.run(
        [sys.executable, "manage.py", "update_api_key", "x@example.com", "ci", "--max-concurrency", "zero"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("not a whole number: 'zero'")

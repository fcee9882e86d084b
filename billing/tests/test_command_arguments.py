"""Every operator command refuses bad arguments with a one-line message and a non-zero exit."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DataError, connection

from accounts.models import User
from apikeys.models import ApiKey
from billing.models import CreditAccount, LedgerEntry
from billing.tests.test_commands import manage

EMAIL_COMMANDS = [
    ("balance", "{email}"),
    ("grant_credits", "{email}", "1"),
    ("set_plan", "{email}", "pro"),
    ("set_limits", "{email}", "--rpm", "10"),
    ("create_api_key", "{email}", "--name", "CI"),
    ("revoke_api_key", "{email}", "CI"),
    ("roll_api_key", "{email}", "CI"),
    ("update_api_key", "{email}", "CI", "--rename", "CD"),
]


def refusal(*args: str) -> CommandError:
    with pytest.raises(CommandError) as refused:
        call_command(*args, stdout=StringIO(), stderr=StringIO())
    assert refused.value.returncode == 1
    return refused.value


def nothing_changed(owner: User) -> None:
    owner.refresh_from_db()
    assert (owner.plan, owner.requests_per_minute_override, owner.tokens_per_minute_override) == ("free", None, None)
    assert LedgerEntry.objects.filter(user=owner).count() == 1
    assert CreditAccount.objects.get(user=owner).balance_micros == 5_000_000
    assert ApiKey.objects.count() == 0


# --- The account --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", EMAIL_COMMANDS, ids=[c[0] for c in EMAIL_COMMANDS])
@pytest.mark.parametrize(
    ("email", "message"),
    [
        ("nobody@example.com", "No account with the email 'nobody@example.com'."),
        ("", "No account with the email ''."),
        ("owner@example.com\x00", "The email must not contain control characters."),
        ("owner\n@example.com", "The email must not contain control characters."),
        ("o" * 250 + "@example.com", "The email is too long: at most 254 characters."),
    ],
    ids=["unknown", "empty", "nul", "newline", "too-long"],
)
def test_every_command_refuses_a_bad_email(owner: User, command: tuple[str, ...], email: str, message: str) -> None:
    args = [arg.format(email=email) for arg in command]
    assert str(refusal(*args)) == message
    nothing_changed(owner)


# --- set_limits -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--rpm", "3000000000"), "The requests per minute limit must be at most 2,147,483,647."),
        (("--tpm", "2147483648"), "The tokens per minute limit must be at most 2,147,483,647."),
        (("--rpm", "10", "--tpm", str(10**30)), "The tokens per minute limit must be at most 2,147,483,647."),
        (("--rpm", "abc"), "Error: argument --rpm: invalid int value: 'abc'"),
        (("--tpm", "1.5"), "Error: argument --tpm: invalid int value: '1.5'"),
    ],
)
def test_set_limits_refuses_what_the_columns_cannot_hold(owner: User, args: tuple[str, ...], message: str) -> None:
    assert str(refusal("set_limits", "owner@example.com", *args)) == message
    nothing_changed(owner)


def test_set_limits_accepts_the_largest_value_the_columns_hold(owner: User) -> None:
    call_command("set_limits", "owner@example.com", "--rpm", "2147483647", "--tpm", "2147483647", stdout=StringIO())
    owner.refresh_from_db()
    assert (owner.requests_per_minute, owner.tokens_per_minute) == (2_147_483_647, 2_147_483_647)


# --- grant_credits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("NaN", "Invalid amount: not an amount: 'NaN'."),
        ("nan", "Invalid amount: not an amount: 'nan'."),
        ("sNaN", "Invalid amount: not an amount: 'sNaN'."),
        ("Infinity", "Invalid amount: not an amount: 'Infinity'."),
        ("+inf", "Invalid amount: not an amount: '+inf'."),
        ("", "Invalid amount: not an amount: ''."),
        ("1e999999999", "Invalid amount: 1e999999999 is too large."),
        ("9" * 5000, f"Invalid amount: {'9' * 5000} is too large."),
        ("1000000000.000001", "Invalid amount: at most $1,000,000,000.00 either way at a time."),
        ("-1000000001", "Invalid amount: at most $1,000,000,000.00 either way at a time."),
        ("9223372036854.775807", "Invalid amount: at most $1,000,000,000.00 either way at a time."),
        # Decimal arithmetic rounds to 28 digits: this once became exactly $1.
        (
            "1.0000000000000000000000000001",
            "Invalid amount: 1.0000000000000000000000000001 has more than 6 decimal places.",
        ),
        ("1e-999999999", "Invalid amount: 1e-999999999 has more than 6 decimal places."),
    ],
)
def test_grant_credits_refuses_amounts_it_cannot_hold_exactly(owner: User, amount: str, message: str) -> None:
    assert str(refusal("grant_credits", "owner@example.com", amount)) == message
    nothing_changed(owner)


def test_grant_credits_accepts_the_largest_amount(owner: User) -> None:
    out = StringIO()
    call_command("grant_credits", "owner@example.com", "1e9", stdout=out)
    assert out.getvalue().endswith("New balance: $1,000,000,005.000000\n")


@pytest.mark.parametrize(
    ("note", "message"),
    [
        ("paid\x00", "The note must not contain control characters."),
        ("x" * 256, "The note is too long: at most 255 characters."),
    ],
)
def test_grant_credits_refuses_a_bad_note(owner: User, note: str, message: str) -> None:
    assert str(refusal("grant_credits", "owner@example.com", "1", "--note", note)) == message
    nothing_changed(owner)


# --- create_api_key, release_stale_holds -----------------------------------------------------------


def test_create_api_key_refuses_control_characters_in_the_name(owner: User) -> None:
    message = "The key name must not contain control characters."
    assert str(refusal("create_api_key", "owner@example.com", "--name", "CI\x00")) == message
    nothing_changed(owner)


@pytest.mark.parametrize(
    ("minutes", "message"),
    [
        ("0", "The age (--older-than-minutes) must be between 1 and 5,270,400; got 0."),
        ("-5", "The age (--older-than-minutes) must be between 1 and 5,270,400; got -5."),
        (str(10**12), "The age (--older-than-minutes) must be between 1 and 5,270,400; got 1,000,000,000,000."),
        ("soon", "Error: argument --older-than-minutes: invalid int value: 'soon'"),
    ],
)
def test_release_stale_holds_refuses_an_age_that_would_free_live_holds(db: None, minutes: str, message: str) -> None:
    assert str(refusal("release_stale_holds", "--older-than-minutes", minutes)) == message


# --- Whatever the database refuses --------------------------------------------------------------------


def test_a_database_refusal_is_one_line_not_a_traceback(owner: User, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**kwargs: object) -> None:
        raise DataError('integer out of range\nCONTEXT:  unnamed portal parameter $1 = "..."')

    monkeypatch.setattr("accounts.management.commands.set_plan.account_set_plan", refuse)

    assert str(refusal("set_plan", "owner@example.com", "pro")) == (
        "The database refused the change: integer out of range"
    )


# --- From the shell --------------------------------------------------------------------------------------


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the child process needs the PostgreSQL test database")
@pytest.mark.django_db(transaction=True)
def test_from_the_shell_a_refusal_is_one_line_on_stderr_and_exit_status_1(owner: User) -> None:
    for args, message in [
        (("set_limits", "owner@example.com", "--rpm", "3000000000"),
         "The requests per minute limit must be at most 2,147,483,647."),
        (("grant_credits", "owner@example.com", "1e999999999"), "Invalid amount: 1e999999999 is too large."),
        (("grant_credits", "owner@example.com", "NaN"), "Invalid amount: not an amount: 'NaN'."),
        (("revoke_api_key", "nobody@example.com", "CI"), "No account with the email 'nobody@example.com'."),
        (("balance", "owner@example.com\x01"), "The email must not contain control characters."),
    ]:  # fmt: skip
        result = manage(*args)
        assert (result.returncode, result.stdout, result.stderr) == (1, "", f"CommandError: {message}\n"), args

    usage = manage("set_limits", "owner@example.com", "--rpm", "lots")
    assert usage.returncode == 2
    assert "Traceback" not in usage.stderr
    assert usage.stderr.splitlines()[-1] == "manage.py set_limits: error: argument --rpm: invalid int value: 'lots'"
    nothing_changed(owner)

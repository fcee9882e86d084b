from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import User
from apikeys.keys import KEY_PATTERN
from apikeys.models import ApiKey
from apikeys.services import api_key_authenticate

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, str]:
    stdout, stderr = StringIO(), StringIO()
    call_command("create_api_key", *args, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


def test_it_prints_only_the_new_raw_key_on_stdout(owner: User) -> None:
    stdout, stderr = run("owner@example.com", "--name", "CI deploys")

    raw_key = stdout.strip()
    assert stdout == raw_key + "\n"
    assert KEY_PATTERN.fullmatch(raw_key)
    api_key = ApiKey.objects.get()
    assert api_key.owner == owner
    assert api_key.name == "CI deploys"
    assert api_key_authenticate(raw_key) == api_key
    assert stderr == f"Created key 'CI deploys' ({api_key.hint}) for owner@example.com. It will not be shown again.\n"
    assert raw_key not in stderr


def test_it_finds_the_account_whatever_the_case_of_the_email(owner: User) -> None:
    run("Owner@Example.COM", "--name", "CI deploys")

    assert ApiKey.objects.get().owner == owner


def test_it_trims_the_name(owner: User) -> None:
    run("owner@example.com", "--name", "  CI deploys  ")

    assert ApiKey.objects.get().name == "CI deploys"


def test_it_refuses_an_unknown_email(owner: User) -> None:
    with pytest.raises(CommandError, match=re.escape("No account with the email 'nobody@example.com'.")):
        run("nobody@example.com", "--name", "CI deploys")

    assert ApiKey.objects.count() == 0


def test_it_refuses_a_disabled_account(owner: User) -> None:
    owner.is_active = False
    owner.save()

    with pytest.raises(CommandError, match=re.escape("The account owner@example.com is disabled.")):
        run("owner@example.com", "--name", "CI deploys")

    assert ApiKey.objects.count() == 0


@pytest.mark.parametrize(
    ("name", "message"),
    [("   ", "Give the key a name"), ("x" * 101, "Keep the name to 100 characters or fewer.")],
)
def test_it_refuses_a_bad_name(owner: User, name: str, message: str) -> None:
    with pytest.raises(CommandError, match=re.escape(message)):
        run("owner@example.com", "--name", name)

    assert ApiKey.objects.count() == 0


def test_it_requires_a_name(owner: User) -> None:
    with pytest.raises(CommandError, match="--name"):
        run("owner@example.com")

    assert ApiKey.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_script_reading_stdout_gets_only_the_key_while_the_notice_goes_to_the_console_on_stderr(
    owner: User,
) -> None:
    """KEY=$(manage.py create_api_key ...): the "new API key" notice, mailed through the default
    console backend, must not land in the middle of the key."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from dosportal.testing.gateway import test_database_url as database_url_of_this_run

    env = {**os.environ, "DATABASE_URL": database_url_of_this_run(), "EMAIL_BACKEND": "dosportal.mail.EmailBackend"}
    result = subprocess.run(
        [sys.executable, "manage.py", "create_api_key", owner.email, "--name", "Script"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert KEY_PATTERN.fullmatch(result.stdout.strip()), result.stdout
    assert "Subject: DOS AI: A new API key was created" in result.stderr
    assert result.stdout.strip() not in result.stderr  # the notice names the key by its hint only

"""`manage.py revoke_api_key EMAIL NAME`: revoke at once, by name or hint; refuse what is unclear."""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import User
from apikeys.services import api_key_authenticate
from apikeys.tests.conftest import MadeKey


def run(*args: str) -> str:
    stdout = StringIO()
    call_command("revoke_api_key", *args, stdout=stdout)
    return stdout.getvalue()


def refused(*args: str) -> str:
    with pytest.raises(CommandError) as refusal:
        run(*args)
    assert refusal.value.returncode == 1
    return str(refusal.value)


def test_it_revokes_the_named_key_and_the_next_request_with_it_fails(
    owner: User, make_key: Callable[..., MadeKey]
) -> None:
    api_key, raw_key = make_key(owner, "CI deploys")
    other, other_raw = make_key(owner, "Laptop")

    out = run("Owner@Example.com", " CI deploys ")

    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    assert api_key_authenticate(raw_key) is None
    assert api_key_authenticate(other_raw) == other
    assert out == (f"Revoked the key CI deploys ({api_key.hint}) of owner@example.com. Requests with it now get 401.\n")
    assert raw_key not in out


def test_running_it_again_changes_nothing_and_succeeds(owner: User, make_key: Callable[..., MadeKey]) -> None:
    api_key, _ = make_key(owner, "CI deploys")
    run("owner@example.com", "CI deploys")
    api_key.refresh_from_db()
    revoked_at = api_key.revoked_at

    out = run("owner@example.com", "CI deploys")

    api_key.refresh_from_db()
    assert api_key.revoked_at == revoked_at
    assert out == f"The key CI deploys ({api_key.hint}) of owner@example.com was already revoked; nothing changed.\n"


def test_a_key_can_be_named_by_its_hint_and_only_that_one_is_revoked(
    owner: User, make_key: Callable[..., MadeKey]
) -> None:
    # Active keys have unique names (apikeys.services), so a name is never ambiguous; the hint
    # is what an operator reading a log or the admin has at hand.
    first, first_raw = make_key(owner, "CI deploys")
    second, second_raw = make_key(owner, "Nightly")

    run("owner@example.com", second.hint)

    assert api_key_authenticate(first_raw) == first
    assert api_key_authenticate(second_raw) is None


def test_a_revoked_key_of_the_same_name_does_not_make_it_ambiguous(
    owner: User, make_key: Callable[..., MadeKey]
) -> None:
    make_key(owner, "CI deploys")
    run("owner@example.com", "CI deploys")
    _, new_raw = make_key(owner, "CI deploys")

    run("owner@example.com", "CI deploys")

    assert api_key_authenticate(new_raw) is None


def test_it_never_touches_another_accounts_key(owner: User, outsider: User, make_key: Callable[..., MadeKey]) -> None:
    theirs, their_raw = make_key(outsider, "CI deploys")

    assert refused("owner@example.com", "CI deploys") == "owner@example.com has no API key named 'CI deploys'."
    assert refused("owner@example.com", theirs.hint) == f"owner@example.com has no API key named '{theirs.hint}'."
    assert api_key_authenticate(their_raw) == theirs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nobody@example.com", "CI deploys"), "No account with the email 'nobody@example.com'."),
        (("owner@example.com", "CI\x00"), "The key name must not contain control characters."),
        (("owner@example.com", "x" * 101), "The key name is too long: at most 100 characters."),
        (("owner@example.com",), "Error: the following arguments are required: name"),
    ],
)
def test_it_refuses_bad_arguments(
    owner: User, make_key: Callable[..., MadeKey], args: tuple[str, ...], message: str
) -> None:
    _, raw_key = make_key(owner, "CI deploys")
    assert refused(*args) == message
    assert api_key_authenticate(raw_key) is not None

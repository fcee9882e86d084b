"""accounts owns users, plans and security; it imports neither billing nor apikeys (they import
it), and finds an account by email one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from accounts.models import User

ACCOUNTS = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_accounts_imports_neither_billing_nor_apikeys() -> None:
    sources = [
        path for path in ACCOUNTS.rglob("*.py") if not {"tests", "migrations"} & set(path.relative_to(ACCOUNTS).parts)
    ]
    assert len(sources) > 10  # the walk found the app
    crossing = {
        f"{path.relative_to(ACCOUNTS)}: {module}"
        for path in sources
        for module in imported_modules(path)
        if module.split(".")[0] in ("billing", "apikeys")
    }
    assert crossing == set()


@pytest.mark.django_db
def test_an_account_is_found_by_its_email_in_any_case() -> None:
    user = User.objects.create_user("mixed@example.com", "pw-123456789")

    assert User.objects.get_by_email("mixed@example.com") == user
    assert User.objects.get_by_email("  MiXed@Example.COM ") == user
    assert User.objects.get_by_email("other@example.com") is None
    assert User.objects.get_by_email("   ") is None

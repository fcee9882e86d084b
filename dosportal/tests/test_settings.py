"""Settings come from the environment, reject bad values loudly, and pass Django's deploy check."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from dosportal.env import envbool, envchoice, envdecimal, envfloat, envint, envlist, envstr
from dosportal.testing.gateway import test_database_url as database_url_of_this_run

BASE_DIR = Path(__file__).resolve().parents[2]


# --- The helpers -----------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["1", "true", "True", "YES", "on", " on "])
def test_envbool_reads_true(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("X", raw)
    assert envbool("X", False) is True


@pytest.mark.parametrize("raw", ["0", "false", "No", "off", ""])
def test_envbool_reads_false(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("X", raw)
    assert envbool("X", True) is False


def test_envbool_uses_the_default_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("X", raising=False)
    assert envbool("X", True) is True
    assert envbool("X", False) is False


@pytest.mark.parametrize("raw", ["maybe", "2", "y", "enabled"])
def test_envbool_rejects_anything_else(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("X", raw)
    with pytest.raises(ImproperlyConfigured, match=rf"^X must be a boolean .*got '{raw}'$"):
        envbool("X", False)


def test_envint_reads_an_integer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X", " 42 ")
    assert envint("X", 1) == 42


@pytest.mark.parametrize("raw", ["", "   "])
def test_envint_uses_the_default_when_blank(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("X", raw)
    assert envint("X", 7) == 7


@pytest.mark.parametrize("raw", ["abc", "4.5", "1e3", "10s"])
def test_envint_rejects_a_non_integer(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("X", raw)
    with pytest.raises(ImproperlyConfigured, match=rf"^X must be an integer, got '{raw}'$"):
        envint("X", 1)


def test_envint_rejects_a_value_below_the_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X", "0")
    with pytest.raises(ImproperlyConfigured, match=r"^X must be at least 1, got 0$"):
        envint("X", 5, minimum=1)


def test_envfloat_reads_a_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X", "2.5")
    assert envfloat("X", 1.0) == 2.5


def test_envfloat_rejects_a_non_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X", "fast")
    with pytest.raises(ImproperlyConfigured, match=r"^X must be a number, got 'fast'$"):
        envfloat("X", 1.0)


def test_envfloat_rejects_a_value_below_the_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X", "0")
    with pytest.raises(ImproperlyConfigured, match=r"^X must be at least 0.001, got 0.0$"):
        envfloat("X", 1.0, minimum=0.001)


def test_envdecimal_reads_an_exact_amount(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X", "5.10")
    assert envdecimal("X", "0") == Decimal("5.10")


def test_envdecimal_uses_the_default_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("X", raising=False)
    assert envdecimal("X", "5.00") == Decimal("5.00")


def test_envdecimal_rejects_a_non_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X", "five")
    with pytest.raises(ImproperlyConfigured, match=r"^X must be a decimal number, got 'five'$"):
        envdecimal("X", "0")


@pytest.mark.parametrize("raw", ["-1", "NaN", "Infinity"])
def test_envdecimal_rejects_negative_and_non_finite_amounts(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("X", raw)
    with pytest.raises(ImproperlyConfigured, match=rf"^X must be a finite, non-negative amount, got '{raw}'$"):
        envdecimal("X", "0")


def test_envlist_splits_on_commas_and_drops_blanks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X", " a.example.com, b.example.com,, ")
    assert envlist("X", ["default"]) == ["a.example.com", "b.example.com"]


def test_envlist_uses_the_default_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("X", raising=False)
    assert envlist("X", ["default"]) == ["default"]


def test_envstr_uses_the_default_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("X", raising=False)
    assert envstr("X", "fallback") == "fallback"


@pytest.mark.parametrize(("raw", "expected"), [("json", "json"), (" JSON ", "json"), ("Text", "text"), ("", "text")])
def test_envchoice_reads_one_of_the_choices_as_spelled_there(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: str
) -> None:
    monkeypatch.setenv("X", raw)
    assert envchoice("X", "text", ("text", "json")) == expected


def test_envchoice_uses_the_default_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("X", raising=False)
    assert envchoice("X", "text", ("text", "json")) == "text"


def test_envchoice_rejects_anything_else(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X", "yaml")
    with pytest.raises(ImproperlyConfigured, match=r"^X must be one of text, json; got 'yaml'$"):
        envchoice("X", "text", ("text", "json"))


def test_envchoice_can_be_case_sensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X", "JSON")
    with pytest.raises(ImproperlyConfigured):
        envchoice("X", "text", ("text", "json"), case_sensitive=True)


# --- Whole settings, in a fresh process each ------------------------------------------------


def run_django(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run manage.py (or `python -c`) in a clean environment: only PATH, HOME and `env`."""
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), **env}
    command = [sys.executable, *args] if args[0] == "-c" else [sys.executable, "manage.py", *args]
    return subprocess.run(command, cwd=BASE_DIR, env=clean, capture_output=True, text=True, timeout=120, check=False)


def print_settings(env: dict[str, str], *names: str) -> dict[str, object]:
    code = (
        "import json, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'dosportal.settings');"
        "import django; django.setup(); from django.conf import settings;"
        f"print(json.dumps({{n: getattr(settings, n, None) for n in {list(names)!r}}}, default=str))"
    )
    result = run_django(env, "-c", code)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def production_env(db: None) -> dict[str, str]:
    return {
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "ALLOWED_HOSTS": "portal.example.com",
        "DATABASE_URL": database_url_of_this_run(),
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "DOS_AI_UPSTREAM_URL": "http://127.0.0.1:9/v1",
        # A dedicated key for two-factor secrets: without one, check --deploy warns (dosportal.W001).
        "DOS_AI_MFA_ENCRYPTION_KEYS": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    }


def test_the_deploy_check_is_clean_under_production_settings(production_env: dict[str, str]) -> None:
    result = run_django(production_env, "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stdout + result.stderr
    assert re.fullmatch(r"System check identified no issues \(\d+ silenced\)\.", result.stdout.strip())
    assert result.stderr == ""


def test_production_settings_are_secure(production_env: dict[str, str]) -> None:
    values = print_settings(
        production_env,
        "DEBUG",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_SSL_REDIRECT",
        "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "SECURE_HSTS_PRELOAD",
        "ALLOWED_HOSTS",
        "DOS_AI_ALLOW_DEV_MODEL",
    )

    assert values == {
        "DEBUG": False,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "ALLOWED_HOSTS": ["portal.example.com"],
        "DOS_AI_ALLOW_DEV_MODEL": False,
    }


def test_production_uses_redis_and_hashed_static_files(production_env: dict[str, str]) -> None:
    values = print_settings(production_env, "CACHES", "STORAGES")

    assert values["CACHES"]["default"]["BACKEND"] == "dosportal.cache.FailOpenRedisCache"
    assert values["CACHES"]["default"]["LOCATION"] == "redis://127.0.0.1:6379/0"
    assert values["STORAGES"]["staticfiles"]["BACKEND"] == "whitenoise.storage.CompressedManifestStaticFilesStorage"


def test_a_tls_terminating_proxy_can_turn_the_ssl_redirect_off(production_env: dict[str, str]) -> None:
    values = print_settings(
        {**production_env, "SECURE_SSL_REDIRECT": "0", "SECURE_PROXY_SSL_HEADER": "1"},
        "SECURE_SSL_REDIRECT",
        "SECURE_PROXY_SSL_HEADER",
    )

    assert values == {"SECURE_SSL_REDIRECT": False, "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"]}


def test_production_refuses_to_start_without_a_secret_key(production_env: dict[str, str]) -> None:
    del production_env["SECRET_KEY"]

    result = run_django(production_env, "check")

    assert result.returncode == 1
    assert "ImproperlyConfigured: SECRET_KEY is required when DEBUG is off" in result.stderr


def test_production_refuses_to_start_without_an_upstream(production_env: dict[str, str]) -> None:
    del production_env["DOS_AI_UPSTREAM_URL"]

    result = run_django(production_env, "check")

    assert result.returncode == 1
    assert "ImproperlyConfigured: DOS_AI_UPSTREAM_URL is not set." in result.stderr
    assert "DOS_AI_ALLOW_DEV_MODEL=1" in result.stderr


def test_production_serves_the_development_model_only_when_told_to(production_env: dict[str, str]) -> None:
    del production_env["DOS_AI_UPSTREAM_URL"]

    values = print_settings({**production_env, "DOS_AI_ALLOW_DEV_MODEL": "1"}, "DOS_AI_UPSTREAM_URL", "DEBUG")

    assert values == {"DOS_AI_UPSTREAM_URL": "", "DEBUG": False}


def test_a_bad_value_stops_the_process_at_start_up(production_env: dict[str, str]) -> None:
    result = run_django({**production_env, "DEBUG": "maybe"}, "check")

    assert result.returncode == 1
    assert (
        "ImproperlyConfigured: DEBUG must be a boolean (1/0, true/false, yes/no, on/off), got 'maybe'" in result.stderr
    )


def test_the_embedded_defaults_pass_the_checks_with_no_environment() -> None:
    result = run_django({}, "check")

    assert result.returncode == 0, result.stdout + result.stderr
    # Without REDIS_URL the cache is process-local on purpose; ratelimit's E003 is silenced for it.
    assert re.fullmatch(r"System check identified no issues \(\d+ silenced\)\.", result.stdout.strip())


def test_the_embedded_defaults_are_local_and_in_process() -> None:
    values = print_settings({}, "DEBUG", "CACHES", "DATABASES", "DOS_AI_ALLOW_DEV_MODEL", "ALLOWED_HOSTS")

    assert values["DEBUG"] is True
    assert values["CACHES"]["default"]["BACKEND"] == "django.core.cache.backends.locmem.LocMemCache"
    assert values["DATABASES"]["default"]["ENGINE"] == "django.db.backends.sqlite3"
    assert values["DOS_AI_ALLOW_DEV_MODEL"] is True
    assert values["ALLOWED_HOSTS"] == ["localhost", "127.0.0.1", "[::1]"]


def test_the_test_run_itself_uses_postgresql_and_redis() -> None:
    assert settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    assert settings.CACHES["default"]["BACKEND"] == "dosportal.cache.FailOpenRedisCache"

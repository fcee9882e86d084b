"""Typed readers for settings taken from the environment.

Each helper fails loudly (ImproperlyConfigured) on a value it cannot parse, so a
typo in a deployment's environment stops the process at start-up instead of
silently falling back to a default.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def envstr(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false, yes/no, on/off), got {raw!r}")


def envint(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def envfloat(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def envdecimal(name: str, default: str) -> Decimal:
    raw = os.environ.get(name, default)
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name} must be a decimal number, got {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise ImproperlyConfigured(f"{name} must be a finite, non-negative amount, got {raw!r}")
    return value


def envlist(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def envchoice(name: str, default: str, choices: tuple[str, ...], *, case_sensitive: bool = False) -> str:
    """One of `choices` (matched without regard to case unless told), returned as spelled there."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip()
    for choice in choices:
        if value == choice or (not case_sensitive and value.lower() == choice.lower()):
            return choice
    raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}; got {raw!r}")


_RATE = re.compile(r"^([1-9][0-9]*)/([1-9][0-9]*)?([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """`5/15m` -> (5, 900): a count per period, as django-ratelimit spells rates."""
    match = _RATE.match(rate.strip())
    if match is None:
        raise ValueError(f"not a rate like 5/15m: {rate!r}")
    count, multiplier, unit = match.groups()
    return int(count), int(multiplier or 1) * _UNIT_SECONDS[unit]


def envrate(name: str, default: str) -> str:
    """A rate such as `10/5m` (count / [multiplier] s|m|h|d), checked at start-up."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        parse_rate(raw)
    except ValueError:
        raise ImproperlyConfigured(
            f"{name} must be a rate such as 5/15m (count/period in s, m, h or d); got {raw!r}"
        ) from None
    return raw.strip()


def envfernetkeys(name: str) -> list[str]:
    """Comma-separated Fernet keys (32 url-safe base64 bytes each), in order.

    A bad entry stops start-up; the message names its position, never the value (a key is a secret)."""
    from cryptography.fernet import Fernet

    keys = envlist(name, [])
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ImproperlyConfigured(
                f"{name}: entry {position} is not a Fernet key (32 url-safe base64-encoded bytes; make one with "
                '`python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`)'
            ) from None
    return keys

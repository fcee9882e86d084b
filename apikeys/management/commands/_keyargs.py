"""What the key commands share: the key named on the command line, and argument parsing that
ends in a one-line CommandError rather than a traceback."""

from __future__ import annotations

import argparse
import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import CommandError

from accounts.models import User
from apikeys.models import ApiKey


def active_key(owner: User, name: str) -> ApiKey:
    api_key = ApiKey.objects.active().filter(owner=owner, name=name.strip()).first()
    if api_key is None:
        raise CommandError(f"{owner.email} has no active key named {name!r}.")
    return api_key


def iso_datetime(text: str) -> dt.datetime:
    """ISO 8601; a time without a zone is UTC, a bare date is its midnight UTC."""
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def usd(text: str) -> Decimal:
    try:
        amount = Decimal(text.strip().lstrip("$"))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount in USD: {text!r}") from None
    if not amount.is_finite() or amount < 0:
        raise argparse.ArgumentTypeError(f"not an amount in USD: {text!r}")
    return amount


def _number(text: str, convert: type, minimum: float, what: str) -> Any:
    try:
        number = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
    if not minimum <= number < float("inf"):
        raise argparse.ArgumentTypeError(f"must be {minimum:g} or more: {text!r}")
    return number


def positive_int(text: str) -> int:
    return _number(text, int, 1, "a whole number")


def non_negative_float(text: str) -> float:
    return _number(text, float, 0, "a number")


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]

"""Writes to accounts that more than one caller needs (admin, commands, pages)."""

from __future__ import annotations

from django.core.exceptions import ValidationError

from accounts.models import User
from billing.plans import PLANS

# The override columns are PostgreSQL integers.
LIMIT_MAXIMUM = 2**31 - 1


def account_set_plan(*, user: User, plan: str) -> User:
    """Change the plan; the next /v1 request is limited by it (limits are read per request)."""
    if plan not in PLANS:
        raise ValidationError(f"Unknown plan {plan!r}; choose one of {', '.join(PLANS)}.")
    user.plan = plan
    user.save(update_fields=["plan"])
    return user


def account_set_limits(*, user: User, requests_per_minute: int | None, tokens_per_minute: int | None) -> User:
    """Override the plan's limits for one account; None for both returns to the plan."""
    for label, value in (("requests per minute", requests_per_minute), ("tokens per minute", tokens_per_minute)):
        if value is not None and value < 1:
            raise ValidationError(f"The {label} limit must be at least 1.")
        if value is not None and value > LIMIT_MAXIMUM:
            raise ValidationError(f"The {label} limit must be at most {LIMIT_MAXIMUM:,}.")
    user.requests_per_minute_override = requests_per_minute
    user.tokens_per_minute_override = tokens_per_minute
    user.save(update_fields=["requests_per_minute_override", "tokens_per_minute_override"])
    return user

"""Template context that billing adds to every page."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from accounts.plans import PLANS, PlanName
from billing.money import format_usd, usd_to_micros


def signup_offer(request: HttpRequest) -> dict[str, object]:
    """What sign-up offers, for the sign-up and "check your inbox" pages (allauth renders them)."""
    if request.user.is_authenticated:
        return {}
    credit = usd_to_micros(settings.DOS_AI_SIGNUP_CREDIT_USD)
    return {"signup_credit": format_usd(credit) if credit else "", "free_plan": PLANS[PlanName.FREE]}

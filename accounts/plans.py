"""The plan table: an account's rate-limit tier, one definition that everything reads (limits, pages, admin)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import models


class PlanName(models.TextChoices):
    FREE = "free", "Free"
    PLUS = "plus", "Plus"
    PRO = "pro", "Pro"


@dataclass(frozen=True)
class Plan:
    name: str
    label: str
    requests_per_minute: int
    tokens_per_minute: int


PLANS: dict[str, Plan] = {
    PlanName.FREE: Plan(PlanName.FREE, "Free", requests_per_minute=60, tokens_per_minute=100_000),
    PlanName.PLUS: Plan(PlanName.PLUS, "Plus", requests_per_minute=120, tokens_per_minute=500_000),
    PlanName.PRO: Plan(PlanName.PRO, "Pro", requests_per_minute=300, tokens_per_minute=2_000_000),
}

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.utils import timezone

from billing.plans import PLANS, Plan, PlanName


def effective_limits(plan: str, rpm_override: int | None, tpm_override: int | None) -> tuple[int, int]:
    """(requests, tokens) per minute: the account's own override where set, else its plan's."""
    plan_info = PLANS[plan]
    return rpm_override or plan_info.requests_per_minute, tpm_override or plan_info.tokens_per_minute


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create_user(self, email: str, password: str | None, **extra_fields: object) -> User:
        if not email:
            raise ValueError("An email address is required")
        user = self.model(email=self.normalize_email(email).lower(), **extra_fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra_fields: object) -> User:
        extra_fields.setdefault("is_staff", False)
        extra_fields.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra_fields)

    def create_superuser(self, email: str, password: str | None = None, **extra_fields: object) -> User:
        extra_fields["is_staff"] = True
        extra_fields["is_superuser"] = True
        return self._create_user(email, password, **extra_fields)


class User(AbstractBaseUser, PermissionsMixin):
    """An account: email is the login name; the plan decides the default limits."""

    email = models.EmailField("email address", unique=True)
    is_staff = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)
    plan = models.CharField(max_length=16, choices=PlanName.choices, default=PlanName.FREE)
    # Enterprise override of the plan's limits; both null means "use the plan".
    requests_per_minute_override = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute_override = models.PositiveIntegerField(null=True, blank=True)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        ordering = ["email"]

    def __str__(self) -> str:
        return self.email

    def clean(self) -> None:
        super().clean()
        self.email = self.__class__.objects.normalize_email(self.email).lower()

    @property
    def plan_info(self) -> Plan:
        return PLANS[self.plan]

    @property
    def requests_per_minute(self) -> int:
        return effective_limits(self.plan, self.requests_per_minute_override, self.tokens_per_minute_override)[0]

    @property
    def tokens_per_minute(self) -> int:
        return effective_limits(self.plan, self.requests_per_minute_override, self.tokens_per_minute_override)[1]

    @property
    def has_limit_override(self) -> bool:
        return self.requests_per_minute_override is not None or self.tokens_per_minute_override is not None

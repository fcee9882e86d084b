from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.utils import timezone

from accounts.plans import PLANS, Plan, PlanName


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

    def get_by_email(self, email: str) -> User | None:
        """The account with this email, typed in any case (emails are stored lower-cased), or None."""
        email = email.strip()
        return self.filter(email__iexact=email).first() if email else None

    def create_user(self, email: str, password: str | None = None, **extra_fields: object) -> User:
        """For operators and scripts: the account is verified and credited at once (sign-up is allauth's)."""
        from accounts.services import account_open_verified

        extra_fields.setdefault("is_staff", False)
        extra_fields.setdefault("is_superuser", False)
        user = self._create_user(email, password, **extra_fields)
        account_open_verified(user=user)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra_fields: object) -> User:
        from accounts.services import account_open_verified

        extra_fields["is_staff"] = True
        extra_fields["is_superuser"] = True
        user = self._create_user(email, password, **extra_fields)
        account_open_verified(user=user)
        return user


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


class SecurityEventQuerySet(models.QuerySet["SecurityEvent"]):
    def update(self, **kwargs: object) -> int:
        raise TypeError("The security log is append-only")


class SecurityEvent(models.Model):
    """One line of an account's security log. Append-only: rows are written once, never changed.

    `actor` is who did it: the account's owner, an administrator (another user, or None for
    an operator's command), or None for a failed sign-in by an unknown person. Never a raw key:
    `detail` names keys by their name and hint only.
    """

    class Kind(models.TextChoices):
        SIGNED_IN = "signed_in", "Signed in"
        SIGN_IN_FAILED = "sign_in_failed", "Failed sign-in"
        SECOND_FACTOR_FAILED = "second_factor_failed", "Wrong two-factor code"
        SECOND_FACTOR_THROTTLED = "second_factor_throttled", "Two-factor codes paused (too many)"
        SIGNED_OUT_OTHER_SESSIONS = "sessions_ended", "Signed out other sessions"
        EMAIL_VERIFIED = "email_verified", "Email verified"
        EMAIL_CHANGED = "email_changed", "Email changed"
        PASSWORD_CHANGED = "password_changed", "Password changed"
        PASSWORD_RESET = "password_reset", "Password reset by email"
        TWO_FACTOR_ENABLED = "2fa_enabled", "Two-factor turned on"
        TWO_FACTOR_DISABLED = "2fa_disabled", "Two-factor turned off"
        RECOVERY_CODES_GENERATED = "recovery_codes", "New recovery codes"
        PASSKEY_ADDED = "passkey_added", "Security key added"
        PASSKEY_REMOVED = "passkey_removed", "Security key removed"
        KEY_CREATED = "key_created", "API key created"
        KEY_ROLLED = "key_rolled", "API key rolled"
        KEY_REVOKED = "key_revoked", "API key revoked"
        KEY_UPDATED = "key_updated", "API key settings changed"
        KEY_LEAKED = "key_leaked", "API key found published and revoked"
        KEY_SEEN_IN_PROMPT = "key_seen_in_prompt", "API key seen in a prompt"
        USAGE_ANOMALY = "usage_anomaly", "Unusual spend on an API key"
        KEY_SUSPENDED = "key_suspended", "API key suspended for unusual spend"
        KEY_RESUMED = "key_resumed", "API key resumed"
        CREDIT_GRANTED = "credit_granted", "Credit granted"
        LIMITS_CHANGED = "limits_changed", "Limits changed"
        PLAN_CHANGED = "plan_changed", "Plan changed"

    user = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="security_events")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    actor = models.ForeignKey(
        "accounts.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    by_administrator = models.BooleanField(default=False)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    detail = models.CharField(max_length=300, blank=True)

    objects = SecurityEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "-created_at"], name="securityevent_user_time_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} — {self.user} at {self.created_at:%Y-%m-%d %H:%M:%S}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None:
            raise TypeError("The security log is append-only")
        super().save(*args, **kwargs)

    @property
    def actor_label(self) -> str:
        automatic = (
            self.Kind.KEY_LEAKED,
            self.Kind.KEY_SEEN_IN_PROMPT,
            self.Kind.USAGE_ANOMALY,
            self.Kind.KEY_SUSPENDED,
        )
        if self.kind in automatic:
            return "Automatic"  # a scanner's report (apikeys.leaks), no person behind it
        if self.by_administrator:
            return "An administrator"
        if self.kind in ANONYMOUS_KINDS:
            return "Someone"
        return "You"


# Events anyone who knows an address (and, for codes, its password) can cause: shown as "Someone".
ANONYMOUS_KINDS = (
    SecurityEvent.Kind.SIGN_IN_FAILED,
    SecurityEvent.Kind.SECOND_FACTOR_FAILED,
    SecurityEvent.Kind.SECOND_FACTOR_THROTTLED,
)

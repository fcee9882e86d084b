"""The two-factor code field, at sign-in and when confirming it's you: a phone's numeric keypad
(authenticator codes and allauth's recovery codes are all digits), the browser's one-time-code
autofill, the focus on the field, and a reused recovery code named as such rather than
"Incorrect code." (it was right once; the person needs to know to take another)."""

from __future__ import annotations

from typing import Any

from allauth.core.internal.cryptokit import compare_user_code
from allauth.mfa.models import Authenticator
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from django import forms

from accounts.models import User

REUSED_RECOVERY_CODE = (
    "This recovery code has already been used: each one works once. "
    "Use another one, or a code from your authenticator app."
)


def recovery_code_was_used(user: User, code: str) -> bool:
    """Whether `code` is one of the user's recovery codes that has been used already."""
    authenticator = Authenticator.objects.filter(user=user, type=Authenticator.Type.RECOVERY_CODES).first()
    if authenticator is None or authenticator.data.get("migrated_codes") is not None:
        return False  # migrated codes are deleted once used: nothing to recognise
    used_mask = int(authenticator.data.get("used_mask", 0))
    codes = RecoveryCodes(authenticator).generate_codes()
    return any(
        used_mask & (1 << index) and compare_user_code(actual=code, expected=expected)
        for index, expected in enumerate(codes)
    )


class CodeFieldMixin:
    """Before the throttle's mixin in a form's bases: it sees the code's final verdict."""

    user: User
    fields: dict[str, forms.Field]
    cleaned_data: dict[str, Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["code"].label = "Code"
        self.fields["code"].widget.attrs.update(
            {
                "inputmode": "numeric",
                "autocomplete": "one-time-code",
                "autofocus": True,
                "placeholder": "123456",
                "spellcheck": "false",
            }
        )

    def clean_code(self) -> str:
        try:
            return super().clean_code()  # type: ignore[misc] - the throttle's, then allauth's
        except forms.ValidationError:
            if recovery_code_was_used(self.user, self.cleaned_data.get("code", "")):
                raise forms.ValidationError(REUSED_RECOVERY_CODE, code="used_recovery_code") from None
            raise

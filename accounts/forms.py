from __future__ import annotations

from django.contrib.auth.forms import PasswordChangeForm, SetPasswordForm

# A plain summary of AUTH_PASSWORD_VALIDATORS for the forms that set a password; the
# validators' own messages explain any refusal.
VALIDATORS_SUMMARY = "At least 8 characters. Not a common password, not only digits, not close to your email."


class ResetSetPasswordForm(SetPasswordForm):
    """The reset link's form, with the same short help as sign-up."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.fields["new_password1"].help_text = VALIDATORS_SUMMARY
        self.fields["new_password2"].help_text = ""


class AccountPasswordChangeForm(ResetSetPasswordForm, PasswordChangeForm):
    """The settings page's form: the same help, and no autofocus (it is not the page's first field)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.fields["old_password"].widget.attrs.pop("autofocus", None)

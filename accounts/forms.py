from __future__ import annotations

from allauth.account.forms import SignupForm
from django.contrib.auth.forms import PasswordChangeForm, SetPasswordForm
from django.contrib.auth.hashers import make_password
from django.http import HttpRequest

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


class PortalSignupForm(SignupForm):
    """allauth's sign-up form (ACCOUNT_FORMS["signup"]), as costly for a taken address as for a fresh one.

    With ACCOUNT_PREVENT_ENUMERATION allauth answers a taken address with the same page and mails
    its owner instead, but skips the one slow step of a new account, hashing the password: that
    made the answer 20 times faster (254 ms against 14 ms) and told the two apart. The password is
    hashed here too, with the same hasher, and thrown away."""

    def try_save(self, request: HttpRequest) -> tuple[object, object]:
        if self.account_already_exists:
            make_password(self.cleaned_data.get("password1"))
        return super().try_save(request)

from __future__ import annotations

from django import forms
from django.contrib.auth import password_validation
from django.contrib.auth.forms import AuthenticationForm, PasswordChangeForm, SetPasswordForm

from accounts.models import User

# A plain summary of AUTH_PASSWORD_VALIDATORS for the forms that set a password; the
# validators' own messages explain any refusal.
VALIDATORS_SUMMARY = "At least 8 characters. Not a common password, not only digits, not close to your email."


class SignupForm(forms.ModelForm):
    password = forms.CharField(
        label="Password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=VALIDATORS_SUMMARY,
    )

    class Meta:
        model = User
        fields = ["email"]
        labels = {"email": "Email"}
        widgets = {
            "email": forms.EmailInput(
                attrs={"autocomplete": "email", "autofocus": True, "placeholder": "you@example.com"}
            )
        }

    def clean_email(self) -> str:
        email = User.objects.normalize_email(self.cleaned_data["email"]).lower()
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this email already exists. Sign in instead.")
        return email

    def _post_clean(self) -> None:
        super()._post_clean()
        password = self.cleaned_data.get("password")
        if password:
            try:
                password_validation.validate_password(password, self.instance)
            except forms.ValidationError as error:
                self.add_error("password", error)

    def save(self, commit: bool = True) -> User:
        user = super().save(commit=False)
        user.set_password(self.cleaned_data["password"])
        if commit:
            user.save()
        return user


class EmailAuthenticationForm(AuthenticationForm):
    username = forms.EmailField(
        label="Email",
        widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True, "placeholder": "you@example.com"}),
    )

    error_messages = {
        "invalid_login": "That email and password do not match an account.",
        "inactive": "This account is disabled.",
    }

    def clean_username(self) -> str:
        return self.cleaned_data["username"].strip().lower()


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

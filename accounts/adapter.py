"""How allauth fits the portal: our client-IP rule, lower-case emails, the pages' look, and
two-factor secrets encrypted at rest."""

from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter
from allauth.mfa.adapter import DefaultMFAAdapter
from django.forms import BaseForm
from django.http import HttpRequest

from accounts import mfa_encryption
from accounts.models import User
from dosportal.clientip import client_ip


class PortalAccountAdapter(DefaultAccountAdapter):
    def get_client_ip(self, request: HttpRequest) -> str:
        # allauth's own rate limits and the session list use the same rule as everything else.
        return client_ip(request) or super().get_client_ip(request)

    def save_user(self, request: HttpRequest, user: User, form: BaseForm, commit: bool = True) -> User:
        user = super().save_user(request, user, form, commit=False)
        user.email = User.objects.normalize_email(user.email).lower()
        if commit:
            user.save()
        return user


class PortalMFAAdapter(DefaultMFAAdapter):
    def get_totp_issuer(self) -> str:
        return "DOS AI"

    # allauth passes the TOTP secret and the recovery codes' seed through these before
    # storing and after loading them: they are kept encrypted at rest (accounts/mfa_encryption.py).
    def encrypt(self, text: str) -> str:
        return mfa_encryption.encrypt(text)

    def decrypt(self, encrypted_text: str) -> str:
        return mfa_encryption.decrypt(encrypted_text)

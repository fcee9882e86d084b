"""System checks of the accounts app (`manage.py check --deploy`)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register

MFA_KEY_MISSING = "dosportal.W001"


@register(Tags.security, deploy=True)
def mfa_encryption_key_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Two-factor secrets are encrypted with a key derived from SECRET_KEY unless a dedicated one
    is set: then whoever learns SECRET_KEY (a leaked .env, a debug page) can also read them."""
    if settings.DOS_AI_MFA_ENCRYPTION_KEYS:
        return []
    return [
        Warning(
            "Two-factor secrets are encrypted with a key derived from SECRET_KEY: no dedicated key is set.",
            hint=(
                'Set DOS_AI_MFA_ENCRYPTION_KEYS to a Fernet key (python -c "from cryptography.fernet import '
                'Fernet; print(Fernet.generate_key().decode())"), then run manage.py reencrypt_mfa_secrets.'
            ),
            id=MFA_KEY_MISSING,
        )
    ]

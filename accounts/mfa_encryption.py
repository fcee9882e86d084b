"""Two-factor secrets encrypted at rest: the TOTP secret and the recovery codes' seed.

allauth stores them in `mfa_authenticator.data` and passes every one through its MFA adapter's
`encrypt`/`decrypt` (`accounts.adapter.PortalMFAAdapter` calls this module), so a database dump,
a replica or the admin never holds them in clear.

- Algorithm: Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`), through MultiFernet so
  that several keys can be read at once: a value is written with the first key and read with any.
- Keys: `DOS_AI_MFA_ENCRYPTION_KEYS`, comma-separated Fernet keys, newest first. Without it a key
  is derived from `SECRET_KEY` (HKDF-SHA256) so the server always starts; `manage.py check
  --deploy` warns about that in production (a leaked SECRET_KEY would then also open the secrets).
  Keys derived from `SECRET_KEY` and `SECRET_KEY_FALLBACKS` are always accepted for reading, so
  setting a dedicated key (or rotating SECRET_KEY the Django way) never locks anyone out.
- Rotation: put the new key first and keep the old ones after it; run `manage.py
  reencrypt_mfa_secrets` (rewrites every secret with the first key); then drop the old keys.
- A ciphertext starts with `PREFIX`; a value without it was stored before encryption existed
  and is read as it is (migration 0005 encrypts those, and the reverse migration decrypts).
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

PREFIX = "dosenc1:"
# Changing this would make every secret encrypted under a derived key unreadable.
_HKDF_INFO = b"dosportal mfa secrets at rest v1"

# The fields of an Authenticator's `data` that allauth passes through encrypt()/decrypt().
SECRET_FIELDS = ("secret", "seed")
SECRET_LIST_FIELDS = ("migrated_codes",)


class MFASecretUnreadable(RuntimeError):
    """No configured key opens a stored secret (a key was dropped before re-encrypting)."""


def derived_key(secret_key: str) -> bytes:
    """A Fernet key derived from SECRET_KEY, for deployments without a dedicated key."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO)
    return base64.urlsafe_b64encode(hkdf.derive(secret_key.encode()))


@functools.lru_cache(maxsize=8)
def _cipher(dedicated_keys: tuple[str, ...], secret_keys: tuple[str, ...]) -> MultiFernet:
    keys = [Fernet(key) for key in dedicated_keys] + [Fernet(derived_key(secret)) for secret in secret_keys]
    return MultiFernet(keys)


def cipher() -> MultiFernet:
    """The keys of the current settings: the first encrypts, all decrypt."""
    dedicated = tuple(settings.DOS_AI_MFA_ENCRYPTION_KEYS)
    secret_keys = (settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", ()))
    return _cipher(dedicated, secret_keys)


def is_encrypted(value: str) -> bool:
    return value.startswith(PREFIX)


def encrypt(text: str) -> str:
    return PREFIX + cipher().encrypt(text.encode()).decode("ascii")


def decrypt(value: str) -> str:
    if not is_encrypted(value):
        return value  # stored before encryption existed; migration 0005 encrypts these
    try:
        return cipher().decrypt(value.removeprefix(PREFIX).encode("ascii")).decode()
    except InvalidToken:
        raise MFASecretUnreadable(
            "A two-factor secret cannot be decrypted with DOS_AI_MFA_ENCRYPTION_KEYS or SECRET_KEY: "
            "was a key removed before `manage.py reencrypt_mfa_secrets` ran?"
        ) from None


def reencrypt(value: str) -> str:
    """The value under the first key, whatever key (or none) it was stored with."""
    return encrypt(decrypt(value))


def encrypt_if_clear(value: str) -> str:
    return value if is_encrypted(value) else encrypt(value)


def secrets_mapped(data: dict[str, Any], transform: Callable[[str], str]) -> dict[str, Any]:
    """A copy of an Authenticator's `data` with every secret in it passed through `transform`."""
    changed = dict(data)
    for field in SECRET_FIELDS:
        if isinstance(changed.get(field), str):
            changed[field] = transform(changed[field])
    for field in SECRET_LIST_FIELDS:
        if isinstance(changed.get(field), list):
            changed[field] = [transform(item) for item in changed[field]]
    return changed

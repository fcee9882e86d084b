"""The key format: `dos_sk_` + 26 random base62 characters + a 6-character checksum.

The checksum is CRC32 of everything before it (prefix included), written in
base62 and left-padded with "0" to 6 characters — GitHub's token scheme. A typo
or an invented key fails the checksum, so the gateway refuses it without a
database query, and a secret scanner matching `KEY_PATTERN` and verifying the
checksum finds leaked keys with very few false positives.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import zlib

PREFIX = "dos_sk_"
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_LENGTH = 26  # 26 * log2(62) ≈ 154.8 bits
CHECKSUM_LENGTH = 6
KEY_PATTERN = re.compile(r"^dos_sk_[A-Za-z0-9]{32}$")
# A key inside other text (a log line, a paste): not part of a longer run of key characters.
KEY_IN_TEXT = re.compile(r"(?<![A-Za-z0-9_])dos_sk_[A-Za-z0-9]{32}(?![A-Za-z0-9])")


def _base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, remainder = divmod(number, 62)
        digits.append(ALPHABET[remainder])
    return "".join(reversed(digits)).rjust(width, "0")


def checksum(payload: str) -> str:
    return _base62(zlib.crc32(payload.encode("ascii")), CHECKSUM_LENGTH)


def generate_key() -> str:
    payload = PREFIX + "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    return payload + checksum(payload)


def is_well_formed(raw_key: str) -> bool:
    """Format and checksum only: no database involved."""
    if not KEY_PATTERN.fullmatch(raw_key):
        return False
    payload, check = raw_key[:-CHECKSUM_LENGTH], raw_key[-CHECKSUM_LENGTH:]
    return secrets.compare_digest(checksum(payload), check)


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode("ascii")).hexdigest()


def key_hint(raw_key: str) -> str:
    body = raw_key[len(PREFIX) :]
    return f"{PREFIX}{body[:4]}…{body[-4:]}"

"""GitHub's secret-scanning partner program: the public keys its reports are signed with.

GitHub signs each report's raw body with ECDSA (P-256, SHA-256), sends the DER signature in
base64 as `Github-Public-Key-Signature` and names the key in `Github-Public-Key-Identifier`.
Its public keys are published as JSON at https://api.github.com/meta/public_keys/secret_scanning:

    {"public_keys": [{"key_identifier": "<hex>", "key": "-----BEGIN PUBLIC KEY-----…", "is_current": true}]}

We keep that file on disk (DOS_AI_GITHUB_SECRET_SCANNING_KEYS) instead of fetching it per
report: the portal may run where GitHub's API is unreachable, a report must not wait on it,
and `manage.py refresh_github_scanning_keys` (cron, daily) replaces it atomically. Every key
listed is accepted, current or not, since GitHub signs with an older key during a rotation.
The file is read on each report (it is small, and a refresh then needs no restart).
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

MAX_KEYS_FILE_BYTES = 1024 * 1024


class KeysFileError(Exception):
    """The public-keys document is missing or not in GitHub's format."""


class SignatureError(Exception):
    """A report whose signature does not verify (the message says why, for the 401)."""


def parse_keys(document: bytes) -> dict[str, ec.EllipticCurvePublicKey]:
    """Key identifier → P-256 public key, from a document in GitHub's format; KeysFileError if
    it is not one (so a bad download never replaces a good file)."""
    try:
        listed = json.loads(document)["public_keys"]
        if not isinstance(listed, list):
            raise TypeError("public_keys is not a list")
        keys: dict[str, ec.EllipticCurvePublicKey] = {}
        for entry in listed:
            public_key = load_pem_public_key(str(entry["key"]).encode())
            if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
                raise KeysFileError(f"key {entry['key_identifier']!r} is not an ECDSA P-256 key")
            keys[str(entry["key_identifier"])] = public_key
    except KeysFileError:
        raise
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as error:
        raise KeysFileError(f"not GitHub's public-keys format: {error!r}") from None
    if not keys:
        raise KeysFileError("the document lists no public keys")
    return keys


def load_keys(path: str) -> dict[str, ec.EllipticCurvePublicKey]:
    try:
        with Path(path).open("rb") as file:
            document = file.read(MAX_KEYS_FILE_BYTES + 1)
    except OSError as error:
        raise KeysFileError(f"cannot read {path}: {error.strerror}") from None
    if len(document) > MAX_KEYS_FILE_BYTES:
        raise KeysFileError(f"{path} is larger than {MAX_KEYS_FILE_BYTES} bytes")
    return parse_keys(document)


def verify_report(*, body: bytes, key_identifier: str, signature: str, keys_path: str) -> None:
    """Return when `signature` is a valid signature of `body` by the named key; raise
    SignatureError (the request's fault) or KeysFileError (ours) otherwise."""
    if not key_identifier or not signature:
        raise SignatureError("Github-Public-Key-Identifier and Github-Public-Key-Signature are required")
    public_key = load_keys(keys_path).get(key_identifier)
    if public_key is None:
        raise SignatureError("unknown public key identifier")
    try:
        der = base64.b64decode(signature, validate=True)
        public_key.verify(der, body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature):
        raise SignatureError("the signature does not verify") from None

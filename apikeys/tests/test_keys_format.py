from __future__ import annotations

import hashlib
import zlib

import pytest

from accounts.models import User
from apikeys.keys import ALPHABET, CHECKSUM_LENGTH, KEY_PATTERN, PREFIX, checksum, generate_key, is_well_formed
from apikeys.services import api_key_authenticate, api_key_create

KNOWN_PAYLOAD = "dos_sk_" + "A" * 26


def test_a_generated_key_matches_the_documented_pattern() -> None:
    raw_key = generate_key()

    assert KEY_PATTERN.fullmatch(raw_key)
    assert raw_key.startswith("dos_sk_")
    assert len(raw_key) == len("dos_sk_") + 32


def test_the_last_six_characters_are_the_base62_crc32_of_everything_before() -> None:
    raw_key = generate_key()

    payload, check = raw_key[:-6], raw_key[-6:]
    number = 0
    for character in check:
        number = number * 62 + ALPHABET.index(character)
    assert number == zlib.crc32(payload.encode())
    assert checksum(payload) == check
    assert is_well_formed(raw_key)


def test_the_checksum_is_left_padded_to_six_characters() -> None:
    assert len(checksum(KNOWN_PAYLOAD)) == CHECKSUM_LENGTH
    assert checksum("") == "000000"  # CRC32 of nothing is 0


def test_changing_any_one_character_fails_the_checksum() -> None:
    raw_key = generate_key()

    for position in range(len(PREFIX), len(raw_key)):
        for replacement in "0aZ":
            if raw_key[position] == replacement:
                continue
            mistyped = raw_key[:position] + replacement + raw_key[position + 1 :]
            assert KEY_PATTERN.fullmatch(mistyped)
            assert not is_well_formed(mistyped), (position, replacement)


@pytest.mark.parametrize(
    "candidate",
    [
        "",
        "dos_sk_",
        "sk-" + "a" * 48,
        "dos_pk_" + "A" * 32,
        "dos_sk_" + "A" * 31,
        "dos_sk_" + "A" * 33,
        "dos_sk_" + "A" * 31 + "-",
        "dos_sk_" + "A" * 31 + "é",
        " dos_sk_" + "A" * 32,
    ],
)
def test_malformed_keys_are_refused_without_a_database(candidate: str) -> None:
    assert not is_well_formed(candidate)


def test_ten_thousand_generated_keys_are_distinct_and_well_formed() -> None:
    keys = {generate_key() for _ in range(10_000)}

    assert len(keys) == 10_000
    assert all(is_well_formed(raw_key) for raw_key in keys)


def test_the_stored_hash_is_the_sha256_of_the_whole_raw_key(owner: User) -> None:
    api_key, raw_key = api_key_create(owner=owner, name="Production backend")

    api_key.refresh_from_db()
    assert api_key.hashed_key == hashlib.sha256(raw_key.encode()).hexdigest()
    assert api_key.hint == f"dos_sk_{raw_key[7:11]}…{raw_key[-4:]}"
    assert api_key_authenticate(raw_key) == api_key


def test_a_well_formed_key_that_was_never_issued_does_not_authenticate(owner: User) -> None:
    invented = generate_key()

    assert is_well_formed(invented)
    assert api_key_authenticate(invented) is None

"""Two-factor secrets are encrypted at rest (accounts/mfa_encryption.py): not in the database in
clear, not in the admin, encrypted by the migration when they were stored before, readable after a
key rotation, and `check --deploy` warns when no dedicated key is set."""

from __future__ import annotations

import io
import json
import time

import pytest
from allauth.mfa.models import Authenticator
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, hotp_value
from cryptography.fernet import Fernet
from django.core.checks import Tags, run_checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from accounts import mfa_encryption
from accounts.models import User
from dosportal.env import envfernetkeys, envrate

pytestmark = pytest.mark.django_db

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
SEED = "5e3d" * 20


def code_for(secret: str) -> str:
    return format_hotp_value(hotp_value(secret, int(time.time() // 30)))


def stored_data(user: User) -> dict[str, str]:
    """The `data` column as the database holds it (what a dump or a replica sees), by type."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT type, data::text FROM mfa_authenticator WHERE user_id = %s", [user.pk])
        return dict(cursor.fetchall())


def signs_in_with(user: User, password: str, code: str) -> bool:
    client = Client()
    assert (
        client.post("/login/", {"login": user.email, "password": password})["Location"] == "/accounts/2fa/authenticate/"
    )
    response = client.post("/accounts/2fa/authenticate/", {"code": code})
    return response.status_code == 302 and client.session.get("_auth_user_id") == str(user.pk)


def test_turning_on_two_factor_stores_no_secret_in_clear_and_sign_in_still_works(
    client_for, owner: User, password: str
) -> None:
    client = client_for(owner)
    session = client.session
    session["account_authentication_methods"][0]["reauthenticated"] = True
    session.save()
    client.get("/accounts/2fa/totp/activate/")
    secret = client.session["mfa.totp.secret"]

    activated = client.post("/accounts/2fa/totp/activate/", {"code": code_for(secret)})

    assert activated.status_code == 302
    recovery = Authenticator.objects.get(user=owner, type="recovery_codes")
    codes = RecoveryCodes(recovery).get_unused_codes()
    seed = mfa_encryption.decrypt(recovery.data["seed"])
    stored = stored_data(owner)
    assert set(stored) == {"totp", "recovery_codes"}
    dump = " ".join(stored.values())
    for clear in [secret, seed, *codes]:
        assert clear not in dump
    assert json.loads(stored["totp"])["secret"].startswith("dosenc1:")
    assert json.loads(stored["recovery_codes"])["seed"].startswith("dosenc1:")
    assert signs_in_with(owner, password, code_for(secret))
    assert signs_in_with(owner, password, codes[0])


def test_the_migration_encrypts_secrets_stored_in_clear_and_its_reverse_decrypts(
    owner: User, outsider: User, password: str
) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([("accounts", "0004_security_event_second_factor_throttled")])
    # Rows as they were before encryption: written without the adapter.
    Authenticator.objects.create(user=owner, type="totp", data={"secret": SECRET})
    Authenticator.objects.create(user=owner, type="recovery_codes", data={"seed": SEED, "used_mask": 0})
    Authenticator.objects.create(
        user=outsider, type="recovery_codes", data={"migrated_codes": ["12345678", "87654321"], "used_mask": 0}
    )

    executor.loader.build_graph()
    executor.migrate([("accounts", "0005_encrypt_mfa_secrets")])

    dump = " ".join([*stored_data(owner).values(), *stored_data(outsider).values()])
    for clear in (SECRET, SEED, "12345678", "87654321"):
        assert clear not in dump
    assert RecoveryCodes(Authenticator.objects.get(user=outsider)).get_unused_codes() == ["12345678", "87654321"]
    assert signs_in_with(owner, password, code_for(SECRET))

    executor.loader.build_graph()
    executor.migrate([("accounts", "0004_security_event_second_factor_throttled")])
    assert Authenticator.objects.get(user=owner, type="totp").data == {"secret": SECRET}
    assert Authenticator.objects.get(user=owner, type="recovery_codes").data == {"seed": SEED, "used_mask": 0}
    executor.loader.build_graph()
    executor.migrate([("accounts", "0005_encrypt_mfa_secrets")])


def test_the_admin_shows_an_authenticator_without_its_secret(admin_client, owner: User) -> None:
    totp = TOTP.activate(owner, SECRET).instance
    stored_secret = Authenticator.objects.get(pk=totp.pk).data["secret"]

    listing = admin_client.get("/admin/mfa/authenticator/")
    page = admin_client.get(f"/admin/mfa/authenticator/{totp.pk}/change/")
    edit = admin_client.post(f"/admin/mfa/authenticator/{totp.pk}/change/", {"data": '{"secret": "AAAA"}'})

    assert listing.status_code == 200
    assert page.status_code == 200
    assert b"owner@example.com" in page.content
    for shown in (SECRET, stored_secret, "dosenc1:", 'name="data"'):
        assert shown.encode() not in page.content
    assert edit.status_code == 403
    assert Authenticator.objects.get(pk=totp.pk).data["secret"] == stored_secret


def test_a_rotated_key_still_reads_old_secrets_and_the_command_rewrites_them(
    owner: User, password: str, settings
) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.DOS_AI_MFA_ENCRYPTION_KEYS = [old]
    TOTP.activate(owner, SECRET)
    RecoveryCodes.activate(owner)

    settings.DOS_AI_MFA_ENCRYPTION_KEYS = [new, old]  # the documented rotation: the new key first
    assert signs_in_with(owner, password, code_for(SECRET))
    call_command("reencrypt_mfa_secrets", stdout=(output := io.StringIO()))
    settings.DOS_AI_MFA_ENCRYPTION_KEYS = [new]  # the old key removed

    assert output.getvalue() == "Re-encrypted the secrets of 2 authenticators.\n"
    assert mfa_encryption.decrypt(Authenticator.objects.get(user=owner, type="totp").data["secret"]) == SECRET
    settings.DOS_AI_MFA_ENCRYPTION_KEYS = [old]
    with pytest.raises(mfa_encryption.MFASecretUnreadable):
        mfa_encryption.decrypt(Authenticator.objects.get(user=owner, type="totp").data["secret"])


def test_without_a_dedicated_key_one_derived_from_secret_key_is_used_and_stays_readable(settings) -> None:
    settings.DOS_AI_MFA_ENCRYPTION_KEYS = []
    stored = mfa_encryption.encrypt(SECRET)

    assert Fernet(mfa_encryption.derived_key(settings.SECRET_KEY)).decrypt(stored.removeprefix("dosenc1:")) == (
        SECRET.encode()
    )
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-new-secret-key-for-this-test-only-0123456789"
    assert mfa_encryption.decrypt(stored) == SECRET
    assert mfa_encryption.decrypt(SECRET) == SECRET  # a value from before encryption is read as it is
    settings.DOS_AI_MFA_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]  # a dedicated key set later
    assert mfa_encryption.decrypt(stored) == SECRET
    assert mfa_encryption.decrypt(mfa_encryption.encrypt(SEED)) == SEED


def test_the_deploy_check_warns_only_without_a_dedicated_key(settings) -> None:
    def ours(include_deployment_checks: bool) -> list[str]:
        messages = run_checks(include_deployment_checks=include_deployment_checks, tags=[Tags.security])
        return [message.id for message in messages if message.id.startswith("dosportal.")]

    settings.DOS_AI_MFA_ENCRYPTION_KEYS = []
    assert ours(include_deployment_checks=True) == ["dosportal.W001"]
    assert ours(include_deployment_checks=False) == []
    settings.DOS_AI_MFA_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    assert ours(include_deployment_checks=True) == []


def test_a_bad_key_or_rate_stops_start_up_without_printing_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    good = Fernet.generate_key().decode()
    monkeypatch.setenv("DOS_AI_MFA_ENCRYPTION_KEYS", f"{good}, not-a-real-key-9f8e7d")
    with pytest.raises(
        ImproperlyConfigured, match=r"^DOS_AI_MFA_ENCRYPTION_KEYS: entry 2 is not a Fernet key"
    ) as error:
        envfernetkeys("DOS_AI_MFA_ENCRYPTION_KEYS")
    assert "not-a-real-key-9f8e7d" not in str(error.value)
    monkeypatch.setenv("DOS_AI_MFA_ENCRYPTION_KEYS", f" {good} ")
    assert envfernetkeys("DOS_AI_MFA_ENCRYPTION_KEYS") == [good]
    monkeypatch.setenv("DOS_AI_MFA_RATE", "five a minute")
    with pytest.raises(ImproperlyConfigured, match=r"^DOS_AI_MFA_RATE must be a rate such as 5/15m"):
        envrate("DOS_AI_MFA_RATE", "5/15m")


def test_reencrypting_without_the_key_a_secret_needs_is_one_line_and_changes_nothing(owner: User, settings) -> None:
    settings.DOS_AI_MFA_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    TOTP.activate(owner, SECRET)
    stored = Authenticator.objects.get(user=owner).data
    settings.DOS_AI_MFA_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]  # the old key dropped too early

    with pytest.raises(CommandError, match=r"^A two-factor secret cannot be decrypted .* reencrypt_mfa_secrets"):
        call_command("reencrypt_mfa_secrets")

    assert Authenticator.objects.get(user=owner).data == stored

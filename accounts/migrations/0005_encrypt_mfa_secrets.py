"""Two-factor secrets stored before they were encrypted (TOTP secrets, recovery-code seeds) are
encrypted with the current key (accounts/mfa_encryption.py); the reverse decrypts them again.

Both directions skip what is already in the wanted form, so a rerun changes nothing."""

from django.db import migrations

from accounts import mfa_encryption

TYPES_WITH_SECRETS = ("totp", "recovery_codes")


def _rewrite(apps, transform):
    Authenticator = apps.get_model("mfa", "Authenticator")
    for authenticator in Authenticator.objects.filter(type__in=TYPES_WITH_SECRETS).order_by("pk").iterator():
        data = mfa_encryption.secrets_mapped(authenticator.data, transform)
        if data != authenticator.data:
            Authenticator.objects.filter(pk=authenticator.pk).update(data=data)


def encrypt_secrets(apps, schema_editor):
    _rewrite(apps, mfa_encryption.encrypt_if_clear)


def decrypt_secrets(apps, schema_editor):
    _rewrite(apps, mfa_encryption.decrypt)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_security_event_second_factor_throttled"),
        ("mfa", "0003_authenticator_type_uniq"),
    ]

    operations = [migrations.RunPython(encrypt_secrets, decrypt_secrets)]

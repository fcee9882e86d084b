"""Accounts made before email verification existed count as verified (their starting credit
was granted at creation): each gets a verified, primary EmailAddress for its email."""

from django.db import migrations


def mark_verified(apps, schema_editor):
    User = apps.get_model("accounts", "User")
    EmailAddress = apps.get_model("account", "EmailAddress")
    have_address = EmailAddress.objects.values_list("user_id", flat=True)
    EmailAddress.objects.bulk_create(
        [
            EmailAddress(user_id=user_id, email=email.lower(), verified=True, primary=True)
            for user_id, email in User.objects.exclude(pk__in=have_address).values_list("pk", "email")
        ]
    )


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_security_event"),
        ("account", "0009_emailaddress_unique_primary_email"),
    ]

    operations = [migrations.RunPython(mark_verified, migrations.RunPython.noop)]

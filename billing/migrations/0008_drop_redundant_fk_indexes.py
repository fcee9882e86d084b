"""Drop the single-column indexes of three foreign keys that a composite index already leads
with: every /v1 call inserts a usage record (and usually a ledger entry), and each index is
paid on every insert. Only the indexes go; the foreign-key constraints stay as they are (no
re-validation of large tables)."""

from django.conf import settings
from django.db import migrations, models
from django.db.models.deletion import CASCADE, PROTECT

# (index, table, column) as Django named them in 0001_initial.
REDUNDANT = [
    ("billing_ledgerentry_user_id_b10feb9b", "billing_ledgerentry", "user_id"),
    ("billing_usagerecord_api_key_id_4ed5f4fb", "billing_usagerecord", "api_key_id"),
    ("billing_usagerecord_user_id_915edca6", "billing_usagerecord", "user_id"),
]


def unindexed(to, on_delete, related_name):
    return models.ForeignKey(to, on_delete=on_delete, related_name=related_name, db_index=False)


class Migration(migrations.Migration):
    dependencies = [("billing", "0007_key_spend_alerts")]  # which depends on the user and key models

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField("ledgerentry", "user", unindexed(settings.AUTH_USER_MODEL, CASCADE, "ledger_entries")),
                migrations.AlterField("usagerecord", "api_key", unindexed("apikeys.apikey", PROTECT, "usage_records")),
                migrations.AlterField("usagerecord", "user", unindexed(settings.AUTH_USER_MODEL, CASCADE, "usage_records")),
            ],
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{index}"', reverse_sql=f'CREATE INDEX "{index}" ON "{table}" ("{column}")'
                )
                for index, table, column in REDUNDANT
            ],
        ),
    ]

from __future__ import annotations

from django.db import migrations

from billing.seed import SEED, ensure


def seed(apps, schema_editor):
    ServedModel = apps.get_model("billing", "ServedModel")
    for row in SEED:
        ensure(ServedModel, row)


def unseed(apps, schema_editor):
    apps.get_model("billing", "ServedModel").objects.filter(name__in=[row[0] for row in SEED]).delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]

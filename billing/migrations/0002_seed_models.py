from __future__ import annotations

from django.db import migrations

SEED = [
    # name, upstream_model, kind, input micro-USD / 1M tokens, output micro-USD / 1M tokens
    ("dos-ai", "", "chat", 500_000, 1_500_000),
    ("dos-ai-embed", "", "embedding", 20_000, 0),
]


def seed(apps, schema_editor):
    ServedModel = apps.get_model("billing", "ServedModel")
    for name, upstream, kind, input_price, output_price in SEED:
        ServedModel.objects.get_or_create(
            name=name,
            defaults={
                "upstream_model": upstream,
                "kind": kind,
                "input_price_micros_per_million": input_price,
                "output_price_micros_per_million": output_price,
            },
        )


def unseed(apps, schema_editor):
    apps.get_model("billing", "ServedModel").objects.filter(name__in=[row[0] for row in SEED]).delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]

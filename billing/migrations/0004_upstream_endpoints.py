import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("billing", "0003_usage_client_request_id")]

    operations = [
        migrations.CreateModel(
            name="UpstreamEndpoint",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "base_url",
                    models.URLField(
                        help_text="OpenAI-compatible base URL, e.g. http://vllm-1:8000/v1",
                        max_length=300,
                        verbose_name="base URL",
                    ),
                ),
                (
                    "api_key",
                    models.CharField(
                        blank=True,
                        help_text="Sent to this server as Authorization: Bearer.",
                        max_length=500,
                        verbose_name="API key",
                    ),
                ),
                (
                    "weight",
                    models.PositiveSmallIntegerField(
                        default=1,
                        help_text="Relative share of traffic: a weight-2 server takes twice the requests in flight.",
                    ),
                ),
                ("is_active", models.BooleanField(default=True)),
                (
                    "served_model",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="endpoints",
                        to="billing.servedmodel",
                    ),
                ),
            ],
            options={
                "ordering": ["served_model", "id"],
                "constraints": [
                    models.UniqueConstraint(fields=("served_model", "base_url"), name="upstream_endpoint_unique_url"),
                    models.CheckConstraint(
                        condition=models.Q(("weight__gte", 1), ("weight__lte", 1000)), name="upstream_weight_range"
                    ),
                ],
            },
        ),
    ]

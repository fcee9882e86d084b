from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("billing", "0002_seed_models")]

    operations = [
        migrations.AddField(
            model_name="usagerecord",
            name="client_request_id",
            field=models.CharField(blank=True, default="", max_length=100),
        ),
    ]

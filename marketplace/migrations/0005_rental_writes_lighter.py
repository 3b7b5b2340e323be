"""Rentals are updated in place every rating run and metering tick: pages half empty (fillfactor 50) let an
update put the new row version on the same page without touching the rental's indexes (a HOT update); the buyer's
and provider's foreign-key indexes go, since their (organization | provider, created_at, id) indexes lead with them.
"""

import django.db.models.deletion
from django.db import migrations, models

from marketplace.core.storage import half_empty_pages


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_api_key_spend_limit_notifications"),
        ("marketplace", "0004_usage_rating_watermarks"),
    ]

    operations = [
        migrations.AlterField(
            model_name="rental",
            name="organization",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="rentals",
                to="accounts.organization",
            ),
        ),
        migrations.AlterField(
            model_name="rental",
            name="provider",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="accounts.organization",
            ),
        ),
        half_empty_pages("marketplace_rental"),
    ]

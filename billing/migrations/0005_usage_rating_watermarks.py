import django.db.models.deletion
from django.db import migrations, models

# Events were marked with the charge that rated them; a watermark per rental replaces the marks: the largest
# rated event id of each rental, and of each charge (with how many events it rated).
CARRY_MARKS_OVER = [
    """UPDATE marketplace_rental SET usage_rated_through = COALESCE(
         (SELECT MAX(e.id) FROM billing_usageevent e WHERE e.rental_id = marketplace_rental.id
            AND e.charge_id IS NOT NULL), 0)""",
    """UPDATE billing_usagecharge SET
         events_through = COALESCE((SELECT MAX(e.id) FROM billing_usageevent e WHERE e.charge_id = billing_usagecharge.id), 0),
         event_count = (SELECT COUNT(*) FROM billing_usageevent e WHERE e.charge_id = billing_usagecharge.id)""",
]


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_api_key_spend_limit_notifications"),
        ("billing", "0004_usage_of_rentals"),
        ("marketplace", "0004_usage_rating_watermarks"),
    ]

    operations = [
        migrations.AddField(
            model_name="usagecharge",
            name="events_through",
            field=models.BigIntegerField(default=0, verbose_name="events rated through"),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="usagecharge",
            name="event_count",
            field=models.PositiveIntegerField(default=0, verbose_name="events rated"),
            preserve_default=False,
        ),
        *(migrations.RunSQL(sql, reverse_sql=migrations.RunSQL.noop) for sql in CARRY_MARKS_OVER),
        migrations.RemoveIndex(model_name="usageevent", name="usage_event_unrated"),
        migrations.RemoveField(model_name="usageevent", name="charge"),
        migrations.AlterField(
            model_name="usageevent",
            name="rental",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="usage_events",
                to="marketplace.rental",
            ),
        ),
        migrations.AddIndex(
            model_name="usageevent",
            index=models.Index(fields=["rental", "id"], name="usage_event_rental_order"),
        ),
    ]

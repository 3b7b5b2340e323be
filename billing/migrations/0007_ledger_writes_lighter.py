"""Lighter writes for the ledger and holds, which every rating run writes thousands of rows of.

Idempotency keys and references become a unique constraint and a plain index: `unique=True` and `db_index=True` on a
CharField also build a LIKE (varchar_pattern_ops) index on PostgreSQL, which nothing queries. Foreign-key indexes
that a composite index already leads with go. Holds and ledger accounts, updated in place every run, get pages half
empty (fillfactor 50) so that an update finds room for the new row version on its page and skips the indexes (a HOT
update): a run updated every hold and rental through all their indexes.
"""

import django.db.models.deletion
from django.db import migrations, models

from marketplace.core.storage import half_empty_pages


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_api_key_spend_limit_notifications"),
        ("billing", "0006_ledger_balance_checked_per_statement"),
    ]

    operations = [
        migrations.AlterField(
            model_name="hold",
            name="idempotency_key",
            field=models.CharField(max_length=200),
        ),
        migrations.AlterField(
            model_name="hold",
            name="reference",
            field=models.CharField(max_length=100, verbose_name="reference"),
        ),
        migrations.AlterField(
            model_name="ledgertransaction",
            name="idempotency_key",
            field=models.CharField(max_length=200),
        ),
        migrations.AlterField(
            model_name="ledgertransaction",
            name="organization",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="accounts.organization",
            ),
        ),
        migrations.AlterField(
            model_name="ledgertransaction",
            name="reference",
            field=models.CharField(blank=True, max_length=100, verbose_name="reference"),
        ),
        migrations.AlterField(
            model_name="posting",
            name="account",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="postings",
                to="billing.ledgeraccount",
            ),
        ),
        migrations.AlterField(
            model_name="usagecharge",
            name="organization",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="accounts.organization",
            ),
        ),
        migrations.AddIndex(
            model_name="hold",
            index=models.Index(fields=["reference"], name="hold_reference"),
        ),
        migrations.AddIndex(
            model_name="ledgertransaction",
            index=models.Index(fields=["reference"], name="ledger_txn_reference"),
        ),
        migrations.AddConstraint(
            model_name="hold",
            constraint=models.UniqueConstraint(fields=("idempotency_key",), name="hold_unique_idempotency_key"),
        ),
        migrations.AddConstraint(
            model_name="ledgertransaction",
            constraint=models.UniqueConstraint(fields=("idempotency_key",), name="ledger_txn_unique_idempotency_key"),
        ),
        half_empty_pages("billing_hold", "billing_ledgeraccount"),
    ]

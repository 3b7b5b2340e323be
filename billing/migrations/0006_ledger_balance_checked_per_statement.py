"""The rule that every ledger transaction's postings sum to zero, checked once per INSERT statement over the rows it
inserted (a transition table) instead of once per row at commit: a rating run posts tens of thousands of lines in one
statement, and the per-row check (a query each) cost more than writing them. Postings are append-only, and every
code path writes a transaction's postings in one statement, so each statement must leave its transactions balanced.
"""

from django.db import migrations

FORWARD = """
DROP TRIGGER billing_posting_balanced ON billing_posting;
DROP FUNCTION billing_transaction_balanced();

CREATE FUNCTION billing_transactions_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    unbalanced record;
BEGIN
    SELECT p.transaction_id, a.currency, SUM(p.amount) AS total INTO unbalanced
      FROM billing_posting p JOIN billing_ledgeraccount a ON a.id = p.account_id
     WHERE p.transaction_id IN (SELECT transaction_id FROM inserted)
     GROUP BY p.transaction_id, a.currency HAVING SUM(p.amount) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % does not sum to zero in % (sum %)',
            unbalanced.transaction_id, unbalanced.currency, unbalanced.total USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER billing_posting_balanced AFTER INSERT ON billing_posting
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION billing_transactions_balanced();
"""

BACKWARD = """
DROP TRIGGER billing_posting_balanced ON billing_posting;
DROP FUNCTION billing_transactions_balanced();

CREATE FUNCTION billing_transaction_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    unbalanced record;
BEGIN
    SELECT a.currency, SUM(p.amount) AS total INTO unbalanced
      FROM billing_posting p JOIN billing_ledgeraccount a ON a.id = p.account_id
     WHERE p.transaction_id = NEW.transaction_id
     GROUP BY a.currency HAVING SUM(p.amount) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % does not sum to zero in % (sum %)',
            NEW.transaction_id, unbalanced.currency, unbalanced.total USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER billing_posting_balanced AFTER INSERT ON billing_posting
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION billing_transaction_balanced();
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("billing", "0005_usage_rating_watermarks")]

    operations = [migrations.RunPython(forward, backward)]

"""Ledger rules the database enforces itself, so that no code path (raw SQL included) can break them.

PostgreSQL: postings and transactions are append-only (UPDATE and DELETE raise), and a deferred
constraint trigger checks at commit that every transaction's postings sum to zero per currency.
SQLite (the embedded demo): UPDATE of a posting raises; DELETE stays possible because Django's test
flush empties SQLite tables with DELETE (PostgreSQL's flush uses TRUNCATE, which row triggers ignore).
"""

from django.db import migrations

POSTGRES_FORWARD = """
CREATE FUNCTION billing_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger rows are append-only: % on % refused; post a reversing transaction instead',
        TG_OP, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER billing_posting_append_only BEFORE UPDATE OR DELETE ON billing_posting
    FOR EACH ROW EXECUTE FUNCTION billing_refuse_change();
CREATE TRIGGER billing_ledgertransaction_append_only BEFORE UPDATE OR DELETE ON billing_ledgertransaction
    FOR EACH ROW EXECUTE FUNCTION billing_refuse_change();

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

POSTGRES_BACKWARD = """
DROP TRIGGER billing_posting_balanced ON billing_posting;
DROP FUNCTION billing_transaction_balanced();
DROP TRIGGER billing_ledgertransaction_append_only ON billing_ledgertransaction;
DROP TRIGGER billing_posting_append_only ON billing_posting;
DROP FUNCTION billing_refuse_change();
"""

SQLITE_FORWARD = [
    """CREATE TRIGGER billing_posting_no_update BEFORE UPDATE ON billing_posting
       BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only: UPDATE on billing_posting refused'); END""",
    """CREATE TRIGGER billing_ledgertransaction_no_update BEFORE UPDATE ON billing_ledgertransaction
       BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only: UPDATE on billing_ledgertransaction refused'); END""",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER billing_posting_no_update",
    "DROP TRIGGER billing_ledgertransaction_no_update",
]


def forward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_FORWARD, params=None)  # RAISE formats use %
    elif vendor == "sqlite":
        for statement in SQLITE_FORWARD:
            schema_editor.execute(statement)


def backward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_BACKWARD, params=None)
    elif vendor == "sqlite":
        for statement in SQLITE_BACKWARD:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [migrations.RunPython(forward, backward)]

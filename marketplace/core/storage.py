"""How tables are stored on PostgreSQL, as migration operations (other databases have no such settings)."""

from django.db import migrations


def half_empty_pages(*tables: str) -> migrations.RunPython:
    """Keep half of each page of `tables` free (fillfactor 50): a row updated in place many times (every rating run,
    every metering tick) finds room for its new version on its own page, and PostgreSQL then skips writing the
    table's indexes (a HOT update) unless an indexed column changed. Applies to pages written from now on."""

    def forward(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            for table in tables:
                schema_editor.execute(f"ALTER TABLE {table} SET (fillfactor = 50)")

    def backward(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            for table in tables:
                schema_editor.execute(f"ALTER TABLE {table} RESET (fillfactor)")

    return migrations.RunPython(forward, backward)

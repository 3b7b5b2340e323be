"""Guarded statements: several checks and writes in one PostgreSQL statement (a data-modifying CTE), where the
writes take effect only if every check passed.

Each check selects and locks (FOR UPDATE) the rows it is about, filtered by its condition, and runs only if the
checks added before it passed: the order checks are added in is the order their rows are locked in, and a check
that fails leaves the later ones unlocked. Under READ COMMITTED a locking read re-evaluates its condition on the
row's latest committed version, so a check holds for the rows the writes then change. Every write is guarded by
all checks, so the statement is all or nothing by itself: no transaction has to be rolled back, and it needs
one round trip. Its result says which check failed first, if one did.
"""

import itertools
import re
import time
from functools import cache, lru_cache

import psycopg
from django.db import connection
from django.db.models import Field, Model


@cache
def _insert_columns(model: type[Model]) -> list[tuple[Field, str, str]]:
    """(field, quoted column, typed placeholder) of each column: in INSERT … SELECT the database cannot infer a
    parameter's type from the column it goes to."""
    return [
        (field, connection.ops.quote_name(field.column), f"%s::{field.cast_db_type(connection)}")
        for field in model._meta.concrete_fields
    ]


PLACEHOLDER = re.compile(r"%([s%])")


@lru_cache(maxsize=64)
def _numbered(sql: str) -> str:
    """`%s` placeholders as PostgreSQL's `$1, $2, …` (`%%` as `%`). psycopg converts them on every call for a
    query longer than its 4 KB cache, as these are; a statement's text repeats, so it is converted once here."""
    numbers = itertools.count(1)
    return PLACEHOLDER.sub(lambda match: f"${next(numbers)}" if match.group(1) == "s" else "%", sql)


def _run_prepared(sql: str, params: list) -> tuple:
    """Run with server-side binding, prepared once per connection: such a statement is long and the same every
    time, and the database spends longer planning it than running it."""
    connection.ensure_connection()
    started = time.monotonic()
    with connection.wrap_database_errors, psycopg.RawCursor(connection.connection) as cursor:
        cursor.execute(_numbered(sql), params, prepare=True)
        row = cursor.fetchone()
    if connection.queries_logged:  # as Django's debug cursor does: query counts in tests and debug pages see it
        connection.queries_log.append({"sql": sql, "time": f"{time.monotonic() - started:.3f}"})
    return row


class GuardedStatement:
    def __init__(self) -> None:
        self._checks: list[tuple[str, str, list, str]] = []  # (name, SQL, params, SQL true when it passed)
        self._writes: list[tuple[str, str, list]] = []
        self._results: list[tuple[str, str]] = []

    def check(self, name: str, sql: str, params: list, passed: str | None = None) -> None:
        """`sql` selects and locks the rows of the check; it contains `{guard}`, where the checks added before it
        must hold. By default the check passed when it selected a row; `passed` is SQL over `name` otherwise."""
        passed = passed or f"EXISTS (SELECT 1 FROM {name})"  # noqa: S608 - names are the code's, never input
        self._checks.append((name, sql, params, passed))

    def write(self, name: str, sql: str, params: list) -> None:
        """An INSERT, UPDATE or DELETE with `{guard}` in its WHERE clause: it runs only if every check passed."""
        self._writes.append((name, sql, params))

    def insert(self, name: str, obj: Model, *, expressions: dict[str, str] | None = None, returning: str = "") -> None:
        """Insert a model instance (its primary key too, if set). `expressions` gives SQL for some columns (by
        attribute name, e.g. a key that another write of this statement returns)."""
        expressions = expressions or {}
        columns, values, params = [], [], []
        for field, column, placeholder in _insert_columns(type(obj)):
            if field.primary_key and obj.pk is None:
                continue
            columns.append(column)
            if field.attname in expressions:
                values.append(expressions[field.attname])
            else:
                values.append(placeholder)
                params.append(field.get_db_prep_save(field.pre_save(obj, add=True), connection))
        table = connection.ops.quote_name(obj._meta.db_table)
        sql = f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)} WHERE {{guard}}"
        self.write(name, sql + (f" RETURNING {returning}" if returning else ""), params)

    def result(self, name: str, sql: str) -> None:
        """A value the statement returns besides which checks passed, e.g. `(SELECT id FROM hold)`."""
        self._results.append((name, sql))

    def execute(self) -> tuple[str | None, dict]:
        """Run it: (the first check that failed, or None when all passed and everything was written; results)."""
        ctes, params = [], []
        for index, (name, sql, check_params, _passed) in enumerate(self._checks):
            ctes.append(f"{name} AS MATERIALIZED ({sql.replace('{guard}', self._guard(index))})")
            params += check_params
        for name, sql, write_params in self._writes:
            ctes.append(f"{name} AS ({sql.replace('{guard}', self._guard(len(self._checks)))})")
            params += write_params
        outputs = [passed for *_check, passed in self._checks] + [sql for _name, sql in self._results]
        row = _run_prepared(f"WITH {', '.join(ctes)} SELECT {', '.join(outputs)}", params)
        verdicts = zip((name for name, *_check in self._checks), row[: len(self._checks)], strict=True)
        failed = next((name for name, passed in verdicts if not passed), None)
        return failed, dict(zip((name for name, _sql in self._results), row[len(self._checks) :], strict=True))

    def _guard(self, checks: int) -> str:
        """SQL that is true when the first `checks` checks passed."""
        return " AND ".join(f"({passed})" for *_check, passed in self._checks[:checks]) or "TRUE"

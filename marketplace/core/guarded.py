"""Guarded statements: several checks and writes in one PostgreSQL statement (a data-modifying CTE), where the
writes take effect only if every check passed.

Each check selects and locks (FOR UPDATE) the rows it is about, filtered by its condition, and runs only if the
checks added before it passed: the order checks are added in is the order their rows are locked in, and a check
that fails leaves the later ones unlocked. Under READ COMMITTED a locking read re-evaluates its condition on the
row's latest committed version, so a check holds for the rows the writes then change. Every write is guarded by
all checks, so the statement is all or nothing by itself: no transaction has to be rolled back, and it needs
one round trip. Its result says which check failed first, if one did.
"""

from functools import cache

from django.db import connection
from django.db.models import Field, Model

from marketplace.core.queries import run_prepared


@cache
def _insert_columns(model: type[Model]) -> list[tuple[Field, str, str]]:
    """(field, quoted column, typed placeholder) of each column: in INSERT … SELECT the database cannot infer a
    parameter's type from the column it goes to."""
    return [
        (field, connection.ops.quote_name(field.column), f"%s::{field.cast_db_type(connection)}")
        for field in model._meta.concrete_fields
    ]


Expression = str | tuple[str, list]  # SQL, or SQL with its own `%s` parameters


class GuardedStatement:
    def __init__(self) -> None:
        self._keys: list[tuple[str, type[Model]]] = []
        self._checks: list[tuple[str, str, list, str]] = []  # (name, SQL, params, SQL true when it passed)
        self._writes: list[tuple[str, str, list]] = []
        self._results: list[tuple[str, str]] = []

    def key(self, name: str, model: type[Model]) -> str:
        """A new primary key of `model` drawn from its sequence by the statement itself (once, however often it is
        used: no round trip before it). Returns SQL for it."""
        self._keys.append((name, model))
        return f"(SELECT id FROM {name})"  # noqa: S608 - names are the code's, never input

    def check(self, name: str, sql: str, params: list, passed: str | None = None) -> None:
        """`sql` selects and locks the rows of the check; it contains `{guard}`, where the checks added before it
        must hold. By default the check passed when it selected a row; `passed` is SQL over `name` otherwise."""
        passed = passed or f"EXISTS (SELECT 1 FROM {name})"  # noqa: S608 - names are the code's, never input
        self._checks.append((name, sql, params, passed))

    def write(self, name: str, sql: str, params: list) -> None:
        """An INSERT, UPDATE or DELETE with `{guard}` in its WHERE clause: it runs only if every check passed."""
        self._writes.append((name, sql, params))

    def insert(
        self, name: str, obj: Model, *, expressions: dict[str, Expression] | None = None, returning: str = ""
    ) -> None:
        """Insert a model instance (its primary key too, if set or given). `expressions` gives SQL for some columns
        (by attribute name, e.g. a key that another write of this statement returns)."""
        expressions = expressions or {}
        columns, values, params = [], [], []
        for field, column, placeholder in _insert_columns(type(obj)):
            if field.primary_key and obj.pk is None and field.attname not in expressions:
                continue
            columns.append(column)
            if field.attname in expressions:
                expression = expressions[field.attname]
                expression, expression_params = (expression, []) if isinstance(expression, str) else expression
                values.append(expression)
                params += expression_params
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
        for name, model in self._keys:  # nextval() is volatile: the database draws it once, where first used
            ctes.append(f"{name} AS (SELECT nextval(pg_get_serial_sequence(%s, %s)) AS id)")
            params += [model._meta.db_table, model._meta.pk.column]
        for index, (name, sql, check_params, _passed) in enumerate(self._checks):
            ctes.append(f"{name} AS MATERIALIZED ({sql.replace('{guard}', self._guard(index))})")
            params += check_params
        for name, sql, write_params in self._writes:
            ctes.append(f"{name} AS ({sql.replace('{guard}', self._guard(len(self._checks)))})")
            params += write_params
        outputs = [passed for *_check, passed in self._checks] + [sql for _name, sql in self._results]
        (row,) = run_prepared(f"WITH {', '.join(ctes)} SELECT {', '.join(outputs)}", params)
        verdicts = zip((name for name, *_check in self._checks), row[: len(self._checks)], strict=True)
        failed = next((name for name, passed in verdicts if not passed), None)
        return failed, dict(zip((name for name, _sql in self._results), row[len(self._checks) :], strict=True))

    def _guard(self, checks: int) -> str:
        """SQL that is true when the first `checks` checks passed."""
        return " AND ".join(f"({passed})" for *_check, passed in self._checks[:checks]) or "TRUE"

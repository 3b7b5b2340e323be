"""Querysets compiled once per process and run many times: for lookups on every request's path.

Compiling a queryset (joins, select list, converters) costs Django more CPU than a simple indexed lookup
costs the database. A `PreparedQuery` compiles its queryset once with placeholder values, remembers where
each placeholder landed in the SQL parameters, and afterwards only binds new values, runs the SQL and builds
the model instances the way Django's ModelIterable does (select_related objects included). Every call runs the
query: nothing about the data is cached. On PostgreSQL it runs prepared (`run_prepared`).
"""

import itertools
import re
import threading
import time
from collections.abc import Callable
from functools import lru_cache

import psycopg
from django.db import connections
from django.db.models import Model, QuerySet
from django.db.models.query import get_related_populators

INTEGER_PLACEHOLDER = -(2**63) + 1  # no key is this small
# The largest OFFSET a query is given: SQL's 64-bit integers hold it with room for a page's rows. No table holds as
# many rows, so a window past it is empty, and sending it would only make the database fail.
MAX_OFFSET = 2**62
PLACEHOLDER = re.compile(r"%([s%])")


@lru_cache(maxsize=64)
def _numbered(sql: str) -> str:
    """`%s` placeholders as PostgreSQL's `$1, $2, …` (`%%` as `%`). psycopg converts them on every call for a
    query longer than its 4 KB cache; a statement's text repeats, so it is converted once here."""
    numbers = itertools.count(1)
    return PLACEHOLDER.sub(lambda match: f"${next(numbers)}" if match.group(1) == "s" else "%", sql)


def run_prepared(sql: str, params: list, *, using: str = "default") -> list[tuple]:
    """PostgreSQL: run a statement that returns rows with server-side binding, prepared once per connection.

    For statements on every request's path: Django's cursor binds values into the text on the client, so the
    database parses and plans the statement again on every call (for a long statement, longer than running it)."""
    connection = connections[using]
    connection.ensure_connection()
    started = time.monotonic()
    with connection.wrap_database_errors, psycopg.RawCursor(connection.connection) as cursor:
        cursor.execute(_numbered(sql), params, prepare=True)
        rows = cursor.fetchall()
    if connection.queries_logged:  # as Django's debug cursor does: query counts in tests and debug pages see it
        connection.queries_log.append({"sql": sql, "time": f"{time.monotonic() - started:.3f}"})
    return rows


def fetch_all(sql: str, params: list, *, using: str = "default") -> list[tuple]:
    """The rows of a statement on every request's path: prepared on PostgreSQL (`run_prepared`), through Django's
    cursor on other databases."""
    if connections[using].vendor == "postgresql":
        return run_prepared(sql, params, using=using)
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


class PreparedQuery:
    """`PreparedQuery(lambda prefix: ApiKey.objects.filter(prefix=prefix)[:1], "prefix")`, then `.run(prefix=…)`.

    The builder's parameters must reach the SQL unchanged (exact lookups on text or integer columns); those
    compared with an integer column are named in `integers`.
    """

    def __init__(self, build: Callable[..., QuerySet], *names: str, integers: tuple[str, ...] = ()) -> None:
        self.build, self.names, self.integers = build, names, integers
        self._compiled: dict[str, tuple] = {}  # per database alias
        self._lock = threading.Lock()

    def _compile(self, alias: str) -> tuple:
        placeholders = {name: f"\x00prepared:{name}\x00" for name in self.names}
        placeholders |= {name: INTEGER_PLACEHOLDER + index for index, name in enumerate(self.integers)}
        queryset = self.build(**placeholders)
        compiler = queryset.query.get_compiler(using=alias)
        sql, params = compiler.as_sql()
        positions = {}
        for name, placeholder in placeholders.items():
            found = [index for index, value in enumerate(params) if value == placeholder]
            if not found:
                raise ValueError(f"parameter {name!r} does not reach the SQL unchanged")
            positions[name] = found
        klass_info = compiler.klass_info
        start, end = klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1
        init_list = [column[0].target.attname for column in compiler.select[start:end]]
        populators = get_related_populators(klass_info, compiler.select, alias)
        converters = compiler.get_converters([column[0] for column in compiler.select[: compiler.col_count]])
        return (compiler, sql, list(params), positions, klass_info["model"], init_list, (start, end), populators,
                converters)  # fmt: skip

    def run(self, *, using: str = "default", **values) -> list[Model]:
        compiled = self._compiled.get(using)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.get(using) or self._compile(using)
                self._compiled[using] = compiled
        compiler, sql, params, positions, model, init_list, (start, end), populators, converters = compiled
        bound = list(params)
        for name, indexes in positions.items():
            for index in indexes:
                bound[index] = values[name]
        rows = fetch_all(sql, bound, using=using)
        if converters:
            rows = compiler.apply_converters(rows, converters)
        objects = []
        for row in rows:
            obj = model.from_db(using, init_list, row[start:end])
            for populator in populators:
                populator.populate(row, obj)
            objects.append(obj)
        return objects

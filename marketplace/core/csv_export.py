"""CSV downloads, streamed: a long history costs no memory and starts arriving at once.

Every export writes through `csv_writer`, which neutralises cells a spreadsheet would run as a formula (OWASP,
"CSV injection"): text that starts with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading single quote,
so a memo, a name or a reference that another party chose (`=HYPERLINK(…)`) is shown as text. Numbers, and text
that is a plain number (`-40.00`), are left as they are: a negative amount stays a number.
"""

import csv
import re
from collections.abc import Iterable

from django.http import StreamingHttpResponse

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PLAIN_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?")


def csv_cell(value):
    """The value as it may be written to a cell: text that would start a formula is prefixed with `'`."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


class _NeutralisingWriter:
    """csv.writer's `writerow`, each cell through `csv_cell`."""

    def __init__(self, file) -> None:
        self._writer = csv.writer(file)

    def writerow(self, row: Iterable):
        return self._writer.writerow([csv_cell(value) for value in row])


def csv_writer(file) -> _NeutralisingWriter:
    """The one CSV writer of the project's exports."""
    return _NeutralisingWriter(file)


class _Echo:
    """A file-like object whose write returns the line, so csv.writer yields instead of buffering."""

    def write(self, value: str) -> str:
        return value


def streaming_csv_response(*, filename: str, header: list[str], rows: Iterable[list]) -> StreamingHttpResponse:
    writer = csv_writer(_Echo())

    def lines():
        yield writer.writerow(header)
        for row in rows:
            yield writer.writerow(row)

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response

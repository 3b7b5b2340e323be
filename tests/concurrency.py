"""Real parallel connections for PostgreSQL tests: threads released together, each with its own connection."""

import threading
from collections.abc import Callable

from django.db import connection


def race(workers: int, work: Callable[[int], object]) -> list[object]:
    """Run `work(index)` on `workers` threads that start at the same moment; returns what each returned. An
    exception in any thread fails the caller (re-raised after every thread finished)."""
    barrier = threading.Barrier(workers)
    outcomes: list[object] = []
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(20)
            outcomes.append(work(index))
        except BaseException as error:  # noqa: BLE001 - handed to the caller below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if errors:
        raise errors[0]
    return outcomes

"""Real parallel connections for PostgreSQL tests: threads released together, each with its own connection."""

import threading
from collections.abc import Callable

from django.db import connection


def race(workers: int, work: Callable[[int], object]) -> list[object]:
    """Run `work(index)` on `workers` threads that start at the same moment; returns what each returned."""
    barrier = threading.Barrier(workers)
    outcomes: list[object] = []

    def run(index: int) -> None:
        try:
            barrier.wait(20)
            outcomes.append(work(index))
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes

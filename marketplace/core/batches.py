"""Work over many rows where each row's transaction stands alone."""

import logging
from collections.abc import Callable, Iterable

logger = logging.getLogger(__name__)


def each_on_its_own(ids: Iterable[int], action: Callable[[int], object], *, what: str) -> int:
    """Call `action` with each id (it opens its own transaction): one that fails is logged with its id and does not
    hold the others back; the next run tries it again. Returns how many succeeded."""
    done = 0
    for pk in ids:
        try:
            action(pk)
            done += 1
        except Exception:
            logger.exception("%s failed", what, extra={"id": pk})
    return done

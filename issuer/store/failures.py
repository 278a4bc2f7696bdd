"""Requests refused because the store is unavailable: every one counted, few logged.

While the database is down every request that needs it fails the same way; a
traceback per request would bury the log (and cost I/O when it is least
affordable). :meth:`StoreFailures.report` counts each failure (the
``issuer_store_unavailable_total`` metric) and logs the first of every
``log_every`` seconds, with its traceback and how many went unlogged since the
previous line. The error's text names the statement but never a bound value
(engines hide SQL parameters: issuer.store.db).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from issuer.clock import Clock

log = logging.getLogger(__name__)

#: Seconds between two log lines about store failures.
LOG_EVERY = 10.0


class StoreFailures:
    def __init__(self, clock: Clock, count: Callable[[], None], *,
                 log_every: float = LOG_EVERY) -> None:
        self._clock = clock
        self._count = count
        self._log_every = log_every
        self._logged_at = -math.inf
        self._unlogged = 0

    def report(self, where: str, error: BaseException) -> None:
        """A request at ``where`` (e.g. ``POST /token``) was refused because of ``error``."""
        self._count()
        now = self._clock.now()
        if now - self._logged_at < self._log_every:
            self._unlogged += 1
            return
        unlogged, self._unlogged, self._logged_at = self._unlogged, 0, now
        log.error("the store is unavailable (%s at %s); %d more refused requests since the "
                  "last line were not logged", type(error).__name__, where, unlogged,
                  exc_info=error,
                  extra={"fields": {"where": where, "error": type(error).__name__,
                                    "unlogged": unlogged}})

"""While the state store cannot be written: try it every few seconds, and resume once it works.

Any loop that meets a store failure pauses all work (`control.Guard`, cause `PAUSE_STORE`). The
main thread calls `StoreCheck.tick` every second: every `STORE_RETRY` seconds it tries one small
write; once that works, uploads that could not record their end are put back in the queue (their
look-up adopts what the server stored meanwhile), work resumes, and a rescan finds whatever the
intake could not record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from tlwatch.control import PAUSE_STORE, STORE_RETRY, RunState
from tlwatch.errors import StoreUnavailable
from tlwatch.state import Store

log = logging.getLogger(__name__)


class StoreCheck:
    def __init__(
        self,
        store: Store,
        run: RunState,
        *,
        in_flight: Callable[[], Iterable[int]],
        grace: Callable[[], float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.run, self.in_flight, self.grace = store, run, in_flight, grace
        self.clock = clock
        self._next_try = 0.0

    def tick(self) -> None:
        if self.run.paused(PAUSE_STORE) is None or self.clock() < self._next_try:
            return
        self._next_try = self.clock() + STORE_RETRY
        try:
            self.store.probe()
            self.store.recover(self.grace(), keep=self.in_flight())
        except StoreUnavailable as error:
            log.debug("%s: still holding all work", error)
            return
        self.run.resume(PAUSE_STORE)
        log.info("state store: writable again; work resumes")
        self.run.rescan()  # whatever the intake could not record meanwhile

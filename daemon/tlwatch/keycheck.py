"""While the API key is rejected: say so once, pick up a fixed key, and lift the pause.

Upload workers and the poller only pause the run (`PAUSE_KEY`) when the API answers 401. The main
thread calls `KeyCheck.tick` every second: it announces a new pause, re-reads the key from where it
comes from, and tries it (a changed key at once, the same key again once a minute).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tlwatch import logs
from tlwatch.api import Client
from tlwatch.config import Config, api_key_source, read_api_key
from tlwatch.control import PAUSE_KEY, RunState
from tlwatch.errors import ApiError, ConfigError

log = logging.getLogger(__name__)

RECHECK_SECONDS = 60.0  # the same key is tried again this often
READ_SECONDS = 1.0  # the key's source is re-read this often while paused


class KeyCheck:
    def __init__(
        self,
        key: str,
        client: Client,
        config: Callable[[], Config],
        run: RunState,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key, self.client, self.config, self.run, self.clock = key, client, config, run, clock
        self._announced = False
        self._next_read = 0.0
        self._last_probe = 0.0

    def tick(self) -> None:
        if self.run.paused(PAUSE_KEY) is None:
            self._announced = False
            return
        if not self._announced:
            self._announced = True
            self._last_probe = self.clock()
            log.error(
                "the API key was rejected (HTTP 401): every upload is paused until the key "
                "(from %s) is fixed; nothing is marked failed",
                api_key_source(self.config()),
            )
        if self.clock() >= self._next_read:
            self._next_read = self.clock() + READ_SECONDS
            self._try_again()

    def _try_again(self) -> None:
        """Pick up a changed key, and try it (or the old one, now and then)."""
        try:
            fresh = read_api_key(self.config())
        except ConfigError:
            return
        if fresh == self.key and self.clock() - self._last_probe < RECHECK_SECONDS:
            return
        self._last_probe = self.clock()
        self.key = fresh
        logs.add_secret(fresh)
        self.client.set_api_key(fresh)
        try:
            next(iter(self.client.list_assets(page_limit=1)), None)
        except ApiError as error:
            log.debug("the API key is still refused: %s", error)
            return
        log.info("the API key is accepted again: uploads resume")
        self.run.resume(PAUSE_KEY)

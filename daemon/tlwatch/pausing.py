"""A pause asked for by hand (`tlwatch pause`, the status page's button): a row in the store, so
it outlasts a restart, followed by the running daemon within seconds (or at once, when asked
through its API). No upload starts while it holds; those in flight finish."""

from __future__ import annotations

import logging

from tlwatch.control import PAUSE_USER, RunState
from tlwatch.state import Store

log = logging.getLogger(__name__)

CHECK_SECONDS = 2.0  # how often the daemon looks for a pause asked for outside it


class UserPause:
    def __init__(self, store: Store, run: RunState) -> None:
        self.store, self.run = store, run
        self._next_check = 0.0

    def set(self, reason: str | None) -> None:
        """Pause for `reason`, or resume (None): recorded, then in force at once."""
        self.store.pause_by_user(reason)
        self._follow(reason)

    def tick(self, now: float) -> None:
        """Follow what the store says (a pause asked for by `tlwatch pause` directly)."""
        if now < self._next_check:
            return
        self._next_check = now + CHECK_SECONDS
        self._follow(self.store.paused_by_user())

    def _follow(self, reason: str | None) -> None:
        if reason is not None:
            if self.run.pause(PAUSE_USER, reason):
                log.info("paused by hand: %s; no upload starts until resumed", reason)
        elif self.run.resume(PAUSE_USER):
            log.info("resumed by hand")

"""What the daemon is doing and whether it is well: the status line, and the watchdog's verdict.

`Snapshot` is the one line shown on a terminal during `tlwatch scan` and in systemd's STATUS=.
`Watchdog` pings systemd while every thread is alive and making progress; a stuck one stops the
pings, so systemd restarts the daemon.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from tlwatch.control import Heartbeats
from tlwatch.sdnotify import Notifier
from tlwatch.state import Store

log = logging.getLogger(__name__)

ORDER = ("queued", "uploading", "uploaded", "ready", "duplicate", "ignored", "skipped", "failed")


@dataclass(frozen=True)
class Snapshot:
    """What the daemon is doing, for a progress line or systemd's STATUS=."""

    counts: dict[str, int]
    settling: int
    paused: str | None
    offline: int = 0  # watched folders offline

    @classmethod
    def of(cls, store: Store, settling: int, paused: str | None, offline: int = 0) -> Snapshot:
        counts: Counter[str] = Counter()
        for (_, state), number in store.counts().items():
            counts[state] += number
        return cls(dict(counts), settling, paused, offline)

    def line(self) -> str:
        parts = [
            f"{self.counts[s]} {'processing' if s == 'uploaded' else s}"
            for s in ORDER
            if self.counts.get(s)
        ]
        if self.settling:
            parts.insert(0, f"{self.settling} settling")
        if self.offline:
            parts.insert(0, f"{self.offline} folder{'s' if self.offline > 1 else ''} offline")
        text = ", ".join(parts) or "nothing to do"
        return f"paused: {self.paused}; {text}" if self.paused else text


class Watchdog:
    """Pings systemd's watchdog at half its interval, while every thread lives and beats."""

    def __init__(
        self,
        notifier: Notifier,
        beats: Heartbeats,
        threads: Callable[[], list[threading.Thread]],
    ) -> None:
        self.notifier, self.beats, self.threads = notifier, beats, threads
        self._next_ping = 0.0
        self._stuck: list[str] = []

    def tick(self, now: float) -> None:
        interval = self.notifier.watchdog_seconds
        if interval is None or now < self._next_ping:
            return
        stuck = sorted(
            {t.name for t in self.threads() if not t.is_alive()} | {*self.beats.stalled()}
        )
        if stuck:
            if stuck != self._stuck:
                names = ", ".join(stuck)
                log.error(
                    "no progress from %s: no more watchdog pings (systemd restarts us)", names
                )
                self.notifier.status(f"stuck: {names}")
            self._stuck = stuck
            return
        self._stuck = []
        self.notifier.watchdog()
        self._next_ping = now + interval / 2

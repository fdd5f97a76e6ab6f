"""The main thread's periodic work, one tick a second (faster under a short systemd watchdog):
the watchdog, periodic rescans, folders that appear, a dead watcher, the rejected key, the status
line, reloads, and the end of a one-pass `tlwatch scan`."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from tlwatch.config import Config
from tlwatch.control import RunState
from tlwatch.folders import Folders
from tlwatch.health import Snapshot, Watchdog
from tlwatch.intake import IntakeWorker
from tlwatch.keycheck import KeyCheck
from tlwatch.sdnotify import Notifier
from tlwatch.state import Store
from tlwatch.watcher import Watcher

log = logging.getLogger(__name__)

EXIT_FAILURE = 1
SNAPSHOT_SECONDS = 10.0  # how often an idle daemon counts its files (for STATUS=)


@dataclass(frozen=True)
class Pass:
    """How a run ends: never (the daemon), or once everything pending is done (`scan`)."""

    once: bool = False
    wait_ready: bool = False  # a one-pass run also waits until every asset is ready or failed
    on_tick: Callable[[Snapshot], None] | None = None  # hears each status line

    def finished(self, snapshot: Snapshot, intake_idle: bool) -> bool:
        busy = ("queued", "uploading") + (("uploaded",) if self.wait_ready else ())
        return self.once and intake_idle and not any(snapshot.counts.get(s) for s in busy)


class Ticks:
    def __init__(
        self,
        config: Callable[[], Config],
        run: RunState,
        notifier: Notifier,
        store: Store,
        intake: IntakeWorker,
        folders: Folders,
        watcher: Watcher,
        keys: KeyCheck,
        watchdog: Watchdog,
        mode: Pass,
        *,
        reload: Callable[[], bool],
    ) -> None:
        self.config, self.run, self.notifier, self.store = config, run, notifier, store
        self.intake, self.folders, self.watcher, self.keys = intake, folders, watcher, keys
        self.watchdog, self.mode, self.reload = watchdog, mode, reload
        self._next_scan = self._scan_time(time.monotonic())
        self._next_snapshot = 0.0
        self._paused: str | None = None

    def loop(self) -> int:
        """Tick until stopped (or a one-pass run is over); return the exit code."""
        tick = 0.5 if self.mode.once else 1.0
        if self.notifier.watchdog_seconds:
            tick = min(tick, self.notifier.watchdog_seconds / 4)
        while not self.run.stop.wait(tick):
            code = self.tick(time.monotonic())
            if code is not None:
                return code
        return 0

    def tick(self, now: float) -> int | None:
        """One tick; an exit code when a one-pass run is over."""
        self.watchdog.tick(now)
        if now >= self._next_scan:
            self._next_scan = self._scan_time(now)
            self.run.rescan()
        if not self.mode.once:
            self._watch_folders()
        self.keys.tick()
        if self.mode.once and self.run.paused():
            log.error("stopping the scan: the API key is rejected (nothing was marked failed)")
            return EXIT_FAILURE
        if self._status_due(now):
            snapshot = self.snapshot()
            self.notifier.status(snapshot.line())
            if self.mode.on_tick:
                self.mode.on_tick(snapshot)
            if self.mode.finished(snapshot, self.intake.idle()):
                return 0
        if self.reload():
            self.notifier.reloading()
            self.watcher.watch(self.folders.present())
            self.run.rescan()
            self.notifier.ready(self.snapshot().line())
        return None

    def snapshot(self) -> Snapshot:
        return Snapshot.of(self.store, self.intake.settling, self.run.paused())

    def _scan_time(self, now: float) -> float:
        return now + self.config().daemon.rescan_interval_seconds * random.uniform(0.9, 1.1)

    def _watch_folders(self) -> None:
        if self.folders.appeared():
            log.info("a watched folder appeared: watching and scanning it")
            self.watcher.watch(self.folders.present())  # a card mounted, a share connected
            self.run.rescan()
        if not self.watcher.healthy():
            log.warning("a watcher thread stopped: rescanning every watched folder")
            self.run.rescan()
            self.watcher.restart()

    def _status_due(self, now: float) -> bool:
        """Idle is idle: the store is counted every 10 s, or at once when the pause changed."""
        paused = self.run.paused()
        due = self.mode.once or self.mode.on_tick is not None or now >= self._next_snapshot
        if paused != self._paused or due:
            self._paused = paused
            self._next_snapshot = now + SNAPSHOT_SECONDS
            return True
        return False

"""The main thread's periodic work, one tick a second (faster under a short systemd watchdog):
the watchdog, periodic rescans, folders going offline and coming back, a dead watcher, the rejected
key, the unwritable store, the status line, reloads, and the end of a one-pass `tlwatch scan`."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tlwatch.config import Config
from tlwatch.control import PAUSE_KEY, Guard, RunState
from tlwatch.errors import StoreUnavailable
from tlwatch.events import FolderChanged
from tlwatch.folders import BACK, Folders
from tlwatch.health import Snapshot, Watchdog
from tlwatch.intake import IntakeWorker
from tlwatch.models import FileState
from tlwatch.sdnotify import Notifier
from tlwatch.state import Store
from tlwatch.watcher import Watcher

log = logging.getLogger(__name__)

EXIT_FAILURE = 1
SNAPSHOT_SECONDS = 10.0  # how often an idle daemon counts its files (for STATUS=)
PROGRESS_SECONDS = 0.5  # how often `tlwatch scan` redraws its progress line
ONCE_TICK = 0.05  # a one-pass run looks this often whether it is done (one indexed query)


@dataclass(frozen=True)
class Pass:
    """How a run ends: never (the daemon), or once everything pending is done (`scan`)."""

    once: bool = False
    wait_ready: bool = False  # a one-pass run also waits until every asset is ready or failed
    on_tick: Callable[[Snapshot], None] | None = None  # hears each status line
    on_end: Callable[[Snapshot], None] | None = None  # hears the last, once all is done

    def busy_states(self) -> tuple[FileState, ...]:
        """The states a one-pass run waits out."""
        busy = (FileState.QUEUED, FileState.UPLOADING, FileState.FITTING)
        return (*busy, FileState.UPLOADED) if self.wait_ready else busy


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
        watchdog: Watchdog,
        mode: Pass,
        *,
        reload: Callable[[], bool],
        tickers: Sequence[Callable[[float], None]] = (),
    ) -> None:
        self.config, self.run, self.notifier, self.store = config, run, notifier, store
        self.intake, self.folders, self.watcher = intake, folders, watcher
        self.watchdog, self.mode, self.reload = watchdog, mode, reload
        self.tickers = tickers  # the key and store checks, metrics, the health record
        self._next_scan = self._scan_time(time.monotonic())
        self._next_snapshot = 0.0
        self._paused: str | None = None

    def loop(self) -> int:
        """Tick until stopped (or a one-pass run is over); return the exit code. A tick that
        fails is reported like any loop's turn (`Guard`), and the next one comes as usual."""
        tick = ONCE_TICK if self.mode.once else 1.0
        if self.notifier.watchdog_seconds:
            tick = min(tick, self.notifier.watchdog_seconds / 4)
        guard = Guard("main", self.run, rest=False)
        code: list[int | None] = [None]

        def turn() -> None:
            code[0] = self.tick(time.monotonic())

        while not self.run.stop.wait(tick):
            if guard(turn) and code[0] is not None:
                return code[0]
        return 0

    def tick(self, now: float) -> int | None:
        """One tick; an exit code when a one-pass run is over."""
        self.watchdog.tick(now)
        if now >= self._next_scan:
            self._next_scan = self._scan_time(now)
            self.run.rescan()
        if not self.mode.once:
            self.watch_folders()
        for ticker in self.tickers:
            ticker(now)
        if self.mode.once and self.run.paused(PAUSE_KEY):
            log.error("stopping the scan: the API key is rejected (nothing was marked failed)")
            return EXIT_FAILURE
        if self.mode.once and self.intake.idle() and not self.store.any_in(self.mode.busy_states()):
            hearing = [hears for hears in (self.mode.on_tick, self.mode.on_end) if hears]
            if hearing:  # (the last count: read only for someone who hears it)
                last = self.snapshot()
                for hears in hearing:
                    hears(last)
            return 0
        if self._status_due(now):
            try:
                snapshot = self.snapshot()
            except StoreUnavailable:
                self.notifier.status(f"paused: {self.run.paused()}")
                return None
            self.notifier.status(snapshot.line())
            if self.mode.on_tick:
                self.mode.on_tick(snapshot)
        if self.reload():
            self.notifier.reloading()
            self.watch_folders()
            self.watcher.watch(self.folders.present())  # a folder's settings may have changed
            self.run.rescan()
            self.notifier.ready(self.snapshot().line())
        return None

    def snapshot(self) -> Snapshot:
        offline = len(self.run.offline())
        return Snapshot.of(self.store, self.intake.settling, self.run.paused(), offline)

    def _scan_time(self, now: float) -> float:
        return now + self.config().daemon.rescan_interval_seconds * random.uniform(0.9, 1.1)

    def watch_folders(self) -> None:
        """Look at every watched folder: watch what is online, scan what came (back) online,
        and record the changes for `tlwatch status`."""
        changes = self.folders.check()
        if changes:
            self.run.set_offline(frozenset(os.fsencode(p) for p in self.folders.offline()))
            self.watcher.watch(self.folders.present())
            if any(online for _, online, _ in changes):
                self.run.rescan()
                self.run.wake_workers()  # its queued files may go now
                self.run.wake_chores()  # and its moves and deletes
            for path, online, reason in changes:
                self.store.set_folder(os.fsencode(path), online, reason)
                if not online or reason == BACK:  # not a folder merely first seen
                    self.run.publish(FolderChanged(os.fsencode(path), online, reason))
        if not self.watcher.healthy():
            log.warning("a watcher thread stopped: rescanning every watched folder")
            self.run.rescan()
            self.watcher.restart()

    def _status_due(self, now: float) -> bool:
        """Idle is idle: the store is counted every 10 s (every 0.5 s for a progress line), or
        at once when the pause changed."""
        paused = self.run.paused()
        if paused != self._paused or now >= self._next_snapshot:
            self._paused = paused
            every = PROGRESS_SECONDS if self.mode.on_tick else SNAPSHOT_SECONDS
            self._next_snapshot = now + every
            return True
        return False

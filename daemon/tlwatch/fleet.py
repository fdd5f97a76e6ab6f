"""This host among others sharing one store (a fleet on PostgreSQL; on SQLite, a fleet of one).

Every few seconds, on the main thread's tick: the heartbeat (which renews the lease on whatever
this host has claimed), taking back to the queue what a host silent past its lease had claimed,
and, for each shared folder (`[[watch]] share`), whether this host is the one that scans it (a
fleet-wide lock: one host scans a share at a time, and another takes over when it dies; every
host uploads its files). A store that cannot be written comes out as any store fault does.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from tlwatch import __version__, logs
from tlwatch.config import Config, WatchConfig, read_db_password
from tlwatch.control import RunState
from tlwatch.events import Event, nowhere
from tlwatch.folders import Folders
from tlwatch.state import Store

log = logging.getLogger(__name__)

HEARTBEAT = 5.0  # seconds between heartbeats (a lease is many of them)


def open_store(
    config: Config, *, exclusive: bool = True, publish: Callable[[Event], None] = nowhere
) -> Store:
    """The store this host uses: SQLite in its state folder, or the fleet's PostgreSQL (its
    shared folders named, so that every host sees one row per file in them)."""
    shares = {os.fsencode(w.path): w.share for w in config.watch if w.share}
    password = read_db_password(config) if config.state.url else None
    if password:
        logs.add_secret(password)  # (libpq never says it; should anything, it is masked)
    return Store(
        config.state.path,
        url=config.state.url,
        password=password,
        exclusive=exclusive,
        publish=publish,
        shares=shares,
    )


class Fleet:
    def __init__(
        self,
        store: Store,
        config: Callable[[], Config],
        run: RunState,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.config, self.run, self.clock = store, config, run, clock
        self.rewatch: Callable[[], None] = lambda: None
        self.detail: Callable[[], Mapping[str, Any]] = dict
        self.gone: Callable[[bytes], bool] = lambda root: not os.path.isdir(root)
        self.started_at = clock()
        self._scanning: set[str] = set()  # the shares this host scans now
        self._next = 0.0

    def attach(
        self, rewatch: Callable[[], None], folders: Folders, uploading: Callable[[], list[str]]
    ) -> None:
        """What it needs of the parts built after it: how to watch the folders again (a share
        taken or lost), whether a folder is offline, and what its heartbeat tells (folders
        online, uploads in flight)."""
        self.rewatch, self.gone = rewatch, folders.gone_now

        def detail() -> dict[str, Any]:
            offline = {str(path) for path in folders.offline()}
            online = {str(w.path): str(w.path) not in offline for w in self.config().watch}
            return {"folders": online, "uploading": uploading()}

        self.detail = detail

    def tick(self, now: float) -> None:
        """Heartbeat, take-over and the shares' scans, every `HEARTBEAT` seconds (a fleet's
        store only: one host on SQLite has none of these to do)."""
        if now < self._next or not self.store.database.fleet:
            return
        config = self.config()
        self._next = now + min(HEARTBEAT, config.state.lease_seconds / 4)
        self.store.heartbeat(
            config.daemon.host_name,
            __version__,
            config.state.lease_seconds,
            self.started_at,
            self.detail(),
        )
        taken = self.store.take_over(grace=config.api.timeout_seconds)
        for name in taken:
            log.warning(
                "host %s went silent past its lease: what it had claimed is queued again", name
            )
        if taken:
            self.run.wake_all()
        self._shares(config)

    def scans(self, watch: WatchConfig) -> bool:
        """Does this host watch and scan this folder? (A share: only while it holds its lock.)"""
        return watch.share is None or watch.share in self._scanning

    def _shares(self, config: Config) -> None:
        changed = False
        for watch in config.watch:
            if watch.share is None:
                continue
            online = not self.gone(os.fsencode(watch.path))  # (if not, another host scans it)
            held = self.store.hold_lock(f"share:{watch.share}", online)
            if held and watch.share not in self._scanning:
                log.info("%s: this host scans the shared folder %r", watch.path, watch.share)
                self._scanning.add(watch.share)
                changed = True
            elif not held and watch.share in self._scanning:
                log.warning(
                    "%s: another host scans the shared folder %r now", watch.path, watch.share
                )
                self._scanning.discard(watch.share)
                changed = True
        if changed:
            self.rewatch()
            self.run.rescan()

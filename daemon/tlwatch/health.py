"""What the daemon is doing and whether it is well: the status line, the watchdog's verdict, and
the health record `tlwatch health` reads.

`Snapshot` is the one line shown on a terminal during `tlwatch scan` and in systemd's STATUS=.
`Watchdog` pings systemd while every thread is alive and making progress; a stuck one stops the
pings, so systemd restarts the daemon.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlwatch import __version__
from tlwatch.control import Heartbeats
from tlwatch.events import Event, FolderChanged, Paused, Stuck, nowhere
from tlwatch.models import FileState
from tlwatch.sdnotify import Notifier
from tlwatch.state import Store

log = logging.getLogger(__name__)

ORDER = tuple(FileState)  # every state, in the journey's order


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
        publish: Callable[[Event], None] = nowhere,
    ) -> None:
        self.notifier, self.beats, self.threads = notifier, beats, threads
        self.publish = publish
        self._next_ping = 0.0
        self._stuck: list[str] = []

    def tick(self, now: float) -> None:
        """Look for stuck threads (published when that changes); ping while there are none."""
        stuck = sorted(
            {t.name for t in self.threads() if not t.is_alive()} | {*self.beats.stalled()}
        )
        if stuck != self._stuck:
            self._stuck = stuck
            self.publish(Stuck(tuple(stuck)))
            if stuck:
                names = ", ".join(stuck)
                pings = " no more watchdog pings (systemd restarts us)" if self.pings else ""
                log.error("no progress from %s:%s", names, pings)
                self.notifier.status(f"stuck: {names}")
        interval = self.notifier.watchdog_seconds
        if stuck or interval is None or now < self._next_ping:
            return
        self.notifier.watchdog()
        self._next_ping = now + interval / 2

    @property
    def pings(self) -> bool:
        return self.notifier.watchdog_seconds is not None


HEALTH_SECONDS = 5.0  # how often the daemon writes its health record
STALE_AFTER = 3 * HEALTH_SECONDS + 5.0  # a record older than this: the daemon is not running


def record_path(store_path: Path) -> Path:
    """Where the daemon writes its health record: beside its store."""
    return store_path.with_name(store_path.name + ".health")


class HealthRecord:
    """What "healthy" means, kept from the events, and written for `tlwatch health` to read."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        limits: Callable[[], dict[str, Any]] = dict,
        host: str = "",
    ) -> None:
        self.path, self.clock, self.limits, self.host = path, clock, limits, host
        self.started_at = clock()
        self.paused: dict[str, str] = {}
        self.stuck: tuple[str, ...] = ()
        self.offline: dict[str, str] = {}
        self._next_write = 0.0

    def hear(self, event: Event) -> None:
        if isinstance(event, Paused):
            if event.on:
                self.paused[event.cause] = event.reason or event.cause
            else:
                self.paused.pop(event.cause, None)
        elif isinstance(event, Stuck):
            self.stuck = event.threads
        elif isinstance(event, FolderChanged):
            name = os.fsdecode(event.path)
            if event.online:
                self.offline.pop(name, None)
            else:
                self.offline[name] = event.reason or "offline"

    def healthy(self) -> bool:
        return not (self.paused or self.stuck or self.offline)

    def tick(self, now: float) -> None:
        if now >= self._next_write:
            self._next_write = now + HEALTH_SECONDS
            self.write()

    def record(self) -> dict[str, Any]:
        """What the record says now."""
        return {
            "pid": os.getpid(),
            "at": self.clock(),
            "started_at": self.started_at,
            "host": self.host,
            "version": __version__,
            "paused": dict(self.paused),
            "stuck": list(self.stuck),
            "offline": dict(self.offline),
            "limits": self.limits(),
        }

    def verdict(self) -> dict[str, Any]:
        """`verdict` of the record as it is now, in this (running) daemon."""
        return judged(self.record(), running=True)

    def write(self) -> None:
        record = self.record()
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            temporary.write_text(json.dumps(record))
            temporary.replace(self.path)
        except OSError as error:
            log.debug("cannot write the health record %s: %s", self.path, error.strerror)

    def remove(self) -> None:
        """At a clean stop: not running, said plainly."""
        self.path.unlink(missing_ok=True)


def verdict(path: Path, *, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """Read the daemon's health record: is it running, is it healthy, and if not, why."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"running": False, "healthy": False, "problems": ["not running"]}
    running = _alive(int(record.get("pid", 0))) and clock() - float(record["at"]) < STALE_AFTER
    return judged(record, running=running)


def judged(record: dict[str, Any], *, running: bool) -> dict[str, Any]:
    """A health record with its verdict: running, healthy, and the problems if not."""
    problems = [] if running else ["not running"]
    problems += [f"paused: {reason}" for reason in record.get("paused", {}).values()]
    problems += [f"stuck: {name}" for name in record.get("stuck", [])]
    problems += [f"offline: {p} ({why})" for p, why in record.get("offline", {}).items()]
    return {"running": running, "healthy": not problems, "problems": problems, **record}


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: it exists
    return True

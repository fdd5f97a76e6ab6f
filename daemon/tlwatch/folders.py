"""Which watched folders are online now, and how to watch them (inotify, or polling on shares).

A folder is *offline* while it is not there (never mounted yet, removed, moved away) or while the
file system it was the root of is unmounted (a card pulled out: the mount point stays, empty, on
its parent's file system). It is online again as soon as it, or a new file system at the same
path, appears; a folder replaced under the same path (`mv DCIM DCIM.old && mkdir DCIM`, a card
swapped between two checks) is watched and scanned anew. The decision is pure (`verdict`, over
`Probe`s); `Folders.check` runs it once a tick: one `stat` per folder and one for its parent.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tlwatch.config import Config, WatchConfig
from tlwatch.models import shown
from tlwatch.scan import NETWORK_FILESYSTEMS, filesystem_type
from tlwatch.watcher import Folder

log = logging.getLogger(__name__)

Stat = Callable[[str], os.stat_result]
BACK = "back online"  # the reason `check` gives a folder that was offline


@dataclass(frozen=True)
class Probe:
    """What one look at a watched path says."""

    identity: tuple[int, int] | None  # (st_dev, st_ino) of the folder; None: no folder there
    mounted: bool = False  # the root of a file system of its own (a device unlike its parent's)


def probe(path: Path, stat_of: Stat = os.stat) -> Probe:
    """Given a watched path, look at it once."""
    try:
        here = stat_of(str(path))
        parent = stat_of(str(path.parent))
    except OSError:
        return Probe(None)
    if not stat.S_ISDIR(here.st_mode):
        return Probe(None)
    return Probe((here.st_dev, here.st_ino), here.st_dev != parent.st_dev)


def verdict(last_online: Probe | None, now: Probe) -> str | None:
    """Given the folder as last seen online (None: never) and as seen now, return why it is
    offline, or None when it is online."""
    if now.identity is None:
        return "not there" if last_online is None else "gone"
    if last_online is not None and last_online.mounted and not now.mounted:
        return "unmounted"
    return None


class Folders:
    """Each watched folder's online state; `check` once a tick says whether to re-watch."""

    def __init__(
        self,
        config: Callable[[], Config],
        *,
        stat_of: Stat = os.stat,
        scans: Callable[[WatchConfig], bool] = lambda watch: True,
    ) -> None:
        self.config, self.stat_of = config, stat_of
        self.scans = scans  # a shared folder is watched by one host of a fleet at a time
        self._online: dict[Path, Probe] = {}  # last probe of each folder while online
        self._offline: dict[Path, str] = {}  # folder -> why

    def check(self) -> list[tuple[Path, bool, str | None]]:
        """Look at every watched folder; return what changed, as (folder, online, reason): why it
        is offline, or BACK when it is online again. A folder first seen, or replaced under its
        path, is a change too (watch and scan it anew), with no reason."""
        changes: list[tuple[Path, bool, str | None]] = []
        watched = {watch.path for watch in self.config().watch}
        for table in (self._online, self._offline):  # folders a reload dropped
            for path in set(table) - watched:
                del table[path]
        for watch in self.config().watch:
            now = probe(watch.path, self.stat_of)
            reason = verdict(self._online.get(watch.path), now)
            if reason is not None:
                if self._offline.get(watch.path) != reason:
                    self._offline[watch.path] = reason
                    changes.append((watch.path, False, reason))
                    self._say_offline(watch.path, reason)
                continue
            before = self._online.get(watch.path)
            back = watch.path in self._offline
            if back or before is None or before != now:
                if back or before is not None:
                    self._say_online(watch.path, before, now)
                changes.append((watch.path, True, BACK if back else None))
            self._offline.pop(watch.path, None)
            self._online[watch.path] = now
        return changes

    def _say_offline(self, path: Path, reason: str) -> None:
        if reason == "not there":
            log.warning("%s: not a folder (yet); watched once it appears", shown(str(path)))
        else:
            log.warning("%s: offline (%s); its files wait for it", shown(str(path)), reason)

    def _say_online(self, path: Path, before: Probe | None, now: Probe) -> None:
        if path in self._offline:
            log.info("%s: online again: scanning", shown(str(path)))
        elif before is not None and before.identity != now.identity:
            log.info(
                "%s: a new folder at the same path: watching and scanning it", shown(str(path))
            )

    def present(self) -> list[Folder]:
        """The online folders, each as the watcher should watch it."""
        folders = []
        for watch in self.config().watch:
            found = self._online.get(watch.path)
            if watch.path in self._offline or found is None or not self.scans(watch):
                continue
            poll = watch.poll
            if poll is None:
                poll = filesystem_type(watch.path) in NETWORK_FILESYSTEMS
            folders.append(Folder(watch.path, watch.recursive, poll, found.identity))
        return folders

    def offline(self) -> dict[Path, str]:
        """The offline folders, with why."""
        return dict(self._offline)

    def gone_now(self, root: bytes) -> bool:
        """Is the watched folder `root` offline right now? (A fresh look, from any thread: a
        file that vanished mid-upload waits for its card rather than being skipped.)"""
        path = Path(os.fsdecode(root))
        return verdict(self._online.get(path), probe(path, self.stat_of)) is not None

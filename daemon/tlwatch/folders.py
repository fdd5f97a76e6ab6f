"""Which watched folders can be watched now, and how (inotify, or polling on network shares).

A folder that is not there (a card not mounted, a share not connected) is named once, left out,
and reported by `appeared` as soon as it exists, so the runner watches and scans it at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from tlwatch.config import Config
from tlwatch.scan import NETWORK_FILESYSTEMS, filesystem_type
from tlwatch.watcher import Folder

log = logging.getLogger(__name__)


class Folders:
    def __init__(self, config: Callable[[], Config]) -> None:
        self.config = config
        self._missing: set[Path] = set()

    def present(self) -> list[Folder]:
        """The folders to watch now; a missing one is named once until it appears."""
        folders = []
        for watch in self.config().watch:
            if not watch.path.is_dir():
                if watch.path not in self._missing:
                    log.warning("%s: not a folder (yet); watched once it appears", watch.path)
                self._missing.add(watch.path)
                continue
            self._missing.discard(watch.path)
            poll = watch.poll
            if poll is None:
                poll = filesystem_type(watch.path) in NETWORK_FILESYSTEMS
            folders.append(Folder(watch.path, watch.recursive, poll))
        return folders

    def appeared(self) -> bool:
        """True when a folder that was missing is there now."""
        return any(path.is_dir() for path in self._missing)

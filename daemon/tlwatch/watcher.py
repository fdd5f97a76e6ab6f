"""Filesystem events: the only module that imports watchdog. Handlers only hand a path on.

watchdog calls handlers on its own thread, under its lock, so nothing here does any work. When the
kernel's inotify queue overflows, events are lost: `on_trouble` is told, and the runner rescans.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

log = logging.getLogger(__name__)
POLL_SECONDS = 30.0  # a polled folder is walked this often: gentle on a network share


@dataclass(frozen=True)
class Folder:
    path: Path
    recursive: bool
    poll: bool  # no inotify: network shares get no events from other hosts
    identity: tuple[int, int] | None = None  # (st_dev, st_ino): a new folder at the path is new


class _Handler(FileSystemEventHandler):
    def __init__(self, on_path: Callable[[bytes], None]) -> None:
        self._on_path = on_path

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("deleted", "opened", "closed_no_write"):
            return
        target = getattr(event, "dest_path", "") or event.src_path
        try:
            self._on_path(os.fsencode(target))
        except Exception as error:  # noqa: BLE001 - never let one path kill watchdog's thread
            log.error("cannot take the event for %r (%s); a rescan will find it", target, error)


class _OverflowSpy(logging.Filter):
    """watchdog reports a lost-events overflow only as a log line: turn it into a call."""

    def __init__(self, on_trouble: Callable[[str], None]) -> None:
        super().__init__()
        self._on_trouble = on_trouble

    def filter(self, record: logging.LogRecord) -> bool:
        if "overflow" in record.getMessage().lower():
            self._on_trouble("the inotify queue overflowed")
        return True


class Watcher:
    """Watches folders with inotify (or by polling), naming every touched path to `on_path`."""

    def __init__(
        self,
        on_path: Callable[[bytes], None],
        on_trouble: Callable[[str], None],
        *,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self._poll_seconds = poll_seconds
        self._handler = _Handler(on_path)
        self._on_trouble = on_trouble
        self._spy = _OverflowSpy(on_trouble)
        self._observers: dict[bool, BaseObserver] = {}
        self._watches: dict[Folder, tuple[BaseObserver, ObservedWatch]] = {}
        for name in ("watchdog.observers.inotify_c", "watchdog.observers.inotify"):
            logging.getLogger(name).addFilter(self._spy)

    def _observer(self, poll: bool) -> BaseObserver:
        if poll not in self._observers:
            observer = PollingObserver(timeout=self._poll_seconds) if poll else Observer()
            observer.name = "watch-poll" if poll else "watch-inotify"
            observer.daemon = True
            observer.start()
            self._observers[poll] = observer
        return self._observers[poll]

    def watch(self, folders: list[Folder]) -> None:
        """Watch exactly `folders` from now on: add the new ones, drop the others."""
        for folder in set(self._watches) - set(folders):
            observer, handle = self._watches.pop(folder)
            try:
                observer.unschedule(handle)
            except (KeyError, OSError) as error:  # its folder is gone, and the watch with it
                log.debug("%s: no watch left to drop (%r)", folder.path, error)
        for folder in folders:
            if folder not in self._watches:
                self._add(folder)

    def _add(self, folder: Folder) -> None:
        if folder.poll:
            log.info("%s: polling it (no inotify events from network file systems)", folder.path)
        poll = folder.poll
        try:
            handle = self._observer(poll).schedule(
                self._handler, str(folder.path), recursive=folder.recursive
            )
        except OSError as error:
            if poll:
                log.error("cannot watch %s: %s", folder.path, error.strerror)
                self._on_trouble(f"cannot watch {folder.path}")
                return
            log.warning(
                "cannot use inotify for %s (%s): polling it instead", folder.path, error.strerror
            )
            poll = True
            handle = self._observer(poll).schedule(
                self._handler, str(folder.path), recursive=folder.recursive
            )
        self._watches[folder] = (self._observer(poll), handle)

    def healthy(self) -> bool:
        """False once an observer thread has died (the runner then rescans and re-watches)."""
        return all(observer.is_alive() for observer in self._observers.values())

    def restart(self) -> None:
        """Throw the observers away and watch the same folders again."""
        folders = list(self._watches)
        self.stop()
        self._watches.clear()
        self.watch(folders)

    def stop(self) -> None:
        for observer in self._observers.values():
            observer.stop()
        for observer in self._observers.values():
            if observer.is_alive():
                observer.join(timeout=5)
        self._observers.clear()

    def close(self) -> None:
        self.stop()
        for name in ("watchdog.observers.inotify_c", "watchdog.observers.inotify"):
            logging.getLogger(name).removeFilter(self._spy)

"""A tiny in-process hub: what happened is published once, and whoever cares listens.

One flow, no back-and-forth: the store records a transition, then publishes it; the run state
publishes pauses; the main thread publishes folders and stuck threads; the client publishes each
answer. Metrics and the health record listen. A listener never writes the store, and a listener
that fails is logged and skipped: it never stops the publisher.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StateChanged:
    """A file moved from one state to another (committed)."""

    root: bytes
    old: str | None
    new: str
    reason: str | None
    name: bytes = b""  # below its watched folder
    asset_id: str | None = None


@dataclass(frozen=True)
class Uploaded:
    """An upload ended: `ok`, `retried` (back in the queue) or `failed` (skipped or refused)."""

    result: str
    size: int


@dataclass(frozen=True)
class AssetReady:
    """An asset became ready, `seconds` after its upload was recorded."""

    seconds: float


@dataclass(frozen=True)
class Answered:
    """The API answered a request (`code` 0: no answer at all)."""

    endpoint: str
    code: int


@dataclass(frozen=True)
class Paused:
    """Work was paused (`on`) or resumed for a cause (`key`, `store`)."""

    cause: str
    on: bool
    reason: str | None = None


@dataclass(frozen=True)
class FolderChanged:
    path: bytes
    online: bool
    reason: str | None = None


@dataclass(frozen=True)
class Stuck:
    """Threads stopped making progress (empty: all are well again)."""

    threads: tuple[str, ...]


@dataclass(frozen=True)
class ProxyMade:
    """A file's proxy or segments are made (committed): ffmpeg ran `seconds`, and `saved` bytes
    fewer than the original's go up."""

    seconds: float
    saved: int


Event = StateChanged | Uploaded | AssetReady | Answered | Paused | FolderChanged | Stuck | ProxyMade
Listener = Callable[[Event], None]


class Hub:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def listen(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def publish(self, event: Event) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception as error:  # noqa: BLE001 - a listener never stops its publisher
                log.warning("a listener failed on %s: %s", type(event).__name__, error)


def nowhere(event: Event) -> None:
    """The publisher of a part built without a hub (one-off commands, tests)."""

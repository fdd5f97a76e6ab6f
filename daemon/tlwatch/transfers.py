"""The uploads in flight as their bytes go out: for the status page (bytes sent, rate, time
left). Each upload worker sends one file at a time, so a piece sent is counted to the file its
thread is sending. Pure bookkeeping: no I/O."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class _Transfer:
    file_id: int
    name: str
    size: int
    started: float
    sent: int = 0


class Transfers:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._by_thread: dict[int, _Transfer] = {}

    def start(self, file_id: int, name: str, size: int) -> None:
        """This thread begins to send the file (`size` bytes in all)."""
        with self._lock:
            self._by_thread[threading.get_ident()] = _Transfer(file_id, name, size, self.clock())

    def sent(self, count: int) -> None:
        """`count` more bytes go out on this thread (of the file it sends, if any)."""
        with self._lock:
            found = self._by_thread.get(threading.get_ident())
            if found is not None:
                found.sent += count

    def end(self) -> None:
        """This thread's file is sent (or given up)."""
        with self._lock:
            self._by_thread.pop(threading.get_ident(), None)

    def snapshot(self) -> list[dict[str, Any]]:
        """Each upload in flight: its file, bytes sent of its size, the rate so far (bytes per
        second) and the seconds left at that rate (None until a rate is known)."""
        now = self.clock()
        with self._lock:
            found = sorted(self._by_thread.values(), key=lambda t: t.started)
            shown = []
            for transfer in found:
                took = now - transfer.started
                rate = transfer.sent / took if took > 0 and transfer.sent else None
                left = max(transfer.size - transfer.sent, 0)
                shown.append(
                    {
                        "id": transfer.file_id,
                        "file": transfer.name,
                        "size": transfer.size,
                        "sent": min(transfer.sent, transfer.size),
                        "rate": rate,
                        "eta_seconds": left / rate if rate else None,
                    }
                )
        return shown

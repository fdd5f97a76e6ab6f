"""Is the writer done? A pure decision over stat samples.

A file is complete when its signature (size, mtime, inode) has not changed for `settle_seconds`
since it was first seen or last changed. A close-write event is a hint, not proof.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tlwatch.models import Signature


@dataclass(frozen=True)
class Sample:
    signature: Signature
    since: float  # monotonic time the signature was first seen as it is


def observe(previous: Sample | None, signature: Signature, now: float) -> Sample:
    """Given the last sample and a fresh signature, return the new sample."""
    if previous is not None and previous.signature == signature:
        return previous
    return Sample(signature, now)


def due(sample: Sample, settle_seconds: float) -> float:
    """The monotonic time at which the file may be judged complete."""
    return sample.since + settle_seconds


class Settler:
    """Holds files until they stop changing. Not thread-safe: one owner thread."""

    def __init__(
        self, stat: Callable[[bytes], Signature | None], clock: Callable[[], float]
    ) -> None:
        self._stat, self._clock = stat, clock
        self._pending: dict[bytes, tuple[Sample, float]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, path: bytes, settle_seconds: float) -> None:
        """A path was named by an event or a scan: sample it (again)."""
        signature = self._stat(path)
        if signature is None:
            self._pending.pop(path, None)
            return
        previous = self._pending.get(path)
        sample = observe(previous[0] if previous else None, signature, self._clock())
        self._pending[path] = (sample, settle_seconds)

    def next_due(self) -> float | None:
        """When the earliest pending file is due for its check, or None."""
        return min((due(s, wait) for s, wait in self._pending.values()), default=None)

    def ripe(self) -> list[tuple[bytes, Signature]]:
        """Re-sample the files whose wait is over; return (and forget) those still unchanged."""
        now = self._clock()
        done = []
        for path, (sample, wait) in list(self._pending.items()):
            if due(sample, wait) > now:
                continue
            signature = self._stat(path)
            if signature is None:
                del self._pending[path]
            elif signature == sample.signature:
                del self._pending[path]
                done.append((path, signature))
            else:
                self._pending[path] = (Sample(signature, now), wait)
        return done

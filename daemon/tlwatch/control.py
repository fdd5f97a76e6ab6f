"""What the daemon's threads share while it runs, in one object; the guard every loop runs under.

`RunState` holds the stop and cancel events, the reasons work is paused, the rate-limit hold, the
folders that are offline, the inbox of paths for the intake, the wake-ups of the upload workers and
the poller, and each thread's heartbeat. Workers wait on it; nobody sleeps in a loop. `run_loop`
turns a worker's one-turn function into a thread body that survives anything (see `Guard`): a store
that cannot be written pauses all work; any other exception is logged once and the loop goes on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from tlwatch.errors import StoreUnavailable
from tlwatch.events import Event, Paused, nowhere

log = logging.getLogger(__name__)

SCAN = b""  # the inbox item that asks for a full rescan
WAKE = b"\0"  # the inbox item that only wakes the intake thread (to stop)
PAUSE_KEY = "key"  # a pause cause: the API key was rejected
PAUSE_STORE = "store"  # a pause cause: the state store cannot be written
PAUSE_USER = "user"  # a pause cause: asked for by hand (`tlwatch pause`, the status page)
UPLOADS, INDEXING = "uploads", "indexing"  # request families, each with its own rate-limit hold
ERROR_PAUSE = 1.0  # seconds a loop rests after an unexpected error
STORE_RETRY = 5.0  # seconds between attempts while the store cannot be written


class Heartbeats:
    """Each thread's last sign of progress (a loop turn, bytes sent), for the watchdog. A thread
    counts as stalled once silent for longer than the limit it was registered with."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}
        self._limits: dict[str, float] = {}

    def expect(self, name: str, within: float) -> None:
        """The thread `name` must beat at least every `within` seconds."""
        self._limits[name] = within
        self._last[name] = self._clock()

    def beat(self, name: str | None = None) -> None:
        """A sign of progress from this thread (or from `name`, for work done on its behalf)."""
        self._last[name or threading.current_thread().name] = self._clock()

    def stalled(self) -> list[str]:
        """The registered threads silent for longer than their limit."""
        now = self._clock()
        return sorted(
            name
            for name, within in list(self._limits.items())
            if now - self._last.get(name, now) > within
        )


class Wakeup:
    """A wake-up that is never lost: `wake` (called after COMMIT) bumps a generation; a thread
    notes the generation before it looks at the store, and `wait` returns at once if it moved
    on since. Nothing is missed between a look and a wait."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._generation = 0

    def seen(self) -> int:
        """The generation now: note it before looking for work."""
        with self._changed:
            return self._generation

    def wake(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def wait(self, seen: int, seconds: float) -> bool:
        """Wait until woken after `seen` (at most `seconds`); True when woken."""
        with self._changed:
            return self._changed.wait_for(lambda: self._generation != seen, seconds)


class RunState:
    """The run's shared, thread-safe state. Methods only: no attribute is set from outside."""

    def __init__(
        self, clock: Callable[[], float] = time.time, publish: Callable[[Event], None] = nowhere
    ) -> None:
        self.clock = clock
        self.publish = publish  # what happened, for the metrics and the health record
        self.stop = threading.Event()  # stop taking new work
        self.cancel = threading.Event()  # abandon uploads in flight
        self.beats = Heartbeats()
        self.inbox: queue.Queue[bytes] = queue.Queue()  # paths for the intake (SCAN, WAKE)
        self._lock = threading.Lock()
        self._pauses: dict[str, str] = {}  # why nothing is uploaded, by cause
        self._holds: dict[str, float] = {}  # family -> epoch seconds: rate limited until
        self._offline: frozenset[bytes] = frozenset()  # watched folders that are not there now
        self.work = Wakeup()  # the upload workers: a file queued, a pause lifted, a slot free
        self.polls = Wakeup()  # the poller: an asset to follow
        self.indexing = Wakeup()  # the indexer: an indexing wanted
        self.chores = Wakeup()  # the chores worker: a move, delete or metadata update due

    # ---- pauses and holds ------------------------------------------------------------------
    def pause(self, cause: str, reason: str) -> bool:
        """Hold all uploads for `cause` (e.g. "key"); True when this cause is new."""
        with self._lock:
            new = cause not in self._pauses
            self._pauses[cause] = reason
        if new:
            self.publish(Paused(cause, True, reason))
        return new

    def resume(self, cause: str) -> bool:
        """Lift the pause for `cause`; True when it was in force. Wakes every worker."""
        with self._lock:
            lifted = self._pauses.pop(cause, None) is not None
        if lifted:
            self.publish(Paused(cause, False))
            self.wake_workers()
            self.wake_poller()
            self.wake_indexer()
            self.wake_chores()
        return lifted

    def paused(self, cause: str | None = None) -> str | None:
        """Why work is paused (for `cause`, or for any), or None."""
        with self._lock:
            if cause is not None:
                return self._pauses.get(cause)
            return "; ".join(self._pauses.values()) or None

    def hold(self, until: float, family: str = UPLOADS) -> bool:
        """Rate limited: no request of this family (uploads, indexing) starts before `until`
        (epoch seconds); the other families go on. True when this starts a new hold."""
        with self._lock:
            current = self._holds.get(family, 0.0)
            self._holds[family] = max(current, until)
        return current < self.clock()

    def held(self, family: str = UPLOADS) -> float:
        """Seconds left in this family's rate-limit hold (0 when none)."""
        return max(self._holds.get(family, 0.0) - self.clock(), 0.0)

    # ---- folders ---------------------------------------------------------------------------
    def set_offline(self, roots: frozenset[bytes]) -> None:
        """The watched folders (as bytes paths) that are offline now."""
        self._offline = roots

    def offline(self) -> frozenset[bytes]:
        return self._offline

    # ---- wake-ups --------------------------------------------------------------------------
    def look_at(self, path: bytes) -> None:
        """Ask the intake to settle and sniff this path (again)."""
        self.inbox.put(path)

    def rescan(self) -> None:
        self.inbox.put(SCAN)

    def wake_workers(self) -> None:
        self.work.wake()

    def wake_poller(self) -> None:
        self.polls.wake()

    def wake_indexer(self) -> None:
        self.indexing.wake()

    def wake_chores(self) -> None:
        self.chores.wake()

    def wake_all(self) -> None:
        self.inbox.put(WAKE)
        self.wake_workers()
        self.wake_poller()
        self.wake_indexer()
        self.wake_chores()

    def sleep(self, seconds: float) -> bool:
        """A stop-aware sleep that beats every few seconds (the client's retry wait). True when
        stopping."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.beats.beat()
            if self.stop.wait(min(left, 5.0)):
                return True
        return False


class Guard:
    """Calls one turn of a loop and keeps whatever it raises from killing the thread.

    A store that cannot be written pauses all work (one log line for the whole daemon); any
    other unexpected exception is logged once per kind of failure, its traceback at DEBUG.
    With `rest`, the turn that failed is followed by a pause before the next."""

    def __init__(self, name: str, run: RunState, *, rest: bool = True) -> None:
        self.name, self.run, self.rest = name, run, rest
        self._last_error = ""

    def __call__(self, turn: Callable[[], None]) -> bool:
        """Run `turn`; True when it completed."""
        try:
            turn()
        except StoreUnavailable as error:
            if self.run.pause(PAUSE_STORE, str(error)):
                log.error("%s: holding all work, retrying every %.0f s", error, STORE_RETRY)
            self._wait(STORE_RETRY)
        except Exception as error:
            said = f"{type(error).__name__}: {error}"
            if not self.run.cancel.is_set():
                level = logging.DEBUG if said == self._last_error else logging.ERROR
                log.log(level, "%s: unexpected error (%s); carrying on", self.name, said)
                log.debug("%s: the error's traceback", self.name, exc_info=True)
            self._last_error = said
            self._wait(ERROR_PAUSE)
        else:
            self._last_error = ""
            return True
        return False

    def _wait(self, seconds: float) -> None:
        if self.rest:
            self.run.stop.wait(seconds)


def run_loop(name: str, turn: Callable[[], None], run: RunState) -> Callable[[], None]:
    """Given one turn of a worker, return a thread body that calls it under a `Guard` until the
    run stops, beating before each turn: no thread dies of an exception."""
    guard = Guard(name, run)

    def body() -> None:
        while not run.stop.is_set():
            run.beats.beat()
            guard(turn)

    return body

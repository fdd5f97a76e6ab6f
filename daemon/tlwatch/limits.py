"""Respecting the account and the uplink: pacing from the server's rate-limit headers, the upload
bandwidth cap (with a timetable), and fewer upload workers while the server struggles.

Pure but for the clocks, which are injected. Thread-safe: every worker shares one of each.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

log = logging.getLogger(__name__)

RESERVE = 1  # requests left unused in each window, for the organisation's other tools


def family_of(endpoint: str) -> str:
    """Given an endpoint name (`api.endpoint_name`), return its rate-limit family."""
    if endpoint == "assets.create":
        return "create"
    if endpoint.startswith("multipart."):
        return "multipart"
    if endpoint.startswith("indexing."):
        return "indexing"
    return "retrieve"


@dataclass(frozen=True)
class Window:
    limit: int | None = None
    remaining: int | None = None
    reset_at: float | None = None  # epoch seconds


class SharedWindows(Protocol):
    """Where a fleet keeps its windows (the store): `change` is applied to a family's window
    (None: not known yet) atomically for every host; it gives the new window and a result."""

    def update_window(
        self, family: str, change: Callable[[Window | None], tuple[Window | None, float]]
    ) -> float: ...


class Pacer:
    """Reads `X-Ratelimit-*` on every answer, per family; when a family's window is used up (but
    for a reserve), its next request waits until the window resets. The windows are the
    account's: in a fleet they are kept in the shared store (`shared`), so that every host counts
    every request."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        reserve: int = RESERVE,
        shared: SharedWindows | None = None,
    ) -> None:
        self.clock, self.reserve, self.shared = clock, reserve, shared
        self._windows: dict[str, Window] = {}  # (in a fleet: as last seen, for `snapshot`)
        self._lock = threading.Lock()

    def observe(self, family: str, headers: Mapping[str, str]) -> None:
        limit = _int(headers.get("x-ratelimit-limit"))
        remaining = _int(headers.get("x-ratelimit-remaining"))
        used = _int(headers.get("x-ratelimit-used"))
        if remaining is None and limit is not None and used is not None:
            remaining = limit - used
        reset = _float(headers.get("x-ratelimit-reset"))
        if remaining is None and reset is None:
            return
        now = self.clock()
        reset_at = _epoch(reset, now) if reset is not None else None

        def change(window: Window | None) -> tuple[Window | None, float]:
            return _observed(window or Window(), limit, remaining, reset_at), 0.0

        self._update(family, change)

    def take(self, family: str) -> float:
        """Seconds to wait before a request of this family may go (0: now, and it is counted)."""
        now, reserve = self.clock(), self.reserve

        def change(window: Window | None) -> tuple[Window | None, float]:
            return _taken(window, now, reserve)

        return self._update(family, change)

    def _update(
        self, family: str, change: Callable[[Window | None], tuple[Window | None, float]]
    ) -> float:
        if self.shared is not None:
            seen: list[Window | None] = []

            def kept(window: Window | None) -> tuple[Window | None, float]:
                new, result = change(window)
                seen.append(new)
                return new, result

            result = self.shared.update_window(family, kept)
            with self._lock:
                if seen and seen[-1] is not None:
                    self._windows[family] = seen[-1]
            return result
        with self._lock:
            new, result = change(self._windows.get(family))
            if new is not None:
                self._windows[family] = new
            return result

    def snapshot(self) -> dict[str, dict[str, float | int | None]]:
        """Each family's window as last seen, for `status` and the metrics."""
        with self._lock:
            return {
                family: {"limit": w.limit, "remaining": w.remaining, "reset_at": w.reset_at}
                for family, w in self._windows.items()
            }


def _observed(
    window: Window, limit: int | None, remaining: int | None, reset_at: float | None
) -> Window:
    """A window after an answer said `limit`, `remaining` and when it resets."""
    if remaining is not None:
        # Answers arrive out of order: within one window, the lowest count is the truth.
        same = (
            window.reset_at is not None
            and reset_at is not None
            and abs(reset_at - window.reset_at) < 1.0
        )
        if same and window.remaining is not None:
            remaining = min(remaining, window.remaining)
    return Window(
        limit if limit is not None else window.limit,
        remaining if remaining is not None else window.remaining,
        reset_at if reset_at is not None else window.reset_at,
    )


def _taken(window: Window | None, now: float, reserve: int) -> tuple[Window | None, float]:
    """A window after one request is counted in it, and how long that request waits first."""
    if window is None or window.remaining is None:
        return window, 0.0
    if window.reset_at is not None and now >= window.reset_at:
        # A new window: full, as far as we know, until the next answer says how it stands
        # (not unlimited: every thread at once would empty it).
        window = Window(window.limit, window.limit, None)
        if window.remaining is None:
            return window, 0.0
    assert window.remaining is not None
    if window.remaining > reserve:
        return Window(window.limit, window.remaining - 1, window.reset_at), 0.0
    return window, max((window.reset_at or now) - now, 0.0) + 0.05


def _int(text: str | None) -> int | None:
    try:
        return int(float(text)) if text is not None else None
    except ValueError:
        return None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _epoch(reset: float, now: float) -> float:
    """`X-Ratelimit-Reset` is documented as epoch seconds; a small number can only be a delta."""
    return reset if reset > 1e9 else now + reset


# ---- bandwidth ---------------------------------------------------------------------------------
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(i?)[bB]?\s*$")
_UNITS = {"": 0, "k": 1, "m": 2, "g": 3}


def parse_rate(text: str) -> float | None:
    """Given "4MB" (SI), "4MiB" (binary), "500kB", "off", return bytes per second (None: off).
    Raise ValueError for anything else."""
    if text.strip().lower() in ("off", "none", "unlimited"):
        return None
    matched = _SIZE.match(text)
    if matched is None:
        raise ValueError(f"not a rate: {text!r}")
    number, unit, binary = matched.groups()
    base = 1024 if binary else 1000
    rate = float(number) * float(base ** _UNITS[unit.lower()])
    if rate <= 0:
        raise ValueError(f"not a rate: {text!r}")
    return rate


@dataclass(frozen=True)
class Timetable:
    """A rate, or rates by time of day: "08:00,2MB 19:00,10MB 23:00,off" (rclone's form)."""

    entries: tuple[tuple[int, float | None], ...]  # (minute of the day, rate), sorted

    @classmethod
    def parse(cls, text: str) -> Timetable:
        parts = text.split()
        if len(parts) == 1 and "," not in parts[0]:
            return cls(((0, parse_rate(parts[0])),))
        entries = []
        for part in parts:
            when, _, rate = part.partition(",")
            hours, _, minutes = when.partition(":")
            if not (hours.isdigit() and minutes.isdigit() and rate):
                raise ValueError(f"not HH:MM,RATE: {part!r}")
            minute = int(hours) * 60 + int(minutes)
            if not (0 <= int(hours) < 24 and 0 <= int(minutes) < 60):
                raise ValueError(f"not a time of day: {when!r}")
            entries.append((minute, parse_rate(rate)))
        return cls(tuple(sorted(entries)))

    def rate_at(self, when: datetime) -> float | None:
        """The rate in force at a local time (before the first entry: the last one's, from the
        evening before)."""
        minute = when.hour * 60 + when.minute
        rate = self.entries[-1][1]
        for start, value in self.entries:
            if start <= minute:
                rate = value
        return rate


class Bandwidth:
    """One token bucket for every upload worker and every multipart chunk: over any 10 s, the
    bytes sent stay within the rate in force (a burst of at most `BURST` seconds).

    In a fleet, `fleet` (`[api] max_upload_rate_fleet`) caps every host's uploads together: the
    bucket is kept in the shared store (`shared`), and a host takes `GRANT` seconds of the rate
    from it at a time, so the database sees a few requests a second, not one per piece."""

    BURST = 0.5
    GRANT = 0.25

    def __init__(
        self,
        timetable: Timetable | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        local_time: Callable[[], datetime] = datetime.now,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.timetable, self.clock, self.local_time, self.wall = timetable, clock, local_time, wall
        self.fleet: Timetable | None = None
        self.shared: SharedWindows | None = None
        self._lock = threading.Lock()
        self._tokens = 0.0
        self._at = clock()
        self._fleet_lock = threading.Lock()
        self._granted = 0  # bytes this host may still send of what the fleet's bucket gave it

    def set(self, timetable: Timetable | None, fleet: Timetable | None = None) -> None:
        """A reload: the new limits apply from the next piece, uploads in flight go on."""
        self.timetable, self.fleet = timetable, fleet

    def rate(self) -> float | None:
        """The limit in force now (bytes per second; None: none)."""
        return self.timetable.rate_at(self.local_time()) if self.timetable else None

    def fleet_rate(self) -> float | None:
        """The fleet's limit in force now (bytes per second; None: none, or not a fleet)."""
        if self.fleet is None or self.shared is None:
            return None
        return self.fleet.rate_at(self.local_time())

    def take(self, size: int) -> float:
        """Count `size` bytes about to be sent; return how long to wait first (0: now)."""
        rate, fleet = self.rate(), self.fleet_rate()
        wait = 0.0
        if rate is not None:
            with self._lock:
                now = self.clock()
                self._tokens = min(self._tokens + (now - self._at) * rate, rate * self.BURST)
                self._at = now
                self._tokens -= size
                wait = max(-self._tokens / rate, 0.0)
        if fleet is not None:
            wait = max(wait, self._from_fleet(size, fleet))
        return wait

    def _from_fleet(self, size: int, rate: float) -> float:
        """Spend what the fleet's bucket granted this host, or take a new grant from it: how
        long to wait before sending `size` bytes."""
        assert self.shared is not None
        with self._fleet_lock:
            if self._granted >= size:
                self._granted -= size
                return 0.0
            want = max(size, int(rate * self.GRANT))
            now, burst = self.wall(), rate * self.BURST

            def change(window: Window | None) -> tuple[Window | None, float]:
                tokens, at = 0.0, now
                if window is not None and window.remaining is not None and window.reset_at:
                    tokens, at = float(window.remaining), window.reset_at
                tokens = min(tokens + max(now - at, 0.0) * rate, burst) - want
                return Window(None, int(tokens), now), max(-tokens / rate, 0.0)

            wait = self.shared.update_window(FLEET_BANDWIDTH, change)
            self._granted += want - size
            return wait


FLEET_BANDWIDTH = "bandwidth"  # the fleet's bucket, beside the rate-limit windows (its tokens
# in `remaining`, when it was last filled in `reset_at`)


# ---- concurrency -------------------------------------------------------------------------------
class Concurrency:
    """Additive increase, multiplicative decrease of the upload workers allowed to send: halved
    after repeated 429 or 5xx answers, one more after a run of successes; each change logged."""

    FAILURES = 2  # in a row, before halving
    SUCCESSES = 10  # in a row, before adding one back

    def __init__(self, most: int) -> None:
        self.most = most
        self.allowed = most
        self._failures = self._successes = 0
        self._lock = threading.Lock()

    def failed(self) -> None:
        with self._lock:
            self._successes = 0
            self._failures += 1
            if self._failures >= self.FAILURES and self.allowed > 1:
                self.allowed = max(1, self.allowed // 2)
                self._failures = 0
                log.warning("the API is struggling: %d upload worker(s) send for now", self.allowed)

    def succeeded(self) -> None:
        with self._lock:
            self._failures = 0
            self._successes += 1
            if self._successes >= self.SUCCESSES and self.allowed < self.most:
                self.allowed += 1
                self._successes = 0
                log.info("the API keeps up: %d upload worker(s) send", self.allowed)


# ---- media-minute budgets ---------------------------------------------------------------------
DAILY, TOTAL = "daily media budget", "total media budget"


def budget_verdict(
    minutes: float,
    used_today: float,
    used_total: float,
    per_day: float | None,
    total: float | None,
) -> str | None:
    """Given a file's minutes and what was used, return why it must wait (None: it may go).
    Pure. The reason starts with DAILY or TOTAL, so each hold is released by its own event."""
    if total is not None and used_total + minutes > total:
        return f"{TOTAL}: {_min(used_total)} of {_min(total)} min used"
    if per_day is not None and used_today + minutes > per_day:
        return f"{DAILY}: {_min(used_today)} of {_min(per_day)} min used"
    return None


def _min(minutes: float) -> str:
    return f"{minutes:.1f}" if minutes >= 10 else f"{minutes:.2f}"


def day_start(now: datetime) -> float:
    """The local midnight that began `now`'s day, as epoch seconds."""
    return now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()

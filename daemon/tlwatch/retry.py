"""Pure backoff policy: how long to wait before the next attempt.

Capped exponential backoff with full jitter; a wait the server asked for (`Retry-After` in seconds
or as an HTTP date, or `X-Ratelimit-Reset` in epoch seconds) wins when longer, clamped to `cap`.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Given an attempt number (1 = the first retry), return how long to wait."""

    base: float = 1.0
    cap: float = 300.0
    server_cap: float = 3600.0

    def delay(
        self,
        attempt: int,
        *,
        server_wait: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Full jitter over base·2^(attempt-1), capped; a longer server wait (clamped) wins."""
        ceiling = min(self.cap, self.base * 2.0 ** max(attempt - 1, 0))
        jittered = ceiling * rand()
        if server_wait is None:
            return jittered
        return max(jittered, min(max(server_wait, 0.0), self.server_cap))


def server_wait(
    headers: Mapping[str, str], *, now: Callable[[], float] = time.time
) -> float | None:
    """Given response headers, return the seconds the server asked us to wait, if it said."""
    retry_after = headers.get("retry-after")
    if retry_after:
        seconds = _parse_retry_after(retry_after.strip(), now())
        if seconds is not None:
            return seconds
    reset = headers.get("x-ratelimit-reset")
    if reset:
        try:
            value = float(reset)
        except ValueError:
            return None
        # Documented as epoch seconds; a small number can only be a delta.
        return value if value < 1e9 else max(value - now(), 0.0)
    return None


def _parse_retry_after(value: str, now: float) -> float | None:
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - now, 0.0)

"""The status line and the watchdog's verdict, on a fake clock."""

from __future__ import annotations

import threading

from tlwatch.control import Heartbeats
from tlwatch.health import Snapshot, Watchdog
from tlwatch.sdnotify import Notifier


class Recorder(Notifier):
    def __init__(self, watchdog_seconds: float | None) -> None:
        super().__init__({})
        self.watchdog_seconds = watchdog_seconds
        self.sent: list[str] = []

    def send(self, *fields: str) -> None:
        self.sent.extend(fields)


def test_the_status_line_counts_states_and_says_why_work_is_paused() -> None:
    snapshot = Snapshot({"queued": 2, "uploaded": 1, "ready": 5}, settling=3, paused=None)
    assert snapshot.line() == "3 settling, 2 queued, 1 processing, 5 ready"
    paused = Snapshot({}, settling=0, paused="API key rejected")
    assert paused.line() == "paused: API key rejected; nothing to do"


def test_the_watchdog_pings_at_half_its_interval_while_every_thread_beats() -> None:
    now = [0.0]
    beats = Heartbeats(clock=lambda: now[0])
    beats.expect("upload-1", 12.0)
    notifier = Recorder(watchdog_seconds=10.0)
    watchdog = Watchdog(notifier, beats, lambda: [threading.current_thread()])
    for second in range(11):
        now[0] = float(second)
        watchdog.tick(now[0])
    assert notifier.sent.count("WATCHDOG=1") == 3  # at 0, 5 and 10 s: half of the interval
    now[0] = 13.0  # upload-1 has been silent past its limit
    for second in (15.0, 20.0, 25.0):
        watchdog.tick(second)
    assert notifier.sent.count("WATCHDOG=1") == 3
    assert notifier.sent.count("STATUS=stuck: upload-1") == 1  # said once
    beats.expect("upload-1", 12.0)  # it beats again
    watchdog.tick(26.0)
    assert notifier.sent.count("WATCHDOG=1") == 4


def test_no_watchdog_no_pings() -> None:
    notifier = Recorder(watchdog_seconds=None)
    Watchdog(notifier, Heartbeats(), lambda: []).tick(100.0)
    assert notifier.sent == []

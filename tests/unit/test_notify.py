"""Notifications: what a note says, and bursts summarised (delivery through Apprise to a loopback
receiver, heartbeats and a dead endpoint, with the daemon: tests/e2e/test_notify_daemon.py)."""

from __future__ import annotations

from tlwatch.events import FolderChanged, Paused, StateChanged
from tlwatch.notify import Burst, Note, note_for


def test_notes_say_the_file_the_asset_and_the_reason() -> None:
    failed = note_for(
        StateChanged(b"/w", "uploaded", "failed", "processing failed: bad", b"a\nb.mp4", "as1")
    )
    assert failed == Note(
        "failed",
        "tlwatch: a file failed",
        "'a\\nb.mp4'\nasset: as1\nreason: processing failed: bad",
    )
    assert note_for(StateChanged(b"/w", "queued", "uploading", None, b"x")) is None
    assert note_for(Paused("key", True, "API key rejected")) == Note(
        "paused", "tlwatch: paused", "API key rejected"
    )
    back = note_for(FolderChanged(b"/media/card", True))
    assert back is not None and back.event == "online"
    why = "its aspect 3.00:1 is outside 1:2.4 to 2.4:1: sending a proxy"
    assert note_for(StateChanged(b"/w", "uploading", "fitting", why, b"wide.mov")) == Note(
        "fitted", "tlwatch: a proxy goes up instead of a file", f"'wide.mov'\nwhy: {why}"
    )


def test_twenty_failures_in_a_minute_make_at_most_three_notifications() -> None:
    now = [0.0]
    burst = Burst(clock=lambda: now[0])
    sent = []
    for number in range(20):
        now[0] = number * 2.0  # over 40 s
        note = burst.offer(Note("failed", "tlwatch: a file failed", f"f{number}.mp4"))
        if note is not None:
            sent.append(note)
        summary = burst.summary()
        if summary is not None:
            sent.append(summary)
    now[0] = 59.0
    assert burst.summary() is None  # three this minute already
    now[0] = 61.0
    summary = burst.summary()
    assert summary is not None
    sent.append(summary)
    in_first_minute = [n for n in sent if n is not summary]
    assert len(in_first_minute) == 3
    assert summary.title == "tlwatch: 17 more events"  # nothing lost: 3 + 17 = 20
    assert summary.body.startswith("17 failed")

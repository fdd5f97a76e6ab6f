"""The watcher against the installed watchdog: events become paths, a real overflow a rescan."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tlwatch.watcher import Folder, Watcher

from conftest import wait_for

QUEUE_KNOB = Path("/proc/sys/fs/inotify/max_queued_events")


def test_events_name_the_touched_paths(tmp_path: Path) -> None:
    paths: list[bytes] = []
    watcher = Watcher(paths.append, lambda what: None)
    try:
        watcher.watch([Folder(tmp_path, recursive=True, poll=False)])
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "a.mp4").write_bytes(b"x")
        wait_for(lambda: os.fsencode(tmp_path / "sub" / "a.mp4") in paths)
        assert watcher.healthy()
    finally:
        watcher.close()


def test_a_real_inotify_queue_overflow_asks_for_a_rescan(tmp_path: Path) -> None:
    """The kernel's queue is made tiny while this test's inotify instance is made (the limit is
    read then), and flooded: whatever watchdog version is installed must tell us."""
    try:
        old = QUEUE_KNOB.read_text()
        QUEUE_KNOB.write_text("16")
    except OSError as error:
        pytest.skip(f"cannot lower {QUEUE_KNOB} ({error.strerror}): needs root")
    troubles: list[str] = []
    watcher = Watcher(lambda path: None, troubles.append)
    try:
        watcher.watch(
            [Folder(tmp_path, recursive=False, poll=False)]
        )  # its emitter may start late:
        for index in range(20000):  # the knob stays low until the flood is over
            (tmp_path / f"f{index}").write_bytes(b"x")
            if troubles:
                break
        wait_for(lambda: "the inotify queue overflowed" in troubles)
    finally:
        QUEUE_KNOB.write_text(old)
        watcher.close()

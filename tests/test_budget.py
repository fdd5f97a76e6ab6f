"""Media-minute budgets: durations read locally, files held with the reason, released at local
midnight or when the budget is raised."""

from __future__ import annotations

import os
import shutil
import signal
from datetime import datetime
from pathlib import Path

import pytest

from tlwatch.control import RunState
from tlwatch.duration import duration_seconds
from tlwatch.limits import budget_verdict, day_start
from tlwatch.models import FileState, Media, Signature
from tlwatch.state import Store
from tlwatch.uploader import BudgetRelease

from conftest import FIXTURES, Daemon, wait_for


def test_durations_are_read_locally() -> None:
    assert duration_seconds(os.fsencode(FIXTURES / "clip.mp4")) == pytest.approx(1.0)
    assert duration_seconds(os.fsencode(FIXTURES / "tone.wav")) == pytest.approx(0.25)
    assert duration_seconds(os.fsencode(FIXTURES / "document.pdf")) is None


def test_the_verdict_names_the_budget_and_what_is_used() -> None:
    assert (
        budget_verdict(1.0, 11.8, 20.0, 12.6, None) == "daily media budget: 11.8 of 12.6 min used"
    )
    assert (
        budget_verdict(0.5, 1.0, 99.9, None, 100.0) == "total media budget: 99.9 of 100.0 min used"
    )
    assert budget_verdict(0.5, 1.0, 1.0, 12.6, 100.0) is None
    assert day_start(datetime(2026, 11, 28, 13, 5)) == datetime(2026, 11, 28).timestamp()


def test_a_day_held_file_goes_on_at_local_midnight(tmp_path: Path) -> None:
    now = [datetime(2026, 11, 28, 23, 59)]
    run = RunState()
    with Store(tmp_path / "s.db") as store:
        row = store.enqueue(
            b"/w/a.mp4", b"/w", Signature(1, 2, 3), Media("video/mp4", "video", "a" * 64, 60.0)
        )
        assert store.claim_next("t") is not None
        store.hold_claimed(row.id, "daily media budget: 12.60 of 12.60 min used")
        release = BudgetRelease(store, run, local_time=lambda: now[0])
        release.tick(0.0)
        assert store.get(row.id).state == FileState.HELD
        now[0] = datetime(2026, 11, 29, 0, 0)
        release.tick(0.0)
        assert store.get(row.id).state == FileState.QUEUED


def test_budgets_hold_files_and_a_raised_total_releases_them(daemon: Daemon) -> None:
    daemon.configure()
    daemon.config.write_text(
        daemon.config.read_text() + "[budget]\nmax_media_minutes_total = 0.04\n"
    )
    for number in range(3):
        (daemon.watch / f"c{number}.mp4").write_bytes(
            (FIXTURES / "clip.mp4").read_bytes() + bytes([number])
        )
    daemon.start()
    wait_for(lambda: sorted(daemon.states().values()).count("held") == 1, timeout=30)
    held = next(r for r in daemon.rows() if r.state == FileState.HELD)
    assert (held.reason or "").startswith("total media budget: 0.03 of 0.04 min used")
    assert len(daemon.sandbox.assets()) == 2
    wait_for(lambda: "in all 0.03 of 0.04 min" in daemon.command("status").stdout)
    daemon.config.write_text(daemon.config.read_text().replace("0.04", "1.0"))
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_states({f"c{n}.mp4": "ready" for n in range(3)}, timeout=30)
    assert len(daemon.sandbox.assets()) == 3
    assert daemon.stop() == 0


def test_a_one_off_upload_obeys_the_budget_too(daemon: Daemon) -> None:
    daemon.configure()
    daemon.config.write_text(
        daemon.config.read_text() + "[budget]\nmax_media_minutes_total = 0.01\n"
    )
    clip = daemon.root / "elsewhere.mp4"
    shutil.copy(FIXTURES / "clip.mp4", clip)  # one second: over a budget of 0.6 s
    result = daemon.command("upload", str(clip))
    assert result.returncode == 1
    assert "held" in result.stderr and "total media budget" in result.stderr
    assert daemon.sandbox.assets() == []

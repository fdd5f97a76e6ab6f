"""Media-minute budgets: durations read locally, the verdict, a day's hold released at local
midnight (the daemon: tests/e2e/test_budget_daemon.py)."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest

from tlwatch.control import RunState
from tlwatch.limits import budget_verdict, day_start
from tlwatch.models import FileState, Media, Signature
from tlwatch.probe import duration_seconds
from tlwatch.state import Store
from tlwatch.uploader import BudgetRelease

from conftest import FIXTURES


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

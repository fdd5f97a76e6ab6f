"""The run's shared state and the guard every thread loop runs under."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tlwatch.control import PAUSE_KEY, Heartbeats, RunState, run_loop


def test_a_loop_survives_unexpected_errors_and_names_each_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tlwatch.control.ERROR_PAUSE", 0.001)
    run = RunState()
    turns: list[int] = []

    def turn() -> None:
        turns.append(1)
        if len(turns) <= 3:
            raise ValueError("the same trouble")
        if len(turns) == 4:
            raise KeyError("another")
        run.stop.set()

    caplog.set_level("DEBUG", logger="tlwatch.control")
    thread = threading.Thread(target=run_loop("worker-x", turn, run), name="worker-x")
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(turns) == 5  # the loop went on after every error
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        "worker-x: unexpected error (ValueError: the same trouble); carrying on",
        "worker-x: unexpected error (KeyError: 'another'); carrying on",
    ]
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert tracebacks and all(r.levelname == "DEBUG" for r in tracebacks)


def test_errors_after_cancel_are_not_reported(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tlwatch.control.ERROR_PAUSE", 0.001)
    run = RunState()
    run.cancel.set()

    def turn() -> None:
        run.stop.set()
        raise OSError("connection shut down by shutdown")

    run_loop("upload-1", turn, run)()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_pauses_have_causes_and_resume_wakes_workers() -> None:
    run = RunState()
    assert run.paused() is None
    assert run.pause(PAUSE_KEY, "API key rejected")
    assert not run.pause(PAUSE_KEY, "API key rejected")  # already in force
    assert run.pause("store", "state store unwritable")
    assert run.paused() == "API key rejected; state store unwritable"
    assert run.paused(PAUSE_KEY) == "API key rejected"
    seen = run.work.seen()
    assert run.resume(PAUSE_KEY)
    assert run.work.wait(seen, 0)  # the wake-up is kept: a worker that looked before it wakes
    assert not run.resume(PAUSE_KEY)
    assert run.paused() == "state store unwritable"


def test_a_wake_up_before_the_wait_is_never_lost() -> None:
    run = RunState()
    for wakeup in (run.work, run.polls, run.indexing, run.chores):
        seen = wakeup.seen()
        assert not wakeup.wait(seen, 0)  # nothing happened since the look
        wakeup.wake()  # after the look, before the wait: an Event cleared after waiting lost it
        assert wakeup.wait(seen, 0)
        seen = wakeup.seen()
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(wakeup.wait, seen, 30)
            wakeup.wake()
            assert waiting.result(timeout=10)


def test_a_rate_limit_hold_only_grows() -> None:
    now = [100.0]
    run = RunState(clock=lambda: now[0])
    assert run.held() == 0
    assert run.hold(130.0)
    assert not run.hold(110.0)  # a shorter wait does not shorten the hold
    assert run.held() == 30.0
    now[0] = 131.0
    assert run.held() == 0
    assert run.hold(140.0)  # the old hold is over: this is a new one


def test_heartbeats_name_the_threads_past_their_limit() -> None:
    now = [0.0]
    beats = Heartbeats(clock=lambda: now[0])
    beats.expect("upload-1", 12.0)
    beats.expect("poller", 50.0)
    now[0] = 13.0
    assert beats.stalled() == ["upload-1"]
    now[0] = 51.0
    assert beats.stalled() == ["poller", "upload-1"]

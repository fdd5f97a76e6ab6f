"""The runner in-process: its loops composed, a one-pass run, and a stuck worker seen by the
watchdog (through the constructor's uploader seam)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from tlwatch.cli import main
from tlwatch.models import FileState
from tlwatch.runner import Runner
from tlwatch.sandbox import DEMO_API_KEY
from tlwatch.sdnotify import Notifier
from tlwatch.state import FileRow, Store
from tlwatch.state.engine import Engine
from tlwatch.ticks import Pass
from tlwatch.uploader import Uploader

from conftest import FIXTURES, NotifySocket, Sandbox, make_config, sha256_file, wait_for

NAMES = ("clip.mp4", "tone.wav", "photo.png")


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWELVELABS_API_KEY", DEMO_API_KEY)


def test_a_one_pass_run_uploads_everything_and_waits_for_ready(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = make_config(tmp_path, sandbox.base_url, settle_seconds=0)
    (tmp_path / "w" / "day1").mkdir(parents=True)
    for name in NAMES:
        shutil.copy(FIXTURES / name, tmp_path / "w" / "day1" / name)
    runner = Runner(config, mode=Pass(once=True, wait_ready=True))
    assert runner.run() == 0
    with Store(config.state.path, exclusive=False) as store:
        assert sorted(r.state for r in store.all()) == [FileState.READY] * 3
    sent = sorted(a["sha256"] for a in sandbox.assets())
    assert sent == sorted(sha256_file(tmp_path / "w" / "day1" / n) for n in NAMES)


def test_a_scan_opens_its_store_once_and_ends_with_its_counts(
    tmp_path: Path,
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`tlwatch scan` says what it left from the run's own store (a fleet's costs a
    connection to open: it is not opened again only to count)."""
    (tmp_path / "w").mkdir()
    for name in NAMES:
        shutil.copy(FIXTURES / name, tmp_path / "w" / name)
    config = tmp_path / "c.toml"
    config.write_text(
        f'[api]\nbase_url = "{sandbox.base_url}"\n[state]\npath = "{tmp_path / "s.db"}"\n'
        f'[[watch]]\npath = "{tmp_path / "w"}"\nsettle_seconds = 0\n'
    )
    opened: list[object] = []
    init = Engine.__init__

    def counted(self: Engine, *args: Any, **kwargs: Any) -> None:
        opened.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "__init__", counted)
    assert main(["scan", "-c", str(config), "--log-level", "warning", "--wait"]) == 0
    assert len(opened) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "done: 3 ready"


class Stalling(Uploader):
    """An upload that hangs until the test lets it go: a worker stuck in a system call."""

    release = threading.Event()

    def upload(self, row: FileRow, **_: object) -> FileRow:
        self.release.wait(60)
        raise RuntimeError("released")


def test_a_stuck_upload_worker_stops_the_watchdog_pings(tmp_path: Path, sandbox: Sandbox) -> None:
    config = make_config(
        tmp_path,
        sandbox.base_url,
        api={"timeout_seconds": 1, "max_concurrent_uploads": 1},
        settle_seconds=0,
    )
    (tmp_path / "w").mkdir()
    notify = NotifySocket(str(tmp_path / "notify.sock"))
    notifier = Notifier({"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "1000000"})
    runner = Runner(config, notifier=notifier, uploader=Stalling)
    thread = threading.Thread(target=runner.run, name="runner-under-test")
    thread.start()
    try:
        wait_for(lambda: notify.lines().count("WATCHDOG=1") >= 2)
        shutil.copy(FIXTURES / "clip.mp4", tmp_path / "w" / "a.mp4")
        stuck = "STATUS=stuck: upload-"  # (whichever worker took it)
        wait_for(lambda: any(line.startswith(stuck) for line in notify.lines()), timeout=30)
        pings = notify.lines().count("WATCHDOG=1")
        # Two more ticks of the main thread, made visible: a pause and its end each send STATUS=.
        runner.run_state.pause("test", "shown")
        wait_for(lambda: any("paused: shown" in line for line in notify.lines()))
        runner.run_state.resume("test")
        wait_for(lambda: not notify.lines()[-1].startswith("STATUS=paused"))
        assert notify.lines().count("WATCHDOG=1") == pings  # no ping while a worker is stuck
    finally:
        Stalling.release.set()
        runner.run_state.stop.set()
        thread.join(timeout=30)
        notify.close()
    assert not thread.is_alive()

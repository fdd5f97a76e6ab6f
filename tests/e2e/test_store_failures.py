"""A store that cannot be written holds all work with one log line, and resumes by itself:
nothing lost, nothing uploaded twice, no thread dead."""

from __future__ import annotations

import errno
import shutil
import subprocess
from pathlib import Path

import pytest

from tlwatch.control import PAUSE_STORE, STORE_RETRY, Guard, RunState
from tlwatch.errors import StoreUnavailable
from tlwatch.models import FileState, Media, Signature
from tlwatch.state import Store
from tlwatch.storecheck import StoreCheck

from conftest import (
    FIXTURES,
    Daemon,
    NotifySocket,
    clean_env,
    mount_tmpfs,
    sha256_file,
    wait_for,
)

MEDIA = Media("video/mp4", "video", "cd" * 32)


def fill(folder: Path) -> Path:
    """Fill the file system holding `folder` to the last byte; return the filler file."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as file:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    file.write(b"\0" * size)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
    return filler


def images(folder: Path, count: int) -> list[Path]:
    base = (FIXTURES / "photo.png").read_bytes()
    made = []
    for index in range(count):
        path = folder / f"IMG_{index:04d}.png"
        path.write_bytes(base + index.to_bytes(4, "big"))  # distinct content, still a PNG
        made.append(path)
    return made


def test_a_full_disk_under_the_store_holds_everything_until_it_is_enlarged(
    daemon: Daemon, mounts: list[Path]
) -> None:
    small = daemon.root / "state"
    mounts.append(small)
    mount_tmpfs(small, size="1m")
    notify = NotifySocket(str(daemon.root / "notify.sock"))
    try:
        daemon.start(env=clean_env(NOTIFY_SOCKET=notify.address, WATCHDOG_USEC="2000000"))
        fill(small)
        made = images(daemon.watch, 20)
        wait_for(lambda: "cannot write (disk is full): holding all work" in daemon.log())
        paused = "STATUS=paused: state store: cannot write (disk is full)"
        wait_for(lambda: any(line.startswith(paused) for line in notify.lines()))
        pings = notify.lines().count("WATCHDOG=1")
        wait_for(lambda: notify.lines().count("WATCHDOG=1") > pings + 2)  # a deliberate pause
        assert daemon.command("status").returncode == 0  # reading still works
        assert daemon.states() == {}  # nothing recorded, nothing sent, nothing lost yet
        subprocess.run(["mount", "-o", "remount,size=16m", str(small)], check=True)  # enlarged
    finally:
        notify.close()
    daemon.wait_states({p.name: "ready" for p in made}, timeout=60)
    log = daemon.log()
    assert "state store: writable again; work resumes" in log
    assert log.count("holding all work") == 1  # one line, not one per failure
    assert "Exception in thread" not in log and "Traceback" not in log
    assert daemon.assets_by_sha() == {sha256_file(p): 1 for p in made}
    assert daemon.stop() == 0


def test_an_asset_created_while_the_disk_was_full_is_adopted_not_sent_again(
    daemon: Daemon, mounts: list[Path]
) -> None:
    small = daemon.root / "state"
    mounts.append(small)
    mount_tmpfs(small, size="1m")
    daemon.sandbox.fault(endpoint="create", delay=2.0, times=1)
    daemon.start()
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "a.mp4")
    wait_for(lambda: daemon.states().get(b"a.mp4") == "uploading")
    filler = fill(small)  # the asset is being stored; its id cannot be recorded
    wait_for(lambda: "holding all work" in daemon.log())
    wait_for(lambda: len(daemon.sandbox.assets()) == 1)
    filler.unlink()  # space is freed
    daemon.wait_states({"a.mp4": "ready"}, timeout=60)
    assert "adopting it" in daemon.log()
    assert daemon.assets_by_sha() == {sha256_file(FIXTURES / "clip.mp4"): 1}
    assert daemon.stop() == 0


def test_a_read_only_remount_of_the_stores_file_system(daemon: Daemon, mounts: list[Path]) -> None:
    state = daemon.root / "state"
    mounts.append(state)
    mount_tmpfs(state, size="16m")
    daemon.start()
    refused = subprocess.run(
        ["mount", "-o", "remount,ro", str(state)], capture_output=True, text=True, check=False
    )
    if refused.returncode != 0:
        pytest.skip(
            "the kernel refuses a read-only remount while the store is open for writing "
            f"({refused.stderr.strip().splitlines()[0]}); "
            "test_a_read_only_store_holds_work_and_resumes covers what follows"
        )
    made = images(daemon.watch, 3)
    wait_for(lambda: "holding all work" in daemon.log())
    subprocess.run(["mount", "-o", "remount,rw", str(state)], check=True)
    daemon.wait_states({p.name: "ready" for p in made}, timeout=60)
    assert daemon.assets_by_sha() == {sha256_file(p): 1 for p in made}
    assert daemon.stop() == 0


def test_a_read_only_store_holds_work_and_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite's own read-only refusal (the connection set `query_only`), through the guard and
    the check that lifts the pause, in-process."""
    run = RunState()
    now = [0.0]
    with Store(tmp_path / "s.db") as store:
        row = store.enqueue(b"/w/a.mp4", b"/w", Signature(1, 2, 3), MEDIA)
        assert store.claim_next("t1") is not None  # in flight when the store goes read-only
        store._db.execute("PRAGMA query_only = 1")
        guard = Guard("upload-1", run, rest=False)
        assert not guard(lambda: store.mark_uploaded(row.id, "a1", "processing"))
        assert run.paused(PAUSE_STORE) == "state store: cannot write (the file system is read-only)"
        check = StoreCheck(
            store, run, in_flight=frozenset, grace=lambda: 60.0, clock=lambda: now[0]
        )
        check.tick()
        assert run.paused(PAUSE_STORE) is not None  # still refused
        store._db.execute("PRAGMA query_only = 0")
        check.tick()  # too soon: tries every STORE_RETRY seconds
        assert run.paused(PAUSE_STORE) is not None
        now[0] = STORE_RETRY
        check.tick()
        assert run.paused() is None
        recovered = store.get(row.id)
    assert recovered.state == FileState.QUEUED  # its look-up will adopt what the server stored
    assert recovered.next_attempt_at is not None
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        "state store: cannot write (the file system is read-only): holding all work, "
        "retrying every 5 s"
    ]
    assert run.inbox.get_nowait() == b""  # and a rescan finds what the intake could not record


def test_a_failed_write_keeps_nothing_and_logs_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    with Store(tmp_path / "s.db") as store:
        store._db.execute("PRAGMA query_only = 1")
        with pytest.raises(StoreUnavailable):
            store.enqueue(b"/w/a.mp4", b"/w", Signature(1, 2, 3), MEDIA)
        store._db.execute("PRAGMA query_only = 0")
        assert store.all() == []
    assert not [r for r in caplog.records if "new → queued" in r.getMessage()]

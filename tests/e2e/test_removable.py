"""Watched folders that go away and come back: cards swapped at the same path (real tmpfs mounts),
a card pulled out mid-upload, and a folder moved away and made anew."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import FIXTURES, Daemon, mount_tmpfs, sha256_file, unmount, wait_for


def test_a_card_swapped_at_the_same_path_is_scanned_at_once(
    daemon: Daemon, mounts: list[Path]
) -> None:
    mounts.append(daemon.watch)
    mount_tmpfs(daemon.watch)
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "A001.mp4")
    daemon.start()
    daemon.wait_states({"A001.mp4": "ready"})
    unmount(daemon.watch)  # the card is pulled out
    wait_for(lambda: "offline (unmounted)" in daemon.log())
    status = json.loads(daemon.command("status", "--json", check=True).stdout)
    assert status["offline"] == {str(daemon.watch): "unmounted"}
    mount_tmpfs(daemon.watch)  # another card, in the same slot
    shutil.copy(FIXTURES / "tone.wav", daemon.watch / "B001.wav")
    daemon.wait_states({"B001.wav": "ready", "A001.mp4": "ready"}, timeout=15)
    assert "online again: scanning" in daemon.log()
    status = json.loads(daemon.command("status", "--json", check=True).stdout)
    assert status["offline"] == {}
    sent = daemon.assets_by_sha()
    assert sent == {sha256_file(FIXTURES / "clip.mp4"): 1, sha256_file(FIXTURES / "tone.wav"): 1}
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()


def test_a_card_pulled_out_mid_upload_waits_and_is_sent_once_when_back(
    daemon: Daemon, mounts: list[Path]
) -> None:
    mounts.append(daemon.watch)
    mount_tmpfs(daemon.watch)
    daemon.sandbox.fault(endpoint="create", delay=2.0, times=1)  # the upload is in flight...
    daemon.start()
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "A001.mp4")
    wait_for(lambda: daemon.states().get(b"A001.mp4") == "uploading")
    unmount(daemon.watch)  # ...when the card is pulled (its open file still reads)
    wait_for(lambda: "its asset is deleted" in daemon.log(), timeout=15)
    wait_for(lambda: "its folder is offline" in (daemon.rows()[0].reason or ""))
    assert daemon.states()[b"A001.mp4"] == "queued"  # waiting, not failed, not skipped
    assert daemon.sandbox.assets() == []  # the half-known asset was deleted, not kept
    mount_tmpfs(daemon.watch)  # the same card, back
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "A001.mp4")
    daemon.wait_states({"A001.mp4": "ready"}, timeout=20)
    assert daemon.assets_by_sha() == {sha256_file(FIXTURES / "clip.mp4"): 1}
    events = [e[3] for e in _events(daemon, "A001.mp4")]
    assert "failed" not in events and "skipped" not in events
    assert daemon.stop() == 0


def test_a_folder_moved_away_and_made_anew_is_watched_again(daemon: Daemon) -> None:
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "old.mp4")
    daemon.start()
    daemon.wait_states({"old.mp4": "ready"})
    daemon.watch.rename(daemon.root / "watch.old")
    daemon.watch.mkdir()
    shutil.copy(FIXTURES / "tone.wav", daemon.watch / "new.wav")
    daemon.wait_states({"new.wav": "ready"}, timeout=15)  # long before the 30-minute rescan
    log = daemon.log()
    assert "offline (gone)" in log or "a new folder at the same path" in log
    assert b"old.mp4" in daemon.states()  # its record is kept
    assert daemon.stop() == 0


def test_a_duplicate_on_another_card_is_not_uploaded(daemon: Daemon, mounts: list[Path]) -> None:
    mounts.append(daemon.watch)
    mount_tmpfs(daemon.watch)
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "A001.mp4")
    daemon.start()
    daemon.wait_states({"A001.mp4": "ready"})
    unmount(daemon.watch)
    wait_for(lambda: "offline (unmounted)" in daemon.log())
    mount_tmpfs(daemon.watch)
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "B007.mp4")  # the same clip, renamed
    daemon.wait_states({"B007.mp4": "duplicate"}, timeout=15)
    assert sum(daemon.assets_by_sha().values()) == 1
    assert daemon.stop() == 0


def _events(daemon: Daemon, name: str) -> list[tuple[float, str, str | None, str, str | None]]:
    from tlwatch.state import Store

    with Store(daemon.store_path, exclusive=False) as store:
        row = next(r for r in store.all() if r.path.endswith(name.encode()))
        return store.events(row.id)

"""The intake: one settled file judged (ignored, duplicate, queued); the intake thread's turns."""

from __future__ import annotations

import hashlib
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tlwatch.control import RunState
from tlwatch.intake import Intake, IntakeWorker, sha256_of
from tlwatch.models import FileState, Signature
from tlwatch.state import Store

from conftest import FIXTURES, make_config, sha256_file


def test_intake_records_media_ignores_the_rest_and_finds_duplicates(tmp_path: Path) -> None:
    config = make_config(tmp_path, "http://127.0.0.1:9", kinds=["video"])
    (tmp_path / "w").mkdir()
    for name in ("clip.mp4", "tone.wav", "not-really.mp4"):
        shutil.copy(FIXTURES / name, tmp_path / "w" / name)
    shutil.copy(FIXTURES / "clip.mp4", tmp_path / "w" / "again.mp4")
    with Store(config.state.path) as store:
        intake = Intake(store, lambda: config)

        def take(name: str) -> FileState:
            path = os.fsencode(tmp_path / "w" / name)
            row = intake.take(path, Signature.of(os.stat(path)))
            assert row is not None
            return row.state

        assert take("clip.mp4") == FileState.QUEUED
        assert take("tone.wav") == FileState.IGNORED  # audio is not wanted in this folder
        assert take("not-really.mp4") == FileState.IGNORED
        assert take("again.mp4") == FileState.DUPLICATE
        assert take("clip.mp4") == FileState.QUEUED  # unchanged: nothing new
        assert len(store.events(store.all()[0].id)) == 1


def test_a_forced_file_outside_every_folder_is_taken_and_deduplicated(tmp_path: Path) -> None:
    config = make_config(tmp_path, "http://127.0.0.1:9", kinds=["video"])
    (tmp_path / "w").mkdir()
    shutil.copy(FIXTURES / "clip.mp4", tmp_path / "w" / "clip.mp4")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(FIXTURES / "clip.mp4", elsewhere / "copy.mp4")
    shutil.copy(FIXTURES / "tone.wav", elsewhere / "tone.wav")
    with Store(config.state.path) as store:
        intake = Intake(store, lambda: config)
        clip = os.fsencode(tmp_path / "w" / "clip.mp4")
        assert intake.take(clip, Signature.of(os.stat(clip))) is not None
        copy = os.fsencode(elsewhere / "copy.mp4")
        assert intake.take(copy, Signature.of(os.stat(copy))) is None  # not in a watched folder
        forced = intake.take(copy, Signature.of(os.stat(copy)), force=True)
        assert forced is not None and forced.state == FileState.DUPLICATE
        assert forced.root == os.fsencode(elsewhere)
        tone = os.fsencode(elsewhere / "tone.wav")
        audio = intake.take(tone, Signature.of(os.stat(tone)), force=True)
        assert audio is not None and audio.state == FileState.QUEUED  # every kind when forced


def test_a_file_that_cannot_be_read_is_named_once_per_version(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path, "http://127.0.0.1:9")
    (tmp_path / "w").mkdir()
    path = os.fsencode(tmp_path / "w" / "vanished.mp4")  # named by an event, gone when read
    with Store(config.state.path) as store:
        intake = Intake(store, lambda: config)
        for _ in range(3):
            assert intake.take(path, Signature(10, 1, 2)) is None
        assert intake.take(path, Signature(11, 1, 2)) is None  # a new version is named again
        assert store.all() == []
    warnings = [
        r for r in caplog.records if "cannot read it" in r.getMessage() and r.levelname == "WARNING"
    ]
    assert len(warnings) == 2


def test_hashing_reports_progress_and_matches_hashlib(tmp_path: Path) -> None:
    data = os.urandom((1 << 20) * 3 + 17)
    (tmp_path / "f").write_bytes(data)
    beats: list[None] = []
    assert sha256_of(os.fsencode(tmp_path / "f"), lambda: beats.append(None)) == (
        hashlib.sha256(data).hexdigest()
    )
    assert len(beats) == 4


def test_the_intake_thread_settles_then_records_and_a_scan_finds_the_rest(tmp_path: Path) -> None:
    config = make_config(tmp_path, "http://127.0.0.1:9", settle_seconds=0)
    (tmp_path / "w" / "sub").mkdir(parents=True)
    shutil.copy(FIXTURES / "clip.mp4", tmp_path / "w" / "named.mp4")
    shutil.copy(FIXTURES / "tone.wav", tmp_path / "w" / "sub" / "found.wav")
    (tmp_path / "w" / ".hidden.mp4").write_bytes(b"x")
    run = RunState()
    with Store(config.state.path) as store:
        worker = IntakeWorker(Intake(store, lambda: config), run)
        try:
            run.look_at(os.fsencode(tmp_path / "w" / "named.mp4"))
            run.look_at(os.fsencode(tmp_path / "w" / ".hidden.mp4"))
            worker.turn()
            worker.turn()
            assert worker.idle()
            assert [os.path.basename(r.path) for r in store.all()] == [b"named.mp4"]
            run.rescan()
            worker.turn()
            states = {os.path.basename(r.path): r.state for r in store.all()}
        finally:
            worker.close()
    assert states == {b"named.mp4": FileState.QUEUED, b"found.wav": FileState.QUEUED}


def test_many_files_are_read_in_the_pool_and_recorded_together(tmp_path: Path) -> None:
    config = make_config(tmp_path, "http://127.0.0.1:9")
    folder = tmp_path / "w"
    folder.mkdir()
    names = ["clip.mp4", "tone.wav", "photo.png", "not-really.mp4", "document.pdf"]
    for name in names:
        shutil.copy(FIXTURES / name, folder / name)
    shutil.copy(FIXTURES / "clip.mp4", folder / "again.mp4")
    files = [
        (os.fsencode(folder / n), Signature.of((folder / n).stat())) for n in [*names, "again.mp4"]
    ]
    with Store(config.state.path) as store, ThreadPoolExecutor(2) as pool:
        rows = Intake(store, lambda: config, pool=pool).take_many(files)
        by_name = {os.path.basename(r.path): r for r in rows if r is not None}
    assert [by_name[os.fsencode(n)].state for n in names] == [
        FileState.QUEUED,
        FileState.QUEUED,
        FileState.QUEUED,
        FileState.IGNORED,
        FileState.IGNORED,
    ]
    assert by_name[b"again.mp4"].state == FileState.DUPLICATE  # its twin, in the same batch
    assert by_name[b"clip.mp4"].sha256 == sha256_file(folder / "clip.mp4")

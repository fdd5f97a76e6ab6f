"""The intake: one settled file judged (ignored, duplicate, queued); the intake thread's turns."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tlwatch import intake as intake_module
from tlwatch.control import RunState
from tlwatch.intake import Intake, IntakeWorker, Stopped, sha256_of
from tlwatch.models import FileState, Probe, Signature
from tlwatch.state import Store

from conftest import FIXTURES, make_config, sha256_file, until_idle


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
            until_idle(worker)
            assert [os.path.basename(r.path) for r in store.all()] == [b"named.mp4"]
            run.rescan()
            until_idle(worker)
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
    assert [by_name[os.fsencode(n)].state for n in names[1:]] == [
        FileState.QUEUED,
        FileState.QUEUED,
        FileState.IGNORED,
        FileState.IGNORED,
    ]
    # Recorded as their reads finish: whichever twin came first holds the content.
    twins = {by_name[b"clip.mp4"].state, by_name[b"again.mp4"].state}
    assert twins == {FileState.QUEUED, FileState.DUPLICATE}
    assert by_name[b"clip.mp4"].sha256 == sha256_file(folder / "clip.mp4")


def test_reading_a_big_file_holds_no_store_lock_and_workers_hear_after_commit(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, "http://127.0.0.1:9")
    folder = tmp_path / "w"
    folder.mkdir()
    big = folder / "big.mp4"
    big.write_bytes((FIXTURES / "clip.mp4").read_bytes() + os.urandom(3 << 20))
    shutil.copy(FIXTURES / "tone.wav", folder / "small.wav")
    files = [(os.fsencode(p), Signature.of(p.stat())) for p in (big, folder / "small.wav")]
    writes: list[bool] = []
    told: list[list[str]] = []
    with Store(config.state.path) as store, ThreadPoolExecutor(2) as pool:

        def progress() -> None:  # while the big file is hashed, another thread writes
            writer = threading.Thread(target=lambda: (store.probe(), writes.append(True)))
            writer.start()
            writer.join(timeout=5)
            assert not writer.is_alive(), "a write waited for the hashing"

        def queued() -> None:  # told only once the row can be read from another connection
            with Store(config.state.path, exclusive=False) as reader:
                told.append(sorted(r.state.value for r in reader.all()))

        intake = Intake(store, lambda: config, pool=pool, progress=progress, queued=queued)
        rows = intake.take_many(files)
    assert all(r is not None and r.state == FileState.QUEUED for r in rows)
    assert len(writes) >= 4  # every MiB of the big file
    assert told and all(told) and told[-1] == ["queued", "queued"]


def test_a_library_error_fails_that_file_with_its_reason_not_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(tmp_path, "http://127.0.0.1:9")
    folder = tmp_path / "w"
    folder.mkdir()
    for name in ("clip.mp4", "tone.wav", "clip.mov"):
        shutil.copy(FIXTURES / name, folder / name)
    real = intake_module.probe

    def probe(path: bytes) -> Probe | None:  # pymediainfo choking on one file
        if path.endswith(b".mov"):
            raise ValueError("mediainfo could not parse it")
        return real(path)

    monkeypatch.setattr(intake_module, "probe", probe)
    files = [(os.fsencode(p), Signature.of(p.stat())) for p in sorted(folder.iterdir())]
    with Store(config.state.path) as store, ThreadPoolExecutor(2) as pool:
        intake = Intake(store, lambda: config, pool=pool)
        rows = {os.path.basename(r.path): r for r in intake.take_many(files) if r is not None}
        assert rows[b"clip.mp4"].state == FileState.QUEUED
        assert rows[b"tone.wav"].state == FileState.QUEUED
        failed = rows[b"clip.mov"]
        assert failed.state == FileState.FAILED
        assert failed.reason == "cannot read it: ValueError: mediainfo could not parse it"
        again = intake.take(os.fsencode(folder / "clip.mov"), failed.signature)
        assert again is not None and again.updated_at == failed.updated_at  # not read again
        store.retry([failed.id])  # `tlwatch retry`: read again when next seen
        monkeypatch.setattr(intake_module, "probe", real)
        path = os.fsencode(folder / "clip.mov")
        fixed = intake.take(path, Signature.of(os.stat(path)))
        assert fixed is not None and fixed.state == FileState.QUEUED


def test_hashing_gives_up_when_told_to_stop(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(os.urandom((1 << 20) * 4))
    pieces: list[None] = []

    def progress() -> None:
        pieces.append(None)
        if len(pieces) == 2:
            raise Stopped

    with pytest.raises(Stopped):
        sha256_of(os.fsencode(tmp_path / "f"), progress)
    assert len(pieces) == 2  # not one piece more


def test_a_file_claimed_for_upload_while_it_was_read_is_left_to_its_upload(tmp_path: Path) -> None:
    config = make_config(tmp_path, "http://127.0.0.1:9")
    (tmp_path / "w").mkdir()
    clip, other = tmp_path / "w" / "clip.mp4", tmp_path / "w" / "tone.wav"
    shutil.copy(FIXTURES / "clip.mp4", clip)
    shutil.copy(FIXTURES / "tone.wav", other)
    with Store(config.state.path) as store:
        intake = Intake(store, lambda: config)
        path = os.fsencode(clip)
        assert intake.take(path, Signature.of(clip.stat())) is not None
        with clip.open("ab") as file:
            file.write(b"more")  # a new version: read again...
        claims = intake.claims([(os.fsencode(p), Signature.of(p.stat())) for p in (clip, other)])
        reads = [(claim, intake_module._read(claim)) for claim in claims]
        assert store.claim_next("t1") is not None  # ...while a worker claims the old one
        rows = intake.record(reads)  # type: ignore[arg-type]
        assert [r.state if r else None for r in rows] == [FileState.UPLOADING, FileState.QUEUED]


def test_copies_and_new_versions_in_one_batch_are_judged_as_if_one_by_one(tmp_path: Path) -> None:
    """A batch asks the store once, then keeps what it learnt up to date: a copy of content
    recorded earlier in the batch is a duplicate; a file whose new version no longer holds a
    content leaves it to the next file that has it."""
    config = make_config(tmp_path, "http://127.0.0.1:9")
    folder = tmp_path / "w"
    folder.mkdir()
    (folder / "a.mp4").write_bytes((FIXTURES / "clip.mp4").read_bytes())
    with Store(config.state.path) as store:
        intake = Intake(store, lambda: config)
        first = intake.take(os.fsencode(folder / "a.mp4"), Signature.of((folder / "a.mp4").stat()))
        assert first is not None and first.state == FileState.QUEUED
        shutil.copy(FIXTURES / "tone.wav", folder / "a.mp4")  # a.mp4 now holds other content
        shutil.copy(FIXTURES / "clip.mp4", folder / "b.mp4")  # b.mp4 holds a.mp4's old content
        shutil.copy(FIXTURES / "clip.mp4", folder / "c.mp4")  # and c.mp4 too
        files = [
            (os.fsencode(folder / f"{n}.mp4"), Signature.of((folder / f"{n}.mp4").stat()))
            for n in "abc"
        ]
        claims = intake.claims(files)
        rows = intake.record([(claim, intake_module._read(claim)) for claim in claims])  # type: ignore[arg-type]
    a, b, c = rows
    assert a is not None and a.id == first.id and a.sha256 == sha256_file(FIXTURES / "tone.wav")
    assert b is not None and b.state == FileState.QUEUED  # a.mp4 holds its content no more
    assert c is not None and c.state == FileState.DUPLICATE and c.duplicate_of == b.id

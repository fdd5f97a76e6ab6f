"""The uploader through its seams: size verdicts, commit before notify, the worker's turn."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tlwatch.api import Client
from tlwatch.config import Config
from tlwatch.control import PAUSE_KEY, RunState
from tlwatch.intake import Intake, IntakeWorker
from tlwatch.models import FileState, Media, Signature
from tlwatch.sandbox import DEMO_API_KEY
from tlwatch.state import FileRow, Store
from tlwatch.uploader import Uploader, size_verdict

from conftest import FIXTURES, Sandbox, make_config, sha256_file


@pytest.fixture
def config(tmp_path: Path, sandbox: Sandbox) -> Config:
    (tmp_path / "w").mkdir()
    return make_config(tmp_path, sandbox.base_url, settle_seconds=0)


@pytest.fixture
def store(config: Config) -> Iterator[Store]:
    with Store(config.state.path) as opened:
        yield opened


@pytest.fixture
def api(sandbox: Sandbox) -> Iterator[Client]:
    with Client(DEMO_API_KEY, base_url=sandbox.base_url, timeout=5) as client:
        yield client


def queue_file(store: Store, path: Path, kind: str = "video") -> FileRow:
    media = Media("video/mp4", kind, sha256_file(path))
    return store.enqueue(
        os.fsencode(path), os.fsencode(path.parent), Signature.of(path.stat()), media
    )


def test_size_verdicts_are_pure() -> None:
    assert size_verdict("image", 32_000_001) == "images over 32 MB cannot be uploaded"
    assert size_verdict("image", 32_000_000) is None
    assert size_verdict("video", 10_000_000_001) == "over 10 GB, the largest upload the API takes"
    assert size_verdict("video", 5_000_000_000) is None


def test_an_image_over_32_mb_is_skipped_without_a_request(
    tmp_path: Path, config: Config, store: Store, api: Client, sandbox: Sandbox
) -> None:
    big = tmp_path / "w" / "huge.png"
    with big.open("wb") as file:
        file.write((FIXTURES / "photo.png").read_bytes())
        file.truncate(33_000_000)
    queue_file(store, big, kind="image")
    row = store.claim_next("t1")
    assert row is not None
    done = Uploader(store, api, lambda: config, RunState()).upload(row, fresh_token="t1")
    assert done.state == FileState.SKIPPED
    assert "32 MB" in (done.reason or "")
    assert sandbox.requests() == {}


class Watching(RunState):
    """A run state that notes the file's stored state at the moment the intake is told."""

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store
        self.seen: list[FileState | None] = []

    def look_at(self, path: bytes) -> None:
        row = self.store.by_path(path)
        self.seen.append(row.state if row else None)
        super().look_at(path)


def test_a_changed_file_is_committed_as_queued_before_the_intake_hears_of_it(
    tmp_path: Path, config: Config, store: Store, api: Client, sandbox: Sandbox
) -> None:
    clip = tmp_path / "w" / "clip.mp4"
    shutil.copy(FIXTURES / "clip.mp4", clip)
    queue_file(store, clip)
    with clip.open("ab") as file:
        file.write(b"more")  # the writer was not done after all (settle_seconds = 0)
    run = Watching(store)
    row = store.claim_next("t1")
    assert row is not None
    uploaded = Uploader(store, api, lambda: config, run).upload(row, fresh_token="t1")
    assert uploaded.state == FileState.QUEUED
    assert run.seen == [FileState.QUEUED]  # committed first, then told

    # The intake takes the named path at once and queues the new version: no wait for a rescan.
    intake = IntakeWorker(Intake(store, lambda: config), run)
    try:
        intake.turn()
    finally:
        intake.close()
    again = store.by_path(os.fsencode(clip))
    assert again is not None and again.signature == Signature.of(clip.stat())
    assert again.state == FileState.QUEUED and again.next_attempt_at is None
    assert sandbox.assets() == []


def test_a_worker_turn_uploads_the_next_file_and_wakes_the_poller(
    tmp_path: Path, config: Config, store: Store, api: Client, sandbox: Sandbox
) -> None:
    clip = tmp_path / "w" / "clip.mp4"
    shutil.copy(FIXTURES / "clip.mp4", clip)
    queued = queue_file(store, clip)
    Uploader(store, api, lambda: config, RunState()).turn()
    row = store.get(queued.id)
    assert row.state == FileState.UPLOADED
    assert [a["sha256"] for a in sandbox.assets()] == [sha256_file(clip)]
    assert [a["id"] for a in sandbox.assets()] == [row.asset_id]


class Waits(RunState):
    """A run state whose workers note how long they would wait, instead of waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait_for_work(self, seconds: float) -> None:
        self.waits.append(seconds)


def test_a_paused_or_held_worker_claims_nothing(
    tmp_path: Path, config: Config, store: Store, api: Client, sandbox: Sandbox
) -> None:
    clip = tmp_path / "w" / "clip.mp4"
    shutil.copy(FIXTURES / "clip.mp4", clip)
    queued = queue_file(store, clip)
    run = Waits()
    uploader = Uploader(store, api, lambda: config, run)
    run.pause(PAUSE_KEY, "API key rejected")
    uploader.turn()
    assert store.get(queued.id).state == FileState.QUEUED
    run.resume(PAUSE_KEY)
    run.hold(run.clock() + 60)
    uploader.turn()
    assert store.get(queued.id).state == FileState.QUEUED
    assert sandbox.requests() == {}
    assert run.waits == [5.0, 5.0]  # each turn waits, at most 5 s, then looks again


def test_an_unexpected_error_puts_the_file_back_in_the_queue(
    tmp_path: Path, config: Config, store: Store, api: Client
) -> None:
    clip = tmp_path / "w" / "clip.mp4"
    shutil.copy(FIXTURES / "clip.mp4", clip)
    queued = queue_file(store, clip)

    class Broken(Uploader):
        def upload(self, row: FileRow, *, fresh_token: str | None = None) -> FileRow:
            raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        Broken(store, api, lambda: config, RunState()).turn()
    row = store.get(queued.id)
    assert (row.state, row.reason) == (FileState.QUEUED, "unexpected error")
    assert row.next_attempt_at is not None

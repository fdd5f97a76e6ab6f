"""The poller through its seams: statuses followed to the end, after_upload, a rejected key."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tlwatch.api import Client
from tlwatch.chores import Chores
from tlwatch.control import PAUSE_KEY, RunState
from tlwatch.models import ChoreKind, FileState, Media, Signature
from tlwatch.poller import Poller
from tlwatch.sandbox import DEMO_API_KEY
from tlwatch.state import Store
from tlwatch.uploader import Uploader

from conftest import FIXTURES, Sandbox, make_config, sha256_file, wait_for


def upload(store: Store, client: Client, run: RunState, path: Path, config: object) -> int:
    media = Media("video/mp4", "video", sha256_file(path))
    row = store.enqueue(
        os.fsencode(path), os.fsencode(path.parent), Signature.of(path.stat()), media
    )
    Uploader(store, client, lambda: config, run).turn()  # type: ignore[arg-type, return-value]
    assert store.get(row.id).state == FileState.UPLOADED
    return row.id


def test_each_asset_is_followed_to_ready_and_deleted_as_configured(
    tmp_path: Path, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    config = make_config(tmp_path, sandbox.base_url, after_upload="delete")
    (tmp_path / "w").mkdir()
    clips = [tmp_path / "w" / f"c{n}.mp4" for n in range(3)]
    for n, clip in enumerate(clips):
        clip.write_bytes((FIXTURES / "clip.mp4").read_bytes() + bytes([n]))
    run = RunState()
    with Store(config.state.path) as store, Client(DEMO_API_KEY, base_url=sandbox.base_url) as api:
        ids = [upload(store, api, run, clip, config) for clip in clips]
        poller = Poller(store, api, lambda: config, run)

        def all_ready() -> bool:
            poller.poll()
            return all(store.get(i).state == FileState.READY for i in ids)

        wait_for(all_ready, timeout=15)
        assert all(clip.exists() for clip in clips)  # the poller only makes the delete owed
        chores = Chores(store, api, lambda: config, run)
        while (chore := store.claim_chore((), tuple(ChoreKind))) is not None:
            chores.do(chore)
        rows = [store.get(i) for i in ids]
    assert all(not clip.exists() for clip in clips)
    assert all(r.reason == "deleted after upload, as configured" for r in rows)
    lines = [r.getMessage() for r in caplog.records if "→ ready after" in r.getMessage()]
    assert len(lines) == 3
    counts = sandbox.requests()
    assert sum(counts.get("list", {}).values()) >= 1  # the three were asked for together
    assert "retrieve" not in counts  # never one by one


def test_a_rejected_key_pauses_the_run_and_marks_nothing(tmp_path: Path, sandbox: Sandbox) -> None:
    config = make_config(tmp_path, sandbox.base_url)
    (tmp_path / "w").mkdir()
    clip = tmp_path / "w" / "clip.mp4"
    shutil.copy(FIXTURES / "clip.mp4", clip)
    run = RunState()
    with Store(config.state.path) as store:
        with Client(DEMO_API_KEY, base_url=sandbox.base_url) as api:
            file_id = upload(store, api, run, clip, config)
        with Client("wrong-key", base_url=sandbox.base_url) as wrong:
            poller = Poller(store, wrong, lambda: config, run)
            wait_for(lambda: poller.poll() is None or run.paused(PAUSE_KEY))
        assert run.paused(PAUSE_KEY) == "API key rejected"
        assert store.get(file_id).state == FileState.UPLOADED


def test_sixty_due_assets_are_checked_in_two_list_requests(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = make_config(tmp_path, sandbox.base_url)
    now = [1_900_000_000.0]
    with (
        Store(config.state.path, clock=lambda: now[0]) as store,
        Client(DEMO_API_KEY, base_url=sandbox.base_url) as api,
    ):
        for number in range(60):
            data = (FIXTURES / "clip.mp4").read_bytes() + bytes([number])
            path = tmp_path / f"c{number}.mp4"
            path.write_bytes(data)
            asset = api.create_direct(os.fsencode(path), filename=path.name)
            media = Media("video/mp4", "video", sha256_file(path))
            row = store.enqueue(os.fsencode(path), b"", Signature.of(path.stat()), media)
            assert store.claim_next("t") is not None
            store.mark_uploaded(row.id, asset.id, "processing")
        sandbox.admin("DELETE", "/_sandbox/requests")
        now[0] += 60  # every one of them due at once
        Poller(store, api, lambda: config, RunState(), clock=lambda: now[0]).poll()
    counts = sandbox.requests()
    assert counts.get("list") == {"200": 2}  # 50 + 10
    assert "retrieve" not in counts

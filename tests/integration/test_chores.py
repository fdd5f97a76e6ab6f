"""What is owed after the upload, as rows: moves that never overwrite, deletes only of the version
that is safe on the server, chores that survive a crash and wait for their folder, and metadata
updates that fail one by one (in process, against the real sandbox)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tlwatch.api import Client
from tlwatch.chores import Chores, place
from tlwatch.config import Config
from tlwatch.control import RunState
from tlwatch.models import ChoreKind, ChoreState, FileState, Media, Signature
from tlwatch.poller import Poller
from tlwatch.sandbox import DEMO_API_KEY
from tlwatch.state import CHORE_LEGAL, Store
from tlwatch.uploader import Uploader

from conftest import FIXTURES, Sandbox, make_config, sha256_file, wait_for


@pytest.fixture
def api(sandbox: Sandbox) -> Iterator[Client]:
    with Client(DEMO_API_KEY, base_url=sandbox.base_url, timeout=5) as client:
        yield client


def setup(tmp_path: Path, sandbox: Sandbox, **watch: object) -> Config:
    (tmp_path / "w").mkdir(exist_ok=True)
    return make_config(tmp_path, sandbox.base_url, settle_seconds=0, **watch)


def write(path: Path, tail: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((FIXTURES / "clip.mp4").read_bytes() + tail)
    return path


def to_ready(store: Store, api: Client, config: Config, run: RunState, path: Path) -> int:
    """Record, upload and follow one file until ready; return its id."""
    media = Media("video/mp4", "video", sha256_file(path))
    row = store.enqueue(
        os.fsencode(path), os.fsencode(config.watch[0].path), Signature.of(path.stat()), media
    )
    Uploader(store, api, lambda: config, run).turn()
    poller = Poller(store, api, lambda: config, run)

    def ready() -> bool:
        poller.poll()
        return store.get(row.id).state == FileState.READY

    wait_for(ready, timeout=15)
    return row.id


def drain(store: Store, chores: Chores) -> None:
    """Do every chore that is due now."""
    while (chore := store.claim_chore(chores.run.offline(), tuple(ChoreKind))) is not None:
        chores.do(chore)


def test_a_move_never_overwrites_two_takes_of_one_name_both_survive(
    tmp_path: Path, sandbox: Sandbox, api: Client
) -> None:
    config = setup(tmp_path, sandbox, after_upload="move", move_to="done")
    run = RunState()
    take = tmp_path / "w" / "day1" / "take.mp4"
    with Store(config.state.path) as store:
        chores = Chores(store, api, lambda: config, run)
        first = to_ready(store, api, config, run, write(take, b"v1"))
        drain(store, chores)
        second = to_ready(store, api, config, run, write(take, b"v2"))  # the same name again
        drain(store, chores)
        rows = {store.get(first).path, store.get(second).path}
    done = tmp_path / "done" / "day1"
    assert (done / "take.mp4").read_bytes().endswith(b"v1")
    assert (done / "take (2).mp4").read_bytes().endswith(b"v2")
    assert rows == {os.fsencode(done / "take.mp4"), os.fsencode(done / "take (2).mp4")}
    assert not take.exists()


def test_place_refuses_an_existing_name_and_keeps_the_source(tmp_path: Path) -> None:
    source, target = tmp_path / "a.mp4", tmp_path / "b.mp4"
    source.write_bytes(b"mine")
    target.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        place(os.fsencode(source), os.fsencode(target))
    assert source.read_bytes() == b"mine" and target.read_bytes() == b"someone else's"


def test_a_delete_spares_a_new_version_written_under_the_same_name(
    tmp_path: Path, sandbox: Sandbox, api: Client
) -> None:
    config = setup(tmp_path, sandbox, after_upload="delete")
    run = RunState()
    take = tmp_path / "w" / "take.mp4"
    with Store(config.state.path) as store:
        file_id = to_ready(store, api, config, run, write(take, b"v1"))
        assert [c.kind for c in store.chores(ChoreState.QUEUED)] == [ChoreKind.DELETE]
        write(take, b"v2 - re-exported")  # a new version arrives before the delete is done
        v2 = Media("video/mp4", "video", sha256_file(take))
        store.enqueue(os.fsencode(take), os.fsencode(tmp_path / "w"), Signature.of(take.stat()), v2)
        drain(store, Chores(store, api, lambda: config, run))
        assert take.read_bytes().endswith(b"v2 - re-exported")
        assert store.get(file_id).state == FileState.QUEUED
        assert [(c.state, c.reason) for c in store.chores_of(file_id)] == [
            (ChoreState.DROPPED, "a new version of the file")  # dropped as it was recorded
        ]


def test_a_chore_cut_off_by_a_crash_is_done_after_the_restart(
    tmp_path: Path, sandbox: Sandbox, api: Client
) -> None:
    config = setup(tmp_path, sandbox, after_upload="move", move_to="done")
    run = RunState()
    take = write(tmp_path / "w" / "take.mp4", b"v1")
    with Store(config.state.path) as store:
        file_id = to_ready(store, api, config, run, take)
        claimed = store.claim_chore((), tuple(ChoreKind))
        assert claimed is not None
        store.chore_target(claimed, os.fsencode(tmp_path / "done" / "take.mp4"))
        (tmp_path / "done").mkdir()
        os.link(take, tmp_path / "done" / "take.mp4")  # the move had begun: then the crash
    with Store(config.state.path) as store:
        store.recover(grace=0)
        drain(store, Chores(store, api, lambda: config, run))
        row = store.get(file_id)
    assert not take.exists()
    assert os.listdir(tmp_path / "done") == ["take.mp4"]  # finished under the name it chose
    assert row.path == os.fsencode(tmp_path / "done" / "take.mp4")


def test_a_chore_waits_while_its_folder_is_offline_and_is_done_when_it_is_back(
    tmp_path: Path, sandbox: Sandbox, api: Client
) -> None:
    config = setup(tmp_path, sandbox, after_upload="delete")
    run = RunState()
    take = write(tmp_path / "w" / "take.mp4", b"v1")
    with Store(config.state.path) as store:
        to_ready(store, api, config, run, take)
        chores = Chores(store, api, lambda: config, run)
        run.set_offline(frozenset({os.fsencode(tmp_path / "w")}))
        seen = run.chores.seen()
        run.wake_chores()  # the turn below must not wait: it has been woken
        chores.turn()
        assert take.exists() and run.chores.seen() == seen + 1
        assert [c.state for c in store.all_chores()] == [ChoreState.QUEUED]
        run.set_offline(frozenset())
        chores.turn()
    assert not take.exists()


def test_one_refused_metadata_update_does_not_block_the_next(
    tmp_path: Path, sandbox: Sandbox, api: Client
) -> None:
    config = setup(tmp_path, sandbox)
    run = RunState()
    with Store(config.state.path) as store:
        first = to_ready(store, api, config, run, write(tmp_path / "w" / "a.mp4", b"a"))
        second = to_ready(store, api, config, run, write(tmp_path / "w" / "b.mp4", b"b"))
        store.want_metadata(first, {"scene": "1"})
        store.want_metadata(second, {"scene": "2"})
        sandbox.fault(endpoint="metadata_patch", status=400, code="parameter_invalid")
        drain(store, Chores(store, api, lambda: config, run))
        chores = {c.file_id: c for c in store.all_chores()}
        assert chores[first].state == ChoreState.FAILED
        assert "parameter_invalid" in (chores[first].reason or "")
        assert chores[second].state == ChoreState.DONE
        assert store.get(second).user_metadata == {"scene": "2"}
        assert store.retriable() == [first]
        assert [r.id for r in store.retry([first])] == [first]
        drain(store, Chores(store, api, lambda: config, run))
        assert store.get(first).user_metadata == {"scene": "1"}


def test_the_chore_transitions_are_the_ones_the_code_makes(tmp_path: Path) -> None:
    media = Media("video/mp4", "video", "ab" * 32)
    with Store(tmp_path / "s.db") as store:
        row = store.enqueue(b"/w/a.mp4", b"/w", Signature(1, 2, 3), media)
        assert store.claim_next("t") is not None
        store.mark_uploaded(row.id, "asset-1", "ready")
        assert store.mark_ready(row.id, after=ChoreKind.DELETE)
        chore = store.all_chores()[0]
        for pair in [
            (ChoreState.QUEUED, ChoreState.DOING),
            (ChoreState.DOING, ChoreState.FAILED),
            (ChoreState.FAILED, ChoreState.QUEUED),
            (ChoreState.DOING, ChoreState.DONE),
        ]:
            assert pair in CHORE_LEGAL
        assert (ChoreState.DONE, ChoreState.QUEUED) not in CHORE_LEGAL  # done is done
        claimed = store.claim_chore((), tuple(ChoreKind))
        assert claimed is not None and claimed.id == chore.id
        store.deleted(claimed)
        with pytest.raises(Exception, match="illegal chore transition done → queued"):
            store.requeue_chore(claimed, "again?", at=0.0)


def test_budgets_count_each_version_sent_from_a_ledger(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        media = Media("video/mp4", "video", "ab" * 32, duration=60.0)
        row = store.enqueue(b"/w/a.mp4", b"/w", Signature(1, 2, 3), media)
        assert store.claim_next("t1") is not None
        store.mark_uploaded(row.id, "asset-1", "processing")
        store.withdraw(row.id, "changed while it was sent")  # the bytes went out all the same
        assert store.claim_next("t2") is not None
        store.mark_uploaded(row.id, "asset-2", "processing")
        assert store.media_minutes(0.0) == pytest.approx(2.0)


def test_a_copy_across_file_systems_keeps_the_name_free_until_done(tmp_path: Path) -> None:
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another file system than the test's folder")
    source = tmp_path / "take.mp4"
    source.write_bytes(b"x" * 100_000)
    os.utime(source, ns=(1_000_000_000, 2_000_000_000))
    folder = Path(os.environ.get("TMPDIR_SHM", "/dev/shm")) / f"tlwatch-test-{os.getpid()}"
    folder.mkdir()
    try:
        place(os.fsencode(source), os.fsencode(folder / "take.mp4"))
        moved = folder / "take.mp4"
        assert moved.read_bytes() == b"x" * 100_000
        assert moved.stat().st_mtime_ns == 2_000_000_000
        assert not source.exists()
        assert sorted(os.listdir(folder)) == ["take.mp4"]  # no temporary left behind
    finally:
        shutil.rmtree(folder)


def test_a_sidecar_changed_during_the_upload_reaches_the_asset_after_it(
    tmp_path: Path, sandbox: Sandbox, api: Client
) -> None:
    config = setup(tmp_path, sandbox)
    run = RunState()
    clip = write(tmp_path / "w" / "a.mp4", b"a")
    now = [time.time()]
    with Store(config.state.path, clock=lambda: now[0]) as store:
        media = Media("video/mp4", "video", sha256_file(clip))
        row = store.enqueue(
            os.fsencode(clip), os.fsencode(tmp_path / "w"), Signature.of(clip.stat()), media
        )
        claimed = store.claim_next("t1")
        assert claimed is not None
        store.want_metadata(row.id, {"scene": "late"})  # while the upload is in flight
        chores = Chores(store, api, lambda: config, run, clock=lambda: now[0])
        drain(store, chores)  # it waits for the upload, and is not dropped
        assert [c.state for c in store.chores_of(row.id)] == [ChoreState.QUEUED]
        Uploader(store, api, lambda: config, run).upload(claimed, fresh_token="t1")
        [chore] = store.chores_of(row.id)
        assert chore.asset_id == store.get(row.id).asset_id  # handed the asset id it waited for
        now[0] += 60  # its next look is due
        drain(store, chores)
        asset = next(a for a in sandbox.assets() if a["id"] == chore.asset_id)
    assert asset["user_metadata"]["scene"] == "late"


def test_an_older_metadata_update_never_overwrites_a_newer_one(
    tmp_path: Path, sandbox: Sandbox, api: Client
) -> None:
    config = setup(tmp_path, sandbox)
    run = RunState()
    with Store(config.state.path) as store:
        file_id = to_ready(store, api, config, run, write(tmp_path / "w" / "a.mp4", b"a"))
        store.want_metadata(file_id, {"take": "1"})
        older = store.claim_chore((), tuple(ChoreKind))
        assert older is not None
        store.want_metadata(file_id, {"take": "2"})  # a newer one while the older is in hand
        store.requeue_chore(older, "the API was busy", at=0.0)  # the older one comes back
        drain(store, Chores(store, api, lambda: config, run))
        assert store.get(file_id).user_metadata == {"take": "2"}
        states = [(c.detail, c.state) for c in store.chores_of(file_id)]
    assert states == [('{"take": "1"}', ChoreState.DROPPED), ('{"take": "2"}', ChoreState.DONE)]


def test_a_file_at_the_chosen_name_is_taken_as_moved_only_with_the_same_content(
    tmp_path: Path, sandbox: Sandbox, api: Client
) -> None:
    config = setup(tmp_path, sandbox, after_upload="move", move_to="done")
    run = RunState()
    take = write(tmp_path / "w" / "take.mp4", b"v1")
    (tmp_path / "done").mkdir()
    decoy = tmp_path / "done" / "take.mp4"
    with Store(config.state.path) as store:
        file_id = to_ready(store, api, config, run, take)
        claimed = store.claim_chore((), tuple(ChoreKind))
        assert claimed is not None
        store.chore_target(claimed, os.fsencode(decoy))
        # Someone else's file got that name: same size and mtime, other bytes.
        decoy.write_bytes(bytes(len(take.read_bytes())))
        os.utime(decoy, ns=(take.stat().st_atime_ns, take.stat().st_mtime_ns))
        store.recover(grace=0)
        drain(store, Chores(store, api, lambda: config, run))
        row = store.get(file_id)
    assert not take.exists()
    assert (tmp_path / "done" / "take (2).mp4").read_bytes().endswith(b"v1")
    assert decoy.read_bytes().count(0) == len(decoy.read_bytes())  # left as it was
    assert row.path == os.fsencode(tmp_path / "done" / "take (2).mp4")

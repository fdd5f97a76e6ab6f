"""The uploader through its seams: size verdicts, commit before notify, the worker's turn."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tlwatch.api import Asset, Client
from tlwatch.config import Config
from tlwatch.control import PAUSE_KEY, RunState, Wakeup
from tlwatch.errors import AuthError, RateLimited
from tlwatch.intake import Intake, IntakeWorker
from tlwatch.models import FileState, Media, Signature
from tlwatch.sandbox import DEMO_API_KEY
from tlwatch.state import FileRow, Store
from tlwatch.uploader import Uploader, size_verdict

from conftest import FIXTURES, Sandbox, make_config, sha256_file, until_idle


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


def test_an_image_over_32_mb_is_sent_as_a_jpeg_or_skipped_without_a_request(
    tmp_path: Path, store: Store, api: Client, sandbox: Sandbox
) -> None:
    """As the folder says: a JPEG of it is made (`fitting`), or with proxy = "never" it is
    skipped; either way no request goes out for the original."""
    big = tmp_path / "w" / "huge.png"
    with big.open("wb") as file:
        file.write((FIXTURES / "photo.png").read_bytes())
        file.truncate(33_000_000)
    for proxy, state in (("auto", FileState.FITTING), ("never", FileState.SKIPPED)):
        config = make_config(tmp_path, sandbox.base_url, settle_seconds=0, proxy=proxy)
        queue_file(store, big, kind="image")
        row = store.claim_next("t1")
        assert row is not None
        done = Uploader(store, api, lambda c=config: c, RunState()).upload(row, fresh_token="t1")
        assert done.state == state
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
        until_idle(intake)
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
    run = RunState()
    heard: list[str] = []

    class Listening(Wakeup):
        def wake(self) -> None:  # the poller is woken once the asset id is committed
            with Store(config.state.path, exclusive=False) as reader:
                heard.append(reader.get(queued.id).state.value)
            super().wake()

    run.polls = Listening()
    seen = run.polls.seen()
    Uploader(store, api, lambda: config, run).turn()
    row = store.get(queued.id)
    assert row.state == FileState.UPLOADED
    assert [a["sha256"] for a in sandbox.assets()] == [sha256_file(clip)]
    assert [a["id"] for a in sandbox.assets()] == [row.asset_id]
    assert heard == ["uploaded"]
    assert run.polls.wait(seen, 0)  # a poller that looked before the upload wakes at once


class NotedWakeup(Wakeup):
    """A wake-up that notes how long a worker would wait, instead of waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, seen: int, seconds: float) -> bool:
        self.waits.append(seconds)
        return False


class Waits(RunState):
    """A run state whose workers note how long they would wait, instead of waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.work = self.noted = NotedWakeup()

    @property
    def waits(self) -> list[float]:
        return self.noted.waits


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
        def upload(self, row: FileRow, **_: object) -> FileRow:
            raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        Broken(store, api, lambda: config, RunState()).turn()
    row = store.get(queued.id)
    assert (row.state, row.reason) == (FileState.QUEUED, "unexpected error")
    assert row.next_attempt_at is not None


def test_queued_files_in_an_offline_folder_cost_no_claim_and_no_spin(
    tmp_path: Path, config: Config, store: Store, api: Client, sandbox: Sandbox
) -> None:
    clip = tmp_path / "w" / "clip.mp4"
    shutil.copy(FIXTURES / "clip.mp4", clip)
    queued = queue_file(store, clip)
    run = Waits()
    run.set_offline(frozenset({os.fsencode(tmp_path / "w")}))
    uploader = Uploader(store, api, lambda: config, run)
    for _ in range(3):
        uploader.turn()
    assert run.waits == [5.0, 5.0, 5.0]  # the idle wait, not a 50 ms spin
    row = store.get(queued.id)
    assert (row.state, row.attempts) == (FileState.QUEUED, 0)  # never claimed: no durable write
    run.set_offline(frozenset())
    uploader.turn()
    assert store.get(queued.id).state == FileState.UPLOADED


def test_a_file_deleted_while_it_is_sent_ends_skipped_without_an_error(
    tmp_path: Path,
    config: Config,
    store: Store,
    api: Client,
    sandbox: Sandbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clip = tmp_path / "w" / "clip.mp4"
    shutil.copy(FIXTURES / "clip.mp4", clip)
    queued = queue_file(store, clip)

    class Deleting(Client):
        def create_direct(self, path: bytes, **fields: Any) -> Asset:
            asset = super().create_direct(path, **fields)
            os.unlink(path)  # deleted while the answer was on its way back
            return asset

    with Deleting(DEMO_API_KEY, base_url=sandbox.base_url, timeout=5) as deleting:
        Uploader(store, deleting, lambda: config, RunState()).turn()
    row = store.get(queued.id)
    assert (row.state, row.reason) == (FileState.SKIPPED, "gone before it could be uploaded")
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert sandbox.assets() == []  # nothing of it stays on the server


def test_a_rebuilt_store_sends_nothing_until_the_servers_list_is_read(
    tmp_path: Path, config: Config, api: Client, sandbox: Sandbox
) -> None:
    clip = tmp_path / "w" / "clip.mp4"
    shutil.copy(FIXTURES / "clip.mp4", clip)
    with Store(config.state.path) as store:
        queue_file(store, clip)
        Uploader(store, api, lambda: config, RunState()).turn()
    config.state.path.write_bytes(b"not a database" * 100)  # the store is lost
    sandbox.fault(endpoint="list", status=500, times=50)
    with Store(config.state.path) as store:
        again = queue_file(store, clip)  # a scan finds the file again before the list is read
        run = Waits()
        Uploader(store, api, lambda: config, run).turn()
        assert store.get(again.id).state == FileState.QUEUED
        assert store.rebuilding
    with Store(config.state.path) as store:  # a restart keeps waiting for the list
        assert store.rebuilding
        sandbox.admin("DELETE", "/_sandbox/faults")
        Uploader(store, api, lambda: config, Waits()).turn()
        row = store.get(again.id)
        assert not store.rebuilding
    assert row.state == FileState.UPLOADED
    assert row.reason and row.reason.startswith("found on the server as asset")
    assert len(sandbox.assets()) == 1  # adopted, not sent again


class _SlowClaims(Store):
    """A store whose claims wait until told to go (a fleet's database, far away)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.inside = threading.Semaphore(0)  # one release per claim begun
        self.go = threading.Event()

    def claim_next(self, token: str, skip_roots: Iterable[bytes] = ()) -> FileRow | None:
        self.inside.release()
        assert self.go.wait(10)
        return super().claim_next(token, skip_roots)


def test_workers_ask_the_store_at_once_within_the_uploads_allowed(
    tmp_path: Path, config: Config, api: Client
) -> None:
    """Three workers claim at the same time, each its own file (two uploads allowed at once,
    and the spare worker); one more waits for a place (claims being made count), and the
    files in flight are told only once every claim begun is over."""
    names = ("a", "b", "c", "d")
    for name in names:
        (tmp_path / "w" / f"{name}.png").write_bytes((FIXTURES / "photo.png").read_bytes())
    with _SlowClaims(config.state.path) as store:
        for name in names:
            queue_file(store, tmp_path / "w" / f"{name}.png", "image")
        uploader = Uploader(store, api, lambda: config, RunState())
        uploader.concurrency.allowed = 2
        claimed: list[FileRow | None] = []
        workers = [
            threading.Thread(target=lambda t=f"t{i}": claimed.append(uploader._claim(t, 0)[0]))
            for i in range(3)
        ]
        for worker in workers:
            worker.start()
        assert all(store.inside.acquire(timeout=5) for _ in workers)  # all three in
        assert uploader._claim("t4", 0) == (None, None)  # no place left: not even asked
        seen: list[frozenset[int]] = []
        teller = threading.Thread(target=lambda: seen.append(uploader.in_flight()))
        teller.start()
        teller.join(timeout=0.2)
        assert teller.is_alive()  # waits for the claims begun
        store.go.set()
        for thread in (*workers, teller):
            thread.join(timeout=10)
    ids = {row.id for row in claimed if row is not None}
    assert len(ids) == 3 and seen == [frozenset(ids)]


def three_clips(tmp_path: Path, store: Store) -> list[FileRow]:
    clips = [tmp_path / "w" / f"c{n}.mp4" for n in range(3)]
    for n, clip in enumerate(clips):
        clip.write_bytes((FIXTURES / "clip.mp4").read_bytes() + bytes([n]))
    return [queue_file(store, clip) for clip in clips]


def test_a_worker_claims_its_next_file_as_it_records_the_last(
    tmp_path: Path, config: Config, store: Store, api: Client, sandbox: Sandbox
) -> None:
    """Files keep coming: each record claims the worker's next file in the same commit (its
    turn then sends it without a claim of its own); the last claims nothing."""
    rows = three_clips(tmp_path, store)
    worker = Uploader(store, api, lambda: config, RunState())
    worker.turn()
    worker.turn()
    states = [store.get(row.id).state for row in rows]
    assert states == [FileState.UPLOADED, FileState.UPLOADED, FileState.UPLOADING]
    assert worker.in_flight() == {rows[2].id}  # (claimed as the second was recorded)
    claims = store.claim_next
    store.claim_next = lambda *a: pytest.fail("claimed apart")  # type: ignore[method-assign]
    worker.turn()
    store.claim_next = claims  # type: ignore[method-assign]
    assert [store.get(row.id).state for row in rows] == [FileState.UPLOADED] * 3
    assert worker.in_flight() == frozenset()
    assert len(sandbox.assets()) == 3
    journal = [(e[2], e[3]) for e in store.events(rows[2].id) if e[1] == "state"]
    assert journal == [(None, "queued"), ("queued", "uploading"), ("uploading", "uploaded")]


def test_a_file_claimed_ahead_is_given_back_unsent_when_the_worker_may_not_go_on(
    tmp_path: Path, config: Config, store: Store, api: Client, sandbox: Sandbox
) -> None:
    rows = three_clips(tmp_path, store)
    run = RunState()
    worker = Uploader(store, api, lambda: config, run)
    worker.turn()
    ahead = store.get(rows[1].id)
    assert (ahead.state, ahead.attempts) == (FileState.UPLOADING, 1)
    run.pause("test", "paused")  # (a pause came meanwhile: the next turn sends nothing)
    worker._idle_wait = lambda *a: 0.01  # type: ignore[method-assign]
    worker.turn()
    back = store.get(rows[1].id)
    assert (back.state, back.attempts, back.upload_token) == (FileState.QUEUED, 0, None)
    assert (back.reason, len(sandbox.assets())) == ("not started: given back", 1)
    assert worker.in_flight() == frozenset()
    run.resume("test")
    for _ in range(3):  # (the second file, claiming the third; the third; nothing)
        worker.turn()
    assert [store.get(row.id).state for row in rows] == [FileState.UPLOADED] * 3
    assert len(sandbox.assets()) == 3


def test_the_daemon_gives_back_a_file_claimed_ahead_when_it_stops(
    tmp_path: Path, config: Config, store: Store, api: Client
) -> None:
    """What a stop leaves claimed ahead goes back to the queue as it was; a token an earlier
    attempt sent is kept (its asset may exist, and is looked for when the file goes)."""
    rows = three_clips(tmp_path, store)
    worker = Uploader(store, api, lambda: config, RunState())
    worker.turn()
    worker.give_back()
    back = store.get(rows[1].id)
    assert (back.state, back.attempts, back.upload_token) == (FileState.QUEUED, 0, None)
    assert worker.in_flight() == frozenset()
    taken = store.claim_next("sent-once")
    assert taken is not None
    store.unclaim(taken, "another token")  # (the token it carries is not this claim's)
    assert store.get(taken.id).upload_token == "sent-once"


def test_a_file_recorded_leaves_the_uploads_in_flight_as_its_record_commits(
    tmp_path: Path, config: Config, store: Store, api: Client
) -> None:
    """Else, until its worker's turn ends, it and the file claimed ahead both count against
    the uploads allowed at once, and another worker's record claims nothing ahead."""
    rows = three_clips(tmp_path, store)
    run = RunState()
    worker = Uploader(store, api, lambda: config, run)
    seen: list[frozenset[int]] = []
    run.wake_poller = lambda: seen.append(worker.in_flight())  # type: ignore[method-assign]
    worker.turn()
    assert seen == [{rows[1].id}]  # (the first recorded, the second claimed ahead)


class _HeldSends(Uploader):
    """Each send waits until the test lets it go; how many were sending at once is noted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.go, self.entered, self.most, self._now = (
            threading.Event(),
            threading.Semaphore(0),
            0,
            0,
        )

    def _send_now(self, row: FileRow, token: str) -> tuple[str, str]:
        self._now += 1
        self.most = max(self.most, self._now)
        self.entered.release()
        self.go.wait(10)
        self._now -= 1
        return super()._send_now(row, token)


def test_the_spare_worker_waits_for_a_slot_to_send_and_a_stop_leaves_its_file_unsent(
    tmp_path: Path, config: Config, store: Store, api: Client
) -> None:
    rows = three_clips(tmp_path, store)
    run = RunState()
    uploader = _HeldSends(store, api, lambda: config, run)
    uploader.concurrency.allowed = 1  # (and one spare worker: two files claimed)
    claimed = [store.claim_next(f"t{n}") for n in range(2)]
    done: list[FileRow] = []
    workers = [
        threading.Thread(
            target=lambda r=row: done.append(uploader.upload(r, fresh_token=r.upload_token))
        )  # type: ignore[union-attr]
        for row in claimed
    ]
    for worker in workers:
        worker.start()
    assert uploader.entered.acquire(timeout=5)  # one sends
    assert not uploader.entered.acquire(timeout=0.3)  # the other waits for its slot
    run.stop.set()  # (a stop: the one sending finishes, the one waiting goes back unsent)
    uploader.go.set()
    for worker in workers:
        worker.join(timeout=10)
    states = sorted(row.state for row in done)
    assert states == [FileState.QUEUED, FileState.UPLOADED] and uploader.most == 1
    back = next(row for row in done if row.state == FileState.QUEUED)
    assert (back.reason, back.attempts) == ("not started: given back", 0)
    assert back.upload_token is None  # (never sent: nothing to look for)
    assert store.get(rows[2].id).state == FileState.QUEUED


class _FirstRefused(Uploader):
    """The first send is refused with `error` once the test lets it go; each send notes the
    hold and the pause in force as it began."""

    def __init__(self, error: Exception, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.error, self.go, self.entered = error, threading.Event(), threading.Semaphore(0)
        self.calls: list[tuple[int, float, str | None]] = []

    def _send_now(self, row: FileRow, token: str) -> tuple[str, str]:
        first = not self.calls
        self.calls.append((row.id, self.run.held(), self.run.paused()))
        self.entered.release()
        if first:
            self.go.wait(10)
            raise self.error
        return super()._send_now(row, token)


@pytest.mark.parametrize(
    "error", [RateLimited("429", retry_after=60), AuthError("401")], ids=["429", "key"]
)
def test_a_worker_waiting_for_a_slot_sends_nothing_once_the_api_said_wait(
    tmp_path: Path, config: Config, store: Store, api: Client, error: Exception
) -> None:
    """The slot of a refused upload is let go only once its hold (or pause) is in force: the
    worker waiting for it gives its file back unsent."""
    rows = three_clips(tmp_path, store)
    uploader = _FirstRefused(error, store, api, lambda: config, RunState())
    uploader.concurrency.allowed = 1
    claimed = [store.claim_next(f"t{n}") for n in range(2)]
    workers = [
        threading.Thread(target=uploader.upload, args=(row,), kwargs={"fresh_token": f"t{n}"})
        for n, row in enumerate(claimed)
    ]
    for worker in workers:
        worker.start()
    assert uploader.entered.acquire(timeout=5)
    assert not uploader.entered.acquire(timeout=0.3)  # (the spare one waits for the slot)
    uploader.go.set()
    for worker in workers:
        worker.join(timeout=15)
    assert len(uploader.calls) == 1, f"sent during the hold: {uploader.calls}"
    refused = uploader.calls[0][0]
    second = store.get(next(row.id for row in rows[:2] if row.id != refused))
    assert (second.state, second.reason, second.upload_token) == (
        FileState.QUEUED,
        "not started: given back",
        None,
    )


class _ChangedWhileSent(Uploader):
    """The file grows while it is sent; while its asset is being deleted, another worker looks
    for work."""

    taken: list[FileRow | None]

    def _send_now(self, row: FileRow, token: str) -> tuple[str, str]:
        sent = super()._send_now(row, token)
        with open(row.path, "ab") as file:
            file.write(b"more")
        return sent

    def _discard(self, asset_id: str) -> None:
        other = threading.Thread(target=lambda: self.taken.append(self.store.claim_next("t9")))
        other.start()
        other.join()
        super()._discard(asset_id)


def test_a_file_changed_while_sent_is_not_taken_by_another_worker_meanwhile(
    tmp_path: Path, config: Config, store: Store, api: Client, sandbox: Sandbox
) -> None:
    """Withdrawn (its asset deleted), it waits to settle: another worker claiming it then would
    be undone by this one's requeue, its upload under way."""
    clip = tmp_path / "w" / "c.mp4"
    clip.write_bytes((FIXTURES / "clip.mp4").read_bytes())
    row = queue_file(store, clip)
    uploader = _ChangedWhileSent(store, api, lambda: config, RunState())
    uploader.taken = []
    claimed = store.claim_next("t1")
    assert claimed is not None
    done = uploader.upload(claimed, fresh_token="t1")
    assert uploader.taken == [None]  # (not due while this worker still handles it)
    assert (done.state, done.upload_token) == (FileState.QUEUED, None)
    assert store.get(row.id).next_attempt_at is not None
    assert sandbox.assets() == []  # (the asset of the half-read file: deleted)

"""Several hosts on one PostgreSQL store (a real server): one row per file of a shared folder,
claims that never overlap, leases that run out, and fencing of a host that came back late."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgserver import Server

from tlwatch.api import Asset, Client
from tlwatch.control import RunState
from tlwatch.errors import LeaseLost, RecordedMeanwhile, StoreError
from tlwatch.intake import Intake
from tlwatch.models import FileState, Media, Signature
from tlwatch.poller import Poller
from tlwatch.state import FileRow, Store
from tlwatch.state.postgres import Postgres

from conftest import FIXTURES, make_config, sha256_file

MEDIA = Media("video/mp4", "video", "ab" * 32, duration=1.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def url(pg_server: Server) -> str:
    return pg_server.database()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hosts(tmp_path: Path, url: str, clock: Clock) -> Iterator[tuple[Store, Store]]:
    """Two hosts: each its own state folder; both mount the share `nas1`, at different paths."""
    a = Store(tmp_path / "a" / "s.db", url=url, clock=clock, shares={b"/mnt/nas": "nas1"})
    b = Store(tmp_path / "b" / "s.db", url=url, clock=clock, shares={b"/Volumes/NAS": "nas1"})
    with a, b:
        assert a.host != b.host  # each made its own id
        yield a, b


def sig(n: int) -> Signature:
    return Signature(n, n, n)


def test_a_shared_file_is_one_row_and_each_hosts_own_path_is_its_own(
    hosts: tuple[Store, Store],
) -> None:
    a, b = hosts
    a.enqueue(b"/mnt/nas/day1/clip.mp4", b"/mnt/nas", sig(1), MEDIA)
    seen_by_b = b.by_path(b"/Volumes/NAS/day1/clip.mp4")
    assert seen_by_b is not None and seen_by_b.root == b"/Volumes/NAS"
    assert b.known_in(b"/Volumes/NAS/day1") == {b"/Volumes/NAS/day1/clip.mp4": (1, 1, 1)}
    # The same absolute path on two hosts is two files.
    a.enqueue(b"/srv/cards/A001.mov", b"/srv/cards", sig(2), MEDIA)
    b.enqueue(b"/srv/cards/A001.mov", b"/srv/cards", sig(3), MEDIA)
    assert len(a.all()) == 3
    assert a.by_path(b"/srv/cards/A001.mov").size == 2  # type: ignore[union-attr]
    assert b.by_path(b"/srv/cards/A001.mov").size == 3  # type: ignore[union-attr]


def test_a_host_claims_only_what_it_can_read_and_never_what_another_holds(
    hosts: tuple[Store, Store],
) -> None:
    a, b = hosts
    a.enqueue(b"/srv/cards/only-a.mov", b"/srv/cards", sig(1), MEDIA)
    for n in range(20):
        a.enqueue(f"/mnt/nas/{n}.mp4".encode(), b"/mnt/nas", sig(10 + n), MEDIA)
    taken: dict[str, list[bytes]] = {"a": [], "b": []}

    def work(name: str, store: Store) -> None:
        while (row := store.claim_next(f"token-{name}")) is not None:
            taken[name].append(row.path)

    threads = [threading.Thread(target=work, args=item) for item in (("a", a), ("b", b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    names = [p.rsplit(b"/", 1)[1] for p in taken["a"] + taken["b"]]
    assert sorted(names) == sorted([b"only-a.mov", *(f"{n}.mp4".encode() for n in range(20))])
    assert b"/srv/cards/only-a.mov" in taken["a"]  # b cannot read it: never b's
    assert all(p.startswith(b"/Volumes/NAS/") for p in taken["b"])


def test_a_silent_host_loses_its_claim_and_its_late_writes_are_refused(
    hosts: tuple[Store, Store], clock: Clock
) -> None:
    a, b = hosts
    row = a.enqueue(b"/mnt/nas/clip.mp4", b"/mnt/nas", sig(1), MEDIA)
    a.heartbeat("a", "1", 60.0, clock.now, {})
    b.heartbeat("b", "1", 60.0, clock.now, {})
    claimed = a.claim_next("token-a")
    assert claimed is not None and claimed.lease_host == a.host
    clock.now += 30
    b.heartbeat("b", "1", 60.0, clock.now, {})
    assert b.take_over() == []  # a is late, not lost
    clock.now += 40  # a has been silent 70 s, past its 60 s lease
    b.heartbeat("b", "1", 60.0, clock.now, {})
    assert b.take_over() == ["a"]
    again = b.claim_next("token-b")
    assert again is not None and again.id == row.id
    assert again.upload_token == "token-a"  # looked for on the server by a's token first
    assert again.lease_epoch > claimed.lease_epoch
    with pytest.raises(LeaseLost):  # a wakes up and would record its upload over b's
        a.mark_uploaded(row.id, "asset-of-a", "processing")
    b.mark_uploaded(row.id, "asset-of-b", "processing")
    assert a.get(row.id).asset_id == "asset-of-b"
    assert a.get(row.id).state == FileState.UPLOADED


def test_a_file_given_back_after_another_host_took_it_over_is_left_to_that_host(
    hosts: tuple[Store, Store], clock: Clock
) -> None:
    """A stopping host gives back what its workers claimed ahead, from its main thread: that
    write carries the claim's fence too, else it would requeue the file under the host that
    took it over, and drop the token that host is sending with (a second upload)."""
    a, b = hosts
    row = a.enqueue(b"/mnt/nas/clip.mp4", b"/mnt/nas", sig(1), MEDIA)
    a.heartbeat("a", "1", 60.0, clock.now, {})
    taken: list[FileRow | None] = []
    worker = threading.Thread(target=lambda: taken.append(a.claim_next("token-a")))
    worker.start()
    worker.join()
    claimed = taken[0]
    assert claimed is not None
    clock.now += 70  # a silent past its lease (its stop outlasted it)
    b.heartbeat("b", "1", 60.0, clock.now, {})
    assert b.take_over() == ["a"]
    again = b.claim_next("token-b")
    assert again is not None and again.upload_token == "token-a"
    with pytest.raises(LeaseLost):
        a.unclaim(claimed, "token-a")
    kept = b.get(row.id)
    assert (kept.state, kept.upload_token, kept.lease_host) == ("uploading", "token-a", b.host)
    b.mark_uploaded(row.id, "asset-of-b", "processing")  # (b's claim holds)


def test_a_restart_recovers_only_its_own_interrupted_uploads(
    hosts: tuple[Store, Store], clock: Clock
) -> None:
    a, b = hosts
    mine = a.enqueue(b"/mnt/nas/a.mp4", b"/mnt/nas", sig(1), MEDIA)
    theirs = a.enqueue(b"/mnt/nas/b.mp4", b"/mnt/nas", sig(2), MEDIA)
    assert a.claim_next("t1") is not None
    assert b.claim_next("t2") is not None
    a.recover(grace=0)
    assert a.get(mine.id).state == FileState.QUEUED
    assert a.get(theirs.id).state == FileState.UPLOADING  # b's upload goes on


def test_migrations_run_once_whoever_starts_first(tmp_path: Path, url: str) -> None:
    opened: list[Store] = []
    errors: list[BaseException] = []

    def start(n: int) -> None:
        try:
            opened.append(Store(tmp_path / str(n) / "s.db", url=url))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=start, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for store in opened:
        store.close()
    assert len({store.host for store in opened}) == 4


def test_the_rate_limit_window_is_counted_by_every_host(hosts: tuple[Store, Store]) -> None:
    """Two hosts' pacers share the account's window: 5 requests left (1 kept in reserve) go
    out four times in all, whichever host sends them, and the fifth waits for the reset."""
    from tlwatch.limits import Pacer

    a, b = hosts
    now = [1000.0]
    pacers = [Pacer(clock=lambda: now[0], shared=store) for store in (a, b)]
    pacers[0].observe("create", {"x-ratelimit-limit": "5", "x-ratelimit-remaining": "5",
                                 "x-ratelimit-reset": "10"})  # fmt: skip
    waits = [pacers[n % 2].take("create") for n in range(5)]
    assert waits[:4] == [0.0, 0.0, 0.0, 0.0]
    assert waits[4] == pytest.approx(10.05)
    now[0] = 1010.5  # a new window: full again, for both
    assert pacers[1].take("create") == 0.0
    assert pacers[1].snapshot()["create"]["remaining"] == 4  # as host b last saw it


def test_the_fleet_upload_rate_is_one_bucket_for_every_host(hosts: tuple[Store, Store]) -> None:
    """`[api] max_upload_rate_fleet`: what one host sends, the other waits for; each host takes
    a quarter second's worth at a time, and spends it without asking again."""
    from tlwatch.limits import Bandwidth, Timetable

    a, b = hosts
    now = [1000.0]
    buckets = []
    for store in (a, b):
        bucket = Bandwidth(None, wall=lambda: now[0])
        bucket.set(None, Timetable.parse("1000B"))
        bucket.shared = store
        buckets.append(bucket)
    assert buckets[0].take(100) == pytest.approx(0.25)  # a grant of 250 bytes: 0.25 s of it
    assert buckets[0].take(100) == 0.0  # spent from the grant
    assert buckets[1].take(100) == pytest.approx(0.5)  # b's grant comes after a's
    now[0] += 10.0  # a full bucket again (a burst of half a second at most)
    assert buckets[1].take(100) == 0.0  # (its grant's rest)
    assert buckets[0].take(100) == 0.0  # (its grant's rest)
    assert buckets[0].take(100) == pytest.approx(0.0)  # a new grant, from the refilled bucket
    assert buckets[1].take(500) == pytest.approx(0.25, abs=0.01)  # 250 + 500 over 500 of burst


def test_a_stale_worker_is_refused_even_when_its_own_host_claimed_the_file_again(
    hosts: tuple[Store, Store], clock: Clock
) -> None:
    """The fence is the claim of the thread that made it: another worker of the same host
    taking the file again does not let the first one write."""
    a, b = hosts
    row = a.enqueue(b"/mnt/nas/clip.mp4", b"/mnt/nas", sig(1), MEDIA)
    a.heartbeat("a", "1", 60.0, clock.now, {})
    claimed, go_on = threading.Event(), threading.Event()
    said: list[BaseException] = []

    def first_worker() -> None:
        assert a.claim_next("t1") is not None
        claimed.set()
        go_on.wait(timeout=10)
        try:  # it wakes up late, with its old claim
            a.mark_uploaded(row.id, "stale", "processing")
        except LeaseLost as error:
            said.append(error)

    worker = threading.Thread(target=first_worker)
    worker.start()
    claimed.wait(timeout=10)
    clock.now += 70
    b.heartbeat("b", "1", 60.0, clock.now, {})
    assert b.take_over() == ["a"]
    assert a.claim_next("t2") is not None  # a's other worker (this thread) takes it again
    go_on.set()
    worker.join()
    assert len(said) == 1
    a.mark_uploaded(row.id, "fresh", "processing")  # this thread's claim holds
    assert a.get(row.id).asset_id == "fresh"


def test_a_chore_taken_over_is_not_recorded_by_the_host_that_lost_it(
    hosts: tuple[Store, Store], clock: Clock
) -> None:
    from tlwatch.models import ChoreKind

    a, b = hosts
    row = a.enqueue(b"/mnt/nas/clip.mp4", b"/mnt/nas", sig(1), MEDIA)
    assert a.claim_next("t") is not None
    a.mark_uploaded(row.id, "asset", "ready")
    assert a.mark_ready(row.id, after=ChoreKind.DELETE)
    a.heartbeat("a", "1", 60.0, clock.now, {})
    chore = a.claim_chore([], [ChoreKind.DELETE])
    assert chore is not None and chore.lease_host == a.host
    clock.now += 70
    b.heartbeat("b", "1", 60.0, clock.now, {})
    assert b.take_over() == ["a"]
    with pytest.raises(LeaseLost):
        a.deleted(chore)
    again = b.claim_chore([], [ChoreKind.DELETE])
    assert again is not None and again.id == chore.id and again.lease_host == b.host
    b.deleted(again)


def test_every_path_a_host_records_comes_back_as_it_gave_it() -> None:
    from tlwatch.state.engine import Places

    places = Places("h1", {b"/mnt/nas": "nas1"}, fleet=True)
    mine, _ = places.mine("root")
    for path in (b"/srv/cards/A001.mov", b"/mnt/nas/x.mp4", b"/mnt/nas", b"https://e.x/a.mp4", b""):
        key = places.key(path)
        assert places.local(key) == path
        assert key.startswith((b"//host/h1/", b"//share/nas1"))  # a key `mine` keeps
    other = Places("h2", {b"/Volumes/NAS": "nas1"}, fleet=True)
    assert other.local(places.key(b"/mnt/nas/x.mp4")) == b"/Volumes/NAS/x.mp4"
    assert other.local(places.key(b"/srv/cards/A001.mov")) == b"//host/h1/srv/cards/A001.mov"
    assert mine and Places("h1", {}, fleet=False).mine("root") == ("", ())


def test_in_a_fleet_each_metric_says_its_host(hosts: tuple[Store, Store], tmp_path: Path) -> None:
    from tlwatch.config import parse
    from tlwatch.metrics import Metrics

    a, _ = hosts
    a.enqueue(b"/mnt/nas/clip.mp4", b"/mnt/nas", sig(1), MEDIA)
    config = parse(
        {"state": {"url": "postgresql://tlwatch@db/x"}, "daemon": {"host_name": "ingest-1"}},
        source=tmp_path / "c.toml",
    )
    samples = [s for f in Metrics(a, lambda: config).registry.collect() for s in f.samples]
    assert samples and {s.labels.get("host") for s in samples} == {"ingest-1"}
    assert any(s.name == "tlwatch_files" and s.value == 1 for s in samples)


def test_a_transaction_sends_its_statements_together_and_values_as_values(url: str) -> None:
    """Values are bound by the client (a quote, a percent sign, bytes and None come back as
    they went); a statement's rows come with the message that carries it, read before its
    COMMIT or after it (a claim's); one never sent (rolled back) is a bug to read."""
    database = Postgres(url, None, exclusive=True)
    db = database.connect(writer=True)
    try:
        db.begin(durable=False)
        db.execute("CREATE TEMP TABLE t (a TEXT, b BYTEA, c DOUBLE PRECISION) ON COMMIT DROP")
        db.execute("INSERT INTO t VALUES (?, ?, ?)", ("it's 100% ?", b"\x00/\xff", None))
        first = db.execute("SELECT a, b, c FROM t")
        second = db.execute("SELECT 1")
        assert second.fetchone() == (1,)  # (sent with every statement before it)
        assert first.fetchone() == ("it's 100% ?", b"\x00/\xff", None)
        third = db.execute("SELECT 3")
        db.commit()
        assert third.fetchone() == (3,)  # answered with the COMMIT
        db.begin(durable=False)
        never = db.execute("SELECT 4")
        db.rollback()
        with pytest.raises(StoreError, match="a bug"):
            never.fetchone()
        assert db.execute("SELECT 2").fetchone() == (2,)  # the connection carries on
    finally:
        db.close()
        database.close()


def count_trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The messages the store sends to the server from now on (each a trip), by what sent it."""
    from tlwatch.state.postgres import _Connection

    trips: list[str] = []
    sent = _Connection._run

    def counted(connection: _Connection, send: Any, *args: Any) -> Any:
        if send.__name__ != "send_prepare":  # (once a connection, between transactions)
            trips.append(send.__name__)
        return sent(connection, send, *args)

    monkeypatch.setattr(_Connection, "_run", counted)
    return trips


def test_an_upload_is_claimed_and_recorded_in_one_trip_each(
    tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path every upload takes: its claim (one statement, answered with its durable
    COMMIT) and its record (its writes fenced by the claim, not read first) are one message to
    the server each; each state's event is written by the server itself."""
    with Store(tmp_path / "s.db", url=url) as store:
        rows = [store.enqueue(b"/in/%d.mp4" % n, b"/in", sig(n), MEDIA) for n in range(3)]
        for row in rows[:2]:
            assert store.claim_next(f"t{row.id}") is not None
            store.mark_uploaded(row.id, f"asset-{row.id}", "processing")
        trips = count_trips(monkeypatch)
        claimed = store.claim_next("t3")
        assert claimed is not None and claimed.id == rows[2].id
        assert (claimed.state, claimed.upload_token, claimed.attempts) == ("uploading", "t3", 1)
        assert trips == ["send_query"]
        done = store.mark_uploaded(rows[2].id, "asset-3", "processing")
        assert trips == ["send_query", "send_query"]
        monkeypatch.undo()
        assert (done.state, done.asset_id) == (FileState.UPLOADED, "asset-3")
        assert store.get(rows[2].id).asset_id == "asset-3"
        journal = [(old, new) for _, kind, old, new, _ in store.events(rows[2].id)]
        assert journal == [(None, "queued"), ("queued", "uploading"), ("uploading", "uploaded")]


def test_a_record_that_claims_the_next_file_is_one_message(
    tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store(tmp_path / "s.db", url=url) as store:
        rows = [store.enqueue(b"/in/%d.mp4" % n, b"/in", sig(n), MEDIA) for n in range(2)]
        assert store.claim_next("t0") is not None
        trips = count_trips(monkeypatch)
        done, taken = store.mark_uploaded_and_claim(rows[0].id, "asset-0", "processing", "t1")
        monkeypatch.undo()
        assert len(trips) == 1
        assert (done.state, done.asset_id) == (FileState.UPLOADED, "asset-0")
        assert taken is not None and (taken.id, taken.upload_token) == (rows[1].id, "t1")
        assert store.get(rows[1].id).state == FileState.UPLOADING


def test_the_poller_reads_a_batch_of_assets_found_ready_in_one_trip(
    tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three assets found ready are recorded with one read of their files (locked for the
    batch) and one COMMIT: two messages to the server, not one more for each file."""
    config = make_config(tmp_path, "http://127.0.0.1:9/v1.3")
    with Store(tmp_path / "s.db", url=url) as store:
        for n in range(3):
            row = store.enqueue(b"/in/%d.mp4" % n, b"/in", sig(n), MEDIA)
            assert store.claim_next(f"t{n}") is not None
            store.mark_uploaded(row.id, f"asset-{n}", "processing")
        rows = store.in_state(FileState.UPLOADED)
        poller = Poller(
            store, Client("key", base_url=config.api.base_url), lambda: config, RunState()
        )
        trips = count_trips(monkeypatch)
        poller._record_all([(row, Asset(str(row.asset_id), "ready")) for row in rows])
        monkeypatch.undo()
        assert [store.get(row.id).state for row in rows] == [FileState.READY] * 3
        assert len(trips) == 3  # the batch's read of their copies, of their files, its COMMIT


def test_a_batch_of_new_files_is_recorded_in_one_message(
    tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New files read absent by their batch are inserted with ids taken ahead (as many as it
    read absent), not each waited for: its read, its ids and its COMMIT, however many files."""
    with Store(tmp_path / "s.db", url=url) as store:
        store.enqueue(b"/in/first.mp4", b"/in", sig(1), MEDIA)  # (its statements: prepared)
        paths = [b"/in/%d.mp4" % n for n in range(5)]
        trips = count_trips(monkeypatch)
        with store.batch():
            assert store.by_paths([*paths, b"/in/copy.mp4"]) == {}
            rows = [store.enqueue(path, b"/in", sig(n), MEDIA) for n, path in enumerate(paths)]
            copy = store.duplicate(b"/in/copy.mp4", b"/in", sig(9), MEDIA, rows[0])
        monkeypatch.undo()
        assert len(trips) == 3
        assert [store.get(row.id).path for row in rows] == paths
        assert store.get(copy.id).duplicate_of == rows[0].id  # (an id taken ahead, kept)
        assert [e[3] for e in store.events(rows[0].id)] == ["queued"]


def test_a_file_taken_for_new_but_recorded_meanwhile_fails_the_whole_batch(
    hosts: tuple[Store, Store],
) -> None:
    a, b = hosts
    with pytest.raises(RecordedMeanwhile), a.batch():
        assert a.by_paths([b"/mnt/nas/x.mp4", b"/mnt/nas/y.mp4"]) == {}
        a.enqueue(b"/mnt/nas/x.mp4", b"/mnt/nas", sig(1), MEDIA)
        b.enqueue(b"/Volumes/NAS/y.mp4", b"/Volumes/NAS", sig(2), MEDIA)  # (the other host)
        a.enqueue(b"/mnt/nas/y.mp4", b"/mnt/nas", sig(2), MEDIA)
    assert [row.path for row in a.all()] == [b"/mnt/nas/y.mp4"]  # (b's; nothing of a's batch)
    assert a.enqueue(b"/mnt/nas/y.mp4", b"/mnt/nas", sig(3), MEDIA).size == 3  # (its new version)


def test_the_intake_records_again_a_batch_another_host_got_to_first(
    tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two hosts take the same new file of a shared folder at once: the one that commits second
    records its batch again, over the row the first made (one row, no error)."""
    config = make_config(tmp_path, "http://127.0.0.1:9", kinds=["video"])
    (tmp_path / "w").mkdir()
    clip = tmp_path / "w" / "clip.mp4"
    shutil.copy(FIXTURES / "clip.mp4", clip)
    shared = {os.fsencode(tmp_path / "w"): "nas1"}
    with (
        Store(tmp_path / "a" / "s.db", url=url, shares=shared) as a,
        Store(tmp_path / "b" / "s.db", url=url, shares={b"/Volumes/NAS": "nas1"}) as b,
    ):
        holders, asked = a.holders, []

        def meanwhile(sha256s: Any) -> Any:  # (between the batch's read and its COMMIT)
            if not asked:
                b.enqueue(b"/Volumes/NAS/clip.mp4", b"/Volumes/NAS", sig(1), MEDIA)
            asked.append(1)
            return holders(sha256s)

        monkeypatch.setattr(a, "holders", meanwhile)
        path = os.fsencode(clip)
        row = Intake(a, lambda: config).take(path, Signature.of(clip.stat()))
        assert len(asked) == 2  # (recorded again)
        assert row is not None and row.state == FileState.QUEUED
        assert [(r.id, r.path, r.sha256) for r in a.all()] == [(row.id, path, sha256_file(clip))]
        assert b.by_path(b"/Volumes/NAS/clip.mp4").id == row.id  # type: ignore[union-attr]


def test_a_store_opens_on_one_connection(
    tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection that migrates the store (and reads the server's clock) is the store's
    first writer: opening a store starts one server process, not two."""
    opened: list[object] = []
    connect = Postgres._connect
    monkeypatch.setattr(Postgres, "_connect", lambda self: opened.append(self) or connect(self))
    with Store(tmp_path / "s.db", url=url) as store:
        assert len(opened) == 1
        row = store.enqueue(b"/in/a.mp4", b"/in", sig(1), MEDIA)  # (written on it)
        assert len(opened) == 1
        assert store.get(row.id).state == FileState.QUEUED  # (a reader: a second one)
        assert len(opened) == 2


def test_a_connection_over_descriptor_1023_still_writes(url: str) -> None:
    """A daemon with many files open: its connections' descriptors can be past select()'s."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"this process may open at most {hard} files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    ballast = []
    try:
        while not ballast or ballast[-1] < 1030:
            ballast.append(os.open("/dev/null", os.O_RDONLY))
        database = Postgres(url, None, exclusive=True)
        db = database.connect(writer=True)
        try:
            db.begin(durable=False)
            assert db.execute("SELECT 1").fetchone() == (1,)
            db.commit()
        finally:
            db.close()
            database.close()
    finally:
        for descriptor in ballast:
            os.close(descriptor)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_text_bound_in_a_transaction_keeps_the_databases_encoding(pg_server: Server) -> None:
    name = f"latin{os.getpid()}"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
        admin.execute(
            f"CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' "  # type: ignore[arg-type]
            "TEMPLATE template0"
        )
    url = pg_server.admin_url.rsplit("/", 1)[0] + f"/{name}"
    database = Postgres(url, None, exclusive=True)
    db = database.connect(writer=True)
    try:
        db.begin(durable=False)
        db.execute("CREATE TEMP TABLE t (a TEXT)")
        db.execute("INSERT INTO t VALUES (?)", ("café ø",))
        assert db.execute("SELECT a FROM t").fetchone() == ("café ø",)
        db.rollback()
    finally:
        db.close()
        database.close()


def test_a_claim_reads_the_queue_in_its_index_order_before_any_statistics(
    tmp_path: Path, url: str
) -> None:
    """A new store has no statistics yet (autovacuum analyzes it a minute later, a big table
    long after its queue filled): the server then guesses that few files are queued, and would
    sort every queued file to take one (measured: 0.4 ms a claim at 700 queued, growing with
    the queue). A claim walks the files_state index instead: the same plan at any length."""
    with Store(tmp_path / "s.db", url=url) as store:
        with store.batch():
            for n in range(2000):
                store.enqueue(b"/in/%d.mp4" % n, b"/in", sig(n), MEDIA)
        claim, values = store._next_claim("t0", ())  # (the statement a claim sends)
        with store._transaction(durable=True) as db:
            plan = "\n".join(r[0] for r in db.execute("EXPLAIN " + claim, values).fetchall())
        assert "files_state" in plan and "Sort" not in plan, plan
        assert store.claim_next("t1") is not None  # (and a claim takes one)


def test_a_recurring_statement_is_prepared_and_one_the_server_cannot_prepare_still_runs(
    url: str,
) -> None:
    """From its second use a statement is prepared on its connection (parsed and planned once),
    between transactions; its values keep their types. One the server refuses to prepare (a
    value whose type nothing says, fine as a literal) runs unprepared, and no transaction fails
    for it."""
    database = Postgres(url, None, exclusive=True)
    db = database.connect(writer=True)
    try:
        db.execute("CREATE TABLE t (a BIGINT, b TEXT, c BYTEA, d DOUBLE PRECISION)")
        insert = "INSERT INTO t VALUES (?, ?, ?, ?)"
        for n in range(3):  # outside a transaction
            db.execute(insert, (n, f"it's {n}% ?", b"\x00/\xff", n / 2))
        for n in range(3, 6):  # inside: prepared at the next BEGIN after its second use
            db.begin(durable=False)
            db.execute(insert, (n, None, None, None))
            assert db.execute("SELECT count(*) FROM t").fetchone() == (n + 1,)
            db.commit()
        prepared = db.execute("SELECT statement FROM pg_prepared_statements").fetchall()
        assert any("INSERT INTO t" in s for (s,) in prepared), prepared
        assert any(s == "SELECT count(*) FROM t" for (s,) in prepared), prepared
        rows = db.execute("SELECT a, b, c, d FROM t WHERE a < ? ORDER BY a", (3,)).fetchall()
        assert rows == [(n, f"it's {n}% ?", b"\x00/\xff", n / 2) for n in range(3)]
        assert db.execute("SELECT count(*) FROM t WHERE b IS NULL").fetchone() == (3,)
        untyped = "SELECT ? IS NULL"  # NULL as SQL, but nothing says what its value would be
        for _ in range(3):
            db.begin(durable=False)
            assert db.execute(untyped, (None,)).fetchone() == (True,)
            db.commit()
        with pytest.raises(psycopg.DataError, match="NUL"):
            db.execute("SELECT ?", ("a\0b",))  # (libpq would have cut it short)
    finally:
        db.close()
        database.close()


class _Interrupted(Exception):
    pass


def test_a_signal_is_handled_while_a_statement_waits_on_the_server(url: str) -> None:
    """Ctrl-C, or systemd's stop, is handled while the server has not answered yet (a row held
    by another host, a server gone quiet): the wait wakes up to run the signal's handler. The
    statement is cancelled and the connection given up, for the store to open a new one."""
    database = Postgres(url, None, exclusive=True)

    def interrupt(signum: int, frame: object) -> None:
        raise _Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        for inside in (False, True):
            db = database.connect(writer=True)
            try:
                if inside:
                    db.begin(durable=False)
                signal.setitimer(signal.ITIMER_REAL, 0.3)
                start = time.monotonic()
                with pytest.raises(_Interrupted):
                    db.execute("SELECT pg_sleep(?)", (30,)).fetchone()
                assert time.monotonic() - start < 5  # not the statement's 30 s
                assert db.broken
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                db.close()
        db = database.connect(writer=True)  # (and nothing was left waiting on the server)
        try:
            deadline = time.monotonic() + 10
            while db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"
            ).fetchone() != (0,):
                assert time.monotonic() < deadline, "a cancelled statement still runs"
                time.sleep(0.05)
        finally:
            db.close()
    finally:
        signal.signal(signal.SIGALRM, previous)
        database.close()

"""The store: the lock, a damaged file, migrations, events, and only legal transitions."""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from tlwatch.errors import LeaseLost, StoreError, StoreLocked, StoreUnavailable
from tlwatch.models import ChoreKind, FileState, Media, Signature
from tlwatch.state import LEGAL, MIGRATIONS, Store
from tlwatch.state.engine import READERS

from conftest import OpenStore

MEDIA = Media("video/mp4", "video", "ab" * 32)
SIG = Signature(1, 2, 3)


def test_the_store_lock_keeps_a_second_writer_away(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db"):
        with pytest.raises(StoreLocked):
            Store(tmp_path / "s.db")
        with Store(tmp_path / "s.db", exclusive=False) as reader:
            assert reader.all() == []


def test_a_corrupt_store_is_moved_aside_not_silently_emptied(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Store(path) as store:
        store.enqueue(b"/x/a.mp4", b"/x", SIG, MEDIA)
    path.write_bytes(b"this is not a database" * 100)
    with Store(path) as store:
        assert store.rebuilding  # nothing is uploaded until the server's list is read
        assert store.all() == []
    with Store(path) as store:
        assert store.rebuilding  # a crash before that keeps it so: it is in the store
        store.listed_remote({})
    with Store(path) as store:
        assert not store.rebuilding
    aside = [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert aside and (tmp_path / aside[0]).read_bytes().startswith(b"this is not")


def test_migrations_are_numbered_and_a_newer_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    Store(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="newer tlwatch"):
        Store(path, exclusive=False)


def test_every_state_change_is_a_timestamped_event(open_store: OpenStore) -> None:
    with open_store() as store:
        row = store.enqueue(b"/w/a.mp4", b"/w", SIG, MEDIA)
        claimed = store.claim_next("t1")
        assert claimed is not None and claimed.state == FileState.UPLOADING
        assert claimed.attempts == 1
        uploaded = store.mark_uploaded(row.id, "a1", "processing")
        assert (uploaded.asset_id, uploaded.asset_status) == ("a1", "processing")
        assert store.mark_ready(row.id)
        events = store.events(row.id)
    assert [(e[2], e[3]) for e in events] == [
        (None, "queued"),
        ("queued", "uploading"),
        ("uploading", "uploaded"),
        ("uploaded", "ready"),
    ]
    assert all(e[0] > 0 for e in events)


def test_the_database_keeps_the_journal_of_each_change_of_state(
    open_store: OpenStore,
) -> None:
    """A trigger writes each new file's event and each change of its state, whatever wrote it
    (the store's own events of a transaction keep their place before it)."""
    with open_store() as store:
        row = store.enqueue(b"/w/a.mp4", b"/w", SIG, MEDIA)
        with store._transaction() as db:
            db.execute(
                "UPDATE files SET state = ?, reason = ?, updated_at = ? WHERE id = ?",
                ("held", "by hand", 1234.5, row.id),
            )
            db.execute("UPDATE files SET reason = ? WHERE id = ?", ("no move", row.id))
        journal = store.events(row.id)
        assert [e[1:] for e in journal] == [
            ("state", None, "queued", None),
            ("state", "queued", "held", "by hand"),
        ]
        assert journal[1][0] == 1234.5  # (when: the row's own time of change)


def test_an_illegal_transition_is_refused_and_changes_nothing(
    open_store: OpenStore,
) -> None:
    with open_store() as store:
        row = store.enqueue(b"/w/a.mp4", b"/w", SIG, MEDIA)
        with pytest.raises(StoreError, match="illegal transition queued → failed"):
            store.fail(row.id, "refused")  # never claimed: the API cannot have refused it
        with pytest.raises(StoreError, match="illegal transition queued → ready"):
            store._move(row.id, FileState.READY, None, {})  # only an uploaded asset is ready
        assert not store.mark_ready(row.id)  # expects `uploaded`: a file moved on is left alone
        assert store.get(row.id).state == FileState.QUEUED
        assert store.get(row.id).asset_id is None


def test_the_table_of_legal_transitions_holds_the_journey() -> None:
    journey = [None, FileState.QUEUED, FileState.UPLOADING, FileState.UPLOADED, FileState.READY]
    for old, new in itertools.pairwise(journey):
        assert (old, new) in LEGAL
    assert (FileState.UPLOADING, FileState.DUPLICATE) not in LEGAL  # in flight: it notices
    assert (FileState.READY, FileState.UPLOADING) not in LEGAL  # only queued files are claimed
    assert (FileState.FAILED, FileState.QUEUED) in LEGAL  # `tlwatch retry`


def test_retry_and_a_new_version_reset_every_upload_field(open_store: OpenStore) -> None:
    with open_store() as store:
        row = store.enqueue(b"/w/a.mp4", b"/w", SIG, MEDIA)
        assert store.claim_next("t1") is not None
        store.start_session(row.id, "u1", "a1", 10, 3)
        store.add_chunks(row.id, [(1, "e1")])
        store.fail(row.id, "refused")
        again = store.retry([row.id])[0]
        assert again.state == FileState.QUEUED
        fields = (again.asset_id, again.upload_token, again.upload_id, again.total_chunks)
        assert fields == (None, None, None, None)
        assert again.attempts == 0
        assert store.chunks(row.id) == {}  # the session's chunks went with it


def test_recovery_requeues_interrupted_uploads_after_the_grace(
    open_store: OpenStore,
) -> None:
    now = [1000.0]
    with open_store(clock=lambda: now[0]) as store:
        row = store.enqueue(b"/w/a.mp4", b"/w", SIG, MEDIA)
        assert store.claim_next("t1") is not None
        store.recover(grace=60)
        recovered = store.get(row.id)
    assert recovered.state == FileState.QUEUED
    assert recovered.attempts == 0
    assert recovered.next_attempt_at == 1060.0


def test_a_claim_records_the_intent_and_keeps_an_earlier_token(
    open_store: OpenStore,
) -> None:
    with open_store() as store:
        row = store.enqueue(b"/w/a.mp4", b"/w", SIG, MEDIA)
        first = store.claim_next("t1")
        assert first is not None and first.upload_token == "t1"
        store.requeue(row.id, "no answer", at=None)
        again = store.claim_next("t2")
        assert again is not None and again.upload_token == "t1"  # the one that went out
        assert again.attempts == 2


def test_a_claimed_files_writes_carry_its_claims_fence_and_a_late_one_keeps_nothing(
    open_store: OpenStore,
) -> None:
    """The thread that claimed a file writes it without reading it first: each write carries
    the claim (host and lease epoch), and fails as a whole once another claim replaced it."""
    with open_store() as store:
        row = store.enqueue(b"/w/a.mp4", b"/w", SIG, MEDIA)
        claimed = store.claim_next("t1")
        assert claimed is not None
        with store._transaction() as db:  # another host took it over (its claim: one more)
            db.execute("UPDATE files SET lease_epoch = lease_epoch + 1 WHERE id = ?", (row.id,))
        with pytest.raises(LeaseLost, match="another host took it over"):
            store.mark_uploaded(row.id, "late", "processing")
        with pytest.raises(LeaseLost):
            store.start_session(row.id, "upload-1", "late", 5_000_000, 3)
        after = store.get(row.id)
        assert (after.state, after.asset_id, after.upload_id) == (FileState.UPLOADING, None, None)
        assert [e[3] for e in store.events(row.id)] == ["queued", "uploading"]
        assert store.media_minutes() == 0.0  # nothing counted as sent


def test_a_claimed_file_moved_by_a_commit_whose_answer_was_lost_is_not_moved_again(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store could not tell whether a write of the claimed file was kept (its COMMIT's
    answer was lost): the thread's next write of it must not move it from the state it thought
    the file was in (the fence holds its state too)."""
    with open_store() as store:
        row = store.enqueue(b"/w/a.mp4", b"/w", SIG, MEDIA)
        assert store.claim_next("t1") is not None
        connection = type(store._db)
        commit = connection.commit
        lost = sqlite3.OperationalError if connection.__module__.endswith("sqlite") else None

        def answer_lost(self: Any) -> None:
            commit(self)
            if lost is not None:
                raise lost("disk I/O error")
            import psycopg

            raise psycopg.OperationalError("server closed the connection unexpectedly")

        monkeypatch.setattr(connection, "commit", answer_lost)
        with pytest.raises(StoreUnavailable):
            store.fit(row.id, "{}", "over the limit: a proxy goes instead")
        monkeypatch.undo()
        assert store.get(row.id).state == FileState.FITTING  # (it was kept)
        with pytest.raises(LeaseLost):
            store.requeue(row.id, "interrupted", at=None)
        assert store.get(row.id).state == FileState.FITTING
        assert [e[3] for e in store.events(row.id)][-1] == "fitting"


def test_what_a_rolled_back_write_did_to_a_claimed_file_is_forgotten(
    open_store: OpenStore,
) -> None:
    with open_store() as store:
        row = store.enqueue(b"/w/a.mp4", b"/w", SIG, MEDIA)
        assert store.claim_next("t1") is not None
        with pytest.raises(RuntimeError), store.batch():
            store.requeue(row.id, "about to fail", at=None)  # (its row, as this thread knows it)
            raise RuntimeError("the batch fails")
        assert store.get(row.id).state == FileState.UPLOADING
        done = store.mark_uploaded(row.id, "asset-1", "processing")  # still this thread's claim
        assert (done.state, done.asset_id) == (FileState.UPLOADED, "asset-1")
        assert store.get(row.id).state == FileState.UPLOADED


def test_an_asset_found_ready_is_recorded_with_the_files_move_once(
    open_store: OpenStore,
) -> None:
    with open_store() as store:
        row = store.enqueue(b"/w/a.mp4", b"/w", SIG, MEDIA)
        assert store.claim_next("t1") is not None
        store.mark_uploaded(row.id, "asset-1", "processing")
        assert store.mark_ready(row.id, status=("processing", None))
        assert store.mark_ready(row.id, status=("processing", None))  # (said twice: once kept)
        ready = store.get(row.id)
        assert (ready.state, ready.asset_status) == (FileState.READY, "ready")
        assert [e[1:4] for e in store.events(row.id)][-2:] == [
            ("asset", "processing", "ready"),
            ("state", "uploaded", "ready"),
        ]


def test_a_batch_is_one_commit_all_or_nothing(
    open_store: OpenStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    with open_store() as store:
        with pytest.raises(RuntimeError), store.batch():
            store.enqueue(b"/w/a.mp4", b"/w", SIG, MEDIA)
            store.enqueue(b"/w/b.mp4", b"/w", Signature(4, 5, 6), MEDIA)
            raise RuntimeError("the third file could not be judged")
        assert store.all() == []
        assert not [r for r in caplog.records if "new → queued" in r.getMessage()]
        with store.batch():
            store.enqueue(b"/w/a.mp4", b"/w", SIG, MEDIA)
            with pytest.raises(StoreError, match="inside a batch"):
                store.claim_next("t1")  # an intent must be durable: not inside this batch
        assert [r.path for r in store.all()] == [b"/w/a.mp4"]


def test_a_store_of_schema_two_is_migrated_with_each_files_folder(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as db:  # the store as schema 2 left it
        db.executescript(f"{MIGRATIONS[0]}; {MIGRATIONS[1]}; PRAGMA user_version = 2;")
        db.execute(
            "INSERT INTO files (root, path, size, mtime_ns, inode, state, created_at, updated_at)"
            " VALUES (?, ?, 1, 2, 3, 'ready', 0, 0)",
            (b"/w", b"/w/sub/a.mp4"),
        )
    with Store(path) as store:
        assert not store.rebuilding
        assert store.known_in(b"/w/sub") == {b"/w/sub/a.mp4": (1, 2, 3)}
        assert store.known_in(b"/w") == {}
        assert store.all()[0].user_metadata == {}


def test_short_lived_threads_leave_no_reading_connection_behind(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        store.enqueue(b"/w/a.mp4", b"/w", SIG, MEDIA)
        for _ in range(50):  # a metrics scrape is a new thread each time
            reader = threading.Thread(target=store.counts)
            reader.start()
            reader.join()
        assert store._reader_count <= READERS
        assert store.counts() == {(b"/w", "queued"): 1}


def test_only_the_lock_holder_upgrades_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as db:  # the store as an older tlwatch left it
        db.executescript(f"{MIGRATIONS[0]}; {MIGRATIONS[1]}; PRAGMA user_version = 2;")
    with pytest.raises(StoreError, match="older tlwatch"):
        Store(path, exclusive=False)  # `tlwatch status` under a daemon not yet restarted
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2  # untouched
    with Store(path) as store:
        assert store.all() == []
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_new_files_go_first_in_order_then_the_retry_due_soonest(
    open_store: OpenStore,
) -> None:
    now = [1000.0]
    with open_store(clock=lambda: now[0]) as store:
        a, b, c = (store.enqueue(f"/w/{n}.mp4".encode(), b"/w", SIG, MEDIA) for n in "abc")
        for row, later in ((a, 30.0), (b, 10.0)):
            assert store.claim_next("t") is not None
            store.requeue(row.id, "try again", at=now[0] + later)
        assert store.next_due() == 0.0  # c is new
        assert (claimed := store.claim_next("t")) is not None and claimed.id == c.id
        assert store.next_due() == 1010.0
        assert store.claim_next("t") is None  # nothing is due yet
        now[0] = 1050.0
        assert [r.id for r in (store.claim_next("t"), store.claim_next("t")) if r] == [b.id, a.id]
        assert store.next_due() is None


def test_taking_the_next_file_reads_no_more_when_thousands_are_queued(tmp_path: Path) -> None:
    """The claim walks the index in its order and stops at the first entry: its cost does not
    grow with the queue (it sorted every queued file on each claim)."""

    def steps_to_claim(store: Store) -> int:
        count = [0]

        def step() -> int:
            count[0] += 1
            return 0

        store._db._db.set_progress_handler(step, 1)  # (SQLite: its VM steps)
        try:
            assert store.claim_next("t") is not None
        finally:
            store._db._db.set_progress_handler(None, 1)
        return count[0]

    with Store(tmp_path / "few.db") as few, Store(tmp_path / "many.db") as many:
        for store, count in ((few, 5), (many, 2000)):
            with store.batch():
                for n in range(count):
                    store.enqueue(f"/w/{n}.mp4".encode(), b"/w", SIG, MEDIA)
            assert steps_to_claim(store) > 0
        assert steps_to_claim(many) < 2 * steps_to_claim(few)


def test_retrying_an_original_whose_proxy_failed_judges_it_anew(
    open_store: OpenStore,
) -> None:
    """Its failed proxy chore stays history: a second one would make the parts twice."""
    with open_store() as store:
        row = store.enqueue(b"/w/a.mov", b"/w", SIG, MEDIA)
        assert store.claim_next("t1") is not None
        store.fit(row.id, '{"parts": [[0, 9]]}', "too wide")
        chore = store.claim_chore((), (ChoreKind.PROXY,))
        assert chore is not None
        store.fit_failed(chore, "Invalid data found when processing input")
        assert store.get(row.id).state == FileState.FAILED
        store.retry(store.retriable())
        assert store.get(row.id).state == FileState.QUEUED
        assert [c.state for c in store.chores_of(row.id)] == ["failed"]
        assert store.claim_chore((), (ChoreKind.PROXY,)) is None


def test_newer_metadata_of_an_original_sent_as_parts_goes_to_each_part(
    open_store: OpenStore,
) -> None:
    from tlwatch.state import NewPart

    with open_store() as store:
        row = store.enqueue(b"/w/a.mov", b"/w", SIG, MEDIA, {"scene": "1"})
        assert store.claim_next("t1") is not None
        store.fit(row.id, "{}", "too long")
        store.want_metadata(row.id, {"scene": "2"})  # while its parts are being made
        assert store.get(row.id).user_metadata == {"scene": "2"}
        chore = store.claim_chore((), (ChoreKind.PROXY,))
        assert chore is not None
        parts = [
            NewPart(
                b"/s/%d.mp4" % n,
                Signature(n, 1, n),
                MEDIA,
                {"scene": "2", "tlwatch_segment": n},
                n,
                2,
                0.0,
            )
            for n in (1, 2)
        ]
        first, second = store.add_parts(chore, b"/s", parts)
        assert store.claim_next("t2") is not None  # the first part is sent
        store.mark_uploaded(first.id, "asset-1", "processing")
        store.want_metadata(row.id, {"scene": "3"})
        [update] = [c for c in store.chores_of(first.id) if c.kind == ChoreKind.METADATA]
        assert json.loads(update.detail or "{}") == {"scene": "3", "tlwatch_segment": 1}
        assert update.asset_id == "asset-1"
        assert store.get(second.id).user_metadata == {"scene": "3", "tlwatch_segment": 2}
        assert store.chores_of(row.id)[-1].kind == ChoreKind.PROXY  # no update for the original


def _fitted(store: Store, path: bytes, signature: Signature, count: int) -> list[Any]:
    """`path` judged too long, its `count` parts made and queued; the parts."""
    from tlwatch.state import NewPart

    row = store.by_path(path)
    assert row is not None and store.claim_next("t") is not None
    store.fit(row.id, "{}", "too long")
    chore = store.claim_chore((), (ChoreKind.PROXY,))
    assert chore is not None
    made = [
        NewPart(path + b".c%d.%d" % (chore.id, n), Signature(n, 1, n), MEDIA, {}, n, count, 0.0)
        for n in range(1, count + 1)
    ]
    return store.add_parts(chore, b"/s", made)


def _all_ready(
    store: Store,
    parts: list[Any],
    after: ChoreKind | None = None,
    indexes: list[tuple[str, int]] | None = None,
) -> None:
    """Each file (in the order they are due) claimed, uploaded as `asset-ID`, and ready."""
    for number, part in enumerate(parts):
        claimed = store.claim_next(f"p{number}")
        assert claimed is not None and claimed.id == part.id
        store.mark_uploaded(part.id, f"asset-{part.id}", "processing")
        assert store.mark_ready(part.id, indexes or (), after=after)


def test_a_new_version_of_an_original_leaves_its_old_parts_behind(
    open_store: OpenStore,
) -> None:
    """Its old parts no longer count: the new version's parts make it ready, not stuck."""
    with open_store() as store:
        store.enqueue(b"/w/a.mov", b"/w", SIG, MEDIA)
        old = _fitted(store, b"/w/a.mov", SIG, 2)
        assert store.claim_next("p") is not None  # the first old part is being sent
        newer = Signature(9, 9, 9)
        row = store.enqueue(b"/w/a.mov", b"/w", newer, MEDIA)  # the intake: a new version
        assert store.parts_of(row.id) == []
        assert store.get(old[1].id).state == FileState.SKIPPED
        parts = _fitted(store, b"/w/a.mov", newer, 2)
        _all_ready(store, parts)
        assert store.get(row.id).state == FileState.READY


def test_parts_are_not_queued_for_a_chore_dropped_meanwhile(
    open_store: OpenStore,
) -> None:
    from tlwatch.state import NewPart

    with open_store() as store:
        row = store.enqueue(b"/w/a.mov", b"/w", SIG, MEDIA)
        assert store.claim_next("t") is not None
        store.fit(row.id, "{}", "too long")
        chore = store.claim_chore((), (ChoreKind.PROXY,))
        assert chore is not None
        store.drop_chore(chore, "the file changed since")
        part = NewPart(b"/s/p.mp4", Signature(4, 5, 6), MEDIA, {}, 1, 1, 0.0)
        assert store.add_parts(chore, b"/s", [part]) == []
        assert store.by_path(b"/s/p.mp4") is None


def test_an_original_sent_as_a_proxy_is_never_deleted_after_upload(
    open_store: OpenStore,
) -> None:
    """Only a proxy of it is on the server: `delete` would lose the original's content."""
    with open_store() as store:
        row = store.enqueue(b"/w/a.mov", b"/w", SIG, MEDIA)
        _all_ready(store, _fitted(store, b"/w/a.mov", SIG, 1), after=ChoreKind.DELETE)
        original = store.get(row.id)
        assert original.state == FileState.READY
        assert [c.kind for c in store.chores_of(row.id)] == [ChoreKind.PROXY]
        assert (original.reason or "").startswith("kept: only a proxy of it is on the server")


def test_moving_an_original_sent_as_parts_waits_for_every_part(
    open_store: OpenStore,
) -> None:
    with open_store() as store:
        row = store.enqueue(b"/w/a.mov", b"/w", SIG, MEDIA)
        first, second = _fitted(store, b"/w/a.mov", SIG, 2)
        _all_ready(store, [first], after=ChoreKind.MOVE)
        assert store.get(row.id).state == FileState.FITTING
        _all_ready(store, [second], after=ChoreKind.MOVE)
        assert store.get(row.id).state == FileState.READY
        assert [c.kind for c in store.chores_of(row.id)] == [ChoreKind.PROXY, ChoreKind.MOVE]
        assert MEDIA.sha256 in store.holders([MEDIA.sha256])  # (its content is held)


def test_the_savings_of_originals_sent_as_parts_are_counted(
    open_store: OpenStore,
) -> None:
    with open_store() as store:
        assert store.savings() == (0, 0, 0)
        store.enqueue(b"/w/a.mov", b"/w", Signature(5000, 1, 1), MEDIA)
        store.enqueue(
            b"/w/b.mp4", b"/w", Signature(700, 1, 2), Media("video/mp4", "video", "cd" * 32)
        )
        _fitted(store, b"/w/a.mov", Signature(5000, 1, 1), 2)  # parts of 1 and 2 bytes
        assert store.savings() == (1, 5000, 3)


def test_a_scan_asks_of_several_folders_at_once(open_store: OpenStore) -> None:
    with open_store() as store:
        store.enqueue(b"/w/a/1.mp4", b"/w", SIG, MEDIA)
        store.enqueue(b"/w/b/2.mp4", b"/w", Signature(4, 5, 6), MEDIA)
        store.enqueue(b"/w/c/3.mp4", b"/w", Signature(7, 8, 9), MEDIA)
        assert store.known_in(b"/w/a", b"/w/b", b"/w/none") == {
            b"/w/a/1.mp4": (1, 2, 3),
            b"/w/b/2.mp4": (4, 5, 6),
        }


def test_a_batch_of_files_is_looked_up_in_one_query_each_way(open_store: OpenStore) -> None:
    """By path, by content and by twin: what the intake and the poller ask of a whole batch."""
    other = Media("video/mp4", "video", "cd" * 32)
    with open_store() as store:
        a = store.enqueue(b"/w/a.mp4", b"/w", SIG, MEDIA)
        b = store.enqueue(b"/w/b.mp4", b"/w", Signature(4, 5, 6), other)
        copy = store.duplicate(b"/w/c.mp4", b"/w", Signature(7, 8, 9), MEDIA, a)
        store.ignore(b"/w/d.txt", b"/w", Signature(1, 1, 1), "text/plain", None, "not media")
        paths = [b"/w/a.mp4", b"/w/d.txt", b"/w/none.mp4"] + [b"/w/b.mp4"] * 2
        found = store.by_paths(paths)
        assert sorted(found) == [b"/w/a.mp4", b"/w/b.mp4", b"/w/d.txt"]
        assert found[b"/w/b.mp4"].id == b.id and found[b"/w/a.mp4"].sha256 == MEDIA.sha256
        holders = store.holders([MEDIA.sha256, other.sha256, "ef" * 32])
        assert {k: [r.id for r in v] for k, v in holders.items()} == {
            MEDIA.sha256: [a.id],  # (its copy holds no upload of its own)
            other.sha256: [b.id],
        }
        assert {k: [r.id for r in v] for k, v in store.duplicates_of([a.id, b.id]).items()} == {
            a.id: [copy.id]
        }
        assert store.by_paths([]) == {} and store.duplicates_of([]) == {}
        many = [f"/w/n{i}.mp4".encode() for i in range(1200)]  # more than one query's worth
        assert store.by_paths([*many, b"/w/a.mp4"]).keys() == {b"/w/a.mp4"}


def test_files_are_listed_a_page_at_a_time_and_the_latest_changes_first(
    open_store: OpenStore,
) -> None:
    with open_store() as store:
        rows = [
            store.enqueue(f"/{d}/{n}.mp4".encode(), f"/{d}".encode(), Signature(n, n, n), MEDIA)
            for d in ("w", "x")
            for n in range(3)
        ]
        store.skip(rows[1].id, "gone")
        first = store.page(None, None, after=0, limit=4)
        assert [r.id for r in first] == [r.id for r in rows[:4]]
        rest = store.page(None, None, after=first[-1].id, limit=4)
        assert [r.id for r in rest] == [r.id for r in rows[4:]]
        queued_in_x = store.page(FileState.QUEUED, b"/x", after=0, limit=10)
        assert [r.id for r in queued_in_x] == [r.id for r in rows[3:]]
        assert [r.id for r in store.page(FileState.SKIPPED, None, 0, 10)] == [rows[1].id]
        assert [r.id for r in store.recent((FileState.QUEUED,), 2)] == [rows[5].id, rows[4].id]


def test_a_folders_batch_counts_what_was_found_with_its_files_on_their_way(
    open_store: OpenStore,
) -> None:
    clock = itertools.count(1000.0)
    with open_store(clock=lambda: next(clock)) as store:
        old = store.enqueue(b"/w/old.mp4", b"/w", SIG, MEDIA)
        _all_ready(store, [old])
        assert store.batches() == {}  # nothing on its way
        a = store.enqueue(b"/w/a.mp4", b"/w", Signature(4, 5, 6), MEDIA)
        store.enqueue(b"/w/b.mp4", b"/w", Signature(7, 8, 9), Media("video/mp4", "video", "c" * 64))
        store.ignore(b"/w/c.txt", b"/w", Signature(1, 1, 1), "text/plain", None, "not media")
        assert store.batches() == {b"/w": (0, 2)}  # (the old file is not of this batch)
        _all_ready(store, [a])
        assert store.batches() == {b"/w": (1, 2)}


def test_indexings_and_chores_are_counted_and_read_for_the_assets_shown(
    open_store: OpenStore,
) -> None:
    with open_store() as store:
        row = store.enqueue(b"/w/a.mp4", b"/w", SIG, MEDIA)
        _all_ready(store, [row], ChoreKind.MOVE, [("index-1", row.id), ("index-2", row.id)])
        assert store.indexing_counts() == {"queued": 2}
        assert store.chore_counts() == {"queued": 1}
        asset = f"asset-{row.id}"
        found = store.indexings_of_assets([asset, "asset-none"])
        assert list(found) == [asset]
        assert [i.index_id for i in found[asset]] == ["index-1", "index-2"]
        assert store.indexings_of_assets([]) == {}


def test_a_batch_reads_each_file_it_writes_once_and_sees_its_own_writes(
    open_store: OpenStore,
) -> None:
    """`lock` reads a batch's files in one query; what the batch then writes on them is what
    its later steps see, and a file moved meanwhile by another store is not moved again."""
    with open_store() as store, open_store(exclusive=False) as other:
        rows = [store.enqueue(b"/w/%d.mp4" % n, b"/w", SIG, MEDIA) for n in range(3)]
        for row in rows:
            assert store.claim_next(f"t{row.id}") is not None
            store.mark_uploaded(row.id, f"asset-{row.id}", "processing")
        other.fail(rows[2].id, "failed elsewhere", expect=FileState.UPLOADED)
        with store.batch():
            store.lock(row.id for row in rows)
            assert store.mark_ready(rows[0].id)
            assert store.mark_ready(rows[0].id)  # (ready already, as this batch left it)
            assert store.fail(rows[1].id, "gone", expect=FileState.UPLOADED).state == "failed"
            assert store.fail(rows[1].id, "again", expect=FileState.UPLOADED).reason == "gone"
            assert not store.mark_ready(rows[2].id)  # (failed before the batch read it)
        assert [store.get(row.id).state for row in rows] == ["ready", "failed", "failed"]
        moves = [(e[2], e[3]) for e in store.events(rows[0].id) if e[1] == "state"]
        assert moves[-2:] == [("uploading", "uploaded"), ("uploaded", "ready")]  # (moved once)
        with store.batch():
            store.lock([rows[1].id])
            assert store.requeue(rows[1].id, "again", at=None).state == FileState.QUEUED
        assert other.claim(rows[1].id, "t9") is not None
        with store.batch():  # (a batch's rows are its own: the next one reads them anew)
            moved = store.fail(rows[1].id, "still queued?", expect=FileState.QUEUED)
        assert moved.state == FileState.UPLOADING  # (claimed by the other: not moved)
        with pytest.raises(StoreError):
            store.lock([rows[0].id])  # (outside a batch: a bug)


def test_a_record_claims_the_next_file_in_its_own_commit(open_store: OpenStore) -> None:
    with open_store() as store:
        rows = [store.enqueue(b"/w/%d.mp4" % n, b"/w", SIG, MEDIA) for n in range(2)]
        assert store.claim_next("t0") is not None
        done, taken = store.mark_uploaded_and_claim(rows[0].id, "asset-0", "processing", "t1")
        assert (done.state, done.asset_id) == (FileState.UPLOADED, "asset-0")
        assert taken is not None and (taken.id, taken.attempts) == (rows[1].id, 1)
        last, none = store.mark_uploaded_and_claim(taken.id, "asset-1", "processing", "t2")
        assert (last.state, none) == (FileState.UPLOADED, None)  # (nothing left to claim)
        for row in rows:
            moves = [(e[2], e[3]) for e in store.events(row.id) if e[1] == "state"]
            assert moves == [(None, "queued"), ("queued", "uploading"), ("uploading", "uploaded")]
        with pytest.raises(StoreError), store.batch():
            store.mark_uploaded_and_claim(rows[0].id, "asset-0", "ready", "t3")

"""The state store: the only module that imports sqlite3.

One SQLite file in WAL mode: the commits that must survive a power cut (an upload's intent, an
asset id) are `synchronous=FULL`, the rest `NORMAL` (they survive a crash of the process).
Numbered migrations, a quick check at open, and an exclusive `flock` on `state.db.lock` that
keeps a second daemon away. Readers (`tlwatch status`) open it without the lock.
Paths are stored as exact bytes; every state change is a timestamped row in `events`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from tlwatch.errors import StoreError, StoreLocked, StoreUnavailable
from tlwatch.events import Event, StateChanged, nowhere
from tlwatch.models import (
    ChoreKind,
    ChoreState,
    FileState,
    IndexState,
    Media,
    Signature,
    relative_to,
    shown,
)

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE files (
        id INTEGER PRIMARY KEY,
        root BLOB NOT NULL,
        path BLOB NOT NULL UNIQUE,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        sha256 TEXT,
        mime TEXT,
        kind TEXT,
        state TEXT NOT NULL,
        reason TEXT,
        asset_id TEXT,
        asset_status TEXT,
        duplicate_of INTEGER REFERENCES files(id) ON DELETE SET NULL,
        upload_token TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        upload_id TEXT,
        chunk_size INTEGER,
        total_chunks INTEGER,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        uploaded_at REAL
    );
    CREATE INDEX files_state ON files(state, next_attempt_at);
    CREATE INDEX files_sha256 ON files(sha256);
    CREATE INDEX files_asset ON files(asset_id);
    CREATE TABLE chunks (
        file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        chunk_index INTEGER NOT NULL,
        etag TEXT NOT NULL,
        PRIMARY KEY (file_id, chunk_index)
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        old TEXT,
        new TEXT NOT NULL,
        detail TEXT
    );
    CREATE INDEX events_file ON events(file_id, at);
    """,
    """
    CREATE TABLE folders (
        path BLOB PRIMARY KEY,
        online INTEGER NOT NULL,
        reason TEXT,
        since REAL NOT NULL
    );
    """,
    """
    ALTER TABLE files ADD COLUMN dir BLOB;
    UPDATE files SET dir = tlwatch_dirname(path);
    CREATE INDEX files_dir ON files(dir);
    """,
    """
    ALTER TABLE files ADD COLUMN metadata TEXT;
    ALTER TABLE files ADD COLUMN metadata_pending TEXT;
    CREATE TABLE indexings (
        asset_id TEXT NOT NULL,
        index_id TEXT NOT NULL,
        file_id INTEGER REFERENCES files(id) ON DELETE SET NULL,
        state TEXT NOT NULL,
        indexed_asset_id TEXT,
        status TEXT,
        reason TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        sent_at REAL,
        PRIMARY KEY (asset_id, index_id)
    );
    CREATE INDEX indexings_state ON indexings(state, next_attempt_at);
    """,
    """
    ALTER TABLE files ADD COLUMN duration REAL;
    """,
    """
    CREATE INDEX files_metadata_pending ON files(id) WHERE metadata_pending IS NOT NULL;
    """,
    """
    CREATE TABLE sent (
        file_id INTEGER REFERENCES files(id) ON DELETE SET NULL,
        at REAL NOT NULL,
        duration REAL NOT NULL
    );
    CREATE INDEX sent_at ON sent(at);
    INSERT INTO sent (file_id, at, duration)
        SELECT id, uploaded_at, COALESCE(duration, 0) FROM files WHERE uploaded_at IS NOT NULL;
    CREATE TABLE chores (
        id INTEGER PRIMARY KEY,
        file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        asset_id TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        detail TEXT,
        target BLOB,
        reason TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX chores_state ON chores(state, next_attempt_at);
    CREATE INDEX chores_file ON chores(file_id);
    INSERT INTO chores (file_id, kind, state, asset_id, size, mtime_ns, inode, detail,
                        created_at, updated_at)
        SELECT id, 'metadata', 'queued', asset_id, size, mtime_ns, inode, metadata_pending,
               updated_at, updated_at
        FROM files WHERE metadata_pending IS NOT NULL AND asset_id IS NOT NULL;
    DROP INDEX files_metadata_pending;
    ALTER TABLE files DROP COLUMN metadata_pending;
    CREATE TABLE remote_assets (
        sha256 TEXT PRIMARY KEY,
        asset_id TEXT NOT NULL,
        status TEXT NOT NULL
    );
    CREATE TABLE flags (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
]


@dataclass(frozen=True)
class FileRow:
    id: int
    root: bytes
    path: bytes
    size: int
    mtime_ns: int
    inode: int
    sha256: str | None
    mime: str | None
    kind: str | None
    state: FileState
    reason: str | None
    asset_id: str | None
    asset_status: str | None
    duplicate_of: int | None
    upload_token: str | None
    attempts: int
    next_attempt_at: float | None
    upload_id: str | None
    chunk_size: int | None
    total_chunks: int | None
    created_at: float
    updated_at: float
    uploaded_at: float | None
    metadata: str | None  # the user metadata it is (or was) sent with, as JSON
    duration: float | None  # seconds of media (for the budgets)

    @property
    def user_metadata(self) -> dict[str, Any]:
        return dict(json.loads(self.metadata)) if self.metadata else {}

    @property
    def signature(self) -> Signature:
        return Signature(self.size, self.mtime_ns, self.inode)

    @property
    def name(self) -> bytes:
        """The path relative to its watched folder (the whole path for one-off uploads)."""
        return relative_to(self.path, self.root)

    @property
    def shown(self) -> str:
        return shown(self.name)


_COLUMNS = ", ".join(f.name for f in fields(FileRow))


@dataclass(frozen=True)
class IndexingRow:
    """The indexing of one asset into one index (exactly once per pair)."""

    asset_id: str
    index_id: str
    file_id: int | None
    state: IndexState
    indexed_asset_id: str | None
    status: str | None
    reason: str | None
    attempts: int
    next_attempt_at: float | None
    created_at: float
    updated_at: float
    sent_at: float | None


_INDEXING_COLUMNS = ", ".join(f.name for f in fields(IndexingRow))


@dataclass(frozen=True)
class ChoreRow:
    """One obligation after the upload, made for one version of a file (its asset and
    signature): done only while the file is still that version."""

    id: int
    file_id: int
    kind: ChoreKind
    state: ChoreState
    asset_id: str
    size: int
    mtime_ns: int
    inode: int
    detail: str | None  # metadata: the JSON to send
    target: bytes | None  # move: the free name chosen, kept before the move starts
    reason: str | None
    attempts: int
    next_attempt_at: float | None
    created_at: float
    updated_at: float

    @property
    def signature(self) -> Signature:
        return Signature(self.size, self.mtime_ns, self.inode)


_CHORE_COLUMNS = ", ".join(f.name for f in fields(ChoreRow))


def _chore(values: tuple[Any, ...]) -> ChoreRow:
    row = ChoreRow(*values)
    return ChoreRow(**{**row.__dict__, "kind": ChoreKind(row.kind), "state": ChoreState(row.state)})


def _indexing(values: tuple[Any, ...]) -> IndexingRow:
    row = IndexingRow(*values)
    return IndexingRow(**{**row.__dict__, "state": IndexState(row.state)})


def _row(values: tuple[Any, ...]) -> FileRow:
    row = FileRow(*values)
    return FileRow(**{**row.__dict__, "state": FileState(row.state)})


class Store:
    """The store. Thread-safe (one connection behind a lock); a context manager."""

    def __init__(
        self,
        path: Path,
        *,
        exclusive: bool = True,
        clock: Callable[[], float] = time.time,
        publish: Callable[[Event], None] = nowhere,
    ) -> None:
        self.path = path
        self.clock = clock
        self.publish = publish  # each committed change of state is published
        self._rebuilding: bool | None = None  # cached: a rebuild waits for the server's list
        self._lock = threading.RLock()
        self._lock_file: int | None = None
        self._said: list[StateChanged] = []  # logged and published after COMMIT
        self._batch: tuple[int, bool] | None = None  # (thread, durable) while a batch is open
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if exclusive:
            self._take_lock()
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as error:
            if not exclusive:
                raise StoreError(f"{path}: cannot read the store: {error}") from None
            self._move_aside(str(error))
            self._db = self._connect()
            with self._transaction(durable=True) as db:  # until the server's list is read
                db.execute("INSERT OR REPLACE INTO flags (name, value) VALUES ('rebuild', '1')")

    # ---- opening ---------------------------------------------------------------------------
    def _take_lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise StoreLocked(f"{self.path}: another tlwatch is using this store") from None
        self._lock_file = descriptor

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # FULL for the commits that must be durable
            db.execute("PRAGMA foreign_keys=ON")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
            self._migrate(db)
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.create_function("tlwatch_dirname", 1, os.path.dirname, deterministic=True)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(f"{self.path}: made by a newer tlwatch (schema {version})")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            db.executescript(f"BEGIN IMMEDIATE; {script}; PRAGMA user_version={number}; COMMIT;")

    def _move_aside(self, why: str) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(str(self.path) + suffix)
            if source.exists():
                source.rename(str(aside) + suffix)
        log.error(
            "the store %s was damaged (%s): moved it to %s and starting a new one, "
            "rebuilt from a scan and the server's asset list",
            self.path,
            why,
            aside,
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def batch(self, *, durable: bool = False) -> Iterator[None]:
        """Group the writes made inside into one commit (several files recorded at once); the
        store is held by this thread meanwhile. `durable`: as for one write (a write inside
        that asks for it needs the whole batch durable)."""
        with self._transaction(durable=durable):
            self._batch = (threading.get_ident(), durable)
            try:
                yield
            finally:
                self._batch = None

    @contextlib.contextmanager
    def _transaction(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction; a failure of the store itself comes out as StoreUnavailable,
        with nothing of the transaction kept. `durable`: on disk when this returns, so it
        survives a power cut (an upload's intent, an asset id); other commits survive a crash
        of the process, and reach the disk with the next durable one. Inside a `batch`, a
        part of the batch's commit."""
        batch = self._batch
        if batch is not None and batch[0] == threading.get_ident():  # this thread's own batch
            if durable and not batch[1]:
                raise StoreError("a durable write inside a batch that is not durable")
            yield self._db
            return
        with self._lock, _unavailable("cannot write"):
            self._said.clear()
            if durable:
                self._db.execute("PRAGMA synchronous=FULL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            finally:
                if self._db.in_transaction:  # the body or the COMMIT failed: keep nothing
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                if durable:
                    self._db.execute("PRAGMA synchronous=NORMAL")
            for change in self._said:  # told only once it is true
                _log_change(change.name, change.old, change.new, change.reason)
                self.publish(change)

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock, _unavailable("cannot read"):
            return self._db.execute(sql, tuple(params)).fetchall()

    def probe(self) -> None:
        """Write (and keep) one small row: raise StoreUnavailable while writes still fail."""
        with self._transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at REAL)")
            db.execute("INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)", (self.clock(),))

    # ---- reading ---------------------------------------------------------------------------
    def get(self, file_id: int) -> FileRow:
        rows = self._query(f"SELECT {_COLUMNS} FROM files WHERE id = ?", (file_id,))
        if not rows:
            raise StoreError(f"no file #{file_id} in the store")
        return _row(rows[0])

    def by_path(self, path: bytes) -> FileRow | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM files WHERE path = ?", (path,))
        return _row(rows[0]) if rows else None

    def by_sha256(self, sha256: str, exclude: int | None = None) -> FileRow | None:
        """The file whose upload holds this content (queued, in flight, uploaded or ready)."""
        states = (FileState.QUEUED, FileState.UPLOADING, FileState.UPLOADED, FileState.READY)
        rows = self._query(
            f"SELECT {_COLUMNS} FROM files WHERE sha256 = ? AND state IN (?, ?, ?, ?) "
            "AND id IS NOT ? ORDER BY id LIMIT 1",
            (sha256, *states, exclude),
        )
        return _row(rows[0]) if rows else None

    def duplicates_of(self, file_id: int) -> list[FileRow]:
        """The files recorded as copies of this one."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM files WHERE duplicate_of = ? AND state = ? ORDER BY id",
            (file_id, FileState.DUPLICATE),
        )
        return [_row(r) for r in rows]

    def known_in(self, folder: bytes) -> dict[bytes, tuple[int, int, int]]:
        """The recorded files directly in `folder`, each with (size, mtime_ns, inode): a scan
        asks folder by folder, so its memory does not grow with the number of records."""
        rows = self._query("SELECT path, size, mtime_ns, inode FROM files WHERE dir = ?", (folder,))
        return {path: (size, mtime, inode) for path, size, mtime, inode in rows}

    def in_state(self, *states: FileState) -> list[FileRow]:
        marks = ", ".join("?" * len(states))
        rows = self._query(
            f"SELECT {_COLUMNS} FROM files WHERE state IN ({marks}) ORDER BY id", states
        )
        return [_row(r) for r in rows]

    def all(self) -> list[FileRow]:
        return [_row(r) for r in self._query(f"SELECT {_COLUMNS} FROM files ORDER BY id")]

    def next_due(self, skip_roots: Iterable[bytes] = ()) -> float | None:
        """The earliest time a queued file outside `skip_roots` (folders offline) may be tried,
        or None when none is queued there."""
        skip = tuple(skip_roots)
        marks = ", ".join("?" * len(skip))
        rows = self._query(
            "SELECT MIN(COALESCE(next_attempt_at, 0)) FROM files WHERE state = ? "
            f"AND root NOT IN ({marks})",
            (FileState.QUEUED, *skip),
        )
        value = rows[0][0]
        return None if value is None else float(value)

    def any_in(self, states: Iterable[FileState]) -> bool:
        """Is any file in one of `states`? (One indexed look.)"""
        wanted = tuple(states)
        marks = ", ".join("?" * len(wanted))
        return bool(self._query(f"SELECT 1 FROM files WHERE state IN ({marks}) LIMIT 1", wanted))

    def counts(self) -> dict[tuple[bytes, str], int]:
        rows = self._query("SELECT root, state, COUNT(*) FROM files GROUP BY root, state")
        return {(root, state): count for root, state, count in rows}

    def chunks(self, file_id: int) -> dict[int, str]:
        rows = self._query("SELECT chunk_index, etag FROM chunks WHERE file_id = ?", (file_id,))
        return dict(rows)

    def events(self, file_id: int) -> list[tuple[float, str, str | None, str, str | None]]:
        rows = self._query(
            "SELECT at, kind, old, new, detail FROM events WHERE file_id = ? ORDER BY id",
            (file_id,),
        )
        return [tuple(r) for r in rows]

    # ---- writing: a file's new version, as the intake judged it --------------------------------
    def enqueue(
        self,
        path: bytes,
        root: bytes,
        signature: Signature,
        media: Media,
        metadata: Mapping[str, Any] | None = None,
    ) -> FileRow:
        """A complete media file to upload, with the user metadata it goes with: queued, with
        fresh upload fields."""
        values = {**_FRESH_UPLOAD, **_media(media), "duplicate_of": None}
        values["metadata"] = _json(metadata or {})
        return self._record(path, root, signature, FileState.QUEUED, None, values)

    def hold(
        self, path: bytes, root: bytes, signature: Signature, media: Media, reason: str
    ) -> FileRow:
        """Media that waits for the user (a malformed sidecar, named in `reason`): no API call
        until it is fixed (the next version of the file or its sidecar releases it)."""
        values = {**_FRESH_UPLOAD, **_media(media), "duplicate_of": None}
        return self._record(path, root, signature, FileState.HELD, reason, values)

    def set_metadata(self, file_id: int, metadata: Mapping[str, Any]) -> None:
        """The user metadata a file not yet sent goes with."""
        with self._transaction() as db:
            self._set(db, file_id, {"metadata": _json(metadata)})

    def want_metadata(self, file_id: int, metadata: Mapping[str, Any]) -> None:
        """Newer user metadata for a file already sent: its asset is to be updated (a chore,
        replacing any earlier update not yet sent)."""
        with self._transaction() as db:
            row = self._file_in(db, file_id)
            if row.asset_id is not None:
                self._want_chore(db, row, ChoreKind.METADATA, detail=_json(metadata))

    def unreadable(self, path: bytes, root: bytes, signature: Signature, why: str) -> FileRow:
        """Its content could not be judged (libmagic or the duration reader failed on it): this
        version fails with the reason; a new version of the file is read again."""
        values = {**_FRESH_UPLOAD, "mime": None, "kind": None, "sha256": None, "duplicate_of": None}
        return self._record(path, root, signature, FileState.FAILED, why, values)

    def ignore(
        self, path: bytes, root: bytes, signature: Signature, mime: str, kind: str | None, why: str
    ) -> FileRow:
        """Not media, or not a kind this folder wants: looked at again only when it changes."""
        values = {**_FRESH_UPLOAD, "mime": mime, "kind": kind, "sha256": None, "duplicate_of": None}
        return self._record(path, root, signature, FileState.IGNORED, why, values)

    def duplicate(
        self,
        path: bytes,
        root: bytes,
        signature: Signature,
        media: Media,
        twin: FileRow,
        metadata: Mapping[str, Any] | None = None,
    ) -> FileRow:
        """Same content as `twin`, which holds (or will hold) the asset: no upload."""
        values = {**_FRESH_UPLOAD, **_media(media), "duplicate_of": twin.id}
        values |= {"asset_id": twin.asset_id, "metadata": _json(metadata or {})}
        reason = f"same content as {twin.shown}"
        return self._record(path, root, signature, FileState.DUPLICATE, reason, values)

    def adopt(
        self,
        path: bytes,
        root: bytes,
        signature: Signature,
        media: Media | None,
        asset_id: str,
        asset_status: str,
        reason: str | None,
        metadata: Mapping[str, Any] | None = None,
        *,
        durable: bool = True,
    ) -> FileRow:
        """An asset the server already holds for this file (a rebuilt store, a URL upload).
        `durable=False` where losing it to a power cut costs nothing (the intake adopting from
        the kept list of a rebuild finds it again)."""
        values = {**_FRESH_UPLOAD, "duplicate_of": None, "asset_id": asset_id}
        values["metadata"] = _json(metadata or {})
        values |= {"asset_status": asset_status, "uploaded_at": self.clock()}
        values |= _media(media) if media else {"kind": None}
        return self._record(
            path, root, signature, FileState.UPLOADED, reason, values, durable=durable
        )

    def touch(self, file_id: int, signature: Signature) -> None:
        """The same content under a new signature (touched, copied back): nothing to do."""
        with self._transaction() as db:
            self._set(db, file_id, _signature(signature))

    # ---- writing: uploads ----------------------------------------------------------------------
    def claim_next(self, token: str, skip_roots: Iterable[bytes] = ()) -> FileRow | None:
        """Take the first queued file that is due, outside `skip_roots` (folders offline): it
        becomes `uploading`, attempts + 1, with `token` as its upload token unless it has one
        (an earlier attempt's, to look for first). Durable: this is the upload's intent."""
        skip = tuple(skip_roots)
        marks = ", ".join("?" * len(skip))
        with self._transaction(durable=True) as db:
            found = db.execute(
                f"SELECT {_COLUMNS} FROM files WHERE state = ? "
                f"AND COALESCE(next_attempt_at, 0) <= ? AND root NOT IN ({marks}) "
                "ORDER BY next_attempt_at IS NOT NULL, id LIMIT 1",
                (FileState.QUEUED, self.clock(), *skip),
            ).fetchone()
            if found is None:
                return None
            row = _row(found)
            self._claim(db, row, token)
        return self.get(row.id)

    def claim(self, file_id: int, token: str) -> FileRow | None:
        """Take this queued file for uploading now (a one-off `tlwatch upload`), as above."""
        with self._transaction(durable=True) as db:
            found = db.execute(f"SELECT {_COLUMNS} FROM files WHERE id = ?", (file_id,)).fetchone()
            if found is None or _row(found).state != FileState.QUEUED:
                return None
            self._claim(db, _row(found), token)
        return self.get(file_id)

    def _claim(self, db: sqlite3.Connection, row: FileRow, token: str) -> None:
        values = {"attempts": row.attempts + 1, "upload_token": row.upload_token or token}
        self._change(db, row, FileState.UPLOADING, values, None)

    def start_session(
        self, file_id: int, upload_id: str, asset_id: str, chunk_size: int, total_chunks: int
    ) -> None:
        """A multipart session opened for this file: kept so a restart resumes it."""
        session = {"upload_id": upload_id, "asset_id": asset_id, "chunk_size": chunk_size}
        with self._transaction(durable=True) as db:
            self._set(db, file_id, {**session, "total_chunks": total_chunks})

    def add_chunks(self, file_id: int, chunks: Iterable[tuple[int, str]]) -> None:
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO chunks (file_id, chunk_index, etag) VALUES (?, ?, ?)",
                [(file_id, index, etag) for index, etag in chunks],
            )

    def forget_session(self, file_id: int) -> None:
        """Drop a multipart session and its chunks (expired, or the file changed)."""
        with self._transaction() as db:
            db.execute("DELETE FROM chunks WHERE file_id = ?", (file_id,))
            self._set(db, file_id, dict.fromkeys(_SESSION))

    def requeue(
        self, file_id: int, reason: str, *, at: float | None, attempts: int | None = None
    ) -> FileRow:
        """Back in the queue, to be tried at `at` (epoch seconds; None: at once)."""
        values: dict[str, Any] = {"next_attempt_at": at}
        if attempts is not None:
            values["attempts"] = attempts
        return self._move(file_id, FileState.QUEUED, reason, values)

    def mark_uploaded(self, file_id: int, asset_id: str, asset_status: str) -> FileRow:
        """The API holds an asset for this file: its id, in the transaction that says so."""
        values: dict[str, Any] = {"asset_id": asset_id, "asset_status": asset_status}
        values |= {"uploaded_at": self.clock(), "next_attempt_at": None}
        with self.batch(durable=True):
            row = self._move(file_id, FileState.UPLOADED, None, values, durable=True)
            with self._transaction() as db:  # the ledger of what was sent, for the budgets
                db.execute(
                    "INSERT INTO sent (file_id, at, duration) VALUES (?, ?, ?)",
                    (file_id, self.clock(), row.duration or 0.0),
                )
        return row

    def withdraw(self, file_id: int, reason: str) -> FileRow:
        """The asset just made of this file does not hold it (the file changed or vanished while
        it was sent): back to the queue with fresh upload fields, so neither the poller nor a
        later look-up ever takes that asset for the file."""
        self.forget_session(file_id)
        return self._move(
            file_id, FileState.QUEUED, reason, _FRESH_UPLOAD, expect=FileState.UPLOADED
        )

    def hold_claimed(self, file_id: int, reason: str) -> FileRow:
        """A claimed file waits after all (a media budget is used up); nothing was sent."""
        return self._move(file_id, FileState.HELD, reason, {"next_attempt_at": None})

    def release_held(self, reason_prefix: str) -> int:
        """Files held for a reason starting with `reason_prefix` go back to the queue."""
        rows = [
            r for r in self.in_state(FileState.HELD) if (r.reason or "").startswith(reason_prefix)
        ]
        for row in rows:
            self._move(row.id, FileState.QUEUED, "released: the budget allows it now", {})
        return len(rows)

    def media_minutes(self, since: float = 0.0, exclude: int | None = None) -> float:
        """Minutes of media sent since `since` (epoch), from the ledger (a version sent twice
        counts twice), and being sent now (but `exclude`)."""
        rows = self._query(
            "SELECT (SELECT COALESCE(SUM(duration), 0) FROM sent WHERE at >= ?) + "
            "(SELECT COALESCE(SUM(duration), 0) FROM files WHERE state = ? AND id IS NOT ?)",
            (since, FileState.UPLOADING, exclude),
        )
        return float(rows[0][0]) / 60.0

    def skip(self, file_id: int, reason: str) -> FileRow:
        """This file can never be uploaded as it is."""
        return self._move(file_id, FileState.SKIPPED, reason, {})

    def fail(self, file_id: int, reason: str, *, expect: FileState | None = None) -> FileRow:
        """Refused by the API, or failed processing; with `expect`, only from that state."""
        return self._move(file_id, FileState.FAILED, reason, {}, expect=expect)

    # ---- writing: after the upload ---------------------------------------------------------
    def asset_status(self, file_id: int, old: str | None, new: str, detail: str | None) -> None:
        with self._transaction() as db:
            self._set(db, file_id, {"asset_status": new})
            self._event(db, file_id, "asset", old, new, detail)

    def mark_ready(
        self,
        file_id: int,
        indexes: Iterable[tuple[str, int]] = (),
        after: ChoreKind | None = None,
    ) -> bool:
        """The asset is ready; False when the file had moved on (changed, on its way again).
        `indexes`: (index id, file id) pairs its asset is to be indexed into, wanted in the
        same transaction (each pair once, ever); `after`: the move or delete now owed."""
        with self.batch():
            row = self._move(file_id, FileState.READY, None, {}, expect=FileState.UPLOADED)
            if row.state == FileState.READY and row.asset_id:
                for index_id, asker in indexes:
                    self.want_index(row.asset_id, index_id, asker)
                if after is not None:
                    with self._transaction() as db:
                        self._want_chore(db, row, after)
        return row.state == FileState.READY

    def retriable(self) -> list[int]:
        """The files with something failed: their upload, an indexing, or a chore."""
        rows = self._query(
            "SELECT id FROM files WHERE state = ? "
            "UNION SELECT f.id FROM files f JOIN indexings i ON i.asset_id = f.asset_id "
            "AND i.file_id = f.id WHERE i.state = ? "
            "UNION SELECT file_id FROM chores WHERE state = ? ORDER BY 1",
            (FileState.FAILED, IndexState.FAILED, ChoreState.FAILED),
        )
        return [int(r[0]) for r in rows]

    def retry(self, file_ids: Iterable[int]) -> list[FileRow]:
        """Put failed or skipped files back in the queue, now, with fresh upload fields; and
        their failed indexings and chores. Each file is counted once."""
        moved: dict[int, FileRow] = {}
        for file_id in dict.fromkeys(file_ids):
            row = self.get(file_id)
            if self._retry_after_upload(row):
                moved[file_id] = row
            if row.state == FileState.FAILED and row.sha256 is None:
                with self._transaction() as db:  # never read: read it again when next seen
                    self._set(db, file_id, {"size": -1, "reason": "to be read again"})
                moved[file_id] = self.get(file_id)
            elif row.state in (FileState.FAILED, FileState.SKIPPED):
                self.forget_session(file_id)
                moved[file_id] = self._move(
                    file_id, FileState.QUEUED, "retry asked for", _FRESH_UPLOAD
                )
        return list(moved.values())

    def _retry_after_upload(self, row: FileRow) -> bool:
        """Failed indexings and chores of this file back in the queue; True if any."""
        found = False
        for indexing in self.indexings_of(row.asset_id or ""):
            if indexing.state == IndexState.FAILED:
                self.requeue_indexing(
                    indexing.asset_id, indexing.index_id, "retry asked for", at=0.0, attempts=0
                )
                found = True
        for chore in self.chores_of(row.id):
            if chore.state == ChoreState.FAILED:
                self.requeue_chore(chore, "retry asked for", at=0.0, attempts=0)
                found = True
        return found

    def recover(self, grace: float, keep: Iterable[int] = ()) -> None:
        """Uploads cut off (by a crash, or a store that could not record their end) go back to
        the queue, but those in `keep` (still in flight). Not at once: a request we sent may
        still be finishing on the server, so its look-up waits out `grace` seconds."""
        keep = frozenset(keep)
        for row in self.in_state(FileState.UPLOADING):
            if row.id in keep:
                continue
            values = {
                "attempts": max(row.attempts - 1, 0),
                "next_attempt_at": max(self.clock(), row.updated_at + grace),
            }
            reason = "interrupted; will look for it on the server before sending it again"
            self._move(row.id, FileState.QUEUED, reason, values)
        for indexing in self.indexings(IndexState.SENDING):
            at = max(self.clock(), indexing.updated_at + grace)
            reason = "interrupted; will look for it in the index before sending it again"
            self.requeue_indexing(indexing.asset_id, indexing.index_id, reason, at=at)
        for chore in self.chores(ChoreState.DOING):
            self.requeue_chore(chore, "interrupted; its guard is checked again", at=self.clock())

    # ---- indexing ------------------------------------------------------------------------
    def want_index(self, asset_id: str, index_id: str, file_id: int) -> bool:
        """Index `asset_id` into `index_id` (for `file_id`), unless that pair is known: True
        when it is new."""
        now = self.clock()
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO indexings (asset_id, index_id, file_id, state, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (asset_id, index_id, file_id, IndexState.QUEUED, now, now),
            )
            return cursor.rowcount == 1

    def indexing_due(self) -> bool:
        """Is a queued indexing due now? (One indexed read.)"""
        rows = self._query(
            "SELECT 1 FROM indexings WHERE state = ? AND COALESCE(next_attempt_at, 0) <= ? LIMIT 1",
            (IndexState.QUEUED, self.clock()),
        )
        return bool(rows)

    def claim_indexing(self) -> IndexingRow | None:
        """Take the first queued indexing that is due: it becomes `sending`, attempts + 1.
        Durable: this is the intent."""
        with self._transaction(durable=True) as db:
            found = db.execute(
                f"SELECT {_INDEXING_COLUMNS} FROM indexings WHERE state = ? "
                "AND COALESCE(next_attempt_at, 0) <= ? ORDER BY created_at LIMIT 1",
                (IndexState.QUEUED, self.clock()),
            ).fetchone()
            if found is None:
                return None
            row = _indexing(found)
            self._index_change(db, row, IndexState.SENDING, {"attempts": row.attempts + 1}, None)
        return self.indexing(row.asset_id, row.index_id)

    def indexing_sent(self, asset_id: str, index_id: str, indexed_asset_id: str) -> None:
        """The index holds `indexed_asset_id` for it: durable at once, like an asset id."""
        values = {"indexed_asset_id": indexed_asset_id, "sent_at": self.clock(), "status": None}
        with self._transaction(durable=True) as db:
            row = self._indexing_in(db, asset_id, index_id)
            self._index_change(db, row, IndexState.INDEXING, values, None)

    def indexing_status(
        self,
        asset_id: str,
        index_id: str,
        status: str,
        reason: str | None,
        after: ChoreKind | None = None,
    ) -> bool:
        """The indexed asset's status now; `ready` and `failed` end the indexing. `after`: the
        move or delete owed once it is ready, wanted in the same transaction, only while the
        file is still the version whose asset was indexed. True when that chore was wanted."""
        state = {"ready": IndexState.READY, "failed": IndexState.FAILED}.get(status)
        with self._transaction() as db:
            row = self._indexing_in(db, asset_id, index_id)
            values = {"status": status}
            self._index_change(db, row, state or row.state, values, reason)
            if state != IndexState.READY or after is None or row.file_id is None:
                return False
            file = self._file_in(db, row.file_id)
            if file.state != FileState.READY or file.asset_id != asset_id:
                return False  # a newer version of the file is on its way: it stays
            self._want_chore(db, file, after)
            return True

    def requeue_indexing(
        self, asset_id: str, index_id: str, reason: str, *, at: float, attempts: int | None = None
    ) -> None:
        values: dict[str, Any] = {"next_attempt_at": at}
        if attempts is not None:
            values["attempts"] = attempts
        with self._transaction() as db:
            row = self._indexing_in(db, asset_id, index_id)
            self._index_change(db, row, IndexState.QUEUED, values, reason)

    def fail_indexing(self, asset_id: str, index_id: str, reason: str) -> None:
        with self._transaction() as db:
            row = self._indexing_in(db, asset_id, index_id)
            self._index_change(db, row, IndexState.FAILED, {}, reason)

    def indexing(self, asset_id: str, index_id: str) -> IndexingRow:
        with self._lock:
            return self._indexing_in(self._db, asset_id, index_id)

    def indexings(self, *states: IndexState) -> list[IndexingRow]:
        marks = ", ".join("?" * len(states))
        rows = self._query(
            f"SELECT {_INDEXING_COLUMNS} FROM indexings WHERE state IN ({marks}) "
            "ORDER BY created_at",
            states,
        )
        return [_indexing(r) for r in rows]

    def indexings_of(self, asset_id: str) -> list[IndexingRow]:
        rows = self._query(
            f"SELECT {_INDEXING_COLUMNS} FROM indexings WHERE asset_id = ? ORDER BY created_at",
            (asset_id,),
        )
        return [_indexing(r) for r in rows]

    def all_indexings(self) -> list[IndexingRow]:
        rows = self._query(f"SELECT {_INDEXING_COLUMNS} FROM indexings ORDER BY created_at")
        return [_indexing(r) for r in rows]

    def _indexing_in(self, db: sqlite3.Connection, asset_id: str, index_id: str) -> IndexingRow:
        found = db.execute(
            f"SELECT {_INDEXING_COLUMNS} FROM indexings WHERE asset_id = ? AND index_id = ?",
            (asset_id, index_id),
        ).fetchone()
        if found is None:
            raise StoreError(f"no indexing of asset {asset_id} into index {index_id}")
        return _indexing(found)

    def _index_change(
        self,
        db: sqlite3.Connection,
        row: IndexingRow,
        state: IndexState,
        values: dict[str, Any],
        reason: str | None,
    ) -> None:
        if (row.state, state) not in INDEX_LEGAL:
            raise StoreError(f"illegal indexing transition {row.state} → {state}")
        values = {**values, "state": state, "reason": reason, "updated_at": self.clock()}
        assignments = ", ".join(f"{name} = ?" for name in values)
        db.execute(
            f"UPDATE indexings SET {assignments} WHERE asset_id = ? AND index_id = ?",
            (*values.values(), row.asset_id, row.index_id),
        )
        if row.file_id is not None and state != row.state:
            detail = f"index {row.index_id}" + (f": {reason}" if reason else "")
            self._event(db, row.file_id, "index", row.state, state, detail)

    # ---- chores: what is owed after the upload ---------------------------------------------------
    def _want_chore(
        self, db: sqlite3.Connection, row: FileRow, kind: ChoreKind, detail: str | None = None
    ) -> None:
        """Owe `kind` for this version of the file (its asset and signature). A newer metadata
        update replaces one not yet sent."""
        assert row.asset_id is not None
        now = self.clock()
        if kind == ChoreKind.METADATA:
            db.execute(
                "UPDATE chores SET state = ?, reason = ?, updated_at = ? WHERE file_id = ? "
                "AND kind = ? AND state IN (?, ?)",
                (ChoreState.DROPPED, "superseded", now, row.id, kind, *_OPEN_CHORE),
            )
        db.execute(
            "INSERT INTO chores (file_id, kind, state, asset_id, size, mtime_ns, inode, detail, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.id,
                kind,
                ChoreState.QUEUED,
                row.asset_id,
                *_signature(row.signature).values(),
                detail,
                now,
                now,
            ),
        )
        self._event(db, row.id, "chore", None, kind, None)

    def chores(self, *states: ChoreState) -> list[ChoreRow]:
        marks = ", ".join("?" * len(states))
        rows = self._query(
            f"SELECT {_CHORE_COLUMNS} FROM chores WHERE state IN ({marks}) ORDER BY id", states
        )
        return [_chore(r) for r in rows]

    def all_chores(self) -> list[ChoreRow]:
        return [_chore(r) for r in self._query(f"SELECT {_CHORE_COLUMNS} FROM chores ORDER BY id")]

    def chores_of(self, file_id: int) -> list[ChoreRow]:
        rows = self._query(
            f"SELECT {_CHORE_COLUMNS} FROM chores WHERE file_id = ? ORDER BY id", (file_id,)
        )
        return [_chore(r) for r in rows]

    def chore(self, chore_id: int) -> ChoreRow:
        rows = self._query(f"SELECT {_CHORE_COLUMNS} FROM chores WHERE id = ?", (chore_id,))
        if not rows:
            raise StoreError(f"no chore #{chore_id} in the store")
        return _chore(rows[0])

    def _due_chores_sql(self, what: str, skip: tuple[bytes, ...], kinds: tuple[str, ...]) -> str:
        return (
            f"SELECT {what} FROM chores c JOIN files f ON f.id = c.file_id WHERE c.state = ? "
            f"AND c.kind IN ({', '.join('?' * len(kinds))}) "
            f"AND f.root NOT IN ({', '.join('?' * len(skip))})"
        )

    def next_chore_due(
        self, skip_roots: Iterable[bytes], kinds: Iterable[ChoreKind]
    ) -> float | None:
        """When the next queued chore of `kinds` outside `skip_roots` is due (None: none)."""
        skip, wanted = tuple(skip_roots), tuple(kinds)
        sql = self._due_chores_sql("MIN(COALESCE(c.next_attempt_at, 0))", skip, wanted)
        value = self._query(sql, (ChoreState.QUEUED, *wanted, *skip))[0][0]
        return None if value is None else float(value)

    def claim_chore(
        self, skip_roots: Iterable[bytes], kinds: Iterable[ChoreKind]
    ) -> ChoreRow | None:
        """Take the first due chore of `kinds` whose folder is not in `skip_roots`: `doing`."""
        skip, wanted = tuple(skip_roots), tuple(kinds)
        columns = ", ".join(f"c.{f.name}" for f in fields(ChoreRow))
        sql = self._due_chores_sql(columns, skip, wanted)
        with self._transaction() as db:
            found = db.execute(
                sql + " AND COALESCE(c.next_attempt_at, 0) <= ? ORDER BY c.id LIMIT 1",
                (ChoreState.QUEUED, *wanted, *skip, self.clock()),
            ).fetchone()
            if found is None:
                return None
            chore = _chore(found)
            self._chore_change(db, chore, ChoreState.DOING, {"attempts": chore.attempts + 1})
        return self.chore(chore.id)

    def chore_target(self, chore: ChoreRow, target: bytes) -> ChoreRow:
        """The free name a move goes to, kept (durably) before the move starts: a move cut off
        by a crash finishes under the same name."""
        with self._transaction(durable=True) as db:
            db.execute("UPDATE chores SET target = ? WHERE id = ?", (target, chore.id))
        return self.chore(chore.id)

    def moved(self, chore: ChoreRow, path: bytes, root: bytes) -> None:
        """The file was moved (after upload, as configured): it lives at `path` now."""
        with self._transaction() as db:
            self._chore_change(db, chore, ChoreState.DONE, {})
            values = {"path": path, "root": root, "dir": os.path.dirname(path)}
            self._set(db, chore.file_id, {**values, "reason": f"moved to {shown(path)}"})
            self._event(db, chore.file_id, "chore", chore.kind, ChoreState.DONE, shown(path))

    def deleted(self, chore: ChoreRow) -> None:
        with self._transaction() as db:
            self._chore_change(db, chore, ChoreState.DONE, {})
            self._set(db, chore.file_id, {"reason": "deleted after upload, as configured"})
            self._event(db, chore.file_id, "chore", chore.kind, ChoreState.DONE, None)

    def metadata_sent(self, chore: ChoreRow) -> None:
        """The asset (and its indexed assets) now carry the chore's metadata."""
        with self._transaction() as db:
            self._chore_change(db, chore, ChoreState.DONE, {})
            self._set(db, chore.file_id, {"metadata": chore.detail})

    def drop_chore(self, chore: ChoreRow, reason: str) -> None:
        """Not owed any more: the file is not the version the chore was made for."""
        with self._transaction() as db:
            self._chore_change(db, chore, ChoreState.DROPPED, {}, reason)
            self._event(db, chore.file_id, "chore", chore.kind, ChoreState.DROPPED, reason)

    def fail_chore(self, chore: ChoreRow, reason: str) -> None:
        with self._transaction() as db:
            self._chore_change(db, chore, ChoreState.FAILED, {}, reason)
            self._event(db, chore.file_id, "chore", chore.kind, ChoreState.FAILED, reason)

    def requeue_chore(
        self, chore: ChoreRow, reason: str, *, at: float, attempts: int | None = None
    ) -> None:
        values: dict[str, Any] = {"next_attempt_at": at}
        if attempts is not None:
            values["attempts"] = attempts
        with self._transaction() as db:
            now = _chore(
                db.execute(
                    f"SELECT {_CHORE_COLUMNS} FROM chores WHERE id = ?", (chore.id,)
                ).fetchone()
            )
            self._chore_change(db, now, ChoreState.QUEUED, values, reason)

    def _chore_change(
        self,
        db: sqlite3.Connection,
        chore: ChoreRow,
        state: ChoreState,
        values: dict[str, Any],
        reason: str | None = None,
    ) -> None:
        if (chore.state, state) not in CHORE_LEGAL:
            raise StoreError(f"illegal chore transition {chore.state} → {state}")
        values = {**values, "state": state, "reason": reason, "updated_at": self.clock()}
        assignments = ", ".join(f"{name} = ?" for name in values)
        db.execute(f"UPDATE chores SET {assignments} WHERE id = ?", (*values.values(), chore.id))

    # ---- a rebuilt store: nothing is sent until the server's list is read --------------------
    @property
    def rebuilding(self) -> bool:
        """True from a rebuild (a damaged store moved aside) until the server's asset list has
        been read and recorded: until then no file is uploaded. Survives a restart."""
        if self._rebuilding is not False:
            self._rebuilding = bool(self._query("SELECT 1 FROM flags WHERE name = 'rebuild'"))
        return self._rebuilding

    def listed_remote(self, assets: Mapping[str, tuple[str, str]]) -> int:
        """The server's assets sent by tlwatch are read (sha256 -> (asset id, status)): kept for
        the intake to adopt, the queued files with that content adopted now, and the rebuild
        is over, in one transaction. Return how many queued files were adopted."""
        now = self.clock()
        with self._transaction(durable=True) as db:
            db.executemany(
                "INSERT OR REPLACE INTO remote_assets (sha256, asset_id, status) VALUES (?, ?, ?)",
                [(sha, asset_id, status) for sha, (asset_id, status) in assets.items()],
            )
            queued = db.execute(
                f"SELECT {_COLUMNS} FROM files WHERE state = ?", (FileState.QUEUED,)
            ).fetchall()
            adopted = 0
            for row in map(_row, queued):
                found = assets.get(row.sha256 or "")
                if found is not None:
                    values = {"asset_id": found[0], "asset_status": found[1], "uploaded_at": now}
                    reason = f"found on the server as asset {found[0]}"
                    self._change(db, row, FileState.UPLOADED, values, reason, version=True)
                    adopted += 1
            db.execute("DELETE FROM flags WHERE name = 'rebuild'")
        self._rebuilding = False
        return adopted

    def remote_asset(self, sha256: str) -> tuple[str, str] | None:
        """The (asset id, status) the server held for this content when a rebuild read its list."""
        rows = self._query("SELECT asset_id, status FROM remote_assets WHERE sha256 = ?", (sha256,))
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    def _file_in(self, db: sqlite3.Connection, file_id: int) -> FileRow:
        found = db.execute(f"SELECT {_COLUMNS} FROM files WHERE id = ?", (file_id,)).fetchone()
        if found is None:
            raise StoreError(f"no file #{file_id} in the store")
        return _row(found)

    # ---- watched folders -----------------------------------------------------------------
    def set_folder(self, path: bytes, online: bool, reason: str | None) -> None:
        """Record whether a watched folder is online (for `tlwatch status`)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO folders (path, online, reason, since) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (path) DO UPDATE SET online = excluded.online, "
                "reason = excluded.reason, since = excluded.since",
                (path, int(online), reason, self.clock()),
            )

    def folders(self) -> dict[bytes, tuple[bool, str | None, float]]:
        """Each watched folder's last recorded (online, reason, since)."""
        rows = self._query("SELECT path, online, reason, since FROM folders")
        return {path: (bool(online), reason, since) for path, online, reason, since in rows}

    # ---- the two primitives every write above goes through ----------------------------------
    def _record(
        self,
        path: bytes,
        root: bytes,
        signature: Signature,
        state: FileState,
        reason: str | None,
        values: dict[str, Any],
        *,
        durable: bool = False,
    ) -> FileRow:
        """Insert the file, or move its row to `state` with `values` (a new version of it)."""
        now = self.clock()
        with self._transaction(durable=durable) as db:
            found = db.execute(f"SELECT {_COLUMNS} FROM files WHERE path = ?", (path,)).fetchone()
            if found is None:
                _check_legal(None, state, VERSIONS)
                cursor = db.execute(
                    "INSERT INTO files (root, path, dir, size, mtime_ns, inode, state, "
                    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        root,
                        path,
                        os.path.dirname(path),
                        *_signature(signature).values(),
                        state,
                        now,
                        now,
                    ),
                )
                file_id = int(cursor.lastrowid or 0)
                self._set(db, file_id, {"reason": reason, **values})
                self._event(db, file_id, "state", None, state, reason)
                name = relative_to(path, root)
                asset = values.get("asset_id")
                self._said.append(StateChanged(root, None, state, reason, name, asset))
            else:
                fresh = {"root": root, **_signature(signature), **values}
                self._change(db, _row(found), state, fresh, reason, version=True)
                file_id = found[0]
        return self.get(file_id)

    def _move(
        self,
        file_id: int,
        state: FileState,
        reason: str | None,
        values: dict[str, Any],
        *,
        expect: FileState | None = None,
        durable: bool = False,
    ) -> FileRow:
        """Move a file to `state`, setting `values`; logged and kept as an event. With `expect`,
        only if the file is still in that state (another thread may have moved it on)."""
        with self._transaction(durable=durable) as db:
            found = db.execute(f"SELECT {_COLUMNS} FROM files WHERE id = ?", (file_id,)).fetchone()
            if found is None:
                raise StoreError(f"no file #{file_id} in the store")
            if expect is None or _row(found).state == expect:
                self._change(db, _row(found), state, values, reason)
        return self.get(file_id)

    def _change(
        self,
        db: sqlite3.Connection,
        row: FileRow,
        state: FileState,
        values: dict[str, Any],
        reason: str | None,
        *,
        version: bool = False,
    ) -> None:
        """`version`: a new version of the file, as the intake judged it (or an adoption),
        not a step of its journey."""
        _check_legal(row.state, state, VERSIONS if version else JOURNEY)
        self._set(db, row.id, {"state": state, "reason": reason, **values})
        if state != row.state:
            self._event(db, row.id, "state", row.state, state, reason)
            asset = values.get("asset_id", row.asset_id)
            self._said.append(StateChanged(row.root, row.state, state, reason, row.name, asset))

    def _set(self, db: sqlite3.Connection, file_id: int, values: dict[str, Any]) -> None:
        values = {**values, "updated_at": self.clock()}
        assignments = ", ".join(f"{name} = ?" for name in values)
        db.execute(f"UPDATE files SET {assignments} WHERE id = ?", (*values.values(), file_id))

    def _event(
        self,
        db: sqlite3.Connection,
        file_id: int,
        kind: str,
        old: str | None,
        new: str,
        detail: str | None,
    ) -> None:
        db.execute(
            "INSERT INTO events (file_id, at, kind, old, new, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (file_id, self.clock(), kind, old, new, detail),
        )


# A new version of a file (what the intake decides) may replace any state but `uploading`,
# whose upload in flight notices the change itself. The rest are the journey's own steps.
_NEW_VERSION = (
    FileState.QUEUED,
    FileState.IGNORED,
    FileState.DUPLICATE,
    FileState.UPLOADED,
    FileState.HELD,
    FileState.FAILED,  # its content could not be read
)
_Moves = frozenset[tuple[FileState | None, FileState]]
VERSIONS: _Moves = frozenset(
    (old, new) for old in (None, *FileState) if old != FileState.UPLOADING for new in _NEW_VERSION
)
JOURNEY: _Moves = frozenset(
    {
        (FileState.QUEUED, FileState.UPLOADING),
        (FileState.UPLOADING, FileState.QUEUED),
        (FileState.UPLOADING, FileState.UPLOADED),
        (FileState.UPLOADED, FileState.QUEUED),  # withdrawn: it changed while it was sent
        (FileState.UPLOADING, FileState.FAILED),
        (FileState.UPLOADING, FileState.SKIPPED),
        (FileState.QUEUED, FileState.SKIPPED),  # gone while its upload was being recorded
        (FileState.QUEUED, FileState.QUEUED),  # withdrawn, then to wait for its folder
        (FileState.UPLOADED, FileState.READY),
        (FileState.UPLOADED, FileState.FAILED),
        (FileState.FAILED, FileState.QUEUED),
        (FileState.SKIPPED, FileState.QUEUED),
        (FileState.UPLOADING, FileState.HELD),
        (FileState.HELD, FileState.QUEUED),
    }
)
LEGAL: _Moves = VERSIONS | JOURNEY


INDEX_LEGAL = frozenset(
    {
        (IndexState.QUEUED, IndexState.SENDING),
        (IndexState.QUEUED, IndexState.QUEUED),
        (IndexState.SENDING, IndexState.QUEUED),
        (IndexState.SENDING, IndexState.INDEXING),
        (IndexState.SENDING, IndexState.FAILED),
        (IndexState.INDEXING, IndexState.INDEXING),
        (IndexState.INDEXING, IndexState.READY),
        (IndexState.INDEXING, IndexState.FAILED),
        (IndexState.FAILED, IndexState.QUEUED),
    }
)


CHORE_LEGAL = frozenset(
    {
        (ChoreState.QUEUED, ChoreState.DOING),
        (ChoreState.QUEUED, ChoreState.QUEUED),
        (ChoreState.QUEUED, ChoreState.DROPPED),  # superseded by a newer metadata update
        (ChoreState.DOING, ChoreState.QUEUED),
        (ChoreState.DOING, ChoreState.DONE),
        (ChoreState.DOING, ChoreState.DROPPED),
        (ChoreState.DOING, ChoreState.FAILED),
        (ChoreState.FAILED, ChoreState.QUEUED),
        (ChoreState.FAILED, ChoreState.DROPPED),
    }
)


_OPEN_CHORE = (ChoreState.QUEUED, ChoreState.FAILED)


def _check_legal(
    old: FileState | None, new: FileState, table: frozenset[tuple[FileState | None, FileState]]
) -> None:
    if (old, new) not in table:
        raise StoreError(f"illegal transition {old or 'new'} → {new}")


_SESSION = ("upload_id", "chunk_size", "total_chunks")
_FRESH_UPLOAD: dict[str, Any] = {
    "asset_id": None,
    "asset_status": None,
    "upload_token": None,
    "attempts": 0,
    "next_attempt_at": None,
    "uploaded_at": None,
    **dict.fromkeys(_SESSION),
}


def _json(metadata: Mapping[str, Any]) -> str:
    return json.dumps(dict(metadata), sort_keys=True, ensure_ascii=False)


def _media(media: Media) -> dict[str, Any]:
    return {
        "mime": media.mime,
        "kind": media.kind,
        "sha256": media.sha256,
        "duration": media.duration,
    }


def _signature(signature: Signature) -> dict[str, int]:
    return {"size": signature.size, "mtime_ns": signature.mtime_ns, "inode": signature.inode}


# What SQLite says, in words a user acts on.
_PLAIN = (
    ("full", "disk is full"),
    ("readonly", "the file system is read-only"),
    ("read-only", "the file system is read-only"),
    ("i/o", "I/O error"),
    ("locked", "locked by another process for too long"),
    ("busy", "locked by another process for too long"),
)


@contextlib.contextmanager
def _unavailable(doing: str) -> Iterator[None]:
    """Turn a failure of the store itself (not a bug in a query) into StoreUnavailable."""
    try:
        yield
    except sqlite3.OperationalError as error:
        said = str(error).lower()
        if "no such" in said or "syntax" in said:
            raise  # a bug, not the disk
        plain = next((words for key, words in _PLAIN if key in said), str(error))
        raise StoreUnavailable(f"{doing} ({plain})") from error
    except sqlite3.DatabaseError as error:
        if isinstance(error, sqlite3.IntegrityError | sqlite3.ProgrammingError):
            raise
        raise StoreUnavailable(f"{doing} ({error})") from error


def _log_change(name: bytes, old: str | None, new: str, reason: str | None) -> None:
    level = logging.WARNING if new in (FileState.FAILED, FileState.SKIPPED) else logging.INFO
    suffix = f" ({reason})" if reason else ""
    log.log(level, "%s: %s → %s%s", shown(name), old or "new", new, suffix)

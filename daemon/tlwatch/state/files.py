"""Files: one row per path, its journey (queued → uploading → uploaded → ready, and the side
exits), every change a timestamped event. Two tables of legal moves: a new version of the file,
as the intake judged it (`VERSIONS`), and the steps of its journey (`JOURNEY`).

A rebuilt store (see `engine.py`) keeps the server's list of assets it reads (`remote_assets`)
and adopts what it holds; until that list is read, nothing is uploaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from tlwatch.errors import StoreError
from tlwatch.events import StateChanged
from tlwatch.models import FileState, Media, Probe, Signature, relative_to, shown
from tlwatch.state.engine import Connection, Cursor, Engine


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
    width: int | None  # the picture, as the header says (for the platform's limits)
    height: int | None
    aspect: float | None
    fps: float | None
    parent_id: int | None  # a proxy or segment: the original it stands for (in the spool)
    part: int | None  # its number (1..parts) among the original's parts
    parts: int | None
    offset_seconds: float | None  # where it starts in the original
    lease_host: str | None = None  # the host that claimed it last (its upload, in a fleet)
    lease_epoch: int = 0  # how many claims: a write is fenced by the one it claimed with

    @property
    def probe(self) -> Probe:
        """What its header said, as far as the store keeps it."""
        return Probe(self.duration, self.width, self.height, self.aspect, self.fps)

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


# The queued file to take next: new ones (no time set) first, in the order they came, then the
# one whose retry is due soonest. The order is the index's (files_state, then rowid), so this
# reads one entry however many files are queued: no sort.
_DUE_SQL = (
    "SELECT {columns} FROM files WHERE state = ?{skip} "
    "ORDER BY next_attempt_at NULLS FIRST, id LIMIT 1"
)
# A claim: the file `which` names becomes `uploading` (attempts + 1, an upload token unless it
# has one, this host's lease, one more epoch), in one statement that answers with its row.
_CLAIM = (
    "UPDATE files SET state = ?, reason = NULL, updated_at = ?, attempts = attempts + 1, "
    "upload_token = COALESCE(upload_token, ?), lease_host = ?, lease_epoch = lease_epoch + 1 "
    "WHERE {which} RETURNING {columns}"
)


def _not_in(column: str, values: tuple[Any, ...]) -> str:
    """` AND column NOT IN (?, ...)`, or nothing for no values (SQL has no empty list)."""
    return f" AND {column} NOT IN ({', '.join('?' * len(values))})" if values else ""


_COLUMNS = ", ".join(f.name for f in fields(FileRow))
_BY_ID = f"SELECT {_COLUMNS} FROM files WHERE id = ?"
_BY_PATH = f"SELECT {_COLUMNS} FROM files WHERE path = ?"
# Inside a write: the row read is held until COMMIT (another host of a fleet waits for it), or
# passed over when another host holds it (a claim takes the next one). SQLite, with one writer
# at a time, drops these.
_IDS = "SELECT nextval(pg_get_serial_sequence('files', 'id')) FROM generate_series(1, ?)"
_LOCK = " FOR UPDATE"
_TAKE = " FOR UPDATE SKIP LOCKED"
# The fence of a claimed file's writes: its row is as this thread's claim left it (its host,
# lease epoch and state). A host silent past its lease has lost the file to another, which
# claimed it again (one more epoch); a write whose COMMIT went unanswered may have moved it on.
# A write past the fence sets no epoch, which the column refuses, and the whole transaction
# fails: the store says LeaseLost. The check costs no read, nor a trip of its own.
_FENCE = (
    ", lease_epoch = CASE WHEN lease_host = ? AND lease_epoch = ? AND state = ? "
    "THEN lease_epoch END"
)


_STATE, _ROOT, _PATH = (
    [f.name for f in fields(FileRow)].index(name) for name in ("state", "root", "path")
)
_EMPTY: dict[str, Any] = {f.name: None for f in fields(FileRow)} | {"attempts": 0}
_FIELDS = tuple(_EMPTY)


def _slices(values: list[Any], size: int = 500) -> Iterator[list[Any]]:
    """A long list of query values, a few hundred at a time (SQLite takes at most 32,766)."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _row(values: tuple[Any, ...]) -> FileRow:
    """A row as SQLite gives it -> a FileRow (built once: it is on every hot path)."""
    columns = list(values)
    columns[_STATE] = FileState(columns[_STATE])
    return FileRow(*columns)


HOLDS_CONTENT = (FileState.QUEUED, FileState.UPLOADING, FileState.UPLOADED, FileState.READY)


class Files(Engine):
    """The files table: reading, new versions, uploads, and the primitives every write uses."""

    # ---- reading ---------------------------------------------------------------------------
    def get(self, file_id: int) -> FileRow:
        rows = self._query(_BY_ID, (file_id,))
        if not rows:
            raise StoreError(f"no file #{file_id} in the store")
        return self._file(rows[0])

    def by_path(self, path: bytes) -> FileRow | None:
        rows = self._query(_BY_PATH, (self._places.key(path),))
        return self._file(rows[0]) if rows else None

    def by_paths(self, paths: Iterable[bytes]) -> dict[bytes, FileRow]:
        """The rows of these files that are recorded, by path: one query for a batch."""
        found: dict[bytes, FileRow] = {}
        for some in _slices(list(dict.fromkeys(paths))):
            marks = ", ".join("?" * len(some))
            keys = [self._places.key(path) for path in some]
            rows = self._query(f"SELECT {_COLUMNS} FROM files WHERE path IN ({marks})", keys)
            files = [self._file(row) for row in rows]
            if self._in_transaction():  # (for `_record`: a new file, inserted without a trip)
                self._absent.update(set(keys) - {self._places.key(row.path) for row in files})
            found |= {row.path: row for row in files}
        return found

    def _file(self, values: tuple[Any, ...]) -> FileRow:
        """A row as the database gives it -> a FileRow, its paths as this host sees them."""
        if not self._places.fleet:
            return _row(values)
        columns, local = list(values), self._places.local
        columns[_ROOT], columns[_PATH] = local(columns[_ROOT]), local(columns[_PATH])
        return _row(tuple(columns))

    def holders(self, sha256s: Iterable[str]) -> dict[str, list[FileRow]]:
        """For a batch of contents, the files whose uploads hold each (queued, in flight,
        uploaded, ready, or sent as parts), in id order: one query."""
        found: dict[str, list[FileRow]] = {}
        for some in _slices(list(dict.fromkeys(sha256s))):
            marks = ", ".join("?" * len(some))
            states = (*HOLDS_CONTENT, FileState.FITTING)
            rows = self._query(
                f"SELECT {_COLUMNS} FROM files WHERE sha256 IN ({marks}) "
                "AND state IN (?, ?, ?, ?, ?) ORDER BY id",
                (*some, *states),
            )
            for row in map(self._file, rows):
                found.setdefault(str(row.sha256), []).append(row)
        return found

    def duplicates_of(self, file_ids: Iterable[int]) -> dict[int, list[FileRow]]:
        """The files recorded as copies of each of these (those with any), in id order."""
        found: dict[int, list[FileRow]] = {}
        for some in _slices(list(file_ids)):
            marks = ", ".join("?" * len(some))
            rows = self._query(
                f"SELECT {_COLUMNS} FROM files WHERE duplicate_of IN ({marks}) AND state = ? "
                "ORDER BY id",
                (*some, FileState.DUPLICATE),
            )
            for row in map(self._file, rows):
                found.setdefault(int(row.duplicate_of or 0), []).append(row)
        return found

    def known_in(self, *folders: bytes) -> dict[bytes, tuple[int, int, int]]:
        """The recorded files directly in these folders, each with (size, mtime_ns, inode): a
        scan asks a few folders at a time (one query), so its memory does not grow with the
        number of records."""
        keys = {self._places.key(folder): folder for folder in folders}
        marks = ", ".join("?" * len(keys))
        rows = self._query(
            f"SELECT dir, path, size, mtime_ns, inode FROM files WHERE dir IN ({marks})", keys
        )
        if not self._places.fleet:
            return {path: (size, mtime, inode) for _, path, size, mtime, inode in rows}
        # (every path starts with its folder's key: cut it off, put the folder back)
        return {
            keys[bytes(key)] + path[len(key) :]: (size, mtime, inode)
            for key, path, size, mtime, inode in rows
        }

    def in_state(self, *states: FileState) -> list[FileRow]:
        marks = ", ".join("?" * len(states))
        rows = self._query(
            f"SELECT {_COLUMNS} FROM files WHERE state IN ({marks}) ORDER BY id", states
        )
        return [self._file(r) for r in rows]

    def batches(self) -> dict[bytes, tuple[int, int]]:
        """Each watched folder with files on their way: (done, in all) of its current batch:
        those on their way, and those done since the oldest of them was found (ignored ones
        not counted)."""
        going = (FileState.QUEUED, FileState.UPLOADING, FileState.UPLOADED, FileState.FITTING)
        marks = ", ".join("?" * len(going))
        rows = self._query(
            f"SELECT f.root, SUM(CASE WHEN f.state IN ({marks}) THEN 0 ELSE 1 END), COUNT(*) "
            "FROM files f JOIN (SELECT root, MIN(created_at) AS since FROM files "
            f"WHERE state IN ({marks}) GROUP BY root) b ON b.root = f.root "
            f"WHERE f.state <> ? AND (f.state IN ({marks}) OR f.updated_at >= b.since) "
            "GROUP BY f.root",
            (*going, *going, FileState.IGNORED, *going),
        )
        return {self._places.local(root): (int(done), int(count)) for root, done, count in rows}

    def recent(self, states: Iterable[FileState], limit: int) -> list[FileRow]:
        """The files in `states` that changed last, the latest first (at most `limit`)."""
        wanted = tuple(states)
        marks = ", ".join("?" * len(wanted))
        rows = self._query(
            f"SELECT {_COLUMNS} FROM files WHERE state IN ({marks}) "
            "ORDER BY updated_at DESC, id DESC LIMIT ?",
            (*wanted, limit),
        )
        return [self._file(r) for r in rows]

    def page(
        self, state: FileState | None, root: bytes | None, after: int, limit: int
    ) -> list[FileRow]:
        """Files in id order after id `after` (at most `limit`), in `state` and under the
        watched folder `root` when given: a page of `tlwatch list` and of the web API."""
        where: list[str] = ["id > ?"]
        values: list[Any] = [after]
        if state is not None:
            where.append("state = ?")
            values.append(state)
        if root is not None:
            where.append("root = ?")
            values.append(self._places.key(root))
        rows = self._query(
            f"SELECT {_COLUMNS} FROM files WHERE {' AND '.join(where)} ORDER BY id LIMIT ?",
            (*values, limit),
        )
        return [self._file(r) for r in rows]

    def pending_assets(self) -> list[tuple[int, float | None]]:
        """(id, uploaded_at) of each file whose asset is followed (`uploaded`, with an id)."""
        mine, values = self._places.mine("root")  # (in a fleet, those of its own folders)
        rows = self._query(
            "SELECT id, uploaded_at FROM files WHERE state = ? AND asset_id IS NOT NULL"
            + (f" AND {mine}" if mine else ""),
            (FileState.UPLOADED, *values),
        )
        return [(int(file_id), at) for file_id, at in rows]

    def rows(self, file_ids: Iterable[int]) -> list[FileRow]:
        """These files' rows, in id order (those that exist)."""
        wanted = sorted(file_ids)
        found: list[FileRow] = []
        for start in range(0, len(wanted), 500):  # SQLite's limit on bound values is far above
            part = wanted[start : start + 500]
            marks = ", ".join("?" * len(part))
            sql = f"SELECT {_COLUMNS} FROM files WHERE id IN ({marks}) ORDER BY id"
            found += [self._file(r) for r in self._query(sql, part)]
        return found

    def all(self) -> list[FileRow]:
        return [self._file(r) for r in self._query(f"SELECT {_COLUMNS} FROM files ORDER BY id")]

    def next_due(self, skip_roots: Iterable[bytes] = ()) -> float | None:
        """The earliest time a queued file outside `skip_roots` (folders offline) may be tried,
        or None when none is queued there."""
        where, values = self._due_where(skip_roots)
        rows = self._query(
            _DUE_SQL.format(columns="COALESCE(next_attempt_at, 0)", skip=where),
            (FileState.QUEUED, *values),
        )
        return float(rows[0][0]) if rows else None

    def any_in(self, states: Iterable[FileState]) -> bool:
        """Is any file in one of `states`? (One indexed look.)"""
        wanted = tuple(states)
        marks = ", ".join("?" * len(wanted))
        return bool(self._query(f"SELECT 1 FROM files WHERE state IN ({marks}) LIMIT 1", wanted))

    def counts(self) -> dict[tuple[bytes, str], int]:
        rows = self._query("SELECT root, state, COUNT(*) FROM files GROUP BY root, state")
        return {(self._places.local(root), state): count for root, state, count in rows}

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
        (an earlier attempt's, to look for first). Durable: this is the upload's intent. None
        when none is queued, or the soonest is not due yet."""
        return self._claim(self._next_claim(token, skip_roots))

    def claim(self, file_id: int, token: str) -> FileRow | None:
        """Take this queued file for uploading now (a one-off `tlwatch upload`), as above."""
        claim = self._claim_of(token, "id = ? AND state = ?", file_id, FileState.QUEUED)
        return self._claim(claim)

    def _next_claim(self, token: str, skip_roots: Iterable[bytes]) -> tuple[str, tuple[Any, ...]]:
        """The statement that claims the first queued file, if it is due (and its values)."""
        where, values = self._due_where(skip_roots)
        first = _DUE_SQL.format(columns="id", skip=where) + _TAKE
        due = f"id = ({first}) AND COALESCE(next_attempt_at, 0) <= ?"
        return self._claim_of(token, due, FileState.QUEUED, *values, self.clock())

    def _claim_of(self, token: str, which: str, *values: Any) -> tuple[str, tuple[Any, ...]]:
        sql = _CLAIM.format(which=which, columns=_COLUMNS)
        return sql, (FileState.UPLOADING, self.clock(), token, self.host, *values)

    def _claim(self, claim: tuple[str, tuple[Any, ...]]) -> FileRow | None:
        """Claim the file the statement moves to `uploading`: the claim's own durable
        transaction, answered with its COMMIT (one trip to a fleet's database). Its event is
        written by the database; this thread holds the file from then on."""
        if self._in_transaction():
            raise StoreError("a claim inside a batch (it is a durable write of its own)")
        with self._transaction(durable=True) as db:
            taken = db.execute(*claim)
        return self._claimed(taken)

    def _claimed(self, taken: Cursor) -> FileRow | None:
        """The row a committed claim took (None: none was due), held by this thread."""
        found = taken.fetchone()
        if found is None:
            return None
        row = self._file(found)
        self._hold(row)
        self._tell(
            StateChanged(row.root, FileState.QUEUED, row.state, None, row.name, row.asset_id)
        )
        return row

    def _due_where(
        self, skip_roots: Iterable[bytes], column: str = "root"
    ) -> tuple[str, tuple[Any, ...]]:
        """The SQL (and values) that keeps the due rows this host may take: outside
        `skip_roots` (folders offline), in a folder it reads (a fleet)."""
        skip = tuple(self._places.key(root) for root in skip_roots)
        mine, values = self._places.mine(column)
        return _not_in(column, skip) + (f" AND {mine}" if mine else ""), (*skip, *values)

    def start_session(
        self, file_id: int, upload_id: str, asset_id: str, chunk_size: int, total_chunks: int
    ) -> None:
        """A multipart session opened for this file: kept so a restart resumes it."""
        session = {"upload_id": upload_id, "asset_id": asset_id, "chunk_size": chunk_size}
        with self._transaction(durable=True) as db:
            self._set(db, file_id, {**session, "total_chunks": total_chunks})

    def add_chunks(self, file_id: int, chunks: Iterable[tuple[int, str]]) -> None:
        with self._transaction() as db:
            if file_id in self._held:
                self._set(db, file_id, {})  # (its fence: written only while the claim holds)
            db.executemany(
                "INSERT INTO chunks (file_id, chunk_index, etag) VALUES (?, ?, ?) "
                "ON CONFLICT (file_id, chunk_index) DO UPDATE SET etag = excluded.etag",
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
        # Not a durable commit: the claim before the request was. Should a power cut take this
        # one, the file is found `uploading` at the restart, and its look-up by upload token
        # adopts this asset before anything is sent again.
        with self.batch():
            return self._mark_uploaded(file_id, asset_id, asset_status)

    def mark_uploaded_and_claim(
        self,
        file_id: int,
        asset_id: str,
        asset_status: str,
        token: str,
        skip_roots: Iterable[bytes] = (),
    ) -> tuple[FileRow, FileRow | None]:
        """`mark_uploaded`, and `claim_next` in the same durable commit: a worker's next file
        taken as it records the last (one trip to a fleet's database, one commit, for both)."""
        claim = self._next_claim(token, skip_roots)
        if self._in_transaction():
            raise StoreError("a claim inside a batch (it is a durable write of its own)")
        with self.batch(durable=True):
            row = self._mark_uploaded(file_id, asset_id, asset_status)
            with self._transaction() as db:
                self._journal(db)  # (before the claim's event, which the database writes)
                taken = db.execute(*claim)
        return row, self._claimed(taken)

    def _mark_uploaded(self, file_id: int, asset_id: str, asset_status: str) -> FileRow:
        values: dict[str, Any] = {"asset_id": asset_id, "asset_status": asset_status}
        values |= {"uploaded_at": self.clock(), "next_attempt_at": None}
        row = self._move(file_id, FileState.UPLOADED, None, values)
        with self._transaction() as db:
            self._uploaded(db, file_id, asset_id)
            db.execute(  # the ledger of what was sent, for the budgets
                "INSERT INTO sent (file_id, at, duration) VALUES (?, ?, ?)",
                (file_id, self.clock(), row.duration or 0.0),
            )
        return row

    def unclaim(self, claimed: FileRow, token: str) -> FileRow:
        """Give back a file claimed (`claimed`, as its claim took it) but never sent: queued
        again, due at once, this attempt not counted, and `token` dropped if it was this
        claim's (nothing was sent with it; an earlier attempt's is kept, to be looked for).
        Fenced by that claim, from whichever thread: LeaseLost if another host took the file
        over meanwhile (its upload may be under way with the token)."""
        with self._transaction() as db:
            self._held.setdefault(claimed.id, claimed)  # (its fence; let go with the move)
            row = self._file_in(db, claimed.id)
            values = {"attempts": max(row.attempts - 1, 0), "next_attempt_at": None}
            if row.upload_token == token:
                values["upload_token"] = None
            return self._change(db, row, FileState.QUEUED, values, "not started: given back")

    def withdraw(self, file_id: int, reason: str, *, at: float | None = None) -> FileRow:
        """The asset just made of this file does not hold it (the file changed or vanished while
        it was sent): back to the queue with fresh upload fields, so neither the poller nor a
        later look-up ever takes that asset for the file; due `at` (no other worker takes it
        while this one is still busy with it)."""
        self.forget_session(file_id)
        values = {**_FRESH_UPLOAD, "next_attempt_at": at}
        return self._move(file_id, FileState.QUEUED, reason, values, expect=FileState.UPLOADED)

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
            "(SELECT COALESCE(SUM(duration), 0) FROM files "
            "WHERE state = ? AND id <> COALESCE(?, 0))",
            (since, FileState.UPLOADING, exclude),
        )
        return float(rows[0][0]) / 60.0

    def skip(self, file_id: int, reason: str) -> FileRow:
        """This file can never be uploaded as it is."""
        return self._move(file_id, FileState.SKIPPED, reason, {})

    def fail(self, file_id: int, reason: str, *, expect: FileState | None = None) -> FileRow:
        """Refused by the API, or failed processing; with `expect`, only from that state."""
        return self._move(file_id, FileState.FAILED, reason, {}, expect=expect)

    def asset_status(self, file_id: int, old: str | None, new: str, detail: str | None) -> None:
        with self._transaction() as db:
            self._set(db, file_id, {"asset_status": new})
            self._event(db, file_id, "asset", old, new, detail)

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
                "INSERT INTO remote_assets (sha256, asset_id, status) VALUES (?, ?, ?) "
                "ON CONFLICT (sha256) DO UPDATE SET asset_id = excluded.asset_id, "
                "status = excluded.status",
                [(sha, asset_id, status) for sha, (asset_id, status) in assets.items()],
            )
            queued = db.execute(
                f"SELECT {_COLUMNS} FROM files WHERE state = ? FOR UPDATE", (FileState.QUEUED,)
            ).fetchall()
            adopted = 0
            for row in map(self._file, queued):
                found = assets.get(row.sha256 or "")
                if found is not None:
                    values = {"asset_id": found[0], "asset_status": found[1], "uploaded_at": now}
                    reason = f"found on the server as asset {found[0]}"
                    self._change(db, row, FileState.UPLOADED, values, reason, version=True)
                    adopted += 1
            db.execute("DELETE FROM flags WHERE name = 'rebuild'")
        self._rebuilding, self._remote_listed = False, None
        return adopted

    def remote_asset(self, sha256: str) -> tuple[str, str] | None:
        """The (asset id, status) the server held for this content when a rebuild read its list."""
        if self._remote_listed is None:  # (only a rebuild lists them: looked for once)
            self._remote_listed = bool(self._query("SELECT 1 FROM remote_assets LIMIT 1"))
        if not self._remote_listed:
            return None
        rows = self._query("SELECT asset_id, status FROM remote_assets WHERE sha256 = ?", (sha256,))
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    def _new_version(self, db: Connection, file_id: int) -> None:
        """A new version of the file was recorded (the chores table drops what was owed)."""

    def _uploaded(self, db: Connection, file_id: int, asset_id: str) -> None:
        """The file's upload made `asset_id` (the chores table hands it to what waits for it)."""

    def _file_in(self, db: Connection, file_id: int) -> FileRow:
        """The file's row, to write in this transaction: read once (or by `lock`), and held
        until COMMIT, as the transaction's writes leave it. The file this thread claimed is not
        read: its row is as this thread last wrote it (its state, its upload; another thread
        may have touched its signature or metadata meanwhile), and each write of it carries the
        fence of its claim instead (see `_set`)."""
        held = self._held.get(file_id) or self._locked.get(file_id)
        if held is not None:
            return held
        found = db.execute(_BY_ID + _LOCK, (file_id,)).fetchone()
        if found is None:
            raise StoreError(f"no file #{file_id} in the store")
        row = self._locked[file_id] = self._file(found)
        return row

    def lock(self, file_ids: Iterable[int]) -> None:
        """Read these files' rows for this batch's writes, in one query (in id order, as each
        write would take them): a batch that moves many files reads none of them again."""
        if not self._in_transaction():
            raise StoreError("files locked outside a batch (a bug)")
        wanted = sorted(set(file_ids) - set(self._locked))
        for part in _slices(wanted):
            marks = ", ".join("?" * len(part))
            sql = f"SELECT {_COLUMNS} FROM files WHERE id IN ({marks}) ORDER BY id" + _LOCK
            self._locked.update((row.id, row) for row in map(self._file, self._query(sql, part)))

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
        now, key = self.clock(), self._places.key
        with self._transaction(durable=durable) as db:
            # A new file is the common case: inserted at once (one trip to the database), else
            # its row is read, held, and moved to its new version.
            _check_legal(None, state, VERSIONS)
            columns = {"root": root, "path": path, **_signature(signature), "state": state}
            columns |= {"reason": reason, "created_at": now, "updated_at": now, **values}
            where = key(path)  # (the path as stored)
            stored = {**columns, "root": key(root), "path": where}
            names = ", ".join(["dir", *columns])
            marks = ", ".join("?" * (len(columns) + 1))
            self._journal(db)  # (the database writes the new file's event)
            given = (os.path.dirname(where), *stored.values())
            if self.database.fleet and where in self._absent:
                # Read absent in this transaction: inserted with an id taken ahead, its answer
                # not waited for. Should another host have recorded it since, the COMMIT fails
                # (RecordedMeanwhile) and the batch is recorded again.
                self._absent.discard(where)
                inserted = (self._new_id(db),)
                sql = f"INSERT INTO files (id, {names}) VALUES (?, {marks})"
                db.execute(sql, (*inserted, *given))
            else:
                inserted = db.execute(
                    f"INSERT INTO files ({names}) VALUES ({marks}) "
                    "ON CONFLICT (path) DO NOTHING RETURNING id",
                    given,
                ).fetchone()
            if inserted is not None:
                file_id = int(inserted[0])
                name = relative_to(path, root)
                self._said.append(
                    StateChanged(root, None, state, reason, name, values.get("asset_id"))
                )
                return FileRow(**{**_EMPTY, **columns, "id": file_id})
            else:
                found = db.execute(_BY_PATH + _LOCK, (where,)).fetchone()
                fresh = {"root": root, **_signature(signature), **values}
                row = self._change(db, self._file(found), state, fresh, reason, version=True)
                self._new_version(db, row.id)
                return row

    def _new_id(self, db: Connection) -> int:
        """An id for a new file of a fleet's database, taken ahead from its sequence: as many
        at once as this transaction read absent, used by it alone (ids follow the order files
        were recorded in, as the column's own would; those left unused leave gaps)."""
        if not self._ids:
            wanted = len(self._absent) + 1  # (this one, and each still to come)
            self._ids.extend(int(found[0]) for found in db.execute(_IDS, (wanted,)).fetchall())
        return self._ids.popleft()

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
            row = self._file_in(db, file_id)
            if expect is None or row.state == expect:
                row = self._change(db, row, state, values, reason)
        return row

    def _change(
        self,
        db: Connection,
        row: FileRow,
        state: FileState,
        values: dict[str, Any],
        reason: str | None,
        *,
        version: bool = False,
    ) -> FileRow:
        """Move `row` to `state` with `values`; return the row as it now is. `version`: a new
        version of the file, as the intake judged it (or an adoption), not a step of its
        journey."""
        _check_legal(row.state, state, VERSIONS if version else JOURNEY)
        values = {"state": state, "reason": reason, "updated_at": self.clock(), **values}
        self._set(db, row.id, values)
        if row.state == FileState.UPLOADING and state != FileState.UPLOADING:
            self._after_commit(lambda: self._held.pop(row.id, None))  # this upload is over
        if state != row.state:  # (its event: written by the database)
            asset = values.get("asset_id", row.asset_id)
            self._said.append(StateChanged(row.root, row.state, state, reason, row.name, asset))
        return replace(row, **values)

    def _set(self, db: Connection, file_id: int, values: dict[str, Any]) -> None:
        """Write `values` on the file's row. The file this thread claimed is written only while
        its claim holds, and no read checks it first: the write carries its fence (`_FENCE`),
        which fails the transaction (LeaseLost) should the row not be as the claim left it."""
        values = {"updated_at": self.clock(), **values}
        held = self._held.get(file_id)
        written = {n: values[n] for n in _FIELDS if n in values}
        if held is not None:  # (undone, should the transaction roll back)
            self._held[file_id] = replace(held, **written)
        if file_id in self._locked:
            self._locked[file_id] = replace(self._locked[file_id], **written)
        if self._places.fleet:
            paths = {name: self._places.key(values[name]) for name in _PATHS if name in values}
            values |= paths
        if "state" in values:
            self._journal(db)  # (the database writes the event of a change of state)
        assignments = ", ".join(f"{name} = ?" for name in values)
        fence = (self.host, held.lease_epoch, held.state) if held is not None else ()
        db.execute(
            f"UPDATE files SET {assignments}{_FENCE if fence else ''} WHERE id = ?",
            (*values.values(), *fence, file_id),
        )

    def _event(
        self,
        db: Connection,
        file_id: int,
        kind: str,
        old: str | None,
        new: str,
        detail: str | None,
    ) -> None:
        self._events.append((file_id, self.clock(), kind, old, new, detail))  # (see engine)


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
        (FileState.UPLOADING, FileState.FITTING),  # its verdict: a proxy or segments go instead
        (FileState.FITTING, FileState.READY),  # every part's asset is ready
        (FileState.FITTING, FileState.FAILED),  # its proxy could not be made
        (FileState.FITTING, FileState.SKIPPED),  # gone before its proxy was made
    }
)
LEGAL: _Moves = VERSIONS | JOURNEY


def _check_legal(
    old: FileState | None, new: FileState, table: frozenset[tuple[FileState | None, FileState]]
) -> None:
    if (old, new) not in table:
        raise StoreError(f"illegal transition {old or 'new'} → {new}")


_SESSION = ("upload_id", "chunk_size", "total_chunks")
_PATHS = ("root", "path", "dir")  # kept as keys (see `engine.Places`)
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
        "width": media.width,
        "height": media.height,
        "aspect": media.aspect,
        "fps": media.fps,
    }


def _signature(signature: Signature) -> dict[str, int]:
    return {"size": signature.size, "mtime_ns": signature.mtime_ns, "inode": signature.inode}

"""The store's engine: the only module that imports sqlite3.

One SQLite file in WAL mode: the commits that must survive a power cut (an upload's intent, a
chore's claim) are `synchronous=FULL`, the rest `NORMAL` (they survive a crash of the process,
and reach the disk with the next durable one). Numbered migrations (`schema.py`), run only by
the holder of the exclusive `flock` on `state.db.lock` that keeps a second daemon away; readers
(`tlwatch status`) open the store without the lock, and refuse a schema older than theirs. A
quick check at open. A damaged file is moved aside and a new one started, marked as rebuilding
until the server's asset list has been read (see `files.Files.rebuilding`).

Every write goes through `_transaction` (or a `batch` of them): one lock, one connection, and
what changed is logged and published only after COMMIT. Reads take a connection of their own
from a small pool, so they never wait for a write. The table families build on it:
`files.py` ← `chores.py` ← `indexings.py` ← `Store` (in `__init__.py`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Self

from tlwatch.errors import StoreError, StoreLocked, StoreUnavailable
from tlwatch.events import Event, StateChanged, nowhere
from tlwatch.models import FileState, shown
from tlwatch.state.schema import MIGRATIONS

log = logging.getLogger("tlwatch.state")

Connection = sqlite3.Connection  # what the table families write through
READERS = 4  # connections for reading, shared by every thread


class Engine:
    """The connection, its lock and its transactions. Thread-safe; a context manager."""

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
        self._writing: int | None = None  # the thread inside a write transaction
        self._readers: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()  # idle ones
        self._reader_connections: list[sqlite3.Connection] = []  # every one made, to close
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._exclusive = exclusive  # only the holder of the lock migrates the schema
        if exclusive:
            self._take_lock()
        try:
            self._db = self._connect()
        except sqlite3.OperationalError as error:  # full, read-only, busy: not damage
            raise StoreUnavailable(f"{path}: cannot open the store ({error})") from None
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
            if self._exclusive:  # the daemon checks at start; a reader (`status`) need not
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
        if version < len(MIGRATIONS) and not self._exclusive and version > 0:
            raise StoreError(
                f"{self.path}: made by an older tlwatch (schema {version}); it is upgraded when "
                "the daemon (or `tlwatch scan`) next starts"
            )
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
            for reader in self._reader_connections:
                reader.close()
            self._db.close()
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def batch(self, *, durable: bool = False) -> Iterator[None]:
        """Group the writes made inside into one commit (several files recorded at once); the
        store is held by this thread meanwhile. `durable`: as for one write (a write inside
        that asks for it needs the whole batch durable). Inside this thread's own batch, a
        part of it."""
        batch = self._batch
        if batch is not None and batch[0] == threading.get_ident():
            if durable and not batch[1]:
                raise StoreError("a durable batch inside a batch that is not durable")
            yield
            return
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
                self._writing = threading.get_ident()
                yield self._db
                self._db.execute("COMMIT")
            finally:
                self._writing = None
                if self._db.in_transaction:  # the body or the COMMIT failed: keep nothing
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                if durable:
                    self._db.execute("PRAGMA synchronous=NORMAL")
            for change in self._said:  # told only once it is true
                _log_change(change.name, change.old, change.new, change.reason)
                self.publish(change)

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Read. Under WAL a reader needs no lock: a read takes a connection of its own from a
        small pool (it sees the last committed state) while another thread writes; the thread
        that is writing reads through the writer, and sees its own transaction."""
        if self._writing == threading.get_ident():
            with self._lock, _unavailable("cannot read"):
                return self._db.execute(sql, tuple(params)).fetchall()
        with _unavailable("cannot read"):
            reader = self._reader()
            try:
                return reader.execute(sql, tuple(params)).fetchall()
            finally:
                self._readers.put(reader)

    def _reader(self) -> sqlite3.Connection:
        """An idle reading connection, or a new one while fewer than `READERS` exist (short-
        lived threads, such as a metrics scrape's, leave none behind)."""
        try:
            return self._readers.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if len(self._reader_connections) < READERS:
                reader = sqlite3.connect(
                    self.path, check_same_thread=False, isolation_level=None, timeout=30
                )
                self._reader_connections.append(reader)
                return reader
        return self._readers.get()

    def probe(self) -> None:
        """Write (and keep) one small row: raise StoreUnavailable while writes still fail."""
        with self._transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at REAL)")
            db.execute("INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)", (self.clock(),))


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

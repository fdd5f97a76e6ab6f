"""The store's engine: transactions, reads and what a commit tells, over one of two databases.

A `Database` (`sqlite.py`, the embedded default, or `postgres.py`, for a fleet) gives
connections that speak one SQL: `?` for values, `ON CONFLICT` for upserts, `FOR UPDATE` where a
row is taken (SQLite, which has one writer at a time, drops it). Each database runs its own
numbered migrations (`schema.py`) when it opens. A host's `state.db.lock` (an exclusive `flock`)
keeps a second daemon away from the same state folder; readers (`tlwatch status`) open the store
without it.

Every write goes through `_transaction` (or a `batch` of them): one lock, one connection, and
what changed is logged and published only after COMMIT. Reads take a connection of their own
from a small pool, so they never wait for a write. A failure of the database itself (a full
disk, a server gone) comes out as `StoreUnavailable`; the broken connection is replaced at the
next use. The table families build on it: `files.py` ← `chores.py` ← `indexings.py` ←
`parts.py` ← `Store` (in `__init__.py`).
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self

from tlwatch import hostid
from tlwatch.errors import StoreError, StoreLocked
from tlwatch.events import Event, StateChanged, nowhere
from tlwatch.models import FileState, shown

if TYPE_CHECKING:
    from tlwatch.state.files import FileRow

log = logging.getLogger("tlwatch.state")

READERS = 4  # connections for reading, shared by every thread
WRITERS = 6  # a fleet's connections for writing (SQLite has one)


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Rows:
    """A statement's rows, read already (a Cursor over a list)."""

    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Any]:
        return self._rows


class Connection(Protocol):
    """One connection to the database, speaking the store's SQL (see above)."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def begin(self, *, durable: bool) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...

    @property
    def broken(self) -> bool: ...


class Database(Protocol):
    """Where the store lives: opens connections, and names its failures plainly."""

    where: str  # for messages: a path, or a URL without its password
    fleet: bool  # shared by several hosts (leases and fencing matter)
    skew: float  # the database's clock, less this host's

    def connect(self, *, writer: bool) -> Connection: ...

    def unavailable(self, doing: str) -> contextlib.AbstractContextManager[None]: ...

    def hold(self, name: str, wanted: bool) -> bool: ...

    def close(self) -> None: ...


class Engine:
    """The connections, their lock and the transactions. Thread-safe; a context manager."""

    def __init__(
        self,
        path: Path,
        *,
        url: str | None = None,
        password: str | None = None,
        exclusive: bool = True,
        clock: Callable[[], float] = time.time,
        publish: Callable[[Event], None] = nowhere,
        host: str | None = None,
        shares: Mapping[bytes, str] | None = None,
    ) -> None:
        self.path = path
        self.clock = clock
        self.publish = publish  # each committed change of state is published
        self._rebuilding: bool | None = None  # cached: a rebuild waits for the server's list
        self._remote_listed: bool | None = None  # cached: has a rebuild listed the server's?
        self._no_window: dict[str, float] = {}  # rate-limit family -> none known until then
        self._lock = threading.RLock()  # SQLite's one writer; the pools' counts
        self._lock_file: int | None = None
        self._tx = threading.local()  # this thread's transaction: see `_transaction`
        self._readers: queue.LifoQueue[Connection] = queue.LifoQueue()  # idle ones
        self._reader_count = 0
        self._writers: queue.LifoQueue[Connection] = queue.LifoQueue()  # idle ones (a fleet's)
        self._writer_count = 1
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.host = host if host is not None else hostid.of(path.parent, create=exclusive)
        if exclusive:
            self._take_lock()
        try:
            self.database = _open(path, url, password, exclusive)
            with self.database.unavailable("cannot open the store"):
                self._db = self.database.connect(writer=True)
            if self.database.fleet:
                self._writers.put(self._db)  # the first of the pool
            self._places = Places(self.host, shares or {}, fleet=self.database.fleet)
        except BaseException:
            self._release_lock()
            raise

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

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    def close(self) -> None:
        with self._lock:
            while not self._readers.empty():  # (one in use elsewhere is closed with the process)
                self._readers.get().close()
            while not self._writers.empty():
                self._writers.get().close()
            if not self.database.fleet:  # (a fleet's first writer was one of the pool)
                self._db.close()
            self.database.close()
        self._release_lock()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- writing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def batch(self, *, durable: bool = False) -> Iterator[None]:
        """Group the writes made inside into one commit (several files recorded at once).
        `durable`: as for one write (a write inside that asks for it needs the whole batch
        durable). Inside this thread's own batch, a part of it."""
        with self._transaction(durable=durable, what="batch"):
            yield

    @property
    def _said(self) -> list[StateChanged]:
        """This thread's transaction's changes of state: logged and published after COMMIT."""
        return self._tx.said  # type: ignore[no-any-return]

    @property
    def _events(self) -> list[tuple[Any, ...]]:
        """This thread's transaction's rows of the events table (but the states', written by
        the database itself), written just before COMMIT."""
        return self._tx.events  # type: ignore[no-any-return]

    @property
    def _held(self) -> dict[int, FileRow]:
        """The upload this thread claimed: its file id -> its row as this thread last wrote it,
        with the lease epoch it claimed it with (a thread sends one file at a time). Taken and
        let go once a COMMIT says so; what a transaction wrote on it is undone if it rolls
        back."""
        held: dict[int, FileRow] | None = getattr(self._tx, "held", None)
        if held is None:
            held = self._tx.held = {}
        return held

    @property
    def _locked(self) -> dict[int, FileRow]:
        """The files this thread's transaction has read (and so holds until it ends): id ->
        its row as the transaction has left it. Read once; each write keeps it true."""
        return self._tx.locked  # type: ignore[no-any-return]

    @property
    def _absent(self) -> set[bytes]:
        """The paths (as stored) this thread's transaction read and found no row for."""
        return self._tx.absent  # type: ignore[no-any-return]

    @property
    def _ids(self) -> collections.deque[int]:
        """Ids this thread's transaction took ahead for new files (a fleet's), not used yet."""
        return self._tx.ids  # type: ignore[no-any-return]

    def _after_commit(self, do: Callable[[], object]) -> None:
        """Do this once this thread's transaction has committed (never if it rolls back)."""
        self._tx.after.append(do)

    def _hold(self, row: FileRow) -> None:
        """This thread claimed this file's upload (its only one), as `row` says."""
        self._tx.held = {row.id: row}

    def _in_transaction(self) -> bool:
        return getattr(self._tx, "db", None) is not None

    @contextlib.contextmanager
    def _transaction(self, *, durable: bool = False, what: str = "write") -> Iterator[Connection]:
        """One write transaction; a failure of the database itself comes out as
        StoreUnavailable, with nothing of the transaction kept. `durable`: on disk when this
        returns, so it survives a power cut (an upload's intent, an asset id); other commits
        survive a crash of the process, and reach the disk with the next durable one. Inside
        this thread's own transaction (a `batch`), a part of its commit.

        SQLite has one writer: a transaction holds it. A fleet's database takes writes from
        several connections at once (rows are held by `FOR UPDATE`): each transaction takes
        one from a small pool, so a thread waiting on the network holds no other back."""
        tx = self._tx
        if self._in_transaction():
            if durable and not tx.durable:
                raise StoreError(f"a durable {what} inside a batch that is not durable")
            yield tx.db
            return
        tx.said, tx.events, tx.after, tx.locked, tx.absent = [], [], [], {}, set()
        tx.ids = collections.deque()
        held = dict(self._held)
        with self._writer() as slot, self.database.unavailable("cannot write"):
            db = self._begin(slot, durable)
            done = False
            try:
                tx.db, tx.durable = db, durable
                yield db
                self._journal(db)
                db.commit()
                done = True
            finally:
                tx.db = None
                if not done:  # the body or the COMMIT failed: keep nothing
                    tx.held = held
                    db.rollback()
            for do in tx.after:
                do()
            for change in tx.said:  # told only once it is true (in order, on SQLite's lock)
                self._tell(change)

    def _journal(self, db: Connection) -> None:
        """Write this transaction's events so far (before a change of state, whose own event
        the database writes: the journal keeps their order)."""
        events, self._tx.events = self._tx.events, []
        for start in range(0, len(events), EVENT_ROWS):  # (one statement each)
            rows = events[start : start + EVENT_ROWS]
            values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(rows))
            db.execute(_EVENTS + values, [v for row in rows for v in row])

    def _tell(self, change: StateChanged) -> None:
        """Log and publish a change of state (once it is committed)."""
        _log_change(change.name, change.old, change.new, change.reason)
        self.publish(change)

    @contextlib.contextmanager
    def _writer(self) -> Iterator[list[Connection]]:
        """A writing connection for one transaction, in a slot (`_begin` may replace it):
        SQLite's one, held meanwhile, or an idle one of the pool (a new one while fewer than
        `WRITERS` exist)."""
        if not self.database.fleet:
            with self._lock:
                slot = [self._db]
                try:
                    yield slot
                finally:
                    self._db = slot[0]
            return
        try:
            slot = [self._writers.get_nowait()]
        except queue.Empty:
            slot = [self._new_writer()]
        try:
            yield slot
        finally:
            self._writers.put(slot[0])

    def _new_writer(self) -> Connection:
        with self._lock:
            make = self._writer_count < WRITERS
            self._writer_count += make
        if not make:  # every one is in use: wait for one (not holding the lock)
            return self._writers.get()
        try:
            with self.database.unavailable("cannot write"):
                return self.database.connect(writer=True)
        except BaseException:
            with self._lock:
                self._writer_count -= 1
            raise

    def _begin(self, slot: list[Connection], durable: bool) -> Connection:
        """Begin a write on the slot's connection, or on a new one where the server closed it
        meanwhile (it restarted: found out here, before anything was written)."""
        if slot[0].broken:
            self._renew(slot)
        try:
            slot[0].begin(durable=durable)
        except Exception:
            if not slot[0].broken:
                raise
            self._renew(slot)
            slot[0].begin(durable=durable)
        return slot[0]

    def _renew(self, slot: list[Connection]) -> None:
        slot[0].close()
        slot[0] = self.database.connect(writer=True)

    # ---- reading ---------------------------------------------------------------------------
    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Read. A reader needs no lock: a read takes a connection of its own from a small pool
        (it sees the last committed state) while another thread writes; the thread that is
        writing reads through the writer, and sees its own transaction."""
        if self._in_transaction():
            with self.database.unavailable("cannot read"):
                return list(self._tx.db.execute(sql, tuple(params)).fetchall())
        with self.database.unavailable("cannot read"):
            found = self._read(sql, tuple(params), again=True)
            return found if found is not None else self._read(sql, tuple(params)) or []

    def _read(self, sql: str, params: Sequence[Any], *, again: bool = False) -> list[Any] | None:
        """One read on a reading connection; `again`: None when the server had closed it (it
        restarted), for the caller to read once more on a new one."""
        reader = self._reader()
        try:
            return list(reader.execute(sql, params).fetchall())
        except Exception:
            if again and reader.broken:
                return None
            raise
        finally:
            self._give_back(reader)

    def _reader(self) -> Connection:
        """An idle reading connection, or a new one while fewer than `READERS` exist (short-
        lived threads, such as a metrics scrape's, leave none behind)."""
        try:
            return self._readers.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._reader_count < READERS:
                reader = self.database.connect(writer=False)
                self._reader_count += 1
                return reader
        return self._readers.get()

    def _give_back(self, reader: Connection) -> None:
        if reader.broken:  # a server that went away: the next reader is a new connection
            reader.close()
            with self._lock:
                self._reader_count -= 1
            return
        self._readers.put(reader)

    def lease_clock(self) -> float:
        """Now, by the database's clock (heartbeats and leases are judged by it, whatever the
        hosts' own clocks say); the store's own clock where a test set one."""
        return self.clock() + (self.database.skew if self.clock is time.time else 0.0)

    def hold_lock(self, name: str, wanted: bool = True) -> bool:
        """Hold the fleet-wide lock `name` (held until this host stops or dies, or lets it go:
        `wanted` False): True while this host does."""
        with self._lock, self.database.unavailable("cannot take a lock"):
            return self.database.hold(name, wanted)

    def probe(self) -> None:
        """Write (and keep) one small row: raise StoreUnavailable while writes still fail."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO flags (name, value) VALUES ('probe', ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (str(self.clock()),),
            )


class Places:
    """Where a file is, as the store keeps it. On SQLite, its path. In a fleet's database, a
    path of this host's is `//host/ID/path` (another host's folder may have the same path), and
    a path under a shared folder is `//share/NAME/relative path`, one row whichever host saw it.
    `local` gives a key back as this host sees it (another host's key stays as it is)."""

    def __init__(self, host: str, shares: Mapping[bytes, str], *, fleet: bool) -> None:
        self.fleet = fleet
        self.prefix = f"//host/{host}".encode()
        by_length = sorted(shares.items(), key=lambda item: -len(item[0]))
        self.shares = [(root.rstrip(b"/"), f"//share/{name}".encode()) for root, name in by_length]

    def key(self, path: bytes) -> bytes:
        if not self.fleet:
            return path
        for root, key in self.shares:
            if path == root or path.startswith(root + b"/"):
                return key + path[len(root) :]
        if not path.startswith(b"/"):  # a URL sent by `upload --url` (its root: b"")
            return self.prefix + b"/:" + path
        return self.prefix + path

    def local(self, key: bytes) -> bytes:
        if not self.fleet:
            return key
        if key.startswith(self.prefix + b"/:"):
            return key[len(self.prefix) + 2 :]
        if key.startswith(self.prefix + b"/"):
            return key[len(self.prefix) :]
        for root, shared in self.shares:
            if key == shared or key.startswith(shared + b"/"):
                return root + key[len(shared) :]
        return key

    def owner(self, key: bytes) -> str:
        """The host whose folder holds `key` ("" for a shared folder)."""
        if not self.fleet:
            return self.prefix.removeprefix(b"//host/").decode()
        if key.startswith(b"//host/"):
            return key[len(b"//host/") :].split(b"/", 1)[0].decode()
        return ""

    def mine(self, column: str) -> tuple[str, tuple[bytes, ...]]:
        """A condition (and its values) that keeps the rows whose `column` (a root) this host
        can read: its own folders and the shares it mounts. None ("") on SQLite."""
        if not self.fleet:
            return "", ()
        shared = tuple(key for _, key in self.shares)
        marks = ", ".join("?" * len(shared))
        either = f"{column} IN ({marks}) OR " if shared else ""
        return (
            f"({either}({column} >= ? AND {column} < ?))",
            (*shared, self.prefix + b"/", self.prefix + b"0"),  # ("0" sorts right after "/")
        )


_EVENTS = "INSERT INTO events (file_id, at, kind, old, new, detail) VALUES "
EVENT_ROWS = 500  # a transaction's events are written this many to a statement


def _open(path: Path, url: str | None, password: str | None, exclusive: bool) -> Database:
    # Imported when used (the adapters build on this module): a host on SQLite never loads
    # psycopg (nor libpq).
    if url is None:
        from tlwatch.state.sqlite import SQLite  # noqa: PLC0415

        return SQLite(path, exclusive=exclusive)
    from tlwatch.state.postgres import Postgres  # noqa: PLC0415

    return Postgres(url, password, exclusive=exclusive)


def _log_change(name: bytes, old: str | None, new: str, reason: str | None) -> None:
    level = logging.WARNING if new in (FileState.FAILED, FileState.SKIPPED) else logging.INFO
    suffix = f" ({reason})" if reason else ""
    log.log(level, "%s: %s → %s%s", shown(name), old or "new", new, suffix)

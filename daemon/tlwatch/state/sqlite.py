"""The embedded database: one SQLite file in WAL mode. The only module that imports sqlite3.

The commits that must survive a power cut (an upload's intent, a chore's claim) are
`synchronous=FULL`, the rest `NORMAL` (they survive a crash of the process, and reach the disk
with the next durable one). Numbered migrations (`schema.MIGRATIONS`, counted by `PRAGMA
user_version`), run only by the holder of the host's lock; readers refuse a schema older than
theirs. A quick check at open. A damaged file is moved aside and a new one started, marked as
rebuilding until the server's asset list has been read (see `files.Files.rebuilding`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from tlwatch.errors import LeaseLost, StoreError, StoreUnavailable
from tlwatch.state.engine import Rows
from tlwatch.state.schema import MIGRATIONS

log = logging.getLogger("tlwatch.state")


@lru_cache(maxsize=512)
def _dialect(sql: str) -> str:
    """The store's SQL as SQLite takes it: one writer at a time, so no row is locked."""
    return _ROW_LOCK.sub("", sql)


_ROW_LOCK = re.compile(r" FOR UPDATE( OF \w+)?( SKIP LOCKED)?")
FENCED = "NOT NULL constraint failed: files.lease_epoch"  # a claimed file's late write


class _Connection:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        cursor = self._db.execute(_dialect(sql), params)
        if " RETURNING " in sql:  # (read now: SQLite commits no statement still in progress)
            return Rows(cursor.fetchall())
        return cursor

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._db.executemany(_dialect(sql), rows)

    def begin(self, *, durable: bool) -> None:
        if durable:
            self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("BEGIN IMMEDIATE")
        self._durable = durable

    def commit(self) -> None:
        self._db.execute("COMMIT")
        self._after()

    def rollback(self) -> None:
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
        self._after()

    def _after(self) -> None:
        if self._durable:
            self._durable = False
            self._db.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        self._db.close()

    @property
    def broken(self) -> bool:
        return False  # a file: a failure is of the disk, and the same connection goes on

    _durable = False


class SQLite:
    """One SQLite file on this host's disk."""

    fleet = False
    skew = 0.0

    def __init__(self, path: Path, *, exclusive: bool) -> None:
        self.path = path
        self.where = str(path)
        self._exclusive = exclusive  # only the holder of the lock migrates the schema
        self._first: sqlite3.Connection | None = None
        try:
            self._first = self._open()
        except sqlite3.OperationalError as error:  # full, read-only, busy: not damage
            raise StoreUnavailable(f"{path}: cannot open the store ({error})") from None
        except sqlite3.DatabaseError as error:
            if not exclusive:
                raise StoreError(f"{path}: cannot read the store: {error}") from None
            self._move_aside(str(error))
            self._first = self._open()
            with self._first:  # until the server's list is read
                self._first.execute("PRAGMA synchronous=FULL")
                self._first.execute(
                    "INSERT OR REPLACE INTO flags (name, value) VALUES ('rebuild', '1')"
                )
                self._first.execute("PRAGMA synchronous=NORMAL")

    def connect(self, *, writer: bool) -> _Connection:
        if writer and self._first is not None:  # the one opened (and checked) above
            db, self._first = self._first, None
            return _Connection(db)
        return _Connection(_plain(self.path))

    def _open(self) -> sqlite3.Connection:
        db = _plain(self.path)
        try:
            db.execute("PRAGMA journal_mode=WAL")
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

    @contextlib.contextmanager
    def unavailable(self, doing: str) -> Iterator[None]:
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
            if isinstance(error, sqlite3.IntegrityError) and str(error).endswith(FENCED):
                raise LeaseLost() from None  # (see files._FENCE)
            if isinstance(error, sqlite3.IntegrityError | sqlite3.ProgrammingError):
                raise
            raise StoreUnavailable(f"{doing} ({error})") from error

    def hold(self, name: str, wanted: bool) -> bool:
        """One host: every fleet-wide lock it wants is its own."""
        return wanted

    def close(self) -> None:
        if self._first is not None:
            self._first.close()
            self._first = None


def _plain(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    db.execute("PRAGMA synchronous=NORMAL")  # FULL for the commits that must be durable
    db.execute("PRAGMA foreign_keys=ON")
    return db


# What SQLite says, in words a user acts on.
_PLAIN = (
    ("full", "disk is full"),
    ("readonly", "the file system is read-only"),
    ("read-only", "the file system is read-only"),
    ("i/o", "I/O error"),
    ("locked", "locked by another process for too long"),
    ("busy", "locked by another process for too long"),
)

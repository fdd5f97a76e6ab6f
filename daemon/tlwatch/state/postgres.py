"""A fleet's database: PostgreSQL, shared by every host. The only module that imports psycopg.

Connections are in autocommit mode; a write is an explicit transaction. A commit that need not
survive a power cut of the server is sent with `synchronous_commit = off` (it survives a crash
of tlwatch, as SQLite's `NORMAL`). The server ends a transaction left open by a host that froze
(`idle_in_transaction_session_timeout`), and a host waits at most `lock_timeout` for a row
another host holds: both come out as a store fault, and the work is held and tried again.
Migrations (`schema.PG_MIGRATIONS`) run once, under an advisory lock, whoever starts first.

A statement that takes the next row of a queue (`FOR UPDATE … SKIP LOCKED`, ordered as its
index is) runs with sorting off, so the server walks that index and reads one entry. Left to
its statistics, which a new store lacks for its first minute and a large one has stale while
a card's files pour in, it guesses that few rows are queued and sorts them all for each claim.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import select
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import generators, pq, waiting
from psycopg.adapt import Transformer

from tlwatch.errors import LeaseLost, RecordedMeanwhile, StoreError, StoreUnavailable
from tlwatch.state.engine import Rows
from tlwatch.state.schema import PG_MIGRATIONS

log = logging.getLogger("tlwatch.state")

MIGRATION_LOCK = 0x746C7761_7463680  # "tlwatch": the advisory lock the migrations run under
_SETTINGS = (
    "-c idle_in_transaction_session_timeout=60s -c lock_timeout=30s -c synchronous_commit=off "
    "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=6 "
    "-c tcp_user_timeout=40000"  # the server notices a host gone silent within a minute
)
_TAKES = " SKIP LOCKED"  # a statement that takes the next row of a queue
_KEEPALIVE: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5}


@lru_cache(maxsize=512)
def _literal(sql: str) -> bytes:
    """The store's SQL with `%s` for each value, to be bound here (a transaction's)."""
    return sql.replace("%", "%%").replace("?", "%s").encode()


@lru_cache(maxsize=512)
def _numbered(sql: str) -> bytes:
    """The store's SQL with `$1`, `$2`… for its values, sent apart (or prepared)."""
    pieces = sql.split("?")
    numbered = [piece + (f"${n}" if n < len(pieces) else "") for n, piece in enumerate(pieces, 1)]
    return "".join(numbered).encode()


_DONE = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)
_IDLE = pq.TransactionStatus.IDLE
_TEXT, _BINARY = pq.Format.TEXT, pq.Format.BINARY
PREPARED = 200  # statements prepared on one connection, at most
WAKE = 0.1  # seconds: a wait for the server wakes this often, to let signal handlers run
_Key = tuple[str, tuple[int, ...]]  # a statement: its SQL and its values' types


def _type(value: Any) -> int:
    """The type a value is sent as: int8, float8, bytea, or the server's guess (text, NULL)."""
    if value is None or isinstance(value, str):  # (a state is a str)
        return 0
    if isinstance(value, bytes):
        return 17
    if isinstance(value, float):
        return 701
    if isinstance(value, int):  # (True is 1, as SQLite has it)
        return 20
    raise TypeError(f"the store does not keep a {type(value).__name__}")


class _Connection:
    """One connection, spoken to through libpq itself (`psycopg.pq`) with psycopg's adapters
    (`Transformer`) for values and rows. psycopg's cursors cost 0.1 to 0.3 ms of Python for each
    transaction (py-spy, during `bench/postgres.py`), while all of a transaction's values are
    bound here in a few µs. The wait for the server holds no GIL.

    Outside a transaction, a statement is sent with its values apart. A transaction's
    statements are queued, their values bound here, and sent together in one message when a
    result is read, and at COMMIT: a write whose result is not read costs no trip of its own,
    and one whose result is read after the COMMIT (a claim's) none either."""

    def __init__(self, db: psycopg.Connection[Any]) -> None:
        self._db = db
        self._pq = db.pgconn
        self._adapt = Transformer(db)  # (one thread uses a connection at a time)
        self._encoding = db.info.encoding
        self._queue: list[bytes] | None = None  # a transaction's statements not sent yet
        self._gone = False  # the server ended this connection
        self._later: list[_Later] = []  # the queued statements' answers, to come
        self._in_order = False  # this transaction reads queues in their index's order
        self._prepared: dict[_Key, bytes] = {}  # a statement -> its name ("": not preparable)
        self._uses: dict[_Key, int] = {}  # statements not prepared yet -> times used
        self._wanted: list[_Key] = []  # to prepare before the next transaction

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        key = (sql, tuple(map(_type, params)))
        name = self._prepared.get(key) or self._prepare(key)
        if self._queue is None:
            values = [self._text(value) for value in params]
            formats = [_BINARY if isinstance(value, bytes) else _TEXT for value in params]
            if name:
                found = self._run(self._pq.send_query_prepared, name, values, formats)
            else:
                found = self._run(
                    self._pq.send_query_params, _numbered(sql), values, key[1], formats
                )
            return Rows(self._rows(found[-1]))  # (outside a transaction, read at once)
        if not self._in_order and _TAKES in sql:
            self._queue.append(b"SET LOCAL enable_sort TO off")  # (see above)
            self._in_order = True
        bound = tuple(map(self._bound, params))
        if name:
            arguments = b"(%b)" % b", ".join(bound) if bound else b""
            self._queue.append(b"EXECUTE %b%b" % (name, arguments))
        else:
            self._queue.append(_literal(sql) % bound)
        later = _Later(self, len(self._queue))
        self._later.append(later)
        return later

    def _prepare(self, key: _Key) -> bytes:
        """The statement's name once it is prepared on this connection (from its second use:
        the server parses and plans it once, not every time), else b"". Prepared between
        transactions, where a statement the server cannot prepare costs nothing."""
        if key in self._prepared or len(self._prepared) >= PREPARED:
            return b""
        uses = self._uses[key] = self._uses.get(key, 0) + 1
        if uses < 2:
            if len(self._uses) > 4 * PREPARED:  # (one-offs: lists of values of every length)
                self._uses.clear()
            return b""
        if self._queue is not None or self._pq.transaction_status != _IDLE:
            if uses == 2:
                self._wanted.append(key)
            return b""
        del self._uses[key]
        name = b"tlwatch_%d" % len(self._prepared)
        sql, types = key
        done = self._run(self._pq.send_prepare, name, _numbered(sql), types)[-1]
        if done.status != pq.ExecStatus.COMMAND_OK:
            if self._pq.status == pq.ConnStatus.BAD:
                self._rows(done)  # (raised: the connection is lost)
            name = b""  # sent unprepared, as its first time
        self._prepared[key] = name
        return name

    def _text(self, value: Any) -> bytes | None:
        """A value sent apart: as text (bytes as they are)."""
        if value is None or isinstance(value, bytes):
            return value
        if isinstance(value, str):
            if "\0" in value:  # (libpq would cut the text there; the server has no NUL)
                raise psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
            return value.encode(self._encoding)
        if isinstance(value, float):
            return repr(value).encode()
        return b"%d" % value  # (an int: `_type` refused anything else)

    def _bound(self, value: Any) -> bytes:
        """A value as it is written in SQL. A float is typed so (a bare 1.5 is a numeric)."""
        if isinstance(value, bool):
            value = int(value)
        literal: bytes = self._adapt.as_literal(value)
        if isinstance(value, float) and not literal.endswith(b"::float8"):
            return literal + b"::float8"
        return literal

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        for row in rows:
            self.execute(sql, row)

    def begin(self, *, durable: bool) -> None:
        if self._closed_by_server():
            raise psycopg.OperationalError("the server closed the connection")
        while self._wanted:
            self._prepare(self._wanted.pop())
        # The session's commits are not waited for (`synchronous_commit=off`, as it opened);
        # a durable one is.
        self._queue = [b"BEGIN", b"SET LOCAL synchronous_commit TO on"] if durable else [b"BEGIN"]
        self._later = []
        self._in_order = False

    def result(self, later: _Later) -> list[tuple[Any, ...]]:
        """A queued statement's rows: sent, with all that is queued, unless it was already."""
        if later.rows is None:
            if later not in self._later:
                raise StoreError("a statement's result read from another transaction (a bug)")
            self._send()
        assert later.rows is not None
        return later.rows

    def _send(self) -> None:
        """Send what is queued, in one message; each statement's answer goes to its `_Later`."""
        assert self._queue is not None
        sql, self._queue = b";\n".join(self._queue), []
        later, self._later = self._later, []
        results = self._run(self._pq.send_query, sql)
        self._rows(results[-1])  # (the error that ended the message, if one did)
        for each in later:
            each.rows = self._rows(results[each.index])

    def _run(self, send: Callable[..., None], *args: Any) -> list[pq.abc.PGresult]:
        """Send, and wait for the answer: each statement's result, up to the error that ended
        the message if one did. The wait wakes every `WAKE` seconds, for this thread's signal
        handlers to run (Ctrl-C, a stop); an interrupted statement is cancelled, and the
        connection given up."""
        try:
            send(*args)
            results: list[pq.abc.PGresult] = waiting.wait(
                generators.execute(self._pq), self._pq.socket, interval=WAKE
            )
        except BaseException:
            self._give_up()
            raise
        return results

    def _give_up(self) -> None:
        """Leave this connection, in whatever state a failed or interrupted wait left it: the
        server stops a statement still running (it would hold its rows), and the store opens a
        new connection."""
        self._gone = True
        if self._pq.transaction_status == pq.TransactionStatus.ACTIVE:
            with contextlib.suppress(psycopg.Error):
                self._pq.get_cancel().cancel()

    def _rows(self, result: pq.abc.PGresult) -> list[tuple[Any, ...]]:
        if result.status not in _DONE:
            if self._pq.status == pq.ConnStatus.BAD:
                self._gone = True
                lost = result.get_error_message(self._adapt.encoding)  # (`_plain` shortens it)
                raise psycopg.OperationalError(lost or "the connection was lost")
            raise psycopg.errors.error_from_result(result, encoding=self._adapt.encoding)
        if not result.ntuples:
            return []
        self._adapt.set_pgresult(result)
        return self._adapt.load_rows(0, result.ntuples, tuple)

    def commit(self) -> None:
        assert self._queue is not None
        self._queue.append(b"COMMIT")
        try:
            self._send()  # any error of a write not yet read is raised here
        finally:
            self._queue = None

    def rollback(self) -> None:
        self._queue, self._later = None, []
        if not self.broken and self._pq.transaction_status != _IDLE:
            with contextlib.suppress(psycopg.Error):
                self._run(self._pq.send_query, b"ROLLBACK")

    def _closed_by_server(self) -> bool:
        """Has the server said anything to this idle connection? It only would to end it (it
        shut down or restarted): found out before a transaction is queued on it, for the
        store to open a new one, rather than when its statements are sent."""
        if self.broken:
            return True
        listening = select.poll()  # (not select.select: a descriptor may be over 1023)
        listening.register(self._pq.socket, select.POLLIN)
        if listening.poll(0):
            self._gone = True
        return self._gone

    def close(self) -> None:
        self._db.close()

    @property
    def broken(self) -> bool:
        return self._gone or self._db.closed or self._pq.status == pq.ConnStatus.BAD


class _Later:
    """A statement of a transaction, queued: its rows come once it is sent."""

    def __init__(self, connection: _Connection, place: int) -> None:
        self._connection, self.index = connection, place - 1  # (its result's, in the message)
        self.rows: list[tuple[Any, ...]] | None = None

    def fetchone(self) -> Any:
        rows = self._connection.result(self)
        return rows[0] if rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._connection.result(self)


class Postgres:
    """A PostgreSQL database, named by a URL without its password (given apart)."""

    fleet = True
    skew = 0.0  # the server's clock, less this host's (measured at open)

    def __init__(self, url: str, password: str | None, *, exclusive: bool) -> None:
        self.url = url
        self.where = shown_url(url)
        self._password = password
        self._holds: dict[str, tuple[psycopg.Connection[Any], bool]] = {}
        with self.unavailable("cannot open the store"):
            db = self._connect()
            try:
                self._migrate(db, exclusive)
                self.skew = _skew(db)
            except BaseException:
                db.close()
                raise
        self._first: psycopg.Connection[Any] | None = db  # (the store's first connection)

    def _connect(self) -> psycopg.Connection[Any]:
        extra: dict[str, Any] = {"password": self._password} if self._password else {}
        return psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=10,
            application_name="tlwatch",
            options=_SETTINGS,
            **_KEEPALIVE,
            **extra,
        )

    def connect(self, *, writer: bool) -> _Connection:
        """A new connection; the first is the one the store was opened with (a server process
        started costs the server about 10 ms of CPU)."""
        first, self._first = self._first, None
        return _Connection(first if first is not None else self._connect())

    def _migrate(self, db: psycopg.Connection[Any], exclusive: bool) -> None:
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            db.execute("CREATE TABLE IF NOT EXISTS tlwatch_schema (version INTEGER NOT NULL)")
            found = db.execute("SELECT version FROM tlwatch_schema").fetchone()
            version = int(found[0]) if found else 0
            if found is None:
                db.execute("INSERT INTO tlwatch_schema (version) VALUES (0)")
            if version > len(PG_MIGRATIONS):
                raise StoreError(f"{self.where}: made by a newer tlwatch (schema {version})")
            if version < len(PG_MIGRATIONS) and not exclusive and version > 0:
                raise StoreError(
                    f"{self.where}: made by an older tlwatch (schema {version}); it is "
                    "upgraded when a daemon of this version next starts"
                )
            for number, script in enumerate(PG_MIGRATIONS[version:], start=version + 1):
                db.execute(script)
                db.execute("UPDATE tlwatch_schema SET version = %s", (number,))
                log.info("state store %s: schema %d", self.where, number)

    @contextlib.contextmanager
    def unavailable(self, doing: str) -> Iterator[None]:
        """A server gone, refusing us, or out of room: StoreUnavailable, in plain words. A bug
        in a query (or a broken constraint) stays what it is."""
        try:
            yield
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            raise StoreUnavailable(f"{doing} ({self.where}: {_plain(error)})") from None
        except psycopg.errors.DiskFull as error:
            raise StoreUnavailable(f"{doing} ({self.where}: {_plain(error)})") from None
        except psycopg.errors.UniqueViolation as error:
            if error.diag.constraint_name == "files_path_key":
                raise RecordedMeanwhile() from None  # a file taken for new (files._record)
            raise
        except psycopg.errors.NotNullViolation as error:
            if (error.diag.table_name, error.diag.column_name) == ("files", "lease_epoch"):
                raise LeaseLost() from None  # a claimed file's late write (files._FENCE)
            raise

    def hold(self, name: str, wanted: bool) -> bool:
        """Hold the fleet-wide lock `name` (one shared folder's scan): True while this host
        does; `wanted` False lets it go. Kept on a connection of its own: when this host dies,
        its connection ends (the server's keepalives notice a silent one within a minute) and
        the server lets the lock go, for another host to take."""
        db, held = self._holds.pop(name, (None, False))
        if not wanted:
            if db is not None:
                db.close()
            return False
        if db is not None and held:
            try:
                db.execute("SELECT 1")  # still there?
                self._holds[name] = (db, held)
                return True
            except psycopg.Error:  # the server restarted (and let every lock go): take it anew
                db.close()
                db = None
        if db is None or db.broken or db.closed:
            db = self._connect()
        try:
            found = db.execute("SELECT pg_try_advisory_lock(%s)", (_lock_id(name),)).fetchone()
        except psycopg.Error:
            db.close()
            raise
        held = bool(found and found[0])
        self._holds[name] = (db, held)
        return held

    def close(self) -> None:
        if self._first is not None:
            self._first.close()
            self._first = None
        for db, _ in self._holds.values():
            db.close()
        self._holds.clear()


def _skew(db: psycopg.Connection[Any]) -> float:
    """How far the server's clock is ahead of this host's (seconds): the hosts of a fleet judge
    each other's heartbeats by the server's clock, not by their own."""
    before = time.time()
    found = db.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())").fetchone()
    after = time.time()
    return float(found[0]) - (before + after) / 2 if found else 0.0


def _lock_id(name: str) -> int:
    """A lock's 64-bit key, the same on every host."""
    return int.from_bytes(
        hashlib.sha256(f"tlwatch:{name}".encode()).digest()[:8], "big", signed=True
    )


def _plain(error: psycopg.Error) -> str:
    """The first line of what the server or libpq said (never holds the password)."""
    words = str(error).strip().splitlines()
    return words[0] if words else type(error).__name__


def shown_url(url: str) -> str:
    """The URL as logs and `status` show it: without a password, should it hold one."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}{host}{port}"))

"""The store's work per uploaded file: the statements it sends SQLite, reads, commits and durable
commits, counted while N small files are recorded, uploaded and followed to `ready`
in process against a sandbox (issue 16). With `--postgres`, the same on a PostgreSQL server
this starts (as the tests do): the messages sent to it, each a trip there and back.

Usage: python bench/store_trips.py [--files N] [--postgres]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))  # the tests' PostgreSQL server
from _common import DEMO_KEY
from pgserver import Server, missing

from tlwatch.api import Client
from tlwatch.config import parse
from tlwatch.control import RunState
from tlwatch.intake import Intake
from tlwatch.models import FileState, Signature
from tlwatch.poller import Poller
from tlwatch.sandbox import Settings, make_server
from tlwatch.state import Store
from tlwatch.uploader import Uploader

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


COUNTS: Counter[str] = Counter()
COUNTING = [True]  # (off while the bench itself asks what is left)


def _count(word: str) -> None:
    if COUNTING[0]:
        COUNTS[word] += 1


def _count_statements() -> None:
    """Count each statement the store sends SQLite, and its transactions (what a trigger does
    inside a statement is the database's own work, as an index's is)."""
    from tlwatch.state.sqlite import _Connection  # noqa: PLC0415

    execute, executemany = _Connection.execute, _Connection.executemany
    begin, commit = _Connection.begin, _Connection.commit

    def counted(connection: _Connection, sql: str, params: Any = ()) -> Any:
        _count(sql.split(None, 1)[0].upper())
        return execute(connection, sql, params)

    def counted_many(connection: _Connection, sql: str, rows: Any) -> None:
        rows = list(rows)
        for _ in rows:
            _count(sql.split(None, 1)[0].upper())
        executemany(connection, sql, rows)

    def counted_begin(connection: _Connection, *, durable: bool) -> None:
        _count("BEGIN")
        if durable:
            _count("DURABLE")
        begin(connection, durable=durable)

    def counted_commit(connection: _Connection) -> None:
        _count("COMMIT")
        commit(connection)

    _Connection.execute = counted  # type: ignore[method-assign, assignment]
    _Connection.executemany = counted_many  # type: ignore[method-assign, assignment]
    _Connection.begin = counted_begin  # type: ignore[method-assign, assignment]
    _Connection.commit = counted_commit  # type: ignore[method-assign, assignment]


def _count_trips() -> None:
    """Count each message sent to PostgreSQL (a statement's preparation apart: once a
    connection)."""
    from tlwatch.state.postgres import _Connection  # noqa: PLC0415

    sent = _Connection._run

    def counted(connection: _Connection, send: Any, *args: Any) -> Any:
        _count("PREPARE" if send.__name__ == "send_prepare" else "TRIP")
        return sent(connection, send, *args)

    _Connection._run = counted  # type: ignore[method-assign, assignment]


def _left(store: Store, state: FileState) -> bool:
    """Any file still in `state` (the bench's own question: not counted)."""
    COUNTING[0] = False
    try:
        return store.any_in((state,))
    finally:
        COUNTING[0] = True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--postgres", action="store_true", help="on a PostgreSQL server")
    args = parser.parse_args()
    if args.postgres and (why := missing()):
        print(f"no PostgreSQL here: {why}", file=sys.stderr)
        return 2
    pg = Server.start(fsync=True) if args.postgres else None
    try:
        counts = _run(args.files, pg.database() if pg else None)
    finally:
        if pg is not None:
            pg.stop()
    per = 1 / args.files
    print(f"{args.files} files recorded, uploaded and followed to ready; per file:")
    if pg is not None:
        print(f"  trips to PostgreSQL {counts.get('TRIP', 0) * per:.2f}", end="")
        print(f" (and {counts.get('PREPARE', 0)} statements prepared, once a connection)")
        return 0
    statements = sum(v for k, v in counts.items() if k not in ("BEGIN", "COMMIT", "DURABLE"))
    print(f"  statements {statements * per:.1f}, reads {counts.get('SELECT', 0) * per:.1f}")
    commits, durable = counts.get("COMMIT", 0) * per, counts.get("DURABLE", 0) * per
    print(f"  commits {commits:.2f}, durable {durable:.2f}")
    print(f"  by kind: { {k: round(v * per, 2) for k, v in sorted(counts.items())} }")
    return 0


def _run(count: int, url: str | None) -> dict[str, int]:
    with tempfile.TemporaryDirectory(prefix="tlwatch-bench-") as scratch:
        root = Path(scratch)
        server = make_server("127.0.0.1", 0, Settings(processing_seconds=0.1), root / "sandbox")
        thread = server.start()
        folder = root / "w"
        folder.mkdir()
        for index in range(count):
            (folder / f"IMG_{index:05d}.png").write_bytes(PNG + os.urandom(2000))
        config = parse(
            {"api": {"base_url": server.base_url}, "watch": [{"path": "w"}]},
            source=root / "c.toml",
        )
        files = [(os.fsencode(p), Signature.of(p.stat())) for p in sorted(folder.iterdir())]
        run = RunState()
        try:
            with (
                Store(root / "s.db", url=url) as store,
                Client(DEMO_KEY, base_url=server.base_url) as api,
            ):
                if url is None:
                    _count_statements()
                else:
                    _count_trips()
                COUNTS.clear()
                Intake(store, lambda: config).take_many(files)
                uploader = Uploader(store, api, lambda: config, run)
                while _left(store, FileState.QUEUED):
                    uploader.turn()
                poller = Poller(store, api, lambda: config, run)
                while _left(store, FileState.UPLOADED):
                    poller.poll()
                    time.sleep(0.05)
                return dict(COUNTS)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


if __name__ == "__main__":
    sys.exit(main())

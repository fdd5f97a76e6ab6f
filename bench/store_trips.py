"""The store's work per uploaded file: statements, reads, commits and durable commits, counted
with SQLite's trace callback while N small files are recorded, uploaded and followed to `ready`
in process against a sandbox (issue 16).

Usage: python bench/store_trips.py [--files N]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import ClassVar

sys.path.insert(0, str(Path(__file__).parent))
from _common import DEMO_KEY

from tlwatch.api import Client
from tlwatch.config import parse
from tlwatch.control import RunState
from tlwatch.intake import Intake
from tlwatch.models import FileState, Signature
from tlwatch.poller import Poller
from tlwatch.sandbox import Settings, make_server
from tlwatch.state import Store
from tlwatch.state.engine import Connection, Engine
from tlwatch.uploader import Uploader

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


class Traced(Store):
    """A store whose every statement, on every connection, is counted."""

    counts: ClassVar[Counter[str]] = Counter()

    def _count(self, sql: str) -> None:
        word = sql.split(None, 1)[0].upper() if sql.strip() else ""
        if sql.startswith("PRAGMA synchronous=FULL"):
            word = "DURABLE"
        Traced.counts[word] += 1

    def _reader(self) -> Connection:
        reader = Engine._reader(self)
        _sqlite(reader).set_trace_callback(self._count)
        return reader


def _sqlite(connection: Connection) -> sqlite3.Connection:
    """The sqlite3 connection under the store's own (this bench counts SQLite's statements)."""
    found = getattr(connection, "_db", None)
    assert isinstance(found, sqlite3.Connection)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tlwatch-bench-") as scratch:
        root = Path(scratch)
        server = make_server("127.0.0.1", 0, Settings(processing_seconds=0.1), root / "sandbox")
        thread = server.start()
        folder = root / "w"
        folder.mkdir()
        for index in range(args.files):
            (folder / f"IMG_{index:05d}.png").write_bytes(PNG + os.urandom(2000))
        config = parse(
            {"api": {"base_url": server.base_url}, "watch": [{"path": "w"}]},
            source=root / "c.toml",
        )
        files = [(os.fsencode(p), Signature.of(p.stat())) for p in sorted(folder.iterdir())]
        run = RunState()
        try:
            with Traced(root / "s.db") as store, Client(DEMO_KEY, base_url=server.base_url) as api:
                _sqlite(store._db).set_trace_callback(store._count)
                Traced.counts.clear()
                Intake(store, lambda: config).take_many(files)
                uploader = Uploader(store, api, lambda: config, run)
                while store.any_in((FileState.QUEUED,)):
                    uploader.turn()
                poller = Poller(store, api, lambda: config, run)
                while store.any_in((FileState.UPLOADED,)):
                    poller.poll()
                    time.sleep(0.05)
                counts = dict(Traced.counts)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
    per = 1 / args.files
    statements = sum(v for k, v in counts.items() if k not in ("BEGIN", "COMMIT", "DURABLE"))
    print(f"{args.files} files recorded, uploaded and followed to ready; per file:")
    print(f"  statements {statements * per:.1f}, reads {counts.get('SELECT', 0) * per:.1f}")
    commits, durable = counts.get("COMMIT", 0) * per, counts.get("DURABLE", 0) * per
    print(f"  commits {commits:.2f}, durable {durable:.2f}")
    print(f"  by kind: { {k: round(v * per, 2) for k, v in sorted(counts.items())} }")
    return 0


if __name__ == "__main__":
    sys.exit(main())

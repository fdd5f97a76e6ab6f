"""A recorded tree for the start-up and idle benchmarks: N files in M folders, all in the store."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from tlwatch.models import FileState, Signature
from tlwatch.state import Store


def make_tree(root: Path, files: int, folders: int) -> list[bytes]:
    """Write `files` small files spread over `folders` folders under root/watch."""
    paths = []
    for index in range(files):
        folder = root / "watch" / f"card-{index % folders:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"C{index:05d}.MP4"
        path.write_bytes(index.to_bytes(8, "big"))
        paths.append(os.fsencode(path))
    return paths


def record_all(store_path: Path, root: Path, paths: list[bytes]) -> None:
    """Record every file as ready, in one transaction (setup, not the thing measured)."""
    Store(store_path).close()  # the schema
    now = time.time()
    rows = []
    for path in paths:
        signature = Signature.of(os.stat(path))
        rows.append(
            (
                os.fsencode(root / "watch"),
                path,
                os.path.dirname(path),
                signature.size,
                signature.mtime_ns,
                signature.inode,
                FileState.READY.value,
                now,
                now,
                "video/mp4",
                "video",
            )
        )
    with sqlite3.connect(store_path) as db:
        db.executemany(
            "INSERT INTO files (root, path, dir, size, mtime_ns, inode, state, created_at,"
            " updated_at, mime, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def write_config(root: Path, base_url: str) -> Path:
    config = root / "config.toml"
    config.write_text(
        f'[api]\nbase_url = "{base_url}"\n[state]\npath = "state.db"\n'
        '[[watch]]\npath = "watch"\nsettle_seconds = 1\n'
    )
    return config

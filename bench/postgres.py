"""SQLite next to PostgreSQL: the many-small-files upload and the big-tree rescan, on each store.

Target (issue 18): with the store in PostgreSQL (a durable server on this machine, started here:
`initdb` + `pg_ctl` as an unprivileged user), `tlwatch scan` of many small images and the rescan of
a large tree take at most 1.5x what they take with SQLite. Each figure is the best of `--rounds`
runs, the two stores taking turns (the uploads' medians are shown too: the machine's speed
moves between runs).
Usage: python bench/postgres.py [--files N] [--tree-files N] [--rounds R]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))  # the tests' PostgreSQL server
from _common import DEMO_KEY, sandbox
from _tree import make_tree
from pgserver import Server, missing
from small_files import make_images

ENV = {**os.environ, "TWELVELABS_API_KEY": DEMO_KEY}


def scan(folder: Path, api: str, scratch: Path, url: str | None) -> tuple[float, float]:
    """One `tlwatch scan`: (wall seconds, its CPU seconds)."""
    config = scratch / "config.toml"
    state = f'url = "{url}"\n' if url else ""
    config.write_text(
        f'[api]\nbase_url = "{api}"\nmax_concurrent_uploads = 2\n'
        f'[state]\npath = "{scratch / "state.db"}"\n{state}'
        f'[[watch]]\npath = "{folder}"\nsettle_seconds = 0\n'
    )
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "tlwatch", "scan", "-c", str(config), "--log-level", "warning"],
        check=True,
        env=ENV,
        stdout=subprocess.DEVNULL,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return time.perf_counter() - start, cpu


def small_files(
    server: Server, files: int, rounds: int, scratch: Path, ram: Path
) -> dict[str, float]:
    folder = scratch / "images"
    make_images(folder, files, 200_000)
    walls: dict[str, list[float]] = {"sqlite": [], "postgres": []}
    for _ in range(rounds):
        for store in ("sqlite", "postgres"):
            data = Path(tempfile.mkdtemp(prefix="sandbox-", dir=ram))
            with sandbox(data, "--processing-seconds", "0.5") as (api, _pid):
                url = server.database() if store == "postgres" else None
                wall, _ = scan(folder, api, Path(tempfile.mkdtemp(dir=scratch)), url)
            walls[store].append(wall)
            shutil.rmtree(data)  # (what the sandbox kept: 200 KB a file, in memory)
            if url:
                server.drop(url)  # (else its autovacuum runs during the next rounds)
    return {
        **{store: min(runs) for store, runs in walls.items()},
        **{f"median {store}": statistics.median(runs) for store, runs in walls.items()},
    }


def big_tree(server: Server, files: int, rounds: int, scratch: Path) -> dict[str, float]:
    root = scratch / "tree"
    make_tree(root, files, max(files // 100, 1))
    firsts: dict[str, float] = {}
    again: dict[str, float] = {}
    for _ in range(rounds):
        for store in ("sqlite", "postgres"):
            url = server.database() if store == "postgres" else None
            where = Path(tempfile.mkdtemp(dir=scratch))
            api = "http://127.0.0.1:9/v1.3"  # none of these files is media: no API call
            first, _ = scan(root / "watch", api, where, url)
            second, _ = scan(root / "watch", api, where, url)
            firsts[store] = min(firsts.get(store, first), first)
            again[store] = min(again.get(store, second), second)
            if url:
                server.drop(url)
    return {
        **{f"first {k}": v for k, v in firsts.items()},
        **{f"rescan {k}": v for k, v in again.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--tree-files", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if missing():
        print(f"skipped: {missing()}")
        return 0
    server = Server.start(fsync=True)
    ram = Path("/dev/shm") if Path("/dev/shm").is_dir() else None  # noqa: S108
    try:
        with (
            tempfile.TemporaryDirectory(prefix="tlwatch-bench-") as scratch,
            tempfile.TemporaryDirectory(prefix="tlwatch-bench-", dir=ram) as data,
        ):
            uploads = small_files(server, args.files, args.rounds, Path(scratch), Path(data))
            tree = big_tree(server, args.tree_files, args.rounds, Path(scratch))
    finally:
        server.stop()
    ratios = {
        "upload": uploads["postgres"] / uploads["sqlite"],
        "rescan": tree["rescan postgres"] / tree["rescan sqlite"],
    }
    print(f"best of {args.rounds}, SQLite against PostgreSQL (a durable server on this machine):")
    print(
        f"  {args.files} images of 200 KB uploaded: SQLite {uploads['sqlite']:.1f} s, PostgreSQL"
        f" {uploads['postgres']:.1f} s: {ratios['upload']:.2f}x (target <= 1.5); medians"
        f" {uploads['median sqlite']:.1f} and {uploads['median postgres']:.1f} s:"
        f" {uploads['median postgres'] / uploads['median sqlite']:.2f}x"
    )
    print(
        f"  {args.tree_files} files, first scan: SQLite {tree['first sqlite']:.1f} s, PostgreSQL"
        f" {tree['first postgres']:.1f} s: {tree['first postgres'] / tree['first sqlite']:.2f}x"
    )
    print(
        f"  {args.tree_files} files, rescan: SQLite {tree['rescan sqlite']:.2f} s, PostgreSQL"
        f" {tree['rescan postgres']:.2f} s: {ratios['rescan']:.2f}x (target <= 1.5)"
    )
    return 0 if max(ratios.values()) <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())

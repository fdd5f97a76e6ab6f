"""A large tree: the first scan against `file --mime-type` + `sha256sum`, a rescan with nothing
new against `find -printf`, and peak memory of `scan` and `run`, side by side in one run.

Targets (issues 8, 16), for 100,000 small files (not media: recorded as ignored) in 1,000 folders:
- the first `tlwatch scan` <= 1.5x (`file --mime-type` + `sha256sum`) over the same files;
- a second `tlwatch scan` with nothing new <= 5x `find -type f -printf '%s %T@ %i\\n'`;
- peak RSS <= 90 MB for `scan` and for `run`, and flat in the number of recorded files (the same
  figures for a tree a tenth the size are shown beside them).
Usage: python bench/big_tree.py [--files N] [--folders M]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import DEMO_KEY, MB
from _tree import make_tree


def run(command: list[str], **options: object) -> tuple[float, float, float]:
    """Run a command to its end; return (wall seconds, peak RSS in MB, CPU seconds)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, **options)  # type: ignore[call-overload]
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0, command
    cpu = usage.ru_utime + usage.ru_stime
    return time.perf_counter() - start, usage.ru_maxrss * 1024 / MB, cpu


def shell(command: str, cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, shell=True, cwd=cwd, check=True, stdout=subprocess.DEVNULL)  # noqa: S602
    return time.perf_counter() - start


def config_for(root: Path) -> Path:
    config = root / "config.toml"
    config.write_text(
        '[api]\nbase_url = "http://127.0.0.1:9/v1.3"\n'
        f'[state]\npath = "{root / "state.db"}"\n'
        f'[[watch]]\npath = "{root / "watch"}"\nsettle_seconds = 0\n'
    )
    return config


def tlwatch(*args: str) -> list[str]:
    return [sys.executable, "-m", "tlwatch", *args, "--log-level", "warning"]


ENV = {**os.environ, "TWELVELABS_API_KEY": DEMO_KEY}


def run_peak(config: Path) -> float:
    """`tlwatch run` until its start-up scan is done; its peak RSS in MB."""
    log = config.parent / "run.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tlwatch", "run", "-c", str(config)],
            stdout=out,
            stderr=out,
            env=ENV,
        )
    deadline = time.monotonic() + 600
    while b"scanned" not in log.read_bytes():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    peak = next(
        int(line.split()[1]) * 1024 / MB
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines()
        if line.startswith("VmHWM:")
    )
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    return peak


def measure(root: Path, files: int, folders: int, references: bool) -> dict[str, float]:
    make_tree(root, files, folders)
    config = config_for(root)
    watch = root / "watch"
    figures: dict[str, float] = {}
    if references:
        figures["file"] = shell("find . -type f -print0 | xargs -0 file --mime-type", watch)
        figures["sha256sum"] = shell("find . -type f -print0 | xargs -0 sha256sum", watch)
    first = run(tlwatch("scan", "-c", str(config)), env=ENV)
    figures["first"], figures["first_rss"], figures["first_cpu"] = first
    if references:
        figures["find"] = shell("find . -type f -printf '%s %T@ %i\\n'", watch)
    again = run(tlwatch("scan", "-c", str(config)), env=ENV)
    figures["again"], figures["again_rss"], figures["again_cpu"] = again
    figures["run_rss"] = run_peak(config)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--folders", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tlwatch-bench-") as scratch:
        small = measure(Path(scratch) / "small", args.files // 10, args.folders // 10, False)
        big = measure(Path(scratch) / "big", args.files, args.folders, True)
    reference = big["file"] + big["sha256sum"]
    first, again = big["first"] / reference, big["again"] / big["find"]
    peak = max(big["first_rss"], big["again_rss"], big["run_rss"])
    print(f"{args.files} small files in {args.folders} folders (none of them media):")
    print(
        f"  first scan   tlwatch {big['first']:6.1f} s   file --mime-type {big['file']:5.1f} s"
        f" + sha256sum {big['sha256sum']:4.1f} s   {first:.2f}x (target <= 1.5)"
    )
    print(
        f"  rescan       tlwatch {big['again']:6.2f} s   find -printf {big['find']:5.2f} s"
        f"   {again:.1f}x (target <= 5)"
    )
    micro = 1e6 / args.files
    print(
        f"  CPU per file first scan {big['first_cpu'] * micro:.0f} µs, rescan"
        f" {big['again_cpu'] * micro:.1f} µs (the whole command, start-up included)"
    )
    print(
        f"  peak RSS     scan {big['first_rss']:.0f} MB (first), {big['again_rss']:.0f} MB"
        f" (rescan), run {big['run_rss']:.0f} MB (target <= 90)"
    )
    print(
        f"  a tenth:     scan {small['first_rss']:.0f} MB (first), {small['again_rss']:.0f} MB"
        f" (rescan), run {small['run_rss']:.0f} MB (flat: about the same)"
    )
    return 0 if first <= 1.5 and again <= 5 and peak <= 90 else 1


if __name__ == "__main__":
    sys.exit(main())

"""Shared pieces of the benchmarks: a sandbox in its own process, big files, peak memory."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEMO_KEY = "tlk_sandbox_demo_key_not_secret"
MB = 1_000_000


@contextmanager
def sandbox(data_dir: Path, *extra: str) -> Iterator[tuple[str, int]]:
    """Run `tlwatch sandbox` in its own process (its own GIL); yield (base URL, pid)."""
    command = [
        sys.executable,
        "-m",
        "tlwatch",
        "sandbox",
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
    ]
    with subprocess.Popen([*command, *extra], stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        try:
            yield url, process.pid
        finally:
            process.terminate()
            process.wait(timeout=30)


def make_file(path: Path, size: int) -> Path:
    """Write `size` random bytes to `path`, 8 MB at a time."""
    with path.open("wb") as file:
        left = size
        while left:
            piece = os.urandom(min(left, 8 * MB))
            file.write(piece)
            left -= len(piece)
    return path


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB


def process_peak_mb(pid: int) -> float:
    """Another process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / MB
    raise RuntimeError("no VmHWM")

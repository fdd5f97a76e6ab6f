"""Idle CPU of a running daemon over 60 s, with 20,000 recorded files in 1,000 folders (issue 3).

Usage: python bench/idle_cpu.py [--seconds S] [--files N] [--folders M]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import DEMO_KEY
from _tree import make_tree, record_all, write_config


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--folders", type=int, default=1_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tlwatch-bench-") as scratch:
        root = Path(scratch)
        record_all(root / "state.db", root, make_tree(root, args.files, args.folders))
        config = write_config(root, "http://127.0.0.1:9/v1.3")
        log = (root / "daemon.log").open("w")
        env = {**os.environ, "TWELVELABS_API_KEY": DEMO_KEY}
        daemon = subprocess.Popen(
            [sys.executable, "-m", "tlwatch", "run", "-c", str(config)], stderr=log, env=env
        )
        try:
            deadline = time.monotonic() + 60
            while "scanned" not in (root / "daemon.log").read_text():
                assert time.monotonic() < deadline and daemon.poll() is None
                time.sleep(0.2)
            before, start = cpu_seconds(daemon.pid), time.monotonic()
            time.sleep(args.seconds)  # the measured span itself
            used = cpu_seconds(daemon.pid) - before
            span = time.monotonic() - start
        finally:
            daemon.terminate()
            daemon.wait(timeout=60)
            log.close()
    print(f"idle daemon, {args.files} files in {args.folders} watched folders, {span:.0f} s:")
    print(f"  CPU used {used:.2f} s = {100 * used / span:.2f}% of one core")
    return 0 if used / span < 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())

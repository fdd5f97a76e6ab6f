"""Start-up with 20,000 files already recorded: time to reconcile against `find` over the same tree,
and proof that no file was re-read (issue 3).

Usage: python bench/startup.py [--files N] [--folders M]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import DEMO_KEY
from _tree import make_tree, record_all, write_config


def timed(command: list[str], **options: object) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True, **options)  # type: ignore[call-overload]
    return time.perf_counter() - start, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--folders", type=int, default=1_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tlwatch-bench-") as scratch:
        root = Path(scratch)
        paths = make_tree(root, args.files, args.folders)
        record_all(root / "state.db", root, paths)
        config = write_config(root, "http://127.0.0.1:9/v1.3")  # never called: nothing to send
        env = {**os.environ, "TWELVELABS_API_KEY": DEMO_KEY}
        find_times, scan_times, reconcile_times = [], [], []
        for _ in range(3):
            seconds, _ = timed(["find", str(root / "watch"), "-type", "f"])
            find_times.append(seconds)
            seconds, result = timed(
                [sys.executable, "-m", "tlwatch", "scan", "-c", str(config)], env=env
            )
            scan_times.append(seconds)
            found = re.search(
                r"scanned (\d+) file\(s\) in ([\d.]+) s: (\d+) new or changed", result.stderr
            )
            assert found, result.stderr
            assert int(found.group(1)) == args.files
            assert int(found.group(3)) == 0, "files were taken as new or changed"
            reconcile_times.append(float(found.group(2)))
            assert "→ queued" not in result.stderr  # nothing re-sniffed, re-hashed or re-sent
    find_best, scan_best, reconcile_best = min(find_times), min(scan_times), min(reconcile_times)
    print(f"{args.files} recorded files in {args.folders} folders, best of 3:")
    print(f"  find -type f            {find_best:6.2f} s")
    ratio = reconcile_best / find_best
    print(f"  tlwatch reconcile       {reconcile_best:6.2f} s  ({ratio:.1f}x find)")
    print(f"  tlwatch scan, whole run {scan_best:6.2f} s  (with Python start-up and shutdown)")
    print("  files re-hashed: 0 (0 new or changed; nothing queued)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Idle CPU of a running daemon over 60 s, with 20,000 recorded files in 1,000 folders (issue 3),
and with 100 queued files waiting in a folder that is offline (a card pulled out, issue 15).

Idle is measured once the start-up is over: the first `--warmup` seconds after the scan (the
watches being added, the first look at the API, which is not there) are shown apart.
Usage: python bench/idle_cpu.py [--seconds S] [--warmup W] [--files N] [--folders M]
       [--offline-queued K]
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

from tlwatch.models import Media, Signature
from tlwatch.state import Store


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def queue_offline(store_path: Path, root: Path, count: int) -> None:
    """Record `count` files as queued in root/card, a watched folder that is not there now."""
    card = os.fsencode(root / "card")
    with Store(store_path) as store:
        for index in range(count):
            media = Media("video/mp4", "video", f"{index:064x}", duration=1.0)
            path = os.path.join(card, b"C%05d.MP4" % index)
            store.enqueue(path, card, Signature(1000 + index, 1, index), media)


def measure(root: Path, seconds: float, warmup: float) -> tuple[float, float, float]:
    """Run the daemon configured in root, idle, for `seconds` after `warmup`: (CPU seconds
    used in the warm-up, CPU seconds used idle, idle span)."""
    config = root / "config.toml"
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
        scanned = cpu_seconds(daemon.pid)
        time.sleep(warmup)  # the start-up's tail
        before, start = cpu_seconds(daemon.pid), time.monotonic()
        time.sleep(seconds)  # the measured span itself
        return before - scanned, cpu_seconds(daemon.pid) - before, time.monotonic() - start
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--folders", type=int, default=1_000)
    parser.add_argument("--offline-queued", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tlwatch-bench-") as scratch:
        root = Path(scratch)
        record_all(root / "state.db", root, make_tree(root, args.files, args.folders))
        write_config(root, "http://127.0.0.1:9/v1.3")
        warm, used, span = measure(root, args.seconds, args.warmup)
    print(f"idle daemon, {args.files} files in {args.folders} watched folders, {span:.0f} s:")
    print(f"  CPU used {used:.2f} s = {100 * used / span:.2f}% of one core (target <= 0.5%)")
    print(f"  (the {args.warmup:g} s after the scan, left out: {warm:.2f} s of CPU)")
    with tempfile.TemporaryDirectory(prefix="tlwatch-bench-") as scratch:
        root = Path(scratch)
        (root / "watch").mkdir()
        queue_offline(root / "state.db", root, args.offline_queued)
        config = write_config(root, "http://127.0.0.1:9/v1.3")
        config.write_text(config.read_text() + '[[watch]]\npath = "card"\n')
        _, offline_used, offline_span = measure(root, args.seconds, args.warmup)
    share = 100 * offline_used / offline_span
    print(f"{args.offline_queued} queued files in an offline folder, {offline_span:.0f} s:")
    print(f"  CPU used {offline_used:.2f} s = {share:.2f}% of one core (target <= 0.5%)")
    return 0 if used / span <= 0.005 and share <= 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())

"""Latency: from a file's close to its asset on the server, with the daemon watching.

Target (issue 8, kept from before): p95 <= settle_seconds + 0.5 s. Files are written one after
another, a fraction of a second apart, into a folder `tlwatch run` watches (inotify); the
sandbox notes when it stored each asset.
Usage: python bench/latency.py [--files N] [--settle SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import DEMO_KEY, sandbox

CLIP = Path(__file__).parents[1] / "tests" / "fixtures" / "clip.mp4"


def stored(url: str) -> list[dict[str, object]]:
    root = url.removesuffix("/v1.3")
    with urllib.request.urlopen(root + "/_sandbox/assets") as answer:  # noqa: S310 - loopback
        return list(json.loads(answer.read()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--settle", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tlwatch-bench-") as scratch:
        root = Path(scratch)
        (root / "watch").mkdir()
        with sandbox(root / "sandbox") as (url, _):
            config = root / "config.toml"
            config.write_text(
                f'[api]\nbase_url = "{url}"\n[state]\npath = "{root / "state.db"}"\n'
                f'[[watch]]\npath = "{root / "watch"}"\nsettle_seconds = {args.settle}\n'
            )
            env = {**os.environ, "TWELVELABS_API_KEY": DEMO_KEY}
            log = (root / "daemon.log").open("wb")
            daemon = subprocess.Popen(
                [sys.executable, "-m", "tlwatch", "run", "-c", str(config)], stderr=log, env=env
            )
            while b"watching" not in (root / "daemon.log").read_bytes():
                time.sleep(0.05)
            closed: dict[str, float] = {}
            data = CLIP.read_bytes()
            for index in range(args.files):
                name = f"C{index:04d}.mp4"
                with (root / "watch" / name).open("wb") as file:
                    file.write(data + index.to_bytes(4, "big"))
                closed[name] = time.time()
                time.sleep(0.2)
            deadline = time.monotonic() + 120
            while len(stored(url)) < args.files and time.monotonic() < deadline:
                time.sleep(0.1)
            assets = stored(url)
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
            log.close()
    waits = sorted(float(str(a["created_at"])) - closed[str(a["filename"])] for a in assets)
    p95 = waits[max(int(len(waits) * 0.95) - 1, 0)]
    print(f"{len(waits)} files, settle_seconds = {args.settle}: close -> stored on the server")
    print(f"  median {statistics.median(waits):.2f} s, p95 {p95:.2f} s, max {waits[-1]:.2f} s")
    print(f"  p95 - settle = {p95 - args.settle:.2f} s (target <= 0.5)")
    return 0 if len(waits) == args.files and p95 <= args.settle + 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())

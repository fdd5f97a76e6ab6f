"""Direct upload: our throughput against `curl -F` to the same sandbox, and our peak memory.

Targets (issue 2): a 150 MB direct upload reaches >= 0.95x curl's throughput, measured side by side
in this run; a 190 MB direct upload grows the uploading process's memory by <= 30 MB.
Usage: python bench/direct_upload.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import DEMO_KEY, MB, make_file, sandbox

CHILD = """
import json, sys, time
from tlwatch.api import Client
path, url = sys.argv[1], sys.argv[2]
def status(field):
    line = next(l for l in open("/proc/self/status") if l.startswith(field))
    return int(line.split()[1]) * 1024
with Client(sys.argv[-1], base_url=url, timeout=300) as client:
    before = status("VmRSS:")  # imports done and client made: what the upload adds is measured
    start = time.perf_counter()
    asset = client.create_direct(path)
    seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "growth": status("VmHWM:") - before, "id": asset.id}))
"""


def ours(path: Path, url: str) -> dict[str, float]:
    """Upload in a fresh process, so its peak memory is its own."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), url, DEMO_KEY],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(result.stdout))


def curl(path: Path, url: str) -> float:
    """curl's own transfer time (`time_total`, no process start-up) for the same upload."""
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{time_total}",
            "-H",
            f"x-api-key: {DEMO_KEY}",
            "-F",
            "method=direct",
            "-F",
            f"file=@{path}",
            url + "/assets",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    status, seconds = result.stdout.split()
    assert status == "201", result.stdout
    return float(seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tlwatch-bench-") as scratch:
        root = Path(scratch)
        small = make_file(root / "150mb.bin", 150 * MB)
        large = make_file(root / "190mb.bin", 190 * MB)
        with sandbox(root / "sandbox") as (url, _):
            ours(small, url), curl(small, url)  # warm the page cache and the sandbox
            our_times, curl_times = [], []
            for _ in range(args.rounds):  # alternate, so drift hits both alike
                our_times.append(ours(small, url)["seconds"])
                curl_times.append(curl(small, url))
            memory = ours(large, url)
    our_median, curl_median = statistics.median(our_times), statistics.median(curl_times)
    ratio = curl_median / our_median
    growth = memory["growth"] / MB
    print(f"150 MB direct upload, median of {args.rounds} alternating rounds:")
    print(f"  tlwatch  {150 / our_median:8.1f} MB/s  ({our_median:.3f} s; all: {fmt(our_times)})")
    print(
        f"  curl -F  {150 / curl_median:8.1f} MB/s  ({curl_median:.3f} s; all: {fmt(curl_times)})"
    )
    print(f"  ratio    {ratio:8.2f}x curl   (target >= 0.95)")
    print(f"190 MB direct upload: uploader peak RSS grew {growth:.1f} MB (target <= 30)")
    return 0 if ratio >= 0.95 and growth <= 30 else 1


def fmt(times: list[float]) -> str:
    return ", ".join(f"{t:.3f}" for t in times)


if __name__ == "__main__":
    sys.exit(main())

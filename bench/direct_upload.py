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
import urllib.request
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


def measure(path: Path, url: str) -> dict[str, float]:
    """Upload in a fresh process, so its peak memory is its own."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), url, DEMO_KEY],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(result.stdout))


def ours(path: Path, url: str) -> tuple[float, str]:
    """tlwatch's own transfer time (no process start-up) and the asset id."""
    result = measure(path, url)
    return float(result["seconds"]), str(result["id"])


def curl(path: Path, url: str) -> tuple[float, str]:
    """curl's own transfer time (`time_total`, no process start-up) and the asset id."""
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "-w",
            "\n%{http_code} %{time_total}",
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
    body, metrics = result.stdout.rsplit("\n", 1)
    status, seconds = metrics.split()
    assert status == "201", result.stdout
    return float(seconds), str(json.loads(body)["_id"])


def delete(url: str, asset_id: str) -> None:
    """Keep the sandbox's data dir small between rounds."""
    request = urllib.request.Request(f"{url}/assets/{asset_id}", method="DELETE")  # noqa: S310
    request.add_header("x-api-key", DEMO_KEY)
    urllib.request.urlopen(request).close()  # noqa: S310 - the sandbox on loopback


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    # The sandbox stores uploads in RAM: this machine's disk writes (~440 MB/s, as dd shows) would
    # otherwise cap both clients alike and hide any difference between them.
    ram = Path("/dev/shm")  # noqa: S108 - a private TemporaryDirectory is made inside it
    with (
        tempfile.TemporaryDirectory(prefix="tlwatch-bench-") as scratch,
        tempfile.TemporaryDirectory(
            prefix="tlwatch-bench-", dir=ram if ram.is_dir() else None
        ) as data,
    ):
        root = Path(scratch)
        small = make_file(root / "150mb.bin", 150 * MB)
        large = make_file(root / "190mb.bin", 190 * MB)
        with sandbox(Path(data) / "sandbox") as (url, _):
            times: dict[str, list[float]] = {"tlwatch": [], "curl -F": []}
            senders = {"tlwatch": lambda: ours(small, url), "curl -F": lambda: curl(small, url)}
            for round_ in range(args.rounds + 1):
                order = list(senders) if round_ % 2 else list(reversed(senders))  # take turns
                for name in order:
                    seconds, asset_id = senders[name]()
                    delete(url, asset_id)
                    if round_:  # the first round only warms caches
                        times[name].append(seconds)
            memory = measure(large, url)
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["curl -F"] / medians["tlwatch"]
    growth = memory["growth"] / MB
    print(f"150 MB direct upload to the sandbox, median of {args.rounds} alternating rounds:")
    for name, values in times.items():
        print(f"  {name:<9}{150 / medians[name]:8.1f} MB/s  (all: {fmt(values)} s)")
    print(f"  ratio    {ratio:8.2f}x curl   (target >= 0.95)")
    print(f"190 MB direct upload: uploader peak RSS grew {growth:.1f} MB (target <= 30)")
    return 0 if ratio >= 0.95 and growth <= 30 else 1


def fmt(times: list[float]) -> str:
    return ", ".join(f"{t:.3f}" for t in times)


if __name__ == "__main__":
    sys.exit(main())

"""The bandwidth cap: a direct upload's measured rate against `[api] max_upload_rate`.

Target (issue 11): within +-10 % of the configured rate over 10 s. Uploads a file of 10 s' worth
at the configured rate to a sandbox storing in RAM, with the client and its shared bucket.
Usage: python bench/bandwidth.py [--rate 4MB]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import DEMO_KEY, make_file, sandbox

from tlwatch.api import Client
from tlwatch.limits import Bandwidth, Timetable, parse_rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", default="4MB")
    args = parser.parse_args()
    rate = parse_rate(args.rate)
    assert rate is not None
    ram = Path("/dev/shm") if Path("/dev/shm").is_dir() else None  # noqa: S108
    with (
        tempfile.TemporaryDirectory(prefix="tlwatch-bench-") as scratch,
        tempfile.TemporaryDirectory(prefix="tlwatch-bench-", dir=ram) as data,
    ):
        path = make_file(Path(scratch) / "ten-seconds.bin", int(rate * 10))
        with (
            sandbox(Path(data) / "sandbox") as (url, _),
            Client(
                DEMO_KEY, base_url=url, bandwidth=Bandwidth(Timetable.parse(args.rate))
            ) as client,
        ):
            start = time.perf_counter()
            client.create_direct(path)
            seconds = time.perf_counter() - start
    measured = int(rate * 10)
    ratio = measured / seconds / rate
    print(f"{measured / 1e6:.0f} MB with max_upload_rate = {args.rate!r}: {seconds:.2f} s")
    print(f"  measured {measured / seconds / 1e6:.2f} MB/s = {ratio:.3f}x the cap (target 0.9-1.1)")
    return 0 if 0.9 <= ratio <= 1.1 else 1


if __name__ == "__main__":
    sys.exit(main())

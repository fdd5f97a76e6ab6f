"""Multipart upload of a 1 GB file: client and sandbox memory stay flat.

Targets (issue 2): the client holds at most one chunk in memory; the sandbox's memory stays flat
for a 1 GB multipart upload. Usage: python bench/multipart_memory.py [--size-mb N] [--chunk-mb N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import DEMO_KEY, MB, make_file, process_peak_mb, sandbox

CHILD = """
import json, sys, time
from tlwatch.api import Client
path, url, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
def status(field):
    line = next(l for l in open("/proc/self/status") if l.startswith(field))
    return int(line.split()[1]) * 1024
with Client(sys.argv[-1], base_url=url, timeout=300) as client:
    before = status("VmRSS:")  # imports done and client made: what the upload adds is measured
    start = time.perf_counter()
    session = client.create_multipart("big.bin", "video", size)
    client.upload_chunks(session, path)
    seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "growth": status("VmHWM:") - before}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1000)
    parser.add_argument("--chunk-mb", type=int, default=8)
    args = parser.parse_args()
    chunk = args.chunk_mb * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="tlwatch-bench-") as scratch:
        root = Path(scratch)
        big = make_file(root / "big.bin", args.size_mb * MB)
        with sandbox(root / "sandbox", "--chunk-size", str(chunk)) as (url, pid):
            sandbox_before = process_peak_mb(pid)
            run = [sys.executable, "-c", CHILD, str(big), url, str(big.stat().st_size), DEMO_KEY]
            measured = json.loads(subprocess.run(run, capture_output=True, check=True).stdout)
            sandbox_growth = process_peak_mb(pid) - sandbox_before
            admin = url.removesuffix("/v1.3") + "/_sandbox/assets"
            with urllib.request.urlopen(admin) as response:  # noqa: S310 - loopback
                record = json.loads(response.read())[0]
        with big.open("rb") as file:
            exact = record["sha256"] == hashlib.file_digest(file, "sha256").hexdigest()
    seconds, client_growth = measured["seconds"], measured["growth"] / MB
    print(
        f"{args.size_mb} MB multipart upload in {args.chunk_mb} MiB chunks: "
        f"{seconds:.1f} s ({args.size_mb / seconds:.0f} MB/s), bytes exact: {exact}"
    )
    limit = chunk / MB + 5
    print(
        f"  client peak RSS grew  {client_growth:6.1f} MB (target <= one chunk + 5 = {limit:.1f})"
    )
    print(f"  sandbox peak RSS grew {sandbox_growth:6.1f} MB (target: flat, <= 30)")
    return 0 if exact and client_growth <= limit and sandbox_growth <= 30 else 1


if __name__ == "__main__":
    sys.exit(main())

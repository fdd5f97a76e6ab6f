"""Many small files: `tlwatch scan` against `xargs -P N curl -F`, side by side, to one sandbox.

Target (issue 8): 2,000 images of 200 KB go up >= 1.2x as fast as `ls | xargs -P 2 curl -F` (the
same two connections at a time); `-P 8` is reported too. Each run gets a fresh sandbox storing in
RAM; the sandbox's own CPU time is shown, to tell when it, not the client, is the limit.
Usage: python bench/small_files.py [--files N] [--size BYTES]
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
from _common import DEMO_KEY, sandbox

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


def make_images(folder: Path, count: int, size: int) -> None:
    folder.mkdir(parents=True)
    for index in range(count):
        (folder / f"IMG_{index:05d}.png").write_bytes(PNG + os.urandom(size - len(PNG)))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def curl_all(folder: Path, url: str, parallel: int) -> None:
    command = (
        f"ls | xargs -P {parallel} -I{{}} curl -sS -f -o /dev/null -H 'x-api-key: {DEMO_KEY}' "
        f"-F method=direct -F 'file=@{{}}' {url}/assets"
    )
    subprocess.run(command, shell=True, cwd=folder, check=True)  # noqa: S602 - the benchmark's own pipeline


def tlwatch_scan(folder: Path, url: str, scratch: Path) -> None:
    config = scratch / "config.toml"
    config.write_text(
        f'[api]\nbase_url = "{url}"\nmax_concurrent_uploads = 2\n'
        f'[state]\npath = "{scratch / "state.db"}"\n'
        f'[[watch]]\npath = "{folder}"\nsettle_seconds = 0\n'
    )
    env = {**os.environ, "TWELVELABS_API_KEY": DEMO_KEY}
    subprocess.run(
        [sys.executable, "-m", "tlwatch", "scan", "-c", str(config), "--log-level", "warning"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def timed(run: str, folder: Path, ram: Path, scratch: Path) -> tuple[float, float]:
    """Wall seconds for one run, and the sandbox's CPU seconds meanwhile."""
    data = Path(tempfile.mkdtemp(prefix="sandbox-", dir=ram))
    with sandbox(data, "--processing-seconds", "0.5") as (url, pid):
        before, start = cpu_seconds(pid), time.perf_counter()
        if run == "tlwatch":
            tlwatch_scan(folder, url, Path(tempfile.mkdtemp(dir=scratch)))
        else:
            curl_all(folder, url, int(run.rsplit(maxsplit=1)[-1]))
        return time.perf_counter() - start, cpu_seconds(pid) - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--size", type=int, default=200_000)
    args = parser.parse_args()
    ram = Path("/dev/shm") if Path("/dev/shm").is_dir() else None  # noqa: S108
    with (
        tempfile.TemporaryDirectory(prefix="tlwatch-bench-") as scratch,
        tempfile.TemporaryDirectory(prefix="tlwatch-bench-", dir=ram) as data,
    ):
        folder = Path(scratch) / "images"
        make_images(folder, args.files, args.size)
        results = {}
        for run in ("curl -P 2", "tlwatch", "curl -P 8"):
            results[run] = timed(run, folder, Path(data), Path(scratch))
    print(f"{args.files} images of {args.size // 1000} KB to a sandbox storing in RAM:")
    for run, (seconds, cpu) in results.items():
        rate = args.files / seconds
        print(f"  {run:<10}{seconds:7.1f} s  {rate:6.0f} files/s  (sandbox CPU {cpu:5.1f} s)")
    ratio = results["curl -P 2"][0] / results["tlwatch"][0]
    print(f"  tlwatch / xargs -P 2 curl: {ratio:.2f}x (target >= 1.2)")
    print(f"  tlwatch / xargs -P 8 curl: {results['curl -P 8'][0] / results['tlwatch'][0]:.2f}x")
    return 0 if ratio >= 1.2 else 1


if __name__ == "__main__":
    sys.exit(main())

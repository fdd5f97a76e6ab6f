"""A proxy made by tlwatch against the same ffmpeg command run by hand, on a 4K sample (issue 17).

Target: tlwatch's transcode (nice 10, idle I/O, its progress read from a pipe) runs at >= 0.95x the
speed of the bare command; the bytes saved on the 4K sample are reported. Rounds alternate; each
figure is the best of `--rounds`.
Usage: python bench/proxy.py [--seconds S] [--rounds R]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tlwatch.fit import index_bounds, proxy_picture
from tlwatch.models import Probe
from tlwatch.transcode import Part, command, find_ffmpeg, make, pick_encoder


def sample(ffmpeg: str, path: Path, seconds: int) -> None:
    """A 4K camera-like original: a moving test pattern at 25 fps, high quality."""
    source = f"testsrc2=s=3840x2160:r=25:d={seconds}"
    encode = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "12", "-pix_fmt", "yuv420p"]
    quiet = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", source]
    subprocess.run([*quiet, *encode, str(path)], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ffmpeg = find_ffmpeg(None)
    encoder = pick_encoder(ffmpeg, "auto")
    bounds = index_bounds(["marengo3.0"])
    picture = proxy_picture(Probe(float(args.seconds), 3840, 2160), bounds, 720)
    part = Part(0.0, float(args.seconds), picture, 25.0, 8_000_000)
    with tempfile.TemporaryDirectory(prefix="tlwatch-bench-") as scratch:
        source, target = Path(scratch) / "A001.mp4", Path(scratch) / "proxy.mp4"
        sample(ffmpeg, source, args.seconds)
        best = {"tlwatch": float("inf"), "by hand": float("inf")}
        for _ in range(args.rounds):
            started = time.perf_counter()
            make(
                ffmpeg,
                encoder,
                str(source),
                str(target),
                part,
                progress=lambda done, speed: None,
                cancel=threading.Event(),
            )
            best["tlwatch"] = min(best["tlwatch"], time.perf_counter() - started)
            line = command(ffmpeg, encoder, str(source), str(target), part)
            line = [arg for arg in line if arg not in ("-progress", "pipe:1")]  # no reports
            started = time.perf_counter()
            subprocess.run(line, check=True, stdout=subprocess.DEVNULL)
            best["by hand"] = min(best["by hand"], time.perf_counter() - started)
        saved = os.path.getsize(source) - os.path.getsize(target)
        original = os.path.getsize(source)
    ratio = best["by hand"] / best["tlwatch"]
    print(
        f"a {args.seconds} s 4K original into a 720p proxy with {encoder}, best of {args.rounds}:"
    )
    print(
        f"  tlwatch   {best['tlwatch']:6.2f} s  ({args.seconds / best['tlwatch']:.2f}x real time)"
    )
    print(
        f"  by hand   {best['by hand']:6.2f} s  ({args.seconds / best['by hand']:.2f}x real time)"
    )
    print(f"  tlwatch / by hand: {ratio:.2f}x the speed (target >= 0.95)")
    print(
        f"  bytes saved: {saved / 1e6:.1f} MB of {original / 1e6:.1f} MB ({saved / original:.0%})"
    )
    return 0 if ratio >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())

"""Camera originals the platform cannot take as they are: proxies and segments made with the real
ffmpeg (the system's, else imageio-ffmpeg's), uploaded and indexed by the real daemon against the
sandbox, which enforces the documented limits of the index's model (pegasus1.2). The media are
made here, tiny: a grey picture at 1 frame a second."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from tlwatch.sandbox import indexes
from tlwatch.transcode import find_ffmpeg

from conftest import Daemon, sha256_file, wait_for

INDEX = "idx-pegasus"
FFMPEG = find_ffmpeg(None)


def clip(path: Path, width: int, height: int, seconds: float, *, rate: int = 1) -> Path:
    """A real H.264 MP4 (with an AAC tone) of this size and length."""
    picture = f"color=c=gray:s={width}x{height}:r={rate}:d={seconds}"
    tone = f"sine=frequency=300:sample_rate=8000:duration={seconds}"
    inputs = ["-f", "lavfi", "-i", picture, "-f", "lavfi", "-i", tone]
    encode = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", str(rate * 4), "-c:a", "aac"]
    quiet = [FFMPEG, "-hide_banner", "-loglevel", "error", "-y"]
    faststart = ["-movflags", "+faststart"]  # the header first (a truncated one keeps it)
    subprocess.run(
        [*quiet, *inputs, *encode, "-b:a", "8k", "-shortest", *faststart, str(path)], check=True
    )
    return path


def configure(daemon: Daemon, fit: str = "", watch: str = "") -> None:
    indexes.add_index(daemon.sandbox.server.service, INDEX, INDEX, [{"model_name": "pegasus1.2"}])
    metrics = f'[metrics]\ntextfile = "{daemon.root / "tlwatch.prom"}"\n'
    daemon.configure(watch=f'index_id = "{INDEX}"\n{watch}', tables=f"[fit]\n{fit}\n{metrics}")


def by_source(daemon: Daemon) -> dict[str, list[dict[str, Any]]]:
    """The sandbox's assets, by the SHA-256 of the original they stand for."""
    found: dict[str, list[dict[str, Any]]] = {}
    for asset in daemon.sandbox.assets():
        metadata = asset["user_metadata"] or {}
        source = metadata.get("tlwatch_source_sha256") or asset["sha256"]
        found.setdefault(str(source), []).append(asset)
    return found


def test_what_does_not_fit_goes_up_as_a_proxy_or_segments_and_is_indexed(
    daemon: Daemon,
) -> None:
    configure(daemon, fit="max_seconds = 12")  # a test-lowered limit: 30 s is "too long"
    files = {
        "wide.mp4": clip(daemon.watch / "wide.mp4", 1920, 640, 5),  # 3:1
        "six-k.mp4": clip(daemon.watch / "six-k.mp4", 6144, 3160, 5),  # over 3840 and 2160
        "long.mp4": clip(daemon.watch / "long.mp4", 640, 360, 30),  # 3 segments of 10 s
        "short.mp4": clip(daemon.watch / "short.mp4", 1280, 720, 3),  # the index takes >= 4 s
        "hd.mp4": clip(daemon.watch / "hd.mp4", 1280, 720, 10),  # fits: as it is
    }
    before = {name: sha256_file(path) for name, path in files.items()}
    daemon.start()
    daemon.wait_states({name: "ready" for name in files}, timeout=90)
    sent = by_source(daemon)
    for name in ("wide.mp4", "six-k.mp4"):
        [proxy] = sent[before[name]]
        assert proxy["sha256"] != before[name]  # a proxy went, not the original
        assert proxy["user_metadata"]["tlwatch_path"] == name
    segments = sorted(sent[before["long.mp4"]], key=lambda a: a["user_metadata"]["tlwatch_segment"])
    assert [a["user_metadata"]["tlwatch_segment"] for a in segments] == [1, 2, 3]
    assert {a["user_metadata"]["tlwatch_segments"] for a in segments} == {3}
    offsets = [a["user_metadata"]["tlwatch_offset_seconds"] for a in segments]
    assert offsets == pytest.approx([0.0, 10.0, 20.0], abs=0.01)
    for name in ("hd.mp4", "short.mp4"):  # as they are: their own SHA-256 on the server
        assert [a["sha256"] for a in sent[before[name]]] == [before[name]]
    wait_for(lambda: indexing_of(daemon, "short.mp4")["state"] == "skipped", timeout=30)
    assert indexing_of(daemon, "short.mp4")["reason"] == (
        "not indexed: 3.0 s is shorter than the index's 4 s"
    )

    def indexed() -> list[str]:
        return sorted(str(i["status"]) for i in daemon.sandbox.indexed())

    wait_for(lambda: indexed() == ["ready"] * 6, timeout=60)  # 2 proxies, 3 segments, hd
    assert {n: sha256_file(p) for n, p in files.items()} == before  # originals untouched
    spool = daemon.root / "state" / "spool"
    wait_for(lambda: not any(spool.iterdir()), timeout=30)  # each proxy gone once ready
    status = daemon.command("status", check=True).stdout
    assert "proxies: 3 original(s) sent as proxies or segments" in status
    assert daemon.stop() == 0
    assert "goes instead" in daemon.log() and "segments go instead" in daemon.log()
    assert "Traceback" not in daemon.log()
    metrics = (daemon.root / "tlwatch.prom").read_text()
    saved = re.search(r"^tlwatch_bytes_saved_total (\S+)$", metrics, re.M)
    spent = re.search(r"^tlwatch_proxy_seconds_total (\S+)$", metrics, re.M)
    assert saved is not None  # (grey test clips: their proxies save little; see bench/proxy.py)
    assert spent is not None and float(spent.group(1)) > 0


def indexing_of(daemon: Daemon, name: str) -> dict[str, Any]:
    listed = json.loads(daemon.command("list", "--json", check=True).stdout)
    [row] = [r for r in listed if r["path"].endswith(name)]
    [indexing] = row["indexing"] or [{"state": None, "reason": None}]
    return dict(indexing)


def test_a_recording_of_2_h_05_min_is_indexed_as_three_segments(daemon: Daemon) -> None:
    """The documented limit, not a lowered one: pegasus1.2 takes 3,600 s at most."""
    configure(daemon)
    long = daemon.watch / "interview.mp4"
    picture = "color=c=gray:s=64x36:r=1:d=7500"
    encode = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "60", "-movflags", "+faststart"]
    quiet = [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", picture]
    subprocess.run([*quiet, *encode, str(long)], check=True)
    original = sha256_file(long)
    daemon.start()
    daemon.wait_states({"interview.mp4": "ready"}, timeout=120)
    parts = sorted(by_source(daemon)[original], key=lambda a: a["user_metadata"]["tlwatch_segment"])
    assert [a["user_metadata"]["tlwatch_offset_seconds"] for a in parts] == pytest.approx(
        [0.0, 2500.0, 5000.0], abs=0.01
    )
    wait_for(lambda: [i["status"] for i in daemon.sandbox.indexed()] == ["ready"] * 3, 60)
    assert daemon.stop() == 0


@pytest.fixture(scope="module")
def busy_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A source whose proxy takes about 10 s to make (90 s of a moving 1080p test pattern),
    made once for the tests that stop a transcode in its middle."""
    path = tmp_path_factory.mktemp("busy") / "busy.mp4"
    picture = "testsrc2=s=1920x1080:r=25:d=90"
    encode = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "35", "-pix_fmt", "yuv420p"]
    quiet = [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", picture]
    subprocess.run([*quiet, *encode, str(path)], check=True)
    return path


def transcoding(spool: Path) -> list[int]:
    """The ffmpeg processes writing into the spool now."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                line = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(spool).encode() in line and b".part" in line:
                found.append(int(entry.name))
    return found


def proxies_of(daemon: Daemon, original: str) -> list[dict[str, Any]]:
    return [
        asset
        for asset in daemon.sandbox.assets()
        if (asset["user_metadata"] or {}).get("tlwatch_source_sha256") == original
    ]


def test_kill_9_in_the_middle_of_a_transcode_sends_the_proxy_once(
    daemon: Daemon, busy_source: Path
) -> None:
    daemon.configure(watch='proxy = "always"')
    source = Path(shutil.copy(busy_source, daemon.watch / "take.mp4"))
    original = sha256_file(source)
    spool = daemon.root / "state" / "spool"
    daemon.start()
    wait_for(lambda: transcoding(spool), timeout=60)
    assert daemon.process is not None
    daemon.process.kill()  # no goodbye: the store says `fitting`, the chore `doing`
    daemon.process.wait()
    daemon.process = None
    wait_for(lambda: not transcoding(spool), timeout=3)  # its ffmpeg went down with it
    daemon.start()
    daemon.wait_states({"take.mp4": "ready"}, timeout=90)
    [proxy] = proxies_of(daemon, original)
    assert proxy["user_metadata"]["tlwatch_path"] == "take.mp4"
    assert sha256_file(source) == original
    wait_for(lambda: not any(spool.iterdir()), timeout=30)  # nothing half-made is left
    assert daemon.stop() == 0


def test_sigterm_in_the_middle_of_a_transcode_stops_at_once_and_leaves_nothing(
    daemon: Daemon, busy_source: Path
) -> None:
    daemon.configure(watch='proxy = "always"')
    original = sha256_file(Path(shutil.copy(busy_source, daemon.watch / "take.mp4")))
    spool = daemon.root / "state" / "spool"
    daemon.start()
    wait_for(lambda: transcoding(spool), timeout=60)
    shown = re.compile(r"making a proxy: 'take\.mp4' \d+% at [\d.]+x real time, \d+ s left")
    wait_for(lambda: shown.search(daemon.command("status").stdout), timeout=20)
    stopped = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - stopped < 10
    assert not transcoding(spool)
    assert [p.name for p in spool.iterdir()] == []  # the half-made proxy is removed
    assert proxies_of(daemon, original) == []
    daemon.start()  # its chore was put back: the transcode starts again at once
    wait_for(lambda: transcoding(spool), timeout=30)  # (done once: the kill -9 test)
    assert daemon.stop() == 0
    assert not transcoding(spool) and [p.name for p in spool.iterdir()] == []


def test_a_file_ffmpeg_cannot_read_fails_with_its_words_and_holds_nothing_up(
    daemon: Daemon,
) -> None:
    daemon.configure(watch='proxy = "always"')
    whole = clip(daemon.root / "whole.mp4", 1920, 640, 5)
    data = whole.read_bytes()  # its header (moov first) says 5 s, 3:1; its frames are gone
    moov_end = data.index(b"mdat") + 4
    (daemon.watch / "broken.mp4").write_bytes(data[:moov_end])
    clip(daemon.watch / "good.mp4", 1280, 720, 5)
    daemon.start()
    daemon.wait_states({"broken.mp4": "failed", "good.mp4": "ready"}, timeout=60)
    [broken] = [r for r in daemon.rows() if r.path.endswith(b"broken.mp4")]
    assert (broken.reason or "").startswith("cannot make its proxy: ")
    assert "Invalid data" in (broken.reason or "") or "partial file" in (broken.reason or "")
    assert daemon.stop() == 0


def test_a_full_spool_makes_proxies_wait_and_says_so(daemon: Daemon) -> None:
    spool = daemon.root / "spool"
    spool.mkdir()
    (spool / "someone-elses.bin").write_bytes(b"x" * 4096)
    daemon.configure(
        watch='proxy = "always"', tables=f'[fit]\nspool_dir = "{spool}"\nspool_max_bytes = 4096\n'
    )
    clip(daemon.watch / "take.mp4", 1280, 720, 5)
    daemon.start()
    wait_for(lambda: "its proxy waits: the spool holds" in daemon.log(), timeout=30)
    assert daemon.sandbox.assets() == []
    (spool / "someone-elses.bin").unlink()  # room again: it goes on by itself
    daemon.wait_states({"take.mp4": "ready"}, timeout=90)
    assert daemon.stop() == 0


def big_png(path: Path, side: int) -> Path:
    """A real PNG of random pixels, stored (not compressed): side x side x 3 bytes and more."""
    raw = b"".join(b"\0" + os.urandom(side * 3) for _ in range(side))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    png += chunk(b"IDAT", zlib.compress(raw, 0)) + chunk(b"IEND", b"")
    path.write_bytes(png)
    return path


def test_an_image_too_large_for_the_platform_goes_up_as_a_jpeg_of_it(daemon: Daemon) -> None:
    daemon.configure()
    image = big_png(daemon.watch / "scan.png", 3400)  # 34.7 MB: over the 32 MB an image may be
    original = sha256_file(image)
    daemon.start()
    daemon.wait_states({"scan.png": "ready"}, timeout=90)
    [proxy] = proxies_of(daemon, original)
    assert proxy["user_metadata"]["tlwatch_path"] == "scan.png"
    assert proxy["size"] < 32_000_000 and proxy["filename"].endswith(".jpg")
    assert sha256_file(image) == original
    assert daemon.stop() == 0


def test_a_rebuilt_store_finds_the_segments_on_the_server_and_sends_nothing_again(
    daemon: Daemon,
) -> None:
    configure(daemon, fit="max_seconds = 12")
    clip(daemon.watch / "long.mp4", 640, 360, 30)  # 3 segments
    daemon.start()
    daemon.wait_states({"long.mp4": "ready"}, timeout=60)
    assert daemon.stop() == 0
    assert daemon.sandbox.requests()["create"] == {"201": 3}
    daemon.store_path.write_bytes(b"\0garbage" * 1000)
    for suffix in ("-wal", "-shm"):
        Path(str(daemon.store_path) + suffix).unlink(missing_ok=True)
    daemon.start()
    daemon.wait_states({"long.mp4": "ready"}, timeout=60)
    assert "its segments found on the server" in daemon.log()
    assert daemon.sandbox.requests()["create"] == {"201": 3}  # nothing made or sent again
    listed = json.loads(daemon.command("list", "--json", check=True).stdout)
    parts = [r for r in listed if r["path"].endswith(".found")]
    assert len(parts) == 3 and {r["state"] for r in parts} == {"ready"}
    assert daemon.stop() == 0


def test_a_file_over_the_indexs_size_goes_up_as_a_proxy_that_fits_it(daemon: Daemon) -> None:
    """2 GB, lowered here to 600 KB: the proxy's bit rate is kept under it."""
    configure(daemon, fit="max_bytes = 600000")
    source = daemon.watch / "big.mp4"
    picture = "testsrc2=s=1920x1080:r=25:d=10"  # moving: about 1.5 MB
    encode = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "30", "-pix_fmt", "yuv420p"]
    quiet = [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", picture]
    subprocess.run([*quiet, *encode, str(source)], check=True)
    assert source.stat().st_size > 600_000
    daemon.start()
    daemon.wait_states({"big.mp4": "ready"}, timeout=90)
    [proxy] = proxies_of(daemon, sha256_file(source))
    assert proxy["size"] < 600_000
    wait_for(lambda: [i["status"] for i in daemon.sandbox.indexed()] == ["ready"], timeout=30)
    assert daemon.stop() == 0

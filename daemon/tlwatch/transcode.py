"""ffmpeg: the only module that starts it. A proxy or a segment made in the spool, at nice 10
and idle I/O priority, its progress read as it goes, stopped at once when told to.

The binary is `[fit] ffmpeg` when set, else the system's `ffmpeg`, else the static build that the
imageio-ffmpeg wheel ships (with libx264 and AAC): `make demo` and the tests need nothing more.
The H.264 encoder is a hardware one (NVENC, VA-API, Quick Sync) when `encoder = "auto"` finds one
that encodes a test frame here, else libx264.

ffmpeg writes to a temporary name beside the target, renamed into place (and synced) only once
it has finished: a target that exists is whole. It runs under `setpriv --pdeathsig KILL`, so a
daemon killed with -9 takes its ffmpeg down too.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from tlwatch.errors import Cancelled
from tlwatch.fit import Picture

HARDWARE = ("h264_nvenc", "h264_vaapi", "h264_qsv")
TAIL = 5  # lines of ffmpeg's stderr kept as the reason of a failure
AUDIO_RATE = 128_000  # bits/s


class TranscodeError(Exception):
    """ffmpeg failed; the message is the end of what it said."""


@dataclass(frozen=True)
class Part:
    """One output: `length` seconds from `offset` of the source, its picture (None: audio
    only), at most `fps` frames a second and `max_rate` bits a second (so it fits the index's
    size bound)."""

    offset: float
    length: float
    picture: Picture | None
    fps: float | None
    max_rate: int


def find_ffmpeg(configured: str | None) -> str:
    """The ffmpeg binary to run: the configured one, the system's, or imageio-ffmpeg's."""
    if configured:
        return configured
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg  # noqa: PLC0415 - only where the system has no ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def version(ffmpeg: str) -> str:
    """The first line of `ffmpeg -version` (raises OSError when it cannot be run)."""
    done = subprocess.run(
        [ffmpeg, "-hide_banner", "-version"], capture_output=True, text=True, check=False
    )
    return (done.stdout.splitlines() or ["unknown"])[0]


@functools.cache
def pick_encoder(ffmpeg: str, wanted: str) -> str:
    """The H.264 encoder: `wanted`, or for "auto" the first hardware one that encodes a frame
    here (a one-frame trial), else libx264. Tried once per process."""
    if wanted != "auto":
        return wanted
    for encoder in HARDWARE:
        trial = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi"]
        trial += ["-i", "color=s=256x144:d=0.1", "-frames:v", "1", "-c:v", encoder, "-f", "null"]
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            tried = subprocess.run([*trial, "-"], capture_output=True, timeout=20, check=False)
            if tried.returncode == 0:
                return encoder
    return "libx264"


def command(ffmpeg: str, encoder: str, source: str, target: str, part: Part) -> list[str]:
    """The ffmpeg command line for one part (H.264 yuv420p / AAC, MP4 with +faststart)."""
    line = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    line += ["-progress", "pipe:1"]
    line += ["-ss", f"{part.offset:.3f}", "-t", f"{part.length:.3f}", "-i", source]
    line += ["-map", "0:v:0?", "-map", "0:a:0?", "-map_metadata", "-1", "-sn", "-dn"]
    if part.picture is None:
        line += ["-vn"]
    else:
        p = part.picture
        chain = f"scale={p.width}:{p.height},pad={p.canvas_width}:{p.canvas_height}"
        chain += ":(ow-iw)/2:(oh-ih)/2,setsar=1"
        if part.fps:
            chain += f",fps={part.fps:g}"
        video_rate = max(part.max_rate - AUDIO_RATE, 100_000)
        line += ["-vf", chain, "-c:v", encoder, "-pix_fmt", "yuv420p"]
        if encoder == "libx264":
            line += ["-preset", "veryfast", "-crf", "23"]
        else:
            line += ["-b:v", str(video_rate // 2)]
        line += ["-maxrate", str(video_rate), "-bufsize", str(2 * video_rate)]
    line += ["-c:a", "aac", "-b:a", str(AUDIO_RATE), "-ac", "2"]
    return [*line, "-movflags", "+faststart", "-f", "mp4", target]


def make(
    ffmpeg: str,
    encoder: str,
    source: str,
    target: str,
    part: Part,
    *,
    progress: Callable[[float, float | None], None],
    cancel: threading.Event,
) -> None:
    """Make `target` from `source`; `progress(seconds done, speed)` hears each report. Raises
    TranscodeError (ffmpeg's last lines), Cancelled (told to stop: ffmpeg ended, nothing left
    behind) or OSError."""
    with _into(target) as temporary, tempfile.TemporaryFile() as errors:
        line = [*_gentle(), *command(ffmpeg, encoder, source, temporary, part)]
        code = _run(line, errors, progress, cancel)
        if code != 0:
            errors.seek(0)
            raise _failed(errors.read(), code)


def make_image(ffmpeg: str, source: str, target: str, side: int) -> None:
    """A JPEG of an image too large for the platform, at most `side` pixels on its longest side
    (never cropped, never enlarged). Raises TranscodeError or OSError."""
    fit = f"scale=w='min({side},iw)':h='min({side},ih)':force_original_aspect_ratio=decrease"
    line = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", source]
    line += ["-vf", fit, "-frames:v", "1", "-q:v", "3", "-f", "image2", "-c:v", "mjpeg"]
    with _into(target) as temporary:
        done = subprocess.run([*_gentle(), *line, temporary], capture_output=True, check=False)
        if done.returncode != 0:
            raise _failed(done.stderr, done.returncode)


@contextlib.contextmanager
def _into(target: str) -> Iterator[str]:
    """A temporary name beside `target` for ffmpeg to write: renamed into place (synced) once
    the body ends well, removed whatever happens."""
    temporary = f"{target}.{secrets.token_hex(4)}.part"
    try:
        yield temporary
        _publish(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _failed(said: bytes, code: int) -> TranscodeError:
    """ffmpeg's failure, in its own last lines."""
    lines = said.decode("utf-8", "replace").strip().splitlines()
    return TranscodeError("; ".join(lines[-TAIL:]) or f"ffmpeg exited with {code}")


def _gentle() -> list[str]:
    """Killed with the daemon (ffmpeg ignores the closed pipe), at nice 10 and the idle I/O
    class, where the tools are there (util-linux, coreutils)."""
    prefix = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []
    prefix += ["nice", "-n", "10"] if shutil.which("nice") else []
    return prefix + (["ionice", "-c", "3"] if shutil.which("ionice") else [])


def _run(
    line: list[str],
    errors: IO[bytes],
    progress: Callable[[float, float | None], None],
    cancel: threading.Event,
) -> int:
    process = subprocess.Popen(
        line, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, text=True
    )
    assert process.stdout is not None
    done, speed = 0.0, None
    try:
        for report in process.stdout:
            if cancel.is_set():
                raise Cancelled("transcode abandoned: shutting down")
            key, _, value = report.strip().partition("=")
            if key == "out_time_us" and value.isdigit():
                done = int(value) / 1_000_000
            elif key == "speed" and value.endswith("x"):
                with contextlib.suppress(ValueError):
                    speed = float(value[:-1])
            elif key == "progress":
                progress(done, speed)
        return process.wait()
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        process.stdout.close()


def _publish(temporary: str, target: str) -> None:
    """The finished file, synced, under its final name (a rename: whole or not there)."""
    with open(temporary, "rb") as file:
        os.fsync(file.fileno())
    os.replace(temporary, target)
    folder = os.open(os.path.dirname(target) or ".", os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)

"""What a media file is, read from its header before anything is sent: the only module that
imports pymediainfo.

pymediainfo wraps MediaArea's libmediainfo (bundled in its Linux wheels, so nothing more to
install): it reads the container's own header, for every format libmagic lets through, in a few
milliseconds and without decoding. (ffprobe would need ffmpeg on every machine; mutagen knows
audio only.)
"""

from __future__ import annotations

import os
from typing import Any

from pymediainfo import MediaInfo

from tlwatch.models import Probe


def probe(path: bytes) -> Probe | None:
    """Given a media file, return its probe, or None when its header cannot be read."""
    try:
        info = MediaInfo.parse(os.fsdecode(path))
    except (OSError, RuntimeError, ValueError):
        return None
    general = next(iter(info.general_tracks), None)
    if general is None:
        return None
    video = next(iter(info.video_tracks), None)  # (an image track of an MP3 is its cover)
    audio = next(iter(info.audio_tracks), None)
    duration = _number(general, "duration")
    width, height = _number(video, "width"), _number(video, "height")
    aspect = _number(video, "display_aspect_ratio")
    if aspect is None and width and height:
        aspect = width / height
    if (_number(video, "rotation") or 0.0) % 180 == 90 and aspect:  # shown upright: turned
        width, height, aspect = height, width, 1 / aspect
    return Probe(
        duration=duration / 1000.0 if duration is not None else None,
        width=int(width) if width else None,
        height=int(height) if height else None,
        aspect=aspect,
        fps=_number(video, "frame_rate"),
        container=_text(general, "format"),
        video_codec=_text(video, "format"),
        audio_codec=_text(audio, "format"),
    )


def duration_seconds(path: bytes) -> float | None:
    """Given a media file, return its duration in seconds, or None when it cannot be read."""
    found = probe(path)
    return found.duration if found else None


def _number(track: Any, name: str) -> float | None:
    value = getattr(track, name, None) if track is not None else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _text(track: Any, name: str) -> str | None:
    value = getattr(track, name, None) if track is not None else None
    return str(value) if value else None

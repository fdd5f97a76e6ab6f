"""A media file's duration, read locally before upload: the only module that imports pymediainfo.

pymediainfo wraps MediaArea's libmediainfo (bundled in its Linux wheels, so nothing more to
install): it reads the container's own header, for every format libmagic lets through, in a few
milliseconds and without decoding. (ffprobe would need ffmpeg on every machine; mutagen knows
audio only.)
"""

from __future__ import annotations

import os

from pymediainfo import MediaInfo


def duration_seconds(path: bytes) -> float | None:
    """Given a media file, return its duration in seconds, or None when it cannot be read."""
    try:
        info = MediaInfo.parse(os.fsdecode(path))
    except (OSError, RuntimeError, ValueError):
        return None
    for track in info.general_tracks:
        value = getattr(track, "duration", None)
        try:
            return float(value) / 1000.0 if value is not None else None
        except (TypeError, ValueError):
            return None
    return None

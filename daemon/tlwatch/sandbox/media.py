"""Just enough media sniffing for the sandbox to fill `file_type` and `duration` honestly."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

_FTYP_BRANDS = {
    b"qt  ": "video/quicktime",
    b"M4A ": "audio/mp4",
    b"M4B ": "audio/mp4",
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"mif1": "image/heif",
    b"avif": "image/avif",
}
_PREFIXES = [
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"fLaC", "audio/flac"),
    (b"ID3", "audio/mpeg"),
    (b"OggS", "audio/ogg"),
    (b"%PDF-", "application/pdf"),
]


def sniff_mime(head: bytes) -> str | None:
    """Given a file's first bytes, return its MIME type if we recognise it."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12], "video/mp4")
    if head[:4] == b"RIFF" and head[8:12] in (b"WAVE", b"WEBP"):
        return "audio/wav" if head[8:12] == b"WAVE" else "image/webp"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "video/webm" if b"webm" in head[:64] else "video/x-matroska"
    if head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    for prefix, mime in _PREFIXES:
        if head.startswith(prefix):
            return mime
    return None


def duration_of(path: Path) -> float | None:
    """Given an MP4/MOV/M4A or WAV file, return its duration in seconds; else None."""
    try:
        with path.open("rb") as file:
            head = file.read(12)
            if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
                return _wav_duration(file)
            if head[4:8] == b"ftyp":
                file.seek(0)
                return _mp4_duration(file)
    except (OSError, struct.error):
        return None
    return None


def picture_of(path: Path) -> tuple[int, int] | None:
    """Given an MP4/MOV file, return its first video track's picture as displayed (the track
    header's width and height); else None."""
    try:
        with path.open("rb") as file:
            if file.read(8)[4:8] != b"ftyp":
                return None
            end = file.seek(0, 2)
            file.seek(0)
            return _tkhd_picture(file, _child(file, 0, end, b"moov"))
    except (OSError, struct.error):
        return None


def _child(file: BinaryIO, start: int, end: int, kind: bytes) -> list[tuple[bytes, int, int]]:
    """The boxes inside the first box of `kind` in start..end (its header skipped)."""
    file.seek(start)
    for found, box_start, size in _boxes(file, end):
        if found == kind:
            file.seek(box_start + 8)
            return _boxes(file, box_start + size)
    return []


def _tkhd_picture(file: BinaryIO, moov: list[tuple[bytes, int, int]]) -> tuple[int, int] | None:
    for kind, start, size in moov:
        if kind != b"trak":
            continue
        file.seek(start + 8)
        for child, child_start, child_size in _boxes(file, start + size):
            if child == b"tkhd":
                file.seek(child_start + child_size - 8)  # width, height: 16.16 fixed, at the end
                width, height = struct.unpack(">II", file.read(8))
                if width >> 16 and height >> 16:
                    return width >> 16, height >> 16
    return None


def _boxes(file: BinaryIO, end: int) -> list[tuple[bytes, int, int]]:
    """Given a file positioned at a box list ending at `end`, return (type, start, size)."""
    found = []
    while file.tell() + 8 <= end:
        start = file.tell()
        size, kind = struct.unpack(">I4s", file.read(8))
        if size == 1:
            size = struct.unpack(">Q", file.read(8))[0]
        elif size == 0:
            size = end - start
        if size < 8:
            break
        found.append((kind, start, size))
        file.seek(start + size)
    return found


def _mp4_duration(file: BinaryIO) -> float | None:
    end = file.seek(0, 2)
    file.seek(0)
    for kind, start, size in _boxes(file, end):
        if kind != b"moov":
            continue
        file.seek(start + 8)
        for child, child_start, _ in _boxes(file, start + size):
            if child == b"mvhd":
                file.seek(child_start + 8)
                version = file.read(4)[0]
                if version == 1:
                    _, _, scale, length = struct.unpack(">QQIQ", file.read(28))
                else:
                    _, _, scale, length = struct.unpack(">IIII", file.read(16))
                return round(length / scale, 3) if scale else None
    return None


def _wav_duration(file: BinaryIO) -> float | None:
    byte_rate = None
    while True:
        header = file.read(8)
        if len(header) < 8:
            return None
        kind, size = struct.unpack("<4sI", header)
        if kind == b"fmt ":
            fmt = file.read(size + (size & 1))
            byte_rate = struct.unpack("<I", fmt[8:12])[0]
        elif kind == b"data":
            return round(size / byte_rate, 3) if byte_rate else None
        else:
            file.seek(size + (size & 1), 1)

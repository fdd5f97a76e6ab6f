"""A file's real type from its content, with libmagic: the only module that imports `magic`.

Each thread has its own libmagic cookie, so several threads sniff at once (ctypes lets go of the
GIL while libmagic reads)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import magic

from tlwatch.models import Kind

_cookies = threading.local()  # a libmagic cookie is not safe to share: one per thread


@dataclass(frozen=True)
class Sniffed:
    mime: str
    kind: Kind | None  # None: not media


def sniff(path: bytes) -> Sniffed:
    """Given a path (any bytes), return its MIME type as libmagic reads it from the content.
    Raises OSError when the file cannot be opened."""
    cookie = getattr(_cookies, "magic", None)
    if cookie is None:
        cookie = _cookies.magic = magic.Magic(mime=True)
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        mime = str(cookie.from_descriptor(descriptor))
    finally:
        os.close(descriptor)
    family = mime.split("/", 1)[0]
    kind = Kind(family) if family in {k.value for k in Kind} else None
    return Sniffed(mime, kind)


def libmagic() -> str:
    """Which libmagic is loaded: its version and its file (for `tlwatch --version`)."""
    number = int(magic.version()) if hasattr(magic, "version") else 0  # type: ignore[no-untyped-call]
    where = "?"
    try:
        with open("/proc/self/maps") as maps:  # (Linux: the file the loader mapped)
            where = next((line.split()[-1] for line in maps if "libmagic" in line), where)
    except OSError:
        pass
    return f"{number // 100}.{number % 100:02d} ({where})" if number else where

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

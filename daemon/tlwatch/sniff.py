"""A file's real type from its content, with libmagic: the only module that imports `magic`."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import magic

from tlwatch.models import Kind

_lock = threading.Lock()  # a libmagic cookie is not safe to share between threads


@dataclass(frozen=True)
class Sniffed:
    mime: str
    kind: Kind | None  # None: not media


def sniff(path: bytes) -> Sniffed:
    """Given a path (any bytes), return its MIME type as libmagic reads it from the content.
    Raises OSError when the file cannot be opened."""
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with _lock:
            mime = str(magic.from_descriptor(descriptor, mime=True))
    finally:
        os.close(descriptor)
    family = mime.split("/", 1)[0]
    kind = Kind(family) if family in {k.value for k in Kind} else None
    return Sniffed(mime, kind)

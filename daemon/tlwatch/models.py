"""The vocabulary shared by every layer: file states, media kinds, a file's signature."""

from __future__ import annotations

import enum
import os
import stat
from dataclasses import dataclass


class FileState(enum.StrEnum):
    """Where a file is on its journey; stored as text. See the README's "States"."""

    QUEUED = "queued"  # complete, media, waiting for an upload worker
    UPLOADING = "uploading"  # intent recorded; a create is (or may be) in flight
    UPLOADED = "uploaded"  # the API holds an asset for it; following its status
    READY = "ready"  # the asset is ready (fitted: every part's asset is)
    FITTING = "fitting"  # too big or long for the platform: its proxy or segments go instead
    IGNORED = "ignored"  # not media (or not a wanted kind); not looked at again until it changes
    DUPLICATE = "duplicate"  # same content as a file already uploaded: shares that asset
    SKIPPED = "skipped"  # cannot be uploaded at all (too large, multipart not enabled...)
    HELD = "held"  # waits for the user: its sidecar is malformed (the reason names it)
    FAILED = "failed"  # refused by the API or failed processing; `tlwatch retry` re-queues


class IndexState(enum.StrEnum):
    """Where the indexing of one asset into one index is; stored as text."""

    QUEUED = "queued"  # wanted: to be sent (or tried again after an error)
    SENDING = "sending"  # the intent is recorded; the request is, or may be, in flight
    INDEXING = "indexing"  # the index holds an indexed asset for it; following its status
    READY = "ready"
    FAILED = "failed"  # refused (the reason carries the API's code) or failed indexing
    SKIPPED = "skipped"  # not sent: the index would refuse it (the reason names the bound)


class ChoreState(enum.StrEnum):
    """Where an obligation after the upload (a move, a delete, a metadata update) is."""

    QUEUED = "queued"  # owed: to be done (or tried again after an error)
    DOING = "doing"  # claimed by the chores worker; back to queued after a crash
    DONE = "done"
    DROPPED = "dropped"  # not owed any more: the file moved on (changed, gone, a newer update)
    FAILED = "failed"  # cannot be done (the reason says why); `tlwatch retry` tries it again


class ChoreKind(enum.StrEnum):
    MOVE = "move"  # after_upload = "move"
    DELETE = "delete"  # after_upload = "delete"
    METADATA = "metadata"  # newer user metadata for the asset and its indexed assets
    PROXY = "proxy"  # make the proxy or the segments of a file that does not fit (ffmpeg)


class Kind(enum.StrEnum):
    VIDEO = "video"
    AUDIO = "audio"
    IMAGE = "image"


@dataclass(frozen=True)
class Signature:
    """What tells a file's version apart without reading it: size, mtime and inode."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, result: os.stat_result) -> Signature:
        return cls(result.st_size, result.st_mtime_ns, result.st_ino)


@dataclass(frozen=True)
class Media:
    """What a file's content is: its MIME type and kind (from libmagic) and its SHA-256."""

    mime: str
    kind: str
    sha256: str
    duration: float | None = None  # seconds (images: 0; None: could not be read)
    width: int | None = None  # the picture, as its header says (see `Probe`)
    height: int | None = None
    aspect: float | None = None
    fps: float | None = None

    @classmethod
    def of(cls, mime: str, kind: str, sha256: str, probe: Probe | None) -> Media:
        if probe is None:
            return cls(mime, kind, sha256)
        return cls(
            mime, kind, sha256, probe.duration, probe.width, probe.height, probe.aspect, probe.fps
        )


@dataclass(frozen=True)
class Probe:
    """A media file as its header describes it (`probe.probe`); None where it does not say."""

    duration: float | None = None  # seconds
    width: int | None = None  # pixels, as stored
    height: int | None = None
    aspect: float | None = None  # display aspect ratio (width / height as shown)
    fps: float | None = None
    container: str | None = None
    video_codec: str | None = None
    audio_codec: str | None = None


def regular_signature(path: bytes) -> Signature | None:
    """Given a path, return its signature if it is a regular file (symlinks followed), else None."""
    try:
        result = os.stat(path)
    except OSError:
        return None
    return Signature.of(result) if stat.S_ISREG(result.st_mode) else None


def is_under(path: bytes, root: bytes) -> bool:
    """True if `path` is `root` itself or lies inside it (no `..` games: both are absolute)."""
    root = root.rstrip(b"/")
    return path == root or path.startswith(root + b"/")


def relative_to(path: bytes, root: bytes) -> bytes:
    """Given a path and a root, return the path below the root (the whole path if outside)."""
    if not root or path == root or not is_under(path, root):
        return path
    return path[len(root.rstrip(b"/")) + 1 :]


def shown(path: bytes | str) -> str:
    """Given a file name or path, return it fit for one log line: quoted, control characters and
    undecodable bytes escaped, so no name can forge or break a line."""
    return repr(os.fsdecode(path))

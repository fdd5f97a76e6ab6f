"""Which paths under a watched folder are candidates, and one walk over them.

Used at start-up (files that arrived while the daemon was down), periodically, and at once after
the watcher reports an overflow or an error.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
from collections.abc import Iterator
from pathlib import Path

from tlwatch.config import WatchConfig
from tlwatch.models import is_under, relative_to

# Names writers use while a file is incomplete, and files the OS or tools leave behind.
TEMPORARY = (
    "*.part",
    "*.partial",
    "*.tmp",
    "*.temp",
    "*.crdownload",
    "*.download",
    "*.!qb",
    ".~*",
    "~$*",
    "*~",
)


def skip_reason(watch: WatchConfig, path: bytes) -> str | None:
    """Given a path under `watch`, return why it is not a candidate, or None if it is."""
    root = os.fsencode(watch.path)
    relative = relative_to(path, root) if is_under(path, root) else os.path.relpath(path, root)
    parts = relative.split(b"/")
    if any(part.startswith(b".") for part in parts):
        return "hidden"
    if not watch.recursive and len(parts) > 1:
        return "in a subfolder of a non-recursive watch"
    name, text = os.fsdecode(parts[-1]), os.fsdecode(relative)
    if _TEMPORARY.match(name):
        return "a temporary name"
    excluded = _globs(watch.exclude)
    if excluded.match(name) or excluded.match(text):
        return "excluded"
    included = _globs(watch.include)
    if watch.include and not (included.match(name) or included.match(text)):
        return "not included"
    return None


@functools.cache
def _globs(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """Given glob patterns, return one regex matching any of them (none: matching nothing)."""
    return re.compile("|".join(fnmatch.translate(p) for p in patterns) or "(?!)")


_TEMPORARY = _globs(TEMPORARY)


def outside_roots(path: bytes, roots: list[bytes]) -> bool:
    """True if `path` is a symlink whose target lies outside every watched root."""
    if not os.path.islink(path):
        return False
    target = os.path.realpath(path)
    real_roots = [os.path.realpath(root) for root in roots]
    return not any(is_under(target, root) for root in real_roots)


def walk(watch: WatchConfig, roots: list[bytes]) -> Iterator[bytes]:
    """Yield every candidate regular file under `watch` (bytes paths), skipping what
    `skip_reason` refuses and symlinks that lead outside the watched roots."""
    stack = [os.fsencode(watch.path)]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(b"."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if watch.recursive:
                        stack.append(entry.path)
                    continue
                if not entry.is_file():  # follows symlinks; FIFOs, sockets, devices are not files
                    continue
            except OSError:
                continue
            leads_out = entry.is_symlink() and outside_roots(entry.path, roots)
            if skip_reason(watch, entry.path) is None and not leads_out:
                yield entry.path


def filesystem_type(path: Path) -> str:
    """The file system type holding `path`, from /proc/self/mounts (longest mount prefix)."""
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return kind
    target = os.fsencode(os.path.realpath(path))
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        if is_under(target, os.fsencode(mount)) and len(mount) > len(best):
            best, kind = mount, fields[2]
    return kind


NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "fuse.sshfs",
        "9p",
        "fuse.rclone",
        "afs",
        "ceph",
        "glusterfs",
        "fuse.glusterfs",
        "davfs",
        "fuse.s3fs",
        "fuse",
    }
)

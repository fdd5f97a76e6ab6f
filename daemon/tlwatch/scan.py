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
    return _name_reason(watch.include, watch.exclude, parts[-1], relative)


def _name_reason(
    include: tuple[str, ...], exclude: tuple[str, ...], name: bytes, relative: bytes
) -> str | None:
    """The checks on a file's own name (and its path below the watched folder)."""
    if _TEMPORARY.match(name):
        return "a temporary name"
    if not (include or exclude):
        return None
    name_text, text = os.fsdecode(name), os.fsdecode(relative)
    excluded = _globs(exclude)
    if excluded.match(name_text) or excluded.match(text):
        return "excluded"
    included = _globs(include)
    if include and not (included.match(name_text) or included.match(text)):
        return "not included"
    return None


@functools.cache
def _globs(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """Given glob patterns, return one regex matching any of them (none: matching nothing)."""
    return re.compile("|".join(fnmatch.translate(p) for p in patterns) or "(?!)")


# Temporary names are ASCII patterns: matched on the name's bytes, with no decoding.
_TEMPORARY = re.compile(os.fsencode("|".join(fnmatch.translate(p) for p in TEMPORARY)))


def outside_roots(path: bytes, roots: list[bytes]) -> bool:
    """True if `path` is a symlink whose target lies outside every watched root."""
    if not os.path.islink(path):
        return False
    target = os.path.realpath(path)
    real_roots = [os.path.realpath(root) for root in roots]
    return not any(is_under(target, root) for root in real_roots)


def walk(watch: WatchConfig, roots: list[bytes]) -> Iterator[tuple[bytes, list[bytes]]]:
    """Yield each folder under `watch` with its candidate regular files (bytes paths), folder by
    folder: hidden folders and files, what `skip_reason` refuses, and symlinks that lead outside
    the watched roots are left out. Names are checked from the directory entry: no `stat`."""
    top = os.fsencode(watch.path)
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        relative = relative_to(folder, top) + b"/" if folder != top else b""
        files = []
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
            if _name_reason(watch.include, watch.exclude, entry.name, relative + entry.name):
                continue
            if entry.is_symlink() and outside_roots(entry.path, roots):
                continue
            files.append(entry.path)
        yield folder, files


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

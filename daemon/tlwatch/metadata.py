"""A file's `user_metadata`: the folder's templates, filled from the file, with its sidecar over
them. Pure, but for reading the sidecar.

Template values are Python format strings over `dir` (the folders between the watched folder and
the file), `name`, `stem`, `ext`, `kind`, `mime`, `size` and `mtime` (a local datetime):
`{ project = "{dir[0]}", day = "{mtime:%Y-%m-%d}" }`. A placeholder that cannot be filled for a
file (`{dir[2]}` for a shallow one) leaves that key out. Literal strings, numbers, booleans and
lists of strings pass through. A sidecar `FILE.json` beside the file, a flat JSON object of
strings, numbers and booleans, is merged over the template values, keeping its types. Keys that
start with `tlwatch_` are tlwatch's own.
"""

from __future__ import annotations

import errno
import json
import os
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tlwatch.models import shown

RESERVED = "tlwatch_"
PATH_KEY = "tlwatch_path"  # the file's path below its folder (a part: its original's)
SIDECAR = b".json"
FIELDS = ("dir", "name", "stem", "ext", "kind", "mime", "size", "mtime")
Value = str | int | float | bool | list[str]


class SidecarError(ValueError):
    """The sidecar is not a flat JSON object of strings, numbers and booleans."""


@dataclass(frozen=True)
class Facts:
    """What a template may say about a file."""

    dir: list[str]
    name: str
    stem: str
    ext: str
    kind: str
    mime: str
    size: int
    mtime: datetime

    @classmethod
    def of(cls, path: bytes, root: bytes, kind: str, mime: str, size: int, mtime_ns: int) -> Facts:
        """Given a file (its path under `root`) and what is known of it, return its facts."""
        below = path[len(root.rstrip(b"/")) + 1 :] if root else os.path.basename(path)
        parts = [os.fsdecode(p) for p in below.split(b"/")]
        name = parts[-1]
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem:
            stem, ext = name, ""
        when = datetime.fromtimestamp(mtime_ns / 1e9).astimezone()
        return cls(parts[:-1], name, stem, ext, kind, mime, size, when)


_SAMPLE = Facts(["folder"] * 64, "clip.mp4", "clip", "mp4", "video", "video/mp4", 1, datetime.now())


def template_problem(key: str, value: Any) -> str | None:
    """Given one `user_metadata` entry of the configuration, return why it can never work, or
    None. (`{dir[9]}` can work, on deep enough files; `{dri}` and `{size:%Y}` never can.)"""
    if key.startswith(RESERVED):
        return f"keys starting with {RESERVED!r} are tlwatch's own"
    strings = isinstance(value, list) and all(isinstance(item, str) for item in value)
    if not (isinstance(value, str | int | float | bool) or strings):
        return "must be a string, a number, a boolean or a list of strings"
    if not isinstance(value, str):
        return None
    try:
        names = [field for _, field, _, _ in string.Formatter().parse(value) if field is not None]
    except ValueError as error:
        return f"not a valid template ({error})"
    for field in names:
        base = field.split("[", 1)[0].split(".", 1)[0]
        if base not in FIELDS:
            return f"unknown field {{{base}}}: use {', '.join(FIELDS)}"
    try:
        value.format_map(vars(_SAMPLE))
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as error:
        return f"not a valid template ({error})"
    return None


def render(templates: Mapping[str, Any], facts: Facts) -> dict[str, Value]:
    """Fill the templates for one file; a key whose placeholder cannot be filled is left out."""
    filled: dict[str, Value] = {}
    for key, value in templates.items():
        if not isinstance(value, str):
            filled[key] = value
            continue
        try:
            filled[key] = value.format_map(vars(facts))
        except (IndexError, KeyError, AttributeError, ValueError, TypeError):
            continue
    return filled


def sidecar_path(media: bytes) -> bytes:
    return media + SIDECAR


def media_of(sidecar: bytes) -> bytes | None:
    """Given a path, return the media file it is the sidecar of (None: not a sidecar name)."""
    return sidecar[: -len(SIDECAR)] if sidecar.endswith(SIDECAR) and len(sidecar) > 5 else None


def read_sidecar(media: bytes) -> dict[str, Value] | None:
    """The sidecar of `media`, if there is one; raise SidecarError naming it and the bad key."""
    path = sidecar_path(media)
    try:
        with open(path, "rb") as file:
            raw = file.read(1 << 20)
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:
            return None  # a name that cannot exist is no sidecar (a media name of 250+ bytes)
        raise SidecarError(f"sidecar {shown(os.path.basename(path))}: {error.strerror}") from None
    name = shown(os.path.basename(path))
    try:
        data = json.loads(raw)
    except ValueError as error:
        raise SidecarError(f"sidecar {name}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise SidecarError(f"sidecar {name}: must be a JSON object")
    for key, value in data.items():
        if isinstance(value, dict | list) or value is None:
            raise SidecarError(f"sidecar {name}: key {key!r}: must be a string, number or boolean")
        if key.startswith(RESERVED):
            raise SidecarError(f"sidecar {name}: key {key!r}: {RESERVED!r} keys are tlwatch's own")
    return data


def merged(templates: Mapping[str, Any], facts: Facts, media: bytes) -> dict[str, Value]:
    """The file's user metadata: its templates filled, its sidecar over them (may raise
    SidecarError)."""
    return {**render(templates, facts), **(read_sidecar(media) or {})}

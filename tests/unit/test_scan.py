"""Which names are candidates, one walk over a tree, and which file systems are network ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tlwatch.config import WatchConfig
from tlwatch.models import is_under, relative_to, shown
from tlwatch.scan import NETWORK_FILESYSTEMS, filesystem_type, skip_reason, walk


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("clip.mp4", None),
        (".hidden.mp4", "hidden"),
        ("clip.mp4.part", "a temporary name"),
        ("x.crdownload", "a temporary name"),
        ("~$doc.mp4", "a temporary name"),
        (".clip.mp4.AbC123", "hidden"),
        (".syncthing.clip.mp4.tmp", "hidden"),
        ("proxies/clip.mp4", "excluded"),
        ("a/.cache/clip.mp4", "hidden"),
        ("clip.THM", "excluded"),
    ],
)
def test_name_filters(tmp_path: Path, name: str, reason: str | None) -> None:
    watch = WatchConfig(path=tmp_path, exclude=("proxies/*", "*.THM"))
    assert skip_reason(watch, os.fsencode(tmp_path / name)) == reason


def test_include_and_non_recursive(tmp_path: Path) -> None:
    watch = WatchConfig(path=tmp_path, include=("*.mov",), recursive=False)
    assert skip_reason(watch, os.fsencode(tmp_path / "a.mp4")) == "not included"
    assert skip_reason(watch, os.fsencode(tmp_path / "a.mov")) is None
    assert skip_reason(watch, os.fsencode(tmp_path / "d" / "a.mov")) is not None


def test_walk_skips_fifos_and_symlinks_leading_outside(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "a.mp4").write_bytes(b"x")
    (outside / "secret.mp4").write_bytes(b"x")
    (root / "link-out.mp4").symlink_to(outside / "secret.mp4")
    (root / "link-in.mp4").symlink_to(root / "sub" / "a.mp4")
    os.mkfifo(root / "pipe.mp4")
    found = sorted(
        p for _, paths in walk(WatchConfig(path=root), [os.fsencode(root)]) for p in paths
    )
    assert found == [os.fsencode(root / "link-in.mp4"), os.fsencode(root / "sub" / "a.mp4")]


def test_names_are_shown_escaped() -> None:
    assert shown(b"a\nb.mp4") == r"'a\nb.mp4'"
    assert "\n" not in shown(b"x\n\r\x1b[31m.mp4")


def test_network_file_systems_are_told_apart() -> None:
    assert filesystem_type(Path("/proc/self")) == "proc"
    assert "nfs4" in NETWORK_FILESYSTEMS and "cifs" in NETWORK_FILESYSTEMS
    assert filesystem_type(Path(__file__)) not in NETWORK_FILESYSTEMS


def test_is_under_and_relative_to() -> None:
    assert is_under(b"/a/b/c", b"/a/b") and is_under(b"/a/b", b"/a/b/")
    assert not is_under(b"/a/bc", b"/a/b")
    assert is_under(b"/x", b"/")
    assert relative_to(b"/a/b/c/d.mp4", b"/a/b") == b"c/d.mp4"
    assert relative_to(b"/elsewhere/d.mp4", b"/a/b") == b"/elsewhere/d.mp4"
    assert relative_to(b"/a/b/d.mp4", b"") == b"/a/b/d.mp4"

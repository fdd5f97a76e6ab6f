"""Folders online and offline: the pure verdict, and `Folders` over a fake `stat`."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tlwatch.config import parse
from tlwatch.folders import BACK, Folders, Probe, verdict


def test_the_verdict() -> None:
    card = Probe((50, 2), mounted=True)
    assert verdict(None, Probe(None)) == "not there"
    assert verdict(card, Probe(None)) == "gone"
    assert verdict(card, Probe((8, 77), mounted=False)) == "unmounted"  # the empty mount point
    assert verdict(card, Probe((51, 2), mounted=True)) is None  # another card: online
    assert verdict(Probe((8, 5)), Probe((8, 6))) is None  # a new plain folder: online
    assert verdict(None, Probe((8, 5))) is None


class FakeDisk:
    """Paths -> (st_dev, st_ino) of folders; anything else is missing."""

    def __init__(self) -> None:
        self.folders: dict[str, tuple[int, int]] = {}

    def stat(self, path: str) -> os.stat_result:
        if path not in self.folders:
            raise FileNotFoundError(path)
        dev, ino = self.folders[path]
        return os.stat_result((stat.S_IFDIR | 0o755, ino, dev, 2, 0, 0, 0, 0, 0, 0))


def test_a_card_unmounted_then_another_mounted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    card = tmp_path / "card"
    config = parse({"watch": [{"path": str(card)}]}, source=None)
    disk = FakeDisk()
    disk.folders[str(tmp_path)] = (8, 1)
    disk.folders[str(card)] = (50, 2)  # a card is mounted there
    folders = Folders(lambda: config, stat_of=disk.stat)
    assert folders.check() == [(card, True, None)]
    assert [f.path for f in folders.present()] == [card]
    assert folders.check() == []  # nothing changed
    disk.folders[str(card)] = (8, 9)  # unmounted: the empty mount point on the parent's disk
    assert folders.check() == [(card, False, "unmounted")]
    assert folders.present() == [] and folders.offline() == {card: "unmounted"}
    assert folders.gone_now(os.fsencode(card))
    assert folders.check() == []  # said once
    disk.folders[str(card)] = (51, 2)  # another card
    assert folders.check() == [(card, True, BACK)]
    assert [f.identity for f in folders.present()] == [(51, 2)]
    assert not folders.gone_now(os.fsencode(card))
    said = [r.getMessage() for r in caplog.records]
    assert any(m.endswith("card': offline (unmounted); its files wait for it") for m in said)
    assert any(m.endswith("card': online again: scanning") for m in said)


def test_a_folder_moved_away_and_made_anew(tmp_path: Path) -> None:
    dcim = tmp_path / "DCIM"
    config = parse({"watch": [{"path": str(dcim)}]}, source=None)
    disk = FakeDisk()
    disk.folders[str(tmp_path)] = (8, 1)
    disk.folders[str(dcim)] = (8, 2)
    folders = Folders(lambda: config, stat_of=disk.stat)
    folders.check()
    disk.folders[str(dcim)] = (8, 3)  # mv DCIM DCIM.old && mkdir DCIM, between two checks
    assert folders.check() == [(dcim, True, None)]  # watched and scanned anew
    assert [f.identity for f in folders.present()] == [(8, 3)]
    del disk.folders[str(dcim)]
    assert folders.check() == [(dcim, False, "gone")]


def test_a_folder_dropped_by_a_reload_is_forgotten(tmp_path: Path) -> None:
    configs = [parse({"watch": [{"path": str(tmp_path / "gone")}]}, source=None)]
    folders = Folders(lambda: configs[0], stat_of=FakeDisk().stat)
    assert folders.check() == [(tmp_path / "gone", False, "not there")]
    configs[0] = parse({"watch": []}, source=None)
    assert folders.check() == []
    assert folders.offline() == {}

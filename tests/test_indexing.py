"""From uploaded to searchable: every ready asset indexed exactly once, with metadata from folder
templates and sidecars (the real `tlwatch` command against the sandbox's indexes)."""

from __future__ import annotations

import json
import shutil
from datetime import datetime

import pytest

from tlwatch.sandbox import Settings

from conftest import FIXTURES, Daemon, sha256_file, wait_for

INDEX = "idx-footage"
OTHER = "idx-archive"
TEMPLATES = (
    'user_metadata = { project = "{dir[0]}", day = "{mtime:%Y-%m-%d}", deep = "{dir[2]}", '
    'crew = "B", take = 3 }'
)


@pytest.fixture
def sandbox_settings() -> Settings:
    return Settings(
        processing_seconds=0.2, indexing_seconds=0.5, chunk_size=64 * 1024, initial_urls=3
    )


def make_index(daemon: Daemon, index_id: str) -> None:
    from tlwatch.sandbox import indexes

    indexes.add_index(daemon.sandbox.server.service, index_id, index_id)


def indexings(daemon: Daemon) -> dict[str, str]:
    """index id -> state, for every indexing in the store."""
    from tlwatch.state import Store

    if not daemon.store_path.exists():
        return {}
    with Store(daemon.store_path, exclusive=False) as store:
        return {f"{i.asset_id}/{i.index_id}": i.state.value for i in store.all_indexings()}


def configure(daemon: Daemon, extra: str = "") -> None:
    make_index(daemon, INDEX)
    make_index(daemon, OTHER)
    daemon.configure(watch=f'index_id = "{INDEX}"\n{TEMPLATES}\n{extra}')


def test_a_ready_asset_is_indexed_once_with_its_templated_metadata(daemon: Daemon) -> None:
    configure(daemon)
    (daemon.watch / "Alps" / "camA").mkdir(parents=True)
    clip = daemon.watch / "Alps" / "camA" / "C0001.mp4"
    shutil.copy(FIXTURES / "clip.mp4", clip)
    shutil.copy(FIXTURES / "photo.png", daemon.watch / "still.png")  # images: not indexed
    daemon.start()
    wait_for(lambda: list(indexings(daemon).values()) == ["ready"], timeout=30)
    daemon.wait_states({"C0001.mp4": "ready", "still.png": "ready"})
    day = datetime.fromtimestamp(clip.stat().st_mtime).strftime("%Y-%m-%d")
    wanted = {"project": "Alps", "day": day, "crew": "B", "take": 3}  # {dir[2]}: left out
    [indexed] = daemon.sandbox.indexed()
    assert indexed["index_id"] == INDEX and indexed["user_metadata"] == wanted
    [asset] = [a for a in daemon.sandbox.assets() if a["sha256"] == sha256_file(clip)]
    assert {
        k: v for k, v in asset["user_metadata"].items() if not k.startswith("tlwatch_")
    } == wanted
    listed = json.loads(daemon.command("list", "--json", check=True).stdout)
    row = next(r for r in listed if r["path"].endswith("C0001.mp4"))
    assert row["indexing"] == [
        {
            "index_id": INDEX,
            "indexed_asset_id": indexed["_id"],
            "state": "ready",
            "status": "ready",
            "reason": None,
        }
    ]
    status = daemon.command("status", check=True).stdout
    assert "indexing: 1 ready" in status
    assert daemon.stop() == 0
    assert "→ ready after" in daemon.log()

"""From uploaded to searchable: every ready asset indexed exactly once, with metadata from folder
templates and sidecars (the real `tlwatch` command against the sandbox's indexes)."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from tlwatch.sandbox import Settings

from conftest import FIXTURES, Daemon, Sandbox, sha256_file, wait_for

INDEX = "idx-footage"
CLIP = FIXTURES / "indexable.mp4"  # inside every limit of the index (clip.mp4 is 1 s)
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
    shutil.copy(CLIP, clip)
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


def sent_assets(daemon: Daemon) -> list[str]:
    return sorted(str(a["sha256"]) for a in daemon.sandbox.assets())


def test_a_lost_index_answer_ends_in_exactly_one_indexed_asset(daemon: Daemon) -> None:
    configure(daemon)
    daemon.sandbox.fault(endpoint="indexed_create", drop="after", times=1)
    shutil.copy(CLIP, daemon.watch / "a.mp4")
    daemon.start()
    wait_for(lambda: list(indexings(daemon).values()) == ["ready"], timeout=40)
    assert len(daemon.sandbox.indexed()) == 1
    assert "adopting it" in daemon.log()
    assert daemon.stop() == 0


def test_kill_9_while_indexing_then_restart_indexes_once(daemon: Daemon) -> None:
    configure(daemon)
    daemon.sandbox.fault(endpoint="indexed_create", delay=2.0, times=1)
    shutil.copy(CLIP, daemon.watch / "a.mp4")
    daemon.start()
    wait_for(lambda: list(indexings(daemon).values()) == ["sending"], timeout=30)
    faults = daemon.sandbox.server.service.faults  # ("sending" is written before the request)
    wait_for(lambda: not any(f.times for f in faults), timeout=30)  # the sandbox holds it now
    assert daemon.process is not None
    daemon.process.kill()  # the request is in flight; the index will still store it
    daemon.process.wait()
    daemon.process = None
    wait_for(lambda: len(daemon.sandbox.indexed()) == 1)
    daemon.start()
    wait_for(lambda: list(indexings(daemon).values()) == ["ready"], timeout=40)
    assert len(daemon.sandbox.indexed()) == 1
    assert daemon.stop() == 0


def test_sidecars_present_late_and_malformed(daemon: Daemon) -> None:
    configure(daemon)
    early, late, bad = (daemon.watch / n for n in ("early.mp4", "late.m4a", "bad.mp4"))
    (daemon.watch / "early.mp4.json").write_text('{"camera": "Z", "take": 2}')
    (daemon.watch / "bad.mp4.json").write_text('{"scene": {"nested": true}}')
    early.write_bytes((CLIP).read_bytes())
    late.write_bytes((FIXTURES / "tone-5s.m4a").read_bytes())
    bad.write_bytes((CLIP).read_bytes() + b"\0")
    daemon.start()
    daemon.wait_states({"early.mp4": "ready", "late.m4a": "ready", "bad.mp4": "held"})
    held = next(r for r in daemon.rows() if r.path.endswith(b"bad.mp4"))
    assert "sidecar 'bad.mp4.json': key 'scene'" in (held.reason or "")
    assert len(daemon.sandbox.assets()) == 2  # nothing sent for the held file
    by_name = {a["filename"]: a for a in daemon.sandbox.assets()}
    assert by_name["early.mp4"]["user_metadata"]["camera"] == "Z"
    assert by_name["early.mp4"]["user_metadata"]["take"] == 2
    assert not (daemon.sandbox.assets() and "early.mp4.json" in by_name)  # never uploaded
    wait_for(lambda: sorted(indexings(daemon).values()) == ["ready", "ready"], timeout=30)

    (daemon.watch / "late.m4a.json").write_text('{"mood": "calm"}')  # added after the upload
    late_id = by_name["late.m4a"]["id"]

    def updated() -> bool:
        asset = next(a for a in daemon.sandbox.assets() if a["id"] == late_id)
        indexed = [i for i in daemon.sandbox.indexed() if i["asset_id"] == late_id]
        return asset["user_metadata"].get("mood") == "calm" and all(
            (i.get("user_metadata") or {}).get("mood") == "calm" for i in indexed
        )

    wait_for(updated, timeout=30)
    (daemon.watch / "bad.mp4.json").write_text('{"scene": "12A"}')  # fixed: released
    daemon.wait_states({"bad.mp4": "ready"}, timeout=30)
    fixed = next(a for a in daemon.sandbox.assets() if a["filename"] == "bad.mp4")
    assert fixed["user_metadata"]["scene"] == "12A"
    assert daemon.stop() == 0


def test_a_duplicate_in_a_folder_with_another_index_is_indexed_there_too(daemon: Daemon) -> None:
    make_index(daemon, INDEX)
    make_index(daemon, OTHER)
    archive = daemon.root / "archive"
    archive.mkdir()
    daemon.configure(
        watch=f'index_id = "{INDEX}"\n[[watch]]\npath = "archive"\nsettle_seconds = 0.3\n'
        f'index_id = "{OTHER}"\n'
    )
    shutil.copy(CLIP, daemon.watch / "a.mp4")
    daemon.start()
    wait_for(lambda: list(indexings(daemon).values()) == ["ready"], timeout=30)
    shutil.copy(CLIP, archive / "copy.mp4")
    wait_for(lambda: sorted(indexings(daemon).values()) == ["ready", "ready"], timeout=30)
    indexed = daemon.sandbox.indexed()
    assert sorted(i["index_id"] for i in indexed) == sorted([INDEX, OTHER])
    assert len({i["asset_id"] for i in indexed}) == 1  # one asset, in two indexes
    assert len(daemon.sandbox.assets()) == 1
    assert daemon.states()[b"copy.mp4"] == "duplicate"
    assert daemon.stop() == 0


def test_a_429_on_indexing_holds_indexing_only(daemon: Daemon) -> None:
    configure(daemon)
    daemon.sandbox.fault(endpoint="indexed_create", status=429, retry_after="4", times=1)
    shutil.copy(CLIP, daemon.watch / "first.mp4")
    daemon.start()
    wait_for(lambda: "indexing is rate limited" in daemon.log(), timeout=30)
    shutil.copy(FIXTURES / "tone-5s.m4a", daemon.watch / "second.m4a")  # uploads go on meanwhile
    daemon.wait_states({"second.m4a": "ready"}, timeout=30)
    assert list(indexings(daemon).values()).count("ready") == 0  # still held
    wait_for(lambda: sorted(indexings(daemon).values()) == ["ready", "ready"], timeout=40)
    assert len(daemon.sandbox.indexed()) == 2
    assert daemon.stop() == 0


def test_delete_after_upload_waits_for_indexing(daemon: Daemon) -> None:
    configure(daemon, 'after_upload = "delete"')
    daemon.sandbox.settings(indexing_seconds=2.0)
    clip = daemon.watch / "a.mp4"
    shutil.copy(CLIP, clip)
    daemon.start()
    daemon.wait_states({"a.mp4": "ready"})
    assert clip.exists()  # ready, but not yet indexed
    wait_for(lambda: list(indexings(daemon).values()) == ["ready"], timeout=30)
    wait_for(lambda: not clip.exists())
    assert daemon.stop() == 0


def test_tlwatch_index_backfills_once(daemon: Daemon) -> None:
    make_index(daemon, INDEX)
    shutil.copy(CLIP, daemon.watch / "a.mp4")
    assert daemon.command("scan", "--wait").returncode == 0
    path = str(daemon.watch / "a.mp4")
    assert daemon.command("index", path).returncode == 1  # no index_id in its folder
    done = daemon.command("index", path, "--index", INDEX)
    assert done.returncode == 0, done.stderr
    assert "ready" in done.stdout
    again = daemon.command("index", "--all", "--index", INDEX)
    assert again.returncode == 0 and "already known" in again.stdout
    assert len(daemon.sandbox.indexed()) == 1


def test_a_template_that_can_never_work_exits_78(daemon: Daemon) -> None:
    daemon.configure(watch='user_metadata = { day = "{mtim:%Y}" }')
    result = daemon.command("check")
    assert result.returncode == 78
    assert "watch[0].user_metadata.day: unknown field {mtim}" in result.stderr


def test_many_indexed_assets_are_followed_together(daemon: Daemon) -> None:
    configure(daemon)
    daemon.sandbox.settings(indexing_seconds=1.5)
    for number in range(6):
        clip = daemon.watch / f"c{number}.mp4"
        clip.write_bytes((CLIP).read_bytes() + bytes([number]))
    daemon.start()
    wait_for(lambda: sorted(indexings(daemon).values()) == ["ready"] * 6, timeout=40)
    assert daemon.stop() == 0


def test_six_due_indexed_assets_are_checked_with_one_list_request(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    from tlwatch.api import Client
    from tlwatch.control import RunState
    from tlwatch.indexer import Indexer
    from tlwatch.models import Media, Signature
    from tlwatch.sandbox import DEMO_API_KEY, indexes
    from tlwatch.state import Store

    from conftest import make_config

    indexes.add_index(sandbox.server.service, INDEX, INDEX)
    config = make_config(tmp_path, sandbox.base_url)
    now = [1_900_000_000.0]
    with (
        Store(config.state.path, clock=lambda: now[0]) as store,
        Client(DEMO_API_KEY, base_url=sandbox.base_url) as api,
    ):
        for number in range(6):
            path = tmp_path / f"c{number}.mp4"
            path.write_bytes((CLIP).read_bytes() + bytes([number]))
            asset = api.create_direct(os.fsencode(path), filename=path.name)
            wait_for(lambda a=asset.id: api.retrieve(a).status == "ready")
            media = Media("video/mp4", "video", sha256_file(path))
            row = store.enqueue(os.fsencode(path), b"", Signature.of(path.stat()), media)
            assert store.claim_next("t") is not None
            store.mark_uploaded(row.id, asset.id, "ready")
            assert store.mark_ready(row.id, [(INDEX, row.id)])
            claimed = store.claim_indexing()
            assert claimed is not None
            indexed = api.create_indexed_asset(INDEX, asset.id)
            store.indexing_sent(asset.id, INDEX, indexed)
        sandbox.admin("DELETE", "/_sandbox/requests")
        Indexer(store, api, lambda: config, RunState(), clock=lambda: now[0]).follow()
    counts = sandbox.requests()
    assert counts.get("indexed_list") == {"200": 1}  # one page holds the six
    assert "indexed_retrieve" not in counts  # not one request per indexed asset


def test_status_says_why_an_indexing_waits_after_a_lost_answer(daemon: Daemon) -> None:
    configure(daemon)
    daemon.sandbox.fault(endpoint="indexed_create", drop="after")  # indexed, answer lost
    shutil.copy(CLIP, daemon.watch / "clip.mp4")
    daemon.start()
    wait_for(lambda: "indexing waits" in daemon.command("status").stdout, timeout=30)
    found = json.loads(daemon.command("status", "--json", check=True).stdout)
    [waiting] = found["indexing_waits"]
    assert waiting["file"] == "'clip.mp4'" and waiting["index_id"] == INDEX
    assert "looking in the index for it once that request would have ended" in waiting["reason"]
    wait_for(lambda: list(indexings(daemon).values()) == ["ready"], timeout=40)
    assert len(daemon.sandbox.indexed()) == 1  # adopted, not indexed twice
    assert daemon.stop() == 0


def test_a_clip_the_index_would_refuse_is_uploaded_but_not_sent_to_it(daemon: Daemon) -> None:
    """A 1 s, 64x36 clip: the asset API takes it, the index would not. Nothing is sent to the
    index; the reason names the bounds, in the log, `list --json` and `status`; an after_upload
    move waiting for the indexing goes ahead (the asset is safe)."""
    configure(daemon, 'after_upload = "move"\nmove_to = "done"')
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "short.mp4")
    daemon.start()
    wait_for(lambda: list(indexings(daemon).values()) == ["skipped"], timeout=30)
    wait_for((daemon.root / "done" / "short.mp4").exists, timeout=30)
    assert daemon.sandbox.indexed() == []  # nothing the index would refuse was sent to it
    listed = json.loads(daemon.command("list", "--json", check=True).stdout)
    [indexing] = listed[0]["indexing"]
    assert indexing["state"] == "skipped" and indexing["indexed_asset_id"] is None
    assert indexing["reason"] == (
        "not indexed: 1.0 s is shorter than the index's 4 s; 64x36 is below the index's 360 lines"
    )
    assert "indexing: 1 skipped" in daemon.command("status", check=True).stdout
    assert "not indexed: 1.0 s is shorter" in daemon.log()
    assert daemon.stop() == 0

"""The fitter's spool sweep: what nothing owes any more goes, and nothing else (proxies made by
ffmpeg, end to end: tests/e2e/test_fit_daemon.py)."""

from __future__ import annotations

from pathlib import Path

from tlwatch.config import parse
from tlwatch.control import RunState
from tlwatch.fitter import Fitter
from tlwatch.models import ChoreKind, Media, Signature
from tlwatch.state import NewPart, Store

SHA = "ab" * 32
MEDIA = Media("video/mp4", "video", SHA, duration=9.0)


def test_the_sweep_removes_only_what_nothing_owes(tmp_path: Path) -> None:
    config = parse({"state": {"path": "s.db"}}, source=tmp_path / "c.toml")
    spool = config.fit.spool(config.state.path)
    spool.mkdir()
    with Store(config.state.path) as store:
        ids = []
        for name in (b"/w/a.mov", b"/w/b.mov", b"/w/c.mov"):
            row = store.enqueue(name, b"/w", Signature(len(ids) + 1, 1, 1), MEDIA)
            assert store.claim_next("t") is not None
            store.fit(row.id, "{}", "too long")
            ids.append(row.id)
        done, failed, queued = (store.claim_chore((), (ChoreKind.PROXY,)) for _ in ids)
        assert done and failed and queued
        store.requeue_chore(queued, "interrupted", at=0.0)
        store.fit_failed(failed, "Invalid data found when processing input")
        name = f"{SHA}-0123456789ab-c{{}}-1of1.mp4"
        kept_part = spool / name.format(done.id)
        kept_part.write_bytes(b"made")
        store.add_parts(
            done,
            bytes(spool),
            [NewPart(bytes(kept_part), Signature(4, 1, 1), MEDIA, {}, 1, 1, 0.0)],
        )
        cut_off = spool / (name.format(done.id) + ".1a2b3c4d.part")
        of_failed = spool / name.format(failed.id)
        being_made = spool / name.format(queued.id)
        theirs = spool / "notes.txt"
        for path in (cut_off, of_failed, being_made, theirs):
            path.write_bytes(b"x")
        row = store.enqueue(b"/w/d.mov", b"/w", Signature(9, 1, 1), MEDIA)  # its part skipped:
        assert store.claim(row.id, "t") is not None
        store.fit(row.id, "{}", "too long")
        chore = store.claim_chore((), (ChoreKind.PROXY,))
        assert chore is not None
        older = spool / name.format(chore.id)
        older.write_bytes(b"x")
        part = NewPart(bytes(older), Signature(5, 1, 1), MEDIA, {}, 1, 1, 0.0)
        store.add_parts(chore, bytes(spool), [part])
        store.enqueue(b"/w/d.mov", b"/w", Signature(10, 2, 1), MEDIA)  # a new version of d
        assert Fitter(store, lambda: config, RunState()).sweep() == 3
    assert sorted(p.name for p in spool.iterdir()) == sorted(
        [kept_part.name, being_made.name, theirs.name]
    )

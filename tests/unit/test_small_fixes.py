"""The small things a read of the whole package found (issue 15, item 11), each pinned down."""

from __future__ import annotations

import logging
import os
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from tlwatch.config import parse
from tlwatch.health import HealthRecord, Snapshot
from tlwatch.metrics import Metrics
from tlwatch.models import ChoreKind, FileState, Media, Signature
from tlwatch.notify import Notifications
from tlwatch.state import Store
from tlwatch.web import Daemon as WebDaemon
from tlwatch.web import Web

MEDIA = Media("video/mp4", "video", "ab" * 32, duration=1.0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_held_files_are_in_the_status_line() -> None:
    line = Snapshot({"queued": 1, "held": 2}, 0, None).line()
    assert line == "1 queued, 2 held"


def test_retry_counts_a_file_once_whatever_failed_of_it(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        row = store.enqueue(b"/w/a.mp4", b"/w", Signature(1, 2, 3), MEDIA)
        assert store.claim_next("t") is not None
        store.mark_uploaded(row.id, "asset-1", "ready")
        assert store.mark_ready(row.id, [("index-1", row.id), ("index-2", row.id)])
        for _ in range(2):
            claimed = store.claim_indexing()
            assert claimed is not None
            store.fail_indexing(claimed.asset_id, claimed.index_id, "refused")
        assert store.retriable() == [row.id]  # a ready file whose indexings failed
        assert [r.id for r in store.retry(store.retriable())] == [row.id]  # once, not twice


def test_a_page_port_taken_at_start_is_served_once_it_is_free(tmp_path: Path) -> None:
    port = free_port()
    config = parse(
        {"ui": {"listen": f"127.0.0.1:{port}"}, "watch": [{"path": "w"}]},
        source=tmp_path / "c.toml",
    )
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    with Store(tmp_path / "s.db") as store:
        metrics = Metrics(store, lambda: config)
        daemon = WebDaemon(
            report=dict,
            files=lambda state, folder, after, limit: [],
            retry=lambda ids: 0,
            pause=lambda reason: None,
            metrics=metrics.exposition,
            busy=lambda: False,
        )
        web = Web(lambda: config, "token", daemon)
        try:
            web.apply()  # the port is taken: nothing is served, and that is remembered
            assert web.port is None
            squatter.close()
            web.tick(time.monotonic() + 3600)  # the retry is due
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as answer:
                assert b"tlwatch_build_info" in answer.read()
        finally:
            squatter.close()
            web.close()
            metrics.close()


def test_files_moved_after_upload_count_under_their_folder(tmp_path: Path) -> None:
    config = parse(
        {"watch": [{"path": "w", "name": "cam", "after_upload": "move", "move_to": "done"}]},
        source=tmp_path / "c.toml",
    )
    done = os.fsencode(tmp_path / "done")
    with Store(tmp_path / "s.db") as store:
        row = store.enqueue(
            os.fsencode(tmp_path / "w" / "a.mp4"),
            os.fsencode(tmp_path / "w"),
            Signature(1, 2, 3),
            MEDIA,
        )
        assert store.claim_next("t") is not None
        store.mark_uploaded(row.id, "asset-1", "ready")
        assert store.mark_ready(row.id, after=ChoreKind.MOVE)
        chore = store.claim_chore((), tuple(ChoreKind))
        assert chore is not None
        store.chore_target(chore, os.path.join(done, b"a.mp4"))
        store.moved(store.chore(chore.id), os.path.join(done, b"a.mp4"), done)
        samples = [
            sample
            for family in Metrics(store, lambda: config).registry.collect()
            if family.name == "tlwatch_files"
            for sample in family.samples
        ]
    assert [(s.labels, s.value) for s in samples] == [
        ({"folder": "cam", "state": FileState.READY.value}, 1.0)
    ]


def test_notifications_and_heartbeats_are_followed_apart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tlwatch.notify")
    config = parse({"watch": [{"path": "w"}]}, source=tmp_path / "c.toml")
    notes = Notifications(lambda: config, HealthRecord(tmp_path / "h"))
    notes._said(False, "delivery", "cannot deliver a notification")
    notes._said(True, "heartbeat", "cannot reach the heartbeat URL")  # says nothing of delivery
    notes._said(False, "delivery", "cannot deliver a notification")  # still failing: quiet
    notes._said(True, "delivery", "cannot deliver a notification")
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "notifications: cannot deliver a notification; quiet until it works again",
        "notifications: delivery works again",
    ]

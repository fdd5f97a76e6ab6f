"""Monitoring: /metrics scraped and parsed with prometheus_client, the textfile, and `tlwatch
health` in each situation."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tlwatch.events import FolderChanged, Paused, Stuck
from tlwatch.health import HealthRecord, verdict

from conftest import FIXTURES, Daemon, wait_for

MEDIA = ["clip.mp4", "tone.wav", "photo.png"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_are_served_and_written_with_short_labels(daemon: Daemon) -> None:
    port = free_port()
    textfile = daemon.root / "tlwatch.prom"
    daemon.configure(watch='name = "cams"', ui=f'listen = "127.0.0.1:{port}"')
    daemon.config.write_text(daemon.config.read_text() + f'[metrics]\ntextfile = "{textfile}"\n')
    for name in MEDIA:
        shutil.copy(FIXTURES / name, daemon.watch / name)
    daemon.start()
    daemon.wait_states(dict.fromkeys(MEDIA, "ready"))

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            return samples(answer.read().decode())

    found = wait_for(
        lambda: (got := scrape()).get(("tlwatch_asset_ready_seconds_count", ())) == 3 and got
    )
    assert found[("tlwatch_files", (("folder", "cams"), ("state", "ready")))] == 3
    assert found[("tlwatch_uploads_total", (("result", "ok"),))] == 3
    sizes = sum((FIXTURES / n).stat().st_size for n in MEDIA)
    assert found[("tlwatch_upload_bytes_total", ())] == sizes
    assert (
        found[("tlwatch_api_requests_total", (("code", "201"), ("endpoint", "assets.create")))] == 3
    )
    assert found[("tlwatch_paused", (("reason", "key_rejected"),))] == 0
    assert found[("tlwatch_folder_online", (("folder", "cams"),))] == 1
    assert found[("tlwatch_last_success_timestamp_seconds", ())] > time.time() - 600
    assert any(name == "tlwatch_build_info" for name, _ in found)
    assert found[("tlwatch_upload_workers_allowed", ())] == 2
    assert found[("tlwatch_upload_rate_limit_bytes_per_second", ())] == 0  # no cap
    labels = {value for _, pairs in found for _, value in pairs}
    assert not any("/" in value or value in MEDIA for value in labels)  # no path, no file
    assert textfile.exists()  # written at start, then every 15 s...
    assert daemon.stop() == 0  # ...and once more at the end
    written = samples(textfile.read_text())
    assert written[("tlwatch_files", (("folder", "cams"), ("state", "ready")))] == 3


def test_health_says_running_paused_offline_and_stopped(daemon: Daemon) -> None:
    result = daemon.command("health")
    assert (result.returncode, result.stdout.strip()) == (1, "unhealthy: not running")
    daemon.start()
    wait_for(lambda: daemon.command("health").returncode == 0)
    assert daemon.command("health").stdout.strip() == "healthy"
    (daemon.root / "api_key").write_text("wrong-key\n")
    daemon.sandbox.fault(endpoint="create", status=401, times=1)
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "a.mp4")

    def report() -> dict[str, object]:
        return dict(json.loads(daemon.command("health", "--json").stdout))

    paused = wait_for(lambda: (found := report())["paused"] and found, timeout=20)
    assert paused["healthy"] is False and paused["running"] is True
    assert "paused: API key rejected" in paused["problems"]
    assert daemon.stop() == 0
    assert daemon.command("health").returncode == 1


def test_an_offline_folder_is_unhealthy(daemon: Daemon) -> None:
    daemon.start()
    wait_for(lambda: daemon.command("health").returncode == 0)
    daemon.watch.rename(daemon.root / "gone")
    found = wait_for(
        lambda: (got := json.loads(daemon.command("health", "--json").stdout))["offline"] and got
    )
    assert found["problems"] == [f"offline: {daemon.watch} (gone)"]
    assert daemon.stop() == 0


def test_the_record_says_stuck_threads_and_a_dead_daemon(tmp_path: Path) -> None:
    path = tmp_path / "state.db.health"
    record = HealthRecord(path)
    record.hear(Stuck(("upload-1",)))
    record.hear(Paused("store", True, "state store: cannot write (disk is full)"))
    record.hear(FolderChanged(b"/media/card", False, "unmounted"))
    record.write()
    found = verdict(path)
    assert found["running"] is True and found["healthy"] is False
    assert found["problems"] == [
        "paused: state store: cannot write (disk is full)",
        "stuck: upload-1",
        "offline: /media/card (unmounted)",
    ]
    record.hear(Stuck(()))
    record.hear(Paused("store", False))
    record.hear(FolderChanged(b"/media/card", True))
    record.write()
    assert verdict(path)["healthy"] is True
    assert verdict(path, clock=lambda: time.time() + 60)["problems"] == ["not running"]  # stale
    path.write_text(json.dumps({"pid": 2**22 + 12345, "at": time.time()}))
    assert verdict(path)["running"] is False  # no such process
    path.write_text(json.dumps({"pid": os.getpid(), "at": time.time()}))
    assert verdict(path)["running"] is True  # a live process, a fresh record

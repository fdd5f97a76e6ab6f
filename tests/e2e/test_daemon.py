"""End to end: the real `tlwatch` command in a subprocess, the real sandbox, real files.

Each test checks the sandbox's record (the SHA-256 of the bytes it received, assets per file)
and the store, not only what the daemon says.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tlwatch.sandbox import DEMO_API_KEY

from conftest import FIXTURES, Daemon, clean_env, sha256_file, wait_for

MEDIA = [
    "clip.mp4",
    "clip.mov",
    "clip.mkv",
    "clip.webm",
    "tone.wav",
    "tone.mp3",
    "tone.m4a",
    "tone.flac",
    "photo.jpg",
    "photo.png",
    "anim.gif",
    "photo.webp",
    "photo.heic",
]
DECOYS = ["not-really.mp4", "document.pdf", "empty.mp4"]


def test_every_media_kind_is_uploaded_once_byte_exact_and_decoys_are_ignored(
    daemon: Daemon,
) -> None:
    daemon.start()
    for name in MEDIA + DECOYS:
        shutil.copy(FIXTURES / name, daemon.watch / name)
    expected = {name: "ready" for name in MEDIA} | {name: "ignored" for name in DECOYS}
    daemon.wait_states(expected)
    by_sha = daemon.assets_by_sha()
    for name in MEDIA:
        assert by_sha[sha256_file(FIXTURES / name)] == 1, name
    assert sum(by_sha.values()) == len(MEDIA)
    rows = {os.fsdecode(os.path.basename(r.path)): r for r in daemon.rows()}
    assert rows["not-really.mp4"].reason == "not media (text/plain)"
    assert rows["document.pdf"].reason == "not media (application/pdf)"
    assert "empty" in (rows["empty.mp4"].reason or "")
    assert all(rows[name].asset_id for name in MEDIA)
    assert daemon.stop() == 0
    assert daemon.log().count("'not-really.mp4': new → ignored") == 1  # recorded once


def test_media_with_a_wrong_or_missing_extension_is_uploaded(daemon: Daemon) -> None:
    daemon.start()
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "clip.txt")
    shutil.copy(FIXTURES / "tone.wav", daemon.watch / "recording")
    daemon.wait_states({"clip.txt": "ready", "recording": "ready"})
    assert daemon.stop() == 0


def test_slow_writer_is_uploaded_once_with_the_final_bytes(daemon: Daemon) -> None:
    daemon.configure(settle=1.0)
    daemon.start()
    data = (FIXTURES / "clip.mp4").read_bytes() * 20
    target = daemon.watch / "slow.mp4"
    with target.open("wb") as file:
        for start in range(0, len(data), len(data) // 8):
            file.write(data[start : start + len(data) // 8])
            file.flush()
            time.sleep(0.5)  # the writer's pace, not a wait for the daemon
    daemon.wait_states({"slow.mp4": "ready"})
    assert daemon.assets_by_sha() == {sha256_file(target): 1}
    assert daemon.stop() == 0


def test_copied_in_under_a_temporary_name_then_renamed(daemon: Daemon) -> None:
    daemon.start()
    partial = daemon.watch / "take.mp4.part"
    shutil.copy(FIXTURES / "clip.mp4", partial)
    partial.rename(daemon.watch / "take.mp4")
    daemon.wait_states({"take.mp4": "ready"})
    assert daemon.assets_by_sha() == {sha256_file(FIXTURES / "clip.mp4"): 1}
    assert b"take.mp4.part" not in daemon.states()
    assert daemon.stop() == 0


def test_files_present_before_start_and_added_while_stopped_are_uploaded_once(
    daemon: Daemon,
) -> None:
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "before.mp4")
    daemon.start()
    daemon.wait_states({"before.mp4": "ready"})
    assert daemon.stop() == 0
    shutil.copy(FIXTURES / "tone.wav", daemon.watch / "while-stopped.wav")
    daemon.start()
    daemon.wait_states({"before.mp4": "ready", "while-stopped.wav": "ready"})
    assert daemon.stop() == 0
    assert sum(daemon.assets_by_sha().values()) == 2


def test_restart_recognises_unchanged_files_without_rehashing(daemon: Daemon) -> None:
    for name in ("clip.mp4", "tone.wav", "photo.jpg"):
        shutil.copy(FIXTURES / name, daemon.watch / name)
    daemon.start()
    daemon.wait_states({"clip.mp4": "ready", "tone.wav": "ready", "photo.jpg": "ready"})
    assert daemon.stop() == 0
    daemon.log_path.write_text("")
    daemon.start()
    wait_for(lambda: "scanned" in daemon.log())
    assert "scanned 3 file(s)" in daemon.log()
    assert "0 new or changed" in daemon.log()
    assert daemon.stop() == 0
    assert sum(daemon.assets_by_sha().values()) == 3
    assert "→ queued" not in daemon.log()


def test_renamed_and_copied_files_are_duplicates_without_upload(daemon: Daemon) -> None:
    daemon.start()
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "original.mp4")
    daemon.wait_states({"original.mp4": "ready"})
    (daemon.watch / "original.mp4").rename(daemon.watch / "renamed.mp4")
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "copy.mp4")
    daemon.wait_states({"renamed.mp4": "duplicate", "copy.mp4": "duplicate"})
    rows = {os.path.basename(r.path): r for r in daemon.rows()}
    original = rows[b"original.mp4"]
    assert rows[b"renamed.mp4"].asset_id == original.asset_id
    assert rows[b"copy.mp4"].duplicate_of == original.id
    assert sum(daemon.assets_by_sha().values()) == 1
    assert daemon.sandbox.requests()["create"] == {"201": 1}
    assert daemon.stop() == 0


def test_changed_content_becomes_a_new_asset(daemon: Daemon) -> None:
    daemon.start()
    target = daemon.watch / "edit.mp4"
    shutil.copy(FIXTURES / "clip.mp4", target)
    daemon.wait_states({"edit.mp4": "ready"})
    first = daemon.rows()[0].asset_id
    target.write_bytes((FIXTURES / "clip.mp4").read_bytes() + b"\0" * 10)
    wait_for(
        lambda: (
            daemon.rows()[0].asset_id not in (None, first)
            and daemon.states()[b"edit.mp4"] == "ready"
        )
    )
    assert daemon.assets_by_sha() == {sha256_file(FIXTURES / "clip.mp4"): 1, sha256_file(target): 1}
    assert daemon.stop() == 0


def test_files_over_the_direct_limit_go_multipart(daemon: Daemon) -> None:
    daemon.configure(api="direct_upload_limit = 100000")
    big = daemon.root / "big.mp4"
    big.write_bytes((FIXTURES / "clip.mp4").read_bytes() + os.urandom(64 * 1024 * 5))
    daemon.start()
    shutil.copy(big, daemon.watch / "big.mp4")
    shutil.copy(FIXTURES / "tone.wav", daemon.watch / "small.wav")
    daemon.wait_states({"big.mp4": "ready", "small.wav": "ready"})
    assets = {a["filename"]: a for a in daemon.sandbox.assets()}
    assert assets["big.mp4"]["method"] == "multipart"
    assert assets["big.mp4"]["sha256"] == sha256_file(big)
    assert assets["small.wav"]["method"] == "direct"
    assert daemon.stop() == 0


def test_multipart_not_enabled_is_skipped_with_a_reason_once(daemon: Daemon) -> None:
    daemon.configure(api="direct_upload_limit = 1000")
    daemon.sandbox.settings(multipart_enabled=False)
    daemon.start()
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "big.mp4")
    daemon.wait_states({"big.mp4": "skipped"})
    assert "multipart uploads are not enabled" in (daemon.rows()[0].reason or "")
    assert daemon.stop() == 0
    assert daemon.log().count("→ skipped") == 1


def test_rate_limits_and_server_errors_delay_but_everything_arrives_once(daemon: Daemon) -> None:
    daemon.sandbox.fault(endpoint="create", status=429, retry_after="0", times=3)
    daemon.sandbox.fault(endpoint="create", status=429, empty_body=True, times=2)
    daemon.sandbox.fault(endpoint="create", status=503, times=2)
    daemon.sandbox.fault(endpoint="retrieve", status=502, times=3)
    daemon.sandbox.fault(endpoint="list", status=502, times=3)
    daemon.start()
    names = ["clip.mp4", "tone.wav", "photo.jpg", "tone.mp3"]
    for name in names:
        shutil.copy(FIXTURES / name, daemon.watch / name)
    daemon.wait_states(dict.fromkeys(names, "ready"))
    by_sha = daemon.assets_by_sha()
    assert all(by_sha[sha256_file(FIXTURES / n)] == 1 for n in names)
    assert sum(by_sha.values()) == 4
    assert daemon.sandbox.requests()["create"]["429"] == 5
    assert "rate limited by the API: no new upload for" in daemon.log()
    assert daemon.stop() == 0


def test_a_lost_response_ends_in_exactly_one_asset(daemon: Daemon) -> None:
    daemon.sandbox.fault(endpoint="create", drop="after", times=1)
    daemon.start()
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "lost.mp4")
    daemon.wait_states({"lost.mp4": "ready"})
    assert daemon.assets_by_sha() == {sha256_file(FIXTURES / "clip.mp4"): 1}
    assert daemon.sandbox.requests()["create"] == {"dropped-after": 1}
    assert "adopting it" in daemon.log()
    assert daemon.stop() == 0


def test_kill_9_in_the_middle_of_uploads_then_restart_uploads_each_file_once(
    daemon: Daemon,
) -> None:
    daemon.configure(api="max_concurrent_uploads = 2")
    daemon.sandbox.fault(endpoint="create", delay=1.5, times=4)
    names = [f"card-{i}.mp4" for i in range(6)]
    for index, name in enumerate(names):
        (daemon.watch / name).write_bytes((FIXTURES / "clip.mp4").read_bytes() + bytes([index]))
    daemon.start()
    wait_for(lambda: "uploading" in daemon.states().values())
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    daemon.start()
    daemon.wait_states(dict.fromkeys(names, "ready"), timeout=60)
    assert "interrupted; will look for it on the server" in daemon.log()
    by_sha = daemon.assets_by_sha()
    assert sorted(by_sha.values()) == [1] * 6, by_sha
    assert {sha256_file(daemon.watch / n) for n in names} == set(by_sha)
    assert daemon.stop() == 0


def test_401_pauses_everything_until_the_key_is_fixed(daemon: Daemon) -> None:
    (daemon.root / "api_key").write_text("not-the-right-key\n")
    daemon.start()
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "a.mp4")
    shutil.copy(FIXTURES / "tone.wav", daemon.watch / "b.wav")
    wait_for(lambda: "rejected (HTTP 401)" in daemon.log())
    wait_for(lambda: set(daemon.states().values()) == {"queued"})
    assert "→ failed" not in daemon.log()
    (daemon.root / "api_key").write_text(DEMO_API_KEY + "\n")
    daemon.wait_states({"a.mp4": "ready", "b.wav": "ready"})
    assert daemon.log().count("rejected (HTTP 401)") == 1
    assert "uploads resume" in daemon.log()
    assert "not-the-right-key" not in daemon.log()
    assert daemon.stop() == 0


def test_400_fails_the_file_with_the_api_code_and_retry_requeues_it(daemon: Daemon) -> None:
    daemon.sandbox.fault(endpoint="create", status=400, code="parameter_invalid")
    daemon.start()
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "refused.mp4")
    daemon.wait_states({"refused.mp4": "failed"})
    assert "parameter_invalid" in (daemon.rows()[0].reason or "")
    status = json.loads(daemon.command("status", "--json", check=True).stdout)
    assert status["recent_failures"][0]["state"] == "failed"
    assert "parameter_invalid" in status["recent_failures"][0]["reason"]
    result = daemon.command("retry", "--failed", check=True)
    assert "re-queued 1" in result.stdout
    daemon.wait_states({"refused.mp4": "ready"})
    assert daemon.stop() == 0


def test_hostile_names_are_uploaded_and_logged_escaped(daemon: Daemon) -> None:
    daemon.start()
    watch = os.fsencode(daemon.watch)
    deep = os.path.join(watch, b"a" * 150)
    os.mkdir(deep)
    names = [
        b"caf\xe9 \xff.mp4",
        b"line\nbreak.wav",
        b"-leading-dash.jpg",
        os.path.join(b"a" * 150, b"b" * 146 + b".mp4"),
    ]
    sources = ["clip.mp4", "tone.wav", "photo.jpg", "clip.mov"]
    for name, source in zip(names, sources, strict=True):
        shutil.copy(FIXTURES / source, os.path.join(watch, name))
    wait_for(lambda: [r.state.value for r in daemon.rows()].count("ready") == 4, timeout=30)
    assert sum(daemon.assets_by_sha().values()) == 4
    log = daemon.log()
    assert r"'line\nbreak.wav': uploaded → ready" in log
    assert r"'caf\udce9 \udcff.mp4'" in log
    assert all(line[:4].isdigit() for line in log.splitlines() if line), log  # no forged lines
    filenames = {a["filename"] for a in daemon.sandbox.assets()}
    assert "caf\ufffd \ufffd.mp4" in filenames
    assert "line_break.wav" in filenames
    assert daemon.stop() == 0


def test_a_broken_config_exits_78_naming_every_problem(daemon: Daemon) -> None:
    daemon.config.write_text(
        '[api]\nbase_url = "ftp://nope"\ntimeout_secs = 5\n'
        '[logging]\nlevel = "loud"\n'
        '[[watch]]\nsettle_seconds = "soon"\nafter_upload = "move"\n'
    )
    result = daemon.command("run")
    assert result.returncode == 78
    for expected in (
        "api.base_url",
        "api.timeout_secs: unknown key (did you mean 'timeout_seconds'?)",
        "logging.level",
        "watch[0].path: is required",
        'watch[0].settle_seconds: must be a number >= 0, got "soon"',
        "watch[0].move_to: is required",
    ):
        assert expected in result.stderr, result.stderr
    assert str(daemon.config) in result.stderr


def test_a_config_key_in_a_world_readable_file_is_refused(daemon: Daemon) -> None:
    text = daemon.config.read_text().replace('api_key_file = "api_key"', 'api_key = "secret-1"')
    daemon.config.write_text(text)
    daemon.config.chmod(0o644)
    result = daemon.command("check")
    assert result.returncode == 78
    assert "api.api_key: refused" in result.stderr
    assert "secret-1" not in result.stderr
    daemon.config.chmod(0o600)
    assert daemon.command("check").returncode == 1  # loads now; the key itself is wrong


def test_a_second_instance_exits_75(daemon: Daemon) -> None:
    daemon.start()
    second = daemon.command("run")
    assert second.returncode == 75
    assert "another tlwatch" in second.stderr
    assert daemon.stop() == 0


def test_debug_logs_never_show_the_api_key(daemon: Daemon) -> None:
    daemon.configure(api="direct_upload_limit = 100000")
    (daemon.watch / "big.mp4").write_bytes((FIXTURES / "clip.mp4").read_bytes() * 30)
    shutil.copy(FIXTURES / "tone.wav", daemon.watch / "t.wav")
    daemon.start("--log-level", "debug")
    daemon.wait_states({"big.mp4": "ready", "t.wav": "ready"})
    assert daemon.stop() == 0
    log = daemon.log()
    assert "DEBUG" in log
    assert DEMO_API_KEY not in log
    assert "token=" not in log


def test_status_json_and_list(daemon: Daemon) -> None:
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "a.mp4")
    shutil.copy(FIXTURES / "document.pdf", daemon.watch / "b.pdf")
    daemon.start()
    daemon.wait_states({"a.mp4": "ready", "b.pdf": "ignored"})
    status = json.loads(daemon.command("status", "--json", check=True).stdout)
    assert status["totals"] == {"ready": 1, "ignored": 1}
    assert status["folders"] == {str(daemon.watch): {"ready": 1, "ignored": 1}}
    assert status["in_flight"] == []
    listed = json.loads(daemon.command("list", "--state", "ready", "--json", check=True).stdout)
    assert [row["path"] for row in listed] == [str(daemon.watch / "a.mp4")]
    assert listed[0]["asset_id"] == daemon.sandbox.assets()[0]["id"]
    assert daemon.stop() == 0


def test_scan_uploads_everything_pending_and_waits_for_ready(daemon: Daemon) -> None:
    for name in ("clip.mp4", "tone.wav", "not-really.mp4"):
        shutil.copy(FIXTURES / name, daemon.watch / name)
    result = daemon.command("scan", "--wait")
    assert result.returncode == 0, result.stderr
    assert "2 ready" in result.stdout and "1 ignored" in result.stdout
    assert daemon.states() == {
        b"clip.mp4": "ready",
        b"tone.wav": "ready",
        b"not-really.mp4": "ignored",
    }


def test_one_off_upload_of_a_file_and_a_url(daemon: Daemon, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.wav"
    shutil.copy(FIXTURES / "tone.wav", outside)
    result = daemon.command("upload", str(outside), "--wait")
    assert result.returncode == 0, result.stderr
    asset_id = daemon.sandbox.assets()[0]["id"]
    assert asset_id in result.stdout and "ready" in result.stdout
    by_url = daemon.command("upload", "--url", "https://example.com/talk.mp4")
    assert by_url.returncode == 0, by_url.stderr
    assert len(daemon.sandbox.assets()) == 2
    assert len(daemon.rows()) == 2
    refused = daemon.command("upload", str(FIXTURES / "document.pdf"))
    assert refused.returncode == 1
    assert "not media" in refused.stderr


def test_sigterm_mid_upload_puts_the_file_back_and_nothing_is_lost(daemon: Daemon) -> None:
    daemon.config.write_text(
        daemon.config.read_text().replace(
            "shutdown_timeout_seconds = 5", "shutdown_timeout_seconds = 0.5"
        )
    )
    daemon.sandbox.fault(endpoint="create", delay=4.0, times=1)  # the request timeout is 5 s
    daemon.start()
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "a.mp4")
    wait_for(lambda: daemon.states().get(b"a.mp4") == "uploading")
    assert daemon.stop() == 0
    assert "abandoning 1 upload(s) still in flight ('a.mp4')" in daemon.log()  # not waited for
    assert daemon.states()[b"a.mp4"] == "queued"  # put back, its upload token kept
    daemon.start()
    daemon.wait_states({"a.mp4": "ready"}, timeout=30)
    assert daemon.stop() == 0
    # The server finished storing the abandoned request; the restart found and adopted it.
    assert "adopting it" in daemon.log()
    assert sum(daemon.assets_by_sha().values()) == 1


def test_kill_9_mid_multipart_then_restart_resumes_from_the_reported_chunks(
    daemon: Daemon,
) -> None:
    daemon.configure(api="direct_upload_limit = 100000")
    big = daemon.root / "big.mp4"
    big.write_bytes((FIXTURES / "clip.mp4").read_bytes() + os.urandom(64 * 1024 * 30))  # 31 chunks
    daemon.sandbox.fault(endpoint="chunk_put", delay=0.3, times=40)
    from tlwatch.state import Store

    def reported() -> int:
        """The chunks the store holds as reported (an answer is recorded after it arrives:
        waiting on the server's count alone raced the kill against that commit)."""
        with Store(daemon.store_path, exclusive=False) as store:
            rows = store.all()
            return len(store.chunks(rows[0].id)) if rows else 0

    daemon.start()
    shutil.copy(big, daemon.watch / "big.mp4")
    wait_for(lambda: daemon.store_path.exists() and reported() >= 1, timeout=30)
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    kept = reported()  # in the store at the kill
    assert kept >= 1
    daemon.sandbox.admin("DELETE", "/_sandbox/faults")
    # The requests of the killed daemon still being answered (slowly) count before the restart.
    wait_for(lambda: not [t for t in threading.enumerate() if "process_request" in t.name])
    before = sum(daemon.sandbox.requests()["chunk_put"].values())
    daemon.start()
    daemon.wait_states({"big.mp4": "ready"}, timeout=60)
    assert "resuming multipart upload" in daemon.log()
    assets = daemon.sandbox.assets()
    assert [a["sha256"] for a in assets] == [sha256_file(big)]
    after = sum(daemon.sandbox.requests()["chunk_put"].values()) - before
    assert after <= 31 - kept  # only what was not reported is sent again
    assert daemon.sandbox.requests()["multipart_create"] == {"201": 1}
    assert daemon.stop() == 0


def test_a_second_interrupt_forces_an_immediate_exit(daemon: Daemon) -> None:
    daemon.sandbox.fault(endpoint="create", delay=20.0)
    daemon.configure()
    daemon.config.write_text(
        daemon.config.read_text().replace(
            "shutdown_timeout_seconds = 5", "shutdown_timeout_seconds = 60"
        )
    )
    daemon.start()
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "a.mp4")
    wait_for(lambda: daemon.states().get(b"a.mp4") == "uploading")
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGINT)
    wait_for(lambda: "stopping" in daemon.log())
    assert daemon.stop(signal.SIGINT) == 130  # forced: the 20 s answer was not waited for
    assert "second interrupt" in daemon.log()


def test_a_folder_that_appears_later_is_watched_and_scanned(daemon: Daemon) -> None:
    shutil.rmtree(daemon.watch)  # the default 30-minute rescan is not what finds it
    daemon.start()
    wait_for(lambda: "not a folder (yet)" in daemon.log())
    daemon.watch.mkdir()  # a card mounted
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "card.mp4")
    daemon.wait_states({"card.mp4": "ready"})
    shutil.copy(FIXTURES / "tone.wav", daemon.watch / "later.wav")  # seen by the watcher now
    daemon.wait_states({"later.wav": "ready"})
    assert daemon.log().count("not a folder (yet)") == 1
    assert daemon.stop() == 0


def test_check_passes_for_a_good_setup_and_names_what_is_wrong(daemon: Daemon) -> None:
    good = daemon.command("check")
    assert good.returncode == 0, good.stdout + good.stderr
    for name in ("configuration", "api key", "libmagic", "inotify", "folder", "state store"):
        assert f"ok   {name}" in good.stdout
    assert re.search(
        r"ok   ffmpeg: \S+ffmpeg\S*: ffmpeg version \S+.*; H\.264 encoder \w+", good.stdout
    )
    (daemon.root / "api_key").write_text("wrong\n")
    shutil.rmtree(daemon.watch)
    bad = daemon.command("check")
    assert bad.returncode == 1
    assert "FAIL api key" in bad.stdout and "rejected" in bad.stdout
    assert "missing or not a folder" in bad.stdout


def test_init_writes_a_config_that_loads(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "config.toml"
    result = subprocess.run(
        [sys.executable, "-m", "tlwatch", "init", "-c", str(config), "--watch", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        env=clean_env(),
    )
    assert result.returncode == 0, result.stderr
    from tlwatch.config import load

    loaded = load(config)
    assert loaded.watch[0].path == tmp_path
    assert loaded.api.api_key_file == config.parent / "api_key"
    again = subprocess.run(
        [sys.executable, "-m", "tlwatch", "init", "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
        env=clean_env(),
    )
    assert again.returncode == 2 and "exists" in again.stderr


def test_every_command_has_help() -> None:
    commands = ["run", "scan", "upload", "status", "health", "list", "retry", "index", "init"]
    commands += ["check", "sandbox"]
    for command in [[], *([c] for c in commands)]:
        result = subprocess.run(
            [sys.executable, "-m", "tlwatch", *command, "--help"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, command
        assert "usage: tlwatch" in result.stdout


def test_a_lost_multipart_session_answer_starts_a_new_session_once(daemon: Daemon) -> None:
    daemon.configure(api="direct_upload_limit = 1000")
    daemon.sandbox.fault(endpoint="multipart_create", drop="after")
    daemon.start()
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "big.mp4")
    daemon.wait_states({"big.mp4": "ready"})
    complete = [a for a in daemon.sandbox.assets() if a["complete"]]
    assert [a["sha256"] for a in complete] == [sha256_file(FIXTURES / "clip.mp4")]
    assert daemon.sandbox.requests()["multipart_create"] == {"dropped-after": 1, "201": 1}
    assert "adopting" not in daemon.log()  # the orphaned session's asset is never adopted
    assert daemon.stop() == 0


def test_a_corrupt_store_is_rebuilt_from_a_scan_and_the_servers_assets(daemon: Daemon) -> None:
    for name in ("clip.mp4", "tone.wav"):
        shutil.copy(FIXTURES / name, daemon.watch / name)
    daemon.start()
    daemon.wait_states({"clip.mp4": "ready", "tone.wav": "ready"})
    assert daemon.stop() == 0
    daemon.store_path.write_bytes(b"\0garbage" * 1000)
    for suffix in ("-wal", "-shm"):
        Path(str(daemon.store_path) + suffix).unlink(missing_ok=True)
    daemon.start()
    daemon.wait_states({"clip.mp4": "ready", "tone.wav": "ready"}, timeout=10)
    assert "was damaged" in daemon.log()
    assert "rebuilding the store: 2 asset(s)" in daemon.log()
    assert daemon.sandbox.requests()["create"] == {"201": 2}  # nothing sent again
    assert any(".corrupt-" in p.name for p in daemon.store_path.parent.iterdir())
    assert daemon.stop() == 0


def test_scan_shows_progress_on_a_terminal(daemon: Daemon) -> None:
    import pty

    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "a.mp4")
    leader, follower = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "tlwatch", "scan", "-c", str(daemon.config)],
        stdout=follower,
        stderr=subprocess.DEVNULL,
        env=clean_env(),
    ) as process:
        os.close(follower)
        output = b""
        while chunk := _read_pty(leader):
            output += chunk
        assert process.wait(timeout=60) == 0
    os.close(leader)
    text = output.decode()
    assert "\r\x1b[K" in text  # the progress line redraws itself
    assert "1 queued" in text or "1 uploading" in text or "1 processing" in text
    assert "done: 1 uploaded" in text or "done: 1 ready" in text


def _read_pty(descriptor: int) -> bytes:
    try:
        return os.read(descriptor, 65536)
    except OSError:  # EIO: the other side closed
        return b""


def test_many_pending_assets_all_reach_ready(daemon: Daemon) -> None:
    daemon.sandbox.settings(processing_seconds=3.0)
    daemon.configure(api="max_concurrent_uploads = 4")
    names = [f"clip-{i:03d}.mp4" for i in range(60)]
    for index, name in enumerate(names):
        (daemon.watch / name).write_bytes((FIXTURES / "clip.mp4").read_bytes() + bytes([index]))
    daemon.start()
    daemon.wait_states(dict.fromkeys(names, "ready"), timeout=60)
    assert daemon.stop() == 0  # fifty to a request: test_poller.py, on a fixed clock


def test_json_logs_are_one_object_per_line(daemon: Daemon) -> None:
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "line\nbreak.mp4")
    result = daemon.command("scan", "--log-format", "json")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any(r["message"] == r"'line\nbreak.mp4': new → queued" for r in records)


def test_scan_with_a_rejected_key_stops_with_an_error(daemon: Daemon) -> None:
    (daemon.root / "api_key").write_text("wrong\n")
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "a.mp4")
    result = daemon.command("scan")
    assert result.returncode == 1
    assert "API key is rejected" in result.stderr
    assert daemon.states() == {b"a.mp4": "queued"}


def test_the_retry_schedule_survives_a_restart(daemon: Daemon) -> None:
    daemon.sandbox.fault(endpoint="create", status=429, retry_after="120")
    daemon.start()
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "limited.mp4")
    wait_for(
        lambda: (
            daemon.rows()
            and daemon.rows()[0].attempts == 1
            and daemon.rows()[0].state.value == "queued"
        )
    )
    scheduled = daemon.rows()[0].next_attempt_at
    assert scheduled is not None and scheduled > time.time() + 100
    assert daemon.stop() == 0
    daemon.start()
    shutil.copy(FIXTURES / "tone.wav", daemon.watch / "marker.wav")
    daemon.wait_states({"marker.wav": "ready"})  # the workers are busy, yet:
    row = next(r for r in daemon.rows() if r.path.endswith(b"limited.mp4"))
    assert (row.state.value, row.next_attempt_at) == ("queued", scheduled)
    assert daemon.sandbox.requests()["create"] == {"429": 1, "201": 1}
    assert daemon.stop() == 0


def test_an_unreadable_file_is_named_once_and_taken_when_readable(daemon: Daemon) -> None:
    if os.geteuid() == 0:
        # root reads any file whatever its mode: run the daemon as an ordinary user if we can
        pytest.skip("permissions do not stop root from reading; this needs a non-root run")
    locked = daemon.watch / "locked.mp4"
    shutil.copy(FIXTURES / "clip.mp4", locked)
    locked.chmod(0)
    daemon.start()
    wait_for(lambda: "'locked.mp4': cannot read it" in daemon.log())
    locked.chmod(0o644)
    os.utime(locked)  # an event for the watcher
    daemon.wait_states({"locked.mp4": "ready"})
    assert daemon.log().count("cannot read it") == 1
    assert daemon.stop() == 0


def test_a_polled_folder_is_uploaded_without_inotify(daemon: Daemon) -> None:
    daemon.configure(watch="poll = true")
    daemon.config.write_text(
        daemon.config.read_text().replace("[daemon]", "[daemon]\npoll_interval_seconds = 0.5")
    )
    daemon.start()
    wait_for(lambda: "polling it" in daemon.log())
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "on-a-share.mp4")
    daemon.wait_states({"on-a-share.mp4": "ready"})
    assert daemon.stop() == 0

"""tlwatch under systemd: notifications, the watchdog, reloads, journald lines, the unit files."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import FIXTURES, Daemon, NotifySocket, clean_env, systemd_exposure, wait_for

SERVICE = Path(__file__).parents[2] / "service"


@pytest.fixture(params=["path", "abstract"])
def notify(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
    else:
        address = "@tlwatch-test-" + secrets.token_hex(6)
    listener = NotifySocket(address)
    yield listener
    listener.close()


def systemd_env(notify: NotifySocket, **extra: str) -> dict[str, str]:
    return clean_env(NOTIFY_SOCKET=notify.address, WATCHDOG_USEC="1000000", **extra)


def test_ready_watchdog_status_reload_and_stopping(daemon: Daemon, notify: NotifySocket) -> None:
    daemon.start(env=systemd_env(notify))
    wait_for(lambda: "READY=1" in notify.lines())
    wait_for(lambda: notify.lines().count("WATCHDOG=1") >= 3)  # every 0.5 s for a 1 s watchdog
    assert any(line.startswith("STATUS=") for line in notify.lines())
    ready = notify.index("READY=1")

    second = daemon.root / "second"
    second.mkdir()
    daemon.config.write_text(
        daemon.config.read_text() + '[[watch]]\npath = "second"\nsettle_seconds = 0.3\n'
    )
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: notify.index("READY=1", after=notify.index("RELOADING=1", after=ready)) > 0)
    assert "configuration reloaded: watching 2 folder(s)" in daemon.log()
    shutil.copy(FIXTURES / "clip.mp4", second / "from-the-new-folder.mp4")
    daemon.wait_states({"from-the-new-folder.mp4": "ready"})

    assert daemon.stop() == 0
    assert "STOPPING=1" in notify.lines()
    statuses = [line for line in notify.lines() if line.startswith("STATUS=")]
    assert not any("from-the-new-folder" in line for line in statuses)  # never a file name


def test_an_invalid_reload_keeps_the_old_configuration(
    daemon: Daemon, notify: NotifySocket
) -> None:
    daemon.start(env=systemd_env(notify))
    wait_for(lambda: "READY=1" in notify.lines())
    daemon.config.write_text(daemon.config.read_text() + "[[watch]]\nsettle_seconds = -1\n")
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "keeping the old one" in daemon.log())
    assert "watch[1].path: is required" in daemon.log()
    wait_for(lambda: notify.lines().count("READY=1") == 2)
    shutil.copy(FIXTURES / "tone.wav", daemon.watch / "still-watched.wav")
    daemon.wait_states({"still-watched.wav": "ready"})
    assert daemon.stop() == 0


def test_under_journald_lines_carry_priorities_and_no_timestamps(daemon: Daemon) -> None:
    daemon.config.write_text(
        daemon.config.read_text().replace("timeout_seconds = 5", "timeout_seconds = 5\nbogus = 1")
    )
    with daemon.log_path.open("wb") as log:
        info = os.fstat(log.fileno())
        env = clean_env(JOURNAL_STREAM=f"{info.st_dev}:{info.st_ino}")
        result = subprocess.run(
            [sys.executable, "-m", "tlwatch", "check", "-c", str(daemon.config)],
            stderr=log,
            env=env,
            check=False,
        )
    assert result.returncode == 78  # configuration errors are printed, not logged
    daemon.configure()
    (daemon.root / "api_key").write_text("wrong-key\n")
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "a.mp4")
    with daemon.log_path.open("wb") as log:
        info = os.fstat(log.fileno())
        env = clean_env(JOURNAL_STREAM=f"{info.st_dev}:{info.st_ino}")
        process = subprocess.Popen(
            [sys.executable, "-m", "tlwatch", "run", "-c", str(daemon.config)], stderr=log, env=env
        )
        try:
            wait_for(lambda: "rejected (HTTP 401)" in daemon.log())
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
    lines = daemon.log().splitlines()
    assert lines and all(line[:3] in ("<6>", "<4>", "<3>", "<7>") for line in lines), lines
    assert any(line.startswith("<3>tlwatch.keycheck: the API key was rejected") for line in lines)
    assert any(line.startswith("<6>tlwatch.state:") for line in lines)
    assert not any(line[3:7].isdigit() for line in lines)  # journald adds the time


# ---- the unit files ------------------------------------------------------------------------
needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here"
)


def installed_copy(unit: str, tmp_path: Path) -> Path:
    """The unit as installed: its tlwatch path pointed at this checkout's real command (verify
    insists the executable exists); every other line untouched."""
    tlwatch = shutil.which("tlwatch") or str(Path(sys.executable).parent / "tlwatch")
    text = (SERVICE / unit).read_text()
    text = text.replace("/opt/tlwatch/bin/tlwatch", tlwatch).replace(
        "%h/.local/bin/tlwatch", tlwatch
    )
    copy = tmp_path / unit
    copy.write_text(text)
    return copy


@needs_systemd
@pytest.mark.parametrize("unit", ["tlwatch.service", "tlwatch-user.service"])
def test_units_verify_with_nothing_on_stderr(unit: str, tmp_path: Path) -> None:
    copy = installed_copy(unit, tmp_path)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    mode = ["--user"] if "user" in unit else []
    result = subprocess.run(
        ["systemd-analyze", "verify", *mode, str(copy)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@needs_systemd
def test_the_system_unit_is_hardened(tmp_path: Path) -> None:
    copy = installed_copy("tlwatch.service", tmp_path)
    assert systemd_exposure(copy) <= 1.5


def test_the_system_unit_says_what_the_issue_asks() -> None:
    text = (SERVICE / "tlwatch.service").read_text()
    for directive in (
        "Type=notify",
        "LoadCredential=api_key:/etc/tlwatch/api_key",
        "StateDirectory=tlwatch",
        "UMask=0077",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "StartLimitIntervalSec=",
        "StartLimitBurst=",
        "WatchdogSec=",
        "TimeoutStopSec=",
        "User=tlwatch",
        "ProtectSystem=strict",
    ):
        assert directive in text
    assert "Environment=" not in text  # the key never goes through the environment
    assert "u tlwatch" in (SERVICE / "tlwatch.sysusers").read_text()


def test_a_reload_that_drops_a_folder_stops_watching_it(daemon: Daemon) -> None:
    other = daemon.root / "other"
    other.mkdir()
    original = daemon.config.read_text()
    daemon.config.write_text(original + '[[watch]]\npath = "other"\nsettle_seconds = 0.3\n')
    daemon.start()
    shutil.copy(FIXTURES / "clip.mp4", other / "before.mp4")
    daemon.wait_states({"before.mp4": "ready"})
    daemon.config.write_text(original)
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded: watching 1 folder(s)" in daemon.log())
    shutil.copy(FIXTURES / "tone.wav", other / "after.wav")
    shutil.copy(FIXTURES / "photo.jpg", daemon.watch / "marker.jpg")
    daemon.wait_states({"marker.jpg": "ready"})  # by then, after.wav would have been seen
    assert b"after.wav" not in daemon.states()
    assert daemon.stop() == 0

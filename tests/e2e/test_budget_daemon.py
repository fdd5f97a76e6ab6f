"""Media-minute budgets with the daemon: files held with the reason, released when the budget
is raised; a one-off `tlwatch upload` obeys them too."""

from __future__ import annotations

import shutil
import signal

from tlwatch.models import FileState

from conftest import FIXTURES, Daemon, wait_for


def test_budgets_hold_files_and_a_raised_total_releases_them(daemon: Daemon) -> None:
    daemon.configure()
    daemon.config.write_text(
        daemon.config.read_text() + "[budget]\nmax_media_minutes_total = 0.04\n"
    )
    for number in range(3):
        (daemon.watch / f"c{number}.mp4").write_bytes(
            (FIXTURES / "clip.mp4").read_bytes() + bytes([number])
        )
    daemon.start()
    wait_for(lambda: sorted(daemon.states().values()).count("held") == 1, timeout=30)
    held = next(r for r in daemon.rows() if r.state == FileState.HELD)
    assert (held.reason or "").startswith("total media budget: 0.03 of 0.04 min used")
    assert len(daemon.sandbox.assets()) == 2
    wait_for(lambda: "in all 0.03 of 0.04 min" in daemon.command("status").stdout)
    daemon.config.write_text(daemon.config.read_text().replace("0.04", "1.0"))
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_states({f"c{n}.mp4": "ready" for n in range(3)}, timeout=30)
    assert len(daemon.sandbox.assets()) == 3
    assert daemon.stop() == 0


def test_a_one_off_upload_obeys_the_budget_too(daemon: Daemon) -> None:
    daemon.configure()
    daemon.config.write_text(
        daemon.config.read_text() + "[budget]\nmax_media_minutes_total = 0.01\n"
    )
    clip = daemon.root / "elsewhere.mp4"
    shutil.copy(FIXTURES / "clip.mp4", clip)  # one second: over a budget of 0.6 s
    result = daemon.command("upload", str(clip))
    assert result.returncode == 1
    assert "held" in result.stderr and "total media budget" in result.stderr
    assert daemon.sandbox.assets() == []

"""The whole daemon against the sandbox's rate-limit mode, and `status` showing the limits."""

from __future__ import annotations

import pytest

from tlwatch.sandbox import Settings

from conftest import FIXTURES, Daemon, sha256_file


@pytest.fixture
def sandbox_settings() -> Settings:
    return Settings(processing_seconds=0.2, rate_limit=5, rate_window=2.0)


def test_a_rate_limited_server_sees_no_429_and_everything_arrives_once(daemon: Daemon) -> None:
    names = []
    for number in range(20):
        path = daemon.watch / f"c{number:02d}.mp4"
        path.write_bytes((FIXTURES / "clip.mp4").read_bytes() + bytes([number]))
        names.append(path)
    result = daemon.command("scan")
    assert result.returncode == 0, result.stderr
    assert daemon.assets_by_sha() == {sha256_file(p): 1 for p in names}
    # Each worker waits out a used-up window (the server's reset is rounded up to the second,
    # so the wait never ends early) and a new window is taken as full, not unlimited: no 429.
    assert "429" not in daemon.sandbox.requests().get("create", {}), daemon.sandbox.requests()


def test_status_shows_the_limits_in_force(daemon: Daemon) -> None:
    import json

    from conftest import wait_for

    daemon.configure(api='max_upload_rate = "4MB"')
    daemon.start()
    found = wait_for(
        lambda: (got := json.loads(daemon.command("status", "--json").stdout))["limits"] and got
    )
    assert found["limits"]["upload_rate_limit"] == 4_000_000
    assert found["limits"]["upload_workers_allowed"] == 2
    assert "limits: upload rate 4.0 MB/s" in daemon.command("status").stdout
    assert daemon.stop() == 0

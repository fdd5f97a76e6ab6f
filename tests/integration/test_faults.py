"""Every fault class the sandbox can inject, and what the client makes of it."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from email.utils import formatdate
from pathlib import Path

import pytest

from tlwatch.api import Client
from tlwatch.errors import (
    FeatureNotEnabled,
    OutcomeUnknown,
    RateLimited,
    ServerError,
    TransportError,
)
from tlwatch.limits import Pacer
from tlwatch.retry import Backoff
from tlwatch.sandbox import DEMO_API_KEY

from conftest import Sandbox


def clip(tmp_path: Path, size: int = 4096) -> Path:
    path = tmp_path / "clip.bin"
    path.write_bytes(os.urandom(size))
    return path


class Sleeps:
    """Records the waits the client asks for instead of sleeping; time moves on by as much."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.skipped = 0.0

    def __call__(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.skipped += seconds
        return False

    def clock(self) -> float:
        return time.time() + self.skipped


def make_client(sandbox: Sandbox, sleeps: Sleeps, **options: object) -> Client:
    pacer = Pacer(clock=sleeps.clock)
    return Client(DEMO_API_KEY, base_url=sandbox.base_url, sleep=sleeps, pacer=pacer, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry_after": "7"}, 7.0),
        ({"retry_after": "http-date"}, 9.0),
        ({"reset_after": 12.0}, 12.0),
        ({"empty_body": True}, None),
    ],
    ids=["retry-after-seconds", "retry-after-date", "ratelimit-reset", "empty-body"],
)
def test_429_on_a_get_is_retried_honouring_the_servers_wait(
    sandbox: Sandbox, tmp_path: Path, headers: dict[str, object], expected: float | None
) -> None:
    if headers.get("retry_after") == "http-date":
        headers = {"retry_after": formatdate(time.time() + 9, usegmt=True)}
    sleeps = Sleeps()
    with make_client(sandbox, sleeps) as api:
        asset = api.create_direct(clip(tmp_path))
        sandbox.fault(endpoint="retrieve", status=429, times=2, **headers)
        assert api.retrieve(asset.id).id == asset.id
    assert len(sleeps.waits) == 2
    if expected is not None:
        assert all(wait == pytest.approx(expected, abs=1.5) for wait in sleeps.waits)
    else:
        assert all(0 <= wait <= 30 for wait in sleeps.waits)
    assert sandbox.requests()["retrieve"] == {"429": 2, "200": 1}


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_on_idempotent_calls_are_retried(sandbox: Sandbox, status: int) -> None:
    sleeps = Sleeps()
    sandbox.fault(endpoint="list", status=status, times=3)
    with make_client(sandbox, sleeps) as api:
        assert list(api.list_assets()) == []
    assert sandbox.requests()["list"] == {str(status): 3, "200": 1}


def test_retries_give_up_after_max_attempts(sandbox: Sandbox) -> None:
    sleeps = Sleeps()
    sandbox.fault(endpoint="list", status=503, times=10)
    with make_client(sandbox, sleeps, max_attempts=3) as api, pytest.raises(ServerError) as error:
        list(api.list_assets())
    assert error.value.status == 503
    assert len(sleeps.waits) == 2


def test_backoff_is_capped_full_jitter() -> None:
    backoff = Backoff(base=1.0, cap=8.0)
    assert backoff.delay(1, rand=lambda: 1.0) == 1.0
    assert backoff.delay(3, rand=lambda: 1.0) == 4.0
    assert backoff.delay(10, rand=lambda: 1.0) == 8.0
    assert backoff.delay(10, rand=lambda: 0.0) == 0.0
    assert backoff.delay(1, server_wait=30.0, rand=lambda: 0.5) == 30.0
    assert Backoff(server_cap=60).delay(1, server_wait=10_000.0) == 60.0


def test_a_long_server_wait_is_left_to_the_caller(sandbox: Sandbox) -> None:
    sleeps = Sleeps()
    sandbox.fault(endpoint="list", status=429, retry_after="3600")
    with make_client(sandbox, sleeps) as api, pytest.raises(RateLimited) as error:
        list(api.list_assets())
    assert error.value.retry_after == pytest.approx(3600)
    assert sleeps.waits == []


def test_a_create_is_never_retried(sandbox: Sandbox, tmp_path: Path) -> None:
    sleeps = Sleeps()
    sandbox.fault(endpoint="create", status=429, retry_after="2")
    with make_client(sandbox, sleeps) as api, pytest.raises(RateLimited) as error:
        api.create_direct(clip(tmp_path))
    assert error.value.retry_after == pytest.approx(2)
    assert sleeps.waits == []
    assert sandbox.requests()["create"] == {"429": 1}
    assert sandbox.assets() == []


def test_connection_dropped_before_storing_is_an_unknown_outcome_with_nothing_stored(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.fault(endpoint="create", drop="before")
    with make_client(sandbox, Sleeps()) as api, pytest.raises(OutcomeUnknown):
        api.create_direct(clip(tmp_path))
    assert sandbox.assets() == []


def test_lost_response_is_an_unknown_outcome_with_the_asset_stored(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.fault(endpoint="create", drop="after")
    path = clip(tmp_path)
    with make_client(sandbox, Sleeps()) as api:
        with pytest.raises(OutcomeUnknown):
            api.create_direct(path, user_metadata={"tlwatch_token": "t-1"})
        found = list(api.list_assets(filename="clip.bin"))
    assert [a.user_metadata for a in found] == [{"tlwatch_token": "t-1"}]
    assert sandbox.requests()["create"] == {"dropped-after": 1}


def test_slow_response_times_out(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.fault(endpoint="create", delay=1.5)
    sandbox.fault(endpoint="retrieve", delay=1.5, times=2)
    sleeps = Sleeps()
    with make_client(sandbox, sleeps, timeout=0.5, max_attempts=2) as api:
        with pytest.raises(OutcomeUnknown):
            api.create_direct(clip(tmp_path))
        with pytest.raises(TransportError):
            api.retrieve("6298d673f1090f1100476d4c")
    assert len(sleeps.waits) == 1


def test_slow_but_in_time_succeeds(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.fault(endpoint="create", delay=0.3)
    with make_client(sandbox, Sleeps(), timeout=5) as api:
        assert api.create_direct(clip(tmp_path)).status == "processing"


def test_nothing_listening_is_a_transport_error(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1.3"
    with (
        Client(DEMO_API_KEY, base_url=url, max_attempts=1) as api,
        pytest.raises(TransportError) as error,
    ):
        api.create_direct(clip(tmp_path))
    assert not isinstance(error.value, OutcomeUnknown)  # never connected: nothing stored


def test_multipart_not_enabled_is_feature_not_enabled(sandbox: Sandbox) -> None:
    sandbox.settings(multipart_enabled=False)
    with make_client(sandbox, Sleeps()) as api, pytest.raises(FeatureNotEnabled) as error:
        api.create_multipart("big.mp4", "video", 300_000_000)
    assert error.value.status == 403


def test_failed_chunk_puts_are_retried_on_fresh_urls(sandbox: Sandbox, tmp_path: Path) -> None:
    path = clip(tmp_path, 64 * 1024 * 4)
    sleeps = Sleeps()
    with make_client(sandbox, sleeps) as api:
        session = api.create_multipart("c.bin", "video", path.stat().st_size)
        sandbox.fault(endpoint="chunk_put", status=503, times=1)
        sandbox.fault(endpoint="chunk_put", drop="after", times=1)
        api.upload_chunks(session, path)
        status = api.upload_status(session.upload_id)
    assert status.status == "completed"
    puts = sandbox.requests()["chunk_put"]
    assert puts == {"503": 1, "dropped-after": 1, "200": 4}
    assert sandbox.requests()["multipart_urls"]["200"] >= 1
    record = next(a for a in sandbox.assets() if a["id"] == session.asset_id)
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()

"""Pacing from rate-limit headers, the bandwidth cap and its timetable, fewer workers while the
API struggles: on fake clocks (the daemon: tests/e2e/test_limits_daemon.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from tlwatch.config import parse
from tlwatch.errors import ConfigError
from tlwatch.limits import Bandwidth, Concurrency, Pacer, Timetable, family_of, parse_rate
from tlwatch.sandbox import Settings


def test_the_pacer_waits_out_a_used_up_window() -> None:
    now = [1_800_000_000.0]
    pacer = Pacer(clock=lambda: now[0], reserve=1)
    assert pacer.take("create") == 0  # nothing known yet
    pacer.observe(
        "create",
        {
            "x-ratelimit-limit": "10",
            "x-ratelimit-remaining": "3",
            "x-ratelimit-reset": str(now[0] + 8),
        },
    )
    assert pacer.take("create") == 0  # 3 -> 2
    assert pacer.take("create") == 0  # 2 -> 1: the reserve is left
    assert pacer.take("create") == pytest.approx(8.05)
    assert pacer.take("retrieve") == 0  # another family is not held
    pacer.observe(
        "create", {"x-ratelimit-used": "10", "x-ratelimit-limit": "10", "x-ratelimit-reset": "5"}
    )
    assert pacer.take("create") == pytest.approx(5.05)  # a small reset is a delta
    now[0] += 6
    assert pacer.take("create") == 0  # a new window: as full as its limit, as far as we know
    for _ in range(8):  # 10 -> 1: the reserve is left
        assert pacer.take("create") == 0
    assert pacer.take("create") == pytest.approx(0.05)  # not unlimited: the reserve is kept


def test_rates_and_timetables() -> None:
    assert parse_rate("4MB") == 4_000_000
    assert parse_rate("4MiB") == 4 * 1024 * 1024
    assert parse_rate("500kB") == 500_000
    assert parse_rate("1000B") == 1000  # bytes, not kilobytes
    assert parse_rate("64000") == 64_000
    assert parse_rate("off") is None
    with pytest.raises(ValueError, match="not a rate"):
        parse_rate("fast")
    table = Timetable.parse("08:00,2MB 19:00,10MB 23:00,off")
    assert table.rate_at(datetime(2026, 11, 28, 7, 59)) is None  # still last night's "off"
    assert table.rate_at(datetime(2026, 11, 28, 8, 0)) == 2_000_000
    assert table.rate_at(datetime(2026, 11, 28, 19, 30)) == 10_000_000
    assert table.rate_at(datetime(2026, 11, 28, 23, 59)) is None
    assert table.rate_at(datetime(2026, 11, 29, 8, 1)) == 2_000_000  # the day rolls over
    with pytest.raises(ValueError, match="not HH:MM"):
        Timetable.parse("8am,2MB 19:00,off")


def test_the_bandwidth_cap_holds_within_ten_percent_over_ten_seconds() -> None:
    now = [0.0]
    bucket = Bandwidth(Timetable.parse("4MB"), clock=lambda: now[0])
    sent = 0
    while now[0] < 10.0:
        wait = bucket.take(256 * 1024)
        now[0] += wait + 0.001  # the piece goes out after its wait
        sent += 256 * 1024
    rate = sent / now[0]
    assert 0.9 * 4_000_000 <= rate <= 1.1 * 4_000_000
    bucket.set(None)  # a reload turns it off: no wait at all
    assert bucket.take(10**9) == 0


def test_the_cap_follows_its_timetable_through_the_day() -> None:
    clock = [datetime(2026, 11, 28, 7, 0)]
    bucket = Bandwidth(Timetable.parse("08:00,1MB 20:00,off"), local_time=lambda: clock[0])
    assert bucket.rate() is None
    clock[0] = datetime(2026, 11, 28, 9, 0)
    assert bucket.rate() == 1_000_000


def test_workers_are_halved_on_trouble_and_come_back_one_by_one() -> None:
    workers = Concurrency(4)
    workers.failed()
    assert workers.allowed == 4  # one failure is not a trend
    workers.failed()
    assert workers.allowed == 2
    for _ in range(9):
        workers.succeeded()
    assert workers.allowed == 2
    workers.succeeded()
    assert workers.allowed == 3


def test_endpoint_families() -> None:
    assert [
        family_of(e)
        for e in ("assets.create", "multipart.report", "indexing.create", "assets.list")
    ] == [
        "create",
        "multipart",
        "indexing",
        "retrieve",
    ]


def test_a_bad_rate_names_its_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"api\.max_upload_rate: must be a rate like"):
        parse({"api": {"max_upload_rate": "lots"}}, source=tmp_path / "c.toml")
    config = parse({"api": {"max_upload_rate": "08:00,2MB 23:00,off"}}, source=None)
    assert config.api.max_upload_rate is not None


@pytest.fixture
def sandbox_settings() -> Settings:
    return Settings(processing_seconds=0.2, rate_limit=5, rate_window=2.0)

"""A fleet: several `tlwatch run` processes, each with its own state folder and watched folder, all
watching one shared folder (at different paths), on one real PostgreSQL store; the sandbox allows
30 requests per 10 s for the whole account. One host killed -9 in the middle; PostgreSQL
restarted in the middle of a run."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pgserver import Server, free_port

from tlwatch.models import FileState
from tlwatch.sandbox import DEMO_API_KEY, Settings
from tlwatch.state import Store

from conftest import FIXTURES, Daemon, Sandbox, wait_for

PNG = (FIXTURES / "photo.png").read_bytes()
LEASE = 10  # seconds: the shortest allowed, to keep the test short
# Files in the shared folder, and in each host's own (the full size: 276 and 8, for 300
# distinct contents; the suite runs a smaller fleet, the same way).
SHARED = int(os.environ.get("TLWATCH_FLEET_SHARED", "45"))
OWN = 8


@pytest.fixture
def sandbox_settings() -> Settings:
    return Settings(processing_seconds=0.2, rate_limit=30, rate_window=10.0)


@dataclass
class Host(Daemon):
    """One tlwatch of the fleet: its own folder (`root/watch`), state folder and log."""

    name: str = ""
    url: str = ""
    nas: Path = Path()  # where this host sees the shared folder

    def __post_init__(self) -> None:
        self.watch.mkdir(parents=True)
        (self.root / "api_key").write_text(DEMO_API_KEY + "\n")
        self.config.write_text(
            f'[api]\nbase_url = "{self.sandbox.base_url}"\napi_key_file = "api_key"\n'
            "timeout_seconds = 5\n"
            f'[state]\npath = "state/state.db"\nurl = "{self.url}"\nlease_seconds = {LEASE}\n'
            f'[daemon]\nhost_name = "{self.name}"\nretry_base_seconds = 0.05\n'
            "retry_max_seconds = 1\nshutdown_timeout_seconds = 5\npoll_interval_seconds = 1\n"
            '[ui]\nlisten = "off"\n'
            '[[watch]]\npath = "watch"\nsettle_seconds = 0.3\n'
            f'[[watch]]\npath = "{self.nas}"\nsettle_seconds = 0.3\nshare = "nas1"\n'
        )
        self.config.chmod(0o600)

    def store(self) -> Store:
        """The fleet's store, read as this host sees it (its id, its paths)."""
        return Store(
            self.root / "state" / "state.db",
            url=self.url,
            exclusive=False,
            shares={os.fsencode(self.nas): "nas1"},
            host=self.host_id(),
        )

    def host_id(self) -> str:
        return str(json.loads((self.root / "state" / "host.id").read_text())["id"])


@pytest.fixture
def fleet(tmp_path: Path, sandbox: Sandbox, pg_server: Server) -> Iterator[list[Host]]:
    url = pg_server.database()
    nas = tmp_path / "nas"
    nas.mkdir()
    hosts = []
    for number in (1, 2, 3):
        seen_at = tmp_path / f"mnt{number}"  # each host mounts the share at a path of its own
        seen_at.symlink_to(nas)
        name = f"host{number}"
        hosts.append(Host(tmp_path / name, sandbox, name=name, url=url, nas=seen_at))
    try:
        yield hosts
    finally:
        for host in hosts:
            if host.process is not None:
                host.process.kill()
                host.process.wait()


def media(seed: int) -> bytes:
    """A small real image, its content its own."""
    return PNG + seed.to_bytes(8, "big") * 64


def rows(host: Host) -> list[Any]:
    with host.store() as store:
        return store.all()


def until(condition: Any, hosts: list[Host], timeout: float) -> None:
    """Wait for `condition`; on a timeout, say where every file stands and what each host said."""
    try:
        wait_for(condition, timeout=timeout)
    except AssertionError:
        found = rows(hosts[0])
        where = Counter((r.state.value, r.reason) for r in found), [r.path for r in found[:3]]
        said = "\n".join(f"--- {h.name}\n{h.log()[-3000:]}" for h in hosts)
        raise AssertionError(f"not within {timeout} s: {where}\n{said}") from None


def test_three_hosts_share_the_work_and_one_killed_loses_nothing(
    fleet: list[Host], sandbox: Sandbox, tmp_path: Path
) -> None:
    one, _, three = fleet
    nas = tmp_path / "nas"
    contents: set[bytes] = set()
    for seed in range(SHARED):  # the shared folder
        (nas / f"S{seed:03d}.png").write_bytes(body := media(seed))
        contents.add(body)
    for number, host in enumerate(fleet):  # each host's own folder
        for seed in range(OWN):
            body = media(1000 * (number + 1) + seed)
            (host.root / "watch" / f"own{seed}.png").write_bytes(body)
            contents.add(body)
    for seed in range(3):  # the same content in two places: one asset each
        (one.root / "watch" / f"copy-of-S{seed:03d}.png").write_bytes(media(seed))
        (three.root / "watch" / f"copy-of-own{seed}.png").write_bytes(media(2000 + seed))
    sandbox.fault(endpoint="create", delay=0.4, times=10_000)  # uploads in flight, to kill one
    for host in fleet:
        host.start()

    def three_in_the_middle() -> bool:
        """host3 uploads a shared file, and files of its own folder wait in the queue."""
        with three.store() as store:
            found, mine = store.all(), store.host
        return any(
            r.state == FileState.UPLOADING and r.lease_host == mine and b"/mnt3/" in r.path
            for r in found
        ) and any(r.state == FileState.QUEUED and b"/host3/watch/" in r.path for r in found)

    wait_for(three_in_the_middle, timeout=60)
    three.stop(signal.SIGKILL)
    with one.store() as store:
        claimed = [r.id for r in store.all() if r.lease_host == three.host_id()]

    def taken_over() -> bool:
        by_id = {r.id: r for r in rows(one)}
        shared = [by_id[i] for i in claimed if b"/mnt" in by_id[i].path]
        return bool(shared) and all(r.state != FileState.UPLOADING for r in shared)

    until(taken_over, fleet, timeout=LEASE + 30)
    fleet_view = json.loads(one.command("status", "--fleet", "--json").stdout)
    by_name = {h["name"]: h for h in fleet_view["hosts"]}
    assert by_name["host3"]["lost"] is True
    assert by_name["host1"]["lost"] is False and by_name["host1"]["this_host"] is True

    def shared_done() -> bool:
        found = [r for r in rows(one) if b"/mnt1/" in r.path]
        done = (FileState.READY, FileState.DUPLICATE)  # (a copy elsewhere may be the one sent)
        return len(found) == SHARED and all(r.state in done for r in found)

    until(shared_done, fleet, timeout=60 + SHARED)
    waiting = json.loads(one.command("status", "--fleet", "--json").stdout)
    assert {h["name"]: h for h in waiting["hosts"]}["host3"]["queued_in_its_folders"] > 0
    three.start()  # back: it finishes its own folder's files

    def all_done() -> bool:
        found = rows(one)
        return len(found) == SHARED + 3 * OWN + 6 and all(
            r.state in (FileState.READY, FileState.DUPLICATE) for r in found
        )

    until(all_done, fleet, timeout=60 + SHARED)
    assets = Counter(str(a["sha256"]) for a in sandbox.assets())
    assert len(assets) == len(contents)  # every distinct content, none lost
    assert set(assets.values()) == {1}  # each exactly once
    too_many = sum(c.get("429", 0) for c in sandbox.requests().values())
    assert too_many <= 3, sandbox.requests()
    for host in fleet:
        host.stop()
        assert "Traceback" not in host.log(), host.log()


def test_postgresql_restarted_in_the_middle_loses_nothing_and_sends_nothing_twice(
    fleet: list[Host], sandbox: Sandbox, pg_server: Server
) -> None:
    one = fleet[0]
    for seed in range(30):
        (one.root / "watch" / f"a{seed:02d}.png").write_bytes(media(seed))
    sandbox.fault(endpoint="create", delay=0.2, times=10_000)
    one.start()
    wait_for(lambda: sum(r.state == FileState.READY for r in rows(one)) >= 5, timeout=60)
    pg_server.restart()  # every connection cut, mid-run
    for seed in range(30, 40):  # files that come while (or just after) it is away
        (one.root / "watch" / f"a{seed:02d}.png").write_bytes(media(seed))

    def done() -> bool:
        found = rows(one)
        return len(found) == 40 and all(r.state == FileState.READY for r in found)

    until(done, fleet, timeout=120)
    assets = Counter(str(a["sha256"]) for a in sandbox.assets())
    assert len(assets) == 40 and set(assets.values()) == {1}
    one.stop()
    said = one.log()
    assert "Traceback" not in said, said
    assert said.count("holding all work") <= 1, said  # an outage is said once, if at all
    assert said.count("holding all work") == said.count("writable again; work resumes"), said


def test_the_database_password_is_never_shown_and_health_says_whether_it_is_reached(
    fleet: list[Host], pg_server: Server
) -> None:
    one = fleet[0]
    secret = "s3cret-Pa55word-of-the-fleet"
    (one.root / "db_password").write_text(secret + "\n")
    one.config.write_text(
        one.config.read_text().replace("[state]\n", '[state]\npassword_file = "db_password"\n')
    )
    (one.root / "watch" / "a.png").write_bytes(media(1))
    one.start()
    until(lambda: [r.state for r in rows(one)] == [FileState.READY], fleet, timeout=30)
    healthy = one.command("health", "--json")
    found = json.loads(healthy.stdout)
    assert found["database"] == "reachable" and found["host"]["name"] == "host1", found
    checked = one.command("check")
    assert "reachable; 1 host(s) have run" in checked.stdout, checked.stdout
    outputs = [
        healthy.stdout,
        checked.stdout,
        one.command("status").stdout,
        one.command("status", "--fleet").stdout,
    ]
    one.stop()
    for said in [*outputs, one.log(), healthy.stderr]:
        assert secret not in said
    # The database gone: health says so, and the URL shown holds no password.
    one.config.write_text(one.config.read_text().replace(f":{pg_server.port}/", f":{free_port()}/"))
    gone = one.command("health")
    assert gone.returncode == 1
    assert "database: unreachable" in gone.stdout and secret not in gone.stdout + gone.stderr


def test_one_host_on_sqlite_says_it_is_no_fleet(daemon: Daemon) -> None:
    daemon.configure()
    said = daemon.command("status", "--fleet")
    assert said.returncode == 0 and "no fleet" in said.stdout
    assert json.loads(daemon.command("status", "--fleet", "--json").stdout)["fleet"] is False

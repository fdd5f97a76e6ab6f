"""Shared fixtures: a real sandbox on 127.0.0.1, a client for it, and a thread-leak guard."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pgserver
import pytest

from tlwatch.api import Client
from tlwatch.sandbox import DEMO_API_KEY, SandboxServer, Settings, make_server
from tlwatch.state import Store

FIXTURES = Path(__file__).parent / "fixtures"


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def until_idle(worker: Any, timeout: float = 10.0) -> None:
    """Turn an `IntakeWorker` until every path it heard of is recorded (reads run in its pool:
    a read that finishes wakes the next turn)."""
    wait_for(lambda: (worker.turn(), worker.idle())[1], timeout=timeout, interval=0)


@dataclass
class Sandbox:
    """A running sandbox and its admin view, over real HTTP."""

    server: SandboxServer

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/v1.3")

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.root + path, data=data, method=method)
        request.add_header("content-type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def assets(self) -> list[dict[str, Any]]:
        return list(self.admin("GET", "/_sandbox/assets"))

    def indexed(self) -> list[dict[str, Any]]:
        return list(self.admin("GET", "/_sandbox/indexed"))

    def requests(self) -> dict[str, dict[str, int]]:
        return dict(self.admin("GET", "/_sandbox/requests"))

    def fault(self, **fields: Any) -> None:
        self.admin("POST", "/_sandbox/faults", fields)

    def settings(self, **changes: Any) -> None:
        self.admin("PATCH", "/_sandbox/settings", changes)


@pytest.fixture
def sandbox_settings() -> Settings:
    return Settings(
        processing_seconds=0.2, indexing_seconds=0.3, chunk_size=64 * 1024, initial_urls=3
    )


@pytest.fixture
def sandbox(tmp_path: Path, sandbox_settings: Settings) -> Iterator[Sandbox]:
    server = make_server("127.0.0.1", 0, sandbox_settings, tmp_path / "sandbox-data")
    thread = server.start()
    yield Sandbox(server)
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[Client]:
    with Client(DEMO_API_KEY, base_url=sandbox.base_url, timeout=10, sleep=lambda s: None) as api:
        yield api


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pgserver.Server]:
    """A real PostgreSQL server for the whole session (of this test process)."""
    why = pgserver.missing()
    if why is not None:
        pytest.skip(why)
    server = pgserver.Server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest) -> str | None:
    """The same store test on each engine: None (SQLite) or a new PostgreSQL database's URL."""
    if request.param == "sqlite":
        return None
    server: pgserver.Server = request.getfixturevalue("pg_server")
    return server.database()


OpenStore = Callable[..., Store]


@pytest.fixture
def open_store(tmp_path: Path, engine: str | None) -> OpenStore:
    """Open the test's store (the same one each time) on the engine of the test."""

    def opened(**options: Any) -> Store:
        return Store(tmp_path / "s.db", url=engine, **options)

    return opened


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test ends every thread it started (the sandbox's request threads included)."""
    before = set(threading.enumerate())
    yield

    def extra() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in before and t.is_alive()]

    try:
        wait_for(lambda: not extra(), timeout=5)
    except AssertionError:
        raise AssertionError(f"threads left running: {[t.name for t in extra()]}") from None


class NotifySocket:
    """A stand-in for systemd's notification socket: collects every datagram."""

    def __init__(self, address: str) -> None:
        self.address = address  # as NOTIFY_SOCKET shows it ("@name" for the abstract namespace)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._collect, name="notify-test")
        self._thread.start()

    def _collect(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def lines(self) -> list[str]:
        return [line for _, line in self.messages]

    def index(self, line: str, after: int = -1) -> int:
        """The position of the first `line` after position `after` (-1 when absent)."""
        found = [i for i, x in enumerate(self.lines()) if x == line and i > after]
        return found[0] if found else -1

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


# ---- the real `tlwatch` command in a subprocess --------------------------------------------
@dataclass
class Daemon:
    """A configured tlwatch (config file, watched folder, store) run as a real subprocess."""

    root: Path
    sandbox: Sandbox
    process: subprocess.Popen[bytes] | None = None

    @property
    def watch(self) -> Path:
        return self.root / "watch"

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def store_path(self) -> Path:
        return self.root / "state" / "state.db"

    @property
    def log_path(self) -> Path:
        return self.root / "daemon.log"

    def configure(
        self,
        *,
        api: str = "",
        watch: str = "",
        settle: float = 0.3,
        timeout: float = 5,
        tables: str = "",
        ui: str = 'listen = "off"',
    ) -> None:
        """Write the config: `api`, `watch` and `ui` lines join their tables, `tables` are
        more. No status page unless asked for (the suite runs daemons side by side)."""
        self.config.write_text(
            f'[api]\nbase_url = "{self.sandbox.base_url}"\napi_key_file = "api_key"\n'
            f"timeout_seconds = {timeout}\n{api}\n"
            f'[state]\npath = "state/state.db"\n'
            f"[daemon]\nretry_base_seconds = 0.05\nretry_max_seconds = 1\n"
            f"shutdown_timeout_seconds = 5\n{tables}\n[ui]\n{ui}\n"
            f'[[watch]]\npath = "watch"\nsettle_seconds = {settle}\n{watch}\n'
        )

    def command(
        self, *args: str, env: dict[str, str] | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tlwatch", *args, "-c", str(self.config)],
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
            env=env or clean_env(),
        )

    def start(self, *extra: str, env: dict[str, str] | None = None) -> None:
        """Start `tlwatch run`; return once this run says it is watching."""
        before = len(self.log())
        log = self.log_path.open("ab")
        process = self.process = subprocess.Popen(
            [sys.executable, "-m", "tlwatch", "run", "-c", str(self.config), *extra],
            stdout=log,
            stderr=log,
            env=env or clean_env(),
        )
        log.close()
        wait_for(lambda: "watching" in self.log()[before:] or process.poll() is not None)
        assert process.poll() is None, self.log()

    def stop(self, signum: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(signum)
        code = self.process.wait(timeout=30)
        self.process = None
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def rows(self) -> list[Any]:
        if not self.store_path.exists():
            return []
        from tlwatch.state import Store

        with Store(self.store_path, exclusive=False) as store:
            return store.all()

    def states(self) -> dict[bytes, str]:
        return {os.path.basename(row.path): row.state.value for row in self.rows()}

    def wait_states(self, expected: dict[str, str], timeout: float = 30.0) -> None:
        want = {os.fsencode(name): state for name, state in expected.items()}

        def reached() -> bool:
            got = self.states()
            return all(got.get(name) == state for name, state in want.items())

        try:
            wait_for(reached, timeout=timeout)
        except AssertionError:
            raise AssertionError(f"states {self.states()} != {want}\n{self.log()}") from None

    def assets_by_sha(self) -> Counter[str]:
        return Counter(str(a["sha256"]) for a in self.sandbox.assets())


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWELVELABS", "TLWATCH"))}
    env.pop("NOTIFY_SOCKET", None)
    env.pop("JOURNAL_STREAM", None)
    return {**env, **extra}


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def daemon(tmp_path: Path, sandbox: Sandbox) -> Iterator[Daemon]:
    runner = Daemon(tmp_path, sandbox)
    runner.watch.mkdir()
    (tmp_path / "api_key").write_text(DEMO_API_KEY + "\n")
    runner.configure()
    yield runner
    if runner.process is not None and runner.process.poll() is None:
        runner.process.kill()
        runner.process.wait()


def make_config(
    tmp_path: Path, base_url: str, *, api: dict[str, Any] | None = None, **watch: object
) -> Any:
    """A Config for in-process tests: the store in tmp_path/s.db, one watched folder tmp_path/w."""
    from tlwatch.config import parse

    return parse(
        {
            "api": {"base_url": base_url, "timeout_seconds": 5, **(api or {})},
            "state": {"path": "s.db"},
            "daemon": {"retry_base_seconds": 0.05, "retry_max_seconds": 1},
            "watch": [{"path": "w", **watch}],
        },
        source=tmp_path / "c.toml",
    )


# ---- real mounts (CI runs as root; elsewhere these tests skip and say why) ----------------
def mount_tmpfs(path: Path, size: str = "8m") -> None:
    """Mount a fresh tmpfs at `path` (a card put in); skip the test where that is refused."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            check=True,
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError) as error:
        said = getattr(error, "stderr", "") or str(error)
        pytest.skip(f"cannot mount a tmpfs here (needs root): {said.strip()}")


def unmount(path: Path) -> None:
    """Unmount everything at `path` (lazily: a file still open elsewhere is no obstacle)."""
    while os.path.ismount(path):
        subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    """Mount points to clean up: whatever a test mounted is unmounted, whatever happens."""
    points: list[Path] = []
    try:
        yield points
    finally:
        for point in points:
            unmount(point)


def answers(base: str) -> bool:
    """Does a daemon's status page answer at `base`?"""
    import httpx

    try:
        return httpx.get(base + "/api/v1/status", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def systemd_exposure(unit: Path) -> float:
    """`systemd-analyze verify` accepts the unit with nothing said; its exposure level."""
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert verified.returncode == 0 and verified.stderr == "", verified.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    line = next(x for x in security.stdout.splitlines() if "Overall exposure level" in x)
    return float(line.split(":")[1].split()[0])

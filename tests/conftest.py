"""Shared fixtures: a real sandbox on 127.0.0.1, a client for it, and a thread-leak guard."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tlwatch.api import Client
from tlwatch.sandbox import DEMO_API_KEY, SandboxServer, Settings, make_server

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

    def requests(self) -> dict[str, dict[str, int]]:
        return dict(self.admin("GET", "/_sandbox/requests"))

    def fault(self, **fields: Any) -> None:
        self.admin("POST", "/_sandbox/faults", fields)

    def settings(self, **changes: Any) -> None:
        self.admin("PATCH", "/_sandbox/settings", changes)


@pytest.fixture
def sandbox_settings() -> Settings:
    return Settings(processing_seconds=0.2, chunk_size=64 * 1024, initial_urls=3)


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


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test ends every thread it started (the sandbox's request threads included)."""
    before = set(threading.enumerate())
    yield

    def settled() -> bool:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        return not [t for t in extra if not t.daemon or t.name == "sandbox"]

    wait_for(settled, timeout=5)

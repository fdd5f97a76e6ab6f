"""Notifications with the daemon: delivered through Apprise to a loopback receiver, heartbeats
that say health, and a dead endpoint that never slows uploads."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tlwatch.sandbox import DEMO_API_KEY, Settings

from conftest import FIXTURES, Daemon, wait_for


class Receiver:
    """A loopback HTTP receiver: keeps every request's path and JSON body."""

    def __init__(self) -> None:
        received = self.received = []  # type: list[tuple[str, str, Any]]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                received.append(("POST", self.path, json.loads(body or b"null")))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                received.append(("GET", self.path, None))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="receiver")
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


@pytest.fixture
def sandbox_settings() -> Settings:
    return Settings(processing_seconds=0.2, fail_names=["broken"], chunk_size=64 * 1024)


def test_failures_reach_the_receiver_and_heartbeats_say_health(
    daemon: Daemon, receiver: Receiver
) -> None:
    daemon.config.write_text(
        daemon.config.read_text()
        + f'[notify]\nurls = ["json://127.0.0.1:{receiver.port}/hook"]\n'
        + f'heartbeat_url = "http://127.0.0.1:{receiver.port}/ping"\nheartbeat_seconds = 1\n'
    )
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "broken.mp4")
    daemon.start()
    wait_for(lambda: any(m == "GET" and p == "/ping" for m, p, _ in receiver.received))
    posts = wait_for(lambda: [b for m, _, b in receiver.received if m == "POST"], timeout=20)
    assert posts[0]["title"] == "tlwatch: a file failed"
    assert "'broken.mp4'" in posts[0]["message"] and "asset: " in posts[0]["message"]
    daemon.watch.rename(daemon.root / "elsewhere")  # unhealthy: a folder offline
    wait_for(lambda: any(p == "/ping/fail" for _, p, _ in receiver.received), timeout=20)
    assert daemon.stop() == 0
    assert not any(DEMO_API_KEY in json.dumps(b) for _, _, b in receiver.received)


def test_a_dead_endpoint_never_stops_uploads(daemon: Daemon, tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]  # nothing listens there once closed
    daemon.config.write_text(
        daemon.config.read_text() + f'[notify]\nurls = ["json://127.0.0.1:{dead}/hook"]\n'
    )
    for name in ("broken.mp4", "broken-too.mp4"):
        (daemon.watch / name).write_bytes((FIXTURES / "clip.mp4").read_bytes() + name.encode())
    daemon.start()
    shutil.copy(FIXTURES / "tone.wav", daemon.watch / "fine.wav")
    daemon.wait_states({"broken.mp4": "failed", "broken-too.mp4": "failed", "fine.wav": "ready"})
    wait_for(lambda: "cannot deliver a notification" in daemon.log(), timeout=20)
    assert daemon.stop() == 0
    assert daemon.log().count("cannot deliver a notification") == 1  # then quiet

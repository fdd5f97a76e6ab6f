"""Notifications through Apprise to a loopback receiver, bursts summarised, heartbeats, and a
dead endpoint that never slows uploads."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tlwatch.events import FolderChanged, Paused, StateChanged
from tlwatch.notify import Burst, Note, note_for
from tlwatch.sandbox import Settings


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


def test_notes_say_the_file_the_asset_and_the_reason() -> None:
    failed = note_for(
        StateChanged(b"/w", "uploaded", "failed", "processing failed: bad", b"a\nb.mp4", "as1")
    )
    assert failed == Note(
        "failed",
        "tlwatch: a file failed",
        "'a\\nb.mp4'\nasset: as1\nreason: processing failed: bad",
    )
    assert note_for(StateChanged(b"/w", "queued", "uploading", None, b"x")) is None
    assert note_for(Paused("key", True, "API key rejected")) == Note(
        "paused", "tlwatch: paused", "API key rejected"
    )
    back = note_for(FolderChanged(b"/media/card", True))
    assert back is not None and back.event == "online"


def test_twenty_failures_in_a_minute_make_at_most_three_notifications() -> None:
    now = [0.0]
    burst = Burst(clock=lambda: now[0])
    sent = []
    for number in range(20):
        now[0] = number * 2.0  # over 40 s
        note = burst.offer(Note("failed", "tlwatch: a file failed", f"f{number}.mp4"))
        if note is not None:
            sent.append(note)
        summary = burst.summary()
        if summary is not None:
            sent.append(summary)
    now[0] = 59.0
    assert burst.summary() is None  # three this minute already
    now[0] = 61.0
    summary = burst.summary()
    assert summary is not None
    sent.append(summary)
    in_first_minute = [n for n in sent if n is not summary]
    assert len(in_first_minute) == 3
    assert summary.title == "tlwatch: 17 more events"  # nothing lost: 3 + 17 = 20
    assert summary.body.startswith("17 failed")

"""Notifications and heartbeats: the only module that imports apprise.

It listens to the event hub and delivers on its own thread, so a slow or dead endpoint never slows
or stops uploads: one warning when delivery fails, then quiet until it works again. Bursts are
summarised: at most `PER_MINUTE` notifications a minute, the last of them a summary of the rest.
A heartbeat GETs `heartbeat_url` every `heartbeat_seconds` while the daemon is healthy, and
`heartbeat_url/fail` while it is not (healthchecks.io and Uptime Kuma push monitors).
Bodies name the file (escaped), the asset id and the reason; never a key or a presigned URL.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from tlwatch.config import Config
from tlwatch.events import Event, FolderChanged, Paused, StateChanged, Stuck
from tlwatch.health import HealthRecord
from tlwatch.logs import redact
from tlwatch.models import shown

log = logging.getLogger(__name__)
logging.getLogger("apprise").setLevel(logging.CRITICAL)  # its lines can carry a URL's secrets

PER_MINUTE = 3
WINDOW = 60.0


@dataclass(frozen=True)
class Note:
    """One notification: which event (the config's name for it), a title and a body."""

    event: str
    title: str
    body: str


_STOP = Note("stop", "", "")  # tells the delivery thread to end


def note_for(event: Event) -> Note | None:
    """Given what happened, return the notification it makes, if any. Pure."""
    if isinstance(event, StateChanged) and event.new in ("failed", "skipped"):
        asset = f"\nasset: {event.asset_id}" if event.asset_id else ""
        body = f"{shown(event.name)}{asset}\nreason: {event.reason or 'none given'}"
        return Note(event.new, f"tlwatch: a file {event.new}", body)
    if isinstance(event, StateChanged) and event.new == "fitting":
        body = f"{shown(event.name)}\nwhy: {event.reason or 'none given'}"
        return Note("fitted", "tlwatch: a proxy goes up instead of a file", body)
    if isinstance(event, Paused):
        if event.on:
            return Note("paused", "tlwatch: paused", event.reason or event.cause)
        return Note("resumed", "tlwatch: resumed", f"{event.cause}: work goes on")
    if isinstance(event, FolderChanged):
        if event.online:
            return Note("online", "tlwatch: a folder is back", shown(event.path))
        body = f"{shown(event.path)} ({event.reason or 'offline'})"
        return Note("offline", "tlwatch: a folder went offline", body)
    if isinstance(event, Stuck) and event.threads:
        return Note("stuck", "tlwatch: a thread is stuck", ", ".join(event.threads))
    return None


class Burst:
    """At most `PER_MINUTE` notifications in any minute: past the first ones, the rest of the
    minute's notes wait and go out as one summary. Pure, on an injected clock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._sent: list[float] = []
        self._held: list[Note] = []

    def offer(self, note: Note) -> Note | None:
        """A note to send now, or None (held for the summary)."""
        now = self.clock()
        self._sent = [t for t in self._sent if now - t < WINDOW]
        if len(self._sent) < PER_MINUTE - 1 and not self._held:
            self._sent.append(now)
            return note
        self._held.append(note)
        return None

    def summary(self) -> Note | None:
        """Once the minute has room again, the held notes as one (None: nothing due)."""
        now = self.clock()
        self._sent = [t for t in self._sent if now - t < WINDOW]
        if not self._held or len(self._sent) >= PER_MINUTE:
            return None
        held, self._held = self._held, []
        self._sent.append(now)
        if len(held) == 1:
            return held[0]
        kinds = Counter(n.event for n in held)
        title = f"tlwatch: {len(held)} more events"
        said = ", ".join(f"{count} {kind}" for kind, count in kinds.most_common())
        lines = [f"- {n.title.removeprefix('tlwatch: ')}: {n.body.splitlines()[0]}" for n in held]
        return Note("summary", title, "\n".join([said, *lines[:20]]))

    def due_in(self) -> float | None:
        """Seconds until a summary may go out (None: none is waiting)."""
        if not self._held:
            return None
        if len(self._sent) < PER_MINUTE:
            return 0.0
        return max(self._sent[0] + WINDOW - self.clock(), 0.0)


class Notifications:
    """Delivers notes and heartbeats on its own thread."""

    def __init__(
        self,
        config: Callable[[], Config],
        health: HealthRecord,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config, self.health, self.clock = config, health, clock
        self.burst = Burst(clock)
        self._inbox: queue.Queue[Note] = queue.Queue()
        self._failing: set[str] = set()  # what fails now: delivery, the heartbeat
        self._next_beat = 0.0
        self._thread: threading.Thread | None = None

    def hear(self, event: Event) -> None:
        note = note_for(event)
        if note is not None and note.event in self.config().notify.events:
            self._inbox.put(note)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._inbox.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _run(self) -> None:
        while True:
            wait = min(x for x in (self.burst.due_in(), self._beat_in(), 30.0) if x is not None)
            try:
                note: Note | None = self._inbox.get(timeout=max(wait, 0.01))
            except queue.Empty:
                note = None  # time for a summary or a heartbeat
            if note is _STOP:
                return
            try:
                if note is not None and (now := self.burst.offer(note)) is not None:
                    self._deliver(now)
                summary = self.burst.summary()
                if summary is not None:
                    self._deliver(summary)
                self._heartbeat()
            except Exception as error:  # noqa: BLE001 - delivery must never end this thread
                log.warning("notifications: %s", error)

    def _deliver(self, note: Note) -> None:
        urls = self.config().notify.urls
        if not urls:
            return
        import apprise  # noqa: PLC0415 - imported when a note is sent: start-up stays light

        sender = apprise.Apprise()
        for url in urls:
            sender.add(url)
        done = bool(sender.notify(body=redact(note.body), title=redact(note.title)))
        self._said(done, "delivery", f"cannot deliver a notification ({note.title!r})")

    def _beat_in(self) -> float | None:
        if self.config().notify.heartbeat_url is None:
            return None
        return max(self._next_beat - self.clock(), 0.0)

    def _heartbeat(self) -> None:
        url = self.config().notify.heartbeat_url
        if url is None or self.clock() < self._next_beat:
            return
        self._next_beat = self.clock() + self.config().notify.heartbeat_seconds
        target = url if self.health.healthy() else url.rstrip("/") + "/fail"
        try:
            with urllib.request.urlopen(target, timeout=10) as answer:  # noqa: S310 - the user's URL
                answer.read(1024)
            done = True
        except OSError:
            done = False
        self._said(done, "heartbeat", "cannot reach the heartbeat URL")

    def _said(self, done: bool, what: str, problem: str) -> None:
        """One warning when `what` (delivery, the heartbeat) starts failing, one line when it
        works again; each is followed on its own."""
        if not done and what not in self._failing:
            log.warning("notifications: %s; quiet until it works again", problem)
            self._failing.add(what)
        elif done and what in self._failing:
            log.info("notifications: %s works again", what)
            self._failing.discard(what)

"""The composition root: builds the parts, owns the threads, signals and the shutdown order.

Threads: the main thread (signals, rescans, the paused-key check, ticks), the watchdog observers
(enqueue only), one intake thread (settle, sniff, hash, record), N upload workers and one poller.
Everyone waits on an event, a condition or a queue: nothing sleeps in a loop.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from tlwatch import logs
from tlwatch.api import Asset, Client
from tlwatch.config import Config, api_key_source, load, read_api_key
from tlwatch.errors import ApiError, ConfigError
from tlwatch.intake import Intake
from tlwatch.models import FileState, regular_signature
from tlwatch.poller import Poller
from tlwatch.retry import Backoff
from tlwatch.scan import NETWORK_FILESYSTEMS, filesystem_type, walk
from tlwatch.sdnotify import Notifier
from tlwatch.settle import Settler
from tlwatch.state import Store
from tlwatch.uploader import SHA_KEY, Hooks, Uploader
from tlwatch.watcher import Folder, Watcher

log = logging.getLogger(__name__)

SCAN = b""  # the inbox item that asks for a full rescan
WAKE = b"\0"  # the inbox item that only wakes the intake thread (to stop)
EXIT_FAILURE = 1
KEY_RECHECK_SECONDS = 60.0
SNAPSHOT_SECONDS = 10.0  # how often an idle daemon counts its files (for STATUS=)
BEAT_SECONDS = 30.0  # the longest an idle thread sleeps between signs of life


class Heartbeats:
    """Each thread's last sign of progress (a loop turn, bytes sent), for the watchdog."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}

    def beat(self) -> None:
        self._last[threading.current_thread().name] = self._clock()

    def stalled(self, limit: Callable[[str], float]) -> list[str]:
        """The threads silent for longer than `limit(name)` seconds."""
        now = self._clock()
        return sorted(name for name, last in list(self._last.items()) if now - last > limit(name))


@dataclass(frozen=True)
class Snapshot:
    """What the daemon is doing, for a progress line or systemd's STATUS=."""

    counts: dict[str, int]
    settling: int
    paused: str | None

    def line(self) -> str:
        order = (
            "queued",
            "uploading",
            "uploaded",
            "ready",
            "duplicate",
            "ignored",
            "skipped",
            "failed",
        )
        parts = [
            f"{self.counts[s]} {'processing' if s == 'uploaded' else s}"
            for s in order
            if self.counts.get(s)
        ]
        if self.settling:
            parts.insert(0, f"{self.settling} settling")
        text = ", ".join(parts) or "nothing to do"
        return f"paused: {self.paused}; {text}" if self.paused else text


class Runner:
    def __init__(
        self,
        config: Config,
        *,
        once: bool = False,
        wait_ready: bool = False,
        on_tick: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self._config = config
        self.once, self.wait_ready, self.on_tick = once, wait_ready, on_tick
        self.stop = threading.Event()  # stop taking new work
        self.cancel = threading.Event()  # abandon uploads in flight
        self.paused: str | None = None
        self.inbox: queue.Queue[bytes] = queue.Queue()
        self.work = threading.Condition()
        self.poll_wake = threading.Event()
        self.settling = 0
        self._signals = 0
        self._reload_asked = False
        self._last_probe = 0.0
        self._threads: list[threading.Thread] = []
        self.notifier = Notifier()
        self.beats = Heartbeats()
        self._next_ping = 0.0
        self.hold_until = 0.0  # epoch seconds: rate limited, start no upload before
        self.exit_code = 0
        self._missing: set[Path] = set()
        self._stuck: list[str] = []

    def config(self) -> Config:
        return self._config

    # ---- start-up --------------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped (or, with `once`, until everything pending is done); return the
        exit code (1 when a one-pass scan had to stop because the key was rejected)."""
        store = Store(self._config.state.path)
        try:
            key = read_api_key(self._config)
            logs.add_secret(key)
            daemon = self._config.daemon
            backoff = Backoff(daemon.retry_base_seconds, min(daemon.retry_max_seconds, 30.0), 120.0)
            with Client(
                key,
                base_url=self._config.api.base_url,
                timeout=self._config.api.timeout_seconds,
                sleep=self._wait_alive,
                cancel=self.cancel,
                progress=self.beats.beat,
                backoff=backoff,
            ) as client:
                self._serve(store, client, key)
        finally:
            store.close()
        return self.exit_code

    def _serve(self, store: Store, client: Client, key: str) -> None:
        self._install_signals()
        self._recover(store)
        remote = self._remote_assets(client) if store.rebuilt else {}
        intake = Intake(
            store,
            self.config,
            queued=self._notify_workers,
            adopted=self.poll_wake.set,
            progress=self.beats.beat,
            remote=remote,
        )
        hooks = Hooks(
            key_rejected=self._key_rejected,
            uploaded=self.poll_wake.set,
            changed=self.inbox.put,
            hold=self._hold,
        )
        uploader = Uploader(store, client, self.config, hooks)
        poller = Poller(
            store, client, self.config, key_rejected=self._key_rejected, progress=self.beats.beat
        )
        poll_seconds = self._config.daemon.poll_interval_seconds
        watcher = Watcher(self.inbox.put, self._trouble, poll_seconds=poll_seconds)
        self._start("intake", lambda: self._intake_loop(store, intake))
        for number in range(self._config.api.max_concurrent_uploads):
            self._start(f"upload-{number + 1}", lambda: self._upload_loop(store, uploader))
        self._start("poller", lambda: self._poll_loop(poller))
        if not self.once:
            watcher.watch(self._folders())
            log.info("watching %d folder(s); state in %s", len(self._config.watch), store.path)
        self.inbox.put(SCAN)
        self.notifier.ready(self.snapshot(store).line())
        try:
            self._main_loop(store, client, key, watcher)
        finally:
            self._shutdown(watcher, client)

    def _recover(self, store: Store) -> None:
        """Uploads cut off by a crash go back to the queue. Not at once: a request we sent may
        still be finishing on the server, so its look-up waits out the request timeout."""
        grace = self._config.api.timeout_seconds
        for row in store.in_state(FileState.UPLOADING):
            store.move(
                row.id,
                FileState.QUEUED,
                "interrupted; will look for it on the server before sending it again",
                attempts=max(row.attempts - 1, 0),
                next_attempt_at=max(time.time(), row.updated_at + grace),
            )

    def _remote_assets(self, client: Client) -> dict[str, Asset]:
        """When the store was rebuilt: the server's assets by content hash, to adopt them."""
        try:
            assets = {
                str(a.user_metadata[SHA_KEY]): a
                for a in client.list_assets()
                if a.user_metadata
                and a.user_metadata.get(SHA_KEY)
                and (a.method != "multipart" or a.status == "ready")  # not an orphaned session
            }
        except ApiError as error:
            log.warning("cannot list the server's assets to rebuild the store: %s", error)
            return {}
        log.info(
            "rebuilding the store: %d asset(s) on the server were sent by tlwatch", len(assets)
        )
        return assets

    def _folders(self) -> list[Folder]:
        """The folders to watch now; a missing one is named once until it appears."""
        folders = []
        for watch in self._config.watch:
            if not watch.path.is_dir():
                if watch.path not in self._missing:
                    log.warning("%s: not a folder (yet); watched once it appears", watch.path)
                self._missing.add(watch.path)
                continue
            self._missing.discard(watch.path)
            poll = watch.poll
            if poll is None:
                poll = filesystem_type(watch.path) in NETWORK_FILESYSTEMS
            folders.append(Folder(watch.path, watch.recursive, poll))
        return folders

    def _start(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # ---- signals ---------------------------------------------------------------------------
    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_reload_signal)

    def _on_reload_signal(self, signum: int, frame: FrameType | None) -> None:
        self._reload_asked = True

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1 and signum == signal.SIGINT:
            os.write(2, b"tlwatch: second interrupt: stopping now\n")
            os._exit(130)
        self.stop.set()

    # ---- the main thread -------------------------------------------------------------------
    def _main_loop(self, store: Store, client: Client, key: str, watcher: Watcher) -> None:
        interval = self._config.daemon.rescan_interval_seconds
        next_scan = time.monotonic() + interval * random.uniform(0.9, 1.1)
        next_key_check = 0.0
        next_snapshot = 0.0
        tick = 0.5 if self.once else 1.0
        if self.notifier.watchdog_seconds:
            tick = min(tick, self.notifier.watchdog_seconds / 4)
        while not self.stop.wait(tick):
            now = time.monotonic()
            self._watchdog(now)
            if now >= next_scan:
                next_scan = now + interval * random.uniform(0.9, 1.1)
                self.inbox.put(SCAN)
            if not self.once and any(path.is_dir() for path in self._missing):
                log.info("a watched folder appeared: watching and scanning it")
                watcher.watch(self._folders())  # a card mounted, a share connected
                self.inbox.put(SCAN)
            if not self.once and not watcher.healthy():
                self._trouble("a watcher thread stopped")
                watcher.restart()
            if self.paused and self.once:
                log.error("stopping the scan: the API key is rejected (nothing was marked failed)")
                self.exit_code = EXIT_FAILURE
                return
            if self.paused and now >= next_key_check:
                next_key_check = now + 1.0
                key = self._check_key(client, key)
            if self.once or self.on_tick or now >= next_snapshot:  # idle is idle: not every tick
                next_snapshot = now + SNAPSHOT_SECONDS
                snapshot = self.snapshot(store)
                self.notifier.status(snapshot.line())
                if self.on_tick:
                    self.on_tick(snapshot)
                if self.once and self._finished(snapshot):
                    return
            if self._reload_asked:
                self._reload_asked = False
                self.notifier.reloading()
                self._reload(watcher)
                self.notifier.ready(self.snapshot(store).line())

    def _finished(self, snapshot: Snapshot) -> bool:
        busy = ("queued", "uploading", "uploaded") if self.wait_ready else ("queued", "uploading")
        idle_intake = self.inbox.unfinished_tasks == 0 and self.settling == 0
        return idle_intake and not any(snapshot.counts.get(s) for s in busy)

    def snapshot(self, store: Store) -> Snapshot:
        counts: Counter[str] = Counter()
        for (_, state), number in store.counts().items():
            counts[state] += number
        return Snapshot(dict(counts), self.settling, self.paused)

    def _trouble(self, what: str) -> None:
        log.warning("%s: rescanning every watched folder", what)
        self.inbox.put(SCAN)

    def _watchdog(self, now: float) -> None:
        """Ping systemd's watchdog at half its interval, while every thread is alive and making
        progress. A stuck thread stops the pings, so systemd restarts the daemon."""
        interval = self.notifier.watchdog_seconds
        if interval is None or now < self._next_ping:
            return
        timeout = self._config.api.timeout_seconds
        stuck = [t.name for t in self._threads if not t.is_alive()]
        stuck += self.beats.stalled(lambda name: 2 * timeout + (10 if "upload" in name else 40))
        if stuck:
            if stuck != self._stuck:
                log.error(
                    "no progress from %s: no more watchdog pings (systemd restarts us)",
                    ", ".join(stuck),
                )
                self.notifier.status(f"stuck: {', '.join(stuck)}")
            self._stuck = stuck
            return
        self.notifier.watchdog()
        self._next_ping = now + interval / 2

    def _wait_alive(self, seconds: float) -> bool:
        """The client's retry sleep: stop-aware, beating every few seconds. True: stopping."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.beats.beat()
            if self.stop.wait(min(left, 5.0)):
                return True
        return False

    def _hold(self, until: float) -> None:
        """Rate limited: no upload starts before `until` (epoch seconds), in any worker."""
        if until > self.hold_until:
            if self.hold_until < time.time():
                log.warning(
                    "rate limited by the API: no new upload for %.0f s", until - time.time()
                )
            self.hold_until = until

    def _key_rejected(self) -> None:
        if self.paused is None:
            self.paused = "API key rejected"
            self.notifier.status("paused: API key rejected")
            log.error(
                "the API key was rejected (HTTP 401): every upload is paused until the key "
                "(from %s) is fixed; nothing is marked failed",
                api_key_source(self._config),
            )

    def _check_key(self, client: Client, key: str) -> str:
        """While paused: pick up a changed key, and try it (or the old one, now and then)."""
        try:
            fresh = read_api_key(self._config)
        except ConfigError:
            return key
        if fresh == key and time.monotonic() - self._last_probe < KEY_RECHECK_SECONDS:
            return key
        self._last_probe = time.monotonic()
        logs.add_secret(fresh)
        client.set_api_key(fresh)
        try:
            next(iter(client.list_assets(page_limit=1)), None)
        except ApiError as error:
            log.debug("the API key is still refused: %s", error)
            return fresh
        self.paused = None
        log.info("the API key is accepted again: uploads resume")
        self._notify_workers()
        self.poll_wake.set()
        return fresh

    def _reload(self, watcher: Watcher) -> None:
        source = self._config.source
        if source is None:
            return
        try:
            fresh = load(source)
        except ConfigError as error:
            log.error("the new configuration is invalid; keeping the old one:\n%s", error)
            return
        old, self._config = self._config, fresh
        later = [
            name
            for name, before, after in (
                ("[api] base_url", old.api.base_url, fresh.api.base_url),
                ("[api] timeout_seconds", old.api.timeout_seconds, fresh.api.timeout_seconds),
                (
                    "[api] max_concurrent_uploads",
                    old.api.max_concurrent_uploads,
                    fresh.api.max_concurrent_uploads,
                ),
                ("[state] path", old.state.path, fresh.state.path),
            )
            if before != after
        ]
        if later:
            log.warning("%s changed: that takes effect at the next restart", ", ".join(later))
        watcher.watch(self._folders())
        log.info("configuration reloaded: watching %d folder(s)", len(fresh.watch))
        self.inbox.put(SCAN)

    # ---- the intake thread -----------------------------------------------------------------
    def _intake_loop(self, store: Store, intake: Intake) -> None:
        settler = Settler(regular_signature, time.monotonic)
        while not self.stop.is_set():
            due = settler.next_due()
            timeout = BEAT_SECONDS if due is None else min(max(due - time.monotonic(), 0), 30.0)
            try:
                item = self.inbox.get(timeout=timeout)
            except queue.Empty:
                item = None
            try:
                if item is not None:
                    self._take_item(item, store, intake, settler)
                for path, signature in settler.ripe():
                    intake.take(path, signature)
            except Exception:
                log.exception("intake failed; carrying on (a rescan will look again)")
            finally:
                if item is not None:
                    self.inbox.task_done()
            self.settling = len(settler)
            self.beats.beat()

    def _take_item(self, item: bytes, store: Store, intake: Intake, settler: Settler) -> None:
        if self.stop.is_set() or item == WAKE:
            return
        if item == SCAN:
            self._scan(store, settler)
        elif intake.wanted(item):
            watch = self._config.watch_for(item)
            settler.add(item, watch.settle_seconds if watch else 0.0)

    def _scan(self, store: Store, settler: Settler) -> None:
        started = time.monotonic()
        roots = [os.fsencode(w.path) for w in self._config.watch]
        seen = changed = 0
        for watch in self._config.watch:
            known = store.known(os.fsencode(watch.path))
            for path in walk(watch, roots):
                seen += 1
                if seen % 1000 == 0:
                    self.beats.beat()  # a big tree on a slow share is work, not a hang
                if known.get(path) != regular_signature(path):
                    changed += 1
                    settler.add(path, watch.settle_seconds)
            if self.stop.is_set():
                return
        self.settling = len(settler)
        log.info(
            "scanned %d file(s) in %.1f s: %d new or changed",
            seen,
            time.monotonic() - started,
            changed,
        )

    # ---- upload workers and the poller -----------------------------------------------------
    def _notify_workers(self) -> None:
        with self.work:
            self.work.notify_all()

    def _upload_loop(self, store: Store, uploader: Uploader) -> None:
        while not self.stop.is_set():
            self.beats.beat()
            held = self.hold_until - time.time()
            row = None if self.paused or held > 0 else store.claim_next()
            if row is not None and os.environ.get("TLWATCH_TEST_STALL_UPLOADS"):
                threading.Event().wait()  # test hook: a worker that hangs, for the watchdog test
            if row is not None:
                try:
                    uploader.upload(row)
                except Exception:
                    if not self.cancel.is_set():  # else: cut off by shutdown, as asked
                        log.exception("%s: unexpected error while uploading", row.shown)
                    reason = (
                        "interrupted by shutdown" if self.cancel.is_set() else "unexpected error"
                    )
                    later = time.time() + self._config.api.timeout_seconds
                    store.move(row.id, FileState.QUEUED, reason, next_attempt_at=later)
                continue
            due = store.next_due()
            wait = 5.0 if due is None or self.paused else min(max(due - time.time(), 0.05), 5.0)
            wait = min(max(held, 0.05), 5.0) if held > 0 else wait
            with self.work:
                self.work.wait(wait)

    def _poll_loop(self, poller: Poller) -> None:
        while not self.stop.is_set():
            self.beats.beat()
            due = None if self.paused else poller.poll()
            wait = BEAT_SECONDS if due is None else min(max(due - time.time(), 0.05), BEAT_SECONDS)
            self.poll_wake.wait(wait)  # woken at once by each upload
            self.poll_wake.clear()

    # ---- shutdown --------------------------------------------------------------------------
    def _shutdown(self, watcher: Watcher, client: Client) -> None:
        self.notifier.stopping()
        log.info("stopping: no longer watching folders")
        self.stop.set()
        watcher.close()
        self.inbox.put(WAKE)
        self._notify_workers()
        self.poll_wake.set()
        deadline = time.monotonic() + self._config.daemon.shutdown_timeout_seconds
        for thread in self._threads:
            thread.join(timeout=max(deadline - time.monotonic(), 0.0))
        if any(t.is_alive() for t in self._threads):
            log.info("stopping: abandoning uploads still in flight; they go back to the queue")
            self.cancel.set()
            client.abort()
            for thread in self._threads:
                thread.join(timeout=10.0)
        log.info("stopped")

"""The composition root: builds the parts, starts their threads, runs the main thread's ticks and
stops everything in order.

Threads: the main thread (signals, rescans, folders, the key check, status, the watchdog), the
watchdog observers (enqueue only), one intake thread, N + 1 upload workers (at most N sending) and
one poller. Each worker's loop lives beside its work (`IntakeWorker.turn`, `Uploader.turn`,
`Poller.turn`) and runs under `control.run_loop`'s guard; they share one `RunState`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from tlwatch import logs
from tlwatch.api import Client
from tlwatch.chores import Chores
from tlwatch.config import Config, load, read_api_key, restart_needed
from tlwatch.control import RunState, run_loop
from tlwatch.errors import ConfigError, StoreError
from tlwatch.events import Answered, Hub
from tlwatch.fitter import Fitter
from tlwatch.fleet import Fleet, open_store
from tlwatch.folders import Folders
from tlwatch.health import HealthRecord, Watchdog, record_path
from tlwatch.indexer import Indexer
from tlwatch.intake import Intake, IntakeWorker, Stopped
from tlwatch.keycheck import KeyCheck
from tlwatch.limits import Bandwidth, Concurrency, Pacer
from tlwatch.metrics import Metrics
from tlwatch.models import FileState
from tlwatch.notify import Notifications
from tlwatch.pausing import UserPause
from tlwatch.poller import Poller
from tlwatch.report import row_json, status
from tlwatch.sdnotify import Notifier
from tlwatch.state import Store
from tlwatch.storecheck import StoreCheck
from tlwatch.ticks import Pass, Ticks
from tlwatch.transfers import Transfers
from tlwatch.uploader import SPARE_WORKERS, BudgetRelease, Uploader, budget_used
from tlwatch.watcher import Watcher
from tlwatch.web import Daemon as WebDaemon
from tlwatch.web import Web, ensure_token

log = logging.getLogger(__name__)

DAEMON = Pass()  # run until stopped
QUIET_LIMIT = 40.0  # beyond twice the request timeout, how long a thread may be silent
UPLOAD_LIMIT = 10.0  # the same, for upload workers (they beat as bytes go out)


class Runner:
    def __init__(
        self,
        config: Config,
        *,
        mode: Pass = DAEMON,
        notifier: Notifier | None = None,
        uploader: type[Uploader] = Uploader,
    ) -> None:
        self._config = config
        self.mode = mode
        self.hub = Hub()  # what happened, once: the metrics and the health record listen
        self.run_state = RunState(publish=self.hub.publish)
        self.pacer = Pacer()  # the server's rate-limit windows, per family
        self.bandwidth = Bandwidth(None)  # [api] max_upload_rate, shared by every worker
        self.transfers = Transfers()  # bytes sent of each upload in flight
        self.notifier = notifier or Notifier()
        self._uploader = uploader  # a seam: tests pass one that stalls
        self._threads: list[threading.Thread] = []
        self._signals = 0
        self._reload_asked = False
        self.exit_code = 0

    def config(self) -> Config:
        return self._config

    def run(self) -> int:
        """Run until stopped (or, in a one-pass mode, until everything pending is done); return the
        exit code (1 when a one-pass scan had to stop because the key was rejected)."""
        with contextlib.ExitStack() as parts:  # closed in the reverse order they were built
            store = parts.enter_context(open_store(self._config, publish=self.hub.publish))
            if store.database.fleet:  # the account's windows and uplink, shared by every host
                self.pacer.shared = self.bandwidth.shared = store
            key = read_api_key(self._config)
            logs.add_secret(key)
            self.bandwidth.set(
                self._config.api.max_upload_rate, self._config.api.max_upload_rate_fleet
            )
            client = Client(
                key,
                base_url=self._config.api.base_url,
                timeout=self._config.api.timeout_seconds,
                sleep=self.run_state.sleep,
                cancel=self.run_state.cancel,
                progress=self.run_state.beats.beat,
                on_sent=self.transfers.sent,
                backoff=self._config.daemon.request_backoff,
                on_answer=lambda endpoint, code: self.hub.publish(Answered(endpoint, code)),
                pacer=self.pacer,
                bandwidth=self.bandwidth,
            )
            self._serve(store, parts.enter_context(client), key, parts)
        return self.exit_code

    def _hashing(self) -> None:
        """A piece of a file hashed: a sign of life on the intake's behalf; give up when
        stopping (a 10 GB hash must not outlast systemd's stop timeout)."""
        self.run_state.beats.beat("intake")
        if self.run_state.stop.is_set():
            raise Stopped

    def _serve(self, store: Store, client: Client, key: str, parts: contextlib.ExitStack) -> None:
        run = self.run_state
        self._install_signals()
        store.recover(grace=self._config.api.timeout_seconds)
        fleet = Fleet(store, self.config, run)
        intake = IntakeWorker(
            Intake(
                store,
                self.config,
                queued=run.wake_workers,
                adopted=run.wake_poller,
                changed=run.wake_chores,
                progress=self._hashing,
            ),
            run,
            scans=fleet.scans,
        )
        parts.callback(intake.close)
        folders = Folders(self.config, scans=fleet.scans)
        concurrency = Concurrency(self._config.api.max_concurrent_uploads)
        uploader = self._uploader(
            store,
            client,
            self.config,
            run,
            offline=folders.gone_now,
            concurrency=concurrency,
            transfers=self.transfers,
        )
        poller = Poller(store, client, self.config, run)
        indexer = Indexer(store, client, self.config, run)
        chores = Chores(store, client, self.config, run, offline=folders.gone_now)
        fitter = Fitter(store, self.config, run)
        poll_seconds = self._config.daemon.poll_interval_seconds
        watcher = Watcher(run.look_at, self._trouble, poll_seconds=poll_seconds)
        fleet.attach(lambda: watcher.watch(folders.present()), folders, uploader.in_flight_names)
        keys = KeyCheck(key, client, self.config, run)
        stores = StoreCheck(
            store, run, in_flight=uploader.in_flight, grace=lambda: self._config.api.timeout_seconds
        )

        def limits() -> dict[str, Any]:
            return {
                "pacing": self.pacer.snapshot(),
                "upload_rate_limit": self.bandwidth.rate(),
                "upload_rate_limit_fleet": self.bandwidth.fleet_rate(),
                "upload_workers_allowed": concurrency.allowed,
                "budget": budget_used(store, self._config),
                "transcodes": fitter.progress(),
                "uploads": self.transfers.snapshot(),
            }

        metrics = Metrics(store, self.config, limits)
        budgets = BudgetRelease(store, run)
        host = self._config.daemon.host_name
        health = HealthRecord(record_path(self._config.state.path), limits=limits, host=host)
        pause = UserPause(store, run)
        pause.tick(0.0)  # a pause asked for before this start holds from the first upload
        web = self._web(store, health, pause, metrics, fitter)
        notifications = Notifications(self.config, health)
        self._listen(parts, metrics, health, notifications, web)

        def reload() -> bool:
            asked = self._reload_if_asked()
            if asked:
                web.apply()
                self.bandwidth.set(
                    self._config.api.max_upload_rate, self._config.api.max_upload_rate_fleet
                )
                budgets.reloaded()
            return asked

        ticks = Ticks(
            self.config,
            run,
            self.notifier,
            store,
            intake,
            folders,
            watcher,
            Watchdog(self.notifier, run.beats, lambda: list(self._threads), self.hub.publish),
            self.mode,
            reload=reload,
            tickers=(  # (the fleet's last: a store fault there holds back none of the others)
                lambda now: keys.tick(),
                lambda now: stores.tick(),
                budgets.tick,
                metrics.tick,
                health.tick,
                pause.tick,
                web.tick,
                fleet.tick,
            ),
        )
        fleet.tick(time.monotonic())  # before the first scan: which shared folders are this host's
        if not self.mode.once:
            ticks.watch_folders()
            log.info("watching %d folder(s); state in %s", len(self._config.watch), store.path)
        quiet = 2 * self._config.api.timeout_seconds  # a thread may wait this long on the API
        workers = self._config.api.max_concurrent_uploads + SPARE_WORKERS
        uploads = [f"upload-{n + 1}" for n in range(workers)]
        fitters = [f"fitter-{n + 1}" for n in range(self._config.fit.max_concurrent)]
        for name, turn, limit in (
            ("intake", intake.turn, quiet + QUIET_LIMIT),
            *((name, uploader.turn, quiet + UPLOAD_LIMIT) for name in uploads),
            ("poller", poller.turn, quiet + QUIET_LIMIT),
            ("indexer", indexer.turn, quiet + QUIET_LIMIT),
            ("chores", chores.turn, quiet + QUIET_LIMIT),
            *((name, fitter.turn, QUIET_LIMIT) for name in fitters),
        ):
            self._start(name, turn, limit)
        parts.callback(self._shutdown, watcher, client, uploader)
        run.rescan()
        self.notifier.ready(ticks.snapshot().line() if self.notifier.enabled else "")
        self.exit_code = ticks.loop()

    def _listen(
        self,
        parts: contextlib.ExitStack,
        metrics: Metrics,
        health: HealthRecord,
        notifications: Notifications,
        web: Web,
    ) -> None:
        """What listens to the hub, started, and stopped in the reverse order at the end."""
        for listener in (metrics.hear, health.hear, notifications.hear, web.hear):
            self.hub.listen(listener)
        for close in (web.close, health.remove, notifications.close, metrics.close):
            parts.callback(close)
        web.apply()
        notifications.start()

    def _web(
        self,
        store: Store,
        health: HealthRecord,
        pause: UserPause,
        metrics: Metrics,
        fitter: Fitter,
    ) -> Web:
        """The status page, its API and /metrics: what they read, and what they may do."""
        token = ensure_token(self._config.state.path.parent)
        logs.add_secret(token)
        run = self.run_state

        def retry(ids: list[int] | None) -> int:
            moved = store.retry(store.retriable() if ids is None else ids)
            run.wake_all()
            run.rescan()  # (a file that could not be read is read again when next seen)
            return len(moved)

        def files(
            state: FileState | None, folder: bytes | None, after: int, limit: int
        ) -> list[dict[str, Any]]:
            return [row_json(row) for row in store.page(state, folder, after, limit)]

        daemon = WebDaemon(
            report=lambda: status(store, health.verdict()),
            files=files,
            retry=retry,
            pause=pause.set,
            metrics=metrics.exposition,
            busy=lambda: bool(self.transfers.snapshot() or fitter.progress()),
        )
        return Web(self.config, token, daemon, serve=not self.mode.once)

    def _start(self, name: str, turn: Callable[[], None], quiet_limit: float) -> None:
        self.run_state.beats.expect(name, quiet_limit)
        thread = threading.Thread(target=run_loop(name, turn, self.run_state), name=name)
        thread.daemon = True  # a thread stuck in a system call must not keep the process alive
        thread.start()
        self._threads.append(thread)

    def _trouble(self, what: str) -> None:
        log.warning("%s: rescanning every watched folder", what)
        self.run_state.rescan()

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
        self.run_state.stop.set()

    def _reload_if_asked(self) -> bool:
        """After a SIGHUP: read the configuration again and apply it, or keep the old one when
        the new one is invalid. True when a reload was asked for."""
        asked, self._reload_asked = self._reload_asked, False
        source = self._config.source
        if not asked or source is None:
            return asked
        try:
            fresh = load(source)
        except ConfigError as error:
            log.error("the new configuration is invalid; keeping the old one:\n%s", error)
            return True
        later = restart_needed(self._config, fresh)
        if later:
            log.warning("%s changed: that takes effect at the next restart", ", ".join(later))
        self._config = fresh
        log.info("configuration reloaded: watching %d folder(s)", len(fresh.watch))
        return True

    # ---- shutdown --------------------------------------------------------------------------
    def _shutdown(self, watcher: Watcher, client: Client, uploader: Uploader) -> None:
        self.notifier.stopping()
        log.info("stopping: no longer watching folders")
        self.run_state.stop.set()
        watcher.close()
        self.run_state.wake_all()
        deadline = time.monotonic() + self._config.daemon.shutdown_timeout_seconds
        for thread in self._threads:
            thread.join(timeout=max(deadline - time.monotonic(), 0.0))
        if any(t.is_alive() for t in self._threads):
            abandoned = uploader.in_flight_names()
            log.info(
                "stopping: abandoning %d upload(s) still in flight (%s); they go back to the queue",
                len(abandoned),
                ", ".join(abandoned) or "none",
            )
            self.run_state.cancel.set()
            client.abort()
            for thread in self._threads:
                thread.join(timeout=10.0)
        with contextlib.suppress(StoreError):  # (else found `uploading` at the next start)
            uploader.give_back()
        log.info("stopped")

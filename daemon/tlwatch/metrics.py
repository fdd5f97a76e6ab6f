"""Prometheus metrics: the only module that imports prometheus_client.

It listens to the event hub and reads the store when scraped; it never writes the store. Served at
/metrics by the web server (`[ui] listen`) and/or written to `[metrics] textfile` every 15 s for
node_exporter's textfile collector (a temporary file, then a rename).
Labels are short names (`folder` is `[[watch]] name`), never a path, a file name or an asset id.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder, write_to_textfile
from prometheus_client.registry import Collector

from tlwatch import __version__
from tlwatch.config import Config
from tlwatch.events import (
    Answered,
    AssetReady,
    Event,
    FolderChanged,
    Paused,
    ProxyMade,
    Stuck,
    Uploaded,
)
from tlwatch.state import Store

log = logging.getLogger(__name__)

TEXTFILE_SECONDS = 15.0
PAUSE_CAUSES = {"key": "key_rejected", "store": "store_unwritable"}
READY_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200)


class _Files(Collector):
    """tlwatch_files{folder,state}: counted in the store at each scrape."""

    def __init__(self, store: Store, config: Callable[[], Config]) -> None:
        self.store, self.config = store, config

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "tlwatch_files",
            "Recorded files by watched folder and state",
            labels=["folder", "state"],
        )
        config = self.config()
        names = config.folder_names()
        for watch in config.watch:  # a file moved after upload still counts under its folder
            if watch.move_to is not None:
                names.setdefault(os.fsencode(watch.move_to), names[os.fsencode(watch.path)])
        counts: dict[tuple[str, str], int] = {}
        for (root, state), count in self.store.counts().items():
            key = (names.get(root, "one-off"), state)
            counts[key] = counts.get(key, 0) + count
        for (name, state), count in sorted(counts.items()):
            family.add_metric([name, state], count)
        yield family


class _Limits(Collector):
    """The limits in force, as the daemon's record of them says at each scrape."""

    def __init__(self, limits: Callable[[], dict[str, Any]]) -> None:
        self.limits = limits

    def collect(self) -> Iterator[Metric]:
        found = self.limits()
        remaining = GaugeMetricFamily(
            "tlwatch_ratelimit_remaining",
            "Requests left in the API's rate-limit window, by endpoint family, as last said",
            labels=["family"],
        )
        for family, window in sorted((found.get("pacing") or {}).items()):
            if window.get("remaining") is not None:
                remaining.add_metric([family], window["remaining"])
        yield remaining
        rate = GaugeMetricFamily(
            "tlwatch_upload_rate_limit_bytes_per_second",
            "The upload bandwidth cap in force (0: none)",
        )
        rate.add_metric([], found.get("upload_rate_limit") or 0)
        yield rate
        workers = GaugeMetricFamily(
            "tlwatch_upload_workers_allowed", "Upload workers allowed to send (fewer on trouble)"
        )
        workers.add_metric([], found.get("upload_workers_allowed") or 0)
        yield workers
        budget = found.get("budget") or {}
        minutes = GaugeMetricFamily(
            "tlwatch_media_minutes_sent", "Media minutes sent, by period", labels=["period"]
        )
        for period, key in (("today", "today_minutes"), ("total", "total_minutes")):
            if budget.get(key) is not None:
                minutes.add_metric([period], budget[key])
        yield minutes


class _Host(Collector):
    """Every sample of `inner`, with a `host` label (one dashboard over a fleet)."""

    def __init__(self, inner: CollectorRegistry, host: Callable[[], str]) -> None:
        self.inner, self.host = inner, host

    def collect(self) -> Iterator[Metric]:
        host = self.host()
        for family in self.inner.collect():
            family.samples = [
                sample._replace(labels={**sample.labels, "host": host}) for sample in family.samples
            ]
            yield family


class Metrics:
    def __init__(
        self,
        store: Store,
        config: Callable[[], Config],
        limits: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.config = config
        registry = CollectorRegistry(auto_describe=True)  # what is measured, and served
        self.registry = registry
        if store.database.fleet:  # in a fleet, what is served says its host on each sample
            self.registry = CollectorRegistry(auto_describe=False)
            self.registry.register(_Host(registry, lambda: config().daemon.host_name))
        info = Gauge("tlwatch_build_info", "tlwatch's version", ["version"], registry=registry)
        info.labels(__version__).set(1)
        registry.register(_Files(store, config))
        registry.register(_Limits(limits))
        self.uploads = Counter(
            "tlwatch_uploads", "Uploads that ended, by result", ["result"], registry=registry
        )
        self.upload_bytes = Counter(
            "tlwatch_upload_bytes", "Bytes of the files uploaded", registry=registry
        )
        self.requests = Counter(
            "tlwatch_api_requests",
            "API requests by endpoint and HTTP status (0: no answer)",
            ["endpoint", "code"],
            registry=registry,
        )
        self.proxy_seconds = Counter(
            "tlwatch_proxy_seconds", "Seconds spent making proxies and segments", registry=registry
        )
        self.bytes_saved = Counter(
            "tlwatch_bytes_saved",
            "Original bytes minus the bytes of the proxies sent instead",
            registry=registry,
        )
        self.paused = Gauge(
            "tlwatch_paused", "1 while paused, by reason", ["reason"], registry=registry
        )
        for reason in PAUSE_CAUSES.values():
            self.paused.labels(reason).set(0)
        self.stuck = Gauge("tlwatch_stuck_threads", "Threads making no progress", registry=registry)
        self.online = Gauge(
            "tlwatch_folder_online",
            "1 while a watched folder is online",
            ["folder"],
            registry=registry,
        )
        self.ready = Histogram(
            "tlwatch_asset_ready_seconds",
            "From an upload recorded to its asset ready",
            buckets=READY_BUCKETS,
            registry=registry,
        )
        self.last_success = Gauge(
            "tlwatch_last_success_timestamp_seconds",
            "When an upload last succeeded (Unix time)",
            registry=registry,
        )
        for name in config().folder_names().values():
            self.online.labels(name).set(1)
        self._next_write = 0.0

    # ---- listening ------------------------------------------------------------------------
    def hear(self, event: Event) -> None:
        if isinstance(event, Uploaded):
            self.uploads.labels(event.result).inc()
            if event.result == "ok":
                self.upload_bytes.inc(event.size)
                self.last_success.set(time.time())
        elif isinstance(event, Answered):
            self.requests.labels(event.endpoint, str(event.code)).inc()
        elif isinstance(event, ProxyMade):
            self.proxy_seconds.inc(event.seconds)
            self.bytes_saved.inc(max(event.saved, 0))
        elif isinstance(event, Paused):
            self.paused.labels(PAUSE_CAUSES.get(event.cause, event.cause)).set(int(event.on))
        elif isinstance(event, FolderChanged):
            name = self.config().folder_names().get(event.path)
            if name is not None:
                self.online.labels(name).set(int(event.online))
        elif isinstance(event, AssetReady):
            self.ready.observe(max(event.seconds, 0.0))
        elif isinstance(event, Stuck):
            self.stuck.set(len(event.threads))

    # ---- serving --------------------------------------------------------------------------
    def exposition(self, accept: str) -> tuple[bytes, str]:
        """What /metrics answers (the web server serves it): the text, its content type, in
        the format the scraper's `Accept` header asks for."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def tick(self, now: float) -> None:
        """Write the textfile, every 15 s."""
        path = self.config().metrics.textfile
        if path is None or now < self._next_write:
            return
        self._next_write = now + TEXTFILE_SECONDS
        try:
            write_to_textfile(str(path), self.registry)
        except OSError as error:
            log.warning("metrics: cannot write %s: %s", path, error.strerror)

    def close(self) -> None:
        """The textfile says the last word."""
        self._next_write = 0.0
        self.tick(time.monotonic())

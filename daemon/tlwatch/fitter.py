"""Camera originals the platform cannot take as they are: their proxies and segments, made once.

The uploader judges each video and audio file before sending it (`judge`): a file over the
upload's size, or, where its folder indexes, outside the index's models' bounds, is `fitting`,
and a `proxy` chore says what to make (the plan, as JSON: each part's offset and length, the
picture, the frame rate, the largest bit rate). `Fitter.turn` is one turn of the fitter thread:
claim the next proxy chore (durable), check the original is still the version judged, make each
part in the spool with ffmpeg (`transcode`) under a name taken from the original's SHA-256 and
the plan (a part already made is kept: after a crash only what was cut off is made again), then
queue the parts as files of their own in the transaction that ends the chore. They are uploaded,
followed and indexed like any file; each carries its original's path and SHA-256, and segments
their number and offset, in `user_metadata`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from tlwatch.api import Client
from tlwatch.chores import take_chore
from tlwatch.config import Config, FitConfig
from tlwatch.control import RunState
from tlwatch.errors import Cancelled, StoreError
from tlwatch.events import ProxyMade
from tlwatch.fit import (
    IMAGE_MOST,
    UPLOAD_MOST,
    Action,
    Bounds,
    Picture,
    Verdict,
    index_bounds,
    proxy_picture,
    verdict,
)
from tlwatch.metadata import PATH_KEY
from tlwatch.models import ChoreKind, ChoreState, FileState, Kind, Media, regular_signature, shown
from tlwatch.probe import probe
from tlwatch.state import ChoreRow, FileRow, NewPart, Store
from tlwatch.transcode import Part, TranscodeError, find_ffmpeg, make, make_image, pick_encoder

log = logging.getLogger(__name__)

IMAGE_SIDE = 3840  # an image proxy's longest side, at most
MAX_FPS = 30.0
MAX_RATE = 8_000_000  # bits/s: a proxy's ceiling, lowered where the index's size bound needs it
SPOOL_WAIT = 10.0  # a full spool is looked at again this often
SOURCE_KEY = "tlwatch_source_sha256"
_CHORE_MARK = re.compile(rb"^[0-9a-f]{64}-[0-9a-f]{12}-c(\d+)[-.]")  # a part's name, its chore
SEGMENT_KEYS = ("tlwatch_segment", "tlwatch_segments", "tlwatch_offset_seconds")


def part_key(source: str, number: int, count: int) -> str:
    """How a rebuilt store finds a part on the server: its original's SHA-256 and its number."""
    return f"part:{source}:{number}of{count}"


def index_limits(store: Store, client: Client, index_id: str, overrides: dict[str, Any]) -> Bounds:
    """The bounds of an index's models (read once with `GET /indexes/{id}`, then kept in the
    store), with `[fit]`'s overrides. Raises ApiError when they cannot be read."""
    models = store.index_models(index_id)
    if models is None:
        models = client.index_models(index_id)
        store.keep_index_models(index_id, models)
    return index_bounds(models).replaced(overrides)


def judge(row: FileRow, bounds: Bounds | None, mode: str, fit: FitConfig) -> tuple[Verdict, str]:
    """What goes up for this file, and the plan (JSON) of the parts to make instead of it."""
    if row.kind == Kind.IMAGE:  # too large an image: a JPEG of it, at most 3840 on a side
        if mode == "never" or row.size <= IMAGE_MOST:
            return Verdict(Action.AS_IS), ""
        reason = f"{row.size / 1e6:.0f} MB is over the {IMAGE_MOST / 1e6:g} MB an image may be"
        plan = {"image": IMAGE_SIDE, "parts": [[0.0, 0.0]]}
        return Verdict(Action.PROXY, reason, ((0.0, 0.0),)), json.dumps(plan, sort_keys=True)
    found = verdict(row.probe, row.size, bounds, mode, UPLOAD_MOST)
    if found.action == Action.AS_IS:
        return found, ""
    limits = bounds or Bounds()
    picture = proxy_picture(row.probe, limits, fit.proxy_height) if row.kind == Kind.VIDEO else None
    longest = max(length for _, length in found.parts)
    most = min(limits.max_bytes or UPLOAD_MOST, UPLOAD_MOST)
    fits = int(0.9 * 8 * most / max(longest, 1.0))
    plan = {
        "parts": [list(part) for part in found.parts],
        "picture": list(vars(picture).values()) if picture else None,
        "fps": min(row.fps or MAX_FPS, MAX_FPS) if picture else None,
        "max_rate": min(MAX_RATE, fits),
    }
    return found, json.dumps(plan, sort_keys=True)


class Fitter:
    def __init__(
        self,
        store: Store,
        config: Callable[[], Config],
        run: RunState,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.config, self.run, self.clock = store, config, run, clock
        self._now: dict[int, dict[str, Any]] = {}  # transcodes in progress, for `status`
        self._lock = threading.Lock()
        self._swept = False

    def sweep(self) -> int:
        """Remove what the spool holds that nothing owes any more: the parts of a chore that
        failed, was dropped or made them under an old plan, parts skipped (an older version's),
        and what a crash cut off. Only tlwatch's own names (`-c<chore>`); a part that still
        needs its copy keeps it (its delete is a chore), and so does what a queued or running
        chore is making."""
        spool = os.fsencode(self.config().fit.spool(self.config().state.path))
        try:
            entries = list(os.scandir(spool))
        except FileNotFoundError:
            return 0
        removed = 0
        for entry in entries:
            mark = _CHORE_MARK.search(entry.name)
            part = self.store.by_path(entry.path) if mark else None
            if mark is None or (part is not None and part.state != FileState.SKIPPED):
                continue  # not ours, or a part that still needs its copy (a skipped one: not)
            try:
                chore = self.store.chore(int(mark.group(1)))
            except StoreError:
                chore = None
            if chore is not None and chore.state in (ChoreState.QUEUED, ChoreState.DOING):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
        return removed

    def progress(self) -> list[dict[str, Any]]:
        """Each transcode in progress: the file, its part, percent, speed (x real time), ETA."""
        with self._lock:
            return [dict(found) for found in self._now.values()]

    def _heard(
        self, key: int, file: FileRow, part: Part, which: str, done: float, speed: float | None
    ) -> None:
        percent = min(100.0, 100.0 * done / part.length) if part.length else 0.0
        eta = (part.length - done) / speed if speed else None
        self.run.beats.beat()
        with self._lock:
            self._now[key] = {
                "file": file.shown + which,
                "percent": round(percent, 1),
                "speed": speed,
                "eta_seconds": round(eta, 1) if eta is not None else None,
            }

    def turn(self) -> None:
        """Make the next due proxy, or wait until one may be due (a read while idle)."""
        if not self._swept:
            self._swept = True
            removed = self.sweep()
            if removed:
                log.info("the spool: %d file(s) nothing owes any more removed", removed)
        chore = take_chore(self.store, self.run, (ChoreKind.PROXY,), self.clock)
        if chore is not None:
            self.do(chore)

    def do(self, chore: ChoreRow) -> None:
        file = self.store.get(chore.file_id)
        if self._stale(chore, file):
            return
        spool = self.config().fit.spool(self.config().state.path)
        os.makedirs(spool, exist_ok=True)
        held = _spool_bytes(spool)
        if held >= self.config().fit.spool_max_bytes:
            reason = f"waits: the spool holds {held / 1e9:.1f} GB, its most"
            if not (chore.reason or "").startswith("waits: the spool"):  # said once
                log.warning("%s: its proxy %s (spool_max_bytes)", file.shown, reason)
            self.store.requeue_chore(chore, reason, at=self.clock() + SPOOL_WAIT)
            return
        started = time.monotonic()
        try:
            plan = json.loads(chore.detail or "{}")
            parts = self._make(file, plan, os.fsencode(spool), chore.id)
        except Cancelled:
            self.store.requeue_chore(chore, "interrupted by shutdown", at=self.clock())
            return
        except TranscodeError as error:
            if self._stale(chore, file):  # a card pulled out, a file replaced: not ffmpeg's fault
                return
            self.store.fit_failed(chore, str(error))
            _discard_made(os.fsencode(spool), chore)
            log.warning("%s: cannot make its proxy: %s", file.shown, error)
            return
        except OSError as error:
            later = self.clock() + self.config().daemon.upload_backoff.delay(chore.attempts)
            self.store.requeue_chore(chore, f"cannot make its proxy: {error}", at=later)
            return
        if self._stale(chore, file):  # changed while ffmpeg read it: its parts are not it
            _discard_made(os.fsencode(spool), chore)
            return
        self.store.add_parts(chore, os.fsencode(spool), parts)
        saved = file.size - sum(part.signature.size for part in parts)
        self.run.publish(ProxyMade(time.monotonic() - started, saved))
        self.run.wake_workers()

    def _stale(self, chore: ChoreRow, file: FileRow) -> bool:
        """The chore's guard: its original is still the version judged, there. Otherwise the
        chore waits for an offline folder, or is dropped: the original is looked at again (a
        new version), or skipped when it is gone. True when the chore is not done now."""
        now = regular_signature(file.path)
        if file.state == FileState.FITTING and now == chore.signature:
            return False
        if self.run.offline() and file.root in self.run.offline():
            self.store.requeue_chore(chore, "its folder is offline", at=self.clock() + SPOOL_WAIT)
            return True
        why = "the file changed since; its new version goes its own way"
        self.store.drop_chore(chore, "the file is gone" if now is None else why)
        if now is None and file.state == FileState.FITTING:
            self.store.skip(file.id, "gone before its proxy was made")
        elif now is not None:
            self.run.look_at(file.path)  # the intake records its new version
        return True

    def _make(self, file: FileRow, plan: dict[str, Any], spool: bytes, chore: int) -> list[NewPart]:
        fit = self.config().fit
        ffmpeg = find_ffmpeg(fit.ffmpeg)
        encoder = pick_encoder(ffmpeg, fit.encoder)
        key = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:12]
        picture = Picture(*plan["picture"]) if plan.get("picture") else None
        pieces = plan["parts"]
        if plan.get("image"):
            target = os.path.join(spool, f"{file.sha256}-{key}-c{chore}.jpg".encode())
            if not os.path.exists(target):
                _discard_unfinished(spool, os.path.basename(target))
                make_image(ffmpeg, os.fsdecode(file.path), os.fsdecode(target), plan["image"])
            return [self._part(file, target, None, (1, 1), 0.0, image=True)]
        made = []
        for number, (offset, length) in enumerate(pieces, 1):
            name = f"{file.sha256}-{key}-c{chore}-{number}of{len(pieces)}.mp4".encode()
            target = os.path.join(spool, name)
            if not os.path.exists(target):  # a part made before a crash is whole: kept
                _discard_unfinished(spool, name)
                part = Part(offset, length, picture, plan.get("fps"), int(plan["max_rate"]))
                self._transcode(file, ffmpeg, encoder, target, part, (number, len(pieces)))
            made.append(self._part(file, target, picture, (number, len(pieces)), offset))
        return made

    def _transcode(
        self,
        file: FileRow,
        ffmpeg: str,
        encoder: str,
        target: bytes,
        part: Part,
        count: tuple[int, int],
    ) -> None:
        started = time.monotonic()
        which = f" (segment {count[0]} of {count[1]})" if count[1] > 1 else ""
        log.info("%s: making its proxy%s with %s", file.shown, which, encoder)
        key = threading.get_ident()
        try:
            make(
                ffmpeg,
                encoder,
                os.fsdecode(file.path),
                os.fsdecode(target),
                part,
                progress=lambda done, speed: self._heard(key, file, part, which, done, speed),
                cancel=self.run.cancel,
            )
        finally:
            with self._lock:
                self._now.pop(key, None)
        took = max(time.monotonic() - started, 0.001)
        log.info(
            "%s: proxy%s made: %.0f s of media in %.1f s (%.1fx real time)",
            file.shown,
            which,
            part.length,
            took,
            part.length / took,
        )

    def _part(
        self,
        file: FileRow,
        target: bytes,
        picture: Picture | None,
        count: tuple[int, int],
        offset: float,
        *,
        image: bool = False,
    ) -> NewPart:
        kind = Kind.IMAGE if image else Kind.VIDEO if picture else Kind.AUDIO
        signature = regular_signature(target)
        if signature is None:
            raise FileNotFoundError(f"{shown(target)} is gone from the spool")
        with open(target, "rb") as source:
            digest = hashlib.file_digest(source, "sha256").hexdigest()
        mime = {Kind.IMAGE: "image/jpeg", Kind.VIDEO: "video/mp4"}.get(kind, "audio/mp4")
        metadata: dict[str, Any] = {**file.user_metadata, SOURCE_KEY: file.sha256 or ""}
        metadata[PATH_KEY] = file.name.decode("utf-8", "replace")[:1000]
        if count[1] > 1:
            metadata |= dict(zip(SEGMENT_KEYS, (count[0], count[1], round(offset, 3)), strict=True))
        media = (
            Media(mime, kind, digest, 0.0) if image else Media.of(mime, kind, digest, probe(target))
        )
        return NewPart(target, signature, media, metadata, count[0], count[1], offset)


def _spool_bytes(spool: str | os.PathLike[str]) -> int:
    with os.scandir(spool) as entries:
        return sum(entry.stat().st_size for entry in entries if entry.is_file())


def _discard_unfinished(spool: bytes, name: bytes) -> None:
    """What a transcode cut off by a crash left of this part (`name.<random>.part`)."""
    _discard(spool, lambda found: found.startswith(name + b".") and found.endswith(b".part"))


def _discard_made(spool: bytes, chore: ChoreRow) -> None:
    """The parts a chore made that will not be sent (its original changed, or failed)."""
    mark = b"-c%d" % chore.id
    _discard(spool, lambda found: mark + b"-" in found or found.endswith(mark + b".jpg"))


def _discard(spool: bytes, wanted: Callable[[bytes], bool]) -> None:
    """Remove the spool's files whose names are `wanted`."""
    with os.scandir(spool) as entries:
        for entry in entries:
            if wanted(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)

"""One file -> one asset, exactly once: intent first, look up before resending, resume multipart.

`Uploader.turn` is one turn of an upload worker thread: claim the next due file (unless paused or
rate limited) and upload it, or wait for work. A claimed file (`uploading`) leaves `upload` as
`uploaded` (asset id recorded in the same transaction), back in `queued` with a time to try again,
or `failed` / `skipped` with the reason.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from tlwatch.api import Asset, Client, MultipartSession, api_filename
from tlwatch.config import ApiConfig, Config
from tlwatch.control import PAUSE_KEY, RunState
from tlwatch.errors import (
    ApiError,
    AuthError,
    Cancelled,
    FeatureNotEnabled,
    LeaseLost,
    NotFound,
    OutcomeUnknown,
    RateLimited,
    RequestRejected,
    ServerError,
    SourceChanged,
    TransientError,
)
from tlwatch.events import Uploaded
from tlwatch.fit import IMAGE_MOST, UPLOAD_MOST, Action, Verdict
from tlwatch.fitter import SEGMENT_KEYS, SOURCE_KEY, index_limits, judge, part_key
from tlwatch.intake import index_for
from tlwatch.limits import DAILY, TOTAL, Concurrency, budget_verdict, day_start
from tlwatch.metadata import PATH_KEY
from tlwatch.models import FileState, Kind, regular_signature
from tlwatch.state import FileRow, FoundPart, Store
from tlwatch.transfers import Transfers

log = logging.getLogger(__name__)

TOKEN_KEY = "tlwatch_token"  # noqa: S105 - a metadata key name, not a secret
SHA_KEY = "tlwatch_sha256"


RESULTS = {
    FileState.UPLOADED: "ok",
    FileState.FITTING: "fitted",
    FileState.READY: "ok",
    FileState.FAILED: "failed",
    FileState.SKIPPED: "failed",
}
IDLE_WAIT = 5.0  # the longest an idle worker waits before looking at the queue again
# Workers beyond the uploads allowed at once (`max_concurrent_uploads`): a worker waiting on the
# store (its record, its next claim) leaves no upload slot idle; each waits for a slot to send.
SPARE_WORKERS = 1


class NotSent(Exception):
    """A claimed file's turn to send came during a stop, a pause or a rate-limit hold: it goes
    back to the queue unsent."""


def size_verdict(kind: str | None, size: int) -> str | None:
    """Given a file's kind and size, return why the API can never take it, or None. Pure."""
    if kind == Kind.IMAGE and size > IMAGE_MOST:
        return "images over 32 MB cannot be uploaded"
    if size > UPLOAD_MOST:
        return "over 10 GB, the largest upload the API takes"
    return None


def remote_assets(
    client: Client, progress: Callable[[], None] = lambda: None
) -> dict[str, tuple[str, str]]:
    """The server's assets sent by tlwatch, by content hash -> (asset id, status): what a
    rebuilt store adopts. A proxy or segment is also kept under its original's hash and its
    number (`fitter.part_key`). `progress` hears each asset (a long list is work, not a hang).
    Raises ApiError when the list cannot be read."""
    found = {}
    for asset in client.list_assets():
        progress()
        metadata = asset.user_metadata or {}
        orphan = asset.method == "multipart" and asset.status != "ready"  # a session cut off
        if metadata.get(SHA_KEY) and not orphan:
            found[str(metadata[SHA_KEY])] = (asset.id, asset.status)
            if metadata.get(SOURCE_KEY):
                number, count = metadata.get(SEGMENT_KEYS[0], 1), metadata.get(SEGMENT_KEYS[1], 1)
                found[part_key(str(metadata[SOURCE_KEY]), number, count)] = (asset.id, asset.status)
    return found


class Uploader:
    def __init__(
        self,
        store: Store,
        client: Client,
        config: Callable[[], Config],
        run: RunState,
        *,
        offline: Callable[[bytes], bool] = lambda root: not os.path.isdir(root),
        concurrency: Concurrency | None = None,
        clock: Callable[[], float] = time.time,
        local_time: Callable[[], datetime] = datetime.now,
        transfers: Transfers | None = None,
    ) -> None:
        self.store, self.client, self.config, self.run = store, client, config, run
        self.offline = offline  # is this watched folder offline right now (a card pulled)?
        self.concurrency = concurrency or Concurrency(config().api.max_concurrent_uploads)
        self.clock, self.local_time = clock, local_time
        self.transfers = transfers or Transfers()  # bytes sent of each file in flight
        self._in_flight: set[int] = set()
        self._claiming = threading.Condition()  # guards the three below
        self._claims = 0  # workers asking the store for a file right now
        self._sending = 0  # workers sending a file right now (at most `concurrency.allowed`)
        self._slot = threading.local()  # does this worker hold one of the `_sending`?
        self._streak = False  # the last claim took a file: the next is likely due too
        self._next_listing = 0.0  # a rebuilt store: when to try the server's list again
        self._listing = threading.Lock()  # one worker reads the list; the others wait
        self._ahead: dict[int, tuple[FileRow, str]] = {}  # worker -> its next file, and token

    def in_flight(self) -> frozenset[int]:
        """The files the workers hold claimed right now: being sent, or about to be."""
        with self._claiming:
            self._claiming.wait_for(lambda: not self._claims, timeout=60)  # (ends in a moment)
            return frozenset(self._in_flight)

    def in_flight_names(self) -> list[str]:
        """The files the workers hold claimed right now, as shown in a log line."""
        return [self.store.get(file_id).shown for file_id in sorted(self.in_flight())]

    def turn(self) -> None:
        """One turn of an upload worker: upload the next due file, or wait for one. Idle is a
        read of the store and a wait on the wake-up noted before it: nothing is missed."""
        seen = self.run.work.seen()
        held = self.run.held()
        with self._claiming:
            row, token = self._ahead.pop(threading.get_ident(), (None, secrets.token_hex(16)))
        if row is not None and (self.run.paused() or held > 0):
            self._unclaim(row, token)  # (claimed as the last file was recorded; not now)
            row = None
        if row is None:
            if self._rebuilding():
                self.run.work.wait(seen, IDLE_WAIT)
                return
            row, due = self._claim(token, held)
            if row is None:
                self.run.work.wait(seen, self._idle_wait(held, due))
                return
        try:
            self.upload(row, fresh_token=token, then_claim=True)
        except LeaseLost as lost:  # this host was silent past its lease: the file is not ours
            log.warning("%s: %s; this worker leaves it", row.shown, lost)
        except Exception:
            reason = "interrupted by shutdown" if self.run.cancel.is_set() else "unexpected error"
            later = self.clock() + self.config().api.timeout_seconds
            self.store.requeue(row.id, reason, at=later)
            raise
        finally:
            with self._claiming:
                self._in_flight.discard(row.id)
            self.run.wake_workers()  # a slot is free

    def give_back(self) -> None:
        """Give back the files claimed ahead and not begun (the workers have stopped)."""
        with self._claiming:
            ahead, self._ahead = list(self._ahead.values()), {}
        for row, token in ahead:
            self._unclaim(row, token)

    def _unclaim(self, row: FileRow, token: str) -> None:
        try:
            self.store.unclaim(row, token)
        except LeaseLost as lost:  # (this host was silent past its lease: the file is not ours)
            log.warning("%s: %s; not given back", row.shown, lost)
        finally:
            with self._claiming:
                self._in_flight.discard(row.id)

    def _claim(self, token: str, held: float) -> tuple[FileRow | None, float | None]:
        """Claim the next due file unless paused, held or crowded: (row, when the next is due).
        Workers ask the store at the same time (each takes a row of its own), each having
        kept its place among the uploads allowed first."""
        with self._claiming:
            if not self._claim_begun(held):
                return None, None
            streak = self._streak
        row: FileRow | None = None
        try:
            row, due = self._take(token, streak)
        finally:
            self._claim_ended(row)
        return row, due

    def _claim_begun(self, held: float, done: int = 0) -> bool:
        """May a worker claim a file now (under `_claiming`)? Not while paused, held, or
        crowded (the files the workers hold, sent or waiting to be, `done` of them about to be
        let go, and the claims being made: fewer while the API struggles). If so, it is a claim
        being made until `_claim_ended`."""
        crowded = len(self._in_flight) - done + self._claims >= self._claimable()
        if self.run.paused() or held > 0 or crowded:
            return False
        self._claims += 1
        return True

    def _claimable(self) -> int:
        """How many files the workers may hold claimed at once (sent or waiting to be)."""
        return self.concurrency.allowed + SPARE_WORKERS

    def _claim_ended(
        self, row: FileRow | None, ahead: str | None = None, done: int | None = None
    ) -> None:
        """A claim asked of the store is over: `row` taken (in flight from now on), or none.
        `ahead`: taken by a record with this token, for this worker's next turn; `done`: the
        file that record recorded, no longer in flight."""
        with self._claiming:
            self._claims -= 1
            if done is not None:
                self._in_flight.discard(done)
            self._streak = row is not None
            if row is not None:
                self._in_flight.add(row.id)
                if ahead is not None:
                    self._ahead[threading.get_ident()] = (row, ahead)
            self._claiming.notify_all()

    def _take(self, token: str, streak: bool) -> tuple[FileRow | None, float | None]:
        """The store's next due file, claimed; else when the next is due. While files keep
        coming (`streak`), claimed without reading first when the next is due."""
        offline, due = self.run.offline(), None
        if not streak:
            due = self.store.next_due(offline)  # a read: no write transaction while idle
            if due is None or due > self.clock():
                return None, due
        row = self.store.claim_next(token, offline)
        if row is None:
            return None, self.store.next_due(offline) if streak else due
        return row, None

    def _rebuilding(self) -> bool:
        """A rebuilt store uploads nothing until the server's list of assets has been read and
        recorded (what it holds is adopted, not sent again); a failed listing is retried."""
        if not self.store.rebuilding:
            return False
        if self.clock() < self._next_listing or not self._listing.acquire(blocking=False):
            return True
        try:
            return self._read_list()
        finally:
            self._listing.release()

    def _read_list(self) -> bool:
        """Read the server's list and record it (adopting what it holds); False when done."""
        try:
            assets = remote_assets(self.client, self.run.beats.beat)
        except ApiError as error:
            self._next_listing = self.clock() + self.config().daemon.upload_backoff.delay(3)
            log.warning(
                "the store was rebuilt: no upload until the server's asset list is read (%s); "
                "trying again",
                error,
            )
            return True
        adopted = self.store.listed_remote(assets)
        log.info(
            "rebuilding the store: %d asset(s) on the server were sent by tlwatch; "
            "%d queued file(s) adopted",
            len(assets),
            adopted,
        )
        if adopted:
            self.run.wake_poller()
        self.run.wake_workers()  # the others wait no more
        return False

    def _over_budget(self, row: FileRow) -> bool:
        """A claimed file that would take the day or the total past its budget waits (held)."""
        budget = self.config().budget
        if budget.max_media_minutes_per_day is None and budget.max_media_minutes_total is None:
            return False
        today = day_start(self.local_time())
        reason = budget_verdict(
            (row.duration or 0.0) / 60.0,
            self.store.media_minutes(today, exclude=row.id),
            self.store.media_minutes(0.0, exclude=row.id),
            budget.max_media_minutes_per_day,
            budget.max_media_minutes_total,
        )
        if reason is None:
            return False
        self.store.hold_claimed(row.id, reason)
        return True

    def _idle_wait(self, held: float, due: float | None) -> float:
        """How long an idle worker waits unless woken (a wake-up ends the wait at once)."""
        if held > 0:
            return min(max(held, 0.05), IDLE_WAIT)
        if due is None:
            return IDLE_WAIT
        return min(max(due - self.clock(), 0.05), IDLE_WAIT)

    def upload(
        self, row: FileRow, *, fresh_token: str | None = None, then_claim: bool = False
    ) -> FileRow:
        """Upload a claimed file; whatever happens, leave it in a state that says what's next.
        `fresh_token`: the token given at its claim; any other token it carries was sent by an
        earlier attempt, whose asset may exist: it is looked for first. `then_claim` (a
        worker's turn): once sent, its record claims this worker's next file, when one may go
        now (one commit for both), which the worker's next turn sends."""
        if self._over_budget(row):  # held instead: a one-off upload obeys the budget too
            return self.store.get(row.id)
        done = self._attempt(row, fresh_token, then_claim)
        result = RESULTS.get(done.state, "retried")
        if result == "ok":
            self.concurrency.succeeded()
        self.run.publish(Uploaded(result, row.size if result == "ok" else 0))
        return done

    def _attempt(self, row: FileRow, fresh_token: str | None, then_claim: bool) -> FileRow:
        try:
            return self._try(row, fresh_token, then_claim)
        finally:
            self._let_slot_go()  # (a failure is handled by now)

    def _try(self, row: FileRow, fresh_token: str | None, then_claim: bool) -> FileRow:
        try:
            return self._upload(row, fresh_token, then_claim)
        except ApiError as error:
            return self._refused(row, error)
        except NotSent:  # (the token it was given, never sent, is dropped)
            return self.store.unclaim(row, fresh_token or "")
        except Cancelled:
            return self._requeue(row, "interrupted by shutdown", count_attempt=False)
        except SourceChanged as error:
            requeued = self.store.requeue(row.id, str(error), at=self._after_settling(row))
            self.run.look_at(row.path)  # committed first: the intake sees the file as queued
            return requeued
        except OSError as error:
            if self.offline(row.root):  # a card pulled out: not a failure, a wait
                reason = "its folder is offline; sent when it is back"
                return self.store.requeue(row.id, reason, at=self.clock())
            if isinstance(error, FileNotFoundError):
                return self.store.skip(row.id, "gone before it could be uploaded")  # no ERROR
            return self._requeue(row, f"cannot read the file: {error.strerror}")

    def _after_settling(self, row: FileRow) -> float:
        """When a changed file may be tried again: by then the intake has settled it and either
        queued its new version or, same content, recorded its new signature."""
        watch = self.config().watch_for(row.path)
        return self.clock() + 2 * (watch.settle_seconds if watch else 0.0) + 1.0

    def _refused(self, row: FileRow, error: ApiError) -> FileRow:
        """Given what the API said no with, return the file in the state that follows."""
        if isinstance(error, AuthError):
            self.run.pause(PAUSE_KEY, "API key rejected")
            return self._requeue(row, "paused: the API key was rejected", count_attempt=False)
        if isinstance(error, OutcomeUnknown):
            # The server may still be storing it: look it up only once that request would have
            # timed out anyway; then adopt it, or send again.
            grace = max(error.retry_after or 0.0, self.config().api.timeout_seconds)
            return self._requeue(row, str(error), wait=grace)
        if isinstance(error, TransientError):
            if isinstance(error, RateLimited | ServerError):
                self.concurrency.failed()
            later = self._requeue(row, str(error), wait=error.retry_after)
            if isinstance(error, RateLimited):
                self._hold(later.next_attempt_at or self.clock())  # slow every worker down
            return later
        if isinstance(error, NotFound):
            self.store.forget_session(row.id)
            return self._requeue(row, "the upload session is gone; starting a new one")
        if isinstance(error, FeatureNotEnabled):
            reason = "multipart uploads are not enabled for this account, and the file is over "
            return self.store.skip(row.id, reason + "the direct limit")
        return self.store.fail(row.id, f"refused by the API: {error}")

    def _hold(self, until: float) -> None:
        if self.run.hold(until):
            log.warning("rate limited by the API: no new upload for %.0f s", until - self.clock())

    def _requeue(
        self, row: FileRow, reason: str, *, wait: float | None = None, count_attempt: bool = True
    ) -> FileRow:
        attempts = row.attempts if count_attempt else max(row.attempts - 1, 0)
        backoff = self.config().daemon.upload_backoff
        delay = backoff.delay(max(attempts, 1), server_wait=wait) if count_attempt else 0.0
        return self.store.requeue(row.id, reason, at=self.clock() + delay, attempts=attempts)

    # ---- the happy path --------------------------------------------------------------------
    def _upload(self, row: FileRow, fresh_token: str | None, then_claim: bool) -> FileRow:
        if row.upload_token is None:
            raise RuntimeError(f"{row.shown}: claimed without an upload token")
        earlier = row.upload_token != fresh_token and not row.upload_id
        now = regular_signature(row.path)
        if now is None and earlier and not os.path.exists(row.path):
            adopted = self._adopt_earlier(row)  # gone now, but an earlier attempt may have sent it
            if adopted is not None:
                return adopted
        if now != row.signature:
            if not os.path.exists(row.path):
                raise FileNotFoundError(row.path)
            raise SourceChanged("changed since it was queued; waiting for it to settle")
        if earlier:
            adopted = self._adopt_earlier(row)  # a lost answer may have stored it
            if adopted is not None:
                return adopted
        fitted = None if row.upload_id else self._fit(row)  # a session begun goes on as it is
        if fitted is not None:
            return fitted
        verdict = size_verdict(row.kind, row.size)
        if verdict is not None:
            return self.store.skip(row.id, verdict)
        asset_id, status = self._send(row, row.upload_token)
        done = self._record(row, asset_id, status, then_claim)
        now = regular_signature(row.path)
        if now != row.signature:  # never a half-read file recorded as done
            reason = "changed or gone while being sent; its asset is deleted"
            self.store.withdraw(row.id, reason, at=self._after_settling(row))
            self._discard(asset_id)
            if now is None:
                raise FileNotFoundError(row.path)  # gone while being sent (a card pulled out?)
            raise SourceChanged("changed while it was being uploaded; sending it again")
        self.run.wake_poller()
        return done

    def _record(self, row: FileRow, asset_id: str, status: str, then_claim: bool) -> FileRow:
        """Record the asset; with `then_claim`, claim this worker's next file in the same
        commit, when another may go now (as `_claim` judges, with this file's slot free)."""
        with self._claiming:
            then_claim = then_claim and self._streak and not self.run.stop.is_set()
            then_claim = then_claim and self._claim_begun(self.run.held(), done=1)
        if not then_claim:
            return self.store.mark_uploaded(row.id, asset_id, status)
        token, taken = secrets.token_hex(16), None
        recorded = None
        try:
            done, taken = self.store.mark_uploaded_and_claim(
                row.id, asset_id, status, token, self.run.offline()
            )
            recorded = row.id
        finally:
            self._claim_ended(taken, ahead=token, done=recorded)
        return done

    def _fit(self, row: FileRow) -> FileRow | None:
        """An original the platform would refuse as it is (over the upload's size, or outside
        its index's bounds; an image over 32 MB) becomes `fitting`: its proxy or segments go
        instead (fitter.py). None when it goes as it is."""
        if row.parent_id is not None or row.kind is None:
            return None
        if row.kind == Kind.IMAGE and row.size <= IMAGE_MOST:
            return None  # the common case, judged at no cost
        config = self.config()
        watch = config.watch_for(row.path)
        index_id = index_for(config, row)
        bounds = None
        if index_id is not None:
            try:
                bounds = index_limits(self.store, self.client, index_id, config.fit.overrides)
            except NotFound:  # a wrong index_id: its indexing fails with the API's words
                log.warning("%s: index %s not found; judged without it", row.shown, index_id)
        found, plan = judge(row, bounds, watch.proxy if watch else "auto", config.fit)
        if found.action == Action.AS_IS:
            return None
        known = self._parts_on_server(row, found)
        if known:
            log.info("%s: %s; its %s found on the server", row.shown, found.reason, found.action)
            spool = os.fsencode(config.fit.spool(config.state.path))
            fitted = self.store.fit_found(
                row.id, f"{found.reason}: {found.action} found", spool, known
            )
            self.run.wake_poller()
            return fitted
        verb = "go" if found.action == Action.SEGMENTS else "goes"
        log.info("%s: %s; %s %s instead", row.shown, found.reason, found.action, verb)
        fitted = self.store.fit(row.id, plan, f"{found.reason}: sending {found.action}")
        self.run.wake_chores()
        return fitted

    def _parts_on_server(self, row: FileRow, found: Verdict) -> list[FoundPart]:
        """The parts of this original that a rebuilt store found on the server, all or none."""
        count = len(found.parts)
        known = []
        for number, (offset, _) in enumerate(found.parts, 1):
            asset = self.store.remote_asset(part_key(row.sha256 or "", number, count))
            if asset is None:
                return []
            known.append(FoundPart(asset[0], asset[1], number, count, offset))
        return known

    def _adopt_earlier(self, row: FileRow) -> FileRow | None:
        """The asset an earlier attempt with this row's token made, adopted; None if none."""
        assert row.upload_token is not None
        found = self._find(row, row.upload_token)
        if found is None:
            return None
        log.info("%s: found asset %s from an earlier attempt; adopting it", row.shown, found.id)
        return self._done(row, found.id, found.status)

    def _done(self, row: FileRow, asset_id: str, status: str) -> FileRow:
        done = self.store.mark_uploaded(row.id, asset_id, status)
        self.run.wake_poller()
        return done

    def _send(self, row: FileRow, token: str) -> tuple[str, str]:
        """Send the file, in one of the uploads allowed at once. The slot is let go once it is
        sent; after a failure, once the failure is handled (`_attempt`): a 429's hold, a
        rejected key's pause, is in force before another worker may send."""
        self._take_slot()
        self.transfers.start(row.id, row.name.decode("utf-8", "replace"), row.size)
        try:
            sent = self._send_now(row, token)
        finally:
            self.transfers.end()
        self._let_slot_go()
        return sent

    def _take_slot(self) -> None:
        """Wait for one of the uploads allowed at once (beating: a wait, not a hang). A stop,
        a pause or a rate-limit hold meanwhile: `NotSent`, the file given back unsent."""
        while True:
            with self._claiming:
                if self.run.stop.is_set() or self.run.paused() or self.run.held() > 0:
                    raise NotSent
                if self._sending < self.concurrency.allowed:
                    self._sending += 1
                    self._slot.held = True
                    return
                self._claiming.wait(1.0)
            self.run.beats.beat()

    def _let_slot_go(self) -> None:
        """Let this worker's upload slot go, if it holds one."""
        if getattr(self._slot, "held", False):
            self._slot.held = False
            with self._claiming:
                self._sending -= 1
                self._claiming.notify_all()

    def _send_now(self, row: FileRow, token: str) -> tuple[str, str]:
        api = self.config().api
        kind = Kind(row.kind or "video")
        metadata = self._metadata(row, token)
        if row.size <= api.direct_upload_limit and not row.upload_id:
            try:
                asset = self.client.create_direct(
                    row.path,
                    filename=api_filename(os.path.basename(row.path)),
                    user_metadata=metadata,
                    enable_hls=api.enable_hls,
                    enable_thumbnail=api.enable_thumbnail,
                )
                return asset.id, asset.status
            except RequestRejected as error:
                if error.status != 413:
                    raise
                log.info("%s: too large to send directly; using a multipart upload", row.shown)
        return self._multipart(row, kind, metadata, api), "processing"

    def _metadata(self, row: FileRow, token: str) -> dict[str, Any]:
        """What the asset carries: the file's own user metadata, and tlwatch's keys."""
        return {
            PATH_KEY: row.name.decode("utf-8", "replace")[:1000],  # a part carries its original's
            **row.user_metadata,
            TOKEN_KEY: token,
            SHA_KEY: row.sha256 or "",
        }

    def _multipart(self, row: FileRow, kind: Kind, metadata: dict[str, Any], api: ApiConfig) -> str:
        session, done = self._resume(row)
        if session is None:
            session = self.client.create_multipart(
                api_filename(os.path.basename(row.path)),
                kind.value,
                row.size,
                user_metadata=metadata,
                enable_hls=api.enable_hls,
                enable_thumbnail=api.enable_thumbnail,
            )
            self.store.start_session(
                row.id,
                session.upload_id,
                session.asset_id,
                session.chunk_size,
                session.total_chunks,
            )
            log.info(
                "%s: multipart upload %s started for asset %s (%d chunks)",
                row.shown,
                session.upload_id,
                session.asset_id,
                session.total_chunks,
            )
        if len(done) < session.total_chunks:
            self.client.upload_chunks(
                session,
                row.path,
                done=done,
                on_reported=lambda chunks: self.store.add_chunks(
                    row.id, [(c.chunk_index, c.etag) for c in chunks]
                ),
            )
        return session.asset_id

    def _resume(self, row: FileRow) -> tuple[MultipartSession | None, frozenset[int]]:
        """Given a file with a recorded session, return it and its completed chunks, or
        (None, empty) when there is none to resume."""
        if not (row.upload_id and row.asset_id and row.chunk_size and row.total_chunks):
            return None, frozenset()
        try:
            status = self.client.upload_status(row.upload_id)
        except NotFound:
            status = None
        if status is None or status.status in ("expired", "failed"):
            log.info(
                "%s: multipart upload %s can't be resumed (%s); starting over",
                row.shown,
                row.upload_id,
                status.status if status else "gone",
            )
            self.store.forget_session(row.id)
            return None, frozenset()
        session = MultipartSession(row.upload_id, row.asset_id, row.chunk_size, row.total_chunks)
        if status.status == "completed":
            return session, frozenset(range(1, row.total_chunks + 1))
        log.info(
            "%s: resuming multipart upload %s at %d of %d chunks",
            row.shown,
            row.upload_id,
            len(status.completed_chunks),
            row.total_chunks,
        )
        return session, status.completed_chunks

    def _find(self, row: FileRow, token: str) -> Asset | None:
        """The asset an earlier direct upload with `token` created, if the API has it. (A
        multipart asset found here lost its session's answer: it can never be completed.)"""
        name = api_filename(os.path.basename(row.path))
        for asset in self.client.list_assets(filename=name):
            metadata = asset.user_metadata or {}
            if metadata.get(TOKEN_KEY) == token and asset.method != "multipart":
                return asset
        return None

    def _discard(self, asset_id: str) -> None:
        try:
            self.client.delete(asset_id, force=True)
        except ApiError as error:
            log.warning("could not delete stale asset %s: %s", asset_id, error)


def budget_used(store: Store, config: Config) -> dict[str, float | None]:
    """The media minutes used today and in all, with the budgets, for `status`."""
    budget = config.budget
    if budget.max_media_minutes_per_day is None and budget.max_media_minutes_total is None:
        return {}
    return {
        "today_minutes": round(store.media_minutes(day_start(datetime.now())), 2),
        "per_day_minutes": budget.max_media_minutes_per_day,
        "total_minutes": round(store.media_minutes(0.0), 2),
        "max_total_minutes": budget.max_media_minutes_total,
    }


class BudgetRelease:
    """Files held by a media budget go back to the queue when it may allow them: at local
    midnight (the daily budget), and after a reload (a raised budget); they are checked again
    when claimed."""

    def __init__(
        self, store: Store, run: RunState, *, local_time: Callable[[], datetime] = datetime.now
    ) -> None:
        self.store, self.run, self.local_time = store, run, local_time
        self._day = local_time().date()

    def tick(self, now: float) -> None:
        day = self.local_time().date()
        if day != self._day:
            self._day = day
            self._release("a new day", DAILY)

    def reloaded(self) -> None:
        self._release("the configuration was reloaded", DAILY, TOTAL)

    def _release(self, why: str, *prefixes: str) -> None:
        released = sum(self.store.release_held(prefix) for prefix in prefixes)
        if released:
            log.info("%s: %d file(s) held by a media budget go on", why, released)
            self.run.wake_workers()

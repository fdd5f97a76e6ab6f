"""One ready asset -> one indexed asset per index, exactly once; and assets kept up to date with
their files' metadata.

`Indexer.turn` is one turn of the indexer thread. It takes the next wanted indexing (the intent,
`sending`, is committed first), looks in the index first when an earlier attempt may have reached
it (`GET /assets/{id}/indexed-assets`), and only then sends; the indexed asset's id is stored in
the transaction that leaves `sending`. It follows each indexed asset until `ready` or `failed`,
logging every change; where the folder waits for indexing, its ready indexing makes the move or
delete owed (a chore, in the same transaction).

A 429 holds indexing only (uploads go on); 400/404 end the indexing as failed with the API's code;
a 401 pauses everything, like an upload's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from tlwatch.api import Client, IndexedAsset
from tlwatch.chores import after_upload
from tlwatch.config import Config
from tlwatch.control import INDEXING, PAUSE_KEY, RunState
from tlwatch.errors import (
    ApiError,
    AuthError,
    NotFound,
    OutcomeUnknown,
    RateLimited,
    TransientError,
)
from tlwatch.fit import misfits
from tlwatch.fitter import index_limits
from tlwatch.models import ChoreKind, IndexState, shown
from tlwatch.state import IndexingRow, Store

log = logging.getLogger(__name__)

FIRST_INTERVAL = 2.0  # an indexed asset's first check, seconds after it was sent
MAX_INTERVAL = 30.0
IDLE_WAIT = 15.0  # the longest between two looks at the store (`tlwatch retry`, `tlwatch index`)


class Indexer:
    def __init__(
        self,
        store: Store,
        client: Client,
        config: Callable[[], Config],
        run: RunState,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.client, self.config, self.run = store, client, config, run
        self.clock = clock
        self._schedule: dict[tuple[str, str], tuple[float, float]] = {}  # (asset, index) -> due

    def turn(self) -> None:
        """Send what is wanted, follow what is sent, send newer metadata; then wait."""
        seen = self.run.indexing.seen()
        if self.run.paused() is None and self.run.held(INDEXING) == 0:
            while self.send_next():
                self.run.beats.beat()
        due = self.follow() if self.run.paused() is None else None
        wait = IDLE_WAIT if due is None else min(max(due - self.clock(), 0.05), IDLE_WAIT)
        if self.run.held(INDEXING):
            wait = min(wait, max(self.run.held(INDEXING), 0.05))
        self.run.indexing.wait(seen, wait)

    # ---- sending, exactly once ---------------------------------------------------------------
    def send_next(self) -> bool:
        """Send (or adopt) the next wanted indexing; False when there is none to send now."""
        if self.run.paused() is not None or self.run.held(INDEXING):
            return False
        if not self.store.indexing_due():  # a read: no write transaction while idle
            return False
        row = self.store.claim_indexing()
        if row is None:
            return False
        try:
            if self._skipped(row):
                return True
            if row.attempts > 1:  # an earlier attempt may have reached the index: look first
                found = self.client.indexes_of(row.asset_id).get(row.index_id)
                if found is not None:
                    shown_ = _shown(self.store, row)
                    log.info("%s: found %s in index %s; adopting it", shown_, found, row.index_id)
                    self._sent(row, found)
                    return True
            indexed_id = self.client.create_indexed_asset(
                row.index_id,
                row.asset_id,
                user_metadata=self._metadata(row),
                enable_video_stream=self._stream(row),
            )
        except ApiError as error:
            self._refused(row, error)
            return True
        self._sent(row, indexed_id)
        return True

    def _skipped(self, row: IndexingRow) -> bool:
        """Nothing is sent that the index would refuse: a file outside its models' bounds
        (too short, too long, too large a picture...) ends `skipped`, with the bounds named.
        The index's models are read once (`GET /indexes/{id}`) and kept in the store."""
        if row.file_id is None:
            return False
        bounds = index_limits(self.store, self.client, row.index_id, self.config().fit.overrides)
        file = self.store.get(row.file_id)
        reasons = misfits(file.probe, file.size, bounds)
        if not reasons:
            return False
        reason = "not indexed: " + "; ".join(reasons)
        log.warning("%s: %s", file.shown, reason)
        if self.store.skip_indexing(row.asset_id, row.index_id, reason, self._after(row)):
            self.run.wake_chores()
        return True

    def _sent(self, row: IndexingRow, indexed_id: str) -> None:
        self.store.indexing_sent(row.asset_id, row.index_id, indexed_id)
        self._schedule[(row.asset_id, row.index_id)] = (self.clock() + FIRST_INTERVAL, 2.0)
        log.info("%s: indexing into %s as %s", _shown(self.store, row), row.index_id, indexed_id)

    def _refused(self, row: IndexingRow, error: ApiError) -> None:
        if isinstance(error, AuthError):
            self.run.pause(PAUSE_KEY, "API key rejected")
            self.store.requeue_indexing(
                row.asset_id, row.index_id, "paused: the API key was rejected", at=self.clock()
            )
        elif isinstance(error, TransientError):
            backoff = self.config().daemon.upload_backoff
            wait = error.retry_after
            reason = str(error)
            if isinstance(error, OutcomeUnknown):  # the index may still be storing it
                wait = max(wait or 0.0, self.config().api.timeout_seconds)
                reason += "; looking in the index for it once that request would have ended"
            at = self.clock() + backoff.delay(row.attempts, server_wait=wait)
            self.store.requeue_indexing(row.asset_id, row.index_id, reason, at=at)
            if isinstance(error, RateLimited) and self.run.hold(at, INDEXING):
                log.warning("indexing is rate limited: none sent for %.0f s", at - self.clock())
        else:
            self.store.fail_indexing(row.asset_id, row.index_id, f"refused by the API: {error}")
            log.warning(
                "%s: indexing into %s failed: %s", _shown(self.store, row), row.index_id, error
            )

    def _metadata(self, row: IndexingRow) -> dict[str, Any] | None:
        if row.file_id is None:
            return None
        return self.store.get(row.file_id).user_metadata or None

    def _stream(self, row: IndexingRow) -> bool | None:
        for watch in self.config().watch:
            if watch.index_id == row.index_id and watch.enable_video_stream is not None:
                return watch.enable_video_stream
        return None

    # ---- following -----------------------------------------------------------------------------
    def follow(self) -> float | None:
        """Check each indexed asset that is due, those of one index together (its list, newest
        first, 50 to a page); return when the next is due (None: none)."""
        rows = self.store.indexings(IndexState.INDEXING)
        keys = {(r.asset_id, r.index_id) for r in rows}
        self._schedule = {k: v for k, v in self._schedule.items() if k in keys}
        now = self.clock()
        due: dict[str, list[IndexingRow]] = {}
        for row in rows:
            key = (row.asset_id, row.index_id)
            when, interval = self._schedule.setdefault(key, (now, FIRST_INTERVAL))
            if when <= now + 0.5 and row.indexed_asset_id is not None:
                self._schedule[key] = (now + interval, min(interval * 1.5, MAX_INTERVAL))
                due.setdefault(row.index_id, []).append(row)
        for index_id, batch in due.items():
            self.run.beats.beat()
            if not self._check_index(index_id, batch):
                break
        return min((when for when, _ in self._schedule.values()), default=None)

    def _check_index(self, index_id: str, rows: list[IndexingRow]) -> bool:
        """One index's due indexed assets: listed together when there are several, and any the
        list leaves out retrieved alone. False to stop (paused)."""
        found: dict[str, IndexedAsset] = {}
        if len(rows) > 1:
            wanted = {row.indexed_asset_id for row in rows}
            pages = -(-len(rows) // 50) + 1
            try:
                for item in self.client.list_indexed_assets(index_id, pages=pages):
                    if item.id in wanted:
                        found[item.id] = item
            except AuthError:
                self.run.pause(PAUSE_KEY, "API key rejected")
                return False
            except ApiError as error:
                log.info("cannot list index %s yet: %s", index_id, error)
        for row in rows:
            assert row.indexed_asset_id is not None
            listed = found.get(row.indexed_asset_id)
            if listed is not None:
                self._record(row, listed)
            elif not self._check(row, row.indexed_asset_id):
                return False
        return True

    def _check(self, row: IndexingRow, indexed_id: str) -> bool:
        """Retrieve one indexed asset and record what changed; False to stop (paused)."""
        try:
            found = self.client.retrieve_indexed_asset(row.index_id, indexed_id)
        except AuthError:
            self.run.pause(PAUSE_KEY, "API key rejected")
            return False
        except NotFound:
            reason = f"indexed asset {indexed_id} no longer exists"
            self.store.indexing_status(row.asset_id, row.index_id, "failed", reason)
            return True
        except ApiError as error:
            log.info(
                "%s: cannot check indexed asset %s yet: %s",
                _shown(self.store, row),
                indexed_id,
                error,
            )
            return True
        self._record(row, found)
        return True

    def _record(self, row: IndexingRow, found: IndexedAsset) -> None:
        if found.status == row.status:
            return
        took = self.clock() - (row.sent_at or self.clock())
        log.info(
            "%s: index %s: %s %s → %s after %.0f s",
            _shown(self.store, row),
            row.index_id,
            found.id,
            row.status or "new",
            found.status,
            took,
        )
        said = found.error or ("indexing failed" if found.status == "failed" else None)
        after = self._after(row) if found.status == "ready" else None
        if self.store.indexing_status(row.asset_id, row.index_id, found.status, said, after):
            self.run.wake_chores()

    def _after(self, row: IndexingRow) -> ChoreKind | None:
        """The move or delete owed once this indexing is ready: where the file's folder
        indexes into this index, it waited for it."""
        if row.file_id is None:
            return None
        origin = self.store.origin(self.store.get(row.file_id))  # a part: its original's
        watch = self.config().watch_for(origin.path)
        return after_upload(watch) if watch and watch.index_id == row.index_id else None


def _shown(store: Store, row: IndexingRow) -> str:
    return store.get(row.file_id).shown if row.file_id is not None else shown(row.asset_id)

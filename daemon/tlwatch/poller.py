"""Follows uploaded assets until `ready` or `failed`, logging every status change.

Each asset is checked on its own schedule: soon after upload, then less often (up to every
`MAX_INTERVAL` seconds); the assets due together are fetched 50 to a request (`asset_ids`), so
a thousand pending uploads stay far from the rate limit. Any status other than ready/failed,
known or not, is still pending.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tlwatch.api import Asset, Client
from tlwatch.chores import after_upload
from tlwatch.config import Config
from tlwatch.control import PAUSE_KEY, RunState
from tlwatch.errors import ApiError, AuthError, NotFound, TransientError
from tlwatch.events import AssetReady
from tlwatch.intake import index_for
from tlwatch.models import FileState
from tlwatch.state import FileRow, Store

log = logging.getLogger(__name__)

FIRST_INTERVAL = 1.0
MAX_INTERVAL = 30.0
IDLE_WAIT = 30.0  # the longest the poller waits between turns when nothing is due
MIN_GAP = 0.5  # the shortest time between two turns
BATCH = 50  # assets per list request (the API's largest page)


class Poller:
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
        self._schedule: dict[int, tuple[float, float]] = {}  # file id -> (due, interval)
        self._tell: list[Callable[[], None]] = []  # wake-ups and events owed after COMMIT

    def turn(self) -> None:
        """One turn of the poller thread: check what is due, then wait until the next one is
        (or an upload wakes it). Turns are at least `MIN_GAP` apart: a burst of uploads makes
        one look at the store, not one each."""
        started = self.clock()
        seen = self.run.polls.seen()
        due = None if self.run.paused() else self.poll()
        wait = IDLE_WAIT if due is None else min(max(due - self.clock(), 0.05), IDLE_WAIT)
        self.run.polls.wait(seen, wait)
        self.run.stop.wait(max(started + MIN_GAP - self.clock(), 0.0))

    def key_rejected(self) -> None:
        self.run.pause(PAUSE_KEY, "API key rejected")

    def poll(self) -> float | None:
        """Check every asset that is due, up to 50 per request; return when the next one is due
        (None: none left)."""
        pending = self.store.pending_assets()  # (id, uploaded_at): no whole row per turn
        self._schedule = {
            file_id: self._schedule.get(file_id) or _first(uploaded_at)
            for file_id, uploaded_at in pending
        }
        now = self.clock()
        # Those due within a moment go along: one request rather than one a moment later.
        soon = [i for i, _ in pending if self._schedule[i][0] <= now + FIRST_INTERVAL]
        due = [row for row in self.store.rows(soon) if row.state == FileState.UPLOADED]
        for row in due:
            interval = self._schedule[row.id][1]
            self._schedule[row.id] = (now + interval, min(interval * 1.5, MAX_INTERVAL))
        for start in range(0, len(due), BATCH):
            self.run.beats.beat()  # a sign of life for the watchdog, batch by batch
            if not self._check_batch(due[start : start + BATCH]):
                break
        return min((when for when, _ in self._schedule.values()), default=None)

    def _check_batch(self, rows: list[FileRow]) -> bool:
        """One list request for many assets; any the answer leaves out is retrieved alone.
        False to stop this round (the key was rejected)."""
        found: dict[str, Asset] = {}
        if len(rows) > 1:
            ids = [str(row.asset_id) for row in rows]
            try:
                found = {a.id: a for a in self.client.list_assets(asset_ids=ids, page_limit=BATCH)}
            except AuthError:
                self.key_rejected()
                return False
            except ApiError as error:
                log.info("cannot check %d assets yet: %s", len(rows), error)
                return True
        listed = [(row, found[str(row.asset_id)]) for row in rows if str(row.asset_id) in found]
        self._record_all(listed)
        return all(self._check(row) for row in rows if str(row.asset_id) not in found)

    def _record_all(self, answers: list[tuple[FileRow, Asset]]) -> None:
        """Record what the API said of these assets in one commit, then tell what follows."""
        try:
            with self.store.batch():
                ready = [row.id for row, asset in answers if asset.status == "ready"]
                ended = [row.id for row, asset in answers if asset.status in ("ready", "failed")]
                self.store.lock(ended)  # (one query for the files the batch moves)
                copies = self.store.duplicates_of(ready)  # (and one for their copies)
                for row, asset in answers:
                    self._record(row, asset, copies.get(row.id, []))
        except Exception:
            self._tell = []  # nothing was committed: nothing to tell
            raise
        self._tell_all()

    def _tell_all(self) -> None:
        """Tell what became ready, once it is committed."""
        told, self._tell = self._tell, []
        for tell in told:
            tell()

    def _check(self, row: FileRow) -> bool:
        """Retrieve one asset and record what changed; False to stop this round (paused)."""
        assert row.asset_id is not None
        try:
            asset = self.client.retrieve(row.asset_id)
        except AuthError:
            self.key_rejected()
            return False
        except NotFound:
            gone = f"asset {row.asset_id} no longer exists"
            self.store.fail(row.id, gone, expect=FileState.UPLOADED)
            return True
        except TransientError as error:
            log.info("%s: cannot check asset %s yet: %s", row.shown, row.asset_id, error)
            return True
        except ApiError as error:
            log.warning("%s: checking asset %s: %s", row.shown, row.asset_id, error)
            return True
        self._record_all([(row, asset)])
        return True

    def _record(self, row: FileRow, asset: Asset, copies: list[FileRow]) -> None:
        changed = asset.status != row.asset_status
        if changed:
            took = self.clock() - (row.uploaded_at or self.clock())
            log.info(
                "%s: asset %s %s → %s after %.0f s",
                row.shown,
                asset.id,
                row.asset_status or "new",
                asset.status,
                took,
            )
        if asset.status == "ready":  # (its new status is written with the file's move)
            self._ready(row, copies, (row.asset_status, asset.error) if changed else None)
            return
        if changed:
            self.store.asset_status(row.id, row.asset_status, asset.status, asset.error)
        if asset.status == "failed":
            reason = f"processing failed: {asset.error or 'no reason given'}"
            self.store.fail(row.id, reason, expect=FileState.UPLOADED)

    def _ready(
        self, row: FileRow, copies: list[FileRow], status: tuple[str | None, str | None] | None
    ) -> None:
        config = self.config()
        origin = self.store.origin(row)  # a proxy or segment goes where its original would
        watch = config.watch_for(origin.path)
        index_id = index_for(config, origin)
        wanted = [(index_id, row.id)] if index_id else []
        wanted += [
            (other, dup.id) for dup in copies if (other := index_for(config, dup)) is not None
        ]
        # A move or delete is owed now, or (where the folder indexes) once indexed.
        after = after_upload(watch) if not index_id else None
        if not self.store.mark_ready(row.id, wanted, after, status=status):
            return  # the file changed meanwhile and is on its way again
        took = self.clock() - (row.uploaded_at or self.clock())
        self._tell.append(lambda: self.run.publish(AssetReady(took)))
        if wanted:
            self._tell.append(self.run.wake_indexer)
        if after is not None:
            self._tell.append(self.run.wake_chores)


def _first(uploaded_at: float | None) -> tuple[float, float]:
    """A new asset's first check: a moment after its upload, with those uploaded beside it."""
    return ((uploaded_at or 0.0) + FIRST_INTERVAL, FIRST_INTERVAL)

"""The state store: a package with an engine seam.

`engine.py` holds the connection, transactions, migrations (`schema.py`) and the lock, and is the
only module that imports sqlite3; one module per table family builds on it, each with its own
table of legal moves: `files.py` (`JOURNEY`, `VERSIONS`), `chores.py` (`CHORE_LEGAL`),
`indexings.py` (`INDEX_LEGAL`). `Store` adds what spans the families: a file ready (with the
indexings and the chore it makes owed), retries, recovery after a crash, the watched folders.
SQL lives in this package and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable

from tlwatch.models import ChoreKind, ChoreState, FileState, IndexState
from tlwatch.state.chores import CHORE_LEGAL, ChoreRow
from tlwatch.state.files import _FRESH_UPLOAD, JOURNEY, LEGAL, VERSIONS, FileRow
from tlwatch.state.hosts import HostRow, Hosts
from tlwatch.state.indexings import INDEX_LEGAL, IndexingRow
from tlwatch.state.parts import FoundPart, NewPart
from tlwatch.state.schema import MIGRATIONS

__all__ = [
    "CHORE_LEGAL",
    "INDEX_LEGAL",
    "JOURNEY",
    "LEGAL",
    "MIGRATIONS",
    "VERSIONS",
    "ChoreRow",
    "FileRow",
    "FoundPart",
    "HostRow",
    "IndexingRow",
    "NewPart",
    "Store",
]


class Store(Hosts):
    """The store. Thread-safe (one connection behind a lock); a context manager."""

    def mark_ready(
        self,
        file_id: int,
        indexes: Iterable[tuple[str, int]] = (),
        after: ChoreKind | None = None,
        *,
        status: tuple[str | None, str | None] | None = None,
    ) -> bool:
        """The asset is ready; False when the file had moved on (changed, on its way again).
        `indexes`: (index id, file id) pairs its asset is to be indexed into, wanted in the
        same transaction (each pair once, ever); `after`: the move or delete now owed;
        `status`: the asset's status until now and what the API said, where it was not
        `ready` (recorded with the move, as `asset_status` would)."""
        with self.batch():
            with self._transaction() as db:
                row = self._file_in(db, file_id)
                if row.state == FileState.UPLOADED:
                    ready = {"asset_status": "ready"} if status is not None else {}
                    if status is not None:
                        self._event(db, file_id, "asset", status[0], "ready", status[1])
                    row = self._change(db, row, FileState.READY, ready, None)
            if row.state == FileState.READY and row.asset_id:
                for index_id, asker in indexes:
                    self.want_index(row.asset_id, index_id, asker)
                if row.parent_id is not None:  # a proxy or segment: `after` is its original's
                    with self._transaction() as db:
                        self._part_ready(db, row, after)
                elif after is not None:
                    with self._transaction() as db:
                        self._want_chore(db, row, after)
        return row.state == FileState.READY

    def retriable(self) -> list[int]:
        """The files with something failed: their upload, an indexing, or a chore."""
        rows = self._query(
            "SELECT id FROM files WHERE state = ? "
            "UNION SELECT f.id FROM files f JOIN indexings i ON i.asset_id = f.asset_id "
            "AND i.file_id = f.id WHERE i.state = ? "
            "UNION SELECT file_id FROM chores WHERE state = ? ORDER BY 1",
            (FileState.FAILED, IndexState.FAILED, ChoreState.FAILED),
        )
        return [int(r[0]) for r in rows]

    def retry(self, file_ids: Iterable[int]) -> list[FileRow]:
        """Put failed or skipped files back in the queue, now, with fresh upload fields; and
        their failed indexings and chores. Each file is counted once."""
        moved: dict[int, FileRow] = {}
        for file_id in dict.fromkeys(file_ids):
            row = self.get(file_id)
            if self._retry_after_upload(row):
                moved[file_id] = row
            if row.state == FileState.FAILED and row.sha256 is None:
                with self._transaction() as db:  # never read: read it again when next seen
                    self._set(db, file_id, {"size": -1, "reason": "to be read again"})
                moved[file_id] = self.get(file_id)
            elif row.state in (FileState.FAILED, FileState.SKIPPED):
                self.forget_session(file_id)
                moved[file_id] = self._move(
                    file_id, FileState.QUEUED, "retry asked for", _FRESH_UPLOAD
                )
        return list(moved.values())

    def _retry_after_upload(self, row: FileRow) -> bool:
        """Failed indexings and chores of this file back in the queue; True if any."""
        found = False
        for indexing in self.indexings_of(row.asset_id or ""):
            if indexing.state == IndexState.FAILED:
                self.requeue_indexing(
                    indexing.asset_id, indexing.index_id, "retry asked for", at=0.0, attempts=0
                )
                found = True
        for chore in self.chores_of(row.id):
            # A failed proxy is not tried again as it was: the file itself is judged anew.
            if chore.state == ChoreState.FAILED and chore.kind != ChoreKind.PROXY:
                self.requeue_chore(chore, "retry asked for", at=0.0, attempts=0)
                found = True
        return found

    # ---- a pause asked for by the user (`tlwatch pause`, the page) ------------------------
    def paused_by_user(self) -> str | None:
        """Why this host's daemon was paused by hand, or None: kept until resumed, through
        restarts."""
        found = self._query("SELECT value FROM flags WHERE name = ?", (self._pause_flag,))
        return str(found[0][0]) if found else None

    def pause_by_user(self, reason: str | None) -> None:
        """Pause this host's daemon for `reason`; None resumes it."""
        with self._transaction() as db:
            if reason is None:
                db.execute("DELETE FROM flags WHERE name = ?", (self._pause_flag,))
            else:
                db.execute(
                    "INSERT INTO flags (name, value) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (self._pause_flag, reason),
                )

    @property
    def _pause_flag(self) -> str:
        return f"paused {self.host}"  # (a fleet's hosts share the table: each its own)

    def recover(self, grace: float, keep: Iterable[int] = ()) -> None:
        """Uploads cut off (by a crash, or a store that could not record their end) go back to
        the queue, but those in `keep` (still in flight). Not at once: a request we sent may
        still be finishing on the server, so its look-up waits out `grace` seconds."""
        keep = frozenset(keep)
        for row in self.in_state(FileState.UPLOADING):
            if row.id in keep or row.lease_host not in (None, self.host):  # (another host's)
                continue
            values = {
                "attempts": max(row.attempts - 1, 0),
                "next_attempt_at": max(self.clock(), row.updated_at + grace),
            }
            reason = "interrupted; will look for it on the server before sending it again"
            self._move(row.id, FileState.QUEUED, reason, values, expect=FileState.UPLOADING)
        for indexing in self.indexings(IndexState.SENDING):
            if indexing.lease_host not in (None, self.host):
                continue
            at = max(self.clock(), indexing.updated_at + grace)
            reason = "interrupted; will look for it in the index before sending it again"
            self.requeue_indexing(indexing.asset_id, indexing.index_id, reason, at=at)
        for chore in self.chores(ChoreState.DOING):
            if chore.lease_host not in (None, self.host):
                continue
            self.requeue_chore(chore, "interrupted; its guard is checked again", at=self.clock())

    # ---- watched folders -----------------------------------------------------------------
    def set_folder(self, path: bytes, online: bool, reason: str | None) -> None:
        """Record whether a watched folder is online (for `tlwatch status`)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO folders (path, online, reason, since) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (path) DO UPDATE SET online = excluded.online, "
                "reason = excluded.reason, since = excluded.since",
                (self._places.key(path), int(online), reason, self.clock()),
            )

    def folders(self) -> dict[bytes, tuple[bool, str | None, float]]:
        """Each watched folder's last recorded (online, reason, since)."""
        rows = self._query("SELECT path, online, reason, since FROM folders")
        local = self._places.local
        return {local(path): (bool(online), reason, since) for path, online, reason, since in rows}

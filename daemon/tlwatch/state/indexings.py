"""Indexings: one row per (asset, index), indexed exactly once; the move or delete a folder owes
once its file is indexed is wanted in the transaction that says so. Legal moves in `INDEX_LEGAL`."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from tlwatch.errors import LeaseLost, StoreError
from tlwatch.models import ChoreKind, FileState, IndexState
from tlwatch.state.chores import Chores
from tlwatch.state.engine import Connection
from tlwatch.state.files import _LOCK


@dataclass(frozen=True)
class IndexingRow:
    """The indexing of one asset into one index (exactly once per pair)."""

    asset_id: str
    index_id: str
    file_id: int | None
    state: IndexState
    indexed_asset_id: str | None
    status: str | None
    reason: str | None
    attempts: int
    next_attempt_at: float | None
    created_at: float
    updated_at: float
    sent_at: float | None
    lease_host: str | None = None  # the host that claimed it last


# The queued indexing to send next: new ones (no time set) first, in the order they came, then
# the one whose retry is due soonest; read in the indexings_state index's order (no sort).
_DUE_SQL = (
    "SELECT {columns} FROM indexings i{join} WHERE i.state = ?{mine} "
    "ORDER BY i.next_attempt_at NULLS FIRST, i.rowid LIMIT 1"
)

_INDEXING_NAMES = [f.name for f in fields(IndexingRow)]
_INDEXING_COLUMNS = ", ".join(_INDEXING_NAMES)
_INDEXING_SQL = f"SELECT {_INDEXING_COLUMNS} FROM indexings WHERE asset_id = ? AND index_id = ?"


def _indexing(values: tuple[Any, ...]) -> IndexingRow:
    row = IndexingRow(*values)
    return IndexingRow(**{**row.__dict__, "state": IndexState(row.state)})


class Indexings(Chores):
    """The indexings table."""

    # ---- indexing ------------------------------------------------------------------------
    def want_index(self, asset_id: str, index_id: str, file_id: int) -> bool:
        """Index `asset_id` into `index_id` (for `file_id`), unless that pair is known: True
        when it is new."""
        now = self.clock()
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO indexings (asset_id, index_id, file_id, state, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING 1",
                (asset_id, index_id, file_id, IndexState.QUEUED, now, now),
            )
            return cursor.fetchone() is not None

    def indexing_due(self) -> bool:
        """Is a queued indexing due now? (One index entry read.)"""
        sql, values = self._due_indexing("COALESCE(i.next_attempt_at, 0)")
        rows = self._query(sql, (IndexState.QUEUED, *values))
        return bool(rows) and rows[0][0] <= self.clock()

    def _due_indexing(self, columns: str) -> tuple[str, tuple[Any, ...]]:
        """The SQL (and its values) of the indexing to send next: in a fleet, one of a file this
        host can read (what is owed after it, a move or a delete, is its folder's)."""
        mine, values = self._places.mine("f.root")
        if not mine:
            return _DUE_SQL.format(columns=columns, join="", mine=""), ()
        join = " LEFT JOIN files f ON f.id = i.file_id"
        mine = f" AND (f.id IS NULL OR {mine})"
        return _DUE_SQL.format(columns=columns, join=join, mine=mine), values

    def claim_indexing(self) -> IndexingRow | None:
        """Take the first queued indexing that is due: it becomes `sending`, attempts + 1.
        Durable: this is the intent."""
        with self._transaction(durable=True) as db:
            columns = ", ".join(f"i.{name}" for name in _INDEXING_NAMES)
            sql, values = self._due_indexing(columns)
            found = db.execute(sql + " FOR UPDATE OF i SKIP LOCKED", (IndexState.QUEUED, *values))
            found = found.fetchone()
            row = _indexing(found) if found is not None else None
            if row is None or (row.next_attempt_at or 0) > self.clock():
                return None  # the soonest is not due yet
            taken = {"attempts": row.attempts + 1, "lease_host": self.host}
            self._index_change(db, row, IndexState.SENDING, taken, None)
        return self.indexing(row.asset_id, row.index_id)

    def indexing_sent(self, asset_id: str, index_id: str, indexed_asset_id: str) -> None:
        """The index holds `indexed_asset_id` for it: durable at once, like an asset id."""
        values = {"indexed_asset_id": indexed_asset_id, "sent_at": self.clock(), "status": None}
        with self._transaction(durable=True) as db:
            row = self._indexing_in(db, asset_id, index_id)
            self._index_change(db, row, IndexState.INDEXING, values, None)

    def indexing_status(
        self,
        asset_id: str,
        index_id: str,
        status: str,
        reason: str | None,
        after: ChoreKind | None = None,
    ) -> bool:
        """The indexed asset's status now; `ready` and `failed` end the indexing. `after`: the
        move or delete owed once it is ready, wanted in the same transaction, only while the
        file is still the version whose asset was indexed. True when that chore was wanted."""
        state = {"ready": IndexState.READY, "failed": IndexState.FAILED}.get(status)
        with self._transaction() as db:
            row = self._indexing_in(db, asset_id, index_id)
            values = {"status": status}
            self._index_change(db, row, state or row.state, values, reason)
            return state == IndexState.READY and self._indexing_over(db, row, after)

    def skip_indexing(
        self, asset_id: str, index_id: str, reason: str, after: ChoreKind | None = None
    ) -> bool:
        """Not sent after all: the index would refuse the file (`reason` names the bound). Its
        asset is ready, so the move or delete owed (`after`) is wanted now, as for `ready`."""
        with self._transaction() as db:
            row = self._indexing_in(db, asset_id, index_id)
            self._index_change(db, row, IndexState.SKIPPED, {}, reason)
            return self._indexing_over(db, row, after)

    def _indexing_over(self, db: Connection, row: IndexingRow, after: ChoreKind | None) -> bool:
        """Want the chore `after` an indexing's end, only while the file is still the version
        whose asset was indexed. True when it was wanted."""
        if after is None or row.file_id is None:
            return False
        file = self._file_in(db, row.file_id)
        if file.state != FileState.READY or file.asset_id != row.asset_id:
            return False  # a newer version of the file is on its way: it stays
        self._want_chore(db, file, after)
        return True

    def index_models(self, index_id: str) -> list[str] | None:
        """The model names of this index, as last read from the API (None: never read)."""
        rows = self._query("SELECT models FROM index_models WHERE index_id = ?", (index_id,))
        return [str(name) for name in json.loads(rows[0][0])] if rows else None

    def keep_index_models(self, index_id: str, models: list[str]) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO index_models (index_id, models, read_at) VALUES (?, ?, ?) "
                "ON CONFLICT (index_id) DO UPDATE SET models = excluded.models, "
                "read_at = excluded.read_at",
                (index_id, json.dumps(models), self.clock()),
            )

    def requeue_indexing(
        self, asset_id: str, index_id: str, reason: str, *, at: float, attempts: int | None = None
    ) -> None:
        values: dict[str, Any] = {"next_attempt_at": at}
        if attempts is not None:
            values["attempts"] = attempts
        with self._transaction() as db:
            row = self._indexing_in(db, asset_id, index_id)
            self._index_change(db, row, IndexState.QUEUED, values, reason)

    def fail_indexing(self, asset_id: str, index_id: str, reason: str) -> None:
        with self._transaction() as db:
            row = self._indexing_in(db, asset_id, index_id)
            self._index_change(db, row, IndexState.FAILED, {}, reason)

    def indexing(self, asset_id: str, index_id: str) -> IndexingRow:
        found = self._query(_INDEXING_SQL, (asset_id, index_id))
        if not found:
            raise StoreError(f"no indexing of asset {asset_id} into index {index_id}")
        return _indexing(found[0])

    def indexings(self, *states: IndexState) -> list[IndexingRow]:
        marks = ", ".join("?" * len(states))
        rows = self._query(
            f"SELECT {_INDEXING_COLUMNS} FROM indexings WHERE state IN ({marks}) "
            "ORDER BY created_at",
            states,
        )
        return [_indexing(r) for r in rows]

    def indexings_of(self, asset_id: str) -> list[IndexingRow]:
        rows = self._query(
            f"SELECT {_INDEXING_COLUMNS} FROM indexings WHERE asset_id = ? ORDER BY created_at",
            (asset_id,),
        )
        return [_indexing(r) for r in rows]

    def indexings_of_assets(self, asset_ids: Iterable[str]) -> dict[str, list[IndexingRow]]:
        """The indexings of each of these assets (those with any), in the order they came."""
        wanted = sorted(set(asset_ids))
        if not wanted:
            return {}
        marks = ", ".join("?" * len(wanted))
        rows = self._query(
            f"SELECT {_INDEXING_COLUMNS} FROM indexings WHERE asset_id IN ({marks}) "
            "ORDER BY created_at",
            wanted,
        )
        found: dict[str, list[IndexingRow]] = {}
        for row in map(_indexing, rows):
            found.setdefault(row.asset_id, []).append(row)
        return found

    def indexing_counts(self) -> dict[str, int]:
        """How many indexings are in each state (one grouped read)."""
        rows = self._query("SELECT state, COUNT(*) FROM indexings GROUP BY state")
        return {str(state): int(count) for state, count in rows}

    def all_indexings(self) -> list[IndexingRow]:
        rows = self._query(f"SELECT {_INDEXING_COLUMNS} FROM indexings ORDER BY created_at")
        return [_indexing(r) for r in rows]

    def _indexing_in(self, db: Connection, asset_id: str, index_id: str) -> IndexingRow:
        found = db.execute(_INDEXING_SQL + _LOCK, (asset_id, index_id)).fetchone()
        if found is None:
            raise StoreError(f"no indexing of asset {asset_id} into index {index_id}")
        return _indexing(found)

    def _index_change(
        self,
        db: Connection,
        row: IndexingRow,
        state: IndexState,
        values: dict[str, Any],
        reason: str | None,
        *,
        fence: bool = True,
    ) -> None:
        """Move an indexing to `state`. One this host is sending is written only while its claim
        holds (`fence`; callers read `row` in this transaction, `FOR UPDATE`)."""
        if (row.state, state) not in INDEX_LEGAL:
            raise StoreError(f"illegal indexing transition {row.state} → {state}")
        if fence and row.state == IndexState.SENDING and row.lease_host not in (None, self.host):
            raise LeaseLost(f"indexing of {row.asset_id}: another host took it over")
        values = {**values, "state": state, "reason": reason, "updated_at": self.clock()}
        assignments = ", ".join(f"{name} = ?" for name in values)
        db.execute(
            f"UPDATE indexings SET {assignments} WHERE asset_id = ? AND index_id = ?",
            (*values.values(), row.asset_id, row.index_id),
        )
        if row.file_id is not None and state != row.state:
            detail = f"index {row.index_id}" + (f": {reason}" if reason else "")
            self._event(db, row.file_id, "index", row.state, state, detail)


INDEX_LEGAL = frozenset(
    {
        (IndexState.QUEUED, IndexState.SENDING),
        (IndexState.SENDING, IndexState.QUEUED),
        (IndexState.SENDING, IndexState.INDEXING),
        (IndexState.SENDING, IndexState.FAILED),
        (IndexState.SENDING, IndexState.SKIPPED),
        (IndexState.INDEXING, IndexState.INDEXING),
        (IndexState.INDEXING, IndexState.READY),
        (IndexState.INDEXING, IndexState.FAILED),
        (IndexState.FAILED, IndexState.QUEUED),
    }
)

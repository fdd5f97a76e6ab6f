"""Chores: what is owed to a file after its upload (a move, a delete, a metadata update), one
row each, made for one version of the file (its asset and signature) and claimed by the chores
worker (`tlwatch.chores`). Legal moves in `CHORE_LEGAL`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from tlwatch.errors import LeaseLost, StoreError
from tlwatch.models import ChoreKind, ChoreState, Signature, shown
from tlwatch.state.engine import Connection
from tlwatch.state.files import FileRow, Files, _json, _signature


@dataclass(frozen=True)
class ChoreRow:
    """One obligation after the upload, made for one version of a file (its asset and
    signature): done only while the file is still that version."""

    id: int
    file_id: int
    kind: ChoreKind
    state: ChoreState
    asset_id: str
    size: int
    mtime_ns: int
    inode: int
    detail: str | None  # metadata: the JSON to send
    target: bytes | None  # move: the free name chosen, kept before the move starts
    reason: str | None
    attempts: int
    next_attempt_at: float | None
    created_at: float
    updated_at: float
    lease_host: str | None = None  # the host that claimed it last

    @property
    def signature(self) -> Signature:
        return Signature(self.size, self.mtime_ns, self.inode)


_CHORE_COLUMNS = ", ".join(f.name for f in fields(ChoreRow))


# A chore is taken as its file is: the chore's row is held, another host's passed over.
_TAKE_CHORE = " FOR UPDATE OF c SKIP LOCKED"


class Chores(Files):
    """The chores table."""

    def want_metadata(self, file_id: int, metadata: Mapping[str, Any]) -> None:
        """Newer user metadata for a file already sent, or being sent: its asset is to be
        updated (a chore, replacing any earlier update not yet sent). While a direct upload is
        in flight, its asset id is not known yet: the chore gets it with `mark_uploaded`."""
        with self._transaction() as db:
            row = self._file_in(db, file_id)
            self._want_chore(db, row, ChoreKind.METADATA, detail=_json(metadata))

    def _new_version(self, db: Connection, file_id: int) -> None:
        """A new version of the file: what was owed to the old one is not owed any more (the new
        one is sent with the metadata of now)."""
        db.execute(
            "UPDATE chores SET state = ?, reason = ?, updated_at = ? WHERE file_id = ? "
            "AND state IN (?, ?)",
            (ChoreState.DROPPED, "a new version of the file", self.clock(), file_id, *_OPEN_CHORE),
        )

    def _uploaded(self, db: Connection, file_id: int, asset_id: str) -> None:
        """The upload in flight made `asset_id`: updates wanted meanwhile are for it."""
        db.execute(
            "UPDATE chores SET asset_id = ? WHERE file_id = ? AND asset_id = '' AND state = ?",
            (asset_id, file_id, ChoreState.QUEUED),
        )

    def _chore(self, values: tuple[Any, ...]) -> ChoreRow:
        row = ChoreRow(*values)
        target = self._places.local(row.target) if row.target is not None else None
        return replace(row, kind=ChoreKind(row.kind), state=ChoreState(row.state), target=target)

    # ---- chores: what is owed after the upload ---------------------------------------------------
    def _want_chore(
        self, db: Connection, row: FileRow, kind: ChoreKind, detail: str | None = None
    ) -> None:
        """Owe `kind` for this version of the file (its asset and signature). A newer metadata
        update replaces one not yet sent."""
        now = self.clock()
        if kind == ChoreKind.METADATA:
            db.execute(
                "UPDATE chores SET state = ?, reason = ?, updated_at = ? WHERE file_id = ? "
                "AND kind = ? AND state IN (?, ?)",
                (ChoreState.DROPPED, "superseded", now, row.id, kind, *_OPEN_CHORE),
            )
        db.execute(
            "INSERT INTO chores (file_id, kind, state, asset_id, size, mtime_ns, inode, detail, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.id,
                kind,
                ChoreState.QUEUED,
                row.asset_id or "",  # "": the upload in flight's, once it is known
                *_signature(row.signature).values(),
                detail,
                now,
                now,
            ),
        )
        self._event(db, row.id, "chore", None, kind, None)

    def chores(self, *states: ChoreState) -> list[ChoreRow]:
        marks = ", ".join("?" * len(states))
        rows = self._query(
            f"SELECT {_CHORE_COLUMNS} FROM chores WHERE state IN ({marks}) ORDER BY id", states
        )
        return [self._chore(r) for r in rows]

    def chore_counts(self) -> dict[str, int]:
        """How many chores are in each state (one grouped read)."""
        rows = self._query("SELECT state, COUNT(*) FROM chores GROUP BY state")
        return {str(state): int(count) for state, count in rows}

    def all_chores(self) -> list[ChoreRow]:
        return [
            self._chore(r) for r in self._query(f"SELECT {_CHORE_COLUMNS} FROM chores ORDER BY id")
        ]

    def chores_of(self, file_id: int) -> list[ChoreRow]:
        rows = self._query(
            f"SELECT {_CHORE_COLUMNS} FROM chores WHERE file_id = ? ORDER BY id", (file_id,)
        )
        return [self._chore(r) for r in rows]

    def chore(self, chore_id: int) -> ChoreRow:
        rows = self._query(f"SELECT {_CHORE_COLUMNS} FROM chores WHERE id = ?", (chore_id,))
        if not rows:
            raise StoreError(f"no chore #{chore_id} in the store")
        return self._chore(rows[0])

    def _due_chores_sql(self, what: str, where: str, kinds: tuple[str, ...]) -> str:
        """The queued chore to do next, soonest due first (new ones have no time), in the order
        of the chores_state index: one entry read, however many are queued."""
        return (
            f"SELECT {what} FROM chores c JOIN files f ON f.id = c.file_id WHERE c.state = ? "
            f"AND c.kind IN ({', '.join('?' * len(kinds))}){where} "
            "ORDER BY c.next_attempt_at NULLS FIRST, c.id LIMIT 1"
        )

    def next_chore_due(
        self, skip_roots: Iterable[bytes], kinds: Iterable[ChoreKind]
    ) -> float | None:
        """When the next queued chore of `kinds` outside `skip_roots` is due (None: none)."""
        (where, values), wanted = self._due_where(skip_roots, "f.root"), tuple(kinds)
        sql = self._due_chores_sql("COALESCE(c.next_attempt_at, 0)", where, wanted)
        rows = self._query(sql, (ChoreState.QUEUED, *wanted, *values))
        return float(rows[0][0]) if rows else None

    def claim_chore(
        self, skip_roots: Iterable[bytes], kinds: Iterable[ChoreKind]
    ) -> ChoreRow | None:
        """Take the first due chore of `kinds` whose folder is not in `skip_roots`: `doing`.
        Durable: a delete or move acts on the disk next, so what the store says of the file
        (its asset ready, the chore owed) must be on disk before it, whatever comes."""
        (where, values), wanted = self._due_where(skip_roots, "f.root"), tuple(kinds)
        columns = ", ".join(f"c.{f.name}" for f in fields(ChoreRow))
        sql = self._due_chores_sql(columns, where, wanted) + _TAKE_CHORE
        with self._transaction(durable=True) as db:
            found = db.execute(sql, (ChoreState.QUEUED, *wanted, *values)).fetchone()
            chore = self._chore(found) if found is not None else None
            if chore is None or (chore.next_attempt_at or 0) > self.clock():
                return None  # the soonest is not due yet
            taken = {"attempts": chore.attempts + 1, "lease_host": self.host}
            self._chore_change(db, chore, ChoreState.DOING, taken)
        return self.chore(chore.id)

    def target_taken(self, target: bytes) -> bool:
        """Is `target` the name a move still owed has chosen?"""
        rows = self._query(
            "SELECT 1 FROM chores WHERE target = ? AND state IN (?, ?) LIMIT 1",
            (self._places.key(target), ChoreState.QUEUED, ChoreState.DOING),
        )
        return bool(rows)

    def chore_target(self, chore: ChoreRow, target: bytes) -> ChoreRow:
        """The free name a move goes to, kept (durably) before the move starts: a move cut off
        by a crash finishes under the same name."""
        with self._transaction(durable=True) as db:
            db.execute(
                "UPDATE chores SET target = ? WHERE id = ?", (self._places.key(target), chore.id)
            )
        return self.chore(chore.id)

    def moved(self, chore: ChoreRow, path: bytes, root: bytes) -> None:
        """The file was moved (after upload, as configured): it lives at `path` now."""
        with self._transaction() as db:
            self._chore_change(db, chore, ChoreState.DONE, {})
            values = {"path": path, "root": root, "dir": os.path.dirname(path)}
            self._set(db, chore.file_id, {**values, "reason": f"moved to {shown(path)}"})
            self._event(db, chore.file_id, "chore", chore.kind, ChoreState.DONE, shown(path))

    def deleted(self, chore: ChoreRow) -> None:
        with self._transaction() as db:
            self._chore_change(db, chore, ChoreState.DONE, {})
            self._set(db, chore.file_id, {"reason": "deleted after upload, as configured"})
            self._event(db, chore.file_id, "chore", chore.kind, ChoreState.DONE, None)

    def metadata_sent(self, chore: ChoreRow) -> None:
        """The asset (and its indexed assets) now carry the chore's metadata."""
        with self._transaction() as db:
            self._chore_change(db, chore, ChoreState.DONE, {})
            self._set(db, chore.file_id, {"metadata": chore.detail})

    def drop_chore(self, chore: ChoreRow, reason: str) -> None:
        """Not owed any more: the file is not the version the chore was made for."""
        with self._transaction() as db:
            self._chore_change(db, chore, ChoreState.DROPPED, {}, reason)
            self._event(db, chore.file_id, "chore", chore.kind, ChoreState.DROPPED, reason)

    def fail_chore(self, chore: ChoreRow, reason: str) -> None:
        with self._transaction() as db:
            self._chore_change(db, chore, ChoreState.FAILED, {}, reason)
            self._event(db, chore.file_id, "chore", chore.kind, ChoreState.FAILED, reason)

    def requeue_chore(
        self, chore: ChoreRow, reason: str, *, at: float, attempts: int | None = None
    ) -> None:
        values: dict[str, Any] = {"next_attempt_at": at}
        if attempts is not None:
            values["attempts"] = attempts
        with self._transaction() as db:
            now = self._chore(
                db.execute(
                    f"SELECT {_CHORE_COLUMNS} FROM chores WHERE id = ? FOR UPDATE", (chore.id,)
                ).fetchone()
            )
            self._chore_change(db, now, ChoreState.QUEUED, values, reason)

    def _chore_change(
        self,
        db: Connection,
        chore: ChoreRow,
        state: ChoreState,
        values: dict[str, Any],
        reason: str | None = None,
        *,
        fence: bool = True,
    ) -> None:
        """Move a chore to `state`. One this host is doing is written only while its claim
        holds (`fence`: another host may have taken it over, this host being silent)."""
        if (chore.state, state) not in CHORE_LEGAL:
            raise StoreError(f"illegal chore transition {chore.state} → {state}")
        if fence and chore.state == ChoreState.DOING:
            found = db.execute(
                "SELECT state, lease_host FROM chores WHERE id = ? FOR UPDATE", (chore.id,)
            ).fetchone()
            if found is None or found[0] != ChoreState.DOING or found[1] not in (None, self.host):
                raise LeaseLost(f"chore #{chore.id}: another host took it over")
        values = {**values, "state": state, "reason": reason, "updated_at": self.clock()}
        assignments = ", ".join(f"{name} = ?" for name in values)
        db.execute(f"UPDATE chores SET {assignments} WHERE id = ?", (*values.values(), chore.id))


CHORE_LEGAL = frozenset(
    {
        (ChoreState.QUEUED, ChoreState.DOING),
        (ChoreState.QUEUED, ChoreState.DROPPED),  # superseded by a newer metadata update
        (ChoreState.DOING, ChoreState.QUEUED),
        (ChoreState.DOING, ChoreState.DONE),
        (ChoreState.DOING, ChoreState.DROPPED),
        (ChoreState.DOING, ChoreState.FAILED),
        (ChoreState.FAILED, ChoreState.QUEUED),
        (ChoreState.FAILED, ChoreState.DROPPED),
    }
)


_OPEN_CHORE = (ChoreState.QUEUED, ChoreState.FAILED)

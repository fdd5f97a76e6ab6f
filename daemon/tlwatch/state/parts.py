"""Originals the platform cannot take as they are, and the parts that go instead: a proxy, or
segments. A part is a file row of its own (in the spool, `parent_id` naming its original), so it
is uploaded, followed and indexed like any file. The original is `fitting` from its verdict until
every part's asset is ready; its move or delete after upload is owed only once every part is
ready (and indexed, where its folder indexes). A part's spool copy is deleted once its asset is
ready (a chore, like any delete)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tlwatch.errors import StoreError
from tlwatch.models import ChoreKind, ChoreState, FileState, IndexState, Media, Signature
from tlwatch.state.chores import ChoreRow
from tlwatch.state.engine import Connection
from tlwatch.state.files import _COLUMNS, FileRow
from tlwatch.state.indexings import IndexingRow, Indexings

_OVER = (IndexState.READY, IndexState.SKIPPED)
_SENT = (FileState.UPLOADING, FileState.UPLOADED, FileState.READY)


@dataclass(frozen=True)
class NewPart:
    """A part just made in the spool, to be queued."""

    path: bytes
    signature: Signature
    media: Media
    metadata: dict[str, Any]
    part: int
    parts: int
    offset_seconds: float


@dataclass(frozen=True)
class FoundPart:
    """A part the server already holds (found by a rebuilt store)."""

    asset_id: str
    status: str
    part: int
    parts: int
    offset_seconds: float


class Parts(Indexings):
    def fit(self, file_id: int, plan: str, reason: str) -> FileRow:
        """A claimed file that the platform would refuse as it is: `reason` says why, `plan`
        (JSON) what is made instead. Durable: the chore that makes it is owed from now on."""
        with self._transaction(durable=True) as db:
            row = self._file_in(db, file_id)
            self._want_chore(db, row, ChoreKind.PROXY, detail=plan)
            return self._change(db, row, FileState.FITTING, {"next_attempt_at": None}, reason)

    def fit_found(self, file_id: int, reason: str, spool: bytes, found: list[FoundPart]) -> FileRow:
        """A rebuilt store: what the original's parts would be is on the server already. They
        are adopted (followed from `uploaded`), nothing made or sent again, in one durable
        transaction."""
        with self.batch(durable=True):
            with self._transaction() as db:
                row = self._change(db, self._file_in(db, file_id), FileState.FITTING, {}, reason)
            for part in found:
                path = os.path.join(spool, f"{row.sha256}-{part.asset_id}.found".encode())
                adopted = self.adopt(
                    path,
                    spool,
                    Signature(0, 0, 0),
                    None,
                    part.asset_id,
                    part.status,
                    f"found on the server as asset {part.asset_id}",
                )
                with self._transaction() as db:
                    self._link(db, adopted.id, file_id, part.part, part.parts, part.offset_seconds)
        return row

    def add_parts(self, chore: ChoreRow, spool: bytes, parts: list[NewPart]) -> list[FileRow]:
        """The parts are made: each is queued as a file of its own, in the transaction that
        ends the chore (a crash before it leaves the chore to do again, not a part twice)."""
        with self.batch():
            current = self.chore(chore.id)
            file = self.get(chore.file_id)
            if current.state != ChoreState.DOING or file.state != FileState.FITTING:
                return []  # dropped meanwhile (a new version): its parts are not owed
            if any(self.by_path(part.path) is not None for part in parts):
                raise StoreError("a part's name is taken in the store")
            rows = [
                self.enqueue(part.path, spool, part.signature, part.media, part.metadata)
                for part in parts
            ]
            with self._transaction() as db:
                for row, new in zip(rows, parts, strict=True):
                    self._link(db, row.id, chore.file_id, new.part, new.parts, new.offset_seconds)
                self._chore_change(db, chore, ChoreState.DONE, {})
                self._event(db, chore.file_id, "chore", chore.kind, ChoreState.DONE, None)
        return [self.get(row.id) for row in rows]

    def _link(
        self, db: Connection, part_id: int, parent_id: int, part: int, parts: int, offset: float
    ) -> None:
        """This file is part `part` of `parts` of that original, from `offset` seconds."""
        values = {"parent_id": parent_id, "part": part, "parts": parts, "offset_seconds": offset}
        self._set(db, part_id, values)

    def fit_failed(self, chore: ChoreRow, reason: str) -> None:
        """Its proxy could not be made (ffmpeg's own words in `reason`): the file is failed
        (`tlwatch retry` judges it again)."""
        with self._transaction() as db:
            self._chore_change(db, chore, ChoreState.FAILED, {}, reason)
            file = self._file_in(db, chore.file_id)
            if file.state == FileState.FITTING:
                self._change(db, file, FileState.FAILED, {}, f"cannot make its proxy: {reason}")

    def want_metadata(self, file_id: int, metadata: Mapping[str, Any]) -> None:
        """Newer user metadata for an original sent as parts goes to each part (its own
        tlwatch_ keys kept): a part not sent yet just carries it, a part sent gets an update.
        While its parts are being made, the original keeps it for them."""
        row = self.get(file_id)
        parts = self.parts_of(file_id)
        if row.state != FileState.FITTING and not parts:
            super().want_metadata(file_id, metadata)
            return
        with self.batch():
            self.set_metadata(file_id, metadata)
            for part in parts:
                own = {k: v for k, v in part.user_metadata.items() if k.startswith("tlwatch_")}
                if part.state == FileState.QUEUED:
                    self.set_metadata(part.id, {**metadata, **own})
                elif part.state in _SENT:
                    super().want_metadata(part.id, {**metadata, **own})

    def savings(self) -> tuple[int, int, int]:
        """(originals sent as parts, their bytes, the bytes of their parts)."""
        rows = self._query(
            "SELECT COUNT(DISTINCT o.id), COALESCE(SUM(o.size), 0), COALESCE(SUM(p.made), 0) "
            "FROM files o JOIN (SELECT parent_id, SUM(size) AS made FROM files "
            "WHERE parent_id IS NOT NULL GROUP BY parent_id) p ON p.parent_id = o.id"
        )
        originals, size, made = rows[0]
        return int(originals), int(size), int(made)

    def parts_of(self, file_id: int) -> list[FileRow]:
        rows = self._query(
            f"SELECT {_COLUMNS} FROM files WHERE parent_id = ? ORDER BY part", (file_id,)
        )
        return [self._file(r) for r in rows]

    def origin(self, row: FileRow) -> FileRow:
        """The file a row stands for: its original when it is a part, else itself."""
        return self.get(row.parent_id) if row.parent_id is not None else row

    def _owed(self, db: Connection, parent: FileRow, after: ChoreKind) -> None:
        """The original's move is owed; a delete is not: only a proxy of it is on the server."""
        if after == ChoreKind.DELETE:
            reason = (
                "kept: only a proxy of it is on the server (delete is for files sent as they are)"
            )
            self._set(db, parent.id, {"reason": reason})
            return
        self._want_chore(db, parent, after)

    def _part_ready(self, db: Connection, row: FileRow, after: ChoreKind | None) -> None:
        """A part's asset is ready: its spool copy goes; once every part is, the original is
        ready too, and `after` (its move or delete, where no indexing is waited for) is owed."""
        if row.size > 0:  # a part found on the server (a rebuild) has no spool copy
            self._want_chore(db, row, ChoreKind.DELETE)
        assert row.parent_id is not None
        parent = self._file_in(db, row.parent_id)
        waiting = db.execute(
            "SELECT COUNT(*) FROM files WHERE parent_id = ? AND state != ?",
            (parent.id, FileState.READY),
        ).fetchone()[0]
        if parent.state != FileState.FITTING or waiting:  # (all parts are queued together)
            return
        parent = self._change(db, parent, FileState.READY, {}, parent.reason)  # (why: kept)
        if after is not None:
            self._owed(db, parent, after)

    def _indexing_over(self, db: Connection, row: IndexingRow, after: ChoreKind | None) -> bool:
        """As for any file; for a part, `after` is its original's, owed once every part is
        indexed (or skipped by the index)."""
        if after is None or row.file_id is None:
            return False
        file = self._file_in(db, row.file_id)
        if file.parent_id is None:
            return super()._indexing_over(db, row, after)
        parent = self._file_in(db, file.parent_id)
        marks = ", ".join("?" * len(_OVER))
        waiting = db.execute(
            "SELECT COUNT(*) FROM files f LEFT JOIN indexings i ON i.asset_id = f.asset_id "
            f"AND i.index_id = ? WHERE f.parent_id = ? AND (i.state IS NULL OR i.state NOT IN "
            f"({marks}))",
            (row.index_id, parent.id, *_OVER),
        ).fetchone()[0]
        if parent.state != FileState.READY or waiting:
            return False
        self._owed(db, parent, after)
        return after != ChoreKind.DELETE

    def _new_version(self, db: Connection, file_id: int) -> None:
        """A new version of an original: the parts of the old one stand for it no more (those
        not sent yet are not owed; those sent keep their assets, as history)."""
        super()._new_version(db, file_id)
        for found in db.execute(
            f"SELECT {_COLUMNS} FROM files WHERE parent_id = ?", (file_id,)
        ).fetchall():
            part = self._file(found)
            self._set(db, part.id, {"parent_id": None})
            if part.state == FileState.QUEUED:
                reason = "a part of an older version of its original"
                self._change(db, part, FileState.SKIPPED, {}, reason)

"""Hosts: each tlwatch of a fleet, with its heartbeat. A host silent past its lease is lost: what
it had claimed (an upload, an indexing, a chore) goes back to the queue for another host, and its
late writes are refused (`files._FENCE`). On SQLite, one host: the same rows, for
`status --fleet`."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tlwatch.limits import Window
from tlwatch.models import ChoreState, FileState, IndexState
from tlwatch.state.chores import _CHORE_COLUMNS
from tlwatch.state.parts import Parts

_WINDOW = "SELECT lim, remaining, reset_at FROM pace WHERE family = ?"
_SHARES = (b"//share/", b"//share0")  # the keys of the shared folders' files (see Places)
_CHORE = f"SELECT {_CHORE_COLUMNS} FROM chores WHERE id = ?"
NO_WINDOW_SECONDS = 1.0  # a family without a window is looked for again after this long


@dataclass(frozen=True)
class HostRow:
    id: str
    name: str
    version: str
    started_at: float
    seen_at: float
    lease_seconds: float
    detail: str | None  # JSON: its folders, what it has in flight

    def lost(self, now: float) -> bool:
        return now - self.seen_at > self.lease_seconds

    @property
    def facts(self) -> dict[str, Any]:
        return dict(json.loads(self.detail)) if self.detail else {}


class Hosts(Parts):
    """The hosts table, and the account's rate-limit windows."""

    def heartbeat(
        self,
        name: str,
        version: str,
        lease_seconds: float,
        started_at: float,
        detail: Mapping[str, Any],
    ) -> None:
        """This host is alive (its lease on what it claimed is renewed)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO hosts (id, name, version, started_at, seen_at, lease_seconds, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
                "version = excluded.version, started_at = excluded.started_at, "
                "seen_at = excluded.seen_at, lease_seconds = excluded.lease_seconds, "
                "detail = excluded.detail",
                (
                    self.host,
                    name,
                    version,
                    started_at,
                    self.lease_clock(),
                    lease_seconds,
                    json.dumps(dict(detail)),
                ),
            )

    def hosts(self) -> list[HostRow]:
        rows = self._query(
            "SELECT id, name, version, started_at, seen_at, lease_seconds, detail FROM hosts "
            "ORDER BY name, id"
        )
        return [HostRow(*row) for row in rows]

    def in_flight_by_host(self) -> dict[str, int]:
        """How many uploads each host has claimed and not finished."""
        rows = self._query(
            "SELECT lease_host, COUNT(*) FROM files WHERE state = ? AND lease_host IS NOT NULL "
            "GROUP BY lease_host",
            (FileState.UPLOADING,),
        )
        return {str(host): int(count) for host, count in rows}

    def waiting_by_host(self) -> dict[str, int]:
        """How many files are queued in each host's own folders ("": in shared folders)."""
        rows = self._query(
            "SELECT root, COUNT(*) FROM files WHERE state = ? GROUP BY root", (FileState.QUEUED,)
        )
        waiting: dict[str, int] = {}
        for root, count in rows:
            owner = self._places.owner(bytes(root))
            waiting[owner] = waiting.get(owner, 0) + int(count)
        return waiting

    def update_window(
        self, family: str, change: Callable[[Window | None], tuple[Window | None, float]]
    ) -> float:
        """The account's rate-limit window of `family`, changed by one host at a time (a
        request counted, an answer read): `change` gets the window and gives it back."""
        now = self.clock()
        if not self._in_transaction():  # no window known (looked for once a second)
            if self._no_window.get(family, 0.0) <= now and not self._query(_WINDOW, (family,)):
                self._no_window[family] = now + NO_WINDOW_SECONDS
            if self._no_window.get(family, 0.0) > now:
                new, result = change(None)
                if new is None:  # and none to keep: nothing to hold
                    return result
                self._no_window.pop(family, None)
        with self._transaction() as db:
            found = db.execute(_WINDOW + " FOR UPDATE", (family,)).fetchone()
            window = Window(*found) if found is not None else None
            new, result = change(window)
            if new is not None and new != window:
                db.execute(
                    "INSERT INTO pace (family, lim, remaining, reset_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (family) DO UPDATE SET lim = excluded.lim, "
                    "remaining = excluded.remaining, reset_at = excluded.reset_at",
                    (family, new.limit, new.remaining, new.reset_at),
                )
        return result

    def take_over(self, grace: float = 0.0) -> list[str]:
        """What a lost host had claimed in the shared folders goes back to the queue, `grace`
        seconds on (a request it sent may still be finishing): its uploads (looked for on the
        server by their upload token before anything is sent again), their chores, and its
        indexings. What it claimed in its own folders waits for it (no other host can read
        them). Return the names of the hosts it was taken from."""
        now = self.lease_clock()
        lost = {h.id: h.name for h in self.hosts() if h.lost(now) and h.id != self.host}
        at = self.clock() + grace
        return [name for host, name in lost.items() if self._release(host, name, at)]

    def _release(self, host: str, name: str, at: float) -> bool:
        """Put back in the queue what `host` had claimed (each row checked again, held, in its
        own transaction: another host may have taken it first); True if anything was."""
        reason = f"its host {name} went silent"
        shared = "root >= ? AND root < ?"
        files = self._query(
            f"SELECT id FROM files WHERE state = ? AND lease_host = ? AND {shared}",
            (FileState.UPLOADING, host, *_SHARES),
        )
        chores = self._query(
            "SELECT c.id FROM chores c JOIN files f ON f.id = c.file_id WHERE c.state = ? "
            f"AND c.lease_host = ? AND f.{shared}",
            (ChoreState.DOING, host, *_SHARES),
        )
        indexings = self._query(
            "SELECT asset_id, index_id FROM indexings WHERE state = ? AND lease_host = ?",
            (IndexState.SENDING, host),
        )
        released = 0
        for (file_id,) in files:
            with self._transaction() as db:
                row = self._file_in(db, int(file_id))
                if row.state == FileState.UPLOADING and row.lease_host == host:
                    values: dict[str, Any] = {"attempts": max(row.attempts - 1, 0)}
                    values |= {"next_attempt_at": at, "lease_host": None}
                    values["lease_epoch"] = row.lease_epoch + 1
                    self._change(db, row, FileState.QUEUED, values, reason)
                    released += 1
        for (chore_id,) in chores:
            with self._transaction() as db:
                chore = self._chore(db.execute(_CHORE + " FOR UPDATE", (chore_id,)).fetchone())
                if chore.state == ChoreState.DOING and chore.lease_host == host:
                    why = f"{reason}; its guard is checked again"
                    values = {"next_attempt_at": at, "lease_host": None}
                    self._chore_change(db, chore, ChoreState.QUEUED, values, why, fence=False)
                    released += 1
        for asset_id, index_id in indexings:
            with self._transaction() as db:
                found = self._indexing_in(db, asset_id, index_id)
                if found.state == IndexState.SENDING and found.lease_host == host:
                    values = {"next_attempt_at": at, "lease_host": None}
                    self._index_change(db, found, IndexState.QUEUED, values, reason, fence=False)
                    released += 1
        return released > 0

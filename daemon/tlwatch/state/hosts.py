"""Hosts: each tlwatch of a fleet, with its heartbeat. A host silent past its lease is lost: what
it had claimed (an upload, an indexing, a chore) goes back to the queue for another host, and its
late writes are refused (`files.Files._fence`). On SQLite, one host: the same rows, for
`status --fleet`."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tlwatch.limits import Window
from tlwatch.models import ChoreState, FileState, IndexState
from tlwatch.state.parts import Parts

_WINDOW = "SELECT lim, remaining, reset_at FROM pace WHERE family = ?"
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
                    self.clock(),
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
                del self._no_window[family]
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

    def take_over(self) -> list[str]:
        """Whatever a lost host had claimed goes back to the queue, for a host that can: its
        uploads (looked for on the server by their upload token before anything is sent again),
        indexings and chores. Return the names of the hosts it was taken from."""
        now = self.clock()
        lost = {h.id: h.name for h in self.hosts() if h.lost(now) and h.id != self.host}
        return [
            lost[host] for host in lost if self._release(host, f"its host {lost[host]} went silent")
        ]

    def _release(self, host: str, reason: str) -> bool:
        """Put back in the queue what `host` had claimed; True if there was any."""
        files = self._query(
            "SELECT id FROM files WHERE state = ? AND lease_host = ?", (FileState.UPLOADING, host)
        )
        for (file_id,) in files:
            row = self.get(int(file_id))
            values = {"attempts": max(row.attempts - 1, 0), "next_attempt_at": self.clock()}
            self._move(
                row.id,
                FileState.QUEUED,
                reason,
                {**values, "lease_host": None},
                expect=FileState.UPLOADING,
            )
        indexings = [i for i in self.indexings(IndexState.SENDING) if i.lease_host == host]
        for indexing in indexings:
            self.requeue_indexing(indexing.asset_id, indexing.index_id, reason, at=self.clock())
        chores = [c for c in self.chores(ChoreState.DOING) if c.lease_host == host]
        for chore in chores:
            self.requeue_chore(chore, f"{reason}; its guard is checked again", at=self.clock())
        return bool(files or indexings or chores)

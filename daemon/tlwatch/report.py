"""What the daemon and its store say, as one report: `tlwatch status --json`, the status page and
its JSON API all show this (read from the store, and from the daemon's health record: in process,
or as the daemon last wrote it beside the store)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

from tlwatch.models import ChoreState, FileState, IndexState
from tlwatch.state import ChoreRow, FileRow, IndexingRow, Store

SHOWN = 50  # files listed as ready, and as failed or held, at most
TROUBLE = (FileState.FAILED, FileState.SKIPPED, FileState.HELD)


def status(store: Store, daemon: dict[str, Any]) -> dict[str, Any]:
    """The report: folders and their counts, work in flight, what is ready, what needs a look,
    the limits in force, and the daemon's health (`daemon`: a health verdict)."""
    folders: dict[str, Counter[str]] = {}
    for (root, state), count in store.counts().items():
        folders.setdefault(os.fsdecode(root) or "(one-off)", Counter())[state] += count
    offline = {
        os.fsdecode(path): reason or "offline"
        for path, (online, reason, _) in store.folders().items()
        if not online
    }
    # (grouped counts, and only the rows shown: a long history costs no more at each update)
    waits = [i for i in store.indexings(IndexState.QUEUED) if waits_for_a_reason(i)]
    failed = store.chores(ChoreState.FAILED)
    ready = store.recent((FileState.READY,), SHOWN)
    by_asset = store.indexings_of_assets(r.asset_id for r in ready if r.asset_id)
    ids = {i.file_id for i in waits if i.file_id is not None} | {c.file_id for c in failed}
    names = {row.id: row.shown for row in store.rows(ids)}
    fitted, original_bytes, part_bytes = store.savings()
    flight = store.in_state(FileState.UPLOADING, FileState.UPLOADED)
    trouble = store.recent(TROUBLE, SHOWN)
    return {
        "folders": {name: dict(counts) for name, counts in folders.items()},
        "totals": dict(sum(folders.values(), Counter())),
        "batches": {  # each folder's files on their way: done, of how many found with them
            os.fsdecode(root) or "(one-off)": {"done": done, "total": total}
            for root, (done, total) in store.batches().items()
        },
        "offline": offline,
        "indexing": store.indexing_counts(),
        "indexing_waits": [_waiting(i, names) for i in waits],
        "after_upload": store.chore_counts(),
        "after_upload_failures": [_chore(c, names) for c in failed],
        "limits": daemon.get("limits", {}) if daemon.get("running") else {},
        "proxies": {
            "originals": fitted,
            "original_bytes": original_bytes,
            "sent_bytes": part_bytes,
        },
        "in_flight": [_flying(store, r) for r in flight],
        "recent_failures": [
            row_json(r) for r in trouble if r.state in (FileState.FAILED, FileState.SKIPPED)
        ][:10],
        "needs_a_look": [row_json(r) for r in trouble],
        "ready": [row_json(r, by_asset.get(r.asset_id or "", [])) for r in ready],
        "daemon": {k: v for k, v in daemon.items() if k != "limits"},
    }


def _flying(store: Store, row: FileRow) -> dict[str, Any]:
    """A file in flight; a multipart upload with its chunks sent and their number."""
    found = row_json(row)
    if row.state == FileState.UPLOADING and row.upload_id and row.total_chunks:
        found["chunks"] = [len(store.chunks(row.id)), row.total_chunks]
    return found


def row_json(row: FileRow, indexings: Sequence[IndexingRow] = ()) -> dict[str, Any]:
    return {
        "id": row.id,
        "parent_id": row.parent_id,  # a proxy or segment: the original it stands for
        "path": _text(row.path),
        "name": _text(row.name),  # (within its watched folder)
        "state": row.state.value,
        "reason": row.reason,
        "asset_id": row.asset_id,
        "asset_status": row.asset_status,
        "mime": row.mime,
        "size": row.size,
        "sha256": row.sha256,
        "attempts": row.attempts,
        "duplicate_of": row.duplicate_of,
        "updated_at": row.updated_at,
        "user_metadata": row.user_metadata,
        "indexing": [
            {
                "index_id": i.index_id,
                "indexed_asset_id": i.indexed_asset_id,
                "state": i.state.value,
                "status": i.status,
                "reason": i.reason,
            }
            for i in indexings
        ],
    }


def _text(path: bytes) -> str:
    """A path as JSON can carry it: bytes that are not UTF-8 shown as escapes."""
    return os.fsdecode(path).encode("utf-8", "backslashreplace").decode()


def waits_for_a_reason(indexing: IndexingRow) -> bool:
    """A queued indexing that waits for a reason (a lost answer, an error, a rate limit)."""
    return indexing.state == "queued" and indexing.reason is not None


def _waiting(indexing: IndexingRow, names: dict[int, str]) -> dict[str, Any]:
    return {
        "file": names.get(indexing.file_id or -1, indexing.asset_id),
        "index_id": indexing.index_id,
        "reason": indexing.reason,
        "next_attempt_at": indexing.next_attempt_at,
    }


def _chore(chore: ChoreRow, names: dict[int, str]) -> dict[str, Any]:
    return {
        "file": names.get(chore.file_id, str(chore.file_id)),
        "kind": chore.kind.value,
        "state": chore.state.value,
        "reason": chore.reason,
    }

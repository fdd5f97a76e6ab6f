"""A complete file's way into the store: filter by name, sniff, fingerprint, dedupe, record.

Unchanged files (same path, size, mtime and inode as recorded) cost one stat and no read.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping

from tlwatch.api import Asset
from tlwatch.config import Config
from tlwatch.models import FileState, Signature, shown
from tlwatch.scan import outside_roots, skip_reason
from tlwatch.sniff import sniff
from tlwatch.state import FileRow, Store

log = logging.getLogger(__name__)

# States whose content is (or will be) an asset: a later copy of it is a duplicate.
HOLDS_CONTENT = (FileState.QUEUED, FileState.UPLOADING, FileState.UPLOADED, FileState.READY)
FRESH = {
    "asset_id": None,
    "asset_status": None,
    "upload_token": None,
    "attempts": 0,
    "next_attempt_at": None,
    "upload_id": None,
    "chunk_size": None,
    "total_chunks": None,
    "duplicate_of": None,
    "uploaded_at": None,
}


def sha256_of(path: bytes, progress: Callable[[], None] = lambda: None) -> str:
    """Given a path, return the SHA-256 of its content, read 1 MiB at a time; `progress` hears
    each piece (hashing 10 GB off a slow share must not look like a hang to the watchdog)."""
    digest = hashlib.sha256()
    buffer = memoryview(bytearray(1 << 20))
    with open(path, "rb", buffering=0) as file:
        while count := file.readinto(buffer):
            digest.update(buffer[:count])
            progress()
    return digest.hexdigest()


class Intake:
    def __init__(
        self,
        store: Store,
        config: Callable[[], Config],
        *,
        queued: Callable[[], None] = lambda: None,
        adopted: Callable[[], None] = lambda: None,
        progress: Callable[[], None] = lambda: None,
        remote: Mapping[str, Asset] | None = None,
    ) -> None:
        self.store, self.config = store, config
        self.queued, self.adopted = queued, adopted  # wake the upload workers / the poller
        self.progress = progress  # a sign of life while a big file is hashed
        self.remote = dict(remote or {})  # sha256 -> asset, when rebuilding a lost store
        self._unreadable: set[tuple[bytes, Signature]] = set()

    def wanted(self, path: bytes) -> bool:
        """Cheap name checks, before settling: inside a watch, not hidden/temporary/excluded."""
        config = self.config()
        watch = config.watch_for(path)
        if watch is None or skip_reason(watch, path) is not None:
            return False
        return not outside_roots(path, [os.fsencode(w.path) for w in config.watch])

    def take(self, path: bytes, signature: Signature) -> FileRow | None:
        """Given a settled file, record what it is; return its row (None if not ours)."""
        watch = self.config().watch_for(path)
        if watch is None or not self.wanted(path):
            return None
        row = self.store.by_path(path)
        if row is not None and (row.signature == signature or row.state == FileState.UPLOADING):
            return row  # unchanged (or its upload is in flight and will notice any change)
        root = os.fsencode(watch.path)
        try:
            sniffed = sniff(path)
            if sniffed.kind is None or sniffed.kind not in watch.kinds:
                reason = (
                    f"not media ({sniffed.mime})"
                    if sniffed.kind is None
                    else f"{sniffed.kind} files are not wanted in this folder"
                )
                return self.store.record(
                    path,
                    root,
                    signature,
                    FileState.IGNORED,
                    reason,
                    mime=sniffed.mime,
                    kind=sniffed.kind,
                    sha256=None,
                )
            digest = sha256_of(path, self.progress)
        except OSError as error:
            # Not recorded: once it is readable (a chmod leaves size and mtime alone) the next
            # event or scan takes it. Said once per version of the file, not at every rescan.
            level = logging.DEBUG if (path, signature) in self._unreadable else logging.WARNING
            self._unreadable.add((path, signature))
            log.log(level, "%s: cannot read it (%s); skipped for now", shown(path), error.strerror)
            return None
        return self._media(path, root, signature, row, sniffed.mime, sniffed.kind, digest)

    def _media(
        self,
        path: bytes,
        root: bytes,
        signature: Signature,
        row: FileRow | None,
        mime: str,
        kind: str,
        digest: str,
    ) -> FileRow:
        if (
            row is not None
            and row.sha256 == digest
            and row.state in (*HOLDS_CONTENT, FileState.DUPLICATE)
        ):
            self.store.update(
                row.id, size=signature.size, mtime_ns=signature.mtime_ns, inode=signature.inode
            )  # touched, not changed
            return row
        values = {**FRESH, "mime": mime, "kind": kind, "sha256": digest}
        twin = self.store.by_sha256(digest, exclude=row.id if row else None)
        if twin is not None:
            return self.store.record(
                path,
                root,
                signature,
                FileState.DUPLICATE,
                f"same content as {twin.shown}",
                **{**values, "duplicate_of": twin.id, "asset_id": twin.asset_id},
            )
        remote = self.remote.get(digest)
        if remote is not None:
            adopted = self.store.record(
                path,
                root,
                signature,
                FileState.UPLOADED,
                f"found on the server as asset {remote.id}",
                **{**values, "asset_id": remote.id, "asset_status": remote.status},
            )
            self.adopted()
            return adopted
        recorded = self.store.record(path, root, signature, FileState.QUEUED, None, **values)
        self.queued()
        return recorded

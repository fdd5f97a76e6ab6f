"""What is owed to a file after its upload, done once and only for the version it was owed for:
`after_upload` moves and deletes, and newer user metadata sent to its asset.

Each obligation is a row (`Store.chores`), wanted in the transaction that makes it owed (the asset
ready, or indexed where the folder indexes; a sidecar changed). `Chores.turn` is one turn of the
chores thread: claim the next due chore outside the folders that are offline, check its guard (the
file is still the version the chore was made for: same asset, same signature in the store and on
disk), act, and record the outcome. A chore cut off by a crash is claimed again after the restart;
one whose folder is offline waits until it is back. Errors are retried with backoff; what can never
work ends `failed` with its reason (`tlwatch retry` tries it again).

A move never overwrites: the file goes to a free name (`take (2).mp4`), chosen and kept before
the move starts, by a hard link (atomic, refuses an existing name) or, across file systems, a copy
through a hidden temporary name; the source is removed only once the target holds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable

from tlwatch.api import Client
from tlwatch.config import Config, WatchConfig
from tlwatch.control import PAUSE_KEY, RunState
from tlwatch.errors import ApiError, AuthError, TransientError
from tlwatch.models import (
    ChoreKind,
    ChoreState,
    FileState,
    IndexState,
    Signature,
    regular_signature,
    shown,
)
from tlwatch.state import ChoreRow, FileRow, Store

log = logging.getLogger(__name__)

IDLE_WAIT = 15.0  # the longest between two looks at the store (`tlwatch retry` from outside)
METADATA_WAIT = 10.0  # a metadata update looks again this often while its upload is in flight
LOCAL_ATTEMPTS = 8  # a move or delete that keeps failing on the disk ends failed after these
NAME_MAX = 255
LOCAL = (ChoreKind.MOVE, ChoreKind.DELETE)
KINDS = (*LOCAL, ChoreKind.METADATA)  # proxies are the fitter's (fitter.py)


class Chores:
    def __init__(
        self,
        store: Store,
        client: Client,
        config: Callable[[], Config],
        run: RunState,
        *,
        offline: Callable[[bytes], bool] = lambda root: not os.path.isdir(root),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.client, self.config, self.run = store, client, config, run
        self.offline = offline  # is this watched folder offline right now (a card pulled)?
        self.clock = clock

    def turn(self) -> None:
        """Do the next due chore, or wait until one may be due (a read, no write, while idle)."""
        kinds = LOCAL if self.run.paused() else KINDS  # API calls wait out a pause
        chore = take_chore(self.store, self.run, kinds, self.clock)
        if chore is not None:
            self.do(chore)

    def do(self, chore: ChoreRow) -> None:
        """Check the chore's guard, act, and record the outcome."""
        file = self.store.get(chore.file_id)
        if chore.kind == ChoreKind.MOVE and self._finish_move(chore, file):
            return
        if chore.kind == ChoreKind.METADATA and self._not_yet(chore, file):
            return
        why = stale(chore, file)
        if why is not None:
            self.store.drop_chore(chore, why)
            log.warning("%s: %s after upload not done: %s", file.shown, chore.kind, why)
            return
        try:
            self._act(chore, file)
        except OSError as error:
            self._local_error(chore, file, error)
        except AuthError:
            self.run.pause(PAUSE_KEY, "API key rejected")
            self.store.requeue_chore(chore, "paused: the API key was rejected", at=self.clock())
        except TransientError as error:
            self._later(chore, str(error), error.retry_after)
        except ApiError as error:
            self.store.fail_chore(chore, f"refused by the API: {error}")
            log.warning("%s: updating its asset's metadata failed: %s", file.shown, error)

    def _act(self, chore: ChoreRow, file: FileRow) -> None:
        if chore.kind == ChoreKind.METADATA:
            self._send_metadata(chore, file)
        elif chore.kind == ChoreKind.DELETE:
            os.unlink(file.path)
            self.store.deleted(chore)
            log.info("%s: deleted after upload, as configured", file.shown)
        else:
            self._move(chore, file)

    # ---- moving, never over anything ---------------------------------------------------------
    def _move(self, chore: ChoreRow, file: FileRow) -> None:
        watch = self.config().watch_for(file.path)
        if watch is None or watch.move_to is None:
            self.store.drop_chore(chore, "its folder no longer moves files after upload")
            return
        folder = os.fsencode(watch.move_to)
        if chore.target is None or os.path.lexists(chore.target):  # taken by another file
            chore = self.store.chore_target(chore, self._free_name(folder, file.name))
        assert chore.target is not None
        os.makedirs(os.path.dirname(chore.target), exist_ok=True)
        place(file.path, chore.target)
        self._moved(chore, file, folder)

    def _finish_move(self, chore: ChoreRow, file: FileRow) -> bool:
        """A move cut off after the target held the file: finish it. True when it was."""
        target = chore.target
        if target is None or not same_version(regular_signature(target), chore.signature):
            return False
        source_there = regular_signature(file.path) == chore.signature
        linked = source_there and os.path.samefile(file.path, target)
        if not linked and (file.sha256 is None or sha256_of(target) != file.sha256):
            return False  # not (all of) this file's content: left alone, looked at anew
        if source_there:
            os.unlink(file.path)
        watch = self.config().watch_for(file.path)
        folder = os.fsencode(watch.move_to) if watch and watch.move_to else os.path.dirname(target)
        self._moved(chore, file, folder)
        return True

    def _moved(self, chore: ChoreRow, file: FileRow, folder: bytes) -> None:
        assert chore.target is not None
        self.store.moved(chore, chore.target, folder)
        log.info("%s: moved to %s after upload, as configured", file.shown, shown(chore.target))

    def _free_name(self, folder: bytes, name: bytes) -> bytes:
        """`folder/name`, or the first of `name (2)`, `name (3)`… free on disk and in the store."""
        wanted = os.path.join(folder, name)
        directory, base = os.path.split(wanted)
        stem, extension = os.path.splitext(base)
        number = 1
        while (
            os.path.lexists(wanted)
            or self.store.by_path(wanted) is not None
            or self.store.target_taken(wanted)
        ):
            number += 1
            suffix = b" (%d)" % number
            wanted = os.path.join(
                directory, stem[: NAME_MAX - len(suffix) - len(extension)] + suffix + extension
            )
        return wanted

    # ---- metadata ------------------------------------------------------------------------------
    def _not_yet(self, chore: ChoreRow, file: FileRow) -> bool:
        """A metadata update that must wait (its upload, or an indexing request, is in flight:
        what they carry is not known yet) or is superseded by a newer one. True if so."""
        newer = [
            other
            for other in self.store.chores_of(file.id)
            if other.kind == ChoreKind.METADATA
            and other.id > chore.id
            and other.state != ChoreState.DROPPED
        ]
        if newer:
            self.store.drop_chore(chore, "superseded by a newer update")
            return True
        sending = (IndexState.QUEUED, IndexState.SENDING)
        if file.state == FileState.UPLOADING:
            why = "waits for its upload to end"
        elif any(
            indexing.file_id == file.id and indexing.state in sending
            for indexing in self.store.indexings_of(chore.asset_id)
        ):
            why = "waits for its indexing request to end"
        else:
            return False
        attempts = max(chore.attempts - 1, 0)  # waiting is no failed attempt
        self.store.requeue_chore(chore, why, at=self.clock() + METADATA_WAIT, attempts=attempts)
        return True

    def _send_metadata(self, chore: ChoreRow, file: FileRow) -> None:
        """The asset and its indexed assets get the newer metadata (keys gone are cleared)."""
        wanted = json.loads(chore.detail or "{}")
        changes = {key: None for key in file.user_metadata if key not in wanted} | wanted
        self.client.update_asset_metadata(chore.asset_id, changes)
        for indexing in self.store.indexings_of(chore.asset_id):
            if indexing.indexed_asset_id and indexing.file_id == file.id:
                self.client.update_indexed_metadata(
                    indexing.index_id, indexing.indexed_asset_id, changes
                )
        self.store.metadata_sent(chore)
        log.info("%s: its asset's metadata is updated", file.shown)

    # ---- errors ---------------------------------------------------------------------------------
    def _local_error(self, chore: ChoreRow, file: FileRow, error: OSError) -> None:
        if self.offline(file.root):  # a card pulled out: done once it is back
            self.store.requeue_chore(chore, "its folder is offline", at=self.clock())
            return
        said = f"cannot {chore.kind} it: {error.strerror or error}"
        if chore.attempts >= LOCAL_ATTEMPTS:
            self.store.fail_chore(chore, said)
            log.warning("%s: %s", file.shown, said)
            return
        self._later(chore, said, None)
        log.info("%s: %s; trying again later", file.shown, said)

    def _later(self, chore: ChoreRow, reason: str, server_wait: float | None) -> None:
        backoff = self.config().daemon.upload_backoff
        at = self.clock() + backoff.delay(max(chore.attempts, 1), server_wait=server_wait)
        self.store.requeue_chore(chore, reason, at=at)


def after_upload(watch: WatchConfig | None) -> ChoreKind | None:
    """The chore a folder owes its files once their work is done (None: keep them)."""
    if watch is None or watch.after_upload == "keep":
        return None
    return ChoreKind(watch.after_upload)


def take_chore(
    store: Store, run: RunState, kinds: tuple[ChoreKind, ...], clock: Callable[[], float]
) -> ChoreRow | None:
    """The next due chore of `kinds` outside the folders offline, claimed; or None once waited
    until one may be due (a read, no write, while idle; a wake-up ends the wait)."""
    seen = run.chores.seen()
    due = store.next_chore_due(run.offline(), kinds)
    if due is not None and due <= clock():
        chore = store.claim_chore(run.offline(), kinds)
        if chore is not None:
            return chore
    run.chores.wait(seen, IDLE_WAIT if due is None else min(max(due - clock(), 0.05), IDLE_WAIT))
    return None


def stale(chore: ChoreRow, file: FileRow) -> str | None:
    """Why the chore is not owed any more (the file is not the version it was made for), or
    None. Pure but for one stat."""
    if (file.asset_id or "") != chore.asset_id:  # (an original sent as parts has none)
        return "the file changed since; its new version goes its own way"
    if chore.kind == ChoreKind.METADATA:
        return None if file.state in (FileState.UPLOADED, FileState.READY) else "not sent any more"
    if file.state != FileState.READY or file.signature != chore.signature:
        return "the file changed since; its new version goes its own way"
    now = regular_signature(file.path)
    if now is None:
        return "the file is gone already"
    if now != chore.signature:
        return "changed since it was uploaded; leaving it where it is"
    return None


def same_version(found: Signature | None, wanted: Signature) -> bool:
    """The same size and mtime (a copy to another file system keeps those, not the inode)."""
    return found is not None and (found.size, found.mtime_ns) == (wanted.size, wanted.mtime_ns)


def place(source: bytes, target: bytes) -> None:
    """Move `source` to `target`, never over anything there: a hard link where one can be made
    (atomic: it refuses an existing name), else a copy through a hidden temporary name (mtime
    kept, synced); `source` is removed once `target` holds it."""
    try:
        os.link(source, target, follow_symlinks=False)
    except FileExistsError:
        if not os.path.samefile(source, target):
            raise
    except OSError:  # another file system, or one without hard links
        _copy_in(source, target)
    os.unlink(source)


def _copy_in(source: bytes, target: bytes) -> None:
    """Copy `source` to a hidden temporary name beside `target` (synced, mtime kept), then give
    it the target's name without ever replacing a file there; the temporary never stays."""
    directory, base = os.path.split(target)
    partial = os.path.join(directory, b"." + base[: NAME_MAX - 20] + b".tlwatch-part")
    try:
        with open(source, "rb") as reader, open(partial, "wb") as writer:
            shutil.copyfileobj(reader, writer, 1 << 20)
            writer.flush()
            os.fsync(writer.fileno())
        shutil.copystat(source, partial)
        try:
            os.link(partial, target)  # atomic: refuses a name taken meanwhile
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links (FAT, exFAT): check, then rename
            if os.path.lexists(target):
                taken = os.fsdecode(target)
                raise FileExistsError(17, "the name was taken meanwhile", taken) from None
            os.rename(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)


def sha256_of(path: bytes) -> str:
    """The SHA-256 of a file's content (to recognise a copy made before a crash)."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()

"""A complete file's way into the store: filter by name, settle, sniff, fingerprint, dedupe, record.

`IntakeWorker` is the intake thread (inbox, settling, rescans); `Intake` judges one settled file.
Unchanged files (same path, size, mtime and inode as recorded) cost one stat and no read.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import queue
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeGuard

from tlwatch.config import Config, WatchConfig
from tlwatch.control import PAUSE_STORE, SCAN, STORE_RETRY, WAKE, RunState
from tlwatch.errors import RecordedMeanwhile
from tlwatch.metadata import Facts, SidecarError, Value, media_of, merged
from tlwatch.models import FileState, Kind, Media, Signature, regular_signature, shown
from tlwatch.probe import probe
from tlwatch.scan import outside_roots, skip_reason, walk
from tlwatch.settle import Settler
from tlwatch.sniff import Sniffed, sniff
from tlwatch.state import FileRow, Store
from tlwatch.state.files import HOLDS_CONTENT as FILE_HOLDS_CONTENT

log = logging.getLogger(__name__)

# States whose content is (or will be) an asset: a later copy of it is a duplicate.
HOLDS_CONTENT = (*FILE_HOLDS_CONTENT, FileState.FITTING)  # its content is (being) sent
SENT = (FileState.UPLOADING, FileState.UPLOADED, FileState.READY, FileState.FITTING)  # asset(s)
SETTLE_CHECK_MAX = 30.0  # the longest the intake waits before looking at settling files again
CHUNK = 64  # settled files being read at once
RECORD_BATCH = 32  # finished reads recorded in one commit...
RECORD_WAIT = 0.2  # ...or once the first of them has waited this long (seconds)
SCAN_BATCH = 1000  # during a scan, settled files are recorded once this many are pending
SCAN_FOLDERS, SCAN_PATHS = 128, 5000  # a scan asks the store of this many folders (or files)
READERS = min(os.cpu_count() or 2, 4)  # threads reading files at once (sniffing, hashing)


class Stopped(Exception):
    """Reading a file was given up: the daemon is stopping."""


def sha256_of(path: bytes, progress: Callable[[], None] = lambda: None) -> str:
    """Given a path, return the SHA-256 of its content, read 1 MiB at a time; `progress` hears
    each piece (hashing 10 GB off a slow share must not look like a hang to the watchdog) and
    may raise `Stopped` to give up."""
    digest = hashlib.sha256()
    buffer = memoryview(bytearray(1 << 20))
    with open(path, "rb", buffering=0) as file:
        while count := file.readinto(buffer):
            digest.update(buffer[:count])
            progress()
    return digest.hexdigest()


class Intake:
    """Judges one settled file: ignored, duplicate, adopted from the server, or queued."""

    def __init__(
        self,
        store: Store,
        config: Callable[[], Config],
        *,
        queued: Callable[[], None] = lambda: None,
        adopted: Callable[[], None] = lambda: None,
        changed: Callable[[], None] = lambda: None,
        progress: Callable[[], None] = lambda: None,
        pool: Executor | None = None,
    ) -> None:
        self.store, self.config = store, config
        self.pool = pool  # reads several files at once (libmagic and hashing free the GIL)
        # Told after COMMIT: the upload workers, the poller, the chores worker.
        self.queued, self.adopted, self.changed = queued, adopted, changed
        self.progress = progress  # a sign of life while a big file is hashed; may raise Stopped
        self._unreadable: set[tuple[bytes, Signature]] = set()
        self._tell: set[Callable[[], None]] = set()  # wake-ups owed once the batch commits

    def wanted(self, path: bytes) -> bool:
        """Cheap name checks, before settling: inside a watch, not hidden/temporary/excluded."""
        config = self.config()
        watch = config.watch_for(path)
        if watch is None or skip_reason(watch, path) is not None:
            return False
        return not outside_roots(path, [os.fsencode(w.path) for w in config.watch])

    def take(self, path: bytes, signature: Signature, *, force: bool = False) -> FileRow | None:
        """Given a settled file, record what it is; return its row (None if not ours, or not
        readable now). `force`: a file named by hand (`tlwatch upload`), wherever it is: no
        folder filters, every media kind, recorded under its own folder."""
        return self.take_many([(path, signature)], force=force)[0]

    def take_many(
        self, files: list[tuple[bytes, Signature]], *, force: bool = False
    ) -> list[FileRow | None]:
        """`take` for several settled files: their content is read in the pool (libmagic and
        SHA-256 run outside the GIL), never inside a transaction; the files read by then are
        recorded together in one commit, and the threads that care are told after it."""
        steps = self.claims(files, force=force)
        todo = [step for step in steps if isinstance(step, _Claim)]
        done: dict[int, FileRow | None] = {}
        for group in self._reads(todo):
            done |= {id(c): row for (c, _), row in zip(group, self.record(group), strict=True)}
        return [done.get(id(step)) if isinstance(step, _Claim) else step for step in steps]

    def record(self, reads: list[tuple[_Claim, _Read]]) -> list[FileRow | None]:
        """Record what these files are, in one commit; then tell the threads that care. Should
        another host record one of them meanwhile (a shared folder), the batch is recorded
        again, against what is there now."""
        while True:  # (each time, one more of them is recorded: rows are never deleted)
            try:
                return self._record_all(reads)
            except RecordedMeanwhile:
                log.debug("another host recorded one of these %d files meanwhile", len(reads))

    def _record_all(self, reads: list[tuple[_Claim, _Read]]) -> list[FileRow | None]:
        with self.store.batch():
            # What the store holds of these paths and contents, asked once for the batch (now,
            # in this transaction: not as it was before the reads), and kept up to date as
            # each is recorded (two copies of one content in a batch: the second is a copy).
            seen = _Seen(
                self.store.by_paths(claim.path for claim, _ in reads),
                self.store.holders(read.media.sha256 for _, read in reads if _has_media(read)),
            )
            rows = [seen.add(self._record(claim, read, seen)) for claim, read in reads]
        told, self._tell = self._tell, set()
        for tell in told:
            tell()
        return rows

    def _reads(self, todo: list[_Claim]) -> Iterator[list[tuple[_Claim, _Read]]]:
        """The files' reads, as they finish: each group is what is read by then (a 10 GB file
        keeps no small one waiting). Stops early when the reading is given up (stopping)."""
        if self.pool is None or len(todo) < 2:
            for claim in todo:
                read = _read(claim)
                if read is None:
                    return
                yield [(claim, read)]
            return
        pending = {self.pool.submit(_read, claim): claim for claim in todo}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            group = [(pending.pop(f), f.result()) for f in finished]
            ready = [(claim, read) for claim, read in group if read is not None]
            if ready:
                yield ready
            if len(ready) < len(group):
                for future in pending:
                    future.cancel()
                return

    def claims(
        self, files: list[tuple[bytes, Signature]], *, force: bool = False
    ) -> list[_Claim | FileRow | None]:
        """For each file, what reading it is for (its folder, the kinds wanted): or, instead,
        None when it is not ours, or its row when nothing changed. One query for them all."""
        known = self.store.by_paths(path for path, _ in files)
        return [self._claim(path, signature, known.get(path), force) for path, signature in files]

    def _claim(
        self, path: bytes, signature: Signature, row: FileRow | None, force: bool
    ) -> _Claim | FileRow | None:
        watch = self.config().watch_for(path)
        if force:
            root, kinds = os.path.dirname(path), frozenset(Kind)
        elif watch is not None and self.wanted(path):
            root, kinds = os.fsencode(watch.path), watch.kinds
        else:
            return None
        if row is not None and (row.signature == signature or row.state == FileState.UPLOADING):
            return row  # unchanged (or its upload is in flight and will notice any change)
        templates = watch.user_metadata if watch is not None else {}
        return _Claim(path, signature, root, kinds, templates, self.progress)

    def _record(self, claim: _Claim, read: _Read, seen: _Seen) -> FileRow | None:
        path, signature, root = claim.path, claim.signature, claim.root
        row = seen.rows.get(path)
        if row is not None and row.state == FileState.UPLOADING:
            return row  # claimed meanwhile: its upload notices any change itself
        if isinstance(read, _Failed):
            log.warning("%s: cannot read its content (%s)", shown(path), read.why)
            return self.store.unreadable(path, root, signature, f"cannot read it: {read.why}")
        if isinstance(read, OSError):
            # Not recorded: once it is readable (a chmod leaves size and mtime alone) the next
            # event or scan takes it. Said once per version of the file, not at every rescan.
            level = logging.DEBUG if (path, signature) in self._unreadable else logging.WARNING
            self._unreadable.add((path, signature))
            log.log(level, "%s: cannot read it (%s); skipped for now", shown(path), read.strerror)
            return None
        if isinstance(read, Sniffed):
            reason = (
                f"not media ({read.mime})"
                if read.kind is None
                else f"{read.kind} files are not wanted in this folder"
            )
            return self.store.ignore(path, root, signature, read.mime, read.kind, reason)
        return self._media(path, root, signature, row, read, seen)

    def _media(
        self,
        path: bytes,
        root: bytes,
        signature: Signature,
        row: FileRow | None,
        read: _Media,
        seen: _Seen,
    ) -> FileRow:
        media = read.media
        if (
            row is not None
            and row.sha256 == media.sha256
            and row.state in (*HOLDS_CONTENT, FileState.DUPLICATE)
        ):
            self.store.touch(row.id, signature)  # touched, not changed
            return row
        metadata = read.metadata
        if metadata is None:  # its sidecar is malformed
            return self.store.hold(path, root, signature, media, f"{read.problem}; fix it to go on")
        twin = seen.twin(media.sha256, exclude=row.id if row else None)
        if twin is not None:
            duplicate = self.store.duplicate(path, root, signature, media, twin, metadata)
            self._index_duplicate(duplicate, twin)
            return duplicate
        remote = self.store.remote_asset(media.sha256)  # a rebuilt store read the server's list
        if remote is not None:
            found = f"found on the server as asset {remote[0]}"
            adopted = self.store.adopt(
                path, root, signature, media, remote[0], remote[1], found, metadata, durable=False
            )
            self._tell.add(self.adopted)
            return adopted
        recorded = self.store.enqueue(path, root, signature, media, metadata)
        self._tell.add(self.queued)
        return recorded

    def _metadata(
        self, path: bytes, root: bytes, signature: Signature, media: Media
    ) -> dict[str, Value]:
        """The user metadata the file goes with: its folder's templates, its sidecar over them."""
        watch = self.config().watch_for(path)
        return metadata_of(path, root, signature, media, watch.user_metadata if watch else {})

    def _index_duplicate(self, duplicate: FileRow, twin: FileRow) -> None:
        """A copy in a folder with its own index: the twin's asset is indexed there too, once
        it is ready (until then, the poller does it when it becomes ready)."""
        index_id = index_for(self.config(), duplicate)
        if index_id and twin.state == FileState.READY and twin.asset_id:
            self.store.want_index(twin.asset_id, index_id, duplicate.id)

    def sidecar_changed(self, media_path: bytes) -> None:
        """The sidecar of a recorded media file appeared or changed: what the file goes with
        changes too (before its upload), or its asset is updated (after)."""
        row = self.store.by_path(media_path)
        if row is None or row.sha256 is None or row.kind is None or row.mime is None:
            return
        media = Media(row.mime, row.kind, row.sha256, row.duration)
        try:
            metadata = self._metadata(row.path, row.root, row.signature, media)
        except SidecarError as error:
            if row.state == FileState.QUEUED:
                self.store.hold(
                    row.path, row.root, row.signature, media, f"{error}; fix it to go on"
                )
            elif row.state != FileState.HELD:
                log.warning("%s: %s; its asset keeps the metadata it has", row.shown, error)
            return
        if row.state == FileState.HELD:
            self.store.enqueue(row.path, row.root, row.signature, media, metadata)  # released
            self.queued()
        elif row.state == FileState.QUEUED:
            self.store.set_metadata(row.id, metadata)
        elif row.user_metadata != metadata and row.state in SENT:
            self.store.want_metadata(row.id, metadata)
            self.changed()
            log.info("%s: its sidecar changed: its asset's metadata will be updated", row.shown)


def index_for(config: Config, row: FileRow) -> str | None:
    """The index the file's folder indexes its kind into, if any."""
    watch = config.watch_for(row.path)
    if watch is None or watch.index_id is None or row.kind not in watch.index_kinds:
        return None
    return watch.index_id


@dataclass(frozen=True)
class _Claim:
    """A settled file whose content is to be read, and where it will be recorded."""

    path: bytes
    signature: Signature
    root: bytes
    kinds: frozenset[Kind]
    templates: Mapping[str, Any]  # its folder's user_metadata templates
    progress: Callable[[], None]


@dataclass(frozen=True)
class _Media:
    """Media, sniffed and hashed, with the user metadata it goes with (its sidecar read too),
    or None and the problem when the sidecar is malformed."""

    media: Media
    metadata: dict[str, Value] | None
    problem: str | None = None


@dataclass(frozen=True)
class _Failed:
    """Reading the file failed in a way a retry of the same version will not fix (libmagic or
    the duration reader raised): that version is recorded as failed, with the reason."""

    why: str


# Media, not wanted, unreadable for now, failed; None: given up (stopping).
_Read = _Media | Sniffed | OSError | _Failed


def _has_media(read: _Read) -> TypeGuard[_Media]:
    return isinstance(read, _Media)


class _Seen:
    """What a batch of reads is recorded against: the rows of its paths, and the files whose
    uploads hold each of its contents (in id order), as the store held them when the batch
    began, then as each file is recorded."""

    def __init__(self, rows: dict[bytes, FileRow], holders: dict[str, list[FileRow]]) -> None:
        self.rows = rows
        self._holders = {
            sha256: {row.id: row for row in found} for sha256, found in holders.items()
        }

    def twin(self, sha256: str, exclude: int | None) -> FileRow | None:
        """The first file whose upload holds this content, but `exclude`."""
        found = self._holders.get(sha256, {})
        return next((found[i] for i in sorted(found) if i != exclude), None)

    def add(self, row: FileRow | None) -> FileRow | None:
        """`row` as it is now recorded."""
        if row is None:
            return None
        old = self.rows.get(row.path)
        if old is not None and old.sha256 is not None:
            self._holders.get(old.sha256, {}).pop(old.id, None)
        if row.sha256 is not None and row.state in HOLDS_CONTENT:
            self._holders.setdefault(row.sha256, {})[row.id] = row
        self.rows[row.path] = row
        return row


def metadata_of(
    path: bytes, root: bytes, signature: Signature, media: Media, templates: Mapping[str, Any]
) -> dict[str, Value]:
    """The user metadata a file goes with: its folder's templates, its sidecar over them (may
    raise SidecarError)."""
    facts = Facts.of(path, root, media.kind, media.mime, signature.size, signature.mtime_ns)
    return merged(templates, facts, path)


def _read(claim: _Claim) -> _Read | None:
    """Sniff the file and, when it is wanted media, hash it. Runs in the intake's pool."""
    try:
        sniffed = sniff(claim.path)
        if sniffed.kind is None or sniffed.kind not in claim.kinds:
            return sniffed
        digest = sha256_of(claim.path, claim.progress)
        if sniffed.kind == Kind.IMAGE:
            media = Media(sniffed.mime, sniffed.kind, digest, 0.0)
        else:
            media = Media.of(sniffed.mime, sniffed.kind, digest, probe(claim.path))
            if media.duration is None:
                log.info("%s: cannot read its duration; it counts as zero", shown(claim.path))
        try:  # the sidecar is read here too: nothing is read inside a transaction
            metadata = metadata_of(claim.path, claim.root, claim.signature, media, claim.templates)
        except SidecarError as error:
            return _Media(media, None, str(error))
        return _Media(media, metadata)
    except OSError as error:
        return error
    except Stopped:
        return None
    except Exception as error:  # noqa: BLE001 - a library's bug fails this file, not the batch
        return _Failed(f"{type(error).__name__}: {error}")


def _batches(
    folders: Iterable[tuple[bytes, list[bytes]]],
) -> Iterator[list[tuple[bytes, list[bytes]]]]:
    """The walk's folders, a few at a time: up to `SCAN_FOLDERS` of them, or `SCAN_PATHS` files
    (a scan's memory stays bounded whatever the folders hold)."""
    batch: list[tuple[bytes, list[bytes]]] = []
    paths = 0
    for folder in folders:
        batch.append(folder)
        paths += len(folder[1])
        if len(batch) >= SCAN_FOLDERS or paths >= SCAN_PATHS:
            yield batch
            batch, paths = [], 0
    if batch:
        yield batch


def _signature(path: bytes) -> tuple[int, int, int] | None:
    """(size, mtime_ns, inode) of a regular file, as `Store.known_in` gives them; else None."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return (found.st_size, found.st_mtime_ns, found.st_ino) if stat.S_ISREG(found.st_mode) else None


class IntakeWorker:
    """The intake thread: takes paths from the inbox (or a rescan), holds each until it settles,
    then has it read in the pool and records what it is. One turn per inbox item, settle deadline
    or read finished: a read in flight never holds the thread (a 10 GB clip being hashed keeps no
    small file waiting, and the files read meanwhile are recorded together)."""

    def __init__(
        self,
        intake: Intake,
        run: RunState,
        *,
        settler: Settler | None = None,
        scans: Callable[[WatchConfig], bool] = lambda watch: True,
    ) -> None:
        self.intake, self.run = intake, run
        self.scans = scans  # a shared folder is scanned by one host of a fleet at a time
        self.settler = settler or Settler(regular_signature, time.monotonic)
        self.settling = 0  # files settling, waiting to be read or being read, for the status line
        self._ripe: deque[tuple[bytes, Signature]] = deque()  # settled, not yet being read
        self._reading: dict[Future[_Read | None], _Claim] = {}
        self._finished: deque[Future[_Read | None]] = deque()  # appended to by the readers
        self._holding_since: float | None = None  # finished reads wait to be recorded since
        if intake.pool is None:
            intake.pool = ThreadPoolExecutor(READERS, thread_name_prefix="intake-read")
            self._own_pool: Executor | None = intake.pool
        else:
            self._own_pool = None

    def close(self) -> None:
        """End the readers' threads (the runner calls this once the intake thread is done); a
        hash in progress gives up (see `Stopped`)."""
        if self._own_pool is not None:
            self._own_pool.shutdown(wait=True, cancel_futures=True)

    def idle(self) -> bool:
        """Nothing in the inbox, settling or being read: every file seen so far is recorded."""
        return self.run.inbox.unfinished_tasks == 0 and self.settling == 0

    def turn(self) -> None:
        if self.run.paused(PAUSE_STORE):  # paths wait in the inbox until it can be written
            self.run.stop.wait(STORE_RETRY)
            return
        due = self.settler.next_due()
        if self._holding_since is not None:  # finished reads are recorded soon, together
            due = min(due or math.inf, self._holding_since + RECORD_WAIT)
        wait = SETTLE_CHECK_MAX if due is None else due - time.monotonic()
        try:
            item: bytes | None = self.run.inbox.get(timeout=min(max(wait, 0.0), SETTLE_CHECK_MAX))
        except queue.Empty:
            item = None
        try:
            if item is not None and item != WAKE and not self.run.stop.is_set():
                self._name(item)
            self._take_ripe()
        finally:
            if item is not None:
                self.run.inbox.task_done()
            self._count()

    def _count(self) -> None:
        self.settling = len(self.settler) + len(self._ripe) + len(self._reading)

    def _take_ripe(self) -> None:
        """Record the reads that have finished, then start reading the files that have settled
        (up to `CHUNK` at a time); a settled sidecar tells its media file."""
        for path, signature in self.settler.ripe():
            self._ripe.append((path, signature))
            media = media_of(path)
            if media is not None:
                self.intake.sidecar_changed(media)
        self._record_reads()
        self._start_reads()
        self.run.beats.beat()

    def _record_reads(self) -> None:
        """Record the finished reads together: once `RECORD_BATCH` are done, once none is still
        being read, or once the first of them has waited `RECORD_WAIT` (a commit per file would
        cost more than the reads of small files)."""
        count = len(self._finished)
        if not count:
            return
        now = time.monotonic()
        self._holding_since = self._holding_since or now
        if (
            count < RECORD_BATCH
            and count < len(self._reading)
            and now - self._holding_since < RECORD_WAIT
            and not self.run.stop.is_set()
        ):
            return
        self._holding_since = None
        done = [self._finished.popleft() for _ in range(count)]
        reads = [(self._reading.pop(f), f) for f in done]
        finished = [
            (claim, read)
            for claim, future in reads
            if not future.cancelled() and (read := future.result()) is not None
        ]
        if finished:
            self.intake.record(finished)

    def _start_reads(self) -> None:
        reading = {claim.path for claim in self._reading.values()}
        assert self.intake.pool is not None
        files: list[tuple[bytes, Signature]] = []
        while self._ripe and len(self._reading) + len(files) < CHUNK and not self.run.stop.is_set():
            path, signature = self._ripe.popleft()
            if path in reading:  # changed while it is read: looked at again once it settles
                watch = self.intake.config().watch_for(path)
                self.settler.add(path, watch.settle_seconds if watch else 0.0)
                continue
            files.append((path, signature))
            reading.add(path)
        for step in self.intake.claims(files):
            if isinstance(step, _Claim):
                future = self.intake.pool.submit(_read, step)
                self._reading[future] = step
                future.add_done_callback(self._read_done)

    def _read_done(self, future: Future[_Read | None]) -> None:
        """In a reader's thread: this read is over; the intake thread records it."""
        self._finished.append(future)
        self.run.inbox.put(WAKE)

    def _drain(self, below: int) -> None:
        """Wait for reads to finish (recording them) until fewer than `below` files wait: a scan
        of a huge tree keeps what it holds in memory bounded."""
        while len(self._ripe) + len(self._reading) >= below and not self.run.stop.is_set():
            reading = [future for future in self._reading if not future.done()]
            if reading:
                wait(reading, timeout=RECORD_WAIT, return_when=FIRST_COMPLETED)
            self._take_ripe()

    def _name(self, item: bytes) -> None:
        if item == SCAN:
            self.scan()
        elif self.intake.wanted(item):
            watch = self.intake.config().watch_for(item)
            self.settler.add(item, watch.settle_seconds if watch else 0.0)

    def scan(self) -> None:
        """Walk every watched folder; whatever is new or changed since recorded starts settling."""
        started = time.monotonic()
        config = self.intake.config()
        roots = [os.fsencode(w.path) for w in config.watch]
        seen = changed = 0
        for watch in filter(self.scans, config.watch):
            for folders in _batches(walk(watch, roots)):
                known = self.intake.store.known_in(*(folder for folder, _ in folders))
                for path in itertools.chain.from_iterable(paths for _, paths in folders):
                    seen += 1
                    if known.get(path) != _signature(path):
                        changed += 1
                        self.settler.add(path, watch.settle_seconds)
                self.run.beats.beat()  # a big tree on a slow share is work, not a hang
                if len(self.settler) >= SCAN_BATCH:
                    self._take_ripe()  # what has settled already need not wait for the walk
                    self._drain(below=SCAN_BATCH)
                if self.run.stop.is_set():
                    return
        self._count()
        log.info(
            "scanned %d file(s) in %.1f s: %d new or changed",
            seen,
            time.monotonic() - started,
            changed,
        )

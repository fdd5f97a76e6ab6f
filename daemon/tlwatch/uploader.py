"""One file -> one asset, exactly once: intent first, look up before resending, resume multipart.

A claimed file (`uploading`) leaves `upload` as `uploaded` (asset id recorded in the same
transaction), back in `queued` with a time to try again, or `failed` / `skipped` with the reason.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tlwatch.api import Asset, Client, MultipartSession, api_filename
from tlwatch.config import ApiConfig, Config
from tlwatch.errors import (
    ApiError,
    AuthError,
    Cancelled,
    FeatureNotEnabled,
    NotFound,
    OutcomeUnknown,
    RateLimited,
    RequestRejected,
    SourceChanged,
    TransientError,
)
from tlwatch.models import FileState, Kind, regular_signature
from tlwatch.retry import Backoff
from tlwatch.state import FileRow, Store

log = logging.getLogger(__name__)

TOKEN_KEY = "tlwatch_token"  # noqa: S105 - a metadata key name, not a secret
SHA_KEY = "tlwatch_sha256"
PATH_KEY = "tlwatch_path"
IMAGE_LIMIT = 32_000_000
MULTIPART_LIMIT = 10_000_000_000
SERVER_WAIT_CAP = 3600.0  # a Retry-After longer than an hour is taken as an hour


@dataclass
class Hooks:
    """What the uploader tells the rest of the daemon."""

    key_rejected: Callable[[], None] = lambda: None  # pause every upload
    uploaded: Callable[[], None] = lambda: None  # wake the poller
    changed: Callable[[bytes], None] = lambda path: None  # settle and sniff this path again
    hold: Callable[[float], None] = lambda until: None  # rate limited: start no upload before


class Uploader:
    def __init__(
        self,
        store: Store,
        client: Client,
        config: Callable[[], Config],
        hooks: Hooks,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.client, self.config, self.hooks = store, client, config, hooks
        self.clock = clock

    def upload(self, row: FileRow) -> FileRow:
        """Upload a claimed file; whatever happens, leave it in a state that says what's next."""
        try:
            return self._upload(row)
        except ApiError as error:
            return self._refused(row, error)
        except Cancelled:
            return self._requeue(row, "interrupted by shutdown", count_attempt=False)
        except SourceChanged as error:
            self.hooks.changed(row.path)
            later = self.clock() + 3600.0
            return self.store.move(row.id, FileState.QUEUED, str(error), next_attempt_at=later)
        except FileNotFoundError:
            return self.store.move(row.id, FileState.SKIPPED, "gone before it could be uploaded")
        except OSError as error:
            return self._requeue(row, f"cannot read the file: {error.strerror}")

    def _refused(self, row: FileRow, error: ApiError) -> FileRow:
        """Given what the API said no with, return the file in the state that follows."""
        if isinstance(error, AuthError):
            self.hooks.key_rejected()
            return self._requeue(row, "paused: the API key was rejected", count_attempt=False)
        if isinstance(error, OutcomeUnknown):
            # The server may still be storing it: look it up only once that request would have
            # timed out anyway; then adopt it, or send again.
            grace = max(error.retry_after or 0.0, self.config().api.timeout_seconds)
            return self._requeue(row, str(error), wait=grace)
        if isinstance(error, TransientError):
            later = self._requeue(row, str(error), wait=error.retry_after)
            if isinstance(error, RateLimited):
                self.hooks.hold(later.next_attempt_at or self.clock())  # slow every worker down
            return later
        if isinstance(error, NotFound):
            self.store.forget_upload(row.id)
            return self._requeue(row, "the upload session is gone; starting a new one")
        if isinstance(error, FeatureNotEnabled):
            reason = "multipart uploads are not enabled for this account, and the file is over "
            return self.store.move(row.id, FileState.SKIPPED, reason + "the direct limit")
        if isinstance(error, _Skip):
            return self.store.move(row.id, FileState.SKIPPED, str(error))
        return self.store.move(row.id, FileState.FAILED, f"refused by the API: {error}")

    def _requeue(
        self, row: FileRow, reason: str, *, wait: float | None = None, count_attempt: bool = True
    ) -> FileRow:
        attempts = row.attempts if count_attempt else max(row.attempts - 1, 0)
        daemon = self.config().daemon
        backoff = Backoff(daemon.retry_base_seconds, daemon.retry_max_seconds, SERVER_WAIT_CAP)
        delay = backoff.delay(max(attempts, 1), server_wait=wait) if count_attempt else 0.0
        return self.store.move(
            row.id,
            FileState.QUEUED,
            reason,
            attempts=attempts,
            next_attempt_at=self.clock() + delay,
        )

    # ---- the happy path --------------------------------------------------------------------
    def _upload(self, row: FileRow) -> FileRow:
        if regular_signature(row.path) != row.signature:
            if not os.path.exists(row.path):
                raise FileNotFoundError(row.path)
            raise SourceChanged("changed since it was queued; waiting for it to settle")
        if row.upload_token and not row.upload_id:
            found = self._find(row, row.upload_token)  # a lost answer may have stored it
            if found is not None:
                log.info(
                    "%s: found asset %s from an earlier attempt; adopting it", row.shown, found.id
                )
                return self._done(row, found.id, found.status)
        token = row.upload_token or secrets.token_hex(16)
        if token != row.upload_token:
            self.store.update(row.id, upload_token=token)  # the intent, committed before sending
        asset_id, status = self._send(row, token)
        done = self._done(row, asset_id, status)
        if regular_signature(row.path) != row.signature:
            self._discard(asset_id)
            raise SourceChanged("changed while it was being uploaded; sending it again")
        return done

    def _done(self, row: FileRow, asset_id: str, status: str) -> FileRow:
        done = self.store.move(
            row.id,
            FileState.UPLOADED,
            None,
            asset_id=asset_id,
            asset_status=status,
            uploaded_at=self.clock(),
            next_attempt_at=None,
        )
        self.hooks.uploaded()
        return done

    def _send(self, row: FileRow, token: str) -> tuple[str, str]:
        api = self.config().api
        kind = Kind(row.kind or "video")
        if kind is Kind.IMAGE and row.size > IMAGE_LIMIT:
            raise _skip("images over 32 MB cannot be uploaded")
        if row.size > MULTIPART_LIMIT:
            raise _skip("over 10 GB, the largest upload the API takes")
        metadata = self._metadata(row, token)
        if row.size <= api.direct_upload_limit and not row.upload_id:
            try:
                asset = self.client.create_direct(
                    row.path,
                    filename=api_filename(os.path.basename(row.path)),
                    user_metadata=metadata,
                    enable_hls=api.enable_hls,
                    enable_thumbnail=api.enable_thumbnail,
                )
                return asset.id, asset.status
            except RequestRejected as error:
                if error.status != 413:
                    raise
                log.info("%s: too large to send directly; using a multipart upload", row.shown)
        return self._multipart(row, kind, metadata, api), "processing"

    def _metadata(self, row: FileRow, token: str) -> dict[str, Any]:
        watch = self.config().watch_for(row.path)
        extra: Mapping[str, Any] = watch.user_metadata if watch is not None else {}
        return {
            **extra,
            TOKEN_KEY: token,
            SHA_KEY: row.sha256 or "",
            PATH_KEY: row.name.decode("utf-8", "replace")[:1000],
        }

    def _multipart(self, row: FileRow, kind: Kind, metadata: dict[str, Any], api: ApiConfig) -> str:
        session, done = self._resume(row)
        if session is None:
            session = self.client.create_multipart(
                api_filename(os.path.basename(row.path)),
                kind.value,
                row.size,
                user_metadata=metadata,
                enable_hls=api.enable_hls,
                enable_thumbnail=api.enable_thumbnail,
            )
            self.store.update(
                row.id,
                upload_id=session.upload_id,
                asset_id=session.asset_id,
                chunk_size=session.chunk_size,
                total_chunks=session.total_chunks,
            )
            log.info(
                "%s: multipart upload %s started for asset %s (%d chunks)",
                row.shown,
                session.upload_id,
                session.asset_id,
                session.total_chunks,
            )
        if len(done) < session.total_chunks:
            self.client.upload_chunks(
                session,
                row.path,
                done=done,
                on_reported=lambda chunks: self.store.add_chunks(
                    row.id, [(c.chunk_index, c.etag) for c in chunks]
                ),
            )
        return session.asset_id

    def _resume(self, row: FileRow) -> tuple[MultipartSession | None, frozenset[int]]:
        """Given a file with a recorded session, return it and its completed chunks, or
        (None, empty) when there is none to resume."""
        if not (row.upload_id and row.asset_id and row.chunk_size and row.total_chunks):
            return None, frozenset()
        try:
            status = self.client.upload_status(row.upload_id)
        except NotFound:
            status = None
        if status is None or status.status in ("expired", "failed"):
            log.info(
                "%s: multipart upload %s can't be resumed (%s); starting over",
                row.shown,
                row.upload_id,
                status.status if status else "gone",
            )
            self.store.forget_upload(row.id)
            return None, frozenset()
        session = MultipartSession(row.upload_id, row.asset_id, row.chunk_size, row.total_chunks)
        if status.status == "completed":
            return session, frozenset(range(1, row.total_chunks + 1))
        log.info(
            "%s: resuming multipart upload %s at %d of %d chunks",
            row.shown,
            row.upload_id,
            len(status.completed_chunks),
            row.total_chunks,
        )
        return session, status.completed_chunks

    def _find(self, row: FileRow, token: str) -> Asset | None:
        """The asset an earlier direct upload with `token` created, if the API has it. (A
        multipart asset found here lost its session's answer: it can never be completed.)"""
        name = api_filename(os.path.basename(row.path))
        for asset in self.client.list_assets(filename=name):
            metadata = asset.user_metadata or {}
            if metadata.get(TOKEN_KEY) == token and asset.method != "multipart":
                return asset
        return None

    def _discard(self, asset_id: str) -> None:
        try:
            self.client.delete(asset_id, force=True)
        except ApiError as error:
            log.warning("could not delete stale asset %s: %s", asset_id, error)


class _Skip(RequestRejected):
    """This file can never be uploaded as it is."""


def _skip(reason: str) -> _Skip:
    return _Skip(reason)

"""The Twelve Labs assets API client: the only module that imports httpx.

One `Client` is shared by every thread. Files are streamed from disk, never read whole. Errors come
out as the tree in `tlwatch.errors`. Idempotent calls (GET, chunk PUT, chunk report) retry transient
failures here; a create is never retried blindly: that is the uploader's decision.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import httpcore
import httpx

from tlwatch import __version__
from tlwatch.config import DEFAULT_BASE_URL, DaemonConfig
from tlwatch.errors import (
    ApiError,
    AuthError,
    Cancelled,
    Conflict,
    FeatureNotEnabled,
    NotFound,
    OutcomeUnknown,
    RateLimited,
    RequestRejected,
    ServerError,
    SourceChanged,
    TransientError,
    TransportError,
)
from tlwatch.limits import Bandwidth, Pacer, family_of
from tlwatch.logs import redact_url
from tlwatch.retry import Backoff, server_wait

log = logging.getLogger(__name__)

PIECE = 256 * 1024  # bytes read from disk and handed to the socket at a time
REPORT_BATCH = 50  # the API's maximum chunks per report
FINAL_STATUSES = frozenset({"ready", "failed"})
DEFAULT_BACKOFF = DaemonConfig().request_backoff
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

# httpx logs every request's full URL at INFO; presigned URLs carry their signature in the query.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def api_filename(name: str | bytes) -> str:
    """Given a file's base name (bytes-safe), return a valid API `filename`: 1-255 characters,
    no control characters, undecodable bytes as U+FFFD, shortened with the extension kept."""
    text = os.fsencode(name).decode("utf-8", "replace")
    text = "".join("_" if ch < " " or ch == "\x7f" else ch for ch in text).strip() or "file"
    if len(text) <= 255:
        return text
    stem, dot, extension = text.rpartition(".")
    if not dot or not stem or len(extension) > 16:
        return text[:254] + "…"
    return stem[: 254 - len(extension) - 1] + "…." + extension


# ---- what the API returns ------------------------------------------------------------------
@dataclass(frozen=True)
class Asset:
    """An asset as the API describes it; fields unknown to this version are kept in `raw`."""

    id: str
    status: str
    filename: str | None = None
    method: str | None = None
    file_type: str | None = None
    created_at: str | None = None
    user_metadata: Mapping[str, Any] | None = None
    size: int | None = None
    duration: float | None = None
    error: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def final(self) -> bool:
        """Ready and failed are final; any other status, known or not, is still pending."""
        return self.status in FINAL_STATUSES

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Asset:
        error = data.get("error")
        metadata = data.get("user_metadata")
        if isinstance(metadata, str):  # some generations echo the JSON string back
            try:
                metadata = json.loads(metadata)
            except ValueError:
                metadata = None
        return cls(
            id=str(data.get("_id") or data.get("id") or ""),
            status=str(data.get("status") or "unknown"),
            filename=data.get("filename"),
            method=data.get("method"),
            file_type=data.get("file_type"),
            created_at=data.get("created_at"),
            user_metadata=metadata if isinstance(metadata, dict) else None,
            size=data.get("size"),
            duration=data.get("duration"),
            error=error.get("message") if isinstance(error, dict) else None,
            raw=data,
        )


@dataclass(frozen=True)
class IndexedAsset:
    """An indexed asset as the API describes it; any status but ready/failed is pending."""

    id: str
    asset_id: str
    status: str
    error: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IndexedAsset:
        error = data.get("error")
        return cls(
            id=str(data.get("_id") or data.get("id") or ""),
            asset_id=str(data.get("asset_id") or ""),
            status=str(data.get("status") or "unknown"),
            error=error.get("message") if isinstance(error, dict) else None,
        )


@dataclass(frozen=True)
class UploadUrl:
    chunk_index: int
    url: str = field(repr=False)  # presigned: never shown
    expires_at: str | None = None


@dataclass(frozen=True)
class MultipartSession:
    upload_id: str
    asset_id: str
    chunk_size: int
    total_chunks: int
    upload_urls: tuple[UploadUrl, ...] = field(default=(), repr=False)
    upload_headers: Mapping[str, str] = field(default_factory=dict)
    expires_at: str | None = None


@dataclass(frozen=True)
class CompletedChunk:
    chunk_index: int
    etag: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "chunk_index": self.chunk_index,
            "proof": self.etag,
            "proof_type": "etag",
            "chunk_size": self.size,
        }


@dataclass(frozen=True)
class ReportResult:
    asset_id: str
    processed: int
    duplicates: int
    total_completed: int


@dataclass(frozen=True)
class UploadStatus:
    upload_id: str
    status: str
    completed_chunks: frozenset[int]
    total_size: int | None
    uploaded_size: int | None


def _urls(items: Sequence[Mapping[str, Any]]) -> tuple[UploadUrl, ...]:
    return tuple(
        UploadUrl(int(u["chunk_index"]), str(u["url"]), u.get("expires_at")) for u in items
    )


# ---- the client ----------------------------------------------------------------------------
class Client:
    """Speaks the assets API. Thread-safe; a context manager that closes its connections."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 60.0,
        max_attempts: int = 5,
        backoff: Backoff = DEFAULT_BACKOFF,
        sleep: Callable[[float], object] = time.sleep,
        cancel: threading.Event | None = None,
        progress: Callable[[], None] = lambda: None,
        on_sent: Callable[[int], None] = lambda count: None,
        on_answer: Callable[[str, int], None] = lambda endpoint, code: None,
        pacer: Pacer | None = None,
        bandwidth: Bandwidth | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._key = api_key
        self._cancel = cancel or threading.Event()  # set: abandon uploads in flight (shutdown)
        self._progress = progress  # called as bytes go out: a sign of life for the watchdog
        self._on_sent = on_sent  # told how many bytes go out, on the thread that sends them
        self._on_answer = on_answer  # (endpoint name, HTTP status; 0: no answer), for metrics
        self.pacer = pacer or Pacer()  # waits out a used-up rate-limit window, per family
        self.bandwidth = bandwidth or Bandwidth(None)  # the upload rate cap, shared
        self.base_url = base_url.rstrip("/")
        self.max_attempts = max_attempts
        self.backoff = backoff
        self._sleep = sleep  # returns truthy to give up waiting (e.g. a stop event's `wait`)
        self._sockets = _Sockets()
        # Straight to the transport: an `httpx.Client` would add, per request, a cookie jar,
        # auth and redirect handling, and URL merging that tlwatch never uses (a third of its
        # CPU per small upload). Proxies from the environment were never used either.
        self._transport = transport or self._sockets.transport()
        self._headers = {"user-agent": f"tlwatch/{__version__}"}
        self._timeouts = {"timeout": httpx.Timeout(timeout, connect=min(timeout, 15.0)).as_dict()}

    def set_api_key(self, api_key: str) -> None:
        """Use a new key from now on (the old one was rejected and the user fixed it)."""
        self._key = api_key

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r}, api_key=<hidden>)"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    def _sent(self, size: int) -> None:
        """A piece of a file is about to go out: a sign of life, and the bandwidth cap's wait."""
        self._progress()
        self._on_sent(size)
        delay = self.bandwidth.take(size)
        if delay > 0:
            self._sleep(delay)

    def abort(self) -> None:
        """From another thread: stop uploads in flight and shut every connection down, so
        requests blocked on the network fail at once (shutdown). Their outcome is then unknown."""
        self._cancel.set()
        self._sockets.shut_all()

    # ---- assets ----------------------------------------------------------------------------
    def create_direct(
        self,
        path: str | bytes | os.PathLike[str] | os.PathLike[bytes],
        *,
        filename: str | None = None,
        user_metadata: Mapping[str, Any] | None = None,
        enable_hls: bool | None = None,
        enable_thumbnail: bool | None = None,
    ) -> Asset:
        """Upload a file's bytes as a new asset. Never retried: see `OutcomeUnknown`."""
        name = filename or api_filename(os.path.basename(os.fsencode(path)))
        fields = _create_fields("direct", name, user_metadata, enable_hls, enable_thumbnail)
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            body = _FormBody(fields, file, size, name, self._cancel, self._sent)
            response = self._call(
                "POST", "assets", idempotent=False, content=body.stream(), headers=body.headers
            )
        return Asset.from_json(response.json())

    def create_from_url(
        self,
        url: str,
        *,
        filename: str | None = None,
        user_metadata: Mapping[str, Any] | None = None,
        enable_hls: bool | None = None,
        enable_thumbnail: bool | None = None,
    ) -> Asset:
        """Ask the platform to fetch a public URL as a new asset. Never retried."""
        fields = _create_fields("url", filename, user_metadata, enable_hls, enable_thumbnail)
        fields.append(("url", url))
        body = _FormBody(fields, None, 0, "", self._cancel, self._sent)
        response = self._call(
            "POST", "assets", idempotent=False, content=body.stream(), headers=body.headers
        )
        return Asset.from_json(response.json())

    def retrieve(self, asset_id: str) -> Asset:
        return Asset.from_json(self._call("GET", f"assets/{asset_id}").json())

    def list_assets(
        self,
        *,
        filename: str | None = None,
        asset_ids: Sequence[str] = (),
        asset_types: Sequence[str] = (),
        page_limit: int = 50,
    ) -> Iterator[Asset]:
        """Yield every matching asset, newest first, page by page until the last one."""
        params: list[tuple[str, str | int]] = [("page_limit", page_limit)]
        params += [("asset_ids", i) for i in asset_ids] + [("asset_types", t) for t in asset_types]
        if filename is not None:
            params.append(("filename", filename))
        for body in self._pages("assets", "data", params):
            yield from (Asset.from_json(item) for item in body.get("data") or [])

    def delete(self, asset_id: str, *, force: bool = False) -> None:
        params = {"force": "true"} if force else None
        self._call("DELETE", f"assets/{asset_id}", params=params)

    # ---- indexing --------------------------------------------------------------------------
    def create_indexed_asset(
        self,
        index_id: str,
        asset_id: str,
        *,
        user_metadata: Mapping[str, Any] | None = None,
        enable_video_stream: bool | None = None,
    ) -> str:
        """Ask the index to index a ready asset; return the indexed asset's id. Never retried:
        like a create, it has no idempotency key (the caller looks it up after a lost answer)."""
        payload: dict[str, Any] = {"asset_id": asset_id}
        if user_metadata:
            payload["user_metadata"] = dict(user_metadata)
        if enable_video_stream is not None:
            payload["enable_video_stream"] = enable_video_stream
        path = f"indexes/{index_id}/indexed-assets"
        body = self._call("POST", path, idempotent=False, json=payload).json()
        return str(body["_id"])

    def index_models(self, index_id: str) -> list[str]:
        """The names of the models an index was made with (`GET /indexes/{id}`)."""
        body = self._call("GET", f"indexes/{index_id}").json()
        models = body.get("models") if isinstance(body, dict) else None
        return [str(m.get("model_name")) for m in models or [] if isinstance(m, dict)]

    def retrieve_indexed_asset(self, index_id: str, indexed_asset_id: str) -> IndexedAsset:
        path = f"indexes/{index_id}/indexed-assets/{indexed_asset_id}"
        return IndexedAsset.from_json(self._call("GET", path).json())

    def list_indexed_assets(self, index_id: str, *, pages: int = 1) -> Iterator[IndexedAsset]:
        """The index's indexed assets, newest first, 50 to a page, at most `pages` pages."""
        path = f"indexes/{index_id}/indexed-assets"
        for number, body in enumerate(self._pages(path, "data", [("page_limit", 50)]), start=1):
            yield from (IndexedAsset.from_json(item) for item in body.get("data") or [])
            if number >= pages:
                return

    def indexes_of(self, asset_id: str) -> dict[str, str]:
        """Every index that references the asset: index id -> indexed asset id (all pages)."""
        found: dict[str, str] = {}
        path = f"assets/{asset_id}/indexed-assets"
        for body in self._pages(path, "data", [("page_limit", 50)]):
            for item in body.get("data") or []:
                index = item.get("index") or {}
                if index.get("_id") and item.get("_id"):
                    found[str(index["_id"])] = str(item["_id"])
        return found

    def update_asset_metadata(self, asset_id: str, user_metadata: Mapping[str, Any]) -> None:
        """Merge `user_metadata` into the asset's (a key set to None deletes it)."""
        path = f"assets/{asset_id}/user-metadata"
        self._call("PATCH", path, json={"user_metadata": dict(user_metadata)})

    def update_indexed_metadata(
        self, index_id: str, indexed_asset_id: str, user_metadata: Mapping[str, Any]
    ) -> None:
        path = f"indexes/{index_id}/indexed-assets/{indexed_asset_id}"
        self._call("PATCH", path, json={"user_metadata": dict(user_metadata)})

    # ---- multipart -------------------------------------------------------------------------
    def create_multipart(
        self,
        filename: str,
        kind: str,
        total_size: int,
        *,
        user_metadata: Mapping[str, Any] | None = None,
        enable_hls: bool | None = None,
        enable_thumbnail: bool | None = None,
    ) -> MultipartSession:
        """Open a multipart upload session (reserves the asset id). Never retried."""
        payload: dict[str, Any] = {"filename": filename, "type": kind, "total_size": total_size}
        extras = {"enable_hls": enable_hls, "enable_thumbnail": enable_thumbnail}
        payload |= {key: value for key, value in extras.items() if value is not None}
        if user_metadata is not None:
            payload["user_metadata"] = dict(user_metadata)
        body = self._call("POST", "assets/multipart-uploads", idempotent=False, json=payload).json()
        return MultipartSession(
            upload_id=body["upload_id"],
            asset_id=body["asset_id"],
            chunk_size=int(body["chunk_size"]),
            total_chunks=int(body["total_chunks"]),
            upload_urls=_urls(body.get("upload_urls") or []),
            upload_headers=body.get("upload_headers") or {},
            expires_at=body.get("expires_at"),
        )

    def presigned_urls(self, upload_id: str, start: int, count: int) -> tuple[UploadUrl, ...]:
        """Fresh presigned URLs for chunks start..start+count-1 (at most 50)."""
        payload = {"start": start, "count": min(count, 50)}
        path = f"assets/multipart-uploads/{upload_id}/presigned-urls"
        return _urls(self._call("POST", path, json=payload).json().get("upload_urls") or [])

    def put_chunk(
        self, url: UploadUrl, data: bytes | memoryview, headers: Mapping[str, str] | None = None
    ) -> str:
        """PUT one chunk to its presigned URL (no API key); return its ETag, unquoted.
        Not retried here: a presigned URL is single-use (see `upload_chunks`)."""
        sized = {**(headers or {}), "content-length": str(len(data))}
        response = self._call(
            "PUT",
            url.url,
            content=_pieces(data, self._sent),
            headers=sized,
            api=False,
            attempts=1,
        )
        return str(response.headers.get("etag", "")).strip('"')

    def report_chunks(self, upload_id: str, chunks: Sequence[CompletedChunk]) -> ReportResult:
        """Report uploaded chunks, in batches of at most 50; return the last answer."""
        result = ReportResult("", 0, 0, 0)
        for start in range(0, len(chunks), REPORT_BATCH):
            batch = [chunk.to_json() for chunk in chunks[start : start + REPORT_BATCH]]
            path = f"assets/multipart-uploads/{upload_id}"
            body = self._call("POST", path, json={"completed_chunks": batch}).json()
            result = ReportResult(
                asset_id=str(body.get("asset_id", "")),
                processed=result.processed + int(body.get("processed_chunks", 0)),
                duplicates=result.duplicates + int(body.get("duplicate_chunks", 0)),
                total_completed=int(body.get("total_completed", 0)),
            )
        return result

    def upload_status(self, upload_id: str) -> UploadStatus:
        """The session's status and every chunk it counts as completed (all pages)."""
        done: set[int] = set()
        body: dict[str, Any] = {}
        path = f"assets/multipart-uploads/{upload_id}"
        for body in self._pages(path, "uploaded_chunks", [("page_limit", 50)]):
            chunks = body.get("uploaded_chunks") or []
            done |= {int(c["index"]) for c in chunks if c.get("status") == "completed"}
        return UploadStatus(
            upload_id=upload_id,
            status=str(body.get("status", "unknown")),
            completed_chunks=frozenset(done),
            total_size=body.get("total_size"),
            uploaded_size=body.get("uploaded_size"),
        )

    def incomplete_uploads(self) -> list[dict[str, Any]]:
        """The account's multipart sessions that are still open (all pages)."""
        pages = self._pages("assets/multipart-uploads", "data", [("page_limit", 50)])
        return [session for body in pages for session in body.get("data") or []]

    def _pages(
        self, path: str, items: str, params: Sequence[tuple[str, str | int]]
    ) -> Iterator[dict[str, Any]]:
        """Yield each page's body from page 1 until `items` comes back empty or the last page
        (`page_info.total_page`) has been read; a server that pages on past the end is fine."""
        page = 1
        while True:
            body: dict[str, Any] = self._call("GET", path, params=[*params, ("page", page)]).json()
            yield body
            last = (body.get("page_info") or {}).get("total_page") or page
            if not body.get(items) or page >= last:
                return
            page += 1

    def upload_chunks(
        self,
        session: MultipartSession,
        path: str | bytes | os.PathLike[str] | os.PathLike[bytes],
        *,
        done: frozenset[int] = frozenset(),
        on_reported: Callable[[Sequence[CompletedChunk]], None] = lambda chunks: None,
        report_every: int = 10,
    ) -> ReportResult:
        """Send every chunk not in `done`, one in memory at a time, reporting as it goes.
        `on_reported` hears each reported batch, so a caller can persist progress."""
        urls = {u.chunk_index: u for u in session.upload_urls}
        pending: list[CompletedChunk] = []
        result = ReportResult(session.asset_id, 0, 0, len(done))
        buffer = bytearray(session.chunk_size)  # the one chunk in memory, reused for each
        with open(path, "rb") as file:
            total_size = os.fstat(file.fileno()).st_size
            for index in range(1, session.total_chunks + 1):
                if index in done:
                    continue
                if self._cancel.is_set():
                    raise Cancelled(f"multipart upload stopped before chunk {index}")
                data = _read_chunk(file, buffer, session, index, total_size)
                pending.append(self._send_chunk(session, urls, index, data))
                if len(pending) >= report_every or index == session.total_chunks:
                    result = self.report_chunks(session.upload_id, pending)
                    on_reported(pending)
                    pending = []
        if pending:
            result = self.report_chunks(session.upload_id, pending)
            on_reported(pending)
        return result

    def _send_chunk(
        self,
        session: MultipartSession,
        urls: dict[int, UploadUrl],
        index: int,
        data: memoryview,
    ) -> CompletedChunk:
        attempt = 0
        while True:
            url = urls.pop(index, None)
            if url is None:
                fresh = self.presigned_urls(session.upload_id, index, REPORT_BATCH)
                urls |= {u.chunk_index: u for u in fresh}
                url = urls.pop(index)
            try:
                etag = self.put_chunk(url, data, session.upload_headers)
                return CompletedChunk(index, etag, len(data))
            except (TransientError, FeatureNotEnabled) as error:  # 403: URL expired or used
                attempt += 1
                if attempt >= self.max_attempts:
                    raise
                self._wait(attempt, error, f"chunk {index}")

    # ---- one request -----------------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool = True,
        api: bool = True,
        attempts: int | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        headers = dict(headers or {})
        if api:
            headers["x-api-key"] = self._key
        limit = (attempts or self.max_attempts) if idempotent else 1
        attempt = 0
        while True:
            try:
                return self._once(method, path, idempotent, headers=headers, **kwargs)
            except TransientError as error:
                attempt += 1
                if attempt >= limit or (error.retry_after or 0) > self.backoff.server_cap:
                    raise
                self._wait(attempt, error, f"{method} {_shown(path)}")

    def _wait(self, attempt: int, error: ApiError, what: str) -> None:
        delay = self.backoff.delay(attempt, server_wait=error.retry_after)
        log.info("%s: %s; retrying in %.1f s", what, error, delay)
        if self._sleep(delay):
            raise error

    def _once(self, method: str, path: str, idempotent: bool, **kwargs: Any) -> httpx.Response:
        shown = f"{method} {_shown(path)}"
        endpoint = endpoint_name(method, path)
        family = family_of(endpoint)
        while (wait := self.pacer.take(family)) > 0:
            log.debug(
                "%s: the %s rate-limit window is used up; waiting %.1f s", shown, family, wait
            )
            if self._sleep(wait):
                break  # stopping: the request goes (or is cut short) as it would have
        try:
            response = self._send(method, path, **kwargs)
        except httpx.TransportError as error:
            self._on_answer(endpoint, 0)
            reason = redact_url(f"{type(error).__name__}: {error}").replace(self._key, "<key>")
            if idempotent or isinstance(error, _NOT_SENT):
                raise TransportError(f"{shown}: {reason}") from None
            raise OutcomeUnknown(
                f"{shown}: no answer ({reason}); it may have been stored"
            ) from None
        log.debug("%s -> %s", shown, response.status_code)
        self._on_answer(endpoint, response.status_code)
        self.pacer.observe(family, response.headers)
        if response.is_success:
            return response
        raise _error_for(shown, response)

    def _send(
        self, method: str, path: str, *, headers: dict[str, str], **kwargs: Any
    ) -> httpx.Response:
        """One request, its answer read whole: `path` is under the base URL, or a full URL."""
        url = path if "://" in path else f"{self.base_url}/{path}"
        request = httpx.Request(
            method, url, headers=self._headers | headers, extensions=self._timeouts, **kwargs
        )
        response = self._transport.handle_request(request)
        try:
            response.read()
        finally:
            response.close()
        return response


class _Sockets(httpcore.SyncBackend):
    """httpcore's network backend, remembering its sockets so `abort` can shut them down:
    closing a socket does not wake a thread blocked reading it; `shutdown` does."""

    def __init__(self) -> None:
        self._open: weakref.WeakSet[socket.socket] = weakref.WeakSet()

    def transport(self) -> httpx.HTTPTransport:
        """An httpx transport whose connections come from this backend. httpx has no public
        hook for it: if the private attribute is gone (a new httpx), fail here, loudly, rather
        than let shutdown silently wait out every request's timeout."""
        transport = httpx.HTTPTransport()
        pool = getattr(transport, "_pool", None)
        if not hasattr(pool, "_network_backend"):
            raise RuntimeError(
                f"httpx {httpx.__version__}: HTTPTransport._pool._network_backend is gone; "
                "tlwatch cannot cut requests short at shutdown (pin httpx<0.29 or update tlwatch)"
            )
        pool._network_backend = self  # type: ignore[union-attr]
        return transport

    def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        stream = super().connect_tcp(*args, **kwargs)
        sock = stream.get_extra_info("socket")
        if isinstance(sock, socket.socket):
            self._open.add(sock)
        return stream

    def shut_all(self) -> None:
        for sock in list(self._open):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


_ENDPOINTS = [
    (method, re.compile(pattern), name)
    for method, pattern, name in (
        ("POST", r"assets/multipart-uploads/[^/]+/presigned-urls", "multipart.urls"),
        ("GET", r"assets/multipart-uploads/[^/]+", "multipart.status"),
        ("POST", r"assets/multipart-uploads/[^/]+", "multipart.report"),
        ("GET", r"assets/multipart-uploads", "multipart.list"),
        ("POST", r"assets/multipart-uploads", "multipart.create"),
        ("PATCH", r"assets/[^/]+/user-metadata", "assets.metadata"),
        ("GET", r"assets/[^/]+/indexed-assets", "assets.indexes"),
        ("GET", r"assets/[^/]+", "assets.retrieve"),
        ("DELETE", r"assets/[^/]+", "assets.delete"),
        ("GET", r"assets", "assets.list"),
        ("POST", r"assets", "assets.create"),
        ("GET", r"indexes/[^/]+", "indexes.retrieve"),
        ("GET", r"indexes/[^/]+/indexed-assets/[^/]+", "indexing.retrieve"),
        ("PATCH", r"indexes/[^/]+/indexed-assets/[^/]+", "indexing.metadata"),
        ("GET", r"indexes/[^/]+/indexed-assets", "indexing.list"),
        ("POST", r"indexes/[^/]+/indexed-assets", "indexing.create"),
    )
]


def endpoint_name(method: str, path: str) -> str:
    """Given a request, return its endpoint as a template name (never a URL, never an id)."""
    if "://" in path:
        return "multipart.chunk" if method == "PUT" else "other"
    target = path.split("?", 1)[0].strip("/")
    for wanted, pattern, name in _ENDPOINTS:
        if wanted == method and pattern.fullmatch(target):
            return name
    return "other"


def _shown(path: str) -> str:
    """A request target fit for logs: no query string, no host for presigned URLs."""
    return redact_url(path) if "://" in path else path.split("?", maxsplit=1)[0]


def _error_for(shown: str, response: httpx.Response) -> ApiError:
    """Given a failed response, return the matching error from the tree."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = {}
    code = body.get("code") if isinstance(body, dict) else None
    detail = body.get("message") if isinstance(body, dict) else None
    message = f"{shown}: HTTP {status}" + (f" {code}" if code else "")
    message += f": {str(detail)[:200]}" if detail else ""
    wait = server_wait(response.headers)
    kinds: dict[int, type[ApiError]] = {
        401: AuthError,
        403: FeatureNotEnabled,
        404: NotFound,
        409: Conflict,
        429: RateLimited,
        408: ServerError,
    }
    kind = kinds.get(status) or (ServerError if status >= 500 else RequestRejected)
    return kind(redact_url(message), status=status, code=code, retry_after=wait)


def _create_fields(
    method: str,
    filename: str | None,
    user_metadata: Mapping[str, Any] | None,
    enable_hls: bool | None,
    enable_thumbnail: bool | None,
) -> list[tuple[str, str]]:
    fields = [("method", method)]
    if filename is not None:
        fields.append(("filename", api_filename(filename)))
    if user_metadata is not None:
        fields.append(("user_metadata", json.dumps(dict(user_metadata), ensure_ascii=False)))
    for name, flag in (("enable_hls", enable_hls), ("enable_thumbnail", enable_thumbnail)):
        if flag is not None:
            fields.append((name, "true" if flag else "false"))
    return fields


class _FormBody:
    """A multipart/form-data body: text fields first, then the file streamed from disk, with an
    exact Content-Length so nothing is buffered or chunk-encoded."""

    def __init__(
        self,
        fields: list[tuple[str, str]],
        file: BinaryIO | None,
        size: int,
        filename: str,
        cancel: threading.Event,
        progress: Callable[[int], None],
    ) -> None:
        self.cancel, self.progress = cancel, progress
        self.boundary = secrets.token_hex(16)
        self.file, self.size = file, size
        head = b"".join(self._part(name, value.encode()) for name, value in fields)
        if file is not None:
            safe = filename.replace('"', "%22").replace("\\", "_").encode()
            head += (
                f"--{self.boundary}\r\n".encode()
                + b'Content-Disposition: form-data; name="file"; filename="'
                + safe
                + b'"\r\n'
                + b"Content-Type: application/octet-stream\r\n\r\n"
            )
        self.head = head
        self.tail = (b"\r\n" if file is not None else b"") + f"--{self.boundary}--\r\n".encode()

    def _part(self, name: str, value: bytes) -> bytes:
        disposition = f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        return f"--{self.boundary}\r\n".encode() + disposition + value + b"\r\n"

    @property
    def headers(self) -> dict[str, str]:
        length = len(self.head) + self.size + len(self.tail)
        return {
            "content-type": f"multipart/form-data; boundary={self.boundary}",
            "content-length": str(length),
        }

    def stream(self) -> Iterator[bytes]:
        yield self.head
        left = self.size
        while self.file is not None and left > 0:
            if self.cancel.is_set():
                raise Cancelled("upload abandoned: shutting down")
            self.progress(min(PIECE, left))
            piece = self.file.read(min(PIECE, left))
            if not piece:
                raise SourceChanged("the file shrank while it was being uploaded")
            left -= len(piece)
            yield piece
        yield self.tail


def _pieces(data: bytes | memoryview, progress: Callable[[int], None]) -> Iterator[memoryview]:
    """Given a chunk, yield it as 1 MiB views. A generator, not the bytes themselves: httpx keeps
    a request's `content` alive in a reference cycle until the next garbage collection, and
    httpcore copies what is left of a buffer after each partial send (quadratic for one big piece).
    """
    view = memoryview(data)
    for start in range(0, len(view), PIECE):
        piece = view[start : start + PIECE]
        progress(len(piece))
        yield piece


def _read_chunk(
    file: io.BufferedReader,
    buffer: bytearray,
    session: MultipartSession,
    index: int,
    total_size: int,
) -> memoryview:
    """Read chunk `index` into `buffer`; return the filled part, exactly as the session cut it."""
    offset = (index - 1) * session.chunk_size
    expected = min(session.chunk_size, total_size - offset)
    chunks_now = -(-total_size // session.chunk_size)
    if chunks_now != session.total_chunks or expected <= 0:
        raise SourceChanged(f"chunk {index}: the file changed size while being uploaded")
    file.seek(offset)
    view = memoryview(buffer)[:expected]
    if file.readinto(view) != expected:
        raise SourceChanged(f"chunk {index}: the file changed size while being uploaded")
    return view

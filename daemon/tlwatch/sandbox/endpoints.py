"""The sandbox's create and multipart endpoints: the API's validation rules and their answers."""

from __future__ import annotations

import hashlib
import mimetypes
import os
import secrets
import time
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from tlwatch.sandbox import formdata
from tlwatch.sandbox.service import (
    Asset,
    Chunk,
    Grant,
    Json,
    Refusal,
    Service,
    Session,
    int_param,
    new_id,
    page_info,
    parse_user_metadata,
    rfc3339,
)

CREATE_FIELDS = frozenset(
    {"method", "file", "url", "filename", "user_metadata", "enable_hls", "enable_thumbnail"}
)
SESSION_FIELDS = frozenset(
    {"filename", "type", "total_size", "enable_hls", "enable_thumbnail", "user_metadata"}
)
GATEWAY_SLACK = 1_000_000  # bytes of form overhead a gateway lets through above the limit


class _FileSink:
    """Writes a file part to disk; past `limit` it only counts."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path, self.limit = path, limit
        self.file: BinaryIO = path.open("wb")
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if self.size <= self.limit:
            self.file.write(data)


def _bool_field(fields: dict[str, str], name: str) -> bool | None:
    raw = fields.get(name)
    if raw is None:
        return None
    if raw.lower() not in ("true", "false"):
        raise Refusal(400, "parameter_invalid", f"{name} must be true or false")
    return raw.lower() == "true"


def _check_filename(name: object) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= 255:
        raise Refusal(400, "parameter_invalid", "filename must be 1 to 255 characters")
    return name


def create_asset(svc: Service, headers: Any, body: Any) -> Json:
    """POST /assets: a direct upload (streamed to disk) or a URL to fetch."""
    limit = svc.settings.direct_limit
    if body.length is not None and body.length > limit + GATEWAY_SLACK:
        raise Refusal(413, "payload_too_large", "the request is larger than the upload limit")
    asset_id = new_id()
    sinks: list[_FileSink] = []

    def open_sink(name: str, filename: str, content_type: str) -> _FileSink:
        sink = _FileSink(svc.data_dir / f"{asset_id}-{len(sinks)}", limit)
        sinks.append(sink)
        return sink

    kept: Path | None = None
    try:
        boundary = formdata.boundary_of(headers.get("content-type", ""))
        form = formdata.parse(body.read, boundary, open_sink, known=CREATE_FIELDS)
        for sink in sinks:
            sink.file.close()
        asset = _new_asset(svc, asset_id, form, sinks)
        kept = asset.path
        return svc.view(asset)
    finally:
        for sink in sinks:
            sink.file.close()
            if sink.path != kept:
                sink.path.unlink(missing_ok=True)


def _new_asset(svc: Service, asset_id: str, form: formdata.Form, sinks: list[Any]) -> Asset:
    fields = form.fields
    if form.unknown:
        raise Refusal(400, "parameter_unknown", f"unknown parameter: {form.unknown[0]}")
    method = fields.get("method")
    if method is None:
        raise Refusal(400, "parameter_not_provided", "method is required")
    if method not in ("direct", "url"):
        raise Refusal(400, "parameter_invalid", "method must be direct or url")
    metadata = fields.get("user_metadata")
    asset = Asset(
        id=asset_id,
        method=method,
        filename="",
        file_type="application/octet-stream",
        created_at=time.time(),
        user_metadata=None if metadata is None else parse_user_metadata(metadata),
        enable_hls=_bool_field(fields, "enable_hls"),
        enable_thumbnail=_bool_field(fields, "enable_thumbnail"),
    )
    if "filename" in fields:
        asset.filename = _check_filename(fields["filename"])
    if method == "direct":
        _take_file(svc, asset, form, sinks)
    else:
        _take_url(svc, asset, fields)
    svc.add(asset)
    return asset


def _take_file(svc: Service, asset: Asset, form: formdata.Form, sinks: list[Any]) -> None:
    if "file" not in form.files:
        raise Refusal(400, "parameter_not_provided", "file is required when method is direct")
    sink = sinks[list(form.files).index("file")]
    if sink.size == 0:
        raise Refusal(400, "parameter_invalid", "the file is empty")
    if sink.size > svc.settings.direct_limit:
        raise Refusal(400, "parameter_invalid", "the file exceeds the direct upload limit")
    asset.path = svc.data_dir / asset.id
    sink.path.rename(asset.path)
    sink.path = asset.path
    asset.filename = asset.filename or form.files["file"] or "file"
    svc.finish_bytes(asset)
    if asset.file_type.startswith("image/") and asset.size > svc.settings.image_limit:
        raise Refusal(400, "parameter_invalid", "images may be at most 32 MB")


def _take_url(svc: Service, asset: Asset, fields: dict[str, str]) -> None:
    url = fields.get("url")
    if not url:
        raise Refusal(400, "parameter_not_provided", "url is required when method is url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise Refusal(400, "parameter_invalid", "url must be an http(s) URL")
    asset.source_url = url
    asset.filename = asset.filename or unquote(Path(parts.path).name) or "asset"
    guessed = mimetypes.guess_type(asset.filename)[0]
    asset.file_type = guessed or asset.file_type
    asset.done_at = svc.clock()


# ---- multipart -----------------------------------------------------------------------------
def create_session(svc: Service, raw: Json, origin: str) -> Json:
    """POST /assets/multipart-uploads."""
    settings = svc.settings
    if not settings.multipart_enabled:
        raise Refusal(403, "forbidden", "multipart uploads are not enabled for this account")
    fields = {key: value for key, value in raw.items() if value is not None}
    unknown = sorted(set(fields) - SESSION_FIELDS)
    if unknown:
        raise Refusal(400, "parameter_unknown", f"unknown parameter: {unknown[0]}")
    for name in ("filename", "type", "total_size"):
        if name not in fields:
            raise Refusal(400, "parameter_not_provided", f"{name} is required")
    filename = _check_filename(fields["filename"])
    kind = fields["type"]
    if kind not in ("video", "audio", "image"):
        raise Refusal(400, "parameter_invalid", "type must be video, audio or image")
    total = fields["total_size"]
    if not isinstance(total, int) or isinstance(total, bool) or total < 1:
        raise Refusal(400, "parameter_invalid", "total_size must be a positive integer")
    limit = settings.image_limit if kind == "image" else settings.multipart_limit
    if total > limit:
        raise Refusal(400, "parameter_invalid", f"total_size exceeds the {kind} limit")
    metadata = fields.get("user_metadata")
    asset = Asset(
        id=new_id(),
        method="multipart",
        filename=filename,
        file_type=mimetypes.guess_type(filename)[0] or f"{kind}/octet-stream",
        created_at=time.time(),
        user_metadata=None if metadata is None else parse_user_metadata(metadata),
        enable_hls=fields.get("enable_hls"),
        enable_thumbnail=fields.get("enable_thumbnail"),
        size=total,
    )
    asset.path = svc.data_dir / f"{asset.id}.multipart"
    asset.path.touch()
    session = Session(new_id(), asset, kind, total, settings.chunk_size, time.time())
    with svc.lock:
        svc.sessions[session.upload_id] = session
        svc.assets[asset.id] = asset
    count = min(settings.initial_urls, session.total_chunks)
    return {
        "upload_id": session.upload_id,
        "asset_id": asset.id,
        "upload_urls": _grant_urls(svc, session, 1, count, origin),
        "upload_headers": {},
        "chunk_size": session.chunk_size,
        "total_chunks": session.total_chunks,
        "expires_at": rfc3339(session.created_at + settings.session_ttl),
    }


def _grant_urls(svc: Service, session: Session, start: int, count: int, origin: str) -> list[Json]:
    expires = time.time() + svc.settings.url_ttl
    urls = []
    for index in range(start, start + count):
        token = secrets.token_urlsafe(16)
        with svc.lock:
            svc.grants[token] = Grant(session.upload_id, index, expires)
        url = f"{origin}/_storage/{session.upload_id}/{index}?token={token}"
        urls.append({"chunk_index": index, "url": url, "expires_at": rfc3339(expires)})
    return urls


def _session(svc: Service, upload_id: str) -> Session:
    with svc.lock:
        session = svc.sessions.get(upload_id)
    if session is None:
        raise Refusal(404, "resource_not_exist", f"upload {upload_id} does not exist")
    return session


def _session_status(svc: Service, session: Session) -> str:
    if session.completed:
        return "completed"
    if time.time() > session.created_at + svc.settings.session_ttl:
        return "expired"
    return "active"


def _require_active(svc: Service, session: Session) -> None:
    status = _session_status(svc, session)
    if status != "active":
        raise Refusal(400, "parameter_invalid", f"the upload session is {status}")


def more_urls(svc: Service, upload_id: str, raw: Json, origin: str) -> Json:
    """POST /assets/multipart-uploads/{id}/presigned-urls."""
    session = _session(svc, upload_id)
    _require_active(svc, session)
    start, count = raw.get("start"), raw.get("count")
    if start is None or count is None:
        raise Refusal(400, "parameter_not_provided", "start and count are required")
    if not isinstance(start, int) or not 1 <= start <= session.total_chunks:
        raise Refusal(400, "parameter_invalid", "start must be a chunk index")
    if not isinstance(count, int) or not 1 <= count <= 50:
        raise Refusal(400, "parameter_invalid", "count must be between 1 and 50")
    count = min(count, session.total_chunks - start + 1)
    urls = _grant_urls(svc, session, start, count, origin)
    return {
        "upload_id": upload_id,
        "start_index": start,
        "count": count,
        "upload_urls": urls,
        "generated_at": rfc3339(time.time()),
        "expires_at": urls[0]["expires_at"],
    }


def put_chunk(svc: Service, upload_id: str, index: int, token: str, body: Any) -> str:
    """PUT to a presigned URL: store the chunk at its offset; return its ETag (MD5)."""
    with svc.lock:
        grant = svc.grants.pop(token, None)
    if grant is None or (grant.upload_id, grant.chunk_index) != (upload_id, index):
        raise Refusal(403, "AccessDenied", "the presigned URL is invalid or was already used")
    if time.time() > grant.expires_at:
        raise Refusal(403, "AccessDenied", "the presigned URL has expired")
    session = _session(svc, upload_id)
    _require_active(svc, session)
    expected = session.expected_size(index)
    if body.length != expected:
        raise Refusal(400, "BadDigest", f"chunk {index} must be exactly {expected} bytes")
    assert session.asset.path is not None
    md5 = hashlib.md5(usedforsecurity=False)
    offset = (index - 1) * session.chunk_size
    descriptor = os.open(session.asset.path, os.O_WRONLY)
    try:
        while piece := body.read():
            os.pwrite(descriptor, piece, offset)
            offset += len(piece)
            md5.update(piece)
    finally:
        os.close(descriptor)
    etag = md5.hexdigest()
    with svc.lock:
        session.chunks[index] = Chunk(etag, expected, time.time())
    return etag


def report(svc: Service, upload_id: str, raw: Json) -> Json:
    """POST /assets/multipart-uploads/{id}: report uploaded chunks by their ETags."""
    session = _session(svc, upload_id)
    chunks = raw.get("completed_chunks")
    if chunks is None:
        raise Refusal(400, "parameter_not_provided", "completed_chunks is required")
    if not isinstance(chunks, list) or not 1 <= len(chunks) <= 50:
        raise Refusal(400, "parameter_invalid", "completed_chunks must hold 1 to 50 chunks")
    if session.completed:
        return _report_answer(session, 0, len(chunks))
    _require_active(svc, session)
    indexes = [_check_report(session, item) for item in chunks]
    now = time.time()
    with svc.lock:
        fresh = {i for i in indexes if session.chunks[i].reported_at is None}
        for index in fresh:
            session.chunks[index].reported_at = now
        done = sum(c.reported_at is not None for c in session.chunks.values())
        finishing = done == session.total_chunks and not session.completed
        session.completed = session.completed or finishing
    if finishing:
        svc.finish_bytes(session.asset)
    return _report_answer(session, len(fresh), len(indexes) - len(fresh))


def _check_report(session: Session, item: object) -> int:
    if not isinstance(item, dict):
        raise Refusal(400, "parameter_invalid", "each completed chunk must be an object")
    for name in ("chunk_index", "proof", "proof_type", "chunk_size"):
        if name not in item:
            raise Refusal(400, "parameter_not_provided", f"completed_chunks[].{name} is required")
    index = item["chunk_index"]
    if not isinstance(index, int) or not 1 <= index <= session.total_chunks:
        raise Refusal(400, "parameter_invalid", "chunk_index is out of range")
    if item["proof_type"] != "etag":
        raise Refusal(400, "parameter_invalid", "proof_type must be etag")
    chunk = session.chunks.get(index)
    if chunk is None or str(item["proof"]).strip('"') != chunk.etag:
        raise Refusal(400, "parameter_invalid", f"chunk {index}: proof does not match an upload")
    if item["chunk_size"] != chunk.size:
        raise Refusal(400, "parameter_invalid", f"chunk {index}: chunk_size is {chunk.size}")
    return index


def _report_answer(session: Session, processed: int, duplicates: int) -> Json:
    total = sum(c.reported_at is not None for c in session.chunks.values())
    answer: Json = {
        "asset_id": session.asset.id,
        "processed_chunks": processed,
        "duplicate_chunks": duplicates,
        "total_completed": total,
    }
    if session.completed:
        answer["url"] = f"https://sandbox.invalid/assets/{session.asset.id}"
    return answer


def session_status(svc: Service, upload_id: str, query: dict[str, list[str]]) -> Json:
    """GET /assets/multipart-uploads/{id}: the session and its chunks, paged."""
    session = _session(svc, upload_id)
    page = int_param(query, "page", 1, low=1)
    limit = int_param(query, "page_limit", 10, low=1, high=50)
    with svc.lock:
        chunks = sorted(session.chunks.items())
    rows = [
        {
            "index": index,
            "status": "completed" if chunk.reported_at is not None else "pending",
            "uploaded_at": None if chunk.reported_at is None else rfc3339(chunk.reported_at),
            "updated_at": rfc3339(chunk.reported_at or chunk.uploaded_at),
        }
        for index, chunk in chunks
    ]
    completed = sum(row["status"] == "completed" for row in rows)
    return {
        "upload_id": upload_id,
        "status": _session_status(svc, session),
        "uploaded_chunks": rows[(page - 1) * limit : page * limit],
        "chunks_completed": completed,
        "chunks_failed": 0,
        "chunks_pending": session.total_chunks - completed,
        "total_chunks": session.total_chunks,
        "chunk_size": session.chunk_size,
        "page_info": page_info(page, limit, rows),
        "total_size": session.total_size,
        "uploaded_size": sum(c.size for _, c in chunks if c.reported_at is not None),
        "created_at": rfc3339(session.created_at),
        "updated_at": rfc3339(max([session.created_at] + [c.uploaded_at for _, c in chunks])),
    }


def list_sessions(svc: Service, query: dict[str, list[str]]) -> Json:
    """GET /assets/multipart-uploads: the sessions still open."""
    page = int_param(query, "page", 1, low=1)
    limit = int_param(query, "page_limit", 10, low=1, high=50)
    with svc.lock:
        sessions = list(svc.sessions.values())
    active = [s for s in sessions if _session_status(svc, s) == "active"]
    active.sort(key=lambda s: s.created_at, reverse=True)
    rows = [
        {
            "upload_id": s.upload_id,
            "status": "active",
            "total_size": s.total_size,
            "chunk_size": s.chunk_size,
            "total_chunks": s.total_chunks,
            "created_at": rfc3339(s.created_at),
            "expires_at": rfc3339(s.created_at + svc.settings.session_ttl),
        }
        for s in active[(page - 1) * limit : page * limit]
    ]
    return {"data": rows, "page_info": page_info(page, limit, active)}

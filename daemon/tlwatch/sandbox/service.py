"""The sandbox's memory: assets, multipart sessions, faults and request counts.

HTTP-free: `server.py` turns requests into calls here and `Reply`/`Refusal` into responses.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tlwatch.sandbox import DEMO_API_KEY
from tlwatch.sandbox.media import duration_of, picture_of, sniff_mime

Json = dict[str, Any]


class Refusal(Exception):
    """An API error answer: HTTP status plus the API's `{code, message}` body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Settings:
    api_key: str = DEMO_API_KEY
    generation: int = 3
    processing_seconds: float = 2.0
    chunk_size: int = 5_242_880
    initial_urls: int = 10
    url_ttl: float = 3600.0
    session_ttl: float = 86400.0
    direct_limit: int = 200_000_000
    image_limit: int = 32_000_000
    multipart_limit: int = 10_000_000_000
    multipart_enabled: bool = True
    small_ready_bytes: int = 1_000_000  # generation 2: smaller assets are `ready` at once
    fail_names: list[str] = field(default_factory=list)
    indexing_seconds: float = 2.0  # from an indexed asset's creation to ready/failed
    rate_limit: int = 0  # requests per window per endpoint family (0: no limit)
    rate_window: float = 10.0  # seconds
    fail_index_names: list[str] = field(default_factory=list)  # these filenames fail indexing

    def update(self, changes: Json) -> None:
        """Apply `changes` (from the admin endpoint), refusing unknown names and wrong types."""
        for name, value in changes.items():
            current = getattr(self, name, None)
            if name not in self.__dataclass_fields__ or not isinstance(value, type(current)):
                raise Refusal(400, "parameter_invalid", f"setting {name!r}: bad name or type")
            setattr(self, name, value)


@dataclass
class Fault:
    """One injected failure, used `times` times on requests to `endpoint` ("*" for any)."""

    endpoint: str = "*"
    status: int = 0  # answer with this status (429, 500, 502, 503...)
    drop: str = ""  # "before": close without storing; "after": store, then close unanswered
    delay: float = 0.0  # seconds to wait before handling
    times: int = 1
    retry_after: str | None = None  # Retry-After header value, as sent
    reset_after: float | None = None  # X-Ratelimit-* headers, Reset = now + this
    empty_body: bool = False
    code: str | None = None  # the error body's code (default: too_many_requests / internal_error)

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """Given `endpoint=create,status=429,retry_after=2,times=3`, return the Fault."""
        raw: Json = {}
        for item in spec.split(","):
            key, _, value = item.partition("=")
            raw[key.strip()] = value.strip()
        return cls.from_json(raw)

    @classmethod
    def from_json(cls, raw: Json) -> Fault:
        kinds: dict[str, Callable[[Any], Any]] = {
            "endpoint": str,
            "status": int,
            "drop": str,
            "delay": float,
            "times": int,
            "retry_after": str,
            "reset_after": float,
            "empty_body": _truthy,
            "code": str,
        }
        unknown = set(raw) - set(kinds)
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        fault = cls(**{key: kinds[key](value) for key, value in raw.items()})
        if fault.drop not in ("", "before", "after"):
            raise ValueError("drop must be 'before' or 'after'")
        return fault


def _truthy(value: object) -> bool:
    return value is True or str(value).lower() in ("1", "true", "yes")


@dataclass
class Asset:
    id: str
    method: str
    filename: str
    file_type: str
    created_at: float
    user_metadata: Json | None = None
    enable_hls: bool | None = None
    enable_thumbnail: bool | None = None
    size: int = 0
    sha256: str | None = None
    path: Path | None = None
    source_url: str | None = None
    duration: float | None = None
    picture: tuple[int, int] | None = None  # width, height as displayed (MP4/MOV)
    done_at: float | None = None  # monotonic time the bytes were complete; None while uploading
    indexed: bool = False


@dataclass
class Chunk:
    etag: str
    size: int
    uploaded_at: float
    reported_at: float | None = None


@dataclass
class Session:
    upload_id: str
    asset: Asset
    kind: str
    total_size: int
    chunk_size: int
    created_at: float
    chunks: dict[int, Chunk] = field(default_factory=dict)
    completed: bool = False

    @property
    def total_chunks(self) -> int:
        return max(1, -(-self.total_size // self.chunk_size))

    def expected_size(self, index: int) -> int:
        if index < self.total_chunks:
            return self.chunk_size
        return self.total_size - self.chunk_size * (self.total_chunks - 1)


@dataclass
class Grant:
    """A presigned PUT URL's token: single use, until `expires_at` (epoch seconds)."""

    upload_id: str
    chunk_index: int
    expires_at: float


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_id() -> str:
    return secrets.token_hex(12)


class Service:
    """Everything the sandbox knows, behind one lock."""

    def __init__(self, settings: Settings, data_dir: Path, *, clock: Any = time.monotonic) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.clock = clock
        self.lock = threading.Lock()
        self.assets: dict[str, Asset] = {}
        self.sessions: dict[str, Session] = {}
        self.grants: dict[str, Grant] = {}
        self.faults: list[Fault] = []
        self.requests: Counter[tuple[str, str]] = Counter()
        self.windows: dict[str, tuple[float, int]] = {}  # family -> (window start, used)
        self.indexes: dict[str, Any] = {}  # id -> indexes.Index
        self.indexed: dict[str, Any] = {}  # id -> indexes.IndexedAsset
        data_dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def wall() -> float:
        """Epoch seconds, for the timestamps the API shows."""
        return time.time()

    # ---- the rate-limit mode --------------------------------------------------------------
    def rate_check(self, endpoint: str) -> tuple[bool, dict[str, str]]:
        """Count one request of the endpoint's family: (allowed, X-Ratelimit-* headers)."""
        limit, window = self.settings.rate_limit, self.settings.rate_window
        family = rate_family(endpoint)
        now = self.wall()
        with self.lock:
            start, used = self.windows.get(family, (now, 0))
            if now >= start + window:
                start, used = now, 0
            allowed = used < limit
            used += 1 if allowed else 0
            self.windows[family] = (start, used)
        reset = start + window
        headers = {
            "X-Ratelimit-Limit": str(limit),
            "X-Ratelimit-Remaining": str(max(limit - used, 0)),
            "X-Ratelimit-Used": str(used),
            "X-Ratelimit-Reset": str(int(reset) + (reset % 1 > 0)),
        }
        if not allowed:
            headers["Retry-After"] = str(max(int(reset - now) + 1, 1))
        return allowed, headers

    # ---- faults and counters -------------------------------------------------------------
    def take_fault(self, endpoint: str) -> Fault | None:
        """Return the first armed fault for `endpoint`, using up one of its `times`."""
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and fault.endpoint in ("*", endpoint):
                    fault.times -= 1
                    return fault
        return None

    def count(self, endpoint: str, outcome: str) -> None:
        with self.lock:
            self.requests[(endpoint, outcome)] += 1

    def request_counts(self) -> Json:
        with self.lock:
            counts: dict[str, dict[str, int]] = {}
            for (endpoint, outcome), number in sorted(self.requests.items()):
                counts.setdefault(endpoint, {})[outcome] = number
            return counts

    # ---- the asset lifecycle -------------------------------------------------------------
    def status_of(self, asset: Asset) -> str:
        if asset.done_at is None:
            return "processing"
        elapsed = self.clock() - asset.done_at
        settings = self.settings
        finished = elapsed >= settings.processing_seconds
        fails = any(name in asset.filename for name in settings.fail_names)
        if settings.generation == 1:
            if finished:
                return "failed" if fails else "ready"
            return "waiting" if elapsed < settings.processing_seconds / 2 else "processing"
        small = settings.generation == 2 and asset.size < settings.small_ready_bytes
        if finished or (small and not fails):
            return "failed" if fails else "ready"
        return "processing"

    def view(self, asset: Asset) -> Json:
        """Given an asset, return its JSON as this generation of the API shows it."""
        status = self.status_of(asset)
        body: Json = {
            "_id": asset.id,
            "method": asset.method,
            "status": status,
            "filename": asset.filename,
            "file_type": asset.file_type,
            "created_at": rfc3339(asset.created_at),
        }
        if asset.user_metadata is not None:
            body["user_metadata"] = asset.user_metadata
        if self.settings.generation == 1:
            body["url"] = f"https://sandbox.invalid/assets/{asset.id}/{asset.filename}"
            body["url_expires_at"] = rfc3339(time.time() + 3600)
        if self.settings.generation == 3:
            body.update(self._details(asset, status))
        return body

    def _details(self, asset: Asset, status: str) -> Json:
        details: Json = {"size": asset.size}
        if status == "failed":
            details["error"] = {"message": "the sandbox was told to fail this asset"}
        if status in ("ready", "failed"):
            technical: Json = {"file_size_bytes": asset.size, "file_mime_type": asset.file_type}
            if asset.duration is not None:
                details["duration"] = asset.duration
                technical["video_duration_seconds"] = asset.duration
            details["technical_metadata"] = technical
        if asset.enable_hls and status == "ready":
            manifest = f"https://sandbox.invalid/hls/{asset.id}/index.m3u8"
            details["hls"] = {"status": "ready", "manifest_url": manifest}
        if asset.enable_thumbnail and status == "ready":
            thumbnail = f"https://sandbox.invalid/thumbs/{asset.id}.jpg"
            details["thumbnail"] = {"status": "ready", "representative_url": thumbnail}
        return details

    def finish_bytes(self, asset: Asset) -> None:
        """Record the stored bytes' size, type and duration; start processing.
        (The SHA-256 is computed when first asked for, off the upload's path.)"""
        assert asset.path is not None
        with asset.path.open("rb") as file:
            head = file.read(64)
        asset.size = asset.path.stat().st_size
        asset.file_type = sniff_mime(head) or asset.file_type
        asset.duration = duration_of(asset.path)
        asset.picture = picture_of(asset.path)
        asset.done_at = self.clock()

    def add(self, asset: Asset) -> None:
        with self.lock:
            self.assets[asset.id] = asset

    def get(self, asset_id: str) -> Asset:
        with self.lock:
            asset = self.assets.get(asset_id)
        if asset is None:
            raise Refusal(404, "resource_not_exist", f"asset {asset_id} does not exist")
        return asset

    def delete(self, asset_id: str, force: bool) -> None:
        asset = self.get(asset_id)
        if asset.indexed and not force:
            raise Refusal(409, "resource_conflict", "the asset is used by an index")
        with self.lock:
            self.assets.pop(asset_id, None)
            for indexed_id in [i for i, a in self.indexed.items() if a.asset_id == asset_id]:
                del self.indexed[indexed_id]
        if asset.path is not None:
            asset.path.unlink(missing_ok=True)

    def listing(self, query: dict[str, list[str]]) -> Json:
        page = int_param(query, "page", 1, low=1)
        limit = int_param(query, "page_limit", 10, low=1, high=50)
        ids = set(query.get("asset_ids", []))
        types = set(query.get("asset_types", []))
        needle = query.get("filename", [""])[-1].lower()
        with self.lock:
            assets = sorted(self.assets.values(), key=lambda a: a.created_at, reverse=True)
        chosen = [
            a
            for a in assets
            if (not ids or a.id in ids)
            and (not types or a.file_type.split("/")[0] in types)
            and needle in a.filename.lower()
        ]
        window = chosen[(page - 1) * limit : page * limit]
        return {"data": [self.view(a) for a in window], "page_info": page_info(page, limit, chosen)}

    def admin_assets(self) -> list[Json]:
        with self.lock:
            assets = sorted(self.assets.values(), key=lambda a: a.created_at)
        keys: tuple[str, ...] = ("id", "method", "filename", "file_type", "size", "sha256")
        keys += ("user_metadata", "created_at")  # created_at: when it was stored (epoch seconds)
        rows = []
        for asset in assets:
            if asset.sha256 is None and asset.path is not None and asset.done_at is not None:
                with asset.path.open("rb") as file:
                    asset.sha256 = hashlib.file_digest(file, "sha256").hexdigest()
            row = {key: value for key, value in asdict(asset).items() if key in keys}
            row |= {"status": self.status_of(asset), "indexed": asset.indexed}
            row["complete"] = asset.done_at is not None
            rows.append(row)
        return rows


def rate_family(endpoint: str) -> str:
    """The sandbox's endpoint name -> its rate-limit family (as the platform groups them)."""
    if endpoint == "create":
        return "create"
    if endpoint.startswith("multipart"):
        return "multipart"
    if endpoint.startswith(("indexed", "index")):
        return "indexing"
    return "retrieve"


def int_param(
    query: dict[str, list[str]], name: str, default: int, *, low: int, high: int | None = None
) -> int:
    raw = query.get(name)
    if not raw:
        return default
    try:
        value = int(raw[-1])
    except ValueError:
        raise Refusal(400, "parameter_invalid", f"{name} must be an integer") from None
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise Refusal(400, "parameter_invalid", f"{name} must be {bounds}")
    return value


def page_info(page: int, limit: int, items: list[Any]) -> Json:
    return {
        "limit_per_page": limit,
        "page": page,
        "total_page": max(1, -(-len(items) // limit)),
        "total_results": len(items),
    }


def parse_user_metadata(raw: object) -> Json:
    """Given user_metadata (JSON text or object), return it or refuse it as the API does."""
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except ValueError:
            raise Refusal(400, "parameter_invalid", "user_metadata must be JSON") from None
    if not isinstance(value, dict):
        raise Refusal(400, "parameter_invalid", "user_metadata must be a JSON object")
    for key, item in value.items():
        scalar = isinstance(item, str | int | float | bool)
        strings = isinstance(item, list) and all(isinstance(i, str) for i in item)
        if not (scalar or strings):
            message = f"user_metadata.{key}: values are string, number, bool or list of strings"
            raise Refusal(400, "parameter_invalid", message)
    return value

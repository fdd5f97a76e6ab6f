"""The sandbox's indexes: indexes, indexed assets and their lifecycle, and user metadata updates.

An indexed asset moves `pending → queued → indexing → ready | failed` over `indexing_seconds`
(failed when its asset's filename contains one of `fail_index_names`). Creating one needs a known
index (404) and a `ready` asset (400); an indexed asset keeps its asset from being deleted (409)
unless `force=true`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tlwatch.sandbox.service import (
    Json,
    Refusal,
    Service,
    int_param,
    new_id,
    page_info,
    parse_user_metadata,
    rfc3339,
)

STAGES = ("pending", "queued", "indexing")  # each a third of indexing_seconds, then the end
MODELS = [{"model_name": "marengo3.0", "model_options": ["visual", "audio"]}]


@dataclass
class Index:
    id: str
    name: str
    models: list[Json]
    created_at: float  # epoch seconds


@dataclass
class IndexedAsset:
    id: str
    index_id: str
    asset_id: str
    started: float  # the service's clock
    created_at: float  # epoch seconds
    user_metadata: Json | None = None
    enable_video_stream: bool = False
    extra: Json = field(default_factory=dict)


def create_index(svc: Service, body: Json) -> Json:
    name = body.get("index_name")
    if not isinstance(name, str) or not name:
        raise Refusal(400, "parameter_invalid", "index_name is required")
    models = body.get("models")
    if not isinstance(models, list) or not models:
        raise Refusal(400, "parameter_invalid", "models is required")
    index = add_index(svc, new_id(), name, models)
    return {"_id": index.id}


def add_index(svc: Service, index_id: str, name: str, models: list[Json] | None = None) -> Index:
    index = Index(index_id, name, models or MODELS, svc.wall())
    with svc.lock:
        svc.indexes[index.id] = index
    return index


def get_index(svc: Service, index_id: str) -> Index:
    with svc.lock:
        index: Index | None = svc.indexes.get(index_id)
    if index is None:
        raise Refusal(404, "resource_not_exist", f"index {index_id} does not exist")
    return index


def view_index(svc: Service, index_id: str) -> Json:
    index = get_index(svc, index_id)
    with svc.lock:
        count = sum(1 for a in svc.indexed.values() if a.index_id == index_id)
    return {
        "_id": index.id,
        "index_name": index.name,
        "models": index.models,
        "created_at": rfc3339(index.created_at),
        "updated_at": rfc3339(index.created_at),
        "video_count": count,
        "total_duration": 0,
    }


def create_indexed(svc: Service, index_id: str, body: Json) -> Json:
    get_index(svc, index_id)
    asset_id = body.get("asset_id")
    if not isinstance(asset_id, str) or not asset_id:
        raise Refusal(400, "parameter_invalid", "asset_id is required")
    asset = svc.get(asset_id)
    if svc.status_of(asset) != "ready":
        raise Refusal(400, "asset_not_ready", f"asset {asset_id} is not ready")
    metadata = body.get("user_metadata")
    stream = body.get("enable_video_stream", False)
    if not isinstance(stream, bool):
        raise Refusal(400, "parameter_invalid", "enable_video_stream must be a boolean")
    indexed = IndexedAsset(
        new_id(),
        index_id,
        asset_id,
        svc.clock(),
        svc.wall(),
        None if metadata is None else parse_user_metadata(metadata),
        stream,
    )
    with svc.lock:
        svc.indexed[indexed.id] = indexed
        asset.indexed = True
    return {"_id": indexed.id, "asset_id": asset_id}


def status_of(svc: Service, indexed: IndexedAsset) -> str:
    elapsed = svc.clock() - indexed.started
    seconds = svc.settings.indexing_seconds
    if elapsed >= seconds:
        return "failed" if failure_of(svc, indexed) else "ready"
    return STAGES[min(int(elapsed / seconds * len(STAGES)), len(STAGES) - 1)]


# What each model family takes, as documented (shared/api-contract.md): seconds, the picture's
# short side (min, max) and long side (max), the aspect (long / short), bytes. The platform's own
# rule, kept apart from the daemon's copy (tlwatch.fit) so that each checks the other.
LIMITS = {
    "marengo": (4.0, 7200.0, 360, 2160, 3840, 2.4, 2_000_000_000),
    "pegasus1.5": (4.0, 7200.0, 360, 2160, 5184, 2.4, 2_000_000_000),
    "pegasus": (4.0, 3600.0, 360, 2160, 3840, 2.4, 2_000_000_000),
}


def failure_of(svc: Service, indexed: IndexedAsset) -> str | None:
    """Why this indexed asset fails: told to, or outside a model of its index's limits."""
    asset = svc.assets.get(indexed.asset_id)
    if asset is None:
        return "its asset is gone"
    if any(n in asset.filename for n in svc.settings.fail_index_names):
        return "the sandbox was told to fail this indexing"
    index = svc.indexes.get(indexed.index_id)
    for model in index.models if index else []:
        name = str(model.get("model_name", ""))
        limits = next((v for k, v in LIMITS.items() if name.startswith(k)), LIMITS["pegasus"])
        refused = _refused(asset.duration, asset.picture, asset.size, limits)
        if refused:
            return f"{name}: {refused}"
    return None


def _refused(
    seconds: float | None,
    picture: tuple[int, int] | None,
    size: int,
    limits: tuple[float, float, int, int, int, float, int],
) -> str | None:
    low, high, short_min, short_max, long_max, aspect, size_max = limits
    if size > size_max:
        return f"over {size_max} bytes"
    if seconds is not None and not low <= seconds <= high:
        return f"{seconds} s is outside {low:g} s to {high:g} s"
    if picture is not None:
        short, long = min(picture), max(picture)
        if not short_min <= short <= short_max or long > long_max:
            return f"{picture[0]}x{picture[1]} is outside the picture limits"
        if long / short > aspect + 0.005:
            return f"an aspect of {long / short:.2f}:1 is outside 1:{aspect:g} to {aspect:g}:1"
    return None


def view_indexed(svc: Service, indexed: IndexedAsset) -> Json:
    asset = svc.assets.get(indexed.asset_id)
    status = status_of(svc, indexed)
    body: Json = {
        "_id": indexed.id,
        "asset_id": indexed.asset_id,
        "status": status,
        "created_at": rfc3339(indexed.created_at),
        "updated_at": rfc3339(indexed.created_at),
        "system_metadata": {
            "filename": asset.filename if asset else None,
            "duration": asset.duration if asset else None,
            "size": asset.size if asset else None,
        },
    }
    if status == "failed":
        body["error"] = {"message": failure_of(svc, indexed)}
    if status == "ready":
        body["indexed_at"] = rfc3339(indexed.created_at + svc.settings.indexing_seconds)
    if indexed.user_metadata is not None:
        body["user_metadata"] = indexed.user_metadata
    return body


def get_indexed(svc: Service, index_id: str, indexed_id: str) -> IndexedAsset:
    get_index(svc, index_id)
    with svc.lock:
        indexed: IndexedAsset | None = svc.indexed.get(indexed_id)
    if indexed is None or indexed.index_id != index_id:
        raise Refusal(404, "resource_not_exist", f"indexed asset {indexed_id} does not exist")
    return indexed


def list_indexed(svc: Service, index_id: str, query: dict[str, list[str]]) -> Json:
    get_index(svc, index_id)
    page = int_param(query, "page", 1, low=1)
    limit = int_param(query, "page_limit", 10, low=1, high=50)
    statuses = set(query.get("status", []))
    needle = query.get("filename", [""])[-1].lower()
    with svc.lock:
        mine = [a for a in svc.indexed.values() if a.index_id == index_id]
    mine.sort(key=lambda a: a.created_at, reverse=True)
    chosen = [
        a
        for a in mine
        if (not statuses or status_of(svc, a) in statuses) and needle in _filename(svc, a).lower()
    ]
    window = chosen[(page - 1) * limit : page * limit]
    return {
        "data": [view_indexed(svc, a) for a in window],
        "page_info": page_info(page, limit, chosen),
    }


def list_by_asset(svc: Service, asset_id: str, query: dict[str, list[str]]) -> Json:
    svc.get(asset_id)
    page = int_param(query, "page", 1, low=1)
    limit = int_param(query, "page_limit", 10, low=1, high=50)
    with svc.lock:
        chosen = [a for a in svc.indexed.values() if a.asset_id == asset_id]
        names = {i: svc.indexes[i].name for i in {a.index_id for a in chosen} if i in svc.indexes}
    chosen.sort(key=lambda a: a.created_at, reverse=True)
    window = chosen[(page - 1) * limit : page * limit]
    data = [
        {"_id": a.id, "index": {"_id": a.index_id, "name": names.get(a.index_id)}} for a in window
    ]
    return {"data": data, "page_info": page_info(page, limit, chosen)}


def patch_indexed(svc: Service, index_id: str, indexed_id: str, body: Json) -> Json:
    indexed = get_indexed(svc, index_id, indexed_id)
    changes = _nullable(body.get("user_metadata", {}))
    with svc.lock:
        indexed.user_metadata = _merged(indexed.user_metadata, changes)
    return {}


def patch_asset_metadata(svc: Service, asset_id: str, body: Json) -> Json:
    asset = svc.get(asset_id)
    if "user_metadata" not in body:
        raise Refusal(400, "parameter_invalid", "user_metadata is required")
    changes = _nullable(body["user_metadata"])
    with svc.lock:
        asset.user_metadata = _merged(asset.user_metadata, changes)
    return {}


def _nullable(raw: Any) -> Json:
    """user_metadata for a merge: a key set to null deletes it."""
    if not isinstance(raw, dict):
        raise Refusal(400, "parameter_invalid", "user_metadata must be a JSON object")
    kept = parse_user_metadata({k: v for k, v in raw.items() if v is not None})
    return {**dict.fromkeys(k for k, v in raw.items() if v is None), **kept}


def _merged(current: Json | None, changes: Json) -> Json:
    merged = {**(current or {}), **changes}
    return {key: value for key, value in merged.items() if value is not None}


def _filename(svc: Service, indexed: IndexedAsset) -> str:
    asset = svc.assets.get(indexed.asset_id)
    return asset.filename if asset else ""

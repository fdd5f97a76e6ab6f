"""The official `twelvelabs` SDK, unchanged, against the sandbox: it speaks the real contract."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from twelvelabs import TwelveLabs
from twelvelabs.types import CompletedChunk

from tlwatch.sandbox import DEMO_API_KEY

from conftest import FIXTURES, Sandbox, wait_for


@pytest.fixture
def sdk(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[TwelveLabs]:
    monkeypatch.delenv("TWELVELABS_BASE_URL", raising=False)
    client = TwelveLabs(api_key=DEMO_API_KEY, base_url=sandbox.base_url)
    yield client
    client._client_wrapper.httpx_client.httpx_client.close()


def test_sdk_direct_create_retrieve_until_ready_and_delete(
    sdk: TwelveLabs, sandbox: Sandbox
) -> None:
    source = FIXTURES / "clip.mp4"
    with source.open("rb") as file:
        asset = sdk.assets.create(method="direct", file=file, user_metadata='{"camera": "A"}')
    assert asset.id and asset.status == "processing"
    record = next(a for a in sandbox.assets() if a["id"] == asset.id)
    assert record["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert record["user_metadata"] == {"camera": "A"}
    ready = wait_for(lambda: (a := sdk.assets.retrieve(asset.id)).status == "ready" and a)
    assert ready.filename == "clip.mp4"
    assert ready.duration == pytest.approx(1.0, abs=0.1)
    sdk.assets.delete(asset.id)
    assert sandbox.assets() == []


def test_sdk_url_create(sdk: TwelveLabs) -> None:
    asset = sdk.assets.create(method="url", url="https://example.com/a/b/interview.mp4")
    assert asset.filename == "interview.mp4"


def test_sdk_lists_with_filters_and_pages_until_an_empty_page(
    sdk: TwelveLabs, sandbox: Sandbox
) -> None:
    made = []
    for name in ("a-1.wav", "a-2.wav", "a-3.wav", "b-1.wav", "a-4.wav"):
        with (FIXTURES / "tone.wav").open("rb") as file:
            made.append(sdk.assets.create(method="direct", file=file, filename=name))
    pager = sdk.assets.list(page_limit=2, filename="a-")
    names = [a.filename for a in pager]
    assert names == ["a-4.wav", "a-3.wav", "a-2.wav", "a-1.wav"]
    assert sandbox.requests()["list"]["200"] == 3  # two full pages, then the empty one ends it
    by_id = list(sdk.assets.list(asset_ids=[made[0].id, made[3].id], page_limit=50))
    assert {a.id for a in by_id} == {made[0].id, made[3].id}
    assert list(sdk.assets.list(asset_types=["video"])) == []


def test_sdk_multipart_flow(sdk: TwelveLabs, sandbox: Sandbox, tmp_path: Path) -> None:
    data = os.urandom(64 * 1024 * 4 + 10)
    created = sdk.multipart_upload.create(filename="long.mp4", type="video", total_size=len(data))
    assert created.total_chunks == 5
    assert created.upload_urls is not None and len(created.upload_urls) == 3
    more = sdk.multipart_upload.get_additional_presigned_urls(created.upload_id, start=4, count=2)
    urls = {u.chunk_index: u.url for u in [*created.upload_urls, *(more.upload_urls or [])]}
    chunks = []
    chunk_size = created.chunk_size or 0
    for index in range(1, 6):
        piece = data[(index - 1) * chunk_size : index * chunk_size]
        etag = httpx.put(str(urls[index]), content=piece).headers["etag"]
        chunks.append(
            CompletedChunk(chunk_index=index, proof=etag, proof_type="etag", chunk_size=len(piece))
        )
    first = sdk.multipart_upload.report_chunk_batch(created.upload_id, completed_chunks=chunks[:3])
    assert first.total_completed == 3
    last = sdk.multipart_upload.report_chunk_batch(created.upload_id, completed_chunks=chunks[2:])
    assert (last.processed_chunks, last.duplicate_chunks, last.total_completed) == (2, 1, 5)
    status = sdk.multipart_upload.get_status(created.upload_id, page_limit=2)
    assert sorted(c.index for c in status) == [1, 2, 3, 4, 5]
    record = next(a for a in sandbox.assets() if a["id"] == created.asset_id)
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert sdk.assets.retrieve(created.asset_id).method == "multipart"


def test_sdk_indexes_and_indexed_assets(sdk: TwelveLabs, sandbox: Sandbox) -> None:
    index = sdk.indexes.create(
        index_name="footage", models=[{"model_name": "marengo3.0", "model_options": ["visual"]}]
    )
    assert index.id
    with (FIXTURES / "indexable.mp4").open("rb") as file:
        asset = sdk.assets.create(method="direct", file=file)
    wait_for(lambda: sdk.assets.retrieve(asset.id).status == "ready")
    created = sdk.indexes.indexed_assets.create(
        index.id, asset_id=asset.id, user_metadata={"camera": "A"}
    )
    assert created.id and created.asset_id == asset.id
    ready = wait_for(
        lambda: (
            (a := sdk.indexes.indexed_assets.retrieve(index.id, created.id)).status == "ready" and a
        )
    )
    assert ready.user_metadata == {"camera": "A"}
    listed = list(sdk.indexes.indexed_assets.list(index.id, page_limit=1))
    assert [a.id for a in listed] == [created.id]
    by_asset = list(sdk.indexes.indexed_assets.list_by_asset(asset.id))
    assert [(s.id, s.index.id if s.index else None) for s in by_asset] == [(created.id, index.id)]

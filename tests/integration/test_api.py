"""The client against the real sandbox over loopback HTTP: bytes and fields, not only statuses."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest

from tlwatch.api import Asset, Client, CompletedChunk, api_filename
from tlwatch.errors import AuthError, Conflict, NotFound, RequestRejected
from tlwatch.sandbox import DEMO_API_KEY

from conftest import FIXTURES, Sandbox, wait_for


def sha256(path: Path | bytes) -> str:
    return hashlib.sha256(Path(os.fsdecode(path)).read_bytes()).hexdigest()


def write(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def stored(sandbox: Sandbox, asset_id: str) -> dict[str, object]:
    return next(a for a in sandbox.assets() if a["id"] == asset_id)


def test_direct_upload_stores_the_exact_bytes_and_metadata(
    client: Client, sandbox: Sandbox, tmp_path: Path
) -> None:
    clip = write(tmp_path / "clip.bin", 300_000)
    metadata = {"tlwatch_token": "abc", "sha256": sha256(clip), "tags": ["a", "b"], "n": 3}
    asset = client.create_direct(clip, user_metadata=metadata)
    assert asset.status == "processing"
    assert asset.filename == "clip.bin"
    record = stored(sandbox, asset.id)
    assert record["sha256"] == sha256(clip)
    assert record["size"] == 300_000
    assert record["user_metadata"] == metadata
    assert client.retrieve(asset.id).user_metadata == metadata


def test_real_media_gets_its_type_and_duration(client: Client, tmp_path: Path) -> None:
    asset = client.create_direct(FIXTURES / "clip.mp4")
    ready = wait_for(lambda: (a := client.retrieve(asset.id)).final and a)
    assert ready.status == "ready"
    assert ready.file_type == "video/mp4"
    assert ready.duration == pytest.approx(1.0, abs=0.1)
    assert ready.raw["technical_metadata"]["file_size_bytes"] == ready.size


def test_create_from_url(client: Client, sandbox: Sandbox) -> None:
    asset = client.create_from_url("https://example.com/media/talk%20one.mp4")
    assert asset.method == "url"
    assert asset.filename == "talk one.mp4"
    assert stored(sandbox, asset.id)["sha256"] is None


@pytest.mark.parametrize(
    "name",
    [b"caf\xe9-\xff.mp4", b'line\nbreak "quoted".mp4', b"x" * 296 + b".mp4", b"-leading.mp4"],
    ids=["invalid-utf8", "newline-and-quotes", "300-characters", "leading-dash"],
)
def test_hostile_file_names_upload_byte_exact(
    client: Client, sandbox: Sandbox, tmp_path: Path, name: bytes
) -> None:
    # Linux caps a name at 255 bytes, so the 300-character one arrives as an explicit name
    # (the daemon names assets by their path relative to the watched folder, which can be long).
    on_disk = name if len(name) <= 255 else b"short.mp4"
    path = os.path.join(os.fsencode(tmp_path), on_disk)
    with open(path, "wb") as file:
        file.write(os.urandom(5000))
    given = None if on_disk == name else name.decode()
    asset = client.create_direct(path, filename=given)
    record = stored(sandbox, asset.id)
    assert record["sha256"] == sha256(path)
    filename = str(record["filename"])
    assert 1 <= len(filename) <= 255
    assert filename.endswith(".mp4")
    assert "\n" not in filename
    assert filename == api_filename(name)


def test_api_filename_rules() -> None:
    assert api_filename("a" * 300 + ".mov") == "a" * 250 + "….mov"
    assert len(api_filename("a" * 300 + ".mov")) == 255
    assert api_filename(b"\xff.wav") == "\ufffd.wav"
    assert api_filename("tab\there.mp3") == "tab_here.mp3"
    assert api_filename("") == "file"
    assert len(api_filename("b" * 400)) == 255


def test_list_filters_and_pages_to_the_end(
    client: Client, sandbox: Sandbox, tmp_path: Path
) -> None:
    made = [client.create_direct(write(tmp_path / f"take-{i}.bin", 100)) for i in range(7)]
    client.create_direct(write(tmp_path / "other.bin", 100))
    found = list(client.list_assets(filename="TAKE-", page_limit=3))
    assert [a.id for a in found] == [a.id for a in reversed(made)]  # newest first, 3 pages
    chosen = [made[0].id, made[3].id]
    assert {a.id for a in client.list_assets(asset_ids=chosen)} == set(chosen)
    assert list(client.list_assets(asset_types=["image"])) == []
    assert sandbox.requests()["list"]["200"] == 3 + 1 + 1


def test_sandbox_answers_pages_past_the_end_with_empty_data(
    client: Client, sandbox: Sandbox
) -> None:
    response = httpx.get(
        sandbox.base_url + "/assets",
        params={"page": 9, "page_limit": 5},
        headers={"x-api-key": DEMO_API_KEY},
    )
    assert response.status_code == 200
    assert response.json()["data"] == []
    assert response.json()["page_info"]["total_page"] == 1


def test_delete_and_conflict_while_indexed(
    client: Client, sandbox: Sandbox, tmp_path: Path
) -> None:
    first = client.create_direct(write(tmp_path / "a.bin", 10))
    second = client.create_direct(write(tmp_path / "b.bin", 10))
    client.delete(first.id)
    with pytest.raises(NotFound):
        client.retrieve(first.id)
    sandbox.admin("POST", f"/_sandbox/assets/{second.id}/indexed")
    with pytest.raises(Conflict) as conflict:
        client.delete(second.id)
    assert conflict.value.status == 409
    client.delete(second.id, force=True)
    assert sandbox.assets() == []


@pytest.mark.parametrize(
    ("generation", "statuses"),
    [
        (1, {"waiting", "processing", "ready"}),
        (2, {"processing", "ready"}),
        (3, {"processing", "ready"}),
    ],
)
def test_every_lifecycle_generation_reaches_ready(
    client: Client, sandbox: Sandbox, tmp_path: Path, generation: int, statuses: set[str]
) -> None:
    sandbox.settings(generation=generation, processing_seconds=0.6, small_ready_bytes=0)
    asset = client.create_direct(write(tmp_path / "g.bin", 2000))
    seen = {asset.status}
    final = wait_for(lambda: (a := client.retrieve(asset.id), seen.add(a.status))[0].final and a)
    assert final.status == "ready"
    assert seen == statuses
    if generation == 1:
        assert "url" in final.raw and "url_expires_at" in final.raw
        assert final.size is None
    if generation == 3:
        assert final.size == 2000
        assert "technical_metadata" in final.raw


def test_generation_two_small_files_are_ready_at_once(
    client: Client, sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.settings(generation=2, processing_seconds=60.0)
    assert client.create_direct(write(tmp_path / "s.bin", 10)).status == "ready"


def test_chosen_assets_fail_processing_with_a_message(
    client: Client, sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.settings(fail_names=["broken"])
    asset = client.create_direct(write(tmp_path / "broken-take.bin", 100))
    final = wait_for(lambda: (a := client.retrieve(asset.id)).final and a)
    assert final.status == "failed"
    assert final.error


def test_unknown_statuses_and_fields_are_pending_not_errors() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        body = {"_id": "6298d673f1090f1100476d4c", "status": "transcoding", "brand_new": {"x": 1}}
        return httpx.Response(200, json=body)

    with Client(
        "k", base_url="http://127.0.0.1:9/v1.3", transport=httpx.MockTransport(answer)
    ) as api:
        asset = api.retrieve("6298d673f1090f1100476d4c")
    assert asset.status == "transcoding"
    assert not asset.final
    assert asset.raw["brand_new"] == {"x": 1}


def test_multipart_flow_uploads_exact_bytes_with_fresh_urls(
    client: Client, sandbox: Sandbox, tmp_path: Path
) -> None:
    big = write(tmp_path / "big.bin", 64 * 1024 * 9 + 123)  # 10 chunks; 3 initial URLs
    session = client.create_multipart(
        "big.bin", "video", big.stat().st_size, user_metadata={"k": 1}
    )
    assert session.total_chunks == 10
    assert len(session.upload_urls) == 3
    reported: list[int] = []
    result = client.upload_chunks(
        session,
        big,
        on_reported=lambda chunks: reported.extend(c.chunk_index for c in chunks),
        report_every=4,
    )
    assert result.asset_id == session.asset_id
    assert result.total_completed == 10
    assert reported == list(range(1, 11))
    status = client.upload_status(session.upload_id)
    assert status.status == "completed"
    assert status.completed_chunks == frozenset(range(1, 11))  # read across pages of 50
    record = stored(sandbox, session.asset_id)
    assert record["sha256"] == sha256(big)
    assert record["user_metadata"] == {"k": 1}
    assert client.retrieve(session.asset_id).status == "processing"
    counts = sandbox.requests()
    assert counts["multipart_urls"]["200"] >= 1
    assert counts["multipart_report"]["200"] == 3
    assert "carried-api-key" not in counts["chunk_put"]


def test_multipart_resumes_from_reported_chunks(
    client: Client, sandbox: Sandbox, tmp_path: Path
) -> None:
    big = write(tmp_path / "resume.bin", 64 * 1024 * 5)
    session = client.create_multipart("resume.bin", "audio", big.stat().st_size)

    class Crash(Exception):
        pass

    def crash_after_first_batch(chunks: object) -> None:
        raise Crash

    with pytest.raises(Crash):
        client.upload_chunks(session, big, on_reported=crash_after_first_batch, report_every=2)
    done = client.upload_status(session.upload_id).completed_chunks
    assert done == {1, 2}
    client.upload_chunks(session, big, done=done)
    assert sandbox.requests()["chunk_put"]["200"] == 5  # no chunk sent twice
    assert stored(sandbox, session.asset_id)["sha256"] == sha256(big)


def test_reports_go_in_batches_of_at_most_fifty(
    client: Client, sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.settings(chunk_size=1024)
    data = write(tmp_path / "many.bin", 1024 * 120)
    session = client.create_multipart("many.bin", "video", 1024 * 120)
    result = client.upload_chunks(session, data, report_every=120)
    assert result.total_completed == 120
    assert sandbox.requests()["multipart_report"]["200"] == 3  # 50 + 50 + 20
    again = client.report_chunks(session.upload_id, [CompletedChunk(1, "x", 1)])
    assert again.duplicates == 1  # a completed session counts repeats, never fails them
    assert stored(sandbox, session.asset_id)["sha256"] == sha256(data)


def test_incomplete_uploads_are_listed(client: Client, tmp_path: Path) -> None:
    session = client.create_multipart("open.bin", "video", 10_000_000)
    assert [s["upload_id"] for s in client.incomplete_uploads()] == [session.upload_id]


def test_wrong_key_is_an_auth_error(sandbox: Sandbox) -> None:
    with Client("wrong-key", base_url=sandbox.base_url) as api, pytest.raises(AuthError) as error:
        api.retrieve("6298d673f1090f1100476d4c")
    assert error.value.code == "api_key_invalid"
    assert "wrong-key" not in str(error.value)


def test_rejected_create_carries_the_api_code(
    client: Client, sandbox: Sandbox, tmp_path: Path
) -> None:
    with pytest.raises(RequestRejected) as error:
        client.create_direct(write(tmp_path / "empty.bin", 0))
    assert error.value.status == 400
    assert error.value.code == "parameter_invalid"
    assert sandbox.assets() == []


def test_metadata_echoed_as_a_json_string_is_parsed() -> None:
    asset = Asset.from_json({"_id": "a", "status": "ready", "user_metadata": '{"x": 1}'})
    assert asset.user_metadata == {"x": 1}


def test_abort_unblocks_a_read_from_a_server_that_never_answers() -> None:
    import socket
    import threading

    from tlwatch.errors import ApiError

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []

    def accept() -> None:
        connection = listener.accept()[0]
        connection.recv(1)  # the request is on its way: the client is reading its answer now
        accepted.append(connection)

    acceptor = threading.Thread(target=accept)
    acceptor.start()
    errors: list[BaseException] = []
    with Client("k", base_url=f"http://127.0.0.1:{port}/v1.3", timeout=60, max_attempts=1) as api:

        def ask() -> None:
            try:
                api.retrieve("a1")
            except ApiError as error:
                errors.append(error)

        asker = threading.Thread(target=ask)
        asker.start()
        acceptor.join(timeout=10)
        wait_for(lambda: accepted)
        api.abort()
        asker.join(timeout=10)  # without the abort it would wait out the 60 s timeout
        alive = asker.is_alive()
    for sock in (*accepted, listener):
        sock.close()
    asker.join()
    assert not alive
    assert len(errors) == 1


def test_the_client_fails_loudly_when_httpx_hides_its_network_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class NoPool(httpx.HTTPTransport):
        def __init__(self) -> None:
            super().__init__()
            del self._pool

    monkeypatch.setattr(httpx, "HTTPTransport", NoPool)
    with pytest.raises(RuntimeError, match="_network_backend is gone"):
        Client("k", base_url="http://127.0.0.1:9/v1.3")

"""Requests the sandbox refuses (per the Feb 2026 OpenAPI constraints); the `sandbox` command."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tlwatch.api import Client
from tlwatch.sandbox import DEMO_API_KEY
from tlwatch.sandbox.formdata import MalformedForm, parse

from conftest import FIXTURES, Sandbox, wait_for

KEY = {"x-api-key": DEMO_API_KEY}


@pytest.fixture
def http(sandbox: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.base_url + "/", headers=KEY, timeout=10) as client:
        yield client


def refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert response.json()["message"]


def test_create_refusals(http: httpx.Client, sandbox: Sandbox) -> None:
    file = {"file": ("a.mp4", b"data")}
    refused(http.post("assets", files=file), 400, "parameter_not_provided")
    refused(http.post("assets", data={"method": "upload"}, files=file), 400, "parameter_invalid")
    refused(
        http.post("assets", data={"method": "direct"}, files={"x": ("a", b"")}),
        400,
        "parameter_unknown",
    )
    refused(
        http.post("assets", data={"method": "direct", "filename": "a"}, files={}),
        400,
        "parameter_invalid",
    )
    refused(http.post("assets", data={"method": "url"}, files=file), 400, "parameter_not_provided")
    long_name = {"method": "direct", "filename": "n" * 256}
    refused(http.post("assets", data=long_name, files=file), 400, "parameter_invalid")
    empty_name = {"method": "direct", "filename": ""}
    refused(http.post("assets", data=empty_name, files=file), 400, "parameter_invalid")
    bad_metadata = {"method": "direct", "user_metadata": '{"a": {"nested": 1}}'}
    refused(http.post("assets", data=bad_metadata, files=file), 400, "parameter_invalid")
    refused(
        http.post("assets", data={"method": "direct", "enable_hls": "maybe"}, files=file),
        400,
        "parameter_invalid",
    )
    assert (
        http.post(
            "assets", data={"method": "direct", "filename": "n" * 255}, files=file
        ).status_code
        == 201
    )
    assert len(sandbox.assets()) == 1
    assert list((sandbox.server.service.data_dir).iterdir()) == [
        sandbox.server.service.data_dir / sandbox.assets()[0]["id"]
    ]  # refused uploads leave no bytes behind


def test_size_limits(http: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.settings(direct_limit=10_000, image_limit=1_000)
    over = http.post(
        "assets", data={"method": "direct"}, files={"file": ("a.bin", os.urandom(10_001))}
    )
    refused(over, 400, "parameter_invalid")
    far_over = http.post(
        "assets", data={"method": "direct"}, files={"file": ("a.bin", os.urandom(1_200_000))}
    )
    refused(far_over, 413, "payload_too_large")
    image = (FIXTURES / "photo.jpg").read_bytes()
    refused(
        http.post("assets", data={"method": "direct"}, files={"file": ("p.jpg", image)}),
        400,
        "parameter_invalid",
    )
    assert sandbox.assets() == []


def test_list_refusals(http: httpx.Client) -> None:
    refused(http.get("assets", params={"page_limit": 51}), 400, "parameter_invalid")
    refused(http.get("assets", params={"page_limit": 0}), 400, "parameter_invalid")
    refused(http.get("assets", params={"page": "x"}), 400, "parameter_invalid")
    assert http.get("assets", params={"page_limit": 50}).status_code == 200


def start_session(http: httpx.Client, size: int = 64 * 1024 * 2 + 5) -> dict[str, Any]:
    response = http.post(
        "assets/multipart-uploads", json={"filename": "m.mp4", "type": "video", "total_size": size}
    )
    assert response.status_code == 201
    return dict(response.json())


def test_multipart_refusals(http: httpx.Client, sandbox: Sandbox) -> None:
    path = "assets/multipart-uploads"
    refused(
        http.post(path, json={"filename": "m.mp4", "type": "video"}), 400, "parameter_not_provided"
    )
    refused(
        http.post(path, json={"filename": "m", "type": "text", "total_size": 5}),
        400,
        "parameter_invalid",
    )
    refused(
        http.post(path, json={"filename": "m", "type": "video", "total_size": 0}),
        400,
        "parameter_invalid",
    )
    refused(
        http.post(path, json={"filename": "m" * 256, "type": "video", "total_size": 5}),
        400,
        "parameter_invalid",
    )
    refused(
        http.post(path, json={"filename": "m", "type": "video", "total_size": 5, "colour": 1}),
        400,
        "parameter_unknown",
    )
    refused(
        http.post(path, json={"filename": "m", "type": "image", "total_size": 40_000_000}),
        400,
        "parameter_invalid",
    )
    session = start_session(http)
    upload = f"{path}/{session['upload_id']}"
    refused(
        http.post(upload + "/presigned-urls", json={"start": 1, "count": 51}),
        400,
        "parameter_invalid",
    )
    refused(
        http.post(upload + "/presigned-urls", json={"start": 0, "count": 1}),
        400,
        "parameter_invalid",
    )
    refused(http.post(upload + "/presigned-urls", json={"start": 1}), 400, "parameter_not_provided")
    chunk = {"chunk_index": 1, "proof": "x", "proof_type": "etag", "chunk_size": 65536}
    refused(http.post(upload, json={"completed_chunks": [chunk] * 51}), 400, "parameter_invalid")
    refused(http.post(upload, json={"completed_chunks": []}), 400, "parameter_invalid")
    refused(http.post(upload, json={}), 400, "parameter_not_provided")
    refused(
        http.post(upload, json={"completed_chunks": [{"chunk_index": 1}]}),
        400,
        "parameter_not_provided",
    )
    refused(
        http.post(upload, json={"completed_chunks": [chunk]}), 400, "parameter_invalid"
    )  # never uploaded
    refused(http.get(f"{path}/nope"), 404, "resource_not_exist")


def test_presigned_urls_are_single_use_exact_and_keyless(
    http: httpx.Client, sandbox: Sandbox
) -> None:
    session = start_session(http)
    first = session["upload_urls"][0]["url"]
    assert first.startswith(sandbox.root + "/_storage/")
    assert (
        httpx.put(first, content=b"short").status_code == 400
    )  # every chunk but the last is exact
    again = httpx.put(first, content=os.urandom(65536))
    assert again.status_code == 403  # the URL was used up by the failed attempt
    fresh = http.post(
        f"assets/multipart-uploads/{session['upload_id']}/presigned-urls",
        json={"start": 1, "count": 1},
    ).json()["upload_urls"][0]["url"]
    piece = os.urandom(65536)
    put = httpx.put(fresh, content=piece)
    assert put.status_code == 200
    assert put.headers["etag"] == f'"{hashlib.md5(piece, usedforsecurity=False).hexdigest()}"'
    assert httpx.put(fresh, content=piece).status_code == 403
    wrong = {"chunk_index": 1, "proof": "0" * 32, "proof_type": "etag", "chunk_size": 65536}
    report = f"assets/multipart-uploads/{session['upload_id']}"
    refused(http.post(report, json={"completed_chunks": [wrong]}), 400, "parameter_invalid")
    right = dict(wrong, proof=put.headers["etag"])
    assert http.post(report, json={"completed_chunks": [right]}).json()["processed_chunks"] == 1


def test_presigned_urls_expire(http: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.settings(url_ttl=-1.0)
    session = start_session(http)
    response = httpx.put(session["upload_urls"][0]["url"], content=os.urandom(65536))
    assert response.status_code == 403


def test_expired_session_is_reported_and_refuses_work(http: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.settings(session_ttl=-1.0)
    session = start_session(http)
    status = http.get(f"assets/multipart-uploads/{session['upload_id']}").json()
    assert status["status"] == "expired"
    more = http.post(
        f"assets/multipart-uploads/{session['upload_id']}/presigned-urls",
        json={"start": 1, "count": 1},
    )
    refused(more, 400, "parameter_invalid")


def test_chunked_request_bodies_are_understood(sandbox: Sandbox) -> None:
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="method"\r\n\r\ndirect\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="c.bin"\r\n\r\n'
        ).encode()
        + b"x" * 100_000
        + f"\r\n--{boundary}--\r\n".encode()
    )

    def pieces() -> Iterator[bytes]:  # no length known: httpx sends it chunked
        for start in range(0, len(body), 7000):
            yield body[start : start + 7000]

    headers = {**KEY, "content-type": f"multipart/form-data; boundary={boundary}"}
    response = httpx.post(sandbox.base_url + "/assets", content=pieces(), headers=headers)
    assert response.status_code == 201, response.text
    assert sandbox.assets()[0]["size"] == 100_000


class Collect:
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def write(self, data: bytes | memoryview) -> None:
        self.received.append(bytes(data))


def reader(body: bytes, step: int) -> Callable[[int], bytes]:
    """A `read` that never returns more than `step` bytes at a time."""
    position = 0

    def read(size: int) -> bytes:
        nonlocal position
        piece = body[position : position + min(size, step)]
        position += len(piece)
        return piece

    return read


def test_form_parser_handles_delimiters_split_across_reads() -> None:
    body = (
        b'preamble\r\n--XYZ\r\nContent-Disposition: form-data; name="a"\r\n\r\none\r\n'
        b'--XYZ\r\nContent-Disposition: form-data; name="f"; filename="q\\"uote.bin"\r\n\r\n'
        + b"\r\n--XY" * 50
        + b"\r\n--XYZ--\r\n"
    )
    for step in (1, 2, 3, 7, 64):
        sink = Collect()
        form = parse(reader(body, step), b"XYZ", lambda name, filename, kind, s=sink: s)
        assert form.fields == {"a": "one"}
        assert form.files == {"f": 'q"uote.bin'}
        assert b"".join(sink.received) == b"\r\n--XY" * 50
    with pytest.raises(MalformedForm):
        parse(reader(b"--XYZ\r\n", 100), b"XYZ", lambda *a: Collect())


def test_admin_fault_endpoint_refuses_unknown_fields(sandbox: Sandbox) -> None:
    response = httpx.post(
        sandbox.root + "/_sandbox/faults", json={"endpoint": "create", "colour": "red"}
    )
    assert response.status_code == 400
    assert "colour" in response.json()["message"]


def test_the_sandbox_command_announces_its_url_and_stops_on_sigterm(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "tlwatch",
        "sandbox",
        "--port",
        "0",
        "--api-key",
        "k-1",
        "--data-dir",
        str(tmp_path / "data"),
        "--fault",
        "endpoint=list,status=503",
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:") and url.endswith("/v1.3")
            assert httpx.get(url + "/assets", headers={"x-api-key": "k-1"}).status_code == 503
            assert httpx.get(url + "/assets", headers={"x-api-key": "k-1"}).status_code == 200
            assert httpx.get(url + "/assets", headers=KEY).status_code == 401
            counts = httpx.get(url.removesuffix("/v1.3") + "/_sandbox/requests").json()
            assert counts["list"] == {"200": 1, "401": 1, "503": 1}
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
    assert (tmp_path / "data").is_dir()


def test_a_bad_fault_spec_is_a_usage_error() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tlwatch",
            "sandbox",
            "--port",
            "0",
            "--fault",
            "endpoint=x,colour=1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "colour" in result.stderr


def test_indexing_refusals_lifecycle_and_metadata(http: httpx.Client, sandbox: Sandbox) -> None:
    from conftest import wait_for

    sandbox.settings(fail_index_names=["bad"])
    refused(
        http.post("indexes/nope/indexed-assets", json={"asset_id": "x"}), 404, "resource_not_exist"
    )
    index = http.post("indexes", json={"index_name": "i", "models": [{"model_name": "m"}]}).json()
    path = f"indexes/{index['_id']}/indexed-assets"
    refused(http.post(path, json={}), 400, "parameter_invalid")
    refused(http.post(path, json={"asset_id": "missing"}), 404, "resource_not_exist")
    ids = {}
    for name in ("good.mp4", "bad.mp4"):
        with (FIXTURES / "indexable.mp4").open("rb") as file:
            made = http.post("assets", data={"method": "direct"}, files={"file": (name, file)})
        ids[name] = made.json()["_id"]
        refused(http.post(path, json={"asset_id": ids[name]}), 400, "asset_not_ready")
    wait_for(lambda: all(http.get(f"assets/{i}").json()["status"] == "ready" for i in ids.values()))
    indexed = {n: http.post(path, json={"asset_id": i}).json()["_id"] for n, i in ids.items()}
    assert http.get(f"{path}/{indexed['good.mp4']}").json()["status"] == "pending"

    def statuses() -> dict[str, str]:
        return {n: http.get(f"{path}/{i}").json()["status"] for n, i in indexed.items()}

    wait_for(lambda: set(statuses().values()) <= {"ready", "failed"})
    assert statuses() == {"good.mp4": "ready", "bad.mp4": "failed"}
    listed = http.get(path, params={"status": "failed"}).json()["data"]
    assert [a["_id"] for a in listed] == [indexed["bad.mp4"]]
    refused(http.delete(f"assets/{ids['good.mp4']}"), 409, "resource_conflict")
    patched = http.patch(
        f"assets/{ids['good.mp4']}/user-metadata", json={"user_metadata": {"a": "1", "b": 2}}
    )
    assert patched.status_code == 200
    http.patch(f"assets/{ids['good.mp4']}/user-metadata", json={"user_metadata": {"a": None}})
    assert http.get(f"assets/{ids['good.mp4']}").json()["user_metadata"] == {"b": 2}
    http.patch(f"{path}/{indexed['good.mp4']}", json={"user_metadata": {"crew": "B"}})
    assert http.get(f"{path}/{indexed['good.mp4']}").json()["user_metadata"] == {"crew": "B"}
    assert http.delete(f"assets/{ids['good.mp4']}", params={"force": "true"}).status_code == 204
    refused(http.get(f"{path}/{indexed['good.mp4']}"), 404, "resource_not_exist")


FINAL = ("ready", "failed")


def test_the_sandbox_fails_an_indexing_outside_its_models_limits(
    sandbox: Sandbox, client: Client
) -> None:
    """The sandbox keeps the platform's rule: what tlwatch would not send, it refuses."""
    from tlwatch.sandbox import indexes

    indexes.add_index(
        sandbox.server.service, "idx-limits", "idx-limits", [{"model_name": "pegasus1.2"}]
    )
    assert client.index_models("idx-limits") == ["pegasus1.2"]
    ids = {}
    for name in ("clip.mp4", "indexable.mp4"):
        asset = client.create_direct(FIXTURES / name)
        wait_for(lambda a=asset: client.retrieve(a.id).status == "ready")
        ids[name] = client.create_indexed_asset("idx-limits", asset.id)
    for name, wanted in (("clip.mp4", "failed"), ("indexable.mp4", "ready")):
        wait_for(lambda n=name: client.retrieve_indexed_asset("idx-limits", ids[n]).status in FINAL)
        assert client.retrieve_indexed_asset("idx-limits", ids[name]).status == wanted
    failed = client.retrieve_indexed_asset("idx-limits", ids["clip.mp4"])
    assert failed.error == "pegasus1.2: 1.0 s is outside 4 s to 3600 s"

"""The API key and presigned URLs never reach a log line, an exception message or a repr."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tlwatch.api import Client, redact_url
from tlwatch.errors import ApiError
from tlwatch.sandbox import DEMO_API_KEY

from conftest import Sandbox


def test_no_key_or_presigned_token_in_debug_logs_errors_or_reprs(
    sandbox: Sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger, so anything that logs is captured
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(64 * 1024 * 3))
    sandbox.fault(endpoint="chunk_put", status=503)
    sandbox.fault(endpoint="retrieve", status=429, retry_after="0")
    errors: list[str] = []
    with Client(DEMO_API_KEY, base_url=sandbox.base_url, sleep=lambda s: None) as api:
        session = api.create_multipart("big.bin", "video", big.stat().st_size)
        tokens = [u.url.split("token=")[1] for u in session.upload_urls]
        api.upload_chunks(session, big)
        api.retrieve(session.asset_id)
        for call in (lambda: api.retrieve("missing"), lambda: api.create_direct(tmp_path / "x")):
            try:
                call()
            except (ApiError, OSError) as error:
                errors.append(str(error))
        shown = [repr(api), repr(session), *map(repr, session.upload_urls)]
    with Client("wrong-secret-key", base_url=sandbox.base_url) as bad:
        try:
            bad.retrieve("x")
        except ApiError as error:
            errors.append(str(error))
            shown.append(repr(bad))
    text = "\n".join([caplog.text, *errors, *shown])
    assert "retrying" in caplog.text  # the retries were logged...
    assert "_storage" in caplog.text  # ...and the chunk PUTs too, without their query
    for secret in (DEMO_API_KEY, "wrong-secret-key", *tokens):
        assert secret not in text


def test_redact_url_cuts_every_query() -> None:
    text = "PUT http://h:1/_storage/u/1?token=abc&x=1 then https://s3.example/p?X-Amz-Signature=zz"
    assert redact_url(text) == "PUT http://h:1/_storage/u/1?… then https://s3.example/p?…"

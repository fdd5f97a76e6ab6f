"""The sandbox's HTTP side: routing, auth, fault injection, request bodies, responses."""

from __future__ import annotations

import contextlib
import io
import json
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tlwatch.sandbox import endpoints, indexes
from tlwatch.sandbox.formdata import MalformedForm
from tlwatch.sandbox.service import Fault, Json, Refusal, Service, Settings

PIECE = 1 << 20
MAX_JSON = 1 << 20


class Body:
    """A request body, read with Content-Length or chunked transfer coding."""

    def __init__(self, rfile: io.BufferedIOBase, length: int | None, chunked: bool) -> None:
        self._rfile = rfile
        self.length = length
        self._left = length if length is not None else 0
        self._chunked = chunked
        self.finished = not chunked and not self._left

    def read(self, size: int = PIECE) -> bytes:
        if self.finished:
            return b""
        if self._chunked and self._left == 0:
            self._next_chunk()
            if self.finished:
                return b""
        data = self._rfile.read(min(size, self._left))
        if not data:
            raise MalformedForm("the request body ended early")
        self._left -= len(data)
        if self._left == 0 and not self._chunked:
            self.finished = True
        elif self._left == 0:
            self._rfile.readline()  # the CRLF after a chunk
        return data

    def _next_chunk(self) -> None:
        line = self._rfile.readline(1024)
        try:
            self._left = int(line.split(b";")[0].strip(), 16)
        except ValueError:
            raise MalformedForm("bad chunked encoding") from None
        if self._left == 0:
            while self._rfile.readline(1024).strip():  # trailers
                pass
            self.finished = True

    def drain(self) -> None:
        while self.read():
            pass

    def json(self) -> Json:
        data = b""
        while piece := self.read():
            data += piece
            if len(data) > MAX_JSON:
                raise Refusal(400, "parameter_invalid", "JSON body too large")
        try:
            value = json.loads(data or b"{}")
        except ValueError:
            raise Refusal(400, "parameter_invalid", "the body is not valid JSON") from None
        if not isinstance(value, dict):
            raise Refusal(400, "parameter_invalid", "the body must be a JSON object")
        return value


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, list[str]]
    headers: Any
    body: Body

    @property
    def origin(self) -> str:
        return "http://" + str(self.headers.get("host", "127.0.0.1"))


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] | None = None
    close: bool = False


Handler = Callable[[Service, Request], Reply]
API = "/v1.3"
ROUTES: list[tuple[str, re.Pattern[str], str, Handler]] = []


def route(method: str, pattern: str, endpoint: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        ROUTES.append((method, re.compile(pattern + "$"), endpoint, handler))
        return handler

    return register


def _reply(status: int, body: Any = None) -> Reply:
    return Reply(status, body)


# ---- the API -------------------------------------------------------------------------------
route("POST", API + "/assets", "create")(
    lambda svc, req: _reply(201, endpoints.create_asset(svc, req.headers, req.body))
)
route("GET", API + "/assets", "list")(lambda svc, req: _reply(200, svc.listing(req.query)))
route("GET", API + "/assets/multipart-uploads", "multipart_list")(
    lambda svc, req: _reply(200, endpoints.list_sessions(svc, req.query))
)
route("POST", API + "/assets/multipart-uploads", "multipart_create")(
    lambda svc, req: _reply(201, endpoints.create_session(svc, req.body.json(), req.origin))
)
route("GET", API + "/assets/multipart-uploads/(?P<upload_id>[^/]+)", "multipart_status")(
    lambda svc, req: _reply(200, endpoints.session_status(svc, req.params["upload_id"], req.query))
)
route("POST", API + "/assets/multipart-uploads/(?P<upload_id>[^/]+)", "multipart_report")(
    lambda svc, req: _reply(200, endpoints.report(svc, req.params["upload_id"], req.body.json()))
)
route(
    "POST", API + "/assets/multipart-uploads/(?P<upload_id>[^/]+)/presigned-urls", "multipart_urls"
)(
    lambda svc, req: _reply(
        200, endpoints.more_urls(svc, req.params["upload_id"], req.body.json(), req.origin)
    )
)
route("GET", API + "/assets/(?P<asset_id>[^/]+)", "retrieve")(
    lambda svc, req: _reply(200, svc.view(svc.get(req.params["asset_id"])))
)


route("PATCH", API + "/assets/(?P<asset_id>[^/]+)/user-metadata", "metadata_patch")(
    lambda svc, req: _reply(
        200, indexes.patch_asset_metadata(svc, req.params["asset_id"], req.body.json())
    )
)
route("GET", API + "/assets/(?P<asset_id>[^/]+)/indexed-assets", "indexed_by_asset")(
    lambda svc, req: _reply(200, indexes.list_by_asset(svc, req.params["asset_id"], req.query))
)
route("POST", API + "/indexes", "index_create")(
    lambda svc, req: _reply(201, indexes.create_index(svc, req.body.json()))
)
route("GET", API + "/indexes/(?P<index_id>[^/]+)", "index_retrieve")(
    lambda svc, req: _reply(200, indexes.view_index(svc, req.params["index_id"]))
)
INDEXED = API + "/indexes/(?P<index_id>[^/]+)/indexed-assets"
route("POST", INDEXED, "indexed_create")(
    lambda svc, req: _reply(
        202, indexes.create_indexed(svc, req.params["index_id"], req.body.json())
    )
)
route("GET", INDEXED, "indexed_list")(
    lambda svc, req: _reply(200, indexes.list_indexed(svc, req.params["index_id"], req.query))
)
route("GET", INDEXED + "/(?P<indexed_id>[^/]+)", "indexed_retrieve")(
    lambda svc, req: _reply(
        200,
        indexes.view_indexed(
            svc, indexes.get_indexed(svc, req.params["index_id"], req.params["indexed_id"])
        ),
    )
)
route("PATCH", INDEXED + "/(?P<indexed_id>[^/]+)", "indexed_patch")(
    lambda svc, req: _reply(
        200,
        indexes.patch_indexed(
            svc, req.params["index_id"], req.params["indexed_id"], req.body.json()
        ),
    )
)


@route("DELETE", API + "/assets/(?P<asset_id>[^/]+)", "delete")
def _delete(svc: Service, req: Request) -> Reply:
    svc.delete(req.params["asset_id"], req.query.get("force", [""])[-1].lower() == "true")
    return Reply(204)


@route("PUT", "/_storage/(?P<upload_id>[^/]+)/(?P<index>[0-9]+)", "chunk_put")
def _put_chunk(svc: Service, req: Request) -> Reply:
    token = req.query.get("token", [""])[-1]
    etag = endpoints.put_chunk(
        svc, req.params["upload_id"], int(req.params["index"]), token, req.body
    )
    return Reply(200, b"", {"ETag": f'"{etag}"'})


# ---- the admin view for tests --------------------------------------------------------------
route("GET", "/_sandbox/assets", "admin")(lambda svc, req: _reply(200, svc.admin_assets()))
route("GET", "/_sandbox/indexed", "admin")(
    lambda svc, req: _reply(
        200,
        [
            {**indexes.view_indexed(svc, a), "index_id": a.index_id}
            for a in sorted(svc.indexed.values(), key=lambda a: a.created_at)
        ],
    )
)
route("GET", "/_sandbox/requests", "admin")(lambda svc, req: _reply(200, svc.request_counts()))
route("GET", "/_sandbox/settings", "admin")(lambda svc, req: _reply(200, vars(svc.settings)))


@route("PATCH", "/_sandbox/settings", "admin")
def _settings(svc: Service, req: Request) -> Reply:
    changes = req.body.json()
    with svc.lock:
        svc.settings.update(changes)
    return Reply(200, vars(svc.settings))


@route("POST", "/_sandbox/faults", "admin")
def _add_faults(svc: Service, req: Request) -> Reply:
    raw = req.body.json()
    try:
        faults = [Fault.from_json(item) for item in raw.get("faults", [raw])]
    except (TypeError, ValueError) as error:
        raise Refusal(400, "parameter_invalid", str(error)) from None
    with svc.lock:
        svc.faults.extend(faults)
    return Reply(200, {"armed": len(faults)})


@route("DELETE", "/_sandbox/faults", "admin")
def _clear_faults(svc: Service, req: Request) -> Reply:
    with svc.lock:
        svc.faults.clear()
    return Reply(204)


@route("DELETE", "/_sandbox/requests", "admin")
def _clear_counts(svc: Service, req: Request) -> Reply:
    with svc.lock:
        svc.requests.clear()
    return Reply(204)


@route("POST", "/_sandbox/assets/(?P<asset_id>[^/]+)/indexed", "admin")
def _mark_indexed(svc: Service, req: Request) -> Reply:
    svc.get(req.params["asset_id"]).indexed = True
    return Reply(204)


def _error(status: int, code: str, message: str) -> Reply:
    return Reply(status, {"code": code, "message": message})


class SandboxHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tlwatch-sandbox"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stall
    service: Service  # set on the subclass made by `make_server`

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: request lines hold presigned tokens, and tests read counts instead."""

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        body = self._body()
        found = self._match(url.path)
        if found is None:
            body.drain()
            self._send(_error(404, "resource_not_exist", "no such endpoint"), "unrouted")
            return
        endpoint, handler, params = found
        query = parse_qs(url.query, keep_blank_values=True)
        request = Request(self.command, url.path, params, query, self.headers, body)
        fault = None if endpoint == "admin" else self.service.take_fault(endpoint)
        if fault is not None and fault.delay and self.server.closing.wait(fault.delay):  # type: ignore[attr-defined]
            self._drop(endpoint, "dropped-closing")  # the sandbox is stopping: no one waits
            return
        if fault is not None and fault.drop == "before":
            self._drop(endpoint, "dropped-before")
            return
        reply = self._answer(endpoint, handler, request, fault)
        if fault is not None and fault.drop == "after":
            self._drop(endpoint, "dropped-after")
            return
        if not body.finished and not reply.close:
            body.drain()
        self._send(reply, endpoint)

    def _answer(
        self, endpoint: str, handler: Handler, request: Request, fault: Fault | None
    ) -> Reply:
        if fault is not None and fault.status:
            request.body.drain()
            return _fault_reply(fault)
        if endpoint == "chunk_put" and "x-api-key" in request.headers:
            self.service.count(endpoint, "carried-api-key")  # a leak tests look for
        needs_key = endpoint not in ("admin", "chunk_put")
        if needs_key and request.headers.get("x-api-key") != self.service.settings.api_key:
            request.body.drain()
            return _error(401, "api_key_invalid", "The API key is invalid or missing.")
        if needs_key and self.service.settings.rate_limit:
            allowed, headers = self.service.rate_check(endpoint)
            if not allowed:
                request.body.drain()
                message = "rate limit exceeded: wait for the window to reset"
                return Reply(429, {"code": "too_many_requests", "message": message}, headers)
            reply = self._handle(handler, request)
            reply.headers = {**(reply.headers or {}), **headers}
            return reply
        return self._handle(handler, request)

    def _handle(self, handler: Handler, request: Request) -> Reply:
        try:
            return handler(self.service, request)
        except Refusal as refusal:
            return Reply(
                refusal.status,
                {"code": refusal.code, "message": refusal.message},
                close=refusal.status == 413,
            )
        except MalformedForm as error:
            return _error(400, "parameter_invalid", str(error))

    def _body(self) -> Body:
        chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        length = self.headers.get("content-length")
        return Body(self.rfile, int(length) if length and not chunked else None, chunked)

    def _match(self, path: str) -> tuple[str, Handler, dict[str, str]] | None:
        for method, pattern, endpoint, handler in ROUTES:
            matched = pattern.match(path)
            if matched and method == self.command:
                return endpoint, handler, matched.groupdict()
        return None

    def _drop(self, endpoint: str, outcome: str) -> None:
        self.service.count(endpoint, outcome)
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send(self, reply: Reply, endpoint: str) -> None:
        self.service.count(endpoint, str(reply.status))
        if isinstance(reply.body, bytes):
            data = reply.body
        else:
            data = b"" if reply.body is None else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        for name, value in (reply.headers or {}).items():
            self.send_header(name, value)
        if reply.body is not None and not isinstance(reply.body, bytes):
            self.send_header("Content-Type", "application/json")
        if reply.status != 204:
            self.send_header("Content-Length", str(len(data)))
        if reply.close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)


def _fault_reply(fault: Fault) -> Reply:
    headers: dict[str, str] = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = fault.retry_after
    if fault.reset_after is not None:
        headers["X-Ratelimit-Limit"] = "60"
        headers["X-Ratelimit-Remaining"] = "0"
        headers["X-Ratelimit-Used"] = "60"
        headers["X-Ratelimit-Reset"] = str(int(time.time() + fault.reset_after))
    if fault.empty_body:
        return Reply(fault.status, b"", headers)
    code = fault.code or ("too_many_requests" if fault.status == 429 else "internal_error")
    return Reply(fault.status, {"code": code, "message": "injected by the sandbox"}, headers)


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], service: Service) -> None:
        handler = type("BoundSandboxHandler", (SandboxHandler,), {"service": service})
        super().__init__(address, handler)
        self.service = service
        self.closing = threading.Event()  # set at shutdown: slow (faulted) requests end at once

    def shutdown(self) -> None:
        self.closing.set()
        super().shutdown()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-request is normal here (tests cut connections on purpose)."""
        if not isinstance(sys.exception(), ConnectionError):
            super().handle_error(request, client_address)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}{API}"

    def start(self) -> threading.Thread:
        """Serve on a background thread; stop with `shutdown()` then `server_close()`."""
        thread = threading.Thread(target=self.serve_forever, name="sandbox", daemon=True)
        thread.start()
        return thread


def make_server(
    host: str, port: int, settings: Settings, data_dir: Path, *, index_ids: tuple[str, ...] = ()
) -> SandboxServer:
    """A sandbox on (host, port); `index_ids` are indexes made at once, so demos can name them."""
    service = Service(settings, data_dir)
    for index_id in index_ids:
        indexes.add_index(service, index_id, f"sandbox index {index_id}")
    return SandboxServer((host, port), service)


def serve_until_signalled(server: SandboxServer, announce: Callable[[str], None]) -> None:
    """Announce the base URL, serve until SIGTERM or SIGINT, then stop cleanly."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    thread = server.start()
    announce(server.base_url)
    stop.wait()
    server.shutdown()
    server.server_close()
    thread.join()

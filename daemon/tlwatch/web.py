"""The status page, its JSON API and /metrics, from one server: the only module that imports
cheroot (CherryPy's threaded WSGI server: a pool of threads, keep-alive connections waiting
without a thread, and a response streamed as it is written, which the page's live updates,
Server-Sent Events, need).

Reading is open on loopback. Every action (a POST) needs the token in the state folder
(`ui.token`, made at first start, mode 0600): a script sends `Authorization: Bearer TOKEN`; a
browser holds it in an HttpOnly, SameSite=Strict cookie, set through a one-time link that
`tlwatch ui` asks for. The server answers only to its own Host names (no DNS rebinding), sends
no CORS headers, and refuses a POST that another site sent. Beyond loopback (`[ui]
allow_remote`), reads need the token too. The page reads what `tlwatch status --json` reads,
and acts only through the store's own transitions (as `tlwatch retry` and `pause` do).
"""

from __future__ import annotations

import contextlib
import hmac
import html
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import parse_qs

from cheroot import wsgi

from tlwatch import __version__
from tlwatch.config import Config
from tlwatch.events import (
    AssetReady,
    Event,
    FolderChanged,
    Paused,
    ProxyMade,
    StateChanged,
    Stuck,
    Uploaded,
)
from tlwatch.models import FileState

log = logging.getLogger(__name__)

TOKEN_FILE = "ui.token"  # noqa: S105  (a file name)
COOKIE = "tlwatch_ui"
LINK_SECONDS = 120.0  # a one-time link works this long
BIND_RETRY_SECONDS = 30.0  # a port taken at start (another program) may be free later
KEEPALIVE_SECONDS = 5.0  # an idle stream gets a comment this often: a page gone is noticed
LIVE_SECONDS = 1.0  # while work is in flight, the page hears its progress this often
SETTLE_SECONDS = 0.3  # changes closer than this go out together
MAX_STREAMS = 8  # pages open at once (each holds one of the server's threads while open)
THREADS = MAX_STREAMS + 4  # (cheroot's pool does not grow: the rest answer everything else)
MAX_BODY = 64 * 1024
CHANGES = (StateChanged, Paused, FolderChanged, Stuck, AssetReady, Uploaded, ProxyMade)
NOTHING = ("/favicon.ico",)  # asked for by browsers: answered with nothing
ASSETS = {  # what the page is made of: file, content type
    "/": ("index.html", "text/html; charset=utf-8"),
    "/ui.js": ("ui.js", "text/javascript; charset=utf-8"),
    "/ui.css": ("ui.css", "text/css; charset=utf-8"),
}
SECURITY = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
]


# ---- the token --------------------------------------------------------------------------------
def ensure_token(folder: Path) -> str:
    """The token in the state folder, made (0600) when there is none yet."""
    path = folder / TOKEN_FILE
    with contextlib.suppress(FileExistsError):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(32) + "\n")
    return read_token(folder)


def read_token(folder: Path) -> str:
    """The token (`tlwatch ui`, scripts); OSError when it cannot be read."""
    token = (folder / TOKEN_FILE).read_text().strip()
    if not token:
        raise OSError(f"{folder / TOKEN_FILE} is empty")
    return token


# ---- what the page reads and does -----------------------------------------------------------
@dataclass(frozen=True)
class Daemon:
    """The daemon's side, as the runner wires it."""

    report: Callable[[], dict[str, Any]]  # what `status --json` says
    files: Callable[[FileState | None, bytes | None, int, int], list[dict[str, Any]]]
    retry: Callable[[list[int] | None], int]  # these files (None: every failed one): how many
    pause: Callable[[str | None], None]  # pause for a reason; None resumes
    metrics: Callable[[str], tuple[bytes, str]]  # /metrics for this Accept header
    busy: Callable[[], bool]  # work in flight whose progress the page shows live


class _Refused(Exception):
    def __init__(self, status: str, why: str) -> None:
        super().__init__(why)
        self.status, self.why = status, why


_Answer = tuple[str, list[tuple[str, str]], Iterable[bytes]]


class Web:
    def __init__(
        self, config: Callable[[], Config], token: str, daemon: Daemon, *, serve: bool = True
    ) -> None:
        self.config, self.daemon = config, daemon
        self.serve = serve  # False: a one-pass run (`tlwatch scan`) serves no page
        self._token = token
        self._server: wsgi.Server | None = None
        self._thread: threading.Thread | None = None
        self._serving: tuple[str, int] | None = None
        self._next_bind = 0.0
        self._bind_failed = False
        self._changes = threading.Condition()
        self._version = 0  # counts changes worth showing
        self._closing = threading.Event()
        self._streams = 0
        self._links: dict[str, float] = {}  # one-time link -> until when it works
        self._lock = threading.Lock()

    # ---- listening ------------------------------------------------------------------------
    def hear(self, event: Event) -> None:
        """A change the page shows: streams send a fresh report."""
        if isinstance(event, CHANGES):
            with self._changes:
                self._version += 1
                self._changes.notify_all()

    def apply(self) -> None:
        """Serve (or stop) as `[ui] listen` says now: at start and after a reload."""
        wanted = self.config().ui.listen if self.serve else None
        if wanted == self._serving and self._server is not None:
            return
        self._stop()
        if wanted is None:
            return
        server = wsgi.Server(wanted, self, numthreads=THREADS, server_name="tlwatch")
        try:
            _bindable(wanted)  # (cheroot would leave the socket it could not bind open)
            server.prepare()
        except OSError as error:  # tried again at the next tick that is due
            self._next_bind = time.monotonic() + BIND_RETRY_SECONDS
            level = logging.DEBUG if self._bind_failed else logging.WARNING
            self._bind_failed = True
            log.log(
                level,
                "status page: cannot listen on %s:%d: %s; trying again every %.0f s",
                *wanted,
                error.strerror or error,
                BIND_RETRY_SECONDS,
            )
            return
        self._server, self._serving, self._bind_failed = server, wanted, False
        self._closing.clear()
        self._thread = threading.Thread(target=server.serve, name="web", daemon=True)
        self._thread.start()
        log.info("status page, API and metrics: http://%s", _address(server.bind_addr))

    def tick(self, now: float) -> None:
        """Try again to listen where that failed."""
        wanted = self.config().ui.listen if self.serve else None
        if self._server is None and wanted is not None and now >= self._next_bind:
            self.apply()

    def close(self) -> None:
        self._stop()

    def _stop(self) -> None:
        self._closing.set()
        with self._changes:
            self._changes.notify_all()  # open streams end
        if self._server is not None:
            self._server.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = self._serving = None

    @property
    def port(self) -> int | None:
        """The port served (0 asked for: the one the system chose)."""
        if self._server is None:
            return None
        return int(self._server.bind_addr[1])

    # ---- the WSGI application -------------------------------------------------------------
    def __call__(
        self, environ: dict[str, Any], start: Callable[[str, list[tuple[str, str]]], Any]
    ) -> Iterable[bytes]:
        try:
            status, headers, body = self._answer(environ)
        except _Refused as refused:
            status, headers, body = _json(refused.status, {"error": refused.why})
        except Exception:  # one bad request never takes the server down
            log.exception("status page: answering %s", environ.get("PATH_INFO"))
            status, headers, body = _json("500 Internal Server Error", {"error": "see the log"})
        start(status, headers + SECURITY)
        if environ["REQUEST_METHOD"] == "HEAD":  # the headers only (a stream ends at once)
            getattr(body, "close", lambda: None)()
            return []
        return body

    def _answer(self, environ: dict[str, Any]) -> _Answer:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
        self._check_host(environ)
        self._check_same_site(environ)
        if method == "POST":
            if not self._authorized(environ):
                raise _Refused("403 Forbidden", "this needs the token (see `tlwatch ui`)")
            return self._act(path, environ)
        if method not in ("GET", "HEAD"):
            raise _Refused("405 Method Not Allowed", f"{method} is not answered here")
        if path == "/login":
            return self._login(environ)
        if self.config().ui.allow_remote and not self._authorized(environ):
            raise _Refused("401 Unauthorized", "this needs the token (see `tlwatch ui`)")
        if path in ASSETS:
            return self._asset(path)
        if path in NOTHING:
            return "204 No Content", [], []
        if path == "/metrics":
            body, content_type = self.daemon.metrics(environ.get("HTTP_ACCEPT", ""))
            return "200 OK", [("Content-Type", content_type)], [body]
        if path == "/api/v1/status":
            return _json("200 OK", self.daemon.report())
        if path == "/api/v1/files":
            return self._files(environ)
        if path == "/api/v1/events":
            return self._stream()
        raise _Refused("404 Not Found", f"nothing at {path}")

    # ---- who may ask ----------------------------------------------------------------------
    def _check_host(self, environ: dict[str, Any]) -> None:
        """Only our own names: a page of another site whose name was pointed at 127.0.0.1 (DNS
        rebinding) sends its own name, and is refused."""
        if self.config().ui.allow_remote:
            return
        host = environ.get("HTTP_HOST", "").lower()
        port = f":{self.port}" if self.port not in (None, 80) else ""
        names = {f"{name}{port}" for name in ("127.0.0.1", "localhost", "[::1]")}
        if host not in names:
            raise _Refused("403 Forbidden", "unknown Host: open the page at 127.0.0.1")

    def _check_same_site(self, environ: dict[str, Any]) -> None:
        """A request another site's page sent (a form, a fetch, an event stream) is refused."""
        site = environ.get("HTTP_SEC_FETCH_SITE")
        origin = environ.get("HTTP_ORIGIN")
        own = f"http://{environ.get('HTTP_HOST', '')}"
        if (site is not None and site not in ("same-origin", "none")) or (
            origin is not None and origin != own
        ):
            raise _Refused("403 Forbidden", "a request from another site")

    def _authorized(self, environ: dict[str, Any]) -> bool:
        given = environ.get("HTTP_AUTHORIZATION", "")
        if given.startswith("Bearer "):
            return hmac.compare_digest(given[7:].strip().encode(), self._token.encode())
        held = _cookies(environ.get("HTTP_COOKIE", "")).get(self._cookie_name)
        return held is not None and hmac.compare_digest(held.encode(), self._cookie.encode())

    @property
    def _cookie_name(self) -> str:
        return f"{COOKIE}_{self.port}"  # (a browser sends 127.0.0.1's cookies to every port)

    @property
    def _cookie(self) -> str:
        """What the browser holds: made from the token, not the token itself."""
        return hmac.new(self._token.encode(), b"tlwatch page cookie", "sha256").hexdigest()

    def _login(self, environ: dict[str, Any]) -> _Answer:
        """A one-time link: the browser gets the token as a cookie, and the page."""
        once = parse_qs(environ.get("QUERY_STRING", "")).get("once", [""])[0]
        with self._lock:
            until = self._links.pop(once, 0.0)
        if until < time.monotonic():
            raise _Refused("403 Forbidden", "this link was used or is too old: run `tlwatch ui`")
        name, value = self._cookie_name, self._cookie
        cookie = f"{name}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age=2592000"
        return "303 See Other", [("Location", "/"), ("Set-Cookie", cookie)], [b""]

    # ---- reading --------------------------------------------------------------------------
    def _asset(self, path: str) -> _Answer:
        name, content_type = ASSETS[path]
        text = resources.files("tlwatch").joinpath("ui", name).read_text()
        if name == "index.html":
            text = Template(text).safe_substitute(
                version=html.escape(__version__), host=html.escape(self.config().daemon.host_name)
            )
        headers = [("Content-Type", content_type), ("Cache-Control", "no-cache")]
        return "200 OK", headers, [text.encode()]

    def _files(self, environ: dict[str, Any]) -> _Answer:
        asked = parse_qs(environ.get("QUERY_STRING", ""), errors="surrogateescape")
        query = {k: v[0] for k, v in asked.items()}
        try:
            state = FileState(query["state"]) if query.get("state") else None
            limit = min(max(int(query.get("limit", 100)), 1), 1000)
            after = int(query.get("after", 0))
        except ValueError as error:
            raise _Refused("400 Bad Request", str(error)) from None
        folder = os.fsencode(query["folder"]) if query.get("folder") else None
        found = self.daemon.files(state, folder, after, limit)
        after_last = found[-1]["id"] if len(found) == limit else None
        return _json("200 OK", {"files": found, "next_after": after_last})

    def _stream(self) -> _Answer:
        with self._lock:
            if self._streams >= MAX_STREAMS:
                raise _Refused("503 Service Unavailable", "too many pages open")
            self._streams += 1
        headers = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-store")]
        return "200 OK", headers, self._events()

    def _events(self) -> Iterator[bytes]:
        """The report, again whenever it changes (every second while work is in flight), and a
        comment when there is nothing to say. Ends when the page goes, or the daemon stops."""
        try:
            yield b"retry: 2000\n\n"
            while not self._closing.is_set():
                with self._changes:
                    seen = self._version
                report = json.dumps(self.daemon.report(), separators=(",", ":"))
                yield f"event: status\ndata: {report}\n\n".encode()
                wait = LIVE_SECONDS if self.daemon.busy() else KEEPALIVE_SECONDS
                while not self._wait_for_change(seen, wait):
                    if self.daemon.busy():
                        break
                    yield b": nothing new\n\n"
                self._closing.wait(SETTLE_SECONDS)  # (a burst of changes goes out as one)
        finally:
            with self._lock:
                self._streams -= 1

    def _wait_for_change(self, seen: int, seconds: float) -> bool:
        with self._changes:
            return self._changes.wait_for(
                lambda: self._version != seen or self._closing.is_set(), seconds
            )

    # ---- acting ---------------------------------------------------------------------------
    def _act(self, path: str, environ: dict[str, Any]) -> _Answer:
        asked = _body(environ)
        if path == "/api/v1/retry":
            ids = asked.get("ids")
            if ids is not None and not (
                isinstance(ids, list)
                and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
            ):
                raise _Refused("400 Bad Request", "ids: a list of file ids")
            if ids is None and not asked.get("failed"):
                raise _Refused("400 Bad Request", 'give "ids" or "failed": true')
            return _json("200 OK", {"requeued": self.daemon.retry(ids)})
        if path == "/api/v1/pause":
            reason = asked.get("reason") or "paused from the status page"
            self.daemon.pause(str(reason)[:200])
            return _json("200 OK", {"paused": True})
        if path == "/api/v1/resume":
            self.daemon.pause(None)
            return _json("200 OK", {"paused": False})
        if path == "/api/v1/login":
            once = secrets.token_urlsafe(24)
            with self._lock:
                now = time.monotonic()
                self._links = {k: v for k, v in self._links.items() if v > now}
                self._links[once] = now + LINK_SECONDS
            url = f"http://{environ.get('HTTP_HOST', '')}/login?once={once}"
            return _json("200 OK", {"url": url})
        raise _Refused("404 Not Found", f"nothing to do at {path}")


def _body(environ: dict[str, Any]) -> dict[str, Any]:
    """A POST's JSON object (an empty body: {})."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = -1
    if length < 0:
        raise _Refused("400 Bad Request", "no Content-Length")
    if length > MAX_BODY:
        raise _Refused("413 Content Too Large", "too large")
    raw = environ["wsgi.input"].read(length) if length else b""
    if not raw.strip():
        return {}
    try:
        found = json.loads(raw)
    except ValueError:
        raise _Refused("400 Bad Request", "the body is not JSON") from None
    if not isinstance(found, dict):
        raise _Refused("400 Bad Request", "the body is not a JSON object")
    return found


def _cookies(header: str) -> dict[str, str]:
    """A Cookie header's name=value pairs (one malformed cookie of another program's on this
    host hides none of the others, as http.cookies would)."""
    found: dict[str, str] = {}
    for pair in header.split(";"):
        name, equals, value = pair.strip().partition("=")
        if equals:
            found.setdefault(name, value.strip().strip('"'))
    return found


def _json(status: str, value: Any) -> _Answer:
    headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
    return status, headers, [json.dumps(value).encode()]


def _bindable(address: tuple[str, int]) -> None:
    """OSError when the address cannot be listened on now (taken, or not this host's)."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)


def _address(bind: Any) -> str:
    host, port = bind[0], bind[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

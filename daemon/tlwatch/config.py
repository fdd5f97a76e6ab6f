"""TOML configuration -> one frozen `Config`. Every problem is reported at once, each with the
file and its key path (`config.toml: watch[1].settle_seconds: must be a number >= 0, got "soon"`).
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import os
import socket
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tlwatch.errors import ConfigError
from tlwatch.fit import Bounds
from tlwatch.limits import Timetable
from tlwatch.metadata import template_problem
from tlwatch.models import Kind, is_under
from tlwatch.retry import Backoff

DEFAULT_BASE_URL = "https://api.twelvelabs.io/v1.3"
KEY_ENV = "TWELVELABS_API_KEY"
AFTER_UPLOAD = ("keep", "move", "delete")


@dataclass(frozen=True)
class ApiConfig:
    base_url: str = DEFAULT_BASE_URL
    api_key_file: Path | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout_seconds: float = 60.0
    max_concurrent_uploads: int = 2
    direct_upload_limit: int = 200_000_000
    enable_hls: bool | None = None
    enable_thumbnail: bool | None = None
    max_upload_rate: Timetable | None = None  # "4MB", "4MiB", or "08:00,2MB 19:00,off"
    max_upload_rate_fleet: Timetable | None = None  # every host of a fleet together


@dataclass(frozen=True)
class StateConfig:
    path: Path  # SQLite's file; with `url`, the host's own state folder (its id, its lock)
    url: str | None = None  # a fleet's PostgreSQL database, without a password
    password_file: Path | None = None
    lease_seconds: float = 60.0  # a host silent this long loses what it claimed


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "info"
    format: str = "text"


@dataclass(frozen=True)
class DaemonConfig:
    rescan_interval_seconds: float = 1800.0
    shutdown_timeout_seconds: float = 30.0
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    poll_interval_seconds: float = 30.0
    host_name: str = field(default_factory=socket.gethostname)  # its name in a fleet

    @property
    def upload_backoff(self) -> Backoff:
        """Between attempts at one upload: the configured schedule; a server's wait up to 1 h."""
        return Backoff(self.retry_base_seconds, self.retry_max_seconds, 3600.0)

    @property
    def request_backoff(self) -> Backoff:
        """Between retries of one idempotent request, inside the client: kept short (30 s),
        and a server's wait over 2 min is left to the caller's schedule."""
        return Backoff(self.retry_base_seconds, min(self.retry_max_seconds, 30.0), 120.0)


@dataclass(frozen=True)
class MetricsConfig:
    listen: tuple[str, int] | None = None  # serve /metrics here ("9811": 127.0.0.1:9811)
    textfile: Path | None = None  # write the same text here every 15 s (node_exporter)


@dataclass(frozen=True)
class UiConfig:
    # The status page, its JSON API and /metrics, served together ("off": not served).
    listen: tuple[str, int] | None = ("127.0.0.1", 9811)
    allow_remote: bool = False  # listen beyond loopback: then every request needs the token


@dataclass(frozen=True)
class BudgetConfig:
    max_media_minutes_per_day: float | None = None  # local day; held files go on at midnight
    max_media_minutes_total: float | None = None  # held until the budget is raised (SIGHUP)


NOTIFY_EVENTS = (
    "failed",
    "skipped",
    "fitted",
    "paused",
    "resumed",
    "offline",
    "online",
    "stuck",
    "summary",
)


@dataclass(frozen=True)
class NotifyConfig:
    urls: tuple[str, ...] = ()  # Apprise URLs: ntfys://topic, json://host/path, mailtos://...
    events: frozenset[str] = frozenset(NOTIFY_EVENTS)
    heartbeat_url: str | None = None  # GET while healthy, URL/fail while not
    heartbeat_seconds: float = 300.0


@dataclass(frozen=True)
class WatchConfig:
    path: Path
    recursive: bool = True
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    kinds: frozenset[Kind] = frozenset(Kind)
    settle_seconds: float = 5.0
    poll: bool | None = None  # None: poll only where inotify cannot see (network file systems)
    after_upload: str = "keep"
    move_to: Path | None = None
    user_metadata: Mapping[str, Any] = field(default_factory=dict)  # values may be templates
    index_id: str | None = None  # index every ready asset of this folder into that index
    index_kinds: frozenset[Kind] = frozenset({Kind.VIDEO, Kind.AUDIO})
    enable_video_stream: bool | None = None  # sent with each indexing request when set
    name: str | None = None  # its label in metrics (default: the folder's own name, made unique)
    proxy: str = (
        "auto"  # "auto": a proxy or segments where the file does not fit; "always"; "never"
    )
    share: str | None = None  # a folder several hosts of a fleet mount: its name among them


@dataclass(frozen=True)
class FitConfig:
    """Proxies and segments: where and how they are made; and overrides of the platform's
    documented limits (`fit.MODELS`; None: as documented)."""

    proxy_height: int = 720  # lines, at most (more only where the index's minimum needs it)
    spool_dir: Path | None = None  # default: "spool" beside the store
    spool_max_bytes: int = 20_000_000_000  # proxies wait while the spool holds this much
    ffmpeg: str | None = None  # default: the system's ffmpeg, else imageio-ffmpeg's
    encoder: str = "auto"  # "auto": a hardware H.264 encoder that works here, else libx264
    max_concurrent: int = 1  # transcodes at once
    min_seconds: float | None = None
    max_seconds: float | None = None
    min_short_side: int | None = None
    max_long_side: int | None = None
    max_short_side: int | None = None
    max_aspect: float | None = None
    max_bytes: int | None = None

    @property
    def overrides(self) -> dict[str, float | int]:
        """The bounds set here (each replaces the documented one)."""
        names = {field.name for field in dataclasses.fields(Bounds)}
        return {k: v for k in names if (v := getattr(self, k)) is not None}

    def spool(self, state: Path) -> Path:
        return (self.spool_dir or state.parent / "spool").absolute()


@dataclass(frozen=True)
class Config:
    source: Path | None
    api: ApiConfig
    state: StateConfig
    logging: LoggingConfig
    daemon: DaemonConfig
    watch: tuple[WatchConfig, ...]
    metrics: MetricsConfig = MetricsConfig()
    notify: NotifyConfig = NotifyConfig()
    budget: BudgetConfig = BudgetConfig()
    fit: FitConfig = FitConfig()
    ui: UiConfig = UiConfig()

    def folder_names(self) -> dict[bytes, str]:
        """Each watched folder's short name, for labels: its `name`, else its last path
        component, made unique with -2, -3... Never a whole path."""
        names: dict[bytes, str] = {}
        for watch in self.watch:
            base = watch.name or watch.path.name or "root"
            name, number = base, 1
            while name in names.values():
                number += 1
                name = f"{base}-{number}"
            names[os.fsencode(watch.path)] = name
        return names

    def watch_for(self, path: bytes) -> WatchConfig | None:
        """Given an absolute path, return the watched folder it belongs to (the deepest one)."""
        owners = [w for w in self.watch if is_under(path, os.fsencode(w.path))]
        return max(owners, key=lambda w: len(os.fsencode(w.path)), default=None)


RESTART_ONLY: tuple[tuple[str, Callable[[Config], object]], ...] = (
    ("[api] base_url", lambda c: c.api.base_url),
    ("[api] timeout_seconds", lambda c: c.api.timeout_seconds),
    ("[api] max_concurrent_uploads", lambda c: c.api.max_concurrent_uploads),
    ("[state] path", lambda c: c.state.path),
    ("[state] url", lambda c: c.state.url),
    ("[state] password_file", lambda c: c.state.password_file),
    ("[daemon] host_name", lambda c: c.daemon.host_name),
    ("[[watch]] share", lambda c: sorted((str(w.path), w.share) for w in c.watch if w.share)),
)


def restart_needed(old: Config, new: Config) -> list[str]:
    """Given the running and a reloaded configuration, name the changed keys that a reload
    cannot apply (they take effect at the next restart)."""
    return [name for name, value in RESTART_ONLY if value(old) != value(new)]


def default_config_path() -> Path:
    """`$TLWATCH_CONFIG`, else the user's config file, else /etc/tlwatch/config.toml."""
    if os.environ.get("TLWATCH_CONFIG"):
        return Path(os.environ["TLWATCH_CONFIG"])
    home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    user = home / "tlwatch" / "config.toml"
    system = Path("/etc/tlwatch/config.toml")
    return user if _there(user) or not _there(system) else system


def _there(path: Path) -> bool:
    """Is there a file at `path`? (A folder this user may not look into: as good as there, so
    that reading it says why it cannot be read.)"""
    try:
        return path.exists()
    except OSError:
        return True


def default_state_path() -> Path:
    """`$STATE_DIRECTORY/state.db` under systemd, else `$XDG_STATE_HOME/tlwatch/state.db`."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0]) / "state.db"
    home = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return home / "tlwatch" / "state.db"


# ---- reading -------------------------------------------------------------------------------
class _Refused(Exception):
    """A value refused for a reason of its own (said instead of the value)."""


class _Reader:
    """Reads one table, remembering every problem with its key path."""

    def __init__(self, table: Mapping[str, Any], where: str, problems: list[str]) -> None:
        self.table, self.where, self.problems = table, where, problems
        self.seen: set[str] = set()

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{self.where}{key}: {message}")

    def get(self, key: str, default: Any, check: Callable[[Any], Any], wants: str) -> Any:
        """The value at `key`, checked; `default` when absent or wrong (the problem noted)."""
        self.seen.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        try:
            return check(value)
        except _Refused as refused:  # (the value itself is not shown: it may hold a secret)
            self.problem(key, str(refused))
            return default
        except (TypeError, ValueError):
            self.problem(key, f"must be {wants}, got {_show(value)}")
            return default

    def fields(self, cls: type[Any], specs: Mapping[str, Spec], **given: Any) -> Any:
        """Build the dataclass `cls` from `given` and each key in `specs` (its check, what it
        wants), read with the dataclass's own default: every default is written once."""
        values = {
            name: self.get(name, _default(cls, name), check, wants)
            for name, (check, wants) in specs.items()
        }
        return cls(**given, **values)

    def finish(self) -> None:
        for key in self.table:
            if key not in self.seen:
                close = difflib.get_close_matches(key, sorted(self.seen), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.problem(key, f"unknown key{hint}")


Spec = tuple[Callable[[Any], Any], str]  # a key's check, and what it wants (for the message)


def _default(cls: type[Any], name: str) -> Any:
    field_ = next(f for f in dataclasses.fields(cls) if f.name == name)
    if field_.default_factory is not dataclasses.MISSING:
        return field_.default_factory()
    return field_.default


def _show(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _number(low: float, high: float | None = None) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError
        if value < low or (high is not None and value > high):
            raise ValueError
        return float(value)

    return check


def _integer(low: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise TypeError
        return value

    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError
    return value


def _choice(*options: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in options:
            raise ValueError
        return str(value)

    return check


def _globs(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise TypeError
    return tuple(value)


def _kinds(value: Any) -> frozenset[Kind]:
    if not isinstance(value, list) or not value:
        raise TypeError
    return frozenset(Kind(v) for v in value)


def _metadata(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError
    return dict(value)  # each entry is checked on its own, with its key path


def _path_under(base: Path) -> Callable[[Any], Path]:
    def check(value: Any) -> Path:
        return (base / Path(_text(value)).expanduser()).absolute()

    return check


def _section(data: Mapping[str, Any], name: str, problems: list[str], where: str) -> _Reader:
    table = data.get(name, {})
    if not isinstance(table, dict):
        problems.append(f"{where}{name}: must be a table")
        table = {}
    return _Reader(table, f"{where}{name}.", problems)


def load(path: Path) -> Config:
    """Read and check the configuration file at `path`; raise ConfigError listing every problem."""
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file (create one with `tlwatch init`)"]) from None
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror}"]) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: not valid TOML: {error}"]) from None
    return parse(data, source=path, private=_is_private(path))


def _is_private(path: Path) -> bool:
    mode = path.stat().st_mode
    return not mode & (stat.S_IRWXG | stat.S_IRWXO)


def parse(data: Mapping[str, Any], *, source: Path | None, private: bool = False) -> Config:
    """Given parsed TOML, return the Config or raise ConfigError listing every problem."""
    problems: list[str] = []
    where = f"{source}: " if source else ""
    base = source.parent if source else Path.cwd()
    top = _Reader(data, where, problems)
    for name in (
        "api",
        "state",
        "logging",
        "daemon",
        "watch",
        "metrics",
        "notify",
        "budget",
        "fit",
        "ui",
    ):
        top.seen.add(name)
    top.finish()
    api = _api(_section(data, "api", problems, where), base, private)
    state = _section(data, "state", problems, where)
    state_path = state.get("path", None, _path_under(base), "a path") or default_state_path()
    state_config = state.fields(
        StateConfig,
        {**STATE_KEYS, "password_file": (_path_under(base), "a path")},
        path=state_path,
    )
    state.finish()
    logging_ = _section(data, "logging", problems, where)
    log_config = logging_.fields(LoggingConfig, LOGGING_KEYS)
    logging_.finish()
    daemon = _section(data, "daemon", problems, where)
    daemon_config = daemon.fields(DaemonConfig, DAEMON_KEYS)
    daemon.finish()
    metrics = _section(data, "metrics", problems, where)
    specs = {"listen": METRICS_KEYS["listen"], "textfile": (_path_under(base), "a path")}
    metrics_config = metrics.fields(MetricsConfig, specs)
    metrics.finish()
    notify = _section(data, "notify", problems, where)
    notify_config = notify.fields(NotifyConfig, NOTIFY_KEYS)
    notify.finish()
    budget = _section(data, "budget", problems, where)
    minutes = (_number(0.0), "a number of minutes >= 0")
    budget_config = budget.fields(
        BudgetConfig, {"max_media_minutes_per_day": minutes, "max_media_minutes_total": minutes}
    )
    budget.finish()
    fit = _section(data, "fit", problems, where)
    fit_config = fit.fields(FitConfig, {**FIT_KEYS, "spool_dir": (_path_under(base), "a path")})
    fit.finish()
    ui_config = _ui(_section(data, "ui", problems, where), metrics_config, where, problems)
    watches = _watches(data.get("watch", []), base, problems, where)
    shares = [watch.share for watch in watches if watch.share]
    if api.max_upload_rate_fleet is not None and state_config.url is None:
        problems.append(f"{where}api.max_upload_rate_fleet: needs a fleet's store ([state] url)")
    if shares and state_config.url is None:
        problems.append(f"{where}watch.share: a shared folder needs a fleet's store ([state] url)")
    for twice in sorted({name for name in shares if shares.count(name) > 1}):
        problems.append(f"{where}watch.share: {twice!r} names two watched folders")
    spool = fit_config.spool(state_path)
    for watch in watches:
        if is_under(os.fsencode(spool), os.fsencode(watch.path.absolute())):
            problems.append(
                f"{where}fit.spool_dir: {spool} is inside the watched folder {watch.path}; "
                "its proxies would be taken for new files (set spool_dir elsewhere)"
            )
    if problems:
        raise ConfigError(problems)
    return Config(
        source,
        api,
        state_config,
        log_config,
        daemon_config,
        watches,
        metrics_config,
        notify_config,
        budget_config,
        fit_config,
        ui_config,
    )


def _api(reader: _Reader, base: Path, private: bool) -> ApiConfig:
    key = reader.get("api_key", None, _text, "a non-empty string")
    if key is not None and not private:
        reader.problem(
            "api_key",
            "refused: the file is readable by others; "
            "chmod 600 it, or use api_key_file or TWELVELABS_API_KEY",
        )
        key = None
    specs = {**API_KEYS, "api_key_file": (_path_under(base), "a path")}
    config: ApiConfig = reader.fields(ApiConfig, specs, api_key=key)
    reader.finish()
    return config


def _timetable(text: str) -> Timetable | None:
    table = Timetable.parse(text)
    return None if all(rate is None for _, rate in table.entries) else table


def _url(value: Any) -> str:
    text = _text(value)
    if not text.startswith(("http://", "https://")):
        raise ValueError
    return text.rstrip("/")


def _listen(value: Any) -> tuple[str, int]:
    """ "9811" or ":9811" -> loopback; "HOST:9811" -> that address."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else _text(value)
    host, _, port = text.rpartition(":")
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError
    return (host.strip("[]") or "127.0.0.1", number)


def _ui(table: _Reader, metrics: MetricsConfig, where: str, problems: list[str]) -> UiConfig:
    """`[ui]`; an older config's `[metrics] listen` stands for `[ui] listen` (the page and the
    API now come with /metrics)."""
    given = "listen" in table.table
    ui: UiConfig = table.fields(UiConfig, UI_KEYS)
    table.finish()
    if metrics.listen is not None:
        if given and ui.listen != metrics.listen:
            problems.append(
                f"{where}metrics.listen: /metrics is served where [ui] listen says; "
                "give only [ui] listen"
            )
        ui = dataclasses.replace(ui, listen=metrics.listen)
    if ui.listen is not None and not ui.allow_remote and not _loopback(ui.listen[0]):
        key = "ui.listen" if given or metrics.listen is None else "metrics.listen"
        problems.append(
            f"{where}{key}: {ui.listen[0]} is beyond loopback; set [ui] allow_remote = true "
            "(every request then needs the token in the state folder's ui.token)"
        )
    return ui


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen_or_off(value: Any) -> tuple[str, int] | None:
    return None if value == "off" else _listen(value)


UI_KEYS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "listen": (_listen_or_off, 'an address, like "127.0.0.1:9811", or "off"'),
    "allow_remote": (_boolean, "true or false"),
}

METRICS_KEYS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "listen": (_listen, 'an address to serve /metrics on, like "127.0.0.1:9811"'),
}


def _urls(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and "://" in v for v in value):
        raise TypeError
    return tuple(value)


def _events(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not set(value) <= set(NOTIFY_EVENTS):
        raise TypeError
    return frozenset(value)


def _http_url(value: Any) -> str:
    return _url(value)


NOTIFY_KEYS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "urls": (_urls, 'a list of Apprise URLs, like ["ntfys://my-topic"]'),
    "events": (_events, f"a list of {', '.join(repr(e) for e in NOTIFY_EVENTS)}"),
    "heartbeat_url": (_http_url, "an http(s) URL"),
    "heartbeat_seconds": (_number(1.0), "a number of seconds >= 1"),
}
SECONDS = "a number of seconds"
API_KEYS: dict[str, Spec] = {
    "base_url": (_url, "an http(s) URL"),
    "timeout_seconds": (_number(1.0), "a number >= 1"),
    "max_concurrent_uploads": (_integer(1), "an integer >= 1"),
    "direct_upload_limit": (_integer(1), "a number of bytes >= 1"),
    "enable_hls": (_boolean, "true or false"),
    "enable_thumbnail": (_boolean, "true or false"),
    "max_upload_rate": (
        lambda value: _timetable(_text(value)),
        'a rate like "4MB" or "4MiB", "off", or a timetable like "08:00,2MB 19:00,off"',
    ),
    "max_upload_rate_fleet": (
        lambda value: _timetable(_text(value)),
        'a rate like "40MB", "off", or a timetable like "08:00,20MB 19:00,off"',
    ),
}
LOGGING_KEYS: dict[str, Spec] = {
    "level": (
        _choice("debug", "info", "warning", "error"),
        'one of "debug", "info", "warning", "error"',
    ),
    "format": (_choice("text", "json"), '"text" or "json"'),
}
DAEMON_KEYS: dict[str, Spec] = {
    "rescan_interval_seconds": (_number(1.0), f"{SECONDS} >= 1"),
    "shutdown_timeout_seconds": (_number(0.0), f"{SECONDS} >= 0"),
    "retry_base_seconds": (_number(0.01), f"{SECONDS} >= 0.01"),
    "retry_max_seconds": (_number(1.0), "a number >= 1"),
    "poll_interval_seconds": (_number(0.5), f"{SECONDS} >= 0.5"),
    "host_name": (_text, "a name (a non-empty string)"),
}

PIXELS = (_integer(1), "a number of pixels >= 1")
FIT_KEYS: dict[str, Spec] = {
    "min_seconds": (_number(0.0), f"{SECONDS} >= 0"),
    "max_seconds": (_number(1.0), f"{SECONDS} >= 1"),
    "min_short_side": PIXELS,
    "max_long_side": PIXELS,
    "max_short_side": PIXELS,
    "max_aspect": (_number(1.0), "a ratio >= 1 (2.4 means 1:2.4 to 2.4:1)"),
    "max_bytes": (_integer(1), "a number of bytes >= 1"),
    "proxy_height": (_integer(144), "a number of lines >= 144"),
    "spool_max_bytes": (_integer(1), "a number of bytes >= 1"),
    "ffmpeg": (_text, "the path of an ffmpeg binary"),
    "encoder": (_text, '"auto" or an ffmpeg H.264 encoder, like "libx264"'),
    "max_concurrent": (_integer(1), "an integer >= 1"),
}


def _watches(raw: Any, base: Path, problems: list[str], where: str) -> tuple[WatchConfig, ...]:
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        problems.append(f"{where}watch: must be [[watch]] tables")
        return ()
    watches = []
    for index, table in enumerate(raw):
        reader = _Reader(table, f"{where}watch[{index}].", problems)
        watch = _watch(reader, base)
        reader.finish()
        if watch is not None:
            watches.append(watch)
    return tuple(watches)


def _watch(reader: _Reader, base: Path) -> WatchConfig | None:
    path = reader.get("path", None, _path_under(base), "a folder path")
    if path is None and "path" not in reader.table:
        reader.problem("path", "is required")
    specs = {**WATCH_KEYS, "move_to": (_path_under(base), "a folder path")}
    watch: WatchConfig = reader.fields(WatchConfig, specs, path=path or Path("/"))
    if watch.after_upload == "move" and watch.move_to is None:
        reader.problem("move_to", 'is required when after_upload = "move"')
    for key, value in watch.user_metadata.items():
        problem = template_problem(key, value)
        if problem is not None:
            reader.problem(f"user_metadata.{key}", problem)
    return watch if path is not None else None


def _share(value: Any) -> str:
    text = _text(value)
    if not all(c.isascii() and (c.isalnum() or c in "._-") for c in text):
        raise ValueError
    return text


WATCH_KEYS: dict[str, Spec] = {
    "recursive": (_boolean, "true or false"),
    "include": (_globs, "a list of glob patterns"),
    "exclude": (_globs, "a list of glob patterns"),
    "kinds": (_kinds, 'a list of "video", "audio", "image"'),
    "settle_seconds": (_number(0.0), "a number >= 0"),
    "poll": (_boolean, "true or false"),
    "after_upload": (_choice(*AFTER_UPLOAD), '"keep", "move" or "delete"'),
    "proxy": (_choice("auto", "always", "never"), '"auto", "always" or "never"'),
    "user_metadata": (_metadata, "a table of strings, numbers, booleans or lists of strings"),
    "index_id": (_text, "an index id (a non-empty string)"),
    "index_kinds": (_kinds, 'a list of "video", "audio", "image"'),
    "enable_video_stream": (_boolean, "true or false"),
    "name": (_text, "a short name (a non-empty string)"),
    "share": (_share, "a short name: letters, digits, '.', '_' or '-'"),
}


def _database_url(value: Any) -> str:
    text = _text(value)
    parts = urlsplit(text)
    if parts.scheme not in ("postgresql", "postgres") or not (parts.hostname or parts.path):
        raise ValueError
    if parts.password is not None or "password=" in parts.query.lower():
        raise _Refused(
            "holds a password: put it in password_file (mode 600) or the systemd credential "
            f"{DB_PASSWORD_CREDENTIAL}, never in the URL"
        )
    return text


STATE_KEYS: dict[str, Spec] = {
    "url": (_database_url, 'a PostgreSQL URL ("postgresql://user@host:5432/db")'),
    "lease_seconds": (_number(10.0), "a number of seconds >= 10"),
}
DB_PASSWORD_CREDENTIAL = "db_password"  # noqa: S105 - the credential's name, not a secret


def read_db_password(config: Config) -> str | None:
    """The database's password: the systemd credential, else `[state] password_file`, else
    None (libpq's own ~/.pgpass and PGPASSWORD still apply)."""
    source = _credential(DB_PASSWORD_CREDENTIAL) or config.state.password_file
    return _read_secret("database password", source) if source is not None else None


def _credential(name: str) -> Path | None:
    """The systemd credential of this name (`LoadCredential=`), where the unit gave one."""
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    found = Path(credentials) / name if credentials else None
    return found if found is not None and found.exists() else None


def _read_secret(what: str, source: Path) -> str:
    """A secret from its file, or ConfigError naming the file (never the secret)."""
    try:
        secret = source.read_text().strip()
    except OSError as error:
        raise ConfigError([f"{what} file {source}: cannot read: {error.strerror}"]) from None
    if not secret:
        raise ConfigError([f"{what} file {source}: is empty"])
    return secret


# ---- the API key ---------------------------------------------------------------------------
def api_key_source(config: Config) -> str | None:
    """Where the key comes from, in order: the environment, a systemd credential, api_key_file,
    the config itself. None when there is no key anywhere."""
    if os.environ.get(KEY_ENV):
        return KEY_ENV
    credential = _credential("api_key")
    if credential is not None:
        return str(credential)
    if config.api.api_key_file is not None:
        return str(config.api.api_key_file)
    if config.api.api_key:
        return "config"
    return None


def read_api_key(config: Config) -> str:
    """Return the API key, or raise ConfigError saying where it was looked for."""
    source = api_key_source(config)
    if source == KEY_ENV:
        return os.environ[KEY_ENV].strip()
    if source == "config":
        return str(config.api.api_key)
    if source is None:
        raise ConfigError([f"no API key: set {KEY_ENV}, or [api] api_key_file in the config"])
    return _read_secret("api key", Path(source))

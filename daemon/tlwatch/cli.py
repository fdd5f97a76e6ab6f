"""The `tlwatch` command: argument parsing, output and exit codes (the only module that prints)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlwatch import __version__
from tlwatch.completion import SHELLS

if TYPE_CHECKING:  # the real types for mypy; imported lazily at run time to keep --help fast
    from tlwatch.api import Client
    from tlwatch.config import Config
    from tlwatch.health import Snapshot
    from tlwatch.models import FileState
    from tlwatch.state import IndexingRow, Store

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_LOCKED = 75
EXIT_CONFIG = 78

Command = Callable[[argparse.Namespace], int]


class _Version(argparse.Action):
    """`tlwatch --version`: the version, and what it runs with."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(f"tlwatch {__version__} (Python {sys.version.split()[0]}, {sys.executable})")
        for name, found in _found_with().items():
            print(f"  {name}: {found}")
        parser.exit()


def _found_with() -> dict[str, str]:
    """libmagic, ffmpeg and the state folder, as this installation finds them."""
    from tlwatch import config
    from tlwatch.errors import ConfigError

    found = {}
    try:
        from tlwatch.sniff import libmagic

        found["libmagic"] = libmagic()
    except Exception as error:  # noqa: BLE001  (missing: python-magic raises ImportError)
        found["libmagic"] = f"missing ({error}; apt-get install -y libmagic1)"
    path = config.default_config_path()
    try:
        loaded = config.load(path)
        state, wanted = loaded.state.path.parent, loaded.fit.ffmpeg
        where = f"{state} (from {path})"
    except ConfigError as error:
        state, wanted = config.default_state_path().parent, None
        unread = any(words in str(error) for words in ("cannot read", "no such file"))
        why = "cannot be read" if unread else "is not valid"
        where = f"{state} (the default: {path} {why})"
    try:
        from tlwatch.transcode import find_ffmpeg, version

        binary = find_ffmpeg(wanted)
        found["ffmpeg"] = f"{binary} ({version(binary).split(' Copyright')[0]})"
    except Exception as error:  # noqa: BLE001  (none there: imageio-ffmpeg raises RuntimeError)
        found["ffmpeg"] = f"missing ({error})"
    found["state folder"] = where
    return found


def _service_parser(add: Callable[..., argparse.ArgumentParser]) -> None:
    service = add(
        "service",
        _service,
        "install tlwatch as a hardened systemd service (or uninstall it, or show its status)",
        "install: the system user (sysusers), the unit pointed at this installation, "
        "/etc/tlwatch/config.toml with the folders given (never overwritten), the key as a 0600 "
        "credential, read access to each folder (an ACL; a drop-in for folders under /home), "
        "then enable --now and `tlwatch check` as the service's user. Run twice, nothing "
        "changes. --root DIR writes under DIR and runs nothing (it prints each command).",
    )
    service.add_argument("action", choices=("install", "uninstall", "status"))
    service.add_argument(
        "--watch", type=Path, action="append", default=[], metavar="DIR", help="a folder to watch"
    )
    service.add_argument("--key-file", metavar="PATH", help="the API key's file (- for stdin)")
    service.add_argument("--root", type=Path, metavar="DIR", help="write under DIR, run nothing")
    service.add_argument("--dry-run", action="store_true", help="say every step, do none")
    service.add_argument(
        "--purge", action="store_true", help="uninstall: the config, key, store too"
    )
    service.add_argument("--base-url", help="the API's base URL, for the config written")
    service.add_argument(
        "--user", action="store_true", help="the desktop unit, for this user (no root needed)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlwatch",
        description="Watch folders and keep their media in sync with Twelve Labs assets.",
        epilog="Exit codes: 0 ok, 1 failure, 2 usage, 75 another tlwatch holds the store, "
        "78 configuration error.",
    )
    parser.add_argument(
        "--version",
        action=_Version,
        help="show the version, and where libmagic, ffmpeg and the state folder are",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        type=Path,
        metavar="PATH",
        help="configuration file (default: $TLWATCH_CONFIG, "
        "~/.config/tlwatch/config.toml, else /etc/tlwatch/config.toml)",
    )
    common.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="override [logging] level",
    )
    common.add_argument("--log-format", choices=("text", "json"), help="override [logging] format")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(
        name: str, handler: Command, summary: str, details: str = ""
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            parents=[common],
            help=summary,
            description=(summary[:1].upper() + summary[1:] + ". " + details).strip(),
        )
        sub.set_defaults(handler=handler)
        return sub

    add(
        "run",
        _run,
        "run the daemon in the foreground",
        "Watches every [[watch]] folder, uploads complete media files once each and follows "
        "them until ready. Stops cleanly on SIGTERM or Ctrl-C (twice forces); SIGHUP reloads "
        "the configuration.",
    )
    scan = add(
        "scan",
        _scan,
        "upload everything pending once, then exit",
        "One pass over the watched folders: settles, sniffs and uploads what is new or "
        "changed, then exits. Shows progress on a terminal, plain log lines otherwise.",
    )
    scan.add_argument(
        "--wait",
        action="store_true",
        help="also wait until every uploaded asset is ready (or failed)",
    )
    upload = add(
        "upload",
        _upload,
        "upload files (or a URL) once, recorded in the store",
        "Sends the given media files now, whether or not they are in a watched folder, "
        "and prints each asset id. Not while the daemon runs: drop files into a watched "
        "folder instead.",
    )
    upload.add_argument("files", nargs="*", type=os.fsencode, metavar="FILE")
    upload.add_argument("--url", help="let the platform fetch this public URL instead")
    upload.add_argument("--wait", action="store_true", help="wait until each asset is ready")
    status = add(
        "status",
        lambda args: _fleet(args) if args.fleet else _status(args),
        "show counts per folder and state, folders offline, uploads in flight and recent failures",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--fleet",
        action="store_true",
        help="every host sharing the store: its heartbeat, version, folders and work in flight",
    )
    health = add(
        "health",
        _health,
        "say whether the daemon runs and is well (exit 0), or what is wrong (exit 1)",
        "Reads the record the running daemon writes every 5 s beside its store: not running, "
        "paused (API key rejected, store unwritable), a stuck thread or an offline folder is "
        "unhealthy. Fit for a container HEALTHCHECK and for monitoring.",
    )
    health.add_argument("--json", action="store_true", help="machine-readable output")
    listing = add("list", _list, "list recorded files")
    listing.add_argument("--state", choices=[s.value for s in _states()], help="only this state")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    retry = add(
        "retry",
        _retry,
        "put failed or skipped files back in the queue, with their failed indexings and chores",
        "The running daemon picks them up within seconds. A file whose content could not be "
        "read is read again at the next scan.",
    )
    retry.add_argument("paths", nargs="*", type=os.fsencode, metavar="PATH")
    retry.add_argument(
        "--failed",
        action="store_true",
        help="every file with something failed: its upload, an indexing, a move or delete",
    )
    pause = add(
        "pause",
        lambda args: _pause(args, args.reason or "paused by `tlwatch pause`"),
        "pause this host's daemon: no upload starts until `tlwatch resume` (kept across restarts)",
        "Uploads in flight finish. The running daemon hears it at once through its API, or "
        "within seconds from the store.",
    )
    pause.add_argument("reason", nargs="?", help="why, as `tlwatch status` and the page say it")
    add("resume", lambda args: _pause(args, None), "lift a pause asked for by `tlwatch pause`")
    ui = add(
        "ui",
        _ui,
        "open the status page in a browser, signed in to act (Retry, Pause)",
        "Asks the running daemon for a one-time link (it works once, within two minutes) that "
        "gives the browser the token in the state folder as a cookie.",
    )
    ui.add_argument("--print", action="store_true", help="print the link instead of opening it")
    _service_parser(add)
    completion = add(
        "completion",
        _completion,
        "print a shell completion script (bash, zsh or fish), made from these commands",
        "bash: `source <(tlwatch completion bash)` (or save it in "
        "/etc/bash_completion.d/tlwatch); zsh: `source <(tlwatch completion zsh)`; fish: "
        "`tlwatch completion fish > ~/.config/fish/completions/tlwatch.fish`.",
    )
    completion.add_argument("shell", choices=SHELLS)
    index = add(
        "index",
        _index,
        "index files already uploaded (a backfill), exactly once per index",
        "Each file's asset is indexed into --index, or into its folder's index_id. A running "
        "daemon does the work within seconds; otherwise this command does it and waits.",
    )
    index.add_argument("paths", nargs="*", type=os.fsencode, metavar="PATH")
    index.add_argument("--index", metavar="ID", help="the index (default: the folder's index_id)")
    index.add_argument("--all", action="store_true", help="every ready file (needs --index)")
    init = add("init", _init, "write a starter configuration file")
    init.add_argument(
        "--watch",
        type=Path,
        action="append",
        default=[],
        metavar="FOLDER",
        help="a folder to watch (repeatable)",
    )
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    add(
        "check",
        _check,
        "check the configuration, API key, libmagic, inotify budget and folder permissions",
    )
    _add_sandbox(commands)
    return parser


def _states() -> list[FileState]:
    from tlwatch.models import FileState

    return list(FileState)


def _add_sandbox(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from tlwatch.sandbox import DEMO_API_KEY

    sandbox = commands.add_parser(
        "sandbox",
        help="serve a local stand-in for the Twelve Labs assets API",
        description="Serve a local, contract-faithful Twelve Labs assets API on loopback. "
        "The first line printed is the base URL to use as [api] base_url.",
    )
    add = sandbox.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    add("--port", type=int, default=8741, help="port; 0 picks a free one (default %(default)s)")
    add("--api-key", default=DEMO_API_KEY, help="the one key accepted (default: %(default)s)")
    add("--data-dir", type=Path, help="where uploads are stored (default: a temporary folder)")
    add(
        "--generation",
        type=int,
        choices=(1, 2, 3),
        default=3,
        help="asset lifecycle generation to play (default %(default)s)",
    )
    add(
        "--processing-seconds",
        type=float,
        default=2.0,
        help="time from upload to ready/failed (default %(default)s)",
    )
    add(
        "--chunk-size",
        type=int,
        default=5_242_880,
        help="multipart chunk size in bytes (default %(default)s)",
    )
    add(
        "--initial-urls",
        type=int,
        default=10,
        help="presigned URLs given when a multipart upload starts (default %(default)s)",
    )
    add(
        "--direct-limit",
        type=int,
        default=200_000_000,
        help="largest direct upload in bytes (default %(default)s)",
    )
    add(
        "--no-multipart",
        action="store_true",
        help="answer 403 to multipart uploads, as for an account without them",
    )
    add(
        "--fail-name",
        action="append",
        default=[],
        metavar="TEXT",
        help="assets whose filename contains TEXT fail processing (repeatable)",
    )
    add(
        "--index",
        action="append",
        default=[],
        metavar="ID",
        help="an index with this id exists from the start (repeatable)",
    )
    add(
        "--indexing-seconds",
        type=float,
        default=2.0,
        help="time from indexing request to ready/failed (default %(default)s)",
    )
    add(
        "--fail-index-name",
        action="append",
        default=[],
        metavar="TEXT",
        help="assets whose filename contains TEXT fail indexing (repeatable)",
    )
    add(
        "--rate-limit",
        metavar="N/SECONDS",
        help="answer 429 past N requests per SECONDS per endpoint family, with X-Ratelimit-* "
        "headers on every answer (e.g. 10/10)",
    )
    add(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="inject a fault, e.g. endpoint=create,status=429,retry_after=2,times=3 "
        "or endpoint=create,drop=after (repeatable; see the README)",
    )
    sandbox.set_defaults(handler=_run_sandbox)


# ---- shared steps ----------------------------------------------------------------------------
def _fail(message: str, code: int = EXIT_FAILURE) -> int:
    print(f"tlwatch: {message}", file=sys.stderr)
    return code


def _config(args: argparse.Namespace) -> Config:
    from tlwatch import config, logs

    path = args.config or config.default_config_path()
    loaded = config.load(path)
    logs.setup(args.log_level or loaded.logging.level, args.log_format or loaded.logging.format)
    return loaded


def _guarded(command: Command) -> Command:
    """Turn the error tree into messages and exit codes."""

    def run(args: argparse.Namespace) -> int:
        from tlwatch.errors import ApiError, ConfigError, StoreError, StoreLocked

        try:
            return command(args)
        except ConfigError as error:
            print("tlwatch: configuration error:", file=sys.stderr)
            for problem in error.problems:
                print(f"  {problem}", file=sys.stderr)
            return EXIT_CONFIG
        except StoreLocked as error:
            return _fail(
                f"{error}: is the daemon running? (`tlwatch status` works meanwhile)", EXIT_LOCKED
            )
        except (StoreError, ApiError) as error:
            return _fail(str(error))
        except KeyboardInterrupt:
            return _fail("interrupted", 130)

    return run


# ---- commands --------------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    from tlwatch.runner import Runner

    return Runner(_config(args)).run()


def _scan(args: argparse.Namespace) -> int:
    from tlwatch.runner import Runner
    from tlwatch.ticks import Pass

    config = _config(args)
    tty = sys.stdout.isatty()

    def progress(snapshot: Snapshot) -> None:
        print(f"\r\033[K{snapshot.line()}", end="", flush=True)

    ended: list[Snapshot] = []  # (the run's last count, as it ended)
    tick = progress if tty else None
    mode = Pass(once=True, wait_ready=args.wait, on_tick=tick, on_end=ended.append)
    runner = Runner(config, mode=mode)
    code = runner.run()
    if tty:
        print()
    counts = ended[0].counts if ended else _counts(config)  # (else it stopped early)
    print("done: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing"))
    return code


def _counts(config: Config) -> dict[str, int]:
    """How many files the store holds in each state."""
    from tlwatch.fleet import open_store

    counts: Counter[str] = Counter()
    with open_store(config, exclusive=False) as store:
        for (_, state), number in store.counts().items():
            counts[state] += number
    return counts


def _upload(args: argparse.Namespace) -> int:
    if bool(args.files) == bool(args.url):
        return _fail("give FILEs or --url URL", EXIT_USAGE)
    config = _config(args)
    from tlwatch import logs
    from tlwatch.api import Client
    from tlwatch.config import read_api_key
    from tlwatch.fleet import open_store
    from tlwatch.limits import Bandwidth

    key = read_api_key(config)
    logs.add_secret(key)
    with (
        open_store(config) as store,
        Client(
            key,
            base_url=config.api.base_url,
            timeout=config.api.timeout_seconds,
            backoff=config.daemon.request_backoff,
            bandwidth=Bandwidth(config.api.max_upload_rate),
        ) as client,
    ):
        if args.url:
            return _upload_url(store, client, config, args.url, args.wait)
        return _upload_files(store, client, config, args.files, args.wait)


def _upload_url(store: Store, client: Client, config: Config, url: str, wait: bool) -> int:
    from tlwatch.models import Signature

    asset = client.create_from_url(url)
    row = store.adopt(url.encode(), b"", Signature(0, 0, 0), None, asset.id, asset.status, None)
    print(f"{url}\t{asset.id}\t{asset.status}")
    return _wait_ready(store, client, config, [row.id]) if wait else EXIT_OK


def _upload_files(
    store: Store, client: Client, config: Config, files: list[bytes], wait: bool
) -> int:
    import secrets

    from tlwatch.control import RunState
    from tlwatch.intake import Intake
    from tlwatch.models import FileState, regular_signature, shown
    from tlwatch.uploader import Uploader

    intake = Intake(store, lambda: config)
    uploader = Uploader(store, client, lambda: config, RunState())
    code, done = EXIT_OK, []
    for raw in files:
        path = os.path.abspath(raw)
        signature = regular_signature(path)
        row = intake.take(path, signature, force=True) if signature else None
        if row is None:
            code = _fail(f"{shown(raw)}: not a readable regular file")
            continue
        token = secrets.token_hex(16)
        claimed = store.claim(row.id, token)
        result = uploader.upload(claimed, fresh_token=token) if claimed else row
        if result.state not in (FileState.UPLOADED, FileState.READY, FileState.DUPLICATE):
            code = _fail(f"{shown(raw)}: {result.state}: {result.reason}; not uploaded")
            continue
        status = result.state if result.state == FileState.DUPLICATE else result.asset_status
        print(f"{os.fsdecode(raw)}\t{result.asset_id}\t{status}")
        done.append(result.id)
    if wait and done:
        code = max(code, _wait_ready(store, client, config, done))
    return code


def _wait_ready(store: Store, client: Client, config: Config, ids: list[int]) -> int:
    import time

    from tlwatch.control import RunState
    from tlwatch.models import FileState
    from tlwatch.poller import Poller

    poller = Poller(store, client, lambda: config, RunState())
    while any(store.get(i).state == FileState.UPLOADED for i in ids):
        due = poller.poll()
        time.sleep(min(max((due or 0) - time.time(), 0.2), 5.0))
    rows = [store.get(i) for i in ids]
    for row in rows:
        print(f"{os.fsdecode(row.name)}\t{row.asset_id}\t{row.state}")
    return EXIT_OK if all(r.state == FileState.READY for r in rows) else EXIT_FAILURE


def _open_store(args: argparse.Namespace) -> Store:
    from tlwatch.fleet import open_store

    config = _config(args)
    if config.state.url is None and not config.state.path.exists():
        from tlwatch.errors import StoreError

        raise StoreError(f"{config.state.path}: no store yet (the daemon has not run)")
    return open_store(config, exclusive=False)


def _status(args: argparse.Namespace) -> int:
    from tlwatch.health import record_path, verdict
    from tlwatch.report import status

    with _open_store(args) as store:
        report = status(store, verdict(record_path(store.path)))
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    _print_status(report)
    return EXIT_OK


def _print_status(report: dict[str, Any]) -> None:
    folders, limits, proxies = report["folders"], report["limits"], report["proxies"]
    for name, counts in folders.items():
        print(f"{name}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if not folders:
        print("nothing recorded yet")
    if report["indexing"]:
        counted = sorted(report["indexing"].items())
        print("indexing: " + ", ".join(f"{n} {s}" for s, n in counted))
    _print_after_upload(
        report["indexing_waits"], report["after_upload"], report["after_upload_failures"]
    )
    if limits:
        print("limits: " + _limits_line(limits))
    if proxies["originals"]:
        saved = (proxies["original_bytes"] - proxies["sent_bytes"]) / 1e6
        bytes_ = (
            f"{saved:.1f} MB saved" if saved >= 0 else f"{-saved:.1f} MB more than the originals"
        )
        print(f"proxies: {proxies['originals']} original(s) sent as proxies or segments, {bytes_}")
    for name, reason in report["offline"].items():
        print(f"  offline: {name} ({reason}); its files wait for it")
    for row in report["in_flight"]:
        detail = row["asset_status"] or ""
        if row.get("chunks"):
            detail = "{}/{} chunks".format(*row["chunks"])
        print(f"  in flight: {_shown(row)} {row['state']} {row['asset_id'] or ''} {detail}")
    for found in limits.get("transcodes") or []:
        speed = f" at {found['speed']:.1f}x real time" if found.get("speed") else ""
        eta = f", {found['eta_seconds']:.0f} s left" if found.get("eta_seconds") is not None else ""
        print(f"  making a proxy: {found['file']} {found['percent']:.0f}%{speed}{eta}")
    for row in report["recent_failures"]:
        print(f"  {row['state']}: {_shown(row)}: {row['reason']}")


def _shown(row: dict[str, Any]) -> str:
    """A file of the report as a log line names it."""
    from tlwatch.models import shown

    return shown(os.fsencode(row["name"]))


def _fleet(args: argparse.Namespace) -> int:
    """`status --fleet`: every host of the store, lost ones said so."""
    if _config(args).state.url is None:
        said = "one host on SQLite: no fleet (a fleet shares a PostgreSQL store: [state] url)"
        print(json.dumps({"fleet": False, "hosts": []}) if args.json else said)
        return EXIT_OK
    with _open_store(args) as store:
        now, me = store.lease_clock(), store.host
        hosts, flying, waiting = store.hosts(), store.in_flight_by_host(), store.waiting_by_host()
    shown = [
        {
            "id": h.id,
            "name": h.name,
            "this_host": h.id == me,
            "version": h.version,
            "last_heartbeat_seconds_ago": round(now - h.seen_at, 1),
            "lost": h.lost(now),
            "folders": h.facts.get("folders", {}),
            "uploading": flying.get(h.id, 0),
            "queued_in_its_folders": waiting.get(h.id, 0),
        }
        for h in hosts
    ]
    if args.json:
        found = {"fleet": True, "hosts": shown, "queued_in_shared_folders": waiting.get("", 0)}
        print(json.dumps(found, indent=2))
        return EXIT_OK
    for host in shown:
        state = "LOST (silent past its lease)" if host["lost"] else "alive"
        mark = " (this host)" if host["this_host"] else ""
        print(
            f"{host['name']}{mark} [{host['id']}] {state}, v{host['version']}, last heartbeat "
            f"{host['last_heartbeat_seconds_ago']:.0f} s ago; {host['uploading']} uploading, "
            f"{host['queued_in_its_folders']} queued in its own folders"
        )
        for folder, online in host["folders"].items():
            print(f"  {folder}: {'online' if online else 'offline'}")
    if not shown:
        print("no host has run yet")
    if waiting.get(""):
        print(f"shared folders: {waiting['']} queued")
    return EXIT_OK


def _health(args: argparse.Namespace) -> int:
    from tlwatch import hostid
    from tlwatch.health import record_path, verdict

    config = _config(args)
    found = verdict(record_path(config.state.path))
    host = hostid.of(config.state.path.parent, create=False)
    found["host"] = {"name": config.daemon.host_name, "id": host or None}
    fleet = ""
    if config.state.url is not None:
        found["database"] = _database_reachable(args)
        fleet = f" (host {config.daemon.host_name}; database {found['database']})"
        if found["database"] != "reachable":
            found["healthy"] = False
            found["problems"] = [*found.get("problems", []), f"database: {found['database']}"]
    if args.json:
        print(json.dumps(found, indent=2))
    elif found["healthy"]:
        print("healthy" + fleet)
    else:
        print("unhealthy: " + "; ".join(found["problems"]))
    return EXIT_OK if found["healthy"] else EXIT_FAILURE


def _database_reachable(args: argparse.Namespace) -> str:
    from tlwatch.errors import StoreError

    try:
        with _open_store(args) as store:
            store.hosts()
    except StoreError as error:
        return f"unreachable ({error})"
    return "reachable"


def _limits_line(limits: dict[str, Any]) -> str:
    rate = limits.get("upload_rate_limit")
    parts = [f"upload rate {rate / 1e6:.1f} MB/s" if rate else "upload rate unlimited"]
    if limits.get("upload_rate_limit_fleet"):
        parts.append(f"the fleet's {limits['upload_rate_limit_fleet'] / 1e6:.1f} MB/s")
    parts.append(f"{limits.get('upload_workers_allowed')} upload worker(s) sending")
    budget = limits.get("budget") or {}
    if budget.get("per_day_minutes") is not None:
        parts.append(f"today {budget['today_minutes']:.2f} of {budget['per_day_minutes']:.2f} min")
    if budget.get("max_total_minutes") is not None:
        parts.append(
            f"in all {budget['total_minutes']:.2f} of {budget['max_total_minutes']:.2f} min"
        )
    for family, window in sorted((limits.get("pacing") or {}).items()):
        if window.get("remaining") is not None:
            parts.append(f"{family} {window['remaining']}/{window.get('limit')} left")
    return ", ".join(parts)


def _print_after_upload(
    waiting: list[dict[str, Any]], counts: Counter[str], failures: list[dict[str, Any]]
) -> None:
    """What waits after the upload: indexings waiting and why, moves, deletes and updates."""
    for wait in waiting:
        print(f"  indexing waits: {wait['file']} into {wait['index_id']}: {wait['reason']}")
    if counts:
        print("after upload: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    for chore in failures:
        print(f"  {chore['kind']} failed: {chore['file']}: {chore['reason']}")


def _list(args: argparse.Namespace) -> int:
    from tlwatch.report import row_json

    with _open_store(args) as store:
        rows = [r for r in store.all() if args.state is None or r.state == args.state]
        by_asset: dict[str, list[IndexingRow]] = {}
        for indexing in store.all_indexings():  # one pass: grouped by asset
            by_asset.setdefault(indexing.asset_id, []).append(indexing)
    if args.json:
        found = [row_json(r, by_asset.get(r.asset_id or "", [])) for r in rows]
        print(json.dumps(found, indent=2))
        return EXIT_OK
    for row in rows:
        detail = row.asset_id or row.reason or ""
        print(f"{row.state:<9} {row.shown} {detail}")
    return EXIT_OK


def _retry(args: argparse.Namespace) -> int:
    from tlwatch.models import shown

    if not args.paths and not args.failed:
        return _fail("give PATHs or --failed", EXIT_USAGE)
    if args.failed:  # the running daemon does it, and wakes its workers
        asked = _ask_daemon(args, "retry", {"failed": True})
        if asked is not None:
            print(f"re-queued {asked['requeued']} file(s)")
            return EXIT_OK
    with _open_store(args) as store:
        if args.failed:  # failed uploads, and failed indexings and chores of any file
            ids = store.retriable()
        else:
            ids = []
            for raw in args.paths:
                row = store.by_path(os.path.abspath(raw))
                if row is None:
                    return _fail(f"{shown(raw)}: not in the store")
                ids.append(row.id)
        moved = store.retry(ids)
    print(f"re-queued {len(moved)} file(s)")
    return EXIT_OK


def _service(args: argparse.Namespace) -> int:
    import getpass

    from tlwatch import service
    from tlwatch.config import DEFAULT_BASE_URL

    if args.action == "status":
        mode = ["--user"] if args.user else []
        shown = subprocess.run(
            ["systemctl", *mode, "status", "--no-pager", "tlwatch.service"], check=False
        )
        health = _health(argparse.Namespace(**{**vars(args), "json": False}))
        return EXIT_OK if shown.returncode == 0 and health == EXIT_OK else EXIT_FAILURE
    if args.root is None and not args.dry_run and not args.user and os.geteuid() != 0:
        return _fail("this needs root (sudo), or --root DIR to write under a folder", EXIT_USAGE)
    if args.action == "uninstall":
        try:
            service.uninstall(args.root, args.purge, user=args.user)
        except OSError as error:
            return _fail(str(error))
        return EXIT_OK
    if not args.watch:
        return _fail("give the folders to watch: --watch DIR (repeatable)", EXIT_USAGE)
    key: Callable[[], str] | None = None
    if args.key_file == "-":
        key = sys.stdin.read
    elif args.key_file:
        key = Path(args.key_file).read_text
    elif sys.stdin.isatty() and args.root is None:
        key = lambda: getpass.getpass("Twelve Labs API key: ")  # noqa: E731
    steps = (service.UserInstall if args.user else service.Install)(
        [Path(os.path.abspath(folder)) for folder in args.watch],  # (.. and trailing / gone)
        key,
        root=args.root,
        dry_run=args.dry_run,
        base_url=args.base_url or DEFAULT_BASE_URL,
    )
    try:
        steps.run()
    except OSError as error:
        return _fail(str(error))
    return EXIT_OK


def _completion(args: argparse.Namespace) -> int:
    from tlwatch.completion import script

    print(script(build_parser(), args.shell), end="")
    return EXIT_OK


def _pause(args: argparse.Namespace, reason: str | None) -> int:
    """`pause` (a reason) and `resume` (None): through the daemon's API, else in the store."""
    if _ask_daemon(args, "pause" if reason else "resume", {"reason": reason}) is None:
        with _open_store(args) as store:
            store.pause_by_user(reason)
    print(f"paused: {reason}" if reason else "resumed")
    return EXIT_OK


def _ui(args: argparse.Namespace) -> int:
    import webbrowser

    asked = _ask_daemon(args, "login", {})
    if asked is None:
        return _fail("no status page: the daemon is not running here, or [ui] listen is off")
    if args.print or not webbrowser.open(asked["url"]):
        print(asked["url"])
    return EXIT_OK


def _ask_daemon(args: argparse.Namespace, action: str, body: dict[str, Any]) -> Any:
    """POST to the running daemon's API with the token; None when no daemon answers here."""
    import urllib.error
    import urllib.request

    from tlwatch.web import read_token

    config = _config(args)
    if config.ui.listen is None:
        return None
    host, port = config.ui.listen
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        token = read_token(config.state.path.parent)
        request = urllib.request.Request(
            f"http://{address}/api/v1/{action}",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return json.loads(answer.read())
    except (OSError, ValueError, urllib.error.URLError):  # (an HTTP error status too)
        return None


def _index(args: argparse.Namespace) -> int:
    from tlwatch.errors import StoreLocked
    from tlwatch.intake import index_for
    from tlwatch.models import FileState, shown

    if bool(args.paths) == args.all or (args.all and not args.index):
        return _fail("give PATHs, or --all with --index ID", EXIT_USAGE)
    config = _config(args)
    wanted: list[tuple[str, str]] = []
    with _open_store(args) as store:
        rows = store.in_state(FileState.READY) if args.all else []
        for raw in args.paths:
            row = store.by_path(os.path.abspath(raw))
            if row is None or row.state != FileState.READY or not row.asset_id:
                return _fail(f"{shown(raw)}: not uploaded and ready yet; nothing to index")
            rows.append(row)
        for row in rows:
            index_id = args.index or index_for(config, row)
            if index_id is None or row.asset_id is None:
                return _fail(f"{row.shown}: its folder has no index_id; give --index ID")
            new = store.want_index(row.asset_id, index_id, row.id)
            print(f"{row.shown}\t{index_id}\t{'wanted' if new else 'already known'}")
            wanted.append((row.asset_id, index_id))
    try:
        return _index_now(config, wanted)
    except StoreLocked:
        print("the running daemon indexes them within seconds (`tlwatch list --json` shows how)")
        return EXIT_OK


def _index_now(config: Config, wanted: list[tuple[str, str]]) -> int:
    """No daemon runs: send and follow the wanted indexings here, until each has ended."""
    import time

    from tlwatch import logs
    from tlwatch.api import Client
    from tlwatch.config import read_api_key
    from tlwatch.control import RunState
    from tlwatch.fleet import open_store
    from tlwatch.indexer import Indexer
    from tlwatch.models import IndexState

    key = read_api_key(config)
    logs.add_secret(key)
    with (
        open_store(config) as store,
        Client(key, base_url=config.api.base_url, timeout=config.api.timeout_seconds) as client,
    ):
        store.recover(grace=config.api.timeout_seconds)
        run = RunState()
        indexer = Indexer(store, client, lambda: config, run)
        final = (IndexState.READY, IndexState.FAILED, IndexState.SKIPPED)
        while any(store.indexing(*pair).state not in final for pair in wanted):
            if run.paused():
                return _fail(f"stopped: {run.paused()} (nothing was marked failed)")
            while indexer.send_next():
                pass
            due = indexer.follow()
            time.sleep(min(max((due or 0) - time.time(), 0.2), 5.0))
        rows = [store.indexing(*pair) for pair in wanted]
    for row in rows:
        print(f"{row.asset_id}\t{row.index_id}\t{row.state}\t{row.reason or ''}".rstrip())
    return EXIT_OK if all(r.state == IndexState.READY for r in rows) else EXIT_FAILURE


def _init(args: argparse.Namespace) -> int:
    import tomli_w

    from tlwatch.config import DEFAULT_BASE_URL, default_config_path

    path = args.config or default_config_path()
    if path.exists() and not args.force:
        return _fail(f"{path} exists (use --force to overwrite)", EXIT_USAGE)
    folders = args.watch or [Path.home() / "Videos"]
    starter = {
        "api": {
            "base_url": DEFAULT_BASE_URL,
            "api_key_file": str(path.parent / "api_key"),
        },
        "watch": [
            {"path": str(f.absolute()), "recursive": True, "settle_seconds": 5.0} for f in folders
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# tlwatch configuration; every key is described in config.example.toml.\n"
        + tomli_w.dumps(starter)
    )
    print(f"wrote {path}; put your API key in {path.parent / 'api_key'} (chmod 600)")
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from tlwatch import checks

    config = _config(args)
    ok = True
    for name, passed, detail in checks.run_all(config):
        print(f"{'ok  ' if passed else 'FAIL'} {name}: {detail}")
        ok = ok and passed
    return EXIT_OK if ok else EXIT_FAILURE


def _run_sandbox(args: argparse.Namespace) -> int:
    from tlwatch.sandbox import Fault, Settings, make_server, serve_until_signalled

    settings = Settings(
        api_key=args.api_key,
        generation=args.generation,
        processing_seconds=args.processing_seconds,
        chunk_size=args.chunk_size,
        initial_urls=args.initial_urls,
        direct_limit=args.direct_limit,
        multipart_enabled=not args.no_multipart,
        fail_names=args.fail_name,
        indexing_seconds=args.indexing_seconds,
        fail_index_names=args.fail_index_name,
    )
    if args.rate_limit:
        count, _, seconds = args.rate_limit.partition("/")
        try:
            settings.rate_limit, settings.rate_window = int(count), float(seconds or 10)
        except ValueError:
            return _fail("sandbox: --rate-limit: give N/SECONDS, like 10/10", EXIT_USAGE)
    try:
        faults = [Fault.parse(spec) for spec in args.fault]
    except (TypeError, ValueError) as error:
        return _fail(f"sandbox: --fault: {error}", EXIT_USAGE)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="tlwatch-sandbox-"))
    try:
        server = make_server(args.host, args.port, settings, data_dir, index_ids=tuple(args.index))
    except OSError as error:
        return _fail(f"sandbox: cannot listen on {args.host}:{args.port}: {error.strerror}")
    server.service.faults.extend(faults)
    try:
        serve_until_signalled(server, lambda url: print(url, flush=True))
    finally:
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Command = args.handler
    if handler is not _run_sandbox:
        handler = _guarded(handler)
    return handler(args)

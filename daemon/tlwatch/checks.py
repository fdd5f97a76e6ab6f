"""`tlwatch check`: everything that can stop the daemon from doing its job, checked up front."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tlwatch.api import Client
from tlwatch.config import Config, api_key_source, read_api_key
from tlwatch.errors import ApiError, AuthError, ConfigError, StoreError
from tlwatch.sniff import sniff
from tlwatch.transcode import find_ffmpeg, pick_encoder, version

Result = tuple[str, bool, str]
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


def run_all(config: Config) -> list[Result]:
    return [
        ("configuration", True, str(config.source)),
        _api_key(config),
        _libmagic(),
        _ffmpeg(config),
        _inotify(config),
        *_folders(config),
        *_state(config),
    ]


def _api_key(config: Config) -> Result:
    try:
        key = read_api_key(config)
    except ConfigError as error:
        return ("api key", False, str(error))
    where = api_key_source(config)
    try:
        with Client(key, base_url=config.api.base_url, timeout=15, max_attempts=1) as client:
            next(iter(client.list_assets(page_limit=1)), None)
    except AuthError:
        return ("api key", False, f"from {where}: rejected by {config.api.base_url}")
    except ApiError as error:
        return ("api key", False, f"from {where}: cannot check it: {error}")
    return ("api key", True, f"from {where}: accepted by {config.api.base_url}")


def _libmagic() -> Result:
    with tempfile.NamedTemporaryFile(suffix=".txt") as file:
        file.write(PNG)
        file.flush()
        mime = sniff(os.fsencode(file.name)).mime
    return ("libmagic", mime == "image/png", f"reads a PNG as {mime}")


def _ffmpeg(config: Config) -> Result:
    """The ffmpeg that makes proxies, its version and the H.264 encoder it will use."""
    needed = any(watch.proxy != "never" for watch in config.watch)
    try:
        binary = find_ffmpeg(config.fit.ffmpeg)
        said = version(binary)
        encoder = pick_encoder(binary, config.fit.encoder)
    except OSError as error:
        return ("ffmpeg", not needed, f"cannot run it: {error}; no proxy can be made")
    return ("ffmpeg", True, f"{binary}: {said}; H.264 encoder {encoder}")


def _inotify(config: Config) -> Result:
    try:
        budget = int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
    except (OSError, ValueError):
        return ("inotify", True, "no inotify budget to read here (polling works anyway)")
    needed = 0
    for watch in config.watch:
        if watch.path.is_dir():
            needed += 1
            if watch.recursive:
                needed += sum(len(dirs) for _, dirs, _ in os.walk(watch.path))
    detail = f"{needed} folder(s) to watch, budget {budget} (fs.inotify.max_user_watches)"
    return ("inotify", needed < budget, detail)


def _folders(config: Config) -> list[Result]:
    results = []
    for watch in config.watch:
        name = f"folder {watch.path}"
        writes = watch.after_upload != "keep"
        if not watch.path.is_dir():
            results.append((name, False, "missing or not a folder"))
        elif not os.access(watch.path, os.R_OK | os.X_OK):
            results.append((name, False, "not readable by this user"))
        elif writes and not os.access(watch.path, os.W_OK):
            results.append((name, False, f"after_upload = {watch.after_upload} needs write access"))
        else:
            results.append((name, True, "readable" + (" and writable" if writes else "")))
        if watch.move_to is not None:
            parent = watch.move_to if watch.move_to.exists() else watch.move_to.parent
            ok = os.access(parent, os.W_OK)
            results.append((f"move_to {watch.move_to}", ok, "writable" if ok else "not writable"))
    if not config.watch:
        results.append(("folders", False, "no [[watch]] folder configured"))
    return results


def _state(config: Config) -> list[Result]:
    folder = config.state.path.parent
    existing = folder
    while not existing.exists():
        existing = existing.parent
    ok = os.access(existing, os.W_OK)
    if config.state.url is None:
        return [
            ("state store", ok, f"{config.state.path} ({'writable' if ok else 'not writable'})")
        ]
    said = "writable" if ok else "not writable"
    return [("state folder", ok, f"{folder} ({said}: this host's id and lock)"), _database(config)]


def _database(config: Config) -> Result:
    """A fleet's store: reached, and its schema read (it is not changed here)."""
    from tlwatch.fleet import open_store  # noqa: PLC0415 - (it loads psycopg)

    try:
        with open_store(config, exclusive=False) as store:
            hosts = store.hosts()
            where = store.database.where
    except (StoreError, ConfigError) as error:
        return ("state store", False, str(error))
    return ("state store", True, f"{where} (reachable; {len(hosts)} host(s) have run)")

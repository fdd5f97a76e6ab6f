"""The daemon's parts on their own: config, settle, name filters, the store, the uploader."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from tlwatch.api import Client
from tlwatch.config import Config, WatchConfig, load, parse, read_api_key
from tlwatch.errors import ConfigError, StoreLocked
from tlwatch.intake import Intake
from tlwatch.models import FileState, Signature, shown
from tlwatch.scan import skip_reason, walk
from tlwatch.settle import Settler
from tlwatch.state import Store
from tlwatch.uploader import Hooks, Uploader

from conftest import FIXTURES, Sandbox, wait_for


# ---- configuration -------------------------------------------------------------------------
def test_every_problem_is_reported_at_once_with_its_key_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        parse(
            {
                "api": {"max_concurrent_uploads": 0, "direct_upload_limit": "big"},
                "loging": {},
                "watch": [{"path": "a", "kinds": ["video", "text"], "recursiv": False}],
            },
            source=tmp_path / "c.toml",
        )
    problems = error.value.problems
    assert f"{tmp_path / 'c.toml'}: loging: unknown key (did you mean 'logging'?)" in problems
    assert any("api.max_concurrent_uploads: must be an integer >= 1, got 0" in p for p in problems)
    assert any(
        'api.direct_upload_limit: must be a number of bytes >= 1, got "big"' in p for p in problems
    )
    assert any("watch[0].kinds:" in p for p in problems)
    assert any("watch[0].recursiv: unknown key (did you mean 'recursive'?)" in p for p in problems)
    assert len(problems) == 5


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = parse(
        {"watch": [{"path": "cams"}], "state": {"path": "s.db"}}, source=tmp_path / "c.toml"
    )
    assert config.api.base_url == "https://api.twelvelabs.io/v1.3"
    assert config.api.direct_upload_limit == 200_000_000
    assert config.watch[0].path == tmp_path / "cams"
    assert config.state.path == tmp_path / "s.db"
    assert config.watch[0].after_upload == "keep"


def test_a_file_that_is_not_toml_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("[api\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(bad)
    with pytest.raises(ConfigError, match="no such file"):
        load(tmp_path / "missing.toml")


def test_the_key_comes_from_env_then_credentials_then_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "key").write_text(" from-file \n")
    config = parse({"api": {"api_key_file": "key"}}, source=tmp_path / "c.toml")
    monkeypatch.delenv("TWELVELABS_API_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert read_api_key(config) == "from-file"
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "api_key").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert read_api_key(config) == "from-systemd"
    monkeypatch.setenv("TWELVELABS_API_KEY", "from-env")
    assert read_api_key(config) == "from-env"
    monkeypatch.delenv("TWELVELABS_API_KEY")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError, match="no API key"):
        read_api_key(parse({}, source=None))


# ---- settle --------------------------------------------------------------------------------
def test_a_file_is_complete_only_after_it_stops_changing() -> None:
    now = [0.0]
    sizes = {b"f": 1}
    settler = Settler(lambda p: Signature(sizes[p], 0, 1) if p in sizes else None, lambda: now[0])
    settler.add(b"f", 2.0)
    assert settler.next_due() == 2.0
    now[0] = 1.9
    assert settler.ripe() == []
    sizes[b"f"] = 2  # still growing when its time comes: the clock starts again
    now[0] = 2.0
    assert settler.ripe() == []
    assert settler.next_due() == 4.0
    settler.add(b"f", 2.0)  # an event with the same signature does not restart the clock
    now[0] = 4.0
    assert settler.ripe() == [(b"f", Signature(2, 0, 1))]
    assert len(settler) == 0


def test_a_vanished_file_is_forgotten() -> None:
    settler = Settler(lambda p: None, lambda: 0.0)
    settler.add(b"gone", 1.0)
    assert len(settler) == 0


# ---- names ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("clip.mp4", None),
        (".hidden.mp4", "hidden"),
        ("clip.mp4.part", "a temporary name"),
        ("x.crdownload", "a temporary name"),
        ("~$doc.mp4", "a temporary name"),
        (".clip.mp4.AbC123", "hidden"),
        (".syncthing.clip.mp4.tmp", "hidden"),
        ("proxies/clip.mp4", "excluded"),
        ("a/.cache/clip.mp4", "hidden"),
        ("clip.THM", "excluded"),
    ],
)
def test_name_filters(tmp_path: Path, name: str, reason: str | None) -> None:
    watch = WatchConfig(path=tmp_path, exclude=("proxies/*", "*.THM"))
    assert skip_reason(watch, os.fsencode(tmp_path / name)) == reason


def test_include_and_non_recursive(tmp_path: Path) -> None:
    watch = WatchConfig(path=tmp_path, include=("*.mov",), recursive=False)
    assert skip_reason(watch, os.fsencode(tmp_path / "a.mp4")) == "not included"
    assert skip_reason(watch, os.fsencode(tmp_path / "a.mov")) is None
    assert skip_reason(watch, os.fsencode(tmp_path / "d" / "a.mov")) is not None


def test_walk_skips_fifos_and_symlinks_leading_outside(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "a.mp4").write_bytes(b"x")
    (outside / "secret.mp4").write_bytes(b"x")
    (root / "link-out.mp4").symlink_to(outside / "secret.mp4")
    (root / "link-in.mp4").symlink_to(root / "sub" / "a.mp4")
    os.mkfifo(root / "pipe.mp4")
    found = sorted(walk(WatchConfig(path=root), [os.fsencode(root)]))
    assert found == [os.fsencode(root / "link-in.mp4"), os.fsencode(root / "sub" / "a.mp4")]


def test_names_are_shown_escaped() -> None:
    assert shown(b"a\nb.mp4") == r"'a\nb.mp4'"
    assert "\n" not in shown(b"x\n\r\x1b[31m.mp4")


# ---- the store -----------------------------------------------------------------------------
def test_the_store_lock_keeps_a_second_writer_away(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db"):
        with pytest.raises(StoreLocked):
            Store(tmp_path / "s.db")
        with Store(tmp_path / "s.db", exclusive=False) as reader:
            assert reader.all() == []


def test_a_corrupt_store_is_moved_aside_not_silently_emptied(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Store(path) as store:
        store.record(b"/x/a.mp4", b"/x", Signature(1, 2, 3), FileState.QUEUED)
    path.write_bytes(b"this is not a database" * 100)
    with Store(path) as store:
        assert store.rebuilt
        assert store.all() == []
    aside = [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert aside and (tmp_path / aside[0]).read_bytes().startswith(b"this is not")


def test_migrations_are_numbered_and_a_newer_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    Store(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(Exception, match="newer tlwatch"):
        Store(path, exclusive=False)


def test_every_state_change_is_a_timestamped_event(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        row = store.record(b"/w/a.mp4", b"/w", Signature(1, 2, 3), FileState.QUEUED)
        claimed = store.claim_next()
        assert claimed is not None and claimed.state == FileState.UPLOADING
        assert claimed.attempts == 1
        store.move(row.id, FileState.UPLOADED, asset_id="a1")
        events = store.events(row.id)
    assert [(e[2], e[3]) for e in events] == [
        (None, "queued"),
        ("queued", "uploading"),
        ("uploading", "uploaded"),
    ]
    assert all(e[0] > 0 for e in events)


# ---- intake and uploader against the sandbox ------------------------------------------------
def make_config(tmp_path: Path, sandbox: Sandbox, **watch: object) -> Config:
    return parse(
        {
            "api": {"base_url": sandbox.base_url},
            "state": {"path": "s.db"},
            "watch": [{"path": "w", **watch}],
        },
        source=tmp_path / "c.toml",
    )


def test_intake_records_media_ignores_the_rest_and_finds_duplicates(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = make_config(tmp_path, sandbox, kinds=["video"])
    (tmp_path / "w").mkdir()
    for name in ("clip.mp4", "tone.wav", "not-really.mp4"):
        shutil.copy(FIXTURES / name, tmp_path / "w" / name)
    shutil.copy(FIXTURES / "clip.mp4", tmp_path / "w" / "again.mp4")
    with Store(config.state.path) as store:
        intake = Intake(store, lambda: config)

        def take(name: str) -> FileState:
            path = os.fsencode(tmp_path / "w" / name)
            row = intake.take(path, Signature.of(os.stat(path)))
            assert row is not None
            return row.state

        assert take("clip.mp4") == FileState.QUEUED
        assert take("tone.wav") == FileState.IGNORED  # audio is not wanted in this folder
        assert take("not-really.mp4") == FileState.IGNORED
        assert take("again.mp4") == FileState.DUPLICATE
        assert take("clip.mp4") == FileState.QUEUED  # unchanged: nothing new


def test_uploader_skips_images_over_32_mb_without_sending(tmp_path: Path, sandbox: Sandbox) -> None:
    config = make_config(tmp_path, sandbox)
    big = tmp_path / "w" / "huge.png"
    big.parent.mkdir()
    with big.open("wb") as file:
        file.write((FIXTURES / "photo.png").read_bytes())
        file.truncate(33_000_000)
    with Store(config.state.path) as store, Client("k", base_url=sandbox.base_url) as client:
        store.record(
            os.fsencode(big),
            os.fsencode(big.parent),
            Signature.of(big.stat()),
            FileState.QUEUED,
            kind="image",
            sha256="0",
        )
        row = store.claim_next()
        assert row is not None
        done = Uploader(store, client, lambda: config, Hooks()).upload(row)
    assert done.state == FileState.SKIPPED
    assert "32 MB" in (done.reason or "")
    assert sandbox.requests() == {}


def test_an_inotify_overflow_asks_for_a_rescan(tmp_path: Path) -> None:
    import logging

    from tlwatch.watcher import Folder, Watcher

    troubles: list[str] = []
    paths: list[bytes] = []
    watcher = Watcher(paths.append, troubles.append)
    try:
        watcher.watch([Folder(tmp_path, recursive=True, poll=False)])
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost"
        )
        assert troubles == ["the inotify queue overflowed"]
        (tmp_path / "a.mp4").write_bytes(b"x")
        wait_for(lambda: os.fsencode(tmp_path / "a.mp4") in paths)
        assert watcher.healthy()
    finally:
        watcher.close()


def test_every_config_key_is_documented_in_the_example_and_the_readme() -> None:
    from dataclasses import fields

    from tlwatch.config import ApiConfig, DaemonConfig, LoggingConfig, StateConfig

    top = Path(__file__).parents[1]
    example = (top / "config.example.toml").read_text()
    readme = (top / "README.md").read_text()
    for section in (ApiConfig, StateConfig, LoggingConfig, DaemonConfig, WatchConfig):
        for field in fields(section):
            assert f"{field.name} =" in example or f"# {field.name} =" in example, field.name
            assert field.name in readme, field.name


def test_a_file_that_cannot_be_read_is_named_once_per_version(
    tmp_path: Path, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path, sandbox)
    (tmp_path / "w").mkdir()
    path = os.fsencode(tmp_path / "w" / "vanished.mp4")  # named by an event, gone when read
    with Store(config.state.path) as store:
        intake = Intake(store, lambda: config)
        for _ in range(3):
            assert intake.take(path, Signature(10, 1, 2)) is None
        assert intake.take(path, Signature(11, 1, 2)) is None  # a new version is named again
        assert store.all() == []
    warnings = [
        r for r in caplog.records if "cannot read it" in r.getMessage() and r.levelname == "WARNING"
    ]
    assert len(warnings) == 2


def test_network_file_systems_are_told_apart() -> None:
    from tlwatch.scan import NETWORK_FILESYSTEMS, filesystem_type

    assert filesystem_type(Path("/proc/self")) == "proc"
    assert "nfs4" in NETWORK_FILESYSTEMS and "cifs" in NETWORK_FILESYSTEMS
    assert filesystem_type(Path(__file__)) not in NETWORK_FILESYSTEMS


def test_hashing_reports_progress_and_matches_hashlib(tmp_path: Path) -> None:
    import hashlib

    from tlwatch.intake import sha256_of

    data = os.urandom((1 << 20) * 3 + 17)
    (tmp_path / "f").write_bytes(data)
    beats: list[None] = []
    assert sha256_of(os.fsencode(tmp_path / "f"), lambda: beats.append(None)) == (
        hashlib.sha256(data).hexdigest()
    )
    assert len(beats) == 4

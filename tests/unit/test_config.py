"""Configuration: every problem at once with its key path, defaults, the key's sources."""

from __future__ import annotations

import shutil
from dataclasses import fields
from pathlib import Path

import pytest

from tlwatch.config import (
    ApiConfig,
    BudgetConfig,
    DaemonConfig,
    FitConfig,
    LoggingConfig,
    MetricsConfig,
    NotifyConfig,
    StateConfig,
    WatchConfig,
    load,
    parse,
    read_api_key,
    restart_needed,
)
from tlwatch.errors import ConfigError

TOP = Path(__file__).parents[2]


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


def test_every_config_key_is_documented_in_the_example_and_the_readme() -> None:
    example = (TOP / "config.example.toml").read_text()
    readme = (TOP / "README.md").read_text()
    for section in (
        ApiConfig,
        StateConfig,
        LoggingConfig,
        DaemonConfig,
        MetricsConfig,
        NotifyConfig,
        BudgetConfig,
        FitConfig,
        WatchConfig,
    ):
        for field in fields(section):
            assert f"{field.name} =" in example or f"# {field.name} =" in example, field.name
            assert field.name in readme, field.name


def test_defaults_are_the_dataclass_defaults(tmp_path: Path) -> None:
    config = parse({"watch": [{"path": "w"}]}, source=tmp_path / "c.toml")
    assert config.daemon == DaemonConfig()
    assert config.logging == LoggingConfig()
    assert config.watch[0] == WatchConfig(path=tmp_path / "w")
    assert config.api.timeout_seconds == ApiConfig().timeout_seconds


def test_a_reload_names_what_only_a_restart_applies(tmp_path: Path) -> None:
    old = parse({"api": {"timeout_seconds": 5}, "watch": [{"path": "a"}]}, source=tmp_path / "c")
    new = parse({"api": {"timeout_seconds": 9}, "watch": [{"path": "b"}]}, source=tmp_path / "c")
    assert restart_needed(old, new) == ["[api] timeout_seconds"]
    assert restart_needed(old, old) == []


def test_backoffs_follow_the_configured_schedule(tmp_path: Path) -> None:
    config = parse({"daemon": {"retry_base_seconds": 3, "retry_max_seconds": 90}}, source=None)
    assert (config.daemon.upload_backoff.base, config.daemon.upload_backoff.cap) == (3.0, 90.0)
    assert config.daemon.request_backoff.cap == 30.0  # one request never waits long


def test_the_example_config_loads(tmp_path: Path) -> None:
    example = TOP / "config.example.toml"
    copy = tmp_path / "config.toml"
    shutil.copy(example, copy)
    copy.chmod(0o600)
    config = load(copy)
    assert len(config.watch) == 2
    assert config.watch[0].user_metadata == {
        "camera": "A",
        "project": "{dir[0]}",
        "day": "{mtime:%Y-%m-%d}",
    }
    assert config.api.direct_upload_limit == 200_000_000


def test_templates_that_can_never_work_are_errors_with_their_key_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        parse(
            {
                "watch": [
                    {
                        "path": "w",
                        "user_metadata": {
                            "ok": "{dir[9]}-{stem}",
                            "typo": "{dri[0]}",
                            "size": "{size:%Y}",
                            "broken": "{name",
                            "tlwatch_token": "x",
                            "nested": {"a": 1},
                        },
                    }
                ]
            },
            source=tmp_path / "c.toml",
        )
    problems = "\n".join(error.value.problems)
    for key in ("typo", "size", "broken", "tlwatch_token", "nested"):
        assert f"watch[0].user_metadata.{key}:" in problems
    assert "user_metadata.ok" not in problems
    assert len(error.value.problems) == 5


def test_the_page_listens_on_loopback_unless_remote_is_allowed(tmp_path: Path) -> None:
    def listen(ui: dict[str, object], metrics: dict[str, object] | None = None) -> object:
        data = {"ui": ui, "metrics": metrics or {}}
        return parse(data, source=tmp_path / "c").ui.listen

    assert parse({}, source=None).ui.listen == ("127.0.0.1", 9811)  # on by default
    assert listen({"listen": "off"}) is None
    assert listen({"listen": "9811"}) == ("127.0.0.1", 9811)
    assert listen({"listen": 9811}) == ("127.0.0.1", 9811)
    assert listen({"listen": "[::1]:9811"}) == ("::1", 9811)
    assert listen({"listen": "0.0.0.0:9811", "allow_remote": True}) == ("0.0.0.0", 9811)
    with pytest.raises(ConfigError, match=r"ui\.listen: 0\.0\.0\.0 is beyond loopback"):
        listen({"listen": "0.0.0.0:9811"})
    with pytest.raises(ConfigError, match=r"ui\.listen: must be an address"):
        listen({"listen": "nowhere"})
    # An older config's [metrics] listen stands for [ui] listen, and is refused beside another.
    assert listen({}, {"listen": "9900"}) == ("127.0.0.1", 9900)
    with pytest.raises(ConfigError, match=r"metrics\.listen: .*give only \[ui\] listen"):
        listen({"listen": "9811"}, {"listen": "9900"})
    with pytest.raises(ConfigError, match=r"metrics\.listen: 0\.0\.0\.0 is beyond loopback"):
        listen({}, {"listen": "0.0.0.0:9900"})
    config = parse(
        {"watch": [{"path": "a/cams"}, {"path": "b/cams"}, {"path": "c", "name": "x"}]}, source=None
    )
    assert sorted(config.folder_names().values()) == ["cams", "cams-2", "x"]


def test_a_database_url_with_a_password_is_refused_without_showing_it(tmp_path: Path) -> None:
    url = "postgresql://tlwatch:hunter2secret@db.example:5432/tlwatch"
    with pytest.raises(ConfigError) as caught:
        parse({"state": {"url": url}}, source=tmp_path / "c.toml")
    said = str(caught.value)
    assert "state.url: holds a password" in said
    assert "hunter2secret" not in said


def test_a_fleet_store_and_shared_folders_are_read(tmp_path: Path) -> None:
    config = parse(
        {
            "state": {"url": "postgresql://tlwatch@db.example/tlwatch", "lease_seconds": 30},
            "daemon": {"host_name": "ingest-1"},
            "watch": [{"path": "nas", "share": "nas1"}, {"path": "cards"}],
        },
        source=tmp_path / "c.toml",
    )
    assert config.state.url == "postgresql://tlwatch@db.example/tlwatch"
    assert config.state.lease_seconds == 30
    assert config.daemon.host_name == "ingest-1"
    assert [w.share for w in config.watch] == ["nas1", None]


def test_a_share_needs_a_fleet_store_and_a_name_of_its_own(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"watch.share: a shared folder needs a fleet's store"):
        parse({"watch": [{"path": "nas", "share": "nas1"}]}, source=tmp_path / "c.toml")
    fleet = {"url": "postgresql://tlwatch@db.example/tlwatch"}
    twice = [{"path": "a", "share": "nas1"}, {"path": "b", "share": "nas1"}]
    with pytest.raises(ConfigError, match=r"'nas1' names two watched folders"):
        parse({"state": fleet, "watch": twice}, source=tmp_path / "c.toml")
    with pytest.raises(ConfigError, match=r"watch\[0\].share: must be a short name"):
        parse({"state": fleet, "watch": [{"path": "a", "share": "nas 1/x"}]}, source=None)

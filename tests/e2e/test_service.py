"""`tlwatch service install --root`: everything a system install writes, checked without
touching the machine (as `systemctl --root`): the unit systemd accepts, hardened; the sysusers
line; the key as a 0600 credential; a config `tlwatch check` accepts; the ACL and systemctl
commands it would run; the drop-in for a folder under /home. Run twice, nothing changes;
uninstall removes what it wrote."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w

from tlwatch.sandbox import DEMO_API_KEY

from conftest import Sandbox, systemd_exposure


def tlwatch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tlwatch", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_install_under_a_root_writes_a_service_that_systemd_and_tlwatch_accept(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    root, cards = tmp_path / "root", tmp_path / "cards"
    cards.mkdir()
    (tmp_path / "key").write_text(DEMO_API_KEY + "\n")
    home = "/home/alice/Videos/Exports"
    install = [
        "service", "install", "--root", str(root), "--watch", str(cards), "--watch", home,
        "--key-file", str(tmp_path / "key"), "--base-url", sandbox.base_url,
    ]  # fmt: skip
    first = tlwatch(*install)
    assert first.returncode == 0, first.stderr
    said = first.stdout.splitlines()
    unit = root / "etc/systemd/system/tlwatch.service"
    key = root / "etc/tlwatch/api_key"
    assert key.read_text() == DEMO_API_KEY + "\n" and (key.stat().st_mode & 0o777) == 0o600
    assert DEMO_API_KEY not in first.stdout + first.stderr
    sysusers = (root / "usr/lib/sysusers.d/tlwatch.conf").read_text()
    assert 'u tlwatch - "tlwatch uploader" /var/lib/tlwatch' in sysusers
    assert f"ExecStart={Path(sys.executable).parent / 'tlwatch'} run" in unit.read_text()
    drop_in = (root / "etc/systemd/system/tlwatch.service.d/folders.conf").read_text()
    assert f"BindReadOnlyPaths=-{home}" in drop_in and str(cards) not in drop_in
    for command in (
        f"would run: setfacl -R -m u:tlwatch:rX -m d:u:tlwatch:rX {cards}",
        "would run: setfacl -m u:tlwatch:x /home/alice",
        "would run: systemctl daemon-reload",
        "would run: systemctl enable --now tlwatch.service",
    ):
        assert command in said, command
    # The config, as the service reads it: the key as its credential, its state directory.
    service_env = {
        "CREDENTIALS_DIRECTORY": str(key.parent),
        "STATE_DIRECTORY": str(tmp_path / "state"),
        "TWELVELABS_API_KEY": "",
    }
    written = tomllib.loads((root / "etc/tlwatch/config.toml").read_text())
    assert [w["path"] for w in written["watch"]] == [str(cards), home]
    written["watch"] = written["watch"][:1]  # (the folder under /home is not on this machine)
    checked_config = tmp_path / "checked.toml"
    checked_config.write_text(tomli_w.dumps(written))
    checked = tlwatch("check", "-c", str(checked_config), env=service_env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Again: nothing changes.
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    again = tlwatch(*install)
    assert again.returncode == 0 and not any(
        line.startswith("wrote") for line in again.stdout.splitlines()
    )
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before
    if shutil.which("systemd-analyze"):
        assert systemd_exposure(unit) <= 1.2
    # Uninstall: the unit, the drop-in and the user's file go; the config and the key stay.
    gone = tlwatch("service", "uninstall", "--root", str(root))
    assert gone.returncode == 0, gone.stderr
    assert "would run: systemctl disable --now tlwatch.service" in gone.stdout
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "etc/tlwatch/api_key",
        "etc/tlwatch/config.toml",
    ]
    assert tlwatch("service", "uninstall", "--root", str(root), "--purge").returncode == 0
    assert not any(p.is_file() for p in root.rglob("*"))


def test_a_dry_run_says_every_step_and_does_none(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("tlk_x\n")
    args = ["--dry-run", "--root", str(tmp_path / "root"), "--watch", str(tmp_path)]
    found = tlwatch("service", "install", *args, "--key-file", str(tmp_path / "key"))
    assert found.returncode == 0, found.stderr
    said = found.stdout.splitlines()
    for written in (
        "usr/lib/sysusers.d/tlwatch.conf",
        "etc/systemd/system/tlwatch.service",
        "etc/tlwatch/config.toml",
        "etc/tlwatch/api_key (the key, mode 0600)",
    ):
        assert f"would write {tmp_path / 'root' / written}" in said, written
    assert "would run: systemctl enable --now tlwatch.service" in said
    assert not (tmp_path / "root").exists()


def test_install_needs_its_folders_and_a_key(tmp_path: Path) -> None:
    root = tmp_path / "root"
    nothing = tlwatch("service", "install", "--root", str(root))
    assert nothing.returncode == 2 and "--watch" in nothing.stderr
    no_key = tlwatch("service", "install", "--root", str(root), "--watch", str(tmp_path))
    assert no_key.returncode == 1 and "no API key" in no_key.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="as root, an install is allowed")
def test_without_root_an_install_says_so(tmp_path: Path) -> None:
    found = tlwatch("service", "install", "--watch", str(tmp_path))
    assert found.returncode == 2 and "needs root" in found.stderr


def test_a_kept_config_decides_the_folders_and_which_are_written_in(tmp_path: Path) -> None:
    root, cards, done = tmp_path / "root", tmp_path / "cards", tmp_path / "done"
    config = root / "etc/tlwatch/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        f'[[watch]]\npath = "{cards}"\nafter_upload = "move"\nmove_to = "{done}"\n'
        '[[watch]]\npath = "/home/bob/My Exports"\nafter_upload = "delete"\n'
    )
    (tmp_path / "key").write_text("tlk_x\n")
    args = ["--root", str(root), "--watch", str(tmp_path / "other"), "--key-file"]
    found = tlwatch("service", "install", *args, str(tmp_path / "key"))
    assert found.returncode == 0, found.stderr
    assert f"kept {config} (never overwritten)" in found.stdout
    for folder in (cards, done):
        rwx = f"would run: setfacl -R -m u:tlwatch:rwX -m d:u:tlwatch:rwX {folder}"
        assert rwx in found.stdout.splitlines()
    assert f"setfacl -R -m u:tlwatch:rX -m d:u:tlwatch:rX {tmp_path / 'other'}" not in found.stdout
    drop_in = (root / "etc/systemd/system/tlwatch.service.d/folders.conf").read_text()
    assert f"ReadWritePaths=-{cards}\n" in drop_in and f"ReadWritePaths=-{done}\n" in drop_in
    assert 'BindPaths="-/home/bob/My Exports"\n' in drop_in  # (quoted: a space would split it)


def test_the_desktop_unit_for_one_user(tmp_path: Path, sandbox: Sandbox) -> None:
    root, folder = tmp_path / "root", tmp_path / "Exports"
    folder.mkdir()
    (tmp_path / "key").write_text(DEMO_API_KEY + "\n")
    args = ["--user", "--root", str(root), "--watch", str(folder), "--key-file"]
    found = tlwatch("service", "install", *args, str(tmp_path / "key"))
    assert found.returncode == 0, found.stderr
    home = root / Path.home().relative_to("/")
    unit = home / ".config/systemd/user/tlwatch.service"
    assert f"ExecStart={Path(sys.executable).parent / 'tlwatch'} run" in unit.read_text()
    key = home / ".config/tlwatch/api_key"
    assert (key.stat().st_mode & 0o777) == 0o600
    assert "setfacl" not in found.stdout and "sysusers" not in found.stdout
    assert "would run: systemctl --user enable --now tlwatch.service" in found.stdout
    config = home / ".config/tlwatch/config.toml"
    with_sandbox = config.read_text().replace("https://api.twelvelabs.io/v1.3", sandbox.base_url)
    config.write_text(with_sandbox)
    env = {"STATE_DIRECTORY": str(tmp_path / "state"), "TWELVELABS_API_KEY": ""}
    checked = tlwatch("check", "-c", str(config), env=env)  # (its key: api_key beside it)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert tlwatch("service", "uninstall", "--user", "--root", str(root)).returncode == 0
    assert not unit.exists() and config.exists()


def test_what_is_written_is_readable_by_the_service_and_the_key_by_root_alone(
    tmp_path: Path,
) -> None:
    root, key = tmp_path / "root", tmp_path / "key"
    key.write_text("tlk_x\n")
    args = ["service", "install", "--root", str(root), "--watch", str(tmp_path)]
    found = subprocess.run(  # (root's umask may be 077: the config must stay readable)
        ["bash", "-c", 'umask 077; exec "$@"', "-", sys.executable, "-m", "tlwatch", *args,
         "--key-file", str(key)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert (root / "etc/tlwatch").stat().st_mode & 0o777 == 0o755
    assert (root / "etc/tlwatch/config.toml").stat().st_mode & 0o777 == 0o644
    kept = root / "etc/tlwatch/api_key"
    kept.chmod(0o644)  # (made by hand, too open)
    again = tlwatch(*args)
    assert again.returncode == 0 and f"made {kept} 0600" in again.stdout
    assert kept.stat().st_mode & 0o777 == 0o600
    assert not list((root / "etc/tlwatch").glob(".*"))  # no temporary file left


def test_a_folder_that_is_a_file_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"x")
    found = tlwatch(
        "service",
        "install",
        "--root",
        str(tmp_path / "root"),
        "--watch",
        str(tmp_path / "clip.mp4"),
    )
    assert found.returncode == 1 and "is not a folder: nothing was changed" in found.stderr
    assert not (tmp_path / "root").exists()


def test_a_command_with_a_space_is_quoted_for_systemd() -> None:
    from tlwatch.service import unit

    assert 'ExecStart="/opt/my venv/bin/tlwatch" run --config' in unit("/opt/my venv/bin/tlwatch")
    assert "ExecStart=/opt/tlwatch/bin/tlwatch run" in unit("/opt/tlwatch/bin/tlwatch")

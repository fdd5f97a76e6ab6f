"""The wheel works on its own: built from this checkout, installed into a fresh venv, it runs
`--version`, `check` against the sandbox, and a one-pass scan, with its page, units and example
config inside. Its dependencies come from this test run's own environment (a path file in the
fresh venv); the build fetches setuptools from the package registry, as `pip install` and
`make dist` do."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tlwatch.sandbox import DEMO_API_KEY

from conftest import FIXTURES, Sandbox, systemd_exposure

TOP = Path(__file__).parents[2]


def test_the_wheel_installs_into_a_fresh_venv_and_runs(
    tmp_path: Path, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTHONPATH", raising=False)  # (the fresh venv imports its own tlwatch)
    source = tmp_path / "source"  # (a copy: the build leaves nothing in the checkout)
    shutil.copytree(
        TOP,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "dist", "build", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path)],
        cwd=source,
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = tmp_path.glob("tlwatch-*.whl")
    inside = zipfile.ZipFile(wheel).namelist()
    for data in (
        "ui/index.html",
        "ui/ui.js",
        "units/tlwatch.service",
        "units/tlwatch.sysusers",
        "config.example.toml",
        "py.typed",
    ):
        assert f"tlwatch/{data}" in inside, data
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    purelib = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    (purelib / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index"]
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True)
    tlwatch = venv / "bin" / "tlwatch"
    found = subprocess.run([tlwatch, "--version"], capture_output=True, text=True, check=True)
    assert found.stdout.startswith("tlwatch ") and "libmagic: " in found.stdout
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import tlwatch; print(tlwatch.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(venv))  # this wheel's, not the checkout's
    (tmp_path / "w").mkdir()
    shutil.copy(FIXTURES / "clip.mp4", tmp_path / "w" / "clip.mp4")
    (tmp_path / "api_key").write_text(DEMO_API_KEY + "\n")
    config = tmp_path / "config.toml"
    config.write_text(
        f'[api]\nbase_url = "{sandbox.base_url}"\napi_key_file = "api_key"\n'
        '[state]\npath = "state/state.db"\n[[watch]]\npath = "w"\nsettle_seconds = 0\n'
    )
    checked = subprocess.run(
        [tlwatch, "check", "-c", config], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    subprocess.run([tlwatch, "scan", "-c", config], capture_output=True, check=True, timeout=120)
    listed = subprocess.run(
        [tlwatch, "list", "--json", "-c", config], capture_output=True, text=True, check=True
    )
    [row] = json.loads(listed.stdout)
    assert row["name"] == "clip.mp4" and row["asset_id"]
    # The service, from this installation: its unit runs this venv's tlwatch.
    root = tmp_path / "root"
    install = [tlwatch, "service", "install", "--root", root, "--watch", tmp_path / "w"]
    key = ["--key-file", tmp_path / "api_key"]
    subprocess.run([*install, *key], capture_output=True, check=True)
    unit_file = root / "etc/systemd/system/tlwatch.service"
    unit = unit_file.read_text()
    assert f"ExecStart={tlwatch} run --config /etc/tlwatch/config.toml" in unit
    assert (root / "usr/lib/sysusers.d/tlwatch.conf").read_text().count("u tlwatch ") == 1
    assert (root / "etc/tlwatch/api_key").stat().st_mode & 0o777 == 0o600
    service_env = {"CREDENTIALS_DIRECTORY": str(root / "etc/tlwatch"), "TWELVELABS_API_KEY": ""}
    written = root / "etc/tlwatch/config.toml"
    written.write_text(
        written.read_text().replace("https://api.twelvelabs.io/v1.3", sandbox.base_url)
    )
    checked = subprocess.run(
        [tlwatch, "check", "-c", written], capture_output=True, text=True, check=False,
        env={**os.environ, **service_env, "STATE_DIRECTORY": str(tmp_path / "state")},
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    if shutil.which("systemd-analyze"):
        assert systemd_exposure(unit_file) <= 1.2
    again = subprocess.run([*install, *key], capture_output=True, text=True, check=True)
    assert "wrote" not in again.stdout  # (run twice: nothing changes)
    subprocess.run(
        [tlwatch, "service", "uninstall", "--root", root], check=True, capture_output=True
    )
    assert not (root / "etc/systemd/system/tlwatch.service").exists()

"""`tlwatch --version` says what it runs with: libmagic, ffmpeg and the state folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tlwatch import __version__


def version(env: dict[str, str]) -> list[str]:
    found = subprocess.run(
        [sys.executable, "-m", "tlwatch", "--version"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return found.stdout.splitlines()


def test_the_version_names_libmagic_ffmpeg_and_the_state_folder(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "here" / "state.db"}"\n')
    first, *found = version({"TLWATCH_CONFIG": str(config)})
    assert first.startswith(f"tlwatch {__version__} (Python ")
    said = dict(line.strip().split(": ", 1) for line in found)
    assert said["libmagic"].split()[0].count(".") == 1 and "libmagic" in said["libmagic"]
    assert "ffmpeg" in said["ffmpeg"] and os.path.exists(said["ffmpeg"].split(" (")[0])
    assert said["state folder"] == f"{tmp_path / 'here'} (from {config})"
    missing = tmp_path / "missing.toml"
    said = dict(
        line.strip().split(": ", 1) for line in version({"TLWATCH_CONFIG": str(missing)})[1:]
    )
    assert said["state folder"].endswith(f"(the default: {missing} cannot be read)")

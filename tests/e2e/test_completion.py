"""Shell completion, generated from the parser: the scripts load in their shells and complete
commands, options and their values."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def completion(shell: str) -> str:
    found = subprocess.run(
        [sys.executable, "-m", "tlwatch", "completion", shell],
        capture_output=True,
        text=True,
        check=True,
    )
    return found.stdout


def test_bash_completion_loads_and_completes(tmp_path: Path) -> None:
    script = tmp_path / "tlwatch.bash"
    script.write_text(completion("bash"))
    (tmp_path / "clip.mp4").touch()
    (tmp_path / "My Videos").mkdir()
    probe = f"""
set -eu
source {script}
complete -p tlwatch
ask() {{
    COMP_WORDS=("$@"); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); _tlwatch; echo "${{COMPREPLY[*]}}"
}}
ask tlwatch sta
ask tlwatch list --state fa
ask tlwatch status --j
ask tlwatch completion f
ask tlwatch run --log-level i
ask tlwatch run ""
ask tlwatch nonsense ""
cd {tmp_path} && ask tlwatch upload cl
ask tlwatch scan -c cl
ask tlwatch upload My
ask tlwatch upload -
"""
    found = subprocess.run(
        ["bash", "--norc", "-c", probe], capture_output=True, text=True, check=False
    )
    assert found.returncode == 0 and found.stderr == "", found.stderr
    lines = found.stdout.splitlines()
    assert lines[0] == "complete -o filenames -F _tlwatch tlwatch"
    assert lines[1:] == [
        "status",
        "failed",
        "--json",
        "fish",
        "info",
        "-h --help -c --config --log-level --log-format",  # (after `run`: its options)
        "",
        "clip.mp4",
        "clip.mp4",
        "My Videos",  # (one word, not two)
        "-h --help -c --config --log-level --log-format --url --wait",
    ]


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_completion_load(shell: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed here (apt-get install -y {shell})")
    load = {"zsh": "autoload -U compinit && compinit -u; source /dev/stdin", "fish": "source"}
    found = subprocess.run(
        [shell, "-c", load[shell]],
        input=completion(shell),
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 0 and found.stderr == "", found.stderr


def test_the_scripts_name_every_command_of_the_parser() -> None:
    from tlwatch.cli import build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command").choices  # type: ignore[union-attr]
    for shell in ("bash", "fish"):
        script = completion(shell)
        assert all(name in script for name in commands), shell


def test_the_man_page_is_made_from_the_help_texts(tmp_path: Path) -> None:
    """What `make man` runs: every command and its help text are in the page, and it reads."""
    from tlwatch.cli import build_parser

    page = tmp_path / "tlwatch.1"
    tool = Path(sys.executable).parent / "argparse-manpage"
    if not tool.exists():
        pytest.skip("argparse-manpage is not installed (pip install -e '.[test]')")
    subprocess.run(
        [tool, "--module", "tlwatch.cli", "--function", "build_parser", "--prog", "tlwatch",
         "--project-name", "tlwatch", "--version", "0", "--output", str(page)],
        check=True, capture_output=True,
    )  # fmt: skip
    text = page.read_text()
    assert text.startswith(".TH TLWATCH")
    commands = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in commands.choices.items():  # type: ignore[union-attr]
        assert f"\\fI\\,{name}\\/\\fR" in text, name
        assert (parser.description or "").split(".")[0].replace("-", "\\-")[:30] in text
    if shutil.which("man"):
        shown = subprocess.run(
            ["man", "-l", str(page)], capture_output=True, text=True, check=True,
            env={"MANWIDTH": "100", "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        assert "tlwatch" in shown.stdout and shown.stderr == ""

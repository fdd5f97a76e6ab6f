"""Shell completion for bash, zsh and fish, generated from the command line's own parser (so it
never falls behind it): `tlwatch completion SHELL`. Pure: a parser in, a script out."""

from __future__ import annotations

import argparse
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

SHELLS = ("bash", "zsh", "fish")


@dataclass
class _Option:
    flags: list[str]
    help: str
    choices: list[str]  # its value is one of these (none: any)
    takes_value: bool  # a value follows the flag
    path: bool  # that value is a path


@dataclass
class _Command:
    name: str
    help: str
    options: list[_Option] = field(default_factory=list)
    paths: bool = False  # takes paths as arguments
    words: list[str] = field(default_factory=list)  # or one of these


def _is_path(action: argparse.Action) -> bool:
    return action.type in (Path, os.fsencode) or action.metavar in ("PATH", "FILE", "DIR")


def _options(parser: argparse.ArgumentParser) -> list[_Option]:
    return [
        _Option(
            list(action.option_strings),
            action.help or "",
            [str(c) for c in action.choices or ()],
            action.nargs != 0,
            _is_path(action),
        )
        for action in parser._actions
        if action.option_strings
    ]


def _commands(parser: argparse.ArgumentParser) -> list[_Command]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                positional = [a for a in sub._actions if not a.option_strings]
                words = [str(c) for a in positional for c in a.choices or ()]
                paths = any(_is_path(a) for a in positional)
                found.append(_Command(name, helps.get(name, ""), _options(sub), paths, words))
    return found


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of `parser` for `shell`."""
    if shell == "bash":
        return _bash(parser)
    if shell == "zsh":  # zsh runs bash's completion through its bashcompinit
        return "autoload -U +X bashcompinit && bashcompinit\n" + _bash(parser)
    if shell == "fish":
        return _fish(parser)
    raise ValueError(f"no completion for {shell}")


# ---- bash (and zsh) -----------------------------------------------------------------------------
def _bash(parser: argparse.ArgumentParser) -> str:
    prog = parser.prog
    commands = _commands(parser)
    top = [c.name for c in commands] + [f for o in _options(parser) for f in o.flags]
    values = sorted({_bash_value(o) for c in commands for o in c.options if o.takes_value})
    return "\n".join(
        [
            f"# {prog} completion for bash: source <({prog} completion bash)",
            f"_{prog}() {{",
            '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
            '    local command="" i',
            "    COMPREPLY=()",
            "    for ((i = 1; i < COMP_CWORD; i++)); do",
            '        case "${COMP_WORDS[i]}" in',
            "            -*) ;;",
            '            *) command="${COMP_WORDS[i]}"; break ;;',
            "        esac",
            "    done",
            '    case "$prev" in',
            *values,
            "    esac",
            '    case "$command" in',
            f'        "") {_words(top)} ;;',
            *(_bash_command(c) for c in commands),
            "    esac",
            "    return 0",
            "}",
            f"complete -o filenames -F _{prog} {prog}",
            "",
        ]
    )


def _words(words: list[str]) -> str:
    # (mapfile, not an assignment of $(...): no match is no failure under `set -e`)
    return f'mapfile -t COMPREPLY < <(compgen -W {shlex.quote(" ".join(words))} -- "$cur")'


_FILES = 'mapfile -t -O "${#COMPREPLY[@]}" COMPREPLY < <(compgen -f -- "$cur")'
# (mapfile: a file name with a space stays one word)


def _bash_command(command: _Command) -> str:
    words = [*command.words, *(f for o in command.options for f in o.flags)]
    files = f"; if [[ $cur != -* ]]; then {_FILES}; fi" if command.paths else ""
    return f"        {command.name}) {_words(words)}{files} ;;"


def _bash_value(option: _Option) -> str:
    """What follows an option that takes a value: one of its choices, a path, or nothing."""
    if option.choices:
        answer = _words(option.choices)
    elif option.path:
        answer = _FILES
    else:
        answer = "COMPREPLY=()"  # (a number, a name: nothing to offer)
    return f"        {'|'.join(option.flags)}) {answer}; return ;;"


# ---- fish -------------------------------------------------------------------------------------
def _fish(parser: argparse.ArgumentParser) -> str:
    prog = parser.prog
    commands = _commands(parser)
    names = " ".join(c.name for c in commands)
    lines = [
        f"# {prog} completion for fish: {prog} completion fish | source",
        f"complete -c {prog} -f",
    ]
    for command in commands:
        lines.append(
            f"complete -c {prog} -n '__fish_use_subcommand' -a {command.name} "
            f"-d {_fish_text(command.help)}"
        )
        when = f"-n '__fish_seen_subcommand_from {command.name}'"
        if command.paths:
            lines.append(f"complete -c {prog} {when} -F")
        if command.words:
            lines.append(f"complete -c {prog} {when} -a {_fish_text(' '.join(command.words))}")
        lines += [f"complete -c {prog} {when} {_fish_option(o)}" for o in command.options]
    not_yet = f"-n 'not __fish_seen_subcommand_from {names}'"
    lines += [f"complete -c {prog} {not_yet} {_fish_option(o)}" for o in _options(parser)]
    return "\n".join(lines) + "\n"


def _fish_option(option: _Option) -> str:
    flags = " ".join(f"-l {f[2:]}" if f.startswith("--") else f"-s {f[1:]}" for f in option.flags)
    if option.choices:
        flags += f" -x -a {_fish_text(' '.join(option.choices))}"
    elif option.path:
        flags += " -r -F"
    elif option.takes_value:
        flags += " -x"
    return f"{flags} -d {_fish_text(option.help)}"


def _fish_text(text: str) -> str:
    """A single-quoted fish word (inside quotes fish takes only \\' and \\\\ as escapes)."""
    first = text.split("\n", 1)[0]
    return "'" + first.replace("\\", "\\\\").replace("'", "\\'") + "'"

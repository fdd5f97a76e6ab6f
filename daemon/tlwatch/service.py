"""`tlwatch service install|uninstall`: from an installed tlwatch to a running, hardened systemd
service in one command, and back.

Each step says what it does. A file is written only when its content would change (a second
install changes nothing); a config or a key already there is never overwritten. With `root`
set (as `systemctl --root`), every file goes under that folder and no command is run: each is
printed instead (the tests check the result that way); `dry_run` writes nothing either.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import tomli_w

from tlwatch.config import DEFAULT_BASE_URL, load

USER = "tlwatch"
UNIT = Path("etc/systemd/system/tlwatch.service")
DROP_IN = Path("etc/systemd/system/tlwatch.service.d/folders.conf")
SYSUSERS = Path("usr/lib/sysusers.d/tlwatch.conf")
CONFIG = Path("etc/tlwatch/config.toml")
KEY = Path("etc/tlwatch/api_key")
STATE = Path("var/lib/tlwatch")


@dataclass
class Install:
    """What to install, and how (see the module's docstring)."""

    folders: list[Path]
    key: Callable[[], str] | None  # where the API key comes from (None: keep the one there)
    root: Path | None = None
    dry_run: bool = False
    base_url: str = DEFAULT_BASE_URL
    say: Callable[[str], None] = print
    done: list[str] = field(default_factory=list)  # the files written (for the tests)

    @property
    def acting(self) -> bool:
        """Commands are run: no `root`, not a dry run."""
        return self.root is None and not self.dry_run

    def path(self, relative: Path) -> Path:
        return (self.root or Path("/")) / relative

    config_file, key_file, unit_file = CONFIG, KEY, UNIT  # (under / or `root`)

    # ---- the steps ----------------------------------------------------------------------
    def run(self) -> None:
        self.check_folders(self.folders)
        if self.acting and shutil.which("setfacl") is None:
            raise OSError("setfacl is missing (apt-get install -y acl): nothing was changed")
        self.write(SYSUSERS, _unit_text("tlwatch.sysusers"))
        self.command(["systemd-sysusers", str(self.path(SYSUSERS))])
        self.write(self.unit_file, unit(_installed()))
        self.config()
        self.api_key()
        folders, writable = self.folders_of_config()
        self.check_folders(folders)
        self.drop_in(folders, writable)
        for folder in folders:
            access = "rwX" if folder in writable else "rX"
            acl = ["-m", f"u:{USER}:{access}", "-m", f"d:u:{USER}:{access}"]
            self.command(["setfacl", "-R", *acl, str(folder)])
            for parent in _homes_above(folder):  # (a 0700 home: the service may pass through)
                self.command(["setfacl", "-m", f"u:{USER}:x", str(parent)])
        self.command(["systemctl", "daemon-reload"])
        self.command(["systemctl", "enable", "--now", "tlwatch.service"])
        if self.done:  # (a unit or a drop-in changed: a running service takes it)
            self.command(["systemctl", "try-restart", "tlwatch.service"])
        self.command(
            ["systemd-run", "--wait", "--pipe", "--quiet", f"--uid={USER}",
             f"--property=LoadCredential=api_key:/{KEY}", "--property=StateDirectory=tlwatch",
             _installed(), "check", "--config", f"/{CONFIG}"]
        )  # fmt: skip

    def folders_of_config(self) -> tuple[list[Path], set[Path]]:
        """The folders the service watches (the config's, once there is one), and those it
        writes in (`after_upload = "move"` or `"delete"`, and where files are moved to)."""
        path = self.path(self.config_file)
        if not path.exists():  # (a dry run: the config it would write)
            return self.folders, set()
        watches = load(path).watch
        writable = {w.path for w in watches if w.after_upload in ("move", "delete")}
        writable |= {w.move_to for w in watches if w.move_to is not None}
        watched = [w.path for w in watches]
        return watched + sorted(writable - set(watched)), writable

    def check_folders(self, folders: Iterable[Path]) -> None:
        """Each folder is a folder (before anything is written); one the service cannot see
        is said."""
        for folder in folders:
            if folder.exists() and not folder.is_dir():
                raise OSError(f"{folder} is not a folder: nothing was changed")
            if not folder.exists() and self.root is None:
                raise OSError(f"{folder} does not exist: nothing was changed")
            if folder.parts[1:2] in (("tmp",), ("var",)) and folder.parts[1:3] != ("var", "lib"):
                self.say(f"note: the service does not see {folder} (PrivateTmp=yes)")

    def drop_in(self, folders: list[Path], writable: set[Path]) -> None:
        """ProtectSystem=strict keeps every folder read-only, and ProtectHome=yes hides /home
        and /root: folders the service writes in, folders under /home, and this installation
        (a pipx or pyenv one lives under a home) are opened again."""
        lines = [f"BindReadOnlyPaths={_quoted('-' + str(p))}" for p in _installation_homes()]
        for folder in folders:
            if _under_home(folder):
                bind = "BindPaths" if folder in writable else "BindReadOnlyPaths"
                lines.append(f"{bind}={_quoted('-' + str(folder))}")
            elif folder in writable:
                lines.append(f"ReadWritePaths={_quoted('-' + str(folder))}")
        if lines:
            head = "# Written by `tlwatch service install`.\n[Service]\n"
            self.write(DROP_IN, head + "\n".join(lines) + "\n")
        elif self.path(DROP_IN).exists():
            self.say(f"kept {self.path(DROP_IN)} (no folder needs it now; remove it by hand)")

    def config(self, **api: str) -> None:
        path = self.path(self.config_file)
        if path.exists():
            self.say(f"kept {path} (never overwritten)")
            return
        starter = {
            "api": {"base_url": self.base_url, **api},
            "watch": [{"path": str(f), "settle_seconds": 5.0} for f in self.folders],
        }
        head = "# Written by `tlwatch service install`; every key is in config.example.toml.\n"
        self.write(self.config_file, head + tomli_w.dumps(starter), mode=0o644)

    def api_key(self) -> None:
        path = self.path(self.key_file)
        if self.key is None:
            if not path.exists():
                raise OSError(f"{path}: no API key yet (give --key-file PATH, or - for stdin)")
            self.say(f"kept {path}")
            self.private(path)
            return
        key = self.key().strip()
        if not key:
            raise OSError("the API key given is empty")
        if path.exists() and path.read_text().strip() == key:
            self.say(f"unchanged {path}")
            self.private(path)
            return
        self.write(self.key_file, key + "\n", mode=0o600, shown=False)

    def private(self, path: Path) -> None:
        """The key is the root's (or the user's) alone, whatever it was made with."""
        if (path.stat().st_mode & 0o777) != 0o600 and not self.dry_run:
            os.chmod(path, 0o600)
            self.say(f"made {path} 0600")

    # ---- doing, or saying -------------------------------------------------------------------
    def write(self, relative: Path, text: str, *, mode: int = 0o644, shown: bool = True) -> None:
        path = self.path(relative)
        if path.exists() and path.read_text() == text and (path.stat().st_mode & 0o777) == mode:
            self.say(f"unchanged {path}")
            return
        if self.dry_run:
            self.say(f"would write {path}" + ("" if shown else " (the key, mode 0600)"))
            return
        _folder(path.parent)
        descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:  # (a new file of a random name: no link there is followed)
            os.fchmod(descriptor, mode)
            with os.fdopen(descriptor, "w") as file:
                file.write(text)
            os.replace(name, path)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        self.done.append(str(path))
        self.say(f"wrote {path}" + (f" (mode {mode:04o})" if mode != 0o644 else ""))

    def command(self, argv: list[str], *, failing: bool = False) -> None:
        """Run (or say) a command; `failing`: its failure is said, not raised."""
        shown = shlex.join(argv)
        if not self.acting:
            self.say(f"would run: {shown}")
            return
        self.say(f"running: {shown}")
        found = subprocess.run(argv, capture_output=True, text=True, check=False)
        for line in (found.stdout + found.stderr).splitlines():
            self.say(f"  {line}")
        if found.returncode != 0 and not failing:
            raise OSError(f"{argv[0]} failed (exit {found.returncode})")


class UserInstall(Install):
    """`--user`: the desktop unit, for the user who runs it. No system user and no ACL (the
    folders are the user's own); the key beside the user's config, 0600."""

    home = Path.home().relative_to("/")
    config_file = home / ".config/tlwatch/config.toml"
    key_file = home / ".config/tlwatch/api_key"
    unit_file = home / ".config/systemd/user/tlwatch.service"

    def run(self) -> None:
        self.check_folders(self.folders)
        text = _unit_text("tlwatch-user.service")
        self.write(self.unit_file, text.replace("%h/.local/bin/tlwatch", _exec(_installed())))
        self.config(api_key_file="api_key")
        self.api_key()
        self.command(["systemctl", "--user", "daemon-reload"])
        self.command(["systemctl", "--user", "enable", "--now", "tlwatch.service"])
        self.command([_installed(), "check", "--config", f"/{self.config_file}"])


def uninstall(
    root: Path | None, purge: bool, say: Callable[[str], None] = print, *, user: bool = False
) -> None:
    """Stop and remove the service; the config, the key and the store stay unless `purge`."""
    steps = (UserInstall if user else Install)([], None, root=root, say=say)
    mode = ["--user"] if user else []
    steps.command(["systemctl", *mode, "disable", "--now", "tlwatch.service"], failing=True)
    if not user and steps.path(steps.config_file).exists():  # the access it granted goes too
        for folder in steps.folders_of_config()[0]:
            acl = ["-x", f"u:{USER}", "-x", f"d:u:{USER}"]
            steps.command(["setfacl", "-R", *acl, str(folder)], failing=True)
    gone: list[Path] = [steps.unit_file] + ([] if user else [DROP_IN, SYSUSERS])
    if purge:
        gone += [steps.config_file, steps.key_file]
    for relative in gone:
        path = steps.path(relative)
        if path.exists():
            path.unlink()
            say(f"removed {path}")
    with_drop_ins = steps.path(DROP_IN).parent
    if with_drop_ins.is_dir() and not any(with_drop_ins.iterdir()):
        with_drop_ins.rmdir()
    if purge and not user and steps.path(STATE).exists():
        shutil.rmtree(steps.path(STATE))
        say(f"removed {steps.path(STATE)} (the store)")
    steps.command(["systemctl", *mode, "daemon-reload"], failing=True)


def unit(tlwatch: str) -> str:
    """The system unit, its ExecStart pointed at this installation's command."""
    return _unit_text("tlwatch.service").replace("/opt/tlwatch/bin/tlwatch", _exec(tlwatch))


def _exec(command: str) -> str:
    """A command for ExecStart=, quoted as systemd reads it (a space in a venv's path)."""
    if all(c.isalnum() or c in "/._-+" for c in command):
        return command
    return '"' + command.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def _quoted(value: str) -> str:
    """A path setting's value, quoted as systemd reads it (a space would split it)."""
    return _exec(value) if " " in value or '"' in value else value.replace("%", "%%")


def _folder(path: Path) -> None:
    """Make the folder (and those above it) 0755 whatever the umask: the service's user
    reads the config there."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o755)
        os.chmod(folder, 0o755)  # noqa: S103  (a config folder: readable, not writable)


def _installation_homes() -> list[Path]:
    """This installation's folders that ProtectHome= hides (a venv, pipx's, pyenv's Python)."""
    found = []
    for place in (Path(sys.prefix), Path(sys.executable).resolve().parent.parent):
        if place.parts[1:2] in (("home",), ("root",)) and place not in found:
            found.append(place)
    return found


def _unit_text(name: str) -> str:
    return resources.files("tlwatch").joinpath("units", name).read_text()


def _installed() -> str:
    """This installation's `tlwatch` command (beside the Python that runs it)."""
    beside = Path(sys.executable).parent / "tlwatch"
    return str(beside) if beside.exists() else shutil.which("tlwatch") or str(beside)


def _under_home(folder: Path) -> bool:
    return folder.is_absolute() and folder.parts[1:2] == ("home",)


def _homes_above(folder: Path) -> Iterable[Path]:
    """The folders under /home above `folder` (each needs `x` for the service to pass)."""
    if not _under_home(folder):
        return []
    return [Path(*folder.parts[:n]) for n in range(3, len(folder.parts))]

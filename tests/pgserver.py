"""A real PostgreSQL server for the tests: Debian's binaries, `initdb` into a temporary folder and
`pg_ctl` on a free port of 127.0.0.1, as an unprivileged user (`nobody` when the tests run as
root: PostgreSQL refuses to run as root). Each test gets a database of its own."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

USER = "tlwatch"
NOBODY = 65534


def binaries() -> Path | None:
    """The folder of `initdb` and `pg_ctl`: on PATH, else Debian's newest."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version)
    return Path(versions[-1]).parent if versions else None


def _version(path: str) -> int:
    number = path.split("/")[4]
    return int(number) if number.isdigit() else 0


def missing() -> str | None:
    """Why no server can be started here, or None."""
    if binaries() is None:
        return (
            "PostgreSQL is not installed (apt-get install -y postgresql; make test does it as root)"
        )
    return None


def _as_user() -> list[str]:
    """Run as `nobody` when we are root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    """One running server; `database()` makes an empty database and gives its URL."""

    folder: Path
    port: int
    bin: Path
    fsync: bool = False  # a test server: speed over durability (a benchmark's is durable)
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def start(cls, *, fsync: bool = False) -> Server:
        bin_dir = binaries()
        assert bin_dir is not None, missing()
        folder = Path(tempfile.mkdtemp(prefix="tlwatch-pg-", dir="/tmp"))
        if os.geteuid() == 0:
            os.chown(folder, NOBODY, NOBODY)
        server = cls(folder, free_port(), bin_dir, fsync=fsync)
        subprocess.run(
            [*_as_user(), str(bin_dir / "initdb"), "-D", str(folder / "data"), "-U", USER,
             "--auth=trust", "--no-locale", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True,
        )  # fmt: skip
        server._ctl("start", "-w", "-t", "60", "-o", server._options())
        return server

    def _options(self) -> str:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.folder),
            "fsync": "on" if self.fsync else "off",
            "full_page_writes": "on" if self.fsync else "off",
            "max_connections": "300",
            "shared_buffers": "32MB",
        }
        return " ".join(f"-c {name}={value}" for name, value in settings.items())

    def _ctl(self, *args: str) -> None:
        log = str(self.folder / "server.log")
        subprocess.run(
            [*_as_user(), str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-l", log,
             *args],
            check=True, capture_output=True,
        )  # fmt: skip

    @property
    def admin_url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"

    def database(self) -> str:
        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.admin_url, autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]  # (our own name)
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{name}"

    def drop(self, url: str) -> None:
        """Drop a database `database()` made (its connections cut)."""
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.admin_url, autocommit=True) as db:
            db.execute(f"DROP DATABASE {name} WITH (FORCE)")  # type: ignore[arg-type]  # (our own name)

    def restart(self) -> None:
        """Stop it (every connection cut) and start it again on the same port."""
        self._ctl("restart", "-w", "-m", "fast", "-t", "60", "-o", self._options())

    def stop(self) -> None:
        self._ctl("stop", "-w", "-m", "immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

"""The dependency rules of the design, checked on the source with `ast`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "daemon" / "tlwatch"

# A third-party import lives in its one adapter.
OWNERS = {
    "httpx": "api.py",
    "watchdog": "watcher.py",
    "magic": "sniff.py",
    "sqlite3": "sqlite.py",  # the store's two databases, in the state/ package
    "psycopg": "postgres.py",
    "prometheus_client": "metrics.py",
    "apprise": "notify.py",
    "pymediainfo": "probe.py",
    "cheroot": "web.py",
}


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_each_third_party_library_is_imported_by_one_module_only() -> None:
    for path in PACKAGE.rglob("*.py"):
        for name in imports_of(path):
            top = name.split(".")[0]
            if top in OWNERS and "sandbox" not in path.parts:
                assert path.name == OWNERS[top], f"{path.name} imports {top}"


def test_the_sandbox_imports_nothing_from_the_daemon() -> None:
    for path in (PACKAGE / "sandbox").rglob("*.py"):
        for name in imports_of(path):
            if name.startswith("tlwatch"):
                assert name.startswith("tlwatch.sandbox"), f"{path.name} imports {name}"


STDLIB = {"__future__", "email", "random", "time", "collections", "dataclasses"}


def test_leaf_modules_import_only_the_standard_library() -> None:
    for leaf in ("errors.py", "retry.py"):
        for name in imports_of(PACKAGE / leaf):
            assert name.split(".")[0] in STDLIB, f"{leaf} imports {name}"
    for name in imports_of(PACKAGE / "control.py"):  # the run state: shared by every layer
        allowed = {*STDLIB, "logging", "queue", "threading"}
        assert name.split(".")[0] in allowed or name in {"tlwatch.errors", "tlwatch.events"}, name


def sources(module: str) -> list[Path]:
    """A module's source files: `name.py`, or every file of the package `name/`."""
    folder = PACKAGE / module
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [PACKAGE / f"{module}.py"]


def test_the_adapters_never_import_each_other() -> None:
    adapters = {"sniff", "settle", "watcher", "state", "api"}
    for adapter in adapters:
        for path in sources(adapter):
            for name in imports_of(path):
                other = name.removeprefix("tlwatch.").split(".")[0]
                assert other == adapter or other not in adapters, f"{path.name} imports {name}"


SQL = re.compile(r"\b(SELECT .* FROM|INSERT (OR \w+ )?INTO|UPDATE \w+ SET|DELETE FROM)\b")


def test_sql_lives_in_the_store_and_nowhere_else() -> None:
    found = []
    for path in PACKAGE.rglob("*.py"):
        if {"state", "sandbox"} & set(path.relative_to(PACKAGE).parts):
            continue
        found += [
            f"{path.name}: {line.strip()}"
            for line in path.read_text().splitlines()
            if SQL.search(line)
        ]
    assert found == []
    assert any(
        SQL.search(line) for line in (PACKAGE / "state" / "files.py").read_text().splitlines()
    )


def test_workers_never_import_the_runner_or_the_command_line() -> None:
    for worker in ("intake", "uploader", "poller", "folders", "keycheck", "health", "ticks"):
        for name in imports_of(PACKAGE / f"{worker}.py"):
            assert name not in {"tlwatch.runner", "tlwatch.cli"}, f"{worker}.py imports {name}"


def test_the_limits_and_their_verdict_are_pure() -> None:
    for name in imports_of(PACKAGE / "fit.py"):
        assert name in {
            "__future__",
            "dataclasses",
            "enum",
            "math",
            "collections.abc",
            "typing",
        } | {"tlwatch.models"}, f"fit.py imports {name}"

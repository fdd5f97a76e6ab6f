"""This host's id in a fleet: made once, at random, into its state folder (`host.id`), beside the
machine's own id (`/etc/machine-id`). A state folder copied to another machine is noticed (the
machine id differs) and gets an id of its own: two hosts never share one."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

MACHINE_ID = Path("/etc/machine-id")


def of(folder: Path, *, create: bool = True, machine_id: Path = MACHINE_ID) -> str:
    """The id of the host whose state folder this is; made now when there is none (or it came
    from another machine), unless `create` is False ("" then: a reader owns nothing)."""
    path = folder / "host.id"
    machine = _read(machine_id)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
        found = json.loads(path.read_text())
        if not machine or found.get("machine") in (machine, None):
            return str(found["id"])
        if create:
            log.warning("%s: made on another machine; this host takes an id of its own", path)
    if not create:
        return ""
    made = uuid.uuid4().hex[:12]
    temporary = path.with_name(f".host.id.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(json.dumps({"id": made, "machine": machine or None}) + "\n")
    temporary.replace(path)
    return made


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""

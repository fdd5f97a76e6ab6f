"""A local, contract-faithful emulator of the Twelve Labs assets API (`tlwatch sandbox`).

It stands in for the remote service, so it imports nothing from the daemon. Its parts are
imported when first used: the command line names its demo key without starting a web server.
"""

from __future__ import annotations

import importlib
from typing import Any

DEMO_API_KEY = "tlk_sandbox_demo_key_not_secret"  # the one key it accepts unless told another

_WHERE = {
    "Fault": "service",
    "Settings": "service",
    "SandboxServer": "server",
    "make_server": "server",
    "serve_until_signalled": "server",
}

__all__ = [
    "DEMO_API_KEY",
    "Fault",
    "SandboxServer",
    "Settings",
    "make_server",
    "serve_until_signalled",
]


def __getattr__(name: str) -> Any:
    """Import the part that holds `name` when it is first asked for (PEP 562)."""
    if name in _WHERE:
        return getattr(importlib.import_module(f"tlwatch.sandbox.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'tlwatch.sandbox' has no attribute {name!r}")

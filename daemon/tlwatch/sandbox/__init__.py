"""A local, contract-faithful emulator of the Twelve Labs assets API (`tlwatch sandbox`).

It stands in for the remote service, so it imports nothing from the daemon.
"""

from tlwatch.sandbox.server import SandboxServer, make_server, serve_until_signalled
from tlwatch.sandbox.service import DEMO_API_KEY, Fault, Settings

__all__ = [
    "DEMO_API_KEY",
    "Fault",
    "SandboxServer",
    "Settings",
    "make_server",
    "serve_until_signalled",
]

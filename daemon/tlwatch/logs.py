"""Logging: text or JSON lines on stderr, journald-aware, with secrets redacted.

Under systemd (`$JOURNAL_STREAM` set) lines carry a `<N>` syslog priority prefix and no timestamp:
journald adds its own, and `journalctl -p warning` then shows exactly the problems.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from typing import TextIO

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}
_QUERY = re.compile(r"(https?://[^\s?\"'<>]+)\?[^\s\"'<>]*")
_secrets: set[str] = set()
_lock = threading.Lock()


def add_secret(secret: str) -> None:
    """Never let `secret` reach a log line again (API keys)."""
    if len(secret) >= 4:
        with _lock:
            _secrets.add(secret)


def redact_url(text: str) -> str:
    """Given text, return it with every URL's query string (a presigned signature) cut."""
    return _QUERY.sub(r"\1?…", text)


def redact(text: str) -> str:
    """Given text, return it with every known secret and every URL query string cut out."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, "<redacted>")
    return redact_url(text)


class _Redacting(logging.Formatter):
    def __init__(self, journal: bool, json_lines: bool) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self.journal, self.json_lines = journal, json_lines

    def format(self, record: logging.LogRecord) -> str:
        message = redact(record.getMessage())
        if record.exc_info:
            message += "\n" + redact(self.formatException(record.exc_info))
        if self.json_lines:
            return json.dumps(
                {
                    "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
                    "level": record.levelname.lower(),
                    "logger": record.name,
                    "message": message,
                },
                ensure_ascii=False,
            )
        if self.journal:
            priority = _PRIORITY.get(record.levelno, 3 if record.levelno > 40 else 6)
            # one entry per line: a continuation line must keep the priority too
            return "\n".join(f"<{priority}>{record.name}: {line}" for line in message.split("\n"))
        return f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {message}"


def _is_journal(stream: TextIO) -> bool:
    """True when `stream` is the journal's socket ($JOURNAL_STREAM names its device:inode)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{info.st_dev}:{info.st_ino}"


def setup(level: str = "info", format: str = "text", *, stream: TextIO | None = None) -> None:
    """Send every tlwatch log line to stderr as configured; quiet the HTTP libraries."""
    journal = _is_journal(stream or sys.stderr) and format == "text"
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Redacting(journal, format == "json"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "watchdog"):  # httpx logs whole (presigned) URLs at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)

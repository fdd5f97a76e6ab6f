"""A streaming multipart/form-data parser: text fields in memory, file parts to a sink.

Memory stays flat whatever the file size: the body is read in 1 MiB pieces and only a delimiter's
length is carried over between them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

PIECE = 1 << 20
MAX_HEADERS = 16 * 1024
MAX_FIELD = 1 << 20


class MalformedForm(ValueError):
    """The body is not the multipart/form-data it claims to be."""


class Sink(Protocol):
    def write(self, data: bytes | memoryview, /) -> object: ...


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # field name -> client's file name
    unknown: list[str] = field(default_factory=list)


_PARAM = re.compile(r';\s*([\w*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def disposition_params(value: str) -> dict[str, str]:
    """Given a Content-Disposition value, return its parameters, unquoted."""
    params: dict[str, str] = {}
    for name, raw in _PARAM.findall(value):
        text = raw.strip()
        if text.startswith('"'):
            text = re.sub(r"\\(.)", r"\1", text[1:-1])
        params[name.lower()] = text
    return params


def boundary_of(content_type: str) -> bytes:
    """Given a Content-Type header, return the multipart boundary or raise MalformedForm."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise MalformedForm("expected multipart/form-data")
    boundary = disposition_params(content_type).get("boundary")
    if not boundary:
        raise MalformedForm("multipart/form-data without a boundary")
    return boundary.encode("latin-1")


class _Buffer:
    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self.data = b"\r\n"  # lets the first delimiter look like every other one

    def fill(self) -> None:
        more = self._read(PIECE)
        if not more:
            raise MalformedForm("body ended inside the form")
        self.data = self.data + more if self.data else more

    def take(self, count: int) -> bytes:
        while len(self.data) < count:
            self.fill()
        head, self.data = self.data[:count], self.data[count:]
        return head

    def until(self, delimiter: bytes) -> Iterator[bytes | memoryview]:
        """Yield the bytes before `delimiter` (views, not copies), then consume it."""
        keep = len(delimiter) - 1
        while True:
            found = self.data.find(delimiter)
            if found >= 0:
                yield memoryview(self.data)[:found]
                self.data = self.data[found + len(delimiter) :]
                return
            if len(self.data) > keep:
                yield memoryview(self.data)[:-keep]
                self.data = self.data[-keep:]
            self.fill()


def parse(
    read: Callable[[int], bytes],
    boundary: bytes,
    open_sink: Callable[[str, str, str], Sink],
    *,
    known: frozenset[str] | None = None,
) -> Form:
    """Parse a form from `read`; each file part goes to `open_sink(name, filename, type)`."""
    buffer = _Buffer(read)
    delimiter = b"\r\n--" + boundary
    for _ in buffer.until(delimiter):  # the preamble
        pass
    form = Form()
    while buffer.take(2) == b"\r\n":
        headers = _part_headers(buffer)
        params = disposition_params(headers.get("content-disposition", ""))
        name = params.get("name")
        if name is None:
            raise MalformedForm("a part has no name")
        if known is not None and name not in known:
            form.unknown.append(name)
        if "filename" in params or "filename*" in params:
            filename = params.get("filename", "")
            sink = open_sink(name, filename, headers.get("content-type", ""))
            for piece in buffer.until(delimiter):
                sink.write(piece)
            form.files[name] = filename
        else:
            form.fields[name] = _field_value(buffer, delimiter)
    return form


def _part_headers(buffer: _Buffer) -> dict[str, str]:
    pieces: list[bytes | memoryview] = []
    for piece in buffer.until(b"\r\n\r\n"):
        pieces.append(piece)
        if sum(map(len, pieces)) > MAX_HEADERS:
            raise MalformedForm("part headers too long")
    raw = b"".join(pieces)
    headers: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


def _field_value(buffer: _Buffer, delimiter: bytes) -> str:
    pieces: list[bytes | memoryview] = []
    size = 0
    for piece in buffer.until(delimiter):
        size += len(piece)
        if size > MAX_FIELD:
            raise MalformedForm("a text field is too long")
        pieces.append(piece)
    return b"".join(pieces).decode("utf-8", "replace")

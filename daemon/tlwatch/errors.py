"""Every exception tlwatch raises on purpose, and what the caller should do about it.

    TlwatchError
    ├── ConfigError            the configuration is unusable; exit 78, fix the file
    ├── StoreError             the state store cannot be used
    │   ├── StoreLocked        another tlwatch holds the store; exit 75
    │   ├── LeaseLost          another host of the fleet took over this file: leave it
    │   └── StoreUnavailable   a read or write failed (disk full, I/O error, read-only, locked):
    │                          hold all work and try again; nothing is lost
    ├── SourceChanged          the file changed while it was being sent; send it again later
    ├── Cancelled              shutting down: the request was abandoned before it completed
    └── ApiError               the Twelve Labs API said no, or could not be reached
        ├── AuthError          401: key bad or expired; pause *every* upload until it changes
        ├── FeatureNotEnabled  403: e.g. multipart uploads are not enabled for this account
        ├── NotFound           404: no such asset or upload session
        ├── Conflict           409: e.g. the asset is still used by an index
        ├── RequestRejected    other 4xx: permanent for this request; `.code` says why
        └── TransientError     worth trying again later; `.retry_after` is the server's wish
            ├── RateLimited    429
            ├── ServerError    5xx, 408
            ├── TransportError could not connect / timed out before anything could be stored
            └── OutcomeUnknown sent, but the answer was lost: it may have been stored

Messages never contain the API key or a presigned URL's query string.
"""

from __future__ import annotations


class TlwatchError(Exception):
    """Base of every deliberate tlwatch error."""


class ConfigError(TlwatchError):
    """The configuration cannot be used; `problems` lists each one with its key path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class StoreError(TlwatchError):
    """The state store cannot be opened or used."""


class StoreLocked(StoreError):
    """Another tlwatch process holds the store's lock."""


class LeaseLost(StoreError):
    """This host's claim on a file ran out (it was silent past its lease) and another host took
    the file over: nothing more is written for it here."""

    def __init__(
        self, said: str = "another host took it over (this host was silent), or it moved on"
    ) -> None:
        super().__init__(said)


class RecordedMeanwhile(StoreError):
    """A file's path is recorded already: most likely a file a batch took for new (no row
    when it read) was recorded by another host before the batch committed. Nothing of the
    transaction is kept; the intake records its batch again."""

    def __init__(self) -> None:
        super().__init__("a file's path is recorded already (by another host, meanwhile?)")


class StoreUnavailable(StoreError):
    """The store could not be read or written just now; `reason` says why, plainly."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"state store: {reason}")


class SourceChanged(TlwatchError):
    """The file being uploaded changed size while it was read; it is not complete yet."""


class Cancelled(TlwatchError):
    """Shutdown asked an in-flight upload to stop; nothing was stored by it."""


class ApiError(TlwatchError):
    """The API answered with an error, or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.retry_after = retry_after
        super().__init__(message)


class AuthError(ApiError):
    """401: the API key is missing, wrong or expired."""


class FeatureNotEnabled(ApiError):
    """403: the account may not use this feature."""


class NotFound(ApiError):
    """404: the asset or upload session does not exist."""


class Conflict(ApiError):
    """409: the request conflicts with the resource's state."""


class RequestRejected(ApiError):
    """A 4xx that will not change on retry: this request, as it is, is refused."""


class TransientError(ApiError):
    """A failure that may go away: try again later (after `retry_after` if set)."""


class RateLimited(TransientError):
    """429: too many requests."""


class ServerError(TransientError):
    """5xx or 408: the server failed to answer this time."""


class TransportError(TransientError):
    """No usable answer, and the request cannot have been acted on."""


class OutcomeUnknown(TransientError):
    """The request went out but its answer was lost: it may or may not have taken effect."""

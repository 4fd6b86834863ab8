"""One exception tree for all of meshwork.

Every error meshwork raises on purpose is a ``MeshworkError``. Boundaries turn
lower-layer exceptions into the most specific class here with ``raise X from
exc``; only the top-level loops of shells catch ``Exception``.

    MeshworkError
    ├── ProtocolError                 the peer or we broke HTTP framing
    │   ├── LocalProtocolError        we misused the API (raised internally)
    │   └── RemoteProtocolError       the peer sent something we must refuse
    ├── ManifestError                 a file of manifests could not be read
    ├── ApiError                      has ``status`` and ``reason`` (Kubernetes Status)
    │   ├── BadRequest           400
    │   ├── Unauthenticated      401
    │   ├── Forbidden            403
    │   ├── NotFound             404
    │   ├── MethodNotAllowed     405
    │   ├── Conflict             409  (reason Conflict: stale resourceVersion)
    │   │   └── AlreadyExists    409  (reason AlreadyExists)
    │   ├── Gone                 410  (watch from a compacted revision)
    │   ├── TooLarge             413
    │   ├── UnsupportedMediaType 415
    │   ├── ValidationError      422  (carries field causes)
    │   ├── InsufficientStorage  507  (store full: reads and deletes still work)
    │   └── Unavailable          503
    ├── StoreError
    │   ├── StoreFull
    │   └── StoreCorrupt
    └── TerminalError                 a controller must not retry this
"""

from __future__ import annotations

from dataclasses import dataclass


class MeshworkError(Exception):
    """Root of every error meshwork raises on purpose."""


class ProtocolError(MeshworkError):
    """HTTP framing broken. Abstract: raise a Local or Remote subclass.

    ``status_hint`` is the status a server should answer with before closing.
    """

    def __init__(self, msg: str, *, status_hint: int = 400) -> None:
        if type(self) is ProtocolError:
            raise TypeError("ProtocolError is abstract; use LocalProtocolError or RemoteProtocolError")
        super().__init__(msg)
        self.status_hint = status_hint


class LocalProtocolError(ProtocolError):
    """We tried to do something HTTP forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something we refuse: answer ``status_hint`` and close."""


@dataclass(frozen=True, slots=True)
class FieldCause:
    """One reason a manifest or object is invalid, in Kubernetes' StatusCause shape."""

    field: str
    message: str
    reason: str = "FieldValueInvalid"
    file: str | None = None
    line: int | None = None

    def render(self) -> str:
        """``file:line: field: message``, leaving out what is not known."""
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"


class ManifestError(MeshworkError):
    """A manifest file could not be read, parsed or validated."""

    def __init__(self, causes: list[FieldCause]) -> None:
        self.causes = causes
        super().__init__("\n".join(c.render() for c in causes))


class ApiError(MeshworkError):
    """An error with an HTTP status, rendered as a Kubernetes ``Status`` object."""

    status: int = 500
    reason: str = "InternalError"

    def __init__(
        self,
        message: str,
        *,
        causes: list[FieldCause] | None = None,
        kind: str | None = None,
        name: str | None = None,
        group: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.causes = causes or []
        self.kind = kind
        self.name = name
        self.group = group
        self.retry_after = retry_after


class BadRequest(ApiError):
    status, reason = 400, "BadRequest"


class Unauthenticated(ApiError):
    status, reason = 401, "Unauthorized"


class Forbidden(ApiError):
    status, reason = 403, "Forbidden"


class NotFound(ApiError):
    status, reason = 404, "NotFound"


class MethodNotAllowed(ApiError):
    status, reason = 405, "MethodNotAllowed"


class Conflict(ApiError):
    status, reason = 409, "Conflict"


class AlreadyExists(Conflict):
    reason = "AlreadyExists"


class Gone(ApiError):
    status, reason = 410, "Expired"


class TooLarge(ApiError):
    status, reason = 413, "RequestEntityTooLarge"


class UnsupportedMediaType(ApiError):
    status, reason = 415, "UnsupportedMediaType"


class ValidationError(ApiError):
    status, reason = 422, "Invalid"


class InsufficientStorage(ApiError):
    status, reason = 507, "InsufficientStorage"


class Unavailable(ApiError):
    status, reason = 503, "ServiceUnavailable"


class StoreError(MeshworkError):
    """The store failed in a way that is not a client's fault."""


class StoreFull(StoreError):
    """No space left for writes; reads and deletes still work."""


class StoreCorrupt(StoreError):
    """The store's files failed an integrity check."""


class TerminalError(MeshworkError):
    """A controller hit an error that retrying cannot fix."""

"""A small synchronous client for meshwork's Kubernetes-shaped HTTP API.

What lives here: building resource paths from a ``KindInfo``, one HTTP request
per call over ``http.client`` (no third-party dependency), turning Kubernetes
``Status`` error bodies into ``meshwork.errors`` exceptions, and decoding the
newline-delimited JSON of a ``?watch=1`` stream.

What must not live here: printing, click, or any knowledge of particular kinds
beyond their ``KindInfo``. Objects go in and come out as plain wire dicts; the
typed model is the caller's business.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlsplit

from meshwork import errors
from meshwork.errors import ApiError, FieldCause
from meshwork.model.kinds import KindInfo, split_api_version

# Requests that are not watches give up after this long; a healthy local server
# answers in milliseconds, and a list of thousands of objects in well under this.
DEFAULT_TIMEOUT = 30.0
# One watch event is one object plus a few bytes of framing. The store caps a
# request body at ~1.5 MiB (etcd's default), so 4 MiB leaves room for the frame
# and still refuses a runaway line from a broken server.
WATCH_LINE_MAX = 4 * 1024 * 1024
# A non-JSON error body is quoted in the exception only up to this length.
ERROR_BODY_QUOTE_MAX = 300

ENV_SERVER = "MESHWORK_SERVER"
ENV_TOKEN = "MESHWORK_TOKEN"

PatchType = Literal["merge", "json", "strategic"]
_PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}

_ERRORS_BY_STATUS: dict[int, type[ApiError]] = {
    400: errors.BadRequest,
    401: errors.Unauthenticated,
    403: errors.Forbidden,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    409: errors.Conflict,
    410: errors.Gone,
    413: errors.TooLarge,
    415: errors.UnsupportedMediaType,
    422: errors.ValidationError,
    431: errors.TooLarge,
    503: errors.Unavailable,
    507: errors.InsufficientStorage,
}


class ServerUnreachable(errors.Unavailable):
    """No HTTP answer at all: refused, reset, timed out, or a name that does not resolve."""

    def __init__(self, server: str, cause: BaseException) -> None:
        super().__init__(f"cannot reach the meshwork server at {server}: {cause}")
        self.server = server
        self.cause = cause


def resource_path(
    info: KindInfo,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
    *,
    version: str | None = None,
) -> str:
    """The URL path of a collection or an object, as the Kubernetes API lays them out.

    ``namespace`` is ignored for cluster-scoped kinds; for a namespaced kind,
    ``None`` addresses every namespace (a list or watch only).
    ``version`` defaults to the kind's preferred version.
    """
    version = version or info.preferred_version
    parts = ["api", version] if not info.group else ["apis", info.group, version]
    if info.namespaced and namespace:
        parts += ["namespaces", namespace]
    elif info.namespaced and name:
        raise ValueError(f"{info.kind} is namespaced: a namespace is needed to address {name!r}")
    parts.append(info.plural)
    if name is not None:
        parts.append(name)
        if subresource:
            parts.append(subresource)
    elif subresource:
        raise ValueError("a subresource needs an object name")
    return "/" + "/".join(quote(p, safe="") for p in parts)


def version_for(info: KindInfo, obj: Mapping[str, Any]) -> str:
    """The API version to address ``obj`` at: its own ``apiVersion`` if served, else the preferred."""
    api_version = obj.get("apiVersion")
    if isinstance(api_version, str):
        group, version = split_api_version(api_version)
        if group == info.group and version in info.versions:
            return version
    return info.preferred_version


def error_from_status(code: int, body: bytes) -> ApiError:
    """The ``meshwork.errors`` exception for an error response.

    A Kubernetes ``Status`` body gives the message, reason, details and causes;
    anything else is quoted (shortened) as the message.
    """
    status: dict[str, Any] | None = None
    try:
        decoded = json.loads(body) if body else None
        if isinstance(decoded, dict) and decoded.get("kind") == "Status":
            status = decoded
    except (ValueError, UnicodeDecodeError):
        status = None
    if status is None:
        text = body.decode("utf-8", "replace").strip()
        if len(text) > ERROR_BODY_QUOTE_MAX:
            text = text[:ERROR_BODY_QUOTE_MAX] + "..."
        cls = _ERRORS_BY_STATUS.get(code, ApiError)
        err = cls(text or f"the server answered HTTP {code}")
        if cls is ApiError:
            err.status = code
        return err

    code = _int(status.get("code"), code)
    reason = str(status.get("reason") or "")
    message = str(status.get("message") or reason or f"the server answered HTTP {code}")
    details = status.get("details") if isinstance(status.get("details"), dict) else {}
    assert isinstance(details, dict)
    causes = [
        FieldCause(
            field=str(c.get("field") or ""),
            message=str(c.get("message") or ""),
            reason=str(c.get("reason") or "FieldValueInvalid"),
        )
        for c in details.get("causes") or []
        if isinstance(c, dict)
    ]
    cls = _ERRORS_BY_STATUS.get(code, ApiError)
    if code == 409 and reason == "AlreadyExists":
        cls = errors.AlreadyExists
    retry_after = details.get("retryAfterSeconds")
    err = cls(
        message,
        causes=causes,
        kind=_str_or_none(details.get("kind")),
        name=_str_or_none(details.get("name")),
        group=_str_or_none(details.get("group")),
        retry_after=retry_after if isinstance(retry_after, int) else None,
    )
    if cls is ApiError:
        err.status = code
    if reason:
        err.reason = reason
    return err


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class Client:
    """A synchronous client over ``http.client``; one connection per request.

    Every method takes and returns plain wire dicts and raises a
    ``meshwork.errors.ApiError`` subclass for an error status, or
    ``ServerUnreachable`` when there is no HTTP answer.
    """

    def __init__(self, server: str, token: str | None, timeout: float = DEFAULT_TIMEOUT) -> None:
        parts = urlsplit(server)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"server must be an http:// or https:// URL, not {server!r}")
        self.server = server.rstrip("/")
        self.token = token or None
        self.timeout = timeout
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._base_path = parts.path.rstrip("/")

    @classmethod
    def from_config(
        cls, data_dir: Path | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> Client:
        """A client for the server in ``data_dir``'s client config.

        ``MESHWORK_SERVER`` and ``MESHWORK_TOKEN`` override what the file says.
        """
        from meshwork.cli.config import read_client_config  # the config format lives with the CLI

        config = read_client_config(data_dir)
        server = os.environ.get(ENV_SERVER) or config.server
        token = os.environ.get(ENV_TOKEN) or config.token
        return cls(server, token, timeout)

    # -- the low-level request ------------------------------------------------

    def _connect(self, timeout: float | None) -> http.client.HTTPConnection:
        if self._scheme == "https":
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        url = self._base_path + path
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        headers = {"Accept": "application/json", "User-Agent": "meshwork-cli"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        payload: bytes | None = None
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = content_type
        conn = self._connect(timeout)
        try:
            conn.request(method, url, body=payload, headers=headers)
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise ServerUnreachable(self.server, exc) from exc

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """Send one request; return the decoded JSON body (None when empty)."""
        conn, resp = self._send(
            method, path, query=query, body=body, content_type=content_type, timeout=self.timeout
        )
        try:
            try:
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                raise ServerUnreachable(self.server, exc) from exc
        finally:
            conn.close()
        if resp.status >= 400:
            raise error_from_status(resp.status, data)
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError as exc:
            raise errors.RemoteProtocolError(
                f"{method} {path}: the server answered {resp.status} with a body that is not JSON"
            ) from exc

    def stream(
        self, method: str, path: str, *, query: Mapping[str, str] | list[tuple[str, str]] | None = None
    ) -> Iterator[bytes]:
        """Send one request and yield the body as it arrives (``logs -f``, ``exec``).

        An error status is raised as its ``ApiError``; closing the generator
        closes the connection.
        """
        url = path
        pairs = list(query.items()) if isinstance(query, Mapping) else list(query or [])
        if pairs:
            url += "?" + urlencode(pairs)
        conn, resp = self._send(method, url, timeout=None)
        try:
            if resp.status >= 400:
                raise error_from_status(resp.status, resp.read())
            while True:
                try:
                    chunk = resp.read1(64 * 1024)
                except (OSError, http.client.HTTPException) as exc:
                    raise ServerUnreachable(self.server, exc) from exc
                if not chunk:
                    return
                yield chunk
        finally:
            conn.close()

    # -- readiness and version ------------------------------------------------

    def ready(self) -> bool:
        """True when ``GET /readyz`` answers 200; False on any other answer or none."""
        try:
            conn, resp = self._send("GET", "/readyz", timeout=min(self.timeout, 5.0))
        except ServerUnreachable:
            return False
        try:
            resp.read()
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()
        return resp.status == 200

    def version(self) -> dict[str, Any]:
        """The server's ``GET /version`` document."""
        return _expect_object(self.request("GET", "/version"), "/version")

    # -- objects ----------------------------------------------------------------

    def get(
        self, info: KindInfo, namespace: str | None, name: str, *, version: str | None = None
    ) -> dict[str, Any]:
        path = resource_path(info, namespace, name, version=version)
        return _expect_object(self.request("GET", path), path)

    def list(
        self,
        info: KindInfo,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> dict[str, Any]:
        """The ``...List`` object: ``items`` and ``metadata.resourceVersion``."""
        path = resource_path(info, namespace)
        query = _selectors(label_selector, field_selector)
        return _expect_object(self.request("GET", path, query=query), path)

    def create(
        self, info: KindInfo, namespace: str | None, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        path = resource_path(info, namespace, version=version_for(info, body))
        return _expect_object(self.request("POST", path, body=body), path)

    def update(
        self,
        info: KindInfo,
        namespace: str | None,
        body: Mapping[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """PUT ``body`` (named by its ``metadata.name``; carry ``metadata.resourceVersion``)."""
        name = _name_of(body)
        path = resource_path(info, namespace, name, subresource, version=version_for(info, body))
        return _expect_object(self.request("PUT", path, body=body), path)

    def patch(
        self,
        info: KindInfo,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
    ) -> dict[str, Any]:
        path = resource_path(info, namespace, name, subresource)
        result = self.request(
            "PATCH", path, body=patch, content_type=_PATCH_CONTENT_TYPES[patch_type]
        )
        return _expect_object(result, path)

    def delete(
        self,
        info: KindInfo,
        namespace: str | None,
        name: str,
        *,
        propagation_policy: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> dict[str, Any] | None:
        """DELETE one object; the answer is the object (maybe now terminating) or a Status."""
        options: dict[str, Any] | None = None
        if propagation_policy is not None or grace_period_seconds is not None:
            options = {"kind": "DeleteOptions", "apiVersion": "v1"}
            if propagation_policy is not None:
                options["propagationPolicy"] = propagation_policy
            if grace_period_seconds is not None:
                options["gracePeriodSeconds"] = grace_period_seconds
        result = self.request("DELETE", resource_path(info, namespace, name), body=options)
        return result if isinstance(result, dict) else None

    def watch(
        self,
        info: KindInfo,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield watch events (``{"type": ..., "object": {...}}``) until the server ends the stream.

        An ``ERROR`` event carrying a Status is raised as the matching exception
        (``Gone`` when the revision was compacted: relist, then watch again).
        Closing the generator closes the connection.
        """
        query = _selectors(label_selector, field_selector)
        query["watch"] = "1"
        if resource_version:
            query["resourceVersion"] = resource_version
        if timeout_seconds is not None:
            query["timeoutSeconds"] = str(timeout_seconds)
        path = resource_path(info, namespace)
        # No socket timeout: a quiet watch is not a dead one, and the caller
        # (or the server's own timeout) decides when to stop.
        conn, resp = self._send("GET", path, query=query, timeout=None)
        try:
            if resp.status >= 400:
                raise error_from_status(resp.status, resp.read())
            while True:
                try:
                    line = resp.readline(WATCH_LINE_MAX + 1)
                except (OSError, http.client.HTTPException) as exc:
                    raise ServerUnreachable(self.server, exc) from exc
                if not line:
                    return
                if len(line) > WATCH_LINE_MAX:
                    raise errors.RemoteProtocolError(
                        f"a watch event on {path} is longer than {WATCH_LINE_MAX} bytes"
                    )
                if not line.strip():
                    continue
                event = _decode_event(line, path)
                if event["type"] == "ERROR":
                    obj = event.get("object")
                    raw = json.dumps(obj).encode() if isinstance(obj, dict) else b""
                    code = _int(obj.get("code"), 500) if isinstance(obj, dict) else 500
                    raise error_from_status(code, raw)
                yield event
        finally:
            conn.close()


def _decode_event(line: bytes, path: str) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError as exc:
        raise errors.RemoteProtocolError(f"a watch event on {path} is not JSON") from exc
    if (
        not isinstance(event, dict)
        or event.get("type") not in ("ADDED", "MODIFIED", "DELETED", "ERROR", "BOOKMARK")
        or not isinstance(event.get("object"), dict)
    ):
        raise errors.RemoteProtocolError(
            f"a watch event on {path} is not a watch event: {line[:100]!r}"
        )
    return event


def _selectors(label_selector: str | None, field_selector: str | None) -> dict[str, str]:
    query: dict[str, str] = {}
    if label_selector:
        query["labelSelector"] = label_selector
    if field_selector:
        query["fieldSelector"] = field_selector
    return query


def _name_of(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(name, str) or not name:
        raise ValueError("the object has no metadata.name")
    return name


def _expect_object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise errors.RemoteProtocolError(f"{path}: the server answered with no JSON object")
    return value


__all__ = [
    "DEFAULT_TIMEOUT",
    "Client",
    "ServerUnreachable",
    "error_from_status",
    "resource_path",
    "version_for",
]

"""What an HTTP route does besides choosing destinations: header edits, redirects, rewrites, retries, CORS, faults, mirrors.

What lives here: the VirtualService HTTP-route policy types of
networking.istio.io (``Headers``, ``HTTPRedirect``, ``HTTPDirectResponse``,
``HTTPRewrite``, ``HTTPRetry``, ``CorsPolicy``, ``HTTPFaultInjection``,
``HTTPMirrorPolicy``, ``Delegate``) and the checks Istio's webhook applies to
each of them on its own, with Istio's messages. ``istio_routing`` assembles
them into ``HTTPRoute`` and ``VirtualService``.

What must not: applying any of these to a request (``meshwork.core``), and
defaults: Istio stores what the user wrote.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import model_validator

from meshwork.model.base import Model
from meshwork.model.istio import (
    FORBIDDEN,
    REQUIRED,
    Destination,
    Int32,
    Loc,
    MinDuration,
    Percent,
    Problems,
    StringMatch,
    UInt32,
    duration_nanos,
    header_name_error,
    header_value_error,
    percentage_error,
    port_error,
    q,
    regex_error,
)

DIRECT_RESPONSE_BODY_MAX = 1024 * 1024  # Istio: direct responses over 1 MB are refused
NANOS_PER_SECOND = 10**9

# Envoy's x-envoy-retry-on / x-envoy-retry-grpc-on policies (Istio supportedRetryOnPolicies).
RETRY_ON = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "retriable-4xx",
    "refused-stream", "retriable-status-codes", "retriable-headers", "envoy-ratelimited",
    "http3-post-connect-failure", "cancelled", "deadline-exceeded", "internal",
    "resource-exhausted", "unavailable",
})  # fmt: skip
HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"}
)
GRPC_STATUSES = frozenset({
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
})  # fmt: skip
HTTP_STATUS_MIN, HTTP_STATUS_MAX = 200, 600  # Istio validateHTTPStatus bounds
PERCENT_MAX = 100


class HeaderOperations(Model):
    """Header edits: overwrite (``set``), append (``add``) and ``remove``."""

    set: dict[str, str] | None = None
    add: dict[str, str] | None = None
    remove: list[str] | None = None


class Headers(Model):
    """Header edits for the request forwarded and the response returned."""

    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


def is_authority_header(name: str) -> bool:
    return name.lower() in (":authority", "host")


def headers_errors(headers: Headers | None) -> list[tuple[Loc, str]]:
    """Istio's header-manipulation checks (request may rewrite the authority, response not)."""
    errors: list[tuple[Loc, str]] = []
    if headers is None:
        return errors
    for side, ops in (("request", headers.request), ("response", headers.response)):
        if ops is None:
            continue
        for verb in ("set", "add"):
            for name, value in (getattr(ops, verb) or {}).items():
                err = _header_op_error(name, allow_authority=side == "request")
                err = err or header_value_error(value)
                if err:
                    errors.append(((side, verb, name), err))
        for i, name in enumerate(ops.remove or []):
            err = _header_op_error(name, allow_authority=False)
            if err:
                errors.append(((side, "remove", i), err))
    return errors


def _header_op_error(name: str, *, allow_authority: bool) -> str | None:
    if not name:
        return "header name cannot be empty"
    if allow_authority and is_authority_header(name):
        return None
    if name.lower() == "host":
        return f"invalid header {q(name)}: cannot set Host header"
    if name.startswith(":"):
        return f'invalid header {q(name)}: header cannot have ":" prefix'
    return None


class HTTPRedirect(Model):
    """A redirect answered by the proxy instead of forwarding."""

    uri: str | None = None
    authority: str | None = None
    port: UInt32 | None = None
    derive_port: Literal["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"] | None = None
    scheme: str | None = None
    redirect_code: UInt32 | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = Problems("HTTPRedirect")
        if not (self.uri or self.authority or self.port or self.derive_port or self.scheme):
            problems.add(
                (), "redirect must specify URI, authority, scheme, or port", reason=REQUIRED
            )
        if self.port is not None and self.derive_port is not None:
            problems.add(("port",), "only one of port or derivePort may be set", reason=FORBIDDEN)
        if self.redirect_code and not 300 <= self.redirect_code <= 399:
            problems.add(
                ("redirectCode",), f"{self.redirect_code} is not a valid redirect code, must be 3xx"
            )
        if self.scheme and self.scheme not in ("http", "https"):
            problems.add(
                ("scheme",), 'invalid redirect scheme, must be "http" or "https"', self.scheme
            )
        if self.port:
            err = port_error(self.port)
            if err:
                problems.add(("port",), err, self.port)
        problems.raise_if_any()
        return self


class HTTPBody(Model):
    """A direct response body: text (``string``) or base64 (``bytes``)."""

    string: str | None = None
    bytes: str | None = None


class HTTPDirectResponse(Model):
    """A fixed response answered by the proxy."""

    status: UInt32
    body: HTTPBody | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = Problems("HTTPDirectResponse")
        if not HTTP_STATUS_MIN <= self.status <= HTTP_STATUS_MAX:
            problems.add(
                ("status",), f"HTTP status {self.status} is not in range 200-599", self.status
            )
        if self.body is not None:
            if self.body.string is not None and self.body.bytes is not None:
                problems.add(("body",), "only one of string or bytes may be set", reason=FORBIDDEN)
            size = len(self.body.string or self.body.bytes or "")
            if size > DIRECT_RESPONSE_BODY_MAX:
                problems.add(
                    ("body",),
                    "large direct_responses may impact control plane performance, must be less than 1MB",
                )
        problems.raise_if_any()
        return self


class Delegate(Model):
    """The VirtualService whose HTTP routes this route delegates to."""

    name: str | None = None
    namespace: str | None = None


class RegexRewrite(Model):
    """Rewrite the path with an RE2 regex and a substitution."""

    match: str | None = None
    rewrite: str | None = None


class HTTPRewrite(Model):
    """Rewrite the URI and/or authority before forwarding."""

    uri: str | None = None
    authority: str | None = None
    uri_regex_rewrite: RegexRewrite | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = Problems("HTTPRewrite")
        regex = self.uri_regex_rewrite
        if self.uri and regex is not None:
            problems.add(
                (), "rewrite may only contain one of URI or UriRegexRewrite", reason=FORBIDDEN
            )
        if not self.uri and regex is None and not self.authority:
            problems.add(
                (),
                "rewrite must specify at least one of URI, UriRegexRewrite, or authority. "
                "Only one of URI or UriRegexRewrite may be specified",
                reason=REQUIRED,
            )
        if regex is not None:
            if not regex.match or not regex.rewrite:
                problems.add(
                    ("uriRegexRewrite",),
                    "UriRegexRewrite requires both Rewrite and Match fields to be specified",
                    reason=REQUIRED,
                )
            else:
                err = regex_error(regex.match, "HTTPRewrite.UriRegexRewrite.Match")
                if err:
                    problems.add(("uriRegexRewrite", "match"), err, regex.match)
        problems.raise_if_any()
        return self


class HTTPRetry(Model):
    """Retry policy of an HTTP route."""

    attempts: Int32 | None = None
    per_try_timeout: MinDuration | None = None
    retry_on: str | None = None
    retry_remote_localities: bool | None = None
    retry_ignore_previous_hosts: bool | None = None
    backoff: MinDuration | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = Problems("HTTPRetry")
        attempts = self.attempts or 0
        if attempts < 0:
            problems.add(("attempts",), "attempts cannot be negative", attempts)
        if attempts == 0 and (
            self.per_try_timeout is not None
            or self.retry_on
            or self.retry_remote_localities is not None
        ):
            problems.add((), "http retry policy configured when attempts are set to 0 (disabled)")
        for policy in (self.retry_on or "").split(",") if self.retry_on else []:
            if policy not in RETRY_ON and not (policy.isdigit() and 100 <= int(policy) <= 599):
                problems.add(
                    ("retryOn",), f"{q(policy)} is not a valid retryOn policy", self.retry_on
                )
        problems.raise_if_any()
        return self


class CorsPolicy(Model):
    """Cross-origin resource sharing answered by the proxy."""

    allow_origin: list[str] | None = None  # deprecated upstream: use allowOrigins
    allow_origins: list[StringMatch] | None = None
    allow_methods: list[str] | None = None
    allow_headers: list[str] | None = None
    expose_headers: list[str] | None = None
    max_age: MinDuration | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: Literal["UNSPECIFIED", "FORWARD", "IGNORE"] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = Problems("CorsPolicy")
        for i, origin in enumerate(self.allow_origins or []):
            if not origin.value:
                problems.add(
                    ("allowOrigins", i), "'' is not a valid match type for CORS allow origins"
                )
        for i, method in enumerate(self.allow_methods or []):
            if method not in HTTP_METHODS:
                problems.add(
                    ("allowMethods", i), f"{q(method)} is not a supported HTTP method", method
                )
        for field, names in (
            ("allowHeaders", self.allow_headers),
            ("exposeHeaders", self.expose_headers),
        ):
            for i, name in enumerate(names or []):
                err = None if name == "*" else header_name_error(name)
                if err:
                    problems.add((field, i), err, name)
        if self.max_age is not None and (duration_nanos(self.max_age) or 0) % NANOS_PER_SECOND:
            problems.add(("maxAge",), "max_age duration is accurate only to seconds precision")
        problems.raise_if_any()
        return self


class FaultDelay(Model):
    """Delay a share of requests before forwarding them."""

    percent: Int32 | None = None  # deprecated upstream: use percentage
    fixed_delay: MinDuration | None = None
    exponential_delay: MinDuration | None = None
    percentage: Percent | None = None


class FaultAbort(Model):
    """Answer a share of requests with an error instead of forwarding them."""

    http_status: Int32 | None = None
    grpc_status: str | None = None
    http2_error: str | None = None
    percentage: Percent | None = None


class HTTPFaultInjection(Model):
    """Faults injected on the client side of an HTTP route."""

    delay: FaultDelay | None = None
    abort: FaultAbort | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = Problems("HTTPFaultInjection")
        if self.delay is None and self.abort is None:
            problems.add(
                (), "HTTP fault injection must have an abort and/or a delay", reason=REQUIRED
            )
        if (delay := self.delay) is not None:
            if (delay.fixed_delay is None) == (delay.exponential_delay is None):
                problems.add(
                    ("delay", "fixedDelay"),
                    "exactly one of fixedDelay or exponentialDelay is required",
                    reason=REQUIRED,
                )
            if delay.exponential_delay is not None:
                problems.add(
                    ("delay", "exponentialDelay"),
                    "exponentialDelay not supported yet",
                    reason=FORBIDDEN,
                )
            if delay.percent is not None and not 0 <= delay.percent <= PERCENT_MAX:
                problems.add(
                    ("delay", "percent"), f"percentage {delay.percent} is not in range 0..100"
                )
            if err := percentage_error(delay.percentage):
                problems.add(("delay", "percentage", "value"), err)
        if (abort := self.abort) is not None:
            if err := percentage_error(abort.percentage):
                problems.add(("abort", "percentage", "value"), err)
            kinds = [
                v is not None for v in (abort.http_status, abort.grpc_status, abort.http2_error)
            ]
            if sum(kinds) > 1:
                problems.add(
                    ("abort",),
                    "only one of httpStatus, grpcStatus or http2Error may be set",
                    reason=FORBIDDEN,
                )
            if abort.http2_error is not None:
                problems.add(
                    ("abort", "http2Error"),
                    "HTTP/2 abort fault injection not supported yet",
                    reason=FORBIDDEN,
                )
            if abort.grpc_status is not None and abort.grpc_status not in GRPC_STATUSES:
                problems.add(
                    ("abort", "grpcStatus"), f"gRPC status {q(abort.grpc_status)} is not supported"
                )
            status = abort.http_status
            if status is not None and not HTTP_STATUS_MIN <= status <= HTTP_STATUS_MAX:
                problems.add(
                    ("abort", "httpStatus"), f"HTTP status {status} is not in range 200-599", status
                )
        problems.raise_if_any()
        return self


class HTTPMirrorPolicy(Model):
    """One of several mirror destinations, each with its own share."""

    destination: Destination
    percentage: Percent | None = None

"""The telemetry seam: what the proxy engine tells an observer, and when.

What lives here: the ``Observer`` protocol, the two small records it
receives (``RequestInfo`` once per finished HTTP request, ``ConnectionInfo``
at the open and the close of a proxied TCP connection), ``NullObserver`` and
``Observers`` (a fan-out to several).

What must not live here: metrics, formats, files, sockets. Metrics with
Istio's names and the access log are observers written elsewhere
(``proxy.telemetry``); the engine only reports.

Wiring: ``HttpProxy(decider, observer=o)`` and ``TcpProxy(cluster,
observer=o)`` (``proxy.server``, ``proxy.tcp``); ``Observers(a, b)`` to give
both metrics and an access log.

Contract with the engine (``proxy.http``, ``proxy.tcp``):

* ``request_done(info)`` is called exactly once per request the engine
  finished: answered (by an upstream or locally), refused after parsing, or
  abandoned because the client went away (``status`` 0 or the status sent,
  ``flags`` "DC"). A request the parser refused before it had a head is not
  reported (it never was a request). A request upgraded to a tunnel (101) is
  reported when the tunnel starts.
* ``connection_opened(info)`` is called when a TCP splice's upstream
  connection is established; ``connection_closed(info)`` with the *same*
  ``info`` object, completed, when both sides are closed. A TCP connection
  whose upstream could never be reached gets only ``connection_closed``
  (``upstream`` "", ``flags`` "UF").
* Calls happen on the event loop, synchronously: an observer must be quick,
  must not block, and must not raise (an exception is logged and dropped).
  It must not keep ``info.request`` beyond the call if it wants the memory
  back soon; the record itself may be kept.
* Durations come from the event loop's monotonic clock, read once when the
  head was parsed and once when the request finished; ``start`` is that
  loop time (``loop.time()``), not wall time.

When no observer is configured the engine does not build these records nor
read the clock: an absent observer costs one attribute test per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from meshwork.core.http1 import Request
    from meshwork.proxy.plan import Downstream, UpstreamTls

__all__ = ["ConnectionInfo", "NullObserver", "Observer", "Observers", "RequestInfo"]


class RequestInfo:
    """One finished HTTP request, as the engine saw it.

    ``method``, ``authority`` (the Host header, b"" when absent) and ``path``
    (the request target as received) are raw bytes: decode only what you use.
    ``status`` is the status sent to the client (0: none was sent).
    ``flags`` holds Envoy's response flags ("" for none, e.g. "UH", "UF,URX",
    "DC"); ``reason`` the local-reply detail ("" for none). ``route`` and
    ``cluster`` name the plan's route and cluster ("" for none); ``upstream``
    is the last endpoint tried, "host:port" ("" when none was). ``duration``
    is in seconds. ``request_bytes`` counts the request body's payload
    (de-chunked); ``response_bytes`` the response body bytes sent to the
    client (chunked framing included); heads are never counted (Envoy's
    %BYTES_RECEIVED% / %BYTES_SENT%). ``request`` is the parsed head, for
    headers a log wants.

    Who the peers are, from the TLS of the connections, carried as the
    engine already holds them (made once per connection, never per request):
    ``downstream`` is the client connection's ``plan.Downstream`` (its
    ``principal`` is the client certificate's SPIFFE identity when the
    connection is mutual TLS); ``upstream_tls`` the ``plan.UpstreamTls`` the
    last attempt connected with (None: plaintext, or no attempt), whose
    ``identities`` the server's certificate was verified against.
    """

    __slots__ = (
        "attempts",
        "authority",
        "cluster",
        "downstream",
        "duration",
        "flags",
        "method",
        "path",
        "reason",
        "request",
        "request_bytes",
        "response_bytes",
        "route",
        "source",
        "start",
        "status",
        "upstream",
        "upstream_tls",
    )

    def __init__(
        self,
        method: bytes,
        authority: bytes,
        path: bytes,
        status: int,
        flags: str,
        route: str,
        cluster: str,
        upstream: str,
        start: float,
        duration: float,
        request_bytes: int,
        response_bytes: int,
        *,
        reason: str = "",
        source: str = "",
        attempts: int = 0,
        request: Request | None = None,
        downstream: Downstream | None = None,
        upstream_tls: UpstreamTls | None = None,
    ) -> None:
        self.method = method
        self.authority = authority
        self.path = path
        self.status = status
        self.flags = flags
        self.route = route
        self.cluster = cluster
        self.upstream = upstream
        self.start = start
        self.duration = duration
        self.request_bytes = request_bytes
        self.response_bytes = response_bytes
        self.reason = reason
        self.source = source
        self.attempts = attempts
        self.request = request
        self.downstream = downstream
        self.upstream_tls = upstream_tls

    def __repr__(self) -> str:
        return (
            f"RequestInfo({self.method!r} {self.authority!r}{self.path!r} -> {self.status}"
            f" flags={self.flags!r} route={self.route!r} cluster={self.cluster!r}"
            f" upstream={self.upstream!r} in={self.request_bytes} out={self.response_bytes})"
        )


class ConnectionInfo:
    """One proxied TCP connection. ``bytes_received`` came from the client, ``bytes_sent`` went to it.

    Filled in as the connection goes: ``upstream`` and ``cluster`` at open,
    the byte counts, ``duration`` and ``flags`` at close.
    """

    __slots__ = ("bytes_received", "bytes_sent", "cluster", "duration", "flags", "source", "start", "upstream")

    def __init__(self, source: str, cluster: str, start: float) -> None:
        self.source = source
        self.cluster = cluster
        self.upstream = ""
        self.start = start
        self.duration = 0.0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.flags = ""

    def __repr__(self) -> str:
        return (
            f"ConnectionInfo({self.source} -> {self.cluster}/{self.upstream or '-'}"
            f" in={self.bytes_received} out={self.bytes_sent} flags={self.flags!r})"
        )


class Observer(Protocol):
    """What the engine reports to. All three are called on the event loop and must be quick."""

    def request_done(self, info: RequestInfo) -> None: ...

    def connection_opened(self, info: ConnectionInfo) -> None: ...

    def connection_closed(self, info: ConnectionInfo) -> None: ...


class NullObserver:
    """Observes nothing (the engine skips its calls entirely when given None)."""

    def request_done(self, info: RequestInfo) -> None:
        pass

    def connection_opened(self, info: ConnectionInfo) -> None:
        pass

    def connection_closed(self, info: ConnectionInfo) -> None:
        pass


class Observers:
    """Hands every report to each of ``observers`` in order (metrics and access log together)."""

    __slots__ = ("observers",)

    def __init__(self, *observers: Observer) -> None:
        self.observers = observers

    def request_done(self, info: RequestInfo) -> None:
        for o in self.observers:
            o.request_done(info)

    def connection_opened(self, info: ConnectionInfo) -> None:
        for o in self.observers:
            o.connection_opened(info)

    def connection_closed(self, info: ConnectionInfo) -> None:
        for o in self.observers:
            o.connection_closed(info)

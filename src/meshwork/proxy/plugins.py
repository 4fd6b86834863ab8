"""ProxyPlugins: Python modules run inside the proxy for each request (meshwork.io/v1alpha1).

What lives here: choosing the plugins that select this proxy (``selected``),
loading their modules once (a module name, or a path to a ``.py`` file), and
running their three hooks, in the spirit of Envoy's Lua filter
(``envoy_on_request`` / ``envoy_on_response``) and its load-balancer extensions:

* ``on_request(request)``, in priority order (highest first). It may answer
  the request itself (return ``(status, body)`` or ``(status, body, headers)``)
  or add headers for the upstream (``request.headers_to_add``). A hook that
  raises, or adds a header that is not a valid field, answers 500 naming the
  plugin.
* ``on_response(request, response)`` (``run_response``), for a response from
  the upstream, before its head goes to the client. Hooks run in the reverse
  order, as Envoy runs a filter chain's encoders: the plugin that saw the
  request first sees the response last, so its edits win. ``response`` has
  ``status``, ``headers`` (lower-cased names, the route's own edits applied)
  and ``config``; a hook edits what the client gets with
  ``response.headers_to_set`` / ``headers_to_add`` (name -> value) and
  ``headers_to_remove`` (names), applied after the route's
  ``headers.response``, in Istio's order (remove, set, add). A hook that
  raises or names an invalid or framing field (content-length,
  transfer-encoding, connection...) is skipped: its edits are dropped, the
  other hooks' stay, and the response goes through. The upstream has already
  acted on the request, so its answer is not hidden behind a 500 for an
  extension's mistake. The proxy's own answers (no healthy upstream,
  timeouts, a plugin's answer) do not pass through ``on_response``.
* ``pick(request, endpoints)`` (``run_pick``), at each attempt (retries
  included) to a cluster of the mesh: ``endpoints`` is a tuple of the
  cluster's endpoints that are neither ejected by outlier detection nor
  already tried by this request (``meshwork.core.mesh.lb.Endpoint``:
  ``address``, ``port``, ``labels``, ``name`` = the pod). The hook returns one
  of them, or None to leave the choice to the next picker and finally to the
  DestinationRule's balancer. A picker that raises or returns anything not in
  the tuple is skipped the same way. When no such endpoint is left the
  balancer decides alone (it may reuse a tried endpoint, as Envoy does).

Which side. ``spec.match`` (``TrafficSelector``: ``mode``, ``ports``) says
where a plugin runs: ``CLIENT``, the sidecar's outbound side (``proxy.mesh``;
the port is the destination service's), ``SERVER``, its inbound side
(``proxy.inbound``; the port is the app's), or both; no ``match`` is CLIENT
only (``meshwork.model.plugins`` says why). ``selected`` loads every plugin
that selects the workload; ``PluginChain`` keeps one side's and gives, per
port, the hooks to run (``Hooks``), worked out once per port. On the SERVER
side ``pick`` is never called (the app is the only endpoint), and an
``on_request`` that raises or asks for an invalid header is skipped like a
failing ``on_response`` (``run_request(..., fail_open=True)``): its headers
are dropped and the request goes on to the app, as the outbound side's 500
would hide the app's own answer from a caller that did nothing wrong.

Every hook failure is counted in ``FAILURES`` (by plugin and hook) and logged
on the 1st, 2nd, 4th, 8th... time, so a hook failing on every request cannot
flood the log. A plugin that fails to load makes the config a NACK. Nothing a
hook does takes the proxy down.

What must not live here: the engine (``proxy.http`` calls the response hook
through ``plan.Forward.on_response``), routing or balancing policy
(``proxy.mesh`` wraps its clusters with the pickers).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from meshwork.core.http1 import Request
from meshwork.core.http1_checks import split_fields
from meshwork.core.mesh.lb import Endpoint
from meshwork.proxy.plan import HeaderEdits
from meshwork.proxy.telemetry import escape_label

__all__ = [
    "CLIENT",
    "CLIENT_ONLY",
    "FAILURES",
    "SERVER",
    "Hooks",
    "Plugin",
    "PluginChain",
    "PluginRequest",
    "PluginResponse",
    "Reply",
    "ResponseHeaders",
    "ResponseHooks",
    "TrafficMatch",
    "plugin_request",
    "render_failures",
    "request_fields",
    "run_pick",
    "run_request",
    "run_response",
    "selected",
]

log: Final = logging.getLogger("meshwork.proxy.plugins")
_LOADED: dict[tuple[str, str], ModuleType] = {}
# Hook failures by "namespace/name hook" since the proxy started.
FAILURES: Final[Counter[str]] = Counter()
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BAD_VALUE: Final = re.compile(r"[\r\n\x00]")
# Fields a plugin may not touch: framing and hop-by-hop (RFC 9110 §7.6.1, RFC 9112 §6);
# an edit to them could desynchronise the connection (request smuggling).
_RESERVED: Final = frozenset(
    ("content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection",
     "upgrade", "te", "trailer", "expect", "http2-settings")
)  # fmt: skip
# Hop-by-hop fields of a response: the client never gets them, so hooks do not see them.
_HOP: Final = frozenset(("connection", "keep-alive", "proxy-connection", "upgrade", "te", "trailer"))


@dataclass(slots=True)
class PluginRequest:
    """What a hook sees of a request (header names lower-case)."""

    method: str
    path: str
    authority: str
    headers: Mapping[str, str]
    config: Mapping[str, Any]
    headers_to_add: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class PluginResponse:
    """What ``on_response`` sees of the upstream's response, and the edits it asks for."""

    status: int
    headers: Mapping[str, str]
    config: Mapping[str, Any] = field(default_factory=dict)
    headers_to_set: dict[str, str] = field(default_factory=dict)
    headers_to_add: dict[str, str] = field(default_factory=dict)
    headers_to_remove: list[str] = field(default_factory=list)


Side = Literal["CLIENT", "SERVER"]
CLIENT: Final = "CLIENT"  # the workload's outbound side
SERVER: Final = "SERVER"  # its inbound side
_MODES: Final[dict[str, tuple[bool, bool]]] = {  # WorkloadMode -> (client, server)
    "CLIENT": (True, False), "SERVER": (False, True), "CLIENT_AND_SERVER": (True, True), "UNDEFINED": (True, True),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class TrafficMatch:
    """One ``TrafficSelector``: the sides it selects, and the ports (empty: every port)."""

    client: bool
    server: bool
    ports: frozenset[int] = frozenset()

    def selects(self, side: Side, port: int | None) -> bool:
        if not (self.client if side == CLIENT else self.server):
            return False
        return not self.ports or port in self.ports


CLIENT_ONLY: Final = (TrafficMatch(client=True, server=False),)  # no ``match``: meshwork's behaviour before it


@dataclass(frozen=True, slots=True)
class Plugin:
    name: str  # namespace/name of the ProxyPlugin
    on_request: Callable[[PluginRequest], Any] | None
    config: Mapping[str, Any]
    priority: int = 0
    on_response: Callable[[PluginRequest, PluginResponse], Any] | None = None
    pick: Callable[[PluginRequest, tuple[Endpoint, ...]], Any] | None = None
    match: tuple[TrafficMatch, ...] = CLIENT_ONLY

    def on_side(self, side: Side) -> bool:
        """Whether any selector picks some traffic of ``side``."""
        return any(m.client if side == CLIENT else m.server for m in self.match)

    def runs(self, side: Side, port: int | None) -> bool:
        """Whether a request of ``side`` for ``port`` passes this plugin."""
        return any(m.selects(side, port) for m in self.match)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    plugin: str


def _matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    wanted = (selector or {}).get("matchLabels") or {}
    return all(labels.get(k) == v for k, v in wanted.items())


def _load(module: str) -> ModuleType:
    if module.endswith(".py"):
        with open(module, "rb") as f:
            digest = hashlib.blake2b(f.read(), digest_size=8).hexdigest()
        key = (module, digest)
        found = _LOADED.get(key)
        if found is None:
            spec = importlib.util.spec_from_file_location(f"meshwork_plugin_{digest}", module)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load plugin file {module}")
            found = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(found)
            _LOADED[key] = found
        return found
    return importlib.import_module(module)


def _hook(module: ModuleType, name: str) -> Any:
    found = getattr(module, name, None)
    return found if callable(found) else None


def _traffic(name: str, raw: object) -> tuple[TrafficMatch, ...]:
    """``spec.match`` in its wire form (checked by the model on apply; ValueError for anything else)."""
    if not raw:
        return CLIENT_ONLY
    if not isinstance(raw, list):
        raise ValueError(f"ProxyPlugin {name}: spec.match must be a list")
    out: list[TrafficMatch] = []
    for i, item in enumerate(raw):
        item = item if isinstance(item, dict) else {}
        mode = str(item.get("mode") or "CLIENT_AND_SERVER")
        if mode not in _MODES:
            raise ValueError(f"ProxyPlugin {name}: spec.match[{i}].mode: unsupported value {mode!r}")
        ports: set[int] = set()
        for j, port in enumerate(item.get("ports") or []):
            number = port.get("number") if isinstance(port, dict) else None
            if not isinstance(number, int) or isinstance(number, bool) or not 0 < number < 65536:
                raise ValueError(f"ProxyPlugin {name}: spec.match[{i}].ports[{j}].number: not a port: {number!r}")
            ports.add(number)
        client, server = _MODES[mode]
        out.append(TrafficMatch(client, server, frozenset(ports)))
    return tuple(out)


def selected(raw_plugins: list[dict[str, Any]], labels: Mapping[str, str]) -> list[Plugin]:
    """The plugins of the snapshot whose selector picks this proxy (either side), loaded, highest priority first."""
    out: list[Plugin] = []
    for obj in raw_plugins:
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        if not _matches(spec.get("selector"), labels):
            continue
        name = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        match = _traffic(name, spec.get("match"))
        try:
            module = _load(str(spec["module"]))
        except Exception as exc:  # a NACK names the plugin and why
            raise ValueError(f"ProxyPlugin {name}: cannot load {spec.get('module')!r}: {exc}") from exc
        out.append(Plugin(name, _hook(module, "on_request"), dict(spec.get("config") or {}),
                          int(spec.get("priority") or 0), _hook(module, "on_response"),
                          _hook(module, "pick"), match))  # fmt: skip
    return sorted(out, key=lambda p: -p.priority)


@dataclass(frozen=True, slots=True)
class Hooks:
    """What runs for one request: ``on_request`` order, the pickers, and ``on_response`` order (reversed)."""

    plugins: list[Plugin]
    pickers: list[Plugin]
    responders: list[Plugin]


class PluginChain:
    """One side's plugins (``CLIENT`` or ``SERVER``), and the hooks for each port, worked out once a port."""

    __slots__ = ("_by_port", "plugins", "side")

    def __init__(self, plugins: list[Plugin], side: Side) -> None:
        self.side = side
        self.plugins = [p for p in plugins if p.on_side(side)]
        self._by_port: dict[int | None, Hooks] = {}

    def __bool__(self) -> bool:
        return bool(self.plugins)

    def at(self, port: int | None) -> Hooks:
        found = self._by_port.get(port)
        if found is None:
            chosen = [p for p in self.plugins if p.runs(self.side, port)]
            pickers = [p for p in chosen if p.pick is not None] if self.side == CLIENT else []
            # Envoy runs a chain's encoders in reverse: the first plugin on the request sees the response last.
            responders = [p for p in reversed(chosen) if p.on_response is not None]
            found = Hooks(chosen, pickers, responders)
            if len(self._by_port) < 65536:  # ports are bounded; a stray None or odd port cannot grow it past that
                self._by_port[port] = found
        return found


def plugin_request(raw: Request) -> PluginRequest:
    """What a hook sees of a request as the engine parsed it: origin-form path, authority, lower-case names."""
    target = raw.target.decode("latin-1")
    authority = (raw.host or b"").decode("latin-1")
    if not target.startswith("/") and "://" in target:  # absolute-form
        parts = urlsplit(target)
        authority = parts.netloc or authority
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers: dict[str, str] = {}
    for name, value in raw.headers:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    return PluginRequest(raw.method.decode("latin-1"), target, authority, headers, {})


def render_failures() -> str:
    """``FAILURES`` in the Prometheus text format, for the admin port's ``/stats/prometheus``."""
    lines = [
        "# HELP meshwork_proxy_plugin_failures_total ProxyPlugin hook calls that failed "
        "(the request went on as if the hook were absent).\n"
        "# TYPE meshwork_proxy_plugin_failures_total counter\n"
    ]
    for key, count in sorted(FAILURES.items()):
        plugin, _, hook = key.rpartition(" ")
        lines.append(
            f'meshwork_proxy_plugin_failures_total{{plugin="{escape_label(plugin)}",hook="{escape_label(hook)}"}}'
            f" {count}\n"
        )
    return "".join(lines)


def _failed(plugin: Plugin, hook: str, why: str) -> None:
    key = f"{plugin.name} {hook}"
    FAILURES[key] += 1
    count = FAILURES[key]
    if count & (count - 1) == 0:  # 1st, 2nd, 4th, 8th...
        log.warning("ProxyPlugin %s: %s failed (%d times so far): %s", plugin.name, hook, count, why)


def _field(name: object, value: object = "") -> tuple[bytes, bytes]:
    """A header a hook asked for, as bytes; ValueError when it is not one a plugin may send."""
    text = str(name).lower()
    if not _TOKEN.match(text) or text in _RESERVED:
        raise ValueError(f"a plugin may not edit header {text!r}")
    data = str(value)
    if _BAD_VALUE.search(data):
        raise ValueError(f"header {text!r}: CR, LF or NUL in the value")
    return text.encode(), data.encode()


def request_fields(added: Mapping[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    """``on_request``'s ``headers_to_add`` as header fields (ValueError on a bad one)."""
    return tuple(_field(k, v) for k, v in added.items())


def _reply(plugin: Plugin, answer: Any) -> Reply:
    """A hook's ``(status, body[, headers])`` as a reply (ValueError/TypeError when it is not one)."""
    status, body, *rest = answer
    headers = tuple((str(k).encode(), str(v).encode()) for k, v in (rest[0] if rest else {}).items())
    data = body.encode() if isinstance(body, str) else bytes(body)
    return Reply(int(status), data, headers, plugin.name)


def run_request(plugins: list[Plugin], request: PluginRequest, *, fail_open: bool = False) -> Reply | None:
    """Run the hooks in order; the first that answers ends the request.

    A hook that fails answers 500 naming the plugin; with ``fail_open`` (the
    SERVER side) it is skipped instead, the headers it added dropped.
    """
    for plugin in plugins:
        if plugin.on_request is None:
            continue
        request.config = plugin.config
        before = dict(request.headers_to_add) if fail_open else None
        try:
            answer = plugin.on_request(request)
            request_fields(request.headers_to_add)
            if answer is None:
                continue
            return _reply(plugin, answer)
        except Exception as exc:
            _failed(plugin, "on_request", f"{type(exc).__name__}: {exc}")
            if before is None:
                return Reply(500, f"plugin {plugin.name} failed: {type(exc).__name__}\n".encode(), (), plugin.name)
            request.headers_to_add = before
    return None


# --- Responses ------------------------------------------------------------------------------


class ResponseHeaders(Mapping[str, str]):
    """A response's fields as the client would get them: lower-case names, repeats joined with ",",
    the route's edits applied, no hop-by-hop fields. Parsed on first read: a hook that only
    edits costs no parsing.
    """

    __slots__ = ("_fields", "_head", "_route")

    def __init__(self, head: bytes, route: HeaderEdits | None) -> None:
        self._head, self._route = head, route
        self._fields: dict[str, str] | None = None

    def _parsed(self) -> dict[str, str]:
        found = self._fields
        if found is not None:
            return found
        head, route = self._head, self._route
        headers: dict[str, str] = {}
        for raw_name, raw_value in split_fields(head, head.find(b"\r\n") + 2):
            name = raw_name.decode("latin-1").lower()
            if name not in _HOP:
                value = raw_value.decode("latin-1")
                headers[name] = f"{headers[name]},{value}" if name in headers else value
        if route is not None:
            for raw_name in route.remove:
                headers.pop(raw_name.decode("latin-1").lower(), None)
            for raw_name, raw_value in route.set:
                headers[raw_name.decode("latin-1").lower()] = raw_value.decode("latin-1")
            for raw_name, raw_value in route.add:
                name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
                headers[name] = f"{headers[name]},{value}" if name in headers else value
        self._fields = headers
        return headers

    def __getitem__(self, name: str) -> str:
        return self._parsed()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._parsed())

    def __len__(self) -> int:
        return len(self._parsed())

    def __repr__(self) -> str:
        return f"ResponseHeaders({self._parsed()!r})"


# A hook's edits as header fields: (remove, set, add).
_Fields = tuple[tuple[bytes, ...], tuple[tuple[bytes, bytes], ...], tuple[tuple[bytes, bytes], ...]]
_NO_FIELDS: Final[_Fields] = ((), (), ())


def _fields(response: PluginResponse) -> _Fields:
    """The edits asked for so far, validated (ValueError names the first bad one)."""
    return (
        tuple(_field(n)[0] for n in response.headers_to_remove),
        tuple(_field(k, v) for k, v in response.headers_to_set.items()),
        tuple(_field(k, v) for k, v in response.headers_to_add.items()),
    )


def _merge(route: HeaderEdits | None, fields: _Fields) -> HeaderEdits | None:
    """The route's response edits, then the hooks' (which override what they name)."""
    remove, set_, add = fields
    if not (remove or set_ or add):
        return route
    if route is None:
        return HeaderEdits(set=set_, add=add, remove=remove)
    named = set(remove) | {n for n, _ in set_}
    return HeaderEdits(
        set=tuple(f for f in route.set if f[0].lower() not in named) + set_,
        add=tuple(f for f in route.add if f[0].lower() not in named) + add,
        remove=route.remove + remove,
    )


def run_response(
    plugins: list[Plugin], request: PluginRequest, status: int, head: bytes, route: HeaderEdits | None = None
) -> HeaderEdits | None:
    """The response header edits for the client: ``route``'s, then the hooks' (``plugins`` in run order)."""
    response = PluginResponse(status, ResponseHeaders(head, route))
    done = _NO_FIELDS  # the edits of the hooks that succeeded
    for plugin in plugins:
        hook = plugin.on_response
        if hook is None:
            continue
        request.config = response.config = plugin.config
        try:
            hook(request, response)
            done = _fields(response)
        except Exception as exc:
            _failed(plugin, "on_response", f"{type(exc).__name__}: {exc}")
            remove, set_, add = done  # back to what the hooks before it asked for
            response.headers_to_remove = [n.decode() for n in remove]
            response.headers_to_set = {n.decode(): v.decode() for n, v in set_}
            response.headers_to_add = {n.decode(): v.decode() for n, v in add}
    return _merge(route, done)


class ResponseHooks:
    """``plan.Forward.on_response`` for one request: ``(status, head)`` -> the edits to apply."""

    __slots__ = ("plugins", "request", "route")

    def __init__(self, plugins: list[Plugin], request: PluginRequest, route: HeaderEdits | None) -> None:
        self.plugins, self.request, self.route = plugins, request, route

    def __call__(self, status: int, head: bytes) -> HeaderEdits | None:
        return run_response(self.plugins, self.request, status, head, self.route)


# --- Load balancing -------------------------------------------------------------------------


def run_pick(plugins: list[Plugin], request: PluginRequest, endpoints: tuple[Endpoint, ...]) -> Endpoint | None:
    """The endpoint the first willing picker chooses among ``endpoints`` (None: let the balancer choose)."""
    for plugin in plugins:
        hook = plugin.pick
        if hook is None:
            continue
        request.config = plugin.config
        try:
            chosen = hook(request, endpoints)
        except Exception as exc:
            _failed(plugin, "pick", f"{type(exc).__name__}: {exc}")
            continue
        if chosen is None:
            continue
        if isinstance(chosen, Endpoint) and chosen in endpoints:
            return chosen
        _failed(plugin, "pick", f"returned {chosen!r}, not one of the endpoints offered")
    return None

"""The sidecar's inbound side: which of its app's ports a request for this pod goes to.

What lives here: ``InboundDecider``, the small static decider behind the
sidecar's ``$POD_IP:15006`` listener, and ``parse_pod_ports``, which reads the
app's ports from ``ISTIO_META_POD_PORTS`` (set by injection, ``core.inject``).

Inbound capture. When the sidecar knows its app's own address
(``MESHWORK_APP_IP``, ``core.inject.app_ip``), the app listens there and the
sidecar owns ``$POD_IP``: besides :15006 it listens on ``$POD_IP:<port>`` for
every app port, each listener deciding with ``InboundDecider.at_port`` (the
port is the listener's; a ``PortDecider``), with that port's mTLS mode. So a
client outside the mesh (a pod without sidecar, the node's ClusterIP
forwarder, anything on the machine) goes through the same mTLS, policies and
metrics as a sidecar does, as Istio's iptables capture makes it. A port that
does not speak HTTP (``opaque_ports``: a ``tcp-``, ``tls-``, ``mongo-`` ...
port name or ``appProtocol``) is spliced as TCP to the app unless its mode is
STRICT, where it is closed (sidecars carry no TCP between them). Without that
address the app listens on ``$POD_IP`` and only :15006 is the sidecar's.

How a request finds its port. A meshed client's sidecar connects to the
destination pod's ``:15006`` and says which app port it meant in
``x-meshwork-inbound-port`` (on one machine there is no iptables redirect to
keep the original destination port, so the header carries it). The header is
removed before the request goes on to the app's ``<port>``:

* a port the pod declares, or a Service sends traffic to, goes to its
  ``inbound|<port>||<service>`` cluster;
* a port it does not declare still reaches the app, as Istio forwards
  undeclared ports through ``InboundPassthroughClusterIpv4``;
* no header: the pod's only such port; with none, 503
  ``no healthy upstream`` (UH); with several, 404 (NR): which one is not known;
* a header that is not a port number, or names one of the proxy's own ports,
  is refused with 404 (NR), never looped back into the proxy;
* a plaintext request for an app port whose PeerAuthentication mode is
  STRICT (``refuses_plaintext``, set when ports differ in mode and the
  listener therefore runs PERMISSIVE) gets no answer: the connection closes.

ProxyPlugins whose ``spec.match`` selects the SERVER side (``proxy.plugins``)
run here, on a request this decider forwards to the app, for the app port
it goes to: ``on_request`` before it reaches the app (an answer ends it
there; a hook that fails is skipped, counted in ``FAILURES``, and the
request goes on), ``on_response`` on the app's response (the plan's
``on_response``). ``pick`` is not called: the app is the one endpoint. The
decider's own refusals (404, 503, a STRICT port's close) and the guard's,
which runs before it (as Istio puts a WasmPlugin of the default phase after
its authorization filter), reach no plugin. With no plugin selected for a
port, its plans are the same as without the feature: ``at_port`` returns
the plain ``PortDecider``, and :15006 tests one flag it already tested.

Istio's inbound side never retries and sets no timeout; neither does this.
The cluster names carry the Service that selects this pod on that port (from
the snapshot, ``services_from_snapshot``), so ``reporter="destination"``
metrics name ``destination_service``.

What must not live here: sockets, the event loop (the engine, ``proxy.server``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from meshwork.core.http1 import Request
from meshwork.core.mesh.flags import local_reply
from meshwork.proxy import plan
from meshwork.proxy.plugins import (
    SERVER,
    Hooks,
    Plugin,
    PluginChain,
    ResponseHooks,
    plugin_request,
    request_fields,
    run_request,
)

__all__ = [
    "INBOUND_PORT",
    "INBOUND_PORT_HEADER",
    "PROXY_PORTS",
    "AppPort",
    "InboundDecider",
    "PluggedPortDecider",
    "PortDecider",
    "opaque_ports",
    "parse_pod_ports",
    "services_from_snapshot",
]

INBOUND_PORT = 15006
INBOUND_PORT_HEADER = b"x-meshwork-inbound-port"
# Istio's reserved proxy ports (admin, outbound, debug, inbound, tunnel,
# merged metrics, health, Envoy's prometheus): never an app's, never forwarded to.
PROXY_PORTS = frozenset({15000, 15001, 15004, 15006, 15008, 15020, 15021, 15090})
PASSTHROUGH = "InboundPassthroughClusterIpv4"
# Istio's protocols that are not HTTP: a captured port of one of these is spliced as TCP.
OPAQUE_PROTOCOLS = frozenset({"tcp", "tls", "https", "mongo", "mysql", "redis"})
_REMOVE = plan.HeaderEdits(remove=(INBOUND_PORT_HEADER,))
# Status 0: the engine closes the connection without an answer (Envoy's STRICT filter chain sends none).
_REFUSED = plan.DirectResponse(status=0, reason="plaintext request for an app port whose mTLS mode is STRICT")


@dataclass(frozen=True, slots=True)
class AppPort:
    """One declared container port of the app (TCP only: the inbound listener speaks HTTP)."""

    port: int
    name: str = ""


def parse_pod_ports(text: str | None) -> tuple[AppPort, ...]:
    """The TCP ports in ``ISTIO_META_POD_PORTS`` (a JSON list of ``ContainerPort``), sorted, once each.

    Empty or absent text is no ports; anything else that is not that JSON shape raises ValueError.
    """
    if not text or not text.strip():
        return ()
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"ISTIO_META_POD_PORTS is not JSON: {exc}") from exc
    if not isinstance(raw, list):
        raise ValueError("ISTIO_META_POD_PORTS must be a JSON list of container ports")
    out: dict[int, AppPort] = {}
    for i, item in enumerate(raw):
        port = item.get("containerPort") if isinstance(item, dict) else None
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ValueError(f"ISTIO_META_POD_PORTS[{i}]: containerPort must be a port number, got {port!r}")
        if str(item.get("protocol") or "TCP").upper() != "TCP":
            continue
        out.setdefault(port, AppPort(port, str(item.get("name") or "")))
    return tuple(out[p] for p in sorted(out))


def _opaque(name: str, app_protocol: object) -> bool:
    candidate = str(app_protocol or name.split("-", 1)[0]).lower()
    return candidate in OPAQUE_PROTOCOLS


def opaque_ports(raw: Mapping[str, Any], pod_ip: str, ports: Iterable[AppPort] = ()) -> frozenset[int]:
    """The app ports that do not speak HTTP, by Istio's protocol selection (``appProtocol``, else the
    port name's prefix): a declared container port's name, or a Service port that sends there."""
    found = {p.port for p in ports if _opaque(p.name, None)}
    for svc in raw.get("services") or []:
        mine = [ep for ep in svc.get("endpoints") or [] if ep.get("ip") == pod_ip]
        for sp in svc.get("ports") or []:
            if not _opaque(str(sp.get("name") or ""), sp.get("appProtocol")):
                continue
            for ep in mine:
                number = (ep.get("ports") or {}).get(str(sp.get("name") or ""))
                if isinstance(number, int):
                    found.add(number)
    return frozenset(found)


def services_from_snapshot(raw: Mapping[str, Any], pod_ip: str) -> dict[int, str]:
    """Container port -> the FQDN of the Service that sends it traffic (first by name when several).

    Read from a snapshot's wire form: the Services with this pod's IP among
    their endpoints, and the port numbers each endpoint lists.
    """
    domain = str(raw.get("domain") or "cluster.local")
    found: dict[int, list[str]] = {}
    for svc in raw.get("services") or []:
        host = f"{svc.get('name')}.{svc.get('namespace')}.svc.{domain}"
        for ep in svc.get("endpoints") or []:
            if ep.get("ip") != pod_ip:
                continue
            for port in (ep.get("ports") or {}).values():
                if isinstance(port, int):
                    found.setdefault(port, []).append(host)
    return {port: sorted(hosts)[0] for port, hosts in found.items()}


class _AppCluster:
    """One app port: a cluster of one endpoint, with Istio's inbound cluster name."""

    __slots__ = ("endpoint", "limits", "name")

    def __init__(self, name: str, endpoint: plan.Endpoint) -> None:
        self.name = name
        self.limits = plan.DEFAULT_LIMITS
        self.endpoint = endpoint

    def pick(self, exclude: frozenset[plan.Endpoint]) -> plan.Endpoint | None:
        return self.endpoint

    def release(self, endpoint: plan.Endpoint, outcome: plan.Outcome) -> None:
        pass


def _reply(flag: str, detail: str) -> plan.DirectResponse:
    lr = local_reply(flag, detail)
    headers = ((b"content-type", b"text/plain"),) if lr.body else ()
    return plan.DirectResponse(status=lr.status, body=lr.body, headers=headers, flag=flag, reason=lr.reason)


class InboundDecider:
    """Sends each request to ``pod_ip`` on the app port it names (or the only one); no retries."""

    def __init__(
        self,
        pod_ip: str,
        ports: Iterable[AppPort],
        services: Mapping[int, str] | None = None,
        refuses_plaintext: Callable[[int], bool] | None = None,
        *,
        app_ip: str | None = None,
        plugins: Iterable[Plugin] = (),
    ) -> None:
        self.pod_ip = pod_ip
        # Where the app listens: its own address when the sidecar captures the pod IP's ports.
        self.app_ip = app_ip or pod_ip
        # PeerAuthentication with ports in different modes (``proxy.meshtls``): the listener is
        # PERMISSIVE and a plaintext request for a STRICT app port is refused here.
        self.refuses_plaintext = refuses_plaintext
        chain = PluginChain(list(plugins), SERVER)
        self.plugins = chain if chain else None  # the SERVER side's ProxyPlugins, if any
        # Whether a forward needs a second look (plaintext refusal, plugins): one test when it does not.
        self._checked = refuses_plaintext is not None or self.plugins is not None
        services = services or {}
        declared = {p.port: p for p in ports if p.port not in PROXY_PORTS}  # the proxy's own: never the app's
        for port in services:  # a Service's targetPort is an app port even when not declared (as in Istio)
            if port not in PROXY_PORTS:
                declared.setdefault(port, AppPort(port))
        self.ports = tuple(declared[p] for p in sorted(declared))
        self.clusters: dict[int, _AppCluster] = {
            p.port: _AppCluster(f"inbound|{p.port}||{services.get(p.port, '')}", plan.Endpoint(self.app_ip, p.port))
            for p in self.ports
        }
        self._forwards = {port: plan.Forward(cluster=c, request_headers=_REMOVE) for port, c in self.clusters.items()}
        self._only = self._forwards[self.ports[0].port] if len(self.ports) == 1 else None
        self._passthrough: dict[int, plan.Forward] = {}

    def decide(self, request: Request, downstream: plan.Downstream) -> plan.Plan:
        chosen = self._decide(request)
        if self._checked and type(chosen) is plan.Forward:
            endpoint = getattr(chosen.cluster, "endpoint", None)
            if endpoint is None:
                return chosen
            refuses = self.refuses_plaintext
            if refuses is not None and not downstream.tls and refuses(endpoint.port):
                return _REFUSED
            if self.plugins is not None:
                hooks = self.plugins.at(endpoint.port)
                if hooks.plugins:
                    return plugged(request, chosen, hooks)
        return chosen

    def _decide(self, request: Request) -> plan.Plan:
        wanted: bytes | None = None
        for name, value in request.headers:
            if len(name) == len(INBOUND_PORT_HEADER) and name.lower() == INBOUND_PORT_HEADER:
                wanted = value.strip()
                break
        if wanted is None:
            if self._only is not None:
                return self._only
            if not self.ports:
                return _reply("UH", "the pod declares no TCP container port (ISTIO_META_POD_PORTS) "
                                    "and the request names none (x-meshwork-inbound-port)")  # fmt: skip
            listed = ", ".join(str(p.port) for p in self.ports)
            return _reply("NR", f"the pod declares ports {listed} and the request names none "
                                "(x-meshwork-inbound-port)")  # fmt: skip
        port = int(wanted) if wanted.isdigit() and len(wanted) <= 5 else 0
        forward = self._forwards.get(port)
        if forward is not None:
            return forward
        if not 0 < port < 65536 or port in PROXY_PORTS:
            text = wanted.decode("latin-1")
            return _reply("NR", f"x-meshwork-inbound-port {text!r} is not an app port of this pod")
        forward = self._passthrough.get(port)
        if forward is None:
            cluster = _AppCluster(PASSTHROUGH, plan.Endpoint(self.app_ip, port))
            forward = self._passthrough[port] = plan.Forward(cluster=cluster, request_headers=_REMOVE)
        return forward

    def at_port(self, port: int) -> PortDecider:
        """The decider of a capture listener on ``$POD_IP:<port>``: every request goes to that app port
        (through the SERVER side's plugins for that port, when any)."""
        forward = self._forwards.get(port)
        if forward is None:
            forward = plan.Forward(cluster=self.cluster_at(port), request_headers=_REMOVE)
        hooks = self.plugins.at(port) if self.plugins is not None else None
        if hooks is not None and hooks.plugins:
            return PluggedPortDecider(port, forward, hooks)
        return PortDecider(port, forward)

    def cluster_at(self, port: int) -> _AppCluster:
        """The app port's cluster (one endpoint: the app), also for a TCP splice of an opaque port."""
        found = self.clusters.get(port)
        return found if found is not None else _AppCluster(f"inbound|{port}||", plan.Endpoint(self.app_ip, port))


class PortDecider:
    """One captured app port: the listener says which port, so no header is needed (one is removed)."""

    __slots__ = ("forward", "port")

    def __init__(self, port: int, forward: plan.Forward) -> None:
        self.port = port
        self.forward = forward

    def decide(self, request: Request, downstream: plan.Downstream) -> plan.Plan:
        return self.forward


class PluggedPortDecider(PortDecider):
    """A captured app port whose requests pass the SERVER side's plugins."""

    __slots__ = ("hooks",)

    def __init__(self, port: int, forward: plan.Forward, hooks: Hooks) -> None:
        super().__init__(port, forward)
        self.hooks = hooks

    def decide(self, request: Request, downstream: plan.Downstream) -> plan.Plan:
        return plugged(request, self.forward, self.hooks)


def plugged(request: Request, forward: plan.Forward, hooks: Hooks) -> plan.Plan:
    """``forward`` after the plugins' ``on_request`` (an answer, or headers for the app), with their
    ``on_response`` on the app's response. A failing hook is skipped (``run_request`` fail-open)."""
    view = plugin_request(request)
    reply = run_request(hooks.plugins, view, fail_open=True)
    if reply is not None:
        return plan.DirectResponse(status=reply.status, body=reply.body, headers=reply.headers,
                                   reason=f"answered by ProxyPlugin {reply.plugin}")  # fmt: skip
    extra = request_fields(view.headers_to_add)  # already checked hook by hook: valid
    on_response = ResponseHooks(hooks.responders, view, forward.response_headers) if hooks.responders else None
    if not extra and on_response is None:
        return forward
    edits = forward.request_headers
    if extra:
        edits = plan.HeaderEdits(set=(edits.set if edits else ()) + extra, add=edits.add if edits else (),
                                 remove=edits.remove if edits else ())  # fmt: skip
    return dataclasses.replace(forward, request_headers=edits, on_response=on_response)

"""The environment Kubernetes builds for a container, and ``$(VAR)`` expansion.

What lives here (kubelet ``makeEnvironmentVariables`` and its helpers, pure):

* ``expand`` / ``mapping_for``: upstream's ``third_party/forked/golang/expansion``:
  ``$(VAR)`` is replaced when VAR is known, kept literally when not;
  ``$$`` is an escaped ``$`` (so ``$$(VAR)`` gives ``$(VAR)``); a lone ``$``
  or an unterminated ``$(`` stays as written.
* ``service_env``: the Docker-links style service variables
  (``REVIEWS_SERVICE_HOST``, ``REVIEWS_PORT_9080_TCP_ADDR`` ...) for Services
  in the pod's namespace when ``enableServiceLinks``, and always those of
  ``default/kubernetes``.
* ``container_env``: envFrom (ConfigMap / Secret, prefix, optional, invalid
  names skipped with an ``InvalidEnvironmentVariableNames`` event), then env
  (value with ``$(VAR)`` expansion over what was defined before it and the
  service variables; fieldRef; resourceFieldRef; configMapKeyRef /
  secretKeyRef), then the service variables the container did not define.
* ``expand_command``: ``command`` and ``args`` expanded over the final env.

What must not: reading ConfigMaps or Secrets (they are passed in), files,
processes, the DESIGN.md proxy variables (the agent adds those).

Ordering: upstream builds the env in a Go map, so its order is unspecified.
Here it is deterministic: envFrom keys (each source's keys sorted, a later
source overriding a value in place), then ``env`` in declaration order (a
redefined name keeps its first position and takes the new value), then the
service variables, Services sorted by name.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from meshwork.core.restart import ContainerEvent
from meshwork.model.base import Quantity
from meshwork.model.core import ConfigMap, Secret, Service
from meshwork.model.pod import (
    Container,
    EnvVarSource,
    ObjectFieldSelector,
    Pod,
    ResourceFieldSelector,
    parse_quantity,
)

# Upstream IsEnvVarName (before RelaxedEnvironmentVariableValidation): a C-ish identifier
# that may also hold '-' and '.'. The relaxed rule (default since 1.34) is any printable
# ASCII except '='.
_STRICT_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
MASTER_SERVICES = frozenset(
    {"kubernetes"}
)  # kubelet masterServices: always exported from "default"
MASTER_NAMESPACE = "default"

Mapping_ = Callable[[str], str]
ConfigData = ConfigMap | Mapping[str, str]
SecretData = Secret | Mapping[str, bytes]


# ---------------------------------------------------------------------------
# $(VAR) expansion
# ---------------------------------------------------------------------------


def mapping_for(*contexts: Mapping[str, str]) -> Mapping_:
    """Look a name up in each context in turn; an unknown name maps to ``$(name)`` itself."""

    def lookup(name: str) -> str:
        for ctx in contexts:
            if name in ctx:
                return ctx[name]
        return f"$({name})"

    return lookup


def expand(text: str, mapping: Mapping_) -> str:
    """Expand ``$(VAR)`` references in ``text`` exactly as Kubernetes does."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    n = len(text)
    while cursor < n:
        if text[cursor] == "$" and cursor + 1 < n:
            out.append(text[checkpoint:cursor])
            nxt = text[cursor + 1]
            advance = 1
            if nxt == "$":
                out.append("$")  # escaped operator
            elif nxt == "(":
                close = text.find(")", cursor + 2)
                if close == -1:
                    out.append("$(")  # incomplete reference: kept as written
                else:
                    out.append(mapping(text[cursor + 2 : close]))
                    advance = close - cursor
            else:
                out.append("$" + nxt)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


# ---------------------------------------------------------------------------
# Service variables
# ---------------------------------------------------------------------------


def env_var_name(name: str) -> str:
    """Upstream ``makeEnvVariableName``: upper case, '-' -> '_'."""
    return name.replace("-", "_").upper()


def _service_ip_set(svc: Service) -> bool:
    ip = svc.spec.cluster_ip
    return bool(ip) and ip != "None"


def service_vars(svc: Service) -> list[tuple[str, str]]:
    """The variables one Service contributes (upstream ``envvars.FromServices``)."""
    ports = svc.spec.ports or []
    ip = svc.spec.cluster_ip or ""
    if not _service_ip_set(svc) or not ports:
        return []
    prefix = env_var_name(svc.metadata.name or "")
    out = [(f"{prefix}_SERVICE_HOST", ip), (f"{prefix}_SERVICE_PORT", str(ports[0].port))]
    out += [(f"{prefix}_SERVICE_PORT_{env_var_name(p.name)}", str(p.port)) for p in ports if p.name]
    host = f"[{ip}]" if ":" in ip else ip
    for i, p in enumerate(ports):
        proto = p.protocol.lower()
        url = f"{proto}://{host}:{p.port}"
        if i == 0:
            out.append((f"{prefix}_PORT", url))
        base = f"{prefix}_PORT_{p.port}_{p.protocol.upper()}"
        out += [
            (base, url),
            (f"{base}_PROTO", proto),
            (f"{base}_PORT", str(p.port)),
            (f"{base}_ADDR", ip),
        ]
    return out


def service_env(
    services: Sequence[Service], namespace: str, enable_service_links: bool
) -> list[tuple[str, str]]:
    """Service variables for a pod in ``namespace`` (kubelet ``getServiceEnvVarMap``).

    Services without a cluster IP (headless, ExternalName) give none. A Service
    of the pod's own namespace wins over ``default/kubernetes`` of the same name.
    """
    chosen: dict[str, Service] = {}
    for svc in services:
        name = svc.metadata.name or ""
        if not _service_ip_set(svc):
            continue
        if svc.metadata.namespace == MASTER_NAMESPACE and name in MASTER_SERVICES:
            chosen.setdefault(name, svc)
        elif svc.metadata.namespace == namespace and enable_service_links:
            chosen[name] = svc
    out: list[tuple[str, str]] = []
    for name in sorted(chosen):
        out += service_vars(chosen[name])
    return out


# ---------------------------------------------------------------------------
# Field and resource references
# ---------------------------------------------------------------------------

_SUBSCRIPT = re.compile(r"^(metadata\.(?:labels|annotations))\['(.*)'\]$")


def field_value(
    sel: ObjectFieldSelector, pod: Pod, pod_ips: Sequence[str], host_ips: Sequence[str]
) -> str:
    """A ``fieldRef`` value; raises ValueError("unsupported fieldPath: ...") for others."""
    path = sel.field_path
    meta, spec = pod.metadata, pod.spec
    simple = {
        "metadata.name": meta.name or "",
        "metadata.namespace": meta.namespace or "",
        "metadata.uid": meta.uid or "",
        "spec.nodeName": spec.node_name or "",
        "spec.serviceAccountName": spec.service_account_name or "",
        "status.podIP": pod_ips[0] if pod_ips else "",
        "status.podIPs": ",".join(pod_ips),
        "status.hostIP": host_ips[0] if host_ips else "",
        "status.hostIPs": ",".join(host_ips),
    }
    if path in simple:
        return simple[path]
    m = _SUBSCRIPT.match(path)
    if m:
        source = meta.labels if m.group(1) == "metadata.labels" else meta.annotations
        return (source or {}).get(m.group(2), "")
    raise ValueError(f"unsupported fieldPath: {path}")


def _milli(q: Decimal) -> int:
    return math.ceil(q * 1000)


def resource_value(
    sel: ResourceFieldSelector,
    pod: Pod,
    container: Container,
    node_allocatable: Mapping[str, Quantity],
) -> str:
    """A ``resourceFieldRef`` value: ceil(value / divisor); unset limits default to the node's
    allocatable (upstream ``defaultPodLimitsForDownwardAPI``)."""
    target = container
    if sel.container_name:
        for c in pod.spec.all_containers():
            if c.name == sel.container_name:
                target = c
                break
        else:
            raise ValueError(f"container {sel.container_name} not found")
    kind, _, name = sel.resource.partition(".")
    if kind not in ("limits", "requests") or name not in ("cpu", "memory", "ephemeral-storage"):
        raise ValueError(f"unsupported container resource : {sel.resource}")
    values = (target.resources.limits if kind == "limits" else target.resources.requests) or {}
    raw = values.get(name)
    if raw is None and kind == "limits":
        raw = node_allocatable.get(name)
    value = parse_quantity(raw) if raw is not None else Decimal(0)
    divisor = parse_quantity(sel.divisor) if sel.divisor not in (None, "0", 0) else Decimal(1)
    if divisor == 0:
        divisor = Decimal(1)
    if name == "cpu":
        return str(math.ceil(Decimal(_milli(value)) / Decimal(_milli(divisor))))
    return str(math.ceil(Decimal(math.ceil(value)) / Decimal(math.ceil(divisor))))


# ---------------------------------------------------------------------------
# The container environment
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContainerEnv:
    """The built environment: ordered ``(name, value)`` pairs, the problems that stop the
    container from starting (the agent reports ``problems[0]`` as CreateContainerConfigError,
    as upstream stops at the first), and events to record on the pod."""

    env: tuple[tuple[str, str], ...]
    problems: tuple[str, ...] = ()
    events: tuple[ContainerEvent, ...] = ()

    def as_dict(self) -> dict[str, str]:
        return dict(self.env)


def env_name_error(name: str, *, relaxed: bool = True) -> bool:
    """Whether ``name`` is refused as an env var name (upstream IsEnvVarName / IsRelaxedEnvVarName)."""
    if relaxed:
        return not name or "=" in name or any(not " " <= ch <= "~" for ch in name)
    return not _STRICT_ENV_NAME.match(name) or name == "." or name.startswith("..")


def _config_data(obj: ConfigData) -> dict[str, str]:
    if isinstance(obj, ConfigMap):
        data = dict(obj.data or {})
        for k, v in (obj.binary_data or {}).items():
            data.setdefault(k, base64.b64decode(v).decode("utf-8", "replace"))
        return data
    return dict(obj)


def _secret_data(obj: SecretData) -> dict[str, str]:
    raw = obj.decoded() if isinstance(obj, Secret) else obj
    return {k: v.decode("utf-8", "replace") for k, v in raw.items()}


def container_env(
    pod: Pod,
    container: Container,
    *,
    config_maps: Mapping[str, ConfigData] | None = None,
    secrets: Mapping[str, SecretData] | None = None,
    services: Sequence[Service] = (),
    pod_ips: Sequence[str] | None = None,
    host_ips: Sequence[str] | None = None,
    node_allocatable: Mapping[str, Quantity] | None = None,
    relaxed_names: bool = True,
) -> ContainerEnv:
    """The environment of ``container`` in ``pod`` (kubelet ``makeEnvironmentVariables``).

    ``config_maps`` / ``secrets`` hold the objects of the pod's namespace by
    name (models, or plain ``{key: value}`` dicts); a name missing there does
    not exist. ``pod_ips`` / ``host_ips`` default to the pod's status.
    """
    ns = pod.metadata.namespace or ""
    cms, secs = config_maps or {}, secrets or {}
    status = pod.status
    if pod_ips is None:
        pod_ips = [p.ip for p in status.pod_ips or ()] if status and status.pod_ips else (
            [status.pod_ip] if status and status.pod_ip else [])  # fmt: skip
    if host_ips is None:
        host_ips = [p.ip for p in status.host_ips or ()] if status and status.host_ips else (
            [status.host_ip] if status and status.host_ip else [])  # fmt: skip
    svc_env = dict(service_env(services, ns, pod.spec.enable_service_links is not False))
    env: dict[str, str] = {}
    problems: list[str] = []
    events: list[ContainerEvent] = []

    def lookup(kind: str, name: str, optional: bool) -> dict[str, str] | None:
        if kind == "configmap":
            cm = cms.get(name)
            if cm is not None:
                return _config_data(cm)
        else:
            secret = secs.get(name)
            if secret is not None:
                return _secret_data(secret)
        if not optional:
            problems.append(f'{kind} "{name}" not found')
        return None

    for source in container.env_from or ():
        ref = source.config_map_ref or source.secret_ref
        kind = "configmap" if source.config_map_ref is not None else "secret"
        name = (ref.name if ref else None) or ""
        data = lookup(kind, name, bool(ref and ref.optional))
        if data is None:
            continue
        invalid: list[str] = []
        for key in sorted(data):
            full = (source.prefix or "") + key
            if env_name_error(full, relaxed=relaxed_names):
                invalid.append(full)
                continue
            env[full] = data[key]
        if invalid:
            what = "configMap" if kind == "configmap" else "secret"
            events.append(ContainerEvent(
                "Warning", "InvalidEnvironmentVariableNames",
                f"Keys [{', '.join(sorted(invalid))}] from the EnvFrom {what} {ns}/{name} were skipped "
                "since they are considered invalid environment variable names.",
            ))  # fmt: skip

    for var in container.env or ():
        value: str | None = var.value or ""
        src = var.value_from
        if var.value:
            value = expand(var.value, mapping_for(env, svc_env))
        elif src is not None:
            value = _value_from(src, pod, container, ns, lookup, pod_ips, host_ips,
                                node_allocatable or {}, problems)  # fmt: skip
            if value is None:
                continue
        env[var.name] = value or ""

    result = list(env.items())
    result += [(k, v) for k, v in svc_env.items() if k not in env]
    return ContainerEnv(env=tuple(result), problems=tuple(problems), events=tuple(events))


def _value_from(
    src: EnvVarSource,
    pod: Pod,
    container: Container,
    ns: str,
    lookup: Callable[[str, str, bool], dict[str, str] | None],
    pod_ips: Sequence[str],
    host_ips: Sequence[str],
    node_allocatable: Mapping[str, Quantity],
    problems: list[str],
) -> str | None:
    """One ``valueFrom``; None when the variable is left out (optional source missing, or a problem)."""
    try:
        if src.field_ref is not None:
            return field_value(src.field_ref, pod, pod_ips, host_ips)
        if src.resource_field_ref is not None:
            return resource_value(src.resource_field_ref, pod, container, node_allocatable)
    except ValueError as exc:
        problems.append(str(exc))
        return None
    ref = src.config_map_key_ref or src.secret_key_ref
    if ref is None:  # pragma: no cover - the model requires exactly one source
        return None
    kind = "configmap" if src.config_map_key_ref is not None else "secret"
    name, optional = ref.name or "", bool(ref.optional)
    data = lookup(kind, name, optional)
    if data is None:
        return None
    if ref.key not in data:
        if not optional:
            title = "ConfigMap" if kind == "configmap" else "Secret"
            problems.append(f"couldn't find key {ref.key} in {title} {ns}/{name}")
        return None
    return data[ref.key]


def expand_command(
    container: Container, env: Sequence[tuple[str, str]]
) -> tuple[list[str], list[str]]:
    """``command`` and ``args`` with ``$(VAR)`` expanded over the final env
    (upstream ``ExpandContainerCommandAndArgs``)."""
    mapping = mapping_for(dict(env))
    return ([expand(c, mapping) for c in container.command or ()],
            [expand(a, mapping) for a in container.args or ()])  # fmt: skip

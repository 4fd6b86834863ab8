"""Turning what a user types (``po``, ``deploy,svc``, ``vs.networking.istio.io``,
``pod/web-1``, ``all``) into kinds, the way kubectl resolves resource names.

What lives here: loading every model module so the registry is full, name
resolution with kubectl's preference for the core group, the expansion of
``all``, and the ``kind.group`` label kubectl prints (``deployment.apps``).

What must not live here: HTTP or printing.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshwork.errors import MeshworkError
from meshwork.model.kinds import REGISTRY, KindInfo, Registry

# What ``get all`` lists, in kubectl's order (kinds meshwork does not serve are skipped).
ALL_CATEGORY: tuple[tuple[str, str], ...] = (
    ("", "pods"),
    ("", "services"),
    ("apps", "daemonsets"),
    ("apps", "deployments"),
    ("apps", "replicasets"),
    ("batch", "jobs"),
    ("batch", "cronjobs"),
)

# When one name matches kinds in several groups, the first group in this list
# wins (kubectl prefers the core group, then the built-in groups).
GROUP_PREFERENCE: tuple[str, ...] = (
    "",
    "apps",
    "batch",
    "autoscaling",
    "rbac.authorization.k8s.io",
    "networking.istio.io",
    "security.istio.io",
    "argoproj.io",
)


class UnknownKind(MeshworkError):
    """The user named a resource type meshwork does not serve."""


@dataclass(frozen=True, slots=True)
class Target:
    """One kind and the names asked for (empty: every object of the kind)."""

    info: KindInfo
    names: tuple[str, ...] = ()


def load_kinds() -> Registry:
    """The kind registry. Names, groups and versions come from the kind index,
    so no model is imported until one is used (``KindInfo.model``)."""
    return REGISTRY


def kind_label(info: KindInfo) -> str:
    """``pod``, ``deployment.apps``, ``virtualservice.networking.istio.io``: kubectl's name for a kind."""
    kind = info.kind.lower()
    return f"{kind}.{info.group}" if info.group else kind


def _group_rank(info: KindInfo) -> tuple[int, str]:
    try:
        return (GROUP_PREFERENCE.index(info.group), info.group)
    except ValueError:
        return (len(GROUP_PREFERENCE), info.group)


def resolve_kind(name: str, registry: Registry = REGISTRY) -> KindInfo:
    """The kind ``name`` means: plural, singular, short name, or any of those with ``.group``."""
    matches = registry.for_name(name.strip())
    if not matches:
        raise UnknownKind(f'the server doesn\'t have a resource type "{name}"')
    return min(matches, key=_group_rank)


def expand_kinds(spec: str, registry: Registry = REGISTRY) -> list[KindInfo]:
    """``deploy,svc`` or ``all`` as kinds, in order, without repeats."""
    out: list[KindInfo] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            raise UnknownKind(f"empty resource type in {spec!r}")
        if part.lower() == "all":
            infos = [i for g, p in ALL_CATEGORY if (i := registry.for_resource(g, p)) is not None]
        else:
            infos = [resolve_kind(part, registry)]
        for info in infos:
            if info not in out:
                out.append(info)
    return out


def parse_targets(args: tuple[str, ...] | list[str], registry: Registry = REGISTRY) -> list[Target]:
    """The ``get``/``describe``/``delete`` arguments as targets.

    Either ``KIND[,KIND...] [NAME...]`` or ``KIND/NAME [KIND/NAME...]``, as kubectl accepts.
    """
    if not args:
        raise UnknownKind("you must specify the type of resource")
    if "/" in args[0]:
        targets: list[Target] = []
        for arg in args:
            kind, sep, name = arg.partition("/")
            if not sep or not kind or not name or "/" in name:
                raise UnknownKind(
                    f"there is no need to specify a resource type as a separate argument when "
                    f"passing arguments in resource/name form (got {arg!r})"
                )
            info = resolve_kind(kind, registry)
            for i, t in enumerate(targets):
                if t.info == info:
                    targets[i] = Target(info, (*t.names, name))
                    break
            else:
                targets.append(Target(info, (name,)))
        return targets
    infos = expand_kinds(args[0], registry)
    names = tuple(args[1:])
    for name in names:
        if "/" in name:
            raise UnknownKind(
                f"arguments in resource/name form must have a single resource and name (got {name!r})"
            )
    # kubectl: `get pods,svc web` looks for web of each kind.
    return [Target(i, names) for i in infos]

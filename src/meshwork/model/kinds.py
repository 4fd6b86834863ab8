"""Which kinds exist and how they are named: pure data, no pydantic.

Everything that only needs a kind's names (the CLI's ``get``, ``delete``,
``describe``; the API server's routing and discovery) reads it from here,
without building a single model. ``REGISTRY`` is filled at import from
``_index.py``, a generated table of every kind; a kind's pydantic model is
imported the first time ``KindInfo.model`` is read, and the model module's
own ``REGISTRY.register(...)`` call attaches it. A test regenerates the
index from the models and fails when the two disagree
(``MESHWORK_KIND_INDEX=off python -m meshwork.model.kinds --write``
rewrites it).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:
    from meshwork.model.base import Resource

NameRule = Literal["subdomain", "label", "path"]


def api_version_of(group: str, version: str) -> str:
    return f"{group}/{version}" if group else version


def split_api_version(api_version: str) -> tuple[str, str]:
    """``apps/v1`` -> (``apps``, ``v1``); ``v1`` -> (``""``, ``v1``)."""
    group, _, version = api_version.rpartition("/")
    return group, version


class KindInfo:
    """How one kind is named, versioned and stored.

    ``versions[0]`` is the storage (preferred) version; every listed version is
    served and accepted on input, and objects are stored at the preferred one.
    ``model`` is the pydantic model, imported from ``module`` on first use.
    """

    __slots__ = (
        "_api_version",
        "_model",
        "_resource",
        "categories",
        "group",
        "has_status",
        "kind",
        "module",
        "name_rule",
        "namespaced",
        "plural",
        "short_names",
        "singular",
        "versions",
    )

    def __init__(
        self,
        *,
        group: str,
        versions: tuple[str, ...],
        kind: str,
        plural: str,
        singular: str,
        model: type[Resource] | None = None,
        namespaced: bool = True,
        short_names: tuple[str, ...] = (),
        has_status: bool = True,
        name_rule: NameRule = "subdomain",
        categories: tuple[str, ...] = (),
        module: str | None = None,
    ) -> None:
        self.group = group
        self.versions = tuple(versions)
        self.kind = kind
        self.plural = plural
        self.singular = singular
        self.namespaced = namespaced
        self.short_names = tuple(short_names)
        self.has_status = has_status
        self.name_rule: NameRule = name_rule
        self.categories = tuple(categories)
        self._model = model
        self.module = module or (model.__module__ if model is not None else None)
        # Read on every request and every watch event: made once.
        self._api_version = api_version_of(group, self.versions[0])
        self._resource = f"{plural}.{group}" if group else plural

    def __repr__(self) -> str:
        return f"KindInfo({self.api_version} {self.kind})"

    @property
    def model(self) -> type[Resource]:
        if self._model is None:
            if self.module is None:
                raise LookupError(f"no model is known for {self.kind}")
            importlib.import_module(self.module)  # its register() call attaches the model
            if self._model is None:
                raise LookupError(f"{self.module} did not register {self.kind}")
        return self._model

    def metadata(self) -> tuple[Any, ...]:
        """Everything but the model: what the generated index records."""
        return (
            self.group, self.versions, self.kind, self.plural, self.singular, self.namespaced,
            self.short_names, self.has_status, self.name_rule, self.categories, self.module,
        )

    @property
    def preferred_version(self) -> str:
        return self.versions[0]

    @property
    def api_version(self) -> str:
        """The preferred ``apiVersion`` string: ``v1`` or ``group/version``."""
        return self._api_version

    @property
    def resource(self) -> str:
        """``plural`` for the core group, ``plural.group`` otherwise (kubectl's full name)."""
        return self._resource

    def api_versions(self) -> tuple[str, ...]:
        return tuple(api_version_of(self.group, v) for v in self.versions)


class Registry:
    """Every kind meshwork knows, found by apiVersion+kind or by any of its names."""

    def __init__(self, index: Iterable[KindInfo] = ()) -> None:
        self._by_gvk: dict[tuple[str, str, str], KindInfo] = {}
        self._by_group_kind: dict[tuple[str, str], KindInfo] = {}
        self._by_name: dict[str, list[KindInfo]] = {}
        self._by_group_plural: dict[tuple[str, str], KindInfo] = {}
        for info in index:
            self._add(info)

    def _add(self, info: KindInfo) -> None:
        for version in info.versions:
            self._by_gvk[(info.group, version, info.kind)] = info
        self._by_group_kind[(info.group, info.kind)] = info
        self._by_group_plural[(info.group, info.plural)] = info
        names = {info.plural, info.singular, info.kind.lower(), *info.short_names}
        for name in names:
            for alias in (name, f"{name}.{info.group}" if info.group else name):
                bucket = self._by_name.setdefault(alias.lower(), [])
                if info not in bucket:
                    bucket.append(info)

    def register(self, info: KindInfo) -> KindInfo:
        """Attach a model to its kind (adding the kind when the index lacks it).

        A kind already known from the index keeps its one ``KindInfo`` object,
        so every holder of it sees the model; names that disagree with the
        index are an error, caught by the index test before they ship.
        """
        model = info._model
        if model is None:
            raise ValueError(f"register({info.kind}) needs a model")
        known = self._by_group_kind.get((info.group, info.kind))
        if known is None:
            self._add(info)
            known = info
        elif known.metadata() != info.metadata():
            raise ValueError(
                f"{info.kind}: the kind index is out of date ({known.metadata()} != {info.metadata()}); "
                "run: MESHWORK_KIND_INDEX=off python -m meshwork.model.kinds --write"
            )
        known._model = model
        model.info = known
        return known

    def for_api_version(self, api_version: str, kind: str) -> KindInfo | None:
        group, version = split_api_version(api_version)
        return self._by_gvk.get((group, version, kind))

    def for_group_kind(self, group: str, kind: str) -> KindInfo | None:
        return self._by_group_kind.get((group, kind))

    def require(self, group: str, kind: str) -> KindInfo:
        """A built-in kind; a LookupError means a broken install, not bad input."""
        info = self.for_group_kind(group, kind)
        if info is None:
            raise LookupError(f"this meshwork does not know the kind {kind}.{group or 'core'}")
        return info

    def for_resource(self, group: str, plural: str) -> KindInfo | None:
        """The kind served at ``/apis/{group}/{version}/{plural}``."""
        return self._by_group_plural.get((group, plural))

    def for_name(self, name: str) -> list[KindInfo]:
        """Kinds a CLI user may mean by ``name``: plural, singular, short name or ``name.group``.

        More than one result means the name is ambiguous across groups; the
        caller picks the core group first, as kubectl does.
        """
        return list(self._by_name.get(name.lower(), []))

    def known_kinds(self) -> list[KindInfo]:
        return sorted(set(self._by_group_kind.values()), key=lambda i: (i.group, i.kind))

    def kinds_for(self, api_version: str) -> list[KindInfo]:
        group, version = split_api_version(api_version)
        return sorted(
            {i for (g, v, _), i in self._by_gvk.items() if g == group and v == version},
            key=lambda i: i.kind,
        )

    def load_all(self) -> None:
        """Import every kind's model now (a server does, so no request pays for it)."""
        for info in self.known_kinds():
            _ = info.model


# Set to "off" to start without the index: the model modules then register
# every kind afresh, which is how the index itself is (re)generated.
INDEX_SWITCH = "MESHWORK_KIND_INDEX"


def _load_index() -> list[KindInfo]:
    if os.environ.get(INDEX_SWITCH) == "off":
        return []
    try:
        from meshwork.model._index import KINDS
    except ImportError:  # not generated yet: fall back to registration by import
        return []
    return [
        KindInfo(
            group=g, versions=v, kind=k, plural=p, singular=s, namespaced=ns,
            short_names=sn, has_status=st, name_rule=cast(NameRule, nr), categories=c, module=m,
        )
        for (g, v, k, p, s, ns, sn, st, nr, c, m) in KINDS
    ]


REGISTRY = Registry(_load_index())

# The modules that define kinds: importing them all registers every model.
KIND_MODULES = (
    "meshwork.model.pod",
    "meshwork.model.workloads",
    "meshwork.model.core",
    "meshwork.model.rbac",
    "meshwork.model.autoscaling",
    "meshwork.model.istio_networking",
    "meshwork.model.istio_security",
    "meshwork.model.argo_rollouts",
    "meshwork.model.argo_analysis",
    "meshwork.model.argo_workflows",
    "meshwork.model.plugins",
    "meshwork.model.ratelimit",
    "meshwork.model.kueue",
)


def render_index() -> str:
    """The text of ``_index.py`` from the kinds registered by importing every model module.

    Run with ``MESHWORK_KIND_INDEX=off`` so that the registrations, not the
    old index, decide what it says.
    """
    for name in KIND_MODULES:
        importlib.import_module(name)
    rows = [repr(info.metadata()) for info in REGISTRY.known_kinds()]
    return (
        '"""Generated by ``MESHWORK_KIND_INDEX=off python -m meshwork.model.kinds --write``.\n\n'
        "Every kind and its names, so that looking a kind up needs no model. Do not\n"
        'edit: tests/unit/model/test_kind_index.py checks it against the models.\n"""\n\n'
        "KINDS = (\n" + "".join(f"    {row},\n" for row in rows) + ")\n"
    )


if __name__ == "__main__":
    # Run as a script this file is a second module, "__main__": use the one the
    # model modules register into.
    from meshwork.model import kinds as _registered

    text = _registered.render_index()
    if "--write" in sys.argv:
        Path(__file__).with_name("_index.py").write_text(text)
    else:
        sys.stdout.write(text)

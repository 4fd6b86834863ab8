"""The columns ``kubectl get`` prints for each kind.

What lives here: the ``Column``/``KindPrinter`` shapes and the table of
printers by (group, kind). Built-in kinds follow kubectl's printers (their
cells are computed in ``cells`` and ``podstatus``); Istio and Argo kinds
follow their CRDs' ``additionalPrinterColumns``. A kind with no entry prints
``NAME AGE``.

What must not live here: HTTP, the clock, layout (see ``printers``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from meshwork.cli.cells import (
    created_at,
    cronjob_cells,
    daemonset_cells,
    deployment_cells,
    event_cells,
    format_endpoints,
    hpa_cells,
    job_cells,
    node_cells,
    replicaset_cells,
    role_binding_cells,
    service_cells_for,
)
from meshwork.cli.humanize import since
from meshwork.cli.podstatus import pod_cells
from meshwork.cli.wire import Cell, Obj, dig, obj_age, obj_name, seq, txt


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    wide: bool = False  # kubectl's Priority > 0: only with -o wide
    is_name: bool = False  # the column that gets the kind/ prefix


@dataclass(frozen=True, slots=True)
class KindPrinter:
    columns: tuple[Column, ...]
    cells: Callable[[Obj, datetime], list[Cell]]


# -- custom resources (Istio, Argo): additionalPrinterColumns ---------------------------


def crd_cell(value: Any) -> Cell:
    """A CRD column value as the API server's table convertor prints it: JSON for lists and maps."""
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    return json.dumps(value, separators=(",", ":"))


def _crd(*columns: tuple[str, tuple[str, ...], bool]) -> KindPrinter:
    """A printer from ``(HEADER, json path, wide)`` columns after NAME.

    The path ``("@age",)`` is the object's age (``metadata.creationTimestamp``);
    a path starting with ``"@date"`` is a timestamp field printed as an age, as
    a CRD column of ``type: date`` is.
    """

    def cells(obj: Obj, now: datetime) -> list[Cell]:
        out: list[Cell] = [obj_name(obj)]
        for _, path, _wide in columns:
            if path == ("@age",):
                out.append(obj_age(obj, now))
            elif path[0] == "@date":
                value = dig(obj, *path[1:])
                out.append(since(value, now) if value else None)
            else:
                out.append(crd_cell(dig(obj, *path)))
        return out

    cols = (Column("NAME", is_name=True), *(Column(h, wide=w) for h, _, w in columns))
    return KindPrinter(cols, cells)


_AGE = ("AGE", ("@age",), False)


def _simple(*names: str, wide_from: int | None = None) -> tuple[Column, ...]:
    return tuple(
        Column(n, wide=wide_from is not None and i >= wide_from, is_name=(i == 0))
        for i, n in enumerate(names)
    )


DEFAULT_PRINTER = KindPrinter(_simple("NAME", "AGE"), lambda o, now: [obj_name(o), obj_age(o, now)])

PRINTERS: dict[tuple[str, str], KindPrinter] = {
    ("", "Pod"): KindPrinter(
        _simple(
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES",
            wide_from=5,
        ),
        pod_cells,
    ),
    ("apps", "Deployment"): KindPrinter(
        _simple(
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR",
            wide_from=5,
        ),
        deployment_cells,
    ),
    ("apps", "ReplicaSet"): KindPrinter(
        _simple(
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR",
            wide_from=5,
        ),
        replicaset_cells,
    ),
    ("apps", "DaemonSet"): KindPrinter(
        _simple(
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE SELECTOR",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR",
            wide_from=8,
        ),
        daemonset_cells,
    ),
    ("batch", "Job"): KindPrinter(
        _simple(
            "NAME",
            "STATUS",
            "COMPLETIONS",
            "DURATION",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR",
            wide_from=5,
        ),
        job_cells,
    ),
    ("batch", "CronJob"): KindPrinter(
        _simple(
            "NAME",
            "SCHEDULE",
            "TIMEZONE",
            "SUSPEND",
            "ACTIVE",
            "LAST SCHEDULE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR",
            wide_from=7,
        ),
        cronjob_cells,
    ),
    ("", "Service"): KindPrinter(
        _simple(
            "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR", wide_from=6
        ),
        service_cells_for(wide=False),
    ),
    ("", "Endpoints"): KindPrinter(
        _simple("NAME", "ENDPOINTS", "AGE"),
        lambda o, now: [obj_name(o), format_endpoints(o), obj_age(o, now)],
    ),
    ("", "Node"): KindPrinter(
        _simple(
            "NAME",
            "STATUS",
            "ROLES",
            "AGE",
            "VERSION",
            "INTERNAL-IP",
            "EXTERNAL-IP",
            "OS-IMAGE",
            "KERNEL-VERSION",
            "CONTAINER-RUNTIME",
            wide_from=5,
        ),
        node_cells,
    ),
    ("", "Namespace"): KindPrinter(
        _simple("NAME", "STATUS", "AGE"),
        lambda o, now: [obj_name(o), txt(dig(o, "status", "phase")), obj_age(o, now)],
    ),
    ("", "ConfigMap"): KindPrinter(
        _simple("NAME", "DATA", "AGE"),
        lambda o, now: [
            obj_name(o),
            len(o.get("data") or {}) + len(o.get("binaryData") or {}),
            obj_age(o, now),
        ],
    ),
    ("", "Secret"): KindPrinter(
        _simple("NAME", "TYPE", "DATA", "AGE"),
        lambda o, now: [
            obj_name(o),
            txt(o.get("type")),
            len(o.get("data") or {}),
            obj_age(o, now),
        ],
    ),
    ("", "ServiceAccount"): KindPrinter(
        _simple("NAME", "SECRETS", "AGE"),
        lambda o, now: [obj_name(o), len(seq(o.get("secrets"))), obj_age(o, now)],
    ),
    ("", "Event"): KindPrinter(
        (
            Column("LAST SEEN"),
            Column("TYPE"),
            Column("REASON"),
            Column("OBJECT", is_name=True),
            Column("MESSAGE"),
        ),
        event_cells,
    ),
    ("autoscaling", "HorizontalPodAutoscaler"): KindPrinter(
        _simple("NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"), hpa_cells
    ),
    ("rbac.authorization.k8s.io", "Role"): KindPrinter(_simple("NAME", "CREATED AT"), created_at),
    ("rbac.authorization.k8s.io", "ClusterRole"): KindPrinter(
        _simple("NAME", "CREATED AT"), created_at
    ),
    ("rbac.authorization.k8s.io", "RoleBinding"): KindPrinter(
        _simple("NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS", wide_from=3),
        role_binding_cells,
    ),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): KindPrinter(
        _simple("NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS", wide_from=3),
        role_binding_cells,
    ),
    # Istio CRDs (manifests/charts/base/files/crd-all.gen.yaml).
    ("networking.istio.io", "VirtualService"): _crd(
        ("GATEWAYS", ("spec", "gateways"), False), ("HOSTS", ("spec", "hosts"), False), _AGE
    ),
    ("networking.istio.io", "DestinationRule"): _crd(("HOST", ("spec", "host"), False), _AGE),
    ("networking.istio.io", "ServiceEntry"): _crd(
        ("HOSTS", ("spec", "hosts"), False),
        ("LOCATION", ("spec", "location"), False),
        ("RESOLUTION", ("spec", "resolution"), False),
        _AGE,
    ),
    ("networking.istio.io", "WorkloadEntry"): _crd(_AGE, ("ADDRESS", ("spec", "address"), False)),
    ("security.istio.io", "PeerAuthentication"): _crd(
        ("MODE", ("spec", "mtls", "mode"), False), _AGE
    ),
    ("security.istio.io", "AuthorizationPolicy"): _crd(("ACTION", ("spec", "action"), False), _AGE),
    # Argo CRDs.
    ("argoproj.io", "Rollout"): _crd(
        ("DESIRED", ("spec", "replicas"), False),
        ("CURRENT", ("status", "replicas"), False),
        ("UP-TO-DATE", ("status", "updatedReplicas"), False),
        ("AVAILABLE", ("status", "availableReplicas"), False),
        _AGE,
    ),
    ("argoproj.io", "Workflow"): _crd(
        ("STATUS", ("status", "phase"), False),
        ("AGE", ("@date", "status", "startedAt"), False),
        ("MESSAGE", ("status", "message"), True),
    ),
    ("argoproj.io", "AnalysisRun"): _crd(("STATUS", ("status", "phase"), False), _AGE),
    ("argoproj.io", "Experiment"): _crd(("STATUS", ("status", "phase"), False), _AGE),
}

_WIDE_SERVICE = KindPrinter(PRINTERS[("", "Service")].columns, service_cells_for(wide=True))


def printer_for(group: str, kind: str, *, wide: bool = False) -> KindPrinter:
    """The printer for a kind; ``NAME AGE`` for kinds without their own columns."""
    if wide and (group, kind) == ("", "Service"):
        return _WIDE_SERVICE
    return PRINTERS.get((group, kind), DEFAULT_PRINTER)

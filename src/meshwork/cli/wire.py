"""Reading wire dicts (objects as the API returns them) without trusting their shape.

What lives here: safe accessors (a missing or mistyped field reads as empty,
never raises), and the small formatters several kinds' columns share:
label selectors and container lists. No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meshwork.cli.humanize import NONE, since

Cell = str | int | bool | None
Obj = Mapping[str, Any]


def dig(obj: Any, *path: str) -> Any:
    """``obj[p0][p1]...``, or None as soon as a step is missing or not a mapping."""
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def num(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def seq(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def txt(value: Any) -> str:
    return value if isinstance(value, str) else ""


def obj_name(obj: Obj) -> str:
    return txt(dig(obj, "metadata", "name"))


def obj_age(obj: Obj, now: datetime) -> str:
    return since(dig(obj, "metadata", "creationTimestamp"), now)


def or_none(text: str) -> str:
    return text if text else NONE


def condition_true(obj: Obj, kind: str) -> bool:
    """The first condition of type ``kind`` in ``status.conditions`` is ``True``."""
    for cond in seq(dig(obj, "status", "conditions")):
        if isinstance(cond, Mapping) and cond.get("type") == kind:
            return cond.get("status") == "True"
    return False


def format_selector(selector: Any) -> str:
    """``metav1.FormatLabelSelector``: ``app=web,tier in (a,b),!canary``; ``<none>`` when empty."""
    if not isinstance(selector, Mapping):
        return NONE
    reqs: list[tuple[str, str]] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        reqs.append((str(key), f"{key}={value}"))
    for expr in seq(selector.get("matchExpressions")):
        if not isinstance(expr, Mapping):
            continue
        key, op = txt(expr.get("key")), txt(expr.get("operator"))
        values = ",".join(sorted(str(v) for v in seq(expr.get("values"))))
        text = {
            "In": f"{key} in ({values})",
            "NotIn": f"{key} notin ({values})",
            "Exists": key,
            "DoesNotExist": f"!{key}",
        }.get(op)
        if text is None:
            return "<error>"
        reqs.append((key, text))
    reqs.sort(key=lambda r: r[0])
    return ",".join(text for _, text in reqs) or NONE


def containers_cells(pod_spec: Any) -> tuple[str, str]:
    """``layoutContainerCells``: container names and images, comma-joined."""
    containers = [c for c in seq(dig(pod_spec, "containers")) if isinstance(c, Mapping)]
    return ",".join(txt(c.get("name")) for c in containers), ",".join(
        txt(c.get("image")) for c in containers
    )

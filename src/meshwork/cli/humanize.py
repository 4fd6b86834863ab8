"""Small pure formatters shared by the table columns and ``describe``: ages and label sets.

What lives here: RFC 3339 parsing, apimachinery's ``HumanDuration``, kubectl's
``translateTimestampSince`` and ``labels.FormatLabels``. No I/O, and no clock:
``now`` is always a parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

NONE = "<none>"
UNKNOWN = "<unknown>"


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (``2024-05-01T10:00:00Z``, fractions allowed) as aware UTC, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def human_duration(seconds: float) -> str:
    """A duration the way ``k8s.io/apimachinery/pkg/util/duration.HumanDuration`` writes it.

    Precision falls as the duration grows: ``90s``, ``3m12s``, ``15m``, ``5h3m``,
    ``20h``, ``3d4h``, ``45d``, ``2y30d``, ``9y``. Up to a second in the future
    (clock skew) reads ``0s``; further than that is ``<invalid>``.
    """
    secs = int(seconds)  # Go's int(d.Seconds()) truncates toward zero
    if secs < -1:
        return "<invalid>"
    if secs < 0:
        return "0s"
    if secs < 60 * 2:
        return f"{secs}s"
    minutes = secs // 60
    if minutes < 10:
        s = secs % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = secs // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if dy == 0 else f"{years}y{dy}d"
    return f"{hours // 24 // 365}y"


def since(value: Any, now: datetime) -> str:
    """kubectl's ``translateTimestampSince``: the age of a timestamp, ``<unknown>`` if absent."""
    when = parse_time(value)
    if when is None:
        return UNKNOWN
    return human_duration((now - when).total_seconds())


def format_labels(labels: Mapping[str, str] | None) -> str:
    """``labels.FormatLabels``: ``k=v`` sorted by key and joined with commas, or ``<none>``."""
    if not labels:
        return NONE
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))

"""Outlier detection for one cluster: Envoy's consecutive-error ejection, as pure state.

What lives here: ``OutlierConfig`` (a DestinationRule ``outlierDetection``
with Istio's defaults filled in) and ``OutlierDetector``, which the proxy
feeds with each upstream outcome (a status code or an error kind) and asks
which endpoints it must not use. Time is a ``now: float`` argument; the
proxy calls ``tick(now)`` every ``interval`` (``next_tick`` says when).

Kept from Envoy (as Istio configures it):

* ``consecutive5xxErrors`` (default 5, 0 disables) counts 5xx answers and
  locally seen failures (connect failure, reset, timeout), because Istio
  leaves ``split_external_local_origin_errors`` off; ``consecutiveGatewayErrors``
  (default off) counts 502, 503, 504 and the same local failures. Any other
  answer resets both counters.
* Consecutive-error ejection happens at once, when the counter reaches its
  threshold, not at the next interval.
* An ejected host stays out for ``baseEjectionTime`` (30 s) times its
  ejection multiplier, capped at Envoy's ``max_ejection_time`` (300 s, or
  the base when larger). The multiplier grows by one per ejection and, at
  each interval tick, shrinks by one while the host has been back for at
  least a base ejection time.
* ``maxEjectionPercent`` (default 10): a host is ejected only when the share
  of ejected hosts after ejecting it stays within the cap, except that one
  host may always be ejected when none is (Envoy: "will eject at least one
  host regardless of the value").
* ``minHealthPercent`` (default 0) is Envoy's panic threshold: when the share
  of usable hosts drops below it, ejections are ignored and every host is
  used.

Simplified: Envoy readmits a host at the first interval tick after its time
is up; here it is readmitted as soon as its time is up (``ejected(now)``
checks the clock too), which can only be earlier by less than an interval.
Success-rate and failure-percentage ejection are not implemented.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from meshwork.core.mesh.hosts import seconds
from meshwork.model.istio_traffic import OutlierDetection

Outcome = int | str  # a status code, or "connect_failure" / "reset" / "timeout"
LOCAL_FAILURES = frozenset({"connect_failure", "reset", "timeout", "refused_stream"})
GATEWAY_ERRORS = frozenset({502, 503, 504})

DEFAULT_CONSECUTIVE_5XX = 5  # Istio/Envoy default
DEFAULT_INTERVAL = 10.0  # seconds; Istio/Envoy default
DEFAULT_BASE_EJECTION = 30.0  # seconds; Istio/Envoy default
DEFAULT_MAX_EJECTION_PERCENT = 10  # Istio/Envoy default
DEFAULT_MAX_EJECTION_TIME = 300.0  # seconds; Envoy max_ejection_time default


@dataclass(frozen=True, slots=True)
class OutlierConfig:
    consecutive_5xx: int = DEFAULT_CONSECUTIVE_5XX
    consecutive_gateway: int = 0
    interval: float = DEFAULT_INTERVAL
    base_ejection: float = DEFAULT_BASE_EJECTION
    max_ejection_percent: int = DEFAULT_MAX_EJECTION_PERCENT
    min_health_percent: int = 0
    max_ejection_time: float = DEFAULT_MAX_EJECTION_TIME

    @staticmethod
    def from_model(od: OutlierDetection | None) -> OutlierConfig | None:
        """Read ``outlierDetection``; None when the DestinationRule has none (no detection)."""
        if od is None:
            return None
        c5xx = od.consecutive5xx_errors
        if c5xx is None:
            deprecated = od.consecutive_errors
            c5xx = deprecated if deprecated else DEFAULT_CONSECUTIVE_5XX
        return OutlierConfig(
            consecutive_5xx=c5xx,
            consecutive_gateway=od.consecutive_gateway_errors or 0,
            interval=seconds(od.interval) or DEFAULT_INTERVAL,
            base_ejection=seconds(od.base_ejection_time) or DEFAULT_BASE_EJECTION,
            max_ejection_percent=(
                DEFAULT_MAX_EJECTION_PERCENT
                if od.max_ejection_percent is None
                else od.max_ejection_percent
            ),
            min_health_percent=od.min_health_percent or 0,
        )


@dataclass(slots=True)
class _Host:
    consecutive_5xx: int = 0
    consecutive_gateway: int = 0
    multiplier: int = 0
    ejected_at: float | None = None
    ejected_until: float = 0.0
    readmitted_at: float | None = None
    ejections: int = 0


@dataclass(frozen=True, slots=True)
class Ejection:
    """An endpoint just ejected, for logs and ``meshwork why``."""

    key: str
    until: float
    reason: str


class OutlierDetector:
    """Per-endpoint consecutive error counters and ejections of one cluster."""

    def __init__(self, config: OutlierConfig, keys: Iterable[str] = ()) -> None:
        self.config = config
        self._hosts: dict[str, _Host] = {key: _Host() for key in keys}
        self._next_tick: float | None = None

    def set_endpoints(self, keys: Iterable[str]) -> None:
        """Follow endpoint changes, keeping the state of endpoints that stay."""
        keys = list(keys)
        self._hosts = {key: self._hosts.get(key) or _Host() for key in keys}

    # -- feeding outcomes --

    def record(self, key: str, outcome: Outcome, now: float) -> Ejection | None:
        """Count one upstream outcome of ``key``; an ejection when it pushes the host out."""
        host = self._hosts.get(key)
        if host is None or self._is_ejected(host, now):
            return None
        local = isinstance(outcome, str)
        if not local and not (isinstance(outcome, int) and outcome >= 500):
            host.consecutive_5xx = host.consecutive_gateway = 0
            return None
        if local and outcome not in LOCAL_FAILURES:
            return None
        host.consecutive_5xx += 1
        if local or outcome in GATEWAY_ERRORS:
            host.consecutive_gateway += 1
        else:
            host.consecutive_gateway = 0
        cfg = self.config
        if cfg.consecutive_5xx and host.consecutive_5xx >= cfg.consecutive_5xx:
            return self._eject(key, host, now, f"{host.consecutive_5xx} consecutive 5xx")
        if cfg.consecutive_gateway and host.consecutive_gateway >= cfg.consecutive_gateway:
            return self._eject(
                key, host, now, f"{host.consecutive_gateway} consecutive gateway errors"
            )
        return None

    def _eject(self, key: str, host: _Host, now: float, why: str) -> Ejection | None:
        host.consecutive_5xx = host.consecutive_gateway = 0
        total = len(self._hosts)
        active = sum(1 for h in self._hosts.values() if self._is_ejected(h, now))
        allowed = 100.0 * (active + 1) / total <= self.config.max_ejection_percent or active == 0
        if not allowed:
            return None
        cfg = self.config
        cap = max(cfg.max_ejection_time, cfg.base_ejection)
        if cfg.base_ejection * host.multiplier < cap:
            host.multiplier += 1
        host.ejected_at = now
        host.ejected_until = now + min(cfg.base_ejection * host.multiplier, cap)
        host.ejections += 1
        return Ejection(key, host.ejected_until, why)

    # -- time --

    def tick(self, now: float) -> list[str]:
        """The interval sweep: readmit hosts whose time is up, decay multipliers; readmitted keys."""
        readmitted: list[str] = []
        base = self.config.base_ejection
        for key, host in self._hosts.items():
            if host.ejected_at is not None:
                if now >= host.ejected_until:
                    host.ejected_at = None
                    host.readmitted_at = host.ejected_until
                    readmitted.append(key)
            elif (
                host.multiplier > 0
                and host.readmitted_at is not None
                and now - host.readmitted_at >= base
            ):
                host.multiplier -= 1
        self._next_tick = now + self.config.interval
        return readmitted

    def next_tick(self, now: float) -> float:
        """When the proxy should call ``tick`` next."""
        return self._next_tick if self._next_tick is not None else now + self.config.interval

    # -- asking --

    @staticmethod
    def _is_ejected(host: _Host, now: float) -> bool:
        return host.ejected_at is not None and now < host.ejected_until

    def ejected(self, now: float) -> frozenset[str]:
        """Endpoints out of rotation right now."""
        return frozenset(k for k, h in self._hosts.items() if self._is_ejected(h, now))

    def panic(self, now: float, unhealthy: int = 0) -> bool:
        """Whether usable hosts are below ``minHealthPercent`` (then every host is used)."""
        total = len(self._hosts)
        if not total or not self.config.min_health_percent:
            return False
        usable = total - len(self.ejected(now)) - unhealthy
        return 100.0 * usable / total < self.config.min_health_percent

    def unavailable(self, now: float) -> frozenset[str]:
        """What the load balancer must skip: the ejected hosts, or nothing in panic mode."""
        ejected = self.ejected(now)
        if ejected and self.panic(now):
            return frozenset()
        return ejected

    def multiplier(self, key: str) -> int:
        host = self._hosts.get(key)
        return host.multiplier if host else 0

    def state(self, key: str, now: float) -> str:
        """A short description for ``meshwork why`` and ``proxy-config endpoints``."""
        host = self._hosts.get(key)
        if host is None:
            return "unknown"
        if self._is_ejected(host, now):
            return f"ejected for {host.ejected_until - now:.1f}s more (ejection {host.ejections})"
        return f"healthy ({host.consecutive_5xx} consecutive 5xx)"

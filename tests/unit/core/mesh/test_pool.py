"""Circuit breakers (connectionPool), Envoy's local replies, and reading the control plane's snapshot JSON."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from meshcases import ISTIO

from meshwork.core.mesh.compile import compile_snapshot
from meshwork.core.mesh.flags import FLAG_MEANINGS, REASON_HEADER, join_flags, local_reply
from meshwork.core.mesh.pool import UNLIMITED, PoolAccount, PoolLimits
from meshwork.core.mesh.snapshot import SnapshotError, snapshot_from_wire
from meshwork.model.istio_traffic import ConnectionPoolSettings


def test_istio_defaults_never_overflow() -> None:
    acct = PoolAccount(PoolLimits.from_model(None))
    assert acct.limits.max_connections == UNLIMITED == acct.limits.max_pending
    for _ in range(1000):
        assert acct.admit(idle_available=False).admission == "connect"


def test_one_connection_one_pending_then_503_uo() -> None:
    # Istio's circuit-breaking task: maxConnections 1, http1MaxPendingRequests 1
    limits = PoolLimits.from_model(
        ConnectionPoolSettings.model_validate(
            {
                "tcp": {"maxConnections": 1},
                "http": {"http1MaxPendingRequests": 1, "maxRequestsPerConnection": 1},
            }
        )
    )
    acct = PoolAccount(limits)
    assert acct.admit(idle_available=False).admission == "connect"
    assert acct.admit(idle_available=False).admission == "queue"
    third = acct.admit(idle_available=False)
    assert third.admission == "overflow" and third.reply is not None
    assert (third.reply.status, third.reply.flag) == (503, "UO")
    assert (
        third.reply.body
        == b"upstream connect error or disconnect/reset before headers. reset reason: overflow"
    )
    assert "maxConnections 1" in third.reply.reason
    assert not acct.keep_connection(requests_served=1)
    # the first request ends and its connection closes: the queued one may connect
    acct.request_finished()
    acct.connection_closed()
    assert acct.may_open()
    acct.dequeued(got_connection=True)
    acct.connection_opened()
    assert (acct.connections, acct.pending, acct.active) == (1, 0, 1)


def test_max_requests_and_max_retries() -> None:
    acct = PoolAccount(PoolLimits(max_requests=2, max_retries=1))
    assert acct.admit(idle_available=True).admission == "idle"
    assert acct.admit(idle_available=True).admission == "idle"
    assert acct.admit(idle_available=True).admission == "overflow"
    assert acct.admit_retry() and not acct.admit_retry()
    acct.retry_finished()
    assert acct.admit_retry()


@given(
    st.lists(st.sampled_from(["admit", "admit_idle", "finish", "close"]), max_size=60),
    st.integers(1, 4),
    st.integers(0, 3),
)
def test_counters_never_exceed_limits(ops: list[str], max_conn: int, max_pending: int) -> None:
    acct = PoolAccount(PoolLimits(max_connections=max_conn, max_pending=max_pending))
    for op in ops:
        if op == "admit":
            acct.admit(idle_available=False)
        elif op == "admit_idle":
            acct.admit(idle_available=True)
        elif op == "finish":
            acct.request_finished()
        else:
            acct.connection_closed()
        assert acct.connections <= max_conn and acct.pending <= max_pending
        assert min(acct.connections, acct.pending, acct.active) >= 0


@pytest.mark.parametrize(
    ("flag", "status", "body"),
    [
        ("UH", 503, b"no healthy upstream"),
        (
            "UF",
            503,
            b"upstream connect error or disconnect/reset before headers. reset reason: connection failure",
        ),
        (
            "UO",
            503,
            b"upstream connect error or disconnect/reset before headers. reset reason: overflow",
        ),
        (
            "UC",
            503,
            b"upstream connect error or disconnect/reset before headers. reset reason: connection termination",
        ),
        ("UT", 504, b"upstream request timeout"),
        ("NR", 404, b""),
        ("FI", 500, b"fault filter abort"),
    ],
)
def test_local_replies_match_envoy(flag: str, status: int, body: bytes) -> None:
    reply = local_reply(flag, "outbound|80||web.default.svc.cluster.local")
    assert (reply.status, reply.body) == (status, body)
    assert flag in FLAG_MEANINGS
    headers = dict(reply.headers())
    assert headers["content-length"] == str(len(body))
    assert headers[REASON_HEADER].endswith(": outbound|80||web.default.svc.cluster.local")
    assert join_flags([]) == "-" and join_flags(["DI", "FI"]) == "DI,FI"


def test_snapshot_json_from_the_control_plane_compiles() -> None:
    if not ISTIO.is_dir():
        pytest.skip(f"{ISTIO} is absent")
    import yaml

    docs = list(
        yaml.safe_load_all(
            (ISTIO / "bookinfo/networking/virtual-service-reviews-jason-v2-v3.yaml").read_text()
        )
    )
    docs += list(
        yaml.safe_load_all(
            (ISTIO / "bookinfo/networking/destination-rule-reviews.yaml").read_text()
        )
    )
    for d in docs:
        d["metadata"]["namespace"] = "default"
    wire = {
        "version": "7",
        "proxy": {
            "id": "sidecar~127.1.0.5~pp-1.default~default.svc.cluster.local",
            "name": "pp-1",
            "namespace": "default",
            "labels": {"app": "productpage"},
            "role": "sidecar",
            "ip": "127.1.0.5",
        },
        "domain": "cluster.local",
        "services": [
            {
                "name": "reviews",
                "namespace": "default",
                "hostname": "reviews.default.svc.cluster.local",
                "clusterIP": "127.2.0.9",
                "ports": [
                    {
                        "name": "http",
                        "port": 9080,
                        "targetPort": 9080,
                        "protocol": "TCP",
                        "appProtocol": None,
                    }
                ],
                "endpoints": [
                    {
                        "ip": f"127.1.0.{i}",
                        "ports": {},
                        "labels": {"app": "reviews", "version": v},
                        "name": f"reviews-{v}",
                        "ready": True,
                    }
                    for i, v in ((7, "v1"), (8, "v2"), (9, "v3"))
                ],
            }
        ],
        "virtualServices": [d for d in docs if d["kind"] == "VirtualService"],
        "destinationRules": [d for d in docs if d["kind"] == "DestinationRule"],
        "serviceEntries": [],
        "gateways": [],
    }
    snap = snapshot_from_wire(json.loads(json.dumps(wire)))
    t = compile_snapshot(snap)
    assert t.version == "7"
    v2 = t.clusters["outbound|9080|v2|reviews.default.svc.cluster.local"]
    assert [e.key for e in v2.endpoints] == ["127.1.0.8:9080"]
    assert t.ports[9080].lookup("127.2.0.9") is not None  # the cluster IP names the service too
    with pytest.raises(SnapshotError, match=r"proxy\.role"):
        snapshot_from_wire({**wire, "proxy": {**wire["proxy"], "role": "mystery"}})

"""The scheduler's pure core: filters and reasons, messages, scoring, preemption, queue order, bind_many."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshwork.core.scheduler import (
    BindResult,
    Placement,
    Preemption,
    SchedulerConfig,
    Unschedulable,
    apply_outcome,
    bind_many,
    fit_error_message,
    place,
    preempt,
    queue_key,
    sort_queue,
)
from meshwork.core.scheduler_filters import (
    BoundPod,
    ClusterSnapshot,
    NodeInfo,
    PodRequirements,
    TaintInfo,
    TolerationInfo,
    build_snapshot,
    pod_requests,
    requirements_of,
)
from meshwork.model.core import Node
from meshwork.model.pod import Pod

GI = 2**30
MI = 2**20


def node(
    name: str = "n1",
    cpu: int = 4000,
    memory: int = 4 * GI,
    pods: int = 110,
    **kw: Any,
) -> NodeInfo:
    return NodeInfo.create(name, cpu=cpu, memory=memory, pods=pods, **kw)


def snap(*nodes: NodeInfo) -> ClusterSnapshot:
    return ClusterSnapshot(tuple(nodes))


def pod(
    name: str = "p",
    cpu: str | None = None,
    memory: str | None = None,
    *,
    spec: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> Pod:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    container: dict[str, Any] = {"name": "c", "image": "i"}
    if requests:
        container["resources"] = {"requests": requests}
    return Pod.model_validate(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", **(meta or {})},
            "spec": {"containers": [container], **(spec or {})},
        }
    )


def bound(name: str, cpu: int = 0, memory: int = 0, priority: int = 0, start: str = "") -> BoundPod:
    return BoundPod("ns", name, f"uid-{name}", priority, cpu, memory, cpu, memory, start)


def affinity(*terms: dict[str, Any]) -> dict[str, Any]:
    return {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}
            }
        }
    }


def expr(key: str, op: str, *values: str) -> dict[str, Any]:
    return {
        "matchExpressions": [
            {"key": key, "operator": op, **({"values": list(values)} if values else {})}
        ]
    }


GPU_TAINT = TaintInfo("dedicated", "gpu", "NoSchedule")
TOLERATE_GPU = {
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
    ]
}
ZONE = {"zone": "a", "size": "8"}


# ---------------------------------------------------------------------------
# Filters: one node, one pod, the reasons (None = placed)
# ---------------------------------------------------------------------------

FILTER_CASES: list[tuple[str, NodeInfo, Pod, tuple[str, ...] | None]] = [
    ("fits", node(), pod(cpu="1", memory="1Gi"), None),
    ("cordoned", node(unschedulable=True), pod(), ("node(s) were unschedulable",)),
    (
        "cordoned but tolerated",
        node(unschedulable=True),
        pod(
            spec={
                "tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}]
            }
        ),
        None,
    ),
    (
        "nodeName other",
        node(),
        pod(spec={"nodeName": "n2"}),
        ("node(s) didn't match the requested node name",),
    ),
    ("nodeName same", node(), pod(spec={"nodeName": "n1"}), None),
    ("taint", node(taints=[GPU_TAINT]), pod(), ("node(s) had untolerated taint {dedicated: gpu}",)),
    ("taint tolerated Equal", node(taints=[GPU_TAINT]), pod(spec=TOLERATE_GPU), None),
    (
        "taint tolerated Exists key",
        node(taints=[GPU_TAINT]),
        pod(spec={"tolerations": [{"key": "dedicated", "operator": "Exists"}]}),
        None,
    ),
    (
        "empty key Exists tolerates all",
        node(taints=[GPU_TAINT]),
        pod(spec={"tolerations": [{"operator": "Exists"}]}),
        None,
    ),
    (
        "Equal with other value",
        node(taints=[GPU_TAINT]),
        pod(spec={"tolerations": [{"key": "dedicated", "value": "cpu"}]}),
        ("node(s) had untolerated taint {dedicated: gpu}",),
    ),
    (
        "toleration for another effect",
        node(taints=[GPU_TAINT]),
        pod(
            spec={
                "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}]
            }
        ),
        ("node(s) had untolerated taint {dedicated: gpu}",),
    ),
    (
        "PreferNoSchedule is not a filter",
        node(taints=[TaintInfo("soft", "x", "PreferNoSchedule")]),
        pod(),
        None,
    ),
    (
        "NoExecute taint",
        node(taints=[TaintInfo("evict", "", "NoExecute")]),
        pod(),
        ("node(s) had untolerated taint {evict: }",),
    ),
    (
        "not ready",
        node(ready=False),
        pod(),
        ("node(s) had untolerated taint {node.kubernetes.io/not-ready: }",),
    ),
    (
        "ready unknown",
        node(ready=None),
        pod(),
        ("node(s) had untolerated taint {node.kubernetes.io/unreachable: }",),
    ),
    (
        "not ready tolerated",
        node(ready=False),
        pod(spec={"tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}]}),
        None,
    ),
    ("insufficient cpu", node(cpu=500), pod(cpu="1"), ("Insufficient cpu",)),
    ("insufficient memory", node(memory=GI), pod(memory="2Gi"), ("Insufficient memory",)),
    (
        "both",
        node(cpu=500, memory=GI),
        pod(cpu="1", memory="2Gi"),
        ("Insufficient cpu", "Insufficient memory"),
    ),
    ("too many pods", node(pods=1, bound=[bound("x")]), pod(), ("Too many pods",)),
    ("no pods allowed", node(pods=0), pod(), ("Too many pods",)),
    (
        "used cpu counts",
        node(cpu=2000, bound=[bound("x", cpu=1500)]),
        pod(cpu="600m"),
        ("Insufficient cpu",),
    ),
    ("exact fit", node(cpu=2000, bound=[bound("x", cpu=1500)]), pod(cpu="500m"), None),
    ("no request fits a full node", node(cpu=1000, bound=[bound("x", cpu=1000)]), pod(), None),
    ("nodeSelector match", node(labels=ZONE), pod(spec={"nodeSelector": {"zone": "a"}}), None),
    (
        "nodeSelector miss",
        node(labels=ZONE),
        pod(spec={"nodeSelector": {"zone": "b"}}),
        ("node(s) didn't match Pod's node affinity/selector",),
    ),
    ("In", node(labels=ZONE), pod(spec=affinity(expr("zone", "In", "a", "b"))), None),
    (
        "In miss",
        node(labels=ZONE),
        pod(spec=affinity(expr("zone", "In", "c"))),
        ("node(s) didn't match Pod's node affinity/selector",),
    ),
    ("NotIn absent key", node(labels=ZONE), pod(spec=affinity(expr("rack", "NotIn", "r1"))), None),
    (
        "NotIn miss",
        node(labels=ZONE),
        pod(spec=affinity(expr("zone", "NotIn", "a"))),
        ("node(s) didn't match Pod's node affinity/selector",),
    ),
    ("Exists", node(labels=ZONE), pod(spec=affinity(expr("zone", "Exists"))), None),
    (
        "DoesNotExist",
        node(labels=ZONE),
        pod(spec=affinity(expr("zone", "DoesNotExist"))),
        ("node(s) didn't match Pod's node affinity/selector",),
    ),
    ("Gt", node(labels=ZONE), pod(spec=affinity(expr("size", "Gt", "4"))), None),
    (
        "Gt miss",
        node(labels=ZONE),
        pod(spec=affinity(expr("size", "Gt", "8"))),
        ("node(s) didn't match Pod's node affinity/selector",),
    ),
    ("Lt", node(labels=ZONE), pod(spec=affinity(expr("size", "Lt", "9"))), None),
    (
        "Gt on a word",
        node(labels=ZONE),
        pod(spec=affinity(expr("zone", "Gt", "1"))),
        ("node(s) didn't match Pod's node affinity/selector",),
    ),
    (
        "matchFields name",
        node(),
        pod(
            spec=affinity(
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
            )
        ),
        None,
    ),
    (
        "matchFields other name",
        node(),
        pod(
            spec=affinity(
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}
            )
        ),
        ("node(s) didn't match Pod's node affinity/selector",),
    ),
    (
        "terms are ORed",
        node(labels=ZONE),
        pod(spec=affinity(expr("zone", "In", "c"), expr("zone", "In", "a"))),
        None,
    ),
    (
        "empty term matches nothing",
        node(labels=ZONE),
        pod(spec=affinity({})),
        ("node(s) didn't match Pod's node affinity/selector",),
    ),
    (
        "selector AND affinity",
        node(labels=ZONE),
        pod(spec={"nodeSelector": {"zone": "a"}, **affinity(expr("size", "In", "4"))}),
        ("node(s) didn't match Pod's node affinity/selector",),
    ),
    # Filter order: the first failing plugin is the one reported.
    (
        "cordon before taint",
        node(unschedulable=True, taints=[GPU_TAINT]),
        pod(),
        ("node(s) were unschedulable",),
    ),
    (
        "taint before resources",
        node(cpu=100, taints=[GPU_TAINT]),
        pod(cpu="1"),
        ("node(s) had untolerated taint {dedicated: gpu}",),
    ),
    (
        "taint before affinity",
        node(taints=[GPU_TAINT]),
        pod(spec={"nodeSelector": {"x": "y"}}),
        ("node(s) had untolerated taint {dedicated: gpu}",),
    ),
    (
        "affinity before resources",
        node(cpu=100),
        pod(cpu="1", spec={"nodeSelector": {"x": "y"}}),
        ("node(s) didn't match Pod's node affinity/selector",),
    ),
]


@pytest.mark.parametrize(
    ("case", "n", "p", "expected"), FILTER_CASES, ids=[c[0] for c in FILTER_CASES]
)
def test_filter_reasons(case: str, n: NodeInfo, p: Pod, expected: tuple[str, ...] | None) -> None:
    result = place(p, snap(n), SchedulerConfig(preemption=False))
    if expected is None:
        assert isinstance(result, Placement), result
        assert result.node_name == n.name
    else:
        assert isinstance(result, Unschedulable), result
        assert result.reasons_by_node == {n.name: expected}


# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------


def test_message_counts_and_sorts_like_upstream_with_preemption_part() -> None:
    s = snap(node("a", memory=GI), node("b", memory=GI), node("c", taints=[GPU_TAINT]))
    result = place(pod(memory="2Gi"), s)
    assert isinstance(result, Unschedulable)
    # A 2Gi request on a 1Gi node is unresolvable (upstream's flag), so no node is a candidate.
    assert result.message == (
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient memory. "
        "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.."
    )
    assert result.preemption is None


def test_no_victims_message() -> None:
    s = snap(
        node("a", memory=4 * GI, bound=[bound("x", memory=3 * GI)]), node("b", taints=[GPU_TAINT])
    )
    result = place(pod(memory="2Gi"), s)
    assert isinstance(result, Unschedulable)
    assert result.message == (
        "0/2 nodes are available: 1 Insufficient memory, 1 node(s) had untolerated taint {dedicated: gpu}. "
        "preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, "
        "1 Preemption is not helpful for scheduling.."
    )


def test_message_without_preemption_and_when_preemption_never() -> None:
    s = snap(node("a", cpu=100))
    off = place(pod(cpu="1"), s, SchedulerConfig(preemption=False))
    never = place(pod(cpu="1", spec={"preemptionPolicy": "Never"}), s)
    assert isinstance(off, Unschedulable) and isinstance(never, Unschedulable)
    assert off.message == "0/1 nodes are available: 1 Insufficient cpu."
    assert never.message == (
        "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never.."
    )


def test_histogram_sorts_as_strings() -> None:
    reasons = {f"n{i}": ("Insufficient cpu",) for i in range(10)} | {
        "x": ("Too many pods",),
        "y": ("Too many pods",),
    }
    assert (
        fit_error_message(12, reasons)
        == "0/12 nodes are available: 10 Insufficient cpu, 2 Too many pods."
    )
    assert fit_error_message(0, {}) == "0/0 nodes are available:"


def test_no_nodes_at_all() -> None:
    result = place(pod(), snap())
    assert result == Unschedulable("no nodes available to schedule pods", {})


def test_successful_preemption_leaves_the_message_without_a_preemption_part() -> None:
    s = snap(node("a", cpu=1000, bound=[bound("low", cpu=1000, priority=1)]))
    result = place(pod(cpu="1", spec={"priority": 10}), s)
    assert isinstance(result, Unschedulable)
    assert result.message == "0/1 nodes are available: 1 Insufficient cpu."
    assert result.preemption == Preemption("a", (bound("low", cpu=1000, priority=1),))


# ---------------------------------------------------------------------------
# Snapshot building from models
# ---------------------------------------------------------------------------


def test_build_snapshot_from_models() -> None:
    n = Node.model_validate(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n1", "labels": {"zone": "a"}},
            "spec": {
                "taints": [
                    {"key": "k", "value": "v", "effect": "NoSchedule"},
                    {"key": "s", "effect": "PreferNoSchedule"},
                ]
            },
            "status": {
                "capacity": {"cpu": "2500m", "memory": "4Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
    )
    running = pod("r", cpu="500m", memory="1Gi", spec={"nodeName": "n1", "priority": 7})
    done = pod("d", cpu="1", spec={"nodeName": "n1"}).model_copy(update={"status": None})
    done = Pod.model_validate(
        {**done.model_dump(by_alias=True, exclude_none=True), "status": {"phase": "Succeeded"}}
    )
    elsewhere = pod("e", cpu="1", spec={"nodeName": "gone"})
    s = build_snapshot([n], [running, done, elsewhere, pod("pending", cpu="1")])
    (info,) = s.nodes
    assert (info.alloc_cpu, info.alloc_memory, info.alloc_pods) == (2500, 4 * GI, 110)
    assert info.taints == (TaintInfo("k", "v", "NoSchedule"),)
    assert info.ready and dict(info.labels) == {"zone": "a"}
    assert [p.name for p in info.pods] == ["r"]
    assert (info.requested_cpu, info.requested_memory, info.pods[0].priority) == (500, GI, 7)


def test_node_without_ready_condition_is_tainted_not_ready() -> None:
    n = Node.model_validate({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}})
    (info,) = build_snapshot([n], []).nodes
    assert not info.ready
    assert info.taints == (TaintInfo("node.kubernetes.io/not-ready", "", "NoSchedule"),)
    assert (info.alloc_cpu, info.alloc_memory, info.alloc_pods) == (0, 0, 0)


def test_pod_requests_init_sidecars_overhead_and_defaults() -> None:
    p = Pod.model_validate(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "initContainers": [
                    {
                        "name": "sidecar",
                        "image": "i",
                        "restartPolicy": "Always",
                        "resources": {"requests": {"cpu": "100m"}},
                    },
                    {
                        "name": "init",
                        "image": "i",
                        "resources": {"requests": {"cpu": "2", "memory": "1Gi"}},
                    },
                ],
                "containers": [
                    {
                        "name": "a",
                        "image": "i",
                        "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}},
                    },
                    {"name": "b", "image": "i"},
                ],
                "overhead": {"cpu": "10m"},
            },
        }
    )
    cpu, memory, nz_cpu, nz_memory = pod_requests(p)
    # cpu: max(250 + 0 + 100 sidecar, 2000 + 100 sidecar before it) + 10 overhead
    assert cpu == 2110
    assert memory == GI
    # non-zero: the request-less container counts 100m/200Mi, the sidecar's missing memory 200Mi too
    assert nz_cpu == max(250 + 100 + 100, 2000 + 100) + 10
    assert nz_memory == max(64 * MI + 200 * MI + 200 * MI, GI + 200 * MI)


def test_millicores_round_up() -> None:
    assert pod_requests(pod(cpu="0.0001"))[0] == 1
    assert pod_requests(pod(memory="1.5"))[1] == 2


# ---------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------


def two_nodes() -> ClusterSnapshot:
    return snap(node("busy", bound=[bound("x", cpu=2000, memory=2 * GI)]), node("idle"))


def test_least_allocated_spreads() -> None:
    result = place(pod(cpu="1", memory="1Gi"), two_nodes())
    assert isinstance(result, Placement)
    assert result.node_name == "idle"
    assert dict(result.score_by_node) == {"busy": 25, "idle": 75}


def test_most_allocated_bin_packs() -> None:
    result = place(
        pod(cpu="1", memory="1Gi"), two_nodes(), SchedulerConfig(scoring="MostAllocated")
    )
    assert isinstance(result, Placement)
    assert result.node_name == "busy"
    assert dict(result.score_by_node) == {"busy": 75, "idle": 25}


def test_request_less_pods_score_with_upstream_defaults() -> None:
    result = place(pod(), snap(node("a", cpu=1000, memory=1000 * MI)))
    assert isinstance(result, Placement)
    assert result.score_by_node == {"a": (90 + 80) // 2}


def test_ties_break_by_name_or_by_the_injected_rng() -> None:
    s = snap(node("c"), node("a"), node("b"))
    result = place(pod(), s)
    assert isinstance(result, Placement) and result.node_name == "a"
    chosen = set()
    for seed in range(30):
        r = place(pod(), s, SchedulerConfig(rng=random.Random(seed)))
        assert isinstance(r, Placement)
        chosen.add(r.node_name)
    assert chosen == {"a", "b", "c"}


# ---------------------------------------------------------------------------
# Preemption
# ---------------------------------------------------------------------------

HIGH = {"priority": 100}


def test_preempts_only_strictly_lower_priority() -> None:
    s = snap(node("a", cpu=1000, bound=[bound("same", cpu=1000, priority=100)]))
    assert preempt(pod(cpu="1", spec=HIGH), s) is None
    s = snap(node("a", cpu=1000, bound=[bound("lower", cpu=1000, priority=99)]))
    assert preempt(pod(cpu="1", spec=HIGH), s) == Preemption(
        "a", (bound("lower", cpu=1000, priority=99),)
    )


def test_preemption_never_and_already_fitting_give_none() -> None:
    s = snap(node("a", cpu=1000, bound=[bound("low", cpu=1000)]))
    assert preempt(pod(cpu="1", spec={**HIGH, "preemptionPolicy": "Never"}), s) is None
    assert preempt(pod(cpu="1", spec=HIGH), snap(node("a"))) is None


def test_reprieves_the_most_important_victims() -> None:
    pods = [
        bound("p1", cpu=500, priority=1),
        bound("p5", cpu=500, priority=5),
        bound("p3", cpu=500, priority=3),
    ]
    s = snap(node("a", cpu=1500, bound=pods))
    result = preempt(pod(cpu="500m", spec=HIGH), s)
    assert result == Preemption("a", (bound("p1", cpu=500, priority=1),))


def test_equal_priority_victim_is_the_newest() -> None:
    old = bound("old", cpu=500, priority=1, start="2024-01-01T00:00:00Z")
    new = bound("new", cpu=500, priority=1, start="2024-06-01T00:00:00Z")
    result = preempt(pod(cpu="500m", spec=HIGH), snap(node("a", cpu=1000, bound=[old, new])))
    assert result == Preemption("a", (new,))


def test_node_choice_lowest_highest_victim_priority_beats_fewer_victims() -> None:
    a = node("a", cpu=1000, bound=[bound("a1", cpu=1000, priority=50)])
    b = node("b", cpu=1000, bound=[bound(f"b{i}", cpu=250, priority=1) for i in range(4)])
    result = preempt(pod(cpu="1", spec=HIGH), snap(a, b))
    assert result is not None and result.node_name == "b" and len(result.victims) == 4


def test_node_choice_fewest_victims_at_equal_priority() -> None:
    a = node(
        "a", cpu=1000, bound=[bound("a1", cpu=500, priority=5), bound("a2", cpu=500, priority=5)]
    )
    b = node("b", cpu=1000, bound=[bound("b1", cpu=1000, priority=5)])
    result = preempt(pod(cpu="1", spec=HIGH), snap(a, b))
    assert result == Preemption("b", (bound("b1", cpu=1000, priority=5),))


def test_node_choice_latest_start_then_name() -> None:
    a = node("a", cpu=1000, bound=[bound("a1", cpu=1000, priority=5, start="2024-01-01T00:00:00Z")])
    b = node("b", cpu=1000, bound=[bound("b1", cpu=1000, priority=5, start="2024-02-01T00:00:00Z")])
    c = node("c", cpu=1000, bound=[bound("c1", cpu=1000, priority=5, start="2024-02-01T00:00:00Z")])
    result = preempt(pod(cpu="1", spec=HIGH), snap(a, c, b))
    assert result is not None and result.node_name == "b"


def test_nodes_failing_static_filters_or_too_small_are_not_candidates() -> None:
    tainted = node("a", cpu=1000, taints=[GPU_TAINT], bound=[bound("a1", cpu=1000)])
    small = node("b", cpu=500, bound=[bound("b1", cpu=500)])
    result = place(pod(cpu="1", spec=HIGH), snap(tainted, small))
    assert isinstance(result, Unschedulable) and result.preemption is None
    assert result.message.endswith(
        "preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.."
    )


def test_victims_freed_but_other_resource_still_short_reports_the_filter_reason() -> None:
    n = node(
        "a",
        cpu=1000,
        memory=GI,
        bound=[bound("low", cpu=1000), bound("keep", memory=GI, priority=200)],
    )
    result = place(pod(cpu="1", memory="512Mi", spec=HIGH), snap(n))
    assert isinstance(result, Unschedulable) and result.preemption is None
    assert result.message == (
        "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory. "
        "preemption: 0/1 nodes are available: 1 Insufficient memory.."
    )


# ---------------------------------------------------------------------------
# Queue order
# ---------------------------------------------------------------------------


def qpod(
    name: str, ts: str | None, priority: int | None = None, duration: str | None = None
) -> Pod:
    meta: dict[str, Any] = {}
    if ts:
        meta["creationTimestamp"] = ts
    if duration is not None:
        meta["annotations"] = {"meshwork.io/expected-duration-seconds": duration}
    return pod(name, spec={"priority": priority} if priority is not None else None, meta=meta)


QUEUE = [
    qpod("late", "2024-01-01T00:00:09Z", priority=5, duration="10"),
    qpod("early-b", "2024-01-01T00:00:01Z", duration="600"),
    qpod("early-a", "2024-01-01T00:00:01Z", duration="bogus"),
    qpod("nots", None, priority=5),
    qpod("mid", "2024-01-01T00:00:05Z", duration="5"),
    qpod("vip", "2024-01-01T00:00:07Z", priority=1000, duration="-3"),
]


@pytest.mark.parametrize(
    ("policy", "order"),
    [
        ("FIFO", ["early-a", "early-b", "mid", "vip", "late", "nots"]),
        ("Priority", ["vip", "late", "nots", "early-a", "early-b", "mid"]),
        ("ShortestJobFirst", ["vip", "late", "nots", "mid", "early-b", "early-a"]),
    ],
)
def test_queue_orders(policy: Any, order: list[str]) -> None:
    assert [p.metadata.name for p in sort_queue(QUEUE, policy)] == order


def test_priority_class_names_resolve_when_priority_is_unset() -> None:
    p = pod("x", spec={"priorityClassName": "high"})
    assert queue_key(p, "Priority", {"high": 10})[0] == -10
    assert requirements_of(p, {"high": 10}).priority == 10


# ---------------------------------------------------------------------------
# bind_many
# ---------------------------------------------------------------------------


def test_bind_many_never_overcommits_and_reports_the_rest() -> None:
    s = snap(node("a", cpu=1000), node("b", cpu=1000))
    result = bind_many([pod(f"p{i}", cpu="400m") for i in range(6)], s)
    assert [b.node_name for b in result.bindings] == ["a", "b", "a", "b"]
    assert [u.pod.name for u in result.unplaced] == ["p4", "p5"]
    assert result.unplaced[0].outcome.message.startswith(
        "0/2 nodes are available: 2 Insufficient cpu."
    )
    assert [n.requested_cpu for n in result.snapshot.nodes] == [800, 800]
    assert s.nodes[0].requested_cpu == 0  # the input snapshot is untouched


def test_bind_many_holds_room_for_a_preemptor() -> None:
    s = snap(node("a", cpu=1000, bound=[bound("low", cpu=1000, priority=0)]))
    result = bind_many(
        [pod("vip", cpu="1", spec=HIGH), pod("next", cpu="1", spec={"priority": 50})], s
    )
    assert result.bindings == ()
    (first, second) = result.unplaced
    assert first.outcome.preemption == Preemption("a", (bound("low", cpu=1000),))
    assert second.outcome.preemption is None  # vip's room is held; "next" cannot evict it
    assert [p.name for p in result.snapshot.nodes[0].pods] == ["vip"]


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

LABEL_KEYS = ["zone", "disk"]
LABEL_VALUES = ["a", "b"]
labels_st = st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=2)


@st.composite
def snapshots(draw: st.DrawFn) -> ClusterSnapshot:
    count = draw(st.integers(1, 5))
    nodes = []
    for i in range(count):
        cpu = draw(st.integers(0, 4)) * 1000
        mem = draw(st.integers(0, 4)) * GI
        cap = draw(st.integers(0, 4))
        pods = []
        used_cpu = used_mem = 0
        for j in range(draw(st.integers(0, cap))):
            c = draw(st.integers(0, 2)) * 500
            m = draw(st.integers(0, 2)) * GI // 2
            if used_cpu + c <= cpu and used_mem + m <= mem:
                used_cpu, used_mem = used_cpu + c, used_mem + m
                pods.append(bound(f"b{i}-{j}", c, m, draw(st.integers(0, 3))))
        taints = [GPU_TAINT] if draw(st.booleans()) and draw(st.booleans()) else []
        nodes.append(
            node(
                f"n{i}",
                cpu,
                mem,
                cap,
                labels=draw(labels_st),
                taints=taints,
                unschedulable=draw(st.integers(0, 9)) == 0,
                bound=pods,
            )
        )
    return snap(*nodes)


@st.composite
def pendings(draw: st.DrawFn) -> list[PodRequirements]:
    out = []
    for i in range(draw(st.integers(0, 12))):
        cpu = draw(st.integers(0, 3)) * 500
        mem = draw(st.integers(0, 3)) * GI // 2
        out.append(
            PodRequirements(
                "ns",
                f"p{i}",
                f"u{i}",
                priority=draw(st.integers(0, 5)),
                preempt_never=draw(st.booleans()),
                cpu=cpu,
                memory=mem,
                nz_cpu=cpu or 100,
                nz_memory=mem or 200 * MI,
                node_selector=tuple(sorted(draw(labels_st).items())),
                tolerations=(TolerationInfo("dedicated", "Exists"),) if draw(st.booleans()) else (),
            )
        )
    return out


def assert_within_allocatable(s: ClusterSnapshot) -> None:
    for n in s.nodes:
        assert n.requested_cpu <= n.alloc_cpu
        assert n.requested_memory <= n.alloc_memory
        assert len(n.pods) <= n.alloc_pods


@settings(max_examples=60, deadline=None)
@given(snapshots(), pendings())
def test_bind_many_never_exceeds_allocatable(
    s: ClusterSnapshot, pods: list[PodRequirements]
) -> None:
    assert_within_allocatable(s)
    result = bind_many(pods, s)
    assert_within_allocatable(result.snapshot)


@settings(max_examples=60, deadline=None)
@given(snapshots(), pendings())
def test_node_selector_is_always_honoured(s: ClusterSnapshot, pods: list[PodRequirements]) -> None:
    by_name = {p.name: p for p in pods}
    result = bind_many(pods, s, SchedulerConfig(preemption=False))
    for b in result.bindings:
        n = s.node(b.node_name)
        assert n is not None
        for key, value in by_name[b.name].node_selector:
            assert n.labels.get(key) == value


@settings(max_examples=60, deadline=None)
@given(snapshots(), pendings(), st.sampled_from(["LeastAllocated", "MostAllocated"]))
def test_bind_many_equals_placing_one_by_one(
    s: ClusterSnapshot, pods: list[PodRequirements], scoring: Any
) -> None:
    config = SchedulerConfig(scoring=scoring)
    result = bind_many(pods, s, config)
    current = s
    bindings, unplaced = [], []
    for p in pods:
        outcome = place(p, current, config)
        if isinstance(outcome, Placement):
            bindings.append((p.name, outcome.node_name))
        else:
            unplaced.append((p.name, outcome))
        current = apply_outcome(current, p, outcome)
    assert [(b.name, b.node_name) for b in result.bindings] == bindings
    assert [(u.pod.name, u.outcome) for u in result.unplaced] == unplaced
    assert result.snapshot == current


@settings(max_examples=40, deadline=None)
@given(snapshots(), pendings(), st.integers(0, 2**32))
def test_same_input_same_output(s: ClusterSnapshot, pods: list[PodRequirements], seed: int) -> None:
    def run() -> tuple[BindResult, list[Placement | Unschedulable]]:
        config = SchedulerConfig(rng=random.Random(seed))
        return bind_many(pods, s, config), [
            place(p, s, SchedulerConfig(rng=random.Random(seed))) for p in pods
        ]

    assert run() == run()
    assert bind_many(pods, s) == bind_many(pods, s)

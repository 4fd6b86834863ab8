"""Scheduler benchmark: pods placed per second by ``bind_many``.

Run: ``python bench/scheduler_bench.py`` (a few seconds). It builds 100
registered nodes of varied sizes (10 of them tainted ``dedicated=gpu``, zone
and disk labels on all) and 5,000 pending pods (varied requests; a fifth
tolerate the GPU taint and select GPU nodes, some select SSD nodes, some
carry a required node affinity on zones), then prints:

1. pods/s for ``bind_many`` from Pod models (requests parsed per pod, as the
   scheduler shell would do), and from precomputed ``PodRequirements``;
2. the same with MostAllocated (bin-pack) scoring;
3. how many pods were bound and how many stayed Pending;

beside kube-scheduler's documented reference (about 100-300 pods/s on its
scheduling-throughput SLO tests) and this project's aim (>= 1,000 pods/s).
Only this file's numbers are measured here; nothing is asserted.
"""

from __future__ import annotations

import argparse
import random
import time

from meshwork.core.scheduler import SchedulerConfig, bind_many
from meshwork.core.scheduler_filters import build_snapshot, requirements_of
from meshwork.model.base import ObjectMeta
from meshwork.model.container import Container, ResourceRequirements
from meshwork.model.core import Node, NodeCondition, NodeSpec, NodeStatus, Taint
from meshwork.model.corev1 import NodeSelector, NodeSelectorRequirement, NodeSelectorTerm
from meshwork.model.pod import Affinity, NodeAffinity, Pod, PodSpec, Toleration

REFERENCE = "kube-scheduler: ~100-300 pods/s documented; aim here >= 1,000 pods/s"
NODE_SIZES = [(4, 16), (8, 32), (16, 64), (32, 128), (64, 256)]  # (cores, GiB)
GPU_NODES = 10


def make_nodes(count: int, rng: random.Random) -> list[Node]:
    nodes = []
    for i in range(count):
        cores, gib = NODE_SIZES[rng.randrange(len(NODE_SIZES))]
        gpu = i < GPU_NODES
        labels = {"zone": "abc"[i % 3], "disktype": "ssd" if i % 2 else "hdd"}
        if gpu:
            labels["accelerator"] = "gpu"
        nodes.append(
            Node(
                metadata=ObjectMeta(name=f"node-{i:03d}", labels=labels),
                spec=NodeSpec(
                    taints=[Taint(key="dedicated", value="gpu", effect="NoSchedule")]
                    if gpu
                    else None
                ),
                status=NodeStatus(
                    allocatable={"cpu": str(cores), "memory": f"{gib}Gi", "pods": "110"},
                    conditions=[NodeCondition(type="Ready", status="True")],
                ),
            )
        )
    return nodes


def make_pods(count: int, rng: random.Random) -> list[Pod]:
    pods = []
    for i in range(count):
        cpu = rng.choice(["50m", "100m", "250m", "500m"])
        mem = rng.choice(["64Mi", "128Mi", "256Mi", "512Mi", "1Gi"])
        spec = PodSpec(
            containers=[
                Container(
                    name="app",
                    image="bench:1",
                    resources=ResourceRequirements(requests={"cpu": cpu, "memory": mem}),
                )
            ]
        )
        kind = i % 10
        if kind < 2:  # GPU work: tolerate the taint and select GPU nodes
            spec.tolerations = [
                Toleration(key="dedicated", operator="Equal", value="gpu", effect="NoSchedule")
            ]
            spec.node_selector = {"accelerator": "gpu"}
        elif kind < 5:
            spec.node_selector = {"disktype": "ssd"}
        elif kind == 5:
            term = NodeSelectorTerm(
                match_expressions=[
                    NodeSelectorRequirement(key="zone", operator="In", values=["a", "b"])
                ]
            )
            spec.affinity = Affinity(
                node_affinity=NodeAffinity(
                    required_during_scheduling_ignored_during_execution=NodeSelector(
                        node_selector_terms=[term]
                    )
                )
            )
        pods.append(
            Pod(
                metadata=ObjectMeta(name=f"pod-{i:05d}", namespace="bench", uid=f"uid-{i}"),
                spec=spec,
            )
        )
    return pods


def run(
    label: str, pods: list[object], snapshot: object, config: SchedulerConfig, repeat: int
) -> None:
    best = float("inf")
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = bind_many(pods, snapshot, config)  # type: ignore[arg-type]
        best = min(best, time.perf_counter() - start)
    assert result is not None
    rate = len(pods) / best
    print(
        f"{label:<44} {rate:>9,.0f} pods/s  ({best * 1000:.0f} ms; "
        f"{len(result.bindings)} bound, {len(result.unplaced)} pending)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3, help="report the best of N runs")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one run")
    args = parser.parse_args()
    rng = random.Random(42)
    nodes = make_nodes(args.nodes, rng)
    pods = make_pods(args.pods, rng)
    start = time.perf_counter()
    snapshot = build_snapshot(nodes, [])
    print(f"snapshot of {args.nodes} nodes built in {(time.perf_counter() - start) * 1000:.1f} ms")
    reqs = [requirements_of(p) for p in pods]
    print(f"{args.pods} pending pods over {args.nodes} nodes; {REFERENCE}")
    run(
        "bind_many from Pod models (LeastAllocated)",
        list(pods),
        snapshot,
        SchedulerConfig(),
        args.repeat,
    )
    run(
        "bind_many from PodRequirements (LeastAllocated)",
        list(reqs),
        snapshot,
        SchedulerConfig(),
        args.repeat,
    )
    run(
        "bind_many from Pod models (MostAllocated)",
        list(pods),
        snapshot,
        SchedulerConfig("MostAllocated"),
        args.repeat,
    )
    run(
        "bind_many, random tie-break",
        list(pods),
        snapshot,
        SchedulerConfig(rng=random.Random(1)),
        args.repeat,
    )
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        bind_many(pods, snapshot)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(15)


if __name__ == "__main__":
    main()

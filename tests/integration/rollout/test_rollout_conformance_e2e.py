"""Argo Rollouts' own example manifests (../shared/conformance/argo-rollouts), applied unchanged to a
real server with its agent, each checked against what Argo's docs say it does.

Two stand-ins make the manifests runnable here without changing them:

* The analysis templates run ``alpine:3.8`` Jobs with ``command: [sh, -c]``; alpine's ``sh`` is
  busybox ash, which has ``$RANDOM`` (``random-fail`` flips a coin with it). Debian's ``/bin/sh``
  (dash) has none, so the node is started with a directory first on its PATH where ``sh`` is bash
  (which has ``$RANDOM`` too); the pods inherit the agent's PATH.
* ``nginx:1.19-alpine`` (the e2e manifests' image) is not in the built-in image catalogue: the
  node's ``images.yaml`` maps it to the helloworld example answering on both ports those
  manifests name (80 and 8080), as nginx answers whatever it is configured for.

The node runs an ingress gateway on a free local port for Gateway port 80, so requests to the
VirtualServices bound to a Gateway (the header-routing manifest's) are real traffic, sent with the
manifest's host as the Host header (no DNS involved).

A test skips, saying why, when ../shared is not checked out beside the repository.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.node import Node, running_node, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[4] / "shared" / "conformance" / "argo-rollouts"
ARGO = "/apis/argoproj.io/v1alpha1"
RO = f"{ARGO}/namespaces/default/rollouts"
RUNS = f"{ARGO}/namespaces/default/analysisruns"
PLURALS = {
    "Service": "/api/v1/namespaces/default/services",
    "Deployment": "/apis/apps/v1/namespaces/default/deployments",
    "Rollout": RO,
    "AnalysisTemplate": f"{ARGO}/namespaces/default/analysistemplates",
    "ClusterAnalysisTemplate": f"{ARGO}/clusteranalysistemplates",
    "VirtualService": "/apis/networking.istio.io/v1alpha3/namespaces/default/virtualservices",
    "DestinationRule": "/apis/networking.istio.io/v1alpha3/namespaces/default/destinationrules",
    "Gateway": "/apis/networking.istio.io/v1alpha3/namespaces/default/gateways",
}
MIRROR_NS = "mirror"  # istio-mirror.yaml names its objects as istio-host-split.yaml does: apart from it


def in_ns(path: str, namespace: str) -> str:
    return path.replace("/namespaces/default/", f"/namespaces/{namespace}/")


NGINX_TAGS = ("nginx:1.19-alpine", "nginx:1.20-alpine")
# The helloworld example on port 80 and 8080 at once (a failed bind of 80 leaves 8080 serving).
NGINX = (f"{sys.executable} -m meshwork.examples.helloworld 80 & "
         f"exec {sys.executable} -m meshwork.examples.helloworld 8080")  # fmt: skip


INGRESS: dict[str, int] = {}  # the ingress gateway's port for Gateway port 80
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def through_gateway(path: str, host: str, headers: dict[str, str] | None = None) -> str:
    """The body of a GET through the ingress gateway ("" when it did not answer 200)."""
    req = urllib.request.Request(f"http://127.0.0.1:{INGRESS['port']}{path}", headers={"Host": host, **(headers or {})})
    try:
        with _DIRECT.open(req, timeout=5) as reply:
            return str(reply.read().decode())
    except (urllib.error.URLError, OSError):
        return ""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    home = tmp_path_factory.mktemp("conformance")
    shbin = home / "shbin"
    shbin.mkdir()
    (shbin / "sh").symlink_to("/usr/bin/bash" if os.path.exists("/usr/bin/bash") else "/bin/bash")
    catalogue = {tag: {"command": ["/bin/sh", "-c", NGINX], "env": {"SERVICE_VERSION": tag.split(":")[1]}}
                 for tag in NGINX_TAGS}  # fmt: skip
    (home / "images.yaml").write_text(yaml.safe_dump(catalogue))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        INGRESS["port"] = sock.getsockname()[1]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{shbin}{os.pathsep}{os.environ.get('PATH', '')}")
        with running_node(home, "--ingress-gateway", "--ingress-ports", f"80:{INGRESS['port']}") as n:
            mp.undo()
            yield n


def docs_of(*parts: str) -> list[dict[str, Any]]:
    path = ROOT.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared conformance manifests are not checked out beside the repo)")
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def apply_all(node: Node, docs: list[dict[str, Any]], namespace: str = "default") -> None:
    if namespace != "default":
        node.http.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    for doc in docs:
        reply = node.http.post(in_ns(PLURALS[doc["kind"]], namespace), doc)
        assert reply.status in (201, 409), reply.body  # 409: a template another test applied already


def status(node: Node, name: str, namespace: str = "default") -> dict[str, Any]:
    return dict((node.get(in_ns(f"{RO}/{name}", namespace)) or {}).get("status") or {})


def phase_is(node: Node, name: str, *phases: str, ns: str = "default") -> dict[str, Any] | None:
    s = status(node, name, ns)
    return s if s.get("phase") in phases else None


def replicasets(node: Node, name: str, namespace: str = "default") -> dict[str, int]:
    """The Rollout's ReplicaSets and their sizes."""
    items = (node.get(f"/apis/apps/v1/namespaces/{namespace}/replicasets") or {}).get("items") or []
    return {rs["metadata"]["name"]: rs["spec"]["replicas"] for rs in items
            if any(o["kind"] == "Rollout" and o["name"] == name for o in rs["metadata"].get("ownerReferences") or ())}


def set_image(node: Node, name: str, image: str, namespace: str = "default") -> None:
    ro = node.get(in_ns(f"{RO}/{name}", namespace))
    assert ro is not None
    ro["spec"]["template"]["spec"]["containers"][0]["image"] = image
    assert node.http.put(in_ns(f"{RO}/{name}", namespace), ro).status == 200


def promote(node: Node, name: str, namespace: str = "default") -> None:
    reply = node.http.patch(in_ns(f"{RO}/{name}/status", namespace), {"status": {"pauseConditions": None}})
    assert reply.status == 200, reply.body


def run(node: Node, name: str) -> dict[str, Any] | None:
    return node.get(f"{RUNS}/{name}")


def selector_hash(node: Node, service: str, namespace: str = "default") -> str | None:
    svc = node.get(f"/api/v1/namespaces/{namespace}/services/{service}") or {}
    return ((svc.get("spec") or {}).get("selector") or {}).get("rollouts-pod-template-hash")


def vs_http(node: Node, name: str, namespace: str = "default") -> list[dict[str, Any]]:
    vs = node.get(in_ns(f"{PLURALS['VirtualService']}/{name}", namespace)) or {}
    return list((vs.get("spec") or {}).get("http") or [])


def weights(route: dict[str, Any]) -> list[tuple[str, int]]:
    return [(d["destination"]["host"], d.get("weight", 0)) for d in route["route"]]


def finished(node: Node, name: str) -> dict[str, Any] | None:
    got = run(node, name)
    return got if got and (got.get("status") or {}).get("phase") in ("Successful", "Failed", "Error") else None


# ---------------------------------------------------------------------------
# Analysis templates and the Rollouts that use them
# ---------------------------------------------------------------------------


def test_analysis_templates_apply_and_validate(node: Node) -> None:
    """analysis-templates.yaml and cluster-analysis-templates.yaml: stored as written (job providers,
    count, interval, failureLimit), and a template the strict validation refuses is refused."""
    docs = [*docs_of("examples", "analysis-templates.yaml"), *docs_of("examples", "cluster-analysis-templates.yaml")]
    apply_all(node, docs)
    for doc in docs:
        path = PLURALS[doc["kind"]] + "/" + doc["metadata"]["name"]
        stored = node.get(path)
        assert stored is not None and stored["spec"] == doc["spec"], (path, stored)
    bad = {**docs[0], "metadata": {"name": "bad"},
           "spec": {"metrics": [{**docs[0]["spec"]["metrics"][0], "failureLimt": 1}]}}  # fmt: skip
    reply = node.http.post(PLURALS["AnalysisTemplate"], bad)
    assert reply.status == 422 and "failureLimt" in reply.body.decode(), reply.body


def test_rollout_analysis_step_runs_both_templates_at_25_percent(node: Node) -> None:
    """rollout-analysis-step.yaml: 25 % (1 of 4 pods), then one AnalysisRun of both templates
    (random-fail, twice 5 s apart, failureLimit 1; always-pass once). The Rollout waits for it: a
    Successful run promotes, a Failed one aborts with the canary weight back to 0."""
    apply_all(node, docs_of("examples", "analysis-templates.yaml"))
    apply_all(node, docs_of("examples", "cluster-analysis-templates.yaml"))
    apply_all(node, docs_of("examples", "rollout-analysis-step.yaml"))
    name = "rollout-analysis-step"
    blue = wait_for(lambda: phase_is(node, name, "Healthy"), 60, "blue")["stableRS"]
    set_image(node, name, "argoproj/rollouts-demo:yellow")
    yellow = wait_for(lambda: (s := status(node, name)).get("currentPodHash") != blue and s.get("currentPodHash"),
                      30, "the new revision")  # fmt: skip
    run_name = f"{name}-{yellow}-2-1"
    created = wait_for(lambda: run(node, run_name), 60, "the step's AnalysisRun")
    assert replicasets(node, name) == {f"{name}-{blue}": 3, f"{name}-{yellow}": 1}
    assert [m["name"] for m in created["spec"]["metrics"]] == ["random-fail", "pass"]
    done = wait_for(lambda: finished(node, run_name), 60, "the AnalysisRun to finish")
    results = {r["name"]: r for r in done["status"]["metricResults"]}
    assert results["pass"]["phase"] == "Successful" and results["pass"]["count"] == 1
    flips = results["random-fail"]
    assert flips["count"] == len(flips["measurements"]) >= 1
    # Argo leaves out counters that are zero (``failed,omitempty``): no failure at all has no key.
    if flips.get("failed", 0) > 1:  # more failures than failureLimit: the run fails, the update aborts
        assert done["status"]["phase"] == "Failed" and flips["phase"] == "Failed"
        end = wait_for(lambda: phase_is(node, name, "Degraded"), 30, "the abort")
        assert end["stableRS"] == blue and end["canary"]["weights"]["canary"]["weight"] == 0
        wait_for(lambda: replicasets(node, name) == {f"{name}-{blue}": 4, f"{name}-{yellow}": 0}, 30, "back to blue")
    else:
        assert done["status"]["phase"] == "Successful" and flips["count"] == 2
        wait_for(lambda: (s := phase_is(node, name, "Healthy")) and s["stableRS"] == yellow, 30, "the promotion")
        wait_for(lambda: replicasets(node, name) == {f"{name}-{blue}": 0, f"{name}-{yellow}": 4}, 30, "all yellow")
    print(f"random-fail measured {[m['phase'] for m in flips['measurements']]}: run {done['status']['phase']}")


def test_rollout_background_analysis_runs_beside_the_steps(node: Node) -> None:
    """rollout-background-analysis.yaml: the AnalysisRun ``<rollout>-<hash>-<revision>`` starts with
    the update and runs beside the steps (25 %, then an indefinite pause); a failure aborts the
    update, a success leaves the pause to the user, whose promotion completes the update."""
    apply_all(node, docs_of("examples", "analysis-templates.yaml"))
    apply_all(node, docs_of("examples", "rollout-background-analysis.yaml"))
    name = "rollout-background-analysis"
    blue = wait_for(lambda: phase_is(node, name, "Healthy"), 60, "blue")["stableRS"]
    set_image(node, name, "argoproj/rollouts-demo:yellow")
    yellow = wait_for(lambda: (s := status(node, name)).get("currentPodHash") != blue and s.get("currentPodHash"),
                      30, "the new revision")  # fmt: skip
    run_name = f"{name}-{yellow}-2"
    wait_for(lambda: run(node, run_name), 30, "the background AnalysisRun")
    done = wait_for(lambda: finished(node, run_name), 60, "the background AnalysisRun to finish")
    [flips] = done["status"]["metricResults"]
    if done["status"]["phase"] == "Failed":
        assert flips["failed"] == 2
        end = wait_for(lambda: phase_is(node, name, "Degraded"), 30, "the abort")
        assert end["stableRS"] == blue and end["canary"]["currentBackgroundAnalysisRunStatus"]["status"] == "Failed"
        assert end["canary"]["weights"]["canary"]["weight"] == 0
        wait_for(lambda: replicasets(node, name) == {f"{name}-{blue}": 4, f"{name}-{yellow}": 0}, 30, "back to blue")
    else:
        assert done["status"]["phase"] == "Successful" and flips["count"] == 2
        paused = wait_for(lambda: phase_is(node, name, "Paused"), 30, "the indefinite pause")
        assert paused["currentStepIndex"] == 1
        assert paused["canary"]["currentBackgroundAnalysisRunStatus"] == {"name": run_name, "status": "Successful"}
        assert replicasets(node, name) == {f"{name}-{blue}": 3, f"{name}-{yellow}": 1}
        promote(node, name)
        wait_for(lambda: (s := phase_is(node, name, "Healthy")) and s["stableRS"] == yellow, 30, "the promotion")
        wait_for(lambda: replicasets(node, name) == {f"{name}-{blue}": 0, f"{name}-{yellow}": 4}, 30, "all yellow")
    print(f"background random-fail measured {[m['phase'] for m in flips['measurements']]}")


# ---------------------------------------------------------------------------
# Replica-count updates: rolling update and workloadRef
# ---------------------------------------------------------------------------


def test_rollout_rolling_update_within_max_surge_and_max_unavailable(node: Node) -> None:
    """rollout-rolling-update.yaml: a canary with no steps is a rolling update to 100 % at once,
    never more than replicas + maxSurge (6) pods asked for, nor fewer than replicas - maxUnavailable
    (4) of the asked-for pods' old and new sides available."""
    apply_all(node, docs_of("examples", "rollout-rolling-update.yaml"))
    name = "rollout-rollingupdate"
    blue = wait_for(lambda: phase_is(node, name, "Healthy"), 60, "blue")["stableRS"]
    assert "currentStepIndex" not in status(node, name)
    set_image(node, name, "argoproj/rollouts-demo:yellow")
    seen: list[tuple[int, int]] = []

    def done() -> bool:
        sizes = replicasets(node, name)
        live = [p for p in node.pods("default", f"app={name}") if not p["metadata"].get("deletionTimestamp")]
        ready = [p for p in live if any(c["type"] == "Ready" and c["status"] == "True"
                                        for c in (p.get("status") or {}).get("conditions") or ())]  # fmt: skip
        seen.append((max(sum(sizes.values()), len(live)), len(ready)))
        s = status(node, name)
        return s.get("phase") == "Healthy" and s.get("stableRS") != blue and len(sizes) == 2 and \
            sizes.get(f"{name}-{blue}") == 0  # fmt: skip

    wait_for(done, 90, "the rolling update")
    assert max(total for total, _ in seen) <= 6, seen
    assert min(avail for _, avail in seen) >= 4, seen
    assert replicasets(node, name)[f"{name}-{status(node, name)['stableRS']}"] == 5


def test_workload_ref_takes_the_deployments_template(node: Node) -> None:
    """workload-ref.yaml: the Rollout runs the Deployment's pod template (the Deployment itself stays
    at 0 replicas, no scaleDown being given); a change to the Deployment's template is an update:
    setWeight 20 (1 of 5 pods), a 10 s pause, then the new template is stable."""
    apply_all(node, docs_of("examples", "workload-ref", "workload-ref.yaml"))
    name = "rollout-ref-deployment"
    blue = wait_for(lambda: phase_is(node, name, "Healthy"), 60, "blue")["stableRS"]
    assert replicasets(node, name) == {f"{name}-{blue}": 5}
    deploy_rss = [rs for rs in (node.get("/apis/apps/v1/namespaces/default/replicasets") or {}).get("items") or []
                  if any(o["kind"] == "Deployment" for o in rs["metadata"].get("ownerReferences") or ())
                  and rs["metadata"]["name"].startswith(name)]  # fmt: skip
    assert all(rs["spec"]["replicas"] == 0 for rs in deploy_rss), deploy_rss
    pods = node.pods("default", f"app={name}")
    assert len(pods) == 5 and all(p["metadata"]["labels"]["rollouts-pod-template-hash"] == blue for p in pods)
    assert all(p["spec"]["containers"][0]["image"] == "argoproj/rollouts-demo:blue" for p in pods)
    path = f"{PLURALS['Deployment']}/{name}"
    deploy = node.get(path)
    assert deploy is not None and deploy["spec"]["replicas"] == 0
    deploy["spec"]["template"]["spec"]["containers"][0]["image"] = "argoproj/rollouts-demo:yellow"
    assert node.http.put(path, deploy).status == 200
    paused = wait_for(lambda: phase_is(node, name, "Paused"), 60, "setWeight 20 and the 10s pause")
    yellow = paused["currentPodHash"]
    assert yellow != blue and paused["currentStepIndex"] == 1
    assert replicasets(node, name) == {f"{name}-{blue}": 4, f"{name}-{yellow}": 1}
    wait_for(lambda: (s := phase_is(node, name, "Healthy")) and s["stableRS"] == yellow, 30, "the end of the pause")
    wait_for(lambda: replicasets(node, name) == {f"{name}-{blue}": 0, f"{name}-{yellow}": 5}, 30, "all yellow")
    assert (node.get(path) or {})["spec"]["replicas"] == 0


# ---------------------------------------------------------------------------
# Istio: host split, header routes, mirror routes
# ---------------------------------------------------------------------------


def needs_port_80() -> None:
    if os.geteuid() != 0:
        pytest.skip("istio-host-split.yaml's container listens on port 80, which needs root here")


def test_istio_host_split_e2e(node: Node) -> None:
    """test/e2e/istio/istio-host-split.yaml: the host-split VirtualService goes 90/10 at setWeight 10,
    the canary and stable Services select their ReplicaSets, and promotion sends all to the new one."""
    needs_port_80()
    apply_all(node, docs_of("test", "e2e", "istio", "istio-host-split.yaml"))
    name = "istio-host-split"
    blue = wait_for(lambda: phase_is(node, name, "Healthy"), 60, "the first revision")["stableRS"]
    [primary] = vs_http(node, f"{name}-vsvc")
    assert weights(primary) == [(f"{name}-stable", 100), (f"{name}-canary", 0)]
    set_image(node, name, NGINX_TAGS[1])
    paused = wait_for(lambda: phase_is(node, name, "Paused"), 60, "setWeight 10")
    new = paused["currentPodHash"]
    [primary] = vs_http(node, f"{name}-vsvc")
    assert weights(primary) == [(f"{name}-stable", 90), (f"{name}-canary", 10)]
    assert selector_hash(node, f"{name}-stable") == blue and selector_hash(node, f"{name}-canary") == new
    promote(node, name)
    wait_for(lambda: (s := phase_is(node, name, "Healthy")) and s["stableRS"] == new, 60, "the promotion")
    [primary] = vs_http(node, f"{name}-vsvc")
    assert weights(primary) == [(f"{name}-stable", 100), (f"{name}-canary", 0)]
    assert selector_hash(node, f"{name}-stable") == new


def test_istio_header_routes_are_placed_first_and_removed(node: Node) -> None:
    """test/e2e/header-routing/istio-hr-host.yaml: setHeaderRoute puts the managed route
    ``set-header-1`` (header ``agent`` matching the regex -> canary, 100 %) before ``primary``; the
    next setHeaderRoute replaces its match; one without a match removes it, as Argo does."""
    apply_all(node, docs_of("test", "e2e", "header-routing", "istio-hr-host.yaml"))
    name, vs = "rollouts-demo", "rollouts-demo-vsvc"
    wait_for(lambda: phase_is(node, name, "Healthy"), 60, "the first revision")
    assert [(r["name"], weights(r)) for r in vs_http(node, vs)] == \
        [("primary", [("stable-service", 100), ("canary-service", 0)])]  # fmt: skip
    set_image(node, name, NGINX_TAGS[1])

    def at_pause(step: int) -> list[dict[str, Any]]:
        wait_for(lambda: (s := phase_is(node, name, "Paused")) and s["currentStepIndex"] == step, 60, f"step {step}")
        return vs_http(node, vs)

    def header_route(regex: str) -> dict[str, Any]:
        return {"name": "set-header-1", "match": [{"headers": {"agent": {"regex": regex}}}],
                "route": [{"destination": {"host": "canary-service"}, "weight": 100}]}  # fmt: skip

    # Through the ingress gateway (the VirtualService is bound to it): the app answers /color with
    # its image's tag; 1.19-alpine is stable, 1.20-alpine the canary.
    def answers(agent: str | None, n: int = 40) -> set[str]:
        return {through_gateway("/color", "rollouts-demo.com", {"agent": agent} if agent else None) for _ in range(n)}

    canary_only, mixed = {'"1.20-alpine"'}, {'"1.19-alpine"', '"1.20-alpine"'}
    first, primary = at_pause(2)
    assert first == header_route("firefox(.*)")
    assert weights(primary) == [("stable-service", 80), ("canary-service", 20)]
    wait_for(lambda: answers("firefox 120") == canary_only, 30, "firefox requests to reach only the canary")
    wait_for(lambda: answers(None) == mixed, 30, "other requests to be split 80/20")
    promote(node, name)
    first, primary = at_pause(4)
    assert first == header_route("chrome(.*)")
    wait_for(lambda: answers("chrome 99") == canary_only, 30, "chrome requests to reach only the canary")
    wait_for(lambda: answers("firefox 120") == mixed, 30, "firefox requests to be split again")
    promote(node, name)
    [primary] = at_pause(7)
    assert primary["name"] == "primary" and weights(primary) == [("stable-service", 60), ("canary-service", 40)]
    wait_for(lambda: answers("chrome 99") == mixed, 30, "the header route to be gone from the gateway")
    promote(node, name)
    wait_for(lambda: (s := phase_is(node, name, "Healthy")) and s["currentStepIndex"] == 8, 60, "the promotion")
    assert [(r["name"], weights(r)) for r in vs_http(node, vs)] == \
        [("primary", [("stable-service", 100), ("canary-service", 0)])]  # fmt: skip


def test_istio_mirror_route_copies_matching_requests_to_the_canary(node: Node) -> None:
    """examples/istio/istio-mirror.yaml: setCanaryScale 50 % runs 2 of 4 canary pods with no weight;
    setMirrorRoute puts ``mirror-route`` (POST /color*, routed as ``primary``, mirrored 50 % to the
    canary service) before ``primary``; the route is removed when the update completes."""
    apply_all(node, docs_of("examples", "istio", "istio-mirror.yaml"), MIRROR_NS)
    name, vs = "istio-host-split", "istio-host-split-vsvc"
    green = wait_for(lambda: phase_is(node, name, "Healthy", ns=MIRROR_NS), 60, "green")["stableRS"]
    set_image(node, name, "argoproj/rollouts-demo:blue", MIRROR_NS)
    paused = wait_for(lambda: (s := phase_is(node, name, "Paused", ns=MIRROR_NS)) and s["currentStepIndex"] == 2 and s, 60,
                      "the pause after setMirrorRoute")  # fmt: skip
    blue = paused["currentPodHash"]
    assert replicasets(node, name, MIRROR_NS) == {f"{name}-{green}": 4, f"{name}-{blue}": 2}
    mirror, primary = vs_http(node, vs, MIRROR_NS)
    assert mirror == {
        "name": "mirror-route",
        "match": [{"method": {"exact": "POST"}, "uri": {"prefix": "/color"}}],
        "route": [{"destination": {"host": "istio-host-split-stable"}, "weight": 100},
                  {"destination": {"host": "istio-host-split-canary"}, "weight": 0}],
        "mirror": {"host": "istio-host-split-canary"},
        "mirrorPercentage": {"value": 50.0},
    }, mirror  # fmt: skip
    assert primary["name"] == "primary" and weights(primary) == [(f"{name}-stable", 100), (f"{name}-canary", 0)]
    assert selector_hash(node, f"{name}-canary", MIRROR_NS) == blue and selector_hash(node, f"{name}-stable", MIRROR_NS) == green
    promote(node, name, MIRROR_NS)
    wait_for(lambda: (s := phase_is(node, name, "Healthy", ns=MIRROR_NS)) and s["stableRS"] == blue, 60, "the promotion")
    assert [r["name"] for r in vs_http(node, vs, MIRROR_NS)] == ["primary"]


# ---------------------------------------------------------------------------
# An experiment step: a preview ReplicaSet beside the production pods
# ---------------------------------------------------------------------------


def meshwork(node: Node, *args: str) -> str:
    env = {**os.environ, "MESHWORK_SERVER": node.server.url, "MESHWORK_TOKEN": node.server.token}
    ran = subprocess.run([sys.executable, "-m", "meshwork", *args], env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran.stdout


def endpoints(node: Node, service: str) -> set[str]:
    ep = node.get(f"/api/v1/namespaces/default/endpoints/{service}") or {}
    return {a["ip"] for s in ep.get("subsets") or () for a in s.get("addresses") or ()}


def test_rollout_canary_preview_runs_an_experiment_until_terminated(node: Node) -> None:
    """rollout-canary-preview.yaml: the experiment step runs one pod of the new template labelled
    ``app: rollout-canary-preview`` (so the preview Service reaches it and the production one does
    not), with no duration it runs until terminated (``meshwork rollout terminate``, as
    ``kubectl argo rollouts terminate``), and then the Rollout goes through the rest: to 100 %."""
    apply_all(node, docs_of("examples", "rollout-canary-preview.yaml"))
    name = "rollout-canary-preview"
    blue = wait_for(lambda: phase_is(node, name, "Healthy"), 60, "blue")["stableRS"]
    set_image(node, name, "argoproj/rollouts-demo:yellow")
    yellow = wait_for(lambda: (s := status(node, name)).get("currentPodHash") != blue and s.get("currentPodHash"),
                      30, "the new revision")  # fmt: skip
    exp_name = f"{name}-{yellow}-2-0"
    exp_path = f"{ARGO}/namespaces/default/experiments/{exp_name}"
    running = wait_for(lambda: (e := node.get(exp_path)) and (e.get("status") or {}).get("phase") == "Running" and e,
                       60, "the Experiment to run")  # fmt: skip
    assert running["metadata"]["ownerReferences"][0]["name"] == name
    assert [t["status"] for t in running["status"]["templateStatuses"]] == ["Running"]
    preview = node.pods("default", "app=rollout-canary-preview")
    assert len(preview) == 1 and preview[0]["spec"]["containers"][0]["image"] == "argoproj/rollouts-demo:yellow"
    production = node.pods("default", "app=rollout-canary-production")
    assert len(production) == 3 and all(p["spec"]["containers"][0]["image"].endswith(":blue") for p in production)
    wait_for(lambda: endpoints(node, "rollout-canary-preview") == {preview[0]["status"]["podIP"]}, 30,
             "the preview Service to reach the preview pod")  # fmt: skip
    assert preview[0]["status"]["podIP"] not in endpoints(node, "rollout-canary-production")
    st = status(node, name)
    assert st["phase"] == "Progressing" and st["currentStepIndex"] == 0 and st["canary"]["currentExperiment"] == exp_name
    assert "terminated" in meshwork(node, "rollout", "terminate", f"rollout/{name}")
    wait_for(lambda: (s := phase_is(node, name, "Healthy")) and s["stableRS"] == yellow, 60, "the rest of the steps")
    ended = node.get(exp_path) or {}
    assert ended["status"]["phase"] == "Successful", ended["status"]
    wait_for(lambda: not node.pods("default", "app=rollout-canary-preview"), 30, "the preview pod to go")
    wait_for(lambda: replicasets(node, name) == {f"{name}-{blue}": 0, f"{name}-{yellow}": 3}, 30, "all yellow")

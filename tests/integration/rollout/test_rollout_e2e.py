"""Rollouts end to end: a real server with its agent runs the pods; the Rollout controller
creates and scales the ReplicaSets, patches the Services, pauses and promotes."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.node import Node, http_container, running_node, wait_for

pytestmark = pytest.mark.integration

CONFORMANCE = Path(__file__).resolve().parents[4] / "shared" / "conformance" / "argo-rollouts" / "examples"
RO = "/apis/argoproj.io/v1alpha1/namespaces/default/rollouts"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with running_node(tmp_path_factory.mktemp("rollout")) as n:
        yield n


def status(node: Node, name: str) -> dict[str, Any]:
    obj = node.get(f"{RO}/{name}") or {}
    return dict(obj.get("status") or {})


def replicasets(node: Node, name: str) -> dict[str, int]:
    items = (node.get("/apis/apps/v1/namespaces/default/replicasets") or {}).get("items") or []
    return {rs["metadata"]["name"]: rs["spec"]["replicas"] for rs in items
            if rs["metadata"]["name"].startswith(f"{name}-")}  # fmt: skip


def selector_hash(node: Node, service: str) -> str | None:
    svc = node.get(f"/api/v1/namespaces/default/services/{service}") or {}
    return ((svc.get("spec") or {}).get("selector") or {}).get("rollouts-pod-template-hash")


def promote(node: Node, name: str) -> None:
    reply = node.http.patch(f"{RO}/{name}/status", {"status": {"pauseConditions": None}})
    assert reply.status == 200, reply.body


def test_canary_without_traffic_routing_steps_pause_and_promote(node: Node) -> None:
    body = {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "basic"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "basic"}},
                 "template": {"metadata": {"labels": {"app": "basic"}}, "spec": {"containers": [http_container()]}},
                 "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}},
    }  # fmt: skip
    node.apply(RO, body)
    first = wait_for(lambda: status(node, "basic").get("phase") == "Healthy" and status(node, "basic"), 60,
                     "the first revision to be Healthy")  # fmt: skip
    stable = first["stableRS"]
    updated = copy.deepcopy(node.get(f"{RO}/basic"))
    assert updated is not None
    updated["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "V", "value": "2"}]
    assert node.http.put(f"{RO}/basic", updated).status == 200
    paused = wait_for(lambda: (s := status(node, "basic")).get("phase") == "Paused" and s, 60, "the pause step")
    canary = paused["currentPodHash"]
    assert canary != stable and paused["currentStepIndex"] == 1
    assert replicasets(node, "basic") == {f"basic-{stable}": 1, f"basic-{canary}": 1}
    assert paused["canary"]["weights"]["canary"]["weight"] == 50
    promote(node, "basic")
    done = wait_for(lambda: (s := status(node, "basic")).get("phase") == "Healthy" and s, 60, "promotion")
    assert done["stableRS"] == canary
    wait_for(lambda: replicasets(node, "basic") == {f"basic-{stable}": 0, f"basic-{canary}": 2}, 30,
             "the old ReplicaSet scaled down")  # fmt: skip
    events = (node.get("/api/v1/namespaces/default/events") or {}).get("items") or []
    reasons = {e["reason"] for e in events if e["involvedObject"].get("name") == "basic"}
    assert {"RolloutStepCompleted", "RolloutPaused", "RolloutCompleted"} <= reasons


def test_conformance_bluegreen_preview_then_promote(node: Node) -> None:
    docs = list(yaml.safe_load_all((CONFORMANCE / "rollout-bluegreen.yaml").read_text()))
    for doc in docs:
        path = RO if doc["kind"] == "Rollout" else "/api/v1/namespaces/default/services"
        node.apply(path, doc)
    first = wait_for(lambda: (s := status(node, "rollout-bluegreen")).get("phase") == "Healthy" and s, 60,
                     "blue to be Healthy")  # fmt: skip
    blue = first["stableRS"]
    assert selector_hash(node, "rollout-bluegreen-active") == blue == selector_hash(node, "rollout-bluegreen-preview")
    updated = node.get(f"{RO}/rollout-bluegreen")
    assert updated is not None
    updated["spec"]["template"]["spec"]["containers"][0]["image"] = "argoproj/rollouts-demo:yellow"
    assert node.http.put(f"{RO}/rollout-bluegreen", updated).status == 200
    paused = wait_for(lambda: (s := status(node, "rollout-bluegreen")).get("phase") == "Paused" and s, 60,
                      "the pause before promotion")  # fmt: skip
    yellow = paused["currentPodHash"]
    assert selector_hash(node, "rollout-bluegreen-preview") == yellow
    assert selector_hash(node, "rollout-bluegreen-active") == blue
    promote(node, "rollout-bluegreen")
    wait_for(lambda: selector_hash(node, "rollout-bluegreen-active") == yellow, 60, "the active switch")
    rss = (node.get("/apis/apps/v1/namespaces/default/replicasets") or {}).get("items") or []
    old = next(rs for rs in rss if rs["metadata"]["name"] == f"rollout-bluegreen-{blue}")
    assert "argo-rollouts.argoproj.io/scale-down-deadline" in (old["metadata"].get("annotations") or {})


PLURALS = {"Service": "/api/v1/namespaces/default/services", "Rollout": RO,
           "VirtualService": "/apis/networking.istio.io/v1alpha3/namespaces/default/virtualservices",
           "DestinationRule": "/apis/networking.istio.io/v1alpha3/namespaces/default/destinationrules",
           "Gateway": "/apis/networking.istio.io/v1alpha3/namespaces/default/gateways"}  # fmt: skip


def conformance(*parts: str) -> list[dict[str, Any]]:
    path = CONFORMANCE.parent.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared conformance manifests are not checked out beside the repo)")
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def apply_all(node: Node, docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        node.apply(PLURALS[doc["kind"]], doc)


def set_image(node: Node, name: str, image: str) -> None:
    ro = node.get(f"{RO}/{name}")
    assert ro is not None
    ro["spec"]["template"]["spec"]["containers"][0]["image"] = image
    assert node.http.put(f"{RO}/{name}", ro).status == 200


def vs_weights(node: Node, name: str) -> dict[str, list[tuple[str, int]]]:
    vs = node.get(f"{PLURALS['VirtualService']}/{name}") or {}
    return {r.get("name", ""): [(d["destination"].get("subset") or d["destination"]["host"], d.get("weight", 0))
                                for d in r["route"]] for r in vs["spec"]["http"]}  # fmt: skip


def test_conformance_rollout_canary_steps_as_the_docs_describe(node: Node) -> None:
    """examples/rollout-canary.yaml: 20 % (1 of 5 pods), an indefinite pause until promoted, then 40 %
    (2 of 5) and a 40 s pause, which ``promote --full`` skips to the end."""
    apply_all(node, conformance("examples", "rollout-canary.yaml"))
    first = wait_for(lambda: (s := status(node, "rollout-canary")).get("phase") == "Healthy" and s, 60, "blue")
    blue = first["stableRS"]
    set_image(node, "rollout-canary", "argoproj/rollouts-demo:yellow")
    paused = wait_for(lambda: (s := status(node, "rollout-canary")).get("phase") == "Paused" and s, 60, "20 %")
    yellow = paused["currentPodHash"]
    assert paused["currentStepIndex"] == 1
    assert paused["pauseConditions"][0]["reason"] == "CanaryPauseStep"
    assert replicasets(node, "rollout-canary") == {f"rollout-canary-{blue}": 4, f"rollout-canary-{yellow}": 1}
    promote(node, "rollout-canary")
    at40 = wait_for(lambda: (s := status(node, "rollout-canary")).get("currentStepIndex") == 3
                    and s.get("phase") == "Paused" and s, 60, "40 % and its 40s pause")  # fmt: skip
    assert replicasets(node, "rollout-canary") == {f"rollout-canary-{blue}": 3, f"rollout-canary-{yellow}": 2}
    assert at40["canary"]["weights"]["canary"]["weight"] == 40
    reply = node.http.patch(f"{RO}/rollout-canary/status", {"status": {"pauseConditions": None, "promoteFull": True}})
    assert reply.status == 200, reply.body
    done = wait_for(lambda: (s := status(node, "rollout-canary")).get("phase") == "Healthy"
                    and s.get("stableRS") == yellow and s, 60, "the full promotion")  # fmt: skip
    assert done["currentStepIndex"] == 8
    wait_for(lambda: replicasets(node, "rollout-canary") == {f"rollout-canary-{blue}": 0, f"rollout-canary-{yellow}": 5},
             30, "blue scaled down")  # fmt: skip


def test_conformance_istio_getting_started_weights_both_virtual_services(node: Node) -> None:
    """docs/getting-started/istio: setWeight 5 shows as 95/5 in both VirtualServices' named routes,
    the canary and stable Services select their ReplicaSets, and promotion sends all back to stable."""
    docs = [*conformance("docs", "getting-started", "istio", "services.yaml"),
            *conformance("docs", "getting-started", "istio", "gateway.yaml"),
            *conformance("docs", "getting-started", "istio", "multipleVirtualsvc.yaml"),
            *conformance("docs", "getting-started", "istio", "rollout.yaml")]  # fmt: skip
    apply_all(node, docs)
    first = wait_for(lambda: (s := status(node, "rollouts-demo")).get("phase") == "Healthy" and s, 60, "blue")
    blue = first["stableRS"]
    set_image(node, "rollouts-demo", "argoproj/rollouts-demo:yellow")
    paused = wait_for(lambda: (s := status(node, "rollouts-demo")).get("phase") == "Paused" and s, 60, "setWeight 5")
    yellow = paused["currentPodHash"]
    assert vs_weights(node, "rollouts-demo-vsvc1") == {"primary": [("rollouts-demo-stable", 95), ("rollouts-demo-canary", 5)]}
    assert vs_weights(node, "rollouts-demo-vsvc2") == {"secondary": [("rollouts-demo-stable", 95), ("rollouts-demo-canary", 5)]}
    assert selector_hash(node, "rollouts-demo-canary") == yellow and selector_hash(node, "rollouts-demo-stable") == blue
    # multipleVirtualsvc.yaml's tls routes are not named in the Rollout (Argo weights them only
    # when listed in tlsRoutes): they stay as written, and so do the destinations' ports.
    for vs in ("rollouts-demo-vsvc1", "rollouts-demo-vsvc2"):
        spec = (node.get(f"{PLURALS['VirtualService']}/{vs}") or {})["spec"]
        assert [(d["destination"]["host"], d["weight"]) for d in spec["tls"][0]["route"]] == \
            [("rollouts-demo-stable", 100), ("rollouts-demo-canary", 0)]  # fmt: skip
        assert {d["destination"]["port"]["number"] for d in spec["http"][0]["route"]} == \
            {15372 if vs.endswith("1") else 15373}  # fmt: skip
    promote(node, "rollouts-demo")
    wait_for(lambda: status(node, "rollouts-demo").get("stableRS") == yellow
             and status(node, "rollouts-demo").get("phase") == "Healthy", 60, "promotion")  # fmt: skip
    assert vs_weights(node, "rollouts-demo-vsvc1")["primary"] == [("rollouts-demo-stable", 100), ("rollouts-demo-canary", 0)]
    assert selector_hash(node, "rollouts-demo-stable") == yellow


def test_conformance_istio_subset_split(node: Node) -> None:
    """examples/istio/istio-subset-split.yaml (its nginx container swapped for the demo app, which runs
    here unprivileged on 8080): setWeight 10 labels the DestinationRule's subsets with the ReplicaSets'
    hashes and weights the named route 90/10."""
    docs = conformance("examples", "istio", "istio-subset-split.yaml")
    for doc in docs:
        if doc["kind"] == "Rollout":
            c = doc["spec"]["template"]["spec"]["containers"][0]
            c["image"], c["ports"][0]["containerPort"] = "argoproj/rollouts-demo:blue", 8080
    apply_all(node, docs)
    first = wait_for(lambda: (s := status(node, "istio-subset-split")).get("phase") == "Healthy" and s, 60, "blue")
    set_image(node, "istio-subset-split", "argoproj/rollouts-demo:yellow")
    paused = wait_for(lambda: (s := status(node, "istio-subset-split")).get("phase") == "Paused" and s, 60, "10 %")
    assert vs_weights(node, "istio-subset-split-vsvc") == {"primary": [("stable", 90), ("canary", 10)]}
    dr = node.get(f"{PLURALS['DestinationRule']}/istio-subset-split-destrule") or {}
    labels = {s["name"]: s["labels"].get("rollouts-pod-template-hash") for s in dr["spec"]["subsets"]}
    assert labels == {"stable": first["stableRS"], "canary": paused["currentPodHash"]}


def job_template(name: str, script: str) -> dict[str, Any]:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate", "metadata": {"name": name},
            "spec": {"metrics": [{"name": "check", "failureLimit": 0, "provider": {"job": {"spec": {
                "backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
                    {"name": "check", "image": "alpine:3.8", "command": ["sh", "-c"], "args": [script]}]}}}}}}]}}  # fmt: skip


def demo_rollout(name: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": name},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                         {"name": "demo", "image": "argoproj/rollouts-demo:blue", "ports": [{"containerPort": 8080}]}]}},
                     "strategy": {"canary": {"steps": steps}}}}  # fmt: skip


def runs_of(node: Node, name: str) -> list[dict[str, Any]]:
    items = (node.get("/apis/argoproj.io/v1alpha1/namespaces/default/analysisruns") or {}).get("items") or []
    return [r for r in items if r["metadata"]["name"].startswith(f"{name}-")]


def test_job_provider_a_passing_job_lets_the_rollout_complete(node: Node) -> None:
    """The ClusterAnalysisTemplate ``always-pass`` of the conformance examples: its Job (``exit 0``)
    completes, so its measurement is Successful and the Rollout goes on to the end."""
    docs = conformance("examples", "cluster-analysis-templates.yaml")
    for doc in docs:
        node.apply("/apis/argoproj.io/v1alpha1/clusteranalysistemplates", doc)
    node.apply(RO, demo_rollout("jobpass", [{"setWeight": 50},
                                            {"analysis": {"templates": [{"templateName": "always-pass",
                                                                         "clusterScope": True}]}}]))  # fmt: skip
    first = wait_for(lambda: (s := status(node, "jobpass")).get("phase") == "Healthy" and s, 60, "blue")
    set_image(node, "jobpass", "argoproj/rollouts-demo:yellow")
    done = wait_for(lambda: (s := status(node, "jobpass")).get("phase") == "Healthy"
                    and s.get("stableRS") != first["stableRS"] and s, 60, "promotion after the Job passed")  # fmt: skip
    [run] = runs_of(node, "jobpass")
    assert run["status"]["phase"] == "Successful", run["status"]
    [result] = run["status"]["metricResults"]
    assert result["name"] == "pass" and result["successful"] == 1 and result["measurements"][0]["phase"] == "Successful"
    job = node.get(f"/apis/batch/v1/namespaces/default/jobs/{run['metadata']['uid']}.pass.1")
    assert job is not None
    assert any(c["type"] == "Complete" and c["status"] == "True" for c in job["status"]["conditions"])
    assert job["metadata"]["ownerReferences"][0]["kind"] == "AnalysisRun"
    assert done["canary"]["currentStepAnalysisRunStatus"]["status"] == "Successful"


def test_job_provider_a_failing_job_aborts_the_rollout(node: Node) -> None:
    node.apply("/apis/argoproj.io/v1alpha1/namespaces/default/analysistemplates", job_template("job-fails", "exit 3"))
    node.apply(RO, demo_rollout("jobfail", [{"setWeight": 50},
                                            {"analysis": {"templates": [{"templateName": "job-fails"}]}}]))  # fmt: skip
    first = wait_for(lambda: (s := status(node, "jobfail")).get("phase") == "Healthy" and s, 60, "blue")
    set_image(node, "jobfail", "argoproj/rollouts-demo:yellow")
    degraded = wait_for(lambda: (s := status(node, "jobfail")).get("phase") == "Degraded" and s, 60, "the abort")
    assert degraded["stableRS"] == first["stableRS"]
    assert degraded["message"].startswith("RolloutAborted"), degraded["message"]
    [run] = runs_of(node, "jobfail")
    assert run["status"]["phase"] == "Failed"
    [measurement] = run["status"]["metricResults"][0]["measurements"]
    assert measurement["phase"] == "Failed" and "failed" in measurement.get("message", ""), measurement
    wait_for(lambda: replicasets(node, "jobfail") == {f"jobfail-{first['stableRS']}": 2,
                                                      f"jobfail-{degraded['currentPodHash']}": 0},
             30, "the canary scaled down")  # fmt: skip


def bluegreen(name: str, post_template: str) -> list[dict[str, Any]]:
    svc = [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"{name}-{role}"},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}}
           for role in ("active", "preview")]  # fmt: skip
    ro = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": name},
          "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                   "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                       {"name": "demo", "image": "argoproj/rollouts-demo:blue", "ports": [{"containerPort": 8080}]}]}},
                   "strategy": {"blueGreen": {"activeService": f"{name}-active", "previewService": f"{name}-preview",
                                              "scaleDownDelaySeconds": 1, "abortScaleDownDelaySeconds": 1,
                                              "postPromotionAnalysis": {"templates": [{"templateName": post_template}]}}}}}  # fmt: skip
    return [*svc, ro]


def test_bluegreen_post_promotion_analysis_failure_switches_active_back(node: Node) -> None:
    node.apply("/apis/argoproj.io/v1alpha1/namespaces/default/analysistemplates", job_template("post-fails", "exit 1"))
    apply_all(node, bluegreen("bgpost", "post-fails"))
    first = wait_for(lambda: (s := status(node, "bgpost")).get("phase") == "Healthy" and s, 60, "blue")
    blue = first["stableRS"]
    set_image(node, "bgpost", "argoproj/rollouts-demo:yellow")
    # autoPromotionEnabled defaults to true: the switch happens at once, then the analysis runs.
    wait_for(lambda: runs_of(node, "bgpost"), 60, "the post-promotion AnalysisRun")
    degraded = wait_for(lambda: (s := status(node, "bgpost")).get("phase") == "Degraded" and s, 60, "the abort")
    yellow = degraded["currentPodHash"]
    assert degraded["stableRS"] == blue and degraded["blueGreen"]["activeSelector"] == blue
    assert "post-promotion analysis Failed" in degraded["message"], degraded["message"]
    assert selector_hash(node, "bgpost-active") == blue == selector_hash(node, "bgpost-preview")
    wait_for(lambda: replicasets(node, "bgpost") == {f"bgpost-{blue}": 2, f"bgpost-{yellow}": 0}, 30,
             "yellow scaled down, blue whole")  # fmt: skip
    reasons = {e["reason"] for e in (node.get("/api/v1/namespaces/default/events") or {}).get("items") or []
               if e["involvedObject"].get("name") == "bgpost"}  # fmt: skip
    assert {"RolloutPromoted", "RolloutAborted"} <= reasons


def test_bluegreen_post_promotion_analysis_success_completes(node: Node) -> None:
    node.apply("/apis/argoproj.io/v1alpha1/namespaces/default/analysistemplates", job_template("post-passes", "exit 0"))
    apply_all(node, bluegreen("bgok", "post-passes"))
    first = wait_for(lambda: (s := status(node, "bgok")).get("phase") == "Healthy" and s, 60, "blue")
    set_image(node, "bgok", "argoproj/rollouts-demo:yellow")
    done = wait_for(lambda: (s := status(node, "bgok")).get("phase") == "Healthy"
                    and s.get("stableRS") != first["stableRS"] and s, 60, "the analysis to pass")  # fmt: skip
    assert done["blueGreen"]["postPromotionAnalysisRunStatus"]["status"] == "Successful"
    assert selector_hash(node, "bgok-active") == done["stableRS"]
    wait_for(lambda: replicasets(node, "bgok") == {f"bgok-{first['stableRS']}": 0, f"bgok-{done['stableRS']}": 2}, 30,
             "blue scaled down after the delay")  # fmt: skip


def meshwork(node: Node, *args: str) -> str:
    env = {**os.environ, "MESHWORK_SERVER": node.server.url, "MESHWORK_TOKEN": node.server.token}
    ran = subprocess.run([sys.executable, "-m", "meshwork", *args], env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran.stdout


def test_rollout_undo_goes_back_to_the_previous_template(node: Node) -> None:
    node.apply(RO, demo_rollout("undo", [{"setWeight": 50}, {"pause": {}}]))
    blue = wait_for(lambda: (s := status(node, "undo")).get("phase") == "Healthy" and s, 60, "blue")["stableRS"]
    meshwork(node, "rollout", "set", "image", "undo", "demo=argoproj/rollouts-demo:yellow")
    wait_for(lambda: status(node, "undo").get("phase") == "Paused", 60, "the pause")
    meshwork(node, "rollout", "promote", "--full", "rollout/undo")
    yellow = wait_for(lambda: (s := status(node, "undo")).get("phase") == "Healthy" and s.get("stableRS") != blue
                      and s, 60, "yellow")["stableRS"]  # fmt: skip
    assert "rollout 'undo' undo" in meshwork(node, "rollout", "undo", "rollout/undo")
    ro = node.get(f"{RO}/undo") or {}
    assert ro["spec"]["template"]["spec"]["containers"][0]["image"] == "argoproj/rollouts-demo:blue"
    assert "rollouts-pod-template-hash" not in ro["spec"]["template"]["metadata"]["labels"]
    # Going back is an update like any other: blue is the canary now, through the steps again.
    paused = wait_for(lambda: (s := status(node, "undo")).get("phase") == "Paused" and s, 60, "the undo's pause")
    assert paused["currentPodHash"] == blue and paused["stableRS"] == yellow
    rss = (node.get("/apis/apps/v1/namespaces/default/replicasets") or {}).get("items") or []
    revs = {rs["metadata"]["name"]: rs["metadata"]["annotations"]["rollout.argoproj.io/revision"]
            for rs in rss if rs["metadata"]["name"].startswith("undo-")}  # fmt: skip
    assert revs == {f"undo-{blue}": "3", f"undo-{yellow}": "2"}
    out = subprocess.run([sys.executable, "-m", "meshwork", "rollout", "undo", "rollout/undo", "--to-revision", "9"],
                         env={**os.environ, "MESHWORK_SERVER": node.server.url, "MESHWORK_TOKEN": node.server.token},
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode != 0 and "revision 9" in out.stderr

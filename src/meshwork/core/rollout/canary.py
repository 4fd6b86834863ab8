"""The canary strategy: steps, replica counts and traffic weights (Argo's ``rolloutCanary``).

What lives here: the walk through ``steps`` from ``status.currentStepIndex``
(setWeight, setCanaryScale, pause with and without a duration, analysis;
other step types are skipped with a Warning), the canary and stable replica
counts (with traffic routing the stable side keeps every replica and the
VirtualService splits requests; without it the split is approximated by
replica counts within maxSurge/maxUnavailable), promotion at the end (the
stable Service and ``status.stableRS`` move to the new hash, the old
ReplicaSet scales down after ``scaleDownDelaySeconds``), and abort (weight
back to 0 at once, the canary scaled down after
``abortScaleDownDelaySeconds``, phase Degraded with the reason).

Rules Argo keeps and so do we: the weight of a step is written only once the
canary's pods for it are available; a step completes only after its weight
is written; the stable Service moving to the new hash and the weight going
back to 0 happen in one pass, while the old pods still serve.

What must not: I/O, or the AnalysisRun's own judgement (``analysis``).
"""

from __future__ import annotations

import math
from typing import Any

from meshwork.core.reconcile import CreateObject, Outcome, UpdateObject
from meshwork.core.reconcile.deployment_rollout import scaled_value
from meshwork.core.reconcile.podtemplate import is_ready, parse_time, rfc3339
from meshwork.core.rollout.experiment import experiment_name, step_experiment
from meshwork.core.rollout.reconcile import (
    DEGRADED,
    HEALTHY,
    PAUSED,
    PROGRESSING,
    Sync,
    abort_message,
)
from meshwork.core.rollout.replicas import pod_hash, revision_of
from meshwork.core.rollout.traffic import label_subsets, set_managed_routes, set_weights
from meshwork.model.argo_rollouts import CanaryStep, CanaryStrategy, SetHeaderRoute, SetMirrorRoute
from meshwork.model.workloads import ReplicaSet

DEFAULT_SCALE_DOWN_DELAY_S = 30  # Argo's DefaultScaleDownDelaySeconds (with traffic routing)
DEFAULT_ABORT_SCALE_DOWN_DELAY_S = 30  # Argo's DefaultAbortScaleDownDelaySeconds (with traffic routing)
DEFAULT_MAX_SURGE = DEFAULT_MAX_UNAVAILABLE = "25%"  # Argo's canary defaults
PAUSE_REASON = "CanaryPauseStep"


def describe(step: CanaryStep) -> str:
    """A step as Argo's events name it: ``setWeight: 20``, ``pause: 10s`` ..."""
    if step.set_weight is not None:
        return f"setWeight: {step.set_weight}"
    if step.pause is not None:
        return f"pause: {step.pause.duration}" if step.pause.duration is not None else "pause"
    if step.analysis is not None:
        return "analysis"
    if step.set_canary_scale is not None:
        return "setCanaryScale"
    if step.set_header_route is not None:
        return f"setHeaderRoute: {step.set_header_route.name}"
    if step.set_mirror_route is not None:
        return f"setMirrorRoute: {step.set_mirror_route.name}"
    return "experiment" if step.experiment is not None else "step"


def weight_at(steps: list[CanaryStep], index: int) -> int:
    """The weight in force at step ``index``: the last setWeight at or before it (Argo's)."""
    for step in reversed(steps[: index + 1]):
        if step.set_weight is not None:
            return step.set_weight
    return 0


def canary_replicas(steps: list[CanaryStep], index: int, replicas: int, routed: bool) -> int:
    """How many canary pods step ``index`` asks for (setCanaryScale, else the weight's share)."""
    weight = weight_at(steps, index) if index < len(steps) else 100
    if routed and index < len(steps):
        for step in reversed(steps[: index + 1]):
            scale = step.set_canary_scale
            if scale is None:
                continue
            if scale.match_traffic_weight:
                break
            if scale.replicas is not None:
                return scale.replicas
            if scale.weight is not None:
                return math.ceil(scale.weight * replicas / 100)
    return math.ceil(weight * replicas / 100)


def basic_counts(replicas: int, canary_goal: int, canary: tuple[int, int], stable: tuple[int, int],
                 surge: int, unavailable: int) -> tuple[int, int]:  # fmt: skip
    """(canary, stable) sizes for this pass without traffic routing.

    ``canary``/``stable`` are (current size, available pods). The canary grows
    while the total stays within ``replicas + surge``; the stable side shrinks
    while at least ``replicas - unavailable`` pods stay available.
    """
    stable_goal = max(0, replicas - canary_goal)
    c_now, c_avail = canary
    s_now, s_avail = stable
    if canary_goal <= c_now:
        c_next = canary_goal
    else:
        room = max(0, replicas + surge - (c_now + s_now))
        c_next = min(canary_goal, c_now + room)
    if stable_goal >= s_now:
        s_next = stable_goal
    else:
        spare = max(0, c_avail + s_avail - (replicas - unavailable))
        s_next = max(stable_goal, s_now - spare)
    return c_next, s_next


def _routing(strategy: CanaryStrategy) -> Any:
    routing = strategy.traffic_routing
    return routing.istio if routing is not None else None


def _short_host(host: str, namespace: str | None) -> str:
    """The Service name of a destination host written short or as ``name.<ns>[.svc.cluster.local]``."""
    name, _, rest = host.partition(".")
    return name if not rest or rest.split(".")[0] == (namespace or "default") else host


def _unlisted_canary(s: Sync, service: str | None) -> str | None:
    """Why the canary's ready pods cannot take traffic through ``service`` yet (None: they can).

    A weight sent to pods the Service's Endpoints do not list yet would meet
    a subset with no endpoint (503 "no healthy upstream"): the weight waits
    until every ready canary pod is a ready address of the Service.
    """
    if not service or s.new is None:
        return None
    ready = {p.status.pod_ip for p in s.view.pods if p.status is not None and p.status.pod_ip and is_ready(p)
             and any(r.controller and r.uid == s.new.metadata.uid for r in p.metadata.owner_references or ())}  # fmt: skip
    if not ready:
        return f"no ready canary pod for service {service!r} yet"
    ep = s.view.endpoints.get(service)
    listed = {a.ip for sub in ((ep.subsets if ep is not None else None) or ()) for a in sub.addresses or ()}
    missing = ready - listed
    if missing:
        return f"waiting for the Endpoints of service {service!r} to list the canary pods {sorted(missing)}"
    return None


def managed_routes_at(steps: list[CanaryStep], index: int) -> dict[str, SetHeaderRoute | SetMirrorRoute]:
    """The header and mirror routes in force at step ``index``: each name's last setHeaderRoute or
    setMirrorRoute at or before it (one without ``match`` removes the route, as Argo's does)."""
    out: dict[str, SetHeaderRoute | SetMirrorRoute] = {}
    for step in steps[: index + 1]:
        for route in (step.set_header_route, step.set_mirror_route):
            if route is None or not route.name:
                continue
            if route.match:
                out[route.name] = route
            else:
                out.pop(route.name, None)
    return out


def _write_weight(s: Sync, strategy: CanaryStrategy, weight: int, canary_hash: str, stable_hash: str,
                  managed: dict[str, SetHeaderRoute | SetMirrorRoute] | None = None) -> bool:  # fmt: skip
    """Label the subsets and set ``weight`` in the VirtualService(s), with the ``managed`` header
    and mirror routes first (none: every managed route removed); False when one is missing
    (or when the canary's pods are not yet the Service's endpoints: ``_unlisted_canary``)."""
    istio = _routing(strategy)
    if istio is None:
        return True
    rule = istio.destination_rule
    if weight > _weights(s).get("canary", {}).get("weight", 0) and canary_hash != stable_hash:
        dr = s.view.destination_rules.get(rule.name) if rule is not None else None
        service = _short_host(dr.spec.host, s.ro.metadata.namespace) if dr is not None else strategy.canary_service
        why = _unlisted_canary(s, service)
        if why is not None:
            s.message_override = why
            return False
    if rule is not None:
        dr = s.view.destination_rules.get(rule.name)
        if dr is None:
            s.message_override = f"DestinationRule \"{rule.name}\" not found"
            return False
        patched = label_subsets(dr, rule.canary_subset_name, rule.stable_subset_name, canary_hash, stable_hash)
        if patched is not None:
            s.traffic.append(UpdateObject(patched))
    for ref in [istio.virtual_service] if istio.virtual_service else list(istio.virtual_services or ()):
        vs = s.view.virtual_services.get(ref.name)
        if vs is None:
            s.message_override = f"VirtualService \"{ref.name}\" not found"
            return False
        try:
            patched_vs = set_weights(vs, ref.routes, weight, canary_service=strategy.canary_service,
                                     stable_service=strategy.stable_service,
                                     canary_subset=rule.canary_subset_name if rule else None,
                                     stable_subset=rule.stable_subset_name if rule else None)  # fmt: skip
        except ValueError as exc:
            s.message_override = str(exc)
            return False
        names = [r.name for r in (strategy.traffic_routing.managed_routes or ())] if strategy.traffic_routing else []
        if names:
            with_routes = set_managed_routes(patched_vs or vs, ref.routes, names, managed or {},
                                             canary_service=strategy.canary_service,
                                             canary_subset=rule.canary_subset_name if rule else None)  # fmt: skip
            if with_routes is not None:
                old_names = {r.name or "" for r in (patched_vs or vs).spec.http or ()} & set(names)
                new_names = {r.name or "" for r in with_routes.spec.http or ()} & set(names)
                for gone in sorted(old_names - new_names):
                    s.event("TrafficRouteRemoved", f"Managed route '{gone}' removed from VirtualService '{ref.name}'")
                patched_vs = with_routes
        if patched_vs is not None:
            s.traffic.append(UpdateObject(patched_vs))
    old = _weights(s).get("canary", {}).get("weight", 0)
    if old != weight:
        s.event("TrafficWeightUpdated", f"Traffic weight updated from {old} to {weight}")
    s.status["canary"] = {**(s.status.get("canary") or {}), "weights": {
        "canary": {"podTemplateHash": canary_hash, "serviceName": strategy.canary_service, "weight": weight},
        "stable": {"podTemplateHash": stable_hash, "serviceName": strategy.stable_service, "weight": 100 - weight},
    }}  # fmt: skip
    return True


def _weights(s: Sync) -> dict[str, Any]:
    return dict((s.status.get("canary") or {}).get("weights") or {})


def _scale_down_old(s: Sync, keep: set[str], delay: int) -> bool:
    """Scale every ReplicaSet not in ``keep`` to 0, ``delay`` s after it stopped serving; True when done."""
    done = True
    for rs in s.rss:
        if pod_hash(rs) in keep or rs.spec.replicas == 0:
            continue
        done = s.scale_down_after(rs, delay) and done
    return done


def _sync_stable(s: Sync, strategy: CanaryStrategy, routed: bool) -> Outcome:
    """No canary in progress: the current ReplicaSet is stable and takes every replica."""
    steps = list(strategy.steps or ())
    s.status["stableRS"] = s.h
    s.status["currentStepIndex"] = len(steps) if steps else None
    if s.status["currentStepIndex"] is None:
        s.status.pop("currentStepIndex")
    for key in ("pauseConditions", "controllerPause", "abort", "abortedAt", "promoteFull"):
        s.status.pop(key, None)
    s.scale(s.new, s.replicas, None)
    delay = (strategy.scale_down_delay_seconds if strategy.scale_down_delay_seconds is not None
             else DEFAULT_SCALE_DOWN_DELAY_S) if routed else 0  # fmt: skip
    old_gone = _scale_down_old(s, {s.h}, delay)
    s.select(strategy.stable_service, s.h)
    s.select(strategy.canary_service, s.h)
    if routed:
        _write_weight(s, strategy, 0, s.h, s.h)
    c = s.counts(s.new)
    if c.available < s.replicas:
        return s.finish(PROGRESSING, "updated replicas are still becoming available")
    if not old_gone and not routed:
        return s.finish(PROGRESSING, "old replicas are pending termination")
    return s.finish(HEALTHY)


def _abort(s: Sync, strategy: CanaryStrategy, stable: ReplicaSet | None, routed: bool) -> Outcome:
    stable_hash = pod_hash(stable) if stable is not None else s.h
    if routed:
        _write_weight(s, strategy, 0, s.h, stable_hash)
    elif (s.status.get("canary") or {}).get("weights"):
        # By replica counts: the canary is scaled to 0 at once, so its share is 0.
        s.status["canary"] = {**s.status["canary"], "weights": {
            "canary": {"podTemplateHash": s.h, "weight": 0},
            "stable": {"podTemplateHash": stable_hash, "weight": 100}}}  # fmt: skip
    s.scale(stable, s.replicas, None)
    delay = (strategy.abort_scale_down_delay_seconds if strategy.abort_scale_down_delay_seconds is not None
             else DEFAULT_ABORT_SCALE_DOWN_DELAY_S) if routed else 0  # fmt: skip
    if s.new is not None and s.new.spec.replicas:
        s.scale_down_after(s.new, delay)
    _terminate_experiments(s)
    s.status.pop("pauseConditions", None)
    s.status.pop("controllerPause", None)
    s.status["currentStepIndex"] = 0
    return s.finish(DEGRADED, abort_message(s, s.status.get("_abortReason")))


def _background(s: Sync, strategy: CanaryStrategy, index: int, stable_hash: str) -> str | None:
    """The background AnalysisRun's phase (``strategy.analysis``, from ``startingStep`` on; None
    when there is none yet): created as the update starts, recorded in
    ``status.canary.currentBackgroundAnalysisRunStatus``; a failure or error aborts the update."""
    spec = strategy.analysis
    if spec is None or index < (spec.starting_step or 0):
        return None
    canary = dict(s.status.get("canary") or {})
    seen = dict(canary.get("currentBackgroundAnalysisRunStatus") or {})
    acted = seen.get("name") if seen.get("status") in ("Failed", "Error", "Inconclusive") else None
    run = s.analysis(spec, "", stable_hash, acted)
    if run is None:
        s.requeue(1.0)
        return None
    phase = (run.status.phase if run.status else None) or "Pending"
    now = {"name": run.metadata.name, "status": phase,
           **({"message": run.status.message} if run.status and run.status.message else {})}  # fmt: skip
    s.status["canary"] = {**canary, "currentBackgroundAnalysisRunStatus": now}
    if phase in ("Failed", "Error") and acted != run.metadata.name:
        reason = (run.status.message if run.status else None) or f"AnalysisRun {run.metadata.name} {phase}"
        s.status["abort"] = True
        s.status["abortedAt"] = rfc3339(s.now)
        s.status["_abortReason"] = reason
        s.event("AnalysisRunFailed", f"Background Analysis Run '{run.metadata.name}' Status New: '{phase}' "
                "Previous: 'Running'", "Warning")  # fmt: skip
        s.event("RolloutAborted", abort_message(s, reason), "Warning")
    return phase


def _terminate_background(s: Sync) -> None:
    """The update is done: a background run still measuring is told to stop (``spec.terminate``)."""
    status = (s.status.get("canary") or {}).get("currentBackgroundAnalysisRunStatus") or {}
    run = next((r for r in s.view.analysis_runs if r.metadata.name == status.get("name")), None)
    if run is None or run.spec.terminate or (run.status and run.status.phase in ("Successful", "Failed", "Error",
                                                                                   "Inconclusive")):  # fmt: skip
        return
    s.traffic.append(UpdateObject(run.model_copy(update={"spec": run.spec.model_copy(update={"terminate": True})})))


def _experiment_step(s: Sync, step: CanaryStep, index: int, stable: ReplicaSet) -> str:
    """The experiment step's Experiment (created when missing) and its phase."""
    assert step.experiment is not None and s.new is not None
    name = experiment_name(s.ro, s.h, revision_of(s.new), index)
    s.status["canary"] = {**(s.status.get("canary") or {}), "currentExperiment": name}
    found = next((e for e in s.view.experiments if e.metadata.name == name), None)
    if found is None:
        canary = s.view.template
        assert canary is not None
        s.creates.append(CreateObject(step_experiment(s.ro, step.experiment, name, s.h, canary,
                                                      stable.spec.template or canary)))  # fmt: skip
        s.event("ExperimentCreated", f"Created Experiment '{name}'")
        return "Pending"
    return (found.status.phase if found.status else None) or "Pending"


def _terminate_experiments(s: Sync) -> None:
    """The update is over: the Rollout's Experiments still running are told to stop."""
    for exp in s.view.experiments:
        if exp.spec.terminate or (exp.status is not None and exp.status.phase in ("Successful", "Failed", "Error")):
            continue
        s.traffic.append(UpdateObject(exp.model_copy(update={"spec": exp.spec.model_copy(update={"terminate": True})})))


def sync_canary(s: Sync) -> Outcome:
    """One pass of the canary strategy (returns the pass's Outcome)."""
    strategy = s.ro.spec.strategy.canary
    assert strategy is not None and s.new is not None
    routed = _routing(strategy) is not None
    steps = list(strategy.steps or ())
    stable_hash = s.status.get("stableRS") or s.h
    stable = s.by_hash(stable_hash)
    if stable is None or stable_hash == s.h:
        return _sync_stable(s, strategy, routed)
    s.select(strategy.stable_service, stable_hash)
    s.select(strategy.canary_service, s.h)
    canary_status = dict(s.status.get("canary") or {})
    if s.status.get("abort"):
        reason = s.status.get("message", "")
        s.status["_abortReason"] = reason.partition(": ")[2].partition(": ")[2] if reason.startswith("RolloutAborted") else None
        out = _abort(s, strategy, stable, routed)
        return out
    index = min(int(s.status.get("currentStepIndex") or 0), len(steps))
    if s.status.get("promoteFull"):
        index = len(steps)
    background = _background(s, strategy, index, stable_hash)
    if background in ("Failed", "Error"):
        return _abort(s, strategy, stable, routed)
    canary_status = dict(s.status.get("canary") or {})
    s.status["stableRS"] = stable_hash
    replicas = s.replicas
    surge = scaled_value(strategy.max_surge if strategy.max_surge is not None else DEFAULT_MAX_SURGE, replicas,
                         round_up=True)  # fmt: skip
    unavailable = scaled_value(strategy.max_unavailable if strategy.max_unavailable is not None
                               else DEFAULT_MAX_UNAVAILABLE, replicas, round_up=False)  # fmt: skip
    if surge == 0 and unavailable == 0:
        unavailable = 1
    phase, message = PROGRESSING, ""
    if background == "Inconclusive":
        phase, message = PAUSED, "InconclusiveAnalysisRun"
    while True:
        goal = canary_replicas(steps, index, replicas, routed)
        c, st = s.counts(s.new), s.counts(stable)
        # Pods beyond a ReplicaSet's size are on their way out (the cache may not show their
        # deletion yet): they count as unavailable, as Kubernetes counts a terminating pod.
        c_avail, s_avail = min(c.available, s.new.spec.replicas), min(st.available, stable.spec.replicas)
        if routed:
            c_next, s_next = goal, replicas
        else:
            c_next, s_next = basic_counts(replicas, goal, (s.new.spec.replicas, c_avail),
                                          (stable.spec.replicas, s_avail), surge, unavailable)  # fmt: skip
        s.scale(s.new, c_next, None)
        s.scale(stable, s_next, None)
        ready = c_next == goal and c.available >= goal and s.new.spec.replicas == goal
        if not routed:
            ready = ready and stable.spec.replicas == s_next == max(0, replicas - goal) and st.available >= s_next
        if not ready:
            message = "more replicas need to be updated" if c.active < goal else "updated replicas are still becoming available"
            break
        if index >= len(steps):
            # Every step done: the new ReplicaSet becomes stable.
            s.status["stableRS"] = s.h
            s.status["currentStepIndex"] = len(steps)
            s.status.pop("promoteFull", None)
            s.event("RolloutCompleted", f"Rollout completed update to revision {s.new.metadata.annotations and s.new.metadata.annotations.get('rollout.argoproj.io/revision')}: {s.h}")
            s.requeue(0.0)
            _terminate_background(s)
            _terminate_experiments(s)
            return _sync_stable(s, strategy, routed)
        weight = weight_at(steps, index)
        if routed and not _write_weight(s, strategy, weight, s.h, stable_hash, managed_routes_at(steps, index)):
            s.requeue(2.0)
            break
        if not routed:
            total = c_avail + s_avail
            w = round(100 * c_avail / total) if total else 0
            s.status["canary"] = {**canary_status, "weights": {
                "canary": {"podTemplateHash": s.h, "weight": w},
                "stable": {"podTemplateHash": stable_hash, "weight": 100 - w}}}  # fmt: skip
        step = steps[index]
        if step.pause is not None:
            conds = list(s.status.get("pauseConditions") or [])
            mine = next((p for p in conds if p.get("reason") == PAUSE_REASON), None)
            if mine is None and s.status.get("controllerPause"):
                pass  # promoted: the pause condition was removed by the user
            elif mine is None:
                conds.append({"reason": PAUSE_REASON, "startTime": rfc3339(s.now)})
                s.status["pauseConditions"] = conds
                s.status["controllerPause"] = True
                s.event("RolloutPaused", f"Rollout is paused ({PAUSE_REASON})")
                duration = step.pause.duration_seconds()
                if duration > 0:
                    s.requeue(duration)
                phase, message = PAUSED, PAUSE_REASON
                break
            else:
                duration = step.pause.duration_seconds()
                start = parse_time(mine.get("startTime")) or s.now
                if step.pause.duration is None or duration <= 0 or s.now < start + duration:
                    if step.pause.duration is not None and duration > 0:
                        s.requeue(start + duration - s.now)
                    phase, message = PAUSED, PAUSE_REASON
                    break
            s.status["pauseConditions"] = [p for p in conds if p.get("reason") != PAUSE_REASON] or None
            if s.status["pauseConditions"] is None:
                s.status.pop("pauseConditions")
            s.status.pop("controllerPause", None)
            s.event("RolloutResumed", "Rollout is resumed")
        elif step.analysis is not None:
            acted = (canary_status.get("currentStepAnalysisRunStatus") or {})
            acted_name = acted.get("name") if acted.get("status") in ("Failed", "Error", "Inconclusive") else None
            run = s.analysis(step.analysis, str(index), stable_hash, acted_name)
            if run is None:
                message = "waiting for the step's AnalysisRun to be created"
                s.requeue(1.0)
                break
            run_phase = (run.status.phase if run.status else None) or "Pending"
            canary_status["currentStepAnalysisRunStatus"] = {"name": run.metadata.name, "status": run_phase,
                                                             **({"message": run.status.message} if run.status and run.status.message else {})}  # fmt: skip
            s.status["canary"] = {**(s.status.get("canary") or {}),
                                  "currentStepAnalysisRunStatus": canary_status["currentStepAnalysisRunStatus"]}  # fmt: skip
            if run_phase in ("Failed", "Error"):
                reason = (run.status.message if run.status else None) or f"AnalysisRun {run.metadata.name} {run_phase}"
                s.status["abort"] = True
                s.status["abortedAt"] = rfc3339(s.now)
                s.event("AnalysisRunFailed", f"Step Analysis Run '{run.metadata.name}' Status New: '{run_phase}' Previous: 'Running'", "Warning")
                s.event("RolloutAborted", abort_message(s, reason), "Warning")
                s.status["_abortReason"] = reason
                out = _abort(s, strategy, stable, routed)
                return out
            if run_phase == "Inconclusive":
                phase, message = PAUSED, "InconclusiveAnalysisRun"
                break
            if run_phase != "Successful":
                message = f"waiting for AnalysisRun {run.metadata.name}"
                break
        elif step.experiment is not None:
            ex_phase = _experiment_step(s, step, index, stable)
            if ex_phase in ("Failed", "Error"):
                reason = f"Experiment '{s.status['canary']['currentExperiment']}' {ex_phase}"
                s.status["abort"] = True
                s.status["abortedAt"] = rfc3339(s.now)
                s.status["_abortReason"] = reason
                s.event("RolloutAborted", abort_message(s, reason), "Warning")
                return _abort(s, strategy, stable, routed)
            if ex_phase != "Successful":
                message = f"waiting for Experiment {s.status['canary']['currentExperiment']} to end"
                break
        elif step.set_weight is None and step.set_canary_scale is None and step.set_header_route is None \
                and step.set_mirror_route is None:
            s.event("StepSkipped", f"Step {index + 1} ({describe(step)}) is not supported by meshwork; skipped", "Warning")
        s.event("RolloutStepCompleted", f"Rollout step {index + 1}/{len(steps)} completed ({describe(step)})")
        index += 1
        s.status["currentStepIndex"] = index
    s.status["currentStepIndex"] = index
    return s.finish(phase, message)

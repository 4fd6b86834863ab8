"""The blue-green strategy (Argo's ``rolloutBlueGreen``).

What lives here: the new ReplicaSet brought up beside the active one and
reachable on ``previewService``; prePromotionAnalysis; the pause before
promotion (``autoPromotionEnabled: false`` until promoted,
``autoPromotionSeconds`` for that long); promotion (``activeService``
switched to the new hash, ``status.stableRS`` with it); with
postPromotionAnalysis, the old ReplicaSet stays whole and stable until the
analysis passes, and a failed one aborts with ``activeService`` switched
back to it (Argo's rule); the old ReplicaSet scaled down
``scaleDownDelaySeconds`` after it stops being stable; abort (preview back
to the active hash, the new ReplicaSet scaled down).

What must not: I/O, or a clock.
"""

from __future__ import annotations

from typing import Any

from meshwork.core.reconcile import Outcome
from meshwork.core.reconcile.podtemplate import parse_time, rfc3339
from meshwork.core.rollout.canary import _scale_down_old
from meshwork.core.rollout.reconcile import (
    DEGRADED,
    HEALTHY,
    PAUSED,
    PROGRESSING,
    Sync,
    abort_message,
)
from meshwork.model.argo_rollouts import BlueGreenStrategy

DEFAULT_SCALE_DOWN_DELAY_S = 30  # Argo's DefaultScaleDownDelaySeconds
DEFAULT_ABORT_SCALE_DOWN_DELAY_S = 30  # Argo's DefaultAbortScaleDownDelaySeconds
PAUSE_REASON = "BlueGreenPause"
_BAD = ("Failed", "Error", "Inconclusive")


def _bg(s: Sync) -> dict[str, Any]:
    return dict(s.status.get("blueGreen") or {})


def _run_status(s: Sync, key: str, strategy: BlueGreenStrategy, which: str, stable: str) -> str | None:
    """The phase of the pre/post-promotion AnalysisRun (None while it is being created)."""
    spec = strategy.pre_promotion_analysis if which == "pre" else strategy.post_promotion_analysis
    assert spec is not None
    bg = _bg(s)
    recorded = bg.get(key) or {}
    acted = recorded.get("name") if recorded.get("status") in _BAD else None
    run = s.analysis(spec, which, stable, acted)
    if run is None:
        s.requeue(1.0)
        return None
    phase = (run.status.phase if run.status else None) or "Pending"
    entry = {"name": run.metadata.name, "status": phase}
    if run.status and run.status.message:
        entry["message"] = run.status.message
    s.status["blueGreen"] = {**bg, key: entry}
    return phase


def _post_promotion(s: Sync, strategy: BlueGreenStrategy, stable_hash: str) -> Outcome | None:
    """Active already on the new pods, the old ones kept whole until postPromotionAnalysis passes.

    Returns the pass's Outcome while the analysis runs; None once it is over:
    passed (``stableRS`` moves to the new hash) or failed (``abort``, the
    active selector back on ``stable_hash``), for the caller to carry on.
    """
    assert s.new is not None
    stable = s.by_hash(stable_hash)
    s.select(strategy.active_service, s.h)
    s.select(strategy.preview_service, s.h)
    s.scale(s.new, s.replicas, None)
    s.scale(stable, s.replicas, None)
    s.status["stableRS"] = stable_hash
    phase = _run_status(s, "postPromotionAnalysisRunStatus", strategy, "post", stable_hash)
    bg = _bg(s)
    if phase in _BAD:
        reason = f"post-promotion analysis {phase}"
        bg.pop("postPending", None)
        s.status["blueGreen"] = {**bg, "activeSelector": stable_hash}
        s.status["abort"] = True
        s.status["abortedAt"] = rfc3339(s.now)
        s.status["message"] = abort_message(s, reason)
        s.event("RolloutAborted", abort_message(s, reason), "Warning")
        return None
    if phase != "Successful":
        return s.finish(PROGRESSING, "waiting for post-promotion analysis to complete")
    bg.pop("postPending", None)
    s.status["blueGreen"] = bg
    s.status["stableRS"] = s.h
    return None


def sync_bluegreen(s: Sync) -> Outcome:
    strategy = s.ro.spec.strategy.blue_green
    assert strategy is not None and s.new is not None
    bg = _bg(s)
    active_hash = bg.get("activeSelector") or s.status.get("stableRS") or s.h
    stable_hash = s.status.get("stableRS")
    if (active_hash == s.h and bg.get("postPending") and strategy.post_promotion_analysis is not None
            and stable_hash and stable_hash != s.h and s.by_hash(stable_hash) is not None):  # fmt: skip
        out = _post_promotion(s, strategy, stable_hash)
        if out is not None:
            return out
        if s.status.get("abort"):
            active_hash = stable_hash  # failed: the active Service goes back below
    active = s.by_hash(active_hash)
    delay = strategy.scale_down_delay_seconds if strategy.scale_down_delay_seconds is not None else DEFAULT_SCALE_DOWN_DELAY_S
    if active is None or active_hash == s.h:
        # Promoted (or first): the new ReplicaSet serves both Services.
        s.scale(s.new, s.replicas, None)
        s.select(strategy.active_service, s.h)
        s.select(strategy.preview_service, s.h)
        s.status["stableRS"] = s.h
        s.status["blueGreen"] = {**_bg(s), "activeSelector": s.h, "previewSelector": s.h}
        for key in ("pauseConditions", "controllerPause", "abort", "abortedAt", "promoteFull"):
            s.status.pop(key, None)
        _scale_down_old(s, {s.h}, delay)
        if s.counts(s.new).available < s.replicas:
            return s.finish(PROGRESSING, "updated replicas are still becoming available")
        return s.finish(HEALTHY)
    s.status["stableRS"] = active_hash
    s.select(strategy.active_service, active_hash)
    s.scale(active, s.replicas, None)
    if s.status.get("abort"):
        s.select(strategy.preview_service, active_hash)
        s.status["blueGreen"] = {**_bg(s), "previewSelector": active_hash, "activeSelector": active_hash}
        abort_delay = strategy.abort_scale_down_delay_seconds
        abort_delay = DEFAULT_ABORT_SCALE_DOWN_DELAY_S if abort_delay is None else abort_delay
        if s.new is not None:
            s.scale_down_after(s.new, abort_delay)
        for key in ("pauseConditions", "controllerPause"):
            s.status.pop(key, None)
        message = s.status.get("message") or ""
        return s.finish(DEGRADED, message if message.startswith("RolloutAborted") else abort_message(s, None))
    preview_count = strategy.preview_replica_count
    before = preview_count if preview_count is not None else s.replicas
    s.select(strategy.preview_service, s.h)
    s.status["blueGreen"] = {**_bg(s), "activeSelector": active_hash, "previewSelector": s.h}
    promote_full = bool(s.status.get("promoteFull"))
    s.scale(s.new, s.replicas if promote_full else before, None)
    if s.counts(s.new).available < (s.replicas if promote_full else before):
        return s.finish(PROGRESSING, "updated replicas are still becoming available")
    if strategy.pre_promotion_analysis is not None and not promote_full:
        phase = _run_status(s, "prePromotionAnalysisRunStatus", strategy, "pre", active_hash)
        if phase in _BAD:
            reason = f"pre-promotion analysis {phase}"
            s.status["abort"] = True
            s.status["abortedAt"] = rfc3339(s.now)
            s.event("RolloutAborted", abort_message(s, reason), "Warning")
            s.status["message"] = abort_message(s, reason)
            s.requeue(0.0)
            return s.finish(DEGRADED, abort_message(s, reason))
        if phase != "Successful":
            return s.finish(PROGRESSING, "waiting for pre-promotion analysis to complete")
    if not promote_full and (strategy.auto_promotion_enabled is False or strategy.auto_promotion_seconds):
        conds = list(s.status.get("pauseConditions") or [])
        mine = next((p for p in conds if p.get("reason") == PAUSE_REASON), None)
        resumed = mine is None and s.status.get("controllerPause")
        if not promote_full and not resumed:
            if mine is None:
                conds.append({"reason": PAUSE_REASON, "startTime": rfc3339(s.now)})
                s.status["pauseConditions"] = conds
                s.status["controllerPause"] = True
                s.event("RolloutPaused", f"Rollout is paused ({PAUSE_REASON})")
                mine = conds[-1]
            seconds = strategy.auto_promotion_seconds
            if strategy.auto_promotion_enabled is False or not seconds:
                return s.finish(PAUSED, PAUSE_REASON)
            start = parse_time(mine.get("startTime")) or s.now
            if s.now < start + seconds:
                s.requeue(start + seconds - s.now)
                return s.finish(PAUSED, PAUSE_REASON)
    if s.new.spec.replicas != s.replicas or s.counts(s.new).available < s.replicas:
        s.scale(s.new, s.replicas, None)
        return s.finish(PROGRESSING, "updated replicas are still becoming available")
    # Promote: the active Service switches to the new pods; the old ones linger for the delay
    # (with postPromotionAnalysis: they stay whole, and stable, until it passes).
    for key in ("pauseConditions", "controllerPause", "promoteFull"):
        s.status.pop(key, None)
    s.select(strategy.active_service, s.h)
    s.event("RolloutCompleted" if strategy.post_promotion_analysis is None else "RolloutPromoted",
            f"Rollout {'completed update' if strategy.post_promotion_analysis is None else 'promoted'} "
            f"to revision: {s.h}")  # fmt: skip
    if strategy.post_promotion_analysis is not None:
        s.status["blueGreen"] = {**_bg(s), "activeSelector": s.h, "previewSelector": s.h, "postPending": True}
        s.requeue(0.0)
        return s.finish(PROGRESSING, "waiting for post-promotion analysis to complete")
    s.status["stableRS"] = s.h
    s.status["blueGreen"] = {**_bg(s), "activeSelector": s.h, "previewSelector": s.h}
    s.scale(active, active.spec.replicas, s.now + delay if delay > 0 else None)
    if delay <= 0:
        s.scale(active, 0)
    else:
        s.requeue(delay)
    return s.finish(HEALTHY)

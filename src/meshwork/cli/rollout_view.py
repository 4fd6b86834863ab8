"""What ``rollout`` and ``scale`` decide, as kubectl decides it, on plain wire dicts.

What lives here: kubectl's ``DeploymentStatusViewer`` (the "Waiting for
deployment ..." messages and when a rollout is done or has failed), the
history table and one revision's pod template, the choice of the ReplicaSet
``rollout undo`` goes back to and the patch that restores it, the
``restartedAt`` stamp, the ``scale`` preconditions, and Go-style durations
(``--timeout 5m``).

What must not live here: HTTP, click, printing or the clock (``now`` is a
parameter). The commands in ``rollout`` and ``scale`` do the I/O.

"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from meshwork.cli.printers import tabwrite
from meshwork.cli.sections import Writer, pod_template_section
from meshwork.cli.wire import dig, num
from meshwork.errors import MeshworkError

# The Deployment controller's names (meshwork.core.reconcile.deployment and
# .podtemplate, which are upstream's), spelled out so that the CLI does not
# import the typed model to start; a unit test checks that they agree.
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
REVISION_HISTORY_ANNOTATION = "deployment.kubernetes.io/revision-history"
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
TIMED_OUT = "ProgressDeadlineExceeded"
CHANGE_CAUSE_ANNOTATION = "kubernetes.io/change-cause"
RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
# Deployment annotations `rollout undo` keeps as they are instead of taking the
# ReplicaSet's (kubectl's annotationsToSkip).
ROLLBACK_KEPT_ANNOTATIONS = frozenset({
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
})  # fmt: skip
DEFAULT_REPLICAS = 1  # apps/v1 defaults spec.replicas to 1

Obj = Mapping[str, Any]


class HintedError(MeshworkError):
    """An error printed as ``error: <message>`` (kubectl's words) and ``hint: <what to do>``."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class RolloutError(HintedError):
    """A rollout command cannot do what was asked."""


# ---------------------------------------------------------------------------
# rollout status
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    """One line of ``rollout status`` and whether the rollout is complete."""

    message: str
    done: bool


def deployment_revision(obj: Obj) -> int:
    """The object's ``deployment.kubernetes.io/revision`` (0 when absent, as kubectl reads it).

    Raises ``ValueError`` when the annotation is not a number.
    """
    value = (dig(obj, "metadata", "annotations") or {}).get(REVISION_ANNOTATION)
    return 0 if value is None else int(str(value))


def deployment_status(deploy: Obj, revision: int = 0) -> RolloutStatus:
    """kubectl's ``DeploymentStatusViewer.Status``: the message for this state of the Deployment.

    Raises ``RolloutError`` when the rollout failed (its Progressing condition
    says ProgressDeadlineExceeded) or runs another revision than ``revision``.
    """
    name = str(dig(deploy, "metadata", "name") or "")
    if revision > 0:
        try:
            running = deployment_revision(deploy)
        except ValueError as exc:
            raise RolloutError(f'cannot get the revision of deployment "{name}": {exc}') from exc
        if running != revision:
            raise RolloutError(
                f"desired revision ({revision}) is different from the running revision ({running})"
            )
    status = deploy.get("status") or {}
    if num(dig(deploy, "metadata", "generation")) > num(status.get("observedGeneration")):
        return RolloutStatus("Waiting for deployment spec update to be observed...", False)
    for cond in status.get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == "Progressing":
            if cond.get("reason") == TIMED_OUT:
                raise RolloutError(
                    f'deployment "{name}" exceeded its progress deadline',
                    hint=f"see why with `meshwork describe deployment/{name}` and its pods; "
                    f"fix the template and apply it, or go back with "
                    f"`meshwork rollout undo deployment/{name}`",
                )
            break
    prefix = f'Waiting for deployment "{name}" rollout to finish'
    spec_replicas = (deploy.get("spec") or {}).get("replicas", DEFAULT_REPLICAS)
    updated = num(status.get("updatedReplicas"))
    replicas = num(status.get("replicas"))
    available = num(status.get("availableReplicas"))
    if isinstance(spec_replicas, int) and updated < spec_replicas:
        return RolloutStatus(
            f"{prefix}: {updated} out of {spec_replicas} new replicas have been updated...", False
        )
    if replicas > updated:
        return RolloutStatus(
            f"{prefix}: {replicas - updated} old replicas are pending termination...", False
        )
    if available < updated:
        return RolloutStatus(
            f"{prefix}: {available} of {updated} updated replicas are available...", False
        )
    return RolloutStatus(f'deployment "{name}" successfully rolled out', True)


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """A Go duration (``30s``, ``5m``, ``1h30m``, ``0``) in seconds; a bare number is seconds."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if seconds < 0:
            raise ValueError(f"invalid duration {text!r}: must not be negative")
        return seconds
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(value) or not value:
        raise ValueError(f"invalid duration {text!r}: use a number and a unit, e.g. 30s, 5m, 1h")
    return total


# ---------------------------------------------------------------------------
# A Deployment's ReplicaSets: history, undo
# ---------------------------------------------------------------------------


def owned_by(obj: Obj, owner: Obj) -> bool:
    """``obj`` has ``owner`` as its controller (ownerReference with controller=true and its uid)."""
    uid = dig(owner, "metadata", "uid")
    return any(
        isinstance(ref, Mapping) and ref.get("controller") is True and ref.get("uid") == uid
        for ref in dig(obj, "metadata", "ownerReferences") or ()
    )


def revisions(replicasets: Iterable[Obj]) -> dict[int, Obj]:
    """Revision number -> ReplicaSet, as kubectl's history viewer keys them.

    A ReplicaSet without the annotation is revision 0; one whose annotation is
    not a number is left out.
    """
    out: dict[int, Obj] = {}
    for rs in replicasets:
        try:
            out[deployment_revision(rs)] = rs
        except ValueError:
            continue
    return out


def history_table(replicasets: Iterable[Obj]) -> str:
    """The ``REVISION  CHANGE-CAUSE`` table, oldest revision first (no trailing newline)."""
    by_revision = revisions(replicasets)
    if not by_revision:
        return "No rollout history found."
    rows = [["REVISION", "CHANGE-CAUSE"]]
    for rev in sorted(by_revision):
        cause = (dig(by_revision[rev], "metadata", "annotations") or {}).get(
            CHANGE_CAUSE_ANNOTATION
        )
        rows.append([str(rev), str(cause) if cause else "<none>"])
    return tabwrite(rows, minwidth=0, padding=2).rstrip("\n")


def revision_template(replicasets: Iterable[Obj], revision: int) -> dict[str, Any]:
    """The pod template of ``revision``, carrying the ReplicaSet's change-cause as kubectl shows it."""
    by_revision = revisions(replicasets)
    rs = by_revision.get(revision)
    if rs is None:
        known = ", ".join(str(r) for r in sorted(by_revision)) or "none"
        raise RolloutError(
            "unable to find the specified revision",
            hint=f"the revisions there are: {known} (see `meshwork rollout history`)",
        )
    template = copy.deepcopy(dict(dig(rs, "spec", "template") or {}))
    cause = (dig(rs, "metadata", "annotations") or {}).get(CHANGE_CAUSE_ANNOTATION)
    if cause:
        meta = template.setdefault("metadata", {})
        meta["annotations"] = {**(meta.get("annotations") or {}), CHANGE_CAUSE_ANNOTATION: cause}
    return template


def template_text(template: Obj) -> str:
    """A pod template laid out as ``kubectl describe`` lays it out (``Pod Template:`` ...)."""
    w = Writer()
    pod_template_section(w, template)
    return w.text().rstrip("\n")


def rollback_source(replicasets: Sequence[Obj], to_revision: int, deploy_name: str) -> Obj:
    """The ReplicaSet ``rollout undo`` restores: ``to_revision``, or (0) the one before the latest."""
    if to_revision < 0:
        raise RolloutError(f"unable to find specified revision {to_revision} in history")
    latest: tuple[int, Obj] | None = None
    previous: tuple[int, Obj] | None = None
    for rev, rs in sorted(revisions(replicasets).items()):
        if to_revision and rev == to_revision:
            return rs
        previous, latest = latest, (rev, rs)
    if to_revision:
        raise RolloutError(
            f"unable to find specified revision {to_revision} in history",
            hint=f"list the revisions with `meshwork rollout history deployment/{deploy_name}`",
        )
    if previous is None:
        raise RolloutError(
            f'no rollout history found for deployment "{deploy_name}"',
            hint="there is nothing to go back to until the template has changed once",
        )
    return previous[1]


def _without_hash(template: Obj) -> dict[str, Any]:
    out = copy.deepcopy(dict(template))
    meta = dict(out.get("metadata") or {})
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != POD_TEMPLATE_HASH_LABEL}
    if labels:
        meta["labels"] = labels
    else:
        meta.pop("labels", None)
    out["metadata"] = meta
    return out


def rollback_patch(deploy: Obj, rs: Obj) -> list[dict[str, Any]] | None:
    """The JSON patch that puts ``rs``'s template (minus the hash label) back into ``deploy``.

    The Deployment keeps its own revision/last-applied annotations and takes
    every other annotation from the ReplicaSet (its change-cause among them),
    as kubectl's ``DeploymentRollbacker`` does. None when the template is
    already the same.
    """
    template = _without_hash(dig(rs, "spec", "template") or {})
    if template == _without_hash(dig(deploy, "spec", "template") or {}):
        return None
    current = dig(deploy, "metadata", "annotations") or {}
    annotations = {k: v for k, v in current.items() if k in ROLLBACK_KEPT_ANNOTATIONS}
    for key, value in (dig(rs, "metadata", "annotations") or {}).items():
        if key not in ROLLBACK_KEPT_ANNOTATIONS:
            annotations[key] = value
    return [
        {"op": "replace", "path": "/spec/template", "value": template},
        # "add" replaces an existing member and also works where there is none yet.
        {"op": "add", "path": "/metadata/annotations", "value": annotations},
    ]


# ---------------------------------------------------------------------------
# restart, scale
# ---------------------------------------------------------------------------


def rfc3339(now: datetime) -> str:
    """Go's ``time.RFC3339`` of a timezone-aware time: seconds, ``Z`` for UTC, else ``+hh:mm``."""
    text = now.replace(microsecond=0).isoformat()
    if now.utcoffset() == timedelta(0):
        text = text.removesuffix("+00:00") + "Z"
    return text


def restart_patch(now: datetime) -> dict[str, Any]:
    """The merge patch of ``rollout restart``: a new template annotation, so a new ReplicaSet."""
    stamp = rfc3339(now)
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: stamp}}}}}


class PreconditionFailed(HintedError):
    """``scale --current-replicas`` / ``--resource-version`` did not hold."""


def check_scale_preconditions(
    obj: Obj, current_replicas: int | None, resource_version: str | None
) -> None:
    """kubectl's ``ScalePrecondition.validate``: raise with kubectl's message when one fails."""
    if current_replicas is not None and current_replicas >= 0:
        actual = (obj.get("spec") or {}).get("replicas", DEFAULT_REPLICAS)
        if actual != current_replicas:
            raise PreconditionFailed(
                f"Expected replicas to be {current_replicas}, was {actual}",
                hint="someone else scaled it since; look again, then scale with "
                f"--current-replicas={actual} if you still mean to",
            )
    if resource_version:
        actual_rv = str(dig(obj, "metadata", "resourceVersion") or "")
        if actual_rv != resource_version:
            raise PreconditionFailed(
                f"Expected resource version to be {resource_version}, was {actual_rv}",
                hint="the object changed since; look again, then scale with its new version",
            )

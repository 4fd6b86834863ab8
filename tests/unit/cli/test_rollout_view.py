"""kubectl's rollout and scale rules (``meshwork.cli.rollout_view``), on plain wire dicts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.cli import rollout_view as rv
from meshwork.core.reconcile import deployment as controller
from meshwork.core.reconcile import podtemplate


def test_the_names_are_the_controllers() -> None:
    assert rv.REVISION_ANNOTATION == controller.REVISION_ANNOTATION
    assert rv.REVISION_HISTORY_ANNOTATION == controller.REVISION_HISTORY_ANNOTATION
    assert rv.TIMED_OUT == controller.TIMED_OUT
    assert rv.POD_TEMPLATE_HASH_LABEL == podtemplate.POD_TEMPLATE_HASH_LABEL


def deploy(
    *,
    generation: int = 2,
    observed: int = 2,
    spec_replicas: int | None = 3,
    replicas: int = 3,
    updated: int = 3,
    available: int = 3,
    reason: str = "NewReplicaSetAvailable",
    revision: str | None = "4",
) -> dict[str, Any]:
    spec: dict[str, Any] = {} if spec_replicas is None else {"replicas": spec_replicas}
    meta: dict[str, Any] = {"name": "web", "generation": generation}
    if revision is not None:
        meta["annotations"] = {rv.REVISION_ANNOTATION: revision}
    return {
        "metadata": meta,
        "spec": spec,
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": reason},
            ],
        },
    }


W = 'Waiting for deployment "web" rollout to finish: '


@pytest.mark.parametrize(
    ("obj", "message", "done"),
    [
        (deploy(generation=3), "Waiting for deployment spec update to be observed...", False),
        (deploy(updated=1), W + "1 out of 3 new replicas have been updated...", False),
        (deploy(replicas=4), W + "1 old replicas are pending termination...", False),
        (deploy(available=2), W + "2 of 3 updated replicas are available...", False),
        (deploy(), 'deployment "web" successfully rolled out', True),
        # spec.replicas left out means apps/v1's default of 1.
        (
            deploy(spec_replicas=None, replicas=1, updated=0, available=0),
            W + "0 out of 1 new replicas have been updated...",
            False,
        ),
        # Not yet observed wins over everything, even a timed-out condition.
        (
            deploy(generation=5, reason="ProgressDeadlineExceeded"),
            "Waiting for deployment spec update to be observed...",
            False,
        ),
    ],
)
def test_status_messages_are_kubectls(obj: dict[str, Any], message: str, done: bool) -> None:
    assert rv.deployment_status(obj) == rv.RolloutStatus(message, done)


def test_status_fails_on_the_progress_deadline() -> None:
    with pytest.raises(rv.RolloutError, match='deployment "web" exceeded its progress deadline'):
        rv.deployment_status(deploy(updated=1, reason="ProgressDeadlineExceeded"))


def test_status_checks_the_revision_asked_for() -> None:
    assert rv.deployment_status(deploy(), revision=4).done
    with pytest.raises(
        rv.RolloutError,
        match=r"desired revision \(3\) is different from the running revision \(4\)",
    ):
        rv.deployment_status(deploy(), revision=3)
    with pytest.raises(rv.RolloutError, match="cannot get the revision"):
        rv.deployment_status(deploy(revision="x"), revision=1)


counts = st.integers(min_value=0, max_value=20)


@given(gen=counts, obs=counts, spec=counts, replicas=counts, updated=counts, available=counts)
def test_status_is_done_exactly_when_the_rollout_is_complete(
    gen: int, obs: int, spec: int, replicas: int, updated: int, available: int
) -> None:
    obj = deploy(generation=gen, observed=obs, spec_replicas=spec, replicas=replicas,
                 updated=updated, available=available)  # fmt: skip
    state = rv.deployment_status(obj)
    complete = gen <= obs and updated >= spec and replicas <= updated and available >= updated
    assert state.done == complete
    assert ('"web"' in state.message) or state.message.startswith("Waiting for deployment spec")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("0s", 0.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("500ms", 0.5),
        ("2m3s", 123.0),
        ("45", 45.0),
    ],
)
def test_durations_read_as_go_reads_them(text: str, seconds: float) -> None:
    assert rv.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5x", "m", "5m junk", "-3", "s5"])
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        rv.parse_duration(text)


# -- history and undo ----------------------------------------------------------------------

OWNER = {"metadata": {"name": "web", "uid": "u-1"}}


def rs(
    revision: str | None, value: str, cause: str | None = None, hash_: str = "h"
) -> dict[str, Any]:
    annotations = {} if revision is None else {rv.REVISION_ANNOTATION: revision}
    if cause:
        annotations[rv.CHANGE_CAUSE_ANNOTATION] = cause
    return {
        "metadata": {"name": f"web-{hash_}", "annotations": annotations,
                     "ownerReferences": [{"kind": "Deployment", "uid": "u-1", "controller": True}]},
        "spec": {"template": {
            "metadata": {"labels": {"app": "web", "pod-template-hash": hash_}},
            "spec": {"containers": [{"name": "app", "image": "busybox", "env": [{"name": "V", "value": value}]}]},
        }},
    }  # fmt: skip


def test_history_table_orders_revisions_and_fills_in_none() -> None:
    table = rv.history_table([rs("10", "c", "third"), rs("2", "a"), rs("9", "b", "second")])
    assert table == "REVISION  CHANGE-CAUSE\n2         <none>\n9         second\n10        third"


def test_history_keys_like_kubectl() -> None:
    # No annotation counts as revision 0; a non-number is left out.
    assert rv.history_table([rs(None, "a"), rs("x", "b"), rs("1", "c")]).splitlines()[1:] == [
        "0         <none>", "1         <none>"]  # fmt: skip
    assert rv.history_table([]) == "No rollout history found."


def test_revision_template_carries_the_change_cause() -> None:
    template = rv.revision_template([rs("1", "a", "first"), rs("2", "b")], 1)
    assert template["metadata"]["annotations"] == {rv.CHANGE_CAUSE_ANNOTATION: "first"}
    text = rv.template_text(template)
    assert text.splitlines()[0] == "Pod Template:"
    assert "kubernetes.io/change-cause: first" in text
    with pytest.raises(rv.RolloutError, match="unable to find the specified revision") as info:
        rv.revision_template([rs("1", "a"), rs("2", "b")], 3)
    assert info.value.hint is not None and "1, 2" in info.value.hint


def test_rollback_source_is_the_previous_revision_or_the_one_asked() -> None:
    sets = [rs("3", "c", hash_="c"), rs("1", "a", hash_="a"), rs("2", "b", hash_="b")]
    assert rv.rollback_source(sets, 0, "web")["metadata"]["name"] == "web-b"
    assert rv.rollback_source(sets, 1, "web")["metadata"]["name"] == "web-a"
    with pytest.raises(rv.RolloutError, match="unable to find specified revision 7 in history"):
        rv.rollback_source(sets, 7, "web")
    with pytest.raises(rv.RolloutError, match="unable to find specified revision -1"):
        rv.rollback_source(sets, -1, "web")
    with pytest.raises(rv.RolloutError, match='no rollout history found for deployment "web"'):
        rv.rollback_source([rs("1", "a")], 0, "web")


def test_rollback_patch_restores_the_template_without_the_hash() -> None:
    current = {
        "metadata": {"name": "web", "annotations": {
            rv.REVISION_ANNOTATION: "2", rv.CHANGE_CAUSE_ANNOTATION: "now",
            "kubectl.kubernetes.io/last-applied-configuration": "{}", "team": "x"}},
        "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}},
    }  # fmt: skip
    old = rs("1", "a", "then")
    old["metadata"]["annotations"]["owner"] = "y"
    patch = rv.rollback_patch(current, old)
    assert patch is not None
    replace, annotations = patch
    assert replace["op"] == "replace" and replace["path"] == "/spec/template"
    assert replace["value"]["metadata"]["labels"] == {"app": "web"}
    assert replace["value"]["spec"] == old["spec"]["template"]["spec"]
    assert annotations["path"] == "/metadata/annotations"
    # The Deployment's own annotations stay; the rest come from the ReplicaSet (team goes).
    assert annotations["value"] == {
        rv.REVISION_ANNOTATION: "2", "kubectl.kubernetes.io/last-applied-configuration": "{}",
        rv.CHANGE_CAUSE_ANNOTATION: "then", "owner": "y"}  # fmt: skip
    # The ReplicaSet's own object is not changed by computing the patch.
    assert old["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] == "h"


def test_rollback_to_the_running_template_is_skipped() -> None:
    same = rs("2", "b")
    current = {
        "metadata": {"name": "web"},
        "spec": {"template": rv._without_hash(same["spec"]["template"])},
    }
    assert rv.rollback_patch(current, same) is None


def test_owned_by_needs_the_controller_reference() -> None:
    assert rv.owned_by(rs("1", "a"), OWNER)
    stranger = rs("1", "a")
    stranger["metadata"]["ownerReferences"][0]["uid"] = "u-2"
    assert not rv.owned_by(stranger, OWNER)
    not_controller = rs("1", "a")
    not_controller["metadata"]["ownerReferences"][0]["controller"] = False
    assert not rv.owned_by(not_controller, OWNER)


# -- restart and scale -----------------------------------------------------------------------


def test_restarted_at_is_go_rfc3339() -> None:
    assert (
        rv.rfc3339(datetime(2024, 2, 1, 14, 27, 50, 123456, tzinfo=UTC)) == "2024-02-01T14:27:50Z"
    )
    plus3 = timezone(timedelta(hours=3))
    assert rv.rfc3339(datetime(2024, 2, 1, 17, 27, 50, tzinfo=plus3)) == "2024-02-01T17:27:50+03:00"
    patch = rv.restart_patch(datetime(2024, 2, 1, tzinfo=UTC))
    assert patch == {"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2024-02-01T00:00:00Z"}}}}}  # fmt: skip


def test_scale_preconditions() -> None:
    obj = {"metadata": {"resourceVersion": "17"}, "spec": {"replicas": 3}}
    rv.check_scale_preconditions(obj, None, None)
    rv.check_scale_preconditions(obj, 3, "17")
    with pytest.raises(rv.PreconditionFailed, match=r"^Expected replicas to be 2, was 3$"):
        rv.check_scale_preconditions(obj, 2, None)
    with pytest.raises(
        rv.PreconditionFailed, match=r"^Expected resource version to be 16, was 17$"
    ):
        rv.check_scale_preconditions(obj, None, "16")
    # No spec.replicas is the default of 1.
    rv.check_scale_preconditions({"spec": {}}, 1, None)

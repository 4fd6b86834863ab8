"""The config-rollout decision: references, data digests, and the record/roll rule."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import meshwork.model  # noqa: F401  (registers every kind)
from meshwork.core.reconcile import Outcome, RecordEvent, UpdateObject
from meshwork.core.reconcile.configrollout import (
    ABSENT,
    CONFIG_HASH_ANNOTATION,
    CONFIG_RECORD_ANNOTATION,
    OPT_OUT_ANNOTATION,
    SourceRef,
    data_digest,
    parse_record,
    reconcile_config_rollout,
    references,
)
from meshwork.model.core import ConfigMap, Secret
from meshwork.model.pod import PodSpec
from meshwork.model.workloads import DaemonSet, Deployment

CM = SourceRef("ConfigMap", "app-config")
SEC = SourceRef("Secret", "db")


def configmap(data: Mapping[str, str] | None = None, *, labels: dict[str, str] | None = None,
              rv: str | None = None, binary: Mapping[str, str] | None = None,
              name: str = "app-config") -> ConfigMap:  # fmt: skip
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if labels:
        meta["labels"] = labels
    if rv:
        meta["resourceVersion"] = rv
    wire: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}
    if data is not None:
        wire["data"] = dict(data)
    if binary is not None:
        wire["binaryData"] = dict(binary)
    return ConfigMap.model_validate(wire)


def secret(**fields: Any) -> Secret:
    return Secret.model_validate({"apiVersion": "v1", "kind": "Secret",
                                  "metadata": {"name": "db", "namespace": "default"}, **fields})  # fmt: skip


def container(**extra: Any) -> dict[str, Any]:
    return {"name": "app", "image": "busybox", "command": ["sleep", "3600"], **extra}


ENV_FROM_CM = {"envFrom": [{"configMapRef": {"name": "app-config"}}]}


def deployment(spec: dict[str, Any] | None = None, annotations: dict[str, str] | None = None) -> Deployment:
    labels = {"app": "web"}
    meta: dict[str, Any] = {"name": "web", "namespace": "default", "uid": "u-1", "resourceVersion": "7"}
    if annotations:
        meta["annotations"] = annotations
    return Deployment.model_validate({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
        "spec": {"selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": spec or {"containers": [container(**ENV_FROM_CM)]}}},
    })  # fmt: skip


def only_update(outcome: Outcome) -> Deployment:
    updates = [a for a in outcome.actions if isinstance(a, UpdateObject)]
    assert len(updates) == 1, outcome
    obj = updates[0].obj
    assert isinstance(obj, Deployment)
    return obj


def template_hash(d: Deployment) -> str | None:
    return (d.spec.template.metadata.annotations or {}).get(CONFIG_HASH_ANNOTATION)


def record_of(d: Deployment) -> dict[str, str] | None:
    return parse_record((d.metadata.annotations or {}).get(CONFIG_RECORD_ANNOTATION))


def settle(d: Deployment, sources: Mapping[SourceRef, ConfigMap | Secret | None]) -> tuple[Deployment, list[str]]:
    """Reconcile and apply the update (if any); return the workload and the event messages.
    Reconciling the result again must decide nothing (idempotence)."""
    outcome = reconcile_config_rollout(d, sources)
    events = [a.message for a in outcome.actions if isinstance(a, RecordEvent)]
    if outcome.empty:
        return d, events
    d = only_update(outcome)
    assert reconcile_config_rollout(d, sources).empty
    return d, events


# -- references ---------------------------------------------------------------


def test_references_cover_env_envfrom_volumes_projected_and_init_containers() -> None:
    spec = PodSpec.model_validate({
        "initContainers": [container(name="init", env=[
            {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "init-cm", "key": "a"}}}])],
        "containers": [container(
            env=[{"name": "B", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "b", "optional": True}}},
                 {"name": "C", "value": "literal"},
                 {"name": "D", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            envFrom=[{"configMapRef": {"name": "from-cm"}}, {"secretRef": {"name": "from-secret"}}])],
        "volumes": [
            {"name": "v1", "configMap": {"name": "vol-cm", "optional": True}},
            {"name": "v2", "secret": {"secretName": "vol-secret"}},
            {"name": "v3", "projected": {"sources": [
                {"configMap": {"name": "proj-cm"}}, {"secret": {"name": "proj-secret", "optional": True}},
                {"downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "metadata.name"}}]}}]}},
            {"name": "v4", "emptyDir": {}},
        ],
    })  # fmt: skip
    assert references(spec) == {
        SourceRef("ConfigMap", "init-cm"): False,
        SourceRef("Secret", "env-secret"): True,
        SourceRef("ConfigMap", "from-cm"): False,
        SourceRef("Secret", "from-secret"): False,
        SourceRef("ConfigMap", "vol-cm"): True,
        SourceRef("Secret", "vol-secret"): False,
        SourceRef("ConfigMap", "proj-cm"): False,
        SourceRef("Secret", "proj-secret"): True,
    }


def test_an_object_is_optional_only_when_every_reference_says_so() -> None:
    spec = PodSpec.model_validate({"containers": [container(envFrom=[{"configMapRef": {"name": "x", "optional": True}}])],
                                   "volumes": [{"name": "v", "configMap": {"name": "x"}}]})  # fmt: skip
    assert references(spec) == {SourceRef("ConfigMap", "x"): False}


# -- the digest -----------------------------------------------------------------

keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=12).filter(
    lambda k: k not in (".", ".."))  # fmt: skip  (the two keys upstream refuses)
datas = st.dictionaries(keys, st.text(max_size=20), max_size=8)


@given(datas, st.randoms(use_true_random=False))
def test_the_digest_does_not_depend_on_key_order(data: dict[str, str], rnd: Any) -> None:
    items = list(data.items())
    rnd.shuffle(items)
    assert data_digest(configmap(dict(items))) == data_digest(configmap(data))


@given(datas, keys, st.text(max_size=20))
def test_any_change_of_the_data_changes_the_digest(data: dict[str, str], key: str, value: str) -> None:
    changed = {**data, key: value}
    if changed == data:
        changed = {**data, key: value + "x"}
    assert data_digest(configmap(changed)) != data_digest(configmap(data))
    removed = {k: v for k, v in data.items() if k != key}
    if removed != data:
        assert data_digest(configmap(removed)) != data_digest(configmap(data))


def test_labels_and_resource_version_do_not_count_but_binary_data_does() -> None:
    base = data_digest(configmap({"a": "1"}))
    assert data_digest(configmap({"a": "1"}, labels={"x": "y"}, rv="99")) == base
    assert data_digest(configmap({})) == data_digest(configmap(None))
    assert data_digest(configmap({"a": "1"}, binary={"b": "AA=="})) != base
    assert data_digest(configmap(None, binary={"a": "MQ=="})) != data_digest(configmap({"a": "MQ=="}))
    assert data_digest(None) == ABSENT != base


def test_a_secrets_string_data_digests_as_the_data_it_becomes() -> None:
    encoded = base64.b64encode(b"hunter2").decode()
    assert data_digest(secret(stringData={"pw": "hunter2"})) == data_digest(secret(data={"pw": encoded}))
    assert data_digest(secret(data={"pw": encoded})) != data_digest(secret(data={"pw": encoded}, stringData={"pw": "x"}))


# -- the rule ---------------------------------------------------------------------


def test_first_sight_records_the_digests_without_touching_the_template() -> None:
    d, events = settle(deployment(), {CM: configmap({"a": "1"})})
    assert record_of(d) == {"ConfigMap/app-config": data_digest(configmap({"a": "1"}))}
    assert template_hash(d) is None and events == []
    assert d.spec.template == deployment().spec.template


def test_a_data_change_rolls_once_with_an_event_and_a_label_change_does_nothing() -> None:
    d, _ = settle(deployment(), {CM: configmap({"a": "1"})})
    # Only the labels and resourceVersion moved: nothing to do.
    assert reconcile_config_rollout(d, {CM: configmap({"a": "1"}, labels={"x": "y"}, rv="5")}).empty

    outcome = reconcile_config_rollout(d, {CM: configmap({"a": "2"})})
    rolled = only_update(outcome)
    (event,) = [a for a in outcome.actions if isinstance(a, RecordEvent)]
    assert (event.type, event.reason, event.message) == (
        "Normal", "ConfigChanged", "ConfigMap default/app-config changed: rolling the pods")
    assert (event.about.kind, event.about.name, event.about.namespace) == ("Deployment", "web", "default")
    assert template_hash(rolled) is not None
    assert rolled.metadata.resource_version == "7"  # the CAS precondition
    assert reconcile_config_rollout(rolled, {CM: configmap({"a": "2"})}).empty

    # A further change moves the template annotation again.
    again = only_update(reconcile_config_rollout(rolled, {CM: configmap({"a": "3"})}))
    assert template_hash(again) not in (None, template_hash(rolled))


def test_several_changed_objects_are_named_in_one_event() -> None:
    spec = {"containers": [container(envFrom=[{"configMapRef": {"name": "app-config"}}, {"secretRef": {"name": "db"}}])]}
    d, _ = settle(deployment(spec), {CM: configmap({"a": "1"}), SEC: secret(data={"k": "MQ=="})})
    _, events = settle(d, {CM: configmap({"a": "2"}), SEC: secret(data={"k": "Mg=="})})
    assert events == ["ConfigMap default/app-config, Secret default/db changed: rolling the pods"]


def test_opting_out_leaves_the_workload_alone() -> None:
    opted = deployment(annotations={OPT_OUT_ANNOTATION: "false"})
    assert reconcile_config_rollout(opted, {CM: configmap({"a": "1"})}).empty
    d, _ = settle(deployment(), {CM: configmap({"a": "1"})})
    d.metadata.annotations = {**(d.metadata.annotations or {}), OPT_OUT_ANNOTATION: "False"}
    assert reconcile_config_rollout(d, {CM: configmap({"a": "2"})}).empty
    d.metadata.annotations[OPT_OUT_ANNOTATION] = "true"
    assert template_hash(only_update(reconcile_config_rollout(d, {CM: configmap({"a": "2"})}))) is not None


def test_a_deleted_object_keeps_its_record_and_coming_back_changed_rolls() -> None:
    d, _ = settle(deployment(), {CM: configmap({"a": "1"})})
    assert reconcile_config_rollout(d, {CM: None}).empty
    assert reconcile_config_rollout(d, {}).empty  # a missing entry is a missing object
    assert reconcile_config_rollout(d, {CM: configmap({"a": "1"})}).empty
    _, events = settle(d, {CM: configmap({"a": "9"})})
    assert events == ["ConfigMap default/app-config changed: rolling the pods"]


@pytest.mark.parametrize(("optional", "rolls"), [(False, False), (True, True)])
def test_an_object_first_seen_missing_rolls_on_appearing_only_when_optional(optional: bool, rolls: bool) -> None:
    spec = {"containers": [container(envFrom=[{"configMapRef": {"name": "app-config", "optional": optional}}])]}
    d, _ = settle(deployment(spec), {})
    assert record_of(d) == {"ConfigMap/app-config": ABSENT}
    d, events = settle(d, {CM: configmap({"a": "1"})})
    assert record_of(d) == {"ConfigMap/app-config": data_digest(configmap({"a": "1"}))}
    assert (template_hash(d) is not None, bool(events)) == (rolls, rolls)


def test_a_newly_referenced_object_is_recorded_without_rolling_and_a_dropped_one_forgotten() -> None:
    d, _ = settle(deployment(), {CM: configmap({"a": "1"})})
    d.spec.template.spec.containers[0].env_from = None
    d.spec.template.spec.volumes = PodSpec.model_validate(
        {"containers": [container()], "volumes": [{"name": "v", "secret": {"secretName": "db"}}]}).volumes
    d, events = settle(d, {SEC: secret(data={"k": "MQ=="})})
    assert record_of(d) == {"Secret/db": data_digest(secret(data={"k": "MQ=="}))}
    assert template_hash(d) is None and events == []


def test_a_record_we_did_not_write_is_a_first_sight() -> None:
    d = deployment(annotations={CONFIG_RECORD_ANNOTATION: "not json"})
    d, events = settle(d, {CM: configmap({"a": "1"})})
    assert record_of(d) is not None and template_hash(d) is None and events == []
    assert parse_record(json.dumps({"a": 1})) is None


def test_a_deleting_workload_is_left_alone() -> None:
    d = deployment()
    d.metadata.deletion_timestamp = "2024-01-01T00:00:00Z"
    assert reconcile_config_rollout(d, {CM: configmap({"a": "1"})}).empty


def test_a_daemonset_rolls_the_same_way() -> None:
    labels = {"app": "agent"}
    ds = DaemonSet.model_validate({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "default", "uid": "u-2", "resourceVersion": "3"},
        "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
            "containers": [container(env=[{"name": "T", "valueFrom": {"secretKeyRef": {"name": "db", "key": "k"}}}])]}}},
    })  # fmt: skip
    first = reconcile_config_rollout(ds, {SEC: secret(data={"k": "MQ=="})})
    (update,) = first.actions
    assert isinstance(update, UpdateObject) and isinstance(update.obj, DaemonSet)
    outcome = reconcile_config_rollout(update.obj, {SEC: secret(data={"k": "Mg=="})})
    rolled, event = outcome.actions
    assert isinstance(rolled, UpdateObject) and isinstance(rolled.obj, DaemonSet)
    assert CONFIG_HASH_ANNOTATION in (rolled.obj.spec.template.metadata.annotations or {})
    assert isinstance(event, RecordEvent) and event.about.kind == "DaemonSet"
    assert event.message == "Secret default/db changed: rolling the pods"


@given(st.lists(st.one_of(st.none(), st.sampled_from(["1", "2", "3"])), min_size=1, max_size=12))
def test_the_template_moves_exactly_when_present_data_changes(versions: list[str | None]) -> None:
    """A required ConfigMap going through versions (None: deleted): the pods roll once
    per change of the data they could have read, never on a deletion or a return
    with the same data, and every reconcile after its own writes decides nothing."""
    d = deployment()
    rolls, last_present = 0, None
    for version in versions:
        source = configmap({"v": version}) if version is not None else None
        before = template_hash(d)
        d, events = settle(d, {CM: source})
        moved = template_hash(d) != before
        assert moved == bool(events)
        rolls += moved
        assert moved == (version is not None and last_present is not None and version != last_present)
        last_present = version if version is not None else last_present
    present = [v for v in versions if v is not None]
    assert rolls == sum(a != b for a, b in itertools.pairwise(present))

"""The client's pure parts: resource paths and Status-to-exception mapping."""

from __future__ import annotations

import json
from typing import Any

import pytest

from meshwork import errors
from meshwork.client import error_from_status, resource_path, version_for
from meshwork.model.base import KindInfo, Resource

POD = KindInfo(
    group="", versions=("v1",), kind="Pod", plural="pods", singular="pod", model=Resource
)
NODE = KindInfo(
    group="",
    versions=("v1",),
    kind="Node",
    plural="nodes",
    singular="node",
    model=Resource,
    namespaced=False,
)
DEPLOY = KindInfo(
    group="apps",
    versions=("v1",),
    kind="Deployment",
    plural="deployments",
    singular="deployment",
    model=Resource,
)
VS = KindInfo(
    group="networking.istio.io",
    versions=("v1", "v1beta1"),
    kind="VirtualService",
    plural="virtualservices",
    singular="virtualservice",
    model=Resource,
)


@pytest.mark.parametrize(
    ("args", "kwargs", "path"),
    [
        ((POD, "default"), {}, "/api/v1/namespaces/default/pods"),
        ((POD, None), {}, "/api/v1/pods"),
        ((POD, "default", "web-1"), {}, "/api/v1/namespaces/default/pods/web-1"),
        ((POD, "default", "web-1", "status"), {}, "/api/v1/namespaces/default/pods/web-1/status"),
        ((NODE, "ignored", "node-1"), {}, "/api/v1/nodes/node-1"),
        ((NODE, None), {}, "/api/v1/nodes"),
        ((DEPLOY, "prod", "web"), {}, "/apis/apps/v1/namespaces/prod/deployments/web"),
        ((VS, "default"), {}, "/apis/networking.istio.io/v1/namespaces/default/virtualservices"),
        (
            (VS, "default", "r"),
            {"version": "v1beta1"},
            "/apis/networking.istio.io/v1beta1/namespaces/default/virtualservices/r",
        ),
        ((POD, "default", "a b/c"), {}, "/api/v1/namespaces/default/pods/a%20b%2Fc"),
    ],
)
def test_resource_path(args: tuple[Any, ...], kwargs: dict[str, Any], path: str) -> None:
    assert resource_path(*args, **kwargs) == path


def test_resource_path_refuses_what_cannot_be_addressed() -> None:
    with pytest.raises(ValueError):
        resource_path(POD, None, "web-1")
    with pytest.raises(ValueError):
        resource_path(POD, "default", None, "status")


def test_version_for_uses_a_served_version_of_the_body() -> None:
    assert version_for(VS, {"apiVersion": "networking.istio.io/v1beta1"}) == "v1beta1"
    assert version_for(VS, {"apiVersion": "networking.istio.io/v1alpha3"}) == "v1"
    assert version_for(VS, {"apiVersion": "other.io/v1beta1"}) == "v1"
    assert version_for(VS, {}) == "v1"


def status(code: int, reason: str, message: str, **details: Any) -> bytes:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }
    if details:
        body["details"] = details
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("code", "reason", "cls"),
    [
        (400, "BadRequest", errors.BadRequest),
        (401, "Unauthorized", errors.Unauthenticated),
        (403, "Forbidden", errors.Forbidden),
        (404, "NotFound", errors.NotFound),
        (405, "MethodNotAllowed", errors.MethodNotAllowed),
        (409, "Conflict", errors.Conflict),
        (409, "AlreadyExists", errors.AlreadyExists),
        (410, "Expired", errors.Gone),
        (413, "RequestEntityTooLarge", errors.TooLarge),
        (415, "UnsupportedMediaType", errors.UnsupportedMediaType),
        (422, "Invalid", errors.ValidationError),
        (503, "ServiceUnavailable", errors.Unavailable),
        (507, "InsufficientStorage", errors.InsufficientStorage),
    ],
)
def test_status_maps_to_the_error_class(code: int, reason: str, cls: type[errors.ApiError]) -> None:
    err = error_from_status(code, status(code, reason, "boom"))
    assert type(err) is cls
    assert (err.status, err.reason, err.message) == (code, reason, "boom")


def test_status_details_and_causes_are_kept() -> None:
    err = error_from_status(
        422,
        status(
            422,
            "Invalid",
            'Deployment.apps "web" is invalid',
            name="web",
            group="apps",
            kind="Deployment",
            causes=[
                {"field": "spec.replicas", "message": "must be >= 0", "reason": "FieldValueInvalid"}
            ],
            retryAfterSeconds=3,
        ),
    )
    assert isinstance(err, errors.ValidationError)
    assert (err.name, err.group, err.kind, err.retry_after) == ("web", "apps", "Deployment", 3)
    assert err.causes == [errors.FieldCause("spec.replicas", "must be >= 0", "FieldValueInvalid")]


def test_a_body_that_is_not_a_status_is_quoted() -> None:
    err = error_from_status(502, b"<html>Bad Gateway</html>")
    assert type(err) is errors.ApiError
    assert err.status == 502
    assert err.message == "<html>Bad Gateway</html>"
    long = error_from_status(404, b"x" * 1000)
    assert isinstance(long, errors.NotFound) and len(long.message) < 400
    assert error_from_status(500, b"").message == "the server answered HTTP 500"

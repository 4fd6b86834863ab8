"""Kubernetes ``Status`` objects: how every API error reaches a client."""

from __future__ import annotations

import json
from typing import Any

from meshwork.errors import ApiError


def status_object(err: ApiError) -> dict[str, Any]:
    """The ``Status`` body for ``err``, with details and field causes."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": err.message,
        "reason": err.reason,
        "code": err.status,
    }
    details: dict[str, Any] = {}
    if err.name:
        details["name"] = err.name
    if err.group:
        details["group"] = err.group
    if err.kind:
        details["kind"] = err.kind
    if err.causes:
        details["causes"] = [
            {"reason": c.reason, "message": c.message, "field": c.field} for c in err.causes
        ]
    if err.retry_after:
        details["retryAfterSeconds"] = err.retry_after
    if details:
        body["details"] = details
    return body


def status_bytes(err: ApiError) -> bytes:
    return json.dumps(status_object(err), separators=(",", ":")).encode()


def success_status(details: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
    if details:
        body["details"] = details
    return json.dumps(body, separators=(",", ":")).encode()

"""The typed resource model: one pydantic model per kind, all registered in ``REGISTRY``.

Importing this package registers every kind meshwork serves, so the API
server, the CLI and the controllers always see the same set.
"""

from meshwork.model import (  # noqa: F401  (imported for their registrations)
    argo_analysis,
    argo_rollouts,
    argo_workflows,
    autoscaling,
    core,
    istio_networking,
    istio_security,
    pod,
    rbac,
    workloads,
)
from meshwork.model.base import REGISTRY, KindInfo, Resource, to_wire

__all__ = ["REGISTRY", "KindInfo", "Resource", "to_wire"]

"""A pod's ServiceAccount token, mounted as the kubelet's ``kube-api-access`` volume does.

The agent asks the API server for a token of the pod's ServiceAccount bound
to the pod (TokenRequest with ``boundObjectRef``: the token stops working
when the pod or the ServiceAccount is deleted) and writes, under the pod's
root dir, ``var/run/secrets/kubernetes.io/serviceaccount/``:

* ``token`` (mode 0600: every pod runs as the same user here, so the file is
  kept from other users of the machine, as the kubelet does when it knows the
  pod's user),
* ``namespace`` and ``ca.crt`` (0644; ``ca.crt`` is the namespace's
  ``kube-root-ca.crt`` ConfigMap when there is one, else empty: the API
  server speaks plain HTTP on loopback).

The app finds the directory in ``$MESHWORK_SERVICEACCOUNT_DIR`` and the API
server in ``$MESHWORK_SERVER``. ``automountServiceAccountToken: false`` on
the pod (or, when the pod says nothing, on the ServiceAccount) mounts nothing.
``mount_token`` does all of it for a starting pod, retrying until it works
(reported once as a ``FailedMount`` event).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from meshwork.agent.api import SERVICEACCOUNTS, AgentApi
from meshwork.model.core import ConfigMap
from meshwork.model.pod import Pod

MOUNT_PATH = "var/run/secrets/kubernetes.io/serviceaccount"
VOLUME = "kube-api-access"
ENV_DIR = "MESHWORK_SERVICEACCOUNT_DIR"
# The kubelet asks for one hour and refreshes; the API server extends tokens it gives
# kubelets to a year (--service-account-extend-token-expiration). A mounted token here
# lives a year and dies with its pod.
TOKEN_SECONDS = 365 * 24 * 3600
MOUNT_RETRY_S = 1.0  # a failed mount (the server away, no ServiceAccount yet) is tried again this often
ROOT_CA = "kube-root-ca.crt"  # the namespace's ConfigMap whose ``ca.crt`` becomes the volume's


def wants_token(pod: Pod, service_account: dict[str, Any] | None) -> bool:
    """The pod's own setting wins; else the ServiceAccount's; else mount (upstream's default)."""
    if pod.spec.automount_service_account_token is not None:
        return pod.spec.automount_service_account_token
    if service_account is not None and service_account.get("automountServiceAccountToken") is False:
        return False
    return True


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


async def request_token(api: AgentApi, pod: Pod) -> str:
    """A token of the pod's ServiceAccount, bound to the pod."""
    ns, sa = pod.metadata.namespace or "default", pod.spec.service_account_name or "default"
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": TOKEN_SECONDS,
                     "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod.metadata.name,
                                        "uid": pod.metadata.uid}}}  # fmt: skip
    path = f"/api/v1/namespaces/{quote(ns)}/serviceaccounts/{quote(sa)}/token"
    answer = await asyncio.to_thread(api.client.request, "POST", path, body=body)
    return str(answer["status"]["token"])


def write_mount(pod_dir: Path, namespace: str, token: str, ca: bytes) -> Path:
    """Write the volume and link it at its path under the pod's root; the linked dir."""
    target = pod_dir / "volumes" / VOLUME
    target.mkdir(parents=True, exist_ok=True)
    _write(target / "token", token.encode(), 0o600)
    _write(target / "namespace", namespace.encode(), 0o644)
    _write(target / "ca.crt", ca, 0o644)
    link = pod_dir / "root" / MOUNT_PATH
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink() and not link.exists():
        link.symlink_to(target)
    return link


async def mount_token(api: AgentApi, pod: Pod, pod_dir: Path, *, config_maps: Callable[[], Mapping[str, ConfigMap]],
                      stopped: Callable[[], bool], event: Callable[[str, str, str], None]) -> Path | None:  # fmt: skip
    """Mount the pod's token volume when the pod and its ServiceAccount want one; the linked dir, or None.

    Retried until it works or ``stopped()``; the first failure is a FailedMount ``event``
    (type, reason, message). ``config_maps`` gives the namespace's, for ``kube-root-ca.crt``.
    """
    ns = pod.metadata.namespace or "default"
    sa_name = pod.spec.service_account_name or "default"
    reported = False
    while not stopped():
        try:
            sa = await api.get(SERVICEACCOUNTS, ns, sa_name)
            if not wants_token(pod, sa):
                return None
            token = await request_token(api, pod)
            root_ca = config_maps().get(ROOT_CA)
            ca = ((root_ca.data or {}).get("ca.crt", "") if root_ca is not None else "").encode()
            return write_mount(pod_dir, ns, token, ca)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not reported:
                event("Warning", "FailedMount", f'MountVolume.SetUp failed for volume "{VOLUME}" : '
                      f'failed to fetch token for ServiceAccount "{sa_name}": {exc}')  # fmt: skip
                reported = True
            await asyncio.sleep(MOUNT_RETRY_S)
    return None

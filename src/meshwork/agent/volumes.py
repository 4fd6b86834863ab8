"""A pod's ConfigMap and Secret volumes, written as files under the pod's dir.

What lives here: ``write_volumes``, which writes each ``configMap`` and
``secret`` volume of the pod under ``<pod dir>/volumes/<name>/`` (its
``items`` and modes, or every key) and links every container's
``volumeMounts`` (with ``subPath``) at its path under ``<pod dir>/root/``.
The worker calls it before each container start, so a start sees the
sources' current data; a missing source that is not ``optional`` is the
pod's FailedMount message, as the kubelet reports it.

What must not live here: the ServiceAccount token volume (``agent.satoken``),
when a container starts (``agent.worker``), the sources' caches
(``agent.node.Sources``).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from meshwork.model.core import ConfigMap, Secret
from meshwork.model.pod import Pod

__all__ = ["VolumeSources", "write_volumes"]


class VolumeSources(Protocol):
    """Where volumes read their data (``agent.node.Sources``): a namespace's objects by name."""

    def config_maps(self, ns: str) -> Mapping[str, ConfigMap]: ...

    def secrets(self, ns: str) -> Mapping[str, Secret]: ...


def write_volumes(pod_dir: Path, pod: Pod, sources: VolumeSources) -> str | None:
    """ConfigMap and Secret volumes as files under ``pod_dir``; mount paths under ``pod_dir/root/``.

    The FailedMount message for the first source that is missing and not optional, or None.
    """
    ns = pod.metadata.namespace or "default"
    problem: str | None = None
    root = pod_dir / "root"
    root.mkdir(exist_ok=True)
    vols = pod_dir / "volumes"
    vols.mkdir(exist_ok=True)
    for vol in pod.spec.volumes or ():
        target = vols / vol.name
        target.mkdir(exist_ok=True)
        data: Mapping[str, bytes] | None = None
        mode = 0o644
        items = None
        if vol.config_map is not None:
            cm = sources.config_maps(ns).get(vol.config_map.name or "")
            if cm is not None:
                data = {k: base64.b64decode(v) for k, v in (cm.binary_data or {}).items()}
                data.update({k: v.encode() for k, v in (cm.data or {}).items()})
            elif not vol.config_map.optional and problem is None:
                problem = f'volume "{vol.name}" : configmap "{vol.config_map.name}" not found'
            mode, items = vol.config_map.default_mode, vol.config_map.items
        elif vol.secret is not None:
            sec = sources.secrets(ns).get(vol.secret.secret_name or "")
            if sec is not None:
                data = dict(sec.decoded())
            elif not vol.secret.optional and problem is None:
                problem = f'volume "{vol.name}" : secret "{vol.secret.secret_name}" not found'
            mode, items = vol.secret.default_mode, vol.secret.items
        if data is None:
            continue
        chosen = [(i.key, i.path, i.mode) for i in items] if items else [(k, k, None) for k in data]
        for key, rel, item_mode in chosen:
            if key not in data:
                continue
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(data[key])
            os.chmod(tmp, item_mode if item_mode is not None else mode)
            os.replace(tmp, path)  # atomic for a reader, and works over a read-only file
    for c in list(pod.spec.init_containers or ()) + list(pod.spec.containers):
        for m in c.volume_mounts or ():
            link = root / m.mount_path.lstrip("/")
            if m.sub_path:
                src = vols / m.name / m.sub_path
            else:
                src = vols / m.name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists() and not link.is_symlink():
                link.symlink_to(src)
    return None if problem is None else f"MountVolume.SetUp failed for {problem}"

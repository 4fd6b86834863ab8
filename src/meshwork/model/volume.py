"""Pod volumes (core/v1): emptyDir, configMap, secret, hostPath, persistentVolumeClaim, projected, downwardAPI, csi, nfs, image, ephemeral.

What lives here: ``Volume`` and its sources, with upstream defaulting
(``SetDefaults_Volume``: no source means emptyDir; file modes 0644; projected
token expiry one hour; hostPath type "").

What must not: mounting anything (the node agent does that). Volume types
upstream keeps only for legacy in-tree cloud disks are not modelled and are
refused as unknown fields.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from meshwork.model.base import Model, Quantity, dns1123_label_error
from meshwork.model.container import (
    ObjectFieldSelector,
    ResourceFieldSelector,
    default_pull_policy,
)
from meshwork.model.corev1 import LabelSelector, LocalObjectReference, fail_at

DEFAULT_FILE_MODE = 0o644  # 420: default mode of configMap/secret/projected/downwardAPI volumes
DEFAULT_TOKEN_EXPIRATION_SECONDS = 3600  # ServiceAccountTokenProjection default: one hour
MIN_TOKEN_EXPIRATION_SECONDS = 600  # upstream: projected tokens live at least 10 minutes

# ---------------------------------------------------------------------------
# Volumes
# ---------------------------------------------------------------------------


class KeyToPath(Model):
    """Project one key of a ConfigMap or Secret to a relative file path."""

    key: str
    path: str
    mode: int | None = None


class EmptyDirVolumeSource(Model):
    """A scratch directory that lives as long as the pod."""

    medium: Literal["", "Memory"] | None = None
    size_limit: Quantity | None = None


class ConfigMapVolumeSource(Model):
    """A ConfigMap's keys as files."""

    name: str | None = None
    items: list[KeyToPath] | None = None
    default_mode: int = DEFAULT_FILE_MODE
    optional: bool | None = None


class SecretVolumeSource(Model):
    """A Secret's keys as files."""

    secret_name: str | None = None
    items: list[KeyToPath] | None = None
    default_mode: int = DEFAULT_FILE_MODE
    optional: bool | None = None


class HostPathVolumeSource(Model):
    """A file or directory of the node."""

    path: str
    type: Literal[
        "", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket",
        "CharDevice", "BlockDevice",
    ] = ""  # fmt: skip


class PersistentVolumeClaimVolumeSource(Model):
    """A PersistentVolumeClaim in the pod's namespace."""

    claim_name: str
    read_only: bool | None = None


class DownwardAPIVolumeFile(Model):
    """One file whose content is a pod field or a container resource."""

    path: str
    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None
    mode: int | None = None


class DownwardAPIVolumeSource(Model):
    """Pod fields and resources as files."""

    items: list[DownwardAPIVolumeFile] | None = None
    default_mode: int = DEFAULT_FILE_MODE


class SecretProjection(Model):
    """A Secret inside a projected volume."""

    name: str | None = None
    items: list[KeyToPath] | None = None
    optional: bool | None = None


class ConfigMapProjection(Model):
    """A ConfigMap inside a projected volume."""

    name: str | None = None
    items: list[KeyToPath] | None = None
    optional: bool | None = None


class DownwardAPIProjection(Model):
    """Downward API files inside a projected volume."""

    items: list[DownwardAPIVolumeFile] | None = None


class ServiceAccountTokenProjection(Model):
    """A bound service-account token file."""

    audience: str | None = None
    expiration_seconds: int = DEFAULT_TOKEN_EXPIRATION_SECONDS
    path: str

    @field_validator("expiration_seconds")
    @classmethod
    def _min(cls, value: int) -> int:
        if value < MIN_TOKEN_EXPIRATION_SECONDS:
            raise ValueError(f"may not specify a duration less than {MIN_TOKEN_EXPIRATION_SECONDS} seconds")
        return value


class ClusterTrustBundleProjection(Model):
    """ClusterTrustBundle certificates as a file."""

    name: str | None = None
    signer_name: str | None = None
    label_selector: LabelSelector | None = None
    optional: bool | None = None
    path: str


class VolumeProjection(Model):
    """One source of a projected volume."""

    secret: SecretProjection | None = None
    config_map: ConfigMapProjection | None = None
    downward_api: DownwardAPIProjection | None = Field(default=None, alias="downwardAPI")
    service_account_token: ServiceAccountTokenProjection | None = None
    cluster_trust_bundle: ClusterTrustBundleProjection | None = None


class ProjectedVolumeSource(Model):
    """Several sources projected into one directory."""

    sources: list[VolumeProjection] | None = None
    default_mode: int = DEFAULT_FILE_MODE


class CSIVolumeSource(Model):
    """An inline volume from a CSI driver."""

    driver: str
    read_only: bool | None = None
    fs_type: str | None = None
    volume_attributes: dict[str, str] | None = None
    node_publish_secret_ref: LocalObjectReference | None = None


class NFSVolumeSource(Model):
    """An NFS export."""

    server: str
    path: str
    read_only: bool | None = None


class ImageVolumeSource(Model):
    """An OCI image mounted read-only."""

    reference: str | None = None
    pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None


class EphemeralVolumeSource(Model):
    """A PVC created for the pod from a template (the template is kept as written)."""

    volume_claim_template: dict[str, Any] | None = None


_VOLUME_SOURCES = (
    "empty_dir", "config_map", "secret", "host_path", "persistent_volume_claim",
    "projected", "downward_api", "csi", "nfs", "image", "ephemeral",
)  # fmt: skip


class Volume(Model):
    """A named volume of the pod; with no source it is an ``emptyDir``."""

    name: str
    empty_dir: EmptyDirVolumeSource | None = None
    config_map: ConfigMapVolumeSource | None = None
    secret: SecretVolumeSource | None = None
    host_path: HostPathVolumeSource | None = None
    persistent_volume_claim: PersistentVolumeClaimVolumeSource | None = None
    projected: ProjectedVolumeSource | None = None
    downward_api: DownwardAPIVolumeSource | None = Field(default=None, alias="downwardAPI")
    csi: CSIVolumeSource | None = None
    nfs: NFSVolumeSource | None = None
    image: ImageVolumeSource | None = None
    ephemeral: EphemeralVolumeSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        present = [n for n in _VOLUME_SOURCES if getattr(self, n) is not None]
        if not present:
            self.empty_dir = EmptyDirVolumeSource()  # SetDefaults_Volume
        elif len(present) > 1:
            raise ValueError("may not specify more than 1 volume type")
        if self.image is not None and self.image.pull_policy is None:
            self.image.pull_policy = default_pull_policy(self.image.reference)
        err = dns1123_label_error(self.name)
        if err:
            fail_at("Volume", [(("name",), err, self.name)])
        return self

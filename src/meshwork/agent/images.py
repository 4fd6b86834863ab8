"""The image catalogue: what local command an image name stands for.

A container that gives ``command`` runs that command whatever its image
says. A container with only an ``image`` runs the catalogue's entry for it:
the built-in entries below, then the user's ``images.yaml`` in the data dir,
which wins::

    # $MESHWORK_HOME/images.yaml
    myorg/api:1.4:
      command: [python3, -m, api.server]
      workingDir: /home/me/src/api
      env: {API_MODE: local}

A name matches an entry with its tag (``myorg/api:1.4``), then without it
(``myorg/api``), with and without a ``docker.io/`` or ``docker.io/library/``
prefix.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CATALOGUE_FILE = "images.yaml"
REASON_NOT_FOUND = "ErrImageNeverPull"  # the kubelet's reason when an image is not on the node


@dataclass(frozen=True, slots=True)
class ImageEntry:
    command: tuple[str, ...]
    args: tuple[str, ...] = ()
    working_dir: str | None = None
    env: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def _builtin() -> dict[str, ImageEntry]:
    shell = ImageEntry(("/bin/sh",))
    py = ImageEntry((sys.executable,))
    return {
        # Base images whose default command is a shell or an interpreter.
        "busybox": shell, "alpine": shell, "debian": shell, "ubuntu": shell,
        "python": py, "pause": ImageEntry(("sleep", "infinity")),
        "registry.k8s.io/pause": ImageEntry(("sleep", "infinity")),
        # The mesh proxy that injection adds (and Istio's own image name for it).
        "meshwork/proxyv2": ImageEntry((sys.executable, "-m", "meshwork", "sidecar")),
        "istio/proxyv2": ImageEntry((sys.executable, "-m", "meshwork", "sidecar")),
        **_samples(),
    }  # fmt: skip


def _samples() -> dict[str, ImageEntry]:
    """Istio's sample images (bookinfo, httpbin, curl/sleep, helloworld) -> meshwork.examples.

    Each entry runs the example app the way the image's own CMD runs the original:
    the port as the manifests' containerPort says, the version as the image's env sets it.
    """
    def app(module: str, *args: str, **env: str) -> ImageEntry:
        return ImageEntry((sys.executable, "-m", f"meshwork.examples.{module}"), args, env=tuple(env.items()))

    bookinfo = {
        "details-v1": app("bookinfo.details", "9080"),
        "ratings-v1": app("bookinfo.ratings", "9080", SERVICE_VERSION="v1"),
        "reviews-v1": app("bookinfo.reviews", "9080", ENABLE_RATINGS="false"),
        "reviews-v2": app("bookinfo.reviews", "9080", ENABLE_RATINGS="true", STAR_COLOR="black"),
        "reviews-v3": app("bookinfo.reviews", "9080", ENABLE_RATINGS="true", STAR_COLOR="red"),
        "productpage-v1": app("bookinfo.productpage", "9080"),
    }
    out: dict[str, ImageEntry] = {}
    for repo in ("registry.istio.io/release/", "istio/", "gcr.io/istio-release/"):
        for name, entry in bookinfo.items():
            out[f"{repo}examples-bookinfo-{name}"] = entry
        for version in ("v1", "v2"):
            out[f"{repo}examples-helloworld-{version}"] = app("helloworld", "5000", SERVICE_VERSION=version)
        out[f"{repo}tcp-echo-server"] = app("tcpecho", "9000", "hello")  # ENTRYPOINT tcp-echo, CMD [9000, hello]
    # Argo Workflows' example images: argosay (its ENTRYPOINT /argosay) and whalesay's cowsay.
    out["argoproj/argosay"] = app("argosay")
    # Argo Rollouts' demo app (its tags are colours): a helloworld on 8080 naming the colour.
    for colour in ("blue", "green", "yellow", "red", "orange", "purple"):
        out[f"argoproj/rollouts-demo:{colour}"] = app("helloworld", "8080", SERVICE_VERSION=colour)
    out["argoproj/rollouts-demo"] = app("helloworld", "8080")
    out["docker/whalesay"] = app("cowsay")
    # httpbin on the port each image listens on: go-httpbin 8080, the Python images 80.
    out["mccutchen/go-httpbin"] = app("httpbin", "--port", "8080")
    out["kennethreitz/httpbin"] = out["kong/httpbin"] = app("httpbin", "--port", "80")
    # curl images: the samples give them `sleep` as their command; alone they idle, so that
    # `meshwork exec` can run the machine's curl with the pod's env.
    for curl in ("curlimages/curl", "governmentpaas/curl-ssl", "radial/busyboxplus"):
        out[curl] = ImageEntry(("sleep", "infinity"))
    return out


def _candidates(image: str) -> list[str]:
    names = [image]
    last = image.rsplit("/", 1)[-1]
    if "@" in image:
        names.append(image.split("@", 1)[0])
    elif ":" in last:
        names.append(image.rsplit(":", 1)[0])
    out: list[str] = []
    for n in names:
        out.append(n)
        for prefix in ("docker.io/library/", "docker.io/", "library/"):
            if n.startswith(prefix):
                out.append(n[len(prefix):])
    return out


def _entry(name: str, raw: Any, source: Path) -> ImageEntry:
    if not isinstance(raw, dict) or not isinstance(raw.get("command"), list) or not raw["command"]:
        raise ValueError(f"{source}: {name}: give a non-empty `command` list")
    env = raw.get("env") or {}
    return ImageEntry(
        command=tuple(str(c) for c in raw["command"]),
        args=tuple(str(a) for a in raw.get("args") or ()),
        working_dir=str(raw["workingDir"]) if raw.get("workingDir") else None,
        env=tuple((str(k), str(v)) for k, v in dict(env).items()),
    )


class Catalogue:
    def __init__(self, data_dir: Path | None) -> None:
        self.path = data_dir / CATALOGUE_FILE if data_dir else None
        self._mtime: tuple[int, int, int] | None = None
        self._user: dict[str, ImageEntry] = {}
        self._builtin = _builtin()
        self.error: str | None = None

    def _reload(self) -> None:
        if self.path is None:
            return
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._user, self._mtime, self.error = {}, None, None
            return
        # Size and inode too: two writes within one coarse mtime tick, or an editor's
        # rename-into-place, still count as a change.
        mtime = (st.st_mtime_ns, st.st_size, st.st_ino)
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            raw = yaml.safe_load(self.path.read_text()) or {}
            if not isinstance(raw, dict):
                raise ValueError(f"{self.path}: expected a mapping of image name to entry")
            self._user = {str(k): _entry(str(k), v, self.path) for k, v in raw.items()}
            self.error = None
        except (OSError, ValueError, yaml.YAMLError) as exc:
            self.error = str(exc)

    def lookup(self, image: str) -> ImageEntry | None:
        self._reload()
        for name in _candidates(image):
            for table in (self._user, self._builtin):
                if name in table:
                    return table[name]
        return None

    def missing_message(self, image: str) -> str:
        where = self.path or CATALOGUE_FILE
        msg = (f'image "{image}" is not in the meshwork image catalogue: give the container a '
               f'`command`, or add the image to {where} (e.g. "{image}": {{command: [...]}})')  # fmt: skip
        if self.error:
            msg += f"; the catalogue file has an error: {self.error}"
        return msg

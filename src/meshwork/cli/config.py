"""The client config: where the CLI finds the server and its token.

What lives here: the data directory (``$MESHWORK_HOME`` or ``~/.meshwork``),
and the kubeconfig-shaped YAML file ``config`` in it (clusters, users,
contexts, current-context) that the server writes at first start and the CLI
reads. The file holds a bearer token, so it is created with mode 0600 from the
first byte (``os.open`` with 0o600, then an atomic rename), never chmod-ed
after the fact.

What must not live here: HTTP, or any choice of what a command does.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from meshwork.errors import MeshworkError

DEFAULT_SERVER = "http://127.0.0.1:7380"
DEFAULT_NAMESPACE = "default"
ENV_HOME = "MESHWORK_HOME"
CONFIG_NAME = "config"
# The name under which meshwork writes its one cluster, user and context.
CONTEXT_NAME = "meshwork"
USER_NAME = "meshwork-admin"
# A config file larger than this is not one we wrote: refuse to parse it.
CONFIG_MAX_BYTES = 1024 * 1024


class ConfigError(MeshworkError):
    """The client config exists but cannot be read or understood."""


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """What the CLI needs to talk to a server."""

    server: str
    token: str | None
    namespace: str
    path: Path | None  # None when no file was found and defaults apply


def data_dir(explicit: Path | str | None = None) -> Path:
    """The data directory: ``explicit``, else ``$MESHWORK_HOME``, else ``~/.meshwork``."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".meshwork"


def config_path(directory: Path | None = None) -> Path:
    return (directory or data_dir()) / CONFIG_NAME


def render_client_config(server: str, token: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The YAML text of a kubeconfig-shaped client config for one server."""
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT_NAME, "cluster": {"server": server}}],
        "users": [{"name": USER_NAME, "user": {"token": token}}],
        "contexts": [
            {
                "name": CONTEXT_NAME,
                "context": {"cluster": CONTEXT_NAME, "user": USER_NAME, "namespace": namespace},
            }
        ],
        "current-context": CONTEXT_NAME,
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def write_client_config(data_dir: Path, server: str, token: str) -> Path:
    """Write ``data_dir/config`` (mode 0600) pointing at ``server`` with ``token``; return its path.

    The file is written to a temporary name created with mode 0600, flushed to
    disk, and renamed over the old one, so a reader sees the old file or the
    new one, never a torn or world-readable one.
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = data_dir / CONFIG_NAME
    tmp = data_dir / f".{CONFIG_NAME}.{os.getpid()}.tmp"
    text = render_client_config(server, token).encode()
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(data_dir)
    return target


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_client_config(directory: Path | None = None) -> ClientConfig:
    """The server, token and namespace from ``directory/config``.

    A missing file gives the defaults (``http://127.0.0.1:7380``, no token).
    A file that is there but malformed raises ``ConfigError`` naming the file.
    """
    path = config_path(directory)
    try:
        with path.open("rb") as f:
            raw = f.read(CONFIG_MAX_BYTES + 1)
    except FileNotFoundError:
        return ClientConfig(DEFAULT_SERVER, None, DEFAULT_NAMESPACE, None)
    except OSError as exc:
        raise ConfigError(f"cannot read the client config {path}: {exc.strerror}") from exc
    if len(raw) > CONFIG_MAX_BYTES:
        raise ConfigError(f"the client config {path} is larger than {CONFIG_MAX_BYTES} bytes")
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"the client config {path} is not valid YAML: {exc}") from exc
    return parse_client_config(doc, path)


def parse_client_config(doc: Any, path: Path | None = None) -> ClientConfig:
    """Pick the current context's server, token and namespace out of a kubeconfig document."""
    where = str(path) if path else "the client config"
    if doc is None:
        return ClientConfig(DEFAULT_SERVER, None, DEFAULT_NAMESPACE, path)
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    current = doc.get("current-context")
    contexts = _named(doc, "contexts", "context", where)
    clusters = _named(doc, "clusters", "cluster", where)
    users = _named(doc, "users", "user", where)
    if current is None and len(contexts) == 1:
        current = next(iter(contexts))
    if current is None:
        return ClientConfig(DEFAULT_SERVER, None, DEFAULT_NAMESPACE, path)
    if current not in contexts:
        raise ConfigError(f"{where}: current-context {current!r} is not among the contexts")
    context = contexts[current]
    cluster = clusters.get(str(context.get("cluster")))
    if cluster is None:
        raise ConfigError(
            f"{where}: context {current!r} names cluster {context.get('cluster')!r}, which is not defined"
        )
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise ConfigError(f"{where}: cluster {context.get('cluster')!r} has no server URL")
    token: str | None = None
    user_name = context.get("user")
    if user_name is not None:
        user = users.get(str(user_name))
        if user is None:
            raise ConfigError(
                f"{where}: context {current!r} names user {user_name!r}, which is not defined"
            )
        raw_token = user.get("token")
        if raw_token is not None and not isinstance(raw_token, str):
            raise ConfigError(f"{where}: the token of user {user_name!r} is not a string")
        token = raw_token or None
    namespace = context.get("namespace")
    if not isinstance(namespace, str) or not namespace:
        namespace = DEFAULT_NAMESPACE
    return ClientConfig(server, token, namespace, path)


def _named(doc: dict[str, Any], section: str, inner: str, where: str) -> dict[str, dict[str, Any]]:
    """``[{name: n, <inner>: {...}}, ...]`` as ``{n: {...}}``."""
    entries = doc.get(section) or []
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: {section} must be a list")
    out: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"{where}: {section}[{i}] must be a mapping with a name")
        body = entry.get(inner) or {}
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: {section}[{i}].{inner} must be a mapping")
        out[entry["name"]] = body
    return out

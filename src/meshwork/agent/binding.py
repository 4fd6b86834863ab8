"""How an app gets its ports: the bind shim, and ports below 1024.

Pods share the machine's loopback, each on its own 127.x address, so an app
must listen on ``$POD_IP``. Many published manifests say ``0.0.0.0`` instead
(Istio's mirroring task runs ``gunicorn -b 0.0.0.0:80`` in two pods). The
agent compiles ``bindshim.c`` (beside this file) once with the machine's
``cc`` into ``$MESHWORK_HOME/lib/`` and preloads it into app containers with
``MESHWORK_BIND_ADDRESS=$POD_IP``: their wildcard binds become binds on their
own address. With no compiler the pods run without it, and an app on
``0.0.0.0`` gets the ``WildcardBind``/``PortConflict`` events as before.

Ports below ``net.ipv4.ip_unprivileged_port_start`` (1024 by default) need
root or ``CAP_NET_BIND_SERVICE``; an app that fails on one gets a pod event
saying so, instead of a bare crash loop.

This module decides and builds; the agent (``node.py``, ``worker.py``) calls it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("meshwork.agent")

SOURCE = "bindshim.c"
LIB_DIR = "lib"  # under $MESHWORK_HOME: built helper libraries
ADDRESS_ENV = "MESHWORK_BIND_ADDRESS"  # read by bindshim.c: the address that replaces 0.0.0.0
PRELOAD_ENV = "LD_PRELOAD"
OPT_OUT_ANNOTATION = "meshwork.io/bind-rewrite"  # "false" on a pod: its apps bind as they ask
COMPILE_TIMEOUT_S = 120.0  # one small C file; a loaded 2-core machine compiles it in well under a second
CAP_NET_BIND_SERVICE = 10  # linux/capability.h
DEFAULT_UNPRIVILEGED_PORT_START = 1024  # the kernel's default for net.ipv4.ip_unprivileged_port_start
LOG_TAIL_EACCES = (b"Permission denied", b"EACCES", b"Errno 13")


@dataclass(frozen=True, slots=True)
class ShimBuild:
    """The built library, or why there is none (``problem``, for the agent's log)."""

    path: Path | None
    problem: str | None = None


def shim_source() -> bytes:
    return importlib.resources.files("meshwork.agent").joinpath(SOURCE).read_bytes()


def shim_name(source: bytes) -> str:
    """The library's file name: a new source (or machine type) gives a new file, never a stale one."""
    digest = hashlib.sha256(source + b"\0" + os.uname().machine.encode()).hexdigest()[:16]
    return f"meshwork-bindshim-{digest}.so"


def compiler() -> list[str] | None:
    """``$CC`` when set (it may carry flags), else ``cc``, ``gcc`` or ``clang`` from PATH."""
    if os.environ.get("CC"):
        return shlex.split(os.environ["CC"])
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return [found]
    return None


def build_shim(lib_dir: Path, cc: list[str] | None = None) -> ShimBuild:
    """Compile the shim into ``lib_dir`` unless a build of this exact source is there.

    The result appears by an atomic rename, so agents of several nodes sharing a data dir
    (or a crash half-way) never leave a half-written library behind for a pod to load.
    """
    source = shim_source()
    target = lib_dir / shim_name(source)
    if target.is_file():
        return ShimBuild(target)
    cc = cc or compiler()
    if not cc:
        return ShimBuild(None, "no C compiler (cc, gcc or clang) on PATH")
    try:
        lib_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        with tempfile.TemporaryDirectory(dir=lib_dir, prefix=".build-") as tmp:
            src, out = Path(tmp, SOURCE), Path(tmp, target.name)
            src.write_bytes(source)
            argv = [*cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(src), "-ldl"]
            ran = subprocess.run(argv, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, check=False)
            if ran.returncode != 0 or not out.is_file():
                tail = (ran.stderr or ran.stdout).strip().splitlines()[-3:]
                return ShimBuild(None, f"{shlex.join(cc)} could not compile {SOURCE}: {' '.join(tail)}")
            out.chmod(0o755)
            os.replace(out, target)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return ShimBuild(None, f"could not build {target.name} in {lib_dir}: {exc}")
    return ShimBuild(target)


def rewrite_enabled(annotations: Mapping[str, str] | None) -> bool:
    return (annotations or {}).get(OPT_OUT_ANNOTATION, "").strip().lower() != "false"


def preload(env: MutableMapping[str, str], library: Path, address: str) -> None:
    """Add the shim to ``env``: after the app's own ``LD_PRELOAD`` entries, which stay."""
    own = env.get(PRELOAD_ENV, "")
    entries = own.replace(":", " ").split()
    if str(library) not in entries:
        env[PRELOAD_ENV] = f"{own} {library}" if own.strip() else str(library)
    env[ADDRESS_ENV] = address


def python_path(path: str, python_dir: str) -> str:
    """``PATH`` for a pod: the machine's, then the directory of the Python running meshwork.

    So ``gunicorn`` or ``flask`` installed beside meshwork (a virtualenv's ``bin``) are found
    by commands that name them, while the machine's own tools keep winning.
    """
    parts = [p for p in path.split(os.pathsep) if p]
    return os.pathsep.join(parts if python_dir in parts else [*parts, python_dir])


# -- ports below 1024 --------------------------------------------------------------------


def unprivileged_port_start(proc: str = "/proc") -> int:
    with contextlib.suppress(OSError, ValueError):
        return int(Path(proc, "sys/net/ipv4/ip_unprivileged_port_start").read_text().strip())
    return DEFAULT_UNPRIVILEGED_PORT_START


def may_bind_low_ports(status: str, euid: int) -> bool:
    """Whether a child of a process with this ``/proc/<pid>/status`` may bind below the limit.

    Root keeps its effective capabilities across exec; anyone else only its ambient ones.
    """
    caps = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("CapEff", "CapAmb"):
            with contextlib.suppress(ValueError):
                caps[key] = int(value.strip(), 16)
    held = caps.get("CapEff", 0) if euid == 0 else caps.get("CapAmb", 0)
    return bool(held >> CAP_NET_BIND_SERVICE & 1)


def agent_may_bind_low_ports() -> bool:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return os.geteuid() == 0
    return may_bind_low_ports(status, os.geteuid())


def low_port_problem(ports: Iterable[int], log_tail: bytes, *, start: int, allowed: bool, uid: int) -> str | None:
    """Why an app that exited could not listen: a port below ``start`` it may not bind.

    Said only when the app's last output names the error (EACCES), as the declared
    containerPort is not proof that the app tried to bind it.
    """
    low = sorted(p for p in ports if 0 < p < start)
    if not low or allowed or not any(text in log_tail for text in LOG_TAIL_EACCES):
        return None
    port = low[0]
    return (f"permission denied on port {port}: ports below net.ipv4.ip_unprivileged_port_start ({start}) "
            f"need root or CAP_NET_BIND_SERVICE, and the agent runs as uid {uid} without it; run meshwork "
            f"as root, or `sysctl -w net.ipv4.ip_unprivileged_port_start={port}`")  # fmt: skip


__all__ = [
    "ADDRESS_ENV",
    "OPT_OUT_ANNOTATION",
    "PRELOAD_ENV",
    "ShimBuild",
    "agent_may_bind_low_ports",
    "build_shim",
    "low_port_problem",
    "may_bind_low_ports",
    "preload",
    "python_path",
    "rewrite_enabled",
    "shim_name",
    "unprivileged_port_start",
]

"""Proxy benchmark: ``meshwork proxy`` beside haproxy, nginx and direct, with shared/bench/proxybench.

Run: ``python -m bench.proxy_bench [--rounds N] [--duration S] [--quick]
[--refs haproxy]`` (about 3 minutes with the defaults; ``--refs haproxy``
leaves out direct and nginx and takes half the time). It runs the harness at
``<repo>/../shared/bench/proxybench`` with 3 nginx backends, 64 connections,
the small body, pinned (``--pin proxy=0,wrk=1,backends=1``: the proxy alone on
core 0), and the targets direct, haproxy, nginx and ours: ``meshwork`` (routing,
round-robin load balancing and Istio's metrics on, the hot path compiled with
mypyc when ``make install`` built it: see ``meshwork._accel``) and
``meshwork-pure`` (the same code interpreted, ``MESHWORK_PURE=1``). With
``--debian``, the pure proxy again under Debian's ``/usr/bin/python3`` (a
PGO/LTO build) with the venv's packages on its path.

Quote the ``x haproxy`` column (same-run ratios), not absolute req/s.
Needs wrk, haproxy and nginx (``make bench`` installs them as root).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from meshwork import _accel

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT.parent / "shared" / "bench" / "proxybench"
SYSTEM_PYTHON = "/usr/bin/python3"
PIN = "proxy=0,wrk=1,backends=1"


def ours(python: str, name: str, env: str = "") -> str:
    """Our proxy as a harness target: routing, round-robin load balancing and Istio's metrics on."""
    return (
        f"{name}=cmd:{env}{python} -m meshwork proxy --listen 127.0.0.1:{{listen_port}}"
        " --upstream {upstreams} --workers {workers} --metrics 127.0.0.1:0"
    )


def system_pythonpath() -> str:
    """meshwork's sources, then the venv's packages: their compiled parts are built
    for the same CPython minor version, so Debian's interpreter can load them."""
    site = Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    return f"{ROOT / 'src'}:{site}"


def system_python_can_run() -> str | None:
    """None when /usr/bin/python3 imports meshwork's proxy; otherwise why not."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} does not exist"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import meshwork.proxy.server, meshwork.cli, uvloop, httptools"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": system_pythonpath(), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    if probe.returncode == 0:
        return None
    last = (probe.stderr.strip().splitlines() or ["unknown error"])[-1]
    return f"{SYSTEM_PYTHON} cannot import the proxy ({last})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="1 round of 5 s (a smoke run)")
    ap.add_argument("--base-port", type=int, default=38000,
                    help="the proxy's port (backends use the next ones); move it when another run holds it")
    ap.add_argument("--refs", default="direct,haproxy,nginx",
                    help="comma list of reference targets to run beside ours (haproxy is the ratio's base)")
    ap.add_argument("--debian", action="store_true",
                    help="also run the pure proxy under Debian's /usr/bin/python3 (a PGO/LTO build)")
    args = ap.parse_args()
    if not HARNESS.exists():
        print(f"proxy bench skipped: the harness {HARNESS} is absent")
        return 0
    missing = [tool for tool in ("wrk", "haproxy", "nginx") if shutil.which(tool) is None
               and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        print(f"proxy bench skipped: missing {', '.join(missing)} (make bench installs them as root)")
        return 0
    rounds, duration = (1, 5) if args.quick else (args.rounds, args.duration)
    refs = [r for r in args.refs.split(",") if r]
    if "haproxy" not in refs:
        refs.append("haproxy")  # the x-haproxy column needs it
    compiled = _accel.compiled_files(_accel.build_dir()) is not None
    targets = [*refs, ours(sys.executable, "meshwork")]
    if compiled:
        targets.append(ours(sys.executable, "meshwork-pure", env="env MESHWORK_PURE=1 "))
    why_not = system_python_can_run() if args.debian else "not asked for (--debian)"
    if why_not is None:
        targets.append(
            ours(f"env PYTHONPATH={system_pythonpath()} {SYSTEM_PYTHON}", "meshwork-pure-debian-python")
        )
    cmd = [sys.executable, str(HARNESS), "--pin", PIN, "-r", str(rounds), "-d", str(duration),
           "--base-port", str(args.base_port), *targets]
    print(f"interpreter for 'meshwork': {sys.executable} ({sys.version.split()[0]}); hot path "
          + ("compiled with mypyc (meshwork._accel); 'meshwork-pure' is the same code interpreted"
             if compiled else "pure Python (no mypyc build for these sources: run make install)"), flush=True)
    if why_not is not None:
        print(f"not run under Debian's python: {why_not}", flush=True)
    return subprocess.run(cmd, cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())

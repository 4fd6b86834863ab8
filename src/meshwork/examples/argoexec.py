"""The workflow executor: runs a workflow pod's main command and keeps its outputs.

It plays the part of Argo's ``argoexec``: the Workflow controller starts every
workflow pod as ``python -m meshwork.examples.argoexec [options] -- CMD...``.

* ``CMD`` is the template's command and args. Without one, the image's
  catalogue entry runs (``$MESHWORK_IMAGES_DIR/images.yaml``, then the
  built-in entries). ``python``/``python3`` run this interpreter, and the
  ``cowsay`` and ``argosay`` commands of the docker/whalesay and
  argoproj/argosay images run meshwork's stand-ins.
* A ``script`` template's source (``$MESHWORK_SCRIPT_SOURCE``) is written to
  a file whose path is appended to the command, as Argo does.
* stdout goes to the pod log and to ``$MESHWORK_ARTIFACTS/<node>/result``.
* After the command exits: ``--output NAME=PATH`` copies the file at PATH
  (relative to the working directory) to ``.../<node>/parameters/NAME``;
  ``--artifact-out NAME=PATH`` copies a file or directory to
  ``.../<node>/artifacts/NAME``. Before it starts, ``--artifact-in
  FROM=PATH`` copies an artifact of an earlier step (FROM is
  ``<node id>/<artifact name>``, as the controller resolves ``from``) to PATH.
* The exit code is the command's; it is also written to ``.../<node>/exitcode``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

RESULT_MAX = 256 * 1024  # Argo keeps at most 256 KiB of stdout as outputs.result


def _resolve(argv: list[str], image: str, args_only: bool) -> list[str]:
    """The command to run: as given, or (with no command, as Kubernetes does with an
    image's entrypoint) the catalogue entry's command with the given args or its own."""
    if not argv or args_only:
        from meshwork.agent.images import Catalogue

        images = os.environ.get("MESHWORK_IMAGES_DIR")
        entry = Catalogue(Path(images) if images else None).lookup(image)
        if entry is None:
            sys.stderr.write(f"image {image!r} has no command and no catalogue entry\n")
            raise SystemExit(127)
        argv = [*entry.command, *(argv or entry.args)]
    head = os.path.basename(argv[0])
    if head in ("python", "python3") or head.startswith("python3."):
        return [sys.executable, *argv[1:]]
    if head == "cowsay":
        return [sys.executable, "-m", "meshwork.examples.cowsay", *argv[1:]]
    if head == "argosay":
        return [sys.executable, "-m", "meshwork.examples.argosay", *argv[1:]]
    return argv


def _pairs(values: list[str]) -> list[tuple[str, str]]:
    out = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            raise SystemExit(f"expected NAME=PATH, got {value!r}")
        out.append((name, path))
    return out


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        shutil.copyfile(src, dst)


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="argoexec")
    parser.add_argument("--image", default="")
    parser.add_argument("--args-only", action="store_true", help="the template gave args but no command")
    parser.add_argument("--output", action="append", default=[])
    parser.add_argument("--artifact-out", action="append", default=[])
    parser.add_argument("--artifact-in", action="append", default=[])
    parser.add_argument("--artifact-raw", action="append", default=[])
    parser.add_argument("command", nargs=argparse.REMAINDER)
    opts = parser.parse_args(args)
    argv = list(opts.command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    root = Path(os.environ.get("MESHWORK_ARTIFACTS", "."))
    node = os.environ.get("MESHWORK_NODE_ID", "node")
    here = root / node
    here.mkdir(parents=True, exist_ok=True)
    argv = _resolve(argv, opts.image, opts.args_only)
    source = os.environ.get("MESHWORK_SCRIPT_SOURCE")
    if source is not None:
        script = here / "script"
        script.write_text(source)
        argv.append(str(script))
    for ref, path in _pairs(opts.artifact_in):
        src = root / ref
        if not src.exists():
            sys.stderr.write(f"input artifact {ref} not found\n")
            return 1
        _copy(src, Path(path))
    for path, data in _pairs(opts.artifact_raw):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(data)
    try:
        child = subprocess.Popen(argv, stdout=subprocess.PIPE)
    except OSError as exc:
        sys.stderr.write(f"cannot run {argv[0]!r}: {exc}\n")
        (here / "exitcode").write_text("127")
        return 127

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    kept = bytearray()
    assert child.stdout is not None
    out = sys.stdout.buffer
    fd = child.stdout.fileno()
    for chunk in iter(lambda: os.read(fd, 65536), b""):
        out.write(chunk)
        out.flush()
        if len(kept) < RESULT_MAX:
            kept += chunk[: RESULT_MAX - len(kept)]
    code = child.wait()
    code = 128 - code if code < 0 else code  # killed by a signal: the shell's convention
    text = kept.decode(errors="replace")
    (here / "result.tmp").write_text(text[:-1] if text.endswith("\n") else text)
    os.replace(here / "result.tmp", here / "result")
    if code == 0:
        params = here / "parameters"
        params.mkdir(exist_ok=True)
        for name, path in _pairs(opts.output):
            src = Path(path)
            if src.is_file():
                shutil.copyfile(src, params / name)
        for name, path in _pairs(opts.artifact_out):
            src = Path(path)
            if src.exists():
                _copy(src, here / "artifacts" / name)
    (here / "exitcode").write_text(str(code))
    return code


if __name__ == "__main__":
    raise SystemExit(main())

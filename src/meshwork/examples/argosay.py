"""A stand-in for Argo's test image ``argoproj/argosay:v2``.

``argosay`` prints "hello argo"; ``echo [TEXT [FILE]]`` prints TEXT or writes it
to FILE; ``cat FILE...``; ``sleep DURATION``; ``exit [CODE]``;
``assert_equals A B``; ``assert_contains FILE TEXT``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(text: str) -> float:
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * _UNITS[unit]
    return float(text)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("hello argo")
        return 0
    cmd, rest = args[0], args[1:]
    if cmd == "echo":
        text = rest[0] if rest else "hello argo"
        if len(rest) > 1:
            Path(rest[1]).parent.mkdir(parents=True, exist_ok=True)
            Path(rest[1]).write_text(text)
        else:
            print(text)
        return 0
    if cmd == "cat":
        for name in rest:
            sys.stdout.write(Path(name).read_text())
        return 0
    if cmd == "sleep":
        time.sleep(_seconds(rest[0] if rest else "1"))
        return 0
    if cmd == "exit":
        return int(rest[0]) if rest else 0
    if cmd == "assert_equals":
        return 0 if rest[0] == rest[1] else 1
    if cmd == "assert_contains":
        return 0 if rest[1] in Path(rest[0]).read_text() else 1
    sys.stderr.write(f"argosay: unknown command {cmd!r}\n")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())

"""A stand-in for the docker/whalesay image's ``cowsay``: a speech bubble and a whale."""

from __future__ import annotations

import sys
import textwrap

WHALE = "\n".join([
    "",
    "    \\",
    "     \\",
    "      \\",
    r"                    ##        .",
    r"              ## ## ##       ==",
    r"           ## ## ## ##      ===",
    r'       /""""""""""""""""___/ ===',
    r"  ~~~ {~~ ~~~~ ~~~ ~~~~ ~~ ~ /  ===- ~~~",
    r"       \______ o          __/",
    r"        \    \        __/",
    r"          \____\______/",
])

WIDTH = 40  # cowsay's default bubble width


def bubble(text: str) -> str:
    lines = textwrap.wrap(text, WIDTH) or [""]
    width = max(len(line) for line in lines)
    top, bottom = " " + "_" * (width + 2), " " + "-" * (width + 2)
    if len(lines) == 1:
        body = [f"< {lines[0]} >"]
    else:
        body = [f"{'/' if i == 0 else '|' if i < len(lines) - 1 else chr(92)} {line.ljust(width)} "
                f"{chr(92) if i == 0 else '|' if i < len(lines) - 1 else '/'}" for i, line in enumerate(lines)]  # fmt: skip
    return "\n".join([top, *body, bottom])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = " ".join(args) if args else sys.stdin.read().strip()
    print(bubble(text) + WHALE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

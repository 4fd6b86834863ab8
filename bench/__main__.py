"""``make bench``: every benchmark, each printing its figures beside a same-run reference.

``python -m bench`` runs every ``bench/*_bench.py``; ``python -m bench api proxy``
(or ``make bench BENCH="api proxy"``) runs the named ones only.
"""

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).parent


def discover() -> list[str]:
    return sorted(p.stem.removesuffix("_bench") for p in HERE.glob("*_bench.py"))


def main(argv: list[str]) -> int:
    known = discover()
    chosen = argv or known
    unknown = [name for name in chosen if name not in known]
    if unknown:
        print(f"unknown bench {', '.join(unknown)}; choose from: {' '.join(known)}", file=sys.stderr)
        return 2
    for name in chosen:
        module = f"bench.{name}_bench"
        print(f"\n## {module}\n", flush=True)
        sys.argv = [module]
        runpy.run_module(module, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

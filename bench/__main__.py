"""``make bench``: every benchmark, each printing its figures beside a same-run reference."""

import runpy
import sys
from pathlib import Path

BENCHES = ["bench.api_bench", "bench.store_bench", "bench.scheduler_bench", "bench.agent_bench", "bench.proxy_bench", "bench.gateway_bench", "bench.mesh_bench", "bench.plugin_bench", "bench.telemetry_bench", "bench.tls_bench"]

if __name__ == "__main__":
    for name in BENCHES:
        path = Path(__file__).parent / (name.split(".")[1] + ".py")
        if not path.exists():
            continue
        print(f"\n## {name}\n", flush=True)
        sys.argv = [name]
        runpy.run_module(name, run_name="__main__")

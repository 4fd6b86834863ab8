"""The standalone proxy stays small: the running ``meshwork proxy`` never loads the resource model.

``meshwork proxy`` must fit the data plane's memory aim (RSS at most 30 MiB
idle); pydantic and the model alone take more than a third of that. Any
import that drags them into the engine (a policy type imported for an
annotation, say) shows here as pydantic's compiled core mapped into the
real proxy process.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_running_proxy_maps_no_pydantic() -> None:
    port, metrics = _free_port(), _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshwork", "proxy", "--listen", f"127.0.0.1:{port}",
         "--upstream", "127.0.0.1:9", "--metrics", f"127.0.0.1:{metrics}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        for p in (port, metrics):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", p), timeout=1).close()
                    break
                except OSError:
                    assert proc.poll() is None, "the proxy exited"
                    assert time.monotonic() < deadline, "the proxy did not listen within 30 s"
                    time.sleep(0.05)
        # Scrape once, so the admin port's own imports are in too.
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/stats/prometheus", timeout=10) as r:
            assert r.status == 200
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "pydantic_core" not in maps, "the standalone proxy loaded pydantic (and the resource model)"
    finally:
        proc.kill()
        proc.wait(timeout=10)

"""A small asyncio HTTP/1.1 keep-alive load generator for the control-plane benchmarks.

One process, N connections, each sending its requests back to back: the same
client drives meshwork's API and the reference (etcd's JSON gateway), so the
client's own cost is the same on both sides.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Result:
    ok: int
    failed: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value.strip())
        elif lname == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
        return status, body
    return status, await reader.readexactly(length) if length else b""


async def run(
    host: str,
    port: int,
    make_request: Callable[[int], bytes],
    *,
    total: int,
    connections: int,
    ok_status: tuple[int, ...] = (200, 201),
) -> Result:
    """Send ``total`` requests over ``connections`` keep-alive connections."""
    counter = iter(range(total))
    latencies: list[float] = []
    failed = 0

    async def conn_loop() -> None:
        nonlocal failed
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in counter:
                t0 = time.perf_counter()
                writer.write(make_request(i))
                status, _ = await _read_response(reader)
                latencies.append(time.perf_counter() - t0)
                if status not in ok_status:
                    failed += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(conn_loop() for _ in range(connections)))
    seconds = time.perf_counter() - start
    return Result(len(latencies) - failed, failed, seconds, latencies)


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: bench"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

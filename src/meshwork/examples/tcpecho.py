"""Istio's tcp-echo sample server: answers each line with ``<prefix> <line>``.

Usage (the image's entrypoint; its default arguments are ``9000 hello``)::

    python -m meshwork.examples.tcpecho 9000,9001,9002 hello

It listens on every port of the comma-separated list at ``$POD_IP`` (all
addresses when unset), reads newline-terminated lines and writes each back
with the prefix and a space before it; a final partial line without a newline
gets no answer, and the connection closes when the client's side does.
"""

from __future__ import annotations

import asyncio
import os
import sys

DEFAULT_ARGS = ("9000", "hello")  # the image's CMD


async def _handle(
    prefix: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            line = await reader.readline()
            if not line.endswith(b"\n"):
                break  # EOF (a partial line is not answered)
            writer.write(prefix + b" " + line)
            await writer.drain()
    except (ConnectionError, asyncio.LimitOverrunError, ValueError):
        pass
    finally:
        writer.close()


async def serve(ports: list[int], prefix: str, host: str | None) -> None:
    servers = []
    for port in ports:
        server = await asyncio.start_server(lambda r, w: _handle(prefix.encode(), r, w), host, port)
        address = server.sockets[0].getsockname()
        print(f"listening on {address[0]}:{address[1]}, prefix: {prefix}", flush=True)
        servers.append(server)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main(argv: list[str] | None = None) -> None:
    args = list(argv if argv is not None else sys.argv[1:]) or list(DEFAULT_ARGS)
    if len(args) != 2:
        sys.exit("usage: tcpecho PORT[,PORT...] PREFIX")
    ports = [int(p) for p in args[0].split(",") if p]
    asyncio.run(serve(ports, args[1], os.environ.get("POD_IP") or None))


if __name__ == "__main__":
    main()

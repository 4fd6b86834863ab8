"""A test backend process for the proxy's integration tests, built on h11 (an independent parser).

Run: ``python backend.py NAME [--tcp]``; prints ``port N`` once listening.
HTTP routes:
  GET  /hello            200 "hello from NAME"
  GET  /status/N         answers status N
  GET  /slow?s=SECONDS   sleeps, then 200
  GET  /big?n=BYTES      n bytes, chunked, produced as the client reads
  POST /count            reads the body as it comes; answers its length and sha256
  POST /echo             echoes the body back, chunked, piece by piece
  GET  /ws (Upgrade)     101, then echoes raw bytes
  GET  /_stats           JSON: connections accepted, requests seen (method, target, body length)
With --tcp it is a plain TCP echo server.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from urllib.parse import parse_qs, urlsplit

import h11

NAME = sys.argv[1] if len(sys.argv) > 1 else "b"
STATS: dict[str, list[object] | int] = {"connections": 0, "requests": []}


async def tcp_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    STATS["connections"] = int(STATS["connections"]) + 1  # type: ignore[arg-type]
    conn = h11.Connection(h11.SERVER)

    async def next_event() -> object:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
                continue
            return event

    async def send(*events: object) -> None:
        for ev in events:
            data = conn.send(ev)  # type: ignore[arg-type]
            if data:
                writer.write(data)
        await writer.drain()

    try:
        while True:
            event = await next_event()
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                break
            assert isinstance(event, h11.Request), event
            target = event.target.decode()
            parts = urlsplit(target)
            query = parse_qs(parts.query)
            headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            record = {"method": event.method.decode(), "target": target, "headers": headers, "body": 0}
            cast_list = STATS["requests"]
            assert isinstance(cast_list, list)
            cast_list.append(record)
            base = [("X-Backend", NAME)]
            if parts.path == "/ws" and "upgrade" in headers:
                while not isinstance(await next_event(), h11.EndOfMessage):
                    pass
                await send(h11.InformationalResponse(status_code=101, headers=[
                    ("Upgrade", headers["upgrade"]), ("Connection", "upgrade")]))
                rest, _ = conn.trailing_data
                if rest:
                    writer.write(rest)
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
                break
            if parts.path == "/echo":
                await send(h11.Response(status_code=200, headers=[*base, ("Transfer-Encoding", "chunked")]))
                while True:
                    ev = await next_event()
                    if isinstance(ev, h11.EndOfMessage):
                        break
                    assert isinstance(ev, h11.Data)
                    record["body"] += len(ev.data)
                    await send(h11.Data(data=ev.data))
                await send(h11.EndOfMessage())
                continue
            digest = hashlib.sha256()
            while True:
                ev = await next_event()
                if isinstance(ev, h11.EndOfMessage):
                    break
                assert isinstance(ev, h11.Data)
                record["body"] += len(ev.data)
                digest.update(ev.data)
            status, body = 200, b""
            if parts.path == "/hello":
                body = f"hello from {NAME}".encode()
            elif parts.path.startswith("/status/"):
                status = int(parts.path.rsplit("/", 1)[1])
                body = f"status {status} from {NAME}".encode()
            elif parts.path == "/slow":
                await asyncio.sleep(float(query.get("s", ["1"])[0]))
                body = b"slow"
            elif parts.path == "/count":
                body = json.dumps({"length": record["body"], "sha256": digest.hexdigest()}).encode()
            elif parts.path == "/_stats":
                body = json.dumps(STATS).encode()
            elif parts.path == "/big":
                n = int(query.get("n", ["0"])[0])
                await send(h11.Response(status_code=200, headers=[*base]))
                piece = b"x" * 65536
                while n > 0:
                    await send(h11.Data(data=piece[: min(n, len(piece))]))
                    n -= len(piece)
                await send(h11.EndOfMessage())
                conn.start_next_cycle()
                continue
            else:
                body = f"{event.method.decode()} {target} from {NAME}".encode()
            await send(
                h11.Response(status_code=status, headers=[*base, ("Content-Length", str(len(body)))]),
                h11.Data(data=body),
                h11.EndOfMessage(),
            )
            if conn.our_state is h11.MUST_CLOSE:
                break
            conn.start_next_cycle()
    except (ConnectionError, h11.RemoteProtocolError):
        pass
    finally:
        writer.close()


async def main() -> None:
    server = await asyncio.start_server(tcp_echo if "--tcp" in sys.argv else handle, "127.0.0.1", 0)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())

"""The proxy's "I am ready" datagram (agent.notify, proxy.sidecar.notify_ready) over a real socket."""

from __future__ import annotations

import asyncio

import pytest

from meshwork.agent.notify import NOTIFY_ENV, ReadyNotify
from meshwork.proxy.sidecar import notify_ready

pytestmark = pytest.mark.integration


async def _received(*messages: bytes) -> int:
    """Send ``messages`` to a fresh socket; how many times it reported READY=1."""
    calls: list[None] = []
    got = asyncio.Event()

    def on_ready() -> None:
        calls.append(None)
        got.set()

    notify = ReadyNotify(on_ready)
    try:
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            for m in messages:
                sock.sendto(m, "\0" + notify.name[1:])
        # The end marker: every datagram before it has been read once it is.
        assert notify_ready({NOTIFY_ENV: notify.name})
        await asyncio.wait_for(got.wait(), 10)
        await asyncio.sleep(0)
        return len(calls)
    finally:
        notify.close()


def test_ready_is_reported_once_per_read_and_other_lines_are_ignored() -> None:
    assert asyncio.run(_received(b"STATUS=starting", b"MAINPID=1\nREADY=1\n")) == 1
    assert asyncio.run(_received(b"STATUS=starting", b"READY=0")) == 1  # only the marker's READY=1


def test_notify_ready_without_a_socket_or_a_listener_is_false_and_never_raises() -> None:
    assert notify_ready({}) is False
    assert notify_ready({NOTIFY_ENV: "@meshwork-notify-nobody-listens-here"}) is False
    assert notify_ready({NOTIFY_ENV: "/nonexistent/dir/notify"}) is False


def test_a_closed_socket_stops_reporting() -> None:
    async def run() -> bool:
        calls: list[None] = []
        notify = ReadyNotify(lambda: calls.append(None))
        name = notify.name
        notify.close()
        notify.close()  # twice is fine
        return notify_ready({NOTIFY_ENV: name}) or bool(calls)

    assert asyncio.run(run()) is False

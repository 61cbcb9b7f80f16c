"""The websocket server on its own: token checks, a slow client beside a fast one, close frames."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from streamrec.runtime.broadcast import Broadcaster, BroadcastOptions, parse_address

pytestmark = pytest.mark.timeout(180)  # threads, sockets and child processes: never hang CI


def hello() -> dict:
    return {"type": "hello", "version": 1, "classes": ["a", "b"], "streams": [{"id": "s", "source": "x"}]}


def test_defaults_bind_loopback_and_options_are_checked() -> None:
    assert BroadcastOptions().host == "127.0.0.1" and BroadcastOptions().port == 8765
    with pytest.raises(ValueError, match="queue"):
        BroadcastOptions(queue_size=0)
    with pytest.raises(ValueError, match="token"):
        BroadcastOptions(token="")
    assert parse_address("0.0.0.0:9000") == ("0.0.0.0", 9000) and parse_address(":8765") == ("127.0.0.1", 8765)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_address("localhost:http")


def test_token_is_required_when_set() -> None:
    async def scenario() -> None:
        server = Broadcaster(BroadcastOptions(port=0, token="s3cret"), hello)
        await server.start()
        url = f"ws://127.0.0.1:{server.port}"
        try:
            for bad in (url, url + "/?token=wrong"):
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(bad):
                        pass
                assert refused.value.response.status_code == 401
            async with connect(url + "/?token=s3cret") as client:
                assert json.loads(await client.recv()) == hello()
            async with connect(url, additional_headers={"Authorization": "Bearer s3cret"}) as client:
                assert json.loads(await client.recv())["type"] == "hello"
        finally:
            await server.stop()

    asyncio.run(asyncio.wait_for(scenario(), 20))


def _never_reading_client(port: int) -> socket.socket:
    """A websocket client that completes the handshake and then never reads (a tiny receive buffer
    makes its TCP window fill at once)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)  # byte by byte: nothing after the headers is consumed
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def test_a_slow_client_never_delays_the_others() -> None:
    n_events, payload = 600, "x" * 16000  # 9.6 MB in all: more than the socket buffers hold (4 MB at most)

    async def scenario() -> tuple[int, float, int, int]:
        server = Broadcaster(BroadcastOptions(port=0, queue_size=16), hello)
        await server.start()
        slow = await asyncio.to_thread(_never_reading_client, server.port)  # blocking I/O off the loop
        try:
            async with connect(f"ws://127.0.0.1:{server.port}", max_size=None) as fast:
                await fast.recv()  # hello
                while len(server.clients) < 2:
                    await asyncio.sleep(0.01)
                received: list[int] = []

                async def read() -> None:
                    while True:
                        event = json.loads(await fast.recv())
                        received.append(event["seq"])
                        if event["seq"] == n_events - 1:
                            return

                reader = asyncio.create_task(read())
                started = time.monotonic()
                for seq in range(n_events):
                    server.publish({"type": "prediction", "seq": seq, "pad": payload})
                    await asyncio.sleep(0.002)
                await asyncio.wait_for(reader, 10)
                finished = time.monotonic() - started
                stats = {c.address.split(":")[1]: c for c in server.clients}
                slow_stats = stats[str(slow.getsockname()[1])]
                fast_stats = next(c for port, c in stats.items() if port != str(slow.getsockname()[1]))
                return len(received), finished, slow_stats.dropped, fast_stats.dropped
        finally:
            await server.stop()
            slow.close()

    received, finished, slow_dropped, fast_dropped = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert slow_dropped > n_events // 2  # the slow client's queue dropped its oldest events
    assert received + fast_dropped == n_events and fast_dropped < n_events // 10
    assert finished < 6.0  # publishing takes ~1.5 s; the slow client did not hold the fast one back


def test_shutdown_sends_close_frames() -> None:
    async def scenario() -> int | None:
        server = Broadcaster(BroadcastOptions(port=0), hello)
        await server.start()
        async with connect(f"ws://127.0.0.1:{server.port}") as client:
            await client.recv()
            server.publish({"type": "status", "stream": "s", "state": "ended", "detail": ""})
            assert json.loads(await client.recv())["state"] == "ended"
            started = time.monotonic()
            await server.stop()
            with pytest.raises(ConnectionClosed) as closed:
                await client.recv()
            assert time.monotonic() - started < 2.0
            return closed.value.rcvd.code if closed.value.rcvd else None

    assert asyncio.run(asyncio.wait_for(scenario(), 20)) == 1001

"""The websocket server: `hello` on connect, then every `prediction` and `status` event (CONTRACTS.md).

Broadcasting never waits for a client: each client has a bounded queue drained by its own
connection handler; when a client reads too slowly its queue drops the oldest event and counts
the drop (the pattern of websockets' docs/topics/broadcast.rst). With a token, a client must
present it (`?token=...` or `Authorization: Bearer ...`), else the handshake gets HTTP 401.
Everything here runs on one asyncio event loop; pipeline.py owns the loop and its thread.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"  # loopback unless asked: predictions can reveal what a camera sees
DEFAULT_PORT = 8765


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT, :PORT or PORT (host 127.0.0.1) -> (host, port); ValueError with a sentence otherwise."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or DEFAULT_HOST  # [::1]:8765 for IPv6
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT with a port from 0 to 65535, got {text!r}")
    return host, int(port)


@dataclass(frozen=True)
class BroadcastOptions:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0 = any free port (see Broadcaster.port)
    token: str | None = None  # required from clients when set
    queue_size: int = 64  # events queued per client before the oldest are dropped
    close_timeout: float = 0.5  # seconds clients get to answer the close frame at shutdown

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"the websocket port must be 0-65535, got {self.port}")
        if self.queue_size < 1:
            raise ValueError(f"the per-client queue must hold at least one event, got {self.queue_size}")
        if self.token is not None and not self.token:
            raise ValueError("the websocket token must not be empty")


@dataclass(eq=False)
class ClientStats:
    """Per connected client: where from, events sent, events dropped because it read too slowly."""

    address: str
    sent: int = 0
    dropped: int = 0
    queue: asyncio.Queue[str] = field(default_factory=asyncio.Queue, repr=False)
    connection: ServerConnection | None = field(default=None, repr=False)


class Broadcaster:
    """hello: called for each new client (the streams list can change while running)."""

    def __init__(self, options: BroadcastOptions, hello: Callable[[], dict[str, Any]]) -> None:
        self.options = options
        self._hello = hello
        self._server: Server | None = None
        self._clients: set[ClientStats] = set()
        self.connected_total = 0

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._server is None:
            raise RuntimeError("the websocket server is not started")
        return self._server.sockets[0].getsockname()[1]

    @property
    def clients(self) -> list[ClientStats]:
        return list(self._clients)

    async def start(self) -> None:
        o = self.options
        try:
            self._server = await serve(
                self._handle,
                o.host,
                o.port,
                process_request=self._check_token if o.token else None,
                compression=None,  # small JSON messages: deflate would cost CPU per client for little
                close_timeout=o.close_timeout,
            )
        except OSError as e:
            raise OSError(f"cannot serve websockets on {o.host}:{o.port}: {e.strerror or e}") from e
        log.info("websocket server on ws://%s:%d%s", o.host, self.port, " (token required)" if o.token else "")

    def publish(self, event: dict[str, Any] | str) -> None:
        """Queues one event for every client; never waits. Call on the server's event loop."""
        message = event if isinstance(event, str) else json.dumps(event, separators=(",", ":"))
        for client in self._clients:
            if client.queue.full():
                client.queue.get_nowait()  # drop the oldest: a slow client sees the present, not a backlog
                client.dropped += 1
            client.queue.put_nowait(message)

    async def stop(self) -> None:
        """Closes every connection with a close frame (1001 going away), then the server.

        A client that stopped reading cannot take even the close frame (websockets waits for its
        send buffer to drain, without a timeout): after close_timeout its connection is aborted.
        """
        if self._server is None:
            return
        self._server.close()
        closed = asyncio.ensure_future(self._server.wait_closed())
        try:
            await asyncio.wait_for(asyncio.shield(closed), timeout=self.options.close_timeout)
        except TimeoutError:
            stuck = [c for c in self._clients if c.connection is not None]
            log.warning("%d websocket client(s) did not take the close frame; dropping them", len(stuck))
            for client in stuck:
                client.connection.transport.abort()  # type: ignore[union-attr]
            try:
                await asyncio.wait_for(closed, timeout=1.0)
            except TimeoutError:
                log.warning("the websocket server did not close in time")
        self._server = None

    def _check_token(self, connection: ServerConnection, request: Request) -> Response | None:
        presented = parse_qs(urlsplit(request.path).query).get("token", [None])[0]
        authorization = request.headers.get("Authorization", "")
        if presented is None and authorization.lower().startswith("bearer "):
            presented = authorization[7:].strip()
        expected = self.options.token or ""
        if presented is not None and hmac.compare_digest(presented.encode(), expected.encode()):
            return None
        log.warning("refused a websocket client from %s: missing or wrong token", _address(connection))
        return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")

    async def _handle(self, connection: ServerConnection) -> None:
        client = ClientStats(_address(connection), queue=asyncio.Queue(self.options.queue_size), connection=connection)
        self._clients.add(client)
        self.connected_total += 1
        log.info("websocket client %s connected", client.address)
        pump = asyncio.create_task(self._pump(connection, client))
        closed = asyncio.create_task(connection.wait_closed())
        try:
            # Whichever ends first: the client leaves, the server closes, or sending fails.
            await asyncio.wait({pump, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            pump.cancel()
            closed.cancel()
            self._clients.discard(client)
            log.info(
                "websocket client %s left: %d events sent, %d dropped", client.address, client.sent, client.dropped
            )

    async def _pump(self, connection: ServerConnection, client: ClientStats) -> None:
        try:
            await connection.send(json.dumps(self._hello(), separators=(",", ":")))
            while True:
                message = await client.queue.get()
                await connection.send(message)
                client.sent += 1
        except ConnectionClosed:
            pass


def _address(connection: ServerConnection) -> str:
    remote = connection.remote_address
    return f"{remote[0]}:{remote[1]}" if remote else "?"

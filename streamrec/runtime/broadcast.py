"""The websocket server: `hello` on connect, then every `prediction` and `status` event (docs/events.md).

Broadcasting never waits for a client: each client has a bounded queue drained by its own
connection handler; when a client reads too slowly its queue drops the oldest event and counts
the drop (the pattern of websockets' docs/topics/broadcast.rst). With a token, a client must
present it (`?token=...` or `Authorization: Bearer ...`), else the handshake gets HTTP 401 (429 after
repeated wrong ones). Browsers' handshakes from other sites and requests naming a foreign Host get
403 (guard.py). What clients send is read and ignored: the server only talks. Everything here runs
on one asyncio event loop; pipeline.py owns the loop and its thread.

With a web address, a second listener serves the browser live view (streamrec/web/, plain files, no
build step) over HTTP and the same events as a websocket at /ws: one origin, so the page needs no
configuration, and the token in the page's URL is handed on to /ws.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from streamrec.core.assets import WEB_ROOT
from streamrec.core.errors import UserError
from streamrec.runtime.guard import (
    AccessPolicy,
    CheckedConnection,
    TokenGuard,
    is_loopback,
    normalize_origin,
    security_headers,
    tls_context,
    without_body,
)

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"  # loopback unless asked: predictions can reveal what a camera sees
DEFAULT_PORT = 8765
WEB_FILES = {  # URL path -> (file under WEB_ROOT, content type): all the page is
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
WEB_SOCKET_PATH = "/ws"


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
    port: int | None = DEFAULT_PORT  # 0 = any free port (see Broadcaster.port); None = no plain websocket server
    token: str | None = None  # required from clients when set
    queue_size: int = 64  # events queued per client before the oldest are dropped
    close_timeout: float = 0.5  # seconds clients get to answer the close frame at shutdown
    web: tuple[str, int] | None = None  # (host, port) of the browser live view; port 0 = any free port
    allow_origins: tuple[str, ...] = ()  # browser origins allowed besides the web view's own ("*": any)
    certfile: Path | None = None  # TLS (wss://, https://) with this PEM certificate chain...
    keyfile: Path | None = None  # ...and its key, when not in certfile
    keepalive: float = 20.0  # seconds between pings; a client that does not answer within as long is dropped

    def __post_init__(self) -> None:
        if self.port is None and self.web is None:
            raise ValueError("serve a websocket port, a web view, or both")
        for port in (self.port, self.web[1] if self.web else None):
            if port is not None and not 0 <= port <= 65535:
                raise ValueError(f"ports must be 0-65535, got {port}")
        if self.queue_size < 1:
            raise ValueError(f"the per-client queue must hold at least one event, got {self.queue_size}")
        if self.token is not None and not self.token:
            raise ValueError("the websocket token must not be empty")
        object.__setattr__(self, "allow_origins", tuple(normalize_origin(o) for o in self.allow_origins))
        if self.keyfile is not None and self.certfile is None:
            raise ValueError("a TLS key needs its certificate (certfile)")
        if not self.keepalive > 0:
            raise ValueError(f"the keepalive interval must be positive seconds, got {self.keepalive}")

    @property
    def scheme(self) -> str:
        """The web view's scheme; the websockets' is the same with ws instead of http."""
        return "https" if self.certfile is not None else "http"


def exposed_hosts(options: BroadcastOptions) -> list[str]:
    """The listeners' hosts that other machines can reach while no token is required (warned about at start)."""
    if options.token:
        return []
    hosts = ([options.host] if options.port is not None else []) + ([options.web[0]] if options.web else [])
    return sorted({host for host in hosts if not is_loopback(host)})


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
        self._server: Server | None = None  # plain websocket server
        self._web: Server | None = None  # the web view and its /ws
        self._clients: set[ClientStats] = set()
        self._tokens = TokenGuard(options.token) if options.token else None
        self.connected_total = 0

    @property
    def port(self) -> int | None:
        """The bound websocket port (useful with port 0); None without a plain websocket server."""
        return self._server.sockets[0].getsockname()[1] if self._server is not None else None

    @property
    def web_port(self) -> int | None:
        """The bound port of the web view; None without one."""
        return self._web.sockets[0].getsockname()[1] if self._web is not None else None

    @property
    def clients(self) -> list[ClientStats]:
        return list(self._clients)

    async def start(self) -> None:
        o = self.options
        # Loaded before binding: a bad certificate is one line, not a half-started server.
        tls = tls_context(o.certfile, o.keyfile) if o.certfile is not None else None
        required = " (token required: add ?token=... to the address)" if o.token else ""  # never the token itself
        if o.port is not None:
            self._server = await self._serve(o.host, o.port, self._admit, tls, "websockets")
            log.info("websocket server on %s://%s:%d%s", o.scheme.replace("http", "ws"), o.host, self.port, required)
        if o.web is not None:
            try:
                self._web = await self._serve(*o.web, self._web_request, tls, "the web view")
            except OSError:
                await self.stop()
                raise
            log.info("live view on %s%s", self.web_url, required)
        for host in exposed_hosts(o):
            log.warning(
                "listening on %s without --token: anyone who can reach this machine sees every prediction and "
                "source; give --token (and --certfile/--keyfile for encryption)",
                host,
            )

    @property
    def web_url(self) -> str | None:
        """The web view's address (without the token: it is never printed)."""
        if self.options.web is None or self.web_port is None:
            return None
        host = self.options.web[0]
        shown = f"[{host}]" if ":" in host else host
        return f"{self.options.scheme}://{shown}:{self.web_port}/"

    async def _serve(self, host: str, port: int, process_request: Any, tls: Any, what: str) -> Server:
        try:
            return await serve(
                self._handle,
                host,
                port,
                process_request=process_request,
                process_response=self._http_response,
                server_header=None,  # no version advertising
                compression=None,  # small JSON messages: deflate would cost CPU per client for little
                close_timeout=self.options.close_timeout,
                ping_interval=self.options.keepalive,
                ping_timeout=self.options.keepalive,
                create_connection=CheckedConnection,  # 405 for POST & co., with or without a body
                ssl=tls,
            )
        except OSError as e:
            raise OSError(f"cannot serve {what} on {host}:{port}: {e.strerror or e}") from e

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
        servers = [server for server in (self._server, self._web) if server is not None]
        if not servers:
            return
        for server in servers:
            server.close()
        closed = asyncio.ensure_future(asyncio.gather(*(server.wait_closed() for server in servers)))
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
        self._server = self._web = None

    def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        """The checks of every request on both listeners: Host and Origin (403), then for websocket
        handshakes the token (401, 429 after repeated wrong ones). None: go on. All of the plain websocket
        listener's handling: websockets itself answers a request there that is not a handshake."""
        policy = AccessPolicy(self._bound_host(connection), self.options.allow_origins, self.options.scheme)
        refusal = policy.refusal(request)
        if refusal is not None:
            log.warning("refused a request from %s: %s", _address(connection), refusal)
            return connection.respond(HTTPStatus.FORBIDDEN, refusal + "\n")
        if self._tokens is None or request.headers.get("Upgrade", "").lower() != "websocket":
            return None
        presented = parse_qs(urlsplit(request.path).query).get("token", [None])[0]
        authorization = request.headers.get("Authorization", "")
        if presented is None and authorization.lower().startswith("bearer "):
            presented = authorization[7:].strip()
        address = connection.remote_address[0] if connection.remote_address else "?"
        refused = self._tokens.refusal(address, presented)
        if refused is None:
            return None
        status, reason = refused
        log.warning("refused a websocket client from %s: %s", _address(connection), reason)
        response = connection.respond(status, reason + "\n")
        if status == HTTPStatus.TOO_MANY_REQUESTS:
            response.headers["Retry-After"] = str(int(self._tokens.window))
        return response

    def _bound_host(self, connection: ServerConnection) -> str:
        """The host the user gave for the listener this connection came to (a name is a trusted Host)."""
        web = self.options.web
        local = connection.local_address
        if web is not None and local is not None and local[1] == self.web_port:
            return web[0]
        return self.options.host

    def _http_response(self, connection: ServerConnection, request: Request, response: Response) -> Response | None:
        """Every answer of both listeners, websockets' own refusals included: security headers on HTTP
        answers, no body for HEAD."""
        if response.status_code == HTTPStatus.SWITCHING_PROTOCOLS:
            return None
        security_headers(response, request)
        return without_body(response) if request.method == "HEAD" else None

    def _web_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """The web listener: websocket upgrades on /ws, the page's files otherwise, after the checks."""
        refused = self._admit(connection, request)
        if refused is not None:
            return refused
        path = urlsplit(request.path).path
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if path != WEB_SOCKET_PATH:
                return connection.respond(HTTPStatus.NOT_FOUND, f"websockets are served at {WEB_SOCKET_PATH}\n")
            return None
        if path not in WEB_FILES:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        name, content_type = WEB_FILES[path]
        response = connection.respond(HTTPStatus.OK, (WEB_ROOT / name).read_text(encoding="utf-8"))
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = content_type
        response.headers["Cache-Control"] = "no-cache"  # a new version of the package shows at once
        return response

    async def _handle(self, connection: ServerConnection) -> None:
        client = ClientStats(_address(connection), queue=asyncio.Queue(self.options.queue_size), connection=connection)
        self._clients.add(client)
        self.connected_total += 1
        log.info("websocket client %s connected", client.address)
        pump = asyncio.create_task(self._pump(connection, client))
        reader = asyncio.create_task(_ignore_incoming(connection))
        try:
            # Whichever ends first: the client leaves or the server closes (the reader ends), or sending fails.
            await asyncio.wait({pump, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            pump.cancel()
            reader.cancel()
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


async def _ignore_incoming(connection: ServerConnection) -> None:
    """Reads and drops what a client sends: unread messages fill websockets' receive queue (16), then it stops
    reading the socket, pongs go unseen too, and the keepalive drops the client with 1011."""
    try:
        async for _ in connection:
            pass
    except ConnectionClosed:
        pass


def _address(connection: ServerConnection) -> str:
    remote = connection.remote_address
    return f"{remote[0]}:{remote[1]}" if remote else "?"


class WebsocketSink:
    """The Broadcaster on its own event loop and thread, as a sink: send() from any thread; close() stops the
    server (clients get a close frame). start() binds the ports and raises UserError when it cannot."""

    def __init__(self, options: BroadcastOptions, hello: Callable[[], dict[str, Any]]) -> None:
        self.broadcaster = Broadcaster(options, hello)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="websocket", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.broadcaster.start())
        except BaseException as e:  # reported to start() in the caller's thread
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise UserError(str(self._error)) from self._error

    @property
    def port(self) -> int | None:
        return self.broadcaster.port

    @property
    def web_port(self) -> int | None:
        return self.broadcaster.web_port

    def client_count(self) -> int:
        return len(self.broadcaster.clients)

    def send(self, event: dict[str, Any]) -> None:
        try:
            self._loop.call_soon_threadsafe(self.broadcaster.publish, event)
        except RuntimeError:  # the loop closed at shutdown: nobody is listening any more
            pass

    def close(self) -> None:
        if self._error is not None or not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self.broadcaster.stop(), self._loop)
        try:
            future.result(timeout=self.broadcaster.options.close_timeout + 1.5)
        except TimeoutError:
            log.warning("the websocket server did not close in time")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=1.0)

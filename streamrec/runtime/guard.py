"""Who the websocket and web-view listeners let in, and what their HTTP answers say (broadcast.py uses it).

A browser lets any web page open a websocket to 127.0.0.1, so a listener without a token would hand
every prediction, status and source to whatever site the user visits (cross-site websocket hijacking).
Browsers send `Origin` with every websocket handshake: it must be absent (a non-browser client), the
listener's own origin (the web view's page) or one the user allowed with `--allow-origin`. A page on
an attacker's domain that resolves to 127.0.0.1 (DNS rebinding) is same-origin by that test, so `Host`
must also name this machine: an IP address, localhost, the host the listener was bound to, this
machine's name or the host of an allowed origin.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import InvalidMethod
from websockets.http11 import Request, Response

ANY_ORIGIN = "*"
ALLOWED_METHODS = (b"GET", b"HEAD")
# Sent with every HTTP answer: the page runs only its own files, talks only to its own listener, is never
# framed by another site, and never passes its URL (which holds the token) on as a referrer.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'{sockets}; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
_PLAIN_HOST = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")
TOKEN_FAILURES = 5  # wrong tokens an address may present within TOKEN_WINDOW seconds...
TOKEN_WINDOW = 60.0  # ...before it is answered 429 until the oldest of them is this old
TRACKED_ADDRESSES = 4096  # addresses remembered for the token limit (the oldest forgotten first)


def normalize_origin(text: str) -> str:
    """An --allow-origin value as browsers send it: scheme://host[:port] in lower case, "null" (a file:// page),
    or * (any origin); ValueError with a sentence otherwise."""
    text = text.strip()
    if text in (ANY_ORIGIN, "null"):
        return text
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ValueError(f"an origin is http(s)://HOST[:PORT] (or * for any), got {text!r}")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def is_loopback(host: str) -> bool:
    """True for an address (or localhost) that only this machine can reach."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _hostname(host_header: str) -> str | None:
    """The host name of a Host header ("[::1]:8765" -> "::1"); None when it is malformed."""
    try:
        parts = urlsplit(f"//{host_header}")
        parts.port  # raises ValueError for a bad port  # noqa: B018
    except ValueError:
        return None
    if not parts.hostname or "@" in parts.netloc or parts.path or parts.query or parts.fragment:
        return None
    return parts.hostname


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class AccessPolicy:
    """The Host and Origin checks of one listener. scheme: "http" or "https" (the page's own origin)."""

    bound_host: str
    allow_origins: tuple[str, ...] = ()
    scheme: str = "http"

    def refusal(self, request: Request) -> str | None:
        """Why this request is refused (to be answered 403), or None when it may go on."""
        if ANY_ORIGIN in self.allow_origins:  # deliberately open: any page may connect anyway
            return None
        host = request.headers.get("Host")
        if host is not None and not self._trusted_host(host):
            return f"unexpected Host {host!r} (to serve this name, allow its origin with --allow-origin)"
        origin = request.headers.get("Origin")
        if origin is None:  # not a browser, or a browser's same-origin page load
            return None
        origin = origin.lower()
        if origin in self.allow_origins or (host is not None and origin == f"{self.scheme}://{host.lower()}"):
            return None
        return f"cross-origin request from {origin!r} (allow it with --allow-origin)"

    def _trusted_host(self, host_header: str) -> bool:
        name = _hostname(host_header)
        if name is None:
            return False
        if _is_ip(name) or name == "localhost" or name.endswith(".localhost"):
            return True  # an address cannot be rebound; localhost never leaves the machine
        trusted = {self.bound_host.lower(), socket.gethostname().lower()}
        trusted |= {urlsplit(o).hostname or "" for o in self.allow_origins}
        return name in trusted


def security_headers(response: Response, request: Request | None) -> None:
    """Adds SECURITY_HEADERS and the page's Content-Security-Policy to an HTTP answer."""
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    host = request.headers.get("Host") if request is not None else None
    # 'self' covers ws: and wss: in CSP level 3 only; the explicit addresses serve older browsers. A refused
    # request's Host may be anything: only a plain host[:port] goes into the header.
    sockets = f" ws://{host} wss://{host}" if host and _PLAIN_HOST.fullmatch(host) else ""
    response.headers["Content-Security-Policy"] = CSP.format(sockets=sockets)


@dataclass
class TokenGuard:
    """Checks the token of a websocket handshake (`?token=...` or `Authorization: Bearer ...`) and limits
    wrong guesses per client address: TOKEN_FAILURES within TOKEN_WINDOW seconds, then 429 until they age."""

    token: str
    failures: int = TOKEN_FAILURES
    window: float = TOKEN_WINDOW
    clock: Callable[[], float] = time.monotonic
    _wrong: dict[str, deque[float]] = field(default_factory=dict, repr=False)

    def refusal(self, address: str, presented: str | None) -> tuple[HTTPStatus, str] | None:
        """(status, reason) to refuse with, or None for the right token."""
        now = self.clock()
        wrong = self._wrong.get(address)
        while wrong and wrong[0] <= now - self.window:
            wrong.popleft()
        if wrong is not None and len(wrong) >= self.failures:
            return HTTPStatus.TOO_MANY_REQUESTS, f"too many wrong tokens; retry in {wrong[0] + self.window - now:.0f} s"
        # Constant time: the comparison must not tell how much of a guess was right.
        if presented is not None and hmac.compare_digest(presented.encode(), self.token.encode()):
            return None
        if wrong is None:
            if len(self._wrong) >= TRACKED_ADDRESSES:
                self._wrong.pop(next(iter(self._wrong)))  # bounded memory under a spray of addresses
            wrong = self._wrong[address] = deque()
        wrong.append(now)
        return HTTPStatus.UNAUTHORIZED, "missing or wrong token"


def tls_context(certfile: Path, keyfile: Path | None) -> ssl.SSLContext:
    """A server TLS context from a PEM certificate chain (and its key, when not in the same file);
    ValueError with a sentence when they cannot be loaded."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as e:
        files = f"{certfile} and key {keyfile}" if keyfile else str(certfile)
        raise ValueError(f"cannot load the TLS certificate {files}: {getattr(e, 'strerror', None) or e}") from e
    return context


class CheckedConnection(ServerConnection):
    """A ServerConnection that answers HTTP methods other than GET and HEAD with 405 itself.

    websockets reads only requests without a body and closes on one with a body (a POST) without any
    answer; the method is the request's first word, so it is checked on the first bytes, before that."""

    _method_checked = False
    _head = b""

    def data_received(self, data: bytes) -> None:
        if not self._method_checked:
            self._head += data
            if b" " not in self._head and len(self._head) < 16:
                return  # the method has not arrived whole yet
            self._method_checked = True
            data, self._head = self._head, b""
            method = data.split(b" ", 1)[0]
            if method not in ALLOWED_METHODS:
                self._refuse(method)
                return
        super().data_received(data)

    def _refuse(self, method: bytes) -> None:
        response = self.protocol.reject(HTTPStatus.METHOD_NOT_ALLOWED, "only GET and HEAD are served\n")
        response.headers["Allow"] = "GET, HEAD"
        security_headers(response, None)
        self.protocol.handshake_exc = InvalidMethod(method.decode("ascii", "replace")[:16])
        self.protocol.send_response(response)  # then the protocol half-closes and discards what follows
        self.send_data()


def without_body(response: Response) -> Response:
    """The answer to a HEAD request: the same status and headers (Content-Length included), no body."""
    return Response(response.status_code, response.reason_phrase, Headers(response.headers), b"")

"""Abuse of the listeners and of user text, with real clients on loopback: hostile origins, forged Hosts,
chatty clients, wrong tokens, HTTP methods, credentials in source URLs, brackets in paths, nan and inf."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from streamrec.core.redact import RedactingFilter, redact
from streamrec.runtime.broadcast import Broadcaster, BroadcastOptions, exposed_hosts
from streamrec.runtime.guard import TokenGuard
from streamrec.runtime.sources import CaptureFormat, SourceError
from streamrec.runtime.sources.camera import CameraSource
from streamrec.runtime.types import hello_event, status_event
from streamrec.runtime.view import TerminalView

from .helpers import free_port

pytestmark = pytest.mark.timeout(180)  # sockets and child processes: never hang CI

EVIL = "https://evil.example"
SECRET = "pw-s3cr3t"
CREDENTIALED = f"rtsp://admin:{SECRET}@127.0.0.1:1/x"


def hello() -> dict:
    return hello_event(["a", "b"], [("cam", CREDENTIALED)])


async def started(**options) -> Broadcaster:
    server = Broadcaster(BroadcastOptions(port=0, web=("127.0.0.1", 0), **options), hello)
    await server.start()
    return server


async def http(port: int, head: str, body: bytes = b"", tls: ssl.SSLContext | None = None):
    """One raw HTTP/1.1 exchange (the head's lines joined by CRLF) -> (status, headers, body): the body up to
    the end of the connection, which the listener closes after any answer but a websocket handshake's."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    writer.write(head.replace("\n", "\r\n").encode() + b"\r\n\r\n" + body)
    await writer.drain()
    raw_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = raw_head.decode("latin-1").strip().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines[1:])}
    rest = b"" if status == 101 else await asyncio.wait_for(reader.read(), 5)  # a websocket stays open
    writer.close()
    return status, headers, rest


def handshake(host: str, path: str = "/", origin: str | None = None) -> str:
    """A websocket handshake request naming this Host (a browser's, when it has an Origin)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade"]
    lines += ["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    return "\n".join(lines + ([f"Origin: {origin}"] if origin else []))


def run(scenario) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


# --- 1. Origin and Host ----------------------------------------------------------------------------------------


def test_a_cross_origin_handshake_gets_403_on_both_listeners_while_same_origin_and_plain_clients_connect() -> None:
    async def scenario() -> None:
        server = await started()
        ws, web = f"ws://127.0.0.1:{server.port}/", f"ws://127.0.0.1:{server.web_port}/ws"
        try:
            for url in (ws, web):
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(url, origin=EVIL):
                        pass
                assert refused.value.response.status_code == 403
                async with connect(url) as client:  # no Origin: not a browser
                    assert json.loads(await client.recv())["type"] == "hello"
            async with connect(web, origin=f"http://127.0.0.1:{server.web_port}") as page:  # the web view's page
                assert json.loads(await page.recv())["type"] == "hello"
        finally:
            await server.stop()

    run(scenario)


def test_allow_origin_lets_a_chosen_site_in_and_no_other() -> None:
    async def scenario() -> None:
        server = await started(allow_origins=("https://Dash.Example/",))
        try:
            for url in (f"ws://127.0.0.1:{server.port}/", f"ws://127.0.0.1:{server.web_port}/ws"):
                async with connect(url, origin="https://dash.example") as client:
                    assert json.loads(await client.recv())["type"] == "hello"
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(url, origin="https://dash.example.evil.example"):
                        pass
                assert refused.value.response.status_code == 403
        finally:
            await server.stop()

    run(scenario)
    with pytest.raises(ValueError, match="origin"):
        BroadcastOptions(allow_origins=("dash.example/path",))


def test_a_forged_host_is_rejected_as_dns_rebinding() -> None:
    async def scenario() -> None:
        server = await started()
        try:
            for port, path in ((server.port, "/"), (server.web_port, "/ws")):
                rebound = f"attacker.example:{port}"  # a page whose domain now resolves to 127.0.0.1
                status, _, _ = await http(port, handshake(rebound, path, origin=f"http://{rebound}"))
                assert status == 403
                status, _, _ = await http(port, handshake(f"localhost:{port}", path))
                assert status == 101
            status, _, body = await http(server.web_port, f"GET / HTTP/1.1\nHost: attacker.example:{server.web_port}")
            assert status == 403 and b"<html" not in body
            status, _, _ = await http(server.web_port, "GET / HTTP/1.1\nHost: evil@127.0.0.1")
            assert status == 403
            status, headers, _ = await http(server.web_port, "GET / HTTP/1.1\nHost: x; script-src *")
            assert status == 403 and "script-src *" not in headers["content-security-policy"]  # no header injection
        finally:
            await server.stop()

    run(scenario)


# --- 3. the web listener's HTTP, tokens, TLS, exposure ---------------------------------------------------------


def test_http_answers_carry_security_headers_head_has_no_body_post_gets_405_and_no_version_is_advertised() -> None:
    async def scenario() -> None:
        server = await started()
        host = f"127.0.0.1:{server.web_port}"
        try:
            status, headers, page = await http(server.web_port, f"GET / HTTP/1.1\nHost: {host}")
            assert status == 200 and b"<html" in page
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            assert "script-src 'self'" in headers["content-security-policy"]
            assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"
            assert "server" not in headers
            status, head_headers, body = await http(server.web_port, f"HEAD / HTTP/1.1\nHost: {host}")
            assert status == 200 and body == b"" and head_headers["content-length"] == str(len(page))
            post = f"POST / HTTP/1.1\nHost: {host}\nContent-Type: text/plain\nContent-Length: 5"
            for port, request, payload in ((server.web_port, post, b"hello"), (server.port, post, b"hello")):
                status, headers, _ = await http(port, request, payload)
                assert status == 405 and headers["allow"] == "GET, HEAD" and "server" not in headers
            status, headers, _ = await http(server.web_port, f"DELETE /x HTTP/1.1\nHost: {host}")
            assert status == 405 and "x-content-type-options" in headers
            status, headers, body = await http(server.port, f"HEAD / HTTP/1.1\nHost: 127.0.0.1:{server.port}")
            assert status == 405 and body == b"" and "server" not in headers  # not a handshake, and no body
        finally:
            await server.stop()

    run(scenario)


def test_wrong_tokens_are_limited_per_address_and_the_token_is_never_logged(caplog) -> None:
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        server = await started(token="tok-s3cret")
        url = f"ws://127.0.0.1:{server.web_port}/ws"
        try:
            codes = []
            for _ in range(6):
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(url + "?token=guess"):
                        pass
                codes.append(refused.value.response.status_code)
            assert codes == [401] * 5 + [429]
            with pytest.raises(InvalidStatus) as refused:  # locked out: even the right token waits
                async with connect(url + "?token=tok-s3cret"):
                    pass
            assert refused.value.response.status_code == 429 and refused.value.response.headers["Retry-After"]
        finally:
            await server.stop()

    run(scenario)
    assert "live view on http://127.0.0.1" in caplog.text and "tok-s3cret" not in caplog.text

    now = [0.0]
    guard = TokenGuard("t", failures=2, window=10.0, clock=lambda: now[0])
    assert guard.refusal("a", "x") and guard.refusal("a", None) and guard.refusal("a", "t")[0] == 429
    assert guard.refusal("b", "t") is None  # another address is not locked out
    now[0] = 10.5
    assert guard.refusal("a", "t") is None  # the failures aged out


def test_only_non_loopback_listeners_without_a_token_are_warned_about() -> None:
    assert exposed_hosts(BroadcastOptions(host="0.0.0.0", web=("::1", 0))) == ["0.0.0.0"]
    assert exposed_hosts(BroadcastOptions(host="localhost", web=("192.168.1.9", 0))) == ["192.168.1.9"]
    assert exposed_hosts(BroadcastOptions(host="0.0.0.0", token="t")) == []
    assert exposed_hosts(BroadcastOptions(port=None, web=("127.0.0.1", 0))) == []


def test_tls_serves_wss_and_https(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (Debian package openssl)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    trusted = ssl.create_default_context(cafile=str(cert))

    async def scenario() -> None:
        server = await started(certfile=cert, keyfile=key)
        try:
            async with connect(f"wss://127.0.0.1:{server.port}/", ssl=trusted) as client:
                assert json.loads(await client.recv())["type"] == "hello"
            origin = f"https://127.0.0.1:{server.web_port}"
            async with connect(f"wss://127.0.0.1:{server.web_port}/ws", ssl=trusted, origin=origin) as page:
                assert json.loads(await page.recv())["type"] == "hello"
            status, headers, _ = await http(server.web_port, f"GET / HTTP/1.1\nHost: {origin[8:]}", tls=trusted)
            assert status == 200 and "frame-ancestors" in headers["content-security-policy"]
            assert server.web_url == f"{origin}/"
        finally:
            await server.stop()

    run(scenario)
    with pytest.raises(ValueError, match="cannot load the TLS certificate"):
        asyncio.run(Broadcaster(BroadcastOptions(port=0, certfile=tmp_path / "missing.pem"), hello).start())


# --- 4. clients that talk ---------------------------------------------------------------------------------------


def test_a_chatty_client_stays_connected_past_the_keepalive() -> None:
    async def scenario() -> None:
        server = await started(keepalive=0.3)
        try:
            async with connect(f"ws://127.0.0.1:{server.port}/") as client:
                await client.recv()
                for i in range(30):  # more than websockets' receive queue (16): unread, they would block the pongs
                    await client.send(json.dumps({"type": "subscribe", "n": i}))
                await asyncio.sleep(2.0)  # several ping rounds of 0.3 s
                server.publish({"type": "status", "stream": "cam", "state": "started", "detail": ""})
                assert json.loads(await asyncio.wait_for(client.recv(), 2))["state"] == "started"
        finally:
            await server.stop()

    run(scenario)


# --- 2. credentials in source URLs -------------------------------------------------------------------------------


def test_redaction_covers_user_info_secret_parameters_events_views_and_log_records() -> None:
    detail = f"cannot open {CREDENTIALED}: [Errno 111] Connection refused: '{CREDENTIALED}'"
    assert (
        redact(detail)
        == "cannot open rtsp://***@127.0.0.1:1/x: [Errno 111] Connection refused: 'rtsp://***@127.0.0.1:1/x'"
    )
    assert (
        redact("rtsp://u:p@ss@cam/x and http://cdn/a.m3u8?x=1&token=abc")
        == "rtsp://***@cam/x and http://cdn/a.m3u8?x=1&token=***"
    )
    assert redact("https://example.com/@artist/clip.mp4") == "https://example.com/@artist/clip.mp4"
    assert hello()["streams"][0]["source"] == "rtsp://***@127.0.0.1:1/x"
    assert SECRET not in status_event("cam", "reconnecting", detail)["detail"]

    out = io.StringIO()
    view = TerminalView([("cam", CREDENTIALED)], console=Console(file=out, width=200))
    view.send(status_event("cam", "reconnecting", detail))
    Console(file=out, width=200).print(view)
    assert "rtsp://***@127.0.0.1:1/x" in out.getvalue() and SECRET not in out.getvalue()

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test_security.redaction")
    logger.addHandler(handler)
    try:
        logger.warning("%s: %s", CREDENTIALED, "refused")
        try:
            raise OSError(f"cannot open {CREDENTIALED}")
        except OSError:
            logger.exception("source failed")
    finally:
        logger.removeHandler(handler)
    assert "rtsp://***@127.0.0.1:1/x: refused" in stream.getvalue() and SECRET not in stream.getvalue()


@pytest.mark.slow
def test_no_credential_reaches_a_client_the_web_view_the_jsonl_or_the_log(runtime_bundle: Path, tmp_path: Path) -> None:
    """The command line end to end: a credentialed RTSP URL that refuses connections; clients of both listeners
    (one from a site let in by --allow-origin, one refused), the jsonl file and the log."""
    ws_port, web_port, jsonl = free_port(), free_port(), tmp_path / "events.jsonl"
    command = [
        sys.executable, "-m", "streamrec", "run", CREDENTIALED, "--model", str(runtime_bundle), "--backend", "torch",
        "--no-view", "--ws", f"127.0.0.1:{ws_port}", "--web", f"127.0.0.1:{web_port}", "--wait-clients", "2",
        "--jsonl", str(jsonl), "--allow-origin", "https://dash.example",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    async def scenario() -> list[str]:
        deadline = time.monotonic() + 90
        while True:  # the child imports torch and loads the bundle first
            try:
                client = await connect(f"ws://127.0.0.1:{ws_port}/", origin="https://dash.example", open_timeout=5)
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "the run did not start"
                await asyncio.sleep(0.3)
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"ws://127.0.0.1:{web_port}/ws", origin=EVIL)
        assert refused.value.response.status_code == 403
        page = await connect(f"ws://127.0.0.1:{web_port}/ws", origin=f"http://127.0.0.1:{web_port}")
        received = [await client.recv(), await page.recv()]
        while True:  # the source fails to connect: a status that repeats FFmpeg's error text
            received.append(await asyncio.wait_for(client.recv(), 60))
            if json.loads(received[-1]).get("state") in ("reconnecting", "error"):
                break
        await client.close()
        await page.close()
        return received

    try:
        received = asyncio.run(scenario())
    finally:
        process.send_signal(signal.SIGTERM)
        log, _ = process.communicate(timeout=30)
    hellos = [json.loads(m) for m in received[:2]]
    assert all(h["streams"] == [{"id": "url0", "source": "rtsp://***@127.0.0.1:1/x"}] for h in hellos)
    assert "127.0.0.1:1" in json.loads(received[-1])["detail"]
    assert "rtsp://***@127.0.0.1:1/x" in log  # the URL is logged, redacted
    for text in (*received, jsonl.read_text(), log):
        assert SECRET not in text


# --- 14-16. the command line's user text, numbers and OpenCV ---------------------------------------------------


def test_bracketed_paths_print_as_they_are(streamrec_cli, capsys) -> None:
    for path in ("clip [/live].mp4", "clip [live].mp4"):
        assert streamrec_cli("run", path) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and f"no such media file: {path}" in lines[0]
    out = io.StringIO()
    view = TerminalView([("clip", "clip [/live].mp4")], console=Console(file=out, width=200))
    Console(file=out, width=200).print(view)
    assert "clip [/live].mp4" in out.getvalue()


@pytest.mark.parametrize("option, value", [("--hop", "nan"), ("--duration", "inf"), ("--fps", "NaN")])
def test_nan_and_inf_options_are_one_line_and_exit_2(streamrec_cli, capsys, option: str, value: str) -> None:
    assert streamrec_cli("run", "missing.mp4", option, value) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and option in lines[0] and "finite" in lines[0]


def test_opencv_prints_nothing_of_its_own_before_the_camera_error(capfd) -> None:
    with pytest.raises(SourceError, match="cannot open camera 97"):
        CameraSource("97", CaptureFormat(16000)).prepare()
    assert capfd.readouterr().err == ""  # OpenCV writes to the stderr descriptor itself: captured there

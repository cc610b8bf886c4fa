"""WebSockets in app.bin: the ASGI websocket scope over RFC 6455 (issue #4).

The `websockets` client library against FastAPI endpoints (echo, broadcast,
subprotocols, close codes both ways, 403 before accept, denial responses,
1 MB messages with and without permessage-deflate), and raw sockets for each
frame rule a server must enforce (masking, UTF-8, sizes, reserved bits and
opcodes, control frames, fragmentation), keepalive pings, backpressure both
ways, decompression bombs, graceful shutdown and --ws none.

The apps are tests/e2e/fixtures/appbin_wsapps (fast.py: FastAPI, raw.py: bare
ASGI), installed into their own cached venv and packed once per session.
$APPBIN_SERVER_TEST_HOST packs another host (e.g. build-asan/appbin-host).
"""

import asyncio
import base64
import hashlib
import json
import os
import select
import signal
import socket
import struct
import time
import zlib

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from conftest import FIXTURES, ROOT, TEST_VENV_REQUIREMENTS, _cached_build, build_pip_venv
from server_fixtures import AppBinFactory

FAST_APP = "appbin_wsapps.fast:app"
RAW_APP = "appbin_wsapps.raw:app"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# ---- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def ws_venv():
    """The test venv's pinned FastAPI stack + fixtures/appbin_wsapps."""
    local = [FIXTURES / "appbin_wsapps"]
    return _cached_build("wsapps", TEST_VENV_REQUIREMENTS, local,
                         lambda target: build_pip_venv(target, TEST_VENV_REQUIREMENTS, local))


@pytest.fixture(scope="session")
def ws_app_bin(tmp_path_factory, run_appbin_pack, appbin_host, ws_venv):
    host = os.environ.get("APPBIN_SERVER_TEST_HOST")
    if not host and os.environ.get("APPBIN_BUILD_DIR"):
        host = ROOT / os.environ["APPBIN_BUILD_DIR"] / "appbin-host"
    output = tmp_path_factory.mktemp("ws-app") / "app.bin"
    result = run_appbin_pack("--venv", ws_venv, "--app", FAST_APP, "--host", host or appbin_host,
                             "-o", output, "--quiet")
    assert result.returncode == 0, result.stderr
    return output


@pytest.fixture
def wsbin(ws_app_bin, tmp_path):
    """wsbin(*args, app=None) -> a fresh app.bin process on a free port."""
    factory = AppBinFactory(ws_app_bin, tmp_path)
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def fast(request, tmp_path_factory, ws_app_bin):
    factory = AppBinFactory(ws_app_bin, tmp_path_factory.mktemp("ws-fast"))
    request.addfinalizer(factory.close)
    return factory(app=FAST_APP)


@pytest.fixture(scope="module")
def raw(request, tmp_path_factory, ws_app_bin):
    factory = AppBinFactory(ws_app_bin, tmp_path_factory.mktemp("ws-raw"))
    request.addfinalizer(factory.close)
    return factory(app=RAW_APP)


def url(server, path):
    return f"ws://127.0.0.1:{server.port}{path}"


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def result(server, key, want=lambda v: v is not None, timeout=10):
    """GET /result/{key} (FastAPI app) until want(value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = httpx.get(f"{server.url}/result/{key}", timeout=5).json()
        if want(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def raw_result(server, key, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        value = httpx.get(f"{server.url}/result", params={"key": key}, timeout=5).json()
        if value is not None or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


# ---- a raw WebSocket client ------------------------------------------------------------


class RawWS:
    """A socket speaking RFC 6455 by hand: any frame, checked replies."""

    def __init__(self, port, timeout=5, rcvbuf=None, sndbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:  # small kernel buffers make backpressure show sooner, on any machine
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError("connection closed by the server")
        self.buf += data

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def handshake(self, path="/echo", headers=(), key=None, version="13", method="GET",
                  http="1.1", expect=101):
        key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
        lines = [f"{method} {path} HTTP/{http}", "Host: 127.0.0.1", "Upgrade: websocket",
                 "Connection: Upgrade"]
        if key:
            lines.append(f"Sec-WebSocket-Key: {key}")
        if version:
            lines.append(f"Sec-WebSocket-Version: {version}")
        lines += [f"{n}: {v}" for n, v in headers]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        if expect is not None:
            assert self.status == expect, (self.status, self.headers, self.buf[:300])
        if self.status == 101:
            want = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
            assert self.headers["sec-websocket-accept"] == want
        return self

    def body(self):
        """The body of a non-101 answer (content-length or chunked)."""
        if "content-length" in self.headers:
            return self._take(int(self.headers["content-length"]))
        out = b""
        while True:
            while b"\r\n" not in self.buf:
                self._fill()
            line, self.buf = self.buf.split(b"\r\n", 1)
            size = int(line, 16)
            if size == 0:
                self._take(2)
                return out
            out += self._take(size)
            self._take(2)

    @staticmethod
    def frame(opcode, payload=b"", fin=True, rsv=0, mask=True, length=None):
        if isinstance(payload, str):
            payload = payload.encode()
        n = len(payload) if length is None else length
        head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
        m = 0x80 if mask else 0
        if n < 126:
            head += bytes([m | n])
        elif n < 65536:
            head += bytes([m | 126]) + struct.pack("!H", n)
        else:
            head += bytes([m | 127]) + struct.pack("!Q", n)
        if not mask:
            return head + payload
        key = os.urandom(4)
        masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return head + key + masked

    def send(self, opcode, payload=b"", **kw):
        self.sock.sendall(self.frame(opcode, payload, **kw))

    def recv(self):
        """(fin, rsv, opcode, payload) of the next server frame (must be unmasked)."""
        b0, b1 = self._take(2)
        assert not b1 & 0x80, "server frames must not be masked"
        n = b1 & 0x7f
        if n == 126:
            n = struct.unpack("!H", self._take(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._take(8))[0]
        return bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0f, self._take(n)

    def recv_close(self):
        """The close frame's (code, reason), skipping data and pings."""
        while True:
            _, _, opcode, payload = self.recv()
            if opcode == 8:
                if not payload:
                    return None, ""
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode()

    def closed(self, timeout=3):
        """True if the server closes the TCP connection within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                self._fill()
        except EOFError:
            return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def abort(self):
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self):
        self.sock.close()


# ---- the websockets client library ----------------------------------------------------------


def test_echo_text_and_bytes(fast):
    async def go():
        async with connect(url(fast, "/echo")) as ws:
            for message in ["hello", "κόσμε ☃ 😀", "", b"\x00\x01\x02\xff", b""]:
                await ws.send(message)
                assert await ws.recv() == message
            assert ws.response.status_code == 101
    run(go())


@pytest.mark.parametrize("compression", ["deflate", None])
def test_one_megabyte_messages(fast, compression):
    text = ("appbin websocket " * 70000)[:1 << 20]
    data = os.urandom(1 << 20)

    async def go():
        async with connect(url(fast, "/echo"), compression=compression, max_size=None) as ws:
            ext = ws.response.headers.get("Sec-WebSocket-Extensions")
            if compression:
                assert ext and ext.startswith("permessage-deflate")
            else:
                assert ext is None
            for message in [text, data, text]:
                await ws.send(message)
                assert await ws.recv() == message
    run(go(), timeout=60)


def test_deflate_parameters(fast):
    """Every RFC 7692 parameter the client may ask for."""
    factory = ClientPerMessageDeflateFactory(server_no_context_takeover=True,
                                             client_no_context_takeover=True,
                                             server_max_window_bits=10, client_max_window_bits=9)
    text = "abcdefghij" * 50000

    async def go():
        async with connect(url(fast, "/echo"), extensions=[factory], compression=None,
                           max_size=None) as ws:
            ext = ws.response.headers["Sec-WebSocket-Extensions"]
            for param in ("server_no_context_takeover", "client_no_context_takeover",
                          "server_max_window_bits=10", "client_max_window_bits=9"):
                assert param in ext
            for _ in range(3):
                await ws.send(text)
                assert await ws.recv() == text
    run(go())


def test_broadcast(fast):
    async def go():
        clients = [await connect(url(fast, "/broadcast/lobby")) for _ in range(6)]
        try:
            await asyncio.sleep(0.3)  # every client's handler has joined the room
            await clients[2].send("hello everyone")
            got = await asyncio.gather(*(c.recv() for c in clients))
            assert got == ["hello everyone"] * 6
        finally:
            for c in clients:
                await c.close()
    run(go())


def test_subprotocol_selection(fast):
    async def go():
        async with connect(url(fast, "/subprotocol"), subprotocols=["v1.chat", "v2.chat"]) as ws:
            assert ws.subprotocol == "v2.chat"  # the server's preference
            assert ws.response.headers["x-chosen"] == "v2.chat"
            assert await ws.recv() == "v2.chat"
        async with connect(url(fast, "/subprotocol")) as ws:
            assert ws.subprotocol is None
            assert await ws.recv() == "none"
    run(go())


def test_scope(fast):
    async def go():
        async with connect(url(fast, "/scope?x=1&y=%20"), subprotocols=["a", "b"],
                           additional_headers={"X-Custom": "yes"}) as ws:
            return json.loads(await ws.recv()), ws.local_address
    scope, local = run(go())
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/scope" and scope["raw_path"] == "/scope"
    assert scope["query_string"] == "x=1&y=%20"
    assert scope["root_path"] == ""
    assert ["x-custom", "yes"] in scope["headers"]
    assert any(n == "sec-websocket-key" for n, _ in scope["headers"])
    assert scope["client"] == ["127.0.0.1", local[1]]
    assert scope["server"] == ["127.0.0.1", fast.port]
    assert scope["subprotocols"] == ["a", "b"]
    assert scope["state"] == {"started": "yes"}
    assert scope["extensions"] == {"websocket.http.response": {}}
    assert scope["has_method"] is False


def test_wss_echo_and_scope(wsbin, certs):
    """WebSockets over TLS (--ssl-certfile): the scheme is wss, and a 1 MB
    message each way crosses many TLS records and the read buffer."""
    import ssl
    server = wsbin("--ssl-certfile", certs / "server.pem", "--ssl-keyfile", certs / "server.key",
                   app=FAST_APP)
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    big = os.urandom(1024 * 1024)

    async def go():
        base = f"wss://127.0.0.1:{server.port}"
        async with connect(f"{base}/scope", ssl=ctx) as ws:
            scope = json.loads(await ws.recv())
        async with connect(f"{base}/echo", ssl=ctx, max_size=None) as ws:
            await ws.send("hello")
            text = await ws.recv()
            await ws.send(big)
            return scope, text, await ws.recv()
    scope, text, echoed = run(go())
    assert scope["scheme"] == "wss"
    assert text == "hello" and echoed == big


def test_scope_proxy_headers_and_root_path(wsbin):
    server = wsbin("--root-path", "/api", app=FAST_APP)

    async def go(headers):
        async with connect(url(server, "/scope"), additional_headers=headers) as ws:
            return json.loads(await ws.recv())
    scope = run(go({"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}))
    assert scope["scheme"] == "wss"
    assert scope["client"] == ["203.0.113.9", 0]
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/scope" and scope["raw_path"] == "/api/scope"
    assert run(go({"X-Forwarded-Proto": "http"}))["scheme"] == "ws"


@pytest.mark.parametrize("code", [1000, 1001, 4001])
def test_close_from_app(fast, code):
    async def go():
        async with connect(url(fast, f"/close/{code}")) as ws:
            assert await ws.recv() == "closing"
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            return info.value
    exc = run(go())
    assert exc.rcvd.code == code
    assert exc.rcvd.reason == "bye from the app"
    assert exc.sent.code == code  # the client echoed it: a clean closing handshake
    # after its own close, the app's receive() reports the disconnect
    assert result(fast, f"close-{code}") == {"after": "websocket.disconnect", "code": code}


@pytest.mark.parametrize("code", [1000, 1001, 3000, 4002])
def test_close_from_client(fast, code):
    key = f"client-close-{code}"

    async def go():
        ws = await connect(url(fast, f"/record/{key}"))
        await ws.send("one")
        assert await ws.recv() == "one"
        await ws.close(code=code, reason="client bye")
        assert ws.close_code == code  # the server echoed the code
    run(go())
    assert result(fast, key) == {"code": code, "reason": "client bye", "count": 1}


def test_abrupt_disconnect(fast):
    ws = RawWS(fast.port).handshake("/record/abrupt")
    ws.send(1, "hi")
    assert ws.recv()[2:] == (1, b"hi")
    ws.abort()  # RST, no close frame
    assert result(fast, "abrupt") == {"code": 1006, "reason": "", "count": 1}


def test_close_before_accept_is_403(fast):
    async def go():
        with pytest.raises(InvalidStatus) as info:
            await connect(url(fast, "/reject"))
        return info.value.response.status_code
    assert run(go()) == 403
    ws = RawWS(fast.port).handshake("/reject", expect=403)
    assert ws.body() == b""
    assert ws.closed()


def test_denial_response(fast, raw):
    async def go():
        with pytest.raises(InvalidStatus) as info:
            await connect(url(fast, "/deny"))
        return info.value.response
    response = run(go())
    assert response.status_code == 401
    assert response.headers["x-denied"] == "yes"
    assert response.body == b"no entry"
    # streamed in two pieces by a bare ASGI app
    ws = RawWS(raw.port).handshake("/deny-chunks", expect=403)
    assert ws.headers["x-why"] == "chunks"
    assert ws.body() == b"go away"
    assert ws.closed()
    assert raw_result(raw, "deny-chunks") == {"after": "RuntimeError"}


def test_app_errors(fast):
    async def go(path):
        async with connect(url(fast, path)) as ws:
            messages = []
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    messages.append(await ws.recv())
            return messages, info.value.rcvd
    # an exception after accept: 1011
    messages, rcvd = run(go("/raise"))
    assert messages == [] and rcvd.code == 1011
    fast.wait_log("boom in a websocket")
    # returning without websocket.close: a normal close
    messages, rcvd = run(go("/return"))
    assert messages == ["bye"] and rcvd.code == 1000
    # an exception before accept: 500
    ws = RawWS(fast.port).handshake("/raise-early", expect=500)
    assert ws.body() == b"Internal Server Error"


def test_asgi_message_order(raw):
    ws = RawWS(raw.port).handshake("/accept-headers")
    assert ws.headers["x-extra"] == "1"
    assert ws.headers["sec-websocket-protocol"] == "proto-x"
    assert ws.recv_close() == (1000, "")
    # send after close: RuntimeError; receive then gives the disconnect
    ws = RawWS(raw.port).handshake("/send-after-close")
    assert ws.recv_close() == (4001, "done")
    ws.send(8, struct.pack("!H", 4001))
    assert ws.closed()
    assert raw_result(raw, "send-after-close") == {
        "error": "RuntimeError",
        "receive": {"type": "websocket.disconnect", "code": 4001, "reason": "done"}}
    # a message other than accept/close/http.response first: RuntimeError
    ws = RawWS(raw.port).handshake("/bad-first", expect=403)
    assert raw_result(raw, "bad-first") == {"error": "RuntimeError"}
    # the app raises when called, before any awaitable exists: 500
    ws = RawWS(raw.port).handshake("/sync-error", expect=500)
    assert ws.body() == b"Internal Server Error"
    raw.wait_log("raised before returning a coroutine")


def test_disconnect_before_accept(raw):
    ws = RawWS(raw.port)
    ws.sock.sendall(b"GET /wait-disconnect HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n")
    time.sleep(0.2)
    ws.close()
    assert raw_result(raw, "wait-disconnect") == {
        "message": {"type": "websocket.disconnect", "code": 1006, "reason": ""},
        "accept": "ClientDisconnected"}


# ---- handshakes ----------------------------------------------------------------------------


def test_bad_handshakes(fast):
    ws = RawWS(fast.port).handshake("/echo", key="", expect=400)
    assert b"Sec-WebSocket-Key" in ws.body()
    RawWS(fast.port).handshake("/echo", key="too-short==", expect=400)
    ws = RawWS(fast.port).handshake("/echo", version="8", expect=426)
    assert ws.headers["sec-websocket-version"] == "13"
    RawWS(fast.port).handshake("/echo", version="", expect=426)
    RawWS(fast.port).handshake("/echo", http="1.0", expect=400)
    # not GET: not a WebSocket handshake, the app answers it as HTTP
    ws = RawWS(fast.port).handshake("/echo", method="POST", expect=None)
    assert ws.status in (404, 405)
    # the app never saw the bad ones
    fast.wait_log('"WebSocket /echo" 400')  # written after the response


def test_ws_none(wsbin):
    server = wsbin("--ws", "none", app=FAST_APP)
    ws = RawWS(server.port).handshake("/plain-upgrade", expect=200)
    assert ws.headers["content-type"] == "application/json"
    assert b'"type":"http"' in ws.body()

    async def go():
        with pytest.raises(InvalidStatus) as info:
            await connect(url(server, "/echo"))
        return info.value.response.status_code
    assert run(go()) == 404


# ---- frame rules (raw sockets) --------------------------------------------------------------


def expect_close(ws, code):
    got = ws.recv_close()
    assert got[0] == code, got
    assert ws.closed()


@pytest.mark.parametrize("frame,code", [
    (RawWS.frame(1, "unmasked", mask=False), 1002),
    (RawWS.frame(1, b"bad \xff utf-8"), 1007),
    (RawWS.frame(1, b"\xed\xa0\x80"), 1007),  # a UTF-16 surrogate
    (RawWS.frame(1, "rsv2", rsv=2), 1002),
    (RawWS.frame(1, "rsv1 without deflate", rsv=4), 1002),
    (RawWS.frame(3, "reserved opcode"), 1002),
    (RawWS.frame(11, "reserved control opcode"), 1002),
    (RawWS.frame(9, b"x" * 126), 1002),  # control frame > 125 bytes
    (RawWS.frame(9, "fragmented ping", fin=False), 1002),
    (RawWS.frame(0, "continuation out of the blue"), 1002),
    (RawWS.frame(1, "a", fin=False) + RawWS.frame(1, "b"), 1002),  # text inside a message
    (RawWS.frame(8, b"\x03"), 1002),  # 1-byte close payload
    (RawWS.frame(8, struct.pack("!H", 1005)), 1002),  # a code that must not be sent
    (RawWS.frame(8, struct.pack("!H", 1000) + b"\xff"), 1007),  # bad UTF-8 reason
], ids=["unmasked", "bad-utf8", "surrogate", "rsv2", "rsv1", "opcode3", "opcode11",
        "long-control", "fragmented-control", "orphan-continuation", "nested-message",
        "short-close", "close-1005", "close-bad-reason"])
def test_protocol_errors(fast, frame, code):
    key = f"proto-{frame.hex()[:24]}-{code}"
    ws = RawWS(fast.port).handshake(f"/record/{key}")
    ws.sock.sendall(frame)
    expect_close(ws, code)
    assert result(fast, key)["code"] == code


def test_message_too_big(wsbin):
    server = wsbin("--ws-max-size", "1000", app=FAST_APP)
    ws = RawWS(server.port).handshake("/record/big")
    ws.send(2, b"x" * 1000)  # exactly the limit is fine
    assert ws.recv()[3] == b"x" * 1000
    ws.send(2, b"x" * 600, fin=False)
    ws.send(0, b"x" * 600)  # 1200 across fragments
    expect_close(ws, 1009)
    # the header alone is enough to refuse: no payload is ever sent
    ws = RawWS(server.port).handshake("/echo")
    ws.sock.sendall(RawWS.frame(2, b"", length=1 << 40)[:14])
    expect_close(ws, 1009)

    async def go():
        async with connect(url(server, "/echo"), max_size=None) as ws:
            await ws.send("y" * 5000)
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            return info.value.rcvd.code
    assert run(go()) == 1009


def test_decompression_bomb(wsbin):
    server = wsbin("--ws-max-size", str(1 << 20), app=FAST_APP)
    ws = RawWS(server.port).handshake("/record/bomb",
                                      headers=[("Sec-WebSocket-Extensions", "permessage-deflate")])
    assert ws.headers["sec-websocket-extensions"] == "permessage-deflate"
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = z.compress(b"\0" * (64 << 20)) + z.flush(zlib.Z_SYNC_FLUSH)
    assert payload.endswith(b"\x00\x00\xff\xff") and len(payload) < 200_000
    rss_before = server.rss_kb()
    ws.send(2, payload[:-4], rsv=4)  # 64 MB once inflated
    expect_close(ws, 1009)
    assert server.rss_kb() - rss_before < 50_000
    assert result(server, "bomb")["code"] == 1009


def test_compressed_frames_by_hand(fast):
    """A compressed message split over frames with a ping between them, then a
    plain message: RSV1 only on the first frame."""
    ws = RawWS(fast.port).handshake(
        "/echo", headers=[("Sec-WebSocket-Extensions",
                           "permessage-deflate; client_no_context_takeover")])
    assert "client_no_context_takeover" in ws.headers["sec-websocket-extensions"]
    text = ("fragmented and compressed " * 100).encode()
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = (z.compress(text) + z.flush(zlib.Z_SYNC_FLUSH))[:-4]
    ws.send(1, payload[:10], fin=False, rsv=4)
    ws.send(9, b"mid")
    ws.send(0, payload[10:])
    assert ws.recv()[2:] == (10, b"mid")
    fin, rsv, opcode, reply = ws.recv()
    assert fin and opcode == 1 and rsv == 4  # the echo came back compressed
    assert zlib.decompressobj(-15).decompress(reply + b"\x00\x00\xff\xff") == text
    ws.send(1, b"plain")
    assert ws.recv() == (True, 0, 1, b"plain")  # small: sent uncompressed


def test_ping_pong_and_fragmentation(fast):
    ws = RawWS(fast.port).handshake("/echo")
    ws.send(9, b"are you there")
    assert ws.recv() == (True, 0, 10, b"are you there")
    ws.send(9)
    assert ws.recv() == (True, 0, 10, b"")
    # a fragmented text message with a ping and a pong between the fragments,
    # a UTF-8 character split across them
    snow = "☃".encode()
    ws.send(1, b"Hel" + snow[:1], fin=False)
    ws.send(9, b"ping in the middle")
    ws.send(0, snow[1:] + b"lo ", fin=False)
    ws.send(10, b"unsolicited pong")
    ws.send(0, b"world")
    assert ws.recv() == (True, 0, 10, b"ping in the middle")
    assert ws.recv() == (True, 0, 1, ("Hel☃lo world").encode())
    # fragmented binary, many pieces
    for i in range(20):
        ws.send(2 if i == 0 else 0, bytes([i]) * 100, fin=i == 19)
    assert ws.recv() == (True, 0, 2, b"".join(bytes([i]) * 100 for i in range(20)))
    # the client closes: the server echoes the code and closes TCP
    ws.send(8, struct.pack("!H", 1000) + b"done")
    assert ws.recv_close() == (1000, "")
    assert ws.closed()


def test_client_sends_frames_byte_by_byte(fast):
    ws = RawWS(fast.port).handshake("/echo")
    for byte in RawWS.frame(1, "slowly " * 30):
        ws.sock.sendall(bytes([byte]))
    assert ws.recv() == (True, 0, 1, b"slowly " * 30)


# ---- keepalive -----------------------------------------------------------------------------


def test_ping_timeout(wsbin):
    server = wsbin("--ws-ping-interval", "0.3", "--ws-ping-timeout", "0.5", app=FAST_APP)
    ws = RawWS(server.port).handshake("/watch/silent")
    start = time.monotonic()
    fin, rsv, opcode, payload = ws.recv()
    assert opcode == 9 and len(payload) == 4  # the server's keepalive ping
    assert 0.2 < time.monotonic() - start < 2
    # no pong: close 1011 once the timeout passed, then the TCP close
    assert ws.recv_close() == (1011, "keepalive ping timeout")
    assert 0.6 < time.monotonic() - start < 3
    assert ws.closed()
    assert result(server, "silent")["code"] == 1011


def test_ping_answered_keeps_the_connection(wsbin):
    server = wsbin("--ws-ping-interval", "0.2", "--ws-ping-timeout", "0.3", app=FAST_APP)

    async def go():
        async with connect(url(server, "/echo"), ping_interval=None) as ws:
            await asyncio.sleep(1.5)  # the library answers the server's pings
            await ws.send("still here")
            return await ws.recv()
    assert run(go()) == "still here"
    # a raw client answering by hand too
    ws = RawWS(server.port).handshake("/echo")
    for _ in range(3):
        fin, rsv, opcode, payload = ws.recv()
        assert opcode == 9
        ws.send(10, payload)
    ws.send(1, "alive")
    while True:
        _, _, opcode, payload = ws.recv()
        if opcode == 1:
            assert payload == b"alive"
            break


# ---- backpressure -------------------------------------------------------------------------------


def send_until_blocked(sock, frame, limit, stall=1.0):
    """Sends frame repeatedly without blocking until the socket stays full for
    `stall` seconds or `limit` bytes went out. Returns (full frames sent,
    the unsent rest of the current frame)."""
    sock.setblocking(False)
    sent_frames, pending, total = 0, frame, 0
    try:
        while total < limit:
            try:
                n = sock.send(pending)
            except BlockingIOError:
                n = 0
            total += n
            pending = pending[n:]
            if not pending:
                sent_frames += 1
                pending = frame
                continue
            if n == 0:
                _, writable, _ = select.select([], [sock], [], stall)
                if not writable:
                    break
    finally:
        sock.setblocking(True)
    return sent_frames, pending if pending is not frame else b"", total


def test_slow_reader_pauses_reading(wsbin):
    """The app does not receive: reading pauses after --ws-max-queue messages,
    so the client's sends block instead of the server buffering them."""
    server = wsbin("--ws-max-queue", "4", app=FAST_APP)
    ws = RawWS(server.port, timeout=30, sndbuf=65536).handshake("/hold/slow")
    frame = RawWS.frame(2, b"\xab" * 65536)
    rss_before = server.rss_kb()
    full, rest, total = send_until_blocked(ws.sock, frame, limit=200 << 20)
    assert total < 40 << 20, f"{total} bytes went in: reading did not pause"
    assert server.rss_kb() - rss_before < 30_000
    httpx.get(f"{server.url}/release/slow", timeout=5)
    if rest:
        ws.sock.sendall(rest)
        full += 1
    ws.send(2, b"end")
    _, _, opcode, payload = ws.recv()
    assert opcode == 1 and payload.decode() == f"{full + 1} {full * 65536 + 3}"


def test_slow_client_bounds_server_buffering(wsbin):
    """The client does not read: the app's send() waits for the drain."""
    server = wsbin(app=FAST_APP)
    ws = RawWS(server.port, timeout=30, rcvbuf=65536).handshake("/flood/flood?n=400")
    time.sleep(1.5)
    state = result(server, "flood")
    assert 0 < state["sent"] < 300 and not state["done"], state  # 400 x 64 KiB = 25 MiB
    assert server.rss_kb() < 200_000
    chunk = bytes(range(256)) * 256
    for _ in range(400):
        assert ws.recv()[2:] == (2, chunk)
    assert ws.recv()[2:] == (1, b"end")
    assert result(server, "flood", want=lambda v: v and v["done"]) == {"sent": 400, "done": True}


def test_many_messages_queued_then_read(fast):
    """Messages that arrive faster than the app reads are all delivered, in order."""
    async def go():
        async with connect(url(fast, "/echo")) as ws:
            for i in range(2000):
                await ws.send(f"m{i}")
            return [await ws.recv() for _ in range(2000)]
    assert run(go()) == [f"m{i}" for i in range(2000)]


# ---- shutdown ----------------------------------------------------------------------------------


def test_graceful_shutdown_closes_with_1012(wsbin):
    server = wsbin(app=FAST_APP)
    ws = RawWS(server.port).handshake("/watch/shutdown")
    ws.send(1, "hello")
    result(server, "shutdown", want=lambda v: v and v.get("last") == "hello")
    server.send_signal(signal.SIGTERM)
    assert ws.recv_close() == (1012, "")
    assert ws.closed()
    assert server.wait_exit(10) == 0
    assert "Finished server process" in server.log()


@pytest.mark.parametrize("ping", ["0.1", "0"], ids=["pings", "no-pings"])
def test_idle_wss_connections_keep_no_message_sized_buffer(wsbin, certs, appbin_host, ping):
    """WebSocket connections over TLS that each echoed a 900 KB message, then
    stay open and quiet: none keeps the buffers that message grew (before:
    2.9 MB a connection: the received message until the next one came, and
    the plaintext and ciphertext of the echo, which now go at the next
    keepalive ping, or without pings 0.2 s after a large message). The
    endpoint holds no message while it waits (echo's `message` would be
    the app's 0.9 MB)."""
    import ssl
    if b"__asan_init" in appbin_host.read_bytes():
        pytest.skip("a sanitizer build keeps freed memory in quarantine")
    server = wsbin("--ssl-certfile", certs / "server.pem", "--ssl-keyfile", certs / "server.key",
                   "--ws-ping-interval", ping, app=FAST_APP)
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    big = os.urandom(900 * 1024)

    async def go():
        base = f"wss://127.0.0.1:{server.port}/echo-bytes"
        conns = [await connect(base, ssl=ctx, max_size=None, compression=None)]
        await conns[0].send(big)
        assert await conns[0].recv() == big
        await asyncio.sleep(0.3)
        rss = server.rss_kb()
        for _ in range(30):
            ws = await connect(base, ssl=ctx, max_size=None, compression=None)
            conns.append(ws)
            await ws.send(big)
            assert await ws.recv() == big
            await asyncio.sleep(0.25)  # its next keepalive ping, or the trim without
        await asyncio.sleep(0.3)
        grown = server.rss_kb() - rss
        for ws in conns[-3:]:  # they still echo
            await ws.send(big)
            assert await ws.recv() == big
        for ws in conns:
            await ws.close()
        return grown
    grown = run(go())
    assert grown < 20 * 1024, f"30 quiet connections hold {grown} KiB more"

"""Server hardening (issue 11): each defect found by the fault, fuzz and
conformance runs gets a test here that failed before its fix.

- proxy headers: a non-UTF-8 X-Forwarded-For (a heap use-after-free under
  ASan, a 500 in release builds), proxy headers on --uds, CIDR networks in
  --forwarded-allow-ips;
- HTTP details of RFC 9110/9112 (414, Expect on HTTP/1.0, OWS, chunk
  extensions, Host validation, HTTP/1.2, Transfer-Encoding codings);
- error messages (--uds in a missing directory, too few file descriptors,
  http.response.start twice);
- the supervisor (--workers): group signals drain, start-up failures back
  off and stop, SIGTERM while workers start, --limit-max-requests-jitter,
  --timeout-worker-healthcheck.

All of it runs against the release host and, in tests/all.sh, the ASan one.
"""

import base64
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from server_fixtures import (AppBinFactory, RawConn, build_request, children_of, free_port,
                             pid_alive)
from test_websocket import FAST_APP as WS_APP
from test_websocket import RawWS, ws_app_bin, ws_venv, wsbin  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(180)


def _scope_of(resp):
    assert resp.status == 200, resp
    return json.loads(resp.body)


def _raw_scope(conn, headers):
    """GET /scope with headers given as raw (name, value-bytes) pairs."""
    head = b"GET /scope HTTP/1.1\r\nHost: a\r\n"
    for name, value in headers:
        head += name.encode() + b": " + value + b"\r\n"
    conn.send(head + b"\r\n")
    return conn.read_response()


# ---- 1. X-Forwarded-For that is not UTF-8 ------------------------------------------------------


def test_non_utf8_forwarded_for_is_latin1_like_uvicorn(appbin):
    """The bytes of a proxied client address are passed on by nginx's
    $proxy_add_x_forwarded_for: decoded as latin-1, as uvicorn does; the
    request is served (it was a use-after-free under ASan, a 500 without)."""
    server = appbin()
    with server.connect() as conn:
        resp = _raw_scope(conn, [("X-Forwarded-For", b"\x98")])
        assert _scope_of(resp)["client"] == ["\x98", 0]
        # the connection and the server are fine afterwards
        resp = _raw_scope(conn, [("X-Forwarded-For", b"10.0.0.1, \xff\xfe, 127.0.0.1")])
        assert _scope_of(resp)["client"] == ["\xff\xfe", 0]
        assert conn.request("GET", "/").body == b"hello"
    with server.connect() as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: \x98\r\n\r\n")
        assert conn.read_response().status == 200
    assert "ERROR" not in server.log()
    assert server.stop() == 0


def test_non_utf8_forwarded_for_on_a_websocket_handshake(wsbin):
    server = wsbin(app=WS_APP)
    for _ in range(2):
        ws = RawWS(server.port)
        key = base64.b64encode(os.urandom(16))
        ws.sock.sendall(b"GET /scope HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                        b"Sec-WebSocket-Key: " + key + b"\r\nX-Forwarded-For: \x98\xff\r\n\r\n")
        while b"\r\n\r\n" not in ws.buf:
            ws._fill()
        head, ws.buf = ws.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101 "), head
        _, _, opcode, payload = ws.recv()
        assert opcode == 1
        assert json.loads(payload)["client"] == ["\x98\xff", 0]
        ws.sock.close()
    assert "ERROR" not in server.log()


def test_non_utf8_forwarded_proto_is_ignored(appbin):
    server = appbin()
    with server.connect() as conn:
        scope = _scope_of(_raw_scope(conn, [("X-Forwarded-Proto", b"htt\xe9ps")]))
    assert scope["scheme"] == "http"


def test_forwarded_for_with_ports_and_repeated_headers(appbin):
    """uvicorn's rules: host:port and [v6]:port keep their port, repeated
    X-Forwarded-For headers are one list, the last X-Forwarded-Proto wins."""
    server = appbin("--forwarded-allow-ips", "127.0.0.1")
    with server.connect() as conn:
        scope = _scope_of(_raw_scope(conn, [("X-Forwarded-For", b"203.0.113.7:4321")]))
        assert scope["client"] == ["203.0.113.7", 4321]
        scope = _scope_of(_raw_scope(conn, [("X-Forwarded-For", b"[2001:db8::7]:443")]))
        assert scope["client"] == ["2001:db8::7", 443]
        scope = _scope_of(_raw_scope(conn, [("X-Forwarded-For", b"192.0.2.1"),
                                            ("X-Forwarded-For", b"198.51.100.4, 127.0.0.1"),
                                            ("X-Forwarded-Proto", b"http"),
                                            ("X-Forwarded-Proto", b"https")]))
        assert scope["client"] == ["198.51.100.4", 0]
        assert scope["scheme"] == "https"


# ---- 2. proxy headers on a unix socket ---------------------------------------------------------


def test_proxy_headers_on_a_unix_socket(appbin, tmp_path):
    """nginx in front over a unix socket: with '*' the forwarded client and
    scheme reach the app (the peer of a unix socket has no address to check
    against a list, so only '*' trusts it, as with uvicorn)."""
    path = str(tmp_path / "proxied.sock")
    appbin("--uds", path, "--forwarded-allow-ips", "*")
    with RawConn(uds=path) as conn:
        scope = _scope_of(conn.request("GET", "/scope", headers=[
            ("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")]))
    assert scope["client"] == ["203.0.113.7", 0]
    assert scope["scheme"] == "https"
    # not trusted by the default list: the app sees the unix socket's peer
    other = str(tmp_path / "plain.sock")
    appbin("--uds", other)
    with RawConn(uds=other) as conn:
        scope = _scope_of(conn.request("GET", "/scope", headers=[
            ("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")]))
    assert scope["client"] is None
    assert scope["scheme"] == "http"


# ---- 3. networks in --forwarded-allow-ips ------------------------------------------------------


@pytest.mark.parametrize("allow", ["127.0.0.0/8", "10.0.0.0/8, 127.0.0.1/32", "127.0.0.1",
                                   "::1, 127.0.0.0/24"])
def test_forwarded_allow_ips_takes_networks(appbin, allow):
    server = appbin("--forwarded-allow-ips", allow)
    with server.connect() as conn:
        scope = _scope_of(conn.request("GET", "/scope", headers=[
            ("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")]))
    assert scope["client"] == ["203.0.113.7", 0]
    assert scope["scheme"] == "https"


def test_forwarded_allow_ips_network_that_does_not_match(appbin):
    server = appbin("--forwarded-allow-ips", "10.0.0.0/8, ::1/128")
    with server.connect() as conn:
        scope = _scope_of(conn.request("GET", "/scope", headers=[
            ("X-Forwarded-For", "203.0.113.7")]))
        port = conn.local_port
    assert scope["client"] == ["127.0.0.1", port]


def test_forwarded_allow_ips_networks_in_a_proxy_chain(appbin):
    """The client is the right-most address that no network trusts."""
    server = appbin("--forwarded-allow-ips", "127.0.0.1, 10.0.0.0/8, 2001:db8::/32")
    chain = "192.0.2.1, 198.51.100.9, 2001:db8:1::5, 10.200.3.4"
    with server.connect() as conn:
        scope = _scope_of(conn.request("GET", "/scope", headers=[("X-Forwarded-For", chain)]))
    assert scope["client"] == ["198.51.100.9", 0]


def test_forwarded_allow_ips_ipv6_peer(appbin):
    server = appbin("--host", "::1", "--forwarded-allow-ips", "::/0")
    sock = socket.create_connection(("::1", server.port), timeout=5)
    with RawConn(sock=sock) as conn:
        scope = _scope_of(conn.request("GET", "/scope", headers=[
            ("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")]))
    assert scope["client"] == ["203.0.113.7", 0]
    assert scope["scheme"] == "https"


@pytest.mark.parametrize("value", ["10.0.0.0/33", "10.0.0.1/8", "::1/129", "example.com",
                                   "10.0.0.0/8,,nonsense", "1.2.3.4/", "300.1.2.3"])
def test_forwarded_allow_ips_bad_value_exits_2(appbin, value):
    rc, out = appbin.run("--forwarded-allow-ips", value, "--port", "0", timeout=30)
    assert rc == 2, out
    assert "--forwarded-allow-ips" in out
    assert len(out.strip().splitlines()) == 1, out
    rc, out = appbin.run("--port", "0", env={"APPBIN_FORWARDED_ALLOW_IPS": value}, timeout=30)
    assert rc == 2 and "--forwarded-allow-ips" in out, out

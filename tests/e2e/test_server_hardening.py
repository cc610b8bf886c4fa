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


# ---- 7. RFC 9110/9112 details ------------------------------------------------------------------


def _answer(server, data, chunks=None):
    """Sends data (or the pieces in chunks, one by one) on a new connection;
    returns (first response, the connection)."""
    conn = server.connect(timeout=10)
    for piece in chunks or [data]:
        conn.send(piece)
        if chunks:
            time.sleep(0.05)
    return conn.read_response(), conn


def _refused(server, data, status, chunks=None):
    resp, conn = _answer(server, data, chunks)
    assert resp.status == status, resp
    assert resp.header("connection") == "close"
    assert conn.wait_closed(5)
    conn.close()
    return resp


def test_over_long_request_target_is_414(raw_server):
    long_target = b"/" + b"a" * 20000
    _refused(raw_server, b"GET " + long_target + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414)
    # the same when it arrives in pieces, and with a query
    _refused(raw_server, None, 414, chunks=[b"GET /?q=", b"b" * 9000, b"c" * 9000,
                                            b" HTTP/1.1\r\nHost: a\r\n\r\n"])
    # a target that fits, with headers that do not, is still 431
    _refused(raw_server, b"GET /" + b"a" * 8000 + b" HTTP/1.1\r\nHost: a\r\nX-Big: "
             + b"b" * 9000 + b"\r\n\r\n", 431)


def test_expect_100_continue_is_ignored_on_http10(raw_server):
    """RFC 9110 10.1.1: a server MUST ignore an Expect: 100-continue sent in an
    HTTP/1.0 request (no interim response, the body is read straight away)."""
    conn = raw_server.connect(timeout=10)
    conn.send(b"POST /echo HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello")
    data = conn.read_to_eof()
    assert not re.search(rb"^HTTP/1\.\d 100", data, re.M), data
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\nhello"), data
    # on HTTP/1.1 it still holds the body back until the app reads it
    with raw_server.connect(timeout=10) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        assert conn.read_response(allow_interim=True).status == 100
        conn.send(b"hello")
        assert conn.read_response().body == b"hello"


@pytest.mark.parametrize("framing", [
    b"Content-Length: 5\t",
    b"Content-Length: 5 \t ",
    b"Content-Length:\t5\t",
    b"Transfer-Encoding: chunked\t",
    b"Transfer-Encoding:\tchunked \t",
])
def test_trailing_htab_is_whitespace_after_framing_values(raw_server, framing):
    """OWS (SP or HTAB) around a field value is not part of it (RFC 9110 5.5)."""
    body = b"5\r\nhello\r\n0\r\n\r\n" if b"chunked" in framing else b"hello"
    with raw_server.connect(timeout=10) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: a\r\n" + framing + b"\r\n\r\n" + body)
        assert conn.read_response().body == b"hello"
        assert conn.request("GET", "/").body == b"hello"  # framing was understood


def test_trailing_htab_split_across_reads(raw_server):
    resp, conn = _answer(raw_server, None, chunks=[
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5", b"\t", b"\t", b"\r\n\r\nhel",
        b"lo"])
    assert resp.body == b"hello"
    conn.close()


@pytest.mark.parametrize("line", [
    b"5 ;a=b",            # BWS before the extension
    b"5\t;a=b",
    b"5 \t ;a",
    b"5; a=b",            # BWS after the semicolon
    b"5;a = b",           # and around '='
    b"5;a=\"x\\\"y\"",    # a quoted-pair in a quoted value
    b"5;a=\"x\\\\\";b=\"\"",
    b"5;a=\"\tx y\";c;d=e",
    b"005;name",
])
def test_chunk_extensions_are_accepted_and_ignored(raw_server, line):
    with raw_server.connect(timeout=10) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + line + b"\r\nhello\r\n0 ; last=\"1\"\r\n\r\n")
        assert conn.read_response().body == b"hello"
        assert conn.request("GET", "/").body == b"hello"


def test_chunk_extensions_split_across_reads(raw_server):
    resp, conn = _answer(raw_server, None, chunks=[
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 ", b";a=",
        b"\"x\\", b"\"y\"", b"\r", b"\nhel", b"lo\r\n0", b"\r\n\r\n"])
    assert resp.body == b"hello"
    conn.close()


@pytest.mark.parametrize("line", [
    b"5;a=\"x",          # unterminated quoted string
    b"5;a=\"x\ry\"",      # CR inside
    b"5;a=\"x\\\ry\"",    # a quoted-pair cannot escape CR
    b"5;=b",             # no name
    b"5;a=b c",          # two values
    b"5;a b",
    b"5 ",               # BWS only precedes ';'
    b" 5",
    b"5;a=\x01",
    b"5;" + b"a" * 5000,  # too long
    b"x5;a",
])
def test_bad_chunk_lines_are_still_400(raw_server, line):
    _refused(raw_server, b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
             + line + b"\r\nhello\r\n0\r\n\r\n", 400)


def test_chunk_data_that_looks_like_a_chunk_line_is_data(raw_server):
    """The body bytes are never rewritten: only chunk-size lines are read as
    such (a chunk whose data is '5 ;a=b\\t\\r\\n')."""
    data = b"5 ;a=b\t\r\n"
    with raw_server.connect(timeout=10) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + b"%x\r\n" % len(data) + data + b"\r\n0\r\n\r\n")
        assert conn.read_response().body == data
        conn.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 13\r\n\r\nHTTP/1.2 x\t\r\n")
        assert conn.read_response().body == b"HTTP/1.2 x\t\r\n"


@pytest.mark.parametrize("host", [b"user@a", b"a b", b"a,b", b"a:8x", b"a/b", b"a:80:80",
                                  b"[::1", b"::1", b"a\"b", b"a?b", b"a#b", b"a%zz", b"[v1]x",
                                  b"a:99999999999"])
def test_invalid_host_is_400(raw_server, host):
    _refused(raw_server, b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n", 400)
    assert "/never" not in raw_server.get("/seen").json()


@pytest.mark.parametrize("host", [b"a", b"a:80", b"a:", b"127.0.0.1:8000", b"[::1]:8000",
                                  b"[::1]", b"xn--bcher-kva.example", b"a-b.c_d~e", b"a%41",
                                  b"[v7.x:y]", b"", b"EXAMPLE.com"])
def test_valid_host_is_served(raw_server, host):
    with raw_server.connect() as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        assert conn.read_response().status == 200


@pytest.mark.parametrize("version", [b"1.2", b"1.9"])
def test_higher_http1_minor_version_is_processed_as_1_1(raw_server, version):
    """RFC 9110 2.5: a 1.x request with x > 1 is answered as HTTP/1.1."""
    with raw_server.connect(timeout=10) as conn:
        conn.send(b"GET /scope HTTP/" + version + b"\r\nHost: a\r\n\r\n")
        resp = conn.read_response()
        assert resp.version == "HTTP/1.1" and resp.status == 200
        assert json.loads(resp.body)["http_version"] == "1.1"
        # a keep-alive connection, as for 1.1; in pieces too
        for piece in (b"GET / HTTP/1.", version[-1:], b"\r\nHost: a\r\n\r\n"):
            conn.send(piece)
            time.sleep(0.05)
        assert conn.read_response().body == b"hello"


@pytest.mark.parametrize("version", [b"2.0", b"0.9", b"1.10", b"3.1", b"1.x"])
def test_other_versions_are_still_refused(raw_server, version):
    resp, conn = _answer(raw_server, b"GET / HTTP/" + version + b"\r\nHost: a\r\n\r\n")
    assert resp.status in (400, 505), resp
    conn.close()


@pytest.mark.parametrize("codings", [
    [b"gzip, chunked"], [b"gzip", b"chunked"], [b"deflate ,chunked"], [b"x-custom, chunked"],
])
def test_unknown_transfer_coding_is_501(raw_server, codings):
    head = b"".join(b"Transfer-Encoding: " + c + b"\r\n" for c in codings)
    _refused(raw_server, b"POST /echo HTTP/1.1\r\nHost: a\r\n" + head + b"\r\n"
             b"5\r\nhello\r\n0\r\n\r\n", 501)


@pytest.mark.parametrize("codings", [b"chunked, chunked", b"gzip", b"chunked, gzip",
                                     b"chunked;x=1"])
def test_transfer_codings_that_break_framing_are_still_400(raw_server, codings):
    _refused(raw_server, b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: " + codings
             + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400)


# ---- 8. error messages -------------------------------------------------------------------------


def test_uds_in_a_missing_directory_says_so(appbin, tmp_path):
    for workers in ("1", "2"):
        rc, out = appbin.run("--uds", tmp_path / "missing" / "app.sock", "--workers", workers,
                             timeout=60)
        assert rc == 1, out
        assert re.search(r"no such file or directory", out, re.I), out
        assert "permission denied" not in out.lower()
        assert "Traceback" not in out


def _with_nofile(limit):
    import resource

    def set_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    return set_limit


def _run_limited(server_app_bin, limit, *args, timeout=60):
    result = subprocess.run([str(server_app_bin), "--port", "0", *args],
                            stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                            preexec_fn=_with_nofile(limit))
    return result.returncode, (result.stdout + result.stderr).decode("utf-8", "replace")


@pytest.mark.parametrize("limit", [12, 16, 24])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_too_few_file_descriptors_is_one_line(server_app_bin, limit, workers):
    rc, out = _run_limited(server_app_bin, limit, "--workers", workers)
    assert rc == 1, out
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert "RLIMIT_NOFILE" in lines[0] and str(limit) in lines[0], out
    assert "Traceback" not in out and "lifespan" not in out


def test_running_out_of_file_descriptors_while_serving(appbin, server_app_bin, tmp_path):
    """Past the start-up check, running out of descriptors for connections is
    logged (a few times, naming the limit), never crashes, and serving
    resumes."""
    log_path = tmp_path / "emfile.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(server_app_bin), "--port", "0"], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=_with_nofile(64))
    try:
        deadline = time.monotonic() + 30
        while not re.search(r"running on http://127\.0\.0\.1:(\d+)", log_path.read_text()):
            assert time.monotonic() < deadline and proc.poll() is None, log_path.read_text()
            time.sleep(0.05)
        port = int(re.search(r"running on http://127\.0\.0\.1:(\d+)",
                             log_path.read_text()).group(1))
        conns = []
        for _ in range(90):
            try:
                conns.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                break
        time.sleep(1.5)
        for c in conns:
            c.close()
        time.sleep(0.5)
        with RawConn(port, timeout=10) as conn:
            assert conn.request("GET", "/").body == b"hello"
        log = log_path.read_text()
        assert proc.poll() is None, log
        warnings = re.findall(r"^WARNING: .*open-file limit.*", log, re.M)
        assert warnings and len(warnings) <= 3, log
        assert "RLIMIT_NOFILE 64" in warnings[0], log
    finally:
        proc.terminate()
        proc.wait(15)


def test_response_start_twice_gets_a_500(raw_server):
    start = len(raw_server.log())
    with raw_server.connect() as conn:
        resp = conn.request("GET", "/start-twice")
        assert resp.status == 500 and resp.body == b"Internal Server Error", resp
        assert conn.wait_closed(5)
    raw_server.wait_log(r"Expected ASGI message 'http.response.body'", start=start)
    raw_server.wait_log(r'"GET /start-twice HTTP/1.1" 500', start=start)
    assert " 200" not in raw_server.log()[start:].split("/start-twice")[1].split("\n")[0]


# ---- 4, 5, 6. the supervisor (--workers) -------------------------------------------------------


def _workers(appbin, *args, n=2, env=None, session=False, ready=True):
    """app.bin --workers n on a fixed port; waits until n workers serve."""
    port = free_port()
    server = appbin("--workers", str(n), "--port", port, *args, ready=False, env=env,
                    session=session)
    server.port = port
    if ready:
        _wait_count(server, "Application startup complete.", n)
    return server


def _wait_count(server, text, n, timeout=30):
    deadline = time.monotonic() + timeout
    while server.log().count(text) < n:
        assert time.monotonic() < deadline, f"{text!r} x{n}:\n{server.log()[-4000:]}"
        assert server.proc.poll() is None, server.log()[-4000:]
        time.sleep(0.05)


def _in_flight(server, tag, seconds):
    conn = RawConn(server.port, timeout=30)
    conn.send(build_request("GET", f"/slow?s={seconds}&tag={tag}"))
    server.wait_log(f"APP: slow request started {tag}")
    return conn


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_group_signal_drains_workers(appbin, sig):
    """systemd's KillMode=control-group, Ctrl-C in a terminal, docker stop of a
    shell-wrapped entrypoint: the signal reaches the supervisor and every
    worker. The in-flight request still finishes."""
    server = _workers(appbin, session=True)
    try:
        conn = _in_flight(server, "grp", 2)
        os.killpg(server.pid, sig)
        resp = conn.read_response()
        assert resp.status == 200 and resp.body == b"slow done grp"
        assert server.wait_exit(30) == 0
        assert "graceful shutdown timeout" not in server.log()
        assert server.log().count("Application shutdown complete.") == 2
    finally:
        server.kill_group()


def test_repeated_sigterm_still_drains(appbin):
    """A wrapper or process manager repeating SIGTERM does not cut requests
    short (SIGKILL after its own grace period is how they insist)."""
    server = _workers(appbin)
    try:
        conn = _in_flight(server, "twice", 2)
        server.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        server.send_signal(signal.SIGTERM)
        assert conn.read_response().body == b"slow done twice"
        assert server.wait_exit(30) == 0
    finally:
        server.kill_group()


def test_second_ctrl_c_stops_workers_at_once(appbin):
    """A deliberate second Ctrl-C (SIGINT to the group again) does not wait."""
    server = _workers(appbin, session=True)
    try:
        conn = _in_flight(server, "again", 60)
        start = time.monotonic()
        os.killpg(server.pid, signal.SIGINT)
        _wait_count(server, "Shutting down", 2)
        os.killpg(server.pid, signal.SIGINT)
        assert conn.wait_closed(10)
        assert b"slow done" not in conn.buf
        server.wait_exit(15)
        assert time.monotonic() - start < 12
    finally:
        server.kill_group()


# Under ASan a SIGSEGV is the sanitizer's report and exit 1: let it kill.
NATIVE_SEGV = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":handle_segv=0"}


@pytest.mark.parametrize("factory", ["segfault", "exit0"])
def test_workers_failing_at_start_up_back_off_then_stop(appbin, factory):
    start = time.monotonic()
    rc, out = appbin.run("--workers", "2", "--port", free_port(), "--factory", "--app",
                         f"appbin_serverapps.startup:{factory}", timeout=60, env=NATIVE_SEGV)
    elapsed = time.monotonic() - start
    assert rc != 0, out
    assert re.search(r"ERROR: +Worker \[\d+\] failed to start \((killed by SIGSEGV|exit 0)\), "
                     r"5 start-up failures in a row; stopping", out), out
    assert "restarting in 0.5 s" in out and "restarting in 1.0 s" in out, out
    assert out.count("Started worker process") <= 8, out
    assert elapsed > 1.5, (elapsed, out)  # backed off, not ~15 restarts a second


def test_a_worker_crashing_at_start_up_recovers_after_back_off(appbin, tmp_path):
    counter = tmp_path / "crashes"
    server = _workers(appbin, "--factory", "--app", "appbin_serverapps.startup:crash_first",
                      n=2, env={"APPBIN_TEST_CRASH_FILE": str(counter),
                                "APPBIN_TEST_CRASHES": "3", **NATIVE_SEGV})
    try:
        log = server.log()
        assert log.count("APP: crash") == 3
        assert re.search(r"failed to start \(killed by SIGSEGV\); restarting in 0\.5 s", log), log
        with RawConn(server.port, timeout=10) as conn:
            assert conn.request("GET", "/").body == b"hello"
        assert server.stop() == 0
    finally:
        server.kill_group()


@pytest.mark.parametrize("wait_for", ["slow start", "Started worker process"])
def test_sigterm_while_workers_start_serves_queued_connections(appbin, wait_for):
    """Connections queue on the supervisor's socket while workers start; a
    SIGTERM then (during the app's import, or before Python even runs) lets
    the workers start, serve what queued, and drain."""
    env = {"APPBIN_TEST_STARTUP_SLEEP": "2"}
    args = ["--factory", "--app", "appbin_serverapps.startup:slow"]
    server = _workers(appbin, *args, env=env, ready=False)
    try:
        _wait_count(server, wait_for, 2)
        conns = []
        for i in range(4):
            conn = RawConn(server.port, timeout=30)
            conn.send(build_request("GET", f"/?queued={i}"))
            conns.append(conn)
        server.send_signal(signal.SIGTERM)
        for conn in conns:
            resp = conn.read_response()
            assert resp.status == 200 and resp.body == b"hello", resp
        assert server.wait_exit(30) == 0, server.log()
        assert "killed by SIGTERM" not in server.log()
    finally:
        server.kill_group()


def _limits_logged(log):
    return [int(n) for n in re.findall(r"Maximum request limit of (\d+) exceeded", log)]


def test_limit_max_requests_jitter(appbin):
    server = _workers(appbin, "--limit-max-requests", "2", "--limit-max-requests-jitter", "40")
    try:
        deadline = time.monotonic() + 60
        while len(_limits_logged(server.log())) < 4:
            assert time.monotonic() < deadline, server.log()[-3000:]
            try:
                with RawConn(server.port, timeout=5) as conn:
                    conn.request("GET", "/", headers=[("Connection", "close")])
            except (OSError, EOFError):
                time.sleep(0.05)
        limits = _limits_logged(server.log())
        assert all(2 <= n <= 42 for n in limits), limits
        assert len(set(limits)) > 1, limits
    finally:
        server.kill_group()


def test_limit_max_requests_jitter_single_process(appbin):
    server = appbin("--limit-max-requests", "3", "--limit-max-requests-jitter", "5")
    served = 0
    while served < 20:
        try:
            with server.connect() as conn:
                conn.request("GET", "/")
            served += 1
        except (OSError, EOFError):
            break
    assert server.wait_exit(15) == 0
    assert 3 <= served <= 8
    assert _limits_logged(server.log()) == [served]


def test_without_jitter_the_limit_is_exact(appbin):
    server = appbin("--limit-max-requests", "3")
    for _ in range(3):
        with server.connect() as conn:
            conn.request("GET", "/")
    assert server.wait_exit(15) == 0
    assert _limits_logged(server.log()) == [3]


def test_blocked_worker_is_reported_and_replaced(appbin):
    server = _workers(appbin, "--timeout-worker-healthcheck", "1.5")
    try:
        blocker = RawConn(server.port, timeout=30)
        blocker.send(build_request("GET", "/pid?block=20"))
        victim = int(server.wait_log(r"APP: pid (\d+) blocking").group(1))
        match = server.wait_log(r"ERROR: +Worker \[(\d+)\] failed its healthcheck: its event loop "
                                r"has been blocked for [\d.]+ s", timeout=10)
        assert int(match.group(1)) == victim
        # its Python stacks (faulthandler), naming the blocking call in the app
        server.wait_log(r'File ".*raw\.py", line \d+ in pid', timeout=5)
        assert blocker.wait_closed(10)
        deadline = time.monotonic() + 20
        while pid_alive(victim) or len(children_of(server.pid)) != 2:
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.1)
        _wait_count(server, "Application startup complete.", 3)
        pids = set()
        for _ in range(10):
            with RawConn(server.port, timeout=10) as conn:
                pids.add(int(conn.request("GET", "/pid").body))
        assert victim not in pids
        assert server.stop() == 0
    finally:
        server.kill_group()


def test_a_worker_busy_for_less_than_the_limit_is_left_alone(appbin):
    server = _workers(appbin, "--timeout-worker-healthcheck", "4")
    try:
        with RawConn(server.port, timeout=30) as conn:
            assert conn.request("GET", "/pid?block=1").status == 200
        time.sleep(1)
        assert "healthcheck" not in server.log()
        assert server.stop() == 0
    finally:
        server.kill_group()


@pytest.mark.parametrize("args, flag", [
    (["--limit-max-requests-jitter", "-1"], "--limit-max-requests-jitter"),
    (["--limit-max-requests-jitter", "x"], "--limit-max-requests-jitter"),
    (["--timeout-worker-healthcheck", "-2"], "--timeout-worker-healthcheck"),
    (["--timeout-worker-healthcheck", "soon"], "--timeout-worker-healthcheck"),
])
def test_supervisor_flags_bad_values_exit_2(appbin, args, flag):
    rc, out = appbin.run(*args, "--port", "0", timeout=30)
    assert rc == 2 and flag in out, out


# ---- review: the prescan in front of llhttp ----------------------------------------------------

CHUNKED_HEAD = b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("line", [
    b"0" * 4200 + b"5",               # leading zeros
    b"0" * 16000 + b"5",              # as much as fits in the read buffer with the head
    b"5;" + b"a" * 4200,              # an extension
    b"5;a=\"" + b"b" * 16000 + b"\"",
    b"5" + b" " * 4200 + b";a",
], ids=["zeros-4k", "zeros-16k", "ext-4k", "quoted-16k", "bws-4k"])
@pytest.mark.parametrize("pieces", [1, 17])
def test_over_long_chunk_size_line_is_400_however_it_arrives(raw_server, line, pieces):
    """A chunk-size line (size and extensions) longer than 4 KiB + 32 is
    refused, whether its CRLF arrives with it or later: the answer depends on
    the bytes, not on how TCP cut them (it was 200 in one piece, 400 in
    several)."""
    data = CHUNKED_HEAD + line + b"\r\nhello\r\n0\r\n\r\n"
    step = len(data) // pieces + 1
    _refused(raw_server, None, 400, chunks=[data[i:i + step] for i in range(0, len(data), step)])


def test_leading_zeros_in_a_chunk_size_are_fine_below_the_limit(raw_server):
    with raw_server.connect(timeout=10) as conn:
        conn.send(CHUNKED_HEAD + b"0" * 4000 + b"5\r\nhello\r\n" + b"0" * 4000 + b"\r\n\r\n")
        assert conn.read_response().body == b"hello"
        assert conn.request("GET", "/").body == b"hello"


@pytest.mark.parametrize("line", [b"0" * 16383, b"5;" + b"a" * 16381], ids=["zeros", "ext"])
def test_chunk_size_line_filling_the_read_buffer_is_400_not_a_hang(raw_server, line):
    """The head first, then a chunk-size line whose CR is the read buffer's
    (16 KiB) last byte: the prescan waited for the LF with a full buffer that
    it never read again (the connection hung until the client gave up)."""
    conn = raw_server.connect(timeout=10)
    conn.send(CHUNKED_HEAD)
    time.sleep(0.2)
    conn.send(line + b"\r")
    time.sleep(0.2)
    try:
        conn.send(b"\nhello\r\n0\r\n\r\n")
    except OSError:
        pass  # already refused and closed
    resp = conn.read_response()
    assert resp.status == 400, resp
    assert conn.wait_closed(5)
    conn.close()


# ---- review: lone LF line endings (RFC 9112 2.2) ----------------------------------------------

LONE_LF = [
    b"GET / HTTP/1.1\nHost: a\n\n",                  # all LF
    b"GET / HTTP/1.1\nHost: a\r\n\r\n",              # after the request line (llhttp: 200)
    b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",      # after a field line
    b"GET / HTTP/1.1\r\nHost: a\r\n\n",              # the blank line (llhttp: 200)
    b"GET / HTTP/1.1\r\nHost: a\n\r\n",
    b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",          # an empty line before the request
    b"POST /echo HTTP/1.1\r\nHost: a\r\nX: b\t\r\nContent-Length: 6\r\n\nx\t\r\nyz",
    CHUNKED_HEAD + b"5\r\nhello\r\n0\r\n\n",         # the end of the trailer section
    CHUNKED_HEAD + b"5\r\nhello\r\n0\r\nX: a\r\n\n",
    CHUNKED_HEAD + b"5\r\nhello\r\n0\r\nX: a\nY: b\r\n\r\n",
    CHUNKED_HEAD + b"5\nhello\r\n0\r\n\r\n",         # a chunk-size line
]


@pytest.mark.parametrize("case", range(len(LONE_LF)))
def test_lone_lf_in_a_head_is_400(raw_server, case):
    """RFC 9112 2.2 lets a recipient accept a lone LF as a line terminator;
    app.bin does not, anywhere in a head, a chunk-size line or trailers.
    llhttp accepted some shapes (after the request line, as the blank line,
    in trailers) and not others, and the prescan that finds the end of a
    head did not know them: with "\\r\\n\\n" ending a head it went on into
    the body and rewrote its HTAB (the app got "x \\r\\nyz")."""
    never = "/never-lf-%d" % case
    _refused(raw_server, LONE_LF[case] + b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % never.encode(),
             400)
    assert never not in raw_server.get("/seen").json()


def _echo(body):
    return (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body)) + body


def test_crlf_and_lone_lf_heads_pipelined(raw_server):
    """Pipelined, with bodies holding what looks like line ends, HTAB and
    heads: CRLF requests are served with their bodies untouched; the first
    lone-LF head gets 400 and nothing after it is read as a request."""
    bodies = [b"a\n\nb\t\r\n", b"GET /never-pipe HTTP/1.1\n\n", b"x\t\r\n\r\n\t"]
    lf_head = b"POST /echo HTTP/1.1\nHost: a\nContent-Length: 5\n\nhello"
    with raw_server.connect(timeout=10) as conn:
        conn.send(b"".join(_echo(b) for b in bodies) + lf_head + _echo(b"after"))
        for body in bodies:
            resp = conn.read_response()
            assert resp.status == 200 and resp.body == body, resp
        resp = conn.read_response()
        assert resp.status == 400 and resp.header("connection") == "close", resp
        assert conn.wait_closed(5)
        assert conn.buf == b""
    with raw_server.connect(timeout=10) as conn:  # a lone-LF head first
        conn.send(lf_head + _echo(b"after"))
        assert conn.read_response().status == 400
        assert conn.wait_closed(5) and conn.buf == b""
    with raw_server.connect(timeout=10) as conn:  # the same split across reads
        for piece in (_echo(bodies[0])[:-3], _echo(bodies[0])[-3:] + lf_head[:20], lf_head[20:]):
            conn.send(piece)
            time.sleep(0.05)
        assert conn.read_response().body == bodies[0]
        assert conn.read_response().status == 400
    assert "/never-pipe" not in raw_server.get("/seen").json()


# ---- review: a supervisor killed with SIGKILL ---------------------------------------------------


def _port_free(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        s.listen()
        return True
    except OSError:
        return False
    finally:
        s.close()


def _wait_gone(pids, port, timeout):
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids) or not _port_free(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_workers_exit_when_the_supervisor_is_killed(appbin):
    """kill -9 of the supervisor (the OOM killer, a careless operator): its
    workers used to serve on for ever, holding the port, with nobody to
    replace or stop them. Each gets SIGTERM from the kernel
    (PR_SET_PDEATHSIG) and drains like on any SIGTERM: the in-flight request
    finishes, then the workers exit and the port is free."""
    server = _workers(appbin, session=True)
    try:
        workers = children_of(server.pid)
        assert len(workers) == 2, workers
        conn = _in_flight(server, "orphan", 1)
        os.kill(server.pid, signal.SIGKILL)
        server.proc.wait(10)
        assert conn.read_response().body == b"slow done orphan"
        assert _wait_gone(workers, server.port, 10), (
            [p for p in workers if pid_alive(p)], server.log()[-3000:])
        assert server.log().count("Application shutdown complete.") == 2, server.log()[-3000:]
    finally:
        _kill_orphans(server)


def _kill_orphans(server):
    try:  # the workers are no longer the supervisor's children: their group
        os.killpg(server.pid, signal.SIGKILL)
    except OSError:
        pass
    server.kill_group()


def test_workers_still_starting_exit_when_the_supervisor_is_killed(appbin):
    """The supervisor killed while its workers import the app: they finish
    starting, then stop (the signal waits, blocked, until the runtime can
    drain)."""
    server = _workers(appbin, session=True, ready=False)
    try:
        _wait_count(server, "Started worker process", 2)
        workers = children_of(server.pid)
        os.kill(server.pid, signal.SIGKILL)
        server.proc.wait(10)
        assert _wait_gone(workers, server.port, 30), (
            [p for p in workers if pid_alive(p)], server.log()[-3000:])
    finally:
        _kill_orphans(server)

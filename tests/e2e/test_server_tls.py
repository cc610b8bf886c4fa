"""End-to-end tests of HTTPS (--ssl-certfile and the other --ssl-* options,
host/http_tls.c): real clients (httpx, curl, Python's ssl module) against
app.bin serving TLS, with the session's certificates (server_fixtures.py,
`certs`)."""

import hashlib
import json
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import time

import httpx
import pytest

from server_fixtures import CHUNK, FILE_DATA, RAW_APP, TLS_KEY_PASSWORD, RawConn, free_port

def tls_args(certs, key="server.key"):
    return ["--ssl-certfile", certs / "server.pem", "--ssl-keyfile", certs / key]


def client(server, certs, **kwargs):
    return httpx.Client(base_url=f"https://127.0.0.1:{server.port}",
                        verify=ssl.create_default_context(cafile=str(certs / "ca.pem")),
                        timeout=15, **kwargs)


def tls_socket(server, certs, alpn=None, cert=None):
    """A TLS socket to the server; EOF without close_notify raises."""
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if cert:
        ctx.load_cert_chain(certs / f"{cert}.pem", certs / f"{cert}.key")
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False)


def tls_conn(server, certs, cert=None):
    """The server_fixtures RawConn (send, read_response...) over TLS."""
    return RawConn(sock=tls_socket(server, certs, cert=cert), timeout=15)


def test_https_scope_keep_alive_and_large_bodies(appbin, certs, tmp_path):
    server = appbin(*tls_args(certs), app=RAW_APP)
    assert server.where.startswith("https://127.0.0.1:")
    body = bytes(range(256)) * (3 * 4096 + 1)  # 3 MB and a bit
    path = tmp_path / "file.bin"
    path.write_bytes(FILE_DATA)
    with client(server, certs) as c:
        scope = c.get("/scope").json()
        assert scope["scheme"] == "https"
        echo = c.post("/echo", content=body)
        assert echo.status_code == 200
        assert echo.headers["x-body-sha256"] == hashlib.sha256(body).hexdigest()
        assert echo.content == body
        big = c.get("/big", params={"bytes": 5 * len(CHUNK) * 16 + 3})
        assert big.content == (CHUNK * 81)[:5 * len(CHUNK) * 16 + 3]
        # http.response.pathsend: sendfile(2) cannot encrypt; pread + TLS
        sent = c.get("/pathsend", params={"path": str(path)})
        assert sent.content == FILE_DATA
    ports = set(re.findall(r'^INFO:     127\.0\.0\.1:(\d+) - "', server.log(), re.M))
    assert len(ports) == 1, server.log()  # every request on one TLS connection


def test_request_bodies_in_pieces_arrive_whole(appbin, certs):
    """3 MB bodies written in pieces of 1 byte to 300 KB: decrypted input
    waiting in TLS is parsed as soon as the app takes what was buffered,
    and the end of the body must not overtake the bytes before it (the
    app's last message held them all: found by this test)."""
    server = appbin(*tls_args(certs), app=RAW_APP)
    rng = random.Random(5)
    body = bytes(range(256)) * (3 * 4096 + 1)
    with tls_conn(server, certs) as conn:
        for _ in range(8):
            conn.send(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body))
            pos = 0
            while pos < len(body):
                n = rng.choice([1, 100, 1500, 16384, 65536, 300000])
                conn.send(body[pos:pos + n])
                pos += n
            r = conn.read_response()
            assert conn.buf == b""
            assert (r.status, r.header("x-body-length")) == (200, str(len(body)))
            assert r.body == body


@pytest.mark.parametrize("extra", [20000, 40000, 60000])
def test_a_body_ending_in_what_tls_holds_arrives_whole(appbin, certs, extra):
    """The same bug, every time: the app waits, the server buffers 256 KiB of
    body and pauses with the rest already read into TLS; the app's first
    receive resumes the parse, which reaches the body's end at once."""
    server = appbin(*tls_args(certs), app=RAW_APP)
    body = os.urandom(256 * 1024 + extra)
    with tls_conn(server, certs) as conn:
        r = conn.request("POST", "/upload?wait=0.3", body=body)
    assert r.status == 200
    assert json.loads(r.body)["size"] == len(body)
    assert json.loads(r.body)["sha256"] == hashlib.sha256(body).hexdigest()


def test_curl_and_close_notify(appbin, certs):
    server = appbin(*tls_args(certs), app=RAW_APP)
    url = f"https://127.0.0.1:{server.port}/scope"
    out = subprocess.run(["curl", "-sS", "--cacert", certs / "ca.pem", "--http1.1", url, url,
                          "-H", "connection: close", "-w", "\n%{http_code} %{ssl_verify_result}"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count('"scheme": "https"') == 2 and out.stdout.endswith("200 0")
    # the server's close_notify ends a connection it closes: the client reads EOF cleanly
    with tls_conn(server, certs) as conn:
        conn.send(b"GET /scope HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        r = conn.read_response()
        assert r.status == 200 and r.header("connection") == "close"
        assert conn.buf == b"" and conn.sock.recv(100) == b""  # SSLEOFError without close_notify


def test_pipelined_requests_beyond_the_read_buffer(appbin, certs):
    """300 requests (about 30 KB) in one TLS write: more plaintext than the
    16 KiB read buffer holds, decrypted as the buffer empties."""
    server = appbin(*tls_args(certs), app=RAW_APP)
    n = 300
    request = b"GET /scope?n=%d HTTP/1.1\r\nhost: x\r\nx-pad: " + b"p" * 60 + b"\r\n\r\n"
    with tls_conn(server, certs) as conn:
        conn.send(b"".join(request % i for i in range(n)))
        responses = [conn.read_response() for _ in range(n)]
    assert [(r.status, json.loads(r.body)["query_string"]) for r in responses] == [
        (200, f"n={i}") for i in range(n)]


def test_handshake_fed_one_byte_at_a_time(appbin, certs):
    server = appbin(*tls_args(certs), app=RAW_APP)
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def pump():
            data = outgoing.read()
            for i in range(len(data)):
                sock.sendall(data[i:i + 1])
                time.sleep(0.0005)

        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pump()
                incoming.write(sock.recv(65536))
        tls.write(b"GET /scope HTTP/1.1\r\nhost: x\r\n\r\n")
        pump()
        got = b""
        while b'"scheme"' not in got:
            incoming.write(sock.recv(65536))
            try:
                got += tls.read(65536)
            except ssl.SSLWantReadError:
                pass
    assert got.startswith(b"HTTP/1.1 200 ")


def test_plain_http_and_garbage_on_the_tls_port(appbin, certs):
    server = appbin(*tls_args(certs), app=RAW_APP)
    with RawConn(server.port, timeout=10) as conn:
        r = conn.request()
    assert r.status == 400 and b"HTTPS" in r.body and r.header("connection") == "close"
    server.wait_log(r"WARNING:  Plain HTTP request on the HTTPS port: answered 400")
    for junk in (b"\x16\x03\x01\x00\x05hello", b"\x00" * 64, b"\x16\x03\x01\xff\xff" + b"x" * 300):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            while s.recv(4096):  # an alert, maybe; then the server closes
                pass
    with client(server, certs) as c:
        assert c.get("/scope").json()["scheme"] == "https"
    assert server.proc.poll() is None


def test_alpn_offers_http11_only(appbin, certs):
    server = appbin(*tls_args(certs), app=RAW_APP)
    with tls_socket(server, certs, alpn=["h2", "http/1.1"]) as s:
        assert s.selected_alpn_protocol() == "http/1.1"
    with pytest.raises(ssl.SSLError, match="NO_APPLICATION_PROTOCOL|no application protocol"):
        tls_socket(server, certs, alpn=["h2"]).close()


def test_silent_client_is_closed_by_the_keep_alive_timeout(appbin, certs):
    server = appbin(*tls_args(certs), "--timeout-keep-alive", "1", app=RAW_APP)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        started = time.monotonic()
        assert s.recv(100) == b""
        assert time.monotonic() - started < 5


def test_encrypted_key_and_key_in_the_certificate_file(appbin, certs):
    for args in (["--ssl-certfile", certs / "server.pem", "--ssl-keyfile",
                  certs / "server-encrypted.key", "--ssl-keyfile-password", TLS_KEY_PASSWORD],
                 ["--ssl-certfile", certs / "server-and-key.pem"]):
        server = appbin(*args, app=RAW_APP)
        with client(server, certs) as c:
            assert c.get("/scope").json()["scheme"] == "https"
        server.stop()


def test_client_certificates(appbin, certs):
    server = appbin(*tls_args(certs), "--ssl-ca-certs", certs / "ca.pem", "--ssl-cert-reqs", "2",
                    app=RAW_APP)
    with tls_conn(server, certs, cert="client") as conn:
        assert conn.request(path="/scope").status == 200
    # without a certificate: refused in the handshake (TLS 1.3: at the first read)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with tls_socket(server, certs) as s:
            s.sendall(b"GET /scope HTTP/1.1\r\nhost: x\r\n\r\n")
            assert s.recv(100) == b""
    optional = appbin(*tls_args(certs), "--ssl-ca-certs", certs / "ca.pem", "--ssl-cert-reqs",
                      "1", app=RAW_APP)
    with client(optional, certs) as c:
        assert c.get("/scope").status_code == 200


def test_workers_serve_tls(appbin, certs):
    server = appbin(*tls_args(certs), "--workers", "2", "--port", free_port(), app=RAW_APP)
    assert server.where.startswith("https://")
    server.wait_log(r"Application startup complete(.|\n)*Application startup complete")
    pids = set()
    deadline = time.monotonic() + 20
    while len(pids) < 2 and time.monotonic() < deadline:
        with client(server, certs) as c:  # a new connection each: either worker may take it
            pids.add(c.get("/pid").text)
    assert len(pids) == 2


@pytest.mark.parametrize("args, message", [
    (["--ssl-certfile", "/nonexistent/cert.pem"],
     "--ssl-certfile /nonexistent/cert.pem: cannot load the certificate chain"),
    (["--ssl-certfile", "{d}/server.pem", "--ssl-keyfile", "{d}/client.key"],
     "--ssl-keyfile {d}/client.key: the private key does not match the certificate"),
    (["--ssl-certfile", "{d}/server.pem", "--ssl-keyfile", "{d}/server-encrypted.key",
      "--ssl-keyfile-password", "wrong"],
     "--ssl-keyfile {d}/server-encrypted.key: cannot load the private key (wrong "
     "--ssl-keyfile-password?)"),
    (["--ssl-certfile", "{d}/server.pem", "--ssl-keyfile", "{d}/server-encrypted.key"],
     "--ssl-keyfile {d}/server-encrypted.key: the private key is encrypted: give "
     "--ssl-keyfile-password"),
    (["--ssl-certfile", "{d}/server.pem", "--ssl-keyfile", "{d}/server.key",
      "--ssl-cert-reqs", "2"], "--ssl-cert-reqs 2: needs --ssl-ca-certs"),
    (["--ssl-certfile", "{d}/server.pem", "--ssl-keyfile", "{d}/server.key",
      "--ssl-ciphers", "NO-SUCH-CIPHER"], "--ssl-ciphers NO-SUCH-CIPHER: no usable cipher"),
])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_bad_tls_options_are_one_line_and_exit_1(appbin, certs, args, message, workers):
    args = [a.format(d=certs) for a in args]
    code, out = appbin.run(*args, "--workers", workers, "--port", "0", "--app", RAW_APP)
    assert code == 1, out
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("app.bin: error: " + message.format(d=certs)), out


def test_tls_options_without_a_certificate_are_usage_errors(appbin, certs):
    code, out = appbin.run("--ssl-keyfile", certs / "server.key", "--port", "0")
    assert code == 2 and out.strip() == "app.bin: error: option --ssl-keyfile needs --ssl-certfile"


def test_healthcheck_speaks_tls_with_the_servers_options(appbin, certs):
    server = appbin(*tls_args(certs), app=RAW_APP)
    env = {"APPBIN_SSL_CERTFILE": str(certs / "server.pem"),
           "APPBIN_SSL_KEYFILE": str(certs / "server.key")}
    code, out = appbin.run("healthcheck", "--port", server.port, "--health-path", "/scope",
                           env=env)
    assert code == 0, out
    code, out = appbin.run("healthcheck", "--port", server.port, "--health-path", "/scope")
    assert code == 1 and out.strip() == "healthcheck: /scope answered 400", out


def test_nothing_is_read_after_the_clients_close_notify(appbin, certs):
    """A close_notify ends the client's side as a FIN does: with a request
    still waiting behind a slow one, the connection closes, and records sent
    after it are not buffered (they used to be, without bound)."""
    server = appbin(*tls_args(certs), app=RAW_APP)
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    rss = server.rss_kb()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536))
        tls.write(b"GET /slow?s=1 HTTP/1.1\r\nhost: x\r\n\r\nGET /scope HTTP/1.1\r\nhost: x\r\n\r\n")
        try:
            tls.unwrap()  # close_notify
        except ssl.SSLWantReadError:
            pass
        sock.sendall(outgoing.read())
        junk = b"\x17\x03\x03\x40\x00" + os.urandom(16384)  # application-data records
        sent = 0
        try:
            while sent < 200 * 1024 * 1024:
                sock.sendall(junk)
                sent += len(junk)
        except OSError:
            pass  # the server closed: what it had not read was reset
    assert server.rss_kb() - rss < 50 * 1024
    with client(server, certs) as c:
        assert c.get("/scope").status_code == 200


def test_memory_after_large_responses_goes_back(appbin, certs, appbin_host):
    """Keep-alive connections that each echoed 16 MB keep no buffer of that
    size: encryption goes through OpenSSL a slice at a time and its buffers
    are renewed once large and empty."""
    if b"__asan_init" in appbin_host.read_bytes():
        pytest.skip("a sanitizer build keeps freed memory in quarantine")
    server = appbin(*tls_args(certs), app=RAW_APP)
    body = os.urandom(16 * 1024 * 1024)
    clients = [client(server, certs) for _ in range(4)]
    try:
        clients[0].post("/echo", content=b"warm")
        rss = server.rss_kb()
        for c in clients:
            assert c.post("/echo", content=body).content == body
        time.sleep(0.5)
        assert server.rss_kb() - rss < 40 * 1024, (rss, server.rss_kb())
    finally:
        for c in clients:
            c.close()


def test_expect_100_continue(appbin, certs):
    server = appbin(*tls_args(certs), app=RAW_APP)
    with tls_conn(server, certs) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n"
                  b"expect: 100-continue\r\n\r\n")
        assert conn.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.send(b"hello")
        r = conn.read_response()
        assert (r.status, r.body) == (200, b"hello")


def test_sigterm_drains_a_tls_request_in_flight(appbin, certs):
    server = appbin(*tls_args(certs), app=RAW_APP)
    with tls_conn(server, certs) as conn:
        conn.send(b"GET /slow?s=1 HTTP/1.1\r\nhost: x\r\n\r\n")
        time.sleep(0.3)
        server.send_signal(signal.SIGTERM)
        r = conn.read_response()
        assert r.status == 200 and r.header("connection") == "close"
    assert server.wait_exit() == 0


def test_tls_on_a_unix_socket(appbin, certs, tmp_path):
    path = tmp_path / "s.sock"
    server = appbin(*tls_args(certs), "--uds", path, app=RAW_APP)
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    with socket.socket(socket.AF_UNIX) as raw:
        raw.settimeout(10)
        raw.connect(str(path))
        with RawConn(sock=ctx.wrap_socket(raw, server_hostname="localhost")) as conn:
            r = conn.request(path="/scope")
    assert r.status == 200 and json.loads(r.body)["scheme"] == "https"
    server.wait_log(f"running on unix socket {path}")


@pytest.mark.parametrize("keep_alive", [[], ["--timeout-keep-alive", "0"]], ids=["5s", "none"])
def test_idle_keep_alive_connections_keep_no_response_sized_buffer(appbin, certs, appbin_host,
                                                                   keep_alive):
    """Keep-alive connections that each got a response of 900 KB (under
    the 1 MB a buffer that grew for one response may keep while busy),
    read through a small receive window: once idle, none keeps a buffer of
    that size (before: the plaintext, the ciphertext and the one written
    last, 1.9 MB an idle connection; 100 of them held 190 MB), also where
    idle connections never time out (--timeout-keep-alive 0). Plain HTTP
    keeps output in its buffers only where the kernel's send buffer is
    full, which loopback's autotuning (4 MB) does not let a test arrange."""
    if b"__asan_init" in appbin_host.read_bytes():
        pytest.skip("a sanitizer build keeps freed memory in quarantine")
    server = appbin(*tls_args(certs), "--no-access-log", *keep_alive, app=RAW_APP)
    body = os.urandom(900 * 1024)
    request = (b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body)) + body
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))

    def connect():
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        raw.settimeout(15)
        raw.connect(("127.0.0.1", server.port))
        return RawConn(sock=ctx.wrap_socket(raw, server_hostname="127.0.0.1"), timeout=15)
    conns = []
    try:
        warm = connect()
        conns.append(warm)
        warm.send(request)
        assert warm.read_response().status == 200
        time.sleep(0.3)
        rss = server.rss_kb()
        for _ in range(100):
            conn = connect()
            conns.append(conn)
            conn.send(request)
            response = conn.read_response()
            assert response.status == 200 and response.body == body
        time.sleep(0.5)  # every connection idle
        grown = server.rss_kb() - rss
        assert grown < 40 * 1024, f"100 idle connections hold {grown} KiB more"
        # and they still serve
        for conn in conns[-3:]:
            conn.send(request)
            assert conn.read_response().body == body
    finally:
        for conn in conns:
            conn.close()

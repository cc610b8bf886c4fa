"""End-to-end tests of the C HTTP layer (host/http_*.c) through
tests/unit/http_test_server.c over real sockets.

The server binary is $APPBIN_HTTP_TEST_SERVER, else the build's
tests/unit/http-test-server (the build is build/, or $APPBIN_BUILD_DIR, as
for the other end-to-end tests).
"""

import os
import signal
import socket
import subprocess
import tempfile
import time

import httpx
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _server_binary():
    env = os.environ.get("APPBIN_HTTP_TEST_SERVER")
    if env:
        return env
    build = os.path.join(ROOT, os.environ.get("APPBIN_BUILD_DIR") or "build")
    path = os.path.join(build, "tests", "unit", "http-test-server")
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} not built")
    return path


class Server:
    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [_server_binary(), "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        line = self.proc.stdout.readline().decode()
        assert line.startswith("listening on"), line
        self.port = int(line.split()[-1])
        self.url = f"http://127.0.0.1:{self.port}"

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def connect(self, timeout=5):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return s

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        err = self.proc.stderr.read().decode(errors="replace")
        self.proc.stdout.close()
        self.proc.stderr.close()
        # sanitizer builds (APPBIN_SANITIZE=ON) report here
        for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            assert marker not in err, err
        return err


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def make_server():
    servers = []

    def make(*args):
        s = Server(*args)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


class Reader:
    """Minimal HTTP/1.1 response reader over a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def read_until(self, sep):
        while sep not in self.buf:
            self._fill()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n):
        if len(self.buf) < n:
            parts, have = [self.buf], len(self.buf)
            while have < n:
                data = self.sock.recv(max(65536, min(n - have, 1 << 20)))
                if not data:
                    raise EOFError
                parts.append(data)
                have += len(data)
            self.buf = b"".join(parts)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self, head_request=False):
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if line:
                k, v = line.split(":", 1)
                headers.setdefault(k.lower(), v.strip())
        if head_request or status in (100, 204, 304):
            return status, headers, b""
        if "content-length" in headers:
            body = self.read_exact(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            parts = []
            while True:
                size = int(self.read_until(b"\r\n")[:-2], 16)
                if size == 0:
                    self.read_until(b"\r\n")
                    break
                parts.append(self.read_exact(size))
                assert self.read_exact(2) == b"\r\n"
            body = b"".join(parts)
        else:
            body = self.buf
            try:
                while True:
                    self._fill()
            except EOFError:
                pass
            body, self.buf = self.buf, b""
        return status, headers, body

    def closed(self, timeout=3):
        """True if the peer closes (EOF or reset) within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False


# --- basics ------------------------------------------------------------------


def test_hello(server):
    r = httpx.get(server.url + "/")
    assert r.status_code == 200
    assert r.text == "Hello, world!"
    assert r.headers["server"] == "appbin"
    assert r.headers["content-length"] == "13"
    assert r.headers["date"].endswith(" GMT")


def test_keep_alive_reuses_connection(server):
    with httpx.Client() as c:
        ports = {c.get(server.url + "/info").text.split("client=")[1].split("\n")[0] for _ in range(20)}
    assert len(ports) == 1


def test_pipelining_in_order(server):
    s = server.connect()
    reqs = b"".join(f"GET /info?i={i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(20))
    s.sendall(reqs)
    r = Reader(s)
    for i in range(20):
        status, _, body = r.response()
        assert status == 200
        assert f"query=i={i}\n".encode() in body
    s.close()


def test_chunked_request_body(server):
    s = server.connect()
    s.sendall(
        b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nTrailer: x\r\n\r\n"
    )
    status, _, body = Reader(s).response()
    assert status == 200 and body == b"received 31"


def test_chunked_response(server):
    s = server.connect()
    s.sendall(b"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = Reader(s).response()
    assert headers["transfer-encoding"] == "chunked"
    assert body == b"one,two,three"


def test_echo_streaming(server):
    data = os.urandom(3 << 20)
    r = httpx.post(server.url + "/echo", content=data, timeout=30)
    assert r.status_code == 200
    assert r.content == data


def test_expect_100_continue(server):
    s = server.connect()
    s.sendall(b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    r = Reader(s)
    status, _, _ = r.response()
    assert status == 100
    s.sendall(b"hello")
    status, _, body = r.response()
    assert status == 200 and body == b"received 5"


def test_head_has_no_body_and_keeps_alive(server):
    s = server.connect()
    s.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    r = Reader(s)
    status, headers, _ = r.response(head_request=True)
    assert status == 200 and "content-length" not in headers
    status, _, body = r.response()
    assert body == b"Hello, world!"


def test_http10_closes(server):
    s = server.connect()
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    r = Reader(s)
    status, headers, body = r.response()
    assert status == 200 and body == b"Hello, world!"
    assert headers["connection"] == "close"
    assert r.closed()


def test_http10_keep_alive(server):
    s = server.connect()
    s.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    r = Reader(s)
    status, headers, _ = r.response()
    assert headers["connection"] == "keep-alive"
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    status, _, body = r.response()
    assert body == b"Hello, world!"
    assert r.closed()


def test_http10_streamed_response_is_close_delimited(server):
    s = server.connect()
    s.sendall(b"GET /chunked HTTP/1.0\r\n\r\n")
    status, headers, body = Reader(s).response()
    assert "transfer-encoding" not in headers and body == b"one,two,three"


def test_connection_close_request(server):
    s = server.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    r = Reader(s)
    status, headers, _ = r.response()
    assert headers["connection"] == "close"
    assert r.closed()


def test_connection_close_response(server):
    s = server.connect()
    s.sendall(b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n")
    r = Reader(s)
    assert r.response()[2] == b"bye"
    assert r.closed()


def test_date_and_server_headers_options(make_server):
    srv = make_server("--no-server-header", "--no-date-header", "--header", "x-one:1", "--header", "x-two: 2")
    r = httpx.get(srv.url + "/")
    assert "server" not in r.headers and "date" not in r.headers
    assert r.headers["x-one"] == "1" and r.headers["x-two"] == "2"


def test_request_fields(server):
    r = httpx.get(server.url + "/info?a=1&b=%20", headers={"X-Test": "v  v"})
    t = r.text
    assert "method=GET\n" in t and "path=/info\n" in t and "query=a=1&b=%20\n" in t
    assert "h:x-test=v  v\n" in t
    assert f"server=127.0.0.1:{server.port}\n" in t and "client=127.0.0.1:" in t


def test_invalid_response_header_rejected(server):
    r = httpx.get(server.url + "/bad-header")
    assert r.status_code == 500 and "invalid header value" in r.text
    assert "x-injected" not in r.headers


def test_app_error_gives_500(server):
    r = httpx.get(server.url + "/error")
    assert r.status_code == 500


def test_abort_after_start_cuts_connection(server):
    s = server.connect()
    s.sendall(b"GET /abort HTTP/1.1\r\nHost: x\r\n\r\n")
    r = Reader(s)
    with pytest.raises(EOFError):
        r.response()


def test_big_response_header(server):
    r = httpx.get(server.url + "/big-headers")
    assert len(r.headers["x-big"]) == 20480


def test_not_found(server):
    assert httpx.get(server.url + "/nope").status_code == 404


# --- malformed requests / smuggling ---------------------------------------------

R = "\r\n"
BAD = {
    "cl-and-te": "POST / HTTP/1.1" + R + "Content-Length: 3" + R + "Transfer-Encoding: chunked" + R + R + "0" + R + R,
    "te-and-cl": "POST / HTTP/1.1" + R + "Transfer-Encoding: chunked" + R + "Content-Length: 3" + R + R + "0" + R + R,
    "cl-dup": "POST / HTTP/1.1" + R + "Content-Length: 3" + R + "Content-Length: 4" + R + R + "abcd",
    "cl-dup-same": "POST / HTTP/1.1" + R + "Content-Length: 3" + R + "Content-Length: 3" + R + R + "abc",
    "cl-list": "POST / HTTP/1.1" + R + "Content-Length: 3, 3" + R + R + "abc",
    "cl-plus": "POST / HTTP/1.1" + R + "Content-Length: +3" + R + R + "abc",
    "cl-neg": "POST / HTTP/1.1" + R + "Content-Length: -3" + R + R,
    "cl-huge": "POST / HTTP/1.1" + R + "Content-Length: 99999999999999999999999" + R + R,
    "te-gzip": "POST / HTTP/1.1" + R + "Transfer-Encoding: gzip" + R + R + "abc",
    "te-chunked-gzip": "POST / HTTP/1.1" + R + "Transfer-Encoding: chunked, gzip" + R + R + "0" + R + R,
    "te-twice": "POST / HTTP/1.1" + R + "Transfer-Encoding: chunked" + R + "Transfer-Encoding: chunked" + R + R + "0" + R + R,
    "te-space-colon": "POST / HTTP/1.1" + R + "Transfer-Encoding : chunked" + R + R + "0" + R + R,
    "te-http10": "POST / HTTP/1.0" + R + "Transfer-Encoding: chunked" + R + R + "0" + R + R,
    "te-vtab": "POST / HTTP/1.1" + R + "Transfer-Encoding:\x0bchunked" + R + R + "0" + R + R,
    "space-colon": "GET / HTTP/1.1" + R + "Host : x" + R + R,
    "obs-fold": "GET / HTTP/1.1" + R + "X: a" + R + " b" + R + R,
    "bare-lf": "GET / HTTP/1.1\nHost: x\n\n",
    "bare-cr": "GET / HTTP/1.1" + R + "Host: x\rX: y" + R + R,
    "bare-cr-end": "GET / HTTP/1.1" + R + "Host: x" + R + "\rGET /2 HTTP/1.1" + R + R,
    "empty-name": "GET / HTTP/1.1" + R + ": x" + R + R,
    "bad-name": "GET / HTTP/1.1" + R + "X@y: z" + R + R,
    "nul-value": "GET / HTTP/1.1" + R + "X: a\x00b" + R + R,
    "ctl-value": "GET / HTTP/1.1" + R + "X: a\x01b" + R + R,
    "space-in-target": "GET /a b HTTP/1.1" + R + R,
    "two-spaces": "GET  / HTTP/1.1" + R + R,
    "http09": "GET /" + R + R,
    "bad-version": "GET / HTTP/1.2" + R + R,
    "bad-method": "get / HTTP/1.1" + R + R,
    "chunk-size-bad": "POST / HTTP/1.1" + R + "Transfer-Encoding: chunked" + R + R + "zz" + R + "abc" + R + "0" + R + R,
    "chunk-size-overflow": "POST / HTTP/1.1" + R + "Transfer-Encoding: chunked" + R + R + "fffffffffffffffffff" + R + "x" + R + "0" + R + R,
    "chunk-size-space": "POST / HTTP/1.1" + R + "Transfer-Encoding: chunked" + R + R + "3 " + R + "abc" + R + "0" + R + R,
    "chunk-no-crlf": "POST / HTTP/1.1" + R + "Transfer-Encoding: chunked" + R + R + "3" + R + "abcX0" + R + R,
    "chunk-lf": "POST / HTTP/1.1" + R + "Transfer-Encoding: chunked" + R + R + "3\nabc\n0\n\n",
    "chunk-ext-ctl": "POST / HTTP/1.1" + R + "Transfer-Encoding: chunked" + R + R + "3;a\x01" + R + "abc" + R + "0" + R + R,
    "chunk-ext-flood": "POST / HTTP/1.1" + R + "Transfer-Encoding: chunked" + R + R + "1;" + "a" * 5000 + R + "x" + R + "0" + R + R,
    "garbage": "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_malformed_gets_400_and_close(server, name):
    s = server.connect()
    s.sendall(BAD[name].encode("latin-1"))
    r = Reader(s)
    status, headers, body = r.response()
    assert status == 400, (name, status, body)
    assert headers["connection"] == "close"
    assert b"Invalid" in body
    assert r.closed()
    # the server is fine afterwards
    assert httpx.get(server.url + "/").status_code == 200


def test_smuggled_request_never_answered(server):
    s = server.connect()
    s.sendall(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /info?smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    data = b""
    s.settimeout(3)
    try:
        while chunk := s.recv(65536):
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b"smuggled" not in data and data.count(b"HTTP/1.1") == 1


def test_huge_header_431(server):
    s = server.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    r = Reader(s)
    status, _, _ = r.response()
    assert status == 431
    assert r.closed()


def test_too_many_headers_431(server):
    s = server.connect()
    s.sendall(b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(101)) + b"\r\n")
    status, _, _ = Reader(s).response()
    assert status == 431


def test_error_response_survives_unread_input(server):
    """Lingering close: the 400 arrives even though the client keeps sending."""
    s = server.connect()
    s.sendall(b"BAD REQUEST\r\n\r\n" + b"x" * 200000)
    status, _, _ = Reader(s).response()
    assert status == 400


# --- timeouts ----------------------------------------------------------------------


def test_slowloris_header_timeout(make_server):
    srv = make_server("--header-timeout", "1")
    s = srv.connect()
    t0 = time.monotonic()
    closed = False
    for ch in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 50:
        try:
            s.sendall(bytes([ch]))
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        time.sleep(0.1)
        s.settimeout(0.01)
        try:
            if s.recv(100) == b"":
                closed = True
                break
        except socket.timeout:
            pass
        except ConnectionResetError:
            closed = True
            break
    assert closed
    assert time.monotonic() - t0 < 3


def test_idle_keep_alive_timeout(make_server):
    srv = make_server("--keep-alive-timeout", "1")
    s = srv.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    r = Reader(s)
    r.response()
    t0 = time.monotonic()
    assert r.closed(timeout=4)
    assert 0.7 < time.monotonic() - t0 < 3


def test_idle_timeout_before_first_request(make_server):
    srv = make_server("--keep-alive-timeout", "1")
    s = srv.connect()
    assert Reader(s).closed(timeout=4)


# --- disconnects, flow control, memory ---------------------------------------------------


def test_abrupt_disconnect_mid_body(server):
    for _ in range(20):
        s = server.connect()
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 50000)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    s = server.connect()
    s.sendall(b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
    s.close()
    time.sleep(0.3)
    assert httpx.get(server.url + "/").status_code == 200
    assert server.proc.poll() is None


def test_disconnect_while_app_holds_request(server):
    s = server.connect()
    s.sendall(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    s.close()
    time.sleep(0.2)
    assert httpx.get(server.url + "/").status_code == 200


def test_half_close_after_pipelined_requests(server):
    # a synchronous handler answers both before the EOF is seen
    s = server.connect()
    s.sendall(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    s.shutdown(socket.SHUT_WR)
    data = b""
    s.settimeout(3)
    while chunk := s.recv(65536):
        data += chunk
    assert data.count(b"HTTP/1.1 404") == 2


def test_100mb_upload_bounded_rss(server):
    size = 100 << 20
    s = server.connect(timeout=30)
    s.sendall(b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    block = b"z" * (1 << 20)
    peak = 0
    for i in range(100):
        s.sendall(block)
        if i % 10 == 0:
            peak = max(peak, server.rss_kb())
    status, _, body = Reader(s).response()
    assert body == b"received %d" % size
    peak = max(peak, server.rss_kb())
    assert peak < 20000, f"server RSS peaked at {peak} kB"


def test_slow_body_consumer_pauses_reading(server):
    size = 4 << 20
    s = server.connect(timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    s.sendall(b"POST /slow-body HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    s.settimeout(1.0)
    sent = 0
    t0 = time.monotonic()
    blocked = False
    block = b"q" * 65536
    while sent < size and time.monotonic() - t0 < 2:
        try:
            sent += s.send(block[: size - sent])
        except socket.timeout:
            blocked = True
            break
    # the consumer takes ~20 ms per read buffer: the client must be throttled
    assert blocked or sent < size
    assert server.rss_kb() < 20000


def test_stream_backpressure_bounded_rss(server):
    s = server.connect(timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(b"GET /stream?n=200 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(1.0)  # not reading: the server must stop producing
    assert server.rss_kb() < 20000
    r = Reader(s)
    status, _, body = r.response()
    assert status == 200 and len(body) == 200 << 20
    assert set(body[:1000]) == {ord("x")}


def test_sendfile(server):
    data = os.urandom((5 << 20) + 123)
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        r = httpx.get(server.url + "/sendfile?path=" + f.name, timeout=30)
        assert r.status_code == 200 and r.headers["content-length"] == str(len(data))
        assert r.content == data
        # slow reader: sendfile hits EAGAIN and resumes
        s = server.connect(timeout=30)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        s.sendall(f"GET /sendfile?path={f.name} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.5)
        status, _, body = Reader(s).response()
        assert body == data


# --- limits, listeners, shutdown --------------------------------------------------------


def test_limit_concurrency_503(make_server):
    srv = make_server("--limit-concurrency", "1")
    a = srv.connect()
    a.sendall(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    b = srv.connect()
    b.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = Reader(b).response()
    assert status == 503 and body == b"Service Unavailable"
    a.close()
    time.sleep(0.2)
    assert httpx.get(srv.url + "/").status_code == 200


def test_limit_max_requests_exits(make_server):
    srv = make_server("--limit-max-requests", "3")
    with httpx.Client() as c:
        for _ in range(3):
            assert c.get(srv.url + "/").status_code == 200
    assert srv.proc.wait(5) == 0


def test_unix_socket(make_server, tmp_path):
    path = str(tmp_path / "s.sock")
    proc = subprocess.Popen([_server_binary(), "--uds", path], stdout=subprocess.PIPE)
    try:
        proc.stdout.readline()
        assert oct(os.stat(path).st_mode & 0o777) == "0o666"
        with httpx.Client(transport=httpx.HTTPTransport(uds=path)) as c:
            r = c.get("http://x/info")
        assert r.status_code == 200 and f"server={path}:-1" in r.text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
    assert not os.path.exists(path)


def test_inherited_fd(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [_server_binary(), "--fd", str(sock.fileno())], stdout=subprocess.PIPE, pass_fds=[sock.fileno()]
    )
    try:
        proc.stdout.readline()
        assert httpx.get(f"http://127.0.0.1:{port}/").text == "Hello, world!"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(5)
        sock.close()


def test_ipv6_and_reuse_port(make_server):
    try:
        srv = make_server("--host", "::1", "--reuse-port")
    except AssertionError:
        pytest.skip("no IPv6")
    r = httpx.get(f"http://[::1]:{srv.port}/info")
    assert "client=::1:" in r.text
    # a second server can bind the same port with SO_REUSEPORT
    srv2 = make_server("--host", "::1", "--reuse-port")
    assert srv2.port != srv.port or True


def test_graceful_shutdown_finishes_in_flight(make_server):
    srv = make_server()
    busy = srv.connect()
    busy.sendall(b"POST /slow-body HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n")
    idle = srv.connect()
    idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    Reader(idle).response()
    time.sleep(0.1)
    srv.proc.send_signal(signal.SIGTERM)
    # idle keep-alive connection is closed at once
    assert Reader(idle).closed(timeout=2)
    # new connections are refused
    time.sleep(0.1)
    with pytest.raises(OSError):
        srv.connect(timeout=1).sendall(b"GET / HTTP/1.1\r\n\r\n")
        raise OSError
    busy.sendall(b"b" * 300000)
    r = Reader(busy)
    status, headers, body = r.response()
    assert body == b"received 300000"
    assert headers.get("connection") == "close"
    assert srv.proc.wait(5) == 0

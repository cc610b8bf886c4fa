"""Fixtures and helpers of the server's end-to-end tests (test_server_*.py).

Loaded through `pytest_plugins = ["server_fixtures"]` in conftest.py; the
test modules import the helpers (RawConn, AppBin, ...) from here.

- server_venv: the test venv of conftest.py plus python-multipart and httpx
  (pinned) and the local distribution fixtures/appbin_serverapps.
- server_app_bin: that venv packed once per session with the real host
  (default app: appbin_serverapps.raw:app; others are chosen with --app).
- appbin: starts app.bin processes on free ports (--port 0 and the
  "running on" log line) and stops them at the end of the test.
- RawConn: a raw socket with an HTTP/1.1 response reader, for edge cases.
"""

import http.server
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import FIXTURES, TEST_VENV_REQUIREMENTS, _cached_build, build_pip_venv

SERVER_VENV_REQUIREMENTS = (
    *TEST_VENV_REQUIREMENTS,
    "python-multipart==0.0.34",
    "httpx==0.28.1",
    "httpcore==1.0.9",
    "h11==0.16.0",
)
SERVER_DISTRIBUTIONS = ("appbin_serverapps",)

RAW_APP = "appbin_serverapps.raw:app"
STAR_APP = "appbin_serverapps.star:app"
FAST_APP = "appbin_serverapps.fast:app"

# /big and the file endpoints' byte patterns (see appbin_serverapps).
CHUNK = bytes(range(256)) * 256
FILE_PATTERN = bytes(range(256))
FILE_SIZE = 1024 * 1024 + 7
FILE_DATA = (FILE_PATTERN * (FILE_SIZE // 256 + 1))[:FILE_SIZE]

READY_RE = re.compile(r"running on (\S+)")
ACCESS_RE = re.compile(r'^INFO:     (\S+):(\d+) - "(\S+) (\S+) HTTP/(1\.[01])" (\d{3}) (.*)$', re.M)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running tests (100 MB transfers, ...)")


# ---- TLS certificates ----------------------------------------------------------------

TLS_KEY_PASSWORD = "s3cret pass"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """A directory of TLS files made by the openssl command: a CA (ca.pem),
    a server certificate for 127.0.0.1 signed by it (server.pem, server.key,
    server-encrypted.key under TLS_KEY_PASSWORD, server-and-key.pem) and a
    client certificate (client.pem, client.key)."""
    d = tmp_path_factory.mktemp("certs")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=appbin test CA", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                *(["-extfile", "server.ext"] if name == "server" else []), cwd=d)
    openssl("pkey", "-in", "server.key", "-aes256", "-passout", f"pass:{TLS_KEY_PASSWORD}", "-out",
            "server-encrypted.key", cwd=d)
    (d / "server-and-key.pem").write_text((d / "server.pem").read_text() +
                                          (d / "server.key").read_text())
    return d


# ---- the venv and the packed app ------------------------------------------------


@pytest.fixture(scope="session")
def server_venv():
    """conftest's test venv + python-multipart + httpx + appbin_serverapps."""
    local_dirs = [FIXTURES / name for name in SERVER_DISTRIBUTIONS]
    return _cached_build("serverapps", SERVER_VENV_REQUIREMENTS, local_dirs,
                         lambda target: build_pip_venv(target, SERVER_VENV_REQUIREMENTS,
                                                       local_dirs))


@pytest.fixture(scope="session")
def server_app_bin(tmp_path_factory, run_appbin_pack, appbin_host, server_venv):
    """app.bin of server_venv (default --app appbin_serverapps.raw:app).

    $APPBIN_SERVER_TEST_HOST packs another host (e.g. a sanitizer build).
    """
    host = os.environ.get("APPBIN_SERVER_TEST_HOST") or appbin_host
    output = tmp_path_factory.mktemp("server-app") / "app.bin"
    result = run_appbin_pack("--venv", server_venv, "--app", RAW_APP, "--host", host,
                             "-o", output, "--quiet")
    assert result.returncode == 0, result.stderr
    return output


# ---- processes ------------------------------------------------------------------


_handed_out = set()


def free_port():
    """A TCP port that was free a moment ago (for options that need one up
    front), never one this process handed out before: the kernel may give a
    just-closed port again, and a server given it for --port and for
    --metrics-port fails with "Address already in use"."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def status_field(pid, field):
    """The value of FIELD ("VmRSS", "SigBlk", ...) in /proc/PID/status, as
    its first word; None if the process or the field is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return line.split()[1]
    except OSError:
        pass
    return None


def rss_kb(pid):
    """VmRSS of a process in KiB (0 if gone)."""
    return int(status_field(pid, "VmRSS") or 0)


def children_of(pid):
    """Pids whose parent is pid (from /proc/*/stat)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(entry))
    return sorted(found)


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


class AppBin:
    """One app.bin process; stdout and stderr go to one log file."""

    def __init__(self, exe, args, log_path, env=None, pass_fds=(), cwd=None, session=False,
                 **popen):
        """popen: more subprocess.Popen arguments (stdin, preexec_fn...)."""
        self.args = [str(a) for a in args]
        self.log_path = Path(log_path)
        self._log_file = open(self.log_path, "wb")
        full_env = dict(os.environ)
        full_env.pop("PYTHONPATH", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen([str(exe), *self.args], **{
            "stdin": subprocess.DEVNULL, "stdout": self._log_file, "stderr": subprocess.STDOUT,
            "env": full_env, "pass_fds": pass_fds, "cwd": cwd, "start_new_session": session,
            **popen})
        self.pid = self.proc.pid
        self.where = None
        self.port = None
        self._client = None

    # -- log --

    def log(self):
        return self.log_path.read_bytes().decode("utf-8", "replace")

    def wait_log(self, pattern, timeout=10, start=0):
        """Waits for a regex in the log (after offset start); returns the match."""
        regex = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log(), start)
            if match:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not in the log after {timeout}s:\n"
                                     f"{self.log()[-4000:]}")
            if self.proc.poll() is not None:
                match = regex.search(self.log(), start)
                if match:
                    return match
                raise AssertionError(f"app.bin exited ({self.proc.returncode}) before logging "
                                     f"{pattern!r}:\n{self.log()[-4000:]}")
            time.sleep(0.05)

    def wait_ready(self, timeout=30):
        match = self.wait_log(READY_RE.pattern, timeout)
        self.where = match.group(1)
        port = re.match(r"https?://[^:/]+:(\d+)$", self.where) or re.match(
            r"https?://\[.*\]:(\d+)$", self.where)
        if port:
            self.port = int(port.group(1))
        return self

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    # -- clients --

    @property
    def client(self):
        """An httpx.Client on this server (kept open until stop)."""
        if self._client is None:
            self._client = httpx.Client(base_url=self.url, timeout=15)
        return self._client

    def get(self, path, **kwargs):
        return self.client.get(path, **kwargs)

    def connect(self, timeout=5):
        return RawConn(self.port, timeout=timeout)

    def poll_result(self, key, want, path="/result", timeout=10, field=None):
        """GETs path?key=KEY until the JSON value (or value[field]) satisfies want.

        A value that is not there yet (null) is not given to want."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.get(path, params={"key": key}).json()
            if field is not None and isinstance(value, dict):
                value = value.get(field)
            if value is not None and want(value):
                return value
            time.sleep(0.05)
        raise AssertionError(f"result {key!r} is {value!r} after {timeout}s")

    # -- process --

    def rss_kb(self):
        return rss_kb(self.pid)

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=15):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"app.bin still running after {timeout}s:\n{self.log()[-4000:]}")

    def stop(self, timeout=15):
        """SIGTERM, wait; SIGKILL if it does not stop. Returns the exit status."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill_group()
                self.proc.wait(10)
        self._log_file.close()
        return self.proc.returncode

    def kill_group(self):
        """SIGKILL the process and its children (workers)."""
        for child in children_of(self.pid):
            try:
                os.kill(child, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.proc.kill()
        except OSError:
            pass


def _has_listen_option(args):
    names = {str(a).split("=", 1)[0] for a in args}
    return bool(names & {"--port", "--uds", "--fd"})


class AppBinFactory:
    """Starts app.bin processes and stops them all at close()."""

    def __init__(self, exe, log_dir):
        self.exe = exe
        self.log_dir = Path(log_dir)
        self.started = []

    def __call__(self, *args, app=None, ready=True, env=None, pass_fds=(), timeout=30,
                 session=False):
        """session: its own session and process group (for group signals)."""
        args = [str(a) for a in args]
        if app:
            args = ["--app", app, *args]
        env_listen = {"APPBIN_PORT", "APPBIN_UDS", "APPBIN_FD"} & set(env or {})
        if not _has_listen_option(args) and not env_listen:
            args += ["--port", "0"]
        log_path = self.log_dir / f"app-{len(self.started)}.log"
        server = AppBin(self.exe, args, log_path, env=env, pass_fds=pass_fds, session=session)
        self.started.append(server)
        if ready:
            server.wait_ready(timeout)
        return server

    def run(self, *args, timeout=30, env=None):
        """Runs app.bin to completion: (returncode, output)."""
        full_env = dict(os.environ)
        full_env.update(env or {})
        result = subprocess.run([str(self.exe), *map(str, args)], stdin=subprocess.DEVNULL,
                                capture_output=True, timeout=timeout, env=full_env)
        out = (result.stdout + result.stderr).decode("utf-8", "replace")
        return result.returncode, out

    def close(self):
        for server in self.started:
            server.stop(timeout=10)


@pytest.fixture
def appbin(server_app_bin, tmp_path):
    """appbin(*args, app=None, ready=True) -> AppBin on a free port."""
    factory = AppBinFactory(server_app_bin, tmp_path)
    yield factory
    factory.close()


def _module_server(request, tmp_path_factory, exe, app, *args):
    factory = AppBinFactory(exe, tmp_path_factory.mktemp("server"))
    request.addfinalizer(factory.close)
    return factory(*args, app=app)


@pytest.fixture(scope="module")
def raw_server(request, tmp_path_factory, server_app_bin):
    """The bare ASGI app, one process per test module."""
    return _module_server(request, tmp_path_factory, server_app_bin, RAW_APP)


@pytest.fixture(scope="module")
def star_server(request, tmp_path_factory, server_app_bin):
    """The Starlette app, one process per test module."""
    return _module_server(request, tmp_path_factory, server_app_bin, STAR_APP)


@pytest.fixture(scope="module")
def fast_server(request, tmp_path_factory, server_app_bin):
    """The FastAPI app, one process per test module."""
    return _module_server(request, tmp_path_factory, server_app_bin, FAST_APP)


# ---- a loopback upstream for outgoing connections ----------------------------------


class _UpstreamHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = f"upstream-ok from={self.headers.get('x-from', '')}".encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def upstream():
    """A tiny HTTP server on 127.0.0.1 (GET anything -> "upstream-ok from=X-From")."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _UpstreamHandler)
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


# ---- raw HTTP/1.1 over a socket ------------------------------------------------------


class Response:
    def __init__(self, version, status, reason, headers, body, trailers=()):
        self.version, self.status, self.reason = version, status, reason
        self.headers = headers  # [(lowercased name, value)]
        self.body = body
        self.trailers = list(trailers)

    def header(self, name, default=None):
        values = self.all(name)
        return values[0] if values else default

    def all(self, name):
        name = name.lower()
        return [v for n, v in self.headers if n == name]

    def __repr__(self):
        return f"<Response {self.status} {self.headers!r} {self.body[:100]!r}>"


class RawConn:
    """A client socket with an HTTP/1.1 response reader; every op has a timeout."""

    def __init__(self, port=None, uds=None, timeout=5, sock=None):
        if sock is not None:
            self.sock = sock
        elif uds:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(uds)
        else:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.eof = False

    @property
    def local_port(self):
        return self.sock.getsockname()[1]

    def settimeout(self, timeout):
        self.sock.settimeout(timeout)

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        try:
            data = self.sock.recv(262144)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            raise EOFError("connection closed by the server")
        self.buf += data

    def read_until(self, sep, limit=1 << 20):
        while sep not in self.buf:
            if len(self.buf) > limit:
                raise AssertionError(f"no {sep!r} in {len(self.buf)} bytes")
            self._fill()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_eof(self, limit=1 << 28):
        while True:
            try:
                self._fill()
            except EOFError:
                break
            if len(self.buf) > limit:
                raise AssertionError("too much data")
        out, self.buf = self.buf, b""
        return out

    def read_head(self):
        """(version, status, reason, headers) of the next response head."""
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
        headers = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name.strip().lower(), value.strip()))
        return version, int(status), reason, headers

    def read_response(self, head_request=False, allow_interim=False):
        """The next response; 1xx responses are returned only if allow_interim."""
        while True:
            version, status, reason, headers = self.read_head()
            if 100 <= status < 200 and status != 101 and not allow_interim:
                continue
            break
        resp = Response(version, status, reason, headers, b"")
        if head_request or status in (204, 304) or 100 <= status < 200:
            return resp
        te = resp.header("transfer-encoding", "")
        if "chunked" in te.lower():
            body = b""
            while True:
                line = self.read_until(b"\r\n")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    break
                body += self.read_exact(size)
                assert self.read_exact(2) == b"\r\n", "chunk not followed by CRLF"
            while True:
                line = self.read_until(b"\r\n")
                if line == b"\r\n":
                    break
                resp.trailers.append(line.decode("latin-1").strip())
            resp.body = body
        elif resp.header("content-length") is not None:
            resp.body = self.read_exact(int(resp.header("content-length")))
        else:
            resp.body = self.read_to_eof()
        return resp

    def request(self, method="GET", path="/", headers=(), body=b"", version="1.1"):
        """Sends one request (adds Host and Content-Length) and reads the response."""
        self.send(build_request(method, path, headers, body, version))
        return self.read_response(head_request=method == "HEAD")

    def wait_closed(self, timeout=5):
        """True if the server closes the connection within timeout (data is kept)."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    self._fill()
                except socket.timeout:
                    return False
        except EOFError:
            return True
        return False

    def abort(self):
        """Closes with RST (SO_LINGER 0)."""
        import struct

        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.sock.close()

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def build_request(method="GET", path="/", headers=(), body=b"", version="1.1"):
    """Request bytes; Host and Content-Length are added unless given."""
    names = {n.lower() for n, _ in headers}
    lines = [f"{method} {path} HTTP/{version}"]
    if "host" not in names and version == "1.1":
        lines.append("Host: 127.0.0.1")
    lines += [f"{n}: {v}" for n, v in headers]
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def access_lines(log):
    """Access log lines: [(client, port, method, target, version, status, reason)]."""
    return [(m.group(1), int(m.group(2)), m.group(3), m.group(4), m.group(5), int(m.group(6)),
             m.group(7)) for m in ACCESS_RE.finditer(log)]

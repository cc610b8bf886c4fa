"""app.bin's server options end to end (uvicorn-compatible flags): limits,
root path, proxy headers, default headers, logging, lifespan modes, signals
and graceful shutdown, start-up errors and their exit statuses, unix
sockets, inherited sockets and worker processes.
"""

import json
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time

import httpx
import pytest

from hostutil import clean_env, unshare_works
from server_fixtures import (RawConn, build_request, children_of, free_port,
                             pid_alive, status_field)

pytestmark = pytest.mark.timeout(120)


def _scope(server, path="/scope", headers=()):
    with server.connect() as conn:
        resp = conn.request("GET", path, headers=headers)
    assert resp.status == 200, resp
    return json.loads(resp.body)


# ---- usage errors ---------------------------------------------------------------------


def test_help_lists_the_server_options(appbin):
    rc, out = appbin.run("--help")
    assert rc == 0
    for flag in ("--host", "--port", "--uds", "--fd", "--workers", "--root-path",
                 "--proxy-headers", "--forwarded-allow-ips", "--header", "--limit-concurrency",
                 "--limit-max-requests", "--timeout-keep-alive", "--timeout-graceful-shutdown",
                 "--lifespan", "--access-log", "--log-level"):
        assert flag in out


@pytest.mark.parametrize("args, flag", [
    (["--port", "abc"], "--port"),
    (["--port", "70000"], "--port"),
    (["--port", "-1"], "--port"),
    (["--lifespan", "maybe"], "--lifespan"),
    (["--log-level", "loud"], "--log-level"),
    (["--timeout-keep-alive", "-1"], "--timeout-keep-alive"),
    (["--timeout-graceful-shutdown", "soon"], "--timeout-graceful-shutdown"),
    (["--limit-concurrency", "x"], "--limit-concurrency"),
    (["--limit-max-requests", "1.5"], "--limit-max-requests"),
    (["--workers", "0"], "--workers"),
    (["--backlog", "0"], "--backlog"),
    (["--header", "no-colon-here"], "--header"),
    (["--header", ":value"], "--header"),
    (["--app", "no_colon"], "--app"),
    (["--bogus-flag"], "--bogus-flag"),
    (["--port"], "--port"),
    (["--access-log=yes"], "--access-log"),
])
def test_bad_option_exits_2_naming_the_flag(appbin, args, flag):
    rc, out = appbin.run(*args)
    assert rc == 2, out
    assert flag in out
    assert "running on" not in out


def test_bad_environment_value_exits_2_naming_the_variable(appbin):
    rc, out = appbin.run(env={"APPBIN_PORT": "eighty"})
    assert rc == 2
    assert "APPBIN_PORT" in out


def test_environment_sets_options(appbin):
    port = free_port()
    server = appbin(env={"APPBIN_PORT": str(port), "APPBIN_ROOT_PATH": "/env"})
    # no --port given: the environment chose it
    assert server.port == port
    assert _scope(server)["root_path"] == "/env"


# ---- start-up errors ---------------------------------------------------------------------


def test_port_in_use_exits_1_with_a_clear_message(appbin):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        rc, out = appbin.run("--port", port)
    assert rc == 1, out
    assert str(port) in out
    assert re.search(r"address already in use", out, re.I), out
    assert "Traceback" not in out


def test_unknown_host_exits_1(appbin):
    rc, out = appbin.run("--host", "no-such-host.invalid", "--port", "0")
    assert rc == 1, out
    assert "no-such-host.invalid" in out


def test_missing_app_attribute_exits_1(appbin):
    rc, out = appbin.run("--app", "appbin_serverapps.raw:nope", "--port", "0")
    assert rc == 1
    assert "has no attribute 'nope'" in out
    assert "Traceback" not in out


def test_missing_app_module_exits_1(appbin):
    rc, out = appbin.run("--app", "appbin_serverapps.missing_module:app", "--port", "0")
    assert rc == 1
    assert "cannot import module 'appbin_serverapps.missing_module'" in out


def test_app_that_is_not_callable_exits_1(appbin):
    rc, out = appbin.run("--app", "appbin_serverapps.raw:NOT_CALLABLE", "--port", "0")
    assert rc == 1
    assert "not callable" in out


def test_factory(appbin):
    server = appbin("--factory", app="appbin_serverapps.raw:factory")
    assert server.get("/").text == "hello"
    server.wait_log("APP: factory called")


# ---- lifespan ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_lifespan_runs_startup_and_shutdown(appbin, mode):
    server = appbin("--lifespan", mode)
    log = server.log()
    assert log.index("Waiting for application startup.") < log.index("APP: lifespan startup") \
        < log.index("Application startup complete.") < log.index("running on")
    assert _scope(server)["state_started"] == "yes"
    assert server.stop() == 0
    log = server.log()
    assert log.index("Shutting down") < log.index("APP: lifespan shutdown") \
        < log.index("Application shutdown complete.")


def test_lifespan_off(appbin):
    server = appbin("--lifespan", "off")
    assert _scope(server)["state_started"] is None
    assert server.stop() == 0
    log = server.log()
    assert "APP: lifespan" not in log
    assert "Waiting for application startup" not in log


def test_lifespan_auto_with_an_app_without_lifespan(appbin):
    server = appbin(app="appbin_serverapps.raw:no_lifespan")
    server.wait_log(r"ASGI 'lifespan' protocol appears unsupported\.")
    assert server.get("/").text == "hello"
    assert server.stop() == 0
    assert "Traceback" not in server.log()


def test_lifespan_on_with_an_app_without_lifespan_fails(appbin):
    rc, out = appbin.run("--lifespan", "on", "--app", "appbin_serverapps.raw:no_lifespan",
                         "--port", "0")
    assert rc != 0
    assert "Application startup failed" in out
    assert "unsupported scope type 'lifespan'" in out
    assert "running on" not in out


def test_lifespan_startup_failed_message(appbin):
    rc, out = appbin.run("--app", "appbin_serverapps.raw:startup_failed", "--port", "0")
    assert rc != 0
    assert "raw startup failed: database unreachable" in out
    assert "Application startup failed" in out
    assert "running on" not in out


def test_starlette_lifespan_exception_fails_startup(appbin):
    rc, out = appbin.run("--app", "appbin_serverapps.star:failing_app", "--port", "0")
    assert rc != 0
    assert "starlette startup failed: cache cluster down" in out
    assert "running on" not in out


# ---- signals and graceful shutdown ------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_lets_in_flight_request_finish(appbin, sig):
    server = appbin()
    idle = server.connect()
    assert idle.request("GET", "/").status == 200  # an idle keep-alive connection
    conn = server.connect(timeout=15)
    conn.send(build_request("GET", "/slow?s=2&tag=inflight"))
    server.wait_log("APP: slow request started inflight")
    start = time.monotonic()
    server.send_signal(sig)
    server.wait_log("Shutting down")
    assert idle.wait_closed(3), "idle keep-alive connections are closed on shutdown"
    with pytest.raises((OSError, EOFError)):  # no longer accepting
        RawConn(server.port, timeout=2).request("GET", "/")
    resp = conn.read_response()
    assert resp.status == 200 and resp.body == b"slow done inflight"
    assert server.wait_exit(15) == 0
    assert time.monotonic() - start < 10
    log = server.log()
    assert "APP: slow request finished inflight" in log
    assert "Application shutdown complete." in log
    assert "Finished server process" in log


def _pid_namespaces_work():
    if not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"):
        return False  # CONFIG_PROC_CHILDREN: how the test finds the server
    return unshare_works("-r", "--pid", "--fork", "--kill-child")


def _signals_of(pid, field):
    """The SigBlk/SigCgt/... mask of a process, 0 once it is gone."""
    return int(status_field(pid, field) or "0", 16)


def _sigterm_while_starting_as_pid_1(exe, workers):
    """Starts EXE as PID 1 of a new PID namespace and sends it SIGTERM from
    outside while it starts: (exit status, output), or None when the runtime's
    handler was in place first (this process was too slow to catch the
    window)."""
    term = 1 << (signal.SIGTERM - 1)
    cmd = ["unshare", "-r", "--pid", "--fork", "--kill-child", str(exe),
           "--port", str(free_port()), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=clean_env())
    try:
        # The server is unshare's child (PID 1 inside). Once it runs app.bin
        # and has blocked SIGTERM (microseconds into main(); at most 20 ms
        # after the exec, past the dynamic loader, if it never does), the
        # signal arrives long before the runtime's handlers would (~100 ms).
        deadline, pid, exec_seen = time.monotonic() + 10, None, None
        while time.monotonic() < deadline:
            try:
                if exec_seen is None:
                    with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
                        pid = int(f.read().split()[0])
                    if os.readlink(f"/proc/{pid}/exe") == str(exe):
                        exec_seen = time.monotonic()
                if exec_seen is not None and (_signals_of(pid, "SigBlk") & term
                                              or time.monotonic() - exec_seen > 0.02):
                    break
            except (OSError, IndexError, ValueError):
                pass
            time.sleep(0.0002)
        else:
            pytest.fail("app.bin did not start")
        if _signals_of(pid, "SigCgt") & term:
            return None
        os.kill(pid, signal.SIGTERM)
        try:
            out = proc.communicate(timeout=20)[0].decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            pytest.fail("the SIGTERM sent while app.bin started was lost: it kept running")
        return proc.returncode, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("workers", [1, 2])
def test_stop_signal_at_once_as_pid_1(server_app_bin, workers):
    """A container's entrypoint is PID 1, for which the kernel discards a signal
    that has no handler: a `docker stop` in the first milliseconds, before the
    runtime had installed its handlers, was lost, and the server went on to
    start and serve until the SIGKILL. SIGTERM now stays blocked, so pending,
    from the first instruction of main() until the runtime handles it: the
    server stops cleanly before it serves."""
    if not _pid_namespaces_work():
        pytest.skip("unshare -r --pid (a user and PID namespace) or "
                    "/proc/PID/task/TID/children is not available here")
    for _ in range(5):
        result = _sigterm_while_starting_as_pid_1(server_app_bin, workers)
        if result is not None:
            break
    else:
        pytest.skip("the runtime's handler was always in place first (a busy machine)")
    rc, out = result
    assert rc == 0, out
    assert "Received SIGTERM" in out or "a signal arrived during startup" in out, out
    if workers == 1:
        assert "Stopped before serving: a signal arrived during startup" in out, out
        assert "running on" not in out, out


def test_graceful_shutdown_timeout_cuts_slow_requests(appbin):
    server = appbin("--timeout-graceful-shutdown", "1")
    conn = server.connect(timeout=15)
    conn.send(build_request("GET", "/slow?s=60&tag=cut"))
    server.wait_log("APP: slow request started cut")
    start = time.monotonic()
    server.send_signal(signal.SIGTERM)
    assert conn.wait_closed(10)
    assert b"slow done" not in conn.buf
    rc = server.wait_exit(15)
    elapsed = time.monotonic() - start
    assert rc == 0
    assert 0.8 < elapsed < 8, elapsed
    assert re.search(r"graceful shutdown", server.log(), re.I)
    assert "Application shutdown complete." in server.log()


def test_second_signal_stops_at_once(appbin):
    server = appbin()
    conn = server.connect(timeout=15)
    conn.send(build_request("GET", "/slow?s=60&tag=twice"))
    server.wait_log("APP: slow request started twice")
    start = time.monotonic()
    server.send_signal(signal.SIGTERM)
    server.wait_log("Shutting down")
    server.send_signal(signal.SIGINT)
    server.wait_exit(10)
    assert time.monotonic() - start < 8
    assert conn.wait_closed(5)


# ---- limits -------------------------------------------------------------------------------------


def test_limit_concurrency_answers_503(appbin):
    server = appbin("--limit-concurrency", "1")
    busy = server.connect(timeout=15)
    busy.send(build_request("GET", "/slow?s=1.5&tag=busy"))
    server.wait_log("APP: slow request started busy")
    with server.connect() as conn:
        resp = conn.request("GET", "/")
        assert resp.status == 503
    server.wait_log("Exceeded concurrency limit")
    assert busy.read_response().body == b"slow done busy"
    busy.close()
    time.sleep(0.2)
    with server.connect() as conn:
        assert conn.request("GET", "/").status == 200


def test_limit_max_requests_exits(appbin):
    server = appbin("--limit-max-requests", "3")
    for _ in range(3):
        with server.connect() as conn:
            resp = conn.request("GET", "/", headers=[("Connection", "close")])
            assert resp.status == 200 and resp.body == b"hello"
    assert server.wait_exit(15) == 0
    log = server.log()
    assert re.search(r"[Mm]aximum request limit", log)
    assert "Application shutdown complete." in log


def test_limit_max_requests_on_one_keep_alive_connection(appbin):
    server = appbin("--limit-max-requests", "2")
    with server.connect() as conn:
        assert conn.request("GET", "/").status == 200
        resp = conn.request("GET", "/")
        assert resp.status == 200
        assert resp.header("connection") == "close"
        assert conn.wait_closed(5)
    assert server.wait_exit(15) == 0


# ---- scope options ------------------------------------------------------------------------------


def test_root_path(appbin):
    server = appbin("--root-path", "/api/v1")
    scope = _scope(server)
    assert scope["root_path"] == "/api/v1"
    assert scope["path"] == "/api/v1/scope"
    assert scope["raw_path"] == "/api/v1/scope"


PROXIED = [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")]


def test_proxy_headers_trusted_by_default_from_localhost(appbin):
    server = appbin()
    scope = _scope(server, headers=PROXIED)
    assert scope["client"] == ["203.0.113.7", 0]
    assert scope["scheme"] == "https"


def test_access_log_shows_the_proxied_client(appbin):
    """Behind a trusted proxy the access log names the real client, as
    uvicorn's does (it logs scope["client"])."""
    server = appbin()
    with server.connect() as conn:
        conn.request("GET", "/?proxied=1", headers=PROXIED)
    server.wait_log(r'^INFO:     203\.0\.113\.7:0 - "GET /\?proxied=1 HTTP/1\.1" 200 OK$')


def test_proxy_headers_from_an_untrusted_peer_are_ignored(appbin):
    server = appbin("--forwarded-allow-ips", "10.9.8.7")
    with server.connect() as conn:
        resp = conn.request("GET", "/scope", headers=PROXIED)
        port = conn.local_port
    scope = json.loads(resp.body)
    assert scope["client"] == ["127.0.0.1", port]
    assert scope["scheme"] == "http"


def test_no_proxy_headers(appbin):
    server = appbin("--no-proxy-headers")
    scope = _scope(server, headers=PROXIED)
    assert scope["client"][0] == "127.0.0.1"
    assert scope["scheme"] == "http"


def test_proxy_chain(appbin):
    server = appbin("--forwarded-allow-ips", "127.0.0.1, 198.51.100.2")
    chain = [("X-Forwarded-For", "192.0.2.1, 203.0.113.9, 198.51.100.2")]
    # the right-most address that is not a trusted proxy
    assert _scope(server, headers=chain)["client"] == ["203.0.113.9", 0]
    server_all = appbin("--forwarded-allow-ips", "*")
    assert _scope(server_all, headers=chain)["client"] == ["192.0.2.1", 0]


# ---- response headers and logging ----------------------------------------------------------------


def test_extra_headers(appbin):
    server = appbin("--header", "X-Deployment: blue", "--header", "X-Team:core")
    for path in ("/", "/missing", "/chunks"):
        resp = server.get(path)
        assert resp.headers["x-deployment"] == "blue"
        assert resp.headers["x-team"] == "core"


def test_no_server_header(appbin):
    server = appbin("--no-server-header")
    with server.connect() as conn:
        resp = conn.request("GET", "/")
    assert resp.header("server") is None
    assert resp.header("date") is not None


def test_no_date_header(appbin):
    server = appbin("--no-date-header")
    with server.connect() as conn:
        resp = conn.request("GET", "/")
    assert resp.header("date") is None
    assert resp.header("server") == "appbin"


def test_no_access_log(appbin):
    server = appbin("--no-access-log")
    for _ in range(3):
        assert server.get("/").status_code == 200
    server.get("/missing")
    time.sleep(0.3)
    assert server.stop() == 0
    log = server.log()
    assert '"GET / HTTP/1.1"' not in log
    assert "Application startup complete." in log  # other logging goes on


def test_access_log_on_by_default(appbin):
    server = appbin()
    with server.connect() as conn:
        conn.request("POST", "/echo?x=y", body=b"abc")
        port = conn.local_port
    server.wait_log(r'^INFO:     127\.0\.0\.1:%d - "POST /echo\?x=y HTTP/1\.1" 200 OK$' % port)


def test_log_level_warning_hides_info(appbin):
    port = free_port()
    server = appbin("--log-level", "warning", "--port", port, ready=False)
    deadline = time.monotonic() + 30
    while True:
        try:
            with RawConn(port, timeout=2) as conn:
                assert conn.request("GET", "/").status == 200
            break
        except (OSError, EOFError):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
    server.port = port
    with server.connect() as conn:
        assert conn.request("GET", "/raise-before").status == 500
    server.wait_log(r"ERROR:    Exception in ASGI application")
    assert server.stop() == 0
    log = server.log()
    assert "INFO:" not in log


# ---- other ways to listen -----------------------------------------------------------------------


def test_unix_socket(appbin, tmp_path):
    path = tmp_path / "app.sock"
    server = appbin("--uds", path)
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    transport = httpx.HTTPTransport(uds=str(path))
    with httpx.Client(transport=transport, base_url="http://localhost", timeout=10) as client:
        assert client.get("/").text == "hello"
        scope = client.get("/scope").json()
        assert scope["path"] == "/scope"
        assert client.post("/echo", content=b"over uds").content == b"over uds"
    with RawConn(uds=str(path)) as conn:
        assert conn.request("GET", "/").body == b"hello"
    assert server.stop() == 0
    assert not path.exists(), "the unix socket file is left behind"


def test_unix_socket_replaces_a_stale_socket_file(appbin, tmp_path):
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    server = appbin("--uds", path)
    with RawConn(uds=str(path)) as conn:
        assert conn.request("GET", "/").body == b"hello"
    server.stop()


def test_inherited_tcp_socket(appbin):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    fd = listener.fileno()
    try:
        server = appbin("--fd", fd, pass_fds=(fd,))
        server.port = port
        assert server.get("/").text == "hello"
        assert _scope(server)["server"] == ["127.0.0.1", port]
        assert server.stop() == 0
    finally:
        listener.close()


def test_inherited_unix_socket(appbin, tmp_path):
    path = str(tmp_path / "inherited.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(16)
    fd = listener.fileno()
    try:
        server = appbin("--fd", fd, pass_fds=(fd,))
        with RawConn(uds=path) as conn:
            assert conn.request("GET", "/").body == b"hello"
        assert server.stop() == 0
    finally:
        listener.close()


def test_bad_fd_exits_1(appbin):
    rc, out = appbin.run("--fd", "77")
    assert rc == 1, out
    assert "77" in out


def test_ipv6_loopback(appbin):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 here")
    server = appbin("--host", "::1")
    assert server.where.startswith("http://[::1]:")
    with socket.create_connection(("::1", server.port), timeout=5) as sock:
        conn = RawConn(sock=sock)
        resp = conn.request("GET", "/scope")
    scope = json.loads(resp.body)
    assert scope["client"][0] == "::1"
    server.stop()


def test_collector_is_on_and_start_up_frozen_once_serving(appbin):
    """Start-up runs without the cyclic collector; serving runs with it, and
    what start-up made is frozen out of its way."""
    server = appbin()
    state = httpx.get(server.where + "/gc").json()
    assert state["enabled"] is True
    assert state["frozen"] > 1000
    server.stop()


# ---- worker processes ----------------------------------------------------------------------------


def _wait_serving(port, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with RawConn(port, timeout=2) as conn:
                if conn.request("GET", "/").status == 200:
                    return
        except (OSError, EOFError):
            time.sleep(0.1)
    raise AssertionError(f"nothing serves on port {port}")


def _serving_pids(port, attempts):
    pids = set()
    for _ in range(attempts):
        with RawConn(port, timeout=5) as conn:
            pids.add(int(conn.request("GET", "/pid").body))
    return pids


def _pids_with_one_blocked(server, port):
    """(pid of a worker whose loop a request blocks, pid that answers meanwhile).

    With one shared listening socket the kernel wakes every worker and the
    quickest accepts, so sequential connections may all land on one worker.
    A blocked worker cannot accept: whoever answers meanwhile is another one.
    """
    blocked = {}

    def blocking_request():
        with RawConn(port, timeout=20) as conn:
            blocked["pid"] = int(conn.request("GET", "/pid?block=3").body)

    thread = threading.Thread(target=blocking_request)
    before = server.log().count(" blocking")
    thread.start()
    deadline = time.monotonic() + 10
    while server.log().count(" blocking") == before:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.02)
    others = _serving_pids(port, 3)
    thread.join()
    assert len(others) == 1 and blocked["pid"] not in others, (blocked, others)
    return blocked["pid"], others.pop()


def _wait_workers(server, n, timeout=30):
    """The n worker pids, once each has logged its startup."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = children_of(server.pid)
        if len(kids) == n and server.log().count("Application startup complete.") >= n:
            return kids
        time.sleep(0.1)
    raise AssertionError(f"workers of {server.pid}: {children_of(server.pid)}\n{server.log()}")


def test_workers(appbin):
    port = free_port()
    server = appbin("--workers", "2", "--port", port, ready=False)
    server.port = port
    try:
        _wait_serving(port)
        workers = _wait_workers(server, 2)
        # both workers serve: while one is blocked the other answers
        assert set(_pids_with_one_blocked(server, port)) == set(workers)
        assert server.log().count("APP: lifespan startup") == 2  # each worker runs it

        # a worker that dies is replaced
        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while True:
            kids = children_of(server.pid)
            if len(kids) == 2 and victim not in kids:
                break
            assert time.monotonic() < deadline, f"not restarted: {kids}\n{server.log()}"
            time.sleep(0.1)
        replacement = (set(kids) - set(workers)).pop()
        deadline = time.monotonic() + 10
        while server.log().count("Application startup complete.") < 3:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        assert set(_pids_with_one_blocked(server, port)) == set(kids)
        assert replacement in kids

        # SIGTERM stops them all, exit 0
        server.send_signal(signal.SIGTERM)
        assert server.wait_exit(30) == 0
        for pid in kids:
            deadline = time.monotonic() + 5
            while pid_alive(pid):
                assert time.monotonic() < deadline, f"worker {pid} outlived the parent"
                time.sleep(0.05)
        assert server.log().count("APP: lifespan shutdown") >= 2
    finally:
        server.kill_group()


def test_workers_finish_in_flight_requests_on_sigterm(appbin):
    port = free_port()
    server = appbin("--workers", "2", "--port", port, ready=False)
    server.port = port
    try:
        _wait_serving(port)
        _wait_workers(server, 2)
        conn = RawConn(port, timeout=15)
        conn.send(build_request("GET", "/slow?s=2&tag=wk"))
        server.wait_log("APP: slow request started wk")
        server.send_signal(signal.SIGTERM)
        assert conn.read_response().body == b"slow done wk"
        assert server.wait_exit(30) == 0
    finally:
        server.kill_group()


def test_workers_with_a_failing_app_exit_non_zero(appbin):
    port = free_port()
    rc, out = appbin.run("--workers", "2", "--port", port, "--app",
                         "appbin_serverapps.raw:startup_failed", timeout=60)
    assert rc != 0
    assert "raw startup failed: database unreachable" in out


def test_default_app_is_the_packed_one(appbin):
    """No --app: the app given to appbin-pack (RAW_APP) serves."""
    server = appbin()
    assert "--app" not in server.args
    assert server.get("/").text == "hello"

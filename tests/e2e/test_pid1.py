"""app.bin as PID 1 of a PID namespace, as a container's entrypoint runs it.

A single server (or `app.bin python`) as PID 1 forks an init in front of
itself (host/pid1.c): the init reaps every process orphaned in the namespace
and passes signals on; the server or program runs as its child. Each test
starts app.bin with `unshare -r --pid --fork --mount-proc` (a user, PID and
mount namespace, with /proc of the new PID namespace), the ops app
(fixtures/appbin_opsapps) showing the processes from inside.
"""

import os
import pty
import signal
import subprocess
import termios
import time

import pytest

from conftest import OPS_APP
from hostutil import clean_env, unshare_works
from server_fixtures import AppBin, children_of

UNSHARE = ("unshare", "-r", "--pid", "--fork", "--kill-child", "--mount-proc")

pytestmark = pytest.mark.skipif(
    not unshare_works(*UNSHARE[1:]) or not os.path.exists(f"/proc/{os.getpid()}/task"),
    reason="unshare -r --pid --mount-proc (user, PID and mount namespaces) is not available here")


class Namespace:
    """app.bin ARGS as PID 1 of a new PID namespace; its log in LOG."""

    def __init__(self, exe, args, log_path, **popen):
        self.server = AppBin(UNSHARE[0], [*UNSHARE[1:], exe, *args], log_path, env=clean_env(),
                             **popen)
        self.proc = self.server.proc

    def pid1(self):
        """The host's pid of the namespace's PID 1 (unshare's child)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            kids = children_of(self.proc.pid)
            if kids:
                return kids[0]
            time.sleep(0.01)
        raise AssertionError(f"unshare has no child:\n{self.server.log()}")

    def wait(self, timeout=20):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"PID 1 still running after {timeout}s:\n{self.server.log()}")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()  # --kill-child: the namespace goes with it
            self.proc.wait(10)


@pytest.fixture
def namespace(ops_app_bin, tmp_path):
    started = []

    def start(*args, app=True, **popen):
        args = ["--app", OPS_APP, "--port", "0", *args] if app else list(args)
        ns = Namespace(ops_app_bin, args, tmp_path / f"ns-{len(started)}.log", **popen)
        started.append(ns)
        return ns

    yield start
    for ns in started:
        ns.close()


def test_server_runs_under_an_init_that_reaps_orphans(namespace):
    ns = namespace("--log-level", "debug")
    server = ns.server.wait_ready()
    seen = server.get("/processes").json()
    assert seen["pid"] != 1 and seen["ppid"] == 1, seen  # PID 1 is the init
    assert sorted(seen["processes"]) == sorted(["1", str(seen["pid"])]), seen
    orphan = server.get("/orphan", params={"s": "0.5"}).text
    processes = server.get("/processes").json()["processes"]
    assert processes[orphan] == ["S", 1], processes  # its sh is gone: PID 1 adopted it
    deadline = time.monotonic() + 10
    while orphan in processes and time.monotonic() < deadline:
        time.sleep(0.05)
        processes = server.get("/processes").json()["processes"]
    # reaped once it exited (without the init it stays a zombie, state Z, for good)
    assert orphan not in processes, processes
    os.kill(ns.pid1(), signal.SIGTERM)
    assert ns.wait() == 0
    log = ns.server.log()
    assert "Received SIGTERM" in log and "Finished server process" in log, log


def test_init_passes_signals_on_and_the_server_drains(namespace):
    """SIGTERM to PID 1 (docker stop, the kubelet) reaches the server once: an
    in-flight request finishes, exit status 0."""
    ns = namespace("--timeout-graceful-shutdown", "10", "--log-level", "debug")
    server = ns.server.wait_ready()
    conn = server.connect(timeout=15)
    conn.send(b"GET /block?s=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)  # the request is in the app
    os.kill(ns.pid1(), signal.SIGTERM)
    resp = conn.read_response()
    assert resp.status == 200 and resp.body == b"unblocked"
    assert ns.wait() == 0
    log = ns.server.log()
    assert log.count("Received SIGTERM") == 1, log


def test_a_server_killed_by_a_signal_is_the_init_s_exit_status(namespace):
    ns = namespace()
    server = ns.server.wait_ready()
    server_pid = server.get("/processes").json()["pid"]
    with pytest.raises(Exception):
        server.get("/kill", params={"sig": str(int(signal.SIGKILL))})
    assert ns.wait() == 128 + signal.SIGKILL
    assert (f"Process [{server_pid}] killed by SIGKILL: exiting with status 137"
            in ns.server.log()), ns.server.log()


def test_python_mode_under_the_init(namespace):
    ns = namespace("python", "-c", "import os, sys; print(os.getpid(), os.getppid()); sys.exit(3)",
                   app=False)
    assert ns.wait() == 3
    pid, ppid = map(int, ns.server.log().split())
    assert pid != 1 and ppid == 1


def test_sigterm_stops_a_python_program_as_pid_1(namespace):
    """Python as PID 1 has no SIGTERM handler, so the kernel discarded the
    signal and `docker stop` waited for its SIGKILL; under the init the
    program ends at once, as anywhere else (143: SIGTERM)."""
    ns = namespace("python", "-c", "import time; print('ready', flush=True); time.sleep(60)",
                   app=False)
    ns.server.wait_log("ready")
    os.kill(ns.pid1(), signal.SIGTERM)
    assert ns.wait(10) == 128 + signal.SIGTERM
    assert "killed by SIGTERM: exiting with status 143" in ns.server.log()


def test_ctrl_c_in_a_terminal_reaches_the_server_once(namespace, tmp_path):
    """A terminal's Ctrl-C signals the whole foreground process group, the
    server included: the init must not pass on the copy it gets (a second
    SIGINT stops the server at once, cutting requests off)."""
    master, slave = pty.openpty()

    def controlling_terminal():
        os.setsid()
        import fcntl

        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    ns = namespace("--log-level", "debug", stdin=slave, preexec_fn=controlling_terminal)
    os.close(slave)
    try:
        server = ns.server.wait_ready()
        conn = server.connect(timeout=15)
        conn.send(b"GET /block?s=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        os.write(master, b"\x03")  # ^C: SIGINT to the terminal's foreground group
        resp = conn.read_response()
        assert resp.status == 200 and resp.body == b"unblocked"
        assert ns.wait() == 0
    finally:
        os.close(master)
    log = ns.server.log()
    assert "Received SIGINT: stopping" in log, log
    assert "Received SIGINT again" not in log, log

"""app.bin as PID 1 of a PID namespace, as a container's entrypoint runs it.

A single server (or `app.bin python`) as PID 1 forks an init in front of
itself (host/pid1.c): the init reaps every process orphaned in the namespace
and passes every signal on, once; the server or program runs as its child,
in a session of its own. Each test starts app.bin with `unshare -r --pid
--fork --mount-proc` (a user, PID and mount namespace, with /proc of the new
PID namespace); the ops app (fixtures/appbin_opsapps) shows the processes
from inside.
"""

import fcntl
import os
import pty
import shutil
import signal
import socket
import subprocess
import termios
import time

import httpx
import pytest

from conftest import OPS_APP
from hostutil import clean_env, unshare_works
from server_fixtures import AppBin, children_of

UNSHARE = ("unshare", "-r", "--pid", "--fork", "--kill-child", "--mount-proc")

pytestmark = pytest.mark.skipif(
    not unshare_works(*UNSHARE[1:]) or not os.path.exists(f"/proc/{os.getpid()}/task"),
    reason="unshare -r --pid --mount-proc (user, PID and mount namespaces) is not available here")


class Namespace:
    """app.bin ARGS as PID 1 of a new PID namespace, its output in a log."""

    def __init__(self, exe, args, log_path, prefix=(), inner=(), **popen):
        """prefix: a command that runs unshare; inner: one that unshare runs,
        which execs app.bin (PID 1 stays app.bin)."""
        command = [*prefix, *UNSHARE, *inner, exe, *args]
        self.server = AppBin(command[0], command[1:], log_path, env=clean_env(), **popen)
        self.proc = self.server.proc
        self.exe = str(exe)

    def pid1(self):
        """The host's pid of the namespace's PID 1 (app.bin under unshare)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            todo = [self.proc.pid]
            while todo:  # unshare's child (under strace, a grandchild of strace)
                pid = todo.pop()
                try:
                    if os.readlink(f"/proc/{pid}/exe") == self.exe:
                        return pid
                except OSError:
                    pass
                todo += children_of(pid)
            time.sleep(0.005)
        raise AssertionError(f"no app.bin under {self.proc.args}:\n{self.server.log()}")

    def wait(self, timeout=20):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout}s:\n{self.server.log()}")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()  # --kill-child: the namespace goes with unshare
            self.proc.wait(10)


@pytest.fixture
def namespace(ops_app_bin, tmp_path):
    """namespace(*args, app=True, prefix=(), **popen) -> Namespace running the
    ops app (app=False: app.bin ARGS as given) as PID 1."""
    started = []

    def start(*args, app=True, **kw):
        args = ["--app", OPS_APP, "--port", "0", *args] if app else list(args)
        ns = Namespace(ops_app_bin, args, tmp_path / f"ns-{len(started)}.log", **kw)
        started.append(ns)
        return ns

    yield start
    for ns in started:
        ns.close()


@pytest.fixture
def terminal():
    """(master, slave) of a new pty; the test closes slave once app.bin has
    it, master is closed at the end."""
    master, slave = pty.openpty()
    yield master, slave
    os.close(master)


def _stop_during_a_request(ns, stop):
    """GET /sleep?s=1 on the ready server, stop() while it is in the app: the
    request still gets its 200 and app.bin exits 0. Returns the log."""
    conn = ns.server.connect(timeout=15)
    conn.send(b"GET /sleep?s=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.5)  # the request is in the app
    stop()
    resp = conn.read_response()
    assert resp.status == 200 and resp.body == b"slept"
    assert ns.wait() == 0
    return ns.server.log()


def _default_sigint():
    # a runner started as a background job (`cmd &`) hands SIGINT down ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _controlling_terminal(tty_fd):
    """unshare leads the terminal's session; PID 1 is in its foreground group."""
    def preexec():
        _default_sigint()
        os.setsid()
        fcntl.ioctl(tty_fd, termios.TIOCSCTTY, 0)
    return preexec


# As `docker run -it` starts PID 1 (runc: setsid, then TIOCSCTTY on the
# console): app.bin leads the session of the terminal on its stdin.
DOCKER_IT = ("setsid", "--ctty")


def test_server_runs_under_an_init_that_reaps_orphans(namespace):
    ns = namespace("--log-level", "debug")
    server = ns.server.wait_ready()
    seen = server.get("/processes").json()
    assert seen["pid"] != 1 and seen["ppid"] == 1, seen  # PID 1 is the init
    assert seen["sid"] == seen["pid"], seen  # in a session of its own
    assert sorted(seen["processes"]) == sorted(["1", str(seen["pid"])]), seen
    orphan = server.get("/orphan", params={"s": "2"}).text
    processes = server.get("/processes").json()["processes"]
    assert processes[orphan][1] == 1, processes  # its sh is gone: PID 1 adopted it
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


def test_sigterm_to_pid_1_drains_the_server(namespace):
    """docker stop, the kubelet: SIGTERM to PID 1 reaches the server once, an
    in-flight request finishes, exit status 0."""
    ns = namespace("--timeout-graceful-shutdown", "10", "--log-level", "debug")
    ns.server.wait_ready()
    log = _stop_during_a_request(ns, lambda: os.kill(ns.pid1(), signal.SIGTERM))
    assert log.count("Received SIGTERM") == 1, log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_group_signal_reaches_the_server_once(namespace, sig):
    """A signal to PID 1's whole process group (a shell's or systemd's kill of
    the group): the server gets it from the init only; a second SIGINT would
    stop it at once, a late second SIGTERM kill it after a clean stop."""
    ns = namespace("--log-level", "debug", session=True)
    ns.server.wait_ready()
    os.killpg(ns.proc.pid, sig)  # unshare leads the group; it blocks both signals
    assert ns.wait() == 0
    log = ns.server.log()
    assert log.count("Received SIG") == 1 and "Finished server process" in log, log


SIGTERM_SENDERS = """
import signal, time
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
print("ready", flush=True)
senders = [signal.sigwaitinfo({signal.SIGTERM}).si_pid]
time.sleep(1)
while signal.SIGTERM in signal.sigpending():
    senders.append(signal.sigwaitinfo({signal.SIGTERM}).si_pid)
print("SIGTERM from", senders, flush=True)
"""


def test_a_group_signal_reaches_a_program_once(namespace):
    """Each signal the program gets comes from the init (pid 1), none from
    the test directly (pid 0: a sender outside the namespace)."""
    ns = namespace("python", "-c", SIGTERM_SENDERS, app=False, session=True)
    ns.server.wait_log("ready")
    os.killpg(ns.proc.pid, signal.SIGTERM)
    assert ns.wait() == 0
    assert "SIGTERM from [1]\n" in ns.server.log(), ns.server.log()


def test_the_init_keeps_only_stdout_and_stderr(namespace):
    """A listening socket passed with --fd (or a stdin pipe) is not held open
    by the init: it closes when the server closes it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        fd = listener.fileno()
        ns = namespace("--app", OPS_APP, "--fd", str(fd), app=False, pass_fds=(fd,),
                       stdin=subprocess.PIPE)
        ns.server.wait_log("running on")
        port = listener.getsockname()[1]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        assert client.get("/health").text == "ok"
    pid1 = ns.pid1()
    assert sorted(os.listdir(f"/proc/{pid1}/fd")) == ["0", "1", "2"]
    assert os.readlink(f"/proc/{pid1}/fd/0") == "/dev/null"
    os.kill(pid1, signal.SIGTERM)
    assert ns.wait() == 0


def test_a_server_killed_by_a_signal_is_the_init_s_exit_status(namespace):
    ns = namespace()
    server = ns.server.wait_ready()
    server_pid = server.get("/processes").json()["pid"]
    with pytest.raises(Exception):
        server.get("/kill", params={"sig": str(int(signal.SIGKILL))})
    assert ns.wait() == 128 + signal.SIGKILL
    assert (f"Server process [{server_pid}] killed by SIGKILL: exiting with status 137"
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
    assert ns.server.log() == "ready\n"  # a program's end by a signal is not logged


@pytest.mark.skipif(not shutil.which("strace"), reason="strace is not installed")
def test_sigterm_while_python_mode_starts_is_not_lost(namespace, ops_app_bin):
    """A SIGTERM that reaches PID 1 before the init is forked (strace holds
    main()'s opening of app.bin, payload_open, for 1 s): pending, not
    discarded; the init passes it on and the program ends."""
    ns = namespace("python", "-c", "import time; time.sleep(5); print('ran to the end')",
                   app=False, session=True,
                   prefix=("strace", "-f", "-qq", "-o", "/dev/null", "-P", ops_app_bin,
                           "-e", "trace=openat", "-e", "inject=openat:delay_exit=1000000:when=1"))
    pid1 = ns.pid1()
    time.sleep(0.3)  # within the delayed readlink
    os.kill(pid1, signal.SIGTERM)
    assert ns.wait(10) == 128 + signal.SIGTERM
    assert "ran to the end" not in ns.server.log()


def test_ctrl_c_in_a_terminal_reaches_the_server_once(namespace, terminal):
    """`docker run -it`: a terminal's Ctrl-C signals the terminal's foreground
    process group, the init's; the server gets it once, through the init."""
    master, slave = terminal
    ns = namespace("--log-level", "debug", stdin=slave, preexec_fn=_controlling_terminal(slave))
    os.close(slave)
    ns.server.wait_ready()
    log = _stop_during_a_request(ns, lambda: os.write(master, b"\x03"))  # ^C
    assert "Received SIGINT: stopping" in log, log
    assert "Received SIGINT again" not in log, log


CATCH_ONE_CTRL_C = """
import time
print("ready", flush=True)
try:
    time.sleep(30)
except KeyboardInterrupt:
    print("interrupted", flush=True)
time.sleep(1)  # a second SIGINT would interrupt this
print("done", flush=True)
"""


def test_ctrl_c_in_a_terminal_reaches_a_program_once(namespace, terminal):
    master, slave = terminal
    ns = namespace("python", "-c", CATCH_ONE_CTRL_C, app=False, stdin=slave,
                   preexec_fn=_controlling_terminal(slave))
    os.close(slave)
    ns.server.wait_log("ready")
    os.write(master, b"\x03")
    assert ns.wait() == 0, ns.server.log()
    assert ns.server.log() == "ready\ninterrupted\ndone\n"


def test_ctrl_c_under_docker_run_it_reaches_the_server_once(namespace, terminal):
    """PID 1 leads the terminal's session: the init hands the terminal to the
    server, whose process group Ctrl-C then signals (the init gets none)."""
    master, slave = terminal
    ns = namespace("--log-level", "debug", inner=DOCKER_IT, stdin=slave, preexec_fn=_default_sigint)
    os.close(slave)
    seen = ns.server.wait_ready().get("/processes").json()
    assert seen["ppid"] == 1 and seen["sid"] == seen["pid"], seen
    log = _stop_during_a_request(ns, lambda: os.write(master, b"\x03"))
    assert log.count("Received SIGINT") == 1, log


TERMINAL_PROGRAM = """
import os, time
print("foreground", os.tcgetpgrp(0) == os.getpgrp(), flush=True)
with open("/dev/tty", "rb"):
    print("has /dev/tty", flush=True)
t0 = time.monotonic()
status = os.system("sleep 5")
print("sleep ended by", os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
      "after", round(time.monotonic() - t0), "s", flush=True)
"""


def test_a_program_under_docker_run_it_owns_the_terminal(namespace, terminal):
    """`docker run -it IMAGE python ...`: the program has the terminal (its
    process group in the foreground, /dev/tty opens), so Ctrl-C reaches
    what it runs: os.system()'s sleep ends at once, not after 5 s."""
    master, slave = terminal
    ns = namespace("python", "-c", TERMINAL_PROGRAM, app=False, inner=DOCKER_IT, stdin=slave,
                   preexec_fn=_default_sigint)
    os.close(slave)
    ns.server.wait_log("has /dev/tty")
    time.sleep(0.3)  # in os.system()
    os.write(master, b"\x03")
    assert ns.wait() == 0, ns.server.log()
    assert ns.server.log() == "foreground True\nhas /dev/tty\nsleep ended by 2 after 0 s\n"

"""HTTP benchmark: app.bin side by side with uvicorn[standard] and granian.

Every server runs the same app with one worker on loopback; wrk drives them
in interleaved rounds (so a noisy neighbour hurts all of them alike), and for
each server the script reports requests/s, p99 latency, CPU time per request
(user + system of the server process and all its threads, read from /proc:
granian does its I/O on extra threads) and RSS after the run. Ratios are
against uvicorn.

    build/tools-venv/bin/python tests/bench/http_bench.py [--app hello|fastapi]
        [--rounds 3] [--duration 5] [--connections 64] [--markdown]
        [--python build/hosts/3.13's python] [--tls]

--tls: every server serves HTTPS with the same self-signed certificate
(RSA 2048, made by the openssl command) and wrk speaks TLS to it (its
connections are kept alive: this measures the encrypted request path, not
handshakes).

It packs the benchmark app itself (tests/bench/apps/) into build/bench/.
With --python (another Python than Debian's python3.11, e.g. the CPython
3.13 of build/hosts/3.13), the venv is made by that python, build/appbin-pack
packs it with the host of that version, and uvicorn[standard] and granian
run from that venv (the same Python on both sides).
"""

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
TOOLS = BUILD / "tools-venv" / "bin"
APPS = Path(__file__).resolve().parent / "apps"
WORK = BUILD / "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")

APP_ENTRIES = {"hello": "bench_hello:app", "fastapi": "bench_fastapi:app"}
APP_REQUIREMENTS = {"hello": [], "fastapi": ["fastapi==0.115.6", "pydantic==2.10.4"]}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


DEBIAN_PYTHON = "/usr/bin/python3.11"
# The servers the venv gets when it is not Debian's python3.11's (the tools
# venv's versions, tests/requirements.txt).
PEER_REQUIREMENTS = ["uvicorn[standard]==0.54.0", "granian==2.8.9"]


def python_tag(python):
    return subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                          capture_output=True, text=True, check=True).stdout.strip()


def bench_venv(app, python=DEBIAN_PYTHON):
    """A venv (of `python`) holding the app's requirements and the app."""
    tag = python_tag(python)
    own = python != DEBIAN_PYTHON
    venv = WORK / (f"venv-{app}-{tag}" if own else f"venv-{app}")
    if not (venv / "bin" / "python").exists():
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        requirements = APP_REQUIREMENTS[app] + (PEER_REQUIREMENTS if own else [])
        if requirements:
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q",
                            "--disable-pip-version-check", *requirements], check=True)
    site = venv / "lib" / f"python{tag}" / "site-packages"
    shutil.copy(APPS / f"bench_{app}.py", site / f"bench_{app}.py")
    return venv


def pack(app, venv):
    out = WORK / f"{app}{venv.name[len('venv-' + app):]}.bin"  # hello.bin, hello-3.13.bin
    subprocess.run([str(BUILD / "appbin-pack"), "-q", "--venv", str(venv), "--app",
                    APP_ENTRIES[app], "-o", str(out)], check=True)
    return out


def process_tree(pid):
    """pid and all its descendants (granian runs its workers as children)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def cpu_seconds(pid):
    """user + system CPU of a process tree, every thread included."""
    total = 0
    for p in process_tree(pid):
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_kib(pid):
    """Resident memory of a process tree."""
    total = 0
    for p in process_tree(pid):
        m = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{p}/status").read_text())
        total += int(m.group(1)) if m else 0
    return total


def pinned(argv, cpu):
    """argv run on one CPU (taskset), or as is when pinning is off."""
    return ["taskset", "-c", str(cpu), *argv] if cpu is not None else argv


def tls_files():
    """(certificate, key) for --tls, made once."""
    cert, key = WORK / "tls-cert.pem", WORK / "tls-key.pem"
    if not key.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        str(key), "-out", str(cert), "-days", "30", "-subj", "/CN=127.0.0.1"],
                       check=True, capture_output=True)
    return cert, key


def run_wrk(port, duration, connections, cpu=None, scheme="http"):
    out = subprocess.run(pinned(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
                          f"{scheme}://127.0.0.1:{port}/"], cpu), capture_output=True,
                         text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{errors.group(1)} non-2xx responses")
    # connect/read/write errors and timeouts would make a rate meaningless
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock and any(int(n) for n in sock.groups()):
        raise RuntimeError(f"wrk: {sock.group(0)}")
    return rps, total, float(p99.group(1)) * scale


def stop_servers(procs):
    """SIGINT every server ({name: (proc, port)}), then wait; kill what lingers."""
    for proc, _ in procs.values():
        proc.send_signal(signal.SIGINT)
    for proc, _ in procs.values():
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def print_markdown(header, rows):
    """Rows of (name, rate, ratio, p99 ms, CPU us, RSS MiB) as a markdown table."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print(f"| {row[0]} | {row[1]:,.0f} | {row[2]:.2f}x | {row[3]:.2f} | {row[4]:.1f} | "
              f"{row[5]:.1f} |")


def servers(app, venv, binary, tls=None):
    entry = APP_ENTRIES[app]
    peers = venv / "bin" if (venv / "bin" / "uvicorn").exists() else TOOLS
    site = next((venv / "lib").glob("python3.*/site-packages"))
    env = dict(os.environ, PYTHONPATH=str(site))
    cert, key = map(str, tls) if tls else (None, None)
    ssl = (lambda cert_flag: [cert_flag, cert, "--ssl-keyfile", key]) if tls else (lambda _: [])
    return {
        "appbin": lambda port: ([str(binary), "--port", str(port), "--no-access-log",
                                 *ssl("--ssl-certfile")], None),
        "uvicorn": lambda port: ([str(peers / "uvicorn"), entry, "--port", str(port),
                                  "--no-access-log", "--log-level", "warning",
                                  *ssl("--ssl-certfile")], env),
        "granian": lambda port: ([str(peers / "granian"), "--interface", "asgi", "--port",
                                  str(port), "--workers", "1", "--no-ws", "--log-level",
                                  "warning", *ssl("--ssl-certificate"), entry], env),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--app", choices=sorted(APP_ENTRIES), default="hello")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--python", default=DEBIAN_PYTHON,
                        help="the python whose venv is served (default Debian's python3.11)")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction,
                        default=os.cpu_count() >= 2,
                        help="run every server on CPU 0 and wrk on CPU 1, so each server has "
                             "the same CPU budget whatever threads it uses (default with 2+ "
                             "CPUs)")
    parser.add_argument("--tls", action="store_true", help="HTTPS on every server")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    venv = bench_venv(args.app, args.python)
    binary = pack(args.app, venv)
    tls = tls_files() if args.tls else None
    scheme = "https" if tls else "http"

    server_cpu, wrk_cpu = (0, 1) if args.pin else (None, None)
    results = {name: {"rps": [], "p99": [], "cpu": [], "rss": 0} for name in
               servers(args.app, venv, binary, tls)}
    procs = {}
    try:
        for name, make in servers(args.app, venv, binary, tls).items():
            port = free_port()
            argv, env = make(port)
            proc = subprocess.Popen(pinned(argv, server_cpu), env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_port(port, proc)
            run_wrk(port, 1, args.connections, wrk_cpu, scheme)  # warm-up
            procs[name] = (proc, port)
        for _ in range(args.rounds):
            for name, (proc, port) in procs.items():
                cpu0 = cpu_seconds(proc.pid)
                rps, total, p99 = run_wrk(port, args.duration, args.connections, wrk_cpu,
                                          scheme)
                cpu = cpu_seconds(proc.pid) - cpu0
                results[name]["rps"].append(rps)
                results[name]["p99"].append(p99)
                results[name]["cpu"].append(cpu / total * 1e6)
        for name, (proc, _) in procs.items():
            results[name]["rss"] = rss_kib(proc.pid)
    finally:
        stop_servers(procs)

    base = statistics.median(results["uvicorn"]["rps"])
    rows = []
    for name, r in results.items():
        rps = statistics.median(r["rps"])
        rows.append((name, rps, rps / base, statistics.median(r["p99"]),
                     statistics.median(r["cpu"]), r["rss"] / 1024))
    header = ("server", "req/s (median)", "vs uvicorn", "p99 ms", "CPU us/req", "RSS MiB")
    if args.markdown:
        print_markdown(header, rows)
    else:
        print(f"{'server':10} {'req/s':>10} {'ratio':>7} {'p99 ms':>8} {'CPU us/req':>11} "
              f"{'RSS MiB':>8}")
        for row in rows:
            print(f"{row[0]:10} {row[1]:10,.0f} {row[2]:6.2f}x {row[3]:8.2f} {row[4]:11.1f} "
                  f"{row[5]:8.1f}")
    print(f"app={args.app}{' tls' if tls else ''} rounds={args.rounds} duration={args.duration}s "
          f"connections={args.connections} (wrk -t1, loopback, one worker each"
          f"{', servers on CPU 0 and wrk on CPU 1' if args.pin else ''})")


if __name__ == "__main__":
    sys.exit(main())

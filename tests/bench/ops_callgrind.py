"""Instructions per request of the hello-world app under callgrind, with the
operations features off and on: the access log (text, JSON), the metrics
endpoint. Repeatable on a loaded machine, unlike wall-clock figures.

    build/tools-venv/bin/python tests/bench/ops_callgrind.py [--host build/appbin-host]
        [--requests 4000] [--repeat 3] [--config NAME ...] [--functions]

Each configuration packs tests/bench/apps/bench_hello.py with the host,
starts app.bin under valgrind --tool=callgrind with instrumentation off,
warms up with 300 keep-alive requests, counts the instructions of the next
--requests ones (callgrind_control -i on/off; every thread of the process),
and prints instructions per request: the median (and the range) of
--repeat runs, interleaved, since whole-process counts move by several
percent from run to run (how the asyncio loop's iterations fall under
valgrind). --functions (a host with symbols: cmake -B build-prof
-DCMAKE_BUILD_TYPE=RelWithDebInfo) also prints, per request, the inclusive
instructions of the server's pump (server_pump: libuv, the HTTP layer, the
ASGI bridge and the app's step; within 1% from run to run) and of the
operations functions on the request path, exact.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"
WORK = ROOT / "build" / "bench-ops"

CONFIGS = {
    "access-log-off": ["--no-access-log"],
    "access-log-text": [],
    "access-log-json": ["--log-format", "json"],
    "metrics": ["--no-access-log", "--metrics-port", "0"],
    "metrics+json": ["--log-format", "json", "--metrics-port", "0"],
}
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def hello_venv():
    venv = WORK / "venv-hello"
    if not (venv / "bin" / "python").exists():
        subprocess.run(["/usr/bin/python3.11", "-m", "venv", "--without-pip", str(venv)],
                       check=True)
    shutil.copy(APPS / "bench_hello.py", venv / "lib" / "python3.11" / "site-packages")
    return venv


def pack(host):
    out = WORK / "hello.bin"
    subprocess.run([str(ROOT / "build" / "appbin-pack"), "-q", "--venv", str(hello_venv()),
                    "--app", "bench_hello:app", "--host", str(host), "-o", str(out)], check=True)
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PIPELINE = 1


def requests(port, n):
    """n requests on one keep-alive connection, PIPELINE at a time."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        for done in range(0, n, PIPELINE):
            batch = min(PIPELINE, n - done)
            s.sendall(REQUEST * batch)
            data = b""
            while data.count(b"Hello, world!") < batch:
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("connection closed")
                data += chunk


# The operations code on the request path (and, for a host from before it,
# the access log's functions then: format_log_prefix, asgi_log_access).
FUNCTIONS = ("asgi_log_response", "server_sync_gauges", "uv_hrtime", "on_response_done",
             "metrics_observe_slow", "access_text", "access_json", "asgi_log_flush",
             "format_log_prefix", "asgi_log_access", "server_pump", "asgi_task_run_eager",
             "asgi_start_app", "task_step")


def measure(app, args, n, functions=False):
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        log = open(Path(tmp) / "log", "wb")
        proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                 f"--callgrind-out-file={out}", str(app), "--port", str(port),
                                 *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError((Path(tmp) / "log").read_text())
                    time.sleep(0.2)
            requests(port, 300)
            subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True,
                           capture_output=True)
            requests(port, n)
            subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True,
                           capture_output=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
            log.close()
        total = 0
        for path in Path(tmp).glob("callgrind.out*"):
            for line in path.read_text().splitlines():
                m = re.match(r"totals: (\d+)", line)
                if m:
                    total += int(m.group(1))
                    break
        costs = {}
        if functions:
            annotated = subprocess.run(
                ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(out)],
                capture_output=True, text=True).stdout
            for line in annotated.splitlines():
                m = re.match(r"\s*([\d,]+) \([^)]*\)\s+\S*:(\w+)(?:'\d+)? ", line)
                if m and m.group(2) in FUNCTIONS:
                    costs[m.group(2)] = costs.get(m.group(2), 0) + int(
                        m.group(1).replace(",", "")) / n
        return total / n, costs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=str(ROOT / "build" / "appbin-host"))
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--config", action="append", choices=sorted(CONFIGS))
    parser.add_argument("--functions", action="store_true")
    parser.add_argument("--pipeline", type=int, default=1,
                        help="requests sent together (1: one at a time)")
    opts = parser.parse_args()
    global PIPELINE
    PIPELINE = opts.pipeline
    WORK.mkdir(parents=True, exist_ok=True)
    app = pack(opts.host)
    names = opts.config or list(CONFIGS)
    runs = {name: [] for name in names}
    for _ in range(opts.repeat):
        for name in names:
            per_request, costs = measure(app, CONFIGS[name], opts.requests, opts.functions)
            runs[name].append(per_request)
            detail = "  ".join(f"{f} {c:.0f}" for f, c in sorted(costs.items()))
            print(f"  run {name:18} {per_request:9.0f}  {detail}", flush=True)
    for name in names:
        values = sorted(runs[name])
        print(f"{name:18} {values[len(values) // 2]:9.0f} instructions/request "
              f"(median of {len(values)}: {values[0]:.0f} .. {values[-1]:.0f})", flush=True)


if __name__ == "__main__":
    sys.exit(main())

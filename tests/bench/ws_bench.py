"""WebSocket benchmark: app.bin side by side with uvicorn.

Echo round trips per second over N connections (default 64) with small text
messages, each connection keeping one message in flight (send, wait for the
echo, send again). Every server runs the same app with one worker on
loopback; rounds are interleaved (a noisy neighbour hurts all alike). For
each server the script reports round trips/s, p99 round-trip latency, the
server's CPU time per round trip (user + system of its process tree, from
/proc) and its RSS after the run. Ratios are against `uvicorn --ws websockets`.

The client is a small asyncio (uvloop) protocol speaking RFC 6455 itself with
pre-built masked frames, so that the client costs far less per message than
either server; no permessage-deflate is offered (small messages would not be
compressed anyway).

    build/tools-venv/bin/python tests/bench/ws_bench.py [--app fastapi|raw]
        [--rounds 3] [--duration 5] [--connections 64] [--size 16]
        [--servers appbin,uvicorn-websockets,uvicorn-sansio] [--markdown]

It packs the benchmark app (tests/bench/apps/bench_ws.py) into build/bench/.
"""

import argparse
import asyncio
import base64
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_bench import (APPS, BUILD, TOOLS, WORK, cpu_seconds, free_port,  # noqa: E402
                        print_markdown, rss_kib, stop_servers, wait_port)

APP_ENTRIES = {"fastapi": "bench_ws:app", "raw": "bench_ws:raw"}
REQUIREMENTS = ["fastapi==0.115.6", "pydantic==2.10.4"]
MASK = b"\x12\x34\x56\x78"


def bench_venv():
    """A venv (Debian's python3.11) holding FastAPI and the benchmark app."""
    import shutil

    venv = WORK / "venv-ws"
    if not (venv / "bin" / "python").exists():
        subprocess.run(["/usr/bin/python3.11", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q",
                        "--disable-pip-version-check", *REQUIREMENTS], check=True)
    site = venv / "lib" / "python3.11" / "site-packages"
    shutil.copy(APPS / "bench_ws.py", site / "bench_ws.py")
    return venv


def pack(app, venv):
    out = WORK / f"ws-{app}.bin"
    subprocess.run([str(BUILD / "appbin-pack"), "-q", "--venv", str(venv), "--app",
                    APP_ENTRIES[app], "-o", str(out)], check=True)
    return out


def servers(app, venv, binary):
    entry = APP_ENTRIES[app]
    env = dict(os.environ, PYTHONPATH=str(venv / "lib" / "python3.11" / "site-packages"))
    uvicorn = [str(TOOLS / "uvicorn"), entry, "--no-access-log", "--log-level", "warning"]
    return {
        "appbin": lambda port: ([str(binary), "--port", str(port), "--no-access-log",
                                 "--log-level", "warning"], None),
        "uvicorn-websockets": lambda port: ([*uvicorn, "--port", str(port), "--ws",
                                             "websockets"], env),
        "uvicorn-sansio": lambda port: ([*uvicorn, "--port", str(port), "--ws",
                                         "websockets-sansio"], env),
    }


# ---- the client --------------------------------------------------------------------


def masked_text_frame(payload):
    assert len(payload) < 126
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + MASK + masked


class EchoConn(asyncio.Protocol):
    """One connection: the handshake, then send / wait for the echo / send."""

    def __init__(self, bench, frame, payload_len):
        self.bench, self.frame = bench, frame
        self.reply_len = 2 + payload_len
        self.buf = bytearray()
        self.upgraded = False
        self.ready = asyncio.get_running_loop().create_future()
        self.sent_at = 0

    def connection_made(self, transport):
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                              f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                              f"Sec-WebSocket-Version: 13\r\n\r\n").encode())

    def send(self):
        self.sent_at = time.perf_counter_ns()
        self.transport.write(self.frame)

    def data_received(self, data):
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(RuntimeError(bytes(self.buf[:200])))
                return
            del self.buf[:end + 4]
            self.upgraded = True
            self.ready.set_result(None)
        bench = self.bench
        while len(self.buf) >= 2:
            length = self.buf[1] & 0x7f
            if length >= 126 or len(self.buf) < 2 + length:
                break
            opcode = self.buf[0] & 0x0f
            del self.buf[:2 + length]
            if opcode == 0x9:  # ping: pong (masked, empty payload is enough here)
                self.transport.write(b"\x8a\x80" + MASK)
                continue
            if opcode != 0x1:
                continue
            if bench.measuring:
                bench.count += 1
                bench.latencies.append(time.perf_counter_ns() - self.sent_at)
            if bench.running:
                self.send()

    def connection_lost(self, exc):
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed during the handshake"))


class Bench:
    def __init__(self):
        self.running = self.measuring = False
        self.count = 0
        self.latencies = []


async def run_client(port, connections, duration, size, pid):
    loop = asyncio.get_running_loop()
    bench = Bench()
    frame = masked_text_frame(b"x" * size)
    conns = []
    for _ in range(connections):
        _, proto = await loop.create_connection(lambda: EchoConn(bench, frame, size),
                                                "127.0.0.1", port)
        conns.append(proto)
    await asyncio.gather(*(c.ready for c in conns))
    bench.running = True
    for c in conns:
        c.send()
    await asyncio.sleep(0.5)  # warm-up
    cpu0 = cpu_seconds(pid) if pid else 0.0
    bench.measuring = True
    start = time.perf_counter()
    await asyncio.sleep(duration)
    bench.measuring = False
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(pid) - cpu0 if pid else 0.0
    bench.running = False
    await asyncio.sleep(0.2)
    for c in conns:  # a close frame (1000), then the socket
        c.transport.write(b"\x88\x82" + MASK + bytes([0x03 ^ MASK[0], 0xe8 ^ MASK[1]]))
    await asyncio.sleep(0.1)
    for c in conns:
        c.transport.close()
    lat = sorted(bench.latencies)
    p99 = lat[int(len(lat) * 0.99)] / 1e6 if lat else float("nan")
    return bench.count / elapsed, p99, cpu / max(bench.count, 1) * 1e6


def client(port, connections, duration, size, pid=None):
    """(round trips/s, p99 ms, server CPU us per round trip) of one run."""
    coro = run_client(port, connections, duration, size, pid)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--app", choices=sorted(APP_ENTRIES), default="fastapi")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--size", type=int, default=16, help="message size in bytes (< 126)")
    parser.add_argument("--servers", default="appbin,uvicorn-websockets,uvicorn-sansio")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    venv = bench_venv()
    binary = pack(args.app, venv)
    all_servers = servers(args.app, venv, binary)
    names = args.servers.split(",")
    results = {name: {"rate": [], "p99": [], "cpu": [], "rss": 0} for name in names}
    procs = {}
    try:
        for name in names:
            port = free_port()
            argv, env = all_servers[name](port)
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            wait_port(port, proc)
            client(port, args.connections, 1, args.size)  # warm-up
            procs[name] = (proc, port)
        for _ in range(args.rounds):
            for name, (proc, port) in procs.items():
                rate, p99, cpu = client(port, args.connections, args.duration, args.size,
                                        proc.pid)
                results[name]["rate"].append(rate)
                results[name]["p99"].append(p99)
                results[name]["cpu"].append(cpu)
        for name, (proc, _) in procs.items():
            results[name]["rss"] = rss_kib(proc.pid)
    finally:
        stop_servers(procs)

    base_name = "uvicorn-websockets" if "uvicorn-websockets" in results else names[-1]
    base = statistics.median(results[base_name]["rate"])
    rows = []
    for name, r in results.items():
        rate = statistics.median(r["rate"])
        rows.append((name, rate, rate / base, statistics.median(r["p99"]),
                     statistics.median(r["cpu"]), r["rss"] / 1024))
    header = ("server", "round trips/s (median)", f"vs {base_name}", "p99 ms", "CPU us/rt",
              "RSS MiB")
    if args.markdown:
        print_markdown(header, rows)
    else:
        print(f"{'server':20} {'rt/s':>10} {'ratio':>7} {'p99 ms':>8} {'CPU us/rt':>10} "
              f"{'RSS MiB':>8}")
        for row in rows:
            print(f"{row[0]:20} {row[1]:10,.0f} {row[2]:6.2f}x {row[3]:8.2f} {row[4]:10.1f} "
                  f"{row[5]:8.1f}")
    print(f"app={args.app} rounds={args.rounds} duration={args.duration}s "
          f"connections={args.connections} size={args.size}B (one worker each, loopback)")
    print("per round:", {name: [round(x) for x in r["rate"]] for name, r in results.items()})


if __name__ == "__main__":
    sys.exit(main())

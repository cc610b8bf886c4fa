"""Time from exec to the first 200 answer of an HTTP server, side by side.

Each run execs a server command, then connects to its port as fast as it can
(a failed connection is retried after 1 ms) and sends `GET PATH`; the time
is taken when a "200" status line arrives, then the server is killed. The
commands are run in turns (A, B, A, B...) so that a change of load on the
machine hits them alike. Prints, per command, the median, mean and minimum in
ms, and the ratio of each median to the first command's.

Usage: first_response.py [--runs N] [--path /] [--json FILE]
                         NAME=COMMAND [NAME=COMMAND ...]
COMMAND is split like a shell word list; {port} in it is replaced by a free
port; VAR=value words before the program set its environment.
"""

import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_200(port, path, proc, timeout):
    """Seconds until GET path answers 200 (None if the server exits first)."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
                s.sendall(request)
                head = b""
                while b"\r\n" not in head:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                if head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
                    return time.monotonic()
        except OSError:
            pass
        time.sleep(0.001)
    return None


def one_run(command, path, timeout):
    port = free_port()
    words = [w.replace("{port}", str(port)) for w in shlex.split(command)]
    env = dict(os.environ)
    while words and "=" in words[0] and not words[0].startswith(("/", ".")):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    t0 = time.monotonic()
    proc = subprocess.Popen(words, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        t1 = first_200(port, path, proc, timeout)
    finally:
        proc.kill()
        proc.wait()
    if t1 is None:
        raise SystemExit(f"first_response: {command!r} never answered 200 on GET {path}")
    return (t1 - t0) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--path", default="/")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--json")
    parser.add_argument("commands", nargs="+", metavar="NAME=COMMAND")
    args = parser.parse_args()
    commands = [c.partition("=")[::2] for c in args.commands]
    times = {name: [] for name, _ in commands}
    for run in range(args.warmup + args.runs):
        for name, command in commands:
            ms = one_run(command, args.path, args.timeout)
            if run >= args.warmup:
                times[name].append(ms)
    base = statistics.median(times[commands[0][0]])
    print(f"| server | exec to first 200, median (ms) | mean (ms) | min (ms) | "
          f"ratio to {commands[0][0]} |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, _ in commands:
        t = times[name]
        print(f"| {name} | {statistics.median(t):.1f} | {statistics.mean(t):.1f} | {min(t):.1f} | "
              f"{statistics.median(t) / base:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": args.runs, "path": args.path, "times_ms": times}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

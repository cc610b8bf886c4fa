#!/usr/bin/env python3
"""Network fuzzer: a live app.bin, by default on the ASan/UBSan host, with
default flags (proxy headers trusted from 127.0.0.1, where the fuzzer
connects from), driven for a bounded time with mutated HTTP requests and
WebSocket frame streams from several connections at once.

    build/tools-venv/bin/python tests/fuzz/net_fuzz.py [--seconds 45]
        [--host build-asan/appbin-host] [--seed N] [--clients 6] [--out DIR] [--tls]

Inputs come from the HTTP seed corpus (tests/fuzz/corpus), requests built
for every route of the target app (appbin_serverapps.fuzzapp: bodies,
chunked uploads with extensions, Expect, pipelining, proxy headers with
non-UTF-8 bytes, ports and IPv6, Host forms) and WebSocket sessions (a
handshake, with or without permessage-deflate, then frames of every opcode,
size encoding, mask, fragmentation, compression, close code). They are
mutated at the byte level (bit flips, inserted and deleted ranges, splices,
tokens of tests/fuzz/http.dict, interesting numbers) or structurally
(header values of random bytes, duplicated or dropped headers), and sent
whole, in pieces, pipelined, half-closed or cut with a RST.

--tls: the server serves HTTPS (--ssl-certfile, a certificate made by the
openssl command) and the same inputs go through TLS connections, so the
pieces and pipelines cross TLS records and the server's read buffer in every
shape; some connections instead send a mutated ClientHello, or plain bytes,
straight to the TLS port.

Failures: the server exits, a sanitizer or a fatal error shows in its log,
it stops answering (a fresh GET / gets no answer: a hang), or it does not
drain and exit 0 on SIGTERM at the end. The inputs of the last seconds are
then written to --out (one file each, with how they were sent) and the log's
tail is printed; the exit status is 1.
"""

import argparse
import asyncio
import base64
import os
import random
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

FAILURE_RE = re.compile(rb"AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer|"
                        rb"runtime error:|Fatal Python error|Assertion .* failed|"
                        rb"Segmentation fault|double free|corrupted")
RECENT_SECONDS = 10   # inputs kept for a failure report
PROBE_EVERY = 2.0     # seconds between liveness probes
PROBE_TIMEOUT = 15.0  # an answer to GET / must come within this (ASan on a busy box)
READ_TIMEOUT = 2.0    # per input: how long to wait for the server's first bytes
IDLE_TIMEOUT = 0.2    # and for more after a pause

ROUTES = ["/", "/echo", "/scope", "/gc", "/slow?s=0.05", "/delay?ms=10&tag=x", "/status?code=204",
          "/status?code=304", "/status?code=500", "/chunks?n=3", "/invalid-status",
          "/invalid-header", "/raise-before", "/raise-after", "/no-response", "/incomplete",
          "/send-after-disconnect?key=f", "/wait-disconnect?key=g", "/result?key=f", "/seen",
          "/big?bytes=300000", "/upload", "/upload?wait=0.05", "/expect-reject", "/no-read",
          "/length-mismatch", "/start-twice", "/cancelled-receive", "/stream-until-disconnect",
          "/missing", "/%2e%2e/%ff?x=%zz", "*", "http://a/echo?x=1"]
METHODS = ["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE"]
WS_PATHS = ["/ws/echo", "/ws/sub", "/ws/close", "/ws/deny", "/ws/reject", "/ws/raise"]
INTERESTING = [b"0", b"1", b"-1", b"65535", b"65536", b"2147483647", b"2147483648",
               b"4294967296", b"9223372036854775807", b"18446744073709551616",
               b"99999999999999999999999", b"00000000005", b"0x10", b"1e3"]


def load_dict(path):
    tokens = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line.startswith('"') and line.endswith('"'):
            tokens.append(line[1:-1].encode("latin-1").decode("unicode_escape")
                          .encode("latin-1"))
    return tokens


# ---- inputs -----------------------------------------------------------------------------


def rand_bytes(rng, n):
    return bytes(rng.getrandbits(8) for _ in range(n))


def header_value(rng):
    """A header value: plain, odd bytes, long, or whitespace-laden."""
    kind = rng.randrange(6)
    if kind == 0:
        return rand_bytes(rng, rng.randrange(1, 12)).replace(b"\r", b"").replace(b"\n", b"")
    if kind == 1:
        return bytes(rng.randrange(0x80, 0x100) for _ in range(rng.randrange(1, 8)))
    if kind == 2:
        return b"a" * rng.choice([100, 1000, 8000, 17000])
    if kind == 3:
        return rng.choice([b" \t", b"\t", b" "]) + b"x" + rng.choice([b" \t", b"\t", b""])
    return rng.choice([b"", b"x", b"1", b"close", b"keep-alive", b"chunked", b"100-continue"])


def forwarded_for(rng):
    entries = []
    for _ in range(rng.randrange(1, 6)):
        entries.append(rng.choice([
            b"203.0.113.%d" % rng.randrange(256), b"127.0.0.1", b"10.1.2.3:%d" % rng.randrange(99999),
            b"[2001:db8::%x]:%d" % (rng.randrange(65536), rng.randrange(65536)), b"::1",
            b"[::1", b"[x]y", b"", b" ", b"unknown", b"\x98", b"\xff\xfe", b"1.2.3.4:x",
            bytes(rng.randrange(0x21, 0x100) for _ in range(rng.randrange(1, 20)))]))
    return b", ".join(entries) if rng.random() < 0.8 else b",".join(entries)


def http_request(rng):
    """One request as (method, target, headers, body) before serialization."""
    method = rng.choice(METHODS)
    target = rng.choice(ROUTES)
    version = rng.choice([b"1.1"] * 8 + [b"1.0", b"1.2", b"2.0", b"0.9", b"1.1 "])
    headers = []
    if version != b"1.0" or rng.random() < 0.5:
        headers.append((b"Host", rng.choice([b"a", b"127.0.0.1:8000", b"[::1]:80", b"", b"a b",
                                              b"user@a", b"a,b", b"a:99999", b"xn--d1a.b"])))
    if rng.random() < 0.6:
        headers.append((b"X-Forwarded-For", forwarded_for(rng)))
    if rng.random() < 0.4:
        headers.append((b"X-Forwarded-Proto", rng.choice([b"https", b"http", b"wss", b"HTTPS ",
                                                          b"ftp", b"\xe9"])))
    body = b""
    framing = rng.randrange(6)
    if framing == 0 or method in ("POST", "PUT", "PATCH") and framing < 3:
        body = rand_bytes(rng, rng.choice([0, 1, 10, 1000, 70000]))
        headers.append((b"Content-Length", b"%d" % len(body) + rng.choice([b"", b"\t", b" "])))
    elif framing == 3:
        chunks = []
        for _ in range(rng.randrange(0, 4)):
            data = rand_bytes(rng, rng.randrange(1, 300))
            ext = rng.choice([b"", b";a=b", b" ;a=\"x\\\"y\"", b"; n", b";" + b"e" * 5000])
            chunks.append(b"%x" % len(data) + ext + b"\r\n" + data + b"\r\n")
        trailer = rng.choice([b"", b"T: 1\r\n", b"Content-Length: 5\r\n"])
        body = b"".join(chunks) + b"0\r\n" + trailer + b"\r\n"
        headers.append((b"Transfer-Encoding",
                        rng.choice([b"chunked", b"chunked\t", b"gzip, chunked", b"chunked, chunked",
                                    b"identity", b"chunked;q=1"])))
    if rng.random() < 0.2:
        headers.append((b"Expect", b"100-continue"))
    if rng.random() < 0.3:
        headers.append((b"Connection", rng.choice([b"close", b"keep-alive", b"upgrade",
                                                   b"close, upgrade"])))
    for _ in range(rng.choice([0, 0, 1, 3])):
        headers.append((rng.choice([b"X-A", b"Content-Length", b"Transfer-Encoding", b"Host",
                                    b"Upgrade", b"X-Forwarded-For", b"Cookie", b"B@d"]),
                        header_value(rng)))
    if rng.random() < 0.1:
        rng.shuffle(headers)
    return method.encode(), target.encode(), version, headers, body


def serialize(method, target, version, headers, body):
    head = method + b" " + target + b" HTTP/" + version + b"\r\n"
    head += b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    return head + b"\r\n" + body


def mutate(rng, data, seeds, tokens):
    """Byte-level mutations, one to a few."""
    data = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 4])):
        op = rng.randrange(9)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:  # flip bits
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # random bytes in
            data[pos:pos] = rand_bytes(rng, rng.randrange(1, 8))
        elif op == 2 and data:  # delete a range
            end = min(len(data), pos + rng.randrange(1, 16))
            del data[pos:end]
        elif op == 3 and data:  # duplicate a range
            start = rng.randrange(len(data))
            data[pos:pos] = data[start:start + rng.randrange(1, 64)]
        elif op == 4:  # a dictionary token
            data[pos:pos] = rng.choice(tokens)
        elif op == 5:  # an interesting number over a number
            m = list(re.finditer(rb"\d+", bytes(data)))
            if m:
                d = rng.choice(m)
                data[d.start():d.end()] = rng.choice(INTERESTING)
        elif op == 6:  # splice another seed in
            other = rng.choice(seeds)
            start = rng.randrange(len(other) + 1)
            data[pos:] = other[start:]
        elif op == 7:  # CRLF games
            data[pos:pos] = rng.choice([b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"\r\n ", b"\x00"])
        elif op == 8 and data:  # truncate
            del data[pos:]
    return bytes(data)


# ---- WebSockets ---------------------------------------------------------------------------


def ws_handshake(rng, deflate):
    key = base64.b64encode(os.urandom(16))
    headers = [(b"Host", b"a"), (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
               (b"Sec-WebSocket-Key", key), (b"Sec-WebSocket-Version", b"13")]
    if deflate:
        headers.append((b"Sec-WebSocket-Extensions", rng.choice([
            b"permessage-deflate", b"permessage-deflate; client_max_window_bits",
            b"permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            b"permessage-deflate; server_max_window_bits=9", b"permessage-deflate; x=1"])))
    if rng.random() < 0.3:
        headers.append((b"Sec-WebSocket-Protocol", b"chat, superchat"))
    if rng.random() < 0.5:
        headers.append((b"X-Forwarded-For", forwarded_for(rng)))
    return serialize(b"GET", rng.choice(WS_PATHS).encode(), b"1.1", headers, b"")


def ws_frame(rng, deflate):
    opcode = rng.choice([1, 1, 2, 2, 0, 8, 9, 10, 3, 11])
    fin = rng.random() < 0.8
    kind = rng.randrange(5)
    if kind == 0:
        payload = "héllo".encode() * rng.randrange(1, 40)
    elif kind == 1:
        payload = rand_bytes(rng, rng.randrange(0, 200))
    elif kind == 2:
        payload = rng.choice([b"close", b"raise", b"\xff\xfe", b"\xed\xa0\x80", b""])
    elif kind == 3:
        payload = b"x" * rng.choice([125, 126, 65535, 65536, 200000])
    else:
        payload = struct.pack("!H", rng.choice([1000, 1001, 1005, 1006, 1015, 2999, 3000, 4999,
                                                5000, 0, 65535])) + b"bye"[:rng.randrange(4)]
    rsv = 0
    if deflate and opcode in (1, 2) and rng.random() < 0.6:
        c = zlib.compressobj(wbits=-15)
        payload = c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)
        if payload.endswith(b"\x00\x00\xff\xff"):
            payload = payload[:-4]
        rsv = 4
    if rng.random() < 0.05:
        rsv = rng.randrange(8)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    mask = rng.random() < 0.97
    m = 0x80 if mask else 0
    encoding = rng.randrange(10)
    if n < 126 and encoding < 8:
        head += bytes([m | n])
    elif n < 65536 and encoding < 9:
        head += bytes([m | 126]) + struct.pack("!H", n)
    else:
        head += bytes([m | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


# ---- the server ---------------------------------------------------------------------------


def pack_target(host, out_dir):
    """app.bin of the server test venv (fuzzapp) with the given host."""
    from conftest import FIXTURES, PACK_SCRIPT, PYTHON, _cached_build, build_pip_venv
    from server_fixtures import SERVER_DISTRIBUTIONS, SERVER_VENV_REQUIREMENTS

    local = [FIXTURES / name for name in SERVER_DISTRIBUTIONS]
    venv = _cached_build("serverapps", SERVER_VENV_REQUIREMENTS, local,
                         lambda target: build_pip_venv(target, SERVER_VENV_REQUIREMENTS, local))
    output = Path(out_dir) / "app.bin"
    wrapper = ROOT / "build" / "appbin-pack"
    pack = [str(wrapper)] if wrapper.exists() else [PYTHON, "-I", str(PACK_SCRIPT)]
    subprocess.run([*pack, "--venv", str(venv), "--app", "appbin_serverapps.fuzzapp:app",
                    "--host", str(host), "-o", str(output), "--quiet"], check=True)
    return output


class Target:
    def __init__(self, exe, workdir, tls=False):
        self.log_path = Path(workdir) / "server.log"
        self.files = Path(workdir) / "files"
        self.files.mkdir(exist_ok=True)
        (self.files / "f.bin").write_bytes(os.urandom(300000))
        env = dict(os.environ, APPBIN_FUZZ_FILES=str(self.files),
                   ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:halt_on_error=1",
                   UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
        env.pop("PYTHONPATH", None)
        self.log = open(self.log_path, "wb")
        # default flags; a short drain at the end (routes that sleep for a
        # mutated number of seconds would hold the default 30 s)
        args = ["--port", "0", "--timeout-graceful-shutdown", "3"]
        self.ssl = None
        if tls:
            cert, key = Path(workdir) / "cert.pem", Path(workdir) / "key.pem"
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                            str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1"],
                           check=True, capture_output=True)
            args += ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
            self.ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self.ssl.check_hostname = False
            self.ssl.verify_mode = ssl.CERT_NONE
        self.proc = subprocess.Popen([str(exe), *args], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 120
        while True:
            m = re.search(rb"running on https?://127\.0\.0\.1:(\d+)", self.log_path.read_bytes())
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the target did not start:\n{self.tail()}")
            time.sleep(0.1)
        ROUTES.extend([f"/pathsend?path={self.files}/f.bin",
                       f"/zerocopysend?path={self.files}/f.bin&offset=7&count=1000"])

    def tail(self, n=8000):
        return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")

    def failure(self, exit_expected=False):
        if FAILURE_RE.search(self.log_path.read_bytes()):
            return "a sanitizer or fatal error report in the server's log"
        if self.proc.poll() is not None and not exit_expected:
            return f"the server exited with status {self.proc.returncode}"
        return None


# ---- the driver -----------------------------------------------------------------------------


class Fuzzer:
    def __init__(self, args, target, seeds, tokens):
        self.args = args
        self.target = target
        self.seeds = seeds
        self.tokens = tokens
        self.rng = random.Random(args.seed)
        self.recent = deque()
        self.counts = {}
        self.failed = None
        self.deadline = time.monotonic() + args.seconds

    def note(self, kind, data, how):
        now = time.monotonic()
        self.recent.append((now, kind, how, data))
        while self.recent and self.recent[0][0] < now - RECENT_SECONDS:
            self.recent.popleft()
        self.counts[kind] = self.counts.get(kind, 0) + 1

    async def send(self, writer, data, rng, how):
        if how == "whole":
            writer.write(data)
        else:
            pos = 0
            while pos < len(data):
                step = rng.choice([1, 2, 7, 64, 1500, 70000])
                writer.write(data[pos:pos + step])
                pos += step
                await writer.drain()
                if rng.random() < 0.2:
                    await asyncio.sleep(rng.choice([0, 0.001, 0.02]))
        await writer.drain()

    async def read_some(self, reader, limit=1 << 20):
        """Reads what the server answers: the first bytes may take a while,
        then a pause ends it (keep-alive connections stay open)."""
        got = 0
        wait = READ_TIMEOUT
        try:
            while got < limit:
                chunk = await asyncio.wait_for(reader.read(65536), wait)
                if not chunk:
                    return
                got += len(chunk)
                wait = IDLE_TIMEOUT
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass

    async def one_http(self, rng):
        if rng.random() < 0.25:
            data = rng.choice(self.seeds)
        else:
            data = serialize(*http_request(rng))
            if rng.random() < 0.3:
                data += serialize(*http_request(rng))  # pipelined
        if rng.random() < 0.5:
            data = mutate(rng, data, self.seeds, self.tokens)
        how = rng.choice(["whole", "whole", "pieces", "half-close", "reset"])
        self.note("http", data, how)
        await self.exchange(data, how, rng)

    async def one_ws(self, rng):
        deflate = rng.random() < 0.5
        data = ws_handshake(rng, deflate)
        frames = b"".join(ws_frame(rng, deflate) for _ in range(rng.randrange(1, 10)))
        if rng.random() < 0.3:
            frames = mutate(rng, frames, self.seeds, self.tokens)
        how = rng.choice(["whole", "pieces", "half-close", "reset"])
        self.note("websocket", data + frames, how)
        await self.exchange(data + frames, how, rng)

    def client_hello(self):
        """The first flight of a TLS client (a ClientHello), for raw sends."""
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.target.ssl.wrap_bio(incoming, outgoing)
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return outgoing.read()

    async def one_raw_tls(self, rng):
        """Bytes straight to the TLS port: a mutated ClientHello, or plain."""
        data = self.client_hello() if rng.random() < 0.7 else serialize(*http_request(rng))
        data = mutate(rng, data, self.seeds, self.tokens)
        how = rng.choice(["whole", "pieces", "half-close", "reset"])
        self.note("raw-tls", data, how)
        await self.exchange(data, how, rng, raw=True)

    async def exchange(self, data, how, rng, raw=False):
        tls = self.target.ssl if not raw else None
        if tls and how == "half-close":
            how = "whole"  # TLS transports cannot half-close
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.target.port, ssl=tls), 10)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            return
        try:
            if how == "reset":
                await self.send(writer, data[:rng.randrange(len(data) + 1)], rng, "pieces")
                sock = writer.get_extra_info("socket")
                if sock is None:  # a TLS transport does not show its socket
                    writer.transport.abort()
                else:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                await self.send(writer, data, rng, how)
                if how == "half-close" and writer.can_write_eof():
                    writer.write_eof()
                await self.read_some(reader)
        except (ConnectionError, OSError, ssl.SSLError):
            pass
        finally:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 2)
            except (ConnectionError, OSError, asyncio.TimeoutError, ssl.SSLError):
                pass

    async def client(self, index):
        rng = random.Random(self.rng.getrandbits(64) ^ index)
        while time.monotonic() < self.deadline and not self.failed:
            if self.target.ssl and rng.random() < 0.15:
                await self.one_raw_tls(rng)
            elif rng.random() < 0.3:
                await self.one_ws(rng)
            else:
                await self.one_http(rng)

    async def probe(self):
        """GET / on a fresh connection must be answered: else the server hangs."""
        while time.monotonic() < self.deadline and not self.failed:
            await asyncio.sleep(PROBE_EVERY)
            self.failed = self.target.failure()
            if self.failed:
                return
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.target.port, ssl=self.target.ssl),
                    PROBE_TIMEOUT)
                writer.write(b"GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
                answer = await asyncio.wait_for(reader.read(), PROBE_TIMEOUT)
                writer.close()
                if not answer.startswith(b"HTTP/1.1 200 "):
                    self.failed = f"the liveness probe got {answer[:80]!r}"
            except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
                self.failed = self.target.failure() or f"the server hangs (probe: {exc!r})"

    async def run(self):
        await asyncio.gather(self.probe(), *(self.client(i) for i in range(self.args.clients)))


def report(fuzzer, target, why, out_dir):
    out = Path(out_dir) / time.strftime("net-fuzz-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    for i, (_, kind, how, data) in enumerate(fuzzer.recent):
        (out / f"{i:04d}-{kind}-{how}.bin").write_bytes(data)
    (out / "server.log").write_bytes(target.log_path.read_bytes())
    print(f"net fuzz: FAILED: {why}\n  the last {len(fuzzer.recent)} inputs are in {out}\n"
          f"--- server log (tail) ---\n{target.tail()}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=45)
    ap.add_argument("--host", default=str(ROOT / "build-asan" / "appbin-host"),
                    help="the host to pack the target with (default: the ASan build)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--clients", type=int, default=8, help="connections at once")
    ap.add_argument("--corpus", default=str(ROOT / "tests" / "fuzz" / "corpus"),
                    help="seed requests, one per file")
    ap.add_argument("--out", default=str(ROOT / "build-fuzz"),
                    help="where a failure's inputs go")
    ap.add_argument("--tls", action="store_true", help="fuzz the server over HTTPS")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 32)
    seeds = [p.read_bytes() for p in sorted(Path(args.corpus).iterdir())] or [b"GET / HTTP/1.1\r\n\r\n"]
    tokens = load_dict(ROOT / "tests" / "fuzz" / "http.dict")
    with tempfile.TemporaryDirectory(prefix="appbin-net-fuzz-") as work:
        exe = pack_target(args.host, work)
        target = Target(exe, work, tls=args.tls)
        fuzzer = Fuzzer(args, target, seeds, tokens)
        started = time.monotonic()
        try:
            asyncio.run(fuzzer.run())
            why = fuzzer.failed or target.failure()
            if not why:  # it must still drain and exit cleanly
                target.proc.send_signal(signal.SIGTERM)
                try:
                    status = target.proc.wait(45)
                except subprocess.TimeoutExpired:
                    status = None
                why = (target.failure(exit_expected=True) if status is not None
                       else "no exit 45 s after SIGTERM")
                if not why and status != 0:
                    why = f"exit status {status} after SIGTERM"
        finally:
            if target.proc.poll() is None:
                target.proc.kill()
                target.proc.wait()
        elapsed = time.monotonic() - started
        total = sum(fuzzer.counts.values())
        print(f"net fuzz{' (TLS)' if args.tls else ''}: seed {args.seed}, {elapsed:.0f} s, "
              f"{total} inputs "
              f"({', '.join(f'{k} {v}' for k, v in sorted(fuzzer.counts.items()))}), "
              f"{total / max(elapsed, 1):.0f}/s")
        if why:
            report(fuzzer, target, why, args.out)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

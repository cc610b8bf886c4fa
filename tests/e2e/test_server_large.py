"""100 MB responses and uploads through app.bin with bounded memory: the
server must hold the application back (send() waits) when the client reads
slowly, and stop reading the socket when the application reads slowly.
"""

import hashlib
import json
import threading
import time

import pytest

from server_fixtures import CHUNK, build_request

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

MB = 1024 * 1024
TOTAL = 100 * MB
# How much the server's RSS may grow over its idle size while 100 MB pass.
RSS_GROWTH_LIMIT_KB = 48 * 1024


def _expected_sha(total):
    sha = hashlib.sha256()
    full, rest = divmod(total, len(CHUNK))
    for _ in range(full):
        sha.update(CHUNK)
    sha.update(CHUNK[:rest])
    return sha.hexdigest()


def _warm(server):
    """A few requests so that the baseline RSS includes the warm-up."""
    with server.connect() as conn:
        for _ in range(5):
            conn.request("GET", "/big?bytes=1000000")
            conn.request("POST", "/upload", body=b"x" * 1000000)
    time.sleep(0.2)
    return server.rss_kb()


def test_100mb_response_with_a_slow_reader(appbin):
    server = appbin("--no-access-log")
    baseline = _warm(server)
    sha = hashlib.sha256()
    peak = baseline
    with server.connect(timeout=30) as conn:
        conn.send(build_request("GET", f"/big?bytes={TOTAL}"))
        version, status, _, headers = conn.read_head()
        assert status == 200
        assert ("content-length", str(TOTAL)) in headers
        received = len(conn.buf)
        sha.update(conn.buf)
        conn.buf = b""
        # Stall: a server without backpressure would buffer all 100 MB now.
        time.sleep(1.5)
        stalled = server.rss_kb()
        peak = max(peak, stalled)
        next_sample = received + 8 * MB
        while received < TOTAL:
            data = conn.sock.recv(min(1 << 20, TOTAL - received))
            assert data, f"connection closed after {received} bytes"
            sha.update(data)
            received += len(data)
            if received >= next_sample:
                peak = max(peak, server.rss_kb())
                next_sample += 8 * MB
    print(f"RSS KiB: baseline {baseline}, stalled {stalled}, peak {peak}")
    assert received == TOTAL
    assert sha.hexdigest() == _expected_sha(TOTAL)
    assert stalled - baseline < RSS_GROWTH_LIMIT_KB, (
        f"RSS grew {stalled - baseline} KiB while the client did not read")
    assert peak - baseline < RSS_GROWTH_LIMIT_KB, f"RSS grew {peak - baseline} KiB"


def test_100mb_upload_to_a_slow_application(appbin):
    server = appbin("--no-access-log")
    baseline = _warm(server)
    payload = bytes(range(256)) * 256  # 64 KiB
    sent = [0]
    error = []

    conn = server.connect(timeout=60)

    def sender():
        try:
            for _ in range(TOTAL // len(payload)):
                conn.send(payload)
                sent[0] += len(payload)
        except OSError as exc:
            error.append(exc)

    # The app sleeps 2 s before its first receive(): the server must stop
    # reading instead of buffering the body.
    conn.send(b"POST /upload?wait=2 HTTP/1.1\r\nHost: x\r\n"
              b"Content-Length: %d\r\n\r\n" % TOTAL)
    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    server.wait_log("APP: upload waiting before reading")
    time.sleep(1.2)
    during_wait = sent[0]
    peak = stalled = server.rss_kb()
    deadline = time.monotonic() + 120
    while thread.is_alive() and time.monotonic() < deadline:
        peak = max(peak, server.rss_kb())
        thread.join(0.1)
    assert not thread.is_alive(), f"upload stuck after {sent[0]} bytes"
    assert not error, error
    resp = conn.read_response()
    conn.close()
    info = json.loads(resp.body)
    print(f"RSS KiB: baseline {baseline}, stalled {stalled}, peak {peak}; "
          f"accepted while waiting: {during_wait}")
    assert info["size"] == TOTAL
    assert info["sha256"] == _expected_sha(TOTAL)
    assert during_wait < 32 * MB, (
        f"{during_wait} bytes were accepted while the app was not reading")
    assert stalled - baseline < RSS_GROWTH_LIMIT_KB, (
        f"RSS grew {stalled - baseline} KiB while the app was not reading")
    assert peak - baseline < RSS_GROWTH_LIMIT_KB, f"RSS grew {peak - baseline} KiB"


def test_100mb_chunked_upload(appbin):
    """The same amount as a chunked request body, read as fast as it comes."""
    server = appbin("--no-access-log")
    baseline = _warm(server)
    piece = bytes(range(256)) * 1024  # 256 KiB
    with server.connect(timeout=60) as conn:
        conn.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        frame = b"%x\r\n%s\r\n" % (len(piece), piece)
        peak = baseline
        for i in range(TOTAL // len(piece)):
            conn.send(frame)
            if i % 40 == 0:
                peak = max(peak, server.rss_kb())
        conn.send(b"0\r\n\r\n")
        info = json.loads(conn.read_response().body)
    print(f"RSS KiB: baseline {baseline}, peak {peak}")
    assert info["size"] == TOTAL
    expected = hashlib.sha256()
    for _ in range(TOTAL // len(piece)):
        expected.update(piece)
    assert info["sha256"] == expected.hexdigest()
    assert peak - baseline < RSS_GROWTH_LIMIT_KB, f"RSS grew {peak - baseline} KiB"

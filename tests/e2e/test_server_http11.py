"""HTTP/1.1 on the wire, over raw sockets against app.bin: keep-alive,
pipelining, chunked request bodies, Expect: 100-continue, HEAD, HTTP/1.0,
Connection: close, Date/Server headers, malformed requests, request
smuggling shapes, header limits, timeouts and abrupt disconnects.
"""

import email.utils
import json
import time

import pytest

from server_fixtures import build_request

pytestmark = pytest.mark.timeout(120)


def _bad(conn, data, expected=400):
    """Sends data; the server answers `expected` and closes the connection."""
    conn.send(data)
    resp = conn.read_response()
    assert resp.status == expected, resp
    assert resp.header("connection") == "close"
    assert conn.wait_closed(5), "the connection stays open after an invalid request"
    return resp


# ---- keep-alive and pipelining ----------------------------------------------------


def test_keep_alive_reuses_the_connection(raw_server):
    with raw_server.connect() as conn:
        for _ in range(5):
            resp = conn.request("GET", "/")
            assert resp.status == 200 and resp.body == b"hello"
            assert resp.header("connection") != "close"
        port = conn.local_port
    # five access log lines from the one client port
    raw_server.wait_log(r'(?:^INFO:     127\.0\.0\.1:%d - "GET / HTTP/1\.1" 200 OK\n(?:.*\n)*?){5}'
                        % port)


def test_pipelined_responses_come_in_request_order(raw_server):
    with raw_server.connect() as conn:
        conn.send(build_request("GET", "/delay?ms=400&tag=first")
                  + build_request("GET", "/delay?ms=0&tag=second")
                  + build_request("POST", "/echo", body=b"third")
                  + build_request("GET", "/delay?ms=100&tag=fourth"))
        bodies = [conn.read_response().body for _ in range(4)]
    assert bodies == [b"first", b"second", b"third", b"fourth"]


def test_pipelined_requests_run_back_to_back(raw_server):
    """Pipelined requests that finish without waiting run one after the
    other in the same event-loop iteration, like the first (the eager first
    step), not as asyncio Tasks one iteration apart each: a pipelined hello
    world took 44k instructions per request against 29k one at a time, 19.5k
    now (tests/bench/ops_callgrind.py --pipeline 16)."""
    with raw_server.connect() as conn:
        conn.request("GET", "/loop-turn")
        time.sleep(0.1)  # the loop turns
        conn.send(build_request("GET", "/loop-turn") * 6)
        bodies = [conn.read_response().body for _ in range(6)]
    assert bodies == [b"turned"] + [b"same"] * 5


def test_pipelined_requests_split_across_writes(raw_server):
    data = b"".join(build_request("POST", "/echo", body=f"n{i}".encode()) for i in range(20))
    with raw_server.connect() as conn:
        for i in range(0, len(data), 7):
            conn.send(data[i:i + 7])
        bodies = [conn.read_response().body for _ in range(20)]
    assert bodies == [f"n{i}".encode() for i in range(20)]


def test_connection_close_request(raw_server):
    with raw_server.connect() as conn:
        resp = conn.request("GET", "/", headers=[("Connection", "close")])
        assert resp.status == 200
        assert resp.header("connection") == "close"
        assert conn.wait_closed(5)


def test_requests_after_connection_close_are_ignored(raw_server):
    with raw_server.connect() as conn:
        conn.send(build_request("GET", "/delay?tag=one", headers=[("Connection", "close")])
                  + build_request("GET", "/delay?tag=two"))
        assert conn.read_response().body == b"one"
        assert conn.wait_closed(5)
        assert b"two" not in conn.buf


# ---- bodies ---------------------------------------------------------------------------


def test_chunked_request_body(raw_server):
    with raw_server.connect() as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n"
                  b"0\r\nX-Trailer: yes\r\n\r\n")
        resp = conn.read_response()
        assert resp.status == 200
        assert resp.body == b"hello 0123456789"
        # the connection is still in sync
        assert conn.request("GET", "/").body == b"hello"


def test_chunked_request_body_in_pieces(raw_server):
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in [b"a" * 100, b"b" * 5000, b"c"])
    data = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n"
    with raw_server.connect() as conn:
        for i in range(0, len(data), 333):
            conn.send(data[i:i + 333])
            time.sleep(0.001)
        resp = conn.read_response()
    assert resp.body == b"a" * 100 + b"b" * 5000 + b"c"


def test_empty_chunked_body(raw_server):
    with raw_server.connect() as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        resp = conn.read_response()
    assert resp.status == 200 and resp.body == b""


def test_expect_100_continue(raw_server):
    with raw_server.connect() as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        interim = conn.read_response(allow_interim=True)
        assert interim.status == 100
        conn.send(b"hello")
        resp = conn.read_response()
        assert resp.status == 200 and resp.body == b"hello"
        assert conn.request("GET", "/").body == b"hello"


def test_expect_100_continue_not_sent_when_the_app_answers_first(raw_server):
    """An app that answers without reading the body gets no 100 Continue sent
    for it; the client never has to send the body."""
    with raw_server.connect() as conn:
        conn.send(b"POST /expect-reject HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        version, status, _, _ = conn.read_head()
        assert status == 417


def test_head_has_headers_but_no_body(raw_server):
    with raw_server.connect() as conn:
        resp = conn.request("HEAD", "/")
        assert resp.status == 200
        assert resp.header("content-length") == "5"
        resp = conn.request("HEAD", "/chunks?n=3")
        assert resp.status == 200
        # nothing of either body reached the connection
        assert conn.request("GET", "/").body == b"hello"


# ---- HTTP/1.0 -------------------------------------------------------------------------


def test_http10_closes_by_default(raw_server):
    with raw_server.connect() as conn:
        conn.send(b"GET / HTTP/1.0\r\n\r\n")
        resp = conn.read_response()
        assert resp.status == 200 and resp.body == b"hello"
        assert conn.wait_closed(5)


def test_http10_keep_alive(raw_server):
    with raw_server.connect() as conn:
        conn.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        resp = conn.read_response()
        assert resp.body == b"hello"
        assert resp.header("connection", "").lower() == "keep-alive"
        conn.send(b"GET / HTTP/1.0\r\n\r\n")
        assert conn.read_response().body == b"hello"
        assert conn.wait_closed(5)


def test_http10_streamed_response_is_close_delimited(raw_server):
    with raw_server.connect() as conn:
        conn.send(b"GET /chunks?n=3 HTTP/1.0\r\n\r\n")
        resp = conn.read_response()
        assert resp.header("transfer-encoding") is None
        assert resp.body == b"chunk0;chunk1;chunk2;"


# ---- standard response headers ------------------------------------------------------------


def test_date_and_server_headers(raw_server):
    with raw_server.connect() as conn:
        resp = conn.request("GET", "/")
    assert resp.header("server") == "appbin"
    date = resp.header("date")
    assert date and date.endswith(" GMT")
    parsed = email.utils.parsedate_to_datetime(date)
    assert abs(parsed.timestamp() - time.time()) < 5
    assert len(resp.all("date")) == 1 and len(resp.all("server")) == 1


# ---- malformed requests ---------------------------------------------------------------------


MALFORMED = {
    "garbage": b"GARBAGE\r\n\r\n",
    "no colon": b"GET / HTTP/1.1\r\nHost\r\n\r\n",
    "bad version": b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    "space in target": b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad header name": b"GET / HTTP/1.1\r\nHost: x\r\nX(A): b\r\n\r\n",
    "NUL in value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "control in value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
    "missing host (HTTP/1.1)": b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n",
    "two hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "content-length not a number": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5a\r\n\r\nhello",
    "negative content-length": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nhello",
    "content-length with sign": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_request_gets_400(raw_server, name):
    with raw_server.connect() as conn:
        _bad(conn, MALFORMED[name])
    assert raw_server.get("/").text == "hello"


def test_malformed_request_is_logged_not_passed_to_the_app(raw_server):
    start = len(raw_server.log())
    with raw_server.connect() as conn:
        _bad(conn, b"GET /never-seen-malformed HTTP/1.1\r\nHost x\r\n\r\n")
    raw_server.wait_log(r"WARNING:  Invalid HTTP request received", start=start)
    assert "/never-seen-malformed" not in raw_server.get("/seen").json()


# ---- request smuggling shapes --------------------------------------------------------------

SMUGGLING = {
    "CL + TE": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "TE + CL": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               b"Content-Length: 40\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "duplicate CL": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 39\r\n"
                    b"\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "CL list": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0, 39\r\n\r\n"
               b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad chunk size": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"zz\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n0\r\n\r\n",
    "chunk size overflow": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"10000000000000000001\r\nx\r\n0\r\n\r\n",
    "chunk without CRLF": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"5\r\nhelloGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "LF-only chunks": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"5\nhello\n0\n\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n Transfer-Encoding: chunked\r\n\r\n",
    "obs-fold TE": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n"
                   b"Content-Length: 3\r\n\r\nabc",
    "bare LF": b"GET / HTTP/1.1\nHost: x\n\n",
    "bare LF in header": b"GET / HTTP/1.1\r\nHost: x\nTransfer-Encoding: chunked\r\n\r\n",
    "space before colon": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n"
                          b"Content-Length: 3\r\n\r\nabc",
    "tab before colon": b"GET / HTTP/1.1\r\nHost\t: x\r\n\r\n",
    "TE identity": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n"
                   b"Content-Length: 3\r\n\r\nabc",
    "TE chunked not last": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity"
                           b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "TE xchunked": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n"
                   b"3\r\nabc\r\n0\r\n\r\n",
    "TE in HTTP/1.0": b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("name", list(SMUGGLING))
def test_smuggling_shape_gets_400(raw_server, name):
    with raw_server.connect() as conn:
        _bad(conn, SMUGGLING[name])
        assert b"HTTP/1.1" not in conn.buf  # no second response
    assert "/smuggled" not in raw_server.get("/seen").json()


def test_body_error_is_logged_as_what_the_client_got(raw_server):
    """A request whose chunked body turns out invalid gets a 400; the access
    log must not claim that a 500 was sent."""
    start = len(raw_server.log())
    with raw_server.connect() as conn:
        _bad(conn, b"POST /echo?tag=badchunk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                   b"\r\n\r\n5\r\nhello\r\nzz\r\n")
    raw_server.get("/")  # flush the log
    time.sleep(0.2)
    assert '"POST /echo?tag=badchunk HTTP/1.1" 500' not in raw_server.log()[start:]


# ---- limits ---------------------------------------------------------------------------------


def test_huge_header_gets_431(raw_server):
    with raw_server.connect() as conn:
        _bad(conn, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431)


def test_huge_request_line_gets_431_or_414(raw_server):
    with raw_server.connect() as conn:
        conn.send(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = conn.read_response()
        assert resp.status in (414, 431)
        assert conn.wait_closed(5)


def test_too_many_headers_gets_431(raw_server):
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(200))
    with raw_server.connect() as conn:
        _bad(conn, b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n", 431)


def test_huge_header_sent_slowly_gets_431(raw_server):
    with raw_server.connect() as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        try:
            for i in range(40):
                conn.send(b"X-Slow-%d: %s\r\n" % (i, b"b" * 1000))
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = conn.read_response()
        assert resp.status == 431


def test_header_limit_option(appbin):
    server = appbin("--h11-max-incomplete-event-size", "2048")
    with server.connect() as conn:
        assert conn.request("GET", "/", headers=[("X-A", "a" * 1000)]).status == 200
    with server.connect() as conn:
        _bad(conn, b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 3000 + b"\r\n\r\n", 431)


# ---- timeouts -------------------------------------------------------------------------------


def test_slowloris_header_timeout(appbin):
    """A client trickling its request head is cut off after
    --timeout-request-header seconds."""
    server = appbin("--timeout-request-header", "1")
    with server.connect() as conn:
        start = time.monotonic()
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        closed = False
        for i in range(40):  # up to 4 s of trickling
            try:
                conn.send(b"X-%d: y\r\n" % i)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if conn.wait_closed(0.1):
                closed = True
                break
        elapsed = time.monotonic() - start
    assert closed, "the server kept a trickling connection open"
    assert 0.8 < elapsed < 3, elapsed
    assert server.get("/").text == "hello"


def test_header_timeout_does_not_cut_slow_bodies_or_apps(appbin):
    server = appbin("--timeout-request-header", "1")
    with server.connect() as conn:
        resp = conn.request("GET", "/slow?s=1.5")
        assert resp.status == 200
        conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        time.sleep(1.5)
        conn.send(b"cd")
        assert conn.read_response().body == b"abcd"


def test_idle_keep_alive_timeout(appbin):
    server = appbin("--timeout-keep-alive", "1")
    with server.connect() as conn:
        assert conn.request("GET", "/").status == 200
        start = time.monotonic()
        assert conn.wait_closed(4)
        assert 0.7 < time.monotonic() - start < 3
    with server.connect() as conn:  # a connection that never sends anything
        start = time.monotonic()
        assert conn.wait_closed(4)
        assert time.monotonic() - start < 3


def test_keep_alive_connection_survives_shorter_pauses(raw_server):
    with raw_server.connect() as conn:
        assert conn.request("GET", "/").status == 200
        time.sleep(1.5)  # below the default 5 s
        assert conn.request("GET", "/").status == 200


# ---- abrupt disconnects ------------------------------------------------------------------------


def test_abrupt_disconnects_do_not_hurt_the_server(raw_server):
    for data in [b"", b"GET / HT", b"GET / HTTP/1.1\r\nHost: x\r\n",
                 b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc",
                 b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                 build_request("GET", "/slow?s=0.5"),
                 build_request("GET", "/big?bytes=10000000")]:
        for abort in (False, True):
            conn = raw_server.connect()
            if data:
                conn.send(data)
            time.sleep(0.05)
            conn.abort() if abort else conn.close()
    time.sleep(0.6)
    with raw_server.connect() as conn:
        assert conn.request("GET", "/").body == b"hello"
    assert "Traceback" not in raw_server.log()


def test_many_connections_at_once(raw_server):
    conns = [raw_server.connect() for _ in range(100)]
    try:
        for i, conn in enumerate(conns):
            conn.send(build_request("GET", f"/delay?ms=50&tag=c{i}"))
        for i, conn in enumerate(conns):
            assert conn.read_response().body == f"c{i}".encode()
    finally:
        for conn in conns:
            conn.close()


def test_absolute_form_target(raw_server):
    """RFC 9112 3.2.2: a server MUST accept the absolute-form; the app sees
    the path and query of the URI (as uvicorn gives them)."""
    with raw_server.connect() as conn:
        resp = conn.request("GET", "http://example.com/scope?x=1",
                            headers=[("Host", "example.com")])
    assert resp.status == 200, raw_server.get("/seen").json()[-2:]
    scope = json.loads(resp.body)
    assert scope["path"] == "/scope"
    assert scope["query_string"] == "x=1"

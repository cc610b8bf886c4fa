"""The ASGI side of app.bin's server, with bare ASGI apps
(fixtures/appbin_serverapps/appbin_serverapps/raw.py): the scope, receive and
send, errors raised or made by the application, disconnects, and the
pathsend / zerocopysend extensions.
"""

import hashlib
import json
import time

import pytest

from server_fixtures import FILE_DATA, RawConn, access_lines, build_request

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "data.bin"
    path.write_bytes(FILE_DATA)
    return path


# ---- scope -----------------------------------------------------------------------


def test_scope(raw_server):
    with raw_server.connect() as conn:
        resp = conn.request("GET", "/scope?a=1&b=%20x", headers=[("X-Custom", "Value One"),
                                                                 ("X-Dup", "1"), ("X-Dup", "2")])
        local_port = conn.local_port
    assert resp.status == 200
    scope = json.loads(resp.body)
    assert scope["type"] == "http"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["asgi"]["spec_version"] in ("2.3", "2.4", "2.5")
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/scope"
    assert scope["raw_path"] == "/scope"
    assert scope["root_path"] == ""
    assert scope["query_string"] == "a=1&b=%20x"
    assert scope["client"] == ["127.0.0.1", local_port]
    assert scope["server"] == ["127.0.0.1", raw_server.port]
    headers = scope["headers"]
    assert ["host", "127.0.0.1"] in headers
    assert ["x-custom", "Value One"] in headers  # names lowercased, values as sent
    assert [h for h in headers if h[0] == "x-dup"] == [["x-dup", "1"], ["x-dup", "2"]]
    # lifespan state is handed to every request (a copy of the startup state)
    assert "started" in scope["state"] and scope["state_started"] == "yes"
    assert scope["extensions"] == ["http.response.pathsend", "http.response.zerocopysend"]


def test_percent_encoded_path(raw_server):
    resp = raw_server.get("/scope/%E2%82%AC%20x%2Fy?q=%2F")
    assert resp.status_code == 404  # not a route: check what was decoded via /seen
    seen = raw_server.get("/seen").json()
    assert "/scope/\u20ac x/y" in seen
    with RawConn(raw_server.port) as conn:
        resp = conn.request("GET", "/sc%6Fpe?x=%41")
    scope = json.loads(resp.body)
    assert scope["path"] == "/scope"
    assert scope["raw_path"] == "/sc%6Fpe"
    assert scope["query_string"] == "x=%41"


def test_http10_scope(raw_server):
    with raw_server.connect() as conn:
        conn.send(b"GET /scope HTTP/1.0\r\n\r\n")
        resp = conn.read_response()
        assert conn.wait_closed(5)
    scope = json.loads(resp.body)
    assert scope["http_version"] == "1.0"


# ---- request bodies ------------------------------------------------------------------


def test_echo_body(raw_server):
    body = bytes(range(256)) * 1000
    resp = raw_server.client.post("/echo", content=body)
    assert resp.status_code == 200
    assert resp.content == body
    assert resp.headers["x-body-sha256"] == hashlib.sha256(body).hexdigest()


def test_body_streamed_in_many_messages(raw_server):
    """A 5 MB body arrives as several http.request messages, all bytes in order."""
    body = bytes(range(256)) * (5 * 4096)
    resp = raw_server.client.post("/upload", content=body)
    info = resp.json()
    assert info["size"] == len(body)
    assert info["sha256"] == hashlib.sha256(body).hexdigest()
    assert info["messages"] > 1


def test_cancelled_receive_keeps_the_body(raw_server):
    """The body arrives after a receive() was cancelled: nothing is lost."""
    with raw_server.connect() as conn:
        conn.send(b"POST /cancelled-receive HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
        time.sleep(0.3)
        conn.send(b"hello")
        resp = conn.read_response()
    assert resp.status == 200
    assert resp.body == b"hello"


# ---- responses the application gets wrong --------------------------------------------


@pytest.mark.parametrize("value", ["99", "1000", "-1", "abc"])
def test_invalid_status_gives_500_and_a_log_line(raw_server, value):
    start = len(raw_server.log())
    with raw_server.connect() as conn:
        resp = conn.request("GET", f"/invalid-status?v={value}")
    assert resp.status == 500
    assert b"never" not in resp.body
    raw_server.wait_log(r"(?i)ERROR:.*invalid", start=start)
    assert raw_server.get("/").text == "hello"  # the server lives on


@pytest.mark.parametrize("kind", ["name", "value", "nul", "empty"])
def test_invalid_header_gives_500_and_a_log_line(raw_server, kind):
    start = len(raw_server.log())
    with raw_server.connect() as conn:
        conn.send(build_request("GET", f"/invalid-header?kind={kind}"))
        head = conn.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 500 "), head
        assert b"Injected" not in head
        assert b"bad header" not in head
    raw_server.wait_log(r"ERROR:.*[Ii]nvalid", start=start)


def test_exception_before_response_start(raw_server):
    start = len(raw_server.log())
    with raw_server.connect() as conn:
        resp = conn.request("GET", "/raise-before")
    assert resp.status == 500
    assert resp.body == b"Internal Server Error"
    raw_server.wait_log(r"ERROR:    Exception in ASGI application", start=start)
    raw_server.wait_log(r"RuntimeError: raw app raised before the response started", start=start)
    raw_server.wait_log(r'"GET /raise-before HTTP/1.1" 500', start=start)


def test_exception_after_response_start(raw_server):
    """The response is cut: the client sees a chunked body without its end."""
    start = len(raw_server.log())
    with raw_server.connect() as conn:
        conn.send(build_request("GET", "/raise-after"))
        version, status, _, headers = conn.read_head()
        assert status == 200
        assert ("transfer-encoding", "chunked") in headers
        rest = conn.read_to_eof()
    assert b"partial" in rest
    assert not rest.endswith(b"0\r\n\r\n"), "an aborted response must not look complete"
    raw_server.wait_log(r"RuntimeError: raw app raised after the response started", start=start)


def test_returning_without_a_response(raw_server):
    start = len(raw_server.log())
    with raw_server.connect() as conn:
        resp = conn.request("GET", "/no-response")
    assert resp.status == 500
    raw_server.wait_log(r"ERROR:    ASGI callable returned without starting response", start=start)


def test_returning_without_completing_the_response(raw_server):
    start = len(raw_server.log())
    with raw_server.connect() as conn:
        conn.send(build_request("GET", "/incomplete"))
        _, status, _, _ = conn.read_head()
        assert status == 200
        rest = conn.read_to_eof()
    assert not rest.endswith(b"0\r\n\r\n")
    raw_server.wait_log(r"ERROR:    ASGI callable returned without completing response",
                        start=start)


# ---- disconnects ------------------------------------------------------------------------


def test_send_after_disconnect_raises_oserror(raw_server):
    conn = raw_server.connect()
    conn.send(build_request("GET", "/send-after-disconnect?key=sad1"))
    raw_server.poll_result("sad1", lambda v: v == "waiting")
    conn.close()
    value = raw_server.poll_result("sad1", lambda v: v not in ("waiting", "disconnected"))
    assert value.startswith("OSError:"), value


def test_uncaught_oserror_after_disconnect_is_not_an_error(raw_server):
    """An app that lets the OSError from send() propagate after a disconnect
    does not get a 500 or a traceback: the client is gone anyway."""
    start = len(raw_server.log())
    conn = raw_server.connect()
    conn.send(build_request("GET", "/send-after-disconnect?key=sad2&catch=0"))
    raw_server.poll_result("sad2", lambda v: v == "waiting")
    conn.abort()
    raw_server.poll_result("sad2", lambda v: v.startswith("OSError:"))
    assert raw_server.get("/").text == "hello"
    time.sleep(0.2)
    assert "Traceback" not in raw_server.log()[start:]


def test_disconnect_while_reading_body(raw_server):
    """A client that sends part of a body and leaves: receive() gives
    http.disconnect."""
    conn = raw_server.connect()
    conn.send(b"POST /wait-disconnect?key=wd1 HTTP/1.1\r\nHost: x\r\n"
              b"Content-Length: 100000\r\n\r\n" + b"x" * 1000)
    raw_server.poll_result("wd1", lambda v: v == "waiting")
    time.sleep(0.2)
    conn.close()
    value = raw_server.poll_result("wd1", lambda v: v != "waiting")
    assert value.startswith("disconnect after"), value


def test_disconnect_after_full_body(raw_server):
    """After the whole body, the next receive() waits and then gives
    http.disconnect when the client goes away."""
    conn = raw_server.connect()
    conn.send(build_request("POST", "/wait-disconnect?key=wd2", body=b"abc"))
    raw_server.poll_result("wd2", lambda v: v.startswith("body complete"))
    conn.abort()
    value = raw_server.poll_result("wd2", lambda v: "after complete" in v)
    assert value == "http.disconnect after complete 3"


def test_streaming_to_a_client_that_leaves(raw_server):
    conn = raw_server.connect()
    conn.send(build_request("GET", "/stream-until-disconnect?key=sud1"))
    conn.read_head()
    conn.read_exact(200_000)
    conn.abort()
    value = raw_server.poll_result("sud1", lambda v: v != "streaming")
    assert value.startswith("OSError:"), value
    assert raw_server.get("/").text == "hello"


# ---- extensions -------------------------------------------------------------------------


def test_pathsend(raw_server, data_file):
    resp = raw_server.get("/pathsend", params={"path": str(data_file)})
    assert resp.status_code == 200
    assert resp.headers["content-length"] == str(len(FILE_DATA))
    assert resp.content == FILE_DATA


def test_pathsend_head(raw_server, data_file):
    with raw_server.connect() as conn:
        resp = conn.request("HEAD", f"/pathsend?path={data_file}")
        assert resp.status == 200
        assert resp.header("content-length") == str(len(FILE_DATA))
        # nothing of the file follows: the next response is intact
        assert conn.request("GET", "/").body == b"hello"


def test_pathsend_missing_file_is_an_application_error(raw_server, tmp_path):
    resp = raw_server.get("/pathsend", params={"path": str(tmp_path / "nope")})
    # getsize() in the app raises first: a plain 500
    assert resp.status_code == 500


@pytest.mark.parametrize("query, expected", [
    ("", FILE_DATA),
    ("&offset=1000", FILE_DATA[1000:]),
    ("&offset=10&count=5000", FILE_DATA[10:5010]),
    ("&seek=300", FILE_DATA[300:]),
])
def test_zerocopysend(raw_server, data_file, query, expected):
    with raw_server.connect() as conn:
        resp = conn.request("GET", f"/zerocopysend?path={data_file}{query}")
    assert resp.status == 200
    assert resp.body == expected


# ---- framing --------------------------------------------------------------------------


def test_chunked_response(raw_server):
    with raw_server.connect() as conn:
        resp = conn.request("GET", "/chunks?n=4")
        assert resp.header("transfer-encoding") == "chunked"
        assert resp.header("content-length") is None
        assert resp.body == b"chunk0;chunk1;chunk2;chunk3;"
        assert conn.request("GET", "/").body == b"hello"  # still usable


@pytest.mark.parametrize("code", [204, 304])
def test_no_body_statuses(raw_server, code):
    with raw_server.connect() as conn:
        resp = conn.request("GET", f"/status?code={code}")
        assert resp.status == code
        assert resp.header("transfer-encoding") is None
        # the app's body must not leak into the connection
        assert conn.request("GET", "/").body == b"hello"


def test_access_log_line(raw_server):
    start = len(raw_server.log())
    with raw_server.connect() as conn:
        conn.request("GET", "/?x=1")
        port = conn.local_port
    line = raw_server.wait_log(r'^INFO:     127\.0\.0\.1:%d - .*$' % port, start=start).group(0)
    assert line == f'INFO:     127.0.0.1:{port} - "GET /?x=1 HTTP/1.1" 200 OK'
    raw_server.get("/missing")
    raw_server.wait_log(r'"GET /missing HTTP/1.1" 404 Not Found$', start=start)
    entries = access_lines(raw_server.log()[start:])
    assert ("127.0.0.1", port, "GET", "/?x=1", "1.1", 200, "OK") in entries


def test_many_sequential_requests_keep_working(raw_server):
    with raw_server.connect() as conn:
        for i in range(200):
            body = f"payload {i}".encode()
            resp = conn.request("POST", "/echo", body=body)
            assert resp.status == 200 and resp.body == body


def test_request_log_prefix_of_long_targets_does_not_break(raw_server):
    target = "/" + "a" * 4000
    with raw_server.connect() as conn:
        assert conn.request("GET", target).status == 404
    raw_server.wait_log(r'"GET /a+')  # the access log is written after the response


# ---- bodies the application ignores, lengths it gets wrong ------------------------------


def test_unread_request_body_is_never_parsed_as_a_request(raw_server):
    """An app that answers without reading the body: the server skips the
    body (or closes the connection), but never takes it for a request."""
    hidden = b"GET /smuggled-in-body HTTP/1.1\r\nHost: x\r\n\r\n"
    with raw_server.connect() as conn:
        conn.send(build_request("POST", "/no-read", body=hidden)
                  + build_request("GET", "/delay?tag=after-unread"))
        assert conn.read_response().body == b"did not read"
        try:
            second = conn.read_response()
        except EOFError:
            second = None  # closing is fine too
        if second is not None:
            assert second.body == b"after-unread"
    assert "/smuggled-in-body" not in raw_server.get("/seen").json()


def test_large_unread_request_body(raw_server):
    with raw_server.connect() as conn:
        conn.send(b"POST /no-read HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        assert conn.read_response().body == b"did not read"
        # the client may go on sending; the server must not hang on it
        try:
            for _ in range(20):
                conn.send(b"y" * 65536)
        except OSError:
            pass
    assert raw_server.get("/").text == "hello"


@pytest.mark.parametrize("declare, send", [(10, 5), (5, 10)])
def test_body_not_matching_content_length(raw_server, declare, send):
    """A response that cannot be framed as declared: never more bytes than
    declared, the connection is closed rather than left out of sync, and the
    mistake is reported (send() raises, or an error is logged)."""
    start = len(raw_server.log())
    key = f"lm-{declare}-{send}"
    with raw_server.connect() as conn:
        conn.send(build_request("GET", f"/length-mismatch?declare={declare}&send={send}&key={key}")
                  + build_request("GET", "/"))
        data = conn.read_to_eof()
    head, _, rest = data.partition(b"\r\n\r\n")
    if head.startswith(b"HTTP/1.1 200 "):
        assert len(rest) <= declare, rest
    else:
        assert data == b"" or head.startswith(b"HTTP/1.1 500 "), data
    assert b"hello" not in data  # the next request was not answered on a broken stream
    value = raw_server.poll_result(key, lambda v: v is not None)
    if send > declare:
        assert "Error" in value, value  # send() raised
    raw_server.wait_log(r"ERROR:.*", start=start, timeout=3)

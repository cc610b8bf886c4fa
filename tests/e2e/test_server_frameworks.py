"""Starlette and FastAPI applications served by app.bin
(fixtures/appbin_serverapps/appbin_serverapps/{star,fast}.py): routing,
validation, forms, streaming, files, background tasks, threadpools,
middlewares, exception handlers, lifespan state, disconnect detection,
outgoing connections, contextvars and executors.
"""

import concurrent.futures
import gzip
import hashlib
import time

import httpx
import pytest

from server_fixtures import FILE_DATA, build_request

pytestmark = pytest.mark.timeout(120)


def _parallel(fn, n):
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(fn, range(n)))


# ---- FastAPI ----------------------------------------------------------------------------


def test_fastapi_root_and_404(fast_server):
    assert fast_server.get("/").json() == {"message": "fastapi says hi"}
    resp = fast_server.get("/no/such/route")
    assert resp.status_code == 404
    assert resp.json() == {"detail": "Not Found"}


def test_fastapi_path_and_query_models(fast_server):
    resp = fast_server.get("/items/1", params={"q": "find", "limit": "3"})
    assert resp.status_code == 200
    assert resp.json() == {"id": 1, "name": "hammer", "price": 9.5, "tags": ["tools"],
                           "q": "find", "limit": 3}
    resp = fast_server.get("/items/999")
    assert resp.status_code == 404
    assert resp.json() == {"detail": "Item not found"}


@pytest.mark.parametrize("path", ["/items/abc", "/items/0", "/items/1?limit=x",
                                  "/items/1?q=" + "x" * 30])
def test_fastapi_validation_errors_are_422(fast_server, path):
    resp = fast_server.get(path)
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["type"]


def test_fastapi_body_model(fast_server):
    resp = fast_server.client.post("/items", json={"name": "saw", "price": 10, "tags": ["a"]})
    assert resp.status_code == 201
    body = resp.json()
    assert body["name"] == "saw" and body["price_with_tax"] == 12.0 and body["id"] >= 2
    resp = fast_server.client.post("/items", json={"name": "", "price": -1})
    assert resp.status_code == 422
    fields = {tuple(e["loc"]) for e in resp.json()["detail"]}
    assert fields == {("body", "name"), ("body", "price")}
    resp = fast_server.client.post("/items", content=b"{not json",
                                   headers={"content-type": "application/json"})
    assert resp.status_code == 422


def test_fastapi_form_upload(fast_server):
    data = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes
    resp = fast_server.client.post("/upload", data={"note": "a note"},
                                   files={"file": ("data.bin", data, "application/x-test")})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"filename": "data.bin", "content_type": "application/x-test",
                           "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                           "note": "a note"}
    resp = fast_server.client.post("/upload", data={"note": "x"})
    assert resp.status_code == 422


def test_fastapi_exception_handler(fast_server):
    assert fast_server.get("/pay", params={"amount": 50}).json() == {"paid": 50}
    resp = fast_server.get("/pay", params={"amount": 150})
    assert resp.status_code == 402
    assert resp.json() == {"error": "insufficient funds", "missing": 50}


def test_fastapi_unhandled_exception_is_500_and_logged(fast_server):
    start = len(fast_server.log())
    resp = fast_server.get("/crash")
    assert resp.status_code == 500
    assert resp.text == "Internal Server Error"
    fast_server.wait_log(r"ERROR:    Exception in ASGI application", start=start)
    fast_server.wait_log(r"ZeroDivisionError: fastapi endpoint failed on purpose", start=start)
    assert fast_server.get("/").status_code == 200


def test_fastapi_sync_endpoint_runs_in_the_threadpool(fast_server):
    info = fast_server.get("/sync", headers={"x-request-id": "sync-1"}).json()
    assert info["main"] is False
    assert info["request_id"] == "sync-1"  # the context follows into the thread


def test_fastapi_sync_endpoints_run_in_parallel_without_blocking_the_loop(fast_server):
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        slow = [pool.submit(fast_server.get, "/sync", params={"s": 2}) for _ in range(4)]
        time.sleep(0.3)
        quick_start = time.monotonic()
        assert fast_server.get("/").status_code == 200
        quick = time.monotonic() - quick_start
        assert all(f.result().status_code == 200 for f in slow)
    elapsed = time.monotonic() - start
    assert quick < 1.0, f"the event loop was blocked {quick:.2f}s by sync endpoints"
    assert elapsed < 5.0, f"4 x 2 s sync endpoints took {elapsed:.2f}s (not in parallel)"


def test_fastapi_streaming_response(fast_server):
    with fast_server.connect() as conn:
        resp = conn.request("GET", "/stream?n=50")
        assert resp.header("transfer-encoding") == "chunked"
        assert resp.body == b"".join(f"{i}\n".encode() for i in range(50))


def test_fastapi_file_response(fast_server):
    resp = fast_server.get("/file/data.bin")
    assert resp.status_code == 200
    assert resp.content == FILE_DATA
    assert resp.headers["content-length"] == str(len(FILE_DATA))
    assert "etag" in resp.headers and "last-modified" in resp.headers
    resp = fast_server.get("/file/data.bin", headers={"range": "bytes=100-199"})
    assert resp.status_code == 206
    assert resp.content == FILE_DATA[100:200]
    assert fast_server.get("/file/hello.txt").text == "hello from a file\n"


def test_fastapi_background_tasks(fast_server):
    resp = fast_server.client.post("/background", params={"key": "bg1"})
    assert resp.json() == {"queued": "bg1"}
    fast_server.poll_result("bg1", lambda v: v == "async task ran", field="value")
    fast_server.poll_result("bg1-sync", lambda v: v == "sync task ran", field="value")


def test_fastapi_middlewares(fast_server):
    resp = fast_server.get("/large", headers={"accept-encoding": "gzip"})
    assert resp.headers["x-fastapi-middleware"] == "yes"
    assert resp.headers["content-encoding"] == "gzip"
    assert resp.text == "fastapi compresses this " * 1000
    with fast_server.connect() as conn:
        raw = conn.request("GET", "/large", headers=[("Accept-Encoding", "gzip")])
        assert gzip.decompress(raw.body) == b"fastapi compresses this " * 1000
        plain = conn.request("GET", "/large")
        assert plain.header("content-encoding") is None
        assert plain.body == b"fastapi compresses this " * 1000


def test_fastapi_lifespan_state(fast_server):
    assert fast_server.get("/state").json() == {"db": {"connected": True, "name": "fake-db"}}
    fast_server.wait_log(r"APP: fastapi lifespan startup")


def test_fastapi_is_disconnected(fast_server):
    conn = fast_server.connect()
    conn.send(build_request("GET", "/watch-disconnect?key=fwd1"))
    fast_server.poll_result("fwd1", lambda v: v == "watching", field="value")
    time.sleep(0.2)
    conn.close()
    fast_server.poll_result("fwd1", lambda v: v == "disconnected", field="value")


@pytest.mark.parametrize("via", ["httpx", "streams"])
def test_fastapi_outgoing_connection(fast_server, upstream, via):
    resp = fast_server.get("/outgoing", params={"port": upstream, "via": via})
    assert resp.status_code == 200, resp.text
    expected_from = "appbin" if via == "httpx" else "streams"
    assert resp.json() == {"status": 200, "body": f"upstream-ok from={expected_from}"}


def test_fastapi_contextvars_are_per_request(fast_server):
    def one(i):
        return fast_server.get("/contextvar", params={"delay": 0.3},
                               headers={"x-request-id": f"req-{i}"}).json()

    results = _parallel(one, 6)
    for i, r in enumerate(results):
        assert r["before"] == r["after"] == r["executor_copied"] == f"req-{i}"


def test_fastapi_run_in_executor(fast_server):
    info = fast_server.get("/executor").json()
    assert info["main"] is False


def test_fastapi_root_path(appbin):
    server = appbin("--root-path", "/api", app="appbin_serverapps.fast:app")
    resp = server.get("/root-path")
    assert resp.status_code == 200
    info = resp.json()
    assert info["root_path"] == "/api"
    assert info["path"] == "/api/root-path"
    assert info["url"].endswith("/api/root-path")
    assert info["url_for"].endswith("/api/items/1")
    assert server.get("/items/1").json()["name"] == "hammer"
    openapi = server.get("/openapi.json").json()
    assert openapi["servers"] == [{"url": "/api"}]


# ---- Starlette ---------------------------------------------------------------------------------


def test_starlette_basics(star_server):
    resp = star_server.get("/")
    assert resp.text == "starlette says hi"
    assert resp.headers["x-middleware"] == "base"
    assert float(resp.headers["x-process-time"]) >= 0
    assert star_server.get("/nope").status_code == 404


def test_starlette_lifespan_state(star_server):
    first = star_server.get("/state").json()
    second = star_server.get("/state").json()
    assert first["greeting"] == "hello from lifespan"
    # the state dict is copied per request, the objects in it are shared
    assert second["hits"] == first["hits"] + 1


def test_starlette_streaming_response(star_server):
    with star_server.client.stream("GET", "/stream", params={"n": 20}) as resp:
        lines = list(resp.iter_lines())
    assert lines == [f"line {i}" for i in range(20)]


def test_starlette_file_response_uses_pathsend(star_server):
    with star_server.connect() as conn:
        resp = conn.request("GET", "/file/data.bin")
        assert resp.status == 200
        assert resp.body == FILE_DATA
        resp = conn.request("HEAD", "/file/data.bin")
        assert resp.header("content-length") == str(len(FILE_DATA))
        resp = conn.request("GET", "/file/data.bin", headers=[("Range", "bytes=-10")])
        assert resp.status == 206 and resp.body == FILE_DATA[-10:]
        assert conn.request("GET", "/").body == b"starlette says hi"


def test_starlette_gzip(star_server):
    resp = star_server.get("/large-text", headers={"accept-encoding": "gzip"})
    assert resp.headers["content-encoding"] == "gzip"
    assert resp.text == "compress me " * 2000
    with star_server.connect() as conn:
        raw = conn.request("GET", "/large-text", headers=[("Accept-Encoding", "gzip")])
    assert len(raw.body) < 2000
    assert gzip.decompress(raw.body) == b"compress me " * 2000


def test_starlette_background_task(star_server):
    assert star_server.get("/background", params={"key": "sbg"}).text == "queued"
    star_server.poll_result("sbg", lambda v: v == "background ran")


def test_starlette_exception_handler_and_unhandled(star_server):
    resp = star_server.get("/teapot")
    assert resp.status_code == 418
    assert resp.json() == {"error": "teapot", "detail": "short and stout"}
    start = len(star_server.log())
    resp = star_server.get("/unhandled")
    assert resp.status_code == 500
    star_server.wait_log(r"ValueError: starlette endpoint failed on purpose", start=start)


def test_starlette_form(star_server):
    resp = star_server.client.post("/form", data={"field": "v"},
                                   files={"file": ("a.txt", b"x" * 1000, "text/plain")})
    assert resp.json() == {"field": "v", "filename": "a.txt", "size": 1000}


def test_starlette_sleep_runs_concurrently(star_server):
    start = time.monotonic()
    results = _parallel(lambda i: star_server.get("/sleep", params={"s": 1}).json(), 10)
    elapsed = time.monotonic() - start
    assert all(r["slept"] >= 0.95 for r in results)
    assert elapsed < 3.0, f"10 concurrent 1 s sleeps took {elapsed:.2f}s"


def test_starlette_sync_endpoint_and_executor(star_server):
    info = star_server.get("/sync", headers={"x-request-id": "s-1"}).json()
    assert info["main"] is False and info["request_id"] == "s-1"
    assert star_server.get("/executor").json()["main"] is False


def test_starlette_contextvars(star_server):
    results = _parallel(lambda i: star_server.get(
        "/contextvar", params={"delay": 0.2}, headers={"x-request-id": f"s{i}"}).json(), 4)
    for i, r in enumerate(results):
        assert r["before"] == r["after"] == r["executor_copied"] == f"s{i}"


def test_starlette_is_disconnected(star_server):
    conn = star_server.connect()
    conn.send(build_request("GET", "/watch-disconnect?key=swd"))
    star_server.poll_result("swd", lambda v: v == "watching")
    time.sleep(0.2)
    conn.abort()
    star_server.poll_result("swd", lambda v: v == "disconnected")


def test_starlette_outgoing_connection(star_server, upstream):
    resp = star_server.get("/outgoing", params={"port": upstream})
    assert resp.json() == {"status": 200, "body": "upstream-ok from=appbin"}


def test_starlette_streaming_to_a_client_that_leaves(star_server):
    """StreamingResponse stops when send() raises after the disconnect
    (ASGI spec 2.4): the server goes on serving."""
    conn = star_server.connect()
    conn.send(build_request("GET", "/stream?n=100000"))
    conn.read_head()
    conn.read_exact(1000)
    conn.abort()
    time.sleep(0.3)
    assert star_server.get("/").status_code == 200


def test_httpx_async_client_against_the_server(star_server):
    import asyncio

    async def main():
        async with httpx.AsyncClient(base_url=star_server.url, timeout=10) as client:
            responses = await asyncio.gather(*[client.get("/sleep", params={"s": 0.2})
                                               for _ in range(20)])
        return [r.status_code for r in responses]

    assert asyncio.run(main()) == [200] * 20

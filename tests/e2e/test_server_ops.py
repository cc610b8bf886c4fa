"""The operations flags: --env-file (against python-dotenv itself), logging as
uvicorn's (--log-config JSON/YAML/ini, --use-colors, the uvicorn loggers),
--log-format json, the Prometheus endpoint (--metrics-port: parsed with
prometheus_client, scraped while the app's loop is blocked, with two workers
and after a worker restart), the ASGI extensions the host supports, and the
Kubernetes example manifest.

The app is fixtures/appbin_opsapps (see its docstring), packed with PyYAML.
"""

import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect as ws_connect

from conftest import OPS_APP, ROOT
from hostutil import copy_with, index_offset
from server_fixtures import RAW_APP, AppBinFactory, children_of, free_port, pid_alive

TOOLS_PYTHON = ROOT / "build" / "tools-venv" / "bin" / "python"


@pytest.fixture
def ops(ops_app_bin, tmp_path):
    """ops(*args, ready=True, env=None) -> AppBin of the ops app on a free port."""
    factory = AppBinFactory(ops_app_bin, tmp_path)
    yield factory
    factory.close()


def server_lines(log):
    """The lines the server wrote (the app's own prints, and its "opsapps"
    logger's bare last-resort lines, left out)."""
    return [line for line in log.splitlines()
            if line and not line.startswith(("APP:", "app logger:"))]


# ---- --env-file --------------------------------------------------------------------

# Every form python-dotenv reads; each key's expected value comes from
# python-dotenv's load_dotenv itself (see dotenv_reference).
ENV_FILE = r"""# a comment line
OPS_PLAIN=plain
  OPS_INDENTED = spaced out   
export OPS_EXPORTED=exported
OPS_INLINE=value # an inline comment
OPS_HASH=val#ue
OPS_EMPTY=
OPS_EMPTY_COMMENT= # only a comment
OPS_SINGLE='single # not a comment \n kept'
OPS_SINGLE_ESC='it\'s'
OPS_DOUBLE="tab\there \"quoted\" back\\slash"
OPS_MULTI="line one
line two"
OPS_PEM='-----BEGIN KEY-----
abc
-----END KEY-----'
'OPS_QUOTED_KEY'=quoted key
OPS_REF=${OPS_PLAIN}-ref
OPS_REF_DOUBLE="${OPS_PLAIN} in quotes"
OPS_REF_DEFAULT=${OPS_MISSING:-fallback}
OPS_REF_ENV=${OPS_FROM_ENV}
OPS_REF_LATER=${OPS_DEFINED_LATER}
OPS_DEFINED_LATER=later
OPS_PRESET=from-file
OPS_DUP=first
OPS_DUP=second
OPS_BARE
OPS_UNICODE="caf\u00e9 café"
OPS_DOLLAR=$OPS_PLAIN
"""


def dotenv_reference(path, env):
    """os.environ after uvicorn's load_dotenv(dotenv_path=path), in env."""
    code = ("import json, os, sys; from dotenv import load_dotenv; "
            "load_dotenv(dotenv_path=sys.argv[1]); print(json.dumps(dict(os.environ)))")
    out = subprocess.run([str(TOOLS_PYTHON), "-c", code, str(path)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def test_env_file_matches_python_dotenv(ops, tmp_path):
    path = tmp_path / "app.env"
    path.write_text(ENV_FILE, encoding="utf-8")
    env = {"OPS_FROM_ENV": "from-env", "OPS_PRESET": "from-env"}
    server = ops("--env-file", path, env=env)
    got = server.get("/environ", params={"prefix": "OPS_"}).json()
    want = {k: v for k, v in dotenv_reference(path, {**os.environ, **env}).items()
            if k.startswith("OPS_")}
    assert got == want
    # a few that matter, spelled out
    assert got["OPS_PRESET"] == "from-env"  # the environment wins, as with uvicorn
    assert got["OPS_MULTI"] == "line one\nline two"
    assert got["OPS_REF"] == "plain-ref" and got["OPS_REF_DEFAULT"] == "fallback"
    assert got["OPS_DUP"] == "second" and "OPS_BARE" not in got
    assert "Loading environment from" in server.log()


def test_env_file_crlf_and_bom(ops, tmp_path):
    path = tmp_path / "win.env"
    path.write_bytes(b"\xef\xbb\xbfOPS_A=1\r\nOPS_B=\"x\r\ny\"\r\n")
    server = ops("--env-file", path)
    got = server.get("/environ", params={"prefix": "OPS_"}).json()
    assert got == {k: v for k, v in dotenv_reference(path, dict(os.environ)).items()
                   if k.startswith("OPS_")}
    assert got == {"OPS_A": "1", "OPS_B": "x\ny"}


def test_env_file_does_not_configure_app_bin(ops, tmp_path):
    """As uvicorn reads UVICORN_* before the env file, APPBIN_* in the file
    reach the app only, with a warning."""
    path = tmp_path / "app.env"
    path.write_text("APPBIN_ROOT_PATH=/from-file\nOPS_OK=1\n")
    server = ops("--env-file", path)
    server.wait_log(r"WARNING:  .*sets APPBIN_ROOT_PATH, which does not configure app\.bin")
    assert server.get("/environ", params={"prefix": "APPBIN_ROOT"}).json() == {
        "APPBIN_ROOT_PATH": "/from-file"}


def test_env_file_from_the_environment(ops, tmp_path):
    path = tmp_path / "app.env"
    path.write_text("OPS_VIA=env-var\n")
    server = ops(env={"APPBIN_ENV_FILE": str(path)})
    assert server.get("/environ", params={"prefix": "OPS_VIA"}).json() == {"OPS_VIA": "env-var"}


@pytest.mark.parametrize("content, message", [
    (None, r"--env-file: cannot read .*missing\.env: No such file or directory"),
    ('OPS_A=1\nOPS_B="unterminated\n', r"--env-file: .*bad\.env: line 2: unterminated "
                                        r"double-quoted value"),
    ("OPS_A B=1\n", r"line 1: expected '=' after the name"),
    (b"OPS_A=\xff\n", r"line 1: not UTF-8"),
])
def test_env_file_errors(ops, tmp_path, content, message):
    path = tmp_path / ("missing.env" if content is None else "bad.env")
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    rc, out = ops.run("--env-file", path, "--port", "0")
    assert rc == 2
    assert re.search(message, out), out
    assert "Traceback" not in out and "running on" not in out


# ---- logging -------------------------------------------------------------------------


def test_uvicorn_loggers_work_without_a_config(ops):
    """Without --log-config the "uvicorn" loggers are set up as uvicorn's
    default config does, before the app is imported."""
    server = ops()
    server.get("/log", params={"msg": "hello from the app"})
    server.wait_log(r"^INFO:     hello from the app$")
    log = server.log()
    assert re.search(r"^INFO:     opsapps imported$", log, re.M)
    assert log.index("opsapps imported") < log.index("Waiting for application startup")
    # a logger of the app's own is not configured (uvicorn neither): the
    # root's last-resort handler prints its warnings bare
    assert re.search(r"^app logger: hello from the app$", log, re.M)


def test_log_format_json(ops):
    server = ops("--log-format", "json")
    server.get("/status", params={"code": "201"}, headers={"X-Request-ID": 'req-"1"'})
    server.get("/raise")
    server.get("/log", params={"msg": "json from the app"})
    bad = server.connect()
    bad.send(b"GET /status?code=204 HTTP/1.1\r\nHost: a\r\nX-Request-ID: \xff\xfeid\r\n\r\n")
    assert bad.read_response().status == 204
    bad.close()
    long = server.connect()  # escapes and truncation keep lines whole and valid
    long.send(b"GET /status?q=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\nX-Request-ID: "
              + b'"\\' * 3000 + b"\r\n\r\n")
    assert long.read_response().status == 200
    long.close()
    server.wait_log(r'"message":"json from the app"')
    server.wait_log(r'"status":204')
    server.stop()
    records = [json.loads(line) for line in server_lines(server.log())]  # every line is JSON
    for rec in records:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rec["time"]), rec
        assert rec["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
        assert rec["logger"] in ("uvicorn.error", "uvicorn.access")
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    first = access[0]
    assert first["method"] == "GET" and first["path"] == "/status?code=201"
    assert first["status"] == 201 and first["bytes"] == len(b"status")
    assert first["http_version"] == "1.1" and first["request_id"] == 'req-"1"'
    assert re.fullmatch(r"127\.0\.0\.1:\d+", first["client"])
    assert isinstance(first["duration_ms"], float) and 0 <= first["duration_ms"] < 5000
    assert first["level"] == "INFO"
    failed = next(r for r in access if r["path"] == "/raise")
    assert failed["status"] == 500 and "request_id" not in failed
    assert next(r for r in access if r["status"] == 204)["request_id"] == "\ufffd\ufffdid"
    truncated = next(r for r in access if r["path"].startswith("/status?q=aaa"))
    assert 2000 < len(truncated["path"]) <= 2048 and set(truncated["path"][10:]) == {"a"}
    assert 100 < len(truncated["request_id"]) <= 128
    assert set(truncated["request_id"]) == {'"', "\\"}
    error = next(r for r in records if r.get("message") == "Exception in ASGI application")
    assert error["level"] == "ERROR" and "opsapps raised on purpose" in error["exc_info"]
    messages = [r.get("message") for r in records]
    assert "opsapps imported" in messages and "Application startup complete." in messages
    assert "Finished server process" in messages


def test_log_format_json_with_workers(ops):
    """The supervisor's lines are JSON too."""
    port = free_port()
    server = ops("--workers", "2", "--port", port, "--log-format", "json")
    server.port = port
    deadline = time.monotonic() + 30
    while server.log().count("appbin running on socket") < 2:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    server.get("/status")
    server.wait_log(r'"logger":"uvicorn\.access"')
    assert server.stop() == 0
    records = [json.loads(line) for line in server_lines(server.log())]
    messages = [r.get("message", "") for r in records]
    assert any(m.startswith("Started parent process") for m in messages)
    assert sum(m.startswith("Started worker process") for m in messages) == 2
    assert any(m.startswith("Finished parent process") for m in messages)


def test_app_import_error_is_a_log_line(ops):
    rc, out = ops.run("--app", "appbin_opsapps.broken:app", "--port", "0", "--log-format", "json")
    assert rc == 1
    (record,) = [json.loads(line) for line in server_lines(out) if "broken" in line]
    assert record["level"] == "ERROR"
    assert record["message"] == "Error loading ASGI app 'appbin_opsapps.broken:app'"
    assert "RuntimeError: opsapps broken at import" in record["exc_info"]


def test_request_id_header_option(ops):
    server = ops("--log-format", "json", "--request-id-header", "X-Trace")
    server.get("/status", headers={"x-trace": "t-1", "x-request-id": "ignored"})
    line = server.wait_log(r'^\{.*"logger":"uvicorn\.access".*$').group(0)
    assert json.loads(line)["request_id"] == "t-1"


def test_colours(ops):
    server = ops("--use-colors")
    server.get("/status", params={"code": "404"})
    server.wait_log(re.escape('"\033[1mGET /status?code=404 HTTP/1.1\033[0m" \033[31m404 Not '
                              'Found\033[0m'))
    assert "\033[32mINFO\033[0m:     Application startup complete." in server.log()
    plain = ops("--no-use-colors")
    plain.get("/status")
    plain.wait_log(r'"GET /status HTTP/1\.1" 200 OK$')
    assert "\033[" not in plain.log()


def test_colours_follow_a_terminal(ops_app_bin, tmp_path):
    """Without --use-colors/--no-use-colors: colours when stderr is a tty."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(ops_app_bin), "--port", "0"], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    try:
        deadline = time.monotonic() + 30
        while b"running on" not in out and time.monotonic() < deadline:
            try:
                out += os.read(master, 4096)
            except OSError:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        os.close(master)
    assert b"\033[32mINFO\033[0m:" in out, out


UVICORN_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "default": {"()": "uvicorn.logging.DefaultFormatter",
                    "fmt": "CFG %(levelprefix)s %(name)s %(message)s", "use_colors": False},
        "access": {"()": "uvicorn.logging.AccessFormatter", "use_colors": False,
                   "fmt": 'CFG-ACCESS %(levelprefix)s %(client_addr)s - "%(request_line)s" '
                          '%(status_code)s'},
    },
    "handlers": {
        "default": {"formatter": "default", "class": "logging.StreamHandler",
                    "stream": "ext://sys.stderr"},
        "access": {"formatter": "access", "class": "logging.StreamHandler",
                   "stream": "ext://sys.stdout"},
    },
    "loggers": {
        "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    },
}


def normalise(line):
    return re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", line)


def run_uvicorn(config_path, tmp_path):
    """Real uvicorn (tools venv) with the same config on a small app; its
    startup and access lines."""
    app_dir = tmp_path / "uvicorn-app"
    app_dir.mkdir()
    (app_dir / "uvapp.py").write_text(
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n        return\n"
        "    await send({'type': 'http.response.start', 'status': 404, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'x'})\n")
    port = free_port()
    log = tmp_path / "uvicorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(TOOLS_PYTHON), "-m", "uvicorn", "uvapp:app", "--port",
                                 str(port), "--log-config", str(config_path), "--lifespan", "off"],
                                cwd=app_dir, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/status?code=404", timeout=2)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
    return log.read_text()


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_log_config_dict(ops, tmp_path, suffix):
    path = tmp_path / f"log{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(UVICORN_CONFIG))
    else:
        path.write_text(yaml.safe_dump(UVICORN_CONFIG))
    server = ops("--log-config", path)
    server.get("/status", params={"code": "404"})
    server.get("/log", params={"msg": "through the config"})
    server.wait_log(r"^CFG INFO:     uvicorn\.error through the config$")
    access = server.wait_log(r"^CFG-ACCESS .*$").group(0)
    log = server.log()
    assert re.search(r"^CFG INFO:     uvicorn\.error opsapps imported$", log, re.M)
    assert log.index("opsapps imported") < log.index("Waiting for application startup")
    assert re.search(r"^CFG INFO:     uvicorn\.error appbin running on", log, re.M)
    # the same config under uvicorn gives the same access line
    reference = [line for line in run_uvicorn(path, tmp_path).splitlines()
                 if line.startswith("CFG-ACCESS")]
    assert reference and normalise(access) == normalise(reference[0])


def test_log_config_formatter_class_key(ops, tmp_path):
    """dictConfig's other spelling: "class" with "format" (a
    logging.Formatter subclass, as uvicorn's are)."""
    config = json.loads(json.dumps(UVICORN_CONFIG))
    config["formatters"]["default"] = {"class": "uvicorn.logging.DefaultFormatter",
                                       "format": "CLS %(levelprefix)s %(message)s"}
    path = tmp_path / "log.json"
    path.write_text(json.dumps(config))
    server = ops("--log-config", path)
    server.get("/log", params={"msg": "class key"})
    server.wait_log(r"^CLS INFO:     class key$")


def test_log_config_ini(ops, tmp_path):
    path = tmp_path / "log.ini"
    path.write_text("""
[loggers]
keys=root,uvicorn,access

[handlers]
keys=err,acc

[formatters]
keys=plain,access

[logger_root]
level=WARNING
handlers=err

[logger_uvicorn]
level=INFO
handlers=err
propagate=0
qualname=uvicorn

[logger_access]
level=INFO
handlers=acc
propagate=0
qualname=uvicorn.access

[handler_err]
class=StreamHandler
formatter=plain
args=(sys.stderr,)

[handler_acc]
class=StreamHandler
formatter=access
args=(sys.stderr,)

[formatter_plain]
format=INI %(levelname)s %(name)s: %(message)s

[formatter_access]
class=uvicorn.logging.AccessFormatter
format=INI-ACCESS %(client_addr)s "%(request_line)s" %(status_code)s
""")
    server = ops("--log-config", path)
    server.get("/status")
    server.get("/log", params={"msg": "ini"})
    server.wait_log(r'^INI-ACCESS 127\.0\.0\.1:\d+ "GET /status HTTP/1\.1" 200 OK$')
    server.wait_log(r"^INI INFO uvicorn\.error: ini$")
    server.wait_log(r"^INI WARNING opsapps: app logger: ini$")  # the root logger's handler


def test_log_config_access_log_and_level(ops, tmp_path):
    path = tmp_path / "log.json"
    path.write_text(json.dumps(UVICORN_CONFIG))
    port = free_port()
    server = ops("--port", port, "--log-config", path, "--no-access-log", "--log-level",
                 "warning", ready=False)
    server.port = port  # "running on" is an INFO line: not logged
    deadline = time.monotonic() + 30
    while True:
        try:
            server.get("/status")
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline and server.proc.poll() is None, server.log()
            time.sleep(0.1)
    server.get("/raise")
    server.wait_log(r"^CFG ERROR:    uvicorn\.error Exception in ASGI application$")
    assert "CFG-ACCESS" not in server.log()
    assert "Application startup complete" not in server.log()


def test_log_config_yaml_without_pyyaml(server_app_bin, tmp_path):
    """The YAML reader is the app venv's PyYAML: without it, a clear error."""
    path = tmp_path / "log.yaml"
    path.write_text("version: 1\n")
    factory = AppBinFactory(server_app_bin, tmp_path)
    rc, out = factory.run("--app", RAW_APP, "--port", "0", "--log-config", path)
    assert rc == 2
    assert re.search(r"--log-config: .*log\.yaml is YAML, and the app's venv has no PyYAML", out)
    assert "Traceback" not in out


@pytest.mark.parametrize("name, content, message", [
    ("missing.json", None, r"cannot read .*missing\.json: No such file or directory"),
    ("bad.json", "{not json", r"invalid logging config .*bad\.json: JSONDecodeError"),
    ("list.json", "[1, 2]", r"does not hold a dictConfig mapping"),
    ("bad.json", '{"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}',
     r"invalid logging config .*: ValueError: Unable to configure handler 'h'"),
    ("bad.ini", "[loggers]\nkeys=root\n", r"invalid logging config .*bad\.ini"),
])
def test_log_config_errors(ops, tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    rc, out = ops.run("--log-config", path, "--port", "0")
    assert rc == 2, out
    assert re.search(message, out), out
    assert "Traceback" not in out and "running on" not in out


# ---- metrics ---------------------------------------------------------------------------


def scrape(port, path="/metrics", timeout=5):
    resp = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=timeout)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return resp.text


def parse(text):
    """{family: {(sample name, labels tuple): value}}, checking the exposition:
    a HELP and TYPE line for every family, and prometheus_client's parser."""
    families = {}
    declared = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
    helps = set(re.findall(r"^# HELP (\S+) .+$", text, re.M))
    assert text.endswith("\n")
    for family in text_string_to_metric_families(text):
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
        families[family.name] = (family.type, samples)
    for name, kind in declared:
        assert name in helps, name
    return families


def value(families, family, sample=None, **labels):
    kind, samples = families[family]
    return samples[(sample or family, tuple(sorted(labels.items())))]


def metrics_port_of(server):
    return int(server.wait_log(r"Metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))


def test_metrics_exposition(ops):
    port = free_port()
    server = ops("--metrics-port", port)
    assert metrics_port_of(server) == port
    for code in ("200", "201", "404", "503"):
        server.get("/status", params={"code": code})
    server.get("/raise")
    raw = server.connect()
    raw.send(b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")  # the layer's own 400
    assert raw.read_response().status == 400
    raw.close()
    raw = server.connect()  # a body broken while the app reads it: one 400, counted once
    raw.send(b"POST /status HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"5\r\nhello\r\nzz\r\n")
    assert raw.read_response().status == 400
    raw.close()
    families = parse(scrape(port))
    kinds = {name: kind for name, (kind, _) in families.items()}
    assert kinds == {
        "appbin_http_requests": "counter",
        "appbin_http_request_duration_seconds": "histogram",
        "appbin_http_response_body_bytes": "counter",
        "appbin_http_requests_in_flight": "gauge",
        "appbin_http_connections": "gauge",
        "appbin_websocket_sessions": "gauge",
        "appbin_workers": "gauge",
        "appbin_worker_restarts": "counter",
        "appbin_worker_resident_memory_bytes": "gauge",
    }
    total = "appbin_http_requests_total"
    assert value(families, "appbin_http_requests", total, status="2xx") == 2
    assert value(families, "appbin_http_requests", total, status="4xx") == 3  # 404, 2 x 400
    assert value(families, "appbin_http_requests", total, status="5xx") == 2  # 503, /raise
    assert value(families, "appbin_http_requests", total, status="1xx") == 0
    assert value(families, "appbin_http_requests", total, status="other") == 0
    hist = "appbin_http_request_duration_seconds"
    count = value(families, hist, hist + "_count")
    assert count == 6  # the broken body's request reached the app, the bad head did not
    buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in families[hist][1].items()
                      if k[0] == hist + "_bucket"))
    assert buckets[-1] == (float("inf"), count)
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))
    assert 0 < value(families, hist, hist + "_sum") < 5
    assert value(families, "appbin_workers") == 1
    assert value(families, "appbin_worker_restarts", "appbin_worker_restarts_total") == 0
    rss = value(families, "appbin_worker_resident_memory_bytes", worker="0")
    assert 5 * 2**20 < rss < 2**30
    assert value(families, "appbin_http_response_body_bytes",
                 "appbin_http_response_body_bytes_total") > 0


def test_metrics_while_the_loop_is_blocked(ops):
    port = free_port()
    server = ops("--metrics-port", port, "--metrics-path", "/internal/metrics")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        import threading

        blocked = threading.Thread(target=client.get, args=("/block",),
                                   kwargs={"params": {"s": "4"}})
        blocked.start()
        time.sleep(0.5)
        started = time.monotonic()
        families = parse(scrape(port, "/internal/metrics", timeout=3))
        assert time.monotonic() - started < 2
        assert value(families, "appbin_http_requests_in_flight") == 1
        assert value(families, "appbin_http_connections") >= 1
        blocked.join(10)
    families = parse(scrape(port, "/internal/metrics"))
    assert value(families, "appbin_http_requests", "appbin_http_requests_total",
                 status="2xx") == 1
    assert value(families, "appbin_http_requests_in_flight") == 0
    hist = "appbin_http_request_duration_seconds"
    assert value(families, hist, hist + "_bucket", le="2.5") == 0
    assert value(families, hist, hist + "_bucket", le="5") == 1


def test_metrics_websocket_sessions(ops):
    port = free_port()
    server = ops("--metrics-port", port)
    with ws_connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
        ws.send("ping")
        assert ws.recv(timeout=5) == "ping"
        families = parse(scrape(port))
        assert value(families, "appbin_websocket_sessions") == 1
        assert value(families, "appbin_http_requests", "appbin_http_requests_total",
                     status="1xx") == 1
    deadline = time.monotonic() + 5
    while value(parse(scrape(port)), "appbin_websocket_sessions") != 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_metrics_with_workers_and_a_restart(ops):
    port, http_port = free_port(), free_port()
    server = ops("--workers", "2", "--port", http_port, "--metrics-port", port)
    deadline = time.monotonic() + 30
    while len(server.log().split("running on socket")) < 3:  # both workers serve
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    for _ in range(20):
        assert server.get("/status").status_code == 200
    families = parse(scrape(port))
    assert value(families, "appbin_workers") == 2
    assert value(families, "appbin_http_requests", "appbin_http_requests_total",
                 status="2xx") == 20
    rss = {k: v for k, v in families["appbin_worker_resident_memory_bytes"][1].items()}
    assert sorted(dict(k[1])["worker"] for k in rss) == ["0", "1"]
    # a worker dies: its replacement takes its slot; totals do not go back
    workers = children_of(server.pid)
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        families = parse(scrape(port))
        if (value(families, "appbin_worker_restarts", "appbin_worker_restarts_total") == 1
                and value(families, "appbin_workers") == 2):
            break
        assert time.monotonic() < deadline, families
        time.sleep(0.2)
    assert value(families, "appbin_http_requests", "appbin_http_requests_total",
                 status="2xx") >= 20
    assert not pid_alive(workers[0])


def test_metrics_endpoint_answers(ops):
    port = free_port()
    ops("--metrics-port", port)
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(base + "/other").status_code == 404
    resp = httpx.post(base + "/metrics")
    assert resp.status_code == 405 and resp.headers["allow"] == "GET, HEAD"
    head = httpx.head(base + "/metrics")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) > 500
    assert httpx.get(base + "/metrics?x=1").status_code == 200
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"garbage\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400 ")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"a" * 9000)
        assert s.recv(100).startswith(b"HTTP/1.1 431 ")


def test_metrics_endpoint_survives_garbage(ops):
    """Mutated requests (seeded): each gets an answer or a close, and the
    endpoint still serves (under ASan in tests/all.sh, memory errors abort)."""
    import random

    port = free_port()
    server = ops("--metrics-port", port)
    rng = random.Random(1234)
    seeds = [b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", b"HEAD /metrics HTTP/1.0\n\n",
             b"POST /metrics?x HTTP/1.1\r\n\r\n"]
    for _ in range(300):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            op = rng.randrange(4)
            pos = rng.randrange(len(data) + 1)
            if op == 0 and data:
                del data[pos % len(data)]
            elif op == 1:
                data[pos:pos] = bytes([rng.randrange(256)])
            elif op == 2:
                data[pos:pos] = rng.choice([b" ", b"\r\n", b"\n\n", b"/", b"?", b"\0"])
            elif data:
                data[pos % len(data)] = rng.randrange(256)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(bytes(data) + b"\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
            assert reply == b"" or re.match(rb"HTTP/1\.1 (200|400|404|405|431) ", reply), reply
    parse(scrape(port))
    assert server.proc.poll() is None


def test_metrics_port_in_use(ops):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc, out = ops.run("--port", "0", "--metrics-port", port)
    assert rc == 1
    assert re.search(r"cannot listen for metrics on 127\.0\.0\.1:\d+: Address already in use",
                     out), out


@pytest.mark.parametrize("workers", ["1", "2"])
def test_damaged_app_bin_never_listens_for_metrics(ops_app_bin, tmp_path, workers):
    """A damaged app.bin fails with its one line and never listens, on the
    metrics port either: the port was bound and listening (and the endpoint
    answering, in a single process) before the payload check finished. The
    damage is the archive's last byte, which only the whole check reads."""
    bad = copy_with(ops_app_bin, tmp_path / "damaged.bin",
                    patch=(index_offset(ops_app_bin) - 1, 0x01))
    port = free_port()
    proc = subprocess.Popen([str(bad), "--port", "0", "--metrics-port", str(port),
                             "--workers", workers], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    accepted = 0
    deadline = time.monotonic() + 60
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                accepted += 1
            except OSError:
                time.sleep(0.001)
    finally:
        proc.kill()
        out = proc.communicate()[0].decode("utf-8", "replace")
    assert proc.returncode == 1, out
    errors = [line for line in out.splitlines() if line.startswith("app.bin: error: ")]
    assert len(errors) == 1 and "is damaged" in errors[0], out
    assert "Metrics on" not in out and "running on" not in out, out
    assert accepted == 0, out
    bad.unlink()


def test_metrics_port_in_use_with_workers(ops):
    """With --workers the port is still checked before anything starts."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc, out = ops.run("--port", "0", "--metrics-port", port, "--workers", "2")
    assert rc == 1
    assert re.search(r"cannot listen for metrics on 127\.0\.0\.1:\d+: Address already in use",
                     out), out
    assert "Started worker" not in out


def test_metrics_off_by_default(ops):
    server = ops()
    assert "Metrics on" not in server.log()


# ---- the ASGI extensions ------------------------------------------------------------------


def test_extensions_advertised(ops):
    server = ops()
    assert server.get("/extensions").json() == ["http.response.pathsend",
                                                "http.response.zerocopysend"]


def test_pathsend_and_zerocopysend(ops, tmp_path):
    data = os.urandom(300_001)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    server = ops()
    resp = server.get("/pathsend", params={"path": str(path)})
    assert resp.status_code == 200 and resp.content == data
    resp = server.get("/zerocopy", params={"path": str(path)})
    assert resp.status_code == 200 and resp.content == data + b"<end>"
    assert resp.headers["transfer-encoding"] == "chunked"


def test_lifespan_state_is_copied_per_request(ops):
    """Each request gets a shallow copy of the lifespan state (ASGI's
    "state"): its own keys do not leak, the objects are shared."""
    server = ops()
    first = server.get("/state", params={"key": "mine", "value": "x"}).json()
    second = server.get("/state").json()
    assert first == {"keys": ["name", "shared"], "name": "opsapps", "hits": 0}
    assert second == {"keys": ["name", "shared"], "name": "opsapps", "hits": 1}


# ---- the Kubernetes example ------------------------------------------------------------------

K8S = ROOT / "examples" / "k8s" / "deployment.yaml"


def k8s_documents():
    return {doc["kind"]: doc for doc in yaml.safe_load_all(K8S.read_text()) if doc}


def option_value(args, name):
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def test_k8s_manifest(ops_app_bin, tmp_path):
    docs = k8s_documents()
    deployment = docs["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 65532
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["runAsGroup"] == 65532
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    # an in-memory /tmp for the app (the root file system is read-only)
    volumes = {v["name"]: v for v in pod["volumes"]}
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert volumes[tmp["name"]]["emptyDir"]["medium"] == "Memory"
    args = container["args"]
    # the grace period covers the preStop pause, the graceful shutdown and
    # the supervisor's 5 s before SIGKILL
    graceful = float(option_value(args, "--timeout-graceful-shutdown"))
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pause + graceful + 5
    assert option_value(args, "--host") == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == int(option_value(args, "--port"))
    assert ports["metrics"] == int(option_value(args, "--metrics-port"))
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]
    assert annotations["prometheus.io/path"] == option_value(args, "--metrics-path")
    # probes: `app.bin healthcheck` (exec) against the app's port, and HTTP
    exe = container["command"][0]
    for probe in ("startupProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:2] == [exe, "healthcheck"]
        assert int(option_value(command, "--port")) == ports["http"]
    readiness = container["readinessProbe"]["httpGet"]
    assert readiness["port"] == "http"
    assert readiness["path"] == option_value(container["livenessProbe"]["exec"]["command"],
                                             "--health-path")
    # app.bin accepts every flag (each is parsed before --help exits 0), and
    # the environment's APPBIN_* values
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    factory = AppBinFactory(ops_app_bin, tmp_path)
    rc, out = factory.run(*args, "--help", env=env)
    assert rc == 0, out
    for probe in ("startupProbe", "livenessProbe"):
        rc, out = factory.run(*container[probe]["exec"]["command"][1:], "--help")
        assert rc == 0, out
    # a typo would be caught: the same check fails on an unknown flag
    rc, out = factory.run(*args, "--no-such-flag", "--help")
    assert rc == 2 and "unknown option '--no-such-flag'" in out
    service = docs["Service"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"http", "metrics"}


def _with_port(args, name, port):
    return [f"{name}={port}" if a.startswith(name + "=") else a for a in args]


def test_k8s_manifest_runs(ops_app_bin, tmp_path):
    """The manifest's container as the kubelet would run it (its args and
    env, on free ports): the startup and liveness probes' `app.bin
    healthcheck` commands succeed, the readiness path answers 200, the
    metrics port answers for both workers, and SIGTERM drains and exits 0
    well within terminationGracePeriodSeconds."""
    pod = k8s_documents()["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    port, metrics_port = free_port(), free_port()
    args = _with_port(_with_port(container["args"], "--port", port), "--metrics-port",
                      metrics_port)
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    factory = AppBinFactory(ops_app_bin, tmp_path)
    server = factory(*args, env=env, ready=False)
    try:
        server.wait_log(r'"message":"Application startup complete\."', timeout=60)
        deadline = time.monotonic() + 30
        for probe in ("startupProbe", "livenessProbe"):
            command = _with_port(container[probe]["exec"]["command"][1:], "--port", port)
            while True:
                rc, out = factory.run(*command, timeout=30)
                if rc == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert rc == 0, (probe, out, server.log()[-3000:])
        readiness = container["readinessProbe"]["httpGet"]
        resp = httpx.get(f"http://127.0.0.1:{port}{readiness['path']}", timeout=10)
        assert resp.status_code == 200
        metrics = scrape(metrics_port, option_value(args, "--metrics-path"))
        workers = {f.name: f for f in text_string_to_metric_families(metrics)}["appbin_workers"]
        assert workers.samples[0].value == 2
        start = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert server.wait_exit(pod["terminationGracePeriodSeconds"]) == 0
        graceful = float(option_value(args, "--timeout-graceful-shutdown"))
        assert time.monotonic() - start < graceful
        # JSON lines only (--log-format=json), for the cluster's collector
        lines = server_lines(server.log())
        assert lines and all(json.loads(line)["level"] for line in lines), lines[:5]
    finally:
        server.kill_group()

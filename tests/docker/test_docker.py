"""The Docker image built by the top-level Dockerfile, checked as a user runs it.

Builds local bases from Debian packages (tests/docker/build-bases.sh), builds the
Dockerfile once per session against them (BuildKit cache mounts keep rebuilds
fast) and checks the image: it serves GET / read-only as 65532 with every
capability dropped, `python -c` works, `docker stop` is graceful, the health
check turns healthy, orphaned processes are reaped, no shell or package
manager is inside, /app.bin cannot be changed by the user it runs as, and the
same build runs on a Debian 12 base.

Run: build/tools-venv/bin/pytest tests/docker
Environment: DOCKER (client; default /usr/bin/docker, Debian's 20.10 client,
which does BuildKit builds without buildx), PIP_INDEX_URL (passed to the build).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
BUILDER = "appbin/builder-debian12"
BASE13 = "appbin/distroless-base-nossl-debian13:nonroot"  # the Dockerfile's default kind
BASE12 = "appbin/distroless-base-debian12:nonroot"
IMAGE13 = "appbin-test/app:debian13"
IMAGE12 = "appbin-test/app:debian12"
IMAGE_REQS = "appbin-test/app:reqs"
REQS_PROJECT = "tests/docker/fixtures/reqs_app"  # requirements.txt, no poetry.lock
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
STOP_TIMEOUT = 10  # docker stop's grace period (seconds)


def _docker_client() -> str:
    if os.environ.get("DOCKER"):
        return os.environ["DOCKER"]
    # Debian's docker.io client (20.10) builds with BuildKit on its own; a newer
    # client (e.g. 28.x in /usr/local/bin) refuses without the buildx plugin.
    if Path("/usr/bin/docker").exists():
        return "/usr/bin/docker"
    return shutil.which("docker") or "docker"


DOCKER = _docker_client()


def _docker_ok() -> str | None:
    try:
        r = subprocess.run([DOCKER, "info"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"docker info: {e}"
    if r.returncode != 0:
        return f"docker info failed: {(r.stderr or r.stdout).strip()[:200]}"
    return None


_why_not = _docker_ok()
pytestmark = pytest.mark.skipif(_why_not is not None, reason=f"no usable Docker daemon ({_why_not})")


def docker(*args: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


# The Dockerfile's PYTHON_VERSION to build (APPBIN_DOCKER_PYTHON_VERSION; unset:
# its default). tests/all.sh passes 3.11 unless told otherwise (see README).
PYTHON_VERSION = os.environ.get("APPBIN_DOCKER_PYTHON_VERSION", "")
# what sys.version_info[:2] of the image's app.bin prints
VERSION_INFO = str(tuple(int(p) for p in (PYTHON_VERSION or "3.13").split(".")))


def build_image(tag: str, final_image: str, *extra: str) -> float:
    """docker build of the top-level Dockerfile; returns seconds taken."""
    args = ["build", "--progress=plain", "-t", tag,
            "--build-arg", f"BUILDER_IMAGE={BUILDER}",
            "--build-arg", f"FINAL_IMAGE={final_image}", *extra]
    if PYTHON_VERSION:  # else the Dockerfile's default (3.13)
        args += ["--build-arg", f"PYTHON_VERSION={PYTHON_VERSION}"]
    if os.environ.get("PIP_INDEX_URL"):
        args += ["--build-arg", f"PIP_INDEX_URL={os.environ['PIP_INDEX_URL']}"]
    if CA_BUNDLE.is_file():  # trust what the host trusts (TLS-inspecting proxies)
        args += ["--secret", f"id=ca-certificates,src={CA_BUNDLE}"]
    t0 = time.monotonic()
    # A first 3.13/3.14 build compiles CPython (cpython-patches/build-cpython.sh)
    # into a BuildKit cache mount: tens of minutes on two cores, once.
    r = subprocess.run([DOCKER, *args, str(TOP)], capture_output=True, text=True, timeout=3600,
                       env={**os.environ, "DOCKER_BUILDKIT": "1"})
    if r.returncode != 0:
        pytest.fail(f"docker build {tag} failed:\n{(r.stdout + r.stderr)[-6000:]}")
    return time.monotonic() - t0


@pytest.fixture(scope="module")
def bases() -> None:
    r = subprocess.run(
        ["bash", str(TOP / "tests/docker/build-bases.sh"), "builder-debian12",
         "distroless-base-nossl-debian13", "distroless-base-debian12"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "DOCKER": DOCKER})
    if r.returncode != 0:
        pytest.fail(f"build-bases.sh failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")


@pytest.fixture(scope="module")
def image(bases) -> str:
    build_image(IMAGE13, BASE13)
    return IMAGE13


@pytest.fixture(scope="module")
def image12(image) -> str:  # after the first build: only the last stages differ
    # libssl, libcrypto and zlib from the base rather than bundled
    build_image(IMAGE12, BASE12, "--build-arg", "PACK_OPTIONS=")
    return IMAGE12


@pytest.fixture(scope="module")
def image_reqs(image) -> str:  # shares the host stages with the first build
    build_image(IMAGE_REQS, BASE13, "--build-arg", f"PROJECT_DIR={REQS_PROJECT}",
                "--build-arg", "APP=reqs_app:app")
    return IMAGE_REQS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_for_200(url: str, cid: str, limit: float = 30.0) -> bytes:
    deadline = time.monotonic() + limit
    last: object = None
    while time.monotonic() < deadline:
        try:
            status, body = http_get(url)
            if status == 200:
                return body
            last = status
        except OSError as e:  # refused / reset while starting
            last = e
        state = docker("inspect", "-f", "{{.State.Running}}", cid).stdout.strip()
        if state != "true":
            break
        time.sleep(0.1)
    logs = docker("logs", "--tail", "50", cid, check=False)
    raise AssertionError(f"{url}: no 200 within {limit}s (last: {last!r})\n{logs.stdout}{logs.stderr}")


class Container:
    """A detached, hardened container publishing the app's port on loopback."""

    def __init__(self, image: str, *extra: str) -> None:
        self.port = free_port()
        self.name = f"appbin-test-{uuid.uuid4().hex[:10]}"
        self.cid = docker(
            "run", "-d", "--name", self.name, "--read-only", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges", "--user", "65532:65532",
            "-p", f"127.0.0.1:{self.port}:8000", *extra, image).stdout.strip()
        self.url = f"http://127.0.0.1:{self.port}"

    def inspect(self) -> dict:
        return json.loads(docker("inspect", self.cid).stdout)[0]

    def remove(self) -> None:
        docker("rm", "-f", "-v", self.cid, check=False)


@pytest.fixture(scope="module")
def server(image):
    c = Container(image, "--health-interval", "1s", "--health-start-period", "30s",
                  "--health-timeout", "5s", "--health-retries", "3")
    try:
        wait_for_200(c.url + "/", c.cid)
        yield c
    finally:
        c.remove()


# --- the image as configured ------------------------------------------------------

def test_image_config(image):
    cfg = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]
    assert cfg["Entrypoint"] == ["/app.bin"]
    assert cfg["User"] == "65532:65532"
    assert "8000/tcp" in cfg["ExposedPorts"]
    assert cfg["Healthcheck"]["Test"] == ["CMD", "/app.bin", "healthcheck"]  # exec form


def _listing(image: str) -> dict[str, str]:
    """path -> `tar tv` line of the image's exported filesystem."""
    cid = docker("create", image).stdout.strip()
    try:
        exp = subprocess.run(f"{DOCKER} export {cid} | tar -tv", shell=True, capture_output=True,
                             text=True, timeout=120, check=True).stdout
    finally:
        docker("rm", "-v", cid, check=False)
    out = {}
    for line in exp.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6:
            out[parts[5].split(" -> ")[0].rstrip("/")] = line
    return out


def test_no_shell_no_package_manager(image):
    files = _listing(image)
    for f in ("bin/sh", "usr/bin/sh", "bin/bash", "usr/bin/bash", "bin/dash", "usr/bin/dash",
              "usr/bin/apt", "usr/bin/apt-get", "usr/bin/dpkg", "bin/dpkg", "usr/bin/python3",
              "usr/bin/python3.11"):
        assert f not in files, f"{f} in the final image"
    assert not any(p.startswith("usr/lib/python3") for p in files), "a system Python in the image"
    r = docker("run", "--rm", "--entrypoint", "/bin/sh", image, "-c", "true", check=False)
    assert r.returncode != 0


def test_app_bin_owned_by_root_group_nonroot(image):
    line = _listing(image)["app.bin"]
    mode, owner = line.split()[:2]
    assert mode == "-r-xr-x---", line
    assert owner in ("root/nonroot", "0/65532"), line


def test_app_bin_not_writable_by_65532(image):
    r = docker("run", "--rm", "--user", "65532", "--entrypoint", "/app.bin", image,
               "python", "-c", "import os; print(os.access('/app.bin', os.W_OK))")
    assert r.stdout.strip() == "False"


def test_python_mode(image):
    r = docker("run", "--rm", "--read-only", "--cap-drop", "ALL", image,
               "python", "-c", "print(1+1)")
    assert r.stdout.strip() == "2", r.stderr


_NATIVE_CHECK = """
import ssl, zlib, sqlite3, lzma, bz2, ctypes, hashlib
ctx = ssl.create_default_context()
sqlite3.connect(":memory:").execute("select 1")
maps = open("/proc/self/maps").read().splitlines()
libssl = sorted({line.split()[-1] for line in maps if "libssl" in line})
print(ssl.OPENSSL_VERSION, len(ctx.get_ca_certs()) > 0, zlib.crc32(b"x"), libssl)
"""


def test_native_modules_on_the_glibc_only_base(image):
    """ssl (with the image's CA bundle), zlib, sqlite3, lzma, bz2 and ctypes work on
    a base that has nothing but glibc: app.bin brings the libraries itself."""
    r = docker("run", "--rm", "--read-only", "--cap-drop", "ALL", image, "python", "-c",
               _NATIVE_CHECK)
    assert r.stdout.startswith("OpenSSL 3.") and " True 2363233923 " in r.stdout, \
        r.stdout + r.stderr
    assert "/usr/lib/x86_64-linux-gnu/libssl.so.3" not in r.stdout  # not the base's


_ARCHIVE_CHECK = """
import ctypes, json, os, fastapi, importlib.metadata as md
d = os.path.dirname(fastapi.__file__)
libc = ctypes.CDLL(None)
try:
    open(d + "/new.txt", "w")
    refused = None
except OSError as exc:
    refused = exc.errno
print(json.dumps([os.getuid(), d, "routing.py" in os.listdir(d), os.path.isdir(d),
                  "FastAPI" in open(d + "/applications.py").read(),
                  libc.access((d + "/routing.py").encode(), os.R_OK), refused,
                  md.version("fastapi") == fastapi.__version__]))
"""


def test_archive_files_by_path_read_only_as_65532(image):
    """The archive read as a read-only directory tree (host/archfs*.c) on the
    base's glibc (2.41), read-only as 65532: Python and libc calls by path,
    importlib.metadata, EROFS for a write."""
    r = docker("run", "--rm", "--read-only", "--cap-drop", "ALL", "--user", "65532:65532",
               image, "python", "-c", _ARCHIVE_CHECK)
    assert json.loads(r.stdout) == [65532, "/app.bin/site-packages/fastapi", True, True, True, 0,
                                    30, True], r.stdout + r.stderr


NO_MEMFD_PROFILE = TOP / "tests/docker/fixtures/seccomp/no-memfd.json"

# Real packages reading their own files by path from the archive: certifi's
# CA bundle, opened from C by OpenSSL (load_verify_locations), and babel's
# locale data (pickles babel opens by path).
_OWN_FILES_CHECK = """
import datetime, json, os, ssl, sys, certifi, babel.dates
from babel import Locale
ctx = ssl.create_default_context(cafile=certifi.where())
with open(certifi.where(), "rb") as f:
    link = os.readlink("/proc/self/fd/%d" % f.fileno())
print(json.dumps([os.getuid(), certifi.where(), len(ctx.get_ca_certs()) > 100,
                  babel.dates.format_date(datetime.date(2024, 1, 2), format="long", locale="fr_FR"),
                  Locale("de").territories["FR"], link.split("/")[1] if link[0] == "/" else link]))
"""


def _own_files(image: str, *extra: str) -> subprocess.CompletedProcess:
    return docker("run", "--rm", "--read-only", "--cap-drop", "ALL", "--user", "65532:65532",
                  *extra, image, "python", "-c", _OWN_FILES_CHECK, check=False)


def test_packages_read_their_own_files_read_only_as_65532(image_reqs):
    """certifi's CA bundle (loaded by OpenSSL from C) and babel's locale data
    are read by path from the archive, read-only as 65532: memfd files."""
    r = _own_files(image_reqs)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout) == [65532, "/app.bin/site-packages/certifi/cacert.pem", True,
                                    "2 janvier 2024", "Frankreich", "memfd:cacert.pem (deleted)"], \
        r.stdout + r.stderr


def test_packages_read_their_own_files_without_memfd(image_reqs):
    """The same under a seccomp profile refusing memfd_create (ENOSYS), with
    a tmpfs on /tmp that allows code (Docker's tmpfs mounts are noexec by
    default): extension modules and the packages' files come from a private
    directory there."""
    r = _own_files(image_reqs, "--tmpfs", "/tmp:exec", "--security-opt",
                   f"seccomp={NO_MEMFD_PROFILE}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout) == [65532, "/app.bin/site-packages/certifi/cacert.pem", True,
                                    "2 janvier 2024", "Frankreich", "tmp"], r.stdout + r.stderr


_NOEXEC_CHECK = """
import os, certifi
with open(certifi.where(), "rb") as f:
    print(os.readlink("/proc/self/fd/%d" % f.fileno()).split("/appbin-")[0], len(f.read()) > 100000)
print(len(os.listdir(os.path.dirname(certifi.where()))) > 3)
try:
    import ssl
    print("ssl loaded")
except ImportError as exc:
    print(exc)
"""


def test_no_memfd_and_only_a_noexec_directory(image_reqs):
    """No memfd, and the only writable directory is Docker's /dev/shm, which
    is noexec: a package's files still open from it (pure Python only: no
    extension module can load), and an extension module says why it cannot
    load and what to do."""
    r = docker("run", "--rm", "--read-only", "--cap-drop", "ALL", "--user", "65532:65532",
               "--security-opt", f"seccomp={NO_MEMFD_PROFILE}", image_reqs, "python", "-c",
               _NOEXEC_CHECK, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[:2] == ["/dev/shm True", "True"], r.stdout + r.stderr
    assert lines[2].startswith("appbin: cannot load the native code of "), r.stdout
    assert lines[2].endswith("memfd_create failed: Function not implemented (ENOSYS), and the "
                             "only writable temporary directory, /dev/shm/" + lines[2].split(
                                 "/dev/shm/")[1].split(",")[0] + ", is on a file system mounted "
                             "noexec, where code cannot be mapped; set TMPDIR to a writable "
                             "directory mounted exec, or mount one on /tmp (docker run --tmpfs "
                             "/tmp:exec)"), r.stdout


def test_no_memfd_and_no_writable_directory_is_one_clear_line(image_reqs):
    """No memfd and no writable directory at all (read-only root, --ipc none:
    no /dev/shm): opening a package's file fails with ENOSYS and one line
    naming it and why, not a crash."""
    code = ("import certifi, errno\n"
            "try:\n    open(certifi.where())\n    print('opened')\n"
            "except OSError as exc:\n    print(errno.errorcode[exc.errno])\n")
    r = docker("run", "--rm", "--read-only", "--cap-drop", "ALL", "--user", "65532:65532",
               "--ipc", "none", "--security-opt", f"seccomp={NO_MEMFD_PROFILE}", image_reqs,
               "python", "-c", code, check=False)
    assert (r.returncode, r.stdout) == (0, "ENOSYS\n"), r.stdout + r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("app.bin: error: cannot open /app.bin/site-packages/certifi/"
                               "cacert.pem: memfd_create failed: Function not implemented "
                               "(ENOSYS), and no writable temporary directory was found (/tmp: "), \
        r.stderr
    assert lines[0].endswith("set TMPDIR to a writable directory or mount a tmpfs on /tmp"), r.stderr


# --- the server --------------------------------------------------------------------

def test_serves_hello_read_only_as_65532(server):
    status, body = http_get(server.url + "/")
    assert status == 200
    assert json.loads(body) == {"message": "hello"}
    info = server.inspect()
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert info["HostConfig"]["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in info["HostConfig"]["SecurityOpt"]
    # the serving process itself (not only the image config) runs as 65532
    top = docker("top", server.cid, "-o", "pid,uid,gid,args").stdout.splitlines()[1:]
    assert top and all(line.split()[1:3] == ["65532", "65532"] for line in top), top


def test_health_endpoint(server):
    status, body = http_get(server.url + "/health")
    assert status == 200
    assert json.loads(body) == {"status": "ok"}


def test_healthcheck_turns_healthy(server):
    deadline = time.monotonic() + 30
    status = None
    while time.monotonic() < deadline:
        health = server.inspect()["State"].get("Health") or {}
        status = health.get("Status")
        if status == "healthy":
            break
        time.sleep(0.5)
    assert status == "healthy", json.dumps(server.inspect()["State"].get("Health"), indent=1)[-2000:]


def test_serves_https_and_turns_healthy(image, tmp_path):
    """HTTPS on the glibc-only base (no libssl in the image: the host carries
    its own), the certificate mounted read-only, set by the APPBIN_SSL_*
    variables that the HEALTHCHECK's app.bin healthcheck reads too."""
    tls = tmp_path / "tls"
    tls.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(tls / "key.pem"), "-out", str(tls / "cert.pem"), "-days", "2", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    for f in tls.iterdir():
        f.chmod(0o644)  # user 65532 reads them
    tls.chmod(0o755)
    c = Container(image, "-v", f"{tls}:/tls:ro", "-e", "APPBIN_SSL_CERTFILE=/tls/cert.pem",
                  "-e", "APPBIN_SSL_KEYFILE=/tls/key.pem", "--health-interval", "1s",
                  "--health-start-period", "30s", "--health-timeout", "5s")
    try:
        ctx = ssl.create_default_context(cafile=str(tls / "cert.pem"))
        url = f"https://127.0.0.1:{c.port}/"
        deadline = time.monotonic() + 30
        body = None
        while body is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
                    body = resp.read()
            except OSError:
                time.sleep(0.2)
        assert body is not None, docker("logs", c.cid, check=False).stderr[-2000:]
        assert json.loads(body) == {"message": "hello"}
        while c.inspect()["State"].get("Health", {}).get("Status") != "healthy":
            assert time.monotonic() < deadline, json.dumps(c.inspect()["State"].get("Health"))
            time.sleep(0.5)
    finally:
        c.remove()


def test_exec_python_in_running_container(server):
    # the debugging door of an image without a shell
    r = docker("exec", server.cid, "/app.bin", "python", "-c",
               "import os; print(os.getuid(), os.getgid())")
    assert r.stdout.split() == ["65532", "65532"]


ORPHAN_MAKER = """
import os, time
if os.fork() == 0:
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    time.sleep(2)
    os._exit(0)
"""


def test_orphans_are_reaped_as_pid_1(server):
    """app.bin is the container's PID 1: its single server runs under the init
    it forks (host/pid1.c), which reaps what is orphaned in the container."""
    def processes():
        lines = docker("top", server.cid, "-o", "pid,ppid,stat,args").stdout.splitlines()[1:]
        return [line.split(None, 3) for line in lines]

    app_bins = [p for p in processes() if p[3].startswith("/app.bin")]
    assert len(app_bins) == 2 and app_bins[1][1] == app_bins[0][0], app_bins  # init, server
    # exits at once; its child, adopted by PID 1, exits 2 s later (its stdio
    # elsewhere: docker exec returns when the exec'd process's output closes)
    docker("exec", server.cid, "/app.bin", "python", "-c", ORPHAN_MAKER)
    orphans = [p for p in processes() if "python -c" in p[3]]
    assert len(orphans) == 1 and orphans[0][1] == app_bins[0][0], processes()
    deadline = time.monotonic() + 10
    while any(p[0] == orphans[0][0] for p in processes()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(p[0] == orphans[0][0] for p in processes()), processes()  # not even a zombie


def test_stop_is_graceful(image):
    c = Container(image)
    try:
        wait_for_200(c.url + "/", c.cid)
        t0 = time.monotonic()
        r = docker("stop", "-t", str(STOP_TIMEOUT), c.cid, timeout=STOP_TIMEOUT + 30)
        elapsed = time.monotonic() - t0
        assert r.returncode == 0
        assert elapsed < STOP_TIMEOUT, f"docker stop took {elapsed:.1f}s: SIGTERM was not honoured"
        state = c.inspect()["State"]
        assert state["ExitCode"] == 0, state
        assert not state["OOMKilled"]
    finally:
        c.remove()


# --- the same build on Debian 12's distroless base -------------------------------

def test_runs_on_debian12_base(image12):
    r = docker("run", "--rm", "--read-only", "--cap-drop", "ALL", image12,
               "python", "-c", "import ssl, sys; print(sys.version_info[:2], ssl.OPENSSL_VERSION)")
    assert r.stdout.startswith(VERSION_INFO), r.stdout + r.stderr
    # PACK_OPTIONS= : libssl is the base's own file
    r = docker("run", "--rm", "--read-only", "--cap-drop", "ALL", image12, "python", "-c",
               _NATIVE_CHECK)
    assert " True 2363233923 " in r.stdout and "/libssl.so.3']" in r.stdout, r.stdout + r.stderr
    assert "memfd" not in r.stdout, r.stdout
    c = Container(image12)
    try:
        body = wait_for_200(c.url + "/", c.cid)
        assert json.loads(body) == {"message": "hello"}
    finally:
        c.remove()


# --- a project with requirements.txt and no poetry.lock (the pip branch) ----------

def test_requirements_project(image_reqs):
    r = docker("run", "--rm", "--read-only", "--cap-drop", "ALL", image_reqs,
               "python", "-c", "import idna, reqs_app; print(idna.__name__, reqs_app.app.__name__)")
    assert r.stdout.split() == ["idna", "app"], r.stdout + r.stderr
    c = Container(image_reqs)
    try:
        body = wait_for_200(c.url + "/idna", c.cid)
        assert json.loads(body) == {"encoded": "xn--bcher-kva.example"}
    finally:
        c.remove()

"""app.bin where there is no Python and nothing is writable.

The sandbox root holds what a distroless "base" image has for app.bin: glibc's
shared objects (libc6's /lib/x86_64-linux-gnu/*.so* and the dynamic loader) and
the libraries appbin-pack leaves to the system by default (libssl.so.3,
libcrypto.so.3, libz.so.1), and nothing else: no /usr/lib/python3.11, no /etc,
no shell. It is mounted read-only, app.bin is bound read-only at /app.bin, /tmp
is part of the read-only root, and /dev holds only /dev/null. Three setups:

  with /proc          extension modules and resources come from memfd files
  no /proc, TMPDIR    the host falls back to a private 0700 directory under a
                      writable $TMPDIR (and says so at debug level)
  no /proc, no tmp    importing an extension module fails with a clear message

bubblewrap (tests/apt-packages.txt) makes the sandbox; where it cannot create
namespaces, `unshare -rm` + bind mounts + chroot does. APPBIN_TEST_SANDBOX=
bwrap|unshare forces one of them.
"""

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from hostutil import DYN, EXT_SUFFIX, PY_STDLIB, app_bin_fixture, describe

app_bin = pytest.fixture(scope="session")(app_bin_fixture)

GLIBC_DIR = "/lib/x86_64-linux-gnu"
LOADER = "ld-linux-x86-64.so.2"
WRITABLE = "/wtmp"  # where a writable directory is bound when a test wants one


def glibc_files():
    """libc6's shared objects, from dpkg's file list (else a fixed list)."""
    try:
        listing = subprocess.run(["dpkg", "-L", "libc6"], capture_output=True, text=True,
                                 check=True).stdout.split()
        files = [p for p in listing if os.path.dirname(p) == GLIBC_DIR and ".so" in p]
    except (OSError, subprocess.CalledProcessError):
        files = [f"{GLIBC_DIR}/{n}" for n in (
            LOADER, "libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1",
            "libutil.so.1", "libresolv.so.2", "libanl.so.1", "libnss_files.so.2",
            "libnss_dns.so.2")]
    return [f for f in files if os.path.exists(f)]


# appbin-pack's default --system-lib set: present on every distroless base.
SYSTEM_LIBS = ("libssl.so.3", "libcrypto.so.3", "libz.so.1")


@pytest.fixture(scope="session")
def sandbox_root(tmp_path_factory):
    """A root directory with glibc only (see the module docstring)."""
    root = tmp_path_factory.mktemp("sandbox-root")
    libdir = root / "usr" / "lib" / "x86_64-linux-gnu"
    libdir.mkdir(parents=True)
    (root / "usr" / "lib64").mkdir()
    for path in glibc_files() + [f"{GLIBC_DIR}/{name}" for name in SYSTEM_LIBS]:
        shutil.copy2(path, libdir / os.path.basename(path), follow_symlinks=True)
    assert (libdir / LOADER).exists() and (libdir / "libc.so.6").exists()
    os.symlink("usr/lib", root / "lib")
    os.symlink("usr/lib64", root / "lib64")
    os.symlink(f"../lib/x86_64-linux-gnu/{LOADER}", root / "usr" / "lib64" / LOADER)
    for d in ("dev", "proc", "tmp", WRITABLE.lstrip("/")):
        (root / d).mkdir()
    (root / "dev" / "null").touch()
    (root / "app.bin").touch()
    return root


def _bwrap_argv(root, app, proc, writable, env, argv, share_net=False):
    cmd = ["bwrap", "--ro-bind", str(root), "/", "--ro-bind", str(app), "/app.bin",
           "--dev-bind", "/dev/null", "/dev/null", "--unshare-user-try", "--unshare-ipc",
           "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent", "--clearenv"]
    if not share_net:
        cmd.append("--unshare-net")
    if proc:
        cmd += ["--unshare-pid", "--proc", "/proc"]
    if writable:
        cmd += ["--bind", str(writable), WRITABLE]
    for key, value in env.items():
        cmd += ["--setenv", key, value]
    return cmd + ["/app.bin", *argv]


_UNSHARE_SCRIPT = r"""
set -e
root=$1 app=$2 proc=$3 writable=$4; shift 4
mount --bind "$root" "$root"
mount --bind "$app" "$root/app.bin"
mount --bind /dev/null "$root/dev/null"
if [ "$proc" = 1 ]; then mount --rbind /proc "$root/proc"; fi
if [ -n "$writable" ]; then mount --bind "$writable" "$root/wtmp"; fi
mount -o remount,bind,ro "$root"
mount -o remount,bind,ro "$root/app.bin"
exec env -i "$@"
"""


def _unshare_argv(root, app, proc, writable, env, argv, share_net=False):
    envs = [f"{k}={v}" for k, v in env.items()]
    return ["unshare", "-r", "-m", "sh", "-c", _UNSHARE_SCRIPT, "sh", str(root), str(app),
            "1" if proc else "0", str(writable or ""), *envs, _chroot(), str(root), "/app.bin",
            *argv]


def _chroot():
    return shutil.which("chroot", path=os.pathsep.join(
        [os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])) or "chroot"


_BACKENDS = {"bwrap": _bwrap_argv, "unshare": _unshare_argv}


@pytest.fixture(scope="session")
def sandbox_backend(sandbox_root, app_bin):
    """The first backend that can run `app.bin --version` in the sandbox."""
    forced = os.environ.get("APPBIN_TEST_SANDBOX")
    names = [forced] if forced else ["bwrap", "unshare"]
    reasons = []
    for name in names:
        if name not in _BACKENDS:
            pytest.fail(f"APPBIN_TEST_SANDBOX={name}: use bwrap or unshare")
        if not shutil.which(name) or (name == "unshare" and _chroot() == "chroot"):
            reasons.append(f"{name}: not installed")
            continue
        argv = _BACKENDS[name](sandbox_root, app_bin, True, None, {}, ["--version"])
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        if result.returncode == 0 and result.stdout.startswith("appbin "):
            return name
        reasons.append(f"{name}: exit status {result.returncode}: {result.stderr.strip()}")
    pytest.skip("cannot make a sandbox here: " + "; ".join(reasons))


@pytest.fixture
def sandbox(sandbox_backend, sandbox_root, app_bin):
    """sandbox(argv, proc=True, writable=None, env={}) runs /app.bin ARGV in
    the sandbox and returns the CompletedProcess."""
    def run(argv, proc=True, writable=None, env=None, timeout=120):
        cmd = _BACKENDS[sandbox_backend](sandbox_root, app_bin, proc, writable, env or {}, argv)
        return subprocess.run(cmd, capture_output=True, text=True, check=False,
                              timeout=timeout, errors="backslashreplace")
    run.argv = lambda argv, **kw: _BACKENDS[sandbox_backend](
        sandbox_root, app_bin, kw.get("proc", True), kw.get("writable"), kw.get("env") or {},
        argv, share_net=kw.get("share_net", False))
    return run


def py(sandbox, code, **kwargs):
    result = sandbox(["python", "-c", code], **kwargs)
    assert result.returncode == 0, describe(result)
    return result.stdout


ENVIRONMENT = """
import json, os, sys, tempfile
try:
    tempfile.mkstemp()
    writable_tmp = True
except OSError:
    writable_tmp = False
print(json.dumps({"executable": sys.executable, "root": sorted(os.listdir("/")),
                  "python_stdlib": os.path.exists("PY_STDLIB"),
                  "usr_bin": os.path.exists("/usr/bin"), "proc": os.path.exists("/proc/self"),
                  "root_writable": os.access("/", os.W_OK), "writable_tmp": writable_tmp}))
"""


def test_sandbox_has_no_python_and_nothing_writable(sandbox):
    info = json.loads(py(sandbox, ENVIRONMENT.replace("PY_STDLIB", PY_STDLIB)))
    assert info == {"executable": "/app.bin",
                    "root": ["app.bin", "dev", "lib", "lib64", "proc", "tmp", "usr", "wtmp"],
                    "python_stdlib": False, "usr_bin": False, "proc": True,
                    "root_writable": False, "writable_tmp": False}


IMPORTS = """
import importlib, json, os, sys
import _json, _ssl, _ctypes, _decimal, _sqlite3, _lzma, _bz2, _uuid, _asyncio, _hashlib
dyn = importlib.import_module("DYN")  # _json's file on 3.11 (built in on 3.13)
import ctypes, ssl, sqlite3, certifi, orjson, pydantic_core, importlib.resources as ir
import appbin_ns.a, appbin_ns.b, extra_mod
ctx = ssl.create_default_context(cafile=certifi.where())
with ir.as_file(ir.files("appbin_testpkg") / "data" / "hello.txt") as path:
    hello = open(path).read()
print(json.dumps({
    "strlen": ctypes.CDLL(None).strlen(b"abcd"),
    "certs": len(ctx.get_ca_certs()),
    "certifi": [certifi.where(), os.path.isfile(certifi.where())],
    "hello": [str(path), hello],
    "sqlite": sqlite3.connect(":memory:").execute("select 6 * 7").fetchone()[0],
    "orjson": orjson.dumps([1]).decode(),
    "json_file": dyn.__file__,
    "ns": [appbin_ns.a.NAME, appbin_ns.b.NAME],
}))
"""


def test_imports_and_extension_modules_from_memfd(sandbox):
    info = json.loads(py(sandbox, IMPORTS.replace('"DYN"', repr(DYN))))
    assert info["strlen"] == 4
    assert info["certs"] > 50
    # Resources are paths in the archive's read-only tree (nothing copied).
    assert info["certifi"] == ["/app.bin/site-packages/certifi/cacert.pem", True]
    assert info["hello"][0] == "/app.bin/site-packages/appbin_testpkg/data/hello.txt"
    assert info["hello"][1] == "hello from appbin_testpkg\n"
    assert info["sqlite"] == 42 and info["orjson"] == "[1]"
    assert info["json_file"].startswith(f"/app.bin/stdlib/lib-dynload/{DYN}.")
    assert info["ns"] == ["a", "b"]


def test_fastapi_in_the_sandbox(sandbox):
    out = py(sandbox, "import fastapi, pydantic, appbin_testpkg.web as w; "
                      "print(w.app.title, fastapi.__version__ == __import__('importlib.metadata')"
                      ".metadata.version('fastapi'))")
    assert out.split() == ["appbin-testpkg", "True"]


def test_no_proc_falls_back_to_a_private_directory_in_tmpdir(sandbox, tmp_path):
    writable = tmp_path / "writable"
    writable.mkdir()
    code = IMPORTS.replace('"DYN"', repr(DYN)).replace("print(json.dumps({", """
private = [os.path.join(os.environ["TMPDIR"], d) for d in os.listdir(os.environ["TMPDIR"])]
print(json.dumps({
    "private": [(p, oct(os.stat(p).st_mode & 0o7777), sorted(os.listdir(p))) for p in private],""")
    result = sandbox(["python", "-c", code], proc=False, writable=writable,
                     env={"TMPDIR": WRITABLE})
    assert result.returncode == 0, describe(result)
    info = json.loads(result.stdout)
    assert info["strlen"] == 4 and info["certs"] > 50 and info["sqlite"] == 42
    [(private, mode, files)] = info["private"]
    assert private.startswith(f"{WRITABLE}/appbin-") and mode == "0o700"
    assert any(f.endswith(f"{DYN}{EXT_SUFFIX}") for f in files), files
    assert info["certifi"] == ["/app.bin/site-packages/certifi/cacert.pem", True]
    assert info["hello"][1] == "hello from appbin_testpkg\n"  # read without /proc
    assert info["hello"] == [info["hello"][0], "hello from appbin_testpkg\n"]
    # The private directory goes when the process exits.
    assert list(writable.iterdir()) == []


def test_no_proc_fallback_is_announced_at_debug_level(sandbox, tmp_path):
    writable = tmp_path / "writable"
    writable.mkdir()
    env = {"TMPDIR": WRITABLE, "APPBIN_LOG_LEVEL": "debug"}
    result = sandbox(["python", "-c", f"import {DYN}"], proc=False, writable=writable, env=env)
    assert result.returncode == 0, describe(result)
    assert f"appbin: debug: memfd or /proc unavailable, using {WRITABLE}/appbin-" \
        in result.stderr, describe(result)
    quiet = sandbox(["python", "-c", f"import {DYN}"], proc=False, writable=writable,
                    env={"TMPDIR": WRITABLE})
    assert quiet.returncode == 0 and quiet.stderr == "", describe(quiet)


def test_no_proc_fallback_in_server_mode(sandbox, tmp_path):
    """Server mode: the debug line, then a clean exit on SIGTERM that removes
    the private directory."""
    writable = tmp_path / "writable"
    writable.mkdir()
    argv = sandbox.argv(["--app", "appbin_testpkg.asgi:app", "--host", "127.0.0.1", "--port",
                         "0"], proc=False, writable=writable,
                        env={"TMPDIR": WRITABLE, "APPBIN_LOG_LEVEL": "debug"})
    # Without a pid namespace (no /proc in the sandbox) the server is a child
    # of bwrap, or the unshare process itself: it can be signalled from here.
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("running on" in x for x in lines):
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.05)
        assert any("running on" in x for x in lines), "".join(lines)
        server = _find_app_bin(proc.pid)
        assert server, "no app.bin process under the sandbox"
        os.kill(server, signal.SIGTERM)
        proc.wait(timeout=30)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = "".join(lines)
    assert proc.returncode == 0, stderr
    assert f"appbin: debug: memfd or /proc unavailable, using {WRITABLE}/appbin-" in stderr
    assert "Application startup complete." in stderr
    assert list(writable.iterdir()) == []


def _find_app_bin(pid):
    """The pid of the app.bin process below `pid` (bwrap or unshare)."""
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            if os.readlink(f"/proc/{p}/exe").endswith("app.bin") or \
                    Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"/app.bin\0"):
                return p
            for task in os.listdir(f"/proc/{p}/task"):
                children = Path(f"/proc/{p}/task/{task}/children").read_text()
                todo += [int(c) for c in children.split()]
        except OSError:
            continue
    return None


def test_no_proc_and_no_writable_tmp(sandbox):
    code = """
import json, sys
print("pure python:", json.dumps([1]))
sys.stdout.flush()
import _ssl
"""
    result = sandbox(["python", "-c", code], proc=False)
    assert result.returncode == 1, describe(result)
    assert result.stdout == "pure python: [1]\n"
    assert ("ImportError: appbin: cannot load the native code of stdlib/lib-dynload/_ssl."
            in result.stderr), describe(result)
    assert (": /proc/self/fd is unavailable, and no writable temporary directory was found (/tmp: "
            in result.stderr), describe(result)


def test_unwritable_tmpdir_without_proc(sandbox, tmp_path):
    """TMPDIR pointing at a read-only place counts as no writable tmp."""
    result = sandbox(["python", "-c", f"import {DYN}"], proc=False, env={"TMPDIR": "/usr"})
    assert result.returncode == 1
    assert "no writable temporary directory was found" in result.stderr, describe(result)

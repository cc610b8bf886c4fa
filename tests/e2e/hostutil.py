"""Helpers of the host tests (test_host*.py): running app.bin and reading its
payload trailer. Every check runs the real executable in a subprocess."""

import hashlib
import io
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

TRAILER_SIZE = 64
MAGIC = b"APPBIN\x00\x01"

# ---- the build under test and its Python ------------------------------------------
# The CMake build whose host and packer the tests use: build/ by default,
# APPBIN_BUILD_DIR=build-asan for the sanitizer build, build/hosts/3.13 for
# the Python 3.13 host (-DAPPBIN_PYTHON_VERSIONS). Its appbin-host.info names
# the python whose libpython the host links: the tests make their venvs with
# it and take it as the reference the host imitates.
ROOT = Path(__file__).resolve().parents[2]
HOST_BUILD = Path(os.environ.get("APPBIN_BUILD_DIR") or ROOT / "build")
if not HOST_BUILD.is_absolute():
    HOST_BUILD = ROOT / HOST_BUILD


def _build_python(build):
    try:
        text = (build / "appbin-host.info").read_text(encoding="utf-8")
    except OSError:
        return "/usr/bin/python3.11"  # not configured yet: the default host's
    values = dict(line.partition("=")[::2] for line in text.splitlines())
    return values.get("python") or "/usr/bin/python3.11"


PYTHON = _build_python(HOST_BUILD)
_TARGET = subprocess.run(
    [PYTHON, "-I", "-c", "import platform, sys, sysconfig; print(platform.python_version()); "
     "print(sysconfig.get_path('stdlib')); print(sysconfig.get_path('include')); "
     "print(sysconfig.get_config_var('DESTSHARED')); print(sysconfig.get_config_var('EXT_SUFFIX')); "
     "print(' '.join(sys.builtin_module_names))"],
    capture_output=True, text=True, check=True).stdout.splitlines()
PY_VERSION = _TARGET[0]                           # X.Y.Z
PY_TAG = ".".join(PY_VERSION.split(".")[:2])      # X.Y
PY_STDLIB = _TARGET[1]                            # e.g. /usr/lib/python3.11
PY_INCLUDE = _TARGET[2]                           # e.g. /usr/include/python3.11
PY_DYNLOAD = _TARGET[3]                           # lib-dynload
EXT_SUFFIX = _TARGET[4]                           # .cpython-311-x86_64-linux-gnu.so
CPYTHON_TAG = EXT_SUFFIX.split("-")[0] + "-" + EXT_SUFFIX.split("-")[1]  # .cpython-311
PY_BUILTINS = frozenset(_TARGET[5].split())       # sys.builtin_module_names
# A stdlib extension module in lib-dynload (a file of the archive, loaded from
# memory): _json in Debian's 3.11; the 3.13/3.14 builds link _json into the
# host (cpython-patches), so _zoneinfo stands in for it there.
DYN = "_json" if "_json" not in PY_BUILTINS else "_zoneinfo"


def unshare_works(*flags):
    """Whether `unshare FLAGS... true` runs here (namespaces the tests use)."""
    try:
        return subprocess.run(["unshare", *flags, "true"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def clean_env(**extra):
    """The environment for app.bin: the caller's without PYTHON* / APPBIN_*
    variables (so that the outcome does not depend on the shell running the
    tests), with a UTF-8 locale, plus `extra` (None values are removed)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "APPBIN_")) and k not in ("LC_ALL", "LC_CTYPE")}
    env["LANG"] = "C.UTF-8"
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def run(argv, *, input=None, env=None, cwd=None, timeout=120):
    """Runs argv; returns the CompletedProcess (text, both streams captured)."""
    return subprocess.run([str(a) for a in argv], input=input, capture_output=True,
                          text=True, env=clean_env() if env is None else env, cwd=cwd,
                          timeout=timeout, check=False, errors="backslashreplace")


def python(app_bin, *args, **kwargs):
    """`app.bin python ARGS`."""
    return run([app_bin, "python", *args], **kwargs)


def python_c(app_bin, code, *args, **kwargs):
    """`app.bin python -c CODE ARGS`; asserts exit status 0 and returns stdout."""
    result = python(app_bin, "-c", code, *args, **kwargs)
    assert result.returncode == 0, describe(result)
    return result.stdout


def describe(result):
    """A readable account of a CompletedProcess for assertion messages."""
    return (f"exit status {result.returncode}\n--- stdout\n{result.stdout}"
            f"\n--- stderr\n{result.stderr}")


def read_trailer(path):
    """(archive offset, archive size, sha256 bytes) from app.bin's trailer."""
    with open(path, "rb") as f:
        f.seek(-TRAILER_SIZE, os.SEEK_END)
        tail = f.read(TRAILER_SIZE)
    assert tail[:8] == MAGIC, f"{path} has no appbin trailer"
    offset = int.from_bytes(tail[16:24], "little")
    size = int.from_bytes(tail[24:32], "little")
    return offset, size, tail[32:64]


def index_sha256(path):
    """The SHA-256 of the archive's index (central directory and end records),
    which the trailer of a format 2 payload holds."""
    offset, size, _ = read_trailer(path)
    with open(path, "rb") as f:
        f.seek(offset)
        archive = f.read(size)
    start = zipfile.ZipFile(io.BytesIO(archive)).start_dir
    return hashlib.sha256(archive[start:]).hexdigest()


def member_offsets(path, name):
    """(file offset of the member's local header, of its data, data size in
    the archive) for an archive member of app.bin."""
    offset, size, _ = read_trailer(path)
    with open(path, "rb") as f:
        f.seek(offset)
        archive = f.read(size)
    info = zipfile.ZipFile(io.BytesIO(archive)).getinfo(name)
    name_len, extra_len = struct.unpack("<HH", archive[info.header_offset + 26:
                                                       info.header_offset + 30])
    header = offset + info.header_offset
    return header, header + 30 + name_len + extra_len, info.compress_size


def index_offset(path):
    """The file offset of the archive's central directory."""
    offset, size, _ = read_trailer(path)
    with open(path, "rb") as f:
        f.seek(offset)
        archive = f.read(size)
    return offset + zipfile.ZipFile(io.BytesIO(archive)).start_dir


def copy_with(src, dst, *, patch=None, truncate_to=None, cut=None):
    """Copies app.bin to dst (mode 0755), then either xors the byte at offset
    `patch` (an int, or a (offset, xor mask) pair), truncates the copy to
    `truncate_to` bytes, or removes the byte range `cut` = (start, stop)."""
    data = bytearray(Path(src).read_bytes())
    if patch is not None:
        offset, mask = patch if isinstance(patch, tuple) else (patch, 0x01)
        data[offset] ^= mask
    if truncate_to is not None:
        del data[truncate_to:]
    if cut is not None:
        del data[cut[0]:cut[1]]
    Path(dst).write_bytes(data)
    os.chmod(dst, 0o755)
    return Path(dst)


def debian_python():
    """The python of the host under test (the reference the host imitates):
    Debian's python3.11, or the CPython 3.13/3.14 built for the host."""
    return PYTHON


def app_bin_fixture(request):
    """The app.bin under test: $APPBIN_TEST_APP_BIN when set (an app.bin of
    the test venv made elsewhere), else the `packed_app` fixture. The path is
    resolved, as the host reports it (/proc/self/exe)."""
    override = os.environ.get("APPBIN_TEST_APP_BIN")
    path = Path(override) if override else request.getfixturevalue("packed_app")
    return Path(os.path.realpath(path))

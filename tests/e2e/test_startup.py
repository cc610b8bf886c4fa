"""End-to-end tests of the start-up paths: frozen stdlib modules, stored code
used in place, and extension modules mapped from app.bin once loaded."""

import json
import os
import shutil
import subprocess

import pytest

from hostutil import (EXT_SUFFIX, PY_INCLUDE, PY_TAG, app_bin_fixture, clean_env, describe,
                      index_offset, python, python_c, read_trailer)
from server_fixtures import AppBin, children_of

app_bin = pytest.fixture(scope="session")(app_bin_fixture)


def test_frozen_stdlib_modules_come_from_the_interpreter(app_bin):
    code = """
import json, os, posixpath, runpy, stat, sys
print(json.dumps({n: [sys.modules[n].__spec__.origin, getattr(sys.modules[n], '__file__', None)]
                  for n in ('os', 'posixpath', 'stat', 'runpy', 'json')}))
"""
    info = json.loads(python_c(app_bin, code))
    stdlib = f"{app_bin}/stdlib"
    for name in ("os", "posixpath", "stat", "runpy"):
        assert info[name] == ["frozen", f"{stdlib}/{name}.py"], info
    assert info["json"] == [f"{stdlib}/json/__init__.py"] * 2


def test_frozen_modules_off_imports_them_from_the_archive(app_bin):
    code = "import os; print(type(os.__spec__.loader).__name__, os.__spec__.origin)"
    result = python(app_bin, "-X", "frozen_modules=off", "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"AppbinImporter {app_bin}/stdlib/os.py\n"


def test_extension_modules_are_mapped_from_app_bin(app_bin):
    """Once loaded, an extension module's code pages come from app.bin (the
    stored member), not from its in-memory copy, whose pages are freed."""
    code = """
import json, _decimal, pydantic_core
assert str(_decimal.Decimal('1.1') + 1) == '2.1'
validator = pydantic_core.SchemaValidator(pydantic_core.core_schema.int_schema())
assert validator.validate_python('7') == 7
maps = [line.split() for line in open('/proc/self/maps')]
named = [m for m in maps if len(m) > 5]
print(json.dumps({
    "executable_memfds": sorted({m[5] for m in named if m[1] == 'r-xp' and 'memfd' in m[5]}),
    "executable_from_app_bin": len([m for m in named if m[1] == 'r-xp' and m[5] == sys_exe]),
    "memfd_perms": sorted({m[1] for m in named if 'memfd' in m[5]}),
}))
""".replace("sys_exe", repr(str(app_bin)))
    info = json.loads(python_c(app_bin, code))
    assert info["executable_memfds"] == [], info
    # The host's own text, and the code of every extension module loaded.
    assert info["executable_from_app_bin"] > 3, info
    # What stays on a memfd is data the loader maps writable (and the RELRO
    # page it made read-only after writing it), never code.
    assert set(info["memfd_perms"]) <= {"rw-p", "r--p"}, info


def test_extension_modules_of_a_compressed_pack_stay_on_their_copy(tmp_path, run_appbin_pack,
                                                                   appbin_host, test_venv):
    """--compress-code: nothing to map from app.bin, the memfd copy stays."""
    output = tmp_path / "small.bin"
    result = run_appbin_pack("--venv", test_venv, "--app", "appbin_testpkg.web:app", "--host",
                             appbin_host, "-o", output, "--quiet", "--compress-code")
    assert result.returncode == 0, result.stderr
    out = python_c(output, "import _decimal; print(any('memfd:_decimal' in line and 'r-xp' in "
                           "line for line in open('/proc/self/maps')))")
    assert out == "True\n"
    output.unlink()


# ---- what stays resident of the payload ---------------------------------------

def _payload_rss_kb(pid, app_bin):
    """Rss (kB) of the process's mapping of the whole of app.bin (the payload
    mapping: the host's own segments are smaller mappings of the same file)."""
    size = os.path.getsize(app_bin)
    rss, mapping = None, None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if fields and not fields[0].endswith(":") and "-" in fields[0]:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                mapping = (end - start >= size and len(fields) > 5
                           and fields[5] == str(app_bin))
            elif mapping and fields[0] == "Rss:":
                rss = int(fields[1])
                mapping = False
    assert rss is not None, f"no mapping of {app_bin} in process {pid}"
    return rss


_RESIDENT = """
import json, os, sys, _appbin
exe = _appbin.archive_path
size = os.path.getsize(exe)
def payload_rss():
    rss, mapping = None, False
    for line in open('/proc/self/smaps'):
        fields = line.split()
        if fields and not fields[0].endswith(':') and '-' in fields[0]:
            start, end = (int(x, 16) for x in fields[0].split('-'))
            mapping = end - start >= size and len(fields) > 5 and fields[5] == exe
        elif mapping and fields[0] == 'Rss:':
            return int(fields[1])
before = payload_rss()
IMPORTS
_appbin.verify_wait()  # every member checked: by the prefetch thread, or here
read = 0
for m in list(sys.modules.values()):
    f = getattr(m, '__file__', None) or ''
    if f.startswith(exe + '/'):
        member = f[len(exe) + 1:]
        member = member[:-3] + '.pyc' if member.endswith('.py') else member
        try:
            read += os.stat(exe + '/' + member).st_size
        except OSError:
            pass
print(json.dumps({"before": before, "after": payload_rss(), "read_kb": read // 1024}))
"""


def test_verifying_every_member_leaves_none_resident(app_bin):
    """Checking the whole archive (tens of MB) hashes it through the mapping:
    the pages it went through are dropped as it goes, so the process keeps
    no more of the payload resident than before the check (baseline: the
    same process before it, index and manifest read)."""
    info = json.loads(python_c(app_bin, _RESIDENT.replace("IMPORTS", "")))
    archive_kb = read_trailer(app_bin)[1] // 1024
    assert info["after"] <= info["before"] + 64, info  # a fault-around block of slack
    assert info["after"] < archive_kb // 10, (info, archive_kb)


def test_prefetched_members_are_not_kept_resident(app_bin):
    """`python -c "import fastapi"` has the prefetch thread check the
    start-up code ahead of its imports: what stays resident of the payload is at
    most what the program itself read (the code of the modules it imported),
    not the archive (before: every checked page stayed)."""
    info = json.loads(python_c(app_bin, _RESIDENT.replace("IMPORTS", "import fastapi, pydantic")))
    archive_kb = read_trailer(app_bin)[1] // 1024
    assert info["read_kb"] > 1024, info
    assert info["after"] <= info["read_kb"], (info, archive_kb)


_PREFETCH = """
import _appbin, json, time
import fastapi, pydantic
deadline = time.monotonic() + 30
last = -1
while time.monotonic() < deadline:  # until the prefetch thread is through
    info = _appbin.archive_info()
    if info["checked"] == last:
        break
    last = info["checked"]
    time.sleep(0.2)
print(json.dumps(info))
"""


def test_prefetch_checks_the_start_up_code_and_no_more(app_bin):
    """In python mode the prefetch thread checks the stored start-up code,
    laid out first, ahead of the program's imports, and stops at the first
    compressed member nobody read: the other members are hashed by their
    readers, if any (it used to hash the whole archive)."""
    import zipfile

    records = sorted(zipfile.ZipFile(app_bin).infolist(), key=lambda i: i.header_offset)
    run = 0  # the stored members laid out first (and the manifest among them)
    for info in records:
        if info.compress_type != zipfile.ZIP_STORED and info.filename != "appbin/manifest":
            break
        run += 1
    assert 200 < run < len(records) - 200, run
    info = json.loads(python_c(app_bin, _PREFETCH))
    assert info["members"] == len(records) and not info["all_checked"], info
    # the run, plus the few compressed members the imports read themselves
    assert run <= info["checked"] < run + 100, (info, run)


def test_supervisor_keeps_no_checked_page_resident(app_bin, tmp_path):
    """Under --workers the supervisor checks every member before it forks:
    then it drops the pages it hashed, so that neither it nor the workers it
    forks start with the archive resident. Bound: the index, which every
    start reads (before: the whole archive)."""
    index_kb = (os.path.getsize(app_bin) - index_offset(app_bin)) // 1024
    server = AppBin(app_bin, ["--workers", "2", "--port", "0"], tmp_path / "server.log")
    try:
        server.wait_ready(60)
        rss = _payload_rss_kb(server.pid, app_bin)
        workers = children_of(server.pid)
        assert workers, server.log()
        worker_rss = [_payload_rss_kb(pid, app_bin) for pid in workers]
    finally:
        server.stop()
    assert rss <= index_kb + 64, (rss, index_kb, worker_rss)


# ---- shared objects copied ahead of the importer (host/nativeprep.h) -----------

def _manifest(app_bin):
    return json.loads(python_c(app_bin, "import json, _appbin; print(json.dumps(_appbin.manifest()))"))


def _startup_native(app_bin):
    return _manifest(app_bin)["startup.native"].split()


def test_the_training_run_lists_the_shared_objects_start_up_loads(app_bin):
    """appbin-pack's training run records the shared objects a server's
    start-up loads, in load order, as the manifest's startup.native: what
    `import APP` loads here is on the list, once each, and every library an
    extension module needs (its preload entry) is ahead of it."""
    manifest = _manifest(app_bin)
    listed = manifest["startup.native"].split()
    code = "import _appbin, appbin_testpkg.web; print(' '.join(_appbin.native_copies()))"
    loaded = python_c(app_bin, code).split()
    core = next(m for m in loaded if "/_pydantic_core." in m)
    assert core.startswith("site-packages/pydantic_core/"), loaded
    assert any(m.startswith("stdlib/lib-dynload/") for m in loaded), loaded
    assert set(loaded) <= set(listed), (loaded, listed)
    assert len(set(listed)) == len(listed), listed
    needs = {m: manifest[f"preload.{m}"].split() for m in listed if f"preload.{m}" in manifest}
    assert needs, manifest  # the test venv's _bz2, _lzma and _uuid bundle their libraries
    for module, libraries in needs.items():
        assert all(listed.index(lib) < listed.index(module) for lib in libraries), (module, listed)


# `import _contextvars` starts the thread; the program waits until it has copied
# what it will (the list fits in NATIVEPREP_AHEAD), then imports.
_AHEAD = """
import os, time, _appbin
import _contextvars
deadline = time.monotonic() + 60
while _appbin.native_prep_info()["made"] < EXPECT and time.monotonic() < deadline:
    time.sleep(0.005)
before = _appbin.native_prep_info()
IMPORTS
after = _appbin.native_prep_info()
while WAIT and _appbin.native_prep_info()["running"] and time.monotonic() < deadline:
    time.sleep(0.05)
def target(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except FileNotFoundError:  # listdir's own
        return ""
fds = [target(fd) for fd in os.listdir("/proc/self/fd")]
end = _appbin.native_prep_info()
import json
print(json.dumps({"before": before, "after": after, "end": end,
                  "loaded": _appbin.native_copies(),
                  "memfds": sorted(f for f in fds if f.startswith("/memfd:"))}))
"""


def _ahead(app_bin, expect, imports, wait):
    code = (_AHEAD.replace("EXPECT", str(expect)).replace("IMPORTS", imports)
            .replace("WAIT", "True" if wait else "False"))
    return json.loads(python_c(app_bin, code, timeout=120))


def test_start_up_shared_objects_are_copied_ahead_and_used(app_bin):
    """From the first extension module the program loads, a second thread
    copies the listed shared objects in order; the importer then finds them
    made and uses them (one copy per member: each is used, none made twice),
    and pydantic_core still works."""
    listed = _startup_native(app_bin)
    # All but _contextvars: the importer's own, which the thread finds made.
    assert [m for m in listed if "/_contextvars." in m], listed
    imports = ("import pydantic_core, appbin_testpkg.web\n"
               "assert pydantic_core.SchemaValidator(pydantic_core.core_schema.int_schema())"
               ".validate_python('7') == 7")
    info = _ahead(app_bin, len(listed) - 1, imports, wait=False)
    before, after = info["before"], info["after"]
    assert before["listed"] == len(listed), info
    assert before["made"] == len(listed) - 1 and before["used"] == 0, info
    assert before["running"] and before["discarded"] == 0, info
    loaded_ahead = [m for m in info["loaded"] if m in listed and "/_contextvars." not in m]
    assert after["used"] == len(loaded_ahead) > 3, info
    assert after["made"] == before["made"] and after["discarded"] == 0, info
    # One in-memory file per shared object the process loaded.
    names = [f.split(" ")[0] for f in info["memfds"]]
    assert len([n for n in names if "_pydantic_core" in n]) == 1, info


def test_copies_nobody_uses_are_freed(app_bin):
    """A program that loads an extension module but not the app's: the copies
    made ahead are freed once none has been used for NATIVEPREP_IDLE_MS (1 s),
    and the thread ends; their memory files are gone."""
    listed = _startup_native(app_bin)
    info = _ahead(app_bin, len(listed) - 1, "", wait=True)
    end = info["end"]
    assert info["before"]["made"] == len(listed) - 1, info
    assert end["discarded"] == end["made"] == info["before"]["made"], info
    assert end["used"] == 0 and not end["running"], info
    assert not any("_pydantic_core" in f for f in info["memfds"]), info
    # What the program did load stays.
    assert any("_contextvars" in f for f in info["memfds"]), info


def test_nothing_is_copied_ahead_of_a_compressed_pack(tmp_path, run_appbin_pack, appbin_host,
                                                      test_venv):
    """--compress-code: copying a compressed member ahead would hold the
    archive's decompression context, which the importer's reads need, for
    milliseconds; the thread leaves them to the importer."""
    output = tmp_path / "small.bin"
    result = run_appbin_pack("--venv", test_venv, "--app", "appbin_testpkg.web:app", "--host",
                             appbin_host, "-o", output, "--quiet", "--compress-code")
    assert result.returncode == 0, result.stderr
    code = ("import json, _appbin, _json, appbin_testpkg.web; "
            "print(json.dumps(_appbin.native_prep_info()))")
    info = json.loads(python_c(output, code))
    assert info["listed"] > 3 and info["made"] == 0, info
    output.unlink()


def test_a_damaged_shared_object_is_reported_by_its_reader_only(tmp_path, app_bin):
    """The thread copies ahead of any reader: damage it finds is left to the
    reader, which reports it naming the member (python mode: only what the
    program reads must be intact). A program that never loads the damaged
    member runs; one that does is refused, its message naming the member."""
    import shutil
    import struct
    import zipfile

    listed = _startup_native(app_bin)
    core = next(m for m in listed if "/_pydantic_core." in m)
    damaged = tmp_path / "damaged.bin"
    shutil.copyfile(app_bin, damaged)
    damaged.chmod(0o755)
    info = next(i for i in zipfile.ZipFile(damaged).infolist() if i.filename == core)
    assert info.compress_type == zipfile.ZIP_STORED
    with open(damaged, "r+b") as f:  # a byte in the middle of its data
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
        at = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x40]))
    # The thread reaches pydantic_core (and finds it damaged) before this
    # program ends, which never loads it.
    code = ("import time, _contextvars, _appbin\n"
            "deadline = time.monotonic() + 60\n"
            "while _appbin.native_prep_info()['running'] and time.monotonic() < deadline:\n"
            "    time.sleep(0.05)\n"
            "print('ran')")
    result = python(damaged, "-c", code, timeout=120)
    assert result.returncode == 0 and result.stdout == "ran\n", describe(result)
    assert "damaged" not in result.stderr, describe(result)
    result = python(damaged, "-c", "import _contextvars, time; time.sleep(0.5); import pydantic_core")
    assert result.returncode != 0, describe(result)
    assert f"member {core} is damaged" in result.stderr, describe(result)
    damaged.unlink()


_FORK = """
import os, time, _appbin
import _contextvars
time.sleep(DELAY)
pid = os.fork()
import pydantic_core, _decimal
assert pydantic_core.SchemaValidator(pydantic_core.core_schema.int_schema()).validate_python('7') == 7
assert str(_decimal.Decimal('1.1') + 1) == '2.1'
if pid == 0:  # exit status: how many descriptors name a pydantic_core copy
    def target(fd):
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return ""
    os._exit(sum("_pydantic_core" in target(fd) for fd in os.listdir("/proc/self/fd")))
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.parametrize("delay", [0, 0.0005, 0.002, 0.01])
def test_a_fork_while_copies_are_made_loads_them_in_both(app_bin, appbin_host, delay):
    """os.fork() while the thread copies: the child forgets a copy in
    progress and drops the copies made ahead (a memfd is the same file in both,
    and the first process to load it frees its pages under the other) and
    makes what it needs itself, with no descriptor of the parent's left
    over; the parent goes on."""
    if b"__asan_init" in appbin_host.read_bytes():
        # GCC 12's libasan does not hold its allocator's locks across fork(),
        # and a thread it starts or ends allocates (its start reads the
        # stack's bounds with pthread_getattr_np, which callocs): a child
        # forked then waits on that lock forever (seen with eu-stack: both
        # of the child's threads in the allocator's GetFromAllocator, the
        # fork made as the copying thread started). The host's threads
        # allocate nothing while they run, but their start and end are
        # libasan's. glibc's fork takes its own malloc's locks, so release
        # hosts, which run this test, are not affected.
        pytest.skip("libasan (GCC 12) can deadlock a child forked while a thread starts or ends")
    for _ in range(3):  # before the fix, 1 run in 2 crashed (SIGSEGV) in the child or the parent
        out = python_c(app_bin, _FORK.replace("DELAY", str(delay)), timeout=60)
        assert out == "1\n"


def test_the_copying_thread_takes_no_descriptor_number_a_program_counts_on(app_bin):
    """A program gets the lowest free descriptor number back (close(0), then
    open(), the daemon's way to a new stdin): the thread's files are made
    by the importing thread and moved high, so that while it copies and
    frees them, a number the program freed is still the one it gets."""
    code = """
import os, _appbin, _contextvars
wrong = rounds = 0
while _appbin.native_prep_info()["running"] and rounds < 100000:
    fd = os.open("/dev/null", os.O_RDONLY)
    os.close(fd)
    again = os.open("/dev/null", os.O_RDONLY)
    wrong += again != fd
    os.close(again)
    rounds += 1
print(wrong, rounds, _appbin.native_prep_info()["made"])
"""
    wrong, rounds, made = map(int, python_c(app_bin, code, timeout=120).split())
    assert made > 3 and rounds > 100, (wrong, rounds, made)
    assert wrong == 0, (wrong, rounds, made)



# An extension module whose init imports a module that waits: a fork lands
# after the dynamic loader has mapped the module's in-memory copy and before
# the importer frees the copy's pages (extremap.h). forkwin_total() sums a
# block of read-only data that nothing reads before the fork.
_FORKWIN_C = r"""
#include <Python.h>
#define N (64 * 1024)
static const unsigned char block[N] = {BLOCK};
long forkwin_total(void) {
  long t = 0;
  for (int i = 0; i < N; i++)
    t += block[i];
  return t;
}
static PyObject *total(PyObject *self, PyObject *unused) { return PyLong_FromLong(forkwin_total()); }
static PyMethodDef methods[] = {{"total", total, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_win", NULL, -1, methods};
PyMODINIT_FUNC PyInit__win(void) {
  PyObject *hook = PyImport_ImportModule("forkwin.hook");
  if (!hook)
    return NULL;
  Py_DECREF(hook);
  return PyModule_Create(&def);
}
"""
_FORKWIN_BLOCK = [(i * 7 + 3) % 251 + 1 for i in range(64 * 1024)]
_FORKWIN_FILES = {
    "forkwin/__init__.py": "",
    "forkwin/ctl.py": "import threading\nin_init, go = threading.Event(), threading.Event()\n",
    "forkwin/hook.py": "from forkwin import ctl\nctl.in_init.set()\nctl.go.wait(60)\n",
    "forkwin/app.py": "app = None\n",
}
_FORKWIN_RUN = """
import ctypes, os, sys, sysconfig, threading
import forkwin
from forkwin import ctl
thread = threading.Thread(target=lambda: __import__("forkwin._win"))
thread.start()
assert ctl.in_init.wait(60)
r, w = os.pipe()
pid = os.fork()
if pid == 0:  # the extension's init never ends here: load it by path
    os.read(r, 1)  # once the parent has imported it
    lib = ctypes.CDLL(os.path.join(forkwin.__path__[0], "_win" + sysconfig.get_config_var("EXT_SUFFIX")))
    lib.forkwin_total.restype = ctypes.c_long
    os._exit(0 if lib.forkwin_total() == TOTAL else 3)
ctl.go.set()
thread.join()
os.write(w, b"x")
_, status = os.waitpid(pid, 0)
print(sys.modules["forkwin._win"].total() == TOTAL, os.waitstatus_to_exitcode(status))
"""


def test_a_fork_while_an_extension_module_loads_leaves_its_copy_whole(tmp_path, run_appbin_pack,
                                                                        appbin_host):
    """os.fork() while another thread's import of an extension module is
    between the loader's mapping of its in-memory copy and the freeing of
    the copy's pages (here: its init imports a module that waits): the copy
    is one file in both processes, so neither frees its pages, and the
    module's data reads the same in both (before the fix, the child read
    zeros where the parent had freed them)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text(f"home = /usr/bin\nversion = {PY_TAG}.0\n")
    site = venv / "lib" / f"python{PY_TAG}" / "site-packages"
    for rel, text in _FORKWIN_FILES.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    source = tmp_path / "win.c"
    source.write_text(_FORKWIN_C.replace("BLOCK", ",".join(map(str, _FORKWIN_BLOCK))))
    subprocess.run([cc, "-shared", "-fPIC", "-O1", f"-I{PY_INCLUDE}", "-o",
                    site / "forkwin" / f"_win{EXT_SUFFIX}", source], check=True)
    out = tmp_path / "app.bin"
    result = run_appbin_pack("--venv", venv, "--app", "forkwin.app:app", "--host", appbin_host,
                             "-o", out, "--store-all-code", "--quiet")
    assert result.returncode == 0, result.stderr
    code = _FORKWIN_RUN.replace("TOTAL", str(sum(_FORKWIN_BLOCK)))
    for _ in range(2):
        result = python(out, "-c", code, env=clean_env(APPBIN_LOG_LEVEL="debug"), timeout=120)
        assert result.returncode == 0, describe(result)
        assert result.stdout == "True 0\n", describe(result)
        assert ("forkwin/_win" in result.stderr and
                "its copy kept: a process forked while it loaded shares it"
                in result.stderr), describe(result)
    # Without a fork the copy's pages are freed as usual.
    result = python(out, "-c", "import forkwin.ctl as c; c.go.set(); import forkwin._win as w; "
                    "print(w.total())", env=clean_env(APPBIN_LOG_LEVEL="debug"))
    assert result.stdout == f"{sum(_FORKWIN_BLOCK)}\n", describe(result)
    assert "forkwin/_win" in result.stderr and "bytes of copy freed" in result.stderr, \
        describe(result)

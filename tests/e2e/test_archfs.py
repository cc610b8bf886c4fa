"""End-to-end tests of the archive as a read-only directory tree
(host/archfs.c, host/archfs_libc.c): what `open`, `os.stat`, `os.listdir`...
and C code calling libc answer for paths under <app.bin>/.

Each test runs the real app.bin of the test venv (`app.bin python -c ...`)
and compares with the same files in the venv on disk: the packed tree must
read exactly like the installed one, stay read-only, and leave every path
outside it alone. C-level access goes through a small shared library built
here with cc (tests/e2e/fixtures/archfs_probe.c) and loaded from disk, so its
calls bind to the host's definitions the way a wheel's do, the pre-2.33
`__xstat` entry points included.
"""

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from hostutil import (DYN, PY_TAG, app_bin_fixture, clean_env, describe, python, python_c,
                      read_trailer, run, unshare_works)

app_bin = pytest.fixture(scope="session")(app_bin_fixture)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PKG = "site-packages/appbin_testpkg"


def site(test_venv):
    return Path(test_venv) / "lib" / f"python{PY_TAG}" / "site-packages"


def run_json(app_bin, code, **kwargs):
    """Runs code (which prints one JSON document last) in app.bin."""
    out = python_c(app_bin, textwrap.dedent(code), **kwargs)
    return json.loads(out.splitlines()[-1])


def venv_and_app_json(test_venv, app_bin, script):
    """The JSON document a script prints under the venv's python, then under
    app.bin (which must exit 0)."""
    venv = subprocess.run([Path(test_venv) / "bin" / "python", script], capture_output=True,
                          text=True, env=clean_env(), check=True)
    result = python(app_bin, script)
    assert result.returncode == 0, describe(result)
    return json.loads(venv.stdout), json.loads(result.stdout)


def sha(data):
    return hashlib.sha256(data).hexdigest()


# ---- reading ---------------------------------------------------------------------


def test_files_read_like_the_venv(app_bin, test_venv):
    """open/read/seek/pread/mmap of archive files give the installed bytes,
    for text, JSON, a CA bundle and a 5 MB shared object."""
    so = next((site(test_venv) / "pydantic_core").glob("_pydantic_core*.so")).name
    names = ["appbin_testpkg/data/hello.txt", "appbin_testpkg/data/sub/x.json",
             "certifi/cacert.pem", f"pydantic_core/{so}"]
    code = f"""
    import hashlib, json, mmap, os, sys
    out = {{}}
    for name in {names!r}:
        path = sys.executable + "/site-packages/" + name
        with open(path, "rb") as f:
            data = f.read()
            f.seek(3)
            part = f.read(7)
            f.seek(-5, os.SEEK_END)
            tail = f.read()
            m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if data else None
            mapped = hashlib.sha256(m[:]).hexdigest() if m else None
            pread = os.pread(f.fileno(), 4, 1)
        with open(path, encoding="latin-1", newline="") as f:
            text_len = len(f.read())
        out[name] = [hashlib.sha256(data).hexdigest(), part.hex(), tail.hex(), mapped,
                     pread.hex(), text_len]
    print(json.dumps(out))
    """
    got = run_json(app_bin, code)
    for name in names:
        data = (site(test_venv) / name).read_bytes()
        assert got[name] == [sha(data), data[3:10].hex(), data[-5:].hex(), sha(data),
                             data[1:5].hex(), len(data)], name


def test_stat_lstat_fstat_and_os_path(app_bin, test_venv):
    code = f"""
    import json, os, stat, sys
    root = sys.executable
    f, d = root + "/{PKG}/data/hello.txt", root + "/{PKG}/data"
    st, lst, dst = os.stat(f), os.lstat(f), os.stat(d)
    with open(f, "rb") as fh:
        fst = os.fstat(fh.fileno())
    fd = os.open(d, os.O_RDONLY)
    dfst = os.fstat(fd)
    os.close(fd)
    exe = os.stat(root)
    print(json.dumps({{
        "file": [stat.S_ISREG(st.st_mode), stat.S_IMODE(st.st_mode), st.st_size, st.st_nlink],
        "same": [tuple(st) == tuple(lst), (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                 == (fst.st_dev, fst.st_ino, fst.st_size, fst.st_mtime_ns), stat.S_ISREG(fst.st_mode)],
        "dir": [stat.S_ISDIR(dst.st_mode), stat.S_IMODE(dst.st_mode), stat.S_ISDIR(dfst.st_mode),
                dfst.st_ino == dst.st_ino],
        "dev": [st.st_dev == dst.st_dev, st.st_dev != exe.st_dev, st.st_ino != dst.st_ino],
        "times": [st.st_mtime_ns == exe.st_mtime_ns, dst.st_mtime_ns == exe.st_mtime_ns],
        "owner": [st.st_uid == exe.st_uid, st.st_gid == exe.st_gid],
        "os.path": [os.path.exists(f), os.path.isfile(f), os.path.isdir(f), os.path.isdir(d),
                    os.path.islink(f), os.path.getsize(f), os.path.getmtime(f) == exe.st_mtime,
                    os.path.exists(f + "x"), os.path.exists(root + "/"), os.path.isdir(root + "/"),
                    os.path.isfile(root), os.path.ismount(root + "/"),
                    os.path.samefile(f, root + "/{PKG}/./data/../data/hello.txt")],
        "statvfs": bool(os.statvfs(d).f_flag & os.ST_RDONLY),
    }}))
    """
    got = run_json(app_bin, code)
    size = (site(test_venv) / "appbin_testpkg/data/hello.txt").stat().st_size
    assert got["file"] == [True, 0o444, size, 1]
    assert got["same"] == [True, True, True]
    assert got["dir"] == [True, 0o555, True, True]
    assert got["dev"] == [True, True, True]
    assert got["times"] == [True, True]
    assert got["owner"] == [True, True]
    assert got["os.path"] == [True, True, False, True, False, size, True, False, True, True,
                              True, True, True]
    assert got["statvfs"] is True


def _tree(root):
    """{relative path: size} of the files under root, sources and data only
    (the packer adds .pyc beside each .py and drops __pycache__)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            if not name.endswith(".pyc"):
                path = os.path.join(dirpath, name)
                out[os.path.relpath(path, root)] = os.path.getsize(path)
    return out


@pytest.mark.parametrize("package", ["appbin_testpkg", "pydantic", "certifi", "fastapi"])
def test_os_walk_matches_the_installed_package(app_bin, test_venv, package):
    code = f"""
    import json, os, sys
    root = sys.executable + "/site-packages/{package}"
    out = {{}}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            if not name.endswith(".pyc"):
                path = os.path.join(dirpath, name)
                out[os.path.relpath(path, root)] = os.path.getsize(path)
    print(json.dumps(out))
    """
    assert run_json(app_bin, code) == _tree(site(test_venv) / package)


def test_listdir_scandir_glob_pathlib(app_bin, test_venv):
    code = f"""
    import glob, json, os, pathlib, sys
    root = sys.executable + "/{PKG}"
    with os.scandir(root + "/data") as it:
        entries = sorted((e.name, e.is_dir(), e.is_file(), e.is_symlink(),
                          e.inode() == os.stat(e.path).st_ino,
                          e.stat().st_size == os.stat(e.path).st_size) for e in it)
    fd = os.open(root + "/data", os.O_RDONLY | os.O_DIRECTORY)
    by_fd = sorted(os.listdir(fd))
    with os.scandir(fd) as it:
        scandir_fd = sorted((e.name, e.is_dir()) for e in it)
    opened = os.open("sub/x.json", os.O_RDONLY, dir_fd=fd)
    by_dir_fd = [len(os.read(opened, 100)), os.stat("hello.txt", dir_fd=fd).st_size]
    os.close(opened)
    os.close(fd)
    p = pathlib.Path(root)
    print(json.dumps({{
        "listdir": sorted(os.listdir(root + "/data")),
        "listdir_trailing_slash": sorted(os.listdir(root + "/data/")),
        "entries": entries,
        "by_fd": by_fd, "scandir_fd": scandir_fd, "by_dir_fd": by_dir_fd,
        "glob": sorted(os.path.relpath(g, root) for g in glob.glob(root + "/**/*.json", recursive=True)),
        "glob_txt": sorted(os.path.basename(g) for g in glob.glob(root + "/data/*.txt")),
        "rglob": sorted(str(q.relative_to(p)) for q in p.rglob("*") if q.suffix in (".txt", ".json")),
        "read_text": (p / "data" / "hello.txt").read_text(),
        "iterdir": sorted(q.name for q in (p / "data").iterdir()),
        "is_dir": [(p / "data").is_dir(), (p / "data" / "hello.txt").is_file(), (p / "nope").exists()],
        "resolve": str((p / "data" / ".." / "data" / "sub").resolve()),
    }}))
    """
    got = run_json(app_bin, code)
    data = FIXTURES / "appbin_testpkg" / "appbin_testpkg" / "data"
    assert got["listdir"] == got["listdir_trailing_slash"] == ["hello.txt", "sub"]
    assert got["entries"] == [["hello.txt", False, True, False, True, True],
                              ["sub", True, False, False, True, True]]
    assert got["by_fd"] == ["hello.txt", "sub"]
    assert got["scandir_fd"] == [["hello.txt", False], ["sub", True]]
    assert got["by_dir_fd"] == [len((data / "sub" / "x.json").read_bytes()[:100]),
                                (data / "hello.txt").stat().st_size]
    assert got["glob"] == ["data/sub/x.json"]
    assert got["glob_txt"] == ["hello.txt"]
    assert got["rglob"] == ["data/hello.txt", "data/sub/x.json"]
    assert got["read_text"] == (data / "hello.txt").read_text()
    assert got["iterdir"] == ["hello.txt", "sub"]
    assert got["is_dir"] == [True, True, False]
    assert got["resolve"] == f"{app_bin}/{PKG}/data/sub"


def test_access(app_bin):
    code = f"""
    import json, os, sys
    f, d = sys.executable + "/{PKG}/data/hello.txt", sys.executable + "/{PKG}/data"
    print(json.dumps([os.access(f, os.R_OK), os.access(f, os.W_OK), os.access(f, os.X_OK),
                      os.access(d, os.R_OK | os.X_OK), os.access(d, os.W_OK),
                      os.access(f + "x", os.F_OK), os.access(f, os.R_OK, effective_ids=True)]))
    """
    assert run_json(app_bin, code) == [True, False, False, True, False, False, True]


# ---- errors: read-only, missing, not a directory -----------------------------------

WRITES = {
    "open w": "open(f, 'w')",
    "open a": "open(f, 'a')",
    "open r+": "open(f, 'r+')",
    "open x (exists)": "open(f, 'x')",
    "open new": "open(d + '/new.txt', 'w')",
    "os.open O_CREAT new": "os.open(d + '/new', os.O_CREAT | os.O_WRONLY)",
    "os.open O_RDWR": "os.open(f, os.O_RDWR)",
    "os.open O_TRUNC": "os.open(f, os.O_RDONLY | os.O_TRUNC)",
    "os.open dir for writing": "os.open(d, os.O_WRONLY)",
    "mkdir new": "os.mkdir(d + '/newdir')",
    "mkdir existing": "os.mkdir(d)",
    "mkdir over a file": "os.mkdir(f)",
    "rmdir": "os.rmdir(d + '/sub')",
    "unlink": "os.unlink(f)",
    "unlink missing": "os.unlink(d + '/nope')",
    "rename inside": "os.rename(f, d + '/moved')",
    "rename out": "os.rename(f, tmp + '/moved')",
    "rename in": "os.rename(tmp_file, d + '/moved')",
    "replace": "os.replace(f, d + '/sub/x.json')",
    "link": "os.link(f, d + '/hard')",
    "symlink": "os.symlink('/etc/hostname', d + '/sym')",
    "chmod": "os.chmod(f, 0o644)",
    "chown": "os.chown(f, os.getuid(), os.getgid())",
    "truncate": "os.truncate(f, 0)",
    "utime": "os.utime(f)",
    "mkfifo": "os.mkfifo(d + '/fifo')",
    "mknod": "os.mknod(d + '/node')",
    "setxattr": "os.setxattr(f, 'user.x', b'1')",
    "removexattr": "os.removexattr(f, 'user.x')",
    "rmtree": "shutil.rmtree(d)",
    "makedirs new": "os.makedirs(d + '/a/b')",
}
WRITE_ERRORS = {"open x (exists)": "EEXIST", "mkdir existing": "EEXIST",
                "mkdir over a file": "EEXIST", "os.open dir for writing": "EISDIR",
                "rename out": "EXDEV", "rename in": "EXDEV"}


def test_every_write_fails_and_changes_nothing(app_bin, tmp_path):
    """EROFS, or what a read-only mount answers first (EEXIST, EISDIR, EXDEV
    across the mount boundary); os.makedirs(exist_ok=True) of an existing
    directory succeeds; no change is visible afterwards."""
    tmp_file = tmp_path / "outside.txt"
    tmp_file.write_text("outside")
    code = f"""
    import errno, json, os, shutil, sys
    d = sys.executable + "/{PKG}/data"
    f = d + "/hello.txt"
    tmp, tmp_file = {str(tmp_path)!r}, {str(tmp_file)!r}
    before = sorted(os.listdir(d)), open(f, "rb").read()
    out = {{}}
    for name, stmt in {WRITES!r}.items():
        try:
            exec(stmt)
            out[name] = "succeeded"
        except OSError as exc:
            out[name] = errno.errorcode.get(exc.errno, str(exc.errno))
    os.makedirs(d, exist_ok=True)
    os.makedirs(d + "/sub", exist_ok=True)
    out["unchanged"] = before == (sorted(os.listdir(d)), open(f, "rb").read())
    print(json.dumps(out))
    """
    got = run_json(app_bin, code)
    for name in WRITES:
        assert got[name] == WRITE_ERRORS.get(name, "EROFS"), (name, got[name])
    assert got["unchanged"] is True
    assert tmp_file.read_text() == "outside" and not (tmp_path / "moved").exists()


def test_c_calls_answer_as_a_read_only_mount(app_bin, test_venv, tmp_path):
    """libc's open/openat/creat/fopen, mkdir, rmdir, unlink, rename,
    renameat2, link, symlink, chmod, chown, truncate, utime(s), utimensat,
    mknod, mkfifo, xattrs, access, stat, chdir, statfs/fstatfs and
    statvfs/fstatvfs called from C (ctypes) on archive paths answer exactly
    as the kernel does for the same files on a read-only bind mount (EROFS,
    EEXIST, EISDIR, ENOTDIR, ENOENT in the kernel's order; ST_RDONLY), but
    for reading a directory's descriptor (EBADF where the kernel says
    EISDIR: the descriptor is an O_PATH stand-in, see README)."""
    if not unshare_works("-rm"):
        pytest.skip("unshare -rm (a user and mount namespace) is not permitted here")
    script = FIXTURES / "archfs_ro_calls.py"
    data = tmp_path / "data"
    shutil.copytree(site(test_venv) / "appbin_testpkg" / "data", data)
    mount = (f"mount --bind {data} {data} && mount -o remount,bind,ro {data} && "
             f"exec /usr/bin/python3.11 {script} {data}")
    kernel = subprocess.run(["unshare", "-rm", "sh", "-c", mount], capture_output=True,
                            text=True, env=clean_env(), timeout=120)
    assert kernel.returncode == 0, describe(kernel)
    want = json.loads(kernel.stdout)
    result = python(app_bin, script, f"{app_bin}/{PKG}/data")
    assert result.returncode == 0, describe(result)
    got = json.loads(result.stdout)
    assert want["statfs ST_RDONLY"] is True and want["open w"] == "EROFS"  # it was read-only
    assert want.pop("fopen dir + fgetc") == "EISDIR" and got.pop("fopen dir + fgetc") == "EBADF"
    assert {k: v for k, v in got.items() if v != want.get(k)} == {}, got
    assert got == want


def test_missing_and_not_a_directory(app_bin):
    code = f"""
    import errno, json, os, sys
    root = sys.executable
    f, d = root + "/{PKG}/data/hello.txt", root + "/{PKG}/data"
    def err(call, *args):
        try:
            call(*args)
            return "ok"
        except OSError as exc:
            return errno.errorcode[exc.errno]
    print(json.dumps({{
        "missing": [err(open, d + "/nope"), err(os.stat, d + "/nope"), err(os.listdir, d + "/nope"),
                    err(os.stat, root + "/nope/x"), err(os.stat, root + "/site-packages/nopkg/x/y")],
        "file as dir": [err(os.stat, f + "/"), err(os.stat, f + "/x"), err(open, f + "/x"),
                        err(os.listdir, f), err(os.stat, f + "/."), err(os.stat, f + "/.."),
                        err(os.open, f, os.O_RDONLY | os.O_DIRECTORY), err(os.chdir, f)],
        "dir as file": [err(open, d), err(open, d, "rb")],
        "readlink": [err(os.readlink, f), err(os.readlink, d), err(os.readlink, d + "/nope")],
        "xattr": [os.listxattr(f), err(os.getxattr, f, "user.x")],
    }}))
    """
    got = run_json(app_bin, code)
    assert got["missing"] == ["ENOENT"] * 5
    assert got["file as dir"] == ["ENOTDIR"] * 8
    assert got["dir as file"] == ["EISDIR", "EISDIR"]
    assert got["readlink"] == ["EINVAL", "EINVAL", "ENOENT"]
    assert got["xattr"] == [[], "ENODATA"]


# ---- path spellings ------------------------------------------------------------------


def test_path_spellings(app_bin, tmp_path):
    """'.', '..', '//', trailing slashes, symlinks to app.bin and to its
    directory, /proc/self/exe: all reach the same file; '..' above the
    archive root leaves it for the directory holding app.bin; a sibling whose
    name only starts like app.bin's is a real file."""
    (tmp_path / "app-link").symlink_to(app_bin)
    (tmp_path / "dir-link").symlink_to(app_bin.parent)
    sibling = Path(str(app_bin) + "2") / "site-packages"
    sibling.mkdir(parents=True, exist_ok=True)
    (sibling / "real.txt").write_text("a real file")
    beside = app_bin.parent / "beside.txt"
    beside.write_text("next to app.bin")
    code = f"""
    import json, os, sys
    root, tmp = sys.executable, {str(tmp_path)!r}
    want = open(root + "/{PKG}/data/hello.txt").read()
    spellings = [
        root + "/{PKG}/./data/hello.txt", root + "//{PKG}//data///hello.txt",
        root + "/{PKG}/data/sub/../hello.txt", root + "/stdlib/../{PKG}/data/hello.txt",
        root + "/./{PKG}/data/hello.txt", tmp + "/app-link/{PKG}/data/hello.txt",
        tmp + "/dir-link/" + os.path.basename(root) + "/{PKG}/data/hello.txt",
        "/proc/self/exe/{PKG}/data/hello.txt",
        tmp + "/app-link/../" + os.path.basename(root) + "/{PKG}/data/hello.txt",
        root + "/../" + os.path.basename(root) + "/{PKG}/data/hello.txt",
    ]
    os.chdir(tmp)  # relative spellings: the kernel's cwd, then app.bin by a symlink
    spellings += ["app-link/{PKG}/data/hello.txt", "./app-link//{PKG}/data/sub/../hello.txt",
                  "dir-link/" + os.path.basename(root) + "/{PKG}/data/hello.txt"]
    same = [open(p).read() == want for p in spellings]
    dirs = [os.path.isdir(root + "/{PKG}/data/"), os.path.isdir(root + "/{PKG}/data//"),
            os.path.isdir(root + "/{PKG}/data/."), os.path.isdir(tmp + "/app-link/site-packages"),
            os.path.isdir(tmp + "/app-link/"), sorted(os.listdir(tmp + "/app-link/{PKG}/data"))]
    print(json.dumps({{
        "same": same, "dirs": dirs,
        "escape": open(root + "/../beside.txt").read(),
        "escape2": open(root + "/stdlib/../../beside.txt").read(),
        "sibling": open(root + "2/site-packages/real.txt").read(),
        "sibling_dir": os.listdir(root + "2/site-packages"),
        "realpath": [os.path.realpath(tmp + "/app-link/{PKG}/data/../data/hello.txt"),
                     os.path.realpath(root + "/{PKG}/data/")],
    }}))
    """
    try:
        got = run_json(app_bin, code)
    finally:
        shutil.rmtree(sibling.parent)
        beside.unlink()
    assert got["same"] == [True] * 13
    assert got["dirs"] == [True, True, True, True, True, ["hello.txt", "sub"]]
    assert got["escape"] == got["escape2"] == "next to app.bin"
    assert got["sibling"] == "a real file" and got["sibling_dir"] == ["real.txt"]
    assert got["realpath"] == [f"{app_bin}/{PKG}/data/hello.txt", f"{app_bin}/{PKG}/data"]


def test_path_length_limit_is_the_kernels(app_bin, tmp_path):
    """A path of PATH_MAX (4096) bytes or more is ENAMETOOLONG inside the
    archive as outside it, however many of its components are empty; one
    byte shorter still resolves. Relative paths in an archive working
    directory too."""
    (tmp_path / "f.txt").write_text("x")
    code = f"""
    import errno, json, os, sys
    def padded(prefix, name, total):  # prefix + slashes + name, total bytes long
        return prefix + "/" * (total - len(prefix) - len(name)) + name
    def err(path):
        try:
            os.stat(path)
            with open(path, "rb"):
                return "ok"
        except OSError as exc:
            return errno.errorcode[exc.errno]
    out = {{}}
    for total in (4095, 4096, 9000):
        out[total] = [err(padded({str(tmp_path)!r}, "f.txt", total)),
                      err(padded(sys.executable + "/{PKG}", "data/hello.txt", total))]
    os.chdir(sys.executable + "/{PKG}")
    out["relative"] = [err(padded("data", "hello.txt", 4095)), err(padded("data", "hello.txt", 4096))]
    print(json.dumps(out))
    """
    assert run_json(app_bin, code) == {"4095": ["ok", "ok"], "4096": ["ENAMETOOLONG"] * 2,
                                       "9000": ["ENAMETOOLONG"] * 2,
                                       "relative": ["ok", "ENAMETOOLONG"]}


def test_chdir_into_the_archive(app_bin, tmp_path):
    """A virtual working directory: getcwd reports the archive path, relative
    paths (Python's and C's) resolve against it, '..' above the root and a
    chdir to a real directory leave it."""
    (tmp_path / "real.txt").write_text("real")
    code = f"""
    import ctypes, json, os, pathlib, sys
    root, tmp = sys.executable, {str(tmp_path)!r}
    os.chdir(root + "/{PKG}")
    out = {{"cwd": os.getcwd(), "path_cwd": str(pathlib.Path.cwd()),
           "read": open("data/hello.txt").read(), "listdir": sorted(os.listdir("data")),
           "isdir": os.path.isdir("data/sub"), "abspath": os.path.abspath("data")}}
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    out["c_fopen"] = bool(libc.fopen(b"data/hello.txt", b"r"))
    os.chdir("data/sub")
    out["sub"] = [os.getcwd(), os.listdir(".")]
    os.chdir("../..")
    out["back"] = os.getcwd()
    fd = os.open(root + "/{PKG}/data", os.O_RDONLY)
    os.fchdir(fd)
    os.close(fd)
    out["fchdir"] = [os.getcwd(), sorted(os.listdir())]
    os.chdir(tmp)
    out["real"] = [os.getcwd(), open("real.txt").read()]
    os.chdir(root + "/")
    out["root"] = [os.path.isdir("site-packages"), os.path.isdir("stdlib")]
    os.chdir("..")
    out["above"] = os.getcwd()
    print(json.dumps(out))
    """
    got = run_json(app_bin, code)
    pkg = f"{app_bin}/{PKG}"
    assert got["cwd"] == got["path_cwd"] == pkg
    assert got["read"] == (FIXTURES / "appbin_testpkg/appbin_testpkg/data/hello.txt").read_text()
    assert got["listdir"] == ["hello.txt", "sub"] and got["isdir"] is True
    assert got["abspath"] == f"{pkg}/data"
    assert got["c_fopen"] is True
    assert got["sub"] == [f"{pkg}/data/sub", ["x.json"]]
    assert got["back"] == pkg
    assert got["fchdir"] == [f"{pkg}/data", ["hello.txt", "sub"]]
    assert got["real"] == [str(tmp_path), "real"]
    assert got["root"] == [True, True]
    assert got["above"] == str(app_bin.parent)


def test_empty_path_names_the_virtual_working_directory(app_bin):
    """fstatat(AT_FDCWD, "", AT_EMPTY_PATH) and statx() the same way ask about
    the working directory: in the archive, its directory, as stat(".")."""
    code = f"""
    import ctypes, json, os, stat, struct, sys
    libc = ctypes.CDLL(None, use_errno=True)
    AT_FDCWD, AT_EMPTY_PATH = -100, 0x1000
    os.chdir(sys.executable + "/{PKG}/data")
    dot = os.stat(".")
    buf = ctypes.create_string_buffer(512)
    rc = libc.fstatat(AT_FDCWD, b"", buf, AT_EMPTY_PATH)
    dev, ino, _, mode = struct.unpack_from("QQQI", buf.raw)  # struct stat on x86-64
    buf = ctypes.create_string_buffer(512)
    rcx = libc.statx(AT_FDCWD, b"", AT_EMPTY_PATH, 0x7ff, buf)
    xmode, = struct.unpack_from("H", buf.raw, 28)  # struct statx: stx_mode,
    xino, = struct.unpack_from("Q", buf.raw, 32)   # stx_ino,
    major, minor = struct.unpack_from("II", buf.raw, 136)  # stx_dev_major/minor
    print(json.dumps([[rc, dev == dot.st_dev, ino == dot.st_ino, mode == dot.st_mode],
                      [rcx, os.makedev(major, minor) == dot.st_dev, xino == dot.st_ino,
                       xmode == dot.st_mode], stat.S_ISDIR(dot.st_mode)]))
    """
    assert run_json(app_bin, code) == [[0, True, True, True], [0, True, True, True], True]


@pytest.mark.parametrize("where", ["root", "env -i"])
def test_from_root_and_with_an_empty_environment(app_bin, where):
    code = f"""
    import json, os, sys, certifi, importlib.resources as ir
    print(json.dumps([os.getcwd(), certifi.where(), os.path.isfile(certifi.where()),
                      len(open(certifi.where()).read()) > 1000,
                      sorted(os.listdir(os.path.dirname(__import__("appbin_testpkg").__file__) + "/data"))]))
    """
    env = None
    if where == "env -i":  # nothing but the sanitizer's settings on the ASan host
        env = {k: v for k, v in os.environ.items() if k == "ASAN_OPTIONS"}
    got = run_json(app_bin, code, cwd="/", env=env)
    assert got == ["/", f"{app_bin}/site-packages/certifi/cacert.pem", True, True,
                   ["hello.txt", "sub"]]


# ---- C code ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def probe_library(tmp_path_factory):
    """tests/e2e/fixtures/archfs_probe.c built as a shared library."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("probe") / "libarchfs_probe.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(out), str(FIXTURES / "archfs_probe.c")],
                   check=True, capture_output=True)
    return out


def test_c_library_reads_archive_files(app_bin, test_venv, probe_library, tmp_path):
    """A C library loaded from disk, calling libc itself: stdio, open/read,
    openat relative to a directory descriptor, every stat flavour (statx and
    glibc < 2.33's __xstat/__lxstat/__fxstat), opendir/readdir, scandir(at),
    access, realpath, readlink, chdir/getcwd, and writes refused."""
    (tmp_path / "outside.txt").write_text("outside")
    code = f"""
    import ctypes, errno, json, os, sys
    lib = ctypes.CDLL({str(probe_library)!r})
    C = ctypes.c_char_p
    lib.probe_stat.restype = ctypes.c_longlong
    lib.probe_stat.argtypes = [C, ctypes.c_int, ctypes.POINTER(ctypes.c_uint),
                               ctypes.POINTER(ctypes.c_ulonglong)]
    root = sys.executable.encode()
    f, d = root + b"/{PKG}/data/hello.txt", root + b"/{PKG}/data"
    buf, buf2 = ctypes.create_string_buffer(65536), ctypes.create_string_buffer(4096)
    out = {{}}
    def got(n, b=buf):
        return [n, b.raw[:max(n, 0)].decode()]
    out["fread"] = got(lib.probe_fread(f, buf, 65536))
    out["read"] = got(lib.probe_read(f, buf, 65536))
    size = ctypes.c_longlong()
    out["openat"] = got(lib.probe_openat(d, b"sub/x.json", buf, 65536, ctypes.byref(size)))
    out["openat"].insert(1, size.value)
    stats = []
    for how in range(7):
        mode, ino = ctypes.c_uint(), ctypes.c_ulonglong()
        stats.append([lib.probe_stat(f, how, ctypes.byref(mode), ctypes.byref(ino)), mode.value,
                      ino.value == os.stat(f).st_ino])
    out["stat"] = stats
    mode, ino = ctypes.c_uint(), ctypes.c_ulonglong()
    out["stat_dir"] = [lib.probe_stat(d, 4, ctypes.byref(mode), ctypes.byref(ino)), mode.value]
    out["stat_missing"] = [lib.probe_stat(d + b"/nope", how, ctypes.byref(mode), ctypes.byref(ino))
                           for how in (0, 3, 4, 5)]
    out["stat_notdir"] = lib.probe_stat(f + b"/x", 3, ctypes.byref(mode), ctypes.byref(ino))
    out["listdir"] = [lib.probe_listdir(d, buf, 65536), buf.value.decode()]
    out["scandir"] = [lib.probe_scandir(d, buf2, 4096), buf2.value.decode()]
    out["scandirat"] = [lib.probe_scandirat(d, None, buf2, 4096), buf2.value.decode(),
                        lib.probe_scandirat(d, b"sub", buf2, 4096), buf2.value.decode(),
                        lib.probe_scandirat(d, b"nope", buf2, 4096)]
    out["seekdir"] = [lib.probe_seekdir(d), lib.probe_seekdir(root + b"/site-packages")]
    out["glob"] = [lib.probe_glob(root + b"/{PKG}/data/*", buf, 65536), buf.value.decode(),
                   lib.probe_glob(root + b"/{PKG}/d*/s*/*.json", buf2, 4096), buf2.value.decode(),
                   lib.probe_glob(root + b"/{PKG}/nope/*", buf2, 4096)]
    out["freopen"] = got(lib.probe_freopen(f, buf, 65536))
    out["freopen"].append(lib.probe_freopen(d + b"/nope", buf, 10))
    out["access"] = [lib.probe_access(f, os.R_OK), lib.probe_access(f, os.W_OK),
                     lib.probe_access(d + b"/nope", os.F_OK)]
    out["realpath"] = [lib.probe_realpath(root + b"/{PKG}/data/sub/../hello.txt", buf, 4096),
                       buf.value.decode()]
    out["readlink"] = [lib.probe_readlink(f), lib.probe_readlink(d + b"/nope")]
    out["mkdir"] = [lib.probe_mkdir(d + b"/new"), lib.probe_mkdir(d)]
    out["fopen_w"] = [lib.probe_fopen_write(f), lib.probe_fopen_write(d + b"/new.txt")]
    out["chdir"] = [lib.probe_chdir_read(d, b"sub/x.json", buf, 65536, buf2, 4096),
                    buf2.value.decode(), os.getcwd()]  # (the probe goes back where it was)
    out["outside"] = got(lib.probe_fread({str(tmp_path / "outside.txt")!r}.encode(), buf, 100))
    out["outside"].append(lib.probe_fread(b"/nonexistent/x", buf, 10))
    print(json.dumps(out))
    """
    got = run_json(app_bin, code, cwd=str(tmp_path))
    data = FIXTURES / "appbin_testpkg" / "appbin_testpkg" / "data"
    hello = (data / "hello.txt").read_text()
    xjson = (data / "sub" / "x.json").read_text()
    assert got["fread"] == got["read"] == [len(hello), hello]
    assert got["openat"] == [len(xjson), len(xjson), xjson]
    assert got["stat"] == [[len(hello), 0o100444, True]] * 7
    assert got["stat_dir"] == [0, 0o40555]
    assert got["stat_missing"] == [-errno.ENOENT] * 4
    assert got["stat_notdir"] == -errno.ENOTDIR
    assert got["listdir"] == [2, "hello.txt \nsub/\n"]
    assert got["scandir"] == [2, "hello.txt"]
    assert got["scandirat"] == [2, "hello.txt", 1, "x.json", -errno.ENOENT]
    assert got["seekdir"][0] == 4 and got["seekdir"][1] > 20  # with . and ..
    pkg = f"{app_bin}/{PKG}"
    assert got["glob"] == [2, f"{pkg}/data/hello.txt\n{pkg}/data/sub\n", 1,
                           f"{pkg}/data/sub/x.json\n", 0]
    assert got["freopen"] == [len(hello), hello, -errno.ENOENT]
    assert got["access"] == [0, -errno.EROFS, -errno.ENOENT]
    assert got["realpath"] == [0, f"{app_bin}/{PKG}/data/hello.txt"]
    assert got["readlink"] == [-errno.EINVAL, -errno.ENOENT]
    assert got["mkdir"] == [-errno.EROFS, -errno.EEXIST]
    assert got["fopen_w"] == [-errno.EROFS, -errno.EROFS]
    assert got["chdir"] == [len(xjson), f"{app_bin}/{PKG}/data", str(tmp_path)]
    assert got["outside"] == [len("outside"), "outside", -errno.ENOENT]


def test_errno_is_left_alone_on_success(app_bin, tmp_path):
    """A call that succeeds leaves errno as the caller had it, as glibc's do:
    an archive open (the member's read), a path reaching app.bin through a
    symlink (found after glibc's ENOTDIR), fclose of a stream without a
    descriptor (fmemopen), and outside paths."""
    (tmp_path / "app-link").symlink_to(app_bin)
    (tmp_path / "real.txt").write_text("real")
    code = f"""
    import ctypes, json, sys
    libc = ctypes.CDLL(None, use_errno=True)
    for name in ("fopen", "opendir", "fmemopen"):
        getattr(libc, name).restype = ctypes.c_void_p
    libc.fclose.argtypes = libc.closedir.argtypes = [ctypes.c_void_p]
    libc.fmemopen.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    d = (sys.executable + "/{PKG}/data").encode()
    link = {str(tmp_path / "app-link")!r}.encode() + b"/{PKG}/data/hello.txt"
    real = {str(tmp_path / "real.txt")!r}.encode()
    st, buf = ctypes.create_string_buffer(256), ctypes.create_string_buffer(64)
    calls = {{
        "open file": lambda: libc.open(d + b"/hello.txt", 0) >= 0,
        "open dir": lambda: libc.open(d, 0) >= 0,
        "fopen": lambda: bool(libc.fopen(d + b"/sub/x.json", b"r")),
        "opendir": lambda: bool(libc.opendir(d)),
        "stat through a symlink": lambda: libc.stat(link, st) == 0,
        "open through a symlink": lambda: libc.open(link, 0) >= 0,
        "fclose(fmemopen)": lambda: libc.fclose(libc.fmemopen(buf, 64, b"w")) == 0,
        "open outside": lambda: libc.open(real, 0) >= 0,
        "stat outside": lambda: libc.stat(real, st) == 0,
    }}
    out = {{}}
    for name, call in calls.items():
        ctypes.set_errno(77)
        ok = call()
        out[name] = [ok, ctypes.get_errno()]
    print(json.dumps(out))
    """
    got = run_json(app_bin, code)
    assert got == {name: [True, 77] for name in got} and len(got) == 9, got


def test_libc_through_the_global_scope(app_bin):
    """ctypes.CDLL(None) finds the host's definitions first, as any symbol
    reference from a shared object does."""
    code = f"""
    import ctypes, json, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    f = (sys.executable + "/{PKG}/data/hello.txt").encode()
    libc.opendir.restype = ctypes.c_void_p
    libc.closedir.argtypes = [ctypes.c_void_p]
    fd = libc.open(f, os.O_RDONLY)
    data = os.read(fd, 100)
    os.close(fd)
    dirp = libc.opendir(os.path.dirname(f))
    print(json.dumps([data.decode(), libc.access(f, os.R_OK), bool(dirp),
                      libc.closedir(dirp) if dirp else None]))
    """
    got = run_json(app_bin, code)
    hello = (FIXTURES / "appbin_testpkg/appbin_testpkg/data/hello.txt").read_text()
    assert got == [hello, 0, True, 0]


def test_ctypes_loads_a_library_by_its_archive_path(app_bin, test_venv):
    """ctypes.CDLL(os.path.dirname(__file__) + "/lib.so"), as packages that
    ship plain shared libraries do: dlopen() of an archive path loads the
    member's in-memory copy, the same one the importer uses (one inode in
    /proc/self/maps, one handle), also by a relative path after chdir."""
    so = next((site(test_venv) / "pydantic_core").glob("_pydantic_core*.so")).name
    code = f"""
    import ctypes, json, os, sys
    import pydantic_core._pydantic_core as ext
    path = os.path.dirname(ext.__file__) + "/{so}"
    lib = ctypes.CDLL(path)
    again = ctypes.CDLL(sys.executable + "/site-packages/pydantic_core/../pydantic_core/{so}")
    os.chdir(os.path.dirname(path))
    rel = ctypes.CDLL("./{so}")
    inodes = {{l.split()[4] for l in open("/proc/self/maps") if "{so}" in l}}
    try:
        ctypes.CDLL(sys.executable + "/site-packages/pydantic_core/nope.so")
        missing = "loaded"
    except OSError as exc:
        missing = str(exc)
    print(json.dumps([hasattr(lib, "PyInit__pydantic_core"), lib._handle == again._handle == rel._handle,
                      len(inodes), missing]))
    """
    found, same, inodes, missing = run_json(app_bin, code)
    assert found and same and inodes == 1
    assert "nope.so" in missing


# ---- concurrency, processes ------------------------------------------------------------


def test_threads_open_concurrently(app_bin, test_venv):
    names = ["certifi/cacert.pem", "appbin_testpkg/data/hello.txt", "pydantic/main.py",
             "fastapi/routing.py", "starlette/requests.py", "appbin_testpkg/data/sub/x.json"]
    want = {n: sha((site(test_venv) / n).read_bytes()) for n in names}
    code = f"""
    import concurrent.futures, hashlib, json, os, re, sys
    names = {names!r}
    def work(i):
        name = names[i % len(names)]
        path = sys.executable + "/site-packages/" + name
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        os.listdir(os.path.dirname(path))
        os.stat(path)
        return name, digest
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(work, range(600)))
    bad = [r for r in results if r[1] != {want!r}[r[0]]]
    def target(fd):
        try:
            return os.readlink(f"/proc/self/fd/{{fd}}")
        except OSError:
            return ""
    # Shared objects' copies (host/nativeprep.h makes some ahead) are not files opened here.
    fds = [t for t in map(target, os.listdir("/proc/self/fd"))
           if not re.match(r"/memfd:.*[.]so([.][0-9]+)* [(]deleted[)]$", t)]
    print(json.dumps([len(results), bad, len(fds) < 20]))
    """
    assert run_json(app_bin, code) == [600, [], True]


def test_descriptor_copies_and_closes(app_bin):
    """The descriptor table follows dup, F_DUPFD, dup2/dup3 over an archive
    descriptor and over a real one, close and close_range: a copy of an
    archive descriptor is one, a real file dup2'd or reopened over its
    number is real again."""
    code = f"""
    import fcntl, json, os, stat, sys
    d = sys.executable + "/{PKG}/data"
    dev = os.stat(d).st_dev
    def what(fd):
        st = os.fstat(fd)
        if st.st_dev != dev:
            return "real"
        return "archive dir" if stat.S_ISDIR(st.st_mode) else "archive file"
    real = os.open("/proc/self/stat", os.O_RDONLY)
    dfd = os.open(d, os.O_RDONLY)
    ffd = os.open(d + "/hello.txt", os.O_RDONLY)
    out = {{}}
    a = os.dup(dfd)
    out["dup"] = what(a)
    out["F_DUPFD"] = what(fcntl.fcntl(ffd, fcntl.F_DUPFD, 100))
    os.dup2(dfd, 200)
    out["dup2"] = what(200)
    os.dup2(ffd, 200, inheritable=False)  # dup3
    out["dup3 over an archive one"] = what(200)
    os.dup2(real, 200)
    out["dup2 of a real one over it"] = what(200)
    os.close(dfd)
    out["copy after close"] = [what(a), sorted(os.listdir(a))]
    os.closerange(a, a + 1)  # close_range()
    n = os.open("/proc/self/stat", os.O_RDONLY)
    out["number reused"] = [n == a, what(n)]
    print(json.dumps(out))
    """
    assert run_json(app_bin, code) == {
        "dup": "archive dir", "F_DUPFD": "archive file", "dup2": "archive dir",
        "dup3 over an archive one": "archive file", "dup2 of a real one over it": "real",
        "copy after close": ["archive dir", ["hello.txt", "sub"]], "number reused": [True, "real"]}


def test_fork_and_subprocess(app_bin):
    code = f"""
    import json, os, subprocess, sys
    f = sys.executable + "/{PKG}/data/hello.txt"
    want = open(f).read()
    kept = open(f)  # inherited across fork
    pid = os.fork()
    if pid == 0:
        ok = open(f).read() == want and kept.read() == want and os.listdir(os.path.dirname(f))
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    child = subprocess.run([sys.executable, "python", "-c",
                            "import sys; print(open(sys.argv[1]).read(), end='')", f],
                           capture_output=True, text=True)
    print(json.dumps([os.waitstatus_to_exitcode(status), child.returncode, child.stdout == want]))
    """
    assert run_json(app_bin, code) == [0, 0, True]


def test_subprocess_leaves_the_parents_view_alone(app_bin, tmp_path):
    """subprocess's child (_posixsubprocess, a vfork() child: the parent's
    memory until it execs) closes every inherited descriptor and chdirs to
    cwd=: the parent's archive descriptors and virtual working directory must
    be as they were afterwards."""
    code = f"""
    import json, os, stat, subprocess, sys
    d = sys.executable + "/{PKG}/data"
    dev = os.stat(d).st_dev
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    ffd = os.open(d + "/hello.txt", os.O_RDONLY)
    os.chdir(d)
    def listdir(fd):
        try:
            return sorted(os.listdir(fd))
        except OSError as exc:
            return str(exc)
    def view():
        return [stat.S_ISDIR(os.fstat(dfd).st_mode), os.fstat(dfd).st_dev == dev,
                os.fstat(ffd).st_dev == dev, stat.S_IMODE(os.fstat(ffd).st_mode),
                listdir(dfd), os.getcwd() == d, os.path.isfile("hello.txt")]
    out = {{"before": view()}}
    subprocess.run(["/bin/true"], check=True)  # close_fds: close_range() in the child
    out["after close_fds"] = view()
    subprocess.run(["/bin/true"], cwd={str(tmp_path)!r}, check=True)  # chdir() in the child
    out["after cwd="] = view()
    subprocess.run(["/bin/true"], cwd=d + "/sub", check=True)  # an archive cwd= too
    out["after archive cwd="] = view()
    print(json.dumps(out))
    """
    got = run_json(app_bin, code)
    want = [True, True, True, 0o444, ["hello.txt", "sub"], True, True]
    assert got["before"] == want
    assert got["after close_fds"] == want
    assert got["after cwd="] == want
    assert got["after archive cwd="] == want


NO_MEMFD = FIXTURES / "no_memfd.py"


@pytest.mark.parametrize("memfd", ["memfd", "no memfd"])
def test_fork_while_threads_read(app_bin, test_venv, memfd, tmp_path):
    """fork() while other threads open members (and ctypes loads a library
    by its archive path): the child must not inherit any of archfs's locks
    held (the zstd context's, the code copies', the private directory's
    where memfd is missing), or it hangs on its first open."""
    so = next((site(test_venv) / "orjson").glob("orjson*.so")).name
    code = f"""
    import ctypes, os, sys, threading
    path = sys.executable + "/site-packages/certifi/cacert.pem"
    lib = sys.executable + "/site-packages/orjson/{so}"
    stop = False
    def reader():
        while not stop:
            open(path, "rb").read()
    def loader():
        while not stop:
            ctypes.CDLL(lib)
    threads = [threading.Thread(target=reader) for _ in range(3)]
    threads.append(threading.Thread(target=loader))
    for t in threads:
        t.start()
    statuses = set()
    for _ in range(40):
        pid = os.fork()
        if pid == 0:
            ok = open(path, "rb").read() and os.listdir(os.path.dirname(path)) and ctypes.CDLL(lib)
            os._exit(0 if ok else 1)
        statuses.add(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    stop = True
    for t in threads:
        t.join()
    fd = os.open(path, os.O_RDONLY)
    print(sorted(statuses), os.readlink("/proc/self/fd/%d" % fd).startswith("/memfd:"))
    """
    argv = [app_bin, "python", "-W", "ignore", "-c", textwrap.dedent(code)]
    if memfd == "no memfd":
        argv = [sys.executable, NO_MEMFD, "ENOSYS", *argv]
    # A hang is the failure; the limit leaves room for a loaded machine and
    # the ASan host's slow forks (the unfixed host hung within a few forks).
    result = run(argv, env=clean_env(TMPDIR=tmp_path), timeout=240)
    assert result.returncode == 0, describe(result)
    assert result.stdout.split() == ["[0]", str(memfd == "memfd")], describe(result)
    assert os.listdir(tmp_path) == []  # the private directory went at exit


# ---- Python's users of paths ------------------------------------------------------------


def test_linecache_warnings_inspect_tracebacks(app_bin):
    code = """
    import inspect, io, json, linecache, traceback, warnings, appbin_testpkg.boom as boom
    boom.boom = boom.explode
    warnings.simplefilter("always")
    buf = io.StringIO()
    warnings.showwarning = lambda m, c, f, l, file=None, line=None: buf.write(
        warnings.formatwarning(m, c, f, l, line))
    warnings.warn_explicit("look", UserWarning, boom.__file__, boom.RAISE_LINE)
    try:
        boom.boom()
    except Exception as exc:
        tb = "".join(traceback.format_exception(exc))
    print(json.dumps([buf.getvalue(), linecache.getline(boom.__file__, boom.RAISE_LINE),
                      inspect.getsource(boom.boom), tb]))
    """
    warning, line, source, tb = run_json(app_bin, code)
    src = (FIXTURES / "appbin_testpkg/appbin_testpkg/boom.py").read_text().splitlines()
    raise_line = next(int(x.split()[2]) for x in src if x.startswith("RAISE_LINE ="))
    assert line == src[raise_line - 1] + "\n"
    assert src[raise_line - 1].strip() in warning
    assert "def explode" in source
    assert src[raise_line - 1].strip() in tb


def test_uncaught_exception_shows_source_lines(app_bin):
    result = python(app_bin, "-c", "import appbin_testpkg.boom as b; b.explode()", cwd="/")
    src = (FIXTURES / "appbin_testpkg/appbin_testpkg/boom.py").read_text().splitlines()
    raise_line = next(int(x.split()[2]) for x in src if x.startswith("RAISE_LINE ="))
    assert result.returncode == 1, describe(result)
    assert src[raise_line - 1].strip() in result.stderr, describe(result)


@pytest.fixture(scope="session")
def setuptools_app(tmp_path_factory, run_appbin_pack, appbin_host):
    """app.bin of a venv whose one distribution requires setuptools (so
    setuptools and pkg_resources are packed)."""
    from conftest import _cached_build, build_pip_venv
    local = [FIXTURES / "appbin_uses_setuptools"]
    # python3.11 -m venv seeds Debian's setuptools 66; later venvs have none,
    # and pip's newest setuptools no longer has pkg_resources.
    pins = [] if PY_TAG == "3.11" else ["setuptools==80.9.0"]
    venv = _cached_build("uses-setuptools", pins, local,
                         lambda target: build_pip_venv(target, pins, local))
    out = tmp_path_factory.mktemp("setuptools-app") / "app.bin"
    result = run_appbin_pack("--venv", venv, "--app", "appbin_uses_setuptools:greeting",
                             "--host", appbin_host, "-o", out, "--quiet")
    assert result.returncode == 0, result.stderr
    return Path(os.path.realpath(out)), venv


# What sysconfig and site say, and what is there: the venv's python answers
# about the venv (and /usr/lib/python3.11), app.bin's about its archive.
INSTALL_LAYOUT = """
import importlib.metadata as md, json, os, site, sys, sysconfig
import certifi, idna
paths = sysconfig.get_paths()
purelib = sysconfig.get_path("purelib")
def rel(path, base):
    return os.path.relpath(path, base) if (path + "/").startswith(base + "/") else None
out = {
    "keys": sorted(paths),
    "default scheme in the schemes": sysconfig.get_default_scheme() in sysconfig.get_scheme_names(),
    "purelib holds idna": os.path.dirname(os.path.dirname(idna.__file__)) == purelib,
    "platlib": sysconfig.get_path("platlib") == purelib,
    "stdlib holds json": os.path.dirname(os.path.dirname(json.__file__)) == paths["stdlib"],
    "DESTSHARED holds extension modules": any(
        n.endswith(sysconfig.get_config_var("EXT_SUFFIX"))
        for n in os.listdir(sysconfig.get_config_var("DESTSHARED"))),
    "LIBDEST": sysconfig.get_config_var("LIBDEST") == paths["stdlib"],
    "getsitepackages": purelib in site.getsitepackages(),
    "getsitepackages()[0]": site.getsitepackages()[0] == purelib,
    "user site": site.ENABLE_USER_SITE,
    "listed": sorted(n for n in os.listdir(purelib) if n.startswith(("idna", "certifi"))),
    "stdlib listed": "os.py" in os.listdir(paths["stdlib"]),
    "isdirs": [os.path.isdir(paths[k]) for k in ("stdlib", "platstdlib", "purelib", "platlib")],
    # data found the way packages find it through sysconfig and metadata
    "cacert by purelib": open(os.path.join(purelib, "certifi", "cacert.pem"), "rb").read()
                         == open(certifi.where(), "rb").read(),
    "locate_file": rel(str(md.distribution("idna").locate_file("idna/idnadata.py")), purelib),
    "read located": len(md.distribution("idna").locate_file("idna/idnadata.py").read_bytes()),
    "metadata": md.distribution("idna").read_text("METADATA").splitlines()[:3],
    "relative": {k: rel(v, sys.prefix) for k, v in paths.items()},
    "DESTSHARED": rel(sysconfig.get_config_var("DESTSHARED"), sys.prefix),
    "version": "%d.%d" % sys.version_info[:2],
}
print(json.dumps(out))
"""


def test_sysconfig_and_site_name_the_archive(app_bin, test_venv, tmp_path):
    """sysconfig.get_paths(), get_config_var("LIBDEST"/"DESTSHARED") and
    site.getsitepackages() name <app.bin>/stdlib and <app.bin>/site-packages,
    which hold what the venv's directories hold, so code that finds data
    through them works as in the venv."""
    script = tmp_path / "layout.py"
    script.write_text(INSTALL_LAYOUT.replace("_json", DYN))  # a lib-dynload module
    want, got = venv_and_app_json(test_venv, app_bin, script)
    relative, version = got.pop("relative"), got["version"]
    assert (got.pop("DESTSHARED"), want.pop("DESTSHARED")) == ("stdlib/lib-dynload", None)
    assert relative == {"stdlib": "stdlib", "platstdlib": "stdlib", "purelib": "site-packages",
                        "platlib": "site-packages", "include": f"include/python{version}",
                        "platinclude": f"include/python{version}", "scripts": "bin", "data": "."}
    want.pop("relative")
    assert got == want
    assert got["user site"] is False and all(got["isdirs"])
    assert all(v is True for k, v in got.items() if k not in (
        "keys", "listed", "locate_file", "read located", "metadata", "user site", "isdirs",
        "version")), got
    # sysconfig's other schemes, and site for other prefixes, are untouched
    code = """
    import json, site, sys, sysconfig
    print(json.dumps([sysconfig.get_paths("posix_prefix")["purelib"],
                      site.getsitepackages(["/usr"]), sysconfig.get_preferred_scheme("user")]))
    """
    # python -m site (runpy asks site's loader for its code)
    shown = python(app_bin, "-m", "site")
    assert shown.returncode == 0 and f"    '{app_bin}/site-packages',\n" in shown.stdout, \
        describe(shown)
    purelib, usr, user = run_json(app_bin, code)
    assert (purelib, user) == (f"{app_bin}/lib/python{version}/site-packages", "posix_user")
    assert usr and all(p.startswith(f"/usr/") and f"python3" in p for p in usr), usr


DIST_FILES = """
import base64, hashlib, importlib.metadata as md, json, os
out = {}
for name in ("idna", "certifi", "appbin-testpkg"):
    dist = md.distribution(name)
    files, bad = dist.files, []
    for f in files:
        path = f.locate()
        if not os.path.isfile(path):
            bad.append(str(f))
        elif f.hash:
            data = open(path, "rb").read()
            digest = base64.urlsafe_b64encode(hashlib.new(f.hash.mode, data).digest()).rstrip(b"=")
            if digest.decode() != f.hash.value or f.size != len(data):
                bad.append(str(f))
    out[name] = [sorted(str(f) for f in files), bad]
print(json.dumps(out))
"""


def test_distribution_files_like_the_venv(app_bin, test_venv, tmp_path):
    """importlib.metadata's files() (what `pip show -f` lists), each file
    located, existing and matching its recorded hash and size, as in the
    venv: the same files but for the bytecode (a .pyc beside each .py
    instead of __pycache__) and what an installer alone reads (INSTALLER,
    REQUESTED, WHEEL, direct_url.json) or puts outside site-packages."""
    script = tmp_path / "files.py"
    script.write_text(DIST_FILES)
    want, got = venv_and_app_json(test_venv, app_bin, script)
    for name, (files, bad) in got.items():
        assert bad == [] and want[name][1] == [], (name, bad, want[name][1])
        expected = {f for f in want[name][0] if "__pycache__" not in f and not f.startswith("../")
                    and f.rsplit("/", 1)[-1] not in ("INSTALLER", "REQUESTED", "WHEEL",
                                                     "direct_url.json")}
        assert {f for f in files if not f.endswith(".pyc")} == expected, name
        assert {f for f in files if f.endswith(".pyc")} == \
            {f[:-3] + ".pyc" for f in expected if f.endswith(".py")}, name


def test_pkg_resources_reads_archive_files(setuptools_app):
    """pkg_resources over archive packages: the file-system provider (as for
    packages on disk, not the read-only NullProvider) and a working set built
    by listing sys.path, the same as the venv's python says."""
    app, venv = setuptools_app
    code = """
    import json, os, sys, pkg_resources as r, appbin_uses_setuptools as m
    top = os.path.dirname(os.path.dirname(m.__file__))
    print(json.dumps([m.greeting(), r.resource_isdir(m.__name__, "data"),
                      r.resource_listdir(m.__name__, "data"),
                      r.resource_exists(m.__name__, "data/greeting.txt"),
                      os.path.relpath(r.resource_filename(m.__name__, "data/greeting.txt"), top),
                      r.get_distribution("appbin-uses-setuptools").version,
                      sorted(d.project_name for d in r.working_set if d.project_name != "pip")]))
    """
    ours = run_json(app, code)
    result = subprocess.run([str(Path(venv) / "bin" / "python"), "-I", "-c", textwrap.dedent(code)],
                            capture_output=True, text=True, check=True)
    assert ours == json.loads(result.stdout)
    assert ours[:4] == ["hello through pkg_resources\n", True, ["greeting.txt"], True]


def test_get_data_of_other_spellings(app_bin):
    """A loader's get_data (pkgutil.get_data) with '..' in the path or a
    directory answers as the file system does."""
    code = f"""
    import errno, json, pkgutil, sys, appbin_testpkg
    loader = appbin_testpkg.__loader__
    def err(path):
        try:
            return len(loader.get_data(path))
        except OSError as exc:
            return errno.errorcode[exc.errno]
    root = sys.executable + "/{PKG}"
    print(json.dumps([err(root + "/data/sub/../hello.txt"), err(root + "/data"),
                      err(root + "/data/nope"), len(pkgutil.get_data("appbin_testpkg", "data/sub/../hello.txt"))]))
    """
    size = len((FIXTURES / "appbin_testpkg/appbin_testpkg/data/hello.txt").read_bytes())
    assert run_json(app_bin, code) == [size, "EISDIR", "ENOENT", size]


def test_copy_out_of_the_archive(app_bin, tmp_path):
    """shutil.copytree/copy2 (sendfile from the memfd, copystat, xattrs)."""
    code = f"""
    import shutil, sys
    shutil.copytree(sys.executable + "/{PKG}/data", {str(tmp_path / "copy")!r})
    shutil.copy2(sys.executable + "/{PKG}/data/hello.txt", {str(tmp_path / "one.txt")!r})
    print("{{}}")
    """
    run_json(app_bin, code)
    data = FIXTURES / "appbin_testpkg" / "appbin_testpkg" / "data"
    assert (tmp_path / "copy" / "hello.txt").read_bytes() == (data / "hello.txt").read_bytes()
    assert (tmp_path / "copy" / "sub" / "x.json").read_bytes() == (data / "sub/x.json").read_bytes()
    assert (tmp_path / "one.txt").read_bytes() == (data / "hello.txt").read_bytes()


def test_archive_descriptors_are_no_handle_on_app_bin(app_bin, tmp_path):
    """A descriptor of an archive directory (or an O_PATH one of a file)
    gives no way to app.bin itself: chmod and utime through
    /proc/self/fd/N, linkat(AT_EMPTY_PATH) and a reopen through /proc leave
    app.bin as it was (a copy here: the unfixed host changed it) and read
    the member, not app.bin; faccessat(AT_EMPTY_PATH) says read-only."""
    copy = tmp_path / "app.bin"
    shutil.copy2(app_bin, copy)
    before = copy.stat()
    code = f"""
    import ctypes, errno, json, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    AT_FDCWD, AT_EMPTY_PATH = -100, 0x1000
    d = sys.executable + "/{PKG}/data"
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    proc = "/proc/self/fd/%d" % fd
    def err(call, *args):
        try:
            call(*args)
            return "ok"
        except OSError as exc:
            return errno.errorcode[exc.errno]
    out = {{"chmod": err(os.chmod, proc, 0o700), "utime": err(os.utime, proc, (1, 1))}}
    rc = libc.linkat(fd, b"", AT_FDCWD, {str(tmp_path / "hard")!r}.encode(), AT_EMPTY_PATH)
    out["linkat"] = rc
    rc = libc.faccessat(fd, b"", os.W_OK, AT_EMPTY_PATH)
    out["faccessat W_OK"] = errno.errorcode.get(ctypes.get_errno()) if rc else "ok"
    out["faccessat R_OK"] = libc.faccessat(fd, b"", os.R_OK, AT_EMPTY_PATH)
    pfd = os.open(d + "/hello.txt", os.O_PATH)
    out["O_PATH reopen"] = open("/proc/self/fd/%d" % pfd, "rb").read().decode("latin-1")
    out["O_PATH fstat"] = os.fstat(pfd).st_size == os.stat(d + "/hello.txt").st_size
    out["read dir"] = err(os.read, fd, 10)  # fails, as a directory's does (never "empty")
    print(json.dumps(out))
    """
    got = run_json(copy, code)
    after = copy.stat()
    assert (after.st_mode, after.st_mtime_ns, after.st_nlink) == \
        (before.st_mode, before.st_mtime_ns, before.st_nlink), got
    hard = tmp_path / "hard"
    assert not hard.exists() or not os.path.samefile(hard, copy), got
    assert got["faccessat W_OK"] == "EROFS" and got["faccessat R_OK"] == 0, got
    assert got["O_PATH reopen"] == \
        (FIXTURES / "appbin_testpkg/appbin_testpkg/data/hello.txt").read_text(), got
    assert got["O_PATH fstat"] is True
    assert got["read dir"] in ("EISDIR", "EBADF"), got


def test_outside_paths_are_untouched(app_bin, tmp_path):
    """Real files next to and far from app.bin: same answers, same errno."""
    (tmp_path / "f.txt").write_text("x")
    code = f"""
    import errno, json, os
    tmp = {str(tmp_path)!r}
    def err(call, *args):
        try:
            call(*args)
            return "ok"
        except OSError as exc:
            return errno.errorcode[exc.errno]
    os.mkdir(tmp + "/made")
    with open(tmp + "/made/w.txt", "w") as f:
        f.write("written")
    os.rename(tmp + "/made/w.txt", tmp + "/made/r.txt")
    print(json.dumps([open(tmp + "/f.txt").read(), open(tmp + "/made/r.txt").read(),
                      sorted(os.listdir(tmp)), err(os.stat, tmp + "/nope"),
                      err(os.stat, tmp + "/f.txt/x"), err(open, tmp + "/f.txt/x"),
                      err(os.listdir, tmp + "/f.txt"), err(os.mkdir, tmp + "/made"),
                      os.path.realpath(tmp + "/made/../f.txt"), os.getcwd()]))
    """
    got = run_json(app_bin, code, cwd=str(tmp_path))
    assert got == ["x", "written", ["f.txt", "made"], "ENOENT", "ENOTDIR", "ENOTDIR", "ENOTDIR",
                   "EEXIST", str(tmp_path / "f.txt"), str(tmp_path)]


# ---- bad input ------------------------------------------------------------------------


NULL_PATH_CALLS = """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(4096)
libc.fopen.restype = libc.realpath.restype = ctypes.c_void_p
N, AT_FDCWD = None, -100
calls = {
    "open": lambda: libc.open(N, 0), "openat": lambda: libc.openat(AT_FDCWD, N, 0),
    "creat": lambda: libc.creat(N, 0o600), "fopen": lambda: libc.fopen(N, b"r"),
    "stat": lambda: libc.stat(N, buf), "lstat": lambda: libc.lstat(N, buf),
    "fstatat": lambda: libc.fstatat(AT_FDCWD, N, buf, 0),
    "statx": lambda: libc.statx(AT_FDCWD, N, 0, 0x7ff, buf), "access": lambda: libc.access(N, 0),
    "faccessat": lambda: libc.faccessat(AT_FDCWD, N, 0, 0),
    "euidaccess": lambda: libc.euidaccess(N, 0), "mkdir": lambda: libc.mkdir(N, 0o700),
    "rmdir": lambda: libc.rmdir(N), "unlink": lambda: libc.unlink(N), "chdir": lambda: libc.chdir(N),
    "readlink": lambda: libc.readlink(N, buf, 10), "realpath": lambda: libc.realpath(N, buf),
    "chmod": lambda: libc.chmod(N, 0o600), "chown": lambda: libc.chown(N, 0, 0),
    "truncate": lambda: libc.truncate(N, 0), "utime": lambda: libc.utime(N, N),
    "utimensat": lambda: libc.utimensat(AT_FDCWD, N, N, 0), "rename": lambda: libc.rename(N, N),
    "link": lambda: libc.link(N, N), "symlink": lambda: libc.symlink(b"x", N),
    "mkfifo": lambda: libc.mkfifo(N, 0o600), "statvfs": lambda: libc.statvfs(N, buf),
    "getxattr": lambda: libc.getxattr(N, b"user.x", buf, 10), "closedir": lambda: libc.closedir(N),
}
out = {}
for name, call in calls.items():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a crash takes only the child
        ctypes.set_errno(0)
        rc = call()
        os.write(w, json.dumps([rc if rc is None or rc < 1 << 32 else "ptr",
                                ctypes.get_errno()]).encode())
        os._exit(0)
    os.close(w)
    status = os.waitpid(pid, 0)[1]
    got = os.read(r, 100)
    os.close(r)
    out[name] = json.loads(got) if got else f"status {os.waitstatus_to_exitcode(status)}"
print(json.dumps(out))
"""


def test_null_paths_fail_as_in_glibc(app_bin):
    """A NULL path is EFAULT (EINVAL for realpath and utimensat, and for
    closedir(NULL)) from glibc, never a crash: the same answers as this
    Python's own glibc gives."""
    want = json.loads(subprocess.run([sys.executable, "-c", NULL_PATH_CALLS], capture_output=True,
                                     text=True, check=True).stdout)
    assert want["stat"] == [-1, errno.EFAULT]  # the reference is glibc's answer
    assert run_json(app_bin, NULL_PATH_CALLS) == want



def _member_data_offset(app_bin, member):
    """File offset of a member's (compressed) data in app.bin."""
    offset, size, _ = read_trailer(app_bin)
    with open(app_bin, "rb") as f:
        f.seek(offset)
        archive = f.read(size)
    import io
    info = zipfile.ZipFile(io.BytesIO(archive)).getinfo(member)
    local = info.header_offset
    name_len = int.from_bytes(archive[local + 26:local + 28], "little")
    extra_len = int.from_bytes(archive[local + 28:local + 30], "little")
    return offset + local + 30 + name_len + extra_len, archive


def test_damaged_member_is_eio_with_one_line(app_bin, tmp_path):
    """A member whose bytes are damaged (its own digest no longer matches;
    start-up checks only the index): opening it fails with EIO and one log
    line names it; the rest of the archive still reads."""
    member = f"{PKG}/data/hello.txt"
    data_offset, _ = _member_data_offset(app_bin, member)
    damaged = bytearray(app_bin.read_bytes())
    for i in range(4):
        damaged[data_offset + i] ^= 0xFF
    copy = tmp_path / "damaged.bin"
    copy.write_bytes(damaged)
    copy.chmod(0o755)
    code = f"""
    import errno, json, sys
    try:
        open(sys.executable + "/{member}").read()
        print("read")
    except OSError as exc:
        print(errno.errorcode[exc.errno])
    print(open(sys.executable + "/{PKG}/data/sub/x.json").read()[:1])
    """
    result = python(copy, "-c", textwrap.dedent(code))
    assert result.returncode == 0, describe(result)
    assert result.stdout.splitlines() == ["EIO", "{"], describe(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("app.bin: error: "), describe(result)
    assert member in lines[0], describe(result)


def test_member_larger_than_memory_allows_is_enomem(app_bin, test_venv):
    """Under an address-space limit too small for the member's bytes, open()
    fails with ENOMEM (MemoryError-like, not a crash) and works again once
    the limit is lifted."""
    so = next((site(test_venv) / "pydantic_core").glob("_pydantic_core*.so")).name
    code = f"""
    import errno, json, resource, sys
    path = sys.executable + "/site-packages/pydantic_core/{so}"
    vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize:")).split()[1]) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 20), hard))
    try:
        open(path, "rb")
        got = "opened"
    except OSError as exc:
        got = errno.errorcode[exc.errno]
    except MemoryError:
        got = "MemoryError"
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    print(json.dumps([got, len(open(path, "rb").read())]))
    """
    got = run_json(app_bin, code)
    assert got == ["ENOMEM", (site(test_venv) / "pydantic_core" / so).stat().st_size]


def test_no_memfd_falls_back_to_a_private_directory(app_bin, tmp_path):
    """Without memfd_create (a seccomp filter makes it fail with ENOSYS, as
    some sandboxes do), an opened file is an unlinked file of a private 0700
    directory under $TMPDIR, which holds nothing afterwards."""
    code = f"""
    import ctypes, json, os, sys
    # seccomp(2) filter returning ENOSYS for memfd_create (syscall 319).
    import struct
    BPF_LD, BPF_W, BPF_ABS, BPF_JMP, BPF_JEQ, BPF_K, BPF_RET = 0x00, 0x00, 0x20, 0x05, 0x10, 0x00, 0x06
    SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7fff0000, 0x00050000
    prog = [
        (BPF_LD | BPF_W | BPF_ABS, 0, 0, 0),
        (BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 319),
        (BPF_RET | BPF_K, 0, 0, SECCOMP_RET_ERRNO | 38),
        (BPF_RET | BPF_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
    filt = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(filt)
    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    p = Prog(len(prog), ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    assert libc.prctl(22, 2, ctypes.byref(p), 0, 0) == 0, ctypes.get_errno()  # SECCOMP_MODE_FILTER
    f = sys.executable + "/{PKG}/data/hello.txt"
    with open(f) as fh:
        text = fh.read()
        link = os.readlink("/proc/self/fd/%d" % fh.fileno())
    dirs = os.listdir({str(tmp_path)!r})
    print(json.dumps([text, link.startswith({str(tmp_path)!r}), link.endswith("(deleted)"), dirs,
                      [os.listdir({str(tmp_path)!r} + "/" + d) for d in dirs]]))
    """
    got = run_json(app_bin, code, env=clean_env(TMPDIR=tmp_path))
    hello = (FIXTURES / "appbin_testpkg/appbin_testpkg/data/hello.txt").read_text()
    assert got[0] == hello
    assert got[1] and got[2], got
    assert len(got[3]) == 1 and got[3][0].startswith("appbin-")  # the private dir,
    assert got[4] == [[]]  # holding nothing


def test_without_memfd_from_the_start(app_bin, test_venv, tmp_path):
    """memfd_create refused from exec on (ENOSYS, as under a seccomp profile
    or an old kernel): extension modules and archive files come from the
    private directory under $TMPDIR, like extension loading; a fork() child
    that exits normally (atexit handlers run) leaves the directory to its
    parent, which goes on opening files and loading libraries; the
    directory is gone once the parent exits."""
    so = next((site(test_venv) / "pydantic_core").glob("_pydantic_core*.so")).name
    code = f"""
    import json, os, sys
    import orjson  # an extension module, before any fork
    path = sys.executable + "/{PKG}/data/hello.txt"
    with open(path) as f:
        first = [f.read(), os.readlink("/proc/self/fd/%d" % f.fileno())]
    pid = os.fork()
    if pid == 0:
        open(path).read()
        sys.exit(0)  # atexit handlers run in the child
    child = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    import pydantic_core  # a library loaded after the child's exit
    with open(path) as f:
        again = f.read()
    print(json.dumps([first, child, again, orjson.dumps([1]).decode(),
                      pydantic_core.__file__.endswith("/__init__.py"), os.listdir({str(tmp_path)!r})]))
    """
    result = run([sys.executable, NO_MEMFD, "ENOSYS", app_bin, "python", "-c",
                  textwrap.dedent(code)], env=clean_env(TMPDIR=tmp_path))
    assert result.returncode == 0, describe(result)
    first, child, again, dumped, pydantic_ok, listed = json.loads(result.stdout)
    hello = (FIXTURES / "appbin_testpkg/appbin_testpkg/data/hello.txt").read_text()
    assert first[0] == hello and first[1].startswith(str(tmp_path) + "/appbin-"), first
    assert first[1].endswith("(deleted)"), first
    assert (child, again, dumped, pydantic_ok) == (0, hello, "[1]", True)
    assert len(listed) == 1 and listed[0].startswith("appbin-"), listed
    assert os.listdir(tmp_path) == [], "the private directory outlived app.bin"
    assert result.stderr == "", describe(result)


@pytest.mark.parametrize("err", ["ENOSYS", "EPERM"])
def test_no_memfd_and_nowhere_to_write_is_one_clear_line(app_bin, tmp_path, err):
    """No memfd (a seccomp filter) and every temporary directory read-only
    (a user and mount namespace): opening an archive file fails with
    memfd_create's errno and one line naming the file and both reasons;
    listing and stat still work, pure-Python imports too, and an extension
    module's ImportError says the same. Never a crash or an empty file."""
    if not unshare_works("-rm"):
        pytest.skip("unshare -rm (a user and mount namespace) is not permitted here")
    code = f"""
    import errno, os, sys
    path = sys.executable + "/site-packages/certifi/cacert.pem"
    try:
        open(path, "rb")
        print("opened")
    except OSError as exc:
        print(errno.errorcode[exc.errno])
    print(os.path.getsize(path) > 100000, "cacert.pem" in os.listdir(os.path.dirname(path)))
    import json
    print(json.dumps([1]))
    try:
        import DYN
        print("imported")
    except ImportError as exc:
        print(str(exc).replace(sys.executable, "APP"))
    """
    # --rbind: a user namespace refuses a plain bind of a tree holding a mount
    # it may not reveal (another FUSE or tmpfs mount below /tmp, say)
    ro = "; ".join(f"mount --rbind {d} {d} && mount -o remount,bind,ro {d}"
                   for d in ("/tmp", "/dev/shm", "/var/tmp"))
    script = tmp_path / "code.py"
    script.write_text(textwrap.dedent(code).replace("DYN", DYN))
    shell = (f"{ro}; exec {sys.executable} {NO_MEMFD} {err} {app_bin} python {script}")
    result = run(["unshare", "-rm", "sh", "-c", shell], env=clean_env(TMPDIR=None))
    assert result.returncode == 0, describe(result)
    why = (f"memfd_create failed: {os.strerror(getattr(errno, err))} ({err}), and no writable "
           "temporary directory was found (/tmp: Read-only file system (EROFS), /dev/shm: "
           "Read-only file system (EROFS), /var/tmp: Read-only file system (EROFS)); set TMPDIR "
           "to a writable directory or mount a tmpfs on /tmp")
    lines = result.stdout.splitlines()
    assert lines[:3] == [err, "True True", "[1]"], describe(result)
    assert lines[3] == "appbin: cannot load the native code of stdlib/lib-dynload/" \
        + lines[3].split("stdlib/lib-dynload/")[1].split(":")[0] + ": " + why, describe(result)
    assert result.stderr.splitlines() == [
        f"app.bin: error: cannot open {app_bin}/site-packages/certifi/cacert.pem: {why}"], \
        describe(result)


def test_no_memfd_prefers_a_directory_code_can_load_from(app_bin, tmp_path):
    """Without memfd, the private directory goes on a file system where code
    can be mapped (not one mounted noexec, like Docker's /dev/shm and
    --tmpfs mounts) when there is one; when the only writable one is
    noexec, archive files still open from it and an extension module's
    ImportError says why it cannot load."""
    if not unshare_works("-rm"):
        pytest.skip("unshare -rm (a user and mount namespace) is not permitted here")
    code = tmp_path / "code.py"
    code.write_text(textwrap.dedent("""
    import os, sys
    f = open(sys.executable + "/site-packages/certifi/cacert.pem")
    print(os.readlink("/proc/self/fd/%d" % f.fileno()).split("/appbin-")[0])
    try:
        import DYN
        print("loaded")
    except ImportError as exc:
        print(exc)
    """).replace("DYN", DYN))
    shutil.copy2(app_bin, tmp_path / "app.bin")  # /tmp is hidden below (the clone may be there too)
    shutil.copy2(NO_MEMFD, tmp_path / "no_memfd.py")
    ro = "mount --rbind {0} {0} && mount -o remount,bind,ro {0}"  # --rbind: as above
    # /mnt sees the test's files once a tmpfs hides /tmp
    common = f"mount --bind {tmp_path} /mnt && mount -t tmpfs -o noexec tmpfs /tmp && "
    run_it = "exec /usr/bin/python3.11 /mnt/no_memfd.py ENOSYS /mnt/app.bin python /mnt/code.py"
    # TMPDIR is noexec, /var/tmp is not: the directory goes on /var/tmp
    exec_ok = run(["unshare", "-rm", "sh", "-c", common + "mount -t tmpfs tmpfs /var/tmp && "
                   + ro.format("/dev/shm") + " && " + run_it], env=clean_env(TMPDIR="/tmp"),
                  cwd="/")
    assert exec_ok.returncode == 0, describe(exec_ok)
    assert exec_ok.stdout.splitlines() == ["/var/tmp", "loaded"], describe(exec_ok)
    # only the noexec /tmp is writable
    noexec = run(["unshare", "-rm", "sh", "-c", common + ro.format("/var/tmp") + " && "
                  + ro.format("/dev/shm") + " && " + run_it], env=clean_env(TMPDIR=None), cwd="/")
    assert noexec.returncode == 0, describe(noexec)
    lines = noexec.stdout.splitlines()
    assert lines[0] == "/tmp", describe(noexec)
    assert lines[1].startswith(f"appbin: cannot load the native code of stdlib/lib-dynload/{DYN}."), \
        describe(noexec)
    assert lines[1].endswith(", is on a file system mounted noexec, where code cannot be mapped; "
                             "set TMPDIR to a writable directory mounted exec, or mount one on "
                             "/tmp (docker run --tmpfs /tmp:exec)"), describe(noexec)

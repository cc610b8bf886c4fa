"""Tests of appbin-pack: errors, archive layout, manifest, trailer, reproducibility.

Most tests pack with a stand-in host (a script answering --version like the
real one): the packager only copies the host's bytes, so the payload can be
checked before the host exists. Tests needing the real host use the
appbin_host fixture, which skips while build/appbin-host is not built.
"""

import base64
import hashlib
import importlib.util
import io
import json
import marshal
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
import struct
import traceback
import zipfile
import zlib
from pathlib import Path

import pytest
import zstandard

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "packager"))
from appbin_packer import VERSION  # noqa: E402
from appbin_packer.archive import parse_trailer  # noqa: E402
from appbin_packer.elfdeps import DependencyResolver, is_glibc, read_dynamic  # noqa: E402
from conftest import PACK_WRAPPER  # noqa: E402
from hostutil import (EXT_SUFFIX, PY_DYNLOAD, PY_INCLUDE, PY_STDLIB, PY_TAG,  # noqa: E402
                      PY_VERSION, PYTHON, clean_env)

EXT = EXT_SUFFIX  # .cpython-311-x86_64-linux-gnu.so for the 3.11 host
ZSTD = 93  # zip method
DYNLOAD = "stdlib/lib-dynload/"
DYNLOAD_DIR = Path(PY_DYNLOAD)


# --- helpers ---------------------------------------------------------------------

class Payload:
    """An app.bin split into host, zip archive and trailer."""

    def __init__(self, path):
        self.data = Path(path).read_bytes()
        magic, self.version, self.flags, self.offset, self.size, self.sha256 = \
            parse_trailer(self.data)
        assert magic == b"APPBIN\0\1"
        self.archive_bytes = self.data[self.offset:self.offset + self.size]
        self.zip = zipfile.ZipFile(io.BytesIO(self.archive_bytes))
        self.names = self.zip.namelist()
        self.files = {n for n in self.names if not n.endswith("/")}

    def read(self, name):
        """A member's bytes; zipfile reads stored and deflated ones, zstd (method 93)
        ones are decompressed here and checked against the recorded CRC-32."""
        info = self.zip.getinfo(name)
        if info.compress_type != ZSTD:
            return self.zip.read(name)
        at = info.header_offset
        name_len, extra_len = struct.unpack("<HH", self.archive_bytes[at + 26:at + 30])
        start = at + 30 + name_len + extra_len
        frame = self.archive_bytes[start:start + info.compress_size]
        data = zstandard.ZstdDecompressor().decompress(frame)
        assert len(data) == info.file_size and zlib.crc32(data) == info.CRC, name
        return data

    def manifest(self):
        """The manifest's key=value lines (comments left out), in file order."""
        text = self.read("appbin/manifest").decode()
        return [line for line in text.splitlines() if line and not line.startswith("#")]

    def manifest_dict(self):
        return dict(line.split("=", 1) for line in self.manifest())


def ldd_order(path):
    """(name, path) of the non-glibc libraries glibc's ld.so loads for `path`,
    in the order it loads them (ldd lists the objects in load order)."""
    out = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=True).stdout
    pairs = re.findall(r"^\s*(\S+) => (.+?)(?: \(0x[0-9a-f]+\))?$", out, re.M)
    return [(name, os.path.normpath(where)) for name, where in pairs if not is_glibc(name)]


def write_stub_host(path, python_version, extra_lines=""):
    """A script standing in for appbin-host: answers --version like it."""
    path.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo "appbin {VERSION}"
        echo "python {python_version}"
        echo "payload: none (this host reads format 2)"
        {extra_lines}
        exit 0
        """))
    path.chmod(0o755)
    return path


def make_venv(root, files, version=PY_VERSION, python_dir=f"python{PY_TAG}"):
    """A minimal venv on disk: pyvenv.cfg and site-packages `files` (rel -> text)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyvenv.cfg").write_text(f"home = /usr/bin\nversion = {version}\n")
    site = root / "lib" / python_dir / "site-packages"
    site.mkdir(parents=True)
    for rel, content in files.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def dist_info(name, version, requires=(), record=()):
    """Files of a fake *.dist-info directory."""
    base = f"{name}-{version}.dist-info/"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {base + "METADATA": metadata, base + "WHEEL": "Wheel-Version: 1.0\n",
             base + "INSTALLER": "pip\n"}
    files[base + "RECORD"] = "".join(f"{r},,\n" for r in (*record, *files, base + "RECORD"))
    return files


@pytest.fixture(scope="session")
def stub_host(tmp_path_factory, python_version):
    return write_stub_host(tmp_path_factory.mktemp("host") / "appbin-host", python_version)


@pytest.fixture(scope="session")
def packed(tmp_path_factory, run_appbin_pack, stub_host, test_venv, test_app):
    """The test venv packed with default options: (path, CompletedProcess)."""
    output = tmp_path_factory.mktemp("default") / "app.bin"
    result = run_appbin_pack("--venv", test_venv, "--app", test_app, "--host", stub_host,
                             "-o", output)
    assert result.returncode == 0, result.stderr
    return output, result


@pytest.fixture(scope="session")
def payload(packed):
    return Payload(packed[0])


@pytest.fixture
def pack(run_appbin_pack, stub_host, test_app, tmp_path):
    """Packs `venv` with extra arguments; returns (CompletedProcess, output path).

    The output goes to tmp_path/out/app.bin unless `output` is given.
    """
    def run(venv, *args, app=test_app, host=stub_host, output=None):
        if output is None:
            output = tmp_path / "out" / "app.bin"
            output.parent.mkdir(exist_ok=True)
        result = run_appbin_pack("--venv", venv, "--app", app, "--host", host, "-o", output,
                                 *args)
        return result, output
    return run


# --- errors ----------------------------------------------------------------------

def assert_error(result, exit_code, *fragments):
    """One "appbin-pack: error: ..." line naming every fragment, and `exit_code`."""
    assert result.returncode == exit_code, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("appbin-pack: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def assert_nothing_written(directory):
    assert list(directory.iterdir()) == [], list(directory.iterdir())


FAKE_APP = {"fakeapp.py": "app = None\n"}


@pytest.mark.parametrize("args, fragment", [
    (["--app", "no_colon"], "MODULE:ATTR"),
    (["--app", "a:b:c"], "MODULE:ATTR"),
    (["--app", "1mod:app"], "MODULE:ATTR"),
    (["--app", "mod:"], "MODULE:ATTR"),
    (["--default", "noequals"], "OPTION=VALUE"),
    (["--default", "=value"], "OPTION=VALUE"),
    (["--compression", "lzma"], "--compression"),
    (["--compression-level", "23"], "--compression-level"),
    (["--compression", "deflate", "--compression-level", "0"], "--compression-level"),
    (["--compression", "stored", "--compression-level", "3"], "--compression-level"),
    (["--compression-level", "x"], "--compression-level"),
    (["--sources", "maybe"], "--sources"),
    (["--bogus"], "--bogus"),
])
def test_usage_errors_exit_2(tmp_path, run_appbin_pack, stub_host, args, fragment):
    venv = make_venv(tmp_path / "venv", FAKE_APP)
    out = tmp_path / "out"
    out.mkdir()
    # A later --app or --default replaces or joins the valid ones given first.
    result = run_appbin_pack("--venv", venv, "--app", "fakeapp:app", "--host", stub_host,
                             "-o", out / "app.bin", *args)
    assert_error(result, 2, fragment)
    assert_nothing_written(out)


def test_zstd_without_the_zstandard_module(tmp_path, stub_host):
    """A packager Python without zstandard: a message saying what to install,
    exit 1, no output; --compression deflate still works."""
    venv = make_venv(tmp_path / "venv", FAKE_APP)
    out = tmp_path / "out"
    out.mkdir()
    code = ("import sys; sys.modules['zstandard'] = None; "
            f"sys.path.insert(0, {str(ROOT / 'packager')!r}); "
            "from appbin_packer.cli import main; sys.exit(main(sys.argv[1:]))")
    argv = [PYTHON, "-I", "-c", code, "--venv", venv, "--app", "fakeapp:app", "--host",
            stub_host, "-o", out / "app.bin", "--quiet"]
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300)
    assert_error(result, 1, "apt-get install python3-zstandard")
    assert_nothing_written(out)
    result = subprocess.run([str(a) for a in argv] + ["--compression", "deflate"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (out / "app.bin").exists()


def test_missing_required_arguments_exit_2(run_appbin_pack):
    assert_error(run_appbin_pack("--app", "a:b"), 2, "--venv")


def test_missing_venv(pack, tmp_path):
    result, output = pack(tmp_path / "nowhere", app="fakeapp:app")
    assert_error(result, 1, "nowhere", "does not exist")
    assert_nothing_written(output.parent)


def test_directory_without_pyvenv_cfg(pack, tmp_path):
    (tmp_path / "plain").mkdir()
    result, output = pack(tmp_path / "plain", app="fakeapp:app")
    assert_error(result, 1, "not a venv", "pyvenv.cfg")
    assert_nothing_written(output.parent)


def test_venv_of_another_python(pack, tmp_path):
    venv = make_venv(tmp_path / "venv", FAKE_APP, version="3.12.1", python_dir="python3.12")
    result, output = pack(venv, app="fakeapp:app")
    assert_error(result, 1, "Python 3.12", PY_TAG)
    assert_nothing_written(output.parent)


def test_venv_of_a_version_without_a_host(run_appbin_pack, tmp_path):
    """build/appbin-pack without --host picks the host of the venv's version; a
    3.12 venv (no 3.12 host is ever built) gets one line naming the versions
    that can be packed, exit 1, no traceback, nothing written."""
    if not PACK_WRAPPER.exists():
        pytest.skip(f"{PACK_WRAPPER} not configured yet")
    venv = make_venv(tmp_path / "venv", FAKE_APP, version="3.12.1", python_dir="python3.12")
    out = tmp_path / "out"
    out.mkdir()
    result = run_appbin_pack("--venv", venv, "--app", "fakeapp:app", "-o", out / "app.bin")
    assert_error(result, 1, f"venv {venv} is for Python 3.12", f"packs Python {PY_TAG}",
                 "APPBIN_PYTHON_VERSIONS")
    assert "Traceback" not in result.stderr
    assert_nothing_written(out)


def _version_hosts():
    """The X.Y of the hosts build/ has besides its own (build/hosts/X.Y)."""
    return sorted(p.parent.name for p in (ROOT / "build" / "hosts").glob("*/appbin-host.info"))


@pytest.mark.parametrize("tag", _version_hosts() or
                         [pytest.param("3.13", marks=pytest.mark.skip(
                             reason="no build/hosts/X.Y (cmake -DAPPBIN_PYTHON_VERSIONS=3.13)"))])
def test_packer_picks_the_host_of_the_venv_version(tmp_path, tag):
    """build/appbin-pack (running Debian's python3.11) packs a venv made by the
    python of build/hosts/X.Y with that host and that python's stdlib: the
    app.bin runs Python X.Y. The venv's pyvenv.cfg `home` is not looked at."""
    info = dict(line.partition("=")[::2] for line in
                (ROOT / "build" / "hosts" / tag / "appbin-host.info").read_text().splitlines())
    venv = tmp_path / "venv"
    subprocess.run([info["python"], "-m", "venv", "--without-pip", str(venv)], check=True)
    cfg = venv / "pyvenv.cfg"
    cfg.write_text(cfg.read_text().replace(str(Path(info["python"]).parent), "/opt/elsewhere/bin"))
    (venv / "lib" / f"python{tag}" / "site-packages" / "fakeapp.py").write_text("app = None\n")
    output = tmp_path / "app.bin"
    result = subprocess.run([str(ROOT / "build" / "appbin-pack"), "--venv", str(venv), "--app",
                             "fakeapp:app", "-o", str(output), "--quiet"],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    assert Payload(output).manifest_dict()["python_version"] == info["version"]
    assert any(n.startswith("stdlib/lib-dynload/_asyncio.cpython-" + tag.replace(".", ""))
               for n in Payload(output).files)
    run = subprocess.run([str(output), "python", "-c", "import sys; print(sys.version_info[:2])"],
                         capture_output=True, text=True, timeout=60, env=clean_env(), check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(tuple(int(p) for p in tag.split(".")))


def test_extension_built_for_another_python(pack, tmp_path):
    bad = "fastlib/_speedups.cpython-312-x86_64-linux-gnu.so"
    venv = make_venv(tmp_path / "venv", {**FAKE_APP, bad: "not really ELF"})
    result, output = pack(venv, app="fakeapp:app")
    assert_error(result, 1, bad, "Python 3.12")
    assert_nothing_written(output.parent)


@pytest.mark.parametrize("app", ["missing_module:app", "fakeapp.sub:app"])
def test_app_module_not_in_site_packages(pack, tmp_path, app):
    venv = make_venv(tmp_path / "venv", FAKE_APP)
    result, output = pack(venv, app=app)
    assert_error(result, 1, app.partition(":")[0], "not found")
    assert_nothing_written(output.parent)


def test_excluded_app_module_is_not_found(pack, tmp_path):
    venv = make_venv(tmp_path / "venv", FAKE_APP)
    result, output = pack(venv, "--exclude", "site-packages/fakeapp.py", app="fakeapp:app")
    assert_error(result, 1, "fakeapp", "not found")


@pytest.mark.parametrize("where, fragment", [
    ("missing-dir/app.bin", "does not exist"),
    ("is-a-dir", "is a directory"),
    ("/proc/appbin-test/app.bin", "cannot write"),
    ("/proc/app.bin", "cannot write"),
])
def test_unwritable_output(pack, tmp_path, where, fragment):
    venv = make_venv(tmp_path / "venv", FAKE_APP)
    (tmp_path / "is-a-dir").mkdir()
    output = tmp_path / where
    result, _ = pack(venv, app="fakeapp:app", output=output)
    assert_error(result, 1, fragment)
    assert not output.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["is-a-dir", "venv"]
    assert list((tmp_path / "is-a-dir").iterdir()) == []


def test_missing_host(pack, tmp_path):
    venv = make_venv(tmp_path / "venv", FAKE_APP)
    result, output = pack(venv, app="fakeapp:app", host=tmp_path / "no-host")
    assert_error(result, 1, "no-host", "does not exist")
    assert_nothing_written(output.parent)


def test_host_of_another_python(pack, tmp_path):
    venv = make_venv(tmp_path / "venv", FAKE_APP)
    host = write_stub_host(tmp_path / "host312", "3.12.0")
    result, output = pack(venv, app="fakeapp:app", host=host)
    assert_error(result, 1, "Python 3.12.0", "rebuild the host")
    assert_nothing_written(output.parent)


@pytest.mark.parametrize("line, reads", [("payload: none", 1),
                                         ("payload: none (this host reads format 3)", 3)])
def test_host_of_another_payload_format(pack, tmp_path, python_version, line, reads):
    """A host from before format 2 (it does not say which format it reads:
    1) or from after: refused before anything is written."""
    venv = make_venv(tmp_path / "venv", FAKE_APP)
    host = tmp_path / "host"
    host.write_text(f'#!/bin/sh\necho "appbin {VERSION}"\necho "python {python_version}"\n'
                    f'echo "{line}"\n')
    host.chmod(0o755)
    result, output = pack(venv, app="fakeapp:app", host=host)
    assert_error(result, 1, f"reads payload format {reads}", "writes format 2", "rebuild the host")
    assert_nothing_written(output.parent)


def test_host_without_python_line(pack, tmp_path):
    venv = make_venv(tmp_path / "venv", FAKE_APP)
    host = tmp_path / "not-a-host"
    host.write_text("#!/bin/sh\necho hello\n")
    host.chmod(0o755)
    result, output = pack(venv, app="fakeapp:app", host=host)
    assert_error(result, 1, "python X.Y.Z")
    assert_nothing_written(output.parent)


def test_host_that_already_carries_a_payload(pack, tmp_path, packed):
    venv = make_venv(tmp_path / "venv", FAKE_APP)
    result, output = pack(venv, app="fakeapp:app", host=packed[0])
    assert_error(result, 1, "already carries a payload")
    assert_nothing_written(output.parent)


# --- the default pack of the test venv -------------------------------------------

def test_summary_is_printed(packed):
    out = packed[1].stdout
    for word in ("host", "stdlib", "site-packages", "bundled libs", "total",
                 "biggest distributions", "pydantic"):
        assert word in out, out


def test_output_is_host_plus_archive_plus_trailer(packed, payload, stub_host):
    path = packed[0]
    host = stub_host.read_bytes()
    assert payload.data.startswith(host)
    assert (payload.version, payload.flags, payload.offset) == (2, 0, len(host))
    assert payload.offset + payload.size + 64 == len(payload.data)
    # The trailer's digest is the index's: central directory and end records.
    index = payload.archive_bytes[payload.zip.start_dir:]
    assert hashlib.sha256(index).digest() == payload.sha256
    assert stat.S_IMODE(path.stat().st_mode) == 0o755


def test_zip_entries_are_normalised(payload):
    assert payload.zip.comment == b""
    names = payload.names
    assert names == sorted(names, key=lambda n: n.encode())
    for info in payload.zip.infolist():
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert info.create_system == 3
        # The only extra field: the SHA-256 of the member's record (local
        # header, name, data), which the host checks on first read.
        at = info.header_offset
        name_len, extra_len = struct.unpack("<HH", payload.archive_bytes[at + 26:at + 30])
        data_at = at + 30 + name_len + extra_len
        record = payload.archive_bytes[at:data_at + info.compress_size]
        assert info.extra == struct.pack("<HH", 0x6261, 32) + hashlib.sha256(record).digest(), \
            info.filename
        # Local headers have none, but a stored shared object's pads its data
        # to a page boundary of the file (an alignment field, id 0xd935).
        shared_object = re.search(r"\.so(\.|$)", info.filename) and info.file_size
        if shared_object and info.compress_type == zipfile.ZIP_STORED:
            local_extra = payload.archive_bytes[at + 30 + name_len:data_at]
            assert local_extra[:2] == b"\x35\xd9" and local_extra[4:6] == b"\x00\x10"
            assert local_extra[6:] == bytes(extra_len - 6)
            assert (payload.offset + data_at) % 4096 == 0, info.filename
        else:
            assert extra_len == 0, info.filename
        # Start-up code stored (used in place), other code and the rest zstd
        # by default, stored where that does not shrink the member (see
        # test_startup_code_is_stored for which code is stored).
        code = info.filename.endswith(".pyc") or re.search(r"\.so(\.|$)", info.filename)
        if code:
            assert info.compress_type in (zipfile.ZIP_STORED, ZSTD), info.filename
        elif info.compress_type == zipfile.ZIP_STORED:
            data = payload.read(info.filename)
            assert len(zstandard.ZstdCompressor(level=9).compress(data)) >= len(data), \
                info.filename
        else:
            assert info.compress_type == ZSTD and not info.is_dir(), info.filename
        mode = info.external_attr >> 16
        if info.is_dir():
            assert mode == 0o40755
        elif info.filename.endswith(".so") or ".so." in info.filename.rsplit("/", 1)[-1]:
            assert mode == 0o100755, info.filename
        else:
            assert mode == 0o100644, info.filename


def test_every_directory_has_an_entry(payload):
    names = set(payload.names)
    for name in payload.files:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            assert "/".join(parts[:i]) + "/" in names, name


def test_pyc_beside_every_py_and_no_pycache(payload):
    files = payload.files
    for name in files:
        assert "__pycache__" not in name
        assert not name.endswith((".pyi", ".pyo")), name
        if name.endswith(".py"):
            assert name[:-3] + ".pyc" in files, name
        if name.endswith(".pyc"):
            assert name[:-4] + ".py" in files, name


def _in_target_python(code, *args):
    """Runs `code` in the host's Python (the .pyc files are its bytecode, which
    the tools venv's python may not read): returns its stdout."""
    result = subprocess.run([PYTHON, "-I", "-c", code, *map(str, args)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("member", [
    "stdlib/os.py", "stdlib/asyncio/events.py", "site-packages/fastapi/applications.py",
    "site-packages/appbin_testpkg/boom.py",
])
def test_pyc_is_unchecked_hash_based_with_member_filename(payload, member, tmp_path):
    (tmp_path / "source").write_bytes(payload.read(member))
    (tmp_path / "pyc").write_bytes(payload.read(member[:-3] + ".pyc"))
    out = _in_target_python(textwrap.dedent("""\
        import importlib.util, marshal, sys
        source, pyc = (open(sys.argv[i], "rb").read() for i in (1, 2))
        assert pyc[:4] == importlib.util.MAGIC_NUMBER
        assert int.from_bytes(pyc[4:8], "little") == 0b01
        assert pyc[8:16] == importlib.util.source_hash(source)
        print(marshal.loads(pyc[16:]).co_filename)
        """), tmp_path / "source", tmp_path / "pyc")
    assert out.strip() == member


def test_pyc_runs(payload, tmp_path):
    (tmp_path / "pyc").write_bytes(payload.read("site-packages/appbin_testpkg/boom.pyc"))
    out = _in_target_python(textwrap.dedent("""\
        import marshal, sys, traceback
        namespace = {}
        exec(marshal.loads(open(sys.argv[1], "rb").read()[16:]), namespace)
        try:
            namespace["explode"]("bang")
        except RuntimeError as e:
            assert str(e) == "bang", e
            frame = traceback.extract_tb(e.__traceback__)[-1]
            print(frame.filename, frame.lineno, namespace["RAISE_LINE"])
        """), tmp_path / "pyc")
    filename, lineno, raise_line = out.split()
    assert (filename, lineno) == ("site-packages/appbin_testpkg/boom.py", raise_line)


def test_dist_info_keeps_only_what_runtime_and_licences_need(payload):
    dist_files = [n for n in payload.files if ".dist-info/" in n]
    assert dist_files
    for name in dist_files:
        assert name.rsplit("/", 1)[-1] not in (
            "INSTALLER", "REQUESTED", "direct_url.json", "WHEEL"), name
    testpkg = "site-packages/appbin_testpkg-1.2.3.dist-info/"
    assert testpkg + "METADATA" in payload.files
    assert testpkg + "entry_points.txt" in payload.files
    assert testpkg + "top_level.txt" in payload.files
    assert any(n.startswith(testpkg) and "LICENSE" in n for n in payload.files)
    assert "site-packages/fastapi-0.165.0.dist-info/licenses/LICENSE" in payload.files


def test_record_lists_what_the_archive_holds(payload):
    """Each RECORD is kept, rewritten: exactly the distribution's files that
    are packed (with their hashes), the .pyc beside each .py, nothing else."""
    import csv
    import io
    records = [n for n in payload.files if n.endswith(".dist-info/RECORD")]
    assert "site-packages/appbin_testpkg-1.2.3.dist-info/RECORD" in records
    for record in records:
        rows = list(csv.reader(io.StringIO(payload.read(record).decode())))
        listed = {"site-packages/" + r[0] for r in rows}
        assert all(name in payload.files for name in listed), record
        assert record in listed
        for path, digest, size in rows:
            if digest:
                algo, _, want = digest.partition("=")
                data = payload.read("site-packages/" + path)
                got = base64.urlsafe_b64encode(hashlib.new(algo, data).digest()).rstrip(b"=")
                assert (got.decode(), int(size)) == (want, len(data)), path
            else:
                assert path.endswith((".pyc", "RECORD")), (record, path)
        pys = [r[0] for r in rows if r[0].endswith(".py")]
        assert all(p[:-3] + ".pyc" in {r[0] for r in rows} for p in pys
                   if "site-packages/" + p[:-3] + ".pyc" in payload.files), record
    testpkg = {r[0] for r in csv.reader(io.StringIO(payload.read(
        "site-packages/appbin_testpkg-1.2.3.dist-info/RECORD").decode()))}
    assert {"appbin_testpkg/__init__.py", "appbin_testpkg/__init__.pyc",
            "appbin_testpkg/data/hello.txt"} <= testpkg
    assert not [p for p in testpkg if "__pycache__" in p or p.endswith(
        ("INSTALLER", "REQUESTED", "WHEEL", "direct_url.json"))], testpkg


def test_pip_is_dropped_and_setuptools_kept(payload):
    """pip goes; setuptools is kept like any installed distribution (the test
    venv has Debian's setuptools from `python3.11 -m venv`)."""
    tops = {name.split("/")[1] for name in payload.names if name.startswith("site-packages/")}
    assert not [t for t in tops if t.startswith("pip")], sorted(tops)
    if PY_TAG != "3.11":  # python3.12+ -m venv installs pip only
        assert not [t for t in tops if t.startswith("setuptools")], sorted(tops)
        return
    assert {"setuptools", "pkg_resources", "_distutils_hack",
            "distutils-precedence.pth"} <= tops, sorted(tops)
    assert any(t.startswith("setuptools-") and t.endswith(".dist-info") for t in tops)
    assert "site-packages/pkg_resources/__init__.pyc" in payload.files


def test_package_data_pth_and_namespace_packages(payload):
    files = payload.files
    for name in ("site-packages/appbin_testpkg/data/hello.txt",
                 "site-packages/appbin_testpkg/data/sub/x.json",
                 "site-packages/appbin_test.pth",
                 "site-packages/appbin_extra/extra_mod.pyc",
                 "site-packages/appbin_ns/a/__init__.pyc",
                 "site-packages/appbin_ns/b/__init__.pyc",
                 "site-packages/certifi/cacert.pem"):
        assert name in files, name
    assert "site-packages/appbin_ns/" in payload.names
    assert "site-packages/appbin_ns/__init__.py" not in files


def test_stdlib_layout(payload):
    files = payload.files
    for name in ("stdlib/os.pyc", "stdlib/encodings/utf_8.pyc", "stdlib/LICENSE.txt",
                 DYNLOAD + "_asyncio" + EXT, DYNLOAD + "_ssl" + EXT):
        assert name in files, name
    dropped_dirs = ("test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip",
                    "pydoc_data", "site-packages", "dist-packages")
    for name in files:
        parts = name.split("/")
        if parts[0] != "stdlib":
            continue
        assert parts[1] not in dropped_dirs and not parts[1].startswith("config-3"), name
        assert not {"test", "tests", "idle_test"} & set(parts[1:-1]), name
        assert parts[1] not in ("turtle.py", "sitecustomize.py"), name
        if parts[1] == "lib-dynload":
            assert not re.match(r"(_test|xxlimited|_xxtestfuzz|_ctypes_test)", parts[2]), name


def test_manifest(payload, python_version, test_app):
    lines = payload.manifest()
    assert lines == sorted(lines)
    manifest = payload.manifest_dict()
    assert manifest["format"] == "2"
    assert manifest["appbin_version"] == VERSION
    assert manifest["python_version"] == python_version
    assert manifest["app"] == test_app
    assert manifest["factory"] == "0"
    assert not [k for k in manifest if k.startswith("default.")]


def test_appbin_version_matches_cmake_project():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"project\(appbin VERSION (\S+)", cmake).group(1) == VERSION


def test_preload_lines_and_bundled_libs(payload):
    manifest = payload.manifest_dict()
    preloads = {k[len("preload."):]: v.split() for k, v in manifest.items()
                if k.startswith("preload.")}
    assert preloads[DYNLOAD + "_ctypes" + EXT] == ["appbin/libs/libffi.so.8"]
    # libssl, libcrypto and zlib are left to the system by default
    assert DYNLOAD + "_ssl" + EXT not in preloads
    assert not [n for n in payload.files if n.rsplit("/", 1)[-1] in SYSTEM_LIBS]
    for extension, libs in preloads.items():
        assert extension in payload.files
        for lib in libs:
            assert lib in payload.files, (extension, lib)
    bundled = {n for n in payload.files if n.startswith("appbin/libs/")}
    assert bundled == {lib for libs in preloads.values() for lib in libs
                       if lib.startswith("appbin/libs/")}
    assert not [n for n in bundled if is_glibc(n.rsplit("/", 1)[1])]


SYSTEM_LIBS = ("libssl.so.3", "libcrypto.so.3", "libz.so.1")


def test_system_lib_none_bundles_openssl_in_load_order(pack, test_venv):
    """ld.so's order: _ssl's own DT_NEEDED (libssl, then libcrypto) come first."""
    result, output = pack(test_venv, "--system-lib", "none", "--quiet")
    assert result.returncode == 0, result.stderr
    manifest = Payload(output).manifest_dict()
    ssl = manifest["preload." + DYNLOAD + "_ssl" + EXT].split()
    assert ssl[:2] == ["appbin/libs/libssl.so.3", "appbin/libs/libcrypto.so.3"], ssl
    assert ssl == [f"appbin/libs/{name}" for name, _ in ldd_order(DYNLOAD_DIR / f"_ssl{EXT}")]


def test_site_packages_extensions_get_their_libraries(payload, test_venv):
    """pydantic_core and orjson: a preload line iff they need non-glibc libraries."""
    site = test_venv / "lib" / f"python{PY_TAG}" / "site-packages"
    manifest = payload.manifest_dict()
    for extension in sorted(site.glob("*/*" + EXT)):
        member = "site-packages/" + extension.relative_to(site).as_posix()
        needed = [n for n in read_dynamic(extension).needed if not is_glibc(n)]
        line = manifest.get("preload." + member, "").split()
        assert [lib.rsplit("/", 1)[1] for lib in line] == needed, member


def test_bundled_library_is_the_system_file(payload):
    libffi = payload.read("appbin/libs/libffi.so.8")
    assert libffi == Path("/lib/x86_64-linux-gnu/libffi.so.8").read_bytes()


# --- options ---------------------------------------------------------------------

def test_reproducible(pack, packed, test_venv, tmp_path):
    """Another run, another output path: the same bytes."""
    result, output = pack(test_venv, "--quiet", output=tmp_path / "again.bin")
    assert result.returncode == 0, result.stderr
    assert output.read_bytes() == packed[0].read_bytes()


def test_sources_drop(pack, test_venv):
    result, output = pack(test_venv, "--sources", "drop", "--quiet")
    assert result.returncode == 0, result.stderr
    files = Payload(output).files
    assert "site-packages/fastapi/__init__.pyc" in files
    assert "stdlib/os.pyc" in files
    assert not [n for n in files if n.endswith(".py")]


def test_records_are_laid_out_for_start_up(payload):
    """The manifest and the code cache, the stdlib's start-up code (stored),
    site-packages', other (libraries), then the same for the code start-up
    does not reach (compressed), then the rest, each group by name, one
    record after another from the start to the central directory (the
    directory itself is sorted by name)."""
    def group(info):
        name = info.filename
        if name in ("appbin/manifest", "appbin/codecache"):
            return 0
        if name.endswith(".pyc") or re.search(r"\.so(\.|$)", name):
            group = {"stdlib": 1, "site-packages": 2}.get(name.split("/", 1)[0], 3)
            return group if info.compress_type == zipfile.ZIP_STORED else group + 3
        return 7
    infos = sorted(payload.zip.infolist(), key=lambda i: i.header_offset)
    keys = [(group(i), i.filename.encode()) for i in infos]
    assert keys == sorted(keys)
    at = 0
    for info in infos:
        assert info.header_offset == at, info.filename
        extra_len = struct.unpack("<H", payload.archive_bytes[at + 28:at + 30])[0]
        at += 30 + len(info.orig_filename.encode()) + extra_len + info.compress_size
    assert at == payload.zip.start_dir


_IMPORTED_MEMBERS = """
import json, sys, _appbin, fastapi, APP
prefix = _appbin.archive_path + '/'
members = []
for module in list(sys.modules.values()):
    f = getattr(module, '__file__', None) or ''
    if f.startswith(prefix):
        members.append(f[len(prefix):-3] + '.pyc' if f.endswith('.py') else f[len(prefix):])
print(json.dumps(members))
"""


def test_startup_code_is_stored(pack, test_venv, appbin_host, test_app):
    """The default layout: the code the app's imports reach (statically,
    from its module and the host runtime's) is stored, to be used in place;
    code nothing imports (most of the stdlib) is zstd. --store-all-code
    stores all code; --compress-code none."""
    result, output = pack(test_venv, "--quiet", host=appbin_host)
    assert result.returncode == 0, result.stderr
    run = subprocess.run([output, "python", "-c",
                          _IMPORTED_MEMBERS.replace("APP", test_app.partition(":")[0])],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    imported = json.loads(run.stdout)
    assert len(imported) > 200, imported
    methods = {i.filename: i.compress_type for i in Payload(output).zip.infolist()}
    # All but what is imported by name at run time (.pth lines, codecs):
    # a few modules at most.
    compressed = [m for m in imported if methods.get(m, zipfile.ZIP_STORED) != 0]
    assert len(compressed) <= 3, compressed
    for name in ("stdlib/sqlite3/__init__.pyc", "stdlib/mailbox.pyc",
                 f"stdlib/lib-dynload/_sqlite3{EXT}"):
        assert name in methods and name not in imported, name
        assert methods[name] == ZSTD, name
    code = [n for n in methods if n.endswith(".pyc") or re.search(r"\.so(\.|$)", n)]
    sizes = {}
    for option, want in (("--store-all-code", zipfile.ZIP_STORED), ("--compress-code", ZSTD)):
        result, other = pack(test_venv, "--quiet", option, host=appbin_host,
                             output=output.with_name(option[2:] + ".bin"))
        assert result.returncode == 0, result.stderr
        other_methods = {i.filename: i.compress_type for i in Payload(other).zip.infolist()}
        # (a member that zstd does not shrink is stored)
        assert sum(other_methods[n] == want for n in code) > 0.95 * len(code), option
        sizes[option] = os.path.getsize(other)
    assert sizes["--compress-code"] < os.path.getsize(output) < sizes["--store-all-code"]


@pytest.mark.parametrize("options, methods, ratio", [
    (["--compression", "deflate"], {zipfile.ZIP_DEFLATED}, (1.0, 1.1)),
    (["--compression", "stored"], set(), (1.3, 2.2)),
    (["--compress-code"], {ZSTD}, (0.4, 0.8)),
], ids=["deflate", "stored", "compress-code"])
def test_compression_options(pack, test_venv, payload, appbin_host, options, methods, ratio):
    """deflate: an archive a little bigger than zstd's (the default); stored:
    about 1.75x (start-up code is stored anyway); zstd for the code too:
    about 0.7x.
    Either way app.bin runs, and zipfile checks every member's CRC."""
    result, output = pack(test_venv, *options, "--quiet", host=appbin_host)
    assert result.returncode == 0, result.stderr
    low, high = ratio
    assert low < Payload(output).size / payload.size < high
    payload = Payload(output)
    assert {i.compress_type for i in payload.zip.infolist() if not i.is_dir()} <= \
        methods | {zipfile.ZIP_STORED}
    if ZSTD not in methods:
        assert payload.zip.testzip() is None
    run = subprocess.run([output, "python", "-c", "import fastapi, appbin_testpkg; print('ok')"],
                         capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout) == (0, "ok\n"), run.stderr


def test_compression_level(pack, test_venv, packed):
    """zstd level 1 packs a bigger file than the default 9."""
    result, output = pack(test_venv, "--compression-level", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    assert output.stat().st_size > packed[0].stat().st_size


def test_exclude(pack, test_venv):
    result, output = pack(test_venv, "--quiet", "--exclude", "site-packages/appbin_testpkg/data",
                          "--exclude", "*/sqlite3", "--exclude", "*.pem")
    assert result.returncode == 0, result.stderr
    names = Payload(output).names
    assert not [n for n in names if n.startswith("site-packages/appbin_testpkg/data")]
    assert not [n for n in names if n.startswith("stdlib/sqlite3")]
    assert not [n for n in names if n.endswith(".pem")]
    assert "site-packages/appbin_testpkg/boom.pyc" in names


def test_defaults_and_factory(pack, test_venv):
    result, output = pack(test_venv, "--quiet", "--factory", "--default", "workers=4",
                          "--default", "host=0.0.0.0", "--default", "log.level=debug",
                          app="appbin_testpkg.web:create_app")
    assert result.returncode == 0, result.stderr
    manifest = Payload(output).manifest_dict()
    assert manifest["app"] == "appbin_testpkg.web:create_app"
    assert manifest["factory"] == "1"
    assert manifest["default.workers"] == "4"
    assert manifest["default.host"] == "0.0.0.0"
    assert manifest["default.log.level"] == "debug"


def test_no_bundle_libs(pack, test_venv):
    result, output = pack(test_venv, "--quiet", "--no-bundle-libs")
    assert result.returncode == 0, result.stderr
    unbundled = Payload(output)
    assert not [n for n in unbundled.files if n.startswith("appbin/libs/")]
    assert not [k for k in unbundled.manifest_dict() if k.startswith("preload.")]


# --- venv shapes -------------------------------------------------------------------

SETUPTOOLS_FILES = {
    **dist_info("setuptools", "66.1.1", record=(
        "setuptools/__init__.py", "pkg_resources/__init__.py", "_distutils_hack/__init__.py",
        "distutils-precedence.pth")),
    "setuptools/__init__.py": "", "pkg_resources/__init__.py": "",
    "_distutils_hack/__init__.py": "", "distutils-precedence.pth": "import os\n",
}
SETUPTOOLS_MEMBERS = ("setuptools/__init__.py", "pkg_resources/__init__.py",
                      "_distutils_hack/__init__.py", "distutils-precedence.pth",
                      "setuptools-66.1.1.dist-info/METADATA")


def test_setuptools_is_kept_unless_excluded(pack, tmp_path):
    """Nothing requires setuptools here: it is kept all the same, and --exclude
    removes it as it removes anything."""
    venv = make_venv(tmp_path / "venv", {
        **FAKE_APP, **SETUPTOOLS_FILES, **dist_info("fakeapp", "1.0", record=("fakeapp.py",))})
    result, output = pack(venv, "--quiet", app="fakeapp:app")
    assert result.returncode == 0, result.stderr
    files = Payload(output).files
    for name in SETUPTOOLS_MEMBERS:
        assert f"site-packages/{name}" in files, name
    excludes = ("site-packages/setuptools*", "site-packages/pkg_resources",
                "site-packages/_distutils_hack", "site-packages/distutils-precedence.pth")
    result, output = pack(venv, "--quiet", *[a for e in excludes for a in ("--exclude", e)],
                          app="fakeapp:app", output=tmp_path / "excluded.bin")
    assert result.returncode == 0, result.stderr
    files = Payload(output).files
    assert not [n for n in files if n.split("/")[1] in (
        "setuptools", "pkg_resources", "_distutils_hack", "distutils-precedence.pth",
        "setuptools-66.1.1.dist-info")], sorted(files)


def test_uncompilable_source_is_kept_with_a_warning(pack, tmp_path):
    venv = make_venv(tmp_path / "venv", {**FAKE_APP, "legacy/template.py": 'print "py2"\n'})
    result, output = pack(venv, "--quiet", "--sources", "drop", app="fakeapp:app")
    assert result.returncode == 0, result.stderr
    assert "warning: site-packages/legacy/template.py does not compile" in result.stderr
    files = Payload(output).files
    assert "site-packages/legacy/template.py" in files
    assert "site-packages/legacy/template.pyc" not in files
    assert "site-packages/fakeapp.pyc" in files


def test_pth_pointing_outside_the_venv_warns(pack, tmp_path):
    venv = make_venv(tmp_path / "venv", {**FAKE_APP, "outside.pth": "/opt/elsewhere\n",
                                         "inside.pth": "fakeapp_dir\n"})
    result, output = pack(venv, "--quiet", app="fakeapp:app")
    assert result.returncode == 0, result.stderr
    assert "outside.pth: adds /opt/elsewhere to sys.path" in result.stderr
    assert "inside.pth" not in result.stderr


def test_poetry_bundle_venv(pack, poetry_venv):
    result, output = pack(poetry_venv, app="my_package.web:app")
    assert result.returncode == 0, result.stderr
    bundle = Payload(output)
    assert "site-packages/my_package/web.pyc" in bundle.files
    assert not [n for n in bundle.names if n.startswith("site-packages/pip")]
    assert "preload.site-packages/pydantic_core/_pydantic_core" + EXT in bundle.manifest_dict()


FAKE_DEP = "libfakedep-1a2b3c.so"


def build_extension_with_libs_dir(tmp_path, site):
    """A wheel-like extension: fakeext/_ext.so with RUNPATH $ORIGIN/../fakeext.libs,
    whose library there needs the system's libffi."""
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    (tmp_path / "dep.c").write_text("int fake_dep(void) { return 1; }\n")
    (tmp_path / "ext.c").write_text("int fake_dep(void);\n"
                                    "int PyInit__ext(void) { return fake_dep(); }\n")
    libs, package = site / "fakeext.libs", site / "fakeext"
    libs.mkdir()
    package.mkdir()
    subprocess.run([cc, "-shared", "-fPIC", "-o", libs / FAKE_DEP, tmp_path / "dep.c",
                    f"-Wl,-soname,{FAKE_DEP}", "-Wl,--no-as-needed",
                    "/lib/x86_64-linux-gnu/libffi.so.8"], check=True)
    subprocess.run([cc, "-shared", "-fPIC", "-o", package / f"_ext{EXT}", tmp_path / "ext.c",
                    f"-L{libs}", f"-l:{FAKE_DEP}", "-Wl,--enable-new-dtags",
                    "-Wl,-rpath,$ORIGIN/../fakeext.libs"], check=True)


@pytest.mark.parametrize("bundle", [True, False])
def test_extension_with_a_libs_directory(pack, tmp_path, bundle):
    venv = make_venv(tmp_path / "venv", FAKE_APP)
    build_extension_with_libs_dir(tmp_path, venv / "lib" / f"python{PY_TAG}" / "site-packages")
    args = () if bundle else ("--no-bundle-libs",)
    result, output = pack(venv, "--quiet", *args, app="fakeapp:app")
    assert result.returncode == 0, result.stderr
    packed = Payload(output)
    # ld.so's order: the extension's own need first, then what that needs
    expected = [f"site-packages/fakeext.libs/{FAKE_DEP}"]
    expected += ["appbin/libs/libffi.so.8"] if bundle else []
    manifest = packed.manifest_dict()
    assert manifest[f"preload.site-packages/fakeext/_ext{EXT}"].split() == expected
    assert not [k for k in manifest if "fakeext.libs" in k]
    assert ("appbin/libs/libffi.so.8" in packed.files) == bundle


def test_missing_library_warns(pack, tmp_path):
    venv = make_venv(tmp_path / "venv", FAKE_APP)
    site = venv / "lib" / f"python{PY_TAG}" / "site-packages"
    build_extension_with_libs_dir(tmp_path, site)
    (site / "fakeext.libs" / FAKE_DEP).unlink()
    result, output = pack(venv, "--quiet", app="fakeapp:app")
    assert result.returncode == 0, result.stderr
    assert f"warning: {FAKE_DEP} (needed by " in result.stderr
    assert f"preload.site-packages/fakeext/_ext{EXT}" not in Payload(output).manifest_dict()


# --- NEEDED cycles and ld.so's order ----------------------------------------------

CYC_A, CYC_B = "libcyca-1a2b3c4d.so.1", "libcycb-5e6f7a8b.so.1"
CYC_EXTENSION_SOURCE = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
int cyc_a(int);
static PyObject *depth(PyObject *self, PyObject *arg) {
  long n = PyLong_AsLong(arg);
  if (n == -1 && PyErr_Occurred())
    return NULL;
  return PyLong_FromLong(cyc_a((int)n));
}
static PyMethodDef methods[] = {{"depth", depth, METH_O, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cyc", NULL, -1, methods};
PyMODINIT_FUNC PyInit__cyc(void) { return PyModule_Create(&module); }
"""


def build_cyclic_extension(tmp_path, site):
    """Like pillow 13's wheel: fakecyc/_cyc.so needs fakecyc.libs/CYC_A, which
    needs CYC_B, which needs CYC_A back (and the system's libffi); DT_RPATH
    $ORIGIN/../fakecyc.libs and $ORIGIN, as auditwheel writes them.
    cyc_a(n) and cyc_b(n) call each other: depth(5) == 23."""
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    libs, package = site / "fakecyc.libs", site / "fakecyc"
    libs.mkdir()
    package.mkdir()
    (tmp_path / "a.c").write_text("int cyc_b(int);\n"
                                  "int cyc_a(int n) { return n <= 0 ? 0 : 1 + cyc_b(n - 1); }\n")
    (tmp_path / "b.c").write_text("int cyc_a(int);\n"
                                  "int cyc_b(int n) { return n <= 0 ? 0 : 10 + cyc_a(n - 1); }\n")
    (tmp_path / "ext.c").write_text(CYC_EXTENSION_SOURCE)
    rpath = ["-Wl,--disable-new-dtags", "-Wl,-rpath,$ORIGIN"]

    def shared(output, source, *args):
        subprocess.run([cc, "-shared", "-fPIC", "-o", output, source, f"-L{libs}", *args],
                       check=True)
    # CYC_B first without CYC_A (to link CYC_A against), then for real.
    shared(libs / CYC_B, tmp_path / "b.c", f"-Wl,-soname,{CYC_B}")
    shared(libs / CYC_A, tmp_path / "a.c", f"-Wl,-soname,{CYC_A}", f"-l:{CYC_B}", *rpath)
    shared(libs / CYC_B, tmp_path / "b.c", f"-Wl,-soname,{CYC_B}", f"-l:{CYC_A}",
           "-Wl,--no-as-needed", "/lib/x86_64-linux-gnu/libffi.so.8", *rpath)
    extension = package / f"_cyc{EXT}"
    shared(extension, tmp_path / "ext.c", f"-I{PY_INCLUDE}", f"-l:{CYC_A}",
           "-Wl,--disable-new-dtags", "-Wl,-rpath,$ORIGIN/../fakecyc.libs")
    assert CYC_A in read_dynamic(libs / CYC_B).needed
    assert CYC_B in read_dynamic(libs / CYC_A).needed
    return extension


def expected_preload(extension, site):
    """The preload line ld.so's own order gives (ldd), as members."""
    members = []
    for name, where in ldd_order(extension):
        path = Path(where)
        members.append(f"site-packages/{path.relative_to(site)}" if path.is_relative_to(site)
                       else f"appbin/libs/{name}")
    return members


@pytest.fixture
def cyclic_venv(tmp_path):
    venv = make_venv(tmp_path / "venv", FAKE_APP)
    site = venv / "lib" / f"python{PY_TAG}" / "site-packages"
    extension = build_cyclic_extension(tmp_path, site)
    return venv, site, extension


def test_needed_cycle_is_packed_in_ld_so_order(pack, cyclic_venv):
    venv, site, extension = cyclic_venv
    result, output = pack(venv, "--quiet", app="fakeapp:app")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    packed = Payload(output)
    line = packed.manifest_dict()[f"preload.site-packages/fakecyc/_cyc{EXT}"].split()
    assert line == [f"site-packages/fakecyc.libs/{CYC_A}", f"site-packages/fakecyc.libs/{CYC_B}",
                    "appbin/libs/libffi.so.8"]
    assert line == expected_preload(extension, site)
    assert "appbin/libs/libffi.so.8" in packed.files


def test_load_order_is_ld_so_order():
    """Every lib-dynload module: the libraries and their order are ldd's."""
    resolver = DependencyResolver()
    modules = sorted(DYNLOAD_DIR.glob(f"*{EXT}"))
    assert len(modules) > 30
    for module in modules:
        ours = [str(p) for p in resolver.load_order(module)]
        assert ours == [where for _, where in ldd_order(module)], module


def test_load_order_of_a_cycle_is_ld_so_order(cyclic_venv):
    venv, site, extension = cyclic_venv
    resolver = DependencyResolver()
    ours = [str(p) for p in resolver.load_order(extension)]
    assert ours == [where for _, where in ldd_order(extension)]
    # The libraries' own walks see the cycle from the other end.
    assert [p.name for p in resolver.load_order(site / "fakecyc.libs" / CYC_B)] == \
        [CYC_A, "libffi.so.8"]
    assert not resolver.missing


def cyc_run(app, *wrapper, **env):
    """app.bin python printing depth(5), in the test environment plus `env`."""
    code = "import fakecyc._cyc as c; print(c.depth(5))"
    return subprocess.run([*wrapper, str(app), "python", "-c", code], capture_output=True,
                          text=True, timeout=120, env=clean_env(**env), check=False)


def test_needed_cycle_loads_from_app_bin(pack, cyclic_venv, appbin_host, tmp_path):
    """Both libraries of the cycle (and libffi) load from memfds in one go,
    and each calls into the other."""
    venv, site, extension = cyclic_venv
    result, output = pack(venv, "--quiet", app="fakeapp:app", host=appbin_host)
    assert result.returncode == 0, result.stderr
    run = cyc_run(output, APPBIN_LOG_LEVEL="debug")
    assert (run.returncode, run.stdout) == (0, "23\n"), run.stderr
    preloaded = [line.split()[3] for line in run.stderr.splitlines()
                 if line.startswith("appbin: debug: preloaded ") and "_cyc" in line]
    assert preloaded == expected_preload(extension, site), run.stderr
    quiet = cyc_run(output)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "23\n", "")


def test_needed_cycle_loads_from_the_private_directory(pack, cyclic_venv, appbin_host):
    """Without /proc (an empty tmpfs over it) the libraries come from the
    private directory, with the same result."""
    venv, _, _ = cyclic_venv
    if b"__asan_init" in appbin_host.read_bytes():
        pytest.skip("a sanitizer build reads its options from /proc/self/environ")
    result, output = pack(venv, "--quiet", app="fakeapp:app", host=appbin_host)
    assert result.returncode == 0, result.stderr
    bwrap = ["bwrap", "--dev-bind", "/", "/", "--tmpfs", "/proc", "--"]
    probe = subprocess.run([*bwrap, "true"], capture_output=True, check=False)
    if shutil.which("bwrap") is None or probe.returncode != 0:
        pytest.skip("bwrap cannot make a mount namespace here")
    run = cyc_run(output, *bwrap, APPBIN_LOG_LEVEL="debug", TMPDIR="/tmp")
    assert (run.returncode, run.stdout) == (0, "23\n"), run.stderr
    assert "appbin: debug: memfd or /proc unavailable, using /tmp/appbin-" in run.stderr
    assert f"appbin: debug: preloaded site-packages/fakecyc.libs/{CYC_B}" in run.stderr


def test_excluded_member_of_a_cycle_fails_with_its_name(pack, cyclic_venv, appbin_host):
    """One library of the cycle left out with --exclude: a packing warning,
    then one ImportError naming the extension and the missing library."""
    venv, _, _ = cyclic_venv
    result, output = pack(venv, "--quiet", "--exclude", f"site-packages/fakecyc.libs/{CYC_B}",
                          app="fakeapp:app", host=appbin_host)
    assert result.returncode == 0, result.stderr
    assert f"needs fakecyc.libs/{CYC_B}, which is excluded" in result.stderr
    run = cyc_run(output)
    assert run.returncode == 1, run.stderr
    assert (f"ImportError: appbin: cannot load the libraries of site-packages/fakecyc/_cyc{EXT}: "
            f"{CYC_B}: cannot open shared object file") in run.stderr, run.stderr


def test_library_with_an_undefined_symbol_is_named(pack, tmp_path, appbin_host):
    """dlerror names the in-memory path of the library that fails to link; the
    ImportError says which member that is."""
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    venv = make_venv(tmp_path / "venv", FAKE_APP)
    site = venv / "lib" / f"python{PY_TAG}" / "site-packages"
    libs, package = site / "fakeundef.libs", site / "fakeundef"
    libs.mkdir()
    package.mkdir()
    lib = "libundef-9f8e7d6c.so.1"
    (tmp_path / "u.c").write_text("int appbin_nowhere(void);\n"
                                  "int cyc_a(int n) { return appbin_nowhere() + n; }\n")
    (tmp_path / "ext.c").write_text(CYC_EXTENSION_SOURCE.replace('"_cyc"', '"_undef"')
                                    .replace("PyInit__cyc", "PyInit__undef"))
    subprocess.run([cc, "-shared", "-fPIC", "-o", libs / lib, tmp_path / "u.c",
                    f"-Wl,-soname,{lib}"], check=True)
    subprocess.run([cc, "-shared", "-fPIC", "-o", package / f"_undef{EXT}", tmp_path / "ext.c",
                    f"-I{PY_INCLUDE}", f"-L{libs}", f"-l:{lib}",
                    "-Wl,-rpath,$ORIGIN/../fakeundef.libs"], check=True)
    result, output = pack(venv, "--quiet", app="fakeapp:app", host=appbin_host)
    assert result.returncode == 0, result.stderr
    run = subprocess.run([str(output), "python", "-c", "import fakeundef._undef"],
                         capture_output=True, text=True, timeout=120, env=clean_env(),
                         check=False)
    assert run.returncode == 1, run.stderr
    last = run.stderr.splitlines()[-1]
    assert re.fullmatch(
        rf"ImportError: appbin: cannot load the libraries of site-packages/fakeundef/_undef{EXT}: "
        rf"(/proc/self/fd/\d+): undefined symbol: appbin_nowhere "
        rf"\(\1 is site-packages/fakeundef\.libs/{re.escape(lib)}\)", last), last


# --- deterministic pyc -------------------------------------------------------------

PYC_PROBE = textwrap.dedent("""\
    import sys
    sys.path.insert(0, {packager!r})
    from appbin_packer.pyc import compile_unchecked_pyc
    keep = [sys.intern(s) for s in {interned!r}]
    source = open({source!r}, "rb").read()
    sys.stdout.buffer.write(compile_unchecked_pyc(source, "stdlib/ftplib.py"))
    """)


def test_pyc_bytes_do_not_depend_on_process_state(tmp_path):
    """ftplib has `x in {'426', '225', '226'}` in two functions: with the strings
    interned beforehand, plain marshal.dumps() writes different bytes."""
    def compile_in_subprocess(interned):
        probe = PYC_PROBE.format(packager=str(ROOT / "packager"), interned=interned,
                                 source=f"{PY_STDLIB}/ftplib.py")
        return subprocess.run([PYTHON, "-I", "-c", probe], capture_output=True,
                              check=True).stdout
    fresh = compile_in_subprocess([])
    assert compile_in_subprocess(["225", "226", "426", "ABOR"]) == fresh
    (tmp_path / "pyc").write_bytes(fresh)
    assert _in_target_python("import marshal, sys; print(marshal.loads(open(sys.argv[1], 'rb')"
                             ".read()[16:]).co_filename)", tmp_path / "pyc").strip() \
        == "stdlib/ftplib.py"


def test_elf_reader_on_lib_dynload():
    info = read_dynamic(f"{PY_DYNLOAD}/_ssl{EXT}")
    assert {"libssl.so.3", "libcrypto.so.3", "libc.so.6"} <= set(info.needed)
    assert read_dynamic(__file__) is None


# --- with the real host -----------------------------------------------------------

def test_pack_with_the_real_host(packed_app, appbin_host, test_app):
    data = packed_app.read_bytes()
    assert data.startswith(appbin_host.read_bytes())
    assert Payload(packed_app).manifest_dict()["app"] == test_app

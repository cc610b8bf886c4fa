"""End-to-end tests of the payload's integrity guarantee (README, "Integrity").

A small venv holding a probe package is packed with the default options
(code stored, so that a flipped byte lands exactly where the test wants it,
inside a string constant of the code that would write a marker file; data,
sources and the manifest zstd-compressed), and a byte is flipped in a
module's code, an extension module, a data file, the manifest, the central
directory and its digests. Each damaged copy must be refused with one line naming the member
(or the index), and no code of a damaged member may run: the marker files
must not exist afterwards. Servers must refuse a damaged member they never
read, before they listen.
"""

import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from hostutil import (DYN, EXT_SUFFIX, PY_TAG, PYTHON, clean_env, copy_with, describe, index_offset, member_offsets, read_trailer,
                      run)

PROBE = {
    "integrity_probe/__init__.py": "",
    # The code whose run the marker files reveal; ".ran" is what gets damaged.
    "integrity_probe/ran.py": 'import os\nopen(os.environ["APPBIN_MARKER"] + ".ran", "w").close()\n',
    "integrity_probe/unused.py": 'import os\nopen(os.environ["APPBIN_MARKER"] + ".unused", "w").close()\n',
    "integrity_probe/data.txt": "probe data: intact\n" * 20,
    "integrity_probe/app.py": (
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'ok'})\n"
        "\n\n"
        "def never_called():  # start-up code for the packer: stored, as the tests want\n"
        "    import integrity_probe.ran, integrity_probe.unused, json\n"),
}
APP = "integrity_probe.app:app"
EXTENSION = f"stdlib/lib-dynload/{DYN}{EXT_SUFFIX}"  # _json's on 3.11


@pytest.fixture(scope="session")
def probe_app(tmp_path_factory, run_appbin_pack, appbin_host):
    """app.bin (default options) of a venv holding only the probe package."""
    root = tmp_path_factory.mktemp("integrity")
    venv = root / "venv"
    subprocess.run([PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / f"python{PY_TAG}" / "site-packages"
    for name, text in PROBE.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    output = root / "app.bin"
    result = run_appbin_pack("--venv", venv, "--app", APP, "--host", appbin_host, "-o", output,
                             "--quiet")
    assert result.returncode == 0, result.stderr
    return Path(os.path.realpath(output))


@pytest.fixture
def damaged(probe_app, tmp_path):
    """damaged(offset) -> a copy of the probe app.bin with that byte flipped."""
    made = []

    def make(offset, mask=0x20):
        made.append(copy_with(probe_app, tmp_path / f"damaged{len(made)}.bin",
                              patch=(offset, mask)))
        return made[-1]
    yield make
    for path in made:
        path.unlink(missing_ok=True)


@pytest.fixture
def marker(tmp_path):
    """The marker prefix the probe modules write to, and the files they made."""
    prefix = tmp_path / "marker"

    def made():
        return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("marker"))
    return prefix, made


def run_probe(app_bin, marker_prefix, *args, timeout=60):
    env = clean_env(APPBIN_MARKER=marker_prefix)
    return run([app_bin, *args], env=env, timeout=timeout)


def assert_refused(result, *fragments):
    """Exit status 1 and one `app.bin: error:` line holding every fragment."""
    assert result.returncode == 1, describe(result)
    lines = [line for line in result.stderr.splitlines() if line.startswith("app.bin: error: ")]
    assert len(lines) == 1, describe(result)
    for fragment in fragments:
        assert fragment in lines[0], describe(result)
    assert "Traceback" not in result.stderr, describe(result)


def data_offset_of(app_bin, member, needle=None):
    """File offset of `needle` inside a stored member's data (the middle of
    the data, stored or compressed, without one)."""
    _, start, size = member_offsets(app_bin, member)
    with open(app_bin, "rb") as f:
        f.seek(start)
        data = f.read(size)
    if needle is None:
        return start + size // 2
    at = data.find(needle)
    assert at >= 0, f"{needle!r} not in {member}"
    return start + at


# ---- the intact file --------------------------------------------------------------


def test_the_probe_runs_from_an_intact_file(probe_app, marker):
    prefix, made = marker
    # What the damage tests rely on: code stored, data and manifest zstd.
    archive = zipfile.ZipFile(probe_app)
    methods = {name: archive.getinfo(name).compress_type for name in (
        "site-packages/integrity_probe/ran.pyc", EXTENSION, "stdlib/json/__init__.pyc",
        "site-packages/integrity_probe/data.txt", "appbin/manifest")}
    # _json (3.11) is imported at start-up, so stored; 3.13's stand-in
    # (_zoneinfo, _json being built in) is not, so compressed like other code
    # that start-up does not import
    assert list(methods.values()) == [0, 0 if DYN == "_json" else 93, 0, 93, 93], methods
    result = run_probe(probe_app, prefix, "python", "-c",
                       "import integrity_probe.ran, json, importlib.resources as r; "
                       "print(r.files('integrity_probe').joinpath('data.txt').read_text()[:18])")
    assert result.returncode == 0, describe(result)
    assert result.stdout == "probe data: intact\n"
    assert made() == ["marker.ran"]


# ---- a damaged member is refused when read, and none of its code runs ---------------


def test_damaged_module_code_never_runs(probe_app, damaged, marker):
    prefix, made = marker
    # ".ran" -> ".rAn" in the code object's constants: unverified, the module
    # would still run (and write marker.rAn).
    bad = damaged(data_offset_of(probe_app, "site-packages/integrity_probe/ran.pyc", b".ran") + 2)
    code = ("try:\n    import integrity_probe.ran\nexcept BaseException:\n    pass\n"
            "print('survived')")
    result = run_probe(bad, prefix, "python", "-c", code)
    assert_refused(result, str(bad), "member site-packages/integrity_probe/ran.pyc is damaged")
    assert "survived" not in result.stdout  # the damage cannot be caught and ignored
    assert made() == []


@pytest.mark.parametrize("member,code", [
    ("stdlib/json/__init__.pyc", "import json"),
    (EXTENSION, f"import {DYN}"),
    # the pack-time code cache: read at the first exec() of a string
    ("appbin/codecache", "exec('x = 1')"),
], ids=["stdlib-module", "extension-module", "code-cache"])
def test_damaged_member_is_refused_when_read(probe_app, damaged, marker, member, code):
    prefix, made = marker
    bad = damaged(data_offset_of(probe_app, member))
    result = run_probe(bad, prefix, "python", "-c", f"{code}\nprint('read it')")
    assert_refused(result, f"member {member} is damaged or was modified")
    assert result.stdout == ""
    # What needs no damaged member still works: python mode checks what it reads.
    result = run_probe(bad, prefix, "python", "-c", "import integrity_probe.ran")
    assert result.returncode == 0, describe(result)
    assert made() == ["marker.ran"]


def test_damaged_data_file_is_eio_naming_it(probe_app, damaged, marker):
    """A data file read by path (here through importlib.resources) is not code:
    like a bad sector of a disk, the read fails with EIO, one line names the
    member, and none of its bytes reach the program, which may carry on."""
    prefix, made = marker
    member = "site-packages/integrity_probe/data.txt"
    bad = damaged(data_offset_of(probe_app, member))
    code = ("import errno, importlib.resources as r\n"
            "try:\n"
            "    r.files('integrity_probe').joinpath('data.txt').read_text()\n"
            "    print('read it')\n"
            "except OSError as exc:\n"
            "    print(errno.errorcode[exc.errno])\n"
            "import integrity_probe.ran")
    result = run_probe(bad, prefix, "python", "-c", code)
    assert result.returncode == 0, describe(result)
    assert result.stdout.splitlines() == ["EIO"], describe(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("app.bin: error: "), describe(result)
    assert f"member {member} is damaged or was modified" in lines[0], describe(result)
    assert made() == ["marker.ran"]


def test_damaged_local_header_is_refused(probe_app, damaged):
    header, _, _ = member_offsets(probe_app, "stdlib/json/__init__.pyc")
    bad = damaged(header + 14, 0x01)  # the CRC-32 field of the local header
    assert_refused(run([bad, "python", "-c", "import json"]), "stdlib/json/__init__.pyc",
                   "damaged")


# ---- metadata ------------------------------------------------------------------------


def test_damaged_manifest_is_refused_by_every_command(probe_app, damaged):
    bad = damaged(data_offset_of(probe_app, "appbin/manifest"))
    for argv in (["--version"], ["python", "-c", "pass"], ["--port", "0"], ["healthcheck"]):
        assert_refused(run([bad, *argv], timeout=30), "member appbin/manifest is damaged")


def _index_spots(app_bin):
    """Offsets in the index: a central directory entry's name, a digest
    (extra field) and the end record."""
    start = index_offset(app_bin)
    with open(app_bin, "rb") as f:
        f.seek(start)
        index = f.read(os.path.getsize(app_bin) - 64 - start)
    name = index.find(b"stdlib/json/__init__.pyc")
    digest = index.find(b"ab\x20\x00", name)  # the digest field after that name
    assert name > 0 and digest > name
    return {"entry-name": start + name, "digest": start + digest + 4 + 9,
            "end-record": os.path.getsize(app_bin) - 64 - 10}


@pytest.mark.parametrize("where", ["entry-name", "digest", "end-record"])
@pytest.mark.parametrize("argv", [["--version"], ["python", "-c", "import integrity_probe.ran"],
                                  ["--port", "0"]], ids=["version", "python", "serve"])
def test_damaged_index_is_refused_before_anything_runs(probe_app, damaged, marker, where, argv):
    prefix, made = marker
    bad = damaged(_index_spots(probe_app)[where], 0x01)
    result = run_probe(bad, prefix, *argv, timeout=30)
    assert_refused(result, str(bad), "index is damaged")
    assert made() == []


def test_damaged_trailer_digest_is_refused(probe_app, damaged):
    bad = damaged(os.path.getsize(probe_app) - 1, 0x01)
    assert_refused(run([bad, "--version"]), "index is damaged")


def test_old_format_is_refused_with_what_to_do(probe_app, damaged):
    bad = damaged(os.path.getsize(probe_app) - 64 + 8, 0x03)  # format 2 -> 1
    assert_refused(run([bad, "--version"]), "format version 1 is not supported",
                   "this host reads 2", "appbin-pack")


# ---- what reads only the index and the manifest -------------------------------------


def test_version_and_help_read_no_member_but_the_manifest(probe_app, damaged):
    bad = damaged(data_offset_of(probe_app, "stdlib/json/__init__.pyc"))
    result = run([bad, "--version"])
    assert result.returncode == 0, describe(result)
    assert "payload: format 2" in result.stdout
    assert run([bad, "--help"]).returncode == 0
    # healthcheck probes a server (none here): it fails on the connection,
    # not on the damage it never reads.
    result = run([bad, "healthcheck", "--port", "1", "--health-timeout", "1"])
    assert result.returncode == 1 and "damaged" not in result.stderr, describe(result)


# ---- servers -------------------------------------------------------------------------


def _serve(app_bin, marker_prefix, *args):
    """Starts `app.bin --port 0 ARGS`; returns the process and its stderr
    up to the "running on" line, or all of it if it exits."""
    proc = subprocess.Popen([str(app_bin), "--port", "0", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            env=clean_env(APPBIN_MARKER=marker_prefix))
    lines = []
    deadline = time.monotonic() + 60
    for line in proc.stderr:
        lines.append(line)
        if "running on" in line or time.monotonic() > deadline:
            break
    return proc, "".join(lines)


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_intact_server_serves(probe_app, marker):
    proc, err = _serve(probe_app, marker[0])
    try:
        assert "running on" in err, err
    finally:
        _stop(proc)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_server_refuses_damage_it_never_reads(probe_app, damaged, marker, workers):
    prefix, made = marker
    bad = damaged(data_offset_of(probe_app, "site-packages/integrity_probe/unused.pyc",
                                 b".unused") + 2)
    proc, err = _serve(bad, prefix, "--workers", workers)
    try:
        rc = proc.wait(timeout=60)
    finally:
        _stop(proc)
    err += proc.stderr.read()
    assert rc == 1, err
    assert "running on" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("app.bin: error: ")]
    assert len(errors) == 1, err
    assert "member site-packages/integrity_probe/unused.pyc is damaged" in errors[0], err
    assert made() == []
    # `app.bin python` never reads it: it runs.
    result = run_probe(bad, prefix, "python", "-c", "print('fine')")
    assert result.returncode == 0 and result.stdout == "fine\n", describe(result)


def test_server_refuses_damage_in_the_archive_s_last_byte(probe_app, tmp_path, marker):
    """The byte before the index (the end of the last member's data, which a
    server does not read): the whole check finds it."""
    prefix, made = marker
    offset, _, _ = read_trailer(probe_app)
    spot = index_offset(probe_app) - 1
    assert spot > offset
    bad = copy_with(probe_app, tmp_path / "tail.bin", patch=(spot, 0x01))
    proc, err = _serve(bad, prefix)
    try:
        rc = proc.wait(timeout=60)
    finally:
        _stop(proc)
    err += proc.stderr.read()
    assert rc == 1 and "running on" not in err and "is damaged" in err, err
    assert made() == []
    bad.unlink()


# ---- python mode with the prefetching check running ------------------------------

MANY_IMPORTS = ("import asyncio, json, email.message, http.client, decimal, logging, "
                "argparse, unittest, xml.etree.ElementTree, sqlite3, zipfile, tarfile, csv")


def test_prefetch_does_not_stop_a_program_over_damage_it_never_reads(probe_app, damaged,
                                                                       marker):
    """Enough imports start the second thread, which hashes every member,
    the damaged one too: it reports nothing, the program runs to its end."""
    prefix, made = marker
    bad = damaged(data_offset_of(probe_app, "site-packages/integrity_probe/unused.pyc",
                                 b".unused") + 2)
    code = f"{MANY_IMPORTS}\nimport time; time.sleep(0.3)\nprint('done')"
    result = run_probe(bad, prefix, "python", "-c", code)
    assert result.returncode == 0 and result.stdout == "done\n", describe(result)
    assert made() == []


def test_prefetch_does_not_hide_damage_a_program_reads(probe_app, damaged, marker):
    """The same, then the damaged module is imported: refused as ever."""
    prefix, made = marker
    bad = damaged(data_offset_of(probe_app, "site-packages/integrity_probe/ran.pyc", b".ran") + 2)
    code = f"{MANY_IMPORTS}\nimport time; time.sleep(0.3)\nimport integrity_probe.ran"
    result = run_probe(bad, prefix, "python", "-c", code)
    assert_refused(result, "member site-packages/integrity_probe/ran.pyc is damaged")
    assert made() == []

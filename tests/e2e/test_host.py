"""End-to-end tests of the host: the payload check, the command line and the
isolated interpreter of `app.bin python`.

Every test runs the real app.bin (the test venv packed with build/appbin-host)
in a subprocess and looks at what it printed and how it exited. Importer
checks are in test_host_importer.py, read-only and no-Python environments in
test_host_sandbox.py.
"""

import json
import os
import re
import shutil
import signal
import subprocess

import pytest

from hostutil import (CPYTHON_TAG, DYN, PY_TAG, app_bin_fixture, clean_env, copy_with, debian_python, describe,
                      index_offset, index_sha256, python, python_c, read_trailer, run)

app_bin = pytest.fixture(scope="session")(app_bin_fixture)


def assert_one_line_error(result, *fragments):
    """Exit status 1, nothing on stdout, one `app.bin: error: ...` line on
    stderr holding every fragment, and no Python traceback."""
    assert result.returncode == 1, describe(result)
    assert result.stdout == "", describe(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, describe(result)
    assert lines[0].startswith("app.bin: error: "), describe(result)
    for fragment in fragments:
        assert fragment in lines[0], describe(result)
    assert "Traceback" not in result.stderr


# ---- payload ---------------------------------------------------------------


def test_version_describes_host_and_payload(app_bin, python_version, test_app):
    result = run([app_bin, "--version"])
    assert result.returncode == 0, describe(result)
    lines = result.stdout.splitlines()
    assert len(lines) == 5, describe(result)
    assert re.fullmatch(r"appbin \d+\.\d+\.\d+\S*", lines[0]), lines
    assert lines[1] == f"python {python_version}"
    offset, size, sha = read_trailer(app_bin)
    assert sha.hex() == index_sha256(app_bin)
    assert lines[2] == f"payload: format 2, {size} bytes, index sha256 {sha.hex()}"
    assert re.fullmatch(rf"packed by: appbin-pack \S+ \(stdlib {re.escape(python_version)}\)",
                        lines[3]), lines
    assert lines[4] == f"app: {test_app}"
    assert offset + size + 64 == app_bin.stat().st_size


def test_help(app_bin):
    result = run([app_bin, "--help"])
    assert result.returncode == 0, describe(result)
    assert "python [ARGS]" in result.stdout and "--app" in result.stdout


@pytest.fixture
def damaged_copy(app_bin, tmp_path):
    """damaged_copy(**how) -> a modified copy of app.bin (see copy_with); the
    copies (60 MB each) are deleted after the test."""
    made = []

    def make(**how):
        made.append(copy_with(app_bin, tmp_path / f"app{len(made)}.bin", **how))
        return made[-1]
    yield make
    for path in made:
        path.unlink(missing_ok=True)


def _flip_offset(app_bin, where):
    offset, size, _ = read_trailer(app_bin)
    return {"index-start": index_offset(app_bin),
            "index-middle": (index_offset(app_bin) + offset + size) // 2,
            "archive-end": offset + size - 1}[where]


# Damaged members: test_integrity.py. The index is checked before anything.
@pytest.mark.parametrize("mode,where", [
    ("python", "index-start"), ("python", "index-middle"), ("python", "archive-end"),
    ("serve", "index-middle"), ("version", "index-middle")])
def test_flipped_byte_in_index_is_refused_before_python_runs(app_bin, damaged_copy, tmp_path,
                                                             mode, where):
    damaged = damaged_copy(patch=_flip_offset(app_bin, where))
    marker = tmp_path / "python-ran"
    argv = {"python": [damaged, "python", "-c", f"open({str(marker)!r}, 'w')"],
            "serve": [damaged, "--port", "0"],
            "version": [damaged, "--version"]}[mode]
    result = run(argv, timeout=30)
    assert_one_line_error(result, "index is damaged", str(damaged))
    assert not marker.exists()


def test_damaged_trailer_checksum_is_refused(app_bin, damaged_copy):
    size = app_bin.stat().st_size
    damaged = damaged_copy(patch=size - 1)  # the last byte of the index digest
    assert_one_line_error(python(damaged, "-c", "pass"), "index is damaged")


def test_unknown_payload_format_is_refused(app_bin, damaged_copy):
    size = app_bin.stat().st_size
    damaged = damaged_copy(patch=(size - 64 + 8, 0x01))  # format version 3
    assert_one_line_error(python(damaged, "-c", "pass"), "format version 3", "not supported")


def test_truncated_copy_is_refused(app_bin, damaged_copy):
    # The end (with the trailer) is gone: the file no longer carries a payload.
    truncated = damaged_copy(truncate_to=app_bin.stat().st_size // 2)
    assert_one_line_error(python(truncated, "-c", "pass"), "no payload", str(truncated))


def test_archive_with_a_hole_is_refused(app_bin, damaged_copy):
    # The trailer survives but the archive lost 4 KiB in the middle.
    offset, size, _ = read_trailer(app_bin)
    start = offset + size // 2
    damaged = damaged_copy(cut=(start, start + 4096))
    assert_one_line_error(python(damaged, "-c", "pass"), "truncated or damaged")


@pytest.mark.parametrize("argv", [["python", "-c", "1"], ["--port", "0"]])
def test_bare_host_says_it_has_no_payload(appbin_host, argv):
    result = run([appbin_host, *argv], timeout=30)
    assert_one_line_error(result, "has no payload", "appbin-pack",
                          os.path.realpath(appbin_host))


def test_bare_host_version(appbin_host, python_version):
    result = run([appbin_host, "--version"])
    assert result.returncode == 0, describe(result)
    assert result.stdout.splitlines()[1:] == [f"python {python_version}",
                                              "payload: none (this host reads format 2)"]


def test_strip_drops_the_payload(app_bin, damaged_copy):
    """`strip` rewrites the ELF file and leaves the appended payload out: the
    result is a bare host, which says so (documented: do not strip app.bin)."""
    strip = shutil.which("strip")
    if not strip:
        pytest.skip("strip (binutils) is not installed")
    stripped = damaged_copy()
    subprocess.run([strip, str(stripped)], check=True, capture_output=True)
    assert stripped.stat().st_size < app_bin.stat().st_size - read_trailer(app_bin)[1]
    assert_one_line_error(python(stripped, "-c", "pass"), "has no payload")
    assert "payload: none" in run([stripped, "--version"]).stdout


# ---- the interpreter -------------------------------------------------------


def test_sys_executable_and_prefixes_are_app_bin(app_bin):
    out = python_c(app_bin, "import sys, json; print(json.dumps([sys.executable, sys.prefix, "
                            "sys.base_prefix, sys.exec_prefix, sys._base_executable]))")
    assert json.loads(out) == [str(app_bin)] * 5


@pytest.mark.parametrize("directory", ["plain", "with:colon"])
def test_prefixes_in_any_directory(app_bin, tmp_path, directory):
    """Wherever app.bin lies, Python's paths all name it (Python reads its home
    as "prefix:exec_prefix", so the host gives it none when the path has a
    ':'), and nothing says venv (prefix == base_prefix)."""
    target = tmp_path / directory / "app.bin"
    target.parent.mkdir()
    shutil.copy2(app_bin, target)
    out = python_c(target, "import sys, json, sysconfig; print(json.dumps([sys.executable, "
                           "sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, "
                           "sysconfig.get_paths()['purelib'], sys.path[1:4]]))")
    exe = str(target)
    assert json.loads(out) == [exe] * 5 + [f"{exe}/site-packages", [
        f"{exe}/stdlib", f"{exe}/stdlib/lib-dynload", f"{exe}/site-packages"]]


def test_sys_flags_in_python_mode(app_bin):
    out = python_c(app_bin, "import sys, json; print(json.dumps(dict((k, getattr(sys.flags, k)) "
                            "for k in dir(sys.flags) if not k.startswith('_') "
                            "and not callable(getattr(sys.flags, k)))))")
    flags = json.loads(out)
    assert flags["ignore_environment"] == 1
    assert flags["no_user_site"] == 1
    assert flags["no_site"] == 1
    assert flags["dont_write_bytecode"] == 1
    assert flags["isolated"] == 0 and flags["safe_path"] is False  # like python without -I
    assert flags["optimize"] == 0 and flags["inspect"] == 0 and flags["verbose"] == 0


def test_isolated_flag_in_python_mode(app_bin):
    out = python_c(app_bin, "import sys; print(sys.flags.isolated, sys.flags.safe_path)")
    assert out.split() == ["0", "False"]
    out = python(app_bin, "-I", "-c", "import sys; print(sys.flags.isolated, sys.flags.safe_path,"
                                      " '' in sys.path)")
    assert out.stdout.split() == ["1", "True", "False"], describe(out)


def test_sys_path_is_the_archive(app_bin):
    out = python_c(app_bin, "import sys, json; print(json.dumps(sys.path))")
    paths = json.loads(out)
    assert paths[0] == ""  # -c puts the working directory first, as python does
    prefix = f"{app_bin}/"
    assert paths[1:4] == [prefix + "stdlib", prefix + "stdlib/lib-dynload",
                          prefix + "site-packages"]
    assert all(p.startswith(prefix) for p in paths[1:]), paths


def test_stdlib_comes_from_the_archive(app_bin):
    code = """
import sys, json, os, asyncio, email.mime.text, xml.etree.ElementTree, decimal, _json
outside = {n: m.__file__ for n, m in list(sys.modules.items())
           if getattr(m, "__file__", None) and not m.__file__.startswith(sys.executable + "/")}
print(json.dumps({"json": json.__file__, "os": os.__file__, "_json": _json.__file__,
                  "outside": outside}))
""".replace("_json", DYN)
    info = json.loads(python_c(app_bin, code))
    assert info["json"] == f"{app_bin}/stdlib/json/__init__.py"
    assert info["os"] == f"{app_bin}/stdlib/os.py"
    assert info[DYN].startswith(f"{app_bin}/stdlib/lib-dynload/{DYN}{CPYTHON_TAG}")
    assert info["outside"] == {}


@pytest.fixture
def hostile_env(tmp_path):
    """PYTHON* variables that would change a normal python3.11, each pointing
    at something the test can detect."""
    pp = tmp_path / "pythonpath"
    pp.mkdir()
    (pp / "from_pythonpath.py").write_text("X = 1\n")
    user_base = tmp_path / "home" / ".local"
    user_site = user_base / "lib" / f"python{PY_TAG}" / "site-packages"
    user_site.mkdir(parents=True)
    (user_site / "from_user_site.py").write_text("X = 1\n")
    startup = tmp_path / "startup.py"
    startup.write_text("print('STARTUP RAN')\n")
    env = clean_env(PYTHONPATH=pp, PYTHONHOME=tmp_path / "nohome", PYTHONSTARTUP=startup,
                    PYTHONSAFEPATH="1", PYTHONUSERBASE=user_base, HOME=tmp_path / "home",
                    PYTHONNOUSERSITE=None, PYTHONINSPECT="1", PYTHONOPTIMIZE="2",
                    PYTHONVERBOSE="1", PYTHONWARNINGS="error", PYTHONDEVMODE="1",
                    PYTHONIOENCODING="latin-1")
    return env, pp


def test_python_environment_variables_are_ignored(app_bin, hostile_env, tmp_path):
    env, pp = hostile_env
    script = tmp_path / "scriptdir" / "probe.py"
    script.parent.mkdir()
    (script.parent / "sibling.py").write_text("X = 1\n")
    script.write_text("""
import importlib.util, json, sys, warnings
warnings.warn("only a warning")
found = {m: importlib.util.find_spec(m) is not None
         for m in ("from_pythonpath", "from_user_site", "sibling")}
print(json.dumps({"found": found, "path": sys.path, "prefix": sys.prefix,
                  "flags": [sys.flags.optimize, sys.flags.inspect, sys.flags.verbose,
                            sys.flags.safe_path, sys.flags.dev_mode],
                  "stdout": sys.stdout.encoding, "site": "site" in sys.modules}))
""")
    result = python(app_bin, script, env=env)
    assert result.returncode == 0, describe(result)
    info = json.loads(result.stdout)
    # PYTHONSAFEPATH ignored: the script's directory is on sys.path.
    assert info["found"] == {"from_pythonpath": False, "from_user_site": False, "sibling": True}
    assert str(pp) not in info["path"]
    assert info["path"][0] == str(script.parent)
    assert info["prefix"] == str(app_bin)  # PYTHONHOME ignored
    assert info["flags"] == [0, 0, 0, False, False]
    assert info["stdout"].lower() not in ("latin-1", "iso8859-1")  # PYTHONIOENCODING ignored
    assert info["site"] is False
    assert "STARTUP RAN" not in result.stdout + result.stderr
    assert "import " not in result.stderr  # no PYTHONVERBOSE trace


def test_pythonstartup_is_ignored_by_the_interactive_interpreter(app_bin, hostile_env):
    env, _ = hostile_env
    result = python(app_bin, "-i", input="print('REPL', 6 * 7)\n", env=env)
    assert result.returncode == 0, describe(result)
    assert "REPL 42" in result.stdout
    assert "STARTUP RAN" not in result.stdout + result.stderr


def test_no_user_site(app_bin, hostile_env):
    env, _ = hostile_env
    out = python_c(app_bin, "import sys, site; print(sys.flags.no_user_site, "
                            "bool(site.ENABLE_USER_SITE), "
                            "any('.local' in p for p in sys.path))", env=env)
    assert out.split() == ["1", "False", "False"]


def test_server_mode_does_not_import_from_the_working_directory(app_bin, tmp_path):
    (tmp_path / "cwd_app.py").write_text("async def app(scope, receive, send):\n    pass\n")
    env = clean_env(PYTHONPATH=tmp_path)
    result = run([app_bin, "--app", "cwd_app:app", "--port", "0"], cwd=tmp_path, env=env,
                 timeout=30)
    assert result.returncode == 1, describe(result)
    assert "cannot import module 'cwd_app'" in result.stderr, describe(result)
    assert "Traceback" not in result.stderr
    # The same module is importable by `app.bin python` from that directory.
    assert python_c(app_bin, "import cwd_app; print(cwd_app.__file__)",
                    cwd=tmp_path).strip() == str(tmp_path / "cwd_app.py")


# ---- `app.bin python`: the command line of python3.11 ------------------------


@pytest.mark.parametrize("tz", [None, "Europe/Paris", "America/New_York"])
def test_time_zone_is_the_callers(app_bin, tz):
    """Python sees the caller's TZ, or none, and the zone it names (the host
    once pinned TZ while libzip indexed the archive)."""
    code = "import os, time; print(os.environ.get('TZ'), time.tzname, time.localtime(0).tm_hour)"
    want = subprocess.run([debian_python(), "-I", "-c", code], capture_output=True,
                          text=True, env=clean_env(TZ=tz), check=True).stdout
    assert python_c(app_bin, code, env=clean_env(TZ=tz)) == want


def test_dash_c_and_argv(app_bin):
    out = python_c(app_bin, "import sys, json; print(json.dumps(sys.argv))", "a", "-b", "--c")
    assert json.loads(out) == ["-c", "a", "-b", "--c"]


def test_dash_m_json_tool_on_stdin(app_bin):
    result = python(app_bin, "-m", "json.tool", "--sort-keys", input='{"b": [1, 2], "a": null}')
    assert result.returncode == 0, describe(result)
    assert json.loads(result.stdout) == {"a": None, "b": [1, 2]}
    assert result.stdout.startswith('{\n    "a": null,')


def test_dash_m_argv0_is_the_module_file(app_bin):
    result = python(app_bin, "-m", "timeit", "-n", "1", "-r", "1", "pass")
    assert result.returncode == 0, describe(result)
    assert "1 loop" in result.stdout


def test_script_file_with_its_directory_on_sys_path(app_bin, tmp_path):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "helper_mod.py").write_text("VALUE = 'from the script directory'\n")
    (scripts / "main.py").write_text(
        "import json, sys, helper_mod\n"
        "print(json.dumps([sys.argv, sys.path[0], __file__, __name__, helper_mod.VALUE]))\n")
    result = python(app_bin, scripts / "main.py", "x", "y")
    assert result.returncode == 0, describe(result)
    assert json.loads(result.stdout) == [[str(scripts / "main.py"), "x", "y"], str(scripts),
                                         str(scripts / "main.py"), "__main__",
                                         "from the script directory"]
    # -I: the script directory is not on sys.path any more.
    isolated = python(app_bin, "-I", scripts / "main.py")
    assert isolated.returncode == 1
    assert "No module named 'helper_mod'" in isolated.stderr, describe(isolated)


@pytest.mark.parametrize("code,status", [
    ("import sys; sys.exit(3)", 3),
    ("raise SystemExit(0)", 0),
    ("import os; os._exit(7)", 7),
    ("raise ValueError('x')", 1),
])
def test_exit_status(app_bin, code, status):
    result = python(app_bin, "-c", code)
    assert result.returncode == status, describe(result)


def test_sys_exit_with_a_message(app_bin):
    result = python(app_bin, "-c", "import sys; sys.exit('goodbye')")
    assert result.returncode == 1
    assert result.stderr.strip() == "goodbye"


def test_uncaught_keyboard_interrupt_exits_like_python(app_bin):
    """python3.11 re-raises SIGINT on an uncaught KeyboardInterrupt so that
    its parent sees a death by signal (bpo-1054041); app.bin must too."""
    code = "raise KeyboardInterrupt"
    reference = subprocess.run([debian_python(), "-I", "-c", code], capture_output=True)
    assert reference.returncode == -signal.SIGINT
    result = python(app_bin, "-c", code)
    assert result.returncode == -signal.SIGINT, describe(result)
    assert "KeyboardInterrupt" in result.stderr


@pytest.mark.parametrize("args", [[], ["-"], ["-i"]])
def test_reads_a_program_from_stdin(app_bin, args):
    result = python(app_bin, *args, input="import sys\nprint(6 * 7)\n")
    assert result.returncode == 0, describe(result)
    assert result.stdout.split() == ["42"]


def test_stdin_program_exit_status_and_traceback(app_bin):
    result = python(app_bin, input="x = 1\nprint(1 / 0)\n")
    assert result.returncode == 1
    assert "ZeroDivisionError: division by zero" in result.stderr
    assert 'File "<stdin>", line 2' in result.stderr


def test_dash_x_importtime(app_bin):
    result = python(app_bin, "-X", "importtime", "-c", "import json")
    assert result.returncode == 0, describe(result)
    lines = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    assert lines, describe(result)
    assert any(line.rstrip().endswith("| json") for line in lines), describe(result)


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_python_version_flag(app_bin, python_version, flag):
    result = python(app_bin, flag)
    assert result.returncode == 0, describe(result)
    assert result.stdout.strip() == f"Python {python_version}"


def test_python_help_flag(app_bin):
    result = python(app_bin, "-h")
    assert result.returncode == 0, describe(result)
    assert result.stdout.startswith("usage: ")
    assert "-c cmd" in result.stdout


def test_unknown_python_option_exits_2(app_bin):
    result = python(app_bin, "--no-such-option")
    assert result.returncode == 2
    assert "unknown option --no-such-option" in result.stderr


def test_argv0_named_python_acts_as_python(app_bin, tmp_path):
    link = tmp_path / f"python{PY_TAG}"
    link.symlink_to(app_bin)
    result = run([link, "-c", "import sys; print(sys.executable)"])
    assert result.returncode == 0, describe(result)
    assert result.stdout.strip() == str(app_bin)


def test_leading_dash_option_is_python_mode(app_bin):
    """What multiprocessing and subprocess users pass to sys.executable."""
    result = run([app_bin, "-B", "-c", "import sys; print(sys.argv)"])
    assert result.returncode == 0, describe(result)
    assert result.stdout.strip() == "['-c']"


# ---- text encoding: as python3.11 ------------------------------------------


@pytest.mark.parametrize("locale_env", [{"LANG": "C.UTF-8"}, {"LANG": None}, {"LANG": "C"}],
                         ids=["C.UTF-8", "no-LANG", "LANG=C"])
def test_text_encoding_is_utf8_like_python(app_bin, tmp_path, locale_env):
    """python3.11 (with or without -I) uses UTF-8 for files, the standard
    streams and file names under a UTF-8 locale and, by PEP 538/540, under
    the C/POSIX locale of a bare container; so must app.bin."""
    (tmp_path / "caf\u00e9.txt").write_text("na\u00efve \u20ac\n", encoding="utf-8")
    code = ("import os, sys; print(sys.getfilesystemencoding(), sys.stdout.encoding.lower(), "
            "open('caf\\u00e9.txt').read().strip(), os.listdir('.')[0])")
    env = clean_env(**locale_env)
    reference = subprocess.run([debian_python(), "-I", "-c", code], capture_output=True,
                               env=env, cwd=tmp_path, check=False)
    assert reference.returncode == 0, reference.stderr
    result = python(app_bin, "-c", code, env=env, cwd=tmp_path)
    assert result.returncode == 0, describe(result)
    assert result.stdout.encode() == reference.stdout
    assert result.stdout.split() == ["utf-8", "utf-8", "na\u00efve", "\u20ac", "caf\u00e9.txt"]


def test_app_bin_under_a_non_ascii_path(app_bin, tmp_path):
    where = tmp_path / "d\u00e9j\u00e0 vu"
    where.mkdir()
    copy = where / "app.bin"
    try:
        os.link(app_bin, copy)
    except OSError:
        shutil.copy(app_bin, copy)
    out = python_c(copy, "import sys, json, _json; print(sys.executable); print(json.__file__)")
    assert out.splitlines() == [str(copy), f"{copy}/stdlib/json/__init__.py"]


"""End-to-end tests of the code cache (host/codecache.h,
packager/appbin_packer/codecache.py): appbin-pack runs the packed app.bin
once to record what start-up compiles from strings, and app.bin answers the
same exec()/eval()/compile() calls with the recorded code objects.

A probe package (fixtures/codecache_probe) compiles strings the ways
start-up does (dataclasses, namedtuple, exec with and without a future
import, eval, compile, a source that warns, code raising KeyboardInterrupt);
it is packed with and without the cache, and the same programs run under the
venv's python and both app.bin files must print the same.
"""

import json
import shutil
import signal
import struct
import subprocess
import sys
import zipfile

import pytest

from conftest import FIXTURES
from hostutil import PY_TAG, PYTHON, ROOT, clean_env, describe, run

sys.path.insert(0, str(ROOT / "packager"))
from appbin_packer.codecache import source_hash  # noqa: E402  the host's hash, in Python

APP = "codecache_probe.app:app"
MEMBER = "appbin/codecache"
HEADER = struct.Struct("<8sIIIIQ")
ENTRY = struct.Struct("<QiiiiIIIIII")
PY_FILE_INPUT, PY_EVAL_INPUT = 257, 258
CO_FUTURE_ANNOTATIONS = 0x1000000

# Compiles the probe's strings again after importing it, and prints what the
# code objects do (the same under every interpreter), with the "compile" and
# "exec" audit events those calls raise.
# The probe's import, then the process's hits and misses.
IMPORT_INFO = ("import json, _appbin, codecache_probe.app; "
               "print(json.dumps(_appbin.code_cache_info()))")

OBSERVE = """\
import json, sys, traceback
import codecache_probe.app as app, codecache_probe.plain as plain
from codecache_probe.sources import *
events = []
sys.addaudithook(lambda event, args: events.append(
    [event, args[1] if event == "compile" else type(args[0]).__name__])
    if event in ("compile", "exec") else None)
out = {}
out["future annotations"] = app.future_namespace["f"].__annotations__
out["annotations"] = {k: repr(v) for k, v in plain.namespace["f"].__annotations__.items()}
ns = {}
exec(ANNOTATED, ns)
out["annotations again"] = {k: repr(v) for k, v in ns["f"].__annotations__.items()}
out["point"] = [repr(app.Point(1, 2)), app.Point(1, 2) == app.Point(1, 2),
                app.Point(1) < app.Point(2), hash(app.Point(3, 4)) == hash((3, 4))]
try:
    app.Point(1).x = 2
except Exception as e:
    out["frozen"] = type(e).__name__
out["pair"] = repr(app.Pair(1, 2)._replace(left=3))
out["evaluated"] = [plain.evaluated, eval(EVALUATED)]
code = compile(COMPILED, "<probe>", "eval")
out["compiled"] = [code.co_filename, code.co_name, code.co_names, code.co_consts,
                   code.co_flags, eval(code, {"a": 4, "b": 2})]
out["fresh objects"] = code is not compile(COMPILED, "<probe>", "eval")
exec(compile(TRACEBACK, "<probe-traceback>", "exec"), ns)
try:
    ns["g"]()
except ZeroDivisionError:
    out["traceback"] = traceback.format_exc().splitlines()[-4:]
out["events"] = events
def refuse(event, args):
    if event == "compile" and args[1] == "<probe>":
        raise RuntimeError("refused by an audit hook")
sys.addaudithook(refuse)
try:
    compile(COMPILED, "<probe>", "eval")
except RuntimeError as e:
    out["refused"] = str(e)
try:
    import _appbin
    out["cache"] = _appbin.code_cache_info()
except ImportError:
    pass
print(json.dumps(out, default=repr))
"""


@pytest.fixture(scope="session")
def probe_venv(tmp_path_factory):
    venv = tmp_path_factory.mktemp("codecache") / "venv"
    subprocess.run([PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
    shutil.copytree(FIXTURES / "codecache_probe",
                    venv / "lib" / f"python{PY_TAG}" / "site-packages" / "codecache_probe",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return venv


def _pack(run_appbin_pack, host, venv, output, *args):
    result = run_appbin_pack("--venv", venv, "--app", APP, "--host", host, "-o", output,
                             "--quiet", *args)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="session")
def probe_bins(tmp_path_factory, probe_venv, run_appbin_pack, appbin_host):
    """(app.bin with the code cache, app.bin packed with --no-code-cache)."""
    out = tmp_path_factory.mktemp("codecache-bins")
    cached = _pack(run_appbin_pack, appbin_host, probe_venv, out / "cached.bin")
    assert cached.stderr == ""  # the training run had nothing to report
    _pack(run_appbin_pack, appbin_host, probe_venv, out / "plain.bin", "--no-code-cache")
    return out / "cached.bin", out / "plain.bin"


def read_cache(app_bin):
    """(header fields, [entry dicts]) of app.bin's code cache member."""
    data = zipfile.ZipFile(app_bin).read(MEMBER)
    magic, version, python, level, count, reserved = HEADER.unpack_from(data)
    entries = []
    for i in range(count):
        h, start, flags, feature, optimize, *spans = ENTRY.unpack_from(
            data, HEADER.size + i * ENTRY.size)
        text = [data[off:off + n] for off, n in zip(spans[::2], spans[1::2])]
        entries.append({"hash": h, "start": start, "flags": flags, "feature": feature,
                        "optimize": optimize, "filename": text[0].decode(),
                        "source": text[1].decode("utf-8", "surrogateescape"),
                        "code": text[2]})
    return (magic, version, python, level, reserved), entries


def sources():
    namespace = {}
    exec((FIXTURES / "codecache_probe" / "sources.py").read_text(), namespace)
    return namespace


def outputs_of(code, probe_bins, probe_venv):
    """The JSON that `code` prints under the venv's python, app.bin with the
    cache and app.bin without it, in that order."""
    outputs = []
    for argv in ([probe_venv / "bin" / "python"], [probe_bins[0], "python"],
                 [probe_bins[1], "python"]):
        result = run([*argv, "-c", code], env=clean_env())
        assert result.returncode == 0, describe(result)
        outputs.append(json.loads(result.stdout))
    return outputs


def test_the_cache_holds_what_start_up_compiled(probe_bins):
    assert zipfile.ZipFile(probe_bins[0]).getinfo(MEMBER).compress_type == zipfile.ZIP_STORED
    header, entries = read_cache(probe_bins[0])
    hexversion = run([PYTHON, "-c", "import sys; print(sys.hexversion)"]).stdout.strip()
    assert header == (b"APPBINCC", 1, int(hexversion), 0, 0)
    assert [e["hash"] for e in entries] == sorted(e["hash"] for e in entries)
    src = sources()
    keys = {(e["source"], e["filename"], e["start"]) for e in entries}
    for source, filename, start in [(src["ANNOTATED"], "<string>", PY_FILE_INPUT),
                                    (src["EVALUATED"], "<string>", PY_EVAL_INPUT),
                                    (src["COMPILED"], "<probe>", PY_EVAL_INPUT),
                                    (src["TRACEBACK"], "<probe-traceback>", PY_FILE_INPUT),
                                    (src["INTERRUPT"], "<string>", PY_FILE_INPUT)]:
        assert (source, filename, start) in keys, source
    # the future import of app.py's exec: a second entry for the same source
    annotated = [e["flags"] for e in entries if e["source"] == src["ANNOTATED"]]
    assert sorted(f & CO_FUTURE_ANNOTATIONS for f in annotated) == [0, CO_FUTURE_ANNOTATIONS]
    # dataclasses' and namedtuple's generated code
    assert any("__create_fn__" in e["source"] for e in entries)
    assert any(e["source"].startswith("lambda _cls, left, right:") for e in entries)
    # a source that warns when compiled is not cached
    assert src["WARNS"] not in {e["source"] for e in entries}
    assert MEMBER not in zipfile.ZipFile(probe_bins[1]).namelist()  # --no-code-cache


def test_start_up_is_answered_from_the_cache(probe_bins):
    cached = run([probe_bins[0], "python", "-c", IMPORT_INFO], env=clean_env())
    assert cached.returncode == 0, describe(cached)
    info = json.loads(cached.stdout)
    # every string the import compiles but one: the source that warns
    assert info["state"] == "on" and info["misses"] == 1 and info["hits"] >= 10, info
    assert info["entries"] == len(read_cache(probe_bins[0])[1])
    plain = run([probe_bins[1], "python", "-c", IMPORT_INFO], env=clean_env())
    assert plain.returncode == 0, describe(plain)
    assert json.loads(plain.stdout) == {"state": "off", "entries": 0, "hits": 0, "misses": 0,
                                        "recorded": 0, "regexes": 0, "regex_hits": 0,
                                        "regex_misses": 0}


REGEX_START = {str: -1, bytes: -2}  # host/codecache.h: CODECACHE_START_REGEX_*

# The probe's regular expressions as re.compile() gives them after the
# probe's import (re keeps them), and what they match; in app.bin, also
# whether each is CPython's own pattern (== compares the engine's code).
# re.purge() empties re's own cache first, so that each re.compile() reaches
# re._compiler.compile: in app.bin, the probe's patterns are answered from
# the code cache and the test's own one is not.
REGEX_OBSERVE = """\
import json, re
import codecache_probe.app
from codecache_probe.sources import REGEXES, REGEX_SUBJECTS
try:
    import _appbin
    info = _appbin.code_cache_info
except ImportError:
    info = lambda: {"regex_hits": 0, "regex_misses": 0}
re.purge()
before = info()
out, counts = [], []
for pattern, flags in REGEXES + [("(?P<only>in the test)+", re.I | re.M)]:
    p = re.compile(pattern, flags)
    counts.append([info()[k] - before[k] for k in ("regex_hits", "regex_misses")])
    subject = REGEX_SUBJECTS[type(pattern)]
    out.append([repr(p), p.flags, p.groups, dict(p.groupindex), p.findall(subject),
                [m.groupdict() for m in p.finditer(subject)], p.sub(pattern[:0], subject)])
cpython = getattr(re._compiler.compile, "__self__", [re._compiler.compile])[0]
out.append([cpython(pattern, flags) == re.compile(pattern, flags) for pattern, flags in REGEXES])
out.append(counts)
print(json.dumps(out, default=repr))
"""


def test_the_cache_holds_the_regular_expressions_start_up_compiled(probe_bins):
    """Each of the probe's patterns, keyed by its text, type and flags (a
    re.RegexFlag is given as its int), under the hash the host computes."""
    _, entries = read_cache(probe_bins[0])
    for e in entries:
        assert e["hash"] == source_hash(e["source"].encode("utf-8", "surrogateescape")), e
    regexes = {(e["source"], e["start"], e["flags"]): e for e in entries if e["start"] < 0}
    src = sources()
    for pattern, flags in src["REGEXES"]:
        text = pattern.decode() if isinstance(pattern, bytes) else pattern
        entry = regexes.pop((text, REGEX_START[type(pattern)], flags))
        assert (entry["filename"], entry["feature"], entry["optimize"]) == ("", 0, 0)
    # the runtime's own imports compile the rest; a pattern that warns is left out
    assert all(not e["source"].startswith(src["REGEX_WARNS"]) for e in regexes.values())
    assert src["REGEX_WARNS"] not in {e["source"] for e in entries}


def test_cached_regular_expressions_are_cpythons(probe_bins, probe_venv):
    """The venv's python, app.bin with the cache and without it give the
    same patterns for the probe's regular expressions (and for one only the
    test compiles); in app.bin each is the pattern CPython's compile()
    gives, answered from the cache."""
    outputs = outputs_of(REGEX_OBSERVE, probe_bins, probe_venv)
    n = len(sources()["REGEXES"])
    # [hits, misses] after each compile: one hit per probe pattern, then a miss
    cached_counts, cached_same = outputs[1].pop(), outputs[1].pop()
    assert cached_counts == [[k, 0] for k in range(1, n + 1)] + [[n, 1]]
    plain_counts, plain_same = outputs[2].pop(), outputs[2].pop()
    venv_counts, venv_same = outputs[0].pop(), outputs[0].pop()
    assert plain_counts == venv_counts == [[0, 0]] * (n + 1)
    assert cached_same == plain_same == venv_same == [True] * n
    assert outputs[1] == outputs[0]
    assert outputs[2] == outputs[0]
    assert outputs[0][1][3] == {"key": 1, "value": 2}
    assert outputs[0][0][4] == [["2024", "05", "06"], ["1999", "12", ""]]


def test_a_regular_expression_that_warns_warns_every_time(probe_bins, probe_venv):
    code = ("import re, warnings, codecache_probe.app\n"
            "from codecache_probe.sources import REGEX_WARNS\n"
            "warnings.simplefilter('error')\n"
            "re.purge()\n"
            "try:\n    re.compile(REGEX_WARNS)\n"
            "except FutureWarning as e:\n    print(type(e).__name__, e)\n")
    venv = run([probe_venv / "bin" / "python", "-c", code], env=clean_env())
    assert venv.returncode == 0, describe(venv)
    assert venv.stdout.startswith("FutureWarning Possible nested set")
    for app_bin in probe_bins:
        result = run([app_bin, "python", "-c", code], env=clean_env())
        assert result.returncode == 0, describe(result)
        assert result.stdout == venv.stdout


def test_cached_code_objects_have_their_tuples_untracked(probe_bins):
    """A code object from the cache has its atomic tuples untracked as an
    imported module's are (host/codeconst.h); compiled, they wait for the
    collector."""
    code = ("import gc; gc.disable(); import codecache_probe.app as a; "
            "print(gc.is_tracked(a.Point.__eq__.__code__.co_names))")
    tracked = [run([app_bin, "python", "-c", code], env=clean_env()) for app_bin in probe_bins]
    assert [r.stdout.strip() for r in tracked] == ["False", "True"], tracked


def test_cached_code_behaves_as_compiled_code(probe_bins, probe_venv):
    """The venv's python, app.bin with the cache and without it print the
    same for the same calls: annotations under each future, dataclass and
    namedtuple methods, results, code object fields, a fresh object per
    compile(), traceback lines and the audit events (a hook can refuse a
    cached compile as it refuses a compile)."""
    outputs = outputs_of(OBSERVE, probe_bins, probe_venv)
    cache = outputs[1].pop("cache")
    assert cache["misses"] == 1, cache  # the calls after the import were all hits
    outputs[2].pop("cache")
    assert outputs[1] == outputs[0]
    assert outputs[2] == outputs[0]
    assert outputs[0]["future annotations"] == {"x": "int", "y": "'list[str]'", "return": "str"}
    assert outputs[0]["annotations again"] == outputs[0]["annotations"]
    assert ["compile", "<probe-traceback>"] in outputs[0]["events"]
    assert outputs[0]["events"].count(["exec", "code"]) == 4
    assert outputs[0]["refused"] == "refused by an audit hook"


def test_a_source_that_warns_is_compiled_and_warns_every_time(probe_bins, probe_venv):
    code = ("import warnings, codecache_probe.app\n"
            "from codecache_probe.sources import WARNS\n"
            "warnings.simplefilter('error')\n"
            "try:\n    exec(WARNS, {})\nexcept SyntaxError as e:\n    print(type(e).__name__, e)\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n    exec(WARNS, {})\n"
            "print([w.category.__name__ for w in caught])\n")
    venv = run([probe_venv / "bin" / "python", "-c", code], env=clean_env())
    assert venv.returncode == 0, describe(venv)
    assert "Warning" in venv.stdout  # the category warned about, whatever the version
    for app_bin in probe_bins:
        result = run([app_bin, "python", "-c", code], env=clean_env())
        assert result.returncode == 0, describe(result)
        assert result.stdout == venv.stdout


def test_a_caught_keyboard_interrupt_exits_as_cpython_does(probe_bins, probe_venv):
    """CPython's quirk, kept: KeyboardInterrupt raised by exec()'d code and
    caught leaves its flag set, and python exits as if killed by SIGINT."""
    code = ("import codecache_probe.plain\nfrom codecache_probe.sources import INTERRUPT\n"
            "try:\n    exec(INTERRUPT, {})\nexcept KeyboardInterrupt:\n    print('caught')\n"
            "try:\n    import _appbin\n    print(_appbin.code_cache_info()['misses'])\n"
            "except ImportError:\n    print(1)\n")
    venv = run([probe_venv / "bin" / "python", "-c", code], env=clean_env())
    assert (venv.returncode, venv.stdout) == (-signal.SIGINT, "caught\n1\n"), describe(venv)
    cached = run([probe_bins[0], "python", "-c", code], env=clean_env())
    assert (cached.returncode, cached.stdout) == (-signal.SIGINT, "caught\n1\n"), describe(cached)


def test_python_minus_o_compiles_itself(probe_bins):
    """The cache holds code for the optimisation level it was recorded at."""
    code = "import json, _appbin; exec('x = 1'); print(json.dumps(_appbin.code_cache_info()))"
    result = run([probe_bins[0], "python", "-O", "-c", code], env=clean_env())
    assert result.returncode == 0, describe(result)
    assert json.loads(result.stdout)["state"] == "off"


def test_a_failing_training_import_packs_what_it_recorded(tmp_path, probe_venv, run_appbin_pack,
                                                          appbin_host, monkeypatch):
    monkeypatch.setenv("CODECACHE_PROBE_FAIL", "1")
    output = tmp_path / "app.bin"
    result = run_appbin_pack("--venv", probe_venv, "--app", APP, "--host", appbin_host, "-o",
                             output, "--quiet")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"appbin-pack: warning: code cache: loading {APP} exited with "
                               "status 1: RuntimeError: the probe's import fails, as asked; "
                               "packed with the "), lines
    assert lines[0].endswith("(--no-code-cache skips this run)")
    _, entries = read_cache(output)
    assert sources()["INTERRUPT"] in {e["source"] for e in entries}  # recorded before it failed
    assert any(e["start"] < 0 and e["source"] == pattern  # and the regular expressions
               for e in entries for pattern, _ in sources()["REGEXES"] if type(pattern) is str)


def test_a_process_the_training_starts_records_nothing(tmp_path, probe_venv, run_appbin_pack,
                                                       appbin_host, monkeypatch):
    """The training import starts `app.bin python -O`, which compiles a
    source with an assert: level-1 code (no assert) must not be cached for
    level 0."""
    monkeypatch.setenv("CODECACHE_PROBE_CHILD", "1")
    output = tmp_path / "app.bin"
    result = _pack(run_appbin_pack, appbin_host, probe_venv, output)
    assert result.stderr == ""
    asserts = sources()["ASSERTS"]
    assert asserts not in {e["source"] for e in read_cache(output)[1]}
    code = f"try:\n    exec({asserts!r}, {{}})\nexcept AssertionError as e:\n    print(e)\n"
    run_ = run([output, "python", "-c", code], env=clean_env())
    assert (run_.returncode, run_.stdout) == (0, "asserts are on\n"), describe(run_)


def test_the_cache_is_the_same_bytes_wherever_it_is_packed(tmp_path, probe_venv, run_appbin_pack,
                                                           appbin_host, monkeypatch):
    """Packed twice, once through a symlinked directory: the same file, with
    neither the set-ordered source's order nor the app.bin's path in it."""
    monkeypatch.setenv("CODECACHE_PROBE_PACKING", "1")
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "two")
    first, second = tmp_path / "one" / "app.bin", tmp_path / "link" / "app.bin"
    _pack(run_appbin_pack, appbin_host, probe_venv, first)
    _pack(run_appbin_pack, appbin_host, probe_venv, second)
    assert first.read_bytes() == second.read_bytes()
    entries = read_cache(first)[1]
    assert any(e["source"].startswith("ORDER = [") for e in entries)
    assert not [e for e in entries if "path_probe" in e["source"]]  # named app.bin's path
    assert not [e for e in entries if str(tmp_path) in e["filename"] + e["source"]]


def test_a_compressed_cache_answers_too(tmp_path, probe_venv, run_appbin_pack, appbin_host):
    output = tmp_path / "app.bin"
    _pack(run_appbin_pack, appbin_host, probe_venv, output, "--compress-code")
    assert zipfile.ZipFile(output).getinfo(MEMBER).compress_type == 93  # zstd
    result = run([output, "python", "-c", IMPORT_INFO], env=clean_env())
    assert result.returncode == 0, describe(result)
    info = json.loads(result.stdout)
    assert info["state"] == "on" and info["hits"] >= 10, info


def test_the_training_run_records_the_shared_objects_and_no_run_none(probe_bins):
    """The training run also records the shared objects start-up loads
    (manifest startup.native, host/nativeprep.h); --no-code-cache runs
    nothing, so its app.bin lists none and copies nothing ahead."""
    code = ("import json, _appbin; print(json.dumps([_appbin.manifest().get('startup.native'), "
            "_appbin.native_prep_info()]))")
    cached, plain = (json.loads(run([b, "python", "-c", code], env=clean_env()).stdout)
                     for b in probe_bins)
    # The probe loads no extension module of its own; the runtime's imports do.
    assert "stdlib/lib-dynload/" in cached[0], cached
    assert cached[1]["listed"] == len(cached[0].split()), cached
    assert plain[0] is None and plain[1]["listed"] == 0, plain

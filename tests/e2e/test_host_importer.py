"""End-to-end tests of the archive importer: modules, packages, namespace
packages, extension modules (stdlib and wheels), resources, metadata,
pkgutil, source lines, .pth files, FastAPI, and child interpreters
(multiprocessing, subprocess).

Each test runs the real app.bin of the test venv (`app.bin python -c ...` or a
script). Where the right answer is "what python3.11 says", the venv's own
python is asked the same question over the same site-packages.
"""

import json
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from hostutil import (CPYTHON_TAG, DYN, EXT_SUFFIX, PY_BUILTINS, PY_TAG, app_bin_fixture,
                      describe, python, python_c)

app_bin = pytest.fixture(scope="session")(app_bin_fixture)

FIXTURE_PKG = Path(__file__).resolve().parent / "fixtures" / "appbin_testpkg" / "appbin_testpkg"


def venv_python(test_venv, code, *args):
    """The reference answer: the venv's own python3.11 running `code`."""
    result = subprocess.run([str(Path(test_venv) / "bin" / "python"), "-I", "-c", code, *args],
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def both(app_bin, test_venv, code):
    """(app.bin's output, the venv python's output) for the same code."""
    return python_c(app_bin, code), venv_python(test_venv, code)


def raise_line():
    source = (FIXTURE_PKG / "boom.py").read_text(encoding="utf-8")
    return int(re.search(r"^RAISE_LINE = (\d+)", source, re.M).group(1))


# ---- modules and packages -----------------------------------------------------


def test_modules_and_packages(app_bin):
    code = """
import importlib.util, json, sys
import email.mime.text, xml.etree.ElementTree, typing_extensions, appbin_testpkg.plugins
out = {}
for name in ("email", "email.mime.text", "typing_extensions", "appbin_testpkg",
             "appbin_testpkg.plugins"):
    m = sys.modules[name]
    out[name] = [m.__file__, m.__spec__.origin, type(m.__loader__).__name__,
                 list(getattr(m, "__path__", []) or []), m.__package__]
out["missing"] = importlib.util.find_spec("no_such_module_xyz") is None
print(json.dumps(out))
"""
    info = json.loads(python_c(app_bin, code))
    sp, std = f"{app_bin}/site-packages", f"{app_bin}/stdlib"
    assert info["email"] == [f"{std}/email/__init__.py", f"{std}/email/__init__.py",
                             "AppbinImporter", [f"{std}/email"], "email"]
    assert info["email.mime.text"][0] == f"{std}/email/mime/text.py"
    assert info["email.mime.text"][4] == "email.mime"
    assert info["typing_extensions"][0] == f"{sp}/typing_extensions.py"
    assert info["appbin_testpkg"][3] == [f"{sp}/appbin_testpkg"]
    assert info["appbin_testpkg.plugins"][:3] == [f"{sp}/appbin_testpkg/plugins.py"] * 2 + [
        "AppbinImporter"]
    assert info["missing"] is True


def test_missing_module_raises_module_not_found(app_bin):
    result = python(app_bin, "-c", "import no_such_module_xyz")
    assert result.returncode == 1
    assert "ModuleNotFoundError: No module named 'no_such_module_xyz'" in result.stderr


def test_reload_and_importlib_import_module(app_bin):
    out = python_c(app_bin, "import importlib, json.tool as t; m = importlib.reload(t); "
                            "b = importlib.import_module('appbin_testpkg.boom'); "
                            "print(m is t, b.RAISE_LINE)")
    assert out.split() == ["True", str(raise_line())]


def test_module_named_with_a_dash(app_bin, test_venv):
    """FileFinder imports any file name, dashes included: sysconfig imports
    _sysconfigdata__x86_64-linux-gnu that way (zoneinfo -> pydantic -> FastAPI
    depend on it)."""
    # Debian names it _sysconfigdata__x86_64-linux-gnu, upstream (3.13/3.14
    # hosts) _sysconfigdata__linux_x86_64-linux-gnu
    code = ("import importlib, sysconfig; "
            "m = importlib.import_module(sysconfig._get_sysconfigdata_name()); "
            "assert '-' in m.__name__, m.__name__; "
            "print(sorted(m.build_time_vars) == sorted(sysconfig.get_config_vars()) or 'x', "
            "sysconfig.get_config_var('TZPATH'), sysconfig.get_config_var('SOABI'))")
    ours, reference = both(app_bin, test_venv, code)
    assert ours.split()[1:] == reference.split()[1:]


def test_zoneinfo(app_bin):
    out = python_c(app_bin, "import zoneinfo, datetime; "
                            "print(datetime.datetime(2024, 1, 1, tzinfo=zoneinfo.ZoneInfo('UTC')))")
    assert out.strip() == "2024-01-01 00:00:00+00:00"


def test_namespace_package_from_two_distributions(app_bin, test_venv):
    code = """
import json, appbin_ns, appbin_ns.a, appbin_ns.b
print(json.dumps([appbin_ns.a.NAME, appbin_ns.b.NAME, getattr(appbin_ns, "__file__", None),
                  appbin_ns.__spec__.origin, len(list(appbin_ns.__path__)),
                  [p.rsplit("/", 2)[-2:] for p in appbin_ns.__path__]]))
"""
    ours, reference = both(app_bin, test_venv, code)
    assert json.loads(ours) == json.loads(reference)
    assert json.loads(ours)[:2] == ["a", "b"]
    assert python_c(app_bin, "import appbin_ns; print(list(appbin_ns.__path__))").strip() == \
        repr([f"{app_bin}/site-packages/appbin_ns"])


def test_namespace_package_path_and_resources(app_bin, test_venv):
    """A namespace package's __path__ is importlib's _NamespacePath (it
    follows sys.path), which importlib.resources needs for files()."""
    code = """
import importlib.resources as ir, json, appbin_ns
print(json.dumps([type(appbin_ns.__path__).__name__,
                  sorted(p.name for p in ir.files("appbin_ns").iterdir())]))
"""
    ours, reference = both(app_bin, test_venv, code)
    assert json.loads(ours) == json.loads(reference) == ["_NamespacePath", ["a", "b"]]


def test_directory_without_init_is_a_namespace_package(app_bin, test_venv):
    """Any directory is a namespace package portion for python3.11, whatever
    it holds: `importlib.resources.files('pkg.data')` is a common idiom."""
    code = """
import importlib, importlib.resources as ir, json
m = importlib.import_module("appbin_testpkg.data.sub")
print(json.dumps([m.__name__, sorted(p.name for p in ir.files("appbin_testpkg.data").iterdir()),
                  json.loads(ir.files("appbin_testpkg.data.sub").joinpath("x.json").read_text())]))
"""
    ours, reference = both(app_bin, test_venv, code)
    assert json.loads(ours) == json.loads(reference)


# ---- extension modules -------------------------------------------------------

STDLIB_EXTENSIONS = {
    "_asyncio": "import asyncio, _asyncio\n"
                "assert asyncio.Future is _asyncio.Future\n"
                "print(asyncio.run(asyncio.sleep(0, 'ok')))",
    "_json": "import json, json.scanner, _json\n"
             "assert json.scanner.c_make_scanner is _json.make_scanner\n"
             "print(json.loads('{\"a\": [1]}')['a'][0] == 1 and 'ok')",
    "_ssl": "import ssl, _ssl, certifi\n"
            "ctx = ssl.create_default_context(cafile=certifi.where())\n"
            "assert len(ctx.get_ca_certs()) > 50, ctx.get_ca_certs()\n"
            "assert ssl.OPENSSL_VERSION.startswith('OpenSSL 3')\n"
            "print('ok')",
    "_hashlib": "import hashlib, _hashlib\n"
                "assert hashlib.new('sha3_256', b'x').hexdigest()\n"
                "print(_hashlib.openssl_sha256(b'abc').hexdigest()[:8] == 'ba7816bf' and 'ok')",
    "_sqlite3": "import sqlite3, _sqlite3\n"
                "db = sqlite3.connect(':memory:')\n"
                "db.execute('create table t (x)'); db.execute('insert into t values (41)')\n"
                "print(db.execute('select x + 1 from t').fetchone()[0] == 42 and 'ok')",
    "_decimal": "import decimal, _decimal\n"
                "assert decimal.Decimal is _decimal.Decimal\n"
                "print(str(decimal.Decimal(1) / decimal.Decimal(7))[:8] == '0.142857' and 'ok')",
    "_ctypes": "import ctypes, _ctypes\n"
               "libc = ctypes.CDLL(None)\n"
               "assert libc.strlen(b'abcd') == 4\n"
               "CMP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int),"
               " ctypes.POINTER(ctypes.c_int))\n"
               "arr = (ctypes.c_int * 5)(5, 1, 4, 2, 3)\n"
               "libc.qsort(arr, 5, ctypes.sizeof(ctypes.c_int),"
               " CMP(lambda a, b: a[0] - b[0]))  # a libffi closure\n"
               "print(list(arr) == [1, 2, 3, 4, 5] and 'ok')",
    "_lzma": "import lzma, _lzma\n"
             "print(lzma.decompress(lzma.compress(b'x' * 1000)) == b'x' * 1000 and 'ok')",
    "_bz2": "import bz2, _bz2\n"
            "print(bz2.decompress(bz2.compress(b'y' * 1000)) == b'y' * 1000 and 'ok')",
    "_uuid": "import uuid, _uuid\n"
             "assert uuid._uuid is _uuid and uuid._generate_time_safe is not None\n"
             "print(uuid.uuid1().version == 1 and 'ok')",
    "_multiprocessing": "import _multiprocessing, multiprocessing.synchronize as s\n"
                        "lock = s.Lock(ctx=None); lock.acquire(); lock.release()\n"
                        "print('ok')",
}


@pytest.mark.parametrize("module", sorted(STDLIB_EXTENSIONS))
def test_stdlib_extension_module(app_bin, module):
    code = (STDLIB_EXTENSIONS[module]
            + f"\nimport {module}; print(getattr({module}, '__file__', 'built-in'))")
    out = python_c(app_bin, code).split()
    assert out[0] == "ok", out
    # _json is linked into the 3.13/3.14 hosts
    assert out[1] == ("built-in" if module in PY_BUILTINS
                      else f"{app_bin}/stdlib/lib-dynload/{module}{EXT_SUFFIX}")


def test_zlib(app_bin):
    out = python_c(app_bin, "import zlib, sys; "
                            "print(zlib.decompress(zlib.compress(b'z' * 100)) == b'z' * 100, "
                            "getattr(zlib, '__file__', 'built-in'))").split()
    assert out[0] == "True"
    assert out[1] == "built-in" or out[1].startswith(f"{app_bin}/stdlib/lib-dynload/zlib")


def test_every_packed_stdlib_extension_imports(app_bin):
    code = """
import _appbin, importlib, json, warnings
warnings.simplefilter("ignore", DeprecationWarning)
names = sorted(n.split(".")[0] for n in _appbin.listdir("stdlib/lib-dynload") if n.endswith(".so"))
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = repr(exc)
print(json.dumps([names, failed]))
"""
    names, failed = json.loads(python_c(app_bin, code))
    assert len(names) > 25 and "_ssl" in names
    assert failed == {}


def test_wheel_extension_modules(app_bin, test_venv):
    code = """
import json, orjson, pydantic, pydantic_core
class Item(pydantic.BaseModel):
    name: str
    qty: int = 1
try:
    Item(name="x", qty="many")
    error = None
except pydantic.ValidationError as exc:
    error = exc.errors()[0]["type"]
print(json.dumps({"pydantic_core": pydantic_core._pydantic_core.__file__,
                  "orjson": getattr(orjson, "orjson", orjson).__file__,
                  "model": Item(name="pen", qty="3").model_dump(), "error": error,
                  "orjson_roundtrip": orjson.loads(orjson.dumps({"a": [1, 2.5, None]})),
                  "core_version": pydantic_core.__version__}))
"""
    info = json.loads(python_c(app_bin, code))
    reference = json.loads(venv_python(test_venv, code))
    sp = f"{app_bin}/site-packages"
    assert info["pydantic_core"].startswith(f"{sp}/pydantic_core/_pydantic_core{CPYTHON_TAG}")
    assert info["orjson"].startswith(f"{sp}/orjson/")
    for key in ("model", "error", "orjson_roundtrip", "core_version"):
        assert info[key] == reference[key], key


def test_extension_modules_load_from_memory_files(app_bin):
    """Nothing is extracted to disk when /proc and memfd are available."""
    code = """
import _json, _ssl, pydantic_core
maps = open("/proc/self/maps").read()
print(sorted({line.split()[-2] if line.endswith("(deleted)") else line.split()[-1]
              for line in maps.splitlines() if "_json" in line or "_ssl" in line
              or "_pydantic_core" in line}))
""".replace("_json", DYN)
    mapped = python_c(app_bin, code)
    assert f"/memfd:{DYN}{EXT_SUFFIX}" in mapped, mapped
    assert f"/memfd:_pydantic_core{EXT_SUFFIX}" in mapped, mapped
    assert "/tmp" not in mapped


# ---- importlib.resources, get_data, certifi ---------------------------------------


def test_importlib_resources_files(app_bin):
    code = """
import importlib.resources as ir, json
root = ir.files("appbin_testpkg")
data = root / "data"
print(json.dumps({
    "hello": (data / "hello.txt").read_text(encoding="utf-8"),
    "hello_bytes": len((data / "hello.txt").read_bytes()),
    "x": json.loads(data.joinpath("sub", "x.json").read_bytes()),
    "names": sorted(p.name for p in data.iterdir()),
    "is_file": [(data / "hello.txt").is_file(), data.is_file(), (data / "nope").is_file()],
    "is_dir": [data.is_dir(), (data / "sub").is_dir(), (data / "hello.txt").is_dir()],
    "open": (data / "hello.txt").open("r", encoding="utf-8").read(),
    "str": str(data / "hello.txt"),
}))
"""
    info = json.loads(python_c(app_bin, code))
    hello = (FIXTURE_PKG / "data" / "hello.txt").read_text(encoding="utf-8")
    assert info["hello"] == hello == info["open"]
    assert info["hello_bytes"] == len(hello.encode())
    assert info["x"] == json.loads((FIXTURE_PKG / "data" / "sub" / "x.json").read_text())
    assert info["names"] == ["hello.txt", "sub"]
    assert info["is_file"] == [True, False, False]
    assert info["is_dir"] == [True, True, False]
    assert info["str"] == f"{app_bin}/site-packages/appbin_testpkg/data/hello.txt"


def test_importlib_resources_as_file_gives_the_archive_path(app_bin):
    """The archive is a read-only directory tree: as_file() copies nothing and
    hands out the resource's own path, which open() and os.path read."""
    code = """
import importlib.resources as ir, os, json
with ir.as_file(ir.files("appbin_testpkg") / "data" / "sub" / "x.json") as path:
    print(json.dumps([str(path), os.path.isfile(path), open(path).read(),
                      open(path, "rb").read() == path.read_bytes()]))
"""
    path, isfile, text, same = json.loads(python_c(app_bin, code))
    assert isfile and same
    assert json.loads(text) == json.loads((FIXTURE_PKG / "data" / "sub" / "x.json").read_text())
    assert path == f"{app_bin}/site-packages/appbin_testpkg/data/sub/x.json"


def test_certifi_where_is_readable(app_bin, test_venv):
    code = ("import certifi, os, hashlib; p = certifi.where(); "
            "print(os.path.isfile(p), hashlib.sha256(open(p, 'rb').read()).hexdigest(), "
            "open(p).read() == certifi.contents())")
    ours, reference = both(app_bin, test_venv, code)
    assert ours.split() == reference.split() == ["True", reference.split()[1], "True"]


def test_get_data(app_bin):
    code = """
import appbin_testpkg, pkgutil, sys
loader = appbin_testpkg.__loader__
path = sys.executable + "/site-packages/appbin_testpkg/data/hello.txt"
print(loader.get_data(path) == pkgutil.get_data("appbin_testpkg", "data/hello.txt"),
      loader.get_data(path).decode().strip())
try:
    loader.get_data(sys.executable + "/site-packages/appbin_testpkg/nope.txt")
except OSError as exc:
    print(type(exc).__name__)
"""
    out = python_c(app_bin, code).splitlines()
    hello = (FIXTURE_PKG / "data" / "hello.txt").read_text(encoding="utf-8").strip()
    assert out == [f"True {hello}", "FileNotFoundError"]


def test_members_read_from_many_threads_at_once(app_bin):
    """Reads release the GIL: threads reading members at the same time (lazy
    imports in a thread pool, resources) each get their own member's bytes."""
    code = """
import _appbin, hashlib, sys, threading
names = [n for n in ("stdlib/" + f for f in _appbin.listdir("stdlib"))
         if n.endswith(".pyc")][:60]
names.append("stdlib/lib-dynload/" + next(
    f for f in _appbin.listdir("stdlib/lib-dynload") if f.startswith("_decimal")))
want = {n: hashlib.sha256(_appbin.read(n)).digest() for n in names}
errors = []
def reader(k):
    try:
        for i in range(4000):
            n = names[(i * 7 + k) % len(names)]
            if hashlib.sha256(_appbin.read(n)).digest() != want[n]:
                errors.append(n)
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=reader, args=(k,)) for k in range(6)]
for t in threads: t.start()
for t in threads: t.join()
print(len(names), errors[:3])
"""
    assert python_c(app_bin, code) == "61 []\n"


# ---- importlib.metadata -------------------------------------------------------------


def test_metadata_version(app_bin, test_venv):
    code = ("import importlib.metadata as md; print(md.version('fastapi'), md.version('pydantic'), "
            "md.version('appbin-testpkg'), md.version('certifi'))")
    ours, reference = both(app_bin, test_venv, code)
    assert ours == reference
    assert ours.split()[2] == "1.2.3"


def test_metadata_name_normalisation(app_bin):
    code = ("import importlib.metadata as md; print({md.version(n) for n in ('typing-extensions', "
            "'typing_extensions', 'Typing.Extensions', 'TYPING_EXTENSIONS')})")
    versions = python_c(app_bin, code).strip()
    assert re.fullmatch(r"\{'\d+\.\d+\.\d+'\}", versions), versions


def test_metadata_missing_distribution(app_bin):
    out = python_c(app_bin, "import importlib.metadata as md\n"
                            "try: md.version('no-such-dist')\n"
                            "except md.PackageNotFoundError as e: print('not found', e)")
    assert out.startswith("not found")


def test_entry_points(app_bin, test_venv):
    code = """
import importlib.metadata as md, json
eps = md.entry_points(group="appbin_test.plugins")
print(json.dumps([sorted((ep.name, ep.value) for ep in eps), eps["hello"].load()("appbin"),
                  eps["shout"].load()("hi"), eps["hello"].dist.name]))
"""
    ours, reference = both(app_bin, test_venv, code)
    assert json.loads(ours) == json.loads(reference)
    assert json.loads(ours)[1:3] == ["hello appbin", "HI!"]


def test_distributions(app_bin, test_venv):
    code = ("import importlib.metadata as md, json; "
            "print(json.dumps(sorted({d.metadata['Name'].lower().replace('_', '-') "
            "for d in md.distributions()})))")
    ours, reference = both(app_bin, test_venv, code)
    names = set(json.loads(ours))
    assert {"fastapi", "pydantic", "pydantic-core", "appbin-testpkg", "appbin-nspkg-a",
            "appbin-nspkg-b", "certifi", "orjson"} <= names
    # pip is left out by the packer; everything else (setuptools too, which
    # python3.11 -m venv installs and 3.12+ does not) is there.
    assert ("setuptools" in names) == (PY_TAG == "3.11")
    assert names == set(json.loads(reference)) - {"pip"}


def test_metadata_requires(app_bin, test_venv):
    code = "import importlib.metadata as md; print(sorted(md.requires('fastapi')))"
    ours, reference = both(app_bin, test_venv, code)
    assert ours == reference and "pydantic" in ours


# ---- pkgutil, inspect, tracebacks -------------------------------------------------------


def test_pkgutil_iter_modules_top_level(app_bin):
    code = ("import pkgutil, json; "
            "print(json.dumps({m.name: m.ispkg for m in pkgutil.iter_modules()}))")
    mods = json.loads(python_c(app_bin, code))
    expected = {"fastapi": True, "pydantic": True, "appbin_testpkg": True, "json": True,
                "asyncio": True, "os": False, "typing_extensions": False, DYN: False,
                "_ssl": False, "extra_mod": False}
    assert {k: mods.get(k) for k in expected} == expected


def test_pkgutil_iter_modules_of_a_package(app_bin, test_venv):
    code = ("import pkgutil, appbin_testpkg, json, email; print(json.dumps(["
            "[(m.name, m.ispkg) for m in pkgutil.iter_modules(appbin_testpkg.__path__)], "
            "sorted(m.name for m in pkgutil.walk_packages(email.__path__, 'email.'))]))")
    ours, reference = both(app_bin, test_venv, code)
    assert json.loads(ours) == json.loads(reference)
    assert json.loads(ours)[0] == [["asgi", False], ["boom", False], ["constants", False],
                                   ["plugins", False], ["web", False]]


def test_inspect_getsource(app_bin):
    code = ("import inspect, json, appbin_testpkg.boom as b; "
            "print(json.dumps([inspect.getsource(b.explode), inspect.getsourcefile(json.dumps), "
            "inspect.getsource(json.dumps).splitlines()[0]]))")
    source, json_file, first = json.loads(python_c(app_bin, code))
    expected = (FIXTURE_PKG / "boom.py").read_text(encoding="utf-8")
    assert source in expected and "raise RuntimeError(detail)" in source
    assert source.startswith("def explode(")
    assert json_file == f"{app_bin}/stdlib/json/__init__.py"
    assert first.startswith("def dumps(")


def test_uncaught_exception_traceback_shows_source_lines(app_bin):
    result = python(app_bin, "-c", "from appbin_testpkg import boom\nboom.explode()")
    assert result.returncode == 1
    line = raise_line()
    source_line = (FIXTURE_PKG / "boom.py").read_text(encoding="utf-8").splitlines()[line - 1]
    assert (f'File "{app_bin}/site-packages/appbin_testpkg/boom.py", line {line}, in explode'
            in result.stderr), describe(result)
    assert source_line.strip() == "raise RuntimeError(detail)"
    assert f"\n    {source_line.strip()}\n" in result.stderr, describe(result)
    assert result.stderr.rstrip().endswith("RuntimeError: boom from appbin_testpkg")


def test_traceback_from_a_script_and_from_the_stdlib(app_bin, tmp_path):
    script = tmp_path / "fails.py"
    script.write_text("import json\n\njson.loads('{not json')\n")
    result = python(app_bin, script)
    assert result.returncode == 1
    assert f'File "{script}", line 3, in <module>' in result.stderr
    assert "    json.loads('{not json')" in result.stderr
    assert f'File "{app_bin}/stdlib/json/decoder.py"' in result.stderr
    assert "obj, end = self.scan_once(s, idx)" in result.stderr, describe(result)


def test_traceback_format_exc_in_code(app_bin):
    code = ("import traceback\nfrom appbin_testpkg import boom\n"
            "try:\n    boom.explode('caught')\nexcept RuntimeError:\n"
            "    print(traceback.format_exc())")
    out = python_c(app_bin, code)
    assert "raise RuntimeError(detail)" in out and "RuntimeError: caught" in out


# ---- .pth files -------------------------------------------------------------------------


def test_pth_path_line_and_import_line(app_bin):
    code = ("import extra_mod, os, sys, json; print(json.dumps([extra_mod.VALUE, "
            "extra_mod.__file__, os.environ.get('APPBIN_TEST_PTH'), sys.path[-1]]))")
    value, file, marker, last = json.loads(python_c(app_bin, code))
    assert value == "extra"
    assert file == f"{app_bin}/site-packages/appbin_extra/extra_mod.py"
    assert marker == "loaded"
    assert last == f"{app_bin}/site-packages/appbin_extra"


# ---- FastAPI ----------------------------------------------------------------------------

FASTAPI_APP = """
import asyncio, json
from fastapi import FastAPI
from pydantic import BaseModel

class Item(BaseModel):
    name: str
    qty: int = 1

app = FastAPI()

@app.post("/items/{item_id}")
async def create(item_id: int, item: Item):
    return {"id": item_id, "name": item.name, "qty": item.qty * 2}

async def call(method, path, body=b""):
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "root_path": "", "query_string": b"", "client": ("127.0.0.1", 1),
             "server": ("test", 80),
             "headers": [(b"host", b"test"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent = []
    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}
    async def send(message):
        sent.append(message)
    await app(scope, receive, send)
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))

results = [asyncio.run(call("POST", "/items/7", b'{"name": "pen", "qty": 3}')),
           asyncio.run(call("POST", "/items/7", b'{"qty": "many"}'))[0]]
try:
    from fastapi.testclient import TestClient
except (ImportError, RuntimeError):  # starlette's TestClient needs httpx(2): not in the venv
    results.append(None)
else:
    results.append(TestClient(app).post("/items/1", json={"name": "x"}).json())
print(json.dumps(results))
"""


def test_fastapi_application(app_bin, test_venv):
    ours = json.loads(python_c(app_bin, FASTAPI_APP))
    assert ours == json.loads(venv_python(test_venv, FASTAPI_APP))
    assert ours[:2] == [[200, {"id": 7, "name": "pen", "qty": 6}], 422]
    if ours[2] is not None:
        assert ours[2] == {"id": 1, "name": "x", "qty": 2}


def test_packed_application_module_imports(app_bin):
    out = python_c(app_bin, "import appbin_testpkg.web as w; "
                            "print(w.app.title, len(w.app.routes) > 5)")
    assert out.split() == ["appbin-testpkg", "True"]


# Every tuple of a module's code objects, by where it sits and by value, and
# whether the collector tracks it: as imported with no collection ("fresh"),
# or after full collections (one untracks a tuple only if its items were
# untracked when it got to it, so nested tuples may take several).
CONSTANT_TUPLES = """
import gc, json, sys
if sys.argv[1] == "fresh":
    gc.disable()
import appbin_testpkg.constants as m
if sys.argv[1] == "collect":
    for _ in range(5):
        gc.collect()
out, by_value = {}, {}
def walk(where, t):
    out[where] = gc.is_tracked(t)
    if not any(hasattr(item, "co_consts") for item in t):
        by_value[repr(t)] = gc.is_tracked(t)
    for i, item in enumerate(t):
        if type(item) is tuple:
            walk(f"{where}[{i}]", item)
        elif hasattr(item, "co_consts"):
            code(f"{where}[{i}]", item)
def code(where, co):
    walk(where + ".co_consts", co.co_consts)
    walk(where + ".co_names", co.co_names)
for name in ("uses_names", "membership", "nested"):
    code(name, getattr(m, name).__code__)
walk("NESTED", m.NESTED)
# co_localsplusnames, which Python code cannot reach: nested's ('inner',)
# and inner's ('y',), found among the tracked objects
out["tracked localsplusnames"] = sorted(
    o[0] for o in gc.get_objects() if type(o) is tuple and len(o) == 1 and o[0] in ("inner", "y"))
print(json.dumps([out, by_value], sort_keys=True))
"""


def test_constant_tuples_are_untracked_as_the_collector_would(app_bin, test_venv):
    """app.bin untracks a code object's atomic tuples when it unmarshals it
    (host/codeconst.h): before any collection, they are what the venv's
    python has after full ones."""
    fresh = json.loads(python_c(app_bin, CONSTANT_TUPLES, "fresh"))
    assert fresh == json.loads(venv_python(test_venv, CONSTANT_TUPLES, "collect"))
    assert fresh == json.loads(python_c(app_bin, CONSTANT_TUPLES, "collect"))
    where, tracked = fresh
    assert not where["NESTED"] and not where["NESTED[1][2]"]
    assert not where["uses_names.co_names"] and where["tracked localsplusnames"] == []
    assert where["membership.co_consts"]  # it holds a frozenset
    unpacked = json.loads(venv_python(test_venv, CONSTANT_TUPLES, "fresh"))[0]
    assert unpacked["NESTED"] and unpacked["tracked localsplusnames"] == ["inner", "y"]
    assert not tracked["('dropped', (4.0, 5j))"] and not tracked["(4.0, 5j)"]
    assert not tracked["(1, (2, 3))"]
    assert [tracked[t] for t in tracked if "frozenset({1, 2})" in t] == [True]


# ---- child interpreters ------------------------------------------------------------------

MULTIPROCESSING = """
import json, multiprocessing, os, sys
from concurrent.futures import ProcessPoolExecutor

def work(x):
    import _json, pydantic_core  # extension modules in the child too
    return x * x, sys.executable, os.getpid()

if __name__ == "__main__":
    out = {}
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        out["spawn_pool"] = pool.map(work, range(6))
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
        out["spawn_executor"] = list(ex.map(work, range(4)))
    with ProcessPoolExecutor(2) as ex:
        out["default_executor"] = list(ex.map(work, range(4)))
    with multiprocessing.get_context("forkserver").Pool(1) as pool:
        out["forkserver_pool"] = pool.map(work, range(3))
    out["parent"] = os.getpid()
    print(json.dumps(out))
"""


def test_multiprocessing_and_process_pools(app_bin, tmp_path):
    script = tmp_path / "mp_script.py"
    script.write_text(MULTIPROCESSING)
    result = python(app_bin, script, timeout=180)
    assert result.returncode == 0, describe(result)
    out = json.loads(result.stdout)
    parent = out.pop("parent")
    for kind, results in out.items():
        assert [r[0] for r in results] == [x * x for x in range(len(results))], kind
        assert {r[1] for r in results} == {str(app_bin)}, kind
        assert parent not in {r[2] for r in results}, kind
    assert "Traceback" not in result.stderr


def test_subprocess_of_sys_executable(app_bin):
    code = textwrap.dedent("""
        import json, subprocess, sys
        child = subprocess.run([sys.executable, "-c",
                                "import sys, json, _json; print(sys.executable, json.__file__);"
                                " sys.exit(5)"], capture_output=True, text=True)
        print(json.dumps([child.returncode, child.stdout.split(), child.stderr]))
    """)
    status, out, err = json.loads(python_c(app_bin, code))
    assert (status, err) == (5, "")
    assert out == [str(app_bin), f"{app_bin}/stdlib/json/__init__.py"]


def test_concurrent_imports_from_threads(app_bin):
    code = """
import threading, importlib, sys
names = ["decimal", "email.mime.multipart", "xml.dom.minidom", "http.client", "sqlite3",
         "pydantic", "orjson", "lzma", "bz2", "ssl", "csv", "fractions", "statistics",
         "unittest.mock", "logging.handlers", "tomllib"]
errors = []
def load(name):
    try:
        importlib.import_module(name)
    except BaseException as exc:
        errors.append((name, repr(exc)))
threads = [threading.Thread(target=load, args=(n,)) for n in names]
for t in threads: t.start()
for t in threads: t.join()
print(errors or "ok", all(n in sys.modules for n in names))
"""
    assert python_c(app_bin, code).split() == ["ok", "True"]


def test_other_importers_still_work(app_bin, tmp_path):
    """Directories on disk (FileFinder) and zip files (zipimport) added to
    sys.path keep working next to the archive importer."""
    import zipfile
    (tmp_path / "ondisk").mkdir()
    (tmp_path / "ondisk" / "disk_mod.py").write_text("V = 'disk'\n")
    with zipfile.ZipFile(tmp_path / "lib.zip", "w") as z:
        z.writestr("zipped_mod.py", "V = 'zip'\n")
    entries = [str(tmp_path / "ondisk"), str(tmp_path / "lib.zip")]
    code = (f"import sys; sys.path += {entries!r}\n"
            "import disk_mod, zipped_mod; print(disk_mod.V, zipped_mod.V, "
            "type(zipped_mod.__loader__).__name__)")
    assert python_c(app_bin, code).split() == ["disk", "zip", "zipimporter"]


def test_no_bytecode_written_next_to_scripts(app_bin, tmp_path):
    (tmp_path / "imported_mod.py").write_text("V = 1\n")
    python_c(app_bin, "import imported_mod", cwd=tmp_path)
    assert not (tmp_path / "__pycache__").exists()


def test_asyncio_loopback_sockets(app_bin):
    """asyncio streams over a loopback socket (_asyncio, _socket, select)."""
    code = textwrap.dedent("""
        import asyncio
        async def main():
            async def handle(r, w):
                w.write(await r.readline()); await w.drain(); w.close()
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"ping\\n"); await w.drain()
            print((await r.readline()).decode().strip())
            w.close(); server.close(); await server.wait_closed()
        asyncio.run(main())
    """)
    assert python_c(app_bin, code).strip() == "ping"


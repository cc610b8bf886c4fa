"""End-to-end tests of the start-up paths: frozen stdlib modules, stored code
used in place, and extension modules mapped from app.bin once loaded."""

import json

import pytest

from hostutil import app_bin_fixture, python, python_c

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

"""Fixtures of the end-to-end tests: test venvs, the packager, packed apps.

Venvs are built once and cached outside the clone, under
${APPBIN_CACHE:-~/.cache/appbin}/test-venvs/<name>-<key> (a fresh clone on
a machine that ran the tests before reuses them), where the key hashes
everything that goes into them (requirements, the local fixture
distributions, the Python and its path). A lock file serialises concurrent
builds.
"""

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXAMPLES = ROOT / "examples"
VENV_CACHE = Path(os.environ.get("APPBIN_CACHE") or Path.home() / ".cache" / "appbin") / "test-venvs"
# The CMake build whose host and packager the tests use (APPBIN_BUILD_DIR;
# venvs stay in build/) and its python (hostutil.py: Debian's python3.11, or
# the CPython 3.13/3.14 of build/hosts/X.Y).
from hostutil import HOST_BUILD, PY_TAG, PY_VERSION, PYTHON  # noqa: E402,F401
HOST = HOST_BUILD / "appbin-host"
PACK_WRAPPER = HOST_BUILD / "appbin-pack"
PACK_SCRIPT = ROOT / "packager" / "appbin_pack.py"
POETRY = BUILD / "tools-venv" / "bin" / "poetry"

# The test venv: FastAPI with its dependencies (pinned), orjson and certifi,
# plus our local fixture distributions.
TEST_VENV_REQUIREMENTS = (
    "fastapi==0.165.0",
    "annotated-doc==0.0.7",
    "annotated-types==0.8.0",
    "anyio==4.16.0",
    "idna==3.20",
    "opentelemetry-api==1.45.2",
    "pydantic==2.14.4",
    "pydantic-core==2.50.5",
    "starlette==1.10.0",
    "typing-extensions==4.16.0",
    "typing-inspection==0.4.5",
    "orjson==3.13.0",
    "certifi==2026.10.19.post1",
)
LOCAL_DISTRIBUTIONS = ("nspkg-a", "nspkg-b", "appbin_testpkg")
TEST_APP = "appbin_testpkg.web:app"

_COMPLETE_MARKER = ".appbin-complete"
_BUILD_LEFTOVERS = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")


def _hash_tree(sha, root):
    """Feeds the relative paths and contents of the files under `root` to `sha`."""
    for path in sorted(Path(root).rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not any(p in ("build", "__pycache__") or p.endswith(".egg-info")
                                      for p in rel.parts):
            sha.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")


def _cached_build(name, key_parts, trees, build):
    """Returns VENV_CACHE/<name>-<key>, calling build(dir) once to make it."""
    sha = hashlib.sha256("\n".join([PY_VERSION, os.path.realpath(PYTHON), *key_parts]).encode())
    for tree in trees:
        _hash_tree(sha, tree)
    target = VENV_CACHE / f"{name}-{sha.hexdigest()[:16]}"
    VENV_CACHE.mkdir(parents=True, exist_ok=True)
    with open(VENV_CACHE / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / _COMPLETE_MARKER).exists():
            shutil.rmtree(target, ignore_errors=True)
            build(target)
            (target / _COMPLETE_MARKER).touch()
    return target


def _run(cmd, **kwargs):
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n"
                           f"{result.stdout}\n{result.stderr}")
    return result


def build_pip_venv(target, requirements, local_dirs):
    """pythonX.Y -m venv (the host's python) + pip install of `requirements` and local projects.

    The local projects are copied first, so that their builds leave nothing
    in the source tree.
    """
    _run([PYTHON, "-m", "venv", str(target)])
    with tempfile.TemporaryDirectory() as scratch:
        copies = []
        for local in local_dirs:
            copy = Path(scratch, Path(local).name)
            shutil.copytree(local, copy, ignore=_BUILD_LEFTOVERS)
            # data-files aimed at the venv's site-packages name the 3.11 one
            pyproject = copy / "pyproject.toml"
            if PY_TAG != "3.11" and pyproject.exists():
                pyproject.write_text(pyproject.read_text(encoding="utf-8").replace(
                    '"lib/python3.11/', f'"lib/python{PY_TAG}/'), encoding="utf-8")
            copies.append(str(copy))
        _run([str(target / "bin" / "python"), "-m", "pip", "install", "--quiet",
              "--disable-pip-version-check", *requirements, *copies])


@pytest.fixture(scope="session")
def test_venv():
    """The test venv (see TEST_VENV_REQUIREMENTS and tests/e2e/fixtures/)."""
    local_dirs = [FIXTURES / name for name in LOCAL_DISTRIBUTIONS]
    return _cached_build("fastapi", TEST_VENV_REQUIREMENTS, local_dirs,
                         lambda target: build_pip_venv(target, TEST_VENV_REQUIREMENTS,
                                                       local_dirs))


@pytest.fixture(scope="session")
def poetry_venv():
    """The examples/ project bundled by `poetry bundle venv --only=main`."""
    if not POETRY.exists():
        pytest.skip(f"{POETRY} missing: run tests/setup.sh")
    sources = [EXAMPLES / name for name in ("pyproject.toml", "poetry.lock", "README.md")]

    def build(target):
        _run([str(POETRY), "bundle", "venv", "--no-interaction", "--only=main",
              f"--python={PYTHON}", str(target)], cwd=EXAMPLES)

    key = [p.read_text(encoding="utf-8") for p in sources]
    return _cached_build("poetry-example", key, [EXAMPLES / "my_package"], build)


@pytest.fixture(scope="session")
def pack_command():
    """argv prefix running the packager: build/appbin-pack, else the script."""
    if PACK_WRAPPER.exists():
        return [str(PACK_WRAPPER)]
    return [PYTHON, "-I", str(PACK_SCRIPT)]


@pytest.fixture(scope="session")
def appbin_host():
    """The real host, build/appbin-host (tests using it skip until it is built)."""
    if not HOST.exists():
        pytest.skip(f"{HOST} not built yet (cmake -S . -B build -G Ninja && cmake --build build)")
    return HOST


@pytest.fixture(scope="session")
def run_appbin_pack(pack_command):
    """run_appbin_pack(*args) runs the packager and returns the CompletedProcess."""
    def run(*args):
        return subprocess.run([*pack_command, *map(str, args)], capture_output=True, text=True,
                              check=False, timeout=600)
    return run


@pytest.fixture(scope="session")
def test_app():
    """The --app of the test venv: a FastAPI app using all of the fixtures."""
    return TEST_APP


@pytest.fixture(scope="session")
def packed_app(tmp_path_factory, run_appbin_pack, appbin_host, test_venv):
    """app.bin of the test venv with the real host, serving appbin_testpkg.web:app."""
    output = tmp_path_factory.mktemp("packed") / "app.bin"
    result = run_appbin_pack("--venv", test_venv, "--app", TEST_APP, "--host", appbin_host,
                             "-o", output, "--quiet")
    assert result.returncode == 0, result.stderr
    return output


@pytest.fixture(scope="session")
def python_version():
    """X.Y.Z of the Python whose stdlib gets packed."""
    return _run([PYTHON, "-c", "import platform; print(platform.python_version())"]
                ).stdout.strip()

# The server suite's fixtures (a plain import: pytest_plugins is only allowed
# in a top-level conftest, and this one is not when pytest runs from the root).
from server_fixtures import *  # noqa: E402,F401,F403


# ---- the operations tests (test_server_ops.py) ------------------------------------

OPS_VENV_REQUIREMENTS = ("PyYAML==6.0.4",)
OPS_APP = "appbin_opsapps.app:app"


@pytest.fixture(scope="session")
def ops_app_bin(tmp_path_factory, run_appbin_pack, appbin_host):
    """app.bin of the server venv + PyYAML + fixtures/appbin_opsapps (--app
    appbin_opsapps.app:app); $APPBIN_SERVER_TEST_HOST packs another host."""
    from server_fixtures import SERVER_DISTRIBUTIONS, SERVER_VENV_REQUIREMENTS

    requirements = (*SERVER_VENV_REQUIREMENTS, *OPS_VENV_REQUIREMENTS)
    local_dirs = [FIXTURES / name for name in (*SERVER_DISTRIBUTIONS, "appbin_opsapps")]
    venv = _cached_build("opsapps", requirements, local_dirs,
                         lambda target: build_pip_venv(target, requirements, local_dirs))
    host = os.environ.get("APPBIN_SERVER_TEST_HOST") or appbin_host
    output = tmp_path_factory.mktemp("ops-app") / "app.bin"
    result = run_appbin_pack("--venv", venv, "--app", OPS_APP, "--host", host, "-o", output,
                             "--quiet")
    assert result.returncode == 0, result.stderr
    return output

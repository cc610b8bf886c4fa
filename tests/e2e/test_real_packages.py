"""Real PyPI packages, used for real, behave the same from app.bin as from their venv.

One venv (/usr/bin/python3.11's venv + pip, --only-binary=:all:) holds the
packages of fixtures/real-packages/requirements.txt (pinned: numpy, pandas,
scipy, pydantic, orjson, uvloop, cryptography, bcrypt, argon2-cffi, psycopg,
asyncpg, SQLAlchemy, lxml, pillow, PyYAML, msgpack, grpcio, protobuf, tzdata,
pytz, babel, Jinja2, Django, WhiteNoise, boto3, matplotlib, sentry-sdk,
OpenTelemetry, requests, certifi, structlog and what they pull in) and the
suite's own distribution fixtures/real-packages/realapp (jinja2 templates
and data read by path, and `djproj`, a Django ASGI project with the admin
app). It is built once per machine and cached like conftest's venvs (wheels
come from pip's cache), and packed into one app.bin once per session.

Each fixtures/real-packages/uses/<name>_use.py does something real with a
package (renders, computes, validates, serves, signs, parses...) and prints
what it got; it runs under the venv's python and under `app.bin python`, and
stdout, stderr and the exit status must be the same. The only thing rewritten
before comparing is where modules live, which differs by design: the venv's
site-packages and /usr/lib/python3.11 against app.bin's
`<app.bin>/site-packages` and `<app.bin>/stdlib` (module `__file__` paths,
as printed by warnings, certifi.where() and tracebacks). Every script also
runs from `/` and under `env -i` (an empty environment), against the venv in
the same conditions.

The Django project is served by `app.bin --app djproj.asgi:application` and
fetched with httpx: the admin's login page (its own templates), its static
files as WhiteNoise serves them in production (collected with
`collectstatic` into the project's package when the venv is built, so
they are packed with it: STATIC_ROOT inside the archive, hashed names and
gzip variants from CompressedManifestStaticFilesStorage), and a login.
"""

import concurrent.futures
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from conftest import FIXTURES, PYTHON, _cached_build, _run
from hostutil import PY_STDLIB, PY_TAG, clean_env
from server_fixtures import AppBinFactory

REAL = FIXTURES / "real-packages"
REQUIREMENTS = REAL / "requirements.txt"
USES = REAL / "uses"
REALAPP = REAL / "realapp"
SCRIPTS = sorted(p.name[:-len("_use.py")] for p in USES.glob("*_use.py"))
DJANGO_APP = "djproj.asgi:application"
ADMIN_PASSWORD = "pw-for-tests-only"


def site_packages(venv):
    return venv / "lib" / f"python{PY_TAG}" / "site-packages"


@pytest.fixture(scope="session")
def real_venv():
    """The venv of requirements.txt + realapp, with djproj's static files collected."""
    def build(target):
        _run([PYTHON, "-m", "venv", str(target)])
        pip = [str(target / "bin" / "python"), "-m", "pip", "install", "--quiet",
               "--disable-pip-version-check"]
        _run([*pip, "--only-binary=:all:", "-r", str(REQUIREMENTS)])
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(scratch, "realapp")
            shutil.copytree(REALAPP, copy, ignore=shutil.ignore_patterns(
                "build", "*.egg-info", "__pycache__"))
            _run([*pip, "--no-deps", str(copy)])
        # What a Django deployment does at build time: gather every app's
        # static files into STATIC_ROOT (here inside the installed package).
        _run([str(target / "bin" / "python"), "-m", "django", "collectstatic", "--noinput",
              "-v0"], env={**clean_env(), "DJANGO_SETTINGS_MODULE": "djproj.settings"})
    return _cached_build("real-packages", [REQUIREMENTS.read_text()], [REALAPP], build)


@pytest.fixture(scope="session")
def real_app_bin(tmp_path_factory, run_appbin_pack, appbin_host, real_venv):
    """The venv packed with the real host and default options, once."""
    output = tmp_path_factory.mktemp("real-packages") / "app.bin"
    result = run_appbin_pack("--venv", real_venv, "--app", DJANGO_APP, "--host", appbin_host,
                             "-o", output, "--quiet")
    assert result.returncode == 0, result.stderr
    return output


# ---- running a use both ways ---------------------------------------------------

MODES = {
    # cwd, environment
    "tmp": "a fresh temporary directory, the test environment (clean_env)",
    "root": "/ as the working directory",
    "env-i": "an empty environment (env -i)",
}


def run_use(argv, script, mode, scratch):
    """Runs uses/<script>_use.py with argv (a python) in `mode` (see MODES)."""
    cwd = "/" if mode == "root" else scratch
    env = {} if mode == "env-i" else clean_env()
    result = subprocess.run([*map(str, argv), str(USES / f"{script}_use.py")],
                            capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
                            check=False, errors="backslashreplace")
    return result


def normalise(text, venv, app_bin):
    """Module paths: app.bin's members and the venv's / Debian's files alike."""
    for prefix, name in ((f"{app_bin}/site-packages", "{site}"), (f"{app_bin}/stdlib", "{stdlib}"),
                         (str(site_packages(venv)), "{site}"), (PY_STDLIB, "{stdlib}")):
        text = text.replace(prefix, name)
    return text


def compare(script, mode, venv, app_bin, tmp_path):
    """(venv result, app.bin result, normalised outputs) of one script in one mode."""
    scratch = tmp_path / f"{script}-{mode}"
    scratch.mkdir()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        ours_f = pool.submit(run_use, [app_bin, "python"], script, mode, scratch)
        theirs_f = pool.submit(run_use, [venv / "bin" / "python"], script, mode, scratch)
        ours, theirs = ours_f.result(), theirs_f.result()
    return theirs, ours


def describe_pair(script, mode, theirs, ours, venv, app_bin):
    def show(r):
        return (f"exit {r.returncode}\n--- stdout\n{normalise(r.stdout, venv, app_bin)}"
                f"\n--- stderr\n{normalise(r.stderr, venv, app_bin)}")
    return f"{script} ({MODES[mode]})\n=== venv: {show(theirs)}\n=== app.bin: {show(ours)}"


def assert_same(script, mode, venv, app_bin, tmp_path):
    theirs, ours = compare(script, mode, venv, app_bin, tmp_path)
    message = describe_pair(script, mode, theirs, ours, venv, app_bin)
    assert theirs.returncode == 0, "the script fails in the venv itself:\n" + message
    assert ours.returncode == theirs.returncode, message
    assert normalise(ours.stdout, venv, app_bin) == normalise(theirs.stdout, venv, app_bin), message
    assert normalise(ours.stderr, venv, app_bin) == normalise(theirs.stderr, venv, app_bin), message


@pytest.mark.parametrize("script", SCRIPTS)
def test_real_use(script, real_venv, real_app_bin, tmp_path):
    assert_same(script, "tmp", real_venv, real_app_bin, tmp_path)


@pytest.mark.parametrize("mode", ["root", "env-i"])
def test_real_uses_from_root_and_without_environment(mode, real_venv, real_app_bin, tmp_path):
    """Every script once more from / and once with an empty environment;
    the differences are reported together."""
    failures = []
    for script in SCRIPTS:
        theirs, ours = compare(script, mode, real_venv, real_app_bin, tmp_path)
        same = (theirs.returncode == 0 and ours.returncode == 0
                and normalise(ours.stdout, real_venv, real_app_bin)
                == normalise(theirs.stdout, real_venv, real_app_bin)
                and normalise(ours.stderr, real_venv, real_app_bin)
                == normalise(theirs.stderr, real_venv, real_app_bin))
        if not same:
            failures.append(describe_pair(script, mode, theirs, ours, real_venv, real_app_bin))
    assert not failures, f"{len(failures)} of {len(SCRIPTS)} differ:\n\n" + "\n\n".join(
        f[:3000] for f in failures)


def test_every_named_package_has_a_use():
    """The packages issue 9 names, each with a script (some share one)."""
    covered = {"numpy", "pandas", "scipy", "pydantic", "orjson", "uvloop", "cryptography",
               "bcrypt", "argon2", "psycopg", "asyncpg", "sqlalchemy", "lxml", "pillow", "pyyaml",
               "msgpack", "grpcio", "protobuf", "tzdata", "pytz", "babel", "jinja2", "django",
               "whitenoise", "boto3", "matplotlib", "sentry", "opentelemetry", "requests",
               "certifi", "structlog", "setuptools"}
    assert covered <= set(SCRIPTS), covered - set(SCRIPTS)


def test_requirements_are_pinned_wheels_for_the_venv():
    lines = [line for line in REQUIREMENTS.read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.\-]+(\[[a-z,]+\])?==\S+", x) for x in lines)


# ---- the Django project served by app.bin ---------------------------------------

SETUP_DB = f"""
import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djproj.settings")
import django
django.setup()
from django.core.management import call_command
from django.contrib.auth.models import User
call_command("migrate", verbosity=0, interactive=False)
User.objects.create_superuser("admin", "admin@example.com", {ADMIN_PASSWORD!r})
print("ready")
"""


def test_django_admin_served_by_app_bin(real_venv, real_app_bin, tmp_path):
    env = clean_env(DJPROJ_DB=tmp_path / "db.sqlite3")
    setup = subprocess.run([str(real_app_bin), "python", "-c", SETUP_DB], capture_output=True,
                           text=True, env=env, timeout=300, check=False)
    assert (setup.returncode, setup.stdout) == (0, "ready\n"), setup.stderr
    static_root = site_packages(real_venv) / "djproj" / "staticfiles"
    factory = AppBinFactory(real_app_bin, tmp_path)
    try:
        server = factory(app=DJANGO_APP, env={"DJPROJ_DB": str(tmp_path / "db.sqlite3")},
                         timeout=120)
        client = httpx.Client(base_url=server.url, timeout=30)
        with client:
            login = client.get("/admin/login/")
            assert login.status_code == 200, login.text[:2000]
            page = login.text
            # The admin's own templates: admin/login.html in admin/base_site.html.
            assert "<title>Log in | Django site admin</title>" in page
            assert '<form action="/admin/login/" method="post" id="login-form">' in page
            assert '<div id="site-name"><a href="/admin/">Django administration</a></div>' in page
            # Static files: the hashed name the manifest gives, served with the
            # bytes collectstatic wrote, gzip'd on request, cached for ever.
            css = re.search(r'href="/static/(admin/css/base\.[0-9a-f]{12}\.css)"', page)
            assert css, page
            want = (static_root / css.group(1)).read_bytes()
            hashed = client.get(f"/static/{css.group(1)}", headers={"accept-encoding": "identity"})
            assert hashed.status_code == 200 and hashed.content == want
            assert hashed.headers["content-type"].startswith("text/css")
            assert "immutable" in hashed.headers["cache-control"]
            gzipped = client.get(f"/static/{css.group(1)}", headers={"accept-encoding": "gzip"})
            assert gzipped.headers.get("content-encoding") == "gzip" and gzipped.content == want
            plain = client.get("/static/admin/css/base.css", headers={"accept-encoding": "identity"})
            assert plain.status_code == 200
            assert plain.content == (static_root / "admin" / "css" / "base.css").read_bytes()
            js = client.get("/static/admin/js/core.js", headers={"accept-encoding": "identity"})
            assert js.status_code == 200
            assert js.content == (static_root / "admin" / "js" / "core.js").read_bytes()
            assert client.get("/static/admin/css/missing.css").status_code == 404
            # Log in with the form and its CSRF token.
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
            posted = client.post("/admin/login/?next=/admin/", data={
                "csrfmiddlewaretoken": token, "username": "admin", "password": ADMIN_PASSWORD,
                "next": "/admin/"})
            assert (posted.status_code, posted.headers.get("location")) == (302, "/admin/"), \
                posted.text[:2000]
            index = client.get("/admin/")
            assert index.status_code == 200
            assert "Site administration" in index.text and "Users" in index.text
        assert server.stop() == 0, server.log()[-4000:]
        log = server.log()
        assert '"GET /admin/login/ HTTP/1.1" 200' in log, log[-4000:]
    finally:
        factory.close()

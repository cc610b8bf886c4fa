"""Checks of the packager's inputs: the command-line values, the host, the venv."""

import importlib.machinery
import os
import platform
import re
import subprocess
import tempfile
from pathlib import Path

from . import PYTHON_TAG, PackError, UsageError
from .archive import FORMAT_VERSION, PAYLOAD_MAGIC, TRAILER_SIZE

_DOTTED_NAME = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_APP_SPEC = re.compile(rf"({_DOTTED_NAME}):({_DOTTED_NAME})")
_OPTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_CPYTHON_EXTENSION = re.compile(r"\.cpython-(\d)(\d+)[a-z]*-([^./]+)\.so$")
_OWN_EXTENSION_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
_HOST_TIMEOUT_SECONDS = 30


def parse_app(spec):
    """Splits "pkg.module:attr" into its module and attribute."""
    match = _APP_SPEC.fullmatch(spec)
    if not match:
        raise UsageError(f"--app {spec!r}: expected MODULE:ATTR, e.g. my_package.web:app")
    return match.group(1), match.group(2)


def parse_default(text):
    """Splits an OPTION=VALUE server default."""
    option, sep, value = text.partition("=")
    if not sep or not _OPTION_NAME.fullmatch(option) or "\n" in value or "\r" in value:
        raise UsageError(f"--default {text!r}: expected OPTION=VALUE, e.g. workers=4")
    return option, value


def check_host(host):
    """Checks that `host` is a bare appbin host built for this Python."""
    path = Path(host)
    if not path.is_file():
        raise PackError(f"host {host} does not exist (build appbin-host first)")
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - TRAILER_SIZE))
        if f.read(len(PAYLOAD_MAGIC)) == PAYLOAD_MAGIC:
            raise PackError(f"host {host} already carries a payload: pass the bare appbin-host")
    version, payload_format = host_python_version(path, with_format=True)
    if version != platform.python_version():
        raise PackError(f"host {host} embeds Python {version} but the stdlib to pack is "
                        f"Python {platform.python_version()}: rebuild the host")
    if payload_format != FORMAT_VERSION:
        raise PackError(f"host {host} reads payload format {payload_format} but this "
                        f"appbin-pack writes format {FORMAT_VERSION}: rebuild the host, or "
                        f"pack with the appbin-pack of its version")


def host_python_version(host, with_format=False):
    """The X.Y.Z of the `python X.Y.Z` line that `HOST --version` prints (and,
    `with_format`, the payload format the host reads: its `payload: none
    (this host reads format N)` line; hosts that do not say read format 1)."""
    try:
        result = subprocess.run([str(host), "--version"], capture_output=True, text=True,
                                timeout=_HOST_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PackError(f"cannot run host {host} --version: {e}") from None
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or [""])[-1]
        raise PackError(f"{host} --version failed with status {result.returncode}: {detail}")
    version, payload_format = None, 1
    for line in result.stdout.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "python":
            version = version or words[1]
        match = re.fullmatch(r"payload: none \(this host reads format (\d+)\)", line.strip())
        if match:
            payload_format = int(match.group(1))
    if version:
        return (version, payload_format) if with_format else version
    raise PackError(f"{host} --version printed no 'python X.Y.Z' line: is it an appbin host?")


def find_site_packages(venv):
    """Checks that `venv` is a venv of this Python X.Y; returns its site-packages."""
    root = Path(venv)
    if not root.is_dir():
        raise PackError(f"venv {venv} does not exist")
    config = root / "pyvenv.cfg"
    if not config.is_file():
        raise PackError(f"{venv} is not a venv: it has no pyvenv.cfg")
    version = venv_python_version(config.read_text(encoding="utf-8", errors="replace"))
    if version and version != PYTHON_TAG:
        raise PackError(f"venv {venv} is for Python {version}, but this packer runs (and "
                        f"packs the stdlib of) Python {PYTHON_TAG}: run build/appbin-pack, "
                        f"which picks the host of the venv's version")
    site = root / "lib" / f"python{PYTHON_TAG}" / "site-packages"
    if not site.is_dir():
        raise PackError(f"venv {venv} has no lib/python{PYTHON_TAG}/site-packages")
    return Path(os.path.abspath(site))


def venv_python_version(config_text):
    """"X.Y" from pyvenv.cfg's version / version_info key, or None."""
    values = {}
    for line in config_text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    version = values.get("version") or values.get("version_info") or ""
    match = re.match(r"(\d+\.\d+)", version)
    return match.group(1) if match else None


def check_extension_abis(members):
    """Fails on an extension module built for another Python or platform."""
    for member in members:
        match = _CPYTHON_EXTENSION.search(member)
        if match and not member.endswith(_OWN_EXTENSION_SUFFIX):
            major, minor, target = match.groups()
            raise PackError(f"{member} is built for Python {major}.{minor} ({target}), "
                            f"not for this Python {PYTHON_TAG} ({_OWN_EXTENSION_SUFFIX[1:-3]})")


def check_app_module(module, site_members):
    """Fails unless `module` is a module or package among the site-packages members."""
    base = "site-packages/" + module.replace(".", "/")
    members = set(site_members)
    if any(base + suffix in members
           for suffix in (".py", *importlib.machinery.EXTENSION_SUFFIXES)):
        return
    if any(member.startswith(base + "/") for member in members):
        return
    raise PackError(f"--app module {module} not found in the venv's site-packages "
                    f"(no {base}.py nor {base}/)")


def check_output(output):
    """Fails unless a file can be created in the directory of `output`."""
    path = Path(output)
    if path.is_dir():
        raise PackError(f"output {output} is a directory")
    directory = path.parent
    if not directory.is_dir():
        raise PackError(f"cannot write {output}: directory {directory} does not exist")
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise PackError(f"cannot write {output}: {e.strerror}") from None

"""Which host packs a venv: the hosts a CMake build tree offers, one per Python X.Y.

A build tree has its own host (appbin-host.info beside appbin-host) and, with
-DAPPBIN_PYTHON_VERSIONS, one build tree per other version in hosts/X.Y/.
Each appbin-host.info names the host's Python version, the python whose
libpython the host links (and whose stdlib is packed) and the host.
"""

import dataclasses
import os
import sys
from pathlib import Path

from . import PYTHON_TAG, PackError
from .inputs import host_python_version, venv_python_version

INFO_FILE = "appbin-host.info"
PACK_SCRIPT = Path(__file__).resolve().parent.parent / "appbin_pack.py"
# Set in the packer that a packer started under another python: it runs
# where it was sent, whatever it finds (no second hop).
_REEXEC_ENV = "APPBIN_PACK_SELECTED"


@dataclasses.dataclass(frozen=True)
class HostBuild:
    """One built host: its Python X.Y.Z, that python, the host executable."""

    version: str
    python: str
    host: str

    @property
    def tag(self):
        """X.Y"""
        return ".".join(self.version.split(".")[:2])


def read_info(path):
    """The HostBuild an appbin-host.info describes, or None if it is not built."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return None
    values = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
    build = HostBuild(values.get("version", ""), values.get("python", ""),
                      values.get("host", ""))
    if not (build.version and os.path.isfile(build.host) and os.access(build.python, os.X_OK)):
        return None
    return build


def build_hosts(build_dir):
    """{X.Y: HostBuild} of the build tree `build_dir` (built hosts only)."""
    root = Path(build_dir)
    hosts = {}
    for info in [root / INFO_FILE, *sorted(root.glob(f"hosts/*/{INFO_FILE}"))]:
        build = read_info(info)
        if build:
            hosts.setdefault(build.tag, build)
    return hosts


def _versions(hosts):
    tags = sorted(hosts, key=lambda t: tuple(int(p) for p in t.split(".")))
    if not tags:
        return "none (build appbin-host first)"
    return tags[0] if len(tags) == 1 else ", ".join(tags[:-1]) + " and " + tags[-1]


def select(args, argv):
    """Sets args.host from the build tree's hosts (args.build_dir) when none
    was given: the host of the venv's Python version. When that host (or an
    explicit --host) embeds another Python than the one running, runs the
    packer again under that host's python (never returns then)."""
    if not args.build_dir:
        if not args.host:
            raise PackError("--host is required (or run build/appbin-pack, which knows "
                            "the hosts it built)")
        return
    hosts = build_hosts(args.build_dir)
    if args.host:
        try:
            tag = ".".join(host_python_version(args.host).split(".")[:2])
        except PackError:
            return  # check_host() says what is wrong with it
        chosen = hosts.get(tag)
    else:
        tag = _venv_tag(args.venv) or PYTHON_TAG
        chosen = hosts.get(tag)
        if not chosen:
            raise PackError(f"venv {args.venv} is for Python {tag}, but this appbin-pack "
                            f"packs Python {_versions(hosts)} (hosts of {args.build_dir}; "
                            f"others: cmake -DAPPBIN_PYTHON_VERSIONS=\"3.13;3.14\")")
        args.host = chosen.host
    if chosen and tag != PYTHON_TAG and not os.environ.get(_REEXEC_ENV):
        env = dict(os.environ, **{_REEXEC_ENV: "1"})
        command = [chosen.python, "-I", str(PACK_SCRIPT), *argv, "--host", args.host]
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execve(chosen.python, command, env)
        except OSError as e:
            raise PackError(f"cannot run {chosen.python} (the python of the Python {tag} "
                            f"host): {e.strerror}") from None


def _venv_tag(venv):
    """X.Y of a venv's pyvenv.cfg, or None (the checks of the venv report it)."""
    try:
        text = (Path(venv) / "pyvenv.cfg").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return venv_python_version(text)

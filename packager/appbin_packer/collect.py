"""Which files of the stdlib and of a venv's site-packages go into the archive.

Both walks return SourceFile records sorted by member path. What is left out,
and why, is listed in packager/README.md.
"""

import csv
import dataclasses
import email.parser
import fnmatch
import io
import os
import posixpath
import re
from pathlib import Path

STDLIB_PREFIX = "stdlib/"
DYNLOAD_PREFIX = "stdlib/lib-dynload/"
SITE_PREFIX = "site-packages/"

# Top-level stdlib entries left out: tests, GUI and teaching tools, build-time
# support, tools to install packages, the Debian integration hook.
_STDLIB_DROPPED_TOP = frozenset({
    "test", "idlelib", "tkinter", "turtledemo", "turtle.py", "lib2to3", "ensurepip",
    "pydoc_data", "site-packages", "dist-packages", "lib-dynload",
    "sitecustomize.py", "EXTERNALLY-MANAGED",
})
_STDLIB_DROPPED_TOP_PATTERNS = ("config-3.*",)
_TEST_DIRS = frozenset({"test", "tests", "idle_test"})
# lib-dynload modules left out: CPython's own test modules, and modules whose
# system library is copyleft (readline: GPL-3 libreadline; _dbm: Sleepycat
# libdb) or that drag in a large stack for a deprecated API (nis: libnsl,
# libtirpc and Kerberos).
_DYNLOAD_DROPPED_PATTERNS = (
    "_test*", "xxlimited*", "_xxtestfuzz*", "_ctypes_test*", "_tkinter*",
    "readline.*", "_dbm.*", "nis.*",
)

_COMPILED_SUFFIXES = (".pyc", ".pyo", ".pyi")
_METADATA_DIR_SUFFIXES = (".dist-info", ".egg-info")
# RECORD is kept rewritten to list what app.bin holds (pack.py): what
# importlib.metadata.files() and `pip show -f`-like code read.
_KEPT_METADATA_FILES = frozenset({"METADATA", "PKG-INFO", "entry_points.txt", "top_level.txt",
                                  "RECORD"})
_KEPT_METADATA_DIRS = frozenset({"licenses", "sboms"})
_LICENCE_PREFIXES = ("LICENSE", "LICENCE", "COPYING", "NOTICE", "AUTHORS")
# Installers: they change a venv, and app.bin is not one (setuptools stays:
# pkg_resources and the distutils shim are used at run time).
_DROPPED_DISTRIBUTIONS = frozenset({"pip"})


@dataclasses.dataclass(frozen=True)
class SourceFile:
    """A file to pack: its path in the archive and where to read it."""

    member: str
    path: Path


def is_shared_object(name):
    """Whether a file name looks like a shared object (x.so, libx.so.1)."""
    return name.endswith(".so") or ".so." in posixpath.basename(name)


# --- stdlib --------------------------------------------------------------------

def stdlib_files(stdlib_dir, dynload_dir):
    """The stdlib's sources and data, and its lib-dynload extension modules."""
    files = [SourceFile(STDLIB_PREFIX + rel, Path(stdlib_dir, rel))
             for rel in _walk(stdlib_dir, _keep_stdlib_dir)
             if _keep_stdlib_file(rel)]
    files += [SourceFile(DYNLOAD_PREFIX + name, Path(dynload_dir, name))
              for name in sorted(os.listdir(dynload_dir))
              if is_shared_object(name) and not _matches_any(name, _DYNLOAD_DROPPED_PATTERNS)]
    return sorted(files, key=lambda f: f.member)


def _keep_stdlib_dir(rel):
    name = posixpath.basename(rel)
    if "/" not in rel and (name in _STDLIB_DROPPED_TOP
                           or _matches_any(name, _STDLIB_DROPPED_TOP_PATTERNS)):
        return False
    return name not in _TEST_DIRS


def _keep_stdlib_file(rel):
    if "/" not in rel and rel in _STDLIB_DROPPED_TOP:
        return False
    return not rel.endswith(_COMPILED_SUFFIXES)


# --- site-packages -------------------------------------------------------------

@dataclasses.dataclass
class Distribution:
    """An installed distribution: its metadata directory and the files it owns."""

    name: str          # canonical (PEP 503) name
    label: str         # "Name Version", for people
    metadata_dir: str  # e.g. "pydantic-2.10.4.dist-info"
    files: frozenset   # paths relative to site-packages


@dataclasses.dataclass
class SitePackages:
    """The selected files of a site-packages directory."""

    files: list          # SourceFile records, sorted
    owners: dict         # member -> label of the distribution that installed it
    dropped: list        # labels of the distributions left out
    warnings: list


def site_packages_files(site_dir):
    """Selects the files of `site_dir` to pack (rules: packager/README.md)."""
    warnings = []
    all_files = sorted(_walk(site_dir, lambda rel: True, warnings))
    distributions = [_read_distribution(site_dir, rel, all_files)
                     for rel in sorted({f.split("/")[0] for f in all_files})
                     if rel.endswith(_METADATA_DIR_SUFFIXES) and Path(site_dir, rel).is_dir()]
    dropped = _dropped_distributions(distributions)
    dropped_files = set().union(*(d.files for d in dropped))
    dropped_dirs = tuple(d.metadata_dir + "/" for d in dropped)
    owners_by_rel = {rel: d.label for d in distributions for rel in d.files}
    files, owners = [], {}
    for rel in all_files:
        if rel in dropped_files or rel.startswith(dropped_dirs) or not _keep_site_file(rel):
            continue
        member = SITE_PREFIX + rel
        files.append(SourceFile(member, Path(site_dir, rel)))
        if rel in owners_by_rel:
            owners[member] = owners_by_rel[rel]
        if rel.endswith(".pth") and "/" not in rel:
            warnings += pth_warnings(Path(site_dir), rel)
    return SitePackages(files, owners, sorted(d.label for d in dropped), warnings)


def _keep_site_file(rel):
    if rel.endswith(_COMPILED_SUFFIXES):
        return False
    top, _, rest = rel.partition("/")
    if not rest:
        return not top.endswith(".virtualenv")  # virtualenv's seeding markers
    if top.endswith(_METADATA_DIR_SUFFIXES):
        return _keep_metadata_file(rest)
    return True


def _keep_metadata_file(rel):
    """Whether to keep a file of a *.dist-info / *.egg-info directory."""
    first, _, rest = rel.partition("/")
    if rest:
        return first in _KEPT_METADATA_DIRS
    return first in _KEPT_METADATA_FILES or first.upper().startswith(_LICENCE_PREFIXES)


def canonical_name(name):
    """PEP 503 normalisation: "Typing_Extensions" -> "typing-extensions"."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _read_distribution(site_dir, metadata_dir, all_files):
    path = Path(site_dir, metadata_dir)
    metadata_file = path / ("METADATA" if metadata_dir.endswith(".dist-info") else "PKG-INFO")
    headers = email.parser.BytesHeaderParser().parsebytes(
        metadata_file.read_bytes() if metadata_file.is_file() else b"")
    stem = metadata_dir.rsplit(".", 1)[0]
    name = headers.get("Name") or stem.split("-")[0]
    version = headers.get("Version") or ""
    own = {rel for rel in all_files if rel.startswith(metadata_dir + "/")}
    return Distribution(
        name=canonical_name(name),
        label=f"{name} {version}".strip(),
        metadata_dir=metadata_dir,
        files=frozenset(own | _installed_files(path, all_files)),
    )


def _installed_files(metadata_path, all_files):
    """Files a distribution installed: from RECORD, else from top_level.txt."""
    record = metadata_path / "RECORD"
    if record.is_file():
        rows = csv.reader(io.StringIO(record.read_text(encoding="utf-8")))
        paths = {posixpath.normpath(row[0]) for row in rows if row}
        return {p for p in paths if not p.startswith(("../", "/"))}
    top_level = metadata_path / "top_level.txt"
    if not top_level.is_file():
        return set()
    names = set(top_level.read_text(encoding="utf-8").split())
    return {rel for rel in all_files if rel.split("/")[0].split(".")[0] in names}


def _dropped_distributions(distributions):
    """The distributions left out: pip (see _DROPPED_DISTRIBUTIONS)."""
    return [d for d in distributions if d.name in _DROPPED_DISTRIBUTIONS]


def pth_warnings(site_dir, rel):
    """Warnings for .pth lines that point outside site-packages.

    Such paths (editable installs, mostly) are not packed, so they will not
    exist where app.bin runs.
    """
    warnings = []
    text = Path(site_dir, rel).read_text(encoding="utf-8", errors="replace")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("import ", "import\t")):
            if "__editable__" in line:
                warnings.append(f"{rel}: editable install; its sources are outside the venv "
                                "and will not be packed")
            continue
        target = Path(os.path.normpath(Path(site_dir, line)))
        if not target.is_relative_to(site_dir):
            warnings.append(f"{rel}: adds {target} to sys.path, which is outside "
                            "site-packages and will not be packed")
    return warnings


# --- helpers -------------------------------------------------------------------

def _walk(root, keep_dir, warnings=None):
    """Relative POSIX paths of the files under `root`, sorted, without __pycache__.

    `keep_dir(rel)` prunes directories. Symlinked directories are not
    followed (a warning is added to `warnings` when given).
    """
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        kept = []
        for name in sorted(dirnames):
            rel = prefix + name
            if os.path.islink(os.path.join(dirpath, name)):
                if warnings is not None:
                    warnings.append(f"{rel}: symlinked directory not packed")
            elif name != "__pycache__" and keep_dir(rel):
                kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            yield prefix + name


def _matches_any(name, patterns):
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def excluded(member, patterns):
    """Whether `member` or one of its parent directories matches a pattern."""
    parts = member.split("/")
    prefixes = ("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return any(_matches_any(prefix, patterns) for prefix in prefixes)

"""Packing: from checked inputs to the members of the archive, then app.bin."""

import csv
import dataclasses
import importlib.machinery
import io
import os
import posixpath
import platform
import sysconfig
from pathlib import Path

from . import VERSION
from . import codecache
from .archive import (CODECACHE_MEMBER, LIBS_PREFIX, MANIFEST_MEMBER, Member, check_compression,
                      manifest_bytes, write_app)
from .collect import (SITE_PREFIX, excluded, is_shared_object, site_packages_files,
                      stdlib_files)
from .elfdeps import DependencyResolver
from .imports import RUNTIME_IMPORTS, startup_members
from .inputs import (check_app_module, check_extension_abis, check_host, check_output,
                     find_site_packages)
from .pyc import compile_unchecked_pyc


@dataclasses.dataclass(frozen=True)
class Options:
    """What to pack, as given on the command line."""

    venv: str
    app: str              # "module:attr", already checked
    output: str
    host: str
    factory: bool = False
    keep_sources: bool = True
    compression: int = 93  # archive.ZSTD, DEFLATED or STORED
    level: int | None = None  # compression level; None: archive.DEFAULT_LEVEL
    # Which code (.pyc, shared objects) is stored: "imports" (what the app's
    # imports reach, and the libraries it needs), "all" or "none".
    store_code: str = "imports"
    # Run the written app.bin once to record what start-up compiles from
    # strings, and write it again with that cache (codecache.py).
    code_cache: bool = True
    excludes: tuple = ()
    defaults: tuple = ()  # (option, value) pairs
    bundle_libs: bool = True
    # Libraries left to the system: Debian and distroless's base and cc
    # images have them, and the target's distribution keeps them patched.
    system_libs: tuple = ("libcrypto.so.3", "libssl.so.3", "libz.so.1")


@dataclasses.dataclass(frozen=True)
class PackResult:
    """What was packed, for the summary."""

    written: object   # archive.WrittenApp
    owners: dict      # member -> distribution label
    dropped: list     # distributions left out
    code_cache: object = None  # codecache.Training, when one ran


def pack(options, warn):
    """Packs according to `options`; `warn(message)` reports non-fatal problems."""
    check_output(options.output)
    check_host(options.host)
    check_compression(options.compression)
    site_dir = find_site_packages(options.venv)
    site = site_packages_files(site_dir)
    for message in site.warnings:
        warn(message)
    stdlib = stdlib_files(sysconfig.get_path("stdlib"), sysconfig.get_config_var("DESTSHARED"))
    files = [f for f in stdlib + site.files if not excluded(f.member, options.excludes)]
    site_members = [f.member for f in files if f.member.startswith(SITE_PREFIX)]
    check_extension_abis(site_members)
    check_app_module(options.app.partition(":")[0], site_members)

    members, owners = _file_members(files, site.owners, options.keep_sources, warn)
    lib_members, preloads = _library_members(files, site_dir, options.bundle_libs,
                                             frozenset(options.system_libs), warn)
    members += lib_members
    members = _rewrite_records(members)
    members.append(Member(MANIFEST_MEMBER, data=manifest_bytes(_manifest(options, preloads))))
    stored_code = None
    if options.store_code == "imports":
        stored_code = _startup_code(members, options.app.partition(":")[0], preloads)
    bodies = {}  # what the first write compressed, for the second
    written = write_app(options.output, options.host, members, options.compression,
                        options.level, options.store_code == "none", stored_code, bodies)
    code_cache = None
    if options.code_cache:
        code_cache = codecache.train(options.output, options.app, options.factory)
        for problem in code_cache.problems:
            warn(f"code cache: {problem}; packed with the {code_cache.entries} entries "
                 f"recorded (--no-code-cache skips this run)")
        if code_cache.native:
            manifest = dict(_manifest(options, preloads),
                            **{"startup.native": " ".join(code_cache.native)})
            members = [Member(MANIFEST_MEMBER, data=manifest_bytes(manifest))
                       if m.name == MANIFEST_MEMBER else m for m in members]
        if code_cache.member:
            members.append(Member(CODECACHE_MEMBER, data=code_cache.member))
        if code_cache.member or code_cache.native:
            written = write_app(options.output, options.host, members, options.compression,
                                options.level, options.store_code == "none", stored_code,
                                bodies)
    return PackResult(written, owners, site.dropped, code_cache)


def _startup_code(members, app_module, preloads):
    """The code members start-up runs: what the app's module and the host's
    runtime import (imports.py), the libraries those extension modules load,
    and the code cache, once there is one."""
    by_name = {m.name: m for m in members}
    roots = [app_module, *RUNTIME_IMPORTS]
    if hasattr(sysconfig, "_get_sysconfigdata_name"):  # imported by name by sysconfig
        roots.append(sysconfig._get_sysconfigdata_name())
    for member in by_name.values():  # the runtime runs .pth files' import lines
        if member.name.startswith(SITE_PREFIX) and member.name.endswith(".pth") and \
                member.name.count("/") == 1:
            for line in member.read().decode("utf-8", "replace").splitlines():
                if line.startswith(("import ", "import\t")):
                    roots += _imported_names(line)
    code = startup_members(by_name, roots)
    for member in list(code):
        code.update(preloads.get(f"preload.{member}", "").split())
    code.add(CODECACHE_MEMBER)
    return code


def _imported_names(line):
    """The modules a .pth file's import line imports (its first statement)."""
    statement = line.split(";", 1)[0][len("import"):]
    return [part.split(" as ")[0].strip() for part in statement.split(",") if part.strip()]


def _file_members(files, owners, keep_sources, warn):
    """Members for the collected files: .py compiled to a .pyc beside it."""
    members, owners = [], dict(owners)
    for f in files:
        if not f.member.endswith(".py"):
            members.append(Member(f.member, path=f.path, executable=is_shared_object(f.member)))
            continue
        source = f.path.read_bytes()
        try:
            pyc = compile_unchecked_pyc(source, f.member)
        except (SyntaxError, ValueError) as e:
            warn(f"{f.member} does not compile ({type(e).__name__}: {e}); packed without a .pyc")
            members.append(Member(f.member, data=source))
            continue
        pyc_member = f.member[:-3] + ".pyc"
        members.append(Member(pyc_member, data=pyc))
        if f.member in owners:
            owners[pyc_member] = owners[f.member]
        if keep_sources:
            members.append(Member(f.member, data=source))
    return members, owners


def _rewrite_records(members):
    """Each distribution's RECORD, listing what the archive holds of it: rows
    of files left out (__pycache__, INSTALLER, scripts outside site-packages,
    --exclude...) go, and the .pyc beside each .py is listed (without a hash,
    as installers list bytecode). The files kept are packed unchanged, so
    their hashes and sizes stand."""
    names = {m.name for m in members}
    out = []
    for m in members:
        if not (m.name.startswith(SITE_PREFIX) and m.name.endswith(".dist-info/RECORD")):
            out.append(m)
            continue
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        for row in csv.reader(io.StringIO(m.read().decode("utf-8", "surrogateescape"))):
            if not row:
                continue
            rel = posixpath.normpath(row[0])
            if rel.startswith("../") or rel.startswith("/"):
                continue
            if SITE_PREFIX + rel in names:
                writer.writerow(row)
            if rel.endswith(".py") and SITE_PREFIX + rel[:-3] + ".pyc" in names:
                writer.writerow([rel[:-3] + ".pyc", "", ""])
        out.append(Member(m.name, data=text.getvalue().encode("utf-8", "surrogateescape")))
    return out


def _is_extension_module(member):
    """Whether a member may be a Python extension module (not a `<pkg>.libs` library)."""
    directories = member.split("/")[:-1]
    return (member.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
            and not any(d.endswith(".libs") for d in directories))


def _library_members(files, site_dir, bundle, system_libs, warn):
    """Bundled system libraries and the manifest's preload entries.

    Returns (members for appbin/libs/, {"preload.<extension>": "<lib> ..."}).
    """
    packed = {f.path: f.member for f in files}
    resolver = DependencyResolver(follow=(lambda path: True) if bundle
                                  else (lambda path: path in packed))
    bundled, preloads = {}, {}
    for f in files:
        if not _is_extension_module(f.member):
            continue
        needed = []
        for lib in resolver.load_order(f.path):
            if lib in packed:
                needed.append(packed[lib])
            elif lib.is_relative_to(site_dir):
                warn(f"{f.member} needs {lib.relative_to(site_dir)}, which is excluded")
            elif bundle and resolver.library_name(lib) not in system_libs:
                member = LIBS_PREFIX + resolver.library_name(lib)
                bundled.setdefault(member, lib)
                needed.append(member)
        if needed:
            preloads[f"preload.{f.member}"] = " ".join(needed)
    for name, needer in sorted(resolver.missing.items()):
        warn(f"{name} (needed by {needer}) not found; it must exist where app.bin runs")
    members = [Member(name, path=Path(os.path.realpath(path)), executable=True)
               for name, path in sorted(bundled.items())]
    return members, preloads


def _manifest(options, preloads):
    """The manifest's entries (see host/payload.h)."""
    entries = {
        "format": "2",
        "appbin_version": VERSION,
        "python_version": platform.python_version(),
        "app": options.app,
        "factory": "1" if options.factory else "0",
    }
    entries.update((f"default.{option}", value) for option, value in options.defaults)
    entries.update(preloads)
    return entries

"""Shared-library dependencies of ELF files, resolved as the dynamic loader would.

The host loads extension modules from memory, where `$ORIGIN` means nothing
and the libraries a module needs may not exist on the target machine. For
every extension module the packager therefore lists the libraries to load
first (dependencies first), and copies the system libraries that are not
part of glibc into the archive.
"""

import dataclasses
import os
import struct
from pathlib import Path

# Libraries of glibc itself: always present where the host runs, and tied to
# the exact ld.so of the machine, so never bundled.
# (libcrypt.so.1 is libxcrypt on Debian 12, and libnsl.so.2 libnsl2: not glibc.)
_GLIBC_LIBRARIES = frozenset({
    "libc", "libm", "libpthread", "libdl", "librt", "libutil", "libresolv", "libanl",
    "libBrokenLocale", "libmvec", "libthread_db", "libc_malloc_debug",
})
_GLIBC_PREFIXES = ("libnss_", "ld-linux")

# Where ld.so looks after RPATH/RUNPATH on Debian 12 (x86-64).
SYSTEM_LIBRARY_DIRS = (
    Path("/lib/x86_64-linux-gnu"),
    Path("/usr/lib/x86_64-linux-gnu"),
    Path("/lib64"),
    Path("/usr/lib"),
)

_ELF_MAGIC = b"\x7fELF"
_ELFCLASS64 = 2
_ELFDATA2LSB = 1
_PT_LOAD = 1
_PT_DYNAMIC = 2
_DT_NULL, _DT_NEEDED, _DT_STRTAB, _DT_SONAME, _DT_RPATH, _DT_RUNPATH = 0, 1, 5, 14, 15, 29

_ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
_PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")
_DYNAMIC_ENTRY = struct.Struct("<qQ")


def is_glibc(soname):
    """Whether `soname` (e.g. "libm.so.6") names a library of glibc."""
    return soname.split(".so")[0] in _GLIBC_LIBRARIES or soname.startswith(_GLIBC_PREFIXES)


@dataclasses.dataclass(frozen=True)
class DynamicInfo:
    """What the dynamic section of an ELF file says about its dependencies."""

    needed: tuple
    soname: str | None = None
    rpath: tuple = ()
    runpath: tuple = ()


def read_dynamic(path):
    """Parses the dynamic section of a 64-bit little-endian ELF file.

    Returns a DynamicInfo, or None when the file is not such an ELF file or
    has no dynamic section.
    """
    data = Path(path).read_bytes()
    if len(data) < _ELF_HEADER.size or data[:4] != _ELF_MAGIC:
        return None
    if data[4] != _ELFCLASS64 or data[5] != _ELFDATA2LSB:
        return None
    header = _ELF_HEADER.unpack_from(data)
    phoff, phentsize, phnum = header[5], header[9], header[10]
    segments = [_PROGRAM_HEADER.unpack_from(data, phoff + i * phentsize) for i in range(phnum)]
    dynamic = next((s for s in segments if s[0] == _PT_DYNAMIC), None)
    if dynamic is None:
        return None
    entries = _dynamic_entries(data, offset=dynamic[2], size=dynamic[5])
    strtab = _file_offset(segments, _first(entries, _DT_STRTAB))
    if strtab is None:
        return None
    strings = {tag: [_c_string(data, strtab + value) for t, value in entries if t == tag]
               for tag in (_DT_NEEDED, _DT_SONAME, _DT_RPATH, _DT_RUNPATH)}
    return DynamicInfo(
        needed=tuple(strings[_DT_NEEDED]),
        soname=next(iter(strings[_DT_SONAME]), None),
        rpath=_split_paths(strings[_DT_RPATH]),
        runpath=_split_paths(strings[_DT_RUNPATH]),
    )


def _dynamic_entries(data, offset, size):
    entries = []
    for pos in range(offset, offset + size, _DYNAMIC_ENTRY.size):
        tag, value = _DYNAMIC_ENTRY.unpack_from(data, pos)
        if tag == _DT_NULL:
            break
        entries.append((tag, value))
    return entries


def _first(entries, tag):
    return next((value for t, value in entries if t == tag), None)


def _file_offset(segments, address):
    """Maps a virtual address to a file offset through the PT_LOAD segments."""
    if address is None:
        return None
    for p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ in segments:
        if p_type == _PT_LOAD and p_vaddr <= address < p_vaddr + p_filesz:
            return address - p_vaddr + p_offset
    return None


def _c_string(data, offset):
    return data[offset:data.index(b"\0", offset)].decode("utf-8", "surrogateescape")


def _split_paths(values):
    return tuple(p for value in values for p in value.split(":") if p)


def _expand_origin(entries, origin):
    """Expands $ORIGIN / ${ORIGIN} in RPATH or RUNPATH entries."""
    return [Path(e.replace("${ORIGIN}", str(origin)).replace("$ORIGIN", str(origin)))
            for e in entries]


class DependencyResolver:
    """Resolves and orders the shared libraries ELF files need.

    `resolve_closure(path)` gives the non-glibc libraries an ELF file needs,
    directly or not, as paths on disk in load order (dependencies first).
    Results are cached; libraries that cannot be found are collected in
    `missing` (name -> the file that needs it).
    """

    def __init__(self, search_dirs=SYSTEM_LIBRARY_DIRS, follow=lambda path: True):
        """`follow(path)` says whether to look into a found library's own needs."""
        self._search_dirs = tuple(search_dirs)
        self._follow = follow
        self._closures = {}
        self._names = {}
        self.missing = {}

    def library_name(self, path):
        """The name the loader knows a found library by (its SONAME, else its needed name)."""
        return self._names[path]

    def resolve_closure(self, path, inherited_rpath=()):
        """Libraries `path` needs, transitively, dependencies first."""
        key = (Path(path), tuple(inherited_rpath))
        if key not in self._closures:
            self._closures[key] = self._compute_closure(Path(path), tuple(inherited_rpath))
        return self._closures[key]

    def _compute_closure(self, path, inherited_rpath):
        info = read_dynamic(path)
        if info is None:
            return []
        origin = path.parent
        # ld.so searches the DT_RPATH of the requesting object and of the objects
        # that loaded it, but none of them when the requester has a DT_RUNPATH.
        own_rpath = () if info.runpath else tuple(_expand_origin(info.rpath, origin))
        rpath = own_rpath + inherited_rpath
        search = ([] if info.runpath else list(rpath)) + _expand_origin(info.runpath, origin)
        search += self._search_dirs
        ordered = []
        for name in info.needed:
            if is_glibc(name):
                continue
            found = self._find(name, search)
            if found is None:
                self.missing.setdefault(name, path)
                continue
            self._names.setdefault(found, self._soname_of(found, name))
            deps = self.resolve_closure(found, rpath) if self._follow(found) else []
            for lib in [*deps, found]:
                if lib not in ordered:
                    ordered.append(lib)
        return ordered

    @staticmethod
    def _find(name, search):
        if "/" in name:
            return Path(name) if os.path.isfile(name) else None
        for directory in search:
            candidate = directory / name
            if candidate.is_file():
                return Path(os.path.normpath(candidate))
        return None

    @staticmethod
    def _soname_of(path, needed_name):
        info = read_dynamic(path)
        return info.soname if info is not None and info.soname else needed_name

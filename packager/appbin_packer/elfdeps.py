"""Shared-library dependencies of ELF files, resolved as the dynamic loader would.

The host loads extension modules from memory, where `$ORIGIN` means nothing
and the libraries a module needs may not exist on the target machine. For
every extension module the packager therefore lists the libraries to load
first (in the dynamic loader's own order), and copies the system libraries that are not
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
    """Finds the shared libraries ELF files need, in the order ld.so loads them.

    `load_order(path)` walks the dependency graph of `path` the way glibc's
    dynamic loader does when it loads `path` (_dl_map_object_deps): breadth
    first, each object's DT_NEEDED in order, a name matching an object already
    loaded (by the name it was loaded under or by its SONAME, or by file
    identity) reusing it. Cycles (libfreetype and libharfbuzz need each other
    in pillow's wheel) are walked like any other edge. Each object is searched
    for with the DT_RPATH of the object needing it and of the objects that
    loaded those (unless it has a DT_RUNPATH), then its DT_RUNPATH, then the
    system directories. The result lists non-glibc libraries as paths on
    disk; libraries that cannot be found are collected in `missing` (name ->
    the file that needs it). Reading ELF files and walks are cached.
    """

    def __init__(self, search_dirs=SYSTEM_LIBRARY_DIRS, follow=lambda path: True):
        """`follow(path)` says whether to look into a found library's own needs."""
        self._search_dirs = tuple(search_dirs)
        self._follow = follow
        self._dynamic = {}
        self._orders = {}
        self._names = {}
        self.missing = {}

    def library_name(self, path):
        """The name the loader knows a found library by (its SONAME, else its needed name)."""
        return self._names[path]

    def load_order(self, path):
        """Libraries `path` needs, directly or not, in ld.so's load order (breadth first)."""
        root = Path(path)
        if root not in self._orders:
            self._orders[root] = tuple(self._walk(root))
        return self._orders[root]

    def _walk(self, root):
        loader_of = {root: None}    # loaded object -> the object whose DT_NEEDED loaded it
        by_name = {}                # names loaded objects answer to -> object
        by_identity = {}            # (st_dev, st_ino) -> object
        root_info = self._read(root)
        if root_info is not None and root_info.soname:
            by_name[root_info.soname] = root
        by_identity[_identity(root)] = root
        order, queue = [], [root]
        for current in queue:       # the queue grows while it is walked
            info = self._read(current)
            if info is None:
                continue
            for name in info.needed:
                if is_glibc(name):
                    continue
                found = by_name.get(name)
                if found is None:
                    found = self._find(name, self._search_path(current, loader_of))
                    if found is None:
                        self.missing.setdefault(name, current)
                        continue
                    found = by_identity.setdefault(_identity(found), found)
                    self._names.setdefault(found, self._soname_of(found, name))
                    by_name[name] = found
                    by_name.setdefault(self._names[found], found)
                if found in loader_of:
                    continue
                loader_of[found] = current
                order.append(found)
                if self._follow(found):
                    queue.append(found)
        return order

    def _search_path(self, requester, loader_of):
        """Directories ld.so searches for a DT_NEEDED name of `requester`."""
        info = self._read(requester)
        search = []
        # DT_RPATH of the requester and of the chain of objects that loaded it,
        # none of them when the requester has a DT_RUNPATH; an object with both
        # has its DT_RPATH ignored.
        if not info.runpath:
            obj = requester
            while obj is not None:
                obj_info = self._read(obj)
                if obj_info is not None and not obj_info.runpath:
                    search += _expand_origin(obj_info.rpath, obj.parent)
                obj = loader_of[obj]
        search += _expand_origin(info.runpath, requester.parent)
        return search + list(self._search_dirs)

    def _read(self, path):
        if path not in self._dynamic:
            self._dynamic[path] = read_dynamic(path)
        return self._dynamic[path]

    @staticmethod
    def _find(name, search):
        if "/" in name:
            return Path(name) if os.path.isfile(name) else None
        for directory in search:
            candidate = directory / name
            if candidate.is_file():
                return Path(os.path.normpath(candidate))
        return None

    def _soname_of(self, path, needed_name):
        info = self._read(path)
        return info.soname if info is not None and info.soname else needed_name


def _identity(path):
    st = os.stat(path)
    return st.st_dev, st.st_ino

"""The payload appended to the host: manifest, zip archive and trailer.

The layout is host/payload.h's: [host][zip][64-byte trailer]. The zip is
written on its own, so its offsets are relative to the archive start, and
deterministically: members sorted bytewise (with an entry for every
directory, which zipimport needs to find namespace packages), fixed
timestamps and modes, no extra fields, no comment.
"""

import dataclasses
import hashlib
import os
import posixpath
import shutil
import struct
import tempfile
import zipfile
from pathlib import Path

from . import PackError

PAYLOAD_MAGIC = b"APPBIN\0\1"
FORMAT_VERSION = 1
TRAILER_SIZE = 64
_TRAILER = struct.Struct("<8sIIQQ32s")
assert _TRAILER.size == TRAILER_SIZE

MANIFEST_MEMBER = "appbin/manifest"
LIBS_PREFIX = "appbin/libs/"
# "auto": what start-up reads (.pyc, native code) is stored, to be read
# straight from memory; what is rarely read (sources for tracebacks, data,
# metadata, licences) is deflated, which also shrinks what is hashed at start.
AUTO = -1
COMPRESSION = {"auto": AUTO, "stored": zipfile.ZIP_STORED, "deflate": zipfile.ZIP_DEFLATED}


def _member_compression(member, compression):
    if compression != AUTO:
        return compression
    hot = member.name.endswith(".pyc") or member.executable or member.name.startswith(LIBS_PREFIX)
    return zipfile.ZIP_STORED if hot else zipfile.ZIP_DEFLATED

_DATE_TIME = (1980, 1, 1, 0, 0, 0)
# zlib's default level: level 9 saves under 1% more on a FastAPI app, 4x slower.
_DEFLATE_LEVEL = 6
_UNIX = 3
_FILE_MODE = 0o100644
_EXECUTABLE_MODE = 0o100755
_DIRECTORY_MODE = 0o040755
_MSDOS_DIRECTORY = 0x10
_COPY_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Member:
    """A file of the archive, given by its bytes or by a file to read."""

    name: str
    data: bytes | None = None
    path: Path | None = None
    executable: bool = False

    def read(self):
        """The member's bytes."""
        return self.data if self.data is not None else Path(self.path).read_bytes()


@dataclasses.dataclass(frozen=True)
class WrittenApp:
    """What write_app() produced."""

    host_size: int
    archive_size: int
    total_size: int
    entries: list  # zipfile.ZipInfo of every member, directories included


def manifest_bytes(entries):
    """The appbin/manifest member: "key=value" lines, sorted."""
    lines = sorted(f"{key}={value}" for key, value in entries.items())
    return ("# appbin manifest\n" + "".join(line + "\n" for line in lines)).encode("utf-8")


def trailer_bytes(archive_offset, archive_size, sha256):
    """The 64-byte trailer described in host/payload.h."""
    return _TRAILER.pack(PAYLOAD_MAGIC, FORMAT_VERSION, 0, archive_offset, archive_size, sha256)


def parse_trailer(data):
    """Inverse of trailer_bytes(): (magic, version, flags, offset, size, sha256)."""
    return _TRAILER.unpack(data[-TRAILER_SIZE:])


def write_zip(members, fileobj, compression):
    """Writes `members` (and their directories) as a zip to `fileobj`."""
    by_name = {m.name: m for m in members}
    names = set(by_name) | _directories(by_name)
    with zipfile.ZipFile(fileobj, "w") as archive:
        for name in sorted(names, key=lambda n: n.encode("utf-8")):
            member = by_name.get(name)
            if member is None:
                archive.writestr(_zip_info(name, _DIRECTORY_MODE, zipfile.ZIP_STORED), b"")
            else:
                mode = _EXECUTABLE_MODE if member.executable else _FILE_MODE
                info = _zip_info(name, mode, _member_compression(member, compression))
                archive.writestr(info, member.read(), compresslevel=_DEFLATE_LEVEL)
        return archive.infolist()


def _directories(names):
    """Every parent directory of `names`, as "a/" and "a/b/"."""
    directories = set()
    for name in names:
        parent = posixpath.dirname(name)
        while parent and parent + "/" not in directories:
            directories.add(parent + "/")
            parent = posixpath.dirname(parent)
    return directories


def _zip_info(name, mode, compression):
    info = zipfile.ZipInfo(name, date_time=_DATE_TIME)
    info.create_system = _UNIX
    info.external_attr = mode << 16
    if name.endswith("/"):
        info.external_attr |= _MSDOS_DIRECTORY
    info.compress_type = compression
    return info


def write_app(output, host, members, compression):
    """Writes host + zip(members) + trailer to `output`, atomically, mode 0755.

    The file is assembled under a temporary name in the output's directory
    and renamed at the end; on any failure nothing is left behind.
    """
    output = Path(output)
    try:
        fd, temp_name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.",
                                         suffix=".tmp")
    except OSError as e:
        raise PackError(f"cannot write {output}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out, tempfile.TemporaryFile(dir=output.parent) as archive:
            entries = write_zip(members, archive, compression)
            with open(host, "rb") as host_file:
                shutil.copyfileobj(host_file, out, _COPY_CHUNK)
            host_size = out.tell()
            archive_size, digest = _copy_hashing(archive, out)
            out.write(trailer_bytes(host_size, archive_size, digest))
            total_size = out.tell()
        os.chmod(temp_name, 0o755)
        os.replace(temp_name, output)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return WrittenApp(host_size, archive_size, total_size, entries)


def _copy_hashing(source, out):
    """Copies `source` from its start to `out`; returns (size, SHA-256 digest)."""
    source.seek(0)
    sha = hashlib.sha256()
    size = 0
    while chunk := source.read(_COPY_CHUNK):
        sha.update(chunk)
        out.write(chunk)
        size += len(chunk)
    return size, sha.digest()

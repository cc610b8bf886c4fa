"""The payload appended to the host: manifest, zip archive and trailer.

The layout is host/payload.h's: [host][zip][64-byte trailer]. The zip is
written here rather than with zipfile (which cannot write zstd members), on
its own, so its offsets are relative to the archive start, and
deterministically: members sorted bytewise (with an entry for every
directory, which zipimport needs to find namespace packages), fixed
timestamps and modes, no comment, and one extra field in each central
directory entry: the SHA-256 of the member's record (local header, name and
data), which the host checks when it first reads the member. The trailer
holds the SHA-256 of the index (central directory and end records), which
the host checks when it opens the archive: together they cover every byte
without the host hashing what it does not read.

Members that start-up does not run (sources, data, metadata) are compressed
with zstd (zip method 93) by default; start-up code (.pyc, shared objects:
by default the code the app's imports reach, see imports.py) is stored,
because the host uses stored members in place: it unmarshals a .pyc straight
from its mapping of the file and copies an extension module once, where
decompressing them costs more than the venv pays to read its files. A member
that does not shrink is stored.
"""

import dataclasses
import hashlib
import os
import posixpath
import shutil
import struct
import sys
import tempfile
import zlib
from pathlib import Path

from . import PackError

PAYLOAD_MAGIC = b"APPBIN\0\1"
FORMAT_VERSION = 2
TRAILER_SIZE = 64
_TRAILER = struct.Struct("<8sIIQQ32s")
assert _TRAILER.size == TRAILER_SIZE

MANIFEST_MEMBER = "appbin/manifest"
CODECACHE_MEMBER = "appbin/codecache"  # codecache.py
LIBS_PREFIX = "appbin/libs/"

STORED, DEFLATED, ZSTD = 0, 8, 93
COMPRESSION = {"zstd": ZSTD, "deflate": DEFLATED, "stored": STORED}
# Levels: zstd 9 packs a FastAPI app in about 2 s and is within 6% of level 19
# (20 s); zlib's default 6 is within 1% of its level 9.
DEFAULT_LEVEL = {ZSTD: 9, DEFLATED: 6, STORED: 0}
LEVELS = {ZSTD: range(1, 23), DEFLATED: range(1, 10), STORED: range(0, 1)}

_DOS_TIME = 0  # 00:00:00
_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01
_UNIX = 3
_FILE_MODE = 0o100644
_EXECUTABLE_MODE = 0o100755
_DIRECTORY_MODE = 0o040755
_MSDOS_DIRECTORY = 0x10
_UTF8_NAME = 1 << 11
_COPY_CHUNK = 1 << 20
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_END64 = struct.Struct("<IQHHIIQQQQ")
_END64_LOCATOR = struct.Struct("<IIQI")
_U16, _U32 = 0xFFFF, 0xFFFFFFFF
# Central directory extra field: the SHA-256 of the member's record ("ab").
_DIGEST_FIELD = struct.Struct("<HH32s")
_DIGEST_FIELD_ID = 0x6261
# Local header extra field padding a stored shared object to a page boundary.
_ALIGN_FIELD = struct.Struct("<HHH")
_ALIGN_FIELD_ID = 0xD935
_PAGE = 4096


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
    entries: list  # Entry of every member, directories included
    index_sha256: bytes  # what the trailer holds


def manifest_bytes(entries):
    """The appbin/manifest member: "key=value" lines, sorted."""
    lines = sorted(f"{key}={value}" for key, value in entries.items())
    return ("# appbin manifest\n" + "".join(line + "\n" for line in lines)).encode("utf-8")


def trailer_bytes(archive_offset, archive_size, index_sha256):
    """The 64-byte trailer described in host/payload.h."""
    return _TRAILER.pack(PAYLOAD_MAGIC, FORMAT_VERSION, 0, archive_offset, archive_size,
                         index_sha256)


def parse_trailer(data):
    """Inverse of trailer_bytes(): (magic, version, flags, offset, size, index sha256)."""
    return _TRAILER.unpack(data[-TRAILER_SIZE:])


@dataclasses.dataclass(frozen=True)
class Entry:
    """A member as written: what the summary and the tests look at."""

    filename: str
    file_size: int
    compress_size: int
    compress_type: int
    CRC: int
    record_sha256: bytes  # of the local header, name and data

    def is_dir(self):
        return self.filename.endswith("/")


def check_compression(method):
    """Raises PackError now, before any packing, if `method` cannot be written."""
    _compressor(method, DEFAULT_LEVEL[method])


def _compressor(method, level):
    """A function bytes -> compressed bytes for `method`, or None for stored."""
    if method == ZSTD:
        try:
            import zstandard
        except ImportError:
            raise PackError(f"zstd compression needs the zstandard module for "
                            f"{sys.executable}: apt-get install python3-zstandard "
                            f"(Debian's python3.11) or {sys.executable} -m pip install "
                            f"zstandard (or pass --compression deflate)") from None
        # Content size in the frame header, no frame checksum (the zip CRC-32
        # and the payload's SHA-256 cover the bytes).
        cctx = zstandard.ZstdCompressor(level=level, write_content_size=True,
                                        write_checksum=False)
        return cctx.compress
    if method == DEFLATED:
        def deflate(data):
            c = zlib.compressobj(level, zlib.DEFLATED, -15)
            return c.compress(data) + c.flush()
        return deflate
    return None


def write_zip(members, fileobj, compression, level=None, compress_code=False, base=0,
              stored_code=None, bodies=None):
    """Writes `members` (and their directories) as a zip to `fileobj`.

    Start-up code (.pyc files and shared objects) is stored, to be used in
    place from the host's mapping of the file (marshalled, or copied once into
    the in-memory file the dynamic loader opens), unless `compress_code`;
    when `stored_code` (a set of member names) is given, only the code it
    names is stored. The other members are compressed with `compression`. Records are laid out in
    the order start-up reads them, roughly: the manifest, the stdlib's code,
    site-packages' code, bundled libraries, then everything else (the host's
    background check hashes in that order, ahead of the imports); the central
    directory lists them sorted by name. A stored shared object's data starts
    on a page boundary of the file (the archive starts `base` bytes into it),
    padded with an alignment extra field in its local header, so that the
    host can map its pages straight from app.bin once it is loaded.

    `bodies` (a dict, filled here) keeps each member's compressed bytes for
    another write of the same Member objects with the same options.

    Returns (the Entry of every member, directories included, in name order;
    the SHA-256 of the index: central directory and end records).
    """
    by_name = {m.name: m for m in members}
    names = sorted(set(by_name) | _directories(by_name), key=lambda n: n.encode("utf-8"))
    compress = _compressor(compression, DEFAULT_LEVEL[compression] if level is None else level)
    packed = {}
    bodies = {} if bodies is None else bodies
    for name in names:
        member = by_name.get(name)
        stored = _is_code(member) and not compress_code and (stored_code is None
                                                             or name in stored_code)
        known = bodies.get(name)
        if known is not None and known[0] is member and known[1] == stored:
            packed[name] = known[2]
            continue
        data = b"" if member is None else member.read()
        method, body = STORED, data
        if compress is not None and data and not stored:
            smaller = compress(data)
            if len(smaller) < len(data):
                method, body = compression, smaller
        if len(body) > _U32 or len(data) > _U32:
            raise PackError("the archive would be over 4 GiB, which appbin-pack cannot write")
        packed[name] = (member, data, body, method)
        bodies[name] = (member, stored, packed[name])
    offsets, digests, offset = {}, {}, 0
    for name in sorted(names, key=lambda n: _layout_key(n, by_name.get(n), stored_code)):
        member, data, body, method = packed[name]
        raw_name = name.encode("utf-8")
        extra = b""
        if method == STORED and member is not None and member.executable and body:
            extra = _alignment_field(base + offset + _LOCAL.size + len(raw_name))
        header = _LOCAL.pack(0x04034B50, _version(method), _flags(raw_name), method, _DOS_TIME,
                             _DOS_DATE, zlib.crc32(data), len(body), len(data), len(raw_name),
                             len(extra))
        record = header + raw_name + extra + body
        if offset > _U32:
            raise PackError("the archive would be over 4 GiB, which appbin-pack cannot write")
        offsets[name], digests[name] = offset, hashlib.sha256(record).digest()
        fileobj.write(record)
        offset += len(record)
    central, entries = [], []
    for name in names:
        member, data, body, method = packed[name]
        if member is None:
            mode = _DIRECTORY_MODE
        else:
            mode = _EXECUTABLE_MODE if member.executable else _FILE_MODE
        raw_name = name.encode("utf-8")
        version, crc = _version(method), zlib.crc32(data)
        extra = _DIGEST_FIELD.pack(_DIGEST_FIELD_ID, 32, digests[name])
        attributes = mode << 16 | (_MSDOS_DIRECTORY if name.endswith("/") else 0)
        central.append(_CENTRAL.pack(0x02014B50, _UNIX << 8 | version, version,
                                     _flags(raw_name), method, _DOS_TIME, _DOS_DATE, crc,
                                     len(body), len(data), len(raw_name), len(extra), 0, 0, 0,
                                     attributes, offsets[name])
                       + raw_name + extra)
        entries.append(Entry(name, len(data), len(body), method, crc, digests[name]))
    index = b"".join(central)
    index += _end_records(len(central), offset, len(index))
    fileobj.write(index)
    return entries, hashlib.sha256(index).digest()


def _version(method):
    """Version needed to extract: 2.0 (deflate, directories), 6.3 (zstd)."""
    return 63 if method == ZSTD else 20


def _flags(raw_name):
    return 0 if raw_name.isascii() else _UTF8_NAME


def _alignment_field(data_at):
    """A local header extra field (id 0xd935, as Android's zipalign writes:
    the alignment, then zeros) that moves data due at `data_at` (a file
    offset, before the field) to the next page boundary."""
    padding = -(data_at + _ALIGN_FIELD.size) % _PAGE
    return _ALIGN_FIELD.pack(_ALIGN_FIELD_ID, 2 + padding, _PAGE) + bytes(padding)


def _is_code(member):
    """Whether start-up runs this member: a .pyc, a shared object or the code cache."""
    return member is not None and (member.executable or member.name.endswith(".pyc")
                                   or member.name == CODECACHE_MEMBER)


def _layout_key(name, member, stored_code=None):
    """Where a member's record goes: (group, name), groups in start-up order
    (start-up code first when `stored_code` says which it is)."""
    if name in (MANIFEST_MEMBER, CODECACHE_MEMBER):
        group = 0
    elif _is_code(member):
        group = {"stdlib": 1, "site-packages": 2}.get(name.split("/", 1)[0], 3)
        if stored_code is not None and name not in stored_code:
            group += 3
    else:
        group = 7
    return group, name.encode("utf-8")


def _end_records(count, directory_offset, directory_size):
    """The end of central directory record, preceded by the zip64 ones when
    there are more members than its 16-bit count holds (as zipfile does)."""
    if directory_offset + directory_size > _U32:
        raise PackError("the archive would be over 4 GiB, which appbin-pack cannot write")
    records = b""
    if count >= _U16:
        end64_offset = directory_offset + directory_size
        records += _END64.pack(0x06064B50, _END64.size - 12, _UNIX << 8 | 45, 45, 0, 0,
                               count, count, directory_size, directory_offset)
        records += _END64_LOCATOR.pack(0x07064B50, 0, end64_offset, 1)
        count = _U16
    return records + _END.pack(0x06054B50, 0, 0, count, count, directory_size,
                               directory_offset, 0)


def _directories(names):
    """Every parent directory of `names`, as "a/" and "a/b/"."""
    directories = set()
    for name in names:
        parent = posixpath.dirname(name)
        while parent and parent + "/" not in directories:
            directories.add(parent + "/")
            parent = posixpath.dirname(parent)
    return directories


def write_app(output, host, members, compression, level=None, compress_code=False,
              stored_code=None, bodies=None):
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
            entries, index_sha256 = write_zip(members, archive, compression, level,
                                              compress_code, base=os.path.getsize(host),
                                              stored_code=stored_code, bodies=bodies)
            with open(host, "rb") as host_file:
                shutil.copyfileobj(host_file, out, _COPY_CHUNK)
            host_size = out.tell()
            archive.seek(0)
            shutil.copyfileobj(archive, out, _COPY_CHUNK)
            archive_size = out.tell() - host_size
            out.write(trailer_bytes(host_size, archive_size, index_sha256))
            total_size = out.tell()
        os.chmod(temp_name, 0o755)
        os.replace(temp_name, output)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return WrittenApp(host_size, archive_size, total_size, entries, index_sha256)

/*
 * payload: the archive appended to the host executable.
 *
 * File layout (format version 2):
 *
 *   [host ELF][zip archive][trailer, 64 bytes]
 *
 * The zip's internal offsets are relative to the start of the archive (not of
 * the file), so the archive region can be opened on its own; CPython's
 * zipimport and unzip also accept the whole file (they tolerate prepended
 * data).
 *
 * Trailer, all integers little-endian:
 *   off  size  field
 *     0     8  magic "APPBIN\0\1"
 *     8     4  format version (2)
 *    12     4  flags (0; reserved)
 *    16     8  archive offset from the start of the file
 *    24     8  archive size in bytes
 *    32    32  index digest: SHA-256 of the archive's index, the bytes from
 *              the start of its central directory to its end (central
 *              directory, zip64 end records if any, end record)
 *
 * Integrity (format 2): every central directory entry has an extra field
 * 0x6261 ("ab") of 32 bytes, the SHA-256 of the member's record: its local
 * header, name and (compressed) data, i.e. the bytes from the local header's
 * offset to the end of its data. The records follow one another without a
 * gap from the archive's start to the central directory. So the trailer's
 * digest vouches for the index, the index for every member, and every byte
 * of the archive is covered by exactly one digest: the host checks the index
 * when it opens the archive (a few hundred KB), a member when it is first read,
 * and everything (in a background thread) before a server accepts connections
 * (host/zipindex.h). Format 1 hashed the whole archive at every start.
 *
 * Layout: the records are in start-up order (manifest, stdlib code,
 * site-packages code, other code, the rest); .pyc files and shared objects
 * are stored (unless packed with --compress-code), and a stored shared
 * object's local header carries an alignment extra field (id 0xd935, as
 * Android's zipalign writes) so that its data starts on a 4096-byte boundary
 * of the file: the host maps its pages from there once it is loaded
 * (host/extremap.h).
 *
 * Members of the archive (paths use '/', sorted bytewise, fixed timestamps):
 *   appbin/manifest          key=value lines, '#' starts a comment
 *   appbin/libs/<soname>     shared libraries the extension modules need that
 *                            are not part of glibc (preloaded on demand)
 *   stdlib/...               Debian's python3.11 stdlib, X.pyc beside X.py
 *   stdlib/lib-dynload/      stdlib extension modules (*.so)
 *   site-packages/...        the venv's site-packages, X.pyc beside X.py
 *
 * Every .pyc is an unchecked hash-based pyc (PEP 552, flags = 1) stored next
 * to its source (never in __pycache__), compiled with the member path
 * (e.g. "site-packages/pkg/mod.py") as its co_filename.
 *
 * Manifest keys:
 *   format=2
 *   appbin_version=<version of appbin-pack>
 *   python_version=<X.Y.Z of the stdlib that was packed>
 *   app=<module>:<attribute>          (optional) the ASGI application
 *   factory=0|1                       (optional) app is a factory to call
 *   default.<option>=<value>          (optional) server option defaults
 *   preload.<extension member>=<lib member> [<lib member> ...]
 *                                     libraries to load before the extension,
 *                                     dependencies first
 */
#ifndef APPBIN_PAYLOAD_H
#define APPBIN_PAYLOAD_H

#include <stddef.h>
#include <stdint.h>

#define PAYLOAD_MAGIC "APPBIN\0\1"
#define PAYLOAD_MAGIC_LEN 8
#define PAYLOAD_FORMAT_VERSION 2
#define PAYLOAD_TRAILER_SIZE 64

typedef struct payload_trailer {
  uint32_t version;
  uint32_t flags;
  uint64_t archive_offset;
  uint64_t archive_size;
  uint8_t index_sha256[32];
} payload_trailer;

typedef struct payload {
  char *path;         /* absolute path of the file holding the payload */
  int fd;             /* open on it (close-on-exec), -1 when closed */
  const uint8_t *map; /* the whole file, mapped read-only */
  size_t map_size;
  const uint8_t *archive; /* points into map */
  size_t archive_size;
  payload_trailer trailer;
} payload;

/* Parses a trailer from the last PAYLOAD_TRAILER_SIZE bytes of a file of
 * `file_size` bytes. Returns 0, or -1 with a message in err. */
int payload_parse_trailer(const uint8_t *tail, uint64_t file_size, payload_trailer *out, char *err,
                          size_t errlen);

/* Opens `path`, maps it and checks its trailer (nothing is hashed here: the
 * archive's digests are zipindex_open_verified's). Returns 0 on success, 1
 * when the file has no payload at all (a bare host), -1 on a damaged or
 * unsupported payload; err then names the problem in one line. */
int payload_open(payload *p, const char *path, char *err, size_t errlen);

/* Drops the mapped archive's pages from this process's resident set; they
 * stay in the page cache and fault back in when read again. */
void payload_release_pages(const payload *p);

/* payload_release_pages, and the file's pages are dropped from the page cache
 * too (where no other process maps them): once start-up has read what it
 * needs, a container's memory accounting no longer counts the whole file. */
void payload_drop_cache(const payload *p);

void payload_close(payload *p);

#endif

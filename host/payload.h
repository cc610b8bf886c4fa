/*
 * payload: the archive appended to the host executable.
 *
 * File layout (format version 1):
 *
 *   [host ELF][zip archive][trailer, 64 bytes]
 *
 * The zip's internal offsets are relative to the start of the archive (not of
 * the file), so the archive region can be opened on its own; CPython's
 * zipimport also accepts such a file because it tolerates prepended data.
 *
 * Trailer, all integers little-endian:
 *   off  size  field
 *     0     8  magic "APPBIN\0\1"
 *     8     4  format version (1)
 *    12     4  flags (0; reserved)
 *    16     8  archive offset from the start of the file
 *    24     8  archive size in bytes
 *    32    32  SHA-256 of the archive bytes
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
 *   format=1
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
#define PAYLOAD_FORMAT_VERSION 1
#define PAYLOAD_TRAILER_SIZE 64

typedef struct payload_trailer {
  uint32_t version;
  uint32_t flags;
  uint64_t archive_offset;
  uint64_t archive_size;
  uint8_t sha256[32];
} payload_trailer;

typedef struct payload {
  char *path;         /* absolute path of the file holding the payload */
  const uint8_t *map; /* the whole file, mapped read-only */
  size_t map_size;
  const uint8_t *archive; /* points into map */
  size_t archive_size;
  payload_trailer trailer;
} payload;

typedef enum payload_check {
  PAYLOAD_VERIFY_HASH = 1, /* hash the archive and compare with the trailer */
} payload_check;

/* Parses a trailer from the last PAYLOAD_TRAILER_SIZE bytes of a file of
 * `file_size` bytes. Returns 0, or -1 with a message in err. */
int payload_parse_trailer(const uint8_t *tail, uint64_t file_size, payload_trailer *out, char *err,
                          size_t errlen);

/* Opens `path`, maps it and checks its trailer (and its hash when `checks`
 * has PAYLOAD_VERIFY_HASH). Returns 0 on success, 1 when the file has no
 * payload at all (a bare host), -1 on a damaged payload; err then names the
 * problem in one line. */
int payload_open(payload *p, const char *path, int checks, char *err, size_t errlen);

/* Drops the mapped archive's pages from this process's resident set; they
 * stay in the page cache and fault back in when read again. */
void payload_release_pages(const payload *p);

/* payload_release_pages, and the file's pages are dropped from the page cache
 * too (where no other process maps them): once start-up has read what it
 * needs, a container's memory accounting no longer counts the whole file. */
void payload_drop_cache(const payload *p);

void payload_close(payload *p);

#endif

/*
 * extload: turns bytes from the archive into a file the dynamic loader can
 * open, with nothing written to disk: a memfd reached as /proc/self/fd/N.
 * Where memfd or /proc is missing it falls back to a private 0700 directory
 * (under $TMPDIR, /tmp, /dev/shm or /var/tmp) and says so at debug level.
 *
 * Files stay open for the life of the process: glibc identifies a loaded
 * object by its path string, so a path must never be reused for other bytes.
 */
#ifndef APPBIN_EXTLOAD_H
#define APPBIN_EXTLOAD_H

#include <stddef.h>

typedef enum extload_kind {
  EXTLOAD_CODE = 0, /* must be mappable executable (shared objects) */
  EXTLOAD_DATA = 1, /* read-only data (resources handed out as paths) */
} extload_kind;

/* Writes `len` bytes into a new in-memory file named after `name` (a member
 * path; its basename is used) and returns its path in `path` (at least 4096
 * bytes). Returns 0, or -1 with a message in err. */
int extload_write(const char *name, const void *data, size_t len, extload_kind kind, char *path,
                  size_t pathlen, char *err, size_t errlen);

/* 1 when debug logging is on: set by the interpreter setup. */
extern int extload_debug;

#endif

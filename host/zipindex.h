/*
 * zipindex: the archive's members, read once from the zip central directory
 * (through libzip) into a sorted array with a hash index by name.
 *
 * Members are stored, deflated (libzip inflates them) or zstd-compressed
 * (method 93: libzip 1.7 hands over the raw frame and zstd decompresses it
 * here). Reads check the CRC-32, except those of zstd members once the caller
 * has vouched for the archive (zipindex_trust).
 *
 * zipindex_read may be called from several threads at once (the importer
 * releases the GIL around it): libzip's reads of one archive share a source
 * position, so a mutex serialises them. The rest is read-only after open.
 */
#ifndef APPBIN_ZIPINDEX_H
#define APPBIN_ZIPINDEX_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct zipindex_entry {
  const char *name; /* owned by libzip, valid while the index is open */
  size_t name_len;
  uint64_t size;      /* uncompressed size */
  uint64_t comp_size; /* size in the archive */
  uint64_t zip_index;
  uint32_t crc;    /* CRC-32 of the uncompressed bytes */
  uint16_t method; /* ZIPINDEX_STORED, _DEFLATED or _ZSTD */
} zipindex_entry;

enum { ZIPINDEX_STORED = 0, ZIPINDEX_DEFLATED = 8, ZIPINDEX_ZSTD = 93 };

typedef struct zipindex {
  void *zip;               /* zip_t */
  void *source;            /* zip_source_t */
  zipindex_entry *entries; /* sorted by name, bytewise */
  size_t count;
  uint32_t *slots; /* open addressing: entry index + 1, 0 = empty */
  size_t slot_mask;
  pthread_mutex_t read_lock; /* held by zipindex_read */
  int read_lock_ready;
  void *dctx;  /* ZSTD_DCtx, made on the first zstd read, reused under read_lock */
  int trusted; /* zipindex_trust(): zstd reads skip the CRC-32 */
} zipindex;

/* Opens the zip archive held in `data` (not copied: must outlive the index).
 * Rejects member names that are empty or absolute, or hold a "." or ".."
 * component or a backslash (libzip itself turns a NUL in a name into a space),
 * and members compressed with a method other than the three above.
 * Returns 0, or -1 with a message in err. */
int zipindex_open(zipindex *zi, const void *data, size_t len, char *err, size_t errlen);

/* The caller has verified every byte of the archive (the payload's SHA-256,
 * of a file the kernel keeps from being written while it runs): reads of
 * zstd members skip the CRC-32, which costs about as much as decompressing
 * them. libzip still checks stored and deflated members (it offers no way
 * not to for a whole-member read). */
void zipindex_trust(zipindex *zi);

void zipindex_close(zipindex *zi);

/* The member named exactly `name` (of `len` bytes), or NULL. */
const zipindex_entry *zipindex_find(const zipindex *zi, const char *name, size_t len);

/* Reads a whole member into `buf`, which holds at least entry->size bytes.
 * Returns 0, or -1 with a message in err (e.g. a CRC mismatch) and errno
 * ENOMEM (out of memory) or EIO (anything else: a damaged member). */
int zipindex_read(zipindex *zi, const zipindex_entry *e, void *buf, char *err, size_t errlen);

/* Index of the first entry whose name is >= the given prefix; iterate from
 * there while names start with it to list a directory. */
size_t zipindex_lower_bound(const zipindex *zi, const char *prefix, size_t len);

/* Whether some member's name starts with `dir` followed by '/' (dir given
 * without the trailing slash; an empty dir is the archive root). */
int zipindex_is_dir(const zipindex *zi, const char *dir, size_t len);

#endif

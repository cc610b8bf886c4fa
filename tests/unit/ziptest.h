/*
 * ziptest: a minimal in-memory zip writer for the unit tests.
 *
 * Writes local headers, member data, the central directory and the end of
 * central directory record (zip64 end records on request; no zip64 extra
 * fields, no data descriptors; fixed timestamp 1980-01-01 00:00), members in
 * the order they are added. With `digests` set (before the first member),
 * every central directory entry carries the SHA-256 of its member's record,
 * as appbin-pack writes them (host/payload.h), and zt_finish_digested gives
 * the index digest. Knobs make the
 * broken archives a reader must reject: a wrong CRC, a local header that
 * disagrees with the central directory, a truncated central directory, ...
 * Names are taken as given (any bytes, "../x", duplicates): checking them is
 * the reader's job. Out of memory aborts.
 */
#ifndef APPBIN_TEST_ZIPTEST_H
#define APPBIN_TEST_ZIPTEST_H

#include <stddef.h>
#include <stdint.h>

/* Per-member flags (zt_add_ex). */
enum {
  ZT_DEFLATE = 1 << 0,       /* raw deflate instead of stored */
  ZT_BAD_CRC = 1 << 1,       /* record a wrong CRC-32, the same in both headers */
  ZT_UTF8 = 1 << 2,          /* set general-purpose bit 11: the name is UTF-8 */
  ZT_LOCAL_NAME = 1 << 3,    /* the local header's name differs (last byte ^ 1) */
  ZT_LOCAL_SIZE = 1 << 4,    /* the local header's sizes are one more */
  ZT_LOCAL_CRC = 1 << 5,     /* only the local header's CRC is wrong */
  ZT_EXEC_ATTRS = 1 << 6,    /* external attributes: -rwxr-xr-x (else -rw-r--r--) */
  ZT_SIZE_PLUS1 = 1 << 7,    /* both headers claim one byte more than stored */
  ZT_SIZE_MINUS1 = 1 << 8,   /* both headers claim one byte less than stored */
  ZT_ZSTD = 1 << 9,          /* a zstd frame (method 93) instead of stored */
  ZT_BZIP2_METHOD = 1 << 10, /* stored bytes labelled method 12 (bzip2) */
  ZT_NO_DIGEST = 1 << 11,    /* with digests: leave this member's out */
  ZT_BAD_DIGEST = 1 << 12,   /* with digests: record a wrong one for this member */
  ZT_LOCAL_EXTRA = 1 << 13,  /* a 4-byte extra field in the local header only */
};

/* Whole-archive flags (zt_finish). */
enum {
  ZT_TRUNCATE_CD = 1 << 0,    /* write only half the central directory bytes */
  ZT_CD_COUNT_PLUS1 = 1 << 1, /* the EOCD claims one more member than written */
  ZT_CD_OFFSET_BAD = 1 << 2,  /* the EOCD's central directory offset is past the end */
  ZT_CD_SIZE_PLUS1 = 1 << 3,  /* the EOCD's central directory size is one more */
  ZT_NO_EOCD = 1 << 4,        /* leave out the end of central directory record */
  ZT_EOCD_COMMENT = 1 << 5,   /* add a 5-byte archive comment "hello" */
  ZT_ZIP64 = 1 << 6,          /* zip64 end records (the EOCD fields all 0xff..), as
                                 Python's zipfile writes past 65535 members */
};

typedef struct ziptest {
  uint8_t *data; /* local headers and member data so far */
  size_t len, cap;
  uint8_t *cd; /* central directory records so far */
  size_t cd_len, cd_cap;
  uint32_t count;
  int digests; /* set to 1 before adding: record digests in the central directory */
} ziptest;

void zt_init(ziptest *z);

/* Adds a stored member; `name` is a C string. */
void zt_add(ziptest *z, const char *name, const void *data, size_t len);

/* Adds a member whose content is the C string `text`. */
void zt_add_str(ziptest *z, const char *name, const char *text);

/* Adds a member with a name of `name_len` bytes (may hold NULs) and flags. */
void zt_add_ex(ziptest *z, const char *name, size_t name_len, const void *data, size_t len,
               unsigned flags);

/* Returns the archive (malloc'd, the caller frees it) and its length, and
 * resets z to empty. */
uint8_t *zt_finish(ziptest *z, unsigned flags, size_t *len);

/* zt_finish, also giving the SHA-256 of the index (the bytes from the
 * central directory's start to the archive's end), as the payload trailer
 * holds it. */
uint8_t *zt_finish_digested(ziptest *z, unsigned flags, size_t *len, uint8_t index_sha256[32]);

void zt_free(ziptest *z);

/* The CRC-32 of a byte range (zlib's). */
uint32_t zt_crc32(const void *data, size_t len);

#endif

#include "ziptest.h"

#include "sha256.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#define DOS_DATE_1980_01_01 ((0 << 9) | (1 << 5) | 1)

static void *xrealloc(void *p, size_t n) {
  p = realloc(p, n ? n : 1);
  if (!p) {
    fprintf(stderr, "ziptest: out of memory\n");
    abort();
  }
  return p;
}

static void reserve(uint8_t **buf, size_t *cap, size_t len, size_t more) {
  if (len + more <= *cap)
    return;
  size_t n = *cap ? *cap : 256;
  while (n < len + more)
    n *= 2;
  *buf = xrealloc(*buf, n);
  *cap = n;
}

static void put(uint8_t **buf, size_t *len, size_t *cap, const void *data, size_t n) {
  reserve(buf, cap, *len, n);
  if (n)
    memcpy(*buf + *len, data, n);
  *len += n;
}

static void put16(uint8_t **buf, size_t *len, size_t *cap, uint32_t v) {
  uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
  put(buf, len, cap, b, 2);
}

static void put32(uint8_t **buf, size_t *len, size_t *cap, uint32_t v) {
  uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
  put(buf, len, cap, b, 4);
}

uint32_t zt_crc32(const void *data, size_t len) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const Bytef *p = data;
  while (len > 0) { /* crc32 takes a uInt length */
    uInt n = len > 0x40000000 ? 0x40000000 : (uInt)len;
    crc = crc32(crc, p, n);
    p += n;
    len -= n;
  }
  return (uint32_t)crc;
}

void zt_init(ziptest *z) { memset(z, 0, sizeof(*z)); }

void zt_add(ziptest *z, const char *name, const void *data, size_t len) {
  zt_add_ex(z, name, strlen(name), data, len, 0);
}

void zt_add_str(ziptest *z, const char *name, const char *text) {
  zt_add_ex(z, name, strlen(name), text, strlen(text), 0);
}

/* Raw deflate (no zlib header), as zip method 8 wants. */
static uint8_t *deflate_raw(const void *data, size_t len, size_t *out_len) {
  z_stream s;
  memset(&s, 0, sizeof(s));
  if (deflateInit2(&s, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    abort();
  size_t cap = deflateBound(&s, (uLong)len) + 16;
  uint8_t *out = xrealloc(NULL, cap);
  s.next_in = (Bytef *)data;
  s.avail_in = (uInt)len;
  s.next_out = out;
  s.avail_out = (uInt)cap;
  if (deflate(&s, Z_FINISH) != Z_STREAM_END)
    abort();
  *out_len = s.total_out;
  deflateEnd(&s);
  return out;
}

/* A zstd frame with the content size, as appbin-pack writes (method 93). */
static uint8_t *zstd_frame(const void *data, size_t len, size_t *out_len) {
  size_t cap = ZSTD_compressBound(len);
  uint8_t *out = xrealloc(NULL, cap);
  *out_len = ZSTD_compress(out, cap, data, len, 3);
  if (ZSTD_isError(*out_len))
    abort();
  return out;
}

void zt_add_ex(ziptest *z, const char *name, size_t name_len, const void *data, size_t len,
               unsigned flags) {
  uint32_t crc = zt_crc32(data, len);
  if (flags & ZT_BAD_CRC)
    crc ^= 0xdeadbeef;
  uint8_t *packed = NULL;
  const void *body = data;
  size_t body_len = len;
  uint32_t method = 0;
  if (flags & ZT_DEFLATE) {
    packed = deflate_raw(data, len, &body_len);
    body = packed;
    method = 8;
  } else if (flags & ZT_ZSTD) {
    packed = zstd_frame(data, len, &body_len);
    body = packed;
    method = 93;
  } else if (flags & ZT_BZIP2_METHOD) {
    method = 12;
  }
  uint32_t usize = (uint32_t)len, csize = (uint32_t)body_len;
  if (flags & ZT_SIZE_PLUS1) {
    usize++;
    if (method == 0)
      csize++;
  }
  if (flags & ZT_SIZE_MINUS1) {
    usize--;
    if (method == 0)
      csize--;
  }
  uint32_t gp = (flags & ZT_UTF8) ? 1u << 11 : 0;
  uint32_t offset = (uint32_t)z->len;

  /* Local file header. */
  put32(&z->data, &z->len, &z->cap, 0x04034b50);
  put16(&z->data, &z->len, &z->cap, 20); /* version needed: 2.0 */
  put16(&z->data, &z->len, &z->cap, gp);
  put16(&z->data, &z->len, &z->cap, method);
  put16(&z->data, &z->len, &z->cap, 0); /* time 00:00:00 */
  put16(&z->data, &z->len, &z->cap, DOS_DATE_1980_01_01);
  put32(&z->data, &z->len, &z->cap, (flags & ZT_LOCAL_CRC) ? crc ^ 1 : crc);
  put32(&z->data, &z->len, &z->cap, (flags & ZT_LOCAL_SIZE) ? csize + 1 : csize);
  put32(&z->data, &z->len, &z->cap, (flags & ZT_LOCAL_SIZE) ? usize + 1 : usize);
  put16(&z->data, &z->len, &z->cap, (uint32_t)name_len);
  put16(&z->data, &z->len, &z->cap, (flags & ZT_LOCAL_EXTRA) ? 4 : 0); /* extra field length */
  size_t name_at = z->len;
  put(&z->data, &z->len, &z->cap, name, name_len);
  if ((flags & ZT_LOCAL_NAME) && name_len > 0)
    z->data[name_at + name_len - 1] ^= 1;
  if (flags & ZT_LOCAL_EXTRA)
    put32(&z->data, &z->len, &z->cap, 0x00007a7a); /* id "zz", no data */
  put(&z->data, &z->len, &z->cap, body, body_len);
  free(packed);
  int digest = z->digests && !(flags & ZT_NO_DIGEST);
  uint8_t sha[SHA256_DIGEST_SIZE];
  if (digest) {
    sha256_digest(z->data + offset, z->len - offset, sha);
    if (flags & ZT_BAD_DIGEST)
      sha[7] ^= 0x10;
  }

  /* Central directory record. */
  put32(&z->cd, &z->cd_len, &z->cd_cap, 0x02014b50);
  put16(&z->cd, &z->cd_len, &z->cd_cap, (3 << 8) | 20); /* made by: Unix, 2.0 */
  put16(&z->cd, &z->cd_len, &z->cd_cap, 20);
  put16(&z->cd, &z->cd_len, &z->cd_cap, gp);
  put16(&z->cd, &z->cd_len, &z->cd_cap, method);
  put16(&z->cd, &z->cd_len, &z->cd_cap, 0);
  put16(&z->cd, &z->cd_len, &z->cd_cap, DOS_DATE_1980_01_01);
  put32(&z->cd, &z->cd_len, &z->cd_cap, crc);
  put32(&z->cd, &z->cd_len, &z->cd_cap, csize);
  put32(&z->cd, &z->cd_len, &z->cd_cap, usize);
  put16(&z->cd, &z->cd_len, &z->cd_cap, (uint32_t)name_len);
  put16(&z->cd, &z->cd_len, &z->cd_cap, digest ? 4 + SHA256_DIGEST_SIZE : 0); /* extra */
  put16(&z->cd, &z->cd_len, &z->cd_cap, 0);                                   /* comment length */
  put16(&z->cd, &z->cd_len, &z->cd_cap, 0); /* disk number start */
  put16(&z->cd, &z->cd_len, &z->cd_cap, 0); /* internal attributes */
  uint32_t mode = (flags & ZT_EXEC_ATTRS) ? 0100755 : 0100644;
  put32(&z->cd, &z->cd_len, &z->cd_cap, mode << 16);
  put32(&z->cd, &z->cd_len, &z->cd_cap, offset);
  put(&z->cd, &z->cd_len, &z->cd_cap, name, name_len);
  if (digest) {
    put16(&z->cd, &z->cd_len, &z->cd_cap, 0x6261); /* "ab" */
    put16(&z->cd, &z->cd_len, &z->cd_cap, SHA256_DIGEST_SIZE);
    put(&z->cd, &z->cd_len, &z->cd_cap, sha, SHA256_DIGEST_SIZE);
  }
  z->count++;
}

uint8_t *zt_finish(ziptest *z, unsigned flags, size_t *len) {
  uint32_t cd_offset = (uint32_t)z->len;
  size_t cd_len = z->cd_len;
  size_t cd_written = (flags & ZT_TRUNCATE_CD) ? cd_len / 2 : cd_len;
  put(&z->data, &z->len, &z->cap, z->cd, cd_written);
  if (flags & ZT_ZIP64) {
    uint64_t eocd64_at = z->len, count = z->count;
    uint64_t fields[4] = {count, count, cd_len, cd_offset};
    put32(&z->data, &z->len, &z->cap, 0x06064b50);
    put32(&z->data, &z->len, &z->cap, 44); /* size of the rest of the record */
    put32(&z->data, &z->len, &z->cap, 0);
    put16(&z->data, &z->len, &z->cap, (3 << 8) | 45); /* made by: Unix, 4.5 */
    put16(&z->data, &z->len, &z->cap, 45);
    put32(&z->data, &z->len, &z->cap, 0); /* this disk */
    put32(&z->data, &z->len, &z->cap, 0); /* disk with the central directory */
    for (int i = 0; i < 4; i++) {
      put32(&z->data, &z->len, &z->cap, (uint32_t)fields[i]);
      put32(&z->data, &z->len, &z->cap, (uint32_t)(fields[i] >> 32));
    }
    /* Locator. */
    put32(&z->data, &z->len, &z->cap, 0x07064b50);
    put32(&z->data, &z->len, &z->cap, 0);
    put32(&z->data, &z->len, &z->cap, (uint32_t)eocd64_at);
    put32(&z->data, &z->len, &z->cap, (uint32_t)(eocd64_at >> 32));
    put32(&z->data, &z->len, &z->cap, 1); /* total disks */
  }
  if (!(flags & ZT_NO_EOCD)) {
    uint32_t count = z->count + ((flags & ZT_CD_COUNT_PLUS1) ? 1 : 0);
    if (flags & ZT_ZIP64)
      count = 0xffff;
    put32(&z->data, &z->len, &z->cap, 0x06054b50);
    put16(&z->data, &z->len, &z->cap, 0); /* this disk */
    put16(&z->data, &z->len, &z->cap, 0); /* disk with the central directory */
    put16(&z->data, &z->len, &z->cap, count);
    put16(&z->data, &z->len, &z->cap, count);
    uint32_t size = (uint32_t)cd_len + ((flags & ZT_CD_SIZE_PLUS1) ? 1 : 0);
    uint32_t offset = (flags & ZT_CD_OFFSET_BAD) ? cd_offset + 0x10000 : cd_offset;
    put32(&z->data, &z->len, &z->cap, (flags & ZT_ZIP64) ? 0xffffffff : size);
    put32(&z->data, &z->len, &z->cap, (flags & ZT_ZIP64) ? 0xffffffff : offset);
    if (flags & ZT_EOCD_COMMENT) {
      put16(&z->data, &z->len, &z->cap, 5);
      put(&z->data, &z->len, &z->cap, "hello", 5);
    } else {
      put16(&z->data, &z->len, &z->cap, 0);
    }
  }
  uint8_t *out = z->data;
  *len = z->len;
  z->data = NULL;
  zt_free(z);
  if (!out)
    out = xrealloc(NULL, 1);
  return out;
}

uint8_t *zt_finish_digested(ziptest *z, unsigned flags, size_t *len, uint8_t index_sha256[32]) {
  size_t cd_offset = z->len;
  uint8_t *zip = zt_finish(z, flags, len);
  sha256_digest(zip + cd_offset, *len - cd_offset, index_sha256);
  return zip;
}

void zt_free(ziptest *z) {
  free(z->data);
  free(z->cd);
  memset(z, 0, sizeof(*z));
}

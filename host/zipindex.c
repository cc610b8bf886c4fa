#include "zipindex.h"

#include "le.h"
#include "sha256.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

enum {
  LOCAL_SIG = 0x04034b50,
  CENTRAL_SIG = 0x02014b50,
  END_SIG = 0x06054b50,
  END64_SIG = 0x06064b50,
  LOCATOR64_SIG = 0x07064b50,
  LOCAL_SIZE = 30,
  CENTRAL_SIZE = 46,
  END_SIZE = 22,
  END64_SIZE = 56,
  LOCATOR64_SIZE = 20,
  FLAG_ENCRYPTED = 1 << 0,
  FLAG_DATA_DESCRIPTOR = 1 << 3,
  FLAG_UTF8 = 1 << 11,
};

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return -1;
}

/* Damage: the handler hears of it first (and normally ends the process). */
static int damaged(const zipindex *zi, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int damaged(const zipindex *zi, char *err, size_t errlen, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (zi->on_damage)
    zi->on_damage(msg);
  snprintf(err, errlen, "%s", msg);
  return -1;
}

/* Damage found by a check that only prefetches (quiet): no handler, the
 * reader that needs the member will find it again and report it. */
#define DAMAGED(zi, quiet, err, errlen, ...)                                                       \
  ((quiet) ? fail((err), (errlen), __VA_ARGS__) : damaged((zi), (err), (errlen), __VA_ARGS__))

static void start_verifier(zipindex *zi, int quiet);
static void join_verifier(zipindex *zi);

/* Eight bytes a step: names share long prefixes ("site-packages/..."), and
 * the index hashes some 2,000 of them at every start, `--version` included. */
static uint64_t name_hash(const char *s, size_t len) {
  const uint64_t k = 0xff51afd7ed558ccdULL;
  uint64_t h = 0x9e3779b97f4a7c15ULL ^ len, w;
  for (; len >= 8; s += 8, len -= 8) {
    memcpy(&w, s, 8);
    h = (h ^ w) * k;
    h ^= h >> 32;
  }
  w = 0;
  memcpy(&w, s, len);
  h = (h ^ w) * k;
  h ^= h >> 29;
  h *= 0xc4ceb9fe1a85ec53ULL;
  return h ^ (h >> 32);
}

static int entry_cmp(const void *a, const void *b) {
  const zipindex_entry *x = a, *y = b;
  size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
  int c = memcmp(x->name, y->name, n);
  if (c)
    return c;
  return (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

static int name_is_safe(const char *name, size_t len) {
  if (len == 0 || name[0] == '/' || memchr(name, '\\', len) || memchr(name, '\0', len))
    return 0;
  for (const char *p = name, *end = name + len;;) { /* no "." or ".." segment */
    const char *slash = memchr(p, '/', (size_t)(end - p));
    size_t seg = (size_t)((slash ? slash : end) - p);
    if ((seg == 1 && p[0] == '.') || (seg == 2 && p[0] == '.' && p[1] == '.'))
      return 0;
    if (!slash)
      return 1;
    p = slash + 1;
  }
}

/* Well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
static int is_utf8(const uint8_t *s, size_t len) {
  size_t i = 0;
  for (uint64_t w; len - i >= 8; i += 8) { /* ASCII, eight bytes a step */
    memcpy(&w, s + i, 8);
    if (w & 0x8080808080808080ULL)
      break;
  }
  while (i < len) {
    uint8_t c = s[i];
    size_t n = c < 0x80                 ? 0
               : c >= 0xc2 && c <= 0xdf ? 1
               : c >= 0xe0 && c <= 0xef ? 2
               : c >= 0xf0 && c <= 0xf4 ? 3
                                        : 9;
    if (n == 9 || n >= len - i)
      return 0;
    for (size_t k = 1; k <= n; k++)
      if ((s[i + k] & 0xc0) != 0x80)
        return 0;
    if ((c == 0xe0 && s[i + 1] < 0xa0) || (c == 0xed && s[i + 1] > 0x9f) ||
        (c == 0xf0 && s[i + 1] < 0x90) || (c == 0xf4 && s[i + 1] > 0x8f))
      return 0;
    i += n + 1;
  }
  return 1;
}

static int build_hash(zipindex *zi) {
  size_t nslots = 16;
  while (nslots < zi->count * 2)
    nslots <<= 1;
  zi->slots = calloc(nslots, sizeof(*zi->slots));
  if (!zi->slots)
    return -1;
  zi->slot_mask = nslots - 1;
  for (size_t i = 0; i < zi->count; i++) {
    size_t s = name_hash(zi->entries[i].name, zi->entries[i].name_len) & zi->slot_mask;
    while (zi->slots[s])
      s = (s + 1) & zi->slot_mask;
    zi->slots[s] = (uint32_t)(i + 1);
  }
  return 0;
}

/* The end records: where the central directory starts and ends, and how many
 * entries it holds. The directory must end where the end records begin. */
typedef struct zip_end {
  uint64_t count, cd_offset, cd_end;
} zip_end;

static int find_end(const uint8_t *d, size_t len, zip_end *out, char *err, size_t errlen) {
  if (len < END_SIZE)
    return fail(err, errlen, "archive is not a valid zip (%zu bytes)", len);
  size_t end_at = SIZE_MAX;
  size_t lowest = len - END_SIZE > 0xffff ? len - END_SIZE - 0xffff : 0;
  for (size_t at = len - END_SIZE + 1; at-- > lowest;) {
    if (le32(d + at) == END_SIG && at + END_SIZE + le16(d + at + 20) == len) {
      end_at = at;
      break;
    }
  }
  if (end_at == SIZE_MAX)
    return fail(err, errlen, "archive is not a valid zip: no end of central directory record");
  const uint8_t *e = d + end_at;
  if (le16(e + 4) != 0 || le16(e + 6) != 0 || le16(e + 8) != le16(e + 10))
    return fail(err, errlen, "archive is not a valid zip: multi-disk archives are not supported");
  out->count = le16(e + 10);
  uint64_t cd_size = le32(e + 12);
  out->cd_offset = le32(e + 16);
  out->cd_end = end_at;
  if (out->count == 0xffff || cd_size == 0xffffffff || out->cd_offset == 0xffffffff) {
    /* zip64: the locator just before, pointing at the zip64 end record just
     * before it. */
    if (end_at < LOCATOR64_SIZE + END64_SIZE || le32(e - LOCATOR64_SIZE) != LOCATOR64_SIG)
      return fail(err, errlen, "archive is not a valid zip: zip64 end records missing");
    const uint8_t *loc = e - LOCATOR64_SIZE;
    uint64_t end64_at = le64(loc + 8);
    if (le32(loc + 4) != 0 || le32(loc + 16) != 1 || end64_at > end_at - LOCATOR64_SIZE ||
        end_at - LOCATOR64_SIZE - end64_at < END64_SIZE)
      return fail(err, errlen, "archive is not a valid zip: bad zip64 end locator");
    const uint8_t *e64 = d + end64_at;
    if (le32(e64) != END64_SIG || le64(e64 + 4) != end_at - LOCATOR64_SIZE - end64_at - 12 ||
        le32(e64 + 16) != 0 || le32(e64 + 20) != 0 || le64(e64 + 24) != le64(e64 + 32))
      return fail(err, errlen, "archive is not a valid zip: bad zip64 end record");
    out->count = le64(e64 + 32);
    cd_size = le64(e64 + 40);
    out->cd_offset = le64(e64 + 48);
    out->cd_end = end64_at;
  }
  if (out->cd_offset > out->cd_end || out->cd_end - out->cd_offset != cd_size)
    return fail(err, errlen,
                "archive is not a valid zip: its central directory (%llu+%llu) does not end "
                "where the end records begin (%llu)",
                (unsigned long long)out->cd_offset, (unsigned long long)cd_size,
                (unsigned long long)out->cd_end);
  if (out->count > cd_size / CENTRAL_SIZE || out->count >= UINT32_MAX)
    return fail(err, errlen, "archive has an invalid number of members (%llu)",
                (unsigned long long)out->count);
  return 0;
}

/* Parses the central directory entry at *pos into e (its name copied to
 * *names), advancing both. */
static int parse_entry(zipindex *zi, const zip_end *end, uint64_t *pos, char **names,
                       zipindex_entry *e, char *err, size_t errlen) {
  const uint8_t *d = zi->data;
  uint64_t at = *pos;
  if (end->cd_end - at < CENTRAL_SIZE || le32(d + at) != CENTRAL_SIG)
    return fail(err, errlen, "archive member %llu is unreadable: bad central directory entry",
                (unsigned long long)e->zip_index);
  const uint8_t *c = d + at;
  uint16_t flags = le16(c + 8), method = le16(c + 10);
  size_t nlen = le16(c + 28), xlen = le16(c + 30), clen = le16(c + 32);
  if (end->cd_end - at - CENTRAL_SIZE < nlen + xlen + clen)
    return fail(err, errlen, "archive member %llu is unreadable: its entry is truncated",
                (unsigned long long)e->zip_index);
  const char *name = (const char *)c + CENTRAL_SIZE;
  *pos = at + CENTRAL_SIZE + nlen + xlen + clen;
  if (!name_is_safe(name, nlen))
    return fail(err, errlen, "archive member name is unsafe: %.*s", (int)(nlen > 200 ? 200 : nlen),
                name);
  if ((flags & FLAG_UTF8) && !is_utf8((const uint8_t *)name, nlen))
    return fail(err, errlen, "archive member name is flagged UTF-8 but is not: %.*s",
                (int)(nlen > 200 ? 200 : nlen), name);
  memcpy(*names, name, nlen);
  (*names)[nlen] = '\0';
  e->name = *names;
  e->name_len = nlen;
  *names += nlen + 1;
  if (flags & (FLAG_ENCRYPTED | FLAG_DATA_DESCRIPTOR))
    return fail(err, errlen, "archive member %.200s is %s, which is not supported", e->name,
                flags & FLAG_ENCRYPTED ? "encrypted" : "written with a data descriptor");
  if (method != ZIPINDEX_STORED && method != ZIPINDEX_DEFLATED && method != ZIPINDEX_ZSTD)
    return fail(err, errlen, "archive member %.200s uses unsupported compression method %u",
                e->name, (unsigned)method);
  e->method = method;
  e->crc = le32(c + 16);
  e->comp_size = le32(c + 20);
  e->size = le32(c + 24);
  e->offset = le32(c + 42);
  if (e->comp_size == 0xffffffff || e->size == 0xffffffff || e->offset == 0xffffffff)
    return fail(err, errlen, "archive member %.200s needs zip64 fields, which are not supported",
                e->name);
  if (e->offset >= end->cd_offset)
    return fail(err, errlen, "archive member %.200s starts past the member data", e->name);
  const uint8_t *x = c + CENTRAL_SIZE + nlen;
  for (size_t i = 0; i < xlen;) {
    if (xlen - i < 4 || xlen - i - 4 < le16(x + i + 2))
      return fail(err, errlen, "archive member %.200s has a malformed extra field", e->name);
    uint16_t id = le16(x + i), size = le16(x + i + 2);
    if (id == ZIPINDEX_DIGEST_FIELD) {
      if (size != ZIPINDEX_SHA256_SIZE || e->digest)
        return fail(err, errlen, "archive member %.200s has a malformed digest field", e->name);
      e->digest = x + i + 4;
    }
    i += 4 + (size_t)size;
  }
  if (zi->verified && !e->digest)
    return fail(err, errlen, "archive member %.200s carries no digest", e->name);
  if (!zi->verified)
    e->digest = NULL;
  return 0;
}

static int open_index(zipindex *zi, const void *data, size_t len, const uint8_t *index_sha256,
                      char *err, size_t errlen) {
  memset(zi, 0, sizeof(*zi));
  zi->data = data;
  zi->len = len;
  zi->verified = index_sha256 != NULL;
  zip_end end = {0, 0, 0};
  if (find_end(zi->data, len, &end, err, errlen) != 0) {
    if (index_sha256) { /* the packer wrote good end records: this is damage */
      char why[512];
      snprintf(why, sizeof(why), "%s", err);
      fail(err, errlen, "archive index is damaged or was modified (%s)", why);
    }
    goto fail;
  }
  zi->index_offset = end.cd_offset;
  if (index_sha256) {
    uint8_t digest[SHA256_DIGEST_SIZE];
    sha256_digest(zi->data + end.cd_offset, len - end.cd_offset, digest);
    if (memcmp(digest, index_sha256, SHA256_DIGEST_SIZE) != 0) {
      fail(err, errlen,
           "archive index is damaged or was modified (its SHA-256 differs from the trailer's)");
      goto fail;
    }
  }
  if (pthread_mutex_init(&zi->dctx_lock, NULL) != 0) {
    fail(err, errlen, "cannot create a mutex");
    goto fail;
  }
  zi->lock_ready = 1;
  size_t n = (size_t)end.count;
  zi->entries = calloc(n ? n : 1, sizeof(*zi->entries));
  zi->checked = calloc(n ? n : 1, sizeof(*zi->checked));
  /* Names take less room than the directory that holds them. */
  zi->names = malloc((size_t)(end.cd_end - end.cd_offset) + n + 1);
  if (!zi->entries || !zi->checked || !zi->names) {
    fail(err, errlen, "out of memory");
    goto fail;
  }
  uint64_t pos = end.cd_offset;
  char *names = zi->names;
  for (size_t i = 0; i < n; i++) {
    zipindex_entry *e = &zi->entries[i];
    e->zip_index = i;
    if (parse_entry(zi, &end, &pos, &names, e, err, errlen) != 0)
      goto fail;
    zi->count++;
  }
  if (pos != end.cd_end) {
    fail(err, errlen, "archive's central directory holds more than its %zu members", n);
    goto fail;
  }
  /* appbin-pack writes the directory sorted: check rather than sort. */
  size_t unsorted = 1;
  while (unsorted < zi->count && entry_cmp(&zi->entries[unsorted - 1], &zi->entries[unsorted]) < 0)
    unsorted++;
  if (unsorted < zi->count) { /* strictly ascending otherwise: no duplicate */
    qsort(zi->entries, zi->count, sizeof(*zi->entries), entry_cmp);
    for (size_t i = 1; i < zi->count; i++) {
      if (entry_cmp(&zi->entries[i - 1], &zi->entries[i]) == 0) {
        fail(err, errlen, "archive has a duplicate member: %.200s", zi->entries[i].name);
        goto fail;
      }
    }
  }
  if (build_hash(zi) != 0) {
    fail(err, errlen, "out of memory");
    goto fail;
  }
  return 0;

fail:
  zipindex_close(zi);
  return -1;
}

int zipindex_open(zipindex *zi, const void *data, size_t len, char *err, size_t errlen) {
  return open_index(zi, data, len, NULL, err, errlen);
}

int zipindex_open_verified(zipindex *zi, const void *data, size_t len,
                           const uint8_t index_sha256[ZIPINDEX_SHA256_SIZE], char *err,
                           size_t errlen) {
  return open_index(zi, data, len, index_sha256, err, errlen);
}

void zipindex_on_damage(zipindex *zi, zipindex_damage_fn fn) { zi->on_damage = fn; }

void zipindex_close(zipindex *zi) {
  join_verifier(zi);
  free(zi->verifier_order);         /* a fork's child's copy: the thread is the parent's */
  if (zi->verifier_pid == getpid()) /* this process made the thread, and the lock */
    pthread_mutex_destroy(&zi->verifier_join_lock);
  if (zi->lock_ready)
    pthread_mutex_destroy(&zi->dctx_lock);
  ZSTD_freeDCtx(zi->dctx); /* NULL is fine */
  free(zi->entries);
  free((void *)zi->checked);
  free(zi->names);
  free(zi->slots);
  memset(zi, 0, sizeof(*zi));
}

const zipindex_entry *zipindex_find(const zipindex *zi, const char *name, size_t len) {
  if (!zi->slots)
    return NULL;
  size_t s = name_hash(name, len) & zi->slot_mask;
  for (uint32_t slot; (slot = zi->slots[s]) != 0; s = (s + 1) & zi->slot_mask) {
    const zipindex_entry *e = &zi->entries[slot - 1];
    if (e->name_len == len && memcmp(e->name, name, len) == 0)
      return e;
  }
  return NULL;
}

/* A member's record: its local header (which must agree with the central
 * directory), name, extra field and data, inside the member area. */
typedef struct record {
  uint64_t data_at, end;
} record;

static int find_record(const zipindex *zi, const zipindex_entry *e, int quiet, record *r, char *err,
                       size_t errlen) {
  uint64_t limit = zi->index_offset, at = e->offset;
  const uint8_t *h = zi->data + at;
  if (limit - at < LOCAL_SIZE || le32(h) != LOCAL_SIG)
    return DAMAGED(zi, quiet, err, errlen,
                   "member %s is damaged: no local header where it should be", e->name);
  size_t nlen = le16(h + 26), xlen = le16(h + 28);
  if (limit - at - LOCAL_SIZE < nlen + xlen)
    return DAMAGED(zi, quiet, err, errlen, "member %s is damaged: its local header is truncated",
                   e->name);
  r->data_at = at + LOCAL_SIZE + nlen + xlen;
  if (nlen != e->name_len || memcmp(h + LOCAL_SIZE, e->name, nlen) != 0 ||
      le16(h + 8) != e->method || le32(h + 14) != e->crc || le32(h + 18) != e->comp_size ||
      le32(h + 22) != e->size || (le16(h + 6) & (FLAG_ENCRYPTED | FLAG_DATA_DESCRIPTOR)))
    return DAMAGED(zi, quiet, err, errlen,
                   "member %s is damaged: its local header disagrees with the central directory",
                   e->name);
  if (limit - r->data_at < e->comp_size)
    return DAMAGED(zi, quiet, err, errlen, "member %s is damaged: its data runs into the index",
                   e->name);
  r->end = r->data_at + e->comp_size;
  return 0;
}

/* Checks a member's record against its digest, once. A reader's first
 * checks count towards zipindex_verify_start_after(). */
static int check_record(zipindex *zi, const zipindex_entry *e, const record *r, int reader,
                        int quiet, char *err, size_t errlen) {
  if (!e->digest)
    return 0;
  _Atomic unsigned char *checked = &zi->checked[e - zi->entries];
  if (atomic_load_explicit(checked, memory_order_acquire))
    return 0;
  uint8_t digest[SHA256_DIGEST_SIZE];
  sha256_digest(zi->data + e->offset, (size_t)(r->end - e->offset), digest);
  if (memcmp(digest, e->digest, SHA256_DIGEST_SIZE) != 0)
    return DAMAGED(zi, quiet, err, errlen,
                   "member %s is damaged or was modified (its SHA-256 differs from the index's)",
                   e->name);
  atomic_store_explicit(checked, 1, memory_order_release);
  if (reader && zi->start_after &&
      atomic_fetch_add_explicit(&zi->first_reads, 1, memory_order_relaxed) + 1 == zi->start_after)
    start_verifier(zi, 1);
  return 0;
}

static int check_crc(const zipindex *zi, const zipindex_entry *e, const void *buf, int quiet,
                     char *err, size_t errlen) {
  if (e->digest) /* the record's SHA-256 covered these bytes */
    return 0;
  if ((uint32_t)crc32_z(0L, buf, (size_t)e->size) != e->crc)
    return DAMAGED(zi, quiet, err, errlen, "member %s is damaged: CRC error", e->name);
  return 0;
}

static int inflate_member(const zipindex *zi, const zipindex_entry *e, const uint8_t *src,
                          void *buf, int quiet, char *err, size_t errlen) {
  unsigned char none;
  z_stream zs = {0};
  if (inflateInit2(&zs, -MAX_WBITS) != Z_OK)
    return fail(err, errlen, "out of memory reading member %s", e->name);
  zs.next_in = (Bytef *)src;
  zs.avail_in = (uInt)e->comp_size;
  zs.next_out = e->size ? buf : &none;
  zs.avail_out = (uInt)e->size;
  int rc = inflate(&zs, Z_FINISH);
  int ok = rc == Z_STREAM_END && zs.total_out == e->size && zs.avail_in == 0;
  const char *why = rc == Z_STREAM_END  ? "its size differs from the recorded one"
                    : rc == Z_BUF_ERROR ? "it holds more data than its recorded size"
                                        : "its deflate stream is invalid";
  inflateEnd(&zs);
  if (!ok)
    return DAMAGED(zi, quiet, err, errlen, "member %s is damaged: %s", e->name, why);
  return 0;
}

static int unzstd_member(zipindex *zi, const zipindex_entry *e, const uint8_t *src, void *buf,
                         int quiet, char *err, size_t errlen) {
  unsigned char none;
  pthread_mutex_lock(&zi->dctx_lock);
  if (!zi->dctx)
    zi->dctx = ZSTD_createDCtx();
  size_t n = zi->dctx ? ZSTD_decompressDCtx(zi->dctx, e->size ? buf : &none, (size_t)e->size, src,
                                            (size_t)e->comp_size)
                      : 0;
  int made = zi->dctx != NULL;
  pthread_mutex_unlock(&zi->dctx_lock);
  if (!made)
    return fail(err, errlen, "out of memory reading member %s", e->name);
  if (ZSTD_isError(n) || n != e->size)
    return DAMAGED(zi, quiet, err, errlen, "member %s is damaged: %s", e->name,
                   ZSTD_isError(n) ? ZSTD_getErrorName(n)
                                   : "its size differs from the recorded one");
  return 0;
}

static int read_member_bytes(zipindex *zi, const zipindex_entry *e, void *buf, int quiet, char *err,
                             size_t errlen) {
  if (e->comp_size > SIZE_MAX || e->size > SIZE_MAX)
    return fail(err, errlen, "member %s is too large", e->name);
  record r = {0, 0};
  if (find_record(zi, e, quiet, &r, err, errlen) != 0 ||
      check_record(zi, e, &r, 1, quiet, err, errlen) != 0)
    return -1;
  const uint8_t *src = zi->data + r.data_at;
  int rc;
  switch (e->method) {
  case ZIPINDEX_STORED:
    if (e->comp_size != e->size)
      return DAMAGED(zi, quiet, err, errlen, "member %s is damaged: its sizes disagree", e->name);
    memcpy(buf, src, (size_t)e->size);
    rc = 0;
    break;
  case ZIPINDEX_DEFLATED:
    rc = inflate_member(zi, e, src, buf, quiet, err, errlen);
    break;
  default:
    rc = unzstd_member(zi, e, src, buf, quiet, err, errlen);
    break;
  }
  return rc == 0 ? check_crc(zi, e, buf, quiet, err, errlen) : -1;
}

static int read_member(zipindex *zi, const zipindex_entry *e, void *buf, int quiet, char *err,
                       size_t errlen) {
  int rc = read_member_bytes(zi, e, buf, quiet, err, errlen);
  zipindex_release(zi, e); /* its bytes are in buf now */
  return rc;
}

static int read_with_errno(zipindex *zi, const zipindex_entry *e, void *buf, int quiet, char *err,
                           size_t errlen) {
  errno = 0;
  int rc = read_member(zi, e, buf, quiet, err, errlen);
  if (rc != 0)
    errno = errno == ENOMEM ? ENOMEM : EIO; /* malloc() failing says ENOMEM */
  return rc;
}

int zipindex_read(zipindex *zi, const zipindex_entry *e, void *buf, char *err, size_t errlen) {
  return read_with_errno(zi, e, buf, 0, err, errlen);
}

int zipindex_read_data(zipindex *zi, const zipindex_entry *e, void *buf, char *err, size_t errlen) {
  return read_with_errno(zi, e, buf, 1, err, errlen);
}

static const void *stored_data(zipindex *zi, const zipindex_entry *e, int quiet, char *err,
                               size_t errlen) {
  if (e->method != ZIPINDEX_STORED) {
    fail(err, errlen, "member %s is compressed", e->name);
    return NULL;
  }
  record r = {0, 0};
  if (find_record(zi, e, quiet, &r, err, errlen) != 0 ||
      check_record(zi, e, &r, !quiet, quiet, err, errlen) != 0)
    return NULL;
  if (e->comp_size != e->size) {
    DAMAGED(zi, quiet, err, errlen, "member %s is damaged: its sizes disagree", e->name);
    return NULL;
  }
  const uint8_t *src = zi->data + r.data_at;
  return check_crc(zi, e, src, quiet, err, errlen) == 0 ? src : NULL;
}

const void *zipindex_stored_data(zipindex *zi, const zipindex_entry *e, char *err, size_t errlen) {
  return stored_data(zi, e, 0, err, errlen);
}

const void *zipindex_stored_data_ahead(zipindex *zi, const zipindex_entry *e, char *err,
                                       size_t errlen) {
  return stored_data(zi, e, 1, err, errlen);
}

typedef struct by_offset {
  uint64_t offset;
  size_t entry;
} by_offset;

/* Heapsort by offset: glibc's qsort may allocate, and the verifier thread
 * must not (see start_verifier). */
static void sift_down(by_offset *a, size_t root, size_t n) {
  for (size_t child; (child = 2 * root + 1) < n; root = child) {
    if (child + 1 < n && a[child + 1].offset > a[child].offset)
      child++;
    if (a[root].offset >= a[child].offset)
      return;
    by_offset t = a[root];
    a[root] = a[child];
    a[child] = t;
  }
}

static void sort_by_offset(by_offset *a, size_t n) {
  for (size_t i = n / 2; i-- > 0;)
    sift_down(a, i, n);
  for (size_t end = n; end > 1; end--) {
    by_offset t = a[0];
    a[0] = a[end - 1];
    a[end - 1] = t;
    sift_down(a, 0, end - 1);
  }
}

/* Drops the whole pages of data[from, to) from the resident set (see
 * zipindex_release_behind): advice, whose failure changes nothing. */
static uintptr_t page_size(void) {
  static long page;
  if (!page)
    page = sysconf(_SC_PAGESIZE) > 0 ? sysconf(_SC_PAGESIZE) : 4096;
  return (uintptr_t)page;
}

static void release_range(const zipindex *zi, uint64_t from, uint64_t to) {
  /* Whole pages, the edge ones included: each holds a byte of the mapping,
   * so it is part of it, and a page dropped too early only faults in again. */
  uintptr_t page = page_size();
  uintptr_t start = (uintptr_t)(zi->data + from) & ~(page - 1);
  uintptr_t end = ((uintptr_t)(zi->data + to) + page - 1) & ~(page - 1);
  if (to > from)
    (void)madvise((void *)start, end - start, MADV_DONTNEED);
}

/* release_range() over the addresses [from, to), clipped to the records
 * (the host's bytes before the archive: mapped, never dirty; the index
 * after them stays). */
static void release_blocks(const zipindex *zi, uintptr_t from, uintptr_t to) {
  uintptr_t lo = (uintptr_t)zi->data, hi = lo + (uintptr_t)zi->index_offset;
  from = from < lo ? lo : from;
  to = to > hi ? hi : to;
  if (to > from)
    release_range(zi, from - lo, to - lo);
}

void zipindex_hold_releases(zipindex *zi, int held) { atomic_store(&zi->release_held, held); }

void zipindex_release(zipindex *zi, const zipindex_entry *e) {
  if (!zi->release_behind || e->offset >= zi->index_offset || atomic_load(&zi->release_held))
    return;
  /* The record's extent: its local header (read and checked before any
   * caller had the bytes), name, extra field (appbin-pack pads stored
   * shared objects to a page with it) and data. */
  const uint8_t *h = zi->data + e->offset;
  uint64_t end = e->offset + LOCAL_SIZE + le16(h + 26) + le16(h + 28) + e->comp_size;
  /* A page fault maps the neighbouring pages already in the page cache too
   * (Linux's fault-around: the aligned 64 KiB around the fault, by
   * default), so whole aligned blocks go, clipped to the archive: from the
   * one the record starts in up to the one it ends in, which stays for the
   * record after it (start-up reads them in archive order; dropping it
   * made every next read fault it in again) and goes with the next release
   * whatever that one reads: in archive order it is that record's first
   * block, dropped with the rest of its range, so a record inside one
   * block makes no system call at all (most .pyc). The archive's last
   * record drops all of its own. */
  const uintptr_t block = (uintptr_t)64 << 10;
  uintptr_t start = (uintptr_t)(zi->data + e->offset) & ~(block - 1);
  uintptr_t kept = end < zi->index_offset ? (uintptr_t)(zi->data + end) & ~(block - 1) : 0;
  uintptr_t stop = kept ? kept : (uintptr_t)(zi->data + zi->index_offset);
  release_blocks(zi, start, stop);
  uintptr_t prev = atomic_exchange_explicit(&zi->kept_block, kept, memory_order_relaxed);
  if (prev && prev != kept && !(prev >= start && prev < stop))
    release_blocks(zi, prev, prev + block);
}

/* Checks every member not checked yet, in archive order (appbin-pack puts
 * what start-up reads first), and that the records follow one another from
 * the archive's start to the index, so that no byte escapes every digest.
 * `quiet` (a prefetch for readers): damage is not reported, the pass goes
 * on past it, and it stops at the first compressed member no reader has
 * checked: it covers the stored start-up code laid out first (and the
 * manifest among it, read at start), what a program's imports read; the
 * rest a reader hashes if it ever reads it. `order` has room for every
 * entry; nothing is allocated (the verifier thread runs this). */
static int verify_members(zipindex *zi, int quiet, by_offset *order, char *err, size_t errlen) {
  if (!zi->verified)
    return fail(err, errlen, "archive carries no digests to verify");
  if (atomic_load(&zi->all_checked))
    return 0;
  for (size_t i = 0; i < zi->count; i++)
    order[i] = (by_offset){zi->entries[i].offset, i};
  sort_by_offset(order, zi->count);
  uint64_t at = 0, released = 0;
  int rc = 0, partial = 0;
  for (size_t k = 0; k < zi->count && (rc == 0 || quiet); k++) {
    if (zi->release_behind && at - released >= ((uint64_t)1 << 20)) {
      release_range(zi, released, at);
      released = at;
    }
    const zipindex_entry *e = &zi->entries[order[k].entry];
    if (quiet && e->method != ZIPINDEX_STORED &&
        !atomic_load_explicit(&zi->checked[order[k].entry], memory_order_acquire)) {
      partial = 1; /* past the start-up code (the manifest was read, so checked) */
      break;
    }
    record r = {0, 0};
    int bad = 0;
    if (e->offset != at)
      bad = DAMAGED(zi, quiet, err, errlen,
                    "archive is damaged: %s bytes at offset %llu belong to no member",
                    e->offset > at ? "the" : "overlapping", (unsigned long long)at);
    else if ((bad = find_record(zi, e, quiet, &r, err, errlen)) == 0)
      bad = check_record(zi, e, &r, 0, quiet, err, errlen);
    if (bad)
      rc = -1;
    at = r.end ? r.end : e->offset; /* past a bad header: the next record's start */
  }
  /* Once through, all of it: a fault past a released range may have mapped
   * pages before it again (the kernel maps a large folio of the page cache
   * whole), and the index's digests are all used. */
  if (zi->release_behind)
    release_range(zi, 0, rc == 0 && !partial ? zi->len : at);
  if (partial)
    return rc;
  if (rc == 0 && at != zi->index_offset)
    rc = DAMAGED(zi, quiet, err, errlen,
                 "archive is damaged: the bytes at offset %llu belong to no member",
                 (unsigned long long)at);
  if (rc == 0)
    atomic_store(&zi->all_checked, 1);
  return rc;
}

static by_offset *order_new(const zipindex *zi) {
  return malloc((zi->count ? zi->count : 1) * sizeof(by_offset));
}

/* verify_members in the calling thread. */
static int verify_members_here(zipindex *zi, char *err, size_t errlen) {
  if (atomic_load(&zi->all_checked))
    return 0;
  by_offset *order = order_new(zi);
  if (!order)
    return fail(err, errlen, "out of memory verifying the archive");
  int rc = verify_members(zi, 0, order, err, errlen);
  free(order);
  return rc;
}

int zipindex_verify_all(zipindex *zi, char *err, size_t errlen) {
  return verify_members_here(zi, err, errlen);
}

static void *verifier_main(void *arg) {
  zipindex *zi = arg;
  zi->verifier_rc = verify_members(zi, zi->verifier_quiet, zi->verifier_order, zi->verifier_err,
                                   sizeof(zi->verifier_err));
  return NULL;
}

/* The thread allocates nothing: its memory is made and freed here and in
 * join_verifier, so that a fork() under an allocator that does not lock
 * itself across fork (libasan's) cannot catch it holding a lock the child
 * would then wait on forever. */
static void start_verifier(zipindex *zi, int quiet) {
  if (atomic_exchange(&zi->verifier_started, 1) || !(zi->verifier_order = order_new(zi)))
    return;
  if (pthread_mutex_init(&zi->verifier_join_lock, NULL) != 0) {
    free(zi->verifier_order);
    zi->verifier_order = NULL;
    return;
  }
  zi->verifier_quiet = quiet;
  /* Signals stay with the threads that handle them (Python's main thread). */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&zi->verifier, NULL, verifier_main, zi);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc == 0) {
    zi->verifier_pid = getpid();
    atomic_store(&zi->verifier_running, 1);
  } else {
    pthread_mutex_destroy(&zi->verifier_join_lock);
    free(zi->verifier_order);
    zi->verifier_order = NULL;
  }
}

int zipindex_verify_start(zipindex *zi) {
  start_verifier(zi, 0);
  return atomic_load(&zi->verifier_running) ? 0 : -1;
}

void zipindex_verify_start_after(zipindex *zi, unsigned reads) { zi->start_after = reads; }

size_t zipindex_checked_count(const zipindex *zi) {
  size_t n = 0;
  for (size_t i = 0; i < zi->count; i++)
    n += atomic_load_explicit(&zi->checked[i], memory_order_relaxed) != 0;
  return n;
}

void zipindex_release_behind(zipindex *zi) { zi->release_behind = 1; }

/* Joins the verifier thread, if this process has one running; one caller
 * at a time (two threads may wait for it: a second pthread_join would
 * return at once, and free the thread's memory under it). */
static void join_verifier(zipindex *zi) {
  if (!atomic_load(&zi->verifier_running) || zi->verifier_pid != getpid())
    return; /* a fork's child has no thread, and the lock may be held in the parent */
  pthread_mutex_lock(&zi->verifier_join_lock);
  if (atomic_load(&zi->verifier_running)) {
    pthread_join(zi->verifier, NULL);
    free(zi->verifier_order);
    zi->verifier_order = NULL;
    atomic_store(&zi->verifier_running, 0);
  }
  pthread_mutex_unlock(&zi->verifier_join_lock);
}

int zipindex_verify_wait(zipindex *zi, char *err, size_t errlen) {
  int had_thread = atomic_load(&zi->verifier_running) && zi->verifier_pid == getpid();
  join_verifier(zi);
  if (had_thread && zi->verifier_rc != 0 && !zi->verifier_quiet)
    return fail(err, errlen, "%s", zi->verifier_err);
  return verify_members_here(zi, err, errlen); /* nothing left to hash, normally */
}

size_t zipindex_lower_bound(const zipindex *zi, const char *prefix, size_t len) {
  zipindex_entry key = {.name = prefix, .name_len = len};
  size_t lo = 0, hi = zi->count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (entry_cmp(&zi->entries[mid], &key) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

int zipindex_is_dir(const zipindex *zi, const char *dir, size_t len) {
  if (len == 0)
    return zi->count > 0;
  char *prefix = malloc(len + 1);
  if (!prefix)
    return 0;
  memcpy(prefix, dir, len);
  prefix[len] = '/';
  size_t i = zipindex_lower_bound(zi, prefix, len + 1);
  int found = i < zi->count && zi->entries[i].name_len > len &&
              memcmp(zi->entries[i].name, prefix, len + 1) == 0;
  free(prefix);
  return found;
}

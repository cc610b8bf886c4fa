#include "codecache.h"

#include "le.h"

#include <stdio.h>
#include <string.h>

/* Eight bytes a step, each mixed in by a multiply and a shift; the entries
 * are compared in full after the hash matches, so it need not be more. */
uint64_t codecache_hash(const char *source, size_t len) {
  const uint8_t *p = (const uint8_t *)source;
  uint64_t h = 0x243F6A8885A308D3u ^ len;
  for (; len >= 8; p += 8, len -= 8) {
    h = (h ^ le64(p)) * 0x9E3779B97F4A7C15u;
    h ^= h >> 29;
  }
  uint64_t tail = 0;
  for (size_t i = 0; i < len; i++)
    tail |= (uint64_t)p[i] << (8 * i);
  h = (h ^ tail) * 0x9E3779B97F4A7C15u;
  h ^= h >> 32;
  return h;
}

typedef struct entry {
  uint64_t hash;
  int32_t start, flags, feature_version, optimize;
  uint32_t filename_off, filename_len, source_off, source_len, code_off, code_len;
} entry;

static entry entry_at(const codecache *cc, uint32_t i) {
  const uint8_t *p = cc->data + CODECACHE_HEADER_SIZE + (size_t)i * CODECACHE_ENTRY_SIZE;
  entry e;
  e.hash = le64(p);
  e.start = (int32_t)le32(p + 8);
  e.flags = (int32_t)le32(p + 12);
  e.feature_version = (int32_t)le32(p + 16);
  e.optimize = (int32_t)le32(p + 20);
  e.filename_off = le32(p + 24);
  e.filename_len = le32(p + 28);
  e.source_off = le32(p + 32);
  e.source_len = le32(p + 36);
  e.code_off = le32(p + 40);
  e.code_len = le32(p + 44);
  return e;
}

static int in_bounds(uint64_t off, uint64_t len, size_t size) {
  return off <= size && len <= size - off;
}

int codecache_open(codecache *cc, const void *data, size_t len, char *err, size_t errlen) {
  const uint8_t *p = data;
  memset(cc, 0, sizeof(*cc));
  if (len < CODECACHE_HEADER_SIZE || memcmp(p, CODECACHE_MAGIC, 8) != 0) {
    snprintf(err, errlen, "%s is not a code cache", CODECACHE_MEMBER);
    return -1;
  }
  uint32_t version = le32(p + 8);
  if (version != CODECACHE_FORMAT_VERSION) {
    snprintf(err, errlen, "%s has format %u, this host reads %d", CODECACHE_MEMBER, version,
             CODECACHE_FORMAT_VERSION);
    return -1;
  }
  cc->data = p;
  cc->len = len;
  cc->python_version = le32(p + 12);
  cc->optimization_level = le32(p + 16);
  cc->count = le32(p + 20);
  if ((uint64_t)cc->count * CODECACHE_ENTRY_SIZE > len - CODECACHE_HEADER_SIZE) {
    snprintf(err, errlen, "%s: %u entries do not fit in %zu bytes", CODECACHE_MEMBER, cc->count,
             len);
    memset(cc, 0, sizeof(*cc));
    return -1;
  }
  uint64_t previous = 0;
  for (uint32_t i = 0; i < cc->count; i++) {
    entry e = entry_at(cc, i);
    if (!in_bounds(e.filename_off, e.filename_len, len) ||
        !in_bounds(e.source_off, e.source_len, len) || !in_bounds(e.code_off, e.code_len, len) ||
        e.code_len == 0 || (i > 0 && e.hash < previous)) {
      snprintf(err, errlen, "%s: entry %u is damaged", CODECACHE_MEMBER, i);
      memset(cc, 0, sizeof(*cc));
      return -1;
    }
    previous = e.hash;
    cc->regex_count +=
        e.start == CODECACHE_START_REGEX_STR || e.start == CODECACHE_START_REGEX_BYTES;
  }
  return 0;
}

const uint8_t *codecache_find(const codecache *cc, const codecache_key *key, uint64_t hash,
                              size_t *code_len) {
  uint32_t lo = 0, hi = cc->count;
  while (lo < hi) { /* the first entry whose hash is >= hash */
    uint32_t mid = lo + (hi - lo) / 2;
    if (le64(cc->data + CODECACHE_HEADER_SIZE + (size_t)mid * CODECACHE_ENTRY_SIZE) < hash)
      lo = mid + 1;
    else
      hi = mid;
  }
  for (uint32_t i = lo; i < cc->count; i++) {
    entry e = entry_at(cc, i);
    if (e.hash != hash)
      break;
    if (e.start == key->start && e.flags == key->flags &&
        e.feature_version == key->feature_version && e.optimize == key->optimize &&
        e.source_len == key->source_len && e.filename_len == key->filename_len &&
        memcmp(cc->data + e.source_off, key->source, key->source_len) == 0 &&
        memcmp(cc->data + e.filename_off, key->filename, key->filename_len) == 0) {
      *code_len = e.code_len;
      return cc->data + e.code_off;
    }
  }
  return NULL;
}

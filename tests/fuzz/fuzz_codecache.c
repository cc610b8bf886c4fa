/* libFuzzer harness for host/codecache.c: arbitrary bytes as a code cache
 * member. codecache_open must refuse or accept without reading out of
 * bounds; once accepted, every entry is found by its own key (or by an
 * earlier entry with the same key), and keys made from the input's last
 * bytes never return bytes outside the member.
 *
 * Inputs shorter than the header are replaced by a small valid member with
 * two entries sharing a hash, so that mutations start from one. */
#include "codecache.h"
#include "le.h"

#include <stdlib.h>
#include <string.h>

/* A valid member: two entries (hash 7), "x = 1" in two modes. */
static size_t seed(uint8_t *m) {
  memset(m, 0, 160);
  memcpy(m, CODECACHE_MAGIC, 8);
  le_put32(m + 8, CODECACHE_FORMAT_VERSION);
  le_put32(m + 20, 2);
  uint32_t blob = CODECACHE_HEADER_SIZE + 2 * CODECACHE_ENTRY_SIZE;
  memcpy(m + blob, "<string>x = 1codeAcodeB", 23);
  for (int i = 0; i < 2; i++) {
    uint8_t *e = m + CODECACHE_HEADER_SIZE + i * CODECACHE_ENTRY_SIZE;
    e[0] = 7;
    le_put32(e + 8, 257 + (uint32_t)i);
    le_put32(e + 24, blob);
    le_put32(e + 28, 8);
    le_put32(e + 32, blob + 8);
    le_put32(e + 36, 5);
    le_put32(e + 40, blob + 13 + 5 * (uint32_t)i);
    le_put32(e + 44, 5);
  }
  return blob + 23;
}

static void check_found(const codecache *cc, const uint8_t *data, size_t len, const uint8_t *e) {
  codecache_key k;
  k.start = (int32_t)le32(e + 8);
  k.flags = (int32_t)le32(e + 12);
  k.feature_version = (int32_t)le32(e + 16);
  k.optimize = (int32_t)le32(e + 20);
  k.filename = (const char *)data + le32(e + 24);
  k.filename_len = le32(e + 28);
  k.source = (const char *)data + le32(e + 32);
  k.source_len = le32(e + 36);
  uint64_t hash = le64(e);
  size_t n = 0;
  const uint8_t *code = codecache_find(cc, &k, hash, &n);
  if (!code || n == 0 || code < data || code + n > data + len)
    abort(); /* an accepted entry is found, inside the member */
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size) {
  uint8_t seeded[160];
  if (size < CODECACHE_HEADER_SIZE) {
    size = seed(seeded);
    in = seeded;
  }
  uint8_t *data = malloc(size); /* exactly the member: reads past it are caught */
  if (!data)
    return 0;
  memcpy(data, in, size);
  codecache cc;
  char err[256];
  if (codecache_open(&cc, data, size, err, sizeof(err)) == 0) {
    for (uint32_t i = 0; i < cc.count && i < 4096; i++)
      check_found(&cc, data, size, data + CODECACHE_HEADER_SIZE + (size_t)i * CODECACHE_ENTRY_SIZE);
    /* a key from the input's tail: found or not, never out of bounds */
    codecache_key k = {
        (const char *)data + size / 2, size - size / 2, "<string>", 8, 257, 0x900, 11, -1};
    size_t n = 0;
    const uint8_t *code = codecache_find(&cc, &k, codecache_hash(k.source, k.source_len), &n);
    if (code && (code < data || code + n > data + size))
      abort();
  } else if (!strstr(err, CODECACHE_MEMBER)) {
    abort(); /* a refusal names the member */
  }
  free(data);
  return 0;
}

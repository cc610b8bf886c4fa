/* codecache: the member format (host/codecache.h) over blobs written here:
 * lookups that must hit only for the exact key (every field, entries sharing
 * a hash), and every kind of damage codecache_open must refuse. */
#include "check.h"
#include "codecache.h"
#include "le.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct spec {
  uint64_t hash;
  int32_t start, flags, feature_version, optimize;
  const char *filename, *source, *code;
} spec;

/* A member holding `n` entries, in the given order; *len gets its size. */
static uint8_t *build(const spec *specs, uint32_t n, size_t *len) {
  size_t size = CODECACHE_HEADER_SIZE + (size_t)n * CODECACHE_ENTRY_SIZE;
  for (uint32_t i = 0; i < n; i++)
    size += strlen(specs[i].filename) + strlen(specs[i].source) + strlen(specs[i].code);
  uint8_t *m = calloc(1, size);
  memcpy(m, CODECACHE_MAGIC, 8);
  le_put32(m + 8, CODECACHE_FORMAT_VERSION);
  le_put32(m + 12, 0x030B02F0);
  le_put32(m + 16, 0);
  le_put32(m + 20, n);
  size_t at = CODECACHE_HEADER_SIZE + (size_t)n * CODECACHE_ENTRY_SIZE;
  for (uint32_t i = 0; i < n; i++) {
    uint8_t *e = m + CODECACHE_HEADER_SIZE + (size_t)i * CODECACHE_ENTRY_SIZE;
    le_put64(e, specs[i].hash);
    le_put32(e + 8, (uint32_t)specs[i].start);
    le_put32(e + 12, (uint32_t)specs[i].flags);
    le_put32(e + 16, (uint32_t)specs[i].feature_version);
    le_put32(e + 20, (uint32_t)specs[i].optimize);
    const char *texts[3] = {specs[i].filename, specs[i].source, specs[i].code};
    for (int t = 0; t < 3; t++) {
      size_t tl = strlen(texts[t]);
      le_put32(e + 24 + 8 * t, (uint32_t)at);
      le_put32(e + 28 + 8 * t, (uint32_t)tl);
      memcpy(m + at, texts[t], tl);
      at += tl;
    }
  }
  *len = size;
  return m;
}

static codecache_key key_of(const spec *s) {
  codecache_key k = {s->source, strlen(s->source), s->filename,        strlen(s->filename),
                     s->start,  s->flags,          s->feature_version, s->optimize};
  return k;
}

static const spec specs[] = {
    {5, 257, 0x900, 11, -1, "<string>", "x = 1\n", "code-a"},
    {5, 257, 0x900, 11, -1, "<string>", "y = 2\n", "code-b"},     /* same hash, other source */
    {5, 257, 0x1000900, 11, -1, "<string>", "x = 1\n", "code-c"}, /* a future's flag */
    {9, 258, 0x900, 11, -1, "<probe>", "a + b", "code-d"},
    {9, 258, 0x900, 11, 2, "<probe>", "a + b", "code-e"}, /* optimize=2 */
};
enum { NSPECS = sizeof(specs) / sizeof(specs[0]) };

static void test_every_entry_is_found_by_its_exact_key(void) {
  size_t len;
  uint8_t *m = build(specs, NSPECS, &len);
  codecache cc;
  char err[256] = "";
  if (!CHECK(codecache_open(&cc, m, len, err, sizeof(err)) == 0))
    return;
  CHECK_EQ_INT(cc.count, NSPECS);
  CHECK_EQ_INT(cc.python_version, 0x030B02F0);
  for (int i = 0; i < NSPECS; i++) {
    codecache_key k = key_of(&specs[i]);
    size_t n = 0;
    const uint8_t *code = codecache_find(&cc, &k, specs[i].hash, &n);
    if (CHECK(code != NULL))
      CHECK(n == strlen(specs[i].code) && memcmp(code, specs[i].code, n) == 0);
  }
  /* one field off: a miss */
  codecache_key k = key_of(&specs[3]);
  size_t n;
  k.start = 257;
  CHECK(codecache_find(&cc, &k, 9, &n) == NULL);
  k = key_of(&specs[3]);
  k.feature_version = 10;
  CHECK(codecache_find(&cc, &k, 9, &n) == NULL);
  k = key_of(&specs[3]);
  k.optimize = 0;
  CHECK(codecache_find(&cc, &k, 9, &n) == NULL);
  k = key_of(&specs[3]);
  k.filename = "<probf>";
  CHECK(codecache_find(&cc, &k, 9, &n) == NULL);
  k = key_of(&specs[3]);
  k.source_len = 4; /* "a + " : a prefix of the source */
  CHECK(codecache_find(&cc, &k, 9, &n) == NULL);
  k = key_of(&specs[0]);
  k.flags = 0x100;
  CHECK(codecache_find(&cc, &k, 5, &n) == NULL);
  k = key_of(&specs[0]);
  CHECK(codecache_find(&cc, &k, 6, &n) == NULL); /* another hash */
  CHECK(codecache_find(&cc, &k, 0, &n) == NULL);
  CHECK(codecache_find(&cc, &k, UINT64_MAX, &n) == NULL);
  free(m);
}

static void test_an_empty_cache_finds_nothing(void) {
  size_t len;
  uint8_t *m = build(specs, 0, &len);
  codecache cc;
  char err[256];
  if (CHECK(codecache_open(&cc, m, len, err, sizeof(err)) == 0)) {
    codecache_key k = key_of(&specs[0]);
    size_t n;
    CHECK(codecache_find(&cc, &k, 5, &n) == NULL);
  }
  free(m);
}

/* codecache_open refuses the member, naming it. */
static void check_refused(const uint8_t *m, size_t len, const char *fragment) {
  codecache cc;
  char err[256] = "";
  CHECK(codecache_open(&cc, m, len, err, sizeof(err)) == -1);
  CHECK_CONTAINS(err, CODECACHE_MEMBER);
  CHECK_CONTAINS(err, fragment);
  CHECK(cc.count == 0);
}

static void test_damage_is_refused(void) {
  size_t len;
  uint8_t *m = build(specs, NSPECS, &len);
  check_refused(m, 10, "not a code cache");
  m[0] ^= 1;
  check_refused(m, len, "not a code cache");
  m[0] ^= 1;
  le_put32(m + 8, 2);
  check_refused(m, len, "format 2");
  le_put32(m + 8, CODECACHE_FORMAT_VERSION);
  le_put32(m + 20, 0xFFFFFFFF); /* count: a table past the end */
  check_refused(m, len, "do not fit");
  le_put32(m + 20, NSPECS);
  uint8_t *e3 = m + CODECACHE_HEADER_SIZE + 3 * CODECACHE_ENTRY_SIZE;
  static const int fields[] = {24, 32, 40}; /* filename, source, code offsets */
  for (int f = 0; f < 3; f++) {
    uint32_t saved = (uint32_t)e3[fields[f]] | (uint32_t)e3[fields[f] + 1] << 8 |
                     (uint32_t)e3[fields[f] + 2] << 16 | (uint32_t)e3[fields[f] + 3] << 24;
    le_put32(e3 + fields[f], (uint32_t)len); /* starts at the end: its length runs past it */
    check_refused(m, len, "entry 3 is damaged");
    le_put32(e3 + fields[f], 0xFFFFFFF0u); /* offset + length wraps in 32 bits */
    check_refused(m, len, "entry 3 is damaged");
    le_put32(e3 + fields[f], saved);
  }
  le_put32(e3 + 44, 0); /* no code */
  check_refused(m, len, "entry 3 is damaged");
  le_put32(e3 + 44, (uint32_t)strlen(specs[3].code));
  le_put64(e3, 1); /* hashes out of order */
  check_refused(m, len, "entry 3 is damaged");
  le_put64(e3, specs[3].hash);
  codecache cc;
  char err[256];
  CHECK(codecache_open(&cc, m, len, err, sizeof(err)) == 0); /* all restored */
  free(m);
}

static void test_hash(void) {
  const char *a = "def __create_fn__(_type_x, _dflt_y):\n def __init__(self, x, y=_dflt_y):\n";
  uint64_t h = codecache_hash(a, strlen(a));
  CHECK(h == codecache_hash(a, strlen(a)));
  /* every length around the 8-byte steps, and one changed byte anywhere */
  char buf[40];
  memset(buf, 'q', sizeof(buf));
  for (size_t n = 1; n < sizeof(buf); n++) {
    uint64_t base = codecache_hash(buf, n);
    CHECK(base != codecache_hash(buf, n - 1));
    for (size_t i = 0; i < n; i++) {
      buf[i] = 'r';
      CHECK(codecache_hash(buf, n) != base);
      buf[i] = 'q';
    }
  }
}

int main(void) {
  test_every_entry_is_found_by_its_exact_key();
  test_an_empty_cache_finds_nothing();
  test_damage_is_refused();
  test_hash();
  return check_summary();
}

/* zipindex: opening archives written by ziptest, lookups (find, lower_bound,
 * is_dir), byte-exact reads, and the archives it must reject: not a zip,
 * truncated anywhere, unsafe or duplicate names, inconsistent headers, and
 * damaged member data (CRC, zstd frames), unsupported compression methods;
 * verified archives (member digests under an index digest): every byte
 * covered, damage reported before any byte is handed out, the background
 * check, the damage handler. */
#include "check.h"
#include "sha256.h"
#include "zipindex.h"
#include "ziptest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct member {
  const char *name;
  const void *data;
  size_t len;
  unsigned flags;
} member;

static uint8_t binary[256];
static char big[100000];

/* Deliberately not in sorted order: the index sorts. */
static const member members[] = {
    {"dir/sub/c", "see", 3, 0},
    {"a.txt", "hello, world\n", 13, 0},
    {"dir/b.bin", binary, sizeof(binary), 0},
    {"empty", "", 0, 0},
    {"z/", "", 0, 0}, /* a directory entry */
    {"\xc3\xbcn\xc3\xaf/\xc4\x87\xc3\xb6\x64\xc3\xa9.py", "# utf-8\n", 8, ZT_UTF8},
    {"caf\xc3\xa9.txt", "no flag", 7, 0}, /* valid UTF-8 without bit 11 */
    {"big.txt", big, sizeof(big), ZT_DEFLATE},
    {"dir-x/y", "dash", 4, 0},
    {"dir.x/y", "dot", 3, 0},
    {"dir0/y", "zero", 4, 0},
    {"emptydeflate", "", 0, ZT_DEFLATE},
    {"big.zst", big, sizeof(big), ZT_ZSTD},
    {"zst/small", "zstd", 4, ZT_ZSTD},
    {"emptyzstd", "", 0, ZT_ZSTD},
};
#define NMEMBERS (sizeof(members) / sizeof(members[0]))

static uint8_t *build(size_t *len) {
  ziptest z;
  zt_init(&z);
  for (size_t i = 0; i < NMEMBERS; i++)
    zt_add_ex(&z, members[i].name, strlen(members[i].name), members[i].data, members[i].len,
              members[i].flags);
  return zt_finish(&z, 0, len);
}

static void init_data(void) {
  for (int i = 0; i < 256; i++)
    binary[i] = (uint8_t)i;
  for (size_t i = 0; i < sizeof(big); i++)
    big[i] = "abcdefghij\n"[(i * 7 + i / 991) % 11];
}

/* Reads a member into an exact-size heap buffer (ASan sees any overrun). */
static int read_member(zipindex *zi, const zipindex_entry *e, char **out, char *err,
                       size_t errlen) {
  *out = malloc(e->size ? e->size : 1);
  if (!*out)
    abort();
  int rc = zipindex_read(zi, e, *out, err, errlen);
  if (rc != 0) {
    free(*out);
    *out = NULL;
  }
  return rc;
}

static void test_valid(void) {
  size_t len;
  uint8_t *zip = build(&len);
  zipindex zi;
  char err[256] = "";
  if (!CHECK_EQ_INT(zipindex_open(&zi, zip, len, err, sizeof(err)), 0)) {
    fprintf(stderr, "  err: %s\n", err);
    free(zip);
    return;
  }
  CHECK_EQ_INT(zi.count, NMEMBERS);
  /* Sorted bytewise, names NUL-terminated, name_len right. */
  for (size_t i = 0; i < zi.count; i++) {
    CHECK_EQ_INT(strlen(zi.entries[i].name), zi.entries[i].name_len);
    if (i > 0) {
      const zipindex_entry *a = &zi.entries[i - 1], *b = &zi.entries[i];
      size_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
      int c = memcmp(a->name, b->name, n);
      CHECK(c < 0 || (c == 0 && a->name_len < b->name_len));
    }
  }
  /* Every member is found and reads back byte-exact. */
  for (size_t i = 0; i < NMEMBERS; i++) {
    const member *m = &members[i];
    const zipindex_entry *e = zipindex_find(&zi, m->name, strlen(m->name));
    if (!CHECK(e != NULL)) {
      fprintf(stderr, "  member %s not found\n", m->name);
      continue;
    }
    CHECK_STR(e->name, m->name);
    CHECK_EQ_INT(e->size, m->len);
    char *buf;
    if (CHECK_EQ_INT(read_member(&zi, e, &buf, err, sizeof(err)), 0)) {
      CHECK_MEM(buf, m->data, m->len);
      free(buf);
    } else {
      fprintf(stderr, "  reading %s: %s\n", m->name, err);
    }
    /* Reading twice gives the same bytes. */
    if (CHECK_EQ_INT(read_member(&zi, e, &buf, err, sizeof(err)), 0)) {
      CHECK_MEM(buf, m->data, m->len);
      free(buf);
    }
  }
  /* Near misses are not found. */
  CHECK(zipindex_find(&zi, "a.tx", 4) == NULL);
  CHECK(zipindex_find(&zi, "a.txtx", 6) == NULL);
  CHECK(zipindex_find(&zi, "A.TXT", 5) == NULL);
  CHECK(zipindex_find(&zi, "", 0) == NULL);
  CHECK(zipindex_find(&zi, "dir", 3) == NULL);
  CHECK(zipindex_find(&zi, "dir/", 4) == NULL);
  CHECK(zipindex_find(&zi, "z", 1) == NULL);
  CHECK(zipindex_find(&zi, "/a.txt", 6) == NULL);
  /* The length is what counts, not a NUL. */
  CHECK(zipindex_find(&zi, "a.txt-and-more", 5) != NULL);
  CHECK(zipindex_find(&zi, "a.txt\0", 6) == NULL);

  /* lower_bound. */
  CHECK_EQ_INT(zipindex_lower_bound(&zi, "", 0), 0);
  CHECK_EQ_INT(zipindex_lower_bound(&zi, "\xff", 1), zi.count);
  size_t i = zipindex_lower_bound(&zi, "dir/", 4);
  if (CHECK(i < zi.count)) {
    CHECK_STR(zi.entries[i].name, "dir/b.bin");
    CHECK(i + 1 < zi.count && strcmp(zi.entries[i + 1].name, "dir/sub/c") == 0);
    CHECK(i + 2 < zi.count && strncmp(zi.entries[i + 2].name, "dir/", 4) != 0);
  }
  i = zipindex_lower_bound(&zi, "a.txt", 5);
  CHECK(i < zi.count && strcmp(zi.entries[i].name, "a.txt") == 0);
  i = zipindex_lower_bound(&zi, "a.txt\x01", 6); /* just past a.txt */
  CHECK(i < zi.count && strcmp(zi.entries[i].name, "a.txt") > 0);
  CHECK(i > 0 && strcmp(zi.entries[i - 1].name, "a.txt") == 0);
  for (size_t k = 0; k < zi.count; k++)
    CHECK_EQ_INT(zipindex_lower_bound(&zi, zi.entries[k].name, zi.entries[k].name_len), k);

  /* is_dir. */
  CHECK_EQ_INT(zipindex_is_dir(&zi, "", 0), 1);
  CHECK_EQ_INT(zipindex_is_dir(&zi, "dir", 3), 1);
  CHECK_EQ_INT(zipindex_is_dir(&zi, "dir/sub", 7), 1);
  CHECK_EQ_INT(zipindex_is_dir(&zi, "z", 1), 1); /* only the "z/" entry */
  CHECK_EQ_INT(zipindex_is_dir(&zi, "\xc3\xbcn\xc3\xaf", 5), 1);
  CHECK_EQ_INT(zipindex_is_dir(&zi, "dir-x", 5), 1);
  CHECK_EQ_INT(zipindex_is_dir(&zi, "dir.x", 5), 1);
  CHECK_EQ_INT(zipindex_is_dir(&zi, "dir0", 4), 1);
  CHECK_EQ_INT(zipindex_is_dir(&zi, "di", 2), 0);
  CHECK_EQ_INT(zipindex_is_dir(&zi, "dir/su", 6), 0);
  CHECK_EQ_INT(zipindex_is_dir(&zi, "a.txt", 5), 0);
  CHECK_EQ_INT(zipindex_is_dir(&zi, "dir/b.bin", 9), 0);
  CHECK_EQ_INT(zipindex_is_dir(&zi, "dir/sub/c", 9), 0);
  CHECK_EQ_INT(zipindex_is_dir(&zi, "nothing", 7), 0);
  CHECK_EQ_INT(zipindex_is_dir(&zi, "dir/", 4), 0); /* given with its slash */
  CHECK_EQ_INT(zipindex_is_dir(&zi, "dirx", 4), 0);

  zipindex_close(&zi);
  CHECK(zi.entries == NULL && zi.count == 0);
  zipindex_close(&zi); /* closing twice is harmless */
  free(zip);
}

static void test_empty_archive(void) {
  ziptest z;
  zt_init(&z);
  size_t len;
  uint8_t *zip = zt_finish(&z, 0, &len);
  CHECK_EQ_INT(len, 22);
  zipindex zi;
  char err[256] = "";
  if (CHECK_EQ_INT(zipindex_open(&zi, zip, len, err, sizeof(err)), 0)) {
    CHECK_EQ_INT(zi.count, 0);
    CHECK(zipindex_find(&zi, "x", 1) == NULL);
    CHECK(zipindex_find(&zi, "", 0) == NULL);
    CHECK_EQ_INT(zipindex_lower_bound(&zi, "x", 1), 0);
    CHECK_EQ_INT(zipindex_is_dir(&zi, "", 0), 0);
    CHECK_EQ_INT(zipindex_is_dir(&zi, "x", 1), 0);
    zipindex_close(&zi);
  }
  free(zip);

  /* An archive comment is fine. */
  zt_init(&z);
  zt_add_str(&z, "m", "x");
  zip = zt_finish(&z, ZT_EOCD_COMMENT, &len);
  if (CHECK_EQ_INT(zipindex_open(&zi, zip, len, err, sizeof(err)), 0)) {
    CHECK(zipindex_find(&zi, "m", 1) != NULL);
    zipindex_close(&zi);
  }
  free(zip);
}

/* Expects zipindex_open to fail with a message holding `needle` (if any). */
static int expect_open_fails(const uint8_t *zip, size_t len, const char *needle, int line) {
  zipindex zi;
  char err[256] = "";
  int rc = zipindex_open(&zi, zip, len, err, sizeof(err));
  int ok = check_report_(rc == -1, __FILE__, line, "zipindex_open fails (rc %d)", rc);
  if (rc == -1) {
    check_report_(err[0] != '\0', __FILE__, line, "an error message");
    if (needle)
      check_report_(strstr(err, needle) != NULL, __FILE__, line, "error \"%s\" holds \"%s\"", err,
                    needle);
    /* A failed open leaves a zeroed index behind. */
    check_report_(zi.entries == NULL && zi.slots == NULL && zi.count == 0, __FILE__, line,
                  "zeroed index after failure");
    CHECK(zipindex_find(&zi, "a", 1) == NULL);
    zipindex_close(&zi);
  } else if (rc == 0) {
    zipindex_close(&zi);
  }
  return ok;
}
#define EXPECT_OPEN_FAILS(zip, len, needle) expect_open_fails((zip), (len), (needle), __LINE__)

static void test_not_a_zip(void) {
  uint8_t junk[4096];
  memset(junk, 'x', sizeof(junk));
  EXPECT_OPEN_FAILS(junk, sizeof(junk), "not a valid zip");
  EXPECT_OPEN_FAILS(junk, 21, NULL);
  EXPECT_OPEN_FAILS(junk, 1, NULL);
  /* An ELF header is not a zip either. */
  static const uint8_t elf[64] = {0x7f, 'E', 'L', 'F', 2, 1, 1};
  EXPECT_OPEN_FAILS(elf, sizeof(elf), NULL);
  /* A lone EOCD signature with garbage after it. */
  uint8_t eocd[22] = {'P',  'K',  5,    6,    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0,    0};
  EXPECT_OPEN_FAILS(eocd, sizeof(eocd), NULL);
}

/* Zero bytes are not a zip archive. The payload trailer check keeps an empty
 * archive from reaching zipindex_open in the host, so this only pins down
 * what the function itself does. */
static void test_zero_bytes(void) {
  zipindex zi;
  char err[256] = "";
  static const uint8_t nothing[1] = {0};
  CHECK_EQ_INT(zipindex_open(&zi, nothing, 0, err, sizeof(err)), -1);
  CHECK_CONTAINS(err, "not a valid zip");
}

static void test_truncated(void) {
  size_t len;
  uint8_t *zip = build(&len);
  /* Cut anywhere: the end of central directory record is gone or wrong. */
  int failures = 0;
  for (size_t cut = 1; cut < len; cut++) {
    zipindex zi;
    char err[256];
    uint8_t *copy = malloc(cut); /* exact size: ASan catches over-reads */
    memcpy(copy, zip, cut);
    int rc = zipindex_open(&zi, copy, cut, err, sizeof(err));
    if (rc != -1) {
      if (failures++ < 5)
        fprintf(stderr, "  archive cut to %zu of %zu bytes opened (rc %d)\n", cut, len, rc);
      if (rc == 0)
        zipindex_close(&zi);
    }
    free(copy);
  }
  CHECK_EQ_INT(failures, 0);
  /* The first bytes lost: every offset is off. */
  EXPECT_OPEN_FAILS(zip + 1, len - 1, NULL);
  EXPECT_OPEN_FAILS(zip + 30, len - 30, NULL);
  free(zip);

  ziptest z;
  static const unsigned knobs[] = {ZT_TRUNCATE_CD, ZT_CD_COUNT_PLUS1, ZT_CD_OFFSET_BAD,
                                   ZT_CD_SIZE_PLUS1, ZT_NO_EOCD};
  for (size_t k = 0; k < sizeof(knobs) / sizeof(knobs[0]); k++) {
    zt_init(&z);
    zt_add_str(&z, "one", "1");
    zt_add_str(&z, "two", "22");
    zt_add_str(&z, "three", "333");
    zip = zt_finish(&z, knobs[k], &len);
    if (!EXPECT_OPEN_FAILS(zip, len, NULL))
      fprintf(stderr, "  with archive knob 0x%x\n", knobs[k]);
    free(zip);
  }
}

static void add_one(ziptest *z, const char *name, size_t name_len, unsigned flags) {
  zt_add_ex(z, name, name_len, "data", 4, flags);
}

static void test_unsafe_names(void) {
  static const char *const unsafe[] = {
      "../x",
      "/abs",
      "a/../b",
      "a/..",
      "..",
      "./x",
      "a/./b",
      "a/.",
      ".",
      "a\\b",
      "\\x",
      "/",
      "x/../../etc/passwd",
  };
  for (size_t i = 0; i < sizeof(unsafe) / sizeof(unsafe[0]); i++) {
    ziptest z;
    zt_init(&z);
    zt_add_str(&z, "fine.txt", "ok");
    add_one(&z, unsafe[i], strlen(unsafe[i]), 0);
    size_t len;
    uint8_t *zip = zt_finish(&z, 0, &len);
    if (!EXPECT_OPEN_FAILS(zip, len, "unsafe"))
      fprintf(stderr, "  name \"%s\"\n", unsafe[i]);
    free(zip);
  }

  /* An empty name. */
  ziptest z;
  zt_init(&z);
  add_one(&z, "", 0, 0);
  size_t len;
  uint8_t *zip = zt_finish(&z, 0, &len);
  EXPECT_OPEN_FAILS(zip, len, NULL);
  free(zip);

  /* A very long unsafe name: the message stays bounded. */
  char *longname = malloc(5000);
  memcpy(longname, "../", 3);
  memset(longname + 3, 'a', 4996);
  longname[4999] = '\0';
  zt_init(&z);
  add_one(&z, longname, strlen(longname), 0);
  zip = zt_finish(&z, 0, &len);
  zipindex zi;
  char err[64];
  CHECK_EQ_INT(zipindex_open(&zi, zip, len, err, sizeof(err)), -1);
  CHECK(strlen(err) < sizeof(err));
  free(zip);
  free(longname);

  /* Names that only look suspicious are fine. */
  static const char *const safe[] = {"..a",  "a..",  "...", ".hidden", "a/.b", "a/..b/c", "a//b",
                                     "dir/", "a/b/", "~",   "-",       "a:b",  "a b"};
  zt_init(&z);
  for (size_t i = 0; i < sizeof(safe) / sizeof(safe[0]); i++)
    add_one(&z, safe[i], strlen(safe[i]), 0);
  zip = zt_finish(&z, 0, &len);
  char err2[256] = "";
  if (CHECK_EQ_INT(zipindex_open(&zi, zip, len, err2, sizeof(err2)), 0)) {
    CHECK_EQ_INT(zi.count, sizeof(safe) / sizeof(safe[0]));
    for (size_t i = 0; i < sizeof(safe) / sizeof(safe[0]); i++)
      CHECK(zipindex_find(&zi, safe[i], strlen(safe[i])) != NULL);
    zipindex_close(&zi);
  } else {
    fprintf(stderr, "  err: %s\n", err2);
  }
  free(zip);
}

/* zipindex.h promises to reject a name holding a NUL. */
static void test_nul_in_name(void) {
  /* With a ".." after the NUL: rejected, whatever the reason. */
  ziptest z;
  zt_init(&z);
  zt_add_str(&z, "ok", "1");
  add_one(&z, "evil\0/../../x", 13, 0);
  size_t len;
  uint8_t *zip = zt_finish(&z, 0, &len);
  EXPECT_OPEN_FAILS(zip, len, "unsafe");
  free(zip);

  /* A NUL and nothing else suspicious: refused too (C code would see the
   * name cut short at the NUL). */
  zt_init(&z);
  zt_add_str(&z, "ok", "1");
  add_one(&z, "ok\0.py", 6, 0);
  zip = zt_finish(&z, 0, &len);
  EXPECT_OPEN_FAILS(zip, len, "unsafe");
  free(zip);
}

static void test_duplicates(void) {
  ziptest z;
  zt_init(&z);
  zt_add_str(&z, "a", "1");
  zt_add_str(&z, "same.txt", "first");
  zt_add_str(&z, "b", "2");
  zt_add_str(&z, "same.txt", "second");
  size_t len;
  uint8_t *zip = zt_finish(&z, 0, &len);
  EXPECT_OPEN_FAILS(zip, len, NULL);
  free(zip);

  /* Adjacent duplicates, and a duplicate directory entry. */
  zt_init(&z);
  zt_add_str(&z, "d/", "");
  zt_add_str(&z, "d/", "");
  zip = zt_finish(&z, 0, &len);
  EXPECT_OPEN_FAILS(zip, len, NULL);
  free(zip);

  /* The same bytes with and without the UTF-8 flag. */
  zt_init(&z);
  zt_add_ex(&z, "\xc3\xa9.py", 4, "1", 1, ZT_UTF8);
  zt_add_ex(&z, "\xc3\xa9.py", 4, "2", 1, 0);
  zip = zt_finish(&z, 0, &len);
  EXPECT_OPEN_FAILS(zip, len, NULL);
  free(zip);

  /* Many members, one duplicate at the end. */
  zt_init(&z);
  char name[32];
  for (int i = 0; i < 3000; i++) {
    snprintf(name, sizeof(name), "m/%05d", i);
    zt_add_str(&z, name, name);
  }
  zt_add_str(&z, "m/01234", "again");
  zip = zt_finish(&z, 0, &len);
  EXPECT_OPEN_FAILS(zip, len, NULL);
  free(zip);
}

/* Names that are not valid UTF-8 and carry no UTF-8 flag are CP437 by the
 * zip spec; the index takes their bytes as they are, consistently. */
static void test_cp437_name(void) {
  ziptest z;
  zt_init(&z);
  add_one(&z, "caf\x82.txt", 8, 0); /* cp437 0x82 is e-acute */
  size_t len;
  uint8_t *zip = zt_finish(&z, 0, &len);
  zipindex zi;
  char err[256] = "";
  if (CHECK_EQ_INT(zipindex_open(&zi, zip, len, err, sizeof(err)), 0)) {
    CHECK_EQ_INT(zi.count, 1);
    const zipindex_entry *e = &zi.entries[0];
    CHECK(zipindex_find(&zi, e->name, e->name_len) == e);
    char buf[4];
    CHECK_EQ_INT(zipindex_read(&zi, e, buf, err, sizeof(err)), 0);
    CHECK_MEM(buf, "data", 4);
    zipindex_close(&zi);
  }
  free(zip);

  /* Bit 11 set on a name that is not UTF-8: an inconsistent archive. */
  zt_init(&z);
  zt_add_ex(&z, "bad\xff.txt", 8, "x", 1, ZT_UTF8);
  zip = zt_finish(&z, 0, &len);
  EXPECT_OPEN_FAILS(zip, len, NULL);
  free(zip);
}

/* Names near what the checks look for (dots, slashes, bytes past the
 * eight-byte ASCII steps of the UTF-8 check): accepted or refused exactly. */
static void test_name_edges(void) {
  static const char *const fine[] = {
      ".hidden", "..x",          "a/...",       "a/.b/c",           "dir/",     "a//b",
      "x..",     "abcdefgh/..y", "abcdefg/.z/", "abcdefghijklmnop", "a.b/c..d",
  };
  static const struct {
    const char *name;
    int utf8_ok;
  } utf8[] = {
      {"abcdefgh\xc3\xa9", 1},         /* multibyte just past one ASCII step */
      {"abcdefg\xc3\xa9xyzabcdef", 1}, /* straddling the step */
      {"abcdefghijklmno\xf0\x9f\x98\x80", 1},
      {"abcdefgh\xff", 0},
      {"abcdefghijklmnop\xc3", 0}, /* truncated sequence at the end */
      {"abcdefg\xed\xa0\x80", 0},  /* a surrogate */
  };
  ziptest z;
  size_t len;
  uint8_t *zip;
  zipindex zi;
  char err[256] = "";
  zt_init(&z);
  for (size_t i = 0; i < sizeof(fine) / sizeof(fine[0]); i++)
    zt_add_str(&z, fine[i], fine[i]);
  zip = zt_finish(&z, 0, &len);
  if (CHECK_EQ_INT(zipindex_open(&zi, zip, len, err, sizeof(err)), 0)) {
    for (size_t i = 0; i < sizeof(fine) / sizeof(fine[0]); i++)
      if (!CHECK(zipindex_find(&zi, fine[i], strlen(fine[i])) != NULL))
        fprintf(stderr, "  name \"%s\"\n", fine[i]);
    zipindex_close(&zi);
  } else {
    fprintf(stderr, "  %s\n", err);
  }
  free(zip);
  for (size_t i = 0; i < sizeof(utf8) / sizeof(utf8[0]); i++) {
    zt_init(&z);
    zt_add_ex(&z, utf8[i].name, strlen(utf8[i].name), "x", 1, ZT_UTF8);
    zip = zt_finish(&z, 0, &len);
    if (utf8[i].utf8_ok) {
      if (CHECK_EQ_INT(zipindex_open(&zi, zip, len, err, sizeof(err)), 0)) {
        CHECK(zipindex_find(&zi, utf8[i].name, strlen(utf8[i].name)) != NULL);
        zipindex_close(&zi);
      }
    } else if (!EXPECT_OPEN_FAILS(zip, len, "not")) {
      fprintf(stderr, "  name %zu\n", i);
    }
    free(zip);
  }
}

/* Opens, then expects reading `name` to fail with `needle` in the message. */
static void expect_read_fails(const uint8_t *zip, size_t len, const char *name, const char *needle,
                              int line) {
  zipindex zi;
  char err[256] = "";
  int rc = zipindex_open(&zi, zip, len, err, sizeof(err));
  if (rc != 0) {
    /* Rejecting the whole archive up front is acceptable too. */
    check_report_(rc == -1, __FILE__, line, "open rc %d", rc);
    return;
  }
  const zipindex_entry *e = zipindex_find(&zi, name, strlen(name));
  if (check_report_(e != NULL, __FILE__, line, "member %s found", name)) {
    char *buf;
    rc = read_member(&zi, e, &buf, err, sizeof(err));
    check_report_(rc == -1, __FILE__, line, "reading %s fails (rc %d)", name, rc);
    if (rc == 0)
      free(buf);
    else if (needle)
      check_report_(strstr(err, needle) != NULL, __FILE__, line, "error \"%s\" holds \"%s\"", err,
                    needle);
    if (rc == -1)
      check_report_(strstr(err, name) != NULL, __FILE__, line, "error \"%s\" names %s", err, name);
  }
  zipindex_close(&zi);
}
#define EXPECT_READ_FAILS(zip, len, name, needle)                                                  \
  expect_read_fails((zip), (len), (name), (needle), __LINE__)

/* A local header that disagrees with the central directory: the member is
 * refused when read (the index does not look at local headers when it
 * opens: that would touch every page of the archive). */
static void test_inconsistent_headers(void) {
  static const unsigned knobs[] = {ZT_LOCAL_NAME, ZT_LOCAL_SIZE, ZT_LOCAL_CRC};
  for (size_t k = 0; k < sizeof(knobs) / sizeof(knobs[0]); k++) {
    ziptest z;
    zt_init(&z);
    zt_add_str(&z, "good", "fine");
    zt_add_ex(&z, "odd", 3, "content", 7, knobs[k]);
    size_t len;
    uint8_t *zip = zt_finish(&z, 0, &len);
    EXPECT_READ_FAILS(zip, len, "odd", "local header disagrees");
    free(zip);
  }
  /* A local extra field the central directory does not have is fine. */
  ziptest z;
  zt_init(&z);
  zt_add_ex(&z, "x", 1, "content", 7, ZT_LOCAL_EXTRA);
  zt_add_str(&z, "y", "after");
  size_t len;
  uint8_t *zip = zt_finish(&z, 0, &len);
  zipindex zi;
  char err[256] = "";
  if (CHECK_EQ_INT(zipindex_open(&zi, zip, len, err, sizeof(err)), 0)) {
    char buf[8];
    const zipindex_entry *e = zipindex_find(&zi, "x", 1);
    CHECK(e && zipindex_read(&zi, e, buf, err, sizeof(err)) == 0 && !memcmp(buf, "content", 7));
    e = zipindex_find(&zi, "y", 1);
    CHECK(e && zipindex_read(&zi, e, buf, err, sizeof(err)) == 0 && !memcmp(buf, "after", 5));
    zipindex_close(&zi);
  }
  free(zip);
}

static void test_crc(void) {
  ziptest z;
  zt_init(&z);
  zt_add_str(&z, "good", "fine");
  zt_add_ex(&z, "badcrc", 6, "some content", 12, ZT_BAD_CRC);
  zt_add_ex(&z, "badcrc-empty", 12, "", 0, ZT_BAD_CRC);
  zt_add_ex(&z, "badcrc-deflate", 14, big, sizeof(big), ZT_BAD_CRC | ZT_DEFLATE);
  zt_add_ex(&z, "longer", 6, "0123456789", 10, ZT_SIZE_PLUS1);
  zt_add_ex(&z, "shorter", 7, "0123456789", 10, ZT_SIZE_MINUS1);
  zt_add_ex(&z, "longer-deflate", 14, "0123456789", 10, ZT_SIZE_PLUS1 | ZT_DEFLATE);
  zt_add_ex(&z, "shorter-deflate", 15, "0123456789", 10, ZT_SIZE_MINUS1 | ZT_DEFLATE);
  zt_add_ex(&z, "badcrc-zstd", 11, big, sizeof(big), ZT_BAD_CRC | ZT_ZSTD);
  zt_add_ex(&z, "longer-zstd", 11, "0123456789", 10, ZT_SIZE_PLUS1 | ZT_ZSTD);
  zt_add_ex(&z, "shorter-zstd", 12, "0123456789", 10, ZT_SIZE_MINUS1 | ZT_ZSTD);
  zt_add_str(&z, "last", "end");
  size_t len;
  uint8_t *zip = zt_finish(&z, 0, &len);
  EXPECT_READ_FAILS(zip, len, "badcrc", "CRC");
  EXPECT_READ_FAILS(zip, len, "badcrc-zstd", "CRC");
  EXPECT_READ_FAILS(zip, len, "longer-zstd", "size");
  EXPECT_READ_FAILS(zip, len, "shorter-zstd", "damaged");
  EXPECT_READ_FAILS(zip, len, "badcrc-deflate", "CRC");
  EXPECT_READ_FAILS(zip, len, "longer", NULL);
  EXPECT_READ_FAILS(zip, len, "shorter", NULL);
  EXPECT_READ_FAILS(zip, len, "longer-deflate", NULL);
  EXPECT_READ_FAILS(zip, len, "shorter-deflate", NULL);
  /* The good members of that archive still read fine. */
  zipindex zi;
  char err[256] = "";
  if (CHECK_EQ_INT(zipindex_open(&zi, zip, len, err, sizeof(err)), 0)) {
    /* A zero-length member's recorded CRC must be 0 as well. */
    const zipindex_entry *e = zipindex_find(&zi, "badcrc-empty", 12);
    char one;
    CHECK(e && e->size == 0 && zipindex_read(&zi, e, &one, err, sizeof(err)) == -1);
    e = zipindex_find(&zi, "good", 4);
    char buf[4];
    CHECK(e && zipindex_read(&zi, e, buf, err, sizeof(err)) == 0 && memcmp(buf, "fine", 4) == 0);
    e = zipindex_find(&zi, "last", 4);
    CHECK(e && zipindex_read(&zi, e, buf, err, sizeof(err)) == 0 && memcmp(buf, "end", 3) == 0);
    /* More data than the recorded size: the message says what is wrong. */
    e = zipindex_find(&zi, "shorter-deflate", 15);
    char nine[9];
    if (CHECK(e && e->size == 9 && zipindex_read(&zi, e, nine, err, sizeof(err)) == -1)) {
      if (!CHECK(strstr(err, "No error") == NULL))
        fprintf(stderr, "  err: %s\n", err);
    }
    zipindex_close(&zi);
  }
  free(zip);

  /* Damaged data with a right CRC in the headers: stored and deflated. */
  zt_init(&z);
  zt_add_str(&z, "stored", "the quick brown fox jumps over the lazy dog");
  size_t stored_at = 30 + 6 + 10; /* inside the first member's data */
  zt_add_ex(&z, "deflated", 8, big, sizeof(big), ZT_DEFLATE);
  zip = zt_finish(&z, 0, &len);
  zip[stored_at] ^= 0x20;
  EXPECT_READ_FAILS(zip, len, "stored", "CRC");
  zip[stored_at] ^= 0x20;
  size_t deflated_at = 30 + 6 + 43 + 30 + 8 + 20;
  zip[deflated_at] ^= 0x01;
  EXPECT_READ_FAILS(zip, len, "deflated", NULL);
  free(zip);

  /* A damaged zstd frame (its CRC right): every byte of it, one at a time. */
  zt_init(&z);
  zt_add_ex(&z, "z", 1, big, 2000, ZT_ZSTD);
  zip = zt_finish(&z, 0, &len);
  size_t frame_len = 0;
  memcpy(&frame_len, zip + 18, 4); /* the local header's compressed size */
  for (size_t at = 30 + 1; at < 30 + 1 + frame_len; at++) {
    zip[at] ^= 0x55;
    EXPECT_READ_FAILS(zip, len, "z", "damaged");
    zip[at] ^= 0x55;
  }
  free(zip);
}

/* ---- verified archives ------------------------------------------------------ */

static uint8_t *build_verified(size_t *len, uint8_t index_sha256[32]) {
  ziptest z;
  zt_init(&z);
  z.digests = 1;
  for (size_t i = 0; i < NMEMBERS; i++)
    zt_add_ex(&z, members[i].name, strlen(members[i].name), members[i].data, members[i].len,
              members[i].flags);
  return zt_finish_digested(&z, 0, len, index_sha256);
}

static char damage_seen[1024];
static int damage_calls;

static void record_damage(const char *message) {
  snprintf(damage_seen, sizeof(damage_seen), "%s", message);
  damage_calls++;
}

static void test_verified(void) {
  size_t len;
  uint8_t sha[32];
  uint8_t *zip = build_verified(&len, sha);
  zipindex zi;
  char err[256] = "";
  if (!CHECK_EQ_INT(zipindex_open_verified(&zi, zip, len, sha, err, sizeof(err)), 0)) {
    fprintf(stderr, "  err: %s\n", err);
    free(zip);
    return;
  }
  /* Every member reads back, once checked; each entry has its digest. */
  for (size_t i = 0; i < NMEMBERS; i++) {
    const zipindex_entry *e = zipindex_find(&zi, members[i].name, strlen(members[i].name));
    char *buf;
    if (CHECK(e && e->digest) && CHECK_EQ_INT(read_member(&zi, e, &buf, err, sizeof(err)), 0)) {
      CHECK_MEM(buf, members[i].data, members[i].len);
      free(buf);
      CHECK_EQ_INT(zi.checked[e - zi.entries], 1);
    }
  }
  /* In-place bytes of stored members; compressed ones say so. */
  const zipindex_entry *e = zipindex_find(&zi, "a.txt", 5);
  const char *p = zipindex_stored_data(&zi, e, err, sizeof(err));
  CHECK(p && memcmp(p, "hello, world\n", 13) == 0 && p > (const char *)zip &&
        p < (const char *)zip + len);
  e = zipindex_find(&zi, "big.zst", 7);
  CHECK(zipindex_stored_data(&zi, e, err, sizeof(err)) == NULL);
  CHECK_CONTAINS(err, "compressed");
  CHECK_EQ_INT(zipindex_verify_all(&zi, err, sizeof(err)), 0);
  CHECK_EQ_INT(zipindex_verify_wait(&zi, err, sizeof(err)), 0);
  zipindex_close(&zi);

  /* The background thread, with nothing read before. */
  if (CHECK_EQ_INT(zipindex_open_verified(&zi, zip, len, sha, err, sizeof(err)), 0)) {
    CHECK_EQ_INT(zipindex_verify_start(&zi), 0);
    CHECK_EQ_INT(zipindex_verify_start(&zi), 0); /* a second start is a no-op */
    /* Reads go on meanwhile. */
    char buf[16];
    e = zipindex_find(&zi, "dir/sub/c", 9);
    CHECK(e && zipindex_read(&zi, e, buf, err, sizeof(err)) == 0 && !memcmp(buf, "see", 3));
    CHECK_EQ_INT(zipindex_verify_wait(&zi, err, sizeof(err)), 0);
    CHECK_EQ_INT(atomic_load(&zi.all_checked), 1);
    for (size_t i = 0; i < zi.count; i++)
      CHECK_EQ_INT(zi.checked[i], 1);
    zipindex_close(&zi);
  }
  /* Closing with the thread still running joins it. */
  if (CHECK_EQ_INT(zipindex_open_verified(&zi, zip, len, sha, err, sizeof(err)), 0)) {
    CHECK_EQ_INT(zipindex_verify_start(&zi), 0);
    zipindex_close(&zi);
  }

  /* The wrong index digest. */
  sha[0] ^= 1;
  CHECK_EQ_INT(zipindex_open_verified(&zi, zip, len, sha, err, sizeof(err)), -1);
  CHECK_CONTAINS(err, "index is damaged");
  sha[0] ^= 1;
  /* Plain zipindex_open ignores the digests: reads check CRCs, and there is
   * nothing for verify_all to check against. */
  if (CHECK_EQ_INT(zipindex_open(&zi, zip, len, err, sizeof(err)), 0)) {
    CHECK(zi.entries[0].digest == NULL);
    CHECK_EQ_INT(zipindex_verify_all(&zi, err, sizeof(err)), -1);
    CHECK_CONTAINS(err, "no digests");
    zipindex_close(&zi);
  }
  free(zip);

  /* A member without its digest: refused when opening. */
  ziptest z;
  zt_init(&z);
  z.digests = 1;
  zt_add_str(&z, "a", "1");
  zt_add_ex(&z, "b", 1, "2", 1, ZT_NO_DIGEST);
  zip = zt_finish_digested(&z, 0, &len, sha);
  CHECK_EQ_INT(zipindex_open_verified(&zi, zip, len, sha, err, sizeof(err)), -1);
  CHECK_CONTAINS(err, "b carries no digest");
  free(zip);

  /* A wrong member digest: that member is refused, naming it; the others
   * read; the background check fails; the damage handler hears of each. */
  zt_init(&z);
  z.digests = 1;
  zt_add_str(&z, "good", "fine");
  zt_add_ex(&z, "bad.zst", 7, big, sizeof(big), ZT_ZSTD | ZT_BAD_DIGEST);
  zt_add_str(&z, "last", "end");
  zip = zt_finish_digested(&z, 0, &len, sha);
  if (CHECK_EQ_INT(zipindex_open_verified(&zi, zip, len, sha, err, sizeof(err)), 0)) {
    zipindex_on_damage(&zi, record_damage);
    damage_calls = 0;
    char buf[8];
    e = zipindex_find(&zi, "good", 4);
    CHECK(zipindex_read(&zi, e, buf, err, sizeof(err)) == 0 && !memcmp(buf, "fine", 4));
    CHECK_EQ_INT(damage_calls, 0);
    e = zipindex_find(&zi, "bad.zst", 7);
    char *out = malloc(sizeof(big));
    memset(out, 0, sizeof(big));
    CHECK_EQ_INT(zipindex_read(&zi, e, out, err, sizeof(err)), -1);
    CHECK_CONTAINS(err, "bad.zst is damaged or was modified");
    CHECK_EQ_INT(damage_calls, 1);
    CHECK_CONTAINS(damage_seen, "bad.zst");
    /* Not a byte was written to the caller's buffer. */
    size_t nonzero = 0;
    for (size_t i = 0; i < sizeof(big); i++)
      nonzero += out[i] != 0;
    CHECK_EQ_INT(nonzero, 0);
    free(out);
    CHECK_EQ_INT(zipindex_verify_start(&zi), 0);
    CHECK_EQ_INT(zipindex_verify_wait(&zi, err, sizeof(err)), -1);
    CHECK_CONTAINS(err, "bad.zst");
    CHECK_EQ_INT(damage_calls, 2); /* the read, then the thread */
    CHECK_EQ_INT(atomic_load(&zi.all_checked), 0);
    zipindex_close(&zi);
  }
  free(zip);

  /* The prefetching thread (after a reader's first check): it checks what
   * readers have not, reports no damage (the reader of the damaged member
   * would), and waiting afterwards reports it once. */
  zt_init(&z);
  z.digests = 1;
  zt_add_str(&z, "a", "first");
  zt_add_ex(&z, "bad", 3, "damaged", 7, ZT_BAD_DIGEST);
  for (int i = 0; i < 50; i++) {
    char name[16];
    snprintf(name, sizeof(name), "m%02d", i);
    zt_add_ex(&z, name, strlen(name), big, sizeof(big), i % 2 ? ZT_ZSTD : 0);
  }
  zip = zt_finish_digested(&z, 0, &len, sha);
  if (CHECK_EQ_INT(zipindex_open_verified(&zi, zip, len, sha, err, sizeof(err)), 0)) {
    zipindex_on_damage(&zi, record_damage);
    damage_calls = 0;
    zipindex_verify_start_after(&zi, 1);
    CHECK_EQ_INT(atomic_load(&zi.verifier_started), 0);
    char buf[8];
    e = zipindex_find(&zi, "a", 1);
    CHECK(zipindex_read(&zi, e, buf, err, sizeof(err)) == 0 && !memcmp(buf, "first", 5));
    CHECK_EQ_INT(atomic_load(&zi.verifier_started), 1);
    /* Readers go on meanwhile, checking what the thread has not reached. */
    char *out = malloc(sizeof(big));
    int bad_reads = 0;
    for (int i = 49; i >= 0; i--) {
      char name[16];
      snprintf(name, sizeof(name), "m%02d", i);
      e = zipindex_find(&zi, name, 3);
      bad_reads +=
          zipindex_read(&zi, e, out, err, sizeof(err)) != 0 || memcmp(out, big, sizeof(big)) != 0;
    }
    CHECK_EQ_INT(bad_reads, 0);
    free(out);
    CHECK_EQ_INT(zipindex_verify_wait(&zi, err, sizeof(err)), -1);
    CHECK_CONTAINS(err, "bad is damaged");
    CHECK_EQ_INT(damage_calls, 1);
    for (size_t i = 0; i < zi.count; i++)
      CHECK_EQ_INT(zi.checked[i], strcmp(zi.entries[i].name, "bad") != 0);
    zipindex_close(&zi);
  }
  free(zip);

  /* Bytes between records, or records that overlap: the background check
   * refuses the archive even though every member reads. */
  zt_init(&z);
  z.digests = 1;
  zt_add_str(&z, "one", "1");
  zt_add_str(&z, "two", "22");
  zip = zt_finish_digested(&z, 0, &len, sha);
  /* Rebuild with 3 junk bytes between the two records: member offsets in
   * the copy's central directory shift by 3 (patched below), digests stay. */
  size_t rec1 = 30 + 3 + 1, cd_at = rec1 + 30 + 3 + 2;
  uint8_t *gap = malloc(len + 3);
  memcpy(gap, zip, rec1);
  memcpy(gap + rec1, "xyz", 3);
  memcpy(gap + rec1 + 3, zip + rec1, len - rec1);
  size_t second_cd = cd_at + 3 + 46 + 3 + 36; /* the second entry of the directory */
  gap[second_cd + 42] = (uint8_t)(rec1 + 3);
  uint32_t cd_offset = (uint32_t)(cd_at + 3);
  memcpy(gap + len + 3 - 22 + 16, &cd_offset, 4); /* the end record's directory offset */
  uint8_t gap_sha[32];
  sha256_digest(gap + cd_at + 3, len - cd_at, gap_sha);
  if (CHECK_EQ_INT(zipindex_open_verified(&zi, gap, len + 3, gap_sha, err, sizeof(err)), 0)) {
    char buf[2];
    e = zipindex_find(&zi, "two", 3);
    CHECK(e && zipindex_read(&zi, e, buf, err, sizeof(err)) == 0 && !memcmp(buf, "22", 2));
    CHECK_EQ_INT(zipindex_verify_all(&zi, err, sizeof(err)), -1);
    CHECK_CONTAINS(err, "belong to no member");
    zipindex_close(&zi);
  } else {
    fprintf(stderr, "  err: %s\n", err);
  }
  free(gap);
  free(zip);
}

/* Every byte of a verified archive, flipped: the index or a member digest
 * catches it (open, read or the whole check fails), and no read ever hands
 * out a wrong byte. */
static void test_verified_every_byte(void) {
  size_t len;
  uint8_t sha[32];
  uint8_t *zip = build_verified(&len, sha);
  int missed = 0, wrong = 0;
  for (size_t at = 0; at < len; at++) {
    uint8_t *copy = malloc(len);
    memcpy(copy, zip, len);
    copy[at] ^= 0x04;
    zipindex zi;
    char err[256];
    if (zipindex_open_verified(&zi, copy, len, sha, err, sizeof(err)) == 0) {
      for (size_t i = 0; i < NMEMBERS; i++) {
        const zipindex_entry *e = zipindex_find(&zi, members[i].name, strlen(members[i].name));
        char *buf;
        if (!e || read_member(&zi, e, &buf, err, sizeof(err)) != 0)
          continue;
        if (e->size != members[i].len || memcmp(buf, members[i].data, e->size) != 0)
          wrong++;
        free(buf);
      }
      if (zipindex_verify_all(&zi, err, sizeof(err)) == 0 && missed++ < 5)
        fprintf(stderr, "  byte %zu flipped: the whole check passed\n", at);
      zipindex_close(&zi);
    }
    free(copy);
  }
  CHECK_EQ_INT(missed, 0);
  CHECK_EQ_INT(wrong, 0);
  free(zip);
}

/* A compression method other than stored, deflate and zstd: the archive is
 * refused when opened, naming the member and the method. */
static void test_unsupported_method(void) {
  ziptest z;
  zt_init(&z);
  zt_add_str(&z, "fine", "ok");
  zt_add_ex(&z, "bz", 2, "data", 4, ZT_BZIP2_METHOD);
  size_t len;
  uint8_t *zip = zt_finish(&z, 0, &len);
  zipindex zi;
  char err[256] = "";
  CHECK_EQ_INT(zipindex_open(&zi, zip, len, err, sizeof(err)), -1);
  if (!CHECK(strstr(err, "bz") && strstr(err, "method 12")))
    fprintf(stderr, "  err: %s\n", err);
  free(zip);
}

/* Flips every byte of a small archive (two ways): the index never crashes,
 * and what it does read back is the original content of that member. */
static void test_every_byte_flipped(void) {
  ziptest z;
  zt_init(&z);
  zt_add_str(&z, "a/one.py", "print('one')\n");
  zt_add_ex(&z, "a/two.bin", 9, binary, 64, 0);
  zt_add_ex(&z, "b/three.txt", 11, big, 300, ZT_DEFLATE);
  zt_add_str(&z, "c", "");
  zt_add_ex(&z, "d.zst", 5, big, 300, ZT_ZSTD);
  size_t len;
  uint8_t *zip = zt_finish(&z, 0, &len);
  static const struct {
    const char *name;
    const void *data;
    size_t len;
  } want[] = {{"a/one.py", "print('one')\n", 13},
              {"a/two.bin", binary, 64},
              {"b/three.txt", big, 300},
              {"c", "", 0},
              {"d.zst", big, 300}};
  int wrong = 0, opened = 0;
  static const uint8_t masks[] = {0x01, 0x80, 0xff};
  for (size_t m = 0; m < sizeof(masks); m++) {
    for (size_t at = 0; at < len; at++) {
      uint8_t *copy = malloc(len);
      memcpy(copy, zip, len);
      copy[at] ^= masks[m];
      zipindex zi;
      char err[256];
      if (zipindex_open(&zi, copy, len, err, sizeof(err)) == 0) {
        opened++;
        for (size_t i = 0; i < zi.count; i++) {
          const zipindex_entry *e = &zi.entries[i];
          size_t w = 0;
          while (w < 5 && strcmp(want[w].name, e->name) != 0)
            w++;
          char *buf;
          if (e->size > 1 << 20)
            continue; /* do not trust a damaged size for an allocation */
          if (read_member(&zi, e, &buf, err, sizeof(err)) != 0)
            continue;
          if (w == 5 || e->size != want[w].len || memcmp(buf, want[w].data, e->size) != 0) {
            if (wrong++ < 5)
              fprintf(stderr, "  byte %zu ^ 0x%02x: member \"%s\" read back wrong data\n", at,
                      masks[m], e->name);
          }
          free(buf);
        }
        zipindex_close(&zi);
      }
      free(copy);
    }
  }
  CHECK_EQ_INT(wrong, 0);
  CHECK(opened > 0); /* some flips (timestamps, attributes) are harmless */
  free(zip);
}

static void test_many_members(void) {
  ziptest z;
  zt_init(&z);
  enum { N = 20000 };
  char name[64];
  /* Added in reverse order so the sort has work to do. */
  for (int i = N - 1; i >= 0; i--) {
    snprintf(name, sizeof(name), "d%02d/member-%05d.txt", i % 37, i);
    zt_add_str(&z, name, name);
  }
  size_t len;
  uint8_t *zip = zt_finish(&z, 0, &len);
  zipindex zi;
  char err[256] = "";
  if (!CHECK_EQ_INT(zipindex_open(&zi, zip, len, err, sizeof(err)), 0)) {
    free(zip);
    return;
  }
  CHECK_EQ_INT(zi.count, N);
  CHECK(zi.slot_mask + 1 >= 2 * (size_t)N);
  int missing = 0, bad = 0;
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof(name), "d%02d/member-%05d.txt", i % 37, i);
    const zipindex_entry *e = zipindex_find(&zi, name, strlen(name));
    if (!e || strcmp(e->name, name) != 0) {
      missing++;
      continue;
    }
    if (i % 997 == 0) {
      char buf[64];
      if (e->size != strlen(name) || zipindex_read(&zi, e, buf, err, sizeof(err)) != 0 ||
          memcmp(buf, name, e->size) != 0)
        bad++;
    }
    snprintf(name, sizeof(name), "d%02d/member-%05d.txt", (i + 1) % 37, i);
    if (zipindex_find(&zi, name, strlen(name)) != NULL)
      missing++; /* found a member that does not exist */
  }
  CHECK_EQ_INT(missing, 0);
  CHECK_EQ_INT(bad, 0);
  size_t i = zipindex_lower_bound(&zi, "d05/", 4), n = 0;
  for (; i < zi.count && strncmp(zi.entries[i].name, "d05/", 4) == 0; i++)
    n++;
  CHECK_EQ_INT(n, N / 37 + (5 < N % 37));
  CHECK_EQ_INT(zipindex_is_dir(&zi, "d36", 3), 1);
  CHECK_EQ_INT(zipindex_is_dir(&zi, "d37", 3), 0);
  zipindex_close(&zi);
  free(zip);
}

/* More members than a plain EOCD can count: zip64 end records. */
static void test_zip64(void) {
  ziptest z;
  zt_init(&z);
  zt_add_str(&z, "a", "1");
  zt_add_str(&z, "b/c", "22");
  size_t len;
  uint8_t *zip = zt_finish(&z, ZT_ZIP64, &len);
  zipindex zi;
  char err[256] = "";
  if (CHECK_EQ_INT(zipindex_open(&zi, zip, len, err, sizeof(err)), 0)) {
    CHECK_EQ_INT(zi.count, 2);
    const zipindex_entry *e = zipindex_find(&zi, "b/c", 3);
    char buf[2];
    CHECK(e && zipindex_read(&zi, e, buf, err, sizeof(err)) == 0 && memcmp(buf, "22", 2) == 0);
    zipindex_close(&zi);
  } else {
    fprintf(stderr, "  err: %s\n", err);
  }
  free(zip);

  enum { N = 70000 };
  zt_init(&z);
  char name[32];
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof(name), "m/%06d", i);
    zt_add_str(&z, name, name + 2);
  }
  zip = zt_finish(&z, ZT_ZIP64, &len);
  if (CHECK_EQ_INT(zipindex_open(&zi, zip, len, err, sizeof(err)), 0)) {
    CHECK_EQ_INT(zi.count, N);
    const zipindex_entry *e = zipindex_find(&zi, "m/069999", 8);
    char buf[6];
    CHECK(e && zipindex_read(&zi, e, buf, err, sizeof(err)) == 0 && memcmp(buf, "069999", 6) == 0);
    CHECK_EQ_INT(zipindex_lower_bound(&zi, "m/065536", 8), 65536);
    zipindex_close(&zi);
  } else {
    fprintf(stderr, "  err: %s\n", err);
  }
  free(zip);
}

/* A member of 65535-byte name (the most a zip can hold) works. */
static void test_long_name(void) {
  size_t n = 65535;
  char *name = malloc(n + 1);
  for (size_t i = 0; i < n; i++)
    name[i] = (i % 100 == 99) ? '/' : 'a' + (char)(i % 26);
  name[n] = '\0';
  ziptest z;
  zt_init(&z);
  zt_add_ex(&z, name, n, "x", 1, 0);
  size_t len;
  uint8_t *zip = zt_finish(&z, 0, &len);
  zipindex zi;
  char err[256] = "";
  if (CHECK_EQ_INT(zipindex_open(&zi, zip, len, err, sizeof(err)), 0)) {
    const zipindex_entry *e = zipindex_find(&zi, name, n);
    CHECK(e != NULL && e->name_len == n);
    CHECK_EQ_INT(zipindex_is_dir(&zi, name, 99), 1);
    zipindex_close(&zi);
  }
  free(zip);
  free(name);
}

/* Resident pages of [p, p + len) in this process's page table
 * (/proc/self/pagemap's present bit), or -1 where it cannot be read. */
static long resident_pages(const void *p, size_t len) {
  long page = sysconf(_SC_PAGESIZE);
  uintptr_t first = (uintptr_t)p / (uintptr_t)page;
  uintptr_t last = ((uintptr_t)p + len + (uintptr_t)page - 1) / (uintptr_t)page;
  FILE *f = fopen("/proc/self/pagemap", "rb");
  if (!f)
    return -1;
  long n = 0;
  if (fseek(f, (long)(first * 8), SEEK_SET) != 0)
    n = -1;
  for (uintptr_t i = first; n >= 0 && i < last; i++) {
    uint64_t entry;
    if (fread(&entry, sizeof(entry), 1, f) != 1)
      n = -1;
    else
      n += (long)(entry >> 63);
  }
  fclose(f);
  return n;
}

/* zipindex_release_behind over a file mapping: the check and the readers
 * drop the pages they went through, and every byte read afterwards (pages
 * faulted in again from the file) is still right. */
static void test_release_behind(void) {
  ziptest z;
  zipindex zi;
  uint8_t sha[32];
  size_t len;
  char err[512];
  zt_init(&z);
  z.digests = 1;
  for (int i = 0; i < 40; i++) {
    char name[16];
    snprintf(name, sizeof(name), "m%02d", i);
    zt_add_ex(&z, name, strlen(name), big, sizeof(big), i % 2 ? ZT_ZSTD : 0);
  }
  uint8_t *zip = zt_finish_digested(&z, 0, &len, sha);
  FILE *f = tmpfile();
  if (!CHECK(f != NULL) || !CHECK(fwrite(zip, 1, len, f) == len) || !CHECK(fflush(f) == 0)) {
    free(zip);
    return;
  }
  const uint8_t *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fileno(f), 0);
  if (CHECK(map != MAP_FAILED) &&
      CHECK_EQ_INT(zipindex_open_verified(&zi, map, len, sha, err, sizeof(err)), 0)) {
    zipindex_release_behind(&zi);
    long before = resident_pages(map, len);
    CHECK_EQ_INT(zipindex_verify_all(&zi, err, sizeof(err)), 0);
    long after = resident_pages(map, len);
    /* 40 x 100 KB went through the hash: less than a tenth of it stays
     * (what the kernel's fault-around mapped past a range's edge; -1: no
     * pagemap, not checked). */
    if (before >= 0 && after >= 0)
      CHECK(after * 10 < (long)(len / 4096));
    char *out = malloc(sizeof(big));
    int bad = 0;
    for (int i = 0; out && i < 40; i++) {
      char name[16];
      snprintf(name, sizeof(name), "m%02d", i);
      const zipindex_entry *e = zipindex_find(&zi, name, 3);
      bad += !e || zipindex_read(&zi, e, out, err, sizeof(err)) != 0 ||
             memcmp(out, big, sizeof(big)) != 0;
      if (e && e->method == ZIPINDEX_STORED) {
        const char *in_place = zipindex_stored_data(&zi, e, err, sizeof(err));
        bad += !in_place || memcmp(in_place, big, sizeof(big)) != 0;
        zipindex_release(&zi, e);
      }
    }
    CHECK_EQ_INT(bad, 0);
    free(out);
    zipindex_close(&zi);
  }
  if (map != MAP_FAILED)
    munmap((void *)map, len);
  fclose(f);
  free(zip);
}

/* Readers in archive order (start-up's imports): a record's release keeps
 * the 64 KiB block it ends in, where the next record starts, and drops the
 * blocks before it; in the end no more than that last block stays. Readers
 * that skip records (every `step`-th, ascending, or backwards) leave no
 * more than that either. The archive is in a memfd: its 4 KiB pages fault
 * in 64 KiB at a time, as the rule assumes (an ext4 file's large folios may
 * be mapped whole). Held (zipindex_hold_releases), nothing goes until it is
 * let go. */
static void release_run(int step, int backwards, int held) {
  ziptest z;
  zipindex zi;
  uint8_t sha[32];
  size_t len;
  char err[512];
  enum { N = 60, SIZE = 9000 }; /* ~7 records a block */
  zt_init(&z);
  z.digests = 1;
  for (int i = 0; i < N; i++) {
    char name[16];
    snprintf(name, sizeof(name), "r%02d", i);
    zt_add_ex(&z, name, strlen(name), big, SIZE, 0);
  }
  uint8_t *zip = zt_finish_digested(&z, 0, &len, sha);
  int fd = memfd_create("test_zipindex", MFD_CLOEXEC);
  if (!CHECK(fd >= 0) || !CHECK(write(fd, zip, len) == (ssize_t)len)) {
    free(zip);
    if (fd >= 0)
      close(fd);
    return;
  }
  const uint8_t *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
  if (CHECK(map != MAP_FAILED) &&
      CHECK_EQ_INT(zipindex_open_verified(&zi, map, len, sha, err, sizeof(err)), 0) &&
      resident_pages(map, 1) >= 0) {
    zipindex_release_behind(&zi);
    zipindex_hold_releases(&zi, held);
    const uintptr_t block = 64 << 10;
    int kept = 0, dropped = 0, crossed = 0, bad = 0, reads = 0;
    for (int k = 0; k < N; k += step) {
      int i = backwards ? N - 1 - k : k;
      char name[16];
      snprintf(name, sizeof(name), "r%02d", i);
      const zipindex_entry *e = zipindex_find(&zi, name, 3);
      const uint8_t *data = e ? zipindex_stored_data(&zi, e, err, sizeof(err)) : NULL;
      if (!data || memcmp(data, big, SIZE) != 0) {
        bad++;
        continue;
      }
      reads++;
      zipindex_release(&zi, e);
      const uint8_t *end = data + SIZE, *first = map + e->offset;
      /* the block the record ends in stays (the next record's start) */
      if (i + 1 < N)
        kept += resident_pages((const void *)((uintptr_t)end & ~(uintptr_t)4095), 1) == 1;
      /* a block before it, when the record crossed into a new one, went */
      if (((uintptr_t)first & ~(block - 1)) != ((uintptr_t)end & ~(block - 1))) {
        crossed++;
        dropped += resident_pages((const void *)((uintptr_t)first & ~(block - 1)), block) == 0;
      }
    }
    CHECK_EQ_INT(bad, 0);
    int last_read = backwards || (N - 1) % step == 0; /* r59, whose end block is the index's */
    CHECK_EQ_INT(kept, reads - last_read);
    if (held) { /* nothing went; once no longer held, a release drops again */
      CHECK_EQ_INT(dropped, 0);
      CHECK(crossed > 0 && resident_pages(map, zi.index_offset) > (long)(N * SIZE / 4096 / 2));
      zipindex_hold_releases(&zi, 0);
      for (int i = 20; i < N; i++) { /* the first record from r20 on that crosses a block */
        char name[16];
        snprintf(name, sizeof(name), "r%02d", i);
        const zipindex_entry *e = zipindex_find(&zi, name, 3);
        uintptr_t first = ((uintptr_t)map + e->offset) & ~(block - 1);
        if (first == (((uintptr_t)map + e->offset + SIZE) & ~(block - 1)))
          continue;
        zipindex_release(&zi, e);
        CHECK_EQ_INT(resident_pages((const void *)first, block), 0);
        break;
      }
    } else {
      CHECK_EQ_INT(dropped, crossed);
      /* Up to the block the index starts in: each check reads its digest
       * from the index, which faults that block back in (by design: the
       * index stays). */
      size_t below_index =
          (size_t)((((uintptr_t)map + zi.index_offset) & ~(block - 1)) - (uintptr_t)map);
      long left = resident_pages(map, below_index);
      if (!CHECK(left <= (long)(block / 4096)))
        fprintf(stderr, "  step %d%s: %ld pages stay\n", step, backwards ? " backwards" : "", left);
    }
    zipindex_close(&zi);
  }
  if (map != MAP_FAILED)
    munmap((void *)map, len);
  close(fd);
  free(zip);
}

static void test_release_in_archive_order(void) {
  release_run(1, 0, 0);
  release_run(2, 0, 0);
  release_run(5, 0, 0);
  release_run(1, 1, 0);
  release_run(1, 0, 1); /* held: a server's start-up */
}

int main(void) {
  init_data();
  test_release_in_archive_order();
  test_valid();
  test_empty_archive();
  test_not_a_zip();
  test_zero_bytes();
  test_truncated();
  test_unsafe_names();
  test_nul_in_name();
  test_duplicates();
  test_cp437_name();
  test_name_edges();
  test_inconsistent_headers();
  test_crc();
  test_unsupported_method();
  test_verified();
  test_verified_every_byte();
  test_every_byte_flipped();
  test_many_members();
  test_zip64();
  test_long_name();
  test_release_behind();
  return check_summary();
}

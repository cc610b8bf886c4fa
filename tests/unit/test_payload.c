/* payload: the trailer parser on good and bad trailers (magic, version,
 * flags, bounds, 64-bit overflow), and payload_open on real files in a
 * temporary directory: a valid host+zip+trailer file, damaged archives (the
 * trailer's index digest, through zipindex_open_verified, and the members'
 * digests), truncated files, files with no payload, missing files. */
#include "check.h"
#include "le.h"
#include "payload.h"
#include "sha256.h"
#include "zipindex.h"
#include "ziptest.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[64];

static void make_trailer(uint8_t t[PAYLOAD_TRAILER_SIZE], uint32_t version, uint32_t flags,
                         uint64_t offset, uint64_t size, const uint8_t *sha) {
  memcpy(t, PAYLOAD_MAGIC, PAYLOAD_MAGIC_LEN);
  le_put32(t + 8, version);
  le_put32(t + 12, flags);
  le_put64(t + 16, offset);
  le_put64(t + 24, size);
  if (sha)
    memcpy(t + 32, sha, 32);
  else
    for (int i = 0; i < 32; i++)
      t[32 + i] = (uint8_t)(0xa0 + i);
}

/* Parses a trailer; returns the rc and leaves the message in err. */
static int parse(uint32_t version, uint32_t flags, uint64_t offset, uint64_t size,
                 uint64_t file_size, payload_trailer *out, char *err, size_t errlen) {
  uint8_t t[PAYLOAD_TRAILER_SIZE];
  make_trailer(t, version, flags, offset, size, NULL);
  err[0] = '\0';
  return payload_parse_trailer(t, file_size, out, err, errlen);
}

static void test_sha256(void) {
  uint8_t d[SHA256_DIGEST_SIZE];
  char hex[2 * SHA256_DIGEST_SIZE + 1];
  sha256_digest("abc", 3, d);
  sha256_hex(d, hex);
  CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  sha256_digest("", 0, d);
  sha256_hex(d, hex);
  CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_trailer_good(void) {
  payload_trailer t;
  char err[256];
  memset(&t, 0xee, sizeof(t));
  CHECK_EQ_INT(parse(2, 0, 100, 836, 1000, &t, err, sizeof(err)), 0);
  CHECK_EQ_INT(t.version, 2);
  CHECK_EQ_INT(t.flags, 0);
  CHECK(t.archive_offset == 100);
  CHECK(t.archive_size == 836);
  CHECK(t.index_sha256[0] == 0xa0 && t.index_sha256[31] == 0xbf);

  /* Little-endian, all 8 bytes used: offset and size above 4 GiB. */
  uint64_t off = 0x0102030405060708ULL, size = 0x0000000100000000ULL;
  uint64_t file_size = off + size + PAYLOAD_TRAILER_SIZE;
  CHECK_EQ_INT(parse(2, 0, off, size, file_size, &t, err, sizeof(err)), 0);
  CHECK(t.archive_offset == off);
  CHECK(t.archive_size == size);

  /* No host bytes at all, and the smallest zip (an empty archive). */
  CHECK_EQ_INT(parse(2, 0, 0, 22, 22 + 64, &t, err, sizeof(err)), 0);
  CHECK_EQ_INT(parse(2, 0, 0, 936, 1000, &t, err, sizeof(err)), 0);
  /* Archive right up to the largest file size. */
  CHECK_EQ_INT(parse(2, 0, 0, UINT64_MAX - 64, UINT64_MAX, &t, err, sizeof(err)), 0);
  CHECK_EQ_INT(parse(2, 0, UINT64_MAX - 64 - 22, 22, UINT64_MAX, &t, err, sizeof(err)), 0);
}

static void test_trailer_bad(void) {
  payload_trailer t;
  char err[256];
  uint8_t raw[PAYLOAD_TRAILER_SIZE];

  /* Magic: each byte matters, including the NUL and the \1. */
  for (int i = 0; i < PAYLOAD_MAGIC_LEN; i++) {
    make_trailer(raw, 2, 0, 100, 836, NULL);
    raw[i] ^= 0x01;
    err[0] = '\0';
    CHECK_EQ_INT(payload_parse_trailer(raw, 1000, &t, err, sizeof(err)), -1);
    CHECK_CONTAINS(err, "magic");
  }

  /* Version. */
  static const uint32_t versions[] = {0, 1, 3, 0x100, 0x01000000, UINT32_MAX};
  for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
    CHECK_EQ_INT(parse(versions[i], 0, 100, 836, 1000, &t, err, sizeof(err)), -1);
    CHECK_CONTAINS(err, "version");
    CHECK_CONTAINS(err, "this host reads 2");
  }
  /* Flags are reserved. */
  static const uint32_t flags[] = {1, 2, 0x100, 0x80000000u, UINT32_MAX};
  for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
    CHECK_EQ_INT(parse(2, flags[i], 100, 836, 1000, &t, err, sizeof(err)), -1);
    CHECK_CONTAINS(err, "flags");
  }

  /* The archive must end exactly where the trailer starts. */
  CHECK_EQ_INT(parse(2, 0, 100, 835, 1000, &t, err, sizeof(err)), -1);
  CHECK_CONTAINS(err, "truncated or damaged");
  CHECK_CONTAINS(err, "100+835");
  CHECK_CONTAINS(err, "file size 1000");
  CHECK_EQ_INT(parse(2, 0, 100, 837, 1000, &t, err, sizeof(err)), -1);
  CHECK_EQ_INT(parse(2, 0, 101, 836, 1000, &t, err, sizeof(err)), -1);
  CHECK_EQ_INT(parse(2, 0, 99, 836, 1000, &t, err, sizeof(err)), -1);
  CHECK_EQ_INT(parse(2, 0, 0, 1000, 1000, &t, err, sizeof(err)), -1); /* over the trailer */
  CHECK_EQ_INT(parse(2, 0, 1000, 0, 1000, &t, err, sizeof(err)), -1);
  CHECK_EQ_INT(parse(2, 0, 1001, 0, 1000, &t, err, sizeof(err)), -1);
  CHECK_EQ_INT(parse(2, 0, 0, 0, 0, &t, err, sizeof(err)), -1);
  CHECK_EQ_INT(parse(2, 0, 0, 0, 63, &t, err, sizeof(err)), -1);
  CHECK_EQ_INT(parse(2, 0, 0, 0, 64, &t, err, sizeof(err)), -1);

  /* Too small to be a zip. */
  CHECK_EQ_INT(parse(2, 0, 0, 21, 21 + 64, &t, err, sizeof(err)), -1);
  CHECK_CONTAINS(err, "too small");
  CHECK_EQ_INT(parse(2, 0, 915, 21, 1000, &t, err, sizeof(err)), -1);
  CHECK_EQ_INT(parse(2, 0, 936, 0, 1000, &t, err, sizeof(err)), -1);

  /* Overflowing 64-bit values: offset + size wraps around to the right sum. */
  CHECK_EQ_INT(parse(2, 0, UINT64_MAX, 937, 1000, &t, err, sizeof(err)), -1);
  CHECK_EQ_INT(parse(2, 0, 0, UINT64_MAX, 1000, &t, err, sizeof(err)), -1);
  CHECK_EQ_INT(parse(2, 0, UINT64_MAX, UINT64_MAX, 1000, &t, err, sizeof(err)), -1);
  CHECK_EQ_INT(parse(2, 0, 1ULL << 63, (1ULL << 63) + 936, 1000, &t, err, sizeof(err)), -1);
  CHECK_EQ_INT(parse(2, 0, UINT64_MAX - 63, 1000, 1000, &t, err, sizeof(err)), -1);
  CHECK_EQ_INT(parse(2, 0, 0, 0, UINT64_MAX, &t, err, sizeof(err)), -1);

  /* An offset inside the trailer itself: offset + size only matches the
   * trailer start because the size wraps (2^64 - 54 bytes). */
  uint64_t file_size = 1000, off = 990, size = file_size - PAYLOAD_TRAILER_SIZE - off;
  /* Regression test (was a bug): payload.c checks archive_offset > file_size instead of
   * archive_offset > file_size - PAYLOAD_TRAILER_SIZE, so for any offset in
   * (file_size - 64, file_size] the unsigned "file_size - 64 - offset" wraps
   * and this trailer is accepted with archive_size 2^64 - 54. */
  CHECK_EQ_INT(parse(2, 0, off, size, file_size, &t, err, sizeof(err)), -1);
  /* Regression test (was a bug): the same, with the offset right at the end of the file. */
  CHECK_EQ_INT(parse(2, 0, 1000, (uint64_t)0 - 64, 1000, &t, err, sizeof(err)), -1);

  /* A tiny error buffer is never overrun (ASan) and stays terminated. */
  char small[8];
  memset(small, 'x', sizeof(small));
  CHECK_EQ_INT(parse(7, 0, 100, 836, 1000, &t, small, sizeof(small)), -1);
  CHECK_EQ_INT(strlen(small), sizeof(small) - 1);
}

/* ---- files ---------------------------------------------------------------- */

static char *path_in_tmp(const char *name) {
  static char buf[4][256];
  static int next;
  char *p = buf[next++ % 4];
  snprintf(p, sizeof(buf[0]), "%s/%s", tmpdir, name);
  return p;
}

static void write_file(const char *path, const void *data, size_t len) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0 || (len && write(fd, data, len) != (ssize_t)len) || close(fd) != 0) {
    fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
    exit(2);
  }
}

typedef struct image {
  uint8_t *data;
  size_t len;
  size_t host_len, zip_len;
} image;

/* host bytes + zip (with member digests) + trailer with its index digest. */
static image make_image(size_t host_len) {
  ziptest z;
  zt_init(&z);
  z.digests = 1;
  zt_add_str(&z, "appbin/manifest", "format=2\napp=main:app\n");
  zt_add_str(&z, "site-packages/main.py", "app = None\n");
  size_t zip_len;
  uint8_t sha[32];
  uint8_t *zip = zt_finish_digested(&z, 0, &zip_len, sha);
  image im = {.host_len = host_len, .zip_len = zip_len};
  im.len = host_len + zip_len + PAYLOAD_TRAILER_SIZE;
  im.data = malloc(im.len);
  for (size_t i = 0; i < host_len; i++)
    im.data[i] = (uint8_t)(i * 31 + 7);
  if (host_len >= 4)
    memcpy(im.data,
           "\x7f"
           "ELF",
           4);
  memcpy(im.data + host_len, zip, zip_len);
  make_trailer(im.data + host_len + zip_len, 2, 0, host_len, zip_len, sha);
  free(zip);
  return im;
}

static void test_open_valid(void) {
  image im = make_image(4096);
  const char *path = path_in_tmp("valid.bin");
  write_file(path, im.data, im.len);
  payload p;
  char err[512] = "";
  if (!CHECK_EQ_INT(payload_open(&p, path, err, sizeof(err)), 0)) {
    fprintf(stderr, "  err: %s\n", err);
    free(im.data);
    return;
  }
  CHECK_STR(p.path, path);
  CHECK_EQ_INT(p.map_size, im.len);
  CHECK(p.archive == p.map + im.host_len);
  CHECK_EQ_INT(p.archive_size, im.zip_len);
  CHECK_MEM(p.archive, im.data + im.host_len, im.zip_len);
  CHECK_EQ_INT(p.trailer.version, 2);
  CHECK(p.trailer.archive_offset == im.host_len);
  CHECK(p.trailer.archive_size == im.zip_len);
  CHECK_MEM(p.trailer.index_sha256, im.data + im.len - 32, 32);

  /* The archive region opens on its own, offsets relative to its start,
   * and its index matches the trailer's digest. */
  zipindex zi;
  if (CHECK_EQ_INT(zipindex_open_verified(&zi, p.archive, p.archive_size, p.trailer.index_sha256,
                                          err, sizeof(err)),
                   0)) {
    const zipindex_entry *e = zipindex_find(&zi, "appbin/manifest", 15);
    char buf[64];
    CHECK(e && e->size == 22 && zipindex_read(&zi, e, buf, err, sizeof(err)) == 0 &&
          memcmp(buf, "format=2\napp=main:app\n", 22) == 0);
    CHECK_EQ_INT(zipindex_verify_all(&zi, err, sizeof(err)), 0);
    zipindex_close(&zi);
  }
  payload_close(&p);
  CHECK(p.map == NULL && p.path == NULL && p.archive == NULL);
  payload_close(&p); /* twice is harmless */

  /* A payload with no host bytes in front. */
  free(im.data);
  im = make_image(0);
  path = path_in_tmp("bare-archive.bin");
  write_file(path, im.data, im.len);
  if (CHECK_EQ_INT(payload_open(&p, path, err, sizeof(err)), 0)) {
    CHECK(p.archive == p.map);
    CHECK_EQ_INT(p.archive_size, im.zip_len);
    payload_close(&p);
  }
  free(im.data);
}

static void expect_open(const char *path, int want_rc, const char *needle, int line) {
  payload p;
  char err[512] = "";
  memset(&p, 0x5a, sizeof(p));
  int rc = payload_open(&p, path, err, sizeof(err));
  check_report_(rc == want_rc, __FILE__, line, "payload_open(%s) == %d (got %d, err \"%s\")", path,
                want_rc, rc, err);
  if (needle)
    check_report_(strstr(err, needle) != NULL, __FILE__, line, "error \"%s\" holds \"%s\"", err,
                  needle);
  if (rc != 0) {
    check_report_(err[0] != '\0', __FILE__, line, "an error message");
    check_report_(p.map == NULL && p.path == NULL, __FILE__, line, "nothing mapped after failure");
  }
  payload_close(&p);
}
#define EXPECT_OPEN(path, rc, needle) expect_open((path), (rc), (needle), __LINE__)

/* payload_open, then the archive's index against the trailer's digest and
 * every member against its own: 0 when all is intact, else -1 with the
 * message in err. */
static int open_and_verify(const char *path, char *err, size_t errlen) {
  payload p;
  int rc = payload_open(&p, path, err, errlen);
  if (rc != 0)
    return -1;
  zipindex zi;
  rc = zipindex_open_verified(&zi, p.archive, p.archive_size, p.trailer.index_sha256, err, errlen);
  if (rc == 0) {
    rc = zipindex_verify_all(&zi, err, errlen);
    zipindex_close(&zi);
  }
  payload_close(&p);
  return rc;
}

static void expect_verify(const char *path, int want_rc, const char *needle, int line) {
  char err[512] = "";
  int rc = open_and_verify(path, err, sizeof(err));
  check_report_(rc == want_rc, __FILE__, line, "verifying %s gives %d (got %d, err \"%s\")", path,
                want_rc, rc, err);
  if (needle)
    check_report_(strstr(err, needle) != NULL, __FILE__, line, "error \"%s\" holds \"%s\"", err,
                  needle);
}
#define EXPECT_VERIFY(path, rc, needle) expect_verify((path), (rc), (needle), __LINE__)

static void test_open_damaged(void) {
  image im = make_image(1000);
  const char *path = path_in_tmp("damaged.bin");
  /* Every byte of the archive, flipped one at a time: payload_open hashes
   * nothing (it opens), and the index or a member digest catches it. */
  int missed = 0;
  for (size_t at = im.host_len; at < im.host_len + im.zip_len; at++) {
    im.data[at] ^= 0x40;
    write_file(path, im.data, im.len);
    payload p;
    char err[512] = "";
    if (CHECK_EQ_INT(payload_open(&p, path, err, sizeof(err)), 0))
      payload_close(&p);
    if (open_and_verify(path, err, sizeof(err)) != -1 || !strstr(err, "damaged")) {
      if (missed++ < 5)
        fprintf(stderr, "  byte %zu of the archive flipped: not caught (%s)\n", at - im.host_len,
                err);
    }
    im.data[at] ^= 0x40;
  }
  CHECK_EQ_INT(missed, 0);
  /* A flipped byte of the recorded index digest. */
  im.data[im.len - 1] ^= 1;
  write_file(path, im.data, im.len);
  EXPECT_VERIFY(path, -1, "index is damaged");
  im.data[im.len - 1] ^= 1;
  /* Host bytes are not covered. */
  im.data[10] ^= 1;
  write_file(path, im.data, im.len);
  EXPECT_VERIFY(path, 0, NULL);
  im.data[10] ^= 1;
  /* An unknown format version (1: the whole-archive hash of old hosts). */
  im.data[im.len - 64 + 8] = 1;
  write_file(path, im.data, im.len);
  EXPECT_OPEN(path, -1, "version 1");
  EXPECT_OPEN(path, -1, "appbin-pack");
  im.data[im.len - 64 + 8] = 2;
  /* Intact again. */
  write_file(path, im.data, im.len);
  EXPECT_OPEN(path, 0, NULL);
  EXPECT_VERIFY(path, 0, NULL);
  free(im.data);
}

static void test_open_truncated(void) {
  image im = make_image(1000);
  const char *path = path_in_tmp("truncated.bin");
  uint8_t *cut = malloc(im.len);

  /* Bytes lost at the front (the trailer kept): offsets no longer add up. */
  write_file(path, im.data + 1, im.len - 1);
  EXPECT_OPEN(path, -1, "truncated or damaged");
  write_file(path, im.data + 900, im.len - 900);
  EXPECT_OPEN(path, -1, "truncated or damaged");
  /* Bytes lost in the middle of the archive. */
  size_t mid = im.host_len + im.zip_len / 2;
  memcpy(cut, im.data, mid);
  memcpy(cut + mid, im.data + mid + 7, im.len - mid - 7);
  write_file(path, cut, im.len - 7);
  EXPECT_OPEN(path, -1, "truncated or damaged");
  /* The whole host lost: only archive and trailer left. */
  write_file(path, im.data + im.host_len, im.len - im.host_len);
  EXPECT_OPEN(path, -1, NULL);
  /* Only the trailer left. */
  write_file(path, im.data + im.len - 64, 64);
  EXPECT_OPEN(path, -1, NULL);
  /* Bytes lost at the end take the trailer's magic with them: the file
   * looks like a host with no payload (rc 1), as payload.h says. */
  write_file(path, im.data, im.len - 1);
  EXPECT_OPEN(path, 1, "no appbin payload");
  write_file(path, im.data, im.len - 64);
  EXPECT_OPEN(path, 1, NULL);
  /* Extra bytes appended after the trailer: no trailer at the end. */
  memcpy(cut, im.data, im.len);
  write_file(path, im.data, im.len);
  int fd = open(path, O_WRONLY | O_APPEND);
  CHECK(fd >= 0 && write(fd, "\n", 1) == 1);
  close(fd);
  EXPECT_OPEN(path, 1, NULL);
  free(cut);
  free(im.data);
}

static void test_open_no_payload(void) {
  const char *path = path_in_tmp("host-only.bin");
  uint8_t host[4096];
  memset(host, 0x90, sizeof(host));
  memcpy(host,
         "\x7f"
         "ELF",
         4);
  write_file(path, host, sizeof(host));
  EXPECT_OPEN(path, 1, "no appbin payload");
  EXPECT_OPEN(path, 1, path);

  path = path_in_tmp("empty.bin");
  write_file(path, "", 0);
  EXPECT_OPEN(path, 1, NULL);
  path = path_in_tmp("tiny.bin");
  write_file(path, host, 63);
  EXPECT_OPEN(path, 1, NULL);
  /* The magic alone in the last 64 bytes, with zeros: version 0. */
  uint8_t t[64] = {0};
  memcpy(t, PAYLOAD_MAGIC, PAYLOAD_MAGIC_LEN);
  path = path_in_tmp("magic-only.bin");
  write_file(path, t, sizeof(t));
  EXPECT_OPEN(path, -1, "version");

  path = path_in_tmp("does-not-exist.bin");
  EXPECT_OPEN(path, -1, path);
  EXPECT_OPEN(path, -1, "No such file");
  EXPECT_OPEN("", -1, NULL);
}

/* The trailer from test_trailer_bad's regression case, in a real file: the
 * (impossible) archive must be refused before anything reads it. */
static void test_open_offset_in_trailer(void) {
  uint8_t data[1000];
  memset(data, 0, sizeof(data));
  make_trailer(data + sizeof(data) - 64, 2, 0, 990, (uint64_t)0 - 54, NULL);
  const char *path = path_in_tmp("offset-in-trailer.bin");
  write_file(path, data, sizeof(data));
  payload p;
  char err[256] = "";
  int rc = payload_open(&p, path, err, sizeof(err));
  /* Regression test (was a bug): accepted (rc 0, archive_size 2^64 - 54) because of the
   * bounds check in payload_parse_trailer (payload.c). */
  CHECK_EQ_INT(rc, -1);
  if (rc == 0) {
    fprintf(stderr, "  archive_size %zu of a %zu-byte file\n", p.archive_size, p.map_size);
    payload_close(&p);
  }
}

int main(void) {
  snprintf(tmpdir, sizeof(tmpdir), "/tmp/appbin-test-payload-XXXXXX");
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 2;
  }
  test_sha256();
  test_trailer_good();
  test_trailer_bad();
  test_open_valid();
  test_open_damaged();
  test_open_truncated();
  test_open_no_payload();
  test_open_offset_in_trailer();

  static const char *const names[] = {"valid.bin",     "bare-archive.bin", "damaged.bin",
                                      "truncated.bin", "host-only.bin",    "empty.bin",
                                      "tiny.bin",      "magic-only.bin",   "offset-in-trailer.bin"};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
    unlink(path_in_tmp(names[i]));
  if (rmdir(tmpdir) != 0)
    fprintf(stderr, "cannot remove %s: %s\n", tmpdir, strerror(errno));
  return check_summary();
}

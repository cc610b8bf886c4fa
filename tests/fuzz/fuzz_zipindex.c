/* libFuzzer harness for host/zipindex.c: arbitrary bytes as an archive,
 * opened without digests (CRC-checked reads) and, when its end record names a
 * central directory, with the index digest of those bytes (as a payload
 * trailer would vouch for them), so that the verified parse, the digest
 * checks and the whole-archive check run on hostile central directories and
 * records. Every member is read, in place where stored; what a read returns
 * must be the recorded size and, unverified, match the recorded CRC.
 *
 * With no input to start from, the harness seeds itself: inputs shorter than
 * 4 bytes are replaced by a small valid verified archive (so mutations start
 * from one). */
#include "le.h"
#include "sha256.h"
#include "zipindex.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static void read_all(zipindex *zi) {
  char err[256];
  for (size_t i = 0; i < zi->count && i < 256; i++) {
    const zipindex_entry *e = &zi->entries[i];
    if (zipindex_find(zi, e->name, e->name_len) != e)
      abort(); /* every entry is found under its own name */
    if (e->size > (1u << 20))
      continue; /* a claimed size is not a reason to allocate much */
    uint8_t *buf = malloc(e->size ? e->size : 1);
    if (!buf)
      continue;
    int read = zipindex_read(zi, e, buf, err, sizeof(err)) == 0;
    if (read && !e->digest && (uint32_t)crc32_z(0, buf, e->size) != e->crc)
      abort(); /* an unverified read that succeeds matches its CRC */
    const uint8_t *in_place = zipindex_stored_data(zi, e, err, sizeof(err));
    if (read && in_place && memcmp(in_place, buf, e->size) != 0)
      abort(); /* stored bytes in place are what a read copies */
    free(buf);
    zipindex_is_dir(zi, e->name, e->name_len);
    zipindex_lower_bound(zi, e->name, e->name_len);
  }
  zipindex_verify_all(zi, err, sizeof(err));
}

/* One stored member with its digest, and the end record: a seed. */
static size_t seed(uint8_t *out) {
  static const char name[] = "m.py", data[] = "x = 1\n";
  uint8_t *p = out;
  uint32_t crc = (uint32_t)crc32_z(0, (const Bytef *)data, 6);
  uint8_t local[30] = {0x50, 0x4b, 3, 4, 20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0};
  memcpy(local + 14, &crc, 4);
  local[18] = local[22] = 6;
  local[26] = 4;
  memcpy(p, local, 30);
  memcpy(p + 30, name, 4);
  memcpy(p + 34, data, 6);
  uint8_t digest[32];
  sha256_digest(out, 40, digest);
  p += 40;
  uint8_t central[46] = {0x50, 0x4b, 1, 2, 20, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0};
  memcpy(central + 16, &crc, 4);
  central[20] = central[24] = 6;
  central[28] = 4;
  central[30] = 36;
  memcpy(p, central, 46);
  memcpy(p + 46, name, 4);
  memcpy(p + 50, "\x61\x62\x20\x00", 4);
  memcpy(p + 54, digest, 32);
  p += 86;
  uint8_t end[22] = {0x50, 0x4b, 5, 6, 0, 0, 0, 0, 1, 0, 1, 0, 86, 0, 0, 0, 40, 0, 0, 0, 0, 0};
  memcpy(p, end, 22);
  return 40 + 86 + 22;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t seeded[256];
  if (size < 4) {
    size = seed(seeded);
    data = seeded;
  }
  /* An exact-size copy: ASan sees any read past the archive. */
  uint8_t *copy = malloc(size);
  if (!copy)
    return 0;
  memcpy(copy, data, size);
  zipindex zi;
  char err[256];
  if (zipindex_open(&zi, copy, size, err, sizeof(err)) == 0) {
    read_all(&zi);
    zipindex_close(&zi);
  }
  if (size >= 22 && le32(copy + size - 22) == 0x06054b50) {
    uint32_t cd = le32(copy + size - 22 + 16);
    if (cd <= size) {
      uint8_t digest[32];
      sha256_digest(copy + cd, size - cd, digest);
      if (zipindex_open_verified(&zi, copy, size, digest, err, sizeof(err)) == 0) {
        read_all(&zi);
        zipindex_close(&zi);
      }
    }
  }
  free(copy);
  return 0;
}

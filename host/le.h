/*
 * le: little-endian loads and stores, the byte order of app.bin's trailer,
 * its zip archive, the code cache and its records (and of the tests and
 * fuzzers that write or read them).
 */
#ifndef APPBIN_LE_H
#define APPBIN_LE_H

#include <stdint.h>

static inline uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static inline uint32_t le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t le64(const uint8_t *p) {
  return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static inline void le_put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static inline void le_put64(uint8_t *p, uint64_t v) {
  le_put32(p, (uint32_t)v);
  le_put32(p + 4, (uint32_t)(v >> 32));
}

#endif

#include "sha256.h"

#include <openssl/sha.h>

void sha256_digest(const void *data, size_t len, uint8_t out[SHA256_DIGEST_SIZE]) {
  SHA256(data, len, out);
}

void sha256_hex(const uint8_t digest[SHA256_DIGEST_SIZE], char out[2 * SHA256_DIGEST_SIZE + 1]) {
  static const char hex[] = "0123456789abcdef";
  for (int i = 0; i < SHA256_DIGEST_SIZE; i++) {
    out[2 * i] = hex[digest[i] >> 4];
    out[2 * i + 1] = hex[digest[i] & 0xf];
  }
  out[2 * SHA256_DIGEST_SIZE] = '\0';
}

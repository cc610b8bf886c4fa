#include "sha256.h"

/* The low-level SHA256_* calls (deprecated in OpenSSL 3, still shipped) link
 * only libcrypto's SHA-256 code; the one-shot SHA256() goes through EVP and
 * its providers and would pull most of libcrypto.a into the host. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

void sha256_digest(const void *data, size_t len, uint8_t out[SHA256_DIGEST_SIZE]) {
  SHA256_CTX ctx;
  SHA256_Init(&ctx);
  SHA256_Update(&ctx, data, len);
  SHA256_Final(out, &ctx);
}

void sha256_hex(const uint8_t digest[SHA256_DIGEST_SIZE], char out[2 * SHA256_DIGEST_SIZE + 1]) {
  static const char hex[] = "0123456789abcdef";
  for (int i = 0; i < SHA256_DIGEST_SIZE; i++) {
    out[2 * i] = hex[digest[i] >> 4];
    out[2 * i + 1] = hex[digest[i] & 0xf];
  }
  out[2 * SHA256_DIGEST_SIZE] = '\0';
}

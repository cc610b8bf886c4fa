/* sha256: SHA-256 of a memory region (libcrypto's SHA-NI/AVX2 code). */
#ifndef APPBIN_SHA256_H
#define APPBIN_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_DIGEST_SIZE 32

void sha256_digest(const void *data, size_t len, uint8_t out[SHA256_DIGEST_SIZE]);

/* Writes the lowercase hex form of a digest (65 bytes with the NUL). */
void sha256_hex(const uint8_t digest[SHA256_DIGEST_SIZE], char out[2 * SHA256_DIGEST_SIZE + 1]);

#endif

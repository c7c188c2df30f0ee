/* crypto.h — hashing, MACs, randomness and encodings (the only user of OpenSSL's libcrypto). */
#ifndef TOLLGATE_CRYPTO_H
#define TOLLGATE_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Fill buf with n bytes from the OS CSPRNG; aborts if the OS cannot provide them. */
void tg_random_bytes(void *buf, size_t n);
uint64_t tg_random_u64(void);
/* SHA-256 of data as 64 lowercase hex characters + NUL (out ≥ 65). */
void tg_sha256_hex(const void *data, size_t n, char *out);
void tg_sha256(const void *data, size_t n, unsigned char out[32]);
/* SHA-1 hex (out ≥ 41): only for Redis script ids, never for security. */
void tg_sha1_hex(const void *data, size_t n, char *out);
void tg_hmac_sha256(const void *key, size_t keylen, const void *data, size_t n, unsigned char out[32]);
/* Standard base64 with padding; returns length written (out ≥ 4*((n+2)/3)+1). */
size_t tg_base64_encode(const void *data, size_t n, char *out);
/* Decode standard base64 (padding optional); returns decoded length or -1 on bad input. out ≥ 3*(n/4)+3. */
long tg_base64_decode(const char *s, size_t n, unsigned char *out);
/* Constant-time equality of two byte strings (length leak only). */
bool tg_ct_equal(const void *a, size_t alen, const void *b, size_t blen);
void tg_hex(const void *data, size_t n, char *out); /* out ≥ 2n+1 */

#endif

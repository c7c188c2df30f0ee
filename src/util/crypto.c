/* crypto.c — the adapter to OpenSSL's libcrypto: randomness, SHA-256, HMAC, base64, constant-time compare. */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <string.h>
#include <sys/random.h>

#include "tollgate/crypto.h"
#include "tollgate/error.h"

void tg_random_bytes(void *buf, size_t n)
{
	unsigned char *p = buf;

	while (n > 0) {
		ssize_t r = getrandom(p, n, 0);
		if (r < 0)
			TG_BUG("getrandom failed");
		p += r;
		n -= (size_t)r;
	}
}

uint64_t tg_random_u64(void)
{
	uint64_t v;
	tg_random_bytes(&v, sizeof(v));
	return v;
}

void tg_hex(const void *data, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = data;

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[p[i] >> 4];
		out[2 * i + 1] = hex[p[i] & 15];
	}
	out[2 * n] = '\0';
}

void tg_sha256(const void *data, size_t n, unsigned char out[32])
{
	SHA256(data, n, out);
}

void tg_sha256_hex(const void *data, size_t n, char *out)
{
	unsigned char md[32];

	SHA256(data, n, md);
	tg_hex(md, sizeof(md), out);
}

void tg_sha1_hex(const void *data, size_t n, char *out)
{
	unsigned char md[20];

	SHA1(data, n, md);
	tg_hex(md, sizeof(md), out);
}

void tg_hmac_sha256(const void *key, size_t keylen, const void *data, size_t n, unsigned char out[32])
{
	unsigned int len = 32;

	if (!HMAC(EVP_sha256(), key, (int)keylen, data, n, out, &len))
		TG_BUG("HMAC failed");
}

size_t tg_base64_encode(const void *data, size_t n, char *out)
{
	return (size_t)EVP_EncodeBlock((unsigned char *)out, data, (int)n);
}

long tg_base64_decode(const char *s, size_t n, unsigned char *out)
{
	static const signed char map[256] = {
		['A'] = 1, ['B'] = 2, ['C'] = 3, ['D'] = 4, ['E'] = 5, ['F'] = 6, ['G'] = 7, ['H'] = 8,
		['I'] = 9, ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15,
		['P'] = 16, ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22,
		['W'] = 23, ['X'] = 24, ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29,
		['d'] = 30, ['e'] = 31, ['f'] = 32, ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36,
		['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41, ['p'] = 42, ['q'] = 43,
		['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48, ['w'] = 49, ['x'] = 50,
		['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56, ['4'] = 57,
		['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63, ['/'] = 64,
	};
	uint32_t acc = 0;
	int bits = 0;
	long len = 0;
	size_t i;

	while (n > 0 && s[n - 1] == '=')
		n--;
	for (i = 0; i < n; i++) {
		int v = map[(unsigned char)s[i]];
		if (v == 0)
			return -1;
		acc = (acc << 6) | (uint32_t)(v - 1);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[len++] = (unsigned char)(acc >> bits);
		}
	}
	if (bits >= 6)
		return -1; /* a single dangling character cannot encode a byte */
	return len;
}

bool tg_ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
	unsigned char ha[32], hb[32], diff = 0;

	/* compare digests so the time does not depend on where the inputs differ, nor on their length */
	SHA256(a, alen, ha);
	SHA256(b, blen, hb);
	for (size_t i = 0; i < 32; i++)
		diff |= ha[i] ^ hb[i];
	return diff == 0 && alen == blen;
}

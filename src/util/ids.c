/* ids.c — validation of tenant-chosen ids and generation of server-made ones. */
#include <string.h>

#include "tollgate/crypto.h"
#include "tollgate/util.h"

bool tg_id_valid(const char *s, size_t len)
{
	if (!s || len == 0 || len > TG_ID_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
			continue;
		if (!strchr("._:@+-", c) || c == '\0')
			return false;
	}
	return true;
}

/* A server-made id: the prefix (cut so that 24 characters still fit) and 24 of these. */
static const char alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz";
#define SID_CHARS 24

/* Copy the prefix into buf; returns where the 24 characters start. */
static size_t sid_prefix(const char *prefix, char *buf)
{
	size_t n = strlen(prefix);

	if (n > TG_SID_BUFSZ - SID_CHARS - 1)
		n = TG_SID_BUFSZ - SID_CHARS - 1;
	memcpy(buf, prefix, n);
	return n;
}

void tg_sid_new(const char *prefix, char *buf)
{
	unsigned char rnd[SID_CHARS];
	size_t n = sid_prefix(prefix, buf);

	tg_random_bytes(rnd, sizeof(rnd));
	/* 252 = 7 × 36: rejection-free enough; the tiny bias of % 36 on 256 is avoided by masking to 0..251 */
	for (size_t i = 0; i < sizeof(rnd); i++) {
		unsigned char r = rnd[i];
		while (r >= 252)
			tg_random_bytes(&r, 1);
		buf[n + i] = alphabet[r % 36];
	}
	buf[n + sizeof(rnd)] = '\0';
}

/* xoshiro256** per thread, seeded once from the OS */
static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

/* The 24 characters from the per-thread generator; returns where they start. */
static size_t sid_fast(const char *prefix, char *buf)
{
	static _Thread_local uint64_t s[4];
	static _Thread_local bool seeded;
	size_t n = sid_prefix(prefix, buf);

	if (!seeded) {
		tg_random_bytes(s, sizeof(s));
		seeded = true;
	}
	for (int i = 0; i < SID_CHARS; i += 12) {
		uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
		s[2] ^= s[0];
		s[3] ^= s[1];
		s[1] ^= s[2];
		s[0] ^= s[3];
		s[2] ^= t;
		s[3] = rotl(s[3], 45);
		for (int k = 0; k < 12; k++, r /= 36)
			buf[n + i + k] = alphabet[r % 36];
	}
	buf[n + SID_CHARS] = '\0';
	return n;
}

void tg_sid_fast(const char *prefix, char *buf)
{
	sid_fast(prefix, buf);
}

void tg_sid_ordered(const char *prefix, int64_t ms, char *buf)
{
	size_t n = sid_fast(prefix, buf);
	uint64_t v = ms < 0 ? 0 : (uint64_t)ms;

	/* 10 base-36 digits, most significant first (36^10 ms reach past the year 100,000); 14 random ones
	 * stay */
	for (int i = 9; i >= 0; i--, v /= 36)
		buf[n + (size_t)i] = alphabet[v % 36];
}

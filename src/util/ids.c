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

void tg_sid_new(const char *prefix, char *buf)
{
	static const char alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz";
	unsigned char rnd[24];
	size_t n = strlen(prefix);

	if (n > TG_SID_BUFSZ - 25)
		n = TG_SID_BUFSZ - 25;
	memcpy(buf, prefix, n);
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

/*
 * fuzz_ids.c — the small parsers of path and query arguments (src/util/ids.c, time.c): tg_id_valid on
 * tenant-chosen ids (customer, meter, limit ids in paths, bodies and query strings) and tg_parse_i64 on
 * numbers such as ?limit= and Content-Length. Both against plain references.
 */
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "tollgate/util.h"

__extension__ typedef __int128 i128;

/* 1 to TG_ID_MAX bytes of [A-Za-z0-9._:@+-] */
static bool ref_id(const char *s, size_t n)
{
	static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@+-";

	if (n == 0 || n > TG_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!s[i] || !memchr(ok, s[i], sizeof(ok) - 1))
			return false;
	return true;
}

/* -?[0-9]+ whose value lies in [min, max] (leading zeros allowed) */
static bool ref_i64(const char *s, int64_t min, int64_t max, int64_t *ret)
{
	bool neg = *s == '-';
	i128 v = 0;

	if (neg)
		s++;
	if (!*s)
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		v = v * 10 + (*s - '0');
		if (v > ((i128)1 << 64))
			v = ((i128)1 << 64); /* saturate: far out of range either way */
	}
	if (neg)
		v = -v;
	if (v < min || v > max)
		return false;
	*ret = (int64_t)v;
	return true;
}

static void check_i64(const char *s, int64_t min, int64_t max)
{
	int64_t got = 42, want = 42;
	bool ok = tg_parse_i64(s, min, max, &got);

	FUZZ_CHECK(ok == ref_i64(s, min, max, &want));
	FUZZ_CHECK(got == want);
	if (ok) {
		char buf[TG_I64_BUFSZ];
		int64_t back;
		FUZZ_CHECK(tg_fmt_i64(got, buf) == strlen(buf));
		FUZZ_CHECK(tg_parse_i64(buf, INT64_MIN, INT64_MAX, &back) && back == got);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *raw = (const char *)data;
	char *s = fuzz_cstr(data, size);

	FUZZ_CHECK(tg_id_valid(raw, size) == ref_id(raw, size));
	FUZZ_CHECK(tg_id_valid(s, strlen(s)) == ref_id(s, strlen(s)));
	check_i64(s, INT64_MIN, INT64_MAX);
	check_i64(s, 1, 100);      /* ?limit= */
	check_i64(s, 0, INT64_MAX); /* Content-Length */
	check_i64(s, 0, 65535);     /* a port */
	free(s);
	return 0;
}

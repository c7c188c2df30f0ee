/*
 * fuzz_time.c — RFC 3339 times through tg_time_parse (src/util/time.c): the from/to query arguments and
 * event timestamps. Differential against a reference built on the C library's timegm(); every accepted
 * time formats (tg_time_format, whole seconds) to text that parses back to the same second.
 */
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "fuzz.h"
#include "tollgate/util.h"

static bool num(const char *s, int n, int *out)
{
	*out = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		*out = *out * 10 + (s[i] - '0');
	}
	return true;
}

/* YYYY-MM-DD[Tt ]hh:mm:ss(.d+)?([Zz]|[+-]hh:mm), a real calendar day, second 60 read as 59. */
static int ref_parse(const char *s, int64_t *ret_ms)
{
	static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int Y, M, D, h, mi, sec, ms = 0, off = 0;
	size_t n = strlen(s), i;

	if (n < 20 || !num(s, 4, &Y) || s[4] != '-' || !num(s + 5, 2, &M) || s[7] != '-' || !num(s + 8, 2, &D) ||
	    !strchr("Tt ", s[10]) || !num(s + 11, 2, &h) || s[13] != ':' || !num(s + 14, 2, &mi) || s[16] != ':' ||
	    !num(s + 17, 2, &sec))
		return -1;
	bool leap = (Y % 4 == 0 && Y % 100 != 0) || Y % 400 == 0;
	if (M < 1 || M > 12 || D < 1 || D > mdays[M - 1] + (M == 2 && leap) || h > 23 || mi > 59 || sec > 60)
		return -1;
	i = 19;
	if (s[i] == '.') {
		size_t start = ++i;
		while (i < n && s[i] >= '0' && s[i] <= '9') {
			if (i - start < 3)
				ms += (s[i] - '0') * (i - start == 0 ? 100 : i - start == 1 ? 10 : 1);
			i++;
		}
		if (i == start)
			return -1;
	}
	if (s[i] == 'Z' || s[i] == 'z') {
		i++;
	} else if (s[i] == '+' || s[i] == '-') {
		int oh, om;
		if (n - i < 6 || !num(s + i + 1, 2, &oh) || s[i + 3] != ':' || !num(s + i + 4, 2, &om) || oh > 23 || om > 59)
			return -1;
		off = (oh * 60 + om) * 60 * (s[i] == '+' ? 1 : -1);
		i += 6;
	} else {
		return -1;
	}
	if (i != n)
		return -1;
	struct tm tm = {.tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D, .tm_hour = h, .tm_min = mi,
			.tm_sec = sec == 60 ? 59 : sec};
	time_t t = timegm(&tm);
	*ret_ms = ((int64_t)t - off) * 1000 + ms;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_cstr(data, size);
	int64_t ms = INT64_MIN, want = INT64_MIN;
	int rc = tg_time_parse(s, &ms);

	FUZZ_CHECK(rc == 0 || rc == -1);
	FUZZ_CHECK(ref_parse(s, &want) == rc);
	if (rc == 0) {
		FUZZ_CHECK(ms == want);
		/* years 0000–9999 only, with the offset applied: a year outside is written in another form */
		char buf[TG_TIME_BUFSZ + 16];
		int64_t back;
		size_t n = tg_time_format(ms, buf);
		FUZZ_CHECK(n == strlen(buf) && n < TG_TIME_BUFSZ);
		if (n == 20 && buf[0] != '-') {
			FUZZ_CHECK(tg_time_parse(buf, &back) == 0);
			FUZZ_CHECK(back == ms - ((ms % 1000) + 1000) % 1000);
		}
	} else {
		FUZZ_CHECK(ms == INT64_MIN);
	}
	free(s);
	return 0;
}

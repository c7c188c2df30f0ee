/*
 * fuzz_fixed.c — decimal quantities through tg_fixed_parse (src/util/fixed.c), the parser of every
 * amount, limit and balance a client sends. Differential against a slow reference written from the
 * contract in fixed.h; every accepted value formats to text that parses back to itself; *ret is
 * untouched on failure.
 */
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "tollgate/fixed.h"

__extension__ typedef unsigned __int128 u128; /* as fixed.c does */

/*
 * The contract, the obvious way: check -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, write the digits
 * as 0.D × 10^E with D starting at its first non-zero digit, then |value| >= 1e13 is out of range at once,
 * and otherwise the value in micro-units is the first E + 6 digits of D.
 */
static int ref_parse(const char *s, size_t n, tg_fixed *ret)
{
	size_t i = 0, int_len, ndig = 0;
	bool neg = false;
	long long exp = 0;
	char *dig = malloc(n + 1);
	int rc = TG_FIXED_ESYNTAX;

	if (!dig)
		abort();
	if (i < n && s[i] == '-')
		neg = ++i > 0;
	if (i >= n || s[i] < '0' || s[i] > '9')
		goto out;
	if (s[i] == '0' && i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '9')
		goto out; /* a leading zero */
	while (i < n && s[i] >= '0' && s[i] <= '9')
		dig[ndig++] = s[i++];
	int_len = ndig;
	if (i < n && s[i] == '.') {
		i++;
		if (i >= n || s[i] < '0' || s[i] > '9')
			goto out;
		while (i < n && s[i] >= '0' && s[i] <= '9')
			dig[ndig++] = s[i++];
	}
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		bool eneg = false;
		i++;
		if (i < n && (s[i] == '+' || s[i] == '-'))
			eneg = s[i++] == '-';
		if (i >= n || s[i] < '0' || s[i] > '9')
			goto out;
		while (i < n && s[i] >= '0' && s[i] <= '9') {
			if (exp < 1000000000000LL) /* far beyond any input length: same classification */
				exp = exp * 10 + (s[i] - '0');
			i++;
		}
		if (eneg)
			exp = -exp;
	}
	if (i != n)
		goto out;

	size_t first = 0, last = 0;
	while (first < ndig && dig[first] == '0')
		first++;
	if (first == ndig) {
		rc = TG_FIXED_OK;
		if (ret)
			*ret = 0;
		goto out;
	}
	last = ndig - 1;
	while (dig[last] == '0')
		last--;
	long long E = (long long)int_len - (long long)first + exp; /* value = 0.dig[first..] × 10^E */
	long long sig = (long long)(last - first + 1);
	if (E > 13) {
		rc = TG_FIXED_ERANGE;
		goto out;
	}
	long long keep = E + 6; /* digits of D at or above the micro-unit */
	u128 micro = 0;
	for (long long k = 0; k < keep; k++)
		micro = micro * 10 + (unsigned)(k < sig ? dig[first + (size_t)k] - '0' : 0);
	if (micro > (u128)TG_FIXED_MAX)
		rc = TG_FIXED_ERANGE;
	else if (sig > keep)
		rc = TG_FIXED_EPRECISION;
	else {
		rc = TG_FIXED_OK;
		if (ret)
			*ret = neg ? -(tg_fixed)micro : (tg_fixed)micro;
	}
out:
	free(dig);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	const tg_fixed untouched = INT64_C(0x5a5a5a5a5a5a5a5a);
	tg_fixed v = untouched, want = untouched;
	int rc = tg_fixed_parse(s, size, &v);

	FUZZ_CHECK(rc == TG_FIXED_OK || rc == TG_FIXED_ESYNTAX || rc == TG_FIXED_EPRECISION || rc == TG_FIXED_ERANGE);
	FUZZ_CHECK(tg_fixed_parse(s, size, NULL) == rc);
	FUZZ_CHECK(ref_parse(s, size, &want) == rc);
	if (rc != TG_FIXED_OK) {
		FUZZ_CHECK(v == untouched);
		return 0;
	}
	FUZZ_CHECK(v == want);
	FUZZ_CHECK(v >= -TG_FIXED_MAX && v <= TG_FIXED_MAX);

	/* the shortest exact text, which parses back to the same value */
	char buf[TG_FIXED_BUFSZ];
	tg_fixed back = untouched;
	size_t n = tg_fixed_format(v, buf);
	FUZZ_CHECK(n == strlen(buf) && n < TG_FIXED_BUFSZ);
	FUZZ_CHECK(!strpbrk(buf, "eE+") && strcmp(buf, "-0") != 0);
	FUZZ_CHECK(n < 2 || !strchr(buf, '.') || buf[n - 1] != '0');
	FUZZ_CHECK(tg_fixed_parse(buf, n, &back) == TG_FIXED_OK && back == v);
	return 0;
}

/* Unit tests for src/util/ids.c: tenant-chosen id validation and server-made id generation. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/util.h"
#include "unit.h"

static bool valid(const char *s)
{
	return tg_id_valid(s, strlen(s));
}

START_TEST(test_valid_ids)
{
	const char *ok[] = {"a", "Z", "0", "u_28f3a", "pro", "free-tier", "org.acme", "user@example.com", "a:b",
			    "a+b", "..", "-", "_", "@", "+", ":", "AZaz09._:@+-"};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		ck_assert_msg(valid(ok[i]), "'%s' should be valid", ok[i]);
	char max[TG_ID_MAX + 2];
	memset(max, 'x', TG_ID_MAX);
	max[TG_ID_MAX] = '\0';
	ck_assert(valid(max));
	max[TG_ID_MAX] = 'x';
	max[TG_ID_MAX + 1] = '\0';
	ck_assert(!valid(max)); /* 129 */
}
END_TEST

START_TEST(test_invalid_ids)
{
	const char *bad[] = {"", " ", "a b", "a/b", "/", "a\\b", "a\tb", "a\nb", "a\rb", "\x01", "a\x7f", "caf\xc3\xa9",
			     "a'b", "a\"b", "a;b", "'; DROP TABLE customers;--", "a%00", "a?b", "a#b", "a,b", "a*b",
			     "a=b", "a&b", "(a)", "[a]", "{a}", "<a>", "a|b", "a~b", "a!b", "a$b", "a^b", "`a`", "\xff"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(!valid(bad[i]), "'%s' should be invalid", bad[i]);
	/* an embedded NUL counts: the length given is what is checked */
	ck_assert(!tg_id_valid("a\0b", 3));
	ck_assert(!tg_id_valid("\0", 1));
	ck_assert(tg_id_valid("a\0b", 1));
	ck_assert(!tg_id_valid(NULL, 0));
	ck_assert(!tg_id_valid(NULL, 3));
	ck_assert(!tg_id_valid("abc", 0));
	/* every byte value: only the 62 alphanumerics and ._:@+- pass */
	int n = 0;
	for (int c = 0; c < 256; c++) {
		char s[1] = {(char)c};
		if (tg_id_valid(s, 1)) {
			n++;
			ck_assert(strchr("._:@+-", c) || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
				  (c >= 'A' && c <= 'Z'));
		}
	}
	ck_assert_int_eq(n, 62 + 6);
}
END_TEST

static void check_sid(const char *prefix, const char *id)
{
	size_t pn = strlen(prefix);
	ck_assert_int_eq(strncmp(id, prefix, pn), 0);
	ck_assert_uint_eq(strlen(id), pn + 24);
	for (size_t i = pn; id[i]; i++)
		ck_assert_msg((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'z'), "bad char in '%s'", id);
	/* server-made ids are valid ids too (they appear in paths) */
	ck_assert(tg_id_valid(id, strlen(id)));
}

START_TEST(test_sid_format)
{
	const char *prefixes[] = {"lim_", "whe_", "evt_", "whd_", "rsv_", "txn_", "key_", "ten_", "req_", ""};
	char buf[TG_SID_BUFSZ];
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
		memset(buf, 'Z', sizeof(buf));
		tg_sid_new(prefixes[i], buf);
		check_sid(prefixes[i], buf);
	}
	/* an over-long prefix is cut so the result still fits the buffer */
	char big[TG_SID_BUFSZ + 8];
	memset(big, 'Q', sizeof(big));
	tg_sid_new("a_very_long_prefix_indeed_", big);
	ck_assert_uint_eq(strlen(big), TG_SID_BUFSZ - 1);
	ck_assert_int_eq(big[TG_SID_BUFSZ], 'Q');
}
END_TEST

static int cmp(const void *a, const void *b)
{
	return strcmp((const char *)a, (const char *)b);
}

/* Ordered ids: the same shape; later instants sort later, one instant's ids differ; the instant leads. */
START_TEST(test_sid_ordered)
{
	const int64_t instants[] = {0, 1, 35, 36, 1732280000123, 1732280000124, 1732283600000, 253402300799999};
	char prev[TG_SID_BUFSZ] = "", a[TG_SID_BUFSZ], b[TG_SID_BUFSZ];

	for (size_t i = 0; i < sizeof(instants) / sizeof(instants[0]); i++) {
		tg_sid_ordered("evt_", instants[i], a);
		check_sid("evt_", a);
		ck_assert_msg(strcmp(prev, a) < 0, "'%s' does not sort after '%s'", a, prev);
		tg_sid_ordered("evt_", instants[i], b);
		ck_assert_msg(strncmp(a, b, 4 + 10) == 0 && strcmp(a, b) != 0, "'%s' and '%s' at one instant", a, b);
		memcpy(prev, a, sizeof(prev));
	}
	tg_sid_ordered("evt_", 1732280000123, a);
	ck_assert_int_eq(strncmp(a + 4, "00m3sqsakb", 10), 0); /* 1732280000123 in base 36, 10 digits */
	tg_sid_ordered("evt_", -5, a); /* before the epoch: as the epoch */
	ck_assert_int_eq(strncmp(a + 4, "0000000000", 10), 0);
}
END_TEST

START_TEST(test_sid_unique_and_spread)
{
	enum { N = 20000 };
	char(*ids)[TG_SID_BUFSZ] = malloc(sizeof(*ids) * N);
	int counts[36] = {0};

	for (int i = 0; i < N; i++) {
		tg_sid_new("evt_", ids[i]);
		for (const char *p = ids[i] + 4; *p; p++)
			counts[*p <= '9' ? *p - '0' : *p - 'a' + 10]++;
	}
	qsort(ids, N, sizeof(*ids), cmp);
	for (int i = 1; i < N; i++)
		ck_assert_msg(strcmp(ids[i - 1], ids[i]) != 0, "duplicate id %s", ids[i]);
	/* every character appears, none wildly more than the others (480000 draws, ~13333 each) */
	for (int c = 0; c < 36; c++) {
		ck_assert_int_gt(counts[c], 12000);
		ck_assert_int_lt(counts[c], 14700);
	}
	free(ids);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("ids");
	TCase *tc = tcase_create("ids");

	tcase_add_test(tc, test_valid_ids);
	tcase_add_test(tc, test_invalid_ids);
	tcase_add_test(tc, test_sid_format);
	tcase_add_test(tc, test_sid_unique_and_spread);
	tcase_add_test(tc, test_sid_ordered);
	suite_add_tcase(s, tc);
	return unit_run(s);
}

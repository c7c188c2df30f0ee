/* Unit tests for src/util/time.c: RFC 3339 formatting and parsing, civil dates, integer parsing. */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tollgate/util.h"
#include "unit.h"

static int64_t parse_ok(const char *s)
{
	int64_t ms = 0x7777;
	ck_assert_msg(tg_time_parse(s, &ms) == 0, "'%s' did not parse", s);
	return ms;
}

static const char *fmt(int64_t ms)
{
	static char buf[TG_TIME_BUFSZ];
	size_t n = tg_time_format(ms, buf);
	ck_assert_uint_eq(n, strlen(buf));
	return buf;
}

START_TEST(test_format)
{
	ck_assert_str_eq(fmt(0), "1970-01-01T00:00:00Z");
	ck_assert_str_eq(fmt(999), "1970-01-01T00:00:00Z");
	ck_assert_str_eq(fmt(1000), "1970-01-01T00:00:01Z");
	ck_assert_str_eq(fmt(-1), "1969-12-31T23:59:59Z"); /* floors, never rounds toward zero */
	ck_assert_str_eq(fmt(-1000), "1969-12-31T23:59:59Z");
	ck_assert_str_eq(fmt(-1001), "1969-12-31T23:59:58Z");
	ck_assert_str_eq(fmt(1795316400000LL), "2026-11-22T03:00:00Z");
	ck_assert_str_eq(fmt(951782400000LL), "2000-02-29T00:00:00Z");
	ck_assert_str_eq(fmt(4107542399000LL), "2100-02-28T23:59:59Z");
	ck_assert_str_eq(fmt(4107542400000LL), "2100-03-01T00:00:00Z"); /* 2100 is not a leap year */
	ck_assert_str_eq(fmt(253402300799000LL), "9999-12-31T23:59:59Z");
}
END_TEST

START_TEST(test_format_matches_libc)
{
	/* a day in every week over 600 years, at odd times of day, agrees with gmtime_r */
	for (int64_t s = -2208988800LL; s < 16725225600LL; s += 6 * 86400 + 3607) {
		struct tm tm;
		time_t t = (time_t)s;
		char want[TG_TIME_BUFSZ];
		gmtime_r(&t, &tm);
		strftime(want, sizeof(want), "%Y-%m-%dT%H:%M:%SZ", &tm);
		ck_assert_str_eq(fmt(s * 1000), want);
		ck_assert_int_eq(parse_ok(want), s * 1000);
	}
}
END_TEST

START_TEST(test_parse)
{
	ck_assert_int_eq(parse_ok("1970-01-01T00:00:00Z"), 0);
	ck_assert_int_eq(parse_ok("2026-11-22T03:00:00Z"), 1795316400000LL);
	ck_assert_int_eq(parse_ok("2026-11-22t03:00:00z"), 1795316400000LL);
	ck_assert_int_eq(parse_ok("2026-11-22 03:00:00Z"), 1795316400000LL);
	/* fractions: milliseconds kept, the rest dropped */
	ck_assert_int_eq(parse_ok("1970-01-01T00:00:00.5Z"), 500);
	ck_assert_int_eq(parse_ok("1970-01-01T00:00:00.123Z"), 123);
	ck_assert_int_eq(parse_ok("1970-01-01T00:00:00.123999Z"), 123);
	ck_assert_int_eq(parse_ok("1970-01-01T00:00:00.000000001Z"), 0);
	/* offsets */
	ck_assert_int_eq(parse_ok("2026-11-22T05:00:00+02:00"), 1795316400000LL);
	ck_assert_int_eq(parse_ok("2026-11-21T22:30:00-04:30"), 1795316400000LL);
	ck_assert_int_eq(parse_ok("2026-11-22T03:00:00+00:00"), 1795316400000LL);
	ck_assert_int_eq(parse_ok("2026-11-22T03:00:00-00:00"), 1795316400000LL);
	ck_assert_int_eq(parse_ok("2026-11-22T03:00:00.250+01:00"), 1795316400000LL - 3600000 + 250);
	ck_assert_int_eq(parse_ok("2026-01-01T00:30:00+01:00"), parse_ok("2025-12-31T23:30:00Z"));
	/* leap days */
	ck_assert_int_eq(parse_ok("2024-02-29T00:00:00Z"), 1709164800000LL);
	ck_assert_int_eq(parse_ok("2000-02-29T00:00:00Z"), 951782400000LL);
	ck_assert_int_eq(parse_ok("2024-03-01T00:00:00Z") - parse_ok("2024-02-28T00:00:00Z"), 2 * 86400000LL);
	ck_assert_int_eq(parse_ok("2023-03-01T00:00:00Z") - parse_ok("2023-02-28T00:00:00Z"), 86400000LL);
	/* a leap second is clamped to :59 */
	ck_assert_int_eq(parse_ok("2016-12-31T23:59:60Z"), parse_ok("2016-12-31T23:59:59Z"));
	/* before the epoch */
	ck_assert_int_eq(parse_ok("1969-12-31T23:59:59Z"), -1000);
	/* ret untouched on failure */
	int64_t ms = 42;
	ck_assert_int_eq(tg_time_parse("nope", &ms), -1);
	ck_assert_int_eq(ms, 42);
}
END_TEST

START_TEST(test_parse_invalid)
{
	const char *bad[] = {
		"",
		"2026-11-22",
		"2026-11-22T03:00:00",      /* no zone */
		"2026-11-22T03:00Z",
		"2026-11-22T03:00:00ZZ",
		"2026-11-22T03:00:00Z ",
		" 2026-11-22T03:00:00Z",
		"2026-13-01T00:00:00Z",
		"2026-00-01T00:00:00Z",
		"2026-11-00T00:00:00Z",
		"2026-11-31T00:00:00Z",     /* November has 30 */
		"2026-04-31T00:00:00Z",
		"2023-02-29T00:00:00Z",     /* not a leap year */
		"1900-02-29T00:00:00Z",     /* divisible by 100 */
		"2026-02-30T00:00:00Z",
		"2026-11-22T24:00:00Z",
		"2026-11-22T23:60:00Z",
		"2026-11-22T23:59:61Z",
		"2026-11-22T03:00:00.Z",
		"2026-11-22T03:00:00+2:00",
		"2026-11-22T03:00:00+0200",
		"2026-11-22T03:00:00+24:00",
		"2026-11-22T03:00:00+02:60",
		"2026-11-22T03:00:00+02",
		"2026-11-22X03:00:00Z",
		"2026/11/22T03:00:00Z",
		"26-11-22T03:00:00Z",
		"2026-1-22T03:00:00Z",
		"+2026-11-22T03:00:00Z",
		"2026-11-22T03:00:00.5.5Z",
		"1795316400",
		"2026-11-22T-3:00:00Z",
		"2026-11-22T03:00:00Z\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int64_t ms = 7;
		ck_assert_msg(tg_time_parse(bad[i], &ms) == -1, "'%s' was accepted", bad[i]);
		ck_assert_int_eq(ms, 7);
	}
	int64_t ms;
	ck_assert_int_eq(tg_time_parse(NULL, &ms), -1);
}
END_TEST

START_TEST(test_civil)
{
	ck_assert_int_eq(tg_days_from_civil(1970, 1, 1), 0);
	ck_assert_int_eq(tg_days_from_civil(2000, 3, 1), 11017);
	ck_assert_int_eq(tg_days_from_civil(1969, 12, 31), -1);
	ck_assert_int_eq(tg_days_from_civil(1, 1, 1), -719162);
	for (int64_t z = -800000; z < 800000; z += 37) {
		int64_t y;
		unsigned m, d;
		tg_civil_from_days(z, &y, &m, &d);
		ck_assert(m >= 1 && m <= 12 && d >= 1 && d <= 31);
		ck_assert_int_eq(tg_days_from_civil(y, m, d), z);
	}
}
END_TEST

START_TEST(test_parse_i64)
{
	int64_t v = 5;
	ck_assert(tg_parse_i64("0", 0, 10, &v) && v == 0);
	ck_assert(tg_parse_i64("10", 0, 10, &v) && v == 10);
	ck_assert(!tg_parse_i64("11", 0, 10, &v));
	ck_assert(tg_parse_i64("-5", -10, 10, &v) && v == -5);
	ck_assert(!tg_parse_i64("-5", 0, 10, &v));
	ck_assert(tg_parse_i64("9223372036854775807", INT64_MIN, INT64_MAX, &v) && v == INT64_MAX);
	ck_assert(tg_parse_i64("-9223372036854775808", INT64_MIN, INT64_MAX, &v) && v == INT64_MIN);
	const char *bad[] = {"", "-", "+1", " 1", "1 ", "1a", "0x1", "1.0", "1e3", "9223372036854775808",
			     "-9223372036854775809", "99999999999999999999999", "--1"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = 77;
		ck_assert_msg(!tg_parse_i64(bad[i], INT64_MIN, INT64_MAX, &v), "'%s' was accepted", bad[i]);
		ck_assert_int_eq(v, 77);
	}
	ck_assert(!tg_parse_i64(NULL, 0, 1, &v));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("time");
	TCase *tc = tcase_create("time");

	tcase_add_test(tc, test_format);
	tcase_add_test(tc, test_format_matches_libc);
	tcase_add_test(tc, test_parse);
	tcase_add_test(tc, test_parse_invalid);
	tcase_add_test(tc, test_civil);
	tcase_add_test(tc, test_parse_i64);
	suite_add_tcase(s, tc);
	return unit_run(s);
}

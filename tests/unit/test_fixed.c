/* Unit tests for tollgate/fixed.h: exact parsing, formatting and checked arithmetic of micro-unit quantities. */
#include <check.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/fixed.h"
#include "unit.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Sentinel that no test expects as a result, so "ret untouched on failure" is observable. */
#define SENTINEL INT64_C(0x5EED5EED5EED)

#define M(x) ((tg_fixed)(x) * TG_FIXED_SCALE) /* whole units -> micro-units */

struct parse_case {
    const char *text;
    tg_fixed want;
};

struct status_case {
    const char *text;
    int want;
};

static int parse_s(const char *s, tg_fixed *out)
{
    *out = SENTINEL;
    return tg_fixed_parse(s, strlen(s), out);
}

static tg_fixed must_parse(const char *s)
{
    tg_fixed v;
    int rc = parse_s(s, &v);
    ck_assert_msg(rc == TG_FIXED_OK, "parse(\"%s\") = %d, want OK", s, rc);
    return v;
}

static void check_parse_table(const struct parse_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        tg_fixed v;
        int rc = parse_s(cases[i].text, &v);
        ck_assert_msg(rc == TG_FIXED_OK, "parse(\"%s\") = %d, want OK", cases[i].text, rc);
        ck_assert_msg(v == cases[i].want, "parse(\"%s\") = %" PRId64 ", want %" PRId64, cases[i].text, v,
                      cases[i].want);
    }
}

static void check_status_table(const struct status_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        tg_fixed v;
        int rc = parse_s(cases[i].text, &v);
        ck_assert_msg(rc == cases[i].want, "parse(\"%s\") = %d, want %d", cases[i].text, rc, cases[i].want);
        ck_assert_msg(v == SENTINEL, "parse(\"%s\") touched *ret on failure", cases[i].text);
    }
}

/* Independent formatting oracle built on printf, to cross-check the hand-written formatter. */
static void oracle_format(tg_fixed v, char *buf, size_t size)
{
    uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    int n = snprintf(buf, size, "%s%" PRIu64 ".%06" PRIu64, v < 0 ? "-" : "", mag / 1000000u, mag % 1000000u);
    ck_assert(n > 0 && (size_t)n < size);
    size_t len = (size_t)n;
    while (buf[len - 1] == '0')
        buf[--len] = '\0';
    if (buf[len - 1] == '.')
        buf[--len] = '\0';
}

/* ---- parsing ---------------------------------------------------------------------------------- */

START_TEST(test_parse_plain)
{
    static const struct parse_case cases[] = {
        {"0", 0},
        {"1", M(1)},
        {"3", M(3)},
        {"-3", M(-3)},
        {"10", M(10)},
        {"100", M(100)},
        {"12.5", 12500000},
        {"-12.5", -12500000},
        {"0.1", 100000},
        {"0.000001", 1},
        {"-0.000001", -1},
        {"0.123456", 123456},
        {"123456.654321", INT64_C(123456654321)},
        {"1000000", M(1000000)},
        {"9", M(9)},
        {"42.000001", INT64_C(42000001)},
        {"0.5", 500000},
        {"7.07", 7070000},
    };
    check_parse_table(cases, ARRAY_LEN(cases));
}
END_TEST

START_TEST(test_parse_trailing_zeros)
{
    static const struct parse_case cases[] = {
        {"0.1000000", 100000},
        {"1.50000000000", 1500000},
        {"12.500000", 12500000},
        {"2.0", M(2)},
        {"-2.000000000000000000000000000000", M(-2)},
        {"0.0000010", 1},
        {"0.000001000000000000000000000", 1},
    };
    check_parse_table(cases, ARRAY_LEN(cases));
}
END_TEST

START_TEST(test_parse_postgres_text)
{
    /* What PostgreSQL numeric(…, 6) renders. */
    static const struct parse_case cases[] = {
        {"12.500000", 12500000},
        {"-3", M(-3)},
        {"0.000000", 0},
        {"-0.000000", 0},
        {"8999999999999.999999", TG_FIXED_MAX},
        {"-8999999999999.999999", -TG_FIXED_MAX},
        {"100.000000", M(100)},
        {"0.000001", 1},
    };
    check_parse_table(cases, ARRAY_LEN(cases));
}
END_TEST

START_TEST(test_parse_negative_zero)
{
    static const char *const zeros[] = {
        "0", "-0", "-0.0", "0.0", "0.000000000000000000000", "-0.000000000000000000", "0e0", "-0e0", "0E5",
        "0e999999999", "-0e999999999", "0e-999999999", "0.0e-99999999999999999999", "0.0e99999999999999999999",
        "-0.0E+99999999999999999999999999999999999999",
    };
    for (size_t i = 0; i < ARRAY_LEN(zeros); i++) {
        tg_fixed v;
        ck_assert_msg(parse_s(zeros[i], &v) == TG_FIXED_OK, "parse(\"%s\")", zeros[i]);
        ck_assert_msg(v == 0, "parse(\"%s\") = %" PRId64, zeros[i], v);
        char buf[TG_FIXED_BUFSZ];
        tg_fixed_format(v, buf);
        ck_assert_str_eq(buf, "0");
    }
}
END_TEST

START_TEST(test_parse_exponents)
{
    static const struct parse_case cases[] = {
        {"1.5e3", M(1500)},
        {"1E+2", M(100)},
        {"1e2", M(100)},
        {"1e+0", M(1)},
        {"1e-0", M(1)},
        {"1500e-3", 1500000},
        {"123456e-6", 123456},
        {"-123456e-6", -123456},
        {"1e-6", 1},
        {"-1e-6", -1},
        {"1E-6", 1},
        {"10e-7", 1},
        {"100000000e-14", 1},
        {"0.0000001e1", 1},
        {"0.00000000001e5", 1},
        {"2.5e-5", 25},
        {"1e12", M(1000000000000)},
        {"8.999999999999999999e12", TG_FIXED_MAX},
        {"-8.999999999999999999E+12", -TG_FIXED_MAX},
        {"8999999999999999999e-6", TG_FIXED_MAX},
        {"0.8999999999999999999e13", TG_FIXED_MAX},
        {"12.5e0", 12500000},
        {"125e-1", 12500000},
        {"0.125e2", 12500000},
        {"1e0000000000000000000000000000000000000000000000000000000000001", M(10)},
        {"1e-0000000000000000000000000000000000000000000000000000000000006", 1},
        {"1000000000000000000000000e-24", M(1)},
        {"5e-1", 500000},
        {"1.1234567e1", INT64_C(11234567)}, /* 7 fractional digits in the text, 6 after the exponent */
        {"-1.1234567e1", INT64_C(-11234567)},
        {"0.000000000000000000000000000001e30", M(1)},
    };
    check_parse_table(cases, ARRAY_LEN(cases));
}
END_TEST

START_TEST(test_parse_syntax_errors)
{
    static const struct status_case cases[] = {
        {"", TG_FIXED_ESYNTAX},
        {"-", TG_FIXED_ESYNTAX},
        {"+1", TG_FIXED_ESYNTAX},
        {"+0", TG_FIXED_ESYNTAX},
        {"01", TG_FIXED_ESYNTAX},
        {"00", TG_FIXED_ESYNTAX},
        {"-01", TG_FIXED_ESYNTAX},
        {"00.5", TG_FIXED_ESYNTAX},
        {".5", TG_FIXED_ESYNTAX},
        {"-.5", TG_FIXED_ESYNTAX},
        {"5.", TG_FIXED_ESYNTAX},
        {"5.e3", TG_FIXED_ESYNTAX},
        {"1e", TG_FIXED_ESYNTAX},
        {"1E", TG_FIXED_ESYNTAX},
        {"1e+", TG_FIXED_ESYNTAX},
        {"1e-", TG_FIXED_ESYNTAX},
        {"1e+-1", TG_FIXED_ESYNTAX},
        {"1ee1", TG_FIXED_ESYNTAX},
        {"1e1.5", TG_FIXED_ESYNTAX},
        {"e1", TG_FIXED_ESYNTAX},
        {" 1", TG_FIXED_ESYNTAX},
        {"1 ", TG_FIXED_ESYNTAX},
        {"1\n", TG_FIXED_ESYNTAX},
        {"\t1", TG_FIXED_ESYNTAX},
        {"1 000", TG_FIXED_ESYNTAX},
        {"1,5", TG_FIXED_ESYNTAX},
        {"1_000", TG_FIXED_ESYNTAX},
        {"1.2.3", TG_FIXED_ESYNTAX},
        {"--1", TG_FIXED_ESYNTAX},
        {"- 1", TG_FIXED_ESYNTAX},
        {"NaN", TG_FIXED_ESYNTAX},
        {"nan", TG_FIXED_ESYNTAX},
        {"-NaN", TG_FIXED_ESYNTAX},
        {"Infinity", TG_FIXED_ESYNTAX},
        {"-Infinity", TG_FIXED_ESYNTAX},
        {"inf", TG_FIXED_ESYNTAX},
        {"0x10", TG_FIXED_ESYNTAX},
        {"0X1p3", TG_FIXED_ESYNTAX},
        {"1p3", TG_FIXED_ESYNTAX},
        {"1.5f", TG_FIXED_ESYNTAX},
        {"1L", TG_FIXED_ESYNTAX},
        {"true", TG_FIXED_ESYNTAX},
        {"null", TG_FIXED_ESYNTAX},
        {"\"1\"", TG_FIXED_ESYNTAX},
        {"1e1e1", TG_FIXED_ESYNTAX},
        {"1.", TG_FIXED_ESYNTAX},
        {".", TG_FIXED_ESYNTAX},
        {"-.", TG_FIXED_ESYNTAX},
        {"e", TG_FIXED_ESYNTAX},
        {"\xef\xbc\x91", TG_FIXED_ESYNTAX}, /* fullwidth digit one */
        {"\xd9\xa1", TG_FIXED_ESYNTAX},     /* arabic-indic digit one */
        /* Syntax is checked before anything else, so a bad tail wins over range/precision. */
        {"1e999x", TG_FIXED_ESYNTAX},
        {"0.0000001 ", TG_FIXED_ESYNTAX},
        {"99999999999999999999999 ", TG_FIXED_ESYNTAX},
    };
    check_status_table(cases, ARRAY_LEN(cases));
}
END_TEST

START_TEST(test_parse_precision_errors)
{
    static const struct status_case cases[] = {
        {"0.0000001", TG_FIXED_EPRECISION},
        {"-0.0000001", TG_FIXED_EPRECISION},
        {"0.0000005", TG_FIXED_EPRECISION},
        {"0.0000009", TG_FIXED_EPRECISION},
        {"1.0000001", TG_FIXED_EPRECISION},
        {"0.1234567", TG_FIXED_EPRECISION},
        {"0.00000010", TG_FIXED_EPRECISION},
        {"0.10000000000000000000000000001", TG_FIXED_EPRECISION},
        {"2.5e-6", TG_FIXED_EPRECISION},
        {"1e-7", TG_FIXED_EPRECISION},
        {"15e-7", TG_FIXED_EPRECISION},
        {"1e-300", TG_FIXED_EPRECISION},
        {"-1e-300", TG_FIXED_EPRECISION},
        {"1e-99999999999999999999", TG_FIXED_EPRECISION},
        {"1.5e-99999999999999999999999999999999999999999", TG_FIXED_EPRECISION},
        {"123456789e-7", TG_FIXED_EPRECISION},
        {"8999999999999.9999991", TG_FIXED_EPRECISION},
        /* Below 9e12 in magnitude, so precision is the problem, even though rounding would overflow. */
        {"8999999999999.9999995", TG_FIXED_EPRECISION},
        {"-8999999999999.9999999999", TG_FIXED_EPRECISION},
    };
    check_status_table(cases, ARRAY_LEN(cases));
}
END_TEST

START_TEST(test_parse_range_errors)
{
    static const struct status_case cases[] = {
        {"9000000000000", TG_FIXED_ERANGE},
        {"-9000000000000", TG_FIXED_ERANGE},
        {"9000000000000.0", TG_FIXED_ERANGE},
        {"9000000000000.000000", TG_FIXED_ERANGE},
        {"9000000000000.000001", TG_FIXED_ERANGE},
        {"9000000000001", TG_FIXED_ERANGE},
        {"9223372036854", TG_FIXED_ERANGE}, /* INT64_MAX / 1e6 */
        {"9223372036855", TG_FIXED_ERANGE},
        {"9999999999999.999999", TG_FIXED_ERANGE},
        {"10000000000000", TG_FIXED_ERANGE},
        {"1e13", TG_FIXED_ERANGE},
        {"9e12", TG_FIXED_ERANGE},
        {"-9e12", TG_FIXED_ERANGE},
        {"9.000000000000000001e12", TG_FIXED_ERANGE},
        {"90000000000000e-1", TG_FIXED_ERANGE},
        {"1e300", TG_FIXED_ERANGE},
        {"-1e300", TG_FIXED_ERANGE},
        {"1E+300", TG_FIXED_ERANGE},
        {"12345678901234567890", TG_FIXED_ERANGE},
        {"-12345678901234567890", TG_FIXED_ERANGE},
        {"18446744073709551616", TG_FIXED_ERANGE}, /* 2^64: would wrap a naive uint64 accumulator */
        {"18446744073709551616e-6", TG_FIXED_ERANGE},
        {"18446744073709551616000000e-12", TG_FIXED_ERANGE},
        {"1e99999999999999999999", TG_FIXED_ERANGE},
        {"-1e99999999999999999999", TG_FIXED_ERANGE},
        {"0.0001e99999999999999999999999999999999999999999999999999", TG_FIXED_ERANGE},
        {"123456789012345678901234567890123456789012345678901234567890", TG_FIXED_ERANGE},
        /* Exponent that would wrap int32/int64 if accumulated naively back into a small value. */
        {"1e4294967296", TG_FIXED_ERANGE},
        {"1e18446744073709551617", TG_FIXED_ERANGE},
        {"1e9223372036854775808", TG_FIXED_ERANGE},
    };
    check_status_table(cases, ARRAY_LEN(cases));
}
END_TEST

START_TEST(test_parse_range_beats_precision)
{
    /* Documented decision: when both fail, ERANGE — dropping digits cannot make these fit. */
    static const struct status_case cases[] = {
        {"12345678901234567890.0000001", TG_FIXED_ERANGE},
        {"-12345678901234567890.0000001", TG_FIXED_ERANGE},
        {"9000000000000.0000001", TG_FIXED_ERANGE},
        {"-9000000000000.0000001", TG_FIXED_ERANGE},
        {"9000000000000.00000000000000000000001", TG_FIXED_ERANGE},
        {"1.0000000000000000000000000000001e20", TG_FIXED_ERANGE},
        {"1.00000000000000000000000000000000000000001e13", TG_FIXED_ERANGE},
        {"10000000000000.0000001", TG_FIXED_ERANGE},
        {"9999999999999.9999999", TG_FIXED_ERANGE},
        /* The boundary is the magnitude 9e12: just below it, precision is the failure. */
        {"8999999999999.9999999", TG_FIXED_EPRECISION},
        {"8999999999999.9999995", TG_FIXED_EPRECISION},
    };
    check_status_table(cases, ARRAY_LEN(cases));
}
END_TEST

START_TEST(test_parse_boundaries)
{
    ck_assert_int_eq(must_parse("8999999999999.999999"), TG_FIXED_MAX);
    ck_assert_int_eq(must_parse("-8999999999999.999999"), -TG_FIXED_MAX);
    ck_assert_int_eq(must_parse("8999999999999"), M(8999999999999));
    ck_assert_int_eq(must_parse("-8999999999999"), M(-8999999999999));
    ck_assert_int_eq(must_parse("8999999999999.9999990000"), TG_FIXED_MAX);

    tg_fixed v;
    ck_assert_int_eq(parse_s("9000000000000", &v), TG_FIXED_ERANGE);
    ck_assert_int_eq(v, SENTINEL);
    ck_assert_int_eq(parse_s("-9000000000000", &v), TG_FIXED_ERANGE);
    ck_assert_int_eq(v, SENTINEL);
    ck_assert_int_eq(parse_s("0.0000001", &v), TG_FIXED_EPRECISION);
    ck_assert_int_eq(parse_s("0.000001", &v), TG_FIXED_OK);
    ck_assert_int_eq(v, 1);
}
END_TEST

START_TEST(test_parse_respects_len)
{
    tg_fixed v = SENTINEL;
    const char *s = "12.5abc";
    ck_assert_int_eq(tg_fixed_parse(s, 4, &v), TG_FIXED_OK);
    ck_assert_int_eq(v, 12500000);
    ck_assert_int_eq(tg_fixed_parse(s, 2, &v), TG_FIXED_OK);
    ck_assert_int_eq(v, M(12));
    ck_assert_int_eq(tg_fixed_parse(s, 3, &v), TG_FIXED_ESYNTAX); /* "12." */
    ck_assert_int_eq(tg_fixed_parse(s, 5, &v), TG_FIXED_ESYNTAX); /* "12.5a" */

    /* Lexeme inside a JSON document, not NUL-terminated where it ends. */
    const char *doc = "{\"usage\":1.5e3,\"x\":1}";
    ck_assert_int_eq(tg_fixed_parse(doc + 9, 5, &v), TG_FIXED_OK);
    ck_assert_int_eq(v, M(1500));

    /* An embedded NUL is not a terminator. */
    const char nul[] = {'1', '\0', '2'};
    v = SENTINEL;
    ck_assert_int_eq(tg_fixed_parse(nul, sizeof nul, &v), TG_FIXED_ESYNTAX);
    ck_assert_int_eq(v, SENTINEL);

    /* Not-NUL-terminated buffer: must not read past len (ASan would catch it). */
    char *heap = malloc(3);
    ck_assert_ptr_nonnull(heap);
    memcpy(heap, "7e1", 3);
    ck_assert_int_eq(tg_fixed_parse(heap, 3, &v), TG_FIXED_OK);
    ck_assert_int_eq(v, M(70));
    memcpy(heap, "7e-", 3);
    ck_assert_int_eq(tg_fixed_parse(heap, 3, &v), TG_FIXED_ESYNTAX);
    memcpy(heap, "-0.", 3);
    ck_assert_int_eq(tg_fixed_parse(heap, 3, &v), TG_FIXED_ESYNTAX);
    free(heap);

    ck_assert_int_eq(tg_fixed_parse("1", 0, &v), TG_FIXED_ESYNTAX);
    ck_assert_int_eq(tg_fixed_parse(NULL, 0, &v), TG_FIXED_ESYNTAX);
}
END_TEST

START_TEST(test_parse_cstr)
{
    tg_fixed v = SENTINEL;
    ck_assert_int_eq(tg_fixed_parse_cstr("12.5", &v), TG_FIXED_OK);
    ck_assert_int_eq(v, 12500000);
    v = SENTINEL;
    ck_assert_int_eq(tg_fixed_parse_cstr("", &v), TG_FIXED_ESYNTAX);
    ck_assert_int_eq(tg_fixed_parse_cstr(NULL, &v), TG_FIXED_ESYNTAX);
    ck_assert_int_eq(tg_fixed_parse_cstr("1e13", &v), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_parse_cstr("1e-7", &v), TG_FIXED_EPRECISION);
    ck_assert_int_eq(v, SENTINEL);
    /* ret may be NULL to validate only. */
    ck_assert_int_eq(tg_fixed_parse_cstr("3", NULL), TG_FIXED_OK);
    ck_assert_int_eq(tg_fixed_parse_cstr("x", NULL), TG_FIXED_ESYNTAX);
}
END_TEST

START_TEST(test_parse_long_inputs)
{
    /* Thousands of digits: positions must be tracked without overflow or quadratic tricks. */
    enum { Z = 5000 };
    static char buf[2 * Z + 64];
    tg_fixed v;

    /* "0." + Z zeros + "1" -> EPRECISION; with exponent e(Z+1) -> exactly 1. */
    size_t n = 0;
    buf[n++] = '0';
    buf[n++] = '.';
    memset(buf + n, '0', Z);
    n += Z;
    buf[n++] = '1';
    buf[n] = '\0';
    ck_assert_int_eq(parse_s(buf, &v), TG_FIXED_EPRECISION);
    n += (size_t)snprintf(buf + n, sizeof buf - n, "e%d", Z + 1);
    ck_assert_int_eq(parse_s(buf, &v), TG_FIXED_OK);
    ck_assert_int_eq(v, M(1));

    /* "1" + Z zeros -> ERANGE; "e-Z" brings it back to 1; "e-(Z+6)" to 0.000001. */
    n = 0;
    buf[n++] = '1';
    memset(buf + n, '0', Z);
    n += Z;
    buf[n] = '\0';
    ck_assert_int_eq(parse_s(buf, &v), TG_FIXED_ERANGE);
    size_t base = n;
    snprintf(buf + base, sizeof buf - base, "e-%d", Z);
    ck_assert_int_eq(parse_s(buf, &v), TG_FIXED_OK);
    ck_assert_int_eq(v, M(1));
    snprintf(buf + base, sizeof buf - base, "e-%d", Z + 6);
    ck_assert_int_eq(parse_s(buf, &v), TG_FIXED_OK);
    ck_assert_int_eq(v, 1);
    snprintf(buf + base, sizeof buf - base, "e-%d", Z + 7);
    ck_assert_int_eq(parse_s(buf, &v), TG_FIXED_EPRECISION);

    /* "1." + Z zeros: trailing zeros only. */
    n = 0;
    buf[n++] = '1';
    buf[n++] = '.';
    memset(buf + n, '0', Z);
    n += Z;
    buf[n] = '\0';
    ck_assert_int_eq(parse_s(buf, &v), TG_FIXED_OK);
    ck_assert_int_eq(v, M(1));

    /* Z digits of 9 after the point: precision, not range. */
    n = 0;
    buf[n++] = '0';
    buf[n++] = '.';
    memset(buf + n, '9', Z);
    n += Z;
    buf[n] = '\0';
    ck_assert_int_eq(parse_s(buf, &v), TG_FIXED_EPRECISION);

    /* Exponent with thousands of digits. */
    n = 0;
    buf[n++] = '1';
    buf[n++] = 'e';
    buf[n++] = '-';
    memset(buf + n, '9', Z);
    n += Z;
    buf[n] = '\0';
    ck_assert_int_eq(parse_s(buf, &v), TG_FIXED_EPRECISION);
    buf[2] = '+';
    ck_assert_int_eq(parse_s(buf, &v), TG_FIXED_ERANGE);
    buf[0] = '0';
    ck_assert_int_eq(parse_s(buf, &v), TG_FIXED_OK);
    ck_assert_int_eq(v, 0);
}
END_TEST

/* ---- formatting ------------------------------------------------------------------------------- */

START_TEST(test_format_basic)
{
    static const struct {
        tg_fixed v;
        const char *want;
    } cases[] = {
        {0, "0"},
        {M(3), "3"},
        {M(-3), "-3"},
        {12500000, "12.5"},
        {-12500000, "-12.5"},
        {1, "0.000001"},
        {-1, "-0.000001"},
        {10, "0.00001"},
        {100000, "0.1"},
        {-100000, "-0.1"},
        {123456, "0.123456"},
        {1000001, "1.000001"},
        {M(10), "10"},
        {M(1000000), "1000000"},
        {INT64_C(42000010), "42.00001"},
        {INT64_C(999999), "0.999999"},
        {INT64_C(1999999), "1.999999"},
        {TG_FIXED_MAX, "8999999999999.999999"},
        {-TG_FIXED_MAX, "-8999999999999.999999"},
        {M(8999999999999), "8999999999999"},
        {M(-8999999999999), "-8999999999999"},
        /* Out of the quantity range but still formatted without overflow. */
        {INT64_MAX, "9223372036854.775807"},
        {INT64_MIN, "-9223372036854.775808"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char buf[TG_FIXED_BUFSZ];
        memset(buf, 'X', sizeof buf);
        size_t n = tg_fixed_format(cases[i].v, buf);
        ck_assert_str_eq(buf, cases[i].want);
        ck_assert_uint_eq(n, strlen(cases[i].want));
        ck_assert_uint_lt(n, TG_FIXED_BUFSZ);
    }
}
END_TEST

START_TEST(test_format_out_of_range_rejected_by_parser)
{
    char buf[TG_FIXED_BUFSZ];
    tg_fixed v;
    tg_fixed_format(INT64_MAX, buf);
    ck_assert_int_eq(parse_s(buf, &v), TG_FIXED_ERANGE);
    tg_fixed_format(INT64_MIN, buf);
    ck_assert_int_eq(parse_s(buf, &v), TG_FIXED_ERANGE);
    tg_fixed_format(TG_FIXED_MAX + 1, buf);
    ck_assert_str_eq(buf, "9000000000000");
    ck_assert_int_eq(parse_s(buf, &v), TG_FIXED_ERANGE);
}
END_TEST

START_TEST(test_format_never_negative_zero)
{
    char buf[TG_FIXED_BUFSZ];
    tg_fixed zero = must_parse("-0.000000");
    ck_assert_uint_eq(tg_fixed_format(zero, buf), 1);
    ck_assert_str_eq(buf, "0");
    tg_fixed r;
    ck_assert_int_eq(tg_fixed_mul(-1, 400000, &r), TG_FIXED_OK); /* -0.0000004 rounds to 0 */
    tg_fixed_format(r, buf);
    ck_assert_str_eq(buf, "0");
    ck_assert_int_eq(tg_fixed_sub(5, 5, &r), TG_FIXED_OK);
    tg_fixed_format(r, buf);
    ck_assert_str_eq(buf, "0");
}
END_TEST

START_TEST(test_round_trip_table)
{
    static const char *const texts[] = {
        "0", "1", "-1", "0.000001", "-0.000001", "12.5", "-12.5", "3", "0.1", "0.2", "0.3", "0.999999",
        "1.000001", "123456789.123456", "-987654321.654321", "8999999999999.999999", "-8999999999999.999999",
        "8999999999999", "1000000000000", "0.05", "100", "7.000007", "4503599627370.496", /* 2^52 micro-units */
    };
    for (size_t i = 0; i < ARRAY_LEN(texts); i++) {
        tg_fixed v;
        ck_assert_int_eq(parse_s(texts[i], &v), TG_FIXED_OK);
        char buf[TG_FIXED_BUFSZ];
        tg_fixed_format(v, buf);
        ck_assert_str_eq(buf, texts[i]); /* these are already in shortest form */
        tg_fixed back;
        ck_assert_int_eq(parse_s(buf, &back), TG_FIXED_OK);
        ck_assert_int_eq(back, v);
    }
    /* Non-canonical spellings normalise to the shortest form. */
    static const struct {
        const char *in, *out;
    } canon[] = {
        {"12.500000", "12.5"}, {"-0.0", "0"},       {"1.5e3", "1500"},    {"1500e-3", "1.5"},
        {"1E+2", "100"},       {"0.1000000", "0.1"}, {"123456e-6", "0.123456"}, {"-3.000", "-3"},
    };
    for (size_t i = 0; i < ARRAY_LEN(canon); i++) {
        char buf[TG_FIXED_BUFSZ];
        tg_fixed_format(must_parse(canon[i].in), buf);
        ck_assert_str_eq(buf, canon[i].out);
    }
}
END_TEST

/* ---- arithmetic ------------------------------------------------------------------------------- */

START_TEST(test_add_exact_decimals)
{
    tg_fixed r, r2;
    ck_assert_int_eq(tg_fixed_add(must_parse("0.1"), must_parse("0.2"), &r), TG_FIXED_OK);
    ck_assert_int_eq(r, must_parse("0.3"));
    ck_assert_int_eq(r, 300000);

    ck_assert_int_eq(tg_fixed_add(must_parse("0.1"), must_parse("0.1"), &r), TG_FIXED_OK);
    ck_assert_int_eq(tg_fixed_add(r, must_parse("0.1"), &r2), TG_FIXED_OK);
    ck_assert_int_eq(r2, must_parse("0.3"));

    /* Ten times 0.1 is exactly 1. */
    tg_fixed acc = 0;
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(tg_fixed_add(acc, must_parse("0.1"), &acc), TG_FIXED_OK);
    ck_assert_int_eq(acc, M(1));

    ck_assert_int_eq(tg_fixed_sub(must_parse("0.3"), must_parse("0.1"), &r), TG_FIXED_OK);
    ck_assert_int_eq(r, must_parse("0.2"));
    ck_assert_int_eq(tg_fixed_sub(must_parse("1"), must_parse("0.000001"), &r), TG_FIXED_OK);
    ck_assert_int_eq(r, must_parse("0.999999"));
    ck_assert_int_eq(tg_fixed_sub(0, must_parse("12.5"), &r), TG_FIXED_OK);
    ck_assert_int_eq(r, must_parse("-12.5"));
}
END_TEST

START_TEST(test_add_sub_range)
{
    tg_fixed r = SENTINEL;
    ck_assert_int_eq(tg_fixed_add(TG_FIXED_MAX, 0, &r), TG_FIXED_OK);
    ck_assert_int_eq(r, TG_FIXED_MAX);
    ck_assert_int_eq(tg_fixed_add(TG_FIXED_MAX - 1, 1, &r), TG_FIXED_OK);
    ck_assert_int_eq(r, TG_FIXED_MAX);
    ck_assert_int_eq(tg_fixed_add(-TG_FIXED_MAX, TG_FIXED_MAX, &r), TG_FIXED_OK);
    ck_assert_int_eq(r, 0);

    r = SENTINEL;
    ck_assert_int_eq(tg_fixed_add(TG_FIXED_MAX, 1, &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_add(-TG_FIXED_MAX, -1, &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_add(TG_FIXED_MAX, TG_FIXED_MAX, &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_add(-TG_FIXED_MAX, -TG_FIXED_MAX, &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_sub(TG_FIXED_MAX, -1, &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_sub(-TG_FIXED_MAX, 1, &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_sub(TG_FIXED_MAX, -TG_FIXED_MAX, &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_sub(-TG_FIXED_MAX, TG_FIXED_MAX, &r), TG_FIXED_ERANGE);
    /* Garbage (out-of-range) operands must not overflow int64 either. */
    ck_assert_int_eq(tg_fixed_add(INT64_MAX, INT64_MAX, &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_add(INT64_MIN, INT64_MIN, &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_sub(INT64_MIN, INT64_MAX, &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_sub(0, INT64_MIN, &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(r, SENTINEL);

    ck_assert_int_eq(tg_fixed_sub(TG_FIXED_MAX, 1, &r), TG_FIXED_OK);
    ck_assert_int_eq(r, TG_FIXED_MAX - 1);
    ck_assert_int_eq(tg_fixed_sub(-TG_FIXED_MAX + 1, 1, &r), TG_FIXED_OK);
    ck_assert_int_eq(r, -TG_FIXED_MAX);
    /* An out-of-range operand brought back into range is accepted: only the result is checked. */
    ck_assert_int_eq(tg_fixed_add(TG_FIXED_MAX + 1, -1, &r), TG_FIXED_OK);
    ck_assert_int_eq(r, TG_FIXED_MAX);
}
END_TEST

START_TEST(test_mul_rounding)
{
    /* A "want" that is itself out of range means the product must be ERANGE. */
    static const struct {
        const char *a, *b, *want;
    } cases[] = {
        {"0.000001", "0.5", "0.000001"},   /* exactly half: away from zero */
        {"-0.000001", "0.5", "-0.000001"}, /* and symmetric for negatives */
        {"0.000001", "-0.5", "-0.000001"},
        {"-0.000001", "-0.5", "0.000001"},
        {"0.000001", "0.4", "0"},
        {"-0.000001", "0.4", "0"},
        {"0.000001", "0.499999", "0"},
        {"0.000001", "0.500001", "0.000001"},
        {"0.000001", "0.6", "0.000001"},
        {"-0.000001", "0.6", "-0.000001"},
        {"0.000001", "1.5", "0.000002"},   /* 0.0000015 -> 0.000002 */
        {"-0.000001", "1.5", "-0.000002"},
        {"0.000001", "2.5", "0.000003"},   /* half away from zero, not half-even */
        {"0.000003", "0.5", "0.000002"},
        {"0.000001", "0.000001", "0"},
        {"0.001", "0.0005", "0.000001"},   /* 0.0000005 */
        {"0.001", "0.000499", "0"},
        {"1.5", "2", "3"},
        {"0.1", "0.1", "0.01"},
        {"0.1", "0.2", "0.02"},
        {"12.5", "-3", "-37.5"},
        {"-12.5", "-3", "37.5"},
        {"0", "8999999999999.999999", "0"},
        {"1", "8999999999999.999999", "8999999999999.999999"},
        {"-1", "8999999999999.999999", "-8999999999999.999999"},
        {"1.234567", "7.654321", "9.449772"}, /* 9.449772114007 */
        {"0.333333", "3", "0.999999"},
        {"2.999999", "0.333333", "0.999999"}, /* 0.999998666667 -> 0.999999 */
        {"3000000", "3000000", "9000000000000"},          /* ERANGE */
        {"-3000000", "3000000", "-9000000000000"},        /* ERANGE */
        {"2999999.999999", "3000000", "8999999999997"},
        {"2999999.999999", "3", "8999999.999997"},
        {"0.5", "0.000001", "0.000001"},
        {"1000000", "0.000001", "1"},
        {"8999999999999.999999", "0.5", "4500000000000"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        tg_fixed a = must_parse(cases[i].a), b = must_parse(cases[i].b), r;
        tg_fixed want;
        if (parse_s(cases[i].want, &want) != TG_FIXED_OK) {
            ck_assert_int_eq(tg_fixed_mul(a, b, &r), TG_FIXED_ERANGE);
            continue;
        }
        ck_assert_msg(tg_fixed_mul(a, b, &r) == TG_FIXED_OK, "%s * %s", cases[i].a, cases[i].b);
        ck_assert_msg(r == want, "%s * %s = %" PRId64 ", want %s", cases[i].a, cases[i].b, r, cases[i].want);
        /* Commutative. */
        tg_fixed r2;
        ck_assert_int_eq(tg_fixed_mul(b, a, &r2), TG_FIXED_OK);
        ck_assert_int_eq(r2, r);
    }
}
END_TEST

START_TEST(test_mul_range)
{
    tg_fixed r = SENTINEL;
    ck_assert_int_eq(tg_fixed_mul(M(3000000), M(3000000), &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_mul(M(-3000000), M(3000000), &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_mul(TG_FIXED_MAX, TG_FIXED_MAX, &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_mul(TG_FIXED_MAX, -TG_FIXED_MAX, &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_mul(TG_FIXED_MAX, M(2), &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_mul(INT64_MIN, INT64_MIN, &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_mul(INT64_MAX, M(1), &r), TG_FIXED_ERANGE);
    /* Rounding up past the boundary is a range error too: MAX * 1.0000000... is fine, but
       8999999999999.999999 * 1.000001 overflows. */
    ck_assert_int_eq(tg_fixed_mul(TG_FIXED_MAX, 1000001, &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(r, SENTINEL);

    ck_assert_int_eq(tg_fixed_mul(TG_FIXED_MAX, M(1), &r), TG_FIXED_OK);
    ck_assert_int_eq(r, TG_FIXED_MAX);
    ck_assert_int_eq(tg_fixed_mul(-TG_FIXED_MAX, M(1), &r), TG_FIXED_OK);
    ck_assert_int_eq(r, -TG_FIXED_MAX);
    /* Large operand times a tiny one: the 128-bit product must not be truncated. */
    ck_assert_int_eq(tg_fixed_mul(TG_FIXED_MAX, 1, &r), TG_FIXED_OK);
    ck_assert_int_eq(r, M(9000000)); /* 8999999.999999999999 -> 9000000 */
    ck_assert_int_eq(tg_fixed_mul(TG_FIXED_MAX, 500000, &r), TG_FIXED_OK);
    ck_assert_int_eq(r, INT64_C(4500000000000000000)); /* 4499999999999.9999995 -> 4500000000000 */
    ck_assert_int_eq(tg_fixed_mul(-TG_FIXED_MAX, 500000, &r), TG_FIXED_OK);
    ck_assert_int_eq(r, INT64_C(-4500000000000000000));
}
END_TEST

START_TEST(test_from_int)
{
    tg_fixed r = SENTINEL;
    ck_assert_int_eq(tg_fixed_from_int(0, &r), TG_FIXED_OK);
    ck_assert_int_eq(r, 0);
    ck_assert_int_eq(tg_fixed_from_int(3, &r), TG_FIXED_OK);
    ck_assert_int_eq(r, must_parse("3"));
    ck_assert_int_eq(tg_fixed_from_int(-3, &r), TG_FIXED_OK);
    ck_assert_int_eq(r, must_parse("-3"));
    ck_assert_int_eq(tg_fixed_from_int(INT64_C(8999999999999), &r), TG_FIXED_OK);
    ck_assert_int_eq(r, must_parse("8999999999999"));
    ck_assert_int_eq(tg_fixed_from_int(INT64_C(-8999999999999), &r), TG_FIXED_OK);
    ck_assert_int_eq(r, must_parse("-8999999999999"));

    r = SENTINEL;
    ck_assert_int_eq(tg_fixed_from_int(INT64_C(9000000000000), &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_from_int(INT64_C(-9000000000000), &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_from_int(INT64_MAX, &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_from_int(INT64_MIN, &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(r, SENTINEL);
}
END_TEST

START_TEST(test_is_whole)
{
    ck_assert(tg_fixed_is_whole(0));
    ck_assert(tg_fixed_is_whole(must_parse("3")));
    ck_assert(tg_fixed_is_whole(must_parse("-3")));
    ck_assert(tg_fixed_is_whole(must_parse("1.000000")));
    ck_assert(tg_fixed_is_whole(must_parse("8999999999999")));
    ck_assert(!tg_fixed_is_whole(must_parse("0.000001")));
    ck_assert(!tg_fixed_is_whole(must_parse("-0.000001")));
    ck_assert(!tg_fixed_is_whole(must_parse("12.5")));
    ck_assert(!tg_fixed_is_whole(TG_FIXED_MAX));
    ck_assert(!tg_fixed_is_whole(-TG_FIXED_MAX));
}
END_TEST

START_TEST(test_to_double)
{
    ck_assert_double_eq(tg_fixed_to_double(0), 0.0);
    ck_assert_double_eq(tg_fixed_to_double(must_parse("12.5")), 12.5);
    ck_assert_double_eq(tg_fixed_to_double(must_parse("-12.5")), -12.5);
    ck_assert_double_eq(tg_fixed_to_double(must_parse("3")), 3.0);
    ck_assert_double_eq_tol(tg_fixed_to_double(1), 1e-6, 1e-18);
    ck_assert_double_eq_tol(tg_fixed_to_double(-1), -1e-6, 1e-18);
    ck_assert_double_eq_tol(tg_fixed_to_double(must_parse("0.1")), 0.1, 1e-15);
    ck_assert_double_eq_tol(tg_fixed_to_double(TG_FIXED_MAX), 8999999999999.999999, 1e-2);
    ck_assert_double_eq_tol(tg_fixed_to_double(-TG_FIXED_MAX), -8999999999999.999999, 1e-2);
    ck_assert_double_eq(tg_fixed_to_double(must_parse("8999999999999")), 8999999999999.0);
}
END_TEST

START_TEST(test_div)
{
    static const struct {
        const char *a, *b, *ceil, *floor;
    } cases[] = {
        {"10", "3", "3.333334", "3.333333"},
        {"-10", "3", "-3.333333", "-3.333334"},
        {"1", "4", "0.25", "0.25"},
        {"-1", "4", "-0.25", "-0.25"},
        {"0", "7", "0", "0"},
        {"0.000001", "2", "0.000001", "0"},
        {"-0.000001", "2", "0", "-0.000001"},
        {"1", "0.000001", "1000000", "1000000"},
        {"12.5", "2.5", "5", "5"},
        {"1", "3", "0.333334", "0.333333"},
        {"2", "3", "0.666667", "0.666666"},
        {"100", "0.3", "333.333334", "333.333333"},
        {"8999999999999.999999", "1", "8999999999999.999999", "8999999999999.999999"},
        {"-8999999999999.999999", "1", "-8999999999999.999999", "-8999999999999.999999"},
        {"8999999999999.999999", "8999999999999.999999", "1", "1"},
        {"1", "8999999999999.999999", "0.000001", "0"},
        {"-1", "8999999999999.999999", "0", "-0.000001"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        tg_fixed a = must_parse(cases[i].a), b = must_parse(cases[i].b), r;
        ck_assert_msg(tg_fixed_div_ceil(a, b, &r) == TG_FIXED_OK, "ceil %s / %s", cases[i].a, cases[i].b);
        ck_assert_msg(r == must_parse(cases[i].ceil), "ceil %s / %s = %" PRId64, cases[i].a, cases[i].b, r);
        ck_assert_msg(tg_fixed_div_floor(a, b, &r) == TG_FIXED_OK, "floor %s / %s", cases[i].a, cases[i].b);
        ck_assert_msg(r == must_parse(cases[i].floor), "floor %s / %s = %" PRId64, cases[i].a, cases[i].b, r);
    }

    tg_fixed r = SENTINEL;
    ck_assert_int_eq(tg_fixed_div_ceil(M(1), 0, &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_div_ceil(M(1), -1, &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_div_floor(M(1), 0, &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_div_floor(M(1), M(-2), &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_div_ceil(TG_FIXED_MAX, 1, &r), TG_FIXED_ERANGE);     /* / 0.000001 */
    ck_assert_int_eq(tg_fixed_div_ceil(TG_FIXED_MAX, 999999, &r), TG_FIXED_ERANGE); /* / 0.999999 */
    ck_assert_int_eq(tg_fixed_div_floor(-TG_FIXED_MAX, 500000, &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_div_ceil(INT64_MAX, INT64_C(1), &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(tg_fixed_div_floor(INT64_MIN, INT64_C(1), &r), TG_FIXED_ERANGE);
    ck_assert_int_eq(r, SENTINEL);

    /* ceil(a / b) * b >= a and floor(a / b) * b <= a, with the gap below one micro-unit times b. */
    tg_fixed q, back;
    ck_assert_int_eq(tg_fixed_div_ceil(M(10), M(3), &q), TG_FIXED_OK);
    ck_assert_int_eq(tg_fixed_mul(q, M(3), &back), TG_FIXED_OK);
    ck_assert_int_ge(back, M(10));
}
END_TEST

/* ---- randomized properties -------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* A value in [-MAX, MAX], with magnitudes and trailing zeros spread so that short fractions,
   whole numbers, tiny values and the boundaries all occur often. */
static tg_fixed random_fixed(uint64_t *st)
{
    static const uint64_t p10[] = {1u, 10u, 100u, 1000u, 10000u, 100000u, 1000000u, 10000000u, 100000000u};
    uint64_t span = (uint64_t)TG_FIXED_MAX * 2 + 1;
    uint64_t r = splitmix64(st);
    uint64_t u = splitmix64(st) % span; /* [0, 2*MAX]: shift down without leaving int64 */
    tg_fixed v = u >= (uint64_t)TG_FIXED_MAX ? (tg_fixed)(u - (uint64_t)TG_FIXED_MAX)
                                             : -(tg_fixed)((uint64_t)TG_FIXED_MAX - u);
    switch (r % 8) {
    case 0: /* shrink the magnitude by up to 18 decimal digits */
        v /= (tg_fixed)(p10[(r >> 8) % 9] * p10[(r >> 16) % 9] * p10[(r >> 24) % 3]);
        break;
    case 1: /* force trailing zeros */
        v -= v % (tg_fixed)p10[(r >> 8) % 9];
        break;
    case 2: /* near a boundary */
        v = TG_FIXED_MAX - (v < 0 ? -(v % 1000) : v % 1000);
        if (r & 0x100)
            v = -v;
        break;
    case 3: /* small */
        v %= 10000000;
        break;
    default:
        break;
    }
    return v;
}

/* Writes |v| * 10^6 as an integer digit string (no leading zeros; "0" for zero). */
static size_t micro_digits(tg_fixed v, char *buf, size_t size)
{
    uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    int n = snprintf(buf, size, "%" PRIu64, mag);
    ck_assert(n > 0 && (size_t)n < size);
    return (size_t)n;
}

/* Several exponent spellings of v, built from the digit string independently of the library. */
static void exponent_form(tg_fixed v, unsigned variant, uint64_t *st, char *out, size_t size)
{
    char d[32];
    size_t n = micro_digits(v, d, sizeof d);
    const char *sign = v < 0 ? "-" : "";
    char e = (splitmix64(st) & 1) ? 'e' : 'E';
    bool plus = splitmix64(st) & 1;
    static const char zeros[] = "0000000000000000000000000000000000000000000000000000000000000000";
    int w;
    switch (variant % 4) {
    case 0: /* integer micro-units: "123456e-6" */
        w = snprintf(out, size, "%s%se-6", sign, d);
        break;
    case 1: { /* normalised scientific "1.23456e-1", trailing zeros of the digits stripped */
        size_t m = n;
        while (m > 1 && d[m - 1] == '0')
            m--;
        long exp10 = (long)n - 1 - 6;
        const char *esign = exp10 >= 0 ? (plus ? "+" : "") : "";
        if (m == 1)
            w = snprintf(out, size, "%s%c%c%s%ld", sign, d[0], e, esign, exp10);
        else
            w = snprintf(out, size, "%s%c.%.*s%c%s%ld", sign, d[0], (int)(m - 1), d + 1, e, esign, exp10);
        break;
    }
    case 2: { /* "0." + z zeros + digits, exponent raised to compensate */
        int z = (int)(splitmix64(st) % 40);
        long exp10 = (long)z + (long)n - 6;
        const char *esign = exp10 >= 0 ? (plus ? "+" : "") : "";
        w = snprintf(out, size, "%s0.%.*s%s%c%s%ld", sign, z, zeros, d, e, esign, exp10);
        break;
    }
    default: { /* digits + k trailing zeros (some as a ".000" fraction), exponent lowered to compensate */
        int k = (int)(splitmix64(st) % 30);
        int f = k == 0 ? 0 : (int)(splitmix64(st) % (unsigned)(k + 1));
        /* Zero has no significant digits to pad: "00" would be a syntax error, so plain "0e-6". */
        if (v == 0 || f == 0)
            w = snprintf(out, size, "%s%s%.*s%c-%d", sign, d, v == 0 ? 0 : k, zeros, e, 6 + (v == 0 ? 0 : k));
        else
            w = snprintf(out, size, "%s%s%.*s.%.*s%c-%d", sign, d, k - f, zeros, f, zeros, e, 6 + k - f);
        break;
    }
    }
    ck_assert(w > 0 && (size_t)w < size);
}

START_TEST(test_property_round_trip)
{
    uint64_t st = UINT64_C(0x746F6C6C67617465); /* fixed seed: failures reproduce */
    for (int i = 0; i < 100000; i++) {
        tg_fixed v = random_fixed(&st);
        ck_assert(v >= -TG_FIXED_MAX && v <= TG_FIXED_MAX);

        char buf[TG_FIXED_BUFSZ], want[64];
        size_t n = tg_fixed_format(v, buf);
        ck_assert_uint_eq(n, strlen(buf));
        oracle_format(v, want, sizeof want);
        ck_assert_msg(strcmp(buf, want) == 0, "format(%" PRId64 ") = \"%s\", want \"%s\"", v, buf, want);

        tg_fixed back = SENTINEL;
        ck_assert_msg(tg_fixed_parse(buf, n, &back) == TG_FIXED_OK, "parse(\"%s\")", buf);
        ck_assert_msg(back == v, "parse(format(%" PRId64 ")) = %" PRId64, v, back);
        ck_assert_int_eq(tg_fixed_is_whole(v), strchr(buf, '.') == NULL);
    }
}
END_TEST

START_TEST(test_property_exponent_forms)
{
    uint64_t st = UINT64_C(0x6669786564);
    for (int i = 0; i < 100000; i++) {
        tg_fixed v = random_fixed(&st);
        char text[160];
        exponent_form(v, (unsigned)i, &st, text, sizeof text);
        tg_fixed back = SENTINEL;
        int rc = tg_fixed_parse_cstr(text, &back);
        ck_assert_msg(rc == TG_FIXED_OK, "parse(\"%s\") = %d for %" PRId64, text, rc, v);
        ck_assert_msg(back == v, "parse(\"%s\") = %" PRId64 ", want %" PRId64, text, back, v);
    }
}
END_TEST

START_TEST(test_property_just_outside)
{
    /* Appending one more non-zero fractional digit always fails: precision below 9e12, never OK. */
    uint64_t st = UINT64_C(0x707265636973);
    for (int i = 0; i < 20000; i++) {
        tg_fixed v = random_fixed(&st);
        char buf[TG_FIXED_BUFSZ + 16];
        size_t n = tg_fixed_format(v, buf);
        const char *dot = strchr(buf, '.');
        size_t dot_at = dot ? (size_t)(dot - buf) : n;
        if (dot == NULL)
            buf[n++] = '.';
        while (n - dot_at - 1 < 6) /* pad to exactly 6 fractional digits */
            buf[n++] = '0';
        buf[n++] = (char)('1' + splitmix64(&st) % 9);
        buf[n] = '\0';
        tg_fixed r = SENTINEL;
        ck_assert_msg(tg_fixed_parse(buf, n, &r) == TG_FIXED_EPRECISION, "parse(\"%s\")", buf);
        ck_assert_int_eq(r, SENTINEL);
    }
}
END_TEST

START_TEST(test_property_arithmetic)
{
    uint64_t st = UINT64_C(0x61726974686d);
    for (int i = 0; i < 50000; i++) {
        tg_fixed a = random_fixed(&st), b = random_fixed(&st), s, d, back;
        __extension__ __int128 exact = (__int128)a + b;
        int rc = tg_fixed_add(a, b, &s);
        if (exact > TG_FIXED_MAX || exact < -TG_FIXED_MAX) {
            ck_assert_int_eq(rc, TG_FIXED_ERANGE);
        } else {
            ck_assert_int_eq(rc, TG_FIXED_OK);
            ck_assert_int_eq(s, a + b);
            ck_assert_int_eq(tg_fixed_sub(s, b, &back), TG_FIXED_OK);
            ck_assert_int_eq(back, a);
        }
        if (tg_fixed_sub(a, b, &d) == TG_FIXED_OK) {
            ck_assert_int_eq(tg_fixed_add(d, b, &back), TG_FIXED_OK);
            ck_assert_int_eq(back, a);
        }

        /* mul: identity, sign symmetry, commutativity. */
        tg_fixed m1, m2, m3;
        ck_assert_int_eq(tg_fixed_mul(a, M(1), &m1), TG_FIXED_OK);
        ck_assert_int_eq(m1, a);
        int rc1 = tg_fixed_mul(a, b, &m1);
        int rc2 = tg_fixed_mul(-a, b, &m2);
        int rc3 = tg_fixed_mul(b, a, &m3);
        ck_assert_int_eq(rc1, rc2);
        ck_assert_int_eq(rc1, rc3);
        if (rc1 == TG_FIXED_OK) {
            ck_assert_int_eq(m2, -m1);
            ck_assert_int_eq(m3, m1);
        }

        /* div: floor <= ceil, differing by at most one micro-unit, exact iff equal. */
        if (b > 0) {
            tg_fixed c, f;
            int rcc = tg_fixed_div_ceil(a, b, &c), rcf = tg_fixed_div_floor(a, b, &f);
            if (rcc == TG_FIXED_OK && rcf == TG_FIXED_OK)
                ck_assert(c == f || c == f + 1);
        }
    }
}
END_TEST

static Suite *fixed_suite(void)
{
    Suite *s = suite_create("fixed");

    TCase *tc = tcase_create("parse");
    tcase_add_test(tc, test_parse_plain);
    tcase_add_test(tc, test_parse_trailing_zeros);
    tcase_add_test(tc, test_parse_postgres_text);
    tcase_add_test(tc, test_parse_negative_zero);
    tcase_add_test(tc, test_parse_exponents);
    tcase_add_test(tc, test_parse_syntax_errors);
    tcase_add_test(tc, test_parse_precision_errors);
    tcase_add_test(tc, test_parse_range_errors);
    tcase_add_test(tc, test_parse_range_beats_precision);
    tcase_add_test(tc, test_parse_boundaries);
    tcase_add_test(tc, test_parse_respects_len);
    tcase_add_test(tc, test_parse_cstr);
    tcase_add_test(tc, test_parse_long_inputs);
    suite_add_tcase(s, tc);

    tc = tcase_create("format");
    tcase_add_test(tc, test_format_basic);
    tcase_add_test(tc, test_format_out_of_range_rejected_by_parser);
    tcase_add_test(tc, test_format_never_negative_zero);
    tcase_add_test(tc, test_round_trip_table);
    suite_add_tcase(s, tc);

    tc = tcase_create("arith");
    tcase_add_test(tc, test_add_exact_decimals);
    tcase_add_test(tc, test_add_sub_range);
    tcase_add_test(tc, test_mul_rounding);
    tcase_add_test(tc, test_mul_range);
    tcase_add_test(tc, test_from_int);
    tcase_add_test(tc, test_is_whole);
    tcase_add_test(tc, test_to_double);
    tcase_add_test(tc, test_div);
    suite_add_tcase(s, tc);

    tc = tcase_create("property");
    tcase_set_timeout(tc, 120); /* 100k iterations under sanitizers */
    tcase_add_test(tc, test_property_round_trip);
    tcase_add_test(tc, test_property_exponent_forms);
    tcase_add_test(tc, test_property_just_outside);
    tcase_add_test(tc, test_property_arithmetic);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return unit_run(fixed_suite());
}

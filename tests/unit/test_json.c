/* Unit tests for src/util/json.c: exact number lexemes, the getters, the dumper, and what the parser rejects. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/json.h"
#include "unit.h"

static json_t *parse(const char *text)
{
	struct tg_error err = {0};
	json_t *v = tg_json_parse(text, strlen(text), false, &err);
	ck_assert_msg(v != NULL, "'%s' did not parse: %s", text, err.message);
	return v;
}

static void expect_reject(const char *text, size_t len, bool top_object)
{
	struct tg_error err = {0};
	json_t *v = tg_json_parse(text, len, top_object, &err);
	ck_assert_msg(v == NULL, "'%.*s' parsed", (int)len, text);
	ck_assert_int_eq(err.err, TG_EINVAL);
	ck_assert_str_eq(err.code, "invalid_json");
	ck_assert_str_eq(err.param, "");
	ck_assert_int_gt(strlen(err.message), 0);
}

static const char *lexeme(const json_t *v)
{
	static char buf[512];
	size_t len;
	const char *t = tg_json_number_text(v, &len);
	ck_assert_msg(t != NULL, "not a number value");
	snprintf(buf, sizeof(buf), "%.*s", (int)len, t);
	return buf;
}

/* parse then dump: the same text */
static void round_trip(const char *text)
{
	json_t *v = parse(text);
	char *out = tg_json_dumps(v);
	ck_assert_str_eq(out, text);
	free(out);
	json_decref(v);
}

START_TEST(test_lexemes_kept)
{
	json_t *v = parse("{\"a\":0.30,\"b\":-0,\"c\":1E+2,\"d\":12345678901234567890123,\"e\":2.50e-3,\"f\":7}");
	ck_assert_str_eq(lexeme(json_object_get(v, "a")), "0.30");
	ck_assert_str_eq(lexeme(json_object_get(v, "b")), "-0");
	ck_assert_str_eq(lexeme(json_object_get(v, "c")), "1E+2");
	ck_assert_str_eq(lexeme(json_object_get(v, "d")), "12345678901234567890123");
	ck_assert_str_eq(lexeme(json_object_get(v, "e")), "2.50e-3");
	ck_assert_str_eq(lexeme(json_object_get(v, "f")), "7");
	for (const char *k = "abcdef"; *k; k++) {
		char key[2] = {*k, 0};
		ck_assert(tg_json_is_number(json_object_get(v, key)));
	}
	json_decref(v);
}
END_TEST

/* A check's body, flat: read without jansson's lexer (json.c), to the same tree. */
START_TEST(test_flat_bodies)
{
	json_t *v = parse(" {\n\t\"customer_id\" : \"u_1\", \"amount\":-0.50,\"consume\":true,\"x\":null,\"y\":false } \r\n");
	ck_assert_str_eq(json_string_value(json_object_get(v, "customer_id")), "u_1");
	ck_assert_str_eq(lexeme(json_object_get(v, "amount")), "-0.50");
	ck_assert(json_is_true(json_object_get(v, "consume")));
	ck_assert(json_is_null(json_object_get(v, "x")));
	ck_assert(json_is_false(json_object_get(v, "y")));
	ck_assert_int_eq(json_object_size(v), 5);
	json_decref(v);
	round_trip("{\"customer_id\":\"u_1\",\"meter\":\"tokens\",\"amount\":10,\"consume\":false}");
	round_trip("{}");
	round_trip("{\"customer_id\":\"u_1\",\"dimensions\":{\"model\":\"gpt-4o\"},\"workflow\":{\"id\":\"w\",\"depth\":1},\"e\":{}}");
	round_trip("{\"a\":{\"b\":{\"c\":1.50}},\"d\":[1,{\"e\":null}]}"); /* deeper, arrays: the full parser */
	/* past the flat reader's 40-character numbers and plain strings: the full parser, the same lexemes */
	v = parse("{\"n\":123456789012345678901234567890123456789012345,\"s\":\"caf\u00e9\"}");
	ck_assert_str_eq(lexeme(json_object_get(v, "n")), "123456789012345678901234567890123456789012345");
	ck_assert_str_eq(json_string_value(json_object_get(v, "s")), "caf\xc3\xa9");
	json_decref(v);
}
END_TEST

START_TEST(test_lexemes_in_document_order)
{
	/* strings holding digits, quotes, escapes and minus signs must not shift the numbers */
	json_t *v = parse("{\"s\":\"1, -2 \\\" 3 \\\\\",\"k\\\"9\":4,\"arr\":[5,{\"x\":\"-6\",\"y\":7.0},[8,[9e1]]],"
			  "\"t\":true,\"n\":null,\"f\":false,\"z\":-10.5}");
	ck_assert_str_eq(json_string_value(json_object_get(v, "s")), "1, -2 \" 3 \\");
	ck_assert(!tg_json_is_number(json_object_get(v, "s")));
	ck_assert_str_eq(lexeme(json_object_get(v, "k\"9")), "4");
	json_t *arr = json_object_get(v, "arr");
	ck_assert_str_eq(lexeme(json_array_get(arr, 0)), "5");
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(arr, 1), "x")), "-6");
	ck_assert_str_eq(lexeme(json_object_get(json_array_get(arr, 1), "y")), "7.0");
	ck_assert_str_eq(lexeme(json_array_get(json_array_get(arr, 2), 0)), "8");
	ck_assert_str_eq(lexeme(json_array_get(json_array_get(json_array_get(arr, 2), 1), 0)), "9e1");
	ck_assert_str_eq(lexeme(json_object_get(v, "z")), "-10.5");
	json_decref(v);
}
END_TEST

START_TEST(test_many_numbers)
{
	/* 2000 numbers of assorted shapes in nested containers, each read back as written */
	char *text = malloc(200000), *p = text;
	char want[2000][40];
	p += sprintf(p, "{\"list\":[");
	for (int i = 0; i < 2000; i++) {
		switch (i % 5) {
		case 0: snprintf(want[i], 40, "%d", i * 7919 - 5000); break;
		case 1: snprintf(want[i], 40, "%d.%03d", i, i % 1000); break;
		case 2: snprintf(want[i], 40, "-%de-%d", i, i % 9); break;
		case 3: snprintf(want[i], 40, "%d00000000000000000000", i + 1); break;
		default: snprintf(want[i], 40, "0.%06d", i); break;
		}
		if (i % 3 == 0)
			p += sprintf(p, "%s{\"k%d\":\"v%d\",\"n\":%s}", i ? "," : "", i, i, want[i]);
		else
			p += sprintf(p, "%s%s", i ? "," : "", want[i]);
	}
	sprintf(p, "]}");
	json_t *v = parse(text);
	json_t *list = json_object_get(v, "list");
	ck_assert_uint_eq(json_array_size(list), 2000);
	for (int i = 0; i < 2000; i++) {
		json_t *e = json_array_get(list, (size_t)i);
		if (i % 3 == 0)
			e = json_object_get(e, "n");
		ck_assert_str_eq(lexeme(e), want[i]);
	}
	char *out = tg_json_dumps(v);
	ck_assert_str_eq(out, text);
	free(out);
	json_decref(v);
	free(text);
}
END_TEST

START_TEST(test_utf8_valid)
{
	static const char *const good[] = {"", "abc", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf",
					   "\xed\x9f\xbf"};
	static const char *const bad[] = {"\xff", "\xc3", "a\xc3(", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80",
					  "\xf4\x90\x80\x80", "\xf8\x88\x80\x80\x80", "\x80", "\xe2\x82"};
	for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++)
		ck_assert_msg(tg_utf8_valid(good[i], strlen(good[i])), "good[%zu] refused", i);
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
		ck_assert_msg(!tg_utf8_valid(bad[i], strlen(bad[i])), "bad[%zu] accepted", i);
}
END_TEST

START_TEST(test_top_level)
{
	json_t *v = parse("42.50");
	ck_assert_str_eq(lexeme(v), "42.50");
	json_decref(v);
	v = parse("\"s\"");
	ck_assert_str_eq(json_string_value(v), "s");
	json_decref(v);
	v = parse("[1, 2]");
	ck_assert_str_eq(lexeme(json_array_get(v, 1)), "2");
	json_decref(v);
	v = parse("null");
	ck_assert(json_is_null(v));
	json_decref(v);
	/* a request body must be an object */
	expect_reject("[1]", 3, true);
	expect_reject("1", 1, true);
	expect_reject("\"x\"", 3, true);
	expect_reject("null", 4, true);
	expect_reject("", 0, true);
	expect_reject("", 0, false);
	/* a NUL byte, which jansson 2.14 skips after a number or literal (found by tests/fuzz/fuzz_json) */
	expect_reject("{\"a\":1\0}", 8, true);
	expect_reject("[true\0]", 7, false);
	expect_reject("0\0", 2, false);
	struct tg_error err = {0};
	v = tg_json_parse("{}", 2, true, &err);
	ck_assert_ptr_nonnull(v);
	json_decref(v);
}
END_TEST

START_TEST(test_rejects)
{
	const char *bad[] = {
		"{",
		"}",
		"{\"a\":}",
		"{\"a\":1,}",
		"{'a':1}",
		"{\"a\":1} x",
		"{\"a\":1}{}",
		"{\"a\":01}",
		"{\"a\":.5}",
		"{\"a\":5.}",
		"{\"a\":+5}",
		"{\"a\":-}",
		"{\"a\":1e}",
		"{\"a\":NaN}",
		"{\"a\":Infinity}",
		"{\"a\":0x1F}",
		"{\"a\":tru}",
		"{\"a\":\"\\x41\"}",
		"{\"a\":\"\\u12\"}",
		"{\"a\":\"tab\there\"}",
		"{\"a\":\"\\ud800\"}",
		"{\"a\":1 /* c */}",
		"{\"a\":1e400.5}",
		"{\"a\":--1e400}",
		"{\"a\":1e400 1}",
		"{\"a\":truex}",
		"{\"a\":{\"b\":1,\"b\":2}}",
		"{\"a\":{\"b\":1}",
		"{\"a\":{\"b\":1}}}",
		"{\"a\":{\"b\" 1}}",
		"{\"a\":nul}",
		"{\"a\":1 \"b\":2}",
		"{\"a\" 1}",
		"{\"a\":1,\"b\"}",
		"{\"a\":1",
		"{\"a\":\"open}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_reject(bad[i], strlen(bad[i]), true);
}
END_TEST

START_TEST(test_duplicate_keys)
{
	const char *t = "{\"a\":1,\"a\":2}";
	expect_reject(t, strlen(t), true);
	t = "{\"x\":{\"b\":1,\"b\":1}}";
	expect_reject(t, strlen(t), true);
	t = "[{\"k\":\"v\",\"k\":\"v\"}]";
	expect_reject(t, strlen(t), false);
	/* same key in different objects is fine */
	json_t *v = parse("{\"a\":{\"a\":1},\"b\":{\"a\":2}}");
	json_decref(v);
}
END_TEST

START_TEST(test_invalid_utf8_and_nul)
{
	const char *bad[] = {
		"{\"a\":\"\xff\"}",          /* never valid */
		"{\"a\":\"\xc3\"}",          /* truncated sequence */
		"{\"a\":\"\xc0\xaf\"}",      /* overlong '/' */
		"{\"a\":\"\xed\xa0\x80\"}",  /* a UTF-16 surrogate */
		"{\"a\":\"\xf4\x90\x80\x80\"}", /* beyond U+10FFFF */
		"{\"\xff\":1}",              /* in a key */
		"{\"a\":\"\\u0000\"}",       /* NUL: would make a string look like a number value */
		"{\"a\":\"x\\u0000\"}",
		"{\"\\u0000\":1}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_reject(bad[i], strlen(bad[i]), true);
	/* a raw NUL byte inside the text */
	expect_reject("{\"a\":\"x\0y\"}", 11, true);
	expect_reject("{\"a\":1}\0", 8, true);
	/* valid multi-byte text is fine */
	json_t *v = parse("{\"a\":\"caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80 \\u00e9\"}");
	ck_assert_str_eq(json_string_value(json_object_get(v, "a")), "caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80 \xc3\xa9");
	json_decref(v);
}
END_TEST

/* Numbers PostgreSQL's numeric could not store are refused at parse time, naming where they are. */
static void expect_out_of_range(const char *text, const char *param)
{
	struct tg_error err = {0};
	json_t *v = tg_json_parse(text, strlen(text), false, &err);
	ck_assert_msg(v == NULL, "'%s' parsed", text);
	ck_assert_int_eq(err.err, TG_EINVAL);
	ck_assert_str_eq(err.code, "invalid_parameter");
	ck_assert_str_eq(err.param, param);
}

START_TEST(test_unstorable_numbers)
{
	expect_out_of_range("{\"a\":1e-20000}", "a");
	expect_out_of_range("{\"a\":0e-99999}", "a");
	expect_out_of_range("{\"a\":-0.0e-1001}", "a");
	expect_out_of_range("{\"a\":1e-99999999999999999999999}", "a");
	expect_out_of_range("{\"m\":{\"x\":[1,2,{\"y\":1.5e-1000}]}}", "m.x.2.y");
	expect_out_of_range("{\"events\":[{\"properties\":{\"n\":1}},{\"properties\":{\"n\":1e-5000}}]}",
			    "events.1.properties.n");
	expect_out_of_range("[0, 1e-2000]", "1");
	expect_out_of_range("1e-2000", "");
	/* beyond a double jansson would refuse the whole document; here it is the field's error */
	expect_out_of_range("{\"a\":1e1001}", "a");
	expect_out_of_range("{\"a\":-1e99999999999999999999}", "a");
	char *wide = malloc(1200);
	strcpy(wide, "{\"w\":");
	memset(wide + 5, '7', 1001);
	strcpy(wide + 1006, "}");
	expect_out_of_range(wide, "w");
	free(wide);
	/* 1000 digits after the point is the most */
	char *text = malloc(1200);
	strcpy(text, "{\"a\":0.");
	memset(text + strlen(text), '0', 999);
	strcpy(text + strlen("{\"a\":0.") + 999, "1}");
	json_t *v = parse(text);
	json_decref(v);
	text[strlen(text) - 2] = '0';
	strcpy(text + strlen(text) - 1, "1}");
	expect_out_of_range(text, "a");
	free(text);
	/* a deep path is cut to fit, never overrun */
	char deep[600] = "";
	for (int i = 0; i < 40; i++)
		strcat(deep, "{\"abcdef\":");
	strcat(deep, "1e-9999");
	for (int i = 0; i < 40; i++)
		strcat(deep, "}");
	struct tg_error err = {0};
	ck_assert_ptr_null(tg_json_parse(deep, strlen(deep), true, &err));
	ck_assert_str_eq(err.code, "invalid_parameter");
	ck_assert_uint_eq(strlen(err.param), sizeof(err.param) - 1);
	ck_assert_int_eq(strncmp(err.param, "abcdef.abcdef.", 14), 0);
	/* the edges that are fine, and what numeric writes back for them parses again */
	v = parse("{\"a\":1e-1000,\"b\":1e300,\"c\":0e999,\"d\":-1.7976931348623157e308,\"e\":4.9e-324,"
		  "\"f\":1e400,\"g\":-2E+999}");
	ck_assert_str_eq(lexeme(json_object_get(v, "a")), "1e-1000");
	ck_assert_str_eq(lexeme(json_object_get(v, "f")), "1e400");
	ck_assert_str_eq(lexeme(json_object_get(v, "g")), "-2E+999");
	tg_fixed f;
	ck_assert_int_eq(tg_json_get_fixed(json_object_get(v, "f"), &f), TG_FIXED_ERANGE);
	char *dumped = tg_json_dumps(v);
	ck_assert_ptr_nonnull(strstr(dumped, "\"f\":1e400,\"g\":-2E+999}"));
	free(dumped);
	json_decref(v);
	/* what numeric writes back for 1e400: 401 digits */
	char *digits = malloc(500);
	digits[0] = '1';
	memset(digits + 1, '0', 400);
	digits[401] = '\0';
	v = parse(digits);
	ck_assert_str_eq(lexeme(v), digits);
	json_decref(v);
	free(digits);
	char *back = malloc(1100);
	strcpy(back, "0.");
	memset(back + 2, '0', 999);
	strcpy(back + 1001, "1");
	v = parse(back);
	json_decref(v);
	free(back);
}
END_TEST

/* tg_json_stored_len: the dump's length with each number as PostgreSQL's numeric writes it back. */
static void expect_stored(const char *number, const char *as_stored)
{
	char text[128];
	snprintf(text, sizeof(text), "[%s]", number);
	json_t *v = parse(text);
	ck_assert_msg(tg_json_stored_len(v) == strlen(as_stored) + 2, "%s: %zu, want %zu (%s)", number,
		      tg_json_stored_len(v), strlen(as_stored) + 2, as_stored);
	json_decref(v);
}

START_TEST(test_stored_len)
{
	expect_stored("0", "0");
	expect_stored("-0", "0");
	expect_stored("-0.0", "0.0");
	expect_stored("0e5", "0");
	expect_stored("0.00e1", "0.0");
	expect_stored("7", "7");
	expect_stored("-12", "-12");
	expect_stored("1.50", "1.50");
	expect_stored("0.30", "0.30");
	expect_stored("1e3", "1000");
	expect_stored("1E+3", "1000");
	expect_stored("1.0e2", "100");
	expect_stored("1.25e1", "12.5");
	expect_stored("125e-4", "0.0125");
	expect_stored("-12.50e-3", "-0.01250");
	expect_stored("0.5", "0.5");
	expect_stored("123.456e1", "1234.56");
	expect_stored("1e-3", "0.001");
	expect_stored("0.000e-2", "0.00000");
	expect_stored("-0e-3", "0.000");
	expect_stored("-1e-3", "-0.001");

	json_t *v = parse("{\"a\":1e300,\"b\":[1e-3,\"1e300\"],\"c\":{\"d\":2.0}}");
	/* {"a":<301 digits>,"b":[0.001,"1e300"],"c":{"d":2.0}} */
	ck_assert_uint_eq(tg_json_stored_len(v), strlen("{\"a\":,\"b\":[0.001,\"1e300\"],\"c\":{\"d\":2.0}}") + 301);
	json_decref(v);
}
END_TEST

START_TEST(test_get_fixed)
{
	tg_fixed f = 0;
	json_t *v = parse("[0.30, 1e-6, 1e-7, 9000000000000, 8999999999999.999999, -2.5, \"3\", true, null, 1e300, -0]");
	ck_assert_int_eq(tg_json_get_fixed(json_array_get(v, 0), &f), TG_FIXED_OK);
	ck_assert_int_eq(f, 300000);
	ck_assert_int_eq(tg_json_get_fixed(json_array_get(v, 1), &f), TG_FIXED_OK);
	ck_assert_int_eq(f, 1);
	ck_assert_int_eq(tg_json_get_fixed(json_array_get(v, 2), &f), TG_FIXED_EPRECISION);
	ck_assert_int_eq(tg_json_get_fixed(json_array_get(v, 3), &f), TG_FIXED_ERANGE);
	ck_assert_int_eq(tg_json_get_fixed(json_array_get(v, 4), &f), TG_FIXED_OK);
	ck_assert_int_eq(f, TG_FIXED_MAX);
	ck_assert_int_eq(tg_json_get_fixed(json_array_get(v, 5), &f), TG_FIXED_OK);
	ck_assert_int_eq(f, -2500000);
	/* strings, booleans and null are not numbers, whatever they look like */
	ck_assert_int_eq(tg_json_get_fixed(json_array_get(v, 6), &f), TG_FIXED_ESYNTAX);
	ck_assert_int_eq(tg_json_get_fixed(json_array_get(v, 7), &f), TG_FIXED_ESYNTAX);
	ck_assert_int_eq(tg_json_get_fixed(json_array_get(v, 8), &f), TG_FIXED_ESYNTAX);
	ck_assert_int_eq(tg_json_get_fixed(json_array_get(v, 9), &f), TG_FIXED_ERANGE);
	ck_assert_int_eq(tg_json_get_fixed(json_array_get(v, 10), &f), TG_FIXED_OK);
	ck_assert_int_eq(f, 0);
	json_decref(v);
	/* numbers our own code built with jansson */
	json_t *i = json_integer(42), *r = json_real(0.5), *big = json_integer(9000000000000LL);
	ck_assert_int_eq(tg_json_get_fixed(i, &f), TG_FIXED_OK);
	ck_assert_int_eq(f, 42 * TG_FIXED_SCALE);
	ck_assert_int_eq(tg_json_get_fixed(r, &f), TG_FIXED_OK);
	ck_assert_int_eq(f, 500000);
	ck_assert_int_eq(tg_json_get_fixed(big, &f), TG_FIXED_ERANGE);
	ck_assert_int_eq(tg_json_get_fixed(NULL, &f), TG_FIXED_ESYNTAX);
	json_decref(i);
	json_decref(r);
	json_decref(big);
}
END_TEST

START_TEST(test_get_i64)
{
	int64_t n = -1;
	json_t *v = parse("[60, 1e3, 1.5, 1.0, -5, 86401, \"60\", 99999999999999999999, 2.5e1, 0.0000001]");
	ck_assert(tg_json_get_i64(json_array_get(v, 0), 1, 86400, &n));
	ck_assert_int_eq(n, 60);
	ck_assert(tg_json_get_i64(json_array_get(v, 1), 1, 86400, &n));
	ck_assert_int_eq(n, 1000);
	ck_assert(!tg_json_get_i64(json_array_get(v, 2), 1, 86400, &n));
	ck_assert(tg_json_get_i64(json_array_get(v, 3), 1, 86400, &n));
	ck_assert_int_eq(n, 1);
	ck_assert(!tg_json_get_i64(json_array_get(v, 4), 1, 86400, &n));
	ck_assert(tg_json_get_i64(json_array_get(v, 4), -10, 10, &n));
	ck_assert_int_eq(n, -5);
	ck_assert(!tg_json_get_i64(json_array_get(v, 5), 1, 86400, &n));
	ck_assert(!tg_json_get_i64(json_array_get(v, 6), 1, 86400, &n));
	ck_assert(!tg_json_get_i64(json_array_get(v, 7), INT64_MIN, INT64_MAX, &n));
	ck_assert(tg_json_get_i64(json_array_get(v, 8), 1, 86400, &n));
	ck_assert_int_eq(n, 25);
	ck_assert(!tg_json_get_i64(json_array_get(v, 9), 0, 86400, &n));
	json_decref(v);
	json_t *i = json_integer(INT64_MAX);
	ck_assert(tg_json_get_i64(i, INT64_MIN, INT64_MAX, &n));
	ck_assert_int_eq(n, INT64_MAX);
	ck_assert(!tg_json_get_i64(i, 0, 100, &n));
	json_decref(i);
	/* whole numbers past a quantity's 9e12 (a test clock's offset in ms) are read exactly */
	v = parse("[9000000000001, 253402300799000, 9223372036854775807, -9223372036854775808, 9223372036854775808, "
		  "-0]");
	ck_assert(tg_json_get_i64(json_array_get(v, 0), 0, INT64_MAX / 2, &n));
	ck_assert_int_eq(n, 9000000000001);
	ck_assert(tg_json_get_i64(json_array_get(v, 1), 0, INT64_MAX / 2, &n));
	ck_assert_int_eq(n, 253402300799000);
	ck_assert(tg_json_get_i64(json_array_get(v, 2), INT64_MIN, INT64_MAX, &n));
	ck_assert_int_eq(n, INT64_MAX);
	ck_assert(!tg_json_get_i64(json_array_get(v, 2), 0, INT64_MAX / 2, &n));
	ck_assert(tg_json_get_i64(json_array_get(v, 3), INT64_MIN, INT64_MAX, &n));
	ck_assert_int_eq(n, INT64_MIN);
	ck_assert(!tg_json_get_i64(json_array_get(v, 4), INT64_MIN, INT64_MAX, &n));
	ck_assert(tg_json_get_i64(json_array_get(v, 5), -1, 1, &n));
	ck_assert_int_eq(n, 0);
	json_decref(v);
}
END_TEST

START_TEST(test_dump_round_trips)
{
	round_trip("{}");
	round_trip("[]");
	round_trip("{\"a\":0.30,\"b\":[1,2.50,-0.000001,1E+2],\"c\":{\"d\":null,\"e\":true,\"f\":false}}");
	round_trip("{\"z\":1,\"a\":2,\"m\":3}"); /* insertion order */
	round_trip("{\"s\":\"quote \\\" backslash \\\\ newline \\n tab \\t cr \\r ctl \\u0001 \\u001f\"}");
	round_trip("{\"u\":\"caf\xc3\xa9 \xe2\x9c\x93\"}");
	round_trip("{\"k\\\"ey\":\"v\"}");
	round_trip("[[[[[[1]]]]]]");
	/* whitespace goes, everything else stays */
	json_t *v = parse(" { \"a\" : [ 1 , 2.0 ] , \"b\" : \"x y\" } ");
	char *out = tg_json_dumps(v);
	ck_assert_str_eq(out, "{\"a\":[1,2.0],\"b\":\"x y\"}");
	free(out);
	json_decref(v);
	/* what our own code builds */
	v = tg_json_obj("i", tg_json_i64(-7), "f", tg_json_fixed(12500000), "w", tg_json_fixed(3000000), "m",
			tg_json_fixed(-1), "n", NULL, "r", json_real(0.25), "t", tg_json_time(0), "s",
			tg_json_str("a\"b"), NULL);
	out = tg_json_dumps(v);
	ck_assert_str_eq(out, "{\"i\":-7,\"f\":12.5,\"w\":3,\"m\":-0.000001,\"n\":null,\"r\":0.25,"
			      "\"t\":\"1970-01-01T00:00:00Z\",\"s\":\"a\\\"b\"}");
	/* and reading it back gives the same numbers */
	struct tg_error err;
	json_t *back = tg_json_parse(out, strlen(out), true, &err);
	tg_fixed f;
	ck_assert_int_eq(tg_json_get_fixed(json_object_get(back, "f"), &f), TG_FIXED_OK);
	ck_assert_int_eq(f, 12500000);
	ck_assert_int_eq(tg_json_get_fixed(json_object_get(back, "m"), &f), TG_FIXED_OK);
	ck_assert_int_eq(f, -1);
	json_decref(back);
	free(out);
	json_decref(v);
	/* reals our code makes are written so that they parse back */
	v = json_array();
	json_array_append_new(v, json_real(1.0 / 3.0));
	out = tg_json_dumps(v);
	back = tg_json_parse(out, strlen(out), false, &err);
	ck_assert_ptr_nonnull(back);
	json_decref(back);
	free(out);
	json_decref(v);
}
END_TEST

START_TEST(test_builders)
{
	json_t *s = tg_json_str("ok \xff bad \xc3");
	ck_assert_ptr_nonnull(s);
	ck_assert_str_eq(json_string_value(s), "ok \xef\xbf\xbd bad \xef\xbf\xbd");
	json_decref(s);
	s = tg_json_str(NULL);
	ck_assert(json_is_null(s));
	json_decref(s);
	/* bytes cut mid-character, overlong forms, surrogates and NULs inside n bytes */
	struct tg_buf b = TG_BUF_INIT;
	tg_buf_add_utf8(&b, "\xe2\x82\xac\xe2\x82", 5);
	ck_assert_str_eq(b.buf, "\xe2\x82\xac\xef\xbf\xbd\xef\xbf\xbd");
	tg_buf_reset(&b);
	tg_buf_add_utf8(&b, "\xc0\xaf|\xed\xa0\x80|\xf4\x90\x80\x80|\xf0\x9f\x98\x80", 16);
	ck_assert_str_eq(b.buf, "\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|"
				"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|\xf0\x9f\x98\x80");
	tg_buf_release(&b);
	s = tg_json_time(-1);
	ck_assert(json_is_null(s));
	json_decref(s);
	s = tg_json_time(1795305600000LL);
	ck_assert_str_eq(json_string_value(s), "2026-11-22T00:00:00Z");
	json_decref(s);
	s = tg_json_fixed(300000);
	ck_assert(tg_json_is_number(s));
	ck_assert_str_eq(lexeme(s), "0.3");
	json_decref(s);
	s = tg_json_fixed(0);
	char *out = tg_json_dumps(s);
	ck_assert_str_eq(out, "0");
	free(out);
	json_decref(s);
	/* a plain empty string is not a number value */
	s = json_string("");
	ck_assert(!tg_json_is_number(s));
	size_t len;
	ck_assert_ptr_null(tg_json_number_text(s, &len));
	json_decref(s);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("json");
	TCase *tc = tcase_create("json");

	tcase_add_test(tc, test_lexemes_kept);
	tcase_add_test(tc, test_lexemes_in_document_order);
	tcase_add_test(tc, test_flat_bodies);
	tcase_add_test(tc, test_many_numbers);
	tcase_add_test(tc, test_top_level);
	tcase_add_test(tc, test_utf8_valid);
	tcase_add_test(tc, test_rejects);
	tcase_add_test(tc, test_duplicate_keys);
	tcase_add_test(tc, test_invalid_utf8_and_nul);
	tcase_add_test(tc, test_unstorable_numbers);
	tcase_add_test(tc, test_stored_len);
	tcase_add_test(tc, test_get_fixed);
	tcase_add_test(tc, test_get_i64);
	tcase_add_test(tc, test_dump_round_trips);
	tcase_add_test(tc, test_builders);
	suite_add_tcase(s, tc);
	return unit_run(s);
}

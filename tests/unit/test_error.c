/* Unit tests for src/util/error.c: every tg_err maps to the HTTP status and error type of API.md. */
#include <check.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/error.h"
#include "unit.h"

static const struct {
	enum tg_err err;
	int status;
	const char *type;
	const char *code; /* the default code when none is given */
} table[] = {
	{TG_EINVAL, 400, "invalid_request", "invalid_request"},
	{TG_ENOTFOUND, 404, "invalid_request", "not_found"},
	{TG_EMETHOD, 405, "invalid_request", "method_not_allowed"},
	{TG_ECONFLICT, 409, "invalid_request", "conflict"},
	{TG_ETOOBIG, 413, "invalid_request", "body_too_large"},
	{TG_EMEDIA, 415, "invalid_request", "unsupported_media_type"},
	{TG_EUNPROCESSABLE, 422, "invalid_request", "unprocessable"},
	{TG_EAUTH, 401, "authentication", "unauthenticated"},
	{TG_EPERM, 403, "permission", "forbidden"},
	{TG_ERATE, 429, "rate_limited", "rate_limited"},
	{TG_EQUOTA, 429, "quota_exceeded", "quota_exceeded"},
	{TG_EBALANCE, 402, "insufficient_balance", "insufficient_balance"},
	{TG_EUNAVAIL, 503, "unavailable", "unavailable"},
	{TG_EINTERNAL, 500, "internal", "internal_error"},
};

START_TEST(test_every_error_mapped)
{
	/* the table above covers every tg_err */
	ck_assert_int_eq(sizeof(table) / sizeof(table[0]), TG_ERR_COUNT_ - 1);
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		ck_assert_int_eq(tg_err_status(table[i].err), table[i].status);
		ck_assert_str_eq(tg_err_type(table[i].err), table[i].type);
		struct tg_error e = {.err = table[i].err, .code = NULL};
		ck_assert_str_eq(tg_err_code(&e), table[i].code);
		e.code = "specific";
		ck_assert_str_eq(tg_err_code(&e), "specific");
	}
}
END_TEST

START_TEST(test_types_match_api)
{
	/* API.md: invalid_request covers 400/404/405/409/413/415/422 and nothing else */
	for (int err = -1; err > -TG_ERR_COUNT_; err--) {
		int st = tg_err_status((enum tg_err)err);
		bool ir = strcmp(tg_err_type((enum tg_err)err), "invalid_request") == 0;
		bool want = st == 400 || st == 404 || st == 405 || st == 409 || st == 413 || st == 415 || st == 422;
		ck_assert_msg(ir == want, "tg_err %d: status %d type %s", err, st, tg_err_type((enum tg_err)err));
		ck_assert_int_ge(st, 400);
		ck_assert_int_le(st, 599);
	}
}
END_TEST

START_TEST(test_unknown_values_are_internal)
{
	int odd[] = {TG_OK, 1, 5, -TG_ERR_COUNT_, -TG_ERR_COUNT_ - 1, -1000, 1000};
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
		ck_assert_int_eq(tg_err_status((enum tg_err)odd[i]), 500);
		ck_assert_str_eq(tg_err_type((enum tg_err)odd[i]), "internal");
	}
}
END_TEST

START_TEST(test_fail_fills)
{
	struct tg_error e;
	memset(&e, 'x', sizeof(e));
	int rc = tg_fail(&e, TG_EINVAL, "invalid_parameter", "ttl", "'%s' must be %d or less", "ttl", 86400);
	ck_assert_int_eq(rc, TG_EINVAL);
	ck_assert_int_eq(e.err, TG_EINVAL);
	ck_assert_str_eq(e.code, "invalid_parameter");
	ck_assert_str_eq(e.param, "ttl");
	ck_assert_str_eq(e.message, "'ttl' must be 86400 or less");
	ck_assert_str_eq(e.detail, "");

	tg_fail(&e, TG_ENOTFOUND, NULL, NULL, "gone");
	ck_assert_ptr_null(e.code);
	ck_assert_str_eq(e.param, "");
	ck_assert_str_eq(tg_err_code(&e), "not_found");

	tg_error_detail(&e, "sqlstate %s", "23505");
	ck_assert_str_eq(e.detail, "sqlstate 23505");
	ck_assert_str_eq(e.message, "gone");

	/* long texts are cut, never overrun */
	char big[2000];
	memset(big, 'm', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	tg_fail(&e, TG_EINVAL, "c", big, "%s", big);
	ck_assert_uint_eq(strlen(e.param), sizeof(e.param) - 1);
	ck_assert_uint_eq(strlen(e.message), sizeof(e.message) - 1);
	tg_error_detail(&e, "%s", big);
	ck_assert_uint_eq(strlen(e.detail), sizeof(e.detail) - 1);

	tg_error_clear(&e);
	ck_assert_int_eq(e.err, TG_OK);
	ck_assert_ptr_null(e.code);
	ck_assert_str_eq(e.param, "");
	ck_assert_str_eq(e.message, "");
	ck_assert_str_eq(e.detail, "");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("error");
	TCase *tc = tcase_create("error");

	tcase_add_test(tc, test_every_error_mapped);
	tcase_add_test(tc, test_types_match_api);
	tcase_add_test(tc, test_unknown_values_are_internal);
	tcase_add_test(tc, test_fail_fills);
	suite_add_tcase(s, tc);
	return unit_run(s);
}

/* test_foundation.c — tenants, keys, tokens, customers, tiers and the HTTP rules, over real HTTP. */
#include <string.h>

#include "harness.h"

static struct srv S;

static void setup(void)
{
	srv_start(&S, NULL);
}

static void teardown(void)
{
	srv_stop(&S);
}

START_TEST(health_and_ready)
{
	struct resp r = req(&S, "GET", "/healthz", NULL, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "status"), "ok");
	ck_assert_ptr_nonnull(resp_header(&r, "X-Request-Id"));
	resp_free(&r);
	r = req(&S, "GET", "/readyz", NULL, NULL, NULL);
	ck_status(r, 200);
	resp_free(&r);
}
END_TEST

START_TEST(tenant_key_tier_customer_walkthrough)
{
	struct tenant t = tenant_new(&S, false);
	struct resp r = req(&S, "POST", "/v1/tiers", t.key, "{\"id\":\"pro\",\"name\":\"Pro\"}", NULL);
	ck_status(r, 201);
	resp_free(&r);
	r = req(&S, "POST", "/v1/customers", t.key, "{\"id\":\"u_28f3a\",\"tier\":\"pro\"}", NULL);
	ck_status(r, 201);
	ck_assert_str_eq(jstr(r.json, "tier"), "pro");
	resp_free(&r);
	r = req(&S, "GET", "/v1/customers?tier=pro", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 1);
	ck_assert_str_eq(jstr(r.json, "data.0.id"), "u_28f3a");
	resp_free(&r);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("foundation");
	TCase *tc = tcase_create("http");

	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, health_and_ready);
	tcase_add_test(tc, tenant_key_tier_customer_walkthrough);
	suite_add_tcase(s, tc);
	return run_suite(s);
}

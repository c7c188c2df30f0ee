/* Unit tests for src/http/router.c: route matching, 404 vs 405 with the allowed methods, path parameters. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/http.h"
#include "unit.h"

#define R(m, p) {.methods = (m), .pattern = (p), .handler = NULL, .scope = TG_SCOPE_PUBLIC, .flags = 0}

static const struct tg_route routes[] = {
	R(TG_GET, "/healthz"),
	R(TG_POST, "/v1/customers"),
	R(TG_GET, "/v1/customers"),
	R(TG_GET, "/v1/customers/{id}"),
	R(TG_PATCH, "/v1/customers/{id}"),
	R(TG_DELETE, "/v1/customers/{id}"),
	R(TG_GET, "/v1/customers/{id}/balance"),
	R(TG_POST, "/v1/customers/{id}/balance/credit"),
	R(TG_GET, "/v1/webhook_endpoints/{id}/deliveries/{delivery}"),
	R(TG_GET, "/v1/a/{w}/{x}/{y}/{z}"),
	R(TG_GET, "/v1/b/{v}/{w}/{x}/{y}/{z}"),
	R(TG_GET, "/v1/customers/search"),
};
#define NROUTES (sizeof(routes) / sizeof(routes[0]))

struct m {
	int index;
	int nparams;
	const char *params[TG_REQ_MAX_PARAMS];
	unsigned allowed;
};

static struct m match(enum tg_method method, const char *path)
{
	struct tg_arena arena;
	struct m r = {0};

	tg_arena_init(&arena);
	r.nparams = -1;
	r.allowed = 0xdead;
	r.index = tg_route_match(routes, NROUTES, method, path, &arena, r.params, &r.nparams, &r.allowed);
	/* copy the params out of the arena before it goes */
	for (int i = 0; r.index >= 0 && i < r.nparams; i++)
		r.params[i] = strdup(r.params[i]);
	tg_arena_release(&arena);
	return r;
}

static void m_free(struct m *r)
{
	for (int i = 0; r->index >= 0 && i < r->nparams; i++)
		free((void *)r->params[i]);
}

START_TEST(test_exact_routes)
{
	struct m r = match(TG_GET, "/healthz");
	ck_assert_int_eq(r.index, 0);
	ck_assert_int_eq(r.nparams, 0);
	m_free(&r);
	r = match(TG_POST, "/v1/customers");
	ck_assert_int_eq(r.index, 1);
	m_free(&r);
	r = match(TG_GET, "/v1/customers");
	ck_assert_int_eq(r.index, 2);
	m_free(&r);
}
END_TEST

START_TEST(test_params)
{
	struct m r = match(TG_GET, "/v1/customers/u_28f3a");
	ck_assert_int_eq(r.index, 3);
	ck_assert_int_eq(r.nparams, 1);
	ck_assert_str_eq(r.params[0], "u_28f3a");
	m_free(&r);
	r = match(TG_PATCH, "/v1/customers/u_28f3a");
	ck_assert_int_eq(r.index, 4);
	m_free(&r);
	r = match(TG_DELETE, "/v1/customers/a.b:c@d+e-f");
	ck_assert_int_eq(r.index, 5);
	ck_assert_str_eq(r.params[0], "a.b:c@d+e-f");
	m_free(&r);
	r = match(TG_GET, "/v1/customers/x/balance");
	ck_assert_int_eq(r.index, 6);
	ck_assert_str_eq(r.params[0], "x");
	m_free(&r);
	r = match(TG_POST, "/v1/customers/x/balance/credit");
	ck_assert_int_eq(r.index, 7);
	m_free(&r);
	r = match(TG_GET, "/v1/webhook_endpoints/whe_1/deliveries/whd_2");
	ck_assert_int_eq(r.index, 8);
	ck_assert_int_eq(r.nparams, 2);
	ck_assert_str_eq(r.params[0], "whe_1");
	ck_assert_str_eq(r.params[1], "whd_2");
	m_free(&r);
	/* the most parameters a route may have */
	r = match(TG_GET, "/v1/a/1/2/3/4");
	ck_assert_int_eq(r.index, 9);
	ck_assert_int_eq(r.nparams, 4);
	ck_assert_str_eq(r.params[3], "4");
	m_free(&r);
	/* one more never overflows params[] */
	r = match(TG_GET, "/v1/b/1/2/3/4/5");
	ck_assert_int_eq(r.index, -1);
	ck_assert_uint_eq(r.allowed, 0);
	/* parameter text is taken verbatim (validation is the handler's job) */
	r = match(TG_GET, "/v1/customers/{id}");
	ck_assert_int_eq(r.index, 3);
	ck_assert_str_eq(r.params[0], "{id}");
	m_free(&r);
	r = match(TG_GET, "/v1/customers/a b%");
	ck_assert_int_eq(r.index, 3);
	ck_assert_str_eq(r.params[0], "a b%");
	m_free(&r);
}
END_TEST

START_TEST(test_first_route_wins)
{
	/* "search" is also a valid {id}; the table's order decides */
	struct m r = match(TG_GET, "/v1/customers/search");
	ck_assert_int_eq(r.index, 3);
	m_free(&r);
}
END_TEST

START_TEST(test_not_found)
{
	const char *paths[] = {
		"", "/", "/healthz/", "/healthzz", "/health", "/v1", "/v1/", "/v1/customer", "/v1/customers/",
		"/v1/customers//balance", "/v1/customers/x/", "/v1/customers/x/y", "/v1/customers/x/balance/", "//v1/customers",
		"/V1/customers", "v1/customers", "/v1/customers/x/balance/debit", "/v1/customers?x=1",
	};
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		for (unsigned m = TG_GET; m <= TG_PUT; m <<= 1) {
			struct m r = match((enum tg_method)m, paths[i]);
			ck_assert_msg(r.index == -1, "'%s' matched route %d", paths[i], r.index);
			ck_assert_msg(r.allowed == 0, "'%s': allowed %u, want 0 (404)", paths[i], r.allowed);
		}
	}
}
END_TEST

START_TEST(test_method_not_allowed)
{
	struct m r = match(TG_PUT, "/v1/customers");
	ck_assert_int_eq(r.index, -1);
	ck_assert_uint_eq(r.allowed, TG_GET | TG_POST);
	r = match(TG_DELETE, "/v1/customers");
	ck_assert_uint_eq(r.allowed, TG_GET | TG_POST);
	r = match(TG_POST, "/v1/customers/x");
	ck_assert_int_eq(r.index, -1);
	ck_assert_uint_eq(r.allowed, TG_GET | TG_PATCH | TG_DELETE);
	r = match(TG_POST, "/healthz");
	ck_assert_uint_eq(r.allowed, TG_GET);
	r = match(TG_GET, "/v1/customers/x/balance/credit");
	ck_assert_uint_eq(r.allowed, TG_POST);
	/* an unknown method (0) matches nothing but still learns what is allowed */
	r = match((enum tg_method)0, "/v1/customers");
	ck_assert_int_eq(r.index, -1);
	ck_assert_uint_eq(r.allowed, TG_GET | TG_POST);
}
END_TEST

START_TEST(test_null_outputs)
{
	unsigned allowed = 99;
	/* the server asks for the allowed mask only, with no arena or params */
	ck_assert_int_eq(tg_route_match(routes, NROUTES, TG_GET, "/v1/customers/x", NULL, NULL, NULL, &allowed), 3);
	ck_assert_int_eq(tg_route_match(routes, NROUTES, TG_PUT, "/v1/customers/x", NULL, NULL, NULL, &allowed), -1);
	ck_assert_uint_eq(allowed, TG_GET | TG_PATCH | TG_DELETE);
	ck_assert_int_eq(tg_route_match(routes, 0, TG_GET, "/healthz", NULL, NULL, NULL, &allowed), -1);
	ck_assert_uint_eq(allowed, 0);
}
END_TEST

START_TEST(test_methods)
{
	ck_assert_int_eq(tg_method_parse("GET"), TG_GET);
	ck_assert_int_eq(tg_method_parse("POST"), TG_POST);
	ck_assert_int_eq(tg_method_parse("PATCH"), TG_PATCH);
	ck_assert_int_eq(tg_method_parse("DELETE"), TG_DELETE);
	ck_assert_int_eq(tg_method_parse("PUT"), TG_PUT);
	ck_assert_int_eq(tg_method_parse("HEAD"), TG_GET);
	ck_assert_int_eq(tg_method_parse("get"), 0);
	ck_assert_int_eq(tg_method_parse("OPTIONS"), 0);
	ck_assert_int_eq(tg_method_parse(""), 0);
	ck_assert_int_eq(tg_method_parse("GETX"), 0);
	ck_assert_str_eq(tg_method_name(TG_GET), "GET");
	ck_assert_str_eq(tg_method_name(TG_DELETE), "DELETE");
	ck_assert_str_eq(tg_method_name((enum tg_method)0), "?");
	ck_assert_str_eq(tg_method_name((enum tg_method)(TG_GET | TG_POST)), "?");
}
END_TEST

START_TEST(test_methods_format)
{
	char buf[64];
	tg_methods_format(TG_GET | TG_POST, buf, sizeof(buf));
	ck_assert_str_eq(buf, "GET, POST");
	tg_methods_format(TG_DELETE | TG_GET | TG_PATCH, buf, sizeof(buf));
	ck_assert_str_eq(buf, "GET, PATCH, DELETE");
	tg_methods_format(TG_GET | TG_POST | TG_PATCH | TG_DELETE | TG_PUT, buf, sizeof(buf));
	ck_assert_str_eq(buf, "GET, POST, PATCH, DELETE, PUT");
	tg_methods_format(0, buf, sizeof(buf));
	ck_assert_str_eq(buf, "");
	/* a small buffer is never overrun and stays terminated */
	char small[8];
	memset(small, 'x', sizeof(small));
	tg_methods_format(TG_GET | TG_POST | TG_PATCH, small, sizeof(small));
	ck_assert_uint_lt(strlen(small), sizeof(small));
	ck_assert_int_eq(strncmp(small, "GET", 3), 0);
	char one[1] = {'x'};
	tg_methods_format(TG_GET, one, sizeof(one));
	ck_assert_int_eq(one[0], '\0');
}
END_TEST

int main(void)
{
	Suite *s = suite_create("router");
	TCase *tc = tcase_create("router");

	tcase_add_test(tc, test_exact_routes);
	tcase_add_test(tc, test_params);
	tcase_add_test(tc, test_first_route_wins);
	tcase_add_test(tc, test_not_found);
	tcase_add_test(tc, test_method_not_allowed);
	tcase_add_test(tc, test_null_outputs);
	tcase_add_test(tc, test_methods);
	tcase_add_test(tc, test_methods_format);
	suite_add_tcase(s, tc);
	return unit_run(s);
}

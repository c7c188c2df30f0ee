/* test_redis_loss.c — Redis is a cache: after FLUSHALL every counter is rebuilt exactly from PostgreSQL. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static struct srv S;

static void setup(void)
{
	srv_start(&S, NULL);
}

static void teardown(void)
{
	redis_cmd("CONFIG SET maxmemory 0"); /* whatever a failed test left behind */
	srv_stop(&S);
}

/* A tenant with meter tokens (sum of "tokens", by model) and one quota on it. */
static struct tenant metered(const char *limit_json)
{
	struct tenant t = tenant_new(&S, false);
	must_post(&S, t.key, "/v1/meters",
		"{\"id\":\"tokens\",\"event_type\":\"llm.completion\",\"aggregation\":\"sum\",\"property\":\"tokens\","
		"\"group_by\":[\"model\"]}");
	if (limit_json)
		must_post(&S, t.key, "/v1/limits", limit_json);
	return t;
}

static double usage_of(const struct tenant *t, const char *customer, const char *limit_id)
{
	return limit_used(&S, t->key, customer, limit_id);
}

START_TEST(redis_flush_rebuilds_exact_usage)
{
	struct tenant t = metered("{\"id\":\"mo\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\",\"limit\":1000}");
	must_post(&S, t.key, "/v1/limits",
		"{\"id\":\"gpt4\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"day\",\"limit\":500,\"filter\":{\"model\":\"gpt-4\"}}");
	must_post(&S, t.key, "/v1/customers", "{\"id\":\"org\"}");
	must_post(&S, t.key, "/v1/customers", "{\"id\":\"m1\",\"parent_id\":\"org\"}");
	must_post(&S, t.key, "/v1/limits",
		"{\"id\":\"orgcap\",\"kind\":\"quota\",\"scope\":\"customer\",\"customer_id\":\"org\",\"meter\":\"tokens\","
		"\"period\":\"week\",\"limit\":900}");
	must_post(&S, t.key, "/v1/events",
		"{\"events\":[{\"customer_id\":\"m1\",\"type\":\"llm.completion\",\"properties\":{\"tokens\":120.5,\"model\":\"gpt-4\"}},"
		"{\"customer_id\":\"m1\",\"type\":\"llm.completion\",\"properties\":{\"tokens\":30,\"model\":\"gpt-3.5\"}}]}");
	struct resp r = req(&S, "POST", "/v1/check", t.key,
			    "{\"customer_id\":\"m1\",\"meter\":\"tokens\",\"amount\":9.25,\"consume\":true,"
			    "\"dimensions\":{\"model\":\"gpt-4\"}}",
			    NULL);
	ck_status(r, 200);
	resp_free(&r);
	double mo = usage_of(&t, "m1", "mo"), g4 = usage_of(&t, "m1", "gpt4"), org = usage_of(&t, "m1", "orgcap");
	ck_assert(mo == 159.75);
	ck_assert(g4 == 129.75);
	ck_assert(org == 159.75);

	ck_assert_int_eq(redis_cmd("FLUSHALL"), 0);
	ck_assert(usage_of(&t, "m1", "mo") == mo);
	ck_assert(usage_of(&t, "m1", "gpt4") == g4);
	ck_assert(usage_of(&t, "m1", "orgcap") == org);
	/* checks see the same numbers: 370.25 more gpt-4 fits the daily 500, 370.26 does not */
	r = req(&S, "POST", "/v1/check", t.key,
		"{\"customer_id\":\"m1\",\"meter\":\"tokens\",\"amount\":370.25,\"dimensions\":{\"model\":\"gpt-4\"}}", NULL);
	ck_status(r, 200);
	resp_free(&r);
	r = req(&S, "POST", "/v1/check", t.key,
		"{\"customer_id\":\"m1\",\"meter\":\"tokens\",\"amount\":370.26,\"dimensions\":{\"model\":\"gpt-4\"}}", NULL);
	ck_status(r, 429);
	ck_assert_str_eq(jstr(r.json, "binding_limit"), "gpt4");
	resp_free(&r);
}
END_TEST

/* Redis forgets its scripts (a restart or failover without persistence, SCRIPT FLUSH): the checks that
 * meet NOSCRIPT - whole batches of them, from clients in parallel - are sent again after the script is
 * loaded once more, and the commits' usage updates (the writer's own connection) likewise; none fails. */
struct flushed {
	const char *key;
	_Atomic int ok, bad;
};

static void flushed_worker(int i, void *arg)
{
	struct flushed *x = arg;
	char body[160];

	for (int k = 0; k < 20; k++) {
		snprintf(body, sizeof(body), "{\"customer_id\":\"c%d\",\"meter\":\"tokens\",\"amount\":1,\"consume\":true}", i);
		struct resp r = req(&S, "POST", "/v1/check", x->key, body, NULL);
		if (r.status == 200)
			atomic_fetch_add(&x->ok, 1);
		else {
			atomic_fetch_add(&x->bad, 1);
			fprintf(stderr, "after SCRIPT FLUSH: %ld %s\n", r.status, r.body);
		}
		resp_free(&r);
		if (k == 9 && i == 0)
			redis_cmd("SCRIPT FLUSH"); /* again, with checks in flight */
	}
}

START_TEST(checks_survive_lost_scripts)
{
	struct tenant t = metered("{\"id\":\"q\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\",\"limit\":1000000}");
	static struct flushed x;

	x.key = t.key;
	atomic_store(&x.ok, 0);
	atomic_store(&x.bad, 0);
	ck_assert_int_eq(redis_cmd("SCRIPT FLUSH"), 0);
	run_parallel(8, flushed_worker, &x);
	ck_assert_int_eq(atomic_load(&x.bad), 0);
	ck_assert_int_eq(atomic_load(&x.ok), 160);
	for (int i = 0; i < 8; i++) {
		char c[8];
		snprintf(c, sizeof(c), "c%d", i);
		ck_assert_msg(usage_of(&t, c, "q") == 20, "%s used %g, not 20", c, usage_of(&t, c, "q"));
	}
}
END_TEST

/* Counters that cannot be rebuilt (Redis refuses every write: out of memory) leave the check without
 * a decision: it answers as when Redis is unreachable (fail_mode closed: 503 unavailable; open: allowed,
 * degraded), never 429 from counters it could not read. */
START_TEST(unrebuildable_counters_are_unavailable_not_exceeded)
{
	struct tenant closed = metered("{\"id\":\"c\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\","
				       "\"limit\":1000,\"fail_mode\":\"closed\"}");
	struct tenant open = metered("{\"id\":\"o\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\","
				     "\"limit\":1000,\"fail_mode\":\"open\"}");
	const char *body = "{\"customer_id\":\"fresh\",\"meter\":\"tokens\",\"amount\":1}";
	const char *refused = "tollgate_redis_errors_total{kind=\"command\"} ";
	long long errors = srv_metric(&S, refused);

	ck_assert_int_eq(redis_cmd("CONFIG SET maxmemory-policy noeviction"), 0);
	ck_assert_int_eq(redis_cmd("CONFIG SET maxmemory 1"), 0);
	struct resp r = req(&S, "POST", "/v1/check", closed.key, body, NULL);
	ck_assert_msg(r.status == 503, "fail_mode closed: expected 503, got %ld: %s", r.status, r.body);
	ck_assert_str_eq(jstr(r.json, "error.code"), "unavailable");
	resp_free(&r);
	r = req(&S, "POST", "/v1/check", open.key, body, NULL);
	ck_assert_msg(r.status == 200, "fail_mode open: expected 200, got %ld: %s", r.status, r.body);
	ck_assert(json_is_true(jpath(r.json, "degraded")));
	resp_free(&r);
	/* the refused writes are counted in /metrics */
	ck_assert_int_gt(srv_metric(&S, refused), errors);
	ck_assert_int_eq(redis_cmd("CONFIG SET maxmemory 0"), 0);
	/* Redis takes writes again: the counters are rebuilt and decide */
	r = req(&S, "POST", "/v1/check", closed.key, body, NULL);
	ck_status(r, 200);
	ck_assert(json_is_false(jpath(r.json, "degraded")));
	resp_free(&r);
	expect_status(&S, "POST", "/v1/check", closed.key, "{\"customer_id\":\"fresh\",\"meter\":\"tokens\",\"amount\":1001}", 429);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("redis_loss");
	TCase *tc = tcase_create("flush");

	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, redis_flush_rebuilds_exact_usage);
	tcase_add_test(tc, unrebuildable_counters_are_unavailable_not_exceeded);
	tcase_add_test(tc, checks_survive_lost_scripts);
	suite_add_tcase(s, tc);
	return run_suite(s);
}

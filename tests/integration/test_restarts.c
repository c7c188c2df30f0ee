/* test_restarts.c — PostgreSQL and Redis restart under a running server: while one is down the requests
 * that need it answer 503 and /metrics counts the failures; once it is back, the first requests of every
 * thread succeed (none is lost on a connection the server closed meanwhile).
 * Stopping a service takes it from every suite: meson runs this suite alone (is_parallel: false). */
#include <stdatomic.h>
#include <stdio.h>
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
	/* whatever a failed test left stopped */
	service_ctl("start", "postgresql");
	service_ctl("start", "redis");
	srv_stop(&S);
}

#define PG_CONN_ERRORS "tollgate_postgres_errors_total{kind=\"connection\"} "
#define REDIS_CONN_ERRORS "tollgate_redis_errors_total{kind=\"connection\"} "

/* Requests from 8 clients at once, so that every worker and loop of the server serves some. */
struct burst {
	const char *key;
	bool config; /* PostgreSQL requests too (reads and a transaction), not only /readyz */
	_Atomic int ok, bad;
	_Atomic int seq;
};

static void tally(struct burst *b, struct resp *r, long want, const char *what)
{
	if (r->status == want) {
		atomic_fetch_add(&b->ok, 1);
	} else {
		atomic_fetch_add(&b->bad, 1);
		fprintf(stderr, "%s: expected %ld, got %ld %s\n", what, want, r->status, r->body ? r->body : "");
	}
	resp_free(r);
}

static void burst_worker(int i, void *arg)
{
	struct burst *b = arg;

	(void)i;
	for (int k = 0; k < 4; k++) {
		struct resp r = req(&S, "GET", "/readyz", NULL, NULL, NULL);
		tally(b, &r, 200, "GET /readyz");
		if (!b->config)
			continue;
		r = req(&S, "GET", "/v1/customers", b->key, NULL, NULL);
		tally(b, &r, 200, "GET /v1/customers");
		r = req(&S, "GET", "/v1/meters", b->key, NULL, NULL);
		tally(b, &r, 200, "GET /v1/meters");
		r = reqf(&S, "POST", "/v1/customers", b->key, "{\"id\":\"c%d\"}", atomic_fetch_add(&b->seq, 1));
		tally(b, &r, 201, "POST /v1/customers");
	}
}

/* Every request of a burst must succeed. */
static void burst(struct burst *b, const char *when)
{
	atomic_store(&b->ok, 0);
	atomic_store(&b->bad, 0);
	run_parallel(8, burst_worker, b);
	ck_assert_msg(atomic_load(&b->bad) == 0, "%s: %d of %d requests failed", when, atomic_load(&b->bad),
		      atomic_load(&b->bad) + atomic_load(&b->ok));
}

/* Stop a service: /readyz answers 503 naming it. */
static void stop_service(const char *name, const char *shown)
{
	service_ctl("stop", name);
	struct resp r = req(&S, "GET", "/readyz", NULL, NULL, NULL);
	ck_err(r, 503, "unavailable", "not_ready", NULL);
	ck_assert_ptr_nonnull(strstr(jstr(r.json, "error.message"), shown));
	resp_free(&r);
}

START_TEST(postgres_restart)
{
	struct tenant t = tenant_new(&S, false);
	static struct burst b;

	b.key = t.key;
	b.config = true;
	burst(&b, "before the restart"); /* every thread has its connection */
	long long errors = srv_metric(&S, PG_CONN_ERRORS);

	stop_service("postgresql", "PostgreSQL");
	struct resp r = req(&S, "GET", "/v1/customers", t.key, NULL, NULL);
	ck_status(r, 503);
	resp_free(&r);
	long long down = srv_metric(&S, PG_CONN_ERRORS);
	ck_assert_msg(down > errors, "PostgreSQL down: %s went from %lld to %lld", PG_CONN_ERRORS, errors, down);
	/* once every thread has lost its connection, each attempt to connect again counts */
	b.config = false;
	run_parallel(8, burst_worker, &b);
	b.config = true;
	down = srv_metric(&S, PG_CONN_ERRORS);
	expect_status(&S, "GET", "/readyz", NULL, NULL, 503);
	ck_assert_int_gt(srv_metric(&S, PG_CONN_ERRORS), down);

	service_ctl("start", "postgresql");
	burst(&b, "after the restart");
	ck_assert_int_ge(srv_metric(&S, PG_CONN_ERRORS), down);
}
END_TEST

static long check_status(const char *key)
{
	struct resp r = req(&S, "POST", "/v1/check", key, "{\"customer_id\":\"c\"}", NULL);
	long st = r.status;
	resp_free(&r);
	return st;
}

START_TEST(redis_restart)
{
	static struct burst b;
	struct tenant t = tenant_new(&S, false);

	/* a check needs Redis for this limit, and refuses without it */
	expect_status(&S, "POST", "/v1/limits", t.key,
		      "{\"id\":\"q\",\"kind\":\"quota\",\"meter\":\"requests\",\"period\":\"month\",\"limit\":1000000,"
		      "\"fail_mode\":\"closed\"}", 201);
	ck_assert_int_eq(check_status(t.key), 200);
	b.config = false;
	burst(&b, "before the restart");
	long long errors = srv_metric(&S, REDIS_CONN_ERRORS);

	stop_service("redis", "Redis");
	long long down = srv_metric(&S, REDIS_CONN_ERRORS);
	ck_assert_msg(down > errors, "Redis down: %s went from %lld to %lld", REDIS_CONN_ERRORS, errors, down);
	/* 3 s down, checking: the loops' reconnection backoff reaches its longest */
	for (int i = 0; i < 30; i++) {
		ck_assert_int_eq(check_status(t.key), 503);
		usleep(100 * 1000);
	}

	service_ctl("start", "redis");
	burst(&b, "after the restart");
	/* checks pass again within a backoff step (250 ms) of /readyz saying ready, not 2 s later */
	int refused = 0;
	for (int i = 0; i < 40; i++) {
		if (check_status(t.key) != 200)
			refused++;
		usleep(25 * 1000);
	}
	ck_assert_msg(refused <= 16, "%d of 40 checks in the second after Redis came back were refused", refused);
	ck_assert_int_eq(check_status(t.key), 200);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("restarts");
	TCase *tc = tcase_create("restarts");

	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, postgres_restart);
	tcase_add_test(tc, redis_restart);
	suite_add_tcase(s, tc);
	return run_suite(s);
}

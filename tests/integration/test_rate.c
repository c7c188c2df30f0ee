/* test_rate.c — rate limits against real Redis: token buckets, sliding windows, accuracy, several instances. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static struct srv S, S2;

static void setup(void)
{
	srv_start(&S, NULL);
}

static void teardown(void)
{
	srv_stop(&S);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long check(const struct srv *s, const char *key, const char *body, char *retry_after, size_t size)
{
	struct resp r = req(s, "POST", "/v1/check", key, body, NULL);
	long st = r.status;

	if (retry_after) {
		const char *h = resp_header(&r, "Retry-After");
		snprintf(retry_after, size, "%s", h ? h : "");
	}
	if (st == 429) {
		ck_assert_str_eq(jstr(r.json, "code"), "rate_limited");
		ck_assert_int_ge(jint(r.json, "retry_after"), 1);
	}
	resp_free(&r);
	return st;
}

/* A tenant with meter tokens (sum of the events' "tokens"). */
static struct tenant tokens_tenant(void)
{
	struct tenant t = tenant_new(&S, false);
	must_post(&S, t.key, "/v1/meters",
		  "{\"id\":\"tokens\",\"event_type\":\"llm\",\"aggregation\":\"sum\",\"property\":\"tokens\"}");
	return t;
}

START_TEST(token_bucket_burst_then_refill)
{
	struct tenant t = tenant_new(&S, false);
	char ra[32];

	must_post(&S, t.key, "/v1/limits",
		  "{\"id\":\"rpm\",\"kind\":\"rate\",\"meter\":\"requests\",\"limit\":60,\"window\":60,\"burst\":5}");
	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(check(&S, t.key, "{\"customer_id\":\"u1\"}", NULL, 0), 200);
	ck_assert_int_eq(check(&S, t.key, "{\"customer_id\":\"u1\"}", ra, sizeof(ra)), 429);
	ck_assert_str_eq(ra, "1");
	/* another customer has its own bucket */
	ck_assert_int_eq(check(&S, t.key, "{\"customer_id\":\"u2\"}", NULL, 0), 200);
	usleep(1100 * 1000);
	ck_assert_int_eq(check(&S, t.key, "{\"customer_id\":\"u1\"}", NULL, 0), 200);
	ck_assert_int_eq(check(&S, t.key, "{\"customer_id\":\"u1\"}", NULL, 0), 429);
}
END_TEST

/* A token bucket's live state: Redis sends its level only, the server derives remaining and reset from it. */
START_TEST(token_bucket_live_state)
{
	struct tenant t = tenant_new(&S, false);
	struct resp r = {0};

	must_post(&S, t.key, "/v1/limits",
		  "{\"id\":\"rpm\",\"kind\":\"rate\",\"meter\":\"requests\",\"limit\":60,\"window\":60,\"burst\":5}");
	for (int i = 0; i < 4; i++) {
		resp_free(&r);
		r = req(&S, "POST", "/v1/check", t.key, "{\"customer_id\":\"u1\"}", NULL);
		ck_status(r, 200);
	}
	/* four used of five, draining at one a second (a few ms have drained a little of them already) */
	ck_assert_str_eq(resp_header(&r, "RateLimit-Remaining"), "1");
	ck_assert_str_eq(resp_header(&r, "RateLimit-Reset"), "4");
	ck_assert_str_eq(resp_header(&r, "RateLimit"), "\"rpm\";r=1;t=4");
	json_t *l = jpath(r.json, "limits.0");
	ck_assert_str_eq(jstr(l, "id"), "rpm");
	ck_assert(jnum(l, "used") > 3.9 && jnum(l, "used") <= 4);
	ck_assert(jnum(l, "remaining") >= 1 && jnum(l, "remaining") < 1.1);
	resp_free(&r);
}
END_TEST

START_TEST(sliding_window_per_ip)
{
	struct tenant t = tenant_new(&S, false);
	char ra[32];

	must_post(&S, t.key, "/v1/limits",
		  "{\"id\":\"ip3\",\"kind\":\"rate\",\"meter\":\"requests\",\"limit\":3,\"window\":2,"
		  "\"algorithm\":\"sliding_window\",\"per\":\"ip\"}");
	/* three different customers from one IP share its window */
	ck_assert_int_eq(check(&S, t.key, "{\"customer_id\":\"a\",\"ip\":\"203.0.113.9\"}", NULL, 0), 200);
	ck_assert_int_eq(check(&S, t.key, "{\"customer_id\":\"b\",\"ip\":\"203.0.113.9\"}", NULL, 0), 200);
	ck_assert_int_eq(check(&S, t.key, "{\"customer_id\":\"c\",\"ip\":\"203.0.113.9\"}", NULL, 0), 200);
	ck_assert_int_eq(check(&S, t.key, "{\"customer_id\":\"d\",\"ip\":\"203.0.113.9\"}", ra, sizeof(ra)), 429);
	ck_assert_int_ge(atoi(ra), 1);
	ck_assert_int_le(atoi(ra), 2);
	/* another IP passes; a check without an ip skips the limit */
	ck_assert_int_eq(check(&S, t.key, "{\"customer_id\":\"d\",\"ip\":\"2001:db8::1\"}", NULL, 0), 200);
	ck_assert_int_eq(check(&S, t.key, "{\"customer_id\":\"d\"}", NULL, 0), 200);
	usleep(2100 * 1000);
	ck_assert_int_eq(check(&S, t.key, "{\"customer_id\":\"d\",\"ip\":\"203.0.113.9\"}", NULL, 0), 200);
}
END_TEST

/* One address is one counter however it is spelt (each spelling had a counter of its own: a way round). */
START_TEST(per_ip_counts_an_address_once_however_spelt)
{
	struct tenant t = tenant_new(&S, false);
	static const char *const v6[] = {"2001:db8::1", "2001:DB8:0::1", "2001:0db8:0000:0000:0000:0000:0000:0001"};
	static const char *const v4[] = {"198.51.100.7", "::ffff:198.51.100.7", "::FFFF:c633:6407"};
	char body[160];

	must_post(&S, t.key, "/v1/limits",
		  "{\"id\":\"ip2\",\"kind\":\"rate\",\"meter\":\"requests\",\"limit\":2,\"window\":600,\"per\":\"ip\"}");
	for (int f = 0; f < 2; f++) {
		const char *const *ips = f ? v4 : v6;
		for (int i = 0; i < 3; i++) {
			snprintf(body, sizeof(body), "{\"customer_id\":\"c%d\",\"ip\":\"%s\"}", i, ips[i]);
			ck_assert_int_eq(check(&S, t.key, body, NULL, 0), i < 2 ? 200 : 429);
		}
	}
}
END_TEST

struct load {
	const struct srv *s[2];
	const char *key;
	const char *body;
	double until;
	_Atomic int allowed, denied, other;
};

static void load_one(int i, void *arg)
{
	struct load *l = arg;

	while (now_s() < l->until) {
		long st = check(l->s[i % 2], l->key, l->body, NULL, 0);
		if (st == 200)
			atomic_fetch_add(&l->allowed, 1);
		else if (st == 429)
			atomic_fetch_add(&l->denied, 1);
		else
			atomic_fetch_add(&l->other, 1);
		usleep(2000); /* ~8 clients × ~400/s: about ten times the limit */
	}
}

START_TEST(accuracy_under_ten_times_the_limit)
{
	struct tenant t = tenant_new(&S, false);
	struct load l = {.s = {&S, &S}, .key = t.key, .body = "{\"customer_id\":\"hot\"}"};

	must_post(&S, t.key, "/v1/limits",
		  "{\"id\":\"r\",\"kind\":\"rate\",\"meter\":\"requests\",\"limit\":20,\"window\":1,\"burst\":20}");
	double start = now_s();
	l.until = start + 10;
	run_parallel(8, load_one, &l);
	double elapsed = now_s() - start;
	int allowed = atomic_load(&l.allowed);
	double ideal = 20 + 20 * elapsed; /* the burst, then the refill */
	ck_assert_int_eq(atomic_load(&l.other), 0);
	ck_assert_int_gt(atomic_load(&l.denied), allowed * 3); /* it really was far over the limit */
	ck_assert_msg(allowed <= ideal * 1.01 + 1 && allowed >= ideal * 0.99 - 1 - 20 * 0.05,
		      "allowed %d, ideal %.1f over %.3f s", allowed, ideal, elapsed);
}
END_TEST

START_TEST(two_instances_share_one_platform_limit)
{
	struct tenant t = tenant_new(&S, false);
	struct load l = {.s = {&S, &S2}, .key = t.key, .body = "{\"customer_id\":\"x\"}"};

	srv_start(&S2, NULL);
	must_post(&S, t.key, "/v1/limits",
		  "{\"id\":\"plat\",\"kind\":\"rate\",\"scope\":\"platform\",\"meter\":\"requests\",\"limit\":100,"
		  "\"window\":86400,\"algorithm\":\"sliding_window\"}");
	/* instance 2 hears of the limit within a second (the contract), here polled with dry runs */
	bool seen = false;
	for (double until = now_s() + 1.0; !seen && now_s() < until;) {
		struct resp r = req(&S2, "POST", "/v1/check", t.key, "{\"customer_id\":\"x\",\"dry_run\":true}", NULL);
		seen = r.status == 200 && json_array_size(jpath(r.json, "limits")) == 1;
		resp_free(&r);
	}
	ck_assert_msg(seen, "instance 2 did not apply the new limit within 1 s");
	l.until = now_s() + 2;
	run_parallel(8, load_one, &l);
	srv_stop(&S2);
	S2.port = 0;
	ck_assert_int_eq(atomic_load(&l.other), 0);
	ck_assert_int_eq(atomic_load(&l.allowed), 100);
}
END_TEST

START_TEST(overrides_and_platform_combine)
{
	struct tenant t = tenant_new(&S, false);

	must_post(&S, t.key, "/v1/tiers", "{\"id\":\"pro\"}");
	must_post(&S, t.key, "/v1/customers", "{\"id\":\"free1\"}");
	must_post(&S, t.key, "/v1/customers", "{\"id\":\"pro1\",\"tier\":\"pro\"}");
	must_post(&S, t.key, "/v1/customers", "{\"id\":\"vip\",\"tier\":\"pro\"}");
	must_post(&S, t.key, "/v1/limits",
		  "{\"id\":\"d\",\"kind\":\"rate\",\"meter\":\"requests\",\"limit\":3,\"window\":3600}");
	must_post(&S, t.key, "/v1/limits",
		  "{\"id\":\"p\",\"kind\":\"rate\",\"scope\":\"tier\",\"tier\":\"pro\",\"meter\":\"requests\",\"limit\":6,\"window\":3600}");
	must_post(&S, t.key, "/v1/limits",
		  "{\"id\":\"v\",\"kind\":\"rate\",\"scope\":\"customer\",\"customer_id\":\"vip\",\"meter\":\"requests\","
		  "\"limit\":1,\"window\":3600}");
	must_post(&S, t.key, "/v1/limits",
		  "{\"id\":\"all\",\"kind\":\"rate\",\"scope\":\"platform\",\"meter\":\"requests\",\"limit\":9,\"window\":3600}");
	int free_ok = 0, pro_ok = 0, vip_ok = 0;
	for (int i = 0; i < 5; i++)
		free_ok += check(&S, t.key, "{\"customer_id\":\"free1\"}", NULL, 0) == 200;
	for (int i = 0; i < 3; i++)
		vip_ok += check(&S, t.key, "{\"customer_id\":\"vip\"}", NULL, 0) == 200;
	ck_assert_int_eq(free_ok, 3); /* the default */
	ck_assert_int_eq(vip_ok, 1);  /* the customer override beats the tier */
	/* pro would get 6, but the platform has only 9 - 4 = 5 left */
	struct resp r;
	for (int i = 0; i < 7; i++) {
		r = req(&S, "POST", "/v1/check", t.key, "{\"customer_id\":\"pro1\"}", NULL);
		if (r.status == 200)
			pro_ok++;
		else
			ck_assert_str_eq(jstr(r.json, "binding_limit"), "all");
		resp_free(&r);
	}
	ck_assert_int_eq(pro_ok, 5);
}
END_TEST

START_TEST(deny_cache_follows_config_changes)
{
	struct tenant t = tenant_new(&S, false);

	must_post(&S, t.key, "/v1/limits",
		  "{\"id\":\"tight\",\"kind\":\"rate\",\"meter\":\"requests\",\"limit\":1,\"window\":3600}");
	ck_assert_int_eq(check(&S, t.key, "{\"customer_id\":\"z\"}", NULL, 0), 200);
	for (int i = 0; i < 20; i++) /* denied again and again: from the deny cache after the first */
		ck_assert_int_eq(check(&S, t.key, "{\"customer_id\":\"z\"}", NULL, 0), 429);
	expect_status(&S, "PATCH", "/v1/limits/tight", t.key, "{\"limit\":1000,\"burst\":1000}", 200);
	ck_assert_int_eq(check(&S, t.key, "{\"customer_id\":\"z\"}", NULL, 0), 200);
	/* every throttle is counted by tenant and limit */
	struct resp r = req(&S, "GET", "/metrics", NULL, NULL, NULL);
	char want[256];
	snprintf(want, sizeof(want), "tollgate_throttles_total{tenant=\"%s\",limit=\"tight\",kind=\"rate\"} 20", t.id);
	ck_assert_msg(strstr(r.body, want) != NULL, "metrics lack %s", want);
	resp_free(&r);
}
END_TEST

/* A denial answered again (by a loop's deny cache after the first on each loop): the same Retry-After
 * as Redis's own answer, for the amount asked. */
static void ck_denied_retry(const struct tenant *t, const char *body, long long lo, long long hi)
{
	for (int i = 0; i < 20; i++) {
		struct resp r = req(&S, "POST", "/v1/check", t->key, body, NULL);
		ck_status(r, 429);
		const char *h = resp_header(&r, "Retry-After");
		if (lo < 0) {
			ck_assert_msg(h == NULL, "denial %d of %s: Retry-After %s where waiting cannot help", i, body, h);
			ck_assert(json_is_null(jpath(r.json, "retry_after")));
		} else {
			ck_assert_msg(h != NULL, "denial %d of %s: no Retry-After", i, body);
			long long v = atoll(h);
			ck_assert_msg(v >= lo && v <= hi, "denial %d of %s: Retry-After %lld, want %lld..%lld", i, body, v,
				      lo, hi);
			ck_assert_int_eq(jint(r.json, "retry_after"), v);
		}
		resp_free(&r);
	}
}

START_TEST(deny_cache_keeps_retry_after)
{
	struct tenant t = tokens_tenant();
	must_post(&S, t.key, "/v1/limits",
		  "{\"id\":\"day\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"day\",\"limit\":10}");
	must_post(&S, t.key, "/v1/limits",
		  "{\"id\":\"tpm\",\"kind\":\"rate\",\"meter\":\"tokens\",\"limit\":100,\"window\":60,\"burst\":100}");
	expect_status(&S, "POST", "/v1/check", t.key, "{\"customer_id\":\"q\",\"meter\":\"tokens\",\"amount\":8,\"consume\":true}",
		      200);
	/* the quota: until midnight UTC, every time; an amount above the limit itself: never */
	long long tod = (long long)time(NULL) % 86400, to_midnight = 86400 - tod;
	ck_denied_retry(&t, "{\"customer_id\":\"q\",\"meter\":\"tokens\",\"amount\":5}", to_midnight - 2, to_midnight + 1);
	ck_denied_retry(&t, "{\"customer_id\":\"q\",\"meter\":\"tokens\",\"amount\":11}", -1, -1);

	/* the bucket (100 a minute): 90 used, so 20 more fit in 6 s, 100 in 54 s, 200 never */
	expect_status(&S, "PATCH", "/v1/limits/day", t.key, "{\"limit\":1000000}", 200);
	expect_status(&S, "POST", "/v1/check", t.key, "{\"customer_id\":\"b\",\"meter\":\"tokens\",\"amount\":90,\"consume\":true}",
		      200);
	ck_denied_retry(&t, "{\"customer_id\":\"b\",\"meter\":\"tokens\",\"amount\":20}", 4, 6);
	ck_denied_retry(&t, "{\"customer_id\":\"b\",\"meter\":\"tokens\",\"amount\":100}", 50, 54);
	ck_denied_retry(&t, "{\"customer_id\":\"b\",\"meter\":\"tokens\",\"amount\":200}", -1, -1);
}
END_TEST

/* A token bucket's denial answered from the cache shows the bucket as it is now (it refills while cached). */
START_TEST(deny_cache_shows_the_bucket_refilling)
{
	struct tenant t = tokens_tenant();
	must_post(&S, t.key, "/v1/limits",
		  "{\"id\":\"slow\",\"kind\":\"rate\",\"meter\":\"tokens\",\"limit\":100,\"window\":100}"); /* 1 a second */
	expect_status(&S, "POST", "/v1/check", t.key,
		      "{\"customer_id\":\"d\",\"meter\":\"tokens\",\"amount\":100,\"consume\":true}", 200);
	const char *body = "{\"customer_id\":\"d\",\"meter\":\"tokens\",\"amount\":50}";
	for (int i = 0; i < 10; i++) /* denied, and cached on each loop */
		expect_status(&S, "POST", "/v1/check", t.key, body, 429);
	usleep(2500 * 1000);
	for (int i = 0; i < 10; i++) {
		struct resp r = req(&S, "POST", "/v1/check", t.key, body, NULL);
		ck_status(r, 429);
		double rem = jnum(r.json, "limits.0.remaining");
		ck_assert_msg(rem >= 2 && rem < 4, "denial %d: remaining %f, 2.5 s after the bucket was emptied", i, rem);
		ck_assert_msg(!strcmp(resp_header(&r, "RateLimit-Remaining"), "2") ||
				      !strcmp(resp_header(&r, "RateLimit-Remaining"), "3"),
			      "denial %d: RateLimit-Remaining %s", i, resp_header(&r, "RateLimit-Remaining"));
		long long retry = atoll(resp_header(&r, "Retry-After"));
		ck_assert_msg(retry >= 46 && retry <= 48, "denial %d: Retry-After %lld", i, retry);
		resp_free(&r);
	}
}
END_TEST

/* A released reservation frees its room for the very next check, also where a denial was cached. */
START_TEST(deny_cache_forgets_released_holds)
{
	struct tenant t = tokens_tenant();
	must_post(&S, t.key, "/v1/limits",
		  "{\"id\":\"cap\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\",\"limit\":100}");
	for (int round = 0; round < 5; round++) {
		struct resp r = req(&S, "POST", "/v1/check", t.key,
				    "{\"customer_id\":\"r\",\"meter\":\"tokens\",\"amount\":60,\"reserve\":true}", NULL);
		ck_status(r, 200);
		char path[128];
		snprintf(path, sizeof(path), "/v1/reservations/%s/release", jstr(r.json, "reservation_id"));
		resp_free(&r);
		for (int i = 0; i < 10; i++) /* denied while held: cached on each loop */
			expect_status(&S, "POST", "/v1/check", t.key, "{\"customer_id\":\"r\",\"meter\":\"tokens\",\"amount\":60}",
				      429);
		expect_status(&S, "POST", path, t.key, NULL, 200);
		for (int i = 0; i < 10; i++)
			expect_status(&S, "POST", "/v1/check", t.key, "{\"customer_id\":\"r\",\"meter\":\"tokens\",\"amount\":60}",
				      200);
	}
}
END_TEST

START_TEST(rate_limit_on_a_token_meter)
{
	struct tenant t = tokens_tenant();

	must_post(&S, t.key, "/v1/limits",
		  "{\"id\":\"tpm\",\"kind\":\"rate\",\"meter\":\"tokens\",\"limit\":1000,\"window\":60,"
		  "\"algorithm\":\"sliding_window\"}");
	ck_assert_int_eq(check(&S, t.key, "{\"customer_id\":\"u\",\"meter\":\"tokens\",\"amount\":600}", NULL, 0), 200);
	ck_assert_int_eq(check(&S, t.key, "{\"customer_id\":\"u\",\"meter\":\"tokens\",\"amount\":400}", NULL, 0), 200);
	struct resp r = req(&S, "POST", "/v1/check", t.key, "{\"customer_id\":\"u\",\"meter\":\"tokens\",\"amount\":1}", NULL);
	ck_status(r, 429);
	ck_assert_str_eq(jstr(r.json, "binding_limit"), "tpm");
	ck_assert_int_ge(jint(r.json, "retry_after"), 59);
	ck_assert_int_le(jint(r.json, "retry_after"), 60);
	ck_assert_ptr_nonnull(resp_header(&r, "RateLimit-Policy"));
	ck_assert_str_eq(resp_header(&r, "RateLimit-Policy"), "\"tpm\";q=1000;w=60");
	resp_free(&r);
	/* an amount bigger than the whole window can never pass: no Retry-After */
	r = req(&S, "POST", "/v1/check", t.key, "{\"customer_id\":\"v\",\"meter\":\"tokens\",\"amount\":1001}", NULL);
	ck_status(r, 429);
	ck_assert_ptr_null(resp_header(&r, "Retry-After"));
	ck_assert(json_is_null(jpath(r.json, "retry_after")));
	resp_free(&r);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("rate");
	TCase *tc = tcase_create("rate");

	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, token_bucket_burst_then_refill);
	tcase_add_test(tc, token_bucket_live_state);
	tcase_add_test(tc, sliding_window_per_ip);
	tcase_add_test(tc, per_ip_counts_an_address_once_however_spelt);
	tcase_add_test(tc, overrides_and_platform_combine);
	tcase_add_test(tc, deny_cache_follows_config_changes);
	tcase_add_test(tc, deny_cache_keeps_retry_after);
	tcase_add_test(tc, deny_cache_forgets_released_holds);
	tcase_add_test(tc, deny_cache_shows_the_bucket_refilling);
	tcase_add_test(tc, rate_limit_on_a_token_meter);
	tcase_add_test(tc, two_instances_share_one_platform_limit);
	tcase_add_test(tc, accuracy_under_ten_times_the_limit);
	suite_add_tcase(s, tc);
	return run_suite(s);
}

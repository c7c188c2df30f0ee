/* test_checks.c — POST /v1/check over real HTTP with real Redis/PostgreSQL: the response and its headers,
 * defaults, dry runs, auto-created customers, bad input, slot precedence, soft and shadow limits, filters
 * and organisations. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#define MTEST_ONE_SERVER
#include "mtest.h"


/* A check; the caller frees. */
#define CHECK(key, ...) callf(&S, key, "POST", "/v1/check", __VA_ARGS__)

static void ck_keys_exactly(json_t *o, const char *const *keys)
{
	size_t n = 0;
	for (const char *const *k = keys; *k; k++, n++)
		ck_assert_msg(json_object_get(o, *k) != NULL, "missing key '%s'", *k);
	if (json_object_size(o) != n) {
		const char *k;
		json_t *v;
		json_object_foreach(o, k, v) {
			bool known = false;
			for (const char *const *w = keys; *w; w++)
				known |= strcmp(*w, k) == 0;
			ck_assert_msg(known, "unexpected key '%s'", k);
		}
	}
}

static const char *const TOP_KEYS[] = {"allowed", "decision", "code", "customer_id", "retry_after", "binding_limit",
				       "limits", "balance", "warnings", "reservation_id", "degraded", NULL};

/* ---- 3. the response ---- */

START_TEST(check_response_shape_and_headers)
{
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"monthly\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"month\",\"limit\":1000}");
	long long before = real_now();
	struct resp r = CHECK(t.key, "{\"customer_id\":\"u_28f3a\",\"meter\":\"tokens\",\"amount\":200,\"consume\":true}");
	long long after = real_now();
	ck_status(r, 200);
	ck_assert_str_eq(resp_header(&r, "Content-Type"), "application/json");
	ck_keys_exactly(r.json, TOP_KEYS);
	ck_assert(json_is_true(jpath(r.json, "allowed")));
	ck_assert_str_eq(jstr(r.json, "decision"), "allow");
	ck_assert(json_is_null(jpath(r.json, "code")));
	ck_assert_str_eq(jstr(r.json, "customer_id"), "u_28f3a");
	ck_assert(json_is_null(jpath(r.json, "retry_after")));
	ck_assert_str_eq(jstr(r.json, "binding_limit"), "monthly");
	ck_assert_int_eq(nlimits(r.json), 1);
	json_t *l = lim_must(r.json, "monthly", NULL);
	ck_assert_str_eq(jstr(l, "kind"), "quota");
	ck_assert_str_eq(jstr(l, "meter"), "tokens");
	ck_assert_str_eq(jstr(l, "scope"), "default");
	ck_assert_str_eq(jstr(l, "period"), "month");
	ck_qty(l, "limit", 1000);
	ck_qty(l, "used", 200);
	ck_qty(l, "reserved", 0);
	ck_qty(l, "remaining", 800);
	long long reset = next_month_start(before);
	ck_assert_int_eq(time_parse(jstr(l, "resets_at")), reset);
	ck_assert_str_eq(jstr(l, "enforcement"), "hard");
	ck_assert(json_is_false(jpath(l, "exceeded")));
	ck_assert(json_is_null(jpath(r.json, "balance")) || json_is_object(jpath(r.json, "balance")));
	ck_assert(json_is_array(jpath(r.json, "warnings")));
	ck_assert_int_eq(json_array_size(jpath(r.json, "warnings")), 0);
	ck_assert(json_is_null(jpath(r.json, "reservation_id")));
	ck_assert(json_is_false(jpath(r.json, "degraded")));

	/* RateLimit headers for the binding limit, both forms */
	ck_assert_str_eq(resp_header(&r, "RateLimit-Limit"), "1000");
	ck_assert_str_eq(resp_header(&r, "RateLimit-Remaining"), "800");
	long long rs = atoll(resp_header(&r, "RateLimit-Reset"));
	ck_assert_msg(rs >= reset - after - 1 && rs <= reset - before + 1, "RateLimit-Reset %lld, want ~%lld", rs,
		      reset - before);
	char want[160];
	const char *pol = resp_header(&r, "RateLimit-Policy");
	ck_assert_ptr_nonnull(pol);
	long long w = -1;
	ck_assert_msg(sscanf(pol, "\"monthly\";q=1000;w=%lld", &w) == 1, "RateLimit-Policy: %s", pol);
	{
		/* the window is the length of this month */
		time_t tt = (time_t)before;
		struct tm tm;
		gmtime_r(&tt, &tm);
		tm.tm_mday = 1;
		tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
		long long start = (long long)timegm(&tm);
		ck_assert_int_eq(w, reset - start);
	}
	snprintf(want, sizeof(want), "\"monthly\";r=800;t=%lld", rs);
	ck_assert_str_eq(resp_header(&r, "RateLimit"), want);
	ck_assert_ptr_null(resp_header(&r, "Retry-After"));
	resp_free(&r);
}
END_TEST

START_TEST(check_defaults_requests_and_amount)
{
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"rq\",\"meter\":\"requests\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":3}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"rr\",\"meter\":\"requests\",\"kind\":\"rate\",\"window\":3600,\"limit\":10,"
		"\"algorithm\":\"sliding_window\"}");
	for (int i = 1; i <= 3; i++) {
		struct resp r = CHECK(t.key, "{\"customer_id\":\"c\"}");
		ck_status(r, 200);
		ck_assert_int_eq(nlimits(r.json), 2);
		json_t *q = lim_must(r.json, "rq", NULL);
		ck_assert_str_eq(jstr(q, "meter"), "requests");
		ck_qty(q, "used", i);
		ck_qty(q, "remaining", 3 - i);
		json_t *rt = lim_must(r.json, "rr", NULL);
		ck_assert_str_eq(jstr(rt, "kind"), "rate");
		ck_qty(rt, "used", i);
		ck_qty(rt, "remaining", 10 - i);
		/* the binding limit when allowed: the one with the least room left */
		ck_assert_str_eq(jstr(r.json, "binding_limit"), "rq");
		resp_free(&r);
	}
	struct resp r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"requests\",\"amount\":1}");
	ck_status(r, 429);
	ck_keys_exactly(r.json, TOP_KEYS);
	ck_assert(json_is_false(jpath(r.json, "allowed")));
	ck_assert_str_eq(jstr(r.json, "decision"), "deny");
	ck_assert_str_eq(jstr(r.json, "code"), "quota_exceeded");
	ck_assert_str_eq(jstr(r.json, "binding_limit"), "rq");
	ck_state(r.json, "rq", NULL, 3, 0, 0);
	ck_assert(json_is_true(jpath(lim_must(r.json, "rq", NULL), "exceeded")));
	/* a denied check consumes nothing: the rate limit stays at 3 */
	ck_qty(lim_must(r.json, "rr", NULL), "used", 3);
	ck_assert(json_is_false(jpath(lim_must(r.json, "rr", NULL), "exceeded")));
	resp_free(&r);
	/* a tokens check still counts one request against the requests quota: denied too */
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":5}");
	ck_status(r, 429);
	ck_assert_str_eq(jstr(r.json, "binding_limit"), "rq");
	resp_free(&r);
	/* another customer has its own counters */
	r = CHECK(t.key, "{\"customer_id\":\"d\"}");
	ck_status(r, 200);
	ck_state(r.json, "rq", NULL, 1, 0, 2);
	resp_free(&r);
	/* amount defaults to 1 also to consume or reserve on a meter (it was a 400 missing_parameter) */
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"tq\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":100}");
	r = CHECK(t.key, "{\"customer_id\":\"e\",\"meter\":\"tokens\",\"consume\":true}");
	ck_status(r, 200);
	ck_state(r.json, "tq", NULL, 1, 0, 99);
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"e\",\"meter\":\"tokens\",\"reserve\":true}");
	ck_status(r, 200);
	ck_state(r.json, "tq", NULL, 1, 1, 98);
	resp_free(&r);
}
END_TEST

START_TEST(check_quota_denial_retry_after)
{
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"hourly\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"hour\",\"limit\":10}");
	struct resp r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":10,\"consume\":true}");
	ck_status(r, 200);
	ck_state(r.json, "hourly", NULL, 10, 0, 0);
	resp_free(&r);
	long long before = real_now();
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1,\"consume\":true}");
	long long after = real_now();
	ck_status(r, 429);
	ck_keys_exactly(r.json, TOP_KEYS);
	ck_assert(json_is_false(jpath(r.json, "allowed")));
	ck_assert_str_eq(jstr(r.json, "decision"), "deny");
	ck_assert_str_eq(jstr(r.json, "code"), "quota_exceeded");
	ck_assert_str_eq(jstr(r.json, "binding_limit"), "hourly");
	long long ra = jint(r.json, "retry_after");
	ck_assert_msg(ra > 0 && ra <= 3600, "retry_after %lld", ra);
	long long end = (before / 3600 + 1) * 3600;
	ck_assert_msg(ra >= end - after && ra <= end - before + 1, "retry_after %lld, want ~%lld", ra, end - before);
	const char *h = resp_header(&r, "Retry-After");
	ck_assert_ptr_nonnull(h);
	ck_assert_int_eq(atoll(h), ra);
	json_t *l = lim_must(r.json, "hourly", NULL);
	ck_assert(json_is_true(jpath(l, "exceeded")));
	ck_qty(l, "used", 10);
	ck_qty(l, "remaining", 0);
	ck_assert_int_eq(time_parse(jstr(l, "resets_at")) % 3600, 0);
	ck_assert_str_eq(resp_header(&r, "RateLimit-Limit"), "10");
	ck_assert_str_eq(resp_header(&r, "RateLimit-Remaining"), "0");
	ck_assert_ptr_nonnull(resp_header(&r, "RateLimit-Policy"));
	ck_assert_ptr_nonnull(strstr(resp_header(&r, "RateLimit-Policy"), "\"hourly\";q=10;w=3600"));
	ck_assert_ptr_nonnull(resp_header(&r, "RateLimit"));
	resp_free(&r);
}
END_TEST

START_TEST(check_amount_over_limit_no_retry_after)
{
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"daily\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":100}");
	/* the limit itself fits exactly */
	struct resp r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":100}");
	ck_status(r, 200);
	resp_free(&r);
	/* more than the limit can never pass: no Retry-After */
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":100.000001}");
	ck_status(r, 429);
	ck_assert_str_eq(jstr(r.json, "code"), "quota_exceeded");
	ck_assert_str_eq(jstr(r.json, "binding_limit"), "daily");
	ck_assert(json_is_null(jpath(r.json, "retry_after")));
	ck_assert_ptr_null(resp_header(&r, "Retry-After"));
	ck_state(r.json, "daily", NULL, 0, 0, 100);
	resp_free(&r);
	/* a token bucket asked for more than its burst: same */
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"tb\",\"meter\":\"tokens\",\"kind\":\"rate\",\"window\":60,\"limit\":1000,\"burst\":50}");
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":60}");
	ck_status(r, 429);
	ck_assert_str_eq(jstr(r.json, "code"), "rate_limited");
	ck_assert_str_eq(jstr(r.json, "binding_limit"), "tb");
	ck_assert(json_is_null(jpath(r.json, "retry_after")));
	ck_assert_ptr_null(resp_header(&r, "Retry-After"));
	resp_free(&r);
}
END_TEST

START_TEST(check_dry_run_consumes_nothing)
{
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"q\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":10}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"rate\",\"meter\":\"requests\",\"kind\":\"rate\",\"window\":3600,\"limit\":2}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"rq\",\"meter\":\"requests\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":100}");
	for (int i = 0; i < 5; i++) {
		struct resp r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":6,\"consume\":true,\"dry_run\":true}");
		ck_status(r, 200);
		ck_assert(json_is_true(jpath(r.json, "allowed")));
		ck_state(r.json, "q", NULL, 0, 0, 10);
		ck_qty(lim_must(r.json, "rate", NULL), "used", 0);
		ck_state(r.json, "rq", NULL, 0, 0, 100);
		resp_free(&r);
		r = CHECK(t.key, "{\"customer_id\":\"c\",\"dry_run\":true}");
		ck_status(r, 200);
		resp_free(&r);
	}
	/* a dry run that would be denied says so, and still changes nothing */
	struct resp r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":11,\"dry_run\":true}");
	ck_status(r, 429);
	ck_assert_str_eq(jstr(r.json, "binding_limit"), "q");
	resp_free(&r);
	/* the real thing: both requests pass, the third is rate limited */
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":6,\"consume\":true}");
	ck_status(r, 200);
	ck_state(r.json, "q", NULL, 6, 0, 4);
	ck_state(r.json, "rq", NULL, 1, 0, 99);
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"c\"}");
	ck_status(r, 200);
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"c\"}");
	ck_status(r, 429);
	ck_assert_str_eq(jstr(r.json, "code"), "rate_limited");
	ck_assert_str_eq(jstr(r.json, "binding_limit"), "rate");
	long long ra = jint(r.json, "retry_after");
	ck_assert_msg(ra >= 1 && ra <= 1800, "retry_after %lld (refill of 1 of 2 per hour takes 1800 s)", ra);
	ck_assert_ptr_nonnull(resp_header(&r, "Retry-After"));
	ck_state(r.json, "rq", NULL, 2, 0, 98);
	resp_free(&r);
	/* nothing durable came of the dry runs: one event recorded */
	r = req(&S, "GET", "/v1/events?customer_id=c", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 1);
	resp_free(&r);
}
END_TEST

START_TEST(check_auto_create_customers)
{
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/tiers", 201, "{\"id\":\"free\"}");
	expectf(&S, t.key, "PATCH", "/v1/tenant", 200, "{\"default_tier\":\"free\"}");
	struct resp r = CHECK(t.key, "{\"customer_id\":\"newbie\"}");
	ck_status(r, 200);
	resp_free(&r);
	r = req(&S, "GET", "/v1/customers/newbie", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "tier"), "free");
	resp_free(&r);

	expectf(&S, t.key, "PATCH", "/v1/tenant", 200, "{\"auto_create_customers\":false}");
	r = CHECK(t.key, "{\"customer_id\":\"stranger\",\"meter\":\"tokens\",\"amount\":1,\"consume\":true}");
	ck_bad(r, 404, "customer_not_found", NULL);
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"stranger\"}");
	ck_status(r, 404);
	ck_assert_str_eq(jstr(r.json, "error.code"), "customer_not_found");
	resp_free(&r);
	expect_status(&S, "GET", "/v1/customers/stranger", t.key, NULL, 404);
	/* known customers still pass */
	r = CHECK(t.key, "{\"customer_id\":\"newbie\"}");
	ck_status(r, 200);
	resp_free(&r);
	/* and back on */
	expectf(&S, t.key, "PATCH", "/v1/tenant", 200, "{\"auto_create_customers\":true}");
	r = CHECK(t.key, "{\"customer_id\":\"stranger\"}");
	ck_status(r, 200);
	resp_free(&r);
	expect_status(&S, "GET", "/v1/customers/stranger", t.key, NULL, 200);
}
END_TEST

START_TEST(check_bad_inputs)
{
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"q\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":10}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"rq\",\"meter\":\"requests\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":100}");
	static const struct {
		const char *body, *code, *param;
	} bad[] = {
		{"{\"meter\":\"tokens\"}", "missing_parameter", "customer_id"},
		{"{\"customer_id\":\"a b\"}", "invalid_parameter", "customer_id"},
		{"{\"customer_id\":7}", "invalid_parameter", "customer_id"},
		{"{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":-1,\"consume\":true}", "invalid_parameter", "amount"},
		{"{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":-0.5}", "invalid_parameter", "amount"},
		{"{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":\"5\",\"consume\":true}", "invalid_parameter", "amount"},
		{"{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":\"five\"}", "invalid_parameter", "amount"},
		{"{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":true}", "invalid_parameter", "amount"},
		{"{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":null}", "invalid_parameter", "amount"},
		{"{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1.0000001,\"consume\":true}", "invalid_parameter", "amount"},
		{"{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":9000000000000,\"consume\":true}", "invalid_parameter", "amount"},
		{"{\"customer_id\":\"c\",\"meter\":\"ghost\",\"amount\":1}", NULL, "meter"},
		{"{\"customer_id\":\"c\",\"meter\":5}", "invalid_parameter", "meter"},
		{"{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1,\"dimensions\":{\"model\":4}}", "invalid_parameter", "dimensions.model"},
		{"{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1,\"dimensions\":{\"model\":true}}", "invalid_parameter", "dimensions.model"},
		{"{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1,\"dimensions\":{\"model\":{\"a\":\"b\"}}}", "invalid_parameter", "dimensions.model"},
		{"{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1,\"dimensions\":{\"model\":null}}", "invalid_parameter", "dimensions.model"},
		{"{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1,\"dimensions\":[\"gpt-4\"]}", "invalid_parameter", "dimensions"},
		{"{\"customer_id\":\"c\",\"ip\":\"999.1.1.1\"}", "invalid_parameter", "ip"},
		{"{\"customer_id\":\"c\",\"ip\":\"example.com\"}", "invalid_parameter", "ip"},
		{"{\"customer_id\":\"c\",\"ip\":\"10.0.0.1/8\"}", "invalid_parameter", "ip"},
		{"{\"customer_id\":\"c\",\"ip\":12}", "invalid_parameter", "ip"},
		{"{\"customer_id\":\"c\",\"key\":5}", "invalid_parameter", "key"},
		{"{\"customer_id\":\"c\",\"consume\":\"yes\"}", "invalid_parameter", "consume"},
		{"{\"customer_id\":\"c\",\"dry_run\":1}", "invalid_parameter", "dry_run"},
		{"{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1,\"reservation_ttl\":0,\"reserve\":true}", "invalid_parameter", "reservation_ttl"},
		{"{\"customer_id\":\"c\",\"colour\":\"red\"}", "unknown_parameter", "colour"},
		{"{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1,\"limit\":5}", "unknown_parameter", "limit"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct resp r = CHECK(t.key, "%s", bad[i].body);
		ck_assert_msg(r.status == 400, "%s: expected 400, got %ld: %s", bad[i].body, r.status, r.body);
		ck_assert_msg(json_is_string(jpath(r.json, "error.type")) &&
				      strcmp(jstr(r.json, "error.type"), "invalid_request") == 0,
			      "%s: %s", bad[i].body, r.body);
		if (bad[i].code)
			ck_assert_msg(strcmp(jstr(r.json, "error.code"), bad[i].code) == 0, "%s: code %s, want %s", bad[i].body,
				      jstr(r.json, "error.code"), bad[i].code);
		ck_assert_msg(json_is_string(jpath(r.json, "error.param")) &&
				      strcmp(jstr(r.json, "error.param"), bad[i].param) == 0,
			      "%s: param should be '%s': %s", bad[i].body, bad[i].param, r.body);
		resp_free(&r);
	}
	/* consume and reserve together */
	struct resp r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1,\"consume\":true,\"reserve\":true}");
	ck_status(r, 400);
	ck_assert_str_eq(jstr(r.json, "error.type"), "invalid_request");
	ck_assert_msg(json_is_string(jpath(r.json, "error.param")), "no param: %s", r.body);
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"c\",");
	ck_bad(r, 400, "invalid_json", NULL);
	resp_free(&r);
	r = CHECK(t.key, "[]");
	ck_status(r, 400);
	resp_free(&r);
	/* the ones that are fine: IPv6, amount 0, six decimals */
	r = CHECK(t.key, "{\"customer_id\":\"ok\",\"ip\":\"2001:db8::1\",\"meter\":\"tokens\",\"amount\":0}");
	ck_status(r, 200);
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"ok\",\"meter\":\"tokens\",\"amount\":0.000001,\"consume\":true}");
	ck_status(r, 200);
	ck_qty(lim_must(r.json, "q", NULL), "used", 0.000001);
	resp_free(&r);

	/* no bad request changed anything, nor created the customer */
	expect_status(&S, "GET", "/v1/customers/c", t.key, NULL, 404);
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":0,\"dry_run\":true}");
	ck_status(r, 200);
	ck_state(r.json, "q", NULL, 0, 0, 10);
	ck_state(r.json, "rq", NULL, 0, 0, 100);
	resp_free(&r);
}
END_TEST

/* ---- 4. slot precedence ---- */

START_TEST(slot_precedence)
{
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/tiers", 201, "{\"id\":\"free\"}");
	expectf(&S, t.key, "POST", "/v1/tiers", 201, "{\"id\":\"pro\"}");
	expectf(&S, t.key, "PATCH", "/v1/tenant", 200, "{\"default_tier\":\"free\"}");
	expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"f1\"}");
	expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"p1\",\"tier\":\"pro\"}");
	expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"vip\",\"tier\":\"pro\"}");
	expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"none\",\"tier\":null}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"d\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":100}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"t\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":50,\"scope\":\"tier\",\"tier\":\"pro\"}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"c\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":500,\"scope\":\"customer\","
		"\"customer_id\":\"vip\"}");

	static const struct {
		const char *cust, *lim;
		int cap;
	} who[] = {{"f1", "d", 100}, {"none", "d", 100}, {"p1", "t", 50}, {"vip", "c", 500}};
	for (size_t i = 0; i < 4; i++) {
		struct resp r = CHECK(t.key, "{\"customer_id\":\"%s\",\"meter\":\"tokens\",\"amount\":%d,\"dry_run\":true}",
				      who[i].cust, who[i].cap);
		ck_assert_msg(r.status == 200, "%s amount %d: %ld %s", who[i].cust, who[i].cap, r.status, r.body);
		ck_assert_msg(nlimits(r.json) == 1, "%s: exactly one limit fills the slot: %s", who[i].cust, r.body);
		lim_must(r.json, who[i].lim, NULL);
		resp_free(&r);
		r = CHECK(t.key, "{\"customer_id\":\"%s\",\"meter\":\"tokens\",\"amount\":%d,\"dry_run\":true}", who[i].cust,
			  who[i].cap + 1);
		ck_assert_msg(r.status == 429, "%s amount %d: %ld %s", who[i].cust, who[i].cap + 1, r.status, r.body);
		ck_assert_str_eq(jstr(r.json, "binding_limit"), who[i].lim);
		resp_free(&r);
	}

	/* a platform limit applies to everyone on top; the most restrictive wins */
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"plat\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":300,\"scope\":\"platform\"}");
	struct resp r = CHECK(t.key, "{\"customer_id\":\"vip\",\"meter\":\"tokens\",\"amount\":301,\"dry_run\":true}");
	ck_status(r, 429);
	ck_assert_str_eq(jstr(r.json, "binding_limit"), "plat");
	ck_assert_int_eq(nlimits(r.json), 2);
	ck_assert_str_eq(jstr(lim_must(r.json, "plat", NULL), "scope"), "platform");
	ck_assert(json_is_false(jpath(lim_must(r.json, "c", NULL), "exceeded")));
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"vip\",\"meter\":\"tokens\",\"amount\":250,\"consume\":true}");
	ck_status(r, 200);
	ck_state(r.json, "plat", NULL, 250, 0, 50);
	ck_state(r.json, "c", NULL, 250, 0, 250);
	/* allowed: the binding limit is the one with the least room left */
	ck_assert_str_eq(jstr(r.json, "binding_limit"), "plat");
	resp_free(&r);
	/* the platform counter is shared: f1 has 100 of its own but only 50 platform-wide */
	r = CHECK(t.key, "{\"customer_id\":\"f1\",\"meter\":\"tokens\",\"amount\":51,\"dry_run\":true}");
	ck_status(r, 429);
	ck_assert_str_eq(jstr(r.json, "binding_limit"), "plat");
	ck_state(r.json, "d", NULL, 0, 0, 100);
	ck_state(r.json, "plat", NULL, 250, 0, 50);
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"f1\",\"meter\":\"tokens\",\"amount\":50,\"consume\":true}");
	ck_status(r, 200);
	resp_free(&r);

	/* a different period or filter is a different slot: it applies as well */
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"t_hour\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"hour\",\"limit\":20,\"scope\":\"tier\","
		"\"tier\":\"pro\"}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"d_gpt4\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":10,"
		"\"filter\":{\"model\":\"gpt-4\"}}");
	expectf(&S, t.key, "PATCH", "/v1/limits/plat", 200, "{\"limit\":100000}");
	r = CHECK(t.key, "{\"customer_id\":\"p1\",\"meter\":\"tokens\",\"amount\":21,\"dry_run\":true}");
	ck_status(r, 429);
	ck_assert_str_eq(jstr(r.json, "binding_limit"), "t_hour");
	ck_assert_int_eq(nlimits(r.json), 3); /* t, t_hour, plat (d_gpt4 does not match: no model) */
	lim_must(r.json, "t", NULL);
	ck_assert_ptr_null(lim_of(r.json, "d_gpt4", NULL));
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"p1\",\"meter\":\"tokens\",\"amount\":11,\"dimensions\":{\"model\":\"gpt-4\"},\"dry_run\":true}");
	ck_status(r, 429);
	ck_assert_str_eq(jstr(r.json, "binding_limit"), "d_gpt4");
	ck_assert_int_eq(nlimits(r.json), 4);
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"p1\",\"meter\":\"tokens\",\"amount\":11,\"dimensions\":{\"model\":\"gpt-3.5\"},\"dry_run\":true}");
	ck_status(r, 200);
	ck_assert_int_eq(nlimits(r.json), 3);
	resp_free(&r);
	/* vip's customer limit fills only the (quota, tokens, day, no filter) slot: the tier's hourly limit still
	 * applies to it, and so does the default gpt-4 one */
	r = CHECK(t.key, "{\"customer_id\":\"vip\",\"meter\":\"tokens\",\"amount\":21,\"dry_run\":true}");
	ck_status(r, 429);
	ck_assert_str_eq(jstr(r.json, "binding_limit"), "t_hour");
	ck_assert_ptr_null(lim_of(r.json, "t", NULL));
	ck_assert_ptr_null(lim_of(r.json, "d", NULL));
	resp_free(&r);

	/* promotion takes effect at once: f1 becomes pro, held to 50 (it used 50 today) */
	expectf(&S, t.key, "PATCH", "/v1/customers/f1", 200, "{\"tier\":\"pro\"}");
	r = CHECK(t.key, "{\"customer_id\":\"f1\",\"meter\":\"tokens\",\"amount\":1,\"dry_run\":true}");
	ck_status(r, 429);
	ck_assert_str_eq(jstr(r.json, "binding_limit"), "t");
	ck_state(r.json, "t", NULL, 50, 0, 0);
	ck_assert_ptr_null(lim_of(r.json, "d", NULL));
	resp_free(&r);
	/* the platform counter rebuilt from PostgreSQL: every customer's usage (vip 250 + f1 50) */
	redis_drop_tenant(t.id);
	r = CHECK(t.key, "{\"customer_id\":\"p1\",\"meter\":\"tokens\",\"amount\":0,\"dry_run\":true}");
	ck_status(r, 200);
	ck_state(r.json, "plat", NULL, 300, 0, 99700);
	resp_free(&r);
	/* removing the customer limit puts vip back on its tier's (it used 250: over) */
	expectf(&S, t.key, "DELETE", "/v1/limits/c", 200, NULL);
	r = CHECK(t.key, "{\"customer_id\":\"vip\",\"meter\":\"tokens\",\"amount\":1,\"dry_run\":true}");
	ck_status(r, 429);
	ck_assert_str_eq(jstr(r.json, "binding_limit"), "t");
	ck_state(r.json, "t", NULL, 250, 0, 0);
	resp_free(&r);
}
END_TEST

/* ---- 5. soft and shadow ---- */

START_TEST(soft_and_shadow)
{
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"soft\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":10,\"enforcement\":\"soft\"}");
	struct resp r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":8,\"consume\":true}");
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "decision"), "allow");
	ck_assert_int_eq(json_array_size(jpath(r.json, "warnings")), 0);
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":5,\"consume\":true}");
	ck_status(r, 200);
	ck_assert(json_is_true(jpath(r.json, "allowed")));
	ck_assert_str_eq(jstr(r.json, "decision"), "warn");
	ck_assert(json_is_null(jpath(r.json, "code")));
	ck_assert(json_is_null(jpath(r.json, "retry_after")));
	ck_assert_int_eq(json_array_size(jpath(r.json, "warnings")), 1);
	{
		char *w = json_dumps(jpath(r.json, "warnings.0"), JSON_ENCODE_ANY);
		ck_assert_msg(w && strstr(w, "soft"), "the warning names the limit: %s", w ? w : "?");
		free(w);
	}
	json_t *l = lim_must(r.json, "soft", NULL);
	ck_assert_str_eq(jstr(l, "enforcement"), "soft");
	ck_assert(json_is_true(jpath(l, "exceeded")));
	ck_qty(l, "used", 13);
	ck_qty(l, "remaining", 0);
	ck_assert_ptr_null(resp_header(&r, "Retry-After"));
	resp_free(&r);
	/* the usage was counted: 13 and then 14 */
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1,\"consume\":true}");
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "decision"), "warn");
	ck_qty(lim_must(r.json, "soft", NULL), "used", 14);
	resp_free(&r);
	r = req(&S, "GET", "/v1/customers/c/usage", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_qty(lim_must(r.json, "soft", NULL), "used", 14);
	resp_free(&r);

	/* shadow: never denies, reported with shadow: true */
	struct tenant s = tokens_tenant(false);
	expectf(&S, s.key, "POST", "/v1/limits", 201,
		"{\"id\":\"sh\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":5,\"enforcement\":\"shadow\"}");
	expectf(&S, s.key, "POST", "/v1/limits", 201,
		"{\"id\":\"hard\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":100}");
	expectf(&S, s.key, "POST", "/v1/limits", 201,
		"{\"id\":\"shr\",\"meter\":\"requests\",\"kind\":\"rate\",\"window\":3600,\"limit\":1,\"enforcement\":\"shadow\"}");
	for (int i = 1; i <= 3; i++) {
		r = CHECK(s.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":4,\"consume\":true}");
		ck_status(r, 200);
		ck_assert_str_eq(jstr(r.json, "decision"), "allow");
		ck_assert_int_eq(json_array_size(jpath(r.json, "warnings")), 0);
		json_t *e = lim_must(r.json, "sh", NULL);
		ck_assert(json_is_true(jpath(e, "shadow")));
		ck_assert_str_eq(jstr(e, "enforcement"), "shadow");
		ck_qty(e, "used", 4 * i);
		ck_assert(json_is_boolean(jpath(e, "exceeded")));
		ck_assert(json_is_true(jpath(e, "exceeded")) == (4 * i > 5));
		json_t *er = lim_must(r.json, "shr", NULL);
		ck_assert(json_is_true(jpath(er, "shadow")));
		ck_assert(json_is_true(jpath(er, "exceeded")) == (i > 1));
		json_t *hs = jpath(lim_must(r.json, "hard", NULL), "shadow");
		ck_assert(!hs || json_is_false(hs));
		/* a shadow limit is never the binding one */
		ck_assert_str_eq(jstr(r.json, "binding_limit"), "hard");
		resp_free(&r);
	}
	/* the hard limit still denies, shadow or not */
	r = CHECK(s.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":89,\"consume\":true}");
	ck_status(r, 429);
	ck_assert_str_eq(jstr(r.json, "binding_limit"), "hard");
	resp_free(&r);
}
END_TEST

/* ---- 6. filters ---- */

START_TEST(filters_apply_to_matching_dimensions)
{
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"g4\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":100,\"filter\":{\"model\":\"gpt-4\"}}");
	struct resp r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":60,\"dimensions\":{\"model\":\"gpt-4\"},\"consume\":true}");
	ck_status(r, 200);
	ck_state(r.json, "g4", NULL, 60, 0, 40);
	resp_free(&r);
	/* other models, or none: the limit does not apply */
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1000,\"dimensions\":{\"model\":\"gpt-3.5\"},\"consume\":true}");
	ck_status(r, 200);
	ck_assert_int_eq(nlimits(r.json), 0);
	ck_assert(json_is_null(jpath(r.json, "binding_limit")));
	ck_assert_ptr_null(resp_header(&r, "RateLimit-Limit"));
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1000,\"consume\":true}");
	ck_status(r, 200);
	ck_assert_int_eq(nlimits(r.json), 0);
	resp_free(&r);
	/* case matters */
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1000,\"dimensions\":{\"model\":\"GPT-4\"},\"dry_run\":true}");
	ck_status(r, 200);
	resp_free(&r);
	/* events: only gpt-4 ones count toward it */
	r = callf(&S, t.key, "POST", "/v1/events",
		  "{\"events\":[{\"customer_id\":\"c\",\"type\":\"llm\",\"properties\":{\"tokens\":500,\"model\":\"gpt-3.5\"}},"
		  "{\"customer_id\":\"c\",\"type\":\"llm\",\"properties\":{\"tokens\":30,\"model\":\"gpt-4\"}},"
		  "{\"customer_id\":\"c\",\"type\":\"llm\",\"properties\":{\"tokens\":7}}]}");
	ck_status(r, 200);
	ck_assert_int_eq(jint(r.json, "accepted"), 3);
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":11,\"dimensions\":{\"model\":\"gpt-4\"},\"dry_run\":true}");
	ck_status(r, 429);
	ck_assert_str_eq(jstr(r.json, "binding_limit"), "g4");
	ck_state(r.json, "g4", NULL, 90, 0, 10);
	resp_free(&r);
	/* extra dimensions do not stop a match */
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":10,\"dimensions\":{\"model\":\"gpt-4\",\"feature\":\"chat\"},\"consume\":true}");
	ck_status(r, 200);
	ck_state(r.json, "g4", NULL, 100, 0, 0);
	resp_free(&r);
	/* rebuilt from PostgreSQL (this tenant's Redis keys dropped): still exactly the gpt-4 usage */
	redis_drop_tenant(t.id);
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1,\"dimensions\":{\"model\":\"gpt-4\"},\"dry_run\":true}");
	ck_status(r, 429);
	ck_state(r.json, "g4", NULL, 100, 0, 0);
	resp_free(&r);
	r = req(&S, "GET", "/v1/customers/c/usage", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_state(r.json, "g4", NULL, 100, 0, 0);
	resp_free(&r);
}
END_TEST

/* ---- 7. organisations ---- */

START_TEST(organisation_limits_count_members)
{
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"acme\"}");
	expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"m1\",\"parent_id\":\"acme\"}");
	expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"m2\",\"parent_id\":\"acme\"}");
	expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"solo\"}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"org\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":100,\"scope\":\"customer\","
		"\"customer_id\":\"acme\"}");

	struct resp r = CHECK(t.key, "{\"customer_id\":\"m1\",\"meter\":\"tokens\",\"amount\":50,\"consume\":true}");
	ck_status(r, 200);
	json_t *e = lim_must(r.json, "org", NULL);
	ck_assert_str_eq(jstr(e, "subject"), "organization");
	ck_assert_str_eq(jstr(e, "scope"), "customer");
	ck_state(r.json, "org", "organization", 50, 0, 50);
	ck_assert_str_eq(jstr(r.json, "binding_limit"), "org");
	resp_free(&r);
	/* an event of the other member counts too */
	r = callf(&S, t.key, "POST", "/v1/events", "{\"customer_id\":\"m2\",\"type\":\"llm\",\"properties\":{\"tokens\":30}}");
	ck_status(r, 200);
	ck_assert_int_eq(jint(r.json, "accepted"), 1);
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"m2\",\"meter\":\"tokens\",\"amount\":20,\"consume\":true}");
	ck_status(r, 200);
	ck_state(r.json, "org", "organization", 100, 0, 0);
	resp_free(&r);
	/* full: both members denied, by the organisation's limit */
	const char *ms[] = {"m1", "m2"};
	for (int i = 0; i < 2; i++) {
		r = CHECK(t.key, "{\"customer_id\":\"%s\",\"meter\":\"tokens\",\"amount\":1,\"consume\":true}", ms[i]);
		ck_status(r, 429);
		ck_assert_str_eq(jstr(r.json, "code"), "quota_exceeded");
		ck_assert_str_eq(jstr(r.json, "binding_limit"), "org");
		ck_state(r.json, "org", "organization", 100, 0, 0);
		ck_assert(json_is_true(jpath(lim_must(r.json, "org", NULL), "exceeded")));
		resp_free(&r);
	}
	/* the organisation itself sees its total */
	r = CHECK(t.key, "{\"customer_id\":\"acme\",\"meter\":\"tokens\",\"amount\":1,\"dry_run\":true}");
	ck_status(r, 429);
	ck_state(r.json, "org", NULL, 100, 0, 0);
	resp_free(&r);
	/* a customer outside the organisation is not affected */
	r = CHECK(t.key, "{\"customer_id\":\"solo\",\"meter\":\"tokens\",\"amount\":1000,\"dry_run\":true}");
	ck_status(r, 200);
	ck_assert_int_eq(nlimits(r.json), 0);
	resp_free(&r);
	/* usage reads: a member's lists the organisation's limit with the total */
	r = req(&S, "GET", "/v1/customers/m1/usage", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_state(r.json, "org", "organization", 100, 0, 0);
	resp_free(&r);
	r = req(&S, "GET", "/v1/customers/acme/usage", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_state(r.json, "org", NULL, 100, 0, 0);
	resp_free(&r);
	/* rebuilt after Redis lost this tenant's keys: the same total */
	redis_drop_tenant(t.id);
	r = CHECK(t.key, "{\"customer_id\":\"m2\",\"meter\":\"tokens\",\"amount\":1,\"dry_run\":true}");
	ck_status(r, 429);
	ck_state(r.json, "org", "organization", 100, 0, 0);
	resp_free(&r);
	/* raising the organisation's limit lets members through again */
	expectf(&S, t.key, "PATCH", "/v1/limits/org", 200, "{\"limit\":101}");
	r = CHECK(t.key, "{\"customer_id\":\"m1\",\"meter\":\"tokens\",\"amount\":1,\"consume\":true}");
	ck_status(r, 200);
	ck_state(r.json, "org", "organization", 101, 0, 0);
	resp_free(&r);
	/* m1 leaves the organisation: its limit no longer applies to m1, and m1's new usage is not the org's */
	expectf(&S, t.key, "PATCH", "/v1/customers/m1", 200, "{\"parent_id\":null}");
	r = CHECK(t.key, "{\"customer_id\":\"m1\",\"meter\":\"tokens\",\"amount\":5,\"consume\":true}");
	ck_status(r, 200);
	ck_assert_ptr_null(lim_of(r.json, "org", NULL));
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"m2\",\"meter\":\"tokens\",\"amount\":0,\"dry_run\":true}");
	ck_status(r, 200);
	ck_state(r.json, "org", "organization", 101, 0, 0);
	resp_free(&r);
	/* a new member's usage counts at once */
	expectf(&S, t.key, "PATCH", "/v1/customers/solo", 200, "{\"parent_id\":\"acme\"}");
	expectf(&S, t.key, "PATCH", "/v1/limits/org", 200, "{\"limit\":110}");
	r = CHECK(t.key, "{\"customer_id\":\"solo\",\"meter\":\"tokens\",\"amount\":9,\"consume\":true}");
	ck_status(r, 200);
	ck_state(r.json, "org", "organization", 110, 0, 0);
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"m2\",\"meter\":\"tokens\",\"amount\":1,\"dry_run\":true}");
	ck_status(r, 429);
	resp_free(&r);
}
END_TEST

/* ---- meters of every aggregation: the live counter equals what PostgreSQL rebuilds ---- */

START_TEST(max_and_latest_meters_consistent)
{
	struct tenant t = tenant_new(&S, false);
	expectf(&S, t.key, "POST", "/v1/meters", 201, "{\"id\":\"peak\",\"event_type\":\"gpu\",\"aggregation\":\"max\",\"property\":\"gb\"}");
	expectf(&S, t.key, "POST", "/v1/meters", 201, "{\"id\":\"seats\",\"event_type\":\"seat\",\"aggregation\":\"latest\",\"property\":\"n\"}");
	expectf(&S, t.key, "POST", "/v1/meters", 201, "{\"id\":\"calls\",\"event_type\":\"api\",\"aggregation\":\"count\"}");
	expectf(&S, t.key, "POST", "/v1/limits", 201, "{\"id\":\"qp\",\"meter\":\"peak\",\"kind\":\"quota\",\"period\":\"month\",\"limit\":100}");
	expectf(&S, t.key, "POST", "/v1/limits", 201, "{\"id\":\"qs\",\"meter\":\"seats\",\"kind\":\"quota\",\"period\":\"month\",\"limit\":100}");
	expectf(&S, t.key, "POST", "/v1/limits", 201, "{\"id\":\"qc\",\"meter\":\"calls\",\"kind\":\"quota\",\"period\":\"month\",\"limit\":100}");
	long long now = real_now();
	struct resp r = callf(&S, t.key, "POST", "/v1/events",
			      "{\"events\":[{\"customer_id\":\"c\",\"type\":\"gpu\",\"timestamp\":\"%s\",\"properties\":{\"gb\":30}},"
			      "{\"customer_id\":\"c\",\"type\":\"gpu\",\"timestamp\":\"%s\",\"properties\":{\"gb\":20}},"
			      "{\"customer_id\":\"c\",\"type\":\"seat\",\"timestamp\":\"%s\",\"properties\":{\"n\":10}},"
			      "{\"customer_id\":\"c\",\"type\":\"seat\",\"timestamp\":\"%s\",\"properties\":{\"n\":7}},"
			      "{\"customer_id\":\"c\",\"type\":\"api\"},{\"customer_id\":\"c\",\"type\":\"api\",\"properties\":{\"x\":\"y\"}}]}",
			      iso(now - 20), iso(now - 10), iso(now - 20), iso(now - 10));
	ck_status(r, 200);
	ck_assert_int_eq(jint(r.json, "accepted"), 6);
	resp_free(&r);
	static const struct {
		const char *meter, *lim;
		double after_events, amount, after_check;
	} m[] = {{"peak", "qp", 30, 40, 40}, {"seats", "qs", 7, 3, 3}, {"calls", "qc", 2, 1, 3}};
	for (int i = 0; i < 3; i++) {
		r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"%s\",\"amount\":0,\"dry_run\":true}", m[i].meter);
		ck_status(r, 200);
		ck_qty(lim_must(r.json, m[i].lim, NULL), "used", m[i].after_events);
		resp_free(&r);
	}
	/* a consuming check records one event of `amount`: the meter aggregates it like any other event */
	for (int i = 0; i < 3; i++) {
		r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"%s\",\"amount\":%g,\"consume\":true}", m[i].meter, m[i].amount);
		ck_status(r, 200);
		resp_free(&r);
	}
	double live[3];
	for (int i = 0; i < 3; i++) {
		r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"%s\",\"amount\":0,\"dry_run\":true}", m[i].meter);
		live[i] = jnum(lim_must(r.json, m[i].lim, NULL), "used");
		resp_free(&r);
	}
	redis_drop_tenant(t.id);
	char report[512] = "";
	for (int i = 0; i < 3; i++) {
		r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"%s\",\"amount\":0,\"dry_run\":true}", m[i].meter);
		double rebuilt = jnum(lim_must(r.json, m[i].lim, NULL), "used");
		resp_free(&r);
		if (live[i] != rebuilt || rebuilt != m[i].after_check)
			snprintf(report + strlen(report), sizeof(report) - strlen(report),
				 "[%s: live counter %g, rebuilt from PostgreSQL %g, want %g] ", m[i].meter, live[i], rebuilt,
				 m[i].after_check);
	}
	ck_assert_msg(report[0] == '\0', "%s", report);
}
END_TEST

/* ---- the live counters stay exact while Redis keeps losing them ---- */

struct race {
	const char *key, *tenant;
	_Atomic bool stop;
	_Atomic int posted;
};

static void race_worker(int i, void *arg)
{
	struct race *x = arg;
	if (i == 0) {
		/* the saboteur: drop the tenant's keys and make a check rebuild them, again and again */
		while (!atomic_load(&x->stop)) {
			redis_drop_tenant(x->tenant);
			struct resp r = CHECK(x->key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":0,\"dry_run\":true}");
			resp_free(&r);
		}
		return;
	}
	for (int k = 0; k < 60; k++) {
		struct resp r = (k % 2) ? callf(&S, x->key, "POST", "/v1/events",
						"{\"customer_id\":\"c\",\"type\":\"llm\",\"properties\":{\"tokens\":1}}")
					: CHECK(x->key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1,\"consume\":true}");
		if (r.status == 200)
			atomic_fetch_add(&x->posted, 1);
		else
			fprintf(stderr, "race: %s answered %ld: %s\n", k % 2 ? "event" : "consuming check", r.status, r.body);
		resp_free(&r);
	}
	if (i == 1)
		atomic_store(&x->stop, true);
}

START_TEST(counters_exact_while_redis_loses_keys)
{
	static struct race x;
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"q\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"month\",\"limit\":1000000}");
	x.key = t.key;
	x.tenant = t.id;
	atomic_store(&x.stop, false);
	atomic_store(&x.posted, 0);
	run_parallel(5, race_worker, &x);
	atomic_store(&x.stop, true);
	int posted = atomic_load(&x.posted);
	ck_assert_int_eq(posted, 240);
	struct resp r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":0,\"dry_run\":true}");
	double live = jnum(lim_must(r.json, "q", NULL), "used");
	resp_free(&r);
	redis_drop_tenant(t.id);
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":0,\"dry_run\":true}");
	double rebuilt = jnum(lim_must(r.json, "q", NULL), "used");
	resp_free(&r);
	ck_assert_msg(rebuilt == posted, "PostgreSQL holds %g of %d", rebuilt, posted);
	ck_assert_msg(live == rebuilt, "the live counter says %g, PostgreSQL %g (usage lost or doubled around a rebuild)", live,
		      rebuilt);
}
END_TEST

/* ---- customers deleted or moved are not served from a stale cache ---- */

START_TEST(deleted_customer_is_forgotten)
{
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "PATCH", "/v1/tenant", 200, "{\"auto_create_customers\":false}");
	expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"x\"}");
	struct resp r = CHECK(t.key, "{\"customer_id\":\"x\"}");
	ck_status(r, 200);
	resp_free(&r);
	expectf(&S, t.key, "DELETE", "/v1/customers/x", 200, NULL);
	long long t0 = mono_ms();
	long st = 0;
	while (mono_ms() - t0 < 1000) {
		r = CHECK(t.key, "{\"customer_id\":\"x\"}");
		st = r.status;
		resp_free(&r);
		if (st == 404)
			break;
		nap_ms(20);
	}
	ck_assert_msg(st == 404, "a deleted customer still passes checks after 1 s (%ld)", st);
	/* and it stays deleted: the checks made meanwhile did not bring it back */
	expect_status(&S, "GET", "/v1/customers/x", t.key, NULL, 404);
}
END_TEST

/* A deleted member takes its usage, counters and holds with it: its reservations no longer hold on its
 * organisation's quota and wallet, and a customer made again under its id starts from nothing (its usage,
 * a requests quota and a rate limit came back before); the organisation keeps the usage it had. */
START_TEST(deleted_member_takes_its_usage_and_holds)
{
	struct tenant t = tokens_tenant(false);
	struct resp r;

	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"q\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"month\",\"limit\":100}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"rq\",\"meter\":\"requests\",\"kind\":\"quota\",\"period\":\"month\",\"limit\":100}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"rl\",\"meter\":\"requests\",\"kind\":\"rate\",\"window\":3600,\"limit\":50}");
	expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"org\"}");
	expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"m\",\"parent_id\":\"org\"}");
	expectf(&S, t.key, "POST", "/v1/check", 200, "{\"customer_id\":\"m\",\"meter\":\"tokens\",\"amount\":40,\"consume\":true}");
	expectf(&S, t.key, "POST", "/v1/check", 200, "{\"customer_id\":\"m\",\"meter\":\"tokens\",\"amount\":30,\"reserve\":true,\"reservation_ttl\":86400}");
	r = CHECK(t.key, "{\"customer_id\":\"org\",\"meter\":\"tokens\",\"amount\":0,\"dry_run\":true}");
	ck_state(r.json, "q", NULL, 40, 30, 30);
	resp_free(&r);
	expectf(&S, t.key, "DELETE", "/v1/customers/m", 200, NULL);
	/* the organisation: its usage stays, the hold goes */
	r = CHECK(t.key, "{\"customer_id\":\"org\",\"meter\":\"tokens\",\"amount\":0,\"dry_run\":true}");
	ck_state(r.json, "q", NULL, 40, 0, 60);
	resp_free(&r);
	r = req(&S, "GET", "/v1/usage?meter=tokens&customer_id=m&granularity=month", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_msg(json_array_size(jpath(r.json, "data")) == 0, "a deleted customer's usage: %s", r.body);
	resp_free(&r);
	/* made again: nothing of the old one */
	expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"m\"}");
	r = CHECK(t.key, "{\"customer_id\":\"m\",\"meter\":\"tokens\",\"amount\":0,\"dry_run\":true}");
	ck_status(r, 200);
	ck_state(r.json, "q", NULL, 0, 0, 100);
	ck_state(r.json, "rq", NULL, 0, 0, 100);
	double left = json_number_value(json_object_get(lim_must(r.json, "rl", NULL), "remaining"));
	ck_assert_msg(left > 49.9, "the new customer's bucket holds %g, not 50", left);
	resp_free(&r);
}
END_TEST


/* "PATCH {"tier": "pro"} promotes at once: the next check uses the new tier's limits" — every time, and a check
 * racing the PATCH must not leave the old tier cached afterwards. */
struct tier_race {
	const char *key;
	char cust[32];
};

static void tier_race_one(int i, void *arg)
{
	struct tier_race *x = arg;
	struct resp r;
	if (i == 0)
		r = CHECK(x->key, "{\"customer_id\":\"%s\",\"meter\":\"tokens\",\"amount\":0,\"dry_run\":true}", x->cust);
	else {
		char path[64];
		snprintf(path, sizeof(path), "/v1/customers/%s", x->cust);
		r = req(&S, "PATCH", path, x->key, "{\"tier\":\"pro\"}", NULL);
		ck_assert_msg(r.status == 200, "PATCH %s: %ld %s", path, r.status, r.body);
	}
	resp_free(&r);
}

START_TEST(customer_changes_apply_at_once)
{
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/tiers", 201, "{\"id\":\"free\"}");
	expectf(&S, t.key, "POST", "/v1/tiers", 201, "{\"id\":\"pro\"}");
	expectf(&S, t.key, "PATCH", "/v1/tenant", 200, "{\"default_tier\":\"free\"}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"free-q\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":10,\"scope\":\"tier\",\"tier\":\"free\"}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"pro-q\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":100,\"scope\":\"tier\",\"tier\":\"pro\"}");
	expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"flip\"}");
	int wrong = 0;
	char example[200] = "";
	for (int i = 0; i < 20; i++) {
		const char *tier = i % 2 ? "free" : "pro";
		expectf(&S, t.key, "PATCH", "/v1/customers/flip", 200, "{\"tier\":\"%s\"}", tier);
		struct resp r = CHECK(t.key, "{\"customer_id\":\"flip\",\"meter\":\"tokens\",\"amount\":50,\"dry_run\":true}");
		long want = i % 2 ? 429 : 200;
		if (r.status != want && !wrong++)
			snprintf(example, sizeof(example), "after PATCH tier %s the next check got %ld (binding %s)", tier, r.status,
				 json_is_string(jpath(r.json, "binding_limit")) ? jstr(r.json, "binding_limit") : "-");
		resp_free(&r);
	}
	/* checks racing the promotion of customers not cached yet */
	static struct tier_race x[30];
	for (int i = 0; i < 30; i++) {
		x[i].key = t.key;
		snprintf(x[i].cust, sizeof(x[i].cust), "race-%d", i);
		expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"%s\"}", x[i].cust);
		run_parallel(2, tier_race_one, &x[i]);
	}
	nap_ms(1200);
	int stale = 0;
	for (int i = 0; i < 30; i++) {
		struct resp r = CHECK(t.key, "{\"customer_id\":\"%s\",\"meter\":\"tokens\",\"amount\":50,\"dry_run\":true}", x[i].cust);
		if (r.status != 200)
			stale++;
		resp_free(&r);
	}
	ck_assert_msg(wrong == 0 && stale == 0,
		      "%d of 20 checks right after a tier PATCH used the old tier (e.g. %s); %d of 30 customers promoted while a "
		      "check was loading them were still held to the old tier 1.2 s later",
		      wrong, example, stale);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("checks");
	TCase *tc = tcase_create("checks");

	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, check_response_shape_and_headers);
	tcase_add_test(tc, check_defaults_requests_and_amount);
	tcase_add_test(tc, check_quota_denial_retry_after);
	tcase_add_test(tc, check_amount_over_limit_no_retry_after);
	tcase_add_test(tc, check_dry_run_consumes_nothing);
	tcase_add_test(tc, check_auto_create_customers);
	tcase_add_test(tc, check_bad_inputs);
	tcase_add_test(tc, slot_precedence);
	tcase_add_test(tc, soft_and_shadow);
	tcase_add_test(tc, filters_apply_to_matching_dimensions);
	tcase_add_test(tc, organisation_limits_count_members);
	tcase_add_test(tc, max_and_latest_meters_consistent);
	tcase_add_test(tc, counters_exact_while_redis_loses_keys);
	tcase_add_test(tc, deleted_customer_is_forgotten);
	tcase_add_test(tc, deleted_member_takes_its_usage_and_holds);
	tcase_add_test(tc, customer_changes_apply_at_once);
	suite_add_tcase(s, tc);
	return run_suite(s);
}

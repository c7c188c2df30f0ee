/* test_governance.c — governance for LLM and agent traffic (issue 7) over real HTTP, Redis and PostgreSQL:
 * model fallbacks (one step, a chain, cycles refused at creation and stopped at evaluation), entitlement
 * by tier (a hard quota of 0), workflow guards (every guard on its own, termination for good, one
 * workflow.terminated webhook to a real receiver), dry runs that change nothing (counters, throttle
 * webhooks, audit, metrics), the audit log (before/after, actor, request id, filters, pages, tenant
 * isolation, no secrets, test clocks) and the RateLimit headers of a 402. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "receiver.h"
#define MTEST_ONE_SERVER
#include "mtest.h"

/* A check; the caller frees. */
#define CHECK(key, ...) callf(&S, key, "POST", "/v1/check", __VA_ARGS__)

/* ---- small helpers ---- */

/* A POST /v1/limits that must be accepted. */
#define LIMIT(key, ...) expectf(&S, key, "POST", "/v1/limits", 201, __VA_ARGS__)

/* A quota on tokens for one model, a month long; fallback: the model to fall back to, or NULL (deny). */
static void model_quota(const char *key, const char *id, const char *model, double limit, const char *fallback)
{
	if (fallback)
		LIMIT(key,
		      "{\"id\":\"%s\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\",\"limit\":%g,"
		      "\"filter\":{\"model\":\"%s\"},\"on_exceed\":{\"action\":\"fallback\",\"dimensions\":{\"model\":\"%s\"}}}",
		      id, limit, model, fallback);
	else
		LIMIT(key,
		      "{\"id\":\"%s\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\",\"limit\":%g,"
		      "\"filter\":{\"model\":\"%s\"}}",
		      id, limit, model);
}

/* A tokens check for one model (consume or not); the caller frees. */
static struct resp model_check(const char *key, const char *cust, const char *model, double amount, bool consume)
{
	return CHECK(key, "{\"customer_id\":\"%s\",\"meter\":\"tokens\",\"amount\":%g,\"dimensions\":{\"model\":\"%s\"}%s}",
		     cust, amount, model, consume ? ",\"consume\":true" : "");
}

/* A consuming check that must be allowed as it is (no fallback). */
static void use_model(const char *key, const char *cust, const char *model, double amount)
{
	struct resp r = model_check(key, cust, model, amount, true);
	ck_assert_msg(r.status == 200 && !strcmp(jstr(r.json, "decision"), "allow"), "consuming %g of %s for %s: %ld %s",
		      amount, model, cust, r.status, r.body);
	resp_free(&r);
}

/* An allowed check answered with a fallback to exactly {"model": model}. */
static void ck_fallback(const struct resp *r, const char *model)
{
	ck_assert_msg(r->status == 200, "expected a fallback (200), got %ld: %s", r->status, r->body);
	ck_assert_msg(json_is_true(jpath(r->json, "allowed")), "not allowed: %s", r->body);
	ck_assert_msg(!strcmp(jstr(r->json, "decision"), "fallback"), "decision is not fallback: %s", r->body);
	ck_assert_msg(json_is_null(jpath(r->json, "code")), "code on an allowed fallback: %s", r->body);
	json_t *fb = jpath(r->json, "fallback");
	ck_assert_msg(json_is_object(fb) && json_object_size(fb) == 1, "fallback object: %s", r->body);
	ck_assert_msg(!strcmp(jstr(fb, "model"), model), "fallback.model: want %s in %s", model, r->body);
}

/* A 429 quota denial decided by `binding`. */
static void ck_quota_denied(const struct resp *r, const char *binding)
{
	ck_assert_msg(r->status == 429, "expected 429, got %ld: %s", r->status, r->body);
	ck_assert_msg(json_is_false(jpath(r->json, "allowed")), "allowed on a 429: %s", r->body);
	ck_assert_str_eq(jstr(r->json, "decision"), "deny");
	ck_assert_str_eq(jstr(r->json, "code"), "quota_exceeded");
	ck_assert_msg(!strcmp(jstr(r->json, "binding_limit"), binding), "binding_limit: want %s in %s", binding, r->body);
	ck_assert_msg(jpath(r->json, "fallback") == NULL, "a denial carries a fallback: %s", r->body);
}

/* The usage of one model for a customer today and yesterday (GET /v1/usage grouped by model). */
static double model_usage(const char *key, const char *cust, const char *model)
{
	char path[512];
	long long now = real_now();
	double sum = 0;
	json_t *e;
	size_t i;

	snprintf(path, sizeof(path), "/v1/usage?meter=tokens&customer_id=%s&group_by=model&granularity=day&from=%s&to=%s",
		 cust, iso(now / 86400 * 86400 - 86400), iso(now / 86400 * 86400 + 86400));
	struct resp r = req(&S, "GET", path, key, NULL, NULL);
	ck_status(r, 200);
	json_array_foreach(jpath(r.json, "data"), i, e) {
		const char *m = json_string_value(jpath(e, "dimensions.model"));
		if (m && !strcmp(m, model))
			sum += jnum(e, "value");
	}
	resp_free(&r);
	return sum;
}

/* The id of the tenant's (only) API key. */
static void key_id_of(const char *key, char *out, size_t size)
{
	struct resp r = req(&S, "GET", "/v1/api_keys", key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_msg(json_array_size(jpath(r.json, "data")) >= 1, "no keys: %s", r.body);
	snprintf(out, size, "%s", jstr(r.json, "data.0.id"));
	ck_assert_msg(!strncmp(out, "key_", 4), "key id %s", out);
	resp_free(&r);
}

/* GET /v1/audit<query>; the caller frees. */
static struct resp audit(const char *key, const char *query)
{
	char path[512];
	snprintf(path, sizeof(path), "/v1/audit%s", query);
	return req(&S, "GET", path, key, NULL, NULL);
}

/* Poll GET /v1/audit<query> until it lists at least n entries (the writer records some asynchronously). */
static size_t audit_wait(const char *key, const char *query, size_t n, int timeout_ms)
{
	long long until = mono_ms() + timeout_ms;
	size_t have;

	for (;;) {
		struct resp r = audit(key, query);
		ck_status(r, 200);
		have = json_array_size(jpath(r.json, "data"));
		resp_free(&r);
		if (have >= n || mono_ms() >= until)
			return have;
		nap_ms(100);
	}
}

/* Does any string anywhere in v (keys or values) contain needle? */
static bool json_has_text(json_t *v, const char *needle)
{
	const char *k;
	json_t *x;
	size_t i;

	if (json_is_string(v))
		return strstr(json_string_value(v), needle) != NULL;
	if (json_is_object(v)) {
		json_object_foreach(v, k, x)
			if (strstr(k, needle) || json_has_text(x, needle))
				return true;
	}
	if (json_is_array(v)) {
		json_array_foreach(v, i, x)
			if (json_has_text(x, needle))
				return true;
	}
	return false;
}

/* ---- workflows ---- */

/* A check carrying a workflow (meter requests); the caller frees. */
static struct resp wf_check(const char *key, const char *cust, const char *wf, const char *tool, const char *args,
			    int depth)
{
	return CHECK(key,
		     "{\"customer_id\":\"%s\",\"workflow\":{\"id\":\"%s\",\"tool\":\"%s\",\"args_hash\":\"%s\",\"depth\":%d}}",
		     cust, wf, tool, args, depth);
}

/* Allowed, the workflow still running, with this many tool calls counted. */
static void ck_wf_allowed(const struct resp *r, const char *wf, long long calls)
{
	ck_assert_msg(r->status == 200, "workflow %s: expected 200, got %ld: %s", wf, r->status, r->body);
	ck_assert_msg(json_is_object(jpath(r->json, "workflow")), "no workflow object: %s", r->body);
	ck_assert_str_eq(jstr(r->json, "workflow.id"), wf);
	ck_assert_msg(json_is_false(jpath(r->json, "workflow.terminated")), "terminated on a 200: %s", r->body);
	ck_assert_msg(json_is_null(jpath(r->json, "workflow.guard")), "a guard named on a 200: %s", r->body);
	if (calls >= 0)
		ck_assert_msg(jint(r->json, "workflow.tool_calls") == calls, "tool_calls: want %lld in %s", calls, r->body);
}

/* 429 workflow_limit: terminated by `guard` of limit `limit_id` (NULL: a limit since deleted, binding_limit null),
 * no Retry-After (waiting will not help). */
static void ck_wf_denied(const struct resp *r, const char *wf, const char *guard, const char *limit_id)
{
	ck_assert_msg(r->status == 429, "workflow %s: expected 429 (%s), got %ld: %s", wf, guard, r->status, r->body);
	ck_assert_msg(json_is_false(jpath(r->json, "allowed")), "allowed: %s", r->body);
	ck_assert_str_eq(jstr(r->json, "decision"), "deny");
	ck_assert_msg(!strcmp(jstr(r->json, "code"), "workflow_limit"), "code: want workflow_limit in %s", r->body);
	ck_assert_msg(json_is_true(jpath(r->json, "workflow.terminated")), "workflow.terminated not true: %s", r->body);
	ck_assert_msg(json_is_string(jpath(r->json, "workflow.guard")) && !strcmp(jstr(r->json, "workflow.guard"), guard),
		      "workflow.guard: want %s in %s", guard, r->body);
	ck_assert_str_eq(jstr(r->json, "workflow.id"), wf);
	if (limit_id)
		ck_assert_msg(json_is_string(jpath(r->json, "binding_limit")) && !strcmp(jstr(r->json, "binding_limit"), limit_id),
			      "binding_limit: want %s in %s", limit_id, r->body);
	else /* the guard's limit was deleted */
		ck_assert_msg(json_is_null(jpath(r->json, "binding_limit")), "binding_limit of a deleted limit: %s", r->body);
	ck_assert_msg(json_is_null(jpath(r->json, "retry_after")), "retry_after on a terminated workflow: %s", r->body);
	ck_assert_msg(resp_header(r, "Retry-After") == NULL, "Retry-After on a terminated workflow: %s",
		      resp_header(r, "Retry-After"));
}

/* One workflow check that must be allowed (calls: its tool calls so far) or denied by a guard. */
static void expect_wf_allowed(const char *key, const char *cust, const char *wf, const char *tool, const char *args,
			      int depth, long long calls)
{
	struct resp r = wf_check(key, cust, wf, tool, args, depth);
	ck_wf_allowed(&r, wf, calls);
	resp_free(&r);
}

static void expect_wf_denied(const char *key, const char *cust, const char *wf, const char *tool, const char *args,
			     int depth, const char *guard, const char *limit_id)
{
	struct resp r = wf_check(key, cust, wf, tool, args, depth);
	ck_wf_denied(&r, wf, guard, limit_id);
	resp_free(&r);
}

/* ======== 1. fallbacks ======== */

START_TEST(fallback_to_cheaper_model)
{
	struct tenant t = tokens_tenant(false);
	model_quota(t.key, "g4", "gpt-4", 100, "gpt-4o-mini");
	model_quota(t.key, "mini", "gpt-4o-mini", 50, NULL);

	/* room left: a plain allow, no fallback */
	struct resp r = model_check(t.key, "c", "gpt-4", 60, true);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "decision"), "allow");
	ck_assert_msg(jpath(r.json, "fallback") == NULL, "fallback on a plain allow: %s", r.body);
	resp_free(&r);
	use_model(t.key, "c", "gpt-4", 40);
	ck_assert_msg(limit_used(&S, t.key, "c", "g4") == 100, "gpt-4 used %g", limit_used(&S, t.key, "c", "g4"));

	/* gpt-4 exhausted: the answer names the cheaper model */
	r = model_check(t.key, "c", "gpt-4", 10, false);
	ck_fallback(&r, "gpt-4o-mini");
	json_t *l = lim_must(r.json, "mini", NULL);
	ck_qty(l, "used", 0);
	ck_qty(l, "remaining", 50);
	ck_assert_msg(lim_of(r.json, "g4", NULL) == NULL, "the fallback's limits[] lists the gpt-4 quota: %s", r.body);
	resp_free(&r);
	ck_assert_msg(limit_used(&S, t.key, "c", "mini") == 0, "a non-consuming fallback used %g of mini",
		      limit_used(&S, t.key, "c", "mini"));

	/* consuming: the usage goes to the fallback's dimensions */
	r = model_check(t.key, "c", "gpt-4", 10, true);
	ck_fallback(&r, "gpt-4o-mini");
	ck_state(r.json, "mini", NULL, 10, 0, 40);
	resp_free(&r);
	ck_assert_msg(limit_used(&S, t.key, "c", "mini") == 10, "mini counter after a consuming fallback: %g (want 10)",
		      limit_used(&S, t.key, "c", "mini"));
	ck_assert_msg(limit_used(&S, t.key, "c", "g4") == 100, "gpt-4 counter moved on a fallback: %g (want 100)",
		      limit_used(&S, t.key, "c", "g4"));
	ck_assert_msg(model_usage(t.key, "c", "gpt-4o-mini") == 10, "usage of gpt-4o-mini: %g (want 10)",
		      model_usage(t.key, "c", "gpt-4o-mini"));
	ck_assert_msg(model_usage(t.key, "c", "gpt-4") == 100, "usage of gpt-4: %g (want 100)",
		      model_usage(t.key, "c", "gpt-4"));
	/* the recorded event carries the model actually used */
	r = req(&S, "GET", "/v1/events?customer_id=c&limit=1", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_msg(!strcmp(jstr(r.json, "data.0.properties.model"), "gpt-4o-mini"), "the fallback's event: %s", r.body);
	ck_qty(r.json, "data.0.properties.tokens", 10);
	resp_free(&r);

	/* another customer still has its own gpt-4 budget */
	r = model_check(t.key, "other", "gpt-4", 10, false);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "decision"), "allow");
	resp_free(&r);

	/* the fallback exhausted too: a plain 429 from the original limit, waiting helps (month end) */
	use_model(t.key, "c", "gpt-4o-mini", 40);
	r = model_check(t.key, "c", "gpt-4", 10, true);
	ck_quota_denied(&r, "g4");
	ck_assert_msg(json_is_integer(jpath(r.json, "retry_after")) && jint(r.json, "retry_after") > 0,
		      "retry_after: %s", r.body);
	ck_assert_ptr_nonnull(resp_header(&r, "Retry-After"));
	resp_free(&r);
	ck_assert_msg(limit_used(&S, t.key, "c", "mini") == 50 && limit_used(&S, t.key, "c", "g4") == 100,
		      "a denied fallback changed usage: mini %g, g4 %g", limit_used(&S, t.key, "c", "mini"),
		      limit_used(&S, t.key, "c", "g4"));
}
END_TEST

START_TEST(fallback_chain_of_two)
{
	struct tenant t = tokens_tenant(false);
	model_quota(t.key, "g4", "gpt-4", 10, "gpt-4o");
	model_quota(t.key, "g4o", "gpt-4o", 10, "gpt-4o-mini");
	model_quota(t.key, "mini", "gpt-4o-mini", 10, NULL);

	use_model(t.key, "c", "gpt-4", 10);
	/* one step: gpt-4 → gpt-4o */
	struct resp r = model_check(t.key, "c", "gpt-4", 4, true);
	ck_fallback(&r, "gpt-4o");
	resp_free(&r);
	use_model(t.key, "c", "gpt-4o", 6);
	ck_assert_msg(limit_used(&S, t.key, "c", "g4o") == 10, "gpt-4o used %g", limit_used(&S, t.key, "c", "g4o"));

	/* two steps: gpt-4 → gpt-4o → gpt-4o-mini */
	r = model_check(t.key, "c", "gpt-4", 5, true);
	ck_fallback(&r, "gpt-4o-mini");
	ck_state(r.json, "mini", NULL, 5, 0, 5);
	resp_free(&r);
	ck_assert_msg(limit_used(&S, t.key, "c", "g4") == 10 && limit_used(&S, t.key, "c", "g4o") == 10 &&
			      limit_used(&S, t.key, "c", "mini") == 5,
		      "after a two-step fallback: g4 %g, g4o %g, mini %g (want 10, 10, 5)", limit_used(&S, t.key, "c", "g4"),
		      limit_used(&S, t.key, "c", "g4o"), limit_used(&S, t.key, "c", "mini"));
	ck_assert_msg(model_usage(t.key, "c", "gpt-4o-mini") == 5, "usage of gpt-4o-mini %g (want 5)",
		      model_usage(t.key, "c", "gpt-4o-mini"));
	/* also from the middle of the chain */
	r = model_check(t.key, "c", "gpt-4o", 1, false);
	ck_fallback(&r, "gpt-4o-mini");
	resp_free(&r);

	/* the end of the chain does not fit: denied by the first limit */
	r = model_check(t.key, "c", "gpt-4", 6, true);
	ck_quota_denied(&r, "g4");
	resp_free(&r);
	ck_assert_msg(limit_used(&S, t.key, "c", "mini") == 5, "a denied chain used mini: %g",
		      limit_used(&S, t.key, "c", "mini"));
	/* what still fits at the end of the chain is still given */
	r = model_check(t.key, "c", "gpt-4", 5, true);
	ck_fallback(&r, "gpt-4o-mini");
	resp_free(&r);
	ck_assert_msg(limit_used(&S, t.key, "c", "mini") == 10, "mini used %g (want 10)", limit_used(&S, t.key, "c", "mini"));
}
END_TEST

START_TEST(fallback_to_itself_refused_at_creation)
{
	struct tenant t = tokens_tenant(false);

	/* the fallback dimensions still match the limit's own filter */
	struct resp r = callf(&S, t.key, "POST", "/v1/limits",
		  "{\"id\":\"self\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\",\"limit\":10,"
		  "\"filter\":{\"model\":\"gpt-4\"},\"on_exceed\":{\"action\":\"fallback\",\"dimensions\":{\"model\":\"gpt-4\"}}}");
	ck_bad(r, 400, "invalid_parameter", "on_exceed.dimensions");
	resp_free(&r);
	/* no filter: every fallback matches it */
	r = callf(&S, t.key, "POST", "/v1/limits",
		  "{\"id\":\"self2\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\",\"limit\":10,"
		  "\"on_exceed\":{\"action\":\"fallback\",\"dimensions\":{\"model\":\"gpt-4o-mini\"}}}");
	ck_bad(r, 400, "invalid_parameter", "on_exceed.dimensions");
	resp_free(&r);
	/* a bad request changes nothing */
	expect_status(&S, "GET", "/v1/limits/self", t.key, NULL, 404);
	expect_status(&S, "GET", "/v1/limits/self2", t.key, NULL, 404);
	/* a fallback elsewhere is fine, and PATCHing it into a loop is refused the same way */
	model_quota(t.key, "g4", "gpt-4", 10, "gpt-4o-mini");
	r = callf(&S, t.key, "PATCH", "/v1/limits/g4",
		  "{\"on_exceed\":{\"action\":\"fallback\",\"dimensions\":{\"model\":\"gpt-4\"}}}");
	ck_bad(r, 400, "invalid_parameter", "on_exceed.dimensions");
	resp_free(&r);
	r = req(&S, "GET", "/v1/limits/g4", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "on_exceed.dimensions.model"), "gpt-4o-mini");
	resp_free(&r);
}
END_TEST

/* A fallback that does not touch the filtered dimension keeps matching the filter ({"model": "gpt-4",
 * "feature": "cheap"} is still gpt-4): it would fall back to itself, like the cases refused above. */
START_TEST(fallback_on_other_dimension_to_itself_refused)
{
	struct tenant t = tokens_tenant(false);
	struct resp r = callf(&S, t.key, "POST", "/v1/limits",
			      "{\"id\":\"self\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\",\"limit\":10,"
			      "\"filter\":{\"model\":\"gpt-4\"},"
			      "\"on_exceed\":{\"action\":\"fallback\",\"dimensions\":{\"feature\":\"cheap\"}}}");
	if (r.status == 201) {
		resp_free(&r);
		/* accepted: at least evaluation must stop (no hang) with a denial */
		use_model(t.key, "c", "gpt-4", 10);
		long long t0 = mono_ms();
		r = model_check(t.key, "c", "gpt-4", 1, true);
		ck_quota_denied(&r, "self");
		ck_assert_msg(mono_ms() - t0 < 5000, "the self-fallback took %lld ms", mono_ms() - t0);
		resp_free(&r);
		ck_abort_msg("a fallback that keeps the filtered model (filter {model: gpt-4}, fallback {feature: cheap}) "
			     "was accepted at creation; it falls back to itself (stopped only at evaluation)");
	}
	ck_bad(r, 400, "invalid_parameter", "on_exceed.dimensions");
	resp_free(&r);
}
END_TEST

START_TEST(fallback_cycle_across_two_limits_stops)
{
	struct tenant t = tokens_tenant(false);
	model_quota(t.key, "a", "gpt-4", 10, "gpt-4o");
	model_quota(t.key, "b", "gpt-4o", 10, "gpt-4");

	use_model(t.key, "c", "gpt-4", 10);
	struct resp r = model_check(t.key, "c", "gpt-4", 4, true);
	ck_fallback(&r, "gpt-4o");
	resp_free(&r);
	use_model(t.key, "c", "gpt-4o", 6);

	/* both exhausted: gpt-4 → gpt-4o → gpt-4 is a cycle; it ends in a denial, at once */
	long long t0 = mono_ms();
	r = model_check(t.key, "c", "gpt-4", 1, true);
	long long took = mono_ms() - t0;
	ck_quota_denied(&r, "a");
	resp_free(&r);
	ck_assert_msg(took < 5000, "a fallback cycle took %lld ms", took);
	r = model_check(t.key, "c", "gpt-4o", 1, false);
	ck_quota_denied(&r, "b");
	resp_free(&r);
	ck_assert_msg(limit_used(&S, t.key, "c", "a") == 10 && limit_used(&S, t.key, "c", "b") == 10,
		      "a cycle changed usage: a %g, b %g", limit_used(&S, t.key, "c", "a"), limit_used(&S, t.key, "c", "b"));
	/* the server is still fine */
	r = model_check(t.key, "d", "gpt-4", 1, false);
	ck_status(r, 200);
	resp_free(&r);
}
END_TEST

/* ======== 2. entitlement by tier ======== */

START_TEST(entitlement_by_tier)
{
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/tiers", 201, "{\"id\":\"free\"}");
	expectf(&S, t.key, "POST", "/v1/tiers", 201, "{\"id\":\"pro\"}");
	expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"f1\",\"tier\":\"free\"}");
	expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"p1\",\"tier\":\"pro\"}");
	LIMIT(t.key, "{\"id\":\"no-gpt4-free\",\"kind\":\"quota\",\"scope\":\"tier\",\"tier\":\"free\",\"meter\":\"tokens\","
		     "\"period\":\"month\",\"limit\":0,\"enforcement\":\"hard\",\"filter\":{\"model\":\"gpt-4\"}}");

	for (int i = 0; i < 2; i++) { /* the second answer may come from the deny cache: the same */
		struct resp r = model_check(t.key, "f1", "gpt-4", 100, i == 1);
		ck_quota_denied(&r, "no-gpt4-free");
		ck_assert_msg(json_is_null(jpath(r.json, "retry_after")), "retry_after for a model the tier never gets: %s",
			      r.body);
		ck_assert_msg(resp_header(&r, "Retry-After") == NULL, "Retry-After: %s for a model the tier never gets",
			      resp_header(&r, "Retry-After"));
		ck_state(r.json, "no-gpt4-free", NULL, 0, 0, 0);
		resp_free(&r);
	}
	/* the free tier keeps other models; the pro tier gets gpt-4 */
	struct resp r = model_check(t.key, "f1", "gpt-4o-mini", 100, true);
	ck_status(r, 200);
	ck_assert_msg(lim_of(r.json, "no-gpt4-free", NULL) == NULL, "the gpt-4 entitlement applied to another model: %s",
		      r.body);
	resp_free(&r);
	r = model_check(t.key, "p1", "gpt-4", 100, true);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "decision"), "allow");
	ck_assert_msg(lim_of(r.json, "no-gpt4-free", NULL) == NULL, "the free tier's limit applied to pro: %s", r.body);
	resp_free(&r);
	/* promoted: at once */
	expectf(&S, t.key, "PATCH", "/v1/customers/f1", 200, "{\"tier\":\"pro\"}");
	r = model_check(t.key, "f1", "gpt-4", 100, false);
	ck_status(r, 200);
	resp_free(&r);
}
END_TEST

/* ======== 3. workflow guards ======== */

START_TEST(workflow_duplicate_threshold)
{
	struct tenant t = tenant_new(&S, false);
	LIMIT(t.key, "{\"id\":\"agent\",\"kind\":\"workflow\",\"scope\":\"default\",\"duplicate_threshold\":3}");

	for (int i = 1; i <= 3; i++) {
		expect_wf_allowed(t.key, "c", "wf_1", "web_search", "9f2c", 1, i);
	}
	/* the same tool with other arguments is not a duplicate */
	expect_wf_allowed(t.key, "c", "wf_1", "web_search", "other", 1, 4);
	/* the 4th identical call: terminated */
	expect_wf_denied(t.key, "c", "wf_1", "web_search", "9f2c", 1, "duplicate_threshold", "agent");
	/* for good: a different call later is refused too, naming the guard that tripped */
	expect_wf_denied(t.key, "c", "wf_1", "read_file", "aaaa", 1, "duplicate_threshold", "agent");
	/* another workflow is not affected, nor a check without a workflow */
	expect_wf_allowed(t.key, "c", "wf_2", "web_search", "9f2c", 1, 1);
	/* steps naming no tool, or a tool without its arguments' hash, repeat nothing (they used to count as
	 * repeats of one another: a second max_tool_calls) */
	for (int i = 1; i <= 5; i++) {
		struct resp s1 = CHECK(t.key, "{\"customer_id\":\"c\",\"workflow\":{\"id\":\"wf_3\"}}");
		ck_wf_allowed(&s1, "wf_3", 2 * i - 1);
		resp_free(&s1);
		s1 = CHECK(t.key, "{\"customer_id\":\"c\",\"workflow\":{\"id\":\"wf_3\",\"tool\":\"think\"}}");
		ck_wf_allowed(&s1, "wf_3", 2 * i);
		resp_free(&s1);
	}
	struct resp r = CHECK(t.key, "{\"customer_id\":\"c\"}");
	ck_status(r, 200);
	ck_assert_msg(jpath(r.json, "workflow") == NULL, "a workflow object without a workflow: %s", r.body);
	resp_free(&r);
}
END_TEST

/* A workflow kept by a build from before the packed state field (n calls, f first call, t the guard that
 * terminated it) goes on where it was: its calls count on, and a terminated one stays terminated. */
START_TEST(workflow_state_of_an_earlier_build)
{
	struct tenant t = tenant_new(&S, false);
	char cmd[512];
	LIMIT(t.key, "{\"id\":\"calls\",\"kind\":\"workflow\",\"scope\":\"default\",\"max_tool_calls\":3}");

	snprintf(cmd, sizeof(cmd), "HSET 'tg:{%s|wf|wf_old}' n 2 f %lld 'd:a|h' 1", t.id, (long long)time(NULL) * 1000);
	ck_assert_int_eq(redis_cmd(cmd), 0);
	snprintf(cmd, sizeof(cmd), "HSET 'tg:{%s|wf|wf_done}' n 1 f %lld t 1", t.id, (long long)time(NULL) * 1000);
	ck_assert_int_eq(redis_cmd(cmd), 0);
	expect_wf_allowed(t.key, "c", "wf_old", "b", "h", 1, 3);
	expect_wf_denied(t.key, "c", "wf_old", "c", "h", 1, "max_tool_calls", "calls");
	expect_wf_denied(t.key, "c", "wf_done", "a", "h", 1, "max_tool_calls", "calls");
	/* terminated on its first call, the earlier build kept t alone */
	snprintf(cmd, sizeof(cmd), "HSET 'tg:{%s|wf|wf_first}' t 1", t.id);
	ck_assert_int_eq(redis_cmd(cmd), 0);
	expect_wf_denied(t.key, "c", "wf_first", "a", "h", 1, "max_tool_calls", "calls");
	expect_wf_allowed(t.key, "c", "wf_new", "a", "h", 1, 1);
}
END_TEST

/* A workflow terminated by a guard that the configuration no longer has (its limit deleted) stays
 * terminated, naming the guard and no limit; the server once dereferenced the missing limit here. */
START_TEST(workflow_terminated_by_a_deleted_guard)
{
	struct tenant t = tenant_new(&S, false);
	LIMIT(t.key, "{\"id\":\"deep\",\"kind\":\"workflow\",\"scope\":\"default\",\"max_depth\":1}");
	expect_wf_denied(t.key, "c", "wf_x", "a", "h", 2, "max_depth", "deep");
	expectf(&S, t.key, "DELETE", "/v1/limits/deep", 200, NULL);
	LIMIT(t.key, "{\"id\":\"calls\",\"kind\":\"workflow\",\"scope\":\"default\",\"max_tool_calls\":100}");
	expect_wf_denied(t.key, "c", "wf_x", "a", "h", 1, "max_depth", NULL);
	expect_wf_allowed(t.key, "c", "wf_y", "a", "h", 1, 1);
}
END_TEST

START_TEST(workflow_max_tool_calls)
{
	struct tenant t = tenant_new(&S, false);
	LIMIT(t.key, "{\"id\":\"calls\",\"kind\":\"workflow\",\"scope\":\"default\",\"max_tool_calls\":3}");
	const char *tools[] = {"a", "b", "c"};
	for (int i = 0; i < 3; i++) {
		expect_wf_allowed(t.key, "c", "wf_calls", tools[i], "h", 1, i + 1);
	}
	struct resp r = wf_check(t.key, "c", "wf_calls", "d", "h", 1);
	ck_wf_denied(&r, "wf_calls", "max_tool_calls", "calls");
	ck_assert_msg(jint(r.json, "workflow.tool_calls") == 3, "tool_calls on the denial: %s", r.body);
	resp_free(&r);
	expect_wf_denied(t.key, "c", "wf_calls", "e", "h", 1, "max_tool_calls", "calls");
	expect_wf_allowed(t.key, "c", "wf_fresh", "a", "h", 1, 1);
}
END_TEST

START_TEST(workflow_max_depth)
{
	struct tenant t = tenant_new(&S, false);
	LIMIT(t.key, "{\"id\":\"deep\",\"kind\":\"workflow\",\"scope\":\"default\",\"max_depth\":2}");
	expect_wf_allowed(t.key, "c", "wf_d", "plan", "1", 1, 1);
	expect_wf_allowed(t.key, "c", "wf_d", "plan", "2", 2, 2);
	expect_wf_denied(t.key, "c", "wf_d", "plan", "3", 3, "max_depth", "deep");
	/* back at a shallow depth: still terminated */
	expect_wf_denied(t.key, "c", "wf_d", "plan", "4", 1, "max_depth", "deep");
	expect_wf_allowed(t.key, "c", "wf_d2", "plan", "1", 2, 1);
}
END_TEST

START_TEST(workflow_max_duration)
{
	struct tenant t = tenant_new(&S, true);
	LIMIT(t.key, "{\"id\":\"slow\",\"kind\":\"workflow\",\"scope\":\"default\",\"max_duration\":60}");
	expect_wf_allowed(t.key, "c", "wf_t", "x", "1", 1, 1);
	clock_advance(&S, t.key, 59);
	expect_wf_allowed(t.key, "c", "wf_t", "x", "2", 1, 2);
	/* a workflow started now has its own clock */
	expect_wf_allowed(t.key, "c", "wf_late", "x", "1", 1, 1);
	clock_advance(&S, t.key, 2);
	expect_wf_denied(t.key, "c", "wf_t", "x", "3", 1, "max_duration", "slow");
	expect_wf_allowed(t.key, "c", "wf_late", "x", "2", 1, 2);
}
END_TEST

#define PRICED_METER \
	"{\"id\":\"ptok\",\"event_type\":\"pllm\",\"aggregation\":\"sum\",\"property\":\"tokens\",\"price\":{\"default\":0.01}}"

/* A priced check (0.01 per token) in a workflow; the caller frees. */
static struct resp wf_cost_check(const char *key, const char *wf, double tokens, bool consume)
{
	return CHECK(key,
		     "{\"customer_id\":\"c\",\"meter\":\"ptok\",\"amount\":%g%s,"
		     "\"workflow\":{\"id\":\"%s\",\"tool\":\"llm\",\"args_hash\":\"%g%s\"}}",
		     tokens, consume ? ",\"consume\":true" : "", wf, tokens, consume ? "c" : "");
}

START_TEST(workflow_max_cost_by_consuming_checks)
{
	struct tenant t = tenant_new(&S, false);
	expectf(&S, t.key, "POST", "/v1/meters", 201, PRICED_METER);
	LIMIT(t.key, "{\"id\":\"budget\",\"kind\":\"workflow\",\"scope\":\"default\",\"max_cost\":1}");

	/* a check that does not consume records no cost */
	struct resp r = wf_cost_check(t.key, "wf_c", 50, false);
	ck_wf_allowed(&r, "wf_c", 1);
	ck_qty(r.json, "workflow.cost", 0);
	resp_free(&r);
	r = wf_cost_check(t.key, "wf_c", 50, true);
	ck_wf_allowed(&r, "wf_c", 2);
	ck_qty(r.json, "workflow.cost", 0.5);
	resp_free(&r);
	/* exactly at the budget is still within it */
	r = wf_cost_check(t.key, "wf_c", 50, true);
	ck_wf_allowed(&r, "wf_c", 3);
	ck_qty(r.json, "workflow.cost", 1);
	resp_free(&r);
	r = wf_cost_check(t.key, "wf_c", 1, false);
	ck_wf_denied(&r, "wf_c", "max_cost", "budget");
	ck_qty(r.json, "workflow.cost", 1);
	resp_free(&r);
	/* a free check is refused too now: terminated */
	expect_wf_denied(t.key, "c", "wf_c", "noop", "0", 1, "max_cost", "budget");
	r = wf_cost_check(t.key, "wf_c2", 100, false);
	ck_wf_allowed(&r, "wf_c2", 1);
	resp_free(&r);
}
END_TEST

START_TEST(workflow_max_cost_by_events)
{
	struct tenant t = tenant_new(&S, false);
	expectf(&S, t.key, "POST", "/v1/meters", 201, PRICED_METER);
	LIMIT(t.key, "{\"id\":\"budget\",\"kind\":\"workflow\",\"scope\":\"default\",\"max_cost\":1}");

	/* 80 tokens = 0.8 recorded under wf_e; an event without workflow_id counts for none */
	struct resp r = callf(&S, t.key, "POST", "/v1/events",
			      "{\"events\":[{\"id\":\"e1\",\"customer_id\":\"c\",\"type\":\"pllm\",\"properties\":{\"tokens\":80},"
			      "\"workflow_id\":\"wf_e\"},"
			      "{\"id\":\"e2\",\"customer_id\":\"c\",\"type\":\"pllm\",\"properties\":{\"tokens\":95}}]}");
	ck_status(r, 200);
	ck_assert_msg(jint(r.json, "accepted") == 2, "events: %s", r.body);
	resp_free(&r);

	r = wf_cost_check(t.key, "wf_e", 20, false);
	ck_wf_allowed(&r, "wf_e", 1);
	ck_qty(r.json, "workflow.cost", 0.8);
	resp_free(&r);
	r = wf_cost_check(t.key, "wf_other", 95, false);
	ck_wf_allowed(&r, "wf_other", 1);
	ck_qty(r.json, "workflow.cost", 0);
	resp_free(&r);
	r = wf_cost_check(t.key, "wf_e", 21, false);
	ck_wf_denied(&r, "wf_e", "max_cost", "budget");
	resp_free(&r);
	/* an event after the start of a workflow counts as well */
	r = callf(&S, t.key, "POST", "/v1/events",
		  "{\"id\":\"e3\",\"customer_id\":\"c\",\"type\":\"pllm\",\"properties\":{\"tokens\":96},\"workflow_id\":\"wf_other\"}");
	ck_status(r, 200);
	resp_free(&r);
	r = wf_cost_check(t.key, "wf_other", 5, false);
	ck_wf_denied(&r, "wf_other", "max_cost", "budget");
	resp_free(&r);
}
END_TEST

/* workflow.terminated requests at the receiver for this workflow id */
static int terminated_hooks(struct receiver *rv, const char *wf, json_t **first)
{
	int n = rcv_count(rv), found = 0;

	for (int i = 0; i < n; i++) {
		struct rcv_req q;
		json_error_t je;
		if (!rcv_get(rv, i, &q))
			continue;
		json_t *p = json_loadb(q.body, q.body_len, 0, &je);
		const char *type = p ? json_string_value(json_object_get(p, "type")) : NULL;
		const char *id = p ? json_string_value(jpath(p, "data.workflow_id")) : NULL;
		if (type && id && !strcmp(type, "workflow.terminated") && !strcmp(id, wf)) {
			found++;
			if (first && !*first) {
				char wid[128], ts[64], sig[1024];
				/* what signature verification needs, kept with the payload */
				if (rcv_header(&q, "webhook-id", wid, sizeof(wid)) && rcv_header(&q, "webhook-timestamp", ts, sizeof(ts)) &&
				    rcv_header(&q, "webhook-signature", sig, sizeof(sig))) {
					json_object_set_new(p, "_raw", json_stringn(q.body, q.body_len));
					json_object_set_new(p, "_wid", json_string(wid));
					json_object_set_new(p, "_ts", json_string(ts));
					json_object_set_new(p, "_sig", json_string(sig));
				}
				*first = json_incref(p);
			}
		}
		if (p)
			json_decref(p);
		rcv_req_free(&q);
	}
	return found;
}

START_TEST(workflow_terminated_webhook_once)
{
	struct tenant t = tenant_new(&S, false);
	struct receiver *rv = rcv_start();
	struct resp r = callf(&S, t.key, "POST", "/v1/webhook_endpoints", "{\"url\":\"%s\",\"events\":[\"workflow.terminated\"]}",
			      rcv_url(rv, "/wf"));
	ck_status(r, 201);
	char secret[128];
	snprintf(secret, sizeof(secret), "%s", jstr(r.json, "secret"));
	resp_free(&r);
	LIMIT(t.key, "{\"id\":\"agent\",\"kind\":\"workflow\",\"scope\":\"default\",\"max_tool_calls\":2}");

	expect_wf_allowed(t.key, "cw", "wf_hook", "a", "1", 1, 1);
	expect_wf_allowed(t.key, "cw", "wf_hook", "b", "1", 1, 2);
	for (int i = 0; i < 4; i++) { /* the tripping call, then calls to a terminated workflow */
		expect_wf_denied(t.key, "cw", "wf_hook", i % 2 ? "c" : "d", "1", 1, "max_tool_calls", "agent");
	}
	long long until = mono_ms() + 10000;
	while (terminated_hooks(rv, "wf_hook", NULL) < 1 && mono_ms() < until)
		rcv_wait(rv, rcv_count(rv) + 1, 200);
	ck_assert_msg(terminated_hooks(rv, "wf_hook", NULL) == 1, "no workflow.terminated in 10 s (%d requests)",
		      rcv_count(rv));
	/* and no second one, however many calls followed */
	expect_wf_denied(t.key, "cw", "wf_hook", "e", "1", 1, "max_tool_calls", "agent");
	nap_ms(1500);
	json_t *p = NULL;
	int n = terminated_hooks(rv, "wf_hook", &p);
	ck_assert_msg(n == 1, "%d workflow.terminated deliveries for one workflow (want exactly 1)", n);
	ck_assert_msg(rcv_count(rv) == 1, "%d requests at the receiver (want 1)", rcv_count(rv));
	ck_assert_str_eq(jstr(p, "data.guard"), "max_tool_calls");
	ck_assert_str_eq(jstr(p, "data.limit_id"), "agent");
	ck_assert_str_eq(jstr(p, "data.customer_id"), "cw");
	ck_assert_int_eq(jint(p, "data.tool_calls"), 2);
	ck_assert_msg(json_is_string(json_object_get(p, "_sig")), "the delivery lacks the Standard Webhooks headers");
	const char *raw = jstr(p, "_raw");
	ck_assert_msg(sw_verify(secret, jstr(p, "_wid"), jstr(p, "_ts"), raw, strlen(raw), jstr(p, "_sig")) >= 1,
		      "the workflow.terminated signature does not verify");
	json_decref(p);
	rcv_stop(rv);
}
END_TEST

/* ======== 4. dry runs ======== */

START_TEST(dry_run_changes_no_counter)
{
	struct tenant t = tokens_tenant(false);
	LIMIT(t.key, "{\"id\":\"rb\",\"kind\":\"rate\",\"meter\":\"requests\",\"limit\":5,\"window\":3600,"
		     "\"algorithm\":\"token_bucket\"}");
	LIMIT(t.key, "{\"id\":\"q\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"day\",\"limit\":100}");
	LIMIT(t.key, "{\"id\":\"wfg\",\"kind\":\"workflow\",\"scope\":\"default\",\"max_tool_calls\":2}");

	for (int i = 0; i < 20; i++) {
		struct resp r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":100,\"consume\":true,"
					     "\"dry_run\":true}");
		ck_status(r, 200);
		ck_assert_msg(json_is_true(jpath(r.json, "dry_run")), "no dry_run: true in %s", r.body);
		ck_qty(lim_must(r.json, "q", NULL), "used", 0);
		resp_free(&r);
	}
	for (int i = 0; i < 10; i++) { /* denied dry runs */
		struct resp r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":101,\"dry_run\":true}");
		ck_quota_denied(&r, "q");
		resp_free(&r);
	}
	for (int i = 0; i < 6; i++) { /* workflow dry runs count no tool call, and do not terminate */
		struct resp r = CHECK(t.key, "{\"customer_id\":\"w\",\"dry_run\":true,"
					     "\"workflow\":{\"id\":\"wf_dry\",\"tool\":\"t\",\"args_hash\":\"%d\"}}", i);
		ck_assert_msg(r.status == 200, "workflow dry run %d: %ld %s", i, r.status, r.body);
		resp_free(&r);
	}
	/* a dry run does not even create the customer */
	struct resp r0 = req(&S, "GET", "/v1/customers/c", t.key, NULL, NULL);
	ck_status(r0, 404);
	resp_free(&r0);

	/* the real checks see the whole budget: 100 tokens, 5 requests, 2 tool calls */
	struct resp r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":100,\"consume\":true}");
	ck_status(r, 200);
	ck_assert_msg(jpath(r.json, "dry_run") == NULL || json_is_false(jpath(r.json, "dry_run")), "dry_run on a real check");
	ck_state(r.json, "q", NULL, 100, 0, 0);
	ck_qty(lim_must(r.json, "rb", NULL), "remaining", 4);
	resp_free(&r);
	for (int i = 2; i <= 5; i++) {
		r = CHECK(t.key, "{\"customer_id\":\"c\"}");
		ck_assert_msg(r.status == 200, "real check %d of 5: %ld %s", i, r.status, r.body);
		resp_free(&r);
	}
	r = CHECK(t.key, "{\"customer_id\":\"c\"}");
	ck_assert_msg(r.status == 429 && !strcmp(jstr(r.json, "code"), "rate_limited"),
		      "the 6th real check: %ld %s (want 429 rate_limited)", r.status, r.body);
	resp_free(&r);
	for (int i = 1; i <= 2; i++) {
		expect_wf_allowed(t.key, "w", "wf_dry", "t", i == 1 ? "x" : "y", 1, i);
	}
	r = wf_check(t.key, "w", "wf_dry", "t", "z", 1);
	ck_wf_denied(&r, "wf_dry", "max_tool_calls", "wfg");
	/* a guard's denial still carries the RateLimit headers of the limit with the least room (rb: 3 of 5 left) */
	const char *rl = resp_header(&r, "RateLimit-Limit");
	ck_assert_msg(rl && !strcmp(rl, "5"), "RateLimit-Limit on workflow_limit: %s (want 5)", rl ? rl : "(none)");
	rl = resp_header(&r, "RateLimit-Remaining");
	ck_assert_msg(rl && !strcmp(rl, "3"), "RateLimit-Remaining on workflow_limit: %s (want 3)", rl ? rl : "(none)");
	rl = resp_header(&r, "RateLimit-Policy");
	ck_assert_msg(rl && !strcmp(rl, "\"rb\";q=5;w=3600"), "RateLimit-Policy on workflow_limit: %s", rl ? rl : "(none)");
	resp_free(&r);
	/* the dry runs created no customer either */
	expect_status(&S, "GET", "/v1/customers/never", t.key, NULL, 404);
	r = CHECK(t.key, "{\"customer_id\":\"never\",\"dry_run\":true}");
	ck_status(r, 200);
	resp_free(&r);
	expect_status(&S, "GET", "/v1/customers/never", t.key, NULL, 404);
}
END_TEST

/* rate_limit.throttled requests at the receiver for this customer */
static int throttled_hooks(struct receiver *rv, const char *cust)
{
	int n = rcv_count(rv), found = 0;

	for (int i = 0; i < n; i++) {
		struct rcv_req q;
		json_error_t je;
		if (!rcv_get(rv, i, &q))
			continue;
		json_t *p = json_loadb(q.body, q.body_len, 0, &je);
		const char *type = p ? json_string_value(json_object_get(p, "type")) : NULL;
		const char *c = p ? json_string_value(jpath(p, "data.customer_id")) : NULL;
		found += type && c && !strcmp(type, "rate_limit.throttled") && !strcmp(c, cust);
		if (p)
			json_decref(p);
		rcv_req_free(&q);
	}
	return found;
}

START_TEST(dry_run_denial_has_no_side_effects)
{
	struct tenant t = tenant_new(&S, false);
	struct receiver *rv = rcv_start();
	char series[256];
	struct resp r = callf(&S, t.key, "POST", "/v1/webhook_endpoints", "{\"url\":\"%s\",\"events\":[\"rate_limit.throttled\"]}",
			      rcv_url(rv, "/thr"));
	ck_status(r, 201);
	resp_free(&r);
	LIMIT(t.key, "{\"id\":\"rl\",\"kind\":\"rate\",\"meter\":\"requests\",\"limit\":2,\"window\":3600,"
		     "\"algorithm\":\"token_bucket\"}");
	snprintf(series, sizeof(series), "tollgate_throttles_total{tenant=\"%s\",limit=\"rl\",kind=\"rate\"} ", t.id);

	/* d1: the bucket used up by real checks, then only dry runs are denied */
	for (int i = 0; i < 2; i++)
		expectf(&S, t.key, "POST", "/v1/check", 200, "{\"customer_id\":\"d1\"}");
	for (int i = 0; i < 5; i++) {
		r = CHECK(t.key, "{\"customer_id\":\"d1\",\"dry_run\":true,\"ip\":\"203.0.113.9\"}");
		ck_assert_msg(r.status == 429 && !strcmp(jstr(r.json, "code"), "rate_limited"), "dry run %d: %ld %s", i,
			      r.status, r.body);
		ck_assert_msg(json_is_true(jpath(r.json, "dry_run")), "no dry_run: true in %s", r.body);
		ck_assert_ptr_nonnull(resp_header(&r, "Retry-After"));
		resp_free(&r);
	}
	ck_assert_msg(srv_metric(&S, series) == 0, "dry-run denials moved %s to %lld", series, srv_metric(&S, series));

	/* d2: a real denial, the control: webhook, audit entry, metric */
	for (int i = 0; i < 2; i++)
		expectf(&S, t.key, "POST", "/v1/check", 200, "{\"customer_id\":\"d2\"}");
	r = CHECK(t.key, "{\"customer_id\":\"d2\"}");
	ck_assert_msg(r.status == 429, "the real denial: %ld %s", r.status, r.body);
	resp_free(&r);
	ck_assert_msg(srv_metric(&S, series) == 1, "%s is %lld after one real denial (want 1)", series, srv_metric(&S, series));
	long long until = mono_ms() + 10000;
	while (throttled_hooks(rv, "d2") < 1 && mono_ms() < until)
		rcv_wait(rv, rcv_count(rv) + 1, 200);
	ck_assert_msg(throttled_hooks(rv, "d2") == 1, "the real denial sent no rate_limit.throttled in 10 s");
	ck_assert_msg(audit_wait(t.key, "?action=rate_limit.denied", 1, 5000) == 1, "the real denial was not audited");
	nap_ms(1000);
	ck_assert_msg(throttled_hooks(rv, "d1") == 0, "%d rate_limit.throttled webhooks for dry-run denials",
		      throttled_hooks(rv, "d1"));
	r = audit(t.key, "?action=rate_limit.denied");
	ck_status(r, 200);
	ck_assert_msg(json_array_size(jpath(r.json, "data")) == 1, "rate_limit.denied entries: %s (want d2's only)", r.body);
	ck_assert_str_eq(jstr(r.json, "data.0.after.customer_id"), "d2");
	ck_assert_str_eq(jstr(r.json, "data.0.resource_type"), "limit");
	ck_assert_str_eq(jstr(r.json, "data.0.resource_id"), "rl");
	resp_free(&r);
	/* more dry runs after the real denial: still nothing counted */
	r = CHECK(t.key, "{\"customer_id\":\"d2\",\"dry_run\":true}");
	ck_status(r, 429);
	resp_free(&r);
	ck_assert_msg(srv_metric(&S, series) == 1, "%s is %lld after a dry run (want 1)", series, srv_metric(&S, series));
	rcv_stop(rv);
}
END_TEST

/* ======== 5. audit ======== */

START_TEST(audit_limit_update_before_after)
{
	struct tenant t = tokens_tenant(false);
	char kid[64];
	key_id_of(t.key, kid, sizeof(kid));
	LIMIT(t.key, "{\"id\":\"aud-lim\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\",\"limit\":1000}");
	LIMIT(t.key, "{\"id\":\"aud-other\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"day\",\"limit\":5}");
	const char *h[] = {"X-Request-Id: gov-audit-patch-1", NULL};
	struct resp r = req(&S, "PATCH", "/v1/limits/aud-lim", t.key, "{\"limit\":2000}", h);
	ck_status(r, 200);
	resp_free(&r);

	r = audit(t.key, "?resource_type=limit&resource_id=aud-lim");
	ck_status(r, 200);
	json_t *d = jpath(r.json, "data");
	ck_assert_msg(json_array_size(d) == 2, "entries for aud-lim: %s (want created and updated)", r.body);
	ck_assert(json_is_false(jpath(r.json, "has_more")));
	json_t *u = json_array_get(d, 0), *c = json_array_get(d, 1);
	ck_assert_str_eq(jstr(u, "action"), "limit.updated");
	ck_assert_msg(!strncmp(jstr(u, "id"), "aud_", 4), "audit id %s", jstr(u, "id"));
	ck_assert_str_eq(jstr(u, "resource_type"), "limit");
	ck_assert_str_eq(jstr(u, "resource_id"), "aud-lim");
	ck_assert_msg(!strcmp(jstr(u, "actor"), kid), "actor %s, want the key id %s", jstr(u, "actor"), kid);
	ck_assert_str_eq(jstr(u, "request_id"), "gov-audit-patch-1");
	ck_qty(u, "before.limit", 1000);
	ck_qty(u, "after.limit", 2000);
	ck_assert_str_eq(jstr(u, "before.id"), "aud-lim");
	ck_assert_str_eq(jstr(u, "after.period"), "month");
	long long at = time_parse(jstr(u, "created_at"));
	ck_assert_msg(at >= real_now() - 60 && at <= real_now() + 5, "created_at %s", jstr(u, "created_at"));
	ck_assert_str_eq(jstr(c, "action"), "limit.created");
	ck_assert_msg(jpath(c, "before") == NULL || json_is_null(jpath(c, "before")), "before on a creation: %s", r.body);
	ck_qty(c, "after.limit", 1000);
	ck_assert_str_eq(jstr(c, "actor"), kid);
	ck_assert_msg(strlen(jstr(c, "request_id")) > 0, "no request id: %s", r.body);
	ck_assert_str_ne(jstr(c, "request_id"), "gov-audit-patch-1");
	resp_free(&r);

	/* filters */
	r = audit(t.key, "?action=limit.updated");
	ck_status(r, 200);
	ck_assert_msg(json_array_size(jpath(r.json, "data")) == 1, "action=limit.updated: %s", r.body);
	ck_assert_str_eq(jstr(r.json, "data.0.resource_id"), "aud-lim");
	resp_free(&r);
	r = audit(t.key, "?resource_type=limit");
	ck_status(r, 200);
	ck_assert_msg(json_array_size(jpath(r.json, "data")) == 3, "resource_type=limit: %s", r.body);
	resp_free(&r);
	r = audit(t.key, "?resource_type=meter");
	ck_status(r, 200);
	ck_assert_msg(json_array_size(jpath(r.json, "data")) == 1, "resource_type=meter: %s", r.body);
	ck_assert_str_eq(jstr(r.json, "data.0.action"), "meter.created");
	ck_assert_str_eq(jstr(r.json, "data.0.resource_id"), "tokens");
	resp_free(&r);
	r = audit(t.key, "?resource_id=aud-other&action=limit.created");
	ck_status(r, 200);
	ck_assert_msg(json_array_size(jpath(r.json, "data")) == 1, "resource_id=aud-other: %s", r.body);
	resp_free(&r);
	r = audit(t.key, "?action=limit.deleted");
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 0);
	resp_free(&r);
	/* a failed change is not audited */
	r = callf(&S, t.key, "PATCH", "/v1/limits/aud-lim", "{\"limit\":-1}");
	ck_status(r, 400);
	resp_free(&r);
	ck_assert_int_eq(audit_wait(t.key, "?resource_id=aud-lim", 3, 0), 2);
	/* a delete: before, no after */
	expectf(&S, t.key, "DELETE", "/v1/limits/aud-other", 200, NULL);
	r = audit(t.key, "?action=limit.deleted");
	ck_status(r, 200);
	ck_assert_msg(json_array_size(jpath(r.json, "data")) == 1, "limit.deleted: %s", r.body);
	ck_qty(r.json, "data.0.before.limit", 5);
	resp_free(&r);
}
END_TEST

/* The tenant's own settings and an API key's revocation have their before (and the revoked key its after). */
START_TEST(audit_tenant_settings_and_key_revocation)
{
	struct tenant t = tenant_new(&S, false);
	expectf(&S, t.key, "PATCH", "/v1/tenant", 200, "{\"auto_create_customers\":false}");
	struct resp r = audit(t.key, "?action=tenant.updated");
	ck_status(r, 200);
	ck_assert_msg(json_array_size(jpath(r.json, "data")) == 1, "tenant.updated: %s", r.body);
	ck_assert(json_is_true(jpath(r.json, "data.0.before.auto_create_customers")));
	ck_assert(json_is_false(jpath(r.json, "data.0.after.auto_create_customers")));
	ck_assert_str_eq(jstr(r.json, "data.0.resource_id"), t.id);
	resp_free(&r);

	r = callf(&S, t.key, "POST", "/v1/api_keys", "{\"name\":\"temp\",\"scopes\":[\"read\"]}");
	ck_status(r, 201);
	char kid[64], path[128];
	snprintf(kid, sizeof(kid), "%s", jstr(r.json, "id"));
	resp_free(&r);
	snprintf(path, sizeof(path), "/v1/api_keys/%s", kid);
	expectf(&S, t.key, "DELETE", path, 200, NULL);
	r = audit(t.key, "?action=api_key.deleted");
	ck_status(r, 200);
	ck_assert_msg(json_array_size(jpath(r.json, "data")) == 1, "api_key.deleted: %s", r.body);
	ck_assert_str_eq(jstr(r.json, "data.0.resource_id"), kid);
	ck_assert_str_eq(jstr(r.json, "data.0.before.name"), "temp");
	ck_assert(json_is_null(jpath(r.json, "data.0.before.revoked_at")));
	time_parse(jstr(r.json, "data.0.after.revoked_at"));
	ck_assert_ptr_null(jpath(r.json, "data.0.before.secret"));
	ck_assert_ptr_null(strstr(r.body, "\"secret\""));
	resp_free(&r);
}
END_TEST

/* ---- updates that change nothing ---- */

/* One PATCH route with its row: what it reads, bodies that change nothing, one that does. */
struct patch_case {
	const char *path, *get;       /* PATCH here, read the object there */
	const char *type, *id;        /* its audit entries */
	const char *table, *key_col;  /* its row (key_col = id), for updated_at */
	const char *same[3];          /* {} and bodies of the current values */
	const char *change;           /* one that changes it */
};

static long long updated_us(const struct tenant *t, const struct patch_case *c)
{
	if (!strcmp(c->table, "tenants"))
		return psql_ll("SELECT (extract(epoch FROM updated_at) * 1000000)::bigint FROM tenants WHERE id = '%s'", t->id);
	return psql_ll("SELECT (extract(epoch FROM updated_at) * 1000000)::bigint FROM %s WHERE tenant_id = '%s' AND %s = '%s'",
		       c->table, t->id, c->key_col, c->id);
}

static size_t audit_entries(const char *key, const struct patch_case *c)
{
	char q[256];
	snprintf(q, sizeof(q), "?limit=100&resource_type=%s&resource_id=%s", c->type, c->id);
	return audit_wait(key, q, 0, 0);
}

static char *get_text(const char *key, const char *path)
{
	struct resp r = req(&S, "GET", path, key, NULL, NULL);
	ck_status(r, 200);
	char *b = strdup(r.body);
	resp_free(&r);
	return b;
}

/* openapi: "An empty object changes nothing and returns the object." On every PATCH route neither {} nor the
 * current values move updated_at or write an audit entry (both did: customer.updated, tier.updated...); a real
 * change still does both. */
START_TEST(patch_of_nothing_changes_nothing)
{
	struct tenant t = tokens_tenant(false);
	char endpoint[128];

	expectf(&S, t.key, "POST", "/v1/tiers", 201, "{\"id\":\"pro\",\"name\":\"Pro\"}");
	expectf(&S, t.key, "POST", "/v1/customers", 201,
		"{\"id\":\"p1\",\"name\":\"Ada\",\"email\":\"a@b.c\",\"tier\":\"pro\",\"metadata\":{\"a\":1.0,\"b\":[1,\"x\"]}}");
	expectf(&S, t.key, "PATCH", "/v1/meters/tokens", 200, "{\"price\":{\"default\":0.5,\"by\":{\"model\":{\"gpt-4\":2}}}}");
	LIMIT(t.key, "{\"id\":\"q\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\",\"limit\":100,"
		     "\"filter\":{\"model\":\"gpt-4\"}}");
	struct resp r = callf(&S, t.key, "POST", "/v1/webhook_endpoints",
			      "{\"url\":\"http://127.0.0.1:9/h\",\"events\":[\"*\"],\"description\":\"d\"}");
	ck_status(r, 201);
	snprintf(endpoint, sizeof(endpoint), "/v1/webhook_endpoints/%s", jstr(r.json, "id"));
	resp_free(&r);
	expectf(&S, t.key, "PATCH", "/v1/customers/p1/balance", 200, "{\"minimum_balance\":-5,\"low_balance_threshold\":2}");
	expectf(&S, t.key, "PATCH", "/v1/tenant", 200, "{\"default_tier\":\"pro\"}");

	const struct patch_case cases[] = {
		{"/v1/tenant", "/v1/tenant", "tenant", t.id, "tenants", "id",
		 {"{}", "{\"default_tier\":\"pro\",\"auto_create_customers\":true}", "{\"auto_create_customers\":true}"},
		 "{\"auto_create_customers\":false}"},
		{"/v1/customers/p1", "/v1/customers/p1", "customer", "p1", "customers", "id",
		 {"{}", "{\"name\":\"Ada\",\"email\":\"a@b.c\",\"tier\":\"pro\",\"parent_id\":null,"
			"\"metadata\":{\"a\":1.0,\"b\":[1,\"x\"]}}", "{\"tier\":\"pro\"}"},
		 "{\"metadata\":{\"a\":1,\"b\":[1,\"x\"]}}"}, /* 1 is not 1.0: metadata keeps what was sent */
		{"/v1/tiers/pro", "/v1/tiers/pro", "tier", "pro", "tiers", "id",
		 {"{}", "{\"name\":\"Pro\"}", NULL}, "{\"name\":\"Pro 2\"}"},
		{"/v1/meters/tokens", "/v1/meters/tokens", "meter", "tokens", "meters", "id",
		 {"{}", "{\"aggregation\":\"sum\",\"group_by\":[\"model\"],\"price\":{\"default\":0.50,\"by\":{\"model\":{\"gpt-4\":2}}}}",
		  NULL},
		 "{\"price\":{\"default\":0.5,\"by\":{\"model\":{\"gpt-4\":3}}}}"},
		{"/v1/limits/q", "/v1/limits/q", "limit", "q", "limits", "id",
		 {"{}", "{\"limit\":100,\"period\":\"month\",\"filter\":{\"model\":\"gpt-4\"}}", "{\"kind\":\"quota\",\"id\":\"q\"}"},
		 "{\"limit\":101}"},
		{endpoint, endpoint, "webhook_endpoint", endpoint + strlen("/v1/webhook_endpoints/"), "webhook_endpoints", "id",
		 {"{}", "{\"url\":\"http://127.0.0.1:9/h\",\"events\":[\"*\"],\"description\":\"d\",\"disabled\":false}", NULL},
		 "{\"description\":\"e\"}"},
		{"/v1/customers/p1/balance", "/v1/customers/p1/balance", "balance", "p1", "balances", "customer_id",
		 {"{}", "{\"minimum_balance\":-5,\"low_balance_threshold\":2.0}", NULL},
		 "{\"low_balance_threshold\":3}"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct patch_case *c = &cases[i];
		char *before = get_text(t.key, c->get);
		long long at = updated_us(&t, c);
		size_t entries = audit_entries(t.key, c);
		ck_assert_msg(entries >= 1, "%s: no audit entry to start with", c->path);
		for (int b = 0; b < 3 && c->same[b]; b++) {
			r = req(&S, "PATCH", c->path, t.key, c->same[b], NULL);
			ck_assert_msg(r.status == 200, "PATCH %s %s: %ld %s", c->path, c->same[b], r.status, r.body);
			ck_assert_msg(!strcmp(r.body, before), "PATCH %s %s answered %s, not the object %s", c->path, c->same[b],
				      r.body, before);
			resp_free(&r);
			char *after = get_text(t.key, c->get);
			ck_assert_msg(!strcmp(after, before), "PATCH %s %s changed it: %s", c->path, c->same[b], after);
			free(after);
			ck_assert_msg(updated_us(&t, c) == at, "PATCH %s %s moved updated_at", c->path, c->same[b]);
			ck_assert_msg(audit_entries(t.key, c) == entries, "PATCH %s %s wrote an audit entry", c->path, c->same[b]);
		}
		/* a change is still a change */
		expectf(&S, t.key, "PATCH", c->path, 200, "%s", c->change);
		ck_assert_msg(updated_us(&t, c) > at, "PATCH %s %s kept updated_at", c->path, c->change);
		ck_assert_msg(audit_entries(t.key, c) == entries + 1, "PATCH %s %s: no audit entry", c->path, c->change);
		free(before);
	}
}
END_TEST

START_TEST(audit_pagination)
{
	struct tenant t = tenant_new(&S, false);
	for (int i = 0; i < 7; i++)
		expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"pg%d\"}", i);
	/* a filter past its length: refused, not an empty page */
	char fq[300];
	static const struct {
		const char *name;
		int max;
	} caps[] = {{"resource_type", 64}, {"resource_id", 128}, {"action", 64}, {"actor", 200}};
	for (size_t i = 0; i < sizeof(caps) / sizeof(*caps); i++) {
		int n = snprintf(fq, sizeof(fq), "?%s=", caps[i].name);
		memset(fq + n, 'a', (size_t)caps[i].max + 1);
		fq[n + caps[i].max + 1] = '\0';
		struct resp bad = audit(t.key, fq);
		ck_bad(bad, 400, "invalid_parameter", caps[i].name);
		resp_free(&bad);
		fq[n + caps[i].max] = '\0';
		bad = audit(t.key, fq);
		ck_status(bad, 200);
		resp_free(&bad);
	}
	struct resp all = audit(t.key, "?limit=100");
	ck_status(all, 200);
	json_t *ad = jpath(all.json, "data");
	size_t n = json_array_size(ad);
	ck_assert_msg(n == 7, "7 changes, %zu entries: %s", n, all.body);
	ck_assert(json_is_false(jpath(all.json, "has_more")));
	/* newest first */
	ck_assert_str_eq(jstr(all.json, "data.0.resource_id"), "pg6");
	ck_assert_str_eq(jstr(all.json, "data.6.resource_id"), "pg0");
	ck_assert_str_eq(jstr(all.json, "data.0.action"), "customer.created");

	/* pages of 3: 3 + 3 + 1, the same entries in the same order, none twice */
	char after[64] = "", q[160];
	size_t seen = 0;
	int pages = 0;
	bool more = true;
	while (more) {
		if (after[0])
			snprintf(q, sizeof(q), "?limit=3&starting_after=%s", after);
		else
			snprintf(q, sizeof(q), "?limit=3");
		struct resp r = audit(t.key, q);
		ck_status(r, 200);
		json_t *d = jpath(r.json, "data"), *e;
		size_t i;
		ck_assert_msg(++pages <= 3, "more than 3 pages of 3 for 7 entries");
		ck_assert_msg(json_array_size(d) == (pages < 3 ? 3u : 1u), "page %d: %s", pages, r.body);
		json_array_foreach(d, i, e) {
			ck_assert_msg(seen < n, "more entries paged than listed");
			const char *want = jstr(json_array_get(ad, seen), "id");
			ck_assert_msg(!strcmp(jstr(e, "id"), want), "page %d entry %zu: %s, want %s", pages, i, jstr(e, "id"), want);
			seen++;
			snprintf(after, sizeof(after), "%s", jstr(e, "id"));
		}
		more = json_is_true(jpath(r.json, "has_more"));
		ck_assert_msg(more == (pages < 3), "page %d: has_more %s", pages, more ? "true" : "false");
		resp_free(&r);
	}
	ck_assert_int_eq(seen, n);
	/* filters page too */
	struct resp r = audit(t.key, "?resource_type=customer&limit=2");
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 2);
	ck_assert(json_is_true(jpath(r.json, "has_more")));
	resp_free(&r);
	/* bad pages */
	r = audit(t.key, "?limit=101");
	ck_bad(r, 400, "invalid_parameter", "limit");
	resp_free(&r);
	r = audit(t.key, "?limit=0");
	ck_status(r, 400);
	resp_free(&r);
	resp_free(&all);
}
END_TEST

START_TEST(audit_tenant_isolation)
{
	struct tenant a = tokens_tenant(false), b = tokens_tenant(false);
	LIMIT(a.key, "{\"id\":\"mine\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\",\"limit\":10}");
	expectf(&S, a.key, "PATCH", "/v1/limits/mine", 200, "{\"limit\":20}");
	struct resp ra = audit(a.key, "?limit=100");
	ck_status(ra, 200);
	ck_assert_msg(json_array_size(jpath(ra.json, "data")) == 3, "tenant a's entries: %s", ra.body);

	/* b sees only its own entry (its meter), none of a's */
	struct resp rb = audit(b.key, "?limit=100");
	ck_status(rb, 200);
	ck_assert_msg(json_array_size(jpath(rb.json, "data")) == 1, "tenant b's entries: %s", rb.body);
	json_t *e;
	size_t i;
	json_array_foreach(jpath(ra.json, "data"), i, e)
		ck_assert_msg(strstr(rb.body, jstr(e, "id")) == NULL, "tenant b sees a's entry %s", jstr(e, "id"));
	resp_free(&rb);
	rb = audit(b.key, "?resource_id=mine");
	ck_status(rb, 200);
	ck_assert_msg(json_array_size(jpath(rb.json, "data")) == 0, "tenant b filtered on a's limit: %s", rb.body);
	resp_free(&rb);
	rb = audit(b.key, "?action=limit.updated");
	ck_status(rb, 200);
	ck_assert_msg(json_array_size(jpath(rb.json, "data")) == 0, "tenant b sees limit.updated: %s", rb.body);
	resp_free(&rb);
	/* a's entry as b's cursor names nothing of b's */
	char q[128];
	snprintf(q, sizeof(q), "?starting_after=%s", jstr(ra.json, "data.0.id"));
	rb = audit(b.key, q);
	ck_assert_msg(rb.status == 400 || rb.status == 404, "b paging from a's entry: %ld %s", rb.status, rb.body);
	resp_free(&rb);
	resp_free(&ra);
}
END_TEST

START_TEST(audit_never_shows_secrets)
{
	struct tenant t = tenant_new(&S, false);
	char key_secret[256], ep_secret[128], ep_rotated[128], token[2048], ep[64], kid[64];

	struct resp r = callf(&S, t.key, "POST", "/v1/api_keys", "{\"name\":\"backend\",\"scopes\":[\"check\"]}");
	ck_status(r, 201);
	snprintf(key_secret, sizeof(key_secret), "%s", jstr(r.json, "secret"));
	snprintf(kid, sizeof(kid), "%s", jstr(r.json, "id"));
	resp_free(&r);
	r = callf(&S, t.key, "POST", "/v1/webhook_endpoints", "{\"url\":\"http://127.0.0.1:9/hooks\",\"events\":[\"*\"]}");
	ck_status(r, 201);
	snprintf(ep_secret, sizeof(ep_secret), "%s", jstr(r.json, "secret"));
	snprintf(ep, sizeof(ep), "%s", jstr(r.json, "id"));
	resp_free(&r);
	char path[128];
	snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s/rotate_secret", ep);
	r = req(&S, "POST", path, t.key, NULL, NULL);
	ck_status(r, 200);
	snprintf(ep_rotated, sizeof(ep_rotated), "%s", jstr(r.json, "secret"));
	resp_free(&r);
	snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s", ep);
	expectf(&S, t.key, "PATCH", path, 200, "{\"description\":\"billing\"}");
	r = callf(&S, t.key, "POST", "/v1/auth/tokens", "{\"scope\":\"read\",\"ttl\":600}");
	ck_status(r, 201);
	snprintf(token, sizeof(token), "%s", jstr(r.json, "token"));
	resp_free(&r);
	snprintf(path, sizeof(path), "/v1/api_keys/%s", kid);
	expectf(&S, t.key, "DELETE", path, 200, NULL);
	expectf(&S, t.key, "DELETE", "/v1/webhook_endpoints/nope", 404, NULL);
	snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s", ep);
	expectf(&S, t.key, "DELETE", path, 200, NULL);

	r = audit(t.key, "?limit=100");
	ck_status(r, 200);
	/* every change is there */
	static const char *const actions[] = {"api_key.created", "webhook_endpoint.created", "webhook_endpoint.secret_rotated",
					      "webhook_endpoint.updated", "token.created", "api_key.deleted",
					      "webhook_endpoint.deleted"};
	for (size_t k = 0; k < sizeof(actions) / sizeof(actions[0]); k++) {
		bool found = false;
		json_t *e;
		size_t i;
		json_array_foreach(jpath(r.json, "data"), i, e)
			found |= !strcmp(jstr(e, "action"), actions[k]);
		ck_assert_msg(found, "no %s in the audit log: %s", actions[k], r.body);
	}
	/* and no secret, in any form (the whsec_ base64 part alone, too) */
	const char *secrets[] = {key_secret, ep_secret, ep_secret + 6, ep_rotated, ep_rotated + 6, token, t.key};
	const char *names[] = {"the new API key's secret", "the endpoint secret", "the endpoint secret's key",
			       "the rotated endpoint secret", "the rotated secret's key", "the JWT", "the tenant's key"};
	for (size_t k = 0; k < sizeof(secrets) / sizeof(secrets[0]); k++) {
		ck_assert_msg(strlen(secrets[k]) >= 16, "%s is too short to search for: %s", names[k], secrets[k]);
		ck_assert_msg(!json_has_text(r.json, secrets[k]) && !strstr(r.body, secrets[k]), "%s is in the audit log: %s",
			      names[k], r.body);
	}
	resp_free(&r);
}
END_TEST

START_TEST(audit_test_clock_advance)
{
	struct tenant t = tenant_new(&S, true);
	char kid[64];
	key_id_of(t.key, kid, sizeof(kid));
	long long before = clock_now(&S, t.key);
	const char *h[] = {"X-Request-Id: gov-clock-1", NULL};
	struct resp r = req(&S, "POST", "/v1/test_clock/advance", t.key, "{\"seconds\":7200}", h);
	ck_status(r, 200);
	long long now = time_parse(jstr(r.json, "now"));
	ck_assert_msg(now >= before + 7200, "the clock did not move: %lld -> %lld", before, now);
	resp_free(&r);
	r = audit(t.key, "?action=test_clock.advanced");
	ck_status(r, 200);
	ck_assert_msg(json_array_size(jpath(r.json, "data")) == 1, "test_clock.advanced entries: %s", r.body);
	ck_assert_str_eq(jstr(r.json, "data.0.resource_type"), "test_clock");
	ck_assert_str_eq(jstr(r.json, "data.0.actor"), kid);
	ck_assert_str_eq(jstr(r.json, "data.0.request_id"), "gov-clock-1");
	ck_assert_msg(json_is_object(jpath(r.json, "data.0.after")) && time_parse(jstr(r.json, "data.0.after.now")) == now,
		      "after of the advance: %s", r.body);
	/* and before it, the clock as it was (it was null) */
	ck_assert_msg(json_is_object(jpath(r.json, "data.0.before")) &&
			      time_parse(jstr(r.json, "data.0.before.now")) >= before &&
			      time_parse(jstr(r.json, "data.0.before.now")) <= before + 5,
		      "before of the advance: %s", r.body);
	resp_free(&r);
	/* reading the clock is not a change */
	clock_now(&S, t.key);
	ck_assert_int_eq(audit_wait(t.key, "?resource_type=test_clock", 2, 0), 1);
	/* a refused advance (a live tenant) is not audited either */
	struct tenant live = tenant_new(&S, false);
	r = callf(&S, live.key, "POST", "/v1/test_clock/advance", "{\"seconds\":60}");
	ck_status(r, 400);
	resp_free(&r);
	ck_assert_int_eq(audit_wait(live.key, "?action=test_clock.advanced", 1, 0), 0);
}
END_TEST

/* A balance settings change: before and after are the same object (GET's), the stored row never shows. */
START_TEST(audit_balance_settings_before_after)
{
	struct tenant t = tenant_new(&S, false);
	expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"w\"}");
	expectf(&S, t.key, "PATCH", "/v1/customers/w/balance", 200, "{\"minimum_balance\":-5}");
	expectf(&S, t.key, "PATCH", "/v1/customers/w/balance", 200, "{\"low_balance_threshold\":2}");
	struct resp r = audit(t.key, "?action=balance.settings_updated");
	ck_status(r, 200);
	ck_assert_msg(json_array_size(jpath(r.json, "data")) == 2, "%s", r.body);
	json_t *b = jpath(r.json, "data.0.before"), *a = jpath(r.json, "data.0.after");
	ck_assert_msg(json_is_object(b) && json_is_object(a), "%s", r.body);
	ck_assert_msg(json_object_size(b) == json_object_size(a), "before and after differ in shape: %s", r.body);
	const char *key;
	json_t *v;
	json_object_foreach(a, key, v)
		ck_assert_msg(json_object_get(b, key) != NULL, "before lacks %s: %s", key, r.body);
	ck_assert_msg(json_is_null(json_object_get(b, "low_balance_threshold")) && jnum(a, "low_balance_threshold") == 2 &&
			      jnum(b, "minimum_balance") == -5 && jnum(b, "available") == 0,
		      "%s", r.body);
	resp_free(&r);
}
END_TEST

/* ======== 6. 402 with RateLimit headers ======== */

START_TEST(insufficient_balance_carries_ratelimit_headers)
{
	struct tenant t = tenant_new(&S, false);
	expectf(&S, t.key, "POST", "/v1/meters", 201, PRICED_METER);
	LIMIT(t.key, "{\"id\":\"tight\",\"kind\":\"quota\",\"meter\":\"ptok\",\"period\":\"month\",\"limit\":1000}");
	LIMIT(t.key, "{\"id\":\"roomy\",\"kind\":\"quota\",\"meter\":\"ptok\",\"period\":\"day\",\"limit\":100000}");
	LIMIT(t.key, "{\"id\":\"rpm\",\"kind\":\"rate\",\"meter\":\"requests\",\"limit\":100,\"window\":3600}");
	/* 900 used before the customer had a wallet (nothing debited), then a wallet of 0.4 */
	struct resp r = callf(&S, t.key, "POST", "/v1/events",
			      "{\"id\":\"u1\",\"customer_id\":\"w\",\"type\":\"pllm\",\"properties\":{\"tokens\":900}}");
	ck_status(r, 200);
	ck_assert_msg(jint(r.json, "accepted") == 1, "%s", r.body);
	resp_free(&r);
	expectf(&S, t.key, "POST", "/v1/customers/w/balance/credit", 200, "{\"amount\":0.4}");

	/* 50 tokens cost 0.5 > 0.4: the quotas allow, the wallet does not */
	long long t0 = real_now();
	r = CHECK(t.key, "{\"customer_id\":\"w\",\"meter\":\"ptok\",\"amount\":50}");
	ck_assert_msg(r.status == 402, "expected 402, got %ld: %s", r.status, r.body);
	ck_assert_str_eq(jstr(r.json, "code"), "insufficient_balance");
	ck_assert_msg(json_is_null(jpath(r.json, "retry_after")) && resp_header(&r, "Retry-After") == NULL,
		      "a 402 with a retry: %s", r.body);
	ck_state(r.json, "tight", NULL, 900, 0, 100);
	/* the RateLimit headers are those of the limit with the least room left: tight (100 of 1000) */
	const char *v = resp_header(&r, "RateLimit-Limit");
	ck_assert_msg(v && !strcmp(v, "1000"), "RateLimit-Limit on a 402: %s (want 1000, the tight quota)", v ? v : "(none)");
	v = resp_header(&r, "RateLimit-Remaining");
	ck_assert_msg(v && !strcmp(v, "100"), "RateLimit-Remaining on a 402: %s (want 100)", v ? v : "(none)");
	v = resp_header(&r, "RateLimit-Reset");
	ck_assert_msg(v != NULL, "no RateLimit-Reset on a 402");
	long long reset = atoll(v), want = next_month_start(t0) - t0;
	ck_assert_msg(reset >= want - 5 && reset <= want + 1, "RateLimit-Reset %lld, want about %lld", reset, want);
	v = resp_header(&r, "RateLimit-Policy");
	ck_assert_msg(v && !strncmp(v, "\"tight\";q=1000;w=", 17), "RateLimit-Policy on a 402: %s", v ? v : "(none)");
	v = resp_header(&r, "RateLimit");
	char want_rl[96];
	snprintf(want_rl, sizeof(want_rl), "\"tight\";r=100;t=%lld", reset);
	ck_assert_msg(v && !strcmp(v, want_rl), "RateLimit on a 402: %s (want %s)", v ? v : "(none)", want_rl);
	resp_free(&r);

	/* what the wallet covers passes, and then tight is still the binding one */
	r = CHECK(t.key, "{\"customer_id\":\"w\",\"meter\":\"ptok\",\"amount\":40,\"consume\":true}");
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "binding_limit"), "tight");
	ck_assert_str_eq(resp_header(&r, "RateLimit-Remaining"), "60");
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"w\",\"meter\":\"ptok\",\"amount\":1}");
	ck_status(r, 402);
	ck_assert_str_eq(resp_header(&r, "RateLimit-Limit"), "1000");
	ck_assert_str_eq(resp_header(&r, "RateLimit-Remaining"), "60");
	resp_free(&r);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("governance");
	TCase *tc = tcase_create("governance");

	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, fallback_to_cheaper_model);
	tcase_add_test(tc, fallback_chain_of_two);
	tcase_add_test(tc, fallback_to_itself_refused_at_creation);
	tcase_add_test(tc, fallback_on_other_dimension_to_itself_refused);
	tcase_add_test(tc, fallback_cycle_across_two_limits_stops);
	tcase_add_test(tc, entitlement_by_tier);
	tcase_add_test(tc, workflow_duplicate_threshold);
	tcase_add_test(tc, workflow_max_tool_calls);
	tcase_add_test(tc, workflow_state_of_an_earlier_build);
	tcase_add_test(tc, workflow_terminated_by_a_deleted_guard);
	tcase_add_test(tc, workflow_max_depth);
	tcase_add_test(tc, workflow_max_duration);
	tcase_add_test(tc, workflow_max_cost_by_consuming_checks);
	tcase_add_test(tc, workflow_max_cost_by_events);
	tcase_add_test(tc, workflow_terminated_webhook_once);
	tcase_add_test(tc, dry_run_changes_no_counter);
	tcase_add_test(tc, dry_run_denial_has_no_side_effects);
	tcase_add_test(tc, audit_limit_update_before_after);
	tcase_add_test(tc, audit_tenant_settings_and_key_revocation);
	tcase_add_test(tc, audit_pagination);
	tcase_add_test(tc, audit_tenant_isolation);
	tcase_add_test(tc, audit_never_shows_secrets);
	tcase_add_test(tc, audit_test_clock_advance);
	tcase_add_test(tc, audit_balance_settings_before_after);
	tcase_add_test(tc, insufficient_balance_carries_ratelimit_headers);
	tcase_add_test(tc, patch_of_nothing_changes_nothing);
	suite_add_tcase(s, tc);
	return run_suite(s);
}

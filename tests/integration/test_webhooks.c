/* test_webhooks.c — webhooks end to end: endpoints API, Standard Webhooks signatures verified in C
 * (OpenSSL), retries with backoff, kill -9 and two instances (at-least-once from the outbox), every
 * event type's cause (thresholds, exceeded, balances, period close on a test clock, daily summaries,
 * throttles), secret rotation and the SSRF guard. Receivers are real HTTP servers on loopback
 * (receiver.c).
 *
 * Every tollgated sharing the database (other suites' too) runs delivery workers, so any of them may
 * send a delivery of ours. Where a test waits for a retry, a delivery that another instance scheduled
 * with its default 10 s backoff is nudged with POST /v1/webhook_deliveries/{id}/retry (printed as a
 * note), so the suite stays fast when suites run in parallel. */
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "receiver.h"

static struct srv S;

static const char *const FAST_ENV[] = {"TOLLGATE_WEBHOOK_BACKOFF_BASE_MS=200", NULL};

static void setup(void)
{
	srv_start(&S, FAST_ENV);
}

static void teardown(void)
{
	srv_stop(&S);
}

/* ---- small utilities ---- */

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap_ms(int ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static struct resp callf(const struct srv *s, const char *key, const char *method, const char *path, const char *fmt,
			 ...) __attribute__((format(printf, 5, 6)));
static struct resp callf(const struct srv *s, const char *key, const char *method, const char *path, const char *fmt,
			 ...)
{
	char *body = NULL;
	struct resp r;

	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		if (vasprintf(&body, fmt, ap) < 0)
			body = NULL;
		va_end(ap);
	}
	r = req(s, method, path, key, body, NULL);
	free(body);
	return r;
}

static void expectf(const struct srv *s, const char *key, const char *method, const char *path, long want,
		    const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void expectf(const struct srv *s, const char *key, const char *method, const char *path, long want,
		    const char *fmt, ...)
{
	char *body = NULL;
	struct resp r;

	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		if (vasprintf(&body, fmt, ap) < 0)
			body = NULL;
		va_end(ap);
	}
	r = req(s, method, path, key, body, NULL);
	ck_assert_msg(r.status == want, "%s %s %s: expected %ld, got %ld: %s", method, path, body ? body : "", want,
		      r.status, r.body);
	free(body);
	resp_free(&r);
}

/* A JSON number that must equal want exactly (quantities are fixed point on the server). */
static void ck_num(json_t *root, const char *path, double want)
{
	json_t *v = jpath(root, path);
	char *t = json_dumps(root, JSON_COMPACT);

	ck_assert_msg(json_is_number(v), "no number at '%s' in %s", path, t ? t : "?");
	ck_assert_msg(json_number_value(v) == want, "'%s': expected %g, got %.9g in %s", path, want,
		      json_number_value(v), t ? t : "?");
	if (want == floor(want))
		ck_assert_msg(json_is_integer(v), "'%s': a whole quantity must be an integer in %s", path, t ? t : "?");
	free(t);
}

/* ---- tenants, meters, limits, events ---- */

#define TOKENS_METER "{\"id\":\"tokens\",\"event_type\":\"llm\",\"aggregation\":\"sum\",\"property\":\"tokens\"}"

static struct tenant tokens_tenant(const struct srv *s, bool test_mode)
{
	struct tenant t = tenant_new(s, test_mode);
	expectf(s, t.key, "POST", "/v1/meters", 201, TOKENS_METER);
	return t;
}

static void tokens_event(const struct srv *s, const char *key, const char *cust, double tokens)
{
	struct resp r = callf(s, key, "POST", "/v1/events",
			      "{\"customer_id\":\"%s\",\"type\":\"llm\",\"properties\":{\"tokens\":%g}}", cust, tokens);
	ck_assert_msg(r.status == 200 && jint(r.json, "accepted") == 1, "event %s %g: %ld %s", cust, tokens, r.status,
		      r.body);
	resp_free(&r);
}

/* ---- endpoints ---- */

struct ep {
	char id[64];
	char secret[128];
};

static struct ep ep_create(const struct srv *s, const char *key, const char *url, const char *events_json)
{
	struct ep e = {0};
	struct resp r = callf(s, key, "POST", "/v1/webhook_endpoints", "{\"url\":\"%s\",\"events\":%s}", url, events_json);

	ck_status(r, 201);
	snprintf(e.id, sizeof(e.id), "%s", jstr(r.json, "id"));
	snprintf(e.secret, sizeof(e.secret), "%s", jstr(r.json, "secret"));
	ck_assert_msg(strncmp(e.id, "whe_", 4) == 0, "endpoint id %s", e.id);
	ck_assert_msg(strncmp(e.secret, "whsec_", 6) == 0, "secret %s", e.secret);
	resp_free(&r);
	return e;
}

/* GET .../deliveries (status NULL: all): the data array (a new reference). */
static json_t *deliveries(const struct srv *s, const char *key, const char *ep, const char *status)
{
	char path[256];
	struct resp r;
	json_t *d;

	snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s/deliveries?limit=100%s%s", ep, status ? "&status=" : "",
		 status ? status : "");
	r = req(s, "GET", path, key, NULL, NULL);
	ck_status(r, 200);
	d = json_incref(jpath(r.json, "data"));
	ck_assert_msg(json_is_array(d), "deliveries: no data array: %s", r.body);
	resp_free(&r);
	return d;
}

/* The delivery of endpoint ep for event evt (a new reference), or NULL. */
static json_t *delivery_of(const struct srv *s, const char *key, const char *ep, const char *evt)
{
	json_t *all = deliveries(s, key, ep, NULL), *d, *found = NULL;
	size_t i;

	json_array_foreach(all, i, d)
		if (!strcmp(jstr(d, "event_id"), evt))
			found = json_incref(d);
	json_decref(all);
	return found;
}

/* A secret nobody has: 32 random-looking bytes, base64. */
static const char *WRONG_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw/yLqbtaCZh8=";

/* ---- what the receiver saw ---- */

struct hook {
	struct rcv_req q;
	json_t *p; /* the parsed body */
	char id[128], ts[64], sig[1024], attempt[32];
	const char *type;
};

static bool hook_get(struct receiver *r, int i, struct hook *h)
{
	json_error_t je;

	memset(h, 0, sizeof(*h));
	if (!rcv_get(r, i, &h->q))
		return false;
	h->p = json_loadb(h->q.body, h->q.body_len, 0, &je);
	rcv_header(&h->q, "webhook-id", h->id, sizeof(h->id));
	rcv_header(&h->q, "webhook-timestamp", h->ts, sizeof(h->ts));
	rcv_header(&h->q, "webhook-signature", h->sig, sizeof(h->sig));
	rcv_header(&h->q, "Tollgate-Delivery-Attempt", h->attempt, sizeof(h->attempt));
	h->type = h->p ? json_string_value(json_object_get(h->p, "type")) : NULL;
	return true;
}

static void hook_free(struct hook *h)
{
	rcv_req_free(&h->q);
	if (h->p)
		json_decref(h->p);
	memset(h, 0, sizeof(*h));
}

static bool hook_matches(const struct hook *h, const char *type, const char *cust)
{
	if (!h->type || (type && strcmp(h->type, type) != 0))
		return false;
	if (cust) {
		const char *c = json_string_value(jpath(h->p, "data.customer_id"));
		if (!c || strcmp(c, cust) != 0)
			return false;
	}
	return true;
}

/* How many requests (distinct: distinct webhook-ids; ok_only: answered 2xx) carried this type (and
 * data.customer_id). */
static int hooks_count_x(struct receiver *r, const char *type, const char *cust, bool distinct, bool ok_only)
{
	int n = rcv_count(r), found = 0;
	char **seen = calloc((size_t)n + 1, sizeof(*seen));
	int nseen = 0;

	for (int i = 0; i < n; i++) {
		struct hook h;
		if (!hook_get(r, i, &h))
			continue;
		if (hook_matches(&h, type, cust) && (!ok_only || (h.q.answered >= 200 && h.q.answered < 300))) {
			bool dup = false;
			for (int k = 0; distinct && k < nseen; k++)
				dup = dup || !strcmp(seen[k], h.id);
			if (!dup) {
				found++;
				seen[nseen++] = strdup(h.id);
			}
		}
		hook_free(&h);
	}
	for (int k = 0; k < nseen; k++)
		free(seen[k]);
	free(seen);
	return found;
}

static int hooks_count(struct receiver *r, const char *type, const char *cust, bool distinct)
{
	return hooks_count_x(r, type, cust, distinct, false);
}

/* Distinct events delivered with success. */
static int hooks_ok(struct receiver *r, const char *type, const char *cust)
{
	return hooks_count_x(r, type, cust, true, true);
}

static int hooks_wait(struct receiver *r, const char *type, const char *cust, int n, int timeout_ms)
{
	long long until = mono_ms() + timeout_ms;
	int have;

	while ((have = hooks_count(r, type, cust, true)) < n && mono_ms() < until)
		rcv_wait(r, rcv_count(r) + 1, 100);
	return have;
}

/* The k-th request (0-based, counting retries) of this type; fails the test when there is none. */
static void hook_find(struct receiver *r, const char *type, const char *cust, int k, struct hook *out)
{
	int n = rcv_count(r);

	for (int i = 0; i < n; i++) {
		struct hook h;
		if (!hook_get(r, i, &h))
			continue;
		if (hook_matches(&h, type, cust) && k-- == 0) {
			*out = h;
			return;
		}
		hook_free(&h);
	}
	ck_abort_msg("the receiver got no %s%s%s (it got %d requests)", type ? type : "request", cust ? " for " : "",
		     cust ? cust : "", n);
}

/* The limit.threshold for cust at threshold thr (deliveries may arrive in any order). */
static void threshold_find(struct receiver *r, const char *cust, double thr, struct hook *out)
{
	for (int k = 0; k < 16; k++) {
		hook_find(r, "limit.threshold", cust, k, out);
		if (fabs(jnum(out->p, "data.threshold") - thr) < 1e-9)
			return;
		hook_free(out);
	}
}

/* Everything a delivery must carry: Standard Webhooks headers and a signature valid with `secret`
 * (and with no wrong secret, nor over a tampered body). */
static void ck_hook(const struct hook *h, const char *secret)
{
	char ct[128];
	long long ts = atoll(h->ts), now = (long long)time(NULL);

	ck_assert_str_eq(h->q.method, "POST");
	ck_assert_msg(h->p && json_is_object(h->p), "the body is not a JSON object: %s", h->q.body);
	ck_assert_msg(rcv_header(&h->q, "Content-Type", ct, sizeof(ct)) && strstr(ct, "application/json"),
		      "Content-Type: %s", rcv_header(&h->q, "Content-Type", ct, sizeof(ct)) ? ct : "(none)");
	ck_assert_msg(h->id[0] && strncmp(h->id, "evt_", 4) == 0, "webhook-id '%s'", h->id);
	ck_assert_msg(json_is_string(json_object_get(h->p, "id")) && !strcmp(jstr(h->p, "id"), h->id),
		      "payload id differs from webhook-id %s: %s", h->id, h->q.body);
	ck_assert_msg(h->type != NULL, "no type: %s", h->q.body);
	time_parse(jstr(h->p, "created"));
	ck_assert_msg(json_is_object(json_object_get(h->p, "data")), "no data object: %s", h->q.body);
	ck_assert_msg(h->ts[0] && strspn(h->ts, "0123456789") == strlen(h->ts), "webhook-timestamp '%s'", h->ts);
	ck_assert_msg(ts > now - 120 && ts < now + 120, "webhook-timestamp %lld is not now (%lld)", ts, now);
	ck_assert_msg(atoi(h->attempt) >= 1, "Tollgate-Delivery-Attempt '%s'", h->attempt);
	ck_assert_msg(strncmp(h->sig, "v1,", 3) == 0, "webhook-signature '%s'", h->sig);
	int ok = sw_verify(secret, h->id, h->ts, h->q.body, h->q.body_len, h->sig);
	ck_assert_msg(ok >= 1, "the signature '%s' of %s (id %s, ts %s) does not verify with %s", h->sig, h->q.body,
		      h->id, h->ts, secret);
	ck_assert_msg(sw_verify(WRONG_SECRET, h->id, h->ts, h->q.body, h->q.body_len, h->sig) == 0,
		      "the signature verifies with a wrong secret");
	/* the signature covers the body, the id and the timestamp */
	char *tampered = strdup(h->q.body);
	tampered[h->q.body_len / 2] ^= 1;
	ck_assert_int_eq(sw_verify(secret, h->id, h->ts, tampered, h->q.body_len, h->sig), 0);
	free(tampered);
	char ts2[64];
	snprintf(ts2, sizeof(ts2), "%lld", ts + 1);
	ck_assert_int_eq(sw_verify(secret, h->id, ts2, h->q.body, h->q.body_len, h->sig), 0);
	ck_assert_int_eq(sw_verify(secret, "evt_other", h->ts, h->q.body, h->q.body_len, h->sig), 0);
}

/* Pending deliveries of an endpoint that another instance scheduled far ahead (its default 10 s
 * backoff) are made due now; returns how many were nudged. */
static int nudged_total;
static int nudge(const struct srv *s, const char *key, const char *ep)
{
	json_t *pend = deliveries(s, key, ep, "pending"), *d;
	long long now = (long long)time(NULL);
	int n = 0;
	size_t i;

	json_array_foreach(pend, i, d) {
		long long due = time_parse(jstr(d, "next_attempt_at"));
		/* claimed and in flight right now (counted, not yet logged): a retry would add an attempt */
		bool in_flight = jint(d, "attempts") > (long long)json_array_size(jpath(d, "attempt_log"));
		if (due > now + 3 && !in_flight) {
			char path[128];
			snprintf(path, sizeof(path), "/v1/webhook_deliveries/%s/retry", jstr(d, "id"));
			expectf(s, key, "POST", path, 200, NULL);
			fprintf(stderr, "note: delivery %s was due in %llds (scheduled by another instance?): retried now\n",
				jstr(d, "id"), due - now);
			n++;
		}
	}
	json_decref(pend);
	nudged_total += n;
	return n;
}

/* Wait for n requests at the receiver, nudging far-off retries of endpoint ep. */
static int wait_requests_nudging(struct receiver *r, const struct srv *s, const char *key, const char *ep, int n,
				 int timeout_ms)
{
	long long until = mono_ms() + timeout_ms, next_nudge = mono_ms() + 1500;

	while (rcv_count(r) < n && mono_ms() < until) {
		rcv_wait(r, n, 250);
		if (mono_ms() >= next_nudge) {
			nudge(s, key, ep);
			next_nudge = mono_ms() + 1000;
		}
	}
	return rcv_count(r);
}

/* ======== 1. thresholds and exceeded, signatures ======== */

START_TEST(threshold_once_signed_then_exceeded_once)
{
	struct tenant t = tokens_tenant(&S, false);
	struct receiver *rv = rcv_start();
	struct hook h;

	ck_assert_ptr_nonnull(rv);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"monthly\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"month\",\"limit\":1000,"
		"\"thresholds\":[0.8]}");
	struct ep e = ep_create(&S, t.key, rcv_url(rv, "/hooks/tollgate"), "[\"limit.threshold\",\"limit.exceeded\"]");

	tokens_event(&S, t.key, "c1", 850);
	ck_assert_msg(hooks_wait(rv, "limit.threshold", "c1", 1, 10000) == 1, "no limit.threshold within 10 s (got %d requests)",
		      rcv_count(rv));
	tokens_event(&S, t.key, "c1", 10);
	nap_ms(1500); /* a second one would have come by now */
	ck_assert_int_eq(hooks_count(rv, "limit.threshold", NULL, false), 1);
	ck_assert_int_eq(hooks_count(rv, "limit.exceeded", NULL, false), 0);
	ck_assert_int_eq(rcv_count(rv), 1);

	hook_find(rv, "limit.threshold", "c1", 0, &h);
	ck_assert_str_eq(h.q.path, "/hooks/tollgate");
	ck_hook(&h, e.secret);
	ck_assert_str_eq(h.attempt, "1");
	ck_num(h.p, "data.threshold", 0.8);
	ck_num(h.p, "data.usage", 850);
	ck_num(h.p, "data.limit", 1000);
	ck_assert_str_eq(jstr(h.p, "data.limit_id"), "monthly");
	ck_assert_str_eq(jstr(h.p, "data.customer_id"), "c1");
	/* the period of a monthly limit: this month */
	long long ps = time_parse(jstr(h.p, "data.period_start")), pe = time_parse(jstr(h.p, "data.period_end"));
	long long now = (long long)time(NULL);
	ck_assert_msg(ps <= now && pe > now && pe - ps >= 28 * 86400 && pe - ps <= 31 * 86400 && ps % 86400 == 0,
		      "period %s .. %s", jstr(h.p, "data.period_start"), jstr(h.p, "data.period_end"));
	/* the signature with a secret of another endpoint does not verify either */
	struct ep other = ep_create(&S, t.key, rcv_url(rv, "/unused"), "[\"workflow.terminated\"]");
	ck_assert_int_eq(sw_verify(other.secret, h.id, h.ts, h.q.body, h.q.body_len, h.sig), 0);
	/* our signer agrees byte for byte with the header */
	char mine[128];
	ck_assert_int_eq(sw_sign(e.secret, h.id, h.ts, h.q.body, h.q.body_len, mine, sizeof(mine)), 0);
	ck_assert_str_eq(h.sig, mine);
	hook_free(&h);

	/* over the limit: exactly one limit.exceeded, however many events follow */
	tokens_event(&S, t.key, "c1", 200);
	ck_assert_msg(hooks_wait(rv, "limit.exceeded", "c1", 1, 10000) == 1, "no limit.exceeded within 10 s");
	tokens_event(&S, t.key, "c1", 5);
	tokens_event(&S, t.key, "c1", 5);
	nap_ms(1500);
	ck_assert_int_eq(hooks_count(rv, "limit.exceeded", NULL, false), 1);
	ck_assert_int_eq(hooks_count(rv, "limit.threshold", NULL, false), 1);
	hook_find(rv, "limit.exceeded", "c1", 0, &h);
	ck_hook(&h, e.secret);
	ck_num(h.p, "data.usage", 1060);
	ck_num(h.p, "data.limit", 1000);
	ck_assert_str_eq(jstr(h.p, "data.limit_id"), "monthly");
	ck_assert_msg(json_is_string(jpath(h.p, "data.enforcement")), "no data.enforcement: %s", h.q.body);
	hook_free(&h);

	/* another customer crossing is its own event */
	tokens_event(&S, t.key, "c2", 900);
	ck_assert_int_eq(hooks_wait(rv, "limit.threshold", "c2", 1, 10000), 1);
	ck_assert_int_eq(hooks_count(rv, "limit.threshold", NULL, true), 2);
	rcv_stop(rv);
}
END_TEST

/* Consuming checks fire thresholds too; a soft limit lets usage past the limit: limit.exceeded. */
START_TEST(threshold_and_exceeded_by_consuming_checks)
{
	struct tenant t = tokens_tenant(&S, false);
	struct receiver *rv = rcv_start();
	struct hook h;

	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"soft\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"month\",\"limit\":10,"
		"\"enforcement\":\"soft\",\"thresholds\":[0.5,1.0]}");
	struct ep e = ep_create(&S, t.key, rcv_url(rv, "/cc"), "[\"limit.threshold\",\"limit.exceeded\"]");
	expectf(&S, t.key, "POST", "/v1/check", 200, "{\"customer_id\":\"cc\",\"meter\":\"tokens\",\"amount\":6,\"consume\":true}");
	ck_assert_msg(hooks_wait(rv, "limit.threshold", "cc", 1, 10000) == 1, "no limit.threshold from a consuming check");
	hook_find(rv, "limit.threshold", "cc", 0, &h);
	ck_hook(&h, e.secret);
	ck_num(h.p, "data.threshold", 0.5);
	ck_num(h.p, "data.usage", 6);
	hook_free(&h);
	struct resp r = callf(&S, t.key, "POST", "/v1/check", "{\"customer_id\":\"cc\",\"meter\":\"tokens\",\"amount\":6,\"consume\":true}");
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "decision"), "warn");
	resp_free(&r);
	ck_assert_int_eq(hooks_wait(rv, "limit.exceeded", "cc", 1, 10000), 1);
	ck_assert_int_eq(hooks_wait(rv, "limit.threshold", "cc", 2, 10000), 2);
	expectf(&S, t.key, "POST", "/v1/check", 200, "{\"customer_id\":\"cc\",\"meter\":\"tokens\",\"amount\":1,\"consume\":true}");
	nap_ms(1500);
	ck_assert_int_eq(hooks_count(rv, "limit.threshold", NULL, false), 2);
	ck_assert_int_eq(hooks_count(rv, "limit.exceeded", NULL, false), 1);
	hook_find(rv, "limit.threshold", "cc", 1, &h);
	ck_num(h.p, "data.threshold", 1);
	ck_num(h.p, "data.usage", 12);
	hook_free(&h);
	hook_find(rv, "limit.exceeded", "cc", 0, &h);
	ck_hook(&h, e.secret);
	ck_num(h.p, "data.usage", 12);
	ck_assert_str_eq(jstr(h.p, "data.enforcement"), "soft");
	hook_free(&h);
	rcv_stop(rv);
}
END_TEST

/* Quotas on the built-in requests meter (counted in Redis alone, by checks) fire thresholds too; a soft one
 * fires limit.exceeded when a check takes it past its limit, a hard one at its first refusal. */
START_TEST(requests_quotas_fire_thresholds_and_exceeded)
{
	struct tenant t = tenant_new(&S, false);
	struct receiver *rv = rcv_start();
	struct hook h;

	expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"rs\"}");
	expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"rh\"}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"soft-req\",\"meter\":\"requests\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":4,"
		"\"enforcement\":\"soft\",\"thresholds\":[0.5,1.0],\"scope\":\"customer\",\"customer_id\":\"rs\"}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"hard-req\",\"meter\":\"requests\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":2,"
		"\"thresholds\":[1.0],\"scope\":\"customer\",\"customer_id\":\"rh\"}");
	struct ep e = ep_create(&S, t.key, rcv_url(rv, "/rq"), "[\"limit.threshold\",\"limit.exceeded\"]");
	for (int i = 1; i <= 6; i++) {
		struct resp r = callf(&S, t.key, "POST", "/v1/check", "{\"customer_id\":\"rs\"}");
		ck_status(r, 200);
		ck_assert_str_eq(jstr(r.json, "decision"), i <= 4 ? "allow" : "warn");
		resp_free(&r);
		expectf(&S, t.key, "POST", "/v1/check", i <= 2 ? 200 : 429, "{\"customer_id\":\"rh\"}");
	}
	/* a dry run past the limit fires nothing */
	expectf(&S, t.key, "POST", "/v1/check", 200, "{\"customer_id\":\"rs\",\"dry_run\":true}");
	ck_assert_int_eq(hooks_wait(rv, "limit.threshold", "rs", 2, 10000), 2);
	ck_assert_int_eq(hooks_wait(rv, "limit.exceeded", "rs", 1, 10000), 1);
	ck_assert_int_eq(hooks_wait(rv, "limit.threshold", "rh", 1, 10000), 1);
	ck_assert_int_eq(hooks_wait(rv, "limit.exceeded", "rh", 1, 10000), 1);
	nap_ms(1000);
	ck_assert_int_eq(hooks_count(rv, "limit.threshold", NULL, false), 3);
	ck_assert_int_eq(hooks_count(rv, "limit.exceeded", NULL, false), 2);
	threshold_find(rv, "rs", 0.5, &h);
	ck_hook(&h, e.secret);
	ck_assert_str_eq(jstr(h.p, "data.limit_id"), "soft-req");
	ck_num(h.p, "data.threshold", 0.5);
	ck_num(h.p, "data.usage", 2);
	ck_num(h.p, "data.limit", 4);
	time_parse(jstr(h.p, "data.period_start"));
	time_parse(jstr(h.p, "data.period_end"));
	hook_free(&h);
	threshold_find(rv, "rs", 1, &h);
	ck_num(h.p, "data.threshold", 1);
	ck_num(h.p, "data.usage", 4);
	hook_free(&h);
	hook_find(rv, "limit.exceeded", "rs", 0, &h);
	ck_num(h.p, "data.usage", 5);
	ck_assert_str_eq(jstr(h.p, "data.enforcement"), "soft");
	hook_free(&h);
	hook_find(rv, "limit.threshold", "rh", 0, &h);
	ck_assert_str_eq(jstr(h.p, "data.limit_id"), "hard-req");
	ck_num(h.p, "data.usage", 2);
	hook_free(&h);
	hook_find(rv, "limit.exceeded", "rh", 0, &h);
	ck_num(h.p, "data.usage", 2);
	ck_assert_str_eq(jstr(h.p, "data.enforcement"), "hard");
	hook_free(&h);
	/* a threshold added below the usage fires at the next check, as for event meters */
	expectf(&S, t.key, "PATCH", "/v1/limits/soft-req", 200, "{\"thresholds\":[0.25,0.5,1.0]}");
	expectf(&S, t.key, "POST", "/v1/check", 200, "{\"customer_id\":\"rs\"}");
	ck_assert_int_eq(hooks_wait(rv, "limit.threshold", "rs", 3, 10000), 3);
	threshold_find(rv, "rs", 0.25, &h);
	ck_num(h.p, "data.threshold", 0.25);
	ck_num(h.p, "data.usage", 7);
	hook_free(&h);
	nap_ms(500);
	ck_assert_int_eq(hooks_count(rv, "limit.threshold", NULL, false), 4);
	ck_assert_int_eq(hooks_count(rv, "limit.exceeded", NULL, false), 2);
	rcv_stop(rv);
}
END_TEST

/* ======== 2. retries ======== */

START_TEST(retry_fails_twice_then_succeeds)
{
	struct tenant t = tenant_new(&S, false);
	struct receiver *rv = rcv_start();
	struct hook h[3];

	rcv_fail_next(rv, 2, 500);
	struct ep e = ep_create(&S, t.key, rcv_url(rv, "/r"), "[\"*\"]");
	char path[128];
	snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s/test", e.id);
	struct resp r = req(&S, "POST", path, t.key, NULL, NULL);
	ck_status(r, 201);
	char whd[64], evt[64];
	snprintf(whd, sizeof(whd), "%s", jstr(r.json, "id"));
	snprintf(evt, sizeof(evt), "%s", jstr(r.json, "event_id"));
	resp_free(&r);

	ck_assert_msg(wait_requests_nudging(rv, &S, t.key, e.id, 3, 20000) >= 3, "only %d attempts arrived in 20 s",
		      rcv_count(rv));
	for (int i = 0; i < 3; i++) {
		ck_assert(hook_get(rv, i, &h[i]));
		ck_hook(&h[i], e.secret);
		ck_assert_str_eq(h[i].type, "ping");
		ck_assert_str_eq(h[i].id, evt);
		char want[8];
		snprintf(want, sizeof(want), "%d", i + 1);
		ck_assert_msg(!strcmp(h[i].attempt, want), "request %d: Tollgate-Delivery-Attempt %s, want %s", i, h[i].attempt,
			      want);
		ck_assert_int_eq(h[i].q.answered, i < 2 ? 500 : 200);
	}
	ck_assert_str_eq(h[0].id, h[1].id);
	ck_assert_str_eq(h[1].id, h[2].id);
	/* backed off, not resent at once (base 200 ms, -20 % jitter) */
	ck_assert_msg(h[1].q.at_ms - h[0].q.at_ms >= 150, "attempt 2 came %lld ms after attempt 1",
		      h[1].q.at_ms - h[0].q.at_ms);
	ck_assert_msg(h[2].q.at_ms - h[1].q.at_ms >= 150, "attempt 3 came %lld ms after attempt 2",
		      h[2].q.at_ms - h[1].q.at_ms);
	for (int i = 0; i < 3; i++)
		hook_free(&h[i]);

	/* the delivery's record: three attempts, 500, 500, 200 */
	json_t *d = NULL;
	for (int i = 0; i < 50; i++) { /* the last attempt is recorded right after the answer */
		d = delivery_of(&S, t.key, e.id, evt);
		ck_assert_ptr_nonnull(d);
		if (!strcmp(jstr(d, "status"), "succeeded"))
			break;
		json_decref(d);
		d = NULL;
		nap_ms(100);
	}
	ck_assert_msg(d != NULL, "the delivery is not succeeded after the third attempt");
	ck_assert_str_eq(jstr(d, "id"), whd);
	ck_assert_str_eq(jstr(d, "endpoint_id"), e.id);
	ck_assert_str_eq(jstr(d, "event_type"), "ping");
	ck_assert_int_eq(jint(d, "attempts"), 3);
	ck_assert_int_eq(jint(d, "last_status"), 200);
	json_t *log = jpath(d, "attempt_log");
	ck_assert_msg(json_array_size(log) == 3, "attempt_log has %zu entries", json_array_size(log));
	for (int i = 0; i < 3; i++) {
		char p[32];
		snprintf(p, sizeof(p), "%d", i);
		json_t *a = jpath(log, p);
		ck_assert_int_eq(jint(a, "attempt"), i + 1);
		ck_assert_int_eq(jint(a, "status_code"), i < 2 ? 500 : 200);
		ck_assert_msg(jint(a, "latency_ms") >= 0, "latency_ms");
		time_parse(jstr(a, "started_at"));
		ck_assert_str_eq(jstr(a, "response"), i < 2 ? "no" : "ok"); /* the receiver's body */
	}
	/* final: next_attempt_at is when the last attempt started, not the claim's lease a minute ahead */
	long long last_started = time_parse(jstr(d, "attempt_log.2.started_at"));
	ck_assert_msg(time_parse(jstr(d, "next_attempt_at")) <= last_started, "next_attempt_at %s after the last attempt %s",
		      jstr(d, "next_attempt_at"), jstr(d, "attempt_log.2.started_at"));
	json_decref(d);
	/* ?status= filters */
	json_t *l = deliveries(&S, t.key, e.id, "succeeded");
	ck_assert_int_eq(json_array_size(l), 1);
	json_decref(l);
	l = deliveries(&S, t.key, e.id, "pending");
	ck_assert_int_eq(json_array_size(l), 0);
	json_decref(l);
	l = deliveries(&S, t.key, e.id, "failed");
	ck_assert_int_eq(json_array_size(l), 0);
	json_decref(l);
	snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s/deliveries?status=done", e.id);
	r = req(&S, "GET", path, t.key, NULL, NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "status");
	resp_free(&r);
	nap_ms(800);
	ck_assert_int_eq(rcv_count(rv), 3); /* nothing more after the success */
	rcv_stop(rv);
}
END_TEST

/* ======== 3. kill -9 and two instances ======== */

/* A threshold for customer `cust` (limit 10, threshold 0.5): 6 tokens. */
#define SMALL_LIMIT                                                                                              \
	"{\"id\":\"small\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"month\",\"limit\":10,\"thresholds\":[0.5]}"

START_TEST(kill9_between_attempts_still_delivers)
{
	/* only this test's instance runs now (the suite's own server is stopped for it) */
	static const char *const slow[] = {"TOLLGATE_WEBHOOK_BACKOFF_BASE_MS=2500", NULL};
	srv_stop(&S);
	srv_start(&S, slow);
	struct tenant t = tokens_tenant(&S, false);
	struct receiver *rv = rcv_start();
	struct hook h;

	rcv_set_default(rv, 503);
	expectf(&S, t.key, "POST", "/v1/limits", 201, SMALL_LIMIT);
	struct ep e = ep_create(&S, t.key, rcv_url(rv, "/k"), "[\"limit.threshold\"]");
	tokens_event(&S, t.key, "k1", 6);
	ck_assert_msg(rcv_wait(rv, 1, 10000) >= 1, "the first attempt did not arrive");
	hook_find(rv, "limit.threshold", "k1", 0, &h);
	char evt[128];
	snprintf(evt, sizeof(evt), "%s", h.id);
	ck_assert_str_eq(h.attempt, "1");
	hook_free(&h);
	/* wait until the failed attempt is recorded (pending, next attempt in ~2.5 s), then kill -9 */
	json_t *d = NULL;
	for (int i = 0; i < 40; i++) {
		d = delivery_of(&S, t.key, e.id, evt);
		if (d && json_array_size(jpath(d, "attempt_log")) >= 1)
			break;
		json_decref(d);
		d = NULL;
		nap_ms(50);
	}
	ck_assert_msg(d != NULL, "the first attempt was not recorded");
	ck_assert_str_eq(jstr(d, "status"), "pending");
	ck_assert_int_eq(jint(d, "attempts"), 1);
	ck_assert_int_eq(jint(d, "attempt_log.0.status_code"), 503);
	char whd[64];
	snprintf(whd, sizeof(whd), "%s", jstr(d, "id"));
	json_decref(d);
	srv_kill9(&S);
	int before = rcv_count(rv);
	rcv_set_default(rv, 200);
	ck_assert_msg(before == 1, "%d attempts before the kill", before);
	char q[256];
	snprintf(q, sizeof(q), "SELECT count(*) FROM webhook_deliveries WHERE id = '%s' AND status = 'pending'", whd);
	ck_assert_int_eq(psql_ll("%s", q), 1);

	/* restarted: the delivery arrives, same event id, second attempt */
	srv_start(&S, FAST_ENV);
	ck_assert_msg(wait_requests_nudging(rv, &S, t.key, e.id, 2, 20000) >= 2, "nothing arrived after the restart");
	ck_assert(hook_get(rv, 1, &h));
	ck_hook(&h, e.secret);
	ck_assert_str_eq(h.id, evt);
	ck_assert_str_eq(h.type, "limit.threshold");
	ck_assert_str_eq(h.attempt, "2");
	ck_assert_int_eq(h.q.answered, 200);
	hook_free(&h);
	for (int i = 0; i < 50; i++) {
		d = delivery_of(&S, t.key, e.id, evt);
		if (!strcmp(jstr(d, "status"), "succeeded"))
			break;
		json_decref(d);
		d = NULL;
		nap_ms(100);
	}
	ck_assert_msg(d != NULL, "the delivery did not become succeeded");
	ck_assert_int_eq(jint(d, "attempts"), 2);
	ck_assert_int_eq(json_array_size(jpath(d, "attempt_log")), 2);
	json_decref(d);
	rcv_stop(rv);
}
END_TEST

struct two {
	struct srv *a, *b;
	const char *key;
};

static void two_events(int i, void *arg)
{
	struct two *x = arg;
	char cust[32];
	snprintf(cust, sizeof(cust), "m%02d", i);
	tokens_event(i % 2 ? x->b : x->a, x->key, cust, 6);
}

START_TEST(two_instances_every_event_delivered)
{
	enum { N = 20 };
	struct srv S2 = {0};
	srv_start(&S2, FAST_ENV);
	struct tenant t = tokens_tenant(&S, false);
	struct receiver *rv = rcv_start();

	expectf(&S, t.key, "POST", "/v1/limits", 201, SMALL_LIMIT);
	nap_ms(1200); /* the limit reaches the second instance within 1 s */
	struct ep e = ep_create(&S, t.key, rcv_url(rv, "/two"), "[\"limit.threshold\"]");
	/* some deliveries fail once, so retries mix with first attempts on both instances */
	rcv_fail_next(rv, 5, 500);
	struct two x = {&S, &S2, t.key};
	run_parallel(N, two_events, &x);

	long long until = mono_ms() + 20000;
	while (hooks_ok(rv, "limit.threshold", NULL) < N && mono_ms() < until) {
		rcv_wait(rv, rcv_count(rv) + 1, 250);
		if (mono_ms() > until - 15000)
			nudge(&S, t.key, e.id);
	}
	int distinct = hooks_ok(rv, "limit.threshold", NULL);
	int total = rcv_count(rv);
	for (int i = 0; i < N; i++) {
		char cust[32];
		snprintf(cust, sizeof(cust), "m%02d", i);
		ck_assert_msg(hooks_ok(rv, "limit.threshold", cust) == 1,
			      "customer %s: %d distinct limit.threshold delivered (of %d distinct, %d requests)", cust,
			      hooks_ok(rv, "limit.threshold", cust), distinct, total);
	}
	ck_assert_int_eq(distinct, N);
	/* each verified; duplicates (at-least-once) are allowed, but say how many there were */
	int ok200 = 0;
	for (int i = 0; i < total; i++) {
		struct hook h;
		ck_assert(hook_get(rv, i, &h));
		ck_hook(&h, e.secret);
		ok200 += h.q.answered == 200;
		hook_free(&h);
	}
	nap_ms(500);
	ok200 = hooks_count_x(rv, "limit.threshold", NULL, false, true);
	if (ok200 != N)
		fprintf(stderr, "note: two instances: %d successful deliveries for %d events (duplicates)\n", ok200, N);
	/* every delivery ends succeeded */
	for (int i = 0; i < 30; i++) {
		json_t *p = deliveries(&S, t.key, e.id, "pending");
		size_t n = json_array_size(p);
		json_decref(p);
		if (n == 0)
			break;
		nap_ms(100);
	}
	json_t *all = deliveries(&S, t.key, e.id, NULL), *sc = deliveries(&S, t.key, e.id, "succeeded");
	ck_assert_int_eq(json_array_size(all), N);
	ck_assert_int_eq(json_array_size(sc), N);
	json_decref(all);
	json_decref(sc);
	srv_stop(&S2);
	rcv_stop(rv);
}
END_TEST

/* ======== 4. balances ======== */

START_TEST(balance_low_depleted_replenished)
{
	struct tenant t = tenant_new(&S, false);
	struct receiver *rv = rcv_start();
	struct hook h;

	struct ep e = ep_create(&S, t.key, rcv_url(rv, "/bal"), "[\"balance.low\",\"balance.depleted\",\"balance.replenished\"]");
	expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"w\"}");
	expectf(&S, t.key, "POST", "/v1/customers/w/balance/credit", 200, "{\"amount\":10}");
	expectf(&S, t.key, "PATCH", "/v1/customers/w/balance", 200, "{\"low_balance_threshold\":5,\"minimum_balance\":0}");
	nap_ms(500);
	ck_assert_int_eq(rcv_count(rv), 0);

	/* 10 → 3: below 5 */
	expectf(&S, t.key, "POST", "/v1/customers/w/balance/debit", 200, "{\"amount\":7}");
	ck_assert_int_eq(hooks_wait(rv, "balance.low", "w", 1, 10000), 1);
	hook_find(rv, "balance.low", "w", 0, &h);
	ck_hook(&h, e.secret);
	ck_num(h.p, "data.balance", 3);
	ck_num(h.p, "data.low_balance_threshold", 5);
	ck_num(h.p, "data.minimum_balance", 0);
	hook_free(&h);

	/* 3 → 0: the minimum */
	expectf(&S, t.key, "POST", "/v1/customers/w/balance/debit", 200, "{\"amount\":3}");
	ck_assert_int_eq(hooks_wait(rv, "balance.depleted", "w", 1, 10000), 1);
	hook_find(rv, "balance.depleted", "w", 0, &h);
	ck_hook(&h, e.secret);
	ck_num(h.p, "data.balance", 0);
	ck_num(h.p, "data.minimum_balance", 0);
	hook_free(&h);
	/* below the minimum is refused, and fires nothing */
	struct resp r = callf(&S, t.key, "POST", "/v1/customers/w/balance/debit", "{\"amount\":1}");
	ck_status(r, 402);
	resp_free(&r);

	/* 0 → 4: replenished */
	expectf(&S, t.key, "POST", "/v1/customers/w/balance/credit", 200, "{\"amount\":4}");
	ck_assert_int_eq(hooks_wait(rv, "balance.replenished", "w", 1, 10000), 1);
	hook_find(rv, "balance.replenished", "w", 0, &h);
	ck_hook(&h, e.secret);
	ck_num(h.p, "data.balance", 4);
	hook_free(&h);

	/* 4 → 10: above the line again, nothing to say; then the line raised above it: low again */
	expectf(&S, t.key, "POST", "/v1/customers/w/balance/credit", 200, "{\"amount\":6}");
	expectf(&S, t.key, "PATCH", "/v1/customers/w/balance", 200, "{\"low_balance_threshold\":12}");
	ck_assert_int_eq(hooks_wait(rv, "balance.low", "w", 2, 10000), 2);
	hook_find(rv, "balance.low", "w", 1, &h);
	ck_num(h.p, "data.balance", 10);
	ck_num(h.p, "data.low_balance_threshold", 12);
	hook_free(&h);

	nap_ms(1000);
	ck_assert_int_eq(hooks_count(rv, "balance.low", NULL, false), 2);
	ck_assert_int_eq(hooks_count(rv, "balance.depleted", NULL, false), 1);
	ck_assert_int_eq(hooks_count(rv, "balance.replenished", NULL, false), 1);
	ck_assert_int_eq(rcv_count(rv), 4);
	/* in causal order */
	struct hook a, b, c;
	ck_assert(hook_get(rv, 0, &a) && hook_get(rv, 1, &b) && hook_get(rv, 2, &c));
	ck_assert_str_eq(a.type, "balance.low");
	ck_assert_str_eq(b.type, "balance.depleted");
	ck_assert_str_eq(c.type, "balance.replenished");
	hook_free(&a);
	hook_free(&b);
	hook_free(&c);
	rcv_stop(rv);
}
END_TEST

/* ======== 5. period close and summaries on a test clock ======== */

static long long clock_now(const char *key)
{
	struct resp r = req(&S, "GET", "/v1/test_clock", key, NULL, NULL);
	ck_status(r, 200);
	long long t = time_parse(jstr(r.json, "now"));
	resp_free(&r);
	return t;
}

static long long clock_advance(const char *key, long long seconds)
{
	struct resp r = callf(&S, key, "POST", "/v1/test_clock/advance", "{\"seconds\":%lld}", seconds);
	ck_status(r, 200);
	long long t = time_parse(jstr(r.json, "now"));
	resp_free(&r);
	return t;
}

/* The delivery of evt once its attempt log holds n attempts (waits up to 5 s). */
static json_t *delivery_after(const char *key, const char *ep, const char *evt, size_t n)
{
	for (int i = 0; i < 100; i++) {
		json_t *d = delivery_of(&S, key, ep, evt);
		if (d && json_array_size(jpath(d, "attempt_log")) >= n)
			return d;
		json_decref(d);
		nap_ms(50);
	}
	ck_abort_msg("attempt %zu of %s was not recorded in 5 s", n, evt);
	return NULL;
}

/* A test-mode tenant's retries run on its clock: advancing it past a retry's time sends the retry at
 * once, and advancing it 3 days gives up a delivery that keeps failing, as 3 real days would. The
 * suite's server is restarted with an hour's backoff, so only the clock can bring a retry within the
 * test; other suites' servers (default 10 s backoff) cannot send one within the 4 s waited here. */
START_TEST(retries_follow_the_test_clock)
{
	static const char *const hourly[] = {"TOLLGATE_WEBHOOK_BACKOFF_BASE_MS=3600000", NULL};
	srv_stop(&S);
	srv_start(&S, hourly);
	struct tenant t = tenant_new(&S, true);
	struct receiver *rv = rcv_start();
	char path[128], evt[64];

	rcv_set_default(rv, 500);
	struct ep e = ep_create(&S, t.key, rcv_url(rv, "/clock"), "[\"*\"]");
	snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s/test", e.id);
	struct resp r = req(&S, "POST", path, t.key, NULL, NULL);
	ck_status(r, 201);
	snprintf(evt, sizeof(evt), "%s", jstr(r.json, "event_id"));
	resp_free(&r);
	json_t *d = delivery_after(t.key, e.id, evt, 1);
	ck_assert_str_eq(jstr(d, "status"), "pending");
	long long next = time_parse(jstr(d, "next_attempt_at"));
	json_decref(d);
	ck_assert_int_eq(rcv_count(rv), 1);

	/* two hours on the tenant's clock: the retry (due in about an hour) comes now */
	long long now = clock_advance(t.key, 7200);
	ck_assert_msg(now - 7200 < next, "the retry was due before the clock moved");
	ck_assert_msg(rcv_wait(rv, 2, 4000) >= 2, "the retry did not come when the test clock passed its time");
	d = delivery_after(t.key, e.id, evt, 2);
	ck_assert_str_eq(jstr(d, "status"), "pending"); /* two hours are not three days */
	ck_assert_int_eq(jint(d, "attempts"), 2);
	json_decref(d);

	/* three days later it is given up after one more attempt */
	clock_advance(t.key, 3 * 86400);
	ck_assert_msg(rcv_wait(rv, 3, 4000) >= 3, "the last retry did not come when the test clock passed its time");
	d = delivery_after(t.key, e.id, evt, 3);
	ck_assert_str_eq(jstr(d, "status"), "failed");
	ck_assert_int_eq(jint(d, "attempts"), 3);
	json_decref(d);
	nap_ms(300);
	ck_assert_int_eq(rcv_count(rv), 3);
	rcv_stop(rv);
	srv_stop(&S);
	srv_start(&S, FAST_ENV);
}
END_TEST

/* Move the clock to 10 minutes into an hour between 01:00 and 21:00 (so a day does not end by itself). */
/* RFC 3339 UTC text of epoch seconds (a static buffer) */
static const char *iso(long long t)
{
	static char b[32];
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(b, sizeof(b), "%Y-%m-%dT%H:%M:%SZ", &tm);
	return b;
}

static long long clock_align(const char *key)
{
	long long now = clock_now(key), target = (now / 3600 + 1) * 3600 + 600;
	while ((target % 86400) / 3600 < 1 || (target % 86400) / 3600 > 21)
		target += 3600;
	return clock_advance(key, target - now);
}

#define HOURLY_LIMIT                                                                                             \
	"{\"id\":\"hourly\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"hour\",\"limit\":100}"

static void ck_reset(struct receiver *rv, const struct ep *e, const char *cust, long long period_start, double usage)
{
	struct hook h;

	hook_find(rv, "limit.reset", cust, 0, &h);
	ck_hook(&h, e->secret);
	ck_assert_str_eq(jstr(h.p, "data.limit_id"), "hourly");
	ck_assert_str_eq(jstr(h.p, "data.customer_id"), cust);
	ck_num(h.p, "data.usage", usage);
	ck_num(h.p, "data.limit", 100);
	ck_assert_msg(time_parse(jstr(h.p, "data.period_start")) == period_start &&
			      time_parse(jstr(h.p, "data.period_end")) == period_start + 3600,
		      "period %s .. %s, want the hour from %lld", jstr(h.p, "data.period_start"), jstr(h.p, "data.period_end"),
		      period_start);
	hook_free(&h);
}

START_TEST(reset_and_summary_on_test_clock)
{
	struct tenant t = tokens_tenant(&S, true);
	struct receiver *rv = rcv_start();
	struct hook h;

	struct ep e = ep_create(&S, t.key, rcv_url(rv, "/clock"), "[\"limit.reset\",\"usage.summary\"]");
	long long now = clock_align(t.key);
	expectf(&S, t.key, "POST", "/v1/limits", 201, HOURLY_LIMIT);
	/* a max meter's day is its largest event, not the sum of its hours (no quota on it: no limit.reset) */
	expectf(&S, t.key, "POST", "/v1/meters", 201,
		"{\"id\":\"peak\",\"event_type\":\"gpu\",\"aggregation\":\"max\",\"property\":\"gb\"}");

	tokens_event(&S, t.key, "u1", 30);
	tokens_event(&S, t.key, "u1", 12);
	tokens_event(&S, t.key, "u2", 5);
	/* u3: an hour ago (earlier today: clock_align keeps off midnight) and now; its tokens of an hour ago
	 * fell before the hourly limit existed on the tenant's clock, so no limit.reset closes that hour */
	char earlier[32];
	snprintf(earlier, sizeof(earlier), "%s", iso(now - 3600));
	struct resp er = callf(&S, t.key, "POST", "/v1/events",
			       "{\"events\":[{\"customer_id\":\"u3\",\"type\":\"gpu\",\"timestamp\":\"%s\",\"properties\":{\"gb\":8}},"
			       "{\"customer_id\":\"u3\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":4}},"
			       "{\"customer_id\":\"u3\",\"type\":\"gpu\",\"properties\":{\"gb\":6}}]}",
			       earlier, earlier);
	ck_assert_msg(er.status == 200 && jint(er.json, "accepted") == 3, "u3's events: %ld %s", er.status, er.body);
	resp_free(&er);
	long long hour = now / 3600 * 3600, day = now / 86400 * 86400;
	/* the duties go round robin over every tenant of the database within a time budget per pass:
	 * with many (suites running in parallel, an old test database) a limit waits longer for its turn */
	clock_advance(t.key, 3600);
	long long t0 = mono_ms();
	ck_assert_msg(hooks_wait(rv, "limit.reset", "u1", 1, 25000) == 1, "no limit.reset for u1 within 25 s");
	ck_assert_int_eq(hooks_wait(rv, "limit.reset", "u2", 1, 5000), 1);
	if (mono_ms() - t0 > 5000)
		fprintf(stderr, "note: limit.reset came %lld ms after the clock crossed the hour\n", mono_ms() - t0);
	ck_reset(rv, &e, "u1", hour, 42);
	ck_reset(rv, &e, "u2", hour, 5);
	/* the history table has the final usage */
	ck_assert_int_eq(psql_ll("SELECT count(*) FROM period_history WHERE tenant_id = '%s' AND limit_id = 'hourly' "
				"AND subject = 'u1' AND usage = 42 AND \\\"limit\\\" = 100",
				t.id),
			 1);

	/* a day later: one usage.summary per customer for the day of the usage; hours without usage close
	 * without a limit.reset */
	clock_advance(t.key, 86400);
	t0 = mono_ms();
	ck_assert_msg(hooks_wait(rv, "usage.summary", "u1", 1, 25000) == 1, "no usage.summary for u1 within 25 s");
	if (mono_ms() - t0 > 5000)
		fprintf(stderr, "note: usage.summary came %lld ms after the clock crossed the day\n", mono_ms() - t0);
	ck_assert_int_eq(hooks_wait(rv, "usage.summary", "u2", 1, 5000), 1);
	hook_find(rv, "usage.summary", "u1", 0, &h);
	ck_hook(&h, e.secret);
	ck_num(h.p, "data.usage.tokens", 42);
	char date[16];
	time_t dt = (time_t)day;
	strftime(date, sizeof(date), "%Y-%m-%d", gmtime(&dt));
	ck_assert_str_eq(jstr(h.p, "data.date"), date);
	ck_assert_msg(time_parse(jstr(h.p, "data.period_start")) == day && time_parse(jstr(h.p, "data.period_end")) == day + 86400,
		      "summary period %s .. %s", jstr(h.p, "data.period_start"), jstr(h.p, "data.period_end"));
	hook_free(&h);
	hook_find(rv, "usage.summary", "u2", 0, &h);
	ck_num(h.p, "data.usage.tokens", 5);
	hook_free(&h);
	/* the max meter over two hours: the larger event, not the sum of the hours' maxima */
	ck_assert_int_eq(hooks_wait(rv, "usage.summary", "u3", 1, 5000), 1);
	hook_find(rv, "usage.summary", "u3", 0, &h);
	ck_num(h.p, "data.usage.peak", 8);
	ck_num(h.p, "data.usage.tokens", 4);
	hook_free(&h);
	nap_ms(2100);
	if (hooks_count(rv, "limit.reset", "u3", false) != 0) {
		hook_find(rv, "limit.reset", "u3", 0, &h);
		ck_abort_msg("a limit.reset for u3, whose usage of the hourly meter fell an hour before the limit was made "
			     "(tenant's clock %s): %s .. %s", iso(now), jstr(h.p, "data.period_start"), jstr(h.p, "data.period_end"));
	}
	ck_assert_int_eq(hooks_count(rv, "limit.reset", NULL, false), 2);
	ck_assert_int_eq(hooks_count(rv, "usage.summary", NULL, false), 3);
	rcv_stop(rv);
}
END_TEST

/* A user's natural sequence: create the limit, send usage, advance the clock at once. The period that
 * had usage must close with a limit.reset however soon the clock moves. */
START_TEST(reset_when_clock_advanced_right_after_limit_created)
{
	struct tenant t = tokens_tenant(&S, true);
	struct receiver *rv = rcv_start();

	struct ep e = ep_create(&S, t.key, rcv_url(rv, "/clock2"), "[\"limit.reset\"]");
	long long now = clock_align(t.key);
	expectf(&S, t.key, "POST", "/v1/limits", 201, HOURLY_LIMIT);
	tokens_event(&S, t.key, "v1", 7);
	clock_advance(t.key, 3600);
	ck_assert_msg(hooks_wait(rv, "limit.reset", "v1", 1, 6000) == 1,
		      "no limit.reset within 6 s for the hour that had usage (clock advanced right after the limit was "
		      "created); duty_progress rows of the tenant: %lld",
		      psql_ll("SELECT count(*) FROM duty_progress WHERE tenant_id = '%s'", t.id));
	ck_reset(rv, &e, "v1", now / 3600 * 3600, 7);
	rcv_stop(rv);
}
END_TEST

/* The same for the daily summary: usage on a new tenant's clock, a day passes at once. */
START_TEST(summary_when_clock_advanced_right_after_tenant_created)
{
	struct tenant t = tokens_tenant(&S, true);
	struct receiver *rv = rcv_start();

	ep_create(&S, t.key, rcv_url(rv, "/sum2"), "[\"usage.summary\"]");
	tokens_event(&S, t.key, "s1", 3);
	clock_advance(t.key, 86400);
	ck_assert_msg(hooks_wait(rv, "usage.summary", "s1", 1, 6000) == 1,
		      "no usage.summary within 6 s for the day that had usage (clock advanced right after the tenant "
		      "was created)");
	struct hook h;
	hook_find(rv, "usage.summary", "s1", 0, &h);
	ck_num(h.p, "data.usage.tokens", 3);
	hook_free(&h);
	rcv_stop(rv);
}
END_TEST

/* ======== 6. rotation ======== */

static void ping(const struct srv *s, const char *key, const char *ep)
{
	char path[128];
	snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s/test", ep);
	expectf(s, key, "POST", path, 201, NULL);
}

/* The signatures of a header, one by one: which secret each verifies with. */
static void ck_two_sigs(const struct hook *h, const char *newer, const char *older)
{
	char copy[1024], *save = NULL;
	int n = 0, by_new = 0, by_old = 0;

	snprintf(copy, sizeof(copy), "%s", h->sig);
	for (char *tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
		int a = sw_verify(newer, h->id, h->ts, h->q.body, h->q.body_len, tok);
		int b = sw_verify(older, h->id, h->ts, h->q.body, h->q.body_len, tok);
		ck_assert_msg(a + b == 1, "signature '%s' verifies with %d of the two secrets", tok, a + b);
		by_new += a;
		by_old += b;
		n++;
	}
	ck_assert_msg(n == 2 && by_new == 1 && by_old == 1, "webhook-signature '%s': %d signatures, %d new, %d old", h->sig,
		      n, by_new, by_old);
}

START_TEST(rotation_sends_both_signatures)
{
	struct tenant t = tenant_new(&S, false);
	struct receiver *rv = rcv_start();
	struct hook h;
	char path[128], s1[128], s2[128], s3[128];

	struct ep e = ep_create(&S, t.key, rcv_url(rv, "/rot"), "[\"*\"]");
	snprintf(s1, sizeof(s1), "%s", e.secret);
	ping(&S, t.key, e.id);
	ck_assert_int_eq(hooks_wait(rv, "ping", NULL, 1, 10000), 1);
	ck_assert(hook_get(rv, 0, &h));
	ck_hook(&h, s1);
	ck_assert_msg(!strchr(h.sig, ' '), "one signature before a rotation: '%s'", h.sig);
	hook_free(&h);

	snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s/rotate_secret", e.id);
	struct resp r = req(&S, "POST", path, t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "id"), e.id);
	snprintf(s2, sizeof(s2), "%s", jstr(r.json, "secret"));
	ck_assert_msg(strncmp(s2, "whsec_", 6) == 0 && strcmp(s2, s1) != 0, "new secret %s", s2);
	long long exp = time_parse(jstr(r.json, "previous_secret_expires_at")), now = (long long)time(NULL);
	ck_assert_msg(exp > now + 86400 - 120 && exp < now + 86400 + 120, "previous_secret_expires_at %s",
		      jstr(r.json, "previous_secret_expires_at"));
	resp_free(&r);
	/* the secret is never shown again */
	snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s", e.id);
	r = req(&S, "GET", path, t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_ptr_null(jpath(r.json, "secret"));
	ck_assert_ptr_null(jpath(r.json, "previous_secret"));
	ck_assert_msg(!strstr(r.body, s1 + 6) && !strstr(r.body, s2 + 6), "a secret in GET: %s", r.body);
	resp_free(&r);

	ping(&S, t.key, e.id);
	ck_assert_int_eq(hooks_wait(rv, "ping", NULL, 2, 10000), 2);
	ck_assert(hook_get(rv, 1, &h));
	ck_hook(&h, s2);
	ck_assert_int_eq(sw_verify(s1, h.id, h.ts, h.q.body, h.q.body_len, h.sig), 1);
	ck_two_sigs(&h, s2, s1);
	hook_free(&h);

	/* a second rotation: the newest and the one it replaced; the first is no longer used */
	snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s/rotate_secret", e.id);
	r = req(&S, "POST", path, t.key, NULL, NULL);
	ck_status(r, 200);
	snprintf(s3, sizeof(s3), "%s", jstr(r.json, "secret"));
	resp_free(&r);
	ping(&S, t.key, e.id);
	ck_assert_int_eq(hooks_wait(rv, "ping", NULL, 3, 10000), 3);
	ck_assert(hook_get(rv, 2, &h));
	ck_hook(&h, s3);
	ck_two_sigs(&h, s3, s2);
	ck_assert_int_eq(sw_verify(s1, h.id, h.ts, h.q.body, h.q.body_len, h.sig), 0);
	hook_free(&h);
	rcv_stop(rv);
}
END_TEST

/* ======== 7. SSRF ======== */

static bool resolves_public(const char *host)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	bool any = false, all_public = true;

	if (getaddrinfo(host, NULL, &hints, &ai) != 0)
		return false;
	for (struct addrinfo *p = ai; p; p = p->ai_next) {
		any = true;
		if (p->ai_family == AF_INET) {
			unsigned long a = ntohl(((struct sockaddr_in *)p->ai_addr)->sin_addr.s_addr);
			if ((a >> 24) == 127 || (a >> 24) == 10 || (a >> 24) == 0 || (a >> 16) == 0xc0a8 || (a >> 16) == 0xa9fe ||
			    (a >> 20) == 0xac1 || (a >> 28) >= 14 || (a >> 22) == (100u << 2 | 1))
				all_public = false;
		} else if (p->ai_family == AF_INET6) {
			const unsigned char *b = ((struct sockaddr_in6 *)p->ai_addr)->sin6_addr.s6_addr;
			if (b[0] == 0 || b[0] == 0xff || b[0] == 0xfe || (b[0] & 0xfe) == 0xfc)
				all_public = false;
		}
	}
	freeaddrinfo(ai);
	return any && all_public;
}

START_TEST(ssrf_guard_refuses_private_targets)
{
	static const char *const strict[] = {"TOLLGATE_WEBHOOK_ALLOW_PRIVATE=0", "TOLLGATE_WEBHOOK_WORKERS=0",
					     "TOLLGATE_WORKER=0", NULL};
	static const char *const refused[] = {
		"ftp://x", "http://127.0.0.1/", "http://169.254.169.254/", "http://10.0.0.1/", "http://[::1]/",
		/* more of the same: other spellings and ranges */
		"http://localhost:8080/hook", "http://127.0.0.1:9/x", "http://127.1/", "http://2130706433/",
		"http://0x7f000001/", "http://0.0.0.0/", "http://192.168.1.10/", "http://172.16.5.4/",
		"http://172.31.255.1/", "http://224.0.0.1/", "http://[fe80::1]/", "http://[fd00::1]/",
		"http://[::ffff:127.0.0.1]/", "http://[::]/", "http://169.254.169.254/latest/meta-data/",
		"https://10.1.2.3:8443/", "gopher://127.0.0.1/", "file:///etc/passwd", "javascript:alert(1)",
		"http://nonexistent.invalid/", "//127.0.0.1/", "127.0.0.1", "http:///x", "http:///1.1.1.1/",
		/* IPv4 inside IPv6: NAT64 (10.0.0.1, 127.0.0.1), 6to4 (10.1.2.3, 192.168.0.1), compatible */
		"http://[64:ff9b::a00:1]/", "http://[64:ff9b::127.0.0.1]/", "http://[2002:a01:203::1]/",
		"http://[2002:c0a8:1::]/", "http://[::10.0.0.1]/",
		/* special-purpose IPv4: benchmarking, protocol assignments */
		"http://198.18.0.1/", "http://198.19.255.254/", "http://192.0.0.8/",
	};
	/* the rest of the special-purpose registries, each refused as url_not_allowed */
	static const char *const special[] = {
		/* IPv4 documentation (TEST-NET-1, -2, -3) and the deprecated 6to4 relay anycast */
		"http://192.0.2.1/", "http://198.51.100.255/", "http://203.0.113.7/", "http://192.88.99.1/",
		/* IPv6 documentation, discard-only, IETF protocol assignments (Teredo, the /23's last address) */
		"http://[2001:db8::1]/", "http://[3fff::1]/", "http://[3fff:fff:ffff::1]/", "http://[100::1]/",
		"http://[2001::1]/", "http://[2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff]/",
		/* SRv6 SIDs, deprecated site-local, local-use NAT64 (whatever it carries) */
		"http://[5f00::1]/", "http://[fec0::1]/", "http://[64:ff9b:1::1]/", "http://[64:ff9b:1::808:808]/",
		/* IPv4-translated (::ffff:0:a.b.c.d) of loopback, private and documentation addresses */
		"http://[::ffff:0:127.0.0.1]/", "http://[::ffff:0:a00:1]/", "http://[::ffff:0:192.0.2.1]/",
		/* the new IPv4 blocks inside IPv6 too: mapped, NAT64, 6to4 */
		"http://[::ffff:198.51.100.1]/", "http://[64:ff9b::cb00:7101]/", "http://[2002:c058:6301::1]/",
	};
	/* public addresses next to them stay allowed (literals need no DNS) */
	static const char *const allowed[] = {
		"http://8.8.8.8/hooks", "http://192.0.3.1/hooks", "http://198.51.101.1/hooks", "http://203.0.114.1/hooks",
		"http://192.88.100.1/hooks", "http://[2001:4860:4860::8888]/hooks", "http://[2606:4700::1111]/hooks",
		"http://[2001:200::1]/hooks", "http://[2001:db9::1]/hooks", "http://[3fff:1000::1]/hooks",
		/* IPv4-translated and IPv4-mapped forms of a public IPv4 address */
		"http://[::ffff:0:808:808]/hooks", "http://[::ffff:8.8.8.8]/hooks",
	};
	struct srv P = {0};
	srv_start(&P, strict);
	struct tenant t = tenant_new(&P, false);

	for (size_t i = 0; i < sizeof(refused) / sizeof(*refused); i++) {
		struct resp r = callf(&P, t.key, "POST", "/v1/webhook_endpoints", "{\"url\":\"%s\",\"events\":[\"*\"]}", refused[i]);
		ck_assert_msg(r.status == 400, "%s: expected 400, got %ld %s", refused[i], r.status, r.body);
		ck_assert_msg(json_is_string(jpath(r.json, "error.param")) && !strcmp(jstr(r.json, "error.param"), "url"),
			      "%s: param is not url: %s", refused[i], r.body);
		ck_assert_str_eq(jstr(r.json, "error.type"), "invalid_request");
		resp_free(&r);
	}
	for (size_t i = 0; i < sizeof(special) / sizeof(*special); i++) {
		struct resp r = callf(&P, t.key, "POST", "/v1/webhook_endpoints", "{\"url\":\"%s\",\"events\":[\"*\"]}", special[i]);
		ck_assert_msg(r.status == 400 && json_is_string(jpath(r.json, "error.code")) &&
				      !strcmp(jstr(r.json, "error.code"), "url_not_allowed") &&
				      !strcmp(jstr(r.json, "error.param"), "url"),
			      "%s: expected 400 url_not_allowed, got %ld %s", special[i], r.status, r.body);
		resp_free(&r);
	}
	struct ep pub = ep_create(&P, t.key, "http://1.1.1.1/hooks", "[\"workflow.terminated\"]");
	ep_create(&P, t.key, "https://[2606:4700:4700::1111]:8443/hooks", "[\"workflow.terminated\"]");
	/* and IPv6 forms of public IPv4 ones (NAT64 and 6to4 of 1.1.1.1) */
	ep_create(&P, t.key, "http://[64:ff9b::101:101]/hooks", "[\"workflow.terminated\"]");
	ep_create(&P, t.key, "http://[2002:101:101::1]/hooks", "[\"workflow.terminated\"]");
	for (size_t i = 0; i < sizeof(allowed) / sizeof(*allowed); i++) {
		struct resp r = callf(&P, t.key, "POST", "/v1/webhook_endpoints",
				      "{\"url\":\"%s\",\"events\":[\"workflow.terminated\"]}", allowed[i]);
		ck_assert_msg(r.status == 201, "%s: expected 201, got %ld %s", allowed[i], r.status, r.body);
		resp_free(&r);
	}
	/* a PATCH is checked the same way, and changes nothing when refused */
	char path[128];
	snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s", pub.id);
	struct resp r = callf(&P, t.key, "PATCH", path, "{\"url\":\"http://10.0.0.1/\"}");
	ck_assert_msg(r.status == 400 && r.json && json_is_string(jpath(r.json, "error.param")) &&
			      !strcmp(jstr(r.json, "error.param"), "url"),
		      "PATCH url http://10.0.0.1/: expected 400 naming url, got %ld %s", r.status, r.body);
	resp_free(&r);
	r = req(&P, "GET", path, t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "url"), "http://1.1.1.1/hooks");
	resp_free(&r);
	/* a host name that resolves to public addresses, when this machine has DNS */
	if (resolves_public("example.com")) {
		ep_create(&P, t.key, "https://example.com/webhooks", "[\"workflow.terminated\"]");
	} else {
		fprintf(stderr, "note: example.com does not resolve here (no DNS): the public host-name case is skipped\n");
	}
	/* nothing refused was stored */
	r = req(&P, "GET", "/v1/webhook_endpoints?limit=100", t.key, NULL, NULL);
	ck_status(r, 200);
	size_t n = json_array_size(jpath(r.json, "data")), want = 4 + sizeof(allowed) / sizeof(*allowed);
	ck_assert_msg(n == want || n == want + 1, "%zu endpoints stored: %s", n, r.body);
	resp_free(&r);
	srv_stop(&P);

	/* with the flag on (the suite's server), loopback is allowed, but still only http(s) */
	struct tenant u = tenant_new(&S, false);
	ep_create(&S, u.key, "http://127.0.0.1:9/x", "[\"*\"]");
	r = callf(&S, u.key, "POST", "/v1/webhook_endpoints", "{\"url\":\"ftp://127.0.0.1/\",\"events\":[\"*\"]}");
	ck_assert_msg(r.status == 400 && !strcmp(jstr(r.json, "error.param"), "url"), "ftp allowed: %ld %s", r.status, r.body);
	resp_free(&r);
	/* and a host must follow "//": a PATCH to one without is refused and changes nothing */
	struct ep loop = ep_create(&S, u.key, "http://127.0.0.1:9/y", "[\"*\"]");
	snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s", loop.id);
	r = callf(&S, u.key, "PATCH", path, "{\"url\":\"http:///x\"}");
	ck_err(r, 400, "invalid_request", "invalid_url", "url");
	resp_free(&r);
	r = req(&S, "GET", path, u.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "url"), "http://127.0.0.1:9/y");
	resp_free(&r);
}
END_TEST

/* An endpoint made where private targets are allowed, delivered by an instance where they are not:
 * the address is checked again when connecting. */
START_TEST(ssrf_rechecked_at_delivery)
{
	static const char *const strict[] = {"TOLLGATE_WEBHOOK_ALLOW_PRIVATE=0", "TOLLGATE_WEBHOOK_BACKOFF_BASE_MS=200",
					     "TOLLGATE_WORKER=0", NULL};
	struct tenant t = tenant_new(&S, false);
	struct receiver *rv = rcv_start();
	struct ep e = ep_create(&S, t.key, rcv_url(rv, "/inward"), "[\"*\"]");
	struct srv P = {0};

	srv_stop(&S); /* only the strict instance (and other suites' ones) deliver now */
	srv_start(&P, strict);
	/* an instance allowing private targets (another suite's) must not end the delivery before the
	 * strict one tried: the receiver refuses for now */
	rcv_set_default(rv, 500);
	char path[128];
	snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s/test", e.id);
	struct resp r = req(&P, "POST", path, t.key, NULL, NULL);
	ck_status(r, 201);
	char evt[64];
	snprintf(evt, sizeof(evt), "%s", jstr(r.json, "event_id"));
	resp_free(&r);
	/* an attempt of the strict instance: refused before connecting (no status code) */
	bool refused = false;
	for (int i = 0; i < 200 && !refused; i++) {
		json_t *d = delivery_of(&P, t.key, e.id, evt), *a;
		size_t k;
		json_array_foreach(d ? jpath(d, "attempt_log") : NULL, k, a)
			if (json_is_null(json_object_get(a, "status_code")) && json_is_string(json_object_get(a, "error")))
				refused = true;
		json_decref(d);
		if (!refused) {
			if (i % 20 == 19)
				nudge(&P, t.key, e.id);
			nap_ms(100);
		}
	}
	ck_assert_msg(refused, "no refused attempt by the strict instance in 20 s");
	ck_assert_msg(srv_metric(&P, "tollgate_webhook_deliveries_total{outcome=\"succeeded\"} ") == 0,
		      "the strict instance delivered to a loopback receiver");
	if (rcv_count(rv))
		fprintf(stderr, "note: ssrf at delivery: %d requests reached the receiver from other instances\n", rcv_count(rv));
	srv_stop(&P);
	srv_start(&S, FAST_ENV);
	/* allowed again: it arrives */
	rcv_set_default(rv, 200);
	long long until = mono_ms() + 20000;
	while (hooks_ok(rv, "ping", NULL) < 1 && mono_ms() < until) {
		rcv_wait(rv, rcv_count(rv) + 1, 1000);
		nudge(&S, t.key, e.id);
	}
	ck_assert_msg(hooks_ok(rv, "ping", NULL) == 1, "the delivery never arrived once allowed");
	rcv_stop(rv);
}
END_TEST

/* A proxy named by the environment is not used: it would see the endpoint's URL and connect there
 * itself, past the address check made at connect time (which would check the proxy's address). */
START_TEST(proxy_environment_ignored)
{
	struct tenant t = tenant_new(&S, false);
	struct receiver *rv = rcv_start(), *proxy = rcv_start();
	struct ep e = ep_create(&S, t.key, rcv_url(rv, "/hook"), "[\"*\"]");
	char http_proxy[128], all_proxy[128], path[128];
	struct srv P = {0};

	snprintf(http_proxy, sizeof(http_proxy), "http_proxy=%s", rcv_url(proxy, ""));
	snprintf(all_proxy, sizeof(all_proxy), "ALL_PROXY=%s", rcv_url(proxy, ""));
	const char *const env[] = {"TOLLGATE_WEBHOOK_BACKOFF_BASE_MS=200", http_proxy, all_proxy, NULL};
	srv_start(&P, env);
	snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s/test", e.id);
	/* other instances deliver too: ping until this one has delivered some */
	long long until = mono_ms() + 20000;
	while (srv_metric(&P, "tollgate_webhook_deliveries_total{outcome=\"succeeded\"} ") < 1 && mono_ms() < until) {
		struct resp r = req(&P, "POST", path, t.key, NULL, NULL);
		ck_status(r, 201);
		resp_free(&r);
		nap_ms(200);
	}
	ck_assert_msg(srv_metric(&P, "tollgate_webhook_deliveries_total{outcome=\"succeeded\"} ") >= 1,
		      "the instance with a proxy in its environment delivered nothing in 20 s");
	ck_assert_msg(rcv_count(proxy) == 0, "%d deliveries went through the proxy", rcv_count(proxy));
	ck_assert_int_ge(rcv_count(rv), 1);
	srv_stop(&P);
	rcv_stop(proxy);
	rcv_stop(rv);
}
END_TEST

/* ======== 8. endpoints API ======== */

START_TEST(endpoint_crud)
{
	struct tenant t = tenant_new(&S, false);
	char path[128];

	struct resp r = req(&S, "POST", "/v1/webhook_endpoints", t.key,
			    "{\"url\":\"http://127.0.0.1:9/a\",\"events\":[\"limit.threshold\",\"balance.low\"],\"description\":\"ops pager\"}",
			    NULL);
	ck_status(r, 201);
	char id[64], secret[128];
	snprintf(id, sizeof(id), "%s", jstr(r.json, "id"));
	snprintf(secret, sizeof(secret), "%s", jstr(r.json, "secret"));
	ck_assert_msg(strncmp(id, "whe_", 4) == 0, "id %s", id);
	ck_assert_str_eq(jstr(r.json, "url"), "http://127.0.0.1:9/a");
	ck_assert_str_eq(jstr(r.json, "description"), "ops pager");
	ck_assert_int_eq(json_array_size(jpath(r.json, "events")), 2);
	ck_assert_str_eq(jstr(r.json, "events.0"), "limit.threshold");
	ck_assert_str_eq(jstr(r.json, "events.1"), "balance.low");
	ck_assert(json_is_false(jpath(r.json, "disabled")));
	time_parse(jstr(r.json, "created_at"));
	time_parse(jstr(r.json, "updated_at"));
	/* whsec_ + base64 of 32 random bytes (44 characters; our signer accepts it as a key) */
	ck_assert_msg(strncmp(secret, "whsec_", 6) == 0 && strlen(secret + 6) == 44 && secret[49] == '=', "secret %s", secret);
	char msig[128];
	ck_assert_int_eq(sw_sign(secret, "evt_x", "1", "{}", 2, msig, sizeof(msig)), 0);
	resp_free(&r);

	/* GET and list: no secret */
	snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s", id);
	r = req(&S, "GET", path, t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "id"), id);
	ck_assert_str_eq(jstr(r.json, "url"), "http://127.0.0.1:9/a");
	ck_assert_ptr_null(jpath(r.json, "secret"));
	ck_assert_msg(!strstr(r.body, secret + 6), "the secret in GET: %s", r.body);
	resp_free(&r);
	struct ep second = ep_create(&S, t.key, "http://127.0.0.1:9/b", "[\"*\"]");
	ck_assert_str_ne(second.secret, secret);
	r = req(&S, "GET", "/v1/webhook_endpoints", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 2);
	ck_assert_str_eq(jstr(r.json, "data.0.id"), id);
	ck_assert_str_eq(jstr(r.json, "data.1.id"), second.id);
	ck_assert(json_is_false(jpath(r.json, "has_more")));
	ck_assert_ptr_null(jpath(r.json, "data.0.secret"));
	ck_assert_msg(!strstr(r.body, "whsec_"), "a secret in the list: %s", r.body);
	resp_free(&r);
	r = req(&S, "GET", "/v1/webhook_endpoints?limit=1", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 1);
	ck_assert(json_is_true(jpath(r.json, "has_more")));
	resp_free(&r);
	char lpath[160];
	snprintf(lpath, sizeof(lpath), "/v1/webhook_endpoints?starting_after=%s", id);
	r = req(&S, "GET", lpath, t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 1);
	ck_assert_str_eq(jstr(r.json, "data.0.id"), second.id);
	resp_free(&r);

	/* PATCH */
	r = callf(&S, t.key, "PATCH", path, "{\"description\":\"changed\",\"events\":[\"*\"],\"url\":\"http://127.0.0.1:9/c\"}");
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "description"), "changed");
	ck_assert_str_eq(jstr(r.json, "url"), "http://127.0.0.1:9/c");
	ck_assert_int_eq(json_array_size(jpath(r.json, "events")), 1);
	ck_assert_str_eq(jstr(r.json, "events.0"), "*");
	ck_assert(time_parse(jstr(r.json, "updated_at")) >= time_parse(jstr(r.json, "created_at")));
	ck_assert_ptr_null(jpath(r.json, "secret"));
	resp_free(&r);
	r = callf(&S, t.key, "PATCH", path, "{\"disabled\":true}");
	ck_status(r, 200);
	ck_assert(json_is_true(jpath(r.json, "disabled")));
	ck_assert_str_eq(jstr(r.json, "description"), "changed");
	resp_free(&r);
	r = callf(&S, t.key, "PATCH", path, "{\"description\":null}");
	ck_status(r, 200);
	ck_assert(jpath(r.json, "description") == NULL || json_is_null(jpath(r.json, "description")));
	resp_free(&r);
	/* bad PATCHes change nothing */
	static const char *const bad_patch[][2] = {
		{"{\"url\":\"ftp://x\"}", "url"},
		{"{\"events\":[]}", "events"},
		{"{\"events\":[\"limit.thresholds\"]}", "events"},
		{"{\"events\":[\"*\",\"balance.low\"]}", "events"},
		{"{\"events\":[\"limit.reset\",\"limit.reset\"]}", "events"},
		{"{\"disabled\":\"yes\"}", "disabled"},
		{"{\"secret\":\"whsec_AAAA\"}", "secret"},
		{"{\"id\":\"whe_other\"}", "id"},
		{"{\"url\":null}", "url"},
	};
	for (size_t i = 0; i < sizeof(bad_patch) / sizeof(*bad_patch); i++) {
		r = req(&S, "PATCH", path, t.key, bad_patch[i][0], NULL);
		ck_assert_msg(r.status == 400 && r.json && json_is_string(jpath(r.json, "error.param")) &&
				      !strcmp(jstr(r.json, "error.param"), bad_patch[i][1]),
			      "PATCH %s: expected 400 naming %s, got %ld %s", bad_patch[i][0], bad_patch[i][1], r.status, r.body);
		resp_free(&r);
	}
	r = req(&S, "GET", path, t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "url"), "http://127.0.0.1:9/c");
	ck_assert_str_eq(jstr(r.json, "events.0"), "*");
	ck_assert(json_is_true(jpath(r.json, "disabled")));
	resp_free(&r);

	/* DELETE */
	r = req(&S, "DELETE", path, t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "id"), id);
	ck_assert(json_is_true(jpath(r.json, "deleted")));
	resp_free(&r);
	r = req(&S, "GET", path, t.key, NULL, NULL);
	ck_err(r, 404, "invalid_request", "webhook_endpoint_not_found", NULL);
	resp_free(&r);
	expect_status(&S, "DELETE", path, t.key, NULL, 404);
	expect_status(&S, "GET", "/v1/webhook_endpoints/whe_doesnotexist", t.key, NULL, 404);
	r = req(&S, "GET", "/v1/webhook_endpoints", t.key, NULL, NULL);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 1);
	resp_free(&r);
	/* a read-only key reads but does not write */
	r = req(&S, "POST", "/v1/api_keys", t.key, "{\"name\":\"ro\",\"scopes\":[\"read\"]}", NULL);
	ck_status(r, 201);
	char ro[256];
	snprintf(ro, sizeof(ro), "%s", jstr(r.json, "secret"));
	resp_free(&r);
	expect_status(&S, "GET", "/v1/webhook_endpoints", ro, NULL, 200);
	expect_status(&S, "POST", "/v1/webhook_endpoints", ro, "{\"url\":\"http://127.0.0.1:9/\",\"events\":[\"*\"]}", 403);
	expect_status(&S, "GET", "/v1/webhook_endpoints", NULL, NULL, 401);
}
END_TEST

/* Deleting an endpoint takes its deliveries and their attempts with it (no foreign key cascades, see
 * migration 0010); a delivery made for an endpoint deleted meanwhile (an event batch that committed
 * after the delete) is failed at its first claim, with one attempt logged. */
START_TEST(deleting_an_endpoint_takes_its_deliveries)
{
	struct tenant t = tenant_new(&S, false);
	struct ep e = ep_create(&S, t.key, "http://127.0.0.1:9/refused", "[\"*\"]");
	char path[160];
	long long n = 0;

	snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s/test", e.id);
	expect_status(&S, "POST", path, t.key, NULL, 201);
	expect_status(&S, "POST", path, t.key, NULL, 201);
	for (int i = 0; i < 100 && n < 1; i++, nap_ms(100))
		n = psql_ll("SELECT count(*) FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id "
			      "WHERE d.tenant_id = '%s' AND d.endpoint_id = '%s'", t.id, e.id);
	ck_assert_msg(n >= 1, "no attempt logged for the refused endpoint");
	snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s", e.id);
	expect_status(&S, "DELETE", path, t.key, NULL, 200);
	ck_assert_int_eq(psql_ll("SELECT count(*) FROM webhook_deliveries WHERE tenant_id = '%s'", t.id), 0);
	ck_assert_int_eq(psql_ll("SELECT count(*) FROM webhook_attempts WHERE delivery_id IN "
				   "(SELECT d.id FROM webhook_deliveries d WHERE d.tenant_id = '%s')", t.id), 0);

	/* the race, made by hand: a delivery whose endpoint no longer exists */
	ck_assert_int_eq(psql_ll("WITH ev AS (INSERT INTO webhook_events (tenant_id, id, type, data) VALUES ('%s', "
				   "'evt_orphan', 'balance.low', '{}') RETURNING id), d AS (INSERT INTO webhook_deliveries "
				   "(id, tenant_id, endpoint_id, event_id) SELECT 'whd_orphan_%s', '%s', '%s', id FROM ev "
				   "RETURNING id) SELECT count(*) FROM d", t.id, t.id, t.id, e.id), 1);
	n = 0;
	for (int i = 0; i < 100 && n < 1; i++, nap_ms(100))
		n = psql_ll("SELECT count(*) FROM webhook_deliveries WHERE id = 'whd_orphan_%s' AND status = 'failed' "
			      "AND attempts = 1 AND last_error = 'its endpoint was deleted'", t.id);
	ck_assert_msg(n == 1, "the orphan delivery was not failed at its first claim");
	ck_assert_int_eq(psql_ll("SELECT count(*) FROM webhook_attempts WHERE delivery_id = 'whd_orphan_%s' "
				   "AND error = 'its endpoint was deleted'", t.id), 1);
}
END_TEST

START_TEST(endpoint_bad_input)
{
	struct tenant t = tenant_new(&S, false);
	char long_url[2200];
	snprintf(long_url, sizeof(long_url), "http://127.0.0.1:9/");
	memset(long_url + strlen(long_url), 'a', 2100);
	long_url[sizeof(long_url) - 1] = '\0';
	char long_desc[600];
	memset(long_desc, 'd', 501);
	long_desc[501] = '\0';

	struct {
		const char *body, *code, *param;
	} bad[] = {
		{"{\"url\":\"http://127.0.0.1:9/\",\"events\":[\"limit.nope\"]}", "invalid_parameter", "events"},
		{"{\"url\":\"http://127.0.0.1:9/\",\"events\":[\"limit.threshold\",\"nope\"]}", "invalid_parameter", "events"},
		{"{\"url\":\"http://127.0.0.1:9/\"}", "missing_parameter", "events"},
		{"{\"url\":\"http://127.0.0.1:9/\",\"events\":[]}", "invalid_parameter", "events"},
		{"{\"url\":\"http://127.0.0.1:9/\",\"events\":\"limit.threshold\"}", "invalid_parameter", "events"},
		{"{\"url\":\"http://127.0.0.1:9/\",\"events\":[1]}", "invalid_parameter", "events"},
		{"{\"url\":\"http://127.0.0.1:9/\",\"events\":null}", "invalid_parameter", "events"},
		{"{\"url\":\"http://127.0.0.1:9/\",\"events\":[\"ping\"]}", "invalid_parameter", "events"},
		/* "*" is every type, alone; a type is listed once; every item is a type's name */
		{"{\"url\":\"http://127.0.0.1:9/\",\"events\":[\"*\",\"limit.threshold\"]}", "invalid_parameter", "events"},
		{"{\"url\":\"http://127.0.0.1:9/\",\"events\":[\"limit.threshold\",\"*\"]}", "invalid_parameter", "events"},
		{"{\"url\":\"http://127.0.0.1:9/\",\"events\":[\"*\",\"*\"]}", "invalid_parameter", "events"},
		{"{\"url\":\"http://127.0.0.1:9/\",\"events\":[\"balance.low\",\"limit.reset\",\"balance.low\"]}", "invalid_parameter", "events"},
		{"{\"url\":\"http://127.0.0.1:9/\",\"events\":[\"limit.threshold\",null]}", "invalid_parameter", "events"},
		{"{\"url\":\"http://127.0.0.1:9/\",\"events\":[[\"limit.threshold\"]]}", "invalid_parameter", "events"},
		{"{\"events\":[\"*\"]}", "missing_parameter", "url"},
		{"{\"url\":42,\"events\":[\"*\"]}", "invalid_parameter", "url"},
		{"{\"url\":\"\",\"events\":[\"*\"]}", NULL, "url"},
		{"{\"url\":\"not a url\",\"events\":[\"*\"]}", NULL, "url"},
		{"{\"url\":\"ftp://127.0.0.1/\",\"events\":[\"*\"]}", NULL, "url"},
		/* no host after "//" (libcurl reads "x" as the host): refused although private targets are allowed here */
		{"{\"url\":\"http:///x\",\"events\":[\"*\"]}", "invalid_url", "url"},
		{"{\"url\":\"https:///127.0.0.1:9/\",\"events\":[\"*\"]}", "invalid_url", "url"},
		{"{\"url\":\"http:/127.0.0.1:9/\",\"events\":[\"*\"]}", "invalid_url", "url"},
		{"{\"url\":\"http://\",\"events\":[\"*\"]}", "invalid_url", "url"},
		{"{\"url\":\"http://127.0.0.1:9/\",\"events\":[\"*\"],\"secret\":\"whsec_AAAA\"}", "unknown_parameter", "secret"},
		{"{\"url\":\"http://127.0.0.1:9/\",\"events\":[\"*\"],\"enabled\":true}", "unknown_parameter", "enabled"},
		{"{\"url\":\"http://127.0.0.1:9/\",\"events\":[\"*\"],\"description\":5}", "invalid_parameter", "description"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		struct resp r = req(&S, "POST", "/v1/webhook_endpoints", t.key, bad[i].body, NULL);
		ck_assert_msg(r.status == 400 && r.json && json_is_string(jpath(r.json, "error.param")) &&
				      !strcmp(jstr(r.json, "error.param"), bad[i].param) &&
				      !strcmp(jstr(r.json, "error.type"), "invalid_request") &&
				      (!bad[i].code || !strcmp(jstr(r.json, "error.code"), bad[i].code)),
			      "%s: expected 400 %s naming %s, got %ld %s", bad[i].body, bad[i].code ? bad[i].code : "", bad[i].param,
			      r.status, r.body);
		resp_free(&r);
	}
	/* an item that is not a string says so (it was "'?' is not an event type") */
	struct resp r = req(&S, "POST", "/v1/webhook_endpoints", t.key, "{\"url\":\"http://127.0.0.1:9/\",\"events\":[5]}", NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "events");
	ck_assert_str_eq(jstr(r.json, "error.message"), "'events' must be an array of event type strings");
	resp_free(&r);
	r = callf(&S, t.key, "POST", "/v1/webhook_endpoints", "{\"url\":\"%s\",\"events\":[\"*\"]}", long_url);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "url");
	resp_free(&r);
	r = callf(&S, t.key, "POST", "/v1/webhook_endpoints",
		  "{\"url\":\"http://127.0.0.1:9/\",\"events\":[\"*\"],\"description\":\"%s\"}", long_desc);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "description");
	resp_free(&r);
	r = req(&S, "POST", "/v1/webhook_endpoints", t.key, "{\"url\":", NULL);
	ck_err(r, 400, "invalid_request", "invalid_json", NULL);
	resp_free(&r);
	r = req(&S, "POST", "/v1/webhook_endpoints", t.key, "[]", NULL);
	ck_assert_msg(r.status == 400, "a JSON array body: %ld %s", r.status, r.body);
	resp_free(&r);
	/* none of it created anything */
	r = req(&S, "GET", "/v1/webhook_endpoints", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_msg(json_array_size(jpath(r.json, "data")) == 0, "bad requests created endpoints: %s", r.body);
	resp_free(&r);
	/* every documented event type is accepted */
	ep_create(&S, t.key, "http://127.0.0.1:9/",
		  "[\"limit.threshold\",\"limit.exceeded\",\"limit.reset\",\"balance.low\",\"balance.depleted\","
		  "\"balance.replenished\",\"usage.summary\",\"workflow.terminated\",\"rate_limit.throttled\"]");
	/* a URL of exactly 2048 bytes is fine */
	long_url[2048] = '\0';
	r = callf(&S, t.key, "POST", "/v1/webhook_endpoints", "{\"url\":\"%s\",\"events\":[\"*\"]}", long_url);
	ck_status(r, 201);
	resp_free(&r);
	/* deliveries and retry of unknown ids */
	expect_status(&S, "GET", "/v1/webhook_endpoints/whe_nope/deliveries", t.key, NULL, 404);
	expect_status(&S, "POST", "/v1/webhook_deliveries/whd_nope/retry", t.key, NULL, 404);
	expect_status(&S, "POST", "/v1/webhook_endpoints/whe_nope/test", t.key, NULL, 404);
	expect_status(&S, "POST", "/v1/webhook_endpoints/whe_nope/rotate_secret", t.key, NULL, 404);
}
END_TEST

START_TEST(endpoint_tenant_isolation)
{
	struct tenant a = tenant_new(&S, false), b = tenant_new(&S, false);
	struct receiver *rv = rcv_start();
	char path[160];

	struct ep e = ep_create(&S, a.key, rcv_url(rv, "/iso"), "[\"*\"]");
	ping(&S, a.key, e.id);
	ck_assert_int_eq(hooks_wait(rv, "ping", NULL, 1, 10000), 1);
	json_t *ds = deliveries(&S, a.key, e.id, NULL);
	ck_assert_int_eq(json_array_size(ds), 1);
	char whd[64];
	snprintf(whd, sizeof(whd), "%s", jstr(ds, "0.id"));
	json_decref(ds);

	static const char *const ops[][2] = {
		{"GET", ""}, {"PATCH", ""}, {"DELETE", ""}, {"POST", "/rotate_secret"}, {"POST", "/test"}, {"GET", "/deliveries"},
	};
	for (size_t i = 0; i < sizeof(ops) / sizeof(*ops); i++) {
		snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s%s", e.id, ops[i][1]);
		struct resp r = req(&S, ops[i][0], path, b.key, !strcmp(ops[i][0], "PATCH") ? "{\"disabled\":true}" : NULL, NULL);
		ck_assert_msg(r.status == 404, "tenant B %s %s: %ld %s", ops[i][0], path, r.status, r.body);
		resp_free(&r);
	}
	snprintf(path, sizeof(path), "/v1/webhook_deliveries/%s/retry", whd);
	struct resp r = req(&S, "POST", path, b.key, NULL, NULL);
	ck_assert_msg(r.status == 404, "tenant B retry: %ld %s", r.status, r.body);
	resp_free(&r);
	r = req(&S, "GET", "/v1/webhook_endpoints", b.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 0);
	resp_free(&r);
	/* B's events never reach A's endpoint */
	expectf(&S, b.key, "POST", "/v1/customers", 201, "{\"id\":\"bw\"}");
	expectf(&S, b.key, "POST", "/v1/customers/bw/balance/credit", 200, "{\"amount\":1}");
	expectf(&S, b.key, "POST", "/v1/customers/bw/balance/debit", 200, "{\"amount\":1}");
	/* A's endpoint is untouched and still works */
	snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s", e.id);
	r = req(&S, "GET", path, a.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert(json_is_false(jpath(r.json, "disabled")));
	resp_free(&r);
	ping(&S, a.key, e.id);
	ck_assert_int_eq(hooks_wait(rv, "ping", NULL, 2, 10000), 2);
	nap_ms(1000);
	ck_assert_int_eq(rcv_count(rv), 2);
	for (int i = 0; i < 2; i++) {
		struct hook h;
		ck_assert(hook_get(rv, i, &h));
		ck_hook(&h, e.secret);
		hook_free(&h);
	}
	rcv_stop(rv);
}
END_TEST

START_TEST(ping_and_manual_retry)
{
	struct tenant t = tenant_new(&S, false);
	struct receiver *rv = rcv_start();
	struct hook h;
	char path[160];

	/* an endpoint subscribed to one type still gets its ping */
	struct ep e = ep_create(&S, t.key, rcv_url(rv, "/ping"), "[\"balance.low\"]");
	snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s/test", e.id);
	struct resp r = req(&S, "POST", path, t.key, NULL, NULL);
	ck_status(r, 201);
	char whd[64], evt[64];
	snprintf(whd, sizeof(whd), "%s", jstr(r.json, "id"));
	snprintf(evt, sizeof(evt), "%s", jstr(r.json, "event_id"));
	ck_assert_msg(strncmp(whd, "whd_", 4) == 0, "delivery id %s", whd);
	ck_assert_msg(strncmp(evt, "evt_", 4) == 0, "event id %s", evt);
	ck_assert_str_eq(jstr(r.json, "endpoint_id"), e.id);
	ck_assert_str_eq(jstr(r.json, "event_type"), "ping");
	ck_assert_msg(json_is_string(jpath(r.json, "status")), "no status: %s", r.body);
	ck_assert(json_is_array(jpath(r.json, "attempt_log")));
	resp_free(&r);
	ck_assert_int_eq(hooks_wait(rv, "ping", NULL, 1, 10000), 1);
	hook_find(rv, "ping", NULL, 0, &h);
	ck_hook(&h, e.secret);
	ck_assert_str_eq(h.id, evt);
	ck_assert_str_eq(jstr(h.p, "data.endpoint_id"), e.id);
	ck_assert_str_eq(h.attempt, "1");
	hook_free(&h);
	json_t *d = NULL;
	for (int i = 0; i < 50; i++) {
		d = delivery_of(&S, t.key, e.id, evt);
		if (d && !strcmp(jstr(d, "status"), "succeeded"))
			break;
		json_decref(d);
		d = NULL;
		nap_ms(100);
	}
	ck_assert_msg(d != NULL, "the ping delivery is not succeeded");
	ck_assert_int_eq(jint(d, "attempts"), 1);
	json_decref(d);

	/* a manual retry sends the same event again, as attempt 2 */
	snprintf(path, sizeof(path), "/v1/webhook_deliveries/%s/retry", whd);
	r = req(&S, "POST", path, t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "id"), whd);
	ck_assert_str_eq(jstr(r.json, "status"), "pending");
	resp_free(&r);
	ck_assert_msg(rcv_wait(rv, 2, 10000) >= 2, "the retried delivery did not arrive");
	ck_assert(hook_get(rv, 1, &h));
	ck_hook(&h, e.secret);
	ck_assert_str_eq(h.id, evt);
	ck_assert_str_eq(h.type, "ping");
	ck_assert_str_eq(h.attempt, "2");
	hook_free(&h);
	for (int i = 0; i < 50; i++) {
		d = delivery_of(&S, t.key, e.id, evt);
		if (d && !strcmp(jstr(d, "status"), "succeeded") && jint(d, "attempts") == 2)
			break;
		json_decref(d);
		d = NULL;
		nap_ms(100);
	}
	ck_assert_msg(d != NULL, "the retried delivery is not succeeded with 2 attempts");
	ck_assert_int_eq(json_array_size(jpath(d, "attempt_log")), 2);
	json_decref(d);
	/* a delivery that gave up (failed) can be retried too */
	char q[256];
	snprintf(q, sizeof(q), "UPDATE webhook_deliveries SET status = 'failed' WHERE id = '%s'", whd);
	char *out = psql(q);
	ck_assert_ptr_nonnull(out);
	free(out);
	json_t *failed = deliveries(&S, t.key, e.id, "failed");
	ck_assert_int_eq(json_array_size(failed), 1);
	json_decref(failed);
	expectf(&S, t.key, "POST", path, 200, NULL);
	ck_assert_msg(rcv_wait(rv, 3, 10000) >= 3, "the retried failed delivery did not arrive");
	ck_assert(hook_get(rv, 2, &h));
	ck_assert_str_eq(h.id, evt);
	ck_assert_str_eq(h.attempt, "3");
	hook_free(&h);
	/* only 1 ping event in total for this endpoint: nothing fanned out to other endpoints */
	nap_ms(500);
	ck_assert_int_eq(rcv_count(rv), 3);
	rcv_stop(rv);
}
END_TEST

/* A burst of pings finishes together and is recorded together (one statement for every transfer
 * that finished in one wake-up). The receiver answers a body that is not valid UTF-8 and is cut in
 * the middle of a character at the 256-byte snippet: the attempt log keeps it with U+FFFD in place
 * of the bad bytes, and no delivery is left unrecorded (which would send it again after its lease). */
START_TEST(burst_recorded_with_odd_response_bodies)
{
	enum { N = 40 };
	struct tenant t = tenant_new(&S, false);
	struct receiver *rv = rcv_start();
	char body[512] = "", want[512] = "";
	char path[160];

	strcat(body, "\xff\xfe");
	for (int i = 0; i < 100; i++)
		strcat(body, "\xe2\x82\xac"); /* € */
	/* the first 256 bytes: 2 bad bytes, 84 €, and the first 2 bytes of the 85th */
	strcat(want, "\xef\xbf\xbd\xef\xbf\xbd");
	for (int i = 0; i < 84; i++)
		strcat(want, "\xe2\x82\xac");
	strcat(want, "\xef\xbf\xbd\xef\xbf\xbd");
	rcv_set_body(rv, body);
	rcv_set_delay(rv, 200); /* the answers arrive close together */
	struct ep e = ep_create(&S, t.key, rcv_url(rv, "/burst"), "[\"*\"]");
	snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s/test", e.id);
	for (int i = 0; i < N; i++)
		expectf(&S, t.key, "POST", path, 201, NULL);
	ck_assert_int_eq(rcv_wait(rv, N, 20000), N);
	json_t *ok = NULL;
	for (int i = 0; i < 100; i++) {
		ok = deliveries(&S, t.key, e.id, "succeeded");
		if (json_array_size(ok) == N)
			break;
		json_decref(ok);
		ok = NULL;
		nap_ms(100);
	}
	ck_assert_msg(ok != NULL, "not every delivery of the burst is recorded as succeeded");
	json_t *d;
	size_t i;
	json_array_foreach(ok, i, d) {
		ck_assert_int_eq(jint(d, "attempts"), 1);
		ck_assert_int_eq(jint(d, "last_status"), 200);
		json_t *log = jpath(d, "attempt_log");
		ck_assert_int_eq(json_array_size(log), 1);
		ck_assert_int_eq(jint(log, "0.status_code"), 200);
		ck_assert_str_eq(jstr(log, "0.response"), want);
	}
	json_decref(ok);
	nap_ms(500);
	ck_assert_int_eq(rcv_count(rv), N); /* nothing was sent twice */
	rcv_stop(rv);
}
END_TEST

START_TEST(disabled_endpoint_gets_nothing)
{
	struct tenant t = tenant_new(&S, false);
	struct receiver *off = rcv_start(), *on = rcv_start();
	char path[160];

	struct ep eoff = ep_create(&S, t.key, rcv_url(off, "/off"), "[\"*\"]");
	struct ep eon = ep_create(&S, t.key, rcv_url(on, "/on"), "[\"*\"]");
	snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s", eoff.id);
	expectf(&S, t.key, "PATCH", path, 200, "{\"disabled\":true}");
	expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"d\"}");
	expectf(&S, t.key, "POST", "/v1/customers/d/balance/credit", 200, "{\"amount\":2}");
	expectf(&S, t.key, "POST", "/v1/customers/d/balance/debit", 200, "{\"amount\":2}");
	ck_assert_int_eq(hooks_wait(on, "balance.depleted", "d", 1, 10000), 1);
	nap_ms(1000);
	ck_assert_msg(rcv_count(off) == 0, "the disabled endpoint got %d requests", rcv_count(off));
	json_t *ds = deliveries(&S, t.key, eoff.id, NULL);
	ck_assert_msg(json_array_size(ds) == 0, "the disabled endpoint has %zu deliveries", json_array_size(ds));
	json_decref(ds);
	/* enabled again: later events reach it (earlier ones stay undelivered) */
	expectf(&S, t.key, "PATCH", path, 200, "{\"disabled\":false}");
	expectf(&S, t.key, "POST", "/v1/customers/d/balance/credit", 200, "{\"amount\":3}");
	ck_assert_int_eq(hooks_wait(off, "balance.replenished", "d", 1, 10000), 1);
	ck_assert_int_eq(hooks_wait(on, "balance.replenished", "d", 1, 10000), 1);
	nap_ms(500);
	ck_assert_int_eq(hooks_count(off, "balance.depleted", NULL, false), 0);
	struct hook h;
	hook_find(off, "balance.replenished", "d", 0, &h);
	ck_hook(&h, eoff.secret);
	ck_assert_int_eq(sw_verify(eon.secret, h.id, h.ts, h.q.body, h.q.body_len, h.sig), 0); /* per-endpoint secrets */
	hook_free(&h);
	/* a deleted endpoint gets nothing either */
	expectf(&S, t.key, "DELETE", path, 200, NULL);
	int before = rcv_count(off);
	expectf(&S, t.key, "POST", "/v1/customers/d/balance/debit", 200, "{\"amount\":3}");
	ck_assert_int_eq(hooks_wait(on, "balance.depleted", "d", 2, 10000), 2);
	nap_ms(700);
	ck_assert_int_eq(rcv_count(off), before);
	rcv_stop(off);
	rcv_stop(on);
}
END_TEST

/* A redirect is an answer like any other non-2xx: not followed, retried later. */
START_TEST(redirects_not_followed)
{
	struct tenant t = tenant_new(&S, false);
	struct receiver *rv = rcv_start();

	rcv_fail_next(rv, 1, 302);
	struct ep e = ep_create(&S, t.key, rcv_url(rv, "/r302"), "[\"*\"]");
	ping(&S, t.key, e.id);
	ck_assert_msg(wait_requests_nudging(rv, &S, t.key, e.id, 2, 15000) >= 2, "no retry after a 302");
	nap_ms(300);
	for (int i = 0; i < rcv_count(rv); i++) {
		struct hook h;
		ck_assert(hook_get(rv, i, &h));
		ck_assert_msg(!strcmp(h.q.path, "/r302") && !strcmp(h.q.method, "POST"), "request %d: %s %s (a redirect followed?)",
			      i, h.q.method, h.q.path);
		hook_free(&h);
	}
	json_t *ds = deliveries(&S, t.key, e.id, NULL);
	ck_assert_int_eq(jint(ds, "0.attempt_log.0.status_code"), 302);
	json_decref(ds);
	rcv_stop(rv);
}
END_TEST

/* Disabling an endpoint stops its pending retries too. */
START_TEST(disabling_stops_pending_retries)
{
	struct tenant t = tenant_new(&S, false);
	struct receiver *rv = rcv_start();
	char path[128];

	rcv_set_default(rv, 500);
	struct ep e = ep_create(&S, t.key, rcv_url(rv, "/dis"), "[\"*\"]");
	ping(&S, t.key, e.id);
	ck_assert_msg(rcv_wait(rv, 2, 10000) >= 2, "no retries of a failing delivery");
	snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s", e.id);
	expectf(&S, t.key, "PATCH", path, 200, "{\"disabled\":true}");
	nap_ms(300); /* an attempt already on the wire may still land */
	int at_disable = rcv_count(rv);
	nap_ms(2000); /* base 200 ms: attempts 3 and 4 would have come by now */
	ck_assert_msg(rcv_count(rv) == at_disable,
		      "a disabled endpoint still got %d more attempts of a pending delivery in 2 s", rcv_count(rv) - at_disable);
	rcv_stop(rv);
}
END_TEST

START_TEST(event_type_filters)
{
	struct tenant t = tokens_tenant(&S, false);
	struct receiver *low = rcv_start(), *all = rcv_start(), *thr = rcv_start();

	struct ep elow = ep_create(&S, t.key, rcv_url(low, "/low"), "[\"balance.low\"]");
	ep_create(&S, t.key, rcv_url(all, "/all"), "[\"*\"]");
	ep_create(&S, t.key, rcv_url(thr, "/thr"), "[\"limit.threshold\",\"limit.exceeded\"]");
	expectf(&S, t.key, "POST", "/v1/limits", 201, SMALL_LIMIT);
	tokens_event(&S, t.key, "f", 6); /* limit.threshold */
	expectf(&S, t.key, "POST", "/v1/customers/f/balance/credit", 200, "{\"amount\":10}");
	expectf(&S, t.key, "PATCH", "/v1/customers/f/balance", 200, "{\"low_balance_threshold\":5}");
	expectf(&S, t.key, "POST", "/v1/customers/f/balance/debit", 200, "{\"amount\":6}"); /* balance.low */
	ck_assert_int_eq(hooks_wait(all, "limit.threshold", "f", 1, 10000), 1);
	ck_assert_int_eq(hooks_wait(all, "balance.low", "f", 1, 10000), 1);
	ck_assert_int_eq(hooks_wait(low, "balance.low", "f", 1, 10000), 1);
	ck_assert_int_eq(hooks_wait(thr, "limit.threshold", "f", 1, 10000), 1);
	nap_ms(1000);
	ck_assert_msg(rcv_count(low) == 1, "the balance.low endpoint got %d requests", rcv_count(low));
	ck_assert_int_eq(hooks_count(low, "limit.threshold", NULL, false), 0);
	ck_assert_int_eq(hooks_count(thr, "balance.low", NULL, false), 0);
	ck_assert_int_eq(rcv_count(thr), 1);
	ck_assert_int_eq(rcv_count(all), 2);
	struct hook h;
	hook_find(low, "balance.low", "f", 0, &h);
	ck_hook(&h, elow.secret);
	hook_free(&h);
	json_t *ds = deliveries(&S, t.key, elow.id, NULL);
	ck_assert_int_eq(json_array_size(ds), 1);
	ck_assert_str_eq(jstr(ds, "0.event_type"), "balance.low");
	json_decref(ds);
	/* changing the filter applies to later events */
	char path[128];
	snprintf(path, sizeof(path), "/v1/webhook_endpoints/%s", elow.id);
	expectf(&S, t.key, "PATCH", path, 200, "{\"events\":[\"limit.threshold\"]}");
	tokens_event(&S, t.key, "g", 6);
	ck_assert_int_eq(hooks_wait(low, "limit.threshold", "g", 1, 10000), 1);
	rcv_stop(low);
	rcv_stop(all);
	rcv_stop(thr);
}
END_TEST

/* ======== 9. rate_limit.throttled ======== */

struct hammer {
	const char *key, *cust;
	int ok, denied, other;
	pthread_mutex_t mu;
};

static void hammer_one(int i, void *arg)
{
	struct hammer *x = arg;
	struct resp r = callf(&S, x->key, "POST", "/v1/check", "{\"customer_id\":\"%s\"}", x->cust);
	pthread_mutex_lock(&x->mu);
	if (r.status == 200)
		x->ok++;
	else if (r.status == 429)
		x->denied++;
	else
		x->other++;
	pthread_mutex_unlock(&x->mu);
	resp_free(&r);
	(void)i;
}

START_TEST(throttled_once_per_minute)
{
	struct tenant t = tenant_new(&S, true);
	struct receiver *rv = rcv_start();

	struct ep e = ep_create(&S, t.key, rcv_url(rv, "/thr"), "[\"rate_limit.throttled\"]");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"one-per-hour\",\"kind\":\"rate\",\"meter\":\"requests\",\"limit\":1,\"window\":3600}");
	/* the 50 checks must fall in one minute (of the tenant's clock): start at its beginning */
	long long c0 = clock_now(t.key);
	long long c1 = clock_advance(t.key, 60 - c0 % 60 + 1);
	long long minute = c1 / 60 * 60;
	struct hammer a = {.key = t.key, .cust = "h1", .mu = PTHREAD_MUTEX_INITIALIZER};
	for (int round = 0; round < 5; round++)
		run_parallel(10, hammer_one, &a);
	ck_assert_msg(a.ok == 1 && a.denied == 49 && a.other == 0, "50 checks: %d allowed, %d denied, %d other", a.ok,
		      a.denied, a.other);
	struct hammer b = {.key = t.key, .cust = "h2", .mu = PTHREAD_MUTEX_INITIALIZER};
	for (int i = 0; i < 5; i++)
		hammer_one(i, &b);
	ck_assert_int_eq(b.ok, 1);
	ck_assert_int_eq(b.denied, 4);
	ck_assert_msg(clock_now(t.key) / 60 * 60 == minute, "the checks took longer than the minute");

	/* denials on two instances: still one (the second instance knows the limit within 1 s) */
	struct srv S2 = {0};
	srv_start(&S2, FAST_ENV);
	nap_ms(1000);
	struct hammer c = {.key = t.key, .cust = "h3", .mu = PTHREAD_MUTEX_INITIALIZER};
	for (int i = 0; i < 10; i++) {
		struct resp r = callf(i % 2 ? &S2 : &S, t.key, "POST", "/v1/check", "{\"customer_id\":\"h3\"}");
		c.ok += r.status == 200;
		c.denied += r.status == 429;
		resp_free(&r);
	}
	srv_stop(&S2);
	ck_assert_msg(c.ok == 1 && c.denied == 9, "h3 on two instances: %d allowed, %d denied", c.ok, c.denied);
	ck_assert_msg(clock_now(t.key) / 60 * 60 == minute, "the checks took longer than the minute");

	ck_assert_int_eq(hooks_wait(rv, "rate_limit.throttled", "h1", 1, 10000), 1);
	ck_assert_int_eq(hooks_wait(rv, "rate_limit.throttled", "h2", 1, 10000), 1);
	ck_assert_int_eq(hooks_wait(rv, "rate_limit.throttled", "h3", 1, 10000), 1);
	nap_ms(1500);
	ck_assert_msg(hooks_count(rv, "rate_limit.throttled", "h3", false) == 1,
		      "%d rate_limit.throttled for h3 denied on two instances (want exactly 1 for the minute)",
		      hooks_count(rv, "rate_limit.throttled", "h3", false));
	ck_assert_msg(hooks_count(rv, "rate_limit.throttled", "h1", false) == 1,
		      "%d rate_limit.throttled for h1 (want exactly 1 for the minute)", hooks_count(rv, "rate_limit.throttled", "h1", false));
	ck_assert_int_eq(hooks_count(rv, "rate_limit.throttled", "h2", false), 1);
	ck_assert_int_eq(rcv_count(rv), 3);
	struct hook h;
	hook_find(rv, "rate_limit.throttled", "h1", 0, &h);
	ck_hook(&h, e.secret);
	ck_assert_str_eq(jstr(h.p, "data.limit_id"), "one-per-hour");
	ck_assert_msg(time_parse(jstr(h.p, "data.minute")) == minute, "data.minute %s, want %lld", jstr(h.p, "data.minute"),
		      minute);
	ck_assert_msg(json_is_integer(jpath(h.p, "data.retry_after")) && jint(h.p, "data.retry_after") > 0 &&
			      jint(h.p, "data.retry_after") <= 3600,
		      "data.retry_after in %s", h.q.body);
	hook_free(&h);
	rcv_stop(rv);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("webhooks");
	TCase *tc = tcase_create("webhooks");

	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, endpoint_crud);
	tcase_add_test(tc, deleting_an_endpoint_takes_its_deliveries);
	tcase_add_test(tc, endpoint_bad_input);
	tcase_add_test(tc, threshold_once_signed_then_exceeded_once);
	tcase_add_test(tc, threshold_and_exceeded_by_consuming_checks);
	tcase_add_test(tc, requests_quotas_fire_thresholds_and_exceeded);
	tcase_add_test(tc, retry_fails_twice_then_succeeds);
	tcase_add_test(tc, balance_low_depleted_replenished);
	tcase_add_test(tc, reset_and_summary_on_test_clock);
	tcase_add_test(tc, reset_when_clock_advanced_right_after_limit_created);
	tcase_add_test(tc, summary_when_clock_advanced_right_after_tenant_created);
	tcase_add_test(tc, rotation_sends_both_signatures);
	tcase_add_test(tc, ssrf_guard_refuses_private_targets);
	tcase_add_test(tc, endpoint_tenant_isolation);
	tcase_add_test(tc, ping_and_manual_retry);
	tcase_add_test(tc, burst_recorded_with_odd_response_bodies);
	tcase_add_test(tc, disabled_endpoint_gets_nothing);
	tcase_add_test(tc, disabling_stops_pending_retries);
	tcase_add_test(tc, redirects_not_followed);
	tcase_add_test(tc, event_type_filters);
	tcase_add_test(tc, throttled_once_per_minute);
	tcase_add_test(tc, two_instances_every_event_delivered);
	tcase_add_test(tc, kill9_between_attempts_still_delivers);
	tcase_add_test(tc, retries_follow_the_test_clock);
	tcase_add_test(tc, ssrf_rechecked_at_delivery);
	tcase_add_test(tc, proxy_environment_ignored);
	suite_add_tcase(s, tc);
	if (nudged_total)
		fprintf(stderr, "note: %d deliveries were nudged\n", nudged_total);
	return run_suite(s);
}

/* mtest.h — small helpers shared by the metering suites (meters, limits, checks, events, usage,
 * reservations, test clocks). Header-only (static functions) so the shared harness stays untouched. */
#ifndef TOLLGATE_TEST_MTEST_H
#define TOLLGATE_TEST_MTEST_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

#define M_UNUSED __attribute__((unused))

/* A request with a printf-formatted body (fmt NULL: no body). */
static M_UNUSED struct resp callf(const struct srv *s, const char *key, const char *method, const char *path,
				  const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static M_UNUSED struct resp callf(const struct srv *s, const char *key, const char *method, const char *path,
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
	free(body);
	return r;
}

/* Send and insist on a status; the response is freed. */
static M_UNUSED void expectf(const struct srv *s, const char *key, const char *method, const char *path, long want,
			     const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static M_UNUSED void expectf(const struct srv *s, const char *key, const char *method, const char *path, long want,
			     const char *fmt, ...)
{
	char *body = NULL;

	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		if (vasprintf(&body, fmt, ap) < 0)
			body = NULL;
		va_end(ap);
	}
	expect_status(s, method, path, key, body, want);
	free(body);
}

/* A 400 (or other) error with exactly this code and param (param NULL: must be absent). */
#define ck_bad(r, status_code, code_str, param_str) ck_err(r, status_code, "invalid_request", code_str, param_str)

/* The entry of limits[] (of a check or usage response) with this id (and subject, unless NULL). */
static M_UNUSED json_t *lim_of(json_t *root, const char *id, const char *subject)
{
	json_t *arr = jpath(root, "limits"), *e;
	size_t i;

	json_array_foreach(arr, i, e) {
		const char *eid = json_string_value(json_object_get(e, "id"));
		const char *sub = json_string_value(json_object_get(e, "subject"));
		if (eid && strcmp(eid, id) == 0 && (!subject || (sub && strcmp(sub, subject) == 0)))
			return e;
	}
	return NULL;
}

/* Must be present. */
static M_UNUSED json_t *lim_must(json_t *root, const char *id, const char *subject)
{
	json_t *e = lim_of(root, id, subject);
	if (!e) {
		char *t = json_dumps(root, JSON_COMPACT);
		ck_abort_msg("no limits[] entry '%s'%s%s in %s", id, subject ? " for subject " : "", subject ? subject : "",
			     t ? t : "?");
	}
	return e;
}

static M_UNUSED size_t nlimits(json_t *root)
{
	return json_array_size(jpath(root, "limits"));
}

/* An exact quantity: the JSON number equals want; whole values must be JSON integers (no fraction). */
static M_UNUSED void ck_qty(json_t *root, const char *path, double want)
{
	json_t *v = jpath(root, path);
	char *t;

	if (!json_is_number(v)) {
		t = json_dumps(root, JSON_COMPACT | JSON_ENCODE_ANY);
		ck_abort_msg("expected a number at '%s' (want %.6f) in %s", path, want, t ? t : "?");
	}
	if (want == floor(want) && fabs(want) < 1e15)
		ck_assert_msg(json_is_integer(v), "'%s': a whole quantity must be written without a fraction (got %.17g)",
			      path, json_number_value(v));
	ck_assert_msg(json_number_value(v) == want, "'%s': expected %.6f, got %.9f", path, want, json_number_value(v));
}

/* The state of one limits[] entry: used, reserved, remaining. */
static M_UNUSED void ck_state(json_t *root, const char *id, const char *subject, double used, double reserved,
			      double remaining)
{
	json_t *e = lim_must(root, id, subject);
	ck_qty(e, "used", used);
	ck_qty(e, "reserved", reserved);
	ck_qty(e, "remaining", remaining);
}

/* Seconds since the epoch, real time. */
static M_UNUSED long long real_now(void)
{
	return (long long)time(NULL);
}

/* RFC 3339 UTC text of epoch seconds (rotating static buffers, 8 at a time). */
static M_UNUSED const char *iso(long long t)
{
	static _Thread_local char bufs[8][32];
	static _Thread_local int k;
	time_t tt = (time_t)t;
	struct tm tm;
	char *b = bufs[k++ % 8];

	gmtime_r(&tt, &tm);
	strftime(b, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return b;
}

/* A tenant's test clock (epoch seconds). */
static M_UNUSED long long clock_now(const struct srv *s, const char *key)
{
	struct resp r = req(s, "GET", "/v1/test_clock", key, NULL, NULL);
	long long t;

	ck_status(r, 200);
	t = time_parse(jstr(r.json, "now"));
	resp_free(&r);
	return t;
}

static M_UNUSED long long clock_advance(const struct srv *s, const char *key, long long seconds)
{
	struct resp r = callf(s, key, "POST", "/v1/test_clock/advance", "{\"seconds\":%lld}", seconds);
	long long t;

	ck_status(r, 200);
	t = time_parse(jstr(r.json, "now"));
	resp_free(&r);
	return t;
}

/* Move a test-mode tenant's clock to `offset` seconds after the start of the next hour whose hour of day is
 * at least min_hour (so "2 hours ago" is still today). Returns the new clock. */
static M_UNUSED long long clock_align_hour(const struct srv *s, const char *key, int offset, int min_hour)
{
	long long now = clock_now(s, key);
	long long target = (now / 3600 + 1) * 3600 + offset;

	while ((target % 86400) / 3600 < min_hour)
		target += 3600;
	return clock_advance(s, key, target - now);
}

/* Monotonic milliseconds. */
static M_UNUSED long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static M_UNUSED void nap_ms(int ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* The first day of the month after the one t falls in, 00:00 UTC. */
static M_UNUSED long long next_month_start(long long t)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	tm.tm_mday = 1;
	tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
	tm.tm_mon += 1;
	return (long long)timegm(&tm);
}

/* Delete every Redis key of one tenant (never FLUSHALL: other suites share Redis). */
static M_UNUSED void redis_drop_tenant(const char *tenant_id)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd),
		 "EVAL \"local n=0 for _,k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) n=n+1 end return n\" "
		 "0 'tg:{%s*'",
		 tenant_id);
	ck_assert_int_eq(redis_cmd(cmd), 0);
}

#ifdef MTEST_ONE_SERVER
/* The suite's server, started afresh for every test (tcase_add_checked_fixture(tc, setup, teardown)). */
static struct srv S;

static M_UNUSED void setup(void)
{
	srv_start(&S, NULL);
}

static M_UNUSED void teardown(void)
{
	srv_stop(&S);
}

#define TOKENS_METER                                                                                               \
	"{\"id\":\"tokens\",\"event_type\":\"llm\",\"aggregation\":\"sum\",\"property\":\"tokens\",\"group_by\":[\"model\"]}"

/* A tenant with the meter "tokens" (sum of the llm events' tokens, by model). */
static M_UNUSED struct tenant tokens_tenant(bool test_mode)
{
	struct tenant t = tenant_new(&S, test_mode);
	expectf(&S, t.key, "POST", "/v1/meters", 201, TOKENS_METER);
	return t;
}
#endif

#endif

/* test_events_usage.c — POST/GET /v1/events and the usage reads (a customer's live limits, time series as JSON
 * and CSV) over real HTTP against real PostgreSQL and Redis. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#define MTEST_ONE_SERVER
#include "mtest.h"


#define EVENTS(key, ...) callf(&S, key, "POST", "/v1/events", __VA_ARGS__)
#define CHECK(key, ...) callf(&S, key, "POST", "/v1/check", __VA_ARGS__)

static void ck_counts(const struct resp *r, long long accepted, long long dup, size_t nrejected)
{
	ck_assert_msg(r->status == 200, "events: %ld %s", r->status, r->body);
	ck_assert_msg(jint(r->json, "accepted") == accepted && jint(r->json, "duplicates") == dup &&
			      json_array_size(jpath(r->json, "rejected")) == nrejected,
		      "want accepted %lld, duplicates %lld, %zu rejected: %s", accepted, dup, nrejected, r->body);
}

/* rejected[k] has this index, code and param (param NULL: not checked). */
static void ck_rejected(json_t *root, size_t k, long long index, const char *code, const char *param)
{
	char p[64];
	snprintf(p, sizeof(p), "rejected.%zu", k);
	json_t *e = jpath(root, p);
	ck_assert_msg(e != NULL, "no %s", p);
	ck_assert_int_eq(jint(e, "index"), index);
	ck_assert_str_eq(jstr(e, "error.type"), "invalid_request");
	ck_assert_msg(strcmp(jstr(e, "error.code"), code) == 0, "rejected %lld: code %s, want %s", index,
		      jstr(e, "error.code"), code);
	ck_assert_msg(json_is_string(jpath(e, "error.message")), "rejected %lld: no message", index);
	if (param)
		ck_assert_msg(json_is_string(jpath(e, "error.param")) && strcmp(jstr(e, "error.param"), param) == 0,
			      "rejected %lld: param should be %s", index, param);
}

/* GET a usage series (path with its query): exactly these bucket values, in order. */
static void ck_series_values(const char *key, const char *path, size_t n, const double *want)
{
	struct resp r = req(&S, "GET", path, key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_msg(json_array_size(jpath(r.json, "data")) == n, "%zu buckets, want %zu: %s",
		      json_array_size(jpath(r.json, "data")), n, r.body);
	for (size_t i = 0; i < n; i++) {
		char at[32];
		snprintf(at, sizeof(at), "data.%zu.value", i);
		ck_qty(r.json, at, want[i]);
	}
	resp_free(&r);
}

/* A dry-run check of amount 0 (dims: JSON object text): the live state of every limit that applies. */
static struct resp dry_run(const char *key, const char *cust, const char *meter, const char *dims)
{
	struct resp r = CHECK(key, "{\"customer_id\":\"%s\",\"meter\":\"%s\",\"amount\":0,\"dry_run\":true,\"dimensions\":%s}",
			      cust, meter, dims);
	ck_assert_msg(r.status == 200 || r.status == 429, "%ld %s", r.status, r.body);
	return r;
}

/* Quota state of one customer through a dry-run check of amount 0. */
static void ck_used(const char *key, const char *cust, const char *lim, double used)
{
	struct resp r = dry_run(key, cust, "tokens", "{}");
	ck_qty(lim_must(r.json, lim, NULL), "used", used);
	resp_free(&r);
}

/* ---- 8. events ---- */

START_TEST(events_single_batch_and_rejections)
{
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"q\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"month\",\"limit\":1000000}");
	struct resp r = EVENTS(t.key, "{\"id\":\"e-1\",\"customer_id\":\"c\",\"type\":\"llm\",\"properties\":{\"tokens\":1532,\"model\":\"gpt-4\"}}");
	ck_counts(&r, 1, 0, 0);
	ck_assert(json_is_array(jpath(r.json, "rejected")));
	resp_free(&r);
	ck_used(t.key, "c", "q", 1532);

	long long now = real_now();
	r = EVENTS(t.key,
		   "{\"events\":["
		   "{\"id\":\"b0\",\"customer_id\":\"c\",\"type\":\"llm\",\"properties\":{\"tokens\":10}},"   /* 0 ok */
		   "{\"id\":\"b1\",\"type\":\"llm\",\"properties\":{\"tokens\":10}},"                          /* 1 no customer */
		   "{\"id\":\"b2\",\"customer_id\":\"c\",\"type\":\"llm\",\"properties\":{\"tokens\":\"abc\"}}," /* 2 not a number */
		   "{\"id\":\"b3\",\"customer_id\":\"c\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":10}}," /* 3 36 d */
		   "{\"id\":\"b4\",\"customer_id\":\"c\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":10}}," /* 4 +6 min */
		   "{\"id\":\"b5\",\"customer_id\":\"c\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":20.5}}," /* 5 +4 min ok */
		   "{\"id\":\"b6\",\"customer_id\":\"c\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":1}}," /* 6 34 d ok */
		   "{\"id\":\"b7\",\"customer_id\":\"c\",\"properties\":{\"tokens\":1}},"                      /* 7 no type */
		   "{\"id\":\"b8\",\"customer_id\":\"c\",\"type\":\"llm\",\"properties\":{\"tokens\":-3}},"    /* 8 negative */
		   "{\"id\":\"b9\",\"customer_id\":\"c\",\"type\":\"llm\",\"timestamp\":\"yesterday\"},"      /* 9 bad time */
		   "5,"                                                                                      /* 10 not an object */
		   "{\"id\":\"b11\",\"customer_id\":\"c\",\"type\":\"llm\",\"properties\":{\"tokens\":1.0000001}}," /* 11 7 decimals */
		   "{\"id\":\"b12\",\"customer_id\":\"c\",\"type\":\"llm\",\"properties\":{\"tokens\":1},\"colour\":\"red\"}," /* 12 */
		   "{\"id\":\"b13\",\"customer_id\":\"c\",\"type\":\"llm\",\"properties\":{\"tokens\":2,\"meta\":{\"a\":1}}}," /* 13 */
		   "{\"id\":\"b14\",\"customer_id\":\"c\",\"type\":\"other\",\"properties\":{\"anything\":\"x\"}}" /* 14 ok, no meter */
		   "]}",
		   iso(now - 36 * 86400), iso(now + 6 * 60), iso(now + 4 * 60), iso(now - 34 * 86400));
	ck_counts(&r, 4, 0, 11);
	ck_rejected(r.json, 0, 1, "missing_parameter", "customer_id");
	ck_rejected(r.json, 1, 2, "invalid_parameter", "properties.tokens");
	ck_rejected(r.json, 2, 3, "timestamp_too_old", "timestamp");
	ck_rejected(r.json, 3, 4, "timestamp_in_future", "timestamp");
	ck_rejected(r.json, 4, 7, "missing_parameter", "type");
	ck_rejected(r.json, 5, 8, "invalid_parameter", NULL);
	ck_rejected(r.json, 6, 9, "invalid_parameter", "timestamp");
	ck_assert_int_eq(jint(r.json, "rejected.7.index"), 10);
	ck_rejected(r.json, 8, 11, "invalid_parameter", "properties.tokens");
	ck_rejected(r.json, 9, 12, "unknown_parameter", "colour");
	ck_rejected(r.json, 10, 13, "invalid_parameter", NULL);
	resp_free(&r);
	/* counted: 1532 + 10 + 20.5 (this month) — and the 34-day-old 1 only if it falls in this month */
	long long month_start = next_month_start(now) - 1;
	{
		time_t tt = (time_t)now;
		struct tm tm;
		gmtime_r(&tt, &tm);
		tm.tm_mday = 1;
		tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
		month_start = (long long)timegm(&tm);
	}
	double want = 1532 + 10 + 20.5 + ((now - 34 * 86400) >= month_start ? 1 : 0);
	ck_used(t.key, "c", "q", want);

	/* the same batch again: the accepted ones are duplicates, the rejected ones rejected again */
	r = EVENTS(t.key,
		   "{\"events\":[{\"id\":\"b0\",\"customer_id\":\"c\",\"type\":\"llm\",\"properties\":{\"tokens\":10}},"
		   "{\"id\":\"b1\",\"type\":\"llm\",\"properties\":{\"tokens\":10}},"
		   "{\"id\":\"e-1\",\"customer_id\":\"c\",\"type\":\"llm\",\"properties\":{\"tokens\":999}}]}");
	ck_counts(&r, 0, 2, 1);
	ck_rejected(r.json, 0, 1, "missing_parameter", "customer_id");
	resp_free(&r);
	ck_used(t.key, "c", "q", want);

	/* in one batch, one id twice: counted once */
	r = EVENTS(t.key,
		   "{\"events\":[{\"id\":\"twin\",\"customer_id\":\"c\",\"type\":\"llm\",\"properties\":{\"tokens\":5}},"
		   "{\"id\":\"twin\",\"customer_id\":\"c\",\"type\":\"llm\",\"properties\":{\"tokens\":5}},"
		   "{\"id\":\"twin\",\"customer_id\":\"c\",\"type\":\"llm\",\"properties\":{\"tokens\":7}}]}");
	ck_counts(&r, 1, 2, 0);
	resp_free(&r);
	ck_used(t.key, "c", "q", want + 5);

	/* the body itself */
	r = EVENTS(t.key, "{\"events\":[]}");
	ck_bad(r, 400, "invalid_parameter", "events");
	resp_free(&r);
	r = EVENTS(t.key, "{\"events\":{}}");
	ck_status(r, 400);
	ck_assert_str_eq(jstr(r.json, "error.param"), "events");
	resp_free(&r);
	r = EVENTS(t.key, "{\"events\":[");
	ck_bad(r, 400, "invalid_json", NULL);
	resp_free(&r);
	/* a single event that is bad: 200 with it rejected (per-event validation) or 400 — never stored */
	r = EVENTS(t.key, "{\"id\":\"solo-bad\",\"type\":\"llm\",\"properties\":{\"tokens\":1}}");
	ck_assert_msg(r.status == 200 || r.status == 400, "%ld %s", r.status, r.body);
	if (r.status == 200)
		ck_counts(&r, 0, 0, 1);
	resp_free(&r);
	ck_used(t.key, "c", "q", want + 5);
}
END_TEST

START_TEST(events_batch_limits)
{
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"q\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"month\",\"limit\":1000000}");
	size_t cap = 1001 * 96 + 64;
	char *b = malloc(cap);
	for (int n = 1001; n >= 1000; n--) {
		size_t len = (size_t)snprintf(b, cap, "{\"events\":[");
		for (int i = 0; i < n; i++)
			len += (size_t)snprintf(b + len, cap - len, "%s{\"id\":\"k%d\",\"customer_id\":\"c\",\"type\":\"llm\","
								   "\"properties\":{\"tokens\":%s}}",
						i ? "," : "", i, i % 2 ? "1" : "0.5");
		snprintf(b + len, cap - len, "]}");
		struct resp r = req(&S, "POST", "/v1/events", t.key, b, NULL);
		if (n == 1001) {
			ck_bad(r, 400, "invalid_parameter", "events");
		} else {
			ck_counts(&r, 1000, 0, 0);
		}
		resp_free(&r);
		if (n == 1001) {
			/* nothing of the refused batch is stored */
			struct resp e = req(&S, "GET", "/v1/events?limit=1", t.key, NULL, NULL);
			ck_status(e, 200);
			ck_assert_int_eq(json_array_size(jpath(e.json, "data")), 0);
			resp_free(&e);
		}
	}
	ck_used(t.key, "c", "q", 750);
	/* all again: 1000 duplicates */
	struct resp r = req(&S, "POST", "/v1/events", t.key, b, NULL);
	ck_counts(&r, 0, 1000, 0);
	resp_free(&r);
	free(b);
	ck_used(t.key, "c", "q", 750);
	char *cnt = NULL;
	char sql[256];
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM events WHERE tenant_id = '%s'", t.id);
	cnt = psql(sql);
	ck_assert_ptr_nonnull(cnt);
	ck_assert_str_eq(cnt, "1000");
	free(cnt);
}
END_TEST

START_TEST(events_count_in_their_period)
{
	/* a test-mode tenant at hh:00:30 with hh >= 3: two hours ago is earlier today, in another hour */
	struct tenant t = tokens_tenant(true);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"hour\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"hour\",\"limit\":100}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"day\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":1000}");
	long long now = clock_align_hour(&S, t.key, 30, 3);
	long long h = now / 3600 * 3600; /* the start of the tenant's current hour */
	struct resp r = EVENTS(t.key,
			       "{\"events\":[{\"customer_id\":\"c\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":90}},"
			       "{\"customer_id\":\"c\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":80}}]}",
			       iso(now - 7200), iso(h - 1));
	ck_counts(&r, 2, 0, 0);
	resp_free(&r);
	/* neither counts toward this hour; both toward today */
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":100,\"dry_run\":true}");
	ck_status(r, 200);
	ck_state(r.json, "hour", NULL, 0, 0, 100);
	ck_state(r.json, "day", NULL, 170, 0, 830);
	ck_assert_int_eq(time_parse(jstr(lim_must(r.json, "hour", NULL), "resets_at")), h + 3600);
	resp_free(&r);
	/* one in this hour does */
	r = EVENTS(t.key, "{\"customer_id\":\"c\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":30}}", iso(h));
	ck_counts(&r, 1, 0, 0);
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":71,\"dry_run\":true}");
	ck_status(r, 429);
	ck_state(r.json, "hour", NULL, 30, 0, 70);
	ck_state(r.json, "day", NULL, 200, 0, 800);
	resp_free(&r);
	/* the same after this tenant's counters are rebuilt from PostgreSQL */
	redis_drop_tenant(t.id);
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":70,\"dry_run\":true}");
	ck_status(r, 200);
	ck_state(r.json, "hour", NULL, 30, 0, 70);
	ck_state(r.json, "day", NULL, 200, 0, 800);
	resp_free(&r);
	/* and the hourly series puts each where it fell */
	char path[256];
	snprintf(path, sizeof(path), "/v1/usage?meter=tokens&customer_id=c&granularity=hour&from=%s&to=%s", iso(h - 3 * 3600),
		 iso(h + 3600));
	r = req(&S, "GET", path, t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 3);
	ck_assert_int_eq(time_parse(jstr(r.json, "data.0.start")), h - 7200);
	ck_qty(r.json, "data.0.value", 90);
	ck_assert_int_eq(time_parse(jstr(r.json, "data.1.start")), h - 3600);
	ck_qty(r.json, "data.1.value", 80);
	ck_assert_int_eq(time_parse(jstr(r.json, "data.2.start")), h);
	ck_assert_int_eq(time_parse(jstr(r.json, "data.2.end")), h + 3600);
	ck_qty(r.json, "data.2.value", 30);
	resp_free(&r);
}
END_TEST

/* GET /v1/usage answers whole buckets: `from` inside an hour or a day starts the series with that whole
 * bucket, `to` inside one ends it with that whole bucket (an event at 18:00:59 is in the 18:00 hour even
 * when `from` says 18:00:01). */
START_TEST(usage_series_buckets_are_whole)
{
	struct tenant t = tokens_tenant(false);
	long long h = real_now() / 3600 * 3600 - 2 * 3600; /* two hours ago, on the hour */
	struct resp r = EVENTS(t.key,
			       "{\"events\":[{\"customer_id\":\"c\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":1}},"
			       "{\"customer_id\":\"c\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":2}},"
			       "{\"customer_id\":\"c\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":4}}]}",
			       iso(h), iso(h + 59), iso(h + 3600 + 1800));
	ck_counts(&r, 3, 0, 0);
	resp_free(&r);
	char path[256];
	/* hours: from one second into the first hour, to half a minute into it */
	snprintf(path, sizeof(path), "/v1/usage?meter=tokens&customer_id=c&granularity=hour&from=%s", iso(h + 1));
	char to[64];
	snprintf(to, sizeof(to), "%s", iso(h + 30));
	strcat(path, "&to=");
	strcat(path, to);
	r = req(&S, "GET", path, t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 1);
	ck_assert_int_eq(time_parse(jstr(r.json, "data.0.start")), h);
	ck_assert_int_eq(time_parse(jstr(r.json, "data.0.end")), h + 3600);
	ck_qty(r.json, "data.0.value", 3);
	resp_free(&r);
	/* `to` on a boundary ends before it */
	snprintf(path, sizeof(path), "/v1/usage?meter=tokens&customer_id=c&granularity=hour&from=%s", iso(h + 1));
	strcat(path, "&to=");
	strcat(path, iso(h + 3600));
	r = req(&S, "GET", path, t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 1);
	ck_qty(r.json, "data.0.value", 3);
	resp_free(&r);
	/* a day: from the middle of the second hour, the whole day */
	snprintf(path, sizeof(path), "/v1/usage?meter=tokens&customer_id=c&granularity=day&from=%s", iso(h + 3600 + 1800));
	r = req(&S, "GET", path, t.key, NULL, NULL);
	ck_status(r, 200);
	long long day2 = (h + 3600) / 86400 * 86400; /* the second hour's day: also the first's, unless it begins */
	ck_assert_msg(json_array_size(jpath(r.json, "data")) >= 1, "%s", r.body);
	ck_assert_int_eq(time_parse(jstr(r.json, "data.0.start")), day2);
	ck_qty(r.json, "data.0.value", h / 86400 * 86400 == day2 ? 7 : 4);
	resp_free(&r);
}
END_TEST

START_TEST(events_list_filters_and_pages)
{
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/meters", 201, "{\"id\":\"calls\",\"event_type\":\"api\",\"aggregation\":\"count\"}");
	long long now = real_now();
	/* c1: five llm events a minute apart (e0 oldest); c2: three api events */
	struct resp r = EVENTS(t.key,
			       "{\"events\":["
			       "{\"id\":\"e0\",\"customer_id\":\"c1\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":1,\"model\":\"gpt-4\"}},"
			       "{\"id\":\"e1\",\"customer_id\":\"c1\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":2}},"
			       "{\"id\":\"e2\",\"customer_id\":\"c1\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":3}},"
			       "{\"id\":\"e3\",\"customer_id\":\"c1\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":4}},"
			       "{\"id\":\"e4\",\"customer_id\":\"c1\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":5}},"
			       "{\"id\":\"a0\",\"customer_id\":\"c2\",\"type\":\"api\",\"timestamp\":\"%s\"},"
			       "{\"id\":\"a1\",\"customer_id\":\"c2\",\"type\":\"api\",\"timestamp\":\"%s\"},"
			       "{\"id\":\"a2\",\"customer_id\":\"c2\",\"type\":\"api\",\"timestamp\":\"%s\"}]}",
			       iso(now - 600), iso(now - 540), iso(now - 480), iso(now - 420), iso(now - 360), iso(now - 590),
			       iso(now - 530), iso(now - 470));
	ck_counts(&r, 8, 0, 0);
	resp_free(&r);

	r = req(&S, "GET", "/v1/events?customer_id=c1", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 5);
	ck_assert(json_is_false(jpath(r.json, "has_more")));
	/* newest first */
	ck_assert_str_eq(jstr(r.json, "data.0.id"), "e4");
	ck_assert_str_eq(jstr(r.json, "data.4.id"), "e0");
	ck_assert_str_eq(jstr(r.json, "data.4.customer_id"), "c1");
	ck_assert_str_eq(jstr(r.json, "data.4.type"), "llm");
	ck_assert_int_eq(time_parse(jstr(r.json, "data.4.timestamp")), now - 600);
	ck_qty(r.json, "data.4.properties.tokens", 1);
	ck_assert_str_eq(jstr(r.json, "data.4.properties.model"), "gpt-4");
	resp_free(&r);
	r = req(&S, "GET", "/v1/events?type=api", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 3);
	ck_assert_str_eq(jstr(r.json, "data.0.id"), "a2");
	resp_free(&r);
	r = req(&S, "GET", "/v1/events?type=api&customer_id=c1", t.key, NULL, NULL);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 0);
	resp_free(&r);
	char path[256];
	/* from inclusive, to exclusive */
	snprintf(path, sizeof(path), "/v1/events?from=%s&to=%s", iso(now - 540), iso(now - 420));
	r = req(&S, "GET", path, t.key, NULL, NULL);
	ck_status(r, 200);
	{
		char got[128] = "";
		json_t *e;
		size_t k;
		json_array_foreach(jpath(r.json, "data"), k, e) {
			strcat(got, json_string_value(json_object_get(e, "id")));
			strcat(got, " ");
		}
		ck_assert_str_eq(got, "a2 e2 a1 e1 ");
	}
	resp_free(&r);
	/* pages of two through c1's five */
	const char *want[] = {"e4", "e3", "e2", "e1", "e0"};
	char after[32] = "";
	int seen = 0;
	for (int page = 0; page < 3; page++) {
		if (after[0])
			snprintf(path, sizeof(path), "/v1/events?customer_id=c1&limit=2&starting_after=%s", after);
		else
			snprintf(path, sizeof(path), "/v1/events?customer_id=c1&limit=2");
		r = req(&S, "GET", path, t.key, NULL, NULL);
		ck_status(r, 200);
		size_t n = json_array_size(jpath(r.json, "data"));
		ck_assert_int_eq(n, page < 2 ? 2 : 1);
		ck_assert(json_is_true(jpath(r.json, "has_more")) == (page < 2));
		for (size_t k = 0; k < n; k++) {
			char p[32];
			snprintf(p, sizeof(p), "data.%zu.id", k);
			ck_assert_str_eq(jstr(r.json, p), want[seen++]);
			snprintf(after, sizeof(after), "%s", jstr(r.json, p));
		}
		resp_free(&r);
	}
	ck_assert_int_eq(seen, 5);
	/* bad queries */
	r = req(&S, "GET", "/v1/events?from=yesterday", t.key, NULL, NULL);
	ck_bad(r, 400, "invalid_parameter", "from");
	resp_free(&r);
	r = req(&S, "GET", "/v1/events?limit=101", t.key, NULL, NULL);
	ck_bad(r, 400, "invalid_parameter", "limit");
	resp_free(&r);
	expect_status(&S, "GET", "/v1/events?starting_after=nope", t.key, NULL, 400);
	r = req(&S, "GET", "/v1/events?colour=red", t.key, NULL, NULL);
	ck_bad(r, 400, "unknown_parameter", "colour");
	resp_free(&r);
	/* another tenant sees none */
	struct tenant o = tenant_new(&S, false);
	r = req(&S, "GET", "/v1/events", o.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 0);
	resp_free(&r);
}
END_TEST

/* The default range of GET /v1/events follows the tenant's clock, not real time. */
START_TEST(events_list_default_range_on_the_tenant_clock)
{
	struct tenant t = tokens_tenant(true);
	clock_advance(&S, t.key, 400LL * 86400); /* past the year the default range reached beyond real time */
	struct resp r = EVENTS(t.key, "{\"id\":\"late\",\"customer_id\":\"c\",\"type\":\"llm\",\"properties\":{\"tokens\":1}}");
	ck_counts(&r, 1, 0, 0);
	resp_free(&r);
	r = req(&S, "GET", "/v1/events", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_msg(json_array_size(jpath(r.json, "data")) == 1, "the event at the tenant's now is listed: %s", r.body);
	ck_assert_str_eq(jstr(r.json, "data.0.id"), "late");
	resp_free(&r);
}
END_TEST

START_TEST(events_unknown_customer_auto_create_off)
{
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"q\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"month\",\"limit\":1000}");
	/* on (the default): the event creates the customer */
	struct resp r = EVENTS(t.key, "{\"customer_id\":\"fresh\",\"type\":\"llm\",\"properties\":{\"tokens\":3}}");
	ck_counts(&r, 1, 0, 0);
	resp_free(&r);
	expect_status(&S, "GET", "/v1/customers/fresh", t.key, NULL, 200);
	/* a duplicate changes nothing: its id sent again for another customer makes no customer */
	r = EVENTS(t.key, "{\"id\":\"e1\",\"customer_id\":\"fresh\",\"type\":\"llm\",\"properties\":{\"tokens\":1}}");
	ck_counts(&r, 1, 0, 0);
	resp_free(&r);
	r = EVENTS(t.key, "{\"events\":[{\"id\":\"e1\",\"customer_id\":\"other\",\"type\":\"llm\",\"properties\":{\"tokens\":1}},"
			  "{\"id\":\"e2\",\"customer_id\":\"newbie\",\"type\":\"llm\",\"properties\":{\"tokens\":1}}]}");
	ck_counts(&r, 1, 1, 0);
	resp_free(&r);
	expect_status(&S, "GET", "/v1/customers/other", t.key, NULL, 404);
	expect_status(&S, "GET", "/v1/customers/newbie", t.key, NULL, 200);

	expectf(&S, t.key, "PATCH", "/v1/tenant", 200, "{\"auto_create_customers\":false}");
	r = EVENTS(t.key,
		   "{\"events\":[{\"id\":\"x1\",\"customer_id\":\"fresh\",\"type\":\"llm\",\"properties\":{\"tokens\":4}},"
		   "{\"id\":\"x2\",\"customer_id\":\"ghost\",\"type\":\"llm\",\"properties\":{\"tokens\":5}},"
		   "{\"id\":\"x3\",\"customer_id\":\"fresh\",\"type\":\"llm\",\"properties\":{\"tokens\":6}}]}");
	ck_counts(&r, 2, 0, 1);
	ck_rejected(r.json, 0, 1, "customer_not_found", "customer_id");
	resp_free(&r);
	expect_status(&S, "GET", "/v1/customers/ghost", t.key, NULL, 404);
	ck_used(t.key, "fresh", "q", 14);
	/* one event (not a batch) for nobody: 404, as a check for nobody (API.md) */
	r = EVENTS(t.key, "{\"id\":\"x4\",\"customer_id\":\"ghost\",\"type\":\"llm\",\"properties\":{\"tokens\":5}}");
	ck_bad(r, 404, "customer_not_found", "customer_id");
	resp_free(&r);
	/* the rejected event's id was not used up: once the customer exists it is accepted */
	expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"ghost\"}");
	r = EVENTS(t.key, "{\"id\":\"x2\",\"customer_id\":\"ghost\",\"type\":\"llm\",\"properties\":{\"tokens\":5}}");
	ck_counts(&r, 1, 0, 0);
	resp_free(&r);
	ck_used(t.key, "ghost", "q", 5);
}
END_TEST

/* ---- 9. usage reads ---- */

START_TEST(customer_usage_lists_applicable_limits)
{
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/tiers", 201, "{\"id\":\"free\"}");
	expectf(&S, t.key, "POST", "/v1/tiers", 201, "{\"id\":\"pro\"}");
	expectf(&S, t.key, "PATCH", "/v1/tenant", 200, "{\"default_tier\":\"free\"}");
	expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"c\"}");
	expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"other\"}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"qd\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":1000}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"qfree\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"month\",\"limit\":5000,\"scope\":\"tier\",\"tier\":\"free\"}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"qpro\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"month\",\"limit\":9000,\"scope\":\"tier\",\"tier\":\"pro\"}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"oth\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":1,\"scope\":\"customer\",\"customer_id\":\"other\"}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"rr\",\"meter\":\"requests\",\"kind\":\"rate\",\"window\":60,\"limit\":10,\"algorithm\":\"sliding_window\"}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"ipr\",\"meter\":\"requests\",\"kind\":\"rate\",\"window\":60,\"limit\":10,\"per\":\"ip\"}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"plat\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"all_time\",\"limit\":100000,\"scope\":\"platform\"}");

	struct resp r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":150.25,\"consume\":true,\"ip\":\"192.0.2.1\"}");
	ck_status(r, 200);
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"other\",\"meter\":\"tokens\",\"amount\":1,\"consume\":true}");
	ck_status(r, 200);
	resp_free(&r);

	for (int pass = 0; pass < 2; pass++) { /* reading twice changes nothing */
		r = req(&S, "GET", "/v1/customers/c/usage", t.key, NULL, NULL);
		ck_status(r, 200);
		ck_assert_str_eq(jstr(r.json, "customer_id"), "c");
		ck_assert_str_eq(jstr(r.json, "tier"), "free");
		ck_assert(json_is_null(jpath(r.json, "balance")) || json_is_object(jpath(r.json, "balance")));
		ck_assert_msg(nlimits(r.json) == 5, "qd, qfree, rr, ipr, plat: %s", r.body);
		ck_state(r.json, "qd", NULL, 150.25, 0, 849.75);
		ck_state(r.json, "qfree", NULL, 150.25, 0, 4849.75);
		ck_state(r.json, "plat", NULL, 151.25, 0, 99848.75);
		ck_state(r.json, "rr", NULL, 1, 0, 9);
		json_t *q = lim_must(r.json, "qd", NULL);
		ck_assert_str_eq(jstr(q, "kind"), "quota");
		ck_assert_str_eq(jstr(q, "meter"), "tokens");
		ck_assert_str_eq(jstr(q, "scope"), "default");
		ck_assert_str_eq(jstr(q, "period"), "day");
		ck_qty(q, "limit", 1000);
		ck_assert_str_eq(jstr(q, "enforcement"), "hard");
		ck_assert(json_is_false(jpath(q, "exceeded")));
		ck_assert_int_eq(time_parse(jstr(q, "resets_at")), (real_now() / 86400 + 1) * 86400);
		/* all_time never resets */
		ck_assert(json_is_null(jpath(lim_must(r.json, "plat", NULL), "resets_at")));
		/* per-ip limits are listed without state */
		json_t *ip = lim_must(r.json, "ipr", NULL);
		ck_assert_ptr_null(jpath(ip, "used"));
		ck_assert_ptr_null(jpath(ip, "remaining"));
		ck_assert_ptr_null(lim_of(r.json, "qpro", NULL));
		ck_assert_ptr_null(lim_of(r.json, "oth", NULL));
		resp_free(&r);
	}
	/* promotion shows at once */
	expectf(&S, t.key, "PATCH", "/v1/customers/c", 200, "{\"tier\":\"pro\"}");
	r = req(&S, "GET", "/v1/customers/c/usage", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "tier"), "pro");
	ck_state(r.json, "qpro", NULL, 150.25, 0, 8849.75);
	ck_assert_ptr_null(lim_of(r.json, "qfree", NULL));
	resp_free(&r);

	r = req(&S, "GET", "/v1/customers/nobody/usage", t.key, NULL, NULL);
	ck_bad(r, 404, "customer_not_found", NULL);
	resp_free(&r);
	struct tenant o = tenant_new(&S, false);
	expect_status(&S, "GET", "/v1/customers/c/usage", o.key, NULL, 404);
	/* reading usage never creates a customer */
	expect_status(&S, "GET", "/v1/customers/nobody", t.key, NULL, 404);
}
END_TEST

START_TEST(usage_series_json_and_csv)
{
	struct tenant t = tokens_tenant(true);
	long long now = clock_align_hour(&S, t.key, 600, 3); /* hh:10:00 */
	long long h = now / 3600 * 3600;
	struct resp r = EVENTS(t.key,
			       "{\"events\":["
			       "{\"customer_id\":\"c1\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":1.5,\"model\":\"gpt-4\"}},"
			       "{\"customer_id\":\"c1\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":2.25,\"model\":\"gpt-3.5\"}},"
			       "{\"customer_id\":\"c1\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":0.000001,\"model\":\"gpt-4\"}},"
			       "{\"customer_id\":\"c1\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":10,\"model\":\"gpt-4\"}},"
			       "{\"customer_id\":\"c1\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":0.1,\"model\":\"gpt-4\"}},"
			       "{\"customer_id\":\"c1\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":0.2,\"model\":\"gpt-4\"}},"
			       "{\"customer_id\":\"c2\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":100,\"model\":\"gpt-4\"}}]}",
			       iso(h - 7200 + 60), iso(h - 7200 + 120), iso(h - 3600 + 60), iso(h + 60), iso(h + 120), iso(h + 180),
			       iso(h + 240));
	ck_counts(&r, 7, 0, 0);
	resp_free(&r);

	char path[512];
	const char *range = NULL;
	char rbuf[128];
	snprintf(rbuf, sizeof(rbuf), "from=%s&to=%s", iso(h - 3 * 3600), iso(h + 3600));
	range = rbuf;

	/* hourly by model */
	snprintf(path, sizeof(path), "/v1/usage?meter=tokens&customer_id=c1&granularity=hour&group_by=model&%s", range);
	r = req(&S, "GET", path, t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_ptr_nonnull(strstr(resp_header(&r, "Content-Type"), "application/json"));
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 4);
	ck_assert_int_eq(time_parse(jstr(r.json, "data.0.start")), h - 7200);
	ck_assert_int_eq(time_parse(jstr(r.json, "data.0.end")), h - 3600);
	ck_assert_str_eq(jstr(r.json, "data.0.dimensions.model"), "gpt-3.5");
	ck_qty(r.json, "data.0.value", 2.25);
	ck_assert_int_eq(time_parse(jstr(r.json, "data.1.start")), h - 7200);
	ck_assert_str_eq(jstr(r.json, "data.1.dimensions.model"), "gpt-4");
	ck_qty(r.json, "data.1.value", 1.5);
	ck_assert_int_eq(time_parse(jstr(r.json, "data.2.start")), h - 3600);
	ck_qty(r.json, "data.2.value", 0.000001);
	ck_assert_int_eq(time_parse(jstr(r.json, "data.3.start")), h);
	ck_assert_str_eq(jstr(r.json, "data.3.dimensions.model"), "gpt-4");
	ck_qty(r.json, "data.3.value", 10.3);
	ck_assert_ptr_nonnull(strstr(r.body, "10.3"));
	ck_assert_ptr_nonnull(strstr(r.body, "0.000001"));
	resp_free(&r);

	/* hourly totals */
	snprintf(path, sizeof(path), "/v1/usage?meter=tokens&customer_id=c1&granularity=hour&%s", range);
	ck_series_values(t.key, path, 3, (const double[]){3.75, 0.000001, 10.3});
	/* the whole tenant */
	snprintf(path, sizeof(path), "/v1/usage?meter=tokens&granularity=hour&%s", range);
	r = req(&S, "GET", path, t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 3);
	ck_qty(r.json, "data.2.value", 110.3);
	resp_free(&r);
	/* by day and by month: one bucket each */
	snprintf(path, sizeof(path), "/v1/usage?meter=tokens&customer_id=c1&granularity=day&%s", range);
	r = req(&S, "GET", path, t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 1);
	ck_assert_int_eq(time_parse(jstr(r.json, "data.0.start")), h / 86400 * 86400);
	ck_assert_int_eq(time_parse(jstr(r.json, "data.0.end")), h / 86400 * 86400 + 86400);
	ck_qty(r.json, "data.0.value", 14.050001);
	resp_free(&r);
	snprintf(path, sizeof(path), "/v1/usage?meter=tokens&customer_id=c1&granularity=month&group_by=model&%s", range);
	r = req(&S, "GET", path, t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 2);
	ck_assert_int_eq(time_parse(jstr(r.json, "data.0.end")), next_month_start(h));
	ck_qty(r.json, "data.0.value", 2.25);
	ck_qty(r.json, "data.1.value", 11.800001);
	resp_free(&r);

	/* CSV, by format=csv and by Accept */
	char want[1024];
	snprintf(want, sizeof(want),
		 "start,end,model,value\r\n%s,%s,gpt-3.5,2.25\r\n%s,%s,gpt-4,1.5\r\n%s,%s,gpt-4,0.000001\r\n%s,%s,gpt-4,10.3\r\n",
		 iso(h - 7200), iso(h - 3600), iso(h - 7200), iso(h - 3600), iso(h - 3600), iso(h), iso(h), iso(h + 3600));
	snprintf(path, sizeof(path), "/v1/usage?meter=tokens&customer_id=c1&granularity=hour&group_by=model&format=csv&%s", range);
	r = req(&S, "GET", path, t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_ptr_nonnull(strstr(resp_header(&r, "Content-Type"), "text/csv"));
	ck_assert_str_eq(r.body, want);
	resp_free(&r);
	const char *accept[] = {"Accept: text/csv", NULL};
	snprintf(path, sizeof(path), "/v1/usage?meter=tokens&customer_id=c1&granularity=hour&group_by=model&%s", range);
	r = req(&S, "GET", path, t.key, NULL, accept);
	ck_status(r, 200);
	ck_assert_ptr_nonnull(strstr(resp_header(&r, "Content-Type"), "text/csv"));
	ck_assert_str_eq(r.body, want);
	resp_free(&r);
	/* Accept is negotiated: media types in any case, q-values honoured (0: not acceptable), CSV only when
	 * preferred to JSON (a tie goes to the one listed first); format= wins over it */
	static const struct {
		const char *accept, *format;
		bool csv;
	} neg[] = {
		{"Accept: Text/CSV", NULL, true},
		{"Accept: text/csv; charset=utf-8", NULL, true},
		{"Accept: application/json, text/csv;q=0.1", NULL, false},
		{"Accept: application/json;q=0.5, text/csv", NULL, true},
		{"Accept: text/csv;q=0.8, application/json;Q=0.9", NULL, false},
		{"Accept: text/csv, application/json", NULL, true},
		{"Accept: application/json, text/csv", NULL, false},
		{"Accept: text/csv;q=0", NULL, false},
		{"Accept: text/csv;q=0, */*", NULL, false},
		{"Accept: text/csv;q=1.5", NULL, false},
		{"Accept: text/*", NULL, true},
		{"Accept: */*", NULL, false},
		{"Accept: */*, text/csv", NULL, false},
		{"Accept: text/csv, */*;q=0.9", NULL, true},
		{"Accept: application/xml", NULL, false},
		{"Accept: text/csvx, text/plain", NULL, false},
		{"Accept: text/csv", "json", false},
		{"Accept: application/json", "csv", true},
	};
	for (size_t k = 0; k < sizeof(neg) / sizeof(neg[0]); k++) {
		const char *hdr[] = {neg[k].accept, NULL};
		snprintf(path, sizeof(path), "/v1/usage?meter=tokens&customer_id=c1&granularity=hour&group_by=model&%s%s%s",
			 range, neg[k].format ? "&format=" : "", neg[k].format ? neg[k].format : "");
		r = req(&S, "GET", path, t.key, NULL, hdr);
		ck_status(r, 200);
		ck_assert_msg(strstr(resp_header(&r, "Content-Type"), neg[k].csv ? "text/csv" : "application/json") != NULL,
			      "%s (format %s): got %s", neg[k].accept, neg[k].format ? neg[k].format : "-",
			      resp_header(&r, "Content-Type"));
		resp_free(&r);
	}
	snprintf(path, sizeof(path), "/v1/usage?meter=tokens&customer_id=c1&granularity=day&format=csv&%s", range);
	r = req(&S, "GET", path, t.key, NULL, NULL);
	ck_status(r, 200);
	snprintf(want, sizeof(want), "start,end,value\r\n%s,%s,14.050001\r\n", iso(h / 86400 * 86400),
		 iso(h / 86400 * 86400 + 86400));
	ck_assert_str_eq(r.body, want);
	resp_free(&r);

	/* without from/to: the last day up to now — the tenant's now (its clock runs ahead of real time) */
	r = req(&S, "GET", "/v1/usage?meter=tokens&customer_id=c1&granularity=hour", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_msg(json_array_size(jpath(r.json, "data")) == 3, "default range on the tenant's clock: %s", r.body);
	resp_free(&r);

	/* bad queries */
	static const struct {
		const char *q, *param;
	} bad[] = {
		{"granularity=hour", "meter"},
		{"meter=ghost", "meter"},
		{"meter=requests", "meter"},
		{"meter=tokens&group_by=region", "group_by"},
		/* the pattern ^[^,]+(,[^,]+)*$, each dimension once */
		{"meter=tokens&group_by=", "group_by"},
		{"meter=tokens&group_by=model,model", "group_by"},
		{"meter=tokens&group_by=,model", "group_by"},
		{"meter=tokens&group_by=model,", "group_by"},
		{"meter=tokens&group_by=model,,model", "group_by"},
		{"meter=tokens&granularity=week", "granularity"},
		{"meter=tokens&format=xml", "format"},
		{"meter=tokens&from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from"},
		{"meter=tokens&to=soon", "to"},
		{"meter=tokens&colour=red", "colour"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(path, sizeof(path), "/v1/usage?%s", bad[i].q);
		r = req(&S, "GET", path, t.key, NULL, NULL);
		ck_assert_msg(r.status == 400, "%s: %ld %s", path, r.status, r.body);
		ck_assert_msg(json_is_string(jpath(r.json, "error.param")) && strcmp(jstr(r.json, "error.param"), bad[i].param) == 0,
			      "%s: param should be %s: %s", path, bad[i].param, r.body);
		resp_free(&r);
	}
}
END_TEST


START_TEST(consuming_checks_are_recorded_usage)
{
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/meters", 201, "{\"id\":\"calls\",\"event_type\":\"llm\",\"aggregation\":\"count\"}");
	long long now = real_now();
	struct resp r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":2.5,\"consume\":true,"
			      "\"dimensions\":{\"model\":\"gpt-4\",\"feature\":\"chat\"}}");
	ck_status(r, 200);
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":0.25,\"consume\":true}");
	ck_status(r, 200);
	resp_free(&r);
	/* not recorded: dry runs, plain checks, denied checks */
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":100,\"consume\":true,\"dry_run\":true}");
	ck_status(r, 200);
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":100}");
	ck_status(r, 200);
	resp_free(&r);
	r = req(&S, "GET", "/v1/events?customer_id=c", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 2);
	json_t *e = NULL, *x;
	size_t k;
	json_array_foreach(jpath(r.json, "data"), k, x)
		if (json_number_value(jpath(x, "properties.tokens")) == 2.5)
			e = x;
	ck_assert_msg(e != NULL, "no event of 2.5: %s", r.body);
	ck_assert_str_eq(jstr(e, "type"), "llm");
	ck_assert_str_eq(jstr(e, "customer_id"), "c");
	ck_assert_str_eq(jstr(e, "properties.model"), "gpt-4");
	ck_assert_msg(strncmp(jstr(e, "id"), "evt_", 4) == 0, "id %s", jstr(e, "id"));
	long long ts = time_parse(jstr(e, "timestamp"));
	ck_assert_msg(ts >= now - 1 && ts <= real_now() + 1, "timestamp %s", jstr(e, "timestamp"));
	resp_free(&r);
	char path[256];
	snprintf(path, sizeof(path), "/v1/usage?meter=tokens&customer_id=c&granularity=day&group_by=model&from=%s&to=%s",
		 iso(now / 86400 * 86400), iso(now / 86400 * 86400 + 86400));
	r = req(&S, "GET", path, t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 2);
	{
		int g4 = jpath(r.json, "data.0.dimensions.model") ? 0 : 1;
		char p4[48], p0[48];
		snprintf(p4, sizeof(p4), "data.%d.value", g4);
		snprintf(p0, sizeof(p0), "data.%d.value", 1 - g4);
		ck_qty(r.json, p4, 2.5);
		ck_qty(r.json, p0, 0.25);
		snprintf(p4, sizeof(p4), "data.%d.dimensions.model", g4);
		ck_assert_str_eq(jstr(r.json, p4), "gpt-4");
	}
	resp_free(&r);
	/* a check's usage is usage of its meter only: the count meter on the same event type saw no events */
	snprintf(path, sizeof(path), "/v1/usage?meter=calls&customer_id=c&granularity=day&from=%s&to=%s",
		 iso(now / 86400 * 86400), iso(now / 86400 * 86400 + 86400));
	r = req(&S, "GET", path, t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 0);
	resp_free(&r);
}
END_TEST

/* ---- days of usage (migration 0013): the worker compacts past hours into days; readers add them up ---- */

/* The days of a tenant whose usage read as days plus open hours (as a whole-day period is read) differs from
 * the same day read from its hours alone: what every reader of the days relies on, at every commit. */
static long long days_off(const char *tenant)
{
	return psql_num(
		"WITH m AS (SELECT id AS meter_id, CASE spec->>'aggregation' WHEN 'max' THEN 2 WHEN 'latest' THEN 3 ELSE 0 END "
		"  AS agg FROM meters WHERE tenant_id = '%s'), "
		"r AS (SELECT r.*, tg_day(hour) AS day, COALESCE(m.agg, 0) AS agg FROM usage_rollups r LEFT JOIN m USING (meter_id) "
		"  WHERE r.tenant_id = '%s'), "
		"h AS (SELECT subject, meter_id, day, dims, min(agg) AS agg, sum(value) AS s, max(value) AS mx, "
		"  (array_agg(value ORDER BY last_ts DESC))[1] AS lt FROM r GROUP BY 1, 2, 3, 4), "
		"z AS (SELECT subject, meter_id, day, dims, value, last_ts, 0 AS src FROM usage_rollups_daily "
		"  WHERE tenant_id = '%s' UNION ALL SELECT subject, meter_id, day, dims, "
		"  CASE WHEN agg >= 2 THEN value ELSE value - in_day END, last_ts, 1 FROM r WHERE NOT compacted), "
		"y AS (SELECT subject, meter_id, day, dims, sum(value) AS s, max(value) AS mx, "
		"  (array_agg(value ORDER BY last_ts DESC, src DESC))[1] AS lt FROM z GROUP BY 1, 2, 3, 4) "
		"SELECT count(*) FROM h FULL JOIN y USING (subject, meter_id, day, dims) "
		"WHERE CASE h.agg WHEN 2 THEN h.mx IS DISTINCT FROM y.mx WHEN 3 THEN h.lt IS DISTINCT FROM y.lt "
		"  ELSE h.s IS DISTINCT FROM y.s END",
		tenant, tenant, tenant);
}

/* Wait (up to 25 s: an idle worker looks every 10 s) until every hourly rollup of the tenant's hours before
 * `before` (epoch seconds) is compacted: by the server's worker, or with `now` by passes run from here at
 * once; returns how many of its rollups are compacted. */
static long long compacted_by(const char *tenant, long long before, bool now)
{
	long long open = -1;
	for (int i = 0; i < 250; i++) {
		if (now)
			free(psql("SELECT tg_compact_rollups(now() - interval '1 hour', 100000)"));
		open = psql_num("SELECT count(*) FROM usage_rollups WHERE tenant_id = '%s' AND NOT compacted "
				 "AND hour < to_timestamp(%lld)", tenant, before);
		if (open == 0)
			break;
		nap_ms(100);
	}
	ck_assert_msg(open == 0, "%lld hourly rollups of tenant %s before %s still not compacted", open, tenant, iso(before));
	return psql_num("SELECT count(*) FROM usage_rollups WHERE tenant_id = '%s' AND compacted", tenant);
}

#define await_compacted(tenant, before) compacted_by(tenant, before, false)
#define compact_now(tenant, before) compacted_by(tenant, before, true)

/* used of limit lim for a customer, by a dry run of meter with these dimensions (JSON object text) */
static double used_by(const char *key, const char *cust, const char *meter, const char *dims, const char *lim)
{
	struct resp r = dry_run(key, cust, meter, dims);
	double u = jnum(lim_must(r.json, lim, NULL), "used");
	resp_free(&r);
	return u;
}

static double used_of(const char *key, const char *meter, const char *dims, const char *lim)
{
	return used_by(key, "c", meter, dims, lim);
}

/* The quotas over all time, as Redis counts them live and as they are rebuilt from PostgreSQL (days and the
 * hours not compacted yet). */
static void ck_totals(const struct tenant *t, double total, double g4, double peak, double last)
{
	static const char *const ids[] = {"total", "g4", "pk", "ls"};
	const double want[] = {total, g4, peak, last};
	for (int pass = 0; pass < 2; pass++) {
		double got[] = {used_of(t->key, "tokens", "{\"model\":\"gpt-4\"}", "total"),
				used_of(t->key, "tokens", "{\"model\":\"gpt-4\"}", "g4"), used_of(t->key, "peak", "{}", "pk"),
				used_of(t->key, "last", "{}", "ls")};
		for (int i = 0; i < 4; i++)
			ck_assert_msg(got[i] == want[i], "%s: %s %g, want %g", ids[i],
				      pass ? "rebuilt from PostgreSQL" : "live", got[i], want[i]);
		redis_drop_tenant(t->id);
	}
}

START_TEST(daily_rollups_add_up_to_their_hours)
{
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/meters", 201, "{\"id\":\"peak\",\"event_type\":\"llm\",\"aggregation\":\"max\",\"property\":\"tokens\"}");
	expectf(&S, t.key, "POST", "/v1/meters", 201, "{\"id\":\"last\",\"event_type\":\"llm\",\"aggregation\":\"latest\",\"property\":\"tokens\"}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"total\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"all_time\",\"limit\":1000,\"thresholds\":[0.5]}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"g4\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"all_time\",\"limit\":100000,\"filter\":{\"model\":\"gpt-4\"}}");
	expectf(&S, t.key, "POST", "/v1/limits", 201, "{\"id\":\"pk\",\"meter\":\"peak\",\"kind\":\"quota\",\"period\":\"all_time\",\"limit\":100000}");
	expectf(&S, t.key, "POST", "/v1/limits", 201, "{\"id\":\"ls\",\"meter\":\"last\",\"kind\":\"quota\",\"period\":\"all_time\",\"limit\":100000}");
	long long h = real_now() / 3600 * 3600, d3 = h - 3 * 86400, d2 = h - 2 * 86400;
	/* two hours three days ago, one two days ago, and this hour (which the worker leaves alone) */
	struct resp r = EVENTS(t.key,
			       "{\"events\":[{\"customer_id\":\"c\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":100,\"model\":\"gpt-4\"}},"
			       "{\"customer_id\":\"c\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":50,\"model\":\"gpt-4\"}},"
			       "{\"customer_id\":\"c\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":70,\"model\":\"gpt-3.5\"}},"
			       "{\"customer_id\":\"c\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":30,\"model\":\"gpt-4\"}},"
			       "{\"customer_id\":\"c\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":20,\"model\":\"gpt-3.5\"}}]}",
			       iso(d3 + 60), iso(d3 + 120), iso(d3 + 3600 + 10), iso(d2 + 5), iso(h + 1));
	ck_counts(&r, 5, 0, 0);
	resp_free(&r);
	ck_assert_int_gt(await_compacted(t.id, h - 3600), 0);
	ck_assert_int_gt(psql_num("SELECT count(*) FROM usage_rollups_daily WHERE tenant_id = '%s'", t.id), 0);
	ck_assert_int_eq(psql_num("SELECT count(*) FROM usage_rollups WHERE tenant_id = '%s' AND NOT compacted "
				   "AND hour = to_timestamp(%lld)", t.id, h), 6); /* tokens, peak, last of c and of the platform */
	ck_assert_int_eq(days_off(t.id), 0);
	ck_totals(&t, 270, 180, 100, 20);
	ck_assert_int_eq(psql_num("SELECT count(*) FROM webhook_events WHERE tenant_id = '%s' AND type = 'limit.threshold'", t.id), 0);

	/* late events: two into hours compacted already (the writer reopens their rollups; readers add what their
	 * days do not hold yet), one into a new hour of a compacted day (read as an hour until it is compacted) */
	r = EVENTS(t.key,
		   "{\"events\":[{\"customer_id\":\"c\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":25,\"model\":\"gpt-4\"}},"
		   "{\"customer_id\":\"c\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":5,\"model\":\"gpt-3.5\"}},"
		   "{\"customer_id\":\"c\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":400,\"model\":\"gpt-4\"}}]}",
		   iso(d3 + 180), iso(d3 + 2 * 3600 + 7), iso(d2 + 10));
	ck_counts(&r, 3, 0, 0);
	resp_free(&r);
	ck_assert_int_eq(days_off(t.id), 0);
	/* the batch crossed half of 1,000 over all time: its watch read the days, and fired with the exact usage */
	char sql[256];
	snprintf(sql, sizeof(sql), "SELECT data->>'usage' FROM webhook_events WHERE tenant_id = '%s' AND type = 'limit.threshold'",
		 t.id);
	char *fired = psql(sql);
	ck_assert_ptr_nonnull(fired);
	ck_assert_str_eq(fired, "700");
	free(fired);
	ck_totals(&t, 700, 605, 400, 20);
	compact_now(t.id, h - 3600);
	ck_assert_int_eq(days_off(t.id), 0);
	ck_totals(&t, 700, 605, 400, 20);
	/* daily series read days and open hours: each day's sum (tokens) and largest event (peak) */
	const struct {
		long long ts;
		double tokens;
	} all[] = {{d3 + 60, 100}, {d3 + 120, 50}, {d3 + 3600 + 10, 70}, {d2 + 5, 30}, {h + 1, 20},
		   {d3 + 180, 25}, {d3 + 2 * 3600 + 7, 5}, {d2 + 10, 400}};
	const long long first = d3 / 86400 * 86400, last = h / 86400 * 86400;
	static const char *const meters[] = {"tokens", "peak"};
	for (int m = 0; m < 2; m++) {
		char p[256];
		snprintf(p, sizeof(p), "/v1/usage?meter=%s&customer_id=c&granularity=day&from=%s&to=%s", meters[m],
			 iso(first), iso(last + 86400));
		r = req(&S, "GET", p, t.key, NULL, NULL);
		ck_status(r, 200);
		size_t days = 0;
		for (long long d = first; d <= last; d += 86400) {
			double want = 0;
			bool any = false;
			for (size_t k = 0; k < sizeof(all) / sizeof(all[0]); k++)
				if (all[k].ts / 86400 * 86400 == d) {
					want = m == 0 ? want + all[k].tokens : (all[k].tokens > want ? all[k].tokens : want);
					any = true;
				}
			if (!any)
				continue;
			char at[32];
			snprintf(at, sizeof(at), "data.%zu", days++);
			json_t *b = jpath(r.json, at);
			ck_assert_msg(b && time_parse(jstr(b, "start")) == d, "%s: no bucket for %s in %s", meters[m], iso(d), r.body);
			ck_qty(b, "value", want);
		}
		ck_assert_int_eq(json_array_size(jpath(r.json, "data")), days);
		resp_free(&r);
	}
	/* hourly series still come from the hours */
	char path[256];
	snprintf(path, sizeof(path), "/v1/usage?meter=tokens&customer_id=c&granularity=hour&from=%s&to=%s", iso(d3), iso(d3 + 3 * 3600));
	ck_series_values(t.key, path, 3, (const double[]){175, 70, 5});

	/* latest, where a day holds it: an event of the same instant written later wins (as in its hour), an
	 * older one does not */
	static const struct {
		long long ts;
		int tokens;
		double want;
	} late[] = {{60, 9, 9}, {60, 11, 11}, {30, 99, 11}};
	for (int i = 0; i < 3; i++) {
		r = EVENTS(t.key, "{\"customer_id\":\"d\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":%d}}",
			   iso(d3 + late[i].ts), late[i].tokens);
		ck_counts(&r, 1, 0, 0);
		resp_free(&r);
		for (int pass = 0; pass < 2; pass++) { /* reopened, then compacted again */
			if (pass)
				compact_now(t.id, h - 3600);
			ck_assert_int_eq(days_off(t.id), 0);
			redis_drop_tenant(t.id);
			double u = used_by(t.key, "d", "last", "{}", "ls");
			ck_assert_msg(u == late[i].want, "latest after event %d (%s): %g, want %g", i,
				      pass ? "compacted" : "open", u, late[i].want);
		}
	}
}
END_TEST

/* Events into past hours from 8 clients while compaction runs alongside (the worker, and passes of a few rows
 * from psql): the days never disagree with their hours, nothing is counted twice or lost, and no writer
 * waits in a deadlock with a compaction (a batch would fail with 503 conflict_retry). */
struct late {
	const char *key, *tenant;
	long long h;
	_Atomic int posting, bad, off;
};

static void late_worker(int i, void *arg)
{
	struct late *x = arg;

	if (i == 0) {
		while (atomic_load(&x->posting) > 0) {
			char *out = psql("SELECT compacted FROM tg_compact_rollups_pass(now() - interval '1 hour', 3, NULL, NULL, NULL, NULL)");
			free(out);
			if (days_off(x->tenant) != 0)
				atomic_fetch_add(&x->off, 1);
		}
		return;
	}
	for (int k = 0; k < 60; k++) {
		/* the 12 hours made and compacted before: each event reopens a compacted rollup or meets a pass */
		long long ts = x->h - 86400 - (long long)((k * 7 + i) % 12) * 5 * 3600 - 60;
		struct resp r = EVENTS(x->key, "{\"customer_id\":\"c\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":%d}}",
				       iso(ts), i);
		if (r.status != 200 || jint(r.json, "accepted") != 1) {
			fprintf(stderr, "late event: %ld %s\n", r.status, r.body);
			atomic_fetch_add(&x->bad, 1);
		}
		resp_free(&r);
	}
	atomic_fetch_sub(&x->posting, 1);
}

#define GAUGE "{\"customer_id\":\"c\",\"type\":\"gauge\",\"timestamp\":\"%s\",\"properties\":{\"v\":%d}}"

static void ck_seats(const char *key, double used)
{
	struct resp r = CHECK(key, "{\"customer_id\":\"c\",\"meter\":\"seats\",\"amount\":0,\"dry_run\":true}");
	ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
	ck_qty(lim_must(r.json, "lq", NULL), "used", used);
	resp_free(&r);
}

/* A quota on a latest meter counts the value of the latest instant, not the value sent last: events sent
 * out of order (a late one of an earlier instant) do not replace a later value, in the live counter as in the
 * rollups, after Redis lost it as before, and a consuming check's value is the latest as of now. */
START_TEST(latest_quota_counts_the_latest_instant)
{
	struct tenant t = tenant_new(&S, false);
	long long now = real_now();
	struct resp r;

	expectf(&S, t.key, "POST", "/v1/meters", 201, "{\"id\":\"seats\",\"event_type\":\"gauge\",\"aggregation\":\"latest\",\"property\":\"v\"}");
	expectf(&S, t.key, "POST", "/v1/limits", 201, "{\"id\":\"lq\",\"meter\":\"seats\",\"kind\":\"quota\",\"period\":\"all_time\",\"limit\":20}");
	ck_seats(t.key, 0); /* the counter is live in Redis from here */
	r = EVENTS(t.key, GAUGE, iso(now - 600), 9);
	ck_counts(&r, 1, 0, 0);
	resp_free(&r);
	r = EVENTS(t.key, GAUGE, iso(now - 1200), 11); /* sent later, of an earlier instant */
	ck_counts(&r, 1, 0, 0);
	resp_free(&r);
	r = EVENTS(t.key, GAUGE, iso(now - 3 * 3600), 50);
	ck_counts(&r, 1, 0, 0);
	resp_free(&r);
	ck_seats(t.key, 9);
	/* rebuilt from the rollups, with its instant: a late value still does not replace it */
	redis_drop_tenant(t.id);
	ck_seats(t.key, 9);
	r = EVENTS(t.key, GAUGE, iso(now - 900), 13);
	ck_counts(&r, 1, 0, 0);
	resp_free(&r);
	ck_seats(t.key, 9);
	/* a later instant does; and a consuming check is the latest as of now */
	r = EVENTS(t.key, GAUGE, iso(now - 60), 7);
	ck_counts(&r, 1, 0, 0);
	resp_free(&r);
	ck_seats(t.key, 7);
	expectf(&S, t.key, "POST", "/v1/check", 200, "{\"customer_id\":\"c\",\"meter\":\"seats\",\"amount\":5,\"consume\":true}");
	ck_seats(t.key, 5);
	r = EVENTS(t.key, GAUGE, iso(now - 30), 15);
	ck_counts(&r, 1, 0, 0);
	resp_free(&r);
	ck_seats(t.key, 5);
}
END_TEST

START_TEST(daily_rollups_exact_under_concurrent_compaction)
{
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"total\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"all_time\",\"limit\":1000000}");
	struct late x = {.key = t.key, .tenant = t.id, .h = real_now() / 3600 * 3600, .posting = 8};
	/* every hour the clients write into is compacted before they start: each moves a compacted rollup or
	 * one a compaction pass may be taking at that moment */
	for (int k = 0; k < 12; k++) {
		struct resp r = EVENTS(t.key, "{\"customer_id\":\"c\",\"type\":\"llm\",\"timestamp\":\"%s\",\"properties\":{\"tokens\":100}}",
				       iso(x.h - 86400 - (long long)k * 5 * 3600 - 60));
		ck_counts(&r, 1, 0, 0);
		resp_free(&r);
	}
	await_compacted(t.id, x.h - 3600);
	run_parallel(9, late_worker, &x);
	ck_assert_int_eq(atomic_load(&x.bad), 0);
	ck_assert_int_eq(atomic_load(&x.off), 0);
	compact_now(t.id, x.h - 3600);
	ck_assert_int_eq(days_off(t.id), 0);
	double want = 1200 + 60.0 * (1 + 2 + 3 + 4 + 5 + 6 + 7 + 8);
	ck_assert_int_eq(psql_num("SELECT sum(value) FROM usage_rollups_daily WHERE tenant_id = '%s' AND subject = 'c'", t.id), (long long)want);
	for (int pass = 0; pass < 2; pass++) {
		double u = used_of(t.key, "tokens", "{}", "total");
		ck_assert_msg(u == want, "%s: %g, want %g", pass ? "rebuilt" : "live", u, want);
		redis_drop_tenant(t.id);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("events_usage");
	TCase *tc = tcase_create("events_usage");

	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, events_single_batch_and_rejections);
	tcase_add_test(tc, events_batch_limits);
	tcase_add_test(tc, events_count_in_their_period);
	tcase_add_test(tc, usage_series_buckets_are_whole);
	tcase_add_test(tc, events_list_filters_and_pages);
	tcase_add_test(tc, events_list_default_range_on_the_tenant_clock);
	tcase_add_test(tc, events_unknown_customer_auto_create_off);
	tcase_add_test(tc, customer_usage_lists_applicable_limits);
	tcase_add_test(tc, usage_series_json_and_csv);
	tcase_add_test(tc, consuming_checks_are_recorded_usage);
	tcase_add_test(tc, daily_rollups_add_up_to_their_hours);
	tcase_add_test(tc, latest_quota_counts_the_latest_instant);
	tcase_add_test(tc, daily_rollups_exact_under_concurrent_compaction);
	suite_add_tcase(s, tc);
	return run_suite(s);
}

/* test_metering.c — the nasty cases of metering: concurrency, duplicates, crashes, lost Redis, exact decimals. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static struct srv S;

/* with committed event ids remembered in Redis, as a platform that sees many retries runs it */
static const char *const ids_remembered[] = {"TOLLGATE_EVENT_ID_TTL=3600", NULL};

static void setup(void)
{
	srv_start(&S, ids_remembered);
}

static void teardown(void)
{
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

struct race {
	const char *key;
	const char *body;
	_Atomic int ok, denied, other;
};

static void race_one(int i, void *arg)
{
	struct race *rc = arg;
	(void)i;
	struct resp r = req(&S, "POST", "/v1/check", rc->key, rc->body, NULL);
	if (r.status == 200)
		atomic_fetch_add(&rc->ok, 1);
	else if (r.status == 429)
		atomic_fetch_add(&rc->denied, 1);
	else
		atomic_fetch_add(&rc->other, 1);
	resp_free(&r);
}

START_TEST(concurrent_consume_respects_hard_limit)
{
	struct tenant t = metered("{\"id\":\"cap\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\",\"limit\":100}");
	struct race rc = {.key = t.key,
			  .body = "{\"customer_id\":\"u_race\",\"meter\":\"tokens\",\"amount\":1,\"consume\":true}"};

	run_parallel(300, race_one, &rc);
	ck_assert_int_eq(atomic_load(&rc.other), 0);
	ck_assert_int_eq(atomic_load(&rc.ok), 100);
	ck_assert_int_eq(atomic_load(&rc.denied), 200);
	ck_assert(usage_of(&t, "u_race", "cap") == 100);
	/* and the durable record agrees: exactly 100 events, 100 in the rollups */
	char sql[512];
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM events WHERE tenant_id = '%s' AND customer_id = 'u_race'", t.id);
	char *n = psql(sql);
	ck_assert_str_eq(n, "100");
	free(n);
	snprintf(sql, sizeof(sql),
		 "SELECT sum(value)::int FROM usage_rollups WHERE tenant_id = '%s' AND subject = 'u_race' AND meter_id = 'tokens'",
		 t.id);
	n = psql(sql);
	ck_assert_str_eq(n, "100");
	free(n);
}
END_TEST

struct dup {
	const char *key;
	_Atomic int accepted, duplicates, other;
};

static void dup_one(int i, void *arg)
{
	struct dup *d = arg;
	(void)i;
	struct resp r = req(&S, "POST", "/v1/events", d->key,
			    "{\"id\":\"evt-same\",\"customer_id\":\"u_dup\",\"type\":\"llm.completion\","
			    "\"properties\":{\"tokens\":7,\"model\":\"gpt-4\"}}",
			    NULL);
	if (r.status != 200) {
		atomic_fetch_add(&d->other, 1);
	} else {
		atomic_fetch_add(&d->accepted, (int)jint(r.json, "accepted"));
		atomic_fetch_add(&d->duplicates, (int)jint(r.json, "duplicates"));
	}
	resp_free(&r);
}

START_TEST(concurrent_duplicate_event_counts_once)
{
	struct tenant t = metered("{\"id\":\"m\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\",\"limit\":1000}");
	struct dup d = {.key = t.key};

	run_parallel(32, dup_one, &d);
	ck_assert_int_eq(atomic_load(&d.other), 0);
	ck_assert_int_eq(atomic_load(&d.accepted), 1);
	ck_assert_int_eq(atomic_load(&d.duplicates), 31);
	ck_assert(usage_of(&t, "u_dup", "m") == 7);
	/* a later retry is a duplicate too */
	struct resp r = req(&S, "POST", "/v1/events", t.key,
			    "{\"events\":[{\"id\":\"evt-same\",\"customer_id\":\"u_dup\",\"type\":\"llm.completion\","
			    "\"properties\":{\"tokens\":7}},{\"id\":\"evt-same\",\"customer_id\":\"u_dup\","
			    "\"type\":\"llm.completion\",\"properties\":{\"tokens\":7}}]}",
			    NULL);
	ck_status(r, 200);
	ck_assert_int_eq(jint(r.json, "accepted"), 0);
	ck_assert_int_eq(jint(r.json, "duplicates"), 2);
	resp_free(&r);
	ck_assert(usage_of(&t, "u_dup", "m") == 7);
}
END_TEST

/* ---- Idempotency-Key on the hot path ---- */

static struct resp keyed(const struct tenant *t, const char *path, const char *key, const char *body)
{
	char h[320];
	snprintf(h, sizeof(h), "Idempotency-Key: %s", key);
	const char *hs[] = {h, NULL};
	return req(&S, "POST", path, t->key, body, hs);
}

static long long events_of(const struct tenant *t, const char *customer)
{
	return psql_ll("SELECT count(*) FROM events WHERE tenant_id = '%s' AND customer_id = '%s'", t->id, customer);
}

/* A check or an event batch sent again with its Idempotency-Key is answered as the first time, headers
 * included, and changes nothing; the key with another body is refused; a refused key changes nothing. */
START_TEST(idempotency_key_on_checks_and_events)
{
	struct tenant t = metered("{\"id\":\"cap\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\",\"limit\":10}");
	const char *take4 = "{\"customer_id\":\"u_idem\",\"meter\":\"tokens\",\"amount\":4,\"consume\":true}";

	struct resp a = keyed(&t, "/v1/check", "chk-1", take4);
	ck_status(a, 200);
	ck_assert_ptr_null(resp_header(&a, "Idempotent-Replayed"));
	struct resp b = keyed(&t, "/v1/check", "chk-1", take4);
	ck_status(b, 200);
	ck_assert_str_eq(b.body, a.body);
	ck_assert_str_eq(resp_header(&b, "Idempotent-Replayed"), "true");
	ck_assert_str_eq(resp_header(&b, "RateLimit-Remaining"), "6");
	ck_assert_str_eq(resp_header(&b, "RateLimit-Policy"), "\"cap\";q=10;w=2592000");
	resp_free(&a);
	resp_free(&b);
	ck_assert(usage_of(&t, "u_idem", "cap") == 4);
	ck_assert_int_eq(events_of(&t, "u_idem"), 1);

	/* the same key with another amount, or on another route: refused, nothing consumed */
	b = keyed(&t, "/v1/check", "chk-1", "{\"customer_id\":\"u_idem\",\"meter\":\"tokens\",\"amount\":5,\"consume\":true}");
	ck_err(b, 409, "invalid_request", "idempotency_key_reused", "Idempotency-Key");
	resp_free(&b);
	b = keyed(&t, "/v1/events", "chk-1", "{\"customer_id\":\"u_idem\",\"type\":\"llm.completion\",\"properties\":{\"tokens\":1}}");
	ck_err(b, 409, "invalid_request", "idempotency_key_reused", "Idempotency-Key");
	resp_free(&b);
	ck_assert(usage_of(&t, "u_idem", "cap") == 4);

	/* a denial is replayed with its Retry-After, and a replay of it consumes nothing either */
	expect_status(&S, "POST", "/v1/check", t.key, take4, 200);
	a = keyed(&t, "/v1/check", "chk-2", take4);
	ck_status(a, 429);
	ck_assert_ptr_nonnull(resp_header(&a, "Retry-After"));
	char retry[32];
	snprintf(retry, sizeof(retry), "%s", resp_header(&a, "Retry-After"));
	b = keyed(&t, "/v1/check", "chk-2", take4);
	ck_status(b, 429);
	ck_assert_str_eq(b.body, a.body);
	ck_assert_str_eq(resp_header(&b, "Retry-After"), retry);
	resp_free(&a);
	resp_free(&b);
	ck_assert(usage_of(&t, "u_idem", "cap") == 8);

	/* events without ids: the key makes the retry count once */
	const char *ev = "{\"events\":[{\"customer_id\":\"u_ev\",\"type\":\"llm.completion\",\"properties\":{\"tokens\":3}},"
			 "{\"customer_id\":\"u_ev\",\"type\":\"llm.completion\",\"properties\":{\"tokens\":2}}]}";
	a = keyed(&t, "/v1/events", "batch-1", ev);
	ck_status(a, 200);
	ck_assert_int_eq(jint(a.json, "accepted"), 2);
	b = keyed(&t, "/v1/events", "batch-1", ev);
	ck_status(b, 200);
	ck_assert_str_eq(b.body, a.body);
	ck_assert_str_eq(resp_header(&b, "Idempotent-Replayed"), "true");
	resp_free(&a);
	resp_free(&b);
	ck_assert_int_eq(events_of(&t, "u_ev"), 2);
	ck_assert(usage_of(&t, "u_ev", "cap") == 5);

	/* a bad request is answered the same way again; a malformed key is refused before anything runs */
	a = keyed(&t, "/v1/check", "bad-1", "{\"customer_id\":\"u_idem\",\"amount\":-1}");
	ck_err(a, 400, "invalid_request", "invalid_parameter", "amount");
	b = keyed(&t, "/v1/check", "bad-1", "{\"customer_id\":\"u_idem\",\"amount\":-1}");
	ck_assert_str_eq(b.body, a.body);
	ck_assert_str_eq(resp_header(&b, "Idempotent-Replayed"), "true");
	resp_free(&a);
	resp_free(&b);
	char longkey[300];
	memset(longkey, 'k', 260);
	longkey[260] = '\0';
	b = keyed(&t, "/v1/check", longkey, take4);
	ck_err(b, 400, "invalid_request", "invalid_idempotency_key", "Idempotency-Key");
	resp_free(&b);
	ck_assert(usage_of(&t, "u_idem", "cap") == 8);
	ck_assert_int_eq(events_of(&t, "u_idem"), 2);
}
END_TEST

struct keyed_race {
	const struct tenant *t;
	long status[16];
	char body[16][1024];
};

static void keyed_one(int i, void *arg)
{
	struct keyed_race *k = arg;
	struct resp r = keyed(k->t, "/v1/check", "race-1",
			      "{\"customer_id\":\"u_krace\",\"meter\":\"tokens\",\"amount\":1,\"consume\":true}");
	k->status[i] = r.status;
	snprintf(k->body[i], sizeof(k->body[i]), "%s", r.body ? r.body : "");
	resp_free(&r);
}

/* 16 concurrent sends of one keyed consuming check: it runs once; the others replay it or are told it is
 * still running. */
START_TEST(idempotency_key_concurrent_checks_consume_once)
{
	struct tenant t = metered("{\"id\":\"cap\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\",\"limit\":100}");
	struct keyed_race k = {.t = &t};
	const char *first = NULL;

	run_parallel(16, keyed_one, &k);
	for (int i = 0; i < 16; i++) {
		ck_assert_msg(k.status[i] == 200 || k.status[i] == 409, "request %d: %ld %s", i, k.status[i], k.body[i]);
		if (k.status[i] == 409)
			ck_assert_ptr_nonnull(strstr(k.body[i], "idempotency_key_in_use"));
		else if (!first)
			first = k.body[i];
		else
			ck_assert_str_eq(k.body[i], first);
	}
	ck_assert_ptr_nonnull(first);
	ck_assert(usage_of(&t, "u_krace", "cap") == 1);
	ck_assert_int_eq(events_of(&t, "u_krace"), 1);
	/* once it is done, every retry is a replay */
	struct resp r = keyed(&t, "/v1/check", "race-1",
			      "{\"customer_id\":\"u_krace\",\"meter\":\"tokens\",\"amount\":1,\"consume\":true}");
	ck_status(r, 200);
	ck_assert_str_eq(resp_header(&r, "Idempotent-Replayed"), "true");
	resp_free(&r);
	ck_assert(usage_of(&t, "u_krace", "cap") == 1);
}
END_TEST

/* A keyed consuming check that times out (503) while its commit waits still commits; its key then holds the
 * real outcome, so the retry replays it instead of consuming again. */
START_TEST(idempotency_key_timed_out_check_is_not_run_twice)
{
	static const char *const quick[] = {"TOLLGATE_REQUEST_TIMEOUT_MS=100", NULL};
	struct srv s2 = {0};
	/* set up through S: with a 100 ms timeout, a busy machine times out a configuration write too */
	struct tenant t = tenant_new(&S, false);
	must_post(&S, t.key, "/v1/meters", "{\"id\":\"tokens\",\"event_type\":\"llm\",\"aggregation\":\"sum\",\"property\":\"tokens\"}");
	must_post(&S, t.key, "/v1/limits", "{\"id\":\"cap\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\",\"limit\":100}");
	const char *body = "{\"customer_id\":\"slow\",\"meter\":\"tokens\",\"amount\":5,\"consume\":true}";
	expect_status(&S, "POST", "/v1/check", t.key, "{\"customer_id\":\"slow\",\"meter\":\"tokens\",\"amount\":1,\"consume\":true}", 200);
	srv_start(&s2, quick);

	/* the customer's rollup row held for 2 s: the event writer waits on it */
	char where[256];
	struct psql_hold hold;
	snprintf(where, sizeof(where), "tenant_id = '%s' AND subject = 'slow'", t.id);
	psql_hold(&hold, "usage_rollups", where, 2);
	usleep(200 * 1000);
	const char *h[] = {"Idempotency-Key: slow-1", NULL};
	struct resp r = req(&s2, "POST", "/v1/check", t.key, body, h);
	ck_err(r, 503, "unavailable", "timeout", NULL);
	resp_free(&r);
	psql_hold_end(&hold);
	for (int i = 0; i < 50 && psql_ll("SELECT count(*) FROM idempotency_keys WHERE tenant_id = '%s' AND status = 200",
					   t.id) == 0; i++)
		usleep(100 * 1000);
	r = req(&s2, "POST", "/v1/check", t.key, body, h);
	ck_status(r, 200);
	ck_assert_str_eq(resp_header(&r, "Idempotent-Replayed"), "true");
	resp_free(&r);
	ck_assert(limit_used(&s2, t.key, "slow", "cap") == 6);
	srv_stop(&s2);
}
END_TEST

/* Many requests of two tenants land in shared writer batches; the live counters of a batch's
 * requests are moved together afterwards (one Redis call per tenant and batch). Every counter must
 * end exactly at the sum of what its requests recorded: the counters exist in Redis beforehand, so
 * what is read back is what the batches moved, not a rebuild from PostgreSQL. */
struct mixed {
	struct tenant a, b;
	_Atomic int failed;
};

static void mixed_one(int i, void *arg)
{
	struct mixed *m = arg;
	char body[512];
	const struct tenant *t = i % 3 == 0 ? &m->b : &m->a;
	/* request i: 2 events of customer c<i%4> with i+1 tokens each, and one of c<(i+1)%4> with 1 */
	snprintf(body, sizeof(body),
		 "{\"events\":[{\"id\":\"m%d-a\",\"customer_id\":\"c%d\",\"type\":\"llm.completion\",\"properties\":{\"tokens\":%d}},"
		 "{\"id\":\"m%d-b\",\"customer_id\":\"c%d\",\"type\":\"llm.completion\",\"properties\":{\"tokens\":%d}},"
		 "{\"id\":\"m%d-c\",\"customer_id\":\"c%d\",\"type\":\"llm.completion\",\"properties\":{\"tokens\":1}}]}",
		 i, i % 4, i + 1, i, i % 4, i + 1, i, (i + 1) % 4);
	struct resp r = req(&S, "POST", "/v1/events", t->key, body, NULL);
	if (r.status != 200 || jint(r.json, "accepted") != 3)
		atomic_fetch_add(&m->failed, 1);
	resp_free(&r);
}

static void check_status(const char *key, const char *body, long want)
{
	struct resp r = req(&S, "POST", "/v1/check", key, body, NULL);
	ck_assert_msg(r.status == want, "check %s: expected %ld, got %ld: %s", body, want, r.status, r.body);
	resp_free(&r);
}

START_TEST(concurrent_batches_move_live_counters_exactly)
{
	enum { N = 48 };
	static struct mixed m;
	const char *quota = "{\"id\":\"q\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\",\"limit\":100000}";
	long long want[2][4] = {{0}};

	m.a = metered(quota);
	m.b = metered(quota);
	atomic_store(&m.failed, 0);
	for (int c = 0; c < 4; c++) {
		char body[128];
		snprintf(body, sizeof(body), "{\"customer_id\":\"c%d\",\"meter\":\"tokens\",\"amount\":0}", c);
		check_status(m.a.key, body, 200); /* the counters exist in Redis now */
		check_status(m.b.key, body, 200);
	}
	for (int i = 0; i < N; i++) {
		int t = i % 3 == 0;
		want[t][i % 4] += 2 * (i + 1);
		want[t][(i + 1) % 4] += 1;
	}
	run_parallel(N, mixed_one, &m);
	ck_assert_int_eq(atomic_load(&m.failed), 0);
	for (int t = 0; t < 2; t++)
		for (int c = 0; c < 4; c++) {
			const struct tenant *tn = t ? &m.b : &m.a;
			char cust[8], body[160];
			snprintf(cust, sizeof(cust), "c%d", c);
			ck_assert_msg(usage_of(tn, cust, "q") == (double)want[t][c], "tenant %d customer %s: used %g, want %lld",
				      t, cust, usage_of(tn, cust, "q"), want[t][c]);
			/* and the hard quota decides on exactly that */
			snprintf(body, sizeof(body), "{\"customer_id\":\"%s\",\"meter\":\"tokens\",\"amount\":%lld}", cust,
				 100000 - want[t][c]);
			check_status(tn->key, body, 200);
			snprintf(body, sizeof(body), "{\"customer_id\":\"%s\",\"meter\":\"tokens\",\"amount\":%lld}", cust,
				 100000 - want[t][c] + 1);
			check_status(tn->key, body, 429);
		}
}
END_TEST

START_TEST(denied_check_consumes_nothing_elsewhere)
{
	struct tenant t = metered("{\"id\":\"big\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\",\"limit\":1000}");
	must_post(&S, t.key, "/v1/limits", "{\"id\":\"small\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"day\",\"limit\":10}");
	must_post(&S, t.key, "/v1/limits",
		"{\"id\":\"rpm\",\"kind\":\"rate\",\"meter\":\"requests\",\"limit\":100,\"window\":60}");

	struct resp r = req(&S, "POST", "/v1/check", t.key,
			    "{\"customer_id\":\"u_d\",\"meter\":\"tokens\",\"amount\":11,\"consume\":true}", NULL);
	ck_status(r, 429);
	ck_assert_str_eq(jstr(r.json, "code"), "quota_exceeded");
	ck_assert_str_eq(jstr(r.json, "binding_limit"), "small");
	resp_free(&r);
	ck_assert(usage_of(&t, "u_d", "big") == 0);
	ck_assert(usage_of(&t, "u_d", "small") == 0);
	/* the requests rate was not charged either: its bucket is still full */
	r = req(&S, "POST", "/v1/check", t.key, "{\"customer_id\":\"u_d\",\"dry_run\":true}", NULL);
	ck_status(r, 200);
	json_t *l;
	size_t i;
	json_array_foreach(jpath(r.json, "limits"), i, l)
		if (!strcmp(json_string_value(json_object_get(l, "id")), "rpm"))
			ck_assert(json_number_value(json_object_get(l, "remaining")) == 100);
	resp_free(&r);
}
END_TEST

/* Usage past the largest quantity (9e12: each event below it, their sum not): the counter stops at the
 * largest quantity, whether it was live in Redis or rebuilt from PostgreSQL, so a hard quota still denies
 * (the sum once read as 0 and let everything through); the series report it as a number. */
START_TEST(usage_past_the_largest_quantity_saturates)
{
	struct tenant t = tenant_new(&S, false);
	must_post(&S, t.key, "/v1/meters", "{\"id\":\"bytes\",\"event_type\":\"egress\",\"aggregation\":\"sum\",\"property\":\"bytes\"}");
	must_post(&S, t.key, "/v1/limits",
		  "{\"id\":\"cap\",\"kind\":\"quota\",\"meter\":\"bytes\",\"period\":\"month\",\"limit\":8500000000000}");
#define CHECK1 "{\"customer_id\":\"%s\",\"meter\":\"bytes\",\"amount\":1}"
	/* "warm": its counter is live in Redis before the events; "cold": rebuilt from the rollups at the check */
	const char *who[] = {"warm", "cold"};
	for (int w = 0; w < 2; w++) {
		if (w == 0) {
			struct resp r = reqf(&S, "POST", "/v1/check", t.key,
					     "{\"customer_id\":\"%s\",\"meter\":\"bytes\",\"amount\":1,\"consume\":true}", who[w]);
			ck_status(r, 200);
			resp_free(&r);
		}
		/* 1e12, then 8.9e12: below the limit after the first, past int64 micro-units (9.22e12) at the second */
		for (int i = 0; i < 2; i++) {
			struct resp r = reqf(&S, "POST", "/v1/events", t.key,
					     "{\"customer_id\":\"%s\",\"type\":\"egress\",\"properties\":{\"bytes\":%s}}",
					     who[w], i == 0 ? "1000000000000" : "8900000000000");
			ck_status(r, 200);
			ck_assert_int_eq(jint(r.json, "accepted"), 1);
			resp_free(&r);
		}
		struct resp r = reqf(&S, "POST", "/v1/check", t.key, CHECK1, who[w]);
		ck_status(r, 429);
		ck_assert_str_eq(jstr(r.json, "code"), "quota_exceeded");
		ck_assert_str_eq(jstr(r.json, "limits.0.id"), "cap");
		ck_assert_msg(jnum(r.json, "limits.0.used") > 8.99e12, "%s: used %f", who[w], jnum(r.json, "limits.0.used"));
		resp_free(&r);
		ck_assert_msg(usage_of(&t, who[w], "cap") > 8.99e12, "%s: usage %f", who[w], usage_of(&t, who[w], "cap"));
		char path[160];
		snprintf(path, sizeof(path), "/v1/usage?meter=bytes&customer_id=%s&granularity=month", who[w]);
		r = req(&S, "GET", path, t.key, NULL, NULL);
		ck_status(r, 200);
		ck_assert_msg(json_is_number(jpath(r.json, "data.0.value")), "%s", r.body);
		ck_assert(jnum(r.json, "data.0.value") > 8.99e12);
		resp_free(&r);
	}
#undef CHECK1
}
END_TEST

START_TEST(decimal_usage_is_exact)
{
	struct tenant t = metered("{\"id\":\"dec\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\",\"limit\":0.3}");

	for (int i = 0; i < 3; i++) {
		struct resp r = req(&S, "POST", "/v1/check", t.key,
				    "{\"customer_id\":\"u_x\",\"meter\":\"tokens\",\"amount\":0.1,\"consume\":true}", NULL);
		ck_status(r, 200);
		resp_free(&r);
	}
	struct resp r = req(&S, "POST", "/v1/check", t.key,
			    "{\"customer_id\":\"u_x\",\"meter\":\"tokens\",\"amount\":0.000001}", NULL);
	ck_status(r, 429);
	/* the body carries the exact decimal, not a float approximation */
	ck_assert_ptr_nonnull(strstr(r.body, "\"used\":0.3,"));
	ck_assert_ptr_nonnull(strstr(r.body, "\"remaining\":0,"));
	resp_free(&r);
	/* the same through events */
	struct tenant t2 = metered("{\"id\":\"dec\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\",\"limit\":0.3}");
	r = req(&S, "POST", "/v1/events", t2.key,
		"{\"events\":[{\"customer_id\":\"u_y\",\"type\":\"llm.completion\",\"properties\":{\"tokens\":0.1}},"
		"{\"customer_id\":\"u_y\",\"type\":\"llm.completion\",\"properties\":{\"tokens\":0.1}},"
		"{\"customer_id\":\"u_y\",\"type\":\"llm.completion\",\"properties\":{\"tokens\":0.1}}]}",
		NULL);
	ck_status(r, 200);
	ck_assert_int_eq(jint(r.json, "accepted"), 3);
	resp_free(&r);
	r = req(&S, "POST", "/v1/check", t2.key, "{\"customer_id\":\"u_y\",\"meter\":\"tokens\",\"amount\":0}", NULL);
	ck_status(r, 200);
	ck_assert_ptr_nonnull(strstr(r.body, "\"used\":0.3,"));
	resp_free(&r);
	expect_status(&S, "POST", "/v1/check", t2.key, "{\"customer_id\":\"u_y\",\"meter\":\"tokens\",\"amount\":0.000001}", 429);
}
END_TEST

/* ---- kill -9 while clients stream events ---- */

#define STREAMERS 8
struct streamer {
	const char *key;
	int index;
	_Atomic bool *stop;
	int acked;           /* events acknowledged by a 200 */
	char **acked_ids;
	int cap;
};

static void *stream_main(void *arg)
{
	struct streamer *st = arg;
	int seq = 0;

	while (!atomic_load(st->stop)) {
		char body[1024], ids[4][64];
		int n = 1 + seq % 4;
		size_t len = (size_t)snprintf(body, sizeof(body), "{\"events\":[");
		for (int k = 0; k < n; k++) {
			snprintf(ids[k], sizeof(ids[k]), "s%d-%d", st->index, seq + k);
			len += (size_t)snprintf(body + len, sizeof(body) - len,
						"%s{\"id\":\"%s\",\"customer_id\":\"c%d\",\"type\":\"llm.completion\","
						"\"properties\":{\"tokens\":1}}",
						k ? "," : "", ids[k], st->index);
		}
		snprintf(body + len, sizeof(body) - len, "]}");
		seq += n;
		struct resp r = req(&S, "POST", "/v1/events", st->key, body, NULL);
		if (r.status == 200 && jint(r.json, "accepted") == n) {
			for (int k = 0; k < n; k++) {
				if (st->acked == st->cap) {
					st->cap = st->cap ? st->cap * 2 : 256;
					st->acked_ids = realloc(st->acked_ids, sizeof(char *) * (size_t)st->cap);
				}
				st->acked_ids[st->acked++] = strdup(ids[k]);
			}
		} else if (r.status < 0) {
			resp_free(&r);
			break; /* the server is gone */
		}
		resp_free(&r);
	}
	return NULL;
}

START_TEST(kill9_loses_no_acknowledged_event)
{
	struct tenant t = metered("{\"id\":\"all\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"all_time\",\"limit\":100000000}");
	struct streamer st[STREAMERS];
	pthread_t th[STREAMERS];
	_Atomic bool stop = false;

	memset(st, 0, sizeof(st));
	for (int i = 0; i < STREAMERS; i++) {
		st[i].key = t.key;
		st[i].index = i;
		st[i].stop = &stop;
		pthread_create(&th[i], NULL, stream_main, &st[i]);
	}
	usleep(1500 * 1000);
	srv_kill9(&S);
	atomic_store(&stop, true);
	for (int i = 0; i < STREAMERS; i++)
		pthread_join(th[i], NULL);
	S.port = 0;
	srv_start(&S, ids_remembered);

	int total = 0;
	for (int i = 0; i < STREAMERS; i++) {
		char sql[512], customer[16], path[64];
		snprintf(customer, sizeof(customer), "c%d", i);
		snprintf(sql, sizeof(sql), "SELECT string_agg(id, ',') FROM events WHERE tenant_id = '%s' AND customer_id = '%s'",
			 t.id, customer);
		char *stored = psql(sql);
		ck_assert_ptr_nonnull(stored);
		size_t slen = strlen(stored);
		int stored_n = slen ? 1 : 0;
		for (size_t k = 0; k < slen; k++)
			stored_n += stored[k] == ',';
		for (int k = 0; k < st[i].acked; k++) {
			char needle[80];
			snprintf(needle, sizeof(needle), ",%s,", st[i].acked_ids[k]);
			size_t nl = strlen(needle);
			/* search ",id," in ",stored," */
			char *wrapped = malloc(slen + 3);
			sprintf(wrapped, ",%s,", stored);
			ck_assert_msg(memmem(wrapped, slen + 2, needle, nl) != NULL, "acknowledged event %s is missing",
				      st[i].acked_ids[k]);
			free(wrapped);
			free(st[i].acked_ids[k]);
		}
		ck_assert_int_ge(stored_n, st[i].acked);
		/* the usage after restart counts exactly what is stored */
		snprintf(path, sizeof(path), "%s", customer);
		ck_assert(usage_of(&t, path, "all") == stored_n);
		total += st[i].acked;
		free(st[i].acked_ids);
		free(stored);
	}
	ck_assert_int_gt(total, 50); /* the streams really ran before the kill */
}
END_TEST

/* POST one event (id, customer, tokens) and return {accepted, duplicates}. */
static void post_event(const struct srv *s, const char *key, const char *id, const char *customer, int *accepted,
		       int *duplicates)
{
	struct resp r = reqf(s, "POST", "/v1/events", key,
			     "{\"id\":\"%s\",\"customer_id\":\"%s\",\"type\":\"llm.completion\","
			     "\"properties\":{\"tokens\":5}}",
			     id, customer);
	ck_status(r, 200);
	*accepted = (int)jint(r.json, "accepted");
	*duplicates = (int)jint(r.json, "duplicates");
	resp_free(&r);
}

#define CACHED "tollgate_events_duplicate_cached_total "

/* A committed id is remembered in Redis: its retries are duplicates without a statement (the cached
 * counter moves). Without the Redis entry the unique key in PostgreSQL still decides, and the id is
 * remembered again. */
START_TEST(committed_ids_answer_duplicates_from_redis)
{
	struct tenant t = metered("{\"id\":\"m\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\",\"limit\":1000}");
	long long base = srv_metric(&S, CACHED); /* the server is shared by this file's tests */
	int acc, dup;
	char cmd[256];

	post_event(&S, t.key, "evt-cache", "u_c", &acc, &dup);
	ck_assert(acc == 1 && dup == 0);
	ck_assert_int_eq(srv_metric(&S, CACHED) - base, 0);
	post_event(&S, t.key, "evt-cache", "u_c", &acc, &dup);
	ck_assert(acc == 0 && dup == 1);
	ck_assert_int_eq(srv_metric(&S, CACHED) - base, 1);

	snprintf(cmd, sizeof(cmd), "DEL 'tg:{%s|ev}:evt-cache'", t.id);
	ck_assert_int_eq(redis_cmd(cmd), 0);
	post_event(&S, t.key, "evt-cache", "u_c", &acc, &dup);
	ck_assert(acc == 0 && dup == 1);
	ck_assert_int_eq(srv_metric(&S, CACHED) - base, 1); /* PostgreSQL said so */
	post_event(&S, t.key, "evt-cache", "u_c", &acc, &dup);
	ck_assert(acc == 0 && dup == 1);
	ck_assert_int_eq(srv_metric(&S, CACHED) - base, 2); /* remembered again */
	ck_assert(usage_of(&t, "u_c", "m") == 5);
}
END_TEST

/* Only committed ids are remembered: an event refused for its unknown customer is accepted once the
 * customer exists, and ids the server made are never looked up. */
START_TEST(refused_event_ids_are_not_remembered)
{
	struct tenant t = metered(NULL);
	long long base = srv_metric(&S, CACHED);
	int acc, dup;

	struct resp p = req(&S, "PATCH", "/v1/tenant", t.key, "{\"auto_create_customers\":false}", NULL);
	ck_status(p, 200);
	resp_free(&p);
	struct resp r = req(&S, "POST", "/v1/events", t.key,
			    "{\"id\":\"evt-early\",\"customer_id\":\"u_late\",\"type\":\"llm.completion\","
			    "\"properties\":{\"tokens\":5}}",
			    NULL);
	ck_status(r, 404); /* one event for nobody: customer_not_found, as a check */
	ck_assert_str_eq(jstr(r.json, "error.code"), "customer_not_found");
	resp_free(&r);
	must_post(&S, t.key, "/v1/customers", "{\"id\":\"u_late\"}");
	post_event(&S, t.key, "evt-early", "u_late", &acc, &dup);
	ck_assert(acc == 1 && dup == 0);
	post_event(&S, t.key, "evt-early", "u_late", &acc, &dup);
	ck_assert(acc == 0 && dup == 1);
	ck_assert_int_eq(srv_metric(&S, CACHED) - base, 1);
}
END_TEST

/* By default (TOLLGATE_EVENT_ID_TTL=0) nothing is remembered: the unique key alone decides. */
START_TEST(event_id_cache_off)
{
	struct srv off;
	int acc, dup;

	srv_start(&off, NULL);
	struct tenant t = tenant_new(&off, false);
	post_event(&off, t.key, "evt-off", "u_o", &acc, &dup);
	ck_assert(acc == 1 && dup == 0);
	post_event(&off, t.key, "evt-off", "u_o", &acc, &dup);
	ck_assert(acc == 0 && dup == 1);
	ck_assert_int_eq(srv_metric(&off, CACHED), 0);
	srv_stop(&off);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("metering");
	TCase *tc = tcase_create("nasty");

	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, concurrent_consume_respects_hard_limit);
	tcase_add_test(tc, concurrent_duplicate_event_counts_once);
	tcase_add_test(tc, idempotency_key_on_checks_and_events);
	tcase_add_test(tc, idempotency_key_concurrent_checks_consume_once);
	tcase_add_test(tc, idempotency_key_timed_out_check_is_not_run_twice);
	tcase_add_test(tc, concurrent_batches_move_live_counters_exactly);
	tcase_add_test(tc, denied_check_consumes_nothing_elsewhere);
	tcase_add_test(tc, decimal_usage_is_exact);
	tcase_add_test(tc, usage_past_the_largest_quantity_saturates);
	tcase_add_test(tc, kill9_loses_no_acknowledged_event);
	tcase_add_test(tc, committed_ids_answer_duplicates_from_redis);
	tcase_add_test(tc, refused_event_ids_are_not_remembered);
	tcase_add_test(tc, event_id_cache_off);
	suite_add_tcase(s, tc);
	return run_suite(s);
}

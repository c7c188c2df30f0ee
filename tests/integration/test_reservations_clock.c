/* test_reservations_clock.c — reservations (reserve, replace by an event, release, TTL expiry by the worker)
 * and test clocks (every quota period, rate windows, live tenants) over real HTTP. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#define MTEST_ONE_SERVER
#include "mtest.h"


#define CHECK(key, ...) callf(&S, key, "POST", "/v1/check", __VA_ARGS__)
#define EVENTS(key, ...) callf(&S, key, "POST", "/v1/events", __VA_ARGS__)

/* used/reserved/remaining of limit `lim` for `cust`, read by a dry run of amount 0. */
static void ck_q(const char *key, const char *cust, const char *lim, double used, double reserved, double remaining)
{
	struct resp r = CHECK(key, "{\"customer_id\":\"%s\",\"meter\":\"tokens\",\"amount\":0,\"dry_run\":true}", cust);
	ck_assert_msg(r.status == 200 || r.status == 429, "%ld %s", r.status, r.body);
	ck_state(r.json, lim, NULL, used, reserved, remaining);
	resp_free(&r);
}

/* A reserving check that must pass; its reservation id is copied to id. */
static void reserve(const char *key, const char *cust, double amount, int ttl, char *id, size_t size)
{
	struct resp r = CHECK(key, "{\"customer_id\":\"%s\",\"meter\":\"tokens\",\"amount\":%g,\"reserve\":true%s%.0d}", cust,
			      amount, ttl ? ",\"reservation_ttl\":" : "", ttl);
	ck_assert_msg(r.status == 200, "reserve %g: %ld %s", amount, r.status, r.body);
	const char *rid = jstr(r.json, "reservation_id");
	ck_assert_msg(strncmp(rid, "rsv_", 4) == 0 && strlen(rid) > 4, "reservation id %s", rid);
	snprintf(id, size, "%s", rid);
	resp_free(&r);
}

/* ---- 10. reservations ---- */

START_TEST(reservation_lifecycle)
{
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"q\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"month\",\"limit\":100}");
	struct resp r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":30,\"reserve\":true}");
	ck_status(r, 200);
	char r1[64];
	snprintf(r1, sizeof(r1), "%s", jstr(r.json, "reservation_id"));
	ck_assert_msg(strncmp(r1, "rsv_", 4) == 0, "reservation_id %s", r1);
	ck_assert(json_is_true(jpath(r.json, "allowed")));
	ck_state(r.json, "q", NULL, 0, 30, 70);
	ck_assert_str_eq(resp_header(&r, "RateLimit-Remaining"), "70");
	resp_free(&r);

	/* a second check sees used + reserved */
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":71,\"dry_run\":true}");
	ck_status(r, 429);
	ck_state(r.json, "q", NULL, 0, 30, 70);
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":70,\"dry_run\":true}");
	ck_status(r, 200);
	ck_assert(json_is_null(jpath(r.json, "reservation_id")));
	resp_free(&r);
	char r2[64];
	reserve(t.key, "c", 50, 0, r2, sizeof(r2));
	ck_assert_str_ne(r1, r2);
	ck_q(t.key, "c", "q", 0, 80, 20);
	/* a reservation that does not fit is denied and holds nothing */
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":21,\"reserve\":true}");
	ck_status(r, 429);
	ck_assert(json_is_null(jpath(r.json, "reservation_id")));
	resp_free(&r);
	ck_q(t.key, "c", "q", 0, 80, 20);

	/* an event naming r1 replaces its hold with the actual usage */
	r = EVENTS(t.key, "{\"customer_id\":\"c\",\"type\":\"llm\",\"reservation_id\":\"%s\",\"properties\":{\"tokens\":20}}", r1);
	ck_status(r, 200);
	ck_assert_int_eq(jint(r.json, "accepted"), 1);
	resp_free(&r);
	ck_q(t.key, "c", "q", 20, 50, 30);
	/* releasing r1 now: it is gone */
	char path[128];
	snprintf(path, sizeof(path), "/v1/reservations/%s/release", r1);
	expect_status(&S, "POST", path, t.key, NULL, 404);
	ck_q(t.key, "c", "q", 20, 50, 30);
	/* release r2 */
	snprintf(path, sizeof(path), "/v1/reservations/%s/release", r2);
	expect_status(&S, "POST", path, t.key, NULL, 200);
	ck_q(t.key, "c", "q", 20, 0, 80);
	expect_status(&S, "POST", path, t.key, NULL, 404);
	ck_q(t.key, "c", "q", 20, 0, 80);
	/* unknown ids; another tenant's */
	r = req(&S, "POST", "/v1/reservations/rsv_doesnotexist/release", t.key, NULL, NULL);
	ck_status(r, 404);
	ck_assert_str_eq(jstr(r.json, "error.type"), "invalid_request");
	resp_free(&r);
	expect_status(&S, "POST", "/v1/reservations/nope/release", t.key, NULL, 404);
	char r3[64];
	reserve(t.key, "c", 10, 0, r3, sizeof(r3));
	struct tenant o = tokens_tenant(false);
	snprintf(path, sizeof(path), "/v1/reservations/%s/release", r3);
	expect_status(&S, "POST", path, o.key, NULL, 404);
	ck_q(t.key, "c", "q", 20, 10, 70);
	/* the durable usage is only what the event recorded */
	r = req(&S, "GET", "/v1/customers/c/usage", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_state(r.json, "q", NULL, 20, 10, 70);
	resp_free(&r);
}
END_TEST

START_TEST(reservation_bad_inputs)
{
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"q\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"month\",\"limit\":100}");
	/* without an amount: 1, as API.md says (it was refused) */
	struct resp r = CHECK(t.key, "{\"customer_id\":\"d\",\"meter\":\"tokens\",\"reserve\":true}");
	ck_status(r, 200);
	ck_state(r.json, "q", NULL, 0, 1, 99);
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":5,\"reserve\":true,\"reservation_ttl\":86401}");
	ck_bad(r, 400, "invalid_parameter", "reservation_ttl");
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":5,\"reserve\":true,\"reservation_ttl\":\"60\"}");
	ck_bad(r, 400, "invalid_parameter", "reservation_ttl");
	resp_free(&r);
	/* a dry run reserves nothing */
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":5,\"reserve\":true,\"dry_run\":true}");
	ck_status(r, 200);
	ck_assert(json_is_null(jpath(r.json, "reservation_id")));
	resp_free(&r);
	ck_q(t.key, "c", "q", 0, 0, 100);
	/* an event naming a reservation that does not exist is still usage */
	r = EVENTS(t.key, "{\"customer_id\":\"c\",\"type\":\"llm\",\"reservation_id\":\"rsv_nothing\",\"properties\":{\"tokens\":4}}");
	ck_status(r, 200);
	ck_assert_int_eq(jint(r.json, "accepted"), 1);
	resp_free(&r);
	ck_q(t.key, "c", "q", 4, 0, 96);
}
END_TEST

START_TEST(reservation_named_by_another_customers_event)
{
	/* an event settles only its own customer's reservation: bob's event naming alice's is bob's usage, and
	 * alice's hold stays hers until she releases it (it once vanished, and her release said 404) */
	struct tenant t = tokens_tenant(false);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"q\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"month\",\"limit\":100}");
	char id[64], path[128];
	reserve(t.key, "alice", 60, 0, id, sizeof(id));
	ck_q(t.key, "alice", "q", 0, 60, 40);
	struct resp r = EVENTS(t.key, "{\"customer_id\":\"bob\",\"type\":\"llm\",\"reservation_id\":\"%s\",\"properties\":{\"tokens\":5}}", id);
	ck_status(r, 200);
	ck_assert_int_eq(jint(r.json, "accepted"), 1);
	resp_free(&r);
	ck_q(t.key, "bob", "q", 5, 0, 95);
	ck_q(t.key, "alice", "q", 0, 60, 40);
	snprintf(path, sizeof(path), "/v1/reservations/%s/release", id);
	r = req(&S, "POST", path, t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "customer_id"), "alice");
	resp_free(&r);
	ck_q(t.key, "alice", "q", 0, 0, 100);
	/* and alice's own event settles hers */
	reserve(t.key, "alice", 30, 0, id, sizeof(id));
	r = EVENTS(t.key, "{\"customer_id\":\"alice\",\"type\":\"llm\",\"reservation_id\":\"%s\",\"properties\":{\"tokens\":20}}", id);
	ck_status(r, 200);
	resp_free(&r);
	ck_q(t.key, "alice", "q", 20, 0, 80);
}
END_TEST

START_TEST(reservation_expires_on_test_clock)
{
	struct tenant t = tokens_tenant(true);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"q\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"all_time\",\"limit\":100}");
	char keep[64], gone[64];
	reserve(t.key, "c", 40, 300, gone, sizeof(gone));
	reserve(t.key, "c", 25, 900, keep, sizeof(keep));
	ck_q(t.key, "c", "q", 0, 65, 35);
	/* real time alone does not expire it */
	nap_ms(1500);
	ck_q(t.key, "c", "q", 0, 65, 35);
	/* the advance lets go of what its new time expired before it answers (not at the worker's next pass) */
	clock_advance(&S, t.key, 301);
	ck_q(t.key, "c", "q", 0, 25, 75);
	char path[128];
	snprintf(path, sizeof(path), "/v1/reservations/%s/release", gone);
	expect_status(&S, "POST", path, t.key, NULL, 404);
	/* the other one, past its TTL too */
	clock_advance(&S, t.key, 600);
	ck_q(t.key, "c", "q", 0, 0, 100);
}
END_TEST

/* A hold outlives the period it was made in: at 23:59:50 a reservation of 90 on a daily quota of 100 with a ten
 * minute TTL still holds at 00:00:10, in the new day's counter (it used to vanish there, so a hard quota could be
 * passed: 90 reserved, then 100 more allowed); released, settled or expired, it goes from that day's counter. */
START_TEST(holds_cross_into_the_next_period)
{
	struct tenant t = tokens_tenant(true);
	char r1[64], r2[64], r3[64], path[128];
	struct resp r;

	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"qd\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":100}");
	long long now = clock_now(&S, t.key);
	clock_advance(&S, t.key, (now / 86400 + 1) * 86400 - 10 - now); /* 23:59:50 */
	reserve(t.key, "c", 40, 600, r1, sizeof(r1));
	reserve(t.key, "c", 30, 600, r2, sizeof(r2));
	reserve(t.key, "c", 20, 60, r3, sizeof(r3));
	ck_q(t.key, "c", "qd", 0, 90, 10);
	clock_advance(&S, t.key, 20); /* 00:00:10: a new day, the holds still there */
	ck_q(t.key, "c", "qd", 0, 90, 10);
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":11,\"dry_run\":true}");
	ck_status(r, 429);
	resp_free(&r);
	/* released: from the new day's counter */
	snprintf(path, sizeof(path), "/v1/reservations/%s/release", r1);
	expect_status(&S, "POST", path, t.key, NULL, 200);
	ck_q(t.key, "c", "qd", 0, 50, 50);
	/* settled by an event of the new day: the hold becomes its usage */
	r = EVENTS(t.key, "{\"customer_id\":\"c\",\"type\":\"llm\",\"reservation_id\":\"%s\",\"properties\":{\"tokens\":25}}", r2);
	ck_status(r, 200);
	resp_free(&r);
	ck_q(t.key, "c", "qd", 25, 20, 55);
	/* expired */
	clock_advance(&S, t.key, 60);
	ck_q(t.key, "c", "qd", 25, 0, 75);
	/* and Redis losing the counter: rebuilt with what still holds, from any day (none now; one more first) */
	reserve(t.key, "c", 5, 600, r3, sizeof(r3));
	redis_drop_tenant(t.id);
	ck_q(t.key, "c", "qd", 25, 5, 70);
}
END_TEST

/* ---- 11. test clocks ---- */

struct period_case {
	const char *period;
	long long length; /* 0: a month */
};

START_TEST(test_clock_crosses_every_period)
{
	static const struct period_case cases[] = {{"hour", 3600}, {"day", 86400}, {"week", 7 * 86400}, {"month", 0}};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *p = cases[i].period;
		struct tenant t = tokens_tenant(true);
		expectf(&S, t.key, "POST", "/v1/limits", 201,
			"{\"id\":\"q\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"%s\",\"limit\":100}", p);
		expectf(&S, t.key, "POST", "/v1/limits", 201,
			"{\"id\":\"forever\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"all_time\",\"limit\":1000}");
		struct resp r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":100,\"consume\":true}");
		ck_assert_msg(r.status == 200, "%s: %ld %s", p, r.status, r.body);
		long long resets = time_parse(jstr(lim_must(r.json, "q", NULL), "resets_at"));
		resp_free(&r);
		long long now = clock_now(&S, t.key);
		r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1,\"consume\":true}");
		ck_assert_msg(r.status == 429, "%s: %ld %s", p, r.status, r.body);
		long long ra = jint(r.json, "retry_after");
		ck_assert_msg(ra >= resets - now - 2 && ra <= resets - now + 2, "%s: retry_after %lld, period ends in %lld", p, ra,
			      resets - now);
		resp_free(&r);
		/* the boundary: UTC calendar */
		if (!strcmp(p, "hour"))
			ck_assert_int_eq(resets % 3600, 0);
		else
			ck_assert_int_eq(resets % 86400, 0);
		if (!strcmp(p, "week"))
			ck_assert_msg(((resets / 86400) + 3) % 7 == 0, "week resets on %s, not a Monday", iso(resets));
		if (!strcmp(p, "month")) {
			ck_assert_int_eq(resets, next_month_start(now));
		}
		/* a second before the end: still denied */
		if (ra > 3) {
			clock_advance(&S, t.key, ra - 3);
			r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1,\"dry_run\":true}");
			ck_assert_msg(r.status == 429, "%s: 3 s before the end: %ld %s", p, r.status, r.body);
			resp_free(&r);
			clock_advance(&S, t.key, 4);
		} else {
			clock_advance(&S, t.key, ra + 1);
		}
		/* the next period: room again, resets_at moved by one period */
		r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1,\"consume\":true}");
		ck_assert_msg(r.status == 200, "%s: after the period: %ld %s", p, r.status, r.body);
		ck_state(r.json, "q", NULL, 1, 0, 99);
		ck_state(r.json, "forever", NULL, 101, 0, 899);
		long long next = time_parse(jstr(lim_must(r.json, "q", NULL), "resets_at"));
		if (cases[i].length)
			ck_assert_int_eq(next - resets, cases[i].length);
		else
			ck_assert_int_eq(next, next_month_start(resets));
		resp_free(&r);
		/* usage reads agree */
		r = req(&S, "GET", "/v1/customers/c/usage", t.key, NULL, NULL);
		ck_status(r, 200);
		ck_state(r.json, "q", NULL, 1, 0, 99);
		resp_free(&r);
		/* and so does a rebuild from PostgreSQL of this tenant's counters */
		redis_drop_tenant(t.id);
		r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":0,\"dry_run\":true}");
		ck_status(r, 200);
		ck_state(r.json, "q", NULL, 1, 0, 99);
		ck_state(r.json, "forever", NULL, 101, 0, 899);
		resp_free(&r);
	}
}
END_TEST

START_TEST(test_clock_month_quota_used_up)
{
	struct tenant t = tokens_tenant(true);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"m\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"month\",\"limit\":1000}");
	for (int i = 0; i < 4; i++) {
		struct resp r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":250,\"consume\":true}");
		ck_status(r, 200);
		resp_free(&r);
	}
	struct resp r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1}");
	ck_status(r, 429);
	resp_free(&r);
	long long now = clock_now(&S, t.key);
	long long nm = next_month_start(now);
	long long at = clock_advance(&S, t.key, nm - now + 5);
	ck_assert_msg(at >= nm && at < nm + 60, "clock %s, want just after %s", iso(at), iso(nm));
	r = req(&S, "GET", "/v1/test_clock", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_ge(time_parse(jstr(r.json, "now")), at);
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1000,\"consume\":true}");
	ck_status(r, 200);
	ck_state(r.json, "m", NULL, 1000, 0, 0);
	ck_assert_int_eq(time_parse(jstr(lim_must(r.json, "m", NULL), "resets_at")), next_month_start(nm));
	resp_free(&r);
	/* the events of the new month carry the tenant's time */
	r = req(&S, "GET", "/v1/events?customer_id=c&limit=1", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_ge(time_parse(jstr(r.json, "data.0.timestamp")), nm);
	resp_free(&r);
	/* the clock only moves forward */
	r = callf(&S, t.key, "POST", "/v1/test_clock/advance", "{\"seconds\":-60}");
	ck_bad(r, 400, "invalid_parameter", "seconds");
	resp_free(&r);
	r = callf(&S, t.key, "POST", "/v1/test_clock/advance", "{\"seconds\":0}");
	ck_bad(r, 400, "invalid_parameter", "seconds");
	resp_free(&r);
	r = callf(&S, t.key, "POST", "/v1/test_clock/advance", "{\"seconds\":\"60\"}");
	ck_bad(r, 400, "invalid_parameter", "seconds");
	resp_free(&r);
	r = callf(&S, t.key, "POST", "/v1/test_clock/advance", "{}");
	ck_bad(r, 400, "missing_parameter", "seconds");
	resp_free(&r);
	ck_assert_int_ge(clock_now(&S, t.key), at);
}
END_TEST

START_TEST(test_clock_rate_windows)
{
	/* windows run on the tenant's clock too */
	struct tenant t = tokens_tenant(true);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"tb\",\"meter\":\"requests\",\"kind\":\"rate\",\"window\":3600,\"limit\":2}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"sw\",\"meter\":\"tokens\",\"kind\":\"rate\",\"window\":86400,\"limit\":10,\"algorithm\":\"sliding_window\"}");
	struct resp r;
	for (int i = 0; i < 2; i++) {
		r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":5}");
		ck_status(r, 200);
		resp_free(&r);
	}
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1}");
	ck_status(r, 429);
	ck_assert_str_eq(jstr(r.json, "code"), "rate_limited");
	resp_free(&r);
	/* half an hour refills one request, but the day window is still full */
	clock_advance(&S, t.key, 1800);
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1}");
	ck_status(r, 429);
	ck_assert_str_eq(jstr(r.json, "binding_limit"), "sw");
	resp_free(&r);
	r = CHECK(t.key, "{\"customer_id\":\"c\"}");
	ck_status(r, 200);
	resp_free(&r);
	clock_advance(&S, t.key, 86400 + 60);
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":10}");
	ck_status(r, 200);
	resp_free(&r);
}
END_TEST

/* A sliding window is full again when its newest unit leaves it: resets_at and RateLimit-Reset say when
 * (they said when the oldest left, or a whole window from now for the sub-bucket form). */
static void ck_reset(const char *key, const char *body, const char *lim, long long want_at, int slack)
{
	struct resp r = CHECK(key, "%s", body);
	ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
	long long at = time_parse(jstr(lim_must(r.json, lim, NULL), "resets_at"));
	ck_assert_msg(at >= want_at && at <= want_at + slack, "%s resets at %lld, not %lld (+%d): %s", lim, at, want_at,
		      slack, r.body);
	if (!strcmp(jstr(r.json, "binding_limit"), lim)) { /* the headers are the binding limit's */
		const char *h = resp_header(&r, "RateLimit-Reset");
		long long now = clock_now(&S, key);
		ck_assert_msg(h && atoll(h) >= want_at - now && atoll(h) <= want_at - now + slack + 1,
			      "RateLimit-Reset %s, %lld s to go", h ? h : "(none)", want_at - now);
	}
	resp_free(&r);
}

START_TEST(sliding_windows_reset_when_their_newest_unit_leaves)
{
	struct tenant t = tokens_tenant(true);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"log\",\"meter\":\"requests\",\"kind\":\"rate\",\"window\":10,\"limit\":3,\"algorithm\":\"sliding_window\"}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"sub\",\"meter\":\"tokens\",\"kind\":\"rate\",\"window\":100,\"limit\":5000,\"algorithm\":\"sliding_window\"}");
	/* the exact log: units at t, t+4, t+5; full again at t+15 */
	long long t0 = clock_now(&S, t.key);
	expectf(&S, t.key, "POST", "/v1/check", 200, "{\"customer_id\":\"c\"}");
	clock_advance(&S, t.key, 4);
	expectf(&S, t.key, "POST", "/v1/check", 200, "{\"customer_id\":\"c\"}");
	clock_advance(&S, t.key, 1);
	ck_reset(t.key, "{\"customer_id\":\"c\"}", "log", t0 + 15, 1);
	/* the sub-buckets: 3,000 at u; read 30 s and 60 s later, still full again at u + 100 (one sub-bucket of slack) */
	clock_advance(&S, t.key, 20);
	long long u = clock_now(&S, t.key);
	expectf(&S, t.key, "POST", "/v1/check", 200, "{\"customer_id\":\"d\",\"meter\":\"tokens\",\"amount\":3000}");
	clock_advance(&S, t.key, 30);
	ck_reset(t.key, "{\"customer_id\":\"d\",\"meter\":\"tokens\",\"amount\":1,\"dry_run\":true}", "sub", u + 100, 2);
	clock_advance(&S, t.key, 30);
	ck_reset(t.key, "{\"customer_id\":\"d\",\"meter\":\"tokens\",\"amount\":1,\"dry_run\":true}", "sub", u + 100, 2);
}
END_TEST

START_TEST(test_clock_live_tenant_refused)
{
	struct tenant t = tokens_tenant(false);
	struct resp r = callf(&S, t.key, "POST", "/v1/test_clock/advance", "{\"seconds\":3600}");
	ck_status(r, 400);
	ck_assert_str_eq(jstr(r.json, "error.type"), "invalid_request");
	resp_free(&r);
	r = req(&S, "GET", "/v1/test_clock", t.key, NULL, NULL);
	ck_assert_msg(r.status == 400 || r.status == 403, "%ld %s", r.status, r.body);
	resp_free(&r);
	/* and nothing moved: a live tenant's periods are real time */
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"h\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"hour\",\"limit\":10}");
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1}");
	ck_status(r, 200);
	ck_assert_int_eq(time_parse(jstr(lim_must(r.json, "h", NULL), "resets_at")), (real_now() / 3600 + 1) * 3600);
	resp_free(&r);
	/* a test-mode tenant's clock starts at the real time */
	struct tenant m = tokens_tenant(true);
	long long c = clock_now(&S, m.key);
	ck_assert_msg(c >= real_now() - 5 && c <= real_now() + 1, "clock %lld vs %lld", c, real_now());
}
END_TEST

/* The most one advance may move (10 years), and where the clock ends: 9999-12-31T23:59:59Z. */
#define ADVANCE_MAX (10LL * 366 * 86400)
#define CLOCK_END 253399622399LL /* 9999-11-30T23:59:59Z */

/* Past 285 years of advances the offset (ms) is beyond a quantity's 9e12: it was read through fixed
 * point, refused, and the checks fell back to real time while GET /v1/test_clock went on. */
START_TEST(test_clock_centuries_ahead)
{
	struct tenant t = tokens_tenant(true);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"d\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":10}");
	for (int i = 0; i < 30; i++) /* 30 x 10 years: an offset of 9.49e12 ms */
		clock_advance(&S, t.key, ADVANCE_MAX);
	long long now = clock_now(&S, t.key);
	ck_assert_msg(now > real_now() + 9000000000LL, "clock %s", iso(now));
	struct resp r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":4,\"consume\":true}");
	ck_status(r, 200);
	long long resets = time_parse(jstr(lim_must(r.json, "d", NULL), "resets_at"));
	ck_assert_msg(resets > now && resets <= now + 86400 + 5, "the day of %s resets at %s", iso(now), iso(resets));
	resp_free(&r);
	/* and the next day of that clock starts afresh */
	clock_advance(&S, t.key, resets - clock_now(&S, t.key) + 1);
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":10,\"consume\":true}");
	ck_status(r, 200);
	ck_state(r.json, "d", NULL, 10, 0, 0);
	resp_free(&r);
}
END_TEST

struct race {
	const char *key;
	_Atomic int ok, refused;
};

static void advance_once(int i, void *arg)
{
	struct race *x = arg;
	struct resp r = callf(&S, x->key, "POST", "/v1/test_clock/advance", "{\"seconds\":%lld}", ADVANCE_MAX);

	(void)i;
	if (r.status == 200)
		atomic_fetch_add(&x->ok, 1);
	else if (r.status == 400 && !strcmp(jstr(r.json, "error.param"), "seconds"))
		atomic_fetch_add(&x->refused, 1);
	else
		fprintf(stderr, "advance: %ld %s\n", r.status, r.body);
	resp_free(&r);
}

static long long offset_ms(const struct tenant *t)
{
	return psql_ll("SELECT clock_offset_ms FROM tenants WHERE id = '%s'", t->id);
}

/* The clock stops at 9999-11-30T23:59:59Z: an advance past it is refused (400 naming seconds) and
 * changes nothing, advances at once cannot pass it together, and real time does not carry it on. */
START_TEST(test_clock_ends_in_9999)
{
	struct tenant t = tokens_tenant(true);
	static struct race x;
	struct resp r;

	/* 25 years before the end (set directly: 800 advances of 10 years would take a while) */
	ck_assert_int_eq(psql_ll("UPDATE tenants SET clock_offset_ms = %lld - (extract(epoch FROM now()) * 1000)::bigint "
				 "WHERE id = '%s' RETURNING 1",
				 (CLOCK_END - 25LL * 365 * 86400) * 1000, t.id),
			 1);
	x.key = t.key;
	run_parallel(8, advance_once, &x);
	ck_assert_int_eq(atomic_load(&x.ok), 2);
	ck_assert_int_eq(atomic_load(&x.refused), 6);
	long long now = clock_now(&S, t.key);
	ck_assert_msg(now <= CLOCK_END && now > CLOCK_END - 6LL * 366 * 86400, "clock %s", iso(now));

	long long before = offset_ms(&t);
	r = callf(&S, t.key, "POST", "/v1/test_clock/advance", "{\"seconds\":%lld}", CLOCK_END - now + 10);
	ck_bad(r, 400, "invalid_parameter", "seconds");
	ck_assert_ptr_nonnull(strstr(jstr(r.json, "error.message"), "9999-11-30T23:59:59Z"));
	resp_free(&r);
	ck_assert_int_eq(offset_ms(&t), before);
	/* up to two seconds before the end, then wait: the clock stops at the end */
	now = clock_advance(&S, t.key, CLOCK_END - clock_now(&S, t.key) - 2);
	ck_assert_msg(now >= CLOCK_END - 4 && now <= CLOCK_END, "clock %s", iso(now));
	r = callf(&S, t.key, "POST", "/v1/test_clock/advance", "{\"seconds\":10}");
	ck_bad(r, 400, "invalid_parameter", "seconds");
	resp_free(&r);
	sleep(4);
	ck_assert_int_eq(clock_now(&S, t.key), CLOCK_END);
	r = req(&S, "GET", "/v1/tenant", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "test_clock"), "9999-11-30T23:59:59Z");
	resp_free(&r);
	/* checks still decide at the end of time */
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"h\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"all_time\",\"limit\":10}");
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":11}");
	ck_status(r, 429);
	resp_free(&r);
	/* and every time they show keeps a four-digit year: the month ends on 9999-12-01 */
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"m\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"month\",\"limit\":10}");
	r = CHECK(t.key, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":1}");
	ck_status(r, 200);
	ck_assert_str_eq(jstr(lim_must(r.json, "m", NULL), "resets_at"), "9999-12-01T00:00:00Z");
	resp_free(&r);
	/* a stopped clock never reaches a reservation's expiry: real time does not release it either */
	char id[64];
	reserve(t.key, "c", 3, 1, id, sizeof(id));
	sleep(3);
	ck_q(t.key, "c", "m", 0, 3, 7);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("reservations_clock");
	TCase *tc = tcase_create("reservations_clock");

	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, reservation_lifecycle);
	tcase_add_test(tc, reservation_bad_inputs);
	tcase_add_test(tc, reservation_named_by_another_customers_event);
	tcase_add_test(tc, reservation_expires_on_test_clock);
	tcase_add_test(tc, holds_cross_into_the_next_period);
	tcase_add_test(tc, test_clock_crosses_every_period);
	tcase_add_test(tc, test_clock_month_quota_used_up);
	tcase_add_test(tc, test_clock_rate_windows);
	tcase_add_test(tc, sliding_windows_reset_when_their_newest_unit_leaves);
	tcase_add_test(tc, test_clock_live_tenant_refused);
	tcase_add_test(tc, test_clock_centuries_ahead);
	tcase_add_test(tc, test_clock_ends_in_9999);
	suite_add_tcase(s, tc);
	return run_suite(s);
}

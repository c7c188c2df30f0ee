/* test_balances_flush.c — Redis is a cache for balances too: after FLUSHALL every balance reads and gates
 * exactly as before (same available, same 402/200 boundary), rebuilt from the ledger.
 * FLUSHALL takes every suite's live state away: meson runs this suite alone (is_parallel: false). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "baltest.h"

static void setup(void)
{
	srv_start(&S, NULL);
}

static void teardown(void)
{
	srv_stop(&S);
}

#define TOKENS_METER                                                                                              \
	"{\"id\":\"tokens\",\"event_type\":\"llm\",\"aggregation\":\"sum\",\"property\":\"tokens\","              \
	"\"group_by\":[\"model\"],\"price\":{\"default\":0.002,\"by\":{\"model\":{\"gpt-4\":0.03}}}}"
#define UNITS_METER \
	"{\"id\":\"units\",\"event_type\":\"unit\",\"aggregation\":\"sum\",\"property\":\"n\",\"price\":{\"default\":1}}"

static void clock_advance_s(const struct tenant *t, long long seconds)
{
	expect(t->key, "POST", "/v1/test_clock/advance", 200, "{\"seconds\":%lld}", seconds);
}

static struct tenant bal_tenant(void)
{
	struct tenant t = tenant_new(&S, false);
	must_post(&S, t.key, "/v1/meters", TOKENS_METER);
	must_post(&S, t.key, "/v1/meters", UNITS_METER);
	return t;
}

static void event(const struct tenant *t, const char *cust, const char *type, const char *props)
{
	struct resp r = call(t->key, "POST", "/v1/events", "{\"customer_id\":\"%s\",\"type\":\"%s\",\"properties\":%s}", cust,
			     type, props);
	ck_assert_msg(r.status == 200 && jint(r.json, "accepted") == 1, "event %s %s: %ld %s", cust, props, r.status, r.body);
	resp_free(&r);
}

/* One check's status (and the owner / available it reports). */
static long gate(const struct tenant *t, const char *body, const char *owner, long long available)
{
	struct resp r = call(t->key, "POST", "/v1/check", "%s", body);
	long st = r.status;

	ck_assert_msg(st == 200 || st == 402, "check %s: %ld %s", body, st, r.body);
	ck_assert_msg(json_is_object(jpath(r.json, "balance")), "check %s: no balance: %s", body, r.body);
	ck_assert_str_eq(jstr(r.json, "balance.customer_id"), owner);
	ck_assert_msg(jmu(r.json, "balance.available") == available, "check %s: available %lld µ, expected %lld µ: %s", body,
		      jmu(r.json, "balance.available"), available, r.body);
	if (st == 402)
		ck_assert_str_eq(jstr(r.json, "code"), "insufficient_balance");
	resp_free(&r);
	return st;
}

/* The boundary of each wallet: what exactly fits is allowed, a millionth more is refused. */
static void boundaries(const struct tenant *t)
{
	ck_assert_int_eq(gate(t, "{\"customer_id\":\"a\",\"meter\":\"tokens\",\"amount\":2625,\"dry_run\":true}", "a", MU(5.25)), 200);
	ck_assert_int_eq(gate(t, "{\"customer_id\":\"a\",\"meter\":\"tokens\",\"amount\":2625.0005,\"dry_run\":true}", "a", MU(5.25)), 402);
	ck_assert_int_eq(gate(t, "{\"customer_id\":\"o\",\"meter\":\"units\",\"amount\":1,\"dry_run\":true}", "o", MU(-4)), 200);
	ck_assert_int_eq(gate(t, "{\"customer_id\":\"o\",\"meter\":\"units\",\"amount\":1.000001,\"dry_run\":true}", "o", MU(-4)), 402);
	ck_assert_int_eq(gate(t, "{\"customer_id\":\"m\",\"meter\":\"tokens\",\"amount\":500,\"dry_run\":true}", "org", MU(1)), 200);
	ck_assert_int_eq(gate(t, "{\"customer_id\":\"m\",\"meter\":\"tokens\",\"amount\":500.0005,\"dry_run\":true}", "org", MU(1)), 402);
	ck_assert_int_eq(gate(t, "{\"customer_id\":\"z\",\"dry_run\":true}", "z", 0), 402);
}

static void same_balance(const struct tenant *t, const char *cust, struct bal before)
{
	struct bal now = bal_get(t, cust);
	ck_assert_msg(now.balance == before.balance && now.reserved == before.reserved &&
			      now.available == before.available && now.minimum == before.minimum,
		      "%s after FLUSHALL: balance %lld reserved %lld available %lld minimum %lld µ; before: %lld %lld %lld %lld",
		      cust, now.balance, now.reserved, now.available, now.minimum, before.balance, before.reserved,
		      before.available, before.minimum);
}

START_TEST(flush_rebuilds_balances_and_gate)
{
	struct tenant t = bal_tenant();
	static const char *const custs[] = {"a", "o", "org", "z"};
	struct bal before[4];
	struct resp r;

	expect(t.key, "POST", "/v1/customers", 201, "{\"id\":\"a\"}");
	expect(t.key, "POST", "/v1/customers", 201, "{\"id\":\"o\"}");
	expect(t.key, "POST", "/v1/customers", 201, "{\"id\":\"org\"}");
	expect(t.key, "POST", "/v1/customers", 201, "{\"id\":\"m\",\"parent_id\":\"org\"}");
	expect(t.key, "POST", "/v1/customers", 201, "{\"id\":\"z\"}");
	/* a: 10 - 3.25 (event) - 1.5 (consuming check) = 5.25 */
	credit(&t, "a", "10");
	event(&t, "a", "llm", "{\"tokens\":1625}");
	expect(t.key, "POST", "/v1/check", 200, "{\"customer_id\":\"a\",\"meter\":\"tokens\",\"amount\":750,\"consume\":true}");
	/* o: overdraft to -5, at -4 */
	expect(t.key, "PATCH", "/v1/customers/o/balance", 200, "{\"minimum_balance\":-5}");
	expect(t.key, "POST", "/v1/customers/o/balance/debit", 200, "{\"amount\":3}");
	event(&t, "o", "unit", "{\"n\":1}");
	/* org: 2 - 1 of its member's usage */
	credit(&t, "org", "2");
	event(&t, "m", "llm", "{\"tokens\":500}");
	/* z: an empty wallet, at its minimum */
	expect(t.key, "PATCH", "/v1/customers/z/balance", 200, "{\"low_balance_threshold\":1}");

	boundaries(&t);
	for (int i = 0; i < 4; i++)
		before[i] = bal_get(&t, custs[i]);
	ck_assert(before[0].available == MU(5.25) && before[1].available == MU(-4) && before[2].available == MU(1));

	ck_assert_int_eq(redis_cmd("FLUSHALL"), 0);
	/* the first thing after the flush is a check: the gate rebuilds from the ledger */
	boundaries(&t);
	for (int i = 0; i < 4; i++)
		same_balance(&t, custs[i], before[i]);

	ck_assert_int_eq(redis_cmd("FLUSHALL"), 0);
	/* the first thing after this flush reads the balance */
	for (int i = 0; i < 4; i++)
		same_balance(&t, custs[i], before[i]);
	boundaries(&t);

	ck_assert_int_eq(redis_cmd("FLUSHALL"), 0);
	/* and after this one, writes: an API debit, a credit, a priced event, a consuming check */
	r = call(t.key, "POST", "/v1/customers/o/balance/debit", "{\"amount\":1.000001}");
	ck_err(r, 402, "insufficient_balance", "insufficient_balance", "amount");
	resp_free(&r);
	expect(t.key, "POST", "/v1/customers/o/balance/debit", 200, "{\"amount\":1}");
	ck_assert_int_eq(gate(&t, "{\"customer_id\":\"o\",\"dry_run\":true}", "o", MU(-5)), 402);
	event(&t, "a", "llm", "{\"tokens\":125}"); /* 0.25: a at 5 */
	ck_assert_int_eq(gate(&t, "{\"customer_id\":\"a\",\"meter\":\"units\",\"amount\":5,\"consume\":true}", "a", 0), 200);
	ck_assert_int_eq(gate(&t, "{\"customer_id\":\"a\",\"dry_run\":true}", "a", 0), 402);
	ck_assert_int_eq(redis_cmd("FLUSHALL"), 0);
	credit(&t, "org", "0.5");
	ck_assert_int_eq(gate(&t, "{\"customer_id\":\"m\",\"meter\":\"tokens\",\"amount\":750,\"consume\":true}", "org", 0), 200);
	ck_assert_int_eq(gate(&t, "{\"customer_id\":\"m\",\"dry_run\":true}", "org", 0), 402);

	invariant(&t, "a", 0);
	invariant(&t, "o", MU(-5));
	invariant(&t, "org", 0);
	invariant(&t, "z", 0);
}
END_TEST

/* A hold is part of what is available: losing Redis must not hand it back. */
START_TEST(flush_keeps_reservation_holds)
{
	struct tenant t = bal_tenant();
	struct resp r;
	char rid[64];

	expect(t.key, "POST", "/v1/customers", 201, "{\"id\":\"h\"}");
	credit(&t, "h", "10");
	r = call(t.key, "POST", "/v1/check", "{\"customer_id\":\"h\",\"meter\":\"tokens\",\"amount\":2000,\"reserve\":true}");
	ck_status(r, 200);
	snprintf(rid, sizeof(rid), "%s", jstr(r.json, "reservation_id"));
	ck_assert(jmu(r.json, "balance.available") == MU(6));
	resp_free(&r);
	struct bal before = bal_get(&t, "h");
	ck_assert(before.reserved == MU(4) && before.available == MU(6));

	ck_assert_int_eq(redis_cmd("FLUSHALL"), 0);
	same_balance(&t, "h", before);
	ck_assert_int_eq(gate(&t, "{\"customer_id\":\"h\",\"meter\":\"tokens\",\"amount\":3000.0005,\"dry_run\":true}", "h", MU(6)), 402);
	ck_assert_int_eq(gate(&t, "{\"customer_id\":\"h\",\"meter\":\"tokens\",\"amount\":3000,\"dry_run\":true}", "h", MU(6)), 200);
	/* the settling event still lets the hold go and debits the actual cost */
	r = call(t.key, "POST", "/v1/events",
		 "{\"customer_id\":\"h\",\"type\":\"llm\",\"reservation_id\":\"%s\",\"properties\":{\"tokens\":1500}}", rid);
	ck_status(r, 200);
	resp_free(&r);
	struct bal after = bal_get(&t, "h");
	ck_assert_msg(after.balance == MU(7) && after.reserved == 0, "after settling: balance %lld reserved %lld µ",
		      after.balance, after.reserved);
	invariant(&t, "h", MU(7));
}
END_TEST

/* The reserved amount of quota "q" for customer c, as a dry-run check reports it. */
static long long quota_reserved(const struct tenant *t, const char *c)
{
	struct resp r = call(t->key, "POST", "/v1/check", "{\"customer_id\":\"%s\",\"meter\":\"tokens\",\"amount\":0,"
			     "\"dry_run\":true}", c);
	json_t *limits = jpath(r.json, "limits"), *l;
	size_t i;
	long long reserved = -1;

	ck_status(r, 200);
	json_array_foreach(limits, i, l)
		if (!strcmp(json_string_value(json_object_get(l, "id")), "q"))
			reserved = mu_of(json_object_get(l, "reserved"), "reserved");
	resp_free(&r);
	return reserved;
}

static void reserve_tokens(const struct tenant *t, const char *c, int amount, int ttl, char *rid, size_t size)
{
	struct resp r = call(t->key, "POST", "/v1/check", "{\"customer_id\":\"%s\",\"meter\":\"tokens\",\"amount\":%d,"
			     "\"reserve\":true,\"reservation_ttl\":%d}", c, amount, ttl);
	ck_status(r, 200);
	snprintf(rid, size, "%s", jstr(r.json, "reservation_id"));
	resp_free(&r);
}

/* Quota holds too: after FLUSHALL a rebuilt counter has what active reservations hold on it, a release
 * still lets its hold go, and an expiry (on a test clock) is found in PostgreSQL, not in Redis. */
START_TEST(flush_keeps_quota_holds)
{
	struct tenant t = tenant_new(&S, true);
	char keep[64], gone[64], late[64], path[128];
	struct resp r;

	must_post(&S, t.key, "/v1/meters", TOKENS_METER);
	must_post(&S, t.key, "/v1/limits", "{\"id\":\"q\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"all_time\","
		  "\"limit\":100}");
	reserve_tokens(&t, "c", 30, 3600, keep, sizeof(keep));
	reserve_tokens(&t, "c", 20, 3600, gone, sizeof(gone));
	reserve_tokens(&t, "c", 25, 60, late, sizeof(late));
	ck_assert_int_eq(quota_reserved(&t, "c"), MU(75));

	ck_assert_int_eq(redis_cmd("FLUSHALL"), 0);
	ck_assert_int_eq(quota_reserved(&t, "c"), MU(75));
	/* 25 left: 26 is refused, 25 fits */
	r = call(t.key, "POST", "/v1/check", "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":26,\"dry_run\":true}");
	ck_status(r, 429);
	resp_free(&r);
	expect(t.key, "POST", "/v1/check", 200, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":25,\"dry_run\":true}");

	/* a release after the flush lets go of exactly its hold, once */
	snprintf(path, sizeof(path), "/v1/reservations/%s/release", gone);
	expect(t.key, "POST", path, 200, NULL);
	ck_assert_int_eq(quota_reserved(&t, "c"), MU(55));
	r = call(t.key, "POST", path, NULL);
	ck_status(r, 404);
	resp_free(&r);

	/* an expiry after another flush: the worker finds it in PostgreSQL */
	ck_assert_int_eq(redis_cmd("FLUSHALL"), 0);
	clock_advance_s(&t, 61);
	long long t0 = mono_ms(), reserved = -1;
	while (mono_ms() - t0 < 5000 && (reserved = quota_reserved(&t, "c")) != MU(30))
		nap_ms(100);
	ck_assert_msg(reserved == MU(30), "expired hold still counted: reserved %lld µ", reserved);

	/* the settling event replaces the last hold by the usage */
	r = call(t.key, "POST", "/v1/events",
		 "{\"customer_id\":\"c\",\"type\":\"llm\",\"reservation_id\":\"%s\",\"properties\":{\"tokens\":12}}", keep);
	ck_status(r, 200);
	resp_free(&r);
	ck_assert_int_eq(quota_reserved(&t, "c"), 0);
	ck_assert_int_eq(sql_ll("SELECT count(*) FROM reservations WHERE tenant_id = '%s'", t.id), 0);
	ck_assert_int_eq(redis_cmd("FLUSHALL"), 0);
	ck_assert_int_eq(quota_reserved(&t, "c"), 0);
	expect(t.key, "POST", "/v1/check", 200, "{\"customer_id\":\"c\",\"meter\":\"tokens\",\"amount\":88,\"dry_run\":true}");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("balances_flush");
	TCase *tc = tcase_create("flush");

	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, flush_rebuilds_balances_and_gate);
	tcase_add_test(tc, flush_keeps_reservation_holds);
	tcase_add_test(tc, flush_keeps_quota_holds);
	suite_add_tcase(s, tc);
	return run_suite(s);
}

/* test_policy.c — periods on UTC calendar boundaries, slot precedence, organisations, decisions. */
#include <check.h>
#include <string.h>

#include "tollgate/json.h"
#include "tollgate/hot.h"
#include "tollgate/policy.h"
#include "unit.h"

static int64_t at(const char *rfc3339)
{
	int64_t ms;
	ck_assert_int_eq(tg_time_parse(rfc3339, &ms), 0);
	return ms;
}

static void ck_time(int64_t ms, const char *want)
{
	char buf[TG_TIME_BUFSZ];
	tg_time_format(ms, buf);
	ck_assert_str_eq(buf, want);
}

START_TEST(periods)
{
	int64_t now = at("2026-11-22T03:45:12.345Z"); /* a Sunday */

	ck_time(policy_period_start(PERIOD_HOUR, now), "2026-11-22T03:00:00Z");
	ck_time(policy_period_end(PERIOD_HOUR, policy_period_start(PERIOD_HOUR, now)), "2026-11-22T04:00:00Z");
	ck_time(policy_period_start(PERIOD_DAY, now), "2026-11-22T00:00:00Z");
	ck_time(policy_period_start(PERIOD_WEEK, now), "2026-11-16T00:00:00Z");
	ck_time(policy_period_end(PERIOD_WEEK, policy_period_start(PERIOD_WEEK, now)), "2026-11-23T00:00:00Z");
	/* Monday 00:00 starts a new week */
	ck_time(policy_period_start(PERIOD_WEEK, at("2026-11-23T00:00:00Z")), "2026-11-23T00:00:00Z");
	ck_time(policy_period_start(PERIOD_WEEK, at("2026-11-22T23:59:59.999Z")), "2026-11-16T00:00:00Z");
	ck_time(policy_period_start(PERIOD_MONTH, now), "2026-11-01T00:00:00Z");
	ck_time(policy_period_end(PERIOD_MONTH, policy_period_start(PERIOD_MONTH, now)), "2026-12-01T00:00:00Z");
	/* December rolls into January; February of a leap year has 29 days */
	ck_time(policy_period_end(PERIOD_MONTH, at("2026-12-01T00:00:00Z")), "2027-01-01T00:00:00Z");
	ck_time(policy_period_end(PERIOD_MONTH, at("2028-02-01T00:00:00Z")), "2028-03-01T00:00:00Z");
	ck_assert_int_eq(policy_period_seconds(PERIOD_MONTH, at("2028-02-10T00:00:00Z")), 29 * 86400);
	ck_assert_int_eq(policy_period_seconds(PERIOD_MONTH, at("2027-02-10T00:00:00Z")), 28 * 86400);
	ck_assert_int_eq(policy_period_start(PERIOD_ALL_TIME, now), 0);
	ck_assert(policy_period_end(PERIOD_ALL_TIME, 0) == INT64_MAX);
	/* the instant before midnight belongs to the old day */
	ck_time(policy_period_start(PERIOD_DAY, at("2026-12-31T23:59:59.999Z")), "2026-12-31T00:00:00Z");
	ck_time(policy_period_start(PERIOD_MONTH, at("2027-01-01T00:00:00Z")), "2027-01-01T00:00:00Z");
}
END_TEST

static struct policy_tenant *compile(const char *limits)
{
	char text[8192];
	struct tg_error err;
	snprintf(text, sizeof(text),
		 "{\"tenant\":{\"id\":\"ten_x\",\"test_mode\":false,\"clock_offset_ms\":0,\"default_tier\":null,"
		 "\"auto_create_customers\":true},"
		 "\"meters\":[{\"spec\":{\"id\":\"tokens\",\"event_type\":\"llm\",\"aggregation\":\"sum\",\"property\":\"t\","
		 "\"group_by\":[\"model\"]}}],"
		 "\"limits\":[%s]}",
		 limits);
	json_t *j = tg_json_parse(text, strlen(text), true, &err);
	ck_assert_ptr_nonnull(j);
	struct policy_tenant *t = policy_compile(j, &err);
	json_decref(j);
	ck_assert_ptr_nonnull(t);
	return t;
}

#define L(x) "{\"spec\":" x "}"

static bool has(const struct policy_counter *cs, int n, const char *id, enum policy_subject_kind k)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(cs[i].limit->id, id) && cs[i].subject_kind == k)
			return true;
	return false;
}

START_TEST(slot_precedence)
{
	struct policy_tenant *t = compile(
		L("{\"id\":\"d\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"day\",\"limit\":100}") ","
		L("{\"id\":\"tp\",\"kind\":\"quota\",\"scope\":\"tier\",\"tier\":\"pro\",\"meter\":\"tokens\",\"period\":\"day\",\"limit\":50}") ","
		L("{\"id\":\"c\",\"kind\":\"quota\",\"scope\":\"customer\",\"customer_id\":\"vip\",\"meter\":\"tokens\",\"period\":\"day\",\"limit\":500}") ","
		L("{\"id\":\"other-slot\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\",\"limit\":1000}") ","
		L("{\"id\":\"filtered\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"day\",\"limit\":10,\"filter\":{\"model\":\"gpt-4\"}}") ","
		L("{\"id\":\"plat\",\"kind\":\"quota\",\"scope\":\"platform\",\"meter\":\"tokens\",\"period\":\"day\",\"limit\":100000}") ","
		L("{\"id\":\"ip\",\"kind\":\"rate\",\"meter\":\"requests\",\"limit\":300,\"window\":60,\"per\":\"ip\"}"));
	struct tg_arena a;
	struct policy_counter *cs;
	struct policy_check c = {.meter = "tokens", .amount = 5 * TG_FIXED_SCALE};
	struct policy_subject free_ = {.customer_id = "u1"}, pro = {.customer_id = "u2", .tier = "pro"},
			      vip = {.customer_id = "vip", .tier = "pro"};
	int n;

	tg_arena_init(&a);
	n = policy_plan(t, &c, &free_, 0, &a, &cs);
	ck_assert(has(cs, n, "d", SUBJECT_CUSTOMER) && !has(cs, n, "tp", SUBJECT_CUSTOMER) && !has(cs, n, "c", SUBJECT_CUSTOMER));
	ck_assert(has(cs, n, "other-slot", SUBJECT_CUSTOMER) && has(cs, n, "plat", SUBJECT_PLATFORM));
	ck_assert(!has(cs, n, "filtered", SUBJECT_CUSTOMER)); /* no model dimension */
	ck_assert(!has(cs, n, "ip", SUBJECT_IP));           /* the check has no ip */
	n = policy_plan(t, &c, &pro, 0, &a, &cs);
	ck_assert(has(cs, n, "tp", SUBJECT_CUSTOMER) && !has(cs, n, "d", SUBJECT_CUSTOMER));
	ck_assert(has(cs, n, "other-slot", SUBJECT_CUSTOMER)); /* a different slot still applies */
	n = policy_plan(t, &c, &vip, 0, &a, &cs);
	ck_assert(has(cs, n, "c", SUBJECT_CUSTOMER) && !has(cs, n, "tp", SUBJECT_CUSTOMER) && !has(cs, n, "d", SUBJECT_CUSTOMER));

	c.dims[0] = (struct policy_dim){"model", "gpt-4"};
	c.ndims = 1;
	c.ip = "203.0.113.9";
	n = policy_plan(t, &c, &free_, 0, &a, &cs);
	ck_assert(has(cs, n, "filtered", SUBJECT_CUSTOMER) && has(cs, n, "ip", SUBJECT_IP));
	for (int i = 0; i < n; i++)
		if (!strcmp(cs[i].limit->id, "ip"))
			ck_assert_str_eq(cs[i].subject, "203.0.113.9");
	tg_arena_release(&a);
	policy_tenant_unref(t);
}
END_TEST

START_TEST(organisation_limits)
{
	struct policy_tenant *t = compile(
		L("{\"id\":\"d\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"day\",\"limit\":100}") ","
		L("{\"id\":\"org\",\"kind\":\"quota\",\"scope\":\"customer\",\"customer_id\":\"acme\",\"meter\":\"tokens\",\"period\":\"month\",\"limit\":900}"));
	struct tg_arena a;
	struct policy_counter *cs;
	struct policy_check c = {.meter = "tokens", .amount = TG_FIXED_SCALE};
	struct policy_subject member = {.customer_id = "m1", .parent_id = "acme"};
	int n;

	tg_arena_init(&a);
	n = policy_plan(t, &c, &member, 0, &a, &cs);
	ck_assert(has(cs, n, "d", SUBJECT_CUSTOMER)); /* the member's own default */
	ck_assert(has(cs, n, "org", SUBJECT_ORG));     /* the organisation's limit on its total */
	for (int i = 0; i < n; i++)
		if (cs[i].subject_kind == SUBJECT_ORG)
			ck_assert_str_eq(cs[i].subject, "acme");
	tg_arena_release(&a);
	policy_tenant_unref(t);
}
END_TEST

static struct policy_limit lim(const char *id, enum policy_kind kind, enum policy_enforcement e)
{
	struct policy_limit l = {0};
	l.id = (char *)id;
	l.kind = kind;
	l.enforcement = e;
	l.limit = 100 * TG_FIXED_SCALE;
	return l;
}

START_TEST(decisions)
{
	struct policy_limit q = lim("q", POLICY_QUOTA, ENF_HARD), r = lim("r", POLICY_RATE, ENF_HARD),
			    s = lim("s", POLICY_QUOTA, ENF_SOFT), sh = lim("sh", POLICY_QUOTA, ENF_SHADOW);
	struct policy_counter cs[4] = {
		{.limit = &q, .subject = "u", .allowed = true, .remaining = 50 * TG_FIXED_SCALE, .retry_ms = -1},
		{.limit = &r, .subject = "u", .allowed = true, .remaining = 10 * TG_FIXED_SCALE, .retry_ms = -1},
		{.limit = &s, .subject = "u", .allowed = true, .remaining = 90 * TG_FIXED_SCALE, .retry_ms = -1},
		{.limit = &sh, .subject = "u", .allowed = false, .remaining = 0, .retry_ms = 5000},
	};
	struct policy_decision d;

	policy_decide(cs, 4, 0, &d);
	ck_assert(d.allowed);
	ck_assert_int_eq(d.decision, DECISION_ALLOW); /* shadow never affects the decision */
	ck_assert_str_eq(d.binding->limit->id, "r"); /* the least room left */

	cs[2].allowed = false; /* soft exceeded: allowed with a warning */
	policy_decide(cs, 4, 0, &d);
	ck_assert(d.allowed);
	ck_assert_int_eq(d.decision, DECISION_WARN);
	ck_assert_int_eq(d.nwarnings, 1);

	cs[0].allowed = false;
	cs[0].retry_ms = 3600500;
	cs[1].allowed = false;
	cs[1].retry_ms = 200;
	policy_decide(cs, 4, 0, &d);
	ck_assert(!d.allowed);
	ck_assert_str_eq(d.binding->limit->id, "q"); /* the longest wait binds */
	ck_assert_str_eq(d.code, "quota_exceeded");
	ck_assert_int_eq(d.retry_after_s, 3601);     /* rounded up */

	cs[0].allowed = true;
	policy_decide(cs, 4, 0, &d);
	ck_assert_str_eq(d.code, "rate_limited");
	ck_assert_int_eq(d.retry_after_s, 1);        /* never 0 */

	cs[0].allowed = false;
	cs[0].retry_ms = -1;                         /* can never fit: binds, and no Retry-After */
	policy_decide(cs, 4, 0, &d);
	ck_assert_str_eq(d.binding->limit->id, "q");
	ck_assert_int_eq(d.retry_after_s, -1);
}
END_TEST

/* Allowed: the binding limit is the one with the least room left for checks like this one. */
START_TEST(binding_is_the_least_room_left)
{
	struct policy_limit day = lim("day", POLICY_QUOTA, ENF_HARD), month = lim("month", POLICY_QUOTA, ENF_HARD),
			    rate = lim("rate", POLICY_RATE, ENF_HARD);
	day.limit = 1000 * TG_FIXED_SCALE;
	month.limit = 10 * TG_FIXED_SCALE;
	rate.limit = 60 * TG_FIXED_SCALE;
	struct policy_counter cs[3] = {
		{.limit = &day, .subject = "u", .allowed = true, .remaining = 1000 * TG_FIXED_SCALE, .amount = TG_FIXED_SCALE, .retry_ms = -1},
		{.limit = &month, .subject = "u", .allowed = true, .remaining = 10 * TG_FIXED_SCALE, .amount = TG_FIXED_SCALE, .retry_ms = -1},
		{.limit = &rate, .subject = "u", .allowed = true, .remaining = 59 * TG_FIXED_SCALE, .amount = TG_FIXED_SCALE, .retry_ms = -1},
	};
	struct policy_decision d;

	/* both quotas untouched: 10 left beats 1,000 left (a fraction of the limit tied them at 1.0) */
	policy_decide(cs, 3, 0, &d);
	ck_assert(d.allowed);
	ck_assert_str_eq(d.binding->limit->id, "month");
	/* checks of 400 on the daily quota's meter: two more fit there, 59 under the rate limit on requests */
	cs[0].amount = 400 * TG_FIXED_SCALE;
	cs[1] = cs[2];
	policy_decide(cs, 2, 0, &d);
	ck_assert_str_eq(d.binding->limit->id, "day");
	/* the same room: the smaller fraction of its limit left binds */
	cs[2] = cs[0];
	cs[2].amount = TG_FIXED_SCALE;
	cs[2].remaining = 59 * TG_FIXED_SCALE;
	policy_decide(cs + 1, 2, 0, &d); /* the rate limit first */
	ck_assert_str_eq(d.binding->limit->id, "day");
}
END_TEST

/* Where a reservation's hold is let go: the counter of the period at hand, never an earlier one; other keys
 * as they are. Limit ids may hold ':'. */
START_TEST(hold_keys_move_forward_only)
{
	struct tg_arena a;
	int64_t day = 1795392000; /* 2026-11-23 00:00 UTC */
	char key[128], want[128];

	tg_arena_init(&a);
	snprintf(key, sizeof(key), "tg:{t:c}:q:a:day~0badf00d:day:%lld", (long long)(day - 86400));
	snprintf(want, sizeof(want), "tg:{t:c}:q:a:day~0badf00d:day:%lld", (long long)day);
	ck_assert_str_eq(hot_hold_key(&a, key, (day + 10) * 1000), want); /* made yesterday: today's counter */
	ck_assert_str_eq(hot_hold_key(&a, key, (day - 10) * 1000), key);  /* still yesterday */
	ck_assert_str_eq(hot_hold_key(&a, want, (day - 10) * 1000), want); /* a clock behind: not backwards */
	ck_assert_uint_eq(hot_hold_prefix_len(key), strlen("tg:{t:c}:q:a:day~0badf00d:day:"));
	ck_assert_str_eq(hot_hold_key(&a, "tg:{t:c}:bal", day * 1000), "tg:{t:c}:bal");
	ck_assert_uint_eq(hot_hold_prefix_len("tg:{t:c}:bal"), 0);
	snprintf(key, sizeof(key), "tg:{t:c}:q:x~00000000:all_time:0");
	ck_assert_str_eq(hot_hold_key(&a, key, day * 1000), key);
	tg_arena_release(&a);
}
END_TEST

START_TEST(limit_validation)
{
	struct policy_tenant *t = compile("");
	struct policy_limit l;
	struct tg_error err;
	static const struct {
		const char *spec, *param;
	} bad[] = {
		{"{\"id\":\"x\",\"kind\":\"quota\",\"meter\":\"tokens\",\"limit\":1}", "period"},
		{"{\"id\":\"x\",\"kind\":\"quota\",\"meter\":\"nope\",\"period\":\"day\",\"limit\":1}", "meter"},
		{"{\"id\":\"x\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"year\",\"limit\":1}", "period"},
		{"{\"id\":\"x\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"day\",\"limit\":-1}", "limit"},
		{"{\"id\":\"x\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"day\",\"limit\":1,\"window\":5}", "window"},
		{"{\"id\":\"x\",\"kind\":\"quota\",\"scope\":\"tier\",\"meter\":\"tokens\",\"period\":\"day\",\"limit\":1}", "tier"},
		{"{\"id\":\"x\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"day\",\"limit\":1,\"thresholds\":[1.5]}", "thresholds"},
		{"{\"id\":\"x\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"day\",\"limit\":1,\"thresholds\":[0.5,0.5]}", "thresholds"},
		{"{\"id\":\"x\",\"kind\":\"rate\",\"meter\":\"requests\",\"limit\":1,\"window\":0}", "window"},
		{"{\"id\":\"x\",\"kind\":\"rate\",\"meter\":\"requests\",\"limit\":1,\"window\":2678401}", "window"},
		{"{\"id\":\"x\",\"kind\":\"rate\",\"meter\":\"requests\",\"limit\":1,\"window\":1,\"algorithm\":\"sliding_window\",\"burst\":2}", "burst"},
		{"{\"id\":\"x\",\"kind\":\"rate\",\"scope\":\"platform\",\"meter\":\"requests\",\"limit\":1,\"window\":1,\"per\":\"customer\"}", "per"},
		{"{\"id\":\"x\",\"kind\":\"rate\",\"meter\":\"requests\",\"limit\":1,\"window\":1,\"on_exceed\":{\"action\":\"fallback\"}}", "on_exceed.dimensions"},
		{"{\"id\":\"x\",\"kind\":\"workflow\"}", "max_tool_calls"},
		{"{\"id\":\"x\",\"kind\":\"workflow\",\"meter\":\"tokens\",\"max_depth\":3}", "meter"},
		{"{\"id\":\"x\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"day\",\"limit\":1,\"filter\":{\"model\":3}}", "filter.model"},
		{"{\"id\":\"x\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"day\",\"limit\":0.0000001}", "limit"},
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *j = tg_json_parse(bad[i].spec, strlen(bad[i].spec), true, &err);
		ck_assert_ptr_nonnull(j);
		ck_assert_msg(policy_limit_parse(j, t, &l, &err) < 0, "accepted %s", bad[i].spec);
		ck_assert_msg(!strcmp(err.param, bad[i].param), "%s: param '%s', want '%s'", bad[i].spec, err.param,
			      bad[i].param);
		json_decref(j);
	}
	const char *good = "{\"id\":\"x\",\"kind\":\"rate\",\"scope\":\"platform\",\"meter\":\"requests\",\"limit\":1000,\"window\":60}";
	json_t *j = tg_json_parse(good, strlen(good), true, &err);
	ck_assert_int_eq(policy_limit_parse(j, t, &l, &err), 0);
	ck_assert_int_eq(l.per, PER_PLATFORM); /* the default per for the platform scope */
	ck_assert(l.burst == l.limit);         /* and burst defaults to the limit */
	policy_limit_release(&l);
	json_decref(j);
	policy_tenant_unref(t);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("policy");
	TCase *tc = tcase_create("policy");

	tcase_add_test(tc, periods);
	tcase_add_test(tc, slot_precedence);
	tcase_add_test(tc, organisation_limits);
	tcase_add_test(tc, decisions);
	tcase_add_test(tc, binding_is_the_least_room_left);
	tcase_add_test(tc, hold_keys_move_forward_only);
	tcase_add_test(tc, limit_validation);
	suite_add_tcase(s, tc);
	return unit_run(s);
}

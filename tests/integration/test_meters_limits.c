/* test_meters_limits.c — /v1/meters and /v1/limits over real HTTP: CRUD, every field's validation, PATCH
 * semantics, list filters and the conflicts with what uses them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#define MTEST_ONE_SERVER
#include "mtest.h"


static size_t list_len(const char *key, const char *path)
{
	struct resp r = req(&S, "GET", path, key, NULL, NULL);
	ck_status(r, 200);
	size_t n = json_array_size(jpath(r.json, "data"));
	resp_free(&r);
	return n;
}

static char *body_of(const char *key, const char *path)
{
	struct resp r = req(&S, "GET", path, key, NULL, NULL);
	char *b = strdup(r.body);
	resp_free(&r);
	return b;
}

/* ---- meters ---- */

START_TEST(meter_crud)
{
	struct tenant t = tenant_new(&S, false);
	struct resp r = req(&S, "POST", "/v1/meters", t.key,
			    "{\"id\":\"tokens\",\"event_type\":\"llm.completion\",\"aggregation\":\"sum\","
			    "\"property\":\"tokens\",\"group_by\":[\"model\",\"feature\"]}",
			    NULL);
	ck_status(r, 201);
	ck_assert_str_eq(jstr(r.json, "id"), "tokens");
	ck_assert_str_eq(jstr(r.json, "event_type"), "llm.completion");
	ck_assert_str_eq(jstr(r.json, "aggregation"), "sum");
	ck_assert_str_eq(jstr(r.json, "property"), "tokens");
	ck_assert_int_eq(json_array_size(jpath(r.json, "group_by")), 2);
	ck_assert_str_eq(jstr(r.json, "group_by.0"), "model");
	ck_assert_str_eq(jstr(r.json, "group_by.1"), "feature");
	time_parse(jstr(r.json, "created_at"));
	resp_free(&r);

	/* count needs no property; it is not kept even if given */
	r = req(&S, "POST", "/v1/meters", t.key, "{\"id\":\"calls\",\"event_type\":\"api.call\",\"aggregation\":\"count\"}", NULL);
	ck_status(r, 201);
	ck_assert_str_eq(jstr(r.json, "aggregation"), "count");
	ck_assert(jpath(r.json, "property") == NULL || json_is_null(jpath(r.json, "property")));
	resp_free(&r);
	/* max and latest need a property like sum */
	expectf(&S, t.key, "POST", "/v1/meters", 201,
		"{\"id\":\"peak\",\"event_type\":\"gpu\",\"aggregation\":\"max\",\"property\":\"gb\"}");
	expectf(&S, t.key, "POST", "/v1/meters", 201,
		"{\"id\":\"seats\",\"event_type\":\"seats\",\"aggregation\":\"latest\",\"property\":\"n\"}");

	/* list: stable order (creation), paging */
	r = req(&S, "GET", "/v1/meters", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 4);
	ck_assert_str_eq(jstr(r.json, "data.0.id"), "tokens");
	ck_assert_str_eq(jstr(r.json, "data.1.id"), "calls");
	ck_assert_str_eq(jstr(r.json, "data.2.id"), "peak");
	ck_assert_str_eq(jstr(r.json, "data.3.id"), "seats");
	ck_assert(json_is_false(jpath(r.json, "has_more")));
	resp_free(&r);
	r = req(&S, "GET", "/v1/meters?limit=2", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 2);
	ck_assert(json_is_true(jpath(r.json, "has_more")));
	resp_free(&r);
	r = req(&S, "GET", "/v1/meters?limit=2&starting_after=calls", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 2);
	ck_assert_str_eq(jstr(r.json, "data.0.id"), "peak");
	ck_assert(json_is_false(jpath(r.json, "has_more")));
	resp_free(&r);

	/* get */
	r = req(&S, "GET", "/v1/meters/tokens", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "property"), "tokens");
	resp_free(&r);
	r = req(&S, "GET", "/v1/meters/nope", t.key, NULL, NULL);
	ck_status(r, 404);
	ck_assert_str_eq(jstr(r.json, "error.type"), "invalid_request");
	resp_free(&r);

	/* patch merges: group_by replaced, the rest kept */
	r = req(&S, "PATCH", "/v1/meters/tokens", t.key, "{\"group_by\":[\"model\",\"region\"],\"event_type\":\"llm.done\"}", NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "event_type"), "llm.done");
	ck_assert_str_eq(jstr(r.json, "aggregation"), "sum");
	ck_assert_str_eq(jstr(r.json, "property"), "tokens");
	ck_assert_str_eq(jstr(r.json, "group_by.1"), "region");
	resp_free(&r);
	/* aggregation is immutable; sending the same value is fine */
	r = req(&S, "PATCH", "/v1/meters/tokens", t.key, "{\"aggregation\":\"max\"}", NULL);
	ck_bad(r, 400, "invalid_parameter", "aggregation");
	resp_free(&r);
	expect_status(&S, "PATCH", "/v1/meters/tokens", t.key, "{\"aggregation\":\"sum\"}", 200);
	r = req(&S, "PATCH", "/v1/meters/tokens", t.key, "{\"id\":\"tokens2\"}", NULL);
	ck_status(r, 400);
	ck_assert_str_eq(jstr(r.json, "error.param"), "id");
	resp_free(&r);
	/* a patch re-validates: property cannot be removed from a sum meter */
	r = req(&S, "PATCH", "/v1/meters/tokens", t.key, "{\"property\":null}", NULL);
	ck_bad(r, 400, "missing_parameter", "property");
	resp_free(&r);
	r = req(&S, "GET", "/v1/meters/tokens", t.key, NULL, NULL);
	ck_assert_str_eq(jstr(r.json, "property"), "tokens");
	ck_assert_str_eq(jstr(r.json, "event_type"), "llm.done");
	resp_free(&r);
	expect_status(&S, "PATCH", "/v1/meters/nope", t.key, "{\"event_type\":\"x\"}", 404);

	/* delete */
	r = req(&S, "DELETE", "/v1/meters/seats", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "id"), "seats");
	ck_assert(json_is_true(jpath(r.json, "deleted")));
	resp_free(&r);
	expect_status(&S, "GET", "/v1/meters/seats", t.key, NULL, 404);
	expect_status(&S, "DELETE", "/v1/meters/seats", t.key, NULL, 404);
	ck_assert_int_eq(list_len(t.key, "/v1/meters"), 3);
	/* the id is free again */
	expectf(&S, t.key, "POST", "/v1/meters", 201, "{\"id\":\"seats\",\"event_type\":\"seats\",\"aggregation\":\"count\"}");

	/* other tenants see none of it */
	struct tenant o = tenant_new(&S, false);
	ck_assert_int_eq(list_len(o.key, "/v1/meters"), 0);
	expect_status(&S, "GET", "/v1/meters/tokens", o.key, NULL, 404);
}
END_TEST

START_TEST(meter_requests_builtin)
{
	struct tenant t = tenant_new(&S, false);
	struct resp r = req(&S, "GET", "/v1/meters/requests", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "id"), "requests");
	ck_assert_str_eq(jstr(r.json, "aggregation"), "count");
	resp_free(&r);

	r = req(&S, "POST", "/v1/meters", t.key, "{\"id\":\"requests\",\"event_type\":\"x\",\"aggregation\":\"count\"}", NULL);
	ck_status(r, 400);
	ck_assert_str_eq(jstr(r.json, "error.type"), "invalid_request");
	ck_assert_str_eq(jstr(r.json, "error.param"), "id");
	resp_free(&r);
	r = req(&S, "POST", "/v1/meters", t.key,
		"{\"id\":\"requests\",\"event_type\":\"x\",\"aggregation\":\"sum\",\"property\":\"n\"}", NULL);
	ck_status(r, 400);
	resp_free(&r);
	/* cannot be redefined through PATCH either, nor deleted: it is there (GET says so), so not a 404 */
	r = req(&S, "PATCH", "/v1/meters/requests", t.key, "{\"event_type\":\"x\"}", NULL);
	ck_status(r, 400);
	ck_assert_str_eq(jstr(r.json, "error.type"), "invalid_request");
	resp_free(&r);
	expect_status(&S, "DELETE", "/v1/meters/requests", t.key, NULL, 400);
	r = req(&S, "GET", "/v1/meters/requests", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "aggregation"), "count");
	resp_free(&r);
	ck_assert_int_eq(list_len(t.key, "/v1/meters"), 0);
}
END_TEST

START_TEST(meter_bad_inputs)
{
	struct tenant t = tenant_new(&S, false);
	static const struct {
		const char *body, *code, *param;
	} bad[] = {
		{"{\"id\":\"m\",\"event_type\":\"e\",\"aggregation\":\"sum\"}", "missing_parameter", "property"},
		{"{\"id\":\"m\",\"event_type\":\"e\",\"aggregation\":\"max\"}", "missing_parameter", "property"},
		{"{\"id\":\"m\",\"event_type\":\"e\",\"aggregation\":\"latest\"}", "missing_parameter", "property"},
		{"{\"id\":\"m\",\"event_type\":\"e\",\"aggregation\":\"sum\",\"property\":\"\"}", NULL, "property"},
		{"{\"id\":\"m\",\"event_type\":\"e\",\"aggregation\":\"sum\",\"property\":5}", "invalid_parameter", "property"},
		{"{\"id\":\"m\",\"event_type\":\"e\",\"aggregation\":\"avg\",\"property\":\"n\"}", "invalid_parameter", "aggregation"},
		{"{\"id\":\"m\",\"event_type\":\"e\",\"aggregation\":7}", "invalid_parameter", "aggregation"},
		{"{\"id\":\"m\",\"event_type\":\"e\"}", "missing_parameter", "aggregation"},
		{"{\"id\":\"m\",\"aggregation\":\"count\"}", "missing_parameter", "event_type"},
		{"{\"id\":\"m\",\"event_type\":3,\"aggregation\":\"count\"}", "invalid_parameter", "event_type"},
		{"{\"event_type\":\"e\",\"aggregation\":\"count\"}", "missing_parameter", "id"},
		{"{\"id\":\"a b\",\"event_type\":\"e\",\"aggregation\":\"count\"}", "invalid_parameter", "id"},
		{"{\"id\":\"\",\"event_type\":\"e\",\"aggregation\":\"count\"}", "invalid_parameter", "id"},
		{"{\"id\":\"m\",\"event_type\":\"e\",\"aggregation\":\"count\",\"group_by\":\"model\"}", "invalid_parameter", "group_by"},
		{"{\"id\":\"m\",\"event_type\":\"e\",\"aggregation\":\"count\",\"group_by\":[1]}", "invalid_parameter", "group_by"},
		{"{\"id\":\"m\",\"event_type\":\"e\",\"aggregation\":\"count\",\"group_by\":[\"a\",\"a\"]}", "invalid_parameter", "group_by"},
		{"{\"id\":\"m\",\"event_type\":\"e\",\"aggregation\":\"sum\",\"property\":\"n\",\"group_by\":[\"n\"]}", "invalid_parameter", "group_by"},
		{"{\"id\":\"m\",\"event_type\":\"e\",\"aggregation\":\"count\",\"colour\":\"red\"}", "unknown_parameter", "colour"},
		{"{\"id\":\"m\",\"event_type\":\"e\",\"aggregation\":\"count\",\"price\":{\"default\":-1}}", "invalid_parameter", "price.default"},
		{"{\"id\":\"m\",\"event_type\":\"e\",\"aggregation\":\"count\",\"price\":{\"default\":0.0000001}}", "invalid_parameter", "price.default"},
		/* price.by names dimensions: ids, like group_by */
		{"{\"id\":\"m\",\"event_type\":\"e\",\"aggregation\":\"count\",\"price\":{\"by\":{\"bad key\":{\"x\":1}}}}", "invalid_parameter", "price.by"},
		{"{\"id\":\"m\",\"event_type\":\"e\",\"aggregation\":\"count\",\"price\":{\"by\":{\"\":{\"x\":1}}}}", "invalid_parameter", "price.by"},
		{"{\"id\":\"m\",\"event_type\":\"e\",\"aggregation\":\"count\",\"price\":{\"by\":{\"model\":{\"a\":1},\"a/b\":{\"x\":1}}}}", "invalid_parameter", "price.by"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct resp r = req(&S, "POST", "/v1/meters", t.key, bad[i].body, NULL);
		ck_assert_msg(r.status == 400, "%s: expected 400, got %ld: %s", bad[i].body, r.status, r.body);
		ck_assert_str_eq(jstr(r.json, "error.type"), "invalid_request");
		if (bad[i].code)
			ck_assert_msg(strcmp(jstr(r.json, "error.code"), bad[i].code) == 0, "%s: code %s, want %s", bad[i].body,
				      jstr(r.json, "error.code"), bad[i].code);
		ck_assert_msg(json_is_string(jpath(r.json, "error.param")) &&
				      strcmp(jstr(r.json, "error.param"), bad[i].param) == 0,
			      "%s: param should be %s: %s", bad[i].body, bad[i].param, r.body);
		resp_free(&r);
	}
	struct resp r = req(&S, "POST", "/v1/meters", t.key, "{\"id\":\"m\",", NULL);
	ck_bad(r, 400, "invalid_json", NULL);
	resp_free(&r);
	/* nothing was created */
	ck_assert_int_eq(list_len(t.key, "/v1/meters"), 0);

	/* duplicate id */
	expectf(&S, t.key, "POST", "/v1/meters", 201, "{\"id\":\"m\",\"event_type\":\"e\",\"aggregation\":\"count\"}");
	r = req(&S, "POST", "/v1/meters", t.key, "{\"id\":\"m\",\"event_type\":\"f\",\"aggregation\":\"count\"}", NULL);
	ck_status(r, 409);
	ck_assert_str_eq(jstr(r.json, "error.type"), "invalid_request");
	resp_free(&r);
	r = req(&S, "GET", "/v1/meters/m", t.key, NULL, NULL);
	ck_assert_str_eq(jstr(r.json, "event_type"), "e");
	resp_free(&r);
	/* nor through PATCH */
	char *before = body_of(t.key, "/v1/meters/m");
	r = req(&S, "PATCH", "/v1/meters/m", t.key, "{\"event_type\":\"f\",\"price\":{\"by\":{\"bad key\":{\"x\":1}}}}", NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "price.by");
	resp_free(&r);
	char *after = body_of(t.key, "/v1/meters/m");
	ck_assert_str_eq(after, before);
	free(before);
	free(after);
	expectf(&S, t.key, "PATCH", "/v1/meters/m", 200, "{\"price\":{\"by\":{\"model:v2\":{\"gpt 4\":1}}}}");
}
END_TEST

START_TEST(meter_in_use_conflict)
{
	struct tenant t = tenant_new(&S, false);
	expectf(&S, t.key, "POST", "/v1/meters", 201,
		"{\"id\":\"tokens\",\"event_type\":\"llm\",\"aggregation\":\"sum\",\"property\":\"tokens\"}");
	/* a meter's group_by cannot drop a dimension a quota's filter names (the rollups would stop keeping it) */
	expectf(&S, t.key, "PATCH", "/v1/meters/tokens", 200, "{\"group_by\":[\"model\"]}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"g4\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":10,"
		"\"filter\":{\"model\":\"gpt-4\"}}");
	struct resp r = req(&S, "PATCH", "/v1/meters/tokens", t.key, "{\"group_by\":[]}", NULL);
	ck_assert_msg(r.status == 400 || r.status == 409, "dropping a filtered dimension: got %ld %s", r.status, r.body);
	resp_free(&r);
	r = req(&S, "GET", "/v1/meters/tokens", t.key, NULL, NULL);
	ck_assert_int_eq(json_array_size(jpath(r.json, "group_by")), 1);
	resp_free(&r);
	expectf(&S, t.key, "DELETE", "/v1/limits/g4", 200, NULL);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"q\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":10}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"r\",\"meter\":\"tokens\",\"kind\":\"rate\",\"window\":60,\"limit\":10}");
	r = req(&S, "DELETE", "/v1/meters/tokens", t.key, NULL, NULL);
	ck_status(r, 409);
	ck_assert_str_eq(jstr(r.json, "error.type"), "invalid_request");
	resp_free(&r);
	expect_status(&S, "GET", "/v1/meters/tokens", t.key, NULL, 200);
	expectf(&S, t.key, "DELETE", "/v1/limits/q", 200, NULL);
	r = req(&S, "DELETE", "/v1/meters/tokens", t.key, NULL, NULL);
	ck_status(r, 409); /* still used by r */
	resp_free(&r);
	expectf(&S, t.key, "DELETE", "/v1/limits/r", 200, NULL);
	expectf(&S, t.key, "DELETE", "/v1/meters/tokens", 200, NULL);
	/* and a limit cannot name a meter that is gone */
	r = req(&S, "POST", "/v1/limits", t.key, "{\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":1}", NULL);
	ck_status(r, 400);
	ck_assert_str_eq(jstr(r.json, "error.param"), "meter");
	resp_free(&r);
}
END_TEST

/* ---- limits ---- */

static void limits_tenant(struct tenant *t)
{
	*t = tenant_new(&S, false);
	expectf(&S, t->key, "POST", "/v1/meters", 201,
		"{\"id\":\"tokens\",\"event_type\":\"llm\",\"aggregation\":\"sum\",\"property\":\"tokens\",\"group_by\":[\"model\"]}");
	expectf(&S, t->key, "POST", "/v1/tiers", 201, "{\"id\":\"pro\"}");
	expectf(&S, t->key, "POST", "/v1/customers", 201, "{\"id\":\"c1\"}");
}

START_TEST(limit_create_every_field)
{
	struct tenant t;
	limits_tenant(&t);
	struct resp r = req(&S, "POST", "/v1/limits", t.key,
			    "{\"id\":\"free-tokens\",\"meter\":\"tokens\",\"kind\":\"quota\",\"scope\":\"tier\",\"tier\":\"pro\","
			    "\"period\":\"month\",\"limit\":1000.5,\"enforcement\":\"soft\",\"thresholds\":[1.0,0.5,0.8],"
			    "\"filter\":{\"model\":\"gpt-4\"},\"fail_mode\":\"open\","
			    "\"on_exceed\":{\"action\":\"fallback\",\"dimensions\":{\"model\":\"gpt-4o-mini\"}}}",
			    NULL);
	ck_status(r, 201);
	ck_assert_str_eq(jstr(r.json, "id"), "free-tokens");
	ck_assert_str_eq(jstr(r.json, "meter"), "tokens");
	ck_assert_str_eq(jstr(r.json, "kind"), "quota");
	ck_assert_str_eq(jstr(r.json, "scope"), "tier");
	ck_assert_str_eq(jstr(r.json, "tier"), "pro");
	ck_assert_str_eq(jstr(r.json, "period"), "month");
	ck_qty(r.json, "limit", 1000.5);
	ck_assert_str_eq(jstr(r.json, "enforcement"), "soft");
	ck_assert_int_eq(json_array_size(jpath(r.json, "thresholds")), 3);
	ck_qty(r.json, "thresholds.0", 0.5);
	ck_qty(r.json, "thresholds.1", 0.8);
	ck_qty(r.json, "thresholds.2", 1);
	ck_assert_str_eq(jstr(r.json, "filter.model"), "gpt-4");
	ck_assert_str_eq(jstr(r.json, "fail_mode"), "open");
	ck_assert_str_eq(jstr(r.json, "on_exceed.action"), "fallback");
	ck_assert_str_eq(jstr(r.json, "on_exceed.dimensions.model"), "gpt-4o-mini");
	char *created = strdup(r.body);
	resp_free(&r);
	char *got = body_of(t.key, "/v1/limits/free-tokens");
	ck_assert_str_eq(got, created);
	free(got);
	free(created);

	/* defaults; generated id */
	r = req(&S, "POST", "/v1/limits", t.key, "{\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":5}", NULL);
	ck_status(r, 201);
	ck_assert_msg(strncmp(jstr(r.json, "id"), "lim_", 4) == 0 && strlen(jstr(r.json, "id")) > 4, "id %s", jstr(r.json, "id"));
	ck_assert_str_eq(jstr(r.json, "scope"), "default");
	ck_assert_str_eq(jstr(r.json, "enforcement"), "hard");
	ck_assert_str_eq(jstr(r.json, "fail_mode"), "closed");
	ck_assert_str_eq(jstr(r.json, "on_exceed.action"), "deny");
	ck_assert_int_eq(json_array_size(jpath(r.json, "thresholds")), 0);
	char gen[64];
	snprintf(gen, sizeof(gen), "/v1/limits/%s", jstr(r.json, "id"));
	resp_free(&r);
	expect_status(&S, "GET", gen, t.key, NULL, 200);

	/* rate: per defaults to customer, or platform for scope platform; burst defaults to limit */
	r = req(&S, "POST", "/v1/limits", t.key, "{\"id\":\"r1\",\"meter\":\"requests\",\"kind\":\"rate\",\"window\":60,\"limit\":600}", NULL);
	ck_status(r, 201);
	ck_assert_str_eq(jstr(r.json, "per"), "customer");
	ck_assert_str_eq(jstr(r.json, "algorithm"), "token_bucket");
	ck_qty(r.json, "window", 60);
	ck_qty(r.json, "burst", 600);
	resp_free(&r);
	r = req(&S, "POST", "/v1/limits", t.key,
		"{\"id\":\"r2\",\"meter\":\"requests\",\"kind\":\"rate\",\"scope\":\"platform\",\"window\":2678400,\"limit\":6,"
		"\"burst\":100}", NULL);
	ck_status(r, 201);
	ck_assert_str_eq(jstr(r.json, "per"), "platform");
	ck_qty(r.json, "window", 2678400);
	ck_qty(r.json, "burst", 100);
	resp_free(&r);
	r = req(&S, "POST", "/v1/limits", t.key,
		"{\"id\":\"r3\",\"meter\":\"tokens\",\"kind\":\"rate\",\"window\":1,\"limit\":6,\"algorithm\":\"sliding_window\","
		"\"per\":\"ip\",\"scope\":\"customer\",\"customer_id\":\"c1\"}", NULL);
	ck_status(r, 201);
	ck_assert_str_eq(jstr(r.json, "per"), "ip");
	ck_assert_str_eq(jstr(r.json, "algorithm"), "sliding_window");
	ck_assert_str_eq(jstr(r.json, "customer_id"), "c1");
	ck_assert_ptr_null(jpath(r.json, "burst"));
	resp_free(&r);
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"r4\",\"meter\":\"requests\",\"kind\":\"rate\",\"window\":10,\"limit\":6,\"per\":\"key\"}");

	/* duplicate id */
	r = req(&S, "POST", "/v1/limits", t.key, "{\"id\":\"r1\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":5}", NULL);
	ck_status(r, 409);
	ck_assert_str_eq(jstr(r.json, "error.type"), "invalid_request");
	ck_assert_str_eq(jstr(r.json, "error.param"), "id");
	resp_free(&r);
	r = req(&S, "GET", "/v1/limits/r1", t.key, NULL, NULL);
	ck_assert_str_eq(jstr(r.json, "kind"), "rate");
	resp_free(&r);
	ck_assert_int_eq(list_len(t.key, "/v1/limits"), 6);
}
END_TEST

START_TEST(limit_validation)
{
	struct tenant t;
	limits_tenant(&t);
#define Q "\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":10"
#define RT "\"meter\":\"tokens\",\"kind\":\"rate\",\"window\":60,\"limit\":10"
	static const struct {
		const char *body, *code, *param;
	} bad[] = {
		/* kind */
		{"{\"meter\":\"tokens\",\"period\":\"day\",\"limit\":10}", "missing_parameter", "kind"},
		{"{\"meter\":\"tokens\",\"kind\":\"budget\",\"period\":\"day\",\"limit\":10}", "invalid_parameter", "kind"},
		/* scope and its companions */
		{"{" Q ",\"scope\":\"galaxy\"}", "invalid_parameter", "scope"},
		{"{" Q ",\"scope\":\"tier\"}", "missing_parameter", "tier"},
		{"{" Q ",\"scope\":\"customer\"}", "missing_parameter", "customer_id"},
		/* null is no value: it does not stand in for a required tier or customer (such a limit was
		 * stored, then skipped at every snapshot load and never enforced) */
		{"{" Q ",\"scope\":\"tier\",\"tier\":null}", "missing_parameter", "tier"},
		{"{" Q ",\"scope\":\"customer\",\"customer_id\":null}", "missing_parameter", "customer_id"},
		{"{" Q ",\"scope\":\"default\",\"tier\":\"pro\"}", NULL, "tier"},
		{"{" Q ",\"scope\":\"tier\",\"tier\":\"pro\",\"customer_id\":\"c1\"}", NULL, "customer_id"},
		{"{" Q ",\"scope\":\"tier\",\"tier\":\"ghost\"}", "tier_not_found", "tier"},
		{"{" Q ",\"scope\":\"tier\",\"tier\":\"a b\"}", "invalid_parameter", "tier"},
		{"{" Q ",\"scope\":\"customer\",\"customer_id\":5}", "invalid_parameter", "customer_id"},
		/* meter and limit */
		{"{\"kind\":\"quota\",\"period\":\"day\",\"limit\":10}", "missing_parameter", "meter"},
		{"{\"meter\":\"ghost\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":10}", NULL, "meter"},
		{"{\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\"}", "missing_parameter", "limit"},
		{"{\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":-1}", "invalid_parameter", "limit"},
		{"{\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":\"10\"}", "invalid_parameter", "limit"},
		{"{\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":1.0000001}", "invalid_parameter", "limit"},
		{"{\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":9000000000000}", "invalid_parameter", "limit"},
		/* period */
		{"{\"meter\":\"tokens\",\"kind\":\"quota\",\"limit\":10}", "missing_parameter", "period"},
		{"{\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"year\",\"limit\":10}", "invalid_parameter", "period"},
		{"{\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"Day\",\"limit\":10}", "invalid_parameter", "period"},
		/* window */
		{"{\"meter\":\"tokens\",\"kind\":\"rate\",\"limit\":10}", "missing_parameter", "window"},
		{"{\"meter\":\"tokens\",\"kind\":\"rate\",\"window\":0,\"limit\":10}", "invalid_parameter", "window"},
		{"{\"meter\":\"tokens\",\"kind\":\"rate\",\"window\":-5,\"limit\":10}", "invalid_parameter", "window"},
		{"{\"meter\":\"tokens\",\"kind\":\"rate\",\"window\":2678401,\"limit\":10}", "invalid_parameter", "window"},
		{"{\"meter\":\"tokens\",\"kind\":\"rate\",\"window\":1.5,\"limit\":10}", "invalid_parameter", "window"},
		{"{\"meter\":\"tokens\",\"kind\":\"rate\",\"window\":\"60\",\"limit\":10}", "invalid_parameter", "window"},
		/* algorithm, burst, per */
		{"{" RT ",\"algorithm\":\"leaky_bucket\"}", "invalid_parameter", "algorithm"},
		{"{" RT ",\"algorithm\":\"sliding_window\",\"burst\":5}", "invalid_parameter", "burst"},
		{"{" RT ",\"burst\":0}", "invalid_parameter", "burst"},
		{"{" RT ",\"burst\":-3}", "invalid_parameter", "burst"},
		{"{" RT ",\"burst\":\"x\"}", "invalid_parameter", "burst"},
		{"{" RT ",\"per\":\"galaxy\"}", "invalid_parameter", "per"},
		{"{" RT ",\"scope\":\"platform\",\"per\":\"customer\"}", "invalid_parameter", "per"},
		/* enforcement */
		{"{" Q ",\"enforcement\":\"strict\"}", "invalid_parameter", "enforcement"},
		{"{" Q ",\"enforcement\":true}", "invalid_parameter", "enforcement"},
		/* a workflow guard ignores enforcement, but only one of its values */
		{"{\"kind\":\"workflow\",\"max_tool_calls\":5,\"enforcement\":\"x\"}", "invalid_parameter", "enforcement"},
		{"{\"kind\":\"workflow\",\"max_tool_calls\":5,\"enforcement\":1}", "invalid_parameter", "enforcement"},
		/* thresholds: fractions in (0, 1], unique */
		{"{" Q ",\"thresholds\":[0]}", "invalid_parameter", "thresholds"},
		{"{" Q ",\"thresholds\":[-0.5]}", "invalid_parameter", "thresholds"},
		{"{" Q ",\"thresholds\":[1.01]}", "invalid_parameter", "thresholds"},
		{"{" Q ",\"thresholds\":[0.5,0.5]}", "invalid_parameter", "thresholds"},
		{"{" Q ",\"thresholds\":[\"0.5\"]}", "invalid_parameter", "thresholds"},
		{"{" Q ",\"thresholds\":0.5}", "invalid_parameter", "thresholds"},
		/* filter: an object of strings, and for a quota only the meter's group_by dimensions */
		{"{" Q ",\"filter\":\"model\"}", "invalid_parameter", "filter"},
		{"{" Q ",\"filter\":[\"model\"]}", "invalid_parameter", "filter"},
		{"{" Q ",\"filter\":{\"model\":4}}", "invalid_parameter", "filter.model"},
		{"{" Q ",\"filter\":{\"model\":\"\"}}", "invalid_parameter", "filter.model"},
		{"{" Q ",\"filter\":{\"region\":\"eu\"}}", "invalid_parameter", "filter"},
		{"{" Q ",\"filter\":{\"model\":\"gpt-4\",\"region\":\"eu\"}}", "invalid_parameter", "filter"},
		/* the built-in requests meter has group_by []: a quota on it takes no filter */
		{"{\"meter\":\"requests\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":10,\"filter\":{\"a\":\"b\"}}", "invalid_parameter", "filter"},
		/* fail_mode */
		{"{" Q ",\"fail_mode\":\"maybe\"}", "invalid_parameter", "fail_mode"},
		/* on_exceed */
		{"{" Q ",\"on_exceed\":\"deny\"}", "invalid_parameter", "on_exceed"},
		{"{" Q ",\"on_exceed\":{}}", "missing_parameter", "on_exceed.action"},
		{"{" Q ",\"on_exceed\":{\"action\":\"explode\"}}", "invalid_parameter", "on_exceed.action"},
		{"{" Q ",\"on_exceed\":{\"action\":\"fallback\"}}", "missing_parameter", "on_exceed.dimensions"},
		{"{" Q ",\"on_exceed\":{\"action\":\"fallback\",\"dimensions\":{}}}", "invalid_parameter", "on_exceed.dimensions"},
		{"{" Q ",\"on_exceed\":{\"action\":\"fallback\",\"dimensions\":{\"model\":1}}}", "invalid_parameter", "on_exceed.dimensions.model"},
		{"{" Q ",\"on_exceed\":{\"action\":\"deny\",\"dimensions\":{\"model\":\"x\"}}}", "invalid_parameter", "on_exceed.dimensions"},
		{"{" Q ",\"on_exceed\":{\"action\":\"deny\",\"then\":1}}", "unknown_parameter", "on_exceed.then"},
		/* unknown fields and fields of another kind */
		{"{" Q ",\"colour\":\"red\"}", "unknown_parameter", "colour"},
		{"{" Q ",\"window\":60}", NULL, "window"},
		{"{" Q ",\"algorithm\":\"token_bucket\"}", NULL, "algorithm"},
		{"{" Q ",\"burst\":3}", NULL, "burst"},
		{"{" Q ",\"per\":\"ip\"}", NULL, "per"},
		{"{" RT ",\"period\":\"day\"}", NULL, "period"},
		{"{" Q ",\"max_depth\":3}", NULL, "max_depth"},
		/* ids */
		{"{\"id\":\"a b\"," Q "}", "invalid_parameter", "id"},
		{"{\"id\":5," Q "}", "invalid_parameter", "id"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct resp r = req(&S, "POST", "/v1/limits", t.key, bad[i].body, NULL);
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
	/* a bad request never changes state */
	ck_assert_int_eq(list_len(t.key, "/v1/limits"), 0);

	/* the edges that are fine */
	expectf(&S, t.key, "POST", "/v1/limits", 201, "{\"meter\":\"tokens\",\"kind\":\"rate\",\"window\":1,\"limit\":10}");
	expectf(&S, t.key, "POST", "/v1/limits", 201, "{\"meter\":\"tokens\",\"kind\":\"rate\",\"window\":2678400,\"limit\":10}");
	expectf(&S, t.key, "POST", "/v1/limits", 201, "{" Q ",\"thresholds\":[1]}");
	expectf(&S, t.key, "POST", "/v1/limits", 201, "{" Q ",\"thresholds\":[0.000001,0.999999]}");
	expectf(&S, t.key, "POST", "/v1/limits", 201, "{" Q ",\"filter\":{\"model\":\"gpt-4\"}}");
	expectf(&S, t.key, "POST", "/v1/limits", 201, "{\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":0}");
	expectf(&S, t.key, "POST", "/v1/limits", 201, "{" Q ",\"scope\":\"customer\",\"customer_id\":\"c1\"}");
	/* where a tier or customer is not needed, null is the same as leaving it out */
	expectf(&S, t.key, "POST", "/v1/limits", 201, "{" Q ",\"scope\":\"default\",\"tier\":null,\"customer_id\":null}");
	/* a rate limit's filter may name any dimension (rate counters are not rebuilt from rollups) */
	expectf(&S, t.key, "POST", "/v1/limits", 201, "{" RT ",\"filter\":{\"model\":\"gpt-4\"}}");
	/* on requests too; a quota on requests with an empty filter, and a guard's known enforcement, are fine */
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"meter\":\"requests\",\"kind\":\"rate\",\"window\":60,\"limit\":10,\"filter\":{\"a\":\"b\"}}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"meter\":\"requests\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":10,\"filter\":{}}");
	expectf(&S, t.key, "POST", "/v1/limits", 201, "{\"kind\":\"workflow\",\"max_tool_calls\":5,\"enforcement\":\"soft\"}");
	ck_assert_int_eq(list_len(t.key, "/v1/limits"), 12);
#undef Q
#undef RT
}
END_TEST

START_TEST(limit_patch)
{
	struct tenant t;
	limits_tenant(&t);
	struct resp r = req(&S, "POST", "/v1/limits", t.key,
			    "{\"id\":\"q\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":10,"
			    "\"thresholds\":[0.5],\"filter\":{\"model\":\"gpt-4\"},\"enforcement\":\"soft\"}",
			    NULL);
	ck_status(r, 201);
	resp_free(&r);

	/* merge: only limit changes */
	r = req(&S, "PATCH", "/v1/limits/q", t.key, "{\"limit\":20}", NULL);
	ck_status(r, 200);
	ck_qty(r.json, "limit", 20);
	ck_assert_str_eq(jstr(r.json, "period"), "day");
	ck_assert_str_eq(jstr(r.json, "enforcement"), "soft");
	ck_assert_str_eq(jstr(r.json, "filter.model"), "gpt-4");
	ck_qty(r.json, "thresholds.0", 0.5);
	resp_free(&r);
	r = req(&S, "GET", "/v1/limits/q", t.key, NULL, NULL);
	ck_qty(r.json, "limit", 20);
	resp_free(&r);

	/* re-validated as a whole */
	char *before = body_of(t.key, "/v1/limits/q");
	static const struct {
		const char *body, *param;
	} bad[] = {
		{"{\"limit\":-5}", "limit"},
		{"{\"period\":\"fortnight\"}", "period"},
		{"{\"window\":60}", "window"},
		{"{\"scope\":\"tier\"}", "tier"},
		{"{\"scope\":\"tier\",\"tier\":\"ghost\"}", "tier"},
		{"{\"scope\":\"customer\",\"customer_id\":\"ghost\"}", "customer_id"},
		{"{\"thresholds\":[2]}", "thresholds"},
		{"{\"filter\":{\"region\":\"eu\"}}", "filter"},
		{"{\"meter\":\"ghost\"}", "meter"},
		{"{\"colour\":\"red\"}", "colour"},
		{"{\"id\":\"q2\"}", "id"},
		{"{\"kind\":\"rate\"}", "kind"},
		{"{\"kind\":\"rate\",\"window\":60,\"period\":null}", "kind"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = req(&S, "PATCH", "/v1/limits/q", t.key, bad[i].body, NULL);
		ck_assert_msg(r.status == 400, "PATCH %s: expected 400, got %ld: %s", bad[i].body, r.status, r.body);
		ck_assert_msg(json_is_string(jpath(r.json, "error.param")) && strcmp(jstr(r.json, "error.param"), bad[i].param) == 0,
			      "PATCH %s: param should be '%s': %s", bad[i].body, bad[i].param, r.body);
		resp_free(&r);
	}
	char *after = body_of(t.key, "/v1/limits/q");
	ck_assert_str_eq(before, after);
	free(before);
	free(after);

	/* the same id and kind may be sent; null removes an optional field (back to its default) */
	r = req(&S, "PATCH", "/v1/limits/q", t.key, "{\"id\":\"q\",\"kind\":\"quota\",\"thresholds\":null,\"filter\":null,"
		"\"enforcement\":null}", NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "thresholds")), 0);
	ck_assert_int_eq(json_object_size(jpath(r.json, "filter")), 0);
	ck_assert_str_eq(jstr(r.json, "enforcement"), "hard");
	ck_qty(r.json, "limit", 20);
	resp_free(&r);
	/* scope moves with its companion */
	r = req(&S, "PATCH", "/v1/limits/q", t.key, "{\"scope\":\"tier\",\"tier\":\"pro\"}", NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "scope"), "tier");
	ck_assert_str_eq(jstr(r.json, "tier"), "pro");
	resp_free(&r);
	ck_assert_int_eq(list_len(t.key, "/v1/limits?tier=pro"), 1);
	expect_status(&S, "PATCH", "/v1/limits/ghost", t.key, "{\"limit\":1}", 404);
	expect_status(&S, "PATCH", "/v1/limits/q", t.key, "[1]", 400);
}
END_TEST

START_TEST(limit_list_filters_and_delete)
{
	struct tenant t;
	limits_tenant(&t);
	expectf(&S, t.key, "POST", "/v1/customers", 201, "{\"id\":\"c2\"}");
	expectf(&S, t.key, "POST", "/v1/tiers", 201, "{\"id\":\"team\"}");
	expectf(&S, t.key, "POST", "/v1/limits", 201, "{\"id\":\"a\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":1}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"b\",\"meter\":\"requests\",\"kind\":\"rate\",\"window\":60,\"limit\":1,\"scope\":\"tier\",\"tier\":\"pro\"}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"c\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"hour\",\"limit\":1,\"scope\":\"tier\",\"tier\":\"team\"}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"d\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"week\",\"limit\":1,\"scope\":\"customer\",\"customer_id\":\"c1\"}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"e\",\"meter\":\"requests\",\"kind\":\"quota\",\"period\":\"month\",\"limit\":1,\"scope\":\"customer\",\"customer_id\":\"c2\"}");
	expectf(&S, t.key, "POST", "/v1/limits", 201,
		"{\"id\":\"f\",\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"all_time\",\"limit\":1,\"scope\":\"platform\"}");

	static const struct {
		const char *q, *ids;
	} cases[] = {
		{"", "a,b,c,d,e,f"},
		{"?scope=default", "a"},
		{"?scope=tier", "b,c"},
		{"?scope=customer", "d,e"},
		{"?scope=platform", "f"},
		{"?tier=pro", "b"},
		{"?tier=team", "c"},
		{"?tier=ghost", ""},
		{"?customer_id=c1", "d"},
		{"?customer_id=c2", "e"},
		{"?meter=tokens", "a,c,d,f"},
		{"?meter=requests", "b,e"},
		{"?meter=tokens&scope=tier", "c"},
		{"?scope=customer&meter=requests", "e"},
		{"?limit=2", "a,b"},
		{"?limit=2&starting_after=b", "c,d"},
		{"?meter=tokens&limit=2&starting_after=c", "d,f"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char path[160], got[200] = "";
		snprintf(path, sizeof(path), "/v1/limits%s", cases[i].q);
		struct resp r = req(&S, "GET", path, t.key, NULL, NULL);
		ck_assert_msg(r.status == 200, "GET %s: %ld %s", path, r.status, r.body);
		json_t *e;
		size_t k;
		json_array_foreach(jpath(r.json, "data"), k, e) {
			if (k)
				strcat(got, ",");
			strcat(got, json_string_value(json_object_get(e, "id")));
		}
		ck_assert_msg(strcmp(got, cases[i].ids) == 0, "GET %s: got [%s], want [%s]", path, got, cases[i].ids);
		resp_free(&r);
	}
	struct resp r = req(&S, "GET", "/v1/limits?scope=galaxy", t.key, NULL, NULL);
	ck_bad(r, 400, "invalid_parameter", "scope");
	resp_free(&r);
	r = req(&S, "GET", "/v1/limits?colour=red", t.key, NULL, NULL);
	ck_bad(r, 400, "unknown_parameter", "colour");
	resp_free(&r);
	r = req(&S, "GET", "/v1/limits?limit=2", t.key, NULL, NULL);
	ck_assert(json_is_true(jpath(r.json, "has_more")));
	resp_free(&r);

	/* a tier used by a tier limit cannot be deleted */
	r = req(&S, "DELETE", "/v1/tiers/pro", t.key, NULL, NULL);
	ck_status(r, 409);
	ck_assert_str_eq(jstr(r.json, "error.type"), "invalid_request");
	resp_free(&r);
	expect_status(&S, "GET", "/v1/tiers/pro", t.key, NULL, 200);
	r = req(&S, "DELETE", "/v1/limits/b", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "id"), "b");
	ck_assert(json_is_true(jpath(r.json, "deleted")));
	resp_free(&r);
	expect_status(&S, "GET", "/v1/limits/b", t.key, NULL, 404);
	expect_status(&S, "DELETE", "/v1/limits/b", t.key, NULL, 404);
	expectf(&S, t.key, "DELETE", "/v1/tiers/pro", 200, NULL);
	ck_assert_int_eq(list_len(t.key, "/v1/limits"), 5);

	/* a tier limit for a tier that is gone, or for one never made */
	r = req(&S, "POST", "/v1/limits", t.key,
		"{\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"day\",\"limit\":1,\"scope\":\"tier\",\"tier\":\"pro\"}", NULL);
	ck_bad(r, 400, "tier_not_found", "tier");
	resp_free(&r);

	/* limits of one tenant are invisible to another */
	struct tenant o = tenant_new(&S, false);
	ck_assert_int_eq(list_len(o.key, "/v1/limits"), 0);
	expect_status(&S, "GET", "/v1/limits/a", o.key, NULL, 404);
	expect_status(&S, "DELETE", "/v1/limits/a", o.key, NULL, 404);
	ck_assert_int_eq(list_len(t.key, "/v1/limits"), 5);
}
END_TEST

START_TEST(tier_limits_inline)
{
	/* POST /v1/tiers with "limits": each is a tier-scope limit of that tier */
	struct tenant t;
	limits_tenant(&t);
	struct resp r = req(&S, "POST", "/v1/tiers", t.key,
			    "{\"id\":\"team\",\"limits\":[{\"id\":\"team-q\",\"meter\":\"tokens\",\"kind\":\"quota\","
			    "\"period\":\"day\",\"limit\":7}]}",
			    NULL);
	ck_status(r, 201);
	resp_free(&r);
	r = req(&S, "GET", "/v1/limits/team-q", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "scope"), "tier");
	ck_assert_str_eq(jstr(r.json, "tier"), "team");
	ck_qty(r.json, "limit", 7);
	resp_free(&r);
	/* a bad inline limit creates neither the tier nor the limit */
	r = req(&S, "POST", "/v1/tiers", t.key,
		"{\"id\":\"gold\",\"limits\":[{\"meter\":\"tokens\",\"kind\":\"quota\",\"period\":\"year\",\"limit\":7}]}", NULL);
	ck_bad(r, 400, "invalid_parameter", "limits[0].period");
	resp_free(&r);
	expect_status(&S, "GET", "/v1/tiers/gold", t.key, NULL, 404);
	ck_assert_int_eq(list_len(t.key, "/v1/limits"), 1);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("meters_limits");
	TCase *tc = tcase_create("meters_limits");

	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, meter_crud);
	tcase_add_test(tc, meter_requests_builtin);
	tcase_add_test(tc, meter_bad_inputs);
	tcase_add_test(tc, meter_in_use_conflict);
	tcase_add_test(tc, limit_create_every_field);
	tcase_add_test(tc, limit_validation);
	tcase_add_test(tc, limit_patch);
	tcase_add_test(tc, limit_list_filters_and_delete);
	tcase_add_test(tc, tier_limits_inline);
	suite_add_tcase(s, tc);
	return run_suite(s);
}

/* test_customers.c — tenant settings, customers, tiers, paging, Idempotency-Key and tenant isolation, over real HTTP. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static struct srv S;

static void setup(void)
{
	srv_start(&S, NULL);
	srv_settle(&S);
}

static void teardown(void)
{
	srv_stop(&S);
}

/* POST and expect status; returns nothing (the response is freed). */
static void post_ok(const char *key, const char *path, const char *body, long want)
{
	struct resp r = req(&S, "POST", path, key, body, NULL);
	ck_assert_msg(r.status == want, "POST %s %s: expected %ld, got %ld: %s", path, body, want, r.status, r.body);
	resp_free(&r);
}

/* GET path and return the body text (malloc'd) for before/after comparisons. */
static char *get_body(const char *key, const char *path)
{
	struct resp r = req(&S, "GET", path, key, NULL, NULL);
	char *b = strdup(r.body);
	resp_free(&r);
	return b;
}

static size_t list_len(const char *key, const char *path)
{
	struct resp r = req(&S, "GET", path, key, NULL, NULL);
	ck_status(r, 200);
	size_t n = json_array_size(jpath(r.json, "data"));
	resp_free(&r);
	return n;
}

/* ---- tenant settings ---- */

START_TEST(tenant_settings)
{
	struct tenant t = tenant_new(&S, false);
	struct resp r = req(&S, "GET", "/v1/tenant", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "id"), t.id);
	ck_assert(json_is_null(jpath(r.json, "default_tier")));
	ck_assert(json_is_true(jpath(r.json, "auto_create_customers")));
	resp_free(&r);

	/* the default tier must exist */
	char *before = get_body(t.key, "/v1/tenant");
	r = req(&S, "PATCH", "/v1/tenant", t.key, "{\"default_tier\":\"free\"}", NULL);
	ck_err(r, 400, "invalid_request", "tier_not_found", "default_tier");
	resp_free(&r);
	/* a bad field fails the whole patch: the good one is not applied either */
	r = req(&S, "PATCH", "/v1/tenant", t.key, "{\"auto_create_customers\":false,\"default_tier\":\"free\"}", NULL);
	ck_err(r, 400, "invalid_request", "tier_not_found", "default_tier");
	resp_free(&r);
	r = req(&S, "PATCH", "/v1/tenant", t.key, "{\"auto_create_customers\":false,\"default_tier\":\"a b\"}", NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "default_tier");
	resp_free(&r);
	char *after = get_body(t.key, "/v1/tenant");
	ck_assert_str_eq(before, after);
	free(before);
	free(after);

	post_ok(t.key, "/v1/tiers", "{\"id\":\"free\"}", 201);
	r = req(&S, "PATCH", "/v1/tenant", t.key, "{\"default_tier\":\"free\"}", NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "default_tier"), "free");
	ck_assert(json_is_true(jpath(r.json, "auto_create_customers")));
	resp_free(&r);
	r = req(&S, "PATCH", "/v1/tenant", t.key, "{\"auto_create_customers\":false}", NULL);
	ck_status(r, 200);
	ck_assert(json_is_false(jpath(r.json, "auto_create_customers")));
	ck_assert_str_eq(jstr(r.json, "default_tier"), "free");
	resp_free(&r);
	r = req(&S, "GET", "/v1/tenant", t.key, NULL, NULL);
	ck_assert_str_eq(jstr(r.json, "default_tier"), "free");
	ck_assert(json_is_false(jpath(r.json, "auto_create_customers")));
	resp_free(&r);
	/* an empty patch changes nothing */
	r = req(&S, "PATCH", "/v1/tenant", t.key, "{}", NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "default_tier"), "free");
	resp_free(&r);
	/* null clears the default tier */
	r = req(&S, "PATCH", "/v1/tenant", t.key, "{\"default_tier\":null,\"auto_create_customers\":true}", NULL);
	ck_status(r, 200);
	ck_assert(json_is_null(jpath(r.json, "default_tier")));
	ck_assert(json_is_true(jpath(r.json, "auto_create_customers")));
	resp_free(&r);
	r = req(&S, "PATCH", "/v1/tenant", t.key, "{\"auto_create_customers\":null}", NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "auto_create_customers");
	resp_free(&r);
	r = req(&S, "PATCH", "/v1/tenant", t.key, NULL, NULL);
	ck_err(r, 400, "invalid_request", "invalid_json", NULL);
	resp_free(&r);
}
END_TEST

/* ---- customers ---- */

START_TEST(customer_crud)
{
	struct tenant t = tenant_new(&S, false);
	struct resp r = req(&S, "POST", "/v1/customers", t.key,
			    "{\"id\":\"u_28f3a\",\"name\":\"Ada\",\"email\":\"ada@example.com\"}", NULL);
	ck_status(r, 201);
	ck_assert_str_eq(jstr(r.json, "id"), "u_28f3a");
	ck_assert_str_eq(jstr(r.json, "name"), "Ada");
	ck_assert_str_eq(jstr(r.json, "email"), "ada@example.com");
	ck_assert(json_is_null(jpath(r.json, "tier")));
	ck_assert(json_is_null(jpath(r.json, "parent_id")));
	ck_assert(json_is_object(jpath(r.json, "metadata")));
	ck_assert_int_eq(json_object_size(jpath(r.json, "metadata")), 0);
	time_parse(jstr(r.json, "created_at"));
	resp_free(&r);

	r = req(&S, "POST", "/v1/customers", t.key, "{\"id\":\"u_28f3a\",\"name\":\"Other\"}", NULL);
	ck_err(r, 409, "invalid_request", "customer_exists", "id");
	resp_free(&r);
	r = req(&S, "GET", "/v1/customers/u_28f3a", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "name"), "Ada");
	resp_free(&r);

	r = req(&S, "PATCH", "/v1/customers/u_28f3a", t.key, "{\"name\":\"Ada L.\",\"email\":null}", NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "name"), "Ada L.");
	ck_assert(json_is_null(jpath(r.json, "email")));
	resp_free(&r);
	r = req(&S, "PATCH", "/v1/customers/nobody", t.key, "{\"name\":\"x\"}", NULL);
	ck_err(r, 404, "invalid_request", "customer_not_found", NULL);
	resp_free(&r);
	r = req(&S, "PATCH", "/v1/customers/u_28f3a", t.key, "{\"id\":\"renamed\"}", NULL);
	ck_err(r, 400, "invalid_request", "unknown_parameter", "id");
	resp_free(&r);

	r = req(&S, "DELETE", "/v1/customers/u_28f3a", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert(json_is_true(jpath(r.json, "deleted")));
	resp_free(&r);
	r = req(&S, "GET", "/v1/customers/u_28f3a", t.key, NULL, NULL);
	ck_err(r, 404, "invalid_request", "customer_not_found", NULL);
	resp_free(&r);
	r = req(&S, "DELETE", "/v1/customers/u_28f3a", t.key, NULL, NULL);
	ck_err(r, 404, "invalid_request", "customer_not_found", NULL);
	resp_free(&r);
	/* the id is free again */
	post_ok(t.key, "/v1/customers", "{\"id\":\"u_28f3a\"}", 201);
}
END_TEST

START_TEST(customer_metadata_exact)
{
	struct tenant t = tenant_new(&S, false);
	const char *meta = "{\"price\":0.30,\"n\":[1,2.50,-7,1.0e2,0.000001],\"nested\":{\"s\":\"x\",\"b\":true,\"z\":null},"
			   "\"unicode\":\"caf\\u00e9 \\u2713\"}";
	struct resp r = reqf(&S, "POST", "/v1/customers", t.key, "{\"id\":\"m\",\"metadata\":%s}", meta);
	ck_status(r, 201);
	ck_assert_ptr_nonnull(strstr(r.body, "\"price\":0.30"));
	resp_free(&r);
	r = req(&S, "GET", "/v1/customers/m", t.key, NULL, NULL);
	ck_status(r, 200);
	/* the lexemes, not doubles: 0.30 stays 0.30, 2.50 stays 2.50 */
	ck_assert_ptr_nonnull(strstr(r.body, "\"price\":0.30"));
	ck_assert_ptr_nonnull(strstr(r.body, "2.50"));
	ck_assert_ptr_nonnull(strstr(r.body, "0.000001"));
	ck_assert_str_eq(jstr(r.json, "metadata.nested.s"), "x");
	ck_assert(json_is_true(jpath(r.json, "metadata.nested.b")));
	ck_assert(json_is_null(jpath(r.json, "metadata.nested.z")));
	ck_assert_str_eq(jstr(r.json, "metadata.unicode"), "caf\xc3\xa9 \xe2\x9c\x93");
	resp_free(&r);

	/* PATCH replaces the object; null empties it */
	r = req(&S, "PATCH", "/v1/customers/m", t.key, "{\"metadata\":{\"plan\":\"b\",\"v\":0.10}}", NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_object_size(jpath(r.json, "metadata")), 2);
	ck_assert_str_eq(jstr(r.json, "metadata.plan"), "b");
	ck_assert_ptr_nonnull(strstr(r.body, "\"v\":0.10"));
	ck_assert_ptr_null(jpath(r.json, "metadata.price"));
	resp_free(&r);
	r = req(&S, "PATCH", "/v1/customers/m", t.key, "{\"metadata\":null}", NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_object_size(jpath(r.json, "metadata")), 0);
	resp_free(&r);

	/* numbers PostgreSQL could not store are refused, naming where they are */
	r = req(&S, "PATCH", "/v1/customers/m", t.key, "{\"metadata\":{\"ok\":1,\"x\":[0,1e-20000]}}", NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "metadata.x.1");
	resp_free(&r);
	r = req(&S, "POST", "/v1/customers", t.key, "{\"id\":\"m3\",\"metadata\":{\"z\":0e-99999}}", NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "metadata.z");
	resp_free(&r);
	expect_status(&S, "GET", "/v1/customers/m3", t.key, NULL, 404);
	/* the smallest that is fine comes back as stored */
	r = req(&S, "PATCH", "/v1/customers/m", t.key, "{\"metadata\":{\"tiny\":1e-1000}}", NULL);
	ck_status(r, 200);
	ck_assert_ptr_nonnull(strstr(r.body, "\"tiny\":0.000000000"));
	resp_free(&r);
	r = req(&S, "GET", "/v1/customers/m", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_ptr_nonnull(strstr(r.body, "00001}"));
	resp_free(&r);

	/* too big */
	char *big = malloc(20000);
	strcpy(big, "{\"id\":\"m2\",\"metadata\":{\"blob\":\"");
	memset(big + strlen(big), 'x', 9000);
	strcpy(big + strlen("{\"id\":\"m2\",\"metadata\":{\"blob\":\"") + 9000, "\"}}");
	r = req(&S, "POST", "/v1/customers", t.key, big, NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "metadata");
	resp_free(&r);
	free(big);
	expect_status(&S, "GET", "/v1/customers/m2", t.key, NULL, 404);
}
END_TEST

/* The bytes of "metadata" in a customer read, as sent (no braces inside its strings here). */
static size_t metadata_len(const char *key, const char *customer)
{
	char path[128];
	snprintf(path, sizeof(path), "/v1/customers/%s", customer);
	struct resp r = req(&S, "GET", path, key, NULL, NULL);
	ck_status(r, 200);
	const char *m = strstr(r.body, "\"metadata\":"), *p;
	ck_assert_ptr_nonnull(m);
	m += strlen("\"metadata\":");
	int depth = 0;
	for (p = m; *p; p++) {
		depth += *p == '{' || *p == '[';
		depth -= *p == '}' || *p == ']';
		if (depth == 0)
			break;
	}
	size_t n = (size_t)(p - m) + 1;
	resp_free(&r);
	return n;
}

/* A 400 naming metadata (its body is not shown when it is not: too long for a message); frees r. */
static void metadata_refused(struct resp *r)
{
	ck_assert_msg(r->status == 400, "expected 400, got %ld", r->status);
	ck_err(*r, 400, "invalid_request", "invalid_parameter", "metadata");
	resp_free(r);
}

/* metadata is at most 8,192 bytes as stored: jsonb writes numbers out in full (1e999 is 1,000 digits), so a
 * short body can store kilobytes; the limit counts what is stored, to the byte. */
START_TEST(customer_metadata_size_as_stored)
{
	struct tenant t = tenant_new(&S, false);
	const char *fields = "\"a\":1e999,\"b\":-12.50e-3,\"c\":[1.0e2,5E+2,0e10,-0.0,1.25e1],\"d\":1e-998,\"s\":\"x\"";
	struct resp r = reqf(&S, "POST", "/v1/customers", t.key, "{\"id\":\"probe\",\"metadata\":{%s}}", fields);
	ck_status(r, 201);
	resp_free(&r);
	size_t probe = metadata_len(t.key, "probe");
	ck_assert_uint_gt(probe, 2000); /* far more than the 90 bytes sent */

	/* padded to exactly 8,192 bytes as stored: fine; one more byte: refused, naming metadata */
	size_t pad = 8192 - probe - strlen(",\"p\":\"\"");
	char *x = malloc(pad + 2);
	memset(x, 'x', pad + 1);
	x[pad] = '\0';
	r = reqf(&S, "POST", "/v1/customers", t.key, "{\"id\":\"full\",\"metadata\":{%s,\"p\":\"%s\"}}", fields, x);
	ck_status(r, 201);
	resp_free(&r);
	ck_assert_uint_eq(metadata_len(t.key, "full"), 8192);
	x[pad] = 'x';
	x[pad + 1] = '\0';
	r = reqf(&S, "POST", "/v1/customers", t.key, "{\"id\":\"over\",\"metadata\":{%s,\"p\":\"%s\"}}", fields, x);
	metadata_refused(&r);
	expect_status(&S, "GET", "/v1/customers/over", t.key, NULL, 404);
	char *before = get_body(t.key, "/v1/customers/probe");
	r = reqf(&S, "PATCH", "/v1/customers/probe", t.key, "{\"name\":\"n\",\"metadata\":{%s,\"p\":\"%s\"}}", fields, x);
	metadata_refused(&r);
	char *after = get_body(t.key, "/v1/customers/probe");
	ck_assert_str_eq(after, before);
	free(before);
	free(after);
	free(x);

	/* a 350-byte body of 1e300s would store 9 KB */
	char body[1024] = "{\"id\":\"tiny\",\"metadata\":{";
	for (int i = 0; i < 30; i++)
		snprintf(body + strlen(body), sizeof(body) - strlen(body), "%s\"k%d\":1e300", i ? "," : "", i);
	strcat(body, "}}");
	ck_assert_uint_lt(strlen(body), 400);
	r = req(&S, "POST", "/v1/customers", t.key, body, NULL);
	metadata_refused(&r);
	expect_status(&S, "GET", "/v1/customers/tiny", t.key, NULL, 404);
}
END_TEST

START_TEST(customer_tier_defaults_and_promotion)
{
	struct tenant t = tenant_new(&S, false);
	post_ok(t.key, "/v1/tiers", "{\"id\":\"free\",\"name\":\"Free\"}", 201);
	post_ok(t.key, "/v1/tiers", "{\"id\":\"pro\",\"name\":\"Pro\"}", 201);

	/* no default tier yet: no tier */
	struct resp r = req(&S, "POST", "/v1/customers", t.key, "{\"id\":\"early\"}", NULL);
	ck_status(r, 201);
	ck_assert(json_is_null(jpath(r.json, "tier")));
	resp_free(&r);

	expect_status(&S, "PATCH", "/v1/tenant", t.key, "{\"default_tier\":\"free\"}", 200);
	r = req(&S, "POST", "/v1/customers", t.key, "{\"id\":\"c1\"}", NULL);
	ck_status(r, 201);
	ck_assert_str_eq(jstr(r.json, "tier"), "free");
	resp_free(&r);
	r = req(&S, "POST", "/v1/customers", t.key, "{\"id\":\"c2\",\"tier\":\"pro\"}", NULL);
	ck_status(r, 201);
	ck_assert_str_eq(jstr(r.json, "tier"), "pro");
	resp_free(&r);
	/* an explicit null means no tier */
	r = req(&S, "POST", "/v1/customers", t.key, "{\"id\":\"c3\",\"tier\":null}", NULL);
	ck_status(r, 201);
	ck_assert(json_is_null(jpath(r.json, "tier")));
	resp_free(&r);
	r = req(&S, "POST", "/v1/customers", t.key, "{\"id\":\"c4\",\"tier\":\"enterprise\"}", NULL);
	ck_err(r, 400, "invalid_request", "tier_not_found", "tier");
	resp_free(&r);
	ck_assert_int_eq(list_len(t.key, "/v1/customers"), 4);

	/* promote */
	r = req(&S, "PATCH", "/v1/customers/c1", t.key, "{\"tier\":\"pro\"}", NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "tier"), "pro");
	resp_free(&r);
	r = req(&S, "GET", "/v1/customers/c1", t.key, NULL, NULL);
	ck_assert_str_eq(jstr(r.json, "tier"), "pro");
	resp_free(&r);
	/* to a tier that does not exist: refused, nothing changes (not even the name sent along) */
	r = req(&S, "PATCH", "/v1/customers/c1", t.key, "{\"name\":\"changed\",\"tier\":\"ghost\"}", NULL);
	ck_err(r, 400, "invalid_request", "tier_not_found", "tier");
	resp_free(&r);
	r = req(&S, "GET", "/v1/customers/c1", t.key, NULL, NULL);
	ck_assert_str_eq(jstr(r.json, "tier"), "pro");
	ck_assert(json_is_null(jpath(r.json, "name")));
	resp_free(&r);

	/* filters */
	r = req(&S, "GET", "/v1/customers?tier=pro", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 2);
	ck_assert_str_eq(jstr(r.json, "data.0.id"), "c1");
	ck_assert_str_eq(jstr(r.json, "data.1.id"), "c2");
	resp_free(&r);
	ck_assert_int_eq(list_len(t.key, "/v1/customers?tier=free"), 0);
	ck_assert_int_eq(list_len(t.key, "/v1/customers?tier=ghost"), 0);
	r = req(&S, "GET", "/v1/customers?tier=a%20b", t.key, NULL, NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "tier");
	resp_free(&r);
	r = req(&S, "GET", "/v1/customers?colour=red", t.key, NULL, NULL);
	ck_err(r, 400, "invalid_request", "unknown_parameter", "colour");
	resp_free(&r);
}
END_TEST

START_TEST(customer_organisations)
{
	struct tenant t = tenant_new(&S, false);
	post_ok(t.key, "/v1/customers", "{\"id\":\"org\"}", 201);
	post_ok(t.key, "/v1/customers", "{\"id\":\"org2\"}", 201);
	struct resp r = req(&S, "POST", "/v1/customers", t.key, "{\"id\":\"m1\",\"parent_id\":\"org\"}", NULL);
	ck_status(r, 201);
	ck_assert_str_eq(jstr(r.json, "parent_id"), "org");
	resp_free(&r);
	post_ok(t.key, "/v1/customers", "{\"id\":\"m2\",\"parent_id\":\"org\"}", 201);
	post_ok(t.key, "/v1/customers", "{\"id\":\"solo\"}", 201);

	/* one level only: a member cannot have members */
	r = req(&S, "POST", "/v1/customers", t.key, "{\"id\":\"deep\",\"parent_id\":\"m1\"}", NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "parent_id");
	resp_free(&r);
	r = req(&S, "PATCH", "/v1/customers/solo", t.key, "{\"parent_id\":\"m1\"}", NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "parent_id");
	resp_free(&r);
	/* an organisation with members cannot get a parent */
	r = req(&S, "PATCH", "/v1/customers/org", t.key, "{\"parent_id\":\"org2\"}", NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "parent_id");
	resp_free(&r);
	/* nor be its own parent */
	r = req(&S, "PATCH", "/v1/customers/solo", t.key, "{\"parent_id\":\"solo\"}", NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "parent_id");
	resp_free(&r);
	r = req(&S, "POST", "/v1/customers", t.key, "{\"id\":\"selfish\",\"parent_id\":\"selfish\"}", NULL);
	ck_status(r, 400);
	ck_assert_str_eq(jstr(r.json, "error.param"), "parent_id");
	resp_free(&r);
	/* the parent must exist */
	r = req(&S, "POST", "/v1/customers", t.key, "{\"id\":\"orphan\",\"parent_id\":\"ghost\"}", NULL);
	ck_err(r, 400, "invalid_request", "customer_not_found", "parent_id");
	resp_free(&r);
	ck_assert_int_eq(list_len(t.key, "/v1/customers"), 5);
	r = req(&S, "GET", "/v1/customers/solo", t.key, NULL, NULL);
	ck_assert(json_is_null(jpath(r.json, "parent_id")));
	resp_free(&r);
	r = req(&S, "GET", "/v1/customers/org", t.key, NULL, NULL);
	ck_assert(json_is_null(jpath(r.json, "parent_id")));
	resp_free(&r);

	/* list by organisation */
	r = req(&S, "GET", "/v1/customers?parent_id=org", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 2);
	ck_assert_str_eq(jstr(r.json, "data.0.id"), "m1");
	ck_assert_str_eq(jstr(r.json, "data.1.id"), "m2");
	resp_free(&r);
	ck_assert_int_eq(list_len(t.key, "/v1/customers?parent_id=org2"), 0);

	/* an organisation with members cannot be deleted */
	r = req(&S, "DELETE", "/v1/customers/org", t.key, NULL, NULL);
	ck_err(r, 409, "invalid_request", "customer_has_members", NULL);
	resp_free(&r);
	expect_status(&S, "GET", "/v1/customers/org", t.key, NULL, 200);

	/* move a member, detach the other: then the organisation goes */
	r = req(&S, "PATCH", "/v1/customers/m1", t.key, "{\"parent_id\":\"org2\"}", NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "parent_id"), "org2");
	resp_free(&r);
	r = req(&S, "PATCH", "/v1/customers/m2", t.key, "{\"parent_id\":null}", NULL);
	ck_status(r, 200);
	ck_assert(json_is_null(jpath(r.json, "parent_id")));
	resp_free(&r);
	expect_status(&S, "DELETE", "/v1/customers/org", t.key, NULL, 200);
	/* a former organisation's member-less peer may now join one */
	expect_status(&S, "PATCH", "/v1/customers/m2", t.key, "{\"parent_id\":\"org2\"}", 200);
	ck_assert_int_eq(list_len(t.key, "/v1/customers?parent_id=org2"), 2);
	ck_assert_int_eq(list_len(t.key, "/v1/customers?parent_id=org2&tier=none"), 0);
}
END_TEST

/* ---- tiers ---- */

START_TEST(tier_crud)
{
	struct tenant t = tenant_new(&S, false);
	struct resp r = req(&S, "POST", "/v1/tiers", t.key, "{\"id\":\"pro\",\"name\":\"Pro\"}", NULL);
	ck_status(r, 201);
	ck_assert_str_eq(jstr(r.json, "id"), "pro");
	ck_assert_str_eq(jstr(r.json, "name"), "Pro");
	resp_free(&r);
	r = req(&S, "POST", "/v1/tiers", t.key, "{\"id\":\"pro\",\"name\":\"Again\"}", NULL);
	ck_err(r, 409, "invalid_request", "tier_exists", "id");
	resp_free(&r);
	r = req(&S, "POST", "/v1/tiers", t.key, "{\"id\":\"free\"}", NULL);
	ck_status(r, 201);
	ck_assert(json_is_null(jpath(r.json, "name")));
	resp_free(&r);
	r = req(&S, "POST", "/v1/tiers", t.key, "{\"name\":\"no id\"}", NULL);
	ck_err(r, 400, "invalid_request", "missing_parameter", "id");
	resp_free(&r);

	r = req(&S, "GET", "/v1/tiers/pro", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "name"), "Pro");
	resp_free(&r);
	r = req(&S, "GET", "/v1/tiers/ghost", t.key, NULL, NULL);
	ck_err(r, 404, "invalid_request", "tier_not_found", NULL);
	resp_free(&r);
	r = req(&S, "GET", "/v1/tiers", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 2);
	ck_assert_str_eq(jstr(r.json, "data.0.id"), "pro");
	ck_assert_str_eq(jstr(r.json, "data.1.id"), "free");
	ck_assert(json_is_false(jpath(r.json, "has_more")));
	resp_free(&r);

	r = req(&S, "PATCH", "/v1/tiers/pro", t.key, "{\"name\":\"Professional\"}", NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "name"), "Professional");
	resp_free(&r);
	r = req(&S, "PATCH", "/v1/tiers/pro", t.key, "{\"id\":\"pro2\"}", NULL);
	ck_err(r, 400, "invalid_request", "unknown_parameter", "id");
	resp_free(&r);
	r = req(&S, "PATCH", "/v1/tiers/pro", t.key, "{\"name\":5}", NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "name");
	resp_free(&r);
	r = req(&S, "PATCH", "/v1/tiers/ghost", t.key, "{\"name\":\"x\"}", NULL);
	ck_err(r, 404, "invalid_request", "tier_not_found", NULL);
	resp_free(&r);
	r = req(&S, "GET", "/v1/tiers/pro", t.key, NULL, NULL);
	ck_assert_str_eq(jstr(r.json, "name"), "Professional");
	resp_free(&r);

	/* in use by a customer → 409; as the default tier → 409 */
	post_ok(t.key, "/v1/customers", "{\"id\":\"c1\",\"tier\":\"pro\"}", 201);
	r = req(&S, "DELETE", "/v1/tiers/pro", t.key, NULL, NULL);
	ck_err(r, 409, "invalid_request", "tier_in_use", NULL);
	resp_free(&r);
	expect_status(&S, "PATCH", "/v1/tenant", t.key, "{\"default_tier\":\"free\"}", 200);
	r = req(&S, "DELETE", "/v1/tiers/free", t.key, NULL, NULL);
	ck_err(r, 409, "invalid_request", "tier_in_use", NULL);
	resp_free(&r);
	ck_assert_int_eq(list_len(t.key, "/v1/tiers"), 2);

	/* once free of both, they go */
	expect_status(&S, "PATCH", "/v1/customers/c1", t.key, "{\"tier\":null}", 200);
	r = req(&S, "DELETE", "/v1/tiers/pro", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert(json_is_true(jpath(r.json, "deleted")));
	resp_free(&r);
	expect_status(&S, "PATCH", "/v1/tenant", t.key, "{\"default_tier\":null}", 200);
	expect_status(&S, "DELETE", "/v1/tiers/free", t.key, NULL, 200);
	r = req(&S, "DELETE", "/v1/tiers/free", t.key, NULL, NULL);
	ck_err(r, 404, "invalid_request", "tier_not_found", NULL);
	resp_free(&r);
	ck_assert_int_eq(list_len(t.key, "/v1/tiers"), 0);
}
END_TEST

/* ---- paging ---- */

static void page_through(const char *key, const char *list, int total, int limit, const char *const *want)
{
	char path[256], after[160] = "";
	int seen = 0;

	for (int page = 0;; page++) {
		ck_assert_int_lt(page, total + 2);
		char sep = strchr(list, '?') ? '&' : '?';
		if (after[0])
			snprintf(path, sizeof(path), "%s%climit=%d&starting_after=%s", list, sep, limit, after);
		else
			snprintf(path, sizeof(path), "%s%climit=%d", list, sep, limit);
		struct resp r = req(&S, "GET", path, key, NULL, NULL);
		ck_status(r, 200);
		json_t *data = jpath(r.json, "data");
		size_t n = json_array_size(data);
		ck_assert_int_le(n, limit);
		for (size_t i = 0; i < n; i++) {
			const char *id = json_string_value(json_object_get(json_array_get(data, i), "id"));
			if (want)
				ck_assert_str_eq(id, want[seen]);
			seen++;
			snprintf(after, sizeof(after), "%s", id);
		}
		bool more = json_is_true(jpath(r.json, "has_more"));
		ck_assert_int_eq(more, seen < total);
		resp_free(&r);
		if (!more)
			break;
	}
	ck_assert_int_eq(seen, total);
}

START_TEST(pagination)
{
	struct tenant t = tenant_new(&S, false);
	/* ids out of alphabetical order: the order is creation order, not the id's */
	const char *ids[] = {"zeta", "alpha", "mike", "bravo", "yankee", "charlie", "x-ray"};
	int n = (int)(sizeof(ids) / sizeof(ids[0]));
	char body[128];
	for (int i = 0; i < n; i++) {
		snprintf(body, sizeof(body), "{\"id\":\"%s\"}", ids[i]);
		post_ok(t.key, "/v1/customers", body, 201);
		post_ok(t.key, "/v1/tiers", body, 201);
	}
	for (int limit = 1; limit <= n + 1; limit++) {
		page_through(t.key, "/v1/customers", n, limit, ids);
		page_through(t.key, "/v1/tiers", n, limit, ids);
	}
	/* default limit 20 and the maximum 100 */
	struct resp r = req(&S, "GET", "/v1/customers", t.key, NULL, NULL);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), n);
	ck_assert(json_is_false(jpath(r.json, "has_more")));
	resp_free(&r);
	expect_status(&S, "GET", "/v1/customers?limit=100", t.key, NULL, 200);
	/* the last id: an empty page */
	r = req(&S, "GET", "/v1/customers?starting_after=x-ray", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 0);
	ck_assert(json_is_false(jpath(r.json, "has_more")));
	resp_free(&r);
	/* with a filter, the cursor still works */
	post_ok(t.key, "/v1/customers", "{\"id\":\"m1\",\"parent_id\":\"zeta\"}", 201);
	post_ok(t.key, "/v1/customers", "{\"id\":\"m2\",\"parent_id\":\"zeta\"}", 201);
	post_ok(t.key, "/v1/customers", "{\"id\":\"m3\",\"parent_id\":\"zeta\"}", 201);
	const char *members[] = {"m1", "m2", "m3"};
	page_through(t.key, "/v1/customers?parent_id=zeta", 3, 1, members);
	page_through(t.key, "/v1/customers?parent_id=zeta", 3, 2, members);
	/* a deleted item in the middle does not break the walk */
	expect_status(&S, "DELETE", "/v1/customers/mike", t.key, NULL, 200);
	r = req(&S, "GET", "/v1/customers?limit=2&starting_after=alpha", t.key, NULL, NULL);
	ck_assert_str_eq(jstr(r.json, "data.0.id"), "bravo");
	ck_assert_str_eq(jstr(r.json, "data.1.id"), "yankee");
	resp_free(&r);

	/* bad paging arguments */
	const char *bad[] = {"limit=0", "limit=101", "limit=-1", "limit=abc", "limit=1.5", "limit=", "limit=1e1",
			     "limit=99999999999999999999"};
	const char *lists[] = {"/v1/customers", "/v1/tiers", "/v1/api_keys"};
	for (size_t l = 0; l < 3; l++) {
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			char path[128];
			snprintf(path, sizeof(path), "%s?%s", lists[l], bad[i]);
			r = req(&S, "GET", path, t.key, NULL, NULL);
			ck_assert_msg(r.status == 400, "%s: got %ld", path, r.status);
			ck_err(r, 400, "invalid_request", "invalid_parameter", "limit");
			resp_free(&r);
		}
		char path[128];
		snprintf(path, sizeof(path), "%s?starting_after=never-existed", lists[l]);
		r = req(&S, "GET", path, t.key, NULL, NULL);
		ck_err(r, 400, "invalid_request", "invalid_parameter", "starting_after");
		resp_free(&r);
		snprintf(path, sizeof(path), "%s?starting_after=a%%20b", lists[l]);
		r = req(&S, "GET", path, t.key, NULL, NULL);
		ck_err(r, 400, "invalid_request", "invalid_parameter", "starting_after");
		resp_free(&r);
	}
	/* a deleted cursor is unknown now */
	r = req(&S, "GET", "/v1/customers?starting_after=mike", t.key, NULL, NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "starting_after");
	resp_free(&r);
}
END_TEST

START_TEST(pagination_api_keys)
{
	struct tenant t = tenant_new(&S, false);
	for (int i = 0; i < 4; i++)
		post_ok(t.key, "/v1/api_keys", "{\"scopes\":[\"read\"]}", 201);
	page_through(t.key, "/v1/api_keys", 5, 2, NULL);
	page_through(t.key, "/v1/api_keys", 5, 1, NULL);
}
END_TEST

/* ---- Idempotency-Key ---- */

/* POST twice with one Idempotency-Key: the replay is the same object (its `same` field) with `field` null,
 * and no stored response holds the first answer's secret. */
static void ck_secret_not_replayed(const char *path, const char *auth, const char *body, const char *key,
				   const char *field, const char *same)
{
	char h[128];
	snprintf(h, sizeof(h), "Idempotency-Key: %s", key);
	const char *hs[] = {h, NULL};
	struct resp a = req(&S, "POST", path, auth, body, hs);
	ck_status(a, 201);
	struct resp b = req(&S, "POST", path, auth, body, hs);
	ck_status(b, 201);
	ck_assert_str_eq(resp_header(&b, "Idempotent-Replayed"), "true");
	ck_assert_str_eq(jstr(b.json, same), jstr(a.json, same));
	ck_assert(json_is_null(jpath(b.json, field)));
	ck_assert_int_eq(psql_ll("SELECT count(*) FROM idempotency_keys WHERE position('%s' IN response) > 0",
				 jstr(a.json, field)), 0);
	resp_free(&a);
	resp_free(&b);
}

START_TEST(idempotency_key)
{
	struct tenant t = tenant_new(&S, false);
	const char *h[] = {"Idempotency-Key: create-c1", NULL};
	struct resp a = req(&S, "POST", "/v1/customers", t.key, "{\"id\":\"c1\",\"name\":\"One\"}", h);
	ck_status(a, 201);
	ck_assert_ptr_null(resp_header(&a, "Idempotent-Replayed"));
	struct resp b = req(&S, "POST", "/v1/customers", t.key, "{\"id\":\"c1\",\"name\":\"One\"}", h);
	ck_status(b, 201);
	ck_assert_str_eq(b.body, a.body);
	ck_assert_ptr_nonnull(resp_header(&b, "Idempotent-Replayed"));
	ck_assert_str_eq(resp_header(&b, "Idempotent-Replayed"), "true");
	ck_assert_str_eq(resp_header(&b, "Content-Type"), "application/json");
	resp_free(&b);
	resp_free(&a);
	ck_assert_int_eq(list_len(t.key, "/v1/customers"), 1);

	/* same key, different body */
	b = req(&S, "POST", "/v1/customers", t.key, "{\"id\":\"c2\",\"name\":\"One\"}", h);
	ck_err(b, 409, "invalid_request", "idempotency_key_reused", "Idempotency-Key");
	resp_free(&b);
	ck_assert_int_eq(list_len(t.key, "/v1/customers"), 1);
	/* same key on another route is another request too */
	b = req(&S, "POST", "/v1/tiers", t.key, "{\"id\":\"c1\",\"name\":\"One\"}", h);
	ck_status(b, 409);
	resp_free(&b);
	ck_assert_int_eq(list_len(t.key, "/v1/tiers"), 0);

	/* tiers, and a replay after the object changed still answers the first response */
	const char *ht[] = {"Idempotency-Key: tier-pro", NULL};
	a = req(&S, "POST", "/v1/tiers", t.key, "{\"id\":\"pro\",\"name\":\"Pro\"}", ht);
	ck_status(a, 201);
	post_ok(t.key, "/v1/tiers", "{\"id\":\"free\"}", 201);
	b = req(&S, "PATCH", "/v1/tiers/pro", t.key, "{\"name\":\"Renamed\"}", NULL);
	ck_status(b, 200);
	resp_free(&b);
	b = req(&S, "POST", "/v1/tiers", t.key, "{\"id\":\"pro\",\"name\":\"Pro\"}", ht);
	ck_status(b, 201);
	ck_assert_str_eq(b.body, a.body);
	resp_free(&b);
	resp_free(&a);
	ck_assert_int_eq(list_len(t.key, "/v1/tiers"), 2);

	/* keys are per tenant: another tenant's same key is unrelated */
	struct tenant u = tenant_new(&S, false);
	b = req(&S, "POST", "/v1/customers", u.key, "{\"id\":\"c1\",\"name\":\"One\"}", h);
	ck_status(b, 201);
	ck_assert_ptr_null(resp_header(&b, "Idempotent-Replayed"));
	resp_free(&b);

	/* a refused request is answered the same way again, and creates nothing */
	const char *hb[] = {"Idempotency-Key: bad-1", NULL};
	a = req(&S, "POST", "/v1/customers", t.key, "{\"id\":\"a b\"}", hb);
	ck_status(a, 400);
	b = req(&S, "POST", "/v1/customers", t.key, "{\"id\":\"a b\"}", hb);
	ck_status(b, 400);
	ck_assert_str_eq(b.body, a.body);
	resp_free(&a);
	resp_free(&b);

	/* secrets are shown once: a replay answers the same object with its secret null, and the stored
	 * response never holds it (API keys, tokens, a tenant's first key) */
	ck_secret_not_replayed("/v1/api_keys", t.key, "{\"scopes\":[\"read\"]}", "key-1", "secret", "id");
	ck_assert_int_eq(list_len(t.key, "/v1/api_keys"), 2);
	ck_secret_not_replayed("/v1/auth/tokens", t.key, "{\"scope\":\"read\",\"ttl\":600}", "token-1", "token",
			       "expires_at");
	char admin_key[96]; /* the admin API's keys outlive this run's tenants: one of this run's own */
	snprintf(admin_key, sizeof(admin_key), "tenant-of-%s", t.id);
	ck_secret_not_replayed("/v1/tenants", S.admin, "{\"name\":\"replayed\"}", admin_key, "api_key", "id");

	/* a malformed key */
	char longkey[300] = "Idempotency-Key: ";
	memset(longkey + strlen(longkey), 'k', 260);
	const char *hl[] = {longkey, NULL};
	b = req(&S, "POST", "/v1/customers", t.key, "{\"id\":\"c9\"}", hl);
	ck_err(b, 400, "invalid_request", "invalid_idempotency_key", "Idempotency-Key");
	resp_free(&b);
	ck_assert_int_eq(list_len(t.key, "/v1/customers"), 1);
}
END_TEST

struct idem_ctx {
	const char *key;
	long status[10];
	char id[10][64];
};

static void idem_one(int i, void *arg)
{
	struct idem_ctx *c = arg;
	const char *h[] = {"Idempotency-Key: same-key-10", NULL};
	struct resp r = req(&S, "POST", "/v1/api_keys", c->key, "{\"scopes\":[\"read\"]}", h);
	c->status[i] = r.status;
	if (r.status == 201)
		snprintf(c->id[i], sizeof(c->id[i]), "%s", jstr(r.json, "id"));
	resp_free(&r);
}

/* Concurrent repeats: one runs, the others replay or are told it is still running; only one key exists. */
START_TEST(idempotency_key_concurrent)
{
	struct tenant t = tenant_new(&S, false);
	struct idem_ctx c = {.key = t.key};
	run_parallel(10, idem_one, &c);
	const char *first = NULL;
	for (int i = 0; i < 10; i++) {
		ck_assert_msg(c.status[i] == 201 || c.status[i] == 409, "request %d: %ld", i, c.status[i]);
		if (c.status[i] == 201) {
			if (first)
				ck_assert_str_eq(c.id[i], first);
			first = c.id[i];
		}
	}
	ck_assert_ptr_nonnull(first);
	ck_assert_int_eq(list_len(t.key, "/v1/api_keys"), 2);
}
END_TEST

/* ---- tenant isolation ---- */

START_TEST(tenant_isolation)
{
	struct tenant a = tenant_new(&S, false), b = tenant_new(&S, false);
	post_ok(a.key, "/v1/tiers", "{\"id\":\"gold\",\"name\":\"A's\"}", 201);
	post_ok(a.key, "/v1/customers", "{\"id\":\"acme-1\",\"name\":\"A's\",\"tier\":\"gold\"}", 201);
	post_ok(a.key, "/v1/customers", "{\"id\":\"acme-org\"}", 201);
	struct resp r = req(&S, "POST", "/v1/api_keys", a.key, "{\"scopes\":[\"read\"]}", NULL);
	char key_path[128];
	snprintf(key_path, sizeof(key_path), "/v1/api_keys/%s", jstr(r.json, "id"));
	resp_free(&r);
	char *cust_before = get_body(a.key, "/v1/customers/acme-1");
	char *tier_before = get_body(a.key, "/v1/tiers/gold");

	struct {
		const char *method, *path, *body, *code;
	} cases[] = {
		{"GET", "/v1/customers/acme-1", NULL, "customer_not_found"},
		{"PATCH", "/v1/customers/acme-1", "{\"name\":\"B was here\"}", "customer_not_found"},
		{"DELETE", "/v1/customers/acme-1", NULL, "customer_not_found"},
		{"GET", "/v1/tiers/gold", NULL, "tier_not_found"},
		{"PATCH", "/v1/tiers/gold", "{\"name\":\"B was here\"}", "tier_not_found"},
		{"DELETE", "/v1/tiers/gold", NULL, "tier_not_found"},
		{"DELETE", key_path, NULL, "api_key_not_found"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		r = req(&S, cases[i].method, cases[i].path, b.key, cases[i].body, NULL);
		ck_assert_msg(r.status == 404, "B %s %s: expected 404, got %ld", cases[i].method, cases[i].path, r.status);
		ck_err(r, 404, "invalid_request", cases[i].code, NULL);
		resp_free(&r);
	}
	/* A's ids used inside B's bodies and queries are unknown too, never forbidden */
	r = req(&S, "POST", "/v1/customers", b.key, "{\"id\":\"b-1\",\"tier\":\"gold\"}", NULL);
	ck_err(r, 400, "invalid_request", "tier_not_found", "tier");
	resp_free(&r);
	r = req(&S, "POST", "/v1/customers", b.key, "{\"id\":\"b-1\",\"parent_id\":\"acme-org\"}", NULL);
	ck_err(r, 400, "invalid_request", "customer_not_found", "parent_id");
	resp_free(&r);
	r = req(&S, "PATCH", "/v1/tenant", b.key, "{\"default_tier\":\"gold\"}", NULL);
	ck_err(r, 400, "invalid_request", "tier_not_found", "default_tier");
	resp_free(&r);
	r = req(&S, "POST", "/v1/auth/tokens", b.key, "{\"customer_id\":\"acme-1\"}", NULL);
	ck_err(r, 404, "invalid_request", "customer_not_found", "customer_id");
	resp_free(&r);
	r = req(&S, "GET", "/v1/customers?starting_after=acme-1", b.key, NULL, NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "starting_after");
	resp_free(&r);
	ck_assert_int_eq(list_len(b.key, "/v1/customers"), 0);
	ck_assert_int_eq(list_len(b.key, "/v1/customers?tier=gold"), 0);
	ck_assert_int_eq(list_len(b.key, "/v1/tiers"), 0);
	ck_assert_int_eq(list_len(b.key, "/v1/api_keys"), 1);

	/* the same ids are free in B's namespace */
	post_ok(b.key, "/v1/tiers", "{\"id\":\"gold\",\"name\":\"B's\"}", 201);
	post_ok(b.key, "/v1/customers", "{\"id\":\"acme-1\",\"name\":\"B's\"}", 201);
	r = req(&S, "GET", "/v1/customers/acme-1", b.key, NULL, NULL);
	ck_assert_str_eq(jstr(r.json, "name"), "B's");
	resp_free(&r);

	/* A saw nothing of it */
	char *cust_after = get_body(a.key, "/v1/customers/acme-1");
	char *tier_after = get_body(a.key, "/v1/tiers/gold");
	ck_assert_str_eq(cust_after, cust_before);
	ck_assert_str_eq(tier_after, tier_before);
	ck_assert_int_eq(list_len(a.key, "/v1/api_keys"), 2);
	free(cust_before);
	free(cust_after);
	free(tier_before);
	free(tier_after);
}
END_TEST

/* ---- concurrency ---- */

struct race {
	const char *key;
	long status[20];
	char code[20][64];
};

static void create_same(int i, void *arg)
{
	struct race *c = arg;
	struct resp r = req(&S, "POST", "/v1/customers", c->key, "{\"id\":\"contended\"}", NULL);
	c->status[i] = r.status;
	if (r.status != 201 && r.json && jpath(r.json, "error.code"))
		snprintf(c->code[i], sizeof(c->code[i]), "%s", jstr(r.json, "error.code"));
	resp_free(&r);
}

START_TEST(concurrent_creates_one_wins)
{
	struct tenant t = tenant_new(&S, false);
	struct race c = {.key = t.key};
	run_parallel(20, create_same, &c);
	int created = 0, conflicts = 0;
	for (int i = 0; i < 20; i++) {
		if (c.status[i] == 201)
			created++;
		else if (c.status[i] == 409 && strcmp(c.code[i], "customer_exists") == 0)
			conflicts++;
		else
			ck_abort_msg("request %d: %ld %s", i, c.status[i], c.code[i]);
	}
	ck_assert_int_eq(created, 1);
	ck_assert_int_eq(conflicts, 19);
	ck_assert_int_eq(list_len(t.key, "/v1/customers"), 1);
}
END_TEST

static void create_same_tier(int i, void *arg)
{
	struct race *c = arg;
	struct resp r = req(&S, "POST", "/v1/tiers", c->key, "{\"id\":\"contended\"}", NULL);
	c->status[i] = r.status;
	resp_free(&r);
}

START_TEST(concurrent_tier_creates_one_wins)
{
	struct tenant t = tenant_new(&S, false);
	struct race c = {.key = t.key};
	run_parallel(20, create_same_tier, &c);
	int created = 0, conflicts = 0;
	for (int i = 0; i < 20; i++) {
		created += c.status[i] == 201;
		conflicts += c.status[i] == 409;
	}
	ck_assert_int_eq(created, 1);
	ck_assert_int_eq(conflicts, 19);
}
END_TEST

/* ---- a bad request never changes state ---- */

START_TEST(bad_requests_change_nothing)
{
	struct tenant t = tenant_new(&S, false);
	post_ok(t.key, "/v1/tiers", "{\"id\":\"free\",\"name\":\"Free\"}", 201);
	post_ok(t.key, "/v1/customers", "{\"id\":\"org\"}", 201);
	post_ok(t.key, "/v1/customers", "{\"id\":\"member\",\"parent_id\":\"org\"}", 201);
	post_ok(t.key, "/v1/customers",
		"{\"id\":\"c\",\"name\":\"Keep\",\"email\":\"k@e.p\",\"tier\":\"free\",\"metadata\":{\"a\":1}}", 201);
	char *c_before = get_body(t.key, "/v1/customers/c");
	char *org_before = get_body(t.key, "/v1/customers/org");
	char *tier_before = get_body(t.key, "/v1/tiers/free");
	char *tenant_before = get_body(t.key, "/v1/tenant");
	char *list_before = get_body(t.key, "/v1/customers");

	const char *patches[] = {
		"{\"name\":\"New\",\"tier\":\"ghost\"}",
		"{\"name\":\"New\",\"parent_id\":\"member\"}",
		"{\"name\":\"New\",\"parent_id\":\"c\"}",
		"{\"name\":\"New\",\"parent_id\":\"ghost\"}",
		"{\"name\":\"New\",\"email\":\"nope\"}",
		"{\"name\":\"New\",\"metadata\":[]}",
		"{\"name\":\"New\",\"unknown\":1}",
		"{\"name\":\"New\",\"tier\":5}",
		"{\"name\":12}",
		"{\"name\":\"New\"",
		"[{\"name\":\"New\"}]",
	};
	for (size_t i = 0; i < sizeof(patches) / sizeof(patches[0]); i++) {
		struct resp r = req(&S, "PATCH", "/v1/customers/c", t.key, patches[i], NULL);
		ck_assert_msg(r.status == 400, "%s: got %ld %s", patches[i], r.status, r.body);
		resp_free(&r);
	}
	struct resp r;
	expect_status(&S, "PATCH", "/v1/customers/org", t.key, "{\"name\":\"New\",\"parent_id\":\"c\"}", 400);
	expect_status(&S, "DELETE", "/v1/customers/org", t.key, NULL, 409);
	expect_status(&S, "DELETE", "/v1/tiers/free", t.key, NULL, 409);
	expect_status(&S, "PATCH", "/v1/tiers/free", t.key, "{\"name\":\"New\",\"x\":1}", 400);
	expect_status(&S, "PATCH", "/v1/tenant", t.key, "{\"auto_create_customers\":false,\"default_tier\":\"ghost\"}", 400);
	const char *creates[] = {
		"{\"id\":\"c\"}",
		"{\"id\":\"new\",\"tier\":\"ghost\"}",
		"{\"id\":\"new\",\"parent_id\":\"member\"}",
		"{\"id\":\"new\",\"email\":\"x\"}",
		"{\"id\":\"new\",\"metadata\":\"x\"}",
		"{\"id\":\"new\",\"extra\":true}",
	};
	for (size_t i = 0; i < sizeof(creates) / sizeof(creates[0]); i++) {
		r = req(&S, "POST", "/v1/customers", t.key, creates[i], NULL);
		ck_assert_msg(r.status == 400 || r.status == 409, "%s: got %ld", creates[i], r.status);
		resp_free(&r);
	}

	char *c_after = get_body(t.key, "/v1/customers/c");
	char *org_after = get_body(t.key, "/v1/customers/org");
	char *tier_after = get_body(t.key, "/v1/tiers/free");
	char *tenant_after = get_body(t.key, "/v1/tenant");
	char *list_after = get_body(t.key, "/v1/customers");
	ck_assert_str_eq(c_after, c_before);
	ck_assert_str_eq(org_after, org_before);
	ck_assert_str_eq(tier_after, tier_before);
	ck_assert_str_eq(tenant_after, tenant_before);
	ck_assert_str_eq(list_after, list_before);
	free(c_before);
	free(c_after);
	free(org_before);
	free(org_after);
	free(tier_before);
	free(tier_after);
	free(tenant_before);
	free(tenant_after);
	free(list_before);
	free(list_after);
}
END_TEST

/* ---- names ---- */

/* A JSON string of n copies of "é" (2 bytes each in UTF-8). */
static char *e_acute(int n)
{
	char *s = malloc((size_t)n * 2 + 1);
	for (int i = 0; i < n; i++)
		memcpy(s + 2 * i, "\xc3\xa9", 2);
	s[2 * n] = '\0';
	return s;
}

/* Every route that takes a name; those that create a tenant's object get a fresh id each time. */
static const struct named {
	const char *method, *path;
	const char *id_prefix; /* NULL: no id in the body */
	const char *extra;     /* the body's other fields */
	bool admin;
	int max; /* bytes */
} named_routes[] = {
	{"POST", "/v1/tenants", NULL, "", true, 200},
	{"POST", "/v1/api_keys", NULL, ",\"scopes\":[\"read\"]", false, 200},
	{"POST", "/v1/customers", "n", "", false, 256},
	{"PATCH", "/v1/customers/c", NULL, "", false, 256},
	{"POST", "/v1/tiers", "t", "", false, 200},
	{"PATCH", "/v1/tiers/pro", NULL, "", false, 200},
};

static struct resp send_name(const struct named *n, const char *key, const char *name, int id)
{
	char body[1024], idf[64] = "";

	if (n->id_prefix)
		snprintf(idf, sizeof(idf), "\"id\":\"%s%d\",", n->id_prefix, id);
	snprintf(body, sizeof(body), "{%s\"name\":\"%s\"%s}", idf, name, n->extra);
	return req(&S, n->method, n->path, n->admin ? S.admin : key, body, NULL);
}

/* Every name (tenant, API key, customer, tier) goes through one check: no C0 control (tab included),
 * no DEL, no C1 control, at most the documented number of bytes; a refused one changes nothing. */
START_TEST(names_refuse_controls_and_count_bytes)
{
	struct tenant t = tenant_new(&S, false);
	const char *bad[] = {"a\\tb", "a\\u007fb", "a\\u0085b", "a\xc2\x9f" "b", "a\\u0080b", "a\\nb", "\\u001b[31m"};
	struct resp r;
	int id = 0;

	post_ok(t.key, "/v1/customers", "{\"id\":\"c\",\"name\":\"Keep\"}", 201);
	post_ok(t.key, "/v1/tiers", "{\"id\":\"pro\",\"name\":\"Keep\"}", 201);
	for (size_t k = 0; k < sizeof(named_routes) / sizeof(named_routes[0]); k++) {
		const struct named *n = &named_routes[k];
		char *c_before = get_body(t.key, "/v1/customers/c"), *tier_before = get_body(t.key, "/v1/tiers/pro");
		size_t keys_before = list_len(t.key, "/v1/api_keys"), customers_before = list_len(t.key, "/v1/customers");
		size_t tiers_before = list_len(t.key, "/v1/tiers");
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			r = send_name(n, t.key, bad[i], id++);
			ck_assert_msg(r.status == 400, "%s %s %s: %ld %s", n->method, n->path, bad[i], r.status, r.body);
			ck_err(r, 400, "invalid_request", "invalid_parameter", "name");
			resp_free(&r);
		}
		/* lengths are bytes of UTF-8: one "é" past the maximum is refused (300 bytes for a tenant too) */
		char *over = e_acute(n->max / 2 + 1), *at = e_acute(n->max / 2), *e150 = e_acute(150);
		r = send_name(n, t.key, over, id++);
		ck_assert_msg(r.status == 400, "%s %s: %d bytes: %ld %s", n->method, n->path, n->max + 2, r.status, r.body);
		ck_err(r, 400, "invalid_request", "invalid_parameter", "name");
		resp_free(&r);
		if (n->max == 200) {
			r = send_name(n, t.key, e150, id++);
			ck_err(r, 400, "invalid_request", "invalid_parameter", "name");
			resp_free(&r);
		}
		/* a bad name changed nothing */
		char *c_now = get_body(t.key, "/v1/customers/c"), *tier_now = get_body(t.key, "/v1/tiers/pro");
		ck_assert_str_eq(c_now, c_before);
		ck_assert_str_eq(tier_now, tier_before);
		ck_assert_int_eq(list_len(t.key, "/v1/api_keys"), keys_before);
		ck_assert_int_eq(list_len(t.key, "/v1/customers"), customers_before);
		ck_assert_int_eq(list_len(t.key, "/v1/tiers"), tiers_before);
		free(c_now);
		free(tier_now);
		free(c_before);
		free(tier_before);
		/* at the maximum it is fine */
		r = send_name(n, t.key, at, id++);
		ck_assert_msg(r.status == 200 || r.status == 201, "%s %s: %d bytes: %ld %s", n->method, n->path, n->max,
			      r.status, r.body);
		ck_assert_str_eq(jstr(r.json, "name"), at);
		resp_free(&r);
		free(over);
		free(at);
		free(e150);
	}

	/* printable text beyond ASCII (U+00A0 on) is a name like any other */
	r = req(&S, "PATCH", "/v1/customers/c", t.key, "{\"name\":\"Zo\\u00a0\\u00eb \\u2713 \\ud83d\\ude00\"}", NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "name"), "Zo\xc2\xa0\xc3\xab \xe2\x9c\x93 \xf0\x9f\x98\x80");
	resp_free(&r);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("customers");
	TCase *tc = tcase_create("customers");

	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, tenant_settings);
	tcase_add_test(tc, customer_crud);
	tcase_add_test(tc, customer_metadata_exact);
	tcase_add_test(tc, customer_metadata_size_as_stored);
	tcase_add_test(tc, customer_tier_defaults_and_promotion);
	tcase_add_test(tc, customer_organisations);
	tcase_add_test(tc, tier_crud);
	tcase_add_test(tc, pagination);
	tcase_add_test(tc, pagination_api_keys);
	tcase_add_test(tc, idempotency_key);
	tcase_add_test(tc, idempotency_key_concurrent);
	tcase_add_test(tc, tenant_isolation);
	tcase_add_test(tc, concurrent_creates_one_wins);
	tcase_add_test(tc, concurrent_tier_creates_one_wins);
	tcase_add_test(tc, bad_requests_change_nothing);
	tcase_add_test(tc, names_refuse_controls_and_count_bytes);
	suite_add_tcase(s, tc);
	return run_suite(s);
}

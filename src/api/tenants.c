/* tenants.c — /v1/tenants (operator), /v1/tenant (a tenant's own settings) and /v1/test_clock. */
#include <string.h>

#include "handlers.h"
#include "tollgate/api.h"
#include "tollgate/auth.h"
#include "tollgate/json.h"
#include "tollgate/store.h"
#include "tollgate/util.h"
#include "tollgate/worker.h"

/* The public shape of a tenant row: the clock offset becomes the test clock's time. */
static json_t *render(json_t *row)
{
	int64_t offset = store_int(row, "clock_offset_ms", 0);

	json_object_del(row, "clock_offset_ms");
	if (json_is_true(json_object_get(row, "test_mode")))
		json_object_set_new(row, "test_clock", tg_json_time(tg_clock_ms(tg_now_ms(), offset)));
	return row;
}

int api_tenants_create(struct tg_req *req)
{
	static const char *const fields[] = {"name", "test_mode", NULL};
	const char *name = NULL;
	bool test_mode = false;
	char id[TG_SID_BUFSZ], key_id[TG_SID_BUFSZ], secret[AUTH_SECRET_BUFSZ], hash[65], prefix[16];
	json_t *body = api_body(req), *row;
	int rc;

	if (!body)
		return req->err.err;
	if ((rc = api_only(req, body, fields)) < 0 || (rc = api_name(req, body, "name", true, false, 200, &name)) < 0 ||
	    (rc = api_bool(req, body, "test_mode", false, &test_mode, NULL)) < 0)
		return rc;
	if (!name[0])
		return api_bad(req, "name", "'name' must not be empty");
	tg_sid_new("ten_", id);
	tg_sid_new("key_", key_id);
	auth_new_secret(secret, hash, prefix);
	if ((rc = store_tenant_create(id, name, test_mode, key_id, prefix, hash, &row, &req->err)) < 0)
		return rc;
	reload_tenant(id, &req->err); /* the new key works here at once; elsewhere within a second */
	render(row);
	json_object_set_new(row, "api_key", json_string(secret));
	json_object_set_new(row, "api_key_id", json_string(key_id));
	tg_req_reply(req, 201, row);
	return 0;
}

int api_tenants_list(struct tg_req *req)
{
	static const char *const q[] = {"limit", "starting_after", NULL};
	int64_t limit;
	const char *after;
	json_t *rows;
	int rc;

	if ((rc = api_query_only(req, q)) < 0 || (rc = api_page(req, &limit, &after)) < 0 ||
	    (rc = store_tenants_list(after, limit, &rows, &req->err)) < 0)
		return rc;
	size_t i;
	json_t *row;
	json_array_foreach(rows, i, row)
		render(row);
	api_reply_list(req, rows, limit);
	return 0;
}

int api_tenant_get(struct tg_req *req)
{
	json_t *row;
	int rc;

	if ((rc = api_query_none(req)) < 0 || (rc = store_tenant_get(req->principal.tenant_id, &row, &req->err)) < 0)
		return rc;
	if (!row)
		return api_not_found(req, "tenant", req->principal.tenant_id);
	tg_req_reply(req, 200, render(row));
	return 0;
}

int api_tenant_update(struct tg_req *req)
{
	static const char *const fields[] = {"default_tier", "auto_create_customers", NULL};
	const char *tier = NULL;
	bool set_tier, auto_create = true, set_auto = false, changed;
	json_t *body = api_body(req), *row;
	int rc;

	if (!body)
		return req->err.err;
	set_tier = json_object_get(body, "default_tier") != NULL;
	if ((rc = api_only(req, body, fields)) < 0 || (rc = api_id(req, body, "default_tier", false, true, &tier)) < 0 ||
	    (rc = api_bool(req, body, "auto_create_customers", false, &auto_create, &set_auto)) < 0)
		return rc;
	if ((rc = store_tenant_update(req->principal.tenant_id, set_tier, tier, set_auto, auto_create, &row, &changed,
				      &req->err)) < 0)
		return rc;
	if (!row)
		return api_not_found(req, "tenant", req->principal.tenant_id);
	req->unchanged = !changed;
	if (changed)
		reload_tenant(req->principal.tenant_id, &req->err);
	tg_req_reply(req, 200, render(row));
	return 0;
}

static int clock_reply(struct tg_req *req, json_t *row)
{
	if (!json_is_true(json_object_get(row, "test_mode"))) {
		json_decref(row);
		return tg_fail(&req->err, TG_EINVAL, "not_test_mode", NULL,
			       "test clocks exist only for tenants created with \"test_mode\": true");
	}
	int64_t now = tg_clock_ms(tg_now_ms(), store_int(row, "clock_offset_ms", 0));
	json_decref(row);
	tg_req_reply(req, 200, tg_json_obj("now", tg_json_time(now), NULL));
	return 0;
}

/* The clock before an advance, for the audit ({"now"}, as the advance answers). */
int api_test_clock_audit_get(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err)
{
	json_t *row;
	int rc = store_tenant_get(tenant_id, &row, err);

	(void)id;
	*ret = NULL;
	if (rc < 0 || !row)
		return rc;
	if (json_is_true(json_object_get(row, "test_mode")))
		*ret = tg_json_obj("now", tg_json_time(tg_clock_ms(tg_now_ms(), store_int(row, "clock_offset_ms", 0))),
				   NULL);
	json_decref(row);
	return 0;
}

/* An advance past the end of the clock: refused, with what is left. */
static int clock_end(struct tg_req *req, json_t *row)
{
	int64_t now = tg_clock_ms(tg_now_ms(), store_int(row, "clock_offset_ms", 0));
	char at[TG_TIME_BUFSZ];

	json_decref(row);
	tg_time_format(now, at);
	return api_bad(req, "seconds",
		       "the test clock cannot pass 9999-11-30T23:59:59Z; it is at %s, %lld seconds at most are left", at,
		       (long long)((TG_TIME_MAX_MS - now) / 1000));
}

int api_test_clock_get(struct tg_req *req)
{
	json_t *row;
	int rc;

	if ((rc = api_query_none(req)) < 0 || (rc = store_tenant_get(req->principal.tenant_id, &row, &req->err)) < 0)
		return rc;
	if (!row)
		return api_not_found(req, "tenant", req->principal.tenant_id);
	return clock_reply(req, row);
}

int api_test_clock_advance(struct tg_req *req)
{
	static const char *const fields[] = {"seconds", NULL};
	int64_t seconds;
	json_t *body = api_body(req), *row;
	int rc;

	if (!body)
		return req->err.err;
	if ((rc = api_only(req, body, fields)) < 0 ||
	    (rc = api_int(req, body, "seconds", true, 1, 10LL * 366 * 86400, &seconds, NULL)) < 0)
		return rc;
	/* the clock may reach TG_TIME_MAX_MS, not pass it: checked in the UPDATE, so advances at once cannot
	 * pass it together */
	if ((rc = store_tenant_advance_clock(req->principal.tenant_id, seconds * 1000, TG_TIME_MAX_MS - tg_now_ms(),
					     &row, &req->err)) < 0)
		return rc;
	if (!row) {
		/* no row updated: the tenant is live (or gone), or the clock would pass the end */
		if ((rc = store_tenant_get(req->principal.tenant_id, &row, &req->err)) < 0)
			return rc;
		if (!row)
			return api_not_found(req, "tenant", req->principal.tenant_id);
		if (json_is_true(json_object_get(row, "test_mode")))
			return clock_end(req, row);
		return clock_reply(req, row);
	}
	reload_tenant(req->principal.tenant_id, &req->err);
	/* what the new time expired goes before the answer, not at the worker's next pass (about a second
	 * later): a check right after the advance must not count a hold whose TTL has passed */
	reload_expire_reservations(req->principal.tenant_id);
	return clock_reply(req, row);
}

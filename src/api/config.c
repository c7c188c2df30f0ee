/* config.c — /v1/meters and /v1/limits: validated by policy/, stored as canonical JSON, live within a second. */
#include <string.h>

#include "handlers.h"
#include "tollgate/api.h"
#include "tollgate/hot.h"
#include "tollgate/json.h"
#include "tollgate/log.h"
#include "tollgate/policy.h"
#include "tollgate/store.h"
#include "tollgate/worker.h"

/* The tenant's current snapshot, loading it when this instance has not seen the tenant yet. */
struct policy_tenant *api_tenant(struct tg_req *req)
{
	struct policy_tenant *t = policy_registry_get(req->principal.tenant_id);

	if (!t && reload_tenant(req->principal.tenant_id, &req->err) == 0)
		t = policy_registry_get(req->principal.tenant_id);
	if (!t && req->err.err == TG_OK)
		tg_fail(&req->err, TG_EUNAVAIL, "tenant_loading", NULL, "the tenant's configuration is not loaded yet; retry");
	return t;
}

/* A customer whose limits changed hands (its tier, its organisation, an override of its own): drop the
 * quota counters it may have under limits that stopped applying for a while; they are rebuilt from the
 * rollups at their next use (policy_customer_quotas). Best effort: the change itself is committed. */
void api_forget_quotas(struct tg_req *req, const char *customer_id)
{
	struct tg_error keep = req->err; /* the change is made: a failure here must not answer for it */
	struct policy_tenant *t = api_tenant(req);
	struct policy_counter *cs;
	struct tg_arena a;
	int n;

	req->err = keep;
	if (!t) {
		log_warn("quota counters not dropped after a change of limits", "tenant %s, customer %s: the tenant "
			 "is not loaded", req->principal.tenant_id, customer_id);
		return;
	}
	tg_arena_init(&a);
	n = policy_customer_quotas(t, customer_id, policy_now(t, tg_now_ms()), false, &a, &cs);
	if (n > 0) {
		const char **keys = tg_arena_alloc(&a, sizeof(*keys) * (size_t)n);
		for (int i = 0; i < n; i++)
			keys[i] = hot_counter_key(&a, t->id, &cs[i]);
		hot_keys_forget(keys, n);
	}
	tg_arena_release(&a);
	policy_tenant_unref(t);
}

/* The customer of a customer-scoped limit (its JSON), or NULL. */
static const char *override_of(const json_t *spec)
{
	const char *scope = json_string_value(json_object_get(spec, "scope"));

	return scope && !strcmp(scope, "customer") ? json_string_value(json_object_get(spec, "customer_id")) : NULL;
}

static int list_reply(struct tg_req *req, int rc, json_t *rows, int64_t limit)
{
	if (rc < 0)
		return rc;
	api_reply_list(req, rows, limit);
	return 0;
}

/* ---- meters ---- */

/* Rules for a meter written through the API, beyond what a stored one must meet to load (one stored before
 * a rule existed keeps working). */
static int meter_rules(struct tg_req *req, const struct policy_meter *m)
{
	/* price.by names dimensions, as group_by and a check's dimensions do: a name no check or event can
	 * carry would never match */
	for (int i = 0; i < m->nprices; i++)
		if (!tg_id_valid(m->prices[i].dim, strlen(m->prices[i].dim)))
			return api_bad(req, "price.by", "'price.by' names dimensions: ids of 1 to 128 characters from "
						     "A-Z a-z 0-9 . _ : @ + -");
	return 0;
}

/* Parse a meter written through the API: policy_meter_parse() and meter_rules(). */
static int meter_parse(struct tg_req *req, const json_t *spec, struct policy_meter *m)
{
	int rc = policy_meter_parse(spec, m, &req->err);

	if (rc == 0 && (rc = meter_rules(req, m)) < 0)
		policy_meter_release(m);
	return rc;
}

int api_meters_create(struct tg_req *req)
{
	struct policy_meter m;
	json_t *body = api_body(req), *row;
	int rc;

	if (!body)
		return req->err.err;
	if ((rc = meter_parse(req, body, &m)) < 0)
		return rc;
	rc = store_meter_create(req->principal.tenant_id, m.id, m.json, &row, &req->err);
	policy_meter_release(&m);
	if (rc < 0)
		return rc;
	reload_tenant(req->principal.tenant_id, &req->err);
	tg_req_reply(req, 201, row);
	return 0;
}

int api_meters_list(struct tg_req *req)
{
	static const char *const q[] = {"limit", "starting_after", NULL};
	const char *after;
	int64_t limit;
	json_t *rows = NULL;
	int rc;

	if ((rc = api_query_only(req, q)) < 0 || (rc = api_page(req, &limit, &after)) < 0)
		return rc;
	rc = store_meters_list(req->principal.tenant_id, after, limit, &rows, &req->err);
	return list_reply(req, rc, rows, limit);
}

int api_meters_get(struct tg_req *req)
{
	const char *id;
	json_t *row;
	int rc;

	if (api_path_id(req, 0, &id) < 0)
		return api_not_found(req, "meter", req->params[0]);
	if ((rc = api_query_none(req)) < 0)
		return rc;
	if (strcmp(id, POLICY_REQUESTS) == 0) {
		struct policy_tenant *t = api_tenant(req);
		if (!t)
			return req->err.err;
		tg_req_reply(req, 200, json_deep_copy(t->requests.json));
		policy_tenant_unref(t);
		return 0;
	}
	if ((rc = store_meter_get(req->principal.tenant_id, id, &row, &req->err)) < 0)
		return rc;
	if (!row)
		return api_not_found(req, "meter", id);
	tg_req_reply(req, 200, row);
	return 0;
}

/* A merge patch: fields in body replace the stored ones; null removes one. */
static json_t *merged(const json_t *stored, const json_t *body)
{
	json_t *spec = json_deep_copy(stored);
	const char *k;
	json_t *v;

	json_object_del(spec, "created_at");
	json_object_del(spec, "updated_at");
	json_object_foreach((json_t *)body, k, v) {
		if (json_is_null(v))
			json_object_del(spec, k);
		else
			json_object_set(spec, k, v);
	}
	return spec;
}

static int immutable(struct tg_req *req, const json_t *body, const json_t *stored, const char *field)
{
	json_t *v = json_object_get(body, field);

	if (v && !json_equal(v, json_object_get(stored, field)))
		return api_bad(req, field, "'%s' cannot be changed; create a new object instead", field);
	return 0;
}

/* A quota's filter names dimensions its meter keeps: the meter may not drop one still in use. */
static int group_by_kept(struct tg_req *req, const struct policy_meter *m)
{
	struct policy_tenant *t = api_tenant(req);
	int rc = 0;

	if (!t)
		return req->err.err;
	for (int i = 0; i < t->nlimits && rc == 0; i++) {
		const struct policy_limit *l = &t->limits[i];
		if (l->kind != POLICY_QUOTA || !l->meter || strcmp(l->meter->id, m->id) != 0)
			continue;
		for (int f = 0; f < l->nfilter && rc == 0; f++) {
			bool kept = false;
			for (int g = 0; g < m->ngroup; g++)
				kept |= !strcmp(m->group_by[g], l->filter[f].key);
			if (!kept)
				rc = tg_fail(&req->err, TG_ECONFLICT, "meter_in_use", "group_by",
					     "limit '%s' filters on '%s': keep it in group_by", l->id, l->filter[f].key);
		}
	}
	policy_tenant_unref(t);
	return rc;
}

int api_meters_update(struct tg_req *req)
{
	const char *id;
	struct policy_meter m;
	json_t *body = api_body(req), *stored, *spec, *row;
	bool changed;
	int rc;

	if (api_path_id(req, 0, &id) < 0)
		return api_not_found(req, "meter", req->params[0]);
	if (strcmp(id, POLICY_REQUESTS) == 0)
		return tg_fail(&req->err, TG_EINVAL, "reserved_id", NULL, "the built-in requests meter cannot be changed");
	if (!body)
		return req->err.err;
	if ((rc = store_meter_get(req->principal.tenant_id, id, &stored, &req->err)) < 0)
		return rc;
	if (!stored)
		return api_not_found(req, "meter", id);
	if ((rc = immutable(req, body, stored, "id")) < 0 || (rc = immutable(req, body, stored, "aggregation")) < 0) {
		json_decref(stored);
		return rc;
	}
	spec = merged(stored, body);
	json_decref(stored);
	rc = meter_parse(req, spec, &m);
	json_decref(spec);
	if (rc < 0)
		return rc;
	if ((rc = group_by_kept(req, &m)) < 0) {
		policy_meter_release(&m);
		return rc;
	}
	rc = store_meter_update(req->principal.tenant_id, id, m.json, &row, &changed, &req->err);
	policy_meter_release(&m);
	if (rc < 0)
		return rc;
	if (!row)
		return api_not_found(req, "meter", id);
	req->unchanged = !changed;
	if (changed)
		reload_tenant(req->principal.tenant_id, &req->err);
	tg_req_reply(req, 200, row);
	return 0;
}

int api_meters_delete(struct tg_req *req)
{
	const char *id;
	bool deleted;
	int rc;

	if (api_path_id(req, 0, &id) < 0)
		return api_not_found(req, "meter", req->params[0]);
	if (strcmp(id, POLICY_REQUESTS) == 0)
		return tg_fail(&req->err, TG_EINVAL, "reserved_id", NULL, "the built-in requests meter cannot be deleted");
	if ((rc = store_meter_delete(req->principal.tenant_id, id, &deleted, &req->err)) < 0)
		return rc;
	if (!deleted)
		return api_not_found(req, "meter", id);
	reload_tenant(req->principal.tenant_id, &req->err);
	tg_req_reply(req, 200, tg_json_obj("id", json_string(id), "deleted", json_true(), NULL));
	return 0;
}

/* ---- limits ---- */

/* Rules that need the tenant as a whole, beyond one limit's own fields. */
static int limit_rules(struct tg_req *req, const struct policy_limit *l)
{
	const struct policy_meter *m = l->meter;

	/* a quota's filter must name dimensions the meter's rollups keep, or a rebuilt counter would miss them;
	 * the built-in requests meter keeps none (group_by []), so a quota on it takes no filter */
	if (l->kind == POLICY_QUOTA && m) {
		for (int i = 0; i < l->nfilter; i++) {
			bool kept = false;
			for (int g = 0; g < m->ngroup; g++)
				kept |= strcmp(m->group_by[g], l->filter[i].key) == 0;
			if (kept)
				continue;
			if (!m->event_type)
				return api_bad(req, "filter",
					       "the built-in meter '%s' has no group_by dimensions: a quota on it takes no "
					       "filter (a rate limit may filter)", m->id);
			return api_bad(req, "filter", "dimension '%s' is not in meter '%s' group_by; add it there first",
				       l->filter[i].key, m->id);
		}
	}
	return 0;
}

/* Validate and write one limit (no reload: callers reload once their transaction is over); *changed is false
 * for an update that left it as it was. */
static int limit_write(struct tg_req *req, struct policy_tenant *t, const json_t *spec, bool create, json_t **row,
		       bool *changed)
{
	struct policy_limit l;
	int rc;

	/* l borrows the snapshot's meter: t stays referenced by the caller until l is released */
	if ((rc = policy_limit_parse(spec, t, &l, &req->err)) < 0)
		return rc;
	if ((rc = limit_rules(req, &l)) < 0) {
		policy_limit_release(&l);
		return rc;
	}
	struct store_limit_row r = {
		.id = l.id,
		.kind = policy_kind_names[l.kind],
		.scope = policy_scope_names[l.scope],
		.meter = l.meter ? l.meter->id : NULL,
		.tier = l.tier,
		.customer_id = l.customer_id,
		.spec = l.json,
	};
	*changed = true;
	rc = create ? store_limit_create(req->principal.tenant_id, &r, row, &req->err)
		    : store_limit_update(req->principal.tenant_id, &r, row, changed, &req->err);
	policy_limit_release(&l);
	return rc;
}

static int limit_store(struct tg_req *req, const json_t *spec, bool create, json_t **row)
{
	struct policy_tenant *t = api_tenant(req);
	bool changed = false;
	int rc;

	if (!t)
		return req->err.err;
	rc = limit_write(req, t, spec, create, row, &changed);
	policy_tenant_unref(t);
	req->unchanged = rc == 0 && !changed;
	if (rc == 0 && changed)
		reload_tenant(req->principal.tenant_id, &req->err);
	if (rc == 0 && changed && *row && override_of(spec))
		api_forget_quotas(req, override_of(spec)); /* what its override hides is stale when it goes */
	return rc;
}

/* A limit body with its id filled in (new reference). */
static json_t *with_id(const json_t *body)
{
	json_t *spec = json_deep_copy(body);
	char id[TG_SID_BUFSZ];

	if (!json_object_get(spec, "id")) {
		tg_sid_new("lim_", id);
		json_object_set_new(spec, "id", json_string(id));
	}
	return spec;
}

int api_limit_create(struct tg_req *req, const json_t *body, json_t **row)
{
	json_t *spec = with_id(body);
	int rc = limit_store(req, spec, true, row);

	json_decref(spec);
	return rc;
}

/* POST /v1/tiers: the tier and its limits ("limits": limits without scope) in one transaction. */
int api_tiers_create(struct tg_req *req)
{
	static const char *const fields[] = {"id", "name", "limits", NULL};
	const char *id, *name = NULL;
	json_t *body = api_body(req), *limits = NULL, *row = NULL, *created;
	struct policy_tenant *t;
	size_t i;
	json_t *l;
	int rc;

	if (!body)
		return req->err.err;
	if ((rc = api_only(req, body, fields)) < 0 || (rc = api_id(req, body, "id", true, false, &id)) < 0 ||
	    (rc = api_name(req, body, "name", false, true, 200, &name)) < 0 ||
	    (rc = tg_jf_array(body, NULL, "limits", false, &limits, &req->err)) < 0)
		return rc;
	json_array_foreach(limits, i, l) {
		char prefix[32];
		snprintf(prefix, sizeof(prefix), "limits[%zu]", i);
		if (!json_is_object(l))
			return tg_jf_bad(&req->err, NULL, prefix, "each limit is an object");
		if (json_object_get(l, "scope") || json_object_get(l, "tier") || json_object_get(l, "customer_id"))
			return tg_jf_bad(&req->err, prefix, "scope", "a tier's limits take their scope and tier from it");
	}
	if (!(t = api_tenant(req)))
		return req->err.err;
	created = json_array();
	if ((rc = store_begin(&req->err)) < 0)
		goto out;
	if ((rc = store_tier_create(req->principal.tenant_id, id, name, &row, &req->err)) < 0) {
		if (req->err.err == TG_ECONFLICT)
			tg_fail(&req->err, TG_ECONFLICT, "tier_exists", "id", "tier '%s' already exists", id);
		goto fail;
	}
	json_array_foreach(limits, i, l) {
		json_t *spec = with_id(l), *lrow = NULL;
		bool changed;
		json_object_set_new(spec, "scope", json_string("tier"));
		json_object_set_new(spec, "tier", json_string(id));
		rc = limit_write(req, t, spec, true, &lrow, &changed);
		json_decref(spec);
		if (rc < 0) {
			const char *field = tg_arena_printf(&req->arena, "limits[%zu]%s%s", i, req->err.param[0] ? "." : "",
							    req->err.param);
			snprintf(req->err.param, sizeof(req->err.param), "%s", field);
			goto fail;
		}
		json_array_append_new(created, lrow);
	}
	if ((rc = store_commit(&req->err)) < 0)
		goto fail;
	reload_tenant(req->principal.tenant_id, &req->err);
	json_object_set_new(row, "limits", json_incref(created));
	tg_req_reply(req, 201, row);
	row = NULL;
	rc = 0;
	goto out;
fail:
	store_rollback();
out:
	json_decref(row);
	json_decref(created);
	policy_tenant_unref(t);
	return rc;
}

int api_limits_create(struct tg_req *req)
{
	json_t *body = api_body(req), *row;
	int rc;

	if (!body)
		return req->err.err;
	if ((rc = api_limit_create(req, body, &row)) < 0)
		return rc;
	tg_req_reply(req, 201, row);
	return 0;
}

int api_limits_list(struct tg_req *req)
{
	static const char *const q[] = {"limit", "starting_after", "scope", "tier", "customer_id", "meter", NULL};
	const char *after, *tier = NULL, *customer = NULL, *meter = NULL, *scope = tg_req_query(req, "scope");
	int64_t limit;
	json_t *rows = NULL;
	int rc;

	if ((rc = api_query_only(req, q)) < 0 || (rc = api_page(req, &limit, &after)) < 0 ||
	    (rc = api_query_id(req, "tier", &tier)) < 0 || (rc = api_query_id(req, "customer_id", &customer)) < 0 ||
	    (rc = api_query_id(req, "meter", &meter)) < 0)
		return rc;
	if (scope) {
		bool ok = false;
		for (int i = 0; policy_scope_names[i]; i++)
			ok |= strcmp(scope, policy_scope_names[i]) == 0;
		if (!ok)
			return api_bad(req, "scope", "'scope' must be one of: platform, default, tier, customer");
	}
	rc = store_limits_list(req->principal.tenant_id, scope, tier, customer, meter, after, limit, &rows, &req->err);
	return list_reply(req, rc, rows, limit);
}

int api_limits_get(struct tg_req *req)
{
	const char *id;
	json_t *row;
	int rc;

	if (api_path_id(req, 0, &id) < 0)
		return api_not_found(req, "limit", req->params[0]);
	if ((rc = api_query_none(req)) < 0 || (rc = store_limit_get(req->principal.tenant_id, id, &row, &req->err)) < 0)
		return rc;
	if (!row)
		return api_not_found(req, "limit", id);
	tg_req_reply(req, 200, row);
	return 0;
}

int api_limits_update(struct tg_req *req)
{
	const char *id;
	json_t *body = api_body(req), *stored, *spec, *row = NULL;
	int rc;

	if (api_path_id(req, 0, &id) < 0)
		return api_not_found(req, "limit", req->params[0]);
	if (!body)
		return req->err.err;
	if ((rc = store_limit_get(req->principal.tenant_id, id, &stored, &req->err)) < 0)
		return rc;
	if (!stored)
		return api_not_found(req, "limit", id);
	if ((rc = immutable(req, body, stored, "id")) < 0 || (rc = immutable(req, body, stored, "kind")) < 0) {
		json_decref(stored);
		return rc;
	}
	spec = merged(stored, body);
	rc = limit_store(req, spec, false, &row);
	json_decref(spec);
	if (rc == 0 && row && !req->unchanged && override_of(stored))
		api_forget_quotas(req, override_of(stored)); /* it may no longer be that customer's */
	json_decref(stored);
	if (rc < 0)
		return rc;
	if (!row)
		return api_not_found(req, "limit", id);
	tg_req_reply(req, 200, row);
	return 0;
}

int api_limits_delete(struct tg_req *req)
{
	const char *id;
	json_t *stored = NULL;
	bool deleted;
	int rc;

	if (api_path_id(req, 0, &id) < 0)
		return api_not_found(req, "limit", req->params[0]);
	if ((rc = store_limit_get(req->principal.tenant_id, id, &stored, &req->err)) < 0)
		return rc;
	if ((rc = store_limit_delete(req->principal.tenant_id, id, &deleted, &req->err)) < 0) {
		json_decref(stored);
		return rc;
	}
	if (!deleted) {
		json_decref(stored);
		return api_not_found(req, "limit", id);
	}
	reload_tenant(req->principal.tenant_id, &req->err);
	if (stored && override_of(stored))
		api_forget_quotas(req, override_of(stored)); /* what it hid applies again, from the rollups */
	json_decref(stored);
	tg_req_reply(req, 200, tg_json_obj("id", json_string(id), "deleted", json_true(), NULL));
	return 0;
}

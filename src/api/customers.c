/* customers.c — /v1/customers and /v1/tiers. */
#include <string.h>

#include "handlers.h"
#include "tollgate/api.h"
#include "tollgate/hot.h"
#include "tollgate/json.h"
#include "tollgate/log.h"
#include "tollgate/policy.h"
#include "tollgate/store.h"
#include "tollgate/util.h"
#include "tollgate/worker.h"

#define METADATA_MAX 8192

static int metadata_field(struct tg_req *req, const json_t *body, const json_t **ret, bool *present)
{
	json_t *v = json_object_get(body, "metadata");
	int rc;

	*present = v != NULL;
	if (!v)
		return 0;
	if (json_is_null(v)) {
		*ret = NULL;
		return 0;
	}
	json_t *obj = NULL;
	if ((rc = api_object(req, body, "metadata", false, &obj)) < 0)
		return rc;
	/* measured as stored: jsonb writes numbers out in full, so a 500-byte body of 1e999s stores kilobytes */
	if (tg_json_stored_len(obj) > METADATA_MAX)
		return api_bad(req, "metadata", "'metadata' is larger than %d bytes once stored (numbers written out in full)",
			       METADATA_MAX);
	*ret = obj;
	return 0;
}

static int customer_fields(struct tg_req *req, const json_t *body, bool create, struct store_customer_fields *f)
{
	static const char *const create_fields[] = {"id", "name", "email", "tier", "parent_id", "metadata", NULL};
	static const char *const update_fields[] = {"name", "email", "tier", "parent_id", "metadata", NULL};
	int rc;

	if ((rc = api_only(req, body, create ? create_fields : update_fields)) < 0)
		return rc;
	if (create && (rc = api_id(req, body, "id", true, false, &f->id)) < 0)
		return rc;
	f->set_name = json_object_get(body, "name") != NULL;
	f->set_email = json_object_get(body, "email") != NULL;
	f->set_tier = json_object_get(body, "tier") != NULL;
	f->set_parent = json_object_get(body, "parent_id") != NULL;
	if ((rc = api_name(req, body, "name", false, true, 256, &f->name)) < 0 ||
	    (rc = api_str(req, body, "email", false, true, 254, &f->email)) < 0 ||
	    (rc = api_id(req, body, "tier", false, true, &f->tier)) < 0 ||
	    (rc = api_id(req, body, "parent_id", false, true, &f->parent_id)) < 0 ||
	    (rc = metadata_field(req, body, &f->metadata, &f->set_metadata)) < 0)
		return rc;
	if (f->email && (!strchr(f->email, '@') || strchr(f->email, ' ')))
		return api_bad(req, "email", "'email' must be an email address");
	return 0;
}

int api_customers_create(struct tg_req *req)
{
	struct store_customer_fields f = {0};
	json_t *body = api_body(req), *row;
	int rc;

	if (!body)
		return req->err.err;
	if ((rc = customer_fields(req, body, true, &f)) < 0 ||
	    (rc = store_customer_create(req->principal.tenant_id, &f, &row, &req->err)) < 0)
		return rc;
	tg_req_reply(req, 201, row);
	return 0;
}

int api_customers_get(struct tg_req *req)
{
	const char *id;
	json_t *row;
	int rc;

	if (api_path_id(req, 0, &id) < 0)
		return api_not_found(req, "customer", req->params[0]);
	if ((rc = api_query_none(req)) < 0 || (rc = store_customer_get(req->principal.tenant_id, id, &row, &req->err)) < 0)
		return rc;
	if (!row)
		return api_not_found(req, "customer", id);
	tg_req_reply(req, 200, row);
	return 0;
}

int api_customers_list(struct tg_req *req)
{
	static const char *const q[] = {"limit", "starting_after", "tier", "parent_id", NULL};
	const char *tier = NULL, *parent = NULL, *after;
	int64_t limit;
	json_t *rows;
	int rc;

	if ((rc = api_query_only(req, q)) < 0 || (rc = api_page(req, &limit, &after)) < 0 ||
	    (rc = api_query_id(req, "tier", &tier)) < 0 || (rc = api_query_id(req, "parent_id", &parent)) < 0 ||
	    (rc = store_customers_list(req->principal.tenant_id, tier, parent, after, limit, &rows, &req->err)) < 0)
		return rc;
	api_reply_list(req, rows, limit);
	return 0;
}

int api_customers_update(struct tg_req *req)
{
	struct store_customer_fields f = {0};
	json_t *body = api_body(req), *row;
	bool changed;
	int rc;

	if (api_path_id(req, 0, &f.id) < 0)
		return api_not_found(req, "customer", req->params[0]);
	if (!body)
		return req->err.err;
	if ((rc = customer_fields(req, body, false, &f)) < 0 ||
	    (rc = store_customer_update(req->principal.tenant_id, &f, &row, &changed, &req->err)) < 0)
		return rc;
	if (!row)
		return api_not_found(req, "customer", f.id);
	req->unchanged = !changed;
	/* the next check on this instance reads the new tier or organisation (others hear the NOTIFY) */
	if (changed)
		reload_forget_customer(req->principal.tenant_id, f.id, false);
	if (changed && (f.set_tier || f.set_parent))
		api_forget_quotas(req, f.id);
	tg_req_reply(req, 200, row);
	return 0;
}

int api_customers_delete(struct tg_req *req)
{
	const char *id;
	bool deleted;
	int rc;

	if (api_path_id(req, 0, &id) < 0)
		return api_not_found(req, "customer", req->params[0]);
	if ((rc = store_customer_delete(req->principal.tenant_id, id, &deleted, &req->err)) < 0)
		return rc;
	if (!deleted)
		return api_not_found(req, "customer", id);
	/* its wallet went with it: a customer made again under this id starts without the old balance */
	reload_forget_customer(req->principal.tenant_id, id, true);
	tg_req_reply(req, 200, tg_json_obj("id", json_string(id), "deleted", json_true(), NULL));
	return 0;
}

/* ---- tiers ---- */

int api_tiers_list(struct tg_req *req)
{
	static const char *const q[] = {"limit", "starting_after", NULL};
	const char *after;
	int64_t limit;
	json_t *rows;
	int rc;

	if ((rc = api_query_only(req, q)) < 0 || (rc = api_page(req, &limit, &after)) < 0 ||
	    (rc = store_tiers_list(req->principal.tenant_id, after, limit, &rows, &req->err)) < 0)
		return rc;
	api_reply_list(req, rows, limit);
	return 0;
}

int api_tiers_get(struct tg_req *req)
{
	const char *id;
	json_t *row;
	int rc;

	if (api_path_id(req, 0, &id) < 0)
		return api_not_found(req, "tier", req->params[0]);
	if ((rc = api_query_none(req)) < 0 || (rc = store_tier_get(req->principal.tenant_id, id, &row, &req->err)) < 0)
		return rc;
	if (!row)
		return api_not_found(req, "tier", id);
	tg_req_reply(req, 200, row);
	return 0;
}

int api_tiers_update(struct tg_req *req)
{
	static const char *const fields[] = {"name", NULL};
	const char *id, *name = NULL;
	json_t *body = api_body(req), *row;
	bool changed;
	int rc;

	if (api_path_id(req, 0, &id) < 0)
		return api_not_found(req, "tier", req->params[0]);
	if (!body)
		return req->err.err;
	bool set_name = json_object_get(body, "name") != NULL;
	if ((rc = api_only(req, body, fields)) < 0 || (rc = api_name(req, body, "name", false, true, 200, &name)) < 0 ||
	    (rc = store_tier_update(req->principal.tenant_id, id, set_name, name, &row, &changed, &req->err)) < 0)
		return rc;
	if (!row)
		return api_not_found(req, "tier", id);
	req->unchanged = !changed;
	if (changed)
		reload_tenant(req->principal.tenant_id, &req->err);
	tg_req_reply(req, 200, row);
	return 0;
}

int api_tiers_delete(struct tg_req *req)
{
	const char *id;
	bool deleted;
	int rc;

	if (api_path_id(req, 0, &id) < 0)
		return api_not_found(req, "tier", req->params[0]);
	if ((rc = store_tier_delete(req->principal.tenant_id, id, &deleted, &req->err)) < 0)
		return rc;
	if (!deleted)
		return api_not_found(req, "tier", id);
	reload_tenant(req->principal.tenant_id, &req->err);
	tg_req_reply(req, 200, tg_json_obj("id", json_string(id), "deleted", json_true(), NULL));
	return 0;
}

/* webhooks.c — /v1/webhook_endpoints and /v1/webhook_deliveries. */
#include <string.h>

#include "handlers.h"
#include "tollgate/api.h"
#include "tollgate/config.h"
#include "tollgate/crypto.h"
#include "tollgate/json.h"
#include "tollgate/store.h"
#include "tollgate/worker.h"

static const char *const event_types[] = {
	"limit.threshold", "limit.exceeded", "limit.reset", "balance.low", "balance.depleted", "balance.replenished",
	"usage.summary", "workflow.terminated", "rate_limit.throttled", NULL,
};

static void new_secret(char *out)
{
	unsigned char key[32];

	tg_random_bytes(key, sizeof(key));
	memcpy(out, "whsec_", 6);
	tg_base64_encode(key, sizeof(key), out + 6);
}

/* One item of "events": a known type, or "*" alone (every type: listing others beside it would say they are
 * narrower than they are); listed once. */
static int event_type_item(struct tg_req *req, const json_t *arr, size_t i, const char **ret)
{
	const json_t *v = json_array_get(arr, i);
	const char *t = json_is_string(v) && !tg_json_is_number(v) ? json_string_value(v) : NULL;
	bool known = false;

	if (!t)
		return api_bad(req, "events", "'events' must be an array of event type strings");
	if (!strcmp(t, "*")) {
		if (json_array_size(arr) > 1)
			return api_bad(req, "events", "'*' subscribes to every event type: it must be alone in 'events'");
		known = true;
	}
	for (int k = 0; !known && event_types[k]; k++)
		known = !strcmp(t, event_types[k]);
	if (!known)
		return api_bad(req, "events", "'%s' is not an event type (limit.threshold, limit.exceeded, limit.reset, "
					      "balance.low, balance.depleted, balance.replenished, usage.summary, "
					      "workflow.terminated, rate_limit.throttled, or *)",
			       t);
	for (size_t k = 0; k < i; k++)
		if (!strcmp(t, json_string_value(json_array_get(arr, k))))
			return api_bad(req, "events", "'%s' is listed twice in 'events'", t);
	*ret = t;
	return 0;
}

/* "events": a non-empty list of known types, or ["*"]; returns a text[] literal in the arena. */
static int events_field(struct tg_req *req, const json_t *body, bool required, const char **literal)
{
	json_t *arr = json_object_get(body, "events");
	struct tg_buf b = TG_BUF_INIT;
	int rc;

	if (!arr) {
		if (required)
			return tg_fail(&req->err, TG_EINVAL, "missing_parameter", "events",
				       "'events' is required: a list of event types, or [\"*\"]");
		return 0;
	}
	if (!json_is_array(arr) || json_array_size(arr) == 0 || json_array_size(arr) > 32)
		return api_bad(req, "events", "'events' must be a non-empty list of event types, or [\"*\"]");
	tg_buf_addc(&b, '{');
	for (size_t i = 0; i < json_array_size(arr); i++) {
		const char *t = NULL;
		if ((rc = event_type_item(req, arr, i, &t)) < 0) {
			tg_buf_release(&b);
			return rc;
		}
		tg_buf_addf(&b, "%s%s", i ? "," : "", t);
	}
	tg_buf_addc(&b, '}');
	*literal = tg_arena_strdup(&req->arena, b.buf);
	tg_buf_release(&b);
	return 0;
}

static int url_field(struct tg_req *req, const json_t *body, bool required, const char **url)
{
	int rc;

	if ((rc = api_str(req, body, "url", required, false, 2048, url)) < 0 || !*url)
		return rc;
	return webhook_url_check(*url, tg_cfg.webhook_allow_private, &req->err);
}

int api_endpoints_create(struct tg_req *req)
{
	static const char *const fields[] = {"url", "events", "description", NULL};
	const char *url = NULL, *events = NULL, *description = NULL;
	char id[TG_SID_BUFSZ], secret[64];
	json_t *body = api_body(req), *row;
	int rc;

	if (!body)
		return req->err.err;
	if ((rc = api_only(req, body, fields)) < 0 || (rc = url_field(req, body, true, &url)) < 0 ||
	    (rc = events_field(req, body, true, &events)) < 0 ||
	    (rc = api_str(req, body, "description", false, true, 500, &description)) < 0)
		return rc;
	tg_sid_new("whe_", id);
	new_secret(secret);
	if ((rc = store_endpoint_create(req->principal.tenant_id, id, url, description, events, secret, &row, &req->err)) < 0)
		return rc;
	json_object_set_new(row, "secret", json_string(secret)); /* shown once */
	tg_req_reply(req, 201, row);
	return 0;
}

int api_endpoints_list(struct tg_req *req)
{
	static const char *const q[] = {"limit", "starting_after", NULL};
	const char *after;
	int64_t limit;
	json_t *rows;
	int rc;

	if ((rc = api_query_only(req, q)) < 0 || (rc = api_page(req, &limit, &after)) < 0 ||
	    (rc = store_endpoints_list(req->principal.tenant_id, after, limit, &rows, &req->err)) < 0)
		return rc;
	api_reply_list(req, rows, limit);
	return 0;
}

static int endpoint_id(struct tg_req *req, const char **id)
{
	if (api_path_id(req, 0, id) < 0)
		return api_not_found(req, "webhook_endpoint", req->params[0]);
	return 0;
}

int api_endpoints_get(struct tg_req *req)
{
	const char *id;
	json_t *row;
	int rc;

	if ((rc = endpoint_id(req, &id)) < 0 || (rc = api_query_none(req)) < 0 ||
	    (rc = store_endpoint_get(req->principal.tenant_id, id, &row, &req->err)) < 0)
		return rc;
	if (!row)
		return api_not_found(req, "webhook_endpoint", id);
	tg_req_reply(req, 200, row);
	return 0;
}

int api_endpoints_update(struct tg_req *req)
{
	static const char *const fields[] = {"url", "events", "description", "disabled", NULL};
	struct store_endpoint_patch p = {0};
	const char *id;
	json_t *body = api_body(req), *row;
	bool changed;
	int rc;

	if ((rc = endpoint_id(req, &id)) < 0)
		return rc;
	if (!body)
		return req->err.err;
	p.set_url = json_object_get(body, "url") != NULL;
	p.set_events = json_object_get(body, "events") != NULL;
	p.set_description = json_object_get(body, "description") != NULL;
	if ((rc = api_only(req, body, fields)) < 0 || (rc = url_field(req, body, false, &p.url)) < 0 ||
	    (rc = events_field(req, body, false, &p.events_literal)) < 0 ||
	    (rc = api_str(req, body, "description", false, true, 500, &p.description)) < 0 ||
	    (rc = api_bool(req, body, "disabled", false, &p.disabled, &p.set_disabled)) < 0)
		return rc;
	if ((rc = store_endpoint_update(req->principal.tenant_id, id, &p, &row, &changed, &req->err)) < 0)
		return rc;
	if (!row)
		return api_not_found(req, "webhook_endpoint", id);
	req->unchanged = !changed;
	tg_req_reply(req, 200, row);
	return 0;
}

int api_endpoints_delete(struct tg_req *req)
{
	const char *id;
	bool deleted;
	int rc;

	if ((rc = endpoint_id(req, &id)) < 0 || (rc = store_endpoint_delete(req->principal.tenant_id, id, &deleted, &req->err)) < 0)
		return rc;
	if (!deleted)
		return api_not_found(req, "webhook_endpoint", id);
	tg_req_reply(req, 200, tg_json_obj("id", json_string(id), "deleted", json_true(), NULL));
	return 0;
}

int api_endpoints_rotate(struct tg_req *req)
{
	const char *id;
	char secret[64];
	json_t *row;
	int rc;

	if ((rc = endpoint_id(req, &id)) < 0)
		return rc;
	new_secret(secret);
	if ((rc = store_endpoint_rotate(req->principal.tenant_id, id, secret, &row, &req->err)) < 0)
		return rc;
	if (!row)
		return api_not_found(req, "webhook_endpoint", id);
	json_object_set_new(row, "secret", json_string(secret));
	json_object_set_new(row, "previous_secret_expires_at", tg_json_time(tg_now_ms() + 86400000));
	tg_req_reply(req, 200, row);
	return 0;
}

int api_endpoints_test(struct tg_req *req)
{
	const char *id;
	json_t *row;
	int rc;

	if ((rc = endpoint_id(req, &id)) < 0 || (rc = store_endpoint_ping(req->principal.tenant_id, id, &row, &req->err)) < 0)
		return rc;
	if (!row)
		return api_not_found(req, "webhook_endpoint", id);
	tg_req_reply(req, 201, row);
	return 0;
}

int api_endpoints_deliveries(struct tg_req *req)
{
	static const char *const q[] = {"limit", "starting_after", "status", NULL};
	const char *id, *after, *status = tg_req_query(req, "status");
	int64_t limit;
	json_t *rows, *row;
	int rc;

	if ((rc = endpoint_id(req, &id)) < 0 || (rc = api_query_only(req, q)) < 0 || (rc = api_page(req, &limit, &after)) < 0)
		return rc;
	if (status && strcmp(status, "pending") && strcmp(status, "succeeded") && strcmp(status, "failed"))
		return api_bad(req, "status", "'status' must be pending, succeeded or failed");
	if ((rc = store_endpoint_get(req->principal.tenant_id, id, &row, &req->err)) < 0)
		return rc;
	if (!row)
		return api_not_found(req, "webhook_endpoint", id);
	json_decref(row);
	if ((rc = store_deliveries_list(req->principal.tenant_id, id, status, after, limit, &rows, &req->err)) < 0)
		return rc;
	api_reply_list(req, rows, limit);
	return 0;
}

int api_deliveries_retry(struct tg_req *req)
{
	const char *id = req->nparams ? req->params[0] : "";
	json_t *row;
	int rc;

	if (strncmp(id, "whd_", 4) != 0 || !tg_id_valid(id, strlen(id)))
		return api_not_found(req, "webhook_delivery", id);
	if ((rc = store_delivery_retry(req->principal.tenant_id, id, &row, &req->err)) < 0)
		return rc;
	if (!row)
		return api_not_found(req, "webhook_delivery", id);
	tg_req_reply(req, 200, row);
	return 0;
}

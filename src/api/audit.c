/* audit.c — every change to keys, tiers, customers, meters, limits, balance settings and webhook endpoints
 * is recorded (actor, action, resource, before, after, request id) in the same transaction as the change. */
#include <string.h>

#include "handlers.h"
#include "tollgate/api.h"
#include "tollgate/json.h"
#include "tollgate/log.h"
#include "tollgate/store.h"
#include "tollgate/worker.h"

typedef int (*getter_fn)(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err);

static int get_tenant(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err)
{
	(void)id;
	return store_tenant_get(tenant_id, ret, err);
}

static const struct audited {
	const char *prefix;   /* route pattern */
	const char *type;
	const char *action;   /* NULL: <type>.created/updated/deleted by method */
	getter_fn get;        /* for "before" */
} audited[] = {
	{"/v1/api_keys", "api_key", NULL, store_key_get},
	{"/v1/auth/tokens", "token", "token.created", NULL},
	{"/v1/tenant", "tenant", NULL, get_tenant},
	{"/v1/test_clock/advance", "test_clock", "test_clock.advanced", api_test_clock_audit_get},
	{"/v1/tiers", "tier", NULL, store_tier_get},
	{"/v1/customers/{id}/balance", "balance", "balance.settings_updated", api_balance_audit_get},
	{"/v1/customers", "customer", NULL, store_customer_get},
	{"/v1/meters", "meter", NULL, store_meter_get},
	{"/v1/limits", "limit", NULL, store_limit_get},
	{"/v1/webhook_endpoints/{id}/rotate_secret", "webhook_endpoint", "webhook_endpoint.secret_rotated", store_endpoint_get},
	{"/v1/webhook_endpoints", "webhook_endpoint", NULL, store_endpoint_get},
};

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);

	return n >= k && strcmp(s + n - k, suffix) == 0;
}

static const struct audited *find(const struct tg_req *req)
{
	const char *pat = req->route->pattern;

	if (req->method == TG_GET || req->principal.kind == TG_PRINCIPAL_ADMIN)
		return NULL;
	/* the hot path records usage, not configuration; the rest is listed here */
	if (strstr(pat, "/usage") || strstr(pat, "/credit") || strstr(pat, "/debit") || ends_with(pat, "/test") ||
	    strstr(pat, "/deliveries"))
		return NULL;
	for (size_t i = 0; i < TG_ARRAY_SIZE(audited); i++) {
		size_t n = strlen(audited[i].prefix);
		if (!strncmp(pat, audited[i].prefix, n) && (pat[n] == '\0' || !strcmp(pat + n, "/{id}")))
			return &audited[i];
	}
	return NULL;
}

/* Secrets never reach the audit log. */
static void scrub(json_t *o)
{
	static const char *const secret_fields[] = {"secret", "api_key", "token", "previous_secret"};

	for (size_t i = 0; i < TG_ARRAY_SIZE(secret_fields); i++)
		if (json_object_get(o, secret_fields[i]))
			json_object_set_new(o, secret_fields[i], json_string("[redacted]"));
}

static const char *actor(struct tg_req *req)
{
	if (req->principal.kind == TG_PRINCIPAL_TOKEN)
		return tg_arena_printf(&req->arena, "token:%s", req->principal.key_id);
	return req->principal.key_id;
}

int api_audited(struct tg_req *req)
{
	const struct audited *a = find(req);
	const char *id = req->nparams > 0 ? req->params[0] : NULL;
	json_t *before = NULL, *after = NULL;
	struct tg_error e;
	int rc;

	if (!a)
		return req->route->handler(req);
	if ((rc = store_begin(&req->err)) < 0)
		return rc;
	/* "before" of a resource named by the path, or of the tenant's own settings or clock (no id in the path) */
	if (a->get && (req->method == TG_PATCH || req->method == TG_DELETE || a->action) &&
	    (id || a->get == get_tenant || a->get == api_test_clock_audit_get) &&
	    (rc = a->get(req->principal.tenant_id, id, &before, &req->err)) < 0) {
		store_rollback();
		return rc;
	}
	rc = req->route->handler(req);
	if (rc < 0 || req->status >= 400) {
		store_rollback();
		reload_flush(false);
		json_decref(before);
		return rc;
	}
	if (req->unchanged) {
		/* an update that changed nothing is no change to record */
		json_decref(before);
		rc = store_commit(&req->err);
		reload_flush(rc == 0);
		return rc;
	}
	if (req->resp.len)
		after = tg_json_parse(req->resp.buf, req->resp.len, false, &e);
	/* a deleted resource has no "after"; a revoked API key stays, revoked: its reply is its after */
	if (req->method == TG_DELETE && after && json_is_true(json_object_get(after, "deleted"))) {
		json_decref(after);
		after = NULL;
	}
	if (after)
		scrub(after);
	if (before)
		scrub(before);
	if (!id && after && json_is_string(json_object_get(after, "id")))
		id = tg_arena_strdup(&req->arena, json_string_value(json_object_get(after, "id")));
	const char *verb = req->method == TG_POST ? "created" : req->method == TG_PATCH ? "updated" : "deleted";
	struct store_audit entry = {
		.actor = actor(req),
		.action = a->action ? a->action : tg_arena_printf(&req->arena, "%s.%s", a->type, verb),
		.resource_type = a->type,
		.resource_id = id ? id : (a->get == get_tenant ? req->principal.tenant_id : NULL),
		.request_id = req->request_id,
		.before = before,
		.after = after,
	};
	rc = store_audit_add(req->principal.tenant_id, &entry, &req->err);
	json_decref(before);
	json_decref(after);
	if (rc == 0)
		rc = store_commit(&req->err);
	else
		store_rollback();
	reload_flush(rc == 0);
	return rc; /* a failed commit replaces the handler's reply with the error */
}

int api_audit_list(struct tg_req *req)
{
	static const char *const q[] = {"limit", "starting_after", "resource_type", "resource_id", "action", "actor", "from",
					"to", NULL};
	const char *after, *type = tg_req_query(req, "resource_type"), *rid = tg_req_query(req, "resource_id");
	const char *action = tg_req_query(req, "action"), *who = tg_req_query(req, "actor");
	int64_t limit, from = 0, to = tg_now_ms() + 86400000;
	json_t *rows;
	int rc;

	if ((rc = api_query_only(req, q)) < 0 || (rc = api_page(req, &limit, &after)) < 0 ||
	    (rc = api_query_time(req, "from", &from, NULL)) < 0 || (rc = api_query_time(req, "to", &to, NULL)) < 0)
		return rc;
	/* filters as long as openapi allows, no longer (a longer one matched nothing, silently) */
	static const struct {
		const char *name;
		size_t max;
	} caps[] = {{"resource_type", 64}, {"resource_id", 128}, {"action", 64}, {"actor", 200}};
	for (size_t i = 0; i < TG_ARRAY_SIZE(caps); i++) {
		const char *v = tg_req_query(req, caps[i].name);
		if (v && strlen(v) > caps[i].max)
			return api_bad(req, caps[i].name, "'%s' is at most %zu characters", caps[i].name, caps[i].max);
	}
	if ((rc = store_audit_list(req->principal.tenant_id, type, rid, action, who, from, to, after, limit, &rows,
				   &req->err)) < 0)
		return rc;
	api_reply_list(req, rows, limit);
	return 0;
}

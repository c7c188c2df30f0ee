/* keys.c — /v1/api_keys and /v1/auth/tokens. */
#include <string.h>

#include "handlers.h"
#include "tollgate/api.h"
#include "tollgate/auth.h"
#include "tollgate/crypto.h"
#include "tollgate/json.h"
#include "tollgate/store.h"
#include "tollgate/util.h"
#include "tollgate/worker.h"

int api_keys_create(struct tg_req *req)
{
	static const char *const fields[] = {"name", "scopes", NULL};
	const char *name = "";
	char id[TG_SID_BUFSZ], secret[AUTH_SECRET_BUFSZ], hash[65], prefix[16];
	json_t *body = api_body(req), *scopes, *row;
	struct tg_buf lit = TG_BUF_INIT;
	size_t i;
	json_t *s;
	int rc;

	if (!body)
		return req->err.err;
	if ((rc = api_only(req, body, fields)) < 0 || (rc = api_name(req, body, "name", false, false, 200, &name)) < 0)
		return rc;
	scopes = json_object_get(body, "scopes");
	if (!scopes)
		return tg_fail(&req->err, TG_EINVAL, "missing_parameter", "scopes",
			       "'scopes' is required: a list of \"all\", \"check\", \"read\"");
	if (!auth_scopes_mask(scopes) || json_array_size(scopes) > 3)
		return api_bad(req, "scopes", "'scopes' must be a non-empty list of \"all\", \"check\", \"read\"");
	/* a text[] literal from validated words only */
	tg_buf_addc(&lit, '{');
	json_array_foreach(scopes, i, s) {
		if (i)
			tg_buf_addc(&lit, ',');
		tg_buf_adds(&lit, json_string_value(s));
	}
	tg_buf_addc(&lit, '}');
	tg_sid_new("key_", id);
	auth_new_secret(secret, hash, prefix);
	rc = store_key_create(req->principal.tenant_id, id, name, prefix, hash, lit.buf, &row, &req->err);
	tg_buf_release(&lit);
	if (rc < 0)
		return rc;
	reload_tenant(req->principal.tenant_id, &req->err);
	json_object_set_new(row, "secret", json_string(secret));
	tg_req_reply(req, 201, row);
	return 0;
}

int api_keys_list(struct tg_req *req)
{
	static const char *const q[] = {"limit", "starting_after", NULL};
	int64_t limit;
	const char *after;
	json_t *rows;
	int rc;

	if ((rc = api_query_only(req, q)) < 0 || (rc = api_page(req, &limit, &after)) < 0 ||
	    (rc = store_keys_list(req->principal.tenant_id, after, limit, &rows, &req->err)) < 0)
		return rc;
	api_reply_list(req, rows, limit);
	return 0;
}

int api_keys_delete(struct tg_req *req)
{
	const char *id;
	json_t *row;
	int rc;

	if ((rc = api_path_id(req, 0, &id)) < 0)
		return api_not_found(req, "api_key", req->params[0]);
	if ((rc = store_key_revoke(req->principal.tenant_id, id, &row, &req->err)) < 0)
		return rc;
	if (!row)
		return api_not_found(req, "api_key", id);
	/* gone here before we answer; other instances hear the NOTIFY within a second */
	reload_tenant(req->principal.tenant_id, &req->err);
	json_object_set_new(row, "revoked", json_true());
	tg_req_reply(req, 200, row);
	return 0;
}

int api_tokens_create(struct tg_req *req)
{
	static const char *const fields[] = {"scope", "customer_id", "ttl", NULL};
	static const char *const scopes[] = {"read", "all", NULL};
	int scope = 0;
	int64_t ttl = 3600;
	const char *customer = NULL;
	json_t *body = req->json, *row;
	char *token;
	int rc;

	if (req->principal.kind != TG_PRINCIPAL_KEY)
		return tg_fail(&req->err, TG_EPERM, "insufficient_scope", NULL, "tokens are issued to API keys only");
	if (body && ((rc = api_only(req, body, fields)) < 0 ||
		     (rc = api_enum(req, body, "scope", false, scopes, &scope, NULL)) < 0 ||
		     (rc = api_id(req, body, "customer_id", false, false, &customer)) < 0 ||
		     (rc = api_int(req, body, "ttl", false, 1, 86400, &ttl, NULL)) < 0))
		return rc;
	if (customer) {
		if ((rc = store_customer_get(req->principal.tenant_id, customer, &row, &req->err)) < 0)
			return rc;
		if (!row) {
			api_not_found(req, "customer", customer);
			snprintf(req->err.param, sizeof(req->err.param), "customer_id");
			return req->err.err;
		}
		json_decref(row);
	}
	int64_t now = tg_now_ms() / 1000;
	if ((rc = auth_token_issue(req->principal.tenant_id, req->principal.key_id, scopes[scope], customer, now,
				   now + ttl, &token, &req->err)) < 0)
		return rc;
	tg_req_reply(req, 201,
		     tg_json_obj("token", json_string(token), "expires_at", tg_json_time((now + ttl) * 1000), "scope",
				 json_string(scopes[scope]), "customer_id", customer ? json_string(customer) : NULL,
				 NULL));
	free(token);
	return 0;
}

/* The slow half of authentication, on a worker: a key not cached here is looked up in PostgreSQL. */
int api_authenticate_slow(const char *authorization, struct tg_principal *ret, struct tg_error *err)
{
	const char *secret = authorization ? authorization + 7 : "";
	char hash[65];
	json_t *row;
	int rc;

	while (*secret == ' ')
		secret++;
	tg_sha256_hex(secret, strlen(secret), hash);
	if ((rc = store_key_by_hash(hash, &row, err)) < 0)
		return rc;
	if (!row)
		return tg_fail(err, TG_EAUTH, "invalid_api_key", NULL, "the API key is invalid or revoked");
	auth_keys_add(row);
	json_decref(row);
	rc = auth_authenticate(authorization, ret, err);
	if (rc < 0 && err->code && !strcmp(err->code, TG_AUTH_ASK_DATABASE))
		return tg_fail(err, TG_EAUTH, "invalid_api_key", NULL, "the API key is invalid or revoked");
	return rc;
}

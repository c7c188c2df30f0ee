/* idempotency.c — Idempotency-Key on POST: the first response is stored and replayed for 24 h. */
#include <stdlib.h>
#include <string.h>

#include "tollgate/api.h"
#include "tollgate/crypto.h"
#include "tollgate/json.h"
#include "tollgate/log.h"
#include "tollgate/store.h"

static bool key_ok(const char *k)
{
	size_t n = strlen(k);

	if (n == 0 || n > 255)
		return false;
	for (; *k; k++)
		if ((unsigned char)*k < 0x20 || (unsigned char)*k > 0x7e)
			return false;
	return true;
}

/* What "the same request" means: method, path and the exact body bytes. */
static void request_hash(const struct tg_req *req, char *out)
{
	struct tg_buf b = TG_BUF_INIT;

	tg_buf_adds(&b, tg_method_name(req->method));
	tg_buf_addc(&b, ' ');
	tg_buf_adds(&b, req->path);
	tg_buf_addc(&b, '\n');
	tg_buf_add(&b, req->body, req->body_len);
	tg_sha256_hex(b.buf, b.len, out);
	tg_buf_release(&b);
}

static const char *key_tenant(const struct tg_req *req)
{
	return req->principal.kind == TG_PRINCIPAL_ADMIN ? "" : req->principal.tenant_id;
}

/* Replays a stored response's headers: "Name: value" lines. */
static void replay_headers(struct tg_req *req, const char *lines)
{
	while (lines && *lines) {
		const char *nl = strchr(lines, '\n'), *end = nl ? nl : lines + strlen(lines);
		const char *colon = memchr(lines, ':', (size_t)(end - lines));
		if (colon && colon + 1 < end) {
			char *name = tg_arena_strndup(&req->arena, lines, (size_t)(colon - lines));
			char *value = tg_arena_strndup(&req->arena, colon + 2, (size_t)(end - colon - 2));
			tg_req_add_header(req, name, value);
		}
		lines = nl ? nl + 1 : end;
	}
}

static void header_line(void *arg, const char *name, const char *value)
{
	struct tg_buf *b = arg;

	tg_buf_addf(b, "%s: %s\n", name, value);
}

int api_idem_begin(struct tg_req *req)
{
	const char *key = tg_req_header(req, "Idempotency-Key");
	char hash[65];
	json_t *row = NULL;
	int claimed, rc;

	if (req->method != TG_POST || !key)
		return 0;
	if (!key_ok(key))
		return tg_fail(&req->err, TG_EINVAL, "invalid_idempotency_key", "Idempotency-Key",
			       "the Idempotency-Key header must be 1 to 255 printable ASCII characters");
	request_hash(req, hash);
	if ((rc = store_idem_claim(key_tenant(req), key, hash, &claimed, &row, &req->err)) < 0)
		return rc;
	if (claimed)
		return 0;
	const char *stored_hash = store_str(row, "request_hash");
	int status = (int)store_int(row, "status", 0);
	if (!stored_hash || strcmp(stored_hash, hash) != 0) {
		json_decref(row);
		return tg_fail(&req->err, TG_ECONFLICT, "idempotency_key_reused", "Idempotency-Key",
			       "this Idempotency-Key was used with a different request");
	}
	if (status == 0) {
		json_decref(row);
		return tg_fail(&req->err, TG_ECONFLICT, "idempotency_key_in_use", "Idempotency-Key",
			       "a request with this Idempotency-Key is still being processed");
	}
	const char *body = store_str(row, "response");
	const char *ct = store_str(row, "content_type");
	tg_req_reply_raw(req, status, tg_arena_strdup(&req->arena, ct ? ct : "application/json"), body ? body : "",
			 body ? strlen(body) : 0);
	replay_headers(req, store_str(row, "headers"));
	tg_req_add_header(req, "Idempotent-Replayed", "true");
	json_decref(row);
	return 1;
}

/* Secrets are shown once (API keys, tokens, webhook secrets): the stored reply, which a replay answers, has
 * them as null. Returns a body to store in place of the reply's (malloc'd), or NULL to store it as is. */
static char *without_secrets(const struct tg_req *req)
{
	static const char *const secret_fields[] = {"secret", "api_key", "token"};
	struct tg_error e;
	json_t *body;
	bool found = false;

	if (!req->resp.buf || req->status >= 300 || !strstr(req->resp.buf, "\":\""))
		return NULL;
	if (!(body = tg_json_parse(req->resp.buf, req->resp.len, false, &e)) || !json_is_object(body)) {
		json_decref(body);
		return NULL;
	}
	for (size_t i = 0; i < TG_ARRAY_SIZE(secret_fields); i++)
		if (json_is_string(json_object_get(body, secret_fields[i]))) {
			json_object_set_new(body, secret_fields[i], json_null());
			found = true;
		}
	char *out = found ? tg_json_dumps(body) : NULL;
	json_decref(body);
	return out;
}

void api_idem_end(struct tg_req *req, bool keep)
{
	const char *key = tg_req_header(req, "Idempotency-Key"), *tenant = key_tenant(req);
	struct tg_error e;

	if (req->method != TG_POST || !key)
		return;
	/* server-side failures are not remembered: the client may retry them with the same key */
	if (!keep || req->status >= 500 || req->status == 0 ||
	    (req->status == 409 && req->err.err == TG_ECONFLICT && req->err.param[0] &&
	     strcmp(req->err.param, "Idempotency-Key") == 0)) {
		if (store_idem_forget(tenant, key, &e) < 0)
			log_warn("idempotency key not released", "%s", e.detail);
		return;
	}
	struct tg_buf h = TG_BUF_INIT;
	char *redacted = without_secrets(req);
	tg_req_resp_headers_each(req, header_line, &h);
	if (store_idem_finish(tenant, key, req->status, req->content_type ? req->content_type : "application/json",
			      redacted ? redacted : req->resp.buf ? req->resp.buf : "", h.len ? h.buf : NULL, &e) < 0)
		log_warn("idempotency response not stored", "%s", e.detail);
	free(redacted);
	tg_buf_release(&h);
}

int api_wrap(struct tg_req *req)
{
	int rc = api_idem_begin(req);

	if (rc != 0)
		return rc < 0 ? rc : 0;
	rc = api_audited(req);
	if (rc < 0)
		tg_req_reply_error(req);
	api_idem_end(req, true);
	return 0;
}

/* idempotency.c — Idempotency-Key on POST: the first response is stored and replayed for 24 h. */
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

int api_wrap(struct tg_req *req)
{
	const char *key = tg_req_header(req, "Idempotency-Key");
	const char *tenant = req->principal.kind == TG_PRINCIPAL_ADMIN ? "" : req->principal.tenant_id;
	char hash[65];
	json_t *row = NULL;
	int claimed, rc;

	if (req->method != TG_POST || !key)
		return api_audited(req);
	if (!key_ok(key))
		return tg_fail(&req->err, TG_EINVAL, "invalid_idempotency_key", "Idempotency-Key",
			       "the Idempotency-Key header must be 1 to 255 printable ASCII characters");
	request_hash(req, hash);
	if ((rc = store_idem_claim(tenant, key, hash, &claimed, &row, &req->err)) < 0)
		return rc;
	if (!claimed) {
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
		tg_req_reply_raw(req, status, tg_arena_strdup(&req->arena, ct ? ct : "application/json"),
				 body ? body : "", body ? strlen(body) : 0);
		tg_req_add_header(req, "Idempotent-Replayed", "true");
		json_decref(row);
		return 0;
	}

	rc = api_audited(req);
	if (rc < 0)
		tg_req_reply_error(req);
	struct tg_error e;
	/* server-side failures are not remembered: the client may retry them with the same key */
	if (req->status >= 500 || req->status == 0 ||
	    (req->status == 409 && req->err.err == TG_ECONFLICT && req->err.param[0] &&
	     strcmp(req->err.param, "Idempotency-Key") == 0)) {
		if (store_idem_forget(tenant, key, &e) < 0)
			log_warn("idempotency key not released", "%s", e.detail);
	} else if (store_idem_finish(tenant, key, req->status, req->content_type ? req->content_type : "application/json",
				     req->resp.buf ? req->resp.buf : "", &e) < 0) {
		log_warn("idempotency response not stored", "%s", e.detail);
	}
	return 0;
}

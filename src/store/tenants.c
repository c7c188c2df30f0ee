/* tenants.c — SQL for tenants, API keys and idempotency keys. */
#include <string.h>

#include "tollgate/json.h"
#include "tollgate/store.h"

#define TENANT_COLS                                                                                     \
	"id, name, test_mode, default_tier, auto_create_customers, clock_offset_ms, tg_ts(created_at) AS created_at"
#define KEY_COLS                                                                                        \
	"id, name, prefix, scopes, tg_ts(created_at) AS created_at, tg_ts(revoked_at) AS revoked_at"

static struct store_stmt q_tenant_insert = STORE_STMT(
	"INSERT INTO tenants (id, name, test_mode) VALUES ($1, $2, $3) RETURNING " TENANT_COLS, 3);
static struct store_stmt q_key_insert = STORE_STMT(
	"INSERT INTO api_keys (id, tenant_id, name, prefix, secret_hash, scopes) VALUES ($1, $2, $3, $4, $5, $6::text[]) "
	"RETURNING " KEY_COLS, 6);

int store_tenant_create(const char *id, const char *name, bool test_mode, const char *key_id, const char *prefix,
			const char *secret_hash, json_t **ret, struct tg_error *err)
{
	const char *tp[] = {id, name, store_bool(test_mode)};
	const char *kp[] = {key_id, id, "default", prefix, secret_hash, "{all}"};
	json_t *tenant = NULL, *key = NULL;
	int rc;

	if ((rc = store_begin(err)) < 0)
		return rc;
	if ((rc = store_exec1(&q_tenant_insert, tp, &tenant, err)) < 0 ||
	    (rc = store_exec1(&q_key_insert, kp, &key, err)) < 0 || (rc = store_commit(err)) < 0) {
		store_rollback();
		json_decref(tenant);
		json_decref(key);
		return rc;
	}
	json_decref(key);
	*ret = tenant;
	return 0;
}

static struct store_stmt q_tenant_get = STORE_STMT("SELECT " TENANT_COLS " FROM tenants WHERE id = $1", 1);

int store_tenant_get(const char *id, json_t **ret, struct tg_error *err)
{
	const char *p[] = {id};
	return store_exec1(&q_tenant_get, p, ret, err);
}

static struct store_stmt q_tenant_seq = STORE_STMT("SELECT seq FROM tenants WHERE id = $1", 1);
static struct store_stmt q_tenants_list = STORE_STMT(
	"SELECT " TENANT_COLS " FROM tenants WHERE seq > $1 ORDER BY seq LIMIT $2", 2);

/* Resolve a cursor id to its seq; an unknown cursor is a 400 on starting_after. */
static int cursor(struct store_stmt *q, const char *tenant_id, const char *id, char *seqbuf, struct tg_error *err)
{
	const char *p2[] = {tenant_id, id};
	const char *p1[] = {id};
	json_t *row;
	int rc;

	if (!id) {
		store_i64(0, seqbuf);
		return 0;
	}
	rc = store_exec1(q, tenant_id ? p2 : p1, &row, err);
	if (rc < 0)
		return rc;
	if (!row)
		return tg_fail(err, TG_EINVAL, "invalid_parameter", "starting_after",
			       "'starting_after' names no object of this list");
	store_i64(store_int(row, "seq", 0), seqbuf);
	json_decref(row);
	return 0;
}

int store_tenants_list(const char *starting_after, int64_t limit, json_t **ret, struct tg_error *err)
{
	char seq[STORE_I64_BUFSZ], lim[STORE_I64_BUFSZ];
	const char *p[] = {seq, store_i64(limit + 1, lim)};
	int rc = cursor(&q_tenant_seq, NULL, starting_after, seq, err);

	return rc < 0 ? rc : store_exec(&q_tenants_list, p, ret, err);
}

static struct store_stmt q_tier_exists = STORE_STMT("SELECT 1 FROM tiers WHERE tenant_id = $1 AND id = $2 FOR SHARE", 2);
#define NEW_DEFAULT_TIER "CASE WHEN $2 THEN $3 ELSE default_tier END"
#define NEW_AUTO_CREATE "CASE WHEN $4 THEN $5::boolean ELSE auto_create_customers END"
static struct store_stmt q_tenant_update = STORE_STMT(
	"UPDATE tenants SET default_tier = " NEW_DEFAULT_TIER ", auto_create_customers = " NEW_AUTO_CREATE
	", updated_at = now() WHERE id = $1 AND (default_tier, auto_create_customers) IS DISTINCT FROM "
	"(" NEW_DEFAULT_TIER ", " NEW_AUTO_CREATE ") RETURNING " TENANT_COLS, 5);

int store_tenant_update(const char *id, bool set_tier, const char *default_tier, bool set_auto, bool auto_create,
			json_t **ret, bool *changed, struct tg_error *err)
{
	const char *p[] = {id, store_bool(set_tier), default_tier, store_bool(set_auto), store_bool(auto_create)};
	int rc;

	*ret = NULL;
	if ((rc = store_begin(err)) < 0)
		return rc;
	if (set_tier && default_tier) {
		const char *tp[] = {id, default_tier};
		json_t *row;
		if ((rc = store_exec1(&q_tier_exists, tp, &row, err)) < 0)
			goto fail;
		if (!row) {
			rc = tg_fail(err, TG_EINVAL, "tier_not_found", "default_tier", "no tier '%s'", default_tier);
			goto fail;
		}
		json_decref(row);
	}
	if ((rc = store_exec1(&q_tenant_update, p, ret, err)) < 0)
		goto fail;
	if (!(*changed = *ret != NULL) && (rc = store_tenant_get(id, ret, err)) < 0)
		goto fail;
	if ((rc = store_commit(err)) < 0)
		goto fail;
	return 0;
fail:
	json_decref(*ret);
	*ret = NULL;
	store_rollback();
	return rc;
}

/* The tenant's webhook retries move with its clock (migration 0017): every pending delivery counts the
 * advance toward giving up, and each one waiting for its next attempt comes that much closer. One being
 * sent right now (claimed: its attempt is counted but not yet logged) keeps its lease, so it is not sent
 * twice at once. */
static struct store_stmt q_tenant_advance = STORE_STMT(
	"WITH t AS (UPDATE tenants SET clock_offset_ms = clock_offset_ms + $2, updated_at = now() "
	"  WHERE id = $1 AND test_mode AND clock_offset_ms + $2 <= $3::bigint RETURNING " TENANT_COLS "), "
	"d AS (UPDATE webhook_deliveries d SET advanced_ms = d.advanced_ms + $2, "
	"  next_attempt_at = CASE WHEN d.attempts = 0 OR EXISTS (SELECT 1 FROM webhook_attempts a "
	"      WHERE a.delivery_id = d.id AND a.attempt = d.attempts) "
	"    THEN greatest(now(), d.next_attempt_at - $2 * interval '1 millisecond') ELSE d.next_attempt_at END "
	"  FROM t WHERE d.tenant_id = t.id AND d.status = 'pending') "
	"SELECT * FROM t", 3);

int store_tenant_advance_clock(const char *id, int64_t ms, int64_t max_offset_ms, json_t **ret,
			       struct tg_error *err)
{
	char buf[STORE_I64_BUFSZ], max[STORE_I64_BUFSZ];
	const char *p[] = {id, store_i64(ms, buf), store_i64(max_offset_ms, max)};
	return store_exec1(&q_tenant_advance, p, ret, err);
}

/* ---- API keys ---- */

int store_key_create(const char *tenant_id, const char *id, const char *name, const char *prefix,
		     const char *secret_hash, const char *scopes_literal, json_t **ret, struct tg_error *err)
{
	const char *p[] = {id, tenant_id, name, prefix, secret_hash, scopes_literal};
	return store_exec1(&q_key_insert, p, ret, err);
}

static struct store_stmt q_key_seq = STORE_STMT("SELECT seq FROM api_keys WHERE tenant_id = $1 AND id = $2", 2);
static struct store_stmt q_keys_list = STORE_STMT(
	"SELECT " KEY_COLS " FROM api_keys WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3", 3);

int store_keys_list(const char *tenant_id, const char *starting_after, int64_t limit, json_t **ret,
		    struct tg_error *err)
{
	char seq[STORE_I64_BUFSZ], lim[STORE_I64_BUFSZ];
	const char *p[] = {tenant_id, seq, store_i64(limit + 1, lim)};
	int rc = cursor(&q_key_seq, tenant_id, starting_after, seq, err);

	return rc < 0 ? rc : store_exec(&q_keys_list, p, ret, err);
}

static struct store_stmt q_key_get = STORE_STMT("SELECT " KEY_COLS " FROM api_keys WHERE tenant_id = $1 AND id = $2", 2);

int store_key_get(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err)
{
	const char *p[] = {tenant_id, id};
	return store_exec1(&q_key_get, p, ret, err);
}

static struct store_stmt q_key_revoke = STORE_STMT(
	"UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE tenant_id = $1 AND id = $2 "
	"RETURNING " KEY_COLS, 2);

int store_key_revoke(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err)
{
	const char *p[] = {tenant_id, id};
	return store_exec1(&q_key_revoke, p, ret, err);
}

static struct store_stmt q_keys_load = STORE_STMT(
	"SELECT id, tenant_id, secret_hash, scopes FROM api_keys WHERE revoked_at IS NULL "
	"AND ($1::text IS NULL OR tenant_id = $1)", 1);

static struct store_stmt q_key_by_hash = STORE_STMT(
	"SELECT id, tenant_id, secret_hash, scopes FROM api_keys WHERE secret_hash = $1 AND revoked_at IS NULL", 1);

int store_key_by_hash(const char *hash, json_t **ret, struct tg_error *err)
{
	const char *p[] = {hash};
	return store_exec1(&q_key_by_hash, p, ret, err);
}

int store_keys_load(const char *tenant_id, json_t **ret, struct tg_error *err)
{
	const char *p[] = {tenant_id};
	return store_exec(&q_keys_load, p, ret, err);
}

/* ---- idempotency keys ---- */

static struct store_stmt q_idem_insert = STORE_STMT(
	"INSERT INTO idempotency_keys (tenant_id, key, request_hash) VALUES ($1, $2, $3) "
	"ON CONFLICT (tenant_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, status = 0, "
	"response = NULL, content_type = NULL, headers = NULL, created_at = now() "
	/* take over a key whose first request is older than 24 h, or died mid-way more than a minute ago */
	"WHERE idempotency_keys.created_at < now() - interval '24 hours' "
	"OR (idempotency_keys.status = 0 AND idempotency_keys.created_at < now() - interval '1 minute') "
	"RETURNING 1 AS claimed", 3);
static struct store_stmt q_idem_get = STORE_STMT(
	"SELECT request_hash, status, content_type, response, headers FROM idempotency_keys WHERE tenant_id = $1 AND key = $2", 2);

int store_idem_claim(const char *tenant_id, const char *key, const char *hash, int *claimed, json_t **ret,
		     struct tg_error *err)
{
	const char *p[] = {tenant_id, key, hash};
	json_t *row;
	int rc = store_exec1(&q_idem_insert, p, &row, err);

	*ret = NULL;
	if (rc < 0)
		return rc;
	if (row) {
		json_decref(row);
		*claimed = 1;
		return 0;
	}
	*claimed = 0;
	return store_exec1(&q_idem_get, p, ret, err);
}

static struct store_stmt q_idem_finish = STORE_STMT(
	"UPDATE idempotency_keys SET status = $3, content_type = $4, response = $5, headers = $6 "
	"WHERE tenant_id = $1 AND key = $2", 6);

int store_idem_finish(const char *tenant_id, const char *key, int status, const char *content_type,
		      const char *body, const char *headers, struct tg_error *err)
{
	char sbuf[STORE_I64_BUFSZ];
	const char *p[] = {tenant_id, key, store_i64(status, sbuf), content_type, body, headers};
	return store_exec(&q_idem_finish, p, NULL, err);
}

static struct store_stmt q_idem_forget = STORE_STMT("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2", 2);

int store_idem_forget(const char *tenant_id, const char *key, struct tg_error *err)
{
	const char *p[] = {tenant_id, key};
	return store_exec(&q_idem_forget, p, NULL, err);
}

static struct store_stmt q_idem_sweep = STORE_STMT(
	"DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'", 0);

int store_idem_sweep(int64_t *deleted, struct tg_error *err)
{
	int rc = store_exec(&q_idem_sweep, NULL, NULL, err);
	if (rc == 0 && deleted)
		*deleted = store_affected();
	return rc;
}

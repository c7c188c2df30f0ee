/* customers.c — SQL for tiers and customers (organisations are customers with members). */
#include <string.h>

#include "tollgate/json.h"
#include "tollgate/store.h"

#define TIER_COLS "id, name, tg_ts(created_at) AS created_at, tg_ts(updated_at) AS updated_at"
#define CUSTOMER_COLS                                                                                   \
	"id, name, email, tier, parent_id, metadata, tg_ts(created_at) AS created_at, "                   \
	"tg_ts(updated_at) AS updated_at"

static struct store_stmt q_tier_insert = STORE_STMT(
	"INSERT INTO tiers (tenant_id, id, name) VALUES ($1, $2, $3) RETURNING " TIER_COLS, 3);

int store_tier_create(const char *tenant_id, const char *id, const char *name, json_t **ret, struct tg_error *err)
{
	const char *p[] = {tenant_id, id, name};
	return store_exec1(&q_tier_insert, p, ret, err);
}

static struct store_stmt q_tier_get = STORE_STMT(
	"SELECT " TIER_COLS " FROM tiers WHERE tenant_id = $1 AND id = $2", 2);

int store_tier_get(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err)
{
	const char *p[] = {tenant_id, id};
	return store_exec1(&q_tier_get, p, ret, err);
}

static struct store_stmt q_tier_seq = STORE_STMT("SELECT seq FROM tiers WHERE tenant_id = $1 AND id = $2", 2);
static struct store_stmt q_tiers_list = STORE_STMT(
	"SELECT " TIER_COLS " FROM tiers WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3", 3);

static int cursor(struct store_stmt *q, const char *tenant_id, const char *id, char *seqbuf, struct tg_error *err)
{
	const char *p[] = {tenant_id, id};
	json_t *row;
	int rc;

	if (!id) {
		store_i64(0, seqbuf);
		return 0;
	}
	rc = store_exec1(q, p, &row, err);
	if (rc < 0)
		return rc;
	if (!row)
		return tg_fail(err, TG_EINVAL, "invalid_parameter", "starting_after",
			       "'starting_after' names no object of this list");
	store_i64(store_int(row, "seq", 0), seqbuf);
	json_decref(row);
	return 0;
}

int store_tiers_list(const char *tenant_id, const char *starting_after, int64_t limit, json_t **ret,
		     struct tg_error *err)
{
	char seq[STORE_I64_BUFSZ], lim[STORE_I64_BUFSZ];
	const char *p[] = {tenant_id, seq, store_i64(limit + 1, lim)};
	int rc = cursor(&q_tier_seq, tenant_id, starting_after, seq, err);

	return rc < 0 ? rc : store_exec(&q_tiers_list, p, ret, err);
}

static struct store_stmt q_tier_update = STORE_STMT(
	"UPDATE tiers SET name = $4, updated_at = now() "
	"WHERE tenant_id = $1 AND id = $2 AND $3::boolean AND name IS DISTINCT FROM $4 RETURNING " TIER_COLS, 4);

int store_tier_update(const char *tenant_id, const char *id, bool set_name, const char *name, json_t **ret,
		      bool *changed, struct tg_error *err)
{
	const char *p[] = {tenant_id, id, store_bool(set_name), name};
	int rc = store_exec1(&q_tier_update, p, ret, err);

	return rc < 0 ? rc : store_updated(store_tier_get, tenant_id, id, ret, changed, err);
}

static struct store_stmt q_tier_in_use = STORE_STMT(
	"SELECT (SELECT count(*) FROM customers WHERE tenant_id = $1 AND tier = $2) AS customers, "
	"EXISTS (SELECT 1 FROM tenants WHERE id = $1 AND default_tier = $2) AS is_default", 2);
static struct store_stmt q_tier_delete = STORE_STMT("DELETE FROM tiers WHERE tenant_id = $1 AND id = $2", 2);

int store_tier_delete(const char *tenant_id, const char *id, bool *deleted, struct tg_error *err)
{
	const char *p[] = {tenant_id, id};
	json_t *row = NULL;
	int rc;

	*deleted = false;
	if ((rc = store_begin(err)) < 0)
		return rc;
	if ((rc = store_exec1(&q_tier_in_use, p, &row, err)) < 0)
		goto fail;
	if (store_int(row, "customers", 0) > 0) {
		rc = tg_fail(err, TG_ECONFLICT, "tier_in_use", NULL, "tier '%s' still has %lld customers", id,
			     (long long)store_int(row, "customers", 0));
		goto fail;
	}
	if (store_is_true(row, "is_default")) {
		rc = tg_fail(err, TG_ECONFLICT, "tier_in_use", NULL, "tier '%s' is the tenant's default_tier", id);
		goto fail;
	}
	if ((rc = store_exec(&q_tier_delete, p, NULL, err)) < 0)
		goto fail;
	*deleted = store_affected() > 0;
	if ((rc = store_commit(err)) < 0)
		goto fail;
	json_decref(row);
	return 0;
fail:
	json_decref(row);
	store_rollback();
	/* a customer moved onto the tier concurrently: the foreign key catches it */
	if (err->err == TG_ECONFLICT && err->code && strcmp(err->code, "in_use") == 0)
		tg_fail(err, TG_ECONFLICT, "tier_in_use", NULL, "tier '%s' is in use", id);
	return rc;
}

/* ---- customers ---- */

static struct store_stmt q_parent_check = STORE_STMT(
	"SELECT parent_id FROM customers WHERE tenant_id = $1 AND id = $2 FOR SHARE", 2);
static struct store_stmt q_has_members = STORE_STMT(
	"SELECT EXISTS (SELECT 1 FROM customers WHERE tenant_id = $1 AND parent_id = $2) AS has", 2);
static struct store_stmt q_default_tier = STORE_STMT("SELECT default_tier FROM tenants WHERE id = $1", 1);

/* The organisation must exist and have no parent of its own (one level only). */
static int check_parent(const char *tenant_id, const char *id, const char *parent_id, struct tg_error *err)
{
	const char *p[] = {tenant_id, parent_id};
	json_t *row;
	int rc;

	if (id && strcmp(id, parent_id) == 0)
		return tg_fail(err, TG_EINVAL, "invalid_parameter", "parent_id", "a customer cannot be its own parent");
	if ((rc = store_exec1(&q_parent_check, p, &row, err)) < 0)
		return rc;
	if (!row)
		return tg_fail(err, TG_EINVAL, "customer_not_found", "parent_id", "no customer '%s'", parent_id);
	if (store_str(row, "parent_id")) {
		json_decref(row);
		return tg_fail(err, TG_EINVAL, "invalid_parameter", "parent_id",
			       "customer '%s' is itself a member of an organisation; organisations are one level deep",
			       parent_id);
	}
	json_decref(row);
	return 0;
}

static int check_tier(const char *tenant_id, const char *tier, struct tg_error *err)
{
	json_t *row;
	int rc;

	if ((rc = store_tier_get(tenant_id, tier, &row, err)) < 0)
		return rc;
	if (!row)
		return tg_fail(err, TG_EINVAL, "tier_not_found", "tier", "no tier '%s'", tier);
	json_decref(row);
	return 0;
}

static struct store_stmt q_customer_insert = STORE_STMT(
	"INSERT INTO customers (tenant_id, id, name, email, tier, parent_id, metadata) "
	"VALUES ($1, $2, $3, $4, $5, $6, COALESCE($7::jsonb, '{}'::jsonb)) RETURNING " CUSTOMER_COLS, 7);

int store_customer_create(const char *tenant_id, const struct store_customer_fields *f, json_t **ret,
			  struct tg_error *err)
{
	_cleanup_free_ char *meta = f->metadata ? tg_json_dumps(f->metadata) : NULL;
	json_t *t = NULL;
	const char *tier = f->tier;
	int rc;

	if ((rc = store_begin(err)) < 0)
		return rc;
	if (!f->set_tier) {
		const char *p[] = {tenant_id};
		if ((rc = store_exec1(&q_default_tier, p, &t, err)) < 0)
			goto fail;
		tier = t ? store_str(t, "default_tier") : NULL;
	} else if (tier && (rc = check_tier(tenant_id, tier, err)) < 0) {
		goto fail;
	}
	if (f->parent_id && (rc = check_parent(tenant_id, f->id, f->parent_id, err)) < 0)
		goto fail;
	{
		const char *p[] = {tenant_id, f->id, f->name, f->email, tier, f->parent_id, meta};
		if ((rc = store_exec1(&q_customer_insert, p, ret, err)) < 0)
			goto fail;
	}
	if ((rc = store_commit(err)) < 0)
		goto fail;
	json_decref(t);
	return 0;
fail:
	json_decref(t);
	store_rollback();
	if (err->err == TG_ECONFLICT && err->code && strcmp(err->code, "already_exists") == 0)
		tg_fail(err, TG_ECONFLICT, "customer_exists", "id", "customer '%s' already exists", f->id);
	return rc;
}

static struct store_stmt q_customer_get = STORE_STMT(
	"SELECT " CUSTOMER_COLS " FROM customers WHERE tenant_id = $1 AND id = $2", 2);

int store_customer_get(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err)
{
	const char *p[] = {tenant_id, id};
	return store_exec1(&q_customer_get, p, ret, err);
}

static struct store_stmt q_customer_seq = STORE_STMT("SELECT seq FROM customers WHERE tenant_id = $1 AND id = $2", 2);
static struct store_stmt q_customers_list = STORE_STMT(
	"SELECT " CUSTOMER_COLS " FROM customers WHERE tenant_id = $1 AND ($2::text IS NULL OR tier = $2) "
	"AND ($3::text IS NULL OR parent_id = $3) AND seq > $4 ORDER BY seq LIMIT $5", 5);

int store_customers_list(const char *tenant_id, const char *tier, const char *parent_id, const char *starting_after,
			 int64_t limit, json_t **ret, struct tg_error *err)
{
	char seq[STORE_I64_BUFSZ], lim[STORE_I64_BUFSZ];
	const char *p[] = {tenant_id, tier, parent_id, seq, store_i64(limit + 1, lim)};
	int rc = cursor(&q_customer_seq, tenant_id, starting_after, seq, err);

	return rc < 0 ? rc : store_exec(&q_customers_list, p, ret, err);
}

static struct store_stmt q_customer_lock = STORE_STMT(
	"SELECT id FROM customers WHERE tenant_id = $1 AND id = $2 FOR UPDATE", 2);
/* Each field's new value: the one sent when its flag is set, else its own. */
#define NEW_NAME "CASE WHEN $3 THEN $4 ELSE name END"
#define NEW_EMAIL "CASE WHEN $5 THEN $6 ELSE email END"
#define NEW_TIER "CASE WHEN $7 THEN $8 ELSE tier END"
#define NEW_PARENT "CASE WHEN $9 THEN $10 ELSE parent_id END"
#define NEW_METADATA "CASE WHEN $11 THEN COALESCE($12::jsonb, '{}'::jsonb) ELSE metadata END"
/* metadata compared as text: 1.0 and 1 are equal jsonb but not the same metadata */
static struct store_stmt q_customer_update = STORE_STMT(
	"UPDATE customers SET name = " NEW_NAME ", email = " NEW_EMAIL ", tier = " NEW_TIER ", parent_id = " NEW_PARENT
	", metadata = " NEW_METADATA ", updated_at = now() WHERE tenant_id = $1 AND id = $2 AND "
	"(name, email, tier, parent_id, metadata::text) IS DISTINCT FROM "
	"(" NEW_NAME ", " NEW_EMAIL ", " NEW_TIER ", " NEW_PARENT ", (" NEW_METADATA ")::text) RETURNING " CUSTOMER_COLS, 12);

int store_customer_update(const char *tenant_id, const struct store_customer_fields *f, json_t **ret,
			  bool *changed, struct tg_error *err)
{
	_cleanup_free_ char *meta = f->metadata ? tg_json_dumps(f->metadata) : NULL;
	const char *lp[] = {tenant_id, f->id};
	json_t *row;
	int rc;

	*ret = NULL;
	if ((rc = store_begin(err)) < 0)
		return rc;
	if ((rc = store_exec1(&q_customer_lock, lp, &row, err)) < 0)
		goto fail;
	if (!row) {
		store_rollback();
		return 0; /* not found */
	}
	json_decref(row);
	if (f->set_tier && f->tier && (rc = check_tier(tenant_id, f->tier, err)) < 0)
		goto fail;
	if (f->set_parent && f->parent_id) {
		if ((rc = check_parent(tenant_id, f->id, f->parent_id, err)) < 0)
			goto fail;
		if ((rc = store_exec1(&q_has_members, lp, &row, err)) < 0)
			goto fail;
		bool has = store_is_true(row, "has");
		json_decref(row);
		if (has) {
			rc = tg_fail(err, TG_EINVAL, "invalid_parameter", "parent_id",
				     "customer '%s' is an organisation with members; organisations are one level deep",
				     f->id);
			goto fail;
		}
	}
	{
		const char *p[] = {tenant_id, f->id, store_bool(f->set_name), f->name, store_bool(f->set_email), f->email,
				   store_bool(f->set_tier), f->tier, store_bool(f->set_parent), f->parent_id,
				   store_bool(f->set_metadata), meta};
		if ((rc = store_exec1(&q_customer_update, p, ret, err)) < 0 ||
		    (rc = store_updated(store_customer_get, tenant_id, f->id, ret, changed, err)) < 0)
			goto fail;
	}
	if ((rc = store_commit(err)) < 0)
		goto fail;
	return 0;
fail:
	json_decref(*ret);
	*ret = NULL;
	store_rollback();
	return rc;
}

static struct store_stmt q_customer_delete = STORE_STMT("DELETE FROM customers WHERE tenant_id = $1 AND id = $2", 2);
/* its usage as a subject goes with it (an organisation's totals, which hold a member's usage, and the
 * platform's stay; so do its stored events): one made again under its id starts without it */
static struct store_stmt q_customer_rollups_delete = STORE_STMT(
	"WITH h AS (DELETE FROM usage_rollups WHERE tenant_id = $1 AND subject = $2) "
	"DELETE FROM usage_rollups_daily WHERE tenant_id = $1 AND subject = $2", 2);

int store_customer_delete(const char *tenant_id, const char *id, bool *deleted, struct tg_error *err)
{
	const char *p[] = {tenant_id, id};
	int rc = store_exec(&q_customer_delete, p, NULL, err);

	*deleted = rc == 0 && store_affected() > 0;
	if (*deleted && (rc = store_exec(&q_customer_rollups_delete, p, NULL, err)) < 0)
		*deleted = false;
	if (rc < 0 && err->err == TG_ECONFLICT)
		tg_fail(err, TG_ECONFLICT, "customer_has_members", NULL,
			"customer '%s' is an organisation with members; move or delete them first", id);
	return rc;
}

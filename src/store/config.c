/* config.c — SQL for a tenant's configuration: meters and limits, and loading it whole for policy/. */
#include <string.h>

#include "tollgate/json.h"
#include "tollgate/store.h"

/* One tenant's whole configuration; json, not jsonb, all the way: specs keep their key order. */
#define CONFIG_OF(t)                                                                                    \
	"json_build_object("                                                                            \
	" 'tenant', json_build_object('id', " t ".id, 'test_mode', " t ".test_mode,"                     \
	"   'clock_offset_ms', " t ".clock_offset_ms, 'default_tier', " t ".default_tier,"                \
	"   'auto_create_customers', " t ".auto_create_customers, 'created_at', tg_ts(" t ".created_at)),"   \
	" 'meters', COALESCE((SELECT json_agg(json_build_object('spec', spec, 'created_at', tg_ts(created_at)," \
	"   'updated_at', tg_ts(updated_at)) ORDER BY seq) FROM meters WHERE tenant_id = " t ".id), '[]'::json)," \
	" 'limits', COALESCE((SELECT json_agg(json_build_object('spec', spec, 'created_at', tg_ts(created_at)," \
	"   'updated_at', tg_ts(updated_at), 'created_clock_ms', created_clock_ms) ORDER BY seq) "         \
	"   FROM limits WHERE tenant_id = " t ".id), '[]'::json))"

static struct store_stmt q_config = STORE_STMT(
	"SELECT " CONFIG_OF("t") " AS config FROM tenants t WHERE t.id = $1", 1);
static struct store_stmt q_config_all = STORE_STMT(
	"SELECT t.id, " CONFIG_OF("t") " AS config FROM tenants t ORDER BY t.seq", 0);

int store_config_load_all(json_t **ret, struct tg_error *err)
{
	return store_exec(&q_config_all, NULL, ret, err);
}

int store_config_load(const char *tenant_id, json_t **ret, struct tg_error *err)
{
	const char *p[] = {tenant_id};
	json_t *row;
	int rc = store_exec1(&q_config, p, &row, err);

	*ret = NULL;
	if (rc < 0 || !row)
		return rc;
	*ret = json_incref(json_object_get(row, "config"));
	json_decref(row);
	return 0;
}

static struct store_stmt q_tenant_ids = STORE_STMT("SELECT id FROM tenants ORDER BY seq", 0);

int store_tenant_ids(json_t **ret, struct tg_error *err)
{
	return store_exec(&q_tenant_ids, NULL, ret, err);
}

/* ---- meters ---- */

#define SPEC_COLS "spec, tg_ts(created_at) AS created_at, tg_ts(updated_at) AS updated_at"

/* The API object: the stored spec with its timestamps after it. */
static json_t *obj(const json_t *row)
{
	json_t *o = json_deep_copy(json_object_get(row, "spec"));

	json_object_set(o, "created_at", json_object_get(row, "created_at"));
	json_object_set(o, "updated_at", json_object_get(row, "updated_at"));
	return o;
}

static int one_obj(struct store_stmt *q, const char *const *p, json_t **ret, struct tg_error *err)
{
	json_t *row;
	int rc = store_exec1(q, p, &row, err);

	*ret = NULL;
	if (rc < 0 || !row)
		return rc;
	*ret = obj(row);
	json_decref(row);
	return 0;
}

static int list_objs(struct store_stmt *q, const char *const *p, json_t **ret, struct tg_error *err)
{
	json_t *rows, *out, *row;
	size_t i;
	int rc = store_exec(q, p, &rows, err);

	if (rc < 0)
		return rc;
	out = json_array();
	json_array_foreach(rows, i, row)
		json_array_append_new(out, obj(row));
	json_decref(rows);
	*ret = out;
	return 0;
}

static int cursor_seq(struct store_stmt *q, const char *tenant_id, const char *id, char *seqbuf, struct tg_error *err)
{
	const char *p[] = {tenant_id, id};
	json_t *row;
	int rc;

	if (!id) {
		store_i64(0, seqbuf);
		return 0;
	}
	if ((rc = store_exec1(q, p, &row, err)) < 0)
		return rc;
	if (!row)
		return tg_fail(err, TG_EINVAL, "invalid_parameter", "starting_after",
			       "'starting_after' names no object of this list");
	store_i64(store_int(row, "seq", 0), seqbuf);
	json_decref(row);
	return 0;
}

static struct store_stmt q_meter_insert = STORE_STMT(
	"INSERT INTO meters (tenant_id, id, spec) VALUES ($1, $2, $3::json) RETURNING " SPEC_COLS, 3);

int store_meter_create(const char *tenant_id, const char *id, const json_t *spec, json_t **ret, struct tg_error *err)
{
	_cleanup_free_ char *text = tg_json_dumps(spec);
	const char *p[] = {tenant_id, id, text};
	int rc = one_obj(&q_meter_insert, p, ret, err);

	if (rc < 0 && err->err == TG_ECONFLICT)
		tg_fail(err, TG_ECONFLICT, "meter_exists", "id", "meter '%s' already exists", id);
	return rc;
}

static struct store_stmt q_meter_get = STORE_STMT(
	"SELECT " SPEC_COLS " FROM meters WHERE tenant_id = $1 AND id = $2", 2);

int store_meter_get(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err)
{
	const char *p[] = {tenant_id, id};
	return one_obj(&q_meter_get, p, ret, err);
}

static struct store_stmt q_meter_seq = STORE_STMT("SELECT seq FROM meters WHERE tenant_id = $1 AND id = $2", 2);
static struct store_stmt q_meters_list = STORE_STMT(
	"SELECT " SPEC_COLS " FROM meters WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3", 3);

int store_meters_list(const char *tenant_id, const char *starting_after, int64_t limit, json_t **ret,
		      struct tg_error *err)
{
	char seq[STORE_I64_BUFSZ], lim[STORE_I64_BUFSZ];
	const char *p[] = {tenant_id, seq, store_i64(limit + 1, lim)};
	int rc = cursor_seq(&q_meter_seq, tenant_id, starting_after, seq, err);

	return rc < 0 ? rc : list_objs(&q_meters_list, p, ret, err);
}

/* Specs are canonical JSON (policy_*_json), compared as text: key order is meaning in price.by. */
static struct store_stmt q_meter_update = STORE_STMT(
	"UPDATE meters SET spec = $3::json, updated_at = now() "
	"WHERE tenant_id = $1 AND id = $2 AND spec::text IS DISTINCT FROM $3::text RETURNING " SPEC_COLS, 3);

int store_meter_update(const char *tenant_id, const char *id, const json_t *spec, json_t **ret, bool *changed,
		       struct tg_error *err)
{
	_cleanup_free_ char *text = tg_json_dumps(spec);
	const char *p[] = {tenant_id, id, text};
	int rc = one_obj(&q_meter_update, p, ret, err);

	return rc < 0 ? rc : store_updated(store_meter_get, tenant_id, id, ret, changed, err);
}

static struct store_stmt q_meter_in_use = STORE_STMT(
	"SELECT id FROM limits WHERE tenant_id = $1 AND meter = $2 ORDER BY seq LIMIT 1", 2);
static struct store_stmt q_meter_delete = STORE_STMT("DELETE FROM meters WHERE tenant_id = $1 AND id = $2", 2);

int store_meter_delete(const char *tenant_id, const char *id, bool *deleted, struct tg_error *err)
{
	const char *p[] = {tenant_id, id};
	json_t *row = NULL;
	int rc;

	*deleted = false;
	if ((rc = store_begin(err)) < 0)
		return rc;
	if ((rc = store_exec1(&q_meter_in_use, p, &row, err)) < 0)
		goto fail;
	if (row) {
		rc = tg_fail(err, TG_ECONFLICT, "meter_in_use", NULL, "meter '%s' is used by limit '%s'", id,
			     store_str(row, "id"));
		json_decref(row);
		goto fail;
	}
	if ((rc = store_exec(&q_meter_delete, p, NULL, err)) < 0)
		goto fail;
	*deleted = store_affected() > 0;
	if ((rc = store_commit(err)) < 0)
		goto fail;
	return 0;
fail:
	store_rollback();
	return rc;
}

/* ---- limits ---- */

static struct store_stmt q_limit_insert = STORE_STMT(
	"INSERT INTO limits (tenant_id, id, kind, scope, meter, tier, customer_id, spec, created_clock_ms) "
	"VALUES ($1, $2, $3, $4, $5, $6, $7, $8::json, "
	"  (SELECT (extract(epoch FROM now()) * 1000)::bigint + clock_offset_ms FROM tenants WHERE id = $1)) "
	"RETURNING " SPEC_COLS, 8);

static int limit_error(int rc, const struct store_limit_row *l, struct tg_error *err)
{
	if (rc < 0 && err->err == TG_ECONFLICT) {
		if (err->code && strcmp(err->code, "already_exists") == 0)
			tg_fail(err, TG_ECONFLICT, "limit_exists", "id", "limit '%s' already exists", l->id);
		else if (l->tier)
			tg_fail(err, TG_EINVAL, "tier_not_found", "tier", "no tier '%s'", l->tier);
		else if (l->customer_id)
			tg_fail(err, TG_EINVAL, "customer_not_found", "customer_id", "no customer '%s'", l->customer_id);
	}
	return rc;
}

int store_limit_create(const char *tenant_id, const struct store_limit_row *l, json_t **ret, struct tg_error *err)
{
	_cleanup_free_ char *text = tg_json_dumps(l->spec);
	const char *p[] = {tenant_id, l->id, l->kind, l->scope, l->meter, l->tier, l->customer_id, text};
	return limit_error(one_obj(&q_limit_insert, p, ret, err), l, err);
}

static struct store_stmt q_limit_get = STORE_STMT(
	"SELECT " SPEC_COLS " FROM limits WHERE tenant_id = $1 AND id = $2", 2);

int store_limit_get(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err)
{
	const char *p[] = {tenant_id, id};
	return one_obj(&q_limit_get, p, ret, err);
}

static struct store_stmt q_limit_seq = STORE_STMT("SELECT seq FROM limits WHERE tenant_id = $1 AND id = $2", 2);
static struct store_stmt q_limits_list = STORE_STMT(
	"SELECT " SPEC_COLS " FROM limits WHERE tenant_id = $1 AND ($2::text IS NULL OR scope = $2) "
	"AND ($3::text IS NULL OR tier = $3) AND ($4::text IS NULL OR customer_id = $4) "
	"AND ($5::text IS NULL OR meter = $5) AND seq > $6 ORDER BY seq LIMIT $7", 7);

int store_limits_list(const char *tenant_id, const char *scope, const char *tier, const char *customer_id,
		      const char *meter, const char *starting_after, int64_t limit, json_t **ret, struct tg_error *err)
{
	char seq[STORE_I64_BUFSZ], lim[STORE_I64_BUFSZ];
	const char *p[] = {tenant_id, scope, tier, customer_id, meter, seq, store_i64(limit + 1, lim)};
	int rc = cursor_seq(&q_limit_seq, tenant_id, starting_after, seq, err);

	return rc < 0 ? rc : list_objs(&q_limits_list, p, ret, err);
}

static struct store_stmt q_limit_update = STORE_STMT(
	"UPDATE limits SET kind = $3, scope = $4, meter = $5, tier = $6, customer_id = $7, spec = $8::json, "
	"updated_at = now() WHERE tenant_id = $1 AND id = $2 AND "
	"(kind, scope, meter, tier, customer_id, spec::text) IS DISTINCT FROM ($3, $4, $5, $6, $7, $8::text) "
	"RETURNING " SPEC_COLS, 8);

int store_limit_update(const char *tenant_id, const struct store_limit_row *l, json_t **ret, bool *changed,
		       struct tg_error *err)
{
	_cleanup_free_ char *text = tg_json_dumps(l->spec);
	const char *p[] = {tenant_id, l->id, l->kind, l->scope, l->meter, l->tier, l->customer_id, text};
	int rc = limit_error(one_obj(&q_limit_update, p, ret, err), l, err);

	return rc < 0 ? rc : store_updated(store_limit_get, tenant_id, l->id, ret, changed, err);
}

static struct store_stmt q_limit_delete = STORE_STMT("DELETE FROM limits WHERE tenant_id = $1 AND id = $2", 2);

int store_limit_delete(const char *tenant_id, const char *id, bool *deleted, struct tg_error *err)
{
	const char *p[] = {tenant_id, id};
	int rc = store_exec(&q_limit_delete, p, NULL, err);

	*deleted = rc == 0 && store_affected() > 0;
	return rc;
}

/* ---- array literals ---- */

void store_array_add(struct store_array *a, const char *s)
{
	tg_buf_addc(&a->b, a->n++ ? ',' : '{');
	if (!s) {
		tg_buf_adds(&a->b, "NULL");
		return;
	}
	tg_buf_addc(&a->b, '"');
	/* runs without a quote or a backslash go in at once, not a call per character (the event writer builds
	 * every column of its batches this way); each of those two is escaped */
	for (;;) {
		size_t run = strcspn(s, "\"\\");
		tg_buf_add(&a->b, s, run);
		if (!s[run])
			break;
		tg_buf_addc(&a->b, '\\');
		tg_buf_addc(&a->b, s[run]);
		s += run + 1;
	}
	tg_buf_addc(&a->b, '"');
}

const char *store_array_text(struct store_array *a)
{
	if (a->n == 0)
		tg_buf_adds(&a->b, "{");
	tg_buf_addc(&a->b, '}');
	return a->b.buf;
}

void store_array_release(struct store_array *a)
{
	tg_buf_release(&a->b);
	a->n = 0;
}

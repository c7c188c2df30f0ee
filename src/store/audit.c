/* audit.c — SQL for the audit log. */
#include "tollgate/json.h"
#include "tollgate/store.h"

static struct store_stmt q_add = STORE_STMT(
	"INSERT INTO audit_log (tenant_id, id, actor, action, resource_type, resource_id, before, after, request_id) "
	"VALUES ($1, $2, $3, $4, $5, $6, $7::json, $8::json, $9)", 9);

int store_audit_add(const char *tenant_id, const struct store_audit *a, struct tg_error *err)
{
	char id[TG_SID_BUFSZ];
	_cleanup_free_ char *before = a->before ? tg_json_dumps(a->before) : NULL;
	_cleanup_free_ char *after = a->after ? tg_json_dumps(a->after) : NULL;
	const char *p[] = {tenant_id, id, a->actor, a->action, a->resource_type, a->resource_id, before, after,
			   a->request_id};

	tg_sid_new("aud_", id);
	return store_exec(&q_add, p, NULL, err);
}

static struct store_stmt q_seq = STORE_STMT("SELECT seq FROM audit_log WHERE tenant_id = $1 AND id = $2", 2);
static struct store_stmt q_list = STORE_STMT(
	"SELECT id, actor, action, resource_type, resource_id, before, after, request_id, tg_ts(created_at) AS created_at "
	"FROM audit_log WHERE tenant_id = $1 AND ($2::text IS NULL OR resource_type = $2) "
	"AND ($3::text IS NULL OR resource_id = $3) AND ($4::text IS NULL OR action = $4) "
	"AND ($5::text IS NULL OR actor = $5) AND created_at >= tg_ms($6::bigint) "
	"AND created_at < tg_ms($7::bigint) AND ($8::bigint IS NULL OR seq < $8) "
	"ORDER BY seq DESC LIMIT $9", 9);

int store_audit_list(const char *tenant_id, const char *resource_type, const char *resource_id, const char *action,
		     const char *actor, int64_t from_ms, int64_t to_ms, const char *starting_after, int64_t limit,
		     json_t **ret, struct tg_error *err)
{
	char f[STORE_I64_BUFSZ], t[STORE_I64_BUFSZ], c[STORE_I64_BUFSZ], l[STORE_I64_BUFSZ];
	const char *cursor = NULL;
	int rc;

	if (starting_after) {
		const char *cp[] = {tenant_id, starting_after};
		json_t *row;
		if ((rc = store_exec1(&q_seq, cp, &row, err)) < 0)
			return rc;
		if (!row)
			return tg_fail(err, TG_EINVAL, "invalid_parameter", "starting_after",
				       "'starting_after' names no entry of this audit log");
		cursor = store_i64(store_int(row, "seq", 0), c);
		json_decref(row);
	}
	const char *p[] = {tenant_id, resource_type, resource_id, action, actor, store_i64(from_ms, f), store_i64(to_ms, t),
			   cursor, store_i64(limit + 1, l)};
	return store_exec(&q_list, p, ret, err);
}

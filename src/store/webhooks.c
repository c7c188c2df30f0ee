/* webhooks.c — SQL for the outbox, endpoints, the delivery queue, and the worker duties' bookkeeping. */
#include <stdio.h>
#include <string.h>

#include "tollgate/json.h"
#include "tollgate/store.h"

/* ---- outbox ---- */

static struct store_stmt q_once = STORE_STMT(
	"INSERT INTO webhook_once (tenant_id, key) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1 AS fresh", 2);
static struct store_stmt q_outbox = STORE_STMT(
	"INSERT INTO webhook_events (tenant_id, id, type, data) VALUES ($1, $2, $3, $4::json)", 4);

int store_outbox_add(const char *tenant_id, const char *type, const json_t *data, const char *once_key,
		     bool *written, struct tg_error *err)
{
	char id[TG_SID_BUFSZ];
	int rc;

	if (written)
		*written = false;
	if (once_key) {
		const char *p[] = {tenant_id, once_key};
		json_t *row;
		if ((rc = store_exec1(&q_once, p, &row, err)) < 0)
			return rc;
		if (!row)
			return 0;
		json_decref(row);
	}
	_cleanup_free_ char *text = tg_json_dumps(data);
	tg_sid_ordered("evt_", tg_now_ms(), id);
	const char *p[] = {tenant_id, id, type, text};
	if ((rc = store_exec(&q_outbox, p, NULL, err)) < 0)
		return rc;
	if (written)
		*written = true;
	return 0;
}

json_t *store_quota_notice(const char *limit_id, const char *subject, tg_fixed usage, tg_fixed limit,
			   const char *enforcement, int64_t from_ms, int64_t to_ms, const tg_fixed *threshold,
			   char *once_key, size_t size)
{
	bool platform = strcmp(subject, "*") == 0;
	json_t *data = tg_json_obj("limit_id", json_string(limit_id), "customer_id",
				   platform ? json_null() : json_string(subject), NULL);

	if (threshold) {
		char thr[TG_FIXED_BUFSZ];
		tg_fixed_format(*threshold, thr);
		json_object_set_new(data, "threshold", tg_json_fixed(*threshold));
		snprintf(once_key, size, "threshold|%s|%s|%lld|%s", limit_id, subject, (long long)from_ms, thr);
	} else {
		snprintf(once_key, size, "exceeded|%s|%s|%lld", limit_id, subject, (long long)from_ms);
	}
	json_object_set_new(data, "usage", tg_json_fixed(usage));
	json_object_set_new(data, "limit", tg_json_fixed(limit));
	if (!threshold)
		json_object_set_new(data, "enforcement", json_string(enforcement));
	json_object_set_new(data, "period_start", tg_json_time(from_ms));
	json_object_set_new(data, "period_end", to_ms == INT64_MAX ? json_null() : tg_json_time(to_ms));
	return data;
}

/* ---- endpoints ---- */

#define ENDPOINT_COLS                                                                                 \
	"id, url, description, events, disabled, tg_ts(created_at) AS created_at, tg_ts(updated_at) AS updated_at"

static struct store_stmt q_ep_insert = STORE_STMT(
	"INSERT INTO webhook_endpoints (tenant_id, id, url, description, events, secret) "
	"VALUES ($1, $2, $3, $4, $5::text[], $6) RETURNING " ENDPOINT_COLS, 6);

int store_endpoint_create(const char *tenant_id, const char *id, const char *url, const char *description,
			  const char *events_literal, const char *secret, json_t **ret, struct tg_error *err)
{
	const char *p[] = {tenant_id, id, url, description, events_literal, secret};
	return store_exec1(&q_ep_insert, p, ret, err);
}

static struct store_stmt q_ep_get = STORE_STMT(
	"SELECT " ENDPOINT_COLS " FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2", 2);

int store_endpoint_get(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err)
{
	const char *p[] = {tenant_id, id};
	return store_exec1(&q_ep_get, p, ret, err);
}

static struct store_stmt q_ep_seq = STORE_STMT("SELECT seq FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2", 2);
static struct store_stmt q_ep_list = STORE_STMT(
	"SELECT " ENDPOINT_COLS " FROM webhook_endpoints WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3", 3);

int store_endpoints_list(const char *tenant_id, const char *starting_after, int64_t limit, json_t **ret,
			 struct tg_error *err)
{
	char seq[STORE_I64_BUFSZ], lim[STORE_I64_BUFSZ];
	int rc;

	store_i64(0, seq);
	if (starting_after) {
		const char *cp[] = {tenant_id, starting_after};
		json_t *row;
		if ((rc = store_exec1(&q_ep_seq, cp, &row, err)) < 0)
			return rc;
		if (!row)
			return tg_fail(err, TG_EINVAL, "invalid_parameter", "starting_after",
				       "'starting_after' names no object of this list");
		store_i64(store_int(row, "seq", 0), seq);
		json_decref(row);
	}
	const char *p[] = {tenant_id, seq, store_i64(limit + 1, lim)};
	return store_exec(&q_ep_list, p, ret, err);
}

#define NEW_URL "CASE WHEN $3 THEN $4 ELSE url END"
#define NEW_DESCRIPTION "CASE WHEN $5 THEN $6 ELSE description END"
#define NEW_EVENTS "CASE WHEN $7 THEN $8::text[] ELSE events END"
#define NEW_DISABLED "CASE WHEN $9 THEN $10::boolean ELSE disabled END"
static struct store_stmt q_ep_update = STORE_STMT(
	"UPDATE webhook_endpoints SET url = " NEW_URL ", description = " NEW_DESCRIPTION ", events = " NEW_EVENTS
	", disabled = " NEW_DISABLED ", updated_at = now() WHERE tenant_id = $1 AND id = $2 AND "
	"(url, description, events, disabled) IS DISTINCT FROM (" NEW_URL ", " NEW_DESCRIPTION ", " NEW_EVENTS ", "
	NEW_DISABLED ") RETURNING " ENDPOINT_COLS, 10);

int store_endpoint_update(const char *tenant_id, const char *id, const struct store_endpoint_patch *e, json_t **ret,
			  bool *changed, struct tg_error *err)
{
	const char *p[] = {tenant_id, id, store_bool(e->set_url), e->url, store_bool(e->set_description), e->description,
			   store_bool(e->set_events), e->events_literal, store_bool(e->set_disabled), store_bool(e->disabled)};
	int rc = store_exec1(&q_ep_update, p, ret, err);

	return rc < 0 ? rc : store_updated(store_endpoint_get, tenant_id, id, ret, changed, err);
}

/* The endpoint with its deliveries and their attempts (no foreign keys cascade: see 0010). */
static struct store_stmt q_ep_delete = STORE_STMT(
	"WITH d AS (DELETE FROM webhook_deliveries WHERE tenant_id = $1 AND endpoint_id = $2 RETURNING id), "
	"a AS (DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM d)) "
	"DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2", 2);

int store_endpoint_delete(const char *tenant_id, const char *id, bool *deleted, struct tg_error *err)
{
	const char *p[] = {tenant_id, id};
	int rc = store_exec(&q_ep_delete, p, NULL, err);

	*deleted = rc == 0 && store_affected() > 0;
	return rc;
}

static struct store_stmt q_ep_rotate = STORE_STMT(
	"UPDATE webhook_endpoints SET previous_secret = secret, previous_expires_at = now() + interval '24 hours', "
	"secret = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2 RETURNING " ENDPOINT_COLS, 3);

int store_endpoint_rotate(const char *tenant_id, const char *id, const char *secret, json_t **ret,
			  struct tg_error *err)
{
	const char *p[] = {tenant_id, id, secret};
	return store_exec1(&q_ep_rotate, p, ret, err);
}

#define DELIVERY_COLS                                                                                 \
	"d.id, d.endpoint_id, d.event_id, ev.type AS event_type, d.status, d.attempts, "                  \
	"tg_ts(d.next_attempt_at) AS next_attempt_at, d.last_status, d.last_error, "                      \
	"tg_ts(d.created_at) AS created_at, tg_ts(d.updated_at) AS updated_at, "                          \
	"COALESCE((SELECT json_agg(json_build_object('attempt', a.attempt, 'started_at', tg_ts(a.started_at), " \
	"'status_code', a.status_code, 'latency_ms', a.latency_ms, 'error', a.error, 'response', a.response) " \
	"ORDER BY a.attempt) FROM webhook_attempts a WHERE a.delivery_id = d.id), '[]'::json) AS attempt_log"

/* One statement: the endpoint must be the tenant's (no row otherwise), and the new delivery comes back
 * in the shape of DELIVERY_COLS (it has no attempts yet). */
static struct store_stmt q_ping = STORE_STMT(
	"WITH ep AS (SELECT id FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2), "
	"ev AS (INSERT INTO webhook_events (tenant_id, id, type, data) "
	"  SELECT $1, $3, 'ping', json_build_object('endpoint_id', ep.id) FROM ep RETURNING id, type), "
	"d AS (INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, event_id) "
	"  SELECT $4, $1, $2, id FROM ev RETURNING *) "
	"SELECT d.id, d.endpoint_id, d.event_id, 'ping' AS event_type, d.status, d.attempts, "
	"tg_ts(d.next_attempt_at) AS next_attempt_at, d.last_status, d.last_error, tg_ts(d.created_at) AS created_at, "
	"tg_ts(d.updated_at) AS updated_at, '[]'::json AS attempt_log FROM d", 4);
static struct store_stmt q_delivery_get = STORE_STMT_REPLAN(
	"SELECT " DELIVERY_COLS " FROM webhook_deliveries d JOIN webhook_events ev "
	"ON ev.tenant_id = d.tenant_id AND ev.id = d.event_id WHERE d.tenant_id = $1 AND d.id = $2", 2);

int store_endpoint_ping(const char *tenant_id, const char *endpoint_id, json_t **ret, struct tg_error *err)
{
	char evt[TG_SID_BUFSZ], whd[TG_SID_BUFSZ];

	tg_sid_ordered("evt_", tg_now_ms(), evt);
	tg_sid_new("whd_", whd);
	const char *p[] = {tenant_id, endpoint_id, evt, whd};
	return store_exec1(&q_ping, p, ret, err);
}

static struct store_stmt q_deliveries_list = STORE_STMT_REPLAN(
	"SELECT " DELIVERY_COLS " FROM webhook_deliveries d JOIN webhook_events ev "
	"ON ev.tenant_id = d.tenant_id AND ev.id = d.event_id "
	"WHERE d.tenant_id = $1 AND d.endpoint_id = $2 AND ($3::text IS NULL OR d.status = $3) "
	"AND ($4::bigint IS NULL OR d.seq < $4) ORDER BY d.seq DESC LIMIT $5", 5);
static struct store_stmt q_delivery_seq = STORE_STMT_REPLAN(
	"SELECT seq FROM webhook_deliveries WHERE tenant_id = $1 AND endpoint_id = $2 AND id = $3", 3);

int store_deliveries_list(const char *tenant_id, const char *endpoint_id, const char *status,
			  const char *starting_after, int64_t limit, json_t **ret, struct tg_error *err)
{
	char seq[STORE_I64_BUFSZ], lim[STORE_I64_BUFSZ];
	const char *cursor = NULL;
	int rc;

	if (starting_after) {
		const char *cp[] = {tenant_id, endpoint_id, starting_after};
		json_t *row;
		if ((rc = store_exec1(&q_delivery_seq, cp, &row, err)) < 0)
			return rc;
		if (!row)
			return tg_fail(err, TG_EINVAL, "invalid_parameter", "starting_after",
				       "'starting_after' names no delivery of this endpoint");
		cursor = store_i64(store_int(row, "seq", 0), seq);
		json_decref(row);
	}
	const char *p[] = {tenant_id, endpoint_id, status, cursor, store_i64(limit + 1, lim)};
	return store_exec(&q_deliveries_list, p, ret, err);
}

static struct store_stmt q_delivery_retry = STORE_STMT_REPLAN(
	"UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(), updated_at = now() "
	"WHERE tenant_id = $1 AND id = $2 RETURNING id", 2);

int store_delivery_retry(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err)
{
	const char *p[] = {tenant_id, id};
	json_t *row;
	int rc = store_exec1(&q_delivery_retry, p, &row, err);

	*ret = NULL;
	if (rc < 0 || !row)
		return rc;
	json_decref(row);
	return store_exec1(&q_delivery_get, p, ret, err);
}

/* Claimed rows are leased by pushing next_attempt_at ahead: a crash leaves them due again later. */
static struct store_stmt q_claim = STORE_STMT_REPLAN(
	"WITH c AS (SELECT d.id FROM webhook_deliveries d WHERE d.status = 'pending' AND d.next_attempt_at <= now() "
	"  AND NOT EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.tenant_id = d.tenant_id AND e.id = d.endpoint_id "
	"    AND e.disabled) "
	"  ORDER BY d.next_attempt_at LIMIT $1 FOR UPDATE OF d SKIP LOCKED) "
	"UPDATE webhook_deliveries d SET next_attempt_at = now() + ($2::bigint * interval '1 millisecond'), "
	"  attempts = d.attempts + 1, updated_at = now() FROM c WHERE d.id = c.id "
	"RETURNING d.id, d.tenant_id, d.attempts AS attempt, (extract(epoch FROM d.created_at) * 1000)::bigint - d.advanced_ms AS created_ms, "
	"  (SELECT url FROM webhook_endpoints e WHERE e.tenant_id = d.tenant_id AND e.id = d.endpoint_id) AS url, "
	"  (SELECT secret FROM webhook_endpoints e WHERE e.tenant_id = d.tenant_id AND e.id = d.endpoint_id) AS secret, "
	"  (SELECT CASE WHEN previous_expires_at > now() THEN previous_secret END FROM webhook_endpoints e "
	"    WHERE e.tenant_id = d.tenant_id AND e.id = d.endpoint_id) AS previous_secret, "
	"  (SELECT json_build_object('id', ev.id, 'type', ev.type, 'created', tg_ts(ev.created_at), 'data', ev.data) "
	"    FROM webhook_events ev WHERE ev.tenant_id = d.tenant_id AND ev.id = d.event_id)::text AS payload", 2);

/* The claim walks webhook_deliveries_due in order with a plain index scan. Every delivery that stops
 * being pending leaves a dead entry in that index until the next vacuum, and only a plain index scan
 * marks such entries dead as it passes them (a bitmap scan does not); the planner picks a bitmap
 * scan and a sort when it expects few pending rows, which is the usual case, and then every claim
 * reads every delivery made since the last vacuum (thousands of heap pages at 500 deliveries/s). */
static struct store_stmt q_plain_index_scan = STORE_STMT(
	"SELECT set_config('enable_bitmapscan', 'off', true), set_config('enable_seqscan', 'off', true)", 0);

int store_deliveries_claim(int max, int64_t lease_ms, json_t **ret, struct tg_error *err)
{
	char m[STORE_I64_BUFSZ], l[STORE_I64_BUFSZ];
	const char *p[] = {store_i64(max, m), store_i64(lease_ms, l)};
	int rc;

	*ret = NULL;
	if ((rc = store_begin(err)) < 0)
		return rc;
	if ((rc = store_defer(&q_plain_index_scan, NULL, err)) < 0 || (rc = store_exec(&q_claim, p, ret, err)) < 0 ||
	    (rc = store_commit(err)) < 0) {
		store_rollback();
		json_decref(*ret);
		*ret = NULL;
		return rc;
	}
	return 0;
}

/* One round trip for every transfer that finished together: the outcomes, and the attempt log rows of the
 * deliveries that are still there. A final one keeps the time its last attempt was due (the claim's lease had
 * pushed it a minute ahead: a delivered webhook read as due a minute after it was sent) (one whose endpoint was deleted meanwhile is gone: no foreign key keeps
 * its attempts out, this does). */
static struct store_stmt q_attempts = STORE_STMT_REPLAN(
	"WITH u AS (SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::int[], $5::int[], $6::text[], "
	"  $7::text[], $8::text[], $9::bigint[]) AS u(id, attempt, started, code, latency, error, response, outcome, next)), "
	"o AS (UPDATE webhook_deliveries d SET status = u.outcome, last_status = u.code, last_error = u.error, "
	"  next_attempt_at = CASE WHEN u.outcome = 'pending' THEN tg_ms(u.next) ELSE least(d.next_attempt_at, tg_ms(u.started)) END, "
	"  updated_at = now() FROM u WHERE d.id = u.id RETURNING d.id) "
	"INSERT INTO webhook_attempts (delivery_id, attempt, started_at, status_code, latency_ms, error, response) "
	"SELECT u.id, attempt, tg_ms(started), code, latency, error, response FROM u JOIN o ON o.id = u.id "
	"ON CONFLICT DO NOTHING", 9);

int store_delivery_attempts(const struct store_attempt *a, int n, struct tg_error *err)
{
	struct store_array col[9] = {0};
	const char *p[9];
	int rc;

	for (int i = 0; i < n; i++) {
		char b[5][STORE_I64_BUFSZ];
		store_array_add(&col[0], a[i].id);
		store_array_add(&col[1], store_i64(a[i].attempt, b[0]));
		store_array_add(&col[2], store_i64(a[i].started_ms, b[1]));
		store_array_add(&col[3], a[i].status_code ? store_i64(a[i].status_code, b[2]) : NULL);
		store_array_add(&col[4], store_i64(a[i].latency_ms, b[3]));
		store_array_add(&col[5], a[i].error);
		store_array_add(&col[6], a[i].response);
		store_array_add(&col[7], a[i].outcome);
		store_array_add(&col[8], store_i64(a[i].next_ms, b[4]));
	}
	for (int c = 0; c < 9; c++)
		p[c] = store_array_text(&col[c]);
	rc = store_exec(&q_attempts, p, NULL, err);
	for (int c = 0; c < 9; c++)
		store_array_release(&col[c]);
	return rc;
}

static struct store_stmt q_depth = STORE_STMT(
	"SELECT (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending') AS pending, "
	"(SELECT count(*) FROM webhook_deliveries WHERE status = 'failed') AS failed", 0);

int store_webhook_queue_depth(int64_t *pending, int64_t *failed, struct tg_error *err)
{
	json_t *row;
	int rc = store_exec1(&q_depth, NULL, &row, err);

	if (rc < 0)
		return rc;
	*pending = store_int(row, "pending", 0);
	*failed = store_int(row, "failed", 0);
	json_decref(row);
	return 0;
}

/* ---- duties ---- */

static struct store_stmt q_lock = STORE_STMT("SELECT pg_advisory_xact_lock(hashtext($1))", 1);

int store_xact_lock(const char *key, struct tg_error *err)
{
	const char *p[] = {key};
	return store_exec(&q_lock, p, NULL, err);
}

static struct store_stmt q_try_lock = STORE_STMT("SELECT pg_try_advisory_xact_lock(hashtext($1)) AS locked", 1);

int store_try_xact_lock(const char *key, bool *locked, struct tg_error *err)
{
	const char *p[] = {key};
	json_t *row;
	int rc = store_exec1(&q_try_lock, p, &row, err);

	*locked = rc == 0 && store_is_true(row, "locked");
	json_decref(row);
	return rc;
}

static struct store_stmt q_progress = STORE_STMT(
	"SELECT (extract(epoch FROM done_to) * 1000)::bigint AS ms FROM duty_progress WHERE tenant_id = $1 AND duty = $2", 2);
static struct store_stmt q_advance = STORE_STMT(
	"INSERT INTO duty_progress (tenant_id, duty, done_to) VALUES ($1, $2, tg_ms($3::bigint)) "
	"ON CONFLICT (tenant_id, duty) DO UPDATE SET done_to = GREATEST(duty_progress.done_to, EXCLUDED.done_to)", 3);

int store_duty_progress(const char *tenant_id, const char *duty, int64_t *done_to_ms, bool *found,
			struct tg_error *err)
{
	const char *p[] = {tenant_id, duty};
	json_t *row;
	int rc = store_exec1(&q_progress, p, &row, err);

	if (rc < 0)
		return rc;
	*found = row != NULL;
	*done_to_ms = row ? store_int(row, "ms", 0) : 0;
	json_decref(row);
	return 0;
}

static struct store_stmt q_progress_all = STORE_STMT(
	"SELECT tenant_id, duty, (extract(epoch FROM done_to) * 1000)::bigint AS ms FROM duty_progress", 0);

int store_duty_progress_all(json_t **ret, struct tg_error *err)
{
	return store_exec(&q_progress_all, NULL, ret, err);
}

int store_duty_advance(const char *tenant_id, const char *duty, int64_t done_to_ms, struct tg_error *err)
{
	char b[STORE_I64_BUFSZ];
	const char *p[] = {tenant_id, duty, store_i64(done_to_ms, b)};
	return store_exec(&q_advance, p, NULL, err);
}

/* a probe per id, whatever the statistics say and the table's size when it was planned (see q_customers in writer.c) */
static struct store_stmt q_customers_info = STORE_STMT_PROBE(
	"SELECT c.id, c.tier, c.parent_id, p.tier AS parent_tier FROM (SELECT DISTINCT unnest($2::text[])) AS u(id) "
	"CROSS JOIN LATERAL (SELECT * FROM customers WHERE tenant_id = $1 AND id = u.id LIMIT 1) c "
	"LEFT JOIN customers p ON p.tenant_id = c.tenant_id AND p.id = c.parent_id", 2);

int store_customers_info(const char *tenant_id, const char *ids_array, json_t **ret, struct tg_error *err)
{
	const char *p[] = {tenant_id, ids_array};
	return store_exec(&q_customers_info, p, ret, err);
}

static struct store_stmt q_period_close = STORE_STMT(
	"INSERT INTO period_history (tenant_id, limit_id, subject, period_start, period_end, usage, \"limit\") "
	"VALUES ($1, $2, $3, tg_ms($4::bigint), tg_ms($5::bigint), $6, $7) "
	"ON CONFLICT DO NOTHING RETURNING 1 AS fresh", 7);

int store_period_close(const char *tenant_id, const char *limit_id, const char *subject, int64_t start_ms,
		       int64_t end_ms, tg_fixed usage, tg_fixed limit, bool *written, struct tg_error *err)
{
	char s[STORE_I64_BUFSZ], e[STORE_I64_BUFSZ], u[TG_FIXED_BUFSZ], l[TG_FIXED_BUFSZ];
	const char *p[] = {tenant_id, limit_id, subject, store_i64(start_ms, s), store_i64(end_ms, e),
			   store_fixed(usage, u), store_fixed(limit, l)};
	json_t *row;
	int rc = store_exec1(&q_period_close, p, &row, err);

	*written = rc == 0 && row;
	json_decref(row);
	return rc;
}

static struct store_stmt q_first_usage = STORE_STMT(
	"SELECT (extract(epoch FROM min(hour)) * 1000)::bigint AS ms FROM usage_rollups WHERE tenant_id = $1 "
	"AND ($2::text IS NULL OR meter_id = $2) AND hour >= tg_ms($3::bigint)", 3);

int store_first_usage(const char *tenant_id, const char *meter_id, int64_t from_ms, int64_t *ret_ms,
		      struct tg_error *err)
{
	char f[STORE_I64_BUFSZ];
	const char *p[] = {tenant_id, meter_id, store_i64(from_ms, f)};
	json_t *row;
	int rc = store_exec1(&q_first_usage, p, &row, err);

	if (rc < 0)
		return rc;
	*ret_ms = json_is_null(json_object_get(row, "ms")) ? -1 : store_int(row, "ms", -1);
	json_decref(row);
	return 0;
}

static struct store_stmt q_summary = STORE_STMT(
	"SELECT r.subject, r.meter_id, CASE tg_meter_agg($1, r.meter_id) WHEN 2 THEN max(r.value) "
	"  WHEN 3 THEN (array_agg(r.value ORDER BY r.last_ts DESC))[1] ELSE sum(r.value) END AS value, "
	"  sum(r.events) AS events FROM usage_rollups r "
	"WHERE r.tenant_id = $1 AND r.hour >= tg_ms($2::bigint) AND r.hour < tg_ms($3::bigint) "
	"AND EXISTS (SELECT 1 FROM customers c WHERE c.tenant_id = r.tenant_id AND c.id = r.subject) "
	"GROUP BY r.subject, r.meter_id ORDER BY r.subject, r.meter_id", 3);

int store_usage_summary(const char *tenant_id, int64_t from_ms, int64_t to_ms, json_t **ret, struct tg_error *err)
{
	char f[STORE_I64_BUFSZ], t[STORE_I64_BUFSZ];
	const char *p[] = {tenant_id, store_i64(from_ms, f), store_i64(to_ms, t)};
	return store_exec(&q_summary, p, ret, err);
}

/* usage.c — SQL reading usage: counter rebuilds and time series from rollups, stored events, customer lookups. */
#include <stdlib.h>
#include <string.h>

#include "tollgate/json.h"
#include "tollgate/store.h"
#include "tollgate/util.h"

/*
 * Usage over [F, T) in epoch milliseconds (T NULL: no end) of the tenant $1, rows matching KEYS (a
 * condition on subject, meter_id and dims), aggregated as AG says (0 sum, 1 count, 2 max, 3 latest:
 * policy_agg's order).
 *
 * The whole days inside, [D1, D2), are read from their days and their open hours (what of a sum or count
 * their days do not hold yet: migration 0013 says why these add up); the edges, [F, min(D1, T)) and
 * [D2, T), from their hours. A period is whole days, so its edges are empty. With DAYS false (an SQL
 * condition on parameters) D1 = D2 = F: hours only.
 *
 * Every bound is an index condition (an open end is 'infinity', not an OR) except the open hours' end:
 * with both bounds the planner took the two ranges for equally tiny and read the open hours through the
 * primary key, filtering a month of compacted rollups (0.5 ms a read at the end of a month, scripts/bench
 * events-month-end); the open-rollups index holds a few rows past D2 at most.
 *
 * PERIOD_ROWS_IF's rows are (SEL value, last_ts, src, t, dims). src breaks a tie of latest between a day
 * and its own reopened hour: the hour took an event of the same instant after the day was made (the
 * hourly upsert lets the later-written of equal instants win).
 */
#define PERIOD_D1(DAYS, F) "(CASE WHEN " DAYS " THEN " F " + (86400000 - " F " % 86400000) % 86400000 ELSE " F " END)"
#define PERIOD_D2(DAYS, F, T)                                                                               \
	"(CASE WHEN NOT " DAYS " THEN " F " WHEN " T " IS NULL THEN NULL ELSE greatest(" PERIOD_D1(DAYS, F) ", " T    \
	" - (" T " % 86400000 + 86400000) % 86400000) END)"
/* col < HI: as an index condition (HI NULL: 'infinity'), or as a filter */
#define PERIOD_BELOW(col, HI) col " < COALESCE(tg_ms(" HI "), 'infinity'::timestamptz)"
#define PERIOD_BELOW_FILTER(col, HI) "(" HI " IS NULL OR " col " < tg_ms(" HI "))"
#define PERIOD_FROM(sel, val, src, tab, col, KEYS, LO, BELOW)                                                \
	"SELECT " sel val " AS value, last_ts, " src " AS src, " col " AS t, dims FROM " tab " WHERE tenant_id = $1" \
	" AND " KEYS " AND " col " >= tg_ms(" LO ") AND " BELOW
#define PERIOD_ROWS_IF(DAYS, sel, KEYS, F, T, AG)                                                           \
	PERIOD_FROM(sel, "value", "0", "usage_rollups_daily", "day", KEYS, PERIOD_D1(DAYS, F),                   \
		    PERIOD_BELOW("day", PERIOD_D2(DAYS, F, T)))                                                     \
	" UNION ALL " PERIOD_FROM(sel, "CASE WHEN " AG " >= 2 THEN value ELSE value - in_day END", "1",           \
				  "usage_rollups", "hour", KEYS " AND NOT compacted", PERIOD_D1(DAYS, F),           \
				  PERIOD_BELOW_FILTER("hour", PERIOD_D2(DAYS, F, T)))                               \
	" UNION ALL " PERIOD_FROM(sel, "value", "1", "usage_rollups", "hour", KEYS, F,                           \
				  PERIOD_BELOW("hour", "least(" PERIOD_D1(DAYS, F) ", " T ")"))                     \
	" UNION ALL " PERIOD_FROM(sel, "value", "1", "usage_rollups", "hour", KEYS, PERIOD_D2(DAYS, F, T),       \
				  PERIOD_BELOW("hour", T))
#define PERIOD_ROWS(sel, KEYS, F, T, AG) PERIOD_ROWS_IF("true", sel, KEYS, F, T, AG)
#define PERIOD_AGG(AG)                                                                                      \
	"CASE WHEN " AG " = 2 THEN max(value) "                                                                  \
	"WHEN " AG " = 3 THEN (array_agg(value ORDER BY last_ts DESC, src DESC))[1] ELSE sum(value) END"
#define PERIOD_VALUE(S, M, F, T, FL, AG)                                                                    \
	"(SELECT " PERIOD_AGG(AG) " FROM (" PERIOD_ROWS("", "subject = " S " AND meter_id = " M " AND dims @> " FL, F, \
							 T, AG) ") AS z)"

/* the instant of that latest value (a latest meter's), in epoch ms */
static struct store_stmt q_usage_latest_at = STORE_STMT(
	"SELECT (extract(epoch FROM last_ts) * 1000)::bigint AS at FROM ("
	PERIOD_ROWS("", "subject = $2 AND meter_id = $3 AND dims @> $6::jsonb", "$4::bigint", "$5::bigint", "3")
	") AS z ORDER BY last_ts DESC, src DESC LIMIT 1", 6);

int store_usage_latest_at(const char *tenant_id, const char *subject, const char *meter_id, int64_t from_ms,
			  int64_t to_ms, const char *filter_json, int64_t *ret, struct tg_error *err)
{
	char from[STORE_I64_BUFSZ], to[STORE_I64_BUFSZ];
	const char *p[] = {tenant_id, subject, meter_id, store_i64(from_ms, from),
			   to_ms == INT64_MAX ? NULL : store_i64(to_ms, to), filter_json ? filter_json : "{}"};
	json_t *row;
	int rc;

	*ret = 0;
	if ((rc = store_exec1(&q_usage_latest_at, p, &row, err)) < 0)
		return rc;
	*ret = row ? store_int(row, "at", 0) : 0;
	json_decref(row);
	return 0;
}

static struct store_stmt q_usage_value_real = STORE_STMT(
	"SELECT " PERIOD_VALUE("$2", "$3", "$4::bigint", "$5::bigint", "$6::jsonb", "$7::int") " AS v", 7);

struct store_stmt *store_usage_value_stmt(void)
{
	return &q_usage_value_real;
}

int store_usage_value(const char *tenant_id, const char *subject, const char *meter_id, int64_t from_ms,
		      int64_t to_ms, const char *filter_json, int agg, tg_fixed *ret, struct tg_error *err)
{
	char from[STORE_I64_BUFSZ], to[STORE_I64_BUFSZ], ag[STORE_I64_BUFSZ];
	const char *p[] = {tenant_id, subject, meter_id, store_i64(from_ms, from),
			   to_ms == INT64_MAX ? NULL : store_i64(to_ms, to), filter_json ? filter_json : "{}",
			   store_i64(agg, ag)};
	json_t *row;
	int rc;

	if ((rc = store_exec1(&q_usage_value_real, p, &row, err)) < 0)
		return rc;
	*ret = store_get_usage(row, "v");
	json_decref(row);
	return 0;
}

static struct store_stmt q_values = STORE_STMT(
	"SELECT w.i, " PERIOD_VALUE("w.subject", "w.meter", "w.f", "w.t", "w.filter", "w.agg") " AS value "
	"FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::jsonb[], $7::int[]) "
	"  WITH ORDINALITY AS w(subject, meter, f, t, filter, agg, i)", 7);

int store_usage_values(const char *tenant_id, const char *subjects, const char *meters, const char *froms,
		       const char *tos, const char *filters, const char *aggs, json_t **ret, struct tg_error *err)
{
	const char *p[] = {tenant_id, subjects, meters, froms, tos, filters, aggs};
	return store_exec(&q_values, p, ret, err);
}

/* every subject's usage of a period, for closing it (limit.reset) */
static struct store_stmt q_by_subject = STORE_STMT(
	"SELECT subject, " PERIOD_AGG("$6::int") " AS value FROM ("
	PERIOD_ROWS("subject, ", "meter_id = $2 AND dims @> $5::jsonb", "$3::bigint", "$4::bigint", "$6::int")
	") AS z GROUP BY subject", 6);

struct store_stmt *store_usage_by_subject_stmt(void)
{
	return &q_by_subject;
}

int store_usage_by_subject(const char *tenant_id, const char *meter_id, int64_t from_ms, int64_t to_ms,
			   const char *filter_json, int agg, json_t **ret, struct tg_error *err)
{
	char f[STORE_I64_BUFSZ], t[STORE_I64_BUFSZ], a[STORE_I64_BUFSZ];
	const char *p[] = {tenant_id, meter_id, store_i64(from_ms, f), store_i64(to_ms, t), filter_json,
			   store_i64(agg, a)};
	return store_exec(&q_by_subject, p, ret, err);
}

static struct store_stmt q_compact = STORE_STMT(
	"SELECT taken, compacted, last_t, last_s, last_m, (extract(epoch FROM last_h) * 1000)::bigint AS last_h "
	"FROM tg_compact_rollups_pass(tg_ms($1::bigint), $2::int, $3, $4, $5, tg_ms($6::bigint))", 6);

void store_compact_key_clear(struct store_compact_key *k)
{
	free(k->tenant);
	free(k->subject);
	free(k->meter);
	memset(k, 0, sizeof(*k));
}

int store_rollups_compact(int64_t cutoff_ms, int limit, struct store_compact_key *key, int64_t *taken,
			  int64_t *compacted, struct tg_error *err)
{
	char c[STORE_I64_BUFSZ], l[STORE_I64_BUFSZ], h[STORE_I64_BUFSZ];
	const char *p[] = {store_i64(cutoff_ms, c), store_i64(limit, l), key->tenant, key->subject, key->meter,
			   key->tenant ? store_i64(key->hour_ms, h) : NULL};
	json_t *row;
	int rc = store_exec1(&q_compact, p, &row, err);

	if (rc < 0)
		return rc;
	*taken = store_int(row, "taken", 0);
	*compacted = store_int(row, "compacted", 0);
	if (store_str(row, "last_t")) { /* with last_s and last_m: a key of the open-rollups index */
		char *t = tg_strdup(store_str(row, "last_t")), *s = tg_strdup(store_str(row, "last_s")),
		     *m = tg_strdup(store_str(row, "last_m"));
		store_compact_key_clear(key);
		key->tenant = t;
		key->subject = s;
		key->meter = m;
		key->hour_ms = store_int(row, "last_h", 0);
	}
	json_decref(row);
	return 0;
}

/* buckets of a day or longer read the whole days inside from days and open hours, like a period */
static struct store_stmt q_usage_series = STORE_STMT(
	"SELECT tg_ts(b) AS start, tg_ts(b + ('1 ' || $4)::interval) AS \"end\", " PERIOD_AGG("$8::int") " AS value, "
	"  gdims AS dimensions "
	"FROM (SELECT date_trunc($4, t AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS b, value, last_ts, src, "
	"        (SELECT COALESCE(jsonb_object_agg(key, value), '{}'::jsonb) FROM jsonb_each(dims) "
	"          WHERE key = ANY($7::text[])) AS gdims "
	"      FROM (" PERIOD_ROWS_IF("($4 <> 'hour')", "", "subject = $2 AND meter_id = $3", "$5::bigint", "$6::bigint",
				 "$8::int") ") AS r) AS x "
	"GROUP BY b, gdims ORDER BY b, gdims::text", 8);

int store_usage_series(const char *tenant_id, const char *subject, const char *meter_id, const char *granularity,
		       int64_t from_ms, int64_t to_ms, const char *group_by_array, int agg, json_t **ret,
		       struct tg_error *err)
{
	char from[STORE_I64_BUFSZ], to[STORE_I64_BUFSZ], ag[STORE_I64_BUFSZ];
	const char *p[] = {tenant_id, subject, meter_id, granularity, store_i64(from_ms, from), store_i64(to_ms, to),
			   group_by_array, store_i64(agg, ag)};
	return store_exec(&q_usage_series, p, ret, err);
}

static struct store_stmt q_event_cursor = STORE_STMT(
	"SELECT (extract(epoch FROM ts) * 1000000)::bigint AS us FROM event_ids WHERE tenant_id = $1 AND id = $2", 2);
static struct store_stmt q_events_list = STORE_STMT(
	"SELECT id, customer_id, type, tg_ts(ts) AS timestamp, properties, meter_id, reservation_id, workflow_id, "
	"  tg_ts(received_at) AS received_at "
	"FROM events WHERE tenant_id = $1 AND ($2::text IS NULL OR customer_id = $2) AND ($3::text IS NULL OR type = $3) "
	"  AND ts >= tg_ms($4::bigint) AND ts < tg_ms($5::bigint) "
	"  AND ($6::bigint IS NULL OR (ts, id) < (tg_us($6::bigint), $7)) "
	"ORDER BY ts DESC, id DESC LIMIT $8", 8);

int store_events_list(const char *tenant_id, const char *customer_id, const char *type, int64_t from_ms,
		      int64_t to_ms, const char *starting_after, int64_t limit, json_t **ret, struct tg_error *err)
{
	char from[STORE_I64_BUFSZ], to[STORE_I64_BUFSZ], cur[STORE_I64_BUFSZ], lim[STORE_I64_BUFSZ];
	const char *cursor = NULL;
	int rc;

	if (starting_after) {
		const char *cp[] = {tenant_id, starting_after};
		json_t *row;
		if ((rc = store_exec1(&q_event_cursor, cp, &row, err)) < 0)
			return rc;
		if (!row)
			return tg_fail(err, TG_EINVAL, "invalid_parameter", "starting_after",
				       "'starting_after' names no stored event");
		cursor = store_i64(store_int(row, "us", 0), cur);
		json_decref(row);
	}
	const char *p[] = {tenant_id, customer_id, type, store_i64(from_ms, from), store_i64(to_ms, to), cursor,
			   starting_after, store_i64(limit + 1, lim)};
	return store_exec(&q_events_list, p, ret, err);
}

static struct store_stmt q_customer_resolve = STORE_STMT(
	"WITH ins AS (INSERT INTO customers (tenant_id, id, tier) "
	"  SELECT $1, $2, default_tier FROM tenants WHERE id = $1 AND $3::boolean "
	"  ON CONFLICT DO NOTHING RETURNING id, tier, parent_id) "
	"SELECT c.id, c.tier, c.parent_id, p.tier AS parent_tier, "
	"  EXISTS (SELECT 1 FROM balances b WHERE b.tenant_id = c.tenant_id AND b.customer_id = c.id) AS has_balance, "
	"  EXISTS (SELECT 1 FROM balances b WHERE b.tenant_id = c.tenant_id AND b.customer_id = c.parent_id) "
	"    AS parent_has_balance "
	"FROM customers c LEFT JOIN customers p ON p.tenant_id = c.tenant_id AND p.id = c.parent_id "
	"  WHERE c.tenant_id = $1 AND c.id = $2 "
	"UNION ALL SELECT id, tier, parent_id, NULL, false, false FROM ins", 3);

int store_customer_resolve(const char *tenant_id, const char *id, bool auto_create, json_t **ret,
			   struct tg_error *err)
{
	const char *p[] = {tenant_id, id, store_bool(auto_create)};
	int rc = store_exec1(&q_customer_resolve, p, ret, err);

	/* a concurrent creator won the insert after our snapshot was taken: a fresh statement sees it */
	if (rc == 0 && !*ret && auto_create)
		rc = store_exec1(&q_customer_resolve, p, ret, err);
	return rc;
}

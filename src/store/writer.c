/* writer.c — the event writer: group commit of events, ids and rollups (see store.h for the design). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "tollgate/json.h"
#include "tollgate/log.h"
#include "tollgate/map.h"
#include "tollgate/metrics.h"
#include "tollgate/store.h"

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct store_submission *head, **tail;
	int queued_events;
	int64_t batch_oldest_ms; /* when the oldest submission of the batch being written was queued */
	bool stopping, running;
	pthread_t thread;
	int batch_max;
	struct store_writer_hooks hooks;
	struct tg_map months; /* partitions known to exist */
	struct tg_metric *m_batches, *m_events, *m_failures, *m_duplicates, *m_seen;
} W = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER, .batch_oldest_ms = INT64_MAX};

#define LOST_SETTLE_MS 30000 /* how long a lost COMMIT's backend may still run before its counters go */

static struct store_stmt q_partition = STORE_STMT("SELECT tg_ensure_events_partition(tg_ms($1::bigint))", 1);
/* One primary-key probe per wanted id, whatever the statistics say and whatever the table's size when the
 * plan was made. Written as "c.id = ANY($2)" (or as a join with the array), a tenant whose customers were
 * just created in bulk (no statistics yet) had the planner guess 15 of them, scan all 10,000 and hash them:
 * 3 ms a batch, the writer's largest cost. A LATERAL subquery with LIMIT is never flattened into a join, so
 * it stays a probe per id. But a probe can still be a sequential scan: on a table of a page or two that is
 * the cheapest plan, and the generic plan PostgreSQL caches after five executions was one when the writer's
 * first batches ran on a fresh database; it stayed cached until autovacuum next analysed customers, a minute
 * or more after a tenant created 10,000 customers at once, and meanwhile each batch read the whole table
 * twice per customer (here and for parent_tier): 300 ms to seconds a batch of 100, every request timing out.
 * So it is planned with sequential and bitmap scans off (STORE_STMT_PROBE, ~80,000 instructions of
 * PostgreSQL a batch; planning each batch instead, STORE_STMT_REPLAN, cost ~530,000). test_store checks
 * both: the plan on a never-analysed table, and the scans of a batch after the plan was made on five rows. */
static struct store_stmt q_customers = STORE_STMT_PROBE(
	"SELECT c.id, c.tier, c.parent_id, "
	"(SELECT p.tier FROM customers p WHERE p.tenant_id = c.tenant_id AND p.id = c.parent_id) AS parent_tier "
	"FROM unnest($2::text[]) AS u(id), "
	"LATERAL (SELECT * FROM customers c WHERE c.tenant_id = $1 AND c.id = u.id LIMIT 1) c", 2);

struct store_stmt *store_writer_customers_stmt(void)
{
	return &q_customers;
}

static struct store_stmt q_customers_create = STORE_STMT(
	"INSERT INTO customers (tenant_id, id, tier) SELECT $1, u, (SELECT default_tier FROM tenants WHERE id = $1) "
	"FROM unnest($2::text[]) AS u ON CONFLICT DO NOTHING", 2);
/* which of these ids are taken: a key probe each, planned as q_customers is (never a scan of event_ids) */
static struct store_stmt q_ids_taken = STORE_STMT_PROBE(
	"SELECT e.id FROM unnest($2::text[]) AS u(id), "
	"LATERAL (SELECT id FROM event_ids e WHERE e.tenant_id = $1 AND e.id = u.id LIMIT 1) e", 2);
static struct store_stmt q_ids = STORE_STMT(
	"INSERT INTO event_ids (tenant_id, id, ts) SELECT $1, i, tg_ms(t) "
	"FROM unnest($2::text[], $3::bigint[]) AS u(i, t) ON CONFLICT DO NOTHING RETURNING id", 3);
static struct store_stmt q_events = STORE_STMT(
	"INSERT INTO events (tenant_id, id, customer_id, type, ts, properties, meter_id, reservation_id, workflow_id) "
	"SELECT $1, i, c, ty, tg_ms(t), p, m, r, w "
	"FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::jsonb[], $7::text[], $8::text[], $9::text[]) "
	"AS u(i, c, ty, t, p, m, r, w)", 9);
#define ROLLUP_INSERT                                                                                 \
	"INSERT INTO usage_rollups AS r (tenant_id, subject, meter_id, hour, dims, value, events, last_ts) "     \
	"SELECT $1, s, m, tg_ms(h), d, v, e, tg_ms(l) "                         \
	"FROM unnest($2::text[], $3::text[], $4::bigint[], $5::jsonb[], $6::numeric[], $7::bigint[], $8::bigint[]) " \
	"AS u(s, m, h, d, v, e, l) ON CONFLICT (tenant_id, subject, meter_id, hour, dims) DO UPDATE SET "     \
	"compacted = false, " /* moved after the worker added it into its day: open again (migration 0013) */
static struct store_stmt q_rollup_add = STORE_STMT(ROLLUP_INSERT
	"value = r.value + EXCLUDED.value, events = r.events + EXCLUDED.events, "
	"last_ts = GREATEST(r.last_ts, EXCLUDED.last_ts)", 8);
static struct store_stmt q_rollup_max = STORE_STMT(ROLLUP_INSERT
	"value = GREATEST(r.value, EXCLUDED.value), events = r.events + EXCLUDED.events, "
	"last_ts = GREATEST(r.last_ts, EXCLUDED.last_ts)", 8);
static struct store_stmt q_rollup_latest = STORE_STMT(ROLLUP_INSERT
	"value = CASE WHEN EXCLUDED.last_ts >= r.last_ts THEN EXCLUDED.value ELSE r.value END, "
	"events = r.events + EXCLUDED.events, last_ts = GREATEST(r.last_ts, EXCLUDED.last_ts)", 8);

#define AGG_MAX_ 2
#define AGG_LATEST_ 3
#define HOUR_MS INT64_C(3600000)

struct rollup {
	const char *subject, *meter_id, *dims;
	int64_t hour, last_ts, events;
	tg_fixed value;
	int agg;
};

struct owner_entries {
	struct store_ledger_entry *entries;
	struct store_event **events; /* entries[i] is events[i]'s debit */
	int n, cap, ecap;
};

struct customer_info {
	const char *tier, *parent_id, *parent_tier;
};

static int64_t month_key(int64_t ms)
{
	int64_t y;
	unsigned m, d;
	int64_t days = ms >= 0 ? ms / 86400000 : (ms - 86399999) / 86400000;

	tg_civil_from_days(days, &y, &m, &d);
	return y * 12 + (m - 1);
}

static int ensure_partitions(struct store_submission **subs, int n, struct tg_error *err)
{
	for (int s = 0; s < n; s++) {
		for (int i = 0; i < subs[s]->n; i++) {
			char key[32], buf[STORE_I64_BUFSZ];
			int64_t ms = subs[s]->events[i].ts_ms;
			snprintf(key, sizeof(key), "%lld", (long long)month_key(ms));
			if (tg_map_get(&W.months, key))
				continue;
			const char *p[] = {store_i64(ms, buf)};
			int rc = store_exec(&q_partition, p, NULL, err);
			if (rc < 0)
				return rc;
			tg_map_put(&W.months, key, (void *)1);
		}
	}
	return 0;
}

/* subject, meter, hour and dimensions joined by 0x1f (the unit separator; no printf: three per event) */
static char *rollup_key(struct tg_arena *a, const char *subject, const char *meter, int64_t hour, const char *dims)
{
	char h[TG_I64_BUFSZ];
	size_t ls = strlen(subject), lm = strlen(meter), lh = tg_fmt_i64(hour, h), ld = strlen(dims);
	char *key = tg_arena_alloc(a, ls + lm + lh + ld + 4), *p = key;

	memcpy(p, subject, ls);
	p += ls;
	*p++ = '\x1f';
	memcpy(p, meter, lm);
	p += lm;
	*p++ = '\x1f';
	memcpy(p, h, lh);
	p += lh;
	*p++ = '\x1f';
	memcpy(p, dims, ld + 1);
	return key;
}

static void rollup_add(struct tg_map *agg, struct tg_arena *a, const char *subject, const struct store_event *e,
		       const struct store_contrib *c)
{
	int64_t hour = (e->ts_ms >= 0 ? e->ts_ms / HOUR_MS : (e->ts_ms - HOUR_MS + 1) / HOUR_MS) * HOUR_MS;
	char *key = rollup_key(a, subject, c->meter_id, hour, c->dims_json);
	struct rollup *r = tg_map_get(agg, key);

	if (!r) {
		r = tg_arena_alloc(a, sizeof(*r));
		r->subject = subject;
		r->meter_id = c->meter_id;
		r->dims = c->dims_json;
		r->hour = hour;
		r->agg = c->agg;
		r->value = c->value;
		r->last_ts = e->ts_ms;
		r->events = 1;
		tg_map_put(agg, key, r);
		return;
	}
	r->events++;
	if (c->agg == AGG_MAX_)
		r->value = c->value > r->value ? c->value : r->value;
	else if (c->agg == AGG_LATEST_) {
		if (e->ts_ms >= r->last_ts)
			r->value = c->value;
	} else
		tg_fixed_add(r->value, c->value, &r->value);
	if (e->ts_ms > r->last_ts)
		r->last_ts = e->ts_ms;
}

struct rollup_arrays {
	struct store_array s, m, h, d, v, e, l;
};

static int flush_rollups(const char *tenant, struct tg_map *agg, struct tg_error *err)
{
	struct store_stmt *stmts[3] = {&q_rollup_add, &q_rollup_max, &q_rollup_latest};
	int rc = 0;

	for (int kind = 0; kind < 3 && rc == 0; kind++) {
		struct rollup_arrays ra;
		memset(&ra, 0, sizeof(ra));
		for (size_t i = 0; i < agg->cap; i++) {
			struct tg_map_slot *sl = &agg->slots[i];
			if (!sl->key || !sl->val)
				continue;
			struct rollup *r = sl->val;
			int k = r->agg == AGG_MAX_ ? 1 : r->agg == AGG_LATEST_ ? 2 : 0;
			char b1[STORE_I64_BUFSZ], b2[TG_FIXED_BUFSZ], b3[STORE_I64_BUFSZ], b4[STORE_I64_BUFSZ];
			if (k != kind)
				continue;
			store_array_add(&ra.s, r->subject);
			store_array_add(&ra.m, r->meter_id);
			store_array_add(&ra.h, store_i64(r->hour, b1));
			store_array_add(&ra.d, r->dims);
			store_array_add(&ra.v, store_fixed(r->value, b2));
			store_array_add(&ra.e, store_i64(r->events, b3));
			store_array_add(&ra.l, store_i64(r->last_ts, b4));
		}
		if (ra.s.n > 0) {
			const char *p[] = {tenant, store_array_text(&ra.s), store_array_text(&ra.m), store_array_text(&ra.h),
					   store_array_text(&ra.d), store_array_text(&ra.v), store_array_text(&ra.e),
					   store_array_text(&ra.l)};
			rc = store_defer(stmts[kind], p, err);
		}
		store_array_release(&ra.s);
		store_array_release(&ra.m);
		store_array_release(&ra.h);
		store_array_release(&ra.d);
		store_array_release(&ra.v);
		store_array_release(&ra.e);
		store_array_release(&ra.l);
	}
	return rc;
}

static void put_customers(const json_t *rows, struct tg_map *cust, struct tg_arena *a)
{
	const json_t *row;
	size_t i;

	json_array_foreach(rows, i, row) {
		struct customer_info *ci = tg_arena_alloc(a, sizeof(*ci));
		ci->tier = tg_arena_strdup(a, store_str(row, "tier"));
		ci->parent_id = tg_arena_strdup(a, store_str(row, "parent_id"));
		ci->parent_tier = tg_arena_strdup(a, store_str(row, "parent_tier"));
		tg_map_put(cust, store_str(row, "id"), ci);
	}
}

static int load_customers(const char *tenant, struct store_submission **subs, int n, struct tg_map *cust,
			  struct tg_arena *a, bool create, struct tg_error *err)
{
	struct store_array ids = {0};
	struct tg_map want = TG_MAP_INIT;
	json_t *rows = NULL;
	int rc;

	for (int s = 0; s < n; s++) {
		if (strcmp(subs[s]->tenant_id, tenant) != 0)
			continue;
		for (int k = 0; k < subs[s]->n; k++) {
			const char *c = subs[s]->events[k].customer_id;
			if (subs[s]->events[k].seen)
				continue;
			if (!tg_map_get(cust, c) && !tg_map_get(&want, c)) {
				tg_map_put(&want, c, (void *)1);
				store_array_add(&ids, c);
			}
		}
	}
	if (ids.n == 0) {
		store_array_release(&ids);
		tg_map_release(&want, NULL);
		return 0;
	}
	const char *p[] = {tenant, store_array_text(&ids)};
	if ((rc = store_exec(&q_customers, p, &rows, err)) < 0)
		goto out;
	put_customers(rows, cust, a);
	/* customers made on first sight: only those that are not there yet (a second round trip only
	 * when there are some), then read like the others */
	if (create && (int)json_array_size(rows) < ids.n) {
		struct store_array missing = {0}, their = {0};
		struct tg_map taken = TG_MAP_INIT;
		/* but not for an event that is a duplicate: it changes nothing (its id's first sending made or found
		 * its customer); a concurrent first sending of the id may still make one, which is harmless */
		for (int s = 0; s < n; s++)
			for (int k = 0; strcmp(subs[s]->tenant_id, tenant) == 0 && k < subs[s]->n; k++)
				if (!subs[s]->events[k].seen && !tg_map_get(cust, subs[s]->events[k].customer_id))
					store_array_add(&their, subs[s]->events[k].id);
		json_decref(rows);
		rows = NULL;
		const char *q[] = {tenant, store_array_text(&their)};
		rc = store_exec(&q_ids_taken, q, &rows, err);
		store_array_release(&their);
		if (rc < 0) {
			tg_map_release(&taken, NULL);
			goto out;
		}
		size_t t;
		json_t *row;
		json_array_foreach(rows, t, row)
			tg_map_put(&taken, store_str(row, "id"), (void *)1);
		for (int s = 0; s < n; s++) {
			if (strcmp(subs[s]->tenant_id, tenant) != 0)
				continue;
			for (int k = 0; k < subs[s]->n; k++) {
				const char *c = subs[s]->events[k].customer_id;
				if (subs[s]->events[k].seen || tg_map_get(cust, c))
					continue;
				if (tg_map_get(&taken, subs[s]->events[k].id))
					subs[s]->events[k].taken = true;
				else if (tg_map_del(&want, c))
					store_array_add(&missing, c);
			}
		}
		tg_map_release(&taken, NULL);
		json_decref(rows);
		rows = NULL;
		const char *m[] = {tenant, store_array_text(&missing)};
		if ((rc = store_exec(&q_customers_create, m, NULL, err)) == 0)
			rc = store_exec(&q_customers, m, &rows, err);
		store_array_release(&missing);
		if (rc < 0)
			goto out;
		put_customers(rows, cust, a);
	}
out:
	json_decref(rows);
	store_array_release(&ids);
	tg_map_release(&want, NULL);
	return rc;
}

/* Priced usage is debited from the balance of the customer, or else of its organisation, with a ledger
 * row per event, in the same transaction as the events. Debits for usage are never refused. */
static int debit_balances(const char *tenant, struct store_submission **subs, int n, struct tg_arena *a,
			  struct tg_error *err)
{
	struct store_array ids = {0};
	struct tg_map has = TG_MAP_INIT, owners = TG_MAP_INIT;
	json_t *rows = NULL, *row;
	size_t i;
	int rc = 0;

	for (int s = 0; s < n; s++) {
		if (strcmp(subs[s]->tenant_id, tenant) != 0)
			continue;
		for (int k = 0; k < subs[s]->n; k++) {
			struct store_event *e = &subs[s]->events[k];
			e->cost = 0;
			e->balance_owner = NULL;
			if (e->result != STORE_EV_ACCEPTED)
				continue;
			for (int c = 0; c < e->ncontribs; c++)
				tg_fixed_add(e->cost, e->contribs[c].cost, &e->cost);
			if (e->cost == 0)
				continue;
			store_array_add(&ids, e->customer_id);
			if (e->parent_id)
				store_array_add(&ids, e->parent_id);
		}
	}
	if (ids.n == 0)
		goto out;
	{
		const char *text = store_array_text(&ids);
		if ((rc = store_balances_which(tenant, text, &rows, err)) < 0)
			goto out;
	}
	json_array_foreach(rows, i, row)
		tg_map_put(&has, store_str(row, "customer_id"), (void *)1);
	/* group each owner's entries, in the order of the events */
	for (int s = 0; s < n; s++) {
		if (strcmp(subs[s]->tenant_id, tenant) != 0)
			continue;
		for (int k = 0; k < subs[s]->n; k++) {
			struct store_event *e = &subs[s]->events[k];
			if (e->result != STORE_EV_ACCEPTED || e->cost == 0)
				continue;
			if (e->by_check) /* the wallet its check moved, while it has one */
				e->balance_owner = e->planned_wallet && tg_map_get(&has, e->planned_wallet) ? e->planned_wallet
													  : NULL;
			else
				e->balance_owner = tg_map_get(&has, e->customer_id) ? e->customer_id
						   : e->parent_id && tg_map_get(&has, e->parent_id) ? e->parent_id : NULL;
			if (!e->balance_owner)
				continue;
			struct owner_entries *oe = tg_map_get(&owners, e->balance_owner);
			if (!oe) {
				oe = tg_arena_alloc(a, sizeof(*oe));
				tg_map_put(&owners, e->balance_owner, oe);
			}
			oe->entries = tg_arena_grow(a, oe->entries, oe->n, oe->n + 1, &oe->cap, sizeof(*oe->entries));
			oe->events = tg_arena_grow(a, oe->events, oe->n, oe->n + 1, &oe->ecap, sizeof(*oe->events));
			oe->events[oe->n] = e;
			struct store_ledger_entry *le = &oe->entries[oe->n++];
			char id[TG_SID_BUFSZ];
			tg_sid_new("txn_", id);
			le->id = tg_arena_strdup(a, id);
			le->amount = -e->cost;
			le->kind = "usage";
			le->event_id = e->id;
			le->reservation_id = e->reservation_id;
		}
	}
	for (size_t k = 0; k < owners.cap && rc == 0; k++) {
		struct tg_map_slot *sl = &owners.slots[k];
		if (!sl->key || !sl->val)
			continue;
		struct owner_entries *oe = sl->val;
		rc = store_ledger_append(tenant, sl->key, oe->entries, oe->n, NULL, err);
		/* a debit stopped at the floor of quantities: the live wallet moves by what the ledger took */
		for (int x = 0; rc == 0 && x < oe->n; x++)
			oe->events[x]->cost = -oe->entries[x].amount;
	}
out:
	json_decref(rows);
	store_array_release(&ids);
	tg_map_release(&has, NULL);
	tg_map_release(&owners, NULL);
	return rc;
}

/* limit.threshold for each threshold the new usage reached, limit.exceeded once usage is over the limit:
 * each at most once per limit, subject and period (webhook_once). */
static int fire_watches(const char *tenant, struct store_submission **subs, int n, struct tg_arena *a,
			struct tg_error *err)
{
	struct tg_map seen = TG_MAP_INIT;
	struct store_array sj = {0}, mt = {0}, fr = {0}, to = {0}, fl = {0}, ag = {0};
	const struct store_watch **list = NULL;
	int count = 0, cap = 0, rc = 0;
	json_t *rows = NULL, *row;
	size_t i;

	for (int s = 0; s < n; s++) {
		if (strcmp(subs[s]->tenant_id, tenant) != 0)
			continue;
		for (int w = 0; w < subs[s]->nwatches; w++) {
			const struct store_watch *x = &subs[s]->watches[w];
			char *key = tg_arena_printf(a, "%s|%s|%lld", x->limit_id, x->subject, (long long)x->from_ms);
			char b1[STORE_I64_BUFSZ], b2[STORE_I64_BUFSZ], b3[STORE_I64_BUFSZ];
			if (tg_map_get(&seen, key))
				continue;
			tg_map_put(&seen, key, (void *)1);
			list = tg_arena_grow(a, list, count, count + 1, &cap, sizeof(*list));
			list[count++] = x;
			store_array_add(&sj, x->subject);
			store_array_add(&mt, x->meter_id);
			store_array_add(&fr, store_i64(x->from_ms, b1));
			store_array_add(&to, x->to_ms == INT64_MAX ? NULL : store_i64(x->to_ms, b2));
			store_array_add(&fl, x->filter_json);
			store_array_add(&ag, store_i64(x->agg, b3));
		}
	}
	if (count == 0)
		goto out;
	if ((rc = store_usage_values(tenant, store_array_text(&sj), store_array_text(&mt), store_array_text(&fr),
				     store_array_text(&to), store_array_text(&fl), store_array_text(&ag), &rows, err)) < 0)
		goto out;
	json_array_foreach(rows, i, row) {
		int64_t k = store_int(row, "i", 0) - 1;
		if (k < 0 || k >= count)
			continue;
		const struct store_watch *x = list[k];
		tg_fixed used = store_get_usage(row, "value");
		char key[600];
		for (int t = 0; t < x->nthresholds && rc == 0; t++) {
			tg_fixed need;
			/* reached when used ≥ limit × threshold (exact: both are fixed point) */
			if (tg_fixed_mul(x->limit, x->thresholds[t], &need) < 0 || used < need || x->limit == 0)
				continue;
			json_t *data = store_quota_notice(x->limit_id, x->subject, used, x->limit, x->enforcement, x->from_ms,
							  x->to_ms, &x->thresholds[t], key, sizeof(key));
			rc = store_outbox_add(tenant, "limit.threshold", data, key, NULL, err);
			json_decref(data);
		}
		if (rc == 0 && used > x->limit) {
			json_t *data = store_quota_notice(x->limit_id, x->subject, used, x->limit, x->enforcement, x->from_ms,
							  x->to_ms, NULL, key, sizeof(key));
			rc = store_outbox_add(tenant, "limit.exceeded", data, key, NULL, err);
			json_decref(data);
		}
		if (rc < 0)
			break;
	}
out:
	json_decref(rows);
	tg_map_release(&seen, NULL);
	store_array_release(&sj);
	store_array_release(&mt);
	store_array_release(&fr);
	store_array_release(&to);
	store_array_release(&fl);
	store_array_release(&ag);
	return rc;
}

/* Notices (throttles, terminated workflows) ride in the batch: each at most once per key. */
static int write_notices(const char *tenant, struct store_submission **subs, int n, struct tg_error *err)
{
	int rc = 0;

	for (int s = 0; s < n && rc == 0; s++) {
		if (strcmp(subs[s]->tenant_id, tenant) != 0)
			continue;
		for (int k = 0; k < subs[s]->nnotices && rc == 0; k++) {
			struct store_notice *x = &subs[s]->notices[k];
			struct tg_error perr;
			json_t *data = tg_json_parse(x->data_json, strlen(x->data_json), false, &perr);
			bool fresh = true;
			if (!data)
				continue;
			rc = store_outbox_add(tenant, x->type, data, x->once_key, &fresh, err);
			if (rc == 0 && fresh && x->audit_action) {
				/* the same once-key rations the audit entries of repeated denials */
				struct store_audit a = {.actor = x->actor ? x->actor : "system", .action = x->audit_action,
							.resource_type = x->resource_type, .resource_id = x->resource_id,
							.after = data};
				rc = store_audit_add(tenant, &a, err);
			}
			json_decref(data);
		}
	}
	return rc;
}

/* Everything of one tenant in this batch. */
/* Accepted events that name an active reservation settle it: it is deleted with the batch and its holds
 * are handed to the after-commit hook (e->settled) to let go in Redis. Per submission, in its arena. */
static int settle_reservations(const char *tenant, struct store_submission **subs, int n, struct tg_error *err)
{
	for (int s = 0; s < n; s++) {
		struct store_submission *sub = subs[s];
		const char **ids, **customers;
		struct store_reservation *got;
		int nids = 0, ngot, rc;

		if (strcmp(sub->tenant_id, tenant) != 0)
			continue;
		for (int k = 0; k < sub->n; k++)
			nids += sub->events[k].result == STORE_EV_ACCEPTED && sub->events[k].reservation_id;
		if (nids == 0)
			continue;
		ids = tg_arena_alloc(sub->arena, sizeof(*ids) * (size_t)nids);
		customers = tg_arena_alloc(sub->arena, sizeof(*customers) * (size_t)nids);
		nids = 0;
		for (int k = 0; k < sub->n; k++)
			if (sub->events[k].result == STORE_EV_ACCEPTED && sub->events[k].reservation_id) {
				customers[nids] = sub->events[k].customer_id;
				ids[nids++] = sub->events[k].reservation_id;
			}
		/* an event settles only its own customer's reservation: one naming another's is usage, no more */
		if ((rc = store_reservations_take(tenant, ids, customers, nids, &got, &ngot, sub->arena, err)) < 0)
			return rc;
		/* the first event naming a reservation (of its customer) settles it */
		for (int g = 0; g < ngot; g++)
			for (int k = 0; k < sub->n; k++) {
				struct store_event *e = &sub->events[k];
				if (e->result == STORE_EV_ACCEPTED && e->reservation_id && !e->settled &&
				    strcmp(e->reservation_id, got[g].id) == 0 &&
				    strcmp(e->customer_id, got[g].customer_id) == 0) {
					e->settled = &got[g];
					break;
				}
			}
	}
	return 0;
}

static int write_tenant(const char *tenant, struct store_submission **subs, int n, struct tg_arena *a,
			struct tg_error *err)
{
	struct tg_map cust = TG_MAP_INIT, fresh = TG_MAP_INIT, agg = TG_MAP_INIT;
	struct store_array ids = {0}, ts = {0};
	struct store_array ei = {0}, ec = {0}, et = {0}, ets = {0}, ep = {0}, em = {0}, er = {0}, ew = {0};
	json_t *rows = NULL, *row;
	bool create = false;
	size_t i;
	int rc;

	for (int s = 0; s < n; s++)
		if (strcmp(subs[s]->tenant_id, tenant) == 0)
			create |= subs[s]->auto_create;
	if ((rc = load_customers(tenant, subs, n, &cust, a, create, err)) < 0)
		goto out;
	/* reserving checks: their holds are durable once this commits */
	for (int s = 0; s < n; s++)
		if (subs[s]->reservation && strcmp(subs[s]->tenant_id, tenant) == 0 &&
		    (rc = store_reservation_insert(tenant, subs[s]->reservation, err)) < 0)
			goto out;

	/* claim the ids of events whose customer exists */
	for (int s = 0; s < n; s++) {
		if (strcmp(subs[s]->tenant_id, tenant) != 0)
			continue;
		for (int k = 0; k < subs[s]->n; k++) {
			struct store_event *e = &subs[s]->events[k];
			struct customer_info *ci = tg_map_get(&cust, e->customer_id);
			char buf[STORE_I64_BUFSZ];
			if (e->seen || e->taken) {
				e->result = STORE_EV_DUPLICATE;
				continue;
			}
			if (!ci) {
				e->result = STORE_EV_REJECTED;
				e->reject_code = "customer_not_found";
				continue;
			}
			e->tier = ci->tier;
			e->parent_id = e->by_check ? e->planned_parent : ci->parent_id;
			e->parent_tier = e->by_check ? e->planned_parent_tier : ci->parent_tier;
			store_array_add(&ids, e->id);
			store_array_add(&ts, store_i64(e->ts_ms, buf));
		}
	}
	if (ids.n == 0) {
		rc = write_notices(tenant, subs, n, err);
		goto out;
	}
	{
		const char *p[] = {tenant, store_array_text(&ids), store_array_text(&ts)};
		if ((rc = store_exec(&q_ids, p, &rows, err)) < 0)
			goto out;
	}
	json_array_foreach(rows, i, row)
		tg_map_put(&fresh, store_str(row, "id"), (void *)1);

	for (int s = 0; s < n; s++) {
		if (strcmp(subs[s]->tenant_id, tenant) != 0)
			continue;
		for (int k = 0; k < subs[s]->n; k++) {
			struct store_event *e = &subs[s]->events[k];
			char buf[STORE_I64_BUFSZ];
			if (e->result == STORE_EV_REJECTED || e->seen)
				continue;
			/* the first occurrence of a fresh id wins; every other one is a duplicate */
			if (!tg_map_del(&fresh, e->id)) {
				e->result = STORE_EV_DUPLICATE;
				continue;
			}
			e->result = STORE_EV_ACCEPTED;
			store_array_add(&ei, e->id);
			store_array_add(&ec, e->customer_id);
			store_array_add(&et, e->type);
			store_array_add(&ets, store_i64(e->ts_ms, buf));
			store_array_add(&ep, e->properties_json ? e->properties_json : "{}");
			store_array_add(&em, e->meter_id);
			store_array_add(&er, e->reservation_id);
			store_array_add(&ew, e->workflow_id);
			for (int c = 0; c < e->ncontribs; c++) {
				rollup_add(&agg, a, e->customer_id, e, &e->contribs[c]);
				if (e->parent_id)
					rollup_add(&agg, a, e->parent_id, e, &e->contribs[c]);
				rollup_add(&agg, a, "*", e, &e->contribs[c]);
			}
		}
	}
	if (ei.n > 0) {
		const char *p[] = {tenant, store_array_text(&ei), store_array_text(&ec), store_array_text(&et),
				   store_array_text(&ets), store_array_text(&ep), store_array_text(&em),
				   store_array_text(&er), store_array_text(&ew)};
		/* the events and their rollups ride with the next statement (often the COMMIT) */
		if ((rc = store_defer(&q_events, p, err)) < 0)
			goto out;
		if ((rc = flush_rollups(tenant, &agg, err)) < 0)
			goto out;
		if ((rc = debit_balances(tenant, subs, n, a, err)) < 0)
			goto out;
		if ((rc = settle_reservations(tenant, subs, n, err)) < 0)
			goto out;
		for (int s = 0; s < n && W.hooks.watch; s++)
			if (strcmp(subs[s]->tenant_id, tenant) == 0)
				W.hooks.watch(subs[s]);
		rc = fire_watches(tenant, subs, n, a, err);
	}
	if (rc == 0)
		rc = write_notices(tenant, subs, n, err);
out:
	json_decref(rows);
	tg_map_release(&cust, NULL);
	tg_map_release(&fresh, NULL);
	tg_map_release(&agg, NULL);
	store_array_release(&ids);
	store_array_release(&ts);
	store_array_release(&ei);
	store_array_release(&ec);
	store_array_release(&et);
	store_array_release(&ets);
	store_array_release(&ep);
	store_array_release(&em);
	store_array_release(&er);
	store_array_release(&ew);
	return rc;
}

static void reset_results(struct store_submission **subs, int n)
{
	for (int s = 0; s < n; s++)
		for (int k = 0; k < subs[s]->n; k++) {
			subs[s]->events[k].result = STORE_EV_PENDING;
			subs[s]->events[k].settled = NULL;
		}
}

/* One transaction for these submissions. */
static int write_batch(struct store_submission **subs, int n, bool *lost, int *lost_pid, struct tg_error *err)
{
	struct tg_arena a;
	int rc;

	tg_arena_init(&a);
	reset_results(subs, n);
	if ((rc = ensure_partitions(subs, n, err)) < 0)
		goto out;
	if ((rc = store_begin(err)) < 0)
		goto out;
	for (int s = 0; s < n && rc == 0; s++) {
		bool seen = false;
		for (int t = 0; t < s; t++)
			if (strcmp(subs[t]->tenant_id, subs[s]->tenant_id) == 0)
				seen = true;
		if (!seen)
			rc = write_tenant(subs[s]->tenant_id, subs, n, &a, err);
	}
	if (rc == 0 && W.hooks.before_commit)
		W.hooks.before_commit(subs, n);
	/* a COMMIT sent and left unanswered (the connection lost) may have committed */
	if (rc == 0) {
		*lost_pid = store_backend_pid();
		if ((rc = store_commit(err)) < 0)
			*lost = store_connection_lost(err);
	}
	if (rc < 0)
		store_rollback();
out:
	/* the customer strings were copied into each submission's own arena below (a lost COMMIT's too: the
	 * lost hook reads the balance owners) */
	if (rc == 0 || *lost) {
		for (int s = 0; s < n; s++)
			for (int k = 0; k < subs[s]->n; k++) {
				struct store_event *e = &subs[s]->events[k];
				e->tier = tg_arena_strdup(subs[s]->arena, e->tier);
				e->parent_id = tg_arena_strdup(subs[s]->arena, e->parent_id);
				e->parent_tier = tg_arena_strdup(subs[s]->arena, e->parent_tier);
				e->balance_owner = tg_arena_strdup(subs[s]->arena, e->balance_owner);
			}
	}
	tg_arena_release(&a);
	return rc;
}

static void finish(struct store_submission **subs, int n)
{
	int64_t accepted = 0, dup = 0, seen = 0;

	for (int s = 0; s < n; s++)
		for (int k = 0; k < subs[s]->n; k++) {
			accepted += subs[s]->events[k].result == STORE_EV_ACCEPTED;
			dup += subs[s]->events[k].result == STORE_EV_DUPLICATE;
			seen += subs[s]->events[k].seen;
		}
	tg_metric_add(W.m_events, accepted);
	tg_metric_add(W.m_duplicates, dup);
	tg_metric_add(W.m_seen, seen);
	if (W.hooks.after_commit)
		W.hooks.after_commit(subs, n);
	for (int s = 0; s < n; s++)
		subs[s]->done(subs[s]);
}

static void process(struct store_submission **subs, int n)
{
	struct tg_error err;
	bool lost = false;
	int lost_pid = 0;
	int rc = write_batch(subs, n, &lost, &lost_pid, &err);

	tg_metric_add(W.m_batches, 1);
	if (rc == 0) {
		for (int s = 0; s < n; s++) {
			subs[s]->rc = 0;
			subs[s]->lost = false;
		}
		finish(subs, n);
		return;
	}
	tg_metric_add(W.m_failures, 1);
	if (n > 1 && err.err != TG_EUNAVAIL) {
		/* bad data somewhere: isolate it */
		log_warn("event batch failed; retrying per request", "%s", err.detail);
		for (int s = 0; s < n; s++)
			process(&subs[s], 1);
		return;
	}
	log_warn(lost ? "event batch COMMIT lost, its outcome unknown" : "event batch failed", "%s %s", err.message,
		 err.detail);
	for (int s = 0; s < n; s++) {
		subs[s]->rc = err.err;
		subs[s]->err = err;
		subs[s]->lost = lost;
	}
	if (lost && W.hooks.lost) {
		/* rebuilt only once its outcome is settled: if the network broke while its backend was still
		 * committing, a rebuild before then would miss the batch for good */
		store_wait_settled(lost_pid, LOST_SETTLE_MS);
		W.hooks.lost(subs, n);
	}
	for (int s = 0; s < n; s++) {
		reset_results(&subs[s], 1);
		subs[s]->done(subs[s]);
	}
}

static void *writer_main(void *arg)
{
	struct store_submission **batch = NULL;
	int cap = 0;

	(void)arg;
	pthread_setname_np(pthread_self(), "event-writer");
	for (;;) {
		int n = 0, events = 0;
		pthread_mutex_lock(&W.lock);
		while (!W.head && !W.stopping)
			pthread_cond_wait(&W.cond, &W.lock);
		if (!W.head && W.stopping) {
			pthread_mutex_unlock(&W.lock);
			break;
		}
		if (W.head->run) {
			struct store_submission *call = W.head;
			W.head = call->next;
			if (!W.head)
				W.tail = &W.head;
			pthread_mutex_unlock(&W.lock);
			call->run(call->run_arg);
			call->done(call);
			continue;
		}
		while (W.head && !W.head->run && (n == 0 || events + W.head->n <= W.batch_max)) {
			struct store_submission *s = W.head;
			if (n == 0)
				W.batch_oldest_ms = s->queued_ms;
			W.head = s->next;
			if (n == cap) {
				cap = cap ? cap * 2 : 64;
				batch = tg_realloc(batch, sizeof(*batch) * (size_t)cap);
			}
			batch[n++] = s;
			events += s->n;
			W.queued_events -= s->n;
		}
		if (!W.head)
			W.tail = &W.head;
		pthread_mutex_unlock(&W.lock);
		if (W.hooks.seen)
			W.hooks.seen(batch, n);
		process(batch, n);
		pthread_mutex_lock(&W.lock);
		W.batch_oldest_ms = INT64_MAX;
		pthread_mutex_unlock(&W.lock);
	}
	free(batch);
	store_thread_end();
	return NULL;
}

int store_writer_start(int batch_max, const struct store_writer_hooks *hooks)
{
	W.batch_max = batch_max;
	W.hooks = *hooks;
	W.tail = &W.head;
	W.stopping = false;
	W.m_batches = tg_counter("tollgate_event_writer_batches_total", "Transactions committed (or tried) by the event writer.", "");
	W.m_events = tg_counter("tollgate_events_accepted_total", "Events committed to PostgreSQL.", "");
	W.m_duplicates = tg_counter("tollgate_events_duplicate_total", "Events whose id was seen before.", "");
	W.m_seen = tg_counter("tollgate_events_duplicate_cached_total",
			      "Duplicate events known from the seen-ids cache in Redis, without a statement.", "");
	W.m_failures = tg_counter("tollgate_event_writer_failures_total", "Event writer transactions that failed.", "");
	if (pthread_create(&W.thread, NULL, writer_main, NULL) != 0)
		return -1;
	W.running = true;
	return 0;
}

int64_t store_writer_oldest_ms(void)
{
	int64_t oldest;

	pthread_mutex_lock(&W.lock);
	oldest = W.batch_oldest_ms;
	/* the queue is in order: its head waited longest (a call queued meanwhile moves no counter) */
	for (const struct store_submission *s = W.head; s; s = s->next)
		if (!s->run) {
			if (s->queued_ms < oldest)
				oldest = s->queued_ms;
			break;
		}
	pthread_mutex_unlock(&W.lock);
	return oldest;
}

void store_writer_submit(struct store_submission *s)
{
	s->next = NULL;
	s->rc = 0;
	s->queued_ms = tg_now_ms();
	pthread_mutex_lock(&W.lock);
	*W.tail = s;
	W.tail = &s->next;
	W.queued_events += s->n;
	pthread_cond_signal(&W.cond);
	pthread_mutex_unlock(&W.lock);
}

struct call {
	struct store_submission sub;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
};

static void call_done(struct store_submission *sub)
{
	struct call *c = (struct call *)sub;

	pthread_mutex_lock(&c->lock);
	c->done = true;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

void store_writer_run(void (*fn)(void *arg), void *arg)
{
	struct call c;

	memset(&c, 0, sizeof(c));
	if (!W.running) {
		fn(arg); /* no writer (tools, tests): nothing to interleave with */
		return;
	}
	pthread_mutex_init(&c.lock, NULL);
	pthread_cond_init(&c.cond, NULL);
	c.sub.run = fn;
	c.sub.run_arg = arg;
	c.sub.done = call_done;
	store_writer_submit(&c.sub);
	pthread_mutex_lock(&c.lock);
	while (!c.done)
		pthread_cond_wait(&c.cond, &c.lock);
	pthread_mutex_unlock(&c.lock);
	pthread_mutex_destroy(&c.lock);
	pthread_cond_destroy(&c.cond);
}

void store_writer_stop(void)
{
	if (!W.running)
		return;
	pthread_mutex_lock(&W.lock);
	W.stopping = true;
	pthread_cond_broadcast(&W.cond);
	pthread_mutex_unlock(&W.lock);
	pthread_join(W.thread, NULL);
	W.running = false;
	tg_map_release(&W.months, NULL);
}

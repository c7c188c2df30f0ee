/* store.h — PostgreSQL: per-thread connections, prepared statements, migrations, and every query. */
#ifndef TOLLGATE_STORE_H
#define TOLLGATE_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "tollgate/error.h"
#include "tollgate/fixed.h"
#include "tollgate/util.h"

/*
 * DESIGN: one PGconn per thread at a time, opened lazily in thread-local
 * storage by the first query on that thread (worker-pool threads, the event
 * writer, the worker duties). A connection that fails is closed and reopened
 * on the next use; its prepared statements are forgotten with it. Every SQL
 * statement is a `struct store_stmt` in store/, prepared once per connection
 * under its own name and always run with parameters: never string-built SQL.
 * Results come back as jansson objects keyed by column name (numeric columns as
 * exact number values, jsonb parsed, timestamps formatted by SQL), so api/
 * never sees libpq.
 */

struct store_stmt {
	const char *sql;
	int nparams;
	int id; /* assigned on first use */
	bool replan;
	bool probe;
};
#define STORE_STMT(text, n) {.sql = (text), .nparams = (n), .id = 0}
/* A statement planned at each execution instead of prepared once: for queries on tables that go from
 * empty to large quickly (the webhook delivery queue). A prepared statement's plan made while such a
 * table was a page or two is a sequential scan, and it stays cached until autovacuum next analyzes
 * the table (up to a minute later), by which time each execution reads thousands of rows. */
#define STORE_STMT_REPLAN(text, n) {.sql = (text), .nparams = (n), .id = 0, .replan = true}
/* A prepared statement that PostgreSQL always plans with sequential and bitmap heap scans off: for index
 * probes (by primary key) into a table that can grow from a page to thousands of rows at once, such as a
 * tenant's customers created in bulk. The same trap as above, without planning at each execution (which
 * costs the event writer's customers lookup ~530,000 instructions of PostgreSQL a batch): the settings
 * are transaction-local, set by a statement riding in the same pipeline before it and put back by one
 * after it (~80,000 instructions for the pair), so every plan PostgreSQL makes of it, custom or generic,
 * first or after an invalidation, is made with them off, and nothing else sees them. */
#define STORE_STMT_PROBE(text, n) {.sql = (text), .nparams = (n), .id = 0, .probe = true}

/* Set the connection string used by every thread (before any query). */
void store_init(const char *url);
/* Close this thread's connection (thread exit). */
void store_thread_end(void);
/* True when this thread's connection is (or can be) established. */
bool store_ping(struct tg_error *err);

/*
 * Run st with params (NULL means SQL NULL). On success returns 0 and, if rows
 * is non-NULL, sets *rows to a new reference: a JSON array of row objects.
 * Errors: 23505 (unique) → TG_ECONFLICT, 23503 (foreign key) → TG_ECONFLICT
 * with code "in_use" or "not_found", 40001/40P01 → TG_EUNAVAIL (retry),
 * lost connection → TG_EUNAVAIL, anything else → TG_EINTERNAL with detail.
 */
int store_exec(struct store_stmt *st, const char *const *params, json_t **rows, struct tg_error *err);
/* Same, returning only the first row (new reference) or NULL in *row when none. */
int store_exec1(struct store_stmt *st, const char *const *params, json_t **row, struct tg_error *err);
/* Number of rows the last command on this thread affected. */
int64_t store_affected(void);
/* After an UPDATE ... RETURNING that writes a row only when a value changes (see Updates below): *changed
 * is whether it returned the row in *ret; when it did not, *ret = get(tenant_id, id), the row as it is, or
 * NULL when there is none. */
typedef int (*store_get_fn)(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err);
int store_updated(store_get_fn get, const char *tenant_id, const char *id, json_t **ret, bool *changed,
		  struct tg_error *err);

/* Transactions nest (only the outermost reaches PostgreSQL; an inner rollback dooms the outer one). */
int store_begin(struct tg_error *err);
int store_commit(struct tg_error *err);
void store_rollback(void);
bool store_in_transaction(void);
/* Run raw SQL with no parameters (migrations, LISTEN). */
int store_exec_raw(const char *sql, struct tg_error *err);
/* Inside a transaction: run st (no rows wanted) together with the next statement or the COMMIT, in one
 * round trip (libpq pipeline mode). Its error, if any, is reported by that next call, which then has
 * not run; the transaction must be rolled back as after any error. Outside a transaction: store_exec. */
int store_defer(struct store_stmt *st, const char *const *params, struct tg_error *err);
/* The SQLSTATE of the last error on this thread ("" if none). */
const char *store_last_sqlstate(void);
/* Whether err is a lost connection ("database_unavailable"): after a COMMIT, its outcome is unknown (it may
 * have committed), unlike a COMMIT PostgreSQL refused. */
bool store_connection_lost(const struct tg_error *err);
/* The PostgreSQL backend of this thread's connection (its pid), 0 when there is none. */
int store_backend_pid(void);
/* After a COMMIT whose answer was lost: wait (at most max_ms) until that backend, seen from a new
 * connection, is no longer running a statement (gone, or idle: the COMMIT's outcome is settled and
 * visible to others), so that what is rebuilt from PostgreSQL afterwards includes it if it committed.
 * The network to PostgreSQL may break while its backend is still committing. */
void store_wait_settled(int pid, int max_ms);

/* migrations/NNNN_name.sql, compiled into the binary (generated migrations.c), in order. */
extern const struct tg_embedded store_migrations[];
extern const size_t store_migrations_count;
/* Apply the migrations not yet recorded in schema_migrations, under an advisory lock,
 * each in its own transaction: instances starting together apply each exactly once. */
int store_migrate(struct tg_error *err);
/* A session-level advisory lock, held until store_unlock_session. Meanwhile this thread stays on its
 * connection: if that is lost, every statement fails (503) instead of going on, without the lock, on a
 * fresh one (which another instance could then take the lock beside). */
int store_lock_session(int64_t key, struct tg_error *err);
void store_unlock_session(int64_t key);

/* LISTEN/NOTIFY on a dedicated connection (owned by the caller's thread). */
struct store_listener;
struct store_listener *store_listen(const char *const *channels, struct tg_error *err);
/* Wait up to timeout_ms for notifications; calls fn(channel, payload) for each.
 * Returns 0, or <0 when the connection broke (free and listen again). */
int store_listen_wait(struct store_listener *l, int timeout_ms, void (*fn)(void *arg, const char *channel,
									   const char *payload), void *arg);
void store_listener_free(struct store_listener *l);

/* Small helpers for building parameters. */
#define STORE_I64_BUFSZ 24
const char *store_i64(int64_t v, char *buf);
const char *store_fixed(tg_fixed v, char *buf); /* buf ≥ TG_FIXED_BUFSZ */
const char *store_bool(bool v);

/* Reading rows. */
const char *store_str(const json_t *row, const char *col);       /* NULL when NULL/absent */
int64_t store_int(const json_t *row, const char *col, int64_t def);
bool store_is_true(const json_t *row, const char *col);
tg_fixed store_get_fixed(const json_t *row, const char *col, tg_fixed def);
/* A sum of usage (NULL: 0). Past the largest quantity (9e12) it reads as the largest: sums of many events
 * may go that far, and then exceed every limit (which store_get_fixed would read as its default). */
tg_fixed store_get_usage(const json_t *row, const char *col);

/* ---- resources (rows are JSON objects shaped like the API's) ---- */

/* Tenants and keys (store/tenants.c). */
int store_tenant_create(const char *id, const char *name, bool test_mode, const char *key_id, const char *prefix,
			const char *secret_hash, json_t **ret, struct tg_error *err);
int store_tenant_get(const char *id, json_t **ret, struct tg_error *err);
int store_tenants_list(const char *starting_after, int64_t limit, json_t **ret, struct tg_error *err);
/*
 * Updates (store_*_update, store_balance_settings) write a row only when a value changes: one that would
 * stay as it is keeps its updated_at, and *changed says false (a PATCH of {} or of the current values
 * changes nothing). *ret is the row either way, or NULL when there is none.
 */
/* default_tier: set when set_tier (NULL clears); auto_create: when set_auto. */
int store_tenant_update(const char *id, bool set_tier, const char *default_tier, bool set_auto, bool auto_create,
			json_t **ret, bool *changed, struct tg_error *err);
/* Moves a test-mode tenant's clock ms forward unless its offset would pass max_offset_ms; *ret NULL when
 * nothing moved (a live tenant, or the limit). */
int store_tenant_advance_clock(const char *id, int64_t ms, int64_t max_offset_ms, json_t **ret,
			       struct tg_error *err);
int store_key_create(const char *tenant_id, const char *id, const char *name, const char *prefix,
		     const char *secret_hash, const char *scopes_literal, json_t **ret, struct tg_error *err);
int store_keys_list(const char *tenant_id, const char *starting_after, int64_t limit, json_t **ret,
		    struct tg_error *err);
int store_key_revoke(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err);
/* One key as listed (no secret), or NULL. */
int store_key_get(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err);
/* The active key with this SHA-256, or NULL (row as store_keys_load). */
int store_key_by_hash(const char *hash, json_t **ret, struct tg_error *err);
/* Active keys for the auth cache: one tenant, or all when tenant_id is NULL. */
int store_keys_load(const char *tenant_id, json_t **ret, struct tg_error *err);

/* Idempotency keys (store/tenants.c). claim: 1 = ours to run, 0 = *ret is the stored row. */
int store_idem_claim(const char *tenant_id, const char *key, const char *hash, int *claimed, json_t **ret,
		     struct tg_error *err);
/* headers: "Name: value" lines to replay with the body, or NULL */
int store_idem_finish(const char *tenant_id, const char *key, int status, const char *content_type,
		      const char *body, const char *headers, struct tg_error *err);
int store_idem_forget(const char *tenant_id, const char *key, struct tg_error *err);
int store_idem_sweep(int64_t *deleted, struct tg_error *err);

/* Tiers and customers (store/customers.c). */
int store_tier_create(const char *tenant_id, const char *id, const char *name, json_t **ret, struct tg_error *err);
int store_tier_get(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err);
int store_tiers_list(const char *tenant_id, const char *starting_after, int64_t limit, json_t **ret,
		     struct tg_error *err);
int store_tier_update(const char *tenant_id, const char *id, bool set_name, const char *name, json_t **ret,
		      bool *changed, struct tg_error *err);
int store_tier_delete(const char *tenant_id, const char *id, bool *deleted, struct tg_error *err);

struct store_customer_fields {
	const char *id, *name, *email, *tier, *parent_id;
	const json_t *metadata;
	bool set_name, set_email, set_tier, set_parent, set_metadata;
};
int store_customer_create(const char *tenant_id, const struct store_customer_fields *f, json_t **ret,
			  struct tg_error *err);
int store_customer_get(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err);
int store_customers_list(const char *tenant_id, const char *tier, const char *parent_id, const char *starting_after,
			 int64_t limit, json_t **ret, struct tg_error *err);
int store_customer_update(const char *tenant_id, const struct store_customer_fields *f, json_t **ret,
			  bool *changed, struct tg_error *err);
int store_customer_delete(const char *tenant_id, const char *id, bool *deleted, struct tg_error *err);

/* ---- configuration (store/config.c) ---- */

/* {tenant:{...}, meters:[spec...], limits:[spec...]} for policy_compile, or *ret = NULL when no such tenant. */
int store_config_load(const char *tenant_id, json_t **ret, struct tg_error *err);
int store_tenant_ids(json_t **ret, struct tg_error *err); /* [{"id"}...] */
/* Every tenant's configuration in one query: [{"id", "config"}...]. */
int store_config_load_all(json_t **ret, struct tg_error *err);

int store_meter_create(const char *tenant_id, const char *id, const json_t *spec, json_t **ret,
		       struct tg_error *err);
int store_meter_get(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err);
int store_meters_list(const char *tenant_id, const char *starting_after, int64_t limit, json_t **ret,
		      struct tg_error *err);
int store_meter_update(const char *tenant_id, const char *id, const json_t *spec, json_t **ret, bool *changed,
		       struct tg_error *err);
int store_meter_delete(const char *tenant_id, const char *id, bool *deleted, struct tg_error *err);

struct store_limit_row {
	const char *id, *kind, *scope, *meter, *tier, *customer_id;
	const json_t *spec;
};
int store_limit_create(const char *tenant_id, const struct store_limit_row *l, json_t **ret, struct tg_error *err);
int store_limit_get(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err);
int store_limits_list(const char *tenant_id, const char *scope, const char *tier, const char *customer_id,
		      const char *meter, const char *starting_after, int64_t limit, json_t **ret, struct tg_error *err);
int store_limit_update(const char *tenant_id, const struct store_limit_row *l, json_t **ret, bool *changed,
		       struct tg_error *err);
int store_limit_delete(const char *tenant_id, const char *id, bool *deleted, struct tg_error *err);

/* ---- PostgreSQL array literals for unnest() batches ---- */
struct store_array {
	struct tg_buf b;
	int n;
};
void store_array_add(struct store_array *a, const char *s); /* NULL → SQL NULL element */
const char *store_array_text(struct store_array *a);       /* "{...}" (owned by a) */
void store_array_release(struct store_array *a);

/* ---- usage (store/usage.c) ---- */

/* A quota counter's value from the rollups: subject ('*' for the platform), meter, [from, to) and a
 * dimension filter (JSON object text, "{}" for none); agg decides sum, max or latest. */
int store_usage_value(const char *tenant_id, const char *subject, const char *meter_id, int64_t from_ms,
		      int64_t to_ms, const char *filter_json, int agg, tg_fixed *ret, struct tg_error *err);
/* The instant (epoch ms) of the latest value there (0: none), for a latest meter's counter. */
int store_usage_latest_at(const char *tenant_id, const char *subject, const char *meter_id, int64_t from_ms,
			  int64_t to_ms, const char *filter_json, int64_t *ret, struct tg_error *err);
/* store_usage_value for many counters at once, after this transaction's rollups: arrays of subject, meter,
 * from, to, filter (json), agg → [{i, value}] (i: 1-based position). */
int store_usage_values(const char *tenant_id, const char *subjects, const char *meters, const char *froms,
		       const char *tos, const char *filters, const char *aggs, json_t **ret, struct tg_error *err);
/* Where a sweep of compaction passes goes on from (all NULL: the start); store_compact_key_clear frees it. */
struct store_compact_key {
	char *tenant, *subject, *meter;
	int64_t hour_ms;
};
void store_compact_key_clear(struct store_compact_key *k);
/* One pass (migration 0013's tg_compact_rollups_pass), in a transaction of its own: takes at most limit
 * open hourly rollups of hours before cutoff from *key on and adds them into their days; *taken below
 * limit means the sweep is done; *key moves to where the next pass goes on. Rows a writer holds are
 * left for the next sweep. */
int store_rollups_compact(int64_t cutoff_ms, int limit, struct store_compact_key *key, int64_t *taken,
			  int64_t *compacted, struct tg_error *err);
/* Time series of a meter: buckets of granularity ("hour"|"day"|"month") in [from, to), optionally for one
 * subject and grouped by dimension keys (JSON array text). Rows {start, end, value, dimensions}. */
int store_usage_series(const char *tenant_id, const char *subject, const char *meter_id, const char *granularity,
		       int64_t from_ms, int64_t to_ms, const char *group_by_json, int agg, json_t **ret,
		       struct tg_error *err);
int store_events_list(const char *tenant_id, const char *customer_id, const char *type, int64_t from_ms,
		      int64_t to_ms, const char *starting_after, int64_t limit, json_t **ret, struct tg_error *err);
/* Customer row for caches: {id, tier, parent_id, parent_tier, has_balance, parent_has_balance};
 * auto_create inserts it with the default tier. */
int store_customer_resolve(const char *tenant_id, const char *id, bool auto_create, json_t **ret,
			   struct tg_error *err);

/* ---- balances (store/balances.c) ---- */

/* One ledger row to add to an owner's balance (inside the caller's transaction). */
struct store_ledger_entry {
	const char *id;              /* txn_... */
	tg_fixed amount;             /* signed */
	const char *kind;            /* credit, debit, usage */
	const char *description, *idempotency_key, *event_id, *reservation_id;
	/* set on success */
	tg_fixed balance_after;
};

/* Append entries to one customer's ledger, update its balance, and write the webhook events its
 * crossings cause (balance.low, balance.depleted, balance.replenished) — all in the caller's
 * transaction. The balance row must exist (store_balance_ensure). *ret (may be NULL): the balance row after. */
int store_ledger_append(const char *tenant_id, const char *customer_id, struct store_ledger_entry *entries, int n,
			json_t **ret, struct tg_error *err);
/* Create the balance row if missing (minimum 0). Returns 0; *created tells. */
int store_balance_ensure(const char *tenant_id, const char *customer_id, bool *created, struct tg_error *err);
/* {customer_id, balance, minimum_balance, low_balance_threshold, state} or NULL. */
int store_balance_get(const char *tenant_id, const char *customer_id, json_t **ret, struct tg_error *err);
/* Settings; each set only when its flag is true (threshold NULL clears it). Creates the row if missing (a
 * change too). */
int store_balance_settings(const char *tenant_id, const char *customer_id, bool set_min, tg_fixed minimum,
			   bool set_low, const tg_fixed *low, json_t **ret, bool *changed, struct tg_error *err);
/* A ledger row by idempotency key, or NULL. */
int store_ledger_by_key(const char *tenant_id, const char *customer_id, const char *key, json_t **ret,
			struct tg_error *err);
int store_ledger_list(const char *tenant_id, const char *customer_id, const char *starting_after, int64_t limit,
		      json_t **ret, struct tg_error *err);
/* Which of these customers have a balance row (for the event writer): a JSON array of ids. */
int store_balances_which(const char *tenant_id, const char *ids_array, json_t **ret, struct tg_error *err);

/* ---- webhooks (store/webhooks.c) ---- */

/* Write a webhook event into the outbox, in the caller's transaction; the trigger fans it out to one
 * delivery per matching endpoint. With once_key, only the first event with that key is written
 * (*written tells, may be NULL). */
int store_outbox_add(const char *tenant_id, const char *type, const json_t *data, const char *once_key,
		     bool *written, struct tg_error *err);

/* The data and once-key of a quota counter's limit.threshold (threshold set) or limit.exceeded: one form for
 * the event writer's watches and the checks of quotas on requests, whose once-keys must agree. subject "*"
 * is the platform's counter (customer_id null); to_ms INT64_MAX: all time (period_end null). */
json_t *store_quota_notice(const char *limit_id, const char *subject, tg_fixed usage, tg_fixed limit,
			   const char *enforcement, int64_t from_ms, int64_t to_ms, const tg_fixed *threshold,
			   char *once_key, size_t size);

int store_endpoint_create(const char *tenant_id, const char *id, const char *url, const char *description,
			  const char *events_literal, const char *secret, json_t **ret, struct tg_error *err);
int store_endpoint_get(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err);
int store_endpoints_list(const char *tenant_id, const char *starting_after, int64_t limit, json_t **ret,
			 struct tg_error *err);
struct store_endpoint_patch {
	const char *url, *description, *events_literal;
	bool set_url, set_description, set_events, set_disabled, disabled;
};
int store_endpoint_update(const char *tenant_id, const char *id, const struct store_endpoint_patch *p, json_t **ret,
			  bool *changed, struct tg_error *err);
int store_endpoint_delete(const char *tenant_id, const char *id, bool *deleted, struct tg_error *err);
int store_endpoint_rotate(const char *tenant_id, const char *id, const char *secret, json_t **ret,
			  struct tg_error *err);
/* A ping for one endpoint: its event and its delivery, in one statement; *ret is the delivery (NULL when
 * the tenant has no such endpoint). */
int store_endpoint_ping(const char *tenant_id, const char *endpoint_id, json_t **ret, struct tg_error *err);

int store_deliveries_list(const char *tenant_id, const char *endpoint_id, const char *status,
			  const char *starting_after, int64_t limit, json_t **ret, struct tg_error *err);
int store_delivery_retry(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err);
/* Claim up to max due deliveries for lease_ms (other instances skip them meanwhile): rows with the
 * event, the endpoint's url and secrets, and the attempt number. */
int store_deliveries_claim(int max, int64_t lease_ms, json_t **ret, struct tg_error *err);
/* One attempt at a delivery and its outcome: succeeded, or pending again at next_ms (unix ms), or failed. */
struct store_attempt {
	const char *id; /* the delivery */
	int attempt, status_code, latency_ms;
	int64_t started_ms, next_ms;
	const char *error, *response, *outcome;
};
/* Record n attempts and their outcomes in one statement (all or none). */
int store_delivery_attempts(const struct store_attempt *a, int n, struct tg_error *err);
int store_webhook_queue_depth(int64_t *pending, int64_t *failed, struct tg_error *err);

/* ---- worker duties ---- */
/* Inside a transaction: wait for the advisory lock named key (held until COMMIT/ROLLBACK). */
int store_xact_lock(const char *key, struct tg_error *err);
/* Inside a transaction: take the advisory lock named key if free (held until COMMIT/ROLLBACK). */
int store_try_xact_lock(const char *key, bool *locked, struct tg_error *err);
int store_duty_progress(const char *tenant_id, const char *duty, int64_t *done_to_ms, bool *found,
			struct tg_error *err);
int store_duty_advance(const char *tenant_id, const char *duty, int64_t done_to_ms, struct tg_error *err);
/* Every duty's progress: [{tenant_id, duty, ms}]. */
int store_duty_progress_all(json_t **ret, struct tg_error *err);
/* Usage per subject of a meter in [from, to) with a dimension filter: [{subject, value}] (store_usage_value's
 * reading, for every subject at once). */
int store_usage_by_subject(const char *tenant_id, const char *meter_id, int64_t from_ms, int64_t to_ms,
			   const char *filter_json, int agg, json_t **ret, struct tg_error *err);
/* Tier and organisation of customers: [{id, tier, parent_id, parent_tier}]. */
int store_customers_info(const char *tenant_id, const char *ids_array, json_t **ret, struct tg_error *err);
/* Record a closed period; *written is false when it was recorded before. */
int store_period_close(const char *tenant_id, const char *limit_id, const char *subject, int64_t start_ms,
		       int64_t end_ms, tg_fixed usage, tg_fixed limit, bool *written, struct tg_error *err);
/* The first hour ≥ from with usage of a meter (any meter when NULL), or -1 when none. */
int store_first_usage(const char *tenant_id, const char *meter_id, int64_t from_ms, int64_t *ret_ms,
		      struct tg_error *err);
/* Customers with usage in [from, to): [{subject, meter_id, value}] (subjects are customers, not '*'). */
int store_usage_summary(const char *tenant_id, int64_t from_ms, int64_t to_ms, json_t **ret, struct tg_error *err);

/* ---- audit (store/audit.c) ---- */
struct store_audit {
	const char *actor, *action, *resource_type, *resource_id, *request_id;
	const json_t *before, *after; /* NULL → SQL NULL */
};
int store_audit_add(const char *tenant_id, const struct store_audit *a, struct tg_error *err);
int store_audit_list(const char *tenant_id, const char *resource_type, const char *resource_id, const char *action,
		     const char *actor, int64_t from_ms, int64_t to_ms, const char *starting_after, int64_t limit,
		     json_t **ret, struct tg_error *err);

/* ---- the event writer (store/writer.c) ---- */

/*
 * DESIGN: request threads hand whole submissions (the events of one request)
 * to a single writer thread through a mutex-protected queue. The writer takes
 * everything queued (up to TOLLGATE_EVENT_BATCH_MAX events), and commits it in
 * ONE transaction: customers resolved (and auto-created), event ids claimed
 * (the unique key makes duplicates count once, even within the batch), events
 * inserted into their monthly partition, hourly rollups upserted for the
 * customer, its organisation and the platform. Only after COMMIT does it run
 * the after-commit hook (Redis counters) and complete each submission, so a
 * 200 always means durable. A batch that fails on bad data is retried one
 * submission at a time, so one bad request cannot fail the others.
 */

enum store_event_result { STORE_EV_PENDING, STORE_EV_ACCEPTED, STORE_EV_DUPLICATE, STORE_EV_REJECTED };

/* What one event adds to one meter's rollups (computed by the caller from the tenant's meters). */
struct store_contrib {
	const char *meter_id;
	const char *dims_json; /* the meter's group_by dimensions of the event, "{}" when none */
	tg_fixed value;
	int agg;               /* enum policy_agg */
	tg_fixed cost;         /* value × the meter's price (0 when unpriced): debited from the balance */
};

struct store_event {
	const char *id, *customer_id, *type;
	const char *properties_json;
	const char *meter_id;        /* usage recorded by a consuming check: that meter only */
	const char *reservation_id, *workflow_id;
	int64_t ts_ms;
	struct store_contrib *contribs;
	int ncontribs;
	bool client_id;              /* the id is the client's (an idempotency key), not one made here */
	bool seen;                   /* set by the seen hook: the id is known committed, a duplicate already */
	bool taken;                  /* found committed by the writer (an unknown customer's event): a duplicate */
	/* a consuming check's usage: the organisation (and its tier) and the wallet its live counters moved, which
	 * its rollups and ledger row follow (not the ones stored by the time it commits: a member moved to
	 * another organisation, or given a wallet, in between left the live ones off by it for good) */
	bool by_check;
	const char *planned_parent, *planned_parent_tier, *planned_wallet;
	/* set by the writer */
	enum store_event_result result;
	const char *reject_code;     /* static: "customer_not_found" */
	const char *tier, *parent_id, *parent_tier; /* the customer as stored (in the submission's arena) */
	const char *balance_owner;   /* who paid for it (the customer or its organisation), NULL when nobody */
	tg_fixed cost;               /* what it cost */
	struct store_reservation *settled; /* the reservation it named, when still active: its holds go */
	/* set by the watch hook: the quota counters it moves, as planned on the submission's planned_gen
	 * snapshot (in the submission's arena); the live update after the commit reuses them while that
	 * snapshot is current */
	struct policy_counter *planned;
	int nplanned;
};

/* An amount a reservation holds on a Redis key (a quota counter, or a live balance). */
struct store_hold {
	const char *key;
	int64_t amount;              /* micro-units */
};

/* A reservation as PostgreSQL keeps it while it is active (0006_reservations). */
struct store_reservation {
	const char *id, *customer_id;
	int64_t expires_ms;          /* on the tenant's clock */
	struct store_hold *holds;
	int nholds;
};

/* Reservations (store/reservations.c). Insert one (inside the caller's transaction). */
int store_reservation_insert(const char *tenant_id, const struct store_reservation *r, struct tg_error *err);
/* Delete the active reservations among ids and return them with their holds (in the arena): the caller
 * lets the holds go in Redis. Ids not active (settled, released, expired, unknown) are not returned, nor,
 * when customers (one per id) is given, one made for another customer than its id's. */
int store_reservations_take(const char *tenant_id, const char *const *ids, const char *const *customers, int n,
			    struct store_reservation **ret, int *nret, struct tg_arena *a, struct tg_error *err);
/* Up to max reservations past their expiry on their tenant's clock: rows {tenant_id, id}. */
/* A customer's active reservations: [{id}]. */
int store_reservations_of(const char *tenant_id, const char *customer_id, json_t **ret, struct tg_error *err);
int store_reservations_due(int64_t real_now_ms, const char *tenant_id, int max, json_t **ret, struct tg_error *err);
/* The sum held by active reservations on one key: what a rebuilt counter has reserved. */
/* What active holds hold on key; with prefix_len, on every key that starts with its first prefix_len bytes. */
int store_reservations_held(const char *tenant_id, const char *key, size_t prefix_len, int64_t *held,
			    struct tg_error *err);

/* A quota counter an event moved, watched for thresholds and for going over its limit. */
struct store_watch {
	const char *limit_id, *subject, *meter_id, *filter_json;
	int64_t from_ms, to_ms;      /* the period; to_ms INT64_MAX for all time */
	int agg;
	tg_fixed limit;
	tg_fixed thresholds[8];
	int nthresholds;
	const char *enforcement;
};

/* A webhook event to write with the batch (rate_limit.throttled, workflow.terminated), at most once per key. */
struct store_notice {
	const char *type, *data_json, *once_key;
	/* also an audit entry (when the event was written): */
	const char *audit_action, *actor, *resource_type, *resource_id;
};

struct policy_counter;
struct hot_balance;

struct store_submission {
	const char *tenant_id;
	struct store_watch *watches;
	int nwatches;
	const char **journal; /* the live counter keys its events move after the COMMIT (set with watches) */
	int64_t queued_ms;    /* wall clock when it was submitted */
	int njournal;
	struct store_notice *notices;
	int nnotices;
	bool auto_create;
	bool counters_applied;       /* a consuming check already moved the Redis counters */
	uint64_t planned_gen;        /* the tenant snapshot the events' planned counters come from, 0: none */
	struct policy_counter *applied; /* those counters, for the hook (see policy_counter.mark) */
	int napplied;
	const struct hot_balance *applied_balance; /* and the live balance it debited, if any */
	const struct store_reservation *reservation; /* a reserving check's: inserted with the batch */
	struct store_event *events;
	int n;
	struct tg_arena *arena;      /* the owner's; the writer allocates results here while the owner waits */
	void (*done)(struct store_submission *s); /* on the writer thread, after commit and the hook */
	void *owner;
	int rc;                      /* 0 or a negative tg_err with err filled */
	struct tg_error err;
	bool lost;                   /* rc < 0 from a COMMIT whose outcome is unknown: it may have committed */
	void (*run)(void *arg);      /* set: not events, a call to make on the writer thread (store_writer_run) */
	void *run_arg;
	struct store_submission *next;
};

/* The writer's hooks into the layers above, each on the writer thread. seen runs before each batch's
 * transaction: it marks the events whose ids are known to be committed already (event.seen), which then
 * count as duplicates without a statement. watch runs inside the transaction once customers are resolved and
 * ids claimed: it fills the submission's watches. before_commit runs inside the transaction just before its
 * COMMIT (every statement but the last sent). after_commit runs with every committed submission, before
 * their done(). lost runs with every submission of a batch whose COMMIT failed with its outcome unknown (the
 * connection lost on the way: it may have committed), before their done(), which see submission.lost. */
struct store_writer_hooks {
	void (*seen)(struct store_submission **subs, int n);
	void (*watch)(struct store_submission *sub);
	void (*before_commit)(struct store_submission **subs, int n);
	void (*after_commit)(struct store_submission **subs, int n);
	void (*lost)(struct store_submission **subs, int n);
};
int store_writer_start(int batch_max, const struct store_writer_hooks *hooks);
void store_writer_submit(struct store_submission *s);
/* When the oldest submission queued or being written was submitted (wall ms), INT64_MAX when none. */
int64_t store_writer_oldest_ms(void);
/* Run fn(arg) on the writer thread between two batches, and wait for it: no commit of this instance
 * interleaves with it (how lost Redis counters are rebuilt exactly). Blocking; not on an event loop. */
void store_writer_run(void (*fn)(void *arg), void *arg);
/* Commit what is queued, then stop the thread. */
void store_writer_stop(void);
/* The writer's statement that reads a batch's customers (its plan is tested: one probe per customer). */
struct store_stmt *store_writer_customers_stmt(void);
/* The statements of store_usage_value and store_usage_by_subject (their plans are tested: indexes only). */
struct store_stmt *store_usage_value_stmt(void);
struct store_stmt *store_usage_by_subject_stmt(void);

#endif

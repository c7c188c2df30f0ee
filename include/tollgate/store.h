/* store.h — PostgreSQL: per-thread connections, prepared statements, migrations, and every query. */
#ifndef TOLLGATE_STORE_H
#define TOLLGATE_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "tollgate/error.h"
#include "tollgate/fixed.h"

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
};
#define STORE_STMT(text, n) {.sql = (text), .nparams = (n), .id = 0}

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

int store_begin(struct tg_error *err);
int store_commit(struct tg_error *err);
void store_rollback(void);
/* Run raw SQL with no parameters (migrations, LISTEN). */
int store_exec_raw(const char *sql, struct tg_error *err);
/* The SQLSTATE of the last error on this thread ("" if none). */
const char *store_last_sqlstate(void);

/* migrations/NNNN_name.sql, compiled into the binary (generated migrations.c), in order. */
struct store_migration {
	const char *name;
	const char *sql;
};
extern const struct store_migration store_migrations[];
extern const size_t store_nmigrations;
/* Apply the migrations not yet recorded in schema_migrations, under an advisory lock,
 * each in its own transaction: instances starting together apply each exactly once. */
int store_migrate(struct tg_error *err);

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

/* ---- resources (rows are JSON objects shaped like the API's) ---- */

/* Tenants and keys (store/tenants.c). */
int store_tenant_create(const char *id, const char *name, bool test_mode, const char *key_id, const char *prefix,
			const char *secret_hash, json_t **ret, struct tg_error *err);
int store_tenant_get(const char *id, json_t **ret, struct tg_error *err);
int store_tenants_list(const char *starting_after, int64_t limit, json_t **ret, struct tg_error *err);
/* default_tier: set when set_tier (NULL clears); auto_create: when set_auto. */
int store_tenant_update(const char *id, bool set_tier, const char *default_tier, bool set_auto, bool auto_create,
			json_t **ret, struct tg_error *err);
int store_tenant_advance_clock(const char *id, int64_t ms, json_t **ret, struct tg_error *err);
int store_key_create(const char *tenant_id, const char *id, const char *name, const char *prefix,
		     const char *secret_hash, const char *scopes_literal, json_t **ret, struct tg_error *err);
int store_keys_list(const char *tenant_id, const char *starting_after, int64_t limit, json_t **ret,
		    struct tg_error *err);
int store_key_revoke(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err);
/* Active keys for the auth cache: one tenant, or all when tenant_id is NULL. */
int store_keys_load(const char *tenant_id, json_t **ret, struct tg_error *err);

/* Idempotency keys (store/tenants.c). claim: 1 = ours to run, 0 = *ret is the stored row. */
int store_idem_claim(const char *tenant_id, const char *key, const char *hash, int *claimed, json_t **ret,
		     struct tg_error *err);
int store_idem_finish(const char *tenant_id, const char *key, int status, const char *content_type,
		      const char *body, struct tg_error *err);
int store_idem_forget(const char *tenant_id, const char *key, struct tg_error *err);
int store_idem_sweep(int64_t *deleted, struct tg_error *err);

/* Tiers and customers (store/customers.c). */
int store_tier_create(const char *tenant_id, const char *id, const char *name, json_t **ret, struct tg_error *err);
int store_tier_get(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err);
int store_tiers_list(const char *tenant_id, const char *starting_after, int64_t limit, json_t **ret,
		     struct tg_error *err);
int store_tier_update(const char *tenant_id, const char *id, bool set_name, const char *name, json_t **ret,
		      struct tg_error *err);
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
			  struct tg_error *err);
int store_customer_delete(const char *tenant_id, const char *id, bool *deleted, struct tg_error *err);

#endif

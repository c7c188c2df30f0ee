/* balances.c — SQL for prepaid balances: the ledger, the balance it sums to, and the crossings it causes. */
#include <stdio.h>
#include <string.h>

#include "tollgate/json.h"
#include "tollgate/store.h"

#define BALANCE_COLS                                                                                  \
	"customer_id, balance, minimum_balance, low_balance_threshold, state, tg_ts(created_at) AS created_at, " \
	"tg_ts(updated_at) AS updated_at"
#define LEDGER_COLS                                                                                   \
	"id, customer_id, amount, kind, description, idempotency_key, event_id, reservation_id, balance_after, " \
	"tg_ts(created_at) AS created_at"

/* A new wallet is 'new' until its first movement: setting it up fires no crossings. */
static struct store_stmt q_ensure = STORE_STMT(
	"INSERT INTO balances (tenant_id, customer_id, state) VALUES ($1, $2, 'new') ON CONFLICT DO NOTHING "
	"RETURNING 1 AS created", 2);

int store_balance_ensure(const char *tenant_id, const char *customer_id, bool *created, struct tg_error *err)
{
	const char *p[] = {tenant_id, customer_id};
	json_t *row;
	int rc = store_exec1(&q_ensure, p, &row, err);

	if (rc < 0) {
		if (err->err == TG_ECONFLICT)
			tg_fail(err, TG_ENOTFOUND, "customer_not_found", NULL, "no customer '%s'", customer_id);
		return rc;
	}
	if (created)
		*created = row != NULL;
	json_decref(row);
	return 0;
}

static struct store_stmt q_get = STORE_STMT("SELECT " BALANCE_COLS " FROM balances WHERE tenant_id = $1 AND customer_id = $2", 2);

int store_balance_get(const char *tenant_id, const char *customer_id, json_t **ret, struct tg_error *err)
{
	const char *p[] = {tenant_id, customer_id};
	return store_exec1(&q_get, p, ret, err);
}

static struct store_stmt q_lock = STORE_STMT(
	"SELECT balance, minimum_balance, low_balance_threshold, state FROM balances "
	"WHERE tenant_id = $1 AND customer_id = $2 FOR UPDATE", 2);
static struct store_stmt q_ledger_insert = STORE_STMT(
	"INSERT INTO ledger (tenant_id, id, customer_id, amount, kind, description, idempotency_key, event_id, "
	"reservation_id, balance_after) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)", 10);
static struct store_stmt q_update = STORE_STMT(
	"UPDATE balances SET balance = $3, state = $4, updated_at = now() WHERE tenant_id = $1 AND customer_id = $2 "
	"RETURNING " BALANCE_COLS, 4);
static const char *state_of(tg_fixed balance, tg_fixed minimum, const tg_fixed *low)
{
	if (balance <= minimum)
		return "depleted";
	if (low && balance < *low)
		return "low";
	return "ok";
}

/* balance.low on crossing the threshold downward, balance.depleted on reaching the minimum,
 * balance.replenished when a depleted balance rises above it again. */
static int crossings(const char *tenant_id, const char *before, json_t *row, struct tg_error *err)
{
	const char *after = store_str(row, "state");
	if (!strcmp(before, "new"))
		return 0;
	json_t *data = tg_json_obj("customer_id", json_incref(json_object_get(row, "customer_id")), "balance",
				   json_incref(json_object_get(row, "balance")), "minimum_balance",
				   json_incref(json_object_get(row, "minimum_balance")), "low_balance_threshold",
				   json_incref(json_object_get(row, "low_balance_threshold")), NULL);
	int rc = 0;

	if (!strcmp(before, "ok") && strcmp(after, "ok") != 0 && !json_is_null(json_object_get(row, "low_balance_threshold")))
		rc = store_outbox_add(tenant_id, "balance.low", data, NULL, NULL, err);
	if (rc == 0 && !strcmp(after, "depleted") && strcmp(before, "depleted") != 0)
		rc = store_outbox_add(tenant_id, "balance.depleted", data, NULL, NULL, err);
	if (rc == 0 && !strcmp(before, "depleted") && strcmp(after, "depleted") != 0)
		rc = store_outbox_add(tenant_id, "balance.replenished", data, NULL, NULL, err);
	json_decref(data);
	return rc;
}

int store_ledger_append(const char *tenant_id, const char *customer_id, struct store_ledger_entry *entries, int n,
			json_t **ret, struct tg_error *err)
{
	const char *lp[] = {tenant_id, customer_id};
	json_t *row = NULL, *after = NULL;
	tg_fixed balance, minimum, low;
	bool has_low;
	char before[16];
	int rc;

	if (ret)
		*ret = NULL;
	if ((rc = store_exec1(&q_lock, lp, &row, err)) < 0)
		return rc;
	if (!row)
		return tg_fail(err, TG_ENOTFOUND, "balance_not_found", NULL, "customer '%s' has no balance", customer_id);
	balance = store_get_fixed(row, "balance", 0);
	minimum = store_get_fixed(row, "minimum_balance", 0);
	has_low = !json_is_null(json_object_get(row, "low_balance_threshold"));
	low = store_get_fixed(row, "low_balance_threshold", 0);
	snprintf(before, sizeof(before), "%s", store_str(row, "state") ? store_str(row, "state") : "ok");
	json_decref(row);

	for (int i = 0; i < n; i++) {
		struct store_ledger_entry *e = &entries[i];
		char amt[TG_FIXED_BUFSZ], bal[TG_FIXED_BUFSZ];
		if (tg_fixed_add(balance, e->amount, &balance) < 0) {
			/* usage happened and is never refused: its debit stops at the floor of quantities (a wallet
			 * 9e12 in overdraft), recorded as such; it used to fail the whole event batch, the other
			 * requests' events with it */
			if (strcmp(e->kind, "usage") != 0 || e->amount >= 0)
				return tg_fail(err, TG_EINVAL, "balance_overflow", "amount",
					       "the balance would leave the range of quantities");
			e->amount = -TG_FIXED_MAX - balance;
			balance = -TG_FIXED_MAX;
		}
		e->balance_after = balance;
		const char *p[] = {tenant_id, e->id, customer_id, store_fixed(e->amount, amt), e->kind, e->description,
				   e->idempotency_key, e->event_id, e->reservation_id, store_fixed(balance, bal)};
		if ((rc = store_exec(&q_ledger_insert, p, NULL, err)) < 0)
			return rc;
	}
	{
		char bal[TG_FIXED_BUFSZ];
		const char *p[] = {tenant_id, customer_id, store_fixed(balance, bal),
				   state_of(balance, minimum, has_low ? &low : NULL)};
		if ((rc = store_exec1(&q_update, p, &after, err)) < 0)
			return rc;
	}
	rc = crossings(tenant_id, before, after, err);
	if (rc == 0 && ret)
		*ret = json_incref(after);
	json_decref(after);
	return rc;
}

#define NEW_MINIMUM "CASE WHEN $3 THEN $4::numeric ELSE minimum_balance END"
#define NEW_LOW "CASE WHEN $5 THEN $6::numeric ELSE low_balance_threshold END"
static struct store_stmt q_settings = STORE_STMT(
	"UPDATE balances SET minimum_balance = " NEW_MINIMUM ", low_balance_threshold = " NEW_LOW ", updated_at = now() "
	"WHERE tenant_id = $1 AND customer_id = $2 AND (minimum_balance, low_balance_threshold) IS DISTINCT FROM "
	"(" NEW_MINIMUM ", " NEW_LOW ") RETURNING " BALANCE_COLS, 6);
static struct store_stmt q_state = STORE_STMT(
	"UPDATE balances SET state = $3 WHERE tenant_id = $1 AND customer_id = $2 RETURNING " BALANCE_COLS, 3);

int store_balance_settings(const char *tenant_id, const char *customer_id, bool set_min, tg_fixed minimum,
			   bool set_low, const tg_fixed *low, json_t **ret, bool *changed, struct tg_error *err)
{
	char mb[TG_FIXED_BUFSZ], lb[TG_FIXED_BUFSZ];
	const char *p[] = {tenant_id, customer_id, store_bool(set_min), store_fixed(minimum, mb), store_bool(set_low),
			   low ? store_fixed(*low, lb) : NULL};
	json_t *row = NULL;
	const char *lp[] = {tenant_id, customer_id};
	json_t *locked = NULL;
	char before[16];
	bool created = false, set = false;
	int rc;

	*ret = NULL;
	if ((rc = store_begin(err)) < 0)
		return rc;
	if ((rc = store_balance_ensure(tenant_id, customer_id, &created, err)) < 0 ||
	    (rc = store_exec1(&q_lock, lp, &locked, err)) < 0 || (rc = store_exec1(&q_settings, p, &row, err)) < 0 ||
	    (rc = store_updated(store_balance_get, tenant_id, customer_id, &row, &set, err)) < 0)
		goto fail;
	*changed = created || set;
	snprintf(before, sizeof(before), "%s", store_str(locked, "state") ? store_str(locked, "state") : "ok");
	{
		/* new settings can move the balance across a line too */
		tg_fixed b = store_get_fixed(row, "balance", 0), m = store_get_fixed(row, "minimum_balance", 0);
		tg_fixed l = store_get_fixed(row, "low_balance_threshold", 0);
		bool has_low = !json_is_null(json_object_get(row, "low_balance_threshold"));
		const char *sp[] = {tenant_id, customer_id, !strcmp(before, "new") ? "new" : state_of(b, m, has_low ? &l : NULL)};
		json_decref(row);
		row = NULL;
		if ((rc = store_exec1(&q_state, sp, &row, err)) < 0 || (rc = crossings(tenant_id, before, row, err)) < 0)
			goto fail;
	}
	if ((rc = store_commit(err)) < 0)
		goto fail;
	json_decref(locked);
	*ret = row;
	return 0;
fail:
	json_decref(locked);
	json_decref(row);
	store_rollback();
	return rc;
}

static struct store_stmt q_by_key = STORE_STMT(
	"SELECT " LEDGER_COLS " FROM ledger WHERE tenant_id = $1 AND customer_id = $2 AND idempotency_key = $3", 3);

int store_ledger_by_key(const char *tenant_id, const char *customer_id, const char *key, json_t **ret,
			struct tg_error *err)
{
	const char *p[] = {tenant_id, customer_id, key};
	return store_exec1(&q_by_key, p, ret, err);
}

static struct store_stmt q_ledger_seq = STORE_STMT(
	"SELECT seq FROM ledger WHERE tenant_id = $1 AND customer_id = $2 AND id = $3", 3);
static struct store_stmt q_ledger_list = STORE_STMT(
	"SELECT " LEDGER_COLS " FROM ledger WHERE tenant_id = $1 AND customer_id = $2 AND ($3::bigint IS NULL OR seq < $3) "
	"ORDER BY seq DESC LIMIT $4", 4);

int store_ledger_list(const char *tenant_id, const char *customer_id, const char *starting_after, int64_t limit,
		      json_t **ret, struct tg_error *err)
{
	char seq[STORE_I64_BUFSZ], lim[STORE_I64_BUFSZ];
	const char *cursor = NULL;
	int rc;

	if (starting_after) {
		const char *p[] = {tenant_id, customer_id, starting_after};
		json_t *row;
		if ((rc = store_exec1(&q_ledger_seq, p, &row, err)) < 0)
			return rc;
		if (!row)
			return tg_fail(err, TG_EINVAL, "invalid_parameter", "starting_after",
				       "'starting_after' names no transaction of this ledger");
		cursor = store_i64(store_int(row, "seq", 0), seq);
		json_decref(row);
	}
	const char *p[] = {tenant_id, customer_id, cursor, store_i64(limit + 1, lim)};
	return store_exec(&q_ledger_list, p, ret, err);
}

/* a probe per id, whatever the statistics say and the table's size when it was planned (see q_customers in writer.c) */
static struct store_stmt q_which = STORE_STMT_PROBE(
	"SELECT b.customer_id FROM (SELECT DISTINCT unnest($2::text[])) AS u(id), "
	"LATERAL (SELECT customer_id FROM balances WHERE tenant_id = $1 AND customer_id = u.id LIMIT 1) b", 2);

int store_balances_which(const char *tenant_id, const char *ids_array, json_t **ret, struct tg_error *err)
{
	const char *p[] = {tenant_id, ids_array};
	return store_exec(&q_which, p, ret, err);
}

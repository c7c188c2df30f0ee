/* balances.c — prepaid balances: read, settings, credit, debit, the ledger. */
#include <stdio.h>
#include <string.h>

#include "handlers.h"
#include "tollgate/api.h"
#include "tollgate/hot.h"
#include "tollgate/json.h"
#include "tollgate/log.h"
#include "tollgate/policy.h"
#include "tollgate/store.h"
#include "tollgate/worker.h"

/*
 * DESIGN: PostgreSQL's ledger is the truth and the live balance in Redis
 * (beside the customer's counters) is what checks gate on, atomically with
 * their limits. A debit through the API is decided in Redis first (atomic
 * against concurrent checks, reservations and debits), then written to the
 * ledger; if the write fails it is given back in Redis. A credit is written
 * to the ledger first and then added in Redis, so the very next check sees
 * it. A balance Redis lost is rebuilt from the ledger's sum. A movement is
 * answered only after its own COMMIT (an idempotency key's lock is held to
 * it); a COMMIT that fails may still have committed (the connection lost
 * during it), so then the live balance is dropped and rebuilt from the ledger
 * rather than moved either way.
 */

static int customer_exists(struct tg_req *req, const char *id)
{
	json_t *row;
	int rc = store_customer_get(req->principal.tenant_id, id, &row, &req->err);

	if (rc < 0)
		return rc;
	if (!row)
		return api_not_found(req, "customer", id);
	json_decref(row);
	return 0;
}

/* The balance object: the ledger's balance, the live holds from Redis. */
static json_t *render(const json_t *row, tg_fixed reserved)
{
	tg_fixed balance = store_get_fixed(row, "balance", 0);

	return tg_json_obj("customer_id", json_incref(json_object_get(row, "customer_id")), "balance",
			   tg_json_fixed(balance), "reserved", tg_json_fixed(reserved), "available",
			   tg_json_fixed(balance - reserved), "minimum_balance",
			   json_incref(json_object_get(row, "minimum_balance")), "low_balance_threshold",
			   json_incref(json_object_get(row, "low_balance_threshold")), NULL);
}

/* The wallet's live balance moves on one side of a ledger commit: noted in the journal first (every time: a
 * ledger row may wait on a lock for long), so that it is rebuilt if this process dies in between; or, when
 * a move in Redis failed or may have happened unanswered, dropped once Redis answers (hot/journal.c). */
static void journal_wallet(struct tg_req *req, const char *id)
{
	const char *key = hot_balance_key(&req->arena, req->principal.tenant_id, id);
	struct tg_error e;

	if (hot_journal_note(&key, 1, true, &e) < 0)
		log_warn("live balance not journaled; it is rebuilt once Redis answers", "%s", e.detail);
}

static void suspect_wallet(struct tg_req *req, const char *id)
{
	const char *key = hot_balance_key(&req->arena, req->principal.tenant_id, id);

	hot_journal_suspect(&key, 1);
}

/* Run a balance operation in Redis, rebuilding the live balance from the ledger when it is missing. */
static int live(struct tg_req *req, const char *owner, enum hot_balance_op op, tg_fixed amount, struct hot_balance *st)
{
	int rc = hot_balance(req->principal.tenant_id, owner, op, amount, NULL, st, &req->err);

	if (rc == HOT_BALANCE_MISSING) {
		struct hot_balance b = {.owner = owner};
		if ((rc = api_rebuild_balance(req->principal.tenant_id, &b, &req->err)) < 0)
			return rc;
		rc = hot_balance(req->principal.tenant_id, owner, op, amount, &b, st, &req->err);
	}
	if (rc < 0)
		suspect_wallet(req, owner); /* it may have run, unanswered */
	return rc;
}

/* The balance object as GET shows it, for the audit's "before" of a settings change (which used to record
 * the stored row, in another shape than its "after"). Its holds as Redis has them, 0 if it cannot say. */
int api_balance_audit_get(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err)
{
	struct hot_balance st;
	struct tg_error e;
	json_t *row;
	int rc = store_balance_get(tenant_id, id, &row, err);

	*ret = NULL;
	if (rc < 0 || !row)
		return rc;
	if (hot_balance(tenant_id, id, HOT_CREDIT, 0, NULL, &st, &e) != 0)
		st.reserved = 0;
	*ret = render(row, st.reserved);
	json_decref(row);
	return 0;
}

/* A customer's balance for other readers (usage), or json null. */
json_t *api_balance_json(struct tg_req *req, const char *customer)
{
	struct hot_balance st;
	json_t *row;

	if (store_balance_get(req->principal.tenant_id, customer, &row, &req->err) < 0 || !row)
		return json_null();
	if (live(req, customer, HOT_CREDIT, 0, &st) < 0)
		st.reserved = 0;
	json_t *o = render(row, st.reserved);
	json_decref(row);
	return o;
}

int api_balance_get(struct tg_req *req)
{
	const char *id;
	json_t *row;
	struct hot_balance st;
	int rc;

	if (api_path_id(req, 0, &id) < 0)
		return api_not_found(req, "customer", req->params[0]);
	if ((rc = api_query_none(req)) < 0 || (rc = customer_exists(req, id)) < 0 ||
	    (rc = store_balance_get(req->principal.tenant_id, id, &row, &req->err)) < 0)
		return rc;
	if (!row)
		return tg_fail(&req->err, TG_ENOTFOUND, "balance_not_found", NULL,
			       "customer '%s' has no balance yet: credit it or set its minimum_balance", id);
	if ((rc = live(req, id, HOT_CREDIT, 0, &st)) < 0) {
		json_decref(row);
		return rc;
	}
	tg_req_reply(req, 200, render(row, st.reserved));
	json_decref(row);
	return 0;
}

int api_balance_update(struct tg_req *req)
{
	static const char *const fields[] = {"minimum_balance", "low_balance_threshold", NULL};
	const char *id;
	json_t *body = api_body(req), *row, *low_v;
	tg_fixed minimum = 0, low = 0;
	bool set_min = false, set_low, changed;
	struct hot_balance st;
	int rc;

	if (api_path_id(req, 0, &id) < 0)
		return api_not_found(req, "customer", req->params[0]);
	if (!body)
		return req->err.err;
	if ((rc = api_only(req, body, fields)) < 0 || (rc = api_fixed(req, body, "minimum_balance", false, &minimum, &set_min)) < 0)
		return rc;
	low_v = json_object_get(body, "low_balance_threshold");
	set_low = low_v != NULL;
	if (low_v && !json_is_null(low_v) && (rc = api_fixed(req, body, "low_balance_threshold", false, &low, NULL)) < 0)
		return rc;
	if ((rc = customer_exists(req, id)) < 0)
		return rc;
	journal_wallet(req, id);
	if ((rc = store_balance_settings(req->principal.tenant_id, id, set_min, minimum, set_low,
					 low_v && !json_is_null(low_v) ? &low : NULL, &row, &changed, &req->err)) < 0)
		return rc;
	req->unchanged = !changed;
	/* the gate uses the new minimum at once */
	if ((rc = live(req, id, HOT_SET_MINIMUM, store_get_fixed(row, "minimum_balance", 0), &st)) < 0) {
		json_decref(row);
		return rc;
	}
	reload_forget_customer(req->principal.tenant_id, id, false);
	tg_req_reply(req, 200, render(row, st.reserved));
	json_decref(row);
	return 0;
}

struct movement {
	tg_fixed amount;
	const char *description, *key;
};

static int parse_movement(struct tg_req *req, struct movement *m)
{
	static const char *const fields[] = {"amount", "description", "idempotency_key", NULL};
	json_t *body = api_body(req);
	int rc;

	if (!body)
		return req->err.err;
	if ((rc = api_only(req, body, fields)) < 0 || (rc = api_fixed(req, body, "amount", true, &m->amount, NULL)) < 0 ||
	    (rc = api_str(req, body, "description", false, true, 500, &m->description)) < 0 ||
	    (rc = api_str(req, body, "idempotency_key", false, true, 255, &m->key)) < 0)
		return rc;
	if (m->amount <= 0)
		return api_bad(req, "amount", "'amount' must be positive");
	if (m->key && !m->key[0])
		return api_bad(req, "idempotency_key", "'idempotency_key' must not be empty");
	return 0;
}

/* A repeated idempotency key: the first transaction again (same amount and kind), or 409. 1 = replayed. */
static int replay(struct tg_req *req, const char *id, const struct movement *m, const char *kind)
{
	json_t *txn, *row;
	int rc;

	if (!m->key)
		return 0;
	if ((rc = store_ledger_by_key(req->principal.tenant_id, id, m->key, &txn, &req->err)) < 0)
		return rc;
	if (!txn)
		return 0;
	tg_fixed want = !strcmp(kind, "credit") ? m->amount : -m->amount;
	if (store_get_fixed(txn, "amount", 0) != want || strcmp(store_str(txn, "kind"), kind) != 0) {
		json_decref(txn);
		return tg_fail(&req->err, TG_ECONFLICT, "idempotency_key_reused", "idempotency_key",
			       "this idempotency_key was used for a different transaction");
	}
	if ((rc = store_balance_get(req->principal.tenant_id, id, &row, &req->err)) < 0) {
		json_decref(txn);
		return rc;
	}
	struct hot_balance st;
	if (live(req, id, HOT_CREDIT, 0, &st) < 0)
		st.reserved = 0;
	tg_req_reply(req, 200, tg_json_obj("balance", render(row, st.reserved), "transaction", txn, NULL));
	json_decref(row);
	return 1;
}

/* The movement's ledger row, in the open transaction; *row is the balance after, *txn the row. */
static int append(struct tg_req *req, const char *id, const struct movement *m, const char *kind, json_t **row,
		  json_t **txn)
{
	char tid[TG_SID_BUFSZ];
	struct store_ledger_entry e = {.id = tid, .amount = !strcmp(kind, "credit") ? m->amount : -m->amount,
				       .kind = kind, .description = m->description, .idempotency_key = m->key};
	int rc;

	tg_sid_new("txn_", tid);
	*row = *txn = NULL;
	if ((rc = store_balance_ensure(req->principal.tenant_id, id, NULL, &req->err)) < 0 ||
	    (rc = store_ledger_append(req->principal.tenant_id, id, &e, 1, row, &req->err)) < 0) {
		json_decref(*row);
		*row = NULL;
		return rc;
	}
	*txn = tg_json_obj("id", json_string(tid), "customer_id", json_string(id), "amount", tg_json_fixed(e.amount),
			   "kind", json_string(kind), "description", tg_json_str(m->description), "idempotency_key",
			   tg_json_str(m->key), "event_id", json_null(), "reservation_id", json_null(), "balance_after",
			   tg_json_fixed(e.balance_after), "created_at", tg_json_time(tg_now_ms()), NULL);
	return 0;
}

/* A movement is one transaction, committed before it is answered. With an idempotency key its retries wait
 * for each other on a lock held until that commit: the first decides, the others replay it. */
static int begin(struct tg_req *req, const char *id, const struct movement *m)
{
	int rc;

	if ((rc = store_begin(&req->err)) < 0)
		return rc;
	if (m->key && (rc = store_xact_lock(tg_arena_printf(&req->arena, "ledger|%s|%s|%s", req->principal.tenant_id, id,
							     m->key),
					    &req->err)) < 0)
		store_rollback();
	return rc;
}

/* The live balance is dropped, to be rebuilt from the ledger at its next use: for a move in Redis that failed,
 * and for a ledger COMMIT whose outcome is unknown (the connection lost during it: the row may be in) */
static void forget_wallet(struct tg_req *req, const char *id)
{
	struct tg_error e;

	if (hot_balance_forget(req->principal.tenant_id, id, &e) < 0)
		suspect_wallet(req, id);
}

/* The movement's COMMIT failed: for all we know it may have committed. Its backend (pid) is waited for
 * if still committing (the network broke, not PostgreSQL), so that the rebuild sees the outcome. */
static int lost_commit(struct tg_req *req, const char *id, int pid, json_t *row, json_t *txn)
{
	log_warn("ledger COMMIT failed, its outcome unknown; the live balance is rebuilt from the ledger", "%s",
		 req->err.detail);
	/* only a lost connection leaves the outcome open; PostgreSQL's own refusal ended the transaction */
	if (store_connection_lost(&req->err))
		store_wait_settled(pid, 10000);
	forget_wallet(req, id);
	json_decref(row);
	json_decref(txn);
	return req->err.err;
}

/* Ends the movement's transaction without a change: a replay, a refusal or a failure. */
static int back_out(int rc)
{
	store_rollback();
	return rc;
}

static int credit(struct tg_req *req, const char *id, const struct movement *m)
{
	struct hot_balance st;
	json_t *row, *txn;
	int rc;

	if ((rc = begin(req, id, m)) < 0)
		return rc;
	if ((rc = replay(req, id, m, "credit")) != 0)
		return back_out(rc < 0 ? rc : 0);
	journal_wallet(req, id);
	if ((rc = append(req, id, m, "credit", &row, &txn)) < 0) {
		store_rollback();
		/* the same key raced in: answer as a replay */
		if (req->err.err == TG_ECONFLICT && m->key && replay(req, id, m, "credit") == 1)
			return 0;
		return rc;
	}
	int pid = store_backend_pid();
	if (store_commit(&req->err) < 0)
		return lost_commit(req, id, pid, row, txn);
	/* committed: the next check sees it (a missing live balance is rebuilt with it included) */
	rc = hot_balance(req->principal.tenant_id, id, HOT_CREDIT, m->amount, NULL, &st, &req->err);
	if (rc == HOT_BALANCE_MISSING)
		rc = live(req, id, HOT_CREDIT, 0, &st);
	if (rc < 0) {
		/* dropped so that the next use rebuilds it from the ledger, credit included */
		log_warn("live balance not credited; it is rebuilt from the ledger", "%s", req->err.detail);
		forget_wallet(req, id);
		st.reserved = 0;
	}
	reload_forget_customer(req->principal.tenant_id, id, false);
	tg_req_reply(req, 200, tg_json_obj("balance", render(row, st.reserved), "transaction", txn, NULL));
	json_decref(row);
	return 0;
}

static int debit(struct tg_req *req, const char *id, const struct movement *m)
{
	struct hot_balance st;
	json_t *row, *txn;
	int rc;

	if ((rc = begin(req, id, m)) < 0)
		return rc;
	if ((rc = replay(req, id, m, "debit")) != 0)
		return back_out(rc < 0 ? rc : 0);
	/* no wallet, nothing to debit: refused, and no wallet is made for it */
	if ((rc = store_balance_get(req->principal.tenant_id, id, &row, &req->err)) < 0)
		return back_out(rc);
	if (!row)
		return back_out(tg_fail(&req->err, TG_EBALANCE, "insufficient_balance", "amount",
					"customer '%s' has no balance to debit", id));
	json_decref(row);
	journal_wallet(req, id);
	/* decided in Redis, atomically against checks and other debits */
	if ((rc = live(req, id, HOT_DEBIT, m->amount, &st)) < 0)
		return back_out(rc);
	if (rc == 0)
		return back_out(tg_fail(&req->err, TG_EBALANCE, "insufficient_balance", "amount",
					"the debit would take the available balance below the minimum"));
	if ((rc = append(req, id, m, "debit", &row, &txn)) < 0) {
		struct tg_error e;
		struct hot_balance back;
		store_rollback();
		/* not recorded: give it back */
		if (hot_balance(req->principal.tenant_id, id, HOT_CREDIT, m->amount, NULL, &back, &e) < 0) {
			log_warn("debit not given back in Redis; it is rebuilt from the ledger", "%s", e.detail);
			forget_wallet(req, id);
		}
		if (req->err.err == TG_ECONFLICT && m->key && replay(req, id, m, "debit") == 1)
			return 0;
		return rc;
	}
	/* not given back: if it committed unanswered, the ledger has the debit */
	int pid = store_backend_pid();
	if (store_commit(&req->err) < 0)
		return lost_commit(req, id, pid, row, txn);
	tg_req_reply(req, 200, tg_json_obj("balance", render(row, st.reserved), "transaction", txn, NULL));
	json_decref(row);
	return 0;
}

/* A credit or debit named by the path, once its body and customer are good. */
static int movement(struct tg_req *req, int (*op)(struct tg_req *, const char *, const struct movement *))
{
	const char *id;
	struct movement m = {0};
	int rc;

	if (api_path_id(req, 0, &id) < 0)
		return api_not_found(req, "customer", req->params[0]);
	if ((rc = parse_movement(req, &m)) < 0 || (rc = customer_exists(req, id)) < 0)
		return rc;
	return op(req, id, &m);
}

int api_balance_credit(struct tg_req *req)
{
	return movement(req, credit);
}

int api_balance_debit(struct tg_req *req)
{
	return movement(req, debit);
}

int api_balance_transactions(struct tg_req *req)
{
	static const char *const q[] = {"limit", "starting_after", NULL};
	const char *id, *after;
	int64_t limit;
	json_t *rows;
	int rc;

	if (api_path_id(req, 0, &id) < 0)
		return api_not_found(req, "customer", req->params[0]);
	if ((rc = api_query_only(req, q)) < 0 || (rc = api_page(req, &limit, &after)) < 0 ||
	    (rc = customer_exists(req, id)) < 0 ||
	    (rc = store_ledger_list(req->principal.tenant_id, id, after, limit, &rows, &req->err)) < 0)
		return rc;
	api_reply_list(req, rows, limit);
	return 0;
}

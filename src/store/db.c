/* db.c — per-thread PostgreSQL connections, prepared statements, rows as JSON, LISTEN/NOTIFY. */
#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "tollgate/json.h"
#include "tollgate/log.h"
#include "tollgate/metrics.h"
#include "tollgate/store.h"
#include "tollgate/util.h"

#define STMT_MAX 1024

/* A statement waiting to ride with the next one (store_defer, and the BEGIN of a transaction). */
struct deferred {
	struct store_stmt *st; /* NULL: sql, a command without parameters */
	const char *sql;
	char **params;
};

struct conn_state {
	PGconn *pg;
	int depth;    /* nested store_begin() calls: only the outermost talks to PostgreSQL */
	bool doomed;  /* an inner level rolled back: the outermost must too */
	unsigned char prepared[STMT_MAX];
	int64_t affected;
	char sqlstate[8];
	struct deferred *defer;
	int ndefer, capdefer;
	bool pinned;  /* the session holds a lock: never swapped for a fresh connection (store_migrate) */
	/* A statement of the open transaction failed (or its connection was lost): like PostgreSQL's
	 * "current transaction is aborted", every later statement fails with that error until the
	 * outermost commit or rollback. Its BEGIN may never have been sent (it is deferred), so without
	 * this a caller carrying on after an error would run the rest in autocommit. */
	bool failed;
	struct tg_error failed_err;
};

static char *conninfo;
static _Atomic int next_stmt_id;
static _Thread_local struct conn_state *tls;

/* Failures for /metrics: connections that could not be made or were lost, and statements PostgreSQL
 * refused for another reason than a unique or foreign-key violation (those are answers: 409). */
#define PG_ERRORS_HELP \
	"PostgreSQL failures: connections that failed or were lost (also ones the server closed while idle, e.g. " \
	"by idle_session_timeout) (kind=connection), statements refused " \
	"other than unique and foreign-key violations, which answer 409 (kind=statement)."
static struct tg_metric *m_conn_errors, *m_stmt_errors;

static void pgresult_clearp(PGresult **r)
{
	if (*r)
		PQclear(*r);
}
#define _cleanup_pgresult_ _cleanup_(pgresult_clearp)

void store_init(const char *url)
{
	free(conninfo);
	conninfo = tg_strdup(url);
	m_conn_errors = tg_counter("tollgate_postgres_errors_total", PG_ERRORS_HELP, "kind=\"connection\"");
	m_stmt_errors = tg_counter("tollgate_postgres_errors_total", PG_ERRORS_HELP, "kind=\"statement\"");
}

static void count_error(struct tg_metric *m)
{
	if (m) /* NULL before store_init */
		tg_metric_add(m, 1);
}

static void notice_quiet(void *arg, const PGresult *res)
{
	TG_UNUSED(arg);
	TG_UNUSED(res);
}

static void defer_clear(struct conn_state *cs)
{
	for (int i = 0; i < cs->ndefer; i++) {
		struct deferred *d = &cs->defer[i];
		for (int k = 0; d->st && d->params && k < d->st->nparams; k++)
			free(d->params[k]);
		free(d->params);
	}
	cs->ndefer = 0;
}

static void defer_push(struct conn_state *cs, struct store_stmt *st, const char *sql, const char *const *params)
{
	struct deferred *d;

	if (cs->ndefer == cs->capdefer) {
		cs->capdefer = cs->capdefer ? cs->capdefer * 2 : 8;
		cs->defer = tg_realloc(cs->defer, sizeof(*cs->defer) * (size_t)cs->capdefer);
	}
	d = &cs->defer[cs->ndefer++];
	d->st = st;
	d->sql = sql;
	d->params = NULL;
	if (st && st->nparams > 0) {
		d->params = tg_calloc((size_t)st->nparams, sizeof(char *));
		for (int k = 0; k < st->nparams; k++)
			d->params[k] = params[k] ? tg_strdup(params[k]) : NULL;
	}
}

/* Close the connection. An open transaction stays open on our side, failed, until the caller ends it. */
static void conn_close(struct conn_state *cs)
{
	defer_clear(cs);
	if (cs->pg)
		PQfinish(cs->pg);
	cs->pg = NULL;
	memset(cs->prepared, 0, sizeof(cs->prepared));
}

/* The outermost end of a transaction: nothing of it is pending any more. */
static void txn_reset(struct conn_state *cs)
{
	defer_clear(cs);
	cs->depth = 0;
	cs->doomed = false;
	cs->failed = false;
}

/* End the transaction without its changes: what never left needs no undoing (BEGIN included). */
static void txn_abort(struct conn_state *cs)
{
	struct tg_error e;

	txn_reset(cs);
	if (cs->pg && PQtransactionStatus(cs->pg) != PQTRANS_IDLE)
		store_exec_raw("ROLLBACK", &e);
}

void store_thread_end(void)
{
	if (!tls)
		return;
	conn_close(tls);
	free(tls->defer);
	free(tls);
	tls = NULL;
}

static PGconn *connect_db(struct tg_error *err)
{
	PGconn *pg = PQconnectdb(conninfo ? conninfo : "");

	if (PQstatus(pg) != CONNECTION_OK) {
		count_error(m_conn_errors);
		tg_fail(err, TG_EUNAVAIL, "database_unavailable", NULL, "the database is unavailable; retry shortly");
		tg_error_detail(err, "connect: %s", PQerrorMessage(pg));
		PQfinish(pg);
		return NULL;
	}
	PQsetNoticeReceiver(pg, notice_quiet, NULL);
	return pg;
}

/*
 * A connection the server closed while it sat idle here: a restart, a failover, an idle-session timeout.
 * The server's goodbye (a FATAL error, then the end of the stream) waits on the socket, so one poll(2)
 * that does not wait finds it before a statement is sent, and the statement goes on a fresh connection
 * instead of failing.
 * DESIGN: a statement is never sent twice. One that fails after it went out may have committed before
 * the connection broke (an autocommit UPDATE sent again would count twice), and a transaction cannot be
 * replayed: those still fail with 503. So this is looked at only between transactions, before anything
 * is sent, where changing connections loses nothing: not for the COMMIT of one (store_commit sends it at
 * depth 0), which on a fresh connection would "succeed" with nothing to commit.
 */
static bool closed_while_idle(const struct conn_state *cs)
{
	PGconn *pg = cs->pg;
	struct pollfd pfd = {.fd = PQsocket(pg), .events = POLLIN};

	/* (nor while the session holds what a fresh one would not: the migrations' advisory lock) */
	if (cs->depth > 0 || cs->ndefer > 0 || cs->pinned || PQtransactionStatus(pg) != PQTRANS_IDLE)
		return false;

	/* the goodbye is a message and then the end of the stream: a read for each */
	for (int i = 0; i < 3; i++) {
		if (pfd.fd < 0)
			return true;
		if (poll(&pfd, 1, 0) <= 0)
			return false; /* nothing waiting (the common case), or no telling: let the statement find out */
		if (!PQconsumeInput(pg) || PQstatus(pg) != CONNECTION_OK)
			return true;
		PQisBusy(pg); /* parses what came: while idle, an error is taken as a notice */
	}
	return false;
}

static struct conn_state *conn_get(struct tg_error *err)
{
	if (!tls)
		tls = tg_calloc(1, sizeof(*tls));
	if (tls->depth > 0 && tls->failed) {
		*err = tls->failed_err; /* not on a new connection: outside the transaction */
		return NULL;
	}
	if (tls->pg && (PQstatus(tls->pg) != CONNECTION_OK || closed_while_idle(tls))) {
		count_error(m_conn_errors);
		conn_close(tls);
		if (tls->depth > 0) {
			/* the transaction went with the connection */
			tls->failed = true;
			tg_fail(&tls->failed_err, TG_EUNAVAIL, "database_unavailable", NULL,
				"the database is unavailable; retry shortly");
			*err = tls->failed_err;
			return NULL;
		}
	}
	if (!tls->pg) {
		if (tls->pinned) {
			/* the session's lock went with its connection: a fresh one would carry on without it */
			tg_fail(err, TG_EUNAVAIL, "database_unavailable", NULL, "the database connection was lost; retry shortly");
			return NULL;
		}
		tls->pg = connect_db(err);
		if (!tls->pg)
			return NULL;
	}
	return tls;
}

bool store_ping(struct tg_error *err)
{
	return store_exec_raw("SELECT 1", err) == 0;
}

bool store_connection_lost(const struct tg_error *err)
{
	return err->err == TG_EUNAVAIL && err->code && strcmp(err->code, "database_unavailable") == 0;
}

int store_backend_pid(void)
{
	return tls && tls->pg && PQstatus(tls->pg) == CONNECTION_OK ? PQbackendPID(tls->pg) : 0;
}

static struct store_stmt q_running = STORE_STMT(
	"SELECT count(*)::text AS n FROM pg_stat_activity WHERE pid = $1::integer AND pid <> pg_backend_pid() "
	"AND state = 'active'", 1);

void store_wait_settled(int pid, int max_ms)
{
	char buf[STORE_I64_BUFSZ];
	const char *p[] = {store_i64(pid, buf)};
	int64_t until = tg_mono_us() + (int64_t)max_ms * 1000, pause_ms = 50;
	struct tg_error err;

	if (pid <= 0)
		return;
	/* PostgreSQL unreachable counts as still running (the network may be what broke): waited out with a
	 * pause growing to a second, so an outage costs a few attempts, not hundreds */
	for (;; pause_ms = pause_ms < 500 ? pause_ms * 2 : 1000) {
		json_t *row = NULL;
		int rc = store_exec1(&q_running, p, &row, &err);
		bool running = rc < 0 || (row && strcmp(store_str(row, "n"), "0") != 0);
		json_decref(row);
		if (!running)
			return;
		if (tg_mono_us() >= until) {
			log_warn("the backend of a lost COMMIT still runs; rebuilding its counters anyway", "pid %d", pid);
			return;
		}
		tg_wait_ms(pause_ms);
	}
}

const char *store_last_sqlstate(void)
{
	return tls ? tls->sqlstate : "";
}

int64_t store_affected(void)
{
	return tls ? tls->affected : 0;
}

/* Map a failed result to a tg_error; closes the connection when it is broken. */
static int result_error_(struct conn_state *cs, PGresult *res, struct tg_error *err)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(cs->pg);

	snprintf(cs->sqlstate, sizeof(cs->sqlstate), "%s", state ? state : "");
	if (PQstatus(cs->pg) != CONNECTION_OK || !state || strncmp(state, "08", 2) == 0 ||
	    strncmp(state, "57P", 3) == 0) {
		count_error(m_conn_errors);
		conn_close(cs);
		tg_fail(err, TG_EUNAVAIL, "database_unavailable", NULL, "the database is unavailable; retry shortly");
		tg_error_detail(err, "%s", msg);
		return err->err;
	}
	if (strcmp(state, "23505") == 0) {
		tg_fail(err, TG_ECONFLICT, "already_exists", NULL, "an object with this id already exists");
	} else if (strcmp(state, "23503") == 0) {
		/* delete of a referenced row, or insert naming a missing one: callers refine the message */
		tg_fail(err, TG_ECONFLICT, "in_use", NULL, "the object is referenced by others");
	} else if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0) {
		tg_fail(err, TG_EUNAVAIL, "conflict_retry", NULL, "a concurrent change got in the way; retry");
	} else if (strcmp(state, "55P03") == 0 || strcmp(state, "57014") == 0) {
		tg_fail(err, TG_EUNAVAIL, "database_busy", NULL, "the database is busy; retry shortly");
	} else {
		tg_fail(err, TG_EINTERNAL, NULL, NULL, "internal error");
	}
	/* a duplicate or a missing reference is an answer (409), not a failure of PostgreSQL */
	if (err->err != TG_ECONFLICT)
		count_error(m_stmt_errors);
	tg_error_detail(err, "sqlstate %s: %s", state, msg);
	return err->err;
}

static int result_error(struct conn_state *cs, PGresult *res, struct tg_error *err)
{
	int rc = result_error_(cs, res, err);

	if (cs->depth > 0 && !cs->failed) {
		cs->failed = true;
		cs->failed_err = *err;
	}
	return rc;
}

static int stmt_id(struct store_stmt *st)
{
	int id = atomic_load_explicit((_Atomic int *)&st->id, memory_order_acquire);

	if (id == 0) {
		int fresh = atomic_fetch_add(&next_stmt_id, 1) + 1;
		int expected = 0;
		if (fresh >= STMT_MAX)
			TG_BUG("more than %d SQL statements", STMT_MAX);
		if (atomic_compare_exchange_strong((_Atomic int *)&st->id, &expected, fresh))
			id = fresh;
		else
			id = expected;
	}
	return id;
}

static json_t *pg_array_to_json(const char *s)
{
	json_t *arr = json_array();
	struct tg_buf item = TG_BUF_INIT;

	if (*s != '{')
		return arr;
	s++;
	while (*s && *s != '}') {
		tg_buf_reset(&item);
		tg_buf_add(&item, "", 0);
		if (*s == '"') {
			for (s++; *s && *s != '"'; s++) {
				if (*s == '\\' && s[1])
					s++;
				tg_buf_addc(&item, *s);
			}
			if (*s == '"')
				s++;
		} else {
			while (*s && *s != ',' && *s != '}')
				tg_buf_addc(&item, *s++);
		}
		json_array_append_new(arr, tg_json_str(item.buf));
		if (*s == ',')
			s++;
	}
	tg_buf_release(&item);
	return arr;
}

static json_t *cell_to_json(const PGresult *res, int row, int col)
{
	const char *v;
	int len;
	tg_fixed f;
	struct tg_error e;

	if (PQgetisnull(res, row, col))
		return json_null();
	v = PQgetvalue(res, row, col);
	len = PQgetlength(res, row, col);
	switch (PQftype(res, col)) {
	case 16: /* bool */
		return json_boolean(v[0] == 't');
	case 20: case 21: case 23: { /* int8, int2, int4 */
		int64_t i = 0;
		tg_parse_i64(v, INT64_MIN, INT64_MAX, &i);
		return json_integer(i);
	}
	case 1700: /* numeric */
		if (tg_fixed_parse(v, (size_t)len, &f) == TG_FIXED_OK)
			return tg_json_fixed(f);
		return json_string(v);
	case 114: case 3802: { /* json, jsonb */
		json_t *j = tg_json_parse(v, (size_t)len, false, &e);
		return j ? j : json_null();
	}
	case 1009: case 1015: /* text[], varchar[] */
		return pg_array_to_json(v);
	default:
		return tg_json_str(v);
	}
}

static json_t *result_rows(const PGresult *res)
{
	int nrows = PQntuples(res), ncols = PQnfields(res);
	json_t *rows = json_array();

	for (int r = 0; r < nrows; r++) {
		json_t *o = json_object();
		for (int c = 0; c < ncols; c++)
			json_object_set_new(o, PQfname(res, c), cell_to_json(res, r, c));
		json_array_append_new(rows, o);
	}
	return rows;
}

/* The name a statement is prepared under on every connection. */
static const char *stmt_name(struct store_stmt *st, char name[16])
{
	snprintf(name, 16, "tg%d", stmt_id(st));
	return name;
}

static int ensure_prepared(struct conn_state *cs, struct store_stmt *st, struct tg_error *err)
{
	char name[16];
	int id;

	if (!st || st->replan)
		return 0;
	id = stmt_id(st);
	if (cs->prepared[id])
		return 0;
	stmt_name(st, name);
	_cleanup_pgresult_ PGresult *prep = PQprepare(cs->pg, name, st->sql, st->nparams, NULL);
	if (!prep || PQresultStatus(prep) != PGRES_COMMAND_OK)
		return result_error(cs, prep, err);
	cs->prepared[id] = 1;
	return 0;
}

/* Send one statement (prepared before) without waiting: in pipeline mode. */
static bool send_one(struct conn_state *cs, struct store_stmt *st, const char *sql, const char *const *params)
{
	char name[16];

	if (!st)
		return PQsendQueryParams(cs->pg, sql, 0, NULL, NULL, NULL, NULL, 0) == 1;
	if (st->replan)
		return PQsendQueryParams(cs->pg, st->sql, st->nparams, NULL, params, NULL, NULL, 0) == 1;
	return PQsendQueryPrepared(cs->pg, stmt_name(st, name), st->nparams, params, NULL, NULL, 0) == 1;
}

static bool result_ok(const PGresult *r)
{
	ExecStatusType s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
	return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

/*
 * The deferred statements, then (st or sql, params), in one pipeline: one round trip. Returns 0 and
 * the last statement's result in *last (which may be a failure of its own), or the error of the first
 * deferred statement that failed (the statements after it were not run).
 */
static int run_pipeline(struct conn_state *cs, struct store_stmt *st, const char *sql, const char *const *params,
			PGresult **last, struct tg_error *err)
{
	PGresult *bad = NULL, *r;
	int nq = cs->ndefer + 1, rc = 0;
	bool ok;

	*last = NULL;
	for (int i = 0; i < cs->ndefer && rc == 0; i++)
		rc = ensure_prepared(cs, cs->defer[i].st, err);
	if (rc == 0)
		rc = ensure_prepared(cs, st, err);
	if (rc < 0) {
		defer_clear(cs); /* the transaction failed (result_error marked it): nothing of it is sent */
		return rc;
	}
	ok = PQenterPipelineMode(cs->pg) == 1;
	for (int i = 0; ok && i < cs->ndefer; i++)
		ok = send_one(cs, cs->defer[i].st, cs->defer[i].sql, (const char *const *)cs->defer[i].params);
	ok = ok && send_one(cs, st, sql, params) && PQpipelineSync(cs->pg) == 1;
	defer_clear(cs);
	for (int q = 0; ok && q < nq; q++) {
		while ((r = PQgetResult(cs->pg))) {
			if (q == nq - 1 && !*last)
				*last = r;
			else if (!bad && !result_ok(r) && PQresultStatus(r) != PGRES_PIPELINE_ABORTED)
				bad = r;
			else
				PQclear(r);
		}
		if (PQstatus(cs->pg) != CONNECTION_OK)
			ok = false;
	}
	/* the sync point ends the pipeline */
	while (ok && (r = PQgetResult(cs->pg))) {
		ExecStatusType s = PQresultStatus(r);
		PQclear(r);
		if (s == PGRES_PIPELINE_SYNC)
			break;
	}
	if (!ok || PQexitPipelineMode(cs->pg) != 1) {
		PQclear(*last);
		*last = NULL;
		rc = result_error(cs, bad, err);
		PQclear(bad);
		conn_close(cs); /* a pipeline that went wrong leaves the connection in no known state */
		return rc;
	}
	if (bad) {
		PQclear(*last);
		*last = NULL;
		rc = result_error(cs, bad, err);
		PQclear(bad);
		return rc;
	}
	return 0;
}

/* The deferred statements, then one command without parameters, in one round trip. */
static int pipeline_cmd(struct conn_state *cs, const char *sql, struct tg_error *err)
{
	PGresult *res;
	int rc = run_pipeline(cs, NULL, sql, NULL, &res, err);

	if (rc < 0)
		return rc;
	rc = result_ok(res) ? 0 : result_error(cs, res, err);
	PQclear(res);
	return rc;
}

/*
 * Around a STORE_STMT_PROBE statement, in its pipeline: PostgreSQL plans a prepared statement at its Bind,
 * after the statements before it in the pipeline have run, so this one turns the scans off for that plan,
 * and the second puts back what they were (saved by the first: the subquery runs before the settings
 * change). Both transaction-local: outside a transaction the pipeline is one implicit transaction, which
 * ends at its sync point, and the second is not needed.
 */
static struct store_stmt q_scans_off = STORE_STMT(
	"SELECT set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true) "
	"FROM (SELECT set_config('tollgate.enable_seqscan', current_setting('enable_seqscan'), true), "
	"  set_config('tollgate.enable_bitmapscan', current_setting('enable_bitmapscan'), true) OFFSET 0) saved", 0);
static struct store_stmt q_scans_back = STORE_STMT(
	"SELECT set_config('enable_seqscan', current_setting('tollgate.enable_seqscan'), true), "
	"set_config('enable_bitmapscan', current_setting('tollgate.enable_bitmapscan'), true)", 0);

int store_exec(struct store_stmt *st, const char *const *params, json_t **rows, struct tg_error *err)
{
	struct conn_state *cs = conn_get(err);
	_cleanup_pgresult_ PGresult *res = NULL;
	char name[16];
	int rc;
	ExecStatusType status;

	if (rows)
		*rows = NULL;
	if (!cs)
		return err->err;
	if (st->probe)
		defer_push(cs, &q_scans_off, NULL, NULL);
	if (cs->ndefer > 0) {
		if ((rc = run_pipeline(cs, st, NULL, params, &res, err)) < 0)
			return rc;
	} else if (st->replan) {
		res = PQexecParams(cs->pg, st->sql, st->nparams, NULL, params, NULL, NULL, 0);
	} else {
		if ((rc = ensure_prepared(cs, st, err)) < 0)
			return rc;
		res = PQexecPrepared(cs->pg, stmt_name(st, name), st->nparams, params, NULL, NULL, 0);
	}
	status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
		return result_error(cs, res, err);
	cs->sqlstate[0] = '\0';
	cs->affected = 0;
	tg_parse_i64(PQcmdTuples(res), 0, INT64_MAX, &cs->affected);
	if (rows)
		*rows = result_rows(res);
	if (st->probe && cs->depth > 0)
		defer_push(cs, &q_scans_back, NULL, NULL); /* rides with the transaction's next statement */
	return 0;
}

int store_defer(struct store_stmt *st, const char *const *params, struct tg_error *err)
{
	struct conn_state *cs = tls;

	if (!cs || !cs->pg || cs->depth == 0 || cs->failed)
		return store_exec(st, params, NULL, err); /* outside a transaction: at once; failed: its error */
	if (st->probe)
		defer_push(cs, &q_scans_off, NULL, NULL);
	defer_push(cs, st, NULL, params);
	if (st->probe)
		defer_push(cs, &q_scans_back, NULL, NULL);
	return 0;
}

int store_exec1(struct store_stmt *st, const char *const *params, json_t **row, struct tg_error *err)
{
	json_t *rows;
	int rc = store_exec(st, params, &rows, err);

	*row = NULL;
	if (rc < 0)
		return rc;
	if (json_array_size(rows) > 0)
		*row = json_incref(json_array_get(rows, 0));
	json_decref(rows);
	return 0;
}

int store_updated(store_get_fn get, const char *tenant_id, const char *id, json_t **ret, bool *changed,
		  struct tg_error *err)
{
	*changed = *ret != NULL;
	return *ret ? 0 : get(tenant_id, id, ret, err);
}

int store_exec_raw(const char *sql, struct tg_error *err)
{
	struct conn_state *cs = conn_get(err);
	_cleanup_pgresult_ PGresult *res = NULL;
	ExecStatusType status;

	if (!cs)
		return err->err;
	/* a command string may hold several statements, which a pipeline cannot carry: flush first */
	if (cs->ndefer > 0) {
		int rc = pipeline_cmd(cs, "SELECT 1", err);
		if (rc < 0)
			return rc;
	}
	res = PQexec(cs->pg, sql);
	status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
		return result_error(cs, res, err);
	cs->sqlstate[0] = '\0';
	return 0;
}

/*
 * Transactions nest: a handler's store calls may open their own, and the
 * request wrapper (audit) opens one around them all. Only the outermost
 * BEGIN and COMMIT reach PostgreSQL; an inner rollback dooms the outer
 * transaction, whose COMMIT then rolls back and reports the failure.
 */
int store_begin(struct tg_error *err)
{
	struct conn_state *cs;

	if (tls && tls->depth > 0) {
		tls->depth++; /* a failed transaction too: its statements fail, its end is counted */
		return 0;
	}
	if (!(cs = conn_get(err)))
		return err->err;
	/* BEGIN goes out with the transaction's first statement: one round trip fewer */
	txn_reset(cs);
	defer_push(cs, NULL, "BEGIN", NULL);
	cs->depth = 1;
	return 0;
}

int store_commit(struct tg_error *err)
{
	int rc;

	if (!tls || tls->depth <= 0)
		return tg_fail(err, TG_EUNAVAIL, "database_unavailable", NULL, "the transaction was lost; retry");
	if (--tls->depth > 0) {
		if (!tls->failed)
			return 0;
		*err = tls->failed_err;
		return err->err;
	}
	if (tls->failed || tls->doomed) {
		bool failed = tls->failed;
		if (failed)
			*err = tls->failed_err;
		txn_abort(tls);
		return failed ? err->err
			      : tg_fail(err, TG_EUNAVAIL, "conflict_retry", NULL, "the change could not be completed; retry");
	}
	if (!tls->pg) {
		txn_reset(tls);
		return tg_fail(err, TG_EUNAVAIL, "database_unavailable", NULL, "the transaction was lost; retry");
	}
	if (tls->ndefer == 0)
		return store_exec_raw("COMMIT", err);
	/* what was deferred and the COMMIT: one round trip (depth is 0 now: errors end it here) */
	if ((rc = pipeline_cmd(tls, "COMMIT", err)) < 0)
		txn_abort(tls);
	return rc;
}

void store_rollback(void)
{
	if (!tls || tls->depth <= 0)
		return;
	if (tls->depth > 1) {
		tls->depth--;
		tls->doomed = true;
		return;
	}
	txn_abort(tls);
}

bool store_in_transaction(void)
{
	return tls && tls->depth > 0;
}

/* ---- parameters and rows ---- */

const char *store_i64(int64_t v, char *buf)
{
	tg_fmt_i64(v, buf); /* not snprintf: the writer formats several per event */
	return buf;
}

const char *store_fixed(tg_fixed v, char *buf)
{
	tg_fixed_format(v, buf);
	return buf;
}

const char *store_bool(bool v)
{
	return v ? "true" : "false";
}

const char *store_str(const json_t *row, const char *col)
{
	json_t *v = json_object_get(row, col);
	return json_is_string(v) && !tg_json_is_number(v) ? json_string_value(v) : NULL;
}

int64_t store_int(const json_t *row, const char *col, int64_t def)
{
	int64_t v;
	json_t *j = json_object_get(row, col);

	if (json_is_integer(j))
		return json_integer_value(j);
	return tg_json_get_i64(j, INT64_MIN, INT64_MAX, &v) ? v : def;
}

bool store_is_true(const json_t *row, const char *col)
{
	return json_is_true(json_object_get(row, col));
}

tg_fixed store_get_fixed(const json_t *row, const char *col, tg_fixed def)
{
	tg_fixed f;
	return tg_json_get_fixed(json_object_get(row, col), &f) == TG_FIXED_OK ? f : def;
}

tg_fixed store_get_usage(const json_t *row, const char *col)
{
	const json_t *v = json_object_get(row, col);
	const char *text = json_is_string(v) ? json_string_value(v) : NULL;
	tg_fixed f;

	if (tg_json_get_fixed(v, &f) == TG_FIXED_OK)
		return f;
	/* a numeric past the largest quantity comes as its text (see cell_to_json) */
	if (text && tg_fixed_parse_cstr(text, &f) == TG_FIXED_ERANGE)
		return text[0] == '-' ? -TG_FIXED_MAX : TG_FIXED_MAX;
	return 0;
}

/* ---- migrations ---- */

static struct store_stmt q_mig_applied = STORE_STMT("SELECT 1 FROM schema_migrations WHERE version = $1", 1);
static struct store_stmt q_mig_record = STORE_STMT("INSERT INTO schema_migrations (version) VALUES ($1)", 1);

static struct store_stmt q_lock_session = STORE_STMT("SELECT pg_advisory_lock($1::bigint)", 1);
static struct store_stmt q_unlock_session = STORE_STMT("SELECT pg_advisory_unlock($1::bigint)", 1);

int store_lock_session(int64_t key, struct tg_error *err)
{
	char b[STORE_I64_BUFSZ];
	const char *p[] = {store_i64(key, b)};
	int rc = store_exec(&q_lock_session, p, NULL, err);

	if (rc == 0)
		tls->pinned = true;
	return rc;
}

void store_unlock_session(int64_t key)
{
	char b[STORE_I64_BUFSZ];
	const char *p[] = {store_i64(key, b)};
	struct tg_error e;

	if (!tls || !tls->pinned)
		return;
	if (tls->pg)
		store_exec(&q_unlock_session, p, NULL, &e); /* a lost connection took the lock along already */
	tls->pinned = false;
}

int store_migrate(struct tg_error *err)
{
	int rc;

	/* one instance migrates at a time; the others wait here, then find nothing to do */
	rc = store_lock_session(7428700101, err);
	if (rc == 0)
		rc = store_exec_raw("CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, "
				    "applied_at timestamptz NOT NULL DEFAULT now())",
				    err);
	for (size_t i = 0; rc == 0 && i < store_migrations_count; i++) {
		const struct tg_embedded *m = &store_migrations[i];
		char version[5];
		const char *params[1] = {version};
		json_t *row;

		memcpy(version, m->name, 4);
		version[4] = '\0';
		if ((rc = store_exec1(&q_mig_applied, params, &row, err)) < 0)
			break;
		if (row) {
			json_decref(row);
			continue;
		}
		rc = store_begin(err);
		if (rc == 0)
			rc = store_exec_raw(m->text, err);
		if (rc == 0)
			rc = store_exec(&q_mig_record, params, NULL, err);
		if (rc == 0)
			rc = store_commit(err);
		if (rc < 0) {
			char detail[sizeof(err->detail)];
			store_rollback();
			snprintf(detail, sizeof(detail), "%s", err->detail);
			tg_error_detail(err, "migration %s failed: %s", m->name, detail);
			break;
		}
		log_info("migration applied", "%s", m->name);
	}
	store_unlock_session(7428700101);
	return rc;
}

/* ---- LISTEN/NOTIFY ---- */

struct store_listener {
	PGconn *pg;
};

struct store_listener *store_listen(const char *const *channels, struct tg_error *err)
{
	struct store_listener *l;
	PGconn *pg = connect_db(err);

	if (!pg)
		return NULL;
	for (; *channels; channels++) {
		char sql[128];
		snprintf(sql, sizeof(sql), "LISTEN %s", *channels); /* channel names are our constants */
		PGresult *res = PQexec(pg, sql);
		bool ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
		if (res)
			PQclear(res);
		if (!ok) {
			count_error(m_conn_errors);
			tg_fail(err, TG_EUNAVAIL, "database_unavailable", NULL, "LISTEN failed");
			tg_error_detail(err, "%s", PQerrorMessage(pg));
			PQfinish(pg);
			return NULL;
		}
	}
	l = tg_calloc(1, sizeof(*l));
	l->pg = pg;
	return l;
}

int store_listen_wait(struct store_listener *l, int timeout_ms,
		      void (*fn)(void *arg, const char *channel, const char *payload), void *arg)
{
	struct pollfd pfd = {.fd = PQsocket(l->pg), .events = POLLIN};
	PGnotify *n;

	if (pfd.fd < 0 || PQstatus(l->pg) != CONNECTION_OK)
		goto lost;
	if (poll(&pfd, 1, timeout_ms) < 0 && errno != EINTR)
		goto lost;
	if (!PQconsumeInput(l->pg))
		goto lost;
	while ((n = PQnotifies(l->pg))) {
		fn(arg, n->relname, n->extra);
		PQfreemem(n);
	}
	if (PQstatus(l->pg) == CONNECTION_OK)
		return 0;
lost:
	count_error(m_conn_errors);
	return -1;
}

void store_listener_free(struct store_listener *l)
{
	if (!l)
		return;
	PQfinish(l->pg);
	free(l);
}

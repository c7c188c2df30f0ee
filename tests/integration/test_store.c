/* test_store.c — the store layer against the real PostgreSQL of scripts/test: statements deferred to
 * ride with the next one (libpq pipeline mode) and the deferred BEGIN of every transaction. Each case
 * works in a table of its own process, so suites running in parallel do not meet. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "tollgate/store.h"

static char table[64];
static struct store_stmt q_insert, q_count, q_bad;
static char sql_insert[160], sql_count[160], sql_bad[160];

static void setup(void)
{
	struct tg_error err;
	char sql[256];

	ck_assert_msg(getenv("TOLLGATE_DATABASE_URL"), "TOLLGATE_DATABASE_URL is not set (run through scripts/test)");
	store_init(getenv("TOLLGATE_DATABASE_URL"));
	/* the schema of this build (a server started by another suite may not have got to it yet) */
	ck_assert_msg(store_migrate(&err) == 0, "migrations: %s", err.detail);
	snprintf(table, sizeof(table), "tg_store_test_%d", (int)getpid());
	snprintf(sql, sizeof(sql), "CREATE TABLE IF NOT EXISTS %s (v integer NOT NULL CHECK (v >= 0))", table);
	ck_assert_int_eq(store_exec_raw(sql, &err), 0);
	snprintf(sql, sizeof(sql), "TRUNCATE %s", table);
	ck_assert_int_eq(store_exec_raw(sql, &err), 0);
	snprintf(sql_insert, sizeof(sql_insert), "INSERT INTO %s (v) VALUES ($1::integer)", table);
	snprintf(sql_count, sizeof(sql_count), "SELECT count(*) AS n, coalesce(sum(v), 0) AS s FROM %s", table);
	snprintf(sql_bad, sizeof(sql_bad), "INSERT INTO %s (v) VALUES (-1)", table); /* violates the CHECK */
	q_insert = (struct store_stmt)STORE_STMT(sql_insert, 1);
	q_count = (struct store_stmt)STORE_STMT(sql_count, 0);
	q_bad = (struct store_stmt)STORE_STMT(sql_bad, 0);
}

static void teardown(void)
{
	struct tg_error err;
	char sql[128];

	store_rollback();
	snprintf(sql, sizeof(sql), "DROP TABLE IF EXISTS %s", table);
	store_exec_raw(sql, &err);
	store_thread_end();
}

/* rows and their sum, read on this thread's connection */
static void counted(long long *n, long long *sum)
{
	struct tg_error err;
	json_t *row;

	ck_assert_int_eq(store_exec1(&q_count, NULL, &row, &err), 0);
	*n = store_int(row, "n", -1);
	*sum = store_int(row, "s", -1);
	json_decref(row);
}

static void defer_insert(int v)
{
	struct tg_error err;
	char b[STORE_I64_BUFSZ];
	const char *p[] = {store_i64(v, b)};

	ck_assert_int_eq(store_defer(&q_insert, p, &err), 0);
}

/* A text array built by store_array_add reaches PostgreSQL element for element: quotes, backslashes,
 * commas, braces, spaces, "NULL" as text, an empty string, a real NULL, and runs between them. */
START_TEST(array_literal_round_trips)
{
	static struct store_stmt q_unnest = STORE_STMT(
		"SELECT ord::int AS i, v, v IS NULL AS isnull FROM unnest($1::text[]) WITH ORDINALITY AS u(v, ord) ORDER BY ord", 1);
	static const char *const vals[] = {"plain", "a\"b", "back\\slash", "\\\"\\\\\"", "with, comma", "{brace}",
					   "  spaced  ", "NULL", "", "ünïcode ✓", "end\"", "\"start", NULL, "x"};
	const size_t n = sizeof(vals) / sizeof(vals[0]);
	struct store_array arr = {0};
	struct tg_error err;
	json_t *rows = NULL;

	for (size_t i = 0; i < n; i++)
		store_array_add(&arr, vals[i]);
	const char *p[] = {store_array_text(&arr)};
	ck_assert_int_eq(store_exec(&q_unnest, p, &rows, &err), 0);
	store_array_release(&arr);
	ck_assert_int_eq(json_array_size(rows), n);
	for (size_t i = 0; i < n; i++) {
		json_t *row = json_array_get(rows, i);
		const char *v = json_string_value(json_object_get(row, "v"));
		if (!vals[i])
			ck_assert_msg(!v, "element %zu: NULL came back as '%s'", i, v);
		else
			ck_assert_msg(v && strcmp(v, vals[i]) == 0, "element %zu: '%s' came back as '%s'", i, vals[i],
				      v ? v : "(null)");
	}
	json_decref(rows);
}
END_TEST

START_TEST(deferred_run_in_order_before_the_next_statement)
{
	struct tg_error err;
	long long n, sum;

	ck_assert_int_eq(store_begin(&err), 0);
	defer_insert(1);
	defer_insert(2);
	counted(&n, &sum); /* rides with both inserts, after them */
	ck_assert_int_eq(n, 2);
	ck_assert_int_eq(sum, 3);
	defer_insert(4);
	ck_assert_int_eq(store_commit(&err), 0); /* rides with the COMMIT */
	counted(&n, &sum);
	ck_assert_int_eq(n, 3);
	ck_assert_int_eq(sum, 7);
	ck_assert(!store_in_transaction());
}
END_TEST

START_TEST(deferred_error_reported_by_the_next_statement)
{
	struct tg_error err;
	long long n, sum;

	ck_assert_int_eq(store_begin(&err), 0);
	defer_insert(5);
	ck_assert_int_eq(store_defer(&q_bad, NULL, &err), 0);
	defer_insert(6);
	json_t *row = NULL;
	ck_assert_int_lt(store_exec1(&q_count, NULL, &row, &err), 0);
	ck_assert_ptr_null(row);
	ck_assert_str_eq(store_last_sqlstate(), "23514"); /* the CHECK, not "aborted" */
	store_rollback();
	/* nothing of it stayed, and the connection serves the next transaction */
	counted(&n, &sum);
	ck_assert_int_eq(n, 0);
	ck_assert_int_eq(store_begin(&err), 0);
	defer_insert(7);
	ck_assert_int_eq(store_commit(&err), 0);
	counted(&n, &sum);
	ck_assert_int_eq(n, 1);
	ck_assert_int_eq(sum, 7);
}
END_TEST

START_TEST(deferred_error_reported_by_commit)
{
	struct tg_error err;
	long long n, sum;

	ck_assert_int_eq(store_begin(&err), 0);
	defer_insert(8);
	counted(&n, &sum);
	ck_assert_int_eq(n, 1);
	ck_assert_int_eq(store_defer(&q_bad, NULL, &err), 0);
	ck_assert_int_lt(store_commit(&err), 0);
	ck_assert(!store_in_transaction());
	counted(&n, &sum); /* the whole transaction rolled back, the 8 too */
	ck_assert_int_eq(n, 0);
}
END_TEST

START_TEST(rollback_drops_what_was_never_sent)
{
	struct tg_error err;
	long long n, sum;

	ck_assert_int_eq(store_begin(&err), 0); /* its BEGIN is deferred too */
	defer_insert(9);
	store_rollback();
	counted(&n, &sum);
	ck_assert_int_eq(n, 0);
	/* a raw command string (several statements) after deferred ones: they go first */
	ck_assert_int_eq(store_begin(&err), 0);
	defer_insert(10);
	ck_assert_int_eq(store_exec_raw("SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off", &err), 0);
	defer_insert(11);
	ck_assert_int_eq(store_commit(&err), 0);
	counted(&n, &sum);
	ck_assert_int_eq(n, 2);
	ck_assert_int_eq(sum, 21);
	/* outside a transaction a deferred statement runs at once */
	defer_insert(12);
	counted(&n, &sum);
	ck_assert_int_eq(n, 3);
}
END_TEST

START_TEST(nested_transactions_keep_one_begin)
{
	struct tg_error err;
	long long n, sum;

	ck_assert_int_eq(store_begin(&err), 0);
	ck_assert_int_eq(store_begin(&err), 0);
	defer_insert(13);
	ck_assert_int_eq(store_commit(&err), 0); /* inner: nothing reaches PostgreSQL yet */
	ck_assert(store_in_transaction());
	defer_insert(14);
	ck_assert_int_eq(store_commit(&err), 0);
	counted(&n, &sum);
	ck_assert_int_eq(n, 2);
	ck_assert_int_eq(sum, 27);
	/* an inner rollback dooms the outer transaction, deferred statements included */
	ck_assert_int_eq(store_begin(&err), 0);
	defer_insert(15);
	ck_assert_int_eq(store_begin(&err), 0);
	store_rollback();
	ck_assert_int_lt(store_commit(&err), 0);
	counted(&n, &sum);
	ck_assert_int_eq(n, 2);
}
END_TEST

/* A statement that fails before anything of the transaction left (its BEGIN is deferred): the rest of
 * the transaction must not run in autocommit. */
START_TEST(failed_transaction_refuses_the_rest)
{
	static struct store_stmt q_typo = STORE_STMT("SELEC 1", 0);
	struct tg_error err;
	long long n, sum;

	ck_assert_int_eq(store_begin(&err), 0);
	ck_assert_int_lt(store_exec(&q_typo, NULL, NULL, &err), 0); /* fails while being prepared */
	char b[STORE_I64_BUFSZ];
	const char *p[] = {store_i64(16, b)};
	ck_assert_int_lt(store_exec(&q_insert, p, NULL, &err), 0);
	ck_assert_int_lt(store_defer(&q_insert, p, &err), 0);
	ck_assert_int_lt(store_commit(&err), 0);
	ck_assert(!store_in_transaction());
	counted(&n, &sum);
	ck_assert_int_eq(n, 0);
	/* nested: the inner commit reports the failure too, the outer one ends it */
	ck_assert_int_eq(store_begin(&err), 0);
	ck_assert_int_lt(store_exec(&q_bad, NULL, NULL, &err), 0);
	ck_assert_int_eq(store_begin(&err), 0);
	ck_assert_int_lt(store_commit(&err), 0);
	ck_assert(store_in_transaction());
	store_rollback();
	ck_assert(!store_in_transaction());
	counted(&n, &sum);
	ck_assert_int_eq(n, 0);
}
END_TEST

struct killer {
	long long pid;
	int rc;
};

static void *kill_backend(void *arg)
{
	struct killer *k = arg;
	static struct store_stmt q_kill = STORE_STMT("SELECT pg_terminate_backend($1::integer)", 1);
	struct tg_error err;
	char b[STORE_I64_BUFSZ];
	const char *p[] = {store_i64(k->pid, b)};

	k->rc = store_exec(&q_kill, p, NULL, &err);
	store_thread_end();
	return NULL;
}

/* This thread's backend is terminated (a restart, a failover), and the end reaches this side. */
static void kill_my_backend(void)
{
	static struct store_stmt q_pid = STORE_STMT("SELECT pg_backend_pid() AS pid", 0);
	struct tg_error err;
	struct killer k = {0};
	pthread_t th;
	json_t *row;

	ck_assert_int_eq(store_exec1(&q_pid, NULL, &row, &err), 0);
	k.pid = store_int(row, "pid", 0);
	json_decref(row);
	ck_assert(pthread_create(&th, NULL, kill_backend, &k) == 0);
	pthread_join(th, NULL);
	ck_assert_int_eq(k.rc, 0);
	usleep(100 * 1000);
}

/* The connection dies under an open transaction: the rest of the transaction fails instead of running
 * on a new connection in autocommit; the next transaction reconnects. */
START_TEST(lost_connection_fails_the_transaction)
{
	struct tg_error err;
	json_t *row;
	long long n, sum;

	ck_assert_int_eq(store_begin(&err), 0);
	defer_insert(17);
	kill_my_backend(); /* its statement takes BEGIN and the insert along: the transaction is open */

	ck_assert_int_lt(store_exec1(&q_count, NULL, &row, &err), 0);
	char b[STORE_I64_BUFSZ];
	const char *p[] = {store_i64(18, b)};
	ck_assert_int_lt(store_exec(&q_insert, p, NULL, &err), 0); /* no new connection inside the transaction */
	ck_assert_int_lt(store_commit(&err), 0);
	counted(&n, &sum); /* a new connection, a new transaction */
	ck_assert_int_eq(n, 0);
	ck_assert_int_eq(store_begin(&err), 0);
	defer_insert(19);
	ck_assert_int_eq(store_commit(&err), 0);
	counted(&n, &sum);
	ck_assert_int_eq(n, 1);
	ck_assert_int_eq(sum, 19);
}
END_TEST

/* The connection dies just before the COMMIT of a transaction: the COMMIT fails. On a new connection it
 * would "succeed" with nothing to commit, and the caller would take the lost changes for committed. */
START_TEST(lost_connection_fails_the_commit)
{
	struct tg_error err;
	long long n, sum;

	ck_assert_int_eq(store_begin(&err), 0);
	defer_insert(20);
	kill_my_backend(); /* nothing is deferred now: the COMMIT goes out on its own */
	ck_assert_int_lt(store_commit(&err), 0);
	ck_assert(!store_in_transaction());
	counted(&n, &sum);
	ck_assert_int_eq(n, 0);
}
END_TEST

/* The connection died while idle (between transactions): found before anything is sent, so the next
 * transaction and the next single statement run on a fresh connection instead of failing. */
START_TEST(connection_closed_while_idle_is_replaced)
{
	struct tg_error err;
	long long n, sum;

	kill_my_backend();
	ck_assert_int_eq(store_begin(&err), 0);
	defer_insert(21);
	ck_assert_msg(store_commit(&err) == 0, "the first transaction after the kill: %s", err.detail);
	counted(&n, &sum);
	ck_assert_int_eq(n, 1);
	ck_assert_int_eq(sum, 21);
	kill_my_backend();
	ck_assert_msg(store_ping(&err), "the first statement after the kill: %s", err.detail);
}
END_TEST

/* Under a session lock the connection is never swapped: its loss fails the statements (a fresh connection
 * would not hold the lock, and another instance could take it meanwhile); once unlocked, a fresh one. */
START_TEST(connection_lost_under_a_session_lock_fails)
{
	struct tg_error err;

	ck_assert_int_eq(store_lock_session(4242, &err), 0);
	kill_my_backend();
	ck_assert_msg(!store_ping(&err), "a statement ran on a fresh connection without the lock");
	ck_assert_int_eq(err.err, TG_EUNAVAIL);
	ck_assert(!store_ping(&err)); /* and goes on failing */
	store_unlock_session(4242);
	ck_assert_msg(store_ping(&err), "after the unlock: %s", err.detail);
	/* the lock went with the connection: another session takes it at once */
	ck_assert_int_eq(psql_ll("SELECT pg_try_advisory_lock(4242)::int"), 1);
}
END_TEST

/* A schema of this process's own, first on the search path, with a customers table like the real one that
 * autovacuum leaves alone (never analysed unless the test does it), holding customers u_1 to u_n of tenant. */
static void customers_schema(char schema[64], const char *name, const char *tenant, int n)
{
	struct tg_error err;
	char sql[1024];

	snprintf(schema, 64, "tg_%s_%d", name, (int)getpid());
	snprintf(sql, sizeof(sql),
		 "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s; "
		 "CREATE TABLE %s.customers (LIKE public.customers INCLUDING ALL) WITH (autovacuum_enabled = false); "
		 "INSERT INTO %s.customers (tenant_id, id) SELECT '%s', 'u_' || g FROM generate_series(1, %d) g; "
		 "SET search_path TO %s, public",
		 schema, schema, schema, schema, tenant, n, schema);
	ck_assert_int_eq(store_exec_raw(sql, &err), 0);
}

static void customers_schema_drop(const char *schema)
{
	struct tg_error err;
	char sql[128];

	snprintf(sql, sizeof(sql), "RESET search_path; DROP SCHEMA %s CASCADE", schema);
	ck_assert_int_eq(store_exec_raw(sql, &err), 0);
}

/* A writer batch's worth of customers, spread over u_1 to u_10000: u_1, u_312, u_623, ... */
static void batch_ids(char ids[512])
{
	strcpy(ids, "{");
	for (int i = 0; i < 32; i++)
		snprintf(ids + strlen(ids), 512 - strlen(ids), "%su_%d", i ? "," : "", 1 + i * 311);
	strcat(ids, "}");
}

/* The event writer reads a batch's customers with one primary-key probe each, even for a tenant whose
 * 10,000 customers were just created and never analysed: planned from guesses, the earlier form of the
 * statement scanned every customer of the tenant for each batch. The schema is the test's own, its
 * table never analysed (autovacuum off), so the planner has only guesses here too. */
START_TEST(writer_probes_each_customer_without_statistics)
{
	struct store_stmt *q = store_writer_customers_stmt();
	struct tg_error err;
	char schema[64], ids[512], *explain;
	json_t *rows;

	customers_schema(schema, "plan_test", "ten_plan", 10000);
	ck_assert(asprintf(&explain, "EXPLAIN (FORMAT JSON) %s", q->sql) > 0);
	struct store_stmt ex = STORE_STMT_REPLAN(explain, q->nparams);
	batch_ids(ids); /* (a handful plans well either way) */
	const char *p[] = {"ten_plan", ids};
	ck_assert_int_eq(store_exec(&ex, p, &rows, &err), 0);
	char *plan = json_dumps(rows, 0);
	ck_assert_ptr_nonnull(strstr(plan, "customers_pkey"));
	ck_assert_msg(!strstr(plan, "Seq Scan") && !strstr(plan, "Bitmap Heap Scan"), "scans customers: %s", plan);
	/* and it finds them */
	json_decref(rows);
	ck_assert_int_eq(store_exec(q, p, &rows, &err), 0);
	ck_assert_int_eq(json_array_size(rows), 32);
	free(plan);
	free(explain);
	json_decref(rows);
	customers_schema_drop(schema);
}
END_TEST

#define SCAN_SETTINGS "SELECT current_setting('enable_seqscan') AS seq, current_setting('enable_bitmapscan') AS bitmap"

/* Run st (one row of SCAN_SETTINGS) and compare. */
static void ck_scan_settings(struct store_stmt *st, const char *seq, const char *bitmap)
{
	struct tg_error err;
	json_t *row;

	ck_assert_msg(store_exec1(st, NULL, &row, &err) == 0, "%s", err.detail);
	ck_assert_ptr_nonnull(row);
	ck_assert_str_eq(store_str(row, "seq"), seq);
	ck_assert_str_eq(store_str(row, "bitmap"), bitmap);
	json_decref(row);
}

/* A STORE_STMT_PROBE statement runs (so is planned) with sequential and bitmap scans off, and the statements
 * after it see the settings as they were: outside a transaction, inside one (run or deferred), and inside one
 * that turned a setting off itself (as the webhook claim does). */
START_TEST(probe_statements_leave_the_scan_settings)
{
	static struct store_stmt q_probe = STORE_STMT_PROBE(SCAN_SETTINGS, 0);
	static struct store_stmt q_show = STORE_STMT(SCAN_SETTINGS, 0);
	static struct store_stmt q_seq_off = STORE_STMT("SELECT set_config('enable_seqscan', 'off', true)", 0);
	struct tg_error err;

	ck_scan_settings(&q_probe, "off", "off");
	ck_scan_settings(&q_show, "on", "on");

	ck_assert_int_eq(store_begin(&err), 0);
	ck_scan_settings(&q_probe, "off", "off");
	ck_scan_settings(&q_show, "on", "on");
	ck_assert_int_eq(store_defer(&q_probe, NULL, &err), 0);
	ck_scan_settings(&q_show, "on", "on");
	ck_assert_int_eq(store_defer(&q_probe, NULL, &err), 0);
	ck_assert_int_eq(store_commit(&err), 0); /* with the probe and what follows it */

	ck_assert_int_eq(store_begin(&err), 0);
	ck_assert_int_eq(store_defer(&q_seq_off, NULL, &err), 0);
	ck_scan_settings(&q_probe, "off", "off");
	ck_scan_settings(&q_show, "off", "on");
	ck_assert_int_eq(store_commit(&err), 0);
	ck_scan_settings(&q_show, "on", "on");
}
END_TEST

/* Scans of this schema's customers in the open transaction, counted by PostgreSQL. */
static void customers_scans(long long *seq, long long *seq_rows, long long *idx)
{
	static struct store_stmt q_scans = STORE_STMT(
		"SELECT seq_scan, seq_tup_read, idx_scan FROM pg_stat_xact_user_tables WHERE relid = 'customers'::regclass", 0);
	struct tg_error err;
	json_t *row;

	ck_assert_int_eq(store_exec1(&q_scans, NULL, &row, &err), 0);
	ck_assert_ptr_nonnull(row);
	*seq = store_int(row, "seq_scan", -1);
	*seq_rows = store_int(row, "seq_tup_read", -1);
	*idx = store_int(row, "idx_scan", -1);
	json_decref(row);
}

/* The same lookup when the writer's first batches ran while customers was small. After five executions of a
 * prepared statement PostgreSQL caches a generic plan, and keeps it until something invalidates it (autovacuum's
 * next ANALYZE of the table, a minute or more later). Made while the table was a page, that plan scanned the
 * table for each id; a tenant then creating 10,000 customers in bulk had every batch read the whole table twice
 * per customer (300 ms to seconds a batch of 100: every request timed out). Here the table holds five rows,
 * analysed, during the first batches; then 9,995 more arrive, never analysed; then a batch must still read only
 * the customers it names. PostgreSQL's scan counters of the transaction tell, whatever the way the plan was made
 * (and pg_stat_xact_* counts are the backend's own, so other suites running meanwhile do not change them). */
START_TEST(writer_probes_each_customer_planned_while_few)
{
	static struct store_stmt q_generic = STORE_STMT(
		"SELECT generic_plans FROM pg_prepared_statements WHERE statement = $1", 1);
	struct store_stmt *q = store_writer_customers_stmt();
	struct tg_error err;
	char schema[64], ids[512];
	long long seq0, rows0, idx0, seq1, rows1, idx1;
	json_t *rows, *row;

	customers_schema(schema, "plan_few", "ten_few", 5);
	ck_assert_int_eq(store_exec_raw("ANALYZE customers", &err), 0);
	batch_ids(ids);
	const char *p[] = {"ten_few", ids};

	/* the first batches: of their customers only u_1 is there yet */
	for (int i = 0; i < 8; i++) {
		ck_assert_int_eq(store_exec(q, p, &rows, &err), 0);
		ck_assert_int_eq(json_array_size(rows), 1);
		json_decref(rows);
	}
	/* (a prepared statement now has its generic plan: else this test would prove nothing) */
	const char *g[] = {q->sql};
	ck_assert_int_eq(store_exec1(&q_generic, g, &row, &err), 0);
	if (row)
		ck_assert_int_ge(store_int(row, "generic_plans", 0), 1);
	json_decref(row);

	/* then the others are created at once, and the next batch names 32 of them */
	ck_assert_int_eq(store_exec_raw("INSERT INTO customers (tenant_id, id) "
					"SELECT 'ten_few', 'u_' || g FROM generate_series(6, 10000) g", &err), 0);
	ck_assert_int_eq(store_begin(&err), 0);
	customers_scans(&seq0, &rows0, &idx0);
	ck_assert_int_eq(store_exec(q, p, &rows, &err), 0);
	ck_assert_int_eq(json_array_size(rows), 32);
	json_decref(rows);
	customers_scans(&seq1, &rows1, &idx1);
	ck_assert_int_eq(store_commit(&err), 0);
	ck_assert_msg(seq1 == seq0, "the batch scanned customers %lld times, reading %lld rows", seq1 - seq0,
		      rows1 - rows0);
	ck_assert_int_ge(idx1 - idx0, 32);
	customers_schema_drop(schema);
}
END_TEST

/* tg_ms (migration 0011) and tg_us (0012, the events list's cursor): milliseconds and microseconds since the
 * epoch to timestamptz and back, exactly, also far from now (test clocks may be pushed centuries ahead). The
 * earlier forms, to_timestamp(ms / 1000.0) and to_timestamp(us / 1000000.0), were off there: by 8 µs for five
 * of these milliseconds, and for 7 of these 16 microseconds. */
START_TEST(tg_ms_and_tg_us_are_exact)
{
	static struct store_stmt q = STORE_STMT(
		"SELECT (SELECT count(*) FILTER (WHERE extract(epoch FROM tg_ms(t)) * 1000 <> t) FROM unnest($1::bigint[]) t) "
		"         AS bad_ms, "
		"       (SELECT count(*) FILTER (WHERE extract(epoch FROM tg_us(t)) * 1000000 <> t) "
		"          FROM unnest($2::bigint[]) t) AS bad_us, "
		"       cardinality($1::bigint[]) AS n_ms, cardinality($2::bigint[]) AS n_us", 2);
	struct tg_error err;
	json_t *row;
	/* around the epoch, now, an hour boundary, the years 9999, 5000 and -4000 (the last millisecond of an
	 * hour must stay in that hour), and 3000 */
	const char *p[] = {"{0,1,-1,999,-999,1000,-1001,1732280000123,1732280399999,1732280400000,"
			   "253402300799999,253402297200000,253402297199999,-188395689600001,-188395689599999,"
			   "95617584000007}",
			   "{0,1,-1,999999,-999999,1000000,-1000001,1732280000123456,1732280399999999,"
			   "253402300799999999,95617584000007123,95617584000007001,95617584000006999,"
			   "-188395689600000001,-188395689599999999,32503680000000007}"};

	ck_assert_int_eq(store_exec1(&q, p, &row, &err), 0);
	ck_assert_int_eq(store_int(row, "n_ms", 0), 16);
	ck_assert_int_eq(store_int(row, "n_us", 0), 16);
	ck_assert_int_eq(store_int(row, "bad_ms", -1), 0);
	ck_assert_int_eq(store_int(row, "bad_us", -1), 0);
	json_decref(row);
}
END_TEST

/* ---- a period's usage: days plus open hours (migrations 0013, 0014) ---- */

/* The reference: aggregate of the hourly rollups alone, per subject, of schema-local tables. */
static struct store_stmt q_hours_only = STORE_STMT(
	"SELECT subject, CASE WHEN $6::int = 2 THEN max(value) WHEN $6::int = 3 "
	"  THEN (array_agg(value ORDER BY last_ts DESC))[1] ELSE sum(value) END AS value "
	"FROM usage_rollups WHERE tenant_id = $1 AND meter_id = $2 AND hour >= tg_ms($3::bigint) "
	"AND hour < tg_ms($4::bigint) AND dims @> $5::jsonb GROUP BY subject ORDER BY subject", 6);

/* The reference series: buckets of the hourly rollups alone. */
static struct store_stmt q_series_hours = STORE_STMT(
	"SELECT extract(epoch FROM b)::bigint AS start, CASE WHEN $8::int = 2 THEN max(value) WHEN $8::int = 3 "
	"  THEN (array_agg(value ORDER BY last_ts DESC))[1] ELSE sum(value) END AS value, gdims::text AS dims "
	"FROM (SELECT date_trunc($4, hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS b, value, last_ts, "
	"  (SELECT COALESCE(jsonb_object_agg(key, value), '{}'::jsonb) FROM jsonb_each(dims) WHERE key = ANY($7::text[])) "
	"  AS gdims FROM usage_rollups WHERE tenant_id = $1 AND subject = $2 AND meter_id = $3 "
	"  AND hour >= tg_ms($5::bigint) AND hour < tg_ms($6::bigint)) AS x GROUP BY b, gdims ORDER BY b, gdims::text", 8);

/* store_usage_series of u_1 equals the reference, bucket by bucket. */
static void ck_series(const char *meter, int agg, const char *grain, int64_t from, int64_t to)
{
	struct tg_error err;
	char fb[STORE_I64_BUFSZ], tb[STORE_I64_BUFSZ], ab[STORE_I64_BUFSZ];
	const char *p[] = {"ten_days", "u_1", meter, grain, store_i64(from, fb), store_i64(to, tb), "{model}", store_i64(agg, ab)};
	json_t *want, *got, *w;
	size_t i;

	ck_assert_int_eq(store_exec(&q_series_hours, p, &want, &err), 0);
	ck_assert_int_eq(store_usage_series("ten_days", "u_1", meter, grain, from, to, "{model}", agg, &got, &err), 0);
	ck_assert_msg(json_array_size(got) == json_array_size(want) && json_array_size(want) > 0,
		      "%s by %s: %zu buckets, the hours make %zu", meter, grain, json_array_size(got), json_array_size(want));
	json_array_foreach(want, i, w) {
		json_t *g = json_array_get(got, i);
		char *gd = json_dumps(json_object_get(g, "dimensions"), JSON_COMPACT | JSON_SORT_KEYS);
		json_t *wd = json_loads(store_str(w, "dims"), 0, NULL);
		char *wds = json_dumps(wd, JSON_COMPACT | JSON_SORT_KEYS);
		ck_assert_msg(time_parse(store_str(g, "start")) == store_int(w, "start", -1) && strcmp(gd, wds) == 0 &&
				      store_get_fixed(g, "value", -1) == store_get_fixed(w, "value", -2),
			      "%s by %s, bucket %zu: %s %s %lld, the hours say %lld %s %lld", meter, grain, i,
			      store_str(g, "start"), gd, (long long)store_get_fixed(g, "value", -1),
			      (long long)store_int(w, "start", -1), wds, (long long)store_get_fixed(w, "value", -2));
		free(gd);
		free(wds);
		json_decref(wd);
	}
	json_decref(want);
	json_decref(got);
}

/* Each subject's usage in [from, to) read as the server reads it equals the hours' own, for every aggregation,
 * with and without a filter; store_usage_value agrees for a few subjects. Returns how many subjects had usage. */
static size_t ck_period_reads(int64_t from, int64_t to)
{
	static const char *const filters[] = {"{}", "{\"model\":\"gpt-4\"}"};
	static const char *const meters[] = {"tokens", "calls", "peak", "last"}; /* aggregation 0, 1, 2, 3 */
	struct tg_error err;
	size_t subjects = 0;

	for (int agg = 0; agg <= 3; agg++) {
		const char *meter = meters[agg];
		for (int f = 0; f < 2; f++) {
			char fb[STORE_I64_BUFSZ], tb[STORE_I64_BUFSZ], ab[STORE_I64_BUFSZ];
			const char *p[] = {"ten_days", meter, store_i64(from, fb), store_i64(to, tb), filters[f],
					   store_i64(agg, ab)};
			json_t *want, *got, *w;
			size_t i;
			ck_assert_int_eq(store_exec(&q_hours_only, p, &want, &err), 0);
			ck_assert_int_eq(store_usage_by_subject("ten_days", meter, from, to, filters[f], agg, &got, &err), 0);
			ck_assert_int_eq(json_array_size(got), json_array_size(want));
			json_array_foreach(want, i, w) {
				const char *subject = store_str(w, "subject");
				tg_fixed v = store_get_fixed(w, "value", -1), g = -2, one;
				json_t *x;
				size_t k;
				json_array_foreach(got, k, x)
					if (strcmp(store_str(x, "subject"), subject) == 0)
						g = store_get_fixed(x, "value", -1);
				ck_assert_msg(g == v, "%s, %s, filter %s, [%lld, %lld): read %lld, the hours say %lld",
					      subject, meter, filters[f], (long long)from, (long long)to, (long long)g, (long long)v);
				ck_assert_int_eq(store_usage_value("ten_days", subject, meter, from, to, filters[f], agg, &one,
								   &err), 0);
				ck_assert_msg(one == v, "store_usage_value %s, %s: %lld, the hours say %lld", subject, meter,
					      (long long)one, (long long)v);
				if (i > 3) /* a few subjects through store_usage_value are enough */
					break;
			}
			if (f == 0) {
				subjects = json_array_size(want);
				ck_series(meter, agg, "day", from, to);
				ck_series(meter, agg, "month", from, to);
				if (to - from <= INT64_C(86400000) * 2)
					ck_series(meter, agg, "hour", from, to);
			}
			json_decref(want);
			json_decref(got);
		}
	}
	return subjects;
}

/* The plan of st with these parameters, as a generic plan (prepared statements end up with one), as text. */
static char *generic_plan(const struct store_stmt *st, const char *const *params, int n)
{
	struct tg_error err;
	char sql[512] = "EXPLAIN (FORMAT JSON) EXECUTE tg_plan_probe(";
	char *prep;
	json_t *rows;

	ck_assert(asprintf(&prep, "SET plan_cache_mode = force_generic_plan; PREPARE tg_plan_probe AS %s", st->sql) > 0);
	ck_assert_int_eq(store_exec_raw(prep, &err), 0);
	free(prep);
	for (int i = 0; i < n; i++)
		snprintf(sql + strlen(sql), sizeof(sql) - strlen(sql), "%s'%s'", i ? ", " : "", params[i]);
	strcat(sql, ")");
	struct store_stmt ex = STORE_STMT_REPLAN(sql, 0);
	ck_assert_int_eq(store_exec(&ex, NULL, &rows, &err), 0);
	char *plan = json_dumps(rows, 0);
	json_decref(rows);
	ck_assert_int_eq(store_exec_raw("DEALLOCATE tg_plan_probe; RESET plan_cache_mode", &err), 0);
	return plan;
}

START_TEST(period_reads_add_days_and_open_hours)
{
	struct tg_error err;
	char schema[64], sql[2048];
	/* January 2026: 744 hours of 12 customers of two tenants, four meters (one of each aggregation, in a meters
	 * table of the schema), every other hour with a model; compacted up to the 20th */
	const int64_t jan = INT64_C(1767225600000), feb = jan + INT64_C(31) * 86400000, day = 86400000;

	snprintf(schema, sizeof(schema), "tg_days_test_%d", (int)getpid());
	snprintf(sql, sizeof(sql),
		 "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s; "
		 "CREATE TABLE %s.usage_rollups (LIKE public.usage_rollups INCLUDING ALL) WITH (autovacuum_enabled = false); "
		 "CREATE TABLE %s.usage_rollups_daily (LIKE public.usage_rollups_daily INCLUDING ALL) "
		 "  WITH (autovacuum_enabled = false); "
		 "CREATE TABLE %s.meters (tenant_id text, id text, spec json); "
		 "SET search_path TO %s, public; "
		 "INSERT INTO meters SELECT t, m, json_build_object('aggregation', a) FROM (VALUES ('ten_days'), ('ten_other')) "
		 "  AS v(t), (VALUES ('tokens', 'sum'), ('calls', 'count'), ('peak', 'max'), ('last', 'latest')) AS w(m, a); "
		 "INSERT INTO usage_rollups (tenant_id, subject, meter_id, hour, dims, value, events, last_ts) "
		 "SELECT t, 'u_' || c, m, tg_ms(%lld + h * 3600000::bigint), "
		 "  CASE WHEN h %% 2 = 0 THEN '{\"model\":\"gpt-4\"}' ELSE '{}' END::jsonb, (c * 7 + h + length(m)) %% 13 + 1.5, "
		 "  1, tg_ms(%lld + h * 3600000::bigint + c * 1000) "
		 "FROM (VALUES ('ten_days'), ('ten_other')) AS v(t), (VALUES ('tokens'), ('calls'), ('peak'), ('last')) AS w(m), "
		 "  generate_series(1, 12) c, generate_series(0, 743) h; "
		 "ANALYZE usage_rollups",
		 schema, schema, schema, schema, schema, schema, (long long)jan, (long long)jan);
	ck_assert_int_eq(store_exec_raw(sql, &err), 0);
	ck_assert_int_eq((int)ck_period_reads(jan, feb), 12); /* nothing compacted: hours only */

	static struct store_stmt q_compact = STORE_STMT("SELECT tg_compact_rollups(tg_ms($1::bigint), $2::int) AS n", 2);
	char cb[STORE_I64_BUFSZ];
	const char *cp[] = {store_i64(jan + 19 * day, cb), "97"}; /* a sweep of many passes, each going on from the last */
	json_t *row;
	ck_assert_int_eq(store_exec1(&q_compact, cp, &row, &err), 0);
	ck_assert_int_eq(store_int(row, "n", -1), 2 * 4 * 12 * 19 * 24);
	json_decref(row);
	/* late events into compacted hours (the writer reopens what it moves): bigger, and bigger and newer */
	ck_assert_int_eq(store_exec_raw("UPDATE usage_rollups SET value = value + 5, compacted = false "
					"WHERE tenant_id = 'ten_days' AND subject IN ('u_1', 'u_2') AND hour = '2026-01-05 03:00+00'; "
					"UPDATE usage_rollups SET value = 40, last_ts = '2026-01-31 23:59:59+00', compacted = false "
					"WHERE tenant_id = 'ten_days' AND subject = 'u_3' AND hour = '2026-01-07 00:00+00'; "
					"ANALYZE usage_rollups; "
					"ANALYZE usage_rollups_daily",
					&err),
			 0);
	/* the month, a day, a week and all time read days and open hours; an hour reads its hours */
	ck_assert_int_eq((int)ck_period_reads(jan, feb), 12);
	ck_assert_int_eq((int)ck_period_reads(jan + 4 * day, jan + 5 * day), 12);
	ck_assert_int_eq((int)ck_period_reads(jan + 4 * day, jan + 11 * day), 12);
	ck_assert_int_eq((int)ck_period_reads(0, INT64_C(4102444800000)), 12);
	ck_assert_int_eq((int)ck_period_reads(jan + 4 * day + 3 * 3600000, jan + 4 * day + 4 * 3600000), 12);
	/* ranges with edges (as GET /v1/usage's default `to`, now): whole days inside, hours at the edges */
	ck_assert_int_eq((int)ck_period_reads(jan + 4 * day + 5 * 3600000, jan + 11 * day + 7 * 3600000 + 1234), 12);
	ck_assert_int_eq((int)ck_period_reads(jan + 4 * day + 5 * 3600000, jan + 5 * day + 7 * 3600000), 12);
	/* compacting the rest (the reopened ones again) changes no reading */
	cp[0] = store_i64(feb, cb);
	ck_assert_int_eq(store_exec1(&q_compact, cp, &row, &err), 0);
	ck_assert_int_eq(store_int(row, "n", -1), 2 * 4 * 12 * 12 * 24 + 3 * 4);
	json_decref(row);
	ck_assert_int_eq((int)ck_period_reads(jan, feb), 12);
	ck_assert_int_eq((int)ck_period_reads(jan + 4 * day, jan + 5 * day), 12);

	/* and neither reading scans a table: a month of one customer, and every customer's month */
	char fb[STORE_I64_BUFSZ], tb[STORE_I64_BUFSZ];
	const char *vp[] = {"ten_days", "u_7", "tokens", store_i64(jan, fb), store_i64(feb, tb), "{}", "0"};
	char *plan = generic_plan(store_usage_value_stmt(), vp, 7);
	/* (the schema's copies of the indexes are named after their columns: usage_rollups_open is
	 * usage_rollups_tenant_id_subject_meter_id_hour_idx, usage_rollups_tenant_hour usage_rollups_tenant_id_hour_idx,
	 * usage_rollups_daily_tenant_day usage_rollups_daily_tenant_id_day_idx) */
	bool ok = !strstr(plan, "Seq Scan") && strstr(plan, "usage_rollups_tenant_id_subject_meter_id_hour_idx") &&
		  strstr(plan, "usage_rollups_daily_pkey");
	if (!ok)
		fprintf(stderr, "store_usage_value's plan: %s\n", plan);
	ck_assert_msg(ok, "store_usage_value's plan scans a table or misses an index (on stderr)");
	free(plan);
	const char *sp[] = {"ten_days", "tokens", store_i64(jan + 3600000, fb), store_i64(jan + 7200000, tb), "{}", "0"};
	plan = generic_plan(store_usage_by_subject_stmt(), sp, 6);
	ok = !strstr(plan, "Seq Scan") && strstr(plan, "usage_rollups_tenant_id_hour_idx") &&
	     strstr(plan, "usage_rollups_daily_tenant_id_day_idx");
	if (!ok)
		fprintf(stderr, "store_usage_by_subject's plan: %s\n", plan);
	ck_assert_msg(ok, "store_usage_by_subject's plan scans a table or misses an index (on stderr)");
	free(plan);
	snprintf(sql, sizeof(sql), "RESET search_path; DROP SCHEMA %s CASCADE", schema);
	ck_assert_int_eq(store_exec_raw(sql, &err), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("store");
	TCase *tc = tcase_create("pipeline");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, array_literal_round_trips);
	tcase_add_test(tc, deferred_run_in_order_before_the_next_statement);
	tcase_add_test(tc, deferred_error_reported_by_the_next_statement);
	tcase_add_test(tc, deferred_error_reported_by_commit);
	tcase_add_test(tc, rollback_drops_what_was_never_sent);
	tcase_add_test(tc, nested_transactions_keep_one_begin);
	tcase_add_test(tc, failed_transaction_refuses_the_rest);
	tcase_add_test(tc, lost_connection_fails_the_transaction);
	tcase_add_test(tc, lost_connection_fails_the_commit);
	tcase_add_test(tc, connection_closed_while_idle_is_replaced);
	tcase_add_test(tc, connection_lost_under_a_session_lock_fails);
	tcase_add_test(tc, writer_probes_each_customer_without_statistics);
	tcase_add_test(tc, writer_probes_each_customer_planned_while_few);
	tcase_add_test(tc, probe_statements_leave_the_scan_settings);
	tcase_add_test(tc, tg_ms_and_tg_us_are_exact);
	tcase_add_test(tc, period_reads_add_days_and_open_hours);
	suite_add_tcase(s, tc);
	return run_suite(s);
}

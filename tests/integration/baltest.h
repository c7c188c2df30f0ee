/* baltest.h — helpers shared by the balance suites (test_balances.c, test_balances_flush.c).
 * Header-only (static functions) so the shared harness stays untouched.
 *
 * Money is compared exactly: every amount is turned into integer micro-units (6 decimals), both from
 * the JSON responses and from PostgreSQL (sum(amount) * 1e6 computed by the database).
 * Link with libpq (dependency('libpq')). */
#ifndef TOLLGATE_TEST_BALTEST_H
#define TOLLGATE_TEST_BALTEST_H

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "harness.h"

#define B_UNUSED __attribute__((unused))

/* micro-units of a decimal literal: MU(3.064) == 3064000 */
#define MU(x) ((long long)llround((x) * 1e6))

static struct srv S;

/* ---- clocks ---- */

static B_UNUSED long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static B_UNUSED void nap_ms(int ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* ---- HTTP ---- */

static B_UNUSED struct resp callv(const char *key, const char *method, const char *path, const char *fmt, va_list ap)
{
	char *body = NULL;
	struct resp r;

	if (fmt && vasprintf(&body, fmt, ap) < 0)
		body = NULL;
	r = req(&S, method, path, key, body, NULL);
	free(body);
	return r;
}

/* A request with a printf-formatted body (fmt NULL: no body). */
static B_UNUSED struct resp call(const char *key, const char *method, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static B_UNUSED struct resp call(const char *key, const char *method, const char *path, const char *fmt, ...)
{
	va_list ap;
	struct resp r;

	va_start(ap, fmt);
	r = callv(key, method, path, fmt, ap);
	va_end(ap);
	return r;
}

/* Send and insist on a status; the response is freed. */
static B_UNUSED void expect(const char *key, const char *method, const char *path, long want, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static B_UNUSED void expect(const char *key, const char *method, const char *path, long want, const char *fmt, ...)
{
	va_list ap;
	struct resp r;

	va_start(ap, fmt);
	r = callv(key, method, path, fmt, ap);
	va_end(ap);
	ck_assert_msg(r.status == want, "%s %s: expected %ld, got %ld: %s", method, path, want, r.status, r.body);
	resp_free(&r);
}

#define CHECK(key, ...) call(key, "POST", "/v1/check", __VA_ARGS__)

/* ---- exact numbers ---- */

/* A JSON number as micro-units (fails the test when it is not a number). */
static B_UNUSED long long mu_of(json_t *v, const char *what)
{
	ck_assert_msg(json_is_number(v), "expected a number at '%s'", what);
	if (json_is_integer(v))
		return (long long)json_integer_value(v) * 1000000LL;
	return (long long)llround(json_real_value(v) * 1e6);
}

static B_UNUSED long long jmu(json_t *root, const char *path)
{
	return mu_of(jpath(root, path), path);
}

/* Ground truth from PostgreSQL over one libpq connection per process (psql per query is slow on a busy
 * machine). Used from the test's main thread only. */
static PGconn *b_db;

static B_UNUSED PGresult *sql_exec(const char *q)
{
	PGresult *res;

	if (!b_db) {
		b_db = PQconnectdb(getenv("TOLLGATE_DATABASE_URL"));
		ck_assert_msg(PQstatus(b_db) == CONNECTION_OK, "PostgreSQL: %s", PQerrorMessage(b_db));
	}
	res = PQexec(b_db, q);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		char msg[512];
		snprintf(msg, sizeof(msg), "%s", PQresultErrorMessage(res));
		PQclear(res);
		/* a connection lost between tests: once more on a new one */
		if (PQstatus(b_db) != CONNECTION_OK) {
			PQfinish(b_db);
			b_db = NULL;
			return sql_exec(q);
		}
		ck_abort_msg("SQL failed: %s: %s", q, msg);
	}
	return res;
}

/* One row of integers (NULL → 0): out[0..n-1]. */
static B_UNUSED void sql_row(long long *out, int n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static B_UNUSED void sql_row(long long *out, int n, const char *fmt, ...)
{
	char *q = NULL;
	va_list ap;
	PGresult *res;

	va_start(ap, fmt);
	ck_assert(vasprintf(&q, fmt, ap) >= 0);
	va_end(ap);
	res = sql_exec(q);
	ck_assert_msg(PQntuples(res) == 1 && PQnfields(res) >= n, "SQL '%s': %d rows", q, PQntuples(res));
	for (int i = 0; i < n; i++)
		out[i] = PQgetisnull(res, 0, i) ? 0 : strtoll(PQgetvalue(res, 0, i), NULL, 10);
	PQclear(res);
	free(q);
}

/* One integer. */
static B_UNUSED long long sql_ll(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static B_UNUSED long long sql_ll(const char *fmt, ...)
{
	char *q = NULL;
	va_list ap;
	PGresult *res;
	long long v;

	va_start(ap, fmt);
	ck_assert(vasprintf(&q, fmt, ap) >= 0);
	va_end(ap);
	res = sql_exec(q);
	ck_assert_msg(PQntuples(res) == 1 && !PQgetisnull(res, 0, 0), "SQL '%s': no value", q);
	v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	free(q);
	return v;
}

/* Σ ledger amounts of one customer, in micro-units, computed by PostgreSQL. */
static B_UNUSED long long ledger_sum(const struct tenant *t, const char *cust)
{
	return sql_ll("SELECT COALESCE((sum(amount) * 1000000)::bigint, 0) FROM ledger WHERE tenant_id = '%s' AND "
		      "customer_id = '%s'", t->id, cust);
}

/* Ledger rows of one customer (kind NULL: every kind). */
static B_UNUSED long long ledger_rows(const struct tenant *t, const char *cust, const char *kind)
{
	if (kind)
		return sql_ll("SELECT count(*) FROM ledger WHERE tenant_id = '%s' AND customer_id = '%s' AND kind = '%s'",
			      t->id, cust, kind);
	return sql_ll("SELECT count(*) FROM ledger WHERE tenant_id = '%s' AND customer_id = '%s'", t->id, cust);
}

/* Rows of balances for the customer (0 or 1). */
static B_UNUSED long long balance_rows(const struct tenant *t, const char *cust)
{
	return sql_ll("SELECT count(*) FROM balances WHERE tenant_id = '%s' AND customer_id = '%s'", t->id, cust);
}

/* webhook_events rows of a type whose data.customer_id is cust (cust NULL: any). */
static B_UNUSED long long webhooks(const struct tenant *t, const char *type, const char *cust)
{
	if (cust)
		return sql_ll("SELECT count(*) FROM webhook_events WHERE tenant_id = '%s' AND type = '%s' AND "
			      "data->>'customer_id' = '%s'", t->id, type, cust);
	return sql_ll("SELECT count(*) FROM webhook_events WHERE tenant_id = '%s' AND type = '%s'", t->id, type);
}

/* ---- balances ---- */

struct bal {
	long long balance, reserved, available, minimum;
};

/* GET /v1/customers/{cust}/balance, which must answer 200. */
static B_UNUSED struct bal bal_get(const struct tenant *t, const char *cust)
{
	char path[256];
	struct resp r;
	struct bal b;

	snprintf(path, sizeof(path), "/v1/customers/%s/balance", cust);
	r = req(&S, "GET", path, t->key, NULL, NULL);
	ck_assert_msg(r.status == 200, "GET %s: %ld %s", path, r.status, r.body);
	ck_assert_str_eq(jstr(r.json, "customer_id"), cust);
	b.balance = jmu(r.json, "balance");
	b.reserved = jmu(r.json, "reserved");
	b.available = jmu(r.json, "available");
	b.minimum = jmu(r.json, "minimum_balance");
	resp_free(&r);
	return b;
}

/* The live (Redis) view the gate uses: a dry-run check of the built-in meter (cost 0) reports it. */
static B_UNUSED struct bal bal_hot(const struct tenant *t, const char *cust)
{
	struct resp r = CHECK(t->key, "{\"customer_id\":\"%s\",\"dry_run\":true}", cust);
	struct bal b = {0};

	ck_assert_msg(r.status == 200 || r.status == 402, "dry-run check of %s: %ld %s", cust, r.status, r.body);
	ck_assert_msg(json_is_object(jpath(r.json, "balance")), "dry-run check of %s has no balance: %s", cust, r.body);
	b.available = jmu(r.json, "balance.available");
	b.minimum = jmu(r.json, "balance.minimum");
	resp_free(&r);
	return b;
}

static B_UNUSED void credit(const struct tenant *t, const char *cust, const char *amount)
{
	char path[256];

	snprintf(path, sizeof(path), "/v1/customers/%s/balance/credit", cust);
	expect(t->key, "POST", path, 200, "{\"amount\":%s}", amount);
}

/* The balance of cust must be want (micro-units) everywhere: the API, balances.balance, Σ ledger (SQL),
 * Σ of the ledger read through the API, and the live view the gate uses (available, minimum). */
static B_UNUSED void invariant(const struct tenant *t, const char *cust, long long want)
{
	struct bal b = bal_get(t, cust), h = bal_hot(t, cust);
	long long db[3];
	sql_row(db, 3,
		"SELECT (SELECT COALESCE((sum(amount) * 1000000)::bigint, 0) FROM ledger WHERE tenant_id = '%s' AND customer_id = '%s'), "
		"(SELECT (balance * 1000000)::bigint FROM balances WHERE tenant_id = '%s' AND customer_id = '%s'), "
		"(SELECT count(*) FROM ledger WHERE tenant_id = '%s' AND customer_id = '%s')",
		t->id, cust, t->id, cust, t->id, cust);
	long long sum = db[0], col = db[1], nrows = db[2];
	long long api_sum = 0, rows = 0;
	char path[512], after[128] = "";

	ck_assert_msg(b.available == b.balance - b.reserved, "%s: available %lld != balance %lld - reserved %lld", cust,
		      b.available, b.balance, b.reserved);
	ck_assert_msg(sum == b.balance, "%s: ledger sums to %lld µ, GET balance says %lld µ", cust, sum, b.balance);
	ck_assert_msg(col == b.balance, "%s: balances.balance %lld µ, GET balance %lld µ", cust, col, b.balance);
	if (want != LLONG_MIN)
		ck_assert_msg(b.balance == want, "%s: balance %lld µ, expected %lld µ", cust, b.balance, want);
	ck_assert_msg(h.available == b.available, "%s: the gate sees available %lld µ, GET balance %lld µ", cust,
		      h.available, b.available);
	ck_assert_msg(h.minimum == b.minimum, "%s: the gate sees minimum %lld µ, GET balance %lld µ", cust, h.minimum,
		      b.minimum);
	/* the ledger through the API, every page */
	for (;;) {
		struct resp r;
		json_t *row;
		size_t i;
		snprintf(path, sizeof(path), "/v1/customers/%s/balance/transactions?limit=100%s%s", cust,
			 after[0] ? "&starting_after=" : "", after);
		r = req(&S, "GET", path, t->key, NULL, NULL);
		ck_assert_msg(r.status == 200, "GET %s: %ld %s", path, r.status, r.body);
		json_array_foreach(jpath(r.json, "data"), i, row) {
			api_sum += mu_of(json_object_get(row, "amount"), "amount");
			rows++;
			snprintf(after, sizeof(after), "%s", json_string_value(json_object_get(row, "id")));
		}
		bool more = json_is_true(jpath(r.json, "has_more"));
		resp_free(&r);
		if (!more)
			break;
	}
	ck_assert_msg(api_sum == b.balance, "%s: the transactions list sums to %lld µ, balance %lld µ", cust, api_sum,
		      b.balance);
	ck_assert_msg(rows == nrows, "%s: the transactions list has %lld rows, the ledger %lld", cust, rows, nrows);
}

#endif

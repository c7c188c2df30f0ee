/* test_restarts.c — PostgreSQL and Redis restart under a running server: while one is down the requests
 * that need it answer 503 and /metrics counts the failures; once it is back, the first requests of every
 * thread succeed (none is lost on a connection the server closed meanwhile).
 * Stopping a service takes it from every suite: meson runs this suite alone (is_parallel: false). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static struct srv S;

/* Every commit waits for a synchronous standby that does not exist, if its transaction asks to (the default is
 * local): a COMMIT this makes wait has committed locally, and terminating its backend loses only the answer.
 * (ALTER SYSTEM runs outside a transaction: one psql each.) Unset, the triggers asking it go too. */
static const char *const sync_tables[] = {"ledger", "usage_rollups", "reservations"};

/* Whether a COMMIT asking for the standby waits for it (the checkpointer has read the reload: until then
 * commits do not wait): one that writes WAL (a transactional WAL message: a temporary table would make the
 * terminated session wait again as it drops it on exit), given 1.5 s; the session left waiting is
 * terminated. */
static bool commit_waits(void)
{
	int rc = -1;
	FILE *p = popen("PGAPPNAME=tg_test_probe PGOPTIONS='-c synchronous_commit=on' timeout 1.5 psql -X -A -t -q "
			"\"$TOLLGATE_DATABASE_URL\" -c \"SELECT pg_logical_emit_message(true, 'tollgate-test', 'probe')\" "
			">/dev/null 2>&1; echo $?",
			"r");

	if (p) {
		if (fscanf(p, "%d", &rc) != 1)
			rc = -1;
		pclose(p);
	}
	free(psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'tg_test_probe'"));
	return rc == 124;
}

static void no_standby(bool set)
{
	free(psql(set ? "ALTER SYSTEM SET synchronous_standby_names = 'tg_test_nobody'"
		      : "ALTER SYSTEM RESET synchronous_standby_names"));
	free(psql(set ? "ALTER SYSTEM SET synchronous_commit = local" : "ALTER SYSTEM RESET synchronous_commit"));
	free(psql("SELECT pg_reload_conf()"));
	/* the reload is asynchronous, and a COMMIT waits only once the checkpointer has read it too: until a
	 * COMMIT asking for the standby does wait (cut short by its statement_timeout, committed locally) */
	for (int i = 0; set && i < 10 && !commit_waits(); i++)
		usleep(100 * 1000);
	if (set)
		ck_assert_msg(commit_waits(), "a COMMIT asking for the missing standby does not wait for it");
	for (size_t i = 0; !set && i < sizeof(sync_tables) / sizeof(sync_tables[0]); i++) {
		char sql[256];
		snprintf(sql, sizeof(sql), "DROP TRIGGER IF EXISTS tg_test_sync_commit ON %s", sync_tables[i]);
		free(psql(sql));
	}
	if (!set)
		free(psql("DROP FUNCTION IF EXISTS tg_test_sync_commit(); DROP TRIGGER IF EXISTS tg_test_sleep_commit ON "
			  "usage_rollups; DROP FUNCTION IF EXISTS tg_test_sleep_commit();"));
}

static void setup(void)
{
	srv_start(&S, NULL);
}

static void teardown(void)
{
	/* whatever a failed test left stopped or set */
	service_ctl("start", "postgresql");
	service_ctl("start", "redis");
	no_standby(false);
	srv_stop(&S);
}

#define PG_CONN_ERRORS "tollgate_postgres_errors_total{kind=\"connection\"} "
#define REDIS_CONN_ERRORS "tollgate_redis_errors_total{kind=\"connection\"} "

/* Requests from 8 clients at once, so that every worker and loop of the server serves some. */
struct burst {
	const char *key;
	bool config; /* PostgreSQL requests too (reads and a transaction), not only /readyz */
	_Atomic int ok, bad;
	_Atomic int seq;
};

static void tally(struct burst *b, struct resp *r, long want, const char *what)
{
	if (r->status == want) {
		atomic_fetch_add(&b->ok, 1);
	} else {
		atomic_fetch_add(&b->bad, 1);
		fprintf(stderr, "%s: expected %ld, got %ld %s\n", what, want, r->status, r->body ? r->body : "");
	}
	resp_free(r);
}

static void burst_worker(int i, void *arg)
{
	struct burst *b = arg;

	(void)i;
	for (int k = 0; k < 4; k++) {
		struct resp r = req(&S, "GET", "/readyz", NULL, NULL, NULL);
		tally(b, &r, 200, "GET /readyz");
		if (!b->config)
			continue;
		r = req(&S, "GET", "/v1/customers", b->key, NULL, NULL);
		tally(b, &r, 200, "GET /v1/customers");
		r = req(&S, "GET", "/v1/meters", b->key, NULL, NULL);
		tally(b, &r, 200, "GET /v1/meters");
		r = reqf(&S, "POST", "/v1/customers", b->key, "{\"id\":\"c%d\"}", atomic_fetch_add(&b->seq, 1));
		tally(b, &r, 201, "POST /v1/customers");
	}
}

/* Every request of a burst must succeed. */
static void burst(struct burst *b, const char *when)
{
	atomic_store(&b->ok, 0);
	atomic_store(&b->bad, 0);
	run_parallel(8, burst_worker, b);
	ck_assert_msg(atomic_load(&b->bad) == 0, "%s: %d of %d requests failed", when, atomic_load(&b->bad),
		      atomic_load(&b->bad) + atomic_load(&b->ok));
}

/* Stop a service: /readyz answers 503 naming it. */
static void stop_service(const char *name, const char *shown)
{
	service_ctl("stop", name);
	struct resp r = req(&S, "GET", "/readyz", NULL, NULL, NULL);
	ck_err(r, 503, "unavailable", "not_ready", NULL);
	ck_assert_ptr_nonnull(strstr(jstr(r.json, "error.message"), shown));
	resp_free(&r);
}

START_TEST(postgres_restart)
{
	struct tenant t = tenant_new(&S, false);
	static struct burst b;

	b.key = t.key;
	b.config = true;
	burst(&b, "before the restart"); /* every thread has its connection */
	long long errors = srv_metric(&S, PG_CONN_ERRORS);

	stop_service("postgresql", "PostgreSQL");
	struct resp r = req(&S, "GET", "/v1/customers", t.key, NULL, NULL);
	ck_status(r, 503);
	resp_free(&r);
	long long down = srv_metric(&S, PG_CONN_ERRORS);
	ck_assert_msg(down > errors, "PostgreSQL down: %s went from %lld to %lld", PG_CONN_ERRORS, errors, down);
	/* once every thread has lost its connection, each attempt to connect again counts */
	b.config = false;
	run_parallel(8, burst_worker, &b);
	b.config = true;
	down = srv_metric(&S, PG_CONN_ERRORS);
	expect_status(&S, "GET", "/readyz", NULL, NULL, 503);
	ck_assert_int_gt(srv_metric(&S, PG_CONN_ERRORS), down);

	service_ctl("start", "postgresql");
	burst(&b, "after the restart");
	ck_assert_int_ge(srv_metric(&S, PG_CONN_ERRORS), down);
}
END_TEST

static long check_status(const char *key)
{
	struct resp r = req(&S, "POST", "/v1/check", key, "{\"customer_id\":\"c\"}", NULL);
	long st = r.status;
	resp_free(&r);
	return st;
}

START_TEST(redis_restart)
{
	static struct burst b;
	struct tenant t = tenant_new(&S, false);

	/* a check needs Redis for this limit, and refuses without it */
	expect_status(&S, "POST", "/v1/limits", t.key,
		      "{\"id\":\"q\",\"kind\":\"quota\",\"meter\":\"requests\",\"period\":\"month\",\"limit\":1000000,"
		      "\"fail_mode\":\"closed\"}", 201);
	ck_assert_int_eq(check_status(t.key), 200);
	b.config = false;
	burst(&b, "before the restart");
	long long errors = srv_metric(&S, REDIS_CONN_ERRORS);

	stop_service("redis", "Redis");
	long long down = srv_metric(&S, REDIS_CONN_ERRORS);
	ck_assert_msg(down > errors, "Redis down: %s went from %lld to %lld", REDIS_CONN_ERRORS, errors, down);
	/* 3 s down, checking: the loops' reconnection backoff reaches its longest */
	for (int i = 0; i < 30; i++) {
		ck_assert_int_eq(check_status(t.key), 503);
		usleep(100 * 1000);
	}

	service_ctl("start", "redis");
	burst(&b, "after the restart");
	/* checks pass again within a backoff step (250 ms) of /readyz saying ready, not 2 s later */
	int refused = 0;
	for (int i = 0; i < 40; i++) {
		if (check_status(t.key) != 200)
			refused++;
		usleep(25 * 1000);
	}
	ck_assert_msg(refused <= 16, "%d of 40 checks in the second after Redis came back were refused", refused);
	ck_assert_int_eq(check_status(t.key), 200);
}
END_TEST

/* ---- the journal: live counters a stopped instance left out of step with PostgreSQL ---- */

/* used and reserved (units) of one limit in a customer's usage read through s; -1 while the read fails (503
 * while Redis is held back). */
static void live_state(const struct srv *s, const char *key, const char *cust, const char *lim, double *used,
		       double *reserved)
{
	char path[160];
	json_t *l;
	size_t i;

	*used = *reserved = -1;
	snprintf(path, sizeof(path), "/v1/customers/%s/usage", cust);
	struct resp r = req(s, "GET", path, key, NULL, NULL);
	if (r.status != 200) {
		resp_free(&r);
		return;
	}
	json_array_foreach(jpath(r.json, "limits"), i, l)
		if (!strcmp(json_string_value(json_object_get(l, "id")), lim)) {
			*used = json_number_value(json_object_get(l, "used"));
			*reserved = json_number_value(json_object_get(l, "reserved"));
		}
	resp_free(&r);
}

/* Read until the live state is (used, reserved), for up to ms; fails the test with what it last read. */
static void wait_state(const struct srv *s, const char *key, const char *cust, const char *lim, double used,
		       double reserved, int ms, const char *when)
{
	double u = -1, r = -1;

	for (int waited = 0; waited <= ms; waited += 100) {
		live_state(s, key, cust, lim, &u, &r);
		if (u == used && r == reserved)
			return;
		usleep(100 * 1000);
	}
	ck_abort_msg("%s: used %g reserved %g, expected %g and %g", when, u, r, used, reserved);
}

struct inflight {
	const struct srv *s;
	const char *key, *path, *body;
	pthread_t th;
};

static void *inflight_main(void *arg)
{
	struct inflight *f = arg;
	struct resp r = req(f->s, "POST", f->path, f->key, f->body, NULL);
	resp_free(&r); /* its server is killed meanwhile: no answer */
	return NULL;
}

static void send_inflight(struct inflight *f, const struct srv *s, const char *key, const char *path, const char *body)
{
	*f = (struct inflight){.s = s, .key = key, .path = path, .body = body};
	pthread_create(&f->th, NULL, inflight_main, f);
}

/* Hold a tenant's rows of table whose column is value for this many seconds (statements writing them
 * wait, such as the event writer's COMMIT on rollups). */
static void hold(struct psql_hold *h, const char *table, const char *tenant, const char *column, const char *value,
		 int seconds)
{
	char where[256];
	snprintf(where, sizeof(where), "tenant_id = '%s' AND %s = '%s'", tenant, column, value);
	psql_hold(h, table, where, seconds);
}

/* Wait (up to 5 s) until PostgreSQL's answer to count_sql is want, and insist on it. */
static void wait_count(const char *count_sql, long long want)
{
	for (int i = 0; i < 50 && psql_ll("%s", count_sql) != want; i++)
		usleep(100 * 1000);
	ck_assert_int_eq(psql_ll("%s", count_sql), want);
}

/* Kill s while Redis is paused (its live update waiting there), then let Redis go and reap the request. */
static void kill_while_paused(struct srv *s, struct inflight *f)
{
	srv_kill9(s);
	ck_assert_int_eq(redis_cmd("CLIENT UNPAUSE"), 0);
	pthread_join(f->th, NULL);
}

/* A tenant of s with a monthly quota of 100 tokens. */
static struct tenant quota_tenant(const struct srv *s)
{
	struct tenant t = tenant_new(s, false);
	must_post(s, t.key, "/v1/meters", "{\"id\":\"tokens\",\"event_type\":\"llm\",\"aggregation\":\"sum\",\"property\":\"tokens\"}");
	must_post(s, t.key, "/v1/limits", "{\"id\":\"cap\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"month\",\"limit\":100}");
	return t;
}

static const char *const short_heartbeat[] = {"TOLLGATE_INSTANCE_TTL_MS=1000", "TOLLGATE_REQUEST_TIMEOUT_MS=20000", NULL};

/* An instance killed while its consuming and reserving checks had moved Redis but not committed: the
 * survivor S finds its heartbeat gone, drops the counters its journal lists, and they rebuild from
 * PostgreSQL: no usage or hold nobody recorded stays (before the journal it stayed until the month's end). */
START_TEST(kill9_mid_check_leaves_no_phantom_usage_or_hold)
{
	struct srv s2 = {0};
	struct inflight a, b, c;
	struct psql_hold rows;

	srv_start(&s2, short_heartbeat);
	struct tenant t = quota_tenant(&s2);
	expect_status(&s2, "POST", "/v1/check", t.key, "{\"customer_id\":\"ph\",\"meter\":\"tokens\",\"amount\":1,\"consume\":true}", 200);
	hold(&rows, "usage_rollups", t.id, "subject", "ph", 3);
	/* a's commit waits on the rows; b and c wait behind it in the writer's queue, never sent */
	send_inflight(&a, &s2, t.key, "/v1/check", "{\"customer_id\":\"ph\",\"meter\":\"tokens\",\"amount\":2,\"consume\":true}");
	usleep(200 * 1000);
	send_inflight(&b, &s2, t.key, "/v1/check", "{\"customer_id\":\"ph\",\"meter\":\"tokens\",\"amount\":5,\"consume\":true}");
	send_inflight(&c, &s2, t.key, "/v1/check", "{\"customer_id\":\"ph\",\"meter\":\"tokens\",\"amount\":7,\"reserve\":true}");
	wait_state(&S, t.key, "ph", "cap", 8, 7, 2000, "all three checks moved Redis");
	long long recovered = srv_metric(&S, "tollgate_instances_recovered_total ");
	srv_kill9(&s2);
	psql_hold_end(&rows);
	pthread_join(a.th, NULL);
	pthread_join(b.th, NULL);
	pthread_join(c.th, NULL);
	/* what PostgreSQL holds: the first check, and a's event if its COMMIT had gone out with it */
	long long stored = psql_ll("SELECT COALESCE(sum(value), 0)::bigint FROM usage_rollups WHERE tenant_id = '%s' "
				   "AND subject = 'ph'", t.id);
	ck_assert_msg(stored == 1 || stored == 3, "PostgreSQL holds %lld tokens", stored);
	ck_assert_int_eq(psql_ll("SELECT count(*) FROM reservations WHERE tenant_id = '%s'", t.id), 0);
	wait_state(&S, t.key, "ph", "cap", (double)stored, 0, 5000, "after the survivor recovered the journal");
	ck_assert_int_gt(srv_metric(&S, "tollgate_instances_recovered_total "), recovered);
	ck_assert_int_gt(srv_metric(&S, "tollgate_live_counters_dropped_total "), 0);
}
END_TEST

/* An instance killed after its event batch committed but before it moved the live counter (Redis held
 * back by CLIENT PAUSE WRITE at that moment): the counter would have stayed short of the committed usage
 * (a hard limit letting that much more through). Its journal names the counter (noted before the COMMIT),
 * so the survivor drops it and it rebuilds with the committed event. */
START_TEST(kill9_after_commit_leaves_no_usage_out)
{
	struct srv s2 = {0};
	struct inflight e;
	struct psql_hold rows;
	char sql[256];

	srv_start(&s2, short_heartbeat);
	struct tenant t = quota_tenant(&s2);
	expect_status(&s2, "POST", "/v1/events", t.key,
		      "{\"id\":\"ev-1\",\"customer_id\":\"late\",\"type\":\"llm\",\"properties\":{\"tokens\":1}}", 200);
	wait_state(&S, t.key, "late", "cap", 1, 0, 1000, "the first event");
	hold(&rows, "usage_rollups", t.id, "subject", "late", 2);
	send_inflight(&e, &s2, t.key, "/v1/events",
		      "{\"id\":\"ev-2\",\"customer_id\":\"late\",\"type\":\"llm\",\"properties\":{\"tokens\":5}}");
	usleep(500 * 1000); /* journaled, its COMMIT waiting on the rows */
	ck_assert_int_eq(redis_cmd("CLIENT PAUSE 6000 WRITE"), 0);
	psql_hold_end(&rows);
	/* committed; its live update waits on Redis */
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM events WHERE tenant_id = '%s'", t.id);
	wait_count(sql, 2);
	kill_while_paused(&s2, &e);
	wait_state(&S, t.key, "late", "cap", 6, 0, 5000, "after the survivor recovered the journal");
}
END_TEST

/* The live balance a dry check through s sees for customer cust (units), -1 while the check fails. */
static double live_available(const struct srv *s, const char *key, const char *cust)
{
	double v = -1;
	struct resp r = reqf(s, "POST", "/v1/check", key, "{\"customer_id\":\"%s\",\"meter\":\"tokens\",\"amount\":1,"
			     "\"dry_run\":true}", cust);
	if (r.status == 200 && json_is_number(jpath(r.json, "balance.available")))
		v = json_number_value(jpath(r.json, "balance.available"));
	resp_free(&r);
	return v;
}

/* An instance killed after a credit's ledger row committed but before it moved the live balance (Redis held
 * back): a live balance has no period end, so before the journal it stayed short for good. The balance API
 * notes the wallet before its ledger row, and the survivor rebuilds it from the ledger. */
START_TEST(kill9_mid_credit_leaves_no_balance_out)
{
	struct srv s2 = {0};
	struct inflight c;
	struct psql_hold rows;
	char sql[256];
	double seen = -1;

	srv_start(&s2, short_heartbeat);
	struct tenant t = tenant_new(&s2, false);
	must_post(&s2, t.key, "/v1/meters", "{\"id\":\"tokens\",\"event_type\":\"llm\",\"aggregation\":\"sum\","
		  "\"property\":\"tokens\",\"price\":{\"default\":1}}");
	must_post(&s2, t.key, "/v1/customers", "{\"id\":\"w\"}");
	must_post(&s2, t.key, "/v1/customers/w/balance/credit", "{\"amount\":10}");
	ck_assert(live_available(&S, t.key, "w") == 10);
	hold(&rows, "balances", t.id, "customer_id", "w", 2);
	send_inflight(&c, &s2, t.key, "/v1/customers/w/balance/credit", "{\"amount\":5}");
	usleep(500 * 1000); /* noted, its ledger row waiting on the balance row */
	ck_assert_int_eq(redis_cmd("CLIENT PAUSE 6000 WRITE"), 0);
	psql_hold_end(&rows);
	snprintf(sql, sizeof(sql), "SELECT balance::bigint FROM balances WHERE tenant_id = '%s' AND customer_id = 'w'", t.id);
	wait_count(sql, 15);
	kill_while_paused(&s2, &c);
	for (int waited = 0; waited <= 5000 && (seen = live_available(&S, t.key, "w")) != 15; waited += 100)
		usleep(100 * 1000);
	ck_assert_msg(seen == 15, "the live balance reads %g after the survivor recovered the journal, not 15", seen);
}
END_TEST

/* The tenant's transactions writing table wait at COMMIT for the missing standby (no_standby(true)). */
static void sync_commit_on(const char *table, const char *tenant)
{
	char sql[1024];

	snprintf(sql, sizeof(sql),
		 "CREATE OR REPLACE FUNCTION tg_test_sync_commit() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN "
		 "IF NEW.tenant_id = ''%s'' THEN PERFORM set_config(''synchronous_commit'', ''on'', true); END IF; "
		 "RETURN NULL; END'; DROP TRIGGER IF EXISTS tg_test_sync_commit ON %s; "
		 "CREATE CONSTRAINT TRIGGER tg_test_sync_commit AFTER INSERT OR UPDATE ON %s DEFERRABLE INITIALLY DEFERRED "
		 "FOR EACH ROW EXECUTE FUNCTION tg_test_sync_commit();",
		 tenant, table, table);
	free(psql(sql));
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM pg_trigger WHERE tgname = 'tg_test_sync_commit' AND tgrelid = '%s'::regclass", table);
	ck_assert_int_eq(psql_ll("%s", sql), 1);
}

/* Send a request through s whose COMMIT then waits (wait_event SyncRep: for the standby, committed;
 * PgSleep: in a deferred trigger, not yet); terminate the backend there. */
static void lose_commit(const struct srv *s, const char *key, const char *path, const char *body, const char *wait)
{
	struct inflight c;
	char sql[128];

	send_inflight(&c, s, key, path, body);
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM pg_stat_activity WHERE wait_event = '%s'", wait);
	wait_count(sql, 1);
	snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event = '%s'", wait);
	free(psql(sql));
	pthread_join(c.th, NULL);
}

static void lose_commit_answer(const struct srv *s, const char *key, const char *path, const char *body)
{
	lose_commit(s, key, path, body, "SyncRep");
}

/* An event batch whose COMMIT went through while its answer was lost: the writer took it as failed, so a
 * plain event's usage never reached the live counter (a hard limit short by it until the period ended), a
 * consuming check's was taken back out again, and a reserving check's hold was let go while its reservation
 * stood in PostgreSQL. Now every counter such a batch touches is dropped and rebuilt from PostgreSQL. */
START_TEST(event_commit_answer_lost_rebuilds_the_counters)
{
	struct tenant t = quota_tenant(&S);
	char sql[1024];

	expect_status(&S, "POST", "/v1/events", t.key,
		      "{\"id\":\"ev-1\",\"customer_id\":\"lc\",\"type\":\"llm\",\"properties\":{\"tokens\":1}}", 200);
	wait_state(&S, t.key, "lc", "cap", 1, 0, 1000, "the first event");
	sync_commit_on("usage_rollups", t.id);
	no_standby(true);
	lose_commit_answer(&S, t.key, "/v1/events",
			   "{\"id\":\"ev-2\",\"customer_id\":\"lc\",\"type\":\"llm\",\"properties\":{\"tokens\":5}}");
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM events WHERE tenant_id = '%s'", t.id);
	ck_assert_int_eq(psql_ll("%s", sql), 2); /* committed */
	wait_state(&S, t.key, "lc", "cap", 6, 0, 3000, "after an event whose COMMIT answer was lost");
	lose_commit_answer(&S, t.key, "/v1/check", "{\"customer_id\":\"lc\",\"meter\":\"tokens\",\"amount\":2,\"consume\":true}");
	ck_assert_int_eq(psql_ll("%s", sql), 3);
	wait_state(&S, t.key, "lc", "cap", 8, 0, 3000, "after a consuming check whose COMMIT answer was lost");
	sync_commit_on("reservations", t.id);
	lose_commit_answer(&S, t.key, "/v1/check", "{\"customer_id\":\"lc\",\"meter\":\"tokens\",\"amount\":7,\"reserve\":true}");
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM reservations WHERE tenant_id = '%s'", t.id);
	ck_assert_int_eq(psql_ll("%s", sql), 1);
	wait_state(&S, t.key, "lc", "cap", 8, 7, 3000, "after a reserving check whose COMMIT answer was lost");
	no_standby(false);
	/* and one lost before it committed (terminated in a deferred trigger's sleep): its usage goes */
	snprintf(sql, sizeof(sql),
		 "CREATE OR REPLACE FUNCTION tg_test_sleep_commit() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN "
		 "IF NEW.tenant_id = ''%s'' THEN PERFORM pg_sleep(10); END IF; RETURN NULL; END'; "
		 "CREATE CONSTRAINT TRIGGER tg_test_sleep_commit AFTER INSERT OR UPDATE ON usage_rollups "
		 "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tg_test_sleep_commit();",
		 t.id);
	free(psql(sql));
	lose_commit(&S, t.key, "/v1/check", "{\"customer_id\":\"lc\",\"meter\":\"tokens\",\"amount\":3,\"consume\":true}",
		    "PgSleep");
	free(psql("DROP TRIGGER IF EXISTS tg_test_sleep_commit ON usage_rollups; DROP FUNCTION IF EXISTS tg_test_sleep_commit();"));
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM events WHERE tenant_id = '%s'", t.id);
	ck_assert_int_eq(psql_ll("%s", sql), 3); /* not committed */
	wait_state(&S, t.key, "lc", "cap", 8, 7, 3000, "after a consuming check whose COMMIT was lost before it committed");
}
END_TEST

/* A TCP proxy to PostgreSQL for one server: cut() closes every connection through it (the network broke;
 * PostgreSQL and its backends go on), and it keeps accepting new ones. */
struct pgproxy {
	int lfd, port, pgport;
	int pairs[64][2], npairs;
	_Atomic bool cut, stop;
	pthread_t th;
};

static void *pgproxy_main(void *arg)
{
	struct pgproxy *x = arg;
	char buf[65536];

	while (!x->stop) {
		struct pollfd pf[129];
		int n = 0;
		pf[n++] = (struct pollfd){x->lfd, POLLIN, 0};
		for (int i = 0; i < x->npairs; i++) {
			pf[n++] = (struct pollfd){x->pairs[i][0], POLLIN, 0};
			pf[n++] = (struct pollfd){x->pairs[i][1], POLLIN, 0};
		}
		if (poll(pf, (nfds_t)n, 50) < 0)
			continue;
		if (x->cut) {
			for (int i = 0; i < x->npairs; i++) {
				close(x->pairs[i][0]);
				close(x->pairs[i][1]);
			}
			x->npairs = 0;
			x->cut = false;
			continue;
		}
		if ((pf[0].revents & POLLIN) && x->npairs < 64) {
			int c = accept(x->lfd, NULL, NULL), u = socket(AF_INET, SOCK_STREAM, 0);
			struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)x->pgport),
						.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
			if (c >= 0 && u >= 0 && connect(u, (struct sockaddr *)&a, sizeof(a)) == 0) {
				x->pairs[x->npairs][0] = c;
				x->pairs[x->npairs++][1] = u;
			} else {
				if (c >= 0)
					close(c);
				if (u >= 0)
					close(u);
			}
		}
		bool dead[64] = {false};
		for (int i = 0, k = 1; i < n / 2 && i < x->npairs; i++, k += 2)
			for (int side = 0; side < 2 && !dead[i]; side++) {
				if (!(pf[k + side].revents & (POLLIN | POLLHUP | POLLERR)))
					continue;
				ssize_t r = read(x->pairs[i][side], buf, sizeof(buf));
				if (r <= 0 || write(x->pairs[i][!side], buf, (size_t)r) != r)
					dead[i] = true; /* one side closed: the pair goes */
			}
		for (int i = x->npairs - 1; i >= 0; i--)
			if (dead[i]) {
				close(x->pairs[i][0]);
				close(x->pairs[i][1]);
				x->pairs[i][0] = x->pairs[x->npairs - 1][0];
				x->pairs[i][1] = x->pairs[x->npairs - 1][1];
				x->npairs--;
			}
	}
	return NULL;
}

static void pgproxy_start(struct pgproxy *x)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	const char *url = getenv("TOLLGATE_DATABASE_URL"), *colon = url ? strrchr(url, ':') : NULL;

	*x = (struct pgproxy){0};
	ck_assert_msg(colon, "no port in TOLLGATE_DATABASE_URL");
	x->pgport = atoi(colon + 1);
	x->lfd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_eq(bind(x->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(listen(x->lfd, 64), 0);
	getsockname(x->lfd, (struct sockaddr *)&a, &len);
	x->port = ntohs(a.sin_port);
	pthread_create(&x->th, NULL, pgproxy_main, x);
}

static void pgproxy_stop(struct pgproxy *x)
{
	x->stop = true;
	pthread_join(x->th, NULL);
	for (int i = 0; i < x->npairs; i++) {
		close(x->pairs[i][0]);
		close(x->pairs[i][1]);
	}
	close(x->lfd);
}

/* The network between a server and PostgreSQL breaks while PostgreSQL still runs an event batch's COMMIT
 * (waiting for the missing standby: committed locally, not yet visible to others). The server must not
 * drop the batch's counters until that backend is done: a rebuild meanwhile would miss the batch, and it
 * used to stay short by it once the COMMIT landed. The test reads the counter through S meanwhile (which
 * rebuilds it if it is gone), then lets the COMMIT finish by terminating its backend. */
START_TEST(network_break_mid_commit_waits_for_the_outcome)
{
	struct pgproxy px;
	struct srv s2 = {0};
	struct inflight e;
	char url[256], sql[256];
	const char *u = getenv("TOLLGATE_DATABASE_URL"), *colon = strrchr(u, ':');

	pgproxy_start(&px);
	snprintf(url, sizeof(url), "TOLLGATE_DATABASE_URL=%.*s:%d%s", (int)(colon - u), u, px.port, strchr(colon, '/'));
	const char *env[] = {url, "TOLLGATE_REQUEST_TIMEOUT_MS=20000", NULL};
	srv_start(&s2, env);
	struct tenant t = quota_tenant(&S);
	expect_status(&S, "POST", "/v1/events", t.key,
		      "{\"id\":\"nb-1\",\"customer_id\":\"nb\",\"type\":\"llm\",\"properties\":{\"tokens\":1}}", 200);
	wait_state(&S, t.key, "nb", "cap", 1, 0, 1000, "the first event");
	sync_commit_on("usage_rollups", t.id);
	no_standby(true);
	send_inflight(&e, &s2, t.key, "/v1/events",
		      "{\"id\":\"nb-2\",\"customer_id\":\"nb\",\"type\":\"llm\",\"properties\":{\"tokens\":5}}");
	wait_count("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'", 1);
	px.cut = true; /* s2 sees its connection lost; the backend still waits, committed but not visible */
	for (int i = 0; i < 20; i++) { /* two seconds of reads through S: each rebuilds a dropped counter */
		double used, reserved;
		live_state(&S, t.key, "nb", "cap", &used, &reserved);
		usleep(100 * 1000);
	}
	free(psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"));
	pthread_join(e.th, NULL);
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM events WHERE tenant_id = '%s'", t.id);
	ck_assert_int_eq(psql_ll("%s", sql), 2); /* committed */
	wait_state(&S, t.key, "nb", "cap", 6, 0, 5000, "after a COMMIT whose connection broke while it ran");
	no_standby(false);
	srv_stop(&s2);
	pgproxy_stop(&px);
}
END_TEST

/* A credit and a debit whose COMMIT went through while its answer was lost (the connection closed during
 * it): the server cannot know they committed. It used to take them as failed: the credit never reached
 * the live balance (short for good) and the debit was given back in Redis (the gate let 3 through that the
 * ledger had spent). Now the live balance is dropped and rebuilt from the ledger, which holds both. This
 * tenant's ledger rows ask their COMMIT to wait for the missing standby; the test terminates the backend in
 * that wait. */
START_TEST(commit_answer_lost_rebuilds_the_balance)
{
	struct tenant t = tenant_new(&S, false);
	char sql[256];
	static const char *const paths[] = {"/v1/customers/w/balance/credit", "/v1/customers/w/balance/debit"};
	static const char *const bodies[] = {"{\"amount\":5}", "{\"amount\":3}"};
	static const double want[] = {15, 12};

	must_post(&S, t.key, "/v1/meters", "{\"id\":\"tokens\",\"event_type\":\"llm\",\"aggregation\":\"sum\","
		  "\"property\":\"tokens\",\"price\":{\"default\":1}}");
	must_post(&S, t.key, "/v1/customers", "{\"id\":\"w\"}");
	must_post(&S, t.key, "/v1/customers/w/balance/credit", "{\"amount\":10}");
	ck_assert(live_available(&S, t.key, "w") == 10);
	must_post(&S, t.key, "/v1/customers", "{\"id\":\"org\"}");
	must_post(&S, t.key, "/v1/customers", "{\"id\":\"kid\",\"parent_id\":\"org\"}");
	must_post(&S, t.key, "/v1/customers/org/balance/credit", "{\"amount\":10}");
	ck_assert(live_available(&S, t.key, "kid") == 10);
	sync_commit_on("ledger", t.id);
	no_standby(true);
	for (int i = 0; i < 2; i++) {
		lose_commit_answer(&S, t.key, paths[i], bodies[i]);
		snprintf(sql, sizeof(sql), "SELECT count(*) FROM ledger WHERE tenant_id = '%s' AND customer_id = 'w'", t.id);
		ck_assert_int_eq(psql_ll("%s", sql), i + 2); /* committed */
		double seen = live_available(&S, t.key, "w");
		ck_assert_msg(seen == want[i], "after a %s whose COMMIT answer was lost the gate sees %g, the ledger %g",
			      i ? "debit" : "credit", seen, want[i]);
	}
	/* a priced event of an organisation's member (its usage row in the ledger): the organisation's wallet,
	 * which the writer's lost hook names through the event's balance owner */
	lose_commit_answer(&S, t.key, "/v1/events",
			   "{\"id\":\"ev-kid\",\"customer_id\":\"kid\",\"type\":\"llm\",\"properties\":{\"tokens\":4}}");
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM ledger WHERE tenant_id = '%s' AND customer_id = 'org'", t.id);
	ck_assert_int_eq(psql_ll("%s", sql), 2); /* committed */
	double seen = -1;
	for (int waited = 0; waited <= 3000 && (seen = live_available(&S, t.key, "kid")) != 6; waited += 100)
		usleep(100 * 1000);
	ck_assert_msg(seen == 6, "after an event whose COMMIT answer was lost the organisation's gate sees %g, not 6", seen);
	no_standby(false);
}
END_TEST

/* An instance killed after a reservation's release committed but before it let the holds go in Redis
 * (held back): the hold stayed on the counter until the period ended. The release notes the counter before
 * its COMMIT; here the reservation was made through S, so only that note lists it in the killed instance's
 * journal. A deferred trigger holds the release's COMMIT (after the note) until Redis is paused. */
START_TEST(kill9_mid_release_leaves_no_hold)
{
	struct srv s2 = {0};
	struct inflight d;
	char sql[1024], path[128];

	srv_start(&s2, short_heartbeat);
	struct tenant t = quota_tenant(&s2);
	must_post(&s2, t.key, "/v1/customers", "{\"id\":\"rel\"}");
	wait_state(&S, t.key, "rel", "cap", 0, 0, 3000, "S knowing the limit"); /* configuration reaches S */
	struct resp r = req(&S, "POST", "/v1/check", t.key,
			    "{\"customer_id\":\"rel\",\"meter\":\"tokens\",\"amount\":7,\"reserve\":true}", NULL);
	ck_status(r, 200);
	snprintf(path, sizeof(path), "/v1/reservations/%s/release", jstr(r.json, "reservation_id"));
	resp_free(&r);
	wait_state(&S, t.key, "rel", "cap", 0, 7, 1000, "the reservation");
	/* this tenant's reservation deletions sleep 2 s at COMMIT */
	snprintf(sql, sizeof(sql),
		 "CREATE OR REPLACE FUNCTION tg_test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN "
		 "IF OLD.tenant_id = ''%s'' THEN PERFORM pg_sleep(2); END IF; RETURN NULL; END'; "
		 "DROP TRIGGER IF EXISTS tg_test_slow_commit ON reservations; "
		 "CREATE CONSTRAINT TRIGGER tg_test_slow_commit AFTER DELETE ON reservations DEFERRABLE INITIALLY DEFERRED "
		 "FOR EACH ROW EXECUTE FUNCTION tg_test_slow_commit();", t.id);
	free(psql(sql));
	ck_assert_int_eq(psql_ll("SELECT count(*) FROM pg_trigger WHERE tgname = 'tg_test_slow_commit'"), 1);
	send_inflight(&d, &s2, t.key, path, "{}");
	usleep(700 * 1000); /* noted; its COMMIT sleeping in the trigger */
	ck_assert_int_eq(redis_cmd("CLIENT PAUSE 6000 WRITE"), 0);
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM reservations WHERE tenant_id = '%s'", t.id);
	wait_count(sql, 0);
	free(psql("DROP TRIGGER IF EXISTS tg_test_slow_commit ON reservations; DROP FUNCTION IF EXISTS tg_test_slow_commit();"));
	kill_while_paused(&s2, &d);
	wait_state(&S, t.key, "rel", "cap", 0, 0, 5000, "after the survivor recovered the journal");
}
END_TEST

/* A live update that fails after its commit (Redis held back past the client's 2 s timeout): the instance
 * drops the counters that update would have moved once Redis answers again, and they rebuild exactly. */
START_TEST(failed_live_update_is_rebuilt)
{
	static const char *const env[] = {"TOLLGATE_REQUEST_TIMEOUT_MS=20000", NULL};
	struct srv s2 = {0};

	srv_start(&s2, env);
	struct tenant t = quota_tenant(&s2);
	expect_status(&s2, "POST", "/v1/events", t.key,
		      "{\"id\":\"ev-1\",\"customer_id\":\"miss\",\"type\":\"llm\",\"properties\":{\"tokens\":1}}", 200);
	wait_state(&s2, t.key, "miss", "cap", 1, 0, 1000, "the first event");
	ck_assert_int_eq(redis_cmd("CLIENT PAUSE 5000 WRITE"), 0);
	expect_status(&s2, "POST", "/v1/events", t.key,
		      "{\"id\":\"ev-2\",\"customer_id\":\"miss\",\"type\":\"llm\",\"properties\":{\"tokens\":5}}", 200);
	wait_state(&s2, t.key, "miss", "cap", 6, 0, 8000, "after Redis came back");
	ck_assert_int_gt(srv_metric(&s2, "tollgate_live_counters_dropped_total "), 0);
	srv_stop(&s2);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("restarts");
	TCase *tc = tcase_create("restarts");

	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, postgres_restart);
	tcase_add_test(tc, redis_restart);
	tcase_add_test(tc, kill9_mid_check_leaves_no_phantom_usage_or_hold);
	tcase_add_test(tc, kill9_after_commit_leaves_no_usage_out);
	tcase_add_test(tc, failed_live_update_is_rebuilt);
	tcase_add_test(tc, kill9_mid_credit_leaves_no_balance_out);
	tcase_add_test(tc, kill9_mid_release_leaves_no_hold);
	tcase_add_test(tc, commit_answer_lost_rebuilds_the_balance);
	tcase_add_test(tc, event_commit_answer_lost_rebuilds_the_counters);
	tcase_add_test(tc, network_break_mid_commit_waits_for_the_outcome);
	suite_add_tcase(s, tc);
	return run_suite(s);
}

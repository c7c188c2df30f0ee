/* test_hot.c — the hot layer's after-commit rules against the real Redis of scripts/test: a consuming
 * check's usage is in Redis before its event commits, so after the commit it is added again only when a
 * rebuild replaced the counter meanwhile (its mark changed), and a failed commit takes it back only
 * when none did. Keys live under a tenant id of this process. */
#include <arpa/inet.h>
#include <check.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "tollgate/hot.h"
#include "tollgate/loop.h"
#include "tollgate/policy.h"
#include "tollgate/util.h"

static char tenant[64];
static struct policy_meter meter = {.id = "tokens", .agg = AGG_SUM};
static struct policy_limit quota = {.id = "q", .kind = POLICY_QUOTA, .meter = &meter, .period = PERIOD_MONTH};
static struct tg_arena A;
static redisContext *rc; /* raw commands, to set up and read counters */

static void setup(void)
{
	struct tg_error err;

	ck_assert_msg(getenv("TOLLGATE_REDIS_URL"), "TOLLGATE_REDIS_URL is not set (run through scripts/test)");
	ck_assert_int_eq(hot_init(getenv("TOLLGATE_REDIS_URL"), &err), 0);
	char host[64] = "127.0.0.1";
	int port = 6379;
	ck_assert(sscanf(getenv("TOLLGATE_REDIS_URL"), "redis://%63[^:/]:%d", host, &port) >= 1);
	rc = redisConnect(host, port);
	ck_assert_msg(rc && !rc->err, "redis %s:%d: %s", host, port, rc ? rc->errstr : "no memory");
	snprintf(tenant, sizeof(tenant), "ten_hottest%d", (int)getpid());
	tg_arena_init(&A);
}

static void teardown(void)
{
	tg_arena_release(&A);
	hot_thread_end();
	redisFree(rc);
}

static struct policy_counter counter(tg_fixed amount)
{
	return (struct policy_counter){.limit = &quota, .subject_kind = SUBJECT_CUSTOMER, .subject = "c",
				       .period_start_ms = 1795305600000LL, .period_end_ms = INT64_MAX, .amount = amount,
				       .consume = true};
}

static redisReply *cmd(const char *a0, const char *a1, const char *a2, const char *a3)
{
	const char *argv[] = {a0, a1, a2, a3};
	int argc = a3 ? 4 : a2 ? 3 : 2;
	redisReply *r = redisCommandArgv(rc, argc, argv, NULL);

	ck_assert_msg(r != NULL && r->type != REDIS_REPLY_ERROR, "redis %s: %s", a0, r ? r->str : rc->errstr);
	return r;
}

static long long field(const char *key, const char *f)
{
	redisReply *r = cmd("HGET", key, f, NULL);
	long long v = r->type == REDIS_REPLY_STRING ? atoll(r->str) : -1;
	freeReplyObject(r);
	return v;
}

/* The counter as a rebuild leaves it: u, no reservations, mark e. */
static const char *set_counter(long long u, long long mark)
{
	struct policy_counter c = counter(0);
	const char *key = hot_counter_key(&A, tenant, &c);
	char us[32], es[32];

	freeReplyObject(cmd("DEL", key, NULL, NULL));
	snprintf(us, sizeof(us), "%lld", u);
	snprintf(es, sizeof(es), "%lld", mark);
	freeReplyObject(cmd("HSET", key, "u", us));
	freeReplyObject(cmd("HSET", key, "e", es));
	return key;
}

static void apply(tg_fixed amount, long long mark, int rule)
{
	struct policy_counter c = counter(amount);
	struct tg_error err;

	c.mark = mark;
	c.mark_rule = rule;
	ck_assert_int_eq(hot_apply_usage(tenant, &c, 1, 1795305600000LL, NULL, 0, NULL, 0, &A, &err), 0);
}

START_TEST(applied_again_only_after_a_rebuild)
{
	const char *key = set_counter(100, 7);
	apply(5, 7, MARK_APPLY_IF_REBUILT); /* the same counter the check moved: nothing more */
	ck_assert_int_eq(field(key, "u"), 100);
	apply(5, 6, MARK_APPLY_IF_REBUILT); /* rebuilt since (mark 6 → 7): the rebuild left it out */
	ck_assert_int_eq(field(key, "u"), 105);
	apply(5, 0, MARK_APPLY_IF_REBUILT); /* the check saw a counter without a mark: rebuilt since too */
	ck_assert_int_eq(field(key, "u"), 110);
	apply(5, 7, MARK_NONE); /* an event's usage: always */
	ck_assert_int_eq(field(key, "u"), 115);
	/* a counter that is gone is left alone (its rebuild reads the committed usage) */
	freeReplyObject(cmd("DEL", key, NULL, NULL));
	apply(5, 6, MARK_APPLY_IF_REBUILT);
	ck_assert_int_eq(field(key, "u"), -1);
}
END_TEST

START_TEST(taken_back_only_without_a_rebuild)
{
	const char *key = set_counter(100, 7);
	apply(-5, 7, MARK_UNDO_IF_NOT_REBUILT); /* the check's usage is still there: out it goes */
	ck_assert_int_eq(field(key, "u"), 95);
	apply(-5, 6, MARK_UNDO_IF_NOT_REBUILT); /* rebuilt since: the rebuild never had it */
	ck_assert_int_eq(field(key, "u"), 95);
}
END_TEST

START_TEST(rebuild_gives_a_new_mark)
{
	struct policy_counter c = counter(0);
	const char *key = hot_counter_key(&A, tenant, &c);
	struct tg_error err;

	freeReplyObject(cmd("DEL", key, NULL, NULL));
	c.has_init = true;
	c.init = 40;
	ck_assert_int_eq(hot_init_counters(tenant, &c, 1, 1795305600000LL, NULL, &A, &err), 0);
	long long m1 = field(key, "e");
	ck_assert_int_eq(field(key, "u"), 40);
	ck_assert_int_gt(m1, 0);
	freeReplyObject(cmd("DEL", key, NULL, NULL));
	usleep(2000);
	ck_assert_int_eq(hot_init_counters(tenant, &c, 1, 1795305600000LL, NULL, &A, &err), 0);
	ck_assert_int_ne(field(key, "e"), m1);
	/* a counter that exists is not replaced */
	long long m2 = field(key, "e");
	c.init = 99;
	ck_assert_int_eq(hot_init_counters(tenant, &c, 1, 1795305600000LL, NULL, &A, &err), 0);
	ck_assert_int_eq(field(key, "u"), 40);
	ck_assert_int_eq(field(key, "e"), m2);
	freeReplyObject(cmd("DEL", key, NULL, NULL));
}
END_TEST

/* The same rules for a live balance: a consuming check's debit (ba), its failed commit (br), and the
 * mark a rebuild (bi) gives it. */
START_TEST(balance_debits_follow_the_mark)
{
	struct hot_balance b = {.owner = "c", .has_init = true, .init_balance = 1000};
	const char *key = hot_balance_key(&A, tenant, "c");
	struct tg_error err;

	freeReplyObject(cmd("DEL", key, NULL, NULL));
	ck_assert_int_eq(hot_init_counters(tenant, NULL, 0, 1795305600000LL, &b, &A, &err), 0);
	long long mark = field(key, "e");
	ck_assert_int_gt(mark, 0);
	ck_assert_int_eq(field(key, "b"), 1000);
	struct hot_balance_delta d = {.owner = "c", .amount = -10, .mark = mark, .mark_rule = MARK_APPLY_IF_REBUILT};
	ck_assert_int_eq(hot_apply_usage(tenant, NULL, 0, 1795305600000LL, &d, 1, NULL, 0, &A, &err), 0);
	ck_assert_int_eq(field(key, "b"), 1000); /* the check's debit is still there */
	d.mark = mark - 1;
	ck_assert_int_eq(hot_apply_usage(tenant, NULL, 0, 1795305600000LL, &d, 1, NULL, 0, &A, &err), 0);
	ck_assert_int_eq(field(key, "b"), 990); /* rebuilt since: debited again */
	d = (struct hot_balance_delta){.owner = "c", .amount = 10, .mark = mark, .mark_rule = MARK_UNDO_IF_NOT_REBUILT};
	ck_assert_int_eq(hot_apply_usage(tenant, NULL, 0, 1795305600000LL, &d, 1, NULL, 0, &A, &err), 0);
	ck_assert_int_eq(field(key, "b"), 1000); /* a failed commit gives it back */
	d.mark = mark + 1;
	ck_assert_int_eq(hot_apply_usage(tenant, NULL, 0, 1795305600000LL, &d, 1, NULL, 0, &A, &err), 0);
	ck_assert_int_eq(field(key, "b"), 1000); /* not when a rebuild already left it out */
	freeReplyObject(cmd("DEL", key, NULL, NULL));
}
END_TEST

/* ---- one batch: the checks of one loop pass share one EVALSHA, each answered on its own ---- */

static struct policy_limit capped = {.id = "cap", .kind = POLICY_QUOTA, .meter = &meter, .period = PERIOD_MONTH,
				     .limit = 1000, .enforcement = ENF_HARD};
/* a limit past 4e15 micro-units: check.lua compares it as {hi, lo}, not as a double */
static struct policy_limit wide = {.id = "wide", .kind = POLICY_QUOTA, .meter = &meter, .period = PERIOD_MONTH,
				   .limit = 2000000000000000007LL, .enforcement = ENF_HARD};

struct batch_run {
	struct tg_loop *loop;
	int left;
};

static void batch_done(void *arg)
{
	struct batch_run *b = arg;

	if (--b->left == 0)
		tg_loop_stop(b->loop);
}

static struct hot_check one_check(struct policy_counter *c, const struct policy_limit *l, const char *subject,
				  tg_fixed amount)
{
	*c = (struct policy_counter){.limit = l, .subject_kind = SUBJECT_CUSTOMER, .subject = subject,
				     .period_start_ms = 1795305600000LL, .period_end_ms = INT64_MAX, .amount = amount,
				     .consume = true};
	return (struct hot_check){.tenant_id = tenant, .cs = c, .n = 1, .now_ms = 1795305600000LL};
}

static const char *quota_key(struct policy_counter *c, const struct policy_limit *l, const char *subject,
			     const char *used)
{
	struct hot_check hc = one_check(c, l, subject, 0);
	const char *key = hot_counter_key(&A, hc.tenant_id, c);

	freeReplyObject(cmd("DEL", key, NULL, NULL));
	if (used) {
		freeReplyObject(cmd("HSET", key, "u", used));
		freeReplyObject(cmd("HSET", key, "r", "0"));
	}
	return key;
}

START_TEST(one_batch_answers_each_check_alone)
{
	enum { N = 6 };
	struct policy_counter c[N];
	struct hot_check hc[N];
	struct batch_run run = {.loop = tg_loop_new(), .left = N};
	const char *subj[N] = {"b0", "b1", "b2", "b3", "b4", "b5"};
	const struct policy_limit *lim[N] = {&capped, &capped, &capped, &wide, &capped, &capped};
	const char *used[N] = {"990", "995", NULL, "1999999999999999990", "100", NULL};
	const char *keys[N];

	for (int i = 0; i < N; i++)
		keys[i] = quota_key(&c[i], lim[i], subj[i], used[i]);
	/* b2: not a hash, so HMGET fails inside the script; b5: missing, for a rebuild */
	freeReplyObject(cmd("SET", keys[2], "not a hash", NULL));
	ck_assert_int_eq(hot_loop_init(run.loop, 0), 0);
	/* all queued before the loop's first pass ends: one batch */
	for (int i = 0; i < N; i++) {
		hc[i] = one_check(&c[i], lim[i], subj[i], 10);
		ck_assert_int_eq(hot_check_async(&hc[i], &A, batch_done, &run), 0);
	}
	tg_loop_run(run.loop);

	/* plain numbers: 990 + 10 is the limit exactly (allowed), 995 + 10 is past it (denied, untouched) */
	ck_assert_int_eq(hc[0].status, HOT_DONE);
	ck_assert(hc[0].allowed);
	ck_assert_int_eq(c[0].used, 1000);
	ck_assert_int_eq(field(keys[0], "u"), 1000);
	ck_assert_int_eq(hc[1].status, HOT_DONE);
	ck_assert(!hc[1].allowed);
	ck_assert_int_eq(c[1].used, 995);
	ck_assert_int_eq(field(keys[1], "u"), 995);
	ck_assert_int_eq(hc[2].status, HOT_ERROR); /* its script error is its own */
	ck_assert_int_eq(hc[3].status, HOT_DONE);  /* exact past 2^53: 1999999999999999990 + 10 fits */
	ck_assert(hc[3].allowed);
	ck_assert_int_eq(c[3].used, 2000000000000000000LL);
	ck_assert_int_eq(hc[4].status, HOT_DONE); /* after a wide value, the generic arithmetic */
	ck_assert(hc[4].allowed);
	ck_assert_int_eq(c[4].used, 110);
	ck_assert_int_eq(hc[5].status, HOT_MISSING);
	ck_assert(c[5].missing);
	for (int i = 0; i < N; i++)
		freeReplyObject(cmd("DEL", keys[i], NULL, NULL));
}
END_TEST

/* ---- a connection lost under a command ---- */

/* A stand-in Redis on a free port: it answers every command +PONG, except the one numbered close_on
 * (counting over all connections, from 1), whose connection it closes instead of answering: a restart
 * between a command and its reply; or it closes the connection once it answered the one numbered
 * close_after: a restart while the connection is idle. It notes the name of each command it got. */
struct fake_redis {
	int fd, port, close_on, close_after;
	_Atomic int conns, cmds;
	_Atomic bool stop;
	char names[8][16];
	pthread_t th;
};

static void fake_serve(struct fake_redis *f, int c)
{
	redisReader *rd = redisReaderCreate();
	char buf[4096];
	ssize_t n;
	void *cmd;

	while ((n = read(c, buf, sizeof(buf))) > 0) {
		redisReaderFeed(rd, buf, (size_t)n);
		while (redisReaderGetReply(rd, &cmd) == REDIS_OK && cmd) {
			redisReply *r = cmd;
			int k = atomic_fetch_add(&f->cmds, 1) + 1;
			if (k <= 8 && r->type == REDIS_REPLY_ARRAY && r->elements > 0)
				snprintf(f->names[k - 1], sizeof(f->names[0]), "%s", r->element[0]->str);
			freeReplyObject(r);
			if (k == f->close_on)
				goto out;
			if (write(c, "+PONG\r\n", 7) != 7 || k == f->close_after)
				goto out;
		}
	}
out:
	redisReaderFree(rd);
	close(c);
}

static void *fake_main(void *arg)
{
	struct fake_redis *f = arg;

	while (!atomic_load(&f->stop)) {
		struct pollfd p = {.fd = f->fd, .events = POLLIN};
		if (poll(&p, 1, 50) <= 0)
			continue;
		int c = accept(f->fd, NULL, NULL);
		if (c < 0)
			continue;
		atomic_fetch_add(&f->conns, 1);
		fake_serve(f, c); /* one client at a time: the test's thread */
	}
	return NULL;
}

static void fake_start(struct fake_redis *f, int close_on, int close_after)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	char url[64];
	struct tg_error err;

	memset(f, 0, sizeof(*f));
	f->close_on = close_on;
	f->close_after = close_after;
	f->fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert(f->fd >= 0 && bind(f->fd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(f->fd, 8) == 0);
	ck_assert(getsockname(f->fd, (struct sockaddr *)&a, &len) == 0);
	f->port = ntohs(a.sin_port);
	ck_assert(pthread_create(&f->th, NULL, fake_main, f) == 0);
	hot_thread_end();
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", f->port);
	ck_assert_int_eq(hot_init(url, &err), 0);
}

static void fake_stop(struct fake_redis *f)
{
	struct tg_error err;

	hot_thread_end();
	atomic_store(&f->stop, true);
	pthread_join(f->th, NULL);
	close(f->fd);
	ck_assert_int_eq(hot_init(getenv("TOLLGATE_REDIS_URL"), &err), 0);
}

/* A rebuild of one counter: sends the usage script. */
static int send_usage_script(struct tg_error *err)
{
	struct policy_counter c = counter(TG_FIXED_SCALE);

	c.has_init = true;
	return hot_init_counters(tenant, &c, 1, 1795305600000LL, NULL, &A, err);
}

/* A read (PING) is sent again on a fresh connection: running it twice is running it once. */
START_TEST(read_sent_again_after_lost_connection)
{
	static struct fake_redis f;
	struct tg_error err;

	fake_start(&f, 2, 0);
	ck_assert(hot_ping(&err)); /* the connection is made */
	ck_assert_msg(hot_ping(&err), "PING after the connection broke under it: %s", err.detail);
	ck_assert_int_eq(atomic_load(&f.conns), 2);
	ck_assert_int_eq(atomic_load(&f.cmds), 3);
	fake_stop(&f);
}
END_TEST

/* A script (it counts usage) is not: it may have run before the connection broke. */
START_TEST(script_not_sent_again_after_lost_connection)
{
	static struct fake_redis f;
	struct tg_error err;

	fake_start(&f, 2, 0);
	ck_assert(hot_ping(&err));
	ck_assert_int_lt(send_usage_script(&err), 0);
	ck_assert_str_eq(f.names[1], "EVALSHA");
	ck_assert_int_eq(atomic_load(&f.cmds), 2);
	ck_assert_int_eq(atomic_load(&f.conns), 1);
	fake_stop(&f);
}
END_TEST

/* A connection the server closed while idle is replaced before a command goes out: even a script,
 * which is never sent twice, is sent once, on the new connection, and succeeds. */
START_TEST(closed_while_idle_is_replaced_before_sending)
{
	static struct fake_redis f;
	struct tg_error err;

	fake_start(&f, 0, 1);
	ck_assert(hot_ping(&err));
	usleep(50 * 1000); /* the close (right after the reply) reaches this side */
	ck_assert_msg(send_usage_script(&err) == 0, "%s", err.detail);
	ck_assert_int_eq(atomic_load(&f.conns), 2);
	ck_assert_str_eq(f.names[1], "EVALSHA");
	fake_stop(&f);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("hot");
	TCase *tc = tcase_create("marks");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, applied_again_only_after_a_rebuild);
	tcase_add_test(tc, taken_back_only_without_a_rebuild);
	tcase_add_test(tc, rebuild_gives_a_new_mark);
	tcase_add_test(tc, balance_debits_follow_the_mark);
	suite_add_tcase(s, tc);
	tc = tcase_create("batch");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, one_batch_answers_each_check_alone);
	suite_add_tcase(s, tc);
	tc = tcase_create("lost");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, read_sent_again_after_lost_connection);
	tcase_add_test(tc, script_not_sent_again_after_lost_connection);
	tcase_add_test(tc, closed_while_idle_is_replaced_before_sending);
	suite_add_tcase(s, tc);
	return run_suite(s);
}

/* redis.c — the pipelined async Redis connection of each event loop, and the blocking one of workers. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "tollgate/log.h"
#include "tollgate/loop.h"
#include "tollgate/metrics.h"
#include "tollgate/util.h"

static struct {
	char host[256];
	int port;
	int db;
} R;

/* Failures for /metrics, on the loops' connections and the workers' alike. NOSCRIPT is not one: the
 * script is loaded again and the command resent. */
#define REDIS_ERRORS_HELP \
	"Redis failures: connections that failed or were lost (also ones the server closed while idle, e.g. by " \
	"its timeout setting), commands that timed out (kind=connection), " \
	"error replies to a command or to one check of a batch (kind=command)."
static struct tg_metric *m_conn_errors, *m_cmd_errors;

static void count_error(struct tg_metric *m)
{
	if (m) /* NULL before hot_init */
		tg_metric_add(m, 1);
}

static bool is_noscript(const redisReply *r)
{
	return r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0;
}

/* A reply's errors: the reply itself, or the elements of a script's table (one per check of a batch). */
static void count_reply_errors(const redisReply *r)
{
	if (r->type == REDIS_REPLY_ERROR && !is_noscript(r))
		count_error(m_cmd_errors);
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
		if (r->element[i]->type == REDIS_REPLY_ERROR)
			count_error(m_cmd_errors);
}

int hot_init(const char *url, struct tg_error *err)
{
	const char *p = url;
	const char *colon, *slash;
	int64_t v;

	if (strncmp(p, "redis://", 8) != 0)
		return tg_fail(err, TG_EINVAL, NULL, NULL, "TOLLGATE_REDIS_URL must start with redis://");
	p += 8;
	if (strchr(p, '@'))
		return tg_fail(err, TG_EINVAL, NULL, NULL, "TOLLGATE_REDIS_URL: passwords are not supported (hiredis 0.14 without AUTH here)");
	slash = strchr(p, '/');
	colon = strchr(p, ':');
	if (colon && slash && colon > slash)
		colon = NULL;
	size_t hlen = colon ? (size_t)(colon - p) : slash ? (size_t)(slash - p) : strlen(p);
	if (hlen == 0 || hlen >= sizeof(R.host))
		return tg_fail(err, TG_EINVAL, NULL, NULL, "TOLLGATE_REDIS_URL: no host");
	memcpy(R.host, p, hlen);
	R.host[hlen] = '\0';
	R.port = 6379;
	if (colon) {
		char port[8];
		size_t plen = slash ? (size_t)(slash - colon - 1) : strlen(colon + 1);
		if (plen == 0 || plen >= sizeof(port))
			return tg_fail(err, TG_EINVAL, NULL, NULL, "TOLLGATE_REDIS_URL: bad port");
		memcpy(port, colon + 1, plen);
		port[plen] = '\0';
		if (!tg_parse_i64(port, 1, 65535, &v))
			return tg_fail(err, TG_EINVAL, NULL, NULL, "TOLLGATE_REDIS_URL: bad port");
		R.port = (int)v;
	}
	R.db = 0;
	if (slash && slash[1]) {
		if (!tg_parse_i64(slash + 1, 0, 1000, &v))
			return tg_fail(err, TG_EINVAL, NULL, NULL, "TOLLGATE_REDIS_URL: bad database number");
		R.db = (int)v;
	}
	hot_scripts_init();
	m_conn_errors = tg_counter("tollgate_redis_errors_total", REDIS_ERRORS_HELP, "kind=\"connection\"");
	m_cmd_errors = tg_counter("tollgate_redis_errors_total", REDIS_ERRORS_HELP, "kind=\"command\"");
	return 0;
}

/* ---- the async connection of a loop ---- */

struct pending {
	hot_cb cb;
	void *arg;
	char *cmd; /* a batch's command (malloc'd), kept to resend after NOSCRIPT */
	size_t len;
	const struct hot_script *script;
};

/* The checks of one loop pass, gathered into one EVALSHA of their script (sent at the end of the pass). */
struct batch_item {
	hot_cb cb;
	void *arg;
};

struct batch {
	const struct hot_script *script;
	struct tg_buf keys; /* every item's keys, as RESP bulk strings */
	struct tg_buf arg;  /* every item's part of the one argument, one after the other */
	struct batch_item *items;
	int n, cap, nkeys;
};

/* A batch on the wire: its items, answered from the elements of the script's reply. */
struct batch_sent {
	int n;
	struct batch_item items[];
};

/* A batch is sent when it has this many items or argument bytes (or at the end of the pass). */
#define BATCH_MAX_ITEMS 128
#define BATCH_MAX_BYTES (256 * 1024)

struct async_conn {
	struct tg_loop *loop;
	struct batch batch;
	redisContext *c;
	bool connected, want_write, registered;
	struct pending *q; /* ring buffer */
	size_t qcap, qhead, qlen;
	int64_t retry_at_us, backoff_us;
	int index;
};

static _Thread_local struct async_conn *AC;

static void q_push(struct async_conn *ac, struct pending p)
{
	if (ac->qlen == ac->qcap) {
		size_t ncap = ac->qcap ? ac->qcap * 2 : 256;
		struct pending *nq = tg_malloc(ncap * sizeof(*nq));
		for (size_t i = 0; i < ac->qlen; i++)
			nq[i] = ac->q[(ac->qhead + i) % ac->qcap];
		free(ac->q);
		ac->q = nq;
		ac->qcap = ncap;
		ac->qhead = 0;
	}
	ac->q[(ac->qhead + ac->qlen) % ac->qcap] = p;
	ac->qlen++;
}

static struct pending q_pop(struct async_conn *ac)
{
	struct pending p = ac->q[ac->qhead];
	ac->qhead = (ac->qhead + 1) % ac->qcap;
	ac->qlen--;
	return p;
}

static void nothing(void *arg, redisReply *r)
{
	TG_UNUSED(arg);
	if (r && r->type == REDIS_REPLY_ERROR)
		log_warn("redis setup command failed", "%s", r->str);
}

static void on_fd(void *arg, uint32_t events);

/* Every call is a failure: a connect that failed, or a connection lost. */
static void drop(struct async_conn *ac, const char *why)
{
	count_error(m_conn_errors);
	if (ac->c) {
		log_warn("redis connection lost", "loop %d: %s", ac->index, why);
		if (ac->registered)
			tg_loop_del_fd(ac->loop, ac->c->fd);
		redisFree(ac->c);
		ac->c = NULL;
	}
	ac->registered = ac->connected = ac->want_write = false;
	/* fail everything in flight: callers answer per fail_mode */
	while (ac->qlen) {
		struct pending p = q_pop(ac);
		free(p.cmd);
		p.cb(p.arg, NULL);
	}
	/* 50 ms doubling to 250 ms: a refused connect costs microseconds, while every check that arrives after
	 * Redis is back but before the next attempt is answered by its fail_mode (503 or degraded); with 2 s
	 * that window lasted up to 2 s after /readyz already said ready */
	ac->backoff_us = ac->backoff_us ? (ac->backoff_us * 2 > 250000 ? 250000 : ac->backoff_us * 2) : 50000;
	ac->retry_at_us = tg_mono_us() + ac->backoff_us;
}

static void append_raw(struct async_conn *ac, const char *cmd, size_t len)
{
	redisAppendFormattedCommand(ac->c, cmd, len);
	ac->want_write = true;
}

static void send_simple(struct async_conn *ac, int argc, const char **argv)
{
	char *cmd;
	int len = redisFormatCommandArgv(&cmd, argc, argv, NULL);

	if (len < 0)
		return;
	append_raw(ac, cmd, (size_t)len);
	redisFreeCommand(cmd);
	q_push(ac, (struct pending){.cb = nothing});
}

/* First commands on a fresh connection: SELECT and every script, ahead of any request. */
static void send_setup(struct async_conn *ac)
{
	if (R.db) {
		char db[12];
		snprintf(db, sizeof(db), "%d", R.db);
		const char *argv[] = {"SELECT", db};
		send_simple(ac, 2, argv);
	}
	for (int i = 0; i < hot_nscripts; i++) {
		const char *argv[] = {"SCRIPT", "LOAD", hot_scripts[i]->source};
		send_simple(ac, 3, argv);
	}
}

static void dial(struct async_conn *ac)
{
	int one = 1;

	ac->c = redisConnectNonBlock(R.host, R.port);
	if (!ac->c || ac->c->err) {
		const char *why = ac->c ? ac->c->errstr : "out of memory";
		char msg[160];
		snprintf(msg, sizeof(msg), "connect: %s", why);
		if (ac->c) {
			redisFree(ac->c);
			ac->c = NULL;
		}
		drop(ac, msg);
		return;
	}
	setsockopt(ac->c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	tg_loop_add_fd(ac->loop, ac->c->fd, EPOLLIN | EPOLLOUT, on_fd, ac);
	ac->registered = true;
	ac->connected = false; /* until the socket turns writable */
	send_setup(ac);
}

static void flush(struct async_conn *ac)
{
	int done = 0;

	if (!ac->c || !ac->connected || !ac->want_write)
		return;
	while (!done) {
		if (redisBufferWrite(ac->c, &done) != REDIS_OK) {
			drop(ac, ac->c->errstr);
			return;
		}
		if (!done)
			break; /* the socket is full: wait for EPOLLOUT */
	}
	ac->want_write = !done;
	tg_loop_mod_fd(ac->loop, ac->c->fd, EPOLLIN | (done ? 0 : EPOLLOUT));
}

static void resend_after_noscript(struct async_conn *ac, struct pending p)
{
	const char *argv[] = {"SCRIPT", "LOAD", p.script->source};

	log_warn("redis lost its scripts", "reloading '%s'", p.script->name);
	send_simple(ac, 3, argv);
	append_raw(ac, p.cmd, p.len);
	q_push(ac, p);
}

static void read_replies(struct async_conn *ac)
{
	void *reply;

	if (redisBufferRead(ac->c) != REDIS_OK) {
		drop(ac, ac->c->errstr[0] ? ac->c->errstr : "connection closed");
		return;
	}
	for (;;) {
		if (redisGetReplyFromReader(ac->c, &reply) != REDIS_OK) {
			drop(ac, ac->c->errstr);
			return;
		}
		if (!reply)
			break;
		if (ac->qlen == 0) {
			freeReplyObject(reply);
			drop(ac, "a reply nobody asked for");
			return;
		}
		struct pending p = q_pop(ac);
		redisReply *r = reply;
		if (p.script && is_noscript(r)) {
			freeReplyObject(reply);
			resend_after_noscript(ac, p);
			continue;
		}
		count_reply_errors(r);
		p.cb(p.arg, r);
		freeReplyObject(reply);
		free(p.cmd);
		if (!ac->c)
			return; /* a callback can drop the connection */
	}
}

static void on_fd(void *arg, uint32_t events)
{
	struct async_conn *ac = arg;

	if (!ac->c)
		return;
	if (!ac->connected && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
		int soerr = 0;
		socklen_t len = sizeof(soerr);
		getsockopt(ac->c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
		if (soerr != 0) {
			char msg[160];
			snprintf(msg, sizeof(msg), "connect: %s", strerror(soerr));
			drop(ac, msg);
			return;
		}
		ac->connected = true;
		ac->backoff_us = 0;
		ac->c->flags |= REDIS_CONNECTED;
		log_info("redis connected", "loop %d to %s:%d", ac->index, R.host, R.port);
	}
	if (events & (EPOLLERR | EPOLLHUP) && !(events & EPOLLIN)) {
		drop(ac, "socket error");
		return;
	}
	if (events & EPOLLIN)
		read_replies(ac);
	if (ac->c && (events & EPOLLOUT))
		ac->want_write = true;
}

/* ---- batches ---- */

static void add_bulk(struct tg_buf *b, const char *s, size_t n)
{
	char num[TG_I64_BUFSZ];
	size_t k = tg_fmt_i64((int64_t)n, num);

	tg_buf_addc(b, '$');
	tg_buf_add(b, num, k);
	tg_buf_add(b, "\r\n", 2);
	tg_buf_add(b, s, n);
	tg_buf_add(b, "\r\n", 2);
}

/* The script's reply is a table with one element per item, in order. */
static void on_batch(void *arg, redisReply *r)
{
	struct batch_sent *s = arg;
	bool split = r && r->type == REDIS_REPLY_ARRAY && r->elements == (size_t)s->n;

	if (r && !split && r->type != REDIS_REPLY_ERROR)
		log_warn("batched script failed", "unexpected reply (type %d, %zu elements for %d items)", r->type,
			 r->type == REDIS_REPLY_ARRAY ? r->elements : 0, s->n);
	for (int i = 0; i < s->n; i++)
		s->items[i].cb(s->items[i].arg, split ? r->element[i] : r && r->type == REDIS_REPLY_ERROR ? r : NULL);
	free(s);
}

/* Send the gathered batch as one EVALSHA (keys, then the one argument); without a connection, its items
 * are answered with NULL. */
static void batch_send(struct async_conn *ac)
{
	struct batch *b = &ac->batch;
	struct batch_sent *s;
	struct tg_buf cmd = {0};
	char num[TG_I64_BUFSZ];
	size_t len;

	if (b->n == 0)
		return;
	s = tg_malloc(sizeof(*s) + sizeof(s->items[0]) * (size_t)b->n);
	s->n = b->n;
	memcpy(s->items, b->items, sizeof(s->items[0]) * (size_t)b->n);
	if (ac->c) {
		/* at once: grown by doubling, this buffer cost a realloc chain (and glibc a consolidation) per pass */
		tg_buf_grow(&cmd, 128 + b->keys.len + b->arg.len);
		tg_buf_addc(&cmd, '*');
		tg_buf_add(&cmd, num, tg_fmt_i64(4 + b->nkeys, num));
		tg_buf_add(&cmd, "\r\n", 2);
		add_bulk(&cmd, "EVALSHA", 7);
		add_bulk(&cmd, b->script->sha, 40);
		add_bulk(&cmd, num, tg_fmt_i64(b->nkeys, num));
		tg_buf_add(&cmd, b->keys.buf, b->keys.len);
		add_bulk(&cmd, b->arg.buf, b->arg.len);
	}
	b->n = b->nkeys = 0;
	tg_buf_reset(&b->keys);
	tg_buf_reset(&b->arg);
	if (!ac->c) {
		on_batch(s, NULL);
		return;
	}
	char *raw = tg_buf_detach(&cmd, &len);
	append_raw(ac, raw, len);
	q_push(ac, (struct pending){.cb = on_batch, .arg = s, .cmd = raw, .len = len, .script = b->script});
}

static void on_pass_end(void *arg)
{
	struct async_conn *ac = arg;

	if (!ac->c && tg_mono_us() >= ac->retry_at_us)
		dial(ac); /* first, so that this pass's checks ride the new connection */
	batch_send(ac);
	flush(ac);
}

static int64_t redis_timeout(void *arg)
{
	struct async_conn *ac = arg;

	if (ac->c)
		return -1;
	int64_t ms = (ac->retry_at_us - tg_mono_us()) / 1000;
	return ms < 0 ? 0 : ms;
}

int hot_loop_init(struct tg_loop *loop, int index)
{
	struct async_conn *ac = tg_calloc(1, sizeof(*ac));

	ac->loop = loop;
	ac->index = index;
	AC = ac;
	tg_loop_on_pass_end(loop, on_pass_end, ac);
	tg_loop_on_timeout(loop, redis_timeout, ac);
	dial(ac);
	return 0;
}

bool hot_loop_connected(void)
{
	return AC && AC->c && AC->connected;
}

int hot_async_batch(const struct hot_script *s, int nkeys, const char **keys, const size_t *keylens, const char *part,
		    size_t partlen, hot_cb cb, void *arg)
{
	struct async_conn *ac = AC;
	struct batch *b;

	if (!ac || !ac->c)
		return -1;
	b = &ac->batch;
	if (b->n && (b->script != s || b->n >= BATCH_MAX_ITEMS || b->arg.len + partlen > BATCH_MAX_BYTES))
		batch_send(ac);
	b->script = s;
	for (int i = 0; i < nkeys; i++)
		add_bulk(&b->keys, keys[i], keylens ? keylens[i] : strlen(keys[i]));
	b->nkeys += nkeys;
	tg_buf_add(&b->arg, part, partlen);
	if (b->n == b->cap) {
		b->cap = b->cap ? b->cap * 2 : 32;
		b->items = tg_realloc(b->items, sizeof(*b->items) * (size_t)b->cap);
	}
	b->items[b->n++] = (struct batch_item){.cb = cb, .arg = arg};
	return 0;
}

/* ---- blocking connections (worker threads) ---- */

static _Thread_local redisContext *SC;

void hot_thread_end(void)
{
	if (SC)
		redisFree(SC);
	SC = NULL;
}

/*
 * The blocking connection was closed by the server while it sat idle (a restart, CLIENT KILL, a
 * failover): Redis never speaks unasked to a client like this one, so anything to read (the end of the
 * stream) means the connection is gone. Found with one poll(2) that does not wait, before a command is
 * sent, so the command goes on a fresh connection instead of failing: nothing was sent, nothing can
 * have run twice.
 */
static bool closed_while_idle(const redisContext *c)
{
	struct pollfd pfd = {.fd = c->fd, .events = POLLIN};

	return poll(&pfd, 1, 0) > 0;
}

redisContext *hot_sync(struct tg_error *err)
{
	struct timeval tv = {2, 0};

	if (SC && (SC->err || closed_while_idle(SC))) {
		if (!SC->err)
			count_error(m_conn_errors); /* lost while idle: not counted yet */
		redisFree(SC);
		SC = NULL;
	}
	if (SC)
		return SC;
	SC = redisConnectWithTimeout(R.host, R.port, tv);
	if (!SC || SC->err) {
		count_error(m_conn_errors);
		tg_fail(err, TG_EUNAVAIL, "redis_unavailable", NULL, "Redis is unavailable; retry shortly");
		tg_error_detail(err, "redis connect %s:%d: %s", R.host, R.port, SC ? SC->errstr : "out of memory");
		if (SC)
			redisFree(SC);
		SC = NULL;
		return NULL;
	}
	redisSetTimeout(SC, tv);
	if (R.db) {
		redisReply *r = redisCommand(SC, "SELECT %d", R.db);
		if (r)
			freeReplyObject(r);
	}
	return SC;
}

/*
 * DESIGN: when the connection breaks under a command (after it was sent, before its reply), the command
 * may or may not have run. It is sent once more, on a fresh connection, only when running it twice is
 * the same as running it once: a read (PING, MGET). A script (EVALSHA/EVAL) counts usage or
 * moves a balance, so it is never sent again: its caller gets the failure (a check answers per
 * fail_mode). Neither is a command that timed out (the server is slow, not gone: waiting twice as long
 * helps no one). A connection closed while idle is replaced before anything is sent (hot_sync).
 */
static bool repeatable(const char *cmd)
{
	/* reads only: a DEL sent again could delete what was rebuilt in between (a live balance, with a debit
	 * in it that PostgreSQL may not hold yet) */
	return strcasecmp(cmd, "PING") == 0 || strcasecmp(cmd, "MGET") == 0;
}

/* The server closed the connection (rather than not answering in time). */
static bool closed_by_server(const redisContext *c, int errnum)
{
	return c->err == REDIS_ERR_EOF || (c->err == REDIS_ERR_IO && (errnum == ECONNRESET || errnum == EPIPE));
}

redisReply *hot_sync_argv(int argc, const char **argv, const size_t *lens, struct tg_error *err)
{
	redisReply *r = NULL;

	for (int attempt = 0; attempt < 2; attempt++) {
		redisContext *c = hot_sync(err);
		if (!c)
			return NULL;
		errno = 0;
		r = redisCommandArgv(c, argc, argv, lens);
		if (r) {
			count_reply_errors(r);
			break;
		}
		int errnum = errno;
		count_error(m_conn_errors);
		tg_fail(err, TG_EUNAVAIL, "redis_unavailable", NULL, "Redis is unavailable; retry shortly");
		tg_error_detail(err, "redis: %s", c->errstr);
		bool again = closed_by_server(c, errnum) && repeatable(argv[0]);
		redisFree(SC);
		SC = NULL;
		if (!again)
			break;
		log_warn("redis connection lost under a command; sending it again", "%s", argv[0]);
	}
	return r;
}

int hot_sync_pipeline(int n, int argc, const char **argv, const size_t *lens, struct tg_error *err)
{
	redisContext *c = hot_sync(err);
	int rc = 0;

	if (!c)
		return err->err;
	for (int i = 0; i < n; i++)
		if (redisAppendCommandArgv(c, argc, argv + (size_t)i * (size_t)argc,
					   lens ? lens + (size_t)i * (size_t)argc : NULL) != REDIS_OK)
			goto lost;
	for (int i = 0; i < n; i++) {
		redisReply *r;
		if (redisGetReply(c, (void **)&r) != REDIS_OK || !r)
			goto lost;
		count_reply_errors(r);
		if (r->type == REDIS_REPLY_ERROR && rc == 0) {
			rc = tg_fail(err, TG_EUNAVAIL, "redis_error", NULL, "Redis refused a command");
			tg_error_detail(err, "%s", r->str);
		}
		freeReplyObject(r);
	}
	return rc;
lost:
	/* replies may still be owed: the connection cannot be used again */
	count_error(m_conn_errors);
	tg_fail(err, TG_EUNAVAIL, "redis_unavailable", NULL, "Redis is unavailable; retry shortly");
	tg_error_detail(err, "redis: %s", c->errstr[0] ? c->errstr : "pipeline broken");
	redisFree(SC);
	SC = NULL;
	return err->err;
}

redisReply *hot_sync_script(const struct hot_script *s, int nkeys, const char **keys, int nargs, const char **args,
			    const size_t *arglens, struct tg_error *err)
{
	int argc = 3 + nkeys + nargs;
	const char **argv = tg_malloc(sizeof(char *) * (size_t)argc);
	size_t *lens = tg_malloc(sizeof(size_t) * (size_t)argc);
	char nk[12];
	redisReply *r;

	snprintf(nk, sizeof(nk), "%d", nkeys);
	argv[0] = "EVALSHA";
	argv[1] = s->sha;
	argv[2] = nk;
	for (int i = 0; i < nkeys; i++)
		argv[3 + i] = keys[i];
	for (int i = 0; i < nargs; i++)
		argv[3 + nkeys + i] = args[i];
	for (int i = 0; i < argc; i++)
		lens[i] = i >= 3 + nkeys && arglens ? arglens[i - 3 - nkeys] : strlen(argv[i]);
	r = hot_sync_argv(argc, argv, lens, err);
	if (r && is_noscript(r)) {
		freeReplyObject(r);
		argv[0] = "EVAL";
		argv[1] = s->source;
		lens[0] = 4;
		lens[1] = strlen(s->source);
		r = hot_sync_argv(argc, argv, lens, err);
	}
	free(argv);
	free(lens);
	return r;
}

bool hot_ping(struct tg_error *err)
{
	const char *argv[] = {"PING"};
	redisReply *r = hot_sync_argv(1, argv, NULL, err);
	bool ok = r && r->type == REDIS_REPLY_STATUS;

	if (r && !ok)
		tg_fail(err, TG_EUNAVAIL, "redis_unavailable", NULL, "Redis answered PING with an error");
	if (r)
		freeReplyObject(r);
	return ok;
}

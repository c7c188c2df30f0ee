/* server.c — event loops serving HTTP with libmicrohttpd in external-epoll mode (design in http.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tollgate/crypto.h"
#include "tollgate/http.h"
#include "tollgate/json.h"
#include "tollgate/log.h"
#include "tollgate/pool.h"

#define BODY_CAP (1024 * 1024)
#define ACCEPT_BURST 64

static const int tracked_status[] = {200, 201, 204, 400, 401, 402, 403, 404, 405, 409,
				     413, 415, 422, 429, 500, 503};
#define NSTATUS ((int)TG_ARRAY_SIZE(tracked_status) + 1) /* + "other" */
static const double latency_bounds_us[] = {100, 250, 500, 1000, 2500, 5000, 10000, 25000,
					   50000, 100000, 250000, 500000, 1000000, 5000000};
#define NBUCKETS ((int)TG_ARRAY_SIZE(latency_bounds_us) + 1)

/* Per-loop metrics: written only by the loop's thread, read by /metrics with relaxed loads. */
struct route_metrics {
	_Atomic uint64_t status[NSTATUS];
	_Atomic uint64_t buckets[NBUCKETS];
	_Atomic uint64_t sum_us;
};

struct hdr {
	const char *name, *value;
	struct hdr *next;
};

struct qarg {
	const char *name, *value;
};

enum req_state { RS_READING, RS_WAITING, RS_READY };

/* An inline route's Idempotency-Key (see idem_begin_job): claimed on a worker before the handler runs,
 * its reply recorded on a worker before it is sent. */
enum req_idem { IDEM_NONE, IDEM_CLAIMED, IDEM_RECORDING };

struct http_loop;

struct http_req {
	struct tg_req pub;
	struct http_loop *hl;
	struct MHD_Connection *conn;
	enum req_state state;
	int refs;           /* the connection's + the pending operation's */
	bool too_big;
	/* a header the request cannot be trusted with (Content-Length twice with different values): refused
	 * before its upload, on a connection then closed */
	const char *bad_header;
	const char *bad_query; /* a query parameter whose name or value is not UTF-8 (after unescaping) */
	bool timed_out;
	bool suspended;
	bool in_handler;    /* an inline handler is running: a completion now needs no resume */
	bool authenticated; /* the credential was checked (possibly on a worker): dispatch goes on from there */
	bool completed;     /* ... and it completed before returning TG_ASYNC */
	enum req_idem idem;
	bool ran;           /* its inline handler was called */
	/* set when the loop answered 503 in the handler's place (timeout, shutdown): that reply is made from
	 * these alone, since pub's reply, error and headers may still be written by whoever runs the handler */
	const char *cutoff_code, *cutoff_message;
	int early_status;   /* routing error found on arrival: 404/405 */
	unsigned allowed;
	const char *method_name;
	struct tg_buf body;
	int64_t start_us, deadline_us;
	struct hdr *resp_headers;
	struct hdr *req_headers;
	struct qarg *query;
	int nquery;
	struct http_req *prev, *next; /* suspended list, in deadline order */
};

struct http_loop {
	struct tg_http *srv;
	int index;
	struct tg_loop *loop;
	struct MHD_Daemon *d;
	int mhd_fd;
	int listen_fd;
	const char *uri; /* the request target being parsed (see unescape) */
	pthread_t thread;
	bool need_run;
	int inflight;
	struct http_req *susp_head, *susp_tail;
	struct http_req *spare; /* finished requests kept for the next ones (linked by next) */
	int nspare;
	struct tg_buf access_log;
	struct route_metrics *metrics; /* nroutes + 1 (unmatched) */
	_Atomic bool ready;
	int init_rc;
};

struct tg_http {
	struct tg_http_opts opts;
	struct http_loop *loops;
	struct tg_pool *pool;
	pthread_mutex_t start_lock;
	pthread_cond_t start_cond;
	int started;
};

/* ---- request helpers for handlers ---- */

static struct http_req *HR(const struct tg_req *req)
{
	return (struct http_req *)req;
}

const char *tg_req_query(const struct tg_req *req, const char *name)
{
	const struct http_req *r = HR(req);

	for (int i = 0; i < r->nquery; i++)
		if (strcmp(r->query[i].name, name) == 0)
			return r->query[i].value;
	return NULL;
}

int tg_req_query_each(const struct tg_req *req, int (*fn)(void *arg, const char *name, const char *value), void *arg)
{
	const struct http_req *r = HR(req);

	for (int i = 0; i < r->nquery; i++) {
		int rc = fn(arg, r->query[i].name, r->query[i].value);
		if (rc)
			return rc;
	}
	return 0;
}

const char *tg_req_header(const struct tg_req *req, const char *name)
{
	for (const struct hdr *h = HR(req)->req_headers; h; h = h->next)
		if (strcasecmp(h->name, name) == 0)
			return h->value;
	return NULL;
}

void tg_req_reply(struct tg_req *req, int status, json_t *body)
{
	req->status = status;
	tg_buf_reset(&req->resp);
	req->content_type = "application/json";
	if (body) {
		tg_json_dump(body, &req->resp);
		json_decref(body);
	}
}

void tg_req_reply_raw(struct tg_req *req, int status, const char *content_type, const char *body, size_t len)
{
	req->status = status;
	req->content_type = content_type;
	tg_buf_reset(&req->resp);
	tg_buf_add(&req->resp, body, len);
}

void tg_req_reply_error(struct tg_req *req)
{
	struct tg_error *e = &req->err;
	struct tg_buf *b = &req->resp;

	if (e->err == TG_OK)
		tg_fail(e, TG_EINTERNAL, NULL, NULL, "internal error");
	if (e->detail[0])
		log_warn(tg_err_code(e), "req_id=%s route=%s: %s", req->request_id ? req->request_id : "",
			 req->route ? req->route->pattern : "", e->detail);
	req->status = tg_err_status(e->err);
	req->content_type = "application/json";
	tg_buf_reset(b);
	tg_buf_adds(b, "{\"error\":{\"type\":\"");
	tg_buf_adds(b, tg_err_type(e->err));
	tg_buf_adds(b, "\",\"code\":\"");
	tg_buf_add_json_str(b, tg_err_code(e), strlen(tg_err_code(e)));
	tg_buf_adds(b, "\",\"message\":\"");
	tg_buf_add_json_str(b, e->message, strlen(e->message));
	tg_buf_addc(b, '"');
	if (e->param[0]) {
		tg_buf_adds(b, ",\"param\":\"");
		tg_buf_add_json_str(b, e->param, strlen(e->param));
		tg_buf_addc(b, '"');
	}
	tg_buf_adds(b, "}}");
}

void tg_req_add_header(struct tg_req *req, const char *name, const char *value)
{
	struct http_req *r = HR(req);
	struct hdr *h = tg_arena_alloc(&req->arena, sizeof(*h));

	h->name = tg_arena_strdup(&req->arena, name);
	h->value = tg_arena_strdup(&req->arena, value);
	h->next = r->resp_headers;
	r->resp_headers = h;
}

void tg_req_resp_headers_each(const struct tg_req *req, void (*fn)(void *arg, const char *name, const char *value),
			      void *arg)
{
	for (const struct hdr *h = HR(req)->resp_headers; h; h = h->next)
		fn(arg, h->name, h->value);
}

int64_t tg_req_started_us(const struct tg_req *req)
{
	return HR(req)->start_us;
}

struct offload {
	void (*fn)(struct tg_req *);
	struct tg_req *req;
};

static void run_offload(void *arg)
{
	struct offload *o = arg;
	void (*fn)(struct tg_req *) = o->fn;
	struct tg_req *req = o->req;

	free(o);
	fn(req);
}

void tg_req_offload(struct tg_req *req, void (*fn)(struct tg_req *req))
{
	struct offload *o = tg_malloc(sizeof(*o));

	o->fn = fn;
	o->req = req;
	tg_pool_submit(HR(req)->hl->srv->pool, run_offload, o);
}

/* ---- request lifetime ---- */

/* Finished requests a loop keeps for reuse: a request struct is ~2.5 KB, and a malloc that size, on a
 * loop that has just freed a reply's small blocks, makes glibc consolidate its fast bins first (a few
 * percent of the loop's CPU under load). Every unref runs on the request's own loop. */
#define SPARE_REQS_MAX 256

static void req_unref(struct http_req *r)
{
	struct http_loop *hl = r->hl;

	if (--r->refs > 0)
		return;
	json_decref(r->pub.json);
	tg_buf_release(&r->body);
	tg_buf_release(&r->pub.resp);
	tg_arena_release(&r->pub.arena);
	if (hl->nspare < SPARE_REQS_MAX) {
		r->next = hl->spare;
		hl->spare = r;
		hl->nspare++;
		return;
	}
	free(r);
}

/* A zeroed request, a spare one if the loop has one. */
static struct http_req *req_alloc(struct http_loop *hl)
{
	struct http_req *r = hl->spare;

	if (!r)
		return tg_calloc(1, sizeof(*r));
	hl->spare = r->next;
	hl->nspare--;
	memset(r, 0, sizeof(*r));
	return r;
}

static void susp_unlink(struct http_loop *hl, struct http_req *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else if (hl->susp_head == r)
		hl->susp_head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else if (hl->susp_tail == r)
		hl->susp_tail = r->prev;
	r->prev = r->next = NULL;
}

static void suspend(struct http_req *r)
{
	struct http_loop *hl = r->hl;

	r->refs++; /* the pending operation's reference */
	r->state = RS_WAITING;
	r->suspended = true;
	r->deadline_us = tg_mono_us() + (int64_t)hl->srv->opts.request_timeout_ms * 1000;
	r->prev = hl->susp_tail;
	r->next = NULL;
	if (hl->susp_tail)
		hl->susp_tail->next = r;
	else
		hl->susp_head = r;
	hl->susp_tail = r;
	hl->inflight++;
	MHD_suspend_connection(r->conn);
}

static void resume(struct http_req *r)
{
	struct http_loop *hl = r->hl;

	susp_unlink(hl, r);
	r->suspended = false;
	r->state = RS_READY;
	hl->inflight--;
	MHD_resume_connection(r->conn);
	hl->need_run = true;
}

/* Runs on the owning loop's thread. */
static void idem_settle_job(void *arg);

static void complete_on_loop(void *arg)
{
	struct http_req *r = arg;

	if (r->timed_out && r->idem == IDEM_CLAIMED) {
		r->idem = IDEM_RECORDING;
		tg_pool_submit(r->hl->srv->pool, idem_settle_job, r); /* keeps the pending operation's reference */
		return;
	}
	if (!r->timed_out)
		resume(r);
	req_unref(r);
}

void tg_req_complete(struct tg_req *req)
{
	struct http_req *r = HR(req);

	if (r->in_handler && tg_loop_current() == r->hl->loop) {
		r->completed = true;
		return;
	}
	if (tg_loop_current() == r->hl->loop)
		complete_on_loop(r);
	else
		tg_loop_post(r->hl->loop, complete_on_loop, r);
}

/* ---- responses ---- */

static void free_buffer(void *p)
{
	free(p);
}

static int status_index(int status)
{
	for (int i = 0; i < (int)TG_ARRAY_SIZE(tracked_status); i++)
		if (tracked_status[i] == status)
			return i;
	return NSTATUS - 1;
}

static void record(struct http_req *r, int status)
{
	struct http_loop *hl = r->hl;
	int64_t dur = tg_mono_us() - r->start_us;
	int ri = r->pub.route ? r->pub.route_index : (int)hl->srv->opts.nroutes;
	struct route_metrics *m = &hl->metrics[ri];
	int b = 0;

#define BUMP(x, n) atomic_store_explicit(&(x), atomic_load_explicit(&(x), memory_order_relaxed) + (n), \
					 memory_order_relaxed)
	BUMP(m->status[status_index(status)], 1);
	while (b < NBUCKETS - 1 && (double)dur > latency_bounds_us[b])
		b++;
	BUMP(m->buckets[b], 1);
	BUMP(m->sum_us, (uint64_t)dur);
#undef BUMP
	if (hl->srv->opts.access_log) {
		struct tg_buf *l = &hl->access_log;
		char ts[TG_TIME_BUFSZ];
		tg_time_format(tg_now_ms(), ts);
		tg_buf_addf(l, "{\"ts\":\"%s\",\"level\":\"info\",\"msg\":\"access\",\"req_id\":\"", ts);
		tg_buf_add_json_str(l, r->pub.request_id, strlen(r->pub.request_id));
		tg_buf_addf(l, "\",\"tenant\":\"%s\",\"method\":\"%s\",\"route\":\"", r->pub.principal.tenant_id,
			    r->method_name);
		const char *route = r->pub.route ? r->pub.route->pattern : "unmatched";
		tg_buf_add_json_str(l, route, strlen(route));
		tg_buf_addf(l, "\",\"status\":%d,\"dur_us\":%lld}\n", status, (long long)dur);
	}
}

/* Queue a reply: its status, body (taken from the buffer), content type and headers (NULL: none). */
static enum MHD_Result queue(struct http_req *r, int status, struct tg_buf *b, const char *content_type,
			     const struct hdr *headers)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;
	size_t len;
	char *body = tg_buf_detach(b, &len);

	resp = MHD_create_response_from_buffer_with_free_callback(len, body, free_buffer);
	if (!resp) {
		free(body);
		return MHD_NO;
	}
	if (len > 0 || content_type)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type ? content_type : "application/json");
	MHD_add_response_header(resp, "X-Request-Id", r->pub.request_id);
	for (const struct hdr *h = headers; h; h = h->next)
		MHD_add_response_header(resp, h->name, h->value);
	ret = MHD_queue_response(r->conn, (unsigned)status, resp);
	MHD_destroy_response(resp);
	record(r, status);
	return ret;
}

static enum MHD_Result queue_reply(struct http_req *r)
{
	struct tg_req *req = &r->pub;

	if (r->cutoff_code) {
		/* the loop's own 503, made from these alone: the handler may still be writing pub's reply */
		struct tg_buf b = TG_BUF_INIT;
		tg_buf_addf(&b, "{\"error\":{\"type\":\"%s\",\"code\":\"%s\",\"message\":\"%s\"}}",
			    tg_err_type(TG_EUNAVAIL), r->cutoff_code, r->cutoff_message);
		return queue(r, MHD_HTTP_SERVICE_UNAVAILABLE, &b, "application/json", NULL);
	}
	if (req->status == 0) {
		tg_fail(&req->err, TG_EINTERNAL, NULL, NULL, "internal error");
		tg_error_detail(&req->err, "handler returned without a reply");
		tg_req_reply_error(req);
	}
	return queue(r, req->status, &req->resp, req->content_type, r->resp_headers);
}

static enum MHD_Result reply_ready(struct http_req *r);

static enum MHD_Result reply_error_now(struct http_req *r, enum tg_err err, const char *code, const char *fmt)
{
	tg_fail(&r->pub.err, err, code, NULL, "%s", fmt);
	tg_req_reply_error(&r->pub);
	return reply_ready(r);
}

/* ---- dispatch ---- */

static bool content_type_is_json(const char *ct)
{
	size_t n = strlen("application/json");

	if (!ct || strncasecmp(ct, "application/json", n) != 0)
		return false;
	return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ';
}

static bool scope_allows(enum tg_scope scope, const struct tg_principal *p)
{
	if (scope == TG_SCOPE_ADMIN)
		return p->kind == TG_PRINCIPAL_ADMIN;
	if (p->kind != TG_PRINCIPAL_KEY && p->kind != TG_PRINCIPAL_TOKEN)
		return false;
	switch (scope) {
	case TG_SCOPE_ALL:
		return p->can & TG_CAN_ALL;
	case TG_SCOPE_READ:
		return p->can & (TG_CAN_ALL | TG_CAN_READ);
	case TG_SCOPE_CHECK:
		return p->can & (TG_CAN_ALL | TG_CAN_CHECK);
	case TG_SCOPE_ANY:
		return p->can != 0;
	default:
		return false;
	}
}

static void run_blocking(void *arg)
{
	struct http_req *r = arg;
	struct tg_req *req = &r->pub;
	int rc = r->hl->srv->opts.wrap ? r->hl->srv->opts.wrap(req) : req->route->handler(req);

	if (rc < 0)
		tg_req_reply_error(req);
	if (rc != TG_ASYNC)
		tg_req_complete(req);
}

/* Back on the loop after a slow authentication: dispatch again from the top (the credential is known). */
static void redispatch_on_loop(void *arg)
{
	struct http_req *r = arg;

	if (!r->timed_out) {
		susp_unlink(r->hl, r);
		r->suspended = false;
		r->state = RS_READING;
		r->hl->inflight--;
		MHD_resume_connection(r->conn);
		r->hl->need_run = true;
	}
	req_unref(r);
}

static void authenticate_slow(void *arg)
{
	struct http_req *r = arg;
	struct tg_req *req = &r->pub;
	const char *auth = tg_req_header(req, "Authorization");

	if (r->hl->srv->opts.authenticate_slow(auth, &req->principal, &req->err) == 0) {
		r->authenticated = true;
		tg_loop_post(r->hl->loop, redispatch_on_loop, r);
		return;
	}
	tg_req_reply_error(req);
	tg_req_complete(req);
}

/*
 * Idempotency-Key on an inline route (POST /v1/check, /v1/events). The loop never blocks, so the key is
 * claimed on a worker first (opts.idem_begin: a replay or a refusal answers there), the handler then runs
 * on the loop as usual, and its reply is recorded on a worker (opts.idem_end) before it is sent: a retry
 * arriving right after the reply finds it. Requests without the header never leave the loop for it.
 */
static void idem_end_job(void *arg)
{
	struct http_req *r = arg;

	r->hl->srv->opts.idem_end(&r->pub, true);
	tg_req_complete(&r->pub);
}

static void unref_on_loop(void *arg)
{
	req_unref(arg);
}

/* After a timeout (503 sent, or the client gone) the key stays claimed, so a retry is refused as still
 * running rather than run twice; when the handler finishes after all, its reply is recorded (a retry gets
 * what really happened), and a key claimed for a handler that never ran is let go. */
static void idem_settle_job(void *arg)
{
	struct http_req *r = arg;

	r->hl->srv->opts.idem_end(&r->pub, r->ran);
	tg_loop_post(r->hl->loop, unref_on_loop, r);
}

static void idem_claimed_on_loop(void *arg)
{
	struct http_req *r = arg;

	if (r->timed_out) {
		tg_pool_submit(r->hl->srv->pool, idem_settle_job, r); /* keeps the pending operation's reference */
		return;
	}
	r->idem = IDEM_CLAIMED;
	redispatch_on_loop(r);
}

static void idem_begin_job(void *arg)
{
	struct http_req *r = arg;
	struct tg_req *req = &r->pub;
	int rc = r->hl->srv->opts.idem_begin(req);

	if (rc == 0) {
		tg_loop_post(r->hl->loop, idem_claimed_on_loop, r);
		return;
	}
	if (rc < 0)
		tg_req_reply_error(req);
	tg_req_complete(req);
}

/* A reply is ready: send it, or first record it for its Idempotency-Key. */
static enum MHD_Result reply_ready(struct http_req *r)
{
	if (r->idem == IDEM_CLAIMED && !r->timed_out) {
		r->idem = IDEM_RECORDING;
		suspend(r);
		tg_pool_submit(r->hl->srv->pool, idem_end_job, r);
		return MHD_YES;
	}
	return queue_reply(r);
}

/* Decide what to do with a fully received request; returns true when a reply is ready now. */
static bool dispatch(struct http_req *r)
{
	struct tg_req *req = &r->pub;
	const struct tg_http_opts *o = &r->hl->srv->opts;
	const struct tg_route *rt = req->route;
	int rc;

	/* before routing: the body's framing is in doubt, so is everything after it on the connection */
	if (r->bad_header) {
		tg_req_add_header(req, "Connection", "close");
		tg_fail(&req->err, TG_EINVAL, "invalid_header", r->bad_header,
			"the request has more than one Content-Length, with different values");
		goto fail;
	}
	if (r->early_status == 404) {
		tg_fail(&req->err, TG_ENOTFOUND, "route_not_found", NULL, "no route for %s %s", r->method_name,
			req->path);
		goto fail;
	}
	if (r->early_status == 410) { /* a path that is not UTF-8 names nothing (and must not reach SQL) */
		tg_fail(&req->err, TG_ENOTFOUND, "not_found", NULL, "no such resource: the path is not UTF-8");
		goto fail;
	}
	if (r->early_status == 405) {
		char allow[64];
		tg_methods_format(r->allowed, allow, sizeof(allow));
		tg_req_add_header(req, "Allow", allow);
		tg_fail(&req->err, TG_EMETHOD, "method_not_allowed", NULL, "%s is not allowed here; allowed: %s",
			r->method_name, allow);
		goto fail;
	}
	if (r->too_big) {
		tg_fail(&req->err, TG_ETOOBIG, "body_too_large", NULL, "the request body exceeds 1 MiB");
		goto fail;
	}
	if (r->bad_query) {
		tg_fail(&req->err, TG_EINVAL, "invalid_parameter", r->bad_query,
			"query parameter '%s' is not UTF-8", r->bad_query);
		goto fail;
	}
	if (rt->scope != TG_SCOPE_PUBLIC && !r->authenticated) {
		const char *auth = tg_req_header(req, "Authorization");
		if (o->authenticate(auth, &req->principal, &req->err) < 0) {
			/* a key this instance has not heard of yet: PostgreSQL is asked, off the loop */
			if (o->authenticate_slow && req->err.code && !strcmp(req->err.code, TG_AUTH_ASK_DATABASE)) {
				tg_error_clear(&req->err);
				suspend(r);
				tg_pool_submit(r->hl->srv->pool, authenticate_slow, r);
				return false;
			}
			goto fail;
		}
		r->authenticated = true;
	}
	if (rt->scope != TG_SCOPE_PUBLIC) {
		if (!scope_allows(rt->scope, &req->principal)) {
			tg_fail(&req->err, TG_EPERM, "insufficient_scope", NULL,
				rt->scope == TG_SCOPE_ADMIN ? "this route needs the admin token"
							    : "this credential's scope does not allow this route");
			goto fail;
		}
		if (req->principal.customer_id[0] &&
		    (!(rt->flags & RT_CUSTOMER) || req->nparams < 1 ||
		     strcmp(req->params[0], req->principal.customer_id) != 0)) {
			tg_fail(&req->err, TG_EPERM, "customer_token", NULL,
				"this token may read only customer '%s'", req->principal.customer_id);
			goto fail;
		}
	}
	if (r->body.len > 0 && !(rt->flags & RT_RAW_BODY) && req->method != TG_GET && req->method != TG_DELETE) {
		if (!content_type_is_json(tg_req_header(req, "Content-Type"))) {
			tg_fail(&req->err, TG_EMEDIA, "unsupported_media_type", NULL,
				"send the body as Content-Type: application/json");
			goto fail;
		}
		/* parsed already when this is a redispatch */
		if (!req->json && !(req->json = tg_json_parse(r->body.buf, r->body.len, true, &req->err)))
			goto fail;
	}
	req->body = r->body.buf ? r->body.buf : "";
	req->body_len = r->body.len;

	if ((rt->flags & RT_INLINE) && o->idem_begin && r->idem == IDEM_NONE && req->method == TG_POST &&
	    tg_req_header(req, "Idempotency-Key")) {
		suspend(r);
		tg_pool_submit(r->hl->srv->pool, idem_begin_job, r);
		return false;
	}

	if (!(rt->flags & RT_INLINE)) {
		suspend(r);
		tg_pool_submit(r->hl->srv->pool, run_blocking, r);
		return false;
	}
	r->in_handler = true;
	r->ran = true;
	rc = rt->handler(req);
	r->in_handler = false;
	if (rc == TG_ASYNC) {
		if (r->completed)
			return true; /* it finished without waiting after all */
		/* the handler queued work that completes on this thread in a later pass */
		suspend(r);
		return false;
	}
	if (rc < 0)
		goto fail;
	return true;
fail:
	tg_req_reply_error(req);
	return true;
}

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	static const char *const wanted[] = {"Authorization", "Content-Type", "Accept", "Idempotency-Key",
					     "X-Request-Id", "Content-Length", "X-Forwarded-For"};
	struct http_req *r = cls;

	TG_UNUSED(kind);
	if (!value)
		value = "";
	for (size_t i = 0; i < TG_ARRAY_SIZE(wanted); i++) {
		if (strcasecmp(key, wanted[i]) != 0)
			continue;
		/* libmicrohttpd frames the body with the first Content-Length; a proxy in front may have used
		 * another one (RFC 9112 6.3: an unrecoverable framing error). The same value again is harmless. */
		const char *cl = strcmp(wanted[i], "Content-Length") == 0 ? tg_req_header(&r->pub, wanted[i]) : NULL;
		if (cl && strcmp(cl, value) != 0)
			r->bad_header = wanted[i];
		struct hdr *h = tg_arena_alloc(&r->pub.arena, sizeof(*h));
		h->name = wanted[i];
		h->value = tg_arena_strdup(&r->pub.arena, value);
		h->next = r->req_headers;
		r->req_headers = h;
	}
	return MHD_YES;
}

static enum MHD_Result count_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	TG_UNUSED(kind);
	TG_UNUSED(key);
	TG_UNUSED(value);
	(*(int *)cls)++;
	return MHD_YES;
}

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct http_req *r = cls;

	TG_UNUSED(kind);
	r->query[r->nquery].name = tg_arena_strdup(&r->pub.arena, key);
	r->query[r->nquery].value = tg_arena_strdup(&r->pub.arena, value ? value : "");
	if (!r->bad_query && (!tg_utf8_valid(key, strlen(key)) || (value && !tg_utf8_valid(value, strlen(value)))))
		r->bad_query = tg_utf8_valid(key, strlen(key)) ? r->query[r->nquery].name : "query";
	r->nquery++;
	return MHD_YES;
}

static bool request_id_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 128)
		return false;
	for (; *s; s++)
		if (*s < 0x21 || *s > 0x7e || *s == '"' || *s == '\\')
			return false;
	return true;
}

static struct http_req *req_new(struct http_loop *hl, struct MHD_Connection *c, const char *url, const char *method)
{
	struct http_req *r = req_alloc(hl);
	struct tg_req *req = &r->pub;
	const struct tg_http_opts *o = &hl->srv->opts;
	int nargs = 0;
	const char *rid;

	tg_arena_init(&req->arena);
	r->hl = hl;
	r->conn = c;
	r->refs = 1;
	r->start_us = tg_mono_us();
	r->method_name = tg_arena_strdup(&req->arena, method);
	req->path = tg_arena_strdup(&req->arena, url);
	req->method = tg_method_parse(method);
	req->route_index = -1;
	MHD_get_connection_values(c, MHD_HEADER_KIND, collect_header, r);
	MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, count_arg, &nargs);
	if (nargs > 0) {
		r->query = tg_arena_alloc(&req->arena, sizeof(*r->query) * (size_t)nargs);
		MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_arg, r);
	}
	rid = tg_req_header(req, "X-Request-Id");
	if (rid && request_id_ok(rid)) {
		req->request_id = rid;
	} else {
		char *id = tg_arena_alloc(&req->arena, TG_SID_BUFSZ);
		tg_sid_fast("req_", id);
		req->request_id = id;
	}
	if (req->method == 0) {
		r->early_status = 405;
		/* an unknown method on a known path still deserves its Allow header */
		tg_route_match(o->routes, o->nroutes, TG_GET, req->path, NULL, NULL, NULL, &r->allowed);
		unsigned all = 0;
		for (size_t i = 0; i < o->nroutes; i++) {
			unsigned a;
			if (tg_route_match(&o->routes[i], 1, o->routes[i].methods, req->path, NULL, NULL, NULL, &a) >= 0)
				all |= o->routes[i].methods;
		}
		r->allowed = all;
		if (!all)
			r->early_status = 404;
		return r;
	}
	req->route_index = tg_route_match(o->routes, o->nroutes, req->method, req->path, &req->arena, req->params,
					  &req->nparams, &r->allowed);
	if (req->route_index >= 0 && !tg_utf8_valid(req->path, strlen(req->path))) {
		r->early_status = 410; /* answered 404 not_found (see dispatch) */
		req->route_index = -1;
		return r;
	}
	if (req->route_index >= 0)
		req->route = &o->routes[req->route_index];
	else
		r->early_status = r->allowed ? 405 : 404;
	return r;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
				 const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
	struct http_loop *hl = cls;
	struct http_req *r = *con_cls;

	TG_UNUSED(version);
	if (!r) {
		const char *cl;
		int64_t n;

		r = req_new(hl, c, url, method);
		*con_cls = r;
		cl = tg_req_header(&r->pub, "Content-Length");
		if (r->bad_header || (cl && tg_parse_i64(cl, 0, INT64_MAX, &n) && n > BODY_CAP)) {
			/* refuse before the upload (no 100 Continue); MHD closes the connection after when a body was
			 * announced, and a bad header's reply says Connection: close (its first length may be 0) */
			r->too_big = !r->bad_header;
			r->state = RS_READY;
			dispatch(r);
			return queue_reply(r);
		}
		return MHD_YES;
	}
	if (*upload_size > 0) {
		if (!r->too_big && r->body.len + *upload_size > BODY_CAP) {
			r->too_big = true;
			tg_buf_release(&r->body);
		}
		if (!r->too_big)
			tg_buf_add(&r->body, upload, *upload_size);
		*upload_size = 0;
		return MHD_YES;
	}
	switch (r->state) {
	case RS_READING:
		/* (not a request back from a worker: it is counted already, and paid for its trip) */
		if (hl->srv->opts.max_inflight > 0 && hl->inflight >= hl->srv->opts.max_inflight && !r->authenticated &&
		    r->idem == IDEM_NONE) {
			return reply_error_now(r, TG_EUNAVAIL, "overloaded", "too many requests in flight; retry shortly");
		}
		if (!dispatch(r))
			return MHD_YES;
		return reply_ready(r);
	case RS_READY:
		return reply_ready(r);
	case RS_WAITING:
	default:
		return MHD_YES;
	}
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	struct http_req *r = *con_cls;

	TG_UNUSED(cls);
	TG_UNUSED(c);
	TG_UNUSED(toe);
	if (!r)
		return;
	*con_cls = NULL;
	if (r->suspended) {
		/* the daemon is going away with the request still pending: forget the link */
		susp_unlink(r->hl, r);
		r->hl->inflight--;
		r->suspended = false;
		r->timed_out = true;
	} else if (r->idem == IDEM_CLAIMED && !r->ran) {
		/* the client left between the claim of its Idempotency-Key and its handler: nothing ran */
		r->idem = IDEM_RECORDING;
		r->refs++; /* the job's */
		tg_pool_submit(r->hl->srv->pool, idem_settle_job, r);
	}
	req_unref(r);
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The request target libmicrohttpd is parsing now, from the URI log callback: libmicrohttpd unescapes the query's
 * names and values, then the path in that same buffer, all before the next request's target is logged. A loop's
 * daemon runs on the loop's thread alone. */
static void *note_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
	struct http_loop *hl = cls;

	TG_UNUSED(c);
	hl->uri = uri;
	return NULL;
}

/* MHD_http_unescape, except that "%00" is left as it is, and so is "%2F" in the path: a decoded NUL would cut
 * the path or a query value short, so that "/v1/customers/a%00b" would reach the handler as customer "a"; a
 * decoded slash would split a segment, so that "/v1/customers/a%2Fusage" would answer a's usage. The query
 * decodes "%2F" (an event type may hold a '/'). */
static size_t unescape(void *cls, struct MHD_Connection *c, char *s)
{
	struct http_loop *hl = cls;
	bool path = s == hl->uri;
	char *w = s;
	int hi, lo;

	TG_UNUSED(c);
	for (const char *r = s; *r;) {
		int ch;
		if (r[0] == '%' && (hi = hex_digit(r[1])) >= 0 && (lo = hex_digit(r[2])) >= 0 &&
		    (ch = hi * 16 + lo) != 0 && !(path && ch == '/')) {
			*w++ = (char)ch;
			r += 3;
		} else {
			*w++ = *r++;
		}
	}
	*w = '\0';
	if (path)
		hl->uri = NULL;
	return (size_t)(w - s);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];

	TG_UNUSED(cls);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	size_t n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	log_warn("libmicrohttpd", "%s", msg);
}

/* ---- the loop ---- */

static void on_mhd(void *arg, uint32_t events)
{
	struct http_loop *hl = arg;

	TG_UNUSED(events);
	hl->need_run = true;
}

static void on_listen(void *arg, uint32_t events)
{
	struct http_loop *hl = arg;

	TG_UNUSED(events);
	for (int i = 0; i < ACCEPT_BURST; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd = accept4(hl->listen_fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
				log_warn("accept failed", "%s", strerror(errno));
			break;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		/* MHD closes the socket itself when it refuses it (limit reached) */
		MHD_add_connection(hl->d, fd, (struct sockaddr *)&ss, len);
		hl->need_run = true;
	}
}

/* Answer 503 in the handler's place, now; its late completion finds timed_out (see complete_on_loop). */
static void cut_off(struct http_req *r, const char *code, const char *message)
{
	r->cutoff_code = code;
	r->cutoff_message = message;
	r->timed_out = true;
	resume(r);
}

static void expire_suspended(struct http_loop *hl)
{
	int64_t now = tg_mono_us();

	while (hl->susp_head && hl->susp_head->deadline_us <= now)
		cut_off(hl->susp_head, "timeout", "the request took too long; retry");
}

static void on_pass_end(void *arg)
{
	struct http_loop *hl = arg;

	MHD_UNSIGNED_LONG_LONG due;

	if (hl->susp_head)
		expire_suspended(hl);
	/* work MHD has pending without new socket events (buffered data, timeouts) shows as a 0 timeout */
	if (!hl->need_run && MHD_get_timeout(hl->d, &due) == MHD_YES && due == 0)
		hl->need_run = true;
	/* run until the daemon has nothing more to do right now (resumed requests queue replies) */
	for (int i = 0; hl->need_run && i < 4; i++) {
		hl->need_run = false;
		MHD_run(hl->d);
	}
	if (hl->access_log.len) {
		tg_log_raw(hl->access_log.buf, hl->access_log.len);
		tg_buf_reset(&hl->access_log);
	}
}

static int64_t loop_timeout(void *arg)
{
	struct http_loop *hl = arg;
	MHD_UNSIGNED_LONG_LONG mhd_ms;
	int64_t t = -1;

	if (hl->need_run)
		return 0;
	if (MHD_get_timeout(hl->d, &mhd_ms) == MHD_YES)
		t = (int64_t)mhd_ms;
	if (hl->susp_head) {
		int64_t d = (hl->susp_head->deadline_us - tg_mono_us()) / 1000 + 1;
		if (d < 0)
			d = 0;
		if (t < 0 || d < t)
			t = d;
	}
	return t;
}

static void *loop_main(void *arg)
{
	struct http_loop *hl = arg;
	struct tg_http *srv = hl->srv;
	char name[16];

	snprintf(name, sizeof(name), "loop-%d", hl->index);
	pthread_setname_np(pthread_self(), name);
	hl->loop = tg_loop_new();
	hl->d = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_NO_LISTEN_SOCKET |
					 MHD_USE_ERROR_LOG,
				 0, NULL, NULL, on_access, hl, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
				 MHD_OPTION_CONNECTION_LIMIT, srv->opts.conn_limit,
				 MHD_OPTION_CONNECTION_TIMEOUT, srv->opts.conn_timeout,
				 MHD_OPTION_CONNECTION_MEMORY_LIMIT, srv->opts.conn_memory,
				 MHD_OPTION_NOTIFY_COMPLETED, on_completed, hl,
				 MHD_OPTION_URI_LOG_CALLBACK, note_uri, hl,
				 MHD_OPTION_UNESCAPE_CALLBACK, unescape, hl, MHD_OPTION_END);
	if (!hl->d) {
		hl->init_rc = -1;
	} else {
		const union MHD_DaemonInfo *info = MHD_get_daemon_info(hl->d, MHD_DAEMON_INFO_EPOLL_FD);
		hl->mhd_fd = info->epoll_fd;
		tg_loop_add_fd(hl->loop, hl->mhd_fd, EPOLLIN, on_mhd, hl);
		tg_loop_add_fd(hl->loop, hl->listen_fd, EPOLLIN, on_listen, hl);
		tg_loop_on_pass_end(hl->loop, on_pass_end, hl);
		tg_loop_on_timeout(hl->loop, loop_timeout, hl);
		if (srv->opts.loop_init)
			hl->init_rc = srv->opts.loop_init(hl->loop, hl->index);
	}
	pthread_mutex_lock(&srv->start_lock);
	srv->started++;
	pthread_cond_broadcast(&srv->start_cond);
	pthread_mutex_unlock(&srv->start_lock);
	if (hl->init_rc == 0)
		tg_loop_run(hl->loop);

	/* shutting down: answer whatever still waits, then stop the daemon */
	if (hl->d) {
		while (hl->susp_head)
			cut_off(hl->susp_head, "shutting_down", "the server is shutting down");
		MHD_run(hl->d);
		if (hl->access_log.len)
			tg_log_raw(hl->access_log.buf, hl->access_log.len);
		MHD_stop_daemon(hl->d);
	}
	return NULL;
}

/* ---- listening sockets ---- */

static int resolve(const char *addr, struct addrinfo **ret, struct tg_error *err)
{
	char host[256];
	const char *colon = strrchr(addr, ':');
	size_t hlen = colon ? (size_t)(colon - addr) : 0;
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
	int rc;

	if (!colon || hlen >= sizeof(host))
		return tg_fail(err, TG_EINVAL, NULL, NULL, "TOLLGATE_LISTEN '%s' is not host:port", addr);
	memcpy(host, addr, hlen);
	host[hlen] = '\0';
	if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
		memmove(host, host + 1, hlen - 2);
		host[hlen - 2] = '\0';
	}
	rc = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, ret);
	if (rc != 0)
		return tg_fail(err, TG_EINVAL, NULL, NULL, "cannot resolve '%s': %s", addr, gai_strerror(rc));
	return 0;
}

static int open_listener(const struct addrinfo *ai, bool reuseport, struct tg_error *err, const char *addr)
{
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;

	if (fd < 0)
		return tg_fail(err, TG_EINTERNAL, NULL, NULL, "socket: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (reuseport)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		int e = errno;
		close(fd);
		if (e == EADDRINUSE)
			return tg_fail(err, TG_EINVAL, NULL, NULL, "cannot listen on %s: address already in use",
				       addr);
		return tg_fail(err, TG_EINVAL, NULL, NULL, "cannot listen on %s: %s", addr, strerror(e));
	}
	if (reuseport && listen(fd, 4096) < 0) {
		int e = errno;
		close(fd);
		return tg_fail(err, TG_EINVAL, NULL, NULL, "listen on %s: %s", addr, strerror(e));
	}
	return fd;
}

static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

struct tg_http *tg_http_start(const struct tg_http_opts *opts, struct tg_error *err)
{
	struct tg_http *h = tg_calloc(1, sizeof(*h));
	struct addrinfo *ai = NULL;
	int probe;

	h->opts = *opts;
	raise_nofile();
	if (resolve(opts->listen, &ai, err) < 0) {
		free(h);
		return NULL;
	}
	/* SO_REUSEPORT would let a second tollgated share the port silently: bind once without it
	 * first, so a port that is taken is reported instead of shared */
	probe = open_listener(ai, false, err, opts->listen);
	if (probe < 0) {
		freeaddrinfo(ai);
		free(h);
		return NULL;
	}
	close(probe);
	pthread_mutex_init(&h->start_lock, NULL);
	pthread_cond_init(&h->start_cond, NULL);
	h->loops = tg_calloc((size_t)opts->threads, sizeof(*h->loops));
	for (int i = 0; i < opts->threads; i++) {
		struct http_loop *hl = &h->loops[i];
		hl->srv = h;
		hl->index = i;
		hl->metrics = tg_calloc(opts->nroutes + 1, sizeof(*hl->metrics));
		hl->listen_fd = open_listener(ai, true, err, opts->listen);
		if (hl->listen_fd < 0) {
			for (int j = 0; j < i; j++)
				close(h->loops[j].listen_fd);
			freeaddrinfo(ai);
			free(h->loops);
			free(h);
			return NULL;
		}
	}
	freeaddrinfo(ai);
	h->pool = tg_pool_new("worker", opts->workers, opts->worker_exit);
	for (int i = 0; i < opts->threads; i++)
		if (pthread_create(&h->loops[i].thread, NULL, loop_main, &h->loops[i]) != 0)
			TG_BUG("cannot start an event loop thread");
	pthread_mutex_lock(&h->start_lock);
	while (h->started < opts->threads)
		pthread_cond_wait(&h->start_cond, &h->start_lock);
	pthread_mutex_unlock(&h->start_lock);
	for (int i = 0; i < opts->threads; i++) {
		if (h->loops[i].init_rc != 0) {
			tg_fail(err, TG_EINTERNAL, NULL, NULL, "event loop %d failed to start", i);
			tg_http_stop(h);
			return NULL;
		}
	}
	return h;
}

void tg_http_submit(struct tg_http *h, void (*fn)(void *), void *arg)
{
	tg_pool_submit(h->pool, fn, arg);
}

void tg_http_stop(struct tg_http *h)
{
	if (!h)
		return;
	/* let the pool finish (its completions go to the loops, still running), then stop the loops */
	tg_pool_free(h->pool);
	h->pool = NULL;
	for (int i = 0; i < h->opts.threads; i++) {
		struct http_loop *hl = &h->loops[i];
		if (hl->loop)
			tg_loop_stop(hl->loop);
		pthread_join(hl->thread, NULL);
		tg_loop_free(hl->loop);
		close(hl->listen_fd);
		while (hl->spare) {
			struct http_req *next = hl->spare->next;
			free(hl->spare);
			hl->spare = next;
		}
		tg_buf_release(&hl->access_log);
		free(hl->metrics);
	}
	free(h->loops);
	pthread_mutex_destroy(&h->start_lock);
	pthread_cond_destroy(&h->start_cond);
	free(h);
}

void tg_http_metrics(struct tg_http *h, struct tg_buf *out)
{
	size_t nr = h->opts.nroutes + 1;

	tg_buf_adds(out, "# HELP tollgate_http_requests_total HTTP requests answered, by route and status.\n"
			 "# TYPE tollgate_http_requests_total counter\n");
	for (size_t ri = 0; ri < nr; ri++) {
		const char *route = ri < h->opts.nroutes ? h->opts.routes[ri].pattern : "unmatched";
		const char *method = ri < h->opts.nroutes ? tg_method_name(h->opts.routes[ri].methods) : "";
		for (int s = 0; s < NSTATUS; s++) {
			uint64_t n = 0;
			for (int i = 0; i < h->opts.threads; i++)
				n += atomic_load_explicit(&h->loops[i].metrics[ri].status[s], memory_order_relaxed);
			if (!n)
				continue;
			if (s < NSTATUS - 1)
				tg_buf_addf(out, "tollgate_http_requests_total{method=\"%s\",route=\"%s\",status=\"%d\"} %llu\n",
					    method, route, tracked_status[s], (unsigned long long)n);
			else
				tg_buf_addf(out, "tollgate_http_requests_total{method=\"%s\",route=\"%s\",status=\"other\"} %llu\n",
					    method, route, (unsigned long long)n);
		}
	}
	tg_buf_adds(out, "# HELP tollgate_http_request_duration_seconds Time from request arrival to reply, by route.\n"
			 "# TYPE tollgate_http_request_duration_seconds histogram\n");
	for (size_t ri = 0; ri < nr; ri++) {
		const char *route = ri < h->opts.nroutes ? h->opts.routes[ri].pattern : "unmatched";
		const char *method = ri < h->opts.nroutes ? tg_method_name(h->opts.routes[ri].methods) : "";
		uint64_t cum = 0, sum = 0, total = 0;
		for (int i = 0; i < h->opts.threads; i++)
			for (int b = 0; b < NBUCKETS; b++)
				total += atomic_load_explicit(&h->loops[i].metrics[ri].buckets[b], memory_order_relaxed);
		if (!total)
			continue;
		for (int b = 0; b < NBUCKETS; b++) {
			for (int i = 0; i < h->opts.threads; i++)
				cum += atomic_load_explicit(&h->loops[i].metrics[ri].buckets[b], memory_order_relaxed);
			if (b < NBUCKETS - 1)
				tg_buf_addf(out, "tollgate_http_request_duration_seconds_bucket{method=\"%s\",route=\"%s\",le=\"%g\"} %llu\n",
					    method, route, latency_bounds_us[b] / 1e6, (unsigned long long)cum);
			else
				tg_buf_addf(out, "tollgate_http_request_duration_seconds_bucket{method=\"%s\",route=\"%s\",le=\"+Inf\"} %llu\n",
					    method, route, (unsigned long long)cum);
		}
		for (int i = 0; i < h->opts.threads; i++)
			sum += atomic_load_explicit(&h->loops[i].metrics[ri].sum_us, memory_order_relaxed);
		tg_buf_addf(out, "tollgate_http_request_duration_seconds_sum{method=\"%s\",route=\"%s\"} %.6f\n", method,
			    route, (double)sum / 1e6);
		tg_buf_addf(out, "tollgate_http_request_duration_seconds_count{method=\"%s\",route=\"%s\"} %llu\n", method,
			    route, (unsigned long long)total);
	}
}

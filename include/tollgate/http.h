/* http.h — the HTTP server: event loops over libmicrohttpd, routing, request and response API for handlers. */
#ifndef TOLLGATE_HTTP_H
#define TOLLGATE_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "tollgate/error.h"
#include "tollgate/loop.h"
#include "tollgate/util.h"

/*
 * DESIGN: TOLLGATE_THREADS event loops, one per core. Each loop thread owns a
 * listening socket (SO_REUSEPORT: the kernel spreads connections), a
 * libmicrohttpd daemon in external-epoll mode fed with MHD_add_connection, and
 * (set up by hot/) its own pipelined Redis connection. Routes flagged
 * RT_INLINE run on the loop thread and must never block: the check handler
 * queues its Redis script and returns TG_ASYNC; the connection is suspended
 * first, and resumed when the reply is processed in a later pass. Every other
 * route runs on the worker pool (blocking PostgreSQL is fine there): the loop
 * suspends the connection, the worker runs the handler, then posts the request
 * back to its loop, which resumes it. A request has two references, the
 * connection's and the pending operation's; whichever ends last frees it.
 * A request not completed within TOLLGATE_REQUEST_TIMEOUT_MS is answered 503
 * and the late completion is then ignored.
 */

enum tg_method {
	TG_GET = 1,
	TG_POST = 2,
	TG_PATCH = 4,
	TG_DELETE = 8,
	TG_PUT = 16,
};

enum tg_scope {
	TG_SCOPE_PUBLIC = 0, /* no credentials */
	TG_SCOPE_ADMIN,      /* the operator's admin token */
	TG_SCOPE_ALL,        /* an API key or token with scope all */
	TG_SCOPE_READ,       /* all or read */
	TG_SCOPE_CHECK,      /* all or check */
	TG_SCOPE_ANY,        /* any valid tenant credential */
};

/* Scopes a credential holds (bit mask). */
#define TG_CAN_ALL 1u
#define TG_CAN_CHECK 2u
#define TG_CAN_READ 4u

/* Route flags. */
#define RT_INLINE 1u   /* runs on the loop thread; never blocks (may return TG_ASYNC) */
#define RT_CUSTOMER 2u /* a customer-scoped token may call it for its own customer: path {id} */
#define RT_RAW_BODY 4u /* no JSON parsing of the body */

struct tg_req;
/* Returns 0 after tg_req_reply*(), a negative tg_err with req->err filled, or TG_ASYNC. */
typedef int (*tg_handler)(struct tg_req *req);

struct tg_route {
	unsigned methods;    /* one enum tg_method */
	const char *pattern; /* "/v1/customers/{id}/balance": {x} matches one path segment */
	tg_handler handler;
	enum tg_scope scope;
	unsigned flags;
};

#define TG_PRINCIPAL_ID 48
struct tg_principal {
	enum { TG_PRINCIPAL_NONE, TG_PRINCIPAL_ADMIN, TG_PRINCIPAL_KEY, TG_PRINCIPAL_TOKEN } kind;
	char tenant_id[TG_PRINCIPAL_ID];
	char key_id[TG_PRINCIPAL_ID]; /* the API key, or the key that issued the token */
	unsigned can;                 /* TG_CAN_* */
	char customer_id[TG_ID_MAX + 1]; /* non-empty: a token restricted to this customer */
};

#define TG_REQ_MAX_PARAMS 4
struct tg_req {
	struct tg_arena arena;     /* freed when the request ends */
	enum tg_method method;
	const struct tg_route *route;
	int route_index;
	const char *path;
	const char *params[TG_REQ_MAX_PARAMS]; /* {x} segments, in order */
	int nparams;
	const char *body;          /* raw body (NUL-terminated), body_len bytes */
	size_t body_len;
	json_t *json;              /* parsed body object, NULL when the body was empty */
	struct tg_principal principal;
	const char *request_id;
	struct tg_error err;
	void *ctx;                 /* the handler's own state while TG_ASYNC */
	bool unchanged;            /* set by an update that changed nothing (a PATCH of {}): no audit entry */
	/* the reply */
	int status;
	struct tg_buf resp;
	const char *content_type;
};

/* A query-string argument (decoded) or NULL. Each name may appear once. */
const char *tg_req_query(const struct tg_req *req, const char *name);
/* Visit every query argument; stops when fn returns non-zero. */
int tg_req_query_each(const struct tg_req *req, int (*fn)(void *arg, const char *name, const char *value), void *arg);
/* A request header captured on arrival (Authorization, Content-Type, Accept, Idempotency-Key, X-Request-Id) or NULL. */
const char *tg_req_header(const struct tg_req *req, const char *name);
/* Set the reply: JSON body (steals body; NULL → no body). */
void tg_req_reply(struct tg_req *req, int status, json_t *body);
/* Set the reply from bytes (copied). */
void tg_req_reply_raw(struct tg_req *req, int status, const char *content_type, const char *body, size_t len);
/* Set the reply to the error body of req->err (the one place error bodies are written). */
void tg_req_reply_error(struct tg_req *req);
/* Add a response header (both copied into the request's arena). */
void tg_req_add_header(struct tg_req *req, const char *name, const char *value);
/* Complete a TG_ASYNC request. From any thread; from the owning loop it runs at once. */
void tg_req_complete(struct tg_req *req);
/* When the request arrived (monotonic µs). */
int64_t tg_req_started_us(const struct tg_req *req);
/* Visit the response headers added so far (tg_req_add_header), newest first. */
void tg_req_resp_headers_each(const struct tg_req *req, void (*fn)(void *arg, const char *name, const char *value),
			      void *arg);
/* Continue a TG_ASYNC request on the worker pool (where blocking is fine): fn(req) runs there. */
void tg_req_offload(struct tg_req *req, void (*fn)(struct tg_req *req));

typedef int (*tg_authenticate_fn)(const char *authorization, struct tg_principal *ret, struct tg_error *err);
/* An authenticate_fn error code meaning "not known here: ask authenticate_slow on a worker". */
#define TG_AUTH_ASK_DATABASE "unknown_api_key"
/* Wraps every non-inline handler (idempotency keys, audit context...): must call req->route->handler. */
typedef int (*tg_wrap_fn)(struct tg_req *req);
/* Called once on each loop thread after its loop exists, before serving (hot/ attaches Redis here). */
typedef int (*tg_loop_init_fn)(struct tg_loop *loop, int index);
/* Access-log enrichment: the tenant id of the request, if any. */

struct tg_http_opts {
	const char *listen;
	int threads;
	int workers;
	unsigned conn_limit;
	unsigned conn_timeout;
	size_t conn_memory;
	int request_timeout_ms;
	int max_inflight;      /* suspended requests per loop before 503 (0 = no cap) */
	bool access_log;
	const struct tg_route *routes;
	size_t nroutes;
	tg_authenticate_fn authenticate;      /* on the loop: from caches only */
	tg_authenticate_fn authenticate_slow; /* on a worker, when authenticate says TG_AUTH_ASK_DATABASE */
	tg_wrap_fn wrap;
	/* Idempotency-Key on inline routes, both on a worker: idem_begin before the handler (0: run it; 1:
	 * answered, a replay or a refusal; < 0: req->err), idem_end with its reply before it is sent (keep) or
	 * to let the key go (!keep: the handler never ran). */
	int (*idem_begin)(struct tg_req *req);
	void (*idem_end)(struct tg_req *req, bool keep);
	tg_loop_init_fn loop_init;
	void (*worker_exit)(void); /* runs on each worker thread as it ends (close its connections) */
};

struct tg_http;
/* Bind and start serving; returns NULL with a message in err on failure (e.g. the port is in use). */
struct tg_http *tg_http_start(const struct tg_http_opts *opts, struct tg_error *err);
/* Stop accepting, answer what is pending, join every thread. */
void tg_http_stop(struct tg_http *h);
/* Run fn(arg) on a worker thread (where blocking is fine). */
void tg_http_submit(struct tg_http *h, void (*fn)(void *), void *arg);

/* Prometheus text for the HTTP metrics (requests by route and status, latency). */
void tg_http_metrics(struct tg_http *h, struct tg_buf *out);

/* Route matching, exposed for unit tests. Returns the route index or -1; on -1, *allowed
 * holds the methods of routes whose pattern matched (0 → 404). */
int tg_route_match(const struct tg_route *routes, size_t n, enum tg_method method, const char *path,
		   struct tg_arena *arena, const char **params, int *nparams, unsigned *allowed);
/* "GET, POST" for a method mask. */
void tg_methods_format(unsigned methods, char *buf, size_t size);
enum tg_method tg_method_parse(const char *s);
const char *tg_method_name(enum tg_method m);

#endif

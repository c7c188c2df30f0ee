/* test_foundation.c — the HTTP rules every route shares and the operations endpoints, over real HTTP. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static struct srv S;

static void setup(void)
{
	srv_start(&S, NULL);
	srv_settle(&S);
}

static void teardown(void)
{
	srv_stop(&S);
}

/* POST path with body and extra headers; the caller frees. */
static struct resp post_h(const char *path, const char *auth, const char *body, const char *h1, const char *h2)
{
	const char *hs[3] = {h1, h1 ? h2 : NULL, NULL};
	return req(&S, "POST", path, auth, body, hs);
}

/* Number of customers of the tenant with this key (one page of up to 100). */
static size_t count_customers(const char *key)
{
	struct resp r = req(&S, "GET", "/v1/customers?limit=100", key, NULL, NULL);
	ck_status(r, 200);
	size_t n = json_array_size(jpath(r.json, "data"));
	resp_free(&r);
	return n;
}

START_TEST(health_and_ready)
{
	struct resp r = req(&S, "GET", "/healthz", NULL, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "status"), "ok");
	ck_assert_ptr_nonnull(resp_header(&r, "X-Request-Id"));
	ck_assert_str_eq(resp_header(&r, "Content-Type"), "application/json");
	resp_free(&r);
	r = req(&S, "GET", "/readyz", NULL, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "postgres"), "ok");
	ck_assert_str_eq(jstr(r.json, "redis"), "ok");
	resp_free(&r);
}
END_TEST

/* The environment a running tollgated sees: NAME's value, or "" when it has none. */
static void proc_env(pid_t pid, const char *name, char *out, size_t size)
{
	char path[64], buf[65536];
	size_t n, len = strlen(name);
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	out[0] = '\0';
	for (size_t i = 0; i < n; i += strlen(buf + i) + 1)
		if (strncmp(buf + i, name, len) == 0 && buf[i + len] == '=')
			snprintf(out, size, "%s", buf + i + len + 1);
}

/* tollgated starts itself again with a bigger malloc cache, under its own name, unless the operator chose one
 * (or a preload) */
START_TEST(malloc_cache_set_at_start)
{
	struct srv own;
	char v[256];
	const char *inherited = getenv("GLIBC_TUNABLES");

	/* started again by its own path, not /proc/self/exe: ps, pgrep and the journal still see its name */
	snprintf(v, sizeof(v), "/proc/%d/comm", (int)S.pid);
	FILE *f = fopen(v, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_ptr_nonnull(fgets(v, sizeof(v), f));
	fclose(f);
	ck_assert_str_eq(v, "tollgated\n");
	proc_env(S.pid, "GLIBC_TUNABLES", v, sizeof(v));
	if (inherited)
		ck_assert_str_eq(v, inherited);
	else if (!getenv("LD_PRELOAD"))
		ck_assert_str_eq(v, "glibc.malloc.tcache_count=512");
	srv_start(&own, (const char *const[]){"GLIBC_TUNABLES=glibc.malloc.tcache_count=7", NULL});
	proc_env(own.pid, "GLIBC_TUNABLES", v, sizeof(v));
	ck_assert_str_eq(v, "glibc.malloc.tcache_count=7");
	struct resp r = req(&own, "GET", "/readyz", NULL, NULL, NULL);
	ck_status(r, 200);
	resp_free(&r);
	srv_stop(&own);
}
END_TEST

START_TEST(tenant_key_tier_customer_walkthrough)
{
	struct tenant t = tenant_new(&S, false);
	expect_status(&S, "POST", "/v1/tiers", t.key, "{\"id\":\"pro\",\"name\":\"Pro\"}", 201);
	struct resp r = req(&S, "POST", "/v1/customers", t.key, "{\"id\":\"u_28f3a\",\"tier\":\"pro\"}", NULL);
	ck_status(r, 201);
	ck_assert_str_eq(jstr(r.json, "tier"), "pro");
	resp_free(&r);
	r = req(&S, "GET", "/v1/customers?tier=pro", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 1);
	ck_assert_str_eq(jstr(r.json, "data.0.id"), "u_28f3a");
	resp_free(&r);
}
END_TEST

/* /readyz is 503 while Redis cannot be reached, but the process starts and serves /healthz. */
START_TEST(readyz_without_redis)
{
	struct srv down = {0};
	char redis_env[64];
	const char *env[] = {redis_env, NULL};

	snprintf(redis_env, sizeof(redis_env), "TOLLGATE_REDIS_URL=redis://127.0.0.1:%d/0", free_port());
	srv_start_wait(&down, env, "/healthz");
	long long errors = srv_metric(&down, "tollgate_redis_errors_total{kind=\"connection\"} ");
	struct resp r = req(&down, "GET", "/readyz", NULL, NULL, NULL);
	ck_err(r, 503, "unavailable", "not_ready", NULL);
	ck_assert_ptr_nonnull(strstr(jstr(r.json, "error.message"), "Redis"));
	resp_free(&r);
	/* and /metrics counts the failures: the loops' connections and the probe's */
	ck_assert_int_gt(errors, 0);
	ck_assert_int_gt(srv_metric(&down, "tollgate_redis_errors_total{kind=\"connection\"} "), errors);
	expect_status(&down, "GET", "/healthz", NULL, NULL, 200);
	/* configuration requests need only PostgreSQL */
	r = reqf(&down, "POST", "/v1/tenants", down.admin, "{\"name\":\"no redis\"}");
	ck_status(r, 201);
	resp_free(&r);
	srv_stop(&down);
}
END_TEST

START_TEST(metrics_by_route_and_status)
{
	struct tenant t = tenant_new(&S, false);
	const char *pg_stmt = "tollgate_postgres_errors_total{kind=\"statement\"} ";
	long long stmt_errors = srv_metric(&S, pg_stmt);
	expect_status(&S, "POST", "/v1/customers", t.key, "{\"id\":\"metric-1\"}", 201);
	expect_status(&S, "POST", "/v1/customers", t.key, "{\"id\":\"metric-1\"}", 409);
	expect_status(&S, "GET", "/no/such/route", NULL, NULL, 404);
	/* a duplicate is an answer, not a PostgreSQL failure */
	ck_assert_int_eq(srv_metric(&S, pg_stmt), stmt_errors);

	struct resp r = req(&S, "GET", "/metrics", NULL, NULL, NULL);
	ck_status(r, 200);
	ck_assert_ptr_nonnull(strstr(resp_header(&r, "Content-Type"), "text/plain"));
	ck_assert_ptr_nonnull(strstr(r.body, "# TYPE tollgate_http_requests_total counter"));
	ck_assert_ptr_nonnull(
		strstr(r.body, "tollgate_http_requests_total{method=\"POST\",route=\"/v1/customers\",status=\"201\"} "));
	ck_assert_ptr_nonnull(
		strstr(r.body, "tollgate_http_requests_total{method=\"POST\",route=\"/v1/customers\",status=\"409\"} "));
	ck_assert_ptr_nonnull(
		strstr(r.body, "tollgate_http_requests_total{method=\"\",route=\"unmatched\",status=\"404\"} "));
	ck_assert_ptr_nonnull(strstr(r.body, "# TYPE tollgate_http_request_duration_seconds histogram"));
	/* Redis and PostgreSQL failures, counted from the start */
	ck_assert_ptr_nonnull(strstr(r.body, "# TYPE tollgate_redis_errors_total counter"));
	ck_assert_ptr_nonnull(strstr(r.body, "\ntollgate_redis_errors_total{kind=\"connection\"} "));
	ck_assert_ptr_nonnull(strstr(r.body, "\ntollgate_redis_errors_total{kind=\"command\"} "));
	ck_assert_ptr_nonnull(strstr(r.body, "# TYPE tollgate_postgres_errors_total counter"));
	ck_assert_ptr_nonnull(strstr(r.body, "\ntollgate_postgres_errors_total{kind=\"connection\"} "));
	ck_assert_ptr_nonnull(strstr(r.body, "\ntollgate_postgres_errors_total{kind=\"statement\"} "));
	ck_assert_ptr_nonnull(strstr(r.body, "tollgate_http_request_duration_seconds_bucket{method=\"POST\","
					     "route=\"/v1/customers\",le=\"+Inf\"} "));
	/* every sample line is "name{labels} value" with a numeric value */
	char *save = NULL, *copy = strdup(r.body);
	for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (line[0] == '#')
			continue;
		char *sp = strrchr(line, ' ');
		ck_assert_msg(sp && sp[1], "bad sample line '%s'", line);
		char *end;
		strtod(sp + 1, &end);
		ck_assert_msg(*end == '\0', "bad sample value in '%s'", line);
	}
	free(copy);
	resp_free(&r);
}
END_TEST

START_TEST(request_id_echoed_or_generated)
{
	const char *h[] = {"X-Request-Id: trace-abc.123", NULL};
	struct resp r = req(&S, "GET", "/healthz", NULL, NULL, h);
	ck_status(r, 200);
	ck_assert_str_eq(resp_header(&r, "X-Request-Id"), "trace-abc.123");
	resp_free(&r);

	/* generated when absent, different per request */
	r = req(&S, "GET", "/healthz", NULL, NULL, NULL);
	char first[128];
	snprintf(first, sizeof(first), "%s", resp_header(&r, "X-Request-Id"));
	ck_assert_int_gt(strlen(first), 0);
	resp_free(&r);
	r = req(&S, "GET", "/healthz", NULL, NULL, NULL);
	ck_assert_str_ne(resp_header(&r, "X-Request-Id"), first);
	resp_free(&r);

	/* on errors too: 401, 404, 405, 413, 415, 400 */
	const char *h2[] = {"X-Request-Id: err-1", NULL};
	r = req(&S, "GET", "/v1/customers", NULL, NULL, h2);
	ck_status(r, 401);
	ck_assert_str_eq(resp_header(&r, "X-Request-Id"), "err-1");
	resp_free(&r);
	r = req(&S, "GET", "/nope", NULL, NULL, h2);
	ck_status(r, 404);
	ck_assert_str_eq(resp_header(&r, "X-Request-Id"), "err-1");
	resp_free(&r);
	r = req(&S, "PUT", "/v1/customers", NULL, NULL, h2);
	ck_status(r, 405);
	ck_assert_str_eq(resp_header(&r, "X-Request-Id"), "err-1");
	resp_free(&r);
	struct tenant t = tenant_new(&S, false);
	r = post_h("/v1/customers", t.key, "{", "X-Request-Id: err-2", NULL);
	ck_status(r, 400);
	ck_assert_str_eq(resp_header(&r, "X-Request-Id"), "err-2");
	resp_free(&r);
	r = post_h("/v1/customers", t.key, "{}", "X-Request-Id: err-3", "Content-Type: text/plain");
	ck_status(r, 415);
	ck_assert_str_eq(resp_header(&r, "X-Request-Id"), "err-3");
	resp_free(&r);

	/* one that cannot be echoed safely (too long) is replaced by a generated one */
	char longh[200];
	snprintf(longh, sizeof(longh), "X-Request-Id: %0150d", 7);
	r = post_h("/v1/customers", t.key, "{\"id\":\"rid\"}", longh, NULL);
	ck_status(r, 201);
	ck_assert_ptr_nonnull(resp_header(&r, "X-Request-Id"));
	ck_assert_int_le(strlen(resp_header(&r, "X-Request-Id")), 128);
	resp_free(&r);
}
END_TEST

START_TEST(unknown_route_404)
{
	struct tenant t = tenant_new(&S, false);
	const char *paths[] = {"/", "/v1", "/v1/", "/v1/nope", "/v2/customers", "/v1/customers/a/b", "/v1/customers/",
			       "/v1//customers", "/v1/customers/x/usage/extra", "/healthz/x", "/V1/customers"};
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		struct resp r = req(&S, "GET", paths[i], t.key, NULL, NULL);
		ck_assert_msg(r.status == 404, "%s: expected 404, got %ld", paths[i], r.status);
		ck_err(r, 404, "invalid_request", "route_not_found", NULL);
		resp_free(&r);
	}
	/* 404 wins over 401: an unknown route needs no credentials to be unknown */
	struct resp r = req(&S, "POST", "/v1/nope", NULL, "{}", NULL);
	ck_err(r, 404, "invalid_request", "route_not_found", NULL);
	resp_free(&r);
}
END_TEST

START_TEST(wrong_method_405_with_allow)
{
	struct tenant t = tenant_new(&S, false);
	struct {
		const char *method, *path, *allow;
	} cases[] = {
		{"PUT", "/v1/customers", "GET, POST"},
		{"DELETE", "/v1/customers", "GET, POST"},
		{"POST", "/v1/customers/c1", "GET, PATCH, DELETE"},
		{"PUT", "/v1/tiers/t1", "GET, PATCH, DELETE"},
		{"DELETE", "/v1/tenant", "GET, PATCH"},
		{"GET", "/v1/test_clock/advance", "POST"},
		{"POST", "/healthz", "GET"},
		{"PATCH", "/v1/api_keys/key_x", "DELETE"},
		{"OPTIONS", "/v1/tiers", "GET, POST"},
		{"BREW", "/v1/tiers", "GET, POST"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct resp r = req(&S, cases[i].method, cases[i].path, t.key, NULL, NULL);
		ck_assert_msg(r.status == 405, "%s %s: expected 405, got %ld", cases[i].method, cases[i].path, r.status);
		ck_err(r, 405, "invalid_request", "method_not_allowed", NULL);
		ck_assert_msg(resp_header(&r, "Allow") != NULL, "%s %s: no Allow header", cases[i].method, cases[i].path);
		ck_assert_str_eq(resp_header(&r, "Allow"), cases[i].allow);
		resp_free(&r);
	}
	/* nothing was created by the refused methods */
	ck_assert_int_eq(count_customers(t.key), 0);
}
END_TEST

START_TEST(content_type_415)
{
	struct tenant t = tenant_new(&S, false);
	const char *cts[] = {"Content-Type: text/plain", "Content-Type: application/x-www-form-urlencoded",
			     "Content-Type: application/jsonx", "Content-Type: text/json", "Content-Type:"};

	for (size_t i = 0; i < sizeof(cts) / sizeof(cts[0]); i++) {
		struct resp r = post_h("/v1/customers", t.key, "{\"id\":\"ct-1\"}", cts[i], NULL);
		ck_assert_msg(r.status == 415, "%s: expected 415, got %ld", cts[i], r.status);
		ck_err(r, 415, "invalid_request", "unsupported_media_type", NULL);
		resp_free(&r);
	}
	ck_assert_int_eq(count_customers(t.key), 0);
	/* PATCH too */
	expect_status(&S, "POST", "/v1/customers", t.key, "{\"id\":\"ct-2\",\"name\":\"old\"}", 201);
	const char *h[] = {"Content-Type: text/plain", NULL};
	struct resp r = req(&S, "PATCH", "/v1/customers/ct-2", t.key, "{\"name\":\"new\"}", h);
	ck_err(r, 415, "invalid_request", "unsupported_media_type", NULL);
	resp_free(&r);
	r = req(&S, "GET", "/v1/customers/ct-2", t.key, NULL, NULL);
	ck_assert_str_eq(jstr(r.json, "name"), "old");
	resp_free(&r);
	/* parameters and case do not matter */
	r = post_h("/v1/customers", t.key, "{\"id\":\"ct-3\"}", "Content-Type: Application/JSON; charset=utf-8", NULL);
	ck_status(r, 201);
	resp_free(&r);
}
END_TEST

/* A JSON body of exactly n bytes: {"id":"big","name":"aaa..."}. */
static char *body_of_size(size_t n)
{
	const char *head = "{\"id\":\"big\",\"name\":\"", *tail = "\"}";
	size_t fixed = strlen(head) + strlen(tail);
	char *b = malloc(n + 1);

	if (!b)
		abort();
	ck_assert_uint_ge(n, fixed);
	strcpy(b, head);
	memset(b + strlen(head), 'a', n - fixed);
	strcpy(b + n - strlen(tail), tail);
	ck_assert_uint_eq(strlen(b), n);
	return b;
}

/* What came back on a raw connection. */
struct raw {
	char *data;   /* everything read (NUL-terminated; malloc'd) */
	size_t len;
	bool closed;  /* the server closed the connection (within 10 s) */
	int nreplies; /* status lines read */
	long status;  /* the first reply's status */
	json_t *json; /* the first reply's body, when JSON */
};

static void raw_free(struct raw *x)
{
	free(x->data);
	json_decref(x->json);
}

/* Send len bytes, as they are, on a new connection to S, then read until the server closes it or 10 s pass.
 * The bytes are written at once: a second request after the first arrives with it, as from a proxy. */
static struct raw raw_send(const char *bytes, size_t len)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)S.port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct raw x = {0};
	size_t cap = 65536, off = 0;
	struct timespec t0, now;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	while (off < len) {
		ssize_t n = write(fd, bytes + off, len - off);
		ck_assert_msg(n > 0, "write: %s", strerror(errno));
		off += (size_t)n;
	}
	x.data = malloc(cap);
	ck_assert_ptr_nonnull(x.data);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		long left = 10000 - ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000);
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			break;
		if (x.len + 1 >= cap)
			break;
		ssize_t n = read(fd, x.data + x.len, cap - 1 - x.len);
		if (n <= 0) {
			x.closed = n == 0 || errno == ECONNRESET;
			break;
		}
		x.len += (size_t)n;
	}
	close(fd);
	x.data[x.len] = '\0';
	for (const char *p = x.data; (p = strstr(p, "HTTP/1.1 ")); p++)
		x.nreplies++;
	if (x.nreplies > 0) {
		const char *body = strstr(x.data, "\r\n\r\n");
		x.status = strtol(strstr(x.data, "HTTP/1.1 ") + 9, NULL, 10);
		if (body)
			x.json = json_loads(body + 4, JSON_DISABLE_EOF_CHECK, NULL);
	}
	return x;
}

#define raw_sendz(s) raw_send((s), strlen(s))

/* A raw reply: exactly one, this error, and the connection closed after it. what: the case, for messages. */
static void ck_raw_refused(const struct raw *x, const char *param, const char *what)
{
	ck_assert_msg(x->nreplies == 1, "%s: expected one reply, got %d: %s", what, x->nreplies, x->data);
	ck_assert_msg(x->status == 400, "%s: expected 400: %s", what, x->data);
	ck_assert_msg(x->json != NULL, "%s: no JSON body: %s", what, x->data);
	ck_assert_str_eq(jstr(x->json, "error.type"), "invalid_request");
	ck_assert_str_eq(jstr(x->json, "error.code"), "invalid_header");
	ck_assert_str_eq(jstr(x->json, "error.param"), param);
	ck_assert_ptr_nonnull(strstr(jstr(x->json, "error.message"), param));
	ck_assert_msg(strstr(x->data, "X-Request-Id: ") != NULL, "no X-Request-Id: %s", x->data);
	ck_assert_msg(x->closed, "%s: the connection stayed open: %s", what, x->data);
}

/* Two Content-Lengths that differ: framing in doubt (request smuggling behind a proxy), refused before the
 * body is read and the connection closed, so nothing after it is taken for another request. */
START_TEST(conflicting_content_length_400)
{
	struct tenant t = tenant_new(&S, false);
	const char *body = "{\"id\":\"cl-1\"}";
	char smuggled[512], raw[2048];
	int n = snprintf(smuggled, sizeof(smuggled),
			 "POST /v1/customers HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
			 "Content-Type: application/json\r\nContent-Length: 17\r\nConnection: close\r\n\r\n"
			 "{\"id\":\"smuggled\"}",
			 t.key);
	ck_assert_int_lt(n, (int)sizeof(smuggled));

	/* by the first length the body ends after cl-1 and a second request follows; by the second (what a
	 * proxy in front may have used) that request is part of the body; either order */
	for (int order = 0; order < 2; order++) {
		size_t short_len = strlen(body), long_len = strlen(body) + strlen(smuggled);
		n = snprintf(raw, sizeof(raw),
			     "POST /v1/customers HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
			     "Content-Type: application/json\r\nContent-Length: %zu\r\nX-Request-Id: cl-%d\r\n"
			     "content-length: %zu\r\n\r\n%s%s",
			     t.key, order ? long_len : short_len, order, order ? short_len : long_len, body, smuggled);
		ck_assert_int_lt(n, (int)sizeof(raw));
		struct raw x = raw_send(raw, (size_t)n);
		ck_raw_refused(&x, "Content-Length", order ? "long, short" : "short, long");
		ck_assert_ptr_nonnull(strstr(x.data, order ? "X-Request-Id: cl-1" : "X-Request-Id: cl-0"));
		raw_free(&x);
	}
	ck_assert_int_eq(count_customers(t.key), 0);

	/* before routing, authentication and the method: the framing is what is wrong */
	struct raw x = raw_sendz("GET /v1/nope HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
				 "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
	ck_raw_refused(&x, "Content-Length", "GET /v1/nope");
	raw_free(&x);
	x = raw_sendz("PUT /v1/customers HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: 99999999\r\n\r\n");
	ck_raw_refused(&x, "Content-Length", "PUT /v1/customers");
	raw_free(&x);

	/* the same length twice is one length */
	n = snprintf(raw, sizeof(raw),
		     "POST /v1/customers HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
		     "Content-Type: application/json\r\nContent-Length: %zu\r\nContent-Length: %zu\r\nConnection: close\r\n"
		     "\r\n%s",
		     t.key, strlen(body), strlen(body), body);
	x = raw_send(raw, (size_t)n);
	ck_assert_msg(x.nreplies == 1 && x.status == 201, "%s", x.data);
	raw_free(&x);
	ck_assert_int_eq(count_customers(t.key), 1);
	/* and the server is fine */
	expect_status(&S, "POST", "/v1/customers", t.key, "{\"id\":\"cl-2\"}", 201);
}
END_TEST

START_TEST(body_over_1mib_413)
{
	struct tenant t = tenant_new(&S, false);
	char *big = body_of_size(1024 * 1024 + 1);
	/* refused on the Content-Length alone; with 100-continue (what curl sends for big bodies) the
	 * body is never sent. Without it the server's early close can reset the upload before the
	 * client reads the 413, a race of the client's, not a wrong answer. */
	struct resp r = post_h("/v1/customers", t.key, big, "Expect: 100-continue", NULL);
	ck_err(r, 413, "invalid_request", "body_too_large", NULL);
	resp_free(&r);

	/* chunked: no Content-Length, the cap applies while reading */
	r = post_h("/v1/customers", t.key, big, "Transfer-Encoding: chunked", NULL);
	ck_err(r, 413, "invalid_request", "body_too_large", NULL);
	resp_free(&r);
	free(big);

	big = body_of_size(5 * 1024 * 1024);
	r = post_h("/v1/customers", t.key, big, "Transfer-Encoding: chunked", NULL);
	ck_err(r, 413, "invalid_request", "body_too_large", NULL);
	resp_free(&r);
	free(big);

	/* a lying Content-Length far over the cap is refused before the upload */
	r = post_h("/v1/customers", t.key, "{}", "Content-Length: 99999999999", "Expect: 100-continue");
	ck_err(r, 413, "invalid_request", "body_too_large", NULL);
	resp_free(&r);

	/* exactly 1 MiB is read (and then refused for what it says, not for its size) */
	big = body_of_size(1024 * 1024);
	r = req(&S, "POST", "/v1/customers", t.key, big, NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "name");
	resp_free(&r);
	free(big);

	ck_assert_int_eq(count_customers(t.key), 0);
	/* the server is fine afterwards */
	expect_status(&S, "POST", "/v1/customers", t.key, "{\"id\":\"after-big\"}", 201);
}
END_TEST

START_TEST(malformed_json_400)
{
	struct tenant t = tenant_new(&S, false);
	const char *bodies[] = {
		"{",
		"{\"id\":}",
		"{\"id\":\"x\",}",
		"{'id':'x'}",
		"{\"id\":\"x\"} trailing",
		"not json",
		"[]",
		"[{\"id\":\"x\"}]",
		"\"a string\"",
		"42",
		"null",
		"{\"id\":\"x\",\"id\":\"y\"}",           /* duplicate key */
		"{\"id\":\"x\",\"name\":\"a\\u0000b\"}", /* NUL in a string */
		"{\"id\":\"x\",\"name\":\"\xff\xfe\"}",  /* invalid UTF-8 */
		"{\"id\":\"x\",\"name\":\"\xc0\xaf\"}",  /* overlong encoding */
		"{\"id\":\"x\",\"n\":NaN}",
		"{\"id\":\"x\",\"n\":01}",
		"{\"id\":\"x\",\"n\":.5}",
		"{\"id\":\"x\",\"n\":+1}",
		"{\"id\":\"x\",\"n\":1.}",
		"{\"id\":\"x\",\"n\":0x10}",
		"{\"id\":\"x\" /* comment */}",
	};
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		struct resp r = req(&S, "POST", "/v1/customers", t.key, bodies[i], NULL);
		ck_assert_msg(r.status == 400, "body %zu (%s): expected 400, got %ld: %s", i, bodies[i], r.status, r.body);
		ck_err(r, 400, "invalid_request", "invalid_json", NULL);
		resp_free(&r);
	}
	/* a POST that needs a body and has none */
	struct resp r = req(&S, "POST", "/v1/customers", t.key, NULL, NULL);
	ck_err(r, 400, "invalid_request", "invalid_json", NULL);
	resp_free(&r);
	ck_assert_int_eq(count_customers(t.key), 0);
}
END_TEST

START_TEST(wrong_types_and_unknown_fields)
{
	struct tenant t = tenant_new(&S, false);
	struct {
		const char *path, *body, *code, *param;
	} cases[] = {
		{"/v1/customers", "{\"id\":5}", "invalid_parameter", "id"},
		{"/v1/customers", "{\"id\":null}", "invalid_parameter", "id"},
		{"/v1/customers", "{\"id\":[\"a\"]}", "invalid_parameter", "id"},
		{"/v1/customers", "{\"id\":{\"a\":1}}", "invalid_parameter", "id"},
		{"/v1/customers", "{\"id\":true}", "invalid_parameter", "id"},
		{"/v1/customers", "{}", "missing_parameter", "id"},
		{"/v1/customers", "{\"id\":\"c\",\"name\":12}", "invalid_parameter", "name"},
		{"/v1/customers", "{\"id\":\"c\",\"name\":true}", "invalid_parameter", "name"},
		{"/v1/customers", "{\"id\":\"c\",\"email\":7}", "invalid_parameter", "email"},
		{"/v1/customers", "{\"id\":\"c\",\"email\":\"not-an-email\"}", "invalid_parameter", "email"},
		{"/v1/customers", "{\"id\":\"c\",\"tier\":1}", "invalid_parameter", "tier"},
		{"/v1/customers", "{\"id\":\"c\",\"parent_id\":false}", "invalid_parameter", "parent_id"},
		{"/v1/customers", "{\"id\":\"c\",\"metadata\":[1,2]}", "invalid_parameter", "metadata"},
		{"/v1/customers", "{\"id\":\"c\",\"metadata\":\"x\"}", "invalid_parameter", "metadata"},
		{"/v1/customers", "{\"id\":\"c\",\"metadata\":3}", "invalid_parameter", "metadata"},
		{"/v1/customers", "{\"id\":\"c\",\"nmae\":\"typo\"}", "unknown_parameter", "nmae"},
		{"/v1/customers", "{\"id\":\"c\",\"Id\":\"c\"}", "unknown_parameter", "Id"},
		{"/v1/tiers", "{\"id\":\"t\",\"name\":0}", "invalid_parameter", "name"},
		{"/v1/tiers", "{\"id\":\"t\",\"limits_x\":[]}", "unknown_parameter", "limits_x"},
		{"/v1/api_keys", "{\"scopes\":\"all\"}", "invalid_parameter", "scopes"},
		{"/v1/api_keys", "{\"scopes\":[\"all\"],\"name\":1}", "invalid_parameter", "name"},
		{"/v1/api_keys", "{\"scopes\":[\"all\"],\"secret\":\"sk_mine\"}", "unknown_parameter", "secret"},
		{"/v1/auth/tokens", "{\"ttl\":\"60\"}", "invalid_parameter", "ttl"},
		{"/v1/auth/tokens", "{\"scope\":\"write\"}", "invalid_parameter", "scope"},
		{"/v1/auth/tokens", "{\"scope\":1}", "invalid_parameter", "scope"},
		{"/v1/auth/tokens", "{\"customer\":\"x\"}", "unknown_parameter", "customer"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct resp r = req(&S, "POST", cases[i].path, t.key, cases[i].body, NULL);
		ck_assert_msg(r.status == 400, "%s %s: expected 400, got %ld: %s", cases[i].path, cases[i].body,
			      r.status, r.body);
		ck_err(r, 400, "invalid_request", cases[i].code, cases[i].param);
		resp_free(&r);
	}
	/* PATCH: strings for booleans, numbers for strings, unknown fields */
	struct resp r = req(&S, "PATCH", "/v1/tenant", t.key, "{\"auto_create_customers\":\"false\"}", NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "auto_create_customers");
	resp_free(&r);
	r = req(&S, "PATCH", "/v1/tenant", t.key, "{\"auto_create_customers\":0}", NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "auto_create_customers");
	resp_free(&r);
	r = req(&S, "PATCH", "/v1/tenant", t.key, "{\"default_tier\":7}", NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "default_tier");
	resp_free(&r);
	r = req(&S, "PATCH", "/v1/tenant", t.key, "{\"name\":\"renamed\"}", NULL);
	ck_err(r, 400, "invalid_request", "unknown_parameter", "name");
	resp_free(&r);

	/* nothing changed */
	ck_assert_int_eq(count_customers(t.key), 0);
	r = req(&S, "GET", "/v1/tiers", t.key, NULL, NULL);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 0);
	resp_free(&r);
	r = req(&S, "GET", "/v1/api_keys", t.key, NULL, NULL);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 1);
	resp_free(&r);
	r = req(&S, "GET", "/v1/tenant", t.key, NULL, NULL);
	ck_assert(json_is_true(jpath(r.json, "auto_create_customers")));
	ck_assert(json_is_null(jpath(r.json, "default_tier")));
	resp_free(&r);
}
END_TEST

/* Every GET under /v1 refuses a query parameter it does not take, naming it: the reads of one object as
 * the lists and /v1/usage do (GET /v1/customers/c/usage?x=1 ignored it before). */
START_TEST(unknown_query_parameters_on_every_get)
{
	struct tenant t = tenant_new(&S, true);
	char endpoint[128], path[256];

	must_post(&S, t.key, "/v1/tiers", "{\"id\":\"pro\"}");
	must_post(&S, t.key, "/v1/customers", "{\"id\":\"c\",\"tier\":\"pro\"}");
	must_post(&S, t.key, "/v1/meters", "{\"id\":\"tokens\",\"event_type\":\"llm\",\"aggregation\":\"count\"}");
	must_post(&S, t.key, "/v1/limits", "{\"id\":\"q\",\"kind\":\"quota\",\"meter\":\"tokens\",\"period\":\"day\",\"limit\":5}");
	expect_status(&S, "PATCH", "/v1/customers/c/balance", t.key, "{\"minimum_balance\":0}", 200);
	struct resp r = req(&S, "POST", "/v1/webhook_endpoints", t.key, "{\"url\":\"http://127.0.0.1:9/h\",\"events\":[\"*\"]}", NULL);
	ck_status(r, 201);
	snprintf(endpoint, sizeof(endpoint), "/v1/webhook_endpoints/%s", jstr(r.json, "id"));
	resp_free(&r);
	const char *const gets[] = {"/v1/tenant", "/v1/test_clock", "/v1/customers/c", "/v1/customers/c/usage",
				    "/v1/customers/c/balance", "/v1/tiers/pro", "/v1/meters/tokens", "/v1/meters/requests",
				    "/v1/limits/q", endpoint};
	for (size_t i = 0; i < sizeof(gets) / sizeof(gets[0]); i++) {
		expect_status(&S, "GET", gets[i], t.key, NULL, 200);
		snprintf(path, sizeof(path), "%s?x=1", gets[i]);
		r = req(&S, "GET", path, t.key, NULL, NULL);
		ck_assert_msg(r.status == 400, "%s: %ld %s", path, r.status, r.body);
		ck_err(r, 400, "invalid_request", "unknown_parameter", "x");
		resp_free(&r);
		snprintf(path, sizeof(path), "%s?limit=1", gets[i]);
		r = req(&S, "GET", path, t.key, NULL, NULL);
		ck_assert_msg(r.status == 400, "%s: %ld %s", path, r.status, r.body);
		ck_err(r, 400, "invalid_request", "unknown_parameter", "limit");
		resp_free(&r);
	}
}
END_TEST

START_TEST(bad_ids_in_bodies)
{
	struct tenant t = tenant_new(&S, false);
	char long_id[160], max_id[160];
	memset(long_id, 'x', 129);
	long_id[129] = '\0';
	memset(max_id, 'y', 128);
	max_id[128] = '\0';
	const char *bad[] = {
		long_id, "", "a/b", "a b", " a", "a\\n", "a\\t", "a\\u0001b", "a\\u007fb", "'; DROP TABLE customers;--",
		"a'b", "a\\\"b", "a;b", "a%00b", "a%2Fb", "caf\\u00e9", "a\\\\b", "a,b", "a*b", "a?b", "a#b", "..%2F",
		"<script>",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct resp r = reqf(&S, "POST", "/v1/customers", t.key, "{\"id\":\"%s\"}", bad[i]);
		ck_assert_msg(r.status == 400, "id '%s': expected 400, got %ld: %s", bad[i], r.status, r.body);
		ck_err(r, 400, "invalid_request", "invalid_parameter", "id");
		resp_free(&r);
		r = reqf(&S, "POST", "/v1/tiers", t.key, "{\"id\":\"%s\"}", bad[i]);
		ck_assert_msg(r.status == 400, "tier id '%s': expected 400, got %ld: %s", bad[i], r.status, r.body);
		ck_err(r, 400, "invalid_request", "invalid_parameter", "id");
		resp_free(&r);
		/* ids in other fields */
		r = reqf(&S, "POST", "/v1/customers", t.key, "{\"id\":\"ok\",\"tier\":\"%s\"}", bad[i]);
		ck_err(r, 400, "invalid_request", "invalid_parameter", "tier");
		resp_free(&r);
		r = reqf(&S, "POST", "/v1/customers", t.key, "{\"id\":\"ok\",\"parent_id\":\"%s\"}", bad[i]);
		ck_err(r, 400, "invalid_request", "invalid_parameter", "parent_id");
		resp_free(&r);
	}
	ck_assert_int_eq(count_customers(t.key), 0);

	/* every allowed character, and the longest id */
	struct resp r = reqf(&S, "POST", "/v1/customers", t.key, "{\"id\":\"%s\"}", max_id);
	ck_status(r, 201);
	ck_assert_str_eq(jstr(r.json, "id"), max_id);
	resp_free(&r);
	expect_status(&S, "POST", "/v1/customers", t.key, "{\"id\":\"Az09._:@+-\"}", 201);
	expect_status(&S, "GET", "/v1/customers/Az09._:@+-", t.key, NULL, 200);
	char path[256];
	snprintf(path, sizeof(path), "/v1/customers/%s", max_id);
	expect_status(&S, "GET", path, t.key, NULL, 200);
}
END_TEST

START_TEST(sql_metacharacters_are_data)
{
	struct tenant t = tenant_new(&S, false);
	const char *evil = "'; DROP TABLE customers;--";
	struct resp r = reqf(&S, "POST", "/v1/customers", t.key, "{\"id\":\"%s\"}", evil);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "id");
	resp_free(&r);

	/* as a name it is stored verbatim and harms nothing */
	r = reqf(&S, "POST", "/v1/customers", t.key,
		 "{\"id\":\"sql-1\",\"name\":\"%s\",\"email\":\"a'--@x.y\",\"metadata\":{\"%s\":\"%s\"}}", evil, evil, evil);
	ck_status(r, 201);
	ck_assert_str_eq(jstr(r.json, "name"), evil);
	resp_free(&r);
	r = req(&S, "GET", "/v1/customers/sql-1", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "name"), evil);
	ck_assert_str_eq(jstr(r.json, "email"), "a'--@x.y");
	ck_assert_str_eq(json_string_value(json_object_get(jpath(r.json, "metadata"), evil)), evil);
	resp_free(&r);
	r = reqf(&S, "POST", "/v1/tiers", t.key, "{\"id\":\"t1\",\"name\":\"%s\"}", evil);
	ck_status(r, 201);
	ck_assert_str_eq(jstr(r.json, "name"), evil);
	resp_free(&r);

	/* in the path and the query */
	expect_status(&S, "GET", "/v1/customers/'%3B%20DROP%20TABLE%20customers%3B--", t.key, NULL, 404);
	r = req(&S, "GET", "/v1/customers?tier='%3B%20DROP%20TABLE%20customers%3B--", t.key, NULL, NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "tier");
	resp_free(&r);
	r = req(&S, "GET", "/v1/customers?starting_after=x'%20OR%20'1'%3D'1", t.key, NULL, NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "starting_after");
	resp_free(&r);

	/* the table is still there, with our one customer in it */
	ck_assert_int_eq(count_customers(t.key), 1);
	char *n = psql("SELECT count(*) > 0 FROM customers");
	ck_assert_ptr_nonnull(n);
	ck_assert_str_eq(n, "t");
	free(n);
}
END_TEST

START_TEST(bad_ids_in_paths)
{
	struct tenant t = tenant_new(&S, false);
	expect_status(&S, "POST", "/v1/customers", t.key, "{\"id\":\"a\",\"name\":\"keep\"}", 201);
	expect_status(&S, "POST", "/v1/tiers", t.key, "{\"id\":\"a\"}", 201);

	char long_path[256] = "/v1/customers/";
	memset(long_path + strlen(long_path), 'a', 129);
	const char *paths[] = {
		long_path, "/v1/customers/a%20b", "/v1/customers/a%0Ab", "/v1/customers/a%01", "/v1/customers/%27",
		/* a NUL must not cut the id short to "a" */
		"/v1/customers/a%00b", "/v1/customers/a%00", "/v1/tiers/a%00b",
		/* bytes that are not UTF-8 name nothing (they reached PostgreSQL in an audited route's "before": 500) */
		"/v1/customers/%FF", "/v1/tiers/a%C3", "/v1/limits/%ED%A0%80", "/v1/meters/%C0%AF",
		"/v1/webhook_endpoints/%FF",
	};
	const char *methods[] = {"GET", "DELETE"};
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		for (size_t m = 0; m < 2; m++) {
			struct resp x = req(&S, methods[m], paths[i], t.key, NULL, NULL);
			ck_assert_msg(x.status == 404, "%s %s: expected 404, got %ld: %s", methods[m], paths[i], x.status,
				      x.body);
			ck_assert_str_eq(jstr(x.json, "error.type"), "invalid_request");
			resp_free(&x);
		}
		struct resp x = req(&S, "PATCH", paths[i], t.key, "{\"name\":\"changed\"}", NULL);
		ck_assert_msg(x.status == 404, "PATCH %s: expected 404, got %ld: %s", paths[i], x.status, x.body);
		resp_free(&x);
	}
	struct resp k = req(&S, "DELETE", "/v1/api_keys/%FF", t.key, NULL, NULL);
	ck_assert_msg(k.status == 404, "DELETE /v1/api_keys/%%FF: %ld %s", k.status, k.body);
	resp_free(&k);
	/* a query value that is not UTF-8: 400 naming it, not a 500 from PostgreSQL */
	static const char *const bad_queries[][2] = {
		{"/v1/audit?resource_id=%FF", "resource_id"}, {"/v1/events?customer_id=a%C3", "customer_id"},
		{"/v1/customers?tier=%ED%A0%80", "tier"}, {"/v1/audit?actor=%C0%AF", "actor"},
	};
	for (size_t i = 0; i < sizeof(bad_queries) / sizeof(bad_queries[0]); i++) {
		struct resp x = req(&S, "GET", bad_queries[i][0], t.key, NULL, NULL);
		ck_err(x, 400, "invalid_request", "invalid_parameter", bad_queries[i][1]);
		resp_free(&x);
	}
	/* an encoded "/" stays inside its segment: never another route */
	expect_status(&S, "POST", "/v1/customers", t.key, "{\"id\":\"b\"}", 201);
	const char *slashed[] = {"/v1/customers/a%2Fb", "/v1/customers/a%2Fusage", "/v1/customers/a%2fusage",
				 "/v1/customers/a%2Fbalance", "/v1/customers/a%2Fbalance%2Ftransactions",
				 "/v1/customers/%2E%2E%2Fb"};
	for (size_t i = 0; i < sizeof(slashed) / sizeof(slashed[0]); i++) {
		struct resp x = req(&S, "GET", slashed[i], t.key, NULL, NULL);
		ck_assert_msg(x.status == 404, "GET %s: expected 404, got %ld: %s", slashed[i], x.status, x.body);
		ck_err(x, 404, "invalid_request", "customer_not_found", NULL);
		resp_free(&x);
	}
	struct resp r = req(&S, "GET", "/v1%2Fcustomers", t.key, NULL, NULL);
	ck_err(r, 404, "invalid_request", "route_not_found", NULL);
	resp_free(&r);
	r = req(&S, "GET", "/v1/customers%2Fa", t.key, NULL, NULL);
	ck_err(r, 404, "invalid_request", "route_not_found", NULL);
	resp_free(&r);
	r = req(&S, "DELETE", "/v1/customers/a%2Fusage", t.key, NULL, NULL);
	ck_err(r, 404, "invalid_request", "customer_not_found", NULL);
	resp_free(&r);
	/* (other escapes still decode: "%62" is "b") */
	expect_status(&S, "GET", "/v1/customers/%62", t.key, NULL, 200);
	/* and in a query value "%2F" is a '/' as usual: an event type may hold one */
	expect_status(&S, "POST", "/v1/events", t.key, "{\"customer_id\":\"a\",\"type\":\"llm/completion\"}", 200);
	r = req(&S, "GET", "/v1/events?type=llm%2Fcompletion", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_int_eq(json_array_size(jpath(r.json, "data")), 1);
	ck_assert_str_eq(jstr(r.json, "data.0.type"), "llm/completion");
	resp_free(&r);
	/* nor in query values */
	r = req(&S, "GET", "/v1/customers?starting_after=a%00zz", t.key, NULL, NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "starting_after");
	resp_free(&r);
	r = req(&S, "GET", "/v1/customers?tier=a%00x", t.key, NULL, NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "tier");
	resp_free(&r);

	/* "a" is untouched */
	r = req(&S, "GET", "/v1/customers/a", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_str_eq(jstr(r.json, "name"), "keep");
	resp_free(&r);
	expect_status(&S, "GET", "/v1/tiers/a", t.key, NULL, 200);
}
END_TEST

START_TEST(huge_numbers)
{
	struct tenant t = tenant_new(&S, true);
	struct {
		const char *path, *body, *param;
	} cases[] = {
		{"/v1/auth/tokens", "{\"ttl\":99999999999999999999999}", "ttl"},
		{"/v1/auth/tokens", "{\"ttl\":-99999999999999999999999}", "ttl"},
		{"/v1/auth/tokens", "{\"ttl\":18446744073709551617}", "ttl"},
		{"/v1/auth/tokens", "{\"ttl\":1e300}", "ttl"},
		{"/v1/auth/tokens", "{\"ttl\":86401}", "ttl"},
		{"/v1/auth/tokens", "{\"ttl\":0}", "ttl"},
		{"/v1/auth/tokens", "{\"ttl\":1.5}", "ttl"},
		{"/v1/auth/tokens", "{\"ttl\":1e-7}", "ttl"},
		{"/v1/test_clock/advance", "{\"seconds\":1e300}", "seconds"},
		{"/v1/test_clock/advance", "{\"seconds\":9223372036854775808}", "seconds"},
		{"/v1/test_clock/advance", "{\"seconds\":9223372036854775807}", "seconds"},
		{"/v1/test_clock/advance", "{\"seconds\":-1}", "seconds"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct resp r = req(&S, "POST", cases[i].path, t.key, cases[i].body, NULL);
		ck_assert_msg(r.status == 400, "%s %s: expected 400, got %ld: %s", cases[i].path, cases[i].body, r.status,
			      r.body);
		ck_err(r, 400, "invalid_request", "invalid_parameter", cases[i].param);
		resp_free(&r);
	}
	/* beyond the range of a double, too: still the field's error, not a malformed body */
	const char *huge[] = {"{\"ttl\":1e400}", "{\"ttl\":-1e400}", "{\"ttl\":1e99999999999999999999}",
			      "{\"ttl\":1e-400}", "{\"scope\":\"read\",\"ttl\":1e-99999}"};
	for (size_t i = 0; i < sizeof(huge) / sizeof(huge[0]); i++) {
		struct resp r = req(&S, "POST", "/v1/auth/tokens", t.key, huge[i], NULL);
		ck_assert_msg(r.status == 400, "%s: got %ld %s", huge[i], r.status, r.body);
		ck_err(r, 400, "invalid_request", "invalid_parameter", "ttl");
		resp_free(&r);
	}
	char digits[1200] = "{\"seconds\":";
	memset(digits + strlen(digits), '9', 1000);
	strcat(digits, "}");
	struct resp r = req(&S, "POST", "/v1/test_clock/advance", t.key, digits, NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "seconds");
	resp_free(&r);
	/* a malformed number is still malformed JSON */
	r = req(&S, "POST", "/v1/auth/tokens", t.key, "{\"ttl\":1e400.5}", NULL);
	ck_err(r, 400, "invalid_request", "invalid_json", NULL);
	resp_free(&r);

	/* the clock did not move */
	r = req(&S, "GET", "/v1/test_clock", t.key, NULL, NULL);
	ck_status(r, 200);
	long long now = time_parse(jstr(r.json, "now"));
	ck_assert_int_lt(llabs(now - (long long)time(NULL)), 5);
	resp_free(&r);

	/* big integers in metadata are kept exactly, not rounded through a double */
	r = req(&S, "POST", "/v1/customers", t.key,
		"{\"id\":\"big\",\"metadata\":{\"n\":123456789012345678901234567890,\"m\":-9223372036854775809,"
		"\"d\":9007199254740993,\"f\":1e300,\"g\":1e400}}",
		NULL);
	ck_status(r, 201);
	resp_free(&r);
	r = req(&S, "GET", "/v1/customers/big", t.key, NULL, NULL);
	ck_status(r, 200);
	ck_assert_ptr_nonnull(strstr(r.body, "\"n\":123456789012345678901234567890"));
	ck_assert_ptr_nonnull(strstr(r.body, "\"m\":-9223372036854775809"));
	ck_assert_ptr_nonnull(strstr(r.body, "\"d\":9007199254740993"));
	ck_assert_ptr_nonnull(strstr(r.body, "\"f\":1000000000")); /* PostgreSQL writes 1e300 out in full */
	ck_assert_ptr_nonnull(strstr(r.body, "\"g\":1000000000"));
	resp_free(&r);
	/* numbers PostgreSQL could not keep are refused against their field */
	r = req(&S, "POST", "/v1/customers", t.key, "{\"id\":\"big2\",\"metadata\":{\"a\":{\"b\":1e2000}}}", NULL);
	ck_err(r, 400, "invalid_request", "invalid_parameter", "metadata.a.b");
	resp_free(&r);
}
END_TEST

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&buf, &len);
	char chunk[4096];
	size_t n;

	ck_assert_ptr_nonnull(f);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		fwrite(chunk, 1, n, out);
	fclose(f);
	fclose(out);
	return buf;
}

/* One access line per request with its id; never a key, a token or a body. */
START_TEST(logs_hold_no_secrets)
{
	struct tenant t = tenant_new(&S, false);
	struct resp r = req(&S, "POST", "/v1/auth/tokens", t.key, "{\"scope\":\"all\",\"ttl\":60}", NULL);
	ck_status(r, 201);
	char *tok = strdup(jstr(r.json, "token"));
	resp_free(&r);
	r = req(&S, "POST", "/v1/api_keys", t.key, "{\"scopes\":[\"read\"]}", NULL);
	char *secret = strdup(jstr(r.json, "secret"));
	resp_free(&r);
	const char *h[] = {"X-Request-Id: log-check-1", NULL};
	r = req(&S, "POST", "/v1/customers", tok, "{\"id\":\"log-1\",\"name\":\"body-marker-7f3a\"}", h);
	ck_status(r, 201);
	resp_free(&r);
	expect_status(&S, "POST", "/v1/customers", secret, "{\"id\":\"log-2\",\"name\":\"body-marker-7f3a\"}", 403);
	expect_status(&S, "POST", "/v1/customers", t.key, "{\"id\":\"log-1\",\"name\":\"body-marker-7f3a\"}", 409);
	expect_status(&S, "POST", "/v1/tenants", "adm-wrong-body-marker-7f3a", "{}", 401);

	/* the access lines are written at the end of the loop's pass: give it a moment */
	char *log = NULL;
	for (int i = 0; i < 50; i++) {
		free(log);
		log = slurp(S.log);
		if (strstr(log, "\"req_id\":\"log-check-1\""))
			break;
		struct timespec ts = {0, 20 * 1000000L};
		nanosleep(&ts, NULL);
	}
	char *line = strstr(log, "\"req_id\":\"log-check-1\"");
	ck_assert_msg(line != NULL, "no access line for req_id log-check-1");
	ck_assert_ptr_nonnull(strstr(line, "\"route\":\"/v1/customers\""));
	ck_assert_ptr_nonnull(strstr(line, "\"status\":201"));
	ck_assert_ptr_nonnull(strstr(line, t.id));
	ck_assert_ptr_null(strstr(log, t.key + 3));
	ck_assert_ptr_null(strstr(log, secret + 3));
	ck_assert_ptr_null(strstr(log, strrchr(tok, '.') + 1));
	ck_assert_ptr_null(strstr(log, "body-marker-7f3a"));
	ck_assert_ptr_null(strstr(log, S.admin));
	free(log);
	free(tok);
	free(secret);
}
END_TEST

/* Each request in its own connection must see a consistent server while many arrive at once. */
struct par_ctx {
	const char *key;
	int status[32];
};

static void par_get(int i, void *arg)
{
	struct par_ctx *c = arg;
	struct resp r = req(&S, "GET", "/v1/tenant", c->key, NULL, NULL);
	c->status[i] = (int)r.status;
	resp_free(&r);
}

START_TEST(parallel_reads)
{
	struct tenant t = tenant_new(&S, false);
	struct par_ctx c = {.key = t.key};
	run_parallel(32, par_get, &c);
	for (int i = 0; i < 32; i++)
		ck_assert_int_eq(c.status[i], 200);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("foundation");
	TCase *tc = tcase_create("http");

	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, health_and_ready);
	tcase_add_test(tc, tenant_key_tier_customer_walkthrough);
	tcase_add_test(tc, readyz_without_redis);
	tcase_add_test(tc, metrics_by_route_and_status);
	tcase_add_test(tc, request_id_echoed_or_generated);
	tcase_add_test(tc, unknown_route_404);
	tcase_add_test(tc, wrong_method_405_with_allow);
	tcase_add_test(tc, content_type_415);
	tcase_add_test(tc, body_over_1mib_413);
	tcase_add_test(tc, conflicting_content_length_400);
	tcase_add_test(tc, malformed_json_400);
	tcase_add_test(tc, wrong_types_and_unknown_fields);
	tcase_add_test(tc, unknown_query_parameters_on_every_get);
	tcase_add_test(tc, bad_ids_in_bodies);
	tcase_add_test(tc, sql_metacharacters_are_data);
	tcase_add_test(tc, bad_ids_in_paths);
	tcase_add_test(tc, huge_numbers);
	tcase_add_test(tc, parallel_reads);
	tcase_add_test(tc, logs_hold_no_secrets);
	tcase_add_test(tc, malloc_cache_set_at_start);
	suite_add_tcase(s, tc);
	return run_suite(s);
}

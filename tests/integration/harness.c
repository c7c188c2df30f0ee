/* harness.c — starting tollgated for integration tests and a small libcurl HTTP client. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

extern char **environ;

int free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Servers running now: a test that fails half-way (CK_NOFORK longjmps out) must not leave its extra
 * servers behind, so run_suite stops whatever is still here at the end. */
#define MAX_SERVERS 16
static pid_t running[MAX_SERVERS];
static pthread_mutex_t running_lock = PTHREAD_MUTEX_INITIALIZER;

static void running_set(pid_t old, pid_t new)
{
	pthread_mutex_lock(&running_lock);
	for (int i = 0; i < MAX_SERVERS; i++)
		if (running[i] == old) {
			running[i] = new;
			break;
		}
	pthread_mutex_unlock(&running_lock);
}

static void stop_leftovers(void)
{
	for (int i = 0; i < MAX_SERVERS; i++) {
		if (running[i] > 0) {
			int status;
			kill(running[i], SIGTERM);
			waitpid(running[i], &status, 0);
			running[i] = 0;
		}
	}
}

void srv_start(struct srv *s, const char *const *extra_env)
{
	srv_start_wait(s, extra_env, "/readyz");
}

void srv_start_wait(struct srv *s, const char *const *extra_env, const char *wait_path)
{
	const char *bin = getenv("TOLLGATE_BIN");
	char listen[64], admin_env[96];
	struct resp r = {0};

	ck_assert_msg(bin != NULL, "TOLLGATE_BIN is not set (run through meson test / scripts/test)");
	ck_assert_msg(getenv("TOLLGATE_DATABASE_URL") && getenv("TOLLGATE_REDIS_URL"),
		      "TOLLGATE_DATABASE_URL / TOLLGATE_REDIS_URL are not set (run through scripts/test)");
	if (s->port == 0)
		s->port = free_port();
	snprintf(s->base, sizeof(s->base), "http://127.0.0.1:%d", s->port);
	if (!s->admin[0])
		snprintf(s->admin, sizeof(s->admin), "adm_test_%d_%d", (int)getpid(), s->port);
	snprintf(listen, sizeof(listen), "TOLLGATE_LISTEN=127.0.0.1:%d", s->port);
	snprintf(admin_env, sizeof(admin_env), "TOLLGATE_ADMIN_TOKEN=%s", s->admin);
	snprintf(s->log, sizeof(s->log), "%s/tollgated-%d-%d.log", getenv("TOLLGATE_TEST_LOG_DIR") ? getenv("TOLLGATE_TEST_LOG_DIR") : "/tmp",
		 (int)getpid(), s->port);

	s->pid = fork();
	ck_assert_int_ge(s->pid, 0);
	if (s->pid == 0) {
		int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		setenv("TOLLGATE_LISTEN", listen + strlen("TOLLGATE_LISTEN="), 1);
		setenv("TOLLGATE_ADMIN_TOKEN", s->admin, 1);
		if (!getenv("TOLLGATE_JWT_SECRET"))
			setenv("TOLLGATE_JWT_SECRET", "integration-test-secret", 1);
		if (!getenv("TOLLGATE_THREADS"))
			setenv("TOLLGATE_THREADS", "2", 1);
		setenv("TOLLGATE_WEBHOOK_ALLOW_PRIVATE", "1", 0);
		for (const char *const *e = extra_env; e && *e; e++) {
			char *kv = strdup(*e), *eq = strchr(kv, '=');
			if (eq) {
				*eq = '\0';
				setenv(kv, eq + 1, 1);
			}
			free(kv);
		}
		execl(bin, bin, (char *)NULL);
		_exit(127);
	}
	running_set(0, s->pid);
	for (int i = 0; i < 300; i++) {
		int status;
		if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
			running_set(s->pid, 0);
			s->pid = 0;
			ck_abort_msg("tollgated exited during start-up (status %d); see %s", status, s->log);
		}
		r = req(s, "GET", wait_path, NULL, NULL, NULL);
		long st = r.status;
		resp_free(&r);
		if (st == 200)
			return;
		sleep_ms(50);
	}
	ck_abort_msg("tollgated did not become ready in 15 s; see %s", s->log);
}

void srv_settle(struct srv *s)
{
	struct tenant t = tenant_new(s, false);
	char secret[64], sql[512];
	struct timespec ts;

	/* a key written straight into the database reaches the server only through its NOTIFY */
	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(secret, sizeof(secret), "sk_settle%ld%09ld%d", (long)ts.tv_sec, ts.tv_nsec, (int)getpid());
	snprintf(sql, sizeof(sql),
		 "INSERT INTO api_keys (id, tenant_id, name, prefix, secret_hash, scopes) VALUES ('key_%s', '%s', "
		 "'settle', 'sk_settle', encode(sha256(convert_to('%s', 'UTF8')), 'hex'), '{read}') RETURNING 1",
		 secret + 3, t.id, secret);
	char *out = psql(sql);
	ck_assert_msg(out != NULL, "could not insert the settle key");
	free(out);
	for (int i = 0; i < 600; i++) {
		struct resp r = req(s, "GET", "/v1/tenant", secret, NULL, NULL);
		long st = r.status;
		resp_free(&r);
		if (st == 200)
			return;
		sleep_ms(50);
	}
	ck_abort_msg("tollgated did not act on a notification within 30 s; see %s", s->log);
}

static void srv_signal(struct srv *s, int sig)
{
	int status;

	if (s->pid <= 0)
		return;
	kill(s->pid, sig);
	waitpid(s->pid, &status, 0);
	running_set(s->pid, 0);
	s->pid = 0;
}

void srv_stop(struct srv *s)
{
	srv_signal(s, SIGTERM);
}

void srv_kill9(struct srv *s)
{
	srv_signal(s, SIGKILL);
}

/* ---- HTTP ---- */

struct sink {
	char *buf;
	size_t len;
};

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
	struct sink *s = arg;
	size_t add = size * n;

	s->buf = realloc(s->buf, s->len + add + 1);
	memcpy(s->buf + s->len, p, add);
	s->len += add;
	s->buf[s->len] = '\0';
	return add;
}

void resp_free(struct resp *r)
{
	free(r->body);
	free(r->headers);
	if (r->json)
		json_decref(r->json);
	memset(r, 0, sizeof(*r));
}

const char *resp_header(const struct resp *r, const char *name)
{
	static _Thread_local char value[512];
	size_t n = strlen(name);
	const char *p = r->headers;

	while (p && *p) {
		const char *eol = strstr(p, "\r\n");
		if (!eol)
			eol = p + strlen(p);
		if ((size_t)(eol - p) > n && strncasecmp(p, name, n) == 0 && p[n] == ':') {
			const char *v = p + n + 1;
			while (*v == ' ')
				v++;
			size_t len = (size_t)(eol - v);
			if (len >= sizeof(value))
				len = sizeof(value) - 1;
			memcpy(value, v, len);
			value[len] = '\0';
			return value;
		}
		p = *eol ? eol + 2 : eol;
	}
	return NULL;
}

struct resp req(const struct srv *s, const char *method, const char *path, const char *auth, const char *body,
		const char *const *extra_headers)
{
	CURL *c = curl_easy_init();
	struct curl_slist *h = NULL;
	struct sink b = {0}, hd = {0};
	struct resp r = {0};
	char url[2048], authh[4200];

	snprintf(url, sizeof(url), "%s%s", s->base, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &hd);
	if (auth) {
		snprintf(authh, sizeof(authh), "Authorization: Bearer %s", auth);
		h = curl_slist_append(h, authh);
	}
	bool has_ct = false;
	for (const char *const *e = extra_headers; e && *e; e++) {
		h = curl_slist_append(h, *e);
		if (strncasecmp(*e, "Content-Type:", 13) == 0)
			has_ct = true;
	}
	if (body) {
		if (!has_ct)
			h = curl_slist_append(h, "Content-Type: application/json");
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	bool has_expect = false;
	for (const char *const *e = extra_headers; e && *e; e++)
		has_expect |= strncasecmp(*e, "Expect:", 7) == 0;
	if (!has_expect)
		h = curl_slist_append(h, "Expect:");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	CURLcode rc = curl_easy_perform(c);
	if (rc == CURLE_OK) {
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
	} else {
		r.status = -1;
	}
	r.body = b.buf ? b.buf : strdup("");
	r.headers = hd.buf ? hd.buf : strdup("");
	if (b.len) {
		json_error_t je;
		r.json = json_loads(r.body, JSON_DECODE_ANY, &je);
	}
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	return r;
}

struct resp reqf(const struct srv *s, const char *method, const char *path, const char *auth, const char *fmt, ...)
{
	va_list ap;
	char *body = NULL;
	struct resp r;

	va_start(ap, fmt);
	if (vasprintf(&body, fmt, ap) < 0)
		body = NULL;
	va_end(ap);
	r = req(s, method, path, auth, body, NULL);
	free(body);
	return r;
}

struct tenant tenant_new(const struct srv *s, bool test_mode)
{
	struct tenant t = {0};
	struct resp r = reqf(s, "POST", "/v1/tenants", s->admin, "{\"name\":\"test tenant\",\"test_mode\":%s}",
			     test_mode ? "true" : "false");

	ck_status(r, 201);
	snprintf(t.id, sizeof(t.id), "%s", jstr(r.json, "id"));
	snprintf(t.key, sizeof(t.key), "%s", jstr(r.json, "api_key"));
	resp_free(&r);
	return t;
}

long long time_parse(const char *s)
{
	struct tm tm = {0};
	const char *end = s ? strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm) : NULL;

	ck_assert_msg(end && !*end, "not an RFC 3339 UTC time: '%s'", s ? s : "(null)");
	return (long long)timegm(&tm);
}

/* ---- JSON paths ---- */

json_t *jpath(json_t *root, const char *path)
{
	char buf[512], *save = NULL, *part;
	json_t *cur = root;

	snprintf(buf, sizeof(buf), "%s", path);
	for (part = strtok_r(buf, ".", &save); part && cur; part = strtok_r(NULL, ".", &save)) {
		if (json_is_array(cur)) {
			char *end;
			long i = strtol(part, &end, 10);
			cur = *end ? NULL : json_array_get(cur, (size_t)i);
		} else {
			cur = json_object_get(cur, part);
		}
	}
	return cur;
}

const char *jstr(json_t *root, const char *path)
{
	json_t *v = jpath(root, path);
	ck_assert_msg(json_is_string(v), "expected a string at '%s'", path);
	return json_string_value(v);
}

long long jint(json_t *root, const char *path)
{
	json_t *v = jpath(root, path);
	ck_assert_msg(json_is_integer(v), "expected an integer at '%s'", path);
	return json_integer_value(v);
}

double jnum(json_t *root, const char *path)
{
	json_t *v = jpath(root, path);
	ck_assert_msg(json_is_number(v), "expected a number at '%s'", path);
	return json_number_value(v);
}

/* ---- concurrency ---- */

struct par {
	pthread_barrier_t barrier;
	void (*fn)(int, void *);
	void *arg;
	int i;
};

struct par_one {
	struct par *p;
	int i;
};

static void *par_main(void *arg)
{
	struct par_one *o = arg;
	pthread_barrier_wait(&o->p->barrier);
	o->p->fn(o->i, o->p->arg);
	return NULL;
}

void run_parallel(int n, void (*fn)(int i, void *arg), void *arg)
{
	struct par p = {.fn = fn, .arg = arg};
	pthread_t *t = calloc((size_t)n, sizeof(*t));
	struct par_one *o = calloc((size_t)n, sizeof(*o));

	pthread_barrier_init(&p.barrier, NULL, (unsigned)n);
	for (int i = 0; i < n; i++) {
		o[i].p = &p;
		o[i].i = i;
		pthread_create(&t[i], NULL, par_main, &o[i]);
	}
	for (int i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&p.barrier);
	free(t);
	free(o);
}

/* ---- services ---- */

static char *run_capture(const char *cmd)
{
	FILE *f = popen(cmd, "r");
	char chunk[4096];
	char *out = NULL;
	size_t n, len = 0;

	if (!f)
		return NULL;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		out = realloc(out, len + n + 1);
		memcpy(out + len, chunk, n);
		len += n;
	}
	if (pclose(f) != 0) {
		free(out);
		return NULL;
	}
	if (!out)
		out = calloc(1, 1);
	out[len] = '\0';
	while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == ' '))
		out[--len] = '\0';
	return out;
}

long long srv_metric(const struct srv *s, const char *series)
{
	struct resp r = req(s, "GET", "/metrics", NULL, NULL, NULL);
	long long v = 0;
	ck_status(r, 200);
	/* the sample's line, not the # HELP / # TYPE lines naming it */
	for (const char *p = strstr(r.body, series); p; p = strstr(p + 1, series))
		if (p == r.body || p[-1] == '\n') {
			v = atoll(p + strlen(series));
			break;
		}
	resp_free(&r);
	return v;
}

static void *hold_main(void *arg)
{
	free(psql(((struct psql_hold *)arg)->sql));
	return NULL;
}

void psql_hold(struct psql_hold *h, const char *table, const char *where, int seconds)
{
	static _Atomic int seq;
	int mark = atomic_fetch_add(&seq, 1);

	/* the marker finds this session; once it sleeps, its lock is taken */
	snprintf(h->sql, sizeof(h->sql), "/* hold-%d-%d */ BEGIN; SELECT 1 FROM %s WHERE %s FOR UPDATE; SELECT pg_sleep(%d); COMMIT;",
		 (int)getpid(), mark, table, where, seconds);
	pthread_create(&h->th, NULL, hold_main, h);
	for (int i = 0; i < 100; i++) {
		if (psql_num("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE '/* hold-%d-%d */%%'",
			     (int)getpid(), mark) == 1)
			return;
		usleep(50 * 1000);
	}
	ck_abort_msg("psql did not take its lock on %s within 5 s", table);
}

void psql_hold_end(struct psql_hold *h)
{
	pthread_join(h->th, NULL);
}

int redis_cmd(const char *cmd)
{
	const char *url = getenv("TOLLGATE_REDIS_URL");
	char c[1024];
	int port = 6379;
	const char *p = url ? strrchr(url, ':') : NULL;

	if (p)
		port = atoi(p + 1);
	snprintf(c, sizeof(c), "redis-cli -p %d %s >/dev/null 2>&1", port, cmd);
	return system(c) == 0 ? 0 : -1;
}

/* The port of a service URL (scheme://[user@]host:port/...). */
static int url_port(const char *env)
{
	const char *url = getenv(env), *p = url ? strrchr(url, ':') : NULL;

	ck_assert_msg(p && atoi(p + 1) > 0, "%s has no port: '%s'", env, url ? url : "(unset)");
	return atoi(p + 1);
}

void service_ctl(const char *action, const char *name)
{
	const char *script = getenv("TOLLGATE_SERVICES"), *dir = getenv("TOLLGATE_TEST_SERVICES_DIR");
	char cmd[2048];

	ck_assert_msg(script && dir, "TOLLGATE_SERVICES and TOLLGATE_TEST_SERVICES_DIR must be set (run scripts/test)");
	/* a stopped service starts on the port given, not on the one it had: give the ones in use */
	snprintf(cmd, sizeof(cmd), "TG_SERVICES_DIR='%s' TG_PG_PORT=%d TG_REDIS_PORT=%d '%s' %s %s >/dev/null 2>&1", dir,
		 url_port("TOLLGATE_DATABASE_URL"), url_port("TOLLGATE_REDIS_URL"), script, action, name);
	ck_assert_msg(system(cmd) == 0, "scripts/services %s %s failed", action, name);
}

char *psql(const char *sql)
{
	char *cmd = NULL;
	char *out;

	/* tests write only trusted constant SQL here */
	if (asprintf(&cmd, "psql -X -A -t -q \"$TOLLGATE_DATABASE_URL\" -c \"%s\"", sql) < 0)
		return NULL;
	out = run_capture(cmd);
	free(cmd);
	return out;
}

/* The number psql prints for a formatted query; when psql fails, the test fails (must) or -1. */
static long long psql_vnum(bool must, const char *fmt, va_list ap)
{
	char *q = NULL, *out;
	long long v = -1;

	if (vasprintf(&q, fmt, ap) < 0)
		q = NULL;
	out = q ? psql(q) : NULL;
	if (out)
		v = atoll(out);
	else if (must)
		ck_abort_msg("psql failed: %s", q ? q : fmt);
	else
		fprintf(stderr, "psql failed: %s\n", q ? q : fmt);
	free(out);
	free(q);
	return v;
}

long long psql_ll(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	long long v = psql_vnum(true, fmt, ap);
	va_end(ap);
	return v;
}

long long psql_num(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	long long v = psql_vnum(false, fmt, ap);
	va_end(ap);
	return v;
}

int run_suite(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	stop_leftovers();
	return failed ? 1 : 0;
}

void must_post(const struct srv *s, const char *key, const char *path, const char *body)
{
	struct resp r = req(s, "POST", path, key, body, NULL);
	ck_assert_msg(r.status == 200 || r.status == 201, "POST %s %s → %ld %s", path, body, r.status, r.body);
	resp_free(&r);
}

void expect_status(const struct srv *s, const char *method, const char *path, const char *key, const char *body,
		   long want)
{
	struct resp r = req(s, method, path, key, body, NULL);

	ck_assert_msg(r.status == want, "%s %s %s: expected %ld, got %ld: %s", method, path, body ? body : "", want,
		      r.status, r.body ? r.body : "(no body)");
	resp_free(&r);
}

double limit_used(const struct srv *s, const char *key, const char *customer, const char *limit_id)
{
	char path[256];
	struct resp r;
	json_t *l;
	size_t i;
	double used = -1;

	snprintf(path, sizeof(path), "/v1/customers/%s/usage", customer);
	r = req(s, "GET", path, key, NULL, NULL);
	ck_status(r, 200);
	json_array_foreach(jpath(r.json, "limits"), i, l)
		if (!strcmp(json_string_value(json_object_get(l, "id")), limit_id))
			used = json_number_value(json_object_get(l, "used"));
	resp_free(&r);
	ck_assert_msg(used >= 0, "limit %s not in the usage of %s", limit_id, customer);
	return used;
}

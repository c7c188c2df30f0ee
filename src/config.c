/* config.c — one table of every TOLLGATE_* environment variable: name, type, default, bounds, secrecy. */
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tollgate/config.h"
#include "tollgate/error.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

struct tg_config tg_cfg;

enum opt_type { OPT_STRING, OPT_INT, OPT_BOOL, OPT_LEVEL };

struct opt {
	const char *name;
	enum opt_type type;
	const char *def;
	int64_t min, max;
	bool secret;
	size_t offset;
	const char *help;
};

#define OFF(f) offsetof(struct tg_config, f)

static const struct opt opts[] = {
	{"TOLLGATE_LISTEN", OPT_STRING, "127.0.0.1:8080", 0, 0, false, OFF(listen),
	 "address and port to serve HTTP on (host:port; [v6]:port)"},
	{"TOLLGATE_DATABASE_URL", OPT_STRING, "postgresql://tollgate@127.0.0.1:54329/tollgate", 0, 0, true,
	 OFF(database_url), "PostgreSQL connection URI (libpq syntax)"},
	{"TOLLGATE_REDIS_URL", OPT_STRING, "redis://127.0.0.1:63799/0", 0, 0, false, OFF(redis_url),
	 "Redis URL: redis://host:port[/db]"},
	{"TOLLGATE_ADMIN_TOKEN", OPT_STRING, "", 0, 0, true, OFF(admin_token),
	 "operator token for /v1/tenants (empty disables the admin API; scripts/run generates one)"},
	{"TOLLGATE_JWT_SECRET", OPT_STRING, "", 0, 0, true, OFF(jwt_secret),
	 "HS256 secret for POST /v1/auth/tokens (empty: a random one per process, tokens die on restart)"},
	{"TOLLGATE_THREADS", OPT_INT, "0", 0, 256, false, OFF(threads),
	 "event-loop threads serving HTTP and Redis (0 = one per CPU)"},
	{"TOLLGATE_DB_POOL", OPT_INT, "8", 1, 256, false, OFF(db_pool),
	 "worker threads (each with one PostgreSQL connection) running configuration requests"},
	{"TOLLGATE_CONN_LIMIT", OPT_INT, "10000", 16, 1000000, false, OFF(conn_limit),
	 "maximum open HTTP connections per event loop"},
	{"TOLLGATE_CONN_TIMEOUT", OPT_INT, "60", 1, 3600, false, OFF(conn_timeout),
	 "seconds an idle HTTP connection is kept open"},
	{"TOLLGATE_CONN_MEMORY", OPT_INT, "8192", 4096, 1048576, false, OFF(conn_memory),
	 "bytes of libmicrohttpd buffer per connection (headers must fit)"},
	{"TOLLGATE_REQUEST_TIMEOUT_MS", OPT_INT, "5000", 50, 600000, false, OFF(request_timeout_ms),
	 "a request waiting longer on Redis or PostgreSQL is answered 503"},
	{"TOLLGATE_LOG_LEVEL", OPT_LEVEL, "info", 0, 0, false, OFF(log_level), "error, warn, info or debug"},
	{"TOLLGATE_ACCESS_LOG", OPT_BOOL, "1", 0, 1, false, OFF(access_log),
	 "write one JSON access-log line per request (1/0)"},
	{"TOLLGATE_WEBHOOK_ALLOW_PRIVATE", OPT_BOOL, "0", 0, 1, false, OFF(webhook_allow_private),
	 "allow webhook URLs on loopback, private, link-local and other special-purpose addresses (local use only)"},
	{"TOLLGATE_WEBHOOK_BACKOFF_BASE_MS", OPT_INT, "10000", 1, 86400000, false, OFF(webhook_backoff_base_ms),
	 "first webhook retry delay; doubles per attempt with jitter, for up to 3 days"},
	{"TOLLGATE_WEBHOOK_WORKERS", OPT_INT, "1", 0, 64, false, OFF(webhook_workers),
	 "webhook delivery threads per instance (0 disables delivery here)"},
	{"TOLLGATE_EVENT_BATCH_MAX", OPT_INT, "5000", 1, 100000, false, OFF(event_batch_max),
	 "most events the writer commits in one transaction"},
	{"TOLLGATE_EVENT_ID_TTL", OPT_INT, "0", 0, 3024000, false, OFF(event_id_ttl_s),
	 "seconds a committed event id is remembered in Redis, so its duplicates skip PostgreSQL (0: off)"},
	{"TOLLGATE_MAX_INFLIGHT", OPT_INT, "4096", 16, 1000000, false, OFF(max_inflight),
	 "checks waiting on Redis per event loop before new ones get 503"},
	{"TOLLGATE_INSTANCE_TTL_MS", OPT_INT, "10000", 200, 600000, false, OFF(instance_ttl_ms),
	 "an instance whose heartbeat in Redis is this old is taken for dead: the live counters it was moving are rebuilt"},
	{"TOLLGATE_WORKER", OPT_BOOL, "1", 0, 1, false, OFF(worker_enabled),
	 "run background duties here: period close, reservation expiry, summaries (1/0)"},
};

static bool parse_bool(const char *s, bool *ret)
{
	if (!strcmp(s, "1") || !strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on"))
		*ret = true;
	else if (!strcmp(s, "0") || !strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off"))
		*ret = false;
	else
		return false;
	return true;
}

static int set_opt(const struct opt *o, const char *val, FILE *err)
{
	char *base = (char *)&tg_cfg;
	int64_t i;
	bool b;
	int level;

	switch (o->type) {
	case OPT_STRING:
		free(*(char **)(base + o->offset));
		*(char **)(base + o->offset) = tg_strdup(val);
		return 0;
	case OPT_INT:
		if (!tg_parse_i64(val, o->min, o->max, &i)) {
			fprintf(err, "tollgated: %s: '%s' is not a whole number from %lld to %lld\n", o->name,
				o->secret ? "***" : val, (long long)o->min, (long long)o->max);
			return -1;
		}
		if (o->offset == OFF(webhook_backoff_base_ms))
			*(int64_t *)(base + o->offset) = i;
		else
			*(int *)(base + o->offset) = (int)i;
		return 0;
	case OPT_BOOL:
		if (!parse_bool(val, &b)) {
			fprintf(err, "tollgated: %s: '%s' is not a boolean (1/0, true/false)\n", o->name, val);
			return -1;
		}
		*(bool *)(base + o->offset) = b;
		return 0;
	case OPT_LEVEL:
		level = tg_log_level_parse(val);
		if (level < 0) {
			fprintf(err, "tollgated: %s: '%s' is not one of error, warn, info, debug\n", o->name, val);
			return -1;
		}
		*(int *)(base + o->offset) = level;
		return 0;
	}
	return -1;
}

static int check_listen(const char *listen, FILE *err)
{
	const char *colon = strrchr(listen, ':');
	int64_t port;

	if (!colon || colon == listen || !tg_parse_i64(colon + 1, 0, 65535, &port)) {
		fprintf(err, "tollgated: TOLLGATE_LISTEN: '%s' is not host:port\n", listen);
		return -1;
	}
	return 0;
}

static int check_url(const char *name, const char *url, const char *const *schemes, FILE *err)
{
	for (; *schemes; schemes++)
		if (strncmp(url, *schemes, strlen(*schemes)) == 0)
			return 0;
	fprintf(err, "tollgated: %s: the URL must start with %s\n", name, schemes[-1]);
	return -1;
}

int tg_config_load(FILE *err)
{
	int failed = 0;
	static const char *const pg_schemes[] = {"postgresql://", "postgres://", NULL};
	static const char *const redis_schemes[] = {"redis://", NULL};

	tg_config_release();
	for (size_t i = 0; i < TG_ARRAY_SIZE(opts); i++) {
		const char *env = getenv(opts[i].name);
		if (set_opt(&opts[i], opts[i].def, err) < 0)
			TG_BUG("bad default for %s", opts[i].name);
		if (env && set_opt(&opts[i], env, err) < 0)
			failed = 1;
	}
	/* every problem is reported at once, not only the first */
	failed |= check_listen(tg_cfg.listen, err) < 0;
	failed |= check_url("TOLLGATE_DATABASE_URL", tg_cfg.database_url, pg_schemes, err) < 0;
	failed |= check_url("TOLLGATE_REDIS_URL", tg_cfg.redis_url, redis_schemes, err) < 0;
	if (tg_cfg.threads == 0) {
		/* the CPUs this process may run on (taskset, cgroups), not all the machine has */
		cpu_set_t set;
		int n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : (int)sysconf(_SC_NPROCESSORS_ONLN);
		tg_cfg.threads = n > 0 ? (n > 64 ? 64 : n) : 2;
	}
	return failed ? -1 : 0;
}

void tg_config_help(FILE *out)
{
	fprintf(out, "usage: tollgated [--help] [--version]\n\n"
		     "tollgated is configured by environment variables only:\n\n");
	for (size_t i = 0; i < TG_ARRAY_SIZE(opts); i++)
		fprintf(out, "  %-34s %s\n  %-34s default: %s\n", opts[i].name, opts[i].help, "",
			opts[i].def[0] ? opts[i].def : "(empty)");
	fprintf(out, "\nUnless GLIBC_TUNABLES or LD_PRELOAD is set, tollgated starts itself again (same pid) with\n"
		     "GLIBC_TUNABLES=glibc.malloc.tcache_count=512: set GLIBC_TUNABLES yourself to keep glibc's defaults.\n");
}

void tg_config_log(void)
{
	struct tg_buf b = TG_BUF_INIT;
	char *base = (char *)&tg_cfg;

	for (size_t i = 0; i < TG_ARRAY_SIZE(opts); i++) {
		const struct opt *o = &opts[i];
		tg_buf_addf(&b, "%s%s=", i ? " " : "", o->name);
		switch (o->type) {
		case OPT_STRING: {
			const char *s = *(char **)(base + o->offset);
			tg_buf_adds(&b, o->secret ? (s[0] ? "[redacted]" : "(empty)") : s);
			break;
		}
		case OPT_INT:
			if (o->offset == OFF(webhook_backoff_base_ms))
				tg_buf_addf(&b, "%lld", (long long)*(int64_t *)(base + o->offset));
			else
				tg_buf_addf(&b, "%d", *(int *)(base + o->offset));
			break;
		case OPT_BOOL:
			tg_buf_addf(&b, "%d", *(bool *)(base + o->offset));
			break;
		case OPT_LEVEL:
			tg_buf_addf(&b, "%d", *(int *)(base + o->offset));
			break;
		}
	}
	log_info("effective configuration", "%s", b.buf);
	tg_buf_release(&b);
}

void tg_config_release(void)
{
	char *base = (char *)&tg_cfg;

	for (size_t i = 0; i < TG_ARRAY_SIZE(opts); i++)
		if (opts[i].type == OPT_STRING) {
			free(*(char **)(base + opts[i].offset));
			*(char **)(base + opts[i].offset) = NULL;
		}
}

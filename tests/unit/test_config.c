/* Unit tests for src/config.c: defaults, every kind of bad value, and --help listing every variable. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tollgate/config.h"
#include "tollgate/log.h"
#include "unit.h"

/* Every variable the process reads; API.md names the first eight. */
static const char *const all_vars[] = {
	"TOLLGATE_LISTEN",
	"TOLLGATE_DATABASE_URL",
	"TOLLGATE_REDIS_URL",
	"TOLLGATE_ADMIN_TOKEN",
	"TOLLGATE_JWT_SECRET",
	"TOLLGATE_THREADS",
	"TOLLGATE_WEBHOOK_ALLOW_PRIVATE",
	"TOLLGATE_WEBHOOK_BACKOFF_BASE_MS",
	"TOLLGATE_DB_POOL",
	"TOLLGATE_CONN_LIMIT",
	"TOLLGATE_CONN_TIMEOUT",
	"TOLLGATE_CONN_MEMORY",
	"TOLLGATE_REQUEST_TIMEOUT_MS",
	"TOLLGATE_LOG_LEVEL",
	"TOLLGATE_ACCESS_LOG",
	"TOLLGATE_WEBHOOK_WORKERS",
	"TOLLGATE_EVENT_BATCH_MAX",
	"TOLLGATE_EVENT_ID_TTL",
	"TOLLGATE_MAX_INFLIGHT",
	"TOLLGATE_INSTANCE_TTL_MS",
	"TOLLGATE_WORKER",
};
#define NVARS (sizeof(all_vars) / sizeof(all_vars[0]))

static char *errbuf;
static size_t errlen;

/* Clear the environment of every TOLLGATE_ variable (so the host's settings cannot leak in). */
static void clean_env(void)
{
	extern char **environ;
	for (int again = 1; again;) {
		again = 0;
		for (char **e = environ; e && *e; e++) {
			if (strncmp(*e, "TOLLGATE_", 9) == 0) {
				char name[128];
				size_t n = strcspn(*e, "=");
				snprintf(name, sizeof(name), "%.*s", (int)n, *e);
				unsetenv(name);
				again = 1;
				break;
			}
		}
	}
}

/* Load with the environment as is; the messages land in errbuf. */
static int load(void)
{
	FILE *f;

	free(errbuf);
	errbuf = NULL;
	f = open_memstream(&errbuf, &errlen);
	int rc = tg_config_load(f);
	fclose(f);
	return rc;
}

static void setup(void)
{
	clean_env();
}

static void teardown(void)
{
	tg_config_release();
	clean_env();
	free(errbuf);
	errbuf = NULL;
}

START_TEST(test_defaults)
{
	ck_assert_int_eq(load(), 0);
	ck_assert_str_eq(errbuf, "");
	ck_assert_str_eq(tg_cfg.listen, "127.0.0.1:8080");
	ck_assert_int_eq(strncmp(tg_cfg.database_url, "postgresql://", 13), 0);
	ck_assert_int_eq(strncmp(tg_cfg.redis_url, "redis://", 8), 0);
	ck_assert_str_eq(tg_cfg.admin_token, "");
	ck_assert_str_eq(tg_cfg.jwt_secret, "");
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	ck_assert_int_eq(tg_cfg.threads, cpus > 64 ? 64 : cpus); /* 0 means one per CPU */
	ck_assert_int_eq(tg_cfg.db_pool, 8);
	ck_assert(!tg_cfg.webhook_allow_private);
	ck_assert_int_eq(tg_cfg.webhook_backoff_base_ms, 10000);
	ck_assert(tg_cfg.access_log);
	ck_assert_int_eq(tg_cfg.log_level, TG_LOG_INFO);
	ck_assert_int_gt(tg_cfg.request_timeout_ms, 0);
	ck_assert_int_gt(tg_cfg.conn_limit, 0);
	ck_assert_int_gt(tg_cfg.conn_timeout, 0);
}
END_TEST

START_TEST(test_values_read)
{
	setenv("TOLLGATE_LISTEN", "[::1]:9090", 1);
	setenv("TOLLGATE_DATABASE_URL", "postgres://u:p@db:5432/x", 1);
	setenv("TOLLGATE_REDIS_URL", "redis://cache:6380/2", 1);
	setenv("TOLLGATE_ADMIN_TOKEN", "adm", 1);
	setenv("TOLLGATE_JWT_SECRET", "jwt", 1);
	setenv("TOLLGATE_THREADS", "3", 1);
	setenv("TOLLGATE_WEBHOOK_ALLOW_PRIVATE", "true", 1);
	setenv("TOLLGATE_WEBHOOK_BACKOFF_BASE_MS", "86400000", 1);
	setenv("TOLLGATE_ACCESS_LOG", "off", 1);
	setenv("TOLLGATE_LOG_LEVEL", "debug", 1);
	ck_assert_int_eq(load(), 0);
	ck_assert_str_eq(tg_cfg.listen, "[::1]:9090");
	ck_assert_str_eq(tg_cfg.database_url, "postgres://u:p@db:5432/x");
	ck_assert_str_eq(tg_cfg.redis_url, "redis://cache:6380/2");
	ck_assert_str_eq(tg_cfg.admin_token, "adm");
	ck_assert_str_eq(tg_cfg.jwt_secret, "jwt");
	ck_assert_int_eq(tg_cfg.threads, 3);
	ck_assert(tg_cfg.webhook_allow_private);
	ck_assert_int_eq(tg_cfg.webhook_backoff_base_ms, 86400000);
	ck_assert(!tg_cfg.access_log);
	ck_assert_int_eq(tg_cfg.log_level, TG_LOG_DEBUG);

	/* each boolean spelling */
	const char *yes[] = {"1", "true", "yes", "on"}, *no[] = {"0", "false", "no", "off"};
	for (int i = 0; i < 4; i++) {
		setenv("TOLLGATE_WEBHOOK_ALLOW_PRIVATE", yes[i], 1);
		ck_assert_int_eq(load(), 0);
		ck_assert(tg_cfg.webhook_allow_private);
		setenv("TOLLGATE_WEBHOOK_ALLOW_PRIVATE", no[i], 1);
		ck_assert_int_eq(load(), 0);
		ck_assert(!tg_cfg.webhook_allow_private);
	}
	/* loading twice does not keep the old values */
	clean_env();
	ck_assert_int_eq(load(), 0);
	ck_assert_str_eq(tg_cfg.listen, "127.0.0.1:8080");
	ck_assert_str_eq(tg_cfg.admin_token, "");
}
END_TEST

/* name=value must fail, with a message naming the variable. */
static void expect_bad(const char *name, const char *value)
{
	clean_env();
	setenv(name, value, 1);
	ck_assert_msg(load() == -1, "%s='%s' was accepted", name, value);
	ck_assert_msg(strstr(errbuf, name) != NULL, "%s='%s': message does not name it: '%s'", name, value, errbuf);
}

START_TEST(test_bad_ints)
{
	const char *ints[] = {"TOLLGATE_THREADS", "TOLLGATE_DB_POOL", "TOLLGATE_CONN_LIMIT", "TOLLGATE_CONN_TIMEOUT",
			      "TOLLGATE_CONN_MEMORY", "TOLLGATE_REQUEST_TIMEOUT_MS", "TOLLGATE_WEBHOOK_BACKOFF_BASE_MS",
			      "TOLLGATE_WEBHOOK_WORKERS", "TOLLGATE_EVENT_BATCH_MAX", "TOLLGATE_EVENT_ID_TTL",
			      "TOLLGATE_MAX_INFLIGHT"};
	const char *junk[] = {"", "abc", "12abc", " 4", "4 ", "1.5", "0x10", "+4", "1e3", "99999999999999999999999"};
	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++)
		for (size_t j = 0; j < sizeof(junk) / sizeof(junk[0]); j++)
			expect_bad(ints[i], junk[j]);
}
END_TEST

START_TEST(test_out_of_range)
{
	expect_bad("TOLLGATE_THREADS", "-1");
	expect_bad("TOLLGATE_THREADS", "257");
	expect_bad("TOLLGATE_DB_POOL", "0");
	expect_bad("TOLLGATE_CONN_LIMIT", "15");
	expect_bad("TOLLGATE_CONN_TIMEOUT", "0");
	expect_bad("TOLLGATE_CONN_TIMEOUT", "3601");
	expect_bad("TOLLGATE_CONN_MEMORY", "4095");
	expect_bad("TOLLGATE_REQUEST_TIMEOUT_MS", "49");
	expect_bad("TOLLGATE_WEBHOOK_BACKOFF_BASE_MS", "0");
	expect_bad("TOLLGATE_WEBHOOK_BACKOFF_BASE_MS", "86400001");
	expect_bad("TOLLGATE_WEBHOOK_WORKERS", "65");
	expect_bad("TOLLGATE_EVENT_BATCH_MAX", "100001");
	expect_bad("TOLLGATE_EVENT_ID_TTL", "-1");
	expect_bad("TOLLGATE_EVENT_ID_TTL", "3024001"); /* 35 days, the oldest an event may be */
	/* the bounds themselves are fine */
	clean_env();
	setenv("TOLLGATE_THREADS", "256", 1);
	setenv("TOLLGATE_DB_POOL", "1", 1);
	setenv("TOLLGATE_WEBHOOK_WORKERS", "0", 1);
	setenv("TOLLGATE_EVENT_ID_TTL", "3024000", 1);
	ck_assert_int_eq(load(), 0);
	ck_assert_int_eq(tg_cfg.event_id_ttl_s, 3024000);
	ck_assert_int_eq(tg_cfg.threads, 256);
	ck_assert_int_eq(tg_cfg.db_pool, 1);
	ck_assert_int_eq(tg_cfg.webhook_workers, 0);
}
END_TEST

START_TEST(test_bad_booleans_and_levels)
{
	const char *bools[] = {"TOLLGATE_WEBHOOK_ALLOW_PRIVATE", "TOLLGATE_ACCESS_LOG", "TOLLGATE_WORKER"};
	const char *junk[] = {"", "2", "maybe", "TRUE ", "y", "enabled", "-1"};
	for (size_t i = 0; i < sizeof(bools) / sizeof(bools[0]); i++)
		for (size_t j = 0; j < sizeof(junk) / sizeof(junk[0]); j++)
			expect_bad(bools[i], junk[j]);
	expect_bad("TOLLGATE_LOG_LEVEL", "verbose");
	expect_bad("TOLLGATE_LOG_LEVEL", "");
}
END_TEST

START_TEST(test_bad_urls_and_listen)
{
	expect_bad("TOLLGATE_DATABASE_URL", "mysql://db/x");
	expect_bad("TOLLGATE_DATABASE_URL", "host=localhost dbname=x");
	expect_bad("TOLLGATE_DATABASE_URL", "");
	expect_bad("TOLLGATE_REDIS_URL", "http://cache:6379");
	expect_bad("TOLLGATE_REDIS_URL", "rediss://cache:6379"); /* no TLS in hiredis 0.14 */
	expect_bad("TOLLGATE_REDIS_URL", "cache:6379");
	expect_bad("TOLLGATE_LISTEN", "8080");
	expect_bad("TOLLGATE_LISTEN", "localhost");
	expect_bad("TOLLGATE_LISTEN", "localhost:http");
	expect_bad("TOLLGATE_LISTEN", "localhost:65536");
	expect_bad("TOLLGATE_LISTEN", "localhost:-1");
	expect_bad("TOLLGATE_LISTEN", "");
}
END_TEST

START_TEST(test_secrets_not_echoed)
{
	/* a bad value of a secret variable is not printed back */
	clean_env();
	setenv("TOLLGATE_DATABASE_URL", "mysql://user:hunter2@db/x", 1);
	ck_assert_int_eq(load(), -1);
	ck_assert_ptr_null(strstr(errbuf, "hunter2"));
}
END_TEST

START_TEST(test_every_error_reported)
{
	clean_env();
	setenv("TOLLGATE_THREADS", "many", 1);
	setenv("TOLLGATE_ACCESS_LOG", "perhaps", 1);
	ck_assert_int_eq(load(), -1);
	ck_assert_ptr_nonnull(strstr(errbuf, "TOLLGATE_THREADS"));
	ck_assert_ptr_nonnull(strstr(errbuf, "TOLLGATE_ACCESS_LOG"));

	clean_env();
	setenv("TOLLGATE_REDIS_URL", "http://x", 1);
	setenv("TOLLGATE_DATABASE_URL", "mysql://x", 1);
	setenv("TOLLGATE_LISTEN", "nowhere", 1);
	ck_assert_int_eq(load(), -1);
	ck_assert_ptr_nonnull(strstr(errbuf, "TOLLGATE_REDIS_URL"));
	ck_assert_ptr_nonnull(strstr(errbuf, "TOLLGATE_DATABASE_URL"));
	ck_assert_ptr_nonnull(strstr(errbuf, "TOLLGATE_LISTEN"));

	/* every error at once: a bad URL next to a bad number is reported in the same run */
	clean_env();
	setenv("TOLLGATE_THREADS", "many", 1);
	setenv("TOLLGATE_REDIS_URL", "http://x", 1);
	ck_assert_int_eq(load(), -1);
	ck_assert_ptr_nonnull(strstr(errbuf, "TOLLGATE_THREADS"));
	ck_assert_ptr_nonnull(strstr(errbuf, "TOLLGATE_REDIS_URL"));
}
END_TEST

START_TEST(test_help_lists_every_variable)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);
	tg_config_help(f);
	fclose(f);
	for (size_t i = 0; i < NVARS; i++)
		ck_assert_msg(strstr(out, all_vars[i]) != NULL, "--help does not list %s", all_vars[i]);
	/* with defaults */
	ck_assert_ptr_nonnull(strstr(out, "127.0.0.1:8080"));
	ck_assert_ptr_nonnull(strstr(out, "10000"));
	/* and nothing it lists is unknown to the loader: a bad value for each is noticed or accepted,
	 * never ignored silently (strings accept anything, so only the typed ones can be probed) */
	for (const char *p = strstr(out, "TOLLGATE_"); p; p = strstr(p + 1, "TOLLGATE_")) {
		char name[64];
		size_t n = strspn(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_");
		snprintf(name, sizeof(name), "%.*s", (int)n, p);
		bool known = false;
		for (size_t i = 0; i < NVARS; i++)
			known |= strcmp(name, all_vars[i]) == 0;
		ck_assert_msg(known, "--help lists %s, which this test does not know: add it to all_vars", name);
	}
	free(out);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("config");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_values_read);
	tcase_add_test(tc, test_bad_ints);
	tcase_add_test(tc, test_out_of_range);
	tcase_add_test(tc, test_bad_booleans_and_levels);
	tcase_add_test(tc, test_bad_urls_and_listen);
	tcase_add_test(tc, test_secrets_not_echoed);
	tcase_add_test(tc, test_every_error_reported);
	tcase_add_test(tc, test_help_lists_every_variable);
	suite_add_tcase(s, tc);
	return unit_run(s);
}

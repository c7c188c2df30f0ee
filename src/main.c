/* main.c — tollgated: read the configuration, migrate, load caches, serve until SIGINT/SIGTERM. */
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>
#include <curl/curl.h>

#include "tollgate/api.h"
#include "tollgate/auth.h"
#include "tollgate/config.h"
#include "tollgate/hot.h"
#include "tollgate/http.h"
#include "tollgate/log.h"
#include "tollgate/store.h"
#include "tollgate/worker.h"

#ifndef TOLLGATE_VERSION
#define TOLLGATE_VERSION "dev"
#endif

static int loop_init(struct tg_loop *loop, int index)
{
	return hot_loop_init(loop, index);
}

/* A worker thread ends: its PostgreSQL and Redis connections go with it. */
static void worker_exit(void)
{
	store_thread_end();
	hot_thread_end();
	auth_thread_end();
}

static int start_store(void)
{
	struct tg_error err;

	store_init(tg_cfg.database_url);
	/* the database may still be starting (compose, systemd): give it a little while */
	for (int attempt = 0;; attempt++) {
		if (store_migrate(&err) == 0)
			break;
		if (err.err != TG_EUNAVAIL || attempt >= 30) {
			log_error("migrations failed", "%s %s", err.message, err.detail);
			return -1;
		}
		if (attempt == 0)
			log_warn("waiting for PostgreSQL", "%s", err.detail);
		tg_wait_ms(1000);
	}
	if (reload_keys(&err) < 0) {
		log_error("loading configuration failed", "%s %s", err.message, err.detail);
		return -1;
	}
	return 0;
}

/*
 * glibc keeps 7 freed blocks of each size per thread for quick reuse. One pass of a loop answers dozens of
 * requests and frees more than that of each size (libmicrohttpd copies every response header into blocks of
 * its own), so the rest went through glibc's shared bins: malloc and free were ~14% of a loop's CPU time in a
 * quota + rate check. A cache of 512 per size takes 8% off that check's instructions (callgrind); it holds
 * only blocks freed and not yet reused, which glibc's bins would hold otherwise. glibc reads the setting from
 * GLIBC_TUNABLES only when a program starts, so tollgated sets it and starts itself again, once, by its own
 * path (so that ps, pgrep and the journal still see "tollgated"), unless:
 * - GLIBC_TUNABLES is set already: an operator's own choice, or this second start;
 * - LD_PRELOAD is: another allocator, or a tool such as valgrind, which would not follow the second start;
 * - it was started through the dynamic loader (no AT_BASE): /proc/self/exe is then the loader;
 * - it runs in secure mode (setuid, file capabilities): glibc drops GLIBC_TUNABLES there, so it would
 *   start itself again and again.
 */
static void tune_malloc(char **argv)
{
	static const char tune[] = "glibc.malloc.tcache_count=512";
	char exe[PATH_MAX];
	ssize_t n;

	if (getenv("GLIBC_TUNABLES") || getenv("LD_PRELOAD") || getauxval(AT_BASE) == 0 || getauxval(AT_SECURE))
		return;
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0 || (size_t)n >= sizeof(exe) - 1)
		return;
	exe[n] = '\0';
	if (setenv("GLIBC_TUNABLES", tune, 1) == 0)
		execv(exe, argv);
	/* no /proc, or the binary was replaced since ("... (deleted)"): run with glibc's defaults */
	unsetenv("GLIBC_TUNABLES");
}

int main(int argc, char **argv)
{
	struct tg_error err;
	struct tg_http *http;
	sigset_t sigs;
	int sig;

	tune_malloc(argv);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			tg_config_help(stdout);
			return 0;
		}
		if (!strcmp(argv[i], "--version")) {
			printf("tollgated %s\n", TOLLGATE_VERSION);
			return 0;
		}
		fprintf(stderr, "tollgated: unknown argument '%s' (see --help)\n", argv[i]);
		return 2;
	}
	if (tg_config_load(stderr) < 0) {
		fprintf(stderr, "tollgated: invalid configuration (see --help)\n");
		return 2;
	}
	atomic_store(&tg_log_level, tg_cfg.log_level);
	tg_config_log();

	/* block the signals in every thread; the main thread waits for them */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	json_object_seed(0);
	curl_global_init(CURL_GLOBAL_DEFAULT);

	if (hot_init(tg_cfg.redis_url, &err) < 0) {
		fprintf(stderr, "tollgated: %s\n", err.message);
		return 2;
	}
	auth_init(tg_cfg.admin_token, tg_cfg.jwt_secret);
	if (start_store() < 0)
		return 1;
	if (hot_journal_start(tg_cfg.instance_ttl_ms, store_writer_oldest_ms, &err) < 0) {
		log_error("cannot start the journal thread", "%s", err.message);
		return 1;
	}
	static const struct store_writer_hooks writer_hooks = {
		.seen = api_seen_ids,
		.watch = api_watch,
		.before_commit = api_before_commit,
		.after_commit = api_after_commit,
		.lost = api_commit_lost,
	};
	if (reload_start() < 0 ||
	    store_writer_start(tg_cfg.event_batch_max, &writer_hooks) < 0 ||
	    (tg_cfg.worker_enabled && duties_start() < 0) ||
	    (tg_cfg.webhook_workers > 0 && webhooks_start(tg_cfg.webhook_workers) < 0)) {
		log_error("cannot start the background threads", NULL);
		return 1;
	}

	struct tg_http_opts opts = {
		.listen = tg_cfg.listen,
		.threads = tg_cfg.threads,
		.workers = tg_cfg.db_pool,
		.conn_limit = (unsigned)tg_cfg.conn_limit,
		.conn_timeout = (unsigned)tg_cfg.conn_timeout,
		.conn_memory = (size_t)tg_cfg.conn_memory,
		.request_timeout_ms = tg_cfg.request_timeout_ms,
		.max_inflight = tg_cfg.max_inflight,
		.access_log = tg_cfg.access_log,
		.routes = api_routes,
		.nroutes = api_nroutes,
		.authenticate = auth_authenticate,
		.authenticate_slow = api_authenticate_slow,
		.wrap = api_wrap,
		.idem_begin = api_idem_begin,
		.idem_end = api_idem_end,
		.loop_init = loop_init,
		.worker_exit = worker_exit,
	};
	http = tg_http_start(&opts, &err);
	if (!http) {
		log_error("cannot serve", "%s", err.message);
		fprintf(stderr, "tollgated: %s\n", err.message);
		store_writer_stop();
		webhooks_stop();
		duties_stop();
		reload_stop();
		hot_journal_stop();
		return 1;
	}
	api_set_http(http);
	log_info("serving", "http://%s with %d event loops and %d workers", tg_cfg.listen, tg_cfg.threads,
		 tg_cfg.db_pool);

	sigwait(&sigs, &sig);
	log_info("shutting down", "signal %d", sig);
	tg_http_stop(http);
	api_set_http(NULL);
	store_writer_stop();
	webhooks_stop();
	duties_stop();
	reload_stop();
	hot_journal_stop(); /* every commit and its update done: nothing to recover */
	store_thread_end();
	hot_thread_end();
	auth_release();
	curl_global_cleanup();
	tg_config_release();
	log_info("stopped", NULL);
	return 0;
}

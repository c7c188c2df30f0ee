/* config.h — the process configuration, read once from the environment at start-up. */
#ifndef TOLLGATE_CONFIG_H
#define TOLLGATE_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct tg_config {
	char *listen;            /* host:port */
	char *database_url;
	char *redis_url;
	char *admin_token;
	char *jwt_secret;
	int threads;             /* event loops (HTTP + Redis), 0 → number of CPUs */
	int db_pool;             /* worker threads running PostgreSQL-bound handlers */
	int conn_limit;
	int conn_timeout;        /* seconds of idle before a connection is closed */
	int conn_memory;         /* bytes of libmicrohttpd memory per connection */
	int request_timeout_ms;  /* a request waiting on Redis/PostgreSQL longer gets 503 */
	int log_level;
	bool access_log;
	bool webhook_allow_private;
	int64_t webhook_backoff_base_ms;
	int webhook_workers;
	int event_batch_max;     /* events per group commit */
	int instance_ttl_ms;     /* the heartbeat's life: older, an instance's journal is recovered (hot/journal.c) */
	int event_id_ttl_s;      /* committed event ids remembered in Redis this long (0: not at all) */
	int max_inflight;        /* checks in flight per loop before 503 */
	bool worker_enabled;     /* background duties (delivery, period close, expiry) */
};

extern struct tg_config tg_cfg;

/* Read every TOLLGATE_* variable; on error print each problem to err and return -1. */
int tg_config_load(FILE *err);
/* Print the --help table of every variable with its default. */
void tg_config_help(FILE *out);
/* Log the effective configuration with secrets redacted. */
void tg_config_log(void);
void tg_config_release(void);

#endif

/* worker.h — background threads: configuration reload (LISTEN/NOTIFY), and later the duties. */
#ifndef TOLLGATE_WORKER_H
#define TOLLGATE_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tollgate/error.h"
#include "tollgate/store.h"

/*
 * DESIGN: one reload thread holds a dedicated LISTEN connection on channels
 * tg_config (payload: tenant id) and tg_customer ("tenant customer"). On a
 * notification it reloads that tenant's API keys and configuration snapshot
 * (or drops one customer from the caches). Every 30 s, and whenever the
 * LISTEN connection had to be re-established, it reloads everything: a
 * notification missed while disconnected cannot leave stale state behind.
 * Handlers that change configuration call reload_tenant() themselves before
 * answering, so a change is visible at once on the instance that made it.
 */

/* Load everything (blocking). */
int reload_all(struct tg_error *err);
/* Load every API key (blocking; at start-up, before serving: configurations load in the background, and a
 * tenant not loaded yet is loaded by its first request). */
int reload_keys(struct tg_error *err);
/* Reload one tenant's keys and configuration now (blocking; any thread with a store connection).
 * Inside a transaction the reload waits for reload_flush() after it ends. */
int reload_tenant(const char *tenant_id, struct tg_error *err);
/* Run (committed) or forget the reloads deferred on this thread. */
void reload_flush(bool committed);
/* Drop a customer from this instance's cache (and its live balance from Redis when wallet) once the
 * current transaction (if any) has committed. */
void reload_forget_customer(const char *tenant_id, const char *customer_id, bool wallet);
/* Let go of the tenant's expired reservations once this transaction commits (at once outside one). */
void reload_expire_reservations(const char *tenant_id);

int reload_start(void);
void reload_stop(void);

/*
 * DESIGN: one duties thread per instance runs the periodic duties in turn,
 * once a second: reservation expiry (every tenant's expired holds released
 * in Redis; releasing twice is a no-op, so instances need no coordination),
 * rollup compaction (instances skip each other's rows), period closing and
 * the idempotency-key sweep. Duties that write PostgreSQL take a
 * transaction-level advisory lock so only one instance runs each at a time.
 */
int duties_start(void);
/* One pass of period closing and daily summaries for every tenant (exposed for tests). */
void duties_close_periods(void);

/*
 * DESIGN (webhook delivery): TOLLGATE_WEBHOOK_WORKERS threads per instance,
 * each with one libcurl multi handle. A thread claims due deliveries with
 * FOR UPDATE SKIP LOCKED and leases them (next_attempt_at pushed 60 s ahead,
 * so a crash leaves them due again: at-least-once), sends up to 64 at a time
 * (10 s timeout, redirects not followed, the connected address re-checked
 * against the SSRF rules at connect time), records every attempt, and
 * schedules the next with exponential backoff and jitter for up to 3 days.
 */
int webhooks_start(int threads);
void webhooks_stop(void);
/* Is this http(s) URL allowed as a webhook target? Resolves the host (refusing loopback, private,
 * link-local, multicast, unspecified and other special-purpose addresses, IPv4 ones also inside
 * IPv6, unless allow_private). 0 or -err naming "url". */
int webhook_url_check(const char *url, bool allow_private, struct tg_error *err);
/* Standard Webhooks signature header value for one secret ("whsec_..."): "v1,<base64>". */
int webhook_sign(const char *secret, const char *id, int64_t ts, const char *body, size_t len, char *out,
		 size_t size);
void duties_stop(void);
/* Rollup compaction for up to PASS_BUDGET_US: hourly rollups of hours that ended over an hour ago added
 * into their days (migration 0013); returns how many. While there is no work, it looks every 10 s. */
int64_t duties_compact_rollups(void);
/* One pass of the reservation expiry (exposed for tests); returns how many were released. */
int duties_expire_reservations(const char *tenant_id);
/* After a customer is deleted: its reservations let go, its live counters dropped. */
void duties_customer_gone(const char *tenant_id, const char *customer_id);
/* Let reservations go (released, or expired): delete them in PostgreSQL, then their holds in Redis, on the
 * event writer's thread so that no counter rebuild falls between. *got (in a) has the ones that were still
 * active; the others are gone already. Blocking: not on an event loop. */
int reservations_let_go(const char *tenant_id, const char *const *ids, int n, struct store_reservation **got,
			int *ngot, struct tg_arena *a, struct tg_error *err);

#endif

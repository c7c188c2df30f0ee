/* worker.h — background threads: configuration reload (LISTEN/NOTIFY), and later the duties. */
#ifndef TOLLGATE_WORKER_H
#define TOLLGATE_WORKER_H

#include "tollgate/error.h"

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

/* Load everything (blocking; at start-up). */
int reload_all(struct tg_error *err);
/* Reload one tenant's keys and configuration now (blocking; any thread with a store connection). */
int reload_tenant(const char *tenant_id, struct tg_error *err);

int reload_start(void);
void reload_stop(void);

/*
 * DESIGN: one duties thread per instance runs the periodic duties in turn,
 * once a second: reservation expiry (every tenant's expired holds released
 * in Redis; releasing twice is a no-op, so instances need no coordination)
 * and the idempotency-key sweep. Duties that write PostgreSQL take a
 * transaction-level advisory lock so only one instance runs each at a time.
 */
int duties_start(void);
void duties_stop(void);
/* One pass of the reservation expiry (exposed for tests); returns how many were released. */
int duties_expire_reservations(void);

#endif

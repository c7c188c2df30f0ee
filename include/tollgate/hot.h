/* hot.h — Redis: the live counters, buckets, balances and reservations, and the scripts that move them. */
#ifndef TOLLGATE_HOT_H
#define TOLLGATE_HOT_H

#include <stdbool.h>
#include <stdint.h>

#include "tollgate/error.h"
#include "tollgate/loop.h"

/*
 * DESIGN: each event loop owns one non-blocking Redis connection (hot/redis.c).
 * Commands produced while the loop handles a pass are appended to that
 * connection's output buffer and written together at the end of the pass, so
 * the checks of every request that arrived together share one write and one
 * read; replies come back in order and are matched to a FIFO of callbacks.
 * Scripts are loaded by SCRIPT LOAD when the connection is (re)established and
 * called by SHA; a NOSCRIPT reply reloads them and resends the same command.
 * A lost connection fails every pending command at once (the callers answer
 * per their fail_mode) and is re-dialled with backoff. Worker threads
 * (PostgreSQL-bound handlers, the event writer, duties) use a blocking
 * connection of their own, in thread-local storage.
 */

/* Parse TOLLGATE_REDIS_URL once, before the loops start. */
int hot_init(const char *url, struct tg_error *err);
/* The tg_loop_init_fn part for Redis: attach this loop thread's async connection. */
int hot_loop_init(struct tg_loop *loop, int index);
/* Is this loop's async connection up right now? */
bool hot_loop_connected(void);
/* Blocking round trip on this thread's own connection (readiness probe). */
bool hot_ping(struct tg_error *err);
/* Close this thread's blocking connection. */
void hot_thread_end(void);

#endif

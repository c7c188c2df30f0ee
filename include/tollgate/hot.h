/* hot.h — Redis: the live counters, buckets, balances and reservations, and the scripts that move them. */
#ifndef TOLLGATE_HOT_H
#define TOLLGATE_HOT_H

#include <stdbool.h>
#include <stdint.h>

#include "tollgate/error.h"
#include "tollgate/loop.h"
#include "tollgate/policy.h"

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

/* ---- the journal: live counters left out of step by an instance that dies (hot/journal.c) ---- */

/* Register this instance (a heartbeat that lasts ttl_ms; later if Redis is down now) and start the thread
 * that keeps it, trims the journal (never past what oldest_ms, the event writer's oldest pending submission,
 * may need) and recovers the journals of instances whose heartbeat is gone. Fails only when the thread
 * cannot start. */
int hot_journal_start(int ttl_ms, int64_t (*oldest_ms)(void), struct tg_error *err);
/* After every commit and update is done: unregister, leaving nothing to recover. */
void hot_journal_stop(void);
/* This instance's journal key (NULL when not registered): the last key of a check that notes its counters. */
const char *hot_journal_key(void);
/* Note these counter keys before a commit that will move them (blocking connection of this thread), unless
 * this thread did lately and always is false (only the event writer's waits are bounded by the trim); keys
 * that cannot be noted are dropped once Redis answers instead (hot_journal_suspect). */
int hot_journal_note(const char *const *keys, int n, bool always, struct tg_error *err);
/* These keys' update failed or may not have happened: drop them once Redis answers (they rebuild). */
void hot_journal_suspect(const char *const *keys, int n);
/* This thread noted key in the journal at ms (wall clock), in epoch (hot_journal_epoch() when the note was
 * made) / did so recently enough that it need not again. */
uint64_t hot_journal_epoch(void);
void hot_journal_noted(const char *key, int64_t ms, uint64_t epoch);
bool hot_journal_fresh(const char *key, int64_t now_ms);

/* ---- checks ---- */

enum hot_status {
	HOT_ERROR = -1,   /* Redis unreachable or failed: answer per fail_mode */
	HOT_MISSING = 0,  /* some quota counters are missing: rebuild them, set init, call again */
	HOT_DONE = 1,     /* every counter's state is filled; allowed tells whether it was applied */
};

#define HOT_DRY_RUN 1u
#define HOT_RESERVE 2u

/* The balance gate of a check: the owner's live balance in Redis. */
struct hot_balance {
	const char *owner;           /* the customer, or its organisation */
	tg_fixed cost;               /* the check's priced cost */
	bool consume, reserve;
	bool missing, has_init;      /* missing: rebuild from PostgreSQL into init_* and call again */
	tg_fixed init_balance, init_minimum, init_reserved;
	/* results */
	bool allowed;
	tg_fixed balance, reserved, minimum;
	int64_t mark;                /* the live balance's rebuild mark (see policy_counter.mark) */
};

/* The workflow guards of a check (effective maxima, 0 = none). */
struct hot_workflow {
	const char *id, *tool, *args_hash;
	int64_t depth;
	int64_t max_calls, max_depth, max_duration_ms, max_duplicates;
	tg_fixed max_cost, cost;
	bool record_cost;  /* a consuming check: its cost is spent by the workflow now */
	/* results */
	bool allowed;
	int code; /* 0 ok, 1 tool calls, 2 duplicates, 3 depth, 4 duration, 5 cost; 10 + one of those when the
		   * workflow was terminated by an earlier call */
	int64_t calls;
	tg_fixed spent;
};

struct hot_check {
	const char *tenant_id;
	struct policy_counter *cs;
	int n;
	int64_t now_ms;              /* the tenant's clock */
	unsigned flags;
	struct hot_balance *bal;     /* NULL: no balance gates this check */
	struct hot_workflow *wf;     /* NULL: no workflow guard */
	/* results */
	int sent;                    /* counters sent to the script (those with a subject, workflow, balance) */
	int64_t journal_ms;          /* set by the build: when the script notes its keys in the journal (0: not) */
	uint64_t journal_epoch;      /* hot_journal_epoch() then */
	bool journals;               /* it moves counters the journal covers (noted now or lately) */
	enum hot_status status;
	bool allowed;                /* every enforced counter fit (and, unless dry run, all were consumed) */
};

/* Queue the check on this loop's connection; done(arg) runs on this loop in a later pass.
 * Returns -1 at once when the connection is down (done is not called). */
int hot_check_async(struct hot_check *hc, struct tg_arena *arena, void (*done)(void *arg), void *arg);
/* The same on this thread's blocking connection. Returns hc->status. */
int hot_check_sync(struct hot_check *hc, struct tg_arena *arena, struct tg_error *err);

/* ---- committed usage (writer thread, blocking connection) ---- */

/* A hold to let go: the amount a reservation (settled, released or expired) held on a counter or balance. */
struct hot_release {
	const char *key;
	int64_t amount;
};

/* A committed change of a live balance (only applied if Redis has it: else it is rebuilt from the ledger). */
struct hot_balance_delta {
	const char *owner;
	tg_fixed amount; /* negative: a priced debit */
	const char *workflow_id; /* set: the cost goes to this workflow instead (owner unused) */
	int64_t mark;            /* with mark_rule: as for quota counters (policy_counter.mark) */
	enum policy_mark_rule mark_rule;
};

/* Add committed usage to the live counters (quota counters only if present: a missing one is
 * rebuilt from the rollups, which already include it), move balances, release reservations. */
int hot_apply_usage(const char *tenant_id, const struct policy_counter *cs, int n, int64_t now_ms,
		    const struct hot_balance_delta *bal, int nbal, const struct hot_release *rel, int nrel,
		    struct tg_arena *a, struct tg_error *err);

/* How many times this process has released a tenant's reservation holds (hot_apply_usage with releases; a
 * count shared with the few tenants hashed alike): the loops' deny caches forget denials made before the
 * latest release, which may have freed room. */
uint64_t hot_holds_released(const char *tenant_id);

/* Drop a live balance: the next use rebuilds it from the ledger (after a failed update, or a deleted wallet). */
void hot_keys_forget(const char *const *keys, int n);
int hot_balance_forget(const char *tenant_id, const char *owner, struct tg_error *err);
/* Put rebuilt values into Redis for the counters (has_init) and balance (has_init) still missing there. */
int hot_init_counters(const char *tenant_id, const struct policy_counter *cs, int n, int64_t now_ms,
		      const struct hot_balance *bal, struct tg_arena *a, struct tg_error *err);

/* ---- seen event ids (blocking; the event writer's) ----
 * A cache in front of PostgreSQL's unique key on event ids: an id is set here only after the event
 * that carries it is committed, so an id found here is a duplicate for certain, without a transaction.
 * An id not found (never seen, expired, or Redis lost it) is left to the unique key. */
/* seen[i] = whether ids[i] is known; a negative tg_err (seen untouched) when Redis fails. */
int hot_event_ids_seen(const char *tenant_id, const char *const *ids, int n, bool *seen, struct tg_error *err);
/* Remember committed ids for ttl_s seconds. */
int hot_event_ids_remember(const char *tenant_id, const char *const *ids, int n, int ttl_s, struct tg_error *err);

/* ---- the balance API (blocking) ---- */
enum hot_balance_op { HOT_DEBIT = 'd', HOT_CREDIT = 'c', HOT_SET_MINIMUM = 'm' };
/* Returns 1 done, 0 refused (a debit below the minimum), HOT_MISSING (-2: rebuild with init and call
 * again) or a negative tg_err. The state after is in *ret. */
#define HOT_BALANCE_MISSING (-100)
int hot_balance(const char *tenant_id, const char *owner, enum hot_balance_op op, tg_fixed amount,
		const struct hot_balance *init, struct hot_balance *ret, struct tg_error *err);
/* The Redis key of a quota counter and of a live balance: what a reservation's holds name. */
const char *hot_counter_key(struct tg_arena *a, const char *tenant, const struct policy_counter *c);
const char *hot_hold_key(struct tg_arena *a, const char *key, int64_t now_ms);
size_t hot_hold_prefix_len(const char *key);
/* A counter PostgreSQL can rebuild (a quota on an event meter; the requests meter's usage, token buckets,
 * windows and workflows live in Redis alone): the only kind, with live balances, the journal lists. */
bool hot_durable(const struct policy_counter *c);
const char *hot_balance_key(struct tg_arena *a, const char *tenant, const char *owner);

#endif

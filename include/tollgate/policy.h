/* policy.h — pure decision logic: compiled tenant configuration, periods, slots, counters, decisions. */
#ifndef TOLLGATE_POLICY_H
#define TOLLGATE_POLICY_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "tollgate/error.h"
#include "tollgate/fixed.h"
#include "tollgate/util.h"

/*
 * policy/ knows nothing of HTTP, PostgreSQL or Redis. It compiles a tenant's
 * configuration (as JSON rows from store/) into an immutable snapshot, turns
 * a check into the list of counters to test (policy_plan), and the counters'
 * states into a decision (policy_decide). Time is always an argument.
 *
 * DESIGN (snapshots): a struct policy_tenant is immutable once published and
 * reference-counted. policy_registry_put() swaps a tenant's snapshot under the
 * registry's write lock; readers take a reference under the read lock and
 * drop it when their request ends, so a swap never frees a snapshot in use.
 */

enum policy_kind { POLICY_QUOTA, POLICY_RATE, POLICY_WORKFLOW };
enum policy_scope { SCOPE_PLATFORM, SCOPE_DEFAULT, SCOPE_TIER, SCOPE_CUSTOMER };
enum policy_period { PERIOD_HOUR, PERIOD_DAY, PERIOD_WEEK, PERIOD_MONTH, PERIOD_ALL_TIME };
enum policy_enforcement { ENF_HARD, ENF_SOFT, ENF_SHADOW };
enum policy_algorithm { ALG_TOKEN_BUCKET, ALG_SLIDING_WINDOW };
enum policy_per { PER_CUSTOMER, PER_IP, PER_KEY, PER_PLATFORM };
enum policy_agg { AGG_SUM, AGG_COUNT, AGG_MAX, AGG_LATEST };

extern const char *const policy_kind_names[];
extern const char *const policy_scope_names[];
extern const char *const policy_period_names[];
extern const char *const policy_enforcement_names[];
extern const char *const policy_algorithm_names[];
extern const char *const policy_per_names[];
extern const char *const policy_agg_names[];

#define POLICY_MAX_DIMS 16
#define POLICY_MAX_THRESHOLDS 8
#define POLICY_REQUESTS "requests"

struct policy_dim {
	const char *key, *value;
};

struct policy_price_rule {
	const char *dim, *value;
	tg_fixed price;
};

struct policy_meter {
	char *id;
	char *event_type;         /* NULL for the built-in requests meter */
	char *property;           /* NULL for count */
	enum policy_agg agg;
	char **group_by;
	int ngroup;
	bool has_price;
	tg_fixed price_default;
	struct policy_price_rule *prices; /* by dimension value: the most specific match wins */
	int nprices;
	json_t *json;             /* the API representation (owned) */
};

struct policy_limit {
	char *id;
	enum policy_kind kind;
	const struct policy_meter *meter; /* NULL for workflow guards */
	enum policy_scope scope;
	char *tier, *customer_id;
	enum policy_period period;  /* quota */
	int64_t window_s;           /* rate */
	enum policy_algorithm algorithm;
	tg_fixed limit, burst;
	enum policy_per per;
	enum policy_enforcement enforcement;
	tg_fixed thresholds[POLICY_MAX_THRESHOLDS];
	int nthresholds;
	struct policy_dim *filter;
	int nfilter;
	bool fail_open;
	struct policy_dim *fallback; /* on_exceed fallback dimensions (NULL: deny) */
	int nfallback;
	/* workflow guards (0 = not set) */
	int64_t max_tool_calls, max_depth, max_duration_s, duplicate_threshold;
	tg_fixed max_cost;
	char *slot;                 /* canonical (kind, meter, period|window, filter, per) */
	char *key_id;               /* the id in its Redis keys: id~tag of what it counts (policy_limit_key_id) */
	int64_t created_ms;         /* when made, on the tenant's clock (migration 0015); 0 when unknown */
	json_t *json;               /* the API representation (owned) */
	/* its object in a check's limits[], made once: head up to "subject":, the limit, the tail */
	char *reply_head, *reply_limit, *reply_tail;
	size_t reply_head_len, reply_limit_len, reply_tail_len;
};

struct policy_limit_list {
	const struct policy_limit **items;
	int n;
};

struct policy_tenant {
	char *id;
	int64_t created_ms;    /* real time */
	bool test_mode;
	int64_t clock_offset_ms;
	char *default_tier;
	bool auto_create_customers;
	struct policy_meter *meters;
	int nmeters;
	struct policy_meter requests; /* built-in */
	struct policy_limit *limits;
	int nlimits;
	/* indexes (built at compile time) */
	struct policy_index *index;
	uint64_t generation;  /* unique per compiled snapshot: caches keyed on it die with it */
	_Atomic int refs;
};

/* The tenant's clock: real time, plus the test clock's offset for test-mode tenants (see tg_clock_ms). */
static inline int64_t policy_now(const struct policy_tenant *t, int64_t real_ms)
{
	return tg_clock_ms(real_ms, t->clock_offset_ms);
}

/* Validate a meter definition (API fields) into m; strings are copied. 0 or -err naming the field. */
int policy_meter_parse(const json_t *spec, struct policy_meter *m, struct tg_error *err);
void policy_meter_release(struct policy_meter *m);
/* The canonical API object of a parsed meter (new reference). */
json_t *policy_meter_json(const struct policy_meter *m);
/* Validate a limit definition (API fields; id must already be set) against the tenant's meters. */
int policy_limit_parse(const json_t *spec, const struct policy_tenant *t, struct policy_limit *l,
		       struct tg_error *err);
void policy_limit_release(struct policy_limit *l);
void policy_limit_key_id(struct policy_limit *l, const char *created_at);
/* The canonical API object of a parsed limit (new reference). */
json_t *policy_limit_json(const struct policy_limit *l);

/* Compile {tenant:{...}, meters:[{spec, created_at, updated_at}...], limits:[...]}; NULL + err on bad data. */
struct policy_tenant *policy_compile(const json_t *config, struct tg_error *err);
void policy_tenant_ref(struct policy_tenant *t);
void policy_tenant_unref(struct policy_tenant *t);

const struct policy_meter *policy_meter_find(const struct policy_tenant *t, const char *id);
/* Meters aggregating events of this type (NULL-terminated list valid for the snapshot's life). */
int policy_meters_for_type(const struct policy_tenant *t, const char *type, const struct policy_meter **out,
			   int max);
const struct policy_limit *policy_limit_find(const struct policy_tenant *t, const char *id);

/* ---- registry ---- */
/* A new reference to the tenant's current snapshot, or NULL. Thread-safe. */
struct policy_tenant *policy_registry_get(const char *tenant_id);
/* Publish (steals t's reference); NULL t removes the tenant. */
void policy_registry_put(const char *tenant_id, struct policy_tenant *t);
/* Ids of every tenant with a snapshot (malloc'd array of malloc'd strings). */
char **policy_registry_tenants(size_t *n);
/* The tenants new, or whose clock or limits changed, since the last call (free like the above). */
char **policy_registry_changed(size_t *n);

struct policy_subject;

/* ---- customer cache ---- */
/*
 * DESIGN: tier and organisation of each customer seen by a check, in 64
 * mutex-protected stripes (a check holds one for a lookup only). Entries
 * are dropped when PostgreSQL NOTIFYs a change of that customer; an
 * organisation's tier is looked up through its own entry, so changing it
 * needs no scan of its members. A stripe that grows past its share of
 * TOLLGATE-wide capacity is simply cleared.
 */
/* Fill from the cache (strings copied into a); false on a miss. */
bool policy_customer_get(const char *tenant_id, const char *customer_id, struct tg_arena *a, const char **tier,
			 const char **parent_id, bool *has_balance);
/* The generation to read before loading a customer from PostgreSQL, and to put the result under: a
 * forget in between (a change committed meanwhile) makes the put a no-op, so stale data is never kept. */
uint64_t policy_customer_generation(const char *tenant_id, const char *customer_id);
bool policy_customer_put(const char *tenant_id, const char *customer_id, const char *tier, const char *parent_id,
			 bool has_balance, uint64_t generation);
void policy_customer_forget(const char *tenant_id, const char *customer_id);
/* Resolve a subject fully from the cache (customer and its organisation); false on any miss. */
bool policy_subject_cached(const char *tenant_id, const char *customer_id, struct tg_arena *a,
			   struct policy_subject *s);

/* ---- periods (UTC calendar) ---- */
int64_t policy_period_start(enum policy_period p, int64_t now_ms);
int64_t policy_period_end(enum policy_period p, int64_t start_ms); /* INT64_MAX for all_time */
/* Seconds in the period that contains now (for RateLimit-Policy's w). */
int64_t policy_period_seconds(enum policy_period p, int64_t now_ms);

/* ---- checks ---- */

/* Who a check is about, as resolved from the customer cache. */
struct policy_subject {
	const char *customer_id;
	const char *tier;      /* NULL: no tier */
	const char *parent_id; /* the organisation, NULL when none */
	const char *parent_tier;
	const char *balance_owner; /* whose balance gates it: its own, else its organisation's, else NULL */
};

struct policy_check {
	const char *meter;       /* "requests" when absent */
	tg_fixed amount;
	struct policy_dim dims[POLICY_MAX_DIMS];
	int ndims;
	const char *ip, *key;
	bool consume, reserve, dry_run;
};

enum policy_subject_kind { SUBJECT_CUSTOMER, SUBJECT_ORG, SUBJECT_PLATFORM, SUBJECT_IP, SUBJECT_KEY };

/* One counter a check tests (and maybe consumes): a limit applied to a subject. */
/* What the after-commit hook does with usage a check already moved in Redis (policy_counter.mark). */
enum policy_mark_rule { MARK_NONE, MARK_APPLY_IF_REBUILT, MARK_UNDO_IF_NOT_REBUILT };

struct policy_counter {
	const struct policy_limit *limit;
	enum policy_subject_kind subject_kind;
	const char *subject;          /* customer/org id, ip or key value; "" for the platform */
	int64_t period_start_ms, period_end_ms; /* quotas */
	tg_fixed amount;              /* what the check asks for on this counter */
	bool consume;                 /* consumed when the check is allowed */
	bool reserve;                 /* held under the reservation when allowed */
	/* filled from Redis */
	bool missing;                 /* a quota counter Redis does not have: rebuild from PostgreSQL */
	bool has_init;
	tg_fixed init;                /* the rebuilt value */
	tg_fixed init_reserved;       /* and what active reservations hold on it */
	int64_t init_at_ms;           /* a latest meter's: the instant of the rebuilt value (0: none) */
	int64_t at_ms;                /* a latest meter's: the instant of the value recorded (event time) */
	tg_fixed used, reserved, remaining;
	int64_t reset_ms;             /* when the counter resets/refills fully (absolute, tenant clock) */
	int64_t retry_ms;             /* from now until this amount would pass; -1 = never */
	bool allowed;                 /* this counter alone would allow the amount */
	/* A quota counter's rebuild mark as check.lua saw it: each rebuild of a lost counter gives it a new
	 * one. A consuming check's usage is in Redis before its event commits; a rebuild in between (from
	 * rollups without it) loses it, so after the commit it is applied again when the mark changed
	 * (and a failed commit takes it back only when the mark did not). */
	int64_t mark;
	enum policy_mark_rule mark_rule;
};

/* Build the counters of a check. Returns the count (≥ 0) with *ret arena-allocated. */
int policy_plan(const struct policy_tenant *t, const struct policy_check *c, const struct policy_subject *s,
		int64_t now_ms, struct tg_arena *a, struct policy_counter **ret);
/* Every limit that applies to a customer (for usage reads), as counters with amount 0. */
int policy_customer_quotas(const struct policy_tenant *t, const char *customer_id, int64_t now_ms, bool everything,
			   struct tg_arena *a, struct policy_counter **ret);
int policy_plan_all(const struct policy_tenant *t, const struct policy_subject *s, int64_t now_ms,
		    struct tg_arena *a, struct policy_counter **ret);
/* Does a limit's filter match these dimensions? */
bool policy_filter_matches(const struct policy_limit *l, const struct policy_dim *dims, int ndims);

enum policy_decision_kind { DECISION_ALLOW, DECISION_DENY, DECISION_FALLBACK, DECISION_WARN };
extern const char *const policy_decision_names[];

struct policy_decision {
	bool allowed;
	enum policy_decision_kind decision;
	const char *code;                      /* NULL when allowed */
	const struct policy_counter *binding;  /* see API.md */
	int64_t retry_after_s;                 /* -1: waiting cannot help */
	const char *warnings[8];
	int nwarnings;
};

/* Compose the decision from the counters' states (after Redis answered). */
void policy_decide(const struct policy_counter *cs, int n, int64_t now_ms, struct policy_decision *d);
/* The API object of one counter's live state: written to a reply, or as a new reference. */
struct tg_jw;
void policy_counter_write(struct tg_jw *w, const struct policy_counter *c, int64_t now_ms);
/* Make the constant parts of a limit's limits[] object (at parse time). */
void policy_limit_prepare_reply(struct policy_limit *l);
json_t *policy_counter_json(const struct policy_counter *c, int64_t now_ms);
/* RateLimit header values for the binding counter. */
struct policy_ratelimit {
	tg_fixed limit, remaining;
	int64_t reset_s, window_s;
};
void policy_ratelimit(const struct policy_counter *c, int64_t now_ms, struct policy_ratelimit *rl);

/* ---- workflow guards ---- */
/* The effective guards for a customer: its customer-scope workflow limits, else its tier's, else the
 * defaults, plus platform ones; the strictest of each maximum, with the limit it came from.
 * Index: 0 tool calls, 1 duplicates, 2 depth, 3 duration, 4 cost (hot_workflow codes 1–5). */
struct policy_workflow {
	int64_t max_calls, max_duplicates, max_depth, max_duration_s;
	tg_fixed max_cost;
	const struct policy_limit *from[5];
};
extern const char *const policy_guard_names[];
bool policy_workflow_guard(const struct policy_tenant *t, const struct policy_subject *s, struct policy_workflow *out);

/* ---- prices ---- */
/* The meter's price for these dimensions: the first `by` rule whose dimension value matches, else the
 * default; false when the meter has no price. */
bool policy_price(const struct policy_meter *m, const struct policy_dim *dims, int ndims, tg_fixed *ret);
/* amount × price, rounded half away from zero to 6 digits; 0 for an unpriced meter. */
int policy_cost(const struct policy_meter *m, tg_fixed amount, const struct policy_dim *dims, int ndims,
		tg_fixed *ret);

/* ---- events ---- */
/* The value an event contributes to a meter, or false when the meter does not aggregate it. */
bool policy_event_value(const struct policy_meter *m, const json_t *properties, tg_fixed *ret);

#endif

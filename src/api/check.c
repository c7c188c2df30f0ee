/* check.c — POST /v1/check, the hot path: one Redis round trip, no PostgreSQL, unless a cache is cold. */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "handlers.h"
#include "tollgate/api.h"
#include "tollgate/hot.h"
#include "tollgate/json.h"
#include "tollgate/log.h"
#include "tollgate/loop.h"
#include "tollgate/map.h"
#include "tollgate/metrics.h"
#include "tollgate/policy.h"
#include "tollgate/store.h"

/*
 * DESIGN: the fast path runs on the event loop: parse, find the tenant's
 * snapshot and the customer in the in-process caches, plan the counters,
 * queue one check.lua call on the loop's pipelined Redis connection and
 * return TG_ASYNC; the reply (a later pass of the same loop) composes the
 * answer. Anything cold — a tenant or customer not cached, a counter Redis
 * lost — moves the request to the worker pool (slow_path), which reads
 * PostgreSQL, rebuilds and runs the same script on a blocking connection.
 * A consuming check that is allowed is recorded as an event through the
 * event writer and answered only after its commit.
 */

#define DEFAULT_RESERVATION_TTL 300
#define MAX_RESERVATION_TTL 86400

/*
 * DESIGN (deny cache): each event loop keeps, for the counters that denied a
 * check, "denied until T" (tenant clock) with the amount that was denied and
 * the snapshot generation of the decision. A later check asking at least that
 * amount of such a counter before T is denied from here, without Redis: a
 * customer hammering far past its limit is cheaper to refuse than to serve.
 * Rate limits refill deterministically, so T is exact; quota denials are
 * cached for at most a second (a reservation released or a limit raised on
 * another instance frees room). A new snapshot (any configuration change)
 * voids every entry of the tenant, and so does a release of reservation holds
 * by this process. Only the same amount is answered from here: its
 * Retry-After is the one Redis gave (a larger amount may never fit, or fit
 * later). Loop-local: no locks.
 */
#define DENY_CACHE_MAX 65536
#define DENY_QUOTA_MS 1000

struct deny_entry {
	int64_t until;
	int64_t retry_at;             /* when the denied amount could pass (tenant clock), -1: never by waiting */
	uint64_t generation;
	uint64_t released;            /* the tenant's count of released holds (hot_holds_released) then */
	tg_fixed amount;
	struct policy_counter state;  /* the counter as denied (its limit lives in that generation) */
	struct tg_metric *throttles;
};

static _Thread_local struct tg_map deny_cache;
static _Thread_local struct tg_map throttle_notified; /* "tenant|customer|limit" → minute + 1 */
static _Thread_local struct tg_map quota_notified; /* requests quotas' notices sent from this loop (first_notice) */
static _Thread_local struct tg_buf throttle_log;
static _Thread_local bool throttle_hook;

struct check {
	struct tg_req *req;
	struct policy_tenant *t;
	struct policy_check chk;
	struct policy_subject subj;
	const char *customer_id;
	struct policy_counter *cs;
	int n;
	struct hot_check hc;
	struct hot_balance bal;
	struct hot_workflow wf;
	struct policy_workflow guard;
	bool has_workflow;
	tg_fixed cost;               /* the check's priced cost */
	/* fallback: re-evaluation with substituted dimensions (up to 3 steps, never a cycle) */
	int fallback_steps;
	json_t *fallback;            /* the dimensions substituted so far */
	char *visited[4];
	struct {
		struct policy_counter *cs;
		int n;
		struct hot_check hc;
		struct hot_balance bal;
		struct hot_workflow wf;
		struct policy_check chk;
		tg_fixed cost;
	} first;                     /* the original evaluation, answered when no fallback passes */
	int64_t now;
	uint64_t released;           /* hot_holds_released before Redis was asked: a deny cached after a release is void */
	int64_t rsv_ttl;
	char rsv_id[TG_SID_BUFSZ];
	bool degraded;
	bool from_cache;
	/* a consuming check's usage, or a reserving check's reservation, on its way to PostgreSQL */
	struct store_submission sub;
	struct store_event ev;
	struct store_contrib contrib;
	struct store_reservation rsv;
};

static struct tg_metric *decisions_metric(const char *code)
{
	static struct tg_metric *allow, *warn, *quota, *rate, *unavail, *balance;
	struct tg_metric **slot = !code ? &allow : !strcmp(code, "warn") ? &warn : !strcmp(code, "quota_exceeded") ? &quota
				: !strcmp(code, "rate_limited") ? &rate : !strcmp(code, "insufficient_balance") ? &balance : &unavail;

	if (!*slot) {
		char labels[64];
		snprintf(labels, sizeof(labels), "code=\"%s\"", code ? code : "allowed");
		*slot = tg_counter("tollgate_check_decisions_total", "Checks answered, by decision code.", labels);
	}
	return *slot;
}

static void flush_throttle_log(void *arg)
{
	(void)arg;
	if (throttle_log.len) {
		tg_log_raw(throttle_log.buf, throttle_log.len);
		tg_buf_reset(&throttle_log);
	}
}

/* "a|b|c..." into buf (cut to size), without printf: these keys are made for every denial. Returns the length. */
static size_t join_key(char *buf, size_t size, const char *const *parts, int n)
{
	size_t len = 0;

	for (int i = 0; i < n; i++) {
		size_t k = strlen(parts[i]);
		if (i > 0 && len + 1 < size)
			buf[len++] = '|';
		if (k > size - 1 - len)
			k = size - 1 - len;
		memcpy(buf + len, parts[i], k);
		len += k;
	}
	buf[len] = '\0';
	return len;
}

static size_t deny_key(char *buf, size_t size, const char *tenant, const struct policy_counter *c)
{
	const char kind[2] = {(char)('0' + c->subject_kind), '\0'};
	const char *parts[] = {tenant, c->limit->id, kind, c->subject};

	return join_key(buf, size, parts, 4);
}

static struct tg_metric *throttle_metric(const char *tenant, const struct policy_limit *l)
{
	char labels[256];

	snprintf(labels, sizeof(labels), "tenant=\"%s\",limit=\"%s\",kind=\"%s\"", tenant, l->id,
		 policy_kind_names[l->kind]);
	return tg_counter("tollgate_throttles_total", "Checks denied by a limit, by tenant and limit.", labels);
}

struct notice {
	struct store_submission sub;
	struct store_notice n;
	struct tg_arena arena;
};

static void notice_done(struct store_submission *sub)
{
	struct notice *x = (struct notice *)sub;

	tg_arena_release(&x->arena);
	free(x);
}

/* A webhook event (and an audit entry when audit_action is set) through the writer, at most once per key,
 * without waiting for it. */
static void notice(const char *tenant, const char *type, json_t *data, const char *once_key, const char *audit_action,
		   const char *actor, const char *resource_type, const char *resource_id)
{
	struct notice *x = tg_calloc(1, sizeof(*x));
	char *text = tg_json_dumps(data);

	json_decref(data);
	tg_arena_init(&x->arena);
	x->n.type = type;
	x->n.data_json = tg_arena_strdup(&x->arena, text);
	free(text);
	x->n.once_key = tg_arena_strdup(&x->arena, once_key);
	x->n.audit_action = audit_action;
	x->n.actor = tg_arena_strdup(&x->arena, actor);
	x->n.resource_type = resource_type;
	x->n.resource_id = tg_arena_strdup(&x->arena, resource_id);
	x->sub.tenant_id = tg_arena_strdup(&x->arena, tenant);
	x->sub.notices = &x->n;
	x->sub.nnotices = 1;
	x->sub.arena = &x->arena;
	x->sub.done = notice_done;
	store_writer_submit(&x->sub);
}

/* workflow.terminated, once per workflow. */
static void notify_terminated(struct check *ck, int guard)
{
	const struct policy_limit *l = ck->guard.from[guard - 1];
	char key[300];

	snprintf(key, sizeof(key), "workflow|%s", ck->wf.id);
	notice(ck->req->principal.tenant_id, "workflow.terminated",
	       tg_json_obj("workflow_id", json_string(ck->wf.id), "customer_id", json_string(ck->customer_id), "limit_id",
			   json_string(l ? l->id : ""), "guard", json_string(policy_guard_names[guard - 1]), "tool_calls",
			   json_integer(ck->wf.calls), "cost", tg_json_fixed(ck->wf.spent), "tool", tg_json_str(ck->wf.tool),
			   NULL),
	       key, NULL, NULL, NULL, NULL);
}

/* rate_limit.throttled: at most one per customer and limit per minute (webhook_once makes it exact
 * across instances; this loop-local memory keeps the writer from hearing of every denial). */
static void notify_throttle(struct check *ck, const struct policy_counter *c)
{
	char key[512];
	int64_t minute = ck->now / 60000;
	uintptr_t seen;

	if (c->limit->kind != POLICY_RATE)
		return;
	const char *parts[] = {ck->req->principal.tenant_id, ck->customer_id, c->limit->id};
	join_key(key, sizeof(key), parts, 3);
	seen = (uintptr_t)tg_map_get(&throttle_notified, key);
	if (seen == (uintptr_t)(minute + 1))
		return;
	if (throttle_notified.len > DENY_CACHE_MAX)
		tg_map_release(&throttle_notified, NULL);
	tg_map_put(&throttle_notified, key, (void *)(uintptr_t)(minute + 1));

	snprintf(key, sizeof(key), "throttled|%s|%s|%lld", ck->customer_id, c->limit->id, (long long)minute);
	notice(ck->req->principal.tenant_id, "rate_limit.throttled",
	       tg_json_obj("customer_id", json_string(ck->customer_id), "limit_id", json_string(c->limit->id), "ip",
			   tg_json_str(ck->chk.ip), "key", tg_json_str(ck->chk.key), "retry_after",
			   c->retry_ms >= 0 ? json_integer(c->retry_ms / 1000 + (c->retry_ms % 1000 ? 1 : 0)) : json_null(),
			   "minute", tg_json_time(minute * 60000), NULL),
	       key, "rate_limit.denied", ck->req->principal.key_id, "limit", c->limit->id);
}

/* limit.threshold or limit.exceeded of a quota on the built-in requests meter (the event writer's form). */
static void notify_quota(struct check *ck, const struct policy_counter *c, const char *type, const tg_fixed *threshold)
{
	const struct policy_limit *l = c->limit;
	char key[600];
	json_t *data = store_quota_notice(l->id, c->subject[0] ? c->subject : "*", c->used, l->limit,
					  policy_enforcement_names[l->enforcement], c->period_start_ms, c->period_end_ms,
					  threshold, key, sizeof(key));

	notice(ck->req->principal.tenant_id, type, data, key, NULL, NULL, NULL, NULL);
}

/* Has this loop (or worker) reported this one of a counter's notices yet? Remembers it if not. */
static bool first_notice(struct check *ck, const struct policy_counter *c, const char *what)
{
	char key[700], period[TG_I64_BUFSZ];
	const char *parts[] = {ck->req->principal.tenant_id, c->limit->id, c->subject, period, what};

	tg_fmt_i64(c->period_start_ms, period);
	join_key(key, sizeof(key), parts, 5);
	if (tg_map_get(&quota_notified, key))
		return false;
	if (quota_notified.len > DENY_CACHE_MAX)
		tg_map_release(&quota_notified, NULL);
	tg_map_put(&quota_notified, key, (void *)1);
	return true;
}

/*
 * Quotas on the built-in requests meter live in Redis alone, so no event batch watches them: the checks do,
 * by level like the event writer (a threshold added, or a limit lowered, below the usage fires too). An
 * allowed check at or past a threshold fires limit.threshold, one that leaves a soft or shadow quota past its
 * limit fires limit.exceeded, and so does one a hard quota refuses (usage never goes past a hard one). The
 * writer's once-keys make each once per limit, subject and period across loops and instances; each loop
 * remembers what it reported, so a customer past a threshold does not send the writer a notice per check.
 */
static void notify_request_quotas(struct check *ck, const struct policy_decision *d)
{
	if (ck->chk.dry_run || ck->degraded)
		return;
	for (int i = 0; i < ck->n; i++) {
		const struct policy_counter *c = &ck->cs[i];
		const struct policy_limit *l = c->limit;
		if (!c->subject || l->kind != POLICY_QUOTA || l->meter != &ck->t->requests)
			continue;
		if (d->allowed) {
			tg_fixed need;
			for (int t = 0; t < l->nthresholds; t++) {
				char thr[TG_FIXED_BUFSZ];
				if (l->limit > 0 && tg_fixed_mul(l->limit, l->thresholds[t], &need) == TG_FIXED_OK &&
				    c->used >= need && (tg_fixed_format(l->thresholds[t], thr), first_notice(ck, c, thr)))
					notify_quota(ck, c, "limit.threshold", &l->thresholds[t]);
			}
			if (c->used > l->limit && first_notice(ck, c, "exceeded"))
				notify_quota(ck, c, "limit.exceeded", NULL);
		} else if (!c->allowed && l->enforcement == ENF_HARD && first_notice(ck, c, "exceeded")) {
			notify_quota(ck, c, "limit.exceeded", NULL);
		}
	}
}

/* Count and log one denial (a line per throttle, written with the loop's next pass). */
static void throttled(struct check *ck, const struct policy_counter *c, struct tg_metric *m)
{
	struct tg_buf *b = &throttle_log;
	char ts[TG_TIME_BUFSZ];

	if (ck->chk.dry_run)
		return; /* a dry run changes nothing: no throttle counted, logged, audited or notified */
	tg_metric_add(m ? m : throttle_metric(ck->req->principal.tenant_id, c->limit), 1);
	notify_throttle(ck, c);
	if (!tg_loop_current()) {
		log_info("throttled", "tenant=%s customer=%s ip=%s key=%s limit=%s", ck->req->principal.tenant_id,
			 ck->customer_id, ck->chk.ip ? ck->chk.ip : "", ck->chk.key ? ck->chk.key : "", c->limit->id);
		return;
	}
	if (!throttle_hook) {
		tg_loop_on_pass_end(tg_loop_current(), flush_throttle_log, NULL);
		throttle_hook = true;
	}
	tg_time_format(tg_now_ms(), ts);
	tg_buf_adds(b, "{\"ts\":\"");
	tg_buf_adds(b, ts);
	tg_buf_adds(b, "\",\"level\":\"info\",\"msg\":\"throttled\",\"req_id\":\"");
	tg_buf_adds(b, ck->req->request_id);
	tg_buf_adds(b, "\",\"tenant\":\"");
	tg_buf_adds(b, ck->req->principal.tenant_id);
	tg_buf_adds(b, "\",\"customer\":\"");
	tg_buf_add_json_str(b, ck->customer_id, strlen(ck->customer_id));
	tg_buf_adds(b, "\",\"ip\":\"");
	if (ck->chk.ip)
		tg_buf_add_json_str(b, ck->chk.ip, strlen(ck->chk.ip));
	tg_buf_adds(b, "\",\"key\":\"");
	if (ck->chk.key)
		tg_buf_add_json_str(b, ck->chk.key, strlen(ck->chk.key));
	tg_buf_adds(b, "\",\"limit\":\"");
	tg_buf_adds(b, c->limit->id);
	tg_buf_adds(b, "\",\"kind\":\"");
	tg_buf_adds(b, policy_kind_names[c->limit->kind]);
	tg_buf_adds(b, "\"}\n");
}

static bool is_bucket(const struct policy_limit *l)
{
	return l->kind == POLICY_RATE && l->algorithm == ALG_TOKEN_BUCKET;
}

static void deny_cache_put(struct check *ck, const struct policy_counter *c)
{
	char key[512];
	struct deny_entry *e;
	int64_t until;

	if (!tg_loop_current() || c->retry_ms < 0 || ck->chk.dry_run)
		return;
	until = ck->now + c->retry_ms;
	/* a token bucket's state at any later instant follows from this one (see deny_cache_hit); a quota's or a
	 * sliding window's does not (usage may be released, the window slides): kept a second */
	if (!is_bucket(c->limit) && until > ck->now + DENY_QUOTA_MS)
		until = ck->now + DENY_QUOTA_MS;
	deny_key(key, sizeof(key), ck->req->principal.tenant_id, c);
	e = tg_map_get(&deny_cache, key);
	if (!e) {
		if (deny_cache.len >= DENY_CACHE_MAX)
			tg_map_release(&deny_cache, free);
		e = tg_calloc(1, sizeof(*e));
		tg_map_put(&deny_cache, key, e);
	}
	if (e->generation != ck->t->generation || !e->throttles)
		e->throttles = throttle_metric(ck->req->principal.tenant_id, c->limit);
	e->until = until;
	e->retry_at = ck->now + c->retry_ms;
	e->generation = ck->t->generation;
	e->released = ck->released;
	e->amount = c->amount;
	e->state = *c;
	e->state.subject = NULL; /* the request's memory: never kept */
}

/* A counter of this check known to deny it right now, or NULL. */
static struct deny_entry *deny_cache_hit(struct check *ck)
{
	char key[512];

	if (!deny_cache.len || ck->chk.dry_run)
		return NULL;
	for (int i = 0; i < ck->n; i++) {
		const struct policy_counter *c = &ck->cs[i];
		struct deny_entry *e;
		if (!c->subject || c->limit->enforcement != ENF_HARD)
			continue;
		size_t n = deny_key(key, sizeof(key), ck->req->principal.tenant_id, c);
		e = tg_map_getn(&deny_cache, key, n);
		if (e && e->generation == ck->t->generation && e->released == ck->released && e->until > ck->now &&
		    c->amount == e->amount) {
			e->state.subject = c->subject;
			e->state.retry_ms = e->retry_at - ck->now;
			if (is_bucket(c->limit)) {
				/* the level now: it drains at limit per window until reset_ms, when it is empty */
				const struct policy_limit *l = c->limit;
				int64_t left_ms = e->state.reset_ms > ck->now ? e->state.reset_ms - ck->now : 0;
				tg_i128 level = (tg_i128)left_ms * l->limit / (l->window_s * 1000);
				e->state.remaining = level < l->burst ? l->burst - (int64_t)level : 0;
				e->state.used = l->burst - e->state.remaining;
			}
			return e;
		}
	}
	return NULL;
}

/* ---- parsing ---- */

static int parse_dims(struct tg_req *req, const json_t *obj, struct policy_check *c)
{
	const char *k;
	json_t *v;

	if (!json_is_object(obj))
		return api_bad(req, "dimensions", "'dimensions' must be an object of strings");
	if (json_object_size(obj) > POLICY_MAX_DIMS)
		return api_bad(req, "dimensions", "at most %d dimensions", POLICY_MAX_DIMS);
	json_object_foreach((json_t *)obj, k, v) {
		char param[160];
		snprintf(param, sizeof(param), "dimensions.%s", k);
		if (!tg_id_valid(k, strlen(k)))
			return api_bad(req, "dimensions", "dimension names are ids ([A-Za-z0-9._:@+-], 1 to 128)");
		if (!json_is_string(v) || tg_json_is_number(v) || json_string_length(v) == 0 || json_string_length(v) > 256)
			return tg_fail(&req->err, TG_EINVAL, "invalid_parameter", tg_arena_strdup(&req->arena, param),
				       "dimension '%s' must be a non-empty string of at most 256 bytes", k);
		c->dims[c->ndims].key = k;
		c->dims[c->ndims].value = json_string_value(v);
		c->ndims++;
	}
	return 0;
}

static int parse_workflow(struct tg_req *req, const json_t *wf, struct check *ck)
{
	static const char *const fields[] = {"id", "tool", "args_hash", "depth", NULL};
	int rc;

	ck->wf.depth = 0;
	if ((rc = tg_jf_only(wf, "workflow", fields, &req->err)) < 0 ||
	    (rc = tg_jf_id(wf, "workflow", "id", true, false, &ck->wf.id, &req->err)) < 0 ||
	    (rc = tg_jf_id(wf, "workflow", "tool", false, true, &ck->wf.tool, &req->err)) < 0 ||
	    (rc = tg_jf_id(wf, "workflow", "args_hash", false, true, &ck->wf.args_hash, &req->err)) < 0 ||
	    (rc = tg_jf_int(wf, "workflow", "depth", false, 0, 1000000, &ck->wf.depth, NULL, &req->err)) < 0)
		return rc;
	ck->has_workflow = true;
	return 0;
}

/* An address in one spelling, so that a per-ip limit keys one counter per address: "2001:DB8:0::1" and
 * "2001:db8::1" are one, and an IPv4-mapped IPv6 address is its IPv4 address (each spelling used to get a
 * counter of its own: a way round the limit). NULL when s is no address. */
static const char *ip_canonical(struct tg_arena *a, const char *s)
{
	unsigned char buf[16];
	char *out = tg_arena_alloc(a, INET6_ADDRSTRLEN);
	static const unsigned char v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	if (inet_pton(AF_INET, s, buf) == 1)
		return inet_ntop(AF_INET, buf, out, INET6_ADDRSTRLEN);
	if (inet_pton(AF_INET6, s, buf) != 1)
		return NULL;
	if (memcmp(buf, v4_mapped, sizeof(v4_mapped)) == 0)
		return inet_ntop(AF_INET, buf + 12, out, INET6_ADDRSTRLEN);
	return inet_ntop(AF_INET6, buf, out, INET6_ADDRSTRLEN);
}

static int parse(struct tg_req *req, struct check *ck)
{
	static const char *const fields[] = {"customer_id", "meter", "amount", "dimensions", "ip", "key", "consume",
					     "reserve", "reservation_ttl", "dry_run", "workflow", NULL};
	json_t *body = api_body(req), *dims = NULL, *wf = NULL;
	struct policy_check *c = &ck->chk;
	bool has_amount;
	int rc;

	if (!body)
		return req->err.err;
	c->meter = POLICY_REQUESTS;
	c->amount = TG_FIXED_SCALE;
	ck->rsv_ttl = DEFAULT_RESERVATION_TTL;
	if ((rc = api_only(req, body, fields)) < 0 || (rc = api_id(req, body, "customer_id", true, false, &ck->customer_id)) < 0 ||
	    (rc = api_id(req, body, "meter", false, false, &c->meter)) < 0 ||
	    (rc = api_fixed(req, body, "amount", false, &c->amount, &has_amount)) < 0 ||
	    (rc = api_object(req, body, "dimensions", false, &dims)) < 0 ||
	    (rc = api_str(req, body, "ip", false, true, 64, &c->ip)) < 0 ||
	    (rc = api_id(req, body, "key", false, true, &c->key)) < 0 ||
	    (rc = api_bool(req, body, "consume", false, &c->consume, NULL)) < 0 ||
	    (rc = api_bool(req, body, "reserve", false, &c->reserve, NULL)) < 0 ||
	    (rc = api_int(req, body, "reservation_ttl", false, 1, MAX_RESERVATION_TTL, &ck->rsv_ttl, NULL)) < 0 ||
	    (rc = api_bool(req, body, "dry_run", false, &c->dry_run, NULL)) < 0 ||
	    (rc = api_object(req, body, "workflow", false, &wf)) < 0)
		return rc;
	if (c->amount < 0)
		return api_bad(req, "amount", "'amount' must not be negative");
	if (c->ip && !(c->ip = ip_canonical(&req->arena, c->ip)))
		return api_bad(req, "ip", "'ip' must be an IPv4 or IPv6 address");
	if (dims && (rc = parse_dims(req, dims, c)) < 0)
		return rc;
	if (wf && (rc = parse_workflow(req, wf, ck)) < 0)
		return rc;
	if (c->consume && c->reserve)
		return api_bad(req, "reserve", "a check either consumes or reserves, not both");
	if (c->reserve && strcmp(c->meter, POLICY_REQUESTS) == 0)
		return api_bad(req, "reserve", "reserve an amount of a meter, not of requests");
	return 0;
}

/* ---- answering ---- */

/* name="value" parts of the RateLimit headers, without printf (this is on every check's reply). */
static const char *rl_item(struct tg_arena *a, const char *id, const char *k1, const char *v1, const char *k2,
			   const char *v2)
{
	size_t n = strlen(id) + strlen(v1) + strlen(v2) + 16;
	char *out = tg_arena_alloc(a, n), *p = out;

	*p++ = '"';
	p = stpcpy(p, id);
	*p++ = '"';
	p = stpcpy(stpcpy(p, k1), v1);
	p = stpcpy(stpcpy(p, k2), v2);
	return out;
}

static void add_ratelimit_headers(struct tg_req *req, const struct policy_counter *b, int64_t now)
{
	struct policy_ratelimit rl;
	char lim[TG_FIXED_BUFSZ], rem[TG_FIXED_BUFSZ], reset[TG_I64_BUFSZ], window[TG_I64_BUFSZ];
	tg_fixed whole_rem = b ? b->remaining / TG_FIXED_SCALE * TG_FIXED_SCALE : 0;

	if (!b)
		return;
	policy_ratelimit(b, now, &rl);
	tg_fixed_format(rl.limit, lim);
	tg_fixed_format(whole_rem, rem);
	tg_fmt_i64(rl.reset_s, reset);
	tg_fmt_i64(rl.window_s, window);
	tg_req_add_header(req, "RateLimit-Limit", lim);
	tg_req_add_header(req, "RateLimit-Remaining", rem);
	tg_req_add_header(req, "RateLimit-Reset", reset);
	tg_req_add_header(req, "RateLimit-Policy", rl_item(&req->arena, b->limit->id, ";q=", lim, ";w=", window));
	tg_req_add_header(req, "RateLimit", rl_item(&req->arena, b->limit->id, ";r=", rem, ";t=", reset));
}

/* An allowed reserving check makes a reservation (not a dry run; not degraded: Redis holds nothing then). */
static bool holds_reservation(const struct check *ck, const struct policy_decision *d)
{
	return d->allowed && ck->chk.reserve && !ck->chk.dry_run && !ck->degraded;
}

static void answer(struct check *ck)
{
	struct tg_req *req = ck->req;
	struct policy_decision d;
	struct tg_jw w;
	char buf[32];

	policy_decide(ck->cs, ck->n, ck->now, &d);
	/* the RateLimit headers follow the binding limit, or (when a guard or the wallet refuses a check its
	 * limits allow) the limit with the least room left */
	const struct policy_counter *headers = d.binding;
	int guard = ck->hc.wf && !ck->wf.allowed ? (ck->wf.code > 10 ? ck->wf.code - 10 : ck->wf.code) : 0;
	if (d.allowed && guard >= 1 && guard <= 5 && !ck->degraded) {
		/* a guard tripped (now or earlier): the workflow is over, waiting will not help */
		d.allowed = false;
		d.decision = DECISION_DENY;
		d.code = "workflow_limit";
		d.binding = NULL;
		d.retry_after_s = -1;
	}
	if (d.allowed && ck->hc.bal && !ck->bal.allowed && !ck->degraded) {
		/* every limit would allow it, the wallet does not: 402, and waiting will not help */
		d.allowed = false;
		d.decision = DECISION_DENY;
		d.code = "insufficient_balance";
		d.binding = NULL;
		d.retry_after_s = -1;
	}
	/* the limit whose guard terminated the workflow: none when it has been deleted or no longer has that
	 * guard (the workflow stays terminated all the same) */
	const struct policy_limit *tripped = d.code && !strcmp(d.code, "workflow_limit") ? ck->guard.from[guard - 1] : NULL;
	const char *binding = d.binding ? d.binding->limit->id : tripped ? tripped->id : NULL;
	bool fallback = d.allowed && ck->fallback && ck->fallback_steps > 0;

	/* the reply is written straight into the response buffer: this is the hot path */
	req->status = d.allowed ? 200 : d.code && !strcmp(d.code, "insufficient_balance") ? 402 : 429;
	req->content_type = "application/json";
	tg_buf_reset(&req->resp);
	tg_buf_grow(&req->resp, 1000); /* at once, not by doubling from 64; 1,024 bytes, which glibc's per-thread cache keeps (2,048 it does not) */
	tg_jw_init(&w, &req->resp);
	tg_jw_begin_object(&w);
	tg_jw_key(&w, "allowed");
	tg_jw_bool(&w, d.allowed);
	tg_jw_key(&w, "decision");
	tg_jw_str(&w, policy_decision_names[fallback ? DECISION_FALLBACK : d.decision]);
	tg_jw_key(&w, "code");
	tg_jw_str(&w, d.code);
	tg_jw_key(&w, "customer_id");
	tg_jw_str(&w, ck->customer_id);
	tg_jw_key(&w, "retry_after");
	if (!d.allowed && d.retry_after_s >= 0)
		tg_jw_int(&w, d.retry_after_s);
	else
		tg_jw_null(&w);
	tg_jw_key(&w, "binding_limit");
	tg_jw_str(&w, binding);
	tg_jw_key(&w, "limits");
	tg_jw_begin_array(&w);
	for (int i = 0; i < ck->n; i++)
		if (ck->cs[i].subject)
			policy_counter_write(&w, &ck->cs[i], ck->now);
	tg_jw_end_array(&w);
	tg_jw_key(&w, "balance");
	if (ck->hc.bal && !ck->degraded) {
		tg_jw_begin_object(&w);
		tg_jw_key(&w, "available");
		tg_jw_fixed(&w, ck->bal.balance - ck->bal.reserved);
		tg_jw_key(&w, "minimum");
		tg_jw_fixed(&w, ck->bal.minimum);
		tg_jw_key(&w, "customer_id");
		tg_jw_str(&w, ck->bal.owner);
		tg_jw_end_object(&w);
	} else {
		tg_jw_null(&w);
	}
	tg_jw_key(&w, "warnings");
	tg_jw_begin_array(&w);
	for (int i = 0; i < d.nwarnings; i++)
		tg_jw_str(&w, tg_arena_printf(&req->arena, "soft limit '%s' exceeded", d.warnings[i]));
	tg_jw_end_array(&w);
	tg_jw_key(&w, "reservation_id");
	tg_jw_str(&w, holds_reservation(ck, &d) ? ck->rsv_id : NULL);
	tg_jw_key(&w, "degraded");
	tg_jw_bool(&w, ck->degraded);
	if (fallback) {
		tg_jw_key(&w, "fallback");
		tg_jw_json(&w, ck->fallback);
	}
	if (ck->chk.dry_run) {
		tg_jw_key(&w, "dry_run");
		tg_jw_bool(&w, true);
	}
	if (ck->hc.wf) {
		tg_jw_key(&w, "workflow");
		tg_jw_begin_object(&w);
		tg_jw_key(&w, "id");
		tg_jw_str(&w, ck->wf.id);
		tg_jw_key(&w, "terminated");
		tg_jw_bool(&w, guard != 0);
		tg_jw_key(&w, "guard");
		tg_jw_str(&w, guard >= 1 && guard <= 5 ? policy_guard_names[guard - 1] : NULL);
		tg_jw_key(&w, "tool_calls");
		tg_jw_int(&w, ck->wf.calls);
		tg_jw_key(&w, "cost");
		tg_jw_fixed(&w, ck->wf.spent);
		tg_jw_end_object(&w);
	}
	tg_jw_end_object(&w);

	if (ck->hc.wf && ck->wf.code >= 1 && ck->wf.code <= 5 && !ck->chk.dry_run)
		notify_terminated(ck, guard);
	if (headers)
		add_ratelimit_headers(req, headers, ck->now);
	if (!d.allowed && d.retry_after_s >= 0) {
		tg_fmt_i64(d.retry_after_s, buf);
		tg_req_add_header(req, "Retry-After", buf);
	}
	tg_metric_add(decisions_metric(d.allowed ? (d.decision == DECISION_WARN ? "warn" : NULL) : d.code), 1);
	notify_request_quotas(ck, &d);
	if (!d.allowed && !ck->from_cache) {
		for (int i = 0; i < ck->n; i++) {
			const struct policy_counter *c = &ck->cs[i];
			if (c->subject && !c->allowed && c->limit->enforcement == ENF_HARD) {
				deny_cache_put(ck, c);
				if (c == d.binding)
					throttled(ck, c, NULL);
			}
		}
	}
}

static void answer_cached(struct check *ck, struct deny_entry *e)
{
	ck->from_cache = true;
	answer(ck);
	throttled(ck, &e->state, e->throttles);
}

static void done(struct check *ck)
{
	json_decref(ck->fallback);
	ck->fallback = NULL;
	policy_tenant_unref(ck->t);
	ck->t = NULL;
	tg_req_complete(ck->req);
}

/* Redis is down: fail-open limits let the check through (degraded), fail-closed ones refuse it. */
static bool unavailable(struct check *ck)
{
	if (ck->hc.bal) {
		tg_fail(&ck->req->err, TG_EUNAVAIL, "unavailable", NULL,
			"the balance of '%s' cannot be checked right now; retry shortly", ck->bal.owner);
		tg_req_reply_error(ck->req);
		tg_metric_add(decisions_metric("unavailable"), 1);
		return false;
	}
	for (int i = 0; i < ck->n; i++) {
		struct policy_counter *c = &ck->cs[i];
		if (!c->subject)
			continue;
		if (!c->limit->fail_open && c->limit->enforcement == ENF_HARD) {
			tg_fail(&ck->req->err, TG_EUNAVAIL, "unavailable", NULL,
				"limit '%s' cannot be evaluated right now (fail_mode closed); retry shortly", c->limit->id);
			tg_req_reply_error(ck->req);
			tg_metric_add(decisions_metric("unavailable"), 1);
			return false;
		}
		c->allowed = true;
		c->remaining = c->limit->limit;
		c->reset_ms = 0;
	}
	ck->degraded = true;
	return true;
}

static void committed(struct store_submission *sub)
{
	struct check *ck = sub->owner;
	struct tg_error err;

	/* not recorded: take the consumption back out of the live counters, then say so; perhaps recorded (the
	 * COMMIT lost on the way): its counters are dropped and rebuilt (api_commit_lost), not given back */
	if (sub->rc < 0 && !sub->lost) {
		struct hot_balance_delta refund = {ck->hc.bal ? ck->bal.owner : NULL, ck->cost, NULL, ck->bal.mark,
						   MARK_UNDO_IF_NOT_REBUILT};
		for (int i = 0; i < ck->n; i++) {
			ck->cs[i].amount = ck->cs[i].consume && ck->cs[i].limit->kind == POLICY_QUOTA ? -ck->cs[i].amount : 0;
			ck->cs[i].mark_rule = MARK_UNDO_IF_NOT_REBUILT;
		}
		if (!ck->degraded && hot_apply_usage(ck->hc.tenant_id, ck->cs, ck->n, ck->now, &refund, refund.owner ? 1 : 0,
						    NULL, 0, &ck->req->arena, &err) < 0)
			log_warn("could not roll back a check's consumption", "%s", err.detail);
	}
	if (sub->rc < 0) {
		ck->req->err = sub->err;
		tg_req_reply_error(ck->req);
	}
	done(ck);
}

static char *dump_to_arena(struct tg_arena *a, json_t *v)
{
	char *text = tg_json_dumps(v);
	char *copy = tg_arena_strdup(a, text);

	free(text);
	json_decref(v);
	return copy;
}

/* The reservation is not in PostgreSQL: its holds come back out of Redis, and the check fails. */
static void reserved(struct store_submission *sub)
{
	struct check *ck = sub->owner;
	struct tg_error err;

	/* perhaps inserted (the COMMIT lost on the way): its holds are rebuilt with the counters (api_commit_lost),
	 * not let go */
	if (sub->rc < 0 && !sub->lost) {
		struct hot_release *rel = tg_arena_alloc(&ck->req->arena, sizeof(*rel) * (size_t)(ck->rsv.nholds + 1));
		for (int i = 0; i < ck->rsv.nholds; i++)
			rel[i] = (struct hot_release){ck->rsv.holds[i].key, ck->rsv.holds[i].amount};
		if (hot_apply_usage(ck->hc.tenant_id, NULL, 0, ck->now, NULL, 0, rel, ck->rsv.nholds, &ck->req->arena,
				    &err) < 0)
			log_warn("could not take back a reservation's holds", "%s", err.detail);
	}
	if (sub->rc < 0) {
		ck->req->err = sub->err;
		tg_req_reply_error(ck->req);
	}
	done(ck);
}

/* Make an allowed reserving check's reservation durable (what it holds, on which keys); answer after the
 * commit, so that a reservation a client was told about survives the loss of Redis. */
static void reserve(struct check *ck)
{
	struct tg_req *req = ck->req;
	struct store_hold *h = tg_arena_alloc(&req->arena, sizeof(*h) * (size_t)(ck->n + 1));
	int nh = 0;

	for (int i = 0; i < ck->n; i++) {
		const struct policy_counter *c = &ck->cs[i];
		if (c->subject && c->reserve && c->limit->kind == POLICY_QUOTA && c->amount != 0)
			h[nh++] = (struct store_hold){hot_counter_key(&req->arena, ck->hc.tenant_id, c), c->amount};
	}
	if (ck->hc.bal && ck->bal.reserve && ck->cost != 0)
		h[nh++] = (struct store_hold){hot_balance_key(&req->arena, ck->hc.tenant_id, ck->bal.owner), ck->cost};
	ck->rsv = (struct store_reservation){.id = ck->rsv_id, .customer_id = ck->customer_id,
					    .expires_ms = ck->now + ck->rsv_ttl * 1000, .holds = h, .nholds = nh};
	ck->sub = (struct store_submission){.tenant_id = req->principal.tenant_id, .reservation = &ck->rsv,
					   .arena = &req->arena, .done = reserved, .owner = ck};
	store_writer_submit(&ck->sub);
}

/* Record what an allowed consuming check used, as an event; answer after its commit. */
static void record(struct check *ck)
{
	struct tg_req *req = ck->req;
	const struct policy_meter *m = policy_meter_find(ck->t, ck->chk.meter);
	json_t *props = json_object(), *dims = json_object();
	char id[TG_SID_BUFSZ];

	for (int i = 0; i < ck->chk.ndims; i++) {
		json_object_set_new(props, ck->chk.dims[i].key, json_string(ck->chk.dims[i].value));
		for (int g = 0; g < m->ngroup; g++)
			if (!strcmp(m->group_by[g], ck->chk.dims[i].key))
				json_object_set_new(dims, ck->chk.dims[i].key, json_string(ck->chk.dims[i].value));
	}
	if (m->property)
		json_object_set_new(props, m->property, tg_json_fixed(ck->chk.amount));
	tg_sid_ordered("evt_", tg_now_ms(), id);
	ck->ev.id = tg_arena_strdup(&req->arena, id);
	ck->ev.customer_id = ck->customer_id;
	ck->ev.type = m->event_type;
	ck->ev.meter_id = m->id;
	ck->ev.ts_ms = ck->now;
	ck->ev.properties_json = dump_to_arena(&req->arena, props);
	ck->ev.workflow_id = ck->has_workflow ? ck->wf.id : NULL;
	ck->ev.by_check = !ck->degraded;
	ck->ev.planned_parent = ck->subj.parent_id;
	ck->ev.planned_parent_tier = ck->subj.parent_tier;
	ck->ev.planned_wallet = ck->hc.bal ? ck->bal.owner : NULL;
	ck->contrib.meter_id = m->id;
	ck->contrib.dims_json = dump_to_arena(&req->arena, dims);
	ck->contrib.value = ck->chk.amount;
	ck->contrib.agg = (int)m->agg;
	ck->contrib.cost = ck->cost;
	ck->ev.contribs = &ck->contrib;
	ck->ev.ncontribs = 1;
	ck->sub.tenant_id = req->principal.tenant_id;
	ck->sub.auto_create = ck->t->auto_create_customers;
	ck->sub.counters_applied = !ck->degraded;
	ck->sub.applied = ck->degraded ? NULL : ck->cs;
	ck->sub.napplied = ck->degraded ? 0 : ck->n;
	ck->sub.applied_balance = ck->degraded || !ck->hc.bal ? NULL : &ck->bal;
	ck->sub.events = &ck->ev;
	ck->sub.n = 1;
	ck->sub.arena = &req->arena;
	ck->sub.done = committed;
	ck->sub.owner = ck;
	store_writer_submit(&ck->sub);
}

static void on_hot(void *arg);
static void finish(struct check *ck);
static int price(struct check *ck);
static void start_hot(struct check *ck, struct tg_arena *a);

static char *dims_key(struct check *ck)
{
	struct tg_buf b = TG_BUF_INIT;
	const struct policy_check *c = &ck->chk;
	char *k;

	/* dimensions are kept sorted by key below, so equal sets give equal keys */
	for (int i = 0; i < c->ndims; i++)
		tg_buf_addf(&b, "%s=%s\x1f", c->dims[i].key, c->dims[i].value);
	k = tg_arena_strdup(&ck->req->arena, b.buf ? b.buf : "");
	tg_buf_release(&b);
	return k;
}

static int dim_cmp(const void *a, const void *b)
{
	return strcmp(((const struct policy_dim *)a)->key, ((const struct policy_dim *)b)->key);
}

/* A denial by a limit with on_exceed fallback: evaluate again with its dimensions. True when re-issued. */
static bool try_fallback(struct check *ck)
{
	struct policy_decision d;
	const struct policy_limit *l = NULL;

	if (ck->hc.status != HOT_DONE || ck->hc.allowed || ck->fallback_steps >= 3)
		return false;
	policy_decide(ck->cs, ck->n, ck->now, &d);
	if (d.allowed)
		return false; /* the balance or a workflow guard said no: no fallback for those */
	if (d.binding && d.binding->limit->fallback)
		l = d.binding->limit;
	for (int i = 0; !l && i < ck->n; i++)
		if (ck->cs[i].subject && !ck->cs[i].allowed && ck->cs[i].limit->enforcement == ENF_HARD &&
		    ck->cs[i].limit->fallback)
			l = ck->cs[i].limit;
	if (!l)
		return false;
	if (ck->fallback_steps == 0) {
		ck->first.cs = ck->cs;
		ck->first.n = ck->n;
		ck->first.hc = ck->hc;
		ck->first.bal = ck->bal;
		ck->first.wf = ck->wf;
		ck->first.chk = ck->chk;
		ck->first.cost = ck->cost;
		ck->visited[0] = dims_key(ck);
		ck->fallback = json_object();
	}
	/* substitute (the dimension values are the snapshot's: it is referenced until the request ends) */
	struct policy_check *c = &ck->chk;
	for (int k = 0; k < l->nfallback; k++) {
		int j;
		for (j = 0; j < c->ndims; j++)
			if (!strcmp(c->dims[j].key, l->fallback[k].key))
				break;
		if (j == c->ndims) {
			if (c->ndims >= POLICY_MAX_DIMS)
				return false;
			c->ndims++;
		}
		c->dims[j] = l->fallback[k];
		json_object_set_new(ck->fallback, l->fallback[k].key, json_string(l->fallback[k].value));
	}
	qsort(c->dims, (size_t)c->ndims, sizeof(c->dims[0]), dim_cmp);
	char *key = dims_key(ck);
	for (int v = 0; v <= ck->fallback_steps; v++)
		if (ck->visited[v] && !strcmp(ck->visited[v], key))
			return false; /* a cycle in the configuration: stop here */
	ck->fallback_steps++;
	ck->visited[ck->fallback_steps] = key;
	ck->n = policy_plan(ck->t, &ck->chk, &ck->subj, ck->now, &ck->req->arena, &ck->cs);
	if (price(ck) < 0)
		return false;
	memset(&ck->hc, 0, sizeof(ck->hc));
	memset(&ck->bal, 0, sizeof(ck->bal));
	struct hot_workflow keep = ck->wf;
	memset(&ck->wf, 0, sizeof(ck->wf));
	ck->wf.id = keep.id;
	ck->wf.tool = keep.tool;
	ck->wf.args_hash = keep.args_hash;
	ck->wf.depth = keep.depth;
	start_hot(ck, &ck->req->arena);
	if (tg_loop_current()) {
		if (hot_check_async(&ck->hc, &ck->req->arena, on_hot, ck) < 0)
			ck->hc.status = HOT_ERROR;
		else
			return true;
	} else {
		api_check_sync(&ck->hc, &ck->req->arena, &ck->req->err);
	}
	finish(ck);
	return true;
}

/* The fallback chain found nothing that passes: answer the original denial. */
static void restore_first(struct check *ck)
{
	if (ck->fallback_steps == 0 || ck->hc.allowed)
		return;
	ck->cs = ck->first.cs;
	ck->n = ck->first.n;
	ck->hc = ck->first.hc;
	ck->bal = ck->first.bal;
	ck->wf = ck->first.wf;
	ck->chk = ck->first.chk;
	ck->cost = ck->first.cost;
	ck->hc.bal = ck->hc.bal ? &ck->bal : NULL;
	ck->hc.wf = ck->hc.wf ? &ck->wf : NULL;
	ck->hc.cs = ck->cs;
	ck->fallback_steps = 0;
}

/* Every counter's state is known (or Redis is down): decide, answer, record. */
static void finish(struct check *ck)
{
	bool record_it;

	if (ck->hc.status == HOT_ERROR && !unavailable(ck)) {
		done(ck);
		return;
	}
	if (try_fallback(ck))
		return;
	restore_first(ck);
	answer(ck);
	record_it = ck->req->status == 200 && ck->chk.consume && !ck->chk.dry_run &&
		    strcmp(ck->chk.meter, POLICY_REQUESTS) != 0;
	if (record_it) {
		record(ck);
		return;
	}
	if (ck->req->status == 200 && ck->chk.reserve && !ck->chk.dry_run && !ck->degraded) {
		reserve(ck);
		return;
	}
	done(ck);
}

/* What the check costs at the meter's price (the balance gate tests it; a consuming check debits it). */
static int price(struct check *ck)
{
	const struct policy_meter *m = policy_meter_find(ck->t, ck->chk.meter);

	ck->cost = 0;
	if (!m || m == &ck->t->requests)
		return 0;
	if (policy_cost(m, ck->chk.amount, ck->chk.dims, ck->chk.ndims, &ck->cost) < 0)
		return api_bad(ck->req, "amount", "'amount' × the meter's price is out of range");
	return 0;
}

static void start_hot(struct check *ck, struct tg_arena *a)
{
	ck->hc.tenant_id = ck->req->principal.tenant_id;
	ck->hc.cs = ck->cs;
	ck->hc.n = ck->n;
	ck->hc.now_ms = ck->now;
	ck->hc.flags = (ck->chk.dry_run ? HOT_DRY_RUN : 0) | (ck->chk.reserve ? HOT_RESERVE : 0);
	if (ck->has_workflow && !ck->hc.wf && policy_workflow_guard(ck->t, &ck->subj, &ck->guard)) {
		ck->wf.max_calls = ck->guard.max_calls;
		ck->wf.max_duplicates = ck->guard.max_duplicates;
		ck->wf.max_depth = ck->guard.max_depth;
		ck->wf.max_duration_ms = ck->guard.max_duration_s * 1000;
		ck->wf.max_cost = ck->guard.max_cost;
		ck->wf.cost = ck->cost;
		ck->wf.record_cost = ck->chk.consume;
		ck->hc.wf = &ck->wf;
	}
	if (ck->subj.balance_owner && !ck->hc.bal) {
		ck->bal.owner = ck->subj.balance_owner;
		ck->bal.cost = ck->cost;
		ck->bal.consume = ck->chk.consume;
		ck->bal.reserve = ck->chk.reserve;
		ck->hc.bal = &ck->bal;
	}
	if (ck->chk.reserve && !ck->rsv_id[0])
		tg_sid_new("rsv_", ck->rsv_id);
	(void)a;
}

/* The worker-pool path: caches cold or counters missing. Blocking is fine here. */
static void slow_path(struct tg_req *req)
{
	struct check *ck = req->ctx;
	json_t *row;
	int rc;

	if (!ck->t && !(ck->t = api_tenant(req))) {
		tg_req_reply_error(req);
		done(ck);
		return;
	}
	ck->now = policy_now(ck->t, tg_now_ms());
	if (!policy_meter_find(ck->t, ck->chk.meter)) {
		api_bad(req, "meter", "no meter '%s'", ck->chk.meter);
		tg_req_reply_error(req);
		done(ck);
		return;
	}
	if (!policy_subject_cached(req->principal.tenant_id, ck->customer_id, &req->arena, &ck->subj)) {
		uint64_t gen = policy_customer_generation(req->principal.tenant_id, ck->customer_id);
		/* a dry run changes nothing, not even by creating the customer: it is judged as a new one */
		bool create = ck->t->auto_create_customers && !ck->chk.dry_run;
		rc = store_customer_resolve(req->principal.tenant_id, ck->customer_id, create, &row, &req->err);
		if (rc == 0 && !row && ck->chk.dry_run && ck->t->auto_create_customers)
			row = tg_json_obj("id", json_string(ck->customer_id), "tier", tg_json_str(ck->t->default_tier), NULL);
		if (rc == 0 && !row)
			rc = api_not_found(req, "customer", ck->customer_id);
		if (rc < 0) {
			tg_req_reply_error(req);
			done(ck);
			return;
		}
		memset(&ck->subj, 0, sizeof(ck->subj));
		ck->subj.customer_id = ck->customer_id;
		ck->subj.tier = tg_arena_strdup(&req->arena, store_str(row, "tier"));
		ck->subj.parent_id = tg_arena_strdup(&req->arena, store_str(row, "parent_id"));
		ck->subj.parent_tier = tg_arena_strdup(&req->arena, store_str(row, "parent_tier"));
		bool own = store_is_true(row, "has_balance"), org = store_is_true(row, "parent_has_balance");
		ck->subj.balance_owner = own ? ck->customer_id : org ? ck->subj.parent_id : NULL;
		if (json_object_get(row, "has_balance")) /* a real row, not a dry run's stand-in */
			policy_customer_put(req->principal.tenant_id, ck->customer_id, ck->subj.tier, ck->subj.parent_id, own,
					    gen);
		/* the organisation's entry only when the same generation covers it (its stripe may differ) */
		if (ck->subj.parent_id &&
		    policy_customer_generation(req->principal.tenant_id, ck->subj.parent_id) == gen)
			policy_customer_put(req->principal.tenant_id, ck->subj.parent_id, ck->subj.parent_tier, NULL, org, gen);
		json_decref(row);
	}
	if (!ck->cs)
		ck->n = policy_plan(ck->t, &ck->chk, &ck->subj, ck->now, &req->arena, &ck->cs);
	if (price(ck) < 0) {
		tg_req_reply_error(req);
		done(ck);
		return;
	}
	start_hot(ck, &req->arena);
	if (ck->n > 0 || ck->hc.bal || ck->hc.wf)
		api_check_sync(&ck->hc, &req->arena, &req->err);
	else {
		ck->hc.status = HOT_DONE;
		ck->hc.allowed = true;
	}
	finish(ck);
}

static void on_hot(void *arg)
{
	struct check *ck = arg;

	if (ck->hc.status == HOT_MISSING) {
		tg_req_offload(ck->req, slow_path);
		return;
	}
	finish(ck);
}

int api_check(struct tg_req *req)
{
	struct check *ck = tg_arena_alloc(&req->arena, sizeof(*ck));
	int rc;

	ck->req = req;
	req->ctx = ck;
	if ((rc = parse(req, ck)) < 0)
		return rc;
	ck->t = policy_registry_get(req->principal.tenant_id);
	if (!ck->t || !policy_subject_cached(req->principal.tenant_id, ck->customer_id, &req->arena, &ck->subj)) {
		tg_req_offload(req, slow_path);
		return TG_ASYNC;
	}
	ck->now = policy_now(ck->t, tg_now_ms());
	if (!policy_meter_find(ck->t, ck->chk.meter)) {
		policy_tenant_unref(ck->t);
		return api_bad(req, "meter", "no meter '%s'", ck->chk.meter);
	}
	ck->n = policy_plan(ck->t, &ck->chk, &ck->subj, ck->now, &req->arena, &ck->cs);
	ck->released = hot_holds_released(req->principal.tenant_id);
	struct deny_entry *e = deny_cache_hit(ck);
	if (e) {
		/* answered from the deny cache: the counter that denied is all the state there is */
		ck->cs = &e->state;
		ck->n = 1;
		ck->hc.status = HOT_DONE;
		ck->hc.allowed = false;
		answer_cached(ck, e);
		done(ck);
		return TG_ASYNC;
	}
	if ((rc = price(ck)) < 0) {
		policy_tenant_unref(ck->t);
		return rc;
	}
	start_hot(ck, &req->arena);
	if (ck->n == 0 && !ck->hc.bal && !ck->hc.wf) {
		ck->hc.status = HOT_DONE;
		ck->hc.allowed = true;
		finish(ck);
		return TG_ASYNC;
	}
	if (hot_check_async(&ck->hc, &req->arena, on_hot, ck) < 0) {
		ck->hc.status = HOT_ERROR;
		finish(ck);
	}
	return TG_ASYNC;
}

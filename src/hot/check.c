/* check.c — one check = one EVALSHA of check.lua over every counter it touches (keys and arguments here). */
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

#define DAY_MS INT64_C(86400000)
/* A sliding window keeps an exact log of entries up to this many units, sub-buckets above. */
#define SLIDING_LOG_MAX (INT64_C(1000) * TG_FIXED_SCALE)

void hot_argv_push(struct hot_argv *b, const char *s)
{
	if (b->n == b->cap) {
		int cap = b->cap ? b->cap * 2 : 64;
		const char **v = tg_arena_alloc(b->a, sizeof(*v) * (size_t)cap);
		size_t *len = tg_arena_alloc(b->a, sizeof(*len) * (size_t)cap);
		if (b->n) {
			memcpy(v, b->v, sizeof(*v) * (size_t)b->n);
			memcpy(len, b->len, sizeof(*len) * (size_t)b->n);
		}
		b->v = v;
		b->len = len;
		b->cap = cap;
	}
	b->v[b->n] = s;
	b->len[b->n] = strlen(s);
	b->n++;
}

const char *hot_i64(struct tg_arena *a, int64_t v)
{
	return tg_arena_printf(a, "%lld", (long long)v);
}

/* Keys: every key of one customer shares its hash tag; ip/key/platform subjects use '|', never in ids. */
const char *hot_counter_key(struct tg_arena *a, const char *tenant, const struct policy_counter *c)
{
	const struct policy_limit *l = c->limit;
	char tag[TG_ID_MAX * 2 + 64];

	switch (c->subject_kind) {
	case SUBJECT_CUSTOMER:
	case SUBJECT_ORG:
		snprintf(tag, sizeof(tag), "%s:%s", tenant, c->subject);
		break;
	case SUBJECT_PLATFORM:
		snprintf(tag, sizeof(tag), "%s|*", tenant);
		break;
	case SUBJECT_IP:
		snprintf(tag, sizeof(tag), "%s|ip|%s", tenant, c->subject);
		break;
	case SUBJECT_KEY:
		snprintf(tag, sizeof(tag), "%s|key|%s", tenant, c->subject);
		break;
	}
	if (l->kind == POLICY_QUOTA)
		return tg_arena_printf(a, "tg:{%s}:q:%s:%s:%lld", tag, l->id, policy_period_names[l->period],
				       (long long)(c->period_start_ms / 1000));
	if (l->algorithm == ALG_TOKEN_BUCKET)
		return tg_arena_printf(a, "tg:{%s}:tb:%s", tag, l->id);
	return tg_arena_printf(a, "tg:{%s}:sw:%s:%lld", tag, l->id, (long long)l->window_s);
}

const char *hot_reservation_key(struct tg_arena *a, const char *tenant, const char *customer, const char *id)
{
	return tg_arena_printf(a, "tg:{%s:%s}:rsv:%s", tenant, customer, id);
}

/* Every reservation of a tenant by expiry (tenant clock), members "customer|id", for the worker. */
const char *hot_reservation_index(struct tg_arena *a, const char *tenant)
{
	return tg_arena_printf(a, "tg:{%s}:rsvx", tenant);
}

/* A workflow's guard state: one hash per workflow id, in its own slot. */
const char *hot_workflow_key(struct tg_arena *a, const char *tenant, const char *id)
{
	return tg_arena_printf(a, "tg:{%s|wf|%s}", tenant, id);
}

/* A customer's live balance: beside its counters, under its hash tag. */
const char *hot_balance_key(struct tg_arena *a, const char *tenant, const char *owner)
{
	return tg_arena_printf(a, "tg:{%s:%s}:bal", tenant, owner);
}

/* Which customer holds each reservation of a tenant: the release endpoint names only the id. */
const char *hot_reservation_owners(struct tg_arena *a, const char *tenant)
{
	return tg_arena_printf(a, "tg:{%s}:rsvc", tenant);
}

bool hot_sliding_log(const struct policy_limit *l)
{
	return l->limit <= SLIDING_LOG_MAX;
}

/* Build KEYS and ARGV of check.lua; counters without a subject (listed without state) are skipped. */
static int build(struct hot_check *hc, struct tg_arena *a, struct hot_argv *keys, struct hot_argv *args)
{
	char flags[8];
	int n = 0;

	keys->a = args->a = a;
	hot_argv_push(args, hot_i64(a, hc->now_ms));
	snprintf(flags, sizeof(flags), "%s%s", hc->flags & HOT_DRY_RUN ? "d" : "", hc->flags & HOT_RESERVE ? "r" : "");
	hot_argv_push(args, tg_arena_strdup(a, flags));
	hot_argv_push(args, hot_i64(a, hc->reservation_expires_ms));
	hot_argv_push(args, hc->reservation_id ? hc->reservation_id : "");
	hot_argv_push(args, hc->customer_id ? hc->customer_id : "");
	hot_argv_push(args, "0"); /* n, set below */
	for (int i = 0; i < hc->n; i++) {
		struct policy_counter *c = &hc->cs[i];
		const struct policy_limit *l = c->limit;
		char fl[8];
		int f = 0;

		if (!c->subject)
			continue;
		if (c->consume)
			fl[f++] = 'c';
		if (c->reserve)
			fl[f++] = 'r';
		if (l->enforcement == ENF_HARD)
			fl[f++] = 'e';
		if (l->kind == POLICY_QUOTA && l->meter->agg == AGG_MAX)
			fl[f++] = 'm';
		else if (l->kind == POLICY_QUOTA && l->meter->agg == AGG_LATEST)
			fl[f++] = 'l';
		fl[f] = '\0';
		hot_argv_push(keys, hot_counter_key(a, hc->tenant_id, c));
		if (l->kind == POLICY_QUOTA) {
			int64_t ttl = c->period_end_ms == INT64_MAX ? 0 : c->period_end_ms - hc->now_ms + DAY_MS;
			hot_argv_push(args, "q");
			hot_argv_push(args, hot_i64(a, l->limit));
			hot_argv_push(args, hot_i64(a, c->amount));
			hot_argv_push(args, hot_i64(a, ttl > 0 ? ttl : DAY_MS));
			hot_argv_push(args, c->has_init ? hot_i64(a, c->init) : "");
		} else if (l->algorithm == ALG_TOKEN_BUCKET) {
			hot_argv_push(args, "tb");
			hot_argv_push(args, hot_i64(a, l->burst));
			hot_argv_push(args, hot_i64(a, c->amount));
			hot_argv_push(args, hot_i64(a, l->limit));
			hot_argv_push(args, hot_i64(a, l->window_s * 1000));
		} else {
			hot_argv_push(args, hot_sliding_log(l) ? "sl" : "sw");
			hot_argv_push(args, hot_i64(a, l->limit));
			hot_argv_push(args, hot_i64(a, c->amount));
			hot_argv_push(args, hot_i64(a, l->window_s * 1000));
			hot_argv_push(args, "");
		}
		hot_argv_push(args, tg_arena_strdup(a, fl));
		n++;
	}
	if (hc->wf) {
		struct hot_workflow *w = hc->wf;
		hot_argv_push(keys, hot_workflow_key(a, hc->tenant_id, w->id));
		hot_argv_push(args, "wf");
		hot_argv_push(args, "0");
		hot_argv_push(args, hot_i64(a, w->cost));
		hot_argv_push(args, tg_arena_printf(a, "%lld:%lld:%lld:%lld:%lld", (long long)w->max_calls,
						    (long long)w->max_depth, (long long)w->max_duration_ms,
						    (long long)w->max_duplicates, (long long)w->max_cost));
		hot_argv_push(args, tg_arena_printf(a, "%lld:%s|%s", (long long)w->depth, w->tool ? w->tool : "",
						    w->args_hash ? w->args_hash : ""));
		hot_argv_push(args, w->record_cost ? "cek" : "ce");
		n++;
	}
	if (hc->bal) {
		struct hot_balance *b = hc->bal;
		char fl[4];
		int f = 0;
		if (b->consume)
			fl[f++] = 'c';
		if (b->reserve)
			fl[f++] = 'r';
		fl[f++] = 'e';
		fl[f] = '\0';
		hot_argv_push(keys, hot_balance_key(a, hc->tenant_id, b->owner));
		hot_argv_push(args, "b");
		hot_argv_push(args, "0");
		hot_argv_push(args, hot_i64(a, b->cost));
		hot_argv_push(args, b->has_init ? tg_arena_printf(a, "%lld:%lld", (long long)b->init_balance,
								   (long long)b->init_minimum)
						: "");
		hot_argv_push(args, "");
		hot_argv_push(args, tg_arena_strdup(a, fl));
		n++;
	}
	args->v[5] = hot_i64(a, n);
	args->len[5] = strlen(args->v[5]);
	if (hc->flags & HOT_RESERVE) {
		hot_argv_push(keys, hot_reservation_key(a, hc->tenant_id, hc->customer_id, hc->reservation_id));
		hot_argv_push(keys, hot_reservation_index(a, hc->tenant_id));
		hot_argv_push(keys, hot_reservation_owners(a, hc->tenant_id));
		hot_argv_push(keys, HOT_RESERVING_TENANTS);
		hot_argv_push(args, hc->tenant_id);
	}
	return n;
}

int64_t hot_reply_i64(const redisReply *r, size_t i)
{
	if (i >= r->elements)
		return 0;
	const redisReply *e = r->element[i];
	if (e->type == REDIS_REPLY_INTEGER)
		return e->integer;
	if (e->type == REDIS_REPLY_STRING) {
		int64_t v = 0;
		tg_parse_i64(e->str, INT64_MIN, INT64_MAX, &v);
		return v;
	}
	return 0;
}

static void parse(struct hot_check *hc, const redisReply *r)
{
	int64_t status;
	size_t pos = 1;

	if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
		if (r && r->type == REDIS_REPLY_ERROR)
			log_warn("check script failed", "%s", r->str);
		hc->status = HOT_ERROR;
		return;
	}
	status = hot_reply_i64(r, 0);
	if (status < 0) {
		/* indexes (1-based) among the counters that were sent */
		int sent = 0;
		for (int i = 0; i < hc->n; i++)
			sent += hc->cs[i].subject != NULL;
		for (size_t k = 1; k < r->elements; k++) {
			int64_t want = hot_reply_i64(r, k), seen = 0;
			if (hc->bal && want == sent + (hc->wf ? 2 : 1))
				hc->bal->missing = true;
			for (int i = 0; i < hc->n; i++) {
				if (!hc->cs[i].subject)
					continue;
				if (++seen == want)
					hc->cs[i].missing = true;
			}
		}
		hc->status = HOT_MISSING;
		return;
	}
	hc->allowed = status == 1;
	for (int i = 0; i < hc->n; i++) {
		struct policy_counter *c = &hc->cs[i];
		const struct policy_limit *l = c->limit;
		if (!c->subject)
			continue;
		int64_t fits = hot_reply_i64(r, pos), a = hot_reply_i64(r, pos + 1), b = hot_reply_i64(r, pos + 2), d = hot_reply_i64(r, pos + 3);
		pos += 4;
		c->allowed = fits == 1;
		c->missing = false;
		if (l->kind == POLICY_QUOTA) {
			c->used = a;
			c->reserved = b;
			c->remaining = l->limit - a - b > 0 ? l->limit - a - b : 0;
			c->reset_ms = c->period_end_ms;
			c->retry_ms = c->allowed || c->amount > l->limit || c->period_end_ms == INT64_MAX
					      ? -1
					      : c->period_end_ms - hc->now_ms;
		} else if (l->algorithm == ALG_TOKEN_BUCKET) {
			c->remaining = a > 0 ? a : 0;
			c->used = l->burst - c->remaining;
			c->reserved = 0;
			c->reset_ms = hc->now_ms + (b > 0 ? b : 0);
			c->retry_ms = c->allowed ? -1 : d;
		} else {
			c->used = a;
			c->reserved = 0;
			c->remaining = l->limit - a > 0 ? l->limit - a : 0;
			c->reset_ms = hc->now_ms + (b > 0 ? b : 0);
			c->retry_ms = c->allowed ? -1 : d;
		}
	}
	if (hc->wf) {
		struct hot_workflow *w = hc->wf;
		w->allowed = hot_reply_i64(r, pos) == 1;
		w->code = (int)hot_reply_i64(r, pos + 1);
		w->calls = hot_reply_i64(r, pos + 2);
		w->spent = hot_reply_i64(r, pos + 3);
		pos += 4;
	}
	if (hc->bal) {
		struct hot_balance *b = hc->bal;
		b->allowed = hot_reply_i64(r, pos) == 1;
		b->balance = hot_reply_i64(r, pos + 1);
		b->reserved = hot_reply_i64(r, pos + 2);
		b->minimum = hot_reply_i64(r, pos + 3);
		b->missing = false;
	}
	hc->status = HOT_DONE;
}

struct pending_check {
	struct hot_check *hc;
	void (*done)(void *);
	void *arg;
};

static void on_reply(void *arg, redisReply *r)
{
	struct pending_check *p = arg;

	if (!r)
		p->hc->status = HOT_ERROR;
	else
		parse(p->hc, r);
	p->done(p->arg);
}

int hot_check_async(struct hot_check *hc, struct tg_arena *arena, void (*done)(void *arg), void *arg)
{
	struct hot_argv keys = {0}, args = {0};
	struct pending_check *p = tg_arena_alloc(arena, sizeof(*p));

	build(hc, arena, &keys, &args);
	p->hc = hc;
	p->done = done;
	p->arg = arg;
	return hot_async_script(&hot_script_check, keys.n, keys.v, keys.len, args.n, args.v, args.len, on_reply, p);
}

int hot_check_sync(struct hot_check *hc, struct tg_arena *arena, struct tg_error *err)
{
	struct hot_argv keys = {0}, args = {0};
	redisReply *r;

	build(hc, arena, &keys, &args);
	r = hot_sync_script(&hot_script_check, keys.n, keys.v, args.n, args.v, err);
	parse(hc, r);
	if (r)
		freeReplyObject(r);
	return hc->status;
}

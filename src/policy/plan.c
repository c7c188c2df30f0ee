/* plan.c — which counters a check touches: slot precedence, organisations, platform, filters. */
#include <string.h>

#include "internal.h"
#include "tollgate/policy.h"

#define MAX_COUNTERS 256

struct plan {
	struct policy_counter *cs;
	int n, cap;
	int64_t now;
	struct tg_arena *arena;
};

#define FIRST_CAP 8 /* most checks touch a handful of counters: no big zeroed block per request */

bool policy_filter_matches(const struct policy_limit *l, const struct policy_dim *dims, int ndims)
{
	for (int i = 0; i < l->nfilter; i++) {
		bool found = false;
		for (int j = 0; j < ndims; j++)
			if (strcmp(dims[j].key, l->filter[i].key) == 0) {
				found = strcmp(dims[j].value, l->filter[i].value) == 0;
				break;
			}
		if (!found)
			return false;
	}
	return true;
}

static struct policy_counter *add(struct plan *p, const struct policy_limit *l, enum policy_subject_kind kind,
				  const char *subject)
{
	struct policy_counter *c;

	if (p->n >= MAX_COUNTERS)
		return NULL;
	if (p->n == p->cap) {
		int cap = p->cap ? p->cap * 4 : FIRST_CAP;
		struct policy_counter *cs = tg_arena_alloc(p->arena, sizeof(*cs) * (size_t)cap);
		if (p->n)
			memcpy(cs, p->cs, sizeof(*cs) * (size_t)p->n);
		p->cs = cs;
		p->cap = cap;
	}
	c = &p->cs[p->n++];
	memset(c, 0, sizeof(*c));
	c->limit = l;
	c->subject_kind = kind;
	c->subject = subject;
	c->retry_ms = -1;
	if (l->kind == POLICY_QUOTA) {
		c->period_start_ms = policy_period_start(l->period, p->now);
		c->period_end_ms = policy_period_end(l->period, c->period_start_ms);
	}
	return c;
}

static bool slot_taken(const struct policy_limit *const *taken, int n, const char *slot)
{
	for (int i = 0; i < n; i++)
		if (strcmp(taken[i]->slot, slot) == 0)
			return true;
	return false;
}

/* The limits a customer gets for one meter: per slot, its customer limits, else its tier's, else the default. */
static int resolve(const struct meter_index *mi, const char *tier, const char *customer,
		   const struct policy_limit **out, int max)
{
	const struct policy_limit_list *lists[3] = {
		customer ? tg_map_get(&mi->customer, customer) : NULL,
		tier ? tg_map_get(&mi->tier, tier) : NULL,
		&mi->dflt,
	};
	int n = 0;

	for (int level = 0; level < 3; level++) {
		int before = n;
		if (!lists[level])
			continue;
		for (int i = 0; i < lists[level]->n && n < max; i++) {
			const struct policy_limit *l = lists[level]->items[i];
			/* a slot filled at a more specific level hides this one; limits of one level all apply */
			if (!slot_taken(out, before, l->slot))
				out[n++] = l;
		}
	}
	return n;
}

struct meter_amount {
	const struct policy_meter *m;
	tg_fixed amount;
	bool is_requests;
};

static void plan_subject(struct plan *p, const struct policy_check *c, const struct meter_amount *ma,
			 const struct policy_limit *const *ls, int n, enum policy_subject_kind kind, const char *subject,
			 bool org)
{
	for (int i = 0; i < n; i++) {
		const struct policy_limit *l = ls[i];
		enum policy_subject_kind k = kind;
		const char *subj = subject;
		struct policy_counter *pc;

		if (c && !policy_filter_matches(l, c->dims, c->ndims))
			continue;
		if (l->kind == POLICY_RATE && l->per != PER_CUSTOMER) {
			if (org)
				continue; /* per-ip/key/platform counters are shared already */
			k = l->per == PER_IP ? SUBJECT_IP : l->per == PER_KEY ? SUBJECT_KEY : SUBJECT_PLATFORM;
			subj = k == SUBJECT_IP ? (c ? c->ip : NULL) : k == SUBJECT_KEY ? (c ? c->key : NULL) : "";
			if (c && !subj)
				continue; /* the check lacks the field this limit is keyed by */
		}
		pc = add(p, l, k, subj);
		if (!pc)
			return;
		pc->amount = ma->amount;
		if (!c)
			continue;
		if (l->kind == POLICY_RATE || ma->is_requests) {
			pc->consume = true;
		} else {
			pc->consume = c->consume;
			pc->reserve = c->reserve && !c->consume;
		}
	}
}

static void plan_meter(struct plan *p, const struct policy_tenant *t, const struct policy_check *c,
		       const struct policy_subject *s, const struct meter_amount *ma)
{
	const struct meter_index *mi = t->index ? tg_map_get(&t->index->by_meter, ma->m->id) : NULL;
	const struct policy_limit *ls[MAX_COUNTERS];
	int n;

	if (!mi)
		return;
	n = resolve(mi, s->tier, s->customer_id, ls, MAX_COUNTERS);
	plan_subject(p, c, ma, ls, n, SUBJECT_CUSTOMER, s->customer_id, false);
	if (s->parent_id) {
		/* the organisation's own limits, counted on its total */
		n = resolve(mi, s->parent_tier, s->parent_id, ls, MAX_COUNTERS);
		plan_subject(p, c, ma, ls, n, SUBJECT_ORG, s->parent_id, true);
	}
	plan_subject(p, c, ma, mi->platform.items, mi->platform.n, SUBJECT_PLATFORM, "", false);
}

int policy_plan(const struct policy_tenant *t, const struct policy_check *c, const struct policy_subject *s,
		int64_t now_ms, struct tg_arena *a, struct policy_counter **ret)
{
	struct plan p = {.now = now_ms, .arena = a};
	const struct policy_meter *m = policy_meter_find(t, c->meter ? c->meter : POLICY_REQUESTS);
	struct meter_amount req = {&t->requests, TG_FIXED_SCALE, true};

	plan_meter(&p, t, c, s, &req);
	if (m && m != &t->requests) {
		struct meter_amount ma = {m, c->amount, false};
		plan_meter(&p, t, c, s, &ma);
	}
	*ret = p.cs;
	return p.n;
}

static int add_all(void *arg, const char *key, void *val)
{
	struct {
		struct plan *p;
		const struct policy_tenant *t;
		const struct policy_subject *s;
	} *ctx = arg;
	const struct meter_index *mi = val;
	struct meter_amount ma = {mi->meter, 0, mi->meter == &ctx->t->requests};

	(void)key;
	const struct policy_limit *ls[MAX_COUNTERS];
	int n = resolve(mi, ctx->s->tier, ctx->s->customer_id, ls, MAX_COUNTERS);
	plan_subject(ctx->p, NULL, &ma, ls, n, SUBJECT_CUSTOMER, ctx->s->customer_id, false);
	if (ctx->s->parent_id) {
		n = resolve(mi, ctx->s->parent_tier, ctx->s->parent_id, ls, MAX_COUNTERS);
		plan_subject(ctx->p, NULL, &ma, ls, n, SUBJECT_ORG, ctx->s->parent_id, true);
	}
	plan_subject(ctx->p, NULL, &ma, mi->platform.items, mi->platform.n, SUBJECT_PLATFORM, "", false);
	return 0;
}

int policy_plan_all(const struct policy_tenant *t, const struct policy_subject *s, int64_t now_ms,
		    struct tg_arena *a, struct policy_counter **ret)
{
	struct plan p = {.now = now_ms, .arena = a};
	struct {
		struct plan *p;
		const struct policy_tenant *t;
		const struct policy_subject *s;
	} ctx = {&p, t, s};

	if (t->index)
		tg_map_each(&t->index->by_meter, add_all, &ctx);
	*ret = p.cs;
	return p.n;
}

/* Every quota counter a customer could have, under any tier, the default limits or its own, on a meter
 * whose usage PostgreSQL keeps: a counter moves only while its limit applies, so when the customer's
 * limits change hands (its tier or organisation, an override of its own) the ones that stopped applying
 * for a while are stale. Those are what the caller drops, to be rebuilt from the rollups at their next
 * use. (The built-in requests meter has no rollups: its counters are left as they are.) With everything,
 * also those and its own rate limits' (a customer deleted: one made again under its id starts afresh). */
int policy_customer_quotas(const struct policy_tenant *t, const char *customer_id, int64_t now_ms, bool everything,
			   struct tg_arena *a, struct policy_counter **ret)
{
	/* every one of them, however many tiers (a check's MAX_COUNTERS does not apply) */
	struct policy_counter *cs = tg_arena_alloc(a, sizeof(*cs) * (size_t)(t->nlimits + 1));
	int n = 0;

	for (int i = 0; i < t->nlimits; i++) {
		const struct policy_limit *l = &t->limits[i];
		bool mine = l->kind == POLICY_QUOTA || (everything && l->kind == POLICY_RATE && l->per == PER_CUSTOMER);
		if (!mine || !l->meter || (l->meter == &t->requests && !everything) || l->scope == SCOPE_PLATFORM ||
		    (l->scope == SCOPE_CUSTOMER && strcmp(l->customer_id, customer_id) != 0))
			continue;
		struct policy_counter *c = &cs[n++];
		c->limit = l;
		c->subject_kind = SUBJECT_CUSTOMER;
		c->subject = customer_id;
		c->retry_ms = -1;
		if (l->kind == POLICY_QUOTA) {
			c->period_start_ms = policy_period_start(l->period, now_ms);
			c->period_end_ms = policy_period_end(l->period, c->period_start_ms);
		}
	}
	*ret = cs;
	return n;
}

const char *const policy_guard_names[] = {"max_tool_calls", "duplicate_threshold", "max_depth", "max_duration",
					  "max_cost"};

static void tighten(int64_t *have, int64_t v, const struct policy_limit **from, const struct policy_limit *l)
{
	if (v > 0 && (*have == 0 || v < *have)) {
		*have = v;
		*from = l;
	}
}

static void guard_from(struct policy_workflow *w, const struct policy_limit *l)
{
	tighten(&w->max_calls, l->max_tool_calls, &w->from[0], l);
	tighten(&w->max_duplicates, l->duplicate_threshold, &w->from[1], l);
	tighten(&w->max_depth, l->max_depth, &w->from[2], l);
	tighten(&w->max_duration_s, l->max_duration_s, &w->from[3], l);
	tighten(&w->max_cost, l->max_cost, &w->from[4], l);
}

bool policy_workflow_guard(const struct policy_tenant *t, const struct policy_subject *s, struct policy_workflow *out)
{
	const struct policy_limit_list *wl = t->index ? &t->index->workflow : NULL;
	enum policy_scope level = SCOPE_DEFAULT;

	memset(out, 0, sizeof(*out));
	if (!wl || wl->n == 0)
		return false;
	/* workflow guards fill one slot: the customer's, else its tier's, else the default ones */
	for (int i = 0; i < wl->n; i++) {
		const struct policy_limit *l = wl->items[i];
		if (l->scope == SCOPE_CUSTOMER && s->customer_id && !strcmp(l->customer_id, s->customer_id))
			level = SCOPE_CUSTOMER;
		else if (l->scope == SCOPE_TIER && s->tier && !strcmp(l->tier, s->tier) && level != SCOPE_CUSTOMER)
			level = SCOPE_TIER;
	}
	for (int i = 0; i < wl->n; i++) {
		const struct policy_limit *l = wl->items[i];
		bool mine = (l->scope == SCOPE_CUSTOMER && level == SCOPE_CUSTOMER && s->customer_id &&
			     !strcmp(l->customer_id, s->customer_id)) ||
			    (l->scope == SCOPE_TIER && level == SCOPE_TIER && s->tier && !strcmp(l->tier, s->tier)) ||
			    (l->scope == SCOPE_DEFAULT && level == SCOPE_DEFAULT) || l->scope == SCOPE_PLATFORM;
		if (mine)
			guard_from(out, l);
	}
	for (int i = 0; i < 5; i++)
		if (out->from[i])
			return true;
	return false;
}

/* record.c — between PostgreSQL and Redis: rebuilding lost counters, committed usage into live counters. */
#include <string.h>

#include "tollgate/api.h"
#include "tollgate/config.h"
#include "tollgate/hot.h"
#include "tollgate/json.h"
#include "tollgate/log.h"
#include "tollgate/policy.h"
#include "tollgate/store.h"

/* What active reservations hold on a key (a quota counter or a live balance). */
static int held_on(const char *tenant_id, const char *key, tg_fixed *held, struct tg_error *err)
{
	int64_t v;
	int rc = store_reservations_held(tenant_id, key, hot_hold_prefix_len(key), &v, err);

	*held = v;
	return rc;
}

/* Fill init for every missing quota counter from the rollups and the active holds (the truth Redis
 * caches). Blocking. */
int api_rebuild(const char *tenant_id, struct policy_counter *cs, int n, struct tg_error *err)
{
	struct tg_arena a;

	tg_arena_init(&a);
	for (int i = 0; i < n; i++) {
		struct policy_counter *c = &cs[i];
		const struct policy_limit *l = c->limit;
		json_t *filter;
		char *text;
		int rc;

		if (!c->missing)
			continue;
		filter = json_object();
		for (int f = 0; f < l->nfilter; f++)
			json_object_set_new(filter, l->filter[f].key, json_string(l->filter[f].value));
		text = tg_json_dumps(filter);
		json_decref(filter);
		const char *subject = c->subject_kind == SUBJECT_PLATFORM ? "*" : c->subject;
		rc = store_usage_value(tenant_id, subject, l->meter->id, c->period_start_ms, c->period_end_ms, text,
				       (int)l->meter->agg, &c->init, err);
		c->init_at_ms = 0;
		if (rc == 0 && l->meter->agg == AGG_LATEST) /* which instant it is, for values sent out of order */
			rc = store_usage_latest_at(tenant_id, subject, l->meter->id, c->period_start_ms, c->period_end_ms,
						   text, &c->init_at_ms, err);
		free(text);
		if (rc == 0)
			rc = held_on(tenant_id, hot_counter_key(&a, tenant_id, c), &c->init_reserved, err);
		if (rc < 0) {
			tg_arena_release(&a);
			return rc;
		}
		c->has_init = true;
		c->missing = false;
	}
	tg_arena_release(&a);
	return 0;
}

/* A live balance Redis lost, from the ledger's sum. */
int api_rebuild_balance(const char *tenant_id, struct hot_balance *b, struct tg_error *err)
{
	json_t *row;
	int rc = store_balance_get(tenant_id, b->owner, &row, err);

	if (rc < 0)
		return rc;
	b->init_balance = row ? store_get_fixed(row, "balance", 0) : 0;
	b->init_minimum = row ? store_get_fixed(row, "minimum_balance", 0) : 0;
	json_decref(row);
	struct tg_arena a;
	tg_arena_init(&a);
	rc = held_on(tenant_id, hot_balance_key(&a, tenant_id, b->owner), &b->init_reserved, err);
	tg_arena_release(&a);
	if (rc < 0)
		return rc;
	b->has_init = true;
	b->missing = false;
	return 0;
}

struct rebuild_job {
	struct hot_check *hc;
	struct tg_arena *arena;
	int rc;
	struct tg_error err;
};

/*
 * On the writer thread: read the lost counters' truth from PostgreSQL, put it back into Redis, and
 * check again there. No commit of this instance can fall between the read, the write and the check,
 * so no event is lost or counted twice by the rebuild (instances writing concurrently still can: see
 * the README), and the check carries the rebuilt values: a counter lost again in between is made from
 * them, not reported missing once more (Redis losing keys over and over cannot starve the check). A
 * counter that was there at the last attempt and is lost before this one is rebuilt on the next turn.
 */
static void rebuild_on_writer(void *arg)
{
	struct rebuild_job *j = arg;
	struct hot_check *hc = j->hc;

	for (int attempt = 0; attempt < 3; attempt++) {
		tg_error_clear(&j->err);
		j->rc = api_rebuild(hc->tenant_id, hc->cs, hc->n, &j->err);
		if (j->rc == 0 && hc->bal && hc->bal->missing)
			j->rc = api_rebuild_balance(hc->tenant_id, hc->bal, &j->err);
		if (j->rc == 0)
			j->rc = hot_init_counters(hc->tenant_id, hc->cs, hc->n, hc->now_ms, hc->bal, j->arena, &j->err);
		if (j->rc == 0 && hot_check_sync(hc, j->arena, &j->err) == HOT_ERROR)
			j->rc = -1;
		/* used once: a later check reads what is in Redis then (newer usage included) */
		for (int i = 0; i < hc->n; i++)
			hc->cs[i].has_init = false;
		if (hc->bal)
			hc->bal->has_init = false;
		if (j->rc < 0 || hc->status != HOT_MISSING)
			return;
	}
	tg_fail(&j->err, TG_EUNAVAIL, "counters_unavailable", NULL, "usage counters could not be loaded; retry");
	j->rc = -1;
}

/* A check of these counters on this thread's blocking connection, rebuilding what Redis lost. On
 * failure hc->status is HOT_ERROR too: the counters it leaves behind carry no decision (a check that
 * read them as one denied a customer with room to spare when Redis kept losing its keys). */
int api_check_sync(struct hot_check *hc, struct tg_arena *a, struct tg_error *err)
{
	struct rebuild_job job = {.hc = hc, .arena = a};
	int st = hot_check_sync(hc, a, err);

	if (st != HOT_MISSING)
		return st;
	store_writer_run(rebuild_on_writer, &job);
	if (job.rc < 0) {
		*err = job.err;
		return hc->status = HOT_ERROR;
	}
	return hc->status;
}

/* The dimensions an event carries (its string properties). */
static int event_dims(const struct store_event *e, struct policy_dim *dims, json_t **props)
{
	const char *k;
	json_t *v;
	struct tg_error err;
	int n = 0;

	*props = tg_json_parse(e->properties_json, strlen(e->properties_json), true, &err);
	if (!*props)
		return 0;
	json_object_foreach(*props, k, v) {
		if (n < POLICY_MAX_DIMS && json_is_string(v) && !tg_json_is_number(v)) {
			dims[n].key = k;
			dims[n].value = json_string_value(v);
			n++;
		}
	}
	return n;
}

/* Counters one committed event moves: its meters' quotas for the customer, organisation and platform,
 * in the periods its timestamp falls in (at most as many as a check's plan holds). */
#define EVENT_COUNTERS_MAX 256

static int event_counters(const struct policy_tenant *t, const struct store_event *e, struct tg_arena *a,
			  struct policy_counter *out, int max)
{
	struct policy_subject s = {.customer_id = e->customer_id, .tier = e->tier, .parent_id = e->parent_id,
				   .parent_tier = e->parent_tier};
	struct policy_check c = {0};
	json_t *props;
	int total = 0;

	c.ndims = event_dims(e, c.dims, &props);
	for (int k = 0; k < e->ncontribs && total < max; k++) {
		const struct policy_meter *m = policy_meter_find(t, e->contribs[k].meter_id);
		struct policy_counter *cs;
		if (!m)
			continue;
		c.meter = m->id;
		c.amount = e->contribs[k].value;
		c.consume = true;
		int n = policy_plan(t, &c, &s, e->ts_ms, a, &cs);
		for (int i = 0; i < n && total < max; i++) {
			/* the plan also lists the requests meter (an event is not a request), and rate limits
			 * are admission control, moved by checks only: an event feeding them too would count a
			 * checked-then-recorded call twice */
			if (cs[i].limit->meter != m || cs[i].limit->kind != POLICY_QUOTA)
				continue;
			out[total++] = cs[i];
		}
	}
	json_decref(props);
	return total;
}

/* The writer's watch hook: the quota counters a submission's accepted events moved (their customers are
 * resolved by now), for the writer to fire thresholds and overruns in the same transaction. */
void api_watch(struct store_submission *sub)
{
	struct policy_tenant *t = policy_registry_get(sub->tenant_id);
	struct tg_arena *a = sub->arena;
	int cap = 0, jcap = 0;

	sub->watches = NULL;
	sub->nwatches = 0;
	sub->journal = NULL;
	sub->njournal = 0;
	sub->planned_gen = 0;
	for (int i = 0; i < sub->n; i++) {
		sub->events[i].planned = NULL;
		sub->events[i].nplanned = 0;
	}
	if (!t)
		return;
	for (int i = 0; i < sub->n; i++) {
		struct store_event *e = &sub->events[i];
		struct policy_counter cs[EVENT_COUNTERS_MAX];
		int n;

		if (e->result != STORE_EV_ACCEPTED)
			continue;
		n = event_counters(t, e, a, cs, EVENT_COUNTERS_MAX);
		/* kept for the live update after the commit (planning each event again there cost ~7% of the
		 * server in batches of events); a subject may be the batch's copy of an organisation's id, which
		 * goes with the batch, so each is copied here */
		if (n > 0) {
			e->planned = tg_arena_alloc(a, sizeof(*e->planned) * (size_t)n);
			memcpy(e->planned, cs, sizeof(*cs) * (size_t)n);
			for (int k = 0; k < n; k++)
				e->planned[k].subject = tg_arena_strdup(a, cs[k].subject);
			e->nplanned = n;
		}
		/* the live counters it moves after the COMMIT, for api_before_commit (a consuming check's were
		 * noted when it moved them) */
		if (!sub->counters_applied && n > 0) {
			sub->journal = tg_arena_grow(a, sub->journal, sub->njournal, sub->njournal + n, &jcap,
						     sizeof(*sub->journal));
			for (int k = 0; k < n; k++)
				if (hot_durable(&cs[k]))
					sub->journal[sub->njournal++] = hot_counter_key(a, sub->tenant_id, &cs[k]);
		}
		for (int k = 0; k < n; k++) {
			const struct policy_limit *l = cs[k].limit;
			sub->watches = tg_arena_grow(a, sub->watches, sub->nwatches, sub->nwatches + 1, &cap,
						     sizeof(*sub->watches));
			struct store_watch *w = &sub->watches[sub->nwatches++];
			json_t *filter = json_object();
			for (int f = 0; f < l->nfilter; f++)
				json_object_set_new(filter, l->filter[f].key, json_string(l->filter[f].value));
			char *text = tg_json_dumps(filter);
			json_decref(filter);
			w->filter_json = tg_arena_strdup(a, text);
			free(text);
			w->limit_id = tg_arena_strdup(a, l->id);
			w->subject = cs[k].subject_kind == SUBJECT_PLATFORM ? "*" : tg_arena_strdup(a, cs[k].subject);
			w->meter_id = tg_arena_strdup(a, l->meter->id);
			w->from_ms = cs[k].period_start_ms;
			w->to_ms = cs[k].period_end_ms;
			w->agg = (int)l->meter->agg;
			w->limit = l->limit;
			w->nthresholds = l->nthresholds;
			memcpy(w->thresholds, l->thresholds, sizeof(w->thresholds[0]) * (size_t)l->nthresholds);
			w->enforcement = policy_enforcement_names[l->enforcement];
		}
	}
	sub->planned_gen = t->generation;
	policy_tenant_unref(t);
}

/* The live counters a batch moves across its COMMIT, in a: the quota counters api_watch listed, the live
 * balances of priced events, and the counters of the reservations they settle; with applied, also what
 * consuming and reserving checks moved before it (which they noted themselves when they moved it). */
static int batch_keys(struct store_submission **subs, int n, bool applied, struct tg_arena *a, const char ***ret)
{
	const char **keys = NULL;
	int nk = 0, cap = 0;
	struct policy_tenant *t = NULL; /* the tenant of the last submission: its clock */
	int64_t now = 0;

	for (int s = 0; s < n; s++) {
		const struct store_submission *sub = subs[s];
		const struct store_reservation *rsv = applied ? sub->reservation : NULL;
		int want = nk + sub->njournal + 2 * sub->n + (applied ? sub->napplied + 1 : 0) + (rsv ? rsv->nholds : 0);
		for (int i = 0; i < sub->n; i++)
			want += sub->events[i].settled ? 2 * sub->events[i].settled->nholds : 0;

		keys = tg_arena_grow(a, keys, nk, want, &cap, sizeof(*keys));
		for (int i = 0; i < sub->njournal; i++)
			keys[nk++] = sub->journal[i];
		for (int i = 0; i < sub->n; i++) {
			const struct store_event *e = &sub->events[i];
			if (e->result != STORE_EV_ACCEPTED)
				continue;
			if (e->balance_owner && !sub->counters_applied)
				keys[nk++] = hot_balance_key(a, sub->tenant_id, e->balance_owner);
			if (e->settled && (!t || strcmp(t->id, sub->tenant_id) != 0)) {
				policy_tenant_unref(t);
				t = policy_registry_get(sub->tenant_id);
				now = t ? policy_now(t, tg_now_ms()) : tg_now_ms();
			}
			for (int h = 0; e->settled && h < e->settled->nholds; h++) {
				const char *key = e->settled->holds[h].key, *there = hot_hold_key(a, key, now);
				keys[nk++] = key;
				if (there != key)
					keys[nk++] = there; /* made in an earlier period: let go from this one's */
			}
		}
		if (applied && sub->counters_applied) {
			for (int i = 0; i < sub->napplied; i++)
				if (hot_durable(&sub->applied[i]))
					keys[nk++] = hot_counter_key(a, sub->tenant_id, &sub->applied[i]);
			if (sub->applied_balance)
				keys[nk++] = hot_balance_key(a, sub->tenant_id, sub->applied_balance->owner);
		}
		for (int h = 0; rsv && h < rsv->nholds; h++)
			keys[nk++] = rsv->holds[h].key;
	}
	policy_tenant_unref(t);
	*ret = keys;
	return nk;
}

/* The writer's before-commit hook: every live counter the batch will move once committed goes in this
 * instance's journal first (hot_journal_note), so that if the process dies between the COMMIT and that
 * update, a survivor rebuilds them from PostgreSQL, committed usage included. */
void api_before_commit(struct store_submission **subs, int n)
{
	struct tg_arena a;
	struct tg_error err;
	const char **keys;
	int nk;

	if (!hot_journal_key())
		return;
	tg_arena_init(&a);
	if ((nk = batch_keys(subs, n, false, &a, &keys)) > 0 && hot_journal_note(keys, nk, false, &err) < 0)
		log_warn("live counters not journaled before a commit", "%s", err.detail);
	tg_arena_release(&a);
}

/* The writer's lost hook: the batch may or may not have committed, so neither its live update nor the checks'
 * give-backs would be right for sure; every counter it touches is dropped and rebuilt from PostgreSQL. */
void api_commit_lost(struct store_submission **subs, int n)
{
	struct tg_arena a;
	const char **keys;
	int nk;

	tg_arena_init(&a);
	if ((nk = batch_keys(subs, n, true, &a, &keys)) > 0)
		hot_journal_suspect(keys, nk);
	tg_arena_release(&a);
}

/* ---- seen event ids ---- */

/* The events of subs[s]'s tenant across the batch whose client ids are worth asking about (before the
 * transaction) or remembering (committed: accepted, or a duplicate of a committed one, and not known
 * already); their ids in ids[] (both arrays in a). Marks the tenant's submissions grouped. */
static int tenant_ids(struct store_submission **subs, int n, int s, bool *grouped, bool committed,
		      struct tg_arena *a, const char ***ids, struct store_event ***evs)
{
	int cap = 0, m = 0;

	for (int k = s; k < n; k++)
		if (strcmp(subs[k]->tenant_id, subs[s]->tenant_id) == 0)
			cap += subs[k]->n;
	*ids = tg_arena_alloc(a, sizeof(**ids) * (size_t)(cap + 1));
	*evs = tg_arena_alloc(a, sizeof(**evs) * (size_t)(cap + 1));
	for (int k = s; k < n; k++) {
		if (grouped[k] || strcmp(subs[k]->tenant_id, subs[s]->tenant_id) != 0)
			continue;
		grouped[k] = true;
		if (committed && subs[k]->rc < 0)
			continue;
		for (int i = 0; i < subs[k]->n; i++) {
			struct store_event *e = &subs[k]->events[i];
			if (!e->client_id || (committed && (e->seen || (e->result != STORE_EV_ACCEPTED &&
									e->result != STORE_EV_DUPLICATE))))
				continue;
			(*ids)[m] = e->id;
			(*evs)[m++] = e;
		}
	}
	return m;
}

/* Before a batch's transaction (the writer's seen hook) or after its commit: ask Redis which client ids
 * are known committed, or tell it which now are. A Redis failure costs only speed: the unique key in
 * PostgreSQL decides about every id Redis did not vouch for. */
static void seen_ids(struct store_submission **subs, int n, bool committed)
{
	bool *grouped;

	if (tg_cfg.event_id_ttl_s <= 0)
		return;
	grouped = tg_calloc((size_t)n + 1, sizeof(*grouped));
	for (int s = 0; s < n; s++) {
		struct store_event **evs;
		const char **ids;
		struct tg_arena a;
		struct tg_error err;
		int m, rc;

		if (grouped[s])
			continue;
		tg_arena_init(&a);
		m = tenant_ids(subs, n, s, grouped, committed, &a, &ids, &evs);
		if (m > 0 && committed)
			rc = hot_event_ids_remember(subs[s]->tenant_id, ids, m, tg_cfg.event_id_ttl_s, &err);
		else if (m > 0) {
			bool *seen = tg_arena_alloc(&a, sizeof(*seen) * (size_t)m);
			if ((rc = hot_event_ids_seen(subs[s]->tenant_id, ids, m, seen, &err)) == 0)
				for (int i = 0; i < m; i++)
					evs[i]->seen = seen[i];
		} else
			rc = 0;
		if (rc < 0)
			log_warn(committed ? "event ids not remembered" : "event ids not looked up", "tenant %s: %s",
				 subs[s]->tenant_id, err.detail);
		tg_arena_release(&a);
	}
	free(grouped);
}

void api_seen_ids(struct store_submission **subs, int n)
{
	seen_ids(subs, n, false);
}

/* What one batch's submissions of one tenant move in Redis, gathered for one usage.lua call per
 * chunk: one round trip for the batch rather than one per request. The arrays hold one chunk and one
 * event more at most (they start over after each call: every entry is written whole), and what planning
 * an event's counters allocates goes in a scratch arena released at each call. Sized for the whole batch's
 * worst case (64 counters an event, as it was), they were tens of megabytes zeroed for every batch of
 * 100-event requests. */
struct usage_batch {
	struct policy_counter *cs;
	struct hot_release *rel;
	struct hot_balance_delta *bal;
	int ncs, nrel, nbal, capcs, caprel, capbal;
	const char *tenant_id;
	struct policy_tenant *t;
	struct tg_arena *a;  /* the arrays */
	struct tg_arena scratch;
};

#define USAGE_CHUNK 512 /* counters per call at most: one script run must not hold Redis long */

/* The rollups already hold this usage: a failure here only delays the counters until they are
 * rebuilt, it loses nothing. */
static void usage_flush(struct usage_batch *u)
{
	struct tg_error err;

	if (u->ncs + u->nbal + u->nrel > 0 &&
	    hot_apply_usage(u->tenant_id, u->cs, u->ncs, policy_now(u->t, tg_now_ms()), u->bal, u->nbal, u->rel,
			    u->nrel, &u->scratch, &err) < 0)
		log_warn("live counters not updated", "tenant %s: %s", u->tenant_id, err.detail);
	u->ncs = u->nrel = u->nbal = 0;
	tg_arena_release(&u->scratch);
}

/* Room for this many more counters, balance moves and holds (after a call when a chunk is full). */
static void usage_room(struct usage_batch *u, int cs, int bal, int rel)
{
	if (u->ncs + u->nbal + u->nrel >= USAGE_CHUNK)
		usage_flush(u);
	u->cs = tg_arena_grow(u->a, u->cs, u->ncs, u->ncs + cs, &u->capcs, sizeof(*u->cs));
	u->bal = tg_arena_grow(u->a, u->bal, u->nbal, u->nbal + bal, &u->capbal, sizeof(*u->bal));
	u->rel = tg_arena_grow(u->a, u->rel, u->nrel, u->nrel + rel, &u->caprel, sizeof(*u->rel));
}

static void usage_add(struct usage_batch *u, const struct store_submission *sub)
{
	/* a consuming check's quota usage is in Redis already: again only where a rebuild lost it */
	usage_room(u, sub->counters_applied ? sub->napplied : 0, 1, 0);
	for (int i = 0; sub->counters_applied && i < sub->napplied; i++) {
		const struct policy_counter *c = &sub->applied[i];
		if (!c->subject || !c->consume || c->limit->kind != POLICY_QUOTA || c->amount == 0)
			continue;
		u->cs[u->ncs] = *c;
		u->cs[u->ncs++].mark_rule = MARK_APPLY_IF_REBUILT;
	}
	const struct hot_balance *hb = sub->counters_applied ? sub->applied_balance : NULL;
	if (hb && hb->consume && hb->cost != 0)
		u->bal[u->nbal++] = (struct hot_balance_delta){.owner = hb->owner, .amount = -hb->cost, .mark = hb->mark,
							       .mark_rule = MARK_APPLY_IF_REBUILT};
	for (int i = 0; i < sub->n; i++) {
		const struct store_event *e = &sub->events[i];
		if (e->result != STORE_EV_ACCEPTED)
			continue;
		usage_room(u, 0, 2, e->settled ? e->settled->nholds : 0);
		if (!sub->counters_applied) {
			/* as the watch planned them while that snapshot is current (its limits are alive: u->t is
			 * it), else planned again on the stack; then room for what they came to */
			struct policy_counter cs[EVENT_COUNTERS_MAX];
			const struct policy_counter *from = e->planned;
			int m = e->nplanned;
			if (sub->planned_gen != u->t->generation) {
				m = event_counters(u->t, e, &u->scratch, cs, EVENT_COUNTERS_MAX);
				from = cs;
			}
			if (m > 0) {
				u->cs = tg_arena_grow(u->a, u->cs, u->ncs, u->ncs + m, &u->capcs, sizeof(*u->cs));
				memcpy(u->cs + u->ncs, from, sizeof(*from) * (size_t)m);
				for (int k = 0; k < m; k++)
					u->cs[u->ncs + k].at_ms = e->ts_ms; /* a latest meter keeps the latest instant's */
				u->ncs += m;
			}
			/* whole structs: the arrays start over after each call, so a slot may hold an older entry */
			if (e->balance_owner)
				u->bal[u->nbal++] = (struct hot_balance_delta){.owner = e->balance_owner, .amount = -e->cost};
			/* max_cost counts what a workflow's events cost */
			if (e->workflow_id && e->cost)
				u->bal[u->nbal++] = (struct hot_balance_delta){.workflow_id = e->workflow_id, .amount = e->cost};
		}
		/* the reservation it settled: its holds go, wherever they are (its owner's counters and
		 * wallet, not necessarily this customer's) */
		for (int h = 0; e->settled && h < e->settled->nholds; h++)
			u->rel[u->nrel++] = (struct hot_release){e->settled->holds[h].key, e->settled->holds[h].amount};
	}
}

void api_after_commit(struct store_submission **subs, int n)
{
	bool *seen = tg_calloc((size_t)n + 1, sizeof(*seen));

	for (int s = 0; s < n; s++) {
		struct tg_arena a;
		struct usage_batch u = {.tenant_id = subs[s]->tenant_id, .a = &a};

		if (seen[s] || subs[s]->rc < 0)
			continue;
		if (!(u.t = policy_registry_get(u.tenant_id))) {
			for (int k = s; k < n; k++)
				seen[k] = seen[k] || strcmp(subs[k]->tenant_id, u.tenant_id) == 0;
			continue;
		}
		tg_arena_init(&a);
		tg_arena_init(&u.scratch);
		for (int k = s; k < n; k++) {
			if (seen[k] || subs[k]->rc < 0 || strcmp(subs[k]->tenant_id, u.tenant_id) != 0)
				continue;
			seen[k] = true;
			usage_add(&u, subs[k]);
		}
		usage_flush(&u);
		tg_arena_release(&a);
		policy_tenant_unref(u.t);
	}
	free(seen);
	seen_ids(subs, n, true);
}

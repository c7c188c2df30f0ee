/* duties.c — the periodic background duties of every instance (see worker.h). */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "tollgate/hot.h"
#include "tollgate/json.h"
#include "tollgate/log.h"
#include "tollgate/map.h"
#include "tollgate/metrics.h"
#include "tollgate/policy.h"
#include "tollgate/store.h"
#include "tollgate/util.h"
#include "tollgate/worker.h"

static pthread_t duties_thread;
static _Atomic bool duties_stopping;
static bool duties_running;

struct let_go {
	const char *tenant_id;
	const char *const *ids;
	int n;
	struct tg_arena *a;
	struct store_reservation *got;
	int ngot, rc;
	struct tg_error err;
};

/* The tenant's time (its test clock): which period a hold is let go from. From PostgreSQL when this
 * instance has not loaded the tenant (real time would be behind a test clock moved ahead). */
static int64_t tenant_now(const char *tenant_id)
{
	struct policy_tenant *t = policy_registry_get(tenant_id);
	int64_t now = tg_now_ms();
	struct tg_error err;
	json_t *row = NULL;

	if (t)
		now = policy_now(t, now);
	else if (store_tenant_get(tenant_id, &row, &err) == 0 && row)
		now = tg_clock_ms(now, store_int(row, "clock_offset_ms", 0));
	json_decref(row);
	policy_tenant_unref(t);
	return now;
}

static void let_go_on_writer(void *arg)
{
	struct let_go *j = arg;
	struct hot_release *rel;
	int nrel = 0;

	tg_error_clear(&j->err);
	if ((j->rc = store_begin(&j->err)) < 0)
		return;
	j->rc = store_reservations_take(j->tenant_id, j->ids, NULL, j->n, &j->got, &j->ngot, j->a, &j->err);
	if (j->rc < 0) {
		store_rollback();
		return;
	}
	for (int i = 0; i < j->ngot; i++)
		nrel += j->got[i].nholds;
	rel = tg_arena_alloc(j->a, sizeof(*rel) * (size_t)(nrel + 1));
	const char **keys = tg_arena_alloc(j->a, sizeof(*keys) * (size_t)(2 * nrel + 1));
	int64_t now = tenant_now(j->tenant_id);
	int nkeys = 0;
	nrel = 0;
	for (int i = 0; i < j->ngot; i++)
		for (int h = 0; h < j->got[i].nholds; h++) {
			const char *key = j->got[i].holds[h].key, *there = hot_hold_key(j->a, key, now);
			keys[nkeys++] = key;
			if (there != key)
				keys[nkeys++] = there; /* a hold made in an earlier period is let go from this one's */
			rel[nrel++] = (struct hot_release){key, j->got[i].holds[h].amount};
		}
	/* the counters the holds leave go in the journal before the COMMIT (every time: this is not a writer
	 * submission, whose waits bound the trim), so that a process dying between it and the release below
	 * leaves nothing held that a survivor does not rebuild (hot/journal.c) */
	struct tg_error e;
	if (nkeys > 0 && hot_journal_note(keys, nkeys, true, &e) < 0)
		log_warn("reservation holds not journaled; they are rebuilt once Redis answers", "%s", e.detail);
	if ((j->rc = store_commit(&j->err)) < 0) {
		store_rollback();
		hot_journal_suspect(keys, nkeys); /* a COMMIT that failed on the way may still have happened */
		j->ngot = 0;
		return;
	}
	/* gone in PostgreSQL already: if Redis fails now the holds stay until their counters are rebuilt or
	 * expire, which errs on the side of refusing, never of handing out twice */
	if (nrel > 0 && hot_apply_usage(j->tenant_id, NULL, 0, now, NULL, 0, rel, nrel, j->a, &j->err) < 0)
		log_warn("reservation holds not let go in Redis", "tenant %s: %s", j->tenant_id, j->err.detail);
}

int reservations_let_go(const char *tenant_id, const char *const *ids, int n, struct store_reservation **got,
			int *ngot, struct tg_arena *a, struct tg_error *err)
{
	struct let_go j = {.tenant_id = tenant_id, .ids = ids, .n = n, .a = a};

	store_writer_run(let_go_on_writer, &j);
	*got = j.got;
	*ngot = j.ngot;
	if (j.rc < 0)
		*err = j.err;
	return j.rc;
}

/* Reservations past their expiry (each on its tenant's clock), of one tenant or (NULL) of all, from
 * PostgreSQL: a lost Redis forgets none. */
int duties_expire_reservations(const char *tenant_id)
{
	enum { DUE_MAX = 1000 };
	int released = 0;
	size_t got_rows;

	/* one tenant's (a test clock's advance): until none is due; the worker's pass: one batch of them */
	do {
		json_t *rows = NULL;
		struct tg_error err;
		if (store_reservations_due(tg_now_ms(), tenant_id, DUE_MAX, &rows, &err) < 0) {
			log_warn("expired reservations not read", "%s", err.detail);
			return released;
		}
		got_rows = json_array_size(rows);
		/* each tenant's in one transaction of the writer (rows come ordered by expiry, tenants mixed) */
		const char **ids = tg_malloc(sizeof(*ids) * (got_rows + 1));
		bool *done = tg_calloc(got_rows + 1, sizeof(*done));
		for (size_t i = 0; i < got_rows; i++) {
			if (done[i])
				continue;
			const char *tenant = store_str(json_array_get(rows, i), "tenant_id");
			int n = 0;
			for (size_t k = i; k < got_rows; k++)
				if (!done[k] && !strcmp(store_str(json_array_get(rows, k), "tenant_id"), tenant)) {
					ids[n++] = store_str(json_array_get(rows, k), "id");
					done[k] = true;
				}
			struct store_reservation *got;
			struct tg_arena a;
			int ngot;
			tg_arena_init(&a);
			if (reservations_let_go(tenant, ids, n, &got, &ngot, &a, &err) < 0)
				log_warn("expired reservations not released", "tenant %s, %d of them: %s", tenant, n, err.detail);
			else
				released += ngot;
			tg_arena_release(&a);
		}
		free(ids);
		free(done);
		json_decref(rows);
	} while (tenant_id && got_rows == DUE_MAX);
	return released;
}

void duties_customer_gone(const char *tenant_id, const char *customer_id)
{
	struct policy_tenant *t = policy_registry_get(tenant_id);
	struct tg_error err;
	json_t *rows = NULL;
	struct tg_arena a;

	tg_arena_init(&a);
	/* its reservations: their holds (on its organisation's counters and wallet too) go now, not at their TTL */
	if (store_reservations_of(tenant_id, customer_id, &rows, &err) < 0) {
		log_warn("a deleted customer's reservations not read", "%s", err.detail);
	} else if (json_array_size(rows) > 0) {
		size_t n = json_array_size(rows), i;
		const char **ids = tg_arena_alloc(&a, sizeof(*ids) * (n + 1));
		struct store_reservation *got;
		int ngot;
		json_t *row;
		json_array_foreach(rows, i, row)
			ids[i] = store_str(row, "id");
		if (reservations_let_go(tenant_id, ids, (int)n, &got, &ngot, &a, &err) < 0)
			log_warn("a deleted customer's reservations not released", "%s", err.detail);
	}
	json_decref(rows);
	/* its live counters: quotas, requests quotas and its own rate limits (the wallet goes already) */
	if (t) {
		struct policy_counter *cs;
		int n = policy_customer_quotas(t, customer_id, policy_now(t, tg_now_ms()), true, &a, &cs);
		const char **keys = tg_arena_alloc(&a, sizeof(*keys) * (size_t)(n + 1));
		for (int i = 0; i < n; i++)
			keys[i] = hot_counter_key(&a, tenant_id, &cs[i]);
		hot_keys_forget(keys, n);
	}
	policy_tenant_unref(t);
	tg_arena_release(&a);
}

#define MAX_PERIODS_PER_PASS 48
#define PASS_BUDGET_US 250000

/* When each (tenant, duty) has work again, on the tenant's clock: a duty is not even looked at before.
 * Seeded from the progress rows at start, so seeing a tenant for the first time costs no query. */
static struct tg_map next_due = TG_MAP_INIT;
static struct tg_map progress = TG_MAP_INIT; /* "tenant|duty" → done_to at start-up */
static bool progress_loaded;

static void load_progress(void)
{
	json_t *rows, *row;
	struct tg_error err;
	size_t i;

	if (store_duty_progress_all(&rows, &err) < 0) {
		log_warn("duty progress not loaded; duties will read it one by one", "%s", err.detail);
		return;
	}
	json_array_foreach(rows, i, row) {
		char key[300];
		snprintf(key, sizeof(key), "%s|%s", store_str(row, "tenant_id"), store_str(row, "duty"));
		tg_map_put(&progress, key, (void *)(intptr_t)store_int(row, "ms", 0));
	}
	json_decref(rows);
	progress_loaded = true;
}

/* Does limit l apply to subject (a customer id, or "*" for the platform) as its own counter? */
static bool applies(const struct policy_tenant *t, const struct policy_limit *l, const char *subject,
		    const json_t *info, struct tg_arena *a)
{
	struct policy_subject s = {0};
	struct policy_counter *cs;
	int n;

	if (!strcmp(subject, "*"))
		return l->scope == SCOPE_PLATFORM;
	if (!info || l->scope == SCOPE_PLATFORM)
		return false;
	s.customer_id = subject;
	s.tier = store_str(info, "tier");
	n = policy_plan_all(t, &s, 0, a, &cs);
	for (int i = 0; i < n; i++)
		if (cs[i].limit == l && cs[i].subject_kind == SUBJECT_CUSTOMER)
			return true;
	return false;
}

static json_t *filter_json(const struct policy_limit *l)
{
	json_t *f = json_object();

	for (int i = 0; i < l->nfilter; i++)
		json_object_set_new(f, l->filter[i].key, json_string(l->filter[i].value));
	return f;
}

/* limit.reset: one finished period of a limit, for every subject that had usage, with its history row. */
static int close_limit(const struct policy_tenant *t, const void *arg, int64_t start, int64_t end, struct tg_error *err)
{
	const struct policy_limit *l = arg;
	json_t *f = filter_json(l), *rows = NULL, *infos = NULL, *row, *x;
	char *ftext = tg_json_dumps(f);
	struct store_array ids = {0};
	struct tg_map by_id = TG_MAP_INIT; /* customer id → its row of infos */
	struct tg_arena a;
	size_t i;
	int rc;

	tg_arena_init(&a);
	json_decref(f);
	rc = store_usage_by_subject(t->id, l->meter->id, start, end, ftext, (int)l->meter->agg, &rows, err);
	free(ftext);
	if (rc < 0)
		goto out;
	json_array_foreach(rows, i, row)
		if (strcmp(store_str(row, "subject"), "*") != 0)
			store_array_add(&ids, store_str(row, "subject"));
	if (ids.n && (rc = store_customers_info(t->id, store_array_text(&ids), &infos, err)) < 0)
		goto out;
	json_array_foreach(infos, i, x)
		tg_map_put(&by_id, store_str(x, "id"), x);
	json_array_foreach(rows, i, row) {
		const char *subject = store_str(row, "subject");
		const json_t *info = tg_map_get(&by_id, subject);
		bool written;
		if (!applies(t, l, subject, info, &a))
			continue;
		tg_fixed usage = store_get_usage(row, "value");
		if ((rc = store_period_close(t->id, l->id, subject, start, end, usage, l->limit, &written, err)) < 0)
			goto out;
		if (!written)
			continue;
		json_t *data = tg_json_obj("limit_id", json_string(l->id), "customer_id",
					   strcmp(subject, "*") ? json_string(subject) : json_null(), "meter",
					   json_string(l->meter->id), "period", json_string(policy_period_names[l->period]),
					   "period_start", tg_json_time(start), "period_end", tg_json_time(end), "usage",
					   tg_json_fixed(usage), "limit", tg_json_fixed(l->limit), NULL);
		rc = store_outbox_add(t->id, "limit.reset", data, NULL, NULL, err);
		json_decref(data);
		if (rc < 0)
			goto out;
	}
out:
	tg_map_release(&by_id, NULL);
	json_decref(rows);
	json_decref(infos);
	store_array_release(&ids);
	tg_arena_release(&a);
	return rc;
}

/* usage.summary: one per customer with usage on a finished UTC day (tenant clock). */
static int summarise_day(const struct policy_tenant *t, const void *arg, int64_t start, int64_t end,
			 struct tg_error *err)
{
	json_t *rows = NULL, *row, *usage = NULL;
	const char *current = NULL;
	char day[TG_TIME_BUFSZ];
	size_t i;
	int rc;

	(void)arg;
	tg_time_format(start, day);
	day[10] = '\0';
	if ((rc = store_usage_summary(t->id, start, end, &rows, err)) < 0)
		return rc;
	for (i = 0; i <= json_array_size(rows) && rc == 0; i++) {
		row = json_array_get(rows, i);
		const char *subject = row ? store_str(row, "subject") : NULL;
		if (current && (!subject || strcmp(subject, current) != 0)) {
			char key[300];
			json_t *data = tg_json_obj("customer_id", json_string(current), "date", json_string(day),
						   "period_start", tg_json_time(start), "period_end", tg_json_time(end),
						   "usage", usage, NULL);
			usage = NULL;
			snprintf(key, sizeof(key), "summary|%s|%s", current, day);
			rc = store_outbox_add(t->id, "usage.summary", data, key, NULL, err);
			json_decref(data);
		}
		if (!row)
			break;
		if (!current || strcmp(subject, current) != 0) {
			current = subject;
			usage = json_object();
		}
		json_object_set_new(usage, store_str(row, "meter_id"), tg_json_fixed(store_get_usage(row, "value")));
	}
	json_decref(usage);
	json_decref(rows);
	return rc;
}

typedef int (*close_fn)(const struct policy_tenant *, const void *, int64_t, int64_t, struct tg_error *);

/*
 * One duty of one tenant, under its advisory lock (so one instance runs it at a time), resuming from its
 * progress row: every finished period from there to now is closed, skipping straight over stretches
 * without usage. A duty never seen starts at the period its tenant or limit was created in.
 */
static int run_duty(const struct policy_tenant *t, const char *duty, enum policy_period period, const char *meter,
		    int64_t since_ms, close_fn close, const void *arg, struct tg_error *err)
{
	char key[300], lockname[320];
	int64_t now = policy_now(t, tg_now_ms()), upto = policy_period_start(period, now), done_to, first;
	bool locked, found;
	int rc;

	snprintf(key, sizeof(key), "%s|%s", t->id, duty);
	int64_t due = (int64_t)(intptr_t)tg_map_get(&next_due, key);
	if (!due && progress_loaded) {
		/* first sight here: from its progress (or its start) is there a finished period to close? */
		int64_t known = (int64_t)(intptr_t)tg_map_get(&progress, key);
		int64_t from = known ? known : policy_period_start(period, since_ms < now ? since_ms : now);
		if (from >= upto) {
			tg_map_put(&next_due, key, (void *)(intptr_t)policy_period_end(period, upto));
			return 0;
		}
	} else if (due > now) {
		return 0;
	}
	snprintf(lockname, sizeof(lockname), "duty|%s", key);
	if ((rc = store_begin(err)) < 0)
		return rc;
	if ((rc = store_try_xact_lock(lockname, &locked, err)) < 0 || !locked)
		goto end; /* another instance runs it now */
	if ((rc = store_duty_progress(t->id, duty, &done_to, &found, err)) < 0)
		goto end;
	if (!found)
		done_to = policy_period_start(period, since_ms < now ? since_ms : now);
	for (int k = 0; k < MAX_PERIODS_PER_PASS && done_to < upto; k++) {
		if ((rc = store_first_usage(t->id, meter, done_to, &first, err)) < 0)
			goto end;
		if (first < 0 || first >= upto) {
			done_to = upto; /* nothing to close before the current period */
			break;
		}
		if (first > done_to)
			done_to = policy_period_start(period, first);
		int64_t end = policy_period_end(period, done_to);
		if ((rc = close(t, arg, done_to, end, err)) < 0)
			goto end;
		done_to = end;
	}
	rc = store_duty_advance(t->id, duty, done_to, err);
end:
	if (rc == 0)
		rc = store_commit(err);
	if (rc < 0) {
		store_rollback();
		return rc;
	}
	/* done: look again when the current period ends; another instance on it: in a while; else next pass */
	tg_map_put(&next_due, key,
		   (void *)(intptr_t)(!locked ? now + 30000 : done_to >= upto ? policy_period_end(period, upto) : 1));
	return 0;
}

static void close_tenant(const char *tenant_id)
{
	struct policy_tenant *t = policy_registry_get(tenant_id);
	struct tg_error err;

	if (!t)
		return;
	for (int j = 0; j < t->nlimits; j++) {
		const struct policy_limit *l = &t->limits[j];
		char duty[200];
		if (l->kind != POLICY_QUOTA || l->period == PERIOD_ALL_TIME)
			continue;
		snprintf(duty, sizeof(duty), "reset:%s:%s", l->id, policy_period_names[l->period]);
		if (run_duty(t, duty, l->period, l->meter->id, l->created_ms ? l->created_ms : t->created_ms,
			     close_limit, l, &err) < 0)
			log_warn("period close failed", "tenant %s limit %s: %s", t->id, l->id, err.detail);
	}
	if (run_duty(t, "summary", PERIOD_DAY, NULL, t->created_ms, summarise_day, NULL, &err) < 0)
		log_warn("usage summary failed", "tenant %s: %s", t->id, err.detail);
	policy_tenant_unref(t);
}

static void free_ids(char **ids, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
}

void duties_close_periods(void)
{
	static size_t cursor;
	size_t nt, nc;
	char **changed = policy_registry_changed(&nc);
	int64_t started = tg_mono_us();

	/* tenants new or changed (a clock advanced, a limit added) first, whatever the others cost */
	for (size_t i = 0; i < nc; i++)
		close_tenant(changed[i]);
	free_ids(changed, nc);

	/* then a round robin within a time budget over a stable order: many tenants never starve the other
	 * duties, and every tenant comes round */
	char **tenants = policy_registry_tenants(&nt);
	for (size_t k = 0; k < nt && tg_mono_us() - started < PASS_BUDGET_US; k++) {
		size_t i = (cursor + k) % nt;
		close_tenant(tenants[i]);
		cursor = i + 1;
	}
	free_ids(tenants, nt);
}

static void sweep_idempotency(void)
{
	struct tg_error err;
	int64_t deleted = 0;

	if (store_idem_sweep(&deleted, &err) < 0)
		log_warn("idempotency sweep failed", "%s", err.detail);
	else if (deleted)
		log_debug("idempotency keys swept", "%lld", (long long)deleted);
}

/* Hourly rollups of hours that ended over an hour ago into their days (migration 0013): sweeps of passes
 * of COMPACT_CHUNK, each pass going on where the last stopped, within PASS_BUDGET_US a call (a sweep not
 * done goes on at the next call): a backlog (a first start after the upgrade) drains without holding the
 * other duties up. Every instance does it; they take disjoint rows. A new sweep starts each second while
 * there is work (the last sweep found some, or an hour has ended since), otherwise every
 * COMPACT_IDLE_MS, for rollups late events reopened (their usage is read right meanwhile: compacting
 * them only makes reading them cheaper). Only the duties thread calls it. */
#define COMPACT_CHUNK 2000
#define COMPACT_IDLE_MS 10000

int64_t duties_compact_rollups(void)
{
	static struct store_compact_key key;
	static int64_t last_ms, last_cutoff, found;
	static bool sweeping, busy = true;
	int64_t now = tg_now_ms(), cutoff = policy_period_start(PERIOD_HOUR, now) - INT64_C(3600000), total = 0;
	int64_t started = tg_mono_us(), taken, n;
	struct tg_error err;

	if (!sweeping) {
		if (!busy && cutoff == last_cutoff && now - last_ms < COMPACT_IDLE_MS)
			return 0;
		sweeping = true;
		found = 0;
		last_ms = now;
		last_cutoff = cutoff;
		store_compact_key_clear(&key);
	}
	do {
		if (store_rollups_compact(last_cutoff, COMPACT_CHUNK, &key, &taken, &n, &err) < 0) {
			log_warn("rollup compaction failed", "%s", err.detail);
			taken = 0;
			n = 0;
		}
		total += n;
		found += n;
		if (taken < COMPACT_CHUNK || n == 0) {
			sweeping = false;
			busy = found > 0;
			break;
		}
	} while (tg_mono_us() - started < PASS_BUDGET_US && !atomic_load(&duties_stopping));
	return total;
}

static void *duties_main(void *arg)
{
	struct tg_metric *expired = tg_counter("tollgate_reservations_expired_total",
					       "Reservations released by the worker at their TTL.", "");
	struct tg_metric *compacted = tg_counter("tollgate_rollups_compacted_total",
						 "Hourly usage rollups the worker added into their days.", "");
	int64_t last_sweep = 0, last_close = 0;

	(void)arg;
	pthread_setname_np(pthread_self(), "duties");
	load_progress();
	while (!atomic_load(&duties_stopping)) {
		int64_t started = tg_mono_us();
		tg_metric_add(expired, duties_expire_reservations(NULL));
		tg_metric_add(compacted, duties_compact_rollups());
		if (started - last_close >= INT64_C(1) * 1000000) {
			duties_close_periods();
			last_close = started;
		}
		if (started - last_sweep > INT64_C(600) * 1000000) {
			sweep_idempotency();
			last_sweep = started;
		}
		for (int i = 0; i < 10 && !atomic_load(&duties_stopping); i++)
			tg_wait_ms(100);
	}
	store_thread_end();
	hot_thread_end();
	return NULL;
}

int duties_start(void)
{
	atomic_store(&duties_stopping, false);
	if (pthread_create(&duties_thread, NULL, duties_main, NULL) != 0)
		return -1;
	duties_running = true;
	return 0;
}

void duties_stop(void)
{
	if (!duties_running)
		return;
	atomic_store(&duties_stopping, true);
	pthread_join(duties_thread, NULL);
	duties_running = false;
}

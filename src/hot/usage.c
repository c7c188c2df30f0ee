/* usage.c — committed usage into the live counters, and reservation releases (usage.lua). */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "tollgate/json.h"
#include "tollgate/map.h"
#include "tollgate/util.h"

/* usage.lua's entry kinds by mark rule: as is, again if rebuilt (a), undone if not rebuilt (r) */
static const char *const quota_kind[] = {[MARK_NONE] = "q", [MARK_APPLY_IF_REBUILT] = "qa",
					 [MARK_UNDO_IF_NOT_REBUILT] = "qr"};
static const char *const balance_kind[] = {[MARK_NONE] = "b", [MARK_APPLY_IF_REBUILT] = "ba",
					   [MARK_UNDO_IF_NOT_REBUILT] = "br"};

/* Releases of holds, counted per tenant in a few slots (tenants sharing a slot share a count). */
#define RELEASE_SLOTS 1024
static _Atomic uint64_t releases[RELEASE_SLOTS];

static _Atomic uint64_t *release_slot(const char *tenant_id)
{
	return &releases[tg_map_hash(tenant_id, strlen(tenant_id)) % RELEASE_SLOTS];
}

uint64_t hot_holds_released(const char *tenant_id)
{
	return atomic_load_explicit(release_slot(tenant_id), memory_order_acquire);
}

/* A latest meter's aggregation argument for usage.lua: "l", or "l:<ms>" with the value's instant, so that
 * a value sent after a later one does not replace it. */
static const char *latest_arg(struct tg_arena *a, int64_t at_ms)
{
	return at_ms > 0 ? tg_arena_printf(a, "l:%lld", (long long)at_ms) : "l";
}

int hot_apply_usage(const char *tenant_id, const struct policy_counter *cs, int n, int64_t now_ms,
		    const struct hot_balance_delta *bal, int nbal, const struct hot_release *rel, int nrel,
		    struct tg_arena *a, struct tg_error *err)
{
	struct hot_argv keys = {.a = a}, args = {.a = a};
	/* the keys PostgreSQL can rebuild, to drop if this update fails (see hot/journal.c) */
	struct hot_argv durable = {.a = a};
	int sent = 0;
	redisReply *r;

	hot_argv_push(&args, hot_i64(a, now_ms));
	hot_argv_push(&args, "0");
	for (int i = 0; i < n; i++) {
		const struct policy_counter *c = &cs[i];
		const struct policy_limit *l = c->limit;
		if (!c->subject || c->amount == 0)
			continue;
		hot_argv_push(&keys, hot_counter_key(a, tenant_id, c));
		if (hot_durable(c))
			hot_argv_push(&durable, keys.v[keys.n - 1]);
		if (l->kind == POLICY_QUOTA) {
			hot_argv_push(&args, quota_kind[c->mark_rule]);
			hot_argv_push(&args, hot_i64(a, c->amount));
			hot_argv_push(&args, c->mark_rule != MARK_NONE ? hot_i64(a, c->mark) : "0");
			hot_argv_push(&args, "");
			hot_argv_push(&args, l->meter->agg == AGG_MAX	 ? "m"
					     : l->meter->agg == AGG_LATEST
						 ? latest_arg(a, c->at_ms ? c->at_ms : c->mark_rule != MARK_NONE ? now_ms : 0)
									   : "s");
		} else if (l->algorithm == ALG_TOKEN_BUCKET) {
			hot_argv_push(&args, "tb");
			hot_argv_push(&args, hot_i64(a, c->amount));
			hot_argv_push(&args, hot_i64(a, l->burst));
			hot_argv_push(&args, tg_arena_printf(a, "%lld:%lld", (long long)l->limit, (long long)l->window_s * 1000));
			hot_argv_push(&args, "s");
		} else {
			hot_argv_push(&args, hot_sliding_log(l) ? "sl" : "sw");
			hot_argv_push(&args, hot_i64(a, c->amount));
			hot_argv_push(&args, hot_i64(a, l->window_s * 1000));
			hot_argv_push(&args, "");
			hot_argv_push(&args, "s");
		}
		sent++;
	}
	for (int i = 0; i < nbal; i++) {
		if ((!bal[i].owner && !bal[i].workflow_id) || bal[i].amount == 0)
			continue;
		if (bal[i].workflow_id) {
			hot_argv_push(&keys, hot_workflow_key(a, tenant_id, bal[i].workflow_id));
			hot_argv_push(&args, "w");
			hot_argv_push(&args, hot_i64(a, bal[i].amount));
			hot_argv_push(&args, "");
			hot_argv_push(&args, "");
			hot_argv_push(&args, "s");
			sent++;
			continue;
		}
		hot_argv_push(&keys, hot_balance_key(a, tenant_id, bal[i].owner));
		hot_argv_push(&durable, keys.v[keys.n - 1]);
		hot_argv_push(&args, balance_kind[bal[i].mark_rule]);
		hot_argv_push(&args, hot_i64(a, bal[i].amount));
		hot_argv_push(&args, bal[i].mark_rule != MARK_NONE ? hot_i64(a, bal[i].mark) : "");
		hot_argv_push(&args, "");
		hot_argv_push(&args, "s");
		sent++;
	}
	args.v[1] = hot_i64(a, sent);
	args.len[1] = strlen(args.v[1]);
	hot_argv_push(&args, hot_i64(a, nrel));
	for (int j = 0; j < nrel; j++) {
		const char *key = hot_hold_key(a, rel[j].key, now_ms); /* where the hold is now */
		hot_argv_push(&keys, key);
		hot_argv_push(&durable, key);
		hot_argv_push(&args, hot_i64(a, rel[j].amount));
	}
	if (sent == 0 && nrel == 0)
		return 0;
	r = hot_sync_script(&hot_script_usage, keys.n, keys.v, args.n, args.v, NULL, err);
	if (r && r->type == REDIS_REPLY_ERROR) {
		tg_fail(err, TG_EUNAVAIL, "redis_error", NULL, "Redis refused the usage update");
		tg_error_detail(err, "%s", r->str);
		freeReplyObject(r);
		r = NULL;
	}
	if (!r) {
		/* whether it ran or not, these counters may now disagree with PostgreSQL: they are dropped
		 * and rebuilt once Redis answers */
		hot_journal_suspect(durable.v, durable.n);
		return err->err;
	}
	freeReplyObject(r);
	if (nrel > 0)
		atomic_fetch_add_explicit(release_slot(tenant_id), 1, memory_order_release);
	return 0;
}

int hot_balance(const char *tenant_id, const char *owner, enum hot_balance_op op, tg_fixed amount,
		const struct hot_balance *init, struct hot_balance *ret, struct tg_error *err)
{
	struct tg_arena a;
	redisReply *r;
	int rc;

	tg_arena_init(&a);
	const char *keys[] = {hot_balance_key(&a, tenant_id, owner)};
	const char *args[] = {op == HOT_DEBIT ? "d" : op == HOT_CREDIT ? "c" : "m", hot_i64(&a, amount),
			      init ? tg_arena_printf(&a, "%lld:%lld:%lld", (long long)init->init_balance,
						     (long long)init->init_minimum, (long long)init->init_reserved)
				   : ""};
	r = hot_sync_script(&hot_script_balance, 1, keys, 3, args, NULL, err);
	tg_arena_release(&a);
	if (!r)
		return err->err;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
		tg_fail(err, TG_EUNAVAIL, "redis_error", NULL, "Redis refused the balance update");
		tg_error_detail(err, "%s", r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
		freeReplyObject(r);
		return err->err;
	}
	rc = (int)hot_reply_i64(r, 0);
	memset(ret, 0, sizeof(*ret));
	ret->balance = hot_reply_i64(r, 1);
	ret->reserved = hot_reply_i64(r, 2);
	ret->minimum = hot_reply_i64(r, 3);
	ret->allowed = rc == 1;
	freeReplyObject(r);
	return rc < 0 ? HOT_BALANCE_MISSING : rc;
}

int hot_init_counters(const char *tenant_id, const struct policy_counter *cs, int n, int64_t now_ms,
		      const struct hot_balance *bal, struct tg_arena *a, struct tg_error *err)
{
	struct hot_argv keys = {.a = a}, args = {.a = a};
	int sent = 0;
	redisReply *r;

	hot_argv_push(&args, hot_i64(a, now_ms));
	hot_argv_push(&args, "0");
	for (int i = 0; i < n; i++) {
		const struct policy_counter *c = &cs[i];
		if (!c->subject || !c->has_init)
			continue;
		int64_t ttl = c->period_end_ms == INT64_MAX ? 0 : c->period_end_ms - now_ms + INT64_C(86400000);
		hot_argv_push(&keys, hot_counter_key(a, tenant_id, c));
		hot_argv_push(&args, "qi");
		hot_argv_push(&args, hot_i64(a, c->init));
		hot_argv_push(&args, hot_i64(a, ttl > 0 ? ttl : 86400000));
		hot_argv_push(&args, hot_i64(a, c->init_reserved));
		hot_argv_push(&args, c->limit->meter->agg == AGG_LATEST ? latest_arg(a, c->init_at_ms) : "s");
		sent++;
	}
	if (bal && bal->has_init) {
		hot_argv_push(&keys, hot_balance_key(a, tenant_id, bal->owner));
		hot_argv_push(&args, "bi");
		hot_argv_push(&args, hot_i64(a, bal->init_balance));
		hot_argv_push(&args, hot_i64(a, bal->init_minimum));
		hot_argv_push(&args, hot_i64(a, bal->init_reserved));
		hot_argv_push(&args, "s");
		sent++;
	}
	if (sent == 0)
		return 0;
	args.v[1] = hot_i64(a, sent);
	args.len[1] = strlen(args.v[1]);
	hot_argv_push(&args, "0");
	r = hot_sync_script(&hot_script_usage, keys.n, keys.v, args.n, args.v, NULL, err);
	if (!r)
		return err->err;
	freeReplyObject(r);
	return 0;
}

/* Drop counters now (they are rebuilt from PostgreSQL at their next use); if Redis does not answer, once it
 * does (the journal's suspects). */
void hot_keys_forget(const char *const *keys, int n)
{
	const char **argv;
	struct tg_error err;
	redisReply *r;

	if (n <= 0)
		return;
	argv = tg_malloc(sizeof(*argv) * (size_t)(n + 1));
	argv[0] = "DEL";
	memcpy(argv + 1, keys, sizeof(*argv) * (size_t)n);
	r = hot_sync_argv(n + 1, argv, NULL, &err);
	free(argv);
	if (r && r->type != REDIS_REPLY_ERROR) {
		freeReplyObject(r);
		return;
	}
	if (r)
		freeReplyObject(r);
	hot_journal_suspect(keys, n);
}

int hot_balance_forget(const char *tenant_id, const char *owner, struct tg_error *err)
{
	struct tg_arena a;
	redisReply *r;

	tg_arena_init(&a);
	const char *argv[] = {"DEL", hot_balance_key(&a, tenant_id, owner)};
	r = hot_sync_argv(2, argv, NULL, err);
	tg_arena_release(&a);
	if (!r)
		return err->err;
	freeReplyObject(r);
	return 0;
}

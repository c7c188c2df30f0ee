/* check.c — a check's counters for check.lua (keys and argument here); the checks of one loop pass share one
 * EVALSHA (see hot_async_batch), and each is tested-then-consumed atomically by the script. */
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
	char num[TG_I64_BUFSZ];
	size_t n = tg_fmt_i64(v, num);

	return tg_arena_strndup(a, num, n);
}

/* The concatenation of parts (NULL-terminated list) in the arena: key names are made on every check. */
static const char *cat(struct tg_arena *a, const char *const *parts)
{
	size_t len[12], total = 0;
	int n = 0;

	for (; parts[n]; n++)
		total += len[n] = strlen(parts[n]);
	char *out = tg_arena_alloc(a, total + 1), *p = out;
	for (int i = 0; i < n; i++) {
		memcpy(p, parts[i], len[i]);
		p += len[i];
	}
	return out; /* zeroed by the arena: NUL-terminated */
}

/* Keys: every key of one customer shares its hash tag; ip/key/platform subjects use '|', never in ids. */
const char *hot_counter_key(struct tg_arena *a, const char *tenant, const struct policy_counter *c)
{
	const struct policy_limit *l = c->limit;
	const char *sep = ":", *subject = c->subject, *id = l->key_id ? l->key_id : l->id;
	char num[TG_I64_BUFSZ];

	switch (c->subject_kind) {
	case SUBJECT_CUSTOMER:
	case SUBJECT_ORG:
		break;
	case SUBJECT_PLATFORM:
		sep = "|*";
		subject = "";
		break;
	case SUBJECT_IP:
		sep = "|ip|";
		break;
	case SUBJECT_KEY:
		sep = "|key|";
		break;
	}
	if (l->kind == POLICY_QUOTA) {
		tg_fmt_i64(c->period_start_ms / 1000, num);
		return cat(a, (const char *[]){"tg:{", tenant, sep, subject, "}:q:", id, ":",
						policy_period_names[l->period], ":", num, NULL});
	}
	if (l->algorithm == ALG_TOKEN_BUCKET)
		return cat(a, (const char *[]){"tg:{", tenant, sep, subject, "}:tb:", id, NULL});
	tg_fmt_i64(l->window_s, num);
	return cat(a, (const char *[]){"tg:{", tenant, sep, subject, "}:sw:", id, ":", num, NULL});
}

/* A reservation's hold on a quota counter lives in the counter of the period at hand: a hold made at 23:59
 * for a TTL of ten minutes holds in the next day's counter too (a rebuilt counter counts the holds made in
 * any period: store_reservations_held), so it is let go from the counter of the period when it goes.
 * (Holds used to stay in the period they were made in, and the next period's counter started without them:
 * a hard quota could be passed by reserving across midnight.) Other keys come back as they are. */
const char *hot_hold_key(struct tg_arena *a, const char *key, int64_t now_ms)
{
	const char *q = strstr(key, "}:q:"), *last = strrchr(key, ':'), *name;
	char num[TG_I64_BUFSZ];

	if (!q || !last || last <= q + 4)
		return key;
	for (name = last - 1; name > q + 3 && *name != ':'; name--)
		;
	for (int p = 0; policy_period_names[p]; p++) {
		size_t n = strlen(policy_period_names[p]);
		if ((size_t)(last - name - 1) != n || strncmp(name + 1, policy_period_names[p], n) != 0)
			continue;
		int64_t start = policy_period_start((enum policy_period)p, now_ms) / 1000, made;
		/* forward only: a clock a little behind the one that made the hold must not take it from the
		 * period before (another hold's), leaving it in its own */
		if (!tg_parse_i64(last + 1, INT64_MIN, INT64_MAX, &made) || made >= start)
			return key;
		tg_fmt_i64(start, num);
		size_t head = (size_t)(last - key) + 1, tail = strlen(num);
		char *out = tg_arena_alloc(a, head + tail + 1);
		memcpy(out, key, head);
		memcpy(out + head, num, tail + 1);
		return out;
	}
	return key;
}

/* The part of a quota counter's key before its period's start, which holds match in any period. */
size_t hot_hold_prefix_len(const char *key)
{
	const char *last = strrchr(key, ':');

	return strstr(key, "}:q:") && last ? (size_t)(last - key) + 1 : 0;
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

bool hot_sliding_log(const struct policy_limit *l)
{
	return l->limit <= SLIDING_LOG_MAX;
}

/* A counter's flags in check.lua: a sum, tested there with arithmetic (cheaper in Lua than string.find). */
enum {
	FLAG_CONSUME = 1,
	FLAG_RESERVE = 2,
	FLAG_ENFORCED = 4,
	FLAG_MAX = 8,
	FLAG_LATEST = 16,
	FLAG_COST = 32,
	FLAG_JOURNAL = 64,
};
/* Counter kinds in check.lua. */
enum { KIND_QUOTA = 1, KIND_TOKEN_BUCKET, KIND_SLIDING_LOG, KIND_SLIDING_WINDOW, KIND_WORKFLOW, KIND_BALANCE };

/* check.lua's one argument, read there with struct.unpack: little-endian int64 ("i8"), bytes ("B"),
 * NUL-terminated strings ("s"); exact quantities as two int64, hi * 1e9 + lo with 0 <= lo < 1e9. */
static void put_u8(struct tg_buf *b, int v)
{
	tg_buf_addc(b, (char)(unsigned char)v);
}

static void put_i64(struct tg_buf *b, int64_t v)
{
	uint64_t u = (uint64_t)v;
	char x[8];

	for (int i = 0; i < 8; i++)
		x[i] = (char)(u >> (8 * i) & 0xff);
	tg_buf_add(b, x, sizeof(x));
}

static void put_exact(struct tg_buf *b, int64_t v)
{
	int64_t hi = v / 1000000000, lo = v % 1000000000;

	if (lo < 0) {
		lo += 1000000000;
		hi--;
	}
	put_i64(b, hi);
	put_i64(b, lo);
}

static void put_str(struct tg_buf *b, const char *s)
{
	tg_buf_add(b, s ? s : "", s ? strlen(s) + 1 : 1);
}

static _Thread_local struct tg_buf pack_buf;

bool hot_durable(const struct policy_counter *c)
{
	return c->subject && c->limit->kind == POLICY_QUOTA && strcmp(c->limit->meter->id, POLICY_REQUESTS) != 0;
}

/* A counter whose change by this check PostgreSQL records only afterwards (consumed or reserved): check.lua
 * notes its key in this instance's journal when it moves it (see hot/journal.c). */
static bool journaled(const struct policy_counter *c)
{
	return (c->consume || c->reserve) && hot_durable(c);
}

/* The journal's clock (real time, whatever the tenant's), read once and only by a check that journals. */
static int64_t wall_ms(int64_t *wall)
{
	if (*wall == 0)
		*wall = tg_now_ms();
	return *wall;
}

/* Build KEYS and this check's part of check.lua's argument (in a buffer of this thread, valid until the next
 * build); counters without a subject (listed without state) are skipped. Returns how many counters were sent. */
static int build(struct hot_check *hc, struct tg_arena *a, struct hot_argv *keys, const char **arg, size_t *arglen)
{
	struct tg_buf *b = &pack_buf;
	bool moves = !(hc->flags & HOT_DRY_RUN); /* a dry run moves nothing */
	const char *journal = moves ? hot_journal_key() : NULL;
	const char *bal_key = hc->bal ? hot_balance_key(a, hc->tenant_id, hc->bal->owner) : NULL;
	int64_t wall = 0;
	size_t n_at;
	int n = 0;

	/* the check moves counters the journal covers (hc->journals: if its reply is lost they are dropped);
	 * it notes them unless this thread did lately (then they are all noted again, which keeps them) */
	hc->journal_epoch = hot_journal_epoch(); /* before the fresh tests */
	hc->journals = moves && bal_key && (hc->bal->consume || hc->bal->reserve);
	bool journaling = journal && hc->journals && !hot_journal_fresh(bal_key, wall_ms(&wall));
	keys->a = a;
	for (int i = 0; i < hc->n; i++) {
		if (!hc->cs[i].subject)
			continue;
		hot_argv_push(keys, hot_counter_key(a, hc->tenant_id, &hc->cs[i]));
		if (moves && journaled(&hc->cs[i])) {
			hc->journals = true;
			journaling |= journal && !hot_journal_fresh(keys->v[keys->n - 1], wall_ms(&wall));
		}
	}
	hc->journal_ms = journaling ? wall : 0;
	tg_buf_reset(b);
	tg_buf_add(b, "\0\0\0\0", 4); /* the length of the rest, set below */
	put_i64(b, hc->now_ms);
	put_u8(b, (hc->flags & HOT_DRY_RUN ? 1 : 0) | (hc->flags & HOT_RESERVE ? 2 : 0) | (journaling ? 4 : 0));
	n_at = b->len;
	put_u8(b, 0); /* n, set below */
	if (journaling)
		put_i64(b, wall);
	for (int i = 0; i < hc->n; i++) {
		struct policy_counter *c = &hc->cs[i];
		const struct policy_limit *l = c->limit;
		int f = 0;

		if (!c->subject)
			continue;
		if (c->consume)
			f |= FLAG_CONSUME;
		if (c->reserve)
			f |= FLAG_RESERVE;
		if (l->enforcement == ENF_HARD)
			f |= FLAG_ENFORCED;
		if (journaling && journaled(c))
			f |= FLAG_JOURNAL;
		if (l->kind == POLICY_QUOTA && l->meter->agg == AGG_MAX)
			f |= FLAG_MAX;
		else if (l->kind == POLICY_QUOTA && l->meter->agg == AGG_LATEST)
			f |= FLAG_LATEST;
		if (l->kind == POLICY_QUOTA) {
			int64_t ttl = c->period_end_ms == INT64_MAX ? 0 : c->period_end_ms - hc->now_ms + DAY_MS;
			put_u8(b, KIND_QUOTA);
			put_u8(b, f);
			put_exact(b, l->limit);
			put_exact(b, c->amount);
			put_i64(b, ttl > 0 ? ttl : DAY_MS);
			put_u8(b, c->has_init);
			if (c->has_init) {
				put_exact(b, c->init);
				put_exact(b, c->init_reserved);
				if (f & FLAG_LATEST)
					put_i64(b, c->init_at_ms);
			}
		} else if (l->algorithm == ALG_TOKEN_BUCKET) {
			put_u8(b, KIND_TOKEN_BUCKET);
			put_u8(b, f);
			put_i64(b, l->burst);
			put_i64(b, c->amount);
			put_i64(b, l->limit);
			put_i64(b, l->window_s * 1000);
		} else {
			put_u8(b, hot_sliding_log(l) ? KIND_SLIDING_LOG : KIND_SLIDING_WINDOW);
			put_u8(b, f);
			put_i64(b, l->limit);
			put_i64(b, c->amount);
			put_i64(b, l->window_s * 1000);
		}
		n++;
	}
	if (hc->wf) {
		struct hot_workflow *w = hc->wf;
		hot_argv_push(keys, hot_workflow_key(a, hc->tenant_id, w->id));
		put_u8(b, KIND_WORKFLOW);
		put_u8(b, FLAG_CONSUME | FLAG_ENFORCED | (w->record_cost ? FLAG_COST : 0));
		put_i64(b, w->cost);
		put_i64(b, w->max_calls);
		put_i64(b, w->max_depth);
		put_i64(b, w->max_duration_ms);
		put_i64(b, w->max_duplicates);
		put_i64(b, w->max_cost);
		put_i64(b, w->depth);
		if (w->tool && w->args_hash) {
			/* a repeat is the same tool with the same arguments: a step that names no tool or no
			 * args_hash repeats nothing (it used to count, as a second max_tool_calls) */
			tg_buf_adds(b, w->tool);
			tg_buf_addc(b, '|');
			put_str(b, w->args_hash);
		} else {
			put_str(b, "");
		}
		n++;
	}
	if (hc->bal) {
		struct hot_balance *hb = hc->bal;
		hot_argv_push(keys, bal_key);
		put_u8(b, KIND_BALANCE);
		put_u8(b, FLAG_ENFORCED | (hb->consume ? FLAG_CONSUME : 0) | (hb->reserve ? FLAG_RESERVE : 0) |
			      (journaling && (hb->consume || hb->reserve) ? FLAG_JOURNAL : 0));
		put_exact(b, hb->cost);
		put_u8(b, hb->has_init);
		if (hb->has_init) {
			put_exact(b, hb->init_balance);
			put_exact(b, hb->init_minimum);
			put_exact(b, hb->init_reserved);
		}
		n++;
	}
	if (journaling)
		hot_argv_push(keys, journal); /* the check's last key */
	b->buf[n_at] = (char)n; /* at most a few dozen counters (limits per check are bounded) */
	uint32_t rest = (uint32_t)(b->len - 4);
	for (int i = 0; i < 4; i++)
		b->buf[i] = (char)(rest >> (8 * i) & 0xff);
	*arg = b->buf;
	*arglen = b->len;
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

/* A little-endian int64 of check.lua's reply. */
static int64_t get_i64(const unsigned char *p)
{
	uint64_t u = 0;

	for (int i = 7; i >= 0; i--)
		u = u << 8 | p[i];
	return (int64_t)u;
}

#define REPLY_PER_COUNTER (1 + 3 * 8)

/* How long a token bucket takes to drain this much at rate per window (ms, rounded up), exactly. */
static int64_t drain_ms(tg_i128 amount, int64_t window_ms, int64_t rate)
{
	if (amount <= 0 || rate <= 0)
		return 0;
	tg_i128 ms = ((tg_i128)amount * window_ms + rate - 1) / rate;
	return ms > INT64_MAX / 2 ? INT64_MAX / 2 : (int64_t)ms; /* far beyond any window, and now + it fits */
}

static void parse_missing(struct hot_check *hc, const redisReply *r)
{
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
}

/* Counter k's fits and values, from either form of the reply (binary string, or the table used when a
 * value is too large for a double). */
struct reply_reader {
	const redisReply *r;
	bool table;
};

static void reply_counter(const struct reply_reader *rr, int k, bool *fits, int64_t v[3])
{
	if (rr->table) {
		size_t at = 1 + (size_t)k * 4;
		*fits = hot_reply_i64(rr->r, at) == 1;
		for (int j = 0; j < 3; j++)
			v[j] = hot_reply_i64(rr->r, at + 1 + (size_t)j);
		return;
	}
	const unsigned char *p = (const unsigned char *)rr->r->str + 1 + (size_t)k * REPLY_PER_COUNTER;
	*fits = p[0] == 1;
	for (int j = 0; j < 3; j++)
		v[j] = get_i64(p + 1 + 8 * j);
}

static void parse(struct hot_check *hc, const redisReply *r)
{
	struct reply_reader rr = {.r = r};
	bool ok;
	int k = 0;

	if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 && hot_reply_i64(r, 0) < 0) {
		parse_missing(hc, r);
		return;
	}
	/* a balance adds its rebuild mark at the end */
	if (r && r->type == REDIS_REPLY_STRING)
		ok = r->len == 1 + (size_t)hc->sent * REPLY_PER_COUNTER + (hc->bal ? 8 : 0);
	else
		ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 + (size_t)hc->sent * 4 + (hc->bal ? 1 : 0);
	if (!ok) {
		if (r && r->type == REDIS_REPLY_ERROR)
			log_warn("check script failed", "%s", r->str);
		else
			log_warn("check script failed", "unexpected reply (type %d)", r ? r->type : -1);
		hc->status = HOT_ERROR;
		return;
	}
	rr.table = r->type == REDIS_REPLY_ARRAY;
	hc->allowed = rr.table ? hot_reply_i64(r, 0) == 1 : (signed char)r->str[0] == 1;
	for (int i = 0; i < hc->n; i++) {
		struct policy_counter *c = &hc->cs[i];
		const struct policy_limit *l = c->limit;
		int64_t v[3];
		bool fits;
		if (!c->subject)
			continue;
		reply_counter(&rr, k++, &fits, v);
		int64_t a = v[0], b = v[1], d = v[2];
		c->allowed = fits;
		c->missing = false;
		if (l->kind == POLICY_QUOTA) {
			c->used = a;
			c->reserved = b;
			c->mark = d;
			c->remaining = l->limit - a - b > 0 ? l->limit - a - b : 0;
			c->reset_ms = c->period_end_ms;
			c->retry_ms = c->allowed || c->amount > l->limit || c->period_end_ms == INT64_MAX
					      ? -1
					      : c->period_end_ms - hc->now_ms;
		} else if (l->algorithm == ALG_TOKEN_BUCKET) {
			/* the script sends the level (what is used) after this check; the rest follows here, where
			 * it costs less than in Lua: empty again, and room for this amount, at limit per window */
			int64_t level = a, win_ms = l->window_s * 1000;
			c->remaining = l->burst - level > 0 ? l->burst - level : 0;
			c->used = l->burst - c->remaining;
			c->reserved = 0;
			c->reset_ms = hc->now_ms + drain_ms(level, win_ms, l->limit);
			c->retry_ms = c->allowed || c->amount > l->burst
					      ? -1
					      : drain_ms((tg_i128)level + c->amount - l->burst, win_ms, l->limit);
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
		int64_t v[3];
		reply_counter(&rr, k++, &w->allowed, v);
		w->code = (int)v[0];
		w->calls = v[1];
		w->spent = v[2];
	}
	if (hc->bal) {
		struct hot_balance *b = hc->bal;
		int64_t v[3];
		reply_counter(&rr, k++, &b->allowed, v);
		b->balance = v[0];
		b->reserved = v[1];
		b->minimum = v[2];
		b->mark = rr.table ? hot_reply_i64(r, r->elements - 1) : get_i64((const unsigned char *)r->str + r->len - 8);
		b->missing = false;
	}
	hc->status = HOT_DONE;
}

/* The keys of what the check journals (keys: what build() sent, in its order). */
static int durable_keys(const struct hot_check *hc, const struct hot_argv *keys, const char **out)
{
	int k = 0, n = 0;

	for (int i = 0; i < hc->n; i++) {
		if (!hc->cs[i].subject)
			continue;
		if (journaled(&hc->cs[i]))
			out[n++] = keys->v[k];
		k++;
	}
	if (hc->wf)
		k++;
	if (hc->bal && (hc->bal->consume || hc->bal->reserve))
		out[n++] = keys->v[k];
	return n;
}

/* After the script: an allowed check noted its keys in the journal (this thread skips them for a minute).
 * One that failed or whose reply was lost may still have moved them (the script may have run, and its
 * writes stand even if it fails afterwards): they are dropped once Redis answers, and rebuilt from
 * PostgreSQL (hot/journal.c). */
static void after_script(const struct hot_check *hc, const struct hot_argv *keys)
{
	const char **durable;
	int n;

	if (!hc->journals || (hc->status != HOT_ERROR && !(hc->journal_ms && hc->status == HOT_DONE && hc->allowed)))
		return;
	durable = tg_arena_alloc(keys->a, sizeof(*durable) * (size_t)keys->n);
	n = durable_keys(hc, keys, durable);
	if (hc->status == HOT_ERROR)
		hot_journal_suspect(durable, n);
	else
		for (int i = 0; i < n; i++)
			hot_journal_noted(durable[i], hc->journal_ms, hc->journal_epoch);
}

struct pending_check {
	struct hot_check *hc;
	struct hot_argv keys;
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
	after_script(p->hc, &p->keys);
	p->done(p->arg);
}

int hot_check_async(struct hot_check *hc, struct tg_arena *arena, void (*done)(void *arg), void *arg)
{
	struct hot_argv keys = {0};
	struct pending_check *p = tg_arena_alloc(arena, sizeof(*p));
	const char *blob;
	size_t len;

	hc->sent = build(hc, arena, &keys, &blob, &len);
	p->hc = hc;
	p->keys = keys;
	p->done = done;
	p->arg = arg;
	return hot_async_batch(&hot_script_check, keys.n, keys.v, keys.len, blob, len, on_reply, p);
}

int hot_check_sync(struct hot_check *hc, struct tg_arena *arena, struct tg_error *err)
{
	struct hot_argv keys = {0};
	const char *blob;
	size_t len;
	redisReply *r;

	hc->sent = build(hc, arena, &keys, &blob, &len);
	r = hot_sync_script(&hot_script_check, keys.n, keys.v, 1, &blob, &len, err);
	/* a batch of one: its reply is the first element */
	parse(hc, r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 ? r->element[0] : r);
	after_script(hc, &keys);
	if (r)
		freeReplyObject(r);
	return hc->status;
}

/* decide.c — from counter states to the decision, binding limit, Retry-After and the limits[] objects. */
#include <math.h>
#include <string.h>

#include "tollgate/json.h"
#include "tollgate/policy.h"

static bool enforcing(const struct policy_counter *c)
{
	return c->limit->enforcement == ENF_HARD;
}

/* Room left, for "the one with the least room left": how many more checks of this one's size would fit
 * (remaining / amount), which compares counters of different meters and sizes. A fraction of the limit
 * used to be compared instead, so two fresh limits tied at 1.0 and the first listed was named, a daily
 * 1,000 over a monthly 10 (reviewed 2026-11-23); ties now go to the smaller fraction left. */
static double room(const struct policy_counter *c)
{
	double left = tg_fixed_to_double(c->remaining);

	if (c->limit->limit <= 0 || left <= 0)
		return 0;
	return c->amount > 0 ? left / tg_fixed_to_double(c->amount) : HUGE_VAL; /* no end to checks of 0 */
}

static double room_fraction(const struct policy_counter *c)
{
	return c->limit->limit <= 0 ? 0 : tg_fixed_to_double(c->remaining) / tg_fixed_to_double(c->limit->limit);
}

static bool tighter(const struct policy_counter *c, const struct policy_counter *than)
{
	double a = room(c), b = room(than);

	return a < b || (a == b && room_fraction(c) < room_fraction(than));
}

void policy_decide(const struct policy_counter *cs, int n, int64_t now_ms, struct policy_decision *d)
{
	const struct policy_counter *deny = NULL, *tightest = NULL;

	(void)now_ms;
	memset(d, 0, sizeof(*d));
	d->allowed = true;
	d->decision = DECISION_ALLOW;
	d->retry_after_s = -1;
	for (int i = 0; i < n; i++) {
		const struct policy_counter *c = &cs[i];
		if (!c->subject)
			continue; /* listed without state */
		if (!c->allowed && enforcing(c)) {
			/* the binding denial is the one that takes longest to clear ("never" longest of all) */
			if (!deny || (deny->retry_ms >= 0 && (c->retry_ms < 0 || c->retry_ms > deny->retry_ms)))
				deny = c;
			continue;
		}
		if (!c->allowed && c->limit->enforcement == ENF_SOFT) {
			d->decision = DECISION_WARN;
			if (d->nwarnings < (int)(sizeof(d->warnings) / sizeof(d->warnings[0])))
				d->warnings[d->nwarnings++] = c->limit->id;
		}
		if (c->limit->enforcement != ENF_SHADOW && (!tightest || tighter(c, tightest)))
			tightest = c;
	}
	if (deny) {
		d->allowed = false;
		d->decision = DECISION_DENY;
		d->binding = deny;
		d->code = deny->limit->kind == POLICY_RATE ? "rate_limited" : "quota_exceeded";
		if (deny->retry_ms >= 0)
			d->retry_after_s = deny->retry_ms / 1000 + (deny->retry_ms % 1000 ? 1 : 0);
		if (d->retry_after_s == 0)
			d->retry_after_s = 1; /* never tell a client to retry at once */
		return;
	}
	d->binding = tightest;
}

static const char *subject_name(enum policy_subject_kind k)
{
	static const char *const names[] = {"customer", "organization", "platform", "ip", "key"};
	return names[k];
}

void policy_limit_prepare_reply(struct policy_limit *l)
{
	struct tg_buf b = TG_BUF_INIT;
	struct tg_jw w;

	tg_jw_init(&w, &b);
	tg_jw_begin_object(&w);
	tg_jw_key(&w, "id");
	tg_jw_str(&w, l->id);
	tg_jw_key(&w, "kind");
	tg_jw_str(&w, policy_kind_names[l->kind]);
	tg_jw_key(&w, "meter");
	tg_jw_str(&w, l->meter ? l->meter->id : NULL);
	tg_jw_key(&w, "scope");
	tg_jw_str(&w, policy_scope_names[l->scope]);
	if (l->kind == POLICY_QUOTA) {
		tg_jw_key(&w, "period");
		tg_jw_str(&w, policy_period_names[l->period]);
	} else {
		tg_jw_key(&w, "window");
		tg_jw_int(&w, l->window_s);
		tg_jw_key(&w, "algorithm");
		tg_jw_str(&w, policy_algorithm_names[l->algorithm]);
		tg_jw_key(&w, "per");
		tg_jw_str(&w, policy_per_names[l->per]);
	}
	tg_jw_key(&w, "subject");
	l->reply_head = tg_buf_detach(&b, &l->reply_head_len);

	tg_buf_adds(&b, ",\"limit\":");
	char num[TG_FIXED_BUFSZ];
	tg_buf_add(&b, num, tg_fixed_format(l->limit, num));
	l->reply_limit = tg_buf_detach(&b, &l->reply_limit_len);

	tg_buf_adds(&b, ",\"enforcement\":\"");
	tg_buf_adds(&b, policy_enforcement_names[l->enforcement]);
	tg_buf_adds(&b, l->enforcement == ENF_SHADOW ? "\",\"shadow\":true}" : "\"}");
	l->reply_tail = tg_buf_detach(&b, &l->reply_tail_len);
}

static void add_fixed(struct tg_buf *b, const char *key, size_t keylen, tg_fixed v)
{
	char num[TG_FIXED_BUFSZ];

	tg_buf_add(b, key, keylen);
	tg_buf_add(b, num, tg_fixed_format(v, num));
}

#define ADD_LIT(b, s) tg_buf_add((b), (s), sizeof(s) - 1)
#define ADD_FIXED(b, key, v) add_fixed((b), (key), sizeof(key) - 1, (v))

/* One limits[] object: the limit's constant parts (made at parse time) around the counter's state. */
void policy_counter_write(struct tg_jw *w, const struct policy_counter *c, int64_t now_ms)
{
	const struct policy_limit *l = c->limit;
	struct tg_buf *b = w->b;
	const char *subject = subject_name(c->subject_kind);

	(void)now_ms;
	tg_jw_raw(w, l->reply_head, l->reply_head_len);
	tg_buf_grow(b, 256);
	tg_buf_addc(b, '"');
	tg_buf_adds(b, subject);
	tg_buf_addc(b, '"');
	tg_buf_add(b, l->reply_limit, l->reply_limit_len);
	if (c->subject) {
		ADD_FIXED(b, ",\"used\":", c->used);
		ADD_FIXED(b, ",\"reserved\":", c->reserved);
		ADD_FIXED(b, ",\"remaining\":", c->remaining);
		ADD_LIT(b, ",\"resets_at\":");
		if (c->reset_ms > 0 && c->reset_ms < INT64_MAX) {
			char t[TG_TIME_BUFSZ];
			size_t n = tg_time_format(c->reset_ms, t);
			tg_buf_addc(b, '"');
			tg_buf_add(b, t, n);
			tg_buf_addc(b, '"');
		} else {
			ADD_LIT(b, "null");
		}
		if (c->allowed)
			ADD_LIT(b, ",\"exceeded\":false");
		else
			ADD_LIT(b, ",\"exceeded\":true");
	}
	tg_buf_add(b, l->reply_tail, l->reply_tail_len);
}

json_t *policy_counter_json(const struct policy_counter *c, int64_t now_ms)
{
	struct tg_buf b = TG_BUF_INIT;
	struct tg_jw w;
	struct tg_error err;
	json_t *o;

	tg_jw_init(&w, &b);
	policy_counter_write(&w, c, now_ms);
	o = tg_json_parse(b.buf, b.len, true, &err);
	tg_buf_release(&b);
	return o;
}

void policy_ratelimit(const struct policy_counter *c, int64_t now_ms, struct policy_ratelimit *rl)
{
	const struct policy_limit *l = c->limit;

	rl->limit = l->limit; /* q per w: for a token bucket, the refill per window (burst is how much at once) */
	rl->remaining = c->remaining;
	rl->reset_s = 0;
	if (c->reset_ms > now_ms && c->reset_ms < INT64_MAX) {
		int64_t ms = c->reset_ms - now_ms;
		rl->reset_s = ms / 1000 + (ms % 1000 ? 1 : 0);
	}
	rl->window_s = l->kind == POLICY_RATE ? l->window_s : policy_period_seconds(l->period, now_ms);
}

bool policy_event_value(const struct policy_meter *m, const json_t *properties, tg_fixed *ret)
{
	json_t *v;

	if (m->agg == AGG_COUNT) {
		*ret = TG_FIXED_SCALE;
		return true;
	}
	v = json_object_get(properties, m->property);
	if (!v || tg_json_get_fixed(v, ret) != TG_FIXED_OK)
		return false;
	return true;
}

bool policy_price(const struct policy_meter *m, const struct policy_dim *dims, int ndims, tg_fixed *ret)
{
	if (!m->has_price)
		return false;
	for (int i = 0; i < m->nprices; i++)
		for (int j = 0; j < ndims; j++)
			if (!strcmp(dims[j].key, m->prices[i].dim) && !strcmp(dims[j].value, m->prices[i].value)) {
				*ret = m->prices[i].price;
				return true;
			}
	*ret = m->price_default;
	return true;
}

int policy_cost(const struct policy_meter *m, tg_fixed amount, const struct policy_dim *dims, int ndims,
		tg_fixed *ret)
{
	tg_fixed price;

	*ret = 0;
	if (!policy_price(m, dims, ndims, &price))
		return 0;
	return tg_fixed_mul(amount, price, ret);
}

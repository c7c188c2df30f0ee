/* usage.c — usage reads (a customer's live limits, time series, CSV) and reservation release. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "handlers.h"
#include "tollgate/api.h"
#include "tollgate/hot.h"
#include "tollgate/json.h"
#include "tollgate/policy.h"
#include "tollgate/store.h"
#include "tollgate/worker.h"

/* Resolve a customer for reads (no auto-creation): 404 when unknown. */
static int subject(struct tg_req *req, const char *id, struct policy_subject *s)
{
	json_t *row;
	int rc = store_customer_resolve(req->principal.tenant_id, id, false, &row, &req->err);

	if (rc < 0)
		return rc;
	if (!row)
		return api_not_found(req, "customer", id);
	memset(s, 0, sizeof(*s));
	s->customer_id = id;
	s->tier = tg_arena_strdup(&req->arena, store_str(row, "tier"));
	s->parent_id = tg_arena_strdup(&req->arena, store_str(row, "parent_id"));
	s->parent_tier = tg_arena_strdup(&req->arena, store_str(row, "parent_tier"));
	s->balance_owner = store_is_true(row, "has_balance") ? id
			   : store_is_true(row, "parent_has_balance") ? s->parent_id : NULL;
	json_decref(row);
	return 0;
}

/* Every limit that applies to a customer, with live state read by a dry run (nothing is consumed). */
int api_customers_usage(struct tg_req *req)
{
	struct policy_tenant *t;
	struct policy_subject s;
	struct policy_counter *cs;
	struct hot_check hc = {0};
	const char *id;
	json_t *limits;
	int n, rc;

	if (api_path_id(req, 0, &id) < 0)
		return api_not_found(req, "customer", req->params[0]);
	if ((rc = api_query_none(req)) < 0)
		return rc;
	if (!(t = api_tenant(req)))
		return req->err.err;
	if ((rc = subject(req, id, &s)) < 0)
		goto out;
	hc.now_ms = policy_now(t, tg_now_ms());
	n = policy_plan_all(t, &s, hc.now_ms, &req->arena, &cs);
	hc.tenant_id = req->principal.tenant_id;
	hc.cs = cs;
	hc.n = n;
	hc.flags = HOT_DRY_RUN;
	if (n > 0 && api_check_sync(&hc, &req->arena, &req->err) == HOT_ERROR) {
		rc = req->err.err ? req->err.err
				  : tg_fail(&req->err, TG_EUNAVAIL, "redis_unavailable", NULL, "live usage is unavailable; retry");
		goto out;
	}
	limits = json_array();
	for (int i = 0; i < n; i++) {
		/* per-ip and per-key limits have no state of one customer: listed without it */
		if (cs[i].subject_kind == SUBJECT_IP || cs[i].subject_kind == SUBJECT_KEY)
			cs[i].subject = NULL;
		json_array_append_new(limits, policy_counter_json(&cs[i], hc.now_ms));
	}
	tg_req_reply(req, 200, tg_json_obj("customer_id", json_string(id), "tier", tg_json_str(s.tier), "organization_id",
					    tg_json_str(s.parent_id), "limits", limits, "balance", api_balance_json(req, s.balance_owner ? s.balance_owner : id), NULL));
	rc = 0;
out:
	policy_tenant_unref(t);
	return rc;
}

/* ---- Accept (RFC 9110 §12.5.1) ---- */

/* How much an Accept header wants one media type: the q-value of the most specific range that matches it
 * and where in the list that range stands. */
struct accept_match {
	int q;    /* thousandths, 0 to 1000; 0: not acceptable (or no range matched) */
	int rank; /* 0: no range matched; 1: the wildcard for every type; 2: its type's wildcard; 3: type/subtype */
	int pos;  /* the matching range's place in the list */
};

static void trim(const char **s, const char **e)
{
	while (*s < *e && (**s == ' ' || **s == '\t'))
		(*s)++;
	while (*e > *s && ((*e)[-1] == ' ' || (*e)[-1] == '\t'))
		(*e)--;
}

/* Media types and ranges compare case-insensitively. */
static bool span_is(const char *s, const char *e, const char *word)
{
	size_t n = strlen(word);

	return (size_t)(e - s) == n && strncasecmp(s, word, n) == 0;
}

/* A qvalue ("0", "0.5", "1.000"): 0 to 1000 thousandths, or -1 when malformed. */
static int qvalue(const char *s, const char *e)
{
	int q, scale = 100;

	if (s == e || (*s != '0' && *s != '1'))
		return -1;
	q = (*s - '0') * 1000;
	if (++s == e)
		return q;
	if (*s++ != '.' || e - s > 3)
		return -1;
	for (; s < e; s++, scale /= 10) {
		if (*s < '0' || *s > '9')
			return -1;
		q += (*s - '0') * scale;
	}
	return q <= 1000 ? q : -1;
}

/* The q parameter among a range's parameters (";q=0.5;..." up to e): 1000 when absent, -1 when malformed. */
static int range_q(const char *params, const char *e)
{
	int q = 1000;

	while (params && params < e) {
		const char *s = params + 1, *pe = memchr(s, ';', (size_t)(e - s));
		const char *ve = pe ? pe : e;
		trim(&s, &ve);
		if (ve - s >= 2 && (*s == 'q' || *s == 'Q') && s[1] == '=')
			q = qvalue(s + 2, ve);
		params = pe;
	}
	return q;
}

/* How specifically the range s..e names type/sub: 3 for itself ("text/csv"), 2 for its type's wildcard, 1 for
 * the wildcard of every type; 0 when it does not name it. */
static int range_rank(const char *s, const char *e, const char *type, const char *sub)
{
	const char *slash = memchr(s, '/', (size_t)(e - s));

	if (!slash)
		return 0;
	if (span_is(s, slash, "*"))
		return span_is(slash + 1, e, "*") ? 1 : 0;
	if (!span_is(s, slash, type))
		return 0;
	return span_is(slash + 1, e, "*") ? 2 : span_is(slash + 1, e, sub) ? 3 : 0;
}

static struct accept_match accept_match(const char *accept, const char *type, const char *sub)
{
	struct accept_match best = {0, 0, 0};

	for (int pos = 0; *accept; pos++) {
		const char *s = accept, *end = accept + strcspn(accept, ",");
		const char *params = memchr(s, ';', (size_t)(end - s)), *e = params ? params : end;
		accept = *end ? end + 1 : end;
		trim(&s, &e);
		int rank = range_rank(s, e, type, sub), q = range_q(params, end);
		if (rank > best.rank && q >= 0) /* the most specific range decides; a malformed one counts for nothing */
			best = (struct accept_match){q, rank, pos};
	}
	return best;
}

/* CSV when asked by format=csv, else when Accept prefers text/csv to application/json: a higher q, or the
 * same q listed first. Without an Accept header, with the wildcard alone or with neither type acceptable: JSON. */
static bool wants_csv(struct tg_req *req)
{
	const char *format = tg_req_query(req, "format");
	const char *accept = tg_req_header(req, "Accept");

	if (format)
		return strcmp(format, "csv") == 0;
	if (!accept)
		return false;
	struct accept_match csv = accept_match(accept, "text", "csv"), json = accept_match(accept, "application", "json");
	return csv.q > 0 && (csv.q > json.q || (csv.q == json.q && csv.pos < json.pos));
}

static void csv_field(struct tg_buf *b, const char *s)
{
	bool quote = strpbrk(s, ",\"\r\n") != NULL;

	if (!quote) {
		tg_buf_adds(b, s);
		return;
	}
	tg_buf_addc(b, '"');
	for (; *s; s++) {
		if (*s == '"')
			tg_buf_addc(b, '"');
		tg_buf_addc(b, *s);
	}
	tg_buf_addc(b, '"');
}

static void reply_csv(struct tg_req *req, json_t *rows, const char **group, int ngroup)
{
	struct tg_buf b = TG_BUF_INIT;
	size_t i;
	json_t *row;

	tg_buf_adds(&b, "start,end");
	for (int g = 0; g < ngroup; g++) {
		tg_buf_addc(&b, ',');
		csv_field(&b, group[g]);
	}
	tg_buf_adds(&b, ",value\r\n");
	json_array_foreach(rows, i, row) {
		char num[TG_FIXED_BUFSZ];
		tg_buf_addf(&b, "%s,%s", store_str(row, "start"), store_str(row, "end"));
		for (int g = 0; g < ngroup; g++) {
			const char *v = json_string_value(json_object_get(json_object_get(row, "dimensions"), group[g]));
			tg_buf_addc(&b, ',');
			csv_field(&b, v ? v : "");
		}
		tg_fixed_format(store_get_usage(row, "value"), num);
		tg_buf_addf(&b, ",%s\r\n", num);
	}
	tg_req_reply_raw(req, 200, "text/csv; charset=utf-8", b.buf, b.len);
	tg_buf_release(&b);
}

/* group_by=a,b: dimensions of the meter's group_by, each once, separated by single commas (the openapi
 * pattern ^[^,]+(,[^,]+)*$ rules out "", "a,,b", ",a" and "a,"). */
static int group_by_param(struct tg_req *req, const struct policy_meter *m, const char *gb,
			  const char *group[POLICY_MAX_DIMS], int *ngroup)
{
	char *copy = tg_arena_strdup(&req->arena, gb), *next;

	for (char *k = copy; k; k = next) {
		bool known = false;
		if ((next = strchr(k, ',')))
			*next++ = '\0';
		if (!k[0])
			return api_bad(req, "group_by", "'group_by' lists dimensions separated by single commas");
		for (int g = 0; g < m->ngroup; g++)
			known |= strcmp(m->group_by[g], k) == 0;
		if (!known)
			return api_bad(req, "group_by", "'%s' is not one of meter '%s' group_by dimensions", k, m->id);
		for (int g = 0; g < *ngroup; g++)
			if (strcmp(group[g], k) == 0)
				return api_bad(req, "group_by", "'group_by' lists '%s' twice", k);
		group[(*ngroup)++] = k; /* at most m->ngroup <= POLICY_MAX_DIMS: each known, none twice */
	}
	return 0;
}

int api_usage_series(struct tg_req *req)
{
	static const char *const q[] = {"meter", "customer_id", "group_by", "granularity", "from", "to", "format", NULL};
	static const char *const grains[] = {"hour", "day", "month", NULL};
	const char *meter = NULL, *customer = NULL, *gb = tg_req_query(req, "group_by");
	const char *grain = tg_req_query(req, "granularity"), *format = tg_req_query(req, "format");
	const char *group[POLICY_MAX_DIMS];
	int ngroup = 0;
	int64_t to = tg_now_ms(), from;
	bool has_from, has_to;
	struct policy_tenant *t;
	struct store_array ga = {0};
	json_t *rows = NULL;
	int rc;

	if ((rc = api_query_only(req, q)) < 0 || (rc = api_query_id(req, "meter", &meter)) < 0 ||
	    (rc = api_query_id(req, "customer_id", &customer)) < 0)
		return rc;
	if (!meter)
		return tg_fail(&req->err, TG_EINVAL, "missing_parameter", "meter", "'meter' is required");
	if (format && strcmp(format, "csv") != 0 && strcmp(format, "json") != 0)
		return api_bad(req, "format", "'format' must be csv or json");
	if (!grain)
		grain = "day";
	bool ok = false;
	for (int i = 0; grains[i]; i++)
		ok |= strcmp(grain, grains[i]) == 0;
	if (!ok)
		return api_bad(req, "granularity", "'granularity' must be hour, day or month");
	if (!(t = api_tenant(req)))
		return req->err.err;
	const struct policy_meter *m = policy_meter_find(t, meter);
	if (!m || m == &t->requests) {
		policy_tenant_unref(t);
		return api_bad(req, "meter", m ? "usage series exist for event meters, not for requests" : "no meter '%s'", meter);
	}
	if (gb && (rc = group_by_param(req, m, gb, group, &ngroup)) < 0) {
		policy_tenant_unref(t);
		return rc;
	}
	int agg = (int)m->agg;
	to = policy_now(t, tg_now_ms()); /* a test-mode tenant's series end at its clock */
	policy_tenant_unref(t);
	if ((rc = api_query_time(req, "to", &to, &has_to)) < 0)
		return rc;
	from = to - (strcmp(grain, "hour") == 0 ? INT64_C(86400000) : strcmp(grain, "day") == 0 ? INT64_C(30) * 86400000
											      : INT64_C(365) * 86400000);
	if ((rc = api_query_time(req, "from", &from, &has_from)) < 0)
		return rc;
	if (from >= to)
		return api_bad(req, "from", "'from' must be before 'to'");
	/* whole buckets: from the start of the one holding `from` to the end of the one holding the instant
	 * before `to` (an event at 18:00:59 is in the 18:00 hour whatever minute `from` names) */
	enum policy_period bucket = grain[0] == 'h' ? PERIOD_HOUR : grain[0] == 'd' ? PERIOD_DAY : PERIOD_MONTH;
	from = policy_period_start(bucket, from);
	to = policy_period_end(bucket, policy_period_start(bucket, to - 1));
	for (int g = 0; g < ngroup; g++)
		store_array_add(&ga, group[g]);
	rc = store_usage_series(req->principal.tenant_id, customer ? customer : "*", meter, grain, from, to,
				store_array_text(&ga), agg, &rows, &req->err);
	store_array_release(&ga);
	if (rc < 0)
		return rc;
	size_t i;
	json_t *row;
	json_array_foreach(rows, i, row) /* a bucket past the largest quantity: that quantity, as a number */
		json_object_set_new(row, "value", tg_json_fixed(store_get_usage(row, "value")));
	if (wants_csv(req))
		reply_csv(req, rows, group, ngroup);
	else
		tg_req_reply(req, 200, tg_json_obj("meter", json_string(meter), "customer_id", tg_json_str(customer),
						    "granularity", json_string(grain), "data", json_incref(rows), NULL));
	json_decref(rows);
	return 0;
}

int api_reservations_release(struct tg_req *req)
{
	const char *id = req->nparams ? req->params[0] : "";
	struct store_reservation *got;
	int ngot, rc;

	if (strncmp(id, "rsv_", 4) != 0 || !tg_id_valid(id, strlen(id)))
		return api_not_found(req, "reservation", id);
	if ((rc = reservations_let_go(req->principal.tenant_id, &id, 1, &got, &ngot, &req->arena, &req->err)) < 0)
		return rc;
	if (ngot == 0)
		return api_not_found(req, "reservation", id); /* settled, released, expired or never made */
	tg_req_reply(req, 200, tg_json_obj("id", json_string(id), "customer_id", json_string(got[0].customer_id),
					    "released", json_true(), NULL));
	return 0;
}

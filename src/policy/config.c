/* config.c — validating meters and limits, and compiling a tenant's configuration into a snapshot. */
#include <stdio.h>
#include <string.h>

#include "tollgate/json.h"
#include "tollgate/log.h"
#include "tollgate/map.h"
#include "tollgate/policy.h"
#include "internal.h"

#define MAX_WINDOW_S (31 * 86400)

/* ---- meters ---- */

static char *dup_or_null(const char *s)
{
	return s ? tg_strdup(s) : NULL;
}

void policy_meter_release(struct policy_meter *m)
{
	free(m->id);
	free(m->event_type);
	free(m->property);
	for (int i = 0; i < m->ngroup; i++)
		free(m->group_by[i]);
	free(m->group_by);
	for (int i = 0; i < m->nprices; i++) {
		free((char *)m->prices[i].dim);
		free((char *)m->prices[i].value);
	}
	free(m->prices);
	json_decref(m->json);
	memset(m, 0, sizeof(*m));
}

static int parse_price(const json_t *price, struct policy_meter *m, struct tg_error *err)
{
	static const char *const fields[] = {"default", "by", NULL};
	json_t *by = NULL;
	const char *dim;
	json_t *values;
	int rc;

	if (!json_is_object(price))
		return tg_jf_bad(err, NULL, "price", "'price' must be an object {\"default\", \"by\"}");
	if ((rc = tg_jf_only(price, "price", fields, err)) < 0 ||
	    (rc = tg_jf_fixed(price, "price", "default", false, &m->price_default, NULL, err)) < 0 ||
	    (rc = tg_jf_object(price, "price", "by", false, &by, err)) < 0)
		return rc;
	if (m->price_default < 0)
		return tg_jf_bad(err, "price", "default", "'default' must not be negative");
	m->has_price = true;
	if (!by)
		return 0;
	json_object_foreach(by, dim, values) {
		const char *val;
		json_t *p;
		char prefix[160];
		snprintf(prefix, sizeof(prefix), "price.by.%s", dim);
		if (!json_is_object(values))
			return tg_jf_bad(err, "price.by", dim, "'%s' must map dimension values to prices", dim);
		json_object_foreach(values, val, p) {
			tg_fixed f;
			if ((rc = tg_jf_fixed(values, prefix, val, true, &f, NULL, err)) < 0)
				return rc;
			if (f < 0)
				return tg_jf_bad(err, prefix, val, "a price must not be negative");
			if (m->nprices >= 256)
				return tg_jf_bad(err, NULL, "price", "at most 256 prices per meter");
			m->prices = tg_realloc(m->prices, sizeof(*m->prices) * (size_t)(m->nprices + 1));
			m->prices[m->nprices].dim = tg_strdup(dim);
			m->prices[m->nprices].value = tg_strdup(val);
			m->prices[m->nprices].price = f;
			m->nprices++;
		}
	}
	return 0;
}

int policy_meter_parse(const json_t *spec, struct policy_meter *m, struct tg_error *err)
{
	static const char *const fields[] = {"id", "event_type", "aggregation", "property", "group_by", "price",
					     "created_at", "updated_at", NULL};
	const char *id = NULL, *type = NULL, *prop = NULL;
	int agg = 0;
	json_t *group = NULL, *price;
	int rc;

	memset(m, 0, sizeof(*m));
	if ((rc = tg_jf_only(spec, NULL, fields, err)) < 0 || (rc = tg_jf_id(spec, NULL, "id", true, false, &id, err)) < 0 ||
	    (rc = tg_jf_str(spec, NULL, "event_type", true, false, 200, &type, err)) < 0 ||
	    (rc = tg_jf_enum(spec, NULL, "aggregation", true, policy_agg_names, &agg, NULL, err)) < 0 ||
	    (rc = tg_jf_str(spec, NULL, "property", false, true, 200, &prop, err)) < 0 ||
	    (rc = tg_jf_array(spec, NULL, "group_by", false, &group, err)) < 0)
		return rc;
	if (strcmp(id, POLICY_REQUESTS) == 0)
		return tg_fail(err, TG_EINVAL, "reserved_id", "id", "'requests' is the built-in meter and cannot be redefined");
	if (!type[0])
		return tg_jf_bad(err, NULL, "event_type", "'event_type' must not be empty");
	if (agg != AGG_COUNT && (!prop || !prop[0]))
		return tg_fail(err, TG_EINVAL, "missing_parameter", "property",
			       "'property' is required unless the aggregation is count");
	m->id = tg_strdup(id);
	m->event_type = tg_strdup(type);
	m->property = agg == AGG_COUNT ? NULL : dup_or_null(prop);
	m->agg = (enum policy_agg)agg;
	if (group) {
		size_t i;
		json_t *g;
		if (json_array_size(group) > POLICY_MAX_DIMS) {
			policy_meter_release(m);
			return tg_jf_bad(err, NULL, "group_by", "at most %d dimensions", POLICY_MAX_DIMS);
		}
		m->group_by = tg_calloc(json_array_size(group) + 1, sizeof(char *));
		json_array_foreach(group, i, g) {
			if (!json_is_string(g) || tg_json_is_number(g) || !tg_id_valid(json_string_value(g), json_string_length(g))) {
				policy_meter_release(m);
				return tg_jf_bad(err, NULL, "group_by", "'group_by' must list dimension names (ids)");
			}
			if (m->property && strcmp(json_string_value(g), m->property) == 0) {
				policy_meter_release(m);
				return tg_jf_bad(err, NULL, "group_by", "the numeric property cannot be a dimension");
			}
			for (int j = 0; j < m->ngroup; j++)
				if (strcmp(m->group_by[j], json_string_value(g)) == 0) {
					policy_meter_release(m);
					return tg_jf_bad(err, NULL, "group_by", "'group_by' lists '%s' twice",
							 json_string_value(g));
				}
			m->group_by[m->ngroup++] = tg_strdup(json_string_value(g));
		}
	}
	price = json_object_get(spec, "price");
	if (price && !json_is_null(price) && (rc = parse_price(price, m, err)) < 0) {
		policy_meter_release(m);
		return rc;
	}
	m->json = policy_meter_json(m);
	return 0;
}

json_t *policy_meter_json(const struct policy_meter *m)
{
	json_t *group = json_array(), *o;

	for (int i = 0; i < m->ngroup; i++)
		json_array_append_new(group, json_string(m->group_by[i]));
	o = tg_json_obj("id", json_string(m->id), "event_type", tg_json_str(m->event_type), "aggregation",
			json_string(policy_agg_names[m->agg]), "property", tg_json_str(m->property), "group_by", group,
			NULL);
	if (m->has_price) {
		json_t *by = json_object();
		for (int i = 0; i < m->nprices; i++) {
			json_t *d = json_object_get(by, m->prices[i].dim);
			if (!d) {
				d = json_object();
				json_object_set_new(by, m->prices[i].dim, d);
			}
			json_object_set_new(d, m->prices[i].value, tg_json_fixed(m->prices[i].price));
		}
		json_object_set_new(o, "price", tg_json_obj("default", tg_json_fixed(m->price_default), "by", by, NULL));
	} else {
		json_object_set_new(o, "price", json_null());
	}
	return o;
}

/* ---- limits ---- */

void policy_limit_release(struct policy_limit *l)
{
	free(l->id);
	free(l->tier);
	free(l->customer_id);
	for (int i = 0; i < l->nfilter; i++) {
		free((char *)l->filter[i].key);
		free((char *)l->filter[i].value);
	}
	free(l->filter);
	for (int i = 0; i < l->nfallback; i++) {
		free((char *)l->fallback[i].key);
		free((char *)l->fallback[i].value);
	}
	free(l->fallback);
	free(l->slot);
	free(l->key_id);
	json_decref(l->json);
	free(l->reply_head);
	free(l->reply_limit);
	free(l->reply_tail);
	memset(l, 0, sizeof(*l));
}

static int dim_cmp(const void *a, const void *b)
{
	return strcmp(((const struct policy_dim *)a)->key, ((const struct policy_dim *)b)->key);
}

/* An object of string → string (filter, fallback dimensions), sorted by key. */
static int parse_dims(const json_t *obj, const char *prefix, const char *name, struct policy_dim **ret, int *n,
		      struct tg_error *err)
{
	const char *k;
	json_t *v;
	char param[128];

	snprintf(param, sizeof(param), "%s%s%s", prefix ? prefix : "", prefix ? "." : "", name);
	if (!json_is_object(obj))
		return tg_jf_bad(err, prefix, name, "'%s' must be an object of dimension values", name);
	if (json_object_size(obj) > POLICY_MAX_DIMS)
		return tg_jf_bad(err, prefix, name, "at most %d dimensions", POLICY_MAX_DIMS);
	*ret = tg_calloc(json_object_size(obj) + 1, sizeof(**ret));
	*n = 0;
	json_object_foreach((json_t *)obj, k, v) {
		if (!tg_id_valid(k, strlen(k)) || !json_is_string(v) || tg_json_is_number(v) ||
		    json_string_length(v) == 0 || json_string_length(v) > 256)
			return tg_jf_bad(err, param, k, "dimension '%s' must be a non-empty string value", k);
		(*ret)[*n].key = tg_strdup(k);
		(*ret)[*n].value = tg_strdup(json_string_value(v));
		(*n)++;
	}
	qsort(*ret, (size_t)*n, sizeof(**ret), dim_cmp);
	return 0;
}

/* Does the fallback leave a check this limit denied still inside its filter? The re-check carries the
 * request's dimensions (which matched the filter) with the fallback's over them: it escapes only if the
 * fallback changes the value of a filtered dimension. */
static bool fallback_loops(const struct policy_limit *l)
{
	for (int i = 0; i < l->nfilter; i++)
		for (int j = 0; j < l->nfallback; j++)
			if (strcmp(l->fallback[j].key, l->filter[i].key) == 0 &&
			    strcmp(l->fallback[j].value, l->filter[i].value) != 0)
				return false;
	return true;
}

static void build_slot(struct policy_limit *l)
{
	struct tg_buf b = TG_BUF_INIT;

	tg_buf_addf(&b, "%s|%s|", policy_kind_names[l->kind], l->meter ? l->meter->id : "");
	if (l->kind == POLICY_QUOTA)
		tg_buf_addf(&b, "%s|", policy_period_names[l->period]);
	else if (l->kind == POLICY_RATE)
		tg_buf_addf(&b, "%lld|%s|", (long long)l->window_s, policy_per_names[l->per]);
	for (int i = 0; i < l->nfilter; i++)
		tg_buf_addf(&b, "%s=%s,", l->filter[i].key, l->filter[i].value);
	l->slot = tg_buf_detach(&b, NULL);
}

/* A limit's counters are named by its id and a tag of what they count and of the limit's making, so that
 * a counter outlives neither a change of meter or filter nor the limit itself: a limit deleted and made
 * again under its id, or given another meter, starts from what PostgreSQL holds (a quota's rollups), not
 * from a counter its former self kept in Redis (reviewed 2026-11-23: a PATCH of a quota's meter kept
 * counting the old meter's usage; a rate limit made again went on from the old one's state). */
void policy_limit_key_id(struct policy_limit *l, const char *created_at)
{
	char made[TG_I64_BUFSZ];
	uint64_t h;
	struct tg_buf b = TG_BUF_INIT;

	tg_fmt_i64(l->created_ms, made);
	tg_buf_addf(&b, "%s|%s|%s|%s", l->slot, made, created_at ? created_at : "",
		    l->kind == POLICY_RATE ? policy_algorithm_names[l->algorithm] : "");
	h = tg_map_hash(b.buf, b.len);
	tg_buf_reset(&b);
	tg_buf_addf(&b, "%s~%08x", l->id, (unsigned)(h ^ (h >> 32)));
	free(l->key_id);
	l->key_id = tg_buf_detach(&b, NULL);
}

static int parse_on_exceed(const json_t *v, struct policy_limit *l, struct tg_error *err)
{
	static const char *const fields[] = {"action", "dimensions", NULL};
	static const char *const actions[] = {"deny", "fallback", NULL};
	int action = 0, rc;
	json_t *dims = NULL;

	if (!json_is_object(v))
		return tg_jf_bad(err, NULL, "on_exceed", "'on_exceed' must be an object with an action");
	if ((rc = tg_jf_only(v, "on_exceed", fields, err)) < 0 ||
	    (rc = tg_jf_enum(v, "on_exceed", "action", true, actions, &action, NULL, err)) < 0 ||
	    (rc = tg_jf_object(v, "on_exceed", "dimensions", action == 1, &dims, err)) < 0)
		return rc;
	if (action == 0) {
		if (dims)
			return tg_jf_bad(err, "on_exceed", "dimensions", "dimensions are only for the fallback action");
		return 0;
	}
	if (json_object_size(dims) == 0)
		return tg_jf_bad(err, "on_exceed", "dimensions", "a fallback needs at least one dimension");
	return parse_dims(dims, "on_exceed", "dimensions", &l->fallback, &l->nfallback, err);
}

static const char *const common_fields[] = {"id", "kind", "scope", "tier", "customer_id", "meter", "limit",
					    "enforcement", "thresholds", "filter", "fail_mode", "on_exceed",
					    "created_at", "updated_at", NULL};

static bool field_allowed(const char *key, const char *const *extra)
{
	for (const char *const *f = common_fields; *f; f++)
		if (!strcmp(*f, key))
			return true;
	for (const char *const *f = extra; *f; f++)
		if (!strcmp(*f, key))
			return true;
	return false;
}

int policy_limit_parse(const json_t *spec, const struct policy_tenant *t, struct policy_limit *l,
		       struct tg_error *err)
{
	static const char *const quota_fields[] = {"period", NULL};
	static const char *const rate_fields[] = {"window", "algorithm", "burst", "per", NULL};
	static const char *const wf_fields[] = {"max_tool_calls", "max_depth", "max_cost", "max_duration",
						"duplicate_threshold", NULL};
	static const char *const fail_modes[] = {"closed", "open", NULL};
	const char *id = NULL, *tier = NULL, *customer = NULL, *meter = NULL;
	int kind, scope = SCOPE_DEFAULT, period = 0, enf = ENF_HARD, alg = ALG_TOKEN_BUCKET, per = PER_CUSTOMER,
	    fail = 0;
	bool has_per = false, has_burst = false, present;
	json_t *thr = NULL, *filter = NULL, *on_exceed;
	const char *key;
	json_t *v;
	int rc;

	memset(l, 0, sizeof(*l));
	if ((rc = tg_jf_id(spec, NULL, "id", true, false, &id, err)) < 0 ||
	    (rc = tg_jf_enum(spec, NULL, "kind", true, policy_kind_names, &kind, NULL, err)) < 0)
		return rc;
	const char *const *extra = kind == POLICY_QUOTA ? quota_fields : kind == POLICY_RATE ? rate_fields : wf_fields;
	json_object_foreach((json_t *)spec, key, v) {
		if (!field_allowed(key, extra))
			return tg_fail(err, TG_EINVAL, "unknown_parameter", key, "'%s' is not a field of a %s limit", key,
				       policy_kind_names[kind]);
	}
	l->id = tg_strdup(id);
	l->kind = (enum policy_kind)kind;
	if ((rc = tg_jf_enum(spec, NULL, "scope", false, policy_scope_names, &scope, NULL, err)) < 0 ||
	    (rc = tg_jf_id(spec, NULL, "tier", scope == SCOPE_TIER, true, &tier, err)) < 0 ||
	    (rc = tg_jf_id(spec, NULL, "customer_id", scope == SCOPE_CUSTOMER, true, &customer, err)) < 0 ||
	    (rc = tg_jf_enum(spec, NULL, "fail_mode", false, fail_modes, &fail, NULL, err)) < 0)
		goto fail;
	l->scope = (enum policy_scope)scope;
	if (scope != SCOPE_TIER && tier) {
		rc = tg_jf_bad(err, NULL, "tier", "'tier' is only for scope tier");
		goto fail;
	}
	if (scope != SCOPE_CUSTOMER && customer) {
		rc = tg_jf_bad(err, NULL, "customer_id", "'customer_id' is only for scope customer");
		goto fail;
	}
	l->tier = dup_or_null(tier);
	l->customer_id = dup_or_null(customer);
	l->fail_open = fail == 1;

	if (kind == POLICY_WORKFLOW) {
		bool any = false;
		if (json_object_get(spec, "meter") || json_object_get(spec, "limit") || json_object_get(spec, "filter") ||
		    json_object_get(spec, "thresholds")) {
			rc = tg_fail(err, TG_EINVAL, "invalid_parameter",
				     json_object_get(spec, "meter") ? "meter" : json_object_get(spec, "limit") ? "limit"
									 : json_object_get(spec, "filter") ? "filter" : "thresholds",
				     "workflow guards take max_tool_calls, max_depth, max_cost, max_duration, duplicate_threshold");
			goto fail;
		}
		if ((rc = tg_jf_int(spec, NULL, "max_tool_calls", false, 1, 1000000, &l->max_tool_calls, &present, err)) < 0)
			goto fail;
		any |= present;
		if ((rc = tg_jf_int(spec, NULL, "max_depth", false, 1, 10000, &l->max_depth, &present, err)) < 0)
			goto fail;
		any |= present;
		if ((rc = tg_jf_int(spec, NULL, "max_duration", false, 1, 31 * 86400, &l->max_duration_s, &present, err)) < 0)
			goto fail;
		any |= present;
		if ((rc = tg_jf_int(spec, NULL, "duplicate_threshold", false, 1, 1000000, &l->duplicate_threshold, &present,
				    err)) < 0)
			goto fail;
		any |= present;
		if ((rc = tg_jf_fixed(spec, NULL, "max_cost", false, &l->max_cost, &present, err)) < 0)
			goto fail;
		if (present && l->max_cost <= 0) {
			rc = tg_jf_bad(err, NULL, "max_cost", "'max_cost' must be positive");
			goto fail;
		}
		any |= present;
		if (!any) {
			rc = tg_fail(err, TG_EINVAL, "missing_parameter", "max_tool_calls",
				     "a workflow guard needs at least one of max_tool_calls, max_depth, max_cost, "
				     "max_duration, duplicate_threshold");
			goto fail;
		}
		if (!l->max_duration_s)
			l->max_duration_s = 86400; /* a workflow's state lives at most a day unless told */
		/* accepted and ignored (a tripped guard always denies), but only as one of its values */
		if ((rc = tg_jf_enum(spec, NULL, "enforcement", false, policy_enforcement_names, &enf, NULL, err)) < 0)
			goto fail;
	} else {
		if ((rc = tg_jf_id(spec, NULL, "meter", true, false, &meter, err)) < 0 ||
		    (rc = tg_jf_fixed(spec, NULL, "limit", true, &l->limit, NULL, err)) < 0)
			goto fail;
		l->meter = t ? policy_meter_find(t, meter) : NULL;
		if (!l->meter) {
			rc = tg_fail(err, TG_EINVAL, "meter_not_found", "meter", "no meter '%s'", meter);
			goto fail;
		}
		if (l->limit < 0) {
			rc = tg_jf_bad(err, NULL, "limit", "'limit' must not be negative");
			goto fail;
		}
		if ((rc = tg_jf_enum(spec, NULL, "enforcement", false, policy_enforcement_names, &enf, NULL, err)) < 0)
			goto fail;
		l->enforcement = (enum policy_enforcement)enf;
		if ((rc = tg_jf_array(spec, NULL, "thresholds", false, &thr, err)) < 0)
			goto fail;
		if (thr) {
			size_t i;
			json_t *x;
			if (json_array_size(thr) > POLICY_MAX_THRESHOLDS) {
				rc = tg_jf_bad(err, NULL, "thresholds", "at most %d thresholds", POLICY_MAX_THRESHOLDS);
				goto fail;
			}
			json_array_foreach(thr, i, x) {
				tg_fixed f;
				if (tg_json_get_fixed(x, &f) != TG_FIXED_OK || f <= 0 || f > TG_FIXED_SCALE) {
					rc = tg_jf_bad(err, NULL, "thresholds", "thresholds are fractions in (0, 1]");
					goto fail;
				}
				/* kept sorted and unique */
				int j = l->nthresholds;
				while (j > 0 && l->thresholds[j - 1] > f) {
					l->thresholds[j] = l->thresholds[j - 1];
					j--;
				}
				if (j > 0 && l->thresholds[j - 1] == f) {
					rc = tg_jf_bad(err, NULL, "thresholds", "a threshold is listed twice");
					goto fail;
				}
				l->thresholds[j] = f;
				l->nthresholds++;
			}
		}
		filter = json_object_get(spec, "filter");
		if (filter && !json_is_null(filter) &&
		    (rc = parse_dims(filter, NULL, "filter", &l->filter, &l->nfilter, err)) < 0)
			goto fail;
		if (kind == POLICY_QUOTA) {
			if ((rc = tg_jf_enum(spec, NULL, "period", true, policy_period_names, &period, NULL, err)) < 0)
				goto fail;
			l->period = (enum policy_period)period;
		} else {
			if ((rc = tg_jf_int(spec, NULL, "window", true, 1, MAX_WINDOW_S, &l->window_s, NULL, err)) < 0 ||
			    (rc = tg_jf_enum(spec, NULL, "algorithm", false, policy_algorithm_names, &alg, NULL, err)) < 0 ||
			    (rc = tg_jf_enum(spec, NULL, "per", false, policy_per_names, &per, &has_per, err)) < 0 ||
			    (rc = tg_jf_fixed(spec, NULL, "burst", false, &l->burst, &has_burst, err)) < 0)
				goto fail;
			l->algorithm = (enum policy_algorithm)alg;
			if (!has_per)
				per = scope == SCOPE_PLATFORM ? PER_PLATFORM : PER_CUSTOMER;
			if (scope == SCOPE_PLATFORM && per == PER_CUSTOMER) {
				rc = tg_jf_bad(err, NULL, "per", "a platform-scope limit cannot be per customer");
				goto fail;
			}
			l->per = (enum policy_per)per;
			if (has_burst && alg != ALG_TOKEN_BUCKET) {
				rc = tg_jf_bad(err, NULL, "burst", "'burst' is only for token_bucket");
				goto fail;
			}
			if (has_burst && l->burst <= 0) {
				rc = tg_jf_bad(err, NULL, "burst", "'burst' must be positive");
				goto fail;
			}
			if (!has_burst)
				l->burst = l->limit;
			if (l->limit == 0 && alg == ALG_TOKEN_BUCKET) {
				rc = tg_jf_bad(err, NULL, "limit", "a token bucket needs a positive limit");
				goto fail;
			}
		}
	}
	on_exceed = json_object_get(spec, "on_exceed");
	if (on_exceed && !json_is_null(on_exceed) && (rc = parse_on_exceed(on_exceed, l, err)) < 0)
		goto fail;
	if (l->fallback && fallback_loops(l)) {
		/* the fallback would be judged by this very limit again: a loop, refused here */
		rc = tg_jf_bad(err, "on_exceed", "dimensions",
			       "the fallback dimensions still match this limit's filter: it would fall back to itself");
		goto fail;
	}
	build_slot(l);
	l->json = policy_limit_json(l);
	policy_limit_prepare_reply(l);
	return 0;
fail:
	policy_limit_release(l);
	return rc;
}

static json_t *dims_json(const struct policy_dim *d, int n)
{
	json_t *o = json_object();

	for (int i = 0; i < n; i++)
		json_object_set_new(o, d[i].key, json_string(d[i].value));
	return o;
}

json_t *policy_limit_json(const struct policy_limit *l)
{
	json_t *o = tg_json_obj("id", json_string(l->id), "kind", json_string(policy_kind_names[l->kind]), "scope",
				json_string(policy_scope_names[l->scope]), NULL);

	if (l->tier)
		json_object_set_new(o, "tier", json_string(l->tier));
	if (l->customer_id)
		json_object_set_new(o, "customer_id", json_string(l->customer_id));
	if (l->kind == POLICY_WORKFLOW) {
		if (l->max_tool_calls)
			json_object_set_new(o, "max_tool_calls", json_integer(l->max_tool_calls));
		if (l->max_depth)
			json_object_set_new(o, "max_depth", json_integer(l->max_depth));
		if (l->max_cost)
			json_object_set_new(o, "max_cost", tg_json_fixed(l->max_cost));
		json_object_set_new(o, "max_duration", json_integer(l->max_duration_s));
		if (l->duplicate_threshold)
			json_object_set_new(o, "duplicate_threshold", json_integer(l->duplicate_threshold));
	} else {
		json_object_set_new(o, "meter", json_string(l->meter->id));
		if (l->kind == POLICY_QUOTA) {
			json_object_set_new(o, "period", json_string(policy_period_names[l->period]));
		} else {
			json_object_set_new(o, "window", json_integer(l->window_s));
			json_object_set_new(o, "algorithm", json_string(policy_algorithm_names[l->algorithm]));
			if (l->algorithm == ALG_TOKEN_BUCKET)
				json_object_set_new(o, "burst", tg_json_fixed(l->burst));
			json_object_set_new(o, "per", json_string(policy_per_names[l->per]));
		}
		json_object_set_new(o, "limit", tg_json_fixed(l->limit));
		json_object_set_new(o, "enforcement", json_string(policy_enforcement_names[l->enforcement]));
		json_t *thr = json_array();
		for (int i = 0; i < l->nthresholds; i++)
			json_array_append_new(thr, tg_json_fixed(l->thresholds[i]));
		json_object_set_new(o, "thresholds", thr);
		json_object_set_new(o, "filter", dims_json(l->filter, l->nfilter));
	}
	json_object_set_new(o, "fail_mode", json_string(l->fail_open ? "open" : "closed"));
	if (l->fallback)
		json_object_set_new(o, "on_exceed", tg_json_obj("action", json_string("fallback"), "dimensions",
								 dims_json(l->fallback, l->nfallback), NULL));
	else
		json_object_set_new(o, "on_exceed", tg_json_obj("action", json_string("deny"), NULL));
	return o;
}

/* ---- compiling a snapshot ---- */

static void list_add(struct policy_limit_list *l, const struct policy_limit *x)
{
	l->items = tg_realloc(l->items, sizeof(*l->items) * (size_t)(l->n + 1));
	l->items[l->n++] = x;
}

static void list_free(void *p)
{
	struct policy_limit_list *l = p;
	free(l->items);
	free(l);
}

static void list_add_mapped(struct tg_map *m, const char *key, const struct policy_limit *x)
{
	struct policy_limit_list *l = tg_map_get(m, key);

	if (!l) {
		l = tg_calloc(1, sizeof(*l));
		tg_map_put(m, key, l);
	}
	list_add(l, x);
}

static void meter_index_free(void *p)
{
	struct meter_index *mi = p;

	free(mi->platform.items);
	free(mi->dflt.items);
	tg_map_release(&mi->tier, list_free);
	tg_map_release(&mi->customer, list_free);
	free(mi);
}

static void meter_list_free(void *p)
{
	struct meter_list *l = p;
	free(l->items);
	free(l);
}

static struct meter_index *meter_index_get(struct policy_index *ix, const struct policy_meter *m)
{
	struct meter_index *mi = tg_map_get(&ix->by_meter, m->id);

	if (!mi) {
		mi = tg_calloc(1, sizeof(*mi));
		mi->meter = m;
		tg_map_put(&ix->by_meter, m->id, mi);
	}
	return mi;
}

static void index_free(struct policy_index *ix)
{
	if (!ix)
		return;
	tg_map_release(&ix->meters, NULL);
	tg_map_release(&ix->by_meter, meter_index_free);
	tg_map_release(&ix->by_type, meter_list_free);
	tg_map_release(&ix->limits, NULL);
	free(ix->workflow.items);
	free(ix);
}

static void tenant_free(struct policy_tenant *t)
{
	for (int i = 0; i < t->nlimits; i++)
		policy_limit_release(&t->limits[i]);
	free(t->limits);
	for (int i = 0; i < t->nmeters; i++)
		policy_meter_release(&t->meters[i]);
	free(t->meters);
	free(t->requests.id);
	json_decref(t->requests.json);
	index_free(t->index);
	free(t->id);
	free(t->default_tier);
	free(t);
}

void policy_tenant_ref(struct policy_tenant *t)
{
	atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
}

void policy_tenant_unref(struct policy_tenant *t)
{
	if (t && atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1)
		tenant_free(t);
}

const struct policy_meter *policy_meter_find(const struct policy_tenant *t, const char *id)
{
	if (strcmp(id, POLICY_REQUESTS) == 0)
		return &t->requests;
	return t->index ? tg_map_get(&t->index->meters, id) : NULL;
}

const struct policy_limit *policy_limit_find(const struct policy_tenant *t, const char *id)
{
	return t->index ? tg_map_get(&t->index->limits, id) : NULL;
}

int policy_meters_for_type(const struct policy_tenant *t, const char *type, const struct policy_meter **out, int max)
{
	struct meter_list *l = t->index ? tg_map_get(&t->index->by_type, type) : NULL;
	int n = 0;

	for (int i = 0; l && i < l->n && n < max; i++)
		out[n++] = l->items[i];
	return n;
}

static void index_limit(struct policy_index *ix, const struct policy_limit *l)
{
	tg_map_put(&ix->limits, l->id, (void *)l);
	if (l->kind == POLICY_WORKFLOW) {
		list_add(&ix->workflow, l);
		return;
	}
	struct meter_index *mi = meter_index_get(ix, l->meter);
	switch (l->scope) {
	case SCOPE_PLATFORM:
		list_add(&mi->platform, l);
		break;
	case SCOPE_DEFAULT:
		list_add(&mi->dflt, l);
		break;
	case SCOPE_TIER:
		list_add_mapped(&mi->tier, l->tier, l);
		break;
	case SCOPE_CUSTOMER:
		list_add_mapped(&mi->customer, l->customer_id, l);
		break;
	}
}

struct policy_tenant *policy_compile(const json_t *config, struct tg_error *err)
{
	const json_t *tenant = json_object_get(config, "tenant");
	const json_t *meters = json_object_get(config, "meters");
	const json_t *limits = json_object_get(config, "limits");
	struct policy_tenant *t = tg_calloc(1, sizeof(*t));
	struct policy_index *ix = tg_calloc(1, sizeof(*ix));
	size_t i;
	json_t *row;
	int64_t offset = 0;

	static _Atomic uint64_t generations;

	atomic_store(&t->refs, 1);
	t->generation = atomic_fetch_add(&generations, 1) + 1;
	t->index = ix;
	t->id = tg_strdup(json_string_value(json_object_get(tenant, "id")) ? json_string_value(json_object_get(tenant, "id")) : "");
	t->test_mode = json_is_true(json_object_get(tenant, "test_mode"));
	if (json_is_string(json_object_get(tenant, "created_at")))
		tg_time_parse(json_string_value(json_object_get(tenant, "created_at")), &t->created_ms);
	tg_json_get_i64(json_object_get(tenant, "clock_offset_ms"), 0, INT64_MAX / 2, &offset);
	t->clock_offset_ms = t->test_mode ? offset : 0;
	t->default_tier = dup_or_null(json_string_value(json_object_get(tenant, "default_tier")));
	t->auto_create_customers = !json_is_false(json_object_get(tenant, "auto_create_customers"));
	t->requests.id = tg_strdup(POLICY_REQUESTS);
	t->requests.agg = AGG_COUNT;
	t->requests.json = tg_json_obj("id", json_string(POLICY_REQUESTS), "event_type", json_null(), "aggregation",
				       json_string("count"), "property", json_null(), "group_by", json_array(), "price",
				       json_null(), "builtin", json_true(), NULL);

	t->meters = tg_calloc(json_array_size(meters) + 1, sizeof(*t->meters));
	json_array_foreach(meters, i, row) {
		struct policy_meter *m = &t->meters[t->nmeters];
		if (policy_meter_parse(json_object_get(row, "spec"), m, err) < 0) {
			log_warn("stored meter skipped", "tenant %s: %s (%s)", t->id, err->message, err->param);
			continue;
		}
		/* keep the stored timestamps in the API object */
		json_object_set(m->json, "created_at", json_object_get(row, "created_at"));
		json_object_set(m->json, "updated_at", json_object_get(row, "updated_at"));
		tg_map_put(&ix->meters, m->id, m);
		struct meter_list *ml = tg_map_get(&ix->by_type, m->event_type);
		if (!ml) {
			ml = tg_calloc(1, sizeof(*ml));
			tg_map_put(&ix->by_type, m->event_type, ml);
		}
		ml->items = tg_realloc(ml->items, sizeof(*ml->items) * (size_t)(ml->n + 1));
		ml->items[ml->n++] = m;
		t->nmeters++;
	}
	t->limits = tg_calloc(json_array_size(limits) + 1, sizeof(*t->limits));
	json_array_foreach(limits, i, row) {
		struct policy_limit *l = &t->limits[t->nlimits];
		if (policy_limit_parse(json_object_get(row, "spec"), t, l, err) < 0) {
			log_warn("stored limit skipped", "tenant %s: %s (%s)", t->id, err->message, err->param);
			continue;
		}
		json_object_set(l->json, "created_at", json_object_get(row, "created_at"));
		json_object_set(l->json, "updated_at", json_object_get(row, "updated_at"));
		/* made when, on the tenant's clock (migration 0015); real time for limits made before */
		if (!tg_json_get_i64(json_object_get(row, "created_clock_ms"), 1, INT64_MAX / 2, &l->created_ms) &&
		    json_is_string(json_object_get(row, "created_at")))
			tg_time_parse(json_string_value(json_object_get(row, "created_at")), &l->created_ms);
		policy_limit_key_id(l, json_string_value(json_object_get(row, "created_at")));
		t->nlimits++;
	}
	/* index only after the array stopped moving */
	for (int k = 0; k < t->nlimits; k++)
		index_limit(ix, &t->limits[k]);
	tg_error_clear(err);
	return t;
}

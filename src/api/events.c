/* events.c — POST /v1/events (durable through the group-commit writer) and GET /v1/events. */
#include <stdio.h>
#include <string.h>

#include "handlers.h"
#include "tollgate/api.h"
#include "tollgate/json.h"
#include "tollgate/policy.h"
#include "tollgate/store.h"

#define MAX_BATCH 1000
#define PAST_MS (INT64_C(35) * 86400000)
#define FUTURE_MS (INT64_C(5) * 60000)

struct ingest {
	struct tg_req *req;
	struct store_submission sub;
	json_t *rejected;
	int *index; /* sub.events[i] came from body position index[i] */
	bool single; /* one event, not {"events": [...]} */
};

static void reject(struct ingest *in, int index, const struct tg_error *e)
{
	json_t *err = tg_json_obj("type", json_string(tg_err_type(e->err)), "code", json_string(tg_err_code(e)),
				  "message", tg_json_str(e->message), NULL);

	if (e->param[0])
		json_object_set_new(err, "param", tg_json_str(e->param));
	json_array_append_new(in->rejected, tg_json_obj("index", json_integer(index), "error", err, NULL));
}

static char *dump_to_arena(struct tg_arena *a, json_t *v)
{
	char *text = tg_json_dumps(v);
	char *copy = tg_arena_strdup(a, text);

	free(text);
	json_decref(v);
	return copy;
}

/* Validate one event against the tenant's meters; fill e (strings borrowed from the body or the arena). */
static int one_event(struct tg_req *req, const struct policy_tenant *t, int64_t now, const json_t *o,
		     struct store_event *e, struct tg_error *err)
{
	static const char *const fields[] = {"id", "customer_id", "type", "timestamp", "properties", "reservation_id",
					     "workflow_id", NULL};
	const char *ts = NULL;
	json_t *props = NULL;
	const struct policy_meter *ms[64];
	int nm, rc;

	if (!json_is_object(o))
		return tg_fail(err, TG_EINVAL, "invalid_event", NULL, "an event must be a JSON object");
	if ((rc = tg_jf_only(o, NULL, fields, err)) < 0 || (rc = tg_jf_id(o, NULL, "id", false, false, &e->id, err)) < 0 ||
	    (rc = tg_jf_id(o, NULL, "customer_id", true, false, &e->customer_id, err)) < 0 ||
	    (rc = tg_jf_str(o, NULL, "type", true, false, 200, &e->type, err)) < 0 ||
	    (rc = tg_jf_str(o, NULL, "timestamp", false, false, 64, &ts, err)) < 0 ||
	    (rc = tg_jf_object(o, NULL, "properties", false, &props, err)) < 0 ||
	    (rc = tg_jf_str(o, NULL, "reservation_id", false, true, 64, &e->reservation_id, err)) < 0 ||
	    (rc = tg_jf_id(o, NULL, "workflow_id", false, true, &e->workflow_id, err)) < 0)
		return rc;
	if (!e->type[0])
		return tg_jf_bad(err, NULL, "type", "'type' must not be empty");
	if (e->reservation_id && strncmp(e->reservation_id, "rsv_", 4) != 0)
		return tg_jf_bad(err, NULL, "reservation_id", "'reservation_id' must be an id from a reserving check (rsv_...)");
	e->ts_ms = now;
	if (ts) {
		if (tg_time_parse(ts, &e->ts_ms) < 0)
			return tg_jf_bad(err, NULL, "timestamp", "'timestamp' must be an RFC 3339 time");
		if (e->ts_ms < now - PAST_MS)
			return tg_fail(err, TG_EINVAL, "timestamp_too_old", "timestamp",
				       "'timestamp' is more than 35 days in the past");
		if (e->ts_ms > now + FUTURE_MS)
			return tg_fail(err, TG_EINVAL, "timestamp_in_future", "timestamp",
				       "'timestamp' is more than 5 minutes in the future");
	}
	if (props) {
		const char *k;
		json_t *v;
		if (json_object_size(props) > 64)
			return tg_jf_bad(err, NULL, "properties", "at most 64 properties");
		json_object_foreach(props, k, v) {
			if (!tg_json_is_number(v) && !(json_is_string(v) && json_string_length(v) <= 256) && !json_is_boolean(v) &&
			    !json_is_null(v))
				return tg_jf_bad(err, "properties", k, "properties are numbers (values) or strings (dimensions)");
		}
	}
	e->client_id = e->id != NULL;
	if (!e->id) {
		char id[TG_SID_BUFSZ];
		tg_sid_ordered("evt_", tg_now_ms(), id);
		e->id = tg_arena_strdup(&req->arena, id);
	}
	e->properties_json = props ? dump_to_arena(&req->arena, json_incref(props)) : "{}";

	/* the event's dimensions (its string properties) pick the price */
	struct policy_dim edims[POLICY_MAX_DIMS];
	int ndims = 0;
	if (props) {
		const char *k;
		json_t *v;
		json_object_foreach(props, k, v)
			if (ndims < POLICY_MAX_DIMS && json_is_string(v) && !tg_json_is_number(v)) {
				edims[ndims].key = k;
				edims[ndims].value = json_string_value(v);
				ndims++;
			}
	}
	nm = policy_meters_for_type(t, e->type, ms, 64);
	e->contribs = nm ? tg_arena_alloc(&req->arena, sizeof(*e->contribs) * (size_t)nm) : NULL;
	for (int i = 0; i < nm; i++) {
		const struct policy_meter *m = ms[i];
		struct store_contrib *c = &e->contribs[e->ncontribs];
		json_t *dims = json_object();
		if (!policy_event_value(m, props, &c->value)) {
			json_decref(dims);
			json_t *v = props ? json_object_get(props, m->property) : NULL;
			char field[160];
			snprintf(field, sizeof(field), "properties.%s", m->property);
			if (v && tg_json_is_number(v)) {
				/* a number that is not a quantity: say exactly why */
				tg_fixed f;
				int st = tg_json_get_fixed(v, &f);
				return tg_fail(err, TG_EINVAL, "invalid_parameter", tg_arena_strdup(&req->arena, field),
					       st == TG_FIXED_EPRECISION ? "'%s' has more than 6 digits after the decimal point"
									 : "'%s' is out of range",
					       field);
			}
			return tg_fail(err, TG_EINVAL, "invalid_parameter", tg_arena_strdup(&req->arena, field),
				       "meter '%s' needs '%s' as a number", m->id, field);
		}
		if (m->agg != AGG_COUNT && c->value < 0 && m->agg == AGG_SUM) {
			json_decref(dims);
			return tg_fail(err, TG_EINVAL, "invalid_parameter", "properties",
				       "meter '%s' sums '%s': negative usage is not accepted", m->id, m->property);
		}
		for (int g = 0; g < m->ngroup; g++) {
			json_t *v = props ? json_object_get(props, m->group_by[g]) : NULL;
			if (v && json_is_string(v) && !tg_json_is_number(v))
				json_object_set(dims, m->group_by[g], v);
		}
		/* the snapshot may be replaced before the writer is done: copy what it lends */
		c->meter_id = tg_arena_strdup(&req->arena, m->id);
		if (policy_cost(m, c->value, edims, ndims, &c->cost) < 0) {
			json_decref(dims);
			return tg_fail(err, TG_EINVAL, "invalid_parameter", "properties",
				       "the cost of this event at meter '%s' is out of range", m->id);
		}
		c->agg = (int)m->agg;
		c->dims_json = dump_to_arena(&req->arena, dims);
		e->ncontribs++;
	}
	return 0;
}

static int by_index(const void *a, const void *b)
{
	return (int)json_integer_value(json_object_get(*(json_t *const *)a, "index")) -
	       (int)json_integer_value(json_object_get(*(json_t *const *)b, "index"));
}

/* Rejections found here and by the writer, in the order of the request's events. */
static void sort_rejected(json_t *arr)
{
	size_t n = json_array_size(arr);
	json_t **items = tg_malloc(sizeof(*items) * (n + 1));

	for (size_t i = 0; i < n; i++)
		items[i] = json_incref(json_array_get(arr, i));
	qsort(items, n, sizeof(*items), by_index);
	json_array_clear(arr);
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, items[i]);
	free(items);
}

static void written(struct store_submission *sub)
{
	struct ingest *in = sub->owner;
	struct tg_req *req = in->req;
	int accepted = 0, dup = 0;

	if (sub->rc < 0) {
		req->err = sub->err;
		tg_req_reply_error(req);
		json_decref(in->rejected);
		tg_req_complete(req);
		return;
	}
	for (int i = 0; i < sub->n; i++) {
		struct store_event *e = &sub->events[i];
		if (e->result == STORE_EV_ACCEPTED)
			accepted++;
		else if (e->result == STORE_EV_DUPLICATE)
			dup++;
		else {
			struct tg_error err;
			tg_fail(&err, TG_ENOTFOUND, e->reject_code ? e->reject_code : "rejected", "customer_id",
				"no customer '%s' (auto_create_customers is off)", e->customer_id);
			if (in->single) {
				/* one event for nobody: 404, as a check for nobody (API.md); a batch lists it */
				req->err = err;
				tg_req_reply_error(req);
				json_decref(in->rejected);
				tg_req_complete(req);
				return;
			}
			reject(in, in->index[i], &err);
		}
	}
	sort_rejected(in->rejected);
	tg_req_reply(req, 200, tg_json_obj("accepted", json_integer(accepted), "duplicates", json_integer(dup),
					    "rejected", in->rejected, NULL));
	tg_req_complete(req);
}

static int ingest(struct tg_req *req, struct policy_tenant *t)
{
	json_t *body = req->json, *list, *single[1];
	struct ingest *in;
	size_t n;
	int64_t now;

	list = json_object_get(body, "events");
	if (list) {
		if (json_object_size(body) != 1)
			return api_bad(req, "events", "a batch is {\"events\": [...]} with nothing beside it");
		if (!json_is_array(list))
			return api_bad(req, "events", "'events' must be an array");
		n = json_array_size(list);
		if (n == 0)
			return api_bad(req, "events", "'events' must not be empty");
		if (n > MAX_BATCH)
			return api_bad(req, "events", "at most %d events per request (got %zu)", MAX_BATCH, n);
	} else {
		single[0] = body;
		n = 1;
	}
	now = policy_now(t, tg_now_ms());
	in = tg_arena_alloc(&req->arena, sizeof(*in));
	in->req = req;
	in->single = !list;
	in->rejected = json_array();
	in->sub.events = tg_arena_alloc(&req->arena, sizeof(struct store_event) * n);
	in->index = tg_arena_alloc(&req->arena, sizeof(int) * n);
	for (size_t i = 0; i < n; i++) {
		const json_t *o = list ? json_array_get(list, i) : single[0];
		struct store_event *e = &in->sub.events[in->sub.n];
		struct tg_error err;
		tg_error_clear(&err);
		if (one_event(req, t, now, o, e, &err) < 0) {
			memset(e, 0, sizeof(*e));
			reject(in, (int)i, &err);
			continue;
		}
		in->index[in->sub.n++] = (int)i;
	}
	in->sub.tenant_id = req->principal.tenant_id;
	in->sub.auto_create = t->auto_create_customers;
	if (in->sub.n == 0) {
		tg_req_reply(req, 200, tg_json_obj("accepted", json_integer(0), "duplicates", json_integer(0), "rejected",
						    in->rejected, NULL));
		return 0;
	}
	in->sub.arena = &req->arena;
	in->sub.done = written;
	in->sub.owner = in;
	store_writer_submit(&in->sub);
	return TG_ASYNC;
}

/* On the worker pool: the tenant was not loaded on this instance yet. */
static void ingest_cold(struct tg_req *req)
{
	struct policy_tenant *t = api_tenant(req);
	int rc = t ? ingest(req, t) : req->err.err;

	policy_tenant_unref(t);
	if (rc < 0)
		tg_req_reply_error(req);
	if (rc != TG_ASYNC)
		tg_req_complete(req);
}

int api_events_create(struct tg_req *req)
{
	struct policy_tenant *t;
	int rc;

	if (!api_body(req))
		return req->err.err;
	t = policy_registry_get(req->principal.tenant_id);
	if (!t) {
		tg_req_offload(req, ingest_cold);
		return TG_ASYNC;
	}
	rc = ingest(req, t);
	policy_tenant_unref(t);
	return rc;
}

int api_events_list(struct tg_req *req)
{
	static const char *const q[] = {"limit", "starting_after", "customer_id", "type", "from", "to", NULL};
	const char *after, *customer = NULL, *type = tg_req_query(req, "type");
	int64_t limit, from = 0, to;
	struct policy_tenant *t;
	json_t *rows;
	int rc;

	if ((rc = api_query_only(req, q)) < 0 || (rc = api_page(req, &limit, &after)) < 0 ||
	    (rc = api_query_id(req, "customer_id", &customer)) < 0 || (rc = api_query_time(req, "from", &from, NULL)) < 0)
		return rc;
	if (!(t = api_tenant(req)))
		return req->err.err;
	/* by default every stored event: their timestamps default to the tenant's clock, which for a
	 * test-mode tenant may run years ahead of real time */
	to = policy_now(t, tg_now_ms()) + INT64_C(366) * 86400000;
	policy_tenant_unref(t);
	if ((rc = api_query_time(req, "to", &to, NULL)) < 0)
		return rc;
	if ((rc = store_events_list(req->principal.tenant_id, customer, type, from, to, after, limit, &rows, &req->err)) < 0)
		return rc;
	api_reply_list(req, rows, limit);
	return 0;
}
